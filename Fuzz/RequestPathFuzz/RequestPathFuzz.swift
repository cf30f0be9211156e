// libFuzzer target: the whole request path on an in-memory table, bytes -> `Dispatcher.handle(body:client:)`.
//
// Set up as in Tests/CtdCoreTests/DispatcherTests.swift: a ConntrackMirror filled with ConntrackEvents (no kernel
// service: `ConntrackTable(mirror:kernel:service: nil, logger:)`), a test authenticator defined here, real sessions.
// Kill and change do reach `KernelConntrack`, so `make fuzz` runs this target inside `unshare -n`: the namespace's
// table is empty and every write answers "gone" without touching the host's connections.
//
// To reach the procedures behind a session, the target keeps one live session per role, opened at start (and again
// whenever the input logged it out), and replaces these markers in the input before dispatching it:
//   SIDV -> the viewer's session id, SIDO -> the operator's, SID -> the admin's.
//
// Checks: every answer decodes as an XML-RPC response (a value or a fault) and is no larger than
// `maxResponseBytes`; a fault carries a known code (the protocol's, or ctd's application codes 1 to 11).

import Conntrack
import CtdCore
import CtdPluginAPI
import CtdRuntime
import Foundation
import Logging
import PluginHost
import XMLRPC

/// User names are their roles, with or without an "fz-" prefix (the target's own logins use the prefix and a
/// source address of their own, so a fuzzed login flood does not throttle them); the password is "pw".
final class FuzzAuthenticator: Authenticator, @unchecked Sendable {
    let metadata = PluginMetadata(
        id: "auth.fuzz", name: "FuzzAuth", version: "1", roles: [.authenticator], summary: "fuzz")
    let loginParameters = ["username", "password"]
    func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {}
    func authenticate(_ request: LoginRequest) throws -> AuthResult {
        guard request.arguments.count == 2, request.arguments[1] == "pw" else { return .rejected(reason: "wrong") }
        var user = Substring(request.arguments[0])
        if user.hasPrefix("fz-") { user = user.dropFirst(3) }
        guard let role = Role(rawValue: String(user)) else { return .rejected(reason: "wrong") }
        return .accepted(Identity(user: request.arguments[0], roles: [role]))
    }
}

/// The table the target starts from: IPv4 and IPv6, TCP, UDP and ICMP, marks, zones, counters.
private let seedFlows: [Flow] = (1...40).map { i in
    let v6 = i % 4 == 0
    let proto: UInt8 = i % 3 == 0 ? 6 : (i % 5 == 0 ? 1 : 17)
    let src = v6 ? IPAddress("2001:db8::\(i)")! : IPAddress("10.0.\(i / 16).\(i)")!
    let dst = v6 ? IPAddress("2001:db8:1::1")! : IPAddress("10.1.0.\(i % 7 + 1)")!
    return Flow(
        id: i % 8 == 0 ? UInt32.max - UInt32(i) : UInt32(i), l3proto: v6 ? 10 : 2, l4proto: proto,
        tcpState: proto == 6 ? UInt8(i % 10) : Flow.noState, zone: UInt16(i % 3),
        origSource: src, origDestination: dst, replySource: dst, replyDestination: src,
        origSourcePort: proto == 1 ? 0 : UInt16(1000 + i), origDestinationPort: proto == 1 ? 0 : UInt16(i % 2 == 0 ? 53 : 443),
        replySourcePort: proto == 1 ? 0 : UInt16(i % 2 == 0 ? 53 : 443), replyDestinationPort: proto == 1 ? 0 : UInt16(1000 + i),
        mark: UInt32(i % 4) * 0x4000_0000, timeout: UInt32(30 * i), status: UInt32(i % 16),
        origBytes: UInt64(i) << 33, origPackets: UInt64(i * 3), replyBytes: UInt64(i * 1000), replyPackets: UInt64(i))
}

private let applicationCodes = Set(1...11)
private let protocolCodes: Set<Int> = [-32700, -32600, -32601, -32602, -32603, -32000, -32001, -32003]

final class Harness: @unchecked Sendable {
    let dispatcher: Dispatcher
    let mirror: ConntrackMirror
    let settings: CoreSettings
    /// viewer, operator, admin
    var sids: [String] = ["", "", ""]
    private static let ownClient = "198.51.100.7"
    /// CTD_FUZZ_TRACE=1: print each (substituted) request and its answer, to see what the corpus reaches.
    let trace = ProcessInfo.processInfo.environment["CTD_FUZZ_TRACE"] != nil

    init() {
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical  // the dispatcher logs every denied call and internal error
        mirror = ConntrackMirror(hide: HidePolicy(), logger: logger)
        let table = ConntrackTable(mirror: mirror, kernel: KernelConntrack(), service: nil, logger: logger)
        let auth = LoadedPlugin(name: "FuzzAuth", path: "(fuzz)", instance: FuzzAuthenticator())
        let plugins = PluginRegistry(authenticator: auth, resolvers: [], hooks: [], logger: logger)
        let sessions = SessionStore(idleTimeout: 1e9, maxLifetime: 1e9, maxSessions: 64)
        settings = CoreSettings()
        dispatcher = Dispatcher(
            context: ServerContext(settings: settings, table: table, sessions: sessions, plugins: plugins, logger: logger))
        refill()
    }

    /// Puts every seed entry back (kill and change in an empty namespace remove what they touch).
    func refill() {
        if mirror.statistics.entries < seedFlows.count {
            mirror.apply(events: seedFlows.map { ConntrackEvent(kind: .new, fields: .all, flow: $0) })
        }
    }

    /// Opens again any of the target's sessions that the input ended (logout, eviction).
    func ensureSessions() {
        for (i, role) in ["viewer", "operator", "admin"].enumerated()
        where sids[i].isEmpty || dispatcher.context.sessions.use(sids[i]) == nil {
            let body = XMLRPCEncoder.request(method: "login", params: [.string("fz-\(role)"), "pw"])
            if case .value(.string(let sid))? = try? XMLRPCDecoder.decodeResponse(
                dispatcher.handle(body: body, client: Self.ownClient))
            {
                sids[i] = sid
            } else {
                sids[i] = "fz-no-session"  // throttled by the input's own failures; try again next time
            }
        }
    }

    func substitute(_ input: [UInt8]) -> [UInt8] {
        let marker: [UInt8] = Array("SID".utf8)
        guard input.count >= 3 else { return input }
        var out: [UInt8] = []
        out.reserveCapacity(input.count + 64)
        var i = 0
        while i < input.count {
            if i + 3 <= input.count, input[i] == marker[0], input[i + 1] == marker[1], input[i + 2] == marker[2] {
                let next = i + 3 < input.count ? input[i + 3] : 0
                if next == UInt8(ascii: "V") {
                    out += Array(sids[0].utf8)
                    i += 4
                } else if next == UInt8(ascii: "O") {
                    out += Array(sids[1].utf8)
                    i += 4
                } else {
                    out += Array(sids[2].utf8)
                    i += 3
                }
                continue
            }
            out.append(input[i])
            i += 1
        }
        return out
    }

    func run(_ input: [UInt8]) {
        refill()
        ensureSessions()
        let body = substitute(input)
        let answer = dispatcher.handle(body: body, client: "192.0.2.1")
        guard answer.count <= settings.maxResponseBytes + 4096 else {
            fail("an answer of \(answer.count) bytes, over maxResponseBytes", input)
        }
        let response: XMLRPCResponse
        do {
            response = try XMLRPCDecoder.decodeResponse(answer)
        } catch {
            fail("the answer is not an XML-RPC response: \(error)\n\(String(decoding: answer.prefix(4000), as: UTF8.self))", input)
        }
        if trace {
            print("> \(String(decoding: body.prefix(300), as: UTF8.self))")
            print("< \(String(describing: response).prefix(300))")
        }
        if case .fault(let f) = response {
            guard applicationCodes.contains(f.code) || protocolCodes.contains(f.code) else {
                fail("unknown fault code \(f.code): \(f.message)", input)
            }
            guard !f.message.isEmpty else { fail("fault \(f.code) without a sentence", input) }
        }
    }

    private func fail(_ what: String, _ input: [UInt8]) -> Never {
        fatalError("RequestPathFuzz: \(what)\ninput (\(input.count) bytes): \(String(decoding: input.prefix(2000), as: UTF8.self))")
    }
}

private let harness = Harness()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    harness.run(input)
    return 0
}
