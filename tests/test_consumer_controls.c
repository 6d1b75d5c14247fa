/* What a service author steers: pause and resume a partition (kept across
 * a rebalance, independent of quarantine), an audited seek, a dead-letter
 * verdict with a reason, and the dead-letter limit. */
#include "consumer_internal.h" /* rbk__q_on_reset, the revoke from the test */
#include "consumer_support.h"
#include "harness.h"

typedef struct {
        cs_rec_t *rec;
        volatile gint deadletter_below; /* p0 offsets below: RBK_DEADLETTER */
        volatile gint deadletter_all;   /* every p0 message: RBK_DEADLETTER */
} ctl_t;

static rbk_verdict_t h_ctl(const rbk_message_t *m, void *opaque) {
        ctl_t *x = opaque;
        if (m->partition == 0 &&
            (g_atomic_int_get(&x->deadletter_all) ||
             m->offset < g_atomic_int_get(&x->deadletter_below))) {
                char why[64];
                snprintf(why, sizeof(why), "poison at %d", (int)m->offset);
                ck_assert_int_eq(rbk_message_set_error(m, why), RBK_OK);
                cs_rec_add(x->rec, m);
                return RBK_DEADLETTER;
        }
        cs_rec_add(x->rec, m);
        return RBK_HANDLED;
}

static int count_p(cs_rec_t *r, int p) {
        char pre[32];
        snprintf(pre, sizeof(pre), "t-c/%d/", p);
        int n = 0;
        g_mutex_lock(&r->lock);
        for (guint i = 0; i < r->log->len; i++)
                n += g_str_has_prefix(g_ptr_array_index(r->log, i), pre);
        g_mutex_unlock(&r->lock);
        return n;
}

static int stats_has(rbk_consumer_t *c, const char *needle) {
        char *js = rbk_consumer_stats_json(c);
        int y = js && strstr(js, needle) != NULL;
        rbk_free(js);
        return y;
}

static rbk_consumer_t *start(cs_cluster_t *cl, rbk_conf_t *conf, ctl_t *x) {
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-c");
        ck_assert_int_eq(rbk_consumer_start(c, h_ctl, x), RBK_OK);
        return c;
}

/* ------------------------------------------------------------ pause */

START_TEST(pause_holds_one_partition_across_rebalance_and_quarantine) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-c", 2);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-c", p, 0, 10, "c");
        rbk_conf_t *conf = cs_conf(cl, "g-pause");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        ctl_t x = {.rec = cs_rec_new()};
        rbk_consumer_t *c = start(cl, conf, &x);
        ck_assert(CS_WAIT(count_p(x.rec, 0) == 10 && count_p(x.rec, 1) == 10,
                          60000));
        ck_assert_int_eq(rbk_consumer_pause(c, "t-c", 0), RBK_OK);
        ck_assert_int_eq(rbk_consumer_pause(c, "t-c", 0), RBK_ERR_STATE);
        ck_assert_int_eq(rbk_consumer_pause(c, "t-c", 7), RBK_ERR_NOT_FOUND);
        ck_assert_int_eq(rbk_consumer_resume(c, "t-c", 1), RBK_ERR_STATE);
        ck_assert_int_eq(rbk_consumer_pause(NULL, "t-c", 0),
                         RBK_ERR_INVALID_ARG);
        ck_assert(stats_has(c, "\"app_paused\":true"));
        /* rbk-admin status reads the pause from the committed offset. */
        char meta[256];
        ck_assert_int_eq(cs_committed(cl, "g-pause", "t-c", 0, meta,
                                      sizeof(meta)),
                         10);
        ck_assert_msg(g_str_has_prefix(meta, "rbk-paused:"), "%s", meta);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-c", p, 10, 5, "c");
        /* The other partition flows; the paused one does not. */
        ck_assert(CS_WAIT(count_p(x.rec, 1) == 15, 20000));
        ck_assert(!CS_WAIT(count_p(x.rec, 0) > 10, 500));

        /* The pause survives the partition coming back. */
        cs_revoke_and_assign(c);
        cs_produce(cl, "t-c", 1, 15, 1, "c");
        ck_assert(CS_WAIT(count_p(x.rec, 1) >= 16, 20000));
        ck_assert_int_eq(count_p(x.rec, 0), 10);
        ck_assert(stats_has(c, "\"app_paused\":true"));

        /* A quarantine of the paused partition: resolving it keeps the
         * pause; resuming releases only the pause. */
        int64_t committed = cs_committed(cl, "g-pause", "t-c", 0, NULL, 0);
        ck_assert_int_eq(committed, 10);
        cs_inject_reset(c, "t-c", 0, 15);
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              1,
                          20000));
        ck_assert_int_eq(rbk_consumer_resolve(c, "t-c", 0,
                                              RBK_RESOLVE_COMMITTED, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(!CS_WAIT(count_p(x.rec, 0) > 10, 500));
        ck_assert(stats_has(c, "\"app_paused\":true"));
        ck_assert_int_eq(rbk_consumer_resume(c, "t-c", 0), RBK_OK);
        ck_assert(CS_WAIT(count_p(x.rec, 0) == 15, 20000));
        ck_assert_int_eq(rbk_consumer_resume(c, "t-c", 0), RBK_ERR_STATE);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        cs_rec_free(x.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ seek */

START_TEST(seek_is_audited_and_moves_exactly) {
        char e[512], key[256];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-c", 1);
        cs_produce(cl, "t-c", 0, 0, 30, "s");
        rbk_conf_t *conf = cs_conf(cl, "g-seek");
        /* A replay of ids this consumer handled would be dropped by dedup. */
        cs_set(conf, "rbk.dedup.enable", "false");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        ctl_t x = {.rec = cs_rec_new()};
        rbk_consumer_t *c = start(cl, conf, &x);
        ck_assert(CS_WAIT(count_p(x.rec, 0) == 30, 60000));
        ck_assert_int_eq(rbk_consumer_seek(c, "t-c", 0, 1000, e, sizeof(e)),
                         RBK_ERR_OUT_OF_RANGE);
        ck_assert_ptr_nonnull(strstr(e, "watermarks"));
        ck_assert_int_eq(rbk_consumer_seek(c, "t-c", 3, 0, e, sizeof(e)),
                         RBK_ERR_NOT_FOUND);
        ck_assert_int_eq(rbk_consumer_seek(c, "t-c", 0, -7, e, sizeof(e)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_consumer_seek(c, "t-c", 0, 10, e, sizeof(e)),
                         RBK_OK);
        /* Committed at once, and 10..29 handed again. */
        ck_assert_int_ge(cs_committed(cl, "g-seek", "t-c", 0, key,
                                      sizeof(key)),
                         10);
        ck_assert(CS_WAIT(count_p(x.rec, 0) == 50, 20000));
        rbk_event_t ev;
        ck_assert_int_eq(cs_events_count(evs, RBK_EV_POSITION_MOVED), 1);
        ck_assert(cs_events_get(evs, RBK_EV_POSITION_MOVED, 0, &ev, NULL, 0));
        ck_assert_int_eq(ev.offset, 10);
        ck_assert_int_eq(ev.first_unhandled, 30);
        ck_assert_int_eq(ev.low_watermark, 0);
        ck_assert_int_eq(ev.high_watermark, 30);
        /* The end: nothing more until something new arrives. */
        ck_assert_int_eq(
            rbk_consumer_seek(c, "t-c", 0, RBK_LATEST, e, sizeof(e)), RBK_OK);
        ck_assert(!CS_WAIT(count_p(x.rec, 0) > 50, 500));
        cs_produce(cl, "t-c", 0, 30, 2, "s");
        ck_assert(CS_WAIT(count_p(x.rec, 0) == 52, 20000));
        /* By time: nothing at or after a time far ahead, so the end (the
         * mock answers every lookup by time so; a broker finds the
         * offset). A negative time is refused. */
        ck_assert_int_eq(rbk_consumer_seek_timestamp(c, "t-c", 0, -5, e,
                                                     sizeof(e)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_consumer_seek(c, "t-c", 0, 31, e, sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(count_p(x.rec, 0) == 53, 20000));
        ck_assert_int_eq(rbk_consumer_seek_timestamp(c, "t-c", 0,
                                                     INT64_C(4102444800000),
                                                     e, sizeof(e)),
                         RBK_OK);
        ck_assert_int_eq(cs_events_count(evs, RBK_EV_POSITION_MOVED), 4);
        ck_assert(cs_events_get(evs, RBK_EV_POSITION_MOVED, 3, &ev, NULL, 0));
        ck_assert_int_eq(ev.offset, 32);
        ck_assert(!CS_WAIT(count_p(x.rec, 0) > 53, 500));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-seek", "t-c", 0, NULL, 0), 32);
        rbk_consumer_destroy(c);
        cs_rec_free(x.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ dead letters */

/* Reads the dead letters of topic t-c-dlq (partition 0), returning their
 * rbk-dlq-reason and rbk-dlq-attempts headers as "reason|attempts". */
static int dlq_read(cs_cluster_t *cl, GPtrArray *out, int want) {
        char e[512];
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        rd_kafka_conf_set(rc, "bootstrap.servers", cl->bootstraps, e, sizeof(e));
        rd_kafka_conf_set(rc, "group.id", "dlq-reader", e, sizeof(e));
        rd_kafka_conf_set_log_cb(rc, cs_log_quiet);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        ck_assert(rk != NULL);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, "t-c-dlq", 0)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        gint64 dl = g_get_monotonic_time() + cs_ms(20000) * 1000;
        while ((int)out->len < want && g_get_monotonic_time() < dl) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                rd_kafka_headers_t *h;
                const void *r = NULL, *a = NULL;
                size_t rs = 0, as = 0;
                if (!m->err && !rd_kafka_message_headers(m, &h)) {
                        rd_kafka_header_get_last(h, "rbk-dlq-reason", &r, &rs);
                        rd_kafka_header_get_last(h, "rbk-dlq-attempts", &a,
                                                 &as);
                        g_ptr_array_add(out, g_strdup_printf(
                                                 "%.*s|%.*s", (int)rs,
                                                 r ? (const char *)r : "",
                                                 (int)as,
                                                 a ? (const char *)a : ""));
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        return (int)out->len;
}

START_TEST(deadletter_verdict_and_limit) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-c", 2);
        cs_topic(cl, "t-c-dlq", 1);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-c", p, 0, 10, "d");
        rbk_conf_t *conf = cs_conf(cl, "g-dlv");
        cs_set(conf, "rbk.consumer.giveup", "deadletter");
        cs_set(conf, "rbk.consumer.deadletter.topic", "t-c-dlq");
        cs_set(conf, "rbk.consumer.deadletter.limit", "3");
        cs_set(conf, "rbk.consumer.deadletter.limit.window.ms", "600000");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        /* Offsets 0 and 1 of partition 0 are poison: dead-lettered at
         * once, with the handler's reason. */
        ctl_t x = {.rec = cs_rec_new(), .deadletter_below = 2};
        rbk_consumer_t *c = start(cl, conf, &x);
        ck_assert(CS_WAIT(count_p(x.rec, 0) == 10 && count_p(x.rec, 1) == 10,
                          60000));
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_DEADLETTERED) == 2,
                          20000));
        /* Each poison message went to the handler once: no retries. */
        ck_assert_int_eq(cs_rec_distinct(x.rec), 20);
        ck_assert_uint_eq(cs_rec_total(x.rec), 20);
        GPtrArray *dl = g_ptr_array_new_with_free_func(g_free);
        ck_assert_int_eq(dlq_read(cl, dl, 2), 2);
        ck_assert_str_eq(g_ptr_array_index(dl, 0), "poison at 0|1");
        ck_assert_str_eq(g_ptr_array_index(dl, 1), "poison at 1|1");

        /* A bad deploy: everything of partition 0 is poison. The third
         * dead letter in the window is one too many: held and paged. */
        g_atomic_int_set(&x.deadletter_all, 1);
        cs_produce(cl, "t-c", 0, 10, 5, "d");
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_DEADLETTER_LIMIT) == 1,
                          20000));
        ck_assert_int_eq(cs_events_count(evs, RBK_EV_DEADLETTERED), 3);
        ck_assert(CS_WAIT(stats_has(c, "\"held\":\"deadletter_limit\""),
                          5000));
        rbk_event_t ev;
        ck_assert(cs_events_get(evs, RBK_EV_DEADLETTER_LIMIT, 0, &ev, NULL, 0));
        ck_assert_int_eq(ev.offset, 11);
        ck_assert(CS_WAIT(cs_committed(cl, "g-dlv", "t-c", 0, NULL, 0) == 11,
                          10000));
        /* Partition 1 is not held. */
        cs_produce(cl, "t-c", 1, 10, 2, "d");
        ck_assert(CS_WAIT(count_p(x.rec, 1) == 12, 20000));
        /* Fixed: the operator releases it, the same message comes again. */
        g_atomic_int_set(&x.deadletter_all, 0);
        ck_assert_int_eq(rbk_consumer_resolve(c, "t-c", 0,
                                              RBK_RESOLVE_COMMITTED, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(cs_rec_has(x.rec, "d-0-14") &&
                              cs_committed(cl, "g-dlv", "t-c", 0, NULL, 0) ==
                                  15,
                          20000));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        g_ptr_array_free(dl, TRUE);
        cs_rec_free(x.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* With rbk.consumer.giveup=pause a poison message holds its partition at
 * once, with the reason in the page. */
START_TEST(deadletter_verdict_in_pause_mode_holds) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-c", 1);
        cs_produce(cl, "t-c", 0, 0, 5, "h");
        rbk_conf_t *conf = cs_conf(cl, "g-dlp");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        ctl_t x = {.rec = cs_rec_new(), .deadletter_below = 3};
        rbk_consumer_t *c = start(cl, conf, &x);
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_HANDLER_GAVE_UP) == 1,
                          60000));
        ck_assert(!CS_WAIT(count_p(x.rec, 0) > 1, 500));
        char msg[512];
        rbk_event_t ev;
        ck_assert(cs_events_get(evs, RBK_EV_HANDLER_GAVE_UP, 0, &ev, NULL, 0));
        ck_assert_int_eq(ev.offset, 0);
        g_mutex_lock(&evs->lock);
        for (guint i = 0; i < evs->evs->len; i++) {
                cs_ev_t *ce = g_ptr_array_index(evs->evs, i);
                if (ce->ev.cls == RBK_EV_HANDLER_GAVE_UP)
                        g_strlcpy(msg, ce->message, sizeof(msg));
        }
        g_mutex_unlock(&evs->lock);
        ck_assert_msg(strstr(msg, "poison at 0") != NULL, "%s", msg);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-dlp", "t-c", 0, NULL, 0) < 1, 1);
        rbk_consumer_destroy(c);
        cs_rec_free(x.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ patterns */

static rbk_verdict_t h_rec(const rbk_message_t *m, void *opaque) {
        cs_rec_add(opaque, m);
        return RBK_HANDLED;
}

/* A regex subscription is anchored after the configured prefix. */
START_TEST(pattern_subscription_stays_inside_the_prefix) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        const char *names[] = {"app.orders.a", "app.orders.b", "app.other",
                               "x.orders.c", "apporders.d"};
        for (int i = 0; i < 5; i++) {
                cs_topic(cl, names[i], 1);
                cs_produce(cl, names[i], 0, 0, 3, names[i]);
        }
        rbk_conf_t *conf = cs_conf(cl, "g-re");
        cs_set(conf, "rbk.prefix", "app.");
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        const char *bad[] = {"^orders(("};
        ck_assert_int_eq(rbk_consumer_subscribe(c, bad, 1, e, sizeof(e)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_ptr_nonnull(strstr(e, "does not compile"));
        const char *topics[] = {"^orders\\..*"};
        ck_assert_int_eq(rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)),
                         RBK_OK);
        cs_rec_t *rec = cs_rec_new();
        ck_assert_int_eq(rbk_consumer_start(c, h_rec, rec), RBK_OK);
        ck_assert(CS_WAIT(cs_rec_total(rec) == 6, 60000));
        ck_assert(!CS_WAIT(cs_rec_total(rec) > 6, 1000));
        ck_assert(cs_rec_has(rec, "app.orders.a-0-2"));
        ck_assert(cs_rec_has(rec, "app.orders.b-0-0"));
        /* Topic names handed back without the prefix. */
        g_mutex_lock(&rec->lock);
        ck_assert(g_str_has_prefix(g_ptr_array_index(rec->log, 0), "orders."));
        g_mutex_unlock(&rec->lock);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("consumer_controls");
        RBK_TCASE(s, pause_holds_one_partition_across_rebalance_and_quarantine,
                  120);
        RBK_TCASE(s, seek_is_audited_and_moves_exactly, 120);
        RBK_TCASE(s, deadletter_verdict_and_limit, 120);
        RBK_TCASE(s, deadletter_verdict_in_pause_mode_holds, 120);
        RBK_TCASE(s, pattern_subscription_stays_inside_the_prefix, 120);
        return s;
}

RBK_TEST_MAIN()
