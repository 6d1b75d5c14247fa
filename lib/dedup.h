/* Duplicate dropping: the consumer's internal interface to the dedup windows
 * (lib/dedup.c) and the persistent stores (lib/dedup_sqlite.c).
 *
 * One rbk__dedup_t per consumer. Per assigned partition it keeps:
 *   - for ids in the library's format (`<16 hex producer id>-<seq>`), per
 *     producer id a high-water mark plus a sliding bitmap of the last
 *     `rbk.dedup.window` sequences, at most `rbk.dedup.max.producers`
 *     producers (least recently recorded forgotten first). At most
 *     `rbk.dedup.active.producers` of them hold the bitmap; the others
 *     (idle) hold it compacted into runs, at most `rbk.dedup.idle.bytes`
 *     in all (least recently recorded forgotten first), and get it back
 *     expanded when recorded again;
 *   - for any other `rbk-id` value (caller-supplied ids), an exact-match set
 *     of the last `rbk.dedup.foreign.window` ids, oldest evicted first.
 *
 * The one invariant: rbk__dedup_check() answers RBK__DEDUP_DUPLICATE only for
 * an id that rbk__dedup_record() recorded before (in this process, or in a
 * saved window loaded from the store, or in the store's in-transaction table).
 * Anything evicted, too old or unknown is RBK__DEDUP_UNPROVABLE or
 * RBK__DEDUP_NEW, and the consumer passes it to the handler.
 *
 * Names: topic and group are the names the application sees (without the
 * `rbk.prefix` / KAFKA_PREFIX), because the store keys saved windows by them
 * and rbk_dedup_sqlite_record_in_txn() is called by the application with them.
 *
 * Thread-safety: calls for different partitions may run concurrently on
 * different threads. Calls for one partition should come in order (check,
 * then record, of one message after the other), but every call is
 * memory-safe against any other: each partition has its own lock, and its
 * entry lives until rbk__dedup_destroy(). In particular a handler finishing
 * after its partition was revoked (lost, or the revoke timed out) may still
 * call check/record: check answers UNPROVABLE and record does nothing until
 * the partition is assigned again. rbk__dedup_commit(), rbk__dedup_memory()
 * and rbk__dedup_partition_counts() are safe from any thread at any time.
 * rbk__dedup_new()/rbk__dedup_destroy() must not race with other calls.
 */
#ifndef RBK_DEDUP_INTERNAL_H
#define RBK_DEDUP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "robustkafka.h"

/* Configuration properties read by rbk__dedup_new() and their defaults. */
#define RBK__DEDUP_WINDOW_PROP "rbk.dedup.window"
#define RBK__DEDUP_WINDOW_DEFAULT 262144 /* sequences; power of two, 64..16777216 */
#define RBK__DEDUP_MAX_PRODUCERS_PROP "rbk.dedup.max.producers"
#define RBK__DEDUP_MAX_PRODUCERS_DEFAULT 1024 /* 1..65536 per partition (larger: 65536) */
#define RBK__DEDUP_ACTIVE_PRODUCERS_PROP "rbk.dedup.active.producers"
#define RBK__DEDUP_ACTIVE_PRODUCERS_DEFAULT 128 /* bitmaps per partition; 1..1024 */
#define RBK__DEDUP_IDLE_BYTES_PROP "rbk.dedup.idle.bytes"
#define RBK__DEDUP_IDLE_BYTES_DEFAULT 1048576 /* compacted windows per partition; 0..2^30 */
#define RBK__DEDUP_FOREIGN_WINDOW_PROP "rbk.dedup.foreign.window"
#define RBK__DEDUP_FOREIGN_WINDOW_DEFAULT 10000 /* ids; 0..10000000 (0: off) */

typedef struct rbk__dedup_s rbk__dedup_t; /* one per consumer */

typedef enum {
        RBK__DEDUP_NEW = 0,     /* not seen: hand to the handler */
        RBK__DEDUP_DUPLICATE,   /* provably recorded before: drop (and store the offset) */
        RBK__DEDUP_UNPROVABLE,  /* too old / evicted / store error: hand to the handler */
        RBK__DEDUP_NO_ID        /* no id (NULL or empty): hand to the handler */
} rbk__dedup_verdict_t;

/* A new dedup state for one consumer. Reads rbk.dedup.* from @conf (NULL:
 * all defaults; an invalid value falls back to its default — values are
 * validated when set, see rbk__dedup_conf_check()) and takes a reference on
 * conf->dedup_store if set. @group is copied. Never NULL except on OOM. */
rbk__dedup_t *rbk__dedup_new(const rbk_conf_t *conf, const char *group);
/* Frees everything and drops the store reference (the store's destroy
 * callback runs when the last reference goes). Accepts NULL. */
void rbk__dedup_destroy(rbk__dedup_t *d);

/* Error reporting: store load failures, corrupt saved windows (the partition
 * then starts empty) and store lookup failures in rbk__dedup_check() are
 * reported through this callback, on the thread making the call, with no
 * dedup lock held (it must not call rbk__dedup_* for the same partition).
 * The consumer turns them into RBK_EV_DEDUP_STORE_ERROR. Errors of
 * rbk__dedup_commit() are returned, not reported here. */
typedef void(rbk__dedup_error_cb_t)(const char *topic, int32_t partition,
                                    rbk_err_t err, const char *reason,
                                    void *opaque);
void rbk__dedup_set_error_cb(rbk__dedup_t *d, rbk__dedup_error_cb_t *cb,
                             void *opaque);

/* Capacity reporting: when a partition forgets a producer's window (more
 * than rbk.dedup.max.producers producers, or the idle windows over
 * rbk.dedup.idle.bytes), duplicates of that producer's earlier messages
 * pass from then on. The callback reports it at most once per partition per
 * window (rbk.dedup.window records on the partition), from the first loss
 * on, with the number of windows forgotten since the last report; on the
 * thread recording the id, with no dedup lock held (it must not call
 * rbk__dedup_* for the same partition). The consumer turns it into
 * RBK_EV_DEDUP_CAPACITY. */
typedef void(rbk__dedup_capacity_cb_t)(const char *topic, int32_t partition,
                                       uint64_t forgotten, const char *reason,
                                       void *opaque);
void rbk__dedup_set_capacity_cb(rbk__dedup_t *d,
                                rbk__dedup_capacity_cb_t *cb, void *opaque);

/* The partition is now ours: creates its windows, loading the saved window
 * from the store if any (a missing one is not an error; a corrupt one is
 * reported through the error callback and the partition starts empty). A
 * window kept from an earlier assignment in this process is reused unless
 * the store's saved window is newer (saved at an offset beyond the last one
 * recorded here: another consumer handled the partition in between).
 * Idempotent: assigning an already-assigned partition keeps its windows.
 * (check/record on a partition that was never assigned assign it first;
 * on a revoked one they do not, see above.) */
void rbk__dedup_assign(rbk__dedup_t *d, const char *topic, int32_t partition);
/* The partition is no longer ours: resets its counters and stops
 * check/record on it, but keeps its windows in memory, so a partition lost
 * and assigned back (a coordinator failover, a session timeout) still drops
 * what this process already handled. Windows of every partition ever
 * assigned stay until rbk__dedup_destroy() (bounded by the partitions of the
 * subscribed topics). Call rbk__dedup_commit() first on a clean revoke. */
void rbk__dedup_revoke(rbk__dedup_t *d, const char *topic, int32_t partition);

/* Called on the partition's worker thread right before the handler: is this
 * id provably seen? Does not record. id/id_len is the raw `rbk-id` header
 * value (need not be NUL-terminated); NULL or 0 length gives NO_ID. Counts
 * DUPLICATE, UNPROVABLE and NO_ID verdicts per partition. */
rbk__dedup_verdict_t rbk__dedup_check(rbk__dedup_t *d, const char *topic,
                                      int32_t partition, const void *id,
                                      size_t id_len);
/* After the handler succeeded (or the message went to the dead-letter
 * topic): record the id as seen. NULL/empty ids are ignored. @offset is the
 * message's offset. */
void rbk__dedup_record(rbk__dedup_t *d, const char *topic, int32_t partition,
                       const void *id, size_t id_len, int64_t offset);

/* The same two calls for an id the caller has already parsed (the consumer
 * fills rbk_message_t.msgid anyway): @msgid is the result of a successful
 * rbk_msgid_parse(id, id_len), or NULL when that parse failed (a
 * caller-supplied id). Saves the parse on the per-message path. */
rbk__dedup_verdict_t rbk__dedup_check_msgid(rbk__dedup_t *d, const char *topic,
                                            int32_t partition, const void *id,
                                            size_t id_len,
                                            const rbk_msgid_t *msgid);
void rbk__dedup_record_msgid(rbk__dedup_t *d, const char *topic,
                             int32_t partition, const void *id, size_t id_len,
                             const rbk_msgid_t *msgid, int64_t offset);

/* A handle on one partition's windows, for the per-message calls without
 * the partition lookup (the consumer keeps it in its own partition state).
 * Created if absent; valid until rbk__dedup_destroy() (a partition's
 * windows outlive its assignments). NULL only for a NULL @d or @topic. */
typedef struct rbk__dpart_s rbk__dedup_part_t;
rbk__dedup_part_t *rbk__dedup_part(rbk__dedup_t *d, const char *topic,
                                   int32_t partition);
/* rbk__dedup_check_msgid() / rbk__dedup_record_msgid() on a handle: the
 * same verdicts, counters, locking and assignment rules. */
rbk__dedup_verdict_t rbk__dedup_check_part(rbk__dedup_t *d,
                                           rbk__dedup_part_t *dp,
                                           const void *id, size_t id_len,
                                           const rbk_msgid_t *msgid);
void rbk__dedup_record_part(rbk__dedup_t *d, rbk__dedup_part_t *dp,
                            const void *id, size_t id_len,
                            const rbk_msgid_t *msgid, int64_t offset);

/* Before (or together with) an offset commit of this partition: persists
 * its windows to the store. @next_offset is the offset being committed.
 * No-op (RBK_OK) without a store or when nothing was recorded since the last
 * successful save. Returns RBK_ERR_STORE with the reason in errstr when the
 * store failed (duplicates may then pass after a restart; never a loss). */
rbk_err_t rbk__dedup_commit(rbk__dedup_t *d, const char *topic,
                            int32_t partition, int64_t next_offset,
                            char *errstr, size_t errstr_size);

/* Stats. Bytes held by all windows of this consumer. */
size_t rbk__dedup_memory(rbk__dedup_t *d);
/* Counters of one partition since it was assigned (zeros if not assigned).
 * Any output pointer may be NULL. */
void rbk__dedup_partition_counts(rbk__dedup_t *d, const char *topic,
                                 int32_t partition, uint64_t *dups,
                                 uint64_t *unprovable, uint64_t *no_id);

/* ---- for stores: what a saved window proves ----
 *
 * The SQLite store keeps ids the application recorded in its own
 * transactions beside the saved windows, and prunes a row only when the
 * window it saves makes the row redundant. The window's format belongs to
 * this module, so the store asks it:
 *
 * rbk__dedup_proof_new() reads a blob (as given to a store's save; it must
 * stay valid while the proof is used): NULL with the reason in @errstr for a
 * blob that fails any check. rbk__dedup_proof_prunes() says whether the row
 * of @id may go, given whether its offset is below the offset the window is
 * saved for (@below). Call it for the rows of one partition from the
 * highest offset down. 1 when:
 *   - the window proves the id (it would drop it as a duplicate), whatever
 *     the offset; or, for a row below the offset only:
 *   - the window has moved past the id (it would call it unprovable): an id
 *     of the library's format at least the window size (the blob's) below
 *     its producer's high-water mark, below the producer's floor, or of a
 *     producer forgotten past it;
 *   - the window cannot place the id (a caller-supplied id it does not
 *     hold, a producer it does not track) and the window size of such rows
 *     with higher offsets are kept already.
 * 0 otherwise: the row stays, and `seen` goes on proving its id. */
typedef struct rbk__dedup_proof_s rbk__dedup_proof_t;
rbk__dedup_proof_t *rbk__dedup_proof_new(const void *blob, size_t size,
                                         char *errstr, size_t errstr_size);
int rbk__dedup_proof_prunes(rbk__dedup_proof_t *pf, const void *id,
                            size_t id_len, int below);
void rbk__dedup_proof_free(rbk__dedup_proof_t *pf);

/* ---- hooks for conf.c ---- */

/* Validates a value of an rbk.dedup.* property: RBK_OK, RBK_ERR_CONF with
 * the reason, or RBK_ERR_NOT_FOUND if @name is not an rbk.dedup.* property
 * this file knows. */
rbk_err_t rbk__dedup_conf_check(const char *name, const char *value,
                                char *errstr, size_t errstr_size);
/* conf->dedup_store is the store's holder (rbk_conf_set_dedup_store()),
 * reference-counted through rbk__held_ref()/rbk__held_unref(). */

#endif /* RBK_DEDUP_INTERNAL_H */
