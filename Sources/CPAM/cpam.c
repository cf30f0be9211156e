#define _GNU_SOURCE
#include "cpam.h"

#include <security/pam_appl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpam_credentials {
    const char *user;
    const char *password;
};

void cpam_wipe(void *p, size_t len) {
    if (p != NULL && len > 0) {
        explicit_bzero(p, len);
    }
}

static void free_secret(char *s) {
    if (s != NULL) {
        cpam_wipe(s, strlen(s));
        free(s);
    }
}

static void set_error(char *err, size_t errlen, const char *format, ...) {
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, format);
    vsnprintf(err, errlen, format, ap);
    va_end(ap);
}

/* Linux-PAM passes `msg` as an array of pointers (not Solaris' pointer to an array). */
static int conversation(int num_msg, const struct pam_message **msg, struct pam_response **resp, void *appdata) {
    const struct cpam_credentials *cred = appdata;
    if (num_msg <= 0 || num_msg > PAM_MAX_NUM_MSG || msg == NULL || resp == NULL || cred == NULL) {
        return PAM_CONV_ERR;
    }
    *resp = NULL;
    struct pam_response *replies = calloc((size_t)num_msg, sizeof *replies);
    if (replies == NULL) {
        return PAM_BUF_ERR;
    }
    int status = PAM_SUCCESS;
    for (int i = 0; i < num_msg && status == PAM_SUCCESS; i++) {
        const char *answer = NULL;
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
            answer = cred->password;
            break;
        case PAM_PROMPT_ECHO_ON:
            answer = cred->user;
            break;
        case PAM_ERROR_MSG:
        case PAM_TEXT_INFO:
            continue;
        default:
            status = PAM_CONV_ERR;
            continue;
        }
        replies[i].resp_retcode = 0;
        replies[i].resp = strdup(answer);
        if (replies[i].resp == NULL) {
            status = PAM_BUF_ERR;
        }
    }
    if (status != PAM_SUCCESS) {
        for (int i = 0; i < num_msg; i++) {
            free_secret(replies[i].resp);
        }
        free(replies);
        return status;
    }
    *resp = replies;
    return PAM_SUCCESS;
}

/* Wrong password or unknown user: an answer, not a failure. */
static int is_authentication_refusal(int status) {
    switch (status) {
    case PAM_AUTH_ERR:
    case PAM_USER_UNKNOWN:
    case PAM_MAXTRIES:
    case PAM_PERM_DENIED:
        return 1;
    default:
        return 0;
    }
}

/* The account may not log in now. */
static int is_account_refusal(int status) {
    switch (status) {
    case PAM_ACCT_EXPIRED:
    case PAM_NEW_AUTHTOK_REQD:
    case PAM_AUTHTOK_EXPIRED:
    case PAM_PERM_DENIED:
    case PAM_AUTH_ERR:
    case PAM_USER_UNKNOWN:
    case PAM_MAXTRIES:
        return 1;
    default:
        return 0;
    }
}

int cpam_authenticate(const char *service, const char *user, const char *password, const char *confdir,
                      const char *rhost, char *err, size_t errlen, char *pam_user, size_t pam_user_len) {
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (pam_user != NULL && pam_user_len > 0) {
        pam_user[0] = '\0';
    }
    if (service == NULL || service[0] == '\0' || user == NULL || user[0] == '\0' || password == NULL) {
        set_error(err, errlen, "service, user and password are required");
        return CPAM_INVALID_ARGUMENT;
    }

    struct cpam_credentials cred = {.user = user, .password = password};
    const struct pam_conv conv = {.conv = conversation, .appdata_ptr = &cred};
    pam_handle_t *pamh = NULL;
    int status = confdir != NULL ? pam_start_confdir(service, user, &conv, confdir, &pamh)
                                 : pam_start(service, user, &conv, &pamh);
    if (status != PAM_SUCCESS) {
        set_error(err, errlen, "pam_start: %s", pam_strerror(pamh, status));
        if (pamh != NULL) {
            pam_end(pamh, status);
        }
        return CPAM_ERROR;
    }

    int result = CPAM_ERROR;
    if (rhost != NULL && rhost[0] != '\0') {
        status = pam_set_item(pamh, PAM_RHOST, rhost);
        if (status != PAM_SUCCESS) {
            set_error(err, errlen, "pam_set_item(PAM_RHOST): %s", pam_strerror(pamh, status));
            goto done;
        }
    }

    /* PAM_DISALLOW_NULL_AUTHTOK: an account without a password must not open a network session. */
    status = pam_authenticate(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    if (status != PAM_SUCCESS) {
        set_error(err, errlen, "pam_authenticate: %s", pam_strerror(pamh, status));
        result = is_authentication_refusal(status) ? CPAM_AUTH_FAILED : CPAM_ERROR;
        goto done;
    }

    status = pam_acct_mgmt(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    if (status != PAM_SUCCESS) {
        set_error(err, errlen, "pam_acct_mgmt: %s", pam_strerror(pamh, status));
        result = is_account_refusal(status) ? CPAM_ACCOUNT_REFUSED : CPAM_ERROR;
        goto done;
    }

    if (pam_user != NULL && pam_user_len > 0) {
        const void *item = NULL;
        if (pam_get_item(pamh, PAM_USER, &item) == PAM_SUCCESS && item != NULL) {
            const char *name = item;
            size_t len = strlen(name);
            if (len < pam_user_len) {
                memcpy(pam_user, name, len + 1);
            }
        }
    }
    result = CPAM_OK;

done:
    pam_end(pamh, status);
    return result;
}
