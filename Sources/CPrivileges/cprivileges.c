#define _GNU_SOURCE
#include "cprivileges.h"

#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

int ctd_cap_net_admin(void) { return CAP_NET_ADMIN; }

static int fail(const char **step, const char *name) {
    int e = errno;
    if (step) *step = name;
    return -e;
}

int ctd_capabilities(unsigned long long *effective, unsigned long long *permitted) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0}};
    if (syscall(SYS_capget, &header, data) != 0) return -errno;
    *effective = ((unsigned long long)data[1].effective << 32) | data[0].effective;
    *permitted = ((unsigned long long)data[1].permitted << 32) | data[0].permitted;
    return 0;
}

int ctd_drop_privileges_and_exec(uid_t uid, gid_t gid, const gid_t *groups, int ngroups, const char *path,
                                 char *const argv[], char *const envp[], const char **step) {
    // While still root (CAP_SETPCAP): nothing but CAP_NET_ADMIN can ever come back, not even through an exec.
    for (int cap = 0; cap < 64; cap++) {
        if (cap == CAP_NET_ADMIN) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL) break;  // past the kernel's last capability
            return fail(step, "prctl(PR_CAPBSET_DROP)");
        }
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return fail(step, "prctl(PR_SET_KEEPCAPS)");
    if (syscall(SYS_setgroups, (size_t)ngroups, groups) != 0) return fail(step, "setgroups");
    if (syscall(SYS_setresgid, gid, gid, gid) != 0) return fail(step, "setresgid");
    if (syscall(SYS_setresuid, uid, uid, uid) != 0) return fail(step, "setresuid");
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0}};
    unsigned int bit = 1u << (CAP_NET_ADMIN % 32);
    data[CAP_NET_ADMIN / 32].effective = bit;
    data[CAP_NET_ADMIN / 32].permitted = bit;
    data[CAP_NET_ADMIN / 32].inheritable = bit;
    if (syscall(SYS_capset, &header, data) != 0) return fail(step, "capset");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return fail(step, "prctl(PR_CAP_AMBIENT)");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0) != 0)
        return fail(step, "prctl(PR_CAP_AMBIENT_RAISE)");
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return fail(step, "prctl(PR_SET_KEEPCAPS, 0)");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail(step, "prctl(PR_SET_NO_NEW_PRIVS)");
    execve(path, argv, envp);
    return fail(step, "execve");
}
