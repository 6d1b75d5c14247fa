/* Watching a client in production: librdkafka's statistics and the
 * library's counters through the statistics callback, the Prometheus text
 * (checked with promtool when it is installed), the health calls, and the
 * OAUTHBEARER token refresh callback. Against the in-process mock cluster. */
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "consumer_support.h"
#include "harness.h"
#include "internal.h" /* rbk__prom_label, rbk__rdstats_brokers */
#include "producer_support.h"

static char *topic_name(const char *base) {
        static int n;
        return g_strdup_printf("%s-%d-%d", base, (int)getpid(), ++n);
}

/* ------------------------------------------------------------ promtool */

/* Runs `promtool check metrics` on @text when promtool is on PATH (scripts
 * and `make check-metrics` install it); returns 1 when it passed or is
 * absent, with its output in @out. */
static int promtool_ok(const char *text, char *out, size_t out_size) {
        out[0] = '\0';
        char *path = g_find_program_in_path("promtool");
        if (!path)
                return 1;
        const char *argv[] = {path, "check", "metrics", NULL};
        GError *err = NULL;
        GPid pid;
        int in_fd, out_fd;
        ck_assert(g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD |
                                               G_SPAWN_STDERR_TO_DEV_NULL,
                                           NULL, NULL, &pid, &in_fd, &out_fd,
                                           NULL, &err));
        g_free(path);
        size_t len = strlen(text);
        for (size_t off = 0; off < len;) {
                ssize_t w = write(in_fd, text + off, len - off);
                ck_assert(w > 0);
                off += (size_t)w;
        }
        close(in_fd);
        size_t got = 0;
        ssize_t r;
        while (got + 1 < out_size &&
               (r = read(out_fd, out + got, out_size - 1 - got)) > 0)
                got += (size_t)r;
        out[got] = '\0';
        close(out_fd);
        int status;
        waitpid(pid, &status, 0);
        g_spawn_close_pid(pid);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ------------------------------------------------------------ units */

START_TEST(label_values_escaped) {
        GString *l = g_string_new(NULL);
        rbk__prom_label(l, "topic", "a\"b\\c\nd");
        rbk__prom_label(l, "partition", "1");
        ck_assert_str_eq(l->str, "topic=\"a\\\"b\\\\c\\nd\",partition=\"1\"");
        GString *o = g_string_new(NULL);
        rbk__prom_family(o, "rbk_x_total", "counter", "a\\b\nc");
        rbk__prom_sample(o, "rbk_x_total", l->str, 3);
        rbk__prom_sample(o, "rbk_x_total", NULL, 0.25);
        ck_assert_str_eq(o->str, "# HELP rbk_x_total a\\\\b\\nc\n"
                                 "# TYPE rbk_x_total counter\n"
                                 "rbk_x_total{topic=\"a\\\"b\\\\c\\nd\","
                                 "partition=\"1\"} 3\n"
                                 "rbk_x_total 0.25\n");
        char pt[4096];
        ck_assert_msg(promtool_ok(o->str, pt, sizeof(pt)), "%s", pt);
        g_string_free(l, TRUE);
        g_string_free(o, TRUE);
}
END_TEST

START_TEST(broker_statistics_parsed) {
        const char *js =
            "{\"name\":\"rdkafka#producer-1\",\"ts\":1,\"brokers\":{"
            "\"127.0.0.1:1/bootstrap\":{\"name\":\"127.0.0.1:1/bootstrap\","
            "\"nodeid\":-1,\"state\":\"INIT\",\"rtt\":{\"min\":0,\"avg\":0}},"
            "\"127.0.0.1:2/2\":{\"name\":\"127.0.0.1:2/2\",\"nodeid\":2,"
            "\"state\":\"UP\",\"toppars\":{\"t-0\":{\"topic\":\"t\"}},"
            "\"rtt\":{\"min\":10,\"max\":900,\"avg\":1500,\"p99\":3}},"
            "\"x\":{\"name\":\"x\\\"y\",\"nodeid\":3,\"state\":\"DOWN\"}},"
            "\"topics\":{\"t\":{\"partitions\":[1,2,{\"a\":[true,null]}]}}}";
        GArray *b = rbk__rdstats_brokers(js);
        ck_assert_uint_eq(b->len, 3);
        rbk__broker_t *up = &g_array_index(b, rbk__broker_t, 1);
        ck_assert_str_eq(up->name, "127.0.0.1:2/2");
        ck_assert_int_eq(up->nodeid, 2);
        ck_assert_str_eq(up->state, "UP");
        ck_assert_int_eq(up->rtt_avg_us, 1500);
        ck_assert_str_eq(g_array_index(b, rbk__broker_t, 2).name, "x\"y");
        ck_assert_int_eq(g_array_index(b, rbk__broker_t, 2).rtt_avg_us, -1);
        g_array_free(b, TRUE);
        /* Malformed: no crash, what was read is kept. */
        b = rbk__rdstats_brokers("{\"brokers\":{\"a\":{\"name\":\"a\","
                                 "\"state\":\"UP\"},\"b\":{\"name\":");
        ck_assert_uint_eq(b->len, 1);
        g_array_free(b, TRUE);
        b = rbk__rdstats_brokers("not json");
        ck_assert_uint_eq(b->len, 0);
        g_array_free(b, TRUE);

        rbk__rdstats_t s;
        rbk__rdstats_init(&s);
        char why[256];
        ck_assert_int_eq(rbk__rdstats_down(&s, 0, why, sizeof(why)), 0);
        rbk__rdstats_update(&s, js);
        ck_assert_int_eq(rbk__rdstats_down(&s, 0, why, sizeof(why)), 0);
        rbk__rdstats_all_down(&s, 7);
        ck_assert_int_eq(rbk__rdstats_down(&s, 7, why, sizeof(why)), 1);
        ck_assert_int_eq(rbk__rdstats_down(&s, 8, why, sizeof(why)), 0);
        usleep(2000);
        rbk__rdstats_update(&s, "{\"brokers\":{\"a\":{\"name\":\"a\","
                                "\"nodeid\":1,\"state\":\"CONNECT\"}}}");
        ck_assert_int_eq(rbk__rdstats_down(&s, 7, why, sizeof(why)), 1);
        ck_assert_msg(strstr(why, "no broker connection is up"), "%s", why);
        rbk__rdstats_clear(&s);
}
END_TEST

/* ------------------------------------------------------------ stats cb */

typedef struct {
        GMutex lock;
        int calls;
        int rd_ok, rbk_ok;
        char thread[32];
        pthread_t caller;
} stats_rec_t;

static void stats_cb(const char *rd, const char *mine, void *opaque) {
        stats_rec_t *r = opaque;
        g_mutex_lock(&r->lock);
        r->calls++;
        r->rd_ok += rd && rd[0] == '{' && strstr(rd, "\"brokers\"") != NULL;
        r->rbk_ok += mine && mine[0] == '{' &&
                     (strstr(mine, "\"client\"") || strstr(mine, "\"group\""));
        pthread_getname_np(pthread_self(), r->thread, sizeof(r->thread));
        r->caller = pthread_self();
        g_mutex_unlock(&r->lock);
}

static int stats_calls(stats_rec_t *r) {
        g_mutex_lock(&r->lock);
        int n = r->calls;
        g_mutex_unlock(&r->lock);
        return n;
}

START_TEST(producer_stats_metrics_health) {
        char *topic = topic_name("pm");
        rbk_testcluster_t *tc = ps_cluster(topic, 3);
        ps_track_t *t = ps_track_new(100);
        rbk_conf_t *conf = ps_conf(tc, t);
        stats_rec_t r = {0};
        g_mutex_init(&r.lock);
        ps_set(conf, "statistics.interval.ms", "100");
        ps_set(conf, "rbk.client.name", "svc-a");
        rbk_conf_set_stats_cb(conf, stats_cb, &r);
        char e[512], why[512];
        rbk_producer_t *p = rbk_producer_new(conf, e, sizeof(e));
        ck_assert_msg(p, "%s", e);
        for (size_t i = 0; i < 100; i++)
                ck_assert_int_eq(ps_send(p, topic, i, (int)i, 0, e, sizeof(e)),
                                 RBK_OK);
        ck_assert_int_eq(rbk_producer_flush(p, 20000), RBK_OK);
        ck_assert(CS_WAIT(stats_calls(&r) >= 3, 10000));
        g_mutex_lock(&r.lock);
        ck_assert_int_eq(r.rd_ok, r.calls);
        ck_assert_int_eq(r.rbk_ok, r.calls);
        ck_assert_str_eq(r.thread, "rbk-producer");
        g_mutex_unlock(&r.lock);

        char *m = rbk_producer_metrics(p);
        ck_assert_ptr_nonnull(m);
        ck_assert_msg(strstr(m, "# TYPE rbk_producer_delivered_total counter\n"
                                "rbk_producer_delivered_total{client=\"svc-a\"}"
                                " 100\n"),
                      "%s", m);
        ck_assert_msg(strstr(m, "rbk_producer_accepted_total{client=\"svc-a\"} "
                                "100\n"),
                      "%s", m);
        ck_assert_msg(strstr(m, "rbk_producer_in_flight_messages{client=\"svc-a\"}"
                                " 0\n"),
                      "%s", m);
        ck_assert_msg(strstr(m, "rbk_producer_broker_up{client=\"svc-a\","
                                "broker=\""),
                      "%s", m);
        ck_assert_msg(strstr(m, "state=\"UP\"} 1\n"), "%s", m);
        ck_assert_msg(strstr(m, "rbk_producer_broker_rtt_avg_seconds{"), "%s",
                      m);
        char pt[4096];
        ck_assert_msg(promtool_ok(m, pt, sizeof(pt)), "promtool: %s\n%s", pt,
                      m);
        rbk_free(m);
        ck_assert_int_eq(rbk_producer_health(p, why, sizeof(why)), RBK_OK);
        ck_assert_str_eq(why, "");

        /* Every broker down: the health says so. */
        for (int b = 1; b <= 3; b++)
                ck_assert_int_eq(rbk_testcluster_broker_down(tc, b), RBK_OK);
        ck_assert(CS_WAIT(rbk_producer_health(p, why, sizeof(why)) ==
                              RBK_ERR_KAFKA,
                          20000));
        ck_assert_msg(strstr(why, "broker"), "%s", why);
        for (int b = 1; b <= 3; b++)
                ck_assert_int_eq(rbk_testcluster_broker_up(tc, b), RBK_OK);
        ck_assert(CS_WAIT(rbk_producer_health(p, why, sizeof(why)) == RBK_OK,
                          20000));

        ck_assert_int_eq(rbk_producer_close(p, 5000), RBK_OK);
        ck_assert_int_eq(rbk_producer_health(p, why, sizeof(why)),
                         RBK_ERR_SHUTDOWN);
        ck_assert_int_eq(rbk_producer_health(NULL, why, sizeof(why)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_ptr_null(rbk_producer_metrics(NULL));
        rbk_producer_destroy(p);
        rbk_conf_destroy(conf);
        ps_track_free(t);
        rbk_testcluster_destroy(tc);
        g_free(topic);
}
END_TEST

static rbk_verdict_t h_ok(const rbk_message_t *m, void *opaque) {
        cs_rec_add(opaque, m);
        return RBK_HANDLED;
}

static int assigned(rbk_consumer_t *c, uint64_t n) {
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        return rbk_consumer_stats(c, &st) == RBK_OK &&
               st.assigned_partitions == n;
}

START_TEST(consumer_stats_metrics_health) {
        char *topic = topic_name("cm");
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, topic, 3);
        for (int p = 0; p < 3; p++)
                cs_produce(cl, topic, p, 0, 20, "m");
        cs_commit(cl, "g-cm", topic, 0, 0);
        cs_commit(cl, "g-cm", topic, 1, 100); /* beyond the end: quarantine */
        cs_commit(cl, "g-cm", topic, 2, 0);
        rbk_conf_t *conf = cs_conf(cl, "g-cm");
        stats_rec_t r = {0};
        g_mutex_init(&r.lock);
        cs_set(conf, "statistics.interval.ms", "100");
        rbk_conf_set_stats_cb(conf, stats_cb, &r);
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        cs_rec_t *rec = cs_rec_new();
        char e[512], why[1024];
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c, "%s", e);
        ck_assert_int_eq(rbk_consumer_health(c, why, sizeof(why)),
                         RBK_ERR_STATE);
        ck_assert_str_eq(why, "not subscribed");
        const char *topics[] = {topic};
        ck_assert_int_eq(rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)),
                         RBK_OK);
        ck_assert_int_eq(rbk_consumer_health(c, why, sizeof(why)),
                         RBK_ERR_STATE);
        ck_assert_msg(strstr(why, "not joined"), "%s", why);
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec), RBK_OK);
        ck_assert(CS_WAIT(assigned(c, 3) && cs_rec_total(rec) >= 40, 20000));
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_OFFSET_OUT_OF_RANGE) == 1,
                          20000));
        ck_assert(CS_WAIT(stats_calls(&r) >= 3, 10000));
        g_mutex_lock(&r.lock);
        ck_assert_int_eq(r.rd_ok, r.calls);
        ck_assert_int_eq(r.rbk_ok, r.calls);
        ck_assert(!pthread_equal(r.caller, pthread_self()));
        g_mutex_unlock(&r.lock);

        /* The quarantined partition is named. */
        ck_assert_int_eq(rbk_consumer_health(c, why, sizeof(why)),
                         RBK_ERR_STATE);
        char want[512];
        snprintf(want, sizeof(want), "partition %s [1] quarantined (incident "
                 "g-cm/%s/1/100", topic, topic);
        ck_assert_msg(strstr(why, want), "%s", why);

        char *m = rbk_consumer_metrics(c);
        ck_assert_ptr_nonnull(m);
        for (int p = 0; p < 3; p++) {
                char s[512];
                snprintf(s, sizeof(s),
                         "rbk_consumer_lag_messages{group=\"g-cm\",topic=\"%s\","
                         "partition=\"%d\"} ",
                         topic, p);
                ck_assert_msg(strstr(m, s), "%s missing:\n%s", s, m);
                snprintf(s, sizeof(s),
                         "rbk_consumer_quarantined{group=\"g-cm\",topic=\"%s\","
                         "partition=\"%d\"} %d\n",
                         topic, p, p == 1);
                ck_assert_msg(strstr(m, s), "%s missing:\n%s", s, m);
                snprintf(s, sizeof(s),
                         "rbk_consumer_handler_latency_seconds_count{group=\""
                         "g-cm\",topic=\"%s\",partition=\"%d\"} %d\n",
                         topic, p, p == 1 ? 0 : 20);
                ck_assert_msg(strstr(m, s), "%s missing:\n%s", s, m);
                snprintf(s, sizeof(s),
                         "rbk_consumer_handler_latency_seconds_bucket{group=\""
                         "g-cm\",topic=\"%s\",partition=\"%d\",le=\"+Inf\"} "
                         "%d\n",
                         topic, p, p == 1 ? 0 : 20);
                ck_assert_msg(strstr(m, s), "%s missing:\n%s", s, m);
        }
        char s0[512];
        snprintf(s0, sizeof(s0),
                 "rbk_consumer_handled_total{group=\"g-cm\",topic=\"%s\","
                 "partition=\"0\"} 20\n",
                 topic);
        ck_assert_msg(strstr(m, s0), "%s", m);
        ck_assert_msg(strstr(m, "rbk_consumer_broker_up{group=\"g-cm\""), "%s",
                      m);
        char pt[4096];
        ck_assert_msg(promtool_ok(m, pt, sizeof(pt)), "promtool: %s\n%s", pt,
                      m);
        /* A consumer's text and a producer's can be served together. */
        rbk_free(m);

        ck_assert_int_eq(rbk_consumer_resolve(c, topic, 1, RBK_RESOLVE_EARLIEST,
                                              0, e, sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(rbk_consumer_health(c, why, sizeof(why)) == RBK_OK,
                          20000));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(rbk_consumer_health(c, why, sizeof(why)),
                         RBK_ERR_SHUTDOWN);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cs_rec_free(rec);
        cs_events_free(evs);
        cs_cluster_destroy(cl);
        g_free(topic);
}
END_TEST

/* ------------------------------------------------------------ OAUTHBEARER */

typedef struct {
        GMutex lock;
        int calls;
        char config[128];
        rbk_err_t past, ok, failure, bad;
        char past_err[256];
} oauth_rec_t;

static void oauth_cb(const char *cfg, rbk_oauth_token_setter_t *setter,
                     void *opaque) {
        oauth_rec_t *o = opaque;
        char e[256];
        int64_t now_ms = g_get_real_time() / 1000;
        g_mutex_lock(&o->lock);
        o->calls++;
        g_strlcpy(o->config, cfg, sizeof(o->config));
        /* A token already expired is refused, an empty reason too. */
        o->past = rbk_oauthbearer_set_token(setter, "a.b.c", now_ms - 1000,
                                            "alice", o->past_err,
                                            sizeof(o->past_err));
        o->bad = rbk_oauthbearer_set_token_failure(setter, "");
        o->ok = rbk_oauthbearer_set_token(setter, "a.b.c", now_ms + 3600000,
                                          "alice", e, sizeof(e));
        o->failure = rbk_oauthbearer_set_token_failure(setter, "test failure");
        g_mutex_unlock(&o->lock);
}

static int oauth_calls(oauth_rec_t *o) {
        g_mutex_lock(&o->lock);
        int n = o->calls;
        g_mutex_unlock(&o->lock);
        return n;
}

static void oauth_check(oauth_rec_t *o) {
        g_mutex_lock(&o->lock);
        ck_assert_str_eq(o->config, "scope=test");
        ck_assert_int_eq(o->past, RBK_ERR_INVALID_ARG);
        ck_assert_msg(strstr(o->past_err, "OAUTHBEARER"), "%s", o->past_err);
        ck_assert_int_eq(o->bad, RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(o->ok, RBK_OK);
        ck_assert_int_eq(o->failure, RBK_OK);
        g_mutex_unlock(&o->lock);
}

static void oauth_conf(rbk_conf_t *conf, oauth_rec_t *o) {
        cs_set(conf, "security.protocol", "SASL_PLAINTEXT");
        cs_set(conf, "sasl.mechanism", "OAUTHBEARER");
        cs_set(conf, "sasl.oauthbearer.config", "scope=test");
        rbk_conf_set_oauthbearer_token_refresh_cb(conf, oauth_cb, o);
}

START_TEST(oauthbearer_refresh_cb) {
        cs_cluster_t *cl = cs_cluster_new();
        char e[512];
        oauth_rec_t po = {0}, co = {0};
        g_mutex_init(&po.lock);
        g_mutex_init(&co.lock);

        rbk_conf_t *pconf = rbk_conf_new();
        cs_set(pconf, "bootstrap.servers", cl->bootstraps);
        oauth_conf(pconf, &po);
        rbk_producer_t *p = rbk_producer_new(pconf, e, sizeof(e));
        ck_assert_msg(p, "%s", e);
        ck_assert(CS_WAIT(oauth_calls(&po) >= 1, 10000));
        oauth_check(&po);
        ck_assert_int_eq(rbk_producer_close(p, 1000), RBK_OK);
        rbk_producer_destroy(p);

        rbk_conf_t *cconf = cs_conf(cl, "g-oauth");
        cs_set(cconf, "rbk.control.enable", "false");
        oauth_conf(cconf, &co);
        rbk_consumer_t *c = rbk_consumer_new(cconf, e, sizeof(e));
        ck_assert_msg(c, "%s", e);
        ck_assert(CS_WAIT(oauth_calls(&co) >= 1, 10000));
        oauth_check(&co);
        rbk_consumer_close(c, 1000);
        rbk_consumer_destroy(c);

        /* Without the callback, a setter-less call is refused. */
        ck_assert_int_eq(rbk_oauthbearer_set_token(NULL, "a", 1, "b", e,
                                                   sizeof(e)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_oauthbearer_set_token_failure(NULL, "x"),
                         RBK_ERR_INVALID_ARG);
        rbk_conf_destroy(pconf);
        rbk_conf_destroy(cconf);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("metrics");
        RBK_TCASE(s, label_values_escaped, 30);
        RBK_TCASE(s, broker_statistics_parsed, 30);
        RBK_TCASE(s, producer_stats_metrics_health, 120);
        RBK_TCASE(s, consumer_stats_metrics_health, 120);
        RBK_TCASE(s, oauthbearer_refresh_cb, 60);
        return s;
}

RBK_TEST_MAIN()
