// ctd-fill: creates (or deletes) many conntrack entries quickly through libnetfilter_conntrack, for tests and
// benchmarks inside a private network namespace. One `conntrack -I` process per entry is far too slow at 250k.
//
//   ctd-fill create N [--base 10.0.0.0] [--family 4|6] [--marks K] [--timeout S] [--sport-base P]
//   ctd-fill delete N [same options]      deletes the entries `create` with the same options made
//
// Entry i: UDP, src = base + (i / 60000), sport = sport-base + (i % 60000), dst = base + 0x01000000, dport = 53,
// mark = i % K (K = --marks, default 16, 0 = all zero), or mark = --uid-mark-base + i % K with --uid-shift.
// --mix (IPv4): the table of a busy gateway instead: 3 in 4 entries TCP ESTABLISHED, 1 in 4 UDP; src = base + a
// bijective hash of i within 2^22 addresses (64 /16s: a /16 holds 1/64 of the table, a CGN's subscribers); dst = base +
// 0x01000000 + 1 + (i % 4096) (4,096 servers, so a /30 holds 4 of them); dport = 1024 + a hash of i % 1000
// (1,000 services).
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>

static void usage(void) {
    fprintf(stderr,
            "usage: ctd-fill create|delete N [--base ADDR] [--family 4|6] [--marks K] [--mark-shift S] "
            "[--timeout S] [--sport-base P]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    int create = strcmp(argv[1], "create") == 0;
    if (!create && strcmp(argv[1], "delete") != 0) usage();
    long n = strtol(argv[2], NULL, 10);
    if (n <= 0 || n > 5000000) usage();
    const char *base = NULL;
    int family = 4, marks = 16, shift = 0, sport_base = 1024, mix = 0;
    unsigned timeout = 600;
    for (int i = 3; i < argc; i += 2) {
        if (!strcmp(argv[i], "--mix")) {
            mix = 1;
            i--;  // a flag without a value (the loop steps by two)
            continue;
        }
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--base")) base = argv[i + 1];
        else if (!strcmp(argv[i], "--family")) family = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--marks")) marks = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mark-shift")) shift = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout")) timeout = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sport-base")) sport_base = atoi(argv[i + 1]);
        else usage();
    }
    if (!base) base = family == 6 ? "fd00::" : "10.0.0.0";
    struct nfct_handle *h = nfct_open(CONNTRACK, 0);
    if (!h) {
        perror("nfct_open");
        return 1;
    }
    uint32_t b4 = 0;
    uint8_t b6[16];
    if (family == 4) {
        struct in_addr a;
        if (inet_pton(AF_INET, base, &a) != 1) usage();
        b4 = ntohl(a.s_addr);
    } else if (inet_pton(AF_INET6, base, b6) != 1) {
        usage();
    }
    long failed = 0;
    for (long i = 0; i < n; i++) {
        struct nf_conntrack *ct = nfct_new();
        uint32_t host = (uint32_t)(i / 60000);
        uint16_t sport = (uint16_t)(sport_base + i % 60000);
        if (family == 4) {
            nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET);
            uint32_t src = mix ? (uint32_t)(((uint64_t)i * 2654435761u) & 0x3fffff) : host + 1;
            nfct_set_attr_u32(ct, ATTR_IPV4_SRC, htonl(b4 + src));
            uint32_t server = mix ? (uint32_t)(i % 4096) : 0;
            nfct_set_attr_u32(ct, ATTR_IPV4_DST, htonl(b4 + 0x01000000 + 1 + server));
        } else {
            uint8_t s[16], d[16];
            memcpy(s, b6, 16);
            memcpy(d, b6, 16);
            s[12] = (uint8_t)(host >> 24); s[13] = (uint8_t)(host >> 16); s[14] = (uint8_t)(host >> 8);
            s[15] = (uint8_t)(host + 1);
            d[7] = 1; d[15] = 1;
            nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET6);
            nfct_set_attr(ct, ATTR_IPV6_SRC, s);
            nfct_set_attr(ct, ATTR_IPV6_DST, d);
        }
        int tcp = mix && i % 4 != 0;
        uint16_t dport = mix ? (uint16_t)(1024 + ((uint32_t)i * 2654435761u >> 12) % 1000) : 53;
        nfct_set_attr_u8(ct, ATTR_L4PROTO, tcp ? IPPROTO_TCP : IPPROTO_UDP);
        nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons(sport));
        nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(dport));
        if (tcp && create) nfct_set_attr_u8(ct, ATTR_TCP_STATE, TCP_CONNTRACK_ESTABLISHED);
        if (create) {
            nfct_setobjopt(ct, NFCT_SOPT_SETUP_REPLY);
            nfct_set_attr_u32(ct, ATTR_TIMEOUT, timeout);
            uint32_t mark = marks > 0 ? (uint32_t)(i % marks) << shift : 0;
            nfct_set_attr_u32(ct, ATTR_MARK, mark);
            if (nfct_query(h, NFCT_Q_CREATE, ct) < 0 && errno != EEXIST) failed++;
        } else {
            if (nfct_query(h, NFCT_Q_DESTROY, ct) < 0 && errno != ENOENT) failed++;
        }
        nfct_destroy(ct);
    }
    nfct_close(h);
    fprintf(stderr, "ctd-fill: %s %ld entries, %ld failed\n", create ? "created" : "deleted", n, failed);
    return failed ? 1 : 0;
}
