/* The group consumer's internal state. Never installed.
 *
 * Files and who owns what (docs/architecture.md has the layer table and the
 * partition state diagram):
 *   consumer_part.c        the partition object: its message ring, hand-outs
 *                          (with tickets), the ready queue, retry holds,
 *                          quarantine flags, positions and per-partition
 *                          counters. It alone writes an rbk__part_t field;
 *                          everyone else calls its named transitions
 *                          (scripts/check-layers enforces this).
 *   consumer_assign.c      rebalances (eager and cooperative), commits, and
 *                          the re-assign with an explicit commit that moves a
 *                          partition's position. Who commits: with a
 *                          persistent dedup store the library alone (the
 *                          poll thread's periodic commit in place of
 *                          librdkafka's auto-commit, rbk_consumer_commit(),
 *                          revoke, close), always saving the dedup windows
 *                          first and then committing exactly the offsets
 *                          they cover; without one librdkafka's timer as
 *                          configured, plus the same library commits.
 *   consumer_quarantine.c  offset-out-of-range reports, initial positions,
 *                          incidents and operator resolutions.
 *   consumer_deadletter.c  the give-up path to a dead-letter topic.
 *   consumer_control.c     the operator control listener's adapter.
 *   consumer.c             lifecycle, the poll thread, workers, the run and
 *                          poll APIs, stats.
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
 *     assignment change happens while holding c->poll_mu, which serialises
 *     "being the poll thread".
 *   - worker threads (run API only, rbk.consumer.workers of them): take one
 *     partition at a time from the ready queue and run the handler on the
 *     head message of that partition.
 *   - the dead-letter producer's poll thread: delivery reports of dead
 *     letters.
 *
 * A message has one holder at a time: the partition's ring (queued), then a
 * hand-out (a handler, the poll API's application, or a dead-letter send),
 * identified by a ticket. Only the holder of the current ticket may end a
 * hand-out; nothing destroys a handed-out message but its hand-out's end.
 *
 * Locks: c->lock protects the partition table, every rbk__part_t field
 * except the immutable ones, the ready queue, the request queue, the
 * message slots and the counters. It is never held while calling the
 * handler, the hook, the application's rebalance callback or a blocking
 * librdkafka call. c->commit_mu serialises "save the windows, then commit
 * what they cover", so that two commits never interleave their saves; it
 * is taken before c->lock and never while holding it. Lock order: poll_mu,
 * commit_mu, lock.
 *
 * Close: once it begins, only the closing thread commits or changes the
 * assignment (c->closer, checked under commit_mu; a commit asked for on
 * another thread is refused). It leaves the group first (unsubscribe: the
 * revoke, with its commit and unassign, served by the closing thread while
 * the group still runs; the library's asynchronous commits answered), and
 * only then lets librdkafka terminate the group: librdkafka 2.0 aborts the
 * process if a commit or an assignment change is outstanding when that
 * termination completes (rd_kafka_cgrp_terminated()).
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
        RBK__HOLD_DLQ_FAILED,  /* dead letter could not be delivered */
        RBK__HOLD_DLQ_LIMIT    /* too many dead letters in the window */
} rbk__hold_t;

/* Who holds the partition's head message. */
typedef enum {
        RBK__OUT_NONE = 0,  /* nobody: it is queued */
        RBK__OUT_HANDLER,   /* a handler (run API) or the application (poll) */
        RBK__OUT_DEADLETTER /* a dead-letter send, until its report */
} rbk__out_t;

/* A partition's library queue: a ring of rd_kafka_message_t*, in offset
 * order (no allocation per message). Under c->lock; consumer_part.c only. */
typedef struct rbk__mq_s {
        rd_kafka_message_t **v;
        size_t cap, head, len;
} rbk__mq_t;

/* A message handed to the application; the public part comes first. The
 * run API's lives on the worker's stack; the poll API's is a slot of the
 * consumer's slot pool (never freed before the consumer), reused least
 * recently first, so a stale pointer is recognised by its ticket. */
typedef struct rbk__msg_s {
        rbk_message_t pub;
        struct rbk__part_s *part; /* a reference while handed out */
        rd_kafka_message_t *rkm;
        uint64_t ticket;    /* the hand-out this message is; 0: none */
        struct rbk__msg_s *pool_next;
        char *idbuf;        /* the id when longer than idb holds, or NULL */
        const void *id_raw; /* the rbk-id header value in rkm, or NULL */
        size_t id_len;
        int dedup_count;    /* rbk__dedup_verdict_t to count at completion */
        char *reason;       /* rbk_message_set_error(), or NULL */
        int64_t started_ms;
        char idb[RBK_MSGID_MAX_LEN + 1]; /* pub.id, NUL-terminated */
} rbk__msg_t;

typedef struct rbk__part_s {
        gint refcnt;
        char *topic;        /* full (prefixed) name; immutable */
        const char *utopic; /* into topic, prefix stripped; immutable */
        int32_t partition;  /* immutable */
        rbk__dedup_part_t *dp; /* the dedup window's partition, or NULL;
                                * immutable */

        /* Everything below: written by consumer_part.c only. */
        int assigned;       /* 0 once revoked or lost: detached */
        int revoking;       /* being handed back: nothing new starts */
        uint64_t assign_gen; /* bumped by every (re)assign of this partition */
        int64_t assign_off;  /* explicit offset of the current assignment,
                              * or RD_KAFKA_OFFSET_INVALID (group's commit) */

        rbk__mq_t msgs;      /* rd_kafka_message_t*, in offset order */
        int64_t fetch_next;  /* offset after the last message received,
                              * or RD_KAFKA_OFFSET_INVALID */
        int64_t resolved_failed; /* failed offset of the last resolved
                                  * quarantine, while the position has not
                                  * passed it (stale reports), or -1 */
        int64_t stored;      /* last offset stored (next to read), or -1 */
        int64_t committed;   /* last known committed offset, or -1 */
        int64_t drain_to;    /* an out-of-range fetch position: messages
                              * below it are still handed out, then the
                              * partition is quarantined; -1: none */

        rbk__out_t out;      /* who holds the head message */
        uint64_t out_ticket; /* the current hand-out, 0 when out is NONE */
        uint64_t pos_gen;    /* bumped when the position is moved */
        uint64_t out_pos_gen; /* pos_gen when the hand-out began: a hand-out
                               * of an older position stores nothing */
        int paused;          /* held by rbk_consumer_pause() */
        int64_t first_queued_ms; /* when the queue last turned non-empty
                                  * (batch mode waits for more), 0: empty */
        int64_t dlq_window_start; /* the dead-letter limit's window */
        int64_t dlq_count;        /* dead letters in it */
        int in_ready;        /* queued in c->ready */
        struct rbk__part_s *ready_next; /* next in c->ready */
        int burst_n;              /* hand-outs in the current burst */
        int64_t burst_start_ms;   /* when it began, or 0 */
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
        int64_t q_first_unhandled; /* first offset not handled, at paging */

        int64_t last_progress_ms;
        int stall_reported;

        uint64_t handled;
        uint64_t retried;
        uint64_t duplicates;
        uint64_t handler_cnt;
        double handler_ms_sum;
        double handler_ms_max;
        /* Handler calls by latency (rbk__latency_bucket()), the last one
         * beyond every bound; cumulated when exposed. */
        uint64_t handler_buckets[RBK__LATENCY_BUCKETS + 1];
        uint64_t dead_lettered;

        /* Out-of-range reports the log disproved (rbk__part_oor_disproved()):
         * how many since oor_window_ms. Rarely written: kept apart from
         * the fields every message touches. */
        int oor_disproved_n;
        int64_t oor_window_ms;
} rbk__part_t;


/* An out-of-range report waiting to be examined by the poll thread. */
typedef struct rbk__reset_s {
        rbk__part_t *part; /* a reference */
        uint64_t assign_gen; /* the partition's assignment it was made in */
        int64_t failed_offset;
        char *reason;
        int tries;
        int64_t next_try_ms;
        int rechecked; /* the log is read again before paging: due once
                        * rbk.consumer.out.of.range.recheck.ms passed */
        int disproved; /* the log held the position: resume there (kept
                        * while a failed resume is tried again) */
} rbk__reset_t;

/* A request handed to the poll thread: a resolution or a seek. */
typedef enum { RBK__REQ_RESOLVE = 0, RBK__REQ_SEEK } rbk__req_kind_t;

typedef struct rbk__req_s {
        rbk__req_kind_t kind;
        int by_time; /* seek: offset is a timestamp */
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
        int64_t oor_recheck_ms; /* rbk.consumer.out.of.range.recheck.ms */
        int64_t revoke_timeout_ms;
        int64_t shutdown_timeout_ms;
        char *initial_offset; /* "earliest" | "latest" | "error" */
        int64_t dlq_limit;           /* dead letters per window, 0: none */
        int64_t dlq_limit_window_ms;
        int cooperative; /* the group's rebalance protocol is COOPERATIVE */
        int static_member; /* group.instance.id is set: close keeps the
                            * membership (KIP-345) */
        int classic_group; /* group.protocol is classic (librdkafka < 2.4
                            * knows no other): leaving clears the member id */
        /* consumer_assign.c: the library's own periodic commit, in place of
         * librdkafka's enable.auto.commit when a persistent dedup store is
         * configured (auto.commit.interval.ms; 0: off). */
        int own_commit;
        int64_t commit_interval_ms;
        int64_t next_commit_ms; /* poll thread only */
        int64_t test_commit_delay_ms; /* test hook: sleep between the save
                                       * and the commit */
        int async_commits; /* sent with rd_kafka_commit(async), result not
                            * yet served by offset_commit_cb (lock) */
        /* The thread closing the consumer (set under commit_mu once close
         * begins): from then on it alone commits (consumer_assign.c). */
        GThread *closer;

        GMutex poll_mu; /* held by whoever is the poll thread */
        GMutex commit_mu; /* held from a commit's window save to its send */
        GMutex lock;
        GCond cond;      /* parts finished, requests done, state changes */
        GCond work_cond; /* ready queue gained a partition, stop */
        /* Threads waiting on cond / work_cond (under lock): the
         * per-message wake-ups are skipped when nobody waits, since every
         * GLib signal or broadcast is a futex system call. */
        int cond_waiters;
        int work_waiters;

        /* consumer_part.c: the partition table, the ready queue, tickets
         * and the poll API's message slots. */
        GHashTable *parts; /* "topic\x01partition" -> rbk__part_t* (assigned) */
        rbk__part_t *ready_head, *ready_tail; /* FIFO through ready_next */
        uint64_t next_ticket;
        rbk__msg_t *slot_free_head, *slot_free_tail; /* FIFO */
        GPtrArray *slots; /* every slot ever made (freed at destroy) */
        GHashTable *paused_keys; /* rbk__part_key()s the application paused */

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
        volatile sig_atomic_t stop_req; /* __atomic, relaxed: a signal handler may set it */
        GThread *start_thread;
        rbk_handler_t *handler;
        rbk_batch_handler_t *batch_handler; /* set instead for run_batch */
        void *handler_opaque;
        int64_t batch_max;    /* rbk.consumer.batch.max.messages */
        int64_t batch_max_ms; /* rbk.consumer.batch.max.ms */
        GThread **workers;
        int workers_live;
        rd_kafka_queue_t *cq; /* the consumer queue (events), for yield */
        int dlq_inflight; /* dead letters sent, not yet reported */
        int64_t next_stall_check_ms;

        /* The operator control listener (control.c), or NULL. */
        struct rbk__control_s *control;

        /* Health and metrics (consumer_metrics.c reads them). */
        rbk__rdstats_t rdstats; /* latest librdkafka statistics (own lock) */
        rbk_stats_cb_t *stats_cb;
        void *stats_opaque;
        int64_t session_timeout_ms;
        int joined;             /* a first assignment was received (lock) */
        int64_t unassigned_since_ms; /* no partition since (lock), 0: some */

        /* Dead letters. */
        GMutex dlq_mu;
        rbk_producer_t *dlq;

        /* Counters (the message counters written by consumer_part.c). */
        uint64_t consumed, handled, retried, dead_lettered, duplicates,
            unprovable, no_id, commits, quarantines, resolutions,
            initial_positions, stalls,
            oor_disproved; /* out-of-range reports the log disproved */
        double handler_ms_sum;
        uint64_t handler_cnt;
};

extern __thread rbk_consumer_t *rbk__tl_poller;

/* ---------------------------------------------------------- consumer_part.c
 * Every function that takes a partition expects c->lock held unless it
 * says otherwise. */

/* The key of the partition table. g_free. */
char *rbk__part_key(const char *topic, int32_t partition);
rbk__part_t *rbk__part_ref(rbk__part_t *p);
void rbk__part_unref(rbk__part_t *p);
/* Lookup by full topic name. No reference taken. */
rbk__part_t *rbk__part_find(rbk_consumer_t *c, const char *topic,
                            int32_t partition);
/* The partition of an assignment: found, or created and entered in the
 * table. A new assignment generation starts (assign_off: the offset the
 * assignment names, RD_KAFKA_OFFSET_INVALID for the group's commit). */
rbk__part_t *rbk__part_assign(rbk_consumer_t *c, const char *topic,
                              int32_t partition, int64_t assign_off);
/* Sets the partition's own librdkafka queue (NULL: takes it away and
 * returns the old one for the caller to destroy). */
rd_kafka_queue_t *rbk__part_set_queue(rbk__part_t *p, rd_kafka_queue_t *pq);
/* Revoke, step 1: nothing new starts, queued messages are dropped (a
 * handed-out head stays with its holder). */
void rbk__part_revoke_begin(rbk_consumer_t *c, rbk__part_t *p);
/* Revoke, step 2: the partition leaves the table, detached; its queue is
 * returned for the caller to destroy (no lock may be held then). */
rd_kafka_queue_t *rbk__part_detach(rbk_consumer_t *c, rbk__part_t *p);
/* Hand-outs (handlers, dead letters) in flight among @parts (all when
 * NULL). */
int rbk__part_out_count(rbk_consumer_t *c, GPtrArray *parts);

/* Fetched messages: accepts @rkm into p's queue (1) or destroys it (0). */
int rbk__part_push(rbk_consumer_t *c, rbk__part_t *p, rd_kafka_message_t *rkm);
/* Room in p's queue for the poll thread (0: none; p marked fetch-paused). */
int64_t rbk__part_room(rbk_consumer_t *c, rbk__part_t *p);
/* Marks p fetch-paused when its queue is full after a read. */
void rbk__part_note_full(rbk_consumer_t *c, rbk__part_t *p);
/* Retry timers due: partitions back on the ready queue. */
void rbk__part_timers(rbk_consumer_t *c, int64_t now);
/* Milliseconds until the earliest retry is due (at most @max). */
int rbk__part_next_timer_ms(rbk_consumer_t *c, int max);
/* The stall watchdog: partitions with lag and no progress for the stall
 * timeout are marked reported and returned (references), with lag and
 * idle time in @info (two int64_t each). */
GPtrArray *rbk__part_stalled(rbk_consumer_t *c, int64_t now, GArray *info);
/* Every queued partition that can run goes on the ready queue. */
void rbk__part_ready_all(rbk_consumer_t *c);
/* Drops every ready-queue entry (destroy). */
void rbk__part_ready_clear(rbk_consumer_t *c);

/* The next offset the application will see for p (its position), or -1. */
int64_t rbk__part_position(const rbk__part_t *p);
/* The first offset not yet handled: the head of the queue, else the
 * position. */
int64_t rbk__part_first_unhandled(const rbk__part_t *p);
/* The lag of p from its cached high watermark, or -1. */
int64_t rbk__part_lag(rbk_consumer_t *c, const rbk__part_t *p);
/* The held partition's head offset (the gave-up or dead-letter one), or
 * -1. */
int64_t rbk__part_head_offset(const rbk__part_t *p);
size_t rbk__part_queued(const rbk__part_t *p);

/* Hands out the head of the next runnable partition: the partition (a
 * reference) with *rkmp and *ticketp set, or NULL. */
rbk__part_t *rbk__part_take(rbk_consumer_t *c, rd_kafka_message_t **rkmp,
                            uint64_t *ticketp);

/* Batch mode: hands out up to @max messages from the head of the next
 * runnable partition (into @rkms, in order), one hand-out. */
rbk__part_t *rbk__part_take_batch(rbk_consumer_t *c, size_t max,
                                  rd_kafka_message_t **rkms, size_t *np,
                                  uint64_t *ticketp);
/* A batch hand-out's first @k messages (@msgs, their views) are done:
 * handled (@ran_handler) or dropped as duplicates; offsets stored, ids
 * recorded, messages popped. The hand-out goes on. Returns RBK_ERR_STATE
 * for a stale ticket. */
rbk_err_t rbk__part_batch_advance(rbk_consumer_t *c, rbk__part_t *p,
                                  uint64_t ticket, rbk__msg_t *const *msgs,
                                  size_t k, int ran_handler);
/* Ends a batch hand-out whose messages were all advanced. */
void rbk__part_batch_end(rbk_consumer_t *c, rbk__part_t *p, uint64_t ticket);

/* What the caller must do after a hand-out ends, without the lock. */
typedef enum {
        RBK__ACT_NONE = 0,
        RBK__ACT_GAVE_UP,    /* fire RBK_EV_HANDLER_GAVE_UP */
        RBK__ACT_DEADLETTER, /* send it: rbk__dlq_send(); the hand-out goes on */
        RBK__ACT_DLQ_LIMIT   /* fire RBK_EV_DEADLETTER_LIMIT (partition held) */
} rbk__act_t;

/* Ends hand-out @m (its ticket) with a verdict (RBK_DEADLETTER: at once to
 * the dead-letter topic, or held under the pause give-up mode). @ran_handler: the handler
 * ran (timing counted). A message of a revoked partition is destroyed (its
 * id still recorded in the kept dedup window when handled). Returns
 * RBK_ERR_STATE when @m's ticket is not the partition's current hand-out
 * (nothing changes), else RBK_OK with *actp set. When *actp is
 * RBK__ACT_DEADLETTER the hand-out continues, held by the dead-letter send,
 * until rbk__part_deadletter_done(). */
rbk_err_t rbk__part_complete(rbk_consumer_t *c, rbk__msg_t *m,
                             rbk_verdict_t verdict, int ran_handler,
                             rbk__act_t *actp);
/* The dead-letter send of hand-out @ticket ended: delivered (the offset is
 * stored, 1 returned) or failed (the partition stays held with @reason).
 * Returns 0 when the hand-out is no longer the partition's (revoked or
 * detached meanwhile): the message was destroyed, nothing stored. */
int rbk__part_deadletter_done(rbk_consumer_t *c, rbk__part_t *p,
                              uint64_t ticket, int ok, const char *reason);
/* Counts a duplicate that dedup dropped (the message is completed). */
void rbk__part_count_duplicate(rbk_consumer_t *c, rbk__part_t *p);

/* Poll API message slots: one for hand-out @ticket of p (a reference on p
 * passes to it), and back to the pool. */
rbk__msg_t *rbk__part_slot_get(rbk_consumer_t *c);
void rbk__part_slot_put(rbk_consumer_t *c, rbk__msg_t *m);
void rbk__part_slots_free(rbk_consumer_t *c);

/* Message views. */
void rbk__msg_fill(rbk_consumer_t *c, rbk__msg_t *m, rbk__part_t *p,
                   rd_kafka_message_t *rkm, uint64_t ticket);
/* The id and resent headers of m->rkm into m (librdkafka parses every
 * header then: the costly part of a fill, done with no lock held). */
void rbk__msg_read_headers(rbk__msg_t *m);
void rbk__msg_ready(rbk__msg_t *m);
void rbk__msg_clear(rbk__msg_t *m);

/* Positions and commits. */
void rbk__part_set_committed(rbk__part_t *p, int64_t off);
/* A re-assign moved p to @off: queued messages (none handed out) dropped,
 * quarantine and holds cleared, retries reset, new generation. @resolved:
 * the failed offset of the incident this resolves, or -1. */
void rbk__part_reposition(rbk_consumer_t *c, rbk__part_t *p, int64_t off,
                          int64_t resolved_failed);
/* A re-assign kept p where it was: a new assignment generation at @off. */
void rbk__part_reassigned(rbk__part_t *p, int64_t off);

/* Out of range. */
/* A report of @failed for p: 1 if it belongs to p's current state and must
 * be examined, 0 if stale (made before the current assignment or for the
 * incident already known / just resolved). Messages queued at or beyond
 * @failed are dropped; those below it stay and are still handed out. */
int rbk__part_out_of_range(rbk_consumer_t *c, rbk__part_t *p, int64_t failed);
/* 1 when p has nothing below its failed position left to hand out (or is
 * held or paused, so nothing more will be for now). */
int rbk__part_drained(const rbk__part_t *p);
/* A report of p's position as out of range was disproved: the log, read
 * again, holds the position. Counts it and returns how many there were in
 * the current window of RBK__OOR_WINDOW_MS, this one included. */
int rbk__part_oor_disproved(rbk__part_t *p, int64_t now_ms);
#define RBK__OOR_WINDOW_MS (10 * 60 * 1000)
/* Quarantines p (paged by the caller): records @q; queued messages stay. */
void rbk__part_quarantine(rbk_consumer_t *c, rbk__part_t *p,
                          const rbk_quarantine_t *q, int64_t first_unhandled);
/* p was moved away from the failed offset @failed of a resolved incident:
 * late reports of it are stale until the position passes it. */
void rbk__part_note_resolved(rbk__part_t *p, int64_t failed);
/* rbk_consumer_pause()/resume(): @on holds or releases p (and remembers
 * it for a later assignment of the same partition). RBK_ERR_STATE when
 * already so. */
rbk_err_t rbk__part_set_paused(rbk_consumer_t *c, rbk__part_t *p, int on);
/* Forgets a remembered pause of a partition not assigned here: 1 if there
 * was one. */
int rbk__part_forget_pause(rbk_consumer_t *c, const char *topic,
                           int32_t partition);
/* Releases a held (gave-up / dead-letter failed) partition to hand out its
 * head again. */
void rbk__part_release_hold(rbk_consumer_t *c, rbk__part_t *p);
/* Why p cannot be resolved now (an error message into @es), or RBK_OK. */
rbk_err_t rbk__part_resolvable(const rbk__part_t *p, char *es, size_t esz);
/* The partition with quarantine or hold incident @key, or NULL. */
rbk__part_t *rbk__part_find_incident(rbk_consumer_t *c, const char *key);
/* The incident key of a held partition. g_free. */
char *rbk__part_hold_key(rbk_consumer_t *c, const rbk__part_t *p);

/* ---------------------------------------------------------- consumer_assign.c */

/* The rebalance callback's work. Poll thread. */
void rbk__assign_rebalance(rbk_consumer_t *c, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *parts);
/* Detaches @parts (references) from the consumer and destroys their
 * partition queues. No lock held. */
void rbk__assign_detach(rbk_consumer_t *c, GPtrArray *parts);
/* librdkafka's commit result (offset_commit_cb or the close queue): the
 * committed offsets follow. (No window is saved here: every commit the
 * library makes saved the windows it covers before it was sent.) */
void rbk__assign_commit_result(rbk_consumer_t *c, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *offsets);
/* Commit of stored offsets, waited for at most timeout_ms; returns the
 * librdkafka error (_TIMED_OUT when the wait expired; nothing to commit is
 * success). Dedup windows are saved first, up to each partition's stored
 * offset, and exactly those offsets are committed (a partition whose save
 * failed is left out). Takes c->commit_mu. */
rd_kafka_resp_err_t rbk__consumer_commit_stored(rbk_consumer_t *c,
                                                int timeout_ms);
/* The periodic commit when the library owns it (c->own_commit): every
 * commit interval, as rbk__consumer_commit_stored() but sent without
 * waiting (the result comes through offset_commit_cb); skipped this round
 * when another commit holds commit_mu. Poll thread, no lock held. */
void rbk__assign_commit_due(rbk_consumer_t *c, int64_t now);
/* rbk_consumer_commit() once the consumer is known open and subscribed. */
rbk_err_t rbk__assign_commit_now(rbk_consumer_t *c, int timeout_ms,
                                 char *errstr, size_t errstr_size);
/* Commits @offsets (NULL: the stored offsets of the assignment) and waits
 * at most timeout_ms for the result (the first per-partition error counts). */
rd_kafka_resp_err_t rbk__commit_wait(rbk_consumer_t *c,
                                     rd_kafka_topic_partition_list_t *offsets,
                                     int timeout_ms);
/* Commits explicit offsets (with metadata strings, may be NULL)
 * synchronously; the partitions' committed offsets follow. Takes
 * c->commit_mu. */
rd_kafka_resp_err_t rbk__commit_explicit(rbk_consumer_t *c,
                                         rbk__part_t **parts,
                                         const int64_t *offsets,
                                         char *const *metas, size_t n);
/* Moves the partitions in @targets to the offsets in @offsets: stored
 * offsets committed first, the targets' new offsets committed explicitly
 * (with @metas, unless NULL), then the targets assigned again at those
 * offsets (eager: the whole assignment again, every other partition at the
 * library's own next offset; cooperative: the targets alone, unassigned
 * and assigned). Poll thread, no lock held. A failed commit aborts before
 * anything is re-assigned. */
rd_kafka_resp_err_t rbk__assign_move(rbk_consumer_t *c, rbk__part_t **targets,
                                     const int64_t *offsets, char *const *metas,
                                     size_t n);
/* Leaves the assignment (close): rbk__assign_rebalance() for revoke. */

/* Reads p's watermarks from the broker (bounded); on failure an error
 * naming the partition into @es. */
rbk_err_t rbk__assign_watermarks(rbk_consumer_t *c, const rbk__part_t *p,
                                 int64_t *lo, int64_t *hi, char *es,
                                 size_t esz);
/* Serves a seek request (poll thread, no lock held). */
rbk_err_t rbk__assign_seek(rbk_consumer_t *c, rbk__req_t *req);

/* ---------------------------------------------------------- consumer_quarantine.c */

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
/* Runs a request on the poll thread: directly when called on it, else
 * queued and waited for (bounded). */
rbk_err_t rbk__consumer_submit(rbk_consumer_t *c, rbk__req_t *req);
/* Same as rbk_consumer_resolve() with an @applied_by. */
rbk_err_t rbk__consumer_resolve(rbk_consumer_t *c, const char *topic,
                                int32_t partition, rbk_resolve_t how,
                                int64_t offset, const char *applied_by,
                                char *errstr, size_t errstr_size);

/* ---------------------------------------------------------- consumer_deadletter.c */

/* Sends hand-out @ticket's message @rkm of p to the dead-letter topic (the
 * hand-out holds it until the report). No lock held. On a send error the
 * partition goes to RBK__HOLD_DLQ_FAILED and RBK_EV_DEADLETTER_FAILED
 * fires. */
void rbk__dlq_send(rbk_consumer_t *c, rbk__part_t *p, rd_kafka_message_t *rkm,
                   uint64_t ticket, int attempts, const char *reason);
/* Waits (bounded) until no dead letter is in flight. */
void rbk__dlq_flush(rbk_consumer_t *c, int timeout_ms);
/* Closes and destroys the dead-letter producer. */
void rbk__dlq_close(rbk_consumer_t *c, int timeout_ms);

/* ---------------------------------------------------------- consumer.c */

/* Fires an event (no lock held). */
void rbk__consumer_emit(rbk_consumer_t *c, rbk_event_t *ev);
/* Fires @ev about p's message at @offset: the incident key of @kind
 * (rbk__incident_kind_t), topic, partition, offset, id, and @msg (freed). No
 * lock held. */
void rbk__consumer_emit_part(rbk_consumer_t *c, rbk_event_t *ev,
                             rbk__part_t *p, int kind, int64_t offset,
                             const char *id, char *msg);
/* Reports a dedup store failure for a partition (no lock held). */
void rbk__consumer_dedup_error(rbk_consumer_t *c, const char *topic,
                               int32_t partition, const char *reason);

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

/* Wakes waiters on c->cond (caller holds c->lock). */
static inline void rbk__consumer_wake(rbk_consumer_t *c) {
        if (c->cond_waiters)
                g_cond_broadcast(&c->cond);
}

#endif /* RBK_CONSUMER_INTERNAL_H */
