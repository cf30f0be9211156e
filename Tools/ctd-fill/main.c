// ctd-fill: creates (or deletes) many conntrack entries quickly through libnetfilter_conntrack, for tests and
// benchmarks inside a private network namespace. One `conntrack -I` process per entry is far too slow at 250k.
//
//   ctd-fill create N [--base 10.0.0.0] [--family 4|6] [--marks K] [--mark-shift S] [--timeout S] [--sport-base P]
//                     [--mix] [--batch K] [--rate R]
//   ctd-fill delete N [same options]      deletes the entries `create` with the same options made
//
// Entry i: UDP, src = base + (i / 60000), sport = sport-base + (i % 60000), dst = base + 0x01000000, dport = 53,
// mark = (i % K) << S (K = --marks, default 16, 0 = all zero; S = --mark-shift, default 0).
// --mix (IPv4): the table of a busy gateway instead: 3 in 4 entries TCP ESTABLISHED, 1 in 4 UDP; src = base + a
// bijective hash of i within 2^22 addresses (64 /16s: a /16 holds 1/64 of the table, a CGN's subscribers); dst = base +
// 0x01000000 + 1 + (i % 4096) (4,096 servers, so a /30 holds 4 of them); dport = 1024 + a hash of i % 1000
// (1,000 services).
// --batch K (default 1): K > 1 sends K requests (IPCTNL_MSG_CT_NEW with NLM_F_CREATE|NLM_F_EXCL, or
// IPCTNL_MSG_CT_DELETE), each with NLM_F_ACK, back to back in one sendmsg on a raw NETLINK_NETFILTER socket, then
// reads their K acks (recvmmsg): ~175-200k creates/s on 2 cores against ~120k/s with K = 1 (one synchronous
// nfct_query per entry; the kernel's own work, ~5 us an entry, is the rest). Same entries, same failure count (errors
// other than EEXIST on create / ENOENT on delete); prints the achieved entries/s on stderr before the last line.
// --rate R (default 0 = as fast as possible): at most R entries/s on average, by sleeping between batches (bursts of
// K entries: pick a small K for a smooth flood).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>

static void usage(void) {
    fprintf(stderr,
            "usage: ctd-fill create|delete N [--base ADDR] [--family 4|6] [--marks K] [--mark-shift S] "
            "[--timeout S] [--sport-base P] [--mix] [--batch K] [--rate R]\n");
    exit(2);
}

struct opts {
    int create, family, marks, shift, sport_base, mix;
    unsigned timeout;
    uint32_t b4;
    uint8_t b6[16];
};

// Sets entry i's attributes on a fresh ct (the same entry whichever way it is sent).
static void set_entry(struct nf_conntrack *ct, long i, const struct opts *o) {
    uint32_t host = (uint32_t)(i / 60000);
    uint16_t sport = (uint16_t)(o->sport_base + i % 60000);
    if (o->family == 4) {
        nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET);
        uint32_t src = o->mix ? (uint32_t)(((uint64_t)i * 2654435761u) & 0x3fffff) : host + 1;
        nfct_set_attr_u32(ct, ATTR_IPV4_SRC, htonl(o->b4 + src));
        uint32_t server = o->mix ? (uint32_t)(i % 4096) : 0;
        nfct_set_attr_u32(ct, ATTR_IPV4_DST, htonl(o->b4 + 0x01000000 + 1 + server));
    } else {
        uint8_t s[16], d[16];
        memcpy(s, o->b6, 16);
        memcpy(d, o->b6, 16);
        s[12] = (uint8_t)(host >> 24); s[13] = (uint8_t)(host >> 16); s[14] = (uint8_t)(host >> 8);
        s[15] = (uint8_t)(host + 1);
        d[7] = 1; d[15] = 1;
        nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET6);
        nfct_set_attr(ct, ATTR_IPV6_SRC, s);
        nfct_set_attr(ct, ATTR_IPV6_DST, d);
    }
    int tcp = o->mix && i % 4 != 0;
    uint16_t dport = o->mix ? (uint16_t)(1024 + ((uint32_t)i * 2654435761u >> 12) % 1000) : 53;
    nfct_set_attr_u8(ct, ATTR_L4PROTO, tcp ? IPPROTO_TCP : IPPROTO_UDP);
    nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons(sport));
    nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(dport));
    if (tcp && o->create) nfct_set_attr_u8(ct, ATTR_TCP_STATE, TCP_CONNTRACK_ESTABLISHED);
    if (o->create) {
        nfct_setobjopt(ct, NFCT_SOPT_SETUP_REPLY);
        nfct_set_attr_u32(ct, ATTR_TIMEOUT, o->timeout);
        uint32_t mark = o->marks > 0 ? (uint32_t)(i % o->marks) << o->shift : 0;
        nfct_set_attr_u32(ct, ATTR_MARK, mark);
    }
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

// --rate: sleeps until `done` entries are due (t0 + done / rate).
static void pace(double t0, long done, double rate) {
    if (rate <= 0) return;
    double due = t0 + (double)done / rate;
    if (due <= now_s()) return;
    struct timespec ts = {(time_t)due, (long)((due - (double)(time_t)due) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

enum { MSG_SLOT = 1024, ACK_SLOT = 256, ACK_TRUESIZE = 1024 };

// --batch K > 1: K requests per sendmsg on a raw NETLINK_NETFILTER socket, then their K acks. Returns failures.
static long run_batched(long n, long batch, double rate, const struct opts *o) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
        perror("bind");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);  // error acks without the request: smaller
    // The kernel handles every request of a sendmsg before it returns, queueing one ack skb each: the receive buffer
    // must hold a batch's acks (or they are dropped, ENOBUFS), and a sendmsg may not exceed sndbuf - 32 bytes.
    int want_rcv = (int)(batch * ACK_TRUESIZE * 2 + (1 << 16)), want_snd = (int)(batch * MSG_SLOT + (1 << 16));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want_rcv, sizeof want_rcv) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want_rcv, sizeof want_rcv);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want_snd, sizeof want_snd) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want_snd, sizeof want_snd);
    int rcvbuf = 0, sndbuf = 0;
    socklen_t len = sizeof rcvbuf;
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len);  // the kernel's (doubled) figures
    len = sizeof sndbuf;
    getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len);
    long per_send = batch;
    if (per_send > rcvbuf / ACK_TRUESIZE) per_send = rcvbuf / ACK_TRUESIZE;
    long max_bytes = (long)sndbuf - 32 - 1024;
    if (per_send < 1 || max_bytes < MSG_SLOT) {
        fprintf(stderr, "ctd-fill: socket buffers too small (rcvbuf %d, sndbuf %d)\n", rcvbuf, sndbuf);
        exit(1);
    }
    if (per_send < batch) fprintf(stderr, "ctd-fill: --batch %ld capped to %ld by the receive buffer\n", batch, per_send);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    char *buf = malloc((size_t)per_send * MSG_SLOT);
    char *acks = malloc((size_t)per_send * ACK_SLOT);
    struct mmsghdr *mm = calloc((size_t)per_send, sizeof *mm);
    struct iovec *iov = calloc((size_t)per_send, sizeof *iov);
    if (!buf || !acks || !mm || !iov) {
        perror("malloc");
        exit(1);
    }
    uint16_t type = (uint16_t)((NFNL_SUBSYS_CTNETLINK << 8) | (o->create ? IPCTNL_MSG_CT_NEW : IPCTNL_MSG_CT_DELETE));
    uint16_t flags = o->create ? NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK | NLM_F_EXCL : NLM_F_REQUEST | NLM_F_ACK;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    long failed = 0, warned = 0;
    uint32_t seq = 0;
    double t0 = now_s();
    for (long i = 0; i < n;) {
        // Lay out up to per_send requests back to back, as nfct_query would build each (nlmsghdr, nfgenmsg, attrs).
        size_t used = 0;
        long count = 0;
        uint32_t first_seq = seq + 1;
        while (i < n && count < per_send && (long)used + MSG_SLOT <= max_bytes) {
            struct nlmsghdr *nlh = (struct nlmsghdr *)(buf + used);
            memset(nlh, 0, MSG_SLOT);
            nlh->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
            nlh->nlmsg_type = type;
            nlh->nlmsg_flags = flags;
            nlh->nlmsg_seq = ++seq;
            struct nfgenmsg *nfh = NLMSG_DATA(nlh);
            nfh->nfgen_family = o->family == 4 ? AF_INET : AF_INET6;
            nfh->version = NFNETLINK_V0;
            nfh->res_id = 0;
            struct nf_conntrack *ct = nfct_new();
            if (!ct) {
                perror("nfct_new");
                exit(1);
            }
            set_entry(ct, i, o);
            if (nfct_nlmsg_build(nlh, ct) < 0 || nlh->nlmsg_len > MSG_SLOT) {
                fprintf(stderr, "ctd-fill: cannot build entry %ld\n", i);
                exit(1);
            }
            nfct_destroy(ct);
            used += NLMSG_ALIGN(nlh->nlmsg_len);
            count++;
            i++;
        }
        ssize_t sent;
        do sent = sendto(fd, buf, used, 0, (struct sockaddr *)&kernel, sizeof kernel);
        while (sent < 0 && errno == EINTR);
        if (sent != (ssize_t)used) {  // netlink sends all or nothing: nothing of this batch was handled
            if (sent < 0) perror("sendto");
            else fprintf(stderr, "ctd-fill: sendto sent %zd of %zu bytes\n", sent, used);
            failed += count;
            continue;
        }
        // One ack per request (an ack skb each: recvmmsg takes many per syscall).
        long pending = count;
        int lost = 0;
        while (pending > 0) {
            for (long k = 0; k < pending; k++) {
                iov[k].iov_base = acks + (size_t)k * ACK_SLOT;
                iov[k].iov_len = ACK_SLOT;
                memset(&mm[k].msg_hdr, 0, sizeof mm[k].msg_hdr);
                mm[k].msg_hdr.msg_iov = &iov[k];
                mm[k].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(fd, mm, (unsigned)pending, lost ? MSG_DONTWAIT : MSG_WAITFORONE, NULL);
            if (got < 0) {
                if (errno == EINTR) continue;
                if (errno == ENOBUFS) {  // acks dropped: the rest of this batch cannot be told apart, drain it
                    lost = 1;
                    continue;
                }
                if (!lost || errno != EAGAIN) perror("recvmmsg");
                break;
            }
            for (int k = 0; k < got; k++) {
                const struct nlmsghdr *a = (const struct nlmsghdr *)(acks + (size_t)k * ACK_SLOT);
                if (mm[k].msg_len < NLMSG_HDRLEN + sizeof(struct nlmsgerr) || a->nlmsg_type != NLMSG_ERROR) continue;
                const struct nlmsgerr *e = NLMSG_DATA(a);
                if (e->msg.nlmsg_seq - first_seq >= (uint32_t)count) continue;  // not one of this batch's
                pending--;
                int err = -e->error;
                if (err != 0 && err != (o->create ? EEXIST : ENOENT)) {
                    failed++;
                    if (warned++ < 5) fprintf(stderr, "ctd-fill: entry %ld: %s\n",
                                              i - count + (long)(e->msg.nlmsg_seq - first_seq), strerror(err));
                }
            }
        }
        if (pending > 0) {
            fprintf(stderr, "ctd-fill: %ld acks missing%s, counted as failed\n", pending, lost ? " (ENOBUFS)" : "");
            failed += pending;
        }
        pace(t0, i, rate);
    }
    double dt = now_s() - t0;
    fprintf(stderr, "ctd-fill: %ld entries in %.3f s: %.0f entries/s (--batch %ld)\n", n, dt, dt > 0 ? n / dt : 0.0,
            batch);
    close(fd);
    free(buf);
    free(acks);
    free(mm);
    free(iov);
    return failed;
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    struct opts o = {.family = 4, .marks = 16, .sport_base = 1024, .timeout = 600};
    o.create = strcmp(argv[1], "create") == 0;
    if (!o.create && strcmp(argv[1], "delete") != 0) usage();
    long n = strtol(argv[2], NULL, 10);
    if (n <= 0 || n > 5000000) usage();
    const char *base = NULL;
    long batch = 1;
    double rate = 0;
    for (int i = 3; i < argc; i += 2) {
        if (!strcmp(argv[i], "--mix")) {
            o.mix = 1;
            i--;  // a flag without a value (the loop steps by two)
            continue;
        }
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--base")) base = argv[i + 1];
        else if (!strcmp(argv[i], "--family")) o.family = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--marks")) o.marks = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mark-shift")) o.shift = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout")) o.timeout = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sport-base")) o.sport_base = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--rate")) rate = strtod(argv[i + 1], NULL);
        else usage();
    }
    if (batch < 1 || batch > 65536 || rate < 0) usage();
    if (!base) base = o.family == 6 ? "fd00::" : "10.0.0.0";
    struct nfct_handle *h = NULL;
    if (batch == 1 && !(h = nfct_open(CONNTRACK, 0))) {
        perror("nfct_open");
        return 1;
    }
    if (o.family == 4) {
        struct in_addr a;
        if (inet_pton(AF_INET, base, &a) != 1) usage();
        o.b4 = ntohl(a.s_addr);
    } else if (inet_pton(AF_INET6, base, o.b6) != 1) {
        usage();
    }
    long failed = 0;
    if (batch > 1) {
        failed = run_batched(n, batch, rate, &o);
    } else {
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            struct nf_conntrack *ct = nfct_new();
            set_entry(ct, i, &o);
            if (o.create) {
                if (nfct_query(h, NFCT_Q_CREATE, ct) < 0 && errno != EEXIST) failed++;
            } else {
                if (nfct_query(h, NFCT_Q_DESTROY, ct) < 0 && errno != ENOENT) failed++;
            }
            nfct_destroy(ct);
            pace(t0, i + 1, rate);
        }
        nfct_close(h);
    }
    fprintf(stderr, "ctd-fill: %s %ld entries, %ld failed\n", o.create ? "created" : "deleted", n, failed);
    return failed ? 1 : 0;
}
