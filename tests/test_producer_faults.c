/* The producer under faults injected into the mock cluster: leader moves,
 * broker loss, pushed Produce errors, slow responses, fatal idempotence
 * errors while several threads send, delivery timeouts. Every message is
 * counted by its index and id, and the topic is read back and compared. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "producer_support.h"

#define T_PARTS 3
#define T_KEYS 40

static char *topic_name(const char *base) {
        static int n;
        return g_strdup_printf("%s-%d-%d", base, (int)getpid(), ++n);
}

/* A fault applied while the stream runs: phase 1 at half, phase 2 at three
 * quarters of the messages. */
typedef void(fault_fn)(rbk_testcluster_t *tc, const char *topic, int phase);

typedef struct {
        const char *name;
        size_t n;
        fault_fn *fault;
        int allow_dups; /* the fault makes real duplicates (same id) */
        const char *conf[8][2];
        /* The mock may acknowledge messages it never wrote (see
         * leader_moves_mid_stream): a delivered id may be missing from the
         * log only if it was reported at offset -1001. */
        int mock_implicit_acks;
} scenario_t;

static void pin_leaders(rbk_testcluster_t *tc, const char *topic) {
        for (int p = 0; p < T_PARTS; p++)
                ck_assert_int_eq(rbk_testcluster_set_leader(tc, topic, p, p + 1),
                                 RBK_OK);
}

/* Runs one scenario: N keyed messages from one thread, paced so the fault
 * meets messages in flight; then flush, count by id, read back, compare. */
static void run_scenario(const scenario_t *sc) {
        char *topic = topic_name(sc->name);
        rbk_testcluster_t *tc = ps_cluster(topic, T_PARTS);
        pin_leaders(tc, topic);
        ps_track_t *t = ps_track_new(sc->n);
        int *acc = g_new0(int, sc->n);
        rbk_conf_t *conf = ps_conf(tc, t);
        for (int i = 0; i < 8 && sc->conf[i][0]; i++)
                ps_set(conf, sc->conf[i][0], sc->conf[i][1]);
        ps_set(conf, "rbk.metadata.warm.topics", topic);
        char errstr[512];
        rbk_producer_t *p = rbk_producer_new(conf, errstr, sizeof(errstr));
        ck_assert_msg(p, "%s", errstr);
        int seq[T_KEYS] = {0};
        for (size_t i = 0; i < sc->n; i++) {
                if (i == sc->n / 2)
                        sc->fault(tc, topic, 1);
                if (i == sc->n * 3 / 4)
                        sc->fault(tc, topic, 2);
                int key = (int)(i % T_KEYS);
                rbk_err_t err = ps_send(p, topic, i, key, seq[key]++, errstr,
                                        sizeof(errstr));
                ck_assert_msg(err == RBK_OK, "%s: send %zu: %s", sc->name, i,
                              errstr);
                acc[i] = 1;
                if (i % 500 == 499)
                        g_usleep(2000); /* pacing, not synchronisation */
        }
        ck_assert_int_eq(rbk_producer_flush(p, 60000), RBK_OK);
        ps_counts_t c = ps_track_counts(t, acc);
        ck_assert_uint_eq(c.accepted, sc->n);
        ck_assert_uint_eq(c.unreported, 0);
        ck_assert_uint_eq(c.double_reported, 0);
        ck_assert_uint_eq(c.accepted, c.delivered + c.failed);
        ck_assert_msg(c.failed == 0, "%s: %zu failed, e.g. %s", sc->name,
                      c.failed, t->reason[0] ? t->reason[0] : "");
        GPtrArray *log = ps_read_topic(rbk_testcluster_bootstrap(tc), topic,
                                       T_PARTS);
        ps_check_t k = ps_check_log(t, log);
        size_t lost = k.missing - (sc->mock_implicit_acks ? k.missing_implicit
                                                          : 0);
        ck_assert_msg(lost == 0, "%zu delivered ids missing from the log: %s",
                      k.missing, k.missing_eg);
        ck_assert_uint_eq(k.unknown, 0);
        ck_assert_uint_eq(k.no_id, 0);
        ck_assert_uint_eq(k.order_errors, 0);
        if (!sc->allow_dups) {
                ck_assert_msg(k.dup_ids == 0, "%s: %zu duplicate ids",
                              sc->name, k.dup_ids);
                ck_assert_uint_eq(k.records, sc->n - k.missing);
        } else {
                ck_assert_uint_eq(k.records, sc->n + k.dup_ids - k.missing);
        }
        rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;
        rbk_producer_stats(p, &st);
        ck_assert_int_eq(st.generation, 1);
        ck_assert_uint_eq(st.delivered, sc->n);
        fprintf(stderr, "%s: %zu sent, %zu records in the log, %zu duplicate "
                        "ids, %zu acknowledged implicitly and not written\n",
                sc->name, sc->n, k.records, k.dup_ids, k.missing);
        g_ptr_array_free(log, TRUE);
        rbk_producer_destroy(p);
        rbk_conf_destroy(conf);
        ps_track_free(t);
        g_free(acc);
        rbk_testcluster_destroy(tc);
        g_free(topic);
}

static void fault_leader_move(rbk_testcluster_t *tc, const char *topic,
                              int phase) {
        for (int p = 0; p < T_PARTS; p++)
                ck_assert_int_eq(rbk_testcluster_set_leader(
                                     tc, topic, p, (p + phase) % T_PARTS + 1),
                                 RBK_OK);
}

/* One request in flight (see PUSHED_CONF below). Even so, a request that
 * reaches the old leader after the move is refused while a later one, on
 * the connection to the new leader, may already be accepted; the mock,
 * which checks no sequences for idempotent producers, appends the later
 * one (a real broker refuses it as out of order), and librdkafka then
 * acknowledges the refused messages implicitly (offset -1001) although the
 * mock never wrote them. Seen on a loaded machine under valgrind (about
 * 2,000 of 20,000 in one run of three). So here, and only for ids reported
 * at offset -1001, a delivered id may be missing from the mock's log;
 * everything else (one report each, none failed, per-key order, the
 * generation, every id reported at an offset found there) is asserted.
 * Several requests in flight through leader changes are covered against
 * real brokers by the chaos suite, which reads the log back and allows no
 * loss. */
START_TEST(leader_moves_mid_stream) {
        scenario_t sc = {"leadermove",
                         20000,
                         fault_leader_move,
                         0,
                         {{"max.in.flight.requests.per.connection", "1"},
                          {NULL, NULL}},
                         1};
        run_scenario(&sc);
}
END_TEST

static void fault_leader_down_up(rbk_testcluster_t *tc, const char *topic,
                                 int phase) {
        (void)topic;
        if (phase == 1)
                ck_assert_int_eq(rbk_testcluster_broker_down(tc, 1), RBK_OK);
        else
                ck_assert_int_eq(rbk_testcluster_broker_up(tc, 1), RBK_OK);
}

/* A broker going down closes its connections: a Produce request the mock
 * had already appended loses its response and is retried. A real broker
 * acknowledges such a retry as a duplicate of the same sequence; the mock
 * of librdkafka 2.0.2 checks sequences only for transactional producers
 * (rd_kafka_mock_validate_records()) and appends it again. So duplicates
 * are allowed here, as the same id only; nothing may be lost and per-key
 * order must hold. The real-Kafka chaos suite asserts that the log holds
 * no duplicate when brokers are killed. */
START_TEST(leader_down_then_up) {
        scenario_t sc = {"downup", 20000, fault_leader_down_up, 1, {{NULL}}, 0};
        run_scenario(&sc);
}
END_TEST

static int pushed_err;
static void fault_push(rbk_testcluster_t *tc, const char *topic, int phase) {
        (void)topic;
        if (phase == 1)
                ck_assert_int_eq(
                    rbk_testcluster_push_produce_errors(tc, 3, pushed_err),
                    RBK_OK);
}

/* A pushed error refuses one request, but the mock checks no sequence
 * numbers: a request for the same partition behind it (several in flight)
 * is appended, where a real broker would refuse it as out of order. Its
 * success makes librdkafka acknowledge the refused messages implicitly (as
 * it must on a real broker: a later sequence was accepted, so the earlier
 * ones were), reported delivered at offset -1001 and never written. One
 * request in flight keeps these tests about the library. */
#define PUSHED_CONF {{"max.in.flight.requests.per.connection", "1"}, {NULL, NULL}}

START_TEST(pushed_not_leader_for_partition) {
        pushed_err = RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION;
        scenario_t sc = {"notleader", 6000, fault_push, 0, PUSHED_CONF, 0};
        run_scenario(&sc);
}
END_TEST

START_TEST(pushed_request_timed_out) {
        pushed_err = RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT;
        scenario_t sc = {"reqtimeout", 6000, fault_push, 0, PUSHED_CONF, 0};
        run_scenario(&sc);
}
END_TEST

START_TEST(pushed_leader_not_available) {
        pushed_err = RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE;
        scenario_t sc = {"leadernotavail", 6000, fault_push, 0, PUSHED_CONF, 0};
        run_scenario(&sc);
}
END_TEST

static void fault_delay(rbk_testcluster_t *tc, const char *topic, int phase) {
        (void)topic;
        if (phase == 1)
                ck_assert_int_eq(rbk_testcluster_delay_produce(tc, 1, 2500, 1),
                                 RBK_OK);
}

/* A response slower than socket.timeout.ms: the client retries, the mock
 * (no sequence checks) may write the batch twice. Duplicates are allowed,
 * but only as the same id; nothing is lost and per-key order holds. */
START_TEST(delayed_produce_response) {
        scenario_t sc = {"delayed",
                         6000,
                         fault_delay,
                         1,
                         {{"socket.timeout.ms", "1000"}, {NULL, NULL}},
                         0};
        run_scenario(&sc);
}
END_TEST

/* ------------------------------------------------------------ fatal */

typedef struct {
        rbk_producer_t *p;
        const char *topic;
        ps_track_t *t;
        int *acc;
        size_t first, count;
        int thread;
        gint *sent; /* shared progress counter */
        int failures;
        char err[512];
} sender_t;

static gpointer sender_main(gpointer arg) {
        sender_t *s = arg;
        int seq[10] = {0};
        for (size_t j = 0; j < s->count; j++) {
                size_t i = s->first + j;
                int k = (int)(j % 10);
                char errstr[512];
                rbk_err_t err = ps_send(s->p, s->topic, i, s->thread * 10 + k,
                                        seq[k]++, errstr, sizeof(errstr));
                if (err == RBK_OK) {
                        s->acc[i] = 1;
                } else {
                        seq[k]--; /* not accepted: the key's order skips it */
                        if (!s->failures++)
                                g_strlcpy(s->err, errstr, sizeof(s->err));
                }
                g_atomic_int_inc(s->sent);
                if (j % 250 == 249)
                        g_usleep(2000);
        }
        return NULL;
}

typedef void(fatal_fn)(rbk_testcluster_t *tc, rbk_producer_t *p);

/* 4 threads send keyed messages (each thread owns its keys); half way the
 * fatal error strikes. The instance is replaced, everything accepted is
 * delivered, per-key order of first occurrences holds, the generation
 * advanced and the hook fired once. */
static void run_fatal(const char *name, fatal_fn *fatal, const char *inflight,
                      int expect_flagged) {
        char *topic = topic_name(name);
        rbk_testcluster_t *tc = ps_cluster(topic, T_PARTS);
        pin_leaders(tc, topic);
        const size_t N = 20000, THREADS = 4;
        ps_track_t *t = ps_track_new(N);
        int *acc = g_new0(int, N);
        ps_hooks_t h;
        memset(&h, 0, sizeof(h));
        g_mutex_init(&h.lock);
        rbk_conf_t *conf = ps_conf(tc, t);
        rbk_conf_set_hook(conf, ps_hook_cb, &h);
        ps_set(conf, "rbk.metadata.warm.topics", topic);
        if (inflight)
                ps_set(conf, "max.in.flight.requests.per.connection", inflight);
        char errstr[512];
        rbk_producer_t *p = rbk_producer_new(conf, errstr, sizeof(errstr));
        ck_assert_msg(p, "%s", errstr);
        gint sent = 0;
        sender_t s[4];
        GThread *th[4];
        for (size_t i = 0; i < THREADS; i++) {
                s[i] = (sender_t){p, topic, t, acc, i * (N / THREADS),
                                  N / THREADS, (int)i, &sent, 0, ""};
                th[i] = g_thread_new("sender", sender_main, &s[i]);
        }
        gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while (g_atomic_int_get(&sent) < (gint)(N / 2) &&
               g_get_monotonic_time() < end)
                g_usleep(1000);
        fatal(tc, p);
        for (size_t i = 0; i < THREADS; i++) {
                g_thread_join(th[i]);
                ck_assert_msg(s[i].failures == 0, "thread %zu: %d sends failed: %s",
                              i, s[i].failures, s[i].err);
        }
        ck_assert_int_eq(rbk_producer_flush(p, 60000), RBK_OK);

        ps_counts_t c = ps_track_counts(t, acc);
        ck_assert_uint_eq(c.accepted, N);
        ck_assert_uint_eq(c.unreported, 0);
        ck_assert_uint_eq(c.double_reported, 0);
        ck_assert_uint_eq(t->bad_opaque, 0);
        ck_assert_msg(c.delivered == N, "%zu delivered, %zu failed (%s)",
                      c.delivered, c.failed, t->reason[0] ? t->reason[0] : "");
        rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;
        rbk_producer_stats(p, &st);
        ck_assert_int_eq(st.generation, 2);
        ck_assert_uint_eq(st.fatal_errors, 1);
        ck_assert_int_eq(ps_hook_count(&h, RBK_EV_FATAL_RECOVERED), 1);
        ck_assert_int_eq(ps_hook_count(&h, RBK_EV_FATAL_GAVE_UP), 0);
        ck_assert_int_eq(ps_hook_count(&h, RBK_EV_DELIVERY_FAILED), 0);
        g_mutex_lock(&h.lock);
        ck_assert_int_eq(h.generation, 2);
        g_mutex_unlock(&h.lock);
        char *json = rbk_producer_stats_json(p);
        ck_assert_msg(strstr(json, "\"generation\":2"), "%s", json);
        rbk_free(json);

        GPtrArray *log = ps_read_topic(rbk_testcluster_bootstrap(tc), topic,
                                       T_PARTS);
        ps_check_t k = ps_check_log(t, log);
        ck_assert_msg(k.missing == 0, "%zu delivered ids missing from the log: %s",
                      k.missing, k.missing_eg);
        ck_assert_uint_eq(k.unknown, 0);
        ck_assert_uint_eq(k.no_id, 0);
        ck_assert_uint_eq(k.order_errors, 0);
        /* A second copy exists only where the first attempt was possibly
         * persisted, and then it says so. */
        ck_assert_uint_eq(k.dup_unflagged, 0);
        size_t resent = 0, flagged = 0;
        for (size_t i = 0; i < N; i++)
                resent += t->resent[i] > 0;
        for (guint j = 0; j < log->len; j++)
                flagged += ((ps_rec_t *)g_ptr_array_index(log, j))->resent;
        ck_assert_uint_gt(resent, 0);
        /* The batch that failed was possibly persisted: its copies say so. */
        if (expect_flagged)
                ck_assert_uint_gt(flagged, 0);
        fprintf(stderr,
                "%s: %zu delivered, %zu re-sent (%zu flagged rbk-resent), %zu "
                "records, %zu duplicate ids\n",
                name, c.delivered, resent, flagged, k.records, k.dup_ids);
        ck_assert_uint_eq(st.resent, resent);
        g_ptr_array_free(log, TRUE);
        rbk_producer_destroy(p);
        rbk_conf_destroy(conf);
        ps_track_free(t);
        g_free(acc);
        g_mutex_clear(&h.lock);
        rbk_testcluster_destroy(tc);
        g_free(topic);
}

static void fatal_pushed_oosn(rbk_testcluster_t *tc, rbk_producer_t *p) {
        (void)p;
        ck_assert_int_eq(rbk_testcluster_push_produce_errors(
                             tc, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER),
                         RBK_OK);
}

/* The mock checks no sequence numbers, so with more than one request in
 * flight it accepts requests behind the failed one that a real broker would
 * reject; one request in flight keeps the test about the library. */
START_TEST(fatal_pushed_out_of_order_sequence) {
        run_fatal("fataloosn", fatal_pushed_oosn, "1", 1);
}
END_TEST

static void fatal_test_error(rbk_testcluster_t *tc, rbk_producer_t *p) {
        (void)tc;
        ck_assert_int_eq(
            rbk_testing_fatal_error(p, RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID,
                                    "injected by the test"),
            RBK_OK);
}

START_TEST(fatal_test_fatal_error) {
        run_fatal("fataltest", fatal_test_error, NULL, 0);
}
END_TEST

/* Too many fatal errors: the producer gives up, outstanding messages fail
 * with RBK_ERR_FATAL and a reason, later sends fail at once. */
START_TEST(fatal_gives_up) {
        char *topic = topic_name("giveup");
        rbk_testcluster_t *tc = ps_cluster(topic, T_PARTS);
        const size_t N = 100;
        ps_track_t *t = ps_track_new(N);
        int *acc = g_new0(int, N);
        ps_hooks_t h;
        memset(&h, 0, sizeof(h));
        g_mutex_init(&h.lock);
        rbk_conf_t *conf = ps_conf(tc, t);
        rbk_conf_set_hook(conf, ps_hook_cb, &h);
        ps_set(conf, "rbk.producer.fatal.max.recoveries", "1");
        ps_set(conf, "rbk.producer.fatal.drain.ms", "200");
        ps_set(conf, "rbk.metadata.warm.topics", topic);
        char errstr[512];
        rbk_producer_t *p = rbk_producer_new(conf, errstr, sizeof(errstr));
        ck_assert_msg(p, "%s", errstr);
        ck_assert_int_eq(ps_send(p, topic, 0, 0, 0, errstr, sizeof(errstr)),
                         RBK_OK);
        acc[0] = 1;
        ck_assert_int_eq(rbk_producer_flush(p, 10000), RBK_OK);
        ck_assert_int_eq(rbk_testing_fatal_error(p, 45, "first"), RBK_OK);
        rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;
        gint64 end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
        do {
                g_usleep(10000);
                rbk_producer_stats(p, &st);
        } while (st.generation < 2 && g_get_monotonic_time() < end);
        ck_assert_int_eq(st.generation, 2);
        /* Sends held during the recovery went through. */
        ck_assert_int_eq(ps_send(p, topic, 1, 0, 1, errstr, sizeof(errstr)),
                         RBK_OK);
        acc[1] = 1;
        ck_assert_int_eq(rbk_producer_flush(p, 10000), RBK_OK);
        /* Now with messages stuck behind downed brokers. */
        for (int b = 1; b <= 3; b++)
                ck_assert_int_eq(rbk_testcluster_broker_down(tc, b), RBK_OK);
        for (size_t i = 2; i < N; i++) {
                ck_assert_int_eq(ps_send(p, topic, i, (int)i % 5, (int)i,
                                         errstr, sizeof(errstr)),
                                 RBK_OK);
                acc[i] = 1;
        }
        ck_assert_int_eq(rbk_testing_fatal_error(p, 45, "second"), RBK_OK);
        ck_assert(ps_track_wait(t, N, 20000));
        ps_counts_t c = ps_track_counts(t, acc);
        ck_assert_uint_eq(c.unreported, 0);
        ck_assert_uint_eq(c.delivered, 2);
        ck_assert_uint_eq(c.failed, N - 2);
        for (size_t i = 2; i < N; i++) {
                ck_assert_int_eq(t->err[i], RBK_ERR_FATAL);
                ck_assert_msg(strstr(t->reason[i], "not recovered") &&
                                  strstr(t->reason[i], "second"),
                              "%s", t->reason[i]);
        }
        ck_assert_int_eq(ps_hook_count(&h, RBK_EV_FATAL_RECOVERED), 1);
        ck_assert_int_eq(ps_hook_count(&h, RBK_EV_FATAL_GAVE_UP), 1);
        ck_assert_int_eq(ps_send(p, topic, 0, 0, 0, errstr, sizeof(errstr)),
                         RBK_ERR_FATAL);
        ck_assert_msg(strstr(errstr, "gave up"), "%s", errstr);
        ck_assert_int_eq(rbk_testing_fatal_error(p, 45, "third"), RBK_ERR_STATE);
        rbk_producer_stats(p, &st);
        ck_assert_uint_eq(st.fatal_errors, 2);
        ck_assert_int_eq(rbk_producer_close(p, 1000), RBK_OK);
        rbk_producer_destroy(p);
        rbk_conf_destroy(conf);
        ps_track_free(t);
        g_free(acc);
        g_mutex_clear(&h.lock);
        rbk_testcluster_destroy(tc);
        g_free(topic);
}
END_TEST

/* All brokers down longer than the delivery timeout: every message fails
 * with a clear reason; none is silent. */
START_TEST(all_brokers_down_past_delivery_timeout) {
        char *topic = topic_name("alldown");
        rbk_testcluster_t *tc = ps_cluster(topic, T_PARTS);
        const size_t N = 200;
        ps_track_t *t = ps_track_new(N);
        int *acc = g_new0(int, N);
        ps_hooks_t h;
        memset(&h, 0, sizeof(h));
        g_mutex_init(&h.lock);
        rbk_conf_t *conf = ps_conf(tc, t);
        rbk_conf_set_hook(conf, ps_hook_cb, &h);
        ps_set(conf, "message.timeout.ms", "1500");
        ps_set(conf, "rbk.metadata.warm.topics", topic);
        char errstr[512];
        rbk_producer_t *p = rbk_producer_new(conf, errstr, sizeof(errstr));
        ck_assert_msg(p, "%s", errstr);
        for (int b = 1; b <= 3; b++)
                ck_assert_int_eq(rbk_testcluster_broker_down(tc, b), RBK_OK);
        for (size_t i = 0; i < N; i++) {
                ck_assert_int_eq(ps_send(p, topic, i, (int)i % 7, (int)i,
                                         errstr, sizeof(errstr)),
                                 RBK_OK);
                acc[i] = 1;
        }
        ck_assert(ps_track_wait(t, N, 20000));
        ps_counts_t c = ps_track_counts(t, acc);
        ck_assert_uint_eq(c.unreported, 0);
        ck_assert_uint_eq(c.double_reported, 0);
        ck_assert_uint_eq(c.failed, N);
        for (size_t i = 0; i < N; i++) {
                ck_assert_int_eq(t->err[i], RBK_ERR_DELIVERY);
                ck_assert_msg(strstr(t->reason[i], "_MSG_TIMED_OUT"), "%s",
                              t->reason[i]);
                ck_assert_int_eq(t->pp[i], 0); /* never sent */
        }
        ck_assert_int_ge(ps_hook_count(&h, RBK_EV_DELIVERY_FAILED), 1);
        /* Counters settle once the last callback of the batch returned. */
        ck_assert_int_eq(rbk_producer_flush(p, 5000), RBK_OK);
        rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;
        rbk_producer_stats(p, &st);
        ck_assert_uint_eq(st.failed, N);
        ck_assert_uint_eq(st.in_flight, 0);
        ck_assert_int_eq(st.generation, 1);
        /* The handle is still good once the brokers are back. */
        for (int b = 1; b <= 3; b++)
                ck_assert_int_eq(rbk_testcluster_broker_up(tc, b), RBK_OK);
        rbk_msg_t m = RBK_MSG_INIT;
        m.topic = topic;
        /* Reconnecting may take longer than the 1.5 s delivery timeout. */
        rbk_err_t err = RBK_ERR_DELIVERY;
        gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while (err == RBK_ERR_DELIVERY && g_get_monotonic_time() < end)
                err = rbk_producer_send_sync(p, &m, 20000, NULL, errstr,
                                             sizeof(errstr));
        ck_assert_msg(err == RBK_OK, "%s", errstr);
        rbk_producer_destroy(p);
        rbk_conf_destroy(conf);
        ps_track_free(t);
        g_free(acc);
        g_mutex_clear(&h.lock);
        rbk_testcluster_destroy(tc);
        g_free(topic);
}
END_TEST

/* ------------------------------------------------------------ ring */

/* The outstanding records live in a ring of slots in acceptance order
 * (lib/producer.c, rbk__out_t): a report clears its record's slot, a full
 * ring is compacted in place when at most half of it is live and enlarged
 * otherwise (1024 slots at least). These cases keep the oldest records of
 * one partition outstanding (its leader, broker 1, is down) while thousands
 * of later records on the other partitions are delivered, so the ring fills
 * with cleared slots and must be compacted, and with enough stuck records
 * enlarged first. Then the stuck partition recovers, or a fatal error
 * re-sends the stuck records, or close reports them. Every message has a
 * caller-supplied id "ring-<index>" and an explicit partition. */

#define R_PARTS 3

/* The reports, counted by ps_track_t (index = opaque - 1), plus what
 * the ring cases check on top: the id and the report order per partition. */
typedef struct {
        ps_track_t *ps;
        GMutex lock;
        int32_t *want_part;     /* partition sent to */
        size_t bad_id;          /* reports whose id is not the index's */
        GArray *order[R_PARTS]; /* indexes (size_t) in report order */
} ring_track_t;

static void ring_dr_cb(const rbk_delivery_t *dr, void *opaque) {
        ring_track_t *t = opaque;
        size_t i = (size_t)(uintptr_t)dr->msg_opaque - 1;
        char want[32];
        snprintf(want, sizeof(want), "ring-%zu", i);
        g_mutex_lock(&t->lock);
        if (!dr->id || strcmp(dr->id, want))
                t->bad_id++;
        if (dr->partition >= 0 && dr->partition < R_PARTS)
                g_array_append_val(t->order[dr->partition], i);
        g_mutex_unlock(&t->lock);
        ps_dr_cb(dr, t->ps); /* counts last: a waiter sees the order too */
}

typedef struct {
        char *topic;
        rbk_testcluster_t *tc;
        rbk_conf_t *conf;
        rbk_producer_t *p;
        ring_track_t t;
        ps_hooks_t h;
        size_t stuck; /* messages sent to partition 0 */
        /* Compactions counted when the ring was first seen enlarged, and
         * at the end of ring_fill(). */
        uint64_t comp_at_growth, comp_at_end;
        int grown;
} ring_t;

/* Ring statistics from rbk_producer_stats_json(). */
typedef struct {
        uint64_t slots, compactions, growths;
        uint64_t part_in_flight[R_PARTS];
        uint64_t part_entries; /* partition entries in the JSON */
        char state[32];
} ring_stats_t;

static ring_stats_t ring_stats(ring_t *r) {
        ring_stats_t rs;
        memset(&rs, 0, sizeof(rs));
        char *json = rbk_producer_stats_json(r->p);
        ck_assert(json);
        rs.slots = ps_json_u64(json, "outstanding_slots");
        rs.compactions = ps_json_u64(json, "outstanding_compactions");
        rs.growths = ps_json_u64(json, "outstanding_growths");
        const char *st = strstr(json, "\"state\":\"");
        ck_assert(st);
        sscanf(st + 9, "%31[a-z_]", rs.state);
        const char *s = strstr(json, "\"partitions\":[");
        ck_assert(s);
        while ((s = strstr(s, "{\"topic\":"))) {
                s += 9;
                const char *q = strstr(s, "\"partition\":");
                ck_assert(q);
                long part = strtol(q + 12, NULL, 10);
                ck_assert_msg(part >= 0 && part < R_PARTS, "%s", json);
                rs.part_in_flight[part] = ps_json_u64(q, "in_flight");
                rs.part_entries++;
        }
        rbk_free(json);
        return rs;
}

static rbk_producer_stats_t pstats(rbk_producer_t *p) {
        rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;
        ck_assert_int_eq(rbk_producer_stats(p, &st), RBK_OK);
        return st;
}

/* Waits until in_flight is @want: it counts a message until its callback
 * returned (and the batch's bookkeeping is done), a little after the
 * tracker saw the report. */
static void await_in_flight(rbk_producer_t *p, uint64_t want) {
        gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while (pstats(p).in_flight != want && g_get_monotonic_time() < end)
                g_usleep(1000); /* polling a condition */
        ck_assert_uint_eq(pstats(p).in_flight, want);
}

static void ring_send(ring_t *r, size_t i, int32_t part) {
        char id[32], v[64], errstr[512];
        snprintf(id, sizeof(id), "ring-%zu", i);
        snprintf(v, sizeof(v), "v%zu", i);
        rbk_msg_t m = RBK_MSG_INIT;
        m.topic = r->topic;
        m.partition = part;
        m.value = v;
        m.value_len = strlen(v);
        m.id = id;
        m.opaque = (void *)(uintptr_t)(i + 1);
        r->t.want_part[i] = part;
        rbk_err_t err = rbk_producer_send(r->p, &m, errstr, sizeof(errstr));
        ck_assert_msg(err == RBK_OK, "send %zu: %s", i, errstr);
}

/* Sends n messages: three quarters of the `stuck` ones to partition 0
 * first (with 700, more than half of 1024 slots from the start), then
 * the others on partitions 1 and 2 with the rest of the stuck ones spread
 * among them, in chunks of `chunk`, waiting after each chunk until every
 * message not on partition 0 is reported (so the ring holds the stuck
 * records plus at most a chunk, and fills with cleared slots). */
static void ring_fill(ring_t *r, size_t n, size_t stuck, size_t chunk) {
        size_t first = stuck * 3 / 4, spread = stuck - first;
        size_t step = (n - first) / (spread + 1);
        size_t others = 0, sent_stuck = 0;
        r->stuck = stuck;
        for (size_t i = 0; i < n; i++) {
                int to_zero = i < first || ((i - first) % step == step - 1 &&
                                            sent_stuck < stuck);
                if (to_zero) {
                        ring_send(r, i, 0);
                        sent_stuck++;
                        continue;
                }
                ring_send(r, i, 1 + (int32_t)(others % 2));
                if (++others % chunk == 0) {
                        ck_assert(ps_track_wait(r->t.ps, others, 30000));
                        ring_stats_t rs = ring_stats(r);
                        if (rs.growths && !r->grown) {
                                r->grown = 1;
                                r->comp_at_growth = rs.compactions;
                        }
                }
        }
        ck_assert_uint_eq(sent_stuck, stuck);
        ck_assert(ps_track_wait(r->t.ps, others, 30000));
        await_in_flight(r->p, stuck);
        r->comp_at_end = ring_stats(r).compactions;
}

static void ring_open(ring_t *r, const char *name, size_t n) {
        memset(r, 0, sizeof(*r));
        r->topic = topic_name(name);
        r->tc = ps_cluster(r->topic, R_PARTS);
        for (int p = 0; p < R_PARTS; p++)
                ck_assert_int_eq(
                    rbk_testcluster_set_leader(r->tc, r->topic, p, p + 1),
                    RBK_OK);
        r->t.ps = ps_track_new(n);
        g_mutex_init(&r->t.lock);
        r->t.want_part = g_new0(int32_t, n);
        for (int p = 0; p < R_PARTS; p++)
                r->t.order[p] = g_array_new(FALSE, FALSE, sizeof(size_t));
        g_mutex_init(&r->h.lock);
        r->conf = ps_conf(r->tc, NULL);
        rbk_conf_set_delivery_cb(r->conf, ring_dr_cb, &r->t);
        rbk_conf_set_hook(r->conf, ps_hook_cb, &r->h);
        ps_set(r->conf, "rbk.metadata.warm.topics", r->topic);
        /* Broker 1 comes back within the test's time. */
        ps_set(r->conf, "reconnect.backoff.ms", "50");
        ps_set(r->conf, "reconnect.backoff.max.ms", "500");
        ps_set(r->conf, "rbk.producer.fatal.drain.ms", "200");
        char errstr[512];
        r->p = rbk_producer_new(r->conf, errstr, sizeof(errstr));
        ck_assert_msg(r->p, "%s", errstr);
        ck_assert_int_eq(rbk_testcluster_broker_down(r->tc, 1), RBK_OK);
}

static void ring_check_filled(ring_t *r, size_t n, uint64_t slots,
                              uint64_t growths);

/* ring_open(), ring_fill() in chunks of 128, ring_check_filled(). */
static void ring_start(ring_t *r, const char *name, size_t n, size_t stuck,
                       uint64_t slots, uint64_t growths) {
        ring_open(r, name, n);
        ring_fill(r, n, stuck, 128);
        ring_check_filled(r, n, slots, growths);
}

static void ring_close(ring_t *r) {
        rbk_producer_destroy(r->p);
        rbk_conf_destroy(r->conf);
        rbk_testcluster_destroy(r->tc);
        for (int p = 0; p < R_PARTS; p++)
                g_array_free(r->t.order[p], TRUE);
        g_free(r->t.want_part);
        g_mutex_clear(&r->t.lock);
        ps_track_free(r->t.ps);
        g_mutex_clear(&r->h.lock);
        g_free(r->topic);
}

/* After ring_fill(): the stuck records alone are outstanding, and the
 * statistics say so; the ring was compacted (and enlarged `growths` times
 * to `slots`). */
static void ring_check_filled(ring_t *r, size_t n, uint64_t slots,
                              uint64_t growths) {
        rbk_producer_stats_t st = pstats(r->p);
        ck_assert_uint_eq(st.accepted, n);
        ck_assert_uint_eq(st.delivered, n - r->stuck);
        ck_assert_uint_eq(st.failed, 0);
        ck_assert_uint_eq(st.in_flight, r->stuck);
        ring_stats_t rs = ring_stats(r);
        ck_assert_str_eq(rs.state, "running");
        ck_assert_uint_eq(rs.part_entries, 1);
        ck_assert_uint_eq(rs.part_in_flight[0], r->stuck);
        ck_assert_uint_eq(rs.slots, slots);
        ck_assert_uint_eq(rs.growths, growths);
        ck_assert_uint_ge(rs.compactions, 1);
        /* Enlarged, then compacted at its new size. */
        if (growths)
                ck_assert_msg(r->grown && r->comp_at_end > r->comp_at_growth,
                              "compactions: %" G_GUINT64_FORMAT
                              " when enlarged, %" G_GUINT64_FORMAT " at the end",
                              r->comp_at_growth, r->comp_at_end);
        g_mutex_lock(&r->t.ps->lock);
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(r->t.ps->reports[i], r->t.want_part[i] != 0);
        g_mutex_unlock(&r->t.ps->lock);
        g_mutex_lock(&r->t.lock);
        ck_assert_uint_eq(r->t.order[0]->len, 0);
        g_mutex_unlock(&r->t.lock);
        fprintf(stderr, "%s: %zu sent, %zu stuck: %" G_GUINT64_FORMAT
                        " slots, %" G_GUINT64_FORMAT " compactions (%"
                        G_GUINT64_FORMAT " before enlarging), %"
                        G_GUINT64_FORMAT " growths\n",
                r->topic, n, r->stuck, rs.slots, rs.compactions,
                r->grown ? r->comp_at_growth : rs.compactions, rs.growths);
}

/* Every message reported exactly once, with its id and partition; per
 * partition, reports and offsets come in acceptance order. `err` is the
 * stuck records' result (RBK_OK when delivered). */
static void ring_check_final(ring_t *r, size_t n, rbk_err_t stuck_err) {
        ring_track_t *rt = &r->t;
        ps_track_t *t = rt->ps;
        g_mutex_lock(&rt->lock);
        g_mutex_lock(&t->lock);
        ck_assert_uint_eq(t->done, n);
        ck_assert_uint_eq(rt->bad_id, 0);
        ck_assert_uint_eq(t->bad_opaque, 0);
        for (size_t i = 0; i < n; i++) {
                ck_assert_msg(t->reports[i] == 1, "message %zu: %d reports", i,
                              t->reports[i]);
                ck_assert_int_eq(t->partition[i], rt->want_part[i]);
                ck_assert_int_eq(t->err[i],
                                 rt->want_part[i] == 0 ? stuck_err : RBK_OK);
        }
        for (int p = 0; p < R_PARTS; p++) {
                GArray *o = rt->order[p];
                size_t want = 0;
                for (size_t i = 0; i < n; i++)
                        want += rt->want_part[i] == p;
                ck_assert_uint_eq(o->len, want);
                for (guint j = 1; j < o->len; j++) {
                        size_t a = g_array_index(o, size_t, j - 1),
                               b = g_array_index(o, size_t, j);
                        ck_assert_msg(a < b,
                                      "partition %d: report of %zu after %zu",
                                      p, b, a);
                        if (t->err[b] == RBK_OK)
                                ck_assert_int_lt(t->offset[a], t->offset[b]);
                }
        }
        g_mutex_unlock(&t->lock);
        g_mutex_unlock(&rt->lock);
}

/* The records of partition 0 in the log: exactly the stuck ones, once
 * each, in acceptance order. */
static void ring_check_log(ring_t *r, size_t n) {
        GPtrArray *log = ps_read_topic(rbk_testcluster_bootstrap(r->tc),
                                       r->topic, R_PARTS);
        ck_assert_uint_eq(log->len, n);
        long prev = -1;
        size_t zero = 0;
        for (guint j = 0; j < log->len; j++) {
                ps_rec_t *rec = g_ptr_array_index(log, j);
                ck_assert(rec->id && g_str_has_prefix(rec->id, "ring-"));
                long i = strtol(rec->id + 5, NULL, 10);
                ck_assert_int_eq(r->t.want_part[i], rec->partition);
                if (rec->partition != 0)
                        continue;
                zero++;
                ck_assert_msg(i > prev, "partition 0: %ld after %ld", i, prev);
                prev = i;
        }
        ck_assert_uint_eq(zero, r->stuck);
        g_ptr_array_free(log, TRUE);
}

/* The stuck partition recovers: everything is delivered once, in order. */
static void ring_recover(const char *name, size_t n, size_t stuck,
                         uint64_t slots, uint64_t growths) {
        ring_t r;
        ring_start(&r, name, n, stuck, slots, growths);
        ck_assert_int_eq(rbk_testcluster_broker_up(r.tc, 1), RBK_OK);
        ck_assert(ps_track_wait(r.t.ps, n, 30000));
        ck_assert_int_eq(rbk_producer_flush(r.p, 30000), RBK_OK);
        ring_check_final(&r, n, RBK_OK);
        rbk_producer_stats_t st = pstats(r.p);
        ck_assert_uint_eq(st.delivered, n);
        ck_assert_uint_eq(st.in_flight, 0);
        ck_assert_uint_eq(st.resent, 0);
        ck_assert_int_eq(st.generation, 1);
        ring_stats_t rs = ring_stats(&r);
        ck_assert_uint_eq(rs.part_entries, 0);
        ck_assert_uint_eq(rs.slots, slots);
        ring_check_log(&r, n);
        ck_assert_int_eq(rbk_producer_close(r.p, 5000), RBK_OK);
        ring_close(&r);
}

/* 100 stuck records: at most about 100 + a chunk live, so the 1024 slots
 * are compacted, never enlarged. */
START_TEST(ring_compacts_while_partition_stuck) {
        size_t n = (size_t)rbk_test_scale(6000, 3000);
        ring_recover("ringcompact", n, 100, 1024, 0);
}
END_TEST

/* 700 stuck records: 525 of them first, so more than half of 1024 are live
 * when the ring is first full: it is enlarged to 2048, then compacted (at
 * most about 700 + a chunk + a merge batch live, under half of 2048). */
START_TEST(ring_grows_then_compacts_while_partition_stuck) {
        size_t n = (size_t)rbk_test_scale(7000, 4000);
        ring_recover("ringgrow", n, 700, 2048, 1);
}
END_TEST

/* A fatal error with a compacted, enlarged ring: recovery re-sends exactly
 * the stuck records, in acceptance order, each once. */
START_TEST(ring_fatal_recovery_after_compaction) {
        size_t n = (size_t)rbk_test_scale(7000, 4000);
        ring_t r;
        ring_start(&r, "ringfatal", n, 700, 2048, 1);
        ck_assert_int_eq(
            rbk_testing_fatal_error(r.p, RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID,
                                    "injected by the test"),
            RBK_OK);
        /* The re-sent records wait for broker 1 again. */
        gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while (ps_hook_count(&r.h, RBK_EV_FATAL_RECOVERED) < 1 &&
               g_get_monotonic_time() < end)
                g_usleep(10000); /* polling a condition */
        ck_assert_int_eq(ps_hook_count(&r.h, RBK_EV_FATAL_RECOVERED), 1);
        rbk_producer_stats_t st = pstats(r.p);
        ck_assert_int_eq(st.generation, 2);
        ck_assert_uint_eq(st.resent, r.stuck);
        ck_assert_uint_eq(st.in_flight, r.stuck);
        ck_assert_uint_eq(st.delivered, n - r.stuck);
        ring_stats_t rs = ring_stats(&r);
        ck_assert_uint_eq(rs.part_entries, 1);
        ck_assert_uint_eq(rs.part_in_flight[0], r.stuck);
        g_mutex_lock(&r.t.ps->lock);
        ck_assert_uint_eq(r.t.ps->done, n - r.stuck);
        g_mutex_unlock(&r.t.ps->lock);
        ck_assert_int_eq(rbk_testcluster_broker_up(r.tc, 1), RBK_OK);
        ck_assert(ps_track_wait(r.t.ps, n, 30000));
        ck_assert_int_eq(rbk_producer_flush(r.p, 30000), RBK_OK);
        ring_check_final(&r, n, RBK_OK);
        g_mutex_lock(&r.t.ps->lock);
        for (size_t i = 0; i < n; i++) {
                ck_assert_int_eq(r.t.ps->resent[i], r.t.want_part[i] == 0);
                ck_assert_int_eq(r.t.ps->pp[i], 0);
        }
        g_mutex_unlock(&r.t.ps->lock);
        st = pstats(r.p);
        ck_assert_uint_eq(st.delivered, n);
        ck_assert_uint_eq(st.in_flight, 0);
        ck_assert_uint_eq(st.resent, r.stuck);
        ck_assert_uint_eq(st.fatal_errors, 1);
        ck_assert_int_eq(ps_hook_count(&r.h, RBK_EV_DELIVERY_FAILED), 0);
        ring_check_log(&r, n);
        ck_assert_int_eq(rbk_producer_close(r.p, 5000), RBK_OK);
        ring_close(&r);
}
END_TEST

/* Close with a compacted ring: every stuck record is reported once, with
 * RBK_ERR_SHUTDOWN; the others were delivered. */
START_TEST(ring_close_after_compaction) {
        size_t n = (size_t)rbk_test_scale(6000, 3000);
        ring_t r;
        ring_start(&r, "ringclose", n, 100, 1024, 0);
        ck_assert_int_eq(rbk_producer_close(r.p, 500), RBK_ERR_TIMED_OUT);
        ck_assert(ps_track_wait(r.t.ps, n, 1));
        ring_check_final(&r, n, RBK_ERR_SHUTDOWN);
        rbk_producer_stats_t st = pstats(r.p);
        ck_assert_uint_eq(st.delivered, n - r.stuck);
        ck_assert_uint_eq(st.failed, r.stuck);
        ck_assert_uint_eq(st.in_flight, 0);
        ring_stats_t rs = ring_stats(&r);
        ck_assert_str_eq(rs.state, "closed");
        ck_assert_uint_eq(rs.part_entries, 0);
        ck_assert_int_eq(ps_hook_count(&r.h, RBK_EV_SHUTDOWN_UNDELIVERED), 1);
        ring_close(&r);
}
END_TEST

/* A connection the producer closes is reset, not shut down gracefully: what
 * the kernel still holds for it is dropped, never delivered late. (After a
 * plain close() the kernel keeps sending a request librdkafka gave up on; a
 * broker cut off by a network partition receives it once the partition
 * heals, and a replaced instance's request is appended after the library's
 * re-send of the same message.) A listener that never answers stands in for the broker: it reads
 * the producer's first request, the producer is closed, and the listener's
 * next read must fail with ECONNRESET; a plain close() gives end of file. */
START_TEST(closed_connections_are_reset) {
        int lfd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(lfd, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(lfd, 4), 0);
        socklen_t sl = sizeof(sa);
        ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
        char boot[64];
        snprintf(boot, sizeof(boot), "127.0.0.1:%d", ntohs(sa.sin_port));

        rbk_conf_t *conf = rbk_conf_new();
        ps_set(conf, "bootstrap.servers", boot);
        rbk_conf_set_log_cb(conf, ps_log_cb, NULL);
        char errstr[512];
        rbk_producer_t *p = rbk_producer_new(conf, errstr, sizeof(errstr));
        ck_assert_msg(p, "%s", errstr);

        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        ck_assert_msg(poll(&pfd, 1, 20000) == 1,
                      "the producer did not connect within 20 s");
        int fd = accept(lfd, NULL, NULL);
        ck_assert_int_ge(fd, 0);
        struct timeval tv = {.tv_sec = 20};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        ck_assert_msg(n > 0, "no request from the producer (%zd, %s)", n,
                      g_strerror(errno));

        ck_assert_int_eq(rbk_producer_close(p, 5000), RBK_OK);
        /* Whatever else it sent before the close, then the verdict. */
        do {
                n = recv(fd, buf, sizeof(buf), 0);
        } while (n > 0);
        int e = errno;
        ck_assert_msg(n < 0 && e == ECONNRESET,
                      "the closed connection was not reset: recv() gave %zd "
                      "(%s)", n, n < 0 ? g_strerror(e) : "end of file");
        close(fd);
        close(lfd);
        rbk_producer_destroy(p);
        rbk_conf_destroy(conf);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("producer_faults");
        RBK_TCASE(s, leader_moves_mid_stream, 90);
        RBK_TCASE(s, leader_down_then_up, 90);
        RBK_TCASE(s, pushed_not_leader_for_partition, 60);
        RBK_TCASE(s, pushed_request_timed_out, 60);
        RBK_TCASE(s, pushed_leader_not_available, 60);
        RBK_TCASE(s, delayed_produce_response, 60);
        RBK_TCASE(s, fatal_pushed_out_of_order_sequence, 90);
        RBK_TCASE(s, fatal_test_fatal_error, 90);
        RBK_TCASE(s, fatal_gives_up, 60);
        RBK_TCASE(s, all_brokers_down_past_delivery_timeout, 60);
        RBK_TCASE(s, ring_compacts_while_partition_stuck, 60);
        RBK_TCASE(s, ring_grows_then_compacts_while_partition_stuck, 60);
        RBK_TCASE(s, ring_fatal_recovery_after_compaction, 60);
        RBK_TCASE(s, ring_close_after_compaction, 60);
        RBK_TCASE(s, closed_connections_are_reset, 60);
        return s;
}

RBK_TEST_MAIN()
