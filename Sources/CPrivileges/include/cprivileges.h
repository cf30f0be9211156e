// Dropping root for a dedicated user while keeping CAP_NET_ADMIN, the way systemd's User= with
// AmbientCapabilities=CAP_NET_ADMIN leaves a service (docs/service.md, "Privilege drop").
#ifndef CPRIVILEGES_H
#define CPRIVILEGES_H

#include <sys/types.h>

/// In the calling thread only (raw system calls, not glibc's all-thread wrappers): keeps CAP_NET_ADMIN alone in the
/// bounding set, sets the groups, the gid and the uid (real, effective, saved), leaves CAP_NET_ADMIN in the
/// permitted, effective, inheritable and ambient sets, sets no_new_privs, then execve()s `path` with `argv` and
/// `envp`. The exec ends every other thread; the new image runs as the user with CAP_NET_ADMIN only (ambient
/// capabilities survive an exec, the others do not).
/// Returns only on failure: -errno, and `*step` names the step that failed. The calling process must then exit:
/// this thread may already have changed credentials.
int ctd_drop_privileges_and_exec(uid_t uid, gid_t gid, const gid_t *groups, int ngroups, const char *path,
                                 char *const argv[], char *const envp[], const char **step);

/// The capability sets of the calling thread as /proc/self/status shows them (bit i = capability i).
int ctd_capabilities(unsigned long long *effective, unsigned long long *permitted);

/// CAP_NET_ADMIN's number (12).
int ctd_cap_net_admin(void);

#endif
