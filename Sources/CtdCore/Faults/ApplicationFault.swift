import ConntrackQuery
import XMLRPC

/// ctd's own fault codes, in one place. The protocol's codes (-32700 to -32000) are the XMLRPC module's; these are
/// positive and never change meaning. The README's fault table lists both, and a test holds it against this enum.
package enum ApplicationFault: Int, CaseIterable, Sendable {
    case loginFailed = 1
    case invalidSession = 2
    case permissionDenied = 3
    case noSuchConnection = 4
    case valueOutOfRange = 5
    case kernelRefused = 6
    case vetoed = 7
    case tooManyItems = 8
    case notAvailable = 9
    case shuttingDown = 10
    case busy = 11

    /// The fault with this code and `message`.
    package func fault(_ message: String) -> Fault { Fault(code: rawValue, message: message) }
}

extension Fault {
    package static let loginFailed = ApplicationFault.loginFailed.fault("Login failed: wrong user name or password.")
    package static let invalidSession = ApplicationFault.invalidSession.fault("Unknown or expired session; log in again.")
    package static func permissionDenied(_ what: String) -> Fault {
        ApplicationFault.permissionDenied.fault("Permission denied: \(what)")
    }
    package static func noSuchConnection(_ what: String) -> Fault {
        ApplicationFault.noSuchConnection.fault("No such connection: \(what)")
    }
    package static func valueOutOfRange(_ why: String) -> Fault {
        ApplicationFault.valueOutOfRange.fault("Value out of range: \(why)")
    }
    package static func kernelRefused(_ why: String) -> Fault {
        ApplicationFault.kernelRefused.fault("The kernel refused the operation: \(why)")
    }
    package static func vetoed(_ why: String) -> Fault { ApplicationFault.vetoed.fault("Action refused: \(why)") }
    package static func tooManyItems(_ why: String) -> Fault {
        ApplicationFault.tooManyItems.fault("Too many items: \(why)")
    }
    package static func notAvailable(_ why: String) -> Fault {
        ApplicationFault.notAvailable.fault("Not available: \(why)")
    }
    package static let shuttingDown = ApplicationFault.shuttingDown.fault(
        "The server is shutting down; the action was not done. Try again once it is back.")

    package static let busy = ApplicationFault.busy.fault(
        "Too many logins are being checked right now; try again in a moment.")

    /// A query the engine refused, as the client sees it.
    package init(_ error: FlowQueryError) { self = .invalidParams(error.message) }
}
