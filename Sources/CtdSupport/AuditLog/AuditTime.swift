#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Times of the audit trail: epoch seconds (`time`) and their UTC ISO 8601 text (`time_iso`).
public enum AuditTime {
    /// The wall clock, epoch seconds with microseconds.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec / 1000) / 1_000_000
    }

    /// `2025-06-01T12:00:00.123456Z` (UTC, microseconds).
    public static func iso(_ time: Double) -> String {
        guard time.isFinite, abs(time) < 1e15 else { return "invalid-time" }
        var seconds = time_t(time.rounded(.down))
        var micros = Int(((time - Double(seconds)) * 1_000_000).rounded())
        if micros >= 1_000_000 {
            seconds += 1
            micros -= 1_000_000
        }
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ n: Int, _ width: Int) -> String {
            let s = String(n)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return "\(pad(Int(parts.tm_year) + 1900, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2))"
            + "T\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2))"
            + ".\(pad(micros, 6))Z"
    }

    /// Parses a time given by a person: epoch seconds (`1735689600`, `1735689600.25`) or ISO 8601
    /// (`2025-01-01`, `2025-01-01T10:00`, `2025-01-01 10:00:05.5`, with `Z`, `+02:00`, `-0500`, or no zone = UTC).
    /// - Returns: epoch seconds, or `nil` when the text is neither.
    public static func parse(_ text: String) -> Double? {
        let s = Array(text.trimmingSpaces.utf8)
        guard !s.isEmpty else { return nil }
        if s.allSatisfy({ isDigit($0) || $0 == UInt8(ascii: ".") }) {
            return s.filter { $0 == UInt8(ascii: ".") }.count <= 1 ? Double(String(decoding: s, as: UTF8.self)) : nil
        }
        var i = 0
        func number(_ digits: Int) -> Int? {
            guard i + digits <= s.count else { return nil }
            var n = 0
            for k in i..<(i + digits) {
                guard isDigit(s[k]) else { return nil }
                n = n * 10 + Int(s[k] - 48)
            }
            i += digits
            return n
        }
        func expect(_ c: Character) -> Bool {
            guard i < s.count, s[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
            (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        var hour = 0
        var minute = 0
        var second = 0
        var fraction = 0.0
        if i < s.count && (s[i] == UInt8(ascii: "T") || s[i] == UInt8(ascii: "t") || s[i] == UInt8(ascii: " ")) {
            i += 1
            guard let h = number(2), expect(":"), let m = number(2), h < 24, m < 60 else { return nil }
            hour = h
            minute = m
            if expect(":") {
                guard let sec = number(2), sec < 61 else { return nil }
                second = sec
                if expect(".") || expect(",") {
                    let start = i
                    while i < s.count && isDigit(s[i]) { i += 1 }
                    guard i > start else { return nil }
                    fraction = Double("0." + String(decoding: s[start..<i], as: UTF8.self)) ?? 0
                }
            }
        }
        var offset = 0
        if i < s.count {
            if s[i] == UInt8(ascii: "Z") || s[i] == UInt8(ascii: "z") {
                i += 1
            } else if s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
                let sign = s[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard let oh = number(2), oh < 24 else { return nil }
                _ = expect(":")
                guard let om = number(2), om < 60 else { return nil }
                offset = sign * (oh * 3600 + om * 60)
            } else {
                return nil
            }
        }
        guard i == s.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let epoch = timegm(&parts)
        // timegm normalizes 2025-02-31 to March 3rd: refuse dates that do not exist.
        guard parts.tm_mday == Int32(day), parts.tm_mon == Int32(month - 1) else { return nil }
        return Double(epoch) - Double(offset) + fraction
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
