import NIOConcurrencyHelpers

/// Results of recent `view` queries per table generation. Frontends poll the same page every few seconds and
/// many clients look at the same table: while the generation does not move, a repeated query costs a lookup
/// instead of a scan of the whole table.
final class QueryCache: @unchecked Sendable {
    private struct Entry {
        let generation: UInt64
        let query: FlowQuery
        let result: FlowQueryResult
    }

    private let lock = NIOLock()
    private var entries: [Entry] = []
    private let capacity: Int

    init(capacity: Int = 32) { self.capacity = capacity }

    func result(generation: UInt64, query: FlowQuery, compute: () -> FlowQueryResult) -> FlowQueryResult {
        if let hit = lock.withLock({ entries.last { $0.generation == generation && $0.query == query } }) {
            return hit.result
        }
        let result = compute()
        lock.withLock {
            entries.removeAll { $0.generation == generation && $0.query == query }
            entries.append(Entry(generation: generation, query: query, result: result))
            if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        }
        return result
    }
}

extension FlowQuery {
    /// Whether the query filters or orders on the remaining timeout, which changes with the clock alone.
    var mentionsTimeout: Bool {
        if case .builtin(.timeout)? = orderField { return true }
        return filters.contains { if case .number(.timeout, _) = $0 { return true } else { return false } }
    }
}

/// Encoded `view` answers. Within one second and one table generation, the same query for sessions with the same
/// autorefresh setting renders the same bytes, so a page polled by many frontends is built and encoded once.
final class RenderedViewCache: @unchecked Sendable {
    struct Key: Equatable {
        let generation: UInt64
        let query: FlowQuery
        let second: Int64
        let autorefresh: Bool
        let accounting: Bool
    }

    private let lock = NIOLock()
    private var entries: [(key: Key, bytes: [UInt8])] = []
    private let capacity: Int

    init(capacity: Int = 16) { self.capacity = capacity }

    func bytes(for key: Key, render: () -> [UInt8]) -> [UInt8] {
        if let hit = lock.withLock({ entries.last { $0.key == key } }) { return hit.bytes }
        let bytes = render()
        lock.withLock {
            entries.removeAll { $0.key == key || $0.key.second < key.second - 1 }
            entries.append((key, bytes))
            if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        }
        return bytes
    }
}
