import CProcess

/// Memory settings of the whole process (glibc malloc), kept apart from the parts that allocate.
public enum ProcessTuning {
    /// glibc malloc arenas ctd runs with.
    ///
    /// Each thread that allocates would get an arena of its own (up to 8 per core) and keep its freed pages: two
    /// arenas took the peak after the load tests and a bulk kill at 250k from 155 to 130-143 MB (`make bench`,
    /// docs/benchmark.md) at no measured cost to throughput.
    public static let mallocArenas: Int32 = 2

    /// Caps malloc's arenas at ``mallocArenas`` unless the environment (MALLOC_ARENA_MAX, or GLIBC_TUNABLES'
    /// malloc.arena_max) says otherwise. Call once, before threads start.
    /// - Returns: whether ctd's cap was applied.
    @discardableResult
    public static func limitMallocArenas() -> Bool { ctd_limit_malloc_arenas(mallocArenas) == 1 }

    /// Returns freed heap pages of every arena to the system, so that resident memory tracks the live data, not its
    /// history (chunks replaced by copy-on-write are freed in whichever thread's arena held them).
    public static func returnFreedMemory() { _ = ctd_malloc_trim() }
}
