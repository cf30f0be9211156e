import CSyslogTransport
import Foundation

/// Where messages go. ``deliver(_:)`` is called by the forwarder's one thread only.
public protocol SyslogTransport: AnyObject, Sendable {
    /// A line for logs and health: `tls://127.0.0.1:6514`.
    var destination: String { get }

    /// Sends the messages in order and says how many of them (a prefix) are confirmed delivered; `error` is set
    /// when not all were.
    func deliver(_ messages: [[UInt8]]) -> (confirmed: Int, error: String?)
}

/// What `address` names: `tls://HOST:PORT` (RFC 5425) or `unix:PATH` (a local datagram socket, /dev/log).
public enum SyslogAddress: Equatable, Sendable, CustomStringConvertible {
    case tls(host: String, port: Int)
    case unix(path: String)

    /// Parses an address; `nil` when it is neither form. IPv6 hosts go in brackets: `tls://[::1]:6514`.
    public static func parse(_ s: String) -> SyslogAddress? {
        if s.hasPrefix("unix:") {
            let path = String(s.dropFirst(5))
            return path.hasPrefix("/") && path.utf8.count < 108 ? .unix(path: path) : nil
        }
        guard s.hasPrefix("tls://") else { return nil }
        let rest = s.dropFirst(6)
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { return nil }
            portText = after.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else { return nil }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
            guard !host.contains(":") else { return nil }
        }
        guard !host.isEmpty, !host.contains("/"), let port = Int(portText), port > 0, port < 65536 else { return nil }
        return .tls(host: String(host), port: port)
    }

    public var description: String {
        switch self {
        case .tls(let host, let port): return host.contains(":") ? "tls://[\(host)]:\(port)" : "tls://\(host):\(port)"
        case .unix(let path): return "unix:\(path)"
        }
    }
}

private func withErrorBuffer<T>(_ body: (UnsafeMutablePointer<CChar>, Int) -> T) -> (T, String) {
    var buffer = [CChar](repeating: 0, count: 512)
    let result = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
    return (result, String(cString: buffer))
}

/// RFC 5425: syslog over TLS, octet-counting framing. A batch goes over one connection that is then closed in the
/// way that proves the collector read all of it (``csyslog_tls_finish``); only then is the batch confirmed.
public final class TLSSyslogTransport: SyslogTransport, @unchecked Sendable {
    public let destination: String
    private let host: String
    private let port: String
    private let serverName: String
    private let timeoutMilliseconds: Int32
    private let context: OpaquePointer

    /// - Throws: a sentence when the CA file or client certificate cannot be used.
    public init(
        host: String, port: Int, serverName: String?, caFile: String, certFile: String?, keyFile: String?,
        timeout: Double
    ) throws {
        self.host = host
        self.port = String(port)
        self.serverName = serverName ?? host
        self.timeoutMilliseconds = Int32(min(timeout * 1000, 3_600_000))
        destination = SyslogAddress.tls(host: host, port: port).description
        let (ctx, error) = withErrorBuffer { csyslog_tls_context_new(caFile, certFile, keyFile, $0, $1) }
        guard let ctx else { throw TransportError(error) }
        context = ctx
    }

    deinit { csyslog_tls_context_free(context) }

    public func deliver(_ messages: [[UInt8]]) -> (confirmed: Int, error: String?) {
        guard !messages.isEmpty else { return (0, nil) }
        let (conn, connectError) = withErrorBuffer {
            csyslog_tls_connect(context, host, port, serverName, timeoutMilliseconds, $0, $1)
        }
        guard let conn else { return (0, connectError) }
        defer { csyslog_tls_free(conn) }
        var frames: [UInt8] = []
        frames.reserveCapacity(messages.reduce(0) { $0 + $1.count + 8 })
        for m in messages {
            frames += Array("\(m.count) ".utf8)
            frames += m
        }
        let (written, writeError) = withErrorBuffer { buf, len in
            frames.withUnsafeBytes { csyslog_tls_write(conn, $0.baseAddress, $0.count, timeoutMilliseconds, buf, len) }
        }
        guard written == 0 else { return (0, writeError) }
        let (finished, finishError) = withErrorBuffer { csyslog_tls_finish(conn, timeoutMilliseconds, $0, $1) }
        return finished == 0 ? (messages.count, nil) : (0, finishError)
    }
}

/// A local datagram socket (`/dev/log`): one message per datagram; a datagram the kernel took is delivered (Unix
/// datagram sockets do not lose messages; a full receiver makes the sender wait).
public final class UnixSyslogTransport: SyslogTransport, @unchecked Sendable {
    public let destination: String
    private let path: String
    private let timeoutMilliseconds: Int32
    private var fd: Int32 = -1

    public init(path: String, timeout: Double) {
        self.path = path
        self.timeoutMilliseconds = Int32(min(timeout * 1000, 3_600_000))
        destination = "unix:\(path)"
    }

    deinit { csyslog_unix_close(fd) }

    public func deliver(_ messages: [[UInt8]]) -> (confirmed: Int, error: String?) {
        if fd < 0 {
            let (opened, error) = withErrorBuffer { csyslog_unix_open(path, $0, $1) }
            guard opened >= 0 else { return (0, error) }
            fd = opened
        }
        for (i, m) in messages.enumerated() {
            let (rc, error) = withErrorBuffer { buf, len in
                m.withUnsafeBytes { csyslog_unix_send(fd, $0.baseAddress, $0.count, timeoutMilliseconds, buf, len) }
            }
            if rc != 0 {
                // The daemon may have restarted with a new socket at the same path: reconnect next time.
                csyslog_unix_close(fd)
                fd = -1
                return (i, error)
            }
        }
        return (messages.count, nil)
    }
}

/// A transport that cannot be set up (bad CA file...).
public struct TransportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
