import ConntrackQuery
import CtdPluginAPI
import CtdRuntime
import Foundation
import NIOConcurrencyHelpers
import PluginHost
import XMLRPC

/// Resolved fields depend on the mark only, so they are cached per mark (a busy table has few distinct marks) for
/// `ttl` seconds. A failing resolver leaves its fields empty and is reported unhealthy; `view` keeps working.
package final class ResolvedFieldCache: @unchecked Sendable {
    private let plugins: PluginRegistry
    private let ttl: Double
    private let clock: MonotonicClock
    private let lock = NIOLock()
    private var cache: [UInt32: (at: Double, values: [String: FieldValue])] = [:]

    package init(plugins: PluginRegistry, clock: MonotonicClock, ttl: Double = 30) {
        self.plugins = plugins
        self.clock = clock
        self.ttl = ttl
    }

    package func values(mark: UInt32) -> [String: FieldValue] {
        if plugins.resolvers.isEmpty { return [:] }
        let now = clock.now()
        if let hit = lock.withLock({ cache[mark] }), now - hit.at < ttl { return hit.values }
        var merged: [String: FieldValue] = [:]
        for (info, resolver) in plugins.resolvers {
            do {
                for (k, v) in try resolver.resolve(mark: mark) { merged[k] = v }
            } catch {
                plugins.reportProblem(info.name, "resolve failed: \(error)")
            }
        }
        lock.withLock {
            if cache.count > 100_000 { cache.removeAll() }
            cache[mark] = (now, merged)
        }
        return merged
    }

    /// The resolved fields of a connection struct, every declared field present (empty when unresolved).
    package func members(mark: UInt32) -> [(String, XMLRPCValue)] {
        if plugins.resolvers.isEmpty { return [] }
        let values = values(mark: mark)
        return plugins.resolvedFieldNames.map { name in
            switch values[name] {
            case .integer(let i)?: return (name, .int(i))
            case .string(let s)?: return (name, .string(s))
            case nil: return (name, .string(""))
            @unknown default: return (name, .string(""))
            }
        }
    }

    /// The query engine's view of a resolved field.
    package func resolver() -> (String, UInt32) -> ResolvedValue? {
        return { [self] name, mark in
            switch self.values(mark: mark)[name] {
            case .integer(let i)?: return .integer(i)
            case .string(let s)?: return .string(s)
            case nil: return nil
            @unknown default: return nil
            }
        }
    }
}
