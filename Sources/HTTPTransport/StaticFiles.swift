import Foundation

/// The web console's files (``HTTPServer/Options/webRoot``), read once at start into memory: only the regular files
/// found under the root then are served, so no request path can reach outside it (a `..`, a symbolic link made
/// later, a NUL byte all end in 404). Each answer carries a strong ETag and the security headers.
public struct StaticFiles: Sendable {
    public struct File: Sendable {
        public let body: [UInt8]
        public let contentType: String
        public let etag: String
    }

    public let files: [String: File]

    /// The headers every page gets: a CSP without inline script or style, no framing, no sniffing, no referrer.
    public static let securityHeaders: [(String, String)] = [
        (
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
                + "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]

    static func contentType(_ name: String) -> String? {
        switch (name as NSString).pathExtension.lowercased() {
        case "html": return "text/html; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "json": return "application/json; charset=utf-8"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "ico": return "image/x-icon"
        case "txt": return "text/plain; charset=utf-8"
        default: return nil
        }
    }

    /// Reads the files under `root` (at most `limit` bytes in all); `banner` is served as `/config.json`, the
    /// non-secret settings the login page reads before anyone logs in.
    public init(root: String, banner: String, limit: Int = 16 << 20) throws {
        var out: [String: File] = [:]
        let base = URL(fileURLWithPath: root).standardizedFileURL.resolvingSymlinksInPath()
        let fm = FileManager.default
        var total = 0
        guard let walker = fm.enumerator(at: base, includingPropertiesForKeys: [.isRegularFileKey]) else {
            throw CocoaError(.fileReadNoSuchFile)
        }
        for case let url as URL in walker {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true,
                let type = Self.contentType(url.lastPathComponent)
            else { continue }
            let full = url.standardizedFileURL.resolvingSymlinksInPath().path
            guard full.hasPrefix(base.path + "/") else { continue }
            let rel = String(full.dropFirst(base.path.count))
            let data = try Data(contentsOf: url)
            total += data.count
            guard total <= limit else { break }
            out[rel] = File(body: Array(data), contentType: type, etag: Self.etag(Array(data)))
        }
        guard let index = out["/index.html"] else { throw CocoaError(.fileReadNoSuchFile) }
        out["/"] = index
        let config = try JSONSerialization.data(withJSONObject: ["banner": banner], options: [.sortedKeys])
        out["/config.json"] = File(
            body: Array(config), contentType: "application/json; charset=utf-8", etag: Self.etag(Array(config)))
        files = out
    }

    /// FNV-1a 64 of the bytes and their length, quoted.
    static func etag(_ bytes: [UInt8]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return "\"\(String(h, radix: 16))-\(String(bytes.count, radix: 16))\""
    }

    public func lookup(_ path: String) -> File? {
        guard !path.contains(".."), !path.contains("\0"), !path.contains("//") else { return nil }
        return files[path]
    }

    /// Where the console's files are when `[web] root` is empty: `<exe dir>/../share/ctd/www`, then a source tree's
    /// `www/` above the executable (a dev build in `.build/<triple>/debug`).
    public static func defaultRoot(executable: String) -> String? {
        let exe = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
        var candidates = [exe.appendingPathComponent("../share/ctd/www").standardizedFileURL.path]
        var dir = exe
        for _ in 0..<5 {
            dir = dir.deletingLastPathComponent()
            candidates.append(dir.appendingPathComponent("www").path)
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/index.html") }
    }
}
