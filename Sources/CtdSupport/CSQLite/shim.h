#ifndef CSQLITE_SHIM_H
#define CSQLITE_SHIM_H

/*
 * Debian's libsqlite3 (libsqlite3-dev) for the AuditLog module: the C API as is, plus the few things Swift cannot
 * import from sqlite3.h because they are macros.
 */

#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast macro ((sqlite3_destructor_type)-1): SQLite copies the bytes before returning. */
static inline int csqlite_bind_text(sqlite3_stmt *statement, int index, const char *text, int length) {
    return sqlite3_bind_text(statement, index, text, length, SQLITE_TRANSIENT);
}

static inline int csqlite_bind_blob(sqlite3_stmt *statement, int index, const void *bytes, int length) {
    return sqlite3_bind_blob(statement, index, bytes, length, SQLITE_TRANSIENT);
}

/* Records in *context the WAL's size in pages after each commit. Installing it turns SQLite's automatic
 * checkpoint off: sqlite3_wal_autocheckpoint is itself a WAL hook. */
static int csqlite_wal_pages_hook(void *context, sqlite3 *db, const char *name, int pages) {
    (void)db;
    (void)name;
    *(int *)context = pages;
    return SQLITE_OK;
}

static inline void csqlite_track_wal_pages(sqlite3 *db, int *pages) {
    sqlite3_wal_hook(db, csqlite_wal_pages_hook, pages);
}

#endif /* CSQLITE_SHIM_H */
