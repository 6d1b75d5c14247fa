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

static void cluster_child(int rfd, int wfd) {
        cs_cluster_t *cl = cs_cluster_new();
        size_t n = strlen(cl->bootstraps);
        if (write(wfd, cl->bootstraps, n + 1) != (ssize_t)(n + 1))
                _exit(2);
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
                                _exit(3);
                        continue; /* no answer: flushed by "F" */
                } else if (line[0] == 'F') {
                        if (rd_kafka_flush(cl->prk, 20000))
                                _exit(4);
                }
                if (write(wfd, "k", 1) != 1)
                        _exit(5);
        }
        rd_kafka_flush(cl->prk, 5000);
        /* No destroy: the process ends with the cluster. */
        _exit(0);
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
        cs_cluster_t cl = {NULL, NULL, (char *)bootstraps};
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
        s.c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(s.c != NULL, "%s", e);
        const char *t[] = {"cm-h"};
        ck_assert_int_eq(rbk_consumer_subscribe(s.c, t, 1, e, sizeof(e)),
                         RBK_OK);
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
        rbk_consumer_stats_t st;
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
                _exit(20);
        int handled = 0;
        char result = 'd';
        while (handled < MC_N) {
                rbk_message_t *m = NULL;
                if (rbk_consumer_poll(c, 200, &m) != RBK_OK)
                        _exit(21);
                if (!m)
                        continue;
                if (m->offset != handled)
                        result = 'o';
                if (rbk_consumer_done(c, m, RBK_HANDLED) != RBK_OK)
                        _exit(22);
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
                _exit(23);
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
        cs_cluster_t cl = {NULL, NULL, cp.bootstraps};
        ck_assert_int_eq(cs_committed(&cl, "cm-m-g", "cm-m", 0, NULL, 0), MC_K);

        rbk_conf_t *conf = proc_conf(cp.bootstraps, "cm-m-g");
        cs_set(conf, "enable.auto.commit", "false");
        char e[512];
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        const char *t[] = {"cm-m"};
        ck_assert_int_eq(rbk_consumer_subscribe(c, t, 1, e, sizeof(e)), RBK_OK);
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

static Suite *suite(void) {
        Suite *s = suite_create("consumer_commit");
        RBK_TCASE(s, commit_states, 60);
        RBK_TCASE(s, commit_inside_handler, 60);
        RBK_TCASE(s, manual_commit_exact_redelivery, 90);
        return s;
}

RBK_TEST_MAIN()
