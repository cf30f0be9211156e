import Conntrack
import Foundation
import XMLRPC

extension Procedure {
    static let stats = Procedure(
        name: "stats", params: ["session"], required: 1, role: .viewer, signatures: [["struct", "string"]],
        help:
            "stats(session) -> {entries (those ctd shows), kernel_entries (conntrack -C, hidden ones included), max_entries, fill, kernel: {found, invalid, insert, insert_failed, drop, early_drop, error, search_restart} summed over CPUs, per_cpu: [{cpu, ...}], ctd: {events_applied, resyncs, counter_refreshes, events_healthy}, sysctl: {acct, timestamp, events}, note}. The kernel's counters are what conntrack -S shows; fill is entries / nf_conntrack_max.",
        run: { try .value(Stats.run($0)) })
}

/// `stats`: the table's fill and the kernel's counters (`conntrack -S` and `-C`), and what ctd can see.
enum Stats {
    static func run(_ call: Call) throws -> XMLRPCValue {
        let context = call.context
        // The table's size and the kernel's counters describe everyone's connections.
        guard call.user.identity.scope == .all else {
            throw Fault.permissionDenied("stats describes the whole table; this user sees only their own connections")
        }
        let mirror = context.mirror.statistics
        let settings = KernelSettings.current()
        let cpus: [CPUStatistics]
        do {
            cpus = try context.table.cpuStatistics()
        } catch {
            context.logger.error("stats: \(error)")
            throw Fault.kernelRefused("the kernel's conntrack statistics could not be read")
        }
        let sums = CPUStatistics.sum(cpus).named
        let counters = { (named: [(String, UInt64)]) in
            XMLRPCStruct(named.map { ($0.0, XMLRPCValue.double(Double($0.1))) })
        }
        var notes: [String] = []
        if !settings.accounting {
            notes.append("byte and packet counters are off: sysctl -w net.netfilter.nf_conntrack_acct=1 (new connections)")
        }
        if !settings.timestamps {
            notes.append("start times are off: sysctl -w net.netfilter.nf_conntrack_timestamp=1 (new connections)")
        }
        var out: [(String, XMLRPCValue)] = [
            ("entries", .int(Int64(mirror.entries))),
            ("kernel_entries", .int(Int64(settings.entries ?? mirror.entries))),
            ("max_entries", .int(Int64(settings.maximumEntries ?? 0))),
            (
                "fill",
                .double(
                    settings.maximumEntries.map { $0 > 0 ? Double(settings.entries ?? mirror.entries) / Double($0) : 0 }
                        ?? 0)
            ),
            ("kernel", .structure(counters(sums))),
            (
                "per_cpu",
                .array(
                    cpus.map { c in
                        .structure(
                            XMLRPCStruct([("cpu", .int(Int64(c.cpu)))] + c.named.map { ($0.0, .double(Double($0.1))) }))
                    })
            ),
            (
                "ctd",
                .structure(
                    XMLRPCStruct([
                        ("events_applied", .double(Double(mirror.eventsApplied))), ("resyncs", .int(Int64(mirror.resyncs))),
                        ("counter_refreshes", .int(Int64(mirror.counterRefreshes))),
                        ("events_healthy", .bool(mirror.eventsHealthy)),
                    ]))
            ),
            (
                "sysctl",
                .structure(
                    XMLRPCStruct([
                        ("acct", .bool(settings.accounting)), ("timestamp", .bool(settings.timestamps)),
                        ("events", .int(Int64(settings.events ?? 0))),
                    ]))
            ),
        ]
        if !notes.isEmpty { out.append(("note", .string(notes.joined(separator: "; ")))) }
        return .structure(XMLRPCStruct(out))
    }
}
