#ifndef CSYSLOGTRANSPORT_H
#define CSYSLOGTRANSPORT_H

/*
 * The two ways AuditSyslog reaches a collector, as blocking calls for its one sender thread:
 * - a TLS client over TCP (RFC 5425) with Debian's OpenSSL (libssl), the server's certificate checked against a CA
 *   file and the configured name or address, an optional client certificate;
 * - a Unix datagram socket (/dev/log).
 * Every call reports failure as a negative return and one sentence in `err` (NUL-terminated, truncated to errlen).
 * The header includes no OpenSSL header so that Swift sees only these functions. A context may be shared by
 * threads; a connection belongs to one thread at a time.
 */

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct csyslog_tls_context csyslog_tls_context;
typedef struct csyslog_tls_connection csyslog_tls_connection;
typedef struct csyslog_tls_session csyslog_tls_session;

/* A client context: TLS 1.2 or later, peer verification on. `ca_file` is required; `cert_file` and `key_file`
 * (PEM) are both NULL or both set. NULL on failure. */
csyslog_tls_context *csyslog_tls_context_new(const char *ca_file, const char *cert_file, const char *key_file,
                                             char *err, size_t errlen);
void csyslog_tls_context_free(csyslog_tls_context *ctx);

/* TCP connect to host:port (numeric or a name; the first address that answers), then the TLS handshake. The
 * server's certificate must chain to the CA file and name `server_name` (an IP address literal is matched against
 * the certificate's IP SANs, anything else against its DNS names; it is also sent as SNI when it is a name).
 * Every step waits at most `timeout_ms`. NULL on failure. */
csyslog_tls_connection *csyslog_tls_connect(csyslog_tls_context *ctx, const char *host, const char *port,
                                            const char *server_name, int timeout_ms, char *err, size_t errlen);

/* The same, offering to resume `session` (from csyslog_tls_take_session; may be NULL). `*resumed` is set to 1 when
 * the server accepted it: the server still holds the ticket key it issued the session with, i.e. it is the same
 * collector process as on that earlier connection. */
csyslog_tls_connection *csyslog_tls_connect_resuming(csyslog_tls_context *ctx, const char *host, const char *port,
                                                     const char *server_name, int timeout_ms,
                                                     csyslog_tls_session *session, int *resumed, char *err,
                                                     size_t errlen);

/* After a successful csyslog_tls_finish: the connection's session if the server made it resumable (sent a
 * ticket), else NULL. Free it with csyslog_tls_session_free. */
csyslog_tls_session *csyslog_tls_take_session(csyslog_tls_connection *c);
void csyslog_tls_session_free(csyslog_tls_session *s);

/* Writes all `len` bytes (each write waits at most timeout_ms). 0, or -1 when the connection failed. */
int csyslog_tls_write(csyslog_tls_connection *c, const void *buf, size_t len, int timeout_ms, char *err,
                      size_t errlen);

/* Ends the connection in the way that proves delivery: sends TLS close_notify, shuts down the TCP write side,
 * then reads until the server closes its side. 0 when the server closed cleanly (close_notify or FIN): it has
 * read every byte sent before. -1 when it reset the connection (it closed with unread data), sent data, or did
 * not close within timeout_ms. */
int csyslog_tls_finish(csyslog_tls_connection *c, int timeout_ms, char *err, size_t errlen);

/* Closes the socket (no close_notify) and frees the connection. */
void csyslog_tls_free(csyslog_tls_connection *c);

/* A Unix datagram socket connected to `path`; its fd, or -1. */
int csyslog_unix_open(const char *path, char *err, size_t errlen);

/* Sends one datagram (waits while the receiver's queue is full, at most timeout_ms). 0, or -1. */
int csyslog_unix_send(int fd, const void *buf, size_t len, int timeout_ms, char *err, size_t errlen);

void csyslog_unix_close(int fd);

/* CRC-32 (IEEE 802.3, zlib's) of `len` bytes continuing from `crc` (0 to start), slicing by 8; for the queue. */
unsigned int csyslog_crc32(unsigned int crc, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
