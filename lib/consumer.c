/* The robust group consumer: lifecycle, the poll thread, worker threads,
 * the run and poll APIs, shutdown and stats. A partition's state belongs to
 * consumer_part.c, rebalances and commits to consumer_assign.c, quarantine
 * to consumer_quarantine.c, dead letters to consumer_deadletter.c;
 * consumer_internal.h describes the threads and locks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer_internal.h"
#include "control.h"
#include "incident.h"

__thread rbk_consumer_t *rbk__tl_poller;

/* How long one poll of the poll thread may block, so that stop requests,
 * retry timers and resolution requests are served promptly. */
#define RBK__POLL_SLICE_MS 100
/* Messages taken from librdkafka per poll iteration at most. */
#define RBK__POLL_BATCH 1000

/* ------------------------------------------------------------ events */

void rbk__consumer_emit(rbk_consumer_t *c, rbk_event_t *ev) {
        if (!ev->group)
                ev->group = c->group;
        rbk__hooks_emit(c->hooks, ev);
}

/* Fires @ev about topic/partition with incident key @key and @msg (both
 * freed). No lock held. */
static void rbk__emit_keyed(rbk_consumer_t *c, rbk_event_t *ev,
                            const char *topic, int32_t partition, char *key,
                            char *msg) {
        ev->topic = topic;
        ev->partition = partition;
        ev->incident_key = key;
        ev->message = msg;
        rbk__consumer_emit(c, ev);
        g_free(msg);
        g_free(key);
}

void rbk__consumer_emit_part(rbk_consumer_t *c, rbk_event_t *ev,
                             rbk__part_t *p, int kind, int64_t offset,
                             const char *id, char *msg) {
        ev->offset = offset;
        ev->id = id;
        rbk__emit_keyed(c, ev, p->topic, p->partition,
                        rbk__incident_key((rbk__incident_kind_t)kind,
                                          c->ugroup, p->utopic, p->partition,
                                          offset),
                        msg);
}

/* Fires @ev about the dedup window of topic/partition (incident key
 * "group/topic/partition/@what") with @msg (freed). No lock held. */
static void rbk__emit_dedup(rbk_consumer_t *c, rbk_event_t *ev,
                            const char *topic, int32_t partition,
                            const char *what, char *msg) {
        rbk__emit_keyed(c, ev, topic, partition,
                        g_strdup_printf("%s/%s/%" PRId32 "/%s", c->ugroup,
                                        topic, partition, what),
                        msg);
}

void rbk__consumer_dedup_error(rbk_consumer_t *c, const char *topic,
                               int32_t partition, const char *reason) {
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_DEDUP_STORE_ERROR, RBK_SEV_ERROR);
        ev.err = RBK_ERR_STORE;
        rbk__emit_dedup(c, &ev, topic, partition, "dedup-store",
                        g_strdup_printf("dedup store failed for %s [%" PRId32
                                        "]: %s; duplicates may reach the "
                                        "handler",
                                        topic, partition, reason));
}

/* Dedup windows forgotten beyond the bounds (a worker thread, no lock). */
static void rbk__dedup_capacity(const char *topic, int32_t partition,
                                uint64_t forgotten, const char *reason,
                                void *opaque) {
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_DEDUP_CAPACITY, RBK_SEV_WARNING);
        rbk__emit_dedup(
            opaque, &ev, topic, partition, "dedup-capacity",
            g_strdup_printf("dedup of %s [%" PRId32 "] forgot %" PRIu64
                            " producer window(s): %s; duplicates of those "
                            "producers' older messages may reach the "
                            "handler (docs/dedup.md, sizing)",
                            topic, partition, forgotten, reason));
}

static void rbk__dedup_error(const char *topic, int32_t partition,
                             rbk_err_t err, const char *reason, void *opaque) {
        rbk__consumer_dedup_error(opaque, topic, partition, reason);
}

static void rbk__offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *offsets,
                                  void *opaque) {
        rbk__assign_commit_result(opaque, err, offsets);
}

static void rbk__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts,
                              void *opaque) {
        rbk_consumer_t *c = opaque;
        rbk__assign_rebalance(c, err, parts);
        /* For rbk_consumer_health(): joined, and since when nothing is
         * assigned. */
        g_mutex_lock(&c->lock);
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                c->joined = 1;
        if (g_hash_table_size(c->parts))
                c->unassigned_since_ms = 0;
        else if (!c->unassigned_since_ms)
                c->unassigned_since_ms = rbk__now_ms();
        g_mutex_unlock(&c->lock);
}

/* librdkafka's statistics, every statistics.interval.ms: kept for the
 * metrics and health, and handed to the application's callback with the
 * library's own counters. Poll thread (served by rd_kafka_consumer_poll()). */
static int rbk__stats_cb(rd_kafka_t *rk, char *json, size_t json_len,
                         void *opaque) {
        rbk_consumer_t *c = opaque;
        rbk__rdstats_update(&c->rdstats, json);
        if (c->stats_cb) {
                char *mine = rbk_consumer_stats_json(c);
                c->stats_cb(json, mine ? mine : "{}", c->stats_opaque);
                free(mine);
        }
        return 0; /* librdkafka frees json */
}

/* ------------------------------------------------------------ callbacks */

static void rbk__error_cb(rd_kafka_t *rk, int err, const char *reason,
                          void *opaque) {
        rbk_consumer_t *c = opaque;
        rbk_event_t ev;
        char buf[512];
        int fatal = err == RD_KAFKA_RESP_ERR__FATAL;
        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
                g_mutex_lock(&c->lock);
                uint64_t consumed = c->consumed;
                g_mutex_unlock(&c->lock);
                rbk__rdstats_all_down(&c->rdstats, consumed);
        }
        if (fatal) {
                char fr[256];
                rd_kafka_resp_err_t ferr =
                    rd_kafka_fatal_error(rk, fr, sizeof(fr));
                snprintf(buf, sizeof(buf), "fatal consumer error: %s: %s",
                         rd_kafka_err2name(ferr), fr);
        } else {
                snprintf(buf, sizeof(buf), "consumer error: %s: %s",
                         rd_kafka_err2name(err), reason);
        }
        rbk__event_init(&ev, RBK_EV_CLIENT_ERROR,
                        fatal ? RBK_SEV_CRITICAL : RBK_SEV_WARNING);
        char *key = g_strdup_printf("%s/client/%s", c->ugroup,
                                    rd_kafka_err2name(err));
        ev.err = fatal ? RBK_ERR_FATAL : RBK_ERR_KAFKA;
        ev.kafka_err = err;
        ev.message = buf;
        ev.incident_key = key;
        rbk__consumer_emit(c, &ev);
        g_free(key);
}

static void rbk__log_cb(const rd_kafka_t *rk, int level, const char *fac,
                        const char *buf) {
        rbk_consumer_t *c = rd_kafka_opaque(rk);
        if (c && c->hooks)
                rbk__hooks_rd_log(c->hooks, level, fac, buf);
}

/* ------------------------------------------------------------ poll loop */

/* A message carrying an error (poll thread, no lock held). */
static void rbk__dispatch_error(rbk_consumer_t *c, rd_kafka_message_t *rkm) {
        if (rkm->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET && rkm->rkt)
                rbk__q_on_reset(c, rkm);
        else if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                rbk__log(c->hooks, 4, "consumer", "consume error%s%s: %s",
                         rkm->rkt ? " on " : "",
                         rkm->rkt ? rbk__unprefixed(
                                        c->prefix,
                                        rd_kafka_topic_name(rkm->rkt))
                                  : "",
                         rd_kafka_message_errstr(rkm));
        rd_kafka_message_destroy(rkm);
}

/* Hands messages from librdkafka to their partitions' queues, in order,
 * under one lock round (released only around an error). Poll thread. */
static void rbk__dispatch(rbk_consumer_t *c, rd_kafka_message_t **rkms,
                          size_t n) {
        int locked = 0;
        rbk__part_t *p = NULL;
        const rd_kafka_topic_t *prkt = NULL;
        int32_t ppart = -1;
        for (size_t i = 0; i < n; i++) {
                rd_kafka_message_t *rkm = rkms[i];
                if (rkm->err) {
                        if (locked)
                                g_mutex_unlock(&c->lock);
                        locked = 0;
                        rbk__dispatch_error(c, rkm);
                        continue;
                }
                if (!locked) {
                        g_mutex_lock(&c->lock);
                        locked = 1;
                        p = NULL;
                }
                if (!p || rkm->rkt != prkt || rkm->partition != ppart) {
                        p = rbk__part_find(c, rd_kafka_topic_name(rkm->rkt),
                                           rkm->partition);
                        prkt = rkm->rkt;
                        ppart = rkm->partition;
                }
                rbk__part_push(c, p, rkm);
        }
        if (locked)
                g_mutex_unlock(&c->lock);
}

static void rbk__emit_stall(rbk_consumer_t *c, rbk__part_t *p, int64_t lag,
                            int64_t idle_ms) {
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_PARTITION_STALLED, RBK_SEV_WARNING);
        char *key = g_strdup_printf("%s/%s/%" PRId32 "/stalled", c->ugroup,
                                    p->utopic, p->partition);
        char *msg = g_strdup_printf(
            "partition %s [%" PRId32 "] is stalled: %" PRId64
            " message(s) behind and no progress for %" PRId64 " ms%s",
            p->utopic, p->partition, lag, idle_ms,
            p->out != RBK__OUT_NONE ? " (a handler call has not returned)"
                                    : "");
        ev.topic = p->topic;
        ev.partition = p->partition;
        ev.offset = p->stored >= 0 ? p->stored : RBK_NO_VALUE;
        ev.committed_offset = p->committed >= 0 ? p->committed : RBK_NO_VALUE;
        ev.incident_key = key;
        ev.message = msg;
        rbk__consumer_emit(c, &ev);
        g_free(msg);
        g_free(key);
}

/* The next offset the application will see for p (its position), or -1. */
/* Timers: retries due, the stall watchdog. Poll thread. */
static void rbk__timers(rbk_consumer_t *c) {
        int64_t now = rbk__now_ms();
        int check_stall = c->stall_timeout_ms > 0 &&
                          now >= c->next_stall_check_ms;
        if (check_stall)
                c->next_stall_check_ms =
                    now + MIN(1000, MAX(c->stall_timeout_ms / 4, 10));
        GArray *info = check_stall ? g_array_new(FALSE, FALSE, sizeof(int64_t))
                                   : NULL;
        GPtrArray *stalled = NULL;
        g_mutex_lock(&c->lock);
        rbk__part_timers(c, now);
        if (check_stall)
                stalled = rbk__part_stalled(c, now, info);
        g_mutex_unlock(&c->lock);
        if (stalled) {
                for (guint i = 0; i < stalled->len; i++)
                        rbk__emit_stall(c, g_ptr_array_index(stalled, i),
                                        g_array_index(info, int64_t, 2 * i),
                                        g_array_index(info, int64_t,
                                                      2 * i + 1));
                g_ptr_array_free(stalled, TRUE);
        }
        if (info)
                g_array_free(info, TRUE);
}

/* Moves messages from each partition's librdkafka queue to its library
 * queue, as much as there is room for. Returns how many. Poll thread. */
static int rbk__fill(rbk_consumer_t *c) {
        GPtrArray *todo = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        GArray *room = g_array_new(FALSE, FALSE, sizeof(int));
        g_mutex_lock(&c->lock);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                int64_t r = rbk__part_room(c, p);
                if (r <= 0)
                        continue;
                int ri = (int)MIN(r, RBK__POLL_BATCH);
                g_ptr_array_add(todo, rbk__part_ref(p));
                g_array_append_val(room, ri);
        }
        g_mutex_unlock(&c->lock);
        int total = 0;
        rd_kafka_message_t *buf[RBK__POLL_BATCH];
        for (guint i = 0; i < todo->len; i++) {
                rbk__part_t *p = g_ptr_array_index(todo, i);
                ssize_t n = rd_kafka_consume_batch_queue(
                    p->pq, 0, buf, (size_t)g_array_index(room, int, i));
                if (n > 0) {
                        rbk__dispatch(c, buf, (size_t)n);
                        total += (int)n;
                }
                if (n == g_array_index(room, int, i)) {
                        g_mutex_lock(&c->lock);
                        rbk__part_note_full(c, p);
                        g_mutex_unlock(&c->lock);
                }
        }
        g_ptr_array_free(todo, TRUE);
        g_array_free(room, TRUE);
        return total;
}

/* One iteration of the poll thread. Caller holds poll_mu. */
static void rbk__poll_iteration(rbk_consumer_t *c, int timeout_ms) {
        /* Messages already waiting first: then the wait below is short. */
        int t = 0;
        if (rbk__fill(c) == 0) {
                g_mutex_lock(&c->lock);
                t = rbk__part_next_timer_ms(c, timeout_ms);
                /* An out-of-range report waiting for its partition to
                 * drain is looked at again soon. */
                if (c->resets->len)
                        t = MIN(t, 20);
                g_mutex_unlock(&c->lock);
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, t);
        for (int n = 0; rkm; n++) {
                rbk__dispatch(c, &rkm, 1);
                if (n + 1 >= RBK__POLL_BATCH)
                        break;
                rkm = rd_kafka_consumer_poll(c->rk, 0);
        }
        rbk__fill(c);
        rbk__q_process_resets(c);
        rbk__q_process_requests(c);
        rbk__timers(c);
        rbk__assign_commit_due(c, rbk__now_ms());
}

/* ------------------------------------------------------------ handling */

static void rbk__after(rbk_consumer_t *c, rbk__part_t *p, rbk__act_t act,
                       rd_kafka_message_t *rkm, uint64_t ticket,
                       int64_t offset, const char *id, int attempts,
                       const char *reason) {
        if (act == RBK__ACT_DLQ_LIMIT) {
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_DEADLETTER_LIMIT,
                                RBK_SEV_CRITICAL);
                char *msg = g_strdup_printf(
                    "%s [%" PRId32 "] reached the dead-letter limit (%" PRId64
                    " within %" PRId64 " ms) at offset %" PRId64
                    ": the partition is held instead of sending more; "
                    "rbk_consumer_resolve() releases it. Last reason: %s",
                    p->utopic, p->partition, c->dlq_limit,
                    c->dlq_limit_window_ms, offset, reason ? reason : "-");
                rbk__consumer_emit_part(c, &ev, p, RBK__INCIDENT_GAVE_UP,
                                        offset, id, msg);
        } else if (act == RBK__ACT_GAVE_UP) {
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_HANDLER_GAVE_UP, RBK_SEV_ERROR);
                char *msg = g_strdup_printf(
                    "handler gave up on %s [%" PRId32 "] offset %" PRId64
                    " after %d attempt(s); the partition is paused until "
                    "rbk_consumer_resolve() releases it%s%s",
                    p->utopic, p->partition, offset, attempts,
                    reason ? ": " : "", reason ? reason : "");
                rbk__consumer_emit_part(c, &ev, p, RBK__INCIDENT_GAVE_UP,
                                        offset, id, msg);
        } else if (act == RBK__ACT_DEADLETTER) {
                /* The send holds rkm until its report ends the hand-out. */
                rbk__dlq_send(c, p, rkm, ticket, attempts, reason);
        }
}

/* Checks the id of a message about to be handed out (m filled by
 * rbk__msg_fill() and rbk__msg_read_headers()). Returns 1 if it is a
 * duplicate and was completed (the offset stored, nothing handed out).
 * Otherwise notes in m the verdict that completion counts, and takes no
 * lock. */
static int rbk__dedup_drop(rbk_consumer_t *c, rbk__part_t *p, rbk__msg_t *m) {
        const void *id = m->id_raw;
        size_t idlen = m->id_len;
        rbk__dedup_verdict_t v = RBK__DEDUP_NO_ID;
        int first = m->pub.attempt == 1;
        if (c->dedup && first)
                v = rbk__dedup_check_part(
                    c->dedup, p->dp, id, idlen,
                    m->pub.has_msgid ? &m->pub.msgid : NULL);
        else if (id && idlen)
                v = RBK__DEDUP_NEW;
        m->dedup_count = first ? (int)v : (int)RBK__DEDUP_NEW;
        if (v != RBK__DEDUP_DUPLICATE)
                return 0;
        m->dedup_count = RBK__DEDUP_NEW;
        rbk__act_t act;
        g_mutex_lock(&c->lock);
        rbk__part_count_duplicate(c, p);
        rbk__part_complete(c, m, RBK_HANDLED, 0, &act);
        g_mutex_unlock(&c->lock);
        return 1;
}

/* One message through the handler, with everything around it. Called with
 * c->lock NOT held, p's hand-out @ticket holding rkm. */
static void rbk__handle_one(rbk_consumer_t *c, rbk__part_t *p,
                            rd_kafka_message_t *rkm, uint64_t ticket) {
        rbk__msg_t m;
        m.pool_next = NULL;
        m.reason = NULL;
        rbk__msg_fill(c, &m, p, rkm, ticket);
        rbk__msg_read_headers(&m);
        if (rbk__dedup_drop(c, p, &m))
                return;
        rbk__msg_ready(&m);
        rbk_verdict_t v = c->handler(&m.pub, c->handler_opaque);
        if (v != RBK_HANDLED && v != RBK_RETRY && v != RBK_DEADLETTER) {
                rbk__log(c->hooks, 4, "consumer",
                         "handler returned unknown verdict %d for %s [%" PRId32
                         "] offset %" PRId64 "; treated as RBK_RETRY",
                         (int)v, p->utopic, p->partition, rkm->offset);
                v = RBK_RETRY;
        }
        int64_t offset = m.pub.offset;
        int attempts = m.pub.attempt;
        rbk__act_t act;
        g_mutex_lock(&c->lock);
        rbk__part_complete(c, &m, v, 1, &act);
        g_mutex_unlock(&c->lock);
        rbk__after(c, p, act, rkm, ticket, offset, m.pub.id, attempts,
                   m.reason);
        rbk__msg_clear(&m);
}

/* One batch of p through the batch handler. Called with c->lock NOT held;
 * p's hand-out @ticket holds rkms[0..n-1] (the head of its queue). */
static void rbk__handle_batch(rbk_consumer_t *c, rbk__part_t *p,
                              rd_kafka_message_t **rkms, size_t n,
                              uint64_t ticket) {
        rbk__msg_t *ms = g_new(rbk__msg_t, n);
        rbk__msg_t **mp = g_new(rbk__msg_t *, n);
        const rbk_message_t **pubs = g_new(const rbk_message_t *, n);
        for (size_t i = 0; i < n; i++)
                mp[i] = &ms[i];
        size_t dups = 0, k = n;
        for (size_t i = 0; i < n; i++) {
                ms[i].pool_next = NULL;
                ms[i].reason = NULL;
                rbk__msg_fill(c, &ms[i], p, rkms[i], ticket);
                rbk__msg_read_headers(&ms[i]);
                if (i > 0)
                        ms[i].pub.attempt = 1;
        }
        /* Duplicates at the front are dropped; the batch ends before a
         * later one (it is dropped at the front of the next batch), so no
         * duplicate reaches the handler and offsets stay in order. */
        for (size_t i = 0; i < n && i < k; i++) {
                rbk__dedup_verdict_t v = RBK__DEDUP_NO_ID;
                int first = ms[i].pub.attempt == 1;
                if (c->dedup && first)
                        v = rbk__dedup_check_part(
                            c->dedup, p->dp, ms[i].id_raw, ms[i].id_len,
                            ms[i].pub.has_msgid ? &ms[i].pub.msgid : NULL);
                else if (ms[i].id_raw && ms[i].id_len)
                        v = RBK__DEDUP_NEW;
                ms[i].dedup_count = v == RBK__DEDUP_DUPLICATE || !first
                                        ? (int)RBK__DEDUP_NEW
                                        : (int)v;
                if (v != RBK__DEDUP_DUPLICATE)
                        continue;
                if (i == dups)
                        dups++;
                else
                        k = i;
        }
        if (dups) {
                g_mutex_lock(&c->lock);
                for (size_t i = 0; i < dups; i++)
                        rbk__part_count_duplicate(c, p);
                rbk__part_batch_advance(c, p, ticket, mp, dups, 0);
                g_mutex_unlock(&c->lock);
        }
        size_t cnt = k - dups;
        rbk__act_t act = RBK__ACT_NONE;
        size_t done = 0;
        rbk_verdict_t rest = RBK_RETRY;
        if (cnt) {
                for (size_t i = dups; i < k; i++) {
                        rbk__msg_ready(&ms[i]);
                        pubs[i - dups] = &ms[i].pub;
                }
                done = c->batch_handler(pubs, cnt, &rest, c->handler_opaque);
                if (done > cnt) {
                        rbk__log(c->hooks, 4, "consumer",
                                 "batch handler returned %zu for a batch of "
                                 "%zu of %s [%" PRId32 "]; treated as %zu",
                                 done, cnt, p->utopic, p->partition, cnt);
                        done = cnt;
                }
                if (rest != RBK_RETRY && rest != RBK_DEADLETTER)
                        rest = RBK_RETRY;
        }
        rbk__msg_t *failed = done < cnt ? &ms[dups + done] : NULL;
        g_mutex_lock(&c->lock);
        rbk__part_batch_advance(c, p, ticket, mp + dups, done, 1);
        if (failed)
                rbk__part_complete(c, failed, rest, 1, &act);
        else
                rbk__part_batch_end(c, p, ticket);
        g_mutex_unlock(&c->lock);
        if (failed)
                rbk__after(c, p, act, failed->rkm, ticket, failed->pub.offset,
                           failed->pub.id, failed->pub.attempt,
                           failed->reason);
        for (size_t i = 0; i < n; i++)
                rbk__msg_clear(&ms[i]);
        g_free(pubs);
        g_free(mp);
        g_free(ms);
}

static gpointer rbk__worker_main(gpointer arg) {
        rbk_consumer_t *c = arg;
        g_mutex_lock(&c->lock);
        size_t bmax = c->batch_handler ? (size_t)c->batch_max : 1;
        rd_kafka_message_t **rkms = g_new(rd_kafka_message_t *, bmax);
        while (!c->workers_quit) {
                rd_kafka_message_t *rkm = NULL;
                uint64_t ticket = 0;
                size_t n = 0;
                rbk__part_t *p =
                    c->batch_handler
                        ? rbk__part_take_batch(c, bmax, rkms, &n, &ticket)
                        : rbk__part_take(c, &rkm, &ticket);
                if (!p) {
                        c->work_waiters++;
                        g_cond_wait_until(&c->work_cond, &c->lock,
                                          g_get_monotonic_time() +
                                              200 * G_TIME_SPAN_MILLISECOND);
                        c->work_waiters--;
                        continue;
                }
                g_mutex_unlock(&c->lock);
                if (c->batch_handler)
                        rbk__handle_batch(c, p, rkms, n, ticket);
                else
                        rbk__handle_one(c, p, rkm, ticket);
                rbk__part_unref(p);
                g_mutex_lock(&c->lock);
        }
        g_mutex_unlock(&c->lock);
        g_free(rkms);
        return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static void rbk__conf_settings(rbk_consumer_t *c) {
        const rbk_conf_t *cf = c->conf;
        c->workers_n = (int)rbk__conf_int(cf, "rbk.consumer.workers");
        c->queue_max = rbk__conf_int(cf, "rbk.consumer.queue.max");
        c->retry_max = rbk__conf_int(cf, "rbk.consumer.retry.max.attempts");
        c->backoff_ms = rbk__conf_int(cf, "rbk.consumer.retry.backoff.ms");
        c->backoff_max_ms =
            rbk__conf_int(cf, "rbk.consumer.retry.backoff.max.ms");
        c->giveup_deadletter =
            !strcmp(rbk__conf_str(cf, "rbk.consumer.giveup"), "deadletter");
        c->dlq_topic =
            g_strdup(rbk__conf_str(cf, "rbk.consumer.deadletter.topic"));
        c->stall_timeout_ms =
            rbk__conf_int(cf, "rbk.consumer.stall.timeout.ms");
        c->oor_recheck_ms =
            rbk__conf_int(cf, "rbk.consumer.out.of.range.recheck.ms");
        c->revoke_timeout_ms =
            rbk__conf_int(cf, "rbk.consumer.revoke.timeout.ms");
        c->shutdown_timeout_ms = rbk__conf_int(cf, "rbk.shutdown.timeout.ms");
        c->initial_offset =
            g_strdup(rbk__conf_str(cf, "rbk.consumer.initial.offset"));
        c->dlq_limit = rbk__conf_int(cf, "rbk.consumer.deadletter.limit");
        c->batch_max = rbk__conf_int(cf, "rbk.consumer.batch.max.messages");
        c->batch_max_ms = rbk__conf_int(cf, "rbk.consumer.batch.max.ms");
        if (c->batch_max < 1)
                c->batch_max = 1;
        c->dlq_limit_window_ms =
            rbk__conf_int(cf, "rbk.consumer.deadletter.limit.window.ms");
        if (c->workers_n < 1)
                c->workers_n = 1;
        if (c->queue_max < 1)
                c->queue_max = 1;
        if (c->retry_max < 1)
                c->retry_max = 1;
}

static void rbk__consumer_free(rbk_consumer_t *c) {
        rbk__control_stop(c->control);
        c->control = NULL;
        if (c->parts)
                g_hash_table_destroy(c->parts);
        rbk__part_ready_clear(c);
        rbk__part_slots_free(c);
        if (c->resets)
                g_ptr_array_free(c->resets, TRUE);
        if (c->reported_keys)
                g_hash_table_destroy(c->reported_keys);
        if (c->resolved_keys)
                g_hash_table_destroy(c->resolved_keys);
        if (c->paused_keys)
                g_hash_table_destroy(c->paused_keys);
        if (c->dedup)
                rbk__dedup_destroy(c->dedup);
        if (c->cq)
                rd_kafka_queue_destroy(c->cq);
        rbk__oauth_stop(c->rk);
        if (c->rk)
                rd_kafka_destroy_flags(c->rk,
                                       c->close_ok
                                           ? 0
                                           : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        if (c->hooks)
                rbk__hooks_destroy(c->hooks);
        rbk_conf_destroy(c->conf);
        rbk__rdstats_clear(&c->rdstats);
        g_free(c->prefix);
        g_free(c->group);
        g_free(c->ugroup);
        g_free(c->dlq_topic);
        g_free(c->initial_offset);
        g_mutex_clear(&c->poll_mu);
        g_mutex_clear(&c->commit_mu);
        g_mutex_clear(&c->lock);
        g_mutex_clear(&c->dlq_mu);
        g_cond_clear(&c->cond);
        g_cond_clear(&c->work_cond);
        g_free(c);
}

/* Who commits. With a persistent dedup store, a window must be saved
 * before the commit that moves past what it holds, so librdkafka's own
 * auto-commit timer (which commits, then tells us) is turned off and the
 * poll thread commits every auto.commit.interval.ms instead (window
 * saves first). enable.auto.commit=false is left alone: the library then
 * commits only in rbk_consumer_commit(), on revoke and on close. */
static int rbk__own_commit(rbk_consumer_t *c, const rbk_conf_t *conf,
                           rd_kafka_conf_t *rc, char *errstr,
                           size_t errstr_size) {
        const char *delay = getenv("RBK_TEST_COMMIT_DELAY_MS");
        if (delay)
                c->test_commit_delay_ms = g_ascii_strtoll(delay, NULL, 10);
        if (!conf->dedup_store || !rbk__conf_bool(conf, "rbk.dedup.enable"))
                return 0;
        char v[64], e[256];
        size_t sz = sizeof(v);
        if (rd_kafka_conf_get(rc, "enable.auto.commit", v, &sz) !=
                RD_KAFKA_CONF_OK ||
            strcmp(v, "true"))
                return 0;
        sz = sizeof(v);
        if (rd_kafka_conf_get(rc, "auto.commit.interval.ms", v, &sz) !=
            RD_KAFKA_CONF_OK)
                snprintf(v, sizeof(v), "5000");
        if (rd_kafka_conf_set(rc, "enable.auto.commit", "false", e,
                              sizeof(e)) != RD_KAFKA_CONF_OK) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                            "enable.auto.commit: %s", e);
                return -1;
        }
        c->own_commit = 1;
        c->commit_interval_ms = g_ascii_strtoll(v, NULL, 10);
        c->next_commit_ms = rbk__now_ms() + c->commit_interval_ms;
        return 0;
}

rbk_consumer_t *rbk_consumer_new(const rbk_conf_t *conf, char *errstr,
                                 size_t errstr_size) {
        if (!conf) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "configuration is NULL");
                return NULL;
        }
        rbk_consumer_t *c = g_new0(rbk_consumer_t, 1);
        g_mutex_init(&c->poll_mu);
        g_mutex_init(&c->commit_mu);
        g_mutex_init(&c->lock);
        g_mutex_init(&c->dlq_mu);
        g_cond_init(&c->cond);
        g_cond_init(&c->work_cond);
        g_queue_init(&c->requests);
        rbk__rdstats_init(&c->rdstats);
        c->pid = getpid();
        c->conf = rbk_conf_dup(conf);
        c->prefix = g_strdup(rbk__conf_prefix(conf));
        rbk__conf_settings(c);

        if (c->giveup_deadletter) {
                char e[256];
                if (!*c->dlq_topic) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                    "rbk.consumer.giveup=deadletter needs "
                                    "rbk.consumer.deadletter.topic");
                        goto fail;
                }
                if (rbk__topic_validate(c->prefix, c->dlq_topic, e,
                                        sizeof(e))) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                    "rbk.consumer.deadletter.topic: %s", e);
                        goto fail;
                }
        }

        rd_kafka_conf_t *rc =
            rbk__conf_build(conf, RBK_CONSUMER, errstr, errstr_size);
        if (!rc)
                goto fail;
        char gid[512];
        size_t gsz = sizeof(gid);
        if (rd_kafka_conf_get(rc, "group.id", gid, &gsz) != RD_KAFKA_CONF_OK ||
            !*gid) {
                rd_kafka_conf_destroy(rc);
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                            "group.id is required for a consumer");
                goto fail;
        }
        c->ugroup = g_strdup(gid);
        c->group = rbk__prefixed(c->prefix, gid);
        char e[512];
        if (rd_kafka_conf_set(rc, "group.id", c->group, e, sizeof(e)) !=
            RD_KAFKA_CONF_OK) {
                rd_kafka_conf_destroy(rc);
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF, "group.id: %s",
                            e);
                goto fail;
        }

        if (rbk__own_commit(c, conf, rc, errstr, errstr_size)) {
                rd_kafka_conf_destroy(rc);
                goto fail;
        }

        const char *name = rbk__conf_str(conf, "rbk.client.name");
        c->hooks = rbk__hooks_new(conf, name && *name ? name : "anonymous");
        c->parts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify)rbk__part_unref);
        c->resets = g_ptr_array_new();
        c->slots = g_ptr_array_new();
        c->reported_keys =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

        rd_kafka_conf_set_opaque(rc, c);
        rd_kafka_conf_set_rebalance_cb(rc, rbk__rebalance_cb);
        rd_kafka_conf_set_offset_commit_cb(rc, rbk__offset_commit_cb);
        rd_kafka_conf_set_error_cb(rc, rbk__error_cb);
        rd_kafka_conf_set_log_cb(rc, rbk__log_cb);
        rd_kafka_conf_set_stats_cb(rc, rbk__stats_cb);
        c->stats_cb = conf->stats_cb;
        c->stats_opaque = conf->stats_opaque;
        char gv[256];
        size_t gvsz = sizeof(gv);
        c->static_member = rd_kafka_conf_get(rc, "group.instance.id", gv,
                                             &gvsz) == RD_KAFKA_CONF_OK &&
                           gv[0] != '\0';
        gvsz = sizeof(gv);
        c->classic_group = rd_kafka_conf_get(rc, "group.protocol", gv,
                                             &gvsz) != RD_KAFKA_CONF_OK ||
                           !g_ascii_strcasecmp(gv, "classic");
        char sto[32];
        size_t stosz = sizeof(sto);
        c->session_timeout_ms =
            rd_kafka_conf_get(rc, "session.timeout.ms", sto, &stosz) ==
                    RD_KAFKA_CONF_OK
                ? g_ascii_strtoll(sto, NULL, 10)
                : 45000;

        c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        if (!c->rk) {
                rd_kafka_conf_destroy(rc);
                rbk__redact(e);
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating the librdkafka consumer failed: %s", e);
                goto fail;
        }
        rbk__oauth_start(c->conf, c->rk);
        rd_kafka_poll_set_consumer(c->rk);
        c->cq = rd_kafka_queue_get_consumer(c->rk);
        c->close_ok = 0;
        if (rbk__conf_bool(conf, "rbk.dedup.enable")) {
                c->dedup = rbk__dedup_new(conf, c->ugroup);
                rbk__dedup_set_error_cb(c->dedup, rbk__dedup_error, c);
                rbk__dedup_set_capacity_cb(c->dedup, rbk__dedup_capacity, c);
        }
        rbk__version_check(c->hooks);
        /* Operator commands (rbk-admin); NULL with no error when disabled. */
        e[0] = '\0';
        c->control = rbk__control_start(c, conf, c->ugroup, e, sizeof(e));
        if (!c->control && *e) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF, "%s", e);
                goto fail;
        }
        return c;
fail:
        c->close_ok = 1;
        rbk__consumer_free(c);
        return NULL;
}

/* A subscription pattern ("^..."): compiles (POSIX extended syntax as
 * librdkafka's, checked here with GLib's PCRE, which accepts a superset). */
static rbk_err_t rbk__pattern_validate(const char *pat, char *e, size_t esz) {
        GError *ge = NULL;
        GRegex *re = g_regex_new(pat, G_REGEX_OPTIMIZE, 0, &ge);
        if (!re) {
                rbk__seterr(e, esz, RBK_ERR_INVALID_TOPIC,
                            "pattern \"%s\" does not compile: %s", pat,
                            ge ? ge->message : "?");
                g_clear_error(&ge);
                return RBK_ERR_INVALID_TOPIC;
        }
        g_regex_unref(re);
        if (strlen(pat) > 2048)
                return rbk__seterr(e, esz, RBK_ERR_INVALID_TOPIC,
                                   "pattern longer than 2048 characters");
        return RBK_OK;
}

/* "^" + the prefix, its regex metacharacters escaped, + the rest. */
static char *rbk__pattern_prefixed(const char *prefix, const char *pat) {
        char *esc = g_regex_escape_string(prefix ? prefix : "", -1);
        char *full = g_strconcat("^", esc, pat + 1, NULL);
        g_free(esc);
        return full;
}

rbk_err_t rbk_consumer_subscribe(rbk_consumer_t *c, const char *const *topics,
                                 size_t topic_cnt, char *errstr,
                                 size_t errstr_size) {
        if (!c)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "consumer is NULL");
        if (rbk__forked(c->pid))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_FORKED,
                                   "consumer used in a forked child; create "
                                   "clients after fork()");
        if (!topics || topic_cnt == 0)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "topic list is empty");
        for (size_t i = 0; i < topic_cnt; i++) {
                char e[300];
                rbk_err_t err =
                    topics[i] && topics[i][0] == '^'
                        ? rbk__pattern_validate(topics[i], e, sizeof(e))
                        : rbk__topic_validate(c->prefix, topics[i], e,
                                              sizeof(e));
                if (err)
                        return rbk__seterr(errstr, errstr_size, err,
                                           "topic %zu: %s", i, e);
        }
        if (c->closed)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_SHUTDOWN,
                                   "consumer is closed");
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new((int)topic_cnt);
        for (size_t i = 0; i < topic_cnt; i++) {
                char *full = topics[i][0] == '^'
                                 ? rbk__pattern_prefixed(c->prefix, topics[i])
                                 : rbk__prefixed(c->prefix, topics[i]);
                rd_kafka_topic_partition_list_add(l, full,
                                                  RD_KAFKA_PARTITION_UA);
                g_free(full);
        }
        rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                                   "subscribe failed: %s",
                                   rd_kafka_err2str(err));
        g_mutex_lock(&c->lock);
        c->subscribed = 1;
        g_mutex_unlock(&c->lock);
        return RBK_OK;
}

/* Checks and claims the run state. Caller holds c->lock. */
static rbk_err_t rbk__run_claim(rbk_consumer_t *c, rbk_handler_t *handler,
                                rbk_batch_handler_t *batch_handler,
                                void *opaque) {
        if (c->closed)
                return RBK_ERR_SHUTDOWN;
        if (c->running || !c->subscribed || rbk__part_out_count(c, NULL))
                return RBK_ERR_STATE;
        c->running = 1;
        c->stopping = 0;
        __atomic_store_n(&c->stop_req, 0, __ATOMIC_RELAXED);
        c->handler = handler;
        c->batch_handler = batch_handler;
        c->handler_opaque = opaque;
        return RBK_OK;
}

/* The body of rbk_consumer_run() once claimed. */
static void rbk__run_loop(rbk_consumer_t *c) {
        g_mutex_lock(&c->lock);
        c->workers_quit = 0;
        c->workers = g_new0(GThread *, c->workers_n);
        for (int i = 0; i < c->workers_n; i++)
                c->workers[i] = g_thread_new("rbk-worker", rbk__worker_main, c);
        /* Partitions that queued messages while nobody ran. */
        rbk__part_ready_all(c);
        g_mutex_unlock(&c->lock);

        while (!__atomic_load_n(&c->stop_req, __ATOMIC_RELAXED)) {
                g_mutex_lock(&c->poll_mu);
                rbk__tl_poller = c;
                rbk__poll_iteration(c, RBK__POLL_SLICE_MS);
                rbk__tl_poller = NULL;
                g_mutex_unlock(&c->poll_mu);
        }

        /* Stop: nothing new starts; in-flight handlers finish. */
        g_mutex_lock(&c->lock);
        c->stopping = 1;
        g_cond_broadcast(&c->work_cond);
        int64_t deadline = rbk__now_ms() + c->shutdown_timeout_ms;
        int warned = 0;
        int busy;
        while ((busy = rbk__part_out_count(c, NULL)) > 0) {
                int64_t now = rbk__now_ms();
                if (now >= deadline && !warned) {
                        rbk__log(c->hooks, 4, "consumer",
                                 "stop: %d handler(s) still running after "
                                 "%" PRId64 " ms; waiting for them",
                                 busy, c->shutdown_timeout_ms);
                        warned = 1;
                }
                rbk__consumer_wait(c, g_get_monotonic_time() +
                                      500 * G_TIME_SPAN_MILLISECOND);
        }
        c->workers_quit = 1;
        g_cond_broadcast(&c->work_cond);
        g_mutex_unlock(&c->lock);
        for (int i = 0; i < c->workers_n; i++)
                g_thread_join(c->workers[i]);
        g_free(c->workers);
        c->workers = NULL;

        /* Dead letters in flight decide their origin offsets first. */
        rbk__dlq_flush(c, (int)MAX(0, deadline - rbk__now_ms()));

        g_mutex_lock(&c->poll_mu);
        rbk__tl_poller = c;
        rbk__consumer_commit_stored(c,
                                    (int)MAX(1000, deadline - rbk__now_ms()));
        rbk__tl_poller = NULL;
        g_mutex_unlock(&c->poll_mu);

        g_mutex_lock(&c->lock);
        c->running = 0;
        c->handler = NULL;
        c->batch_handler = NULL;
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
}

static rbk_err_t rbk__run(rbk_consumer_t *c, rbk_handler_t *handler,
                          rbk_batch_handler_t *batch_handler, void *opaque) {
        if (!c || (!handler && !batch_handler))
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        g_mutex_lock(&c->lock);
        rbk_err_t err = rbk__run_claim(c, handler, batch_handler, opaque);
        g_mutex_unlock(&c->lock);
        if (err)
                return err;
        rbk__run_loop(c);
        return RBK_OK;
}

static gpointer rbk__start_main(gpointer arg) {
        rbk__run_loop(arg);
        return NULL;
}

rbk_err_t rbk_consumer_run(rbk_consumer_t *c, rbk_handler_t *handler,
                           void *opaque) {
        return rbk__run(c, handler, NULL, opaque);
}

rbk_err_t rbk_consumer_run_batch(rbk_consumer_t *c,
                                 rbk_batch_handler_t *handler, void *opaque) {
        return rbk__run(c, NULL, handler, opaque);
}

static rbk_err_t rbk__start(rbk_consumer_t *c, rbk_handler_t *handler,
                            rbk_batch_handler_t *batch_handler,
                            void *opaque) {
        if (!c || (!handler && !batch_handler))
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        g_mutex_lock(&c->lock);
        rbk_err_t err = rbk__run_claim(c, handler, batch_handler, opaque);
        if (!err && c->start_thread) {
                /* A previous start's thread has returned: reap it. */
                GThread *t = c->start_thread;
                c->start_thread = NULL;
                g_mutex_unlock(&c->lock);
                g_thread_join(t);
                g_mutex_lock(&c->lock);
        }
        if (!err)
                c->start_thread =
                    g_thread_new("rbk-consumer", rbk__start_main, c);
        g_mutex_unlock(&c->lock);
        return err;
}

rbk_err_t rbk_consumer_start(rbk_consumer_t *c, rbk_handler_t *handler,
                             void *opaque) {
        return rbk__start(c, handler, NULL, opaque);
}

rbk_err_t rbk_consumer_start_batch(rbk_consumer_t *c,
                                   rbk_batch_handler_t *handler,
                                   void *opaque) {
        return rbk__start(c, NULL, handler, opaque);
}

void rbk_consumer_stop(rbk_consumer_t *c) {
        /* Async-signal-safe: one store to a sig_atomic_t, nothing else (in
         * a forked child, not even that: the parent's run is not here). */
        if (c && !rbk__forked(c->pid))
                __atomic_store_n(&c->stop_req, 1, __ATOMIC_RELAXED);
}

/* Takes the next queued message for the poll API with its slot, filled
 * (all but its headers): the partition (a reference) and *mp, or NULL when
 * nothing is ready. Caller holds c->lock. */
static rbk__part_t *rbk__take_slot(rbk_consumer_t *c, rbk__msg_t **mp) {
        rd_kafka_message_t *rkm = NULL;
        uint64_t ticket = 0;
        rbk__part_t *p = rbk__part_take(c, &rkm, &ticket);
        *mp = NULL;
        if (p) {
                *mp = rbk__part_slot_get(c);
                rbk__msg_fill(c, *mp, p, rkm, ticket);
        }
        return p;
}

/* Hands out the hand-out held by slot @m of @p (taken and filled by
 * rbk__take_slot(); its message reference passes to the caller): 1 with
 * *msgp set, or 0 when dedup dropped it (completed, the reference
 * dropped). */
static int rbk__hand_out(rbk_consumer_t *c, rbk__part_t *p, rbk__msg_t *m,
                         rbk_message_t **msgp) {
        /* The slot is this caller's: its headers are read with no lock
         * held. */
        rbk__msg_read_headers(m);
        if (rbk__dedup_drop(c, p, m)) {
                g_mutex_lock(&c->lock);
                rbk__part_slot_put(c, m);
                g_mutex_unlock(&c->lock);
                rbk__part_unref(p);
                return 0;
        }
        rbk__msg_ready(m);
        *msgp = &m->pub;
        return 1;
}

rbk_err_t rbk_consumer_poll(rbk_consumer_t *c, int timeout_ms,
                            rbk_message_t **msgp) {
        if (!c || !msgp)
                return RBK_ERR_INVALID_ARG;
        *msgp = NULL;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        /* A message already queued is handed out under this one lock round,
         * without becoming the poll thread (as a run API worker takes one). */
        rbk__msg_t *m = NULL;
        g_mutex_lock(&c->lock);
        rbk_err_t err = c->closed    ? RBK_ERR_SHUTDOWN
                        : c->running ? RBK_ERR_STATE
                        : !c->subscribed ? RBK_ERR_STATE
                                         : RBK_OK;
        c->stopping = 0;
        rbk__part_t *p = err ? NULL : rbk__take_slot(c, &m);
        g_mutex_unlock(&c->lock);
        if (err)
                return err;
        if (p && rbk__hand_out(c, p, m, msgp))
                return RBK_OK;
        int64_t deadline = rbk__now_ms() + MAX(timeout_ms, 0);
        g_mutex_lock(&c->poll_mu);
        rbk__tl_poller = c;
        for (int polled = 0;; polled = 1) {
                g_mutex_lock(&c->lock);
                p = c->running ? NULL : rbk__take_slot(c, &m);
                g_mutex_unlock(&c->lock);
                if (p) {
                        if (!rbk__hand_out(c, p, m, msgp))
                                continue;
                        break;
                }
                int64_t left = deadline - rbk__now_ms();
                if (left <= 0 && polled)
                        break;
                rbk__poll_iteration(c, (int)CLAMP(left, 0, RBK__POLL_SLICE_MS));
        }
        rbk__tl_poller = NULL;
        g_mutex_unlock(&c->poll_mu);
        return RBK_OK;
}

/* Hands out batch @ticket of @p (rkms[0..n-1], its head; the reference
 * passes to the batch) through message slots: duplicates at the front are
 * dropped (completed), the batch ends before a later duplicate. Returns
 * how many messages went out into @msgs (0: all dropped, the hand-out
 * ended and the reference dropped). */
static size_t rbk__hand_out_batch(rbk_consumer_t *c, rbk__part_t *p,
                                  rd_kafka_message_t **rkms, size_t n,
                                  uint64_t ticket, rbk_message_t **msgs) {
        rbk__msg_t **ms = g_new(rbk__msg_t *, n);
        g_mutex_lock(&c->lock);
        for (size_t i = 0; i < n; i++) {
                ms[i] = rbk__part_slot_get(c);
                rbk__msg_fill(c, ms[i], p, rkms[i], ticket);
                if (i > 0)
                        ms[i]->pub.attempt = 1;
        }
        g_mutex_unlock(&c->lock);
        for (size_t i = 0; i < n; i++)
                rbk__msg_read_headers(ms[i]);
        size_t dups = 0, k = n;
        for (size_t i = 0; i < k; i++) {
                rbk__dedup_verdict_t v = RBK__DEDUP_NO_ID;
                int first = ms[i]->pub.attempt == 1;
                if (c->dedup && first)
                        v = rbk__dedup_check_part(
                            c->dedup, p->dp, ms[i]->id_raw, ms[i]->id_len,
                            ms[i]->pub.has_msgid ? &ms[i]->pub.msgid : NULL);
                else if (ms[i]->id_raw && ms[i]->id_len)
                        v = RBK__DEDUP_NEW;
                ms[i]->dedup_count = v == RBK__DEDUP_DUPLICATE || !first
                                         ? (int)RBK__DEDUP_NEW
                                         : (int)v;
                if (v != RBK__DEDUP_DUPLICATE)
                        continue;
                if (i == dups)
                        dups++;
                else
                        k = i;
        }
        g_mutex_lock(&c->lock);
        for (size_t i = 0; i < dups; i++)
                rbk__part_count_duplicate(c, p);
        if (dups)
                rbk__part_batch_advance(c, p, ticket, ms, dups, 0);
        if (dups == k)
                rbk__part_batch_end(c, p, ticket);
        /* Slots of dropped duplicates and of messages after the batch's
         * end go back now. */
        for (size_t i = 0; i < n; i++)
                if (i < dups || i >= k)
                        rbk__part_slot_put(c, ms[i]);
        g_mutex_unlock(&c->lock);
        size_t out = k - dups;
        for (size_t i = 0; i < out; i++) {
                rbk__msg_ready(ms[dups + i]);
                msgs[i] = &ms[dups + i]->pub;
        }
        g_free(ms);
        if (!out)
                rbk__part_unref(p);
        return out;
}

rbk_err_t rbk_consumer_poll_batch(rbk_consumer_t *c, int timeout_ms,
                                  rbk_message_t **msgs, size_t max,
                                  size_t *np) {
        if (!c || !msgs || !np || !max)
                return RBK_ERR_INVALID_ARG;
        *np = 0;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        rd_kafka_message_t **rkms = g_new(rd_kafka_message_t *, max);
        uint64_t ticket = 0;
        size_t n = 0;
        int64_t deadline = rbk__now_ms() + MAX(timeout_ms, 0);
        rbk_err_t err = RBK_OK;
        g_mutex_lock(&c->poll_mu);
        rbk__tl_poller = c;
        for (int polled = 0;; polled = 1) {
                g_mutex_lock(&c->lock);
                err = c->closed                      ? RBK_ERR_SHUTDOWN
                      : c->running || !c->subscribed ? RBK_ERR_STATE
                                                     : RBK_OK;
                c->stopping = 0;
                rbk__part_t *p =
                    err ? NULL : rbk__part_take_batch(c, max, rkms, &n, &ticket);
                g_mutex_unlock(&c->lock);
                if (err)
                        break;
                if (p && (*np = rbk__hand_out_batch(c, p, rkms, n, ticket,
                                                    msgs)) > 0)
                        break;
                if (p)
                        continue;
                int64_t left = deadline - rbk__now_ms();
                if (left <= 0 && polled)
                        break;
                rbk__poll_iteration(c, (int)CLAMP(left, 0, RBK__POLL_SLICE_MS));
        }
        rbk__tl_poller = NULL;
        g_mutex_unlock(&c->poll_mu);
        g_free(rkms);
        return err;
}

rbk_err_t rbk_consumer_done_batch(rbk_consumer_t *c, rbk_message_t **msgs,
                                  size_t n, size_t handled,
                                  rbk_verdict_t rest) {
        if (!c || !msgs || !n || handled > n ||
            (handled < n && rest != RBK_RETRY && rest != RBK_DEADLETTER))
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        rbk__msg_t **ms = g_new(rbk__msg_t *, n);
        g_mutex_lock(&c->lock);
        rbk__msg_t *m0 = (rbk__msg_t *)msgs[0];
        int bad = 0, stale = 0;
        for (size_t i = 0; i < n; i++) {
                ms[i] = (rbk__msg_t *)msgs[i];
                if (!msgs[i])
                        bad = 1;
                else if (msgs[i]->internal_ != (void *)msgs[i] ||
                         !ms[i]->ticket)
                        stale = 1; /* given back already */
                else if (!m0 || ms[i]->ticket != m0->ticket)
                        bad = 1;   /* not one batch */
        }
        rbk__part_t *p = bad || stale ? NULL : m0->part;
        uint64_t ticket = p ? m0->ticket : 0;
        if (!p || p->out != RBK__OUT_HANDLER || p->out_ticket != ticket) {
                g_mutex_unlock(&c->lock);
                g_free(ms);
                return bad ? RBK_ERR_INVALID_ARG : RBK_ERR_STATE;
        }
        int gone = !p->assigned;
        rbk__part_batch_advance(c, p, ticket, ms, handled, 1);
        rbk__act_t act = RBK__ACT_NONE;
        rbk__msg_t *failed = handled < n ? ms[handled] : NULL;
        rd_kafka_message_t *frkm = failed ? failed->rkm : NULL;
        int64_t foff = failed ? failed->pub.offset : -1;
        int fatt = failed ? failed->pub.attempt : 0;
        char idcopy[RBK_MSGID_MAX_LEN + 1];
        const char *fid = NULL;
        char *fidbuf = NULL, *freason = NULL;
        if (failed) {
                if (rbk__part_complete(c, failed, rest, 1, &act) ==
                    RBK_ERR_NOT_FOUND)
                        gone = 1;
                fidbuf = failed->idbuf;
                failed->idbuf = NULL;
                freason = failed->reason;
                failed->reason = NULL;
                if (act != RBK__ACT_NONE && failed->pub.id)
                        fid = fidbuf ? fidbuf
                                     : strcpy(idcopy, failed->pub.id);
        } else {
                rbk__part_batch_end(c, p, ticket);
        }
        for (size_t i = 0; i < n; i++) {
                rbk__msg_clear(ms[i]);
                rbk__part_slot_put(c, ms[i]);
        }
        g_mutex_unlock(&c->lock);
        if (failed)
                rbk__after(c, p, act, frkm, ticket, foff, fid, fatt, freason);
        g_free(fidbuf);
        g_free(freason);
        g_free(ms);
        rbk__part_unref(p);
        return gone ? RBK_ERR_STATE : RBK_OK;
}

rbk_err_t rbk_consumer_done(rbk_consumer_t *c, rbk_message_t *msg,
                            rbk_verdict_t verdict) {
        if (!c || !msg ||
            (verdict != RBK_HANDLED && verdict != RBK_RETRY &&
             verdict != RBK_DEADLETTER))
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        rbk__msg_t *m = (rbk__msg_t *)msg;
        /* The slot is checked under the lock that hands slots out: a
         * message already given back (or a slot handed out again since)
         * carries no ticket, or another one. */
        g_mutex_lock(&c->lock);
        if (msg->internal_ != (void *)msg || !m->ticket) {
                g_mutex_unlock(&c->lock);
                rbk__log(c->hooks, 4, "consumer",
                         "rbk_consumer_done: the message is not outstanding "
                         "(already given back); nothing changed");
                return RBK_ERR_STATE;
        }
        rbk__part_t *p = m->part;
        rd_kafka_message_t *rkm = m->rkm;
        uint64_t ticket = m->ticket;
        int64_t offset = m->pub.offset;
        int attempts = m->pub.attempt;
        rbk__act_t act;
        rbk_err_t err = rbk__part_complete(c, m, verdict, 1, &act);
        if (err == RBK_ERR_STATE) {
                g_mutex_unlock(&c->lock);
                return err;
        }
        /* The slot goes back to the pool now: what is needed afterwards
         * is taken out first. */
        char idcopy[RBK_MSGID_MAX_LEN + 1];
        const char *id = NULL;
        char *idbuf = m->idbuf;
        m->idbuf = NULL;
        char *reason = m->reason;
        m->reason = NULL;
        if (act != RBK__ACT_NONE && m->pub.id)
                id = idbuf ? idbuf
                           : strcpy(idcopy, m->pub.id); /* fits: from idb */
        rbk__part_slot_put(c, m);
        g_mutex_unlock(&c->lock);
        rbk__after(c, p, act, rkm, ticket, offset, id, attempts, reason);
        g_free(reason);
        if (err == RBK_ERR_NOT_FOUND)
                rbk__log(c->hooks, 6, "consumer",
                         "rbk_consumer_done: %s [%" PRId32 "] offset %" PRId64
                         " was revoked before it was given back; its offset "
                         "is not stored (the next owner reads it again)",
                         p->utopic, p->partition, offset);
        g_free(idbuf);
        rbk__part_unref(p);
        return err == RBK_ERR_NOT_FOUND ? RBK_ERR_STATE : RBK_OK;
}

rbk_err_t rbk_message_set_error(const rbk_message_t *msg,
                                const char *reason) {
        if (!msg || msg->internal_ != (const void *)msg)
                return RBK_ERR_INVALID_ARG;
        rbk__msg_t *m = (rbk__msg_t *)msg;
        g_free(m->reason);
        m->reason = reason ? g_strndup(reason, 1024) : NULL;
        return RBK_OK;
}

/* ------------------------------------------------------------ pause, seek */

static rbk_err_t rbk__pause(rbk_consumer_t *c, const char *topic,
                            int32_t partition, int on) {
        if (!c || !topic)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        char *full = rbk__prefixed(c->prefix, topic);
        g_mutex_lock(&c->lock);
        rbk__part_t *p = rbk__part_find(c, full, partition);
        rbk_err_t err;
        int64_t at = -1;
        if (p && p->assigned) {
                err = rbk__part_set_paused(c, p, on);
                at = p->stored >= 0 ? p->stored : p->committed;
                rbk__part_ref(p);
        } else {
                err = !on && rbk__part_forget_pause(c, full, partition)
                          ? RBK_OK
                      : on ? RBK_ERR_NOT_FOUND
                           : RBK_ERR_STATE;
                p = NULL;
        }
        g_mutex_unlock(&c->lock);
        g_free(full);
        if (!err && p && at >= 0) {
                /* The pause shows in the committed offset's metadata, where
                 * rbk-admin status reads it (the position does not move
                 * while paused, so no later commit overwrites it). */
                char *meta = on ? g_strconcat(RBK__META_PAUSED,
                                              rbk__conf_str(c->conf, "rbk.client.name"),
                                              NULL)
                                : g_strdup("");
                char *metas[1] = {meta};
                rd_kafka_resp_err_t cerr =
                    rbk__commit_explicit(c, &p, &at, metas, 1);
                if (cerr)
                        rbk__log(c->hooks, 4, "consumer",
                                 "recording the %s of %s [%" PRId32
                                 "] in its committed offset failed: %s",
                                 on ? "pause" : "resume", topic, partition,
                                 rd_kafka_err2str(cerr));
                g_free(meta);
        }
        rbk__part_unref(p);
        if (!err)
                rbk__log(c->hooks, 6, "consumer", "%s [%" PRId32 "] %s",
                         topic, partition, on ? "paused" : "resumed");
        return err;
}

rbk_err_t rbk_consumer_pause(rbk_consumer_t *c, const char *topic,
                             int32_t partition) {
        return rbk__pause(c, topic, partition, 1);
}

rbk_err_t rbk_consumer_resume(rbk_consumer_t *c, const char *topic,
                              int32_t partition) {
        return rbk__pause(c, topic, partition, 0);
}

static rbk_err_t rbk__seek(rbk_consumer_t *c, const char *topic,
                           int32_t partition, int64_t where, int by_time,
                           char *errstr, size_t errstr_size) {
        if (!c || !topic)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "%s is NULL", c ? "topic" : "consumer");
        if (rbk__forked(c->pid))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_FORKED,
                                   "consumer used in a forked child");
        if (!by_time && where < 0 && where != RBK_EARLIEST &&
            where != RBK_LATEST)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "offset %" PRId64 " is neither an offset "
                                   "nor RBK_EARLIEST nor RBK_LATEST",
                                   where);
        rbk__req_t req;
        memset(&req, 0, sizeof(req));
        req.kind = RBK__REQ_SEEK;
        req.by_time = by_time;
        req.topic = rbk__prefixed(c->prefix, topic);
        req.partition = partition;
        req.offset = where;
        req.applied_by = "api";
        rbk_err_t err = rbk__consumer_submit(c, &req);
        if (err && errstr && errstr_size)
                g_strlcpy(errstr, req.errstr, errstr_size);
        g_free(req.topic);
        return err;
}

rbk_err_t rbk_consumer_seek(rbk_consumer_t *c, const char *topic,
                            int32_t partition, int64_t offset, char *errstr,
                            size_t errstr_size) {
        return rbk__seek(c, topic, partition, offset, 0, errstr, errstr_size);
}

rbk_err_t rbk_consumer_seek_timestamp(rbk_consumer_t *c, const char *topic,
                                      int32_t partition, int64_t timestamp_ms,
                                      char *errstr, size_t errstr_size) {
        if (timestamp_ms < 0)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "timestamp %" PRId64 " is negative",
                                   timestamp_ms);
        return rbk__seek(c, topic, partition, timestamp_ms, 1, errstr,
                         errstr_size);
}

rbk_err_t rbk_consumer_commit(rbk_consumer_t *c, int timeout_ms,
                              char *errstr, size_t errstr_size) {
        if (!c)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "consumer is NULL");
        if (rbk__forked(c->pid))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_FORKED,
                                   "consumer used in a forked child; create "
                                   "clients after fork()");
        g_mutex_lock(&c->lock);
        int closed = c->closed, subscribed = c->subscribed;
        g_mutex_unlock(&c->lock);
        if (closed)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_SHUTDOWN,
                                   "consumer is closed");
        if (!subscribed)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_STATE,
                                   "consumer is not subscribed");
        return rbk__assign_commit_now(c, timeout_ms, errstr, errstr_size);
}

/* The headers of a received message, or NULL when it has none. */
static rd_kafka_headers_t *rbk__message_headers(const rbk_message_t *msg) {
        const rbk__msg_t *m = msg->internal_;
        rd_kafka_headers_t *hdrs;
        return rd_kafka_message_headers(m->rkm, &hdrs) ? NULL : hdrs;
}

rbk_err_t rbk_message_header(const rbk_message_t *msg, const char *name,
                             const void **valuep, size_t *sizep) {
        if (!msg || !name || !msg->internal_)
                return RBK_ERR_INVALID_ARG;
        rd_kafka_headers_t *hdrs = rbk__message_headers(msg);
        const void *v = NULL;
        size_t sz = 0;
        if (!hdrs || rd_kafka_header_get_last(hdrs, name, &v, &sz))
                return RBK_ERR_NOT_FOUND;
        if (valuep)
                *valuep = v;
        if (sizep)
                *sizep = sz;
        return RBK_OK;
}

size_t rbk_message_header_count(const rbk_message_t *msg) {
        if (!msg || !msg->internal_)
                return 0;
        rd_kafka_headers_t *hdrs = rbk__message_headers(msg);
        return hdrs ? rd_kafka_header_cnt(hdrs) : 0;
}

rbk_err_t rbk_message_header_at(const rbk_message_t *msg, size_t idx,
                                const char **namep, const void **valuep,
                                size_t *sizep) {
        if (!msg || !msg->internal_)
                return RBK_ERR_INVALID_ARG;
        rd_kafka_headers_t *hdrs = rbk__message_headers(msg);
        const char *name;
        const void *v;
        size_t sz;
        /* librdkafka takes the position as an int: a larger one would come
         * back negative and read before the list. */
        if (!hdrs || idx >= rd_kafka_header_cnt(hdrs) ||
            rd_kafka_header_get_all(hdrs, idx, &name, &v, &sz))
                return RBK_ERR_NOT_FOUND;
        if (namep)
                *namep = name;
        if (valuep)
                *valuep = v;
        if (sizep)
                *sizep = sz;
        return RBK_OK;
}

/* The member id is cleared when librdkafka sends the LeaveGroup (or
 * finds no coordinator to send it to), and is empty for a member that
 * never joined. */
static int rbk__group_left(rbk_consumer_t *c) {
        char *id = rd_kafka_memberid(c->rk);
        int left = !id || !*id;
        if (id)
                rd_kafka_mem_free(c->rk, id);
        return left;
}

/* Leaves the group before librdkafka terminates it. Unsubscribing starts
 * the revoke while the group still runs: it is served here (the
 * rebalance callback commits what is stored and unassigns), and so are the
 * results of the library's asynchronous commits. rd_kafka_consumer_close()
 * then finds nothing assigned and no commit of ours outstanding, so no
 * commit or unassign of ours runs while the group terminates (librdkafka
 * 2.0's rd_kafka_cgrp_terminated() aborts the process when one is
 * outstanding at that moment). The group is left once librdkafka has sent
 * its LeaveGroup, which clears the member id (classic protocol): under
 * the incremental protocol that happens only after the revoke's own commit
 * is answered, and a close begun before it terminates the group without
 * leaving it, so the others wait a session timeout for the partitions.
 * A static member (group.instance.id) does not leave: unsubscribing would
 * send the LeaveGroup its static id exists to avoid; its commits are
 * still answered here. Bounded by half the time left before @deadline:
 * whatever is left, the close below finishes as before. Poll thread
 * (poll_mu held). */
static void rbk__close_leave(rbk_consumer_t *c, int64_t deadline) {
        /* Half the time left at most: the close below needs the rest. */
        int64_t now = rbk__now_ms();
        if (deadline > now)
                deadline = now + (deadline - now) / 2;
        g_mutex_lock(&c->lock);
        int subscribed = c->subscribed;
        g_mutex_unlock(&c->lock);
        int leaving = subscribed && !c->static_member;
        if (leaving) {
                rd_kafka_resp_err_t err = rd_kafka_unsubscribe(c->rk);
                if (err)
                        rbk__log(c->hooks, 4, "consumer",
                                 "leaving the group failed: %s",
                                 rd_kafka_err2str(err));
        }
        for (;;) {
                int64_t left = deadline - rbk__now_ms();
                if (left <= 0)
                        break;
                g_mutex_lock(&c->lock);
                int inflight = c->async_commits;
                g_mutex_unlock(&c->lock);
                rd_kafka_topic_partition_list_t *a = NULL;
                int assigned = !rd_kafka_assignment(c->rk, &a) && a &&
                               a->cnt > 0;
                if (a)
                        rd_kafka_topic_partition_list_destroy(a);
                if (!assigned && !inflight &&
                    rd_kafka_queue_length(c->cq) == 0 &&
                    (!leaving || !c->classic_group || rbk__group_left(c)))
                        break;
                /* Serves the rebalance and offset commit callbacks; the
                 * messages wait in their partitions' own queues. */
                rd_kafka_message_t *rkm =
                    rd_kafka_consumer_poll(c->rk, (int)MIN(left, 50));
                if (rkm)
                        rd_kafka_message_destroy(rkm);
        }
}

/* Serves the close queue: rebalance and commit events until closed. */
static int rbk__close_serve(rbk_consumer_t *c, rd_kafka_queue_t *q,
                            int64_t deadline) {
        while (!rd_kafka_consumer_closed(c->rk)) {
                int64_t left = deadline - rbk__now_ms();
                if (left <= 0)
                        return 0;
                rd_kafka_event_t *ev =
                    rd_kafka_queue_poll(q, (int)MIN(left, 100));
                if (!ev)
                        continue;
                switch (rd_kafka_event_type(ev)) {
                case RD_KAFKA_EVENT_REBALANCE:
                        rbk__assign_rebalance(c, rd_kafka_event_error(ev),
                                       rd_kafka_event_topic_partition_list(ev));
                        break;
                case RD_KAFKA_EVENT_OFFSET_COMMIT:
                        rbk__assign_commit_result(
                            c, rd_kafka_event_error(ev),
                            rd_kafka_event_topic_partition_list(ev));
                        break;
                default:
                        break;
                }
                rd_kafka_event_destroy(ev);
        }
        return 1;
}

rbk_err_t rbk_consumer_close(rbk_consumer_t *c, int timeout_ms) {
        if (!c)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        int64_t deadline = rbk__now_ms() + (timeout_ms < 0
                                                ? c->shutdown_timeout_ms
                                                : timeout_ms);
        /* No operator command starts once closing begins; one being
         * applied finishes first (the poll thread still serves it). */
        g_mutex_lock(&c->lock);
        rbk__control_t *ctl = c->control;
        c->control = NULL;
        g_mutex_unlock(&c->lock);
        rbk__control_stop(ctl);
        g_mutex_lock(&c->lock);
        if (c->closed) {
                g_mutex_unlock(&c->lock);
                return c->close_ok ? RBK_OK : RBK_ERR_TIMED_OUT;
        }
        /* A running consumer stops first (its handlers finish). */
        __atomic_store_n(&c->stop_req, 1, __ATOMIC_RELAXED);
        while (c->running) {
                int64_t now = rbk__now_ms();
                if (now >= deadline) {
                        g_mutex_unlock(&c->lock);
                        return RBK_ERR_TIMED_OUT;
                }
                rbk__consumer_wait(c, g_get_monotonic_time() +
                                      (deadline - now) * 1000);
        }
        GThread *t = c->start_thread;
        c->start_thread = NULL;
        c->closed = 1;
        c->stopping = 1;
        rbk__q_fail_requests(c);
        g_mutex_unlock(&c->lock);
        if (t)
                g_thread_join(t);

        g_mutex_lock(&c->poll_mu);
        /* From here on only this thread commits or changes the assignment
         * (a commit under way elsewhere finishes first: commit_mu). */
        g_mutex_lock(&c->commit_mu);
        c->closer = g_thread_self();
        g_mutex_unlock(&c->commit_mu);
        rbk__tl_poller = c;
        rbk__dlq_flush(c, (int)MAX(0, deadline - rbk__now_ms()));
        rbk__consumer_commit_stored(c, (int)MAX(0, deadline - rbk__now_ms()));
        rbk__close_leave(c, deadline);
        rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
        rd_kafka_error_t *error = rd_kafka_consumer_close_queue(c->rk, q);
        int ok = 0;
        if (error) {
                rbk__log(c->hooks, 4, "consumer", "close failed: %s",
                         rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else {
                ok = rbk__close_serve(c, q, deadline);
        }
        rd_kafka_queue_destroy(q);
        rbk__q_clear_resets(c, 0);
        rbk__tl_poller = NULL;
        g_mutex_unlock(&c->poll_mu);
        rbk__dlq_close(c, 0);

        g_mutex_lock(&c->lock);
        c->close_ok = ok;
        /* Whatever is left (a lost close) is dropped. */
        GPtrArray *left = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v))
                g_ptr_array_add(left, rbk__part_ref(v));
        g_mutex_unlock(&c->lock);
        rbk__assign_detach(c, left);
        g_ptr_array_free(left, TRUE);
        if (!ok)
                rbk__log(c->hooks, 4, "consumer",
                         "close did not finish within the timeout");
        return ok ? RBK_OK : RBK_ERR_TIMED_OUT;
}

void rbk_consumer_destroy(rbk_consumer_t *c) {
        if (!c)
                return;
        if (rbk__forked(c->pid))
                return; /* the parent's threads do not exist here */
        if (!c->closed)
                rbk_consumer_close(c, -1);
        /* A close that timed out may leave the run thread behind: wait. */
        g_mutex_lock(&c->lock);
        __atomic_store_n(&c->stop_req, 1, __ATOMIC_RELAXED);
        while (c->running)
                rbk__consumer_wait(c, 0);
        GThread *t = c->start_thread;
        c->start_thread = NULL;
        g_mutex_unlock(&c->lock);
        if (t)
                g_thread_join(t);
        if (!c->closed) /* close timed out waiting for run: finish it */
                rbk_consumer_close(c, -1);
        rbk__dlq_close(c, 0);
        rbk__q_clear_resets(c, 0);
        rbk__consumer_free(c);
}

/* ------------------------------------------------------------ stats */

/* Every counter of the current layout. */
static void rbk__consumer_stats_fill(rbk_consumer_t *c,
                                     rbk_consumer_stats_t *out) {
        g_mutex_lock(&c->lock);
        out->consumed = c->consumed;
        out->handled = c->handled;
        out->retried = c->retried;
        out->dead_lettered = c->dead_lettered;
        out->duplicates_dropped = c->duplicates;
        out->unprovable = c->unprovable;
        out->no_id = c->no_id;
        out->commits = c->commits;
        out->quarantines = c->quarantines;
        out->resolutions = c->resolutions;
        out->initial_positions = c->initial_positions;
        out->stalls = c->stalls;
        out->out_of_range_disproved = c->oor_disproved;
        out->handler_ms_avg =
            c->handler_cnt ? c->handler_ms_sum / (double)c->handler_cnt : 0.0;
        int64_t lag = 0;
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                out->assigned_partitions++;
                if (p->quarantined)
                        out->quarantined_partitions++;
                int64_t l = rbk__part_lag(c, p);
                if (l < 0 || lag < 0)
                        lag = -1;
                else
                        lag += l;
        }
        out->lag = lag;
        g_mutex_unlock(&c->lock);
        out->dedup_memory_bytes = c->dedup ? rbk__dedup_memory(c->dedup) : 0;
}

/* The size of each rbk_consumer_stats_t layout, by version: a field appended
 * to the struct comes with a new version and a new entry here, so a caller
 * compiled against an older header is never written past its struct. */
static const size_t rbk__cstats_sizes[] = {
    RBK__END_OF(rbk_consumer_stats_t, handler_ms_avg), /* 1 */
    RBK__END_OF(rbk_consumer_stats_t, out_of_range_disproved), /* 2 */
};
G_STATIC_ASSERT(G_N_ELEMENTS(rbk__cstats_sizes) == RBK_CONSUMER_STATS_VERSION);
/* The last layout is the whole struct: no field appended without a version. */
G_STATIC_ASSERT(RBK__END_OF(rbk_consumer_stats_t, out_of_range_disproved) ==
                sizeof(rbk_consumer_stats_t));

rbk_err_t rbk_consumer_stats(rbk_consumer_t *c, rbk_consumer_stats_t *out) {
        if (!c || !out)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        rbk_consumer_stats_t full = RBK_CONSUMER_STATS_INIT;
        rbk__consumer_stats_fill(c, &full);
        rbk__layout_copy(out, &full, rbk__cstats_sizes,
                         RBK_CONSUMER_STATS_VERSION);
        return RBK_OK;
}

/* The first rbk_quarantine_t layout, all rbk_consumer_quarantined() ever
 * writes. A field appended to the struct must leave that function writing
 * this size (through rbk_consumer_quarantined2()). */
#define RBK__QUARANTINE_V1_SIZE RBK__END_OF(rbk_quarantine_t, incident_key)
G_STATIC_ASSERT(RBK__QUARANTINE_V1_SIZE == sizeof(rbk_quarantine_t));

size_t rbk_consumer_quarantined2(rbk_consumer_t *c, void *out, size_t max,
                                 size_t entry_size) {
        if (!c || entry_size < RBK__QUARANTINE_V1_SIZE || rbk__forked(c->pid))
                return 0;
        if (!out)
                max = 0;
        rbk_quarantine_t *tmp = max ? g_new(rbk_quarantine_t, max) : NULL;
        size_t n = rbk_consumer_quarantined(c, tmp, max);
        size_t known = MIN(entry_size, sizeof(rbk_quarantine_t));
        for (size_t i = 0; i < MIN(n, max); i++) {
                char *e = (char *)out + i * entry_size;
                memcpy(e, &tmp[i], known);
                memset(e + known, 0, entry_size - known);
        }
        g_free(tmp);
        return n;
}

static const char *rbk__hold_name(rbk__hold_t h) {
        switch (h) {
        case RBK__HOLD_GAVE_UP:
                return "gave_up";
        case RBK__HOLD_DLQ_PENDING:
                return "deadletter_pending";
        case RBK__HOLD_DLQ_FAILED:
                return "deadletter_failed";
        case RBK__HOLD_DLQ_LIMIT:
                return "deadletter_limit";
        default:
                return "none";
        }
}

char *rbk_consumer_stats_json(rbk_consumer_t *c) {
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        if (!c || rbk_consumer_stats(c, &st))
                return NULL;
        GString *s = g_string_new("{\"group\":");
        rbk__json_escape_str(s, c->ugroup);
        g_string_append_printf(
            s,
            ",\"consumed\":%" G_GUINT64_FORMAT ",\"handled\":%" G_GUINT64_FORMAT
            ",\"retried\":%" G_GUINT64_FORMAT
            ",\"dead_lettered\":%" G_GUINT64_FORMAT
            ",\"duplicates_dropped\":%" G_GUINT64_FORMAT
            ",\"unprovable\":%" G_GUINT64_FORMAT ",\"no_id\":%" G_GUINT64_FORMAT
            ",\"commits\":%" G_GUINT64_FORMAT
            ",\"quarantines\":%" G_GUINT64_FORMAT
            ",\"resolutions\":%" G_GUINT64_FORMAT
            ",\"initial_positions\":%" G_GUINT64_FORMAT
            ",\"stalls\":%" G_GUINT64_FORMAT
            ",\"out_of_range_disproved\":%" G_GUINT64_FORMAT
            ",\"assigned_partitions\":%" G_GUINT64_FORMAT
            ",\"quarantined_partitions\":%" G_GUINT64_FORMAT
            ",\"dedup_memory_bytes\":%" G_GUINT64_FORMAT ",\"lag\":%" PRId64
            ",\"handler_ms_avg\":%.3f,\"partitions\":[",
            st.consumed, st.handled, st.retried, st.dead_lettered,
            st.duplicates_dropped, st.unprovable, st.no_id, st.commits,
            st.quarantines, st.resolutions, st.initial_positions, st.stalls,
            st.out_of_range_disproved,
            st.assigned_partitions, st.quarantined_partitions,
            st.dedup_memory_bytes, st.lag, st.handler_ms_avg);
        g_mutex_lock(&c->lock);
        GList *keys = g_list_sort(g_hash_table_get_keys(c->parts),
                                  (GCompareFunc)strcmp);
        int first = 1;
        for (GList *k = keys; k; k = k->next) {
                rbk__part_t *p = g_hash_table_lookup(c->parts, k->data);
                uint64_t dups = p->duplicates;
                if (!first)
                        g_string_append_c(s, ',');
                first = 0;
                g_string_append(s, "{\"topic\":");
                rbk__json_escape_str(s, p->utopic);
                g_string_append_printf(
                    s,
                    ",\"partition\":%" PRId32 ",\"position\":%" PRId64
                    ",\"stored\":%" PRId64 ",\"committed\":%" PRId64
                    ",\"lag\":%" PRId64 ",\"queued\":%u,\"paused\":%s"
                    ",\"fetch_paused\":%s,\"held\":\"%s\",\"attempts\":%d"
                    ",\"quarantined\":%s,\"app_paused\":%s",
                    p->partition, rbk__part_position(p), p->stored,
                    p->committed, rbk__part_lag(c, p),
                    (unsigned)rbk__part_queued(p),
                    (p->quarantined || p->hold || p->retry_at || p->paused)
                        ? "true"
                        : "false",
                    p->fetch_paused ? "true" : "false",
                    rbk__hold_name(p->hold), p->attempts,
                    p->quarantined ? "true" : "false",
                    p->paused ? "true" : "false");
                if (p->quarantined) {
                        g_string_append(s, ",\"incident_key\":");
                        rbk__json_escape_str(s, p->q.incident_key);
                        g_string_append_printf(
                            s, ",\"failed_offset\":%" PRId64,
                            p->q.failed_offset);
                }
                g_string_append_printf(
                    s,
                    ",\"handled\":%" G_GUINT64_FORMAT
                    ",\"retried\":%" G_GUINT64_FORMAT
                    ",\"duplicates\":%" G_GUINT64_FORMAT
                    ",\"handler_ms_avg\":%.3f,\"handler_ms_max\":%.3f}",
                    p->handled, p->retried, dups,
                    p->handler_cnt ? p->handler_ms_sum /
                                         (double)p->handler_cnt
                                   : 0.0,
                    p->handler_ms_max);
        }
        g_list_free(keys);
        g_mutex_unlock(&c->lock);
        g_string_append(s, "]}");
        char *out = strdup(s->str);
        g_string_free(s, TRUE);
        return out;
}
