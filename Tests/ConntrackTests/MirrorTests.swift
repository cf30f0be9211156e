import Foundation
import Logging
import Synchronization
import Testing

@testable import Conntrack
import CtdRuntime

/// The mirror alone, fed typed events as the kernel adapter would: no kernel needed.
struct MirrorTests {
    let mirror = ConntrackMirror(
        hide: HidePolicy(blocks: [CIDRBlock("192.0.2.0/24")!]), clock: MonotonicClock { 100 }, logger: Logger(label: "t"))

    func flow(_ id: UInt32, _ src: String, sport: UInt16 = 1000, mark: UInt32 = 0) -> Flow {
        Flow(
            id: id, l4proto: 17, origSource: IPAddress(src)!, origDestination: IPAddress("198.51.100.1")!,
            origSourcePort: sport, origDestinationPort: 53, mark: mark)
    }

    @Test func apply_whenNewUpdateDestroy_followsTheEvents() {
        mirror.apply(events: [
            ConntrackEvent(kind: .new, fields: .all, flow: flow(1, "10.0.0.1")),
            ConntrackEvent(kind: .new, fields: .all, flow: flow(2, "10.0.0.2")),
        ])
        #expect(mirror.statistics.entries == 2)
        mirror.apply(events: [ConntrackEvent(kind: .update, fields: [.mark], flow: flow(1, "10.0.0.1", mark: 7))])
        guard case .found(let updated) = mirror.lookup(ids: [1])[0] else {
            Issue.record("id 1 is gone")
            return
        }
        #expect(updated.mark == 7)
        mirror.apply(events: [ConntrackEvent(kind: .destroy, fields: [], flow: flow(2, "10.0.0.2"))])
        #expect(mirror.statistics.entries == 1)
        guard case .missing = mirror.lookup(ids: [2])[0] else {
            Issue.record("id 2 is still there")
            return
        }
    }

    /// A bulk kill drops the entries before the kernel has deleted them; those the kernel could not delete come back
    /// as they were, with their index keys, and a pinned snapshot keeps the table it was taken of.
    @Test func restore_afterABulkRemoval_bringsBackExactlyTheKeptEntries() {
        let all: [Flow] = (0..<3000).map { (i: Int) -> Flow in
            flow(UInt32(10 + i), "10.1.\(i / 250).\(i % 250)", sport: UInt16(2000 + i), mark: UInt32(i % 7))
        }
        mirror.apply(events: all.map { ConntrackEvent(kind: .new, fields: .all, flow: $0) })
        let pinned = mirror.snapshot()
        let victims = Array(all[500..<2500])
        mirror.remove(victims)
        #expect(mirror.statistics.entries == 1000)
        let kept: [Flow] = victims.indices.filter { $0 % 10 == 0 }.map { victims[$0] }
        mirror.restore(kept)
        let snap = mirror.snapshot()
        #expect(snap.flows.count == 1000 + kept.count)
        #expect(snap.indexes.matches(snap.flows))
        let present = Set(snap.flows.map { $0.id })
        #expect(kept.allSatisfy { present.contains($0.id) })
        #expect(victims.filter { !present.contains($0.id) }.count == victims.count - kept.count)
        #expect(mirror.lookup(keys: kept.map(FlowKey.init)).allSatisfy { $0 != nil })
        #expect(pinned.flows.count == 3000 && pinned.indexes.matches(pinned.flows))
        // Restoring what is already there changes nothing.
        mirror.restore(kept)
        #expect(mirror.statistics.entries == 1000 + kept.count)
    }

    @Test func apply_whenUpdateLacksAField_keepsItsLastValue() {
        mirror.apply(events: [ConntrackEvent(kind: .new, fields: .all, flow: flow(1, "10.0.0.1", mark: 5))])
        // An update that carries no mark (e.g. a timeout refresh) must not reset the mark to 0.
        mirror.apply(events: [ConntrackEvent(kind: .update, fields: [.timeout], flow: flow(1, "10.0.0.1", mark: 0))])
        guard case .found(let f) = mirror.lookup(ids: [1])[0] else {
            Issue.record("id 1 is gone")
            return
        }
        #expect(f.mark == 5)
    }

    func found(_ id: UInt32) -> Flow? {
        if case .found(let f) = mirror.lookup(ids: [id])[0] { return f }
        return nil
    }

    @Test func labelsAndHelper_followEachMessage_andNoLabelsInAnUpdateMeansNone() {
        var f = flow(1, "10.0.0.1")
        f.labelsLow = 0b11
        f.labelsHigh = 1 << 36
        f.helper = HelperName("ftp")
        mirror.apply(events: [ConntrackEvent(kind: .new, fields: .all, flow: f)])
        #expect(found(1)?.labelBits == [0, 1, 100] && found(1)?.helper.name == "ftp")
        // A message that does not carry them (a DESTROY-like partial) keeps them.
        mirror.apply(events: [ConntrackEvent(kind: .update, fields: [.mark], flow: flow(1, "10.0.0.1", mark: 3))])
        #expect(found(1)?.labelBits == [0, 1, 100] && found(1)?.helper.name == "ftp")
        // The kernel's UPDATE after the last label went: labels present, all zero.
        mirror.apply(events: [ConntrackEvent(kind: .update, fields: [.labels, .helper], flow: flow(1, "10.0.0.1"))])
        #expect(found(1)?.labelBits == [] && found(1)?.helper == HelperName.none)
    }

    @Test func start_isTheNewEventsTimeWhileTimestampsAreOn_untilADumpBringsTheKernels() {
        mirror.apply(events: [ConntrackEvent(kind: .new, fields: .all, flow: flow(1, "10.0.0.1"))])
        #expect(found(1)?.start == 0, "timestamps off: no start is made up")
        mirror.setTimestamps(true)
        let before = Date().timeIntervalSince1970
        mirror.apply(events: [ConntrackEvent(kind: .new, fields: .all, flow: flow(2, "10.0.0.2"))])
        let estimate = found(2)?.start ?? 0
        #expect(estimate >= before && estimate <= Date().timeIntervalSince1970)
        // An update (no start in it) keeps the estimate; the dump's exact value replaces it.
        mirror.apply(events: [ConntrackEvent(kind: .update, fields: .all, flow: flow(2, "10.0.0.2", mark: 1))])
        #expect(found(2)?.start == estimate)
        var dumped = flow(2, "10.0.0.2", mark: 1)
        dumped.start = before - 5.25
        let epoch = mirror.beginReconcile()
        mirror.reconcile(chunk: [dumped, flow(1, "10.0.0.1")][...], epoch: epoch, interval: 1)
        #expect(found(2)?.start == before - 5.25)
        #expect(found(1)?.start == 0)
    }

    @Test func lookup_whenTwoEntriesShareAnID_isAmbiguousUntilOneEnds() {
        mirror.apply(events: [
            ConntrackEvent(kind: .new, fields: .all, flow: flow(9, "10.0.0.1", sport: 1)),
            ConntrackEvent(kind: .new, fields: .all, flow: flow(9, "10.0.0.2", sport: 2)),
        ])
        guard case .ambiguous = mirror.lookup(ids: [9])[0] else {
            Issue.record("a shared id was not ambiguous")
            return
        }
        mirror.apply(events: [ConntrackEvent(kind: .destroy, fields: [], flow: flow(9, "10.0.0.1", sport: 1))])
        guard case .found(let survivor) = mirror.lookup(ids: [9])[0] else {
            Issue.record("the survivor was not found")
            return
        }
        #expect(survivor.origSource.description == "10.0.0.2")
    }

    @Test func apply_whenHidden_neverEntersAndSetHiddenBlocksDropsNewlyHidden() {
        mirror.apply(events: [
            ConntrackEvent(kind: .new, fields: .all, flow: flow(1, "192.0.2.9")),
            ConntrackEvent(kind: .new, fields: .all, flow: flow(2, "10.0.0.2")),
            ConntrackEvent(kind: .new, fields: .all, flow: flow(3, "10.9.0.3")),
        ])
        #expect(mirror.statistics.entries == 2)
        let before = mirror.snapshot().generation
        mirror.setHiddenBlocks([CIDRBlock("10.9.0.0/16")!])
        #expect(mirror.snapshot().flows.map(\.id) == [2])
        #expect(mirror.snapshot().generation > before)
    }

    @Test func snapshot_whenTableChangesLater_keepsItsOwnGeneration() {
        mirror.apply(events: [ConntrackEvent(kind: .new, fields: .all, flow: flow(1, "10.0.0.1"))])
        let old = mirror.snapshot()
        mirror.apply(events: [ConntrackEvent(kind: .new, fields: .all, flow: flow(2, "10.0.0.2"))])
        #expect(old.flows.count == 1)
        #expect(mirror.snapshot().flows.count == 2)
        #expect(mirror.snapshot().generation != old.generation)
        #expect(old.monotonic == 100)
    }
}

struct ChangeFeedTests {
    let mirror = ConntrackMirror(hide: HidePolicy(), changeCapacity: 16, logger: Logger(label: "t"))

    func event(_ kind: ConntrackEvent.Kind, _ id: UInt32, mark: UInt32 = 0) -> ConntrackEvent {
        ConntrackEvent(
            kind: kind, fields: .all,
            flow: Flow(
                id: id, origSource: IPAddress("10.0.0.\(id % 250)")!, origDestination: IPAddress("10.1.0.1")!,
                origSourcePort: UInt16(id), mark: mark))
    }

    @Test func read_returnsTheChangesInOrder_andOverflowsWhenTheRingMovedOn() {
        let cursor = mirror.changes.head
        mirror.apply(events: [event(.new, 1), event(.update, 1, mark: 5), event(.update, 1, mark: 5), event(.destroy, 1)])
        let batch = mirror.changes.read(after: cursor, limit: 100)
        #expect(batch.changes.map(\.kind) == [.new, .updated, .destroyed], "an update that changes nothing is no change")
        #expect(batch.changes[1].flow.mark == 5 && !batch.overflow)
        #expect(mirror.changes.read(after: batch.next, limit: 100).changes.isEmpty)
        mirror.apply(events: (2...40).map { event(.new, UInt32($0)) })
        #expect(mirror.changes.read(after: batch.next, limit: 100).overflow)
    }

    @Test func wait_isAnsweredWhenAChangeComes_orAtItsDeadline() {
        let got = DispatchSemaphore(value: 0)
        let kinds = Mutex<[ChangeFeed.Kind]>([])
        mirror.changes.wait(after: mirror.changes.head, limit: 10, timeout: 30) { batch in
            kinds.withLock { $0 = batch.changes.map(\.kind) }
            got.signal()
        }
        #expect(mirror.changes.waiting == 1)
        mirror.apply(events: [event(.new, 7)])
        got.wait()
        #expect(kinds.withLock { $0 } == [.new])
        let empty = DispatchSemaphore(value: 0)
        mirror.changes.wait(after: mirror.changes.head, limit: 10, timeout: 0.2) { batch in
            #expect(batch.changes.isEmpty)
            empty.signal()
        }
        empty.wait()
        #expect(mirror.changes.waiting == 0)
    }
}

struct ChangeFeedCursorTests {
    @Test func read_ofACursorBeyondTheHead_isOverflowNotATrap() {
        let feed = ChangeFeed(capacity: 16)
        #expect(feed.read(after: UInt64.max, limit: 10).overflow)
        #expect(feed.read(after: feed.head + 1, limit: 10).overflow)
        #expect(!feed.read(after: feed.head, limit: 10).overflow)
    }

    @Test func reset_tellsEvenACaughtUpCursorThatChangesWereLost() {
        let feed = ChangeFeed(capacity: 16)
        let cursor = feed.head
        feed.reset()
        #expect(feed.read(after: cursor, limit: 10).overflow)
        #expect(!feed.read(after: feed.head, limit: 10).overflow)
    }
}
