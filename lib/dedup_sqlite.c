/* The persistent dedup store in an SQLite database (WAL mode).
 *
 *   rbk_dedup_window (grp, topic, part) -> blob, next_offset, saved_ms
 *       one saved window per partition, replaced by each save;
 *   rbk_dedup_txn (grp, topic, part, id) -> off
 *       ids the application recorded inside its own transactions
 *       (rbk_dedup_sqlite_record_in_txn), consulted by `seen`. Each save
 *       prunes the partition's rows that the window it saves makes
 *       redundant, and only those (rbk__dedup_proof_prunes(): the window
 *       proves the id, or, below the offset saved for, has moved past it);
 *       a row the window does not prove stays, whatever its offset.
 *
 * One connection per store, used under the store's mutex (callbacks come
 * from several worker threads). A window save and the pruning of the
 * partition's txn rows happen in one transaction.
 *
 * Fork: the store records the process that opened it. In a forked child
 * every callback fails with RBK_ERR_FORKED before it takes the mutex (a
 * parent thread may have held it at fork() time), and destroy frees
 * nothing: the connection belongs to the parent, and SQLite forbids using
 * (or closing) a connection across fork(). */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "internal.h"

#define RBK__SQLITE_BUSY_MS 10000

static const char rbk__sqlite_schema[] =
    "CREATE TABLE IF NOT EXISTS rbk_dedup_window ("
    " grp TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL,"
    " blob BLOB NOT NULL, next_offset INTEGER NOT NULL,"
    " saved_ms INTEGER NOT NULL,"
    " PRIMARY KEY (grp, topic, part)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS rbk_dedup_txn ("
    " grp TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL,"
    " id BLOB NOT NULL, off INTEGER NOT NULL,"
    " PRIMARY KEY (grp, topic, part, id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS rbk_dedup_txn_off"
    " ON rbk_dedup_txn (grp, topic, part, off);";

typedef struct rbk__sqlite_store_s {
        rbk_dedup_store_t pub; /* first: the pointer handed to the caller */
        sqlite3 *db;
        GMutex lock;
        sqlite3_stmt *load, *save, *rows, *prune, *seen;
        pid_t pid; /* the process that opened the store */
} rbk__sqlite_store_t;

static rbk_err_t rbk__sqlite_err(sqlite3 *db, char *errstr,
                                 size_t errstr_size, const char *what) {
        return rbk__seterr(errstr, errstr_size, RBK_ERR_STORE,
                           "sqlite dedup store: %s: %s", what,
                           db ? sqlite3_errmsg(db) : "out of memory");
}

/* RBK_ERR_FORKED, named, when @s is used in a forked child. */
static rbk_err_t rbk__sqlite_forked(const rbk__sqlite_store_t *s,
                                    char *errstr, size_t errstr_size) {
        if (!rbk__forked(s->pid))
                return RBK_OK;
        return rbk__seterr(errstr, errstr_size, RBK_ERR_FORKED,
                           "sqlite dedup store used in a forked child of the "
                           "process that opened it; open stores after "
                           "fork()");
}

static void rbk__sqlite_destroy(void *opaque) {
        rbk__sqlite_store_t *s = opaque;
        if (!s || rbk__forked(s->pid))
                return; /* the parent's connection: left to the parent */
        sqlite3_finalize(s->load);
        sqlite3_finalize(s->save);
        sqlite3_finalize(s->rows);
        sqlite3_finalize(s->prune);
        sqlite3_finalize(s->seen);
        sqlite3_close(s->db);
        g_mutex_clear(&s->lock);
        g_free(s);
}

static void rbk__sqlite_bind_key(sqlite3_stmt *st, const char *group,
                                 const char *topic, int32_t partition) {
        sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, partition);
}

static rbk_err_t rbk__sqlite_load(const char *group, const char *topic,
                                  int32_t partition, void **blobp,
                                  size_t *sizep, int64_t *next_offsetp,
                                  char *errstr, size_t errstr_size,
                                  void *opaque) {
        rbk__sqlite_store_t *s = opaque;
        rbk_err_t r = rbk__sqlite_forked(s, errstr, errstr_size);
        int rc;

        if (r != RBK_OK)
                return r;
        g_mutex_lock(&s->lock);
        rbk__sqlite_bind_key(s->load, group, topic, partition);
        rc = sqlite3_step(s->load);
        if (rc == SQLITE_ROW) {
                const void *b = sqlite3_column_blob(s->load, 0);
                int n = sqlite3_column_bytes(s->load, 0);
                void *copy = malloc(n > 0 ? (size_t)n : 1);
                if (!copy) {
                        r = rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                                        "sqlite dedup store: out of memory");
                } else {
                        if (n > 0)
                                memcpy(copy, b, (size_t)n);
                        *blobp = copy;
                        *sizep = (size_t)n;
                        *next_offsetp = sqlite3_column_int64(s->load, 1);
                        r = RBK_OK;
                }
        } else if (rc == SQLITE_DONE) {
                r = RBK_ERR_NOT_FOUND;
        } else {
                r = rbk__sqlite_err(s->db, errstr, errstr_size,
                                    "loading a window");
        }
        sqlite3_reset(s->load);
        sqlite3_clear_bindings(s->load);
        g_mutex_unlock(&s->lock);
        return r;
}

static rbk_err_t rbk__sqlite_exec(rbk__sqlite_store_t *s, const char *sql,
                                  char *errstr, size_t errstr_size) {
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
                return rbk__sqlite_err(s->db, errstr, errstr_size, sql);
        return RBK_OK;
}

/* Deletes the partition's rbk_dedup_txn rows that the window being saved
 * (@blob, for @next_offset) makes redundant; the others stay. Inside the
 * save's transaction, the store locked. A blob the dedup module cannot read
 * prunes nothing. */
static rbk_err_t rbk__sqlite_prune(rbk__sqlite_store_t *s, const char *group,
                                   const char *topic, int32_t partition,
                                   const void *blob, size_t size,
                                   int64_t next_offset, char *errstr,
                                   size_t errstr_size) {
        rbk__dedup_proof_t *pf = NULL; /* read at the first row only */
        /* The ids to delete, collected first: no row is deleted while the
         * query over the same rows is stepping. */
        GPtrArray *gone = g_ptr_array_new_with_free_func(
            (GDestroyNotify)g_bytes_unref);
        rbk_err_t r = RBK_OK;
        int rc;
        rbk__sqlite_bind_key(s->rows, group, topic, partition);
        while ((rc = sqlite3_step(s->rows)) == SQLITE_ROW) {
                if (!pf && !(pf = rbk__dedup_proof_new(blob, size, NULL, 0))) {
                        rc = SQLITE_DONE; /* unreadable: nothing pruned */
                        break;
                }
                const void *id = sqlite3_column_blob(s->rows, 0);
                int len = sqlite3_column_bytes(s->rows, 0);
                int64_t off = sqlite3_column_int64(s->rows, 1);
                if (len > 0 &&
                    rbk__dedup_proof_prunes(pf, id, (size_t)len,
                                            next_offset >= 0 &&
                                                off < next_offset))
                        g_ptr_array_add(gone, g_bytes_new(id, (gsize)len));
        }
        if (rc != SQLITE_DONE)
                r = rbk__sqlite_err(s->db, errstr, errstr_size,
                                    "reading recorded ids");
        sqlite3_reset(s->rows);
        sqlite3_clear_bindings(s->rows);
        rbk__dedup_proof_free(pf);
        for (guint i = 0; r == RBK_OK && i < gone->len; i++) {
                gsize len;
                const void *id = g_bytes_get_data(gone->pdata[i], &len);
                rbk__sqlite_bind_key(s->prune, group, topic, partition);
                sqlite3_bind_blob(s->prune, 4, id, (int)len, SQLITE_STATIC);
                if (sqlite3_step(s->prune) != SQLITE_DONE)
                        r = rbk__sqlite_err(s->db, errstr, errstr_size,
                                            "pruning recorded ids");
                sqlite3_reset(s->prune);
                sqlite3_clear_bindings(s->prune);
        }
        g_ptr_array_free(gone, TRUE);
        return r;
}

static rbk_err_t rbk__sqlite_save(const char *group, const char *topic,
                                  int32_t partition, const void *blob,
                                  size_t size, int64_t next_offset,
                                  char *errstr, size_t errstr_size,
                                  void *opaque) {
        rbk__sqlite_store_t *s = opaque;
        rbk_err_t r = rbk__sqlite_forked(s, errstr, errstr_size);

        if (r != RBK_OK)
                return r;
        if (size > INT32_MAX)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_STORE,
                                   "sqlite dedup store: window of %zu bytes "
                                   "is too large", size);
        g_mutex_lock(&s->lock);
        r = rbk__sqlite_exec(s, "BEGIN IMMEDIATE", errstr, errstr_size);
        if (r != RBK_OK)
                goto out;

        rbk__sqlite_bind_key(s->save, group, topic, partition);
        sqlite3_bind_blob(s->save, 4, blob, (int)size, SQLITE_STATIC);
        sqlite3_bind_int64(s->save, 5, next_offset);
        sqlite3_bind_int64(s->save, 6, g_get_real_time() / 1000);
        if (sqlite3_step(s->save) != SQLITE_DONE)
                r = rbk__sqlite_err(s->db, errstr, errstr_size,
                                    "saving a window");
        sqlite3_reset(s->save);
        sqlite3_clear_bindings(s->save);

        if (r == RBK_OK)
                r = rbk__sqlite_prune(s, group, topic, partition, blob, size,
                                      next_offset, errstr, errstr_size);

        if (r == RBK_OK)
                r = rbk__sqlite_exec(s, "COMMIT", errstr, errstr_size);
        if (r != RBK_OK)
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
out:
        g_mutex_unlock(&s->lock);
        return r;
}

static int rbk__sqlite_seen(const char *group, const char *topic,
                            int32_t partition, const void *id, size_t id_len,
                            char *errstr, size_t errstr_size, void *opaque) {
        rbk__sqlite_store_t *s = opaque;
        int rc, ret;

        if (rbk__sqlite_forked(s, errstr, errstr_size) != RBK_OK)
                return -1;
        if (id_len > INT32_MAX)
                return 0;
        g_mutex_lock(&s->lock);
        rbk__sqlite_bind_key(s->seen, group, topic, partition);
        sqlite3_bind_blob(s->seen, 4, id, (int)id_len, SQLITE_STATIC);
        rc = sqlite3_step(s->seen);
        if (rc == SQLITE_ROW)
                ret = 1;
        else if (rc == SQLITE_DONE)
                ret = 0;
        else {
                rbk__sqlite_err(s->db, errstr, errstr_size,
                                "looking up a recorded id");
                ret = -1;
        }
        sqlite3_reset(s->seen);
        sqlite3_clear_bindings(s->seen);
        g_mutex_unlock(&s->lock);
        return ret;
}

static int rbk__sqlite_prepare(rbk__sqlite_store_t *s, const char *sql,
                               sqlite3_stmt **st, char *errstr,
                               size_t errstr_size) {
        if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
                               NULL) != SQLITE_OK) {
                rbk__sqlite_err(s->db, errstr, errstr_size, "preparing");
                return -1;
        }
        return 0;
}

rbk_dedup_store_t *rbk_dedup_sqlite_new(const char *path, char *errstr,
                                        size_t errstr_size) {
        rbk__sqlite_store_t *s;
        sqlite3_stmt *st = NULL;
        int rc;

        if (!path || !*path) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "rbk_dedup_sqlite_new: empty database path");
                return NULL;
        }
        s = g_new0(rbk__sqlite_store_t, 1);
        s->pid = rbk__getpid();
        g_mutex_init(&s->lock);
        rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                 SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc != SQLITE_OK) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_STORE,
                            "sqlite dedup store: cannot open %s: %s", path,
                            s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
                goto fail;
        }
        sqlite3_busy_timeout(s->db, RBK__SQLITE_BUSY_MS);

        /* WAL: readers (the application's, `seen`) do not block the writer.
         * synchronous=NORMAL: a power loss may lose the last saves; that
         * only lets duplicates through (docs/dedup.md). */
        if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st,
                               NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
                rbk__sqlite_err(s->db, errstr, errstr_size,
                                "setting journal_mode=WAL");
                goto fail;
        }
        if (g_ascii_strcasecmp((const char *)sqlite3_column_text(st, 0),
                               "wal")) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_STORE,
                            "sqlite dedup store: %s: journal_mode is %s, "
                            "WAL could not be enabled",
                            path, (const char *)sqlite3_column_text(st, 0));
                goto fail;
        }
        sqlite3_finalize(st);
        st = NULL;
        if (rbk__sqlite_exec(s, "PRAGMA synchronous=NORMAL", errstr,
                             errstr_size) != RBK_OK ||
            rbk__sqlite_exec(s, rbk__sqlite_schema, errstr, errstr_size) !=
                RBK_OK)
                goto fail;

        if (rbk__sqlite_prepare(
                s,
                "SELECT blob, next_offset FROM rbk_dedup_window"
                " WHERE grp = ?1 AND topic = ?2 AND part = ?3",
                &s->load, errstr, errstr_size) ||
            rbk__sqlite_prepare(
                s,
                "INSERT OR REPLACE INTO rbk_dedup_window"
                " (grp, topic, part, blob, next_offset, saved_ms)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &s->save, errstr, errstr_size) ||
            rbk__sqlite_prepare(
                s,
                "SELECT id, off FROM rbk_dedup_txn"
                " WHERE grp = ?1 AND topic = ?2 AND part = ?3"
                " ORDER BY off DESC",
                &s->rows, errstr, errstr_size) ||
            rbk__sqlite_prepare(
                s,
                "DELETE FROM rbk_dedup_txn"
                " WHERE grp = ?1 AND topic = ?2 AND part = ?3 AND id = ?4",
                &s->prune, errstr, errstr_size) ||
            rbk__sqlite_prepare(
                s,
                "SELECT 1 FROM rbk_dedup_txn"
                " WHERE grp = ?1 AND topic = ?2 AND part = ?3 AND id = ?4",
                &s->seen, errstr, errstr_size))
                goto fail;

        s->pub.version = RBK_DEDUP_STORE_VERSION;
        s->pub.load = rbk__sqlite_load;
        s->pub.save = rbk__sqlite_save;
        s->pub.seen = rbk__sqlite_seen;
        s->pub.destroy = rbk__sqlite_destroy;
        s->pub.opaque = s;
        return &s->pub;

fail:
        sqlite3_finalize(st);
        rbk__sqlite_destroy(s);
        return NULL;
}

rbk_err_t rbk_dedup_sqlite_record_in_txn(void *sqlite3_db, const char *group,
                                         const rbk_message_t *msg,
                                         char *errstr, size_t errstr_size) {
        sqlite3 *db = sqlite3_db;
        sqlite3_stmt *st = NULL;
        size_t len;
        int rc;
        static const char sql[] =
            "INSERT OR IGNORE INTO rbk_dedup_txn (grp, topic, part, id, off)"
            " VALUES (?1, ?2, ?3, ?4, ?5)";

        if (!db || !group || !msg || !msg->topic)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "rbk_dedup_sqlite_record_in_txn: NULL "
                                   "argument");
        if (!msg->id || !(len = strlen(msg->id)))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "rbk_dedup_sqlite_record_in_txn: the "
                                   "message has no rbk-id header");
        if (sqlite3_get_autocommit(db))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "rbk_dedup_sqlite_record_in_txn: the "
                                   "connection is not inside a transaction "
                                   "(call it between BEGIN and COMMIT)");

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK) {
                /* A database the store never opened: create the tables
                 * inside the application's transaction. */
                if (sqlite3_exec(db, rbk__sqlite_schema, NULL, NULL, NULL) !=
                        SQLITE_OK ||
                    sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
                        return rbk__sqlite_err(db, errstr, errstr_size,
                                               "recording an id");
        }
        sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, msg->topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, msg->partition);
        sqlite3_bind_blob(st, 4, msg->id, (int)(len > INT32_MAX ? 0 : len),
                          SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, msg->offset);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return rbk__sqlite_err(db, errstr, errstr_size,
                                       "recording an id");
        return RBK_OK;
}
