/**
 * @file robustkafka/dedup.h
 * @brief Duplicate dropping: where the consumer keeps its windows of seen
 * message ids across restarts and rebalances.
 *
 * The consumer drops a message only when its `rbk-id` was provably recorded
 * before (after a handler succeeded for it). Without a store, the windows
 * live in memory and start empty on every assignment. With a store, each
 * partition's window is saved before every offset commit and loaded when the
 * partition is assigned, so duplicates delivered after a restart or a
 * rebalance are dropped too. docs/dedup.md describes the windows, the
 * guarantees and the crash semantics.
 */
#ifndef ROBUSTKAFKA_DEDUP_H
#define ROBUSTKAFKA_DEDUP_H

#include "common.h"
#include "conf.h"
#include "consumer.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Loads the saved window of a partition.
 *
 * Called on the consumer's poll thread when the partition is assigned.
 * @param group consumer group (without the configured prefix).
 * @param topic topic (without the configured prefix).
 * @param partition partition.
 * @param blobp receives the saved bytes, allocated with malloc(); the library
 * frees them with free(). Untouched when nothing is saved.
 * @param sizep receives the size of @p *blobp.
 * @param next_offsetp receives the offset given to the save that wrote the
 * blob (may be ignored by the store: then leave it untouched).
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @param opaque the store's opaque.
 * @returns RBK_OK with a blob, RBK_ERR_NOT_FOUND when nothing is saved (not
 * an error: the partition starts empty), any other code on failure (the
 * partition starts empty and RBK_EV_DEDUP_STORE_ERROR fires).
 */
typedef rbk_err_t(rbk_dedup_load_cb_t)(const char *group, const char *topic,
                                       int32_t partition, void **blobp,
                                       size_t *sizep, int64_t *next_offsetp,
                                       char *errstr, size_t errstr_size,
                                       void *opaque);

/**
 * @brief Saves the window of a partition, replacing the one saved before.
 *
 * Called before each offset commit of the partition (on the thread that
 * commits), only when ids were recorded since the last successful save. The
 * save must be atomic: a later load returns either the old or the new blob.
 * @param group the consumer group (without prefix).
 * @param topic the topic (without prefix).
 * @param partition the partition.
 * @param blob the bytes to keep (owned by the library, valid during the
 * call); opaque to the store (a versioned, checksummed format).
 * @param size size of @p blob.
 * @param next_offset the offset about to be committed; every message below it
 * has been handled. A store may use it to prune what it keeps.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @param opaque rbk_dedup_store_t.opaque.
 * @returns RBK_OK, or an error with the reason in @p errstr (the commit goes
 * on; duplicates may pass after a restart, nothing is lost).
 */
typedef rbk_err_t(rbk_dedup_save_cb_t)(const char *group, const char *topic,
                                       int32_t partition, const void *blob,
                                       size_t size, int64_t next_offset,
                                       char *errstr, size_t errstr_size,
                                       void *opaque);

/**
 * @brief Optional: was this id recorded outside the windows (for example by
 * the handler, in its own database transaction)?
 *
 * Called on a worker thread for each message the in-memory window does not
 * already prove to be a duplicate; calls for different partitions may run
 * concurrently.
 * @param group the consumer group (without prefix).
 * @param topic the topic (without prefix).
 * @param partition the partition.
 * @param id the raw `rbk-id` header value (not NUL-terminated).
 * @param id_len its size.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @param opaque rbk_dedup_store_t.opaque.
 * @returns 1 if recorded (the message is dropped as a duplicate), 0 if not,
 * -1 on failure with the reason in @p errstr (the message is handed to the
 * handler and RBK_EV_DEDUP_STORE_ERROR fires).
 */
typedef int(rbk_dedup_seen_cb_t)(const char *group, const char *topic,
                                 int32_t partition, const void *id,
                                 size_t id_len, char *errstr,
                                 size_t errstr_size, void *opaque);

/**
 * @brief Releases the store: called exactly once, when the last
 * configuration and the last consumer using the store are gone.
 * @param opaque the store's opaque.
 */
typedef void(rbk_dedup_destroy_cb_t)(void *opaque);

/**
 * @brief A dedup store: a versioned table of callbacks and an opaque.
 *
 * Initialise with RBK_DEDUP_STORE_INIT, then set the callbacks. `load` and
 * `save` are required, `seen` and `destroy` optional. The callbacks may be
 * called concurrently for different partitions and must be thread-safe.
 */
typedef struct rbk_dedup_store_s {
        int version;                     /**< RBK_DEDUP_STORE_VERSION. */
        rbk_dedup_load_cb_t *load;       /**< Required. */
        rbk_dedup_save_cb_t *save;       /**< Required. */
        rbk_dedup_seen_cb_t *seen;       /**< Optional (NULL). */
        rbk_dedup_destroy_cb_t *destroy; /**< Optional (NULL). */
        void *opaque;                    /**< Passed last to every callback. */
} rbk_dedup_store_t;

/** The current rbk_dedup_store_t layout version. */
#define RBK_DEDUP_STORE_VERSION 1
/** Initialiser of an rbk_dedup_store_t: version set, everything else NULL. */
#define RBK_DEDUP_STORE_INIT {RBK_DEDUP_STORE_VERSION, NULL, NULL, NULL, NULL, NULL}

/**
 * @brief Gives consumers created from @p conf a dedup store.
 *
 * The struct is copied. On success the library owns the store's opaque:
 * `destroy(opaque)` is called exactly once, when the last configuration
 * (copies made by rbk_conf_dup() share it) and the last consumer using it
 * are destroyed, or when it is replaced by another call. On error nothing
 * changes and the caller still owns the store.
 * @param conf the configuration.
 * @param store the store, or NULL to remove the current one.
 * @param errstr buffer for a message naming the problem (may be NULL).
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG for a NULL @p conf, an unknown
 * version or a missing required callback.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API rbk_err_t rbk_conf_set_dedup_store(rbk_conf_t *conf,
                                           const rbk_dedup_store_t *store,
                                           char *errstr, size_t errstr_size);

/**
 * @brief A persistent store in an SQLite database file (WAL mode).
 *
 * Creates the file and the tables `rbk_dedup_window` (one saved window per
 * group, topic and partition) and `rbk_dedup_txn` (ids recorded by
 * rbk_dedup_sqlite_record_in_txn()) if needed. The database may be the
 * application's own: the tables' names start with `rbk_dedup_`.
 * @param path the database file.
 * @param errstr buffer for a message naming the problem (may be NULL).
 * @param errstr_size size of @p errstr.
 * @returns a store to hand to rbk_conf_set_dedup_store() (which then owns
 * it), or to release with `store->destroy(store->opaque)` if never handed
 * over; NULL with the reason in @p errstr. The returned pointer stays valid
 * until the store is destroyed. In a forked child of the process that
 * opened it, the store's `load` and `save` return RBK_ERR_FORKED, `seen`
 * returns -1 (the reason in their errstr) and `destroy` frees nothing:
 * the connection is the parent's, and SQLite forbids using a connection
 * across fork(). Open the store after fork().
 * Thread-safety: safe from any thread; the store serialises its own use of
 * the database.
 */
RBK_API rbk_dedup_store_t *rbk_dedup_sqlite_new(const char *path, char *errstr,
                                                size_t errstr_size);

/**
 * @brief Records a message's id as handled, inside the application's own
 * transaction on the same SQLite database.
 *
 * Call it from the handler, on the application's connection, between its
 * `BEGIN` and `COMMIT`, next to the writes that apply the message's effect.
 * Both commit together or not at all; after a crash between the handler's
 * commit and the consumer's offset commit, the redelivered message is
 * recognised as a duplicate (the store's `seen` consults this table) and
 * the effect is not applied twice. A row is pruned when the store saves
 * that partition's window only if the saved window makes it redundant: the
 * window proves the id, or (for a row below the offset saved for) has moved
 * past it; a row the window does not prove stays, whatever its offset
 * (docs/dedup.md gives the rule and its bound).
 * @param sqlite3_db the application's `sqlite3 *` connection, inside a
 * transaction, to the database given to rbk_dedup_sqlite_new().
 * @param group the consumer group (as configured, without the prefix).
 * @param msg the message being handled; it must carry an `rbk-id`.
 * @param errstr buffer for a message naming the problem (may be NULL).
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK (also when the id was already recorded);
 * RBK_ERR_INVALID_ARG (NULL argument, message without an id, connection not
 * inside a transaction); RBK_ERR_STORE (SQLite failed: roll back).
 * Thread-safety: as the SQLite connection (one thread at a time).
 */
RBK_API rbk_err_t rbk_dedup_sqlite_record_in_txn(void *sqlite3_db,
                                                 const char *group,
                                                 const rbk_message_t *msg,
                                                 char *errstr,
                                                 size_t errstr_size);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_DEDUP_H */
