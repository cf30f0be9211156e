import Foundation

/// Drains a ``DurableQueue`` to a ``SyslogTransport`` on one thread of its own, oldest first.
///
/// A batch of at most `batchEvents` records is handed to the transport; the records it confirms leave the queue.
/// On failure the forwarder waits (0.1 s, doubling up to `retryMaxSeconds`) and tries the same records again,
/// so the collector receives every record at least once and in order; a record is sent again only when its
/// batch was not confirmed. One line is logged when the collector goes away and one when it is back.
public final class SyslogForwarder: @unchecked Sendable {
    public struct Status: Sendable {
        /// The last delivery error, while the collector is unreachable.
        public var problem: String?
        /// When the current outage started (epoch seconds).
        public var since: Double?
        /// Records confirmed delivered since start.
        public var delivered: UInt64
        /// Records sent more than once (their batch was not confirmed the first time).
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
    private var wake = false
    private var status = Status(problem: nil, since: nil, delivered: 0, resent: 0)

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

    public func start() {
        let thread = Thread { [self] in run() }
        thread.name = "ctd.audit-syslog"
        thread.start()
    }

    /// Tells the thread there is something new in the queue.
    public func notify() {
        condition.lock()
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
        while !finished { _ = condition.wait(until: Date().addingTimeInterval(0.2)) }
        condition.unlock()
        return queue.count
    }

    private func run() {
        var backoff = 0.1
        var sentBefore: Set<UInt64> = []  // seqs of the batch that failed last (to count resends)
        while true {
            condition.lock()
            if stopping && (queue.count == 0 || Date() >= drainDeadline) {
                finished = true
                condition.broadcast()
                condition.unlock()
                return
            }
            if queue.count == 0 {
                if !wake { _ = condition.wait(until: Date().addingTimeInterval(1)) }
                wake = false
                condition.unlock()
                continue
            }
            condition.unlock()

            let batch = queue.peek(max: batchEvents)
            let resent = batch.reduce(0) { $0 + (sentBefore.contains($1.seq) ? 1 : 0) }
            let (confirmed, error) = transport.deliver(batch.map(\.payload))
            var removeError: String?
            if confirmed > 0 {
                do { try queue.remove(through: batch[confirmed - 1].seq) } catch { removeError = "\(error)" }
            }
            condition.lock()
            status.delivered += UInt64(confirmed)
            if confirmed > 0 { status.resent += UInt64(min(resent, confirmed)) }
            let wasDown = status.problem != nil
            if let error = error ?? removeError {
                sentBefore = Set(batch[confirmed...].map(\.seq))
                if !wasDown {
                    status.since = Date().timeIntervalSince1970
                    log(true, "cannot deliver to \(transport.destination): \(error); \(queue.count) events queued")
                }
                status.problem = error
                // Wait before the next try, unless stopping past the deadline.
                let until = Date().addingTimeInterval(backoff)
                while !(stopping && Date() >= drainDeadline) && Date() < until {
                    _ = condition.wait(until: min(until, stopping ? drainDeadline : until))
                }
                backoff = min(backoff * 2, retryMaxSeconds)
            } else {
                sentBefore = []
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
