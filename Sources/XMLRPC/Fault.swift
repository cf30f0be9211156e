/// An XML-RPC fault: a stable code and a sentence a person understands. Internal details never go in `message`.
///
/// This module knows only the protocol's own codes (the xmlrpc-epi interoperability spec, and two of its
/// implementation-defined range for the request limits). Applications add their own positive codes (ctd's are in
/// CtdCore's `ApplicationFault`); the README's table lists them all, and codes never change meaning.
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
    public static func responseTooLarge(limit: Int) -> Fault {
        Fault(
            code: -32003,
            message:
                "The answer would be larger than the limit of \(limit) bytes; ask for less (fewer calls, shorter pages).")
    }
}
