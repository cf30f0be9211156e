#ifndef CPAM_H
#define CPAM_H

/*
 * A thin wrapper around Linux-PAM for the AuthPAM plugin: one call runs a whole non-interactive login check
 * (pam_start[_confdir], PAM_RHOST, pam_authenticate, pam_acct_mgmt, pam_end) with a conversation function that
 * answers from the given strings. Nothing here keeps state: every call has its own PAM handle, so calls from
 * several threads run in parallel (libpam is thread-safe per handle).
 * The header deliberately does not include <security/pam_appl.h> so that Swift sees only these functions.
 */

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Results of cpam_authenticate. */
#define CPAM_OK 0                 /* authenticated, and the account may log in now */
#define CPAM_AUTH_FAILED 1        /* pam_authenticate refused: wrong password or unknown user */
#define CPAM_ACCOUNT_REFUSED 2    /* pam_acct_mgmt refused: expired, locked, not allowed, password must change */
#define CPAM_ERROR -1             /* technical failure (configuration, module, backend unavailable...) */
#define CPAM_INVALID_ARGUMENT -2  /* a required argument is NULL or empty */

/* Largest user name cpam_authenticate copies out (PAM_USER after the login), including the NUL. */
#define CPAM_USER_SIZE 257
/* A good size for the `err` buffer. */
#define CPAM_ERROR_SIZE 256

/*
 * Checks `user`/`password` against the PAM service `service`.
 *
 * - `confdir`: NULL for the system configuration (/etc/pam.d/SERVICE, falling back to /etc/pam.d/other), or a
 *   directory holding a file named SERVICE (pam_start_confdir, Linux-PAM >= 1.4; used by tests).
 * - `rhost`: the client's address, set as PAM_RHOST for the modules' logs and access rules; NULL or "" to skip.
 * - The conversation answers PAM_PROMPT_ECHO_OFF prompts with `password` and PAM_PROMPT_ECHO_ON prompts with
 *   `user`; PAM_ERROR_MSG and PAM_TEXT_INFO are ignored; any other style fails the conversation. Answers are
 *   strdup'ed (the modules free them); on a failure path our copies are wiped before they are freed.
 * - `err` (`errlen` bytes, may be NULL when errlen is 0) receives a one-line explanation for every result but
 *   CPAM_OK: the PAM step and pam_strerror's text, e.g. "pam_acct_mgmt: User account has expired". It never
 *   contains the password.
 * - `pam_user` (`pam_user_len` bytes, may be NULL): on CPAM_OK receives PAM_USER as the modules left it (some
 *   modules canonicalise the name); it is truncated to "" when it does not fit.
 *
 * Returns one of the CPAM_* codes above.
 */
int cpam_authenticate(const char *service, const char *user, const char *password, const char *confdir,
                      const char *rhost, char *err, size_t errlen, char *pam_user, size_t pam_user_len);

/* Overwrites `len` bytes at `p` with zeros in a way the compiler cannot optimise away (explicit_bzero). */
void cpam_wipe(void *p, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* CPAM_H */
