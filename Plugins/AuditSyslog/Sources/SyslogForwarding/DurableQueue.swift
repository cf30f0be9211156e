import CSyslogTransport
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A bounded, fsync'd FIFO of messages on disk, for the time the collector is away.
///
/// Two files: `PATH` holds records appended in order, each `"CQ" len:u32 seq:u64 crc32:u32 payload` (little
/// endian; the CRC covers seq and payload); `PATH.head` holds the first sequence number not yet delivered (8
/// bytes and their CRC). ``append(count:policy:make:)`` returns after `fdatasync`; ``remove(through:)`` writes the
/// head and syncs it, and empties the log file when nothing is left. At open, records before the head are skipped
/// and a torn record at the end (a crash in the middle of an append) is cut off. Sequence numbers grow across
/// restarts, so a collector can tell a resent message from a new one.
///
/// Thread-safety: every method may be called from several threads; one lock serializes them.
public final class DurableQueue: @unchecked Sendable {
    /// What to do when an append would pass a bound.
    public enum FullPolicy: String, Sendable, CaseIterable {
        /// Refuse the append (the caller refuses the action: nothing happens unrecorded).
        case refuse
        /// Drop the oldest queued records until the new ones fit, and count them.
        case dropOldest = "drop_oldest"
    }

    public struct Record: Sendable, Equatable {
        public var seq: UInt64
        public var payload: [UInt8]
    }

    public struct QueueError: Error, CustomStringConvertible, Sendable {
        public var description: String
        public var isFull: Bool
    }

    public let path: String
    public let maxBytes: Int
    public let maxEvents: Int

    static let headerSize = 18
    private let lock = NSLock()
    private var fd: Int32
    private var headFD: Int32
    private var records: [Record] = []
    /// Index of the first live record in `records` (records before it are delivered; compacted lazily).
    private var first = 0
    private var liveBytes = 0
    private var fileSize = 0
    private var nextSeq: UInt64
    private var droppedCount: UInt64 = 0

    /// Opens (or creates, mode 0600) the queue at `path`.
    public init(path: String, maxBytes: Int, maxEvents: Int) throws {
        self.path = path
        self.maxBytes = maxBytes
        self.maxEvents = maxEvents
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.ioError("open the queue file \(path)") }
        headFD = open(path + ".head", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard headFD >= 0 else {
            close(fd)
            throw Self.ioError("open the queue head file \(path).head")
        }
        // One process per queue: two senders would deliver the same records and rewrite each other's head. The lock
        // is on the head file, which compaction never replaces; the kernel drops it when the process ends.
        guard flock(headFD, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let error =
                busy
                ? QueueError(
                    description:
                        "the queue \(path) is in use by another process (a running ctd): one process per queue; "
                        + "`ctd plugins list` can check this plugin only while that process is stopped",
                    isFull: false)
                : Self.ioError("lock the queue head file \(path).head")
            close(fd)
            close(headFD)
            throw error
        }
        nextSeq = 1
        do { try load() } catch {
            close(fd)
            close(headFD)
            throw error
        }
    }

    deinit {
        close(fd)
        close(headFD)
    }

    /// Queued records.
    public var count: Int { lock.withLock { records.count - first } }
    /// Bytes the queued records take on disk.
    public var bytes: Int { lock.withLock { liveBytes } }
    /// Records dropped by ``FullPolicy/dropOldest`` since the queue was opened.
    public var dropped: UInt64 { lock.withLock { droppedCount } }
    /// The sequence number the next record gets.
    public var nextSequence: UInt64 { lock.withLock { nextSeq } }

    /// Appends `count` records made by `make(seq)` (one write, one `fdatasync`); returns the first record's
    /// sequence number and how many older records were dropped to make room.
    /// - Throws: ``QueueError`` with `isFull` when the policy is `refuse` and the records do not fit, or when the
    ///   write fails (then nothing is queued).
    /// `exempt` records are queued past the bounds under `refuse` (the outcomes of actions already let through).
    public func append(count n: Int, policy: FullPolicy, exempt: Bool = false, make: (UInt64) -> [UInt8]) throws -> (
        first: UInt64, dropped: Int
    ) {
        try lock.withLock {
            let start = nextSeq
            var added: [Record] = []
            added.reserveCapacity(n)
            var buffer: [UInt8] = []
            var addedBytes = 0
            for i in 0..<n {
                let seq = start + UInt64(i)
                let payload = make(seq)
                Self.encode(seq: seq, payload: payload, into: &buffer)
                added.append(Record(seq: seq, payload: payload))
                addedBytes += Self.headerSize + payload.count
            }
            let live = records.count - first
            if policy == .refuse && !exempt && (live + n > maxEvents || liveBytes + addedBytes > maxBytes) {
                throw QueueError(
                    description:
                        "the queue \(path) is full (\(live) events, \(liveBytes) bytes queued; bounds \(maxEvents) "
                        + "events, \(maxBytes) bytes) and its policy is refuse", isFull: true)
            }
            let written = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(fileSize)) }
            guard written == buffer.count, fdatasync(fd) == 0 else {
                let error = Self.ioError("append to the queue file \(path)")
                _ = ftruncate(fd, off_t(fileSize))
                throw error
            }
            fileSize += buffer.count
            records += added
            liveBytes += addedBytes
            nextSeq = start + UInt64(n)
            var dropped = 0
            if policy == .dropOldest {
                while records.count - first > 0
                    && (records.count - first > maxEvents || liveBytes > maxBytes)
                {
                    liveBytes -= Self.headerSize + records[first].payload.count
                    first += 1
                    dropped += 1
                }
                if dropped > 0 {
                    droppedCount += UInt64(dropped)
                    try writeHead(records.count > first ? records[first].seq : nextSeq)
                    if first > 4096 && first * 2 > records.count { try compact() }
                }
            }
            return (start, dropped)
        }
    }

    /// Up to `max` records from the oldest, in order (copies; the queue keeps them until ``remove(through:)``).
    public func peek(max: Int) -> [Record] {
        lock.withLock { Array(records[first..<min(records.count, first + max)]) }
    }

    /// Forgets every record up to and including `seq` (they were delivered); durable when it returns.
    public func remove(through seq: UInt64) throws {
        try lock.withLock {
            var i = first
            while i < records.count && records[i].seq <= seq {
                liveBytes -= Self.headerSize + records[i].payload.count
                i += 1
            }
            guard i > first else { return }
            first = i
            try writeHead(first < records.count ? records[first].seq : nextSeq)
            if first == records.count {
                records.removeAll(keepingCapacity: false)
                first = 0
                liveBytes = 0
                if ftruncate(fd, 0) != 0 { throw Self.ioError("empty the queue file \(path)") }
                fileSize = 0
            } else if first > 4096 && first * 2 > records.count {
                try compact()
            }
        }
    }

    // MARK: Private (called with the lock held)

    /// Rewrites the live records into a fresh file (when most of the file is delivered records).
    private func compact() throws {
        let tmp = path + ".tmp"
        let out = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw Self.ioError("create \(tmp)") }
        var buffer: [UInt8] = []
        for r in records[first...] { Self.encode(seq: r.seq, payload: r.payload, into: &buffer) }
        let written = buffer.withUnsafeBytes { pwrite(out, $0.baseAddress, $0.count, 0) }
        guard written == buffer.count, fsync(out) == 0, rename(tmp, path) == 0 else {
            let error = Self.ioError("compact the queue file \(path)")
            close(out)
            unlink(tmp)
            throw error
        }
        Self.syncDirectory(of: path)
        close(fd)
        fd = out
        fileSize = buffer.count
        records.removeFirst(first)
        first = 0
    }

    private func writeHead(_ seq: UInt64) throws {
        var bytes: [UInt8] = []
        Self.put(seq, into: &bytes)
        Self.put(UInt32(CRC32.checksum(bytes)), into: &bytes)
        let n = bytes.withUnsafeBytes { pwrite(headFD, $0.baseAddress, $0.count, 0) }
        guard n == bytes.count, fdatasync(headFD) == 0 else {
            throw Self.ioError("write the queue head file \(path).head")
        }
    }

    private func load() throws {
        var head: UInt64 = 0
        let headBytes = try Self.readAll(headFD)
        if headBytes.count >= 12 {
            let seq = Self.get64(headBytes, 0)
            if UInt32(CRC32.checksum(Array(headBytes[0..<8]))) == Self.get32(headBytes, 8) { head = seq }
        }
        let data = try Self.readAll(fd)
        var offset = 0
        var last: UInt64 = 0
        var kept: [Record] = []
        while offset + Self.headerSize <= data.count {
            guard data[offset] == UInt8(ascii: "C"), data[offset + 1] == UInt8(ascii: "Q") else { break }
            let length = Int(Self.get32(data, offset + 2))
            let seq = Self.get64(data, offset + 6)
            let crc = Self.get32(data, offset + 14)
            let end = offset + Self.headerSize + length
            guard end <= data.count, seq > last else { break }
            let payload = Array(data[(offset + Self.headerSize)..<end])
            guard CRC32.checksum(payload, initial: CRC32.partial(Array(data[(offset + 6)..<(offset + 14)]))) == crc
            else { break }
            if seq >= head { kept.append(Record(seq: seq, payload: payload)) }
            last = seq
            offset = end
        }
        if offset < data.count {
            // A torn or damaged tail: what follows the last good record cannot be trusted.
            guard ftruncate(fd, off_t(offset)) == 0, fdatasync(fd) == 0 else {
                throw Self.ioError("cut the torn end of the queue file \(path)")
            }
        }
        fileSize = offset
        records = kept
        first = 0
        liveBytes = kept.reduce(0) { $0 + Self.headerSize + $1.payload.count }
        nextSeq = max(max(head, last + 1), 1)
    }

    static func encode(seq: UInt64, payload: [UInt8], into buffer: inout [UInt8]) {
        buffer.append(UInt8(ascii: "C"))
        buffer.append(UInt8(ascii: "Q"))
        put(UInt32(payload.count), into: &buffer)
        var checked: [UInt8] = []
        put(seq, into: &checked)
        buffer += checked
        put(CRC32.checksum(payload, initial: CRC32.partial(checked)), into: &buffer)
        buffer += payload
    }

    static func put(_ v: UInt32, into b: inout [UInt8]) {
        for i in 0..<4 { b.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
    }

    static func put(_ v: UInt64, into b: inout [UInt8]) {
        for i in 0..<8 { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    static func get32(_ b: [UInt8], _ o: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) }
    }

    static func get64(_ b: [UInt8], _ o: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }

    static func readAll(_ fd: Int32) throws -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("read the queue")
            }
            if n == 0 { return out }
            out += chunk[0..<n]
            offset += off_t(n)
        }
    }

    static func syncDirectory(of path: String) {
        let dir = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            _ = fsync(dir)
            close(dir)
        }
    }

    static func ioError(_ what: String) -> QueueError {
        QueueError(description: "cannot \(what): \(String(cString: strerror(errno)))", isFull: false)
    }
}

/// CRC-32 (IEEE 802.3, the polynomial zlib uses), for the queue's records (slicing by 8, in the C shim).
enum CRC32 {
    static func checksum(_ bytes: [UInt8]) -> UInt32 { checksum(bytes, initial: 0) }

    /// The CRC of `bytes`, to continue with ``checksum(_:initial:)``.
    static func partial(_ bytes: [UInt8]) -> UInt32 { checksum(bytes, initial: 0) }

    /// The CRC of what `initial` covered followed by `bytes`.
    static func checksum(_ bytes: [UInt8], initial: UInt32) -> UInt32 {
        bytes.withUnsafeBytes { csyslog_crc32(initial, $0.baseAddress, $0.count) }
    }
}
