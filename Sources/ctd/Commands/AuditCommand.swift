import ArgumentParser
import AuditLog
import Foundation
import Logging
import PluginHost

/// `ctd audit verify|list|export`: reads the AuditSQLite plugin's database. Opens it read-only: it never creates,
/// migrates or writes the file, and works while the daemon appends to it.
///
/// Exit status: 0 success (verify: chain intact), 1 verify found tampering, 2 the database cannot be read.
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Check and read an AuditSQLite audit trail.",
        subcommands: [Verify.self, List.self, Export.self, PublicKey.self, Backup.self, Prune.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the hash chain: exit 0 if intact, 1 naming the first bad row (edited, deleted, relinked).")
        @OptionGroup var location: Location
        @Option(
            name: .long,
            help:
                "The public key (`ctd audit pubkey`'s output): check every signed checkpoint; rows after the last are reported as not yet anchored."
        )
        var pubkey: String?
        @Option(
            name: .long,
            help:
                "The number of the last checkpoint the log (or syslog collector) shows: fewer in the file means a truncated tail."
        )
        var expectCheckpoint: Int64?
        @Option(
            name: .long,
            help: "Check an export made with `export --manifest` (offline, no database) instead of the trail; needs --pubkey.")
        var export: String?

        func run() throws {
            let key: [UInt8]?
            do {
                key = try pubkey.map { try AuditSigningKey.loadPublicKey(path: $0) }
            } catch let e as AuditError {
                throw ValidationError(e.message)
            }
            if let export {
                guard let key else { throw ValidationError("--export needs --pubkey") }
                let report: AuditManifestVerifier.Report
                do {
                    report = try AuditManifestVerifier.verify(path: export, publicKey: key)
                } catch let e as AuditError {
                    AuditCommand.standardError("error: \(e.message)")
                    throw ExitCode(2)
                }
                print(report.description)
                if !report.isIntact { throw ExitCode(1) }
                return
            }
            let path = try location.path()
            if expectCheckpoint != nil && key == nil {
                throw ValidationError("--expect-checkpoint needs --pubkey")
            }
            let walMissing = AuditStore.walIsMissing(path: path)
            let report = try AuditCommand.open(path) {
                try $0.verify(publicKey: key, expectCheckpoint: expectCheckpoint, walMissing: walMissing)
            }
            for warning in report.chain.warnings { AuditCommand.standardError("warning: \(warning)") }
            print(report.description)
            if !report.isIntact { throw ExitCode(1) }
        }
    }

    struct PublicKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pubkey",
            abstract:
                "Print the public half of the key that signs the trail's checkpoints (give it to verify --pubkey).")
        @OptionGroup var location: Location
        @Option(name: .long, help: "The private key file (default: audit-signing.key beside the database).")
        var key: String?

        func run() throws {
            let db = try location.path()
            let path =
                key
                ?? ((db as NSString).deletingLastPathComponent as NSString).appendingPathComponent("audit-signing.key")
            do {
                print(try AuditSigningKey.load(path: path).publicKeyLine)
            } catch let e as AuditError {
                AuditCommand.standardError("ctd audit pubkey: \(e.message)")
                throw ExitCode(2)
            }
        }
    }

    /// Which database: `--db`, else the trail of the audit plugin the config file enables or configures (`--config`, or
    /// /etc/ctd/ctd.toml when it exists; the plugin is loaded and configured as `serve` would, and asked), else the
    /// default /var/lib/ctd/audit.db.
    struct Location: ParsableArguments {
        @Option(name: .long, help: "The audit database (default: the trail of the config's audit plugin).")
        var db: String?
        @Option(name: .long, help: "Config file to take the database from (default /etc/ctd/ctd.toml if it exists).")
        var config: String?

        func path() throws -> String {
            if let db { return db }
            guard let file = DaemonConfig.path(explicit: config) else { return AuditStore.defaultPath }
            var c: DaemonConfig
            do {
                c = try DaemonConfig.load(path: file)
            } catch let e as DaemonConfig.Error {
                throw ValidationError(e.message)
            }
            if c.pluginDirectories.isEmpty { c.pluginDirectories = Daemon.defaultPluginDirectories() }
            var quiet = Logger(label: "ctd")
            quiet.logLevel = .error
            // The enabled plugins and those the file configures (`serve --plugin X` may enable one the file only
            // configures); the authenticator is not needed to find the trail.
            var selection = c.pluginSelection
            selection.authenticator = ""
            selection.plugins += c.pluginSections.keys.sorted().filter { !c.plugins.contains($0) }
            return PluginRegistry.auditTrailLocation(selection, logger: quiet) ?? AuditStore.defaultPath
        }
    }

    struct Filters: ParsableArguments {
        @OptionGroup var location: Location
        @Option(
            name: .long,
            help: "Only actions at or after this time: epoch seconds or ISO 8601 (UTC unless a zone is given).")
        var since: String?
        @Option(name: .long, help: "Only actions before this time (same forms as --since).") var until: String?
        @Option(name: .long, help: "Only this user's actions.") var user: String?
        @Option(name: .long, help: "Only this kind: login, kill, change, denied or audit_read.") var action: String?

        /// A bad filter is reported before `run`, with the command's usage.
        func validate() throws {
            _ = try filter()
        }

        func filter() throws -> AuditFilter {
            do {
                return try AuditFilter.parse(since: since, until: until, user: user, action: action)
            } catch let error as AuditError {
                throw ValidationError(error.message)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show audited actions with their outcome as a table (the most recent ones, oldest first).")
        @OptionGroup var filters: Filters
        @Option(name: .long, help: "Show at most the N most recent matching actions (0 for all).")
        var limit: Int = 100

        func validate() throws {
            guard limit >= 0 else { throw ValidationError("--limit must be 0 or more") }
        }

        func run() throws {
            let filter = try filters.filter()
            let records = try AuditCommand.open(filters.location.path()) {
                try $0.query(filter, limit: limit == 0 ? nil : limit)
            }
            print(AuditTable.render(records), terminator: "")
            if limit > 0 && records.count == limit {
                AuditCommand.standardError("(the \(limit) most recent matching actions; --limit N or 0 for more)")
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write audited actions with their outcome to standard output as CSV (RFC 4180) or JSON.")
        @OptionGroup var filters: Filters
        @Option(name: .long, help: "csv or json.") var format: String
        @Option(name: .long, help: "Only the N most recent matching actions (default: all).") var limit: Int?
        @Flag(
            name: .long,
            help:
                "Export the chain's rows up to the last signed checkpoint with a manifest that `verify --export FILE --pubkey K` checks offline (needs --output; no filters)."
        )
        var manifest = false
        @Option(name: .long, help: "Write to this new file instead of standard output (CSV: its manifest goes to FILE.manifest.json).")
        var output: String?

        func validate() throws {
            guard AuditExportFormat(rawValue: format.lowercased()) != nil else {
                throw ValidationError("--format must be csv or json")
            }
            if let limit, limit < 1 { throw ValidationError("--limit must be 1 or more") }
            if manifest {
                guard output != nil else { throw ValidationError("--manifest needs --output FILE") }
                let f = filters
                if f.since != nil || f.until != nil || f.user != nil || f.action != nil || limit != nil {
                    throw ValidationError(
                        "--manifest exports one unbroken range of the chain, so it takes no --since, --until, --user, --action or --limit")
                }
            }
        }

        func run() throws {
            let filter = try filters.filter()
            let format = AuditExportFormat(rawValue: self.format.lowercased())!
            if manifest, let output {
                let report = try AuditCommand.open(filters.location.path()) { store in
                    do {
                        return try store.exportWithManifest(format: format, to: output)
                    } catch let error as AuditError {
                        AuditCommand.standardError("error: \(error.message)")
                        throw ExitCode(2)
                    }
                }
                print(
                    "exported rows \(report.firstSeq) to \(report.lastSeq) (\(report.rows) rows) to \(output)"
                        + (report.manifestPath.map { " with its manifest \($0)" } ?? " with its manifest inside")
                        + ", anchored by signed checkpoint \(report.checkpoint.number)")
                if report.unanchoredRows > 0 {
                    AuditCommand.standardError(
                        "note: the \(report.unanchoredRows) rows after seq \(report.lastSeq) are not yet anchored by a checkpoint and were not exported")
                }
                return
            }
            let out: FileHandle
            if let output {
                guard !FileManager.default.fileExists(atPath: output),
                    FileManager.default.createFile(atPath: output, contents: nil, attributes: [.posixPermissions: 0o600]),
                    let h = FileHandle(forWritingAtPath: output)
                else { throw ValidationError("cannot create \(output) (an export never overwrites a file)") }
                out = h
            } else {
                out = FileHandle.standardOutput
            }
            var buffer = [UInt8]()
            buffer.reserveCapacity(1 << 16)
            try AuditCommand.open(filters.location.path()) { store in
                try store.export(format: format, filter: filter, limit: limit) { chunk in
                    buffer.append(contentsOf: chunk.utf8)
                    if buffer.count >= 1 << 16 {
                        out.write(Data(buffer))
                        buffer.removeAll(keepingCapacity: true)
                    }
                }
            }
            out.write(Data(buffer))
        }
    }

    /// Opens the database read-only and runs `body`; a database that cannot be read exits with status 2.
    static func open<T>(_ path: String, _ body: (AuditStore) throws -> T) throws -> T {
        do {
            let store = try AuditStore(readingFrom: path)
            defer { store.close() }
            return try body(store)
        } catch let error as AuditError {
            standardError("error: \(error.message)")
            throw ExitCode(2)
        }
    }

    static func standardError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

/// The table of `ctd audit list`.
enum AuditTable {
    static func render(_ records: [AuditRecord]) -> String {
        let header = ["SEQ", "TIME (UTC)", "USER", "CLIENT", "ACTION", "CONNECTION", "CHANGE", "OUTCOME"]
        let rows = records.map { r -> [String] in
            [
                String(r.seq), time(r.timeISO), r.user, r.client,
                r.action == .denied ? "denied \(r.procedure)" : r.action.rawValue,
                connection(r), r.field.map { "\($0)=\(r.newValue ?? "")" } ?? "",
                outcome(r),
            ].map(printable)
        }
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { i, cell in
                i == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count)
            }
            return padded.joined(separator: "  ") + "\n"
        }
        return line(header) + rows.map(line).joined()
    }

    /// `2025-01-31 12:00:00` from `2025-01-31T12:00:00.123456Z`.
    static func time(_ iso: String) -> String {
        String(iso.prefix(19)).replacingOccurrences(of: "T", with: " ")
    }

    static func connection(_ r: AuditRecord) -> String {
        guard let id = r.connID else { return "" }
        guard let src = r.origSource, let dst = r.origDestination else { return "id \(id)" }
        let proto = r.l4proto.map(protocolName) ?? "?"
        let ports = (r.origSourcePort ?? 0) != 0 || (r.origDestinationPort ?? 0) != 0
        let from = ports ? endpoint(src, r.origSourcePort ?? 0) : src
        let to = ports ? endpoint(dst, r.origDestinationPort ?? 0) : dst
        return "id \(id) \(proto) \(from) > \(to) mark \(r.mark ?? 0)"
    }

    static func endpoint(_ address: String, _ port: Int64) -> String {
        address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    static func protocolName(_ number: Int64) -> String {
        switch number {
        case 1: return "icmp"
        case 6: return "tcp"
        case 17: return "udp"
        case 33: return "dccp"
        case 47: return "gre"
        case 58: return "icmpv6"
        case 132: return "sctp"
        case 136: return "udplite"
        default: return String(number)
        }
    }

    static func outcome(_ r: AuditRecord) -> String {
        switch r.outcome {
        case .succeeded: return "succeeded"
        case .failed:
            let reason = r.reason ?? ""
            return reason.isEmpty
                ? "failed" : "failed: \(reason.count > 80 ? reason.prefix(79) + "…" : Substring(reason))"
        case .pending: return "pending (no outcome recorded)"
        case .interrupted:
            let reason = r.reason ?? ""
            return reason.isEmpty
                ? "interrupted" : "interrupted: \(reason.count > 100 ? reason.prefix(99) + "…" : Substring(reason))"
        }
    }

    /// Control characters (a crafted user name with escape sequences) never reach the terminal.
    static func printable(_ s: String) -> String {
        String(
            String.UnicodeScalarView(
                s.unicodeScalars.map { $0.value < 0x20 || ($0.value >= 0x7F && $0.value < 0xA0) ? "?" : $0 }))
    }
}
