import Foundation
import Logging
import Testing

@testable import Conntrack
import CtdRuntime

/// Against the real kernel table. `make test` runs this suite inside `unshare -n` with CTD_KERNEL_TESTS=1; there it
/// must run and fails (never skips) when the process is not in a private, empty network namespace.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["CTD_KERNEL_TESTS"] == "1"))
struct KernelIntegration {
    let kernel = KernelConntrack()

    init() throws {
        let links = try shell("ip -o link")
        try #require(
            links.split(separator: "\n").count == 1 && links.contains(" lo:"),
            "kernel tests must run in a private network namespace (unshare -n); links: \(links)")
        _ = try shell("conntrack -F 2>/dev/null || true")
    }

    /// Runs a shell command and returns its standard output (popen: Foundation's Process can hang in tests here).
    @discardableResult
    func shell(_ command: String) throws -> String {
        guard let pipe = popen(command, "r") else { throw KernelConntrack.Error(errno: errno, operation: "popen") }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, pipe)
            if n <= 0 { break }
            output.append(contentsOf: buffer[0..<n])
        }
        pclose(pipe)
        return String(decoding: output, as: UTF8.self)
    }

    func dumpAll() throws -> [Flow] {
        var flows: [Flow] = []
        try kernel.dump { flows.append($0) }
        return flows
    }

    /// Deletes the entry of `src` and creates the same tuple again until it gets an id other than `stale`'s. The
    /// kernel derives ids from the entry's memory slot, so fillers created in between take the freed slot.
    func reinsertUnderNewID(_ stale: Flow, _ src: String, _ dst: String, mark: Int = 0) throws -> Flow {
        for round in 0..<10 {
            try shell("conntrack -D -p udp -s \(src) 2>/dev/null")
            for i in 0..<(round + 1) * 4 {
                try insertUDP("10.250.\(round).\(i + 1)", "10.250.255.1", sport: 9, dport: 9)
            }
            try insertUDP(src, dst, sport: 1111, dport: 53, mark: mark)
            try shell("conntrack -D -p udp -d 10.250.255.1 2>/dev/null")
            if let fresh = try dumpAll().first(where: { $0.origSource.description == src }), fresh.id != stale.id {
                return fresh
            }
        }
        throw KernelConntrack.Error(errno: EEXIST, operation: "the kernel kept giving \(src) its old id")
    }

    func insertUDP(_ src: String, _ dst: String, sport: Int, dport: Int, mark: Int = 0) throws {
        try shell(
            "conntrack -I -p udp -s \(src) -d \(dst) --sport \(sport) --dport \(dport) -t 300 -m \(mark) 2>/dev/null")
    }

    @Test func dump_whenEntriesInserted_matchesConntrackList() throws {
        try insertUDP("10.1.0.1", "10.1.0.2", sport: 1000, dport: 53, mark: 7)
        try insertUDP("fd00::1", "fd00::2", sport: 2000, dport: 53)
        try shell(
            "conntrack -I -p tcp -s 198.51.100.1 -d 203.0.113.9 --sport 40000 --dport 443 --state ESTABLISHED -t 300 -m 4294967295 2>/dev/null"
        )
        let flows = try dumpAll()
        #expect(flows.count == 3)
        let listed = try shell("conntrack -L -o id 2>/dev/null")
        for f in flows {
            #expect(listed.contains("id=\(f.id)"))
        }
        let tcp = try #require(flows.first { $0.l4proto == 6 })
        #expect(tcp.origSource.description == "198.51.100.1")
        #expect(tcp.origDestinationPort == 443)
        #expect(tcp.mark == 4_294_967_295)
        #expect(ConntrackNames.tcpState(tcp.tcpState) == "ESTABLISHED")
        let v6 = try #require(flows.first { $0.l3proto == 10 })
        #expect(v6.origSource.description == "fd00::1")
        #expect(v6.replySourcePort == 53)
        let marked = try #require(flows.first { $0.origSource.description == "10.1.0.1" })
        #expect(marked.mark == 7)
        #expect(marked.timeout > 290 && marked.timeout <= 300)
    }

    @Test func destroy_whenTupleReusedUnderNewID_leavesNewEntry() throws {
        try insertUDP("10.2.0.1", "10.2.0.2", sport: 1111, dport: 53)
        let stale = try #require(try dumpAll().first)
        let fresh = try reinsertUnderNewID(stale, "10.2.0.1", "10.2.0.2")
        try #require(fresh.id != stale.id, "the kernel kept reusing the id; cannot test")
        let outcome = try kernel.destroy([stale])
        #expect(outcome == [.gone])
        #expect(try dumpAll().map(\.id) == [fresh.id])
        try insertUDP("10.2.0.9", "10.2.0.2", sport: 1111, dport: 53)
        #expect(try kernel.destroy([fresh]) == [.done])
        #expect(try dumpAll().map(\.origSource.description) == ["10.2.0.9"])
    }

    @Test func update_whenIDStale_changesNothing() throws {
        try insertUDP("10.3.0.1", "10.3.0.2", sport: 1111, dport: 53, mark: 1)
        let stale = try #require(try dumpAll().first)
        // The kernel derives ids from the entry's address: a freed slot may come back with the same id.
        _ = try reinsertUnderNewID(stale, "10.3.0.1", "10.3.0.2", mark: 1)
        let (outcome, _) = try kernel.update(stale, mark: 99, timeout: nil)
        #expect(outcome == .gone)
        #expect(try dumpAll().first?.mark == 1)
        let fresh = try #require(try dumpAll().first)
        let (ok, after) = try kernel.update(fresh, mark: 99, timeout: 1234)
        #expect(ok == .done)
        #expect(after?.mark == 99)
        #expect(try shell("conntrack -L 2>/dev/null").contains("mark=99"))
    }

    @Test func destroy_whenBatchMixesLiveAndGone_reportsEach() throws {
        for i in 0..<300 { try insertUDP("10.4.\(i / 200).\(i % 200 + 1)", "10.4.9.9", sport: 1000 + i, dport: 53) }
        var flows = try dumpAll()
        #expect(flows.count == 300)
        var ghost = flows[0]
        ghost.id &+= 1
        flows.append(ghost)
        let outcomes = try kernel.destroy(flows)
        #expect(outcomes.filter { $0 == .done }.count == 300)
        #expect(outcomes.last == .gone)
        #expect(try dumpAll().isEmpty)
    }

    @Test func service_whenEntriesComeAndGo_mirrorFollowsEvents() throws {
        let mirror = ConntrackMirror(hide: HidePolicy(), logger: Logger(label: "test"))
        let service = ConntrackService(
            mirror: mirror, kernel: kernel, receiveBuffer: 4 << 20, counterInterval: 2, logger: Logger(label: "test"))
        try insertUDP("10.5.0.1", "10.5.0.2", sport: 1, dport: 53)
        try service.start()
        defer { service.stop() }
        #expect(mirror.statistics.entries == 1)
        try insertUDP("10.5.0.3", "10.5.0.4", sport: 2, dport: 53)
        #expect(waitUntil { mirror.statistics.entries == 2 })
        // 10.5.0.1 predates the subscription: the kernel sends no DESTROY event for it, a reconciliation dump
        // notices its end.
        try shell("conntrack -D -p udp -s 10.5.0.1 2>/dev/null")
        service.refreshCountersNow()
        #expect(waitUntil { mirror.statistics.entries == 1 })
        let left = mirror.snapshot().flows
        #expect(left.map(\.origSource.description) == ["10.5.0.3"])
        guard case .found = mirror.lookup(ids: [left[0].id])[0] else {
            Issue.record("lookup by id failed")
            return
        }
    }

    @Test func service_catchUp_returnsOnceEveryEarlierChangeIsInTheMirror() throws {
        let (mirror, service, table) = try following()
        defer { service.stop() }
        for i in 1...20 {
            try insertUDP("10.6.0.\(i)", "10.6.1.1", sport: 1000 + i, dport: 53)
            // No waiting: right after catchUp, the mirror holds the entry the kernel created before it.
            #expect(service.catchUp(timeout: 5))
            #expect(mirror.statistics.entries == i, "after insert \(i)")
        }
        try shell("conntrack -D -p udp -d 10.6.1.1 2>/dev/null")
        #expect(service.catchUp(timeout: 5))
        #expect(mirror.statistics.entries == 0)
        // An id the kernel created a moment ago is found by a lookup (which catches up when an id is missing).
        try insertUDP("10.6.0.99", "10.6.1.2", sport: 99, dport: 53)
        let listed = try shell("conntrack -L -p udp -d 10.6.1.2 -o id 2>/dev/null")
        let id = try #require(listed.split(separator: "id=").last.flatMap { UInt32($0.prefix { $0.isNumber }) })
        guard case .found(let flow) = table.lookup(id: id) else {
            Issue.record("a fresh id was not found")
            return
        }
        #expect(flow.origSource.description == "10.6.0.99")
        guard case .missing = table.lookup(id: id &+ 1) else {
            Issue.record("an unknown id was found")
            return
        }
    }

    @Test func table_destroy_deletesInTheKernelAndLeavesTheMirrorAtOnce() throws {
        let (mirror, service, table) = try following()
        defer { service.stop() }
        try insertUDP("10.7.0.1", "10.7.0.2", sport: 7, dport: 53)
        try insertUDP("10.7.0.3", "10.7.0.4", sport: 8, dport: 53)
        let listed = try shell("conntrack -L -p udp -s 10.7.0.1 -o id 2>/dev/null")
        let id = try #require(listed.split(separator: "id=").last.flatMap { UInt32($0.prefix { $0.isNumber }) })
        guard case .found(let flow) = table.lookup(id: id) else {
            Issue.record("the entry was not found")
            return
        }
        #expect(try table.destroy([flow]) == [.done])
        // No waiting for the DESTROY event: the table removed it from the mirror as part of the same operation.
        guard case .missing = mirror.lookup(ids: [id])[0] else {
            Issue.record("the mirror still holds the killed entry")
            return
        }
        #expect(try shell("conntrack -L -p udp -s 10.7.0.1 2>/dev/null").isEmpty)
        #expect(try shell("conntrack -L -p udp -s 10.7.0.3 2>/dev/null").contains("10.7.0.3"))
        #expect(try table.destroy([flow]) == [.gone])
    }

    struct Refused: Error {}

    /// The parts of a bulk kill (`destroy(_:parts:approve:)`): each part reaches the kernel only once approved, an
    /// entry not approved stays, and an `approve` that throws stops the kill there: the parts before it are gone
    /// from kernel and mirror, that part and the rest stay in both. At 300 entries the mirror drops them all at the
    /// start and must take back the ones that stayed; at 12 it drops each deleted part.
    @Test(arguments: [300, 12])
    func table_destroyInParts_deletesTheApprovedPartsBeforeARefusal(count: Int) throws {
        let (mirror, service, table) = try following()
        defer { service.stop() }
        for i in 0..<count { try insertUDP("10.8.\(i / 200).\(i % 200 + 1)", "10.8.9.9", sport: 2000 + i, dport: 53) }
        let ids = try dumpAll().map(\.id)
        try #require(ids.count == count)
        var flows: [Flow] = []
        #expect(waitUntil { table.lookup(ids: ids).allSatisfy { if case .found = $0 { true } else { false } } })
        for case .found(let f) in table.lookup(ids: ids) { flows.append(f) }
        try #require(flows.count == count)
        let third = count / 3
        let parts = [0..<third, third..<2 * third, 2 * third..<count]
        var asked: [Range<Int>] = []
        let result = table.destroy(flows, parts: parts) { part in
            asked.append(part)
            if part == parts[2] { throw Refused() }
            // One entry of the first part is not approved.
            return part.map { $0 != 1 }
        }
        #expect(asked == parts)
        #expect(result.stoppedBy is Refused)
        #expect(result.socketFailure == nil)
        let deleted = Set((0..<2 * third).filter { $0 != 1 })
        for i in flows.indices {
            #expect(result.outcomes[i] == (deleted.contains(i) ? .done : nil), "entry \(i)")
        }
        let left = Set(try dumpAll().map(\.id))
        #expect(left == Set(flows.indices.filter { !deleted.contains($0) }.map { flows[$0].id }))
        // The mirror, at once: the deleted entries gone, every other one as it was.
        for (i, found) in zip(flows.indices, mirror.lookup(ids: flows.map(\.id))) {
            switch found {
            case .found(let f): #expect(!deleted.contains(i) && FlowKey(f) == FlowKey(flows[i]), "entry \(i)")
            case .missing: #expect(deleted.contains(i), "entry \(i) is missing from the mirror")
            case .ambiguous: Issue.record("entry \(i) is ambiguous")
            }
        }
    }

    /// A mirror that follows the kernel, its event service (started: stop it) and the table over both.
    func following() throws -> (ConntrackMirror, ConntrackService, ConntrackTable) {
        let logger = Logger(label: "test")
        let mirror = ConntrackMirror(hide: HidePolicy(), logger: logger)
        let service = ConntrackService(
            mirror: mirror, kernel: kernel, receiveBuffer: 4 << 20, counterInterval: 2, logger: logger)
        try service.start()
        return (mirror, service, ConntrackTable(mirror: mirror, kernel: kernel, service: service, logger: logger))
    }

    func waitUntil(_ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(10)
        while Date() < end {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return condition()
    }
}
