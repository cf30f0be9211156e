/// An XML-RPC fault: a stable code and a sentence a person understands. Internal details never go in `message`.
///
/// Codes follow the xmlrpc-epi interoperability spec for protocol errors and use ctd's own positive codes for
/// application errors. The table is in the README; codes never change meaning.
public struct Fault: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: Int
    public var message: String

    public init(code: Int, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "fault \(code): \(message)" }

    // Interoperability codes.
    public static func parseError(_ why: String) -> Fault { Fault(code: -32700, message: "Parse error: \(why)") }
    public static func invalidRequest(_ why: String) -> Fault {
        Fault(code: -32600, message: "Invalid XML-RPC request: \(why)")
    }
    public static func methodNotFound(_ name: String) -> Fault {
        Fault(code: -32601, message: "Unknown method '\(name)'. Call system.listMethods for the list.")
    }
    public static func invalidParams(_ why: String) -> Fault {
        Fault(code: -32602, message: "Invalid parameters: \(why)")
    }
    public static let internalError = Fault(
        code: -32603, message: "Internal error; the daemon log has the details.")
    public static func requestTooLarge(limit: Int) -> Fault {
        Fault(code: -32000, message: "Request body is larger than the limit of \(limit) bytes.")
    }
    public static func nestingTooDeep(limit: Int) -> Fault {
        Fault(code: -32001, message: "Request nests values deeper than the limit of \(limit) levels.")
    }
    public static let busy = Fault(code: -32002, message: "Server is busy; try again shortly.")

    // Application codes.
    public static let loginFailed = Fault(code: 1, message: "Login failed: wrong user name or password.")
    public static let invalidSession = Fault(
        code: 2, message: "Unknown or expired session; log in again.")
    public static func permissionDenied(_ what: String) -> Fault {
        Fault(code: 3, message: "Permission denied: \(what)")
    }
    public static func noSuchConnection(_ what: String) -> Fault {
        Fault(code: 4, message: "No such connection: \(what)")
    }
    public static func valueOutOfRange(_ why: String) -> Fault { Fault(code: 5, message: "Value out of range: \(why)") }
    public static func kernelRefused(_ why: String) -> Fault {
        Fault(code: 6, message: "The kernel refused the operation: \(why)")
    }
    public static func vetoed(_ why: String) -> Fault { Fault(code: 7, message: "Action refused: \(why)") }
    public static func notAvailable(_ why: String) -> Fault { Fault(code: 9, message: "Not available: \(why)") }
    public static func tooManyItems(_ why: String) -> Fault { Fault(code: 8, message: "Too many items: \(why)") }
}
