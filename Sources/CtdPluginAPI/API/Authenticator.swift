/// What a session may do. Roles are cumulative: an operator can do everything a viewer can.
public enum Role: String, Sendable, CaseIterable, Codable, Comparable {
    /// `view`, `refresh`, `set_autorefresh`, `status`.
    case viewer
    /// Also `kill` and `change`.
    case `operator`
    /// Also reads the audit log.
    case admin

    private var rank: Int {
        switch self {
        case .viewer: return 0
        case .operator: return 1
        case .admin: return 2
        }
    }

    /// Orders roles by privilege.
    public static func < (lhs: Role, rhs: Role) -> Bool { lhs.rank < rhs.rank }
}

/// Which connections a session sees and may act on.
public enum Scope: String, Sendable, CaseIterable, Codable {
    /// Every connection (within what the host hides).
    case all
    /// Only the connections whose resolved `username` (a resolver plugin such as UIDResolver, from the uid in the
    /// connection mark) is this user: on a shared host, people see and end their own connections and nothing else.
    case own
}

/// Who logged in and what they may do.
public struct Identity: Sendable, Equatable {
    /// The user name, as shown in logs and the audit trail.
    public var user: String
    /// The roles granted; the host takes the highest.
    public var roles: Set<Role>
    /// Which connections the session may see and act on; the host applies it to every procedure.
    public var scope: Scope

    /// Creates an identity.
    /// - Parameters:
    ///   - user: the user name.
    ///   - roles: the granted roles; empty means the user may not log in.
    ///   - scope: the connections the user may see and act on (default: all).
    public init(user: String, roles: Set<Role>, scope: Scope = .all) {
        self.user = user
        self.roles = roles
        self.scope = scope
    }

    /// The most privileged role, or `nil` when none is granted.
    public var highestRole: Role? { roles.max() }
}

/// The credentials a client sent with `login`, in the order the authenticator declared.
public struct LoginRequest: Sendable {
    /// The positional string arguments of `login`, one per ``Authenticator/loginParameters`` entry.
    public var arguments: [String]
    /// The client's address, for logging and rate decisions (`"127.0.0.1"`, `"::1"`).
    public var clientAddress: String

    /// Creates a request.
    /// - Parameters:
    ///   - arguments: the login arguments.
    ///   - clientAddress: where the request came from.
    public init(arguments: [String], clientAddress: String) {
        self.arguments = arguments
        self.clientAddress = clientAddress
    }
}

/// The answer to a login attempt.
public enum AuthResult: Sendable, Equatable {
    /// The credentials are good.
    case accepted(Identity)
    /// The credentials are wrong, the user is unknown or the account is refused. `reason` goes to the log and
    /// the audit trail only; the client always gets the same fault, so that it cannot tell which.
    case rejected(reason: String)
}

/// Checks the credentials of `login`. Exactly one authenticator is active (`--mod-auth NAME`).
///
/// Thread-safety: ``authenticate(_:)`` is called concurrently from a thread pool, never from the server's event
/// loop, so it may block (PAM, password hashing).
public protocol Authenticator: CtdPlugin {
    /// The names of `login`'s arguments, in order, e.g. `["username", "password"]`. Used for the `login`
    /// signature in `system.methodHelp` and to check the argument count.
    var loginParameters: [String] { get }

    /// Checks credentials.
    /// - Parameter request: the login arguments and the client address.
    /// - Returns: ``AuthResult/accepted(_:)`` or ``AuthResult/rejected(reason:)``. Spend the same work for an
    ///   unknown user as for a known one.
    /// - Throws: ``PluginError`` on technical failure only (file unreadable, PAM broken); the client then gets an
    ///   internal-error fault and the log gets the message.
    func authenticate(_ request: LoginRequest) throws -> AuthResult
}

/// An authenticator that can say, without a password, what a user may do now: after a reload the host ends the
/// sessions of users who no longer exist, lost the role their session has, or were narrowed to their own
/// connections.
///
/// Called on the reload thread, once per open session, after ``ReloadablePlugin/reload(_:context:)``.
public protocol IdentityRechecking: Authenticator {
    /// The identity `user` would get at a login now (roles and scope); nil when the user no longer exists or may
    /// no longer log in.
    func currentIdentity(of user: String) -> Identity?
}
