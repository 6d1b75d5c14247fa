/* Who commits offsets: rbk_consumer_commit() and enable.auto.commit=false
 * (only that call, revoke and close commit), and, with a persistent dedup
 * store, the library's own periodic commit that saves the dedup windows
 * before committing what they cover: consumers killed with SIGKILL at
 * random points, the saves and the gap before the commit included, apply
 * no effect twice and lose no id.
 *
 * Crashing consumers run in forked children. The mock cluster lives in a
 * child of its own (a mock cluster is reachable from other processes), so
 * this process creates no librdkafka handle before its last fork. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <sys/wait.h>

#include "consumer_support.h"
#include "harness.h"
#include "robustkafka/dedup.h"

/* ------------------------------------------------------------ processes */

/* The mock cluster's process: creates @ntopics topics "<prefix><i>" of
 * @parts partitions, hands the bootstrap servers over a pipe, then the
 * produce requests it reads (one line each: topic partition id), and
 * lives until its pipe closes. */
typedef struct cluster_proc_s {
        pid_t pid;
        int wfd; /* requests to the cluster process */
        int rfd; /* its answers */
        char bootstraps[512];
} cluster_proc_t;

/* What a child process leaves allocated when it ends with rbk_test_child_exit(): kept
 * reachable, so that a run under valgrind does not count it as a leak of
 * the child (whose exit status the parent reads). */
static void *volatile child_keep[8];

static void cluster_child(int rfd, int wfd) {
        cs_cluster_t *cl = cs_cluster_new();
        child_keep[0] = cl;
        size_t n = strlen(cl->bootstraps);
        if (write(wfd, cl->bootstraps, n + 1) != (ssize_t)(n + 1))
                rbk_test_child_exit(2);
        FILE *in = fdopen(rfd, "r");
        char line[1024];
        while (fgets(line, sizeof(line), in)) {
                char topic[256], id[256];
                int part, nparts;
                if (sscanf(line, "T %255s %d", topic, &nparts) == 2) {
                        rd_kafka_mock_topic_create(cl->mc, topic, nparts, 3);
                } else if (sscanf(line, "P %255s %d %255s", topic, &part,
                                  id) == 3) {
                        rd_kafka_resp_err_t err;
                        do {
                                err = rd_kafka_producev(
                                    cl->prk, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_PARTITION(part),
                                    RD_KAFKA_V_VALUE(id, strlen(id)),
                                    RD_KAFKA_V_HEADER(RBK_MSGID_HEADER, id,
                                                      (ssize_t)strlen(id)),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_END);
                                if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                        rd_kafka_poll(cl->prk, 10);
                        } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
                        if (err)
                                rbk_test_child_exit(3);
                        continue; /* no answer: flushed by "F" */
                } else if (line[0] == 'F') {
                        if (rd_kafka_flush(cl->prk, 20000))
                                rbk_test_child_exit(4);
                }
                if (write(wfd, "k", 1) != 1)
                        rbk_test_child_exit(5);
        }
        rd_kafka_flush(cl->prk, 5000);
        /* No destroy: the process ends with the cluster. */
        rbk_test_child_exit(0);
}

static void cluster_start(cluster_proc_t *cp) {
        int to[2], from[2];
        ck_assert_int_eq(pipe(to), 0);
        ck_assert_int_eq(pipe(from), 0);
        fflush(NULL);
        cp->pid = fork();
        ck_assert_int_ge(cp->pid, 0);
        if (cp->pid == 0) {
                close(to[1]);
                close(from[0]);
                cluster_child(to[0], from[1]);
        }
        close(to[0]);
        close(from[1]);
        cp->wfd = to[1];
        cp->rfd = from[0];
        size_t n = 0;
        for (;;) {
                ssize_t r = read(cp->rfd, cp->bootstraps + n, 1);
                ck_assert_msg(r == 1, "cluster process failed to start");
                if (cp->bootstraps[n] == '\0')
                        break;
                ck_assert(++n < sizeof(cp->bootstraps));
        }
}

static void cluster_cmd(cluster_proc_t *cp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void cluster_cmd(cluster_proc_t *cp, const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        ck_assert(n > 0 && (size_t)n < sizeof(buf));
        ck_assert_int_eq(write(cp->wfd, buf, (size_t)n), n);
        if (buf[0] != 'P') {
                char k;
                ck_assert_msg(read(cp->rfd, &k, 1) == 1,
                              "cluster process died");
        }
}

static void cluster_stop(cluster_proc_t *cp) {
        close(cp->wfd);
        int status;
        waitpid(cp->pid, &status, 0);
        close(cp->rfd);
}

static void kill_child(pid_t pid) {
        int status;
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
}

/* A configuration for a consumer of the cluster process. */
static rbk_conf_t *proc_conf(const char *bootstraps, const char *group) {
        cs_cluster_t cl = {.bootstraps = (char *)bootstraps};
        rbk_conf_t *conf = cs_conf(&cl, group);
        /* A killed member is out of the group sooner (the mock's first
         * join takes 3 s: the session must outlast it). */
        cs_set(conf, "session.timeout.ms", "4000");
        cs_set(conf, "heartbeat.interval.ms", "500");
        return conf;
}

/* ------------------------------------------------------------ the API */

START_TEST(commit_states) {
        char e[512];
        ck_assert_int_eq(rbk_consumer_commit(NULL, 0, e, sizeof(e)),
                         RBK_ERR_INVALID_ARG);
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "cm-s", 1);
        rbk_conf_t *conf = cs_conf(cl, "cm-s-g");
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        ck_assert_int_eq(rbk_consumer_commit(c, 1000, e, sizeof(e)),
                         RBK_ERR_STATE);
        const char *t[] = {"cm-s"};
        ck_assert_int_eq(rbk_consumer_subscribe(c, t, 1, e, sizeof(e)), RBK_OK);
        /* Nothing stored: nothing to do. */
        ck_assert_int_eq(rbk_consumer_commit(c, 1000, e, sizeof(e)), RBK_OK);
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(rbk_consumer_commit(c, 1000, e, sizeof(e)),
                         RBK_ERR_SHUTDOWN);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* Inside a handler (a worker thread, while the poll thread runs): the
 * committed offset is the handler's own offset (what came before it is
 * stored, it is not yet). */
typedef struct inh_s {
        rbk_consumer_t *c;
        int n, bad;
        int64_t at;
        char err[512];
} inh_t;

static rbk_verdict_t h_commit_inside(const rbk_message_t *m, void *opaque) {
        inh_t *s = opaque;
        if (m->offset == s->at) {
                rbk_err_t r = rbk_consumer_commit(s->c, 5000, s->err,
                                                  sizeof(s->err));
                if (r != RBK_OK)
                        s->bad = (int)r;
        }
        __atomic_add_fetch(&s->n, 1, __ATOMIC_SEQ_CST);
        return RBK_HANDLED;
}

static int inh_n(inh_t *s) { return __atomic_load_n(&s->n, __ATOMIC_SEQ_CST); }

START_TEST(commit_inside_handler) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "cm-h", 1);
        cs_produce(cl, "cm-h", 0, 0, 30, "h");
        rbk_conf_t *conf = cs_conf(cl, "cm-h-g");
        cs_set(conf, "enable.auto.commit", "false");
        inh_t s = {0};
        s.at = 12;
        s.c = cs_consumer_subscribed(conf, "cm-h");
        ck_assert_int_eq(rbk_consumer_start(s.c, h_commit_inside, &s), RBK_OK);
        ck_assert(CS_WAIT(inh_n(&s) >= 30, 30000));
        ck_assert_msg(s.bad == 0, "commit in handler: %s: %s",
                      rbk_err2name(s.bad), s.err);
        /* No periodic commit with enable.auto.commit=false. */
        g_usleep(1200 * 1000);
        ck_assert_int_eq(cs_committed(cl, "cm-h-g", "cm-h", 0, NULL, 0), 12);
        /* From another thread, everything handled. */
        ck_assert_int_eq(rbk_consumer_commit(s.c, 5000, e, sizeof(e)), RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "cm-h-g", "cm-h", 0, NULL, 0), 30);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        rbk_consumer_stats(s.c, &st);
        ck_assert_uint_ge(st.commits, 2);
        ck_assert_int_eq(rbk_consumer_close(s.c, 10000), RBK_OK);
        rbk_consumer_destroy(s.c);
        rbk_conf_destroy(conf);
        cs_cluster_destroy(cl);
}
END_TEST

/* enable.auto.commit=false: a consumer handles N messages with the poll
 * API, commits after K of them, and is killed. The next consumer of the
 * group gets exactly offsets K..N-1. */
#define MC_N 40
#define MC_K 17

static void manual_child(const char *bootstraps, int wfd) {
        rbk_conf_t *conf = proc_conf(bootstraps, "cm-m-g");
        cs_set(conf, "enable.auto.commit", "false");
        char e[512];
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        const char *t[] = {"cm-m"};
        if (!c || rbk_consumer_subscribe(c, t, 1, e, sizeof(e)))
                rbk_test_child_exit(20);
        int handled = 0;
        char result = 'd';
        while (handled < MC_N) {
                rbk_message_t *m = NULL;
                if (rbk_consumer_poll(c, 200, &m) != RBK_OK)
                        rbk_test_child_exit(21);
                if (!m)
                        continue;
                if (m->offset != handled)
                        result = 'o';
                if (rbk_consumer_done(c, m, RBK_HANDLED) != RBK_OK)
                        rbk_test_child_exit(22);
                if (++handled == MC_K &&
                    rbk_consumer_commit(c, 5000, e, sizeof(e)) != RBK_OK)
                        result = 'c';
        }
        /* Go on polling (nothing comes) past a few auto-commit intervals
         * of the configuration, then report. */
        int64_t until = g_get_monotonic_time() + 1200 * 1000;
        while (g_get_monotonic_time() < until) {
                rbk_message_t *m = NULL;
                rbk_consumer_poll(c, 100, &m);
                if (m)
                        result = 'x';
        }
        if (write(wfd, &result, 1) != 1)
                rbk_test_child_exit(23);
        for (;;)
                pause();
}

START_TEST(manual_commit_exact_redelivery) {
        cluster_proc_t cp;
        cluster_start(&cp);
        cluster_cmd(&cp, "T cm-m 1\n");
        for (int i = 0; i < MC_N; i++)
                cluster_cmd(&cp, "P cm-m 0 m-%d\n", i);
        cluster_cmd(&cp, "F\n");

        int pfd[2];
        ck_assert_int_eq(pipe(pfd), 0);
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                close(pfd[0]);
                manual_child(cp.bootstraps, pfd[1]);
        }
        close(pfd[1]);
        char r = 0;
        ssize_t n;
        do
                n = read(pfd[0], &r, 1);
        while (n < 0 && errno == EINTR);
        close(pfd[0]);
        kill_child(pid);
        ck_assert_msg(n == 1 && r == 'd', "child: %c", n == 1 ? r : '?');

        /* From here on this process has librdkafka handles: no fork. */
        cs_cluster_t cl = {.bootstraps = cp.bootstraps};
        ck_assert_int_eq(cs_committed(&cl, "cm-m-g", "cm-m", 0, NULL, 0), MC_K);

        rbk_conf_t *conf = proc_conf(cp.bootstraps, "cm-m-g");
        cs_set(conf, "enable.auto.commit", "false");
        rbk_consumer_t *c = cs_consumer_subscribed(conf, "cm-m");
        int64_t expect = MC_K;
        int64_t until = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
        while (expect < MC_N && g_get_monotonic_time() < until) {
                rbk_message_t *m = NULL;
                ck_assert_int_eq(rbk_consumer_poll(c, 200, &m), RBK_OK);
                if (!m)
                        continue;
                ck_assert_int_eq(m->offset, expect);
                char id[32];
                snprintf(id, sizeof(id), "m-%d", (int)expect);
                ck_assert_str_eq(m->id, id);
                expect++;
                ck_assert_int_eq(rbk_consumer_done(c, m, RBK_HANDLED), RBK_OK);
        }
        ck_assert_int_eq(expect, MC_N);
        /* Nothing more comes. */
        rbk_message_t *m = NULL;
        ck_assert_int_eq(rbk_consumer_poll(c, 500, &m), RBK_OK);
        ck_assert_ptr_null(m);
        /* Close commits. */
        ck_assert_int_eq(rbk_consumer_close(c, 10000), RBK_OK);
        ck_assert_int_eq(cs_committed(&cl, "cm-m-g", "cm-m", 0, NULL, 0), MC_N);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        cluster_stop(&cp);
}
END_TEST

/* ------------------------------------------------------------ kill -9 */

/* Every seed: its own topic (2 partitions), group and SQLite database;
 * CK_N ids, about a third of them written again later (a producer's
 * duplicate), consumed by CK_LIVES consumer processes in turn, each but
 * the last killed with SIGKILL at a random moment after its assignment.
 * The handler applies each id's effect (a counter in the application's
 * table) and records the id in the same transaction; the library commits
 * every 100 ms with a 30 ms pause between the window save and the commit
 * (RBK_TEST_COMMIT_DELAY_MS), and the store sleeps up to 15 ms inside each
 * save, so the kills land before, inside, between and after both. */
#define CK_SEEDS_MAX 20
/* 20 seeds; fewer under valgrind, where each process runs ~20x slower. */
#define CK_SEEDS ((int)rbk_test_scale(CK_SEEDS_MAX, 3))
#define CK_N 240
#define CK_LIVES 4

typedef struct slow_store_s {
        rbk_dedup_store_t *inner;
        GMutex lock;
        GRand *rand;
} slow_store_t;

static rbk_err_t ss_load(const char *g, const char *t, int32_t p, void **b,
                         size_t *sz, int64_t *no, char *e, size_t esz,
                         void *opaque) {
        slow_store_t *ss = opaque;
        return ss->inner->load(g, t, p, b, sz, no, e, esz, ss->inner->opaque);
}

static rbk_err_t ss_save(const char *g, const char *t, int32_t p,
                         const void *b, size_t sz, int64_t no, char *e,
                         size_t esz, void *opaque) {
        slow_store_t *ss = opaque;
        g_mutex_lock(&ss->lock);
        gint32 us = g_rand_int_range(ss->rand, 0, 15000);
        g_mutex_unlock(&ss->lock);
        g_usleep((gulong)us);
        return ss->inner->save(g, t, p, b, sz, no, e, esz, ss->inner->opaque);
}

static int ss_seen(const char *g, const char *t, int32_t p, const void *id,
                   size_t len, char *e, size_t esz, void *opaque) {
        slow_store_t *ss = opaque;
        return ss->inner->seen(g, t, p, id, len, e, esz, ss->inner->opaque);
}

typedef struct app_s {
        GMutex lock;
        sqlite3 *db;
        const char *group;
        int afd; /* 'a' once assigned, or -1 */
} app_t;

static rbk_verdict_t h_effect(const rbk_message_t *m, void *opaque) {
        app_t *a = opaque;
        char e[256];
        rbk_verdict_t v = RBK_RETRY;
        g_mutex_lock(&a->lock);
        sqlite3_stmt *st = NULL;
        if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) ==
                SQLITE_OK &&
            sqlite3_prepare_v2(a->db,
                               "INSERT INTO effects (id, n) VALUES (?1, 1)"
                               " ON CONFLICT (id) DO UPDATE SET n = n + 1",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_DONE &&
            rbk_dedup_sqlite_record_in_txn(a->db, a->group, m, e,
                                           sizeof(e)) == RBK_OK &&
            sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
                v = RBK_HANDLED;
        else
                sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_finalize(st);
        g_mutex_unlock(&a->lock);
        g_usleep(2000);
        return v;
}

static void app_rebalance(rbk_rebalance_t what, const char *topic,
                          int32_t partition, void *opaque) {
        app_t *a = opaque;
        if (what == RBK_ASSIGNED && a->afd >= 0) {
                if (write(a->afd, "a", 1) != 1)
                        rbk_test_child_exit(30);
                a->afd = -1;
        }
}

static int64_t db_int(sqlite3 *db, const char *sql) {
        sqlite3_stmt *st;
        int64_t v = -1;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

/* One consumer process of a seed. @last: runs until every id's effect is
 * applied and nothing is left to read, closes, exits 0 (1: ids missing
 * after 60 s). Otherwise runs until killed. */
static void kill_child_main(const char *bootstraps, const char *dbpath,
                            int seed, int life, int last, int wfd) {
        char group[64], topic[64], e[512];
        snprintf(group, sizeof(group), "cd-g-%d", seed);
        snprintf(topic, sizeof(topic), "cd-%d", seed);
        setenv("RBK_TEST_COMMIT_DELAY_MS", "30", 1);
        app_t a = {.group = group, .afd = wfd};
        g_mutex_init(&a.lock);
        if (sqlite3_open(dbpath, &a.db) != SQLITE_OK)
                rbk_test_child_exit(31);
        sqlite3_busy_timeout(a.db, 10000);
        rbk_dedup_store_t *inner = rbk_dedup_sqlite_new(dbpath, e, sizeof(e));
        if (!inner)
                rbk_test_child_exit(32);
        slow_store_t *ss = g_new0(slow_store_t, 1);
        ss->inner = inner;
        g_mutex_init(&ss->lock);
        ss->rand = g_rand_new_with_seed((guint32)(seed * 100 + life));
        rbk_dedup_store_t st = RBK_DEDUP_STORE_INIT;
        st.load = ss_load;
        st.save = ss_save;
        st.seen = ss_seen;
        st.opaque = ss; /* leaked with the process */
        rbk_conf_t *conf = proc_conf(bootstraps, group);
        cs_set(conf, "auto.commit.interval.ms", "100");
        cs_set(conf, "rbk.consumer.workers", "2");
        if (rbk_conf_set_dedup_store(conf, &st, e, sizeof(e)))
                rbk_test_child_exit(33);
        rbk_conf_set_rebalance_cb(conf, app_rebalance, &a);
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        const char *t[] = {topic};
        if (!c || rbk_consumer_subscribe(c, t, 1, e, sizeof(e)) ||
            rbk_consumer_start(c, h_effect, &a))
                rbk_test_child_exit(34);
        if (!last)
                for (;;)
                        pause();
        int64_t until = g_get_monotonic_time() + cs_ms(60000) * 1000;
        int done = 0;
        while (!done && g_get_monotonic_time() < until) {
                g_usleep(100 * 1000);
                rbk_consumer_stats_t s = RBK_CONSUMER_STATS_INIT;
                rbk_consumer_stats(c, &s);
                g_mutex_lock(&a.lock);
                done = s.assigned_partitions == 2 && s.lag == 0 &&
                       db_int(a.db, "SELECT COUNT(*) FROM effects") == CK_N;
                g_mutex_unlock(&a.lock);
        }
        rbk_consumer_close(c, 10000);
        child_keep[0] = c;
        child_keep[1] = conf;
        child_keep[2] = ss;
        child_keep[3] = a.db;
        child_keep[4] = inner;
        rbk_test_child_exit(done ? 0 : 1);
}

typedef struct seed_s {
        char *dbpath;
        int life;    /* lives started */
        pid_t pid;   /* the live consumer, or 0 */
        int rfd;     /* its pipe */
        int64_t kill_at; /* ms, 0: not yet assigned */
        int exit_code;
        int finished;
} seed_t;

static int64_t now_ms(void) { return g_get_monotonic_time() / 1000; }

static void seed_spawn(seed_t *sd, int seed, const char *bootstraps) {
        int pfd[2];
        ck_assert_int_eq(pipe(pfd), 0);
        int last = sd->life == CK_LIVES - 1;
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                close(pfd[0]);
                kill_child_main(bootstraps, sd->dbpath, seed, sd->life, last,
                                pfd[1]);
        }
        close(pfd[1]);
        sd->pid = pid;
        sd->rfd = pfd[0];
        sd->kill_at = 0;
        sd->life++;
}

START_TEST(kill_9_no_effect_twice) {
        cluster_proc_t cp;
        cluster_start(&cp);
        char *dir = g_dir_make_tmp("rbk-commit-XXXXXX", NULL);
        ck_assert(dir != NULL);
        seed_t sd[CK_SEEDS_MAX];
        memset(sd, 0, sizeof(sd));
        int dups = 0;
        for (int s = 0; s < CK_SEEDS; s++) {
                cluster_cmd(&cp, "T cd-%d 2\n", s);
                GRand *r = g_rand_new_with_seed((guint32)s);
                GArray *later = g_array_new(FALSE, FALSE, sizeof(int));
                for (int i = 0; i < CK_N; i++) {
                        cluster_cmd(&cp, "P cd-%d %d s%d-%d\n", s, i % 2, s, i);
                        if (g_rand_double(r) < 0.33) {
                                int j = i - 2 * g_rand_int_range(r, 0, 30);
                                if (j >= 0)
                                        g_array_append_val(later, j);
                        }
                        /* Copies written some messages after the first. */
                        if (later->len && g_rand_double(r) < 0.3) {
                                int j = g_array_index(later, int, 0);
                                g_array_remove_index(later, 0);
                                cluster_cmd(&cp, "P cd-%d %d s%d-%d\n", s,
                                            j % 2, s, j);
                                dups++;
                        }
                }
                for (guint k = 0; k < later->len; k++) {
                        int j = g_array_index(later, int, k);
                        cluster_cmd(&cp, "P cd-%d %d s%d-%d\n", s, j % 2, s, j);
                        dups++;
                }
                g_array_free(later, TRUE);
                g_rand_free(r);
                char name[32];
                snprintf(name, sizeof(name), "seed%d.db", s);
                sd[s].dbpath = g_build_filename(dir, name, NULL);
                sqlite3 *db;
                ck_assert_int_eq(sqlite3_open(sd[s].dbpath, &db), SQLITE_OK);
                ck_assert_int_eq(
                    sqlite3_exec(db,
                                 "PRAGMA journal_mode=WAL;"
                                 "CREATE TABLE effects (id TEXT PRIMARY KEY,"
                                 " n INTEGER NOT NULL)",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
                sqlite3_close(db);
        }
        cluster_cmd(&cp, "F\n");

        GRand *kr = g_rand_new_with_seed(4242);
        int kills = 0, running = 0;
        int64_t deadline = now_ms() + 110 * 1000;
        for (int s = 0; s < CK_SEEDS; s++) {
                seed_spawn(&sd[s], s, cp.bootstraps);
                running++;
        }
        while (running && now_ms() < deadline) {
                struct pollfd pf[CK_SEEDS_MAX];
                int idx[CK_SEEDS_MAX], n = 0;
                for (int s = 0; s < CK_SEEDS; s++) {
                        if (sd[s].pid && !sd[s].kill_at) {
                                pf[n].fd = sd[s].rfd;
                                pf[n].events = POLLIN;
                                idx[n++] = s;
                        }
                }
                poll(pf, (nfds_t)n, 10);
                for (int k = 0; k < n; k++) {
                        if (!(pf[k].revents & (POLLIN | POLLHUP)))
                                continue;
                        seed_t *x = &sd[idx[k]];
                        char ch;
                        if (read(x->rfd, &ch, 1) == 1 && ch == 'a')
                                x->kill_at = now_ms() +
                                             g_rand_int_range(kr, 0, 500);
                        else
                                x->kill_at = -1; /* exited: reaped below */
                }
                for (int s = 0; s < CK_SEEDS; s++) {
                        seed_t *x = &sd[s];
                        if (!x->pid)
                                continue;
                        int last = x->life == CK_LIVES;
                        int status;
                        if (last || x->kill_at < 0) {
                                pid_t w = waitpid(x->pid, &status, WNOHANG);
                                if (w != x->pid)
                                        continue;
                                x->exit_code = WIFEXITED(status)
                                                   ? WEXITSTATUS(status)
                                                   : 100;
                                x->finished = last;
                                close(x->rfd);
                                x->pid = 0;
                                if (!last) /* died on its own */
                                        x->life = CK_LIVES + 1;
                                running--;
                                continue;
                        }
                        if (x->kill_at > 0 && now_ms() >= x->kill_at) {
                                kill_child(x->pid);
                                kills++;
                                close(x->rfd);
                                x->pid = 0;
                                seed_spawn(x, s, cp.bootstraps);
                        }
                }
        }
        for (int s = 0; s < CK_SEEDS; s++)
                if (sd[s].pid)
                        kill_child(sd[s].pid);
        g_rand_free(kr);
        cluster_stop(&cp);

        int checked = 0;
        for (int s = 0; s < CK_SEEDS; s++) {
                ck_assert_msg(sd[s].finished,
                              "seed %d: the last consumer did not finish "
                              "(lives %d)", s, sd[s].life);
                ck_assert_msg(sd[s].exit_code == 0,
                              "seed %d: ids missing after the last consumer "
                              "(exit %d)", s, sd[s].exit_code);
                sqlite3 *db;
                ck_assert_int_eq(sqlite3_open(sd[s].dbpath, &db), SQLITE_OK);
                int64_t ids = db_int(db, "SELECT COUNT(*) FROM effects");
                int64_t twice = db_int(db, "SELECT COUNT(*) FROM effects"
                                           " WHERE n <> 1");
                sqlite3_close(db);
                ck_assert_msg(ids == CK_N, "seed %d: %" PRId64 " of %d ids",
                              s, ids, CK_N);
                ck_assert_msg(twice == 0,
                              "seed %d: %" PRId64 " effect(s) applied twice",
                              s, twice);
                checked++;
                g_unlink(sd[s].dbpath);
                char *wal = g_strconcat(sd[s].dbpath, "-wal", NULL);
                char *shm = g_strconcat(sd[s].dbpath, "-shm", NULL);
                g_unlink(wal);
                g_unlink(shm);
                g_free(wal);
                g_free(shm);
                g_free(sd[s].dbpath);
        }
        g_rmdir(dir);
        g_free(dir);
        fprintf(stderr, "kill_9_no_effect_twice: %d seeds, %d kills, %d "
                        "duplicate copies written\n",
                checked, kills, dups);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("consumer_commit");
        RBK_TCASE(s, commit_states, 60);
        RBK_TCASE(s, commit_inside_handler, 60);
        RBK_TCASE(s, manual_commit_exact_redelivery, 90);
        RBK_TCASE(s, kill_9_no_effect_twice, 120);
        return s;
}

RBK_TEST_MAIN()
