import CtdPluginAPI
import Foundation
import Logging

/// The XML-RPC procedures of ctd (pyctd's names and argument order, plus logout, status and introspection).
public final class RPCService: @unchecked Sendable {
    let config: DaemonConfig
    let mirror: ConntrackMirror
    let sessions: SessionStore
    let plugins: PluginRegistry
    let logger: Logger
    let resolvedFields: ResolvedFieldCache
    let queryResults = RecentResults<QueryKey, FlowQueryResult>(capacity: 32)
    let renderedViews = RecentResults<RenderedViewKey, [UInt8]>(capacity: 16) { $0.second < $1.second - 1 }
    let loginThrottle: LoginThrottle
    let startedAt = Date().timeIntervalSince1970

    public init(
        config: DaemonConfig, mirror: ConntrackMirror, sessions: SessionStore, plugins: PluginRegistry, logger: Logger
    ) {
        self.config = config
        self.mirror = mirror
        self.sessions = sessions
        self.plugins = plugins
        self.logger = logger
        self.resolvedFields = ResolvedFieldCache(plugins: plugins)
        self.loginThrottle = LoginThrottle(limit: config.loginFailureLimit, window: config.loginFailureWindow)
    }

    /// One HTTP body in, one out. Never throws: every failure becomes a fault.
    public func handle(body: [UInt8], client: String) -> [UInt8] {
        let request: XMLRPCRequest
        do {
            request = try XMLRPCDecoder.decodeRequest(body, maxDepth: config.maxDepth)
        } catch {
            return XMLRPCEncoder.fault(error)
        }
        if request.methodName == "view" { return viewResponse(request.params, client: client) }
        switch call(request.methodName, request.params, client: client, nested: false) {
        case .success(let value): return XMLRPCEncoder.response(value)
        case .failure(let fault): return XMLRPCEncoder.fault(fault)
        }
    }

    /// `view` outside multicall: frontends poll the same page, so the encoded answer is reused while its key holds.
    func viewResponse(_ params: [XMLRPCValue], client: String) -> [UInt8] {
        do {
            let spec = RPCService.methods["view"]!
            let p = try Params(method: "view", values: params, names: spec.params, required: spec.required)
            let answer = try viewAnswer(p, client: client)
            guard let key = answer.key else { return XMLRPCEncoder.response(answer.value()) }
            return renderedViews.value(for: key) { XMLRPCEncoder.response(answer.value()) }
        } catch let fault as Fault {
            return XMLRPCEncoder.fault(fault)
        } catch {
            logger.error("view failed: \(error)")
            return XMLRPCEncoder.fault(.internalError)
        }
    }

    func call(_ method: String, _ params: [XMLRPCValue], client: String, nested: Bool) -> Result<XMLRPCValue, Fault> {
        do {
            return .success(try dispatch(method, params, client: client, nested: nested))
        } catch let fault as Fault {
            return .failure(fault)
        } catch {
            logger.error("\(method) failed: \(error)")
            return .failure(.internalError)
        }
    }

    private func dispatch(_ method: String, _ values: [XMLRPCValue], client: String, nested: Bool) throws
        -> XMLRPCValue
    {
        guard let spec = RPCService.methods[method] else { throw Fault.methodNotFound(String(method.prefix(100))) }
        let p = try Params(method: method, values: values, names: spec.params, required: spec.required)
        switch method {
        case "system.listMethods": return .array(RPCService.methods.keys.sorted().map { .string($0) })
        case "system.methodHelp": return .string(try help(p.string(0)))
        case "system.methodSignature": return try signature(p.string(0))
        case "system.multicall": return try multicall(p, client: client, nested: nested)
        case "login": return try login(p, client: client)
        case "logout": return .bool(sessions.close(try p.string(0)))
        case "view": return try view(p, client: client)
        case "kill": return try kill(p, client: client)
        case "change": return try change(p, client: client)
        case "refresh": return try refresh(p, client: client)
        case "set_autorefresh": return try setAutorefresh(p, client: client)
        case "status": return try status(p, client: client)
        case "audit_list": return try auditList(p, client: client)
        default: throw Fault.methodNotFound(method)
        }
    }

    // MARK: Sessions and roles

    func session(_ p: Params, need role: Role, client: String) throws -> Session {
        guard let s = sessions.use(try p.string(0)) else { throw Fault.invalidSession }
        guard s.role >= role else {
            let event = ActionEvent(
                kind: .denied, procedure: p.method, user: s.identity.user, roles: Array(s.identity.roles),
                clientAddress: client)
            _ = try? runHooksBefore(event)
            logger.notice("denied \(p.method) to \(s.identity.user) (\(s.role.rawValue)) from \(client)")
            throw Fault.permissionDenied(
                "\(p.method) needs the \(role.rawValue) role; \(s.identity.user) is \(s.role.rawValue)")
        }
        return s
    }

    func login(_ p: Params, client: String) throws -> XMLRPCValue {
        let wanted = plugins.authenticator.loginParameters
        guard p.values.count == wanted.count else {
            throw Fault.invalidParams(
                "login takes \(wanted.count) arguments (\(wanted.joined(separator: ", "))), \(p.values.count) given")
        }
        let args = try (0..<wanted.count).map { i -> String in
            guard case .string(let s) = p.values[i] else {
                throw Fault.invalidParams("argument \(i + 1) of login (\(wanted[i])) must be a string")
            }
            return s
        }
        let user = args.first ?? ""
        guard loginThrottle.allows(client) else {
            logger.warning(
                "login from \(client) refused: \(loginThrottle.limit) failures in \(Int(loginThrottle.window)) s")
            try auditFailedLogin(user: user, client: client, reason: "too many failed logins from this address")
            throw Fault.loginFailed
        }
        let result: AuthResult
        do {
            result = try plugins.authenticator.authenticate(LoginRequest(arguments: args, clientAddress: client))
        } catch {
            plugins.reportProblem(plugins.authenticatorInfo.name, "\(error)")
            throw Fault.internalError
        }
        switch result {
        case .accepted(let identity) where identity.highestRole != nil:
            let tokens = try runHooksBefore(
                ActionEvent(
                    kind: .login, procedure: "login", user: identity.user, roles: Array(identity.roles),
                    clientAddress: client))
            let s = sessions.open(identity: identity, clientAddress: client)
            loginThrottle.succeeded(client)
            runHooksAfter(tokens, outcome: .succeeded)
            logger.info("login \(identity.user) (\(s.role.rawValue)) from \(client)")
            return .string(s.id)
        case .accepted(let identity):
            loginThrottle.failed(client)
            logger.notice("login refused for \(identity.user) from \(client): no role granted")
            try auditFailedLogin(user: user, client: client, reason: "no role granted")
            throw Fault.loginFailed
        case .rejected(let reason):
            loginThrottle.failed(client)
            logger.notice("login failed for \(sanitized(user)) from \(client): \(reason)")
            try auditFailedLogin(user: user, client: client, reason: reason)
            throw Fault.loginFailed
        @unknown default:
            throw Fault.loginFailed
        }
    }

    private func auditFailedLogin(user: String, client: String, reason: String) throws {
        let event = ActionEvent(
            kind: .login, procedure: "login", user: sanitized(user), roles: [], clientAddress: client)
        let tokens = try runHooksBefore(event)
        runHooksAfter(tokens, outcome: .failed(reason: reason))
    }

    private func sanitized(_ s: String) -> String {
        String(s.prefix(64).map { $0.isLetter || $0.isNumber || "._-@".contains($0) ? $0 : "?" })
    }

    // MARK: view, refresh, set_autorefresh

    func view(_ p: Params, client: String) throws -> XMLRPCValue {
        try viewAnswer(p, client: client).value()
    }

    /// The answer of `view`, with what identifies it: the same key always renders the same bytes.
    struct ViewAnswer {
        let key: RenderedViewKey?
        let value: () -> XMLRPCValue
    }

    func viewAnswer(_ p: Params, client: String) throws -> ViewAnswer {
        let s = try session(p, need: .viewer, client: client)
        let filters = try filterInputs(p[1])
        let query = try FlowQuery.parse(
            filters: filters, orderBy: try p.optionalString(2), orderDirection: try p.optionalString(3),
            start: try p.int(4, default: 0), length: try p.int(5, default: Int64(min(100, config.maxPageLength))),
            maxLength: config.maxPageLength, resolvedFields: Set(plugins.resolvedFieldNames))
        let snap: MirrorSnapshot
        if s.autorefresh {
            snap = mirror.snapshot()
        } else if let pinned = s.pinned {
            snap = pinned
        } else {
            snap = mirror.snapshot()
            sessions.update(s.id) { $0.pinned = snap }
        }
        let now = KernelConntrack.monotonicNow()
        let accounting = mirror.statistics.accountingEnabled
        // Orders and filters on `timeout` depend on the clock, not only on the table: never cached. Otherwise the
        // rendered answer is reused within one second (timeouts are shown in whole seconds).
        let clockDependent = query.mentionsTimeout
        let key =
            clockDependent
            ? nil
            : RenderedViewKey(
                generation: snap.generation, query: query, second: Int64(now), autorefresh: s.autorefresh,
                accounting: accounting)
        return ViewAnswer(key: key) { [self] in
            let resolve = resolvedFields.resolver()
            let compute = {
                query.run(on: snap.flows, now: now, resolve: self.plugins.resolvers.isEmpty ? nil : resolve)
            }
            let result =
                clockDependent
                ? compute()
                : queryResults.value(for: QueryKey(generation: snap.generation, query: query), compute: compute)
            var page: [XMLRPCValue] = []
            page.reserveCapacity(result.page.count)
            for i in result.page {
                let flow = snap.flows[i]
                page.append(flow.xmlrpcStruct(now: now, extra: resolvedFields.members(mark: flow.mark)))
            }
            var out: [(String, XMLRPCValue)] = [
                ("total", .int(Int64(result.total))),
                ("start", .int(Int64(query.start))),
                ("length", .int(Int64(page.count))),
                ("connections", .array(page)),
                ("generation", .string(String(snap.generation))),
                ("time", .double(snap.takenAt)),
                ("autorefresh", .bool(s.autorefresh)),
                ("accounting", .bool(accounting)),
            ]
            if !accounting {
                out.append(
                    (
                        "note",
                        .string(
                            "byte and packet counters and byte_rate are not measured: net.netfilter.nf_conntrack_acct is 0 on this host"
                        )
                    ))
            }
            return .structure(XMLRPCStruct(out))
        }
    }

    /// `filters` as pyctd sent it (a struct), or an empty array (PHP cannot encode an empty struct), or nil.
    func filterInputs(_ value: XMLRPCValue?) throws -> [String: FilterInput] {
        guard let value else { return [:] }
        switch value {
        case .nil: return [:]
        case .string(let s) where s.isEmpty: return [:]
        case .array(let a) where a.isEmpty: return [:]
        case .structure(let st):
            var out: [String: FilterInput] = [:]
            for (name, v) in st { out[name] = try filterInput(name, v) }
            return out
        default:
            throw Fault.invalidParams(
                "argument 2 of view (filters) must be a struct of field: value, not \(value.typeName)")
        }
    }

    private func filterInput(_ name: String, _ v: XMLRPCValue) throws -> FilterInput {
        switch v {
        case .int(let n): return .int(n)
        case .string(let s): return .string(s)
        case .bool(let b): return .int(b ? 1 : 0)
        case .double(let d) where d == d.rounded() && abs(d) < 1e18: return .int(Int64(d))
        case .array(let items): return .list(try items.map { try filterInput(name, $0) })
        default: throw Fault.invalidParams("filter \(name): a \(v.typeName) is not a valid filter value")
        }
    }

    func refresh(_ p: Params, client: String) throws -> XMLRPCValue {
        let s = try session(p, need: .viewer, client: client)
        // The snapshot holds every change the kernel made before this call (the event thread catches up first).
        mirror.catchUp()
        let snap = mirror.snapshot()
        sessions.update(s.id) { $0.pinned = snap }
        return .structure(
            XMLRPCStruct([
                ("generation", .string(String(snap.generation))),
                ("time", .double(snap.takenAt)),
                ("entries", .int(Int64(snap.flows.count))),
                ("autorefresh", .bool(s.autorefresh)),
            ]))
    }

    func setAutorefresh(_ p: Params, client: String) throws -> XMLRPCValue {
        let s = try session(p, need: .viewer, client: client)
        let on = try p.bool(1)
        let snap: MirrorSnapshot? = on ? nil : mirror.snapshot()
        sessions.update(s.id) {
            $0.autorefresh = on
            $0.pinned = snap
        }
        return .bool(on)
    }

    // MARK: kill, change

    func kill(_ p: Params, client: String) throws -> XMLRPCValue {
        let s = try session(p, need: .operator, client: client)
        let rawIDs: [XMLRPCValue]
        switch p[1]! {
        case .array(let a): rawIDs = a
        case let single: rawIDs = [single]
        }
        guard !rawIDs.isEmpty else { throw Fault.invalidParams("kill needs at least one id") }
        guard rawIDs.count <= config.maxKillIDs else {
            throw Fault.tooManyItems("kill accepts at most \(config.maxKillIDs) ids per call, \(rawIDs.count) given")
        }
        var ids: [UInt32] = []
        ids.reserveCapacity(rawIDs.count)
        for (i, v) in rawIDs.enumerated() {
            guard let id = UInt32Argument.parse(v) else {
                throw Fault.invalidParams(
                    "id \(i + 1) of kill is not a connection id (an unsigned 32-bit number as string or int)")
            }
            ids.append(id)
        }
        var seen = Set<UInt32>()
        let unique = ids.filter { seen.insert($0).inserted }
        var targets: [Flow] = []
        var notFound: [UInt32] = []
        var ambiguous: [UInt32] = []
        for (id, found) in zip(unique, mirror.lookup(ids: unique)) {
            switch found {
            case .found(let f): targets.append(f)
            case .missing: notFound.append(id)
            case .ambiguous: ambiguous.append(id)
            }
        }
        var failed: [(UInt32, String)] = []
        var batch = HookBatch(events: [], tokens: [], approved: Array(repeating: true, count: targets.count))
        if !plugins.hooks.isEmpty {
            let now = KernelConntrack.monotonicNow()
            let events = targets.map {
                ActionEvent(
                    kind: .kill, procedure: "kill", user: s.identity.user, roles: Array(s.identity.roles),
                    clientAddress: client, connection: $0.connectionInfo(now: now))
            }
            batch = try runHooksBefore(batch: events)
            if targets.count == 1, let reason = batch.vetoes[0] {
                runHooksAfter(batch: batch, outcomes: [.failed(reason: "vetoed: \(reason)")])
                throw Fault.vetoed(reason)
            }
            for (i, reason) in batch.vetoes.enumerated() where reason != nil { failed.append((targets[i].id, reason!)) }
        }
        let approvedIndices = targets.indices.filter { batch.approved[$0] }
        let approved = approvedIndices.map { targets[$0] }
        var outcomes = [ActionOutcome](repeating: .failed(reason: "vetoed"), count: targets.count)
        let kernelOutcomes: [KernelConntrack.Outcome]
        do {
            kernelOutcomes = try KernelConntrack.destroy(approved)
        } catch {
            for i in approvedIndices { outcomes[i] = .failed(reason: "\(error)") }
            runHooksAfter(batch: batch, outcomes: outcomes)
            logger.error("kill: \(error)")
            throw Fault.kernelRefused("the conntrack netlink socket failed; nothing was killed")
        }
        var killed: [Flow] = []
        var gone: [Flow] = []
        for (k, outcome) in kernelOutcomes.enumerated() {
            let i = approvedIndices[k]
            let f = targets[i]
            switch outcome {
            case .done:
                killed.append(f)
                outcomes[i] = .succeeded
            case .gone:
                gone.append(f)
                notFound.append(f.id)
                outcomes[i] = .failed(reason: "no such connection")
            case .failed(let why):
                failed.append((f.id, why))
                outcomes[i] = .failed(reason: why)
            }
        }
        runHooksAfter(batch: batch, outcomes: outcomes)
        mirror.remove(killed + gone)
        logger.info("kill by \(s.identity.user) from \(client): \(killed.count) killed, \(notFound.count) not found")
        if killed.isEmpty && failed.isEmpty {
            if ids.count == 1 && !ambiguous.isEmpty {
                throw Fault.noSuchConnection("id \(ids[0]) is shared by several entries right now; nothing was killed")
            }
            throw Fault.noSuchConnection(
                ids.count == 1
                    ? "id \(ids[0]) does not exist (any more)" : "none of the \(seen.count) ids exists (any more)")
        }
        return .structure(
            XMLRPCStruct([
                ("killed", .int(Int64(killed.count))),
                ("killed_ids", .array(killed.map { .string(String($0.id)) })),
                ("not_found", .array(notFound.map { .string(String($0)) })),
                ("ambiguous", .array(ambiguous.map { .string(String($0)) })),
                (
                    "failed",
                    .array(
                        failed.map {
                            .structure(XMLRPCStruct([("id", .string(String($0.0))), ("reason", .string($0.1))]))
                        })
                ),
            ]))
    }

    func change(_ p: Params, client: String) throws -> XMLRPCValue {
        let s = try session(p, need: .operator, client: client)
        let field = try p.string(1)
        guard let idValue = p[2], let id = UInt32Argument.parse(idValue) else {
            throw Fault.invalidParams("argument 3 of change (id) is not a connection id")
        }
        guard let raw = p[3] else { throw Fault.invalidParams("change needs its argument value") }
        var mark: UInt32?
        var timeout: UInt32?
        switch field {
        case "mark":
            guard let m = UInt32Argument.parse(raw) else {
                guard Self.isNumber(raw) else {
                    throw Fault.invalidParams("mark must be a number (0 to 4294967295), not \(raw.typeName)")
                }
                throw Fault.valueOutOfRange("mark must be an unsigned 32-bit number (0 to 4294967295)")
            }
            mark = m
        case "timeout":
            let t: Int64?
            switch raw {
            case .int(let n): t = n
            case .string(let str): t = Int64(str.trimmingCharacters(in: .whitespaces))
            case .double(let d) where d == d.rounded() && abs(d) < 1e12: t = Int64(d)
            default: t = nil
            }
            guard let t, t >= 1, t <= Int64(Int32.max) else {
                guard Self.isNumber(raw) else {
                    throw Fault.invalidParams("timeout must be a number of seconds, not \(raw.typeName)")
                }
                throw Fault.valueOutOfRange("timeout must be a whole number of seconds from 1 to 2147483647")
            }
            timeout = UInt32(t)
        default:
            throw Fault.invalidParams("change can set 'mark' or 'timeout', not '\(String(field.prefix(40)))'")
        }
        let flow: Flow
        switch mirror.lookup(id: id) {
        case .found(let f): flow = f
        case .missing: throw Fault.noSuchConnection("id \(id) does not exist (any more)")
        case .ambiguous:
            throw Fault.noSuchConnection("id \(id) is shared by several entries right now; nothing was changed")
        }
        let now = KernelConntrack.monotonicNow()
        let newValue = mark.map { String($0) } ?? timeout.map { String($0) } ?? ""
        let tokens = try runHooksBefore(
            ActionEvent(
                kind: .change, procedure: "change", user: s.identity.user, roles: Array(s.identity.roles),
                clientAddress: client, connection: flow.connectionInfo(now: now), field: field, newValue: newValue))
        let outcome: KernelConntrack.Outcome
        let after: Flow?
        do {
            (outcome, after) = try KernelConntrack.update(flow, mark: mark, timeout: timeout)
        } catch {
            runHooksAfter(tokens, outcome: .failed(reason: "\(error)"))
            throw Fault.kernelRefused("\(error)")
        }
        switch outcome {
        case .done:
            runHooksAfter(tokens, outcome: .succeeded)
            if let after { mirror.replace(after) }
            logger.info("change \(field)=\(newValue) on \(id) by \(s.identity.user) from \(client)")
            let shown = after ?? flow
            return shown.xmlrpcStruct(
                now: KernelConntrack.monotonicNow(), extra: resolvedFields.members(mark: shown.mark))
        case .gone:
            runHooksAfter(tokens, outcome: .failed(reason: "no such connection"))
            mirror.remove([flow])
            throw Fault.noSuchConnection("id \(id) does not exist (any more)")
        case .failed(let why):
            runHooksAfter(tokens, outcome: .failed(reason: why))
            logger.warning("change on \(id) failed: \(why)")
            throw Fault.kernelRefused(why)
        }
    }

    /// A number in any form `change` reads (int, double, decimal or 0x text): a bad one is out of range (fault 5),
    /// anything else the wrong type (-32602).
    static func isNumber(_ v: XMLRPCValue) -> Bool {
        switch v {
        case .int, .double: return true
        case .string(let text):
            let t = text.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("0x") || t.hasPrefix("0X") else { return Double(t) != nil }
            let digits = t.dropFirst(2)
            return !digits.isEmpty && digits.allSatisfy(\.isHexDigit)
        default: return false
        }
    }

    // MARK: status and introspection

    func status(_ p: Params, client: String) throws -> XMLRPCValue {
        _ = try session(p, need: .viewer, client: client)
        let st = mirror.statistics
        let pluginList: [XMLRPCValue] = plugins.all.map { lp in
            .structure(
                XMLRPCStruct([
                    ("name", .string(lp.name)), ("id", .string(lp.metadata.id)),
                    ("version", .string(lp.metadata.version)),
                    ("roles", .array(lp.metadata.roles.map { .string($0.rawValue) })),
                    ("health", .string(plugins.health(lp))),
                ]))
        }
        return .structure(
            XMLRPCStruct([
                ("version", .string(ctdVersion)),
                ("entries", .int(Int64(st.entries))),
                ("generation", .string(String(st.generation))),
                ("resyncs", .int(Int64(st.resyncs))),
                ("events_applied", .double(Double(st.eventsApplied))),
                ("events_healthy", .bool(st.eventsHealthy)),
                ("receive_buffer", .int(Int64(st.receiveBuffer))),
                ("counter_refreshes", .int(Int64(st.counterRefreshes))),
                ("accounting", .bool(st.accountingEnabled)),
                ("sessions", .int(Int64(sessions.count))),
                ("uptime", .double(Date().timeIntervalSince1970 - startedAt)),
                ("plugins", .array(pluginList)),
            ]))
    }

    func multicall(_ p: Params, client: String, nested: Bool) throws -> XMLRPCValue {
        guard !nested else { throw Fault.invalidParams("system.multicall cannot be nested") }
        guard case .array(let calls) = p.values[0] else {
            throw Fault.invalidParams("system.multicall takes an array of {methodName, params} structs")
        }
        guard calls.count <= 1000 else { throw Fault.tooManyItems("system.multicall accepts at most 1000 calls") }
        return .array(
            calls.map { c -> XMLRPCValue in
                guard case .structure(let st) = c, case .string(let name)? = st["methodName"] else {
                    return faultStruct(.invalidParams("each call needs a methodName string"))
                }
                let params: [XMLRPCValue]
                switch st["params"] {
                case .array(let a)?: params = a
                case nil: params = []
                default: return faultStruct(.invalidParams("params of \(name) must be an array"))
                }
                switch call(name, params, client: client, nested: true) {
                case .success(let v): return .array([v])
                case .failure(let f): return faultStruct(f)
                }
            })
    }

    private func faultStruct(_ f: Fault) -> XMLRPCValue {
        .structure(XMLRPCStruct([("faultCode", .int(Int64(f.code))), ("faultString", .string(f.message))]))
    }

    func help(_ name: String) throws -> String {
        guard let spec = RPCService.methods[name] else { throw Fault.methodNotFound(String(name.prefix(100))) }
        if name == "login" {
            return
                "login(\(plugins.authenticator.loginParameters.joined(separator: ", "))) -> session id string. \(spec.help)"
        }
        return spec.help
    }

    func signature(_ name: String) throws -> XMLRPCValue {
        guard let spec = RPCService.methods[name] else { throw Fault.methodNotFound(String(name.prefix(100))) }
        if name == "login" {
            return .array([
                .array([.string("string")] + plugins.authenticator.loginParameters.map { _ in .string("string") })
            ])
        }
        return .array(spec.signatures.map { .array($0.map { .string($0) }) })
    }

    // MARK: Hooks

    /// The hooks' answers for a batch: `tokens[h]` are hook h's tokens (hooks that were asked, in order).
    struct HookBatch {
        var events: [ActionEvent]
        var tokens: [[Int64]]
        var approved: [Bool]
        var vetoes: [String?] = []
    }

    /// `before(batch:)` on every hook: a veto stops that action only; a failure of a hook whose failure stops
    /// actions stops the whole batch with a fault (nothing unaudited).
    func runHooksBefore(batch events: [ActionEvent]) throws -> HookBatch {
        var result = HookBatch(
            events: events, tokens: [], approved: Array(repeating: true, count: events.count),
            vetoes: Array(repeating: nil, count: events.count))
        for (info, hook) in plugins.hooks {
            do {
                let answers = try hook.before(batch: events)
                guard answers.count == events.count else {
                    throw PluginError("answered \(answers.count) decisions for \(events.count) actions")
                }
                result.tokens.append(answers.map(\.token))
                for (i, a) in answers.enumerated() {
                    if case .veto(let reason) = a.decision, result.approved[i] {
                        result.approved[i] = false
                        result.vetoes[i] = "\(reason) (\(info.name))"
                    }
                }
                plugins.reportProblem(info.name, nil)
            } catch {
                plugins.reportProblem(info.name, "\(error)")
                if hook.failureStopsAction {
                    runHooksAfter(
                        batch: result,
                        outcomes: Array(repeating: .failed(reason: "\(info.name) failed"), count: events.count))
                    throw Fault.vetoed("\(info.name) could not record the action, so it was not done")
                }
                result.tokens.append([])
            }
        }
        return result
    }

    func runHooksAfter(batch: HookBatch, outcomes: [ActionOutcome]) {
        for (h, tokens) in batch.tokens.enumerated() where !tokens.isEmpty {
            let (info, hook) = plugins.hooks[h]
            do {
                try hook.after(batch: (0..<batch.events.count).map { (batch.events[$0], tokens[$0], outcomes[$0]) })
            } catch {
                plugins.reportProblem(info.name, "\(error)")
            }
        }
    }

    /// One action (login, change, a denied call): the batch path with one event. A veto throws the fault, after
    /// telling the hooks that were asked that the action did not happen.
    func runHooksBefore(_ event: ActionEvent) throws -> HookBatch {
        let batch = try runHooksBefore(batch: [event])
        if let reason = batch.vetoes.first.flatMap({ $0 }) {
            runHooksAfter(batch: batch, outcomes: [.failed(reason: "vetoed: \(reason)")])
            throw Fault.vetoed(reason)
        }
        return batch
    }

    func runHooksAfter(_ batch: HookBatch, outcome: ActionOutcome) {
        runHooksAfter(batch: batch, outcomes: [outcome])
    }
}

public let ctdVersion = "0.1.0"
