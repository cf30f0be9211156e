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
        var out: [UInt8] = []
        out.reserveCapacity(640)
        out.append(UInt8(ascii: "<"))
        Self.appendDecimal(facility * 8 + severity.rawValue, to: &out)
        out.append(contentsOf: ">1 ".utf8)
        Self.appendTimestamp(time, to: &out)
        out.append(UInt8(ascii: " "))
        Self.appendHeaderField(hostname, max: 255, to: &out)
        out.append(UInt8(ascii: " "))
        Self.appendHeaderField(appName, max: 48, to: &out)
        out.append(UInt8(ascii: " "))
        Self.appendHeaderField(procID, max: 128, to: &out)
        out.append(UInt8(ascii: " "))
        Self.appendHeaderField(msgID, max: 32, to: &out)
        out.append(contentsOf: " [".utf8)
        out += sdID.utf8
        for p in parameters {
            out.append(UInt8(ascii: " "))
            out += p.name.utf8
            out.append(UInt8(ascii: "="))
            out.append(UInt8(ascii: "\""))
            Self.appendEscaped(p.value, to: &out)
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "]"))
        if !text.isEmpty {
            out.append(UInt8(ascii: " "))
            Self.appendText(text, to: &out)
        }
        return out
    }

    /// RFC 5425 octet-counting framing: `MSG-LEN SP SYSLOG-MSG`.
    public func framed() -> [UInt8] {
        let body = encoded()
        return Array("\(body.count) ".utf8) + body
    }

    /// `2026-12-02T01:05:00.123456Z`.
    public static func timestamp(_ epoch: Double) -> String {
        var out: [UInt8] = []
        appendTimestamp(epoch, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    static func appendTimestamp(_ epoch: Double, to out: inout [UInt8]) {
        var seconds = Int64(epoch.rounded(.down))
        var micros = Int64(((epoch - Double(seconds)) * 1_000_000).rounded())
        if micros >= 1_000_000 {
            seconds += 1
            micros -= 1_000_000
        }
        var t = time_t(seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        appendPadded(Int(tm.tm_year) + 1900, width: 4, to: &out)
        out.append(UInt8(ascii: "-"))
        appendPadded(Int(tm.tm_mon) + 1, width: 2, to: &out)
        out.append(UInt8(ascii: "-"))
        appendPadded(Int(tm.tm_mday), width: 2, to: &out)
        out.append(UInt8(ascii: "T"))
        appendPadded(Int(tm.tm_hour), width: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        appendPadded(Int(tm.tm_min), width: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        appendPadded(Int(tm.tm_sec), width: 2, to: &out)
        out.append(UInt8(ascii: "."))
        appendPadded(Int(micros), width: 6, to: &out)
        out.append(UInt8(ascii: "Z"))
    }

    /// `n` (not negative) in decimal, left-padded with zeros to `width` digits; no allocation.
    static func appendPadded(_ n: Int, width: Int, to out: inout [UInt8]) {
        var divisor = 1
        var digits = 1
        while divisor <= n / 10 {
            divisor *= 10
            digits += 1
        }
        if digits < width {
            for _ in digits..<width { out.append(UInt8(ascii: "0")) }
        }
        var v = n
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(v / divisor))
            v %= divisor
            divisor /= 10
        }
    }

    static func appendDecimal(_ n: Int, to out: inout [UInt8]) { appendPadded(n, width: 1, to: &out) }

    static func appendHeaderField(_ s: String, max: Int, to out: inout [UInt8]) {
        var n = 0
        for b in s.utf8.prefix(max) {
            out.append(b >= 33 && b <= 126 ? b : UInt8(ascii: "?"))
            n += 1
        }
        if n == 0 { out.append(UInt8(ascii: "-")) }
    }

    static func appendEscaped(_ s: String, to out: inout [UInt8]) {
        let plain = !s.utf8.contains {
            $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "]") || $0 < 0x20 || $0 == 0x7F
        }
        if plain {
            out += s.utf8
        } else {
            out += escapeParamValue(s).utf8
        }
    }

    /// Free text (MSG): control characters, which some collectors split lines on, become U+FFFD.
    static func appendText(_ s: String, to out: inout [UInt8]) {
        if s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            out += withoutControls(s).utf8
        } else {
            out += s.utf8
        }
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
