import CtdPluginAPI
import Synchronization

/// Adds `uid` and `username` to every connection from the user id carried in its mark, the way NuFW marks
/// authenticated connections (pyctd's `--uid-mask`). See README.md next to this directory.
///
/// `uid = (mark & mask) >> shift`. A result of 0 means "not authenticated" (NuFW leaves the mark 0): both fields
/// are then absent, and the host shows them as empty strings. Otherwise `uid` is the number and `username` the
/// name the system user database (NSS, `getpwuid_r`) gives for it; a uid without an entry keeps its number and
/// gets the name the `unmapped` policy says (by default the empty string).
///
/// Configuration (`[plugin.UIDResolver]`, strict: any other key is an error):
/// - `mask` (integer, default `0xFFFF`): the mark bits that hold the uid, `0x1` to `0xFFFFFFFF`.
/// - `shift` (integer, default 0): right shift applied after masking, 0 to 31.
/// - `cache_ttl` (seconds, default 60): how long a name, or the absence of one, is remembered; 0 = ask every time.
/// - `unmapped` (`"empty"` or `"uid"`, default `"empty"`): the `username` of a uid the user database does not know.
///
/// Thread-safety: `resolve(mark:)` is called concurrently; the name cache is a lock-protected dictionary and the
/// lookup itself runs outside the lock.
public final class UIDResolverPlugin: FieldResolver {
    public let metadata = PluginMetadata(
        id: "resolver.uid",
        name: "UIDResolver",
        version: "1.0.0",
        roles: [.fieldResolver],
        summary: "Adds uid and username from the user id carried in the connection mark (NuFW style)."
    )

    public let fields = [
        FieldDescriptor(
            name: "uid",
            summary: "The user id carried in the connection mark, (mark & mask) >> shift; empty when that is 0."),
        FieldDescriptor(
            name: "username",
            summary: "The name of uid in the system user database (NSS); empty when the uid has no entry."),
    ]

    /// The configuration keys this plugin understands.
    public static let configurationKeys: Set<String> = ["mask", "shift", "cache_ttl", "unmapped"]

    /// What `username` shows for a uid the user database does not know.
    public enum UnmappedPolicy: String, Sendable, CaseIterable {
        /// The empty string (pyctd's behaviour; `FILTER username = ""` finds such connections).
        case empty
        /// The uid in decimal, as `ls -l` shows files of unknown owners.
        case uid
    }

    /// The validated settings; the defaults apply until `configure` is called.
    public struct Settings: Sendable, Equatable {
        /// The mark bits that hold the uid.
        public var mask: UInt32 = 0x0000_FFFF
        /// The right shift applied after masking.
        public var shift: UInt32 = 0
        /// Seconds a looked-up name (or its absence) stays cached.
        public var cacheTTL: Double = 60
        /// The name of an unknown uid.
        public var unmapped: UnmappedPolicy = .empty

        /// The defaults.
        public init() {}

        /// The uid a mark carries, or `nil` when the masked and shifted value is 0 (not authenticated).
        public func uid(forMark mark: UInt32) -> UInt32? {
            let value = (mark & mask) >> shift
            return value == 0 ? nil : value
        }
    }

    private let settings = Mutex(Settings())
    private let log = Mutex<(@Sendable (PluginLogLevel, String) -> Void)?>(nil)
    /// The name cache; public so that tests can look at it.
    public let names: UserNameCache

    /// Creates the plugin with the system user database and the monotonic clock.
    public convenience init() {
        self.init(lookup: UserNameCache.systemLookup, clock: UserNameCache.monotonicSeconds)
    }

    /// Creates the plugin with another user database or clock (for tests).
    /// - Parameters:
    ///   - lookup: maps a uid to a name; called outside any lock, at most once per uid and `cache_ttl`.
    ///   - clock: monotonic seconds.
    public init(
        lookup: @escaping @Sendable (UInt32) -> UserLookupResult, clock: @escaping @Sendable () -> Double
    ) {
        names = UserNameCache(ttl: Settings().cacheTTL, lookup: lookup, clock: clock)
    }

    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {
        let parsed = try Self.settings(from: configuration)
        let name = metadata.name
        if parsed.mask & ((1 << parsed.shift) - 1) != 0 {
            context.log(
                .warning,
                "\(name): 'mask' \(Self.hex(parsed.mask)) has bits below 'shift' \(parsed.shift); they are discarded")
        }
        settings.withLock { $0 = parsed }
        log.withLock { $0 = context.log }
        names.setTTL(parsed.cacheTTL)
        context.log(
            .info,
            "\(name): uid = (mark & \(Self.hex(parsed.mask))) >> \(parsed.shift), names cached \(parsed.cacheTTL) s")
    }

    public func resolve(mark: UInt32) throws -> [String: FieldValue] {
        let current = settings.withLock { $0 }
        guard let uid = current.uid(forMark: mark) else { return [:] }
        let (name, newFailure) = names.name(for: uid)
        if let newFailure {
            let sink = log.withLock { $0 }
            sink?(.warning, "UIDResolver: the user database fails (uid \(uid)): \(newFailure); names stay unresolved")
        }
        let username = name ?? (current.unmapped == .uid ? String(uid) : "")
        return ["uid": .integer(Int64(uid)), "username": .string(username)]
    }

    public var healthProblem: String? {
        names.lastFailure.map { "user database lookups fail: \($0)" }
    }

    public func shutdown() {
        names.removeAll()
    }

    // MARK: Configuration

    /// Reads and validates a `[plugin.UIDResolver]` section.
    /// - Throws: ``PluginError`` naming the offending key.
    public static func settings(from configuration: PluginConfiguration) throws -> Settings {
        try configuration.expectOnly(configurationKeys)
        let plugin = configuration.pluginName
        var s = Settings()
        if let mask = try configuration.integer("mask") {
            guard mask >= 1 && mask <= 0xFFFF_FFFF else {
                throw PluginError(
                    "key 'mask' in the configuration of plugin \(plugin) must be from 0x1 to 0xFFFFFFFF, not \(mask)")
            }
            s.mask = UInt32(mask)
        }
        if let shift = try configuration.integer("shift") {
            guard shift >= 0 && shift <= 31 else {
                throw PluginError(
                    "key 'shift' in the configuration of plugin \(plugin) must be from 0 to 31, not \(shift)")
            }
            s.shift = UInt32(shift)
        }
        guard s.mask >> s.shift != 0 else {
            throw PluginError(
                "key 'shift' in the configuration of plugin \(plugin) (\(s.shift)) discards every bit of 'mask' "
                    + "(\(hex(s.mask))): no uid could ever be found")
        }
        if let ttl = try configuration.double("cache_ttl") {
            guard ttl.isFinite && ttl >= 0 && ttl <= 86_400 else {
                throw PluginError(
                    "key 'cache_ttl' in the configuration of plugin \(plugin) must be from 0 to 86400 seconds, "
                        + "not \(ttl)")
            }
            s.cacheTTL = ttl
        }
        if let policy = try configuration.string("unmapped") {
            guard let parsed = UnmappedPolicy(rawValue: policy) else {
                let valid = UnmappedPolicy.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: " or ")
                throw PluginError(
                    "key 'unmapped' in the configuration of plugin \(plugin) must be \(valid), not \"\(policy)\"")
            }
            s.unmapped = parsed
        }
        return s
    }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

/// The entry symbol the host looks up with `dlsym` (``ctdPluginEntrySymbol``).
@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? {
    CtdPluginExport.export(UIDResolverPlugin())
}
