/* The hook dispatcher: rate limiting, repeat flag, prefix stripping, JSON,
 * redaction, serialisation, log levels, the version check. */
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"
#include "robustkafka.h"

/* ------------------------------------------------------------ capture */

typedef struct {
        GMutex lock;
        int n;
        rbk_event_class_t cls[64];
        int repeat[64];
        uint64_t suppressed[64];
        char *client[64];
        char *topic[64];
        char *group[64];
        char *message[64];
        gint inside;  /* hook calls running right now */
        gint overlap; /* times two ran at once */
        gint total;
} capture_t;

static void capture_init(capture_t *c) {
        memset(c, 0, sizeof(*c));
        g_mutex_init(&c->lock);
}

static void capture_clear(capture_t *c) {
        for (int i = 0; i < c->n && i < 64; i++) {
                g_free(c->client[i]);
                g_free(c->topic[i]);
                g_free(c->group[i]);
                g_free(c->message[i]);
        }
        g_mutex_clear(&c->lock);
}

static void hook(const rbk_event_t *ev, void *opaque) {
        capture_t *c = opaque;
        if (g_atomic_int_add(&c->inside, 1) != 0)
                g_atomic_int_inc(&c->overlap);
        g_atomic_int_inc(&c->total);
        g_mutex_lock(&c->lock);
        if (c->n < 64) {
                int i = c->n;
                c->cls[i] = ev->cls;
                c->repeat[i] = ev->repeat;
                c->suppressed[i] = ev->suppressed;
                c->client[i] = g_strdup(ev->client);
                c->topic[i] = g_strdup(ev->topic);
                c->group[i] = g_strdup(ev->group);
                c->message[i] = g_strdup(ev->message);
        }
        c->n++;
        g_mutex_unlock(&c->lock);
        g_atomic_int_add(&c->inside, -1);
}

typedef struct {
        GMutex lock;
        GPtrArray *lines; /* "LEVEL|fac|line" */
} logcap_t;

static void log_cb(int level, const char *fac, const char *line,
                   void *opaque) {
        logcap_t *l = opaque;
        g_mutex_lock(&l->lock);
        g_ptr_array_add(l->lines, g_strdup_printf("%d|%s|%s", level, fac, line));
        g_mutex_unlock(&l->lock);
}

static void logcap_init(logcap_t *l) {
        g_mutex_init(&l->lock);
        l->lines = g_ptr_array_new_with_free_func(g_free);
}

static void logcap_clear(logcap_t *l) {
        g_ptr_array_free(l->lines, TRUE);
        g_mutex_clear(&l->lock);
}

/* 1 if any captured line contains @p needle. */
static int logcap_has(logcap_t *l, const char *needle) {
        for (guint i = 0; i < l->lines->len; i++)
                if (strstr(g_ptr_array_index(l->lines, i), needle))
                        return 1;
        return 0;
}

static void quiet_log_cb(int level, const char *fac, const char *line,
                         void *opaque) {}

/* A configuration with the capturing hook and log callback (a silent log
 * callback when @p l is NULL, to keep the test output readable). */
static rbk_conf_t *mkconf(capture_t *c, logcap_t *l, const char *rate,
                          const char *prefix) {
        rbk_conf_t *conf = rbk_conf_new();
        char errstr[256];
        ck_assert_ptr_nonnull(conf);
        if (c)
                rbk_conf_set_hook(conf, hook, c);
        if (l)
                rbk_conf_set_log_cb(conf, log_cb, l);
        else
                rbk_conf_set_log_cb(conf, quiet_log_cb, NULL);
        if (rate)
                ck_assert_int_eq(rbk_conf_set(conf, "rbk.hook.rate.limit.ms",
                                              rate, errstr, sizeof(errstr)),
                                 RBK_OK);
        if (prefix)
                ck_assert_int_eq(rbk_conf_set(conf, "rbk.prefix", prefix,
                                              errstr, sizeof(errstr)),
                                 RBK_OK);
        return conf;
}

static int emit_key(rbk__hooks_t *h, const char *key) {
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_PARTITION_STALLED, RBK_SEV_WARNING);
        ev.message = "stalled";
        ev.incident_key = key;
        return rbk__hooks_emit(h, &ev);
}

/* ------------------------------------------------------------ tests */

START_TEST(rate_limit_per_key) {
        capture_t c;
        capture_init(&c);
        rbk_conf_t *conf = mkconf(&c, NULL, "300", NULL);
        rbk__hooks_t *h = rbk__hooks_new(conf, "p1");
        rbk_conf_destroy(conf);

        /* The window starts somewhere between t0 and t1. */
        int64_t t0 = rbk__now_ms();
        ck_assert_int_eq(emit_key(h, "stall:a"), 1);
        int64_t t1 = rbk__now_ms();
        ck_assert_int_eq(c.n, 1);
        ck_assert_int_eq(c.repeat[0], 0);
        ck_assert_uint_eq(c.suppressed[0], 0);

        /* Within the window: suppressed, the hook not called. */
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(emit_key(h, "stall:a"), 0);
        ck_assert_int_eq(c.n, 1);

        /* Another key is independent. */
        ck_assert_int_eq(emit_key(h, "stall:b"), 1);
        ck_assert_int_eq(c.n, 2);
        ck_assert_int_eq(c.repeat[1], 0);

        /* Events without a key are never rate-limited. */
        for (int i = 0; i < 3; i++) {
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_CLIENT_ERROR, RBK_SEV_WARNING);
                ck_assert_int_eq(rbk__hooks_emit(h, &ev), 1);
        }
        ck_assert_int_eq(c.n, 5);

        /* Keep emitting until the window is over (bounded by a deadline):
         * everything before is suppressed and counted in the one that
         * gets through. */
        int suppressed = 5;
        int64_t deadline = t0 + 5000;
        int delivered = 0;
        while (!delivered && rbk__now_ms() < deadline) {
                int64_t before = rbk__now_ms();
                delivered = emit_key(h, "stall:a");
                if (!delivered) {
                        ck_assert_msg(before - t1 < 300 + 50,
                                      "still suppressed %lld ms after",
                                      (long long)(before - t1));
                        suppressed++;
                        g_usleep(10 * 1000);
                }
        }
        ck_assert(delivered);
        ck_assert_int_ge(rbk__now_ms() - t0, 300);
        ck_assert_int_eq(c.n, 6);
        ck_assert_int_eq(c.repeat[5], 1);
        ck_assert_uint_eq(c.suppressed[5], (uint64_t)suppressed);

        /* The count restarts after a delivery. */
        ck_assert_int_eq(emit_key(h, "stall:a"), 0);
        ck_assert_int_eq(c.n, 6);

        rbk__hooks_destroy(h);
        capture_clear(&c);
}
END_TEST

/* One incident goes through several states (quarantined, resolved,
 * quarantined again, resolved again): each change is delivered however
 * soon it follows, marked as a repeat of its key; only repeats of an
 * unchanged state (a stall) are rate-limited. */
static int emit_cls(rbk__hooks_t *h, rbk_event_class_t cls, const char *key) {
        rbk_event_t ev;
        rbk__event_init(&ev, cls, RBK_SEV_CRITICAL);
        ev.incident_key = key;
        return rbk__hooks_emit(h, &ev);
}

START_TEST(rate_limit_per_class_and_key) {
        capture_t c;
        capture_init(&c);
        rbk_conf_t *conf = mkconf(&c, NULL, "60000", NULL);
        rbk__hooks_t *h = rbk__hooks_new(conf, "p1");
        rbk_conf_destroy(conf);
        const char *k = "g/t/0/42";
        ck_assert_int_eq(emit_cls(h, RBK_EV_OFFSET_OUT_OF_RANGE, k), 1);
        ck_assert_int_eq(emit_cls(h, RBK_EV_QUARANTINE_RESOLVED, k), 1);
        ck_assert_int_eq(emit_cls(h, RBK_EV_OFFSET_OUT_OF_RANGE, k), 1);
        ck_assert_int_eq(emit_cls(h, RBK_EV_QUARANTINE_RESOLVED, k), 1);
        ck_assert_int_eq(emit_cls(h, RBK_EV_HANDLER_GAVE_UP, k), 1);
        ck_assert_int_eq(emit_cls(h, RBK_EV_HANDLER_GAVE_UP, k), 1);
        ck_assert_int_eq(c.n, 6);
        ck_assert_int_eq(c.repeat[0], 0);
        ck_assert_int_eq(c.repeat[1], 0);
        ck_assert_int_eq(c.repeat[2], 1);
        ck_assert_int_eq(c.repeat[3], 1);
        /* An unchanged state repeated: rate-limited. */
        ck_assert_int_eq(emit_cls(h, RBK_EV_PARTITION_STALLED, k), 1);
        ck_assert_int_eq(emit_cls(h, RBK_EV_PARTITION_STALLED, k), 0);
        ck_assert_int_eq(c.n, 7);
        rbk__hooks_destroy(h);
        capture_clear(&c);
}
END_TEST

START_TEST(repeat_flag) {
        capture_t c;
        capture_init(&c);
        /* Rate limiting off: every event delivered, repeat still tracked. */
        rbk_conf_t *conf = mkconf(&c, NULL, "0", NULL);
        rbk__hooks_t *h = rbk__hooks_new(conf, "p1");
        rbk_conf_destroy(conf);

        ck_assert_int_eq(emit_key(h, "k1"), 1);
        ck_assert_int_eq(emit_key(h, "k1"), 1);
        ck_assert_int_eq(emit_key(h, "k2"), 1);

        /* A caller may preset repeat (e.g. an incident known from the
         * committed offsets): it is kept. */
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_OFFSET_OUT_OF_RANGE, RBK_SEV_CRITICAL);
        ev.incident_key = "k3";
        ev.repeat = 1;
        ck_assert_int_eq(rbk__hooks_emit(h, &ev), 1);

        /* Without a key, repeat stays as the caller set it. */
        rbk__event_init(&ev, RBK_EV_CLIENT_ERROR, RBK_SEV_WARNING);
        ck_assert_int_eq(rbk__hooks_emit(h, &ev), 1);

        ck_assert_int_eq(c.n, 5);
        ck_assert_int_eq(c.repeat[0], 0);
        ck_assert_int_eq(c.repeat[1], 1);
        ck_assert_int_eq(c.repeat[2], 0);
        ck_assert_int_eq(c.repeat[3], 1);
        ck_assert_int_eq(c.repeat[4], 0);
        for (int i = 0; i < 5; i++)
                ck_assert_uint_eq(c.suppressed[i], 0);

        /* Another dispatcher has its own history. */
        conf = mkconf(&c, NULL, "0", NULL);
        rbk__hooks_t *h2 = rbk__hooks_new(conf, "p2");
        rbk_conf_destroy(conf);
        ck_assert_int_eq(emit_key(h2, "k1"), 1);
        ck_assert_int_eq(c.repeat[5], 0);
        ck_assert_str_eq(c.client[5], "p2");

        rbk__hooks_destroy(h2);
        rbk__hooks_destroy(h);
        capture_clear(&c);
}
END_TEST

START_TEST(prefix_stripped_and_client_filled) {
        capture_t c;
        capture_init(&c);
        rbk_conf_t *conf = mkconf(&c, NULL, NULL, "app-1234.");
        rbk__hooks_t *h = rbk__hooks_new(conf, "orders-consumer");
        rbk_conf_destroy(conf);

        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_OFFSET_OUT_OF_RANGE, RBK_SEV_CRITICAL);
        ev.topic = "app-1234.orders";
        ev.group = "app-1234.billing";
        ev.partition = 3;
        ev.message = NULL; /* becomes "" */
        ck_assert_int_eq(rbk__hooks_emit(h, &ev), 1);

        rbk__event_init(&ev, RBK_EV_DELIVERY_FAILED, RBK_SEV_ERROR);
        ev.topic = "other.orders"; /* not prefixed: unchanged */
        ck_assert_int_eq(rbk__hooks_emit(h, &ev), 1);

        ck_assert_int_eq(c.n, 2);
        ck_assert_str_eq(c.topic[0], "orders");
        ck_assert_str_eq(c.group[0], "billing");
        ck_assert_str_eq(c.client[0], "orders-consumer");
        ck_assert_str_eq(c.message[0], "");
        ck_assert_str_eq(c.topic[1], "other.orders");
        ck_assert_ptr_null(c.group[1]);

        rbk__hooks_destroy(h);

        /* No name, no conf: "anonymous", no hook, still "delivered". */
        h = rbk__hooks_new(NULL, NULL);
        rbk__event_init(&ev, RBK_EV_CLIENT_ERROR, RBK_SEV_INFO);
        ck_assert_int_eq(rbk__hooks_emit(h, &ev), 1);
        ck_assert_str_eq(ev.client, "anonymous");
        rbk__hooks_destroy(h);
        capture_clear(&c);
}
END_TEST

START_TEST(json_escaping_and_omission) {
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_CLIENT_ERROR, RBK_SEV_WARNING);
        char *j = rbk_event_to_json(&ev);
        ck_assert_str_eq(j, "{\"version\":2,\"class\":\"client_error\","
                            "\"severity\":\"warning\",\"message\":\"\","
                            "\"repeat\":false,\"suppressed\":0}");
        rbk_free(j);

        rbk__event_init(&ev, RBK_EV_OFFSET_OUT_OF_RANGE, RBK_SEV_CRITICAL);
        ev.err = RBK_ERR_OUT_OF_RANGE;
        ev.kafka_err = RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET;
        ev.client = "c";
        ev.message = "q\"b\\n\nt\tc\001d\x7f" "e\xc3\xa9" "f\xff" "g\r";
        ev.incident_key = "oor:g:t:0";
        ev.repeat = 1;
        ev.suppressed = 7;
        ev.group = "g";
        ev.topic = "t";
        ev.partition = 0;
        ev.offset = 100;
        ev.committed_offset = 100;
        ev.low_watermark = 200;
        ev.high_watermark = 300;
        ev.gap = -100; /* negative values other than RBK_NO_VALUE are kept */
        ev.id = "9f86d081884c7d65-1";
        j = rbk_event_to_json(&ev);
        ck_assert_str_eq(
            j, "{\"version\":2,\"class\":\"offset_out_of_range\","
               "\"severity\":\"critical\",\"err\":\"RBK_ERR_OUT_OF_RANGE\","
               "\"kafka_err\":-140,\"kafka_err_name\":\"_AUTO_OFFSET_RESET\","
               "\"client\":\"c\","
               "\"message\":\"q\\\"b\\\\n\\nt\\tc\\u0001d\\u007fe\xc3\xa9"
               "f\\ufffdg\\r\","
               "\"incident_key\":\"oor:g:t:0\",\"repeat\":true,"
               "\"suppressed\":7,\"group\":\"g\",\"topic\":\"t\","
               "\"partition\":0,\"offset\":100,\"committed_offset\":100,"
               "\"low_watermark\":200,\"high_watermark\":300,\"gap\":-100,"
               "\"id\":\"9f86d081884c7d65-1\"}");
        ck_assert_ptr_null(strchr(j, '\n'));
        rbk_free(j);

        /* A truncated multi-byte sequence at the end. */
        rbk__event_init(&ev, RBK_EV_CLIENT_ERROR, RBK_SEV_INFO);
        ev.message = "x\xe2\x82";
        j = rbk_event_to_json(&ev);
        ck_assert_ptr_nonnull(strstr(j, "\"message\":\"x\\ufffd\\ufffd\""));
        ck_assert(g_utf8_validate(j, -1, NULL));
        rbk_free(j);

        ck_assert_ptr_null(rbk_event_to_json(NULL));
}
END_TEST

static const char *pem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "-----END PRIVATE KEY-----\n";

START_TEST(redaction_in_logs) {
        logcap_t l;
        capture_t c;
        logcap_init(&l);
        capture_init(&c);
        rbk_conf_t *conf = mkconf(&c, &l, NULL, NULL);
        rbk__hooks_t *h = rbk__hooks_new(conf, "p1");
        rbk_conf_destroy(conf);

        rbk__log(h, LOG_ERR, "TEST",
                 "ssl.key.pem=%s and password=hunter2, sasl.password=s3cr3t "
                 "secret=topsecretvalue user=bob",
                 pem);
        rbk__hooks_rd_log(h, LOG_WARNING, "SSL",
                          "failed: ssl.key.password=Hunter22\t"
                          "-----BEGIN RSA PRIVATE KEY-----MIIEcutoff");
        rbk__log(h, LOG_DEBUG, "TEST", "PASSWORD=UPPER x");

        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_CLIENT_ERROR, RBK_SEV_ERROR);
        ev.message = "broker said password=evtsecret";
        ck_assert_int_eq(rbk__hooks_emit(h, &ev), 1);
        /* The caller's message pointer is restored after the call. */
        ck_assert_str_eq(ev.message, "broker said password=evtsecret");

        static const char *secrets[] = {
            "MIIEvQIBADAN", "C7VJTUt9Us8cKj", "YEvu", "hunter2", "s3cr3t",
            "topsecretvalue", "Hunter22", "MIIEcutoff", "UPPER", "evtsecret",
            "PRIVATE KEY"};
        ck_assert_uint_eq(l.lines->len, 4);
        for (guint i = 0; i < l.lines->len; i++) {
                const char *line = g_ptr_array_index(l.lines, i);
                for (size_t s = 0; s < G_N_ELEMENTS(secrets); s++)
                        ck_assert_msg(!strstr(line, secrets[s]),
                                      "secret \"%s\" in log line \"%s\"",
                                      secrets[s], line);
        }
        ck_assert(logcap_has(&l, "3|TEST|ssl.key.pem=[redacted]\n and "
                                 "password=[redacted], "
                                 "sasl.password=[redacted] "
                                 "secret=[redacted] user=bob"));
        ck_assert(logcap_has(&l, "4|SSL|failed: "
                                 "ssl.key.password=[redacted]\t[redacted]"));
        ck_assert(logcap_has(&l, "7|TEST|PASSWORD=[redacted] x"));
        ck_assert_int_eq(c.n, 1);
        ck_assert_str_eq(c.message[0], "broker said password=[redacted]");

        rbk__hooks_destroy(h);
        capture_clear(&c);
        logcap_clear(&l);
}
END_TEST

START_TEST(event_log_levels) {
        logcap_t l;
        logcap_init(&l);
        rbk_conf_t *conf = mkconf(NULL, &l, "0", NULL);
        rbk__hooks_t *h = rbk__hooks_new(conf, "p1");
        rbk_conf_destroy(conf);

        static const struct {
                rbk_severity_t sev;
                int level;
        } map[] = {{RBK_SEV_CRITICAL, LOG_ERR},
                   {RBK_SEV_ERROR, LOG_ERR},
                   {RBK_SEV_WARNING, LOG_WARNING},
                   {RBK_SEV_INFO, LOG_INFO}};
        for (size_t i = 0; i < G_N_ELEMENTS(map); i++) {
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_DEADLETTERED, map[i].sev);
                ev.message = "m";
                rbk__hooks_emit(h, &ev);
                ck_assert_uint_eq(l.lines->len, i + 1);
                const char *line = g_ptr_array_index(l.lines, i);
                char want[64];
                snprintf(want, sizeof(want), "%d|EVENT|{", map[i].level);
                ck_assert_msg(g_str_has_prefix(line, want), "line %s", line);
                ck_assert_ptr_nonnull(strstr(line, rbk_severity_name(map[i].sev)));
        }
        rbk__hooks_destroy(h);
        logcap_clear(&l);
}
END_TEST

START_TEST(class_and_severity_names) {
        GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
        for (int cls = RBK_EV_DELIVERY_FAILED; cls <= RBK_EV_DEDUP_CAPACITY;
             cls++) {
                const char *n = rbk_event_class_name((rbk_event_class_t)cls);
                ck_assert_str_ne(n, "unknown");
                ck_assert_msg(!g_hash_table_contains(seen, n), "dup %s", n);
                g_hash_table_add(seen, (gpointer)n);
        }
        ck_assert_uint_eq(g_hash_table_size(seen), 17);
        g_hash_table_destroy(seen);
        ck_assert_str_eq(rbk_event_class_name(RBK_EV_OFFSET_OUT_OF_RANGE),
                         "offset_out_of_range");
        ck_assert_str_eq(rbk_event_class_name(RBK_EV_DELIVERY_FAILED),
                         "delivery_failed");
        ck_assert_str_eq(rbk_event_class_name(RBK_EV_DEADLETTERED),
                         "deadlettered");
        ck_assert_str_eq(rbk_event_class_name((rbk_event_class_t)0), "unknown");
        ck_assert_str_eq(rbk_event_class_name(RBK_EV_POSITION_MOVED),
                         "position_moved");
        ck_assert_str_eq(rbk_event_class_name(RBK_EV_DEDUP_CAPACITY),
                         "dedup_capacity");
        ck_assert_str_eq(rbk_event_class_name((rbk_event_class_t)18),
                         "unknown");
        ck_assert_str_eq(rbk_severity_name(RBK_SEV_INFO), "info");
        ck_assert_str_eq(rbk_severity_name(RBK_SEV_WARNING), "warning");
        ck_assert_str_eq(rbk_severity_name(RBK_SEV_ERROR), "error");
        ck_assert_str_eq(rbk_severity_name(RBK_SEV_CRITICAL), "critical");
        ck_assert_str_eq(rbk_severity_name((rbk_severity_t)9), "unknown");
}
END_TEST

typedef struct {
        rbk__hooks_t *h;
        int n;
} emitter_arg_t;

static gpointer emitter(gpointer p) {
        emitter_arg_t *a = p;
        for (int i = 0; i < a->n; i++) {
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_HANDLER_GAVE_UP, RBK_SEV_ERROR);
                ev.message = "x";
                rbk__hooks_emit(a->h, &ev);
        }
        return NULL;
}

START_TEST(hook_calls_serialised) {
        capture_t c;
        capture_init(&c);
        rbk_conf_t *conf = mkconf(&c, NULL, NULL, NULL);
        rbk__hooks_t *h = rbk__hooks_new(conf, "p1");
        rbk_conf_destroy(conf);

        emitter_arg_t a = {h, 2000};
        GThread *t[8];
        for (int i = 0; i < 8; i++)
                t[i] = g_thread_new("emit", emitter, &a);
        for (int i = 0; i < 8; i++)
                g_thread_join(t[i]);
        ck_assert_int_eq(g_atomic_int_get(&c.total), 8 * 2000);
        ck_assert_int_eq(g_atomic_int_get(&c.overlap), 0);

        rbk__hooks_destroy(h);
        capture_clear(&c);
}
END_TEST

/* A hook that emits again on its own thread (through a library call) must
 * not deadlock. */
static rbk__hooks_t *reentrant_h;
static int reentrant_depth;
static int reentrant_calls;
static void reentrant_hook(const rbk_event_t *ev, void *opaque) {
        reentrant_calls++;
        if (reentrant_depth++ == 0) {
                rbk_event_t ev2;
                rbk__event_init(&ev2, RBK_EV_QUARANTINE_RESOLVED, RBK_SEV_INFO);
                rbk__hooks_emit(reentrant_h, &ev2);
        }
        reentrant_depth--;
}

START_TEST(hook_reentry) {
        rbk_conf_t *conf = rbk_conf_new();
        rbk_conf_set_hook(conf, reentrant_hook, NULL);
        rbk_conf_set_log_cb(conf, quiet_log_cb, NULL);
        reentrant_h = rbk__hooks_new(conf, "p1");
        rbk_conf_destroy(conf);
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_OFFSET_OUT_OF_RANGE, RBK_SEV_CRITICAL);
        ck_assert_int_eq(rbk__hooks_emit(reentrant_h, &ev), 1);
        ck_assert_int_eq(reentrant_calls, 2);
        rbk__hooks_destroy(reentrant_h);
}
END_TEST

START_TEST(version_warning_once) {
        capture_t c;
        logcap_t l;
        capture_init(&c);
        logcap_init(&l);
        rbk_conf_t *conf = mkconf(&c, &l, NULL, NULL);
        rbk__hooks_t *h = rbk__hooks_new(conf, "p1");
        rbk__hooks_t *h2 = rbk__hooks_new(conf, "p2");
        rbk_conf_destroy(conf);

        rbk__version_check(h);
        rbk__version_check(h);
        rbk__version_check(h2);
        if (rd_kafka_version() < 0x020601ff) {
                ck_assert_int_eq(c.n, 1);
                ck_assert_int_eq(c.cls[0], RBK_EV_VERSION_WARNING);
                ck_assert_str_eq(c.client[0], "p1");
                ck_assert_ptr_nonnull(strstr(c.message[0], "4783"));
                /* At the event's severity (info), not as a warning. */
                ck_assert(logcap_has(&l, "6|VERSION|librdkafka"));
                ck_assert(logcap_has(&l, "issue 4783"));
                ck_assert(logcap_has(&l, "eager assignment"));
                if (rd_kafka_version() < 0x020100ff) {
                        ck_assert(logcap_has(&l, "KIP-320"));
                        ck_assert(logcap_has(&l, "offset_store_message"));
                        ck_assert(logcap_has(&l, "exponential"));
                        ck_assert(logcap_has(&l, "issue 4527"));
                }
        } else if (rd_kafka_version() < 0x020a00ff) {
                /* 2.6.1 to 2.9.x: only the Metadata crash applies. */
                ck_assert_int_eq(c.n, 1);
                ck_assert_ptr_nonnull(strstr(c.message[0], "4907"));
                ck_assert_ptr_null(strstr(c.message[0], "4783"));
        } else {
                ck_assert_int_eq(c.n, 0);
        }
        /* Never a warning or a notice on start: nothing is wrong. */
        ck_assert(!logcap_has(&l, "4|VERSION|"));
        ck_assert(!logcap_has(&l, "5|VERSION|"));
        rbk__hooks_destroy(h2);
        rbk__hooks_destroy(h);
        capture_clear(&c);
        logcap_clear(&l);
}
END_TEST

/* Without a log callback, warnings and worse go to stderr, the rest
 * nowhere. */
START_TEST(stderr_fallback) {
        char path[] = "/tmp/rbk-hooks-stderr-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        unlink(path);
        fflush(stderr);
        int saved = dup(2);
        dup2(fd, 2);

        rbk__hooks_t *h = rbk__hooks_new(NULL, "cli");
        rbk__log(h, LOG_INFO, "TEST", "quiet line");
        rbk__log(h, LOG_WARNING, "TEST", "loud line password=xyz12");
        rbk__log(NULL, LOG_ERR, "TEST", "no client");
        rbk__hooks_destroy(h);

        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        char buf[1024] = {0};
        lseek(fd, 0, SEEK_SET);
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        ck_assert_int_gt(n, 0);
        ck_assert_ptr_null(strstr(buf, "quiet line"));
        ck_assert_ptr_null(strstr(buf, "xyz12"));
        ck_assert_ptr_nonnull(
            strstr(buf, "|WARNING|TEST|cli: loud line password=[redacted]\n"));
        ck_assert_ptr_nonnull(strstr(buf, "|ERROR|TEST|no client\n"));
        /* ISO 8601 UTC timestamp first. */
        ck_assert(g_ascii_isdigit(buf[0]) && buf[4] == '-' && buf[10] == 'T');
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("hooks");
        RBK_TCASE(s, rate_limit_per_key, 20);
        RBK_TCASE(s, rate_limit_per_class_and_key, 10);
        RBK_TCASE(s, repeat_flag, 10);
        RBK_TCASE(s, prefix_stripped_and_client_filled, 10);
        RBK_TCASE(s, json_escaping_and_omission, 10);
        RBK_TCASE(s, redaction_in_logs, 10);
        RBK_TCASE(s, event_log_levels, 10);
        RBK_TCASE(s, class_and_severity_names, 10);
        RBK_TCASE(s, hook_calls_serialised, 60);
        RBK_TCASE(s, hook_reentry, 10);
        RBK_TCASE(s, version_warning_once, 10);
        RBK_TCASE(s, stderr_fallback, 10);
        return s;
}

RBK_TEST_MAIN()
