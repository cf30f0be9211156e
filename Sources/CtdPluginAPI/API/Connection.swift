/// A connection-tracking entry as plugins see it: a plain copy, detached from the live table.
public struct ConnectionInfo: Sendable, Equatable {
    /// The kernel's conntrack id (opaque, unsigned 32-bit).
    public var id: UInt32
    /// Layer-3 family name: `ipv4` or `ipv6`.
    public var l3proto: String
    /// Layer-4 protocol number (6 = TCP, 17 = UDP, 1 = ICMP, 58 = ICMPv6...).
    public var l4proto: UInt8
    /// Original direction source address, textual.
    public var origSource: String
    /// Original direction destination address, textual.
    public var origDestination: String
    /// Original direction source port (0 when the protocol has none).
    public var origSourcePort: UInt16
    /// Original direction destination port (0 when the protocol has none).
    public var origDestinationPort: UInt16
    /// Reply direction source address, textual.
    public var replySource: String
    /// Reply direction destination address, textual.
    public var replyDestination: String
    /// Reply direction source port.
    public var replySourcePort: UInt16
    /// Reply direction destination port.
    public var replyDestinationPort: UInt16
    /// The connection mark.
    public var mark: UInt32
    /// Seconds left before the entry expires.
    public var timeout: UInt32
    /// The kernel's status bits (`IPS_*`).
    public var status: UInt32
    /// The conntrack zone.
    public var zone: UInt16

    /// Creates a connection description.
    public init(
        id: UInt32, l3proto: String, l4proto: UInt8,
        origSource: String, origDestination: String, origSourcePort: UInt16, origDestinationPort: UInt16,
        replySource: String, replyDestination: String, replySourcePort: UInt16, replyDestinationPort: UInt16,
        mark: UInt32, timeout: UInt32, status: UInt32, zone: UInt16
    ) {
        self.id = id
        self.l3proto = l3proto
        self.l4proto = l4proto
        self.origSource = origSource
        self.origDestination = origDestination
        self.origSourcePort = origSourcePort
        self.origDestinationPort = origDestinationPort
        self.replySource = replySource
        self.replyDestination = replyDestination
        self.replySourcePort = replySourcePort
        self.replyDestinationPort = replyDestinationPort
        self.mark = mark
        self.timeout = timeout
        self.status = status
        self.zone = zone
    }
}

/// A value a ``FieldResolver`` adds to a connection.
public enum FieldValue: Sendable, Equatable, Comparable {
    /// A number; sorts numerically.
    case integer(Int64)
    /// A string; sorts lexicographically.
    case string(String)

    /// Integers sort before strings; like kinds compare by value.
    public static func < (lhs: FieldValue, rhs: FieldValue) -> Bool {
        switch (lhs, rhs) {
        case (.integer(let a), .integer(let b)): return a < b
        case (.string(let a), .string(let b)): return a < b
        case (.integer, .string): return true
        case (.string, .integer): return false
        }
    }
}

/// Describes one resolved field.
public struct FieldDescriptor: Sendable, Equatable {
    /// The field's name in `view` results, filters and `order_by` (lowercase snake_case).
    public var name: String
    /// One sentence for `system.methodHelp`.
    public var summary: String

    /// Creates a descriptor.
    /// - Parameters:
    ///   - name: the field name.
    ///   - summary: what it means.
    public init(name: String, summary: String) {
        self.name = name
        self.summary = summary
    }
}

/// Adds named fields to connections (for example a user name derived from the mark).
///
/// The host calls ``resolve(mark:)`` with the connection mark only: resolvers key on the mark so that the host can
/// cache results per distinct mark and resolve a 250,000-entry table in the number of distinct marks, not entries.
/// Thread-safety: called concurrently; must not block for long (cache slow lookups).
public protocol FieldResolver: CtdPlugin {
    /// The fields this resolver adds; names must not collide with built-in fields.
    var fields: [FieldDescriptor] { get }

    /// Resolves the fields for a mark.
    /// - Parameter mark: the connection mark.
    /// - Returns: a value for each field name in ``fields``; a missing name means "no value".
    /// - Throws: ``PluginError`` on technical failure; the host then leaves the fields empty and reports the
    ///   resolver unhealthy, but keeps serving.
    func resolve(mark: UInt32) throws -> [String: FieldValue]
}

/// The kind of action an ``ActionHook`` sees.
public enum ActionKind: String, Sendable, Codable {
    /// A `login` call (success or failure).
    case login
    /// A `kill` of one connection.
    case kill
    /// A `change` of one connection's field.
    case change
    /// A call the session's role does not allow.
    case denied
    /// An `audit_list` call: an admin reading the audit trail over XML-RPC. ``ActionEvent/connection`` is `nil`,
    /// ``ActionEvent/field`` is `"filters"` and ``ActionEvent/newValue`` the filters and limit asked for. Hooks see it
    /// once the answer is ready and before it is sent: a veto, or a failure of a hook whose failure stops actions,
    /// withholds the answer.
    case auditRead = "audit_read"
}

/// One action, as hooks see it.
public struct ActionEvent: Sendable, Equatable {
    /// What is happening.
    public var kind: ActionKind
    /// The XML-RPC procedure name.
    public var procedure: String
    /// The user, when known (for a failed login: the name that was tried).
    public var user: String
    /// The user's roles (empty before login succeeds).
    public var roles: [Role]
    /// The client's address.
    public var clientAddress: String
    /// The connection as it was before the action, for kill and change; `nil` otherwise.
    public var connection: ConnectionInfo?
    /// The field being changed (`mark`, `timeout`), for change; `"filters"` for an audit read.
    public var field: String?
    /// The requested new value, textual, for change; the filters and limit asked, for an audit read.
    public var newValue: String?

    /// Creates an event.
    public init(
        kind: ActionKind, procedure: String, user: String, roles: [Role], clientAddress: String,
        connection: ConnectionInfo? = nil, field: String? = nil, newValue: String? = nil
    ) {
        self.kind = kind
        self.procedure = procedure
        self.user = user
        self.roles = roles
        self.clientAddress = clientAddress
        self.connection = connection
        self.field = field
        self.newValue = newValue
    }
}

/// What a hook decides before an action.
public enum HookDecision: Sendable, Equatable {
    /// Let the action proceed.
    case allow
    /// Stop it; `reason` is sent to the client.
    case veto(reason: String)
}

/// The outcome of an action, given to hooks afterwards.
public enum ActionOutcome: Sendable, Equatable {
    /// The action happened.
    case succeeded
    /// The action did not happen; `reason` says why (no such connection, kernel error, vetoed...).
    case failed(reason: String)
}

/// Sees every login, kill, change, denied call and audit read before and after it happens.
///
/// Call order for one action: ``before(_:)`` on every hook (in configuration order); if all allow, the action;
/// then ``after(_:token:outcome:)`` on every hook that was asked. Thread-safety: called concurrently.
public protocol ActionHook: CtdPlugin {
    /// When `true`, a thrown error from ``before(_:)`` stops the action (an audit log must set this: nothing
    /// unaudited). When `false`, the error is logged, the hook is reported unhealthy and the action proceeds.
    var failureStopsAction: Bool { get }

    /// Called before the action. Make anything you must record durable before returning.
    /// - Parameter event: the action about to happen.
    /// - Returns: the decision and an opaque token handed back to ``after(_:token:outcome:)`` (e.g. a row id).
    /// - Throws: ``PluginError`` on technical failure; see ``failureStopsAction``.
    func before(_ event: ActionEvent) throws -> (decision: HookDecision, token: Int64)

    /// Called after the action with its outcome. Errors are logged, never sent to the client.
    /// - Parameters:
    ///   - event: the same event as in ``before(_:)``.
    ///   - token: the token ``before(_:)`` returned.
    ///   - outcome: what happened.
    /// - Throws: ``PluginError``; logged and reported as health.
    func after(_ event: ActionEvent, token: Int64, outcome: ActionOutcome) throws

    /// Called before the actions of one call that acts on many connections (a `kill` of many ids), in place of
    /// one ``before(_:)`` per event. Has a default implementation; see the extension.
    func before(batch events: [ActionEvent]) throws -> [(decision: HookDecision, token: Int64)]

    /// Called after a batch with each action's outcome. Has a default implementation; see the extension.
    func after(batch results: [(event: ActionEvent, token: Int64, outcome: ActionOutcome)]) throws
}

extension ActionHook {
    /// Called before the actions of one call that acts on many connections (a `kill` of many ids), in place of
    /// one ``before(_:)`` per event. Override it to make the whole batch durable at once (one transaction); the
    /// default calls ``before(_:)`` for each event in order.
    /// - Parameter events: the actions about to happen.
    /// - Returns: one decision and token per event, in order.
    /// - Throws: ``PluginError``; see ``failureStopsAction``: then none of the batch happens.
    public func before(batch events: [ActionEvent]) throws -> [(decision: HookDecision, token: Int64)] {
        try events.map { try before($0) }
    }

    /// Called after a batch with each action's outcome, in place of one ``after(_:token:outcome:)`` per event.
    /// The default calls ``after(_:token:outcome:)`` for each.
    /// - Parameter results: each event with its token and outcome.
    /// - Throws: ``PluginError``; logged and reported as health.
    public func after(batch results: [(event: ActionEvent, token: Int64, outcome: ActionOutcome)]) throws {
        for r in results { try after(r.event, token: r.token, outcome: r.outcome) }
    }
}
