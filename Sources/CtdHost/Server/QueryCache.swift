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
