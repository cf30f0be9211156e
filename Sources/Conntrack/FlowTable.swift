/// The mirror's storage: flows in fixed-size chunks, each its own copy-on-write array.
///
/// A snapshot is a copy of the chunk list (a few hundred references at 250,000 entries); the next change to the
/// table then copies one chunk (1,024 flows, about 190 KB), not the whole table (46 MB at 250,000). That keeps snapshots cheap enough to
/// take at every generation, so `view` is fresh, and keeps memory near one table even while clients hold snapshots.
public struct FlowTable: RandomAccessCollection, Sendable {
    public static let chunkShift = 10
    public static let chunkSize = 1 << chunkShift

    private(set) var chunks: [[Flow]] = []
    public private(set) var count = 0

    public init() {}

    /// A table holding `flows` in order.
    public init(_ flows: [Flow]) {
        var start = 0
        while start < flows.count {
            let end = Swift.min(start + FlowTable.chunkSize, flows.count)
            var chunk: [Flow] = []
            chunk.reserveCapacity(FlowTable.chunkSize)
            chunk.append(contentsOf: flows[start..<end])
            chunks.append(chunk)
            start = end
        }
        count = flows.count
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(i: Int) -> Flow {
        get { chunks[i >> FlowTable.chunkShift][i & (FlowTable.chunkSize - 1)] }
        set { chunks[i >> FlowTable.chunkShift][i & (FlowTable.chunkSize - 1)] = newValue }
    }

    public mutating func append(_ flow: Flow) {
        if count & (FlowTable.chunkSize - 1) == 0 {
            var chunk: [Flow] = []
            chunk.reserveCapacity(FlowTable.chunkSize)
            chunks.append(chunk)
        }
        chunks[chunks.count - 1].append(flow)
        count += 1
    }

    public mutating func removeLast() {
        precondition(count > 0)
        chunks[chunks.count - 1].removeLast()
        if chunks[chunks.count - 1].isEmpty { chunks.removeLast() }
        count -= 1
    }

    /// The base address of each chunk, for reading flows in place at random indices (flow i is at
    /// `bases[i >> chunkShift] + (i & (chunkSize - 1))`) without copying each 176-byte flow out: a read then
    /// touches only the cache lines of the fields it needs. Valid while the caller holds this table unchanged (a
    /// snapshot: the table keeps its chunks alive and nothing writes to them while it is shared).
    package func chunkBases() -> [UnsafePointer<Flow>] {
        chunks.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }
    }

    /// Calls `body` with each chunk's contiguous storage and the index of its first flow.
    package func forEachChunk<R>(_ body: (UnsafeBufferPointer<Flow>, Int) throws -> R) rethrows -> [R] {
        var results: [R] = []
        results.reserveCapacity(chunks.count)
        var base = 0
        for chunk in chunks {
            try results.append(chunk.withUnsafeBufferPointer { try body($0, base) })
            base += chunk.count
        }
        return results
    }
}
