import CSyslogTransport
import Foundation

/// What one delivery attempt achieved, over the messages it was given (in order).
public struct DeliveryResult: Sendable, Equatable {
    /// A prefix of the messages now known delivered: they may leave the queue.
    public var proven: Int
    /// The messages after those that the collector read, but whose processing is not proven yet: they stay queued
    /// and are passed again as `awaitingProof` next time.
    public var read: Int
    /// Why the attempt stopped short, if it did.
    public var error: String?
    /// The messages (indexes) that went on the wire in this attempt, whether or not they arrived.
    public var transmitted: Range<Int>

    public init(proven: Int, read: Int, error: String?, transmitted: Range<Int>) {
        self.proven = proven
        self.read = read
        self.error = error
        self.transmitted = transmitted
    }
}

/// Where messages go. ``deliver(_:awaitingProof:)`` is called by the forwarder's one thread only.
public protocol SyslogTransport: AnyObject, Sendable {
    /// A line for logs and health: `tls://127.0.0.1:6514`.
    var destination: String { get }

    /// Sends the messages in order. The first `awaitingProof` of them are those the last call reported `read`:
    /// the transport proves them (they are not sent again) or, when it cannot, sends them again.
    func deliver(_ messages: [[UInt8]], awaitingProof: Int) -> DeliveryResult
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

/// RFC 5425: syslog over TLS, octet-counting framing, one connection per batch.
///
/// TCP and RFC 5425 have no acknowledgement, so delivery is proven in two steps:
/// 1. the batch's connection is closed with TLS close_notify and a half-close, and the collector must answer with
///    a clean close: it read every byte (a collector that closes with unread data resets the connection);
/// 2. the next connection must resume the TLS session of that one: only the same collector process holds the
///    ticket key, so the collector did not stop (or crash) between reading the batch and now, which is what loses
///    messages it read but had not yet queued.
/// A batch that fails either step is sent again (at least once, never lost). A collector that issues no session
/// tickets, or that has refused `resumptionStrikes` resumptions in a row although it issued tickets (several
/// collectors behind one address), gets the first step only; that is logged once.
public final class TLSSyslogTransport: SyslogTransport, @unchecked Sendable {
    public let destination: String
    private let host: String
    private let port: String
    private let serverName: String
    private let timeoutMilliseconds: Int32
    private let context: OpaquePointer
    private var session: OpaquePointer?
    private var strikes = 0
    static let resumptionStrikes = 3
    /// Called once when the transport falls back to step 1 only.
    public var onWeakConfirmation: (@Sendable (String) -> Void)?
    private var warned = false

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

    deinit {
        csyslog_tls_session_free(session)
        csyslog_tls_context_free(context)
    }

    public func deliver(_ messages: [[UInt8]], awaitingProof: Int) -> DeliveryResult {
        var resumed: Int32 = 0
        let offered = session
        let (conn, connectError) = withErrorBuffer {
            csyslog_tls_connect_resuming(
                context, host, port, serverName, timeoutMilliseconds, offered, &resumed, $0, $1)
        }
        guard let conn else { return DeliveryResult(proven: 0, read: 0, error: connectError, transmitted: 0..<0) }
        defer { csyslog_tls_free(conn) }
        var proven = 0
        if awaitingProof > 0 {
            if resumed != 0 {
                proven = awaitingProof
                strikes = 0
            } else if offered != nil {
                strikes += 1
                if strikes >= Self.resumptionStrikes {
                    // Not a restart: this collector does not resume sessions. The clean close has to do.
                    proven = awaitingProof
                    if !warned {
                        warned = true
                        onWeakConfirmation?(
                            "\(destination) issues TLS session tickets but refused \(strikes) resumptions in a row: "
                                + "batches are now confirmed by the collector's clean close only")
                    }
                }
            }
        }
        var frames: [UInt8] = []
        frames.reserveCapacity(messages[proven...].reduce(0) { $0 + $1.count + 8 })
        for m in messages[proven...] {
            frames += Array("\(m.count) ".utf8)
            frames += m
        }
        if !frames.isEmpty {
            let (written, writeError) = withErrorBuffer { buf, len in
                frames.withUnsafeBytes {
                    csyslog_tls_write(conn, $0.baseAddress, $0.count, timeoutMilliseconds, buf, len)
                }
            }
            guard written == 0 else {
                return DeliveryResult(proven: proven, read: 0, error: writeError, transmitted: proven..<messages.count)
            }
        }
        let (finished, finishError) = withErrorBuffer { csyslog_tls_finish(conn, timeoutMilliseconds, $0, $1) }
        guard finished == 0 else {
            return DeliveryResult(proven: proven, read: 0, error: finishError, transmitted: proven..<messages.count)
        }
        let read = messages.count - proven
        csyslog_tls_session_free(session)
        session = csyslog_tls_take_session(conn)
        if session == nil || (warned && strikes >= Self.resumptionStrikes) {
            // No ticket: nothing can prove more than the clean close.
            if session == nil && !warned && read > 0 {
                warned = true
                onWeakConfirmation?(
                    "\(destination) issues no TLS session tickets: batches are confirmed by the collector's clean "
                        + "close only")
            }
            return DeliveryResult(proven: messages.count, read: 0, error: nil, transmitted: proven..<messages.count)
        }
        return DeliveryResult(proven: proven, read: read, error: nil, transmitted: proven..<messages.count)
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

    public func deliver(_ messages: [[UInt8]], awaitingProof: Int) -> DeliveryResult {
        if fd < 0 {
            let (opened, error) = withErrorBuffer { csyslog_unix_open(path, $0, $1) }
            guard opened >= 0 else { return DeliveryResult(proven: 0, read: 0, error: error, transmitted: 0..<0) }
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
                return DeliveryResult(proven: i, read: 0, error: error, transmitted: 0..<(i + 1))
            }
        }
        return DeliveryResult(proven: messages.count, read: 0, error: nil, transmitted: 0..<messages.count)
    }
}

/// A transport that cannot be set up (bad CA file...).
public struct TransportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
