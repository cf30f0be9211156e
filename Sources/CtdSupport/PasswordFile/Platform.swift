#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `strerror` text for an errno value.
func errnoText(_ code: Int32) -> String {
    if let text = strerror(code) { return String(cString: text) + " (errno \(code))" }
    return "errno \(code)"
}

/// The identity of a file's content, as far as `stat` can tell: a change of any field means "reload".
public struct FileSignature: Sendable, Equatable, Hashable {
    /// Device number.
    public var device: UInt64
    /// Inode number; changes when the file is replaced by rename (atomic write).
    public var inode: UInt64
    /// Size in bytes.
    public var size: Int64
    /// Modification time, nanoseconds since the epoch.
    public var modified: Int64
    /// Status change time, nanoseconds since the epoch (catches `touch -d` tricks that reset the mtime).
    public var changed: Int64
    /// Permission bits (`st_mode & 0o7777`); not part of the change detection.
    public var mode: UInt32

    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        changed = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
        mode = UInt32(st.st_mode) & 0o7777
    }

    /// Whether the content may have changed between `self` and `other` (mode changes alone do not count).
    func sameContent(as other: FileSignature) -> Bool {
        device == other.device && inode == other.inode && size == other.size && modified == other.modified
            && changed == other.changed
    }

    /// The signature of the file at `path` (following symbolic links).
    static func of(path: String) throws -> FileSignature {
        var st = stat()
        guard stat(path, &st) == 0 else { throw PasswordFileError.io("stat", path: path, errno: errno) }
        return FileSignature(st)
    }
}

/// Low-level file access with explicit errno handling (no Foundation).
enum FileIO {
    /// Refuse absurd files: a password file of more than this is certainly a mistake.
    static let maximumSize = 64 << 20

    /// Reads the whole regular file at `path`; the signature is taken from the open descriptor, so it describes
    /// exactly the content returned.
    static func readFile(path: String) throws -> (bytes: [UInt8], signature: FileSignature) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PasswordFileError.io("open", path: path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PasswordFileError.io("stat", path: path, errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw PasswordFileError(kind: .io, message: "not a regular file", path: path)
        }
        guard st.st_size <= maximumSize else {
            throw PasswordFileError(kind: .io, message: "file is larger than \(maximumSize) bytes", path: path)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(st.st_size) + 1)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw PasswordFileError.io("read", path: path, errno: errno)
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            guard bytes.count <= maximumSize else {
                throw PasswordFileError(kind: .io, message: "file is larger than \(maximumSize) bytes", path: path)
            }
        }
        return (bytes, FileSignature(st))
    }

    /// Writes all of `bytes` to `fd`, retrying on partial writes and EINTR.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw PasswordFileError.io("write", path: path, errno: errno)
            }
            offset += n
        }
    }

    /// Replaces the file at `path` atomically: a temporary file in the same directory is written, fsync'ed,
    /// given its permissions and renamed over the target; then the directory is fsync'ed.
    ///
    /// - A symbolic link at `path` is followed: its target is replaced, the link stays.
    /// - New files get mode 0600. An existing file keeps its owner, group and permission bits, minus any
    ///   permission for "others" (a password file must not be world-readable).
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        var target = path
        var existing: stat? = nil
        var lst = stat()
        if lstat(path, &lst) == 0 {
            if (lst.st_mode & S_IFMT) == S_IFLNK {
                guard let resolved = realpath(path, nil) else {
                    throw PasswordFileError.io("resolve the symbolic link", path: path, errno: errno)
                }
                target = String(cString: resolved)
                free(resolved)
            }
            var st = stat()
            if stat(target, &st) == 0 {
                guard (st.st_mode & S_IFMT) == S_IFREG else {
                    throw PasswordFileError(kind: .io, message: "not a regular file", path: path)
                }
                existing = st
            }
        } else if errno != ENOENT {
            throw PasswordFileError.io("stat", path: path, errno: errno)
        }

        let (directory, base) = split(target)
        var template = Array("\(directory)/.\(base).tmp.XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw PasswordFileError.io("create a temporary file in \(directory)", path: path, errno: errno)
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let temporary = String(cString: template)
        var renamed = false
        var closed = false
        defer {
            if !closed { close(fd) }
            if !renamed { unlink(temporary) }
        }

        let mode: mode_t
        if let existing {
            mode = existing.st_mode & 0o770
            if existing.st_uid != geteuid() || existing.st_gid != getegid() {
                // Keep the owner when we may (root); an unprivileged user may still keep the group it is in.
                if fchown(fd, existing.st_uid, existing.st_gid) != 0 {
                    _ = fchown(fd, uid_t.max, existing.st_gid)
                }
            }
        } else {
            mode = 0o600
        }
        guard fchmod(fd, mode) == 0 else { throw PasswordFileError.io("chmod", path: temporary, errno: errno) }
        try writeAll(fd, bytes, path: temporary)
        guard fsync(fd) == 0 else { throw PasswordFileError.io("fsync", path: temporary, errno: errno) }
        closed = true
        guard close(fd) == 0 else { throw PasswordFileError.io("close", path: temporary, errno: errno) }
        guard rename(temporary, target) == 0 else {
            throw PasswordFileError.io("rename the temporary file over", path: target, errno: errno)
        }
        renamed = true
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    /// Splits a path into its directory ("." when none) and last component.
    static func split(_ path: String) -> (directory: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }
}
