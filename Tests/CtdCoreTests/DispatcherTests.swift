import Conntrack
import CtdPluginAPI
import CtdRuntime
import Foundation
import Logging
import PluginHost
import Testing
import Synchronization
import XMLRPC

@testable import CtdCore

/// An authenticator the tests define: user names are their roles ("viewer", "operator", "admin"), the password is
/// "pw".
final class RoleNameAuthenticator: Authenticator, @unchecked Sendable {
    let metadata = PluginMetadata(
        id: "auth.test", name: "TestAuth", version: "1", roles: [.authenticator], summary: "test")
    let loginParameters = ["username", "password"]
    func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {}
    func authenticate(_ request: LoginRequest) throws -> AuthResult {
        guard request.arguments.count == 2, request.arguments[1] == "pw",
            let role = Role(rawValue: request.arguments[0])
        else { return .rejected(reason: "wrong") }
        return .accepted(Identity(user: request.arguments[0], roles: [role]))
    }
}

/// The whole request path (bytes in, bytes out) on an in-memory table: no kernel, no socket.
struct DispatcherTests {
    let dispatcher: Dispatcher
    let mirror: ConntrackMirror

    init() throws {
        let logger = Logger(label: "test")
        mirror = ConntrackMirror(hide: HidePolicy(), logger: logger)
        mirror.apply(
            events: (1...30).map { i in
                ConntrackEvent(
                    kind: .new, fields: .all,
                    flow: Flow(
                        id: UInt32(i), l4proto: 17, origSource: IPAddress("10.0.0.\(i)")!,
                        origDestination: IPAddress("10.1.0.1")!, origSourcePort: UInt16(1000 + i),
                        origDestinationPort: 53))
            })
        let table = ConntrackTable(mirror: mirror, kernel: KernelConntrack(), service: nil, logger: logger)
        let auth = LoadedPlugin(name: "TestAuth", path: "(test)", instance: RoleNameAuthenticator())
        let plugins = PluginRegistry(authenticator: auth, resolvers: [], hooks: [], logger: logger)
        let sessions = SessionStore(idleTimeout: 60, maxLifetime: 3600, maxSessions: 10)
        dispatcher = Dispatcher(
            context: ServerContext(
                settings: CoreSettings(), table: table, sessions: sessions, plugins: plugins, logger: logger))
    }

    func call(_ method: String, _ params: [XMLRPCValue]) throws -> XMLRPCResponse {
        let body = dispatcher.handle(body: XMLRPCEncoder.request(method: method, params: params), client: "192.0.2.1")
        return try XMLRPCDecoder.decodeResponse(body)
    }

    func value(_ method: String, _ params: [XMLRPCValue]) throws -> XMLRPCValue {
        guard case .value(let v) = try call(method, params) else {
            throw PluginError("\(method) answered a fault: \(try call(method, params))")
        }
        return v
    }

    func faultCode(_ method: String, _ params: [XMLRPCValue]) throws -> Int? {
        if case .fault(let f) = try call(method, params) { return f.code }
        return nil
    }

    func login(_ role: String) throws -> XMLRPCValue { try value("login", [.string(role), "pw"]) }

    @Test func listMethods_isTheMethodTable_andEachHasHelpAndASignature() throws {
        let names = try value("system.listMethods", [])
        #expect(names == .array(MethodTable.all.map(\.name).sorted().map { .string($0) }))
        for p in MethodTable.all {
            guard case .string(let help) = try value("system.methodHelp", [.string(p.name)]) else {
                Issue.record("no help for \(p.name)")
                continue
            }
            #expect(!help.isEmpty)
            guard case .array(let sigs) = try value("system.methodSignature", [.string(p.name)]) else {
                Issue.record("no signature for \(p.name)")
                continue
            }
            #expect(!sigs.isEmpty, "\(p.name)")
        }
        #expect(Set(MethodTable.all.map(\.name)).count == MethodTable.all.count, "a procedure is listed twice")
    }

    @Test func view_asViewer_pagesTheTable() throws {
        let sid = try login("viewer")
        guard case .structure(let answer) = try value("view", [sid, .array([]), "orig_port_src", "DESC", 0, 5]),
            case .array(let rows)? = answer["connections"]
        else {
            Issue.record("view did not answer a page")
            return
        }
        #expect(answer["total"] == .int(30))
        #expect(rows.count == 5)
        guard case .structure(let first) = rows[0] else { return }
        #expect(first["orig_port_src"] == .int(1030))
    }

    @Test func roles_whenTooLow_areFault3_andAnUnknownSessionIsFault2() throws {
        let viewer = try login("viewer")
        #expect(try faultCode("kill", [viewer, .array(["1"])]) == ApplicationFault.permissionDenied.rawValue)
        #expect(try faultCode("change", [viewer, "mark", "1", 5]) == ApplicationFault.permissionDenied.rawValue)
        let op = try login("operator")
        #expect(try faultCode("audit_list", [op]) == ApplicationFault.permissionDenied.rawValue)
        #expect(try faultCode("audit_verify", [op]) == ApplicationFault.permissionDenied.rawValue)
        #expect(try faultCode("view", ["not-a-session"]) == ApplicationFault.invalidSession.rawValue)
        #expect(try faultCode("login", ["viewer", "wrong"]) == ApplicationFault.loginFailed.rawValue)
    }

    @Test func auditList_withoutAnAuditTrailPlugin_isFault9() throws {
        let admin = try login("admin")
        #expect(try faultCode("audit_list", [admin]) == ApplicationFault.notAvailable.rawValue)
    }

    @Test func auditVerify_withoutAnAuditTrailPlugin_isFault9() throws {
        let admin = try login("admin")
        #expect(try faultCode("audit_verify", [admin]) == ApplicationFault.notAvailable.rawValue)
    }

    @Test func protocolFaults_forUnknownMethodsBadArgumentsAndNestedMulticall() throws {
        #expect(try faultCode("no.such", []) == -32601)
        #expect(try faultCode("view", []) == -32602)
        let sid = try login("viewer")
        #expect(try faultCode("view", [sid, ["colour": "red"]]) == -32602)
        let nested = XMLRPCValue.structure(XMLRPCStruct([("methodName", "system.multicall"), ("params", [[]])]))
        guard case .array(let answers) = try value("system.multicall", [.array([nested])]),
            case .structure(let f) = answers[0]
        else {
            Issue.record("multicall did not answer")
            return
        }
        #expect(f["faultCode"] == .int(-32602))
    }

    @Test func multicall_holdsAtMostOneDumpingCall() throws {
        let sid = try login("viewer")
        let call = XMLRPCValue.structure(XMLRPCStruct([("methodName", "refresh"), ("params", [sid])]))
        guard case .array(let answers) = try value("system.multicall", [.array([call, call])]),
            case .structure(let second) = answers[1]
        else {
            Issue.record("multicall did not answer")
            return
        }
        #expect(second["faultCode"] == .int(Int64(ApplicationFault.tooManyItems.rawValue)))
    }

    @Test func login_withAHugeUserName_isRefusedBeforeTheAuthenticator() throws {
        #expect(try faultCode("login", [.string(String(repeating: "a", count: 300)), "pw"]) == 1)
    }

    @Test func logout_endsTheSession() throws {
        let sid = try login("viewer")
        #expect(try value("logout", [sid]) == .bool(true))
        #expect(try faultCode("status", [sid]) == ApplicationFault.invalidSession.rawValue)
    }

    @Test func kill_afterTheGateClosed_isRefusedBeforeAnythingHappens() throws {
        let op = try login("operator")
        dispatcher.context.actions.closeAndWait()
        #expect(try faultCode("kill", [op, .array(["1"])]) == ApplicationFault.shuttingDown.rawValue)
        #expect(try faultCode("change", [op, "mark", "1", 5]) == ApplicationFault.shuttingDown.rawValue)
        #expect(mirror.statistics.entries == 30)
    }
}

struct ActionGateTests {
    @Test func closeAndWait_waitsForTheWriteInside_thenRefusesNewOnes() {
        let gate = ActionGate()
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let order = Mutex<[String]>([])
        Thread {
            _ = gate.pass {
                entered.signal()
                release.wait()
                order.withLock { $0.append("write done") }
            }
        }.start()
        entered.wait()
        let closed = DispatchSemaphore(value: 0)
        Thread {
            gate.closeAndWait()
            order.withLock { $0.append("closed") }
            closed.signal()
        }.start()
        // Once the gate is shut, closeAndWait is waiting for the write inside: only then let the write finish.
        while gate.isOpen { Thread.sleep(forTimeInterval: 0.001) }
        #expect(order.withLock { $0 }.isEmpty)
        release.signal()
        closed.wait()
        #expect(order.withLock { $0 } == ["write done", "closed"])
        #expect(gate.pass { true } == nil)
    }
}
