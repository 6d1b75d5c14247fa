/*
 * upsert_consumer: a consumer whose effect applies once even though Kafka
 * delivers at least once. The template to copy when a handler writes to a
 * database.
 *
 * The library drops the duplicates it can prove (same message id seen in
 * the partition's window), but a message can still come twice: after a
 * crash before the offset commit, after a rebalance, after an operator
 * replays a partition, or when a duplicate is older than the window. So
 * the handler writes with an UPSERT keyed by the message id:
 *
 *   INSERT INTO kafka_events (id, topic, part, msg_key, payload)
 *   VALUES (...) ON CONFLICT (id) DO UPDATE SET ...
 *
 * and a redelivered message leaves the table exactly as it was. The id is
 * the `rbk-id` header every librobustkafka producer stamps on a message
 * (a caller-supplied id when the producer set one); a message without one
 * is keyed by topic/partition/offset.
 *
 * Database: SQLite (embedded) at the path given as argument, by default;
 * PostgreSQL when DATABASE_URL is set (Heroku Postgres sets it). libpq is
 * loaded at run time with dlopen(), so this file builds without libpq-dev;
 * in your service, #include <libpq-fe.h>, link -lpq and call PQ* directly.
 *
 * RBK_EXAMPLE_NEEDS: sqlite3 (the SQLite API is called directly)
 * Build (installed library):
 *   cc -o upsert_consumer upsert_consumer.c \
 *      $(pkg-config --cflags --libs robustkafka sqlite3) -ldl
 *
 * Run:
 *   ./upsert_consumer -b 127.0.0.1:9092 -t events -g billing events.db
 *   DATABASE_URL=postgres://user@127.0.0.1/app ./upsert_consumer -t events
 *
 * With -B N it takes batches of up to N messages of a partition
 * (rbk_consumer_run_batch()) and writes each batch in one transaction: a
 * batch commits whole or not at all (then it is retried whole), and the
 * database sees one commit per batch instead of one per message.
 *
 * Stops on SIGTERM/SIGINT, after -n messages, or after -i milliseconds
 * without a message; prints the counts and exits 0 unless the consumer or
 * the database failed (a failed write is retried, never skipped).
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include <robustkafka.h>

/* ------------------------------------------------------------ the store */

static const char *const SCHEMA_SQLITE =
        "CREATE TABLE IF NOT EXISTS kafka_events ("
        " id TEXT PRIMARY KEY,"
        " topic TEXT NOT NULL,"
        " part INTEGER NOT NULL,"
        " msg_key BLOB,"
        " payload BLOB)";

/* The WHERE clause turns a redelivery into a no-op (0 rows changed), so
 * the counts below can tell applied from unchanged. Without it the UPSERT
 * is just as idempotent. */
static const char *const UPSERT_SQLITE =
        "INSERT INTO kafka_events (id, topic, part, msg_key, payload)"
        " VALUES (?1, ?2, ?3, ?4, ?5)"
        " ON CONFLICT (id) DO UPDATE SET"
        "  topic = excluded.topic, part = excluded.part,"
        "  msg_key = excluded.msg_key, payload = excluded.payload"
        " WHERE kafka_events.payload IS NOT excluded.payload"
        "  OR kafka_events.msg_key IS NOT excluded.msg_key";

static const char *const SCHEMA_PG =
        "CREATE TABLE IF NOT EXISTS kafka_events ("
        " id text PRIMARY KEY,"
        " topic text NOT NULL,"
        " part integer NOT NULL,"
        " msg_key bytea,"
        " payload bytea)";

static const char *const UPSERT_PG =
        "INSERT INTO kafka_events (id, topic, part, msg_key, payload)"
        " VALUES ($1, $2, $3::integer, $4::bytea, $5::bytea)"
        " ON CONFLICT (id) DO UPDATE SET"
        "  topic = excluded.topic, part = excluded.part,"
        "  msg_key = excluded.msg_key, payload = excluded.payload"
        " WHERE kafka_events.payload IS DISTINCT FROM excluded.payload"
        "  OR kafka_events.msg_key IS DISTINCT FROM excluded.msg_key";

/* The part of libpq this example uses, resolved with dlsym(). The values
 * of the two status enums are part of libpq's stable ABI. */
typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
enum { PG_CONNECTION_OK = 0 };
enum { PG_COMMAND_OK = 1, PG_TUPLES_OK = 2 };
static struct {
        void *dl;
        PGconn *(*connectdb)(const char *conninfo);
        int (*status)(const PGconn *conn);
        char *(*error_message)(const PGconn *conn);
        void (*reset)(PGconn *conn);
        void (*finish)(PGconn *conn);
        PGresult *(*exec)(PGconn *conn, const char *query);
        PGresult *(*exec_params)(PGconn *conn, const char *command,
                                 int nparams, const unsigned int *types,
                                 const char *const *values, const int *lengths,
                                 const int *formats, int result_format);
        int (*result_status)(const PGresult *res);
        char *(*result_error)(const PGresult *res);
        char *(*cmd_tuples)(PGresult *res);
        char *(*getvalue)(const PGresult *res, int row, int col);
        int (*ntuples)(const PGresult *res);
        void (*clear)(PGresult *res);
} pq;

static int pq_load(char *err, size_t err_size) {
        pq.dl = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
        if (!pq.dl) {
                snprintf(err, err_size, "DATABASE_URL is set but libpq "
                         "cannot be loaded (%s); install libpq5", dlerror());
                return -1;
        }
#define PQ_SYM(field, name)                                                  \
        do {                                                                 \
                *(void **)&pq.field = dlsym(pq.dl, name);                     \
                if (!pq.field) {                                             \
                        snprintf(err, err_size, "libpq lacks %s", name);      \
                        return -1;                                           \
                }                                                            \
        } while (0)
        PQ_SYM(connectdb, "PQconnectdb");
        PQ_SYM(status, "PQstatus");
        PQ_SYM(error_message, "PQerrorMessage");
        PQ_SYM(reset, "PQreset");
        PQ_SYM(finish, "PQfinish");
        PQ_SYM(exec, "PQexec");
        PQ_SYM(exec_params, "PQexecParams");
        PQ_SYM(result_status, "PQresultStatus");
        PQ_SYM(result_error, "PQresultErrorMessage");
        PQ_SYM(cmd_tuples, "PQcmdTuples");
        PQ_SYM(getvalue, "PQgetvalue");
        PQ_SYM(ntuples, "PQntuples");
        PQ_SYM(clear, "PQclear");
#undef PQ_SYM
        return 0;
}

/* One connection, used by one worker at a time (the handler runs on
 * several worker threads, one partition each). A service with many
 * partitions would use one connection per worker or a pool. */
static struct {
        pthread_mutex_t lock;
        int pg;              /* 1: PostgreSQL, 0: SQLite */
        sqlite3 *db;
        sqlite3_stmt *upsert;
        PGconn *conn;
} store = {PTHREAD_MUTEX_INITIALIZER, 0, NULL, NULL, NULL};

static int store_open(const char *sqlite_path, char *err, size_t err_size) {
        const char *url = getenv("DATABASE_URL");
        if (url && *url) {
                store.pg = 1;
                if (pq_load(err, err_size) != 0)
                        return -1;
                store.conn = pq.connectdb(url);
                if (!store.conn || pq.status(store.conn) != PG_CONNECTION_OK) {
                        /* libpq's message names the host, never the password. */
                        snprintf(err, err_size, "PostgreSQL: %s",
                                 store.conn ? pq.error_message(store.conn)
                                            : "out of memory");
                        return -1;
                }
                PGresult *res = pq.exec(store.conn, SCHEMA_PG);
                int ok = pq.result_status(res) == PG_COMMAND_OK;
                if (!ok)
                        snprintf(err, err_size, "PostgreSQL: %s",
                                 pq.result_error(res));
                pq.clear(res);
                return ok ? 0 : -1;
        }

        if (sqlite3_open_v2(sqlite_path, &store.db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                    SQLITE_OPEN_FULLMUTEX,
                            NULL) != SQLITE_OK ||
            sqlite3_busy_timeout(store.db, 5000) != SQLITE_OK ||
            sqlite3_exec(store.db, "PRAGMA journal_mode=WAL", NULL, NULL,
                         NULL) != SQLITE_OK ||
            sqlite3_exec(store.db, SCHEMA_SQLITE, NULL, NULL, NULL) !=
                    SQLITE_OK ||
            sqlite3_prepare_v2(store.db, UPSERT_SQLITE, -1, &store.upsert,
                               NULL) != SQLITE_OK) {
                snprintf(err, err_size, "SQLite %s: %s", sqlite_path,
                         store.db ? sqlite3_errmsg(store.db) : "out of memory");
                return -1;
        }
        return 0;
}

/* Writes one row; store.lock held. Returns 1 if the row was inserted or
 * changed, 0 if it was already there unchanged (a redelivery), -1 on
 * error. */
static int store_upsert_locked(const char *id, const char *topic,
                               int32_t part, const void *key, size_t key_len,
                               const void *payload, size_t payload_len,
                               char *err, size_t err_size) {
        int rc = -1;
        if (store.pg) {
                char partbuf[16];
                snprintf(partbuf, sizeof(partbuf), "%" PRId32, part);
                const char *values[5] = {id, topic, partbuf, key, payload};
                int lengths[5] = {0, 0, 0, (int)key_len, (int)payload_len};
                int formats[5] = {0, 0, 0, 1, 1}; /* key, payload: binary */
                for (int attempt = 0; attempt < 2 && rc == -1; attempt++) {
                        PGresult *res = pq.exec_params(store.conn, UPSERT_PG,
                                                       5, NULL, values,
                                                       lengths, formats, 0);
                        if (pq.result_status(res) == PG_COMMAND_OK) {
                                rc = atoi(pq.cmd_tuples(res)) > 0;
                        } else {
                                snprintf(err, err_size, "PostgreSQL: %s",
                                         pq.result_error(res));
                                /* A dropped connection: reconnect once, the
                                 * library retries the message anyway. */
                                if (pq.status(store.conn) != PG_CONNECTION_OK)
                                        pq.reset(store.conn);
                                else
                                        attempt = 2;
                        }
                        pq.clear(res);
                }
        } else {
                sqlite3_stmt *st = store.upsert;
                sqlite3_reset(st);
                sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 2, topic, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int(st, 3, part);
                if (key)
                        sqlite3_bind_blob(st, 4, key, (int)key_len,
                                          SQLITE_TRANSIENT);
                else
                        sqlite3_bind_null(st, 4);
                if (payload)
                        sqlite3_bind_blob(st, 5, payload, (int)payload_len,
                                          SQLITE_TRANSIENT);
                else
                        sqlite3_bind_null(st, 5);
                if (sqlite3_step(st) == SQLITE_DONE)
                        rc = sqlite3_changes(store.db) > 0;
                else
                        snprintf(err, err_size, "SQLite: %s",
                                 sqlite3_errmsg(store.db));
                sqlite3_reset(st);
                sqlite3_clear_bindings(st);
        }
        return rc;
}

static int store_upsert(const char *id, const char *topic, int32_t part,
                        const void *key, size_t key_len, const void *payload,
                        size_t payload_len, char *err, size_t err_size) {
        pthread_mutex_lock(&store.lock);
        int rc = store_upsert_locked(id, topic, part, key, key_len, payload,
                                     payload_len, err, err_size);
        pthread_mutex_unlock(&store.lock);
        return rc;
}

/* BEGIN, COMMIT or ROLLBACK; store.lock held. 0 or -1. */
static int store_tx_locked(const char *sql, char *err, size_t err_size) {
        if (store.pg) {
                PGresult *res = pq.exec(store.conn, sql);
                int ok = pq.result_status(res) == PG_COMMAND_OK;
                if (!ok)
                        snprintf(err, err_size, "PostgreSQL %s: %s", sql,
                                 pq.result_error(res));
                pq.clear(res);
                return ok ? 0 : -1;
        }
        if (sqlite3_exec(store.db, sql, NULL, NULL, NULL) != SQLITE_OK) {
                snprintf(err, err_size, "SQLite %s: %s", sql,
                         sqlite3_errmsg(store.db));
                return -1;
        }
        return 0;
}

static long long store_count(void) {
        long long n = -1;
        pthread_mutex_lock(&store.lock);
        if (store.pg) {
                PGresult *res = pq.exec(store.conn,
                                        "SELECT count(*) FROM kafka_events");
                if (pq.result_status(res) == PG_TUPLES_OK &&
                    pq.ntuples(res) == 1)
                        n = atoll(pq.getvalue(res, 0, 0));
                pq.clear(res);
        } else {
                sqlite3_stmt *st;
                if (sqlite3_prepare_v2(store.db,
                                       "SELECT count(*) FROM kafka_events", -1,
                                       &st, NULL) == SQLITE_OK) {
                        if (sqlite3_step(st) == SQLITE_ROW)
                                n = sqlite3_column_int64(st, 0);
                        sqlite3_finalize(st);
                }
        }
        pthread_mutex_unlock(&store.lock);
        return n;
}

static void store_close(void) {
        if (store.pg) {
                if (store.conn)
                        pq.finish(store.conn);
                if (pq.dl)
                        dlclose(pq.dl);
        } else {
                sqlite3_finalize(store.upsert);
                sqlite3_close(store.db);
        }
}

/* ------------------------------------------------------------ the consumer */

static struct {
        atomic_ulong handled;   /* handler returned RBK_HANDLED */
        atomic_ulong applied;   /* row inserted or changed */
        atomic_ulong unchanged; /* redelivery: row already there */
        atomic_ulong errors;    /* write failed, message retried */
        atomic_llong last_ms;   /* monotonic time of the last message */
} cnt;

static long long mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The handler: one message at a time per partition, in offset order, on a
 * worker thread. Returning RBK_RETRY hands the same message back after a
 * backoff; nothing after it in the partition is handled meanwhile, so a
 * database outage delays but never skips. */
static rbk_verdict_t handle(const rbk_message_t *msg, void *opaque) {
        (void)opaque;
        char idbuf[300], err[512];
        const char *id = msg->id;
        if (!id) {
                snprintf(idbuf, sizeof(idbuf), "%s/%" PRId32 "/%" PRId64,
                         msg->topic, msg->partition, msg->offset);
                id = idbuf;
        }
        int rc = store_upsert(id, msg->topic, msg->partition, msg->key,
                              msg->key_len, msg->value, msg->value_len, err,
                              sizeof(err));
        if (rc < 0) {
                atomic_fetch_add(&cnt.errors, 1);
                fprintf(stderr, "upsert_consumer: %s [%" PRId32 "] @%" PRId64
                        " attempt %d: %s\n", msg->topic, msg->partition,
                        msg->offset, msg->attempt, err);
                return RBK_RETRY;
        }
        atomic_fetch_add(rc ? &cnt.applied : &cnt.unchanged, 1);
        atomic_fetch_add(&cnt.handled, 1);
        atomic_store(&cnt.last_ms, mono_ms());
        return RBK_HANDLED;
}

/* The batch handler: messages of one partition in offset order, written in
 * one transaction. All or nothing: on any error the transaction is rolled
 * back and the whole batch comes again after the backoff (returning 0 with
 * *rest = RBK_RETRY); nothing is skipped. */
static size_t handle_batch(const rbk_message_t *const *msgs, size_t n,
                           rbk_verdict_t *rest, void *opaque) {
        (void)opaque;
        char err[512], idbuf[300];
        unsigned long applied = 0, unchanged = 0;
        pthread_mutex_lock(&store.lock);
        int ok = store_tx_locked("BEGIN", err, sizeof(err)) == 0;
        for (size_t i = 0; ok && i < n; i++) {
                const rbk_message_t *msg = msgs[i];
                const char *id = msg->id;
                if (!id) {
                        snprintf(idbuf, sizeof(idbuf),
                                 "%s/%" PRId32 "/%" PRId64, msg->topic,
                                 msg->partition, msg->offset);
                        id = idbuf;
                }
                int rc = store_upsert_locked(id, msg->topic, msg->partition,
                                             msg->key, msg->key_len,
                                             msg->value, msg->value_len, err,
                                             sizeof(err));
                if (rc < 0)
                        ok = 0;
                else if (rc)
                        applied++;
                else
                        unchanged++;
        }
        if (ok)
                ok = store_tx_locked("COMMIT", err, sizeof(err)) == 0;
        if (!ok)
                store_tx_locked("ROLLBACK", idbuf, sizeof(idbuf));
        pthread_mutex_unlock(&store.lock);
        if (!ok) {
                atomic_fetch_add(&cnt.errors, 1);
                fprintf(stderr, "upsert_consumer: batch of %zu from %s [%" PRId32
                        "] @%" PRId64 ": %s\n", n, msgs[0]->topic,
                        msgs[0]->partition, msgs[0]->offset, err);
                *rest = RBK_RETRY;
                return 0;
        }
        atomic_fetch_add(&cnt.applied, applied);
        atomic_fetch_add(&cnt.unchanged, unchanged);
        atomic_fetch_add(&cnt.handled, n);
        atomic_store(&cnt.last_ms, mono_ms());
        return n;
}

static void on_event(const rbk_event_t *ev, void *opaque) {
        (void)opaque;
        char *json = rbk_event_to_json(ev);
        fprintf(stderr, "upsert_consumer: event %s\n", json ? json : "?");
        rbk_free(json);
}

static rbk_consumer_t *consumer; /* for the signal handler */
static atomic_int run_over;
static unsigned long max_msgs;
static long idle_ms, deadline_ms;

static void on_signal(int sig) {
        (void)sig;
        rbk_consumer_stop(consumer); /* async-signal-safe */
}

/* Stops the consumer after -n messages, -i ms of silence after the first
 * message, or the -d deadline. */
static void *watch(void *arg) {
        (void)arg;
        long long start = mono_ms();
        while (!atomic_load(&run_over)) {
                long long now = mono_ms(), last = atomic_load(&cnt.last_ms);
                if ((max_msgs && atomic_load(&cnt.handled) >= max_msgs) ||
                    (idle_ms && last && now - last >= idle_ms) ||
                    (deadline_ms && now - start >= deadline_ms)) {
                        rbk_consumer_stop(consumer);
                        break;
                }
                struct timespec ts = {0, 50 * 1000000L};
                nanosleep(&ts, NULL);
        }
        return NULL;
}

static void usage(const char *argv0) {
        fprintf(stderr,
                "usage: %s [-b bootstrap] [-t topic] [-g group] [-n max] "
                "[-i idle_ms] [-d deadline_ms] [-B batch] [-X name=value]... "
                "[sqlite-path]\n"
                "  Kafka: KAFKA_URL and friends when KAFKA_URL is set, else -b "
                "(default 127.0.0.1:9092).\n"
                "  Database: PostgreSQL when DATABASE_URL is set, else SQLite "
                "at sqlite-path (default upsert.db).\n"
                "  -t topic (default events), -g group (default "
                "upsert-consumer)\n"
                "  -n stop after max messages, -i stop after idle_ms without "
                "a message,\n"
                "  -d stop after deadline_ms in all; default: run until "
                "SIGTERM\n"
                "  -B write batches of up to this many messages in one "
                "transaction each\n",
                argv0);
}

int main(int argc, char **argv) {
        const char *bootstrap = "127.0.0.1:9092", *topic = "events";
        const char *group = "upsert-consumer", *path = "upsert.db";
        char errstr[512];
        char *props[64];
        int nprops = 0, opt;
        long batch = 0;

        while ((opt = getopt(argc, argv, "b:t:g:n:i:d:B:X:h")) != -1) {
                switch (opt) {
                case 'b': bootstrap = optarg; break;
                case 't': topic = optarg; break;
                case 'g': group = optarg; break;
                case 'n': max_msgs = strtoul(optarg, NULL, 10); break;
                case 'i': idle_ms = atol(optarg); break;
                case 'd': deadline_ms = atol(optarg); break;
                case 'B': batch = atol(optarg); break;
                case 'X':
                        if (nprops == 64 || !strchr(optarg, '=')) {
                                usage(argv[0]);
                                return 2;
                        }
                        props[nprops++] = optarg;
                        break;
                default: usage(argv[0]); return opt == 'h' ? 0 : 2;
                }
        }
        if (optind < argc)
                path = argv[optind];

        if (store_open(path, errstr, sizeof(errstr)) != 0) {
                fprintf(stderr, "upsert_consumer: %s\n", errstr);
                store_close();
                return 2;
        }

        rbk_conf_t *conf;
        if (getenv("KAFKA_URL")) {
                conf = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        } else {
                conf = rbk_conf_new();
                if (conf && rbk_conf_set(conf, "bootstrap.servers", bootstrap,
                                         errstr, sizeof(errstr)) != RBK_OK) {
                        rbk_conf_destroy(conf);
                        conf = NULL;
                }
        }
        if (!conf || rbk_conf_set(conf, "group.id", group, errstr,
                                  sizeof(errstr)) != RBK_OK) {
                fprintf(stderr, "upsert_consumer: %s\n", errstr);
                rbk_conf_destroy(conf);
                store_close();
                return 2;
        }
        rbk_conf_set(conf, "rbk.client.name", "upsert_consumer", NULL, 0);
        for (int i = 0; i < nprops; i++) {
                char *eq = strchr(props[i], '=');
                *eq = '\0';
                if (rbk_conf_set(conf, props[i], eq + 1, errstr,
                                 sizeof(errstr)) != RBK_OK) {
                        fprintf(stderr, "upsert_consumer: -X %s: %s\n",
                                props[i], errstr);
                        rbk_conf_destroy(conf);
                        store_close();
                        return 2;
                }
        }
        if (batch > 0) {
                char b[32];
                snprintf(b, sizeof(b), "%ld", batch);
                if (rbk_conf_set(conf, "rbk.consumer.batch.max.messages", b,
                                 errstr, sizeof(errstr)) != RBK_OK) {
                        fprintf(stderr, "upsert_consumer: -B: %s\n", errstr);
                        rbk_conf_destroy(conf);
                        store_close();
                        return 2;
                }
        }
        rbk_conf_set_hook(conf, on_event, NULL);

        consumer = rbk_consumer_new(conf, errstr, sizeof(errstr));
        rbk_conf_destroy(conf);
        const char *topics[1] = {topic};
        if (!consumer || rbk_consumer_subscribe(consumer, topics, 1, errstr,
                                                sizeof(errstr)) != RBK_OK) {
                fprintf(stderr, "upsert_consumer: %s\n", errstr);
                rbk_consumer_destroy(consumer);
                store_close();
                return 2;
        }

        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        pthread_t watcher;
        int watching = pthread_create(&watcher, NULL, watch, NULL) == 0;
        fprintf(stderr, "upsert_consumer: consuming %s as group %s into %s\n",
                topic, group, store.pg ? "PostgreSQL" : path);

        rbk_err_t err = batch > 0
                            ? rbk_consumer_run_batch(consumer, handle_batch, NULL)
                            : rbk_consumer_run(consumer, handle, NULL);
        atomic_store(&run_over, 1);
        if (watching)
                pthread_join(watcher, NULL);
        if (err != RBK_OK)
                fprintf(stderr, "upsert_consumer: run: %s\n",
                        rbk_err2str(err));

        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        memset(&st, 0, sizeof(st));
        rbk_consumer_stats(consumer, &st);
        /* Commits the stored offsets and leaves the group. */
        rbk_consumer_close(consumer, -1);
        rbk_consumer_destroy(consumer);

        long long rows = store_count();
        printf("upsert_consumer: backend=%s handled=%lu applied=%lu "
               "unchanged=%lu write_errors=%lu duplicates_dropped=%" PRIu64
               " rows=%lld\n",
               store.pg ? "postgresql" : "sqlite", atomic_load(&cnt.handled),
               atomic_load(&cnt.applied), atomic_load(&cnt.unchanged),
               atomic_load(&cnt.errors), st.duplicates_dropped, rows);
        store_close();
        return err == RBK_OK && rows >= 0 ? 0 : 1;
}
