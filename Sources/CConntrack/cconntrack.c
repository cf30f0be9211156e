#include "cconntrack.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

#define NFCT_ALL_GROUPS (NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_UPDATE | NF_NETLINK_CONNTRACK_DESTROY)

static void split_v6(const void *addr, uint64_t *hi, uint64_t *lo) {
    const uint8_t *b = addr;
    uint64_t h = 0, l = 0;
    for (int i = 0; i < 8; i++) h = (h << 8) | b[i];
    for (int i = 8; i < 16; i++) l = (l << 8) | b[i];
    *hi = h;
    *lo = l;
}

static void join_v6(uint64_t hi, uint64_t lo, uint8_t *out) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(hi >> (56 - 8 * i));
    for (int i = 0; i < 8; i++) out[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
}

static void to_flow(const struct nf_conntrack *ct, struct ctd_flow *f) {
    memset(f, 0, sizeof(*f));
    f->tcp_state = 255;
    f->id = nfct_get_attr_u32(ct, ATTR_ID);
    if (nfct_attr_is_set(ct, ATTR_ORIG_L3PROTO)) {
        f->has |= CTD_HAS_TUPLE;
        f->l3 = nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO);
        f->l4 = nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO);
        if (f->l3 == AF_INET) {
            f->orig_src_lo = ntohl(nfct_get_attr_u32(ct, ATTR_ORIG_IPV4_SRC));
            f->orig_dst_lo = ntohl(nfct_get_attr_u32(ct, ATTR_ORIG_IPV4_DST));
            f->repl_src_lo = ntohl(nfct_get_attr_u32(ct, ATTR_REPL_IPV4_SRC));
            f->repl_dst_lo = ntohl(nfct_get_attr_u32(ct, ATTR_REPL_IPV4_DST));
        } else if (f->l3 == AF_INET6) {
            if (nfct_attr_is_set(ct, ATTR_ORIG_IPV6_SRC))
                split_v6(nfct_get_attr(ct, ATTR_ORIG_IPV6_SRC), &f->orig_src_hi, &f->orig_src_lo);
            if (nfct_attr_is_set(ct, ATTR_ORIG_IPV6_DST))
                split_v6(nfct_get_attr(ct, ATTR_ORIG_IPV6_DST), &f->orig_dst_hi, &f->orig_dst_lo);
            if (nfct_attr_is_set(ct, ATTR_REPL_IPV6_SRC))
                split_v6(nfct_get_attr(ct, ATTR_REPL_IPV6_SRC), &f->repl_src_hi, &f->repl_src_lo);
            if (nfct_attr_is_set(ct, ATTR_REPL_IPV6_DST))
                split_v6(nfct_get_attr(ct, ATTR_REPL_IPV6_DST), &f->repl_dst_hi, &f->repl_dst_lo);
        }
        if (f->l4 == IPPROTO_ICMP || f->l4 == IPPROTO_ICMPV6) {
            f->icmp_type = nfct_get_attr_u8(ct, ATTR_ICMP_TYPE);
            f->icmp_code = nfct_get_attr_u8(ct, ATTR_ICMP_CODE);
            f->icmp_id = ntohs(nfct_get_attr_u16(ct, ATTR_ICMP_ID));
        } else {
            f->orig_sport = ntohs(nfct_get_attr_u16(ct, ATTR_ORIG_PORT_SRC));
            f->orig_dport = ntohs(nfct_get_attr_u16(ct, ATTR_ORIG_PORT_DST));
            f->repl_sport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC));
            f->repl_dport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_DST));
        }
    }
    if (nfct_attr_is_set(ct, ATTR_MARK)) {
        f->has |= CTD_HAS_MARK;
        f->mark = nfct_get_attr_u32(ct, ATTR_MARK);
    }
    if (nfct_attr_is_set(ct, ATTR_TIMEOUT)) {
        f->has |= CTD_HAS_TIMEOUT;
        f->timeout = nfct_get_attr_u32(ct, ATTR_TIMEOUT);
    }
    if (nfct_attr_is_set(ct, ATTR_STATUS)) {
        f->has |= CTD_HAS_STATUS;
        f->status = nfct_get_attr_u32(ct, ATTR_STATUS);
    }
    if (nfct_attr_is_set(ct, ATTR_TCP_STATE)) {
        f->has |= CTD_HAS_STATE;
        f->tcp_state = nfct_get_attr_u8(ct, ATTR_TCP_STATE);
    }
    if (nfct_attr_is_set(ct, ATTR_ZONE)) {
        f->has |= CTD_HAS_ZONE;
        f->zone = nfct_get_attr_u16(ct, ATTR_ZONE);
    }
    if (nfct_attr_is_set(ct, ATTR_ORIG_COUNTER_BYTES)) {
        f->has |= CTD_HAS_COUNTERS;
        f->orig_bytes = nfct_get_attr_u64(ct, ATTR_ORIG_COUNTER_BYTES);
        f->orig_packets = nfct_get_attr_u64(ct, ATTR_ORIG_COUNTER_PACKETS);
        f->repl_bytes = nfct_get_attr_u64(ct, ATTR_REPL_COUNTER_BYTES);
        f->repl_packets = nfct_get_attr_u64(ct, ATTR_REPL_COUNTER_PACKETS);
    }
    if (nfct_attr_is_set(ct, ATTR_TIMESTAMP_START)) {
        f->start_ns = nfct_get_attr_u64(ct, ATTR_TIMESTAMP_START);
        if (f->start_ns != 0) f->has |= CTD_HAS_TIMESTAMP;
    }
    if (nfct_attr_is_set(ct, ATTR_CONNLABELS)) {
        const struct nfct_bitmask *b = nfct_get_attr(ct, ATTR_CONNLABELS);
        int max = b ? nfct_bitmask_maxbit(b) : -1;
        if (max > 127) max = 127;
        for (int bit = 0; bit <= max; bit++) {
            if (!nfct_bitmask_test_bit(b, (unsigned int)bit)) continue;
            if (bit < 64) f->labels_lo |= (uint64_t)1 << bit;
            else f->labels_hi |= (uint64_t)1 << (bit - 64);
        }
    }
    if (nfct_attr_is_set(ct, ATTR_HELPER_NAME)) {
        const char *name = nfct_get_attr(ct, ATTR_HELPER_NAME);
        if (name) {
            strncpy(f->helper, name, CTD_HELPER_NAME_SIZE - 1);
            f->helper[CTD_HELPER_NAME_SIZE - 1] = 0;
        }
    }
}

/// Sets the original tuple (and zone) of `ct` from `f`; returns -EINVAL for an unknown family so that a
/// request can never go out without a tuple (a DELETE without one flushes the whole table).
static int set_tuple(struct nf_conntrack *ct, const struct ctd_flow *f) {
    if (f->l3 != AF_INET && f->l3 != AF_INET6) return -EINVAL;
    nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, f->l3);
    nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, f->l4);
    if (f->l3 == AF_INET) {
        nfct_set_attr_u32(ct, ATTR_ORIG_IPV4_SRC, htonl((uint32_t)f->orig_src_lo));
        nfct_set_attr_u32(ct, ATTR_ORIG_IPV4_DST, htonl((uint32_t)f->orig_dst_lo));
    } else {
        uint8_t a[16];
        join_v6(f->orig_src_hi, f->orig_src_lo, a);
        nfct_set_attr(ct, ATTR_ORIG_IPV6_SRC, a);
        join_v6(f->orig_dst_hi, f->orig_dst_lo, a);
        nfct_set_attr(ct, ATTR_ORIG_IPV6_DST, a);
    }
    if (f->l4 == IPPROTO_ICMP || f->l4 == IPPROTO_ICMPV6) {
        nfct_set_attr_u8(ct, ATTR_ICMP_TYPE, f->icmp_type);
        nfct_set_attr_u8(ct, ATTR_ICMP_CODE, f->icmp_code);
        nfct_set_attr_u16(ct, ATTR_ICMP_ID, htons(f->icmp_id));
    } else if (f->l4 == IPPROTO_TCP || f->l4 == IPPROTO_UDP || f->l4 == IPPROTO_UDPLITE ||
               f->l4 == IPPROTO_SCTP || f->l4 == IPPROTO_DCCP) {
        nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, htons(f->orig_sport));
        nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, htons(f->orig_dport));
    }
    nfct_set_attr_u16(ct, ATTR_ZONE, f->zone);
    return 0;
}

struct cb_ctx {
    ctd_flow_cb cb;
    void *ctx;
};

/* Hands one parsed entry to `cb` as a message of type `t` (a dump entry or an event). */
static void deliver(const struct nf_conntrack *ct, int t, ctd_flow_cb cb, void *ctx) {
    struct ctd_flow f;
    to_flow(ct, &f);
    // Labels and helper are in every dump entry and NEW/UPDATE event that has them: their absence means none.
    if (t != CTD_MSG_DESTROY) f.has |= CTD_HAS_LABELS | CTD_HAS_HELPER;
    cb(ctx, t, &f);
}

/* The events' callback (the dump parses its messages itself: `dump_parse`). */
static int on_entry(enum nf_conntrack_msg_type type, struct nf_conntrack *ct, void *data) {
    struct cb_ctx *c = data;
    int t = CTD_MSG_DUMP;
    if (type == NFCT_T_NEW) t = CTD_MSG_NEW;
    else if (type == NFCT_T_UPDATE) t = CTD_MSG_UPDATE;
    else if (type == NFCT_T_DESTROY) t = CTD_MSG_DESTROY;
    deliver(ct, t, c->cb, c->ctx);
    return NFCT_CB_CONTINUE;
}

/* The dump, in two threads (docs/design.md, "The dump in two threads"). Measured at a million entries on this
 * machine's 2 cores, one thread spent about 4.2 s in the kernel (its table walk and the copies to us) and 2.3 s
 * parsing, one after the other. Here a reader thread only receives (the kernel walks its table a round at a time,
 * as fast as it is read) into a ring of 64 KB buffers, and the calling thread parses what it has received meanwhile:
 * the dump takes about the longer of the two, not their sum. The calling thread is the one that calls `cb`. */
/* Dumps come in skbs as large as the largest read the kernel has seen on the socket (up to 32 KB): 64 KB reads,
 * not libnfnetlink's 8 KB, let the kernel walk its table in a quarter of the rounds. */
enum { DUMP_BUFFER = 65536, DUMP_RING = 64 };

struct dump_ring {
    pthread_mutex_t lock;
    pthread_cond_t filled, emptied;
    unsigned char *buffers; /* DUMP_RING × DUMP_BUFFER */
    ssize_t length[DUMP_RING];
    unsigned head, tail; /* head: next to fill (reader); tail: next to parse */
    int fd;
    int reader_error; /* -errno from recv, once */
    int stop;         /* set by the parser when it gave up: the reader stops at its next buffer */
};

/* Whether `buf` holds the end of the dump: NLMSG_DONE or an error message. */
static int dump_ends_in(const unsigned char *buf, ssize_t n) {
    int len = (int)n; /* an int, as NLMSG_OK expects: it stops at a negative rest */
    for (const struct nlmsghdr *h = (const void *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) return 1;
    }
    return 0;
}

static void *dump_reader(void *arg) {
    struct dump_ring *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (r->head - r->tail == DUMP_RING && !r->stop) pthread_cond_wait(&r->emptied, &r->lock);
        int stop = r->stop;
        unsigned slot = r->head % DUMP_RING;
        pthread_mutex_unlock(&r->lock);
        if (stop) return NULL;
        unsigned char *buf = r->buffers + (size_t)slot * DUMP_BUFFER;
        ssize_t n;
        do n = recv(r->fd, buf, DUMP_BUFFER, 0);
        while (n < 0 && errno == EINTR);
        int end = n <= 0 || dump_ends_in(buf, n);
        pthread_mutex_lock(&r->lock);
        if (n < 0) r->reader_error = -errno;
        r->length[slot] = n < 0 ? 0 : n;
        r->head++;
        pthread_cond_signal(&r->filled);
        pthread_mutex_unlock(&r->lock);
        if (end) return NULL;
    }
}

/* Parses one received buffer; returns 1 at the end of the dump, 0 to go on, -errno on an error message. */
static int dump_parse(const unsigned char *buf, ssize_t n, uint32_t seq, ctd_flow_cb cb, void *ctx) {
    int len = (int)n;
    for (const struct nlmsghdr *h = (const void *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_seq != seq) continue; /* not an answer to this request */
        if (h->nlmsg_type == NLMSG_DONE) return 1;
        if (h->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *e = NLMSG_DATA(h);
            return e->error == 0 ? 1 : e->error;
        }
        if ((h->nlmsg_type & 0xff) != IPCTNL_MSG_CT_NEW) continue;
        /* A fresh object per entry, as libnetfilter_conntrack's own callbacks get: parsing into a reused one would
         * keep attributes (labels, helper, timestamps) of an earlier entry that this one lacks. */
        struct nf_conntrack *ct = nfct_new();
        if (!ct) return -ENOMEM;
        if (nfct_nlmsg_parse(h, ct) >= 0) deliver(ct, CTD_MSG_DUMP, cb, ctx);
        nfct_destroy(ct);
    }
    return 0;
}

int ctd_dump(ctd_flow_cb cb, void *ctx) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) return -errno;
    int size = 8 * 1024 * 1024;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint32_t seq = (uint32_t)now.tv_nsec ^ (uint32_t)now.tv_sec;
    struct {
        struct nlmsghdr nlh;
        struct nfgenmsg nfg;
    } req = {
        .nlh = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct nfgenmsg)),
                .nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                .nlmsg_seq = seq},
        .nfg = {.nfgen_family = AF_UNSPEC, .version = NFNETLINK_V0, .res_id = 0},
    };
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &req, req.nlh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct dump_ring r = {.fd = fd};
    r.buffers = malloc((size_t)DUMP_RING * DUMP_BUFFER);
    if (!r.buffers) {
        close(fd);
        return -ENOMEM;
    }
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.filled, NULL);
    pthread_cond_init(&r.emptied, NULL);
    pthread_t reader;
    int rc = pthread_create(&reader, NULL, dump_reader, &r);
    if (rc != 0) {
        free(r.buffers);
        close(fd);
        return -rc;
    }
    int result = 0;
    for (;;) {
        pthread_mutex_lock(&r.lock);
        while (r.tail == r.head) pthread_cond_wait(&r.filled, &r.lock);
        unsigned slot = r.tail % DUMP_RING;
        ssize_t n = r.length[slot];
        int reader_error = r.reader_error;
        pthread_mutex_unlock(&r.lock);
        int done = n > 0 ? dump_parse(r.buffers + (size_t)slot * DUMP_BUFFER, n, seq, cb, ctx) : 0;
        pthread_mutex_lock(&r.lock);
        r.tail++;
        pthread_cond_signal(&r.emptied);
        pthread_mutex_unlock(&r.lock);
        if (done != 0) {
            result = done < 0 ? done : 0;
            break;
        }
        if (n <= 0) { /* the reader ended without the end of the dump: its error, or the socket closed */
            result = reader_error != 0 ? reader_error : -EIO;
            break;
        }
    }
    pthread_mutex_lock(&r.lock);
    r.stop = 1;
    pthread_cond_signal(&r.emptied);
    pthread_mutex_unlock(&r.lock);
    /* The reader returns at once: it has seen the end (it stops after the buffer that holds it), or it waits
     * for room and sees `stop`. A reader in recv after an error answer cannot be: an error ends the dump. */
    pthread_join(reader, NULL);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.filled);
    pthread_cond_destroy(&r.emptied);
    free(r.buffers);
    close(fd);
    return result;
}

struct ctd_events {
    struct nfct_handle *h;
    struct cb_ctx c;
    int wake_fd; /* eventfd: ctd_events_wake makes a waiting ctd_events_poll return */
};

struct ctd_events *ctd_events_open(unsigned int rcvbuf, int *err) {
    struct ctd_events *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        *err = -ENOMEM;
        return NULL;
    }
    ev->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ev->wake_fd < 0) {
        *err = -errno;
        free(ev);
        return NULL;
    }
    ev->h = nfct_open(CONNTRACK, NFCT_ALL_GROUPS);
    if (!ev->h) {
        *err = -errno;
        close(ev->wake_fd);
        free(ev);
        return NULL;
    }
    // nfnl_rcvbufsiz uses SO_RCVBUFFORCE, which may go past rmem_max as root.
    nfnl_rcvbufsiz(nfct_nfnlh(ev->h), rcvbuf);
    nfct_callback_register(ev->h, NFCT_T_ALL, on_entry, &ev->c);
    *err = 0;
    return ev;
}

unsigned int ctd_events_rcvbuf(struct ctd_events *ev) {
    int size = 0;
    socklen_t len = sizeof(size);
    getsockopt(nfct_fd(ev->h), SOL_SOCKET, SO_RCVBUF, &size, &len);
    return (unsigned int)size;
}

int ctd_events_poll(struct ctd_events *ev, int timeout_ms, ctd_flow_cb cb, void *ctx, double *reading_from) {
    struct pollfd p[2] = {{.fd = nfct_fd(ev->h), .events = POLLIN}, {.fd = ev->wake_fd, .events = POLLIN}};
    int n = poll(p, 2, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    if (n == 0) return 0;
    if (p[1].revents & POLLIN) {
        uint64_t count;
        ssize_t ignored = read(ev->wake_fd, &count, sizeof(count));
        (void)ignored;
    }
    /* Everything the kernel queued before this instant is read below (the queue is read until it stays empty for
     * a millisecond, even when only the wake-up fired): the caller's "caught up" watermark. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (reading_from) *reading_from = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    ev->c.cb = cb;
    ev->c.ctx = ctx;
    // Drain what is queued without blocking: a short receive timeout turns nfct_catch's loop into a drain.
    struct timeval tv = {.tv_sec = 0, .tv_usec = 1000};
    setsockopt(nfct_fd(ev->h), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int ret = nfct_catch(ev->h);
    if (ret < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        return -errno;
    }
    return 0;
}

void ctd_events_wake(struct ctd_events *ev) {
    uint64_t one = 1;
    ssize_t ignored = write(ev->wake_fd, &one, sizeof(one));
    (void)ignored;
}

long ctd_events_drain(struct ctd_events *ev) {
    char buf[65536];
    long dropped = 0;
    for (;;) {
        ssize_t n = recv(nfct_fd(ev->h), buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            dropped++;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == ENOBUFS) continue;
        break;
    }
    return dropped;
}

void ctd_events_close(struct ctd_events *ev) {
    if (!ev) return;
    nfct_close(ev->h);
    close(ev->wake_fd);
    free(ev);
}

// ---- id-checked requests on a raw NETLINK_NETFILTER socket ----

static int open_nl(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) return -errno;
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
    int size = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

#define MSG_ROOM 1024

/// Appends one request for `f` at `buf` and returns its length, or -errno.
static int put_request(char *buf, uint16_t msg_type, uint16_t flags, uint32_t seq, const struct ctd_flow *f,
                       int set_mark, uint32_t mark, int set_timeout, uint32_t timeout) {
    memset(buf, 0, MSG_ROOM);
    struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
    nlh->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | msg_type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    nlh->nlmsg_seq = seq;
    struct nfgenmsg *g = (struct nfgenmsg *)(buf + NLMSG_HDRLEN);
    g->nfgen_family = f->l3;
    g->version = NFNETLINK_V0;
    g->res_id = 0;

    struct nf_conntrack *ct = nfct_new();
    if (!ct) return -ENOMEM;
    int err = set_tuple(ct, f);
    if (err == 0) {
        if (set_mark) nfct_set_attr_u32(ct, ATTR_MARK, mark);
        if (set_timeout) nfct_set_attr_u32(ct, ATTR_TIMEOUT, timeout);
        if (nfct_nlmsg_build(nlh, ct) < 0) err = -EINVAL;
    }
    nfct_destroy(ct);
    if (err) return err;
    // The id: without it the kernel acts on whatever entry owns the tuple now.
    if (nlh->nlmsg_len + NLA_HDRLEN + 4 > MSG_ROOM) return -EMSGSIZE;
    struct nlattr *a = (struct nlattr *)(buf + NLMSG_ALIGN(nlh->nlmsg_len));
    a->nla_type = CTA_ID;
    a->nla_len = NLA_HDRLEN + 4;
    uint32_t id_be = htonl(f->id);
    memcpy((char *)a + NLA_HDRLEN, &id_be, 4);
    nlh->nlmsg_len = NLMSG_ALIGN(nlh->nlmsg_len) + NLA_ALIGN(a->nla_len);
    return (int)nlh->nlmsg_len;
}

/// Sends `len` bytes of requests with sequence numbers base..base+count-1 and collects one ack per request.
static int exchange(int fd, const char *buf, size_t len, uint32_t base, size_t count, int *results) {
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) return -errno;
    for (size_t i = 0; i < count; i++) results[i] = 1;  // 1 = no answer yet
    size_t answered = 0;
    char rbuf[65536];
    while (answered < count) {
        ssize_t n = recv(fd, rbuf, sizeof(rbuf), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type != NLMSG_ERROR) continue;
            uint32_t idx = h->nlmsg_seq - base;
            if (idx >= count || results[idx] != 1) continue;
            struct nlmsgerr *e = NLMSG_DATA(h);
            results[idx] = e->error;
            answered++;
        }
    }
    return 0;
}

static uint32_t next_seq(void) {
    static uint32_t seq;
    if (seq == 0) seq = (uint32_t)time(NULL);
    return __atomic_add_fetch(&seq, 1024, __ATOMIC_RELAXED);
}

#define BATCH 256

int ctd_destroy_batch(const struct ctd_flow *flows, size_t n, int *results) {
    for (size_t i = 0; i < n; i++) results[i] = CTD_UNANSWERED;
    int fd = open_nl();
    if (fd < 0) return fd;
    char *buf = malloc((size_t)BATCH * MSG_ROOM);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    int ret = 0;
    for (size_t start = 0; start < n && ret == 0; start += BATCH) {
        size_t count = n - start < BATCH ? n - start : BATCH;
        uint32_t base = next_seq();
        size_t len = 0;
        size_t sent = 0;
        int idx_map[BATCH];
        int local[BATCH];
        for (size_t i = 0; i < count; i++) {
            int l = put_request(buf + len, IPCTNL_MSG_CT_DELETE, 0, base + (uint32_t)sent, &flows[start + i], 0, 0,
                                0, 0);
            if (l < 0) {
                results[start + i] = l;
                continue;
            }
            idx_map[sent++] = (int)(start + i);
            len += (size_t)l;
        }
        if (sent == 0) continue;
        ret = exchange(fd, buf, len, base, sent, local);
        if (ret == 0)
            for (size_t i = 0; i < sent; i++) results[idx_map[i]] = local[i];
    }
    free(buf);
    close(fd);
    return ret;
}

int ctd_update(const struct ctd_flow *flow, int set_mark, uint32_t mark, int set_timeout, uint32_t timeout) {
    int fd = open_nl();
    if (fd < 0) return fd;
    char buf[MSG_ROOM];
    uint32_t seq = next_seq();
    int l = put_request(buf, IPCTNL_MSG_CT_NEW, 0, seq, flow, set_mark, mark, set_timeout, timeout);
    int result = 0;
    if (l < 0) {
        close(fd);
        return l;
    }
    int ret = exchange(fd, buf, (size_t)l, seq, 1, &result);
    close(fd);
    return ret < 0 ? ret : result;
}

struct get_ctx {
    struct ctd_flow *out;
    int found;
};

static int on_get(enum nf_conntrack_msg_type type, struct nf_conntrack *ct, void *data) {
    (void)type;
    struct get_ctx *g = data;
    to_flow(ct, g->out);
    g->out->has |= CTD_HAS_LABELS | CTD_HAS_HELPER;
    g->found = 1;
    return NFCT_CB_STOP;
}

int ctd_get(const struct ctd_flow *tuple, struct ctd_flow *out) {
    struct nfct_handle *h = nfct_open(CONNTRACK, 0);
    if (!h) return -errno;
    struct nf_conntrack *ct = nfct_new();
    if (!ct) {
        nfct_close(h);
        return -ENOMEM;
    }
    int err = set_tuple(ct, tuple);
    struct get_ctx g = {out, 0};
    if (err == 0) {
        nfct_callback_register(h, NFCT_T_ALL, on_get, &g);
        if (nfct_query(h, NFCT_Q_GET, ct) < 0) err = -errno;
        else if (!g.found) err = -ENOENT;
    }
    nfct_destroy(ct);
    nfct_close(h);
    return err;
}

int ctd_stats_cpu(struct ctd_cpu_stats *out, int max_cpus) {
    int fd = open_nl();
    if (fd < 0) return fd;
    char req[NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg))];
    memset(req, 0, sizeof(req));
    struct nlmsghdr *nlh = (struct nlmsghdr *)req;
    nlh->nlmsg_len = sizeof(req);
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS_CPU;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = next_seq();
    struct nfgenmsg *g = (struct nfgenmsg *)(req + NLMSG_HDRLEN);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, req, sizeof(req), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    int count = 0;
    char rbuf[65536];
    for (;;) {
        ssize_t n = recv(fd, rbuf, sizeof(rbuf), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = -errno;
            close(fd);
            return e;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != nlh->nlmsg_seq) continue;
            if (h->nlmsg_type == NLMSG_DONE) {
                close(fd);
                return count;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                close(fd);
                return e->error ? e->error : count;
            }
            if (count >= max_cpus) continue;
            struct nfgenmsg *m = NLMSG_DATA(h);
            struct ctd_cpu_stats *s = &out[count];
            memset(s, 0, sizeof(*s));
            s->cpu = ntohs(m->res_id);
            int attrlen = (int)h->nlmsg_len - NLMSG_HDRLEN - NLMSG_ALIGN(sizeof(struct nfgenmsg));
            struct nlattr *a = (struct nlattr *)((char *)m + NLMSG_ALIGN(sizeof(struct nfgenmsg)));
            while (attrlen >= (int)sizeof(struct nlattr) && a->nla_len >= sizeof(struct nlattr) &&
                   a->nla_len <= attrlen) {
                uint32_t v = 0;
                if (a->nla_len >= NLA_HDRLEN + 4) {
                    memcpy(&v, (char *)a + NLA_HDRLEN, 4);
                    v = ntohl(v);
                }
                switch (a->nla_type & NLA_TYPE_MASK) {
                case CTA_STATS_FOUND: s->found = v; break;
                case CTA_STATS_INVALID: s->invalid = v; break;
                case CTA_STATS_INSERT: s->insert = v; break;
                case CTA_STATS_INSERT_FAILED: s->insert_failed = v; break;
                case CTA_STATS_DROP: s->drop = v; break;
                case CTA_STATS_EARLY_DROP: s->early_drop = v; break;
                case CTA_STATS_ERROR: s->error = v; break;
                case CTA_STATS_SEARCH_RESTART: s->search_restart = v; break;
                default: break;
                }
                int step = NLA_ALIGN(a->nla_len);
                attrlen -= step;
                a = (struct nlattr *)((char *)a + step);
            }
            count++;
        }
    }
}
