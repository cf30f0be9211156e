#include "ccrypt.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* OpenSSL without its atexit cleanup, before anything else in the process calls it. OPENSSL_cleanup at exit frees
 * the lock that each thread's OpenSSL exit destructor takes; a thread that ends while the process exits (a worker
 * thread retiring, a plugin's sender) then crashes in pthread_rwlock_wrlock (seen once in CI, docs/design.md,
 * "OpenSSL at exit"). The kernel frees the memory at exit anyway. The same constructor is in AuditSyslog's C shim,
 * for a process that loads that plugin but not this library. */
__attribute__((constructor)) static void ccrypt_openssl_without_atexit(void) {
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
}

_Static_assert(CCRYPT_OUTPUT_SIZE == CRYPT_OUTPUT_SIZE, "CCRYPT_OUTPUT_SIZE must match libcrypt");
_Static_assert(CCRYPT_SETTING_SIZE == CRYPT_GENSALT_OUTPUT_SIZE, "CCRYPT_SETTING_SIZE must match libcrypt");

int ccrypt_hash(const char *phrase, const char *setting, char *out, size_t out_size) {
    if (out == NULL || out_size == 0) return CCRYPT_ERR_ARGUMENT;
    out[0] = '\0';
    if (phrase == NULL || setting == NULL || out_size < CRYPT_OUTPUT_SIZE) return CCRYPT_ERR_ARGUMENT;

    /* ~32 KiB: too big for the small stacks of thread pools, so it lives on the heap. calloc zeroes it, which
     * is what libxcrypt asks for a fresh struct (initialized = 0, reserved = 0). */
    struct crypt_data *data = calloc(1, sizeof(struct crypt_data));
    if (data == NULL) return CCRYPT_ERR_NOMEM;

    int rc = CCRYPT_ERR_FAILED;
    const char *result = crypt_r(phrase, setting, data);
    /* libxcrypt returns a "failure token" starting with '*' (or NULL, depending on the build) on error. */
    if (result != NULL && result[0] != '*' && result[0] != '\0') {
        size_t length = strnlen(result, CRYPT_OUTPUT_SIZE);
        if (length < out_size) {
            memcpy(out, result, length);
            out[length] = '\0';
            rc = CCRYPT_OK;
        }
    }
    OPENSSL_cleanse(data, sizeof(struct crypt_data));
    free(data);
    return rc;
}

int ccrypt_gensalt(const char *prefix, unsigned long count, char *out, size_t out_size) {
    if (out == NULL || out_size == 0) return CCRYPT_ERR_ARGUMENT;
    out[0] = '\0';
    if (prefix == NULL || out_size < CRYPT_GENSALT_OUTPUT_SIZE) return CCRYPT_ERR_ARGUMENT;
    /* rbytes = NULL, nrbytes = 0: libxcrypt reads the entropy itself (getrandom). */
    const char *result = crypt_gensalt_rn(prefix, count, NULL, 0, out, (int)out_size);
    if (result == NULL || out[0] == '*' || out[0] == '\0') {
        out[0] = '\0';
        return CCRYPT_ERR_FAILED;
    }
    return CCRYPT_OK;
}

int ccrypt_checksalt(const char *setting) {
    if (setting == NULL) return CRYPT_SALT_INVALID;
    return crypt_checksalt(setting);
}

static const EVP_MD *ccrypt_md(int algorithm) {
    switch (algorithm) {
    case CCRYPT_SHA1: return EVP_sha1();
    case CCRYPT_SHA256: return EVP_sha256();
    case CCRYPT_SHA512: return EVP_sha512();
    default: return NULL;
    }
}

size_t ccrypt_digest_size(int algorithm) {
    switch (algorithm) {
    case CCRYPT_SHA1: return 20;
    case CCRYPT_SHA256: return 32;
    case CCRYPT_SHA512: return 64;
    default: return 0;
    }
}

int ccrypt_digest(int algorithm, const void *data, size_t length, unsigned char *out, size_t out_size) {
    const EVP_MD *md = ccrypt_md(algorithm);
    size_t expected = ccrypt_digest_size(algorithm);
    if (md == NULL || out == NULL || out_size < expected) return CCRYPT_ERR_ARGUMENT;
    static const unsigned char empty = 0;
    if (data == NULL) {
        if (length != 0) return CCRYPT_ERR_ARGUMENT;
        data = &empty;
    }
    unsigned int written = 0;
    if (EVP_Digest(data, length, out, &written, md, NULL) != 1 || written != expected) {
        return CCRYPT_ERR_FAILED;
    }
    return CCRYPT_OK;
}

int ccrypt_equal(const void *a, const void *b, size_t length) {
    if (length == 0) return 1;
    if (a == NULL || b == NULL) return 0;
    return CRYPTO_memcmp(a, b, length) == 0 ? 1 : 0;
}

void ccrypt_wipe(void *pointer, size_t length) {
    if (pointer != NULL && length != 0) OPENSSL_cleanse(pointer, length);
}

int ccrypt_ed25519_public(const unsigned char private_key[32], unsigned char public_key[32]) {
    if (private_key == NULL || public_key == NULL) return CCRYPT_ERR_ARGUMENT;
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, private_key, 32);
    if (key == NULL) return CCRYPT_ERR_FAILED;
    size_t n = 32;
    int ok = EVP_PKEY_get_raw_public_key(key, public_key, &n) == 1 && n == 32;
    EVP_PKEY_free(key);
    return ok ? CCRYPT_OK : CCRYPT_ERR_FAILED;
}

int ccrypt_ed25519_generate(unsigned char private_key[32], unsigned char public_key[32]) {
    if (private_key == NULL || public_key == NULL) return CCRYPT_ERR_ARGUMENT;
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    if (ctx == NULL) return CCRYPT_ERR_NOMEM;
    int ok = EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &key) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok || key == NULL) return CCRYPT_ERR_FAILED;
    size_t np = 32, nq = 32;
    ok = EVP_PKEY_get_raw_private_key(key, private_key, &np) == 1 && np == 32
        && EVP_PKEY_get_raw_public_key(key, public_key, &nq) == 1 && nq == 32;
    EVP_PKEY_free(key);
    if (!ok) OPENSSL_cleanse(private_key, 32);
    return ok ? CCRYPT_OK : CCRYPT_ERR_FAILED;
}

int ccrypt_ed25519_sign(const unsigned char private_key[32], const void *message, size_t length,
                        unsigned char signature[64]) {
    if (private_key == NULL || signature == NULL || (message == NULL && length != 0)) return CCRYPT_ERR_ARGUMENT;
    static const unsigned char empty = 0;
    if (message == NULL) message = &empty;
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, private_key, 32);
    if (key == NULL) return CCRYPT_ERR_FAILED;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t n = 64;
    int ok = md != NULL && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1
        && EVP_DigestSign(md, signature, &n, message, length) == 1 && n == 64;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return ok ? CCRYPT_OK : CCRYPT_ERR_FAILED;
}

int ccrypt_ed25519_verify(const unsigned char public_key[32], const void *message, size_t length,
                          const unsigned char signature[64]) {
    if (public_key == NULL || signature == NULL || (message == NULL && length != 0)) return 0;
    static const unsigned char empty = 0;
    if (message == NULL) message = &empty;
    EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, public_key, 32);
    if (key == NULL) return 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1
        && EVP_DigestVerify(md, signature, 64, message, length) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return ok ? 1 : 0;
}
