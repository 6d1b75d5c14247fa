/**
 * @file robustkafka/consumer.h
 * @brief The robust group consumer: at least once, in order per partition,
 * partitions in parallel, retry without skipping, dead letters, duplicate
 * dropping, and quarantine of out-of-range partitions (never an automatic
 * offset reset).
 */
#ifndef ROBUSTKAFKA_CONSUMER_H
#define ROBUSTKAFKA_CONSUMER_H

#include "common.h"
#include "conf.h"
#include "msgid.h"
#include "registry.h" /* rbk_shutdown() closes rbk_consumer_get() clients */

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque consumer handle. */
typedef struct rbk_consumer_s rbk_consumer_t;

/**
 * @brief A received message. Owned by the library; valid during the handler
 * call (run API) or until rbk_consumer_done() (poll API).
 */
typedef struct rbk_message_s {
        int version;            /**< RBK_MESSAGE_VERSION. */
        const char *topic;      /**< Topic, prefix stripped. */
        int32_t partition;      /**< Partition. */
        int64_t offset;         /**< Offset. */
        int64_t timestamp;      /**< Milliseconds since the epoch, or -1. */
        const void *key;        /**< Key bytes, or NULL. */
        size_t key_len;         /**< Key size. */
        const void *value;      /**< Value bytes, or NULL. */
        size_t value_len;       /**< Value size. */
        const char *id;         /**< The `rbk-id` header as a string, or NULL. */
        int has_msgid;          /**< 1 if @ref id is in the library's format (then @ref msgid is set). */
        rbk_msgid_t msgid;      /**< Parsed id when @ref has_msgid. */
        int attempt;            /**< 1 on first delivery to the handler, 2+ on retries. */
        int possibly_duplicate; /**< 1 if marked re-sent by the producer's fatal-error recovery. */
        void *internal_;        /**< Library use only. */
} rbk_message_t;

/** The current rbk_message_t layout version. */
#define RBK_MESSAGE_VERSION 1

/**
 * @brief Looks up a header of a received message (the last one of that name).
 * @returns RBK_OK with @p valuep / @p sizep set, or RBK_ERR_NOT_FOUND.
 * Thread-safety: while the message is valid, from the thread handling it.
 */
RBK_API rbk_err_t rbk_message_header(const rbk_message_t *msg,
                                     const char *name, const void **valuep,
                                     size_t *sizep);

/**
 * @brief How many headers a received message carries, the library's own
 * (`rbk-id`, `rbk-resent`) included.
 * @param msg the message.
 * @returns the number of headers; 0 for none or a NULL @p msg.
 * Thread-safety: while the message is valid, from the thread handling it.
 */
RBK_API size_t rbk_message_header_count(const rbk_message_t *msg);

/**
 * @brief The header at position @p idx of a received message, in the order
 * they were produced (duplicate names included, the library's own headers
 * too), for iterating from 0 until RBK_ERR_NOT_FOUND.
 * @param msg the message.
 * @param idx position, from 0.
 * @param namep if not NULL, receives the NUL-terminated name.
 * @param valuep if not NULL, receives the value bytes (NULL for a null
 * value).
 * @param sizep if not NULL, receives the value size.
 * @returns RBK_OK; RBK_ERR_NOT_FOUND when @p idx is past the last header
 * (then nothing is written); RBK_ERR_INVALID_ARG for a NULL @p msg. The
 * name and value belong to the message and are valid as long as it is.
 * Thread-safety: while the message is valid, from the thread handling it.
 */
RBK_API rbk_err_t rbk_message_header_at(const rbk_message_t *msg, size_t idx,
                                        const char **namep,
                                        const void **valuep, size_t *sizep);

/** The handler's verdict on a message. */
typedef enum rbk_verdict_t {
        RBK_HANDLED = 0,   /**< Done: the offset is stored (and committed later). */
        RBK_RETRY = 1,     /**< Hand me the same message again after a backoff. */
        RBK_DEADLETTER = 2 /**< A poison message: do not retry. Sent to the
                            *   dead-letter topic at once (with the reason set by
                            *   rbk_message_set_error()); with `rbk.consumer.giveup=pause`
                            *   the partition is held as after the last retry. */
} rbk_verdict_t;

/**
 * @brief Sets why the handler rejects @p msg, carried on its dead letter as
 * the `rbk-dlq-reason` header and in the hook's message. Call it before
 * returning RBK_RETRY (kept for the give-up) or RBK_DEADLETTER.
 * @param msg the message being handled (run API: during the handler call;
 * poll API: before rbk_consumer_done()).
 * @param reason text, copied; at most 1024 bytes are kept. NULL clears it.
 * @returns RBK_OK, or RBK_ERR_INVALID_ARG for a NULL or foreign message.
 * Thread-safety: from the thread handling the message.
 */
RBK_API rbk_err_t rbk_message_set_error(const rbk_message_t *msg,
                                        const char *reason);

/**
 * @brief The message handler. Called on a worker thread; messages of one
 * partition are handled one at a time in offset order, different partitions
 * in parallel (`rbk.consumer.workers` threads).
 */
typedef rbk_verdict_t(rbk_handler_t)(const rbk_message_t *msg, void *opaque);

/**
 * @brief The batch handler: up to `rbk.consumer.batch.max.messages`
 * messages of one partition, in offset order, already de-duplicated (a
 * batch that waited `rbk.consumer.batch.max.ms` for more may be smaller).
 * Called on a worker thread, as rbk_handler_t.
 * @param msgs the messages, valid during the call.
 * @param n how many (at least 1).
 * @param rest receives the verdict on msgs[returned value] when fewer than
 * @p n were handled: RBK_RETRY (that message again after the backoff, with
 * the ones after it) or RBK_DEADLETTER (poison); preset to RBK_RETRY.
 * @param opaque as given to rbk_consumer_run_batch().
 * @returns how many messages, from the first, were handled (0..n): their
 * offsets are stored; the messages after the one @p rest applies to come
 * again in the next batch.
 */
typedef size_t(rbk_batch_handler_t)(const rbk_message_t *const *msgs,
                                    size_t n, rbk_verdict_t *rest,
                                    void *opaque);

/** What a rebalance did to a partition. */
typedef enum rbk_rebalance_t {
        RBK_ASSIGNED = 1, /**< Now ours. */
        RBK_REVOKED = 2,  /**< Handed back cleanly; stored offsets were committed. */
        RBK_LOST = 3      /**< Taken away without a clean hand-over; nothing was committed. */
} rbk_rebalance_t;

/**
 * @brief Rebalance callback, called once per partition on the consumer's poll
 * thread after the library has done its own work for that partition.
 */
typedef void(rbk_rebalance_cb_t)(rbk_rebalance_t what, const char *topic,
                                 int32_t partition, void *opaque);

/**
 * @brief Sets the rebalance callback of consumers created from @p conf.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API void rbk_conf_set_rebalance_cb(rbk_conf_t *conf,
                                       rbk_rebalance_cb_t *cb, void *opaque);

/**
 * @brief Creates a group consumer (prefer rbk_consumer_get()). `group.id`
 * is required.
 * @param conf configuration; copied, the caller keeps ownership.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns the consumer, or NULL with the reason in @p errstr.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_consumer_t *rbk_consumer_new(const rbk_conf_t *conf, char *errstr,
                                         size_t errstr_size);

/**
 * @brief Subscribes to topics (names without the configured prefix). A
 * name starting with `^` is a regular expression (librdkafka's regex
 * subscription, matched against the cluster's topics as they come and go),
 * anchored after the configured prefix: with `rbk.prefix=app1.`,
 * `^orders\..*` subscribes to `app1.orders.*` and nothing outside the
 * prefix.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG (NULL or empty list),
 * RBK_ERR_INVALID_TOPIC (a name, or a pattern that does not compile, named
 * in @p errstr), RBK_ERR_FORKED; on error nothing changes.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_subscribe(rbk_consumer_t *c,
                                         const char *const *topics,
                                         size_t topic_cnt, char *errstr,
                                         size_t errstr_size);

/**
 * @brief Runs the consumer until rbk_consumer_stop(): polls, hands messages
 * to @p handler on worker threads, stores offsets after success, commits.
 * On return, in-flight handlers have finished and stored offsets are
 * committed (the group is still joined until rbk_consumer_close()).
 * @returns RBK_OK after a stop; RBK_ERR_INVALID_ARG for a NULL handler;
 * RBK_ERR_STATE if already running or not subscribed; RBK_ERR_FORKED.
 * Thread-safety: call from one thread; it blocks.
 */
RBK_API rbk_err_t rbk_consumer_run(rbk_consumer_t *c, rbk_handler_t *handler,
                                   void *opaque);

/**
 * @brief Like rbk_consumer_run() on a thread of the library's own; returns
 * at once.
 * @returns RBK_OK (started); RBK_ERR_INVALID_ARG, RBK_ERR_STATE,
 * RBK_ERR_FORKED as rbk_consumer_run().
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_start(rbk_consumer_t *c, rbk_handler_t *handler,
                                     void *opaque);

/**
 * @brief rbk_consumer_run() with a batch handler: partitions in parallel,
 * each handed out in batches (a batched UPSERT). Offsets are stored up to
 * the last handled message only; retries, give-up and dead letters apply to
 * the first unhandled message as for a single-message handler.
 * @returns as rbk_consumer_run().
 * Thread-safety: call from one thread; it blocks.
 */
RBK_API rbk_err_t rbk_consumer_run_batch(rbk_consumer_t *c,
                                         rbk_batch_handler_t *handler,
                                         void *opaque);

/**
 * @brief Poll API: up to @p max messages of one partition, in offset order,
 * already de-duplicated (as a batch handler gets them), handed out together.
 * Give them back with rbk_consumer_done_batch() before the partition's
 * next messages are returned; other partitions' messages keep coming.
 * @param c the consumer.
 * @param timeout_ms how long to wait for messages (0: do not wait).
 * @param msgs receives the messages (an array of at least @p max).
 * @param max the most to return (at least 1).
 * @param np receives how many (0 on timeout).
 * @returns as rbk_consumer_poll(); RBK_ERR_INVALID_ARG for NULL arguments or
 * @p max 0.
 * Thread-safety: one polling thread at a time.
 */
RBK_API rbk_err_t rbk_consumer_poll_batch(rbk_consumer_t *c, int timeout_ms,
                                          rbk_message_t **msgs, size_t max,
                                          size_t *np);

/**
 * @brief Poll API: the verdict on a batch from rbk_consumer_poll_batch():
 * the first @p handled messages are handled (offsets stored); when fewer
 * than @p n, @p rest (RBK_RETRY or RBK_DEADLETTER) applies to
 * msgs[handled], and the messages after it come again. The messages must
 * not be used afterwards.
 * @param msgs the array rbk_consumer_poll_batch() filled, @p n its count.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG (NULL, @p handled above @p n, a bad
 * verdict, or messages that are not one batch); RBK_ERR_STATE when the
 * batch is no longer outstanding (given back already, or its partition was
 * revoked: then nothing of it is stored, handled ids are still recorded);
 * RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_done_batch(rbk_consumer_t *c,
                                          rbk_message_t **msgs, size_t n,
                                          size_t handled, rbk_verdict_t rest);

/**
 * @brief rbk_consumer_run_batch() on a thread of the library's own.
 * @returns as rbk_consumer_start().
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_start_batch(rbk_consumer_t *c,
                                           rbk_batch_handler_t *handler,
                                           void *opaque);

/**
 * @brief Asks a running consumer to stop. Async-signal-safe: may be called
 * from a SIGTERM handler. Accepts NULL. Does nothing in a forked child.
 */
RBK_API void rbk_consumer_stop(rbk_consumer_t *c);

/**
 * @brief Poll API: the next message ready for the application, already
 * de-duplicated and with quarantined partitions held back.
 *
 * Each message returned must be given back with rbk_consumer_done() before
 * the next message of the same partition is returned.
 * @param c the consumer.
 * @param timeout_ms how long to wait for a message (0: do not wait).
 * @param msgp receives the message, or NULL on timeout.
 * @returns RBK_OK (message or timeout), RBK_ERR_STATE while rbk_consumer_run
 * is active, RBK_ERR_SHUTDOWN after close, RBK_ERR_INVALID_ARG,
 * RBK_ERR_FORKED (then *@p msgp is NULL).
 * Thread-safety: one polling thread at a time.
 */
RBK_API rbk_err_t rbk_consumer_poll(rbk_consumer_t *c, int timeout_ms,
                                    rbk_message_t **msgp);

/**
 * @brief Poll API: the verdict on a message from rbk_consumer_poll(). With
 * RBK_HANDLED the offset is stored; with RBK_RETRY the same message comes
 * back after the backoff. The message must not be used afterwards.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG (NULL, unknown verdict);
 * RBK_ERR_STATE (not outstanding: given back already, or its partition was
 * revoked); RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_done(rbk_consumer_t *c, rbk_message_t *msg,
                                    rbk_verdict_t verdict);

/**
 * @brief Holds a partition of this consumer: nothing more of it is handed
 * out (a message being handled finishes), other partitions flow. The hold
 * survives a rebalance that hands the partition back to this consumer, and
 * is independent of quarantine: neither releases the other.
 * @param topic the topic (without prefix). @param partition the partition.
 * @returns RBK_OK; RBK_ERR_NOT_FOUND if the partition is not assigned here;
 * RBK_ERR_STATE if it is already paused; RBK_ERR_INVALID_ARG, RBK_ERR_FORKED.
 * Thread-safety: safe from any thread, including a handler.
 */
RBK_API rbk_err_t rbk_consumer_pause(rbk_consumer_t *c, const char *topic,
                                     int32_t partition);

/**
 * @brief Releases a partition held by rbk_consumer_pause(). A quarantine or
 * a handler's give-up stays in place.
 * @returns RBK_OK; RBK_ERR_STATE if it is not paused; RBK_ERR_INVALID_ARG,
 * RBK_ERR_FORKED.
 * Thread-safety: safe from any thread, including a handler.
 */
RBK_API rbk_err_t rbk_consumer_resume(rbk_consumer_t *c, const char *topic,
                                      int32_t partition);

/** rbk_consumer_seek(): the log's first offset. */
#define RBK_EARLIEST (-2)
/** rbk_consumer_seek(): the log's end (only messages produced from now). */
#define RBK_LATEST (-1)

/**
 * @brief Moves a partition of this consumer to @p offset: an audited
 * re-position. The new position is committed explicitly, the partition is
 * assigned again at it, and an `RBK_EV_POSITION_MOVED` event (info) names
 * who moved it from where (the first unhandled offset) to where and how
 * many messages that skips or replays. Queued messages are dropped; a
 * message being handled finishes but its offset is not stored. A pause is
 * kept.
 * @param offset an offset within the watermarks, RBK_EARLIEST or RBK_LATEST.
 * @returns RBK_OK; RBK_ERR_NOT_FOUND if the partition is not assigned here;
 * RBK_ERR_OUT_OF_RANGE for an offset outside the watermarks; RBK_ERR_STATE
 * while the partition is quarantined (resolve it instead) or a dead letter
 * of it is in flight; RBK_ERR_KAFKA (the watermarks or the commit failed);
 * RBK_ERR_TIMED_OUT if no poll thread served the request; RBK_ERR_SHUTDOWN
 * after close; RBK_ERR_INVALID_ARG; RBK_ERR_FORKED; on error the position
 * is unchanged.
 * Thread-safety: safe from any thread, including a handler.
 */
RBK_API rbk_err_t rbk_consumer_seek(rbk_consumer_t *c, const char *topic,
                                    int32_t partition, int64_t offset,
                                    char *errstr, size_t errstr_size);

/**
 * @brief rbk_consumer_seek() to the first offset whose timestamp is at or
 * after @p timestamp_ms (librdkafka's offsets-for-times); the log's end if
 * there is none.
 * @returns as rbk_consumer_seek().
 * Thread-safety: safe from any thread, including a handler.
 */
RBK_API rbk_err_t rbk_consumer_seek_timestamp(rbk_consumer_t *c,
                                              const char *topic,
                                              int32_t partition,
                                              int64_t timestamp_ms,
                                              char *errstr,
                                              size_t errstr_size);

/**
 * @brief Commits every stored offset now and waits for the broker's answer.
 *
 * Only offsets of handled messages are stored (RBK_HANDLED, or a dead
 * letter delivered), so this never commits past a message the application
 * has not finished. With a persistent dedup store the partitions' dedup
 * windows are saved first and exactly the offsets they cover are
 * committed. With `enable.auto.commit=false` the library commits only here,
 * when partitions are revoked and in rbk_consumer_close(); with `true` it
 * also commits every `auto.commit.interval.ms`, and this call commits
 * sooner. Nothing stored since the last commit: RBK_OK at once.
 * @param c the consumer.
 * @param timeout_ms how long to wait for the answer (negative: 10 s).
 * @param errstr buffer for the reason of a failure (may be NULL).
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK when everything stored was committed;
 * RBK_ERR_STATE when not subscribed, while partitions are being revoked or
 * the group is rebalancing (the revoke commits what was stored);
 * RBK_ERR_KAFKA when the broker refused (the error named in @p errstr);
 * RBK_ERR_TIMED_OUT when no answer came in time (the commit may still
 * succeed); RBK_ERR_STORE when a partition's dedup window could not be
 * saved (that partition is not committed, the others are);
 * RBK_ERR_SHUTDOWN once rbk_consumer_close() began (close commits what was
 * stored); RBK_ERR_FORKED in a forked
 * child; RBK_ERR_INVALID_ARG for a NULL consumer.
 * Thread-safety: safe from any thread, including inside a handler (it does
 * not wait for the poll thread); with a SQLite dedup store, not inside a
 * transaction of the handler's own on the store's database (the window
 * save would wait for it).
 */
RBK_API rbk_err_t rbk_consumer_commit(rbk_consumer_t *c, int timeout_ms,
                                      char *errstr, size_t errstr_size);

/** How to resolve a quarantined partition. */
typedef enum rbk_resolve_t {
        RBK_RESOLVE_EARLIEST = 1,  /**< Resume at the log start (replays). */
        RBK_RESOLVE_LATEST = 2,    /**< Resume at the log end (skips). */
        RBK_RESOLVE_COMMITTED = 3, /**< Try the committed offset again. */
        RBK_RESOLVE_OFFSET = 4     /**< Resume at an explicit offset within the watermarks. */
} rbk_resolve_t;

/**
 * @brief Resolves a quarantined partition: resumes it at the chosen
 * position, commits that position explicitly, logs the decision with the
 * incident key and fires RBK_EV_QUARANTINE_RESOLVED.
 * @param c the consumer holding the quarantine.
 * @param topic the topic (without prefix).
 * @param partition the partition.
 * @param how where to resume.
 * @param offset the offset for RBK_RESOLVE_OFFSET, ignored otherwise.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK; RBK_ERR_NOT_QUARANTINED, RBK_ERR_NOT_FOUND (unknown
 * topic/partition), RBK_ERR_OUT_OF_RANGE (offset outside the watermarks),
 * RBK_ERR_INVALID_ARG, RBK_ERR_FORKED; on error nothing changes.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_resolve(rbk_consumer_t *c, const char *topic,
                                       int32_t partition, rbk_resolve_t how,
                                       int64_t offset, char *errstr,
                                       size_t errstr_size);

/** A quarantined partition, as listed by rbk_consumer_quarantined(). */
typedef struct rbk_quarantine_s {
        char topic[256];        /**< Topic, prefix stripped. */
        int32_t partition;      /**< Partition. */
        int64_t failed_offset;  /**< The out-of-range position. */
        int64_t committed_offset; /**< Committed offset, or RBK_NO_VALUE. */
        int64_t low_watermark;  /**< Log start at detection. */
        int64_t high_watermark; /**< Log end at detection. */
        char incident_key[512]; /**< group/topic/partition/failed offset. */
} rbk_quarantine_t;

/**
 * @brief Lists quarantined partitions.
 * @param c the consumer.
 * @param out array of @p max entries (may be NULL when @p max is 0).
 * @param max number of entries @p out holds.
 * @returns how many partitions are quarantined (may exceed @p max); 0,
 * with nothing written, when @p c is NULL or in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API size_t rbk_consumer_quarantined(rbk_consumer_t *c,
                                        rbk_quarantine_t *out, size_t max);

/**
 * @brief Lists quarantined partitions into entries of the caller's size,
 * so that a field appended to rbk_quarantine_t later is never written past
 * the entries of a program built against an older header.
 *
 * Entry i starts at `(char *)out + i * entry_size`. Of each, the library
 * writes the fields it knows (at most @p entry_size bytes) and zeroes the
 * rest of the entry. rbk_consumer_quarantined() writes the first layout
 * only, whatever later headers add.
 * @param c the consumer.
 * @param out array of @p max entries (may be NULL when @p max is 0).
 * @param max number of entries @p out holds.
 * @param entry_size `sizeof(rbk_quarantine_t)` as the caller compiled it.
 * @returns how many partitions are quarantined (may exceed @p max); 0, with
 * nothing written, when @p c is NULL, @p entry_size is smaller than the
 * first layout, or in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API size_t rbk_consumer_quarantined2(rbk_consumer_t *c, void *out,
                                         size_t max, size_t entry_size);

/** Consumer counters (a snapshot). */
typedef struct rbk_consumer_stats_s {
        int version;                 /**< RBK_CONSUMER_STATS_VERSION. */
        uint64_t consumed;           /**< Messages received from Kafka. */
        uint64_t handled;            /**< Handler returned RBK_HANDLED. */
        uint64_t retried;            /**< Handler returned RBK_RETRY. */
        uint64_t dead_lettered;      /**< Sent to the dead-letter topic. */
        uint64_t duplicates_dropped; /**< Dropped by dedup as provably seen. */
        uint64_t unprovable;         /**< Passed: too old for the dedup window. */
        uint64_t no_id;              /**< Passed: no id header. */
        uint64_t commits;            /**< Offset commits that succeeded. */
        uint64_t quarantines;        /**< Quarantine incidents (repeats included). */
        uint64_t resolutions;        /**< Quarantines resolved. */
        uint64_t initial_positions;  /**< Partitions started at the initial position. */
        uint64_t stalls;             /**< Stall events fired. */
        uint64_t assigned_partitions; /**< Partitions currently assigned. */
        uint64_t quarantined_partitions; /**< Partitions currently quarantined. */
        uint64_t dedup_memory_bytes; /**< Memory held by dedup windows. */
        int64_t lag;                 /**< Sum of per-partition lag, or -1 if unknown. */
        double handler_ms_avg;       /**< Mean handler latency. */
        /* Layout version 2. */
        uint64_t out_of_range_disproved; /**< Out-of-range reports the log
                                          * disproved when read again
                                          * (rbk.consumer.out.of.range.recheck.ms):
                                          * resumed in place, not paged. */
} rbk_consumer_stats_t;

/** The current rbk_consumer_stats_t layout version. */
#define RBK_CONSUMER_STATS_VERSION 2
/** Initialiser: `rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;` */
#define RBK_CONSUMER_STATS_INIT                                                \
        {RBK_CONSUMER_STATS_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0}

/**
 * @brief Reads the consumer's counters.
 *
 * The caller's `version` says which layout @p out has, and the library
 * writes only that layout's bytes, so a program built against an older
 * header is never written past its struct. Initialise it with
 * RBK_CONSUMER_STATS_INIT. A version the library does not know (0 from a
 * zeroed struct, a later layout) is filled as version 1. On return
 * `version` is the layout filled.
 * @param c the consumer.
 * @param out the counters; its `version` is read first.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG (NULL argument), or RBK_ERR_FORKED
 * in a forked child (then @p out is left as it was).
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_stats(rbk_consumer_t *c,
                                     rbk_consumer_stats_t *out);

/**
 * @brief The counters as JSON, with a per-partition section (position,
 * committed, lag, paused, quarantined, duplicates, handler latency).
 * @returns a string to free with rbk_free(); NULL if @p c is NULL or in a
 * forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API char *rbk_consumer_stats_json(rbk_consumer_t *c);

/**
 * @brief The consumer's key figures in the Prometheus text exposition
 * format (version 0.0.4; docs/metrics.md lists every metric): per assigned
 * partition the lag, messages handled, retried, dead-lettered and dropped
 * as duplicates, whether it is quarantined, paused or stalled, and a
 * histogram of handler latency; per broker the connection state and
 * round-trip time from the latest librdkafka statistics (only with
 * `statistics.interval.ms` set). Every sample carries the label `group`;
 * partition samples also `topic` and `partition`.
 *
 * Families are named `rbk_consumer_*`, so one consumer's text and one
 * producer's can be served together.
 * @param c the consumer.
 * @returns a string to free with rbk_free(); NULL if @p c is NULL, on OOM,
 * or in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API char *rbk_consumer_metrics(rbk_consumer_t *c);

/**
 * @brief Whether the consumer is doing its work, for liveness and
 * readiness probes.
 * @param c the consumer.
 * @param why buffer for the reasons when not RBK_OK, "; "-separated (may
 * be NULL).
 * @param why_size size of @p why.
 * @returns RBK_OK; RBK_ERR_SHUTDOWN (closed); RBK_ERR_FATAL (librdkafka
 * raised a fatal error); RBK_ERR_KAFKA (every broker connection is down);
 * RBK_ERR_STATE (not subscribed, not yet joined the group, no partition
 * assigned for longer than `session.timeout.ms` after the first join, a
 * stalled partition, a quarantined or held partition: each named with
 * topic and partition); RBK_ERR_INVALID_ARG; RBK_ERR_FORKED. The most
 * severe of these is returned; @p why lists them all.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_consumer_health(rbk_consumer_t *c, char *why,
                                      size_t why_size);

/**
 * @brief Stops fetching, lets in-flight handlers finish (bounded by
 * @p timeout_ms, or `rbk.shutdown.timeout.ms` when negative), commits stored
 * offsets and leaves the group. Safe to call twice.
 * @returns RBK_OK or RBK_ERR_TIMED_OUT; RBK_ERR_INVALID_ARG;
 * RBK_ERR_FORKED (nothing is closed).
 * Thread-safety: safe from any thread except a handler.
 */
RBK_API rbk_err_t rbk_consumer_close(rbk_consumer_t *c, int timeout_ms);

/**
 * @brief Closes (if not yet closed) and frees. Accepts NULL. Not for handles
 * from rbk_consumer_get(). In a forked child it frees nothing.
 * Thread-safety: no other call on @p c may run concurrently.
 */
RBK_API void rbk_consumer_destroy(rbk_consumer_t *c);

/**
 * @brief The process-wide consumer named @p name (see rbk_producer_get()).
 * @returns the handle, or NULL with the reason in @p errstr (also in a
 * forked child: RBK_ERR_FORKED).
 * Thread-safety: safe from any thread; creation happens once.
 */
RBK_API rbk_consumer_t *rbk_consumer_get(const char *name,
                                         const rbk_conf_t *conf, char *errstr,
                                         size_t errstr_size);

/**
 * @brief Drops a reference taken by rbk_consumer_get(). Accepts NULL. A
 * no-op in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API void rbk_consumer_put(rbk_consumer_t *c);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_CONSUMER_H */
