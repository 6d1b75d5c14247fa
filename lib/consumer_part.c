/* The consumer's partitions: each partition's message ring, its hand-outs
 * (each with a ticket), the ready queue, retry holds, quarantine flags and
 * positions. This file alone writes an rbk__part_t field; the rest of the
 * consumer calls the named transitions declared in consumer_internal.h
 * (docs/architecture.md draws them). Every function expects c->lock held
 * unless it says otherwise. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "consumer_internal.h"
#include "incident.h"

/* Consecutive messages of one partition handed out before the next
 * runnable partition's turn, at most, and for at most this long (see
 * rbk__part_end_out()). */
#define RBK__BURST_MAX 256
#define RBK__BURST_MS 2
/* Poll API message slots made before any is reused: a stale pointer is
 * recognised until this many other hand-outs reused the pool. */
#define RBK__SLOTS_MIN 64

/* ------------------------------------------------------------ the ring */

static void rbk__mq_push(rbk__mq_t *q, rd_kafka_message_t *rkm) {
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

static rd_kafka_message_t *rbk__mq_peek(const rbk__mq_t *q) {
        return q->len ? q->v[q->head] : NULL;
}

static rd_kafka_message_t *rbk__mq_pop(rbk__mq_t *q) {
        if (!q->len)
                return NULL;
        rd_kafka_message_t *rkm = q->v[q->head];
        q->head = q->head + 1 == q->cap ? 0 : q->head + 1;
        q->len--;
        return rkm;
}

/* Drops the tail messages at or beyond @from (every one when @from < 0),
 * never the head when @keep_head. */
static void rbk__mq_drop_from(rbk__mq_t *q, int64_t from, int keep_head) {
        while (q->len > (keep_head ? 1u : 0u)) {
                size_t last = (q->head + q->len - 1) % q->cap;
                rd_kafka_message_t *rkm = q->v[last];
                if (from >= 0 && rkm->offset < from)
                        break;
                q->len--;
                rd_kafka_message_destroy(rkm);
        }
}

static void rbk__mq_free(rbk__mq_t *q) {
        rd_kafka_message_t *rkm;
        while ((rkm = rbk__mq_pop(q)))
                rd_kafka_message_destroy(rkm);
        g_free(q->v);
        q->v = NULL;
        q->cap = q->head = q->len = 0;
}

/* ------------------------------------------------------------ objects */

char *rbk__part_key(const char *topic, int32_t partition) {
        return g_strdup_printf("%s\x01%" PRId32, topic, partition);
}

rbk__part_t *rbk__part_ref(rbk__part_t *p) {
        g_atomic_int_inc(&p->refcnt);
        return p;
}

void rbk__part_unref(rbk__part_t *p) {
        if (!p || !g_atomic_int_dec_and_test(&p->refcnt))
                return;
        rbk__mq_free(&p->msgs);
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

rbk__part_t *rbk__part_assign(rbk_consumer_t *c, const char *topic,
                              int32_t partition, int64_t assign_off) {
        rbk__part_t *p = rbk__part_find(c, topic, partition);
        if (!p) {
                p = g_new0(rbk__part_t, 1);
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
                p->drain_to = -1;
                p->hold = RBK__HOLD_NONE;
                p->last_progress_ms = rbk__now_ms();
                char *k = rbk__part_key(topic, partition);
                /* A pause survives the partition coming back. */
                p->paused = c->paused_keys &&
                            g_hash_table_contains(c->paused_keys, k);
                g_hash_table_insert(c->parts, k, p);
        }
        p->assign_gen++;
        p->assign_off = assign_off >= 0 ? assign_off : RD_KAFKA_OFFSET_INVALID;
        return p;
}

rd_kafka_queue_t *rbk__part_set_queue(rbk__part_t *p, rd_kafka_queue_t *pq) {
        rd_kafka_queue_t *old = p->pq;
        p->pq = pq;
        if (!pq)
                p->fetch_paused = 0;
        return old == pq ? NULL : old;
}

void rbk__part_set_committed(rbk__part_t *p, int64_t off) {
        if (off >= 0)
                p->committed = off;
}

size_t rbk__part_queued(const rbk__part_t *p) {
        return p->msgs.len;
}

/* ------------------------------------------------------------ ready queue */

/* Batch mode with a wait: the partition goes out with fewer messages than
 * a batch only once its first has waited rbk.consumer.batch.max.ms (a
 * full queue goes out at once). */
static int rbk__part_batch_due(rbk_consumer_t *c, rbk__part_t *p,
                               int64_t now) {
        return !c->batch_handler || c->batch_max_ms <= 0 ||
               (int64_t)p->msgs.len >= c->batch_max || p->fetch_paused ||
               !p->first_queued_ms ||
               (now ? now : rbk__now_ms()) - p->first_queued_ms >=
                   c->batch_max_ms;
}

static int rbk__part_runnable(rbk_consumer_t *c, rbk__part_t *p,
                              int64_t now) {
        return p->assigned && !p->revoking && p->out == RBK__OUT_NONE &&
               !p->paused &&
               !c->stopping && p->msgs.len && !p->quarantined &&
               p->hold == RBK__HOLD_NONE &&
               (p->retry_at == 0 || now >= p->retry_at) &&
               rbk__part_batch_due(c, p, now);
}

/* Puts p on the ready queue if it can run now, at the head if @head. */
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

static void rbk__part_maybe_ready(rbk_consumer_t *c, rbk__part_t *p) {
        rbk__part_maybe_ready_at(c, p, 0);
}

/* Pops the ready queue's head (its reference passes to the caller). */
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

void rbk__part_ready_all(rbk_consumer_t *c) {
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v))
                rbk__part_maybe_ready(c, v);
}

void rbk__part_ready_clear(rbk_consumer_t *c) {
        rbk__part_t *p;
        while ((p = rbk__ready_pop(c)))
                rbk__part_unref(p);
}

rbk__part_t *rbk__part_take(rbk_consumer_t *c, rd_kafka_message_t **rkmp,
                            uint64_t *ticketp) {
        rbk__part_t *p;
        int64_t now = 0; /* read only for a partition in retry backoff */
        while ((p = rbk__ready_pop(c))) {
                if (p->retry_at && !now)
                        now = rbk__now_ms();
                if (!rbk__part_runnable(c, p, now)) {
                        rbk__part_unref(p);
                        continue;
                }
                p->out = RBK__OUT_HANDLER;
                p->out_ticket = ++c->next_ticket;
                p->out_pos_gen = p->pos_gen;
                p->attempts++;
                p->retry_at = 0;
                *rkmp = rbk__mq_peek(&p->msgs);
                *ticketp = p->out_ticket;
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

rbk__part_t *rbk__part_take_batch(rbk_consumer_t *c, size_t max,
                                  rd_kafka_message_t **rkms, size_t *np,
                                  uint64_t *ticketp) {
        rd_kafka_message_t *head;
        rbk__part_t *p = rbk__part_take(c, &head, ticketp);
        if (!p)
                return NULL;
        size_t n = MIN(max, p->msgs.len);
        for (size_t i = 0; i < n; i++)
                rkms[i] = p->msgs.v[(p->msgs.head + i) % p->msgs.cap];
        *np = n;
        return p;
}

int rbk__part_out_count(rbk_consumer_t *c, GPtrArray *parts) {
        int n = 0;
        if (parts) {
                for (guint i = 0; i < parts->len; i++)
                        n += ((rbk__part_t *)g_ptr_array_index(parts, i))
                                 ->out != RBK__OUT_NONE;
                return n;
        }
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v))
                n += ((rbk__part_t *)v)->out != RBK__OUT_NONE;
        return n;
}

/* ------------------------------------------------------------ fetching */

int rbk__part_push(rbk_consumer_t *c, rbk__part_t *p,
                   rd_kafka_message_t *rkm) {
        if (!p || !p->assigned || p->revoking || p->quarantined ||
            (p->fetch_next >= 0 && rkm->offset < p->fetch_next) ||
            (p->drain_to >= 0 && rkm->offset >= p->drain_to)) {
                rd_kafka_message_destroy(rkm);
                return 0;
        }
        if (!p->msgs.len)
                p->first_queued_ms = c->batch_max_ms > 0 ? rbk__now_ms() : 0;
        rbk__mq_push(&p->msgs, rkm);
        p->fetch_next = rkm->offset + 1;
        c->consumed++;
        rbk__part_maybe_ready(c, p);
        return 1;
}

int64_t rbk__part_room(rbk_consumer_t *c, rbk__part_t *p) {
        if (!p->pq || !p->assigned || p->revoking)
                return 0;
        int64_t r = c->queue_max - (int64_t)p->msgs.len;
        if (r <= 0) {
                p->fetch_paused = 1;
                return 0;
        }
        return r;
}

void rbk__part_note_full(rbk_consumer_t *c, rbk__part_t *p) {
        if ((int64_t)p->msgs.len >= c->queue_max)
                p->fetch_paused = 1;
}

/* ------------------------------------------------------------ positions */

int64_t rbk__part_position(const rbk__part_t *p) {
        rd_kafka_message_t *head = rbk__mq_peek(&p->msgs);
        if (head)
                return head->offset;
        if (p->fetch_next >= 0)
                return p->fetch_next;
        if (p->stored >= 0)
                return p->stored;
        return p->committed;
}

int64_t rbk__part_first_unhandled(const rbk__part_t *p) {
        rd_kafka_message_t *head = rbk__mq_peek(&p->msgs);
        if (head)
                return head->offset;
        if (p->stored >= 0)
                return p->stored;
        if (p->fetch_next >= 0)
                return p->fetch_next;
        return p->committed;
}

int64_t rbk__part_head_offset(const rbk__part_t *p) {
        rd_kafka_message_t *head = rbk__mq_peek(&p->msgs);
        return head ? head->offset : -1;
}

int64_t rbk__part_lag(rbk_consumer_t *c, const rbk__part_t *p) {
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

/* ------------------------------------------------------------ timers */

void rbk__part_timers(rbk_consumer_t *c, int64_t now) {
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                if ((p->retry_at && now >= p->retry_at) ||
                    (c->batch_max_ms > 0 && p->first_queued_ms &&
                     now - p->first_queued_ms >= c->batch_max_ms))
                        rbk__part_maybe_ready(c, p);
        }
}

int rbk__part_next_timer_ms(rbk_consumer_t *c, int max) {
        int64_t now = rbk__now_ms(), best = max;
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                if (p->retry_at && p->retry_at - now < best)
                        best = MAX(0, p->retry_at - now);
                if (c->batch_max_ms > 0 && p->first_queued_ms &&
                    p->first_queued_ms + c->batch_max_ms - now < best)
                        best = MAX(0, p->first_queued_ms + c->batch_max_ms -
                                          now);
        }
        return (int)best;
}

GPtrArray *rbk__part_stalled(rbk_consumer_t *c, int64_t now, GArray *info) {
        GPtrArray *stalled = NULL;
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                if (p->stall_reported || p->quarantined || p->paused ||
                    p->hold != RBK__HOLD_NONE || p->retry_at || p->revoking)
                        continue;
                int64_t idle = now - p->last_progress_ms;
                if (idle < c->stall_timeout_ms)
                        continue;
                int64_t lag = rbk__part_lag(c, p);
                if (lag < 0)
                        lag = (int64_t)p->msgs.len;
                if (lag <= 0)
                        continue;
                p->stall_reported = 1;
                c->stalls++;
                if (!stalled)
                        stalled = g_ptr_array_new_with_free_func(
                            (GDestroyNotify)rbk__part_unref);
                g_ptr_array_add(stalled, rbk__part_ref(p));
                g_array_append_val(info, lag);
                g_array_append_val(info, idle);
        }
        return stalled;
}

/* ------------------------------------------------------------ messages */

void rbk__msg_fill(rbk_consumer_t *c, rbk__msg_t *m, rbk__part_t *p,
                   rd_kafka_message_t *rkm, uint64_t ticket) {
        rbk__msg_t *keep_next = m->pool_next;
        memset(m, 0, offsetof(rbk__msg_t, idb)); /* idb: written when used */
        m->pool_next = keep_next;
        m->part = p;
        m->rkm = rkm;
        m->ticket = ticket;
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
}

void rbk__msg_read_headers(rbk__msg_t *m) {
        rd_kafka_message_t *rkm = m->rkm;
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

void rbk__msg_ready(rbk__msg_t *m) {
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

void rbk__msg_clear(rbk__msg_t *m) {
        g_free(m->idbuf);
        m->idbuf = NULL;
        g_free(m->reason);
        m->reason = NULL;
}

rbk__msg_t *rbk__part_slot_get(rbk_consumer_t *c) {
        rbk__msg_t *m = c->slot_free_head;
        if (!m || c->slots->len < RBK__SLOTS_MIN) {
                m = g_new0(rbk__msg_t, 1);
                g_ptr_array_add(c->slots, m);
                return m;
        }
        c->slot_free_head = m->pool_next;
        if (!c->slot_free_head)
                c->slot_free_tail = NULL;
        m->pool_next = NULL;
        return m;
}

void rbk__part_slot_put(rbk_consumer_t *c, rbk__msg_t *m) {
        g_free(m->reason);
        m->reason = NULL;
        m->ticket = 0;
        m->part = NULL;
        m->rkm = NULL;
        m->pub.internal_ = NULL;
        m->pool_next = NULL;
        if (c->slot_free_tail)
                c->slot_free_tail->pool_next = m;
        else
                c->slot_free_head = m;
        c->slot_free_tail = m;
}

void rbk__part_slots_free(rbk_consumer_t *c) {
        if (!c->slots)
                return;
        for (guint i = 0; i < c->slots->len; i++) {
                rbk__msg_t *m = g_ptr_array_index(c->slots, i);
                if (m->ticket && m->part)
                        rbk__part_unref(m->part); /* never given back */
                g_free(m->idbuf);
                g_free(m->reason);
                g_free(m);
        }
        g_ptr_array_free(c->slots, TRUE);
        c->slots = NULL;
        c->slot_free_head = c->slot_free_tail = NULL;
}

/* ------------------------------------------------------------ completion */

/* Stores offset+1 of the head message, records its id, pops and destroys
 * it: it was handled (or dead-lettered). Waits while a re-assign is in
 * progress (its commit and assign must not lose a store). */
static void rbk__part_complete_head(rbk_consumer_t *c, rbk__part_t *p,
                                    rd_kafka_message_t *rkm, const void *id,
                                    size_t idlen, const rbk_msgid_t *msgid,
                                    int64_t now_ms) {
        while (c->store_gate)
                rbk__consumer_wait(c, 0);
        /* Not after a move made while waiting: the offset is of the old
         * position. */
        if (p->assigned && !p->quarantined && p->out_pos_gen == p->pos_gen) {
                /* Stores rkm->offset + 1, as rd_kafka_offsets_store() would
                 * (the same checks, an unassigned partition refused), through
                 * the message's own topic handle. */
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
        rbk__mq_pop(&p->msgs); /* rkm: a hand-out is always the head */
        rd_kafka_message_destroy(rkm);
        if (!p->msgs.len)
                p->first_queued_ms = 0;
        p->attempts = 0;
        p->retry_at = 0;
        p->last_progress_ms = now_ms;
        p->stall_reported = 0;
        if (p->fetch_paused &&
            (int64_t)p->msgs.len <= c->queue_max / 2) {
                p->fetch_paused = 0;
                rd_kafka_queue_yield(c->cq); /* the poll thread refills */
        }
}

/* The head message left p without being stored (its partition is gone):
 * popped and destroyed; a handled id still goes into the kept dedup
 * window. */
static void rbk__part_discard_head(rbk_consumer_t *c, rbk__part_t *p,
                                   rd_kafka_message_t *rkm, const void *id,
                                   size_t idlen, const rbk_msgid_t *msgid) {
        if (c->dedup && id && idlen)
                rbk__dedup_record_part(c->dedup, p->dp, id, idlen, msgid,
                                       rkm->offset);
        rbk__mq_pop(&p->msgs);
        rd_kafka_message_destroy(rkm);
}

/* Ends the current hand-out: the next message may go out. */
static void rbk__part_end_out(rbk_consumer_t *c, rbk__part_t *p,
                              int64_t now) {
        p->out = RBK__OUT_NONE;
        p->out_ticket = 0;
        /* A burst: the partition's next message was most likely received
         * in the same fetch, next to this one in memory (in this core's
         * cache), so the partition goes back to the head of the ready
         * queue, for at most RBK__BURST_MAX messages and RBK__BURST_MS;
         * then to the tail, behind every other runnable partition. */
        int head = 0;
        if (!p->msgs.len || p->retry_at || p->hold) {
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
        rbk__consumer_wake(c);
}

static int64_t rbk__backoff_ms(rbk_consumer_t *c, int attempt) {
        double b = (double)c->backoff_ms * ldexp(1.0, MIN(attempt - 1, 40));
        b *= g_random_double_range(0.8, 1.2);
        if (b > (double)c->backoff_max_ms)
                b = (double)c->backoff_max_ms;
        return (int64_t)b;
}

void rbk__part_count_duplicate(rbk_consumer_t *c, rbk__part_t *p) {
        c->duplicates++;
        p->duplicates++;
}

rbk_err_t rbk__part_batch_advance(rbk_consumer_t *c, rbk__part_t *p,
                                  uint64_t ticket, rbk__msg_t *const *msgs,
                                  size_t k, int ran_handler) {
        if (!ticket || p->out != RBK__OUT_HANDLER || p->out_ticket != ticket)
                return RBK_ERR_STATE;
        int64_t now = rbk__now_ms();
        int stale = p->out_pos_gen != p->pos_gen;
        for (size_t i = 0; i < k; i++) {
                rbk__msg_t *m = msgs[i];
                const rbk_msgid_t *msgid =
                    m->pub.has_msgid ? &m->pub.msgid : NULL;
                if (m->dedup_count == RBK__DEDUP_UNPROVABLE)
                        c->unprovable++;
                else if (m->dedup_count == RBK__DEDUP_NO_ID)
                        c->no_id++;
                if (!p->assigned || stale) {
                        /* Revoked (or moved) meanwhile: not ours to store;
                         * a handled id still goes into the kept window. */
                        rbk__part_discard_head(c, p, m->rkm, m->id_raw,
                                               m->id_len, msgid);
                        continue;
                }
                rbk__part_complete_head(c, p, m->rkm, m->id_raw, m->id_len,
                                        msgid, now);
                if (ran_handler) {
                        p->handled++;
                        c->handled++;
                }
        }
        if (ran_handler && k) {
                double ms = (double)(now - msgs[0]->started_ms);
                p->handler_cnt++;
                p->handler_buckets[rbk__latency_bucket(now -
                                                       msgs[0]->started_ms)]++;
                p->handler_ms_sum += ms;
                if (ms > p->handler_ms_max)
                        p->handler_ms_max = ms;
                c->handler_cnt++;
                c->handler_ms_sum += ms;
        }
        /* The next head was handed to the handler in this batch once. */
        if (k)
                p->attempts = 1;
        return RBK_OK;
}

void rbk__part_batch_end(rbk_consumer_t *c, rbk__part_t *p, uint64_t ticket) {
        if (p->out == RBK__OUT_HANDLER && p->out_ticket == ticket) {
                p->attempts = 0;
                rbk__part_end_out(c, p, rbk__now_ms());
        }
}

rbk_err_t rbk__part_complete(rbk_consumer_t *c, rbk__msg_t *m,
                             rbk_verdict_t verdict, int ran_handler,
                             rbk__act_t *actp) {
        rbk__part_t *p = m->part;
        *actp = RBK__ACT_NONE;
        if (!m->ticket || !p || p->out != RBK__OUT_HANDLER ||
            p->out_ticket != m->ticket)
                return RBK_ERR_STATE;
        rd_kafka_message_t *rkm = m->rkm;
        int64_t now = rbk__now_ms();
        const rbk_msgid_t *msgid = m->pub.has_msgid ? &m->pub.msgid : NULL;
        if (m->dedup_count == RBK__DEDUP_UNPROVABLE)
                c->unprovable++;
        else if (m->dedup_count == RBK__DEDUP_NO_ID)
                c->no_id++;
        if (ran_handler) {
                double ms = (double)(now - m->started_ms);
                p->handler_cnt++;
                p->handler_buckets[rbk__latency_bucket(now - m->started_ms)]++;
                p->handler_ms_sum += ms;
                if (ms > p->handler_ms_max)
                        p->handler_ms_max = ms;
                c->handler_cnt++;
                c->handler_ms_sum += ms;
        }
        if (!p->assigned || p->out_pos_gen != p->pos_gen) {
                /* Revoked or lost meanwhile (or moved by a seek): not ours
                 * to store. A handled id still goes into the partition's
                 * dedup window, which the library keeps: if the partition
                 * comes straight back (a coordinator failover), it is read
                 * again from the last commit, and this process must not hand
                 * the message to its handler a second time. */
                int gone = !p->assigned;
                rbk__part_discard_head(c, p, rkm,
                                       verdict == RBK_HANDLED ? m->id_raw
                                                              : NULL,
                                       m->id_len, msgid);
                rbk__part_end_out(c, p, now);
                return gone ? RBK_ERR_NOT_FOUND : RBK_OK;
        }
        if (verdict == RBK_HANDLED) {
                rbk__part_complete_head(c, p, rkm, m->id_raw, m->id_len, msgid,
                                        now);
                if (!p->assigned) {
                        /* Revoked during the store gate: the store was
                         * refused, the message is gone all the same. */
                        rbk__part_end_out(c, p, now);
                        return RBK_ERR_NOT_FOUND;
                }
                if (ran_handler) {
                        p->handled++;
                        c->handled++;
                }
        } else if (verdict == RBK_RETRY && p->attempts < c->retry_max) {
                p->retried++;
                c->retried++;
                p->retry_at = now + rbk__backoff_ms(c, p->attempts);
                if (p->retry_at == 0)
                        p->retry_at = 1;
        } else {
                /* Given up: retries exhausted, or a poison message. */
                if (verdict == RBK_RETRY) {
                        p->retried++;
                        c->retried++;
                }
                g_free(p->hold_reason);
                p->hold_reason =
                    m->reason ? g_strdup(m->reason)
                    : verdict == RBK_DEADLETTER
                        ? g_strdup_printf("handler returned RBK_DEADLETTER on "
                                          "offset %" PRId64,
                                          rkm->offset)
                        : g_strdup_printf("handler returned RBK_RETRY %d times "
                                          "on offset %" PRId64,
                                          p->attempts, rkm->offset);
                if (c->giveup_deadletter && c->dlq_limit > 0) {
                        if (!p->dlq_window_start ||
                            now - p->dlq_window_start >=
                                c->dlq_limit_window_ms) {
                                p->dlq_window_start = now;
                                p->dlq_count = 0;
                        }
                        if (p->dlq_count >= c->dlq_limit) {
                                /* A bad deploy would drain the topic into
                                 * the dead-letter topic: hold and page. */
                                p->hold = RBK__HOLD_DLQ_LIMIT;
                                *actp = RBK__ACT_DLQ_LIMIT;
                                rbk__part_end_out(c, p, now);
                                return RBK_OK;
                        }
                        p->dlq_count++;
                }
                if (c->giveup_deadletter) {
                        /* The dead-letter send holds the message now: the
                         * hand-out goes on. */
                        p->hold = RBK__HOLD_DLQ_PENDING;
                        p->out = RBK__OUT_DEADLETTER;
                        c->dlq_inflight++;
                        *actp = RBK__ACT_DEADLETTER;
                        return RBK_OK;
                }
                p->hold = RBK__HOLD_GAVE_UP;
                *actp = RBK__ACT_GAVE_UP;
        }
        rbk__part_end_out(c, p, now);
        return RBK_OK;
}

int rbk__part_deadletter_done(rbk_consumer_t *c, rbk__part_t *p,
                              uint64_t ticket, int ok, const char *reason) {
        c->dlq_inflight--;
        int64_t now = rbk__now_ms();
        if (p->out != RBK__OUT_DEADLETTER || p->out_ticket != ticket) {
                rbk__consumer_wake(c);
                return 0; /* not possible: only this ends the hand-out */
        }
        rd_kafka_message_t *rkm = rbk__mq_peek(&p->msgs);
        const void *id = NULL;
        size_t idlen = 0;
        rbk_msgid_t m;
        int ours = 0;
        rd_kafka_headers_t *hdrs;
        if (ok && c->dedup && !rd_kafka_message_headers(rkm, &hdrs) &&
            !rd_kafka_header_get_last(hdrs, RBK_MSGID_HEADER, &id, &idlen) &&
            id)
                ours = rbk_msgid_parse(id, idlen, &m) == RBK_OK;
        int mine = p->assigned;
        if (!mine || p->out_pos_gen != p->pos_gen) {
                rbk__part_discard_head(c, p, rkm, ok ? id : NULL, idlen,
                                       ours ? &m : NULL);
                if (mine && p->hold == RBK__HOLD_DLQ_PENDING)
                        p->hold = RBK__HOLD_NONE;
        } else if (ok) {
                p->hold = RBK__HOLD_NONE;
                g_free(p->hold_reason);
                p->hold_reason = NULL;
                rbk__part_complete_head(c, p, rkm, id, idlen, ours ? &m : NULL,
                                        now);
                c->dead_lettered++;
                p->dead_lettered++;
                mine = p->assigned;
        } else {
                p->hold = RBK__HOLD_DLQ_FAILED;
                g_free(p->hold_reason);
                p->hold_reason = g_strdup(reason);
        }
        rbk__part_end_out(c, p, now);
        return mine;
}

/* ------------------------------------------------------------ rebalances */

void rbk__part_revoke_begin(rbk_consumer_t *c, rbk__part_t *p) {
        p->revoking = 1;
        rbk__mq_drop_from(&p->msgs, -1, p->out != RBK__OUT_NONE);
}

rd_kafka_queue_t *rbk__part_detach(rbk_consumer_t *c, rbk__part_t *p) {
        rd_kafka_queue_t *pq = p->pq;
        p->pq = NULL;
        p->fetch_paused = 0;
        p->assigned = 0;
        p->revoking = 1;
        /* A handed-out head stays with its holder, who destroys it. */
        rbk__mq_drop_from(&p->msgs, -1, p->out != RBK__OUT_NONE);
        char *k = rbk__part_key(p->topic, p->partition);
        if (g_hash_table_lookup(c->parts, k) == p) {
                rbk__part_ref(p); /* the table's reference goes now */
                g_hash_table_remove(c->parts, k);
                rbk__part_unref(p);
        }
        g_free(k);
        rbk__consumer_wake(c);
        return pq;
}

void rbk__part_reassigned(rbk__part_t *p, int64_t off) {
        p->assign_gen++;
        p->assign_off = off >= 0 ? off : RD_KAFKA_OFFSET_INVALID;
}

void rbk__part_reposition(rbk_consumer_t *c, rbk__part_t *p, int64_t off,
                          int64_t resolved_failed) {
        /* Callers move only partitions with nothing handed out; a hand-out
         * would keep its message, and its end would store an offset of
         * the old position (so it is refused by rbk__part_resolvable()). */
        rbk__mq_drop_from(&p->msgs, -1, p->out != RBK__OUT_NONE);
        p->quarantined = 0;
        p->hold = RBK__HOLD_NONE;
        g_free(p->hold_reason);
        p->hold_reason = NULL;
        p->attempts = 0;
        p->retry_at = 0;
        p->drain_to = -1;
        p->stored = -1;
        p->fetch_next = off >= 0 ? off : RD_KAFKA_OFFSET_INVALID;
        p->resolved_failed = resolved_failed;
        p->last_progress_ms = rbk__now_ms();
        p->stall_reported = 0;
        p->dlq_count = 0;
        p->pos_gen++;
        rbk__part_reassigned(p, off);
        rbk__part_maybe_ready(c, p);
        rbk__consumer_wake(c);
}

/* ------------------------------------------------------------ quarantine */

int rbk__part_out_of_range(rbk_consumer_t *c, rbk__part_t *p, int64_t failed) {
        if (!p->assigned || p->revoking)
                return 0;
        if (p->quarantined && p->q.failed_offset == failed)
                return 0; /* the incident already known (a re-assign of the
                           * other partitions repeats it) */
        if (p->resolved_failed >= 0 && p->fetch_next > p->resolved_failed)
                p->resolved_failed = -1; /* the position has passed it */
        if (!p->quarantined && failed >= 0 && failed == p->resolved_failed &&
            p->fetch_next != failed)
                return 0; /* made before its resolution took effect */
        /* A position is only ever lost going forward: a report behind what
         * this assignment already received, or behind the offset it was
         * assigned at, was made before (librdkafka's reports carry no
         * version barrier). Without a position of any kind (-1001), only an
         * assignment that named no offset and received nothing can be
         * reporting. */
        if (failed >= 0 && p->fetch_next >= 0 && failed < p->fetch_next)
                return 0;
        if (failed >= 0 && p->assign_off >= 0 && failed < p->assign_off)
                return 0;
        if (failed < 0 && (p->assign_off >= 0 || p->fetch_next >= 0 ||
                           p->stored >= 0))
                return 0;
        if (failed >= 0) {
                p->drain_to = failed;
                rbk__mq_drop_from(&p->msgs, failed, p->out != RBK__OUT_NONE);
        }
        return 1;
}

int rbk__part_drained(const rbk__part_t *p) {
        if (p->out != RBK__OUT_NONE)
                return 0;
        /* Held or paused: nothing more goes out until a human acts, so
         * the page cannot wait for the queue. */
        return p->msgs.len == 0 || p->hold != RBK__HOLD_NONE || p->paused;
}

int rbk__part_oor_disproved(rbk__part_t *p, int64_t now_ms) {
        if (!p->oor_window_ms || now_ms - p->oor_window_ms >= RBK__OOR_WINDOW_MS) {
                p->oor_window_ms = now_ms;
                p->oor_disproved_n = 0;
        }
        return ++p->oor_disproved_n;
}

void rbk__part_quarantine(rbk_consumer_t *c, rbk__part_t *p,
                          const rbk_quarantine_t *q, int64_t first_unhandled) {
        p->quarantined = 1;
        p->q = *q;
        p->q_first_unhandled = first_unhandled;
        p->drain_to = -1;
        p->retry_at = 0;
        if (q->committed_offset >= 0)
                p->committed = q->committed_offset;
        c->quarantines++;
}

void rbk__part_note_resolved(rbk__part_t *p, int64_t failed) {
        p->resolved_failed = failed;
}

rbk_err_t rbk__part_set_paused(rbk_consumer_t *c, rbk__part_t *p, int on) {
        if (!p->paused == !on)
                return RBK_ERR_STATE;
        p->paused = !!on;
        if (!c->paused_keys)
                c->paused_keys = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                       g_free, NULL);
        char *k = rbk__part_key(p->topic, p->partition);
        if (on) {
                g_hash_table_add(c->paused_keys, k);
        } else {
                g_hash_table_remove(c->paused_keys, k);
                g_free(k);
                p->last_progress_ms = rbk__now_ms();
                p->stall_reported = 0;
                rbk__part_maybe_ready(c, p);
        }
        return RBK_OK;
}

int rbk__part_forget_pause(rbk_consumer_t *c, const char *topic,
                           int32_t partition) {
        if (!c->paused_keys)
                return 0;
        char *k = rbk__part_key(topic, partition);
        int had = g_hash_table_remove(c->paused_keys, k);
        g_free(k);
        return had;
}

void rbk__part_release_hold(rbk_consumer_t *c, rbk__part_t *p) {
        p->dlq_count = 0;
        p->dlq_window_start = 0;
        p->hold = RBK__HOLD_NONE;
        g_free(p->hold_reason);
        p->hold_reason = NULL;
        p->attempts = 0;
        p->retry_at = 0;
        p->last_progress_ms = rbk__now_ms();
        p->stall_reported = 0;
        rbk__part_maybe_ready(c, p);
}

rbk_err_t rbk__part_resolvable(const rbk__part_t *p, char *es, size_t esz) {
        if (!p->quarantined && p->hold == RBK__HOLD_NONE)
                return rbk__seterr(es, esz, RBK_ERR_NOT_QUARANTINED,
                                   "%s [%" PRId32
                                   "] is neither quarantined nor held",
                                   p->utopic, p->partition);
        if (p->out != RBK__OUT_NONE || p->hold == RBK__HOLD_DLQ_PENDING)
                return rbk__seterr(es, esz, RBK_ERR_STATE,
                                   "%s [%" PRId32
                                   "] has a handler call or dead letter in "
                                   "flight; try again",
                                   p->utopic, p->partition);
        return RBK_OK;
}

char *rbk__part_hold_key(rbk_consumer_t *c, const rbk__part_t *p) {
        return rbk__incident_key(RBK__INCIDENT_GAVE_UP, c->ugroup, p->utopic,
                                 p->partition, rbk__part_head_offset(p));
}

rbk__part_t *rbk__part_find_incident(rbk_consumer_t *c, const char *key) {
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                if (p->quarantined && !strcmp(p->q.incident_key, key))
                        return p;
                if (!p->quarantined && p->hold != RBK__HOLD_NONE) {
                        /* The gave-up key, or the dead-letter one. */
                        char *k = rbk__part_hold_key(c, p);
                        char *k2 = rbk__incident_key(
                            RBK__INCIDENT_DEADLETTER, c->ugroup, p->utopic,
                            p->partition, rbk__part_head_offset(p));
                        int eq = !strcmp(k, key) || !strcmp(k2, key);
                        g_free(k);
                        g_free(k2);
                        if (eq)
                                return p;
                }
        }
        return NULL;
}
