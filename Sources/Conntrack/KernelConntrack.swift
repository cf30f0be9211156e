import CConntrack
import CtdRuntime
import Foundation

/// Access to the kernel's conntrack table through libnetfilter_conntrack (the CConntrack shim): the netlink adapter.
///
/// Entries are stamped with `clock` when they are read, so that remaining timeouts can be computed later.
public struct KernelConntrack: Sendable {
    public let clock: MonotonicClock

    public init(clock: MonotonicClock = .system) { self.clock = clock }

    public struct Error: Swift.Error, CustomStringConvertible {
        public var errno: Int32
        public var operation: String
        public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
    }

    /// Dumps the table, calling `body` for every entry.
    public func dump(_ body: (Flow) -> Void) throws {
        try withoutActuallyEscaping(body) { body in
            var sink = FlowSink(now: clock.now(), body: { event in body(event.flow) }, clock: clock)
            let rc = withUnsafeMutablePointer(to: &sink) { ctd_dump(flowSinkCallback, $0) }
            if rc < 0 { throw Error(errno: -rc, operation: "conntrack dump") }
        }
    }

    /// Result of a destroy or update of one entry.
    public enum Outcome: Equatable, Sendable {
        case done
        /// The entry is gone, or its tuple now belongs to a connection with another id.
        case gone
        case failed(String)

        init(code: Int32) {
            switch code {
            case 0: self = .done
            case -ENOENT: self = .gone
            default: self = .failed(String(cString: strerror(-code)))
            }
        }
    }

    /// Deletes entries by tuple and id, batched. A reused tuple with a new id is left alone (ENOENT).
    /// - Throws: when the netlink socket failed before any answer; after a partial failure the answered entries
    ///   have their outcome and the others ``Outcome/failed(_:)``.
    public func destroy(_ flows: [Flow]) throws -> [Outcome] {
        if flows.isEmpty { return [] }
        var raw = flows.map { $0.cFlow }
        var results = [Int32](repeating: 0, count: flows.count)
        let rc = ctd_destroy_batch(&raw, raw.count, &results)
        guard rc < 0 else { return results.map(Outcome.init(code:)) }
        let error = Error(errno: -rc, operation: "conntrack delete")
        // Nothing answered: nothing is known to have happened. Otherwise the batches answered before the failure
        // are exact, and the rest say that their fate is unknown.
        if results.allSatisfy({ $0 == CTD_UNANSWERED }) { throw error }
        return results.map { $0 == CTD_UNANSWERED ? .failed("no answer from the kernel (\(error))") : Outcome(code: $0) }
    }

    /// Reads the current entry that owns `flow`'s original tuple.
    public func get(_ flow: Flow) -> Flow? {
        var tuple = flow.cFlow
        var out = ctd_flow()
        guard ctd_get(&tuple, &out) == 0 else { return nil }
        return Flow(out, now: clock.now())
    }

    /// Changes mark and/or timeout of exactly the entry the caller saw.
    ///
    /// The kernel's update ignores CTA_ID (measured on 6.18), so the id is checked with a GET just before and
    /// just after the update; a tuple reused in between is reported as a failure.
    public func update(_ flow: Flow, mark: UInt32?, timeout: UInt32?) throws -> (Outcome, Flow?) {
        guard let current = get(flow), current.id == flow.id else { return (.gone, nil) }
        var raw = flow.cFlow
        let rc = ctd_update(&raw, mark == nil ? 0 : 1, mark ?? 0, timeout == nil ? 0 : 1, timeout ?? 0)
        let outcome = Outcome(code: rc)
        guard outcome == .done else { return (outcome, nil) }
        guard let after = get(flow) else { return (.gone, nil) }
        if after.id != flow.id {
            // Another connection took the tuple in the microseconds between the two checks. Its pre-update values
            // are unknown, so nothing can be undone safely: report it so that the caller logs it.
            return (.failed("the connection was replaced while it was being changed"), nil)
        }
        return (.done, after)
    }
}

/// Receives parsed entries from C.
struct FlowSink {
    var now: Double
    var body: (ConntrackEvent) -> Void
    /// For a dump: `now` is read again every 128 entries. A dump of a million entries takes seconds, and each
    /// entry's remaining timeout is as of when the kernel wrote it: stamped with the dump's start, every later entry
    /// would seem to have lost seconds, and the reconciliation would rewrite (and re-index) nearly all of them.
    /// For events, `now` is read for every event (``ConntrackEvents/poll(timeoutMs:_:)``): an event stamped
    /// before it happened (with the time the wait began) would look older than a reconciliation dump that missed
    /// the entry, and the reconciliation would drop a live entry.
    var clock: MonotonicClock? = nil
    var restampEvery = 128
    var sinceClockRead = 0
}

/// The one place where the shim's message types and presence bits become ``ConntrackEvent``.
let flowSinkCallback: ctd_flow_cb = { context, type, raw in
    guard let context, let raw else { return }
    let sink = context.assumingMemoryBound(to: FlowSink.self)
    let kind: ConntrackEvent.Kind
    switch type {
    case CTD_MSG_NEW: kind = .new
    case CTD_MSG_DESTROY: kind = .destroy
    case CTD_MSG_UPDATE: kind = .update
    default: kind = .listed
    }
    if let clock = sink.pointee.clock {
        sink.pointee.sinceClockRead += 1
        if sink.pointee.sinceClockRead >= sink.pointee.restampEvery {
            sink.pointee.sinceClockRead = 0
            sink.pointee.now = clock.now()
        }
    }
    let fields = ConntrackEvent.Fields(shimBits: raw.pointee.has)
    sink.pointee.body(ConntrackEvent(kind: kind, fields: fields, flow: Flow(raw.pointee, now: sink.pointee.now)))
}

extension ConntrackEvent.Fields {
    /// The shim's CTD_HAS_* bits.
    init(shimBits bits: UInt16) {
        var f: ConntrackEvent.Fields = []
        if bits & UInt16(CTD_HAS_COUNTERS) != 0 { f.insert(.counters) }
        if bits & UInt16(CTD_HAS_MARK) != 0 { f.insert(.mark) }
        if bits & UInt16(CTD_HAS_TIMEOUT) != 0 { f.insert(.timeout) }
        if bits & UInt16(CTD_HAS_STATUS) != 0 { f.insert(.status) }
        if bits & UInt16(CTD_HAS_STATE) != 0 { f.insert(.state) }
        if bits & UInt16(CTD_HAS_TIMESTAMP) != 0 { f.insert(.start) }
        if bits & UInt16(CTD_HAS_LABELS) != 0 { f.insert(.labels) }
        if bits & UInt16(CTD_HAS_HELPER) != 0 { f.insert(.helper) }
        self = f
    }
}

extension Flow {
    init(_ c: ctd_flow, now: Double) {
        let v6 = c.l3 == 10
        self.init(
            id: c.id, l3proto: c.l3, l4proto: c.l4, tcpState: c.tcp_state,
            icmpType: c.icmp_type, icmpCode: c.icmp_code, icmpID: c.icmp_id, zone: c.zone,
            origSource: IPAddress(high: c.orig_src_hi, low: c.orig_src_lo, isIPv6: v6),
            origDestination: IPAddress(high: c.orig_dst_hi, low: c.orig_dst_lo, isIPv6: v6),
            replySource: IPAddress(high: c.repl_src_hi, low: c.repl_src_lo, isIPv6: v6),
            replyDestination: IPAddress(high: c.repl_dst_hi, low: c.repl_dst_lo, isIPv6: v6),
            origSourcePort: c.orig_sport, origDestinationPort: c.orig_dport,
            replySourcePort: c.repl_sport, replyDestinationPort: c.repl_dport,
            mark: c.mark, timeout: c.timeout, timeoutObservedAt: now, status: c.status,
            origBytes: c.orig_bytes, origPackets: c.orig_packets, replyBytes: c.repl_bytes,
            replyPackets: c.repl_packets, start: c.has & UInt16(CTD_HAS_TIMESTAMP) != 0 ? Double(c.start_ns) / 1e9 : 0,
            labelsLow: c.labels_lo, labelsHigh: c.labels_hi, helper: Flow.helper(c.helper))
    }

    /// The shim's NUL-terminated name; most entries have none, which costs one byte compare.
    private static func helper<T>(_ raw: T) -> HelperName {
        withUnsafeBytes(of: raw) { bytes in
            guard bytes.first != 0, let end = bytes.firstIndex(of: 0) else { return HelperName.none }
            return HelperName(String(decoding: bytes[..<end], as: UTF8.self))
        }
    }

    var cFlow: ctd_flow {
        var c = ctd_flow()
        c.id = id
        c.l3 = l3proto
        c.l4 = l4proto
        c.zone = zone
        c.orig_src_hi = origSource.high
        c.orig_src_lo = origSource.low
        c.orig_dst_hi = origDestination.high
        c.orig_dst_lo = origDestination.low
        c.orig_sport = origSourcePort
        c.orig_dport = origDestinationPort
        c.icmp_type = icmpType
        c.icmp_code = icmpCode
        c.icmp_id = icmpID
        return c
    }
}

/// The conntrack event subscription.
final class ConntrackEvents {
    private let handle: OpaquePointer

    private let clock: MonotonicClock

    package init(receiveBuffer: Int, clock: MonotonicClock) throws {
        self.clock = clock
        var err: Int32 = 0
        guard let h = ctd_events_open(UInt32(clamping: receiveBuffer), &err) else {
            throw KernelConntrack.Error(errno: -err, operation: "conntrack event subscription")
        }
        handle = h
    }

    package var grantedReceiveBuffer: Int { Int(ctd_events_rcvbuf(handle)) }

    /// Discards whatever is queued (after ENOBUFS, before the resync dump).
    @discardableResult
    package func drain() -> Int { Int(ctd_events_drain(handle)) }

    /// Waits up to `timeoutMs` for events (or ``wake()``) and hands each queued event to `body`.
    /// - Returns: `complete` is false when events were lost (resync); `readingFrom` is the monotonic time from which
    ///   on the kernel's queue was read (every change made before it has been handed over), or `nil` after a
    ///   timeout.
    package func poll(timeoutMs: Int32, _ body: (ConntrackEvent) -> Void) throws -> (
        complete: Bool, readingFrom: Double?
    ) {
        try withoutActuallyEscaping(body) { body in
            var sink = FlowSink(now: clock.now(), body: body, clock: clock, restampEvery: 1)
            var readingFrom = 0.0
            let rc = withUnsafeMutablePointer(to: &sink) {
                ctd_events_poll(handle, timeoutMs, flowSinkCallback, $0, &readingFrom)
            }
            if rc == -ENOBUFS { return (false, nil) }
            if rc < 0 { throw KernelConntrack.Error(errno: -rc, operation: "conntrack events") }
            return (true, readingFrom > 0 ? readingFrom : nil)
        }
    }

    /// Makes a waiting ``poll(timeoutMs:_:)`` return at once; any thread.
    package func wake() { ctd_events_wake(handle) }

    deinit { ctd_events_close(handle) }
}
