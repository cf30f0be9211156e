import NSSLookup

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Unix group membership through NSS (`/etc/group`, LDAP, SSSD... whatever nsswitch.conf says), with the
/// reentrant calls, through ``NSSLookup`` (in parallel, except under the tests' nss_wrapper).
enum UnixGroups {
    /// A lookup that failed for a technical reason (not "no such user": that is an empty answer).
    struct LookupError: Error, CustomStringConvertible {
        var description: String
    }

    /// The names of every group `user` belongs to: the primary group from the passwd entry and the
    /// supplementary groups (`getgrouplist`). Empty when NSS does not know the user. Group ids without a name are
    /// left out.
    static func names(ofUser user: String) throws -> Set<String> {
        try NSSLookup.run { try namesUnlocked(ofUser: user) }
    }

    private static func namesUnlocked(ofUser user: String) throws -> Set<String> {
        guard let primary = try primaryGroup(ofUser: user) else { return [] }
        var names = Set<String>()
        for gid in try groupIDs(ofUser: user, primary: primary) {
            if let name = try groupName(gid) { names.insert(name) }
        }
        return names
    }

    /// Whether NSS knows a group of that name.
    static func exists(group name: String) throws -> Bool {
        try NSSLookup.run { try existsUnlocked(group: name) }
    }

    private static func existsUnlocked(group name: String) throws -> Bool {
        try lookup("getgrnam_r(\(name))") { buffer in
            var entry = group()
            var result: UnsafeMutablePointer<group>?
            let rc = getgrnam_r(name, &entry, buffer.baseAddress!, buffer.count, &result)
            return (rc, result == nil ? nil : true)
        } ?? false
    }

    // MARK: Steps

    static func primaryGroup(ofUser user: String) throws -> gid_t? {
        try lookup("getpwnam_r(\(user))") { buffer in
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            let rc = getpwnam_r(user, &entry, buffer.baseAddress!, buffer.count, &result)
            return (rc, result == nil ? nil : entry.pw_gid)
        }
    }

    static func groupIDs(ofUser user: String, primary: gid_t) throws -> [gid_t] {
        var count: Int32 = 64
        while true {
            var ids = [gid_t](repeating: 0, count: Int(count))
            var found = count
            if getgrouplist(user, primary, &ids, &found) >= 0 {
                return Array(ids.prefix(Int(found)))
            }
            // -1: the array was too small and `found` holds the size needed.
            guard found > count, found <= 1 << 16 else {
                throw LookupError(description: "getgrouplist(\(user)) failed (\(found) groups)")
            }
            count = found
        }
    }

    static func groupName(_ gid: gid_t) throws -> String? {
        try lookup("getgrgid_r(\(gid))") { buffer in
            var entry = group()
            var result: UnsafeMutablePointer<group>?
            let rc = getgrgid_r(gid, &entry, buffer.baseAddress!, buffer.count, &result)
            // The name points into `buffer`: copy it before the buffer goes away.
            return (rc, result == nil ? nil : String(cString: entry.gr_name))
        }
    }

    /// Runs a `get*_r` call with a growing buffer (4 KiB to 4 MiB); a failure other than "no entry" throws.
    private static func lookup<T>(
        _ what: String, _ body: (UnsafeMutableBufferPointer<CChar>) -> (Int32, T?)
    ) throws -> T? {
        switch NSSLookup.withGrowingBuffer(initialSize: 4096, maxSize: 1 << 22, body) {
        case .found(let answer): return answer
        case .notFound: return nil
        case .failed(let rc):
            throw LookupError(description: "\(what) failed: \(String(cString: strerror(rc)))")
        }
    }
}
