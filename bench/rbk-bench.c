/* rbk-bench: the library's cost against raw librdkafka doing the same work,
 * measured side by side in the same run (docs/performance.md).
 *
 *   rbk-bench run --bootstrap=HOST:PORT,... [--out=DIR] [--quick] [--label=mock]
 *       the driver: every benchmark below, each arm in a child process of
 *       its own, arms of one round in random order; writes DIR/results.md,
 *       DIR/runs.csv, DIR/ratios.dat, DIR/chart.gp and prints the summary
 *       line "bench: ...".
 *
 * The arms (child commands, one result line "RESULT key=value ..." each):
 *
 *   produce raw|raw_nohdr|ours   N messages as fast as the queue takes them,
 *       to the last delivery report. raw: librdkafka with the configuration
 *       the library would use (rbk__conf_build: idempotence, acks=all,
 *       linger, batching, partitioner), a delivery-report callback served by
 *       a poll thread, the `rbk-id` header formatted like the library's;
 *       raw_nohdr: the same without the header; ours: rbk_producer_send().
 *   consume raw|raw_id|ours_off|ours_on   every message of the pre-filled
 *       topic: raw: an rd_kafka_consumer_poll() loop storing offset+1 with
 *       rd_kafka_offsets_store() after the handler (auto commit), the same
 *       librdkafka configuration; raw_id: the same, also reading and
 *       parsing the `rbk-id` header; ours: rbk_consumer_poll() and
 *       rbk_consumer_done(), dedup off or on. The group join is outside the
 *       clock: it starts at the first message.
 *   latency raw|ours   send-to-delivery latency at a fixed rate.
 *   requests fresh|singleton   per-request latency of send_sync through a
 *       fresh producer per request (new, send, destroy) against the
 *       registry's singleton (rbk_producer_get).
 *   dedup   the dedup window's ns per message (check + record on the
 *       partition's handle with the id parsed once: the consumer's
 *       per-message path) against a GHashTable+GQueue LRU of
 *       100,000 ids on the same id stream, and bytes per tracked producer.
 *   prefill   fills the consumer topic (raw producer, ids in our format).
 *
 * CPU is getrusage(RUSAGE_SELF) of the arm's own process between the first
 * and the last message (the brokers run in another process), so "CPU per
 * million messages" is the client's alone.
 *
 * The allocator is a dimension of the arm's process: the driver runs every
 * producer and consumer arm under glibc's malloc and again under jemalloc
 * (LD_PRELOAD of Debian's libjemalloc.so.2, or $RBK_BENCH_JEMALLOC), in the
 * same randomized rounds; a jemalloc arm's label ends in "@je" and its
 * ratios in "_jemalloc". Without the library the jemalloc arms are left
 * out (their ratios print n/a). */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "dedup.h"
#include "internal.h"

/* ------------------------------------------------------------ options */

typedef struct opts_s {
        const char *bootstrap;
        const char *ptopic; /* producer topic */
        const char *ctopic; /* consumer topic (pre-filled) */
        const char *out;
        const char *label;
        long n;             /* messages per producer run */
        long cn;            /* messages in the consumer topic */
        int payload;        /* value bytes */
        int rounds;
        int quick;
        int rate;           /* latency: messages per second */
        int seconds;        /* latency: duration */
        int fresh;          /* requests through fresh clients */
        int singleton;      /* requests through the singleton */
        long dedup_n;       /* messages of the dedup stream */
        const char *only;   /* run only these benchmarks (comma list) */
        int timeout_s;      /* bound of one arm */
        const char *conf;   /* extra properties, "name=value,..." (all arms) */
} opts_t;

static void opts_defaults(opts_t *o) {
        memset(o, 0, sizeof(*o));
        o->ptopic = "bench-produce";
        o->ctopic = "bench-consume";
        o->out = "bench/results";
        o->label = "mock";
        /* A million messages per producer run: the first ~100,000
         * (librdkafka's queue.buffering.max.messages) fill the queue, when
         * raw librdkafka allocates from untouched heap and the library
         * fills its record pool; a long-lived producer runs in the steady
         * state after that (docs/performance.md, "Run length"). */
        o->n = 1000000;
        o->cn = 300000;
        o->payload = 200;
        o->rounds = 12;
        o->rate = 2000;
        o->seconds = 10;
        o->fresh = 60;
        o->singleton = 300;
        o->dedup_n = 2000000;
        o->timeout_s = 180;
}

static void opts_quick(opts_t *o) {
        o->quick = 1;
        o->n = 50000;
        o->cn = 50000;
        o->rounds = 3;
        o->seconds = 3;
        o->fresh = 15;
        o->singleton = 100;
        o->dedup_n = 500000;
}

/* Parses --name=value options from argv[first..]; returns -1 on an unknown
 * option. */
static int opts_parse(opts_t *o, int argc, char **argv, int first) {
        for (int i = first; i < argc; i++) {
                const char *a = argv[i];
                const char *v = strchr(a, '=');
                v = v ? v + 1 : "";
#define OPT(name) (!strncmp(a, "--" name "=", strlen("--" name "=")))
                if (!strcmp(a, "--quick"))
                        opts_quick(o);
                else if (OPT("bootstrap"))
                        o->bootstrap = v;
                else if (OPT("ptopic"))
                        o->ptopic = v;
                else if (OPT("ctopic"))
                        o->ctopic = v;
                else if (OPT("out"))
                        o->out = v;
                else if (OPT("label"))
                        o->label = v;
                else if (OPT("messages"))
                        o->n = atol(v);
                else if (OPT("consume-messages"))
                        o->cn = atol(v);
                else if (OPT("payload"))
                        o->payload = atoi(v);
                else if (OPT("rounds"))
                        o->rounds = atoi(v);
                else if (OPT("rate"))
                        o->rate = atoi(v);
                else if (OPT("seconds"))
                        o->seconds = atoi(v);
                else if (OPT("fresh"))
                        o->fresh = atoi(v);
                else if (OPT("singleton"))
                        o->singleton = atoi(v);
                else if (OPT("dedup-messages"))
                        o->dedup_n = atol(v);
                else if (OPT("only"))
                        o->only = v;
                else if (OPT("timeout"))
                        o->timeout_s = atoi(v);
                else if (OPT("conf"))
                        o->conf = v;
                else {
                        fprintf(stderr, "rbk-bench: unknown option \"%s\"\n",
                                a);
                        return -1;
                }
#undef OPT
        }
        if (o->n < 1 || o->cn < 1 || o->payload < 0 || o->rounds < 1 ||
            o->rate < 1 || o->seconds < 1 || o->fresh < 1 ||
            o->singleton < 1 || o->dedup_n < 1000 || o->timeout_s < 1) {
                fprintf(stderr, "rbk-bench: an option is out of range\n");
                return -1;
        }
        return 0;
}

/* ------------------------------------------------------------ helpers */

static int64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t thread_cpu_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct cpu_s {
        double user, sys;
} cpu_t;

static cpu_t cpu_now(void) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        cpu_t c = {(double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
                   (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6};
        return c;
}

static double loadavg1(void) {
        double l = -1;
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
                if (fscanf(f, "%lf", &l) != 1)
                        l = -1;
                fclose(f);
        }
        return l;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

/* Quantile q (0..1) of v[0..n), linear interpolation; sorts v. */
static double quantile(double *v, size_t n, double q) {
        if (!n)
                return NAN;
        qsort(v, n, sizeof(*v), cmp_double);
        double pos = q * (double)(n - 1);
        size_t lo = (size_t)pos;
        if (lo + 1 >= n)
                return v[n - 1];
        return v[lo] + (pos - (double)lo) * (v[lo + 1] - v[lo]);
}

/* The configuration every client of one benchmark shares. */
static rbk_conf_t *bench_conf(const opts_t *o, const char *client) {
        char e[512];
        rbk_conf_t *conf = rbk_conf_new();
        if (rbk_conf_set(conf, "bootstrap.servers", o->bootstrap, e,
                         sizeof(e)) ||
            rbk_conf_set(conf, "client.id", client, e, sizeof(e)) ||
            rbk_conf_set(conf, "rbk.client.name", client, e, sizeof(e))) {
                fprintf(stderr, "rbk-bench: %s\n", e);
                exit(1);
        }
        char **props = g_strsplit(o->conf ? o->conf : "", ",", -1);
        for (char **p = props; *p; p++) {
                char *eq = strchr(*p, '=');
                if (!eq)
                        continue;
                *eq = '\0';
                if (rbk_conf_set(conf, *p, eq + 1, e, sizeof(e))) {
                        fprintf(stderr, "rbk-bench: --conf: %s\n", e);
                        exit(1);
                }
        }
        g_strfreev(props);
        return conf;
}

static void conf_set(rbk_conf_t *conf, const char *name, const char *value) {
        char e[512];
        if (rbk_conf_set(conf, name, value, e, sizeof(e))) {
                fprintf(stderr, "rbk-bench: %s\n", e);
                exit(1);
        }
}

static void rdconf_set(rd_kafka_conf_t *rc, const char *name,
                       const char *value) {
        char e[512];
        if (rd_kafka_conf_set(rc, name, value, e, sizeof(e)) !=
            RD_KAFKA_CONF_OK) {
                fprintf(stderr, "rbk-bench: %s\n", e);
                exit(1);
        }
}

/* librdkafka's configuration exactly as the library would build it. */
static rd_kafka_conf_t *raw_conf(const rbk_conf_t *conf,
                                 rbk_client_type_t type) {
        char e[512];
        rd_kafka_conf_t *rc = rbk__conf_build(conf, type, e, sizeof(e));
        if (!rc) {
                fprintf(stderr, "rbk-bench: %s\n", e);
                exit(1);
        }
        return rc;
}

/* Log lines up to this level reach stderr (BENCH_LOG_LEVEL, default 3). */
static int log_max = 3;

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac,
                      const char *buf) {
        if (level <= log_max)
                fprintf(stderr, "rbk-bench: librdkafka: %s: %s\n", fac, buf);
}

static void quiet_rbk_log(int level, const char *facility, const char *line,
                          void *opaque) {
        if (level <= log_max)
                fprintf(stderr, "rbk-bench: %s: %s\n", facility, line);
}

/* ------------------------------------------------------------ producer state */

typedef struct pstate_s {
        GMutex mu;
        GCond cond;
        gint delivered;
        gint errors;
        gint target;
        int done;
        int64_t *t_send; /* latency: send time per message index */
        int64_t *lat;    /* latency: send-to-delivery per index */
} pstate_t;

static void pstate_init(pstate_t *s) {
        memset(s, 0, sizeof(*s));
        g_mutex_init(&s->mu);
        g_cond_init(&s->cond);
}

static void pstate_clear(pstate_t *s) {
        g_mutex_clear(&s->mu);
        g_cond_clear(&s->cond);
}

/* Expect target more reports from now on. */
static void pstate_expect(pstate_t *s, int target) {
        g_mutex_lock(&s->mu);
        g_atomic_int_set(&s->delivered, 0);
        s->target = target;
        s->done = 0;
        g_mutex_unlock(&s->mu);
}

static void on_delivery(pstate_t *s, intptr_t idx, int failed) {
        if (s->lat && idx >= 0)
                s->lat[idx] = now_ns() - s->t_send[idx];
        if (failed)
                g_atomic_int_inc(&s->errors);
        if (g_atomic_int_add(&s->delivered, 1) + 1 == s->target) {
                g_mutex_lock(&s->mu);
                s->done = 1;
                g_cond_broadcast(&s->cond);
                g_mutex_unlock(&s->mu);
        }
}

/* 0 when every expected report came within timeout_s. */
static int pstate_wait(pstate_t *s, int timeout_s) {
        int64_t end = g_get_monotonic_time() + (int64_t)timeout_s * 1000000;
        g_mutex_lock(&s->mu);
        while (!s->done && g_get_monotonic_time() < end)
                g_cond_wait_until(&s->cond, &s->mu, end);
        int ok = s->done;
        g_mutex_unlock(&s->mu);
        return ok ? 0 : -1;
}

static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m,
                   void *opaque) {
        on_delivery(opaque, (intptr_t)m->_private, m->err != 0);
}

static void ours_dr(const rbk_delivery_t *dr, void *opaque) {
        on_delivery(opaque, (intptr_t)dr->msg_opaque, dr->err != RBK_OK);
}

/* ------------------------------------------------------------ raw producer */

typedef struct rawp_s {
        rd_kafka_t *rk;
        GThread *thread;
        volatile gint stop;
        int hdr;
        rbk_msgid_t id;
} rawp_t;

static gpointer rawp_poll_main(gpointer arg) {
        rawp_t *r = arg;
        while (!g_atomic_int_get(&r->stop))
                rd_kafka_poll(r->rk, 100);
        return NULL;
}

static void rawp_start(rawp_t *r, const rbk_conf_t *conf, pstate_t *s,
                       int hdr) {
        memset(r, 0, sizeof(*r));
        rd_kafka_conf_t *rc = raw_conf(conf, RBK_PRODUCER);
        rd_kafka_conf_set_dr_msg_cb(rc, raw_dr);
        rd_kafka_conf_set_log_cb(rc, quiet_log);
        rd_kafka_conf_set_opaque(rc, s);
        char e[512];
        r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, e, sizeof(e));
        if (!r->rk) {
                fprintf(stderr, "rbk-bench: rd_kafka_new: %s\n", e);
                exit(1);
        }
        r->hdr = hdr;
        r->id.producer_id = rbk__msgid_new_producer_id();
        r->thread = g_thread_new("raw-poll", rawp_poll_main, r);
}

static void rawp_stop(rawp_t *r) {
        rd_kafka_flush(r->rk, 10000);
        g_atomic_int_set(&r->stop, 1);
        g_thread_join(r->thread);
        rd_kafka_destroy(r->rk);
}

/* One message, waiting for queue room (RD_KAFKA_MSG_F_BLOCK). */
static int rawp_send(rawp_t *r, const char *topic, const void *key,
                     size_t klen, const void *val, size_t vlen,
                     intptr_t idx) {
        rd_kafka_vu_t vu[8];
        size_t n = 0;
        char idbuf[RBK_MSGID_STR_SIZE];
        vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
        vu[n++].u.cstr = topic;
        vu[n].vtype = RD_KAFKA_VTYPE_KEY;
        vu[n].u.mem.ptr = (void *)key;
        vu[n++].u.mem.size = klen;
        vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
        vu[n].u.mem.ptr = (void *)val;
        vu[n++].u.mem.size = vlen;
        vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
        vu[n++].u.i = RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK;
        vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
        vu[n++].u.ptr = (void *)idx;
        if (r->hdr) {
                r->id.seq++;
                int len = rbk_msgid_format(&r->id, idbuf, sizeof(idbuf));
                vu[n].vtype = RD_KAFKA_VTYPE_HEADER;
                vu[n].u.header.name = RBK_MSGID_HEADER;
                vu[n].u.header.val = idbuf;
                vu[n++].u.header.size = len;
        }
        rd_kafka_error_t *err = rd_kafka_produceva(r->rk, vu, n);
        if (err) {
                fprintf(stderr, "rbk-bench: produce: %s\n",
                        rd_kafka_error_string(err));
                rd_kafka_error_destroy(err);
                return -1;
        }
        return 0;
}

/* ------------------------------------------------------------ producer arm */

typedef struct payload_s {
        char keys[1024][8];
        char *value;
        size_t vlen;
} payload_t;

static payload_t *payload_new(int size) {
        payload_t *pl = g_new0(payload_t, 1);
        for (int i = 0; i < 1024; i++)
                g_snprintf(pl->keys[i], sizeof(pl->keys[i]), "k%04d", i);
        pl->vlen = (size_t)size;
        pl->value = g_malloc(pl->vlen + 1);
        for (size_t i = 0; i < pl->vlen; i++)
                pl->value[i] = (char)('a' + (i * 7 + i / 26) % 26);
        return pl;
}

static void payload_free(payload_t *pl) {
        g_free(pl->value);
        g_free(pl);
}

static rbk_producer_t *ours_producer(const rbk_conf_t *conf, pstate_t *s) {
        rbk_conf_t *c = rbk_conf_dup(conf);
        rbk_conf_set_delivery_cb(c, ours_dr, s);
        rbk_conf_set_log_cb(c, quiet_rbk_log, NULL);
        char e[512];
        rbk_producer_t *p = rbk_producer_new(c, e, sizeof(e));
        rbk_conf_destroy(c);
        if (!p) {
                fprintf(stderr, "rbk-bench: rbk_producer_new: %s\n", e);
                exit(1);
        }
        return p;
}

static int ours_send(rbk_producer_t *p, const char *topic, const void *key,
                     size_t klen, const void *val, size_t vlen,
                     intptr_t idx) {
        rbk_msg_t m = RBK_MSG_INIT;
        char e[512];
        m.topic = topic;
        m.key = key;
        m.key_len = klen;
        m.value = val;
        m.value_len = vlen;
        m.opaque = (void *)idx;
        if (rbk_producer_send(p, &m, e, sizeof(e)) != RBK_OK) {
                fprintf(stderr, "rbk-bench: rbk_producer_send: %s\n", e);
                return -1;
        }
        return 0;
}

typedef enum { ARM_RAW, ARM_RAW_NOHDR, ARM_OURS } parm_t;

static int parm_parse(const char *s, parm_t *out) {
        if (!strcmp(s, "raw"))
                *out = ARM_RAW;
        else if (!strcmp(s, "raw_nohdr"))
                *out = ARM_RAW_NOHDR;
        else if (!strcmp(s, "ours"))
                *out = ARM_OURS;
        else
                return -1;
        return 0;
}

/* The producer both arms drive: raw (with or without the id header) or
 * ours. */
typedef struct anyp_s {
        parm_t arm;
        rawp_t raw;
        rbk_producer_t *ours;
} anyp_t;

static void anyp_start(anyp_t *a, parm_t arm, const rbk_conf_t *conf,
                       pstate_t *s) {
        memset(a, 0, sizeof(*a));
        a->arm = arm;
        if (arm == ARM_OURS)
                a->ours = ours_producer(conf, s);
        else
                rawp_start(&a->raw, conf, s, arm == ARM_RAW);
}

static int anyp_send(anyp_t *a, const char *topic, const payload_t *pl,
                     long i) {
        const char *key = pl->keys[i & 1023];
        if (a->arm == ARM_OURS)
                return ours_send(a->ours, topic, key, 5, pl->value, pl->vlen,
                                 (intptr_t)i);
        return rawp_send(&a->raw, topic, key, 5, pl->value, pl->vlen,
                         (intptr_t)i);
}

static void anyp_stop(anyp_t *a) {
        if (a->arm == ARM_OURS)
                rbk_producer_destroy(a->ours);
        else
                rawp_stop(&a->raw);
}

static int cmd_produce(const opts_t *o, const char *armname) {
        parm_t arm;
        if (parm_parse(armname, &arm)) {
                fprintf(stderr, "rbk-bench: produce: unknown arm %s\n",
                        armname);
                return 2;
        }
        rbk_conf_t *conf = bench_conf(o, "bench-producer");
        payload_t *pl = payload_new(o->payload);
        pstate_t s;
        pstate_init(&s);
        anyp_t a;
        anyp_start(&a, arm, conf, &s);

        /* One message before the clock: metadata, connections, producer id. */
        pstate_expect(&s, 1);
        if (anyp_send(&a, o->ptopic, pl, -1) || pstate_wait(&s, 30)) {
                fprintf(stderr, "rbk-bench: warm-up message not delivered\n");
                return 1;
        }
        pstate_expect(&s, (int)o->n);
        int64_t t0 = now_ns();
        cpu_t c0 = cpu_now();
        long sent = 0;
        for (; sent < o->n; sent++)
                if (anyp_send(&a, o->ptopic, pl, sent))
                        break;
        int rc = sent == o->n ? pstate_wait(&s, o->timeout_s) : -1;
        int64_t t1 = now_ns();
        cpu_t c1 = cpu_now();
        anyp_stop(&a);
        printf("RESULT ok=%d msgs=%ld wall=%.6f user=%.6f sys=%.6f "
               "errors=%d\n",
               rc == 0, o->n, (double)(t1 - t0) / 1e9, c1.user - c0.user,
               c1.sys - c0.sys, g_atomic_int_get(&s.errors));
        pstate_clear(&s);
        payload_free(pl);
        rbk_conf_destroy(conf);
        return rc == 0 ? 0 : 1;
}

/* Fills the consumer topic: cn messages with ids in the library's format
 * (one producer), keys spread over the partitions. */
static int cmd_prefill(const opts_t *o) {
        rbk_conf_t *conf = bench_conf(o, "bench-prefill");
        payload_t *pl = payload_new(o->payload);
        pstate_t s;
        pstate_init(&s);
        anyp_t a;
        anyp_start(&a, ARM_RAW, conf, &s);
        pstate_expect(&s, (int)o->cn);
        long sent = 0;
        for (; sent < o->cn; sent++)
                if (anyp_send(&a, o->ctopic, pl, sent))
                        break;
        int rc = sent == o->cn ? pstate_wait(&s, o->timeout_s) : -1;
        anyp_stop(&a);
        printf("RESULT ok=%d msgs=%ld errors=%d\n", rc == 0, o->cn,
               g_atomic_int_get(&s.errors));
        pstate_clear(&s);
        payload_free(pl);
        rbk_conf_destroy(conf);
        return rc == 0 && !s.errors ? 0 : 1;
}

/* ------------------------------------------------------------ latency arm */

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

static double pct_ms(const int64_t *sorted, long n, double q) {
        long i = (long)ceil(q * (double)n) - 1;
        if (i < 0)
                i = 0;
        if (i >= n)
                i = n - 1;
        return (double)sorted[i] / 1e6;
}

static int cmd_latency(const opts_t *o, const char *armname) {
        parm_t arm;
        if (parm_parse(armname, &arm)) {
                fprintf(stderr, "rbk-bench: latency: unknown arm %s\n",
                        armname);
                return 2;
        }
        long n = (long)o->rate * o->seconds;
        rbk_conf_t *conf = bench_conf(o, "bench-latency");
        payload_t *pl = payload_new(o->payload);
        pstate_t s;
        pstate_init(&s);
        s.t_send = g_new0(int64_t, n);
        s.lat = g_new0(int64_t, n);
        anyp_t a;
        anyp_start(&a, arm, conf, &s);
        pstate_expect(&s, 1);
        if (anyp_send(&a, o->ptopic, pl, -1) || pstate_wait(&s, 30)) {
                fprintf(stderr, "rbk-bench: warm-up message not delivered\n");
                return 1;
        }
        pstate_expect(&s, (int)n);
        int64_t t0 = now_ns(), period = 1000000000 / o->rate;
        long sent = 0;
        for (; sent < n; sent++) {
                int64_t at = t0 + sent * period;
                struct timespec ts = {(time_t)(at / 1000000000),
                                      (long)(at % 1000000000)};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts,
                                       NULL) == EINTR)
                        ;
                s.t_send[sent] = now_ns();
                if (anyp_send(&a, o->ptopic, pl, sent))
                        break;
        }
        int rc = sent == n ? pstate_wait(&s, o->timeout_s) : -1;
        anyp_stop(&a);
        if (rc == 0) {
                qsort(s.lat, (size_t)n, sizeof(int64_t), cmp_i64);
                printf("RESULT ok=1 msgs=%ld p50_ms=%.3f p99_ms=%.3f "
                       "max_ms=%.3f errors=%d\n",
                       n, pct_ms(s.lat, n, 0.5), pct_ms(s.lat, n, 0.99),
                       (double)s.lat[n - 1] / 1e6,
                       g_atomic_int_get(&s.errors));
        } else {
                printf("RESULT ok=0\n");
        }
        g_free(s.t_send);
        g_free(s.lat);
        pstate_clear(&s);
        payload_free(pl);
        rbk_conf_destroy(conf);
        return rc == 0 ? 0 : 1;
}

/* ------------------------------------------------------------ requests arm */

static int cmd_requests(const opts_t *o, const char *mode) {
        int fresh = !strcmp(mode, "fresh");
        if (!fresh && strcmp(mode, "singleton")) {
                fprintf(stderr, "rbk-bench: requests: unknown mode %s\n",
                        mode);
                return 2;
        }
        int n = fresh ? o->fresh : o->singleton;
        rbk_conf_t *conf = bench_conf(o, "bench-requests");
        rbk_conf_set_log_cb(conf, quiet_rbk_log, NULL);
        payload_t *pl = payload_new(o->payload);
        double *ms = g_new0(double, n);
        int failed = 0, stalls = 0;
        /* Request -1 is not timed: process-wide initialisation (and, for
         * the singleton, its creation) happens before the clock. */
        for (int i = -1; i < n; i++) {
                char e[512];
                rbk_msg_t m = RBK_MSG_INIT;
                m.topic = o->ptopic;
                m.key = pl->keys[(i + 1) & 1023];
                m.key_len = 5;
                m.value = pl->value;
                m.value_len = pl->vlen;
                int64_t t0 = now_ns();
                rbk_producer_t *p =
                    fresh ? rbk_producer_new(conf, e, sizeof(e))
                          : rbk_producer_get("bench", conf, e, sizeof(e));
                rbk_err_t err = p ? rbk_producer_send_sync(p, &m, 30000, NULL,
                                                           e, sizeof(e))
                                  : RBK_ERR_STATE;
                if (fresh)
                        rbk_producer_destroy(p);
                else
                        rbk_producer_put(p);
                int64_t t1 = now_ns();
                if (err) {
                        fprintf(stderr, "rbk-bench: request: %s\n", e);
                        failed++;
                }
                if (i < 0)
                        continue;
                ms[i] = (double)(t1 - t0) / 1e6;
                if (ms[i] > 500)
                        stalls++;
        }
        if (!fresh)
                rbk_shutdown(10000);
        double p50 = quantile(ms, (size_t)n, 0.5);
        double p99 = quantile(ms, (size_t)n, 0.99);
        printf("RESULT ok=%d msgs=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f "
               "stalls=%d errors=%d\n",
               failed == 0, n, p50, p99, ms[n - 1], stalls, failed);
        g_free(ms);
        payload_free(pl);
        rbk_conf_destroy(conf);
        return failed ? 1 : 0;
}

/* ------------------------------------------------------------ consumer arm */

typedef enum {
        CARM_RAW,
        CARM_RAW_ID,
        CARM_OURS_OFF,
        CARM_OURS_ON,
        CARM_RUN,  /* rbk_consumer_start(), single-message handler */
        CARM_BATCH /* rbk_consumer_start_batch(), batches of batch_n */
} carm_t;

/* The run API's arms: the handlers count, the main thread waits. */
typedef struct {
        gint count;
        gint started;
        int64_t t0;
        cpu_t c0;
        unsigned sink;
} runarm_t;

static void runarm_first(runarm_t *r) {
        if (g_atomic_int_compare_and_exchange(&r->started, 0, 1)) {
                r->t0 = now_ns();
                r->c0 = cpu_now();
        }
}

/* The handler's work, the same in every arm: read the value. */
static unsigned handle(const void *val, size_t len) {
        const unsigned char *b = val;
        return len ? (unsigned)b[0] + (unsigned)b[len - 1] : 0;
}

/* Commits every partition's log start for the (new, empty) group, so that
 * every arm starts from committed offsets like a restarted consumer. (A new
 * group without commits makes the library look up each partition's initial
 * position once: a start-up cost, not the steady state measured here.) */
static int prepare_group(const opts_t *o, const char *group) {
        char e[512];
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        rdconf_set(rc, "bootstrap.servers", o->bootstrap);
        rdconf_set(rc, "group.id", group);
        rdconf_set(rc, "enable.auto.commit", "false");
        rd_kafka_conf_set_log_cb(rc, quiet_log);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        if (!rk) {
                fprintf(stderr, "rbk-bench: rd_kafka_new: %s\n", e);
                return -1;
        }
        int rc_ = -1;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->ctopic, NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1 ||
            md->topics[0].partition_cnt < 1) {
                fprintf(stderr, "rbk-bench: no metadata for %s\n", o->ctopic);
                goto out;
        }
        int np = md->topics[0].partition_cnt;
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(np);
        for (int i = 0; i < np; i++) {
                int64_t lo = 0, hi = 0;
                if (rd_kafka_query_watermark_offsets(rk, o->ctopic, i, &lo, &hi,
                                                     10000)) {
                        fprintf(stderr, "rbk-bench: watermarks of %s [%d] "
                                        "unknown\n",
                                o->ctopic, i);
                        rd_kafka_topic_partition_list_destroy(l);
                        goto out;
                }
                rd_kafka_topic_partition_list_add(l, o->ctopic, i)->offset = lo;
        }
        rd_kafka_resp_err_t err = rd_kafka_commit(rk, l, 0);
        rd_kafka_topic_partition_list_destroy(l);
        if (err)
                fprintf(stderr, "rbk-bench: committing the start offsets: %s\n",
                        rd_kafka_err2str(err));
        else
                rc_ = 0;
out:
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(rk);
        return rc_;
}

static rbk_verdict_t run_single(const rbk_message_t *m, void *opaque) {
        runarm_t *r = opaque;
        runarm_first(r);
        r->sink += handle(m->value, m->value_len);
        g_atomic_int_inc(&r->count);
        return RBK_HANDLED;
}

static size_t run_batch(const rbk_message_t *const *msgs, size_t n,
                        rbk_verdict_t *rest, void *opaque) {
        runarm_t *r = opaque;
        runarm_first(r);
        for (size_t i = 0; i < n; i++)
                r->sink += handle(msgs[i]->value, msgs[i]->value_len);
        g_atomic_int_add(&r->count, (gint)n);
        return n;
}

static int cmd_consume(const opts_t *o, const char *armname) {
        carm_t arm;
        long batch_n = 0;
        if (!strcmp(armname, "raw"))
                arm = CARM_RAW;
        else if (!strcmp(armname, "raw_id"))
                arm = CARM_RAW_ID;
        else if (!strcmp(armname, "ours_off"))
                arm = CARM_OURS_OFF;
        else if (!strcmp(armname, "ours_on"))
                arm = CARM_OURS_ON;
        else if (!strcmp(armname, "run"))
                arm = CARM_RUN;
        else if (!strncmp(armname, "batch", 5) &&
                 (batch_n = atol(armname + 5)) > 0)
                arm = CARM_BATCH;
        else {
                fprintf(stderr, "rbk-bench: consume: unknown arm %s\n",
                        armname);
                return 2;
        }
        rbk_conf_t *conf = bench_conf(o, "bench-consumer");
        char group[128];
        g_snprintf(group, sizeof(group), "bench-%s-%d-%" PRId64, armname,
                   (int)getpid(), g_get_real_time());
        conf_set(conf, "group.id", group);
        if (prepare_group(o, group))
                return 1;
        conf_set(conf, "session.timeout.ms", "6000");
        conf_set(conf, "fetch.wait.max.ms", "10");
        /* librdkafka 2.0.2 stops fetching for fetch.error.backoff.ms (500)
         * whenever the consumer queue holds queued.min.messages (100000):
         * against the fast mock that idles every arm for whole
         * half-seconds. Raised so that the clients, not the back-off, are
         * measured. */
        conf_set(conf, "queued.min.messages", "1000000");
        conf_set(conf, "rbk.dedup.enable", arm == CARM_OURS_ON ? "true"
                                                               : "false");
        if (arm == CARM_BATCH) {
                char bn[24];
                g_snprintf(bn, sizeof(bn), "%ld", batch_n);
                conf_set(conf, "rbk.consumer.batch.max.messages", bn);
        }
        int64_t deadline = now_ns() + (int64_t)o->timeout_s * 1000000000;
        long count = 0;
        unsigned sink = 0;
        int64_t t0 = 0, t1 = 0;
        cpu_t c0 = {0, 0}, c1 = {0, 0};
        uint64_t dups = 0;
        char e[512];

        if (arm == CARM_RAW || arm == CARM_RAW_ID) {
                rd_kafka_conf_t *rc = raw_conf(conf, RBK_CONSUMER);
                /* The library starts new groups at the earliest offset by
                 * itself; raw librdkafka needs auto.offset.reset for it. */
                rdconf_set(rc, "auto.offset.reset", "earliest");
                rd_kafka_conf_set_log_cb(rc, quiet_log);
                rd_kafka_t *rk =
                    rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
                if (!rk) {
                        fprintf(stderr, "rbk-bench: rd_kafka_new: %s\n", e);
                        return 1;
                }
                rd_kafka_poll_set_consumer(rk);
                rd_kafka_topic_partition_list_t *sub =
                    rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(sub, o->ctopic,
                                                  RD_KAFKA_PARTITION_UA);
                rd_kafka_subscribe(rk, sub);
                rd_kafka_topic_partition_list_destroy(sub);
                while (count < o->cn && now_ns() < deadline) {
                        rd_kafka_message_t *rkm =
                            rd_kafka_consumer_poll(rk, 100);
                        if (!rkm)
                                continue;
                        if (rkm->err) {
                                rd_kafka_message_destroy(rkm);
                                continue;
                        }
                        if (!count) {
                                t0 = now_ns();
                                c0 = cpu_now();
                        }
                        sink += handle(rkm->payload, rkm->len);
                        rd_kafka_headers_t *hdrs;
                        const void *id;
                        size_t idlen;
                        rbk_msgid_t mid;
                        /* raw_id: reads and parses the id header as the
                         * library does for rbk_message_t.id and .msgid. */
                        if (arm == CARM_RAW_ID &&
                            !rd_kafka_message_headers(rkm, &hdrs) &&
                            !rd_kafka_header_get_last(hdrs, RBK_MSGID_HEADER,
                                                      &id, &idlen) &&
                            rbk_msgid_parse(id, idlen, &mid) == RBK_OK)
                                sink += (unsigned)mid.seq;
                        rd_kafka_topic_partition_list_t *l =
                            rd_kafka_topic_partition_list_new(1);
                        rd_kafka_topic_partition_list_add(
                            l, rd_kafka_topic_name(rkm->rkt), rkm->partition)
                            ->offset = rkm->offset + 1;
                        rd_kafka_offsets_store(rk, l);
                        rd_kafka_topic_partition_list_destroy(l);
                        rd_kafka_message_destroy(rkm);
                        count++;
                }
                t1 = now_ns();
                c1 = cpu_now();
                rd_kafka_consumer_close(rk);
                rd_kafka_destroy(rk);
        } else if (arm == CARM_RUN || arm == CARM_BATCH) {
                rbk_conf_set_log_cb(conf, quiet_rbk_log, NULL);
                rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
                if (!c) {
                        fprintf(stderr, "rbk-bench: rbk_consumer_new: %s\n",
                                e);
                        return 1;
                }
                const char *topics[] = {o->ctopic};
                runarm_t r;
                memset(&r, 0, sizeof(r));
                if (rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)) ||
                    (arm == CARM_RUN
                         ? rbk_consumer_start(c, run_single, &r)
                         : rbk_consumer_start_batch(c, run_batch, &r))) {
                        fprintf(stderr, "rbk-bench: start: %s\n", e);
                        return 1;
                }
                while (g_atomic_int_get(&r.count) < o->cn &&
                       now_ns() < deadline)
                        g_usleep(1000);
                t1 = now_ns();
                c1 = cpu_now();
                rbk_consumer_stop(c);
                count = g_atomic_int_get(&r.count);
                t0 = r.t0;
                c0 = r.c0;
                sink = r.sink;
                rbk_consumer_close(c, 10000);
                rbk_consumer_destroy(c);
        } else {
                rbk_conf_set_log_cb(conf, quiet_rbk_log, NULL);
                rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
                if (!c) {
                        fprintf(stderr, "rbk-bench: rbk_consumer_new: %s\n",
                                e);
                        return 1;
                }
                const char *topics[] = {o->ctopic};
                if (rbk_consumer_subscribe(c, topics, 1, e, sizeof(e))) {
                        fprintf(stderr, "rbk-bench: subscribe: %s\n", e);
                        return 1;
                }
                while (count < o->cn && now_ns() < deadline) {
                        rbk_message_t *m = NULL;
                        if (rbk_consumer_poll(c, 100, &m) || !m)
                                continue;
                        if (!count) {
                                t0 = now_ns();
                                c0 = cpu_now();
                        }
                        sink += handle(m->value, m->value_len);
                        rbk_consumer_done(c, m, RBK_HANDLED);
                        count++;
                }
                t1 = now_ns();
                c1 = cpu_now();
                rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
                if (!rbk_consumer_stats(c, &st))
                        dups = st.duplicates_dropped;
                rbk_consumer_close(c, 10000);
                rbk_consumer_destroy(c);
        }
        int ok = count == o->cn;
        printf("RESULT ok=%d msgs=%ld wall=%.6f user=%.6f sys=%.6f "
               "dups=%" PRIu64 " sink=%u\n",
               ok, count, (double)(t1 - t0) / 1e9, c1.user - c0.user,
               c1.sys - c0.sys, dups, sink);
        rbk_conf_destroy(conf);
        return ok ? 0 : 1;
}

/* ------------------------------------------------------------ dedup arm */

#define LRU_CAP 100000

typedef struct lru_s {
        GHashTable *map; /* char* id -> GList* node in q */
        GQueue q;        /* most recent at the head; data = the key */
} lru_t;

static void lru_init(lru_t *l) {
        l->map = g_hash_table_new(g_str_hash, g_str_equal);
        g_queue_init(&l->q);
}

static void lru_free(lru_t *l) {
        g_hash_table_destroy(l->map);
        g_queue_clear_full(&l->q, g_free);
}

/* 1 if the id was present (and touches it), else inserts it. */
static int lru_lookup_insert(lru_t *l, const char *id) {
        GList *node = g_hash_table_lookup(l->map, id);
        if (node) {
                g_queue_unlink(&l->q, node);
                g_queue_push_head_link(&l->q, node);
                return 1;
        }
        char *k = g_strdup(id);
        g_queue_push_head(&l->q, k);
        g_hash_table_insert(l->map, k, l->q.head);
        if (l->q.length > LRU_CAP) {
                char *old = g_queue_pop_tail(&l->q);
                g_hash_table_remove(l->map, old);
                g_free(old);
        }
        return 0;
}

static size_t heap_used(void) {
        struct mallinfo2 mi = mallinfo2();
        return mi.uordblks + mi.hblkhd;
}

#define DEDUP_PRODUCERS 8

/* The id stream (the same as bench/dedup_bench.c): 8 producers writing to
 * 4 partitions, of which we see one (so each producer's sequence has gaps),
 * reordered within 16 messages, 2% of the messages delivered twice. */
static char (*dedup_stream(long n, size_t **lensp))[RBK_MSGID_STR_SIZE] {
        GRand *rnd = g_rand_new_with_seed(42);
        char (*ids)[RBK_MSGID_STR_SIZE] = g_malloc((size_t)n * RBK_MSGID_STR_SIZE);
        size_t *lens = g_new(size_t, (size_t)n);
        uint64_t pids[DEDUP_PRODUCERS], next[DEDUP_PRODUCERS] = {0};
        rbk_msgid_t pend[16];
        int npend = 0;
        long i = 0;
        for (int p = 0; p < DEDUP_PRODUCERS; p++)
                pids[p] = ((uint64_t)g_rand_int(rnd) << 32) | g_rand_int(rnd) | 1;
        while (i < n) {
                if (i > 0 && g_rand_int_range(rnd, 0, 100) < 2) {
                        long j = i - 1 - g_rand_int_range(rnd, 0, (gint32)MIN(i, 1000));
                        memcpy(ids[i], ids[j], sizeof(ids[i]));
                        lens[i] = lens[j];
                        i++;
                        continue;
                }
                int p = g_rand_int_range(rnd, 0, DEDUP_PRODUCERS);
                do
                        next[p]++;
                while (g_rand_int_range(rnd, 0, 4) != 0);
                pend[npend].producer_id = pids[p];
                pend[npend].seq = next[p];
                npend++;
                if (npend < 16)
                        continue;
                int k = g_rand_int_range(rnd, 0, npend);
                lens[i] = (size_t)rbk_msgid_format(&pend[k], ids[i],
                                                   RBK_MSGID_STR_SIZE);
                i++;
                pend[k] = pend[--npend];
        }
        g_rand_free(rnd);
        *lensp = lens;
        return ids;
}

static int cmd_dedup(const opts_t *o) {
        long n = o->dedup_n;
        size_t *lens;
        char (*ids)[RBK_MSGID_STR_SIZE] = dedup_stream(n, &lens);
        double *win = g_new(double, 9), *lru = g_new(double, 9);
        double *pre = g_new(double, 9), pre_ratios[9];
        double *hp = g_new(double, 9), raw_ratios[9];
        /* The consumer parses every id once for rbk_message_t.msgid; the
         * _msgid calls take that parse. */
        rbk_msgid_t *parsed = g_new(rbk_msgid_t, (size_t)n);
        for (long k = 0; k < n; k++)
                if (rbk_msgid_parse(ids[k], lens[k], &parsed[k]) != RBK_OK)
                        return 1;
        long dups_win = 0, dups_lru = 0;
        size_t mem_win = 0, heap_win = 0, heap_lru = 0;
        /* Alternating, 9 runs each, thread CPU time: other processes on the
         * machine count against neither side. */
        for (int run = 0; run < 9; run++) {
                size_t h0 = heap_used();
                rbk__dedup_t *d = rbk__dedup_new(NULL, "bench");
                rbk__dedup_assign(d, "topic", 0);
                long dups = 0;
                int64_t t0 = thread_cpu_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check(d, "topic", 0, ids[k], lens[k]) ==
                            RBK__DEDUP_DUPLICATE) {
                                dups++;
                                continue;
                        }
                        rbk__dedup_record(d, "topic", 0, ids[k], lens[k], k);
                }
                win[run] = (double)(thread_cpu_ns() - t0) / (double)n;
                dups_win = dups;
                if (run == 0) {
                        mem_win = rbk__dedup_memory(d);
                        heap_win = heap_used() - h0;
                }
                rbk__dedup_destroy(d);

                d = rbk__dedup_new(NULL, "bench");
                rbk__dedup_assign(d, "topic", 0);
                t0 = thread_cpu_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check_msgid(d, "topic", 0, ids[k],
                                                   lens[k], &parsed[k]) ==
                            RBK__DEDUP_DUPLICATE)
                                continue;
                        rbk__dedup_record_msgid(d, "topic", 0, ids[k], lens[k],
                                                &parsed[k], k);
                }
                pre[run] = (double)(thread_cpu_ns() - t0) / (double)n;
                rbk__dedup_destroy(d);

                /* The consumer's path: the id parsed once, the partition's
                 * windows through the handle kept in its partition state. */
                d = rbk__dedup_new(NULL, "bench");
                rbk__dedup_assign(d, "topic", 0);
                rbk__dedup_part_t *dp = rbk__dedup_part(d, "topic", 0);
                t0 = thread_cpu_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check_part(d, dp, ids[k], lens[k],
                                                  &parsed[k]) ==
                            RBK__DEDUP_DUPLICATE)
                                continue;
                        rbk__dedup_record_part(d, dp, ids[k], lens[k],
                                               &parsed[k], k);
                }
                hp[run] = (double)(thread_cpu_ns() - t0) / (double)n;
                rbk__dedup_destroy(d);

                lru_t l;
                h0 = heap_used();
                lru_init(&l);
                dups = 0;
                t0 = thread_cpu_ns();
                for (long k = 0; k < n; k++)
                        dups += lru_lookup_insert(&l, ids[k]);
                lru[run] = (double)(thread_cpu_ns() - t0) / (double)n;
                dups_lru = dups;
                if (run == 0)
                        heap_lru = heap_used() - h0;
                lru_free(&l);
        }
        double ratios[9];
        for (int i = 0; i < 9; i++) {
                ratios[i] = hp[i] / lru[i];
                raw_ratios[i] = win[i] / lru[i];
                pre_ratios[i] = pre[i] / lru[i];
        }
        double rmed = quantile(ratios, 9, 0.5);
        double rq1 = quantile(ratios, 9, 0.25), rq3 = quantile(ratios, 9, 0.75);
        printf("RESULT ok=1 msgs=%ld win_ns=%.2f lru_ns=%.2f ratio=%.4f "
               "ratio_q1=%.4f ratio_q3=%.4f win_best_ns=%.2f lru_best_ns=%.2f "
               "win_bytes=%zu win_heap=%zu lru_heap=%zu producers=%d "
               "dups_win=%ld dups_lru=%ld pre_ns=%.2f pre_ratio=%.4f "
               "raw_ns=%.2f raw_ratio=%.4f raw_best_ns=%.2f\n",
               n, quantile(hp, 9, 0.5), quantile(lru, 9, 0.5), rmed, rq1, rq3,
               quantile(hp, 9, 0.0), quantile(lru, 9, 0.0), mem_win, heap_win,
               heap_lru, DEDUP_PRODUCERS, dups_win, dups_lru,
               quantile(pre, 9, 0.5), quantile(pre_ratios, 9, 0.5),
               quantile(win, 9, 0.5), quantile(raw_ratios, 9, 0.5),
               quantile(win, 9, 0.0));
        g_free(pre);
        g_free(hp);
        g_free(parsed);
        g_free(win);
        g_free(lru);
        g_free(ids);
        g_free(lens);
        return 0;
}

/* ------------------------------------------------------------ driver */

typedef struct run_s {
        char bench[16];
        char arm[24];
        int round;
        int order;
        double load;
        int ok;
        double msgs, wall, user, sys;
        GHashTable *kv; /* every key=value of the result line */
} run_t;

static void run_free(gpointer p) {
        run_t *r = p;
        if (r->kv)
                g_hash_table_destroy(r->kv);
        g_free(r);
}

static double kv_num(const run_t *r, const char *key) {
        const char *v = r->kv ? g_hash_table_lookup(r->kv, key) : NULL;
        return v ? g_ascii_strtod(v, NULL) : NAN;
}

static double run_cpu_per_msg(const run_t *r) {
        return r->ok && r->msgs > 0 ? (r->user + r->sys) / r->msgs : NAN;
}

static double run_tput(const run_t *r) {
        return r->ok && r->wall > 0 ? r->msgs / r->wall : NAN;
}

static char *self_exe;

/* Runs one arm in a child process and parses its RESULT line. */
static run_t *run_child_env(const opts_t *o, const char *bench,
                            const char *cmd, const char *arm,
                            const char *label, int round, int order,
                            const char *preload) {
        GPtrArray *av = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(av, g_strdup(self_exe));
        g_ptr_array_add(av, g_strdup(cmd));
        if (arm)
                g_ptr_array_add(av, g_strdup(arm));
        g_ptr_array_add(av, g_strdup_printf("--bootstrap=%s", o->bootstrap));
        g_ptr_array_add(av, g_strdup_printf("--ptopic=%s", o->ptopic));
        g_ptr_array_add(av, g_strdup_printf("--ctopic=%s", o->ctopic));
        g_ptr_array_add(av, g_strdup_printf("--messages=%ld", o->n));
        g_ptr_array_add(av, g_strdup_printf("--consume-messages=%ld", o->cn));
        g_ptr_array_add(av, g_strdup_printf("--payload=%d", o->payload));
        g_ptr_array_add(av, g_strdup_printf("--rate=%d", o->rate));
        g_ptr_array_add(av, g_strdup_printf("--seconds=%d", o->seconds));
        g_ptr_array_add(av, g_strdup_printf("--fresh=%d", o->fresh));
        g_ptr_array_add(av, g_strdup_printf("--singleton=%d", o->singleton));
        g_ptr_array_add(av, g_strdup_printf("--dedup-messages=%ld", o->dedup_n));
        g_ptr_array_add(av, g_strdup_printf("--timeout=%d", o->timeout_s));
        if (o->conf)
                g_ptr_array_add(av, g_strdup_printf("--conf=%s", o->conf));
        g_ptr_array_add(av, NULL);

        run_t *r = g_new0(run_t, 1);
        g_strlcpy(r->bench, bench, sizeof(r->bench));
        g_strlcpy(r->arm, label, sizeof(r->arm));
        r->round = round;
        r->order = order;
        r->load = loadavg1();
        char *out = NULL;
        gint status = 0;
        GError *gerr = NULL;
        char **envp = NULL;
        if (preload) {
                /* The allocator goes first; an LD_PRELOAD of the driver's
                 * own environment (a sanitizer runtime) stays after it. */
                const char *prev = g_getenv("LD_PRELOAD");
                char *v = prev && *prev ? g_strdup_printf("%s:%s", preload, prev)
                                        : g_strdup(preload);
                envp = g_environ_setenv(g_get_environ(), "LD_PRELOAD", v,
                                        TRUE);
                g_free(v);
        }
        gboolean spawned = g_spawn_sync(NULL, (char **)av->pdata, envp,
                                        G_SPAWN_DEFAULT, NULL, NULL, &out,
                                        NULL, &status, &gerr);
        g_strfreev(envp);
        g_ptr_array_free(av, TRUE);
        if (!spawned) {
                fprintf(stderr, "rbk-bench: cannot run %s: %s\n", self_exe,
                        gerr->message);
                g_clear_error(&gerr);
                return r;
        }
        r->kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        char *line = out ? strstr(out, "RESULT ") : NULL;
        if (line) {
                char *end = strchr(line, '\n');
                if (end)
                        *end = '\0';
                char **toks = g_strsplit(line + 7, " ", -1);
                for (char **t = toks; *t; t++) {
                        char *eq = strchr(*t, '=');
                        if (eq)
                                g_hash_table_insert(r->kv,
                                                    g_strndup(*t, (gsize)(eq - *t)),
                                                    g_strdup(eq + 1));
                }
                g_strfreev(toks);
        }
        r->ok = kv_num(r, "ok") == 1 && g_spawn_check_wait_status(status, NULL);
        r->msgs = kv_num(r, "msgs");
        r->wall = kv_num(r, "wall");
        r->user = kv_num(r, "user");
        r->sys = kv_num(r, "sys");
        g_free(out);
        fprintf(stderr, "  %-8s round %2d  %-12s %s", bench, round, label,
                r->ok ? "" : "FAILED ");
        if (!isnan(r->wall) && !isnan(r->user))
                fprintf(stderr, "%8.3f s CPU/1M msgs  %9.0f msgs/s",
                        run_cpu_per_msg(r) * 1e6, run_tput(r));
        fprintf(stderr, "  (load %.2f)\n", r->load);
        return r;
}

static void shuffle(GRand *rnd, int *v, int n);

static run_t *run_child(const opts_t *o, const char *bench, const char *cmd,
                        const char *arm, const char *label, int round,
                        int order) {
        return run_child_env(o, bench, cmd, arm, label, round, order, NULL);
}

/* The allocators every producer and consumer arm runs under: glibc's
 * malloc (no suffix) and jemalloc ("@je"), when its library is there. */
typedef struct alloc_s {
        const char *suffix; /* of the arm label */
        const char *metric; /* of the ratio's name */
        const char *preload;
} alloc_t;

static const char *jemalloc_path(void) {
        const char *env = g_getenv("RBK_BENCH_JEMALLOC");
        if (env)
                return *env && g_file_test(env, G_FILE_TEST_EXISTS) ? env : NULL;
        static const char *const paths[] = {
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
            "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2"};
        for (size_t i = 0; i < G_N_ELEMENTS(paths); i++)
                if (g_file_test(paths[i], G_FILE_TEST_EXISTS))
                        return paths[i];
        return NULL;
}

/* Fills allocs[] (at most 2); returns how many. */
static int allocs_get(alloc_t *allocs) {
        int n = 0;
        allocs[n++] = (alloc_t){"", "", NULL};
        const char *je = jemalloc_path();
        if (je)
                allocs[n++] = (alloc_t){"@je", "_jemalloc", je};
        else
                fprintf(stderr, "rbk-bench: libjemalloc.so.2 not found "
                                "(scripts/install-deps bench); glibc arms "
                                "only\n");
        return n;
}

/* Runs round `round` of a benchmark: every arm under every allocator, in
 * one random order. */
static void run_round(const opts_t *o, GRand *rnd, GPtrArray *runs,
                      const char *bench, const char *cmd,
                      const char *const *arms, const char *const *labels,
                      int narms, const alloc_t *allocs, int nalloc,
                      int round) {
        int n = narms * nalloc;
        int *ord = g_new(int, n);
        for (int i = 0; i < n; i++)
                ord[i] = i;
        shuffle(rnd, ord, n);
        for (int k = 0; k < n; k++) {
                const alloc_t *al = &allocs[ord[k] / narms];
                int a = ord[k] % narms;
                char label[24];
                g_snprintf(label, sizeof(label), "%s%s", labels[a],
                           al->suffix);
                g_ptr_array_add(runs, run_child_env(o, bench, cmd, arms[a],
                                                    label, round, k + 1,
                                                    al->preload));
        }
        g_free(ord);
}

static void shuffle(GRand *rnd, int *v, int n) {
        for (int i = n - 1; i > 0; i--) {
                int j = g_rand_int_range(rnd, 0, i + 1);
                int t = v[i];
                v[i] = v[j];
                v[j] = t;
        }
}

/* One paired comparison: per round, value(a)/value(b). */
typedef struct cmp_s {
        const char *name;   /* metric name */
        const char *what;   /* description */
        const char *bench;
        const char *num;    /* arm label of the numerator */
        const char *den;    /* arm label of the denominator */
        int tput;           /* 1: throughput ratio, 0: CPU per message */
        const char *aa;     /* the A/A metric that bounds the noise, or NULL */
        const char *target; /* e.g. ">= 0.95", or NULL */
        double median, q1, q3;
        int pairs;
} cmp_t;

static const run_t *find_run(GPtrArray *runs, const char *bench,
                             const char *arm, int round) {
        for (guint i = 0; i < runs->len; i++) {
                const run_t *r = g_ptr_array_index(runs, i);
                if (r->round == round && !strcmp(r->bench, bench) &&
                    !strcmp(r->arm, arm))
                        return r;
        }
        return NULL;
}

static void cmp_compute(cmp_t *c, GPtrArray *runs, int rounds) {
        double *v = g_new(double, rounds);
        int n = 0;
        for (int round = 1; round <= rounds; round++) {
                const run_t *a = find_run(runs, c->bench, c->num, round);
                const run_t *b = find_run(runs, c->bench, c->den, round);
                if (!a || !b || !a->ok || !b->ok)
                        continue;
                /* CPU per message: den/num (raw/ours: higher is better
                 * for ours); throughput: num/den (ours/raw). */
                double x = c->tput ? run_tput(a) / run_tput(b)
                                   : run_cpu_per_msg(b) / run_cpu_per_msg(a);
                if (isfinite(x))
                        v[n++] = x;
        }
        c->pairs = n;
        c->median = quantile(v, (size_t)n, 0.5);
        c->q1 = quantile(v, (size_t)n, 0.25);
        c->q3 = quantile(v, (size_t)n, 0.75);
        g_free(v);
}

static cmp_t *cmp_find(cmp_t *cs, int n, const char *name) {
        for (int i = 0; i < n; i++)
                if (!strcmp(cs[i].name, name))
                        return &cs[i];
        return NULL;
}

static int target_met(const cmp_t *c, double value) {
        double t;
        if (!c->target || isnan(value))
                return -1;
        t = g_ascii_strtod(c->target + 3, NULL);
        return !strncmp(c->target, ">=", 2) ? value >= t : value <= t;
}

/* Median and IQR of one arm's CPU per 1M messages and throughput. */
static void arm_stats(GPtrArray *runs, const char *bench, const char *arm,
                      double out[6], int *np) {
        double *cpu = g_new(double, runs->len + 1);
        double *tp = g_new(double, runs->len + 1);
        int n = 0;
        for (guint i = 0; i < runs->len; i++) {
                const run_t *r = g_ptr_array_index(runs, i);
                if (!r->ok || strcmp(r->bench, bench) || strcmp(r->arm, arm))
                        continue;
                cpu[n] = run_cpu_per_msg(r) * 1e6;
                tp[n++] = run_tput(r);
        }
        out[0] = quantile(cpu, (size_t)n, 0.5);
        out[1] = quantile(cpu, (size_t)n, 0.25);
        out[2] = quantile(cpu, (size_t)n, 0.75);
        out[3] = quantile(tp, (size_t)n, 0.5);
        out[4] = quantile(tp, (size_t)n, 0.25);
        out[5] = quantile(tp, (size_t)n, 0.75);
        *np = n;
        g_free(cpu);
        g_free(tp);
}

static int only_has(const opts_t *o, const char *bench) {
        if (!o->only || !*o->only)
                return 1;
        char **v = g_strsplit(o->only, ",", -1);
        int has = 0;
        for (char **p = v; *p; p++)
                has |= !strcmp(*p, bench);
        g_strfreev(v);
        return has;
}

static char *cpu_model(void) {
        char *txt = NULL;
        char *model = NULL;
        if (g_file_get_contents("/proc/cpuinfo", &txt, NULL, NULL)) {
                char *m = strstr(txt, "model name");
                if (m && (m = strchr(m, ':'))) {
                        char *end = strchr(m, '\n');
                        model = g_strstrip(g_strndup(m + 1, end ? (gsize)(end - m - 1) : strlen(m + 1)));
                }
        }
        g_free(txt);
        return model ? model : g_strdup("unknown CPU");
}

static const char *fmt_num(char *buf, size_t sz, double v, const char *f) {
        if (isnan(v))
                g_strlcpy(buf, "n/a", sz);
        else
                g_snprintf(buf, sz, f, v);
        return buf;
}

static int cmd_run(const opts_t *o, int argc, char **argv) {
        if (!o->bootstrap || !*o->bootstrap) {
                fprintf(stderr, "rbk-bench: run needs --bootstrap\n");
                return 2;
        }
        if (g_mkdir_with_parents(o->out, 0755)) {
                fprintf(stderr, "rbk-bench: cannot create %s: %s\n", o->out,
                        g_strerror(errno));
                return 1;
        }
        guint32 seed = (guint32)g_get_real_time();
        GRand *rnd = g_rand_new_with_seed(seed);
        GPtrArray *runs = g_ptr_array_new_with_free_func(run_free);
        double load_start = loadavg1();
        GDateTime *started = g_date_time_new_now_local();
        int64_t t_start = now_ns();

        fprintf(stderr, "rbk-bench: %s cluster %s, %d rounds%s, seed %u\n",
                o->label, o->bootstrap, o->rounds, o->quick ? " (quick)" : "",
                seed);

        alloc_t allocs[2];
        int nalloc = allocs_get(allocs);

        /* Producer: per round the four arms under each allocator, all in
         * one random order. raw_a and raw_b are the same arm (A/A). */
        static const char *const p_labels[] = {"raw_a", "raw_b", "ours",
                                               "raw_nohdr"};
        static const char *const p_arms[] = {"raw", "raw", "ours",
                                             "raw_nohdr"};
        /* Producer runs are noisier (the sender and librdkafka's threads
         * contend for malloc's arena): a third more rounds (each round runs
         * every arm under both allocators). */
        int prounds = o->rounds + (o->rounds + 2) / 3;
        if (only_has(o, "producer")) {
                fprintf(stderr, "rbk-bench: producer, %ld messages of %d "
                                "bytes per run, %d rounds, %d allocator%s\n",
                        o->n, o->payload, prounds, nalloc,
                        nalloc > 1 ? "s" : "");
                for (int round = 1; round <= prounds; round++)
                        run_round(o, rnd, runs, "producer", "produce", p_arms,
                                  p_labels, 4, allocs, nalloc, round);
        }

        /* Consumer: the topic is filled once; every arm reads all of it. */
        static const char *const c_labels[] = {"raw_a", "raw_b", "ours_off",
                                               "ours_on", "raw_id"};
        static const char *const c_arms[] = {"raw", "raw", "ours_off",
                                             "ours_on", "raw_id"};
        int consumer_ok = 0;
        if (only_has(o, "consumer")) {
                fprintf(stderr, "rbk-bench: consumer, filling %s with %ld "
                                "messages\n",
                        o->ctopic, o->cn);
                run_t *fill = run_child(o, "prefill", "prefill", NULL,
                                        "prefill", 0, 0);
                consumer_ok = fill->ok;
                g_ptr_array_add(runs, fill);
        }
        if (consumer_ok) {
                for (int round = 1; round <= o->rounds; round++)
                        run_round(o, rnd, runs, "consumer", "consume", c_arms,
                                  c_labels, 5, allocs, nalloc, round);
        }

        /* Latency at a fixed rate: pairs of both arms, random order. */
        int lrounds = o->quick ? 1 : 3;
        if (only_has(o, "latency")) {
                fprintf(stderr, "rbk-bench: latency, %d msgs/s for %d s, %d "
                                "pairs\n",
                        o->rate, o->seconds, lrounds);
                static const char *const l_arms[] = {"raw", "ours"};
                for (int round = 1; round <= lrounds; round++) {
                        int ord[2] = {0, 1};
                        shuffle(rnd, ord, 2);
                        for (int k = 0; k < 2; k++)
                                g_ptr_array_add(
                                    runs, run_child(o, "latency", "latency",
                                                    l_arms[ord[k]],
                                                    l_arms[ord[k]], round,
                                                    k + 1));
                }
        }

        if (only_has(o, "requests")) {
                fprintf(stderr, "rbk-bench: requests, %d fresh clients, %d "
                                "through the singleton\n",
                        o->fresh, o->singleton);
                g_ptr_array_add(runs, run_child(o, "requests", "requests",
                                                "singleton", "singleton", 1,
                                                1));
                g_ptr_array_add(runs, run_child(o, "requests", "requests",
                                                "fresh", "fresh", 1, 2));
        }

        /* Batch handlers against the single-message run API and raw
         * librdkafka, on the consumer topic (filled above, or now). */
        static const char *const b_arms[] = {"raw", "run", "batch1",
                                             "batch16", "batch256"};
        if (only_has(o, "batch")) {
                if (!consumer_ok) {
                        run_t *fill = run_child(o, "prefill", "prefill", NULL,
                                                "prefill", 0, 0);
                        consumer_ok = fill->ok;
                        g_ptr_array_add(runs, fill);
                }
                fprintf(stderr, "rbk-bench: batch handlers, %ld messages, "
                                "%d rounds\n",
                        o->cn, o->rounds);
                for (int round = 1; consumer_ok && round <= o->rounds;
                     round++) {
                        int ord[5] = {0, 1, 2, 3, 4};
                        shuffle(rnd, ord, 5);
                        for (int k = 0; k < 5; k++)
                                g_ptr_array_add(
                                    runs, run_child(o, "batch", "consume",
                                                    b_arms[ord[k]],
                                                    b_arms[ord[k]], round,
                                                    k + 1));
                }
        }

        if (only_has(o, "dedup")) {
                fprintf(stderr, "rbk-bench: dedup window against an LRU, "
                                "%ld ids\n",
                        o->dedup_n);
                g_ptr_array_add(runs, run_child(o, "dedup", "dedup", NULL,
                                                "dedup", 1, 1));
        }

        double load_end = loadavg1();
        double elapsed = (double)(now_ns() - t_start) / 1e9;

        /* ---- paired ratios (the producer and consumer ones again under
         * jemalloc, appended below) */
        cmp_t base[] = {
            {"producer_aa_cpu", "producer A/A: raw CPU/msg over raw CPU/msg",
             "producer", "raw_b", "raw_a", 0, NULL, NULL, 0, 0, 0, 0},
            {"producer_aa_tput", "producer A/A: raw throughput over raw",
             "producer", "raw_b", "raw_a", 1, NULL, NULL, 0, 0, 0, 0},
            {"producer_cpu_ratio",
             "producer: raw (with id header) CPU/msg over ours", "producer",
             "ours", "raw_a", 0, "producer_aa_cpu", ">= 0.95", 0, 0, 0, 0},
            {"producer_ratio", "producer: our throughput over raw", "producer",
             "ours", "raw_a", 1, "producer_aa_tput", ">= 0.98", 0, 0, 0, 0},
            {"id_header_cost",
             "raw with id header CPU/msg over raw without header", "producer",
             "raw_nohdr", "raw_a", 0, "producer_aa_cpu", NULL, 0, 0, 0, 0},
            {"robust_vs_bare_producer",
             "producer: ours (with ids) CPU/msg over raw without header",
             "producer", "raw_nohdr", "ours", 0, "producer_aa_cpu", "<= 1.5",
             0, 0, 0, 0},
            {"consumer_aa_cpu", "consumer A/A: raw CPU/msg over raw CPU/msg",
             "consumer", "raw_b", "raw_a", 0, NULL, NULL, 0, 0, 0, 0},
            {"consumer_aa_tput", "consumer A/A: raw throughput over raw",
             "consumer", "raw_b", "raw_a", 1, NULL, NULL, 0, 0, 0, 0},
            {"consumer_cpu_ratio",
             "consumer: raw CPU/msg over ours (dedup off)", "consumer",
             "ours_off", "raw_a", 0, "consumer_aa_cpu", ">= 0.9", 0, 0, 0, 0},
            {"consumer_tput_ratio",
             "consumer: our throughput (dedup off) over raw", "consumer",
             "ours_off", "raw_a", 1, "consumer_aa_tput", NULL, 0, 0, 0, 0},
            {"consumer_dedup_ratio",
             "consumer: ours dedup off CPU/msg over dedup on", "consumer",
             "ours_on", "ours_off", 0, "consumer_aa_cpu", ">= 0.95", 0, 0, 0,
             0},
            {"consumer_dedup_tput",
             "consumer: throughput dedup on over dedup off", "consumer",
             "ours_on", "ours_off", 1, "consumer_aa_tput", NULL, 0, 0, 0, 0},
            {"consumer_id_cost",
             "consumer: raw reading the id header CPU/msg over raw not "
             "reading it", "consumer", "raw_a", "raw_id", 0, "consumer_aa_cpu",
             NULL, 0, 0, 0, 0},
            {"consumer_id_cpu",
             "consumer: raw reading the id header CPU/msg over ours (dedup "
             "off)", "consumer", "ours_off", "raw_id", 0, "consumer_aa_cpu",
             NULL, 0, 0, 0, 0},
            {"consumer_total_cpu",
             "consumer: raw CPU/msg over ours (dedup on, the default)",
             "consumer", "ours_on", "raw_a", 0, "consumer_aa_cpu", NULL, 0, 0,
             0, 0},
            {"batch_run_cpu",
             "batch: raw CPU/msg over the run API's single-message handler",
             "batch", "run", "raw", 0, "consumer_aa_cpu", NULL, 0, 0, 0, 0},
            {"batch1_cpu", "batch: raw CPU/msg over batches of 1", "batch",
             "batch1", "raw", 0, "consumer_aa_cpu", NULL, 0, 0, 0, 0},
            {"batch16_cpu", "batch: raw CPU/msg over batches of 16", "batch",
             "batch16", "raw", 0, "consumer_aa_cpu", NULL, 0, 0, 0, 0},
            {"batch256_cpu", "batch: raw CPU/msg over batches of 256", "batch",
             "batch256", "raw", 0, "consumer_aa_cpu", NULL, 0, 0, 0, 0},
            {"batch16_vs_run", "batch: single-message handler CPU/msg over "
             "batches of 16", "batch", "batch16", "run", 0, "consumer_aa_cpu",
             NULL, 0, 0, 0, 0},
            {"batch256_tput", "batch: batches of 256 throughput over raw",
             "batch", "batch256", "raw", 1, "consumer_aa_tput", NULL, 0, 0, 0,
             0},
            {"batch16_tput", "batch: batches of 16 throughput over raw",
             "batch", "batch16", "raw", 1, "consumer_aa_tput", NULL, 0, 0, 0,
             0},
            {"batch_run_tput", "batch: the single-message handler's "
             "throughput over raw", "batch", "run", "raw", 1,
             "consumer_aa_tput", NULL, 0, 0, 0, 0},
        };
        int nbase = (int)G_N_ELEMENTS(base);
        cmp_t *cs = g_new0(cmp_t, 2 * (size_t)nbase);
        GPtrArray *cmp_strs = g_ptr_array_new_with_free_func(g_free);
        int ncs = 0;
        for (int i = 0; i < nbase; i++)
                cs[ncs++] = base[i];
        for (int ai = 1; ai < nalloc; ai++) {
                for (int i = 0; i < nbase; i++) {
                        const cmp_t *b = &base[i];
                        if (strcmp(b->bench, "producer") &&
                            strcmp(b->bench, "consumer"))
                                continue;
                        cmp_t *c = &cs[ncs++];
                        *c = *b;
                        c->name = g_strdup_printf("%s%s", b->name,
                                                  allocs[ai].metric);
                        g_ptr_array_add(cmp_strs, (char *)c->name);
                        c->what = g_strdup_printf("%s (jemalloc)", b->what);
                        g_ptr_array_add(cmp_strs, (char *)c->what);
                        c->num = g_strdup_printf("%s%s", b->num,
                                                 allocs[ai].suffix);
                        g_ptr_array_add(cmp_strs, (char *)c->num);
                        c->den = g_strdup_printf("%s%s", b->den,
                                                 allocs[ai].suffix);
                        g_ptr_array_add(cmp_strs, (char *)c->den);
                        if (b->aa) {
                                c->aa = g_strdup_printf("%s%s", b->aa,
                                                        allocs[ai].metric);
                                g_ptr_array_add(cmp_strs, (char *)c->aa);
                        }
                        if (!strcmp(b->name, "robust_vs_bare_producer"))
                                c->target = "<= 1.3";
                }
        }
        for (int i = 0; i < ncs; i++)
                cmp_compute(&cs[i], runs, prounds);

        /* ---- single-run benchmarks */
        const run_t *rq_fresh = find_run(runs, "requests", "fresh", 1);
        const run_t *rq_single = find_run(runs, "requests", "singleton", 1);
        const run_t *dd = find_run(runs, "dedup", "dedup", 1);
        double fresh_vs_single = rq_fresh && rq_single && rq_fresh->ok && rq_single->ok
                                     ? kv_num(rq_fresh, "p50_ms") /
                                           kv_num(rq_single, "p50_ms")
                                     : NAN;
        double dedup_vs_lru = dd && dd->ok ? kv_num(dd, "ratio") : NAN;

        /* The noise floor of the summary: the union of the CPU A/A IQRs. */
        cmp_t *pa = cmp_find(cs, ncs, "producer_aa_cpu");
        cmp_t *ca = cmp_find(cs, ncs, "consumer_aa_cpu");
        double aa_lo = NAN, aa_hi = NAN;
        if (pa->pairs) {
                aa_lo = pa->q1;
                aa_hi = pa->q3;
        }
        if (ca->pairs) {
                aa_lo = isnan(aa_lo) ? ca->q1 : MIN(aa_lo, ca->q1);
                aa_hi = isnan(aa_hi) ? ca->q3 : MAX(aa_hi, ca->q3);
        }

        /* ---- runs.csv */
        char *path = g_build_filename(o->out, "runs.csv", NULL);
        FILE *f = fopen(path, "w");
        if (f) {
                fprintf(f, "bench,round,order,arm,ok,msgs,wall_s,user_s,sys_s,"
                           "cpu_s_per_1M,msgs_per_s,load1\n");
                for (guint i = 0; i < runs->len; i++) {
                        const run_t *r = g_ptr_array_index(runs, i);
                        fprintf(f, "%s,%d,%d,%s,%d,%.0f,%.6f,%.6f,%.6f,%.4f,%.1f,%.2f\n",
                                r->bench, r->round, r->order, r->arm, r->ok,
                                r->msgs, r->wall, r->user, r->sys,
                                run_cpu_per_msg(r) * 1e6, run_tput(r), r->load);
                }
                fclose(f);
        }
        g_free(path);

        /* ---- ratios.dat and chart.gp (rendered by scripts/run-bench) */
        path = g_build_filename(o->out, "ratios.dat", NULL);
        f = fopen(path, "w");
        static const char *const charted[] = {
            "producer_aa_cpu",    "producer_cpu_ratio", "id_header_cost",
            "producer_aa_tput",   "producer_ratio",     "consumer_aa_cpu",
            "consumer_cpu_ratio", "consumer_id_cpu", "consumer_dedup_ratio",
            "consumer_total_cpu",
            "consumer_aa_tput",   "consumer_tput_ratio",
            "robust_vs_bare_producer", "producer_aa_cpu_jemalloc",
            "producer_cpu_ratio_jemalloc", "id_header_cost_jemalloc",
            "robust_vs_bare_producer_jemalloc", "consumer_aa_cpu_jemalloc",
            "consumer_cpu_ratio_jemalloc"};
        int charted_rows = 0;
        if (f) {
                fprintf(f, "# metric median q1 q3\n");
                for (size_t i = 0; i < G_N_ELEMENTS(charted); i++) {
                        cmp_t *c = cmp_find(cs, ncs, charted[i]);
                        if (c && c->pairs) {
                                fprintf(f, "%s %.4f %.4f %.4f\n", c->name,
                                        c->median, c->q1, c->q3);
                                charted_rows++;
                        }
                }
                fclose(f);
        }
        g_free(path);
        /* No paired ratio (--only without producer or consumer): no chart. */
        path = g_build_filename(o->out, "chart.gp", NULL);
        f = charted_rows ? fopen(path, "w") : NULL;
        if (!charted_rows)
                g_unlink(path);
        if (f) {
                fprintf(f,
                        "set terminal pngcairo size 1100,560 font 'sans,10'\n"
                        "set output 'chart.png'\n"
                        "set title 'librobustkafka against raw librdkafka "
                        "(%s cluster): median paired ratio, bars = IQR; "
                        "higher is better (id_header_cost: cost of the "
                        "header)'\n"
                        "set style fill solid 0.5 border -1\n"
                        "set boxwidth 0.6\n"
                        "set xtics rotate by -30 noenhanced\n"
                        "set yrange [0:*]\n"
                        "set grid ytics\n"
                        "set key off\n"
                        "set arrow from graph 0, first 1 to graph 1, first 1 "
                        "nohead lc rgb 'black' dt 2\n"
                        "plot 'ratios.dat' using 0:2:xtic(1) with boxes lc "
                        "rgb '#4a7ebb', '' using 0:2:3:4 with yerrorbars "
                        "lc rgb 'black' pt 0\n",
                        o->label);
                fclose(f);
        }
        g_free(path);

        /* ---- results.md */
        char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
        GString *md = g_string_new(NULL);
        char *date = g_date_time_format(started, "%Y-%m-%d %H:%M %Z");
        char *model = cpu_model();
        struct utsname un;
        uname(&un);
        double lmin = 1e9, lmax = 0, lsum = 0;
        int ln = 0;
        for (guint i = 0; i < runs->len; i++) {
                const run_t *r = g_ptr_array_index(runs, i);
                if (r->load < 0)
                        continue;
                lmin = MIN(lmin, r->load);
                lmax = MAX(lmax, r->load);
                lsum += r->load;
                ln++;
        }
        GString *cmdline = g_string_new(NULL);
        for (int i = 0; i < argc; i++)
                g_string_append_printf(cmdline, "%s%s", i ? " " : "", argv[i]);
        g_string_append_printf(
            md,
            "# librobustkafka benchmark: %s cluster\n\n"
            "- Date: %s; %.0f s\n"
            "- Machine: %s, %ld CPUs, %s %s\n"
            "- librdkafka %s, librobustkafka %s\n"
            "- Command: `%s`\n"
            "- Load average (1 min): %.2f at start, %.2f at end; at the "
            "start of each run min %.2f, mean %.2f, max %.2f\n"
            "- Producer: %ld messages of %d bytes, key of 5 bytes, %s, %d "
            "rounds; consumer: %ld messages on the pre-filled topic %s (64 "
            "partitions), %d rounds; the arms of a round in random order "
            "(seed %u); each arm a process of its own\n\n",
            o->label, date, elapsed, model, sysconf(_SC_NPROCESSORS_ONLN),
            un.sysname, un.release, rd_kafka_version_str(), rbk_version_str(),
            cmdline->str, load_start, load_end, ln ? lmin : -1,
            ln ? lsum / ln : -1, ln ? lmax : -1, o->n, o->payload,
            o->ptopic, prounds, o->cn, o->ctopic, o->rounds, seed);
        g_string_free(cmdline, TRUE);
        g_string_append(
            md, "## Paired ratios (CPU: other/ours per message; throughput: "
                "ours/other; higher is better)\n\n"
                "A difference is called real only when the median lies "
                "outside the A/A inter-quartile range of the same kind.\n\n"
                "| metric | median | IQR | pairs | A/A IQR | verdict | target | "
                "what |\n|---|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < ncs; i++) {
                cmp_t *c = &cs[i];
                cmp_t *aa = c->aa ? cmp_find(cs, ncs, c->aa) : NULL;
                const char *verdict = "";
                char aabuf[64] = "";
                if (aa && aa->pairs && c->pairs) {
                        g_snprintf(aabuf, sizeof(aabuf), "%.3f..%.3f", aa->q1,
                                   aa->q3);
                        verdict = c->median < aa->q1 || c->median > aa->q3
                                      ? "real"
                                      : "within noise";
                }
                int met = target_met(c, c->median);
                g_string_append_printf(
                    md, "| %s | %s | %s..%s | %d | %s | %s | %s%s | %s |\n",
                    c->name, fmt_num(b1, sizeof(b1), c->median, "%.3f"),
                    fmt_num(b2, sizeof(b2), c->q1, "%.3f"),
                    fmt_num(b3, sizeof(b3), c->q3, "%.3f"), c->pairs, aabuf,
                    verdict, c->target ? c->target : "",
                    met < 0 ? "" : met ? " (met)" : " (missed)", c->what);
        }
        g_string_append(md, "\n## Per arm (median and IQR over rounds)\n\n"
                            "| bench | arm | runs | CPU s per 1M msgs | IQR | "
                            "msgs/s | IQR |\n|---|---|---|---|---|---|---|\n");
        static const char *const all_arms[2][5] = {
            {"raw_a", "raw_b", "ours", "raw_nohdr", NULL},
            {"raw_a", "raw_b", "ours_off", "ours_on", "raw_id"}};
        for (int bi = 0; bi < 2; bi++) {
                const char *bench = bi ? "consumer" : "producer";
                for (int ai = 0; ai < nalloc; ai++) {
                        for (int k = 0; k < 5 && all_arms[bi][k]; k++) {
                                double st[6];
                                int n;
                                char arm[24];
                                g_snprintf(arm, sizeof(arm), "%s%s",
                                           all_arms[bi][k], allocs[ai].suffix);
                                arm_stats(runs, bench, arm, st, &n);
                                if (!n)
                                        continue;
                                g_string_append_printf(
                                    md, "| %s | %s | %d | %.3f | %.3f..%.3f | "
                                        "%.0f | %.0f..%.0f |\n",
                                    bench, arm, n, st[0], st[1], st[2], st[3],
                                    st[4], st[5]);
                        }
                }
        }
        if (find_run(runs, "latency", "raw", 1) ||
            find_run(runs, "latency", "ours", 1)) {
                g_string_append_printf(
                    md, "\n## Send-to-delivery latency at %d msgs/s for %d s "
                        "(%d pairs, random order in each)\n\n"
                        "| round | arm | p50 ms | p99 ms | max ms | errors |\n"
                        "|---|---|---|---|---|---|\n",
                    o->rate, o->seconds, lrounds);
                for (int round = 1; round <= lrounds; round++) {
                        static const char *const la[2] = {"raw", "ours"};
                        for (int k = 0; k < 2; k++) {
                                const run_t *l = find_run(runs, "latency",
                                                          la[k], round);
                                if (!l)
                                        continue;
                                g_string_append_printf(
                                    md, "| %d | %s | %s | %s | %s | %s |\n",
                                    round, l->arm,
                                    fmt_num(b1, sizeof(b1), kv_num(l, "p50_ms"), "%.2f"),
                                    fmt_num(b2, sizeof(b2), kv_num(l, "p99_ms"), "%.2f"),
                                    fmt_num(b3, sizeof(b3), kv_num(l, "max_ms"), "%.2f"),
                                    fmt_num(b4, sizeof(b4), kv_num(l, "errors"), "%.0f"));
                        }
                }
        }
        if (rq_fresh || rq_single) {
                g_string_append(md, "\n## Per-request latency: fresh producer "
                                    "per request (new, send_sync, destroy) "
                                    "against the singleton (rbk_producer_get, "
                                    "send_sync)\n\n"
                                    "| mode | requests | p50 ms | p99 ms | max ms | "
                                    "stalls > 500 ms |\n|---|---|---|---|---|---|\n");
                const run_t *rs[2] = {rq_single, rq_fresh};
                for (int k = 0; k < 2; k++)
                        if (rs[k])
                                g_string_append_printf(
                                    md, "| %s | %s | %s | %s | %s | %s |\n",
                                    rs[k]->arm,
                                    fmt_num(b1, sizeof(b1), kv_num(rs[k], "msgs"), "%.0f"),
                                    fmt_num(b2, sizeof(b2), kv_num(rs[k], "p50_ms"), "%.2f"),
                                    fmt_num(b3, sizeof(b3), kv_num(rs[k], "p99_ms"), "%.2f"),
                                    fmt_num(b4, sizeof(b4), kv_num(rs[k], "max_ms"), "%.2f"),
                                    fmt_num(b5, sizeof(b5), kv_num(rs[k], "stalls"), "%.0f"));
                g_string_append_printf(md, "\nfresh_vs_singleton_p50 = %s\n",
                                       fmt_num(b1, sizeof(b1), fresh_vs_single, "%.1f"));
        }
        if (dd) {
                double np = kv_num(dd, "producers");
                g_string_append_printf(
                    md,
                    "\n## Dedup window against a GHashTable+GQueue LRU of "
                    "%d ids (%.0f ids from %.0f producers, thread CPU time, "
                    "median of 9 alternating runs)\n\n"
                    "| structure | ns/msg (median) | ns/msg (best) | bytes per "
                    "tracked producer | coverage |\n|---|---|---|---|---|\n",
                    LRU_CAP, kv_num(dd, "msgs"), np);
                g_string_append_printf(
                    md,
                    "| dedup window, the consumer's path (check + record on "
                    "the partition handle, id parsed once) | %s | %s | %s "
                    "(heap %s) | the window's last sequences of each "
                    "producer |\n",
                    fmt_num(b1, sizeof(b1), kv_num(dd, "win_ns"), "%.1f"),
                    fmt_num(b2, sizeof(b2), kv_num(dd, "win_best_ns"), "%.1f"),
                    fmt_num(b3, sizeof(b3), kv_num(dd, "win_bytes") / np, "%.0f"),
                    fmt_num(b4, sizeof(b4), kv_num(dd, "win_heap") / np, "%.0f"));
                g_string_append_printf(
                    md,
                    "| dedup window by topic and partition, id parsed "
                    "(_msgid calls) | %s | | same | same |\n",
                    fmt_num(b1, sizeof(b1), kv_num(dd, "pre_ns"), "%.1f"));
                g_string_append_printf(
                    md,
                    "| dedup window by topic and partition, raw header "
                    "(parse included) | %s | %s | same | same |\n",
                    fmt_num(b1, sizeof(b1), kv_num(dd, "raw_ns"), "%.1f"),
                    fmt_num(b2, sizeof(b2), kv_num(dd, "raw_best_ns"), "%.1f"));
                g_string_append_printf(
                    md, "| LRU | %s | %s | %s | last %d ids of all producers |\n\n",
                    fmt_num(b1, sizeof(b1), kv_num(dd, "lru_ns"), "%.1f"),
                    fmt_num(b2, sizeof(b2), kv_num(dd, "lru_best_ns"), "%.1f"),
                    fmt_num(b3, sizeof(b3), kv_num(dd, "lru_heap") / np, "%.0f"),
                    LRU_CAP);
                g_string_append_printf(
                    md, "dedup_vs_lru = %s (IQR of the 9 paired ratios %s..%s): "
                        "the path the consumer calls (rbk__dedup_check_part "
                        "and rbk__dedup_record_part on the partition's "
                        "handle, with the id the consumer parsed once for "
                        "rbk_message_t.msgid; the partition lock included); "
                        "by topic and partition (_msgid calls) %s, with the "
                        "raw header (rbk__dedup_check/record) %s.\n",
                    fmt_num(b1, sizeof(b1), dedup_vs_lru, "%.3f"),
                    fmt_num(b2, sizeof(b2), kv_num(dd, "ratio_q1"), "%.3f"),
                    fmt_num(b3, sizeof(b3), kv_num(dd, "ratio_q3"), "%.3f"),
                    fmt_num(b4, sizeof(b4), kv_num(dd, "pre_ratio"), "%.3f"),
                    fmt_num(b5, sizeof(b5), kv_num(dd, "raw_ratio"), "%.3f"));
        }

        /* ---- the summary line */
        cmp_t *pc = cmp_find(cs, ncs, "producer_cpu_ratio");
        cmp_t *pr = cmp_find(cs, ncs, "producer_ratio");
        cmp_t *ih = cmp_find(cs, ncs, "id_header_cost");
        cmp_t *cc = cmp_find(cs, ncs, "consumer_cpu_ratio");
        cmp_t *cd = cmp_find(cs, ncs, "consumer_dedup_ratio");
        cmp_t *rb = cmp_find(cs, ncs, "robust_vs_bare_producer");
        /* The jemalloc ratios (NULL without jemalloc: n/a). */
        cmp_t *pcj = cmp_find(cs, ncs, "producer_cpu_ratio_jemalloc");
        cmp_t *ccj = cmp_find(cs, ncs, "consumer_cpu_ratio_jemalloc");
        cmp_t *rbj = cmp_find(cs, ncs, "robust_vs_bare_producer_jemalloc");
        char f1[32], f2[32], f3[32], j1[32], j2[32], j3[32], j4[32];
#define CMP_MEDIAN(c) ((c) && (c)->pairs ? (c)->median : NAN)
        char *summary = g_strdup_printf(
            "bench: producer_cpu_ratio=%s producer_ratio=%s "
            "id_header_cost=%s consumer_cpu_ratio=%s "
            "consumer_dedup_ratio=%s dedup_vs_lru=%s "
            "fresh_vs_singleton_p50=%s aa_iqr=%s..%s "
            "producer_cpu_ratio_jemalloc=%s consumer_cpu_ratio_jemalloc=%s "
            "robust_vs_bare_producer=%s robust_vs_bare_producer_jemalloc=%s",
            fmt_num(b1, sizeof(b1), CMP_MEDIAN(pc), "%.3f"),
            fmt_num(b2, sizeof(b2), CMP_MEDIAN(pr), "%.3f"),
            fmt_num(b3, sizeof(b3), CMP_MEDIAN(ih), "%.3f"),
            fmt_num(b4, sizeof(b4), CMP_MEDIAN(cc), "%.3f"),
            fmt_num(b5, sizeof(b5), CMP_MEDIAN(cd), "%.3f"),
            fmt_num(b6, sizeof(b6), dedup_vs_lru, "%.3f"),
            fmt_num(f1, sizeof(f1), fresh_vs_single, "%.1f"),
            fmt_num(f2, sizeof(f2), aa_lo, "%.3f"),
            fmt_num(f3, sizeof(f3), aa_hi, "%.3f"),
            fmt_num(j1, sizeof(j1), CMP_MEDIAN(pcj), "%.3f"),
            fmt_num(j2, sizeof(j2), CMP_MEDIAN(ccj), "%.3f"),
            fmt_num(j3, sizeof(j3), CMP_MEDIAN(rb), "%.3f"),
            fmt_num(j4, sizeof(j4), CMP_MEDIAN(rbj), "%.3f"));
#undef CMP_MEDIAN
        g_string_append_printf(md, "\n## Summary\n\n```\n%s\n```\n\n"
                                   "id_header_cost is raw-with-header CPU per "
                                   "message over raw-without-header (above 1: "
                                   "the header costs). aa_iqr is the union of "
                                   "the producer and consumer CPU A/A "
                                   "inter-quartile ranges under glibc (each "
                                   "ratio's own A/A, per allocator, is in "
                                   "the table above). robust_vs_bare_producer "
                                   "is ours (with ids) CPU per message over "
                                   "raw without a header (below is better). "
                                   "The _jemalloc ratios are the same arms "
                                   "under LD_PRELOAD of jemalloc, in the same "
                                   "rounds. The chart is chart.png, every "
                                   "run is in runs.csv.\n",
                               summary);
        path = g_build_filename(o->out, "results.md", NULL);
        if (!g_file_set_contents(path, md->str, -1, NULL))
                fprintf(stderr, "rbk-bench: cannot write %s\n", path);
        g_free(path);
        printf("%s\n", summary);
        g_free(summary);
        g_string_free(md, TRUE);
        g_free(date);
        g_free(model);
        g_date_time_unref(started);
        g_ptr_array_free(runs, TRUE);
        g_rand_free(rnd);
        g_free(cs);
        g_ptr_array_free(cmp_strs, TRUE);
        return 0;
}

/* ------------------------------------------------------------ main */

static int usage(void) {
        fprintf(stderr,
                "usage: rbk-bench run --bootstrap=B [--out=DIR] [--quick] "
                "[--label=L] [--only=producer,consumer,latency,requests,dedup,batch]\n"
                "       rbk-bench produce raw|raw_nohdr|ours --bootstrap=B\n"
                "       rbk-bench consume raw|raw_id|ours_off|ours_on|run|batchN --bootstrap=B\n"
                "       rbk-bench latency raw|ours --bootstrap=B\n"
                "       rbk-bench requests fresh|singleton --bootstrap=B\n"
                "       rbk-bench prefill --bootstrap=B\n"
                "       rbk-bench dedup\n"
                "options: --messages=N --consume-messages=N --payload=BYTES "
                "--rounds=N --rate=N --seconds=N --fresh=N --singleton=N "
                "--dedup-messages=N --ptopic=T --ctopic=T --timeout=S\n"
                "         --conf=name=value,... (extra properties for every arm)\n");
        return 2;
}

int main(int argc, char **argv) {
        opts_t o;
        opts_defaults(&o);
        if (argc < 2)
                return usage();
        const char *cmd = argv[1];
        int takes_arm = !strcmp(cmd, "produce") || !strcmp(cmd, "consume") ||
                        !strcmp(cmd, "latency") || !strcmp(cmd, "requests");
        if (takes_arm && argc < 3)
                return usage();
        const char *quick = getenv("BENCH_QUICK");
        if (quick && *quick && strcmp(quick, "0"))
                opts_quick(&o);
        if (opts_parse(&o, argc, argv, takes_arm ? 3 : 2))
                return usage();
        self_exe = g_file_read_link("/proc/self/exe", NULL);
        if (!self_exe)
                self_exe = g_strdup(argv[0]);
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (getenv("BENCH_LOG_LEVEL"))
                log_max = atoi(getenv("BENCH_LOG_LEVEL"));
        int rc;
        if (!strcmp(cmd, "dedup"))
                rc = cmd_dedup(&o);
        else if (!o.bootstrap || !*o.bootstrap)
                rc = usage();
        else if (!strcmp(cmd, "run"))
                rc = cmd_run(&o, argc, argv);
        else if (!strcmp(cmd, "produce"))
                rc = cmd_produce(&o, argv[2]);
        else if (!strcmp(cmd, "consume"))
                rc = cmd_consume(&o, argv[2]);
        else if (!strcmp(cmd, "latency"))
                rc = cmd_latency(&o, argv[2]);
        else if (!strcmp(cmd, "requests"))
                rc = cmd_requests(&o, argv[2]);
        else if (!strcmp(cmd, "prefill"))
                rc = cmd_prefill(&o);
        else
                rc = usage();
        g_free(self_exe);
        return rc;
}
