/*
 * chaos: the program behind tests/kafka/chaos.sh.
 *
 * The code under test is librobustkafka's public API (robustkafka.h): the
 * singleton producer, the group consumer, quarantine and resolve. librdkafka
 * is used directly only to set up and to look (committed offsets, watermarks,
 * DeleteRecords). Every fact the verification needs is written to plain
 * files, one record a line, so it can be recomputed by hand:
 *
 *   acked-*.log    id partition offset key kseq [latency_ms sent_ms]  (delivery reports, ok)
 *   failed-*.log   id partition errname persisted reason (delivery reports, failed)
 *   *.hlog         H ns pid inst partition offset id key kseq attempt
 *                  R ns pid inst assigned|revoked|lost partition
 *                  E ns pid inst class partition offset committed low high key
 *                  X ns pid inst resolved partition from to
 *                  J {json of an event}
 *   oor.deleted    partition committed log_start high
 *   kills          epoch node partition
 *   gray           kind node partition start_ms end_ms start_ns end_ns
 *                  (kind: freeze-leader, freeze-coordinator, partition-leader,
 *                  partition-coordinator; ms on the wall clock, ns monotonic)
 *
 * ns is CLOCK_MONOTONIC, which is one clock for every process of the machine,
 * so records of different consumer processes can be merged in time order.
 *
 * Modes:
 *   chaos produce  -b BS -t TOPIC -o DIR -s STOPFILE [-n MIN] [-r RATE] [-k KEYS] [-T MAXSECS]
 *   chaos consume  -b BS -t TOPIC -g GROUP -d DB -l LOG -i INSTANCE
 *   chaos oor      -b BS -t TOPIC -g GROUP -d DB -l LOG -o DIR -p PARTITION [-n EXTRA]
 *   chaos store-init -d DB
 *   chaos missing  -o DIR -d DB
 *   chaos merge    -d DB -l LOG
 *   chaos verify   -o DIR -d DB [-n MIN_ACKED] [-K MIN_KILLS] [-Q] [-M MAX_MS] [-P P99_MS]
 *   chaos now      (prints epoch ms and CLOCK_MONOTONIC ns of one instant)
 *
 * verify exits 0 only if every must-be-zero count is zero, at least
 * MIN_ACKED (200000) ids were acked, at least MIN_KILLS (5) broker kills hit
 * every node, and the offset-out-of-range phase passed (-Q: there was none);
 * with -M / -P, the largest delivery latency must be at most MAX_MS and the
 * 99th percentile of the messages sent during a gray failure at most P99_MS.
 */
#include <robustkafka.h>

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>
#include <glib.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY_MAX 64

/* ------------------------------------------------------------ helpers --- */

static const char *g_mode = "chaos";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "chaos %s: error: ", g_mode);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        /* May run on a library thread (a handler): no atexit handlers. */
        fflush(NULL);
        _exit(2);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "chaos %s: ", g_mode);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static int64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double since_s(int64_t t0) { return (double)(now_ns() - t0) / 1e9; }

static void sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

/* A message value is "KEY KSEQ N": the key, the per-key counter and the
 * global send index. Returns 0 when it parses. */
static int parse_value(const void *v, size_t len, char *key, long *kseq) {
        char buf[160];
        if (!v || len == 0 || len >= sizeof(buf))
                return -1;
        memcpy(buf, v, len);
        buf[len] = '\0';
        char k[KEY_MAX];
        long s, n;
        if (sscanf(buf, "%63s %ld %ld", k, &s, &n) != 3)
                return -1;
        strcpy(key, k);
        *kseq = s;
        return 0;
}

/* The send time (CLOCK_MONOTONIC ns) a produced value may carry as its 4th
 * field ("KEY KSEQ N SENDNS"); -1 when it has none. */
static int64_t value_send_ns(const void *v, size_t len) {
        char buf[160], k[KEY_MAX];
        long s, n;
        long long t;
        if (!v || len == 0 || len >= sizeof(buf))
                return -1;
        memcpy(buf, v, len);
        buf[len] = '\0';
        if (sscanf(buf, "%63s %ld %ld %lld", k, &s, &n, &t) != 4)
                return -1;
        return (int64_t)t;
}

static int64_t realtime_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct opts {
        const char *bootstrap, *topic, *group, *db, *log, *dir, *stopfile, *inst;
        long min, rate, extra;
        int keys, partition, max_seconds, min_kills, no_oor;
        long max_delivery_ms, p99_delivery_ms; /* verify: bounds, 0 = none */
};

static void conf_set(rbk_conf_t *c, const char *name, const char *value) {
        char e[512];
        if (rbk_conf_set(c, name, value, e, sizeof(e)) != RBK_OK)
                die("rbk_conf_set(%s): %s", name, e);
}

/* Extra settings from the environment, "name=value,name=value" (the
 * suite's RBK_CHAOS_PRODUCER_CONF / RBK_CHAOS_CONSUMER_CONF knobs); an item
 * without '=' continues the previous value ("debug=broker,msg"). */
static void conf_set_list(rbk_conf_t *c, const char *list) {
        if (!list || !*list)
                return;
        char **kv = g_strsplit(list, ",", -1);
        GString *name = g_string_new(NULL), *value = g_string_new(NULL);
        for (char **p = kv;; p++) {
                char *eq = *p ? strchr(*p, '=') : NULL;
                if (*p && !eq) {
                        if (!name->len)
                                die("bad setting '%s' (expected name=value)", *p);
                        g_string_append_printf(value, ",%s", *p);
                        continue;
                }
                if (name->len)
                        conf_set(c, name->str, value->str);
                if (!*p)
                        break;
                *eq = '\0';
                g_string_assign(name, g_strstrip(*p));
                g_string_assign(value, g_strstrip(eq + 1));
        }
        g_string_free(name, TRUE);
        g_string_free(value, TRUE);
        g_strfreev(kv);
}

static FILE *open_out(const char *dir, const char *name) {
        char *path = g_strdup_printf("%s/%s", dir, name);
        FILE *f = fopen(path, "a");
        if (!f)
                die("cannot open %s: %s", path, strerror(errno));
        g_free(path);
        return f;
}

/* ------------------------------------------------------- the producer --- */

static GMutex g_out_lock;
static FILE *g_acked, *g_failed, *g_events;
static gint64 g_acked_n, g_failed_n;

static void on_delivery(const rbk_delivery_t *dr, void *opaque) {
        char key[KEY_MAX] = "-";
        long kseq = -1;
        (void)opaque;
        parse_value(dr->value, dr->value_len, key, &kseq);
        g_mutex_lock(&g_out_lock);
        if (dr->err == RBK_OK) {
                /* Delivery latency: report time - send time (both
                 * CLOCK_MONOTONIC), and when it was sent (epoch ms), so the
                 * checker can pick the messages sent during a gray failure. */
                int64_t sent = value_send_ns(dr->value, dr->value_len);
                if (sent > 0) {
                        int64_t lat = now_ns() - sent;
                        fprintf(g_acked, "%s %d %" PRId64 " %s %ld %.1f %" PRId64 "\n",
                                dr->id ? dr->id : "-", (int)dr->partition, dr->offset,
                                key, kseq, (double)lat / 1e6,
                                realtime_ms() - lat / 1000000);
                } else {
                        fprintf(g_acked, "%s %d %" PRId64 " %s %ld\n",
                                dr->id ? dr->id : "-", (int)dr->partition, dr->offset,
                                key, kseq);
                }
                g_acked_n++;
        } else {
                fprintf(g_failed, "%s %d %s %d %s\n", dr->id ? dr->id : "-",
                        (int)dr->partition, rbk_err2name(dr->err),
                        dr->possibly_persisted, dr->reason ? dr->reason : "");
                g_failed_n++;
        }
        g_mutex_unlock(&g_out_lock);
}

static void on_producer_event(const rbk_event_t *ev, void *opaque) {
        char *js = rbk_event_to_json(ev);
        (void)opaque;
        g_mutex_lock(&g_out_lock);
        if (g_events && js)
                fprintf(g_events, "%s\n", js);
        g_mutex_unlock(&g_out_lock);
        rbk_free(js);
}

/* RBK_CHAOS_PRODUCER_LOG=FILE: the producer's log lines (librdkafka's
 * debug output with debug=... in RBK_CHAOS_PRODUCER_CONF), with the wall
 * clock in ms, to line them up with the gray rounds. */
static FILE *g_rdlog;

static void on_producer_log(int level, const char *fac, const char *line, void *opaque) {
        (void)opaque;
        g_mutex_lock(&g_out_lock);
        if (g_rdlog)
                fprintf(g_rdlog, "%" PRId64 " %d %s %s\n", realtime_ms(), level, fac, line);
        g_mutex_unlock(&g_out_lock);
}

static rbk_producer_t *get_producer(const struct opts *o, const char *name) {
        char e[512];
        rbk_conf_t *c = rbk_conf_new();
        if (!c)
                die("out of memory");
        conf_set(c, "bootstrap.servers", o->bootstrap);
        conf_set(c, "rbk.client.name", name);
        conf_set_list(c, getenv("RBK_CHAOS_PRODUCER_CONF"));
        const char *lp = getenv("RBK_CHAOS_PRODUCER_LOG");
        if (lp && *lp) {
                if (!g_rdlog && !(g_rdlog = fopen(lp, "a")))
                        die("cannot open %s: %s", lp, strerror(errno));
                setvbuf(g_rdlog, NULL, _IOLBF, 0);
                rbk_conf_set_log_cb(c, on_producer_log, NULL);
        }
        rbk_conf_set_delivery_cb(c, on_delivery, NULL);
        rbk_conf_set_hook(c, on_producer_event, NULL);
        rbk_producer_t *p = rbk_producer_get(NULL, c, e, sizeof(e));
        rbk_conf_destroy(c);
        if (!p)
                die("rbk_producer_get: %s", e);
        return p;
}

/* Sends one message, retrying while the error is retriable (queue full
 * during a long election). Returns RBK_OK or the final error. */
static rbk_err_t send_one(rbk_producer_t *p, const rbk_msg_t *m,
                          long *retries) {
        char e[512];
        int64_t t0 = now_ns();
        for (;;) {
                rbk_err_t err = rbk_producer_send(p, m, e, sizeof(e));
                if (err == RBK_OK)
                        return RBK_OK;
                if (!rbk_err_is_retriable(err) || since_s(t0) > 180) {
                        say("send failed for good: %s: %s", rbk_err2name(err), e);
                        g_mutex_lock(&g_out_lock);
                        fprintf(g_failed, "- -1 %s 0 send: %s\n",
                                rbk_err2name(err), e);
                        g_failed_n++;
                        g_mutex_unlock(&g_out_lock);
                        return err;
                }
                (*retries)++;
        }
}

static void print_producer_stats(rbk_producer_t *p) {
        rbk_producer_stats_t st = {.version = RBK_PRODUCER_STATS_VERSION};
        if (rbk_producer_stats(p, &st) == RBK_OK)
                say("producer stats: accepted=%" PRIu64 " delivered=%" PRIu64
                    " failed=%" PRIu64 " in_flight=%" PRIu64
                    " queue_full_waits=%" PRIu64 " resent=%" PRIu64
                    " fatal_errors=%" PRIu64 " generation=%" PRId64,
                    st.accepted, st.delivered, st.failed, st.in_flight,
                    st.queue_full_waits, st.resent, st.fatal_errors,
                    st.generation);
}

static int mode_produce(const struct opts *o) {
        if (!o->bootstrap || !o->topic || !o->dir || !o->stopfile)
                die("produce needs -b -t -o -s");
        g_acked = open_out(o->dir, "acked-main.log");
        g_failed = open_out(o->dir, "failed-main.log");
        g_events = open_out(o->dir, "producer-events.log");
        rbk_producer_t *p = get_producer(o, "chaos-producer");

        long *kseq = g_new0(long, o->keys);
        long n = 0, retries = 0;
        int stopping = 0, send_failed = 0;
        int64_t t0 = now_ns(), last_report = t0, trickle_from = 0;
        long trickle = o->rate / 10 > 100 ? o->rate / 10 : 100;
        GRand *rnd = g_rand_new_with_seed((guint32)getpid());
        say("producing at %ld msg/s up to %ld, then %ld msg/s until the stop file appears",
            o->rate, o->min, trickle);
        while (!send_failed) {
                if ((n & 255) == 0 && !stopping && access(o->stopfile, F_OK) == 0) {
                        stopping = 1;
                        say("stop file seen after %ld messages (%.1f s)", n, since_s(t0));
                }
                if (stopping && n >= o->min)
                        break;
                if (since_s(t0) > o->max_seconds) {
                        say("no stop file after %d s: giving up", o->max_seconds);
                        send_failed = 1;
                        break;
                }
                /* Pacing: the chaos has to happen while messages flow, so
                 * they are spread at o->rate; past the minimum, a trickle
                 * keeps flowing until the driver's last kill is over. Once
                 * the stop file is there, the rest goes unthrottled. */
                if (!stopping) {
                        if (n == o->min && !trickle_from) {
                                trickle_from = now_ns();
                                say("%ld sent after %.1f s; trickling until the stop file",
                                    n, since_s(t0));
                        }
                        double due = trickle_from
                                         ? (double)o->min + since_s(trickle_from) * (double)trickle
                                         : since_s(t0) * (double)o->rate;
                        if ((double)n >= due) {
                                sleep_ms(2);
                                continue;
                        }
                }
                int k = g_rand_int_range(rnd, 0, o->keys);
                char key[KEY_MAX], val[128];
                kseq[k]++;
                int kl = snprintf(key, sizeof(key), "key-%05d", k);
                int vl = snprintf(val, sizeof(val), "%s %ld %ld %" PRId64, key, kseq[k], n,
                                  now_ns());
                rbk_msg_t m = RBK_MSG_INIT;
                m.topic = o->topic;
                m.key = key;
                m.key_len = (size_t)kl;
                m.value = val;
                m.value_len = (size_t)vl;
                if (send_one(p, &m, &retries) != RBK_OK) {
                        send_failed = 1;
                        break;
                }
                n++;
                if (now_ns() - last_report > 10 * (int64_t)1000000000) {
                        last_report = now_ns();
                        g_mutex_lock(&g_out_lock);
                        gint64 an = g_acked_n, fn = g_failed_n;
                        g_mutex_unlock(&g_out_lock);
                        say("%.0f s: sent %ld, acked %" PRId64 ", failed %" PRId64
                            ", send retries %ld", since_s(t0), n, an, fn, retries);
                }
        }
        g_rand_free(rnd);
        g_free(kseq);
        say("sent %ld messages in %.1f s; flushing", n, since_s(t0));
        int64_t tf = now_ns();
        rbk_err_t ferr = rbk_producer_flush(p, 240000);
        say("flush: %s after %.1f s", rbk_err2name(ferr), since_s(tf));
        print_producer_stats(p);
        rbk_producer_put(p);
        rbk_err_t serr = rbk_shutdown(30000);
        g_mutex_lock(&g_out_lock);
        fclose(g_acked);
        fclose(g_failed);
        fclose(g_events);
        g_acked = g_failed = g_events = NULL;
        g_mutex_unlock(&g_out_lock);
        say("done: sent=%ld acked=%" PRId64 " failed=%" PRId64
            " send_retries=%ld seconds=%.1f shutdown=%s",
            n, g_acked_n, g_failed_n, retries, since_s(t0), rbk_err2name(serr));
        if (send_failed || ferr != RBK_OK || g_acked_n + g_failed_n != n)
                return 1;
        return 0;
}

/* ------------------------------------------------------- the consumer --- */

static int g_logfd = -1;
static int g_pid;
static const char *g_inst = "?";
static sqlite3 *g_db;
static sqlite3_stmt *g_st_begin, *g_st_upsert, *g_st_commit, *g_st_rollback;
static GMutex g_db_lock;
static rbk_consumer_t *volatile g_consumer;
static volatile sig_atomic_t g_stop;
static gint g_handled;

static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...) {
        char buf[2048];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t)n >= sizeof(buf)) {
                n = sizeof(buf) - 1;
                buf[n - 1] = '\n';
        }
        /* One write(2) per record on an O_APPEND descriptor: records of
         * concurrent workers never interleave, and a kill -9 never leaves
         * half a record. */
        if (write(g_logfd, buf, (size_t)n) != n)
                die("writing the handler log: %s", strerror(errno));
}

static void open_log(const char *path) {
        g_logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (g_logfd < 0)
                die("cannot open %s: %s", path, strerror(errno));
}

static sqlite3 *open_db(const char *path) {
        sqlite3 *db;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                            SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK)
                die("sqlite3_open %s: %s", path, sqlite3_errmsg(db));
        sqlite3_busy_timeout(db, 30000);
        char *err = NULL;
        if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                         NULL, NULL, &err) != SQLITE_OK)
                die("sqlite pragmas on %s: %s", path, err);
        return db;
}

static void store_prepare(void) {
        const char *up =
            "INSERT INTO handled(id, k, kseq, part, off, times, first_pid, last_pid)"
            " VALUES(?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)"
            " ON CONFLICT(id) DO UPDATE SET times = times + 1, last_pid = excluded.last_pid";
        if (sqlite3_prepare_v2(g_db, "BEGIN IMMEDIATE", -1, &g_st_begin, NULL) ||
            sqlite3_prepare_v2(g_db, up, -1, &g_st_upsert, NULL) ||
            sqlite3_prepare_v2(g_db, "COMMIT", -1, &g_st_commit, NULL) ||
            sqlite3_prepare_v2(g_db, "ROLLBACK", -1, &g_st_rollback, NULL))
                die("preparing store statements: %s", sqlite3_errmsg(g_db));
}

static int step_reset(sqlite3_stmt *st) {
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        return rc;
}

/* UPSERT one handled message into the shared store: one transaction per
 * message, as an idempotent handler would do it. */
static void store_upsert(const char *id, const char *key, long kseq,
                         int32_t part, int64_t off) {
        g_mutex_lock(&g_db_lock);
        for (int attempt = 1;; attempt++) {
                int rc = step_reset(g_st_begin);
                if (rc == SQLITE_DONE) {
                        sqlite3_bind_text(g_st_upsert, 1, id, -1, SQLITE_TRANSIENT);
                        sqlite3_bind_text(g_st_upsert, 2, key, -1, SQLITE_TRANSIENT);
                        sqlite3_bind_int64(g_st_upsert, 3, kseq);
                        sqlite3_bind_int(g_st_upsert, 4, part);
                        sqlite3_bind_int64(g_st_upsert, 5, off);
                        sqlite3_bind_int(g_st_upsert, 6, g_pid);
                        rc = step_reset(g_st_upsert);
                        sqlite3_clear_bindings(g_st_upsert);
                        if (rc == SQLITE_DONE)
                                rc = step_reset(g_st_commit);
                        if (rc == SQLITE_DONE)
                                break;
                        step_reset(g_st_rollback);
                }
                if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || attempt >= 10)
                        die("store UPSERT of %s failed: %s (rc %d)", id,
                            sqlite3_errmsg(g_db), rc);
        }
        g_mutex_unlock(&g_db_lock);
}

/* OOR mode state: the handler checks that nothing of the quarantined
 * partition is handled before the resolve. */
static int32_t g_oor_part = -1;
static gint g_oor_resolved;
static gint g_oor_leaks;
static GMutex g_oor_lock;
static GHashTable *g_oor_seen; /* ids handled by this process (oor mode) */
static int64_t g_oor_first_after = -1, g_oor_min_p = -1;

static rbk_verdict_t handler(const rbk_message_t *m, void *opaque) {
        char key[KEY_MAX] = "-";
        long kseq = -1;
        (void)opaque;
        parse_value(m->value, m->value_len, key, &kseq);
        const char *id = m->id ? m->id : "-";
        logline("H %" PRId64 " %d %s %d %" PRId64 " %s %s %ld %d\n", now_ns(),
                g_pid, g_inst, (int)m->partition, m->offset, id, key, kseq,
                m->attempt);
        if (g_oor_seen) {
                g_mutex_lock(&g_oor_lock);
                if (m->partition == g_oor_part) {
                        if (!g_atomic_int_get(&g_oor_resolved))
                                g_oor_leaks++;
                        else if (g_oor_first_after < 0)
                                g_oor_first_after = m->offset;
                        if (g_oor_min_p < 0 || m->offset < g_oor_min_p)
                                g_oor_min_p = m->offset;
                }
                g_hash_table_add(g_oor_seen, g_strdup(id));
                g_mutex_unlock(&g_oor_lock);
        }
        store_upsert(id, key, kseq, m->partition, m->offset);
        g_atomic_int_inc(&g_handled);
        return RBK_HANDLED;
}

static void on_rebalance(rbk_rebalance_t what, const char *topic,
                         int32_t partition, void *opaque) {
        (void)opaque;
        (void)topic;
        logline("R %" PRId64 " %d %s %s %d\n", now_ns(), g_pid, g_inst,
                what == RBK_ASSIGNED ? "assigned" : what == RBK_REVOKED ? "revoked" : "lost",
                (int)partition);
}

/* OOR mode: the events the main thread waits for. */
static GMutex g_ev_lock;
static GCond g_ev_cond;
static int g_ev_oor_n, g_ev_resolved_n;
static rbk_event_t g_ev_oor; /* copy of the first out-of-range event (no strings) */
static char g_ev_oor_key[512];

static void on_consumer_event(const rbk_event_t *ev, void *opaque) {
        (void)opaque;
        char *js = rbk_event_to_json(ev);
        if (js) {
                for (char *s = js; *s; s++)
                        if (*s == '\n')
                                *s = ' ';
                logline("J %s\n", js);
        }
        rbk_free(js);
        logline("E %" PRId64 " %d %s %s %d %" PRId64 " %" PRId64 " %" PRId64
                " %" PRId64 " %s\n",
                now_ns(), g_pid, g_inst, rbk_event_class_name(ev->cls),
                (int)ev->partition, ev->offset, ev->committed_offset,
                ev->low_watermark, ev->high_watermark,
                ev->incident_key ? ev->incident_key : "-");
        g_mutex_lock(&g_ev_lock);
        if (ev->cls == RBK_EV_OFFSET_OUT_OF_RANGE) {
                if (g_ev_oor_n++ == 0) {
                        g_ev_oor = *ev;
                        g_snprintf(g_ev_oor_key, sizeof(g_ev_oor_key), "%s",
                                   ev->incident_key ? ev->incident_key : "");
                }
        } else if (ev->cls == RBK_EV_QUARANTINE_RESOLVED) {
                g_ev_resolved_n++;
        }
        g_cond_broadcast(&g_ev_cond);
        g_mutex_unlock(&g_ev_lock);
}

static void on_signal(int sig) {
        (void)sig;
        g_stop = 1;
        rbk_consumer_stop(g_consumer); /* async-signal-safe, accepts NULL */
}

static rbk_consumer_t *get_consumer(const struct opts *o) {
        char e[512], name[128];
        rbk_conf_t *c = rbk_conf_new();
        if (!c)
                die("out of memory");
        g_snprintf(name, sizeof(name), "chaos-consumer-%s", g_inst);
        conf_set(c, "bootstrap.servers", o->bootstrap);
        conf_set(c, "group.id", o->group);
        conf_set(c, "session.timeout.ms", "6000");
        conf_set(c, "rbk.client.name", name);
        conf_set_list(c, getenv("RBK_CHAOS_CONSUMER_CONF"));
        rbk_conf_set_hook(c, on_consumer_event, NULL);
        rbk_conf_set_rebalance_cb(c, on_rebalance, NULL);
        rbk_consumer_t *cons = rbk_consumer_get(NULL, c, e, sizeof(e));
        rbk_conf_destroy(c);
        if (!cons)
                die("rbk_consumer_get: %s", e);
        const char *topics[1] = {o->topic};
        if (rbk_consumer_subscribe(cons, topics, 1, e, sizeof(e)) != RBK_OK)
                die("rbk_consumer_subscribe: %s", e);
        return cons;
}

static void print_consumer_stats(rbk_consumer_t *c) {
        rbk_consumer_stats_t st = {.version = RBK_CONSUMER_STATS_VERSION};
        if (rbk_consumer_stats(c, &st) == RBK_OK)
                say("consumer %s stats: consumed=%" PRIu64 " handled=%" PRIu64
                    " duplicates_dropped=%" PRIu64 " unprovable=%" PRIu64
                    " no_id=%" PRIu64 " commits=%" PRIu64 " quarantines=%" PRIu64
                    " resolutions=%" PRIu64 " initial_positions=%" PRIu64
                    " out_of_range_disproved=%" PRIu64,
                    g_inst, st.consumed, st.handled, st.duplicates_dropped,
                    st.unprovable, st.no_id, st.commits, st.quarantines,
                    st.resolutions, st.initial_positions,
                    st.out_of_range_disproved);
}

static void consumer_common_init(const struct opts *o) {
        if (!o->bootstrap || !o->topic || !o->group || !o->db || !o->log)
                die("needs -b -t -g -d -l");
        g_pid = (int)getpid();
        if (o->inst)
                g_inst = o->inst;
        open_log(o->log);
        g_db = open_db(o->db);
        store_prepare();
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
}

static void store_close(void) {
        sqlite3_finalize(g_st_begin);
        sqlite3_finalize(g_st_upsert);
        sqlite3_finalize(g_st_commit);
        sqlite3_finalize(g_st_rollback);
        sqlite3_close(g_db);
        g_db = NULL;
}

static int mode_consume(const struct opts *o) {
        consumer_common_init(o);
        rbk_consumer_t *c = get_consumer(o);
        g_consumer = c;
        say("%s (pid %d) consuming %s in group %s", g_inst, g_pid, o->topic, o->group);
        rbk_err_t err = RBK_OK;
        if (!g_stop)
                err = rbk_consumer_run(c, handler, NULL);
        say("%s: run returned %s after %d handled", g_inst, rbk_err2name(err),
            g_atomic_int_get(&g_handled));
        print_consumer_stats(c);
        g_consumer = NULL;
        rbk_consumer_put(c);
        rbk_err_t serr = rbk_shutdown(30000);
        say("%s: shutdown %s", g_inst, rbk_err2name(serr));
        store_close();
        close(g_logfd);
        return err == RBK_OK && serr == RBK_OK ? 0 : 1;
}

/* --------------------------------------------- offset out of range ----- */

static rd_kafka_t *raw_client(const struct opts *o, rd_kafka_type_t type,
                              const char *group) {
        char e[512];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        if (rd_kafka_conf_set(c, "bootstrap.servers", o->bootstrap, e, sizeof(e)) ||
            (group && rd_kafka_conf_set(c, "group.id", group, e, sizeof(e))) ||
            (group && rd_kafka_conf_set(c, "enable.auto.commit", "false", e, sizeof(e))))
                die("librdkafka conf: %s", e);
        rd_kafka_t *rk = rd_kafka_new(type, c, e, sizeof(e));
        if (!rk)
                die("rd_kafka_new: %s", e);
        return rk;
}

static int64_t committed_offset(const struct opts *o, int32_t part) {
        rd_kafka_t *rk = raw_client(o, RD_KAFKA_CONSUMER, o->group);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, o->topic, part);
        rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, 30000);
        if (err || l->elems[0].err)
                die("committed offset of %s/%d: %s", o->topic, part,
                    rd_kafka_err2str(err ? err : l->elems[0].err));
        int64_t off = l->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        return off;
}

static void watermarks(const struct opts *o, int32_t part, int64_t *lo, int64_t *hi) {
        rd_kafka_t *rk = raw_client(o, RD_KAFKA_PRODUCER, NULL);
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, o->topic, part, lo, hi, 30000);
        if (err)
                die("watermarks of %s/%d: %s", o->topic, part, rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
}

/* Moves the log start of one partition to @p before_offset. */
static int64_t delete_records(const struct opts *o, int32_t part, int64_t before_offset) {
        rd_kafka_t *rk = raw_client(o, RD_KAFKA_PRODUCER, NULL);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, o->topic, part)->offset = before_offset;
        rd_kafka_DeleteRecords_t *dr = rd_kafka_DeleteRecords_new(l);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *ao =
            rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DELETERECORDS);
        char e[512];
        if (rd_kafka_AdminOptions_set_operation_timeout(ao, 30000, e, sizeof(e)))
                die("admin options: %s", e);
        rd_kafka_DeleteRecords(rk, &dr, 1, ao, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
        if (!ev)
                die("DeleteRecords: no result within 60 s");
        if (rd_kafka_event_error(ev))
                die("DeleteRecords: %s", rd_kafka_event_error_string(ev));
        const rd_kafka_DeleteRecords_result_t *res = rd_kafka_event_DeleteRecords_result(ev);
        if (!res)
                die("DeleteRecords: unexpected event %s", rd_kafka_event_name(ev));
        const rd_kafka_topic_partition_list_t *out = rd_kafka_DeleteRecords_result_offsets(res);
        if (!out || out->cnt != 1 || out->elems[0].err)
                die("DeleteRecords of %s/%d: %s", o->topic, part,
                    out && out->cnt == 1 ? rd_kafka_err2str(out->elems[0].err) : "no result");
        int64_t low = out->elems[0].offset;
        rd_kafka_event_destroy(ev);
        rd_kafka_AdminOptions_destroy(ao);
        rd_kafka_DeleteRecords_destroy(dr);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return low;
}

/* Reads "id part off key kseq" lines. */
struct acked {
        char *id;
        int32_t part;
        int64_t off;
        char key[KEY_MAX];
        long kseq;
        double lat_ms;   /* delivery latency, -1 if the record has none */
        int64_t sent_ms; /* epoch ms it was sent at */
};

static GPtrArray *read_acked_file(const char *path, GPtrArray *into) {
        FILE *f = fopen(path, "r");
        if (!f)
                die("cannot read %s: %s", path, strerror(errno));
        char line[1024];
        while (fgets(line, sizeof(line), f)) {
                char id[300], key[KEY_MAX];
                int part;
                long long off;
                long kseq;
                double lat = -1;
                long long sent = 0;
                if (sscanf(line, "%299s %d %lld %63s %ld %lf %lld", id, &part, &off, key, &kseq,
                           &lat, &sent) < 5)
                        continue;
                struct acked *a = g_new0(struct acked, 1);
                a->lat_ms = lat;
                a->sent_ms = sent;
                a->id = g_strdup(id);
                a->part = part;
                a->off = off;
                g_strlcpy(a->key, key, sizeof(a->key));
                a->kseq = kseq;
                g_ptr_array_add(into, a);
        }
        fclose(f);
        return into;
}

static void free_acked(gpointer p) {
        struct acked *a = p;
        g_free(a->id);
        g_free(a);
}

/* Waits (bounded) until every id in @p ids has been handled by this process. */
static int wait_handled(GPtrArray *ids, int timeout_s, const char *what) {
        int64_t t0 = now_ns();
        for (;;) {
                guint missing = 0;
                g_mutex_lock(&g_oor_lock);
                for (guint i = 0; i < ids->len; i++)
                        if (!g_hash_table_contains(g_oor_seen, ids->pdata[i]))
                                missing++;
                g_mutex_unlock(&g_oor_lock);
                if (missing == 0) {
                        say("%s: all %u handled after %.1f s", what, ids->len, since_s(t0));
                        return 0;
                }
                if (since_s(t0) > timeout_s) {
                        say("%s: %u of %u still not handled after %d s", what,
                            missing, ids->len, timeout_s);
                        return -1;
                }
                sleep_ms(100);
        }
}

static int mode_oor(const struct opts *o) {
        if (!o->dir || o->partition < 0)
                die("oor needs -o and -p");
        if (o->extra < 4)
                die("oor needs -n of at least 4 extra messages");
        int32_t P = o->partition;
        int fails = 0;
#define CHECK(cond, ...)                                                        \
        do {                                                                    \
                if (!(cond)) {                                                  \
                        say("check failed: " __VA_ARGS__);                      \
                        fails++;                                                \
                }                                                               \
        } while (0)

        /* 1. Where the group stands on P (it has no members now). */
        int64_t C = committed_offset(o, P);
        int64_t lo0, hi0;
        watermarks(o, P, &lo0, &hi0);
        say("group %s: committed offset of %s/%d is %" PRId64 " (watermarks %" PRId64
            "..%" PRId64 ")", o->group, o->topic, P, C, lo0, hi0);
        if (C < 0)
                die("group %s has no committed offset on %s/%d", o->group, o->topic, P);

        /* 2. More messages while the group is stopped: extra on P, a few on
         * every other partition (they must flow while P is quarantined). */
        g_acked = open_out(o->dir, "acked-oor.log");
        g_failed = open_out(o->dir, "failed-oor.log");
        g_events = open_out(o->dir, "producer-events.log");
        rbk_producer_t *p = get_producer(o, "chaos-oor-producer");
        long retries = 0, sent = 0;
        int nparts = 6;
        for (int part = 0; part < nparts; part++) {
                long cnt = part == P ? o->extra : o->extra / 10;
                for (long i = 1; i <= cnt; i++) {
                        char key[KEY_MAX], val[128];
                        int kl = snprintf(key, sizeof(key), "oor-%d", part);
                        int vl = snprintf(val, sizeof(val), "%s %ld %ld", key, i, sent);
                        rbk_msg_t m = RBK_MSG_INIT;
                        m.topic = o->topic;
                        m.partition = part;
                        m.key = key;
                        m.key_len = (size_t)kl;
                        m.value = val;
                        m.value_len = (size_t)vl;
                        if (send_one(p, &m, &retries) != RBK_OK)
                                die("sending the extra messages failed");
                        sent++;
                }
        }
        rbk_err_t ferr = rbk_producer_flush(p, 120000);
        if (ferr != RBK_OK || g_failed_n != 0 || g_acked_n != sent)
                die("extra messages: flush %s, %" PRId64 " acked, %" PRId64 " failed of %ld",
                    rbk_err2name(ferr), g_acked_n, g_failed_n, sent);
        rbk_producer_put(p);
        g_mutex_lock(&g_out_lock);
        fclose(g_acked);
        fclose(g_failed);
        fclose(g_events);
        g_acked = g_failed = g_events = NULL;
        g_mutex_unlock(&g_out_lock);
        say("%ld extra messages acked (%ld on partition %d)", sent, o->extra, P);

        /* 3. Move P's log start past the committed offset. */
        int64_t lo1, H;
        watermarks(o, P, &lo1, &H);
        int64_t D = C + o->extra / 2;
        if (!(C < D && D < H))
                die("cannot place the log start: committed %" PRId64 ", target %" PRId64
                    ", high watermark %" PRId64, C, D, H);
        int64_t low = delete_records(o, P, D);
        int64_t lo2, hi2;
        watermarks(o, P, &lo2, &hi2);
        say("DeleteRecords %s/%d before %" PRId64 ": log start now %" PRId64
            " (watermarks %" PRId64 "..%" PRId64 ")", o->topic, P, D, low, lo2, hi2);
        CHECK(low == D && lo2 == D && hi2 == H, "log start %" PRId64 "/%" PRId64
              " high %" PRId64 ", expected %" PRId64 "/%" PRId64, low, lo2, hi2, D, H);
        FILE *df = open_out(o->dir, "oor.deleted");
        fprintf(df, "%d %" PRId64 " %" PRId64 " %" PRId64 "\n", (int)P, C, D, H);
        fclose(df);

        /* The extras, split: other partitions, and P from the log start on. */
        char *apath = g_strdup_printf("%s/acked-oor.log", o->dir);
        GPtrArray *acked = read_acked_file(apath, g_ptr_array_new_with_free_func(free_acked));
        g_free(apath);
        GPtrArray *others = g_ptr_array_new(), *p_live = g_ptr_array_new();
        for (guint i = 0; i < acked->len; i++) {
                struct acked *a = acked->pdata[i];
                if (a->part != P)
                        g_ptr_array_add(others, a->id);
                else if (a->off >= D)
                        g_ptr_array_add(p_live, a->id);
        }

        /* 4. A consumer of the group: P must be quarantined, not reset. */
        consumer_common_init(o);
        g_oor_part = P;
        g_oor_seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        rbk_consumer_t *c = get_consumer(o);
        g_consumer = c;
        int64_t t0 = now_ns();
        rbk_err_t err = rbk_consumer_start(c, handler, NULL);
        if (err != RBK_OK)
                die("rbk_consumer_start: %s", rbk_err2name(err));

        g_mutex_lock(&g_ev_lock);
        gint64 deadline = g_get_monotonic_time() + 90 * G_TIME_SPAN_SECOND;
        while (g_ev_oor_n == 0 && !g_stop)
                if (!g_cond_wait_until(&g_ev_cond, &g_ev_lock, deadline))
                        break;
        int got_oor = g_ev_oor_n > 0;
        rbk_event_t ev = g_ev_oor;
        g_mutex_unlock(&g_ev_lock);
        if (!got_oor)
                die("no offset_out_of_range event within 90 s");
        say("offset_out_of_range after %.1f s: partition %d offset %" PRId64
            " committed %" PRId64 " low %" PRId64 " high %" PRId64 " gap %" PRId64
            " key %s", since_s(t0), (int)ev.partition, ev.offset,
            ev.committed_offset, ev.low_watermark, ev.high_watermark, ev.gap,
            g_ev_oor_key);
        CHECK(ev.partition == P, "event partition %d, expected %d", (int)ev.partition, (int)P);
        CHECK(ev.offset == C, "event offset %" PRId64 ", expected %" PRId64, ev.offset, C);
        CHECK(ev.committed_offset == C, "event committed %" PRId64 ", expected %" PRId64,
              ev.committed_offset, C);
        CHECK(ev.low_watermark == D, "event low watermark %" PRId64 ", expected %" PRId64,
              ev.low_watermark, D);
        CHECK(ev.high_watermark == H, "event high watermark %" PRId64 ", expected %" PRId64,
              ev.high_watermark, H);
        CHECK(ev.severity == RBK_SEV_CRITICAL, "event severity %s",
              rbk_severity_name(ev.severity));

        /* 5. The other partitions flow while P is held back. */
        if (wait_handled(others, 120, "extras on the other partitions") != 0)
                fails++;
        rbk_quarantine_t q[8];
        size_t nq = rbk_consumer_quarantined(c, q, 8);
        int listed = 0;
        for (size_t i = 0; i < nq && i < 8; i++) {
                if (q[i].partition != P || strcmp(q[i].topic, o->topic))
                        continue;
                listed = 1;
                CHECK(q[i].failed_offset == C && q[i].low_watermark == D &&
                          q[i].high_watermark == H,
                      "quarantine entry: failed %" PRId64 " low %" PRId64 " high %" PRId64,
                      q[i].failed_offset, q[i].low_watermark, q[i].high_watermark);
        }
        CHECK(nq == 1 && listed, "%zu partitions quarantined, partition %d %s", nq,
              (int)P, listed ? "listed" : "not listed");
        int leaks_before = g_atomic_int_get(&g_oor_leaks);
        CHECK(leaks_before == 0, "%d messages of the quarantined partition handled before the resolve",
              leaks_before);

        /* 6. Resolve to earliest: resumes exactly at the log start. */
        g_atomic_int_set(&g_oor_resolved, 1);
        logline("X %" PRId64 " %d %s resolved %d %" PRId64 " %" PRId64 "\n", now_ns(),
                g_pid, g_inst, (int)P, C, D);
        char e[512];
        err = rbk_consumer_resolve(c, o->topic, P, RBK_RESOLVE_EARLIEST, 0, e, sizeof(e));
        CHECK(err == RBK_OK, "rbk_consumer_resolve: %s: %s", rbk_err2name(err), e);
        if (wait_handled(p_live, 120, "partition after the resolve") != 0)
                fails++;
        g_mutex_lock(&g_ev_lock);
        deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
        while (g_ev_resolved_n == 0)
                if (!g_cond_wait_until(&g_ev_cond, &g_ev_lock, deadline))
                        break;
        int resolved_events = g_ev_resolved_n, oor_events = g_ev_oor_n;
        g_mutex_unlock(&g_ev_lock);
        g_mutex_lock(&g_oor_lock);
        int64_t first_after = g_oor_first_after, min_p = g_oor_min_p;
        g_mutex_unlock(&g_oor_lock);
        CHECK(first_after == D, "first offset handled after the resolve %" PRId64
              ", expected the log start %" PRId64, first_after, D);
        CHECK(min_p == D, "lowest offset of partition %d handled %" PRId64 ", expected %" PRId64,
              (int)P, min_p, D);
        CHECK(resolved_events == 1, "%d quarantine_resolved events", resolved_events);
        CHECK(rbk_consumer_quarantined(c, NULL, 0) == 0, "partitions still quarantined");

        rbk_consumer_stop(c);
        print_consumer_stats(c);
        g_consumer = NULL;
        rbk_consumer_put(c);
        rbk_err_t serr = rbk_shutdown(30000);
        CHECK(serr == RBK_OK, "rbk_shutdown: %s", rbk_err2name(serr));

        FILE *rf = open_out(o->dir, "oor.result");
        fprintf(rf, "oor: partition=%d committed=%" PRId64 " log_start=%" PRId64
                " high=%" PRId64 " event_offset=%" PRId64 " event_low=%" PRId64
                " event_high=%" PRId64 " oor_events=%d leaks=%d first_after_resolve=%"
                PRId64 " resolved_events=%d checks_failed=%d\n",
                (int)P, C, D, H, ev.offset, ev.low_watermark, ev.high_watermark,
                oor_events, g_atomic_int_get(&g_oor_leaks), first_after,
                resolved_events, fails);
        fclose(rf);
        say("partition %d: quarantined at %" PRId64 " (log start %" PRId64 ", high %" PRId64
            "), %d handled before the resolve, resumed at %" PRId64 "; %d checks failed",
            (int)P, C, D, H, g_atomic_int_get(&g_oor_leaks), first_after, fails);

        g_ptr_array_free(others, TRUE);
        g_ptr_array_free(p_live, TRUE);
        g_ptr_array_free(acked, TRUE);
        g_hash_table_destroy(g_oor_seen);
        g_oor_seen = NULL;
        store_close();
        close(g_logfd);
        return fails ? 1 : 0;
#undef CHECK
}

/* ------------------------------------------------------------- store --- */

static int mode_store_init(const struct opts *o) {
        if (!o->db)
                die("store-init needs -d");
        sqlite3 *db = open_db(o->db);
        char *err = NULL;
        if (sqlite3_exec(db,
                         "CREATE TABLE IF NOT EXISTS handled("
                         " id TEXT PRIMARY KEY, k TEXT NOT NULL, kseq INTEGER NOT NULL,"
                         " part INTEGER NOT NULL, off INTEGER NOT NULL,"
                         " times INTEGER NOT NULL, first_pid INTEGER NOT NULL,"
                         " last_pid INTEGER NOT NULL)",
                         NULL, NULL, &err) != SQLITE_OK)
                die("creating the store: %s", err);
        sqlite3_close(db);
        return 0;
}

/* The ids in the store, as a set. */
static GHashTable *store_ids(const char *path, long *rows) {
        sqlite3 *db = open_db(path);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT id FROM handled", -1, &st, NULL))
                die("reading the store: %s", sqlite3_errmsg(db));
        GHashTable *s = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        int rc;
        *rows = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                g_hash_table_add(s, g_strdup((const char *)sqlite3_column_text(st, 0)));
                (*rows)++;
        }
        if (rc != SQLITE_DONE)
                die("reading the store: %s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        sqlite3_close(db);
        return s;
}

static GPtrArray *read_glob(const char *dir, const char *prefix, const char *suffix,
                            GPtrArray *(*reader)(const char *, GPtrArray *),
                            GPtrArray *into, int *files) {
        GDir *d = g_dir_open(dir, 0, NULL);
        if (!d)
                die("cannot open %s", dir);
        const char *name;
        GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
        while ((name = g_dir_read_name(d)))
                if (g_str_has_prefix(name, prefix) && g_str_has_suffix(name, suffix))
                        g_ptr_array_add(names, g_strdup(name));
        g_dir_close(d);
        for (guint i = 0; i < names->len; i++) {
                char *path = g_build_filename(dir, names->pdata[i], NULL);
                reader(path, into);
                g_free(path);
        }
        if (files)
                *files = (int)names->len;
        g_ptr_array_free(names, TRUE);
        return into;
}

/* UPSERTs every handled record of a consumer log into the store: the
 * "per-process log, merged at the end" alternative to a shared store. */
static int mode_merge(const struct opts *o) {
        if (!o->db || !o->log)
                die("merge needs -d -l");
        FILE *f = fopen(o->log, "r");
        if (!f)
                die("cannot read %s: %s", o->log, strerror(errno));
        g_db = open_db(o->db);
        store_prepare();
        char line[4096];
        long n = 0;
        while (fgets(line, sizeof(line), f)) {
                char inst[64], id[300], key[KEY_MAX];
                long long ns, off;
                int part, attempt;
                long kseq;
                if (line[0] != 'H' || line[strlen(line) - 1] != '\n' ||
                    sscanf(line, "H %lld %d %63s %d %lld %299s %63s %ld %d", &ns, &g_pid,
                           inst, &part, &off, id, key, &kseq, &attempt) != 9)
                        continue;
                store_upsert(id, key, kseq, part, off);
                n++;
        }
        fclose(f);
        store_close();
        say("%ld records of %s merged into %s", n, o->log, o->db);
        return 0;
}

static int mode_missing(const struct opts *o) {
        if (!o->dir || !o->db)
                die("missing needs -o -d");
        GPtrArray *acked = read_glob(o->dir, "acked-", ".log", read_acked_file,
                                     g_ptr_array_new_with_free_func(free_acked), NULL);
        long rows;
        GHashTable *s = store_ids(o->db, &rows);
        long missing = 0;
        for (guint i = 0; i < acked->len; i++)
                if (!g_hash_table_contains(s, ((struct acked *)acked->pdata[i])->id))
                        missing++;
        printf("missing=%ld acked=%u store=%ld\n", missing, acked->len, rows);
        g_hash_table_destroy(s);
        g_ptr_array_free(acked, TRUE);
        return 0;
}

/* ------------------------------------------------------------ verify --- */

/* One record of a consumer log. */
struct rec {
        char type; /* 'H' handled, 'X' resolved, 'R' rebalance (kseq: 2 revoked, 3 lost) */
        int64_t ns;
        int inst;  /* index into the instance names */
        int32_t part;
        int64_t off;   /* H: offset; X: the position resolved to */
        char *id;      /* H only */
        char *key;     /* H only (interned) */
        long kseq;
};

struct vstate {
        GPtrArray *recs;         /* struct rec* */
        GPtrArray *insts;        /* instance names ("c1a", ...) */
        GHashTable *inst_idx;    /* name -> index+1 */
        GStringChunk *strs;
        GHashTable *oor_keys;    /* incident keys of offset_out_of_range events */
        GHashTable *transient_keys; /* ... whose offset was within the log:
                                     * a broker that answered out of range
                                     * for a position the log holds (a stale
                                     * leader after a gray failure or a
                                     * restart; librdkafka 2.0.2 has no
                                     * KIP-320 validation) */
        GHashTable *acked_end;   /* partition -> highest acked offset + 1 */
        int del_part;            /* the test's DeleteRecords: partition, */
        long long del_before;    /* and the offset it deleted up to */
        long lost_events, revoked_events, assigned_events, bad_lines;
};

static struct vstate *g_vs;

static int inst_index(const char *name, int pid) {
        char *k = g_strdup_printf("%s/%d", name, pid);
        gpointer v = g_hash_table_lookup(g_vs->inst_idx, k);
        if (v) {
                g_free(k);
                return GPOINTER_TO_INT(v) - 1;
        }
        g_ptr_array_add(g_vs->insts, k);
        g_hash_table_insert(g_vs->inst_idx, k, GINT_TO_POINTER(g_vs->insts->len));
        return (int)g_vs->insts->len - 1;
}

static GPtrArray *read_hlog(const char *path, GPtrArray *into) {
        FILE *f = fopen(path, "r");
        if (!f)
                die("cannot read %s: %s", path, strerror(errno));
        char line[4096];
        while (fgets(line, sizeof(line), f)) {
                size_t len = strlen(line);
                if (len == 0 || line[len - 1] != '\n') {
                        g_vs->bad_lines++;
                        continue;
                }
                char inst[64], id[300], key[KEY_MAX], what[32], cls[64], ik[600];
                long long ns, off, a, b, x, y;
                int pid, part, attempt;
                long kseq;
                if (line[0] == 'H') {
                        if (sscanf(line, "H %lld %d %63s %d %lld %299s %63s %ld %d", &ns, &pid,
                                   inst, &part, &off, id, key, &kseq, &attempt) != 9) {
                                g_vs->bad_lines++;
                                continue;
                        }
                        struct rec *r = g_new0(struct rec, 1);
                        r->type = 'H';
                        r->ns = ns;
                        r->inst = inst_index(inst, pid);
                        r->part = part;
                        r->off = off;
                        r->id = g_string_chunk_insert_const(g_vs->strs, id);
                        r->key = g_string_chunk_insert_const(g_vs->strs, key);
                        r->kseq = kseq;
                        g_ptr_array_add(into, r);
                } else if (line[0] == 'X') {
                        if (sscanf(line, "X %lld %d %63s %31s %d %lld %lld", &ns, &pid, inst,
                                   what, &part, &a, &b) != 7) {
                                g_vs->bad_lines++;
                                continue;
                        }
                        struct rec *r = g_new0(struct rec, 1);
                        r->type = 'X';
                        r->ns = ns;
                        r->inst = inst_index(inst, pid);
                        r->part = part;
                        r->off = b;
                        g_ptr_array_add(into, r);
                } else if (line[0] == 'R') {
                        if (sscanf(line, "R %lld %d %63s %31s %d", &ns, &pid, inst, what,
                                   &part) != 5) {
                                g_vs->bad_lines++;
                                continue;
                        }
                        struct rec *r = g_new0(struct rec, 1);
                        r->type = 'R';
                        r->ns = ns;
                        r->inst = inst_index(inst, pid);
                        r->part = part;
                        if (!strcmp(what, "lost")) {
                                g_vs->lost_events++;
                                r->kseq = 3;
                        } else if (!strcmp(what, "revoked")) {
                                g_vs->revoked_events++;
                                r->kseq = 2;
                        } else {
                                g_vs->assigned_events++;
                                r->kseq = 1;
                        }
                        g_ptr_array_add(into, r);
                } else if (line[0] == 'E') {
                        if (sscanf(line, "E %lld %d %63s %63s %d %lld %lld %lld %lld %599s",
                                   &ns, &pid, inst, cls, &part, &off, &a, &x, &y, ik) != 10) {
                                g_vs->bad_lines++;
                                continue;
                        }
                        if (!strcmp(cls, rbk_event_class_name(RBK_EV_OFFSET_OUT_OF_RANGE))) {
                                /* The log holds the position when the
                                 * watermarks of the event say so, or when
                                 * a record at or after it was acked
                                 * (acks=all: in the log) and the test
                                 * deleted nothing from there: the broker
                                 * that answered (its watermarks too) was
                                 * behind the log. */
                                int64_t end = (int64_t)GPOINTER_TO_SIZE(g_hash_table_lookup(
                                    g_vs->acked_end, GINT_TO_POINTER(part)));
                                int held = off >= 0 && off <= end &&
                                           !(part == g_vs->del_part && off < g_vs->del_before);
                                if ((off >= 0 && x >= 0 && y >= 0 && off >= x && off <= y) || held)
                                        g_hash_table_add(g_vs->transient_keys, g_strdup(ik));
                                else
                                        g_hash_table_add(g_vs->oor_keys, g_strdup(ik));
                        }
                }
        }
        fclose(f);
        return into;
}

static GPtrArray *read_failed(const char *path, GPtrArray *into) {
        FILE *f = fopen(path, "r");
        if (!f)
                die("cannot read %s: %s", path, strerror(errno));
        char line[2048];
        while (fgets(line, sizeof(line), f)) {
                g_strchomp(line);
                if (*line)
                        g_ptr_array_add(into, g_strdup(line));
        }
        fclose(f);
        return into;
}

static gint cmp_rec_ns(gconstpointer a, gconstpointer b) {
        const struct rec *x = *(struct rec *const *)a, *y = *(struct rec *const *)b;
        if (x->ns != y->ns)
                return x->ns < y->ns ? -1 : 1;
        /* At the same instant a resolve goes before what it allows. */
        return (x->type == 'X' ? 0 : 1) - (y->type == 'X' ? 0 : 1);
}

static gint cmp_acked_kseq(gconstpointer a, gconstpointer b) {
        const struct acked *x = *(struct acked *const *)a, *y = *(struct acked *const *)b;
        int c = strcmp(x->key, y->key);
        if (c)
                return c;
        return x->kseq < y->kseq ? -1 : x->kseq > y->kseq;
}

/* One gray-failure round of the driver (the "gray" file). */
struct gray {
        char kind[32];
        int node, part;
        int64_t start_ms, end_ms, start_ns, end_ns;
};

static GArray *read_gray(const char *dir) {
        GArray *g = g_array_new(FALSE, TRUE, sizeof(struct gray));
        char *path = g_build_filename(dir, "gray", NULL);
        FILE *f = fopen(path, "r");
        g_free(path);
        if (!f)
                return g;
        char line[512];
        while (fgets(line, sizeof(line), f)) {
                struct gray x = {0};
                long long a, b, c, d;
                if (sscanf(line, "%31s %d %d %lld %lld %lld %lld", x.kind, &x.node, &x.part,
                           &a, &b, &c, &d) != 7)
                        continue;
                x.start_ms = a;
                x.end_ms = b;
                x.start_ns = c;
                x.end_ns = d;
                g_array_append_val(g, x);
        }
        fclose(f);
        return g;
}

/* One record of log.txt (the topic read back by the driver: one
 * "partition offset headers" line per record, headers "name=value,...",
 * as `kcat -f '%p %o %h\n'` prints them). Returns 1 with *id (in @hdrs,
 * NULL when the record has none) and *resent set, 0 for a line that is not
 * a record. */
#define LOG_HDRS_MAX 1800
static int log_record(const char *line, char hdrs[LOG_HDRS_MAX], int *part,
                      long long *off, const char **id, int *resent) {
        hdrs[0] = '\0';
        if (sscanf(line, "%d %lld %1799s", part, off, hdrs) < 2)
                return 0;
        *id = NULL;
        *resent = 0;
        for (char *h = hdrs; h && *h;) {
                char *comma = strchr(h, ',');
                if (comma)
                        *comma = '\0';
                if (g_str_has_prefix(h, "rbk-id="))
                        *id = h + strlen("rbk-id=");
                else if (g_str_has_prefix(h, "rbk-resent="))
                        *resent = 1;
                h = comma ? comma + 1 : NULL;
        }
        return 1;
}

/* A record of log.txt, and an id's copies in the log. */
typedef struct {
        int part;
        long long off;
        int resent;
} log_copy_t;
typedef struct {
        log_copy_t first;
        GArray *later; /* log_copy_t in log order; NULL while the id is once */
        int marked, unmarked;
} log_id_t;

static void log_id_free(gpointer p) {
        log_id_t *li = p;
        if (li->later)
                g_array_free(li->later, TRUE);
        g_free(li);
}

/* Every id of a log.txt with its copies; *records and *no_id count its
 * records and those without an rbk-id. NULL when the file cannot be read. */
static GHashTable *read_log_ids(const char *path, long *records, long *no_id) {
        FILE *f = fopen(path, "r");
        if (!f)
                return NULL;
        GHashTable *ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, log_id_free);
        char line[2048], hdrs[LOG_HDRS_MAX];
        *records = *no_id = 0;
        while (fgets(line, sizeof(line), f)) {
                log_copy_t c;
                const char *id;
                if (!log_record(line, hdrs, &c.part, &c.off, &id, &c.resent))
                        continue;
                (*records)++;
                if (!id) {
                        (*no_id)++;
                        continue;
                }
                log_id_t *li = g_hash_table_lookup(ids, id);
                if (!li) {
                        li = g_new0(log_id_t, 1);
                        li->first = c;
                        g_hash_table_insert(ids, g_strdup(id), li);
                } else {
                        if (!li->later)
                                li->later = g_array_new(FALSE, FALSE, sizeof(log_copy_t));
                        g_array_append_val(li->later, c);
                }
                if (c.resent)
                        li->marked++;
                else
                        li->unmarked++;
        }
        fclose(f);
        return ids;
}

/* The positions ("partition/offset") of the records that repeat an id an
 * earlier record of the log holds, where some copy of that id carries
 * rbk-resent: the copies a producer's fatal-error recovery left in the log.
 * Every re-sent copy is marked; the first attempt is not, and it can land
 * after its re-sent copy (a request of the replaced librdkafka instance that
 * reaches a broker late is still appended). Either way a consumer with dedup
 * drops the later copies, so their offsets are never handled: a skip over
 * them is not an offset reset. An unmarked copy past an id's first unmarked
 * one is a duplicate and is not among them. Empty when there is no log.txt. */
static GHashTable *read_resent_copies(const char *dir) {
        GHashTable *copies = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        char *path = g_build_filename(dir, "log.txt", NULL);
        long records, no_id;
        GHashTable *ids = read_log_ids(path, &records, &no_id);
        g_free(path);
        if (!ids)
                return copies;
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, ids);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                log_id_t *li = v;
                if (!li->marked || !li->later)
                        continue;
                int unmarked_seen = !li->first.resent;
                for (guint i = 0; i < li->later->len; i++) {
                        log_copy_t *c = &g_array_index(li->later, log_copy_t, i);
                        if (c->resent || !unmarked_seen)
                                g_hash_table_add(copies, g_strdup_printf("%d/%lld", c->part, c->off));
                        if (!c->resent)
                                unmarked_seen = 1;
                }
        }
        g_hash_table_destroy(ids);
        return copies;
}

/* The chaos suite's check of the topic read back whole: prints
 *   log: records=N distinct_ids=N duplicate_records=N resent_duplicates=N no_id=N [e.g. ...]
 * An id's marked copies are re-sends of a fatal-error recovery and its first
 * unmarked copy the first attempt, in any order (resent_duplicates); an
 * unmarked copy past the first is a duplicate record. The driver decides on
 * the counts. */
static int mode_log_check(const struct opts *o) {
        if (!o->log)
                die("log-check needs -l LOG");
        long records, no_id;
        GHashTable *ids = read_log_ids(o->log, &records, &no_id);
        if (!ids)
                die("cannot read %s: %s", o->log, g_strerror(errno));
        long dup = 0, rdup = 0, shown = 0;
        GString *eg = g_string_new(NULL);
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, ids);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                log_id_t *li = v;
                if (!li->later)
                        continue;
                long d = li->unmarked > 1 ? li->unmarked - 1 : 0;
                dup += d;
                rdup += (long)li->later->len - d;
                if (d && shown++ < 5) {
                        g_string_append_printf(eg, " %s@", (char *)k);
                        for (guint i = 0; i < li->later->len; i++) {
                                log_copy_t *c = &g_array_index(li->later, log_copy_t, i);
                                g_string_append_printf(eg, "%s%d/%lld", i ? "," : "", c->part, c->off);
                        }
                        g_string_append_printf(eg, "(first %d/%lld)", li->first.part, li->first.off);
                }
        }
        printf("log: records=%ld distinct_ids=%u duplicate_records=%ld resent_duplicates=%ld no_id=%ld%s%s\n",
               records, g_hash_table_size(ids), dup, rdup, no_id, eg->len ? " e.g." : "", eg->str);
        g_string_free(eg, TRUE);
        g_hash_table_destroy(ids);
        return 0;
}

/* Whether every offset in [from, to) of @part is a dropped re-sent copy. */
static int only_resent_copies(GHashTable *copies, int part, int64_t from, int64_t to) {
        if (from >= to)
                return 0;
        for (int64_t o = from; o < to; o++) {
                char k[48];
                g_snprintf(k, sizeof(k), "%d/%" PRId64, part, o);
                if (!g_hash_table_contains(copies, k))
                        return 0;
        }
        return 1;
}

static gint cmp_double(gconstpointer a, gconstpointer b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of @p v, sorted in place; 0 when empty. */
static double quantile(GArray *v, double q) {
        if (v->len == 0)
                return 0;
        g_array_sort(v, cmp_double);
        guint i = (guint)(q * v->len + 0.999999);
        if (i < 1)
                i = 1;
        if (i > v->len)
                i = v->len;
        return g_array_index(v, double, i - 1);
}

static int mode_verify(const struct opts *o) {
        if (!o->dir || !o->db)
                die("verify needs -o -d");
        struct vstate vs = {0};
        g_vs = &vs;
        vs.recs = g_ptr_array_new_with_free_func(g_free);
        vs.insts = g_ptr_array_new_with_free_func(g_free);
        vs.inst_idx = g_hash_table_new(g_str_hash, g_str_equal);
        vs.strs = g_string_chunk_new(1 << 20);
        vs.oor_keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        vs.transient_keys =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        int nfiles = 0;

        /* Acked: id -> record. */
        GPtrArray *acked = read_glob(o->dir, "acked-", ".log", read_acked_file,
                                     g_ptr_array_new_with_free_func(free_acked), &nfiles);
        if (nfiles == 0)
                die("no acked-*.log in %s", o->dir);
        GHashTable *A = g_hash_table_new(g_str_hash, g_str_equal);
        long ack_dups = 0, no_id = 0;
        for (guint i = 0; i < acked->len; i++) {
                struct acked *a = acked->pdata[i];
                if (!strcmp(a->id, "-"))
                        no_id++;
                else if (!g_hash_table_insert(A, a->id, a))
                        ack_dups++;
        }
        GPtrArray *failed = read_glob(o->dir, "failed-", ".log", read_failed,
                                      g_ptr_array_new_with_free_func(g_free), NULL);
        for (guint i = 0; i < failed->len && i < 10; i++)
                say("failed: %s", (char *)failed->pdata[i]);

        /* The range the test itself deleted (offset out of range phase). */
        int dpart = -1;
        long long dC = -1, dD = -1, dH = -1;
        char *dpath = g_build_filename(o->dir, "oor.deleted", NULL);
        FILE *df = fopen(dpath, "r");
        if (df) {
                if (fscanf(df, "%d %lld %lld %lld", &dpart, &dC, &dD, &dH) != 4)
                        die("bad %s", dpath);
                fclose(df);
        }
        g_free(dpath);
        vs.del_part = dpart;
        vs.del_before = dD;
        vs.acked_end = g_hash_table_new(g_direct_hash, g_direct_equal);
        for (guint i = 0; i < acked->len; i++) {
                struct acked *a = acked->pdata[i];
                gpointer pk = GINT_TO_POINTER(a->part);
                int64_t end = (int64_t)GPOINTER_TO_SIZE(g_hash_table_lookup(vs.acked_end, pk));
                if (a->off >= 0 && a->off + 1 > end)
                        g_hash_table_insert(vs.acked_end, pk, GSIZE_TO_POINTER((gsize)(a->off + 1)));
        }

        /* Consumer logs. */
        int nlogs = 0;
        read_glob(o->dir, "", ".hlog", read_hlog, vs.recs, &nlogs);
        if (nlogs == 0)
                die("no *.hlog in %s", o->dir);
        g_ptr_array_sort(vs.recs, cmp_rec_ns);
        /* When each process was last heard of: a redelivery to another
         * process while the first one still ran is a cross-member one
         * (a fenced member, a rebalance), not the aftermath of a crash. */
        int64_t *last_ns = g_new0(int64_t, vs.insts->len + 1);
        for (guint i = 0; i < vs.recs->len; i++) {
                struct rec *r = vs.recs->pdata[i];
                if (r->ns > last_ns[r->inst])
                        last_ns[r->inst] = r->ns;
        }
        GArray *grays = read_gray(o->dir);
        long freezes = 0, partitions = 0, cross_member = 0, cross_in_gray = 0;
        for (guint i = 0; i < grays->len; i++) {
                const struct gray *g = &g_array_index(grays, struct gray, i);
                if (g_str_has_prefix(g->kind, "freeze"))
                        freezes++;
                else if (g_str_has_prefix(g->kind, "partition"))
                        partitions++;
        }

        /* Per id: first occurrence, instances that handled it. */
        GHashTable *first = g_hash_table_new(g_str_hash, g_str_equal); /* id -> rec */
        GHashTable *pairs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        GHashTable *id_insts = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, NULL);
        /* Per (process, partition): revocations and losses so far, to tell
         * why a process saw an id twice. */
        GHashTable *epochs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        GHashTable *pair_epoch = g_hash_table_new(g_str_hash, g_str_equal);
        long dup_handler = 0, redelivered = 0, handled_recs = 0, unacked_handled = 0,
             deleted_handled = 0, dup_after_lost = 0, dup_after_revoke = 0;
        for (guint i = 0; i < vs.recs->len; i++) {
                struct rec *r = vs.recs->pdata[i];
                if (r->type == 'R' && r->kseq >= 2) {
                        char *ek = g_strdup_printf("%d %d", r->inst, (int)r->part);
                        guint64 e = (guint64)(gsize)g_hash_table_lookup(epochs, ek);
                        e += r->kseq == 3 ? ((guint64)1 << 32) : 1;
                        g_hash_table_insert(epochs, ek, (gpointer)(gsize)e);
                }
                if (r->type != 'H')
                        continue;
                handled_recs++;
                if (!g_hash_table_contains(first, r->id)) {
                        g_hash_table_insert(first, r->id, r);
                        struct acked *a = g_hash_table_lookup(A, r->id);
                        if (!a)
                                unacked_handled++;
                        else if (a->part != r->part || a->off != r->off)
                                say("id %s acked at %d/%" PRId64 " handled at %d/%" PRId64,
                                    r->id, a->part, a->off, r->part, r->off);
                        if (r->part == dpart && r->off >= dC && r->off < dD &&
                            r->ns > 0)
                                deleted_handled++;
                }
                char *pk = g_strdup_printf("%d %s", r->inst, r->id);
                guint n = GPOINTER_TO_UINT(g_hash_table_lookup(pairs, pk));
                char ek[64];
                g_snprintf(ek, sizeof(ek), "%d %d", r->inst, (int)r->part);
                guint64 epoch = (guint64)(gsize)g_hash_table_lookup(epochs, ek);
                if (n == 1) {
                        dup_handler++; /* counted once per (process, id) */
                        guint64 was = (guint64)(gsize)g_hash_table_lookup(pair_epoch, pk);
                        if ((epoch >> 32) != (was >> 32))
                                dup_after_lost++;
                        else if ((epoch & 0xffffffffu) != (was & 0xffffffffu))
                                dup_after_revoke++;
                        else if (dup_handler - dup_after_lost - dup_after_revoke <= 10)
                                say("handed twice within one assignment: %s to %s (%d/%" PRId64 ")",
                                    r->id, (char *)vs.insts->pdata[r->inst], r->part, r->off);
                }
                if (n == 0)
                        g_hash_table_insert(pair_epoch, pk, (gpointer)(gsize)epoch);
                if (n == 0) {
                        /* A new process for this id: a redelivery if it is not the first. */
                        guint ni = GPOINTER_TO_UINT(g_hash_table_lookup(id_insts, r->id));
                        if (ni == 1) {
                                redelivered++;
                                struct rec *f0 = g_hash_table_lookup(first, r->id);
                                if (f0 && f0->inst != r->inst && last_ns[f0->inst] > r->ns) {
                                        cross_member++;
                                        /* During a gray round or in the 60 s after it. */
                                        for (guint gi = 0; gi < grays->len; gi++) {
                                                const struct gray *g =
                                                    &g_array_index(grays, struct gray, gi);
                                                if (r->ns >= g->start_ns &&
                                                    r->ns <= g->end_ns + 60 * (int64_t)1000000000) {
                                                        cross_in_gray++;
                                                        break;
                                                }
                                        }
                                }
                        }
                        g_hash_table_insert(id_insts, r->id, GUINT_TO_POINTER(ni + 1));
                }
                g_hash_table_insert(pairs, pk, GUINT_TO_POINTER(n + 1));
        }

        /* Lost: acked, not removed by the test's own DeleteRecords, never handled. */
        long lost = 0, deleted_by_test = 0, expected = 0;
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, A);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                struct acked *a = v;
                int handled = g_hash_table_contains(first, k);
                if (a->part == dpart && a->off >= dC && a->off < dD && !handled) {
                        deleted_by_test++;
                        continue;
                }
                expected++;
                if (!handled) {
                        if (lost < 10)
                                say("lost: %s (%d/%" PRId64 " %s #%ld)", a->id, a->part,
                                    a->off, a->key, a->kseq);
                        lost++;
                }
        }

        /* The store holds exactly the expected set. */
        long rows;
        GHashTable *S = store_ids(o->db, &rows);
        long store_missing = 0, store_extra = 0;
        g_hash_table_iter_init(&it, A);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                struct acked *a = v;
                if (a->part == dpart && a->off >= dC && a->off < dD &&
                    !g_hash_table_contains(first, k))
                        continue;
                if (!g_hash_table_contains(S, k))
                        store_missing++;
        }
        g_hash_table_iter_init(&it, S);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                struct acked *a = g_hash_table_lookup(A, k);
                if (!a || (a->part == dpart && a->off >= dC && a->off < dD &&
                           !g_hash_table_contains(first, k)))
                        store_extra++;
        }

        /* Reordered: per key, first occurrences in handling order must have
         * increasing counters; and the log itself must keep per-key order. */
        long reordered = 0, log_reorders = 0;
        GHashTable *last_kseq = g_hash_table_new(g_str_hash, g_str_equal);
        for (guint i = 0; i < vs.recs->len; i++) {
                struct rec *r = vs.recs->pdata[i];
                if (r->type != 'H' || g_hash_table_lookup(first, r->id) != r)
                        continue;
                /* (first occurrences only) */
                glong prev = GPOINTER_TO_SIZE(g_hash_table_lookup(last_kseq, r->key));
                if (prev && r->kseq < prev) {
                        if (reordered < 10)
                                say("reordered: key %s #%ld handled after #%ld (%d/%" PRId64 ")",
                                    r->key, r->kseq, prev, r->part, r->off);
                        reordered++;
                } else {
                        g_hash_table_insert(last_kseq, r->key, GSIZE_TO_POINTER((gsize)r->kseq));
                }
        }
        g_ptr_array_sort(acked, cmp_acked_kseq);
        for (guint i = 1; i < acked->len; i++) {
                struct acked *a = acked->pdata[i - 1], *b = acked->pdata[i];
                if (!strcmp(a->key, b->key) && (b->part != a->part || b->off <= a->off)) {
                        if (log_reorders < 10)
                                say("log order: key %s #%ld at %d/%" PRId64 ", #%ld at %d/%" PRId64,
                                    a->key, a->kseq, a->part, a->off, b->kseq, b->part, b->off);
                        log_reorders++;
                }
        }

        /* Auto resets: per partition, in handling order across all consumer
         * processes, an offset above the highest handled so far + 1 is a
         * skip, unless a resolve (X) moved the position there. */
        long auto_resets = 0, explained_jumps = 0, resent_skips = 0;
        GHashTable *copies = read_resent_copies(o->dir);
        GHashTable *maxoff = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
        GHashTable *allowed = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
        for (guint i = 0; i < vs.recs->len; i++) {
                struct rec *r = vs.recs->pdata[i];
                if (r->type == 'R')
                        continue;
                gpointer pk = GINT_TO_POINTER(r->part + 1);
                int64_t *mx = g_hash_table_lookup(maxoff, pk);
                if (!mx) {
                        mx = g_new(int64_t, 1);
                        *mx = -1;
                        g_hash_table_insert(maxoff, pk, mx);
                }
                if (r->type == 'X') {
                        int64_t *al = g_new(int64_t, 1);
                        *al = r->off;
                        g_hash_table_insert(allowed, pk, al);
                        continue;
                }
                if (r->off > *mx + 1) {
                        int64_t *al = g_hash_table_lookup(allowed, pk);
                        if (al && *al == r->off) {
                                explained_jumps++;
                                g_hash_table_remove(allowed, pk);
                        } else if (only_resent_copies(copies, r->part, *mx + 1, r->off)) {
                                /* The skipped records are re-sent copies
                                 * of ids handled before: dropped by dedup. */
                                resent_skips++;
                        } else {
                                if (auto_resets < 10)
                                        say("offset jump on partition %d: %" PRId64 " after %" PRId64
                                            " (process %s)", r->part, r->off, *mx,
                                            (char *)vs.insts->pdata[r->inst]);
                                auto_resets++;
                        }
                }
                if (r->off > *mx)
                        *mx = r->off;
        }

        /* Kills recorded by the driver. */
        long kills = 0;
        int nodes_killed[4] = {0};
        char *kpath = g_build_filename(o->dir, "kills", NULL);
        FILE *kf = fopen(kpath, "r");
        if (kf) {
                long long ts;
                int node, part;
                while (fscanf(kf, "%lld %d %d", &ts, &node, &part) == 3) {
                        kills++;
                        if (node >= 1 && node <= 3)
                                nodes_killed[node]++;
                }
                fclose(kf);
        }
        g_free(kpath);

        /* The offset out of range phase. */
        char oor_line[1024] = "";
        int oor_failed = 1;
        char *rpath = g_build_filename(o->dir, "oor.result", NULL);
        FILE *rf = fopen(rpath, "r");
        if (rf) {
                if (fgets(oor_line, sizeof(oor_line), rf)) {
                        g_strchomp(oor_line);
                        const char *cf = strstr(oor_line, "checks_failed=");
                        oor_failed = cf ? atoi(cf + strlen("checks_failed=")) : 1;
                }
                fclose(rf);
        }
        g_free(rpath);
        long quarantines = (long)g_hash_table_size(vs.oor_keys);
        long transient_quarantines = (long)g_hash_table_size(vs.transient_keys);

        /* Delivery latency: the largest of all, and the 99th percentile of
         * the messages sent during a gray round (of all when there was none). */
        double max_lat = 0;
        long with_lat = 0;
        GArray *lat_gray = g_array_new(FALSE, FALSE, sizeof(double));
        GArray *lat_all = g_array_new(FALSE, FALSE, sizeof(double));
        for (guint i = 0; i < acked->len; i++) {
                struct acked *a = acked->pdata[i];
                if (a->lat_ms < 0)
                        continue;
                with_lat++;
                if (a->lat_ms > max_lat)
                        max_lat = a->lat_ms;
                g_array_append_val(lat_all, a->lat_ms);
                for (guint gi = 0; gi < grays->len; gi++) {
                        const struct gray *g = &g_array_index(grays, struct gray, gi);
                        if (a->sent_ms >= g->start_ms && a->sent_ms <= g->end_ms) {
                                g_array_append_val(lat_gray, a->lat_ms);
                                break;
                        }
                }
        }
        double p99_all = quantile(lat_all, 0.99), p50_all = quantile(lat_all, 0.5);
        guint n_gray = lat_gray->len;
        double p99 = grays->len ? quantile(lat_gray, 0.99) : p99_all;
        double p50_gray = quantile(lat_gray, 0.5);

        long failed_n = (long)failed->len;
        printf("chaos-latency: with_latency=%ld p50_all_ms=%.0f p99_all_ms=%.0f max_ms=%.0f"
               " sent_in_gray=%u p50_gray_ms=%.0f p99_gray_ms=%.0f cross_member_in_gray=%ld\n",
               with_lat, p50_all, p99_all, max_lat, n_gray, p50_gray, p99, cross_in_gray);
        printf("chaos-detail: acked_ids=%u deleted_by_test=%ld expected=%ld handled_ids=%u"
               " handled_records=%ld store_rows=%ld store_missing=%ld store_extra=%ld"
               " unacked_handled=%ld ack_dups=%ld no_id=%ld deleted_handled=%ld"
               " log_reorders=%ld explained_jumps=%ld resent_skips=%ld processes=%u rebalance_lost=%ld"
               " dup_after_lost=%ld dup_after_revoke=%ld"
               " kills_per_node=%d,%d,%d bad_lines=%ld\n",
               g_hash_table_size(A), deleted_by_test, expected, g_hash_table_size(first),
               handled_recs, rows, store_missing, store_extra, unacked_handled,
               ack_dups, no_id, deleted_handled, log_reorders, explained_jumps, resent_skips,
               vs.insts->len, vs.lost_events, dup_after_lost, dup_after_revoke, nodes_killed[1], nodes_killed[2],
               nodes_killed[3], vs.bad_lines);
        printf("%s\n", *oor_line ? oor_line : "oor: no result (phase did not run)");

        int bad = 0;
#define MUST(cond, what)                                                         \
        do {                                                                     \
                if (!(cond)) {                                                   \
                        say("FAILED: %s", what);                                 \
                        bad = 1;                                                 \
                }                                                                \
        } while (0)
        MUST(failed_n == 0, "failed delivery reports");
        MUST(lost == 0, "acked ids never handled");
        MUST(dup_handler == 0, "ids handed twice to the same consumer process");
        MUST(reordered + log_reorders == 0, "per-key order violations");
        MUST(auto_resets == 0, "offset jumps not explained by a resolved quarantine");
        MUST(store_missing == 0 && store_extra == 0, "the store does not hold exactly the acked set");
        MUST(unacked_handled == 0, "handled ids never reported delivered");
        MUST(ack_dups == 0 && no_id == 0, "delivery reports without an id or reported twice");
        MUST((long)g_hash_table_size(A) >= o->min, "fewer acked messages than -n asks");
        MUST(kills >= o->min_kills &&
                 (o->min_kills == 0 || (nodes_killed[1] && nodes_killed[2] && nodes_killed[3])),
             "fewer kills than -K asks, or a node never killed");
        if (o->max_delivery_ms > 0)
                MUST(max_lat <= (double)o->max_delivery_ms, "a delivery took longer than -M allows");
        if (o->p99_delivery_ms > 0)
                MUST(p99 <= (double)o->p99_delivery_ms,
                     "the 99th percentile delivery latency is above what -P allows");
        if (o->no_oor)
                MUST(explained_jumps == 0 && quarantines == 0, "quarantines without an -Q phase");
        else
                MUST(oor_failed == 0 && explained_jumps == 1 && quarantines == 1,
                     "the offset-out-of-range phase");
#undef MUST

        printf("chaos: acked=%u failed=%ld lost=%ld duplicates_to_handler=%ld redelivered=%ld"
               " reordered=%ld auto_resets=%ld kills=%ld quarantines=%ld"
               " freezes=%ld partitions=%ld max_delivery_ms=%.0f p99_delivery_ms=%.0f"
               " cross_member_redelivered=%ld transient_quarantines=%ld\n",
               g_hash_table_size(A), failed_n, lost, dup_handler, redelivered,
               reordered + log_reorders, auto_resets, kills, quarantines, freezes,
               partitions, max_lat, p99, cross_member, transient_quarantines);
        fflush(stdout);

        g_array_free(lat_gray, TRUE);
        g_array_free(lat_all, TRUE);
        g_array_free(grays, TRUE);
        g_free(last_ns);
        g_hash_table_destroy(S);
        g_hash_table_destroy(first);
        g_hash_table_destroy(pairs);
        g_hash_table_destroy(id_insts);
        g_hash_table_destroy(epochs);
        g_hash_table_destroy(pair_epoch);
        g_hash_table_destroy(last_kseq);
        g_hash_table_destroy(maxoff);
        g_hash_table_destroy(allowed);
        g_hash_table_destroy(copies);
        g_hash_table_destroy(A);
        g_ptr_array_free(acked, TRUE);
        g_ptr_array_free(failed, TRUE);
        g_ptr_array_free(vs.recs, TRUE);
        g_hash_table_destroy(vs.inst_idx);
        g_ptr_array_free(vs.insts, TRUE);
        g_hash_table_destroy(vs.oor_keys);
        g_hash_table_destroy(vs.transient_keys);
        g_hash_table_destroy(vs.acked_end);
        g_string_chunk_free(vs.strs);
        return bad;
}

/* -------------------------------------------------------------- main --- */

static void usage(void) {
        fprintf(stderr,
                "usage: chaos produce  -b BS -t TOPIC -o DIR -s STOPFILE [-n MIN] [-r RATE] [-k KEYS] [-T MAXSECS]\n"
                "       chaos consume  -b BS -t TOPIC -g GROUP -d DB -l LOG -i INSTANCE\n"
                "       chaos oor      -b BS -t TOPIC -g GROUP -d DB -l LOG -o DIR -p PARTITION [-n EXTRA]\n"
                "       chaos store-init -d DB\n"
                "       chaos missing  -o DIR -d DB\n"
                "       chaos merge    -d DB -l LOG\n"
                "       chaos verify   -o DIR -d DB [-n MIN_ACKED] [-K MIN_KILLS] [-Q] [-M MAX_MS] [-P P99_MS]\n"
                "       chaos log-check -l LOG.TXT\n"
                "       chaos now\n");
        exit(2);
}

int main(int argc, char **argv) {
        if (argc < 2)
                usage();
        g_mode = argv[1];
        struct opts o = {.min = 200000, .rate = 2500, .extra = 2000, .keys = 2000,
                         .partition = -1, .max_seconds = 480, .min_kills = 5};
        int c;
        optind = 2;
        while ((c = getopt(argc, argv, "b:t:g:d:l:o:s:i:n:r:k:p:T:K:QM:P:")) != -1) {
                switch (c) {
                case 'b': o.bootstrap = optarg; break;
                case 't': o.topic = optarg; break;
                case 'g': o.group = optarg; break;
                case 'd': o.db = optarg; break;
                case 'l': o.log = optarg; break;
                case 'o': o.dir = optarg; break;
                case 's': o.stopfile = optarg; break;
                case 'i': o.inst = optarg; break;
                case 'n': o.min = o.extra = atol(optarg); break;
                case 'r': o.rate = atol(optarg); break;
                case 'k': o.keys = atoi(optarg); break;
                case 'p': o.partition = atoi(optarg); break;
                case 'T': o.max_seconds = atoi(optarg); break;
                case 'K': o.min_kills = atoi(optarg); break;
                case 'M': o.max_delivery_ms = atol(optarg); break;
                case 'P': o.p99_delivery_ms = atol(optarg); break;
                case 'Q': o.no_oor = 1; break;
                default: usage();
                }
        }
        if (o.keys < 1 || o.rate < 1 || o.min < 0 || o.min_kills < 0)
                die("bad numeric option");
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (!strcmp(argv[1], "produce"))
                return mode_produce(&o);
        if (!strcmp(argv[1], "consume"))
                return mode_consume(&o);
        if (!strcmp(argv[1], "oor"))
                return mode_oor(&o);
        if (!strcmp(argv[1], "store-init"))
                return mode_store_init(&o);
        if (!strcmp(argv[1], "missing"))
                return mode_missing(&o);
        if (!strcmp(argv[1], "merge"))
                return mode_merge(&o);
        if (!strcmp(argv[1], "verify"))
                return mode_verify(&o);
        if (!strcmp(argv[1], "log-check"))
                return mode_log_check(&o);
        if (!strcmp(argv[1], "now")) {
                /* For the driver: the wall clock (ms) and CLOCK_MONOTONIC (ns)
                 * of one instant, to place its rounds on both time lines. */
                printf("%" PRId64 " %" PRId64 "\n", realtime_ms(), now_ns());
                return 0;
        }
        usage();
}
