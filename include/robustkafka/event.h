/**
 * @file robustkafka/event.h
 * @brief The hook: one event type, a class enum and the context each class
 * carries. Hooks are the only path by which failures reach the application.
 */
#ifndef ROBUSTKAFKA_EVENT_H
#define ROBUSTKAFKA_EVENT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What happened. New classes are only appended. */
typedef enum rbk_event_class_t {
        RBK_EV_DELIVERY_FAILED = 1,   /**< A message failed for good (producer). */
        RBK_EV_FATAL_RECOVERED = 2,   /**< Fatal producer error; a fresh instance replaced it. */
        RBK_EV_FATAL_GAVE_UP = 3,     /**< Too many fatal errors in the window; sends fail. */
        RBK_EV_OFFSET_OUT_OF_RANGE = 4, /**< Partition quarantined: page a human. */
        RBK_EV_INITIAL_POSITION = 5,  /**< No committed offset; initial position applied (info). */
        RBK_EV_QUARANTINE_RESOLVED = 6, /**< An operator resolved a quarantine. */
        RBK_EV_PARTITION_STALLED = 7, /**< Assigned, lagging, not paused, no progress. */
        RBK_EV_HANDLER_GAVE_UP = 8,   /**< Handler retries exhausted; partition paused. */
        RBK_EV_DEADLETTER_FAILED = 9, /**< A dead letter could not be delivered; partition paused. */
        RBK_EV_DEDUP_STORE_ERROR = 10, /**< The dedup store failed; duplicates may pass. */
        RBK_EV_CLIENT_ERROR = 11,     /**< librdkafka reported a (non-fatal) client error. */
        RBK_EV_VERSION_WARNING = 12,  /**< The running librdkafka has known issues. */
        RBK_EV_SHUTDOWN_UNDELIVERED = 13, /**< Shutdown ended with messages undelivered. */
        RBK_EV_DEADLETTERED = 14,     /**< A message was sent to the dead-letter topic. */
        RBK_EV_POSITION_MOVED = 15,   /**< rbk_consumer_seek() moved a partition (info: who, from, to). */
        RBK_EV_DEADLETTER_LIMIT = 16, /**< Too many dead letters on a partition in the window; partition held. */
        RBK_EV_DEDUP_CAPACITY = 17    /**< Dedup windows forgotten beyond the configured bounds; duplicates may pass. */
} rbk_event_class_t;

/** How urgent an event is. */
typedef enum rbk_severity_t {
        RBK_SEV_INFO = 0,    /**< For the record; nobody needs to act. */
        RBK_SEV_WARNING = 1, /**< Degraded but self-healing. */
        RBK_SEV_ERROR = 2,   /**< Data is held back or failed; someone should look. */
        RBK_SEV_CRITICAL = 3 /**< Page a human now. */
} rbk_severity_t;

/** Value of integer context fields that do not apply. */
#define RBK_NO_VALUE (-1001)

/**
 * @brief One event. The library owns it and every string in it; it is valid
 * only during the hook call (copy what you keep). Fields that do not apply to
 * a class are NULL or RBK_NO_VALUE. Topic and group names have the
 * configured prefix (`rbk.prefix`, KAFKA_PREFIX) stripped.
 */
typedef struct rbk_event_s {
        int version;                /**< Layout version, RBK_EVENT_VERSION. */
        rbk_event_class_t cls;      /**< What happened. */
        rbk_severity_t severity;    /**< How urgent. */
        rbk_err_t err;              /**< Library error code, or RBK_OK. */
        int kafka_err;              /**< librdkafka rd_kafka_resp_err_t, or 0. */
        const char *client;         /**< Client name (registry name or "anonymous"). */
        const char *message;        /**< Human-readable, redacted; never NULL. */
        const char *incident_key;   /**< Stable key to de-duplicate pages, or NULL. */
        int repeat;                 /**< 1 if this incident key was reported before. */
        uint64_t suppressed;        /**< Events of this key dropped by rate limiting since the last one delivered. */
        const char *group;          /**< Consumer group, or NULL. */
        const char *topic;          /**< Topic, or NULL. */
        int32_t partition;          /**< Partition, or RBK_NO_VALUE. */
        int64_t offset;             /**< The offset concerned (e.g. the failed one), or RBK_NO_VALUE. */
        int64_t committed_offset;   /**< Committed offset, or RBK_NO_VALUE. */
        int64_t low_watermark;      /**< Log start offset, or RBK_NO_VALUE. */
        int64_t high_watermark;     /**< Log end offset, or RBK_NO_VALUE. */
        int64_t skip_if_latest;     /**< Messages skipped by resolving to latest, or RBK_NO_VALUE. */
        int64_t replay_if_earliest; /**< Messages (re)played by resolving to earliest, or RBK_NO_VALUE. */
        int64_t gap;                /**< Messages retention removed before this consumer handled them: low - first_unhandled when positive (what resolving to earliest skips), else 0; or RBK_NO_VALUE. */
        int64_t generation;         /**< Producer instance generation, or RBK_NO_VALUE. */
        const char *id;             /**< Message id concerned, or NULL. */
        int64_t first_unhandled;    /**< The first offset this consumer has not handled (quarantine), or RBK_NO_VALUE. Since version 2. */
} rbk_event_t;

/** The current rbk_event_t layout version. */
#define RBK_EVENT_VERSION 2

/**
 * @brief The hook callback.
 *
 * Called from a library thread (the producer's poll thread, the consumer's
 * poll thread or a consumer worker), never from the application's calls, and
 * never concurrently for one client. It must not block for long and must not
 * destroy the client. Events with an incident key are rate-limited per key
 * (`rbk.hook.rate.limit.ms`); suppressed events are counted in the next one.
 * Events that change a state (a partition quarantined, an incident
 * resolved, a partition held or dead-lettered) are never rate-limited.
 * @param ev the event, valid during the call.
 * @param opaque as given to rbk_conf_set_hook().
 */
typedef void(rbk_hook_cb_t)(const rbk_event_t *ev, void *opaque);

/**
 * @brief The name of an event class, e.g. "offset_out_of_range".
 * @returns a static string; "unknown" for values not listed.
 * Thread-safety: safe from any thread.
 */
RBK_API const char *rbk_event_class_name(rbk_event_class_t cls);

/**
 * @brief The name of a severity: "info", "warning", "error", "critical".
 * Thread-safety: safe from any thread.
 */
RBK_API const char *rbk_severity_name(rbk_severity_t sev);

/**
 * @brief The event as one line of JSON (fields that do not apply omitted).
 * @returns a string to free with rbk_free(), or NULL if @p ev is NULL.
 * Thread-safety: safe from any thread.
 */
RBK_API char *rbk_event_to_json(const rbk_event_t *ev);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_EVENT_H */
