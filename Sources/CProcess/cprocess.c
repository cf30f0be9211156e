#include "cprocess.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

int ctd_malloc_trim(void) { return malloc_trim(0); }

int ctd_limit_malloc_arenas(int arenas) {
    const char *tunables = getenv("GLIBC_TUNABLES");
    /* the administrator's choice stands */
    if (getenv("MALLOC_ARENA_MAX") != NULL || (tunables != NULL && strstr(tunables, "malloc.arena_max") != NULL)) {
        return 0;
    }
    return mallopt(M_ARENA_MAX, arenas);
}
