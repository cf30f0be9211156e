#ifndef CCRYPT_H
#define CCRYPT_H

/*
 * Thin, thread-safe wrappers around libcrypt (libxcrypt) and OpenSSL libcrypto, for the PasswordFile module.
 * Nothing here keeps state; every function may be called from several threads at once.
 * The header deliberately includes neither <crypt.h> nor OpenSSL headers so that Swift sees only these functions.
 */

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Size of a buffer that can hold any crypt(3) output, including the terminating NUL (CRYPT_OUTPUT_SIZE). */
#define CCRYPT_OUTPUT_SIZE 384
/* Size of a buffer that can hold any crypt_gensalt output, including the NUL (CRYPT_GENSALT_OUTPUT_SIZE). */
#define CCRYPT_SETTING_SIZE 192
/* Largest digest ccrypt_digest produces (SHA-512). */
#define CCRYPT_MAX_DIGEST_SIZE 64

/* Return codes. */
#define CCRYPT_OK 0
#define CCRYPT_ERR_ARGUMENT -1  /* a null pointer, a buffer too small, an unknown algorithm */
#define CCRYPT_ERR_NOMEM -2     /* the 32 KiB crypt_data could not be allocated */
#define CCRYPT_ERR_FAILED -3    /* the library refused: bad setting, unsupported method, no entropy... */

/*
 * Hashes `phrase` with crypt_r(3) according to `setting` (a full hash to verify against, or a crypt_gensalt output).
 * The struct crypt_data (32 KiB) is allocated on the heap, zeroed, and wiped before it is freed.
 * On success writes the NUL-terminated hash to `out` (at least CCRYPT_OUTPUT_SIZE bytes) and returns CCRYPT_OK.
 * On failure (invalid setting, unsupported method) returns CCRYPT_ERR_FAILED and `out` holds an empty string.
 */
int ccrypt_hash(const char *phrase, const char *setting, char *out, size_t out_size);

/*
 * Makes a new setting (salt) with crypt_gensalt_rn(3) for `prefix` ("$y$", "$6$"...), `count` = cost (0 = the
 * library's default). Entropy comes from the operating system (rbytes = NULL, i.e. getrandom).
 * `out` must hold at least CCRYPT_SETTING_SIZE bytes. Returns CCRYPT_OK or CCRYPT_ERR_FAILED.
 */
int ccrypt_gensalt(const char *prefix, unsigned long count, char *out, size_t out_size);

/*
 * crypt_checksalt(3): 0 = OK, 1 = invalid, 2 = method disabled, 3 = legacy method, 4 = too cheap.
 */
int ccrypt_checksalt(const char *setting);

/* Digest algorithms for ccrypt_digest. */
typedef enum {
    CCRYPT_SHA1 = 1,
    CCRYPT_SHA256 = 2,
    CCRYPT_SHA512 = 3
} ccrypt_digest_algorithm;

/* Size in bytes of the digest of `algorithm`, or 0 for an unknown algorithm. */
size_t ccrypt_digest_size(int algorithm);

/*
 * One-shot EVP_Digest of `length` bytes at `data` (may be NULL when length is 0).
 * `out` must hold ccrypt_digest_size(algorithm) bytes; returns CCRYPT_OK or an error.
 */
int ccrypt_digest(int algorithm, const void *data, size_t length, unsigned char *out, size_t out_size);

/*
 * Constant-time comparison of `length` bytes (CRYPTO_memcmp): returns 1 when equal, 0 otherwise.
 * The time taken depends on `length` only.
 */
int ccrypt_equal(const void *a, const void *b, size_t length);

/* Overwrites `length` bytes at `pointer` with zeros in a way the compiler cannot remove (OPENSSL_cleanse). */
void ccrypt_wipe(void *pointer, size_t length);

/*
 * Ed25519 (RFC 8032) through OpenSSL's EVP_PKEY, for the audit trail's signed checkpoints. Keys are the raw 32-byte
 * forms, signatures 64 bytes. Each returns CCRYPT_OK or an error; ccrypt_ed25519_verify returns 1 for a valid
 * signature and 0 for anything else.
 */
int ccrypt_ed25519_generate(unsigned char private_key[32], unsigned char public_key[32]);
int ccrypt_ed25519_public(const unsigned char private_key[32], unsigned char public_key[32]);
int ccrypt_ed25519_sign(const unsigned char private_key[32], const void *message, size_t length,
                        unsigned char signature[64]);
int ccrypt_ed25519_verify(const unsigned char public_key[32], const void *message, size_t length,
                          const unsigned char signature[64]);

#ifdef __cplusplus
}
#endif

#endif /* CCRYPT_H */
