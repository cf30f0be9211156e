import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Counts open connections, in total and per client address, for the limits checked at accept.
final class ConnectionLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private let total: Int
    private let perAddress: Int
    private let logger: Logger
    private var open = 0
    private var byAddress: [String: Int] = [:]
    private var refusedCount = 0
    private var lastWarning: Date?

    init(total: Int, perAddress: Int, logger: Logger) {
        self.total = total
        self.perAddress = perAddress
        self.logger = logger
    }

    var refused: Int { lock.withLock { refusedCount } }
    var openCount: Int { lock.withLock { open } }

    /// Counts the connection in, or refuses it (and counts that) when a limit is reached.
    /// What the per-address limit counts: an IPv4 address, or an IPv6 address's /64 (a host owns its /64 and could
    /// otherwise open `perAddress` connections from each address in it).
    static func key(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress else { return "unknown" }
        guard case .v6(let v6) = address else { return ip }
        var raw = v6.address.sin6_addr
        let prefix = withUnsafeBytes(of: &raw) { Array($0.prefix(8)) }
        // An IPv4-mapped address (::ffff:a.b.c.d) is that IPv4 host.
        if prefix.allSatisfy({ $0 == 0 }) { return ip }
        return prefix.map { String(format: "%02x", $0) }.joined() + "::/64"
    }

    func admit(_ address: String) -> Bool {
        let (admitted, warn, why, count): (Bool, Bool, String, Int) = lock.withLock {
            let mine = byAddress[address, default: 0]
            var why = ""
            if open >= total {
                why = "the limit of \(total) open connections is reached"
            } else if mine >= perAddress {
                why = "the limit of \(perAddress) open connections from \(address) is reached"
            } else {
                open += 1
                byAddress[address] = mine + 1
                return (true, false, "", 0)
            }
            refusedCount += 1
            let now = Date()
            let warn = lastWarning.map { now.timeIntervalSince($0) >= 10 } ?? true
            if warn { lastWarning = now }
            return (false, warn, why, refusedCount)
        }
        if !admitted {
            // At most one warning each 10 s, so that a flood does not flood the log too.
            if warn {
                logger.warning("refusing new connections: \(why) (\(count) refused since start)")
            } else {
                logger.debug("refused a connection from \(address): \(why)")
            }
        }
        return admitted
    }

    func release(_ address: String) {
        lock.withLock {
            open -= 1
            let mine = byAddress[address, default: 1] - 1
            byAddress[address] = mine > 0 ? mine : nil
        }
    }
}

/// Which requests may be served at all, by their headers (browser origins and DNS rebinding).
struct RequestPolicy: Sendable {
    /// Host names, lower case, IPv6 addresses in brackets; with a port (`name:port`) or without (any port ctd has).
    let names: Set<String>
    let origins: Set<String>
    let scheme: String

    init(serverNames: [String], allowedOrigins: [String], tls: Bool) {
        names = Set(
            serverNames.map { name in
                let n = name.lowercased()
                return n.filter({ $0 == ":" }).count > 1 && !n.hasPrefix("[") ? "[\(n)]" : n
            })
        origins = Set(allowedOrigins.map { Self.trimmed($0.lowercased()) })
        scheme = tls ? "https" : "http"
    }

    private static func trimmed(_ s: String) -> String { s.hasSuffix("/") ? String(s.dropLast()) : s }

    /// `host[:port]` split; an IPv6 host keeps its brackets.
    static func split(_ authority: String) -> (host: String, port: Int?) {
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            let host = String(authority[...close])
            let rest = authority[authority.index(after: close)...]
            return (host, rest.hasPrefix(":") ? Int(rest.dropFirst()) ?? -1 : (rest.isEmpty ? nil : -1))
        }
        if let colon = authority.lastIndex(of: ":") {
            return (String(authority[..<colon]), Int(authority[authority.index(after: colon)...]) ?? -1)
        }
        return (authority, nil)
    }

    /// Whether `host` (a Host header's value) names this server, reached on `localIP`:`localPort`.
    func hostAllowed(_ host: String, localIP: String?, localPort: Int) -> Bool {
        let value = host.lowercased().trimmingCharacters(in: .whitespaces)
        if names.contains(value) { return true }  // `name:port` configured as such
        let (name, port) = Self.split(value)
        let defaultPort = scheme == "https" ? 443 : 80
        guard (port ?? defaultPort) == localPort else { return false }
        if names.contains(name) { return true }
        guard let ip = localIP?.lowercased() else { return false }
        return name == ip || name == "[\(ip)]"
    }

    enum Verdict {
        case allowed
        case refused(HTTPResponseStatus, String)
    }

    func check(_ head: HTTPRequestHead, localIP: String?, localPort: Int) -> Verdict {
        let hosts = head.headers["host"]
        if hosts.count > 1 {
            return .refused(.badRequest, "A request carries one Host header, not \(hosts.count).\n")
        }
        if let host = hosts.first, !hostAllowed(host, localIP: localIP, localPort: localPort) {
            return .refused(
                .misdirectedRequest,
                "This ctd does not answer to the name in the Host header; add it to [server] server_names.\n")
        }
        for origin in head.headers["origin"] {
            let o = Self.trimmed(origin.lowercased().trimmingCharacters(in: .whitespaces))
            if origins.contains(o) { continue }
            if let host = hosts.first?.lowercased(), o == "\(scheme)://\(host)" { continue }
            return .refused(
                .forbidden,
                "Requests from web pages of another origin are refused; add the origin to [server] allowed_origins.\n")
        }
        if head.method == .POST {
            let type = head.headers.first(name: "content-type").map {
                $0.split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
            }?.trimmingCharacters(in: .whitespaces).lowercased()
            guard type == "text/xml" || type == "application/xml" else {
                return .refused(
                    .unsupportedMediaType, "ctd serves XML-RPC: the body must be sent as Content-Type: text/xml.\n")
            }
        }
        return .allowed
    }
}
