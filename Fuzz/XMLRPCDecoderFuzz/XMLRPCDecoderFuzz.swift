// libFuzzer target: the XML-RPC decoder (module XMLRPC) on arbitrary bytes.
//
// Checks, beyond "does not crash":
// - whatever `decodeRequest` accepts, `XMLRPCEncoder.request` re-encodes into a body that decodes to the same
//   request (method name and every parameter, struct members compared without regard to order);
// - the same for `decodeResponse`: a value through `XMLRPCEncoder.response`, a fault through `XMLRPCEncoder.fault`;
// - a body the decoder refuses is refused with one of the protocol's fault codes, never anything else.
//
// Build and run with `make fuzz` (Fuzz/README.md).

import Foundation
import XMLRPC

/// The codes `XMLRPCDecoder` may throw (docs/design.md, "Fault codes"); -32000/-32003 belong to the transport and
/// the dispatcher, never to the decoder.
private let decoderFaultCodes: Set<Int> = [-32700, -32600, -32001]

private func fail(_ what: String, _ input: [UInt8]) -> Never {
    let shown = String(decoding: input.prefix(2000), as: UTF8.self)
    fatalError("XMLRPCDecoderFuzz: \(what)\ninput (\(input.count) bytes): \(shown)")
}

private func checkRefusal(_ fault: Fault, _ input: [UInt8]) {
    guard decoderFaultCodes.contains(fault.code) else { fail("unexpected fault code \(fault.code): \(fault)", input) }
    guard !fault.message.isEmpty else { fail("a fault without a message", input) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size))

    do {
        let request = try XMLRPCDecoder.decodeRequest(input)
        let body = XMLRPCEncoder.request(method: request.methodName, params: request.params)
        do {
            let again = try XMLRPCDecoder.decodeRequest(body)
            if again != request {
                fail("request round trip changed the value:\n  first: \(request)\n  again: \(again)", input)
            }
        } catch {
            fail("re-encoded request does not decode: \(error)\n  encoded: \(String(decoding: body, as: UTF8.self))", input)
        }
    } catch {
        checkRefusal(error, input)
    }

    do {
        let response = try XMLRPCDecoder.decodeResponse(input)
        let body: [UInt8]
        switch response {
        case .value(let v): body = XMLRPCEncoder.response(v)
        case .fault(let f): body = XMLRPCEncoder.fault(f)
        }
        do {
            let again = try XMLRPCDecoder.decodeResponse(body)
            if again != response {
                fail("response round trip changed the value:\n  first: \(response)\n  again: \(again)", input)
            }
        } catch {
            fail("re-encoded response does not decode: \(error)\n  encoded: \(String(decoding: body, as: UTF8.self))", input)
        }
    } catch {
        checkRefusal(error, input)
    }
    return 0
}
