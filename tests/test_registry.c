/* The registry: singletons under a race, configuration mismatch, shutdown,
 * fork detection. Clients run against the mock cluster librdkafka creates
 * inside each client (test.mock.num.brokers). */
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"
#include "robustkafka.h"

static void quiet_log(int level, const char *fac, const char *line,
                      void *opaque) {}

static rbk_conf_t *producer_conf(const char *extra_name,
                                 const char *extra_value) {
        char errstr[512];
        rbk_conf_t *conf = rbk_conf_new();
        ck_assert_ptr_nonnull(conf);
        ck_assert_msg(rbk_conf_set(conf, "test.mock.num.brokers", "3", errstr,
                                   sizeof(errstr)) == RBK_OK,
                      "%s", errstr);
        if (extra_name)
                ck_assert_msg(rbk_conf_set(conf, extra_name, extra_value,
                                           errstr, sizeof(errstr)) == RBK_OK,
                              "%s", errstr);
        rbk_conf_set_log_cb(conf, quiet_log, NULL);
        return conf;
}

static rbk_conf_t *consumer_conf(const char *group) {
        char errstr[512];
        rbk_conf_t *conf = producer_conf("group.id", group);
        ck_assert_msg(rbk_conf_set(conf, "session.timeout.ms", "6000", errstr,
                                   sizeof(errstr)) == RBK_OK,
                      "%s", errstr);
        return conf;
}

/* Every test leaves the registry shut down; open it again for the next one
 * (Check may run all tests in one process, e.g. under valgrind). */
static void teardown(void) {
        rbk_shutdown(5000);
        rbk__registry_reset();
}

/* ------------------------------------------------------------ race */

typedef struct {
        GMutex lock;
        GCond cond;
        int go;
        const rbk_conf_t *conf;
        rbk_producer_t *got[8];
        char err[8][256];
} race_t;

typedef struct {
        race_t *r;
        int i;
} racer_t;

static gpointer racer(gpointer p) {
        racer_t *a = p;
        race_t *r = a->r;
        g_mutex_lock(&r->lock);
        while (!r->go)
                g_cond_wait(&r->cond, &r->lock);
        g_mutex_unlock(&r->lock);
        r->got[a->i] = rbk_producer_get("race", r->conf, r->err[a->i],
                                        sizeof(r->err[a->i]));
        return NULL;
}

START_TEST(singleton_created_once_under_race) {
        race_t r;
        racer_t args[8];
        GThread *t[8];
        memset(&r, 0, sizeof(r));
        g_mutex_init(&r.lock);
        g_cond_init(&r.cond);
        rbk_conf_t *conf = producer_conf(NULL, NULL);
        r.conf = conf;
        uint64_t before = rbk__registry_created();

        for (int i = 0; i < 8; i++) {
                args[i].r = &r;
                args[i].i = i;
                t[i] = g_thread_new("racer", racer, &args[i]);
        }
        g_mutex_lock(&r.lock);
        r.go = 1;
        g_cond_broadcast(&r.cond);
        g_mutex_unlock(&r.lock);
        for (int i = 0; i < 8; i++)
                g_thread_join(t[i]);

        for (int i = 0; i < 8; i++) {
                ck_assert_msg(r.got[i] != NULL, "thread %d: %s", i, r.err[i]);
                ck_assert_ptr_eq(r.got[i], r.got[0]);
        }
        ck_assert_uint_eq(rbk__registry_created() - before, 1);

        /* Later gets, with an equal copy of the configuration, share it. */
        rbk_conf_t *copy = rbk_conf_dup(conf);
        char errstr[256];
        rbk_producer_t *p = rbk_producer_get("race", copy, errstr,
                                             sizeof(errstr));
        ck_assert_ptr_eq(p, r.got[0]);
        ck_assert_uint_eq(rbk__registry_created() - before, 1);

        /* The shared handle works. */
        rbk_msg_t m = RBK_MSG_INIT;
        m.topic = "registry-race";
        m.value = "v";
        m.value_len = 1;
        ck_assert_msg(rbk_producer_send_sync(p, &m, 10000, NULL, errstr,
                                             sizeof(errstr)) == RBK_OK,
                      "%s", errstr);

        for (int i = 0; i < 8; i++)
                rbk_producer_put(r.got[i]);
        rbk_producer_put(p);
        rbk_producer_put(NULL);

        /* A different name is a different client. */
        rbk_producer_t *other =
            rbk_producer_get("race-2", conf, errstr, sizeof(errstr));
        ck_assert_msg(other != NULL, "%s", errstr);
        ck_assert_ptr_ne(other, p);
        ck_assert_uint_eq(rbk__registry_created() - before, 2);
        rbk_producer_put(other);

        rbk_conf_destroy(copy);
        rbk_conf_destroy(conf);
        g_mutex_clear(&r.lock);
        g_cond_clear(&r.cond);
        ck_assert_int_eq(rbk_shutdown(10000), RBK_OK);
}
END_TEST

/* Gets and puts of several names from many threads at once. */
static gpointer churner(gpointer p) {
        const rbk_conf_t *conf = p;
        static const char *names[] = {"churn-a", "churn-b", "churn-c"};
        char errstr[256];
        for (int i = 0; i < 200; i++) {
                rbk_producer_t *h = rbk_producer_get(names[i % 3], conf,
                                                     errstr, sizeof(errstr));
                if (!h)
                        return GINT_TO_POINTER(1);
                rbk_producer_put(h);
        }
        return NULL;
}

START_TEST(concurrent_get_put) {
        rbk_conf_t *conf = producer_conf(NULL, NULL);
        uint64_t before = rbk__registry_created();
        GThread *t[8];
        for (int i = 0; i < 8; i++)
                t[i] = g_thread_new("churn", churner, conf);
        for (int i = 0; i < 8; i++)
                ck_assert_ptr_null(g_thread_join(t[i]));
        ck_assert_uint_eq(rbk__registry_created() - before, 3);
        rbk_conf_destroy(conf);
}
END_TEST

/* ------------------------------------------------------------ mismatch */

START_TEST(different_conf_exists) {
        char errstr[512];
        rbk_conf_t *a = producer_conf(NULL, NULL);
        rbk_conf_t *b = producer_conf("linger.ms", "50");
        rbk_producer_t *p = rbk_producer_get(NULL, a, errstr, sizeof(errstr));
        ck_assert_msg(p != NULL, "%s", errstr);

        errstr[0] = '\0';
        ck_assert_ptr_null(rbk_producer_get("default", b, errstr,
                                            sizeof(errstr)));
        ck_assert_msg(strstr(errstr, "producer \"default\"") &&
                          strstr(errstr, "different configuration"),
                      "errstr: %s", errstr);

        /* A different callback is a different configuration too. */
        rbk_conf_t *c = producer_conf(NULL, NULL);
        rbk_conf_set_log_cb(c, NULL, NULL);
        ck_assert_ptr_null(rbk_producer_get(NULL, c, errstr, sizeof(errstr)));

        /* The same configuration still works; NULL name is "default". */
        ck_assert_ptr_eq(rbk_producer_get("default", a, errstr,
                                          sizeof(errstr)),
                         p);

        /* Producers and consumers have separate names. */
        rbk_conf_t *cc = consumer_conf("registry-exists-g");
        rbk_consumer_t *k = rbk_consumer_get(NULL, cc, errstr, sizeof(errstr));
        ck_assert_msg(k != NULL, "%s", errstr);
        ck_assert_ptr_null(rbk_consumer_get(NULL, a, errstr, sizeof(errstr)));
        ck_assert_msg(strstr(errstr, "consumer \"default\""), "%s", errstr);

        ck_assert_ptr_null(rbk_producer_get("", a, errstr, sizeof(errstr)));

        rbk_conf_destroy(a);
        rbk_conf_destroy(b);
        rbk_conf_destroy(c);
        rbk_conf_destroy(cc);
        ck_assert_int_eq(rbk_shutdown(10000), RBK_OK);
}
END_TEST

START_TEST(failed_creation_not_cached) {
        char errstr[512];
        uint64_t before = rbk__registry_created();
        /* Refused when the client is built (consumer without group.id). */
        rbk_conf_t *bad = producer_conf(NULL, NULL);
        errstr[0] = '\0';
        ck_assert_ptr_null(rbk_consumer_get("fc", bad, errstr, sizeof(errstr)));
        ck_assert_msg(errstr[0] != '\0', "no reason given");
        ck_assert_uint_eq(rbk__registry_created() - before, 0);

        rbk_conf_t *good = consumer_conf("registry-fc-g");
        rbk_consumer_t *c = rbk_consumer_get("fc", good, errstr,
                                             sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        ck_assert_uint_eq(rbk__registry_created() - before, 1);
        rbk_consumer_put(c);
        rbk_conf_destroy(bad);
        rbk_conf_destroy(good);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

START_TEST(shutdown_then_get_fails) {
        char errstr[512];
        rbk_conf_t *pc = producer_conf(NULL, NULL);
        rbk_conf_t *cc = consumer_conf("registry-shutdown-g");
        rbk_producer_t *p = rbk_producer_get("sd", pc, errstr, sizeof(errstr));
        ck_assert_msg(p != NULL, "%s", errstr);
        rbk_consumer_t *c = rbk_consumer_get("sd", cc, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);

        /* A message in flight is flushed by the shutdown. */
        rbk_msg_t m = RBK_MSG_INIT;
        m.topic = "registry-shutdown";
        m.value = "v";
        m.value_len = 1;
        ck_assert_int_eq(rbk_producer_send(p, &m, errstr, sizeof(errstr)),
                         RBK_OK);

        int64_t t0 = rbk__now_ms();
        ck_assert_int_eq(rbk_shutdown(10000), RBK_OK);
        ck_assert_int_lt(rbk__now_ms() - t0, 10000 + 2000);

        errstr[0] = '\0';
        ck_assert_ptr_null(rbk_producer_get("sd", pc, errstr, sizeof(errstr)));
        ck_assert_msg(strstr(errstr, "rbk_shutdown"), "%s", errstr);
        ck_assert_ptr_null(rbk_producer_get("new", pc, errstr, sizeof(errstr)));
        ck_assert_ptr_null(rbk_consumer_get("sd", cc, errstr, sizeof(errstr)));

        /* Twice is fine; puts of the freed handles are harmless. */
        ck_assert_int_eq(rbk_shutdown(1000), RBK_OK);
        ck_assert_int_eq(rbk_shutdown(-1), RBK_OK);
        rbk_producer_put(p);
        rbk_consumer_put(c);

        rbk_conf_destroy(pc);
        rbk_conf_destroy(cc);
}
END_TEST

START_TEST(shutdown_empty_registry) {
        ck_assert_int_eq(rbk_shutdown(-1), RBK_OK);
        ck_assert_int_eq(rbk_shutdown(0), RBK_OK);
}
END_TEST

/* ------------------------------------------------------------ environment */

START_TEST(null_conf_reads_environment) {
        char errstr[512];
        static const char *vars[] = {"KAFKA_URL", "KAFKA_TRUSTED_CERT",
                                     "KAFKA_CLIENT_CERT",
                                     "KAFKA_CLIENT_CERT_KEY", "KAFKA_PREFIX"};
        for (size_t i = 0; i < G_N_ELEMENTS(vars); i++)
                unsetenv(vars[i]);
        uint64_t before = rbk__registry_created();

        errstr[0] = '\0';
        ck_assert_ptr_null(rbk_producer_get(NULL, NULL, errstr,
                                            sizeof(errstr)));
        ck_assert_msg(strstr(errstr, "KAFKA_URL"), "errstr: %s", errstr);
        ck_assert_uint_eq(rbk__registry_created() - before, 0);

        /* Nothing listens on port 1: creation still succeeds (connections
         * are made in the background). */
        setenv("KAFKA_URL", "kafka://127.0.0.1:1", 1);
        rbk_producer_t *p = rbk_producer_get(NULL, NULL, errstr,
                                             sizeof(errstr));
        ck_assert_msg(p != NULL, "%s", errstr);
        ck_assert_ptr_eq(rbk_producer_get("default", NULL, errstr,
                                          sizeof(errstr)),
                         p);
        ck_assert_uint_eq(rbk__registry_created() - before, 1);

        /* An explicit configuration differs from the environment's. */
        rbk_conf_t *pc = producer_conf(NULL, NULL);
        ck_assert_ptr_null(rbk_producer_get(NULL, pc, errstr, sizeof(errstr)));
        ck_assert_msg(strstr(errstr, "different configuration"), "%s", errstr);
        rbk_conf_destroy(pc);
        unsetenv("KAFKA_URL");
        ck_assert_int_eq(rbk_shutdown(2000), RBK_OK);
}
END_TEST

/* ------------------------------------------------------------ fork */

START_TEST(forked_child_refused) {
        char errstr[512];
        rbk_conf_t *pc = producer_conf(NULL, NULL);
        rbk_producer_t *p = rbk_producer_get("fk", pc, errstr, sizeof(errstr));
        ck_assert_msg(p != NULL, "%s", errstr);

        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                /* Only async-signal-safe-ish work here, then _exit: the
                 * parent's librdkafka threads do not exist in the child. */
                char e[256] = "";
                int code = 0;
                if (rbk_producer_get("fk", pc, e, sizeof(e)) != NULL)
                        code |= 1;
                if (!strstr(e, "fork"))
                        code |= 2;
                if (rbk_producer_get("other", pc, e, sizeof(e)) != NULL)
                        code |= 4;
                if (rbk_consumer_get("fk", pc, e, sizeof(e)) != NULL)
                        code |= 8;
                if (rbk_shutdown(0) != RBK_ERR_FORKED)
                        code |= 16;
                rbk_producer_put(p); /* a no-op in the child */
                /* Report through exec rather than _exit: under valgrind an
                 * exiting child runs a leak check, which counts the parent's
                 * thread-held memory as lost (those threads are gone here);
                 * exec replaces the process without one. */
                char cmd[32];
                snprintf(cmd, sizeof(cmd), "exit %d", code);
                execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
                rbk_test_child_exit(code);
        }
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status), "child did not exit normally");
        ck_assert_msg(WEXITSTATUS(status) == 0, "child failed checks 0x%x",
                      WEXITSTATUS(status));

        /* The parent is unaffected. */
        ck_assert_ptr_eq(rbk_producer_get("fk", pc, errstr, sizeof(errstr)), p);
        rbk_conf_destroy(pc);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("registry");
        TCase *tc;
#define REG_TCASE(fn, secs)                                                  \
        do {                                                                 \
                tc = tcase_create(#fn);                                      \
                tcase_set_timeout(tc, (secs));                               \
                tcase_add_checked_fixture(tc, NULL, teardown);               \
                tcase_add_test(tc, fn);                                      \
                suite_add_tcase(s, tc);                                      \
        } while (0)
        REG_TCASE(singleton_created_once_under_race, 60);
        REG_TCASE(concurrent_get_put, 60);
        REG_TCASE(different_conf_exists, 60);
        REG_TCASE(failed_creation_not_cached, 60);
        REG_TCASE(shutdown_then_get_fails, 60);
        REG_TCASE(shutdown_empty_registry, 30);
        REG_TCASE(null_conf_reads_environment, 60);
        REG_TCASE(forked_child_refused, 60);
        return s;
}

RBK_TEST_MAIN()
