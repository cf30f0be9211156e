import ArgumentParser
import AuditLog
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension AuditCommand {
    /// `ctd audit prune --before T`: retention. Writes to the trail (while the daemon runs, too: appends take SQLite's
    /// write lock), so it needs the signing key.
    struct Prune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Remove the rows recorded before a time from the start of the trail; the rest stays verifiable from a signed checkpoint of the removed prefix.",
            discussion:
                "The prune is itself recorded in the trail (action prune, by the Unix user running it). It removes a prefix: it stops before an action whose outcome is kept. `ctd audit verify --pubkey` on the result says where the trail starts. Take a `ctd audit backup` first if the rows must be kept elsewhere. Exit status: 0 done, 2 cannot read or write the trail or the key."
        )
        @OptionGroup var location: Location
        @Option(name: .long, help: "Remove rows recorded before this time: epoch seconds or ISO 8601 (UTC unless a zone is given).")
        var before: String
        @Option(name: .long, help: "The private signing key (default: audit-signing.key beside the database).")
        var key: String?

        func validate() throws {
            _ = try cutoff()
        }

        func cutoff() throws -> Double {
            do {
                guard let t = try AuditFilter.parse(since: before, until: nil, user: nil, action: nil).since else {
                    throw ValidationError("--before needs a time")
                }
                return t
            } catch let e as AuditError {
                throw ValidationError(e.message.replacingOccurrences(of: "since", with: "--before"))
            }
        }

        func run() throws {
            let time = try cutoff()
            let db = try location.path()
            guard FileManager.default.fileExists(atPath: db) else {
                AuditCommand.standardError("error: the audit database \(db) does not exist")
                throw ExitCode(2)
            }
            let keyPath =
                key
                ?? ((db as NSString).deletingLastPathComponent as NSString).appendingPathComponent("audit-signing.key")
            do {
                let signing = try AuditSigningKey.load(path: keyPath)
                let store = try AuditStore(path: db)
                defer { store.close() }
                let report = try store.prune(
                    before: time, key: signing, user: Self.unixUser(), client: "local (ctd audit prune, pid \(getpid()))")
                print(report.description)
            } catch let e as AuditError {
                AuditCommand.standardError("error: \(e.message)")
                throw ExitCode(2)
            }
        }

        static func unixUser() -> String {
            let uid = geteuid()
            guard let pw = getpwuid(uid), let name = pw.pointee.pw_name else { return "uid \(uid)" }
            return String(cString: name)
        }
    }
}
