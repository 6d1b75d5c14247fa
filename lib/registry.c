/* The registry: process-wide named producers and consumers, created once
 * on first use, shared by every thread, closed together by rbk_shutdown().
 *
 * One global lock protects the tables. A client is created without holding
 * it (creation connects and may take a while): the creator inserts a
 * placeholder entry in state CREATING, and other getters of the same name
 * wait on the entry's condition variable until it is READY (or FAILED, in
 * which case they start over and one of them becomes the next creator).
 *
 * Fork: the registry remembers the process that first used it. In a forked
 * child every call fails with RBK_ERR_FORKED before touching the lock (the
 * lock may have been held by a parent thread that does not exist in the
 * child), and nothing of the parent's clients is used. */
#include <string.h>
#include <unistd.h>

#include "internal.h"

typedef enum { RBK__REG_PRODUCER = 0, RBK__REG_CONSUMER = 1 } rbk__reg_kind_t;

typedef enum {
        RBK__REG_CREATING,
        RBK__REG_READY,
        RBK__REG_FAILED
} rbk__reg_state_t;

typedef struct rbk__reg_entry_s {
        rbk__reg_kind_t kind;
        char *name;
        rbk_conf_t *conf; /* the user's configuration, for comparison */
        void *client;     /* rbk_producer_t* or rbk_consumer_t* when READY */
        rbk__reg_state_t state;
        int refcnt;  /* references taken by *_get() and not yet put back */
        int waiters; /* threads waiting on cond for this entry */
        GCond cond;
} rbk__reg_entry_t;

typedef enum {
        RBK__REG_OPEN,
        RBK__REG_SHUTTING_DOWN,
        RBK__REG_SHUT_DOWN
} rbk__reg_phase_t;

static GMutex rbk__reg_lock; /* a static GMutex needs no initialisation */
static GCond rbk__reg_shutdown_cond;
static GHashTable *rbk__reg_names[2]; /* name -> entry, per kind */
static GHashTable *rbk__reg_clients;  /* client pointer -> entry */
static GPtrArray *rbk__reg_order;     /* READY entries in creation order */
static rbk__reg_phase_t rbk__reg_phase;
static rbk_err_t rbk__reg_shutdown_rc;
static gint rbk__reg_pid; /* creator process; 0 until first use */
static guint64 rbk__reg_created;

static const char *rbk__reg_what(rbk__reg_kind_t kind) {
        return kind == RBK__REG_PRODUCER ? "producer" : "consumer";
}

static void rbk__reg_entry_free(rbk__reg_entry_t *e) {
        g_cond_clear(&e->cond);
        rbk_conf_destroy(e->conf);
        g_free(e->name);
        g_free(e);
}

/* 1 in a forked child of the process that first used the registry. */
static int rbk__reg_forked(void) {
        pid_t p = (pid_t)g_atomic_int_get(&rbk__reg_pid);
        return p != 0 && rbk__forked(p);
}

/* Called with the lock held: the tables, created on first use. */
static void rbk__reg_init_locked(void) {
        if (rbk__reg_clients)
                return;
        for (int k = 0; k < 2; k++)
                rbk__reg_names[k] = g_hash_table_new(g_str_hash, g_str_equal);
        rbk__reg_clients = g_hash_table_new(g_direct_hash, g_direct_equal);
        rbk__reg_order = g_ptr_array_new();
        g_atomic_int_set(&rbk__reg_pid, (gint)rbk__getpid());
}

/* Called with the lock held: waits until @p e is no longer CREATING.
 * Returns 1 if it became READY, 0 if its creation failed (then the entry is
 * already out of the tables and may have been freed here). */
static int rbk__reg_wait_created(rbk__reg_entry_t *e) {
        e->waiters++;
        while (e->state == RBK__REG_CREATING)
                g_cond_wait(&e->cond, &rbk__reg_lock);
        e->waiters--;
        if (e->state == RBK__REG_FAILED) {
                if (e->waiters == 0)
                        rbk__reg_entry_free(e);
                return 0;
        }
        /* rbk_shutdown() waits for the last waiter before freeing. */
        if (e->waiters == 0)
                g_cond_broadcast(&e->cond);
        return 1;
}

static void *rbk__reg_create(rbk__reg_kind_t kind, const char *name,
                             const rbk_conf_t *conf, char *errstr,
                             size_t errstr_size) {
        /* The client learns its registry name (for hooks and logs) unless
         * the application named it. */
        rbk_conf_t *cc = rbk_conf_dup(conf);
        if (!cc) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                            "out of memory copying the configuration");
                return NULL;
        }
        if (!g_hash_table_contains(cc->props, "rbk.client.name"))
                rbk__conf_set_raw(cc, "rbk.client.name", name);
        void *client = kind == RBK__REG_PRODUCER
                           ? (void *)rbk_producer_new(cc, errstr, errstr_size)
                           : (void *)rbk_consumer_new(cc, errstr, errstr_size);
        rbk_conf_destroy(cc);
        return client;
}

static void *rbk__reg_get(rbk__reg_kind_t kind, const char *name,
                          const rbk_conf_t *conf, char *errstr,
                          size_t errstr_size) {
        const char *what = rbk__reg_what(kind);
        rbk_conf_t *envconf = NULL;
        rbk__reg_entry_t *e;
        void *client = NULL;

        if (!name)
                name = "default";
        if (!*name) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "registry name is empty (NULL means \"default\")");
                return NULL;
        }
        if (rbk__reg_forked()) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_FORKED,
                            "%s \"%s\": the registry belongs to process %d, "
                            "this is its forked child %d; create clients "
                            "after fork(), in the process that uses them",
                            what, name, (int)g_atomic_int_get(&rbk__reg_pid),
                            (int)getpid());
                return NULL;
        }
        if (!conf) {
                envconf = rbk_conf_from_env(NULL, errstr, errstr_size);
                if (!envconf)
                        return NULL; /* errstr says why */
                conf = envconf;
        }

        g_mutex_lock(&rbk__reg_lock);
        rbk__reg_init_locked();
again:
        if (rbk__reg_phase != RBK__REG_OPEN) {
                g_mutex_unlock(&rbk__reg_lock);
                rbk__seterr(errstr, errstr_size, RBK_ERR_SHUTDOWN,
                            "%s \"%s\": rbk_shutdown() was called; the "
                            "registry creates no more clients",
                            what, name);
                goto done;
        }

        e = g_hash_table_lookup(rbk__reg_names[kind], name);
        if (e) {
                if (e->state == RBK__REG_CREATING) {
                        /* Created or failed meanwhile; a shutdown may also
                         * have begun: look again. */
                        rbk__reg_wait_created(e);
                        goto again;
                }
                if (!rbk__conf_equal(e->conf, conf)) {
                        g_mutex_unlock(&rbk__reg_lock);
                        rbk__seterr(
                            errstr, errstr_size, RBK_ERR_EXISTS,
                            "%s \"%s\" exists with a different configuration "
                            "(properties or callbacks differ); pass the same "
                            "configuration or use another name",
                            what, name);
                        goto done;
                }
                e->refcnt++;
                client = e->client;
                g_mutex_unlock(&rbk__reg_lock);
                goto done;
        }

        /* Ours to create. */
        e = g_new0(rbk__reg_entry_t, 1);
        e->kind = kind;
        e->name = g_strdup(name);
        e->conf = rbk_conf_dup(conf);
        e->state = RBK__REG_CREATING;
        g_cond_init(&e->cond);
        g_hash_table_insert(rbk__reg_names[kind], e->name, e);
        g_mutex_unlock(&rbk__reg_lock);

        client = rbk__reg_create(kind, name, conf, errstr, errstr_size);

        g_mutex_lock(&rbk__reg_lock);
        if (!client) {
                e->state = RBK__REG_FAILED;
                g_hash_table_remove(rbk__reg_names[kind], e->name);
                g_cond_broadcast(&e->cond);
                if (e->waiters == 0)
                        rbk__reg_entry_free(e);
        } else {
                e->client = client;
                e->refcnt = 1;
                e->state = RBK__REG_READY;
                g_hash_table_insert(rbk__reg_clients, client, e);
                g_ptr_array_add(rbk__reg_order, e);
                rbk__reg_created++;
                g_cond_broadcast(&e->cond);
        }
        g_mutex_unlock(&rbk__reg_lock);

done:
        rbk_conf_destroy(envconf);
        return client;
}

static void rbk__reg_put(void *client) {
        if (!client || rbk__reg_forked())
                return;
        g_mutex_lock(&rbk__reg_lock);
        /* Never dereferences the handle: after rbk_shutdown() it is gone
         * and the lookup finds nothing. */
        rbk__reg_entry_t *e =
            rbk__reg_clients ? g_hash_table_lookup(rbk__reg_clients, client)
                             : NULL;
        if (e && e->refcnt > 0)
                e->refcnt--;
        g_mutex_unlock(&rbk__reg_lock);
}

rbk_producer_t *rbk_producer_get(const char *name, const rbk_conf_t *conf,
                                 char *errstr, size_t errstr_size) {
        return rbk__reg_get(RBK__REG_PRODUCER, name, conf, errstr,
                            errstr_size);
}

void rbk_producer_put(rbk_producer_t *p) {
        rbk__reg_put(p);
}

rbk_consumer_t *rbk_consumer_get(const char *name, const rbk_conf_t *conf,
                                 char *errstr, size_t errstr_size) {
        return rbk__reg_get(RBK__REG_CONSUMER, name, conf, errstr,
                            errstr_size);
}

void rbk_consumer_put(rbk_consumer_t *c) {
        rbk__reg_put(c);
}

uint64_t rbk__registry_created(void) {
        g_mutex_lock(&rbk__reg_lock);
        uint64_t n = rbk__reg_created;
        g_mutex_unlock(&rbk__reg_lock);
        return n;
}

static int rbk__remaining_ms(int64_t deadline) {
        int64_t left = deadline - rbk__now_ms();
        return left > 0 ? (int)left : 0;
}

rbk_err_t rbk_shutdown(int timeout_ms) {
        rbk_err_t rc = RBK_OK;

        if (rbk__reg_forked())
                return RBK_ERR_FORKED;

        g_mutex_lock(&rbk__reg_lock);
        if (rbk__reg_phase == RBK__REG_SHUTTING_DOWN) {
                /* Another thread is at it: wait for its result. */
                while (rbk__reg_phase != RBK__REG_SHUT_DOWN)
                        g_cond_wait(&rbk__reg_shutdown_cond, &rbk__reg_lock);
        }
        if (rbk__reg_phase == RBK__REG_SHUT_DOWN) {
                rc = rbk__reg_shutdown_rc;
                g_mutex_unlock(&rbk__reg_lock);
                return rc;
        }
        rbk__reg_phase = RBK__REG_SHUTTING_DOWN;
        rbk__reg_init_locked();

        /* Let creations in progress finish: their clients are closed too.
         * No new ones start (getters now see the phase). */
        for (int restart = 1; restart;) {
                restart = 0;
                for (int k = 0; k < 2 && !restart; k++) {
                        GHashTableIter it;
                        gpointer key, val;
                        g_hash_table_iter_init(&it, rbk__reg_names[k]);
                        while (g_hash_table_iter_next(&it, &key, &val)) {
                                rbk__reg_entry_t *e = val;
                                if (e->state == RBK__REG_CREATING) {
                                        rbk__reg_wait_created(e);
                                        restart = 1; /* tables may have changed */
                                        break;
                                }
                        }
                }
        }

        /* Take every client out of the registry, once no thread woken by a
         * creation still holds a pointer to its entry. */
        GPtrArray *entries = rbk__reg_order;
        for (guint i = 0; i < entries->len; i++) {
                rbk__reg_entry_t *e = entries->pdata[i];
                while (e->waiters > 0)
                        g_cond_wait(&e->cond, &rbk__reg_lock);
        }
        rbk__reg_order = g_ptr_array_new();
        for (int k = 0; k < 2; k++)
                g_hash_table_remove_all(rbk__reg_names[k]);
        g_hash_table_remove_all(rbk__reg_clients);
        g_mutex_unlock(&rbk__reg_lock);

        /* The budget: the caller's, else rbk.shutdown.timeout.ms of the
         * first client created, else 15 s. */
        int64_t budget = timeout_ms;
        if (budget < 0)
                budget = entries->len > 0
                             ? rbk__conf_int(((rbk__reg_entry_t *)
                                                  entries->pdata[0])->conf,
                                             "rbk.shutdown.timeout.ms")
                             : 15000;
        int64_t deadline = rbk__now_ms() + budget;

        /* Consumers first: their handlers may still produce. Stop them all,
         * then close each with what is left of the budget (this commits
         * stored offsets and leaves the group). */
        for (guint i = 0; i < entries->len; i++) {
                rbk__reg_entry_t *e = entries->pdata[i];
                if (e->kind == RBK__REG_CONSUMER)
                        rbk_consumer_stop(e->client);
        }
        for (guint i = 0; i < entries->len; i++) {
                rbk__reg_entry_t *e = entries->pdata[i];
                if (e->kind == RBK__REG_CONSUMER &&
                    rbk_consumer_close(e->client,
                                       rbk__remaining_ms(deadline)) != RBK_OK)
                        rc = RBK_ERR_TIMED_OUT;
        }
        /* Then producers: flush within the rest of the budget; whatever is
         * left is reported undelivered to its delivery callback. */
        for (guint i = 0; i < entries->len; i++) {
                rbk__reg_entry_t *e = entries->pdata[i];
                if (e->kind == RBK__REG_PRODUCER &&
                    rbk_producer_close(e->client,
                                       rbk__remaining_ms(deadline)) != RBK_OK)
                        rc = RBK_ERR_TIMED_OUT;
        }
        for (guint i = 0; i < entries->len; i++) {
                rbk__reg_entry_t *e = entries->pdata[i];
                if (e->kind == RBK__REG_CONSUMER)
                        rbk_consumer_destroy(e->client);
                else
                        rbk_producer_destroy(e->client);
                rbk__reg_entry_free(e);
        }
        g_ptr_array_free(entries, TRUE);

        g_mutex_lock(&rbk__reg_lock);
        rbk__reg_shutdown_rc = rc;
        rbk__reg_phase = RBK__REG_SHUT_DOWN;
        g_cond_broadcast(&rbk__reg_shutdown_cond);
        g_mutex_unlock(&rbk__reg_lock);
        return rc;
}

void rbk__registry_reset(void) {
        g_mutex_lock(&rbk__reg_lock);
        if (rbk__reg_phase == RBK__REG_SHUT_DOWN) {
                rbk__reg_phase = RBK__REG_OPEN;
                rbk__reg_shutdown_rc = RBK_OK;
                g_atomic_int_set(&rbk__reg_pid, (gint)rbk__getpid());
        }
        g_mutex_unlock(&rbk__reg_lock);
}
