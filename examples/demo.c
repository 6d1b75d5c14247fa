/*
 * demo: `make demo`. A producer and a consumer run a pipeline while the
 * cluster fails under them, and the demo proves from the message ids that
 * nothing was lost and no offset was reset behind anyone's back.
 *
 * Without KAFKA_URL it starts an embedded 3-broker mock cluster and plays,
 * while messages flow:
 *   1. a leader election (partition leaders move);
 *   2. a broker going down, its partitions failing over, and coming back;
 *   3. a fatal idempotent-producer error (the broker answers
 *      OUT_OF_ORDER_SEQUENCE_NUMBER) and the producer's recovery;
 *   4. a burst of duplicates (produce responses delayed beyond
 *      socket.timeout.ms: the client retries and the mock, which checks no
 *      sequence numbers, writes the batches twice), dropped by the consumer;
 *   5. an offset out of range: the partition is quarantined, the hook pages
 *      (its output is shown), the other partitions keep flowing;
 *   6. an operator resolving the quarantine.
 * With KAFKA_URL (and KAFKA_* certificates, see docs/heroku.md) it runs the
 * same pipeline against that cluster without injecting faults; the topic
 * (RBK_DEMO_TOPIC, default rbk-demo) must exist or be auto-creatable.
 *
 * At the end a second consumer, with de-duplication off, reads the whole
 * log, so that every offset the first consumer did not hand to its handler
 * can be explained (a dropped duplicate of a message it did handle) or
 * counted as an offset reset. The last line is the verdict:
 *   demo: produced=N delivered=N consumed=N duplicates_dropped=D lost=0
 *         auto_resets=0 quarantines=Q fatal_recoveries=F
 * Exit status 1 if anything acknowledged was never consumed (lost, counted
 * by id as sets) or an offset moved without a resolved quarantine.
 *
 *   demo --cluster-only [--topic T] [--partitions N]
 * only starts the embedded cluster (and creates the topic), prints
 * `bootstrap.servers=...` and runs until SIGTERM or SIGINT: a Kafka for
 * trying the other examples (scripts/run-example-tests uses it).
 *
 * docs/demo.md explains how to read the output.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <robustkafka.h>
#include <robustkafka/testing.h>

/* The hook a service copies (page_hook): JSON to stderr and syslog, and
 * RBK_PAGE_COMMAND for events that need a human. */
#define RBK_PAGING_HOOK_ONLY
#include "paging_hook.c"

#define DEMO_PARTITIONS 6
#define DEMO_MAX_PARTITIONS 256
#define DEMO_RATE 400           /* messages per second */
#define DEMO_GROUP_WAIT_MS 20000 /* first message consumed */
#define DEMO_DRAIN_MS 25000      /* everything acknowledged consumed */
#define KAFKA_OUT_OF_ORDER_SEQUENCE_NUMBER 45
#define KAFKA_OFFSET_OUT_OF_RANGE 1

/* ------------------------------------------------------------ utilities */

static double t_start;

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

/* A string map (open addressing), used as the id sets. Not thread-safe:
 * callers hold state.lock. */
typedef struct {
        char *key;
        char *val;  /* optional */
        long count; /* insertions */
} entry_t;

typedef struct {
        entry_t *e;
        size_t cap, len;
} strmap_t;

static uint64_t hash_str(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        while (*s)
                h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
        return h;
}

static entry_t *map_slot(entry_t *e, size_t cap, const char *key) {
        size_t i = (size_t)hash_str(key) & (cap - 1);
        while (e[i].key && strcmp(e[i].key, key))
                i = (i + 1) & (cap - 1);
        return &e[i];
}

static entry_t *map_find(const strmap_t *m, const char *key) {
        if (!m->cap)
                return NULL;
        entry_t *s = map_slot(m->e, m->cap, key);
        return s->key ? s : NULL;
}

/* Inserts (or finds) key; returns its entry with count incremented. */
static entry_t *map_add(strmap_t *m, const char *key) {
        if ((m->len + 1) * 2 > m->cap) {
                size_t ncap = m->cap ? m->cap * 2 : 4096;
                entry_t *ne = calloc(ncap, sizeof(*ne));
                if (!ne) {
                        fprintf(stderr, "demo: out of memory\n");
                        exit(2);
                }
                for (size_t i = 0; i < m->cap; i++)
                        if (m->e[i].key)
                                *map_slot(ne, ncap, m->e[i].key) = m->e[i];
                free(m->e);
                m->e = ne;
                m->cap = ncap;
        }
        entry_t *s = map_slot(m->e, m->cap, key);
        if (!s->key) {
                s->key = strdup(key);
                m->len++;
        }
        s->count++;
        return s;
}

static void map_free(strmap_t *m) {
        for (size_t i = 0; i < m->cap; i++) {
                free(m->e[i].key);
                free(m->e[i].val);
        }
        free(m->e);
        memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------ state */

typedef struct {
        int32_t p;
        int64_t from, to; /* offsets [from, to) not handed to the handler */
        int resolved;     /* right after an operator's resolution */
} gap_t;

static struct {
        pthread_mutex_t lock;
        strmap_t acked;    /* id -> n: delivery reports OK */
        strmap_t handled;  /* id -> times handed to the main handler */
        strmap_t log;      /* "p:offset" -> id, from the verifying reader */
        int64_t next_off[DEMO_MAX_PARTITIONS];   /* main: next expected */
        int64_t max_off[DEMO_MAX_PARTITIONS];    /* main: highest handled */
        int64_t vmax_off[DEMO_MAX_PARTITIONS];   /* verifier: highest read */
        int reassigned[DEMO_MAX_PARTITIONS];     /* rebalance since last msg */
        int resolved[DEMO_MAX_PARTITIONS];       /* resolution since last msg */
        gap_t *gaps;
        size_t ngaps, gaps_cap;
        unsigned long unexplained_rewinds;
        unsigned long passed_duplicates; /* same id handled twice */
        unsigned long consumed_ours;     /* distinct ids of this run */
        unsigned long foreign;            /* not from this run */
} state = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct {
        atomic_ulong produced, delivered, failed, resent;
        atomic_ulong consumed, verified;
        atomic_ulong fatal_recovered, quarantine_events, resolved_events;
        atomic_ulong log_suppressed;
        atomic_int stop_producing;
} cnt;

static char run_id[17];
static const char *topic = "rbk-demo";
static int is_tty, verbose;
static rbk_producer_t *producer;
static rbk_consumer_t *consumer, *verifier;

/* ------------------------------------------------------------ output */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int progress_shown;
static double last_rate;

static void progress_line_locked(void) {
        rbk_producer_stats_t ps = RBK_PRODUCER_STATS_INIT;
        memset(&ps, 0, sizeof(ps));
        if (producer)
                rbk_producer_stats(producer, &ps);
        printf("[%5.1fs] rate=%.0f/s in_flight=%" PRIu64
               " delivered=%lu consumed=%lu",
               now_s() - t_start, last_rate, ps.in_flight,
               atomic_load(&cnt.delivered), atomic_load(&cnt.consumed));
}

static void clear_progress_locked(void) {
        if (is_tty && progress_shown) {
                printf("\r\033[K");
                progress_shown = 0;
        }
}

static void redraw_progress_locked(void) {
        if (is_tty && producer) {
                progress_line_locked();
                progress_shown = 1;
        }
        fflush(stdout);
}

static void announce(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void announce(const char *fmt, ...) {
        va_list ap;
        pthread_mutex_lock(&out_lock);
        clear_progress_locked();
        printf("[%5.1fs] >>> ", now_s() - t_start);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        redraw_progress_locked();
        pthread_mutex_unlock(&out_lock);
}

static void *progress_main(void *arg) {
        (void)arg;
        unsigned long last = 0;
        double last_t = now_s(), next_plain = now_s() + 2;
        while (atomic_load(&cnt.stop_producing) != 2) {
                sleep_ms(250);
                double t = now_s();
                unsigned long d = atomic_load(&cnt.delivered);
                if (t - last_t >= 1.0) {
                        last_rate = (double)(d - last) / (t - last_t);
                        last = d;
                        last_t = t;
                }
                pthread_mutex_lock(&out_lock);
                if (is_tty) {
                        clear_progress_locked();
                        redraw_progress_locked();
                } else if (t >= next_plain) {
                        progress_line_locked();
                        printf("\n");
                        fflush(stdout);
                        next_plain = t + 2;
                }
                pthread_mutex_unlock(&out_lock);
        }
        return NULL;
}

/* ------------------------------------------------------------ callbacks */

static void on_delivery(const rbk_delivery_t *dr, void *opaque) {
        (void)opaque;
        if (dr->resent)
                atomic_fetch_add(&cnt.resent, 1);
        if (dr->err != RBK_OK) {
                unsigned long f = atomic_fetch_add(&cnt.failed, 1);
                if (f < 5)
                        announce("delivery of %s failed: %s (%s)",
                                 dr->id ? dr->id : "-", rbk_err2name(dr->err),
                                 dr->reason);
                return;
        }
        atomic_fetch_add(&cnt.delivered, 1);
        if (!dr->id)
                return;
        /* n, and where the broker said it wrote the message. */
        char nbuf[64];
        snprintf(nbuf, sizeof(nbuf), "%" PRIuPTR " %" PRId32 ":%" PRId64,
                 (uintptr_t)dr->msg_opaque, dr->partition, dr->offset);
        pthread_mutex_lock(&state.lock);
        entry_t *e = map_add(&state.acked, dr->id);
        if (!e->val)
                e->val = strdup(nbuf);
        pthread_mutex_unlock(&state.lock);
}

/* The hook of the producer and the main consumer: counts what the director
 * waits for, then shows the event through page_hook(). */
static void on_event(const rbk_event_t *ev, void *opaque) {
        (void)opaque;
        switch (ev->cls) {
        case RBK_EV_FATAL_RECOVERED:
                atomic_fetch_add(&cnt.fatal_recovered, 1);
                break;
        case RBK_EV_OFFSET_OUT_OF_RANGE:
                atomic_fetch_add(&cnt.quarantine_events, 1);
                break;
        case RBK_EV_QUARANTINE_RESOLVED:
                atomic_fetch_add(&cnt.resolved_events, 1);
                if (ev->partition >= 0 && ev->partition < DEMO_MAX_PARTITIONS) {
                        pthread_mutex_lock(&state.lock);
                        state.resolved[ev->partition] = 1;
                        pthread_mutex_unlock(&state.lock);
                }
                break;
        default:
                break;
        }
        pthread_mutex_lock(&out_lock);
        clear_progress_locked();
        if (ev->severity == RBK_SEV_INFO &&
            ev->cls != RBK_EV_QUARANTINE_RESOLVED) {
                /* For the record only: one short line instead of JSON. */
                printf("  hook: info %s: %.160s%s\n",
                       rbk_event_class_name(ev->cls), ev->message,
                       strlen(ev->message) > 160 ? "..." : "");
        } else {
                fflush(stdout);
                fprintf(stderr, "  hook: ");
                page_hook(ev, NULL);
                fflush(stderr);
        }
        redraw_progress_locked();
        pthread_mutex_unlock(&out_lock);
}

static void on_quiet_event(const rbk_event_t *ev, void *opaque) {
        (void)ev;
        (void)opaque;
}

static void on_log(int level, const char *fac, const char *line, void *opaque) {
        (void)opaque;
        /* Events are logged too; the hook already shows them. */
        if (!strcmp(fac, "EVENT"))
                return;
        if (level > 3 && !verbose) {
                atomic_fetch_add(&cnt.log_suppressed, 1);
                return;
        }
        pthread_mutex_lock(&out_lock);
        clear_progress_locked();
        printf("  log %d %s: %s\n", level, fac, line);
        redraw_progress_locked();
        pthread_mutex_unlock(&out_lock);
}

static void on_rebalance(rbk_rebalance_t what, const char *t, int32_t p,
                         void *opaque) {
        (void)what;
        (void)t;
        (void)opaque;
        if (p < 0 || p >= DEMO_MAX_PARTITIONS)
                return;
        pthread_mutex_lock(&state.lock);
        state.reassigned[p] = 1;
        pthread_mutex_unlock(&state.lock);
}

/* The key of a message in the id sets: its id, or its position if it has
 * none (messages not produced by librobustkafka). */
static const char *msg_key(const rbk_message_t *m, char *buf, size_t size) {
        if (m->id)
                return m->id;
        snprintf(buf, size, "@%" PRId32 ":%" PRId64, m->partition, m->offset);
        return buf;
}

static int ours(const rbk_message_t *m) {
        return m->value_len >= 29 &&
               !memcmp((const char *)m->value + 13, run_id, 16);
}

/* The main consumer's handler: records the id and watches the offsets for
 * jumps. */
static rbk_verdict_t handle(const rbk_message_t *m, void *opaque) {
        (void)opaque;
        char buf[64];
        const char *key = msg_key(m, buf, sizeof(buf));
        int32_t p = m->partition;
        pthread_mutex_lock(&state.lock);
        if (map_add(&state.handled, key)->count > 1)
                state.passed_duplicates++;
        else if (ours(m))
                state.consumed_ours++;
        else
                state.foreign++;
        if (p >= 0 && p < DEMO_MAX_PARTITIONS) {
                int64_t next = state.next_off[p];
                if (next >= 0 && m->offset > next) {
                        if (state.ngaps == state.gaps_cap) {
                                state.gaps_cap = state.gaps_cap ? state.gaps_cap * 2 : 64;
                                state.gaps = realloc(state.gaps, state.gaps_cap * sizeof(gap_t));
                                if (!state.gaps) {
                                        fprintf(stderr, "demo: out of memory\n");
                                        exit(2);
                                }
                        }
                        state.gaps[state.ngaps++] =
                                (gap_t){p, next, m->offset, state.resolved[p]};
                } else if (next >= 0 && m->offset < next &&
                           !state.resolved[p] && !state.reassigned[p]) {
                        /* Went back without a rebalance or a resolution. */
                        state.unexplained_rewinds++;
                }
                state.next_off[p] = m->offset + 1;
                if (m->offset > state.max_off[p])
                        state.max_off[p] = m->offset;
                state.resolved[p] = state.reassigned[p] = 0;
        }
        pthread_mutex_unlock(&state.lock);
        atomic_fetch_add(&cnt.consumed, 1);
        return RBK_HANDLED;
}

/* The verifying reader (de-duplication off): records what is at each
 * offset of the log. */
static rbk_verdict_t verify(const rbk_message_t *m, void *opaque) {
        (void)opaque;
        char buf[64], pos[48];
        const char *key = msg_key(m, buf, sizeof(buf));
        snprintf(pos, sizeof(pos), "%" PRId32 ":%" PRId64, m->partition,
                 m->offset);
        pthread_mutex_lock(&state.lock);
        entry_t *e = map_add(&state.log, pos);
        if (!e->val)
                e->val = strdup(key);
        if (m->partition >= 0 && m->partition < DEMO_MAX_PARTITIONS &&
            m->offset > state.vmax_off[m->partition])
                state.vmax_off[m->partition] = m->offset;
        pthread_mutex_unlock(&state.lock);
        atomic_fetch_add(&cnt.verified, 1);
        return RBK_HANDLED;
}

/* ------------------------------------------------------------ producer */

static void *producer_main(void *arg) {
        (void)arg;
        char errstr[512], key[16], value[96];
        double start = now_s();
        uint64_t n = 0, sent_since = 0;
        while (!atomic_load(&cnt.stop_producing)) {
                n++;
                snprintf(key, sizeof(key), "k%" PRIu64, n % 64);
                int vlen = snprintf(value, sizeof(value),
                                    "rbk-demo run=%s n=%" PRIu64, run_id, n);
                rbk_msg_t m = RBK_MSG_INIT;
                m.topic = topic;
                m.key = key;
                m.key_len = strlen(key);
                m.value = value;
                m.value_len = (size_t)vlen;
                m.opaque = (void *)(uintptr_t)n;
                rbk_err_t err = rbk_producer_send(producer, &m, errstr,
                                                  sizeof(errstr));
                if (err == RBK_OK) {
                        atomic_fetch_add(&cnt.produced, 1);
                } else {
                        n--;
                        announce("send: %s: %s", rbk_err2name(err), errstr);
                        if (rbk_err_is_fatal(err))
                                break;
                        sleep_ms(200);
                        continue;
                }
                /* Pace to DEMO_RATE; after a stall, resume the rate
                 * instead of bursting to catch up. */
                sent_since++;
                double due = start + (double)sent_since / DEMO_RATE;
                double ahead = due - now_s();
                if (ahead > 0.002)
                        sleep_ms((long)(ahead * 1000));
                else if (ahead < -1.0) {
                        start = now_s();
                        sent_since = 0;
                }
        }
        return NULL;
}

/* ------------------------------------------------------------ director */

typedef int (*cond_fn)(void *);

static int wait_for(cond_fn fn, void *arg, int timeout_ms) {
        double deadline = now_s() + timeout_ms / 1000.0;
        while (!fn(arg)) {
                if (now_s() >= deadline)
                        return 0;
                sleep_ms(50);
        }
        return 1;
}

static int consumed_at_least(void *arg) {
        return atomic_load(&cnt.consumed) >= *(unsigned long *)arg;
}

static int counter_at_least(void *arg) {
        void **a = arg;
        return atomic_load((atomic_ulong *)a[0]) >= *(unsigned long *)a[1];
}

static int quarantined(void *arg) {
        (void)arg;
        return rbk_consumer_quarantined(consumer, NULL, 0) > 0;
}

/* The consumer read the log again after at least *arg out-of-range
 * reports and found the offsets there (or quarantined the partition). */
static int disproved_at_least(void *arg) {
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        if (rbk_consumer_stats(consumer, &st) != RBK_OK)
                return 0;
        return st.out_of_range_disproved >= *(uint64_t *)arg ||
               rbk_consumer_quarantined(consumer, NULL, 0) > 0;
}

static int not_quarantined(void *arg) {
        (void)arg;
        return rbk_consumer_quarantined(consumer, NULL, 0) == 0;
}

static int all_acked_handled(void *arg) {
        (void)arg;
        int all = 1;
        pthread_mutex_lock(&state.lock);
        for (size_t i = 0; i < state.acked.cap && all; i++)
                if (state.acked.e[i].key &&
                    !map_find(&state.handled, state.acked.e[i].key))
                        all = 0;
        pthread_mutex_unlock(&state.lock);
        return all;
}

static int verifier_caught_up(void *arg) {
        (void)arg;
        int done = 1;
        pthread_mutex_lock(&state.lock);
        for (int p = 0; p < DEMO_MAX_PARTITIONS && done; p++)
                if (state.max_off[p] >= 0 && state.vmax_off[p] < state.max_off[p])
                        done = 0;
        pthread_mutex_unlock(&state.lock);
        return done;
}

/* Waits until the main consumer has consumed `more` messages more. */
static int flowing(unsigned long more, int timeout_ms) {
        unsigned long target = atomic_load(&cnt.consumed) + more;
        return wait_for(consumed_at_least, &target, timeout_ms);
}

static int wait_counter(atomic_ulong *c, unsigned long target, int timeout_ms) {
        void *a[2] = {c, &target};
        return wait_for(counter_at_least, a, timeout_ms);
}

static rbk_conf_t *base_conf(const char *bootstrap, const char *client,
                             char *errstr, size_t errstr_size) {
        rbk_conf_t *conf;
        if (!bootstrap) {
                conf = rbk_conf_from_env(NULL, errstr, errstr_size);
        } else {
                conf = rbk_conf_new();
                if (conf && rbk_conf_set(conf, "bootstrap.servers", bootstrap,
                                         errstr, errstr_size) != RBK_OK) {
                        rbk_conf_destroy(conf);
                        return NULL;
                }
        }
        if (!conf)
                return NULL;
        if (rbk_conf_set(conf, "rbk.client.name", client, errstr,
                         errstr_size) != RBK_OK ||
            rbk_conf_set(conf, "rbk.shutdown.timeout.ms", "5000", errstr,
                         errstr_size) != RBK_OK) {
                rbk_conf_destroy(conf);
                return NULL;
        }
        rbk_conf_set_log_cb(conf, on_log, NULL);
        return conf;
}

static rbk_consumer_t *start_consumer(const char *bootstrap, const char *group,
                                      int main_consumer, char *errstr,
                                      size_t errstr_size) {
        rbk_conf_t *conf = base_conf(bootstrap,
                                     main_consumer ? "demo-consumer"
                                                   : "demo-verifier",
                                     errstr, errstr_size);
        if (!conf)
                return NULL;
        rbk_consumer_t *c = NULL;
        if (rbk_conf_set(conf, "group.id", group, errstr, errstr_size) ==
                    RBK_OK &&
            rbk_conf_set(conf, "session.timeout.ms", "6000", errstr,
                         errstr_size) == RBK_OK &&
            rbk_conf_set(conf, "auto.commit.interval.ms", "1000", errstr,
                         errstr_size) == RBK_OK &&
            (main_consumer ||
             rbk_conf_set(conf, "rbk.dedup.enable", "false", errstr,
                          errstr_size) == RBK_OK)) {
                rbk_conf_set_hook(conf, main_consumer ? on_event
                                                      : on_quiet_event,
                                  NULL);
                if (main_consumer)
                        rbk_conf_set_rebalance_cb(conf, on_rebalance, NULL);
                c = rbk_consumer_new(conf, errstr, errstr_size);
        }
        rbk_conf_destroy(conf);
        const char *topics[1] = {topic};
        if (c && (rbk_consumer_subscribe(c, topics, 1, errstr, errstr_size) !=
                          RBK_OK ||
                  rbk_consumer_start(c, main_consumer ? handle : verify,
                                     NULL) != RBK_OK)) {
                rbk_consumer_destroy(c);
                c = NULL;
        }
        return c;
}

/* The operator tool next to the demo: build/bin/rbk-admin for
 * build/examples/demo, or $RBK_ADMIN. */
static int find_admin(char *buf, size_t size) {
        const char *env = getenv("RBK_ADMIN");
        if (env && *env) {
                snprintf(buf, size, "%s", env);
                return access(buf, X_OK) == 0;
        }
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return 0;
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (!slash)
                return 0;
        *slash = '\0';
        if ((size_t)snprintf(buf, size, "%.4000s/../bin/rbk-admin", exe) >=
            size)
                return 0;
        return access(buf, X_OK) == 0;
}

/* Appends 'arg' to cmd, single-quoted for /bin/sh. */
static void sh_quote(char *cmd, size_t size, const char *arg) {
        size_t len = strlen(cmd);
        if (len + 2 < size)
                cmd[len++] = ' ', cmd[len++] = '\'';
        for (; *arg && len + 5 < size; arg++) {
                if (*arg == '\'') {
                        memcpy(cmd + len, "'\\''", 4);
                        len += 4;
                } else {
                        cmd[len++] = *arg;
                }
        }
        if (len + 1 < size)
                cmd[len++] = '\'';
        cmd[len] = '\0';
}

/* Resolves one quarantine the way an operator does: `rbk-admin resolve
 * GROUP TOPIC PARTITION CHOICE --yes`, a separate process, which sends the
 * decision to this consumer over the control topic. Returns its exit
 * status, or -1 if it could not be run. */
static int admin_resolve(const char *admin, const char *bootstrap,
                         const char *group, const rbk_quarantine_t *q,
                         const char *how) {
        char cmd[8192] = "", part[16];
        snprintf(part, sizeof(part), "%" PRId32, q->partition);
        sh_quote(cmd, sizeof(cmd), admin);
        if (bootstrap) {
                sh_quote(cmd, sizeof(cmd), "--bootstrap");
                sh_quote(cmd, sizeof(cmd), bootstrap);
        }
        const char *args[] = {"resolve", group, q->topic, part, how, "--yes",
                              "--timeout", "20"};
        for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
                sh_quote(cmd, sizeof(cmd), args[i]);
        announce("operator: rbk-admin%s%s resolve %s %s %s %s --yes "
                 "--timeout 20", bootstrap ? " --bootstrap " : "",
                 bootstrap ? bootstrap : "", group, q->topic, part, how);
        strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
        FILE *f = popen(cmd, "r");
        if (!f)
                return -1;
        char line[1024];
        while (fgets(line, sizeof(line), f)) {
                pthread_mutex_lock(&out_lock);
                clear_progress_locked();
                printf("  rbk-admin: %s%s", line,
                       strchr(line, '\n') ? "" : "\n");
                redraw_progress_locked();
                pthread_mutex_unlock(&out_lock);
        }
        int st = pclose(f);
        return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Resolves every quarantined partition: back to the committed offset by
 * default (no message skipped; the replayed ones are dropped as
 * duplicates), with rbk-admin when it is built, else through the API. */
static void resolve_quarantines(const char *bootstrap, const char *group) {
        rbk_quarantine_t q[16];
        const char *how_name = getenv("RBK_DEMO_RESOLVE");
        rbk_resolve_t how = RBK_RESOLVE_COMMITTED;
        if (!how_name || !*how_name)
                how_name = "committed";
        else if (!strcmp(how_name, "earliest"))
                how = RBK_RESOLVE_EARLIEST;
        else if (!strcmp(how_name, "latest"))
                how = RBK_RESOLVE_LATEST;
        else
                how_name = "committed";
        char admin[4096];
        int have_admin = find_admin(admin, sizeof(admin));
        size_t n = rbk_consumer_quarantined(consumer, q, 16);
        for (size_t i = 0; i < n && i < 16; i++) {
                char errstr[512];
                announce("operator: resolve %s [%" PRId32 "] (failed offset %"
                         PRId64 ", committed %" PRId64 ", log %" PRId64
                         "..%" PRId64 ") to %s", q[i].topic, q[i].partition,
                         q[i].failed_offset, q[i].committed_offset,
                         q[i].low_watermark, q[i].high_watermark, how_name);
                if (q[i].partition >= 0 &&
                    q[i].partition < DEMO_MAX_PARTITIONS) {
                        pthread_mutex_lock(&state.lock);
                        state.resolved[q[i].partition] = 1;
                        pthread_mutex_unlock(&state.lock);
                }
                if (have_admin) {
                        int rc = admin_resolve(admin, bootstrap, group, &q[i],
                                               how_name);
                        if (rc == 0)
                                continue;
                        announce("rbk-admin exited with %d; resolving "
                                 "through the API instead", rc);
                } else {
                        announce("rbk-admin not built (make tools): "
                                 "rbk_consumer_resolve()");
                }
                rbk_err_t err = rbk_consumer_resolve(
                        consumer, q[i].topic, q[i].partition, how, 0, errstr,
                        sizeof(errstr));
                if (err != RBK_OK)
                        announce("resolve failed: %s: %s", rbk_err2name(err),
                                 errstr);
        }
}

/* The fault schedule, on the embedded cluster. */
static void play_faults(rbk_testcluster_t *tc, const char *bootstrap,
                        const char *group) {
        int np = DEMO_PARTITIONS;

        /* 1. Leader election. */
        announce("leader election: partition leaders move (0,3: 1->2; 1,4: "
                 "2->3; 2,5: 3->1)");
        for (int p = 0; p < np; p++)
                rbk_testcluster_set_leader(tc, topic, p, (p % 3 + 1) % 3 + 1);
        if (flowing(400, 10000))
                announce("leader election: messages kept flowing");
        else
                announce("WARNING: no progress within 10 s of the election");

        /* 2. A broker down and back. Broker 3 leads partitions 1 and 4; a
         * real controller would move them, the mock needs us to. */
        announce("broker 3 down; its partitions 1 and 4 fail over to broker 2");
        rbk_testcluster_broker_down(tc, 3);
        rbk_testcluster_set_leader(tc, topic, 1, 2);
        rbk_testcluster_set_leader(tc, topic, 4, 2);
        flowing(600, 10000);
        announce("broker 3 back up; preferred leaders restored");
        rbk_testcluster_broker_up(tc, 3);
        rbk_testcluster_set_leader(tc, topic, 1, 3);
        rbk_testcluster_set_leader(tc, topic, 4, 3);
        flowing(400, 10000);

        /* 3. A fatal idempotent-producer error. */
        unsigned long fr = atomic_load(&cnt.fatal_recovered);
        announce("fatal producer error: the broker answers "
                 "OUT_OF_ORDER_SEQUENCE_NUMBER");
        rbk_testcluster_push_produce_errors(tc, 1,
                                            KAFKA_OUT_OF_ORDER_SEQUENCE_NUMBER);
        if (!wait_counter(&cnt.fatal_recovered, fr + 1, 6000)) {
                /* The pushed error may not be fatal on every librdkafka
                 * path; raise one directly. */
                rbk_testcluster_clear_request_errors(tc, RBK_TEST_API_PRODUCE);
                announce("fatal producer error: raised on the producer "
                         "instance (rbk_testing_fatal_error)");
                rbk_testing_fatal_error(producer,
                                        KAFKA_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                        "demo: injected fatal error");
                wait_counter(&cnt.fatal_recovered, fr + 1, 10000);
        }
        if (atomic_load(&cnt.fatal_recovered) > fr)
                announce("fatal producer error: recovered with a fresh "
                         "instance (%lu re-sent so far)",
                         atomic_load(&cnt.resent));
        else
                announce("WARNING: no fatal-error recovery reported");
        flowing(400, 10000);

        /* 4. A burst of duplicates. */
        announce("duplicates: broker 1 holds its next produce response for "
                 "1.5 s (messages pile up), then delays the next 2 by 3.5 s "
                 "(socket.timeout.ms=2000): the producer retries the big "
                 "batch, the mock writes it again");
        rbk_testcluster_delay_produce(tc, 1, 1500, 1);
        rbk_testcluster_delay_produce(tc, 1, 3500, 2);
        sleep_ms(6000);
        flowing(400, 10000);
        rbk_consumer_stats_t cs = RBK_CONSUMER_STATS_INIT;
        memset(&cs, 0, sizeof(cs));
        rbk_consumer_stats(consumer, &cs);
        announce("duplicates: %" PRIu64 " dropped by the consumer so far",
                 cs.duplicates_dropped);

        /* 5. Offset out of range on partition 5 alone: give broker 1 no
         * other partition, then make its next Fetch fail. The offset is in
         * the log, so the consumer's second look (2 s later) finds it
         * there and resumes in place; a broker that keeps answering so is
         * paged at the fourth report in ten minutes. */
        announce("offset out of range: partition 5 alone on broker 1, whose "
                 "next fetch answers OFFSET_OUT_OF_RANGE for an offset the "
                 "log holds");
        for (int p = 0; p < np; p++)
                rbk_testcluster_set_leader(tc, topic, p, p == 5 ? 1 : p % 2 + 2);
        flowing(400, 10000);
        sleep_ms(1000);
        for (uint64_t k = 1; k <= 4; k++) {
                rbk_testcluster_broker_push_request_errors(
                        tc, 1, RBK_TEST_API_FETCH, 1, KAFKA_OFFSET_OUT_OF_RANGE,
                        0);
                if (!wait_for(disproved_at_least, &k, 15000) ||
                    rbk_consumer_quarantined(consumer, NULL, 0) > 0)
                        break;
                if (k == 1)
                        announce("read again: the log holds the offset, so "
                                 "partition 5 resumed where it was, nothing "
                                 "skipped and nobody paged; now broker 1 "
                                 "keeps answering so");
                flowing(200, 10000); /* partition 5 is fetched again */
        }
        if (!wait_for(quarantined, NULL, 15000)) {
                announce("WARNING: no partition was quarantined");
                return;
        }
        unsigned long before = atomic_load(&cnt.consumed);
        sleep_ms(2000);
        announce("quarantined; the other partitions kept flowing: %lu "
                 "messages consumed in 2 s",
                 atomic_load(&cnt.consumed) - before);

        /* 6. The operator resolves it. */
        resolve_quarantines(bootstrap, group);
        if (wait_for(not_quarantined, NULL, 10000))
                announce("quarantine resolved; partition 5 flows again");
        else
                announce("WARNING: still quarantined 10 s after the "
                         "resolution");
        flowing(400, 10000);
}

/* ------------------------------------------------------------ cluster only */

static int cluster_only(int argc, char **argv) {
        int partitions = DEMO_PARTITIONS;
        char errstr[512];
        for (int i = 2; i < argc; i++) {
                if (!strcmp(argv[i], "--topic") && i + 1 < argc)
                        topic = argv[++i];
                else if (!strcmp(argv[i], "--partitions") && i + 1 < argc)
                        partitions = atoi(argv[++i]);
                else {
                        fprintf(stderr, "usage: demo --cluster-only [--topic T]"
                                " [--partitions N]\n");
                        return 2;
                }
        }
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the brokers */
        rbk_testcluster_t *tc = rbk_testcluster_new(3, errstr, sizeof(errstr));
        if (!tc) {
                fprintf(stderr, "demo: %s\n", errstr);
                return 2;
        }
        if (rbk_testcluster_create_topic(tc, topic, partitions, 3) != RBK_OK) {
                fprintf(stderr, "demo: cannot create topic %s\n", topic);
                rbk_testcluster_destroy(tc);
                return 2;
        }
        printf("bootstrap.servers=%s\n", rbk_testcluster_bootstrap(tc));
        fflush(stdout);
        int sig;
        sigwait(&set, &sig);
        rbk_testcluster_destroy(tc);
        return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
        char errstr[512], group[96], vgroup[96];
        rbk_testcluster_t *tc = NULL;
        const char *bootstrap = NULL;

        if (argc >= 2 && !strcmp(argv[1], "--cluster-only"))
                return cluster_only(argc, argv);
        if (argc > 1) {
                fprintf(stderr, "usage: %s [--cluster-only [--topic T] "
                        "[--partitions N]]\n", argv[0]);
                return 2;
        }

        t_start = now_s();
        is_tty = isatty(STDOUT_FILENO);
        verbose = getenv("RBK_DEMO_VERBOSE") != NULL;
        if (getenv("RBK_DEMO_TOPIC"))
                topic = getenv("RBK_DEMO_TOPIC");
        for (size_t i = 0; i < DEMO_MAX_PARTITIONS; i++)
                state.next_off[i] = state.max_off[i] = state.vmax_off[i] = -1;
        srand((unsigned)time(NULL) ^ (unsigned)getpid());
        snprintf(run_id, sizeof(run_id), "%08x%08x", (unsigned)rand(),
                 (unsigned)rand());
        snprintf(group, sizeof(group), "rbk-demo-%s", run_id);
        snprintf(vgroup, sizeof(vgroup), "rbk-demo-verify-%s", run_id);
        /* What the hook runs to page (set before any thread starts). */
        if (!getenv("RBK_PAGE_COMMAND"))
                setenv("RBK_PAGE_COMMAND",
                       is_tty ? "printf '\\r\\033[K  page: %s %s incident=%s "
                                "topic=%s partition=%s\\n' "
                                "\"$RBK_EVENT_SEVERITY\" \"$RBK_EVENT_CLASS\" "
                                "\"$RBK_INCIDENT_KEY\" \"$RBK_TOPIC\" "
                                "\"$RBK_PARTITION\""
                              : "echo \"  page: $RBK_EVENT_SEVERITY "
                                "$RBK_EVENT_CLASS incident=$RBK_INCIDENT_KEY "
                                "topic=$RBK_TOPIC partition=$RBK_PARTITION\"",
                       1);

        const char *url = getenv("KAFKA_URL");
        if (url && *url) {
                printf("demo: KAFKA_URL is set: a plain robust pipeline on "
                       "that cluster, no faults injected; topic %s\n", topic);
        } else {
                tc = rbk_testcluster_new(3, errstr, sizeof(errstr));
                if (!tc || rbk_testcluster_create_topic(tc, topic,
                                                        DEMO_PARTITIONS, 3) !=
                                   RBK_OK) {
                        fprintf(stderr, "demo: cannot start the embedded "
                                "cluster: %s\n", tc ? "topic creation failed"
                                                    : errstr);
                        rbk_testcluster_destroy(tc);
                        return 2;
                }
                bootstrap = rbk_testcluster_bootstrap(tc);
                for (int p = 0; p < DEMO_PARTITIONS; p++) {
                        rbk_testcluster_set_leader(tc, topic, p, p % 3 + 1);
                        /* Consumed from the log start: an offset jump
                         * before the first message is caught too. */
                        state.next_off[p] = 0;
                }
                /* The operator command topic (rbk-admin), away from the
                 * brokers that fail. */
                rbk_testcluster_create_topic(tc, "rbk-control", 1, 3);
                rbk_testcluster_set_leader(tc, "rbk-control", 0, 2);
                /* Broker 2 never goes down: it coordinates the groups. */
                rbk_testcluster_set_coordinator(tc, "group", group, 2);
                rbk_testcluster_set_coordinator(tc, "group", vgroup, 2);
                printf("demo: embedded 3-broker cluster at %s; topic %s, %d "
                       "partitions, replication 3\n", bootstrap, topic,
                       DEMO_PARTITIONS);
        }

        /* The producer. */
        rbk_conf_t *pconf = base_conf(bootstrap, "demo-producer", errstr,
                                      sizeof(errstr));
        /* On the embedded cluster, one request in flight per connection:
         * the mock checks no sequence numbers for idempotent producers, so
         * with several in flight a leader move can make it refuse one
         * request and append a later one, which a real broker refuses
         * (OUT_OF_ORDER_SEQUENCE_NUMBER); librdkafka then reports the
         * refused messages delivered although the mock never wrote them.
         * Against a real cluster the library's default (5) stays. */
        if (pconf && tc &&
            (rbk_conf_set(pconf, "socket.timeout.ms", "2000", errstr,
                          sizeof(errstr)) != RBK_OK ||
             rbk_conf_set(pconf, "max.in.flight.requests.per.connection", "1",
                          errstr, sizeof(errstr)) != RBK_OK)) {
                rbk_conf_destroy(pconf);
                pconf = NULL;
        }
        if (pconf) {
                rbk_conf_set(pconf, "rbk.metadata.warm.topics", topic, NULL, 0);
                rbk_conf_set_delivery_cb(pconf, on_delivery, NULL);
                rbk_conf_set_hook(pconf, on_event, NULL);
                producer = rbk_producer_new(pconf, errstr, sizeof(errstr));
                rbk_conf_destroy(pconf);
        }
        if (!producer) {
                fprintf(stderr, "demo: producer: %s\n", errstr);
                rbk_testcluster_destroy(tc);
                return 2;
        }
        consumer = start_consumer(bootstrap, group, 1, errstr, sizeof(errstr));
        if (!consumer) {
                fprintf(stderr, "demo: consumer: %s\n", errstr);
                rbk_producer_destroy(producer);
                rbk_testcluster_destroy(tc);
                return 2;
        }
        printf("demo: producing %d msg/s; consumer group %s joining\n",
               DEMO_RATE, group);
        fflush(stdout);

        pthread_t prod_thread, prog_thread;
        pthread_create(&prod_thread, NULL, producer_main, NULL);
        pthread_create(&prog_thread, NULL, progress_main, NULL);

        unsigned long one = 1;
        if (!wait_for(consumed_at_least, &one, DEMO_GROUP_WAIT_MS))
                announce("WARNING: nothing consumed after %d s",
                         DEMO_GROUP_WAIT_MS / 1000);
        else
                announce("consumer joined; messages flowing");

        if (tc) {
                flowing(400, 10000);
                play_faults(tc, bootstrap, group);
        } else {
                int secs = getenv("RBK_DEMO_SECONDS")
                                   ? atoi(getenv("RBK_DEMO_SECONDS"))
                                   : 15;
                sleep_ms(secs * 1000L);
        }

        /* Stop producing; the verifying reader joins meanwhile. */
        announce("stop producing; flushing, then waiting for the consumer "
                 "to catch up");
        atomic_store(&cnt.stop_producing, 1);
        pthread_join(prod_thread, NULL);
        verifier = start_consumer(bootstrap, vgroup, 0, errstr, sizeof(errstr));
        if (!verifier)
                announce("WARNING: verifying reader: %s", errstr);
        if (rbk_producer_flush(producer, 20000) != RBK_OK)
                announce("WARNING: messages still in flight after 20 s");
        if (!wait_for(all_acked_handled, NULL, DEMO_DRAIN_MS))
                announce("WARNING: acknowledged messages still unconsumed "
                         "after %d s", DEMO_DRAIN_MS / 1000);
        int verified = verifier && wait_for(verifier_caught_up, NULL, 20000);
        if (verifier && !verified)
                announce("WARNING: the verifying reader did not reach the end "
                         "of the log");
        atomic_store(&cnt.stop_producing, 2);
        pthread_join(prog_thread, NULL);
        pthread_mutex_lock(&out_lock);
        clear_progress_locked();
        pthread_mutex_unlock(&out_lock);

        rbk_consumer_stats_t cs = RBK_CONSUMER_STATS_INIT;
        memset(&cs, 0, sizeof(cs));
        rbk_consumer_stats(consumer, &cs);
        rbk_consumer_stop(verifier);
        rbk_consumer_stop(consumer);
        if (verifier)
                rbk_consumer_close(verifier, 5000);
        rbk_consumer_close(consumer, 5000);
        rbk_producer_close(producer, 5000);

        /* The verdict, from the id sets. */
        unsigned long lost = 0, auto_resets = 0, log_dups = 0;
        pthread_mutex_lock(&state.lock);
        for (size_t i = 0; i < state.acked.cap; i++) {
                entry_t *e = &state.acked.e[i];
                if (e->key && !map_find(&state.handled, e->key) &&
                    lost++ < 10) {
                        /* val: "n partition:offset" of the report. */
                        const char *pos = e->val ? strchr(e->val, ' ') : NULL;
                        entry_t *at = pos ? map_find(&state.log, pos + 1)
                                          : NULL;
                        printf("demo: LOST: id %s (n=%.*s), acknowledged at "
                               "%s; the log holds %s there\n", e->key,
                               pos ? (int)(pos - e->val) : 1,
                               e->val ? e->val : "?", pos ? pos + 1 : "?",
                               at ? at->val : "nothing");
                }
        }
        /* Every offset the handler did not see must hold a copy of a
         * message it did see; otherwise the position jumped. */
        for (size_t g = 0; g < state.ngaps; g++) {
                gap_t *gp = &state.gaps[g];
                for (int64_t o = gp->from; o < gp->to && !gp->resolved; o++) {
                        char pos[48];
                        snprintf(pos, sizeof(pos), "%" PRId32 ":%" PRId64,
                                 gp->p, o);
                        entry_t *e = map_find(&state.log, pos);
                        if (!e || !map_find(&state.handled, e->val)) {
                                printf("demo: OFFSET JUMP: partition %" PRId32
                                       " %" PRId64 " -> %" PRId64
                                       " skipped %s\n", gp->p, gp->from,
                                       gp->to, e ? e->val : "(unread offset)");
                                auto_resets++;
                                break;
                        }
                }
        }
        auto_resets += state.unexplained_rewinds;
        strmap_t ids = {0};
        for (size_t i = 0; i < state.log.cap; i++)
                if (state.log.e[i].key && map_add(&ids, state.log.e[i].val)->count > 1)
                        log_dups++;
        map_free(&ids);
        unsigned long consumed = state.consumed_ours;
        unsigned long passed = state.passed_duplicates;
        unsigned long foreign = state.foreign;
        pthread_mutex_unlock(&state.lock);

        int had_verifier = verifier != NULL;
        rbk_consumer_destroy(verifier);
        rbk_consumer_destroy(consumer);
        rbk_producer_destroy(producer);
        rbk_testcluster_destroy(tc);

        printf("demo: the log holds %lu duplicate copies (by id); the consumer "
               "dropped %" PRIu64 ", %lu reached the handler%s\n",
               log_dups, cs.duplicates_dropped, passed,
               passed ? " (an idempotent handler absorbs them: "
                        "examples/upsert_consumer.c)" : "");
        if (foreign)
                printf("demo: %lu messages of earlier runs or other producers "
                       "read and ignored\n", foreign);
        if (atomic_load(&cnt.failed))
                printf("demo: %lu messages failed delivery (reported to the "
                       "delivery callback; not acknowledged, so not lost)\n",
                       atomic_load(&cnt.failed));
        if (atomic_load(&cnt.log_suppressed))
                printf("demo: %lu library log lines below error level hidden "
                       "(RBK_DEMO_VERBOSE=1 shows them)\n",
                       atomic_load(&cnt.log_suppressed));
        printf("demo: produced=%lu delivered=%lu consumed=%lu "
               "duplicates_dropped=%" PRIu64 " lost=%lu auto_resets=%lu "
               "quarantines=%" PRIu64 " fatal_recoveries=%lu\n",
               atomic_load(&cnt.produced), atomic_load(&cnt.delivered),
               consumed, cs.duplicates_dropped, lost, auto_resets,
               cs.quarantines, atomic_load(&cnt.fatal_recovered));
        /* A verdict needs readers that read: a consumer or verifying reader
         * that was never assigned its partitions proves nothing. */
        int blind = 0;
        if (atomic_load(&cnt.delivered) > 0 && consumed == 0) {
                printf("demo: FAILED: the consumer handled nothing (were its "
                       "partitions ever assigned?)\n");
                blind = 1;
        }
        if (atomic_load(&cnt.delivered) > 0 &&
            (!had_verifier || atomic_load(&cnt.verified) == 0)) {
                printf("demo: FAILED: the verifying reader read nothing, so "
                       "no message can be checked against the log\n");
                blind = 1;
        }
        map_free(&state.acked);
        map_free(&state.handled);
        map_free(&state.log);
        free(state.gaps);
        return lost || auto_resets || blind ? 1 : 0;
}
