import CtdRuntime
import Foundation

/// What changed in the mirror, in order, for clients that follow the table instead of re-reading pages (`changes`).
///
/// The mirror records every entry that appeared, changed (mark, state, status: not the counters, which a dump
/// refreshes for everyone) or ended, with a sequence number, in a ring of `capacity`. A client reads from its
/// cursor; a cursor that has fallen off the ring is told `overflow` (reload the page). Waiting readers are
/// answered as soon as something changes after their cursor, or at their deadline; they hold no thread while they
/// wait.
public final class ChangeFeed: @unchecked Sendable {
    public enum Kind: Sendable, Equatable { case new, updated, destroyed }

    public struct Change: Sendable {
        public var seq: UInt64
        public var kind: Kind
        public var flow: Flow
    }

    /// A read from a cursor.
    public struct Batch: Sendable {
        public var changes: [Change]
        /// The cursor to read from next time.
        public var next: UInt64
        /// The cursor was older than the ring (or the mirror was reloaded): changes were lost; reload the page.
        public var overflow: Bool

        public init(changes: [Change], next: UInt64, overflow: Bool) {
            self.changes = changes
            self.next = next
            self.overflow = overflow
        }
    }

    private struct Waiter {
        var cursor: UInt64
        var limit: Int
        var deadline: Double
        var answer: @Sendable (Batch) -> Void
    }

    public let capacity: Int
    private let clock: MonotonicClock
    private let lock = NSLock()
    private var ring: [Change] = []
    /// Sequence number of the next change; the ring holds `nextSeq - ring.count ..< nextSeq`.
    private var nextSeq: UInt64 = 1
    /// Changes before this were lost to a reload.
    private var lostBefore: UInt64 = 0
    private var start = 0
    private var waiters: [UInt64: Waiter] = [:]
    /// After ``close()``: waits answer at once.
    private var closed = false
    private var nextWaiter: UInt64 = 0
    private var timer: DispatchSourceTimer?
    private let answers = DispatchQueue(label: "ctd-changes", attributes: .concurrent)

    public init(capacity: Int = 16_384, clock: MonotonicClock = .system) {
        self.capacity = max(16, capacity)
        self.clock = clock
        ring.reserveCapacity(self.capacity)
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "ctd-changes-deadlines"))
        t.schedule(deadline: .now() + 0.1, repeating: 0.1)
        t.setEventHandler { [weak self] in self?.expire() }
        t.resume()
        timer = t
    }

    deinit { timer?.cancel() }

    /// The cursor of "now": a read from it sees only what changes later.
    public var head: UInt64 { lock.withLock { nextSeq } }

    /// Records one change (the mirror calls this while it holds its own lock; this lock is taken inside it).
    func record(_ kind: Kind, _ flow: Flow) {
        lock.withLock {
            let change = Change(seq: nextSeq, kind: kind, flow: flow)
            nextSeq += 1
            if ring.count < capacity {
                ring.append(change)
            } else {
                ring[start] = change
                start = (start + 1) % capacity
            }
        }
    }

    /// The mirror was replaced by a dump: every cursor before now has lost changes.
    func reset() {
        lock.withLock {
            ring.removeAll(keepingCapacity: true)
            start = 0
            // Use up a number, so that a client exactly at the head is told it lost changes too.
            nextSeq += 1
            lostBefore = nextSeq
        }
        publish()
    }

    /// Reads at most `limit` changes after `cursor`.
    public func read(after cursor: UInt64, limit: Int) -> Batch {
        lock.withLock { readLocked(after: cursor, limit: limit) }
    }

    private func readLocked(after cursor: UInt64, limit: Int) -> Batch {
        let first = nextSeq - UInt64(ring.count)
        // A cursor from before a reload or the ring's start lost changes; one beyond the head was never handed out.
        if cursor < lostBefore || cursor < first || cursor > nextSeq {
            return Batch(changes: [], next: nextSeq, overflow: true)
        }
        let from = Int(cursor - first)
        let n = min(limit, ring.count - from)
        var out: [Change] = []
        out.reserveCapacity(max(0, n))
        for k in 0..<max(0, n) { out.append(ring[(start + from + k) % ring.count]) }
        return Batch(changes: out, next: cursor + UInt64(max(0, n)), overflow: false)
    }

    /// Answers at once when something changed after `cursor`, else when something does or at `timeout` seconds
    /// (with an empty batch). `answer` runs on a queue of its own, never on the event thread.
    public func wait(after cursor: UInt64, limit: Int, timeout: Double, answer: @escaping @Sendable (Batch) -> Void) {
        let deadline = clock.now() + max(0, timeout)
        let ready: Batch? = lock.withLock {
            let batch = readLocked(after: cursor, limit: limit)
            if !batch.changes.isEmpty || batch.overflow || timeout <= 0 || closed { return batch }
            nextWaiter += 1
            waiters[nextWaiter] = Waiter(cursor: cursor, limit: limit, deadline: deadline, answer: answer)
            return nil
        }
        if let ready { answers.async { answer(ready) } }
    }

    /// Clients waiting now.
    public var waiting: Int { lock.withLock { waiters.count } }

    /// Wakes the waiters that have something to read (the mirror calls this after each batch it applied).
    func publish() {
        let due: [(Waiter, Batch)] = lock.withLock {
            var out: [(Waiter, Batch)] = []
            for (key, w) in waiters {
                let batch = readLocked(after: w.cursor, limit: w.limit)
                guard !batch.changes.isEmpty || batch.overflow else { continue }
                out.append((w, batch))
                waiters[key] = nil
            }
            return out
        }
        for (w, batch) in due { answers.async { w.answer(batch) } }
    }

    /// Answers every waiter now, with what there is, and every later wait at once: a shutdown must not wait for
    /// long polls.
    public func close() {
        let all: [(Waiter, Batch)] = lock.withLock {
            closed = true
            defer { waiters.removeAll() }
            return waiters.values.map { ($0, readLocked(after: $0.cursor, limit: $0.limit)) }
        }
        for (w, batch) in all { answers.async { w.answer(batch) } }
    }

    private func expire() {
        let now = clock.now()
        let due: [(Waiter, Batch)] = lock.withLock {
            var out: [(Waiter, Batch)] = []
            for (key, w) in waiters where w.deadline <= now {
                out.append((w, readLocked(after: w.cursor, limit: w.limit)))
                waiters[key] = nil
            }
            return out
        }
        for (w, batch) in due { answers.async { w.answer(batch) } }
    }
}
