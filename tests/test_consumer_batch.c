/* Batch handlers: batches of one partition in offset order, duplicates
 * dropped before a batch is built, offsets stored up to the last handled
 * message, a partial batch retried from its first unhandled message, a
 * poison message dead-lettered, and a batch that waits rbk.consumer.batch.
 * max.ms for more. */
#include "consumer_support.h"
#include "harness.h"

typedef struct {
        cs_rec_t *rec;
        GMutex lock;
        GArray *sizes;           /* size of each batch */
        int mixed;               /* a batch held more than one partition */
        int unordered;           /* a batch was not in offset order */
        volatile gint fail_once; /* p0: handle half of the first batch */
        volatile gint poison_at; /* p0 offset answered RBK_DEADLETTER, -1 */
} bt_t;

static size_t h_batch(const rbk_message_t *const *msgs, size_t n,
                      rbk_verdict_t *rest, void *opaque) {
        bt_t *b = opaque;
        g_mutex_lock(&b->lock);
        guint sz = (guint)n;
        g_array_append_val(b->sizes, sz);
        for (size_t i = 1; i < n; i++) {
                b->mixed |= msgs[i]->partition != msgs[0]->partition;
                b->unordered |= msgs[i]->offset != msgs[i - 1]->offset + 1;
        }
        g_mutex_unlock(&b->lock);
        size_t done = n;
        if (msgs[0]->partition == 0 && n > 1 &&
            g_atomic_int_compare_and_exchange(&b->fail_once, 1, 0)) {
                done = n / 2;
                *rest = RBK_RETRY;
        }
        for (size_t i = 0; i < done; i++) {
                if (msgs[i]->partition == 0 &&
                    msgs[i]->offset == g_atomic_int_get(&b->poison_at)) {
                        rbk_message_set_error(msgs[i], "poison in a batch");
                        *rest = RBK_DEADLETTER;
                        done = i;
                        break;
                }
        }
        for (size_t i = 0; i < done; i++)
                cs_rec_add(b->rec, msgs[i]);
        return done;
}

static void bt_init(bt_t *b) {
        memset(b, 0, sizeof(*b));
        b->rec = cs_rec_new();
        g_mutex_init(&b->lock);
        b->sizes = g_array_new(FALSE, FALSE, sizeof(guint));
        b->poison_at = -1;
}

static void bt_clear(bt_t *b) {
        cs_rec_free(b->rec);
        g_array_free(b->sizes, TRUE);
        g_mutex_clear(&b->lock);
}

static guint bt_max(bt_t *b) {
        guint m = 0;
        g_mutex_lock(&b->lock);
        for (guint i = 0; i < b->sizes->len; i++)
                m = MAX(m, g_array_index(b->sizes, guint, i));
        g_mutex_unlock(&b->lock);
        return m;
}

static rbk_consumer_t *bt_start(cs_cluster_t *cl, rbk_conf_t *conf, bt_t *b) {
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-b");
        ck_assert_int_eq(rbk_consumer_start_batch(c, h_batch, b), RBK_OK);
        return c;
}

START_TEST(batches_in_order_with_a_partial_retry) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-b", 2);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-b", p, 0, 50, "b");
        /* Copies of ids already written: dropped before any batch. */
        cs_produce(cl, "t-b", 1, 0, 5, "b");
        rbk_conf_t *conf = cs_conf(cl, "g-b");
        cs_set(conf, "rbk.consumer.batch.max.messages", "16");
        cs_set(conf, "rbk.consumer.retry.backoff.ms", "10");
        bt_t b;
        bt_init(&b);
        b.fail_once = 1;
        rbk_consumer_t *c = bt_start(cl, conf, &b);
        ck_assert(CS_WAIT(cs_rec_distinct(b.rec) == 100, 60000));
        ck_assert(!CS_WAIT(cs_rec_total(b.rec) > 100, 500));
        ck_assert_int_eq(b.rec->order_errors, 0);
        ck_assert_int_le(bt_max(&b), 16);
        ck_assert_int_gt(bt_max(&b), 1);
        ck_assert_int_eq(b.mixed, 0);
        ck_assert_int_eq(b.unordered, 0);
        ck_assert_int_eq(g_atomic_int_get(&b.fail_once), 0);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        ck_assert_uint_eq(st.duplicates_dropped, 5);
        ck_assert_uint_eq(st.handled, 100);
        ck_assert_uint_ge(st.retried, 1);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-b", "t-b", 0, NULL, 0), 50);
        ck_assert_int_eq(cs_committed(cl, "g-b", "t-b", 1, NULL, 0), 55);
        rbk_consumer_destroy(c);
        bt_clear(&b);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

START_TEST(poison_in_a_batch_is_dead_lettered) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-b", 1);
        cs_topic(cl, "t-b-dlq", 1);
        cs_produce(cl, "t-b", 0, 0, 30, "p");
        rbk_conf_t *conf = cs_conf(cl, "g-bp");
        cs_set(conf, "rbk.consumer.batch.max.messages", "8");
        cs_set(conf, "rbk.consumer.giveup", "deadletter");
        cs_set(conf, "rbk.consumer.deadletter.topic", "t-b-dlq");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        bt_t b;
        bt_init(&b);
        b.poison_at = 11;
        rbk_consumer_t *c = bt_start(cl, conf, &b);
        ck_assert(CS_WAIT(cs_rec_distinct(b.rec) == 29, 60000));
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_DEADLETTERED) == 1,
                          20000));
        ck_assert(!cs_rec_has(b.rec, "p-0-11"));
        rbk_event_t ev;
        ck_assert(cs_events_get(evs, RBK_EV_DEADLETTERED, 0, &ev, NULL, 0));
        ck_assert_int_eq(ev.offset, 11);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-bp", "t-b", 0, NULL, 0), 30);
        rbk_consumer_destroy(c);
        bt_clear(&b);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* A partition with fewer messages than a batch goes out once its first
 * message waited rbk.consumer.batch.max.ms: together, not one by one. */
START_TEST(a_short_batch_waits_then_goes) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-b", 1);
        rbk_conf_t *conf = cs_conf(cl, "g-bw");
        cs_set(conf, "rbk.consumer.batch.max.messages", "1000");
        cs_set(conf, "rbk.consumer.batch.max.ms", "300");
        bt_t b;
        bt_init(&b);
        rbk_consumer_t *c = bt_start(cl, conf, &b);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert(CS_WAIT((rbk_consumer_stats(c, &st), st.assigned_partitions ==
                                                            1),
                          60000));
        /* One message: held back for the wait, then handed out alone. */
        cs_produce(cl, "t-b", 0, 0, 1, "w");
        gint64 t0 = g_get_monotonic_time();
        ck_assert(CS_WAIT(cs_rec_distinct(b.rec) == 1, 20000));
        ck_assert_int_ge(g_get_monotonic_time() - t0, 100 * 1000); /* of 300 */
        /* A burst: one batch. */
        cs_produce(cl, "t-b", 0, 1, 5, "w");
        ck_assert(CS_WAIT(cs_rec_distinct(b.rec) == 6, 20000));
        g_mutex_lock(&b.lock);
        ck_assert_uint_eq(b.sizes->len, 2);
        ck_assert_uint_eq(g_array_index(b.sizes, guint, 0), 1);
        ck_assert_uint_eq(g_array_index(b.sizes, guint, 1), 5);
        g_mutex_unlock(&b.lock);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        bt_clear(&b);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* The poll API's batches: handed out together, a partial verdict retried
 * from the first unhandled message, a stale batch refused. */
START_TEST(poll_batches) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-b", 1);
        cs_produce(cl, "t-b", 0, 0, 40, "q");
        cs_produce(cl, "t-b", 0, 0, 3, "q"); /* copies: dropped */
        rbk_conf_t *conf = cs_conf(cl, "g-pb");
        cs_set(conf, "rbk.consumer.retry.backoff.ms", "10");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-b");
        rbk_message_t *m[16];
        size_t n = 0;
        ck_assert_int_eq(rbk_consumer_poll_batch(c, 100, m, 0, &n),
                         RBK_ERR_INVALID_ARG);
        for (int i = 0; i < 600 && !n; i++)
                ck_assert_int_eq(rbk_consumer_poll_batch(c, 100, m, 16, &n),
                                 RBK_OK);
        ck_assert_uint_ge(n, 6);
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(m[i]->offset, (int64_t)i);
        /* Five handled, the sixth to be retried. */
        ck_assert_int_eq(rbk_consumer_done_batch(c, m, n, 5, RBK_RETRY),
                         RBK_OK);
        ck_assert_int_eq(rbk_consumer_done_batch(c, m, n, 5, RBK_RETRY),
                         RBK_ERR_STATE);
        int64_t next = 5, handled = 5;
        int saw_retry = 0;
        while (handled < 40) {
                n = 0;
                ck_assert_int_eq(rbk_consumer_poll_batch(c, 5000, m, 16, &n),
                                 RBK_OK);
                ck_assert_uint_gt(n, 0);
                ck_assert_int_eq(m[0]->offset, next);
                if (m[0]->offset == 5) {
                        ck_assert_int_eq(m[0]->attempt, 2);
                        saw_retry = 1;
                }
                for (size_t i = 1; i < n; i++)
                        ck_assert_int_eq(m[i]->offset, m[i - 1]->offset + 1);
                ck_assert_int_eq(rbk_consumer_done_batch(c, m, n, n,
                                                         RBK_RETRY),
                                 RBK_OK);
                next += (int64_t)n;
                handled += (int64_t)n;
        }
        ck_assert(saw_retry);
        /* The copies are dropped: nothing more comes. */
        n = 0;
        ck_assert_int_eq(rbk_consumer_poll_batch(c, 500, m, 16, &n), RBK_OK);
        ck_assert_uint_eq(n, 0);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        ck_assert_uint_eq(st.duplicates_dropped, 3);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-pb", "t-b", 0, NULL, 0), 43);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("consumer_batch");
        RBK_TCASE(s, batches_in_order_with_a_partial_retry, 120);
        RBK_TCASE(s, poison_in_a_batch_is_dead_lettered, 120);
        RBK_TCASE(s, a_short_batch_waits_then_goes, 120);
        RBK_TCASE(s, poll_batches, 120);
        return s;
}

RBK_TEST_MAIN()
