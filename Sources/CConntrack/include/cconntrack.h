// Thin C layer over libnetfilter_conntrack for ctd: dump, events, and id-checked destroy/update.
//
// Parsing happens here, into a flat struct, so that Swift never touches struct nf_conntrack per attribute.
// Ports are converted to host order; IPv4 addresses are host-order values in the `lo` word; IPv6 addresses are
// split into two big-endian-composed 64-bit words (hi = bytes 0..7).
#ifndef CCONNTRACK_H
#define CCONNTRACK_H

#include <stddef.h>
#include <stdint.h>

#define CTD_HAS_COUNTERS 0x01
#define CTD_HAS_MARK 0x02
#define CTD_HAS_TIMEOUT 0x04
#define CTD_HAS_STATUS 0x08
#define CTD_HAS_STATE 0x10
#define CTD_HAS_ZONE 0x20
#define CTD_HAS_TUPLE 0x40
/// start_ns is set (nf_conntrack_timestamp was 1 when the entry was created).
#define CTD_HAS_TIMESTAMP 0x80
/// labels_lo/hi are authoritative: a dump or a NEW/UPDATE event (the kernel puts CTA_LABELS in every such message
/// of an entry with a label set, and leaves it out when none is set, so its absence means "no labels").
#define CTD_HAS_LABELS 0x100
/// helper is authoritative (NUL-terminated; empty when the entry has no helper), as for labels.
#define CTD_HAS_HELPER 0x200

#define CTD_HELPER_NAME_SIZE 16

#define CTD_MSG_DUMP 0
#define CTD_MSG_NEW 1
#define CTD_MSG_UPDATE 2
#define CTD_MSG_DESTROY 4

/// One entry as parsed from a dump or an event. `start_ns` is the connection's start (CTA_TIMESTAMP_START) in
/// nanoseconds since the epoch; `labels_lo` holds ct label bits 0..63 and `labels_hi` bits 64..127; `helper` is
/// the helper's name (CTA_HELP), truncated to CTD_HELPER_NAME_SIZE - 1 bytes.
struct ctd_flow {
    uint64_t orig_src_hi, orig_src_lo, orig_dst_hi, orig_dst_lo;
    uint64_t repl_src_hi, repl_src_lo, repl_dst_hi, repl_dst_lo;
    uint64_t orig_bytes, orig_packets, repl_bytes, repl_packets;
    uint64_t start_ns, labels_lo, labels_hi;
    uint32_t id, mark, timeout, status;
    uint16_t orig_sport, orig_dport, repl_sport, repl_dport, icmp_id, zone, has;
    uint8_t l3, l4, tcp_state, icmp_type, icmp_code;
    char helper[CTD_HELPER_NAME_SIZE];
};

/// Called once per entry. `type` is one of CTD_MSG_*.
typedef void (*ctd_flow_cb)(void *ctx, int type, const struct ctd_flow *flow);

/// Dumps the whole table (IPv4 and IPv6). Returns 0 or -errno.
int ctd_dump(ctd_flow_cb cb, void *ctx);

struct ctd_events;

/// Subscribes to NEW/UPDATE/DESTROY events with a receive buffer of `rcvbuf` bytes.
/// Returns NULL and sets *err to -errno on failure.
struct ctd_events *ctd_events_open(unsigned int rcvbuf, int *err);

/// Waits up to `timeout_ms` for events (or a ctd_events_wake), then reads every queued event and calls `cb` for
/// each. When it stopped waiting, sets *reading_from (if not NULL) to the CLOCK_MONOTONIC time in seconds from which
/// on everything queued was read: the events of all changes the kernel made before that instant have been passed
/// to `cb` when this returns 0. Returns 0, -ENOBUFS when events were lost (the caller must resync with a dump), or
/// another -errno.
int ctd_events_poll(struct ctd_events *ev, int timeout_ms, ctd_flow_cb cb, void *ctx, double *reading_from);

/// Makes a ctd_events_poll that is waiting (or the next one) return at once. Safe from any thread.
void ctd_events_wake(struct ctd_events *ev);

/// Reads and discards everything queued on the event socket. After ENOBUFS the kernel keeps dropping events for
/// a socket until its queue has been read empty, so drain before resyncing with a dump. Returns messages dropped.
long ctd_events_drain(struct ctd_events *ev);

/// The granted receive buffer size in bytes.
unsigned int ctd_events_rcvbuf(struct ctd_events *ev);

void ctd_events_close(struct ctd_events *ev);

/// A result ctd_destroy_batch could not learn: the socket failed before that entry's answer came back (the entry
/// may or may not have been deleted) or before its batch was sent.
#define CTD_UNANSWERED (-0x7fff0000)

/// Deletes each entry by its original tuple AND its id (CTA_ID), in batches of 256 per send.
/// results[i] = 0 when deleted, -ENOENT when gone or the id no longer matches, another -errno otherwise, or
/// CTD_UNANSWERED. Returns 0, or -errno when the netlink socket failed: the results of the batches answered before
/// stay valid, the others are CTD_UNANSWERED.
int ctd_destroy_batch(const struct ctd_flow *flows, size_t n, int *results);

/// Updates mark and/or timeout of the entry with this tuple AND id. set_fixed adds IPS_FIXED_TIMEOUT to status.
/// Returns 0, -ENOENT when gone or the id no longer matches, or another -errno.
int ctd_update(const struct ctd_flow *flow, int set_mark, uint32_t mark, int set_timeout, uint32_t timeout);

/// Reads one entry by tuple (the kernel's GET). Returns 0 and fills *out, or -errno.
int ctd_get(const struct ctd_flow *tuple, struct ctd_flow *out);

/// The kernel's per-CPU conntrack counters (`conntrack -S`).
struct ctd_cpu_stats {
    uint32_t cpu, found, invalid, insert, insert_failed, drop, early_drop, error, search_restart;
};

/// Reads the per-CPU counters (IPCTNL_MSG_CT_GET_STATS_CPU) into out[0..max_cpus). Returns the number of CPUs
/// read, or -errno.
int ctd_stats_cpu(struct ctd_cpu_stats *out, int max_cpus);

#endif
