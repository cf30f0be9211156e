import CtdPluginAPI
import CtdPluginTestKit
import Foundation
import Synchronization

/// A PAM configuration directory for one test: service files that use libpam-wrapper's pam_matrix module and its
/// password database (`user:password:service` lines), handed to the plugin as `confdir`. No system file is touched
/// and nothing is preloaded: the real libpam runs the real stack.
///
/// pam_matrix's account step allows a user only on the service named in the user's line; a user whose line names
/// another service passes `pam_authenticate` and is refused by `pam_acct_mgmt` (PAM_PERM_DENIED).
final class PAMTestDirectory {
    let path: String
    var passdb: String { path + "/passdb" }

    /// - Parameter users: `(user, password, service)` lines of the password database. pam_matrix crashes on a line
    ///   with fewer than two `:`, so every line has all three fields.
    init(users: [(String, String, String)]) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("authpam-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try users.map { "\($0.0):\($0.1):\($0.2)\n" }.joined()
            .write(toFile: passdb, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `<dir>/<name>`: pam_matrix for auth and account, after `authPrefix` lines (e.g. pam_faildelay).
    func addService(_ name: String, authPrefix: [String] = [], passdb: String? = nil) throws {
        let module = try Self.pamMatrixModule()
        let db = passdb ?? self.passdb
        let lines =
            authPrefix.map { "auth optional \($0)" } + [
                "auth required \(module) passdb=\(db)",
                "account required \(module) passdb=\(db)",
            ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: path + "/" + name, atomically: true, encoding: .utf8)
    }

    /// The absolute path of pam_matrix.so (Debian package libpam-wrapper); `PAM_MATRIX_MODULE` overrides it.
    static func pamMatrixModule() throws -> String {
        var candidates = ["/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so", "/usr/lib/pam_wrapper/pam_matrix.so"]
        if let dirs = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib") {
            candidates += dirs.map { "/usr/lib/\($0)/pam_wrapper/pam_matrix.so" }
        }
        if let override = ProcessInfo.processInfo.environment["PAM_MATRIX_MODULE"] { candidates = [override] }
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw SetupError("pam_matrix.so not found: install libpam-wrapper (make deps) or set PAM_MATRIX_MODULE")
        }
        return found
    }
}

struct SetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The built libAuthPAM.so, loaded through the host's PluginLoader by the test kit (next to the test binary, or in
/// `CTD_PLUGIN_DIR`): dlopen, the entry symbol, the ABI and role checks, `as? Authenticator`.
enum AuthPAMUnderTest {
    /// A fresh, unconfigured plugin instance.
    static func make() throws -> any Authenticator {
        try PluginUnderTest.instance("AuthPAM", as: (any Authenticator).self, role: .authenticator)
    }

    /// A plugin configured with `values` as its `[plugin.AuthPAM]` section; log lines go to `log`.
    static func configured(_ values: [String: ConfigValue], log: LogLines = LogLines()) throws -> any Authenticator {
        try PluginUnderTest.configured(
            "AuthPAM", as: (any Authenticator).self, role: .authenticator, values: values, log: log.context.log)
    }
}

/// Collects a plugin's log lines.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var context: PluginContext {
        PluginContext { [self] level, message in lines.withLock { $0.append("\(level.rawValue): \(message)") } }
    }
}

/// Runs `count` closures on `count` threads of their own (not a pool sized by core count) and waits for all.
func onParallelThreads<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
    let results = Mutex<[Int: T]>([:])
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            let value = body(index)
            results.withLock { $0[index] = value }
            group.leave()
        }
        thread.start()
    }
    group.wait()
    return results.withLock { dict in (0..<count).map { dict[$0]! } }
}
