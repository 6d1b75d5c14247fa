/* rbk-admin end to end against the mock cluster: a running consumer
 * quarantines a partition (committed offset beyond the log end),
 * `rbk-admin status` shows it, `rbk-admin resolve` run as a separate process
 * resolves it through the control topic, the consumer resumes exactly at
 * the chosen offset, a second resolve is refused clearly; plus the direct
 * commit for a group without members, the error exits and the timeout. */
#include <fcntl.h>
#include <sys/wait.h>

#include "consumer_internal.h"
#include "control.h"
#include "harness.h"
#include "consumer_support.h"

/* ------------------------------------------------------------ the tool */

typedef struct run_s {
        int rc;
        char *out; /* stdout */
        char *err; /* stderr */
} run_t;

static void run_clear(run_t *r) {
        g_free(r->out);
        g_free(r->err);
}

static char *tool_path(void) {
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        ck_assert(n > 0);
        exe[n] = '\0';
        char *dir = g_path_get_dirname(exe);
        char *p = g_build_filename(dir, "..", "bin", "rbk-admin", NULL);
        g_free(dir);
        ck_assert_msg(access(p, X_OK) == 0, "%s is missing (make tools)", p);
        return p;
}

static char *slurp(int fd) {
        GString *s = g_string_new(NULL);
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0 ||
               (n < 0 && errno == EINTR))
                if (n > 0)
                        g_string_append_len(s, buf, n);
        close(fd);
        return g_string_free(s, FALSE);
}

/* Runs rbk-admin with stdin from /dev/null (not a terminal). */
static run_t run_tool(const char *first, ...) {
        GPtrArray *argv = g_ptr_array_new();
        char *path = tool_path();
        g_ptr_array_add(argv, path);
        va_list ap;
        va_start(ap, first);
        for (const char *a = first; a; a = va_arg(ap, const char *))
                g_ptr_array_add(argv, (char *)a);
        va_end(ap);
        g_ptr_array_add(argv, NULL);
        int out[2], errp[2];
        ck_assert(pipe(out) == 0 && pipe(errp) == 0);
        pid_t pid = fork();
        ck_assert(pid >= 0);
        if (pid == 0) {
                int devnull = open("/dev/null", O_RDONLY);
                dup2(devnull, 0);
                dup2(out[1], 1);
                dup2(errp[1], 2);
                close(out[0]);
                close(errp[0]);
                unsetenv("KAFKA_URL");
                execv(path, (char **)argv->pdata);
                rbk_test_child_exit(127);
        }
        close(out[1]);
        close(errp[1]);
        run_t r;
        /* Stderr is small; read stdout first, then stderr. */
        r.out = slurp(out[0]);
        r.err = slurp(errp[0]);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
        g_ptr_array_free(argv, TRUE);
        g_free(path);
        if (getenv("CS_VERBOSE"))
                fprintf(stderr, "rbk-admin %s ... -> %d\n%s%s", first, r.rc,
                        r.out, r.err);
        return r;
}

#define ASSERT_RUN(r, want_rc, stream, needle)                               \
        ck_assert_msg((r).rc == (want_rc) &&                                 \
                          strstr((r).stream, (needle)) != NULL,              \
                      "rc %d (want %d), no \"%s\" in " #stream               \
                      ":\n--- stdout\n%s--- stderr\n%s",                     \
                      (r).rc, (want_rc), (needle), (r).out, (r).err)

/* ------------------------------------------------------------ consumer */

typedef struct seen_s {
        GMutex lock;
        GArray *offsets; /* int64_t, in handling order, partition 0 */
} seen_t;

static rbk_verdict_t record(const rbk_message_t *m, void *opaque) {
        seen_t *s = opaque;
        g_mutex_lock(&s->lock);
        int64_t off = m->offset;
        if (m->partition == 0)
                g_array_append_val(s->offsets, off);
        g_mutex_unlock(&s->lock);
        return RBK_HANDLED;
}

static guint seen_len(seen_t *s) {
        g_mutex_lock(&s->lock);
        guint n = s->offsets->len;
        g_mutex_unlock(&s->lock);
        return n;
}

static size_t quarantined(rbk_consumer_t *c, rbk_quarantine_t *q) {
        return rbk_consumer_quarantined(c, q, 1);
}

START_TEST(resolve_running_consumer) {
        cs_cluster_t *cl = cs_cluster_new();
        const char *topic = "adm-t1", *group = "adm-g1", *ctl = "adm-ctl1";
        cs_topic(cl, topic, 2);
        cs_topic(cl, ctl, 1);
        cs_produce(cl, topic, 0, 0, 10, "a");
        cs_produce(cl, topic, 1, 0, 3, "b");
        /* Beyond the log end of partition 0 (10): out of range. */
        cs_commit(cl, group, topic, 0, 50);

        rbk_conf_t *conf = cs_conf(cl, group);
        cs_set(conf, "rbk.control.topic", ctl);
        cs_set(conf, "rbk.client.name", "billing-worker");
        char e[512];
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        const char *topics[] = {topic};
        ck_assert_int_eq(rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)),
                         RBK_OK);
        seen_t seen;
        g_mutex_init(&seen.lock);
        seen.offsets = g_array_new(FALSE, FALSE, sizeof(int64_t));
        ck_assert_int_eq(rbk_consumer_start(c, record, &seen), RBK_OK);

        rbk_quarantine_t q;
        ck_assert_msg(CS_WAIT(quarantined(c, &q) == 1, 60000),
                      "partition 0 was not quarantined");
        ck_assert_str_eq(q.topic, topic);
        ck_assert_int_eq(q.partition, 0);
        ck_assert_str_eq(q.incident_key, "adm-g1/adm-t1/0/50");
        ck_assert_msg(CS_WAIT(rbk__control_ready(c->control), 60000),
                      "control listener not ready");
        /* The quarantine mark is committed before the hook fires; wait for
         * it to be visible anyway. */
        char meta[512];
        ck_assert(CS_WAIT(cs_committed(cl, group, topic, 0, meta,
                                       sizeof(meta)) == 50 &&
                              strstr(meta, "rbk-quarantine:") != NULL,
                          10000));

        /* status shows the quarantine with its incident key. */
        run_t r = run_tool("--bootstrap", cl->bootstraps, "--control-topic",
                           ctl, "status", group, topic, NULL);
        ASSERT_RUN(r, 0, out, "QUARANTINED");
        ck_assert_ptr_nonnull(strstr(r.out, "incident adm-g1/adm-t1/0/50"));
        run_clear(&r);

        /* Refusals that never reach the consumer. */
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "resolve", group, topic, "0", "4", NULL);
        ASSERT_RUN(r, 2, err, "not a terminal");
        run_clear(&r);
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "resolve", group, topic, "0", "11", "--yes", NULL);
        ASSERT_RUN(r, 4, err, "outside the log");
        run_clear(&r);
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "resolve", group, "adm-nope", "0", "latest", "--yes",
                     NULL);
        ASSERT_RUN(r, 3, err, "unknown topic adm-nope");
        run_clear(&r);
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "resolve", group, topic, "7", "latest", "--yes", NULL);
        ASSERT_RUN(r, 3, err, "unknown partition 7");
        run_clear(&r);
        ck_assert_uint_eq(quarantined(c, &q), 1);
        /* Nothing of partition 0 was handled while quarantined. */
        ck_assert_uint_eq(seen_len(&seen), 0);

        /* The real resolution, from another process. */
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "resolve", group, topic, "0", "4", "--yes",
                     "--timeout", "40", NULL);
        ASSERT_RUN(r, 0, out, "resolved");
        ck_assert_ptr_nonnull(strstr(r.out, "consumer billing-worker"));
        ck_assert_ptr_nonnull(strstr(r.out, "skips 4 message(s)"));
        run_clear(&r);
        ck_assert_uint_eq(quarantined(c, &q), 0);

        /* Partition 0 resumes exactly at 4: 4..9, in order, nothing else. */
        ck_assert_msg(CS_WAIT(
                          ({
                                  g_mutex_lock(&seen.lock);
                                  int hit = 0;
                                  for (guint i = 0; i < seen.offsets->len; i++)
                                          if (g_array_index(seen.offsets,
                                                            int64_t, i) == 9)
                                                  hit = 1;
                                  g_mutex_unlock(&seen.lock);
                                  hit;
                          }),
                          60000),
                      "offset 9 of partition 0 never handled");
        g_mutex_lock(&seen.lock);
        ck_assert_uint_eq(seen.offsets->len, 6);
        for (guint i = 0; i < 6; i++)
                ck_assert_int_eq(g_array_index(seen.offsets, int64_t, i),
                                 4 + i);
        g_mutex_unlock(&seen.lock);

        /* The resolution is recorded in the committed offset. */
        int64_t com = cs_committed(cl, group, topic, 0, meta, sizeof(meta));
        ck_assert_msg(com >= 4, "committed %" PRId64, com);

        /* The same incident again: refused clearly. */
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "resolve", group, topic, "0", "latest", "--yes", NULL);
        ASSERT_RUN(r, 4, err, "already resolved or not quarantined");
        run_clear(&r);
        /* Even when the incident is named explicitly, the consumer that
         * resolved it says so. */
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "--incident", "adm-g1/adm-t1/0/50", "resolve", group,
                     topic, "0", "latest", "--yes", "--timeout", "20", NULL);
        ASSERT_RUN(r, 4, err, "already resolved or not quarantined");
        run_clear(&r);

        /* An incident nobody holds: no acknowledgement, exit 5. */
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "--incident", "adm-g1/adm-t1/1/77", "resolve", group,
                     topic, "1", "latest", "--yes", "--timeout", "2", NULL);
        ASSERT_RUN(r, 5, err, "no consumer acknowledged");
        run_clear(&r);

        /* status now: ok. */
        r = run_tool("--bootstrap", cl->bootstraps, "--control-topic", ctl,
                     "status", group, topic, NULL);
        ck_assert_msg(r.rc == 0 && !strstr(r.out, "QUARANTINED"), "%s%s",
                      r.out, r.err);
        run_clear(&r);

        ck_assert_int_eq(rbk_consumer_close(c, 20000), RBK_OK);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        g_array_free(seen.offsets, TRUE);
        g_mutex_clear(&seen.lock);
        cs_cluster_destroy(cl);
}
END_TEST

/* A group with no running member: the tool commits the position itself. */
START_TEST(resolve_group_without_members) {
        cs_cluster_t *cl = cs_cluster_new();
        const char *topic = "adm-t2", *group = "adm-g2";
        cs_topic(cl, topic, 1);
        cs_produce(cl, topic, 0, 0, 8, "c");
        cs_commit(cl, group, topic, 0, 30);

        run_t r = run_tool("--bootstrap", cl->bootstraps, "status", group,
                           topic, NULL);
        ASSERT_RUN(r, 0, out, "OUT-OF-RANGE");
        run_clear(&r);

        r = run_tool("--bootstrap", cl->bootstraps, "resolve", group, topic,
                     "0", "latest", "--yes", NULL);
        ASSERT_RUN(r, 0, out, "no running member");
        ck_assert_ptr_nonnull(strstr(r.out, "assuming incident "
                                            "adm-g2/adm-t2/0/30"));
        run_clear(&r);
        char meta[512];
        ck_assert_int_eq(cs_committed(cl, group, topic, 0, meta, sizeof(meta)),
                         8);
        ck_assert_str_eq(meta, "rbk-resolved:latest:adm-g2/adm-t2/0/30");

        /* Again: the committed offset is in range and marked resolved. */
        r = run_tool("--bootstrap", cl->bootstraps, "resolve", group, topic,
                     "0", "earliest", "--yes", NULL);
        ASSERT_RUN(r, 4, err, "already resolved or not quarantined");
        run_clear(&r);
        r = run_tool("--bootstrap", cl->bootstraps, "status", group, topic,
                     NULL);
        ASSERT_RUN(r, 0, out, "resolved");
        run_clear(&r);

        /* Unknown group and topic for status. */
        r = run_tool("--bootstrap", cl->bootstraps, "status", "adm-nobody",
                     topic, NULL);
        ASSERT_RUN(r, 3, err, "no committed offset");
        run_clear(&r);
        r = run_tool("--bootstrap", cl->bootstraps, "status", group,
                     "adm-none", NULL);
        ASSERT_RUN(r, 3, err, "unknown topic adm-none");
        run_clear(&r);
        /* Usage errors. */
        r = run_tool("--bootstrap", cl->bootstraps, "resolve", group, topic,
                     "zero", "latest", NULL);
        ASSERT_RUN(r, 2, err, "PARTITION must be");
        run_clear(&r);
        r = run_tool("resolve", group, topic, "0", "latest", NULL);
        ASSERT_RUN(r, 2, err, "no cluster given");
        run_clear(&r);
        /* An unreachable cluster: a timeout, promptly. */
        int64_t t0 = g_get_monotonic_time();
        r = run_tool("--bootstrap", "127.0.0.1:1", "--timeout", "2", "status",
                     group, topic, NULL);
        ASSERT_RUN(r, 5, err, "cannot reach the cluster");
        ck_assert_int_lt(g_get_monotonic_time() - t0, 8 * G_USEC_PER_SEC);
        run_clear(&r);
        r = run_tool("frobnicate", NULL);
        ASSERT_RUN(r, 2, err, "unknown command");
        run_clear(&r);
        r = run_tool("resolve", "--help", NULL);
        ASSERT_RUN(r, 0, out, "Exit codes");
        run_clear(&r);
        cs_cluster_destroy(cl);
}
END_TEST

/* A resolve for a group whose consumers cannot be reached: no control
 * topic on the cluster. */
START_TEST(resolve_without_control_topic) {
        cs_cluster_t *cl = cs_cluster_new();
        const char *topic = "adm-t3", *group = "adm-g3";
        cs_topic(cl, topic, 1);
        cs_produce(cl, topic, 0, 0, 5, "d");
        cs_commit(cl, group, topic, 0, 20);
        rbk_conf_t *conf = cs_conf(cl, group);
        cs_set(conf, "rbk.control.topic", "adm-ctl-missing");
        char e[512];
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        const char *topics[] = {topic};
        ck_assert_int_eq(rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)),
                         RBK_OK);
        seen_t seen;
        g_mutex_init(&seen.lock);
        seen.offsets = g_array_new(FALSE, FALSE, sizeof(int64_t));
        ck_assert_int_eq(rbk_consumer_start(c, record, &seen), RBK_OK);
        rbk_quarantine_t q;
        ck_assert(CS_WAIT(quarantined(c, &q) == 1, 60000));
        /* The consumer works without the topic; its listener waits. */
        ck_assert_int_eq(rbk__control_ready(c->control), 0);

        run_t r = run_tool("--bootstrap", cl->bootstraps, "--control-topic",
                           "adm-ctl-missing", "resolve", group, topic, "0",
                           "earliest", "--yes", NULL);
        ASSERT_RUN(r, 1, err, "control topic adm-ctl-missing does not exist");
        run_clear(&r);
        ck_assert_uint_eq(quarantined(c, &q), 1);

        /* The API still resolves it. */
        ck_assert_int_eq(rbk_consumer_resolve(c, topic, 0,
                                              RBK_RESOLVE_EARLIEST, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(seen_len(&seen) == 5, 60000));
        ck_assert_int_eq(rbk_consumer_close(c, 20000), RBK_OK);
        rbk_consumer_destroy(c);
        rbk_conf_destroy(conf);
        g_array_free(seen.offsets, TRUE);
        g_mutex_clear(&seen.lock);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("admin");
        RBK_TCASE(s, resolve_running_consumer, 110);
        RBK_TCASE(s, resolve_group_without_members, 120);
        RBK_TCASE(s, resolve_without_control_topic, 120);
        return s;
}

RBK_TEST_MAIN()
