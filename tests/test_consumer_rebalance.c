/* Rebalances and dead letters: two consumers in one group with one leaving
 * mid-stream lose no id and commit what they handed back; dead letters carry
 * their context, the origin offset is stored only after delivery, and an
 * unavailable dead-letter topic holds the partition. */
#include "consumer_support.h"
#include "harness.h"

/* ------------------------------------------------------------ two members */

typedef struct member_s {
        const char *name;
        cs_cluster_t *cl;
        cs_rec_t *rec;
        GMutex lock;
        int assigned, revoked, lost;
        /* Per partition, the last offset handled in its current assignment
         * ("topic/partition" -> int64; dropped when it is assigned again). */
        GHashTable *cur;
        int64_t fresh_from;  /* offsets from here on were produced late */
        int fresh_handled;   /* ...and handled since the last assignment */
        volatile int leaving; /* set before the member closes */
        int revoke_checked;
        int revoke_mismatch;
        char mismatch[512];
} member_t;

static rbk_verdict_t h_slow(const rbk_message_t *m, void *opaque) {
        member_t *mb = opaque;
        g_usleep(1000); /* mid-stream when the rebalances happen */
        cs_rec_add(mb->rec, m);
        char tp[300];
        snprintf(tp, sizeof(tp), "%s/%d", m->topic, (int)m->partition);
        int64_t *o = g_new(int64_t, 1);
        *o = m->offset;
        g_mutex_lock(&mb->lock);
        g_hash_table_replace(mb->cur, g_strdup(tp), o);
        if (mb->fresh_from > 0 && m->offset >= mb->fresh_from)
                mb->fresh_handled++;
        g_mutex_unlock(&mb->lock);
        return RBK_HANDLED;
}

static int fresh_handled(member_t *mb) {
        g_mutex_lock(&mb->lock);
        int n = mb->fresh_handled;
        g_mutex_unlock(&mb->lock);
        return n;
}

/* On revoke the library has committed what this member stored: the
 * committed offset must be just past the last offset this member handled
 * in the assignment it hands back. (Offsets handled in an earlier
 * assignment say nothing: a partition handed back to this member restarts
 * at its committed offset, and the dedup window drops what this member
 * handled before without calling the handler.) */
static void member_rebalance(rbk_rebalance_t what, const char *topic,
                             int32_t partition, void *opaque) {
        member_t *mb = opaque;
        char tp[300];
        snprintf(tp, sizeof(tp), "%s/%d", topic, (int)partition);
        g_mutex_lock(&mb->lock);
        if (what == RBK_ASSIGNED) {
                mb->assigned++;
                g_hash_table_remove(mb->cur, tp);
                mb->fresh_handled = 0;
        } else if (what == RBK_LOST) {
                mb->lost++;
        } else {
                mb->revoked++;
        }
        g_mutex_unlock(&mb->lock);
        /* The mock cluster refuses commits while the group is joining
         * (real brokers accept them from the current generation while
         * preparing a rebalance), so only the member's own leave, which
         * commits while the group is stable, is checked. */
        if (what != RBK_REVOKED || !mb->leaving)
                return;
        /* The library calls this once the partition's handlers returned. */
        g_mutex_lock(&mb->lock);
        int64_t *last = g_hash_table_lookup(mb->cur, tp);
        int64_t want = last ? *last + 1 : -1;
        g_mutex_unlock(&mb->lock);
        if (want < 0)
                return; /* handled nothing there in this assignment */
        int64_t got = cs_committed(mb->cl, "g-two", topic, partition, NULL, 0);
        g_mutex_lock(&mb->lock);
        mb->revoke_checked++;
        if (got != want) {
                mb->revoke_mismatch++;
                snprintf(mb->mismatch, sizeof(mb->mismatch),
                         "%s: %s committed %" PRId64 ", handled up to %" PRId64,
                         mb->name, tp, got, want);
        }
        g_mutex_unlock(&mb->lock);
}

static rbk_consumer_t *member_new(member_t *mb, cs_cluster_t *cl,
                                  const char *name) {
        memset(mb, 0, sizeof(*mb));
        mb->name = name;
        mb->cl = cl;
        mb->rec = cs_rec_new();
        mb->cur = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        g_free);
        g_mutex_init(&mb->lock);
        rbk_conf_t *conf = cs_conf(cl, "g-two");
        cs_set(conf, "rbk.client.name", name);
        cs_set(conf, "auto.commit.interval.ms", "60000"); /* only our commits */
        rbk_conf_set_rebalance_cb(conf, member_rebalance, mb);
        rbk_conf_set_log_cb(conf, cs_log_cb, NULL);
        if (getenv("CS_DEBUG")) cs_set(conf, "debug", getenv("CS_DEBUG"));
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-two");
        rbk_conf_destroy(conf);
        ck_assert_int_eq(rbk_consumer_start(c, h_slow, mb), RBK_OK);
        return c;
}

static void member_free(member_t *mb) {
        cs_rec_free(mb->rec);
        g_hash_table_destroy(mb->cur);
        g_mutex_clear(&mb->lock);
}

static size_t union_count(member_t *a, member_t *b, cs_rec_t *into) {
        member_t *ms[2] = {a, b};
        for (int i = 0; i < 2; i++) {
                g_mutex_lock(&ms[i]->rec->lock);
                GHashTableIter it;
                gpointer k;
                g_hash_table_iter_init(&it, ms[i]->rec->ids);
                while (g_hash_table_iter_next(&it, &k, NULL))
                        if (!g_hash_table_contains(into->ids, k))
                                g_hash_table_insert(into->ids, g_strdup(k),
                                                    GINT_TO_POINTER(1));
                g_mutex_unlock(&ms[i]->rec->lock);
        }
        return g_hash_table_size(into->ids);
}

START_TEST(member_leaves_mid_stream) {
        const int n = (int)rbk_test_scale(1000, 150);
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-two", 4);
        for (int p = 0; p < 4; p++)
                cs_produce(cl, "t-two", p, 0, n, "m");
        member_t a, b;
        rbk_consumer_t *ca = member_new(&a, cl, "a");
        ck_assert(CS_WAIT(cs_rec_total(a.rec) >= (uint64_t)n / 5, 60000));
        rbk_consumer_t *cb = member_new(&b, cl, "b");
        /* B joins: A hands partitions back (eager: all 4, then gets 2
         * again; cooperative: only the 2 that move), then both share: A
         * holds 2 (assigned - revoked), B at least 2. */
        ck_assert(CS_WAIT(({
                                  g_mutex_lock(&a.lock);
                                  g_mutex_lock(&b.lock);
                                  int y = a.revoked >= 1 &&
                                          a.assigned - a.revoked >= 2 &&
                                          b.assigned >= 2;
                                  g_mutex_unlock(&b.lock);
                                  g_mutex_unlock(&a.lock);
                                  y;
                          }),
                          60000));
        /* B is caught up on its partitions (under cooperative assignment
         * A may have handled all of them before the second round hands
         * them to B: then B has nothing left, and the fresh messages below
         * are B's first). */
        rbk_consumer_stats_t bst0 = RBK_CONSUMER_STATS_INIT;
        if (!CS_WAIT(rbk_consumer_stats(cb, &bst0) == RBK_OK &&
                         bst0.assigned_partitions == 2 && bst0.lag == 0,
                     60000)) {
                char *ja = rbk_consumer_stats_json(ca);
                char *jb = rbk_consumer_stats_json(cb);
                fprintf(stderr, "a: %s\nb: %s\n", ja, jb);
                rbk_free(ja);
                rbk_free(jb);
                ck_abort_msg("b did not catch up on its partitions");
        }
        ck_assert_int_ge(a.revoked, 1);
        /* More messages while the group is stable, so A leaves while it is
         * handling messages it never saw before (a slow machine may have let
         * A handle all of the first ones before B joined). */
        member_t *ms[2] = {&a, &b};
        for (int i = 0; i < 2; i++) {
                g_mutex_lock(&ms[i]->lock);
                ms[i]->fresh_from = n;
                g_mutex_unlock(&ms[i]->lock);
        }
        for (int p = 0; p < 4; p++)
                cs_produce(cl, "t-two", p, n, n, "m");
        ck_assert(CS_WAIT(fresh_handled(&a) > 0, 60000));
        /* A leaves mid-stream. */
        a.leaving = 1;
        rbk_consumer_stop(ca);
        ck_assert_int_eq(rbk_consumer_close(ca, 15000), RBK_OK);
        cs_rec_t *all = cs_rec_new();
        /* Every id handled by someone, and B caught up on everything it
         * handles again (what the mock refused to commit). */
        rbk_consumer_stats_t bst = RBK_CONSUMER_STATS_INIT;
        int ok_ = CS_WAIT(union_count(&a, &b, all) == (size_t)(8 * n) &&
                              rbk_consumer_stats(cb, &bst) == RBK_OK &&
                              bst.assigned_partitions == 4 && bst.lag == 0,
                          60000);
        if (!ok_) {
                char *j = rbk_consumer_stats_json(cb);
                fprintf(stderr, "union %u; b: %s\n",
                        g_hash_table_size(all->ids), j);
                rbk_free(j);
        }
        ck_assert(ok_);
        rbk_consumer_stop(cb);
        ck_assert_int_eq(rbk_consumer_close(cb, 15000), RBK_OK);
        ck_assert_msg(a.revoke_mismatch == 0 && b.revoke_mismatch == 0,
                      "%s%s", a.mismatch, b.mismatch);
        ck_assert_int_gt(a.revoke_checked, 0);
        ck_assert_int_eq(a.lost + b.lost, 0);
        char miss[160] = "";
        ck_assert_msg(cs_rec_missing(all, "m", 4, 2 * n, miss, sizeof(miss)) ==
                          0,
                      "missing %s", miss);
        /* (A partition handed back and forth restarts at its committed
         * offset, so offsets may repeat across assignments: order within
         * one assignment is checked by test_consumer.) */
        /* At least once: what the mock refused to commit when B joined is
         * handled again by its new owner; nothing after A's clean leave. */
        uint64_t dup = cs_rec_total(a.rec) + cs_rec_total(b.rec) - 8 * n;
        fprintf(stderr, "rebalance: %d ids, %" G_GUINT64_FORMAT
                        " handled twice across two hand-overs, %d of A's "
                        "partition(s) checked at its leave\n",
                8 * n, dup, a.revoke_checked);
        for (int p = 0; p < 4; p++)
                ck_assert_int_eq(cs_committed(cl, "g-two", "t-two", p, NULL, 0),
                                 2 * n);
        rbk_consumer_destroy(ca);
        rbk_consumer_destroy(cb);
        cs_rec_free(all);
        member_free(&a);
        member_free(&b);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ dead letters */

typedef struct {
        cs_rec_t *rec;
        volatile int fail;
} dl_t;

static rbk_verdict_t h_poison(const rbk_message_t *m, void *opaque) {
        dl_t *d = opaque;
        if (m->partition == 0 && m->offset == 3 && d->fail)
                return RBK_RETRY;
        cs_rec_add(d->rec, m);
        return RBK_HANDLED;
}

/* Reads every message of topic/partition 0 with a plain consumer. */
static int read_dlq(cs_cluster_t *cl, const char *topic,
                    rd_kafka_message_t **out, int max, int timeout_ms) {
        char e[512];
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        rd_kafka_conf_set(rc, "bootstrap.servers", cl->bootstraps, e, sizeof(e));
        rd_kafka_conf_set(rc, "group.id", "dlq-reader", e, sizeof(e));
        rd_kafka_conf_set(rc, "enable.auto.commit", "false", e, sizeof(e));
        rd_kafka_conf_set_log_cb(rc, cs_log_quiet);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        ck_assert(rk != NULL);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, 0)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        int n = 0;
        gint64 dl = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        while (n < max && g_get_monotonic_time() < dl) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (m->err) {
                        rd_kafka_message_destroy(m);
                        continue;
                }
                out[n++] = m;
        }
        /* Messages keep a reference on rk; the caller destroys them before
         * the handle (returned through out[max]). */
        out[max] = (rd_kafka_message_t *)rk;
        return n;
}

static const char *hdr(rd_kafka_message_t *m, const char *name, char *buf,
                       size_t sz) {
        rd_kafka_headers_t *h;
        const void *v;
        size_t vs;
        if (rd_kafka_message_headers(m, &h) ||
            rd_kafka_header_get_last(h, name, &v, &vs))
                return NULL;
        snprintf(buf, sz, "%.*s", (int)vs, (const char *)v);
        return buf;
}

static int stats_has(rbk_consumer_t *c, const char *needle) {
        char *js = rbk_consumer_stats_json(c);
        int y = js && strstr(js, needle) != NULL;
        rbk_free(js);
        return y;
}

static int count_p(cs_rec_t *r, const char *topic, int p) {
        char pre[300];
        snprintf(pre, sizeof(pre), "%s/%d/", topic, p);
        int n = 0;
        g_mutex_lock(&r->lock);
        for (guint i = 0; i < r->log->len; i++)
                n += g_str_has_prefix(g_ptr_array_index(r->log, i), pre);
        g_mutex_unlock(&r->lock);
        return n;
}

START_TEST(dead_letter_after_delivery) {
        char b[256];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-src", 2);
        cs_topic(cl, "t-dlq", 1);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-src", p, 0, 10, "d");
        /* The dead-letter topic's leader answers Produce after 2 s. */
        ck_assert_int_eq(rd_kafka_mock_partition_set_leader(cl->mc, "t-dlq", 0,
                                                            2),
                         0);
        rbk_conf_t *conf = cs_conf(cl, "g-dlq");
        /* The mock writes a retried request again (it checks no producer
         * sequences), and a slow run (valgrind) can time out a 2 s answer
         * under the 10 s default: one dead letter must mean one request. */
        cs_set(conf, "socket.timeout.ms", "60000");
        cs_set(conf, "rbk.consumer.giveup", "deadletter");
        cs_set(conf, "rbk.consumer.deadletter.topic", "t-dlq");
        cs_set(conf, "rbk.consumer.retry.max.attempts", "2");
        cs_set(conf, "rbk.consumer.retry.backoff.ms", "10");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-src");
        dl_t d = {.rec = cs_rec_new(), .fail = 1};
        /* Delay the dead letter's Produce (after the producer warmed up:
         * the first request to broker 2 may be its ApiVersion). */
        for (int i = 0; i < 4; i++)
                rd_kafka_mock_broker_push_request_error_rtts(
                    cl->mc, 2, 0 /* Produce */, 1, RD_KAFKA_RESP_ERR_NO_ERROR,
                    (int)cs_ms(2500));
        ck_assert_int_eq(rbk_consumer_start(c, h_poison, &d), RBK_OK);
        /* The dead letter is in flight: the origin offset is not stored and
         * nothing after it on that partition is handled. */
        ck_assert(CS_WAIT(stats_has(c, "\"held\":\"deadletter_pending\""),
                          60000));
        gint64 t0 = g_get_monotonic_time();
        ck_assert_int_lt(cs_committed(cl, "g-dlq", "t-src", 0, NULL, 0), 4);
        ck_assert(!CS_WAIT(count_p(d.rec, "t-src", 0) > 3, 500));
        ck_assert_int_eq(cs_events_count(evs, RBK_EV_DEADLETTERED), 0);
        ck_assert(stats_has(c, "\"held\":\"deadletter_pending\""));
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_DEADLETTERED) == 1,
                          15000));
        fprintf(stderr, "dead letter reported %.0f ms after the give-up\n",
                (double)(g_get_monotonic_time() - t0) / 1000.0 + 0.0);
        ck_assert(CS_WAIT(cs_rec_distinct(d.rec) == 19, 10000));
        ck_assert(!cs_rec_has(d.rec, "d-0-3"));
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        rbk_consumer_stats(c, &st);
        ck_assert_uint_eq(st.dead_lettered, 1);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-dlq", "t-src", 0, NULL, 0), 10);

        rd_kafka_message_t *ms[3];
        int n = read_dlq(cl, "t-dlq", ms, 2, 10000);
        ck_assert_int_eq(n, 1);
        ck_assert_str_eq(hdr(ms[0], "rbk-dlq-topic", b, sizeof(b)), "t-src");
        ck_assert_str_eq(hdr(ms[0], "rbk-dlq-partition", b, sizeof(b)), "0");
        ck_assert_str_eq(hdr(ms[0], "rbk-dlq-offset", b, sizeof(b)), "3");
        ck_assert_ptr_nonnull(hdr(ms[0], "rbk-dlq-error", b, sizeof(b)));
        ck_assert_msg(strstr(b, "2") != NULL, "%s", b);
        ck_assert_str_eq(hdr(ms[0], RBK_MSGID_HEADER, b, sizeof(b)), "d-0-3");
        ck_assert_int_eq((int)ms[0]->len, 5);
        ck_assert(!memcmp(ms[0]->payload, "d-0-3", 5));
        rd_kafka_t *rk = (rd_kafka_t *)ms[2];
        for (int i = 0; i < n; i++)
                rd_kafka_message_destroy(ms[i]);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        rbk_consumer_destroy(c);
        cs_rec_free(d.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

START_TEST(dead_letter_topic_unavailable_holds_partition) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-src2", 2);
        cs_topic(cl, "t-dlq2", 1);
        for (int p = 0; p < 2; p++) {
                ck_assert_int_eq(rd_kafka_mock_partition_set_leader(
                                     cl->mc, "t-src2", p, 1),
                                 0);
                cs_produce(cl, "t-src2", p, 0, 10, "u");
        }
        if (rd_kafka_version() >= 0x020300ff &&
            rd_kafka_version() < 0x020a00ff) {
                /* A Metadata reply with TOPIC_AUTHORIZATION_FAILED crashes
                 * these versions inside librdkafka (its issue 4907): the
                 * dead-letter topic's leader refuses the Produce instead. */
                ck_assert_int_eq(rd_kafka_mock_partition_set_leader(
                                     cl->mc, "t-dlq2", 0, 2),
                                 0);
                ck_assert_int_eq(
                    rd_kafka_mock_broker_push_request_error_rtts(
                        cl->mc, 2, 0 /* Produce */, 100,
                        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 0),
                    0);
        } else {
                rd_kafka_mock_topic_set_error(
                    cl->mc, "t-dlq2",
                    RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
        }
        rbk_conf_t *conf = cs_conf(cl, "g-dlq2");
        cs_set(conf, "rbk.consumer.giveup", "deadletter");
        cs_set(conf, "rbk.consumer.deadletter.topic", "t-dlq2");
        cs_set(conf, "rbk.consumer.retry.max.attempts", "2");
        cs_set(conf, "rbk.consumer.retry.backoff.ms", "10");
        cs_set(conf, "message.timeout.ms", "3000");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-src2");
        dl_t d = {.rec = cs_rec_new(), .fail = 1};
        ck_assert_int_eq(rbk_consumer_start(c, h_poison, &d), RBK_OK);
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_DEADLETTER_FAILED) == 1,
                          60000));
        ck_assert(CS_WAIT(cs_rec_distinct(d.rec) == 13, 10000));
        rbk_event_t ev;
        ck_assert(cs_events_get(evs, RBK_EV_DEADLETTER_FAILED, 0, &ev, NULL, 0));
        ck_assert_int_eq(ev.partition, 0);
        ck_assert_int_eq(ev.offset, 3);
        /* Held: nothing after offset 3 of partition 0. */
        ck_assert(!CS_WAIT(cs_rec_distinct(d.rec) > 13, 1000));
        char *js = rbk_consumer_stats_json(c);
        ck_assert_msg(strstr(js, "\"held\":\"deadletter_failed\"") != NULL,
                      "%s", js);
        rbk_free(js);
        ck_assert_int_lt(cs_committed(cl, "g-dlq2", "t-src2", 0, NULL, 0), 4);
        /* The operator fixes the handler and releases the partition. */
        d.fail = 0;
        ck_assert_int_eq(rbk_consumer_resolve(c, "t-src2", 0,
                                              RBK_RESOLVE_COMMITTED, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(cs_rec_distinct(d.rec) == 20, 10000));
        ck_assert(cs_rec_has(d.rec, "u-0-3"));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-dlq2", "t-src2", 0, NULL, 0), 10);
        rbk_consumer_destroy(c);
        cs_rec_free(d.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("consumer_rebalance");
        RBK_TCASE(s, member_leaves_mid_stream, 120);
        RBK_TCASE(s, dead_letter_after_delivery, 120);
        RBK_TCASE(s, dead_letter_topic_unavailable_holds_partition, 120);
        return s;
}

RBK_TEST_MAIN()
