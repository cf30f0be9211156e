import CPrivileges
import Foundation
import Logging

/// Started as root with a user configured (`[service] user`, `--user`), `ctd serve` becomes that user keeping
/// CAP_NET_ADMIN only, before it opens anything: the same state systemd's `User=` with
/// `AmbientCapabilities=CAP_NET_ADMIN` gives the unit (docs/service.md, "Privilege drop").
///
/// Capabilities and the keep-caps flag belong to one thread, and by `serve` the Swift runtime already runs several,
/// so the credentials are changed in the calling thread alone and the process then re-executes itself
/// (`/proc/self/exe`, same pid, same arguments): the exec ends every other thread, and the new image starts with
/// CAP_NET_ADMIN in its ambient, permitted and effective sets, nothing else in its bounding set, and no_new_privs.
enum PrivilegeDrop {
    /// Set in the re-executed image's environment (and removed from it at once): the user it dropped to.
    static let marker = "CTD_DROPPED_FROM_ROOT"

    struct Account {
        var name: String
        var uid: uid_t
        var gid: gid_t
        var groups: [gid_t]
    }

    /// The account, its primary group and its supplementary groups (as initgroups(3) would set them, so that
    /// `shadow` membership reaches AuthPAM's pam_unix).
    static func account(_ name: String) throws -> Account {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        let rc = getpwnam_r(name, &pwd, &buffer, buffer.count, &result)
        guard rc == 0, result != nil else {
            throw DaemonConfig.Error(
                message:
                    "cannot drop privileges: there is no user '\(name)' (create it, e.g. useradd --system \(name), or start with --keep-privileges)"
            )
        }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        while getgrouplist(name, pwd.pw_gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count) + 16)
            count = Int32(groups.count)
        }
        return Account(name: name, uid: pwd.pw_uid, gid: pwd.pw_gid, groups: Array(groups.prefix(Int(count))))
    }

    /// Drops to `user` and re-executes when running as root; returns without doing anything otherwise. Throws a
    /// sentence when the user does not exist or a step fails (the process must then exit).
    static func dropIfRoot(to user: String?, keep: Bool) throws {
        guard geteuid() == 0, !keep, let user, !user.isEmpty else { return }
        let account = try account(user)
        guard account.uid != 0 else { return }
        let arguments = CommandLine.arguments
        var environment = ProcessInfo.processInfo.environment
        environment[marker] = user
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        var step: UnsafePointer<CChar>?
        let rc = account.groups.withUnsafeBufferPointer { groups in
            ctd_drop_privileges_and_exec(
                account.uid, account.gid, groups.baseAddress, Int32(groups.count), "/proc/self/exe", argv, envp,
                &step)
        }
        let what = step.map { String(cString: $0) } ?? "exec"
        throw DaemonConfig.Error(
            message: "cannot drop privileges to \(user): \(what) failed: \(String(cString: strerror(-rc)))")
    }

    /// After the exec (or without one): one line saying whose rights ctd runs with.
    static func report(logger: Logger, keep: Bool, user: String?) {
        var effective: UInt64 = 0
        var permitted: UInt64 = 0
        _ = ctd_capabilities(&effective, &permitted)
        let netAdmin = (effective >> UInt64(ctd_cap_net_admin())) & 1 == 1
        if let dropped = ProcessInfo.processInfo.environment[marker] {
            unsetenv(marker)
            logger.notice(
                "dropped root: running as \(dropped) (uid \(getuid()), gid \(getgid())) with CAP_NET_ADMIN only",
                metadata: ["CapEff": "\(String(effective, radix: 16))"])
        } else if geteuid() == 0 {
            if keep {
                logger.notice("running as root with every capability (--keep-privileges)")
            } else if user?.isEmpty ?? true {
                logger.notice(
                    "running as root with every capability; [service] user or --user drops to a user keeping CAP_NET_ADMIN only")
            }
        } else if !netAdmin {
            logger.warning(
                "running as uid \(geteuid()) without CAP_NET_ADMIN: the kernel table cannot be read or changed (start as root with --user, or give the capability, e.g. AmbientCapabilities=CAP_NET_ADMIN)")
        }
    }
}
