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

void rbk__consumer_dedup_error(rbk_consumer_t *c, const char *topic,
                               int32_t partition, const char *reason) {
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_DEDUP_STORE_ERROR, RBK_SEV_ERROR);
        char *key = g_strdup_printf("%s/%s/%" PRId32 "/dedup-store", c->ugroup,
                                    topic, partition);
        char *msg = g_strdup_printf("dedup store failed for %s [%" PRId32
                                    "]: %s; duplicates may reach the handler",
                                    topic, partition, reason);
        ev.err = RBK_ERR_STORE;
        ev.topic = topic;
        ev.partition = partition;
        ev.incident_key = key;
        ev.message = msg;
        rbk__consumer_emit(c, &ev);
        g_free(msg);
        g_free(key);
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
        rbk__assign_rebalance(opaque, err, parts);
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
}

/* ------------------------------------------------------------ handling */

static void rbk__after(rbk_consumer_t *c, rbk__part_t *p, rbk__act_t act,
                       rd_kafka_message_t *rkm, uint64_t ticket,
                       int64_t offset, const char *id, int attempts) {
        if (act == RBK__ACT_GAVE_UP) {
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_HANDLER_GAVE_UP, RBK_SEV_ERROR);
                char *key =
                    rbk__incident_key(RBK__INCIDENT_GAVE_UP, c->ugroup,
                                      p->utopic, p->partition, offset);
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
                /* The send holds rkm until its report ends the hand-out. */
                rbk__dlq_send(c, p, rkm, ticket, attempts);
        }
}

/* Checks the id of a message about to be handed out (m filled by
 * rbk__msg_fill()). Returns 1 if it is a duplicate and was completed (the
 * offset stored, nothing handed out). Otherwise notes in m the verdict that
 * completion counts, and takes no lock. */
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
        rbk__msg_fill(c, &m, p, rkm, ticket);
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
        int64_t offset = m.pub.offset;
        int attempts = m.pub.attempt;
        rbk__act_t act;
        g_mutex_lock(&c->lock);
        rbk__part_complete(c, &m, v, 1, &act);
        g_mutex_unlock(&c->lock);
        rbk__after(c, p, act, rkm, ticket, offset, m.pub.id, attempts);
        rbk__msg_clear(&m);
}

static gpointer rbk__worker_main(gpointer arg) {
        rbk_consumer_t *c = arg;
        g_mutex_lock(&c->lock);
        while (!c->workers_quit) {
                rd_kafka_message_t *rkm = NULL;
                uint64_t ticket = 0;
                rbk__part_t *p = rbk__part_take(c, &rkm, &ticket);
                if (!p) {
                        c->work_waiters++;
                        g_cond_wait_until(&c->work_cond, &c->lock,
                                          g_get_monotonic_time() +
                                              200 * G_TIME_SPAN_MILLISECOND);
                        c->work_waiters--;
                        continue;
                }
                g_mutex_unlock(&c->lock);
                rbk__handle_one(c, p, rkm, ticket);
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
        rbk__part_ready_clear(c);
        rbk__part_slots_free(c);
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
        c->slots = g_ptr_array_new();
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
        if (c->running || !c->subscribed || rbk__part_out_count(c, NULL))
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
        rbk__part_ready_all(c);
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

/* Hands out hand-out @ticket (the head @rkm of @p, a reference which
 * passes to the message) through a message slot: 1 with *msgp set, or 0
 * when dedup dropped it (completed, the reference dropped). */
static int rbk__hand_out(rbk_consumer_t *c, rbk__part_t *p,
                         rd_kafka_message_t *rkm, uint64_t ticket,
                         rbk_message_t **msgp) {
        g_mutex_lock(&c->lock);
        rbk__msg_t *m = rbk__part_slot_get(c);
        rbk__msg_fill(c, m, p, rkm, ticket);
        g_mutex_unlock(&c->lock);
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
        rd_kafka_message_t *rkm = NULL;
        uint64_t ticket = 0;
        g_mutex_lock(&c->lock);
        rbk_err_t err = c->closed    ? RBK_ERR_SHUTDOWN
                        : c->running ? RBK_ERR_STATE
                        : !c->subscribed ? RBK_ERR_STATE
                                         : RBK_OK;
        c->stopping = 0;
        rbk__part_t *p = err ? NULL : rbk__part_take(c, &rkm, &ticket);
        g_mutex_unlock(&c->lock);
        if (err)
                return err;
        if (p && rbk__hand_out(c, p, rkm, ticket, msgp))
                return RBK_OK;
        int64_t deadline = rbk__now_ms() + MAX(timeout_ms, 0);
        g_mutex_lock(&c->poll_mu);
        rbk__tl_poller = c;
        for (int polled = 0;; polled = 1) {
                rkm = NULL;
                g_mutex_lock(&c->lock);
                p = c->running ? NULL : rbk__part_take(c, &rkm, &ticket);
                g_mutex_unlock(&c->lock);
                if (p) {
                        if (!rbk__hand_out(c, p, rkm, ticket, msgp))
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
        if (!c || !msg || (verdict != RBK_HANDLED && verdict != RBK_RETRY))
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
        if (act != RBK__ACT_NONE && m->pub.id)
                id = idbuf ? idbuf
                           : strcpy(idcopy, m->pub.id); /* fits: from idb */
        rbk__part_slot_put(c, m);
        g_mutex_unlock(&c->lock);
        rbk__after(c, p, act, rkm, ticket, offset, id, attempts);
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
        GPtrArray *left = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v))
                g_ptr_array_add(left, rbk__part_ref(v));
        GPtrArray *pqs = g_ptr_array_new();
        for (guint i = 0; i < left->len; i++) {
                rd_kafka_queue_t *pq =
                    rbk__part_detach(c, g_ptr_array_index(left, i));
                if (pq)
                        g_ptr_array_add(pqs, pq);
        }
        g_mutex_unlock(&c->lock);
        for (guint i = 0; i < pqs->len; i++) {
                rd_kafka_queue_cb_event_enable(g_ptr_array_index(pqs, i), NULL,
                                               NULL);
                rd_kafka_queue_destroy(g_ptr_array_index(pqs, i));
        }
        g_ptr_array_free(pqs, TRUE);
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
};
G_STATIC_ASSERT(G_N_ELEMENTS(rbk__cstats_sizes) == RBK_CONSUMER_STATS_VERSION);
/* The last layout is the whole struct: no field appended without a version. */
G_STATIC_ASSERT(RBK__END_OF(rbk_consumer_stats_t, handler_ms_avg) ==
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
        if (!c || entry_size < RBK__QUARANTINE_V1_SIZE)
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
                rbk__json_escape_str(s, p->utopic);
                g_string_append_printf(
                    s,
                    ",\"partition\":%" PRId32 ",\"position\":%" PRId64
                    ",\"stored\":%" PRId64 ",\"committed\":%" PRId64
                    ",\"lag\":%" PRId64 ",\"queued\":%u,\"paused\":%s"
                    ",\"fetch_paused\":%s,\"held\":\"%s\",\"attempts\":%d"
                    ",\"quarantined\":%s",
                    p->partition, rbk__part_position(p), p->stored,
                    p->committed, rbk__part_lag(c, p),
                    (unsigned)rbk__part_queued(p),
                    (p->quarantined || p->hold || p->retry_at) ? "true"
                                                               : "false",
                    p->fetch_paused ? "true" : "false",
                    rbk__hold_name(p->hold), p->attempts,
                    p->quarantined ? "true" : "false");
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
