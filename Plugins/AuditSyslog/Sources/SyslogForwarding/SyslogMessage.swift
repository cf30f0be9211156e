import Foundation

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID name="value" ...] MSG`.
///
/// The header fields are cut to RFC 5424's lengths and limited to printable US-ASCII (anything else becomes `?`;
/// an empty field is the NILVALUE `-`). Structured-data values are UTF-8 with `"`, `\` and `]` escaped by a
/// backslash (§6.3.3); control characters (which some collectors split lines on) are replaced by U+FFFD.
public struct SyslogMessage: Sendable, Equatable {
    /// Syslog facilities by name (RFC 5424 table 1).
    public static let facilities: [String: Int] = [
        "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
        "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
        "local4": 20, "local5": 21, "local6": 22, "local7": 23,
    ]

    /// RFC 5424 severities.
    public enum Severity: Int, Sendable {
        case emergency = 0, alert, critical, error, warning, notice, informational, debug
    }

    public var facility: Int
    public var severity: Severity
    /// Epoch seconds; written in UTC with microseconds.
    public var time: Double
    public var hostname: String
    public var appName: String
    public var procID: String
    public var msgID: String
    /// The SD-ID of the one structured-data element, e.g. `ctd@32473`.
    public var sdID: String
    /// The element's parameters in order; names must be valid SD-NAMEs (checked by ``isValidSDName(_:)``).
    public var parameters: [(name: String, value: String)]
    /// The free-text part (MSG-ANY, no BOM).
    public var text: String

    public init(
        facility: Int, severity: Severity, time: Double, hostname: String, appName: String, procID: String,
        msgID: String, sdID: String, parameters: [(name: String, value: String)], text: String
    ) {
        self.facility = facility
        self.severity = severity
        self.time = time
        self.hostname = hostname
        self.appName = appName
        self.procID = procID
        self.msgID = msgID
        self.sdID = sdID
        self.parameters = parameters
        self.text = text
    }

    public static func == (a: SyslogMessage, b: SyslogMessage) -> Bool {
        a.encoded() == b.encoded()
    }

    /// The message's bytes (no framing, no trailing newline).
    public func encoded() -> [UInt8] {
        var out = "<\(facility * 8 + severity.rawValue)>1 "
        out += Self.timestamp(time) + " "
        out += Self.headerField(hostname, max: 255) + " "
        out += Self.headerField(appName, max: 48) + " "
        out += Self.headerField(procID, max: 128) + " "
        out += Self.headerField(msgID, max: 32) + " "
        out += "[" + sdID
        for p in parameters {
            out += " " + p.name + "=\"" + Self.escapeParamValue(p.value) + "\""
        }
        out += "]"
        if !text.isEmpty { out += " " + Self.withoutControls(text) }
        return Array(out.utf8)
    }

    /// RFC 5425 octet-counting framing: `MSG-LEN SP SYSLOG-MSG`.
    public func framed() -> [UInt8] {
        let body = encoded()
        return Array("\(body.count) ".utf8) + body
    }

    /// `2026-12-02T01:05:00.123456Z`.
    public static func timestamp(_ epoch: Double) -> String {
        var seconds = Int64(epoch.rounded(.down))
        var micros = Int64(((epoch - Double(seconds)) * 1_000_000).rounded())
        if micros >= 1_000_000 {
            seconds += 1
            micros -= 1_000_000
        }
        var t = time_t(seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1,
            Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(micros))
    }

    /// PRINTUSASCII (33-126) only, at most `max` characters; `-` when empty.
    static func headerField(_ s: String, max: Int) -> String {
        var out = ""
        for b in s.utf8.prefix(max) {
            out.unicodeScalars.append(Unicode.Scalar(b >= 33 && b <= 126 ? b : UInt8(ascii: "?")))
        }
        return out.isEmpty ? "-" : out
    }

    /// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped with a backslash; control characters become U+FFFD.
    public static func escapeParamValue(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"", "\\", "]":
                out.unicodeScalars.append("\\")
                out.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                out.unicodeScalars.append("\u{FFFD}")
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    static func withoutControls(_ s: String) -> String {
        String(
            String.UnicodeScalarView(
                s.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "\u{FFFD}" : $0 }))
    }

    /// SD-NAME: 1 to 32 PRINTUSASCII characters except `=`, space, `]` and `"`.
    public static func isValidSDName(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard !bytes.isEmpty && bytes.count <= 32 else { return false }
        return bytes.allSatisfy {
            $0 >= 33 && $0 <= 126 && $0 != UInt8(ascii: "=") && $0 != UInt8(ascii: "]") && $0 != UInt8(ascii: "\"")
        }
    }

    /// An SD-ID of the form `name@enterprise` (a private enterprise number in decimal), as RFC 5424 §7.2.2 asks
    /// of ids not registered with IANA.
    public static func isValidEnterpriseSDID(_ s: String) -> Bool {
        guard isValidSDName(s) else { return false }
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return false }
        return parts[1].allSatisfy { $0.isASCII && $0.isNumber }
            || parts[1].split(separator: ".").allSatisfy {
                !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber }
            }
    }
}
