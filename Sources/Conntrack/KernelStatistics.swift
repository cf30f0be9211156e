import CConntrack
import Foundation

/// The kernel's conntrack counters of one CPU, as `conntrack -S` shows them.
public struct CPUStatistics: Equatable, Sendable {
    public var cpu: Int
    public var found: UInt64
    public var invalid: UInt64
    public var insert: UInt64
    public var insertFailed: UInt64
    public var drop: UInt64
    public var earlyDrop: UInt64
    public var error: UInt64
    public var searchRestart: UInt64

    /// The counters of every CPU added up (`cpu` is -1).
    public static func sum(_ cpus: [CPUStatistics]) -> CPUStatistics {
        var s = CPUStatistics(
            cpu: -1, found: 0, invalid: 0, insert: 0, insertFailed: 0, drop: 0, earlyDrop: 0, error: 0, searchRestart: 0)
        for c in cpus {
            s.found &+= c.found
            s.invalid &+= c.invalid
            s.insert &+= c.insert
            s.insertFailed &+= c.insertFailed
            s.drop &+= c.drop
            s.earlyDrop &+= c.earlyDrop
            s.error &+= c.error
            s.searchRestart &+= c.searchRestart
        }
        return s
    }

    /// The counters by the names `conntrack -S` and the API use, in that order.
    public var named: [(String, UInt64)] {
        [
            ("found", found), ("invalid", invalid), ("insert", insert), ("insert_failed", insertFailed),
            ("drop", drop), ("early_drop", earlyDrop), ("error", error), ("search_restart", searchRestart),
        ]
    }
}

/// The sysctls that decide what ctd can see, read from this network namespace's /proc/sys.
public struct KernelSettings: Equatable, Sendable {
    /// `nf_conntrack_max`: the table's size limit (global: the same in every namespace).
    public var maximumEntries: Int?
    /// `nf_conntrack_count`: the entries of this namespace's table, hidden ones included (`conntrack -C`).
    public var entries: Int?
    /// `nf_conntrack_acct`: byte and packet counters.
    public var accounting: Bool
    /// `nf_conntrack_timestamp`: start times (and ages).
    public var timestamps: Bool
    /// `nf_conntrack_events`: 1 = events for every entry, 2 (the default) = only for entries created while a
    /// listener exists (docs/design.md, "Events and their loss").
    public var events: Int?

    static let directory = "/proc/sys/net/netfilter/"

    static func read(_ name: String) -> String? {
        (try? String(contentsOfFile: directory + name, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public static func current() -> KernelSettings {
        KernelSettings(
            maximumEntries: read("nf_conntrack_max").flatMap { Int($0) },
            entries: read("nf_conntrack_count").flatMap { Int($0) },
            accounting: read("nf_conntrack_acct") == "1", timestamps: read("nf_conntrack_timestamp") == "1",
            events: read("nf_conntrack_events").flatMap { Int($0) })
    }

    /// Sets `nf_conntrack_events` in this namespace; throws with the reason when the kernel refuses.
    public static func setEvents(_ value: Int) throws {
        do {
            try "\(value)\n".write(toFile: directory + "nf_conntrack_events", atomically: false, encoding: .utf8)
        } catch {
            throw KernelConntrack.Error(errno: EACCES, operation: "writing \(directory)nf_conntrack_events")
        }
    }
}

extension KernelConntrack {
    /// The per-CPU counters (IPCTNL_MSG_CT_GET_STATS_CPU, what `conntrack -S` reads).
    public func cpuStatistics() throws -> [CPUStatistics] {
        let cpus = max(1, ProcessInfo.processInfo.processorCount) * 2 + 64
        var raw = [ctd_cpu_stats](repeating: ctd_cpu_stats(), count: cpus)
        let n = ctd_stats_cpu(&raw, Int32(cpus))
        if n < 0 { throw Error(errno: -n, operation: "conntrack statistics") }
        return raw.prefix(Int(n)).map {
            CPUStatistics(
                cpu: Int($0.cpu), found: UInt64($0.found), invalid: UInt64($0.invalid), insert: UInt64($0.insert),
                insertFailed: UInt64($0.insert_failed), drop: UInt64($0.drop), earlyDrop: UInt64($0.early_drop),
                error: UInt64($0.error), searchRestart: UInt64($0.search_restart))
        }
    }
}
