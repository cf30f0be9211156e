import Foundation

/// Exports for auditors that can be checked offline (docs/audit.md, "Exports with a manifest"): the chain's rows
/// themselves (every column of `audit`, outcome rows included, in `seq` order) up to the last signed checkpoint,
/// and a manifest naming the row range, the first row's link, the head hash and that checkpoint with its signature
/// (and, for a pruned trail, the prune checkpoint the first row links to). ``AuditManifestVerifier`` recomputes every
/// row's hash and link from the file and checks the signatures with the public key alone.
///
/// JSON: one object `{"manifest": {...}, "rows": [{column: value, ...}, ...]}`. CSV (RFC 4180, CRLF): a header of
/// the column names, then one line per row, text always quoted, NULL an empty unquoted field; the manifest is the
/// JSON file `FILE.manifest.json` beside it.
public enum AuditManifestExport {
    /// The manifest's `format`.
    public static let formatName = "ctd-audit-export-1"

    /// The columns of `audit` whose values are integers; `time` is the one real; the others are text.
    static let integerColumns: Set<String> = [
        "seq", "ref_seq", "ref_last", "conn_id", "l4proto", "orig_sport", "orig_dport", "repl_sport", "repl_dport", "mark",
        "timeout", "zone",
    ]
    static let realColumns: Set<String> = ["time"]

    /// Where the manifest of a CSV export is kept.
    public static func sidecar(_ path: String) -> String { path + ".manifest.json" }

    static func checkpointObject(_ c: AuditCheckpoint) -> [String: Any] {
        [
            "number": c.number, "time_ms": c.timeMilliseconds, "kind": c.kind, "head_seq": c.headSeq,
            "head_hash": c.headHash, "public_key": c.publicKey, "signature": c.signature,
        ]
    }

    static func checkpoint(_ o: Any?) -> AuditCheckpoint? {
        guard let o = o as? [String: Any] else { return nil }
        func int(_ k: String) -> Int64? { (o[k] as? NSNumber).map { $0.int64Value } }
        guard let number = int("number"), let time = int("time_ms"), let kind = o["kind"] as? String,
            let seq = int("head_seq"), let hash = o["head_hash"] as? String, let key = o["public_key"] as? String,
            let signature = o["signature"] as? String
        else { return nil }
        return AuditCheckpoint(
            number: number, timeMilliseconds: time, kind: kind, headSeq: seq, headHash: hash, publicKey: key,
            signature: signature)
    }

    static func jsonValue(_ v: SQLValue) -> String {
        switch v {
        case .null: return "null"
        case .integer(let n): return String(n)
        case .real(let d): return d.isFinite ? String(d) : "null"
        case .text(let s): return AuditExport.jsonString(s)
        case .blob(let b): return AuditExport.jsonString(AuditSigningKey.hex(b))
        }
    }

    static func csvValue(_ v: SQLValue) -> String {
        switch v {
        case .null: return ""
        case .integer(let n): return String(n)
        case .real(let d): return String(d)
        case .text(let s): return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        case .blob(let b): return "\"" + AuditSigningKey.hex(b) + "\""
        }
    }
}

/// What ``AuditStore/exportWithManifest(format:to:)`` wrote.
public struct AuditManifestExportReport: Sendable {
    public var rows: Int64
    public var firstSeq: Int64
    public var lastSeq: Int64
    public var checkpoint: AuditCheckpoint
    /// Rows after the checkpoint's head, not exported (not yet anchored).
    public var unanchoredRows: Int64
    public var manifestPath: String?
}

extension AuditStore {
    /// Writes the chain's rows up to the last signed checkpoint's head and the manifest (see
    /// ``AuditManifestExport``), from one read transaction.
    /// - Parameters:
    ///   - format: JSON (manifest inside) or CSV (manifest in `path.manifest.json`).
    ///   - path: a new file (never overwritten).
    /// - Throws: ``AuditError`` when there is no checkpoint to anchor an export, the file exists or cannot be
    ///   written, or the database cannot be read.
    public func exportWithManifest(format: AuditExportFormat, to path: String) throws -> AuditManifestExportReport {
        let manifestPath = format == .csv ? AuditManifestExport.sidecar(path) : nil
        for p in [path] + (manifestPath.map { [$0] } ?? []) where FileManager.default.fileExists(atPath: p) {
            throw AuditError(.writeRefused, "cannot write the export \(p): it exists (an export never overwrites a file)")
        }
        do {
            return try writeManifestExport(format: format, to: path, manifestPath: manifestPath)
        } catch {
            // Half an export would only mislead: remove what was written.
            try? FileManager.default.removeItem(atPath: path)
            if let manifestPath { try? FileManager.default.removeItem(atPath: manifestPath) }
            throw error
        }
    }

    private func writeManifestExport(format: AuditExportFormat, to path: String, manifestPath: String?) throws
        -> AuditManifestExportReport
    {
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
            let out = FileHandle(forWritingAtPath: path)
        else { throw AuditError(.writeRefused, "cannot create the export \(path)") }
        defer { try? out.close() }
        var buffer: [UInt8] = []
        func emit(_ s: String) {
            buffer.append(contentsOf: s.utf8)
            if buffer.count >= 1 << 16 {
                out.write(Data(buffer))
                buffer.removeAll(keepingCapacity: true)
            }
        }
        let report: AuditManifestExportReport = try withConnection { db in
            try db.execute("BEGIN", doing: "start a read")
            defer { try? db.execute("COMMIT", doing: "end a read") }
            let all = try Self.hasTable(db, "checkpoint") ? try Self.checkpoints(db) : []
            let head = try Self.head(db)
            guard let anchor = all.last(where: { $0.headSeq <= (head?.seq ?? 0) && $0.headSeq > 0 }) else {
                throw AuditError.invalidArgument(
                    "the trail has no signed checkpoint of a row yet, so an export could not be checked; let ctd run (it "
                        + "signs one every checkpoint_rows rows or checkpoint_seconds) and export again")
            }
            let s = try db.prepare("SELECT * FROM audit WHERE seq <= ? ORDER BY seq", doing: "read the audit trail")
            defer { s.reset() }
            try s.bind([.integer(anchor.headSeq)], doing: "read the audit trail")
            let names = (0..<s.columnCount).map { s.columnName($0) }
            var first: (seq: Int64, prev: String)?
            var last: (seq: Int64, hash: String) = (0, AuditChain.genesis)
            var count: Int64 = 0
            let seqIndex = names.firstIndex(of: "seq") ?? 0
            let hashIndex = names.firstIndex(of: "hash") ?? 0
            let prevIndex = names.firstIndex(of: "prev_hash") ?? 0
            if format == .csv { emit(names.joined(separator: ",") + "\r\n") } else { emit("{\"rows\": [") }
            while try s.step(doing: "read the audit trail") {
                let values = (0..<Int32(names.count)).map { s.column($0) }
                let seq = values[seqIndex].integer ?? 0
                if first == nil { first = (seq, values[prevIndex].text ?? "") }
                last = (seq, values[hashIndex].text ?? "")
                switch format {
                case .csv:
                    emit(values.map(AuditManifestExport.csvValue).joined(separator: ",") + "\r\n")
                case .json:
                    let members = zip(names, values).map { AuditExport.jsonString($0.0) + ":" + AuditManifestExport.jsonValue($0.1) }
                    emit((count == 0 ? "\n" : ",\n") + "{" + members.joined(separator: ",") + "}")
                }
                count += 1
            }
            var manifest: [String: Any] = [
                "format": AuditManifestExport.formatName, "rows_format": format.rawValue, "columns": names,
                "rows": count, "first_seq": first?.seq ?? 0, "last_seq": last.seq,
                "first_prev_hash": first?.prev ?? AuditChain.genesis, "head_hash": last.hash,
                "checkpoint": AuditManifestExport.checkpointObject(anchor),
            ]
            if let f = first, f.seq > 1,
                let prune = all.last(where: { $0.kind == "prune" && $0.headSeq == f.seq - 1 })
            {
                manifest["prune_checkpoint"] = AuditManifestExport.checkpointObject(prune)
            }
            let text = String(
                decoding: try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys, .prettyPrinted]),
                as: UTF8.self)
            if let manifestPath {
                guard FileManager.default.createFile(
                    atPath: manifestPath, contents: Data((text + "\n").utf8), attributes: [.posixPermissions: 0o600])
                else { throw AuditError(.writeRefused, "cannot create the manifest \(manifestPath)") }
            } else {
                emit("\n],\n\"manifest\": " + text + "}\n")
            }
            return AuditManifestExportReport(
                rows: count, firstSeq: first?.seq ?? 0, lastSeq: last.seq, checkpoint: anchor,
                unanchoredRows: (head?.seq ?? 0) - anchor.headSeq, manifestPath: manifestPath)
        }
        out.write(Data(buffer))
        guard (try? out.synchronize()) != nil else { throw AuditError(.writeRefused, "cannot sync the export \(path)") }
        return report
    }
}
