import CtdRuntime
import Foundation
import Logging

/// Keeps a `ConntrackMirror` in step with the kernel: subscribes to events before the first dump (so nothing falls
/// in between), applies events on its own thread, resyncs with a dump after event loss, and refreshes counters,
/// timeouts and byte rates at most every `counterInterval` seconds, only while clients are looking.
public final class ConntrackService: @unchecked Sendable {
    public let mirror: ConntrackMirror
    private let receiveBuffer: Int
    private let counterInterval: Double
    private let logger: Logger
    private let kernel: KernelConntrack
    private var clock: MonotonicClock { kernel.clock }
    private var events: ConntrackEvents?
    /// Signalled by each background thread as it ends (``stop()`` waits for both).
    private let threadsEnded = DispatchSemaphore(value: 0)
    private var threadsRunning = 0
    private let resyncWanted = ManagedAtomicFlag()
    private var eventThread: Thread?
    private var counterThread: Thread?
    private let stopped = ManagedAtomicFlag()
    private var lastCounterDumpAt: Double = 0
    /// How long the last counter dump took (seconds), to keep dumps to a tenth of the time at any table size.
    private var lastDumpSeconds: Double = 0
    /// How long the last full load spent building the ordered indexes (logged at start-up).
    private var lastIndexSeconds: Double = 0
    /// Guards `appliedThrough`: the monotonic time before which every kernel change is in the mirror.
    private let progress = NSCondition()
    private var appliedThrough: Double = 0

    public init(
        mirror: ConntrackMirror, kernel: KernelConntrack, receiveBuffer: Int, counterInterval: Double, logger: Logger
    ) {
        self.mirror = mirror
        self.kernel = kernel
        self.receiveBuffer = receiveBuffer
        self.counterInterval = counterInterval
        self.logger = logger
    }

    /// Whether the kernel counts bytes and packets (`net.netfilter.nf_conntrack_acct`).
    public static func accountingEnabled() -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_acct", encoding: .utf8)
        else { return false }
        return text.trimmingCharacters(in: .whitespacesAndNewlines) == "1"
    }

    /// Whether the kernel records connection start times (`net.netfilter.nf_conntrack_timestamp`).
    public static func timestampsEnabled() -> Bool { KernelSettings.read("nf_conntrack_timestamp") == "1" }

    /// Subscribes, loads the table and starts the background threads. Throws when the kernel table is unreachable.
    /// Makes the kernel announce the end of every entry created from now on, even while no ctd listens (a
    /// restart), by setting this namespace's `nf_conntrack_events` to 1. Where ctd may not (a read-only /proc/sys),
    /// the sysctl.d drop-in does it; the log says which.
    func enableEventsForEveryEntry() {
        let before = KernelSettings.current().events
        guard before != 1 else { return }
        do {
            try KernelSettings.setEvents(1)
            logger.notice(
                "net.netfilter.nf_conntrack_events set from \(before.map(String.init) ?? "?") to 1 in this namespace: entries created from now on announce their end even while ctd is not running")
        } catch {
            logger.warning(
                "net.netfilter.nf_conntrack_events is \(before.map(String.init) ?? "?") and ctd cannot set it to 1 (\(error)): entries created while ctd is not running never announce their end, so refresh dumps the table to notice it")
        }
    }

    /// Guards the shared reconciliation dumps (``reconcileNow()``).
    private let dumps = NSCondition()
    private var dumpRunning = false
    private var dumpStartedAt = -Double.infinity

    /// Returns once a reconciliation dump that started after this call has finished (entries the kernel no longer
    /// has are gone from the mirror). Concurrent callers share one dump.
    public func reconcileNow() {
        let asked = clock.now()
        dumps.lock()
        while true {
            if dumpStartedAt >= asked && !dumpRunning { break }  // a dump that started after us has finished
            if dumpRunning {
                dumps.wait()
                continue
            }
            runDumpLocked()
            break
        }
        dumps.unlock()
    }

    /// Runs one reconciliation dump; the caller holds `dumps` and no dump is running. The lock is let go during
    /// the dump and held again when it returns.
    @discardableResult
    private func runDumpLocked() -> Int {
        dumpRunning = true
        dumpStartedAt = clock.now()
        dumps.unlock()
        let dropped = refreshCountersNow()
        dumps.lock()
        dumpRunning = false
        dumps.broadcast()
        return dropped
    }

    public func start() throws {
        enableEventsForEveryEntry()
        let ev = try ConntrackEvents(receiveBuffer: receiveBuffer, clock: kernel.clock)
        events = ev
        mirror.setEventStatus(receiveBuffer: ev.grantedReceiveBuffer, healthy: true)
        let started = clock.now()
        try load(isResync: false)
        lastCounterDumpAt = clock.now()
        lastDumpSeconds = lastCounterDumpAt - started
        let acct = ConntrackService.accountingEnabled()
        mirror.setAccounting(acct)
        let stamps = ConntrackService.timestampsEnabled()
        mirror.setTimestamps(stamps)
        if !stamps {
            logger.warning(
                "net.netfilter.nf_conntrack_timestamp is 0: the kernel does not record when connections start, so start and age are unavailable (sysctl -w net.netfilter.nf_conntrack_timestamp=1 enables them for new connections)"
            )
        }
        if !acct {
            logger.warning(
                "net.netfilter.nf_conntrack_acct is 0: the kernel does not count bytes or packets, so counters and byte rates are unavailable (sysctl -w net.netfilter.nf_conntrack_acct=1 enables them for new connections)"
            )
        }
        logger.info(
            "conntrack mirror loaded",
            metadata: [
                "entries": "\(mirror.statistics.entries)",
                "seconds": "\(String(format: "%.3f", clock.now() - started))",
                "indexing_seconds": "\(String(format: "%.3f", lastIndexSeconds))",
                "receive_buffer": "\(ev.grantedReceiveBuffer)",
            ])
        let ended = threadsEnded
        let t = Thread { [weak self] in
            self?.eventLoop()
            ended.signal()
        }
        t.name = "ctd-events"
        t.start()
        eventThread = t
        let c = Thread { [weak self] in
            self?.counterLoop()
            ended.signal()
        }
        c.name = "ctd-counters"
        c.start()
        counterThread = c
        threadsRunning = 2
    }

    /// Stops following the kernel and returns once both background threads have ended (within about 250 ms).
    public func stop() {
        stopped.set()
        events?.wake()
        for _ in 0..<threadsRunning { threadsEnded.wait() }
        threadsRunning = 0
    }

    /// Asks the event thread to replace the mirror with a fresh dump (after the hide list changed, so that entries
    /// it no longer hides appear); returns once it is done, or after `timeout` seconds.
    @discardableResult
    public func resync(timeout: Double = 30) -> Bool {
        resyncWanted.set()
        return catchUp(timeout: timeout)
    }

    /// Returns `true` once every change the kernel made before this call is in the mirror (the event thread, woken,
    /// has read the event queue empty and applied it; about a millisecond), `false` after `timeout` seconds.
    public func catchUp(timeout: Double) -> Bool {
        let asked = clock.now()
        events?.wake()
        let deadline = Date(timeIntervalSinceNow: timeout)
        progress.lock()
        defer { progress.unlock() }
        while appliedThrough < asked {
            if !progress.wait(until: deadline) { return appliedThrough >= asked }
        }
        return true
    }

    private func advance(to time: Double) {
        progress.lock()
        if time > appliedThrough { appliedThrough = time }
        progress.broadcast()
        progress.unlock()
    }

    private func load(isResync: Bool) throws {
        mirror.setResyncing(true)
        defer { mirror.setResyncing(false) }
        lastIndexSeconds = try mirror.load(isResync: isResync) { add in try kernel.dump(add) }
        // The index build's key arrays and sort scratch (about 100 MB at a million entries) are freed now: give
        // their pages back, so that resident memory after a load is the table's, not the build's.
        ProcessTuning.returnFreedMemory()
    }

    private func eventLoop() {
        guard let events else { return }
        var batch: [ConntrackEvent] = []
        batch.reserveCapacity(4096)
        while !stopped.isSet {
            do {
                let (complete, readingFrom) = try events.poll(timeoutMs: 250) { batch.append($0) }
                mirror.apply(events: batch)
                batch.removeAll(keepingCapacity: true)
                if resyncWanted.take() {
                    let resyncFrom = clock.now()
                    try load(isResync: false)
                    advance(to: resyncFrom)
                } else if !complete {
                    // The kernel drops every event for this socket until its queue is read empty: drain first, so
                    // that the changes made during the dump reach us, then take the dump.
                    let resyncFrom = clock.now()
                    events.drain()
                    logger.warning("conntrack events were lost (ENOBUFS); resynchronising with a dump")
                    try load(isResync: true)
                    advance(to: resyncFrom)
                } else if let readingFrom {
                    advance(to: readingFrom)
                }
            } catch {
                mirror.setEventStatus(receiveBuffer: events.grantedReceiveBuffer, healthy: false)
                logger.error("conntrack event loop failed: \(error); retrying in 1 s")
                Thread.sleep(forTimeInterval: 1)
                try? load(isResync: true)
                mirror.setEventStatus(receiveBuffer: events.grantedReceiveBuffer, healthy: true)
            }
        }
    }

    /// Counters change with every packet but produce no events, so they are dumped, not followed: every
    /// `counterInterval` while someone viewed in the last 10 s. The same dump drops entries whose end produced no
    /// event (see `ConntrackMirror.reconcile`); while nobody looks, that reconciliation runs on a backoff from 10 s
    /// to 10 min, so an idle daemon costs next to nothing.
    private func counterLoop() {
        var idleInterval = 10.0
        while !stopped.isSet {
            Thread.sleep(forTimeInterval: min(0.25, counterInterval / 4))
            if mirror.releaseIdleSnapshot(after: 10) { ProcessTuning.returnFreedMemory() }
            let now = clock.now()
            let viewing = mirror.secondsSinceLastView < 10
            // A dump of a million entries takes seconds of CPU: while viewing, dumps take at most a tenth of the
            // time (docs/benchmark.md, "Counter refresh at scale").
            // Below a second per dump the configured interval stands: the reconciliation is also what notices
            // entries whose events were lost while a resync dump ran.
            let viewingInterval = lastDumpSeconds > 1 ? max(counterInterval, 9 * lastDumpSeconds) : counterInterval
            let due = now - lastCounterDumpAt >= (viewing ? viewingInterval : max(idleInterval, viewingInterval))
            guard due else { continue }
            let dropped = refreshCountersShared()
            idleInterval = dropped > 0 ? 10 : min(600, idleInterval * 2)
            // Chunks replaced since the last pass were freed in whichever thread's arena held them; give the pages
            // back so that resident memory tracks the table, not its history.
            ProcessTuning.returnFreedMemory()
        }
    }

    /// The counter thread's dump, through the same gate as ``reconcileNow()`` (never two dumps at once).
    private func refreshCountersShared() -> Int {
        dumps.lock()
        defer { dumps.unlock() }
        while dumpRunning { dumps.wait() }
        return runDumpLocked()
    }

    @discardableResult
    package func refreshCountersNow() -> Int {
        let now = clock.now()
        let interval = now - lastCounterDumpAt
        let epoch = mirror.beginReconcile()
        var chunk: [Flow] = []
        chunk.reserveCapacity(4096)
        do {
            try kernel.dump { flow in
                chunk.append(flow)
                if chunk.count == 4096 {
                    mirror.reconcile(chunk: chunk[...], epoch: epoch, interval: interval)
                    chunk.removeAll(keepingCapacity: true)
                }
            }
            mirror.reconcile(chunk: chunk[...], epoch: epoch, interval: interval)
            let dropped = mirror.finishReconcile(epoch: epoch, dumpStartedAt: now)
            lastCounterDumpAt = now
            lastDumpSeconds = clock.now() - now
            mirror.setAccounting(ConntrackService.accountingEnabled())
            mirror.setTimestamps(ConntrackService.timestampsEnabled())
            if dropped > 0 { logger.debug("reconciliation dropped \(dropped) entries that ended without an event") }
            return dropped
        } catch {
            mirror.abandonReconcile(epoch: epoch)
            logger.error("counter refresh failed: \(error)")
            return 0
        }
    }
}

/// A flag readable from any thread.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
    /// Whether it was set, clearing it.
    func take() -> Bool {
        lock.withLock {
            defer { value = false }
            return value
        }
    }
}
