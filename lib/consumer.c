/* The robust group consumer: run and poll APIs, worker threads, offset
 * storing after the handler, retry with backoff, rebalances, shutdown and
 * stats. Quarantine of out-of-range partitions is in quarantine.c, dead
 * letters in deadletter.c; consumer_internal.h describes the threads and
 * locks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer_internal.h"
#include "control.h"

__thread rbk_consumer_t *rbk__tl_poller;

/* How long one poll of the poll thread may block, so that stop requests,
 * retry timers and resolution requests are served promptly. */
#define RBK__POLL_SLICE_MS 100
/* Messages taken from librdkafka per poll iteration at most. */
#define RBK__POLL_BATCH 1000
/* Consecutive messages of one partition handed out before the next
 * runnable partition's turn, at most, and for at most this long (see
 * rbk__finish()). */
#define RBK__BURST_MAX 256
#define RBK__BURST_MS 2
/* Bound of the blocking metadata calls (committed offsets, watermarks). */
#define RBK__QUERY_TIMEOUT_MS 5000

/* ------------------------------------------------------------ partitions */

char *rbk__part_key(const char *topic, int32_t partition) {
        return g_strdup_printf("%s\x01%" PRId32, topic, partition);
}

static rbk__part_t *rbk__part_new(rbk_consumer_t *c, const char *topic,
                                  int32_t partition) {
        rbk__part_t *p = g_new0(rbk__part_t, 1);
        p->refcnt = 1;
        p->topic = g_strdup(topic);
        p->utopic = rbk__unprefixed(c->prefix, p->topic);
        p->partition = partition;
        p->assigned = 1;
        if (c->dedup)
                p->dp = rbk__dedup_part(c->dedup, p->utopic, partition);
        p->fetch_next = RD_KAFKA_OFFSET_INVALID;
        p->resolved_failed = -1;
        p->stored = -1;
        p->committed = -1;
        p->hold = RBK__HOLD_NONE;
        p->last_progress_ms = rbk__now_ms();
        return p;
}

rbk__part_t *rbk__part_ref(rbk__part_t *p) {
        g_atomic_int_inc(&p->refcnt);
        return p;
}

void rbk__part_unref(rbk__part_t *p) {
        if (!p || !g_atomic_int_dec_and_test(&p->refcnt))
                return;
        rd_kafka_message_t *rkm;
        while ((rkm = rbk__mq_pop(&p->msgs)))
                rd_kafka_message_destroy(rkm);
        rbk__mq_free(&p->msgs);
        g_free(p->out.idbuf);
        if (p->pq) {
                rd_kafka_queue_cb_event_enable(p->pq, NULL, NULL);
                rd_kafka_queue_destroy(p->pq);
        }
        g_free(p->hold_reason);
        g_free(p->topic);
        g_free(p);
}

rbk__part_t *rbk__part_find(rbk_consumer_t *c, const char *topic,
                            int32_t partition) {
        /* Once per message: the key (as rbk__part_key() makes it) is built
         * on the stack, without printf or an allocation. */
        char k[400], digits[12];
        size_t tl = strlen(topic);
        if (tl + 14 > sizeof(k)) {
                char *hk = rbk__part_key(topic, partition);
                rbk__part_t *hp = g_hash_table_lookup(c->parts, hk);
                g_free(hk);
                return hp;
        }
        memcpy(k, topic, tl);
        char *e = k + tl;
        *e++ = '\x01';
        int64_t v = partition;
        if (v < 0) {
                *e++ = '-';
                v = -v;
        }
        int nd = 0;
        do
                digits[nd++] = (char)('0' + v % 10);
        while ((v /= 10));
        while (nd)
                *e++ = digits[--nd];
        *e = '\0';
        return g_hash_table_lookup(c->parts, k);
}

void rbk__part_drop_queue(rbk__part_t *p) {
        /* A busy head is with a handler: it stays until the handler ends. */
        rd_kafka_message_t *head = p->busy ? rbk__mq_pop(&p->msgs) : NULL;
        rd_kafka_message_t *rkm;
        while ((rkm = rbk__mq_pop(&p->msgs)))
                rd_kafka_message_destroy(rkm);
        if (head)
                rbk__mq_push_head(&p->msgs, head);
}

static int rbk__part_runnable(rbk_consumer_t *c, rbk__part_t *p,
                              int64_t now) {
        return p->assigned && !p->revoking && !p->busy && !c->stopping &&
               rbk__mq_len(&p->msgs) && !p->quarantined &&
               p->hold == RBK__HOLD_NONE &&
               (p->retry_at == 0 || now >= p->retry_at);
}

/* rbk__part_maybe_ready(), at the head of the ready queue if @head. */
static void rbk__part_maybe_ready_at(rbk_consumer_t *c, rbk__part_t *p,
                                     int head) {
        /* The clock matters only for a retry backoff. */
        if (p->in_ready ||
            !rbk__part_runnable(c, p, p->retry_at ? rbk__now_ms() : 0))
                return;
        p->in_ready = 1;
        p->ready_next = NULL;
        rbk__part_ref(p);
        if (!c->ready_head) {
                c->ready_head = c->ready_tail = p;
        } else if (head) {
                p->ready_next = c->ready_head;
                c->ready_head = p;
        } else {
                c->ready_tail->ready_next = p;
                c->ready_tail = p;
        }
        if (c->work_waiters)
                g_cond_signal(&c->work_cond);
}

void rbk__part_maybe_ready(rbk_consumer_t *c, rbk__part_t *p) {
        rbk__part_maybe_ready_at(c, p, 0);
}

/* Pops the ready queue's head (its reference passes to the caller), or
 * NULL. Caller holds c->lock. */
static rbk__part_t *rbk__ready_pop(rbk_consumer_t *c) {
        rbk__part_t *p = c->ready_head;
        if (p) {
                c->ready_head = p->ready_next;
                if (!c->ready_head)
                        c->ready_tail = NULL;
                p->ready_next = NULL;
                p->in_ready = 0;
        }
        return p;
}

/* Takes the next runnable partition and marks its head busy. Caller holds
 * c->lock. Returns a reference, or NULL. */
static rbk__part_t *rbk__take(rbk_consumer_t *c, rd_kafka_message_t **rkmp) {
        rbk__part_t *p;
        int64_t now = 0; /* read only for a partition in retry backoff */
        while ((p = rbk__ready_pop(c))) {
                if (p->retry_at && !now)
                        now = rbk__now_ms();
                if (!rbk__part_runnable(c, p, now)) {
                        rbk__part_unref(p);
                        continue;
                }
                p->busy = 1;
                p->attempts++;
                p->retry_at = 0;
                *rkmp = rbk__mq_peek(&p->msgs);
                /* The message after this one is most likely the next
                 * partition's head: written by a librdkafka thread, it is
                 * not in this core's cache; start loading it now. */
                if (c->ready_head) {
                        const char *next = (const char *)rbk__mq_peek(
                            &c->ready_head->msgs);
                        if (next) {
                                __builtin_prefetch(next);
                                __builtin_prefetch(next + 64);
                        }
                }
                return p;
        }
        return NULL;
}

static int rbk__busy_count(rbk_consumer_t *c) {
        int n = 0;
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v))
                n += ((rbk__part_t *)v)->busy;
        return n;
}

/* ------------------------------------------------------------ events */

void rbk__consumer_emit(rbk_consumer_t *c, rbk_event_t *ev) {
        if (!ev->group)
                ev->group = c->group;
        rbk__hooks_emit(c->hooks, ev);
}

const char *rbk__consumer_group(const rbk_consumer_t *c) {
        return c->ugroup;
}

static void rbk__dedup_error(const char *topic, int32_t partition,
                             rbk_err_t err, const char *reason, void *opaque) {
        rbk_consumer_t *c = opaque;
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_DEDUP_STORE_ERROR, RBK_SEV_ERROR);
        char *key = g_strdup_printf("%s/%s/%" PRId32 "/dedup-store", c->ugroup,
                                    topic, partition);
        char *msg = g_strdup_printf("dedup store failed for %s [%" PRId32
                                    "]: %s; duplicates may reach the handler",
                                    topic, partition, reason);
        ev.err = err;
        ev.topic = topic;
        ev.partition = partition;
        ev.incident_key = key;
        ev.message = msg;
        rbk__consumer_emit(c, &ev);
        g_free(msg);
        g_free(key);
}

/* ------------------------------------------------------------ offsets */

/* Stores offset+1 for the head message and pops it. Waits while a
 * re-assign is in progress (its commit and assign must not lose a store).
 * Caller holds c->lock. */
/* rbk__part_complete_head() with the id already looked up (id NULL: none;
 * msgid: its parse, or NULL) and the time of completion. */
static void rbk__part_complete_head_id(rbk_consumer_t *c, rbk__part_t *p,
                                       rd_kafka_message_t *rkm,
                                       const void *id, size_t idlen,
                                       const rbk_msgid_t *msgid,
                                       int64_t now_ms) {
        while (c->store_gate)
                rbk__consumer_wait(c, 0);
        if (p->assigned && !p->quarantined) {
                /* Stores rkm->offset + 1, as rd_kafka_offsets_store() would
                 * (the same checks, an unassigned partition refused), through
                 * the message's own topic handle: no list to build, no topic
                 * lookup by name. */
                rd_kafka_resp_err_t err =
                    rd_kafka_offset_store(rkm->rkt, p->partition, rkm->offset);
                if (err)
                        rbk__log(c->hooks, 4, "consumer",
                                 "storing offset %" PRId64
                                 " of %s [%" PRId32 "] failed: %s",
                                 rkm->offset + 1, p->utopic, p->partition,
                                 rd_kafka_err2str(err));
                else
                        p->stored = rkm->offset + 1;
        }
        if (c->dedup && id && idlen)
                rbk__dedup_record_part(c->dedup, p->dp, id, idlen, msgid,
                                       rkm->offset);
        if (rbk__mq_peek(&p->msgs) == rkm)
                rbk__mq_pop(&p->msgs);
        else
                rbk__mq_remove(&p->msgs, rkm);
        rd_kafka_message_destroy(rkm);
        p->attempts = 0;
        p->retry_at = 0;
        p->last_progress_ms = now_ms;
        p->stall_reported = 0;
        if (p->fetch_paused &&
            (int64_t)rbk__mq_len(&p->msgs) <= c->queue_max / 2) {
                p->fetch_paused = 0;
                rd_kafka_queue_yield(c->cq); /* the poll thread refills */
        }
}

void rbk__part_complete_head(rbk_consumer_t *c, rbk__part_t *p,
                             rd_kafka_message_t *rkm) {
        const void *id = NULL;
        size_t idlen = 0;
        rbk_msgid_t m;
        int ours = 0;
        rd_kafka_headers_t *hdrs;
        if (c->dedup && !rd_kafka_message_headers(rkm, &hdrs) &&
            !rd_kafka_header_get_last(hdrs, RBK_MSGID_HEADER, &id, &idlen) &&
            id)
                ours = rbk_msgid_parse(id, idlen, &m) == RBK_OK;
        rbk__part_complete_head_id(c, p, rkm, id, idlen, ours ? &m : NULL,
                                   rbk__now_ms());
}

rd_kafka_resp_err_t rbk__commit_wait(rbk_consumer_t *c,
                                     rd_kafka_topic_partition_list_t *offsets,
                                     int timeout_ms) {
        rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
        rd_kafka_resp_err_t err = rd_kafka_commit_queue(c->rk, offsets, q,
                                                        NULL, NULL);
        if (!err) {
                int64_t deadline = rbk__now_ms() + MAX(timeout_ms, 0);
                err = RD_KAFKA_RESP_ERR__TIMED_OUT;
                for (;;) {
                        int64_t left = deadline - rbk__now_ms();
                        rd_kafka_event_t *ev =
                            rd_kafka_queue_poll(q, (int)MAX(left, 0));
                        if (ev && rd_kafka_event_type(ev) ==
                                      RD_KAFKA_EVENT_OFFSET_COMMIT) {
                                err = rd_kafka_event_error(ev);
                                const rd_kafka_topic_partition_list_t *r =
                                    rd_kafka_event_topic_partition_list(ev);
                                for (int i = 0; !err && r && i < r->cnt; i++)
                                        if (r->elems[i].err)
                                                err = r->elems[i].err;
                                rd_kafka_event_destroy(ev);
                                break;
                        }
                        if (ev)
                                rd_kafka_event_destroy(ev);
                        if (left <= 0)
                                break;
                }
        }
        rd_kafka_queue_destroy(q);
        return err;
}

/* Persists dedup windows of every assigned partition with a stored offset
 * above the committed one, then commits stored offsets synchronously. */
rd_kafka_resp_err_t rbk__consumer_commit_stored(rbk_consumer_t *c,
                                                int timeout_ms) {
        if (c->dedup) {
                GPtrArray *todo = g_ptr_array_new_with_free_func(
                    (GDestroyNotify)rbk__part_unref);
                g_mutex_lock(&c->lock);
                GHashTableIter it;
                gpointer v;
                g_hash_table_iter_init(&it, c->parts);
                while (g_hash_table_iter_next(&it, NULL, &v)) {
                        rbk__part_t *p = v;
                        if (p->stored >= 0 && p->stored != p->committed)
                                g_ptr_array_add(todo, rbk__part_ref(p));
                }
                g_mutex_unlock(&c->lock);
                for (guint i = 0; i < todo->len; i++) {
                        rbk__part_t *p = g_ptr_array_index(todo, i);
                        char e[256];
                        if (rbk__dedup_commit(c->dedup, p->utopic, p->partition,
                                              p->stored, e, sizeof(e)))
                                rbk__dedup_error(p->utopic, p->partition,
                                                 RBK_ERR_STORE, e, c);
                }
                g_ptr_array_free(todo, TRUE);
        }
        rd_kafka_resp_err_t err = rbk__commit_wait(c, NULL, timeout_ms);
        if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
                err = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (err)
                rbk__log(c->hooks, 4, "consumer", "committing offsets failed: %s",
                         rd_kafka_err2str(err));
        return err;
}

static void rbk__commit_result(rbk_consumer_t *c, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *offsets) {
        if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
                return;
        if (err) {
                rbk__log(c->hooks, 4, "consumer", "offset commit failed: %s",
                         rd_kafka_err2str(err));
                return;
        }
        GPtrArray *saved = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        g_mutex_lock(&c->lock);
        c->commits++;
        for (int i = 0; offsets && i < offsets->cnt; i++) {
                rd_kafka_topic_partition_t *t = &offsets->elems[i];
                if (t->err || t->offset < 0)
                        continue;
                rbk__part_t *p = rbk__part_find(c, t->topic, t->partition);
                if (!p)
                        continue;
                p->committed = t->offset;
                if (c->dedup)
                        g_ptr_array_add(saved, rbk__part_ref(p));
        }
        g_mutex_unlock(&c->lock);
        /* Dedup windows follow the commits (a no-op when unchanged). */
        for (guint i = 0; i < saved->len; i++) {
                rbk__part_t *p = g_ptr_array_index(saved, i);
                char e[256];
                if (rbk__dedup_commit(c->dedup, p->utopic, p->partition,
                                      p->committed, e, sizeof(e)))
                        rbk__dedup_error(p->utopic, p->partition, RBK_ERR_STORE,
                                         e, c);
        }
        g_ptr_array_free(saved, TRUE);
}

static void rbk__offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *offsets,
                                  void *opaque) {
        rbk__commit_result(opaque, err, offsets);
}

/* ------------------------------------------------------------ rebalance */

static void rbk__app_rebalance(rbk_consumer_t *c, rbk_rebalance_t what,
                               rbk__part_t *p) {
        if (c->conf->rebalance_cb)
                c->conf->rebalance_cb(what, p->utopic, p->partition,
                                      c->conf->rebalance_opaque);
}

/* A partition queue became non-empty (librdkafka thread): wake the poll
 * thread out of rd_kafka_consumer_poll(). */
static void rbk__pq_event(rd_kafka_t *rk, void *opaque) {
        rbk_consumer_t *c = opaque;
        rd_kafka_queue_yield(c->cq);
}

static void rbk__on_assign(rbk_consumer_t *c,
                           rd_kafka_topic_partition_list_t *parts) {
        GPtrArray *mine = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        g_mutex_lock(&c->lock);
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_topic_partition_t *t = &parts->elems[i];
                rbk__part_t *p = rbk__part_find(c, t->topic, t->partition);
                if (!p) {
                        p = rbk__part_new(c, t->topic, t->partition);
                        g_hash_table_insert(c->parts,
                                            rbk__part_key(t->topic,
                                                          t->partition),
                                            p);
                }
                g_ptr_array_add(mine, rbk__part_ref(p));
        }
        g_mutex_unlock(&c->lock);

        for (guint i = 0; c->dedup && i < mine->len; i++) {
                rbk__part_t *p = g_ptr_array_index(mine, i);
                rbk__dedup_assign(c->dedup, p->utopic, p->partition);
        }

        /* The committed offsets, for stats and lag. */
        rd_kafka_topic_partition_list_t *q =
            rd_kafka_topic_partition_list_copy(parts);
        if (!rd_kafka_committed(c->rk, q, RBK__QUERY_TIMEOUT_MS)) {
                g_mutex_lock(&c->lock);
                for (int i = 0; i < q->cnt; i++) {
                        rbk__part_t *p = rbk__part_find(c, q->elems[i].topic,
                                                        q->elems[i].partition);
                        if (p && q->elems[i].offset >= 0)
                                p->committed = q->elems[i].offset;
                }
                g_mutex_unlock(&c->lock);
        }
        rd_kafka_topic_partition_list_destroy(q);

        /* Each partition's messages stay in its own queue, read by the
         * poll thread as room allows (set up before the fetch starts). */
        for (guint i = 0; i < mine->len; i++) {
                rbk__part_t *p = g_ptr_array_index(mine, i);
                if (p->pq)
                        continue;
                rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(
                    c->rk, p->topic, p->partition);
                if (!pq)
                        continue;
                rd_kafka_queue_forward(pq, NULL);
                rd_kafka_queue_cb_event_enable(pq, rbk__pq_event, c);
                g_mutex_lock(&c->lock);
                p->pq = pq;
                g_mutex_unlock(&c->lock);
        }
        rd_kafka_resp_err_t err = rd_kafka_assign(c->rk, parts);
        if (err)
                rbk__log(c->hooks, 3, "consumer", "assign failed: %s",
                         rd_kafka_err2str(err));
        else
                rbk__log(c->hooks, 6, "consumer", "assigned %d partition(s)",
                         parts->cnt);
        for (guint i = 0; i < mine->len; i++)
                rbk__app_rebalance(c, RBK_ASSIGNED,
                                   g_ptr_array_index(mine, i));
        g_ptr_array_free(mine, TRUE);
}

/* Hands back partitions: in-flight handlers finish (bounded), queued
 * messages are dropped, stored offsets committed (unless lost), state
 * dropped, then the application hears about each partition. */
static void rbk__on_revoke(rbk_consumer_t *c,
                           rd_kafka_topic_partition_list_t *parts, int lost) {
        GPtrArray *mine = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        g_mutex_lock(&c->lock);
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_topic_partition_t *t = &parts->elems[i];
                rbk__part_t *p = rbk__part_find(c, t->topic, t->partition);
                if (!p)
                        continue;
                p->revoking = 1;
                rbk__part_drop_queue(p);
                g_ptr_array_add(mine, rbk__part_ref(p));
        }
        /* Let in-flight handlers finish and store (run API; with the poll
         * API the application's thread is this one). */
        if (c->running && !lost) {
                int64_t deadline = rbk__now_ms() + c->revoke_timeout_ms;
                for (;;) {
                        int busy = 0;
                        for (guint i = 0; i < mine->len; i++)
                                busy += ((rbk__part_t *)g_ptr_array_index(
                                             mine, i))
                                            ->busy;
                        if (!busy)
                                break;
                        int64_t now = rbk__now_ms();
                        if (now >= deadline) {
                                rbk__log(c->hooks, 4, "consumer",
                                         "revoke: %d handler(s) still running "
                                         "after %" PRId64
                                         " ms; their offsets are not committed",
                                         busy, c->revoke_timeout_ms);
                                break;
                        }
                        rbk__consumer_wait(c, g_get_monotonic_time() +
                                                  (deadline - now) * 1000);
                }
        }
        g_mutex_unlock(&c->lock);

        if (!lost)
                rbk__consumer_commit_stored(c, (int)c->revoke_timeout_ms);

        GPtrArray *pqs = g_ptr_array_new();
        g_mutex_lock(&c->lock);
        for (guint i = 0; i < mine->len; i++) {
                rbk__part_t *p = g_ptr_array_index(mine, i);
                /* The partition queue goes now: its event callback lives on
                 * librdkafka's queue, which a new assignment shares. */
                if (p->pq)
                        g_ptr_array_add(pqs, p->pq);
                p->pq = NULL;
                p->fetch_paused = 0;
                p->assigned = 0;
                if (!p->busy)
                        rbk__part_drop_queue(p);
                char *k = rbk__part_key(p->topic, p->partition);
                if (g_hash_table_lookup(c->parts, k) == p)
                        g_hash_table_remove(c->parts, k);
                g_free(k);
        }
        g_mutex_unlock(&c->lock);
        for (guint i = 0; i < pqs->len; i++) {
                rd_kafka_queue_cb_event_enable(g_ptr_array_index(pqs, i), NULL,
                                               NULL);
                rd_kafka_queue_destroy(g_ptr_array_index(pqs, i));
        }
        g_ptr_array_free(pqs, TRUE);
        rbk__q_clear_resets(c, 1);

        for (guint i = 0; c->dedup && i < mine->len; i++) {
                rbk__part_t *p = g_ptr_array_index(mine, i);
                rbk__dedup_revoke(c->dedup, p->utopic, p->partition);
        }
        rd_kafka_resp_err_t err = rd_kafka_assign(c->rk, NULL);
        if (err)
                rbk__log(c->hooks, 4, "consumer", "unassign failed: %s",
                         rd_kafka_err2str(err));
        rbk__log(c->hooks, 6, "consumer", "%s %d partition(s)",
                 lost ? "lost" : "revoked", parts->cnt);
        for (guint i = 0; i < mine->len; i++)
                rbk__app_rebalance(c, lost ? RBK_LOST : RBK_REVOKED,
                                   g_ptr_array_index(mine, i));
        g_ptr_array_free(mine, TRUE);
        g_cond_broadcast(&c->cond);
}

static void rbk__rebalance(rbk_consumer_t *c, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *parts) {
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                rbk__on_assign(c, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                rbk__on_revoke(c, parts, rd_kafka_assignment_lost(c->rk));
        } else {
                rbk__log(c->hooks, 3, "consumer", "rebalance error: %s",
                         rd_kafka_err2str(err));
                rbk__on_revoke(c, parts, 1);
        }
}

static void rbk__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts,
                              void *opaque) {
        rbk__rebalance(opaque, err, parts);
}

/* ------------------------------------------------------------ callbacks */

static void rbk__error_cb(rd_kafka_t *rk, int err, const char *reason,
                          void *opaque) {
        rbk_consumer_t *c = opaque;
        rbk_event_t ev;
        char buf[512];
        int fatal = err == RD_KAFKA_RESP_ERR__FATAL;
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
                if (!p || !p->assigned || p->revoking || p->quarantined ||
                    (p->fetch_next >= 0 && rkm->offset < p->fetch_next)) {
                        rd_kafka_message_destroy(rkm);
                        continue;
                }
                rbk__mq_push(&p->msgs, rkm);
                p->fetch_next = rkm->offset + 1;
                c->consumed++;
                rbk__part_maybe_ready(c, p);
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
            p->busy ? " (a handler call has not returned)" : "");
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
static int64_t rbk__part_position(const rbk__part_t *p) {
        rd_kafka_message_t *head = rbk__mq_peek(&p->msgs);
        if (head)
                return head->offset;
        if (p->fetch_next >= 0)
                return p->fetch_next;
        if (p->stored >= 0)
                return p->stored;
        return p->committed;
}

static int64_t rbk__part_lag(rbk_consumer_t *c, const rbk__part_t *p) {
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo,
                                           &hi) ||
            hi < 0)
                return -1;
        int64_t pos = rbk__part_position(p);
        if (pos < 0)
                return -1;
        return hi > pos ? hi - pos : 0;
}

/* Timers: retries due, fetch resumes, the stall watchdog. Poll thread. */
static void rbk__timers(rbk_consumer_t *c) {
        int64_t now = rbk__now_ms();
        GPtrArray *stalled = NULL;
        GArray *stall_info = NULL;
        int check_stall = c->stall_timeout_ms > 0 &&
                          now >= c->next_stall_check_ms;
        if (check_stall)
                c->next_stall_check_ms =
                    now + MIN(1000, MAX(c->stall_timeout_ms / 4, 10));

        g_mutex_lock(&c->lock);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                if (p->retry_at && now >= p->retry_at)
                        rbk__part_maybe_ready(c, p);
                if (!check_stall || p->stall_reported || p->quarantined ||
                    p->hold != RBK__HOLD_NONE || p->retry_at || p->revoking)
                        continue;
                int64_t idle = now - p->last_progress_ms;
                if (idle < c->stall_timeout_ms)
                        continue;
                int64_t lag = rbk__part_lag(c, p);
                if (lag < 0)
                        lag = (int64_t)rbk__mq_len(&p->msgs);
                if (lag <= 0)
                        continue;
                p->stall_reported = 1;
                c->stalls++;
                if (!stalled) {
                        stalled = g_ptr_array_new_with_free_func(
                            (GDestroyNotify)rbk__part_unref);
                        stall_info = g_array_new(FALSE, FALSE, sizeof(int64_t));
                }
                g_ptr_array_add(stalled, rbk__part_ref(p));
                g_array_append_val(stall_info, lag);
                g_array_append_val(stall_info, idle);
        }
        g_mutex_unlock(&c->lock);
        if (stalled) {
                for (guint i = 0; i < stalled->len; i++)
                        rbk__emit_stall(c, g_ptr_array_index(stalled, i),
                                        g_array_index(stall_info, int64_t,
                                                      2 * i),
                                        g_array_index(stall_info, int64_t,
                                                      2 * i + 1));
                g_ptr_array_free(stalled, TRUE);
                g_array_free(stall_info, TRUE);
        }
}

/* Milliseconds until the earliest retry is due (at most @max). */
static int rbk__next_timer_ms(rbk_consumer_t *c, int max) {
        int64_t now = rbk__now_ms(), best = max;
        g_mutex_lock(&c->lock);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                if (p->retry_at && p->retry_at - now < best)
                        best = MAX(0, p->retry_at - now);
        }
        g_mutex_unlock(&c->lock);
        return (int)best;
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
                if (!p->pq || !p->assigned || p->revoking)
                        continue;
                int64_t r = c->queue_max - (int64_t)rbk__mq_len(&p->msgs);
                if (r <= 0) {
                        p->fetch_paused = 1;
                        continue;
                }
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
                        if ((int64_t)rbk__mq_len(&p->msgs) >=
                            c->queue_max)
                                p->fetch_paused = 1;
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
        int t = rbk__fill(c) > 0 ? 0 : rbk__next_timer_ms(c, timeout_ms);
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
}

/* ------------------------------------------------------------ handling */

static void rbk__msg_fill(rbk_consumer_t *c, rbk__msg_t *m, rbk__part_t *p,
                          rd_kafka_message_t *rkm) {
        memset(m, 0, offsetof(rbk__msg_t, idb)); /* idb: written when used */
        m->part = p;
        m->rkm = rkm;
        m->pub.version = RBK_MESSAGE_VERSION;
        m->pub.topic = p->utopic;
        m->pub.partition = p->partition;
        m->pub.offset = rkm->offset;
        m->pub.timestamp = rd_kafka_message_timestamp(rkm, NULL);
        m->pub.key = rkm->key;
        m->pub.key_len = rkm->key_len;
        m->pub.value = rkm->payload;
        m->pub.value_len = rkm->len;
        m->pub.attempt = p->attempts;
        m->pub.internal_ = m;
        rd_kafka_headers_t *hdrs;
        if (!rd_kafka_message_headers(rkm, &hdrs)) {
                const void *val;
                size_t sz;
                if (!rd_kafka_header_get_last(hdrs, RBK_MSGID_HEADER, &val,
                                              &sz) &&
                    val) {
                        m->id_raw = val;
                        m->id_len = sz;
                        m->pub.has_msgid =
                            rbk_msgid_parse(val, sz, &m->pub.msgid) == RBK_OK;
                }
                if (!rd_kafka_header_get_last(hdrs, RBK_RESENT_HEADER, &val,
                                              &sz))
                        m->pub.possibly_duplicate = 1;
        }
}

/* The message passed dedup and goes to the application: copies the id and
 * starts the handler clock. */
static void rbk__msg_ready(rbk__msg_t *m) {
        if (m->id_raw && m->id_len < sizeof(m->idb)) {
                /* As g_strndup() would: up to the first NUL. */
                const char *nul = memchr(m->id_raw, '\0', m->id_len);
                size_t n = nul ? (size_t)(nul - (const char *)m->id_raw)
                               : m->id_len;
                memcpy(m->idb, m->id_raw, n);
                m->idb[n] = '\0';
                m->pub.id = m->idb;
        } else if (m->id_raw) {
                m->idbuf = g_strndup(m->id_raw, m->id_len);
                m->pub.id = m->idbuf;
        }
        m->started_ms = rbk__now_ms();
}

static void rbk__msg_clear(rbk__msg_t *m) {
        g_free(m->idbuf);
        m->idbuf = NULL;
}

static int64_t rbk__backoff_ms(rbk_consumer_t *c, int attempt) {
        double b = (double)c->backoff_ms * ldexp(1.0, MIN(attempt - 1, 40));
        b *= g_random_double_range(0.8, 1.2);
        if (b > (double)c->backoff_max_ms)
                b = (double)c->backoff_max_ms;
        return (int64_t)b;
}

typedef enum {
        RBK__ACT_NONE = 0,
        RBK__ACT_GAVE_UP,
        RBK__ACT_DEADLETTER
} rbk__act_t;

/* Applies a verdict to the busy head of m->part. Caller holds c->lock.
 * Returns what to do after unlocking. */
static rbk__act_t rbk__finish(rbk_consumer_t *c, rbk__msg_t *m,
                              rbk_verdict_t verdict, int ran_handler) {
        rbk__part_t *p = m->part;
        rd_kafka_message_t *rkm = m->rkm;
        rbk__act_t act = RBK__ACT_NONE;
        int64_t now = rbk__now_ms();
        if (m->dedup_count == RBK__DEDUP_UNPROVABLE)
                c->unprovable++;
        else if (m->dedup_count == RBK__DEDUP_NO_ID)
                c->no_id++;
        if (ran_handler) {
                double ms = (double)(now - m->started_ms);
                p->handler_cnt++;
                p->handler_ms_sum += ms;
                if (ms > p->handler_ms_max)
                        p->handler_ms_max = ms;
                c->handler_cnt++;
                c->handler_ms_sum += ms;
        }
        if (!p->assigned) {
                /* Revoked or lost meanwhile: not ours to store. A handled
                 * id still goes into the partition's dedup window, which
                 * the library keeps: if the partition comes straight back
                 * (a coordinator failover), it is read again from the last
                 * commit, and this process must not hand the message to its
                 * handler a second time. */
                if (verdict == RBK_HANDLED)
                        rbk__dedup_record_part(
                            c->dedup, p->dp, m->id_raw, m->id_len,
                            m->pub.has_msgid ? &m->pub.msgid : NULL,
                            rkm->offset);
                rbk__mq_remove(&p->msgs, rkm);
                rd_kafka_message_destroy(rkm);
        } else if (verdict == RBK_HANDLED) {
                rbk__part_complete_head_id(
                    c, p, rkm, m->id_raw, m->id_len,
                    m->pub.has_msgid ? &m->pub.msgid : NULL, now);
                if (ran_handler) {
                        p->handled++;
                        c->handled++;
                }
        } else {
                p->retried++;
                c->retried++;
                if (p->attempts >= c->retry_max) {
                        act = c->giveup_deadletter ? RBK__ACT_DEADLETTER
                                                   : RBK__ACT_GAVE_UP;
                        p->hold = c->giveup_deadletter ? RBK__HOLD_DLQ_PENDING
                                                       : RBK__HOLD_GAVE_UP;
                        g_free(p->hold_reason);
                        p->hold_reason = g_strdup_printf(
                            "handler returned RBK_RETRY %d times on offset "
                            "%" PRId64,
                            p->attempts, rkm->offset);
                } else {
                        p->retry_at = now + rbk__backoff_ms(c, p->attempts);
                        if (p->retry_at == 0)
                                p->retry_at = 1;
                }
        }
        p->busy = 0;
        /* A burst: the partition's next message was most likely received
         * in the same fetch, next to this one in memory (in this core's
         * cache), so the partition goes back to the head of the ready
         * queue, for at most RBK__BURST_MAX messages and RBK__BURST_MS;
         * then to the tail, behind every other runnable partition. */
        int head = 0;
        if (!rbk__mq_len(&p->msgs) || p->retry_at || p->hold) {
                p->burst_start_ms = 0;
        } else if (!p->burst_start_ms) {
                p->burst_start_ms = now;
                p->burst_n = 1;
                head = 1;
        } else if (p->burst_n < RBK__BURST_MAX &&
                   now - p->burst_start_ms < RBK__BURST_MS) {
                p->burst_n++;
                head = 1;
        } else {
                p->burst_start_ms = 0;
        }
        rbk__part_maybe_ready_at(c, p, head);
        if (c->cond_waiters)
                g_cond_broadcast(&c->cond);
        return act;
}

static void rbk__after(rbk_consumer_t *c, rbk__part_t *p, rbk__act_t act,
                       rd_kafka_message_t *rkm, int64_t offset,
                       const char *id, int attempts) {
        if (act == RBK__ACT_GAVE_UP) {
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_HANDLER_GAVE_UP, RBK_SEV_ERROR);
                char *key = g_strdup_printf("%s/%s/%" PRId32 "/gave-up/%" PRId64,
                                            c->ugroup, p->utopic, p->partition,
                                            offset);
                char *msg = g_strdup_printf(
                    "handler gave up on %s [%" PRId32 "] offset %" PRId64
                    " after %d attempt(s); the partition is paused until "
                    "rbk_consumer_resolve() releases it",
                    p->utopic, p->partition, offset, attempts);
                ev.topic = p->topic;
                ev.partition = p->partition;
                ev.offset = offset;
                ev.id = id;
                ev.incident_key = key;
                ev.message = msg;
                rbk__consumer_emit(c, &ev);
                g_free(msg);
                g_free(key);
        } else if (act == RBK__ACT_DEADLETTER) {
                rbk__dlq_send(c, p, rkm, attempts);
        }
}

/* Checks the id of a message about to be handed out (m filled by
 * rbk__msg_fill()). Returns 1 if it is a duplicate and was completed (the
 * offset stored, nothing handed out). Otherwise notes in m the verdict that
 * rbk__finish() counts, and takes no lock. */
static int rbk__dedup_drop(rbk_consumer_t *c, rbk__part_t *p, rbk__msg_t *m) {
        const void *id = m->id_raw;
        size_t idlen = m->id_len;
        rbk__dedup_verdict_t v = RBK__DEDUP_NO_ID;
        if (c->dedup && p->attempts == 1)
                v = rbk__dedup_check_part(
                    c->dedup, p->dp, id, idlen,
                    m->pub.has_msgid ? &m->pub.msgid : NULL);
        else if (id && idlen)
                v = RBK__DEDUP_NEW;
        m->dedup_count = p->attempts == 1 ? (int)v : (int)RBK__DEDUP_NEW;
        if (v != RBK__DEDUP_DUPLICATE)
                return 0;
        m->dedup_count = RBK__DEDUP_NEW;
        g_mutex_lock(&c->lock);
        c->duplicates++;
        p->duplicates++;
        rbk__finish(c, m, RBK_HANDLED, 0);
        g_mutex_unlock(&c->lock);
        return 1;
}

/* One message through the handler, with everything around it. Called with
 * c->lock NOT held, p busy with head rkm. */
static void rbk__handle_one(rbk_consumer_t *c, rbk__part_t *p,
                            rd_kafka_message_t *rkm) {
        rbk__msg_t m;
        rbk__msg_fill(c, &m, p, rkm);
        if (rbk__dedup_drop(c, p, &m))
                return;
        rbk__msg_ready(&m);
        rbk_verdict_t v = c->handler(&m.pub, c->handler_opaque);
        if (v != RBK_HANDLED && v != RBK_RETRY) {
                rbk__log(c->hooks, 4, "consumer",
                         "handler returned unknown verdict %d for %s [%" PRId32
                         "] offset %" PRId64 "; treated as RBK_RETRY",
                         (int)v, p->utopic, p->partition, rkm->offset);
                v = RBK_RETRY;
        }
        int64_t offset = rkm->offset;
        int attempts = p->attempts;
        g_mutex_lock(&c->lock);
        rbk__act_t act = rbk__finish(c, &m, v, 1);
        g_mutex_unlock(&c->lock);
        rbk__after(c, p, act, rkm, offset, m.pub.id, attempts);
        rbk__msg_clear(&m);
}

static gpointer rbk__worker_main(gpointer arg) {
        rbk_consumer_t *c = arg;
        g_mutex_lock(&c->lock);
        while (!c->workers_quit) {
                rd_kafka_message_t *rkm = NULL;
                rbk__part_t *p = rbk__take(c, &rkm);
                if (!p) {
                        c->work_waiters++;
                        g_cond_wait_until(&c->work_cond, &c->lock,
                                          g_get_monotonic_time() +
                                              200 * G_TIME_SPAN_MILLISECOND);
                        c->work_waiters--;
                        continue;
                }
                g_mutex_unlock(&c->lock);
                rbk__handle_one(c, p, rkm);
                rbk__part_unref(p);
                g_mutex_lock(&c->lock);
        }
        g_mutex_unlock(&c->lock);
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
        c->revoke_timeout_ms =
            rbk__conf_int(cf, "rbk.consumer.revoke.timeout.ms");
        c->shutdown_timeout_ms = rbk__conf_int(cf, "rbk.shutdown.timeout.ms");
        c->initial_offset =
            g_strdup(rbk__conf_str(cf, "rbk.consumer.initial.offset"));
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
        rbk__part_t *p;
        while ((p = rbk__ready_pop(c)))
                rbk__part_unref(p);
        if (c->resets)
                g_ptr_array_free(c->resets, TRUE);
        if (c->reported_keys)
                g_hash_table_destroy(c->reported_keys);
        if (c->resolved_keys)
                g_hash_table_destroy(c->resolved_keys);
        if (c->dedup)
                rbk__dedup_destroy(c->dedup);
        if (c->cq)
                rd_kafka_queue_destroy(c->cq);
        if (c->rk)
                rd_kafka_destroy_flags(c->rk,
                                       c->close_ok
                                           ? 0
                                           : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        if (c->hooks)
                rbk__hooks_destroy(c->hooks);
        rbk_conf_destroy(c->conf);
        g_free(c->prefix);
        g_free(c->group);
        g_free(c->ugroup);
        g_free(c->dlq_topic);
        g_free(c->initial_offset);
        g_mutex_clear(&c->poll_mu);
        g_mutex_clear(&c->lock);
        g_mutex_clear(&c->dlq_mu);
        g_cond_clear(&c->cond);
        g_cond_clear(&c->work_cond);
        g_free(c);
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
        g_mutex_init(&c->lock);
        g_mutex_init(&c->dlq_mu);
        g_cond_init(&c->cond);
        g_cond_init(&c->work_cond);
        g_queue_init(&c->requests);
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

        const char *name = rbk__conf_str(conf, "rbk.client.name");
        c->hooks = rbk__hooks_new(conf, name && *name ? name : "anonymous");
        c->parts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify)rbk__part_unref);
        c->resets = g_ptr_array_new();
        c->reported_keys =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

        rd_kafka_conf_set_opaque(rc, c);
        rd_kafka_conf_set_rebalance_cb(rc, rbk__rebalance_cb);
        rd_kafka_conf_set_offset_commit_cb(rc, rbk__offset_commit_cb);
        rd_kafka_conf_set_error_cb(rc, rbk__error_cb);
        rd_kafka_conf_set_log_cb(rc, rbk__log_cb);

        c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        if (!c->rk) {
                rd_kafka_conf_destroy(rc);
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating the consumer failed: %s", e);
                goto fail;
        }
        rd_kafka_poll_set_consumer(c->rk);
        c->cq = rd_kafka_queue_get_consumer(c->rk);
        c->close_ok = 0;
        if (rbk__conf_bool(conf, "rbk.dedup.enable")) {
                c->dedup = rbk__dedup_new(conf, c->ugroup);
                rbk__dedup_set_error_cb(c->dedup, rbk__dedup_error, c);
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
                rbk_err_t err = rbk__topic_validate(c->prefix, topics[i], e,
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
                char *full = rbk__prefixed(c->prefix, topics[i]);
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
                                void *opaque) {
        if (c->closed)
                return RBK_ERR_SHUTDOWN;
        if (c->running || !c->subscribed || rbk__busy_count(c))
                return RBK_ERR_STATE;
        c->running = 1;
        c->stopping = 0;
        c->stop_req = 0;
        c->handler = handler;
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
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v))
                rbk__part_maybe_ready(c, v);
        g_mutex_unlock(&c->lock);

        while (!c->stop_req) {
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
        while ((busy = rbk__busy_count(c)) > 0) {
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
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
}

rbk_err_t rbk_consumer_run(rbk_consumer_t *c, rbk_handler_t *handler,
                           void *opaque) {
        if (!c || !handler)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        g_mutex_lock(&c->lock);
        rbk_err_t err = rbk__run_claim(c, handler, opaque);
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

rbk_err_t rbk_consumer_start(rbk_consumer_t *c, rbk_handler_t *handler,
                             void *opaque) {
        if (!c || !handler)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        g_mutex_lock(&c->lock);
        rbk_err_t err = rbk__run_claim(c, handler, opaque);
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

void rbk_consumer_stop(rbk_consumer_t *c) {
        /* Async-signal-safe: one store to a sig_atomic_t, nothing else. */
        if (c)
                c->stop_req = 1;
}

/* Hands out the busy head @rkm of @p (a reference, which passes to the
 * message) through the partition's own message: 1 with *msgp set, or 0
 * when dedup dropped it (completed, the reference dropped). */
static int rbk__hand_out(rbk_consumer_t *c, rbk__part_t *p,
                         rd_kafka_message_t *rkm, rbk_message_t **msgp) {
        rbk__msg_t *m = &p->out;
        rbk__msg_fill(c, m, p, rkm); /* keeps p's reference */
        if (rbk__dedup_drop(c, p, m)) {
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
        rd_kafka_message_t *rkm = NULL;
        g_mutex_lock(&c->lock);
        rbk_err_t err = c->closed    ? RBK_ERR_SHUTDOWN
                        : c->running ? RBK_ERR_STATE
                        : !c->subscribed ? RBK_ERR_STATE
                                         : RBK_OK;
        c->stopping = 0;
        rbk__part_t *p = err ? NULL : rbk__take(c, &rkm);
        g_mutex_unlock(&c->lock);
        if (err)
                return err;
        if (p && rbk__hand_out(c, p, rkm, msgp))
                return RBK_OK;
        int64_t deadline = rbk__now_ms() + MAX(timeout_ms, 0);
        g_mutex_lock(&c->poll_mu);
        rbk__tl_poller = c;
        for (int polled = 0;; polled = 1) {
                rkm = NULL;
                g_mutex_lock(&c->lock);
                p = c->running ? NULL : rbk__take(c, &rkm);
                g_mutex_unlock(&c->lock);
                if (p) {
                        if (!rbk__hand_out(c, p, rkm, msgp))
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

rbk_err_t rbk_consumer_done(rbk_consumer_t *c, rbk_message_t *msg,
                            rbk_verdict_t verdict) {
        if (!c || !msg || msg->internal_ != (void *)msg ||
            (verdict != RBK_HANDLED && verdict != RBK_RETRY))
                return RBK_ERR_INVALID_ARG;
        rbk__msg_t *m = (rbk__msg_t *)msg;
        rbk__part_t *p = m->part;
        int64_t offset = m->rkm->offset;
        int attempts = p->attempts;
        rd_kafka_message_t *rkm = m->rkm;
        /* m lives in p: once the lock is released the partition may hand
         * out its next message through it, so what is needed afterwards is
         * taken out first. */
        char idcopy[RBK_MSGID_MAX_LEN + 1];
        const char *id = NULL;
        g_mutex_lock(&c->lock);
        rbk__act_t act = rbk__finish(c, m, verdict, 1);
        char *idbuf = m->idbuf;
        m->idbuf = NULL;
        if (act != RBK__ACT_NONE && m->pub.id)
                id = idbuf ? idbuf
                           : strcpy(idcopy, m->pub.id); /* fits: from idb */
        m->pub.internal_ = NULL;
        g_mutex_unlock(&c->lock);
        rbk__after(c, p, act, rkm, offset, id, attempts);
        g_free(idbuf);
        rbk__part_unref(p);
        return RBK_OK;
}

rbk_err_t rbk_message_header(const rbk_message_t *msg, const char *name,
                             const void **valuep, size_t *sizep) {
        if (!msg || !name || !msg->internal_)
                return RBK_ERR_INVALID_ARG;
        const rbk__msg_t *m = msg->internal_;
        rd_kafka_headers_t *hdrs;
        const void *v = NULL;
        size_t sz = 0;
        if (rd_kafka_message_headers(m->rkm, &hdrs) ||
            rd_kafka_header_get_last(hdrs, name, &v, &sz))
                return RBK_ERR_NOT_FOUND;
        if (valuep)
                *valuep = v;
        if (sizep)
                *sizep = sz;
        return RBK_OK;
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
                        rbk__rebalance(c, rd_kafka_event_error(ev),
                                       rd_kafka_event_topic_partition_list(ev));
                        break;
                case RD_KAFKA_EVENT_OFFSET_COMMIT:
                        rbk__commit_result(
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
        c->stop_req = 1;
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
        rbk__tl_poller = c;
        rbk__dlq_flush(c, (int)MAX(0, deadline - rbk__now_ms()));
        rbk__consumer_commit_stored(c, (int)MAX(0, deadline - rbk__now_ms()));
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
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                p->assigned = 0;
                rbk__part_drop_queue(p);
        }
        g_hash_table_remove_all(c->parts);
        g_mutex_unlock(&c->lock);
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
        c->stop_req = 1;
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

rbk_err_t rbk_consumer_stats(rbk_consumer_t *c, rbk_consumer_stats_t *out) {
        if (!c || !out)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        memset(out, 0, sizeof(*out));
        out->version = RBK_CONSUMER_STATS_VERSION;
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
        return RBK_OK;
}

static void rbk__json_str(GString *s, const char *v) {
        g_string_append_c(s, '"');
        for (const unsigned char *q = (const unsigned char *)v; q && *q; q++) {
                if (*q == '"' || *q == '\\')
                        g_string_append_printf(s, "\\%c", *q);
                else if (*q < 0x20)
                        g_string_append_printf(s, "\\u%04x", *q);
                else
                        g_string_append_c(s, (char)*q);
        }
        g_string_append_c(s, '"');
}

static const char *rbk__hold_name(rbk__hold_t h) {
        switch (h) {
        case RBK__HOLD_GAVE_UP:
                return "gave_up";
        case RBK__HOLD_DLQ_PENDING:
                return "deadletter_pending";
        case RBK__HOLD_DLQ_FAILED:
                return "deadletter_failed";
        default:
                return "none";
        }
}

char *rbk_consumer_stats_json(rbk_consumer_t *c) {
        rbk_consumer_stats_t st;
        if (!c || rbk_consumer_stats(c, &st))
                return NULL;
        GString *s = g_string_new("{\"group\":");
        rbk__json_str(s, c->ugroup);
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
            ",\"assigned_partitions\":%" G_GUINT64_FORMAT
            ",\"quarantined_partitions\":%" G_GUINT64_FORMAT
            ",\"dedup_memory_bytes\":%" G_GUINT64_FORMAT ",\"lag\":%" PRId64
            ",\"handler_ms_avg\":%.3f,\"partitions\":[",
            st.consumed, st.handled, st.retried, st.dead_lettered,
            st.duplicates_dropped, st.unprovable, st.no_id, st.commits,
            st.quarantines, st.resolutions, st.initial_positions, st.stalls,
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
                rbk__json_str(s, p->utopic);
                g_string_append_printf(
                    s,
                    ",\"partition\":%" PRId32 ",\"position\":%" PRId64
                    ",\"stored\":%" PRId64 ",\"committed\":%" PRId64
                    ",\"lag\":%" PRId64 ",\"queued\":%u,\"paused\":%s"
                    ",\"fetch_paused\":%s,\"held\":\"%s\",\"attempts\":%d"
                    ",\"quarantined\":%s",
                    p->partition, rbk__part_position(p), p->stored,
                    p->committed, rbk__part_lag(c, p),
                    (unsigned)rbk__mq_len(&p->msgs),
                    (p->quarantined || p->hold || p->retry_at) ? "true"
                                                               : "false",
                    p->fetch_paused ? "true" : "false",
                    rbk__hold_name(p->hold), p->attempts,
                    p->quarantined ? "true" : "false");
                if (p->quarantined) {
                        g_string_append(s, ",\"incident_key\":");
                        rbk__json_str(s, p->q.incident_key);
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
