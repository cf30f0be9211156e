import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Drains a ``DurableQueue`` to a ``SyslogTransport`` on one thread of its own, oldest first.
///
/// A batch of at most `batchEvents` records is handed to the transport; the records it proves delivered leave the
/// queue (for TLS a batch is proven by the next connection, see ``TLSSyslogTransport``). On failure the forwarder
/// waits (0.1 s, doubling up to `retryMaxSeconds`) and tries the same records again, so the collector receives
/// every record at least once and in order; a record is sent again only when its batch was not proven. One line
/// is logged when the collector goes away and one when it is back.
public final class SyslogForwarder: @unchecked Sendable {
    public struct Status: Sendable {
        /// The last delivery error, while the collector is unreachable.
        public var problem: String?
        /// When the current outage started (epoch seconds).
        public var since: Double?
        /// Records confirmed delivered since start.
        public var delivered: UInt64
        /// Retransmissions: records put on the wire again because an earlier attempt was not proven.
        public var resent: UInt64
    }

    public let queue: DurableQueue
    public let transport: any SyslogTransport
    private let batchEvents: Int
    private let retryMaxSeconds: Double
    private let log: @Sendable (_ isError: Bool, _ line: String) -> Void
    private let condition = NSCondition()
    private var stopping = false
    private var drainDeadline: Date = .distantFuture
    private var finished = false
    /// The delivery thread, joined by ``stop(drainSeconds:)``.
    private var thread: pthread_t?
    private var wake = false
    /// No delivery starts before this, unless ``resume()`` comes first (see ``pause(atMost:)``).
    private var pausedUntil: Date?
    private var status = Status(problem: nil, since: nil, delivered: 0, resent: 0)
    /// How long the last batch waits for the next event before a connection of its own proves it.
    private let proofDelay = 0.2

    public init(
        queue: DurableQueue, transport: any SyslogTransport, batchEvents: Int, retryMaxSeconds: Double,
        log: @escaping @Sendable (_ isError: Bool, _ line: String) -> Void
    ) {
        self.queue = queue
        self.transport = transport
        self.batchEvents = max(1, batchEvents)
        self.retryMaxSeconds = retryMaxSeconds
        self.log = log
    }

    /// Starts the delivery thread. A POSIX thread, not a Foundation `Thread`, because ``stop(drainSeconds:)`` must
    /// join it: the thread's OpenSSL state is freed by a thread-exit destructor, and a process that exits while
    /// that destructor runs races OpenSSL's own `atexit` cleanup, which frees the lock the destructor takes (a
    /// crash in `pthread_rwlock_wrlock` at exit, seen once in CI). After the join nothing of the thread is left.
    public func start() {
        condition.lock()
        defer { condition.unlock() }
        guard thread == nil, !stopping else { return }
        let me = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(
            &t, nil,
            { arg in
                let forwarder = Unmanaged<SyslogForwarder>.fromOpaque(arg!).takeRetainedValue()
                Thread.current.name = "ctd-auditsyslog"  // at most 15 characters (Linux)
                forwarder.run()
                return nil
            }, me)
        guard rc == 0 else {
            Unmanaged<SyslogForwarder>.fromOpaque(me).release()
            log(true, "cannot start the delivery thread: \(String(cString: strerror(rc))); events stay queued")
            return
        }
        thread = t
    }

    /// Tells the thread there is something new in the queue.
    public func notify() {
        condition.lock()
        wake = true
        condition.signal()
        condition.unlock()
    }

    /// Starts no delivery for at most `seconds`, or until ``resume()``: for the duration of a bulk action, whose
    /// events are on disk already. Sending them while the action runs made the sender thread and the collector
    /// compete with it for the cores: a 10,000-id kill took longer by about a tenth (docs/audit.md). A delivery
    /// under way finishes; a stop ends the pause.
    public func pause(atMost seconds: Double) {
        condition.lock()
        pausedUntil = Date().addingTimeInterval(seconds)
        condition.unlock()
    }

    /// Ends a pause: the thread delivers what is queued.
    public func resume() {
        condition.lock()
        pausedUntil = nil
        wake = true
        condition.signal()
        condition.unlock()
    }

    public var currentStatus: Status {
        condition.lock()
        defer { condition.unlock() }
        return status
    }

    /// Delivers what is queued for at most `drainSeconds`, then stops the thread; what is left stays on disk.
    /// - Returns: the number of records left in the queue.
    @discardableResult
    public func stop(drainSeconds: Double) -> Int {
        condition.lock()
        stopping = true
        drainDeadline = Date().addingTimeInterval(drainSeconds)
        condition.broadcast()
        // The thread ends by the deadline plus one transport timeout at most.
        while thread != nil && !finished { _ = condition.wait(until: Date().addingTimeInterval(0.2)) }
        let t = thread
        thread = nil
        condition.unlock()
        if let t { pthread_join(t, nil) }
        return queue.count
    }

    private func run() {
        var backoff = 0.1
        // The last record of the batch the collector read but the transport has not proven yet (0: none). By
        // sequence number, not count: drop_oldest may remove records from the head meanwhile.
        var awaitingLast: UInt64 = 0
        var attempted: Set<UInt64> = []  // seqs sent at least once (to count resends)
        while true {
            condition.lock()
            if stopping && (queue.count == 0 || Date() >= drainDeadline) {
                finished = true
                condition.broadcast()
                condition.unlock()
                return
            }
            if let until = pausedUntil {
                if !stopping && Date() < until {
                    _ = condition.wait(until: until)
                    condition.unlock()
                    continue
                }
                pausedUntil = nil
            }
            let queued = queue.count
            let onlyAwaiting = awaitingLast > 0 && queue.nextSequence <= awaitingLast + 1
            if queued == 0 || (onlyAwaiting && !stopping) {
                // Nothing new: wait for an event (sent together with the proof) or prove the last batch alone.
                if !wake { _ = condition.wait(until: Date().addingTimeInterval(queued == 0 ? 1 : proofDelay)) }
                let woken = wake
                wake = false
                if queued == 0 || woken {
                    condition.unlock()
                    continue
                }
            }
            condition.unlock()

            let head = queue.peek(max: batchEvents)
            let awaiting = head.prefix { $0.seq <= awaitingLast }.count
            let batch = awaiting > 0 ? queue.peek(max: awaiting + batchEvents) : head
            if batch.isEmpty { continue }
            let r = transport.deliver(batch.map(\.payload), awaitingProof: awaiting)
            var removeError: String?
            if r.proven > 0 {
                do { try queue.remove(through: batch[r.proven - 1].seq) } catch { removeError = "\(error)" }
            }
            let sentNow = batch[r.transmitted.clamped(to: 0..<batch.count)]
            let resent = sentNow.reduce(0) { $0 + (attempted.contains($1.seq) ? 1 : 0) }
            for rec in sentNow { attempted.insert(rec.seq) }
            if r.proven > 0 { attempted.subtract(batch[..<r.proven].map(\.seq)) }
            if r.error == nil { awaitingLast = r.read > 0 ? batch[r.proven + r.read - 1].seq : 0 }
            condition.lock()
            status.delivered += UInt64(r.proven)
            status.resent += UInt64(resent)
            let wasDown = status.problem != nil
            if let error = r.error ?? removeError {
                if !wasDown {
                    status.since = Date().timeIntervalSince1970
                    log(true, "cannot deliver to \(transport.destination): \(error); \(queue.count) events queued")
                }
                status.problem = error
                let until = Date().addingTimeInterval(backoff)
                while !(stopping && Date() >= drainDeadline) && Date() < until {
                    _ = condition.wait(until: min(until, stopping ? drainDeadline : until))
                }
                backoff = min(backoff * 2, retryMaxSeconds)
            } else {
                if wasDown {
                    log(false, "\(transport.destination) reachable again; \(queue.count) events still queued")
                }
                status.problem = nil
                status.since = nil
                backoff = 0.1
            }
            condition.unlock()
        }
    }
}
