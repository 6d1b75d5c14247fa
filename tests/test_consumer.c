/* The group consumer against the mock cluster: bad input, at least once by
 * id across a crash, partition isolation, retry in place, shutdown with
 * handlers in flight, the poll API, stats and the stall watchdog. */
#include <inttypes.h>
#include <signal.h>
#include <sys/wait.h>

#include "consumer_internal.h" /* close_waiting(): the consumer's waits */
#include "consumer_support.h"
#include "harness.h"

/* ------------------------------------------------------------ bad input */

static rbk_verdict_t h_ok(const rbk_message_t *m, void *opaque) {
        if (opaque)
                cs_rec_add(opaque, m);
        return RBK_HANDLED;
}

START_TEST(bad_input) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        rbk_conf_t *conf = cs_conf(cl, "g-bad");

        ck_assert_ptr_null(rbk_consumer_new(NULL, e, sizeof(e)));
        /* No group.id. */
        rbk_conf_t *nog = rbk_conf_new();
        cs_set(nog, "bootstrap.servers", cl->bootstraps);
        ck_assert_ptr_null(rbk_consumer_new(nog, e, sizeof(e)));
        ck_assert_msg(strstr(e, "group.id") != NULL, "%s", e);
        rbk_conf_destroy(nog);
        /* Dead letters without a topic. */
        rbk_conf_t *dl = rbk_conf_dup(conf);
        cs_set(dl, "rbk.consumer.giveup", "deadletter");
        ck_assert_ptr_null(rbk_consumer_new(dl, e, sizeof(e)));
        ck_assert_msg(strstr(e, "deadletter.topic") != NULL, "%s", e);
        rbk_conf_destroy(dl);

        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        /* Not subscribed: run and poll refuse. */
        ck_assert_int_eq(rbk_consumer_run(c, h_ok, NULL), RBK_ERR_STATE);
        rbk_message_t *m = NULL;
        ck_assert_int_eq(rbk_consumer_poll(c, 0, &m), RBK_ERR_STATE);
        ck_assert_int_eq(rbk_consumer_run(c, NULL, NULL), RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_consumer_start(c, NULL, NULL),
                         RBK_ERR_INVALID_ARG);

        ck_assert_int_eq(rbk_consumer_subscribe(c, NULL, 1, e, sizeof(e)),
                         RBK_ERR_INVALID_ARG);
        const char *none[] = {"x"};
        ck_assert_int_eq(rbk_consumer_subscribe(c, none, 0, e, sizeof(e)),
                         RBK_ERR_INVALID_ARG);
        const char *bad[] = {"good", "bad topic!"};
        ck_assert_int_eq(rbk_consumer_subscribe(c, bad, 2, e, sizeof(e)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_msg(strstr(e, "topic 1") != NULL, "%s", e);
        const char *nul[] = {NULL};
        ck_assert_int_eq(rbk_consumer_subscribe(c, nul, 1, e, sizeof(e)),
                         RBK_ERR_INVALID_TOPIC);
        const char *empty[] = {""};
        ck_assert_int_eq(rbk_consumer_subscribe(c, empty, 1, e, sizeof(e)),
                         RBK_ERR_INVALID_TOPIC);
        /* Still not subscribed: the errors changed nothing. */
        ck_assert_int_eq(rbk_consumer_run(c, h_ok, NULL), RBK_ERR_STATE);

        /* Resolve on nothing. */
        ck_assert_int_eq(rbk_consumer_resolve(c, "t", 0, RBK_RESOLVE_EARLIEST,
                                              0, e, sizeof(e)),
                         RBK_ERR_NOT_FOUND);
        ck_assert_int_eq(
            rbk_consumer_resolve(c, "t", 0, (rbk_resolve_t)99, 0, e, sizeof(e)),
            RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_consumer_resolve(c, NULL, 0, RBK_RESOLVE_EARLIEST,
                                              0, e, sizeof(e)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_uint_eq(rbk_consumer_quarantined(c, NULL, 0), 0);
        ck_assert_int_eq(rbk_consumer_done(c, NULL, RBK_HANDLED),
                         RBK_ERR_INVALID_ARG);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        ck_assert_int_eq(st.version, RBK_CONSUMER_STATS_VERSION);
        ck_assert_int_eq(rbk_consumer_stats(NULL, &st), RBK_ERR_INVALID_ARG);
        rbk_consumer_stop(NULL);

        ck_assert_int_eq(rbk_consumer_close(c, 5000), RBK_OK);
        ck_assert_int_eq(rbk_consumer_close(c, 5000), RBK_OK); /* twice */
        ck_assert_int_eq(rbk_consumer_poll(c, 0, &m), RBK_ERR_SHUTDOWN);
        rbk_consumer_destroy(c);
        rbk_consumer_destroy(NULL);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ stats ABI */

/* rbk_consumer_stats_t as programs built against layout version 1 have it,
 * followed by bytes the library must never write. */
typedef struct {
        struct {
                int version;
                uint64_t counters[15];
                int64_t lag;
                double handler_ms_avg;
        } v1;
        unsigned char canary[64];
} old_cstats_t;

START_TEST(stats_write_only_the_callers_layout) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        rbk_conf_t *conf = cs_conf(cl, "g-abi");
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        /* 0: a zeroed struct; 1: RBK_CONSUMER_STATS_INIT of version 1;
         * others: uninitialised or unknown, filled as version 1. */
        const int versions[] = {0, 1, -7, 3, 999};
        for (size_t i = 0; i < G_N_ELEMENTS(versions); i++) {
                old_cstats_t old;
                memset(&old, 0xA5, sizeof(old));
                old.v1.version = versions[i];
                ck_assert_int_eq(
                    rbk_consumer_stats(c, (rbk_consumer_stats_t *)&old),
                    RBK_OK);
                ck_assert_int_eq(old.v1.version, 1);
                /* Every field written: consumed .. quarantined_partitions
                 * are 0 on a fresh consumer, dedup memory is not. */
                for (size_t k = 0; k < 14; k++)
                        ck_assert_uint_eq(old.v1.counters[k], 0);
                ck_assert_uint_ne(old.v1.counters[14], 0xA5A5A5A5A5A5A5A5u);
                ck_assert_int_eq(old.v1.lag, 0);
                ck_assert(old.v1.handler_ms_avg == 0.0);
                for (size_t k = 0; k < sizeof(old.canary); k++)
                        ck_assert_msg(old.canary[k] == 0xA5,
                                      "version %d: byte %zu past the "
                                      "version-1 layout written",
                                      versions[i], k);
        }
        /* Version 2 (the current layout): every byte of it, none after. */
        struct {
                rbk_consumer_stats_t st;
                unsigned char canary[64];
        } v2;
        memset(&v2, 0xA5, sizeof(v2));
        v2.st.version = 2;
        ck_assert_int_eq(rbk_consumer_stats(c, &v2.st), RBK_OK);
        ck_assert_int_eq(v2.st.version, 2);
        ck_assert_uint_eq(v2.st.consumed, 0);
        ck_assert_uint_eq(v2.st.out_of_range_disproved, 0);
        for (size_t k = 0; k < sizeof(v2.canary); k++)
                ck_assert_msg(v2.canary[k] == 0xA5,
                              "byte %zu past the version-2 layout written", k);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        ck_assert_int_eq(st.version, RBK_CONSUMER_STATS_VERSION);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ basic run */

typedef struct {
        rbk_consumer_t *c;
        cs_rec_t *rec;
} run_arg_t;

START_TEST(run_handles_everything_in_order) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-basic", 4);
        for (int p = 0; p < 4; p++)
                cs_produce(cl, "t-basic", p, 0, 200, "b");
        rbk_conf_t *conf = cs_conf(cl, "g-basic");
        cs_set(conf, "rbk.consumer.workers", "3");
        cs_set(conf, "rbk.consumer.queue.max", "20"); /* exercise pausing */
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-basic");
        cs_rec_t *rec = cs_rec_new();
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec), RBK_OK);
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec), RBK_ERR_STATE);
        rbk_message_t *m;
        ck_assert_int_eq(rbk_consumer_poll(c, 0, &m), RBK_ERR_STATE);
        ck_assert(CS_WAIT(cs_rec_distinct(rec) == 800, 60000));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);

        char miss[160] = "";
        ck_assert_int_eq(cs_rec_missing(rec, "b", 4, 200, miss, sizeof(miss)),
                         0);
        ck_assert_int_eq(rec->order_errors, 0);
        ck_assert_uint_eq(cs_rec_total(rec), 800); /* nothing twice */
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        ck_assert_uint_eq(st.handled, 800);
        ck_assert_uint_eq(st.consumed, 800);
        ck_assert_uint_eq(st.retried, 0);
        for (int p = 0; p < 4; p++)
                ck_assert_int_eq(
                    cs_committed(cl, "g-basic", "t-basic", p, NULL, 0), 200);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* Offsets handled are committed while the consumer runs (every
 * auto.commit.interval.ms), not only at a rebalance or at close: a crash
 * redelivers at most one interval. */
typedef struct {
        cs_cluster_t *cl;
        int64_t want;
} commit_wait_t;

static int committed_reaches(void *arg) {
        commit_wait_t *w = arg;
        return cs_committed(w->cl, "g-ac", "t-ac", 0, NULL, 0) == w->want;
}

START_TEST(offsets_are_committed_while_running) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-ac", 2);
        rbk_conf_t *conf = cs_conf(cl, "g-ac"); /* auto commit every 500 ms */
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-ac");
        cs_rec_t *rec = cs_rec_new();
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec), RBK_OK);
        commit_wait_t w = {cl, 0};
        for (int round = 1; round <= 3; round++) {
                cs_produce(cl, "t-ac", 0, (round - 1) * 50, 50, "ac");
                ck_assert(CS_WAIT(cs_rec_distinct(rec) == (size_t)round * 50,
                                  60000));
                w.want = round * 50;
                ck_assert_msg(cs_wait(committed_reaches, &w, 10000),
                              "round %d: committed offset %" PRId64
                              ", expected %" PRId64,
                              round,
                              cs_committed(cl, "g-ac", "t-ac", 0, NULL, 0),
                              w.want);
        }
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        ck_assert_uint_ge(st.commits, 3);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ at least once */

static int crash_after;
static int crash_fd;
/* Reachable at the crash, so memory checkers do not call it lost. */
static rbk_consumer_t *crash_consumer;

static rbk_verdict_t h_crash(const rbk_message_t *m, void *opaque) {
        static int n;
        char line[160];
        int len = snprintf(line, sizeof(line), "%s\n", m->id ? m->id : "-");
        if (write(crash_fd, line, (size_t)len) != len)
                rbk_test_child_exit(3);
        if (__atomic_add_fetch(&n, 1, __ATOMIC_SEQ_CST) >= crash_after)
                kill(getpid(), SIGKILL); /* a crash: nothing more committed */
        return RBK_HANDLED;
}

START_TEST(at_least_once_across_a_crash) {
        /* The child connects to the parent's mock cluster over loopback; it
         * is forked before this process touches librdkafka. */
        int addr[2], ids[2];
        ck_assert_int_eq(pipe(addr), 0);
        ck_assert_int_eq(pipe(ids), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                close(addr[1]);
                close(ids[0]);
                char bs[512] = "";
                ssize_t r = read(addr[0], bs, sizeof(bs) - 1);
                if (r <= 0)
                        rbk_test_child_exit(2);
                bs[r] = '\0';
                char e[512];
                rbk_conf_t *conf = rbk_conf_new();
                rbk_conf_set(conf, "bootstrap.servers", bs, e, sizeof(e));
                rbk_conf_set(conf, "group.id", "g-alo", e, sizeof(e));
                rbk_conf_set(conf, "session.timeout.ms", "6000", e, sizeof(e));
                rbk_conf_set(conf, "auto.commit.interval.ms", "300", e,
                             sizeof(e));
                rbk_conf_set(conf, "fetch.wait.max.ms", "50", e, sizeof(e));
                rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
                rbk_conf_destroy(conf);
                if (!c)
                        rbk_test_child_exit(4);
                crash_consumer = c;
                const char *topics[] = {"t-alo"};
                rbk_consumer_subscribe(c, topics, 1, e, sizeof(e));
                crash_fd = ids[1];
                crash_after = 250;
                rbk_consumer_run(c, h_crash, NULL);
                rbk_test_child_exit(5);
        }
        close(addr[0]);
        close(ids[1]);
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-alo", 4);
        for (int p = 0; p < 4; p++)
                cs_produce(cl, "t-alo", p, 0, 150, "a");
        ck_assert(write(addr[1], cl->bootstraps, strlen(cl->bootstraps)) > 0);
        close(addr[1]);

        /* What the crashed consumer handled. */
        cs_rec_t *rec = cs_rec_new();
        GString *buf = g_string_new(NULL);
        char chunk[4096];
        ssize_t r;
        while ((r = read(ids[0], chunk, sizeof(chunk))) > 0)
                g_string_append_len(buf, chunk, r);
        close(ids[0]);
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "child status %d", status);
        gchar **lines = g_strsplit(buf->str, "\n", -1);
        int before = 0;
        for (int i = 0; lines[i]; i++) {
                if (!*lines[i])
                        continue;
                rbk_message_t fake = {.topic = "t-alo", .id = lines[i]};
                cs_rec_add(rec, &fake);
                before++;
        }
        g_strfreev(lines);
        g_string_free(buf, TRUE);
        ck_assert_int_ge(before, 250); /* workers in parallel may add a few */

        /* A new consumer of the same group finishes the job. */
        rbk_conf_t *conf = cs_conf(cl, "g-alo");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-alo");
        cs_rec_t *rec2 = cs_rec_new();
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec2), RBK_OK);
        ck_assert(CS_WAIT(({
                                  g_mutex_lock(&rec2->lock);
                                  GHashTableIter it;
                                  gpointer k;
                                  g_hash_table_iter_init(&it, rec2->ids);
                                  while (g_hash_table_iter_next(&it, &k, NULL))
                                          if (!g_hash_table_contains(rec->ids,
                                                                     k))
                                                  g_hash_table_insert(
                                                      rec->ids, g_strdup(k),
                                                      GINT_TO_POINTER(1));
                                  g_mutex_unlock(&rec2->lock);
                                  cs_rec_distinct(rec) == 600;
                          }),
                          40000));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        char miss[160] = "";
        ck_assert_msg(cs_rec_missing(rec, "a", 4, 150, miss, sizeof(miss)) ==
                          0,
                      "missing %s", miss);
        /* At least once: the restart re-handled what was not committed, and
         * never an id that was not produced. */
        ck_assert_uint_eq(cs_rec_distinct(rec), 600);
        ck_assert_uint_ge(cs_rec_total(rec2), 600 - 250);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        cs_rec_free(rec2);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ isolation */

typedef struct {
        cs_rec_t *rec;
        GMutex lock;
        GCond cond;
        int released;
        int blocked; /* partition 0's handler is inside the block */
} block_t;

static rbk_verdict_t h_block_p0(const rbk_message_t *m, void *opaque) {
        block_t *b = opaque;
        if (m->partition == 0 && m->offset == 0) {
                gint64 end = g_get_monotonic_time() + cs_ms(10000) * 1000;
                g_mutex_lock(&b->lock);
                b->blocked = 1;
                while (!b->released &&
                       g_cond_wait_until(&b->cond, &b->lock, end))
                        ;
                g_mutex_unlock(&b->lock);
        }
        cs_rec_add(b->rec, m);
        return RBK_HANDLED;
}

static int count_partition(cs_rec_t *r, const char *topic, int p) {
        char pre[300];
        snprintf(pre, sizeof(pre), "%s/%d/", topic, p);
        int n = 0;
        g_mutex_lock(&r->lock);
        for (guint i = 0; i < r->log->len; i++)
                n += g_str_has_prefix(g_ptr_array_index(r->log, i), pre);
        g_mutex_unlock(&r->lock);
        return n;
}

START_TEST(blocked_partition_does_not_block_others) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-iso", 4);
        cs_produce(cl, "t-iso", 0, 0, 100, "i");
        rbk_conf_t *conf = cs_conf(cl, "g-iso");
        cs_set(conf, "rbk.consumer.workers", "2"); /* fewer than partitions */
        cs_set(conf, "rbk.consumer.queue.max", "10");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-iso");
        block_t b = {.rec = cs_rec_new()};
        g_mutex_init(&b.lock);
        g_cond_init(&b.cond);
        ck_assert_int_eq(rbk_consumer_start(c, h_block_p0, &b), RBK_OK);
        ck_assert(CS_WAIT(({
                                  g_mutex_lock(&b.lock);
                                  int y = b.blocked;
                                  g_mutex_unlock(&b.lock);
                                  y;
                          }),
                          60000));
        /* Messages for the other partitions arrive during the block. */
        gint64 t0 = g_get_monotonic_time();
        for (int p = 1; p < 4; p++)
                cs_produce(cl, "t-iso", p, 0, 100, "i");
        /* During the block the three other partitions finish completely. */
        ck_assert(CS_WAIT(count_partition(b.rec, "t-iso", 1) == 100 &&
                              count_partition(b.rec, "t-iso", 2) == 100 &&
                              count_partition(b.rec, "t-iso", 3) == 100,
                          9000));
        double during_ms = (double)(g_get_monotonic_time() - t0) / 1000.0;
        ck_assert_int_eq(count_partition(b.rec, "t-iso", 0), 0);
        /* The blocked partition holds at most rbk.consumer.queue.max. */
        char *js = rbk_consumer_stats_json(c);
        const char *p0 = strstr(js, "\"partition\":0,");
        ck_assert_ptr_nonnull(p0);
        const char *end = strchr(p0, '}');
        char obj[1024];
        snprintf(obj, sizeof(obj), "%.*s", (int)(end - p0), p0);
        ck_assert_msg(strstr(obj, "\"queued\":10,") != NULL, "%s", obj);
        ck_assert_msg(strstr(obj, "\"fetch_paused\":true") != NULL, "%s", obj);
        rbk_free(js);
        g_mutex_lock(&b.lock);
        int still_blocked = !b.released;
        b.released = 1;
        g_cond_broadcast(&b.cond);
        g_mutex_unlock(&b.lock);
        ck_assert(still_blocked);
        fprintf(stderr,
                "isolation: 300 messages of 3 partitions handled in %.0f ms "
                "while partition 0's handler was blocked\n",
                during_ms);
        ck_assert(CS_WAIT(count_partition(b.rec, "t-iso", 0) == 100, 10000));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(b.rec->order_errors, 0);
        rbk_consumer_destroy(c);
        cs_rec_free(b.rec);
        g_mutex_clear(&b.lock);
        g_cond_clear(&b.cond);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ retry */

typedef struct {
        cs_rec_t *rec;
        GMutex lock;
        int attempts_seen[8];
        int64_t retry_offset_seen[8];
        char retry_id_seen[8][64];
        int after_before_success; /* later offset of p1 handled first */
        int success;
        int others_during_backoff;
} retry_t;

static rbk_verdict_t h_retry(const rbk_message_t *m, void *opaque) {
        retry_t *r = opaque;
        if (m->partition == 1 && m->offset == 5) {
                g_mutex_lock(&r->lock);
                if (m->attempt <= 8) {
                        r->attempts_seen[m->attempt - 1] = 1;
                        r->retry_offset_seen[m->attempt - 1] = m->offset;
                        snprintf(r->retry_id_seen[m->attempt - 1], 64, "%s",
                                 m->id ? m->id : "");
                }
                int ok = m->attempt >= 3;
                r->success = ok;
                g_mutex_unlock(&r->lock);
                if (!ok)
                        return RBK_RETRY;
        } else if (m->partition == 1 && m->offset > 5) {
                g_mutex_lock(&r->lock);
                if (!r->success)
                        r->after_before_success++;
                g_mutex_unlock(&r->lock);
        } else if (m->partition != 1) {
                g_mutex_lock(&r->lock);
                if (r->attempts_seen[0] && !r->success)
                        r->others_during_backoff++;
                g_mutex_unlock(&r->lock);
        }
        cs_rec_add(r->rec, m);
        return RBK_HANDLED;
}

START_TEST(retry_hands_the_same_message_again) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-retry", 3);
        for (int p = 0; p < 3; p++)
                cs_produce(cl, "t-retry", p, 0, 10, "r");
        rbk_conf_t *conf = cs_conf(cl, "g-retry");
        cs_set(conf, "rbk.consumer.retry.backoff.ms", "300");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-retry");
        retry_t r = {.rec = cs_rec_new()};
        g_mutex_init(&r.lock);
        /* Other partitions get more messages while partition 1 backs off. */
        ck_assert_int_eq(rbk_consumer_start(c, h_retry, &r), RBK_OK);
        ck_assert(CS_WAIT(({
                                  g_mutex_lock(&r.lock);
                                  int y = r.attempts_seen[0];
                                  g_mutex_unlock(&r.lock);
                                  y;
                          }),
                          60000));
        cs_produce(cl, "t-retry", 0, 10, 20, "r");
        cs_produce(cl, "t-retry", 2, 10, 20, "r");
        ck_assert(CS_WAIT(cs_rec_distinct(r.rec) == 30 + 40, 60000));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        for (int a = 0; a < 3; a++) {
                ck_assert_msg(r.attempts_seen[a], "attempt %d not seen", a + 1);
                ck_assert_int_eq(r.retry_offset_seen[a], 5);
                ck_assert_str_eq(r.retry_id_seen[a], "r-1-5");
        }
        ck_assert_int_eq(r.attempts_seen[3], 0);
        ck_assert_int_eq(r.after_before_success, 0);
        ck_assert_int_gt(r.others_during_backoff, 0);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        rbk_consumer_stats(c, &st);
        ck_assert_uint_eq(st.retried, 2);
        ck_assert_int_eq(cs_committed(cl, "g-retry", "t-retry", 1, NULL, 0),
                         10);
        rbk_consumer_destroy(c);
        cs_rec_free(r.rec);
        g_mutex_clear(&r.lock);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* Pause mode: after max attempts the partition stays held, the hook fires,
 * and resolve(COMMITTED) hands the message again. */
typedef struct {
        cs_rec_t *rec;
        volatile int fail;
} giveup_t;

static rbk_verdict_t h_giveup(const rbk_message_t *m, void *opaque) {
        giveup_t *g = opaque;
        if (m->partition == 0 && m->offset == 2 && g->fail)
                return RBK_RETRY;
        cs_rec_add(g->rec, m);
        return RBK_HANDLED;
}

START_TEST(gave_up_partition_is_held_until_resolved) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-gu", 2);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-gu", p, 0, 6, "g");
        rbk_conf_t *conf = cs_conf(cl, "g-gu");
        cs_set(conf, "rbk.consumer.retry.backoff.ms", "20");
        cs_set(conf, "rbk.consumer.retry.max.attempts", "3");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-gu");
        giveup_t g = {.rec = cs_rec_new(), .fail = 1};
        ck_assert_int_eq(rbk_consumer_start(c, h_giveup, &g), RBK_OK);
        ck_assert(CS_WAIT(cs_events_count(evs, RBK_EV_HANDLER_GAVE_UP) == 1,
                          60000));
        ck_assert(CS_WAIT(count_partition(g.rec, "t-gu", 1) == 6, 10000));
        ck_assert_int_eq(count_partition(g.rec, "t-gu", 0), 2);
        rbk_event_t ev;
        ck_assert(cs_events_get(evs, RBK_EV_HANDLER_GAVE_UP, 0, &ev, NULL, 0));
        ck_assert_int_eq(ev.partition, 0);
        ck_assert_int_eq(ev.offset, 2);
        ck_assert_int_eq(ev.severity, RBK_SEV_ERROR);
        /* Nothing moves by itself. */
        ck_assert(!CS_WAIT(count_partition(g.rec, "t-gu", 0) > 2, 500));
        char *js = rbk_consumer_stats_json(c);
        ck_assert_msg(strstr(js, "\"held\":\"gave_up\"") != NULL, "%s", js);
        rbk_free(js);
        /* The partition that is fine cannot be "resolved". */
        ck_assert_int_eq(rbk_consumer_resolve(c, "t-gu", 1,
                                              RBK_RESOLVE_COMMITTED, 0, e,
                                              sizeof(e)),
                         RBK_ERR_NOT_QUARANTINED);
        g.fail = 0;
        ck_assert_int_eq(rbk_consumer_resolve(c, "t-gu", 0,
                                              RBK_RESOLVE_COMMITTED, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(count_partition(g.rec, "t-gu", 0) == 6, 10000));
        ck_assert_int_eq(g.rec->order_errors, 0);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-gu", "t-gu", 0, NULL, 0), 6);
        rbk_consumer_destroy(c);
        cs_rec_free(g.rec);
        cs_events_free(evs);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

typedef struct {
        cs_rec_t *rec;
        rbk_consumer_t *c;
        GMutex lock;
        GCond cond;
        int inside;
        int go;
        int close_waited; /* close() was waiting when the handlers went on */
} inflight_t;

static rbk_verdict_t h_inflight(const rbk_message_t *m, void *opaque) {
        inflight_t *f = opaque;
        if (m->offset == 3) {
                g_mutex_lock(&f->lock);
                f->inside++;
                g_cond_broadcast(&f->cond);
                while (!f->go)
                        g_cond_wait(&f->cond, &f->lock);
                g_mutex_unlock(&f->lock);
        }
        cs_rec_add(f->rec, m);
        return RBK_HANDLED;
}

/* Whether rbk_consumer_close() waits for the run to end: the run loop
 * took the stop (nothing new starts) and two threads wait on the
 * consumer's condition, the run loop for its handlers and close() for the
 * run loop. */
static int close_waiting(rbk_consumer_t *c) {
        g_mutex_lock(&c->lock);
        int y = c->stopping && c->cond_waiters >= 2;
        g_mutex_unlock(&c->lock);
        return y;
}

/* Lets the handlers finish once close() is waiting for them. */
static gpointer release_when_closing(gpointer arg) {
        inflight_t *f = arg;
        int waited = CS_WAIT(close_waiting(f->c), 5000);
        g_mutex_lock(&f->lock);
        f->close_waited = waited;
        f->go = 1;
        g_cond_broadcast(&f->cond);
        g_mutex_unlock(&f->lock);
        return NULL;
}

START_TEST(shutdown_commits_in_flight_and_nothing_after) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-sd", 3);
        for (int p = 0; p < 3; p++)
                cs_produce(cl, "t-sd", p, 0, 20, "s");
        rbk_conf_t *conf = cs_conf(cl, "g-sd");
        cs_set(conf, "auto.commit.interval.ms", "60000");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-sd");
        inflight_t f = {.rec = cs_rec_new(), .c = c};
        g_mutex_init(&f.lock);
        g_cond_init(&f.cond);
        ck_assert_int_eq(rbk_consumer_start(c, h_inflight, &f), RBK_OK);
        ck_assert(CS_WAIT(({
                                  g_mutex_lock(&f.lock);
                                  int y = f.inside;
                                  g_mutex_unlock(&f.lock);
                                  y == 3;
                          }),
                          60000));
        /* All three partitions are inside offset 3's handler. Stop, and let
         * the handlers finish only while close is already waiting. */
        GThread *t = g_thread_new("release", release_when_closing, &f);
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        g_thread_join(t);
        ck_assert_msg(f.close_waited,
                      "close() was not seen waiting for the handlers");
        for (int p = 0; p < 3; p++) {
                ck_assert_int_eq(count_partition(f.rec, "t-sd", p), 4);
                ck_assert_int_eq(cs_committed(cl, "g-sd", "t-sd", p, NULL, 0),
                                 4);
        }
        rbk_consumer_destroy(c);
        cs_rec_free(f.rec);
        g_mutex_clear(&f.lock);
        g_cond_clear(&f.cond);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ close */

/* librdkafka's main thread held once, right after it sent the group's
 * LeaveGroup: what reaches the group meanwhile is served in one batch with
 * the LeaveGroup response (the response that lets the group terminate). */
typedef struct {
        GMutex lock;
        GCond cond;
        int armed;
        int stalled;
        rbk_consumer_t *c;
        rbk__part_t *p;
        rd_kafka_resp_err_t err; /* of the commit sent during the stall */
        int sent;
} leave_stall_t;

static void leave_stall_log(int level, const char *fac, const char *line,
                            void *opaque) {
        leave_stall_t *s = opaque;
        cs_log_cb(level, fac, line, NULL);
        /* Logged right after the LeaveGroup request went out. */
        if (!fac || strcmp(fac, "CGRPJOINSTATE") || !strstr(line, "-> init"))
                return;
        g_mutex_lock(&s->lock);
        if (s->armed && !s->stalled) {
                s->stalled = 1;
                g_cond_broadcast(&s->cond);
                /* Long enough for the response to arrive and for the
                 * commit below to be sent, on a loaded machine too. */
                gint64 end = g_get_monotonic_time() +
                             cs_ms(600) * G_TIME_SPAN_MILLISECOND;
                while (g_cond_wait_until(&s->cond, &s->lock, end))
                        ;
        }
        g_mutex_unlock(&s->lock);
}

/* Another thread commits (as a pause, a seek or a resolution would) while
 * the group is being left. */
static gpointer commit_while_leaving(gpointer arg) {
        leave_stall_t *s = arg;
        gint64 end = g_get_monotonic_time() +
                     cs_ms(30000) * G_TIME_SPAN_MILLISECOND;
        g_mutex_lock(&s->lock);
        while (!s->stalled && g_cond_wait_until(&s->cond, &s->lock, end))
                ;
        int stalled = s->stalled;
        g_mutex_unlock(&s->lock);
        if (!stalled)
                return NULL; /* the test fails on s->sent */
        g_usleep((gulong)cs_ms(200) * 1000);
        int64_t off = 1;
        char *metas[1] = {(char *)""};
        rd_kafka_resp_err_t err = rbk__commit_explicit(s->c, &s->p, &off,
                                                       metas, 1);
        g_mutex_lock(&s->lock);
        s->err = err;
        s->sent = 1;
        g_mutex_unlock(&s->lock);
        return NULL;
}

/* A commit from another thread while close leaves the group would reach
 * librdkafka after the group's termination found nothing outstanding, and
 * librdkafka 2.0 aborts the process then (rd_kafka_cgrp_terminated()
 * asserts that no commit is in progress). Once close begins, only the
 * closing thread commits: the other is refused, and close commits what was
 * handled. */
START_TEST(close_refuses_commits_of_other_threads) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-cr", 1);
        cs_produce(cl, "t-cr", 0, 0, 10, "cr");
        leave_stall_t s;
        memset(&s, 0, sizeof(s));
        g_mutex_init(&s.lock);
        g_cond_init(&s.cond);
        rbk_conf_t *conf = cs_conf(cl, "g-cr");
        cs_set(conf, "auto.commit.interval.ms", "60000");
        cs_set(conf, "debug", "cgrp");
        rbk_conf_set_log_cb(conf, leave_stall_log, &s);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-cr");
        s.c = c;
        cs_rec_t *rec = cs_rec_new();
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec), RBK_OK);
        ck_assert(CS_WAIT(cs_rec_total(rec) == 10, 60000));
        g_mutex_lock(&c->lock);
        s.p = rbk__part_find(c, "t-cr", 0);
        ck_assert(s.p != NULL);
        rbk__part_ref(s.p);
        g_mutex_unlock(&c->lock);
        rbk_consumer_stop(c);

        g_mutex_lock(&s.lock);
        s.armed = 1;
        g_mutex_unlock(&s.lock);
        GThread *t = g_thread_new("committer", commit_while_leaving, &s);
        ck_assert_int_eq(rbk_consumer_close(c, 20000), RBK_OK);
        g_thread_join(t);
        ck_assert(s.stalled && s.sent);
        ck_assert_int_eq(s.err, RD_KAFKA_RESP_ERR__DESTROY);
        ck_assert_int_eq(cs_committed(cl, "g-cr", "t-cr", 0, NULL, 0), 10);

        rbk__part_unref(s.p);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        g_mutex_clear(&s.lock);
        g_cond_clear(&s.cond);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* Counts librdkafka's "leave" lines (a LeaveGroup sent, or found needless
 * for want of a coordinator) once close has begun. */
typedef struct {
        GMutex lock;
        int closing;
        int leaves;
} leave_count_t;

static void leave_count_log(int level, const char *fac, const char *line,
                            void *opaque) {
        leave_count_t *lc = opaque;
        cs_log_cb(level, fac, line, NULL);
        if (!fac || strcmp(fac, "LEAVE") || !strstr(line, "leave (in state"))
                return;
        g_mutex_lock(&lc->lock);
        if (lc->closing)
                lc->leaves++;
        g_mutex_unlock(&lc->lock);
}

/* Returns the leave lines seen while closing a consumer of @group that
 * handled the 10 messages of t-lv; @instance: group.instance.id or NULL. */
static int close_and_count_leaves(cs_cluster_t *cl, const char *group,
                                  const char *instance) {
        leave_count_t lc;
        memset(&lc, 0, sizeof(lc));
        g_mutex_init(&lc.lock);
        rbk_conf_t *conf = cs_conf(cl, group);
        cs_set(conf, "debug", "cgrp");
        if (instance)
                cs_set(conf, "group.instance.id", instance);
        rbk_conf_set_log_cb(conf, leave_count_log, &lc);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-lv");
        cs_rec_t *rec = cs_rec_new();
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec), RBK_OK);
        ck_assert(CS_WAIT(cs_rec_total(rec) == 10, 60000));
        rbk_consumer_stop(c);
        g_mutex_lock(&lc.lock);
        lc.closing = 1;
        g_mutex_unlock(&lc.lock);
        ck_assert_int_eq(rbk_consumer_close(c, 20000), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, group, "t-lv", 0, NULL, 0), 10);
        rbk_consumer_destroy(c);
        g_mutex_lock(&lc.lock);
        int leaves = lc.leaves;
        g_mutex_unlock(&lc.lock);
        cs_rec_free(rec);
        rbk_conf_destroy(conf);
        g_mutex_clear(&lc.lock);
        return leaves;
}

/* Close leaves the group before librdkafka terminates it, so the others
 * get the partitions at once, under either rebalance protocol (under the
 * incremental one librdkafka sends its LeaveGroup only once the revoke's
 * commit is answered, and a group terminated before that is not left); a
 * static member's close keeps its membership (docs/consumer.md). */
START_TEST(close_leaves_the_group_unless_static) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-lv", 1);
        cs_produce(cl, "t-lv", 0, 0, 10, "lv");
        ck_assert_int_eq(close_and_count_leaves(cl, "g-lv", NULL), 1);
        ck_assert_int_eq(close_and_count_leaves(cl, "g-lv-static", "lv-1"), 0);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ poll API */

START_TEST(poll_api) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        rbk_conf_t *conf = cs_conf(cl, "g-poll");
        cs_set(conf, "rbk.prefix", "pre.");
        cs_set(conf, "rbk.consumer.retry.backoff.ms", "10");
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        /* The cluster has the topic under its prefixed name. */
        cs_topic(cl, "pre.t-poll", 2);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "pre.t-poll", p, 0, 30, "p");
        const char *topics[] = {"t-poll"};
        ck_assert_int_eq(rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)),
                         RBK_OK);
        cs_rec_t *rec = cs_rec_new();
        int retried = 0, held_same = 0;
        gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
        while (cs_rec_distinct(rec) < 60 &&
               g_get_monotonic_time() < deadline) {
                rbk_message_t *m = NULL;
                ck_assert_int_eq(rbk_consumer_poll(c, 200, &m), RBK_OK);
                if (!m)
                        continue;
                ck_assert_str_eq(m->topic, "t-poll"); /* prefix stripped */
                const void *v;
                size_t sz;
                ck_assert_int_eq(rbk_message_header(m, RBK_MSGID_HEADER, &v,
                                                    &sz),
                                 RBK_OK);
                ck_assert_int_eq(rbk_message_header(m, "nope", &v, &sz),
                                 RBK_ERR_NOT_FOUND);
                if (m->offset == 7 && m->attempt == 1) {
                        /* While held, the same partition gives nothing. */
                        rbk_message_t *m2 = NULL;
                        ck_assert_int_eq(rbk_consumer_poll(c, 50, &m2), RBK_OK);
                        if (m2) {
                                held_same += m2->partition == m->partition;
                                ck_assert_int_eq(
                                    rbk_consumer_done(c, m2, RBK_RETRY),
                                    RBK_OK);
                        }
                        retried++;
                        ck_assert_int_eq(rbk_consumer_done(c, m, RBK_RETRY),
                                         RBK_OK);
                        continue;
                }
                cs_rec_add(rec, m);
                ck_assert_int_eq(rbk_consumer_done(c, m, RBK_HANDLED), RBK_OK);
        }
        ck_assert_uint_eq(cs_rec_distinct(rec), 60);
        ck_assert_int_eq(rec->order_errors, 0);
        ck_assert_int_ge(retried, 1);
        ck_assert_int_eq(held_same, 0);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        ck_assert_uint_ge(st.retried, 2);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_message_t *m;
        ck_assert_int_eq(rbk_consumer_poll(c, 0, &m), RBK_ERR_SHUTDOWN);
        for (int p = 0; p < 2; p++)
                ck_assert_int_eq(cs_committed(cl, "pre.g-poll", "pre.t-poll", p,
                                              NULL, 0),
                                 30);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* Every header of a message, in produced order, duplicate names and the
 * library's id included. */
START_TEST(headers_are_iterated_in_order) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-hdr", 1);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            cl->prk, RD_KAFKA_V_TOPIC("t-hdr"), RD_KAFKA_V_PARTITION(0),
            RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_HEADER("dup", "first", 5),
            RD_KAFKA_V_HEADER("other", NULL, 0),
            RD_KAFKA_V_HEADER("dup", "second", 6),
            RD_KAFKA_V_HEADER(RBK_MSGID_HEADER, "hdr-0", 5),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        ck_assert_msg(!err, "produce: %s", rd_kafka_err2str(err));
        ck_assert_int_eq(rd_kafka_flush(cl->prk, 20000), 0);
        rbk_conf_t *conf = cs_conf(cl, "g-hdr");
        cs_set(conf, "rbk.consumer.initial.offset", "earliest");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-hdr");
        rbk_message_t *m = NULL;
        gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
        while (!m && g_get_monotonic_time() < deadline)
                ck_assert_int_eq(rbk_consumer_poll(c, 200, &m), RBK_OK);
        ck_assert_ptr_nonnull(m);

        static const struct {
                const char *name, *value;
                size_t size;
        } want[] = {{"dup", "first", 5},
                    {"other", NULL, 0},
                    {"dup", "second", 6},
                    {RBK_MSGID_HEADER, "hdr-0", 5}};
        ck_assert_uint_eq(rbk_message_header_count(m), G_N_ELEMENTS(want));
        for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
                const char *name = NULL;
                const void *v = "unset";
                size_t sz = 99;
                ck_assert_int_eq(rbk_message_header_at(m, i, &name, &v, &sz),
                                 RBK_OK);
                ck_assert_str_eq(name, want[i].name);
                ck_assert_uint_eq(sz, want[i].size);
                if (want[i].value)
                        ck_assert(!memcmp(v, want[i].value, sz));
                else
                        ck_assert_ptr_null(v);
        }
        /* Past the end: not found, nothing written. */
        const char *name = "unchanged";
        ck_assert_int_eq(rbk_message_header_at(m, G_N_ELEMENTS(want), &name,
                                               NULL, NULL),
                         RBK_ERR_NOT_FOUND);
        ck_assert_str_eq(name, "unchanged");
        ck_assert_int_eq(rbk_message_header_at(m, SIZE_MAX, NULL, NULL, NULL),
                         RBK_ERR_NOT_FOUND);
        /* Every out-pointer may be NULL. */
        ck_assert_int_eq(rbk_message_header_at(m, 1, NULL, NULL, NULL), RBK_OK);
        ck_assert_int_eq(rbk_message_header_at(NULL, 0, &name, NULL, NULL),
                         RBK_ERR_INVALID_ARG);
        ck_assert_uint_eq(rbk_message_header_count(NULL), 0);
        /* By name: the last of that name. */
        const void *v;
        size_t sz;
        ck_assert_int_eq(rbk_message_header(m, "dup", &v, &sz), RBK_OK);
        ck_assert_uint_eq(sz, 6);
        ck_assert(!memcmp(v, "second", 6));

        ck_assert_int_eq(rbk_consumer_done(c, m, RBK_HANDLED), RBK_OK);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ stall, stats */

typedef struct {
        GMutex lock;
        GCond cond;
        int go;
} stall_t;

static rbk_verdict_t h_stall(const rbk_message_t *m, void *opaque) {
        stall_t *s = opaque;
        if (m->partition == 0 && m->offset == 0) {
                g_mutex_lock(&s->lock);
                while (!s->go)
                        g_cond_wait(&s->cond, &s->lock);
                g_mutex_unlock(&s->lock);
        }
        return RBK_HANDLED;
}

static int stalls_of(cs_events_t *h, int32_t partition) {
        int n = 0;
        g_mutex_lock(&h->lock);
        for (guint i = 0; i < h->evs->len; i++) {
                cs_ev_t *e = g_ptr_array_index(h->evs, i);
                n += e->ev.cls == RBK_EV_PARTITION_STALLED &&
                     e->ev.partition == partition;
        }
        g_mutex_unlock(&h->lock);
        return n;
}

START_TEST(stall_watchdog_and_stats) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-stall", 2);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-stall", p, 0, 5, "st");
        rbk_conf_t *conf = cs_conf(cl, "g-stall");
        cs_set(conf, "rbk.consumer.stall.timeout.ms", "800");
        cs_events_t *evs = cs_events_new();
        rbk_conf_set_hook(conf, cs_hook, evs);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-stall");
        stall_t s = {0};
        g_mutex_init(&s.lock);
        g_cond_init(&s.cond);
        ck_assert_int_eq(rbk_consumer_start(c, h_stall, &s), RBK_OK);
        ck_assert(CS_WAIT(stalls_of(evs, 0) >= 1, 60000));
        /* Once per stall, not every check. */
        ck_assert(!CS_WAIT(stalls_of(evs, 0) > 1, 1500));
        /* Partition 1 is fine (a very slow machine may have reported it
         * while its first fetch was pending, once). */
        ck_assert_int_le(stalls_of(evs, 1), 1);
        char *js = rbk_consumer_stats_json(c);
        ck_assert_ptr_nonnull(js);
        ck_assert_msg(strstr(js, "\"partitions\":[{\"topic\":\"t-stall\"") !=
                          NULL,
                      "%s", js);
        ck_assert_msg(strstr(js, "\"handler_ms_avg\"") != NULL, "%s", js);
        rbk_free(js);
        /* The count is taken just before the hook is called. */
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert(CS_WAIT(({
                                  rbk_consumer_stats(c, &st);
                                  st.stalls == (uint64_t)(stalls_of(evs, 0) +
                                                          stalls_of(evs, 1));
                          }),
                          5000));
        ck_assert_uint_eq(st.assigned_partitions, 2);
        g_mutex_lock(&s.lock);
        s.go = 1;
        g_cond_broadcast(&s.cond);
        g_mutex_unlock(&s.lock);
        ck_assert(CS_WAIT(({
                                  rbk_consumer_stats(c, &st);
                                  st.handled == 10;
                          }),
                          10000));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        rbk_consumer_destroy(c);
        cs_events_free(evs);
        g_mutex_clear(&s.lock);
        g_cond_clear(&s.cond);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ signals */

static rbk_consumer_t *sig_consumer;
static void on_term(int sig) {
        rbk_consumer_stop(sig_consumer);
}

static gpointer raise_when_done(gpointer a) {
        cs_rec_t *r = a;
        CS_WAIT(cs_rec_distinct(r) == 10, 60000);
        kill(getpid(), SIGUSR1);
        return NULL;
}

START_TEST(run_returns_after_sigterm) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-sig", 1);
        cs_produce(cl, "t-sig", 0, 0, 10, "sig");
        rbk_conf_t *conf = cs_conf(cl, "g-sig");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-sig");
        sig_consumer = c;
        struct sigaction sa = {0};
        sa.sa_handler = on_term;
        sigaction(SIGUSR1, &sa, NULL);
        cs_rec_t *rec = cs_rec_new();
        /* A thread raises the signal once everything is handled. */
        GThread *t = g_thread_new("raise", raise_when_done, rec);
        ck_assert_int_eq(rbk_consumer_run(c, h_ok, rec), RBK_OK);
        g_thread_join(t);
        ck_assert_uint_eq(cs_rec_distinct(rec), 10);
        ck_assert_int_eq(cs_committed(cl, "g-sig", "t-sig", 0, NULL, 0), 10);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ dedup */

START_TEST(duplicates_are_dropped_but_committed) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-dup", 2);
        for (int p = 0; p < 2; p++) {
                cs_produce(cl, "t-dup", p, 0, 10, "u");
                cs_produce(cl, "t-dup", p, 2, 5, "u"); /* ids 2..6 again */
                cs_produce(cl, "t-dup", p, 10, 3, "u");
        }
        rbk_conf_t *conf = cs_conf(cl, "g-dup");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-dup");
        cs_rec_t *rec = cs_rec_new();
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_start(c, h_ok, rec), RBK_OK);
        /* At least: a rebalance of the mock's group (it sometimes rejoins
         * while the first join settles) re-reads what was not committed
         * yet, and the dedup window drops that again. */
        ck_assert_msg(CS_WAIT(({
                                      rbk_consumer_stats(c, &st);
                                      st.handled + st.duplicates_dropped >= 36 &&
                                          cs_rec_distinct(rec) == 26;
                              }),
                              90000),
                      "handled %" PRIu64 " dropped %" PRIu64 " distinct %u",
                      st.handled, st.duplicates_dropped,
                      (unsigned)cs_rec_distinct(rec));
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        /* Every id once; the duplicates never reached the handler, yet
         * their offsets were stored and committed. */
        ck_assert_uint_eq(cs_rec_distinct(rec), 26);
        ck_assert_uint_eq(cs_rec_total(rec), 26);
        ck_assert_uint_ge(st.duplicates_dropped, 10);
        for (int p = 0; p < 2; p++)
                ck_assert_int_eq(cs_committed(cl, "g-dup", "t-dup", p, NULL, 0),
                                 18);
        char *js = rbk_consumer_stats_json(c);
        ck_assert_ptr_nonnull(js);
        rbk_free(js);
        rbk_consumer_destroy(c);
        cs_rec_free(rec);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ lost assignment */

typedef struct {
        GMutex lock;
        GCond cond;
        int go;      /* the handler of offset 0 may return */
        int holding; /* the handler of offset 0 is running */
        int lost, assigned;
        cs_rec_t *rec;
} lost_t;

static rbk_verdict_t h_lost(const rbk_message_t *m, void *opaque) {
        lost_t *l = opaque;
        cs_rec_add(l->rec, m);
        if (m->offset == 0) {
                g_mutex_lock(&l->lock);
                l->holding = 1;
                g_cond_broadcast(&l->cond);
                while (!l->go)
                        g_cond_wait(&l->cond, &l->lock);
                g_mutex_unlock(&l->lock);
        }
        return RBK_HANDLED;
}

static void lost_rebalance(rbk_rebalance_t what, const char *topic,
                           int32_t partition, void *opaque) {
        lost_t *l = opaque;
        g_mutex_lock(&l->lock);
        if (what == RBK_LOST)
                l->lost++;
        else if (what == RBK_ASSIGNED)
                l->assigned++;
        g_mutex_unlock(&l->lock);
}

static int lost_get(lost_t *l, int *field) {
        g_mutex_lock(&l->lock);
        int v = *field;
        g_mutex_unlock(&l->lock);
        return v;
}

/* A handler still running when its partition is lost (the group
 * coordinator forgot the member) finishes after the loss; the partition
 * comes straight back to the same consumer, which reads it again from the
 * last commit (nothing was committed). The message that handler finished
 * is dropped by the dedup window, not handed to the handler again. */
START_TEST(handled_after_loss_is_not_handed_again) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-lost", 1);
        cs_produce(cl, "t-lost", 0, 0, 5, "l");
        rbk_conf_t *conf = cs_conf(cl, "g-lost");
        lost_t l;
        memset(&l, 0, sizeof(l));
        g_mutex_init(&l.lock);
        g_cond_init(&l.cond);
        l.rec = cs_rec_new();
        rbk_conf_set_rebalance_cb(conf, lost_rebalance, &l);
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "t-lost");
        ck_assert_int_eq(rbk_consumer_start(c, h_lost, &l), RBK_OK);
        ck_assert_msg(CS_WAIT(lost_get(&l, &l.holding), 60000),
                      "offset 0 never reached the handler");
        /* The coordinator no longer knows the member: the assignment is
         * lost while the handler of offset 0 still runs. */
        rd_kafka_mock_push_request_errors(
            cl->mc, 12 /* Heartbeat */, 3, RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
            RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
            RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID);
        ck_assert_msg(CS_WAIT(lost_get(&l, &l.lost) >= 1, 30000),
                      "the assignment was never lost");
        g_mutex_lock(&l.lock);
        l.go = 1;
        g_cond_broadcast(&l.cond);
        g_mutex_unlock(&l.lock);
        /* Assigned back; offsets 0..4 are read again, 1..4 handled. */
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_msg(CS_WAIT(({
                                      rbk_consumer_stats(c, &st);
                                      cs_rec_distinct(l.rec) == 5 &&
                                          lost_get(&l, &l.assigned) >= 2;
                              }),
                              60000),
                      "not every message handled after the loss");
        rbk_consumer_stop(c);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        /* Offset 0 reached the handler once; the copy read again after the
         * loss was dropped as a duplicate. */
        g_mutex_lock(&l.rec->lock);
        gpointer n0 = g_hash_table_lookup(l.rec->ids, "l-0-0");
        g_mutex_unlock(&l.rec->lock);
        ck_assert_int_eq(GPOINTER_TO_INT(n0), 1);
        ck_assert_uint_ge(st.duplicates_dropped, 1);
        rbk_consumer_destroy(c);
        cs_rec_free(l.rec);
        g_mutex_clear(&l.lock);
        g_cond_clear(&l.cond);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("consumer");
        RBK_TCASE(s, bad_input, 120);
        RBK_TCASE(s, stats_write_only_the_callers_layout, 60);
        RBK_TCASE(s, run_handles_everything_in_order, 120);
        RBK_TCASE(s, offsets_are_committed_while_running, 120);
        RBK_TCASE(s, at_least_once_across_a_crash, 120);
        RBK_TCASE(s, blocked_partition_does_not_block_others, 120);
        RBK_TCASE(s, retry_hands_the_same_message_again, 120);
        RBK_TCASE(s, gave_up_partition_is_held_until_resolved, 120);
        RBK_TCASE(s, shutdown_commits_in_flight_and_nothing_after, 120);
        RBK_TCASE(s, close_refuses_commits_of_other_threads, 120);
        RBK_TCASE(s, close_leaves_the_group_unless_static, 120);
        RBK_TCASE(s, poll_api, 120);
        RBK_TCASE(s, headers_are_iterated_in_order, 60);
        RBK_TCASE(s, stall_watchdog_and_stats, 120);
        RBK_TCASE(s, run_returns_after_sigterm, 120);
        RBK_TCASE(s, duplicates_are_dropped_but_committed, 120);
        RBK_TCASE(s, handled_after_loss_is_not_handed_again, 180);
        return s;
}

RBK_TEST_MAIN()
