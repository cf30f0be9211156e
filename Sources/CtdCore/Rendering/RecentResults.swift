import Conntrack
import ConntrackQuery
import NIOConcurrencyHelpers

/// A few recent results, newest last, found by key. `view` keeps two: query results per table generation (a
/// repeated query costs a lookup instead of a scan of the whole table), and encoded answers per generation and
/// second (a page polled by many frontends is built and encoded once).
package final class RecentResults<Key: Equatable, Value>: @unchecked Sendable {
    private let lock = NIOLock()
    private var entries: [(key: Key, value: Value)] = []
    private let capacity: Int
    private let isStale: (_ entry: Key, _ newest: Key) -> Bool

    /// - Parameter isStale: entries the newest key makes useless, dropped when it is stored.
    package init(capacity: Int, isStale: @escaping (_ entry: Key, _ newest: Key) -> Bool = { _, _ in false }) {
        self.capacity = capacity
        self.isStale = isStale
    }

    package func value(for key: Key, compute: () -> Value) -> Value {
        if let hit = lock.withLock({ entries.last { $0.key == key } }) { return hit.value }
        let value = compute()
        lock.withLock {
            entries.removeAll { $0.key == key || isStale($0.key, key) }
            entries.append((key, value))
            if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        }
        return value
    }
}

/// What identifies a query result: the same query on the same table generation.
package struct QueryKey: Equatable {
    package let generation: UInt64
    package let query: FlowQuery
}

/// What identifies an encoded `view` answer: within one second (timeouts are shown in whole seconds) and one
/// table generation, the same query for sessions with the same autorefresh setting renders the same bytes.
package struct RenderedViewKey: Equatable {
    package let generation: UInt64
    package let query: FlowQuery
    package let second: Int64
    package let autorefresh: Bool
    package let accounting: Bool
    package let timestamps: Bool
}

extension FlowQuery {
    /// Whether the query filters or orders on the remaining timeout or the age, which change with the clock alone.
    /// (Ordering by age is ordering by start, which does not.)
    package var mentionsTimeout: Bool {
        if case .builtin(.timeout)? = orderField { return true }
        return filters.contains {
            switch $0 {
            case .number(.timeout, _), .range(.timeout, _, _), .range(.age, _, _): return true
            default: return false
            }
        }
    }
}
