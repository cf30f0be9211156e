import Foundation
import Logging

/// How `ctd serve` writes its log lines to standard error (`--log-format`, `[log] format`; docs/service.md).
enum LogFormat: String, CaseIterable, Sendable {
    /// `journal` when standard error is the journal (`$JOURNAL_STREAM` names its device and inode), else `text`.
    case auto
    /// swift-log's stream format: `TIMESTAMP LEVEL LABEL: METADATA [SOURCE] MESSAGE`.
    case text
    /// One JSON object per line: timestamp (RFC 3339, UTC, ms), level, label, source, message, metadata.
    case json
    /// A `<N>` syslog priority prefix (sd-daemon(3)), no timestamp (the journal adds its own).
    case journal

    /// `auto` decided by the environment; the others as they are.
    func resolved(environment: [String: String] = ProcessInfo.processInfo.environment, fd: Int32 = 2) -> LogFormat {
        guard self == .auto else { return self }
        return Self.isJournal(environment["JOURNAL_STREAM"], fd: fd) ? .journal : .text
    }

    /// Whether `journalStream` (`DEV:INODE`, in decimal, as systemd sets it) is the file `fd` refers to: a child
    /// whose standard error was redirected elsewhere inherits the variable, and must not prefix then.
    static func isJournal(_ journalStream: String?, fd: Int32) -> Bool {
        guard let value = journalStream else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// The syslog priority of a level (sd-daemon(3)'s `<N>`): debug 7, info 6, notice 5, warning 4, error 3,
    /// critical 2; trace is debug.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    /// Metadata keys whose values are never written, whatever a call site passes: a password, a session id or a
    /// token must not reach a log file or a shipper.
    static let secretKeys: Set<String> = [
        "password", "passwd", "secret", "token", "session", "session_id", "sid", "authorization", "cookie",
    ]

    /// `metadata` with the values of ``secretKeys`` replaced, in nested dictionaries too.
    static func redacted(_ metadata: Logger.Metadata) -> Logger.Metadata {
        var out = metadata
        for (key, value) in metadata {
            if secretKeys.contains(key.lowercased()) {
                out[key] = "<redacted>"
            } else if case .dictionary(let inner) = value {
                out[key] = .dictionary(redacted(inner))
            }
        }
        return out
    }
}

/// Writes whole lines to standard error with one write(2) each, under a lock, so that lines of two threads never
/// interleave (a shipper reading JSON lines must never see half an object).
final class LineWriter: @unchecked Sendable {
    static let standardError = LineWriter(fd: 2)
    private let fd: Int32
    private let lock = NSLock()

    init(fd: Int32) { self.fd = fd }

    func write(_ line: String) {
        var bytes = Array(line.utf8)
        if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
        lock.withLock {
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += n
            }
        }
    }
}

/// The log handler of `ctd serve`: the level is the process's ``LogLevelSwitch`` (a reload changes it) unless a
/// logger sets its own; lines are formatted as ``LogFormat`` says. Secret-named metadata is redacted in every
/// format.
struct FormattedLogHandler: LogHandler {
    let label: String
    let format: LogFormat
    let levelSwitch: LogLevelSwitch
    let writer: LineWriter
    var metadata: Logger.Metadata = [:]
    private var ownLevel: Logger.Level?

    /// - Parameter format: a resolved format (never `auto`).
    init(label: String, format: LogFormat, levelSwitch: LogLevelSwitch, writer: LineWriter = .standardError) {
        self.label = label
        self.format = format == .auto ? .text : format
        self.levelSwitch = levelSwitch
        self.writer = writer
    }

    var logLevel: Logger.Level {
        get { ownLevel ?? levelSwitch.level }
        set { ownLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        writer.write(Self.line(event: event, label: label, metadata: merged, format: format, date: Date()))
    }

    /// One formatted line, without its newline.
    static func line(event: LogEvent, label: String, metadata: Logger.Metadata, format: LogFormat, date: Date)
        -> String
    {
        let meta = LogFormat.redacted(metadata)
        let message = "\(event.message)"
        switch format {
        case .json:
            var object: [String: Any] = [
                "timestamp": rfc3339(date), "level": event.level.rawValue, "label": label, "source": event.source,
                "message": message,
            ]
            if !meta.isEmpty { object["metadata"] = meta.mapValues(json) }
            if let error = event.error { object["error"] = "\(error)" }
            guard
                let data = try? JSONSerialization.data(
                    withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            else { return #"{"level":"error","message":"a log line could not be encoded"}"# }
            return String(decoding: data, as: UTF8.self)
        case .journal:
            // One line per entry: a newline in a message would start a new journal entry at level info.
            let text = "\(label): \(prettify(meta))[\(event.source)] \(message)"
            return "<\(LogFormat.priority(event.level))>" + text.replacingOccurrences(of: "\n", with: " ")
        case .text, .auto:
            return "\(rfc3339Seconds(date)) \(event.level) \(label): \(prettify(meta))[\(event.source)] \(message)"
        }
    }

    private static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let s): return s
        case .stringConvertible(let c): return "\(c)"
        case .array(let a): return a.map(json)
        case .dictionary(let d): return d.mapValues(json)
        }
    }

    private static func prettify(_ meta: Logger.Metadata) -> String {
        guard !meta.isEmpty else { return "" }
        return meta.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + " "
    }

    private static func formatter(_ format: String) -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = format
        return f
    }

    private static let milliseconds = formatter("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
    private static let seconds = formatter("yyyy-MM-dd'T'HH:mm:ssZ")
    private static let formatterLock = NSLock()

    static func rfc3339(_ date: Date) -> String { formatterLock.withLock { milliseconds.string(from: date) } }
    static func rfc3339Seconds(_ date: Date) -> String { formatterLock.withLock { seconds.string(from: date) } }
}
