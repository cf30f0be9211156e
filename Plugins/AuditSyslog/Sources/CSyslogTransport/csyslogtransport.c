#define _GNU_SOURCE
#include "csyslogtransport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* OpenSSL without its atexit cleanup (the reason is in CtdSupport's ccrypt.c): run when the plugin is loaded, a
 * no-op when the host initialized OpenSSL so already. */
__attribute__((constructor)) static void csyslog_openssl_without_atexit(void) {
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL);
}

struct csyslog_tls_context {
    SSL_CTX *ctx;
};

struct csyslog_tls_connection {
    SSL *ssl;
    int fd;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* OpenSSL's queued errors as one line (the first one), then clears the queue of this thread. */
static const char *ssl_reason(char *buf, size_t len) {
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, len, "no detail from OpenSSL");
    } else {
        ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
    return buf;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable or writable; 0 ready, -1 timeout or error (errno set). */
static int wait_fd(int fd, short events, long long deadline) {
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 2147483647 ? 2147483647 : (int)left);
        if (r > 0) return 0;
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR) return -1;
    }
}

csyslog_tls_context *csyslog_tls_context_new(const char *ca_file, const char *cert_file, const char *key_file,
                                             char *err, size_t errlen) {
    char why[256];
    if (ca_file == NULL) {
        set_err(err, errlen, "a CA file is required to check the collector's certificate");
        return NULL;
    }
    if ((cert_file == NULL) != (key_file == NULL)) {
        set_err(err, errlen, "a client certificate needs its key, and a key its certificate");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        set_err(err, errlen, "cannot create a TLS context: %s", ssl_reason(why, sizeof why));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* A peer that closes TCP without close_notify still ends the stream cleanly for us (csyslog_tls_finish). */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        set_err(err, errlen, "cannot read the CA file %s: %s", ca_file, ssl_reason(why, sizeof why));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
            set_err(err, errlen, "cannot read the client certificate %s: %s", cert_file,
                    ssl_reason(why, sizeof why));
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
            set_err(err, errlen, "cannot read the client key %s: %s", key_file, ssl_reason(why, sizeof why));
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            set_err(err, errlen, "the client key %s does not match the certificate %s", key_file, cert_file);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    csyslog_tls_context *c = calloc(1, sizeof *c);
    if (c == NULL) {
        SSL_CTX_free(ctx);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    return c;
}

void csyslog_tls_context_free(csyslog_tls_context *ctx) {
    if (ctx == NULL) return;
    SSL_CTX_free(ctx->ctx);
    free(ctx);
}

/* A non-blocking TCP connection to the first address of host:port that accepts within the deadline. */
static int tcp_connect(const char *host, const char *port, long long deadline, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        set_err(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, last = 0;
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0) {
            int so = 0;
            socklen_t sl = sizeof so;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0) break;
            last = so;
        } else {
            last = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) set_err(err, errlen, "cannot connect to %s port %s: %s", host, port, strerror(last));
    return fd;
}

/* Drives one OpenSSL call on the non-blocking socket until it completes or the deadline passes. */
static int ssl_wait(SSL *ssl, int fd, int r, long long deadline) {
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ: return wait_fd(fd, POLLIN, deadline) == 0 ? 1 : -1;
    case SSL_ERROR_WANT_WRITE: return wait_fd(fd, POLLOUT, deadline) == 0 ? 1 : -1;
    default: return -1;
    }
}

csyslog_tls_connection *csyslog_tls_connect(csyslog_tls_context *ctx, const char *host, const char *port,
                                            const char *server_name, int timeout_ms, char *err, size_t errlen) {
    int resumed = 0;
    return csyslog_tls_connect_resuming(ctx, host, port, server_name, timeout_ms, NULL, &resumed, err, errlen);
}

csyslog_tls_session *csyslog_tls_take_session(csyslog_tls_connection *c) {
    SSL_SESSION *s = SSL_get1_session(c->ssl);
    if (s != NULL && !SSL_SESSION_is_resumable(s)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return (csyslog_tls_session *)s;
}

void csyslog_tls_session_free(csyslog_tls_session *s) {
    if (s != NULL) SSL_SESSION_free((SSL_SESSION *)s);
}

csyslog_tls_connection *csyslog_tls_connect_resuming(csyslog_tls_context *ctx, const char *host, const char *port,
                                                     const char *server_name, int timeout_ms,
                                                     csyslog_tls_session *session, int *resumed, char *err,
                                                     size_t errlen) {
    char why[256];
    *resumed = 0;
    long long deadline = now_ms() + timeout_ms;
    ERR_clear_error();
    int fd = tcp_connect(host, port, deadline, err, errlen);
    if (fd < 0) return NULL;
    SSL *ssl = SSL_new(ctx->ctx);
    if (ssl == NULL) {
        set_err(err, errlen, "cannot create a TLS session: %s", ssl_reason(why, sizeof why));
        close(fd);
        return NULL;
    }
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, server_name, addr) == 1 || inet_pton(AF_INET6, server_name, addr) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    int named = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name)
                      : (SSL_set1_host(ssl, server_name) == 1 && SSL_set_tlsext_host_name(ssl, server_name) == 1);
    if (named != 1 || SSL_set_fd(ssl, fd) != 1) {
        set_err(err, errlen, "cannot set the expected server name %s: %s", server_name, ssl_reason(why, sizeof why));
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    if (session != NULL) SSL_set_session(ssl, (SSL_SESSION *)session);
    for (;;) {
        int r = SSL_connect(ssl);
        if (r == 1) break;
        int saved = errno;
        if (ssl_wait(ssl, fd, r, deadline) < 0) {
            long v = SSL_get_verify_result(ssl);
            if (v != X509_V_OK) {
                set_err(err, errlen, "the collector's certificate was refused: %s (expected name %s)",
                        X509_verify_cert_error_string(v), server_name);
            } else if (errno == ETIMEDOUT) {
                set_err(err, errlen, "the TLS handshake with %s port %s did not finish within %d ms", host, port,
                        timeout_ms);
            } else if (ERR_peek_error() != 0) {
                set_err(err, errlen, "the TLS handshake with %s port %s failed: %s", host, port,
                        ssl_reason(why, sizeof why));
            } else {
                set_err(err, errlen, "the TLS handshake with %s port %s failed: %s", host, port,
                        saved ? strerror(saved) : "the collector closed the connection");
            }
            ERR_clear_error();
            SSL_free(ssl);
            close(fd);
            return NULL;
        }
    }
    csyslog_tls_connection *c = calloc(1, sizeof *c);
    if (c == NULL) {
        SSL_free(ssl);
        close(fd);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    c->ssl = ssl;
    c->fd = fd;
    *resumed = SSL_session_reused(ssl) ? 1 : 0;
    return c;
}

int csyslog_tls_write(csyslog_tls_connection *c, const void *buf, size_t len, int timeout_ms, char *err,
                      size_t errlen) {
    char why[256];
    const unsigned char *p = buf;
    ERR_clear_error();
    while (len > 0) {
        long long deadline = now_ms() + timeout_ms;
        int chunk = len > (1 << 20) ? (1 << 20) : (int)len;
        int r;
        for (;;) {
            r = SSL_write(c->ssl, p, chunk);
            if (r > 0) break;
            int saved = errno;
            if (ssl_wait(c->ssl, c->fd, r, deadline) < 0) {
                if (errno == ETIMEDOUT) {
                    set_err(err, errlen, "the collector took no data for %d ms", timeout_ms);
                } else if (ERR_peek_error() != 0) {
                    set_err(err, errlen, "sending to the collector failed: %s", ssl_reason(why, sizeof why));
                } else {
                    set_err(err, errlen, "sending to the collector failed: %s",
                            saved ? strerror(saved) : "connection closed");
                }
                ERR_clear_error();
                return -1;
            }
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int csyslog_tls_finish(csyslog_tls_connection *c, int timeout_ms, char *err, size_t errlen) {
    char why[256];
    long long deadline = now_ms() + timeout_ms;
    ERR_clear_error();
    for (;;) {
        int r = SSL_shutdown(c->ssl);
        if (r >= 0) break; /* 0: our close_notify is out; 1: theirs already came */
        if (ssl_wait(c->ssl, c->fd, r, deadline) < 0) {
            set_err(err, errlen, "cannot send close_notify to the collector: %s",
                    errno == ETIMEDOUT ? "timed out" : (ERR_peek_error() ? ssl_reason(why, sizeof why) : strerror(errno)));
            ERR_clear_error();
            return -1;
        }
    }
    shutdown(c->fd, SHUT_WR);
    unsigned char sink[4096];
    for (;;) {
        int r = SSL_read(c->ssl, sink, sizeof sink);
        if (r > 0) continue; /* the collector has nothing to say in RFC 5425; ignore it */
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            return 0;
        }
        int saved = errno;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) == 0) continue;
            set_err(err, errlen, "the collector did not confirm the end of the batch within %d ms", timeout_ms);
        } else if (e == SSL_ERROR_SYSCALL && saved == 0) {
            ERR_clear_error();
            return 0;
        } else if (e == SSL_ERROR_SYSCALL) {
            set_err(err, errlen, "the collector dropped the connection before reading all of it: %s",
                    strerror(saved));
        } else {
            set_err(err, errlen, "the collector ended the connection badly: %s", ssl_reason(why, sizeof why));
        }
        ERR_clear_error();
        return -1;
    }
}

void csyslog_tls_free(csyslog_tls_connection *c) {
    if (c == NULL) return;
    SSL_free(c->ssl);
    close(c->fd);
    free(c);
}

int csyslog_unix_open(const char *path, char *err, size_t errlen) {
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        set_err(err, errlen, "the socket path %s is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        set_err(err, errlen, "cannot create a datagram socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        set_err(err, errlen, "cannot connect to %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int csyslog_unix_send(int fd, const void *buf, size_t len, int timeout_ms, char *err, size_t errlen) {
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n == (ssize_t)len) return 0;
        if (n >= 0) {
            set_err(err, errlen, "the datagram was cut short (%zd of %zu bytes)", n, len);
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == ENOBUFS) {
            if (wait_fd(fd, POLLOUT, deadline) == 0) continue;
            set_err(err, errlen, "the local syslog daemon took no message for %d ms", timeout_ms);
            return -1;
        }
        set_err(err, errlen, "cannot send to the local syslog socket: %s", strerror(errno));
        return -1;
    }
}

void csyslog_unix_close(int fd) {
    if (fd >= 0) close(fd);
}

static unsigned int crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (unsigned int n = 0; n < 256; n++) {
        unsigned int c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][n] = c;
    }
    for (unsigned int n = 0; n < 256; n++) {
        unsigned int c = crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[k][n] = c;
        }
    }
}

unsigned int csyslog_crc32(unsigned int crc, const void *buf, size_t len) {
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = buf;
    unsigned int c = ~crc;
    while (len >= 8) {
        unsigned int lo = c ^ ((unsigned int)p[0] | (unsigned int)p[1] << 8 | (unsigned int)p[2] << 16 |
                               (unsigned int)p[3] << 24);
        unsigned int hi = (unsigned int)p[4] | (unsigned int)p[5] << 8 | (unsigned int)p[6] << 16 |
                          (unsigned int)p[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
            crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}
