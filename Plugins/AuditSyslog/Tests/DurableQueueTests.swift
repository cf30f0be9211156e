import Foundation
import Synchronization
import SyslogForwarding
import Testing

// The on-disk queue: order, persistence across reopen, the two full policies, a torn tail after a crash.

func syslogTestDirectory() throws -> String {
    var template = Array("/tmp/auditsyslog-test.XXXXXX".utf8CString)
    guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw TransportError("mkdtemp failed")
    }
    return String(cString: p)
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Test func queue_keepsOrderAcrossReopen_andForgetsWhatWasRemoved() throws {
    let dir = try syslogTestDirectory()
    let path = dir + "/q"
    do {
        let q = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
        var first: UInt64 = 0
        _ = try q.append(count: 3, policy: .refuse) { seq in
            if first == 0 { first = seq }
            return bytes("m\(seq)")
        }
        #expect(first == 1)
        #expect(q.peek(max: 10).map(\.seq) == [1, 2, 3])
        try q.remove(through: 1)
        #expect(q.count == 2)
    }
    // Each reopen below is a new process's: the queue before it is closed first (one process per queue).
    do {
        let reopened = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
        #expect(reopened.peek(max: 10).map { String(decoding: $0.payload, as: UTF8.self) } == ["m2", "m3"])
        #expect(reopened.nextSequence == 4)
        try reopened.remove(through: 3)
        #expect(reopened.count == 0)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.size] as? Int) == 0)
        #expect(((attributes[.posixPermissions] as? Int) ?? 0) & 0o077 == 0)
    }
    // Sequence numbers keep growing after the queue was emptied and reopened.
    let again = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
    #expect(again.nextSequence == 4)
    _ = try again.append(count: 1, policy: .refuse) { _ in bytes("m4") }
    #expect(again.peek(max: 1).first?.seq == 4)
}

@Test func queue_whenFullWithRefuse_throwsAndKeepsEverything() throws {
    let q = try DurableQueue(path: try syslogTestDirectory() + "/q", maxBytes: 1 << 20, maxEvents: 3)
    _ = try q.append(count: 2, policy: .refuse) { _ in bytes("x") }
    #expect(throws: DurableQueue.QueueError.self) {
        _ = try q.append(count: 2, policy: .refuse) { _ in bytes("y") }
    }
    #expect(q.count == 2 && q.nextSequence == 3)
    // Outcomes of admitted actions are exempt.
    _ = try q.append(count: 2, policy: .refuse, exempt: true) { _ in bytes("z") }
    #expect(q.count == 4)
}

@Test func queue_whenFullWithDropOldest_dropsAndCounts() throws {
    let path = try syslogTestDirectory() + "/q"
    do {
        let q = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 3)
        _ = try q.append(count: 5, policy: .dropOldest) { seq in bytes("m\(seq)") }
        #expect(q.peek(max: 10).map(\.seq) == [3, 4, 5])
        #expect(q.dropped == 2)
        let r = try q.append(count: 1, policy: .dropOldest) { seq in bytes("m\(seq)") }
        #expect(r.dropped == 1 && q.dropped == 3)
    }
    let reopened = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 3)
    #expect(reopened.peek(max: 10).map(\.seq) == [4, 5, 6])
}

@Test func queue_boundsBytesToo() throws {
    let q = try DurableQueue(path: try syslogTestDirectory() + "/q", maxBytes: 65536, maxEvents: 1000)
    let big = [UInt8](repeating: 65, count: 30000)
    _ = try q.append(count: 2, policy: .refuse) { _ in big }
    #expect(throws: DurableQueue.QueueError.self) { _ = try q.append(count: 1, policy: .refuse) { _ in big } }
    _ = try q.append(count: 1, policy: .dropOldest) { _ in big }
    #expect(q.count == 2 && q.dropped == 1 && q.bytes <= 65536)
}

@Test func queue_afterATornAppend_cutsTheTailAndKeepsTheGoodRecords() throws {
    let path = try syslogTestDirectory() + "/q"
    do {
        let q = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
        _ = try q.append(count: 2, policy: .refuse) { seq in bytes("record \(seq)") }
    }
    // A crash in the middle of the third append: its header and half its payload reached the file.
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try handle.seekToEnd()
    try handle.write(
        contentsOf: Data([0x43, 0x51, 100, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]) + Data("half".utf8))
    try handle.close()
    do {
        let q = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
        #expect(q.peek(max: 10).map(\.seq) == [1, 2])
        _ = try q.append(count: 1, policy: .refuse) { seq in bytes("record \(seq)") }
    }
    let again = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
    #expect(
        again.peek(max: 10).map { String(decoding: $0.payload, as: UTF8.self) } == ["record 1", "record 2", "record 3"])
}

@Test func queue_aDamagedRecord_endsTheQueueThere() throws {
    let path = try syslogTestDirectory() + "/q"
    do {
        let q = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
        _ = try q.append(count: 3, policy: .refuse) { seq in bytes("record \(seq)") }
    }
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    data[18 + 8 + 18 + 3] ^= 0xFF  // a payload byte of record 2
    try data.write(to: URL(fileURLWithPath: path))
    let q = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 100)
    #expect(q.peek(max: 10).map(\.seq) == [1])
}

@Test func queue_manyRecords_compactsAndStaysInOrder() throws {
    let path = try syslogTestDirectory() + "/q"
    do {
        let q = try DurableQueue(path: path, maxBytes: 1 << 24, maxEvents: 100_000)
        _ = try q.append(count: 20_000, policy: .refuse) { seq in bytes("r\(seq)") }
        try q.remove(through: 15_000)
    }
    let reopened = try DurableQueue(path: path, maxBytes: 1 << 24, maxEvents: 100_000)
    let left = reopened.peek(max: 100_000).map(\.seq)
    #expect(left == Array(15_001...20_000))
}

/// A transport that refuses the first `failures` batches, then takes everything.
final class FlakyTransport: SyslogTransport, @unchecked Sendable {
    let destination = "test:flaky"
    let lock = NSLock()
    var failures: Int
    var received: [String] = []
    var batches = 0
    init(failures: Int) { self.failures = failures }
    func deliver(_ messages: [[UInt8]], awaitingProof: Int) -> DeliveryResult {
        lock.withLock {
            batches += 1
            if failures > 0 {
                failures -= 1
                return DeliveryResult(proven: 0, read: 0, error: "collector away", transmitted: 0..<messages.count)
            }
            received += messages.map { String(decoding: $0, as: UTF8.self) }
            return DeliveryResult(proven: messages.count, read: 0, error: nil, transmitted: 0..<messages.count)
        }
    }
}

@Test func forwarder_afterFailures_deliversEverythingOnceInOrder() throws {
    let q = try DurableQueue(path: try syslogTestDirectory() + "/q", maxBytes: 1 << 22, maxEvents: 10_000)
    let transport = FlakyTransport(failures: 3)
    let lines = NSLock()
    nonisolated(unsafe) var logged: [String] = []
    let f = SyslogForwarder(queue: q, transport: transport, batchEvents: 100, retryMaxSeconds: 0.2) { _, line in
        lines.withLock { logged.append(line) }
    }
    _ = try q.append(count: 1000, policy: .refuse) { seq in Array("m\(seq)".utf8) }
    f.start()
    f.notify()
    // Bounded wait for the condition, not a timing assumption.
    let deadline = Date().addingTimeInterval(60)
    while q.count > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    #expect(f.stop(drainSeconds: 1) == 0)
    #expect(transport.received == (1...1000).map { "m\($0)" })
    let status = f.currentStatus
    // The first batch went out four times: three retransmissions of 100 records.
    #expect(status.delivered == 1000 && status.resent == 300)
    #expect(lines.withLock { logged }.count == 2)  // one line when it went away, one when it came back
}

/// A transport like TLS: what it sends is only read; the next call proves it (or, after a "restart" of the
/// collector, cannot, and sends it again).
final class ProvingTransport: SyslogTransport, @unchecked Sendable {
    let destination = "test:proving"
    let lock = NSLock()
    var restartBeforeNextProof = false
    var received: [String] = []
    func deliver(_ messages: [[UInt8]], awaitingProof: Int) -> DeliveryResult {
        lock.withLock {
            var proven = awaitingProof
            if awaitingProof > 0 && restartBeforeNextProof {
                restartBeforeNextProof = false
                proven = 0
            }
            received += messages[proven...].map { String(decoding: $0, as: UTF8.self) }
            return DeliveryResult(
                proven: proven, read: messages.count - proven, error: nil, transmitted: proven..<messages.count)
        }
    }
}

@Test func forwarder_keepsAReadBatchQueuedUntilTheNextConnectionProvesIt() throws {
    let q = try DurableQueue(path: try syslogTestDirectory() + "/q", maxBytes: 1 << 22, maxEvents: 10_000)
    let transport = ProvingTransport()
    let f = SyslogForwarder(queue: q, transport: transport, batchEvents: 100, retryMaxSeconds: 0.2) { _, _ in }
    _ = try q.append(count: 250, policy: .refuse) { seq in Array("m\(seq)".utf8) }
    f.start()
    f.notify()
    var deadline = Date().addingTimeInterval(60)
    while q.count > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    #expect(q.count == 0)
    #expect(transport.lock.withLock { transport.received } == (1...250).map { "m\($0)" })
    // The collector restarts between reading the next batch and the proof: the batch is sent again.
    transport.lock.withLock { transport.restartBeforeNextProof = true }
    _ = try q.append(count: 10, policy: .refuse) { seq in Array("m\(seq)".utf8) }
    f.notify()
    deadline = Date().addingTimeInterval(60)
    while q.count > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    #expect(f.stop(drainSeconds: 1) == 0)
    let tail = (251...260).map { "m\($0)" }
    #expect(transport.lock.withLock { transport.received } == (1...250).map { "m\($0)" } + tail + tail)
    #expect(f.currentStatus.delivered == 260 && f.currentStatus.resent == 10)
}

@Test func forwarder_whilePaused_startsNoDelivery_andResumeOrTheLimitEndsThePause() throws {
    let q = try DurableQueue(path: try syslogTestDirectory() + "/q", maxBytes: 1 << 22, maxEvents: 10_000)
    let transport = FlakyTransport(failures: 0)
    let f = SyslogForwarder(queue: q, transport: transport, batchEvents: 100, retryMaxSeconds: 0.2) { _, _ in }
    f.start()
    // Paused for an hour: whatever the machine's load, nothing may go out until resume().
    f.pause(atMost: 3600)
    _ = try q.append(count: 50, policy: .refuse) { seq in Array("m\(seq)".utf8) }
    f.notify()
    Thread.sleep(forTimeInterval: 0.5)
    #expect(transport.lock.withLock { transport.batches } == 0 && q.count == 50)
    f.resume()
    var deadline = Date().addingTimeInterval(60)
    while q.count > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    #expect(transport.lock.withLock { transport.received } == (1...50).map { "m\($0)" })
    // A pause nobody ends (the action's outcomes never came) ends by itself.
    f.pause(atMost: 0.3)
    _ = try q.append(count: 5, policy: .refuse) { seq in Array("m\(seq)".utf8) }
    f.notify()
    deadline = Date().addingTimeInterval(60)
    while q.count > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    #expect(q.count == 0)
    // A stop ends a pause too, and drains.
    f.pause(atMost: 3600)
    _ = try q.append(count: 5, policy: .refuse) { seq in Array("m\(seq)".utf8) }
    #expect(f.stop(drainSeconds: 30) == 0)
    #expect(transport.lock.withLock { transport.received } == (1...60).map { "m\($0)" })
}

/// Counts thread-exit destructors of ``ThreadExitTransport``'s key: they run as the forwarder's thread ends.
private let threadExitsSeen = Atomic<Int>(0)

/// Delivers everything, and leaves a thread-specific value on the calling thread (as OpenSSL does on the TLS
/// transport's thread), whose destructor runs when that thread exits.
private final class ThreadExitTransport: SyslogTransport, @unchecked Sendable {
    let destination = "test:thread-exit"
    let key: pthread_key_t

    init() {
        var k = pthread_key_t()
        pthread_key_create(&k) { _ in threadExitsSeen.add(1, ordering: .sequentiallyConsistent) }
        key = k
    }

    func deliver(_ messages: [[UInt8]], awaitingProof: Int) -> DeliveryResult {
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1))
        return DeliveryResult(proven: messages.count, read: 0, error: nil, transmitted: 0..<messages.count)
    }
}

/// stop() returns only when the thread has ended, its thread-exit destructors included: the process may exit
/// right after, and OpenSSL's exit cleanup frees the lock its thread destructor takes (a crash seen in CI).
@Test func forwarder_stop_returnsAfterTheThreadAndItsExitDestructorsHaveRun() throws {
    let q = try DurableQueue(path: try syslogTestDirectory() + "/q", maxBytes: 1 << 20, maxEvents: 100)
    let f = SyslogForwarder(queue: q, transport: ThreadExitTransport(), batchEvents: 10, retryMaxSeconds: 0.2) {
        _, _ in
    }
    f.start()
    _ = try q.append(count: 3, policy: .refuse) { seq in Array("m\(seq)".utf8) }
    f.notify()
    let deadline = Date().addingTimeInterval(60)
    while q.count > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
    #expect(q.count == 0)
    #expect(threadExitsSeen.load(ordering: .sequentiallyConsistent) == 0)
    #expect(f.stop(drainSeconds: 5) == 0)
    #expect(threadExitsSeen.load(ordering: .sequentiallyConsistent) == 1)
    // A second stop, and a stop of a forwarder never started, return at once.
    #expect(f.stop(drainSeconds: 5) == 0)
    let idle = SyslogForwarder(queue: q, transport: ThreadExitTransport(), batchEvents: 10, retryMaxSeconds: 0.2) {
        _, _ in
    }
    #expect(idle.stop(drainSeconds: 5) == 0)
}

@Test func queueFile_hasTheDocumentedRecordLayout() throws {
    let path = try syslogTestDirectory() + "/q"
    let q = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 10)
    _ = try q.append(count: 1, policy: .refuse) { _ in Array("123456789".utf8) }
    let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    // "CQ", length 9, seq 1, then Python's zlib.crc32(struct.pack('<Q', 1) + b'123456789') = 1672746870.
    let crc = UInt32(1_672_746_870)
    let expected: [UInt8] =
        [0x43, 0x51, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        + (0..<4).map { UInt8(truncatingIfNeeded: crc >> (8 * UInt32($0))) } + Array("123456789".utf8)
    #expect(data == expected)
}

/// One process per queue: a second opener (another ctd, or `ctd plugins list` beside a running one) is refused with
/// a sentence instead of becoming a second sender; once the first closes, the queue opens again.
@Test func queue_openedTwice_isRefusedUntilTheFirstCloses() throws {
    let path = try syslogTestDirectory() + "/q"
    var first: DurableQueue? = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 10)
    _ = try first!.append(count: 1, policy: .refuse) { _ in Array("kept".utf8) }
    #expect {
        _ = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 10)
    } throws: { error in
        "\(error)".contains("is in use by another process")
    }
    first = nil
    let again = try DurableQueue(path: path, maxBytes: 1 << 20, maxEvents: 10)
    #expect(again.count == 1)
}
