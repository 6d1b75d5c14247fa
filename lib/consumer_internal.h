/* The group consumer's internal state, shared by consumer.c (run and poll
 * APIs, workers, rebalances, shutdown, stats), quarantine.c (offset out of
 * range, initial positions, operator resolutions) and deadletter.c. Never
 * installed.
 *
 * Threads:
 *   - the poll thread: the thread inside rbk_consumer_run() (or the one
 *     rbk_consumer_start() created), or the application's thread inside
 *     rbk_consumer_poll()/rbk_consumer_close(). It alone calls
 *     rd_kafka_consumer_poll() (events: rebalances, commits, errors) and
 *     reads each partition's own queue (messages), taking from a partition
 *     only as much as its library queue has room for: that is the
 *     backpressure (no pause/resume, which would make librdkafka drop and
 *     fetch again what it had prefetched). A partition queue turning
 *     non-empty, or a full library queue draining to half, wakes the poll
 *     thread with rd_kafka_queue_yield() on the consumer queue. Every
 *     rd_kafka_assign() happens while holding c->poll_mu, which serialises
 *     "being the poll thread".
 *   - worker threads (run API only, rbk.consumer.workers of them): take one
 *     partition at a time from the ready queue and run the handler on the
 *     head message of that partition.
 *   - the dead-letter producer's poll thread: delivery reports of dead
 *     letters.
 *
 * Locks: c->lock protects the partition table, every rbk__part_t field
 * except the immutable ones, the ready queue, the request queue and the
 * counters. It is never held while calling the handler, the hook, the
 * application's rebalance callback or a blocking librdkafka call, with one
 * exception: a re-assign holds it across its commit and rd_kafka_assign()
 * so that no offset is stored in between. Lock order: poll_mu, then lock.
 */
#ifndef RBK_CONSUMER_INTERNAL_H
#define RBK_CONSUMER_INTERNAL_H

#include <signal.h>

#include "dedup.h"
#include "internal.h"

/* Why a partition is held back besides quarantine and retry backoff. */
typedef enum {
        RBK__HOLD_NONE = 0,
        RBK__HOLD_GAVE_UP,     /* pause mode: retries exhausted */
        RBK__HOLD_DLQ_PENDING, /* dead letter sent, waiting for its report */
        RBK__HOLD_DLQ_FAILED   /* dead letter could not be delivered */
} rbk__hold_t;

/* A partition's library queue: a ring of rd_kafka_message_t*, in offset
 * order (no allocation per message, unlike a GQueue's list nodes). Under
 * c->lock. */
typedef struct rbk__mq_s {
        rd_kafka_message_t **v;
        size_t cap, head, len;
} rbk__mq_t;

static inline size_t rbk__mq_len(const rbk__mq_t *q) {
        return q->len;
}

static inline rd_kafka_message_t *rbk__mq_peek(const rbk__mq_t *q) {
        return q->len ? q->v[q->head] : NULL;
}

static inline void rbk__mq_push(rbk__mq_t *q, rd_kafka_message_t *rkm) {
        if (q->len == q->cap) {
                size_t ncap = q->cap ? q->cap * 2 : 64;
                rd_kafka_message_t **nv = g_new(rd_kafka_message_t *, ncap);
                for (size_t i = 0; i < q->len; i++)
                        nv[i] = q->v[(q->head + i) % q->cap];
                g_free(q->v);
                q->v = nv;
                q->cap = ncap;
                q->head = 0;
        }
        q->v[(q->head + q->len) % q->cap] = rkm;
        q->len++;
}

static inline void rbk__mq_push_head(rbk__mq_t *q, rd_kafka_message_t *rkm) {
        rbk__mq_push(q, rkm); /* makes room */
        q->len--;
        q->head = (q->head + q->cap - 1) % q->cap;
        q->v[q->head] = rkm;
        q->len++;
}

static inline rd_kafka_message_t *rbk__mq_pop(rbk__mq_t *q) {
        if (!q->len)
                return NULL;
        rd_kafka_message_t *rkm = q->v[q->head];
        q->head = q->head + 1 == q->cap ? 0 : q->head + 1;
        q->len--;
        return rkm;
}

/* Removes @rkm wherever it is (it is normally the head). */
static inline void rbk__mq_remove(rbk__mq_t *q, rd_kafka_message_t *rkm) {
        for (size_t i = 0; i < q->len; i++) {
                if (q->v[(q->head + i) % q->cap] != rkm)
                        continue;
                for (size_t j = i; j + 1 < q->len; j++)
                        q->v[(q->head + j) % q->cap] =
                            q->v[(q->head + j + 1) % q->cap];
                q->len--;
                return;
        }
}

static inline void rbk__mq_free(rbk__mq_t *q) {
        g_free(q->v);
        q->v = NULL;
        q->cap = q->head = q->len = 0;
}

/* A message handed to the application; the public part comes first. A
 * partition hands out one message at a time, so the poll API's message
 * lives in its partition (rbk__part_t.out), the run API's on the worker's
 * stack: nothing is allocated per message. */
typedef struct rbk__msg_s {
        rbk_message_t pub;
        struct rbk__part_s *part; /* a reference */
        rd_kafka_message_t *rkm;
        char *idbuf;        /* the id when longer than idb holds, or NULL */
        const void *id_raw; /* the rbk-id header value in rkm, or NULL */
        size_t id_len;
        int dedup_count;    /* rbk__dedup_verdict_t to count at completion */
        int64_t started_ms;
        char idb[RBK_MSGID_MAX_LEN + 1]; /* pub.id, NUL-terminated */
} rbk__msg_t;

typedef struct rbk__part_s {
        gint refcnt;
        char *topic;        /* full (prefixed) name; immutable */
        const char *utopic; /* into topic, prefix stripped; immutable */
        int32_t partition;  /* immutable */
        int assigned;       /* 0 once revoked or lost: detached */
        int revoking;       /* being handed back: nothing new starts */

        rbk__mq_t msgs;      /* rd_kafka_message_t*, in offset order */
        int64_t fetch_next;  /* offset after the last message received,
                              * or RD_KAFKA_OFFSET_INVALID */
        int64_t resolved_failed; /* failed offset of the last resolved
                                  * quarantine, while the position has not
                                  * passed it (stale reports), or -1 */
        int64_t stored;      /* last offset stored (next to read), or -1 */
        int64_t committed;   /* last known committed offset, or -1 */
        int busy;            /* the head message is out with a handler */
        int in_ready;        /* queued in c->ready */
        struct rbk__part_s *ready_next; /* next in c->ready */
        int burst_n;              /* hand-outs in the current burst */
        int64_t burst_start_ms;   /* when it began, or 0 */
        rbk__dedup_part_t *dp; /* the dedup window's partition, or NULL */
        rd_kafka_queue_t *pq; /* the partition's own librdkafka queue (not
                               * forwarded to the consumer queue), or NULL */
        int fetch_paused;    /* our queue is at rbk.consumer.queue.max: the
                              * partition queue is not read (librdkafka then
                              * stops fetching at queued.min.messages) */
        int attempts;        /* handler attempts of the head message */
        int64_t retry_at;    /* monotonic ms the head may be retried; 0: no */
        rbk__hold_t hold;
        char *hold_reason;   /* why (for stats / dead-letter failure) */

        int quarantined;
        rbk_quarantine_t q;  /* valid when quarantined */
        int q_reported;      /* hook fired for this quarantine */

        int64_t last_progress_ms;
        int stall_reported;

        uint64_t handled;
        uint64_t retried;
        uint64_t duplicates;
        uint64_t handler_cnt;
        double handler_ms_sum;
        double handler_ms_max;

        rbk__msg_t out; /* the poll API's message (when busy) */
} rbk__part_t;


/* An out-of-range report waiting to be examined by the poll thread. */
typedef struct rbk__reset_s {
        rbk__part_t *part; /* a reference */
        int64_t failed_offset;
        char *reason;
        int tries;
        int64_t next_try_ms;
} rbk__reset_t;

/* A resolution request handed to the poll thread. */
typedef struct rbk__req_s {
        char *topic; /* full name */
        int32_t partition;
        rbk_resolve_t how;
        int64_t offset;
        char *applied_by;
        char *incident_key; /* resolve by key instead of topic/partition */
        int taken;
        int done;
        rbk_err_t err;
        char errstr[512];
} rbk__req_t;

struct rbk_consumer_s {
        rbk_conf_t *conf; /* own copy */
        rd_kafka_t *rk;
        rbk__hooks_t *hooks;
        rbk__dedup_t *dedup; /* NULL when rbk.dedup.enable=false */
        pid_t pid;
        char *prefix;
        char *group;  /* full (prefixed) group.id */
        char *ugroup; /* as the application named it */

        /* Settings read once. */
        int workers_n;
        int64_t queue_max;
        int64_t retry_max;
        int64_t backoff_ms;
        int64_t backoff_max_ms;
        int giveup_deadletter;
        char *dlq_topic; /* unprefixed, as configured */
        int64_t stall_timeout_ms;
        int64_t revoke_timeout_ms;
        int64_t shutdown_timeout_ms;
        char *initial_offset; /* "earliest" | "latest" | "error" */

        GMutex poll_mu; /* held by whoever is the poll thread */
        GMutex lock;
        GCond cond;      /* parts finished, requests done, state changes */
        GCond work_cond; /* ready queue gained a partition, stop */
        /* Threads waiting on cond / work_cond (under lock): the
         * per-message wake-ups are skipped when nobody waits, since every
         * GLib signal or broadcast is a futex system call. */
        int cond_waiters;
        int work_waiters;

        GHashTable *parts; /* "topic\x01partition" -> rbk__part_t* (assigned) */
        /* Runnable partitions, FIFO through rbk__part_t.ready_next (each
         * holds a reference; in_ready set). */
        rbk__part_t *ready_head, *ready_tail;
        GQueue requests;   /* rbk__req_t* */
        GPtrArray *resets; /* rbk__reset_t* (poll thread only) */
        GHashTable *reported_keys; /* incident keys reported by this client */
        GHashTable *resolved_keys; /* incident keys resolved here, or NULL */

        int subscribed;
        int running;   /* rbk_consumer_run active */
        int stopping;  /* workers take nothing new */
        int workers_quit;
        int closed;
        int close_ok;   /* the group was left cleanly */
        int store_gate; /* >0 while a re-assign runs: stores wait */
        volatile sig_atomic_t stop_req;
        GThread *start_thread;
        rbk_handler_t *handler;
        void *handler_opaque;
        GThread **workers;
        int workers_live;
        rd_kafka_queue_t *cq; /* the consumer queue (events), for yield */
        int dlq_inflight; /* dead letters sent, not yet reported */
        int64_t next_stall_check_ms;

        /* The operator control listener (control.c), or NULL. */
        struct rbk__control_s *control;

        /* Dead letters. */
        GMutex dlq_mu;
        rbk_producer_t *dlq;

        /* Counters. */
        uint64_t consumed, handled, retried, dead_lettered, duplicates,
            unprovable, no_id, commits, quarantines, resolutions,
            initial_positions, stalls;
        double handler_ms_sum;
        uint64_t handler_cnt;
};

/* Monotonic clock and the thread-local "I am the poll thread of c". */
extern __thread rbk_consumer_t *rbk__tl_poller;

/* ---------------------------------------------------------- consumer.c */

rbk__part_t *rbk__part_ref(rbk__part_t *p);
void rbk__part_unref(rbk__part_t *p);
/* Lookup by full topic name; caller holds c->lock. No reference taken. */
rbk__part_t *rbk__part_find(rbk_consumer_t *c, const char *topic,
                            int32_t partition);
/* Puts p on the ready queue if it can run now; caller holds c->lock. */
void rbk__part_maybe_ready(rbk_consumer_t *c, rbk__part_t *p);
/* Drops every queued message of p; caller holds c->lock and p is not busy. */
void rbk__part_drop_queue(rbk__part_t *p);
/* Fires an event (no lock held). */
void rbk__consumer_emit(rbk_consumer_t *c, rbk_event_t *ev);
/* Commit of stored offsets, waited for at most timeout_ms; returns the
 * librdkafka error (_NO_OFFSET when nothing was to commit counts as
 * success, _TIMED_OUT when the wait expired). Dedup windows are saved
 * first. */
rd_kafka_resp_err_t rbk__consumer_commit_stored(rbk_consumer_t *c,
                                                int timeout_ms);
/* Commits @offsets (NULL: the stored offsets of the assignment) and waits
 * at most timeout_ms for the result (the first per-partition error counts). */
rd_kafka_resp_err_t rbk__commit_wait(rbk_consumer_t *c,
                                     rd_kafka_topic_partition_list_t *offsets,
                                     int timeout_ms);
/* Finishes the head message of p as handled (or dead-lettered): stores
 * offset+1, records the id with dedup, pops and frees the message, marks
 * progress. Caller holds c->lock. */
void rbk__part_complete_head(rbk_consumer_t *c, rbk__part_t *p,
                             rd_kafka_message_t *rkm);
/* The key of the partition table. g_free. */
char *rbk__part_key(const char *topic, int32_t partition);

/* ---------------------------------------------------------- quarantine.c */

/* Queues an _AUTO_OFFSET_RESET report (poll thread). */
void rbk__q_on_reset(rbk_consumer_t *c, const rd_kafka_message_t *rkm);
/* Examines queued reports: initial positions and quarantines (poll thread,
 * no lock held). */
void rbk__q_process_resets(rbk_consumer_t *c);
/* Drops queued reports (at close / after a revoke of their partition). */
void rbk__q_clear_resets(rbk_consumer_t *c, int only_detached);
/* Serves queued resolution requests (poll thread, no lock held). */
void rbk__q_process_requests(rbk_consumer_t *c);
/* Fails every queued request with RBK_ERR_SHUTDOWN (c->lock held). */
void rbk__q_fail_requests(rbk_consumer_t *c);
/* Re-assigns the whole current assignment: the partitions in @targets
 * (rbk__part_t*) at the offsets in @offsets (int64_t, same order), every
 * other partition at the library's own next offset, pauses re-applied,
 * stored offsets committed before and stored again after. Poll thread, no
 * lock held. */
rd_kafka_resp_err_t rbk__q_reassign(rbk_consumer_t *c, rbk__part_t **targets,
                                    const int64_t *offsets, size_t n);
/* Same, and commits the targets' new offsets explicitly (with the given
 * metadata strings) after the stored offsets and before the assign. A
 * failed commit aborts before anything is re-assigned. */
rd_kafka_resp_err_t rbk__q_reassign_commit(rbk_consumer_t *c,
                                           rbk__part_t **targets,
                                           const int64_t *offsets,
                                           char *const *metas, size_t n);

/* Resolves a quarantine (or a held partition) by incident key, as
 * rbk_consumer_resolve() does by topic and partition. @applied_by names who
 * decided (logged and put in the hook's message); may be NULL. Safe from
 * any thread; waits (bounded) for the poll thread.
 * Returns as rbk_consumer_resolve(), RBK_ERR_NOT_FOUND for an unknown key. */
rbk_err_t rbk__consumer_resolve_by_incident(rbk_consumer_t *c,
                                            const char *incident_key,
                                            rbk_resolve_t how, int64_t offset,
                                            const char *applied_by,
                                            char *errstr, size_t errstr_size);
/* Same as rbk_consumer_resolve() with an @applied_by. */
rbk_err_t rbk__consumer_resolve(rbk_consumer_t *c, const char *topic,
                                int32_t partition, rbk_resolve_t how,
                                int64_t offset, const char *applied_by,
                                char *errstr, size_t errstr_size);

/* The consumer's group as the application named it, its client name. */
const char *rbk__consumer_group(const rbk_consumer_t *c);

/* ---------------------------------------------------------- deadletter.c */

/* Sends the head message of p to the dead-letter topic (p->hold is
 * RBK__HOLD_DLQ_PENDING). No lock held. On a send error the partition goes
 * to RBK__HOLD_DLQ_FAILED and RBK_EV_DEADLETTER_FAILED fires. */
void rbk__dlq_send(rbk_consumer_t *c, rbk__part_t *p, rd_kafka_message_t *rkm,
                   int attempts);
/* Waits (bounded) until no dead letter is in flight. */
void rbk__dlq_flush(rbk_consumer_t *c, int timeout_ms);
/* Closes and destroys the dead-letter producer. */
void rbk__dlq_close(rbk_consumer_t *c, int timeout_ms);

/* Waits on c->cond until end_us (monotonic, 0: no bound). Caller holds
 * c->lock. Every wait on c->cond goes through here, so that a wake-up can
 * be skipped when c->cond_waiters is 0. */
static inline void rbk__consumer_wait(rbk_consumer_t *c, int64_t end_us) {
        c->cond_waiters++;
        if (end_us)
                g_cond_wait_until(&c->cond, &c->lock, end_us);
        else
                g_cond_wait(&c->cond, &c->lock);
        c->cond_waiters--;
}

#endif /* RBK_CONSUMER_INTERNAL_H */
