import ArgumentParser
import AuditLog

extension AuditCommand {
    /// `ctd audit backup DEST`: a consistent copy through SQLite's online backup API, while the daemon writes.
    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Copy the trail to a new file with SQLite's online backup API (consistent while ctd writes, its -wal included); the copy's chain is checked.",
            discussion:
                "The copy is one self-contained file (mode 0600, no -wal) and never overwrites an existing file. Check it elsewhere with `ctd audit verify --db DEST --pubkey KEY`. Exit status: 0 copied and intact, 1 copied but its chain is not intact, 2 cannot read the trail or write DEST."
        )
        @OptionGroup var location: Location
        @Argument(help: "The new file to write.") var destination: String

        func run() throws {
            let report = try AuditCommand.open(location.path()) { store in
                do {
                    return try store.backup(to: destination)
                } catch let error as AuditError {
                    AuditCommand.standardError("error: \(error.message)")
                    throw ExitCode(2)
                }
            }
            for warning in report.chain.warnings { AuditCommand.standardError("warning: \(warning)") }
            guard report.chain.isIntact else {
                print("backup \(destination) written, but its chain is not intact: \(report.chain.description)")
                throw ExitCode(1)
            }
            print(report.description)
        }
    }
}
