// Process tuning that has nothing to do with conntrack: glibc malloc's arenas and trimming.
#ifndef CPROCESS_H
#define CPROCESS_H

/// Returns freed heap pages of every malloc arena to the system (glibc malloc_trim).
int ctd_malloc_trim(void);

/// Caps glibc's malloc arenas (M_ARENA_MAX) unless MALLOC_ARENA_MAX or GLIBC_TUNABLES' malloc.arena_max is set in
/// the environment. Returns 1 when set, 0 when the environment decides.
int ctd_limit_malloc_arenas(int arenas);

#endif
