/**
 * @file robustkafka/producer.h
 * @brief The robust producer: idempotent, retries through leader elections,
 * every message reported exactly once as delivered or failed, fatal errors
 * recovered with a fresh librdkafka instance, nothing lost at shutdown.
 */
#ifndef ROBUSTKAFKA_PRODUCER_H
#define ROBUSTKAFKA_PRODUCER_H

#include "common.h"
#include "conf.h"
#include "registry.h" /* rbk_shutdown() closes rbk_producer_get() clients */

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque producer handle. */
typedef struct rbk_producer_s rbk_producer_t;

/** Let the partitioner choose (murmur2 of the key, as Java clients). */
#define RBK_PARTITION_ANY (-1)
/** Most headers one message may carry (the id header not counted). */
#define RBK_MAX_HEADERS 64

/** One message header. */
typedef struct rbk_header_s {
        const char *name;  /**< NUL-terminated name. */
        const void *value; /**< Value bytes, may be NULL. */
        size_t size;       /**< Value size. */
} rbk_header_t;

/**
 * @brief A message to send. Everything it points to is copied by
 * rbk_producer_send() before it returns; the caller keeps ownership.
 */
typedef struct rbk_msg_s {
        int version;                /**< RBK_MSG_VERSION (set by RBK_MSG_INIT). */
        const char *topic;          /**< Topic (without the configured prefix). Required. */
        int32_t partition;          /**< Partition, or RBK_PARTITION_ANY. */
        const void *key;            /**< Key bytes, or NULL. */
        size_t key_len;             /**< Key size. */
        const void *value;          /**< Value bytes, or NULL. */
        size_t value_len;           /**< Value size. */
        const rbk_header_t *headers; /**< Extra headers, or NULL. */
        size_t header_cnt;          /**< Number of extra headers (at most RBK_MAX_HEADERS). */
        const char *id;             /**< Caller-supplied id, or NULL for a generated one. */
        void *opaque;               /**< Handed back in the delivery report. */
        /* Version 2. */
        int64_t timestamp;          /**< CreateTime in milliseconds since the epoch; 0 for the time of the send. Kept across re-sends. */
} rbk_msg_t;

/**
 * The current rbk_msg_t layout version. Version 1 ends with `opaque`;
 * version 2 adds `timestamp`. The library reads only the fields of the
 * version a message declares.
 */
#define RBK_MSG_VERSION 2
/** Initialiser: `rbk_msg_t m = RBK_MSG_INIT;` */
#define RBK_MSG_INIT {RBK_MSG_VERSION, NULL, RBK_PARTITION_ANY, NULL, 0, NULL, 0, NULL, 0, NULL, NULL, 0}

/**
 * @brief The final status of one accepted message. Valid only during the
 * delivery callback.
 */
typedef struct rbk_delivery_s {
        int version;                /**< RBK_DELIVERY_VERSION. */
        rbk_err_t err;              /**< RBK_OK when delivered, else why it failed. */
        int kafka_err;              /**< librdkafka rd_kafka_resp_err_t, or 0. */
        const char *reason;         /**< Human-readable reason; "" when delivered. */
        int retriable;              /**< 1 if sending it again may succeed. */
        int possibly_persisted;     /**< 1 if it may be in the log despite the failure. */
        const char *topic;          /**< Topic, prefix stripped. */
        int32_t partition;          /**< Partition, or RBK_PARTITION_ANY if never assigned. */
        int64_t offset;             /**< Offset when delivered, else -1. */
        const char *id;             /**< The message id (generated or caller-supplied); NULL if ids are off. */
        const void *key;            /**< Key bytes. */
        size_t key_len;             /**< Key size. */
        const void *value;          /**< Value bytes. */
        size_t value_len;           /**< Value size. */
        void *msg_opaque;           /**< rbk_msg_t.opaque of the message. */
        int resent;                 /**< Times it was re-sent by fatal-error recovery. */
} rbk_delivery_t;

/** The current rbk_delivery_t layout version. */
#define RBK_DELIVERY_VERSION 1

/**
 * @brief Delivery callback: called exactly once for every message that
 * rbk_producer_send() accepted (returned RBK_OK), on the producer's internal
 * poll thread. A send from inside it never blocks: it is accepted or fails
 * at once with RBK_ERR_WOULD_BLOCK.
 */
typedef void(rbk_delivery_cb_t)(const rbk_delivery_t *dr, void *opaque);

/**
 * @brief Sets the delivery callback of producers created from @p conf.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API void rbk_conf_set_delivery_cb(rbk_conf_t *conf, rbk_delivery_cb_t *cb,
                                      void *opaque);

/**
 * @brief Creates a producer (prefer rbk_producer_get() for the process-wide
 * singleton).
 * @param conf configuration; copied, the caller keeps ownership.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns the producer, or NULL with the reason in @p errstr (invalid or
 * unsafe configuration, client creation failed).
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_producer_t *rbk_producer_new(const rbk_conf_t *conf, char *errstr,
                                         size_t errstr_size);

/**
 * @brief Sends a message asynchronously. On RBK_OK the message is accepted
 * and its delivery callback will run exactly once; on error it is not
 * accepted, the callback never runs, and nothing is kept.
 *
 * When librdkafka's queue is full the call waits up to
 * `rbk.producer.send.timeout.ms` (default 10000) for room, then returns
 * RBK_ERR_QUEUE_FULL. While a fatal error is being recovered, it waits the
 * same way.
 * @param p the producer.
 * @param msg the message; its `version` (1 or 2) says which fields it has.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG (also for an unknown version or a
 * negative timestamp), RBK_ERR_INVALID_TOPIC,
 * RBK_ERR_MSG_SIZE_TOO_LARGE, RBK_ERR_TOO_MANY_HEADERS, RBK_ERR_QUEUE_FULL,
 * RBK_ERR_WOULD_BLOCK, RBK_ERR_SHUTDOWN, RBK_ERR_FATAL, RBK_ERR_FORKED;
 * the reason in @p errstr.
 * Thread-safety: safe from any number of threads at once.
 */
RBK_API rbk_err_t rbk_producer_send(rbk_producer_t *p, const rbk_msg_t *msg,
                                    char *errstr, size_t errstr_size);

/**
 * @brief Sends a message and waits for its final status.
 * @param p the producer.
 * @param msg the message (copied, as by rbk_producer_send()).
 * @param timeout_ms how long to wait for the delivery report; on timeout the
 * message stays accepted and is still reported to the delivery callback.
 * @param offsetp if not NULL, receives the offset when delivered.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK when delivered; the delivery error; RBK_ERR_TIMED_OUT; or
 * any error of rbk_producer_send(). Must not be called from a delivery
 * callback (RBK_ERR_WOULD_BLOCK).
 * Thread-safety: safe from any number of threads at once.
 */
RBK_API rbk_err_t rbk_producer_send_sync(rbk_producer_t *p,
                                         const rbk_msg_t *msg, int timeout_ms,
                                         int64_t *offsetp, char *errstr,
                                         size_t errstr_size);

/**
 * @brief Waits until every accepted message has been reported.
 * @returns RBK_OK, or RBK_ERR_TIMED_OUT with messages still in flight;
 * RBK_ERR_INVALID_ARG, RBK_ERR_WOULD_BLOCK (from a delivery callback),
 * RBK_ERR_FORKED.
 * Thread-safety: safe from any thread except the delivery callback.
 */
RBK_API rbk_err_t rbk_producer_flush(rbk_producer_t *p, int timeout_ms);

/**
 * @brief Flushes (bounded by @p timeout_ms, or `rbk.shutdown.timeout.ms` when
 * negative), then reports every message still undelivered through its
 * delivery callback with RBK_ERR_SHUTDOWN, and stops the poll thread. Later
 * sends fail with RBK_ERR_SHUTDOWN. Safe to call twice.
 * @returns RBK_OK if everything was delivered, RBK_ERR_TIMED_OUT if some
 * messages were reported undelivered; RBK_ERR_INVALID_ARG,
 * RBK_ERR_WOULD_BLOCK (from a delivery callback), RBK_ERR_FORKED (nothing
 * is closed).
 * Thread-safety: safe from any thread except the delivery callback.
 */
RBK_API rbk_err_t rbk_producer_close(rbk_producer_t *p, int timeout_ms);

/**
 * @brief Closes (if not yet closed) and frees the producer. Accepts NULL.
 * Do not call it on a handle obtained with rbk_producer_get(). In a forked
 * child it frees nothing (the parent's threads do not exist there).
 * Thread-safety: no other call on @p p may run concurrently.
 */
RBK_API void rbk_producer_destroy(rbk_producer_t *p);

/** Producer counters (a snapshot). */
typedef struct rbk_producer_stats_s {
        int version;                 /**< RBK_PRODUCER_STATS_VERSION. */
        uint64_t accepted;           /**< Sends that returned RBK_OK. */
        uint64_t delivered;          /**< Reported delivered. */
        uint64_t failed;             /**< Reported failed. */
        uint64_t in_flight;          /**< Accepted, not yet reported. */
        uint64_t queue_full_waits;   /**< Sends that had to wait for queue room. */
        uint64_t resent;             /**< Messages re-sent by fatal-error recovery. */
        uint64_t possibly_persisted; /**< Failures that may be in the log anyway. */
        uint64_t fatal_errors;       /**< Fatal errors seen. */
        int64_t generation;          /**< librdkafka instances created so far (1 = never recovered). */
} rbk_producer_stats_t;

/** The current rbk_producer_stats_t layout version. */
#define RBK_PRODUCER_STATS_VERSION 1
/** Initialiser: `rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;` */
#define RBK_PRODUCER_STATS_INIT {RBK_PRODUCER_STATS_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0}

/**
 * @brief Reads the producer's counters.
 *
 * The caller's `version` says which layout @p out has, and the library
 * writes only that layout's bytes, so a program built against an older
 * header is never written past its struct. Initialise it with
 * RBK_PRODUCER_STATS_INIT. A version the library does not know (0 from a
 * zeroed struct, a later layout) is filled as version 1. On return
 * `version` is the layout filled.
 * @param p the producer.
 * @param out the counters; its `version` is read first.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG, or RBK_ERR_FORKED in a forked child
 * (then @p out is left as it was).
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_producer_stats(rbk_producer_t *p,
                                     rbk_producer_stats_t *out);

/**
 * @brief The counters as JSON, including in-flight counts per partition.
 * @returns a string to free with rbk_free(); NULL if @p p is NULL or this is
 * a forked child of the process that created it.
 * Thread-safety: safe from any thread.
 */
RBK_API char *rbk_producer_stats_json(rbk_producer_t *p);

/**
 * @brief The producer's key figures in the Prometheus text exposition
 * format (version 0.0.4; docs/metrics.md lists every metric): counters of
 * accepted, delivered, failed and re-sent messages, messages in flight,
 * queue-full waits, the librdkafka instance generation, and per broker the
 * connection state and round-trip time from the latest librdkafka
 * statistics (only with `statistics.interval.ms` set). Every sample carries
 * the label `client` (`rbk.client.name`).
 *
 * Families are named `rbk_producer_*`: the text of one producer can be
 * served as it is, or after a consumer's text; two producers in one
 * response would repeat families.
 * @param p the producer.
 * @returns a string to free with rbk_free(); NULL if @p p is NULL, on OOM,
 * or in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API char *rbk_producer_metrics(rbk_producer_t *p);

/**
 * @brief Whether the producer can deliver now, for liveness and readiness
 * probes.
 * @param p the producer.
 * @param why buffer for the reasons when not RBK_OK, "; "-separated (may
 * be NULL).
 * @param why_size size of @p why.
 * @returns RBK_OK; RBK_ERR_SHUTDOWN (closed); RBK_ERR_FATAL (a fatal error
 * is being recovered, or recovery gave up); RBK_ERR_KAFKA (every broker
 * connection is down: librdkafka reported all brokers down and nothing
 * was delivered since, or the latest statistics show no broker up);
 * RBK_ERR_INVALID_ARG; RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_producer_health(rbk_producer_t *p, char *why,
                                      size_t why_size);

/**
 * @brief The process-wide producer named @p name, created on first use.
 *
 * Later calls from any thread return the same handle (and take a
 * reference). Asking for an existing name with a different configuration
 * fails with RBK_ERR_EXISTS; asking after rbk_shutdown() fails with
 * RBK_ERR_SHUTDOWN; using a handle in a forked child fails with
 * RBK_ERR_FORKED (create clients after fork).
 * @param name registry name; NULL means "default".
 * @param conf configuration used on creation and compared afterwards; NULL
 * means rbk_conf_from_env(NULL).
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns the handle, or NULL with the reason in @p errstr.
 * Thread-safety: safe from any thread; creation happens once.
 */
RBK_API rbk_producer_t *rbk_producer_get(const char *name,
                                         const rbk_conf_t *conf, char *errstr,
                                         size_t errstr_size);

/**
 * @brief Drops a reference taken by rbk_producer_get(). The producer stays
 * alive until rbk_shutdown(). Accepts NULL. A no-op in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API void rbk_producer_put(rbk_producer_t *p);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_PRODUCER_H */
