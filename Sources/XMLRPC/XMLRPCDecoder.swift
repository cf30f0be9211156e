import CXML
import Foundation

/// A decoded `<methodCall>`.
public struct XMLRPCRequest: Equatable, Sendable {
    public var methodName: String
    public var params: [XMLRPCValue]

    public init(methodName: String, params: [XMLRPCValue] = []) {
        self.methodName = methodName
        self.params = params
    }
}

/// A decoded `<methodResponse>`: the one returned value, or the fault the server sent.
public enum XMLRPCResponse: Equatable, Sendable {
    case value(XMLRPCValue)
    case fault(Fault)
}

/// Turns XML-RPC request and response bodies into values, or throws a `Fault` that can be sent back as is.
///
/// Safety: the body must be UTF-8 (an encoding named in the XML declaration is ignored); bodies containing
/// `<!DOCTYPE` or `<!ENTITY` are refused before parsing, so entity expansion (billion laughs) and external entities
/// (XXE) cannot happen; an element with an attribute (XML-RPC has none) is refused before parsing too, so the
/// parser's pairwise duplicate-attribute check (quadratic in libxml2 2.9) never runs; so are processing
/// instructions other than the XML declaration at the start (FoundationXML crashed on one without data); values may
/// nest at most `maxDepth` levels and parsing stops as soon as a value goes deeper.
/// The parser is libxml2's SAX2 interface (`CXML`), with no network access and no DTD. Every call uses its own
/// parser context, so the decoder may be used from any number of threads at once.
///
/// Faults: -32700 (`Fault.parseError`) when the body is not UTF-8 or not well-formed XML (the message gives the line);
/// -32600 (`Fault.invalidRequest`) when it is XML but not XML-RPC (the message names the problem; an attribute is
/// one);
/// -32001 (`Fault.nestingTooDeep`) when values nest too deep.
public enum XMLRPCDecoder {
    /// Levels of `<value>` nesting allowed by default: a scalar parameter is 1 level, an array of scalars is 2.
    public static let defaultMaxDepth = 32

    /// Decodes a `<methodCall>` body.
    public static func decodeRequest(_ body: [UInt8], maxDepth: Int = defaultMaxDepth) throws(Fault) -> XMLRPCRequest {
        let builder = try parse(body, expecting: .request, maxDepth: maxDepth)
        guard let methodName = builder.methodName else {
            throw Fault.invalidRequest("<methodCall> has no <methodName>.")
        }
        return XMLRPCRequest(methodName: methodName, params: builder.params)
    }

    public static func decodeRequest(_ body: Data, maxDepth: Int = defaultMaxDepth) throws(Fault) -> XMLRPCRequest {
        try decodeRequest([UInt8](body), maxDepth: maxDepth)
    }

    /// Decodes a `<methodResponse>` body. A fault sent by the server is returned as `.fault`, not thrown; the
    /// decoder throws only when the body itself is unusable.
    public static func decodeResponse(_ body: [UInt8], maxDepth: Int = defaultMaxDepth) throws(Fault)
        -> XMLRPCResponse
    {
        let builder = try parse(body, expecting: .response, maxDepth: maxDepth)
        if let fault = builder.responseFault { return .fault(fault) }
        guard let value = builder.responseValue else {
            throw Mode.response.invalid("<methodResponse> holds neither <params> nor <fault>.")
        }
        return .value(value)
    }

    public static func decodeResponse(_ body: Data, maxDepth: Int = defaultMaxDepth) throws(Fault) -> XMLRPCResponse {
        try decodeResponse([UInt8](body), maxDepth: maxDepth)
    }

    // MARK: - Parsing

    package enum Mode {
        case request, response

        var rootName: String { self == .request ? "methodCall" : "methodResponse" }

        /// Well-formed XML that is not XML-RPC.
        func invalid(_ why: String) -> Fault {
            switch self {
            case .request: return Fault.invalidRequest(why)
            case .response:
                return Fault(code: Fault.invalidRequest("").code, message: "Invalid XML-RPC response: \(why)")
            }
        }
    }

    private static func parse(_ body: [UInt8], expecting mode: Mode, maxDepth: Int) throws(Fault) -> TreeBuilder {
        let prepared = try prepare(body, mode: mode)
        let builder = TreeBuilder(mode: mode, maxDepth: max(1, maxDepth))
        var lastLine: Int32 = 0
        let finished = withExtendedLifetime(builder) {
            prepared.withUnsafeBytes { bytes -> Bool in
                let context = Unmanaged.passUnretained(builder).toOpaque()
                return ctd_xml_parse(
                    bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count, Self.events, context,
                    &lastLine) == 1
            }
        }
        // Whichever came first — a parser error or a fault of ours — stopped the builder; it is the one to report.
        if let line = builder.parserErrorLine { throw malformed(line: line) }
        if let fault = builder.fault { throw fault }
        if !finished { throw malformed(line: Int(lastLine)) }
        guard builder.rootClosed else { throw Fault.parseError("the body holds no XML element.") }
        return builder
    }

    /// libxml2's SAX2 events, handed to the parse's TreeBuilder (its context). Names and text are UTF-8. Made once
    /// and only read (a pointer, so that concurrent parses never take an exclusive access to a global).
    nonisolated(unsafe) private static let events: UnsafePointer<ctd_xml_events> = {
        let pointer = UnsafeMutablePointer<ctd_xml_events>.allocate(capacity: 1)
        pointer.initialize(to: handlers)
        return UnsafePointer(pointer)
    }()

    private static let handlers = ctd_xml_events(
        start_element: { context, name in
            builder(context).start(String(cString: name!)) ? 1 : 0
        },
        end_element: { context, name in
            builder(context).end(String(cString: name!)) ? 1 : 0
        },
        text: { context, bytes, length in
            let text = String(
                decoding: UnsafeRawBufferPointer(start: bytes, count: Int(length)), as: UTF8.self)
            return builder(context).text(text) ? 1 : 0
        },
        error: { context, line in
            builder(context).parseError(line: Int(line))
        }
    )

    private static func builder(_ context: UnsafeMutableRawPointer?) -> TreeBuilder {
        Unmanaged<TreeBuilder>.fromOpaque(context!).takeUnretainedValue()
    }

    private static func malformed(line: Int) -> Fault {
        Fault.parseError("the body is not well-formed XML (error on line \(max(line, 1))).")
    }

}
