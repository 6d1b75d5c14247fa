/* Fork audit: every public call on a client (producer, consumer, registry,
 * SQLite dedup store, test cluster), made in a forked child of the process
 * that created the client, fails at once with RBK_ERR_FORKED (NULL for a
 * pointer, 0 for a count, -1 for the store's `seen`): it never takes a lock
 * a parent thread may have held at fork() time, and never waits for a
 * thread that does not exist in the child.
 *
 * One table names each entry point and a function that calls it on the
 * parent's client and says whether the answer was the documented one. The
 * parent keeps its clients busy (a thread sending, a consumer running its
 * handlers and committing, a thread querying the store) and forks one child
 * per entry; the child makes the call under an alarm and exits with 0 (as
 * documented), 1 (another answer) or dies of SIGALRM (it hung). */
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/wait.h>

#include "consumer_support.h"
#include "harness.h"
#include "producer_support.h"
#include "robustkafka/dedup.h"

#define F_TOPIC "fork-audit"
#define F_GROUP "fork-audit-g"
#define F_REG "fork-audit"

/* The parent's clients, created before the forks. */
typedef struct {
        cs_cluster_t *cl;
        rbk_producer_t *p;    /* rbk_producer_new(), busy sending */
        rbk_producer_t *regp; /* rbk_producer_get(F_REG) */
        rbk_consumer_t *c;    /* running, with the SQLite store */
        rbk_dedup_store_t *store;
        rbk_conf_t *pconf, *cconf;
        char *dir, *db;
        volatile gint stop;
        uint64_t sent, seen_calls, seen_errors;
        gint handled;
} fx_t;

/* ------------------------------------------------------------ the calls */

typedef int(fork_call_fn)(fx_t *f);

/* An errstr that names the fork. */
#define NAMES_FORK(e) (strstr((e), "fork") != NULL)
/* A call returning rbk_err_t with an errstr. */
#define FORKED_E(call)                                                       \
        ({                                                                   \
                char e[512] = "";                                            \
                (void)e;                                                     \
                (call) == RBK_ERR_FORKED && NAMES_FORK(e);                   \
        })

static rbk_msg_t f_msg(void) {
        rbk_msg_t m = RBK_MSG_INIT;
        m.topic = F_TOPIC;
        m.value = "x";
        m.value_len = 1;
        return m;
}

static int p_send(fx_t *f) {
        rbk_msg_t m = f_msg();
        return FORKED_E(rbk_producer_send(f->p, &m, e, sizeof(e)));
}
static int p_send_sync(fx_t *f) {
        rbk_msg_t m = f_msg();
        int64_t off = -7;
        return FORKED_E(rbk_producer_send_sync(f->p, &m, 1000, &off, e,
                                               sizeof(e))) &&
               off == -7;
}
static int p_flush(fx_t *f) {
        return rbk_producer_flush(f->p, 1000) == RBK_ERR_FORKED;
}
static int p_close(fx_t *f) {
        return rbk_producer_close(f->p, 1000) == RBK_ERR_FORKED;
}
static int p_destroy(fx_t *f) {
        rbk_producer_destroy(f->p); /* frees nothing: still answers */
        return rbk_producer_flush(f->p, 0) == RBK_ERR_FORKED;
}
/* The reading calls of a client: its counters (left as they were), their
 * JSON and metrics (NULL), its health. */
#define READING_CALLS(pre, kind, KIND, cl, field)                            \
        static int pre##_stats(fx_t *f) {                                    \
                rbk_##kind##_stats_t st = RBK_##KIND##_STATS_INIT;           \
                st.field = 4242;                                             \
                return rbk_##kind##_stats(f->cl, &st) == RBK_ERR_FORKED &&   \
                       st.field == 4242;                                     \
        }                                                                    \
        static int pre##_stats_json(fx_t *f) {                               \
                return !rbk_##kind##_stats_json(f->cl);                      \
        }                                                                    \
        static int pre##_metrics(fx_t *f) {                                  \
                return !rbk_##kind##_metrics(f->cl);                         \
        }                                                                    \
        static int pre##_health(fx_t *f) {                                   \
                char why[256] = "";                                          \
                return rbk_##kind##_health(f->cl, why, sizeof(why)) ==       \
                       RBK_ERR_FORKED;                                       \
        }
READING_CALLS(p, producer, PRODUCER, p, accepted)
READING_CALLS(c, consumer, CONSUMER, c, handled)

static int p_testing_fatal(fx_t *f) {
        return rbk_testing_fatal_error(f->p, 45, "child") == RBK_ERR_FORKED;
}
static int reg_producer_get(fx_t *f) {
        char e[512] = "";
        return !rbk_producer_get(F_REG, f->pconf, e, sizeof(e)) &&
               NAMES_FORK(e);
}
static int reg_producer_put(fx_t *f) {
        rbk_producer_put(f->regp); /* a no-op in the child */
        return 1;
}
static int reg_consumer_get(fx_t *f) {
        char e[512] = "";
        return !rbk_consumer_get("fork-audit-c", f->cconf, e, sizeof(e)) &&
               NAMES_FORK(e);
}
static int reg_consumer_put(fx_t *f) {
        rbk_consumer_put(f->c); /* not a registry handle: ignored */
        return 1;
}
static int reg_shutdown(fx_t *f) {
        return rbk_shutdown(1000) == RBK_ERR_FORKED;
}

static rbk_verdict_t h_count(const rbk_message_t *m, void *opaque) {
        fx_t *f = opaque;
        g_atomic_int_inc(&f->handled);
        return RBK_HANDLED;
}
static size_t h_batch(const rbk_message_t *const *msgs, size_t n,
                      rbk_verdict_t *rest, void *opaque) {
        return n;
}

static int c_subscribe(fx_t *f) {
        const char *t[] = {F_TOPIC};
        return FORKED_E(rbk_consumer_subscribe(f->c, t, 1, e, sizeof(e)));
}
static int c_run(fx_t *f) {
        return rbk_consumer_run(f->c, h_count, f) == RBK_ERR_FORKED;
}
static int c_run_batch(fx_t *f) {
        return rbk_consumer_run_batch(f->c, h_batch, f) == RBK_ERR_FORKED;
}
static int c_start(fx_t *f) {
        return rbk_consumer_start(f->c, h_count, f) == RBK_ERR_FORKED;
}
static int c_start_batch(fx_t *f) {
        return rbk_consumer_start_batch(f->c, h_batch, f) == RBK_ERR_FORKED;
}
static int c_stop(fx_t *f) {
        rbk_consumer_stop(f->c); /* void: returns at once */
        return 1;
}
static int c_poll(fx_t *f) {
        rbk_message_t *m = (rbk_message_t *)1;
        return rbk_consumer_poll(f->c, 1000, &m) == RBK_ERR_FORKED && !m;
}
static int c_poll_batch(fx_t *f) {
        rbk_message_t *ms[4];
        size_t n = 99;
        return rbk_consumer_poll_batch(f->c, 1000, ms, 4, &n) ==
                   RBK_ERR_FORKED &&
               n == 0;
}
static int c_done(fx_t *f) {
        rbk_message_t m;
        memset(&m, 0, sizeof(m));
        return rbk_consumer_done(f->c, &m, RBK_HANDLED) == RBK_ERR_FORKED;
}
static int c_done_batch(fx_t *f) {
        rbk_message_t m;
        memset(&m, 0, sizeof(m));
        rbk_message_t *ms[1] = {&m};
        return rbk_consumer_done_batch(f->c, ms, 1, 1, RBK_RETRY) ==
               RBK_ERR_FORKED;
}
static int c_pause(fx_t *f) {
        return rbk_consumer_pause(f->c, F_TOPIC, 0) == RBK_ERR_FORKED;
}
static int c_resume(fx_t *f) {
        return rbk_consumer_resume(f->c, F_TOPIC, 0) == RBK_ERR_FORKED;
}
static int c_seek(fx_t *f) {
        return FORKED_E(
            rbk_consumer_seek(f->c, F_TOPIC, 0, RBK_EARLIEST, e, sizeof(e)));
}
static int c_seek_timestamp(fx_t *f) {
        return FORKED_E(rbk_consumer_seek_timestamp(f->c, F_TOPIC, 0, 1, e,
                                                    sizeof(e)));
}
static int c_commit(fx_t *f) {
        return FORKED_E(rbk_consumer_commit(f->c, 1000, e, sizeof(e)));
}
static int c_resolve(fx_t *f) {
        return FORKED_E(rbk_consumer_resolve(f->c, F_TOPIC, 0,
                                             RBK_RESOLVE_COMMITTED, 0, e,
                                             sizeof(e)));
}
static int c_quarantined(fx_t *f) {
        rbk_quarantine_t q[2];
        return rbk_consumer_quarantined(f->c, q, 2) == 0;
}
static int c_quarantined2(fx_t *f) {
        rbk_quarantine_t q[2];
        return rbk_consumer_quarantined2(f->c, q, 2, sizeof(q[0])) == 0;
}
static int c_close(fx_t *f) {
        return rbk_consumer_close(f->c, 1000) == RBK_ERR_FORKED;
}
static int c_destroy(fx_t *f) {
        rbk_consumer_destroy(f->c); /* frees nothing: still answers */
        return rbk_consumer_close(f->c, 0) == RBK_ERR_FORKED;
}

/* The store's callbacks, as the application may call them on a store it
 * opened (and as the parent's consumer calls them). */
static int s_load(fx_t *f) {
        void *blob = NULL;
        size_t size = 0;
        int64_t next = -7;
        return FORKED_E(f->store->load(F_GROUP, F_TOPIC, 0, &blob, &size,
                                       &next, e, sizeof(e),
                                       f->store->opaque)) &&
               !blob && next == -7;
}
static int s_save(fx_t *f) {
        return FORKED_E(f->store->save(F_GROUP, F_TOPIC, 0, "x", 1, 5, e,
                                       sizeof(e), f->store->opaque));
}
static int s_seen(fx_t *f) {
        char e[512] = "";
        return f->store->seen(F_GROUP, F_TOPIC, 0, "id", 2, e, sizeof(e),
                              f->store->opaque) == -1 &&
               NAMES_FORK(e);
}
static int s_destroy(fx_t *f) {
        /* The parent's connection is left alone: the store still answers. */
        f->store->destroy(f->store->opaque);
        return s_seen(f);
}

static int t_bootstrap(fx_t *f) { return !rbk_testcluster_bootstrap(f->cl->tc); }
static int t_mock(fx_t *f) { return !rbk_testcluster_mock(f->cl->tc); }
static int t_create_topic(fx_t *f) {
        return rbk_testcluster_create_topic(f->cl->tc, "fork-new", 1, 1) ==
               RBK_ERR_FORKED;
}
static int t_set_leader(fx_t *f) {
        return rbk_testcluster_set_leader(f->cl->tc, F_TOPIC, 0, 2) ==
               RBK_ERR_FORKED;
}
static int t_broker_down(fx_t *f) {
        return rbk_testcluster_broker_down(f->cl->tc, 1) == RBK_ERR_FORKED;
}
static int t_broker_up(fx_t *f) {
        return rbk_testcluster_broker_up(f->cl->tc, 1) == RBK_ERR_FORKED;
}
static int t_push_request_errors(fx_t *f) {
        return rbk_testcluster_push_request_errors(f->cl->tc, 1, 1, 7) ==
               RBK_ERR_FORKED;
}
static int t_push_produce_errors(fx_t *f) {
        return rbk_testcluster_push_produce_errors(f->cl->tc, 1, 7) ==
               RBK_ERR_FORKED;
}
static int t_broker_push_request_errors(fx_t *f) {
        return rbk_testcluster_broker_push_request_errors(f->cl->tc, 1, 1, 1,
                                                          7, 0) ==
               RBK_ERR_FORKED;
}
static int t_delay_produce(fx_t *f) {
        return rbk_testcluster_delay_produce(f->cl->tc, 1, 10, 1) ==
               RBK_ERR_FORKED;
}
static int t_clear_request_errors(fx_t *f) {
        return rbk_testcluster_clear_request_errors(f->cl->tc, 1) ==
               RBK_ERR_FORKED;
}
static int t_set_coordinator(fx_t *f) {
        return rbk_testcluster_set_coordinator(f->cl->tc, "group", F_GROUP,
                                               1) == RBK_ERR_FORKED;
}
static int t_destroy(fx_t *f) {
        rbk_testcluster_destroy(f->cl->tc); /* frees nothing */
        return t_set_leader(f);
}

#define ENTRY(fn) {#fn, fn}
static const struct {
        const char *name;
        fork_call_fn *fn;
} calls[] = {
    /* producer.h (and the producer call of testing.h) */
    ENTRY(p_send), ENTRY(p_send_sync), ENTRY(p_flush), ENTRY(p_stats),
    ENTRY(p_stats_json), ENTRY(p_metrics), ENTRY(p_health),
    ENTRY(p_testing_fatal), ENTRY(p_close), ENTRY(p_destroy),
    /* registry: producer.h, consumer.h, registry.h */
    ENTRY(reg_producer_get), ENTRY(reg_producer_put), ENTRY(reg_consumer_get),
    ENTRY(reg_consumer_put), ENTRY(reg_shutdown),
    /* consumer.h */
    ENTRY(c_subscribe), ENTRY(c_run), ENTRY(c_run_batch), ENTRY(c_start),
    ENTRY(c_start_batch), ENTRY(c_stop), ENTRY(c_poll), ENTRY(c_poll_batch),
    ENTRY(c_done), ENTRY(c_done_batch), ENTRY(c_pause), ENTRY(c_resume),
    ENTRY(c_seek), ENTRY(c_seek_timestamp), ENTRY(c_commit),
    ENTRY(c_resolve), ENTRY(c_quarantined), ENTRY(c_quarantined2),
    ENTRY(c_stats), ENTRY(c_stats_json), ENTRY(c_metrics), ENTRY(c_health),
    ENTRY(c_close), ENTRY(c_destroy),
    /* dedup.h: the SQLite store's callbacks */
    ENTRY(s_load), ENTRY(s_save), ENTRY(s_seen), ENTRY(s_destroy),
    /* testing.h */
    ENTRY(t_bootstrap), ENTRY(t_mock), ENTRY(t_create_topic),
    ENTRY(t_set_leader), ENTRY(t_broker_down), ENTRY(t_broker_up),
    ENTRY(t_push_request_errors), ENTRY(t_push_produce_errors),
    ENTRY(t_broker_push_request_errors), ENTRY(t_delay_produce),
    ENTRY(t_clear_request_errors), ENTRY(t_set_coordinator),
    ENTRY(t_destroy),
};

/* ------------------------------------------------------------ the parent */

static gpointer busy_sender(gpointer arg) {
        fx_t *f = arg;
        rbk_msg_t m = f_msg();
        while (!g_atomic_int_get(&f->stop)) {
                if (rbk_producer_send(f->p, &m, NULL, 0) == RBK_OK)
                        f->sent++;
                g_usleep(100);
        }
        return NULL;
}

/* Keeps the store's mutex and connection in use. */
static gpointer busy_store(gpointer arg) {
        fx_t *f = arg;
        char e[256];
        while (!g_atomic_int_get(&f->stop)) {
                if (f->store->seen(F_GROUP, F_TOPIC, 0, "none", 4, e,
                                   sizeof(e), f->store->opaque) == 0)
                        f->seen_calls++;
                else
                        f->seen_errors++;
                g_usleep(200);
        }
        return NULL;
}

static void fx_setup(fx_t *f) {
        char e[512];
        memset(f, 0, sizeof(*f));
        f->cl = cs_cluster_new();
        cs_topic(f->cl, F_TOPIC, 2);
        f->pconf = ps_conf(f->cl->tc, NULL);
        f->p = rbk_producer_new(f->pconf, e, sizeof(e));
        ck_assert_msg(f->p, "%s", e);
        f->regp = rbk_producer_get(F_REG, f->pconf, e, sizeof(e));
        ck_assert_msg(f->regp, "%s", e);

        GError *gerr = NULL;
        f->dir = g_dir_make_tmp("rbk-fork-XXXXXX", &gerr);
        ck_assert_msg(f->dir, "%s", gerr ? gerr->message : "");
        f->db = g_build_filename(f->dir, "dedup.db", NULL);
        f->store = rbk_dedup_sqlite_new(f->db, e, sizeof(e));
        ck_assert_msg(f->store, "%s", e);
        f->cconf = cs_conf(f->cl, F_GROUP);
        cs_set(f->cconf, "auto.commit.interval.ms", "100");
        ck_assert_int_eq(rbk_conf_set_dedup_store(f->cconf, f->store, e,
                                                  sizeof(e)),
                         RBK_OK);
        f->c = rbk_consumer_new(f->cconf, e, sizeof(e));
        ck_assert_msg(f->c, "%s", e);
}

static void fx_teardown(fx_t *f) {
        rbk_consumer_stop(f->c);
        ck_assert_int_eq(rbk_consumer_close(f->c, 10000), RBK_OK);
        rbk_consumer_destroy(f->c); /* the last user of the store */
        ck_assert_int_eq(rbk_producer_flush(f->p, 30000), RBK_OK);
        rbk_producer_destroy(f->p);
        rbk_producer_put(f->regp);
        ck_assert_int_eq(rbk_shutdown(10000), RBK_OK);
        rbk_conf_destroy(f->pconf);
        rbk_conf_destroy(f->cconf);
        cs_cluster_destroy(f->cl);
        g_autofree char *wal = g_strconcat(f->db, "-wal", NULL);
        g_autofree char *shm = g_strconcat(f->db, "-shm", NULL);
        g_unlink(wal);
        g_unlink(shm);
        ck_assert_msg(g_unlink(f->db) == 0, "%s", f->db);
        ck_assert_msg(g_rmdir(f->dir) == 0, "%s", f->dir);
        g_free(f->db);
        g_free(f->dir);
}

/* In the child: the call, bounded by an alarm. */
static void child_run(fx_t *f, size_t i) {
        /* Check's SIGALRM handler, inherited, would kill the whole test. */
        signal(SIGALRM, SIG_DFL);
        alarm((unsigned)(cs_ms(2000) / 1000));
        rbk_test_child_exit(calls[i].fn(f) ? 0 : 1);
}

START_TEST(every_entry_point_refused_in_a_forked_child) {
        fx_t f;
        fx_setup(&f);
        char e[512];
        const char *t[] = {F_TOPIC};
        ck_assert_int_eq(rbk_consumer_subscribe(f.c, t, 1, e, sizeof(e)),
                         RBK_OK);
        ck_assert_int_eq(rbk_consumer_start(f.c, h_count, &f), RBK_OK);
        GThread *ts = g_thread_new("busy-sender", busy_sender, &f);
        GThread *tq = g_thread_new("busy-store", busy_store, &f);
        /* The consumer handles messages and commits (saving its windows
         * to the store) while the children are forked. */
        ck_assert(CS_WAIT(g_atomic_int_get(&f.handled) > 0, 30000));

        GString *bad = g_string_new(NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(calls); i++) {
                fflush(NULL);
                pid_t pid = fork();
                ck_assert_int_ge(pid, 0);
                if (pid == 0)
                        child_run(&f, i);
                int status = 0;
                ck_assert_int_eq(waitpid(pid, &status, 0), pid);
                if (WIFSIGNALED(status))
                        g_string_append_printf(
                            bad, " %s (killed by signal %d: %s)",
                            calls[i].name, WTERMSIG(status),
                            WTERMSIG(status) == SIGALRM ? "hung" : "crashed");
                else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        g_string_append_printf(bad, " %s (wrong answer)",
                                               calls[i].name);
        }
        ck_assert_msg(bad->len == 0, "in a forked child:%s", bad->str);
        g_string_free(bad, TRUE);

        /* Meanwhile the parent went on, and still does. */
        int handled = g_atomic_int_get(&f.handled);
        ck_assert(CS_WAIT(g_atomic_int_get(&f.handled) > handled, 30000));
        g_atomic_int_set(&f.stop, 1);
        g_thread_join(ts);
        g_thread_join(tq);
        ck_assert_uint_gt(f.seen_calls, 0);
        ck_assert_uint_eq(f.seen_errors, 0);
        rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;
        ck_assert_int_eq(rbk_producer_stats(f.p, &st), RBK_OK);
        ck_assert_uint_eq(st.accepted, f.sent);
        ck_assert_ptr_nonnull(rbk_testcluster_bootstrap(f.cl->tc));
        ck_assert_int_eq(rbk_consumer_commit(f.c, 10000, e, sizeof(e)),
                         RBK_OK);
        fx_teardown(&f);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("fork");
        RBK_TCASE(s, every_entry_point_refused_in_a_forked_child, 180);
        return s;
}

RBK_TEST_MAIN()
