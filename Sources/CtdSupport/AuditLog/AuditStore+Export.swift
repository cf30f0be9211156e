/// The formats of ``AuditStore/export(format:filter:limit:to:)``.
public enum AuditExportFormat: String, Sendable, CaseIterable {
    /// RFC 4180: a header line, CRLF line ends, fields quoted when they hold `,`, `"`, CR or LF (quotes doubled);
    /// an empty field is a missing value.
    case csv
    /// One JSON array of objects with the keys of ``AuditRecord/fieldNames`` in order; `null` for a missing value.
    case json
}

extension AuditStore {
    /// Writes the records matching `filter` (oldest first; the most recent `limit` if given), streaming: one
    /// call of `write` per record plus the header and the end.
    /// - Throws: ``AuditError`` when the database cannot be read, or what `write` throws.
    public func export(
        format: AuditExportFormat, filter: AuditFilter = AuditFilter(), limit: Int? = nil,
        to write: (String) throws -> Void
    ) throws {
        switch format {
        case .csv:
            try write(AuditExport.csvHeader)
            try forEach(filter, limit: limit) { try write(AuditExport.csvLine($0)) }
        case .json:
            var first = true
            try write("[")
            try forEach(filter, limit: limit) {
                try write((first ? "\n" : ",\n") + AuditExport.jsonObject($0))
                first = false
            }
            try write(first ? "]\n" : "\n]\n")
        }
    }

    /// The same, collected in one string.
    public func export(format: AuditExportFormat, filter: AuditFilter = AuditFilter(), limit: Int? = nil) throws
        -> String
    {
        var out = ""
        try export(format: format, filter: filter, limit: limit) { out += $0 }
        return out
    }
}

/// CSV and JSON encoding of records.
public enum AuditExport {
    /// The CSV header line, CRLF-terminated.
    public static let csvHeader = AuditRecord.fieldNames.joined(separator: ",") + "\r\n"

    /// One CSV line, CRLF-terminated.
    public static func csvLine(_ record: AuditRecord) -> String {
        record.fields.map { csvField($0.value?.description ?? "") }.joined(separator: ",") + "\r\n"
    }

    /// A field quoted as RFC 4180 requires.
    public static func csvField(_ s: String) -> String {
        let needsQuotes = s.utf8.contains {
            $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 13 || $0 == 10
        }
        guard needsQuotes else { return s }
        var out = "\""
        for scalar in s.unicodeScalars {
            // By scalar, not Character: a quote followed by a combining mark is one Character but still a quote.
            if scalar == "\"" { out += "\"\"" } else { out.unicodeScalars.append(scalar) }
        }
        return out + "\""
    }

    /// One JSON object on one line.
    public static func jsonObject(_ record: AuditRecord) -> String {
        "{" + record.fields.map { jsonString($0.name) + ":" + jsonValue($0.value) }.joined(separator: ",") + "}"
    }

    static func jsonValue(_ value: AuditValue?) -> String {
        switch value {
        case nil: return "null"
        case .integer(let n)?: return String(n)
        case .real(let d)? where d.isFinite: return String(d)
        case .real?: return "null"
        case .text(let s)?: return jsonString(s)
        }
    }

    /// A JSON string literal: `"` and `\` escaped, control characters as `\n`, `\t`… or `\u00XX`, and U+2028/U+2029
    /// escaped so that the output is also valid JavaScript.
    public static func jsonString(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{2028}": out += "\\u2028"
            case "\u{2029}": out += "\\u2029"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
