/* The partition module's promises: a message has one holder at a time
 * (a revoke never frees a message a dead-letter send holds), messages
 * already fetched are handled before a partition whose position fell out
 * of range is quarantined (and the page's numbers count from the first
 * unhandled offset), and a stale rbk_consumer_done() changes nothing. */
#include "consumer_internal.h" /* the revoke driven from the test */
#include "consumer_support.h"
#include "harness.h"

/* ------------------------------------------------------------ stale done */

START_TEST(stale_done_is_refused) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-sd", 1);
        cs_produce(cl, "t-sd", 0, 0, 5, "sd");
        rbk_conf_t *conf = cs_conf(cl, "g-sd");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-sd");
        rbk_message_t *a = NULL, *b = NULL, *x = NULL;
        for (int i = 0; i < 600 && !a; i++)
                ck_assert_int_eq(rbk_consumer_poll(c, 100, &a), RBK_OK);
        ck_assert_ptr_nonnull(a);
        ck_assert_int_eq(a->offset, 0);
        ck_assert_int_eq(rbk_consumer_done(c, a, RBK_HANDLED), RBK_OK);
        ck_assert_int_eq(rbk_consumer_poll(c, 5000, &b), RBK_OK);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(b->offset, 1);
        /* A's second done: refused, and B stays outstanding. */
        ck_assert_int_eq(rbk_consumer_done(c, a, RBK_HANDLED), RBK_ERR_STATE);
        ck_assert_int_eq(rbk_consumer_done(c, a, RBK_RETRY), RBK_ERR_STATE);
        /* Nothing else comes out of the partition while B is out. */
        ck_assert_int_eq(rbk_consumer_poll(c, 300, &x), RBK_OK);
        ck_assert_ptr_null(x);
        ck_assert_int_eq(rbk_consumer_done(c, b, RBK_HANDLED), RBK_OK);
        ck_assert_int_eq(rbk_consumer_done(c, b, RBK_HANDLED), RBK_ERR_STATE);
        /* C is handed out, never given back: the commit must stop at it. */
        rbk_message_t *cm = NULL;
        ck_assert_int_eq(rbk_consumer_poll(c, 5000, &cm), RBK_OK);
        ck_assert_ptr_nonnull(cm);
        ck_assert_int_eq(cm->offset, 2);
        ck_assert_int_eq(rbk_consumer_done(c, b, RBK_HANDLED), RBK_ERR_STATE);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-sd", "t-sd", 0, NULL, 0), 2);
        /* After close, C's done is refused too (its partition is gone). */
        ck_assert_int_eq(rbk_consumer_done(c, cm, RBK_HANDLED), RBK_ERR_STATE);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ lagging */

typedef struct {
        GMutex lock;
        GCond cond;
        int gate_at;       /* offset the handler waits at, -1: none */
        int waiting;       /* the handler is waiting at gate_at */
        int slow_at;       /* offset at which it waits for the page (bounded) */
        cs_events_t *evs;
        GArray *offsets;   /* int64_t, handled, in order */
} lag_t;

static rbk_verdict_t h_lag(const rbk_message_t *m, void *opaque) {
        lag_t *l = opaque;
        g_mutex_lock(&l->lock);
        if (m->offset == l->gate_at) {
                l->waiting = 1;
                g_cond_broadcast(&l->cond);
                while (l->gate_at >= 0)
                        g_cond_wait(&l->cond, &l->lock);
                l->waiting = 0;
        }
        int slow = m->offset == l->slow_at;
        g_mutex_unlock(&l->lock);
        if (slow) /* still busy when the fetch past it fails */
                CS_WAIT(cs_events_count(l->evs, RBK_EV_OFFSET_OUT_OF_RANGE) > 0,
                        3000);
        g_mutex_lock(&l->lock);
        int64_t o = m->offset;
        g_array_append_val(l->offsets, o);
        g_mutex_unlock(&l->lock);
        return RBK_HANDLED;
}

static int lag_count(lag_t *l, int64_t from, int64_t to) {
        int n = 0;
        g_mutex_lock(&l->lock);
        for (guint i = 0; i < l->offsets->len; i++) {
                int64_t o = g_array_index(l->offsets, int64_t, i);
                n += o >= from && o < to;
        }
        g_mutex_unlock(&l->lock);
        return n;
}

static int64_t lag_first_from(lag_t *l, int64_t from) {
        int64_t best = -1;
        g_mutex_lock(&l->lock);
        for (guint i = 0; i < l->offsets->len; i++) {
                int64_t o = g_array_index(l->offsets, int64_t, i);
                if (o >= from && (best < 0 || o < best))
                        best = o;
        }
        g_mutex_unlock(&l->lock);
        return best;
}

/* Appends @n messages of @size bytes each (past the mock's 5 MB per
 * partition, the log start moves: retention). */
static void produce_big(cs_cluster_t *cl, const char *topic, int n,
                        size_t size) {
        char *buf = g_malloc0(size);
        for (int i = 0; i < n; i++) {
                rd_kafka_resp_err_t err;
                do {
                        err = rd_kafka_producev(
                            cl->prk, RD_KAFKA_V_TOPIC(topic),
                            RD_KAFKA_V_PARTITION(0),
                            RD_KAFKA_V_VALUE(buf, size),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_END);
                        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                rd_kafka_poll(cl->prk, 10);
                } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
                ck_assert_msg(!err, "produce: %s", rd_kafka_err2str(err));
        }
        ck_assert_int_eq(rd_kafka_flush(cl->prk, 30000), 0);
        g_free(buf);
}

START_TEST(lagging_consumer_handles_what_it_fetched) {
        char e[512], key[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-lag", 1);
        cs_produce(cl, "t-lag", 0, 0, 40, "lag");
        lag_t l = {.gate_at = 15, .slow_at = 30};
        g_mutex_init(&l.lock);
        g_cond_init(&l.cond);
        l.offsets = g_array_new(FALSE, FALSE, sizeof(int64_t));
        l.evs = cs_events_new();
        rbk_conf_t *conf = cs_conf(cl, "g-lag");
        /* The library holds 25, librdkafka 15 more and then stops fetching
         * (queued.min.messages): the fetch position stays at 40. */
        cs_set(conf, "rbk.consumer.queue.max", "25");
        cs_set(conf, "queued.min.messages", "15");
        cs_set(conf, "rbk.consumer.initial.offset", "earliest");
        rbk_conf_set_hook(conf, cs_hook, l.evs);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-lag");
        ck_assert_int_eq(rbk_consumer_start(c, h_lag, &l), RBK_OK);
        /* The handler is behind: it waits at 15 with 15..39 fetched. */
        ck_assert(CS_WAIT(({
                                  g_mutex_lock(&l.lock);
                                  int w = l.waiting;
                                  g_mutex_unlock(&l.lock);
                                  w;
                          }),
                          60000));
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert(CS_WAIT((rbk_consumer_stats(c, &st), st.consumed >= 25),
                          10000));
        /* Retention passes the fetch position. */
        produce_big(cl, "t-lag", 120, 50000);
        int64_t lo = -1, hi = -1;
        ck_assert_int_eq(rd_kafka_query_watermark_offsets(
                             cl->prk, "t-lag", 0, &lo, &hi, 5000),
                         0);
        ck_assert_int_gt(lo, 40);
        g_mutex_lock(&l.lock);
        l.gate_at = -1;
        g_cond_broadcast(&l.cond);
        g_mutex_unlock(&l.lock);

        ck_assert(CS_WAIT(cs_events_count(l.evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              1,
                          60000));
        /* Every message fetched below the failed position was handled. */
        ck_assert_int_eq(lag_count(&l, 0, 40), 40);
        rbk_event_t ev;
        ck_assert(cs_events_get(l.evs, RBK_EV_OFFSET_OUT_OF_RANGE, 0, &ev, key,
                                sizeof(key)));
        ck_assert_int_eq(ev.offset, 40);
        ck_assert_int_eq(ev.low_watermark, lo);
        ck_assert_int_eq(ev.high_watermark, hi);
        ck_assert_int_eq(ev.first_unhandled, 40);
        ck_assert_int_eq(ev.gap, lo - 40);
        ck_assert_int_eq(ev.replay_if_earliest, 0);
        ck_assert_int_eq(ev.skip_if_latest, hi - 40);
        ck_assert_int_eq(cs_committed(cl, "g-lag", "t-lag", 0, NULL, 0), 40);
        /* earliest skips exactly the gap: the next handled offset is lo. */
        ck_assert_int_eq(rbk_consumer_resolve(c, "t-lag", 0,
                                              RBK_RESOLVE_EARLIEST, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(lag_count(&l, 40, hi) == hi - lo, 60000));
        ck_assert_int_eq(lag_first_from(&l, 40), lo);
        ck_assert_int_eq(lag_count(&l, 40, lo), 0);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-lag", "t-lag", 0, NULL, 0), hi);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cs_events_free(l.evs);
        g_array_free(l.offsets, TRUE);
        g_mutex_clear(&l.lock);
        g_cond_clear(&l.cond);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ dead letters */

typedef struct {
        cs_rec_t *rec;
        volatile gint fail; /* offsets of partition 0 below this fail */
} dq_t;

static rbk_verdict_t h_dq(const rbk_message_t *m, void *opaque) {
        dq_t *d = opaque;
        cs_rec_add(d->rec, m);
        return m->partition == 0 && m->offset < g_atomic_int_get(&d->fail)
                   ? RBK_RETRY
                   : RBK_HANDLED;
}

START_TEST(revoke_never_frees_a_dead_letter_in_flight) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-dr", 2);
        cs_topic(cl, "t-dr-dlq", 1);
        for (int p = 0; p < 2; p++) {
                ck_assert_int_eq(
                    rd_kafka_mock_partition_set_leader(cl->mc, "t-dr", p, 1),
                    0);
                cs_produce(cl, "t-dr", p, 0, 10, "dr");
        }
        /* The dead-letter topic's leader answers slowly. */
        ck_assert_int_eq(
            rd_kafka_mock_partition_set_leader(cl->mc, "t-dr-dlq", 0, 3), 0);
        ck_assert_int_eq(rd_kafka_mock_broker_set_rtt(cl->mc, 3, 300), 0);
        rbk_conf_t *conf = cs_conf(cl, "g-dr");
        cs_set(conf, "rbk.consumer.giveup", "deadletter");
        cs_set(conf, "rbk.consumer.deadletter.topic", "t-dr-dlq");
        cs_set(conf, "rbk.consumer.retry.max.attempts", "1");
        cs_set(conf, "rbk.consumer.revoke.timeout.ms", "50");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-dr");
        dq_t d = {.rec = cs_rec_new(), .fail = 10};
        ck_assert_int_eq(rbk_consumer_start(c, h_dq, &d), RBK_OK);
        ck_assert(CS_WAIT(cs_rec_has(d.rec, "dr-0-0"), 60000));
        /* Revokes land while dead letters of partition 0 are in flight
         * (each takes ~600 ms; the revoke waits 50 ms for it). */
        int iterations = (int)rbk_test_scale(12, 4);
        for (int i = 0; i < iterations; i++) {
                ck_assert(CS_WAIT(({
                                          g_mutex_lock(&c->lock);
                                          int n = c->dlq_inflight;
                                          g_mutex_unlock(&c->lock);
                                          n > 0 ||
                                              cs_events_count(
                                                  evs, RBK_EV_DEADLETTERED) >=
                                                  10;
                                  }),
                                  20000));
                cs_revoke_and_assign(c);
        }
        /* Then it settles: every message of partition 0 is dead-lettered
         * (some more than once: a revoked one is read again), partition 1
         * is handled, and the commits cover both. */
        ck_assert(CS_WAIT(cs_committed(cl, "g-dr", "t-dr", 0, NULL, 0) == 10 &&
                              cs_committed(cl, "g-dr", "t-dr", 1, NULL, 0) ==
                                  10,
                          90000));
        ck_assert_int_eq(cs_rec_missing(d.rec, "dr", 2, 10, NULL, 0), 0);
        ck_assert_int_eq(cs_events_count(evs, RBK_EV_DEADLETTER_FAILED), 0);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        cs_rec_free(d.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ late reports */

static rbk_verdict_t h_rec(const rbk_message_t *m, void *opaque) {
        cs_rec_add(opaque, m);
        return RBK_HANDLED;
}

/* Reports made before the partition's current position (a "no valid
 * position" -1001, an offset already received) change nothing: no
 * quarantine, no re-assign, no message handed twice. */
START_TEST(stale_reports_change_nothing) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-st", 1);
        cs_produce(cl, "t-st", 0, 0, 10, "st");
        rbk_conf_t *conf = cs_conf(cl, "g-st");
        cs_set(conf, "auto.commit.interval.ms", "60000"); /* nothing committed */
        cs_set(conf, "rbk.dedup.enable", "false"); /* a replay would show */
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-st");
        cs_rec_t *rec = cs_rec_new();
        ck_assert_int_eq(rbk_consumer_start(c, h_rec, rec), RBK_OK);
        ck_assert(CS_WAIT(cs_rec_total(rec) == 10, 60000));
        /* The group's first start applied its initial position once. */
        int initial = cs_events_count(evs, RBK_EV_INITIAL_POSITION);
        ck_assert_int_le(initial, 1);
        cs_inject_reset(c, "t-st", 0, RD_KAFKA_OFFSET_INVALID);
        cs_inject_reset(c, "t-st", 0, 3);
        ck_assert(!CS_WAIT(cs_rec_total(rec) > 10 ||
                               cs_events_count(evs, RBK_EV_OFFSET_OUT_OF_RANGE) >
                                   0 ||
                               cs_events_count(evs, RBK_EV_INITIAL_POSITION) >
                                   initial,
                           2000));
        cs_produce(cl, "t-st", 0, 10, 2, "st");
        ck_assert(CS_WAIT(cs_rec_total(rec) == 12, 20000));
        ck_assert_int_eq(cs_rec_distinct(rec), 12);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ stress */

/* Shared by every member of the stress group. */
typedef struct {
        GMutex lock;
        GHashTable *owner;    /* "p" -> member index owning it, absent: none */
        GHashTable *handled;  /* id -> 1, handled (HANDLED) by someone */
        GHashTable *attempts; /* id -> attempts seen */
        int after_revoke;     /* a handler ran on a partition not assigned */
        cs_events_t *evs;     /* every member's events */
} rs_t;

typedef struct {
        rs_t *rs;
        int idx;
        rbk_consumer_t *c;
        rbk_conf_t *conf;
} rs_member_t;

static void rs_rebalance(rbk_rebalance_t what, const char *topic,
                         int32_t partition, void *opaque) {
        rs_member_t *m = opaque;
        char k[16];
        snprintf(k, sizeof(k), "%d", (int)partition);
        g_mutex_lock(&m->rs->lock);
        if (what == RBK_ASSIGNED)
                g_hash_table_replace(m->rs->owner, g_strdup(k),
                                     GINT_TO_POINTER(m->idx + 1));
        else if (GPOINTER_TO_INT(g_hash_table_lookup(m->rs->owner, k)) ==
                 m->idx + 1)
                g_hash_table_remove(m->rs->owner, k);
        g_mutex_unlock(&m->rs->lock);
}

/* Ids "rs-<p>-<i>": i % 17 == 5 always fails (dead-lettered), i % 13 == 7
 * fails once. */
static rbk_verdict_t h_rs(const rbk_message_t *msg, void *opaque) {
        rs_member_t *m = opaque;
        char k[16];
        snprintf(k, sizeof(k), "%d", (int)msg->partition);
        int i = (int)msg->offset;
        g_mutex_lock(&m->rs->lock);
        if (GPOINTER_TO_INT(g_hash_table_lookup(m->rs->owner, k)) != m->idx + 1)
                m->rs->after_revoke++;
        g_mutex_unlock(&m->rs->lock);
        rbk_verdict_t v = RBK_HANDLED;
        if (i % 17 == 5 || (i % 13 == 7 && msg->attempt == 1))
                v = RBK_RETRY;
        if (v == RBK_HANDLED && msg->id) {
                g_mutex_lock(&m->rs->lock);
                g_hash_table_replace(m->rs->handled, g_strdup(msg->id),
                                     GINT_TO_POINTER(1));
                g_mutex_unlock(&m->rs->lock);
        }
        return v;
}

static void rs_join(rs_member_t *m, rs_t *rs, int idx, cs_cluster_t *cl) {
        m->rs = rs;
        m->idx = idx;
        m->conf = cs_conf(cl, "g-rs");
        cs_set(m->conf, "rbk.consumer.giveup", "deadletter");
        cs_set(m->conf, "rbk.consumer.deadletter.topic", "t-rs-dlq");
        cs_set(m->conf, "rbk.consumer.retry.max.attempts", "2");
        cs_set(m->conf, "rbk.consumer.retry.backoff.ms", "5");
        cs_set(m->conf, "rbk.consumer.workers", "2");
        /* The out-of-range report the test injects names the log end, which
         * the log holds: read again it would be disproved and resumed, not
         * quarantined, and the test wants a quarantine. */
        cs_set(m->conf, "rbk.consumer.out.of.range.recheck.ms", "0");
        rbk_conf_set_hook(m->conf, cs_hook, rs->evs);
        rbk_conf_set_rebalance_cb(m->conf, rs_rebalance, m);
        m->c = cs_consumer_subscribed(m->conf, "t-rs");
        ck_assert_int_eq(rbk_consumer_start(m->c, h_rs, m), RBK_OK);
}

static void rs_leave(rs_member_t *m) {
        rbk_consumer_stop(m->c);
        ck_assert_int_eq(rbk_consumer_close(m->c, 20000), RBK_OK);
        rbk_consumer_destroy(m->c);
        rbk_conf_destroy(m->conf);
        m->c = NULL;
}

static size_t rs_handled(rs_t *rs) {
        g_mutex_lock(&rs->lock);
        size_t n = g_hash_table_size(rs->handled);
        g_mutex_unlock(&rs->lock);
        return n;
}

/* Resolves every open quarantine of @m with `committed` (the condition was
 * a transient fetch error). */
static void rs_resolve(rs_member_t *m) {
        rbk_quarantine_t q[8];
        size_t n = rbk_consumer_quarantined(m->c, q, 8);
        for (size_t i = 0; i < n && i < 8; i++) {
                char e[512];
                rbk_err_t err = rbk_consumer_resolve(m->c, q[i].topic,
                                                     q[i].partition,
                                                     RBK_RESOLVE_COMMITTED, 0,
                                                     e, sizeof(e));
                ck_assert_msg(err == RBK_OK || err == RBK_ERR_NOT_FOUND ||
                                  err == RBK_ERR_NOT_QUARANTINED,
                              "%s", e);
        }
}

/* Members join and leave while handlers retry, give messages up to a
 * dead-letter topic and a quarantine is resolved: every message is handled
 * or dead-lettered, and no handler runs on a partition its member does not
 * hold. */
START_TEST(rebalance_stress) {
        const int n = (int)rbk_test_scale(120, 40), parts = 4;
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-rs", parts);
        cs_topic(cl, "t-rs-dlq", 1);
        for (int p = 0; p < parts; p++) {
                ck_assert_int_eq(
                    rd_kafka_mock_partition_set_leader(cl->mc, "t-rs", p, 1),
                    0);
                cs_produce(cl, "t-rs", p, 0, n, "rs");
        }
        rs_t rs;
        memset(&rs, 0, sizeof(rs));
        g_mutex_init(&rs.lock);
        rs.owner = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        rs.handled =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        rs.evs = cs_events_new();
        int poison = 0;
        for (int i = 0; i < n; i++)
                poison += i % 17 == 5;
        size_t want = (size_t)((n - poison) * parts);

        rs_member_t m[3];
        memset(m, 0, sizeof(m));
        rs_join(&m[0], &rs, 0, cl);
        ck_assert(CS_WAIT(rs_handled(&rs) >= want / 8, 60000));
        rs_join(&m[1], &rs, 1, cl);
        /* Once both hold partitions, the first member's fetch of one of
         * its partitions fails out of range (the report as librdkafka
         * makes it): a quarantine during the rebalances, resolved by
         * whoever holds it. */
        ck_assert(CS_WAIT(({
                                  g_mutex_lock(&rs.lock);
                                  int both = 0;
                                  GHashTableIter it;
                                  gpointer v;
                                  g_hash_table_iter_init(&it, rs.owner);
                                  while (g_hash_table_iter_next(&it, NULL, &v))
                                          both |= 1 << (GPOINTER_TO_INT(v) - 1);
                                  g_mutex_unlock(&rs.lock);
                                  both == 3;
                          }),
                          60000));
        int qp = -1;
        g_mutex_lock(&rs.lock);
        for (int p = 0; p < parts && qp < 0; p++) {
                char k[16];
                snprintf(k, sizeof(k), "%d", p);
                if (GPOINTER_TO_INT(g_hash_table_lookup(rs.owner, k)) == 1)
                        qp = p;
        }
        g_mutex_unlock(&rs.lock);
        ck_assert_int_ge(qp, 0);
        cs_inject_reset(m[0].c, "t-rs", qp, n);
        ck_assert(CS_WAIT(({
                                  rs_resolve(&m[0]);
                                  rs_resolve(&m[1]);
                                  cs_events_count(rs.evs,
                                                  RBK_EV_QUARANTINE_RESOLVED) >
                                      0;
                          }),
                          60000));
        ck_assert(CS_WAIT(rs_handled(&rs) >= want / 3, 60000));
        rs_leave(&m[0]);
        rs_join(&m[2], &rs, 2, cl);
        ck_assert(CS_WAIT(rs_handled(&rs) >= want / 2, 60000));
        rs_leave(&m[1]);
        rs_join(&m[0], &rs, 0, cl);
        /* Everything ends handled or dead-lettered. */
        int done = CS_WAIT(({
                                   for (int i = 0; i < 3; i++)
                                           if (m[i].c)
                                                   rs_resolve(&m[i]);
                                   rs_handled(&rs) == want;
                           }),
                           120000);
        ck_assert_msg(done, "handled %zu of %zu", rs_handled(&rs), want);
        for (int p = 0; p < parts; p++)
                for (int i = 0; i < n; i++) {
                        if (i % 17 != 5)
                                continue;
                        char key[128];
                        snprintf(key, sizeof(key), "g-rs/t-rs/%d/deadletter/%d",
                                 p, i);
                        ck_assert_msg(CS_WAIT(({
                                                      int f = 0;
                                                      g_mutex_lock(
                                                          &rs.evs->lock);
                                                      for (guint j = 0;
                                                           j < rs.evs->evs->len;
                                                           j++) {
                                                              cs_ev_t *ev =
                                                                  g_ptr_array_index(
                                                                      rs.evs
                                                                          ->evs,
                                                                      j);
                                                              f |= ev->ev.cls ==
                                                                       RBK_EV_DEADLETTERED &&
                                                                   ev->incident_key &&
                                                                   !strcmp(
                                                                       ev->incident_key,
                                                                       key);
                                                      }
                                                      g_mutex_unlock(
                                                          &rs.evs->lock);
                                                      f;
                                              }),
                                              30000),
                                      "%s never dead-lettered", key);
                }
        g_mutex_lock(&rs.lock);
        ck_assert_int_eq(rs.after_revoke, 0);
        g_mutex_unlock(&rs.lock);
        ck_assert_int_eq(cs_events_count(rs.evs, RBK_EV_DEADLETTER_FAILED), 0);
        /* Commits made while the group rebalances fail (the next owner
         * reads those messages again): members leave one by one, and the
         * last one, alone, commits everything. */
        int last = -1;
        for (int i = 0; i < 3; i++)
                if (m[i].c)
                        last = i;
        for (int i = 0; i < last; i++)
                if (m[i].c)
                        rs_leave(&m[i]);
        ck_assert(CS_WAIT(({
                                  int all = 1;
                                  for (int p = 0; p < parts && all; p++)
                                          all = cs_committed(cl, "g-rs", "t-rs",
                                                             p, NULL, 0) == n;
                                  all;
                          }),
                          90000));
        rs_leave(&m[last]);
        for (int p = 0; p < parts; p++)
                ck_assert_int_eq(cs_committed(cl, "g-rs", "t-rs", p, NULL, 0),
                                 n);
        g_hash_table_destroy(rs.owner);
        g_hash_table_destroy(rs.handled);
        cs_events_free(rs.evs);
        g_mutex_clear(&rs.lock);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("consumer_part");
        RBK_TCASE(s, stale_done_is_refused, 120);
        RBK_TCASE(s, lagging_consumer_handles_what_it_fetched, 180);
        RBK_TCASE(s, revoke_never_frees_a_dead_letter_in_flight, 180);
        RBK_TCASE(s, stale_reports_change_nothing, 120);
        RBK_TCASE(s, rebalance_stress, 300);
        return s;
}

RBK_TEST_MAIN()
