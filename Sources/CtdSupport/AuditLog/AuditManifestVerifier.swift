import Foundation

/// Checks an export written by ``AuditStore/exportWithManifest(format:to:)`` offline, with the public key alone:
/// the manifest's checkpoint (and prune checkpoint) signatures, the first row's link to the genesis or to the prune
/// checkpoint, every row's hash recomputed from its exported values, every link, the numbering, and the last row
/// against the signed head.
public enum AuditManifestVerifier {
    /// The outcome: `ok: ...` or `FAILED: ...`, one sentence.
    public struct Report: Sendable, CustomStringConvertible {
        public var isIntact: Bool
        public var description: String
    }

    /// - Parameters:
    ///   - path: the export (a `.json` object with its manifest inside, or CSV with `path.manifest.json` beside it).
    ///   - publicKey: the trail's public key.
    /// - Throws: ``AuditError`` when the files cannot be read or are not a ctd export at all.
    public static func verify(path: String, publicKey: [UInt8]) throws -> Report {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AuditError.invalidArgument("cannot read the export \(path)")
        }
        let isJSON = data.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) == UInt8(ascii: "{")
        let manifest: [String: Any]
        let rows: [[(name: String, value: SQLValue)]]
        do {
            if isJSON {
                guard let top = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                    let m = top["manifest"] as? [String: Any], let list = top["rows"] as? [Any]
                else {
                    return failed("\(path) is not a ctd audit export with a manifest (no \"manifest\" and \"rows\")")
                }
                manifest = m
                rows = try list.enumerated().map { try jsonRow($1, index: $0) }
            } else {
                let sidecar = AuditManifestExport.sidecar(path)
                guard let m = FileManager.default.contents(atPath: sidecar),
                    let object = try JSONSerialization.jsonObject(with: m) as? [String: Any]
                else {
                    return failed("the manifest \(sidecar) of the CSV export is missing or is not JSON")
                }
                manifest = object
                rows = try csvRows(data)
            }
        } catch let e as AuditError {
            return failed(e.message)
        } catch {
            return failed("\(path) cannot be parsed: \(error)")
        }
        guard manifest["format"] as? String == AuditManifestExport.formatName else {
            return failed("the manifest's format is not \(AuditManifestExport.formatName)")
        }
        func int(_ k: String) -> Int64? { (manifest[k] as? NSNumber).map { $0.int64Value } }
        guard let anchor = AuditManifestExport.checkpoint(manifest["checkpoint"]), let count = int("rows"),
            let firstSeq = int("first_seq"), let lastSeq = int("last_seq"),
            let firstPrev = manifest["first_prev_hash"] as? String, let headHash = manifest["head_hash"] as? String
        else {
            return failed("the manifest lacks its checkpoint, rows, first_seq, last_seq, first_prev_hash or head_hash")
        }
        // 1. The signed head.
        if let bad = signatureProblem(anchor, publicKey: publicKey) { return failed(bad) }
        if anchor.headSeq != lastSeq || anchor.headHash != headHash {
            return failed(
                "the manifest was edited: it names seq \(lastSeq) hash \(headHash), but its signed checkpoint "
                    + "\(anchor.number) names seq \(anchor.headSeq) hash \(anchor.headHash)")
        }
        // 2. The start: the genesis, or a signed prune checkpoint the first row links to.
        var startNote = "from the first row of the trail"
        if firstSeq == 1 {
            if firstPrev != AuditChain.genesis {
                return failed("the export starts at seq 1, but its first link is not the genesis value")
            }
        } else {
            guard let prune = AuditManifestExport.checkpoint(manifest["prune_checkpoint"]), prune.kind == "prune" else {
                return failed(
                    "the export starts at seq \(firstSeq) with no signed prune checkpoint for the rows before it: rows "
                        + "were removed from its start, or the manifest was edited")
            }
            if let bad = signatureProblem(prune, publicKey: publicKey) { return failed(bad) }
            guard prune.headSeq == firstSeq - 1, prune.headHash == firstPrev else {
                return failed(
                    "the export starts at seq \(firstSeq), but the prune checkpoint \(prune.number) signed the pruned "
                        + "head seq \(prune.headSeq): rows \(prune.headSeq + 1) to \(firstSeq - 1) were removed from its start")
            }
            startNote = "after the pruned prefix (rows 1 to \(prune.headSeq), prune checkpoint \(prune.number))"
        }
        // 3. Every row, as the chain was written.
        var expected = firstSeq
        var previous = firstPrev
        for row in rows {
            let values = Dictionary(row.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let seq = values["seq"]?.integer, case .text(let hash)? = values["hash"],
                case .text(let prev)? = values["prev_hash"]
            else { return failed("a row after seq \(expected - 1) has no seq, hash or prev_hash") }
            if seq != expected {
                return seq > expected
                    ? failed("the export jumps from seq \(expected - 1) to \(seq): rows \(expected) to \(seq - 1) were removed")
                    : failed("seq \(seq) comes after seq \(expected - 1): rows were duplicated or reordered")
            }
            if try AuditChain.hash(row.filter { $0.name != "hash" }) != hash {
                return failed("row seq \(seq) was changed after it was exported (its hash does not match its contents)")
            }
            if prev != previous {
                return failed(
                    seq == firstSeq
                        ? "the first row's link differs from the manifest's first_prev_hash: the manifest or the row was edited"
                        : "row seq \(seq) does not link to row \(seq - 1): one of them was rewritten")
            }
            previous = hash
            expected = seq + 1
        }
        let seen = Int64(rows.count)
        if expected - 1 != lastSeq || previous != headHash {
            return failed(
                "the export ends at seq \(expected - 1), but its signed checkpoint \(anchor.number) names seq \(lastSeq): "
                    + "rows \(expected) to \(lastSeq) were removed from its end")
        }
        if seen != count {
            return failed("the manifest says \(count) rows, the export has \(seen): the manifest was edited")
        }
        return Report(
            isIntact: true,
            description:
                "ok: export of \(seen) rows, seq \(firstSeq) to \(lastSeq) (\(startNote)), every hash and link intact, "
                + "anchored by signed checkpoint \(anchor.number) (\(anchor.kind), head seq \(anchor.headSeq), hash \(anchor.headHash))")
    }

    static func failed(_ why: String) -> Report { Report(isIntact: false, description: "FAILED: \(why)") }

    static func signatureProblem(_ c: AuditCheckpoint, publicKey: [UInt8]) -> String? {
        if c.publicKey != AuditSigningKey.hex(publicKey) {
            return "checkpoint \(c.number) in the manifest was not signed by the given public key (signed by key "
                + "\(c.publicKey.prefix(16))…)"
        }
        guard let sig = AuditSigningKey.unhex(c.signature),
            AuditSigningKey.verify(publicKey: publicKey, message: c.message, signature: sig)
        else {
            return "checkpoint \(c.number)'s signature in the manifest is not valid for the given public key: the manifest was edited"
        }
        return nil
    }

    /// A value of column `name` read back with the storage class the schema gives it.
    static func typed(_ name: String, text: String) throws -> SQLValue {
        if AuditManifestExport.integerColumns.contains(name) {
            guard let n = Int64(text) else { throw AuditError.invalidArgument("column \(name) holds '\(text.prefix(20))', not an integer") }
            return .integer(n)
        }
        if AuditManifestExport.realColumns.contains(name) {
            guard let d = Double(text) else { throw AuditError.invalidArgument("column \(name) holds '\(text.prefix(20))', not a number") }
            return .real(d)
        }
        return .text(text)
    }

    static func jsonRow(_ any: Any, index: Int) throws -> [(name: String, value: SQLValue)] {
        guard let o = any as? [String: Any] else { throw AuditError.invalidArgument("row \(index + 1) is not an object") }
        return try o.map { name, v -> (name: String, value: SQLValue) in
            if v is NSNull { return (name, .null) }
            if let s = v as? String {
                if AuditManifestExport.integerColumns.contains(name) || AuditManifestExport.realColumns.contains(name) {
                    throw AuditError.invalidArgument("column \(name) of row \(index + 1) is text, not a number")
                }
                return (name, .text(s))
            }
            guard let n = v as? NSNumber else { throw AuditError.invalidArgument("column \(name) of row \(index + 1) is not a value") }
            if AuditManifestExport.realColumns.contains(name) { return (name, .real(n.doubleValue)) }
            guard AuditManifestExport.integerColumns.contains(name) else {
                throw AuditError.invalidArgument("column \(name) of row \(index + 1) is a number, not text")
            }
            return (name, .integer(n.int64Value))
        }
    }

    /// RFC 4180 with the export's convention: a quoted field is text (maybe empty), an empty unquoted field NULL.
    static func csvRows(_ data: Data) throws -> [[(name: String, value: SQLValue)]] {
        let bytes = [UInt8](data)
        var records: [[(text: String, quoted: Bool)]] = []
        var record: [(text: String, quoted: Bool)] = []
        var field: [UInt8] = []
        var quoted = false
        var i = 0
        func endField() {
            record.append((String(decoding: field, as: UTF8.self), quoted))
            field.removeAll(keepingCapacity: true)
            quoted = false
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") && field.isEmpty && !quoted {
                quoted = true
                i += 1
                while true {
                    guard i < bytes.count else { throw AuditError.invalidArgument("the CSV export ends inside a quoted field") }
                    if bytes[i] == UInt8(ascii: "\"") {
                        if i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\"") {
                            field.append(UInt8(ascii: "\""))
                            i += 2
                            continue
                        }
                        i += 1
                        break
                    }
                    field.append(bytes[i])
                    i += 1
                }
                continue
            }
            if b == UInt8(ascii: ",") {
                endField()
            } else if b == 13 && i + 1 < bytes.count && bytes[i + 1] == 10 {
                endField()
                records.append(record)
                record = []
                i += 1
            } else {
                field.append(b)
            }
            i += 1
        }
        if !field.isEmpty || !record.isEmpty {
            endField()
            records.append(record)
        }
        guard let header = records.first?.map(\.text) else { throw AuditError.invalidArgument("the CSV export is empty") }
        return try records.dropFirst().enumerated().map { k, r in
            guard r.count == header.count else {
                throw AuditError.invalidArgument("line \(k + 2) of the CSV export has \(r.count) fields, not \(header.count)")
            }
            return try zip(header, r).map { name, f in
                (name, f.quoted ? .text(f.text) : f.text.isEmpty ? .null : try typed(name, text: f.text))
            }
        }
    }
}
