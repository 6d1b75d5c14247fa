/* Prometheus text exposition (format 0.0.4) and the parts of librdkafka's
 * statistics the library reads: the brokers' connection state and
 * round-trip time. Core layer: nothing here knows a client. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------ exposition */

void rbk__prom_family(GString *out, const char *name, const char *type,
                      const char *help) {
        g_string_append_printf(out, "# HELP %s ", name);
        /* HELP text: backslash and line feed escaped. */
        for (const char *h = help; *h; h++) {
                if (*h == '\\')
                        g_string_append(out, "\\\\");
                else if (*h == '\n')
                        g_string_append(out, "\\n");
                else
                        g_string_append_c(out, *h);
        }
        g_string_append_printf(out, "\n# TYPE %s %s\n", name, type);
}

void rbk__prom_label(GString *labels, const char *name, const char *value) {
        if (labels->len)
                g_string_append_c(labels, ',');
        g_string_append_printf(labels, "%s=\"", name);
        for (const char *v = value ? value : ""; *v; v++) {
                if (*v == '\\')
                        g_string_append(labels, "\\\\");
                else if (*v == '"')
                        g_string_append(labels, "\\\"");
                else if (*v == '\n')
                        g_string_append(labels, "\\n");
                else
                        g_string_append_c(labels, *v);
        }
        g_string_append_c(labels, '"');
}

static void rbk__prom_value(GString *out, double v) {
        if (isnan(v))
                g_string_append(out, "NaN");
        else if (isinf(v))
                g_string_append(out, v > 0 ? "+Inf" : "-Inf");
        else if (v == floor(v) && fabs(v) < 9e15)
                g_string_append_printf(out, "%.0f", v);
        else {
                char b[G_ASCII_DTOSTR_BUF_SIZE];
                g_string_append(out, g_ascii_formatd(b, sizeof(b), "%.9g", v));
        }
}

void rbk__prom_sample(GString *out, const char *name, const char *labels,
                      double v) {
        g_string_append(out, name);
        if (labels && *labels)
                g_string_append_printf(out, "{%s}", labels);
        g_string_append_c(out, ' ');
        rbk__prom_value(out, v);
        g_string_append_c(out, '\n');
}

void rbk__prom_sample_u64(GString *out, const char *name, const char *labels,
                          uint64_t v) {
        g_string_append(out, name);
        if (labels && *labels)
                g_string_append_printf(out, "{%s}", labels);
        g_string_append_printf(out, " %" G_GUINT64_FORMAT "\n", v);
}

const int64_t rbk__latency_bounds_ms[RBK__LATENCY_BUCKETS] = {
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

int rbk__latency_bucket(int64_t ms) {
        for (int i = 0; i < RBK__LATENCY_BUCKETS; i++)
                if (ms <= rbk__latency_bounds_ms[i])
                        return i;
        return RBK__LATENCY_BUCKETS; /* +Inf only */
}

/* ------------------------------------------------------------ JSON */

/* A small reader of librdkafka's statistics object: what it does not look
 * at is skipped. Any malformed input ends the read (brokers found so far
 * are kept). */
typedef struct {
        const char *p, *end;
        int bad;
} rbk__js_t;

#define RBK__JS_DEPTH 64

static void rbk__js_ws(rbk__js_t *j) {
        while (j->p < j->end &&
               (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
                j->p++;
}

static int rbk__js_peek(rbk__js_t *j) {
        rbk__js_ws(j);
        return j->p < j->end ? (unsigned char)*j->p : -1;
}

/* A string into @out (escapes other than \uXXXX kept as their letter;
 * \uXXXX as '?'); @out may be NULL. */
static void rbk__js_str(rbk__js_t *j, GString *out) {
        if (rbk__js_peek(j) != '"') {
                j->bad = 1;
                return;
        }
        j->p++;
        while (j->p < j->end && *j->p != '"') {
                char ch = *j->p++;
                if (ch == '\\' && j->p < j->end) {
                        ch = *j->p++;
                        if (ch == 'u') {
                                j->p += MIN(4, j->end - j->p);
                                ch = '?';
                        } else if (ch == 'n')
                                ch = '\n';
                        else if (ch == 't')
                                ch = '\t';
                }
                if (out)
                        g_string_append_c(out, ch);
        }
        if (j->p >= j->end) {
                j->bad = 1;
                return;
        }
        j->p++;
}

static double rbk__js_num(rbk__js_t *j) {
        rbk__js_ws(j);
        char buf[64];
        size_t n = 0;
        while (j->p < j->end && n < sizeof(buf) - 1 &&
               strchr("+-0123456789.eE", *j->p))
                buf[n++] = *j->p++;
        buf[n] = '\0';
        if (!n) {
                j->bad = 1;
                return 0;
        }
        return g_ascii_strtod(buf, NULL);
}

static void rbk__js_skip(rbk__js_t *j, int depth) {
        int ch = rbk__js_peek(j);
        if (depth > RBK__JS_DEPTH || ch < 0) {
                j->bad = 1;
                return;
        }
        if (ch == '"') {
                rbk__js_str(j, NULL);
        } else if (ch == '{' || ch == '[') {
                int close = ch == '{' ? '}' : ']';
                j->p++;
                if (rbk__js_peek(j) == close) {
                        j->p++;
                        return;
                }
                while (!j->bad) {
                        if (ch == '{') {
                                rbk__js_str(j, NULL);
                                if (rbk__js_peek(j) != ':') {
                                        j->bad = 1;
                                        return;
                                }
                                j->p++;
                        }
                        rbk__js_skip(j, depth + 1);
                        int n = rbk__js_peek(j);
                        if (n == ',') {
                                j->p++;
                                continue;
                        }
                        if (n == close) {
                                j->p++;
                                return;
                        }
                        j->bad = 1;
                }
        } else {
                /* A number, true, false or null. */
                const char *s = j->p;
                while (j->p < j->end && !strchr(",]} \n\r\t", *j->p))
                        j->p++;
                if (j->p == s)
                        j->bad = 1;
        }
}

/* Iterates the members of an object: returns 1 with the key in @key and
 * the reader at its value, 0 at the end (the closing brace read). Call
 * first with *first = 1. */
static int rbk__js_member(rbk__js_t *j, GString *key, int *first) {
        if (j->bad)
                return 0;
        if (*first) {
                if (rbk__js_peek(j) != '{') {
                        j->bad = 1;
                        return 0;
                }
                j->p++;
                *first = 0;
                if (rbk__js_peek(j) == '}') {
                        j->p++;
                        return 0;
                }
        } else {
                int n = rbk__js_peek(j);
                if (n == '}') {
                        j->p++;
                        return 0;
                }
                if (n != ',') {
                        j->bad = 1;
                        return 0;
                }
                j->p++;
        }
        g_string_truncate(key, 0);
        rbk__js_str(j, key);
        if (j->bad || rbk__js_peek(j) != ':') {
                j->bad = 1;
                return 0;
        }
        j->p++;
        return 1;
}

static void rbk__broker_clear(gpointer p) {
        rbk__broker_t *b = p;
        g_free(b->name);
        g_free(b->state);
}

static void rbk__js_broker(rbk__js_t *j, GArray *out) {
        rbk__broker_t b = {NULL, -1, NULL, -1};
        GString *k = g_string_new(NULL);
        int first = 1;
        while (rbk__js_member(j, k, &first)) {
                if (!strcmp(k->str, "name") || !strcmp(k->str, "state")) {
                        GString *v = g_string_new(NULL);
                        rbk__js_str(j, v);
                        char **dst = k->str[0] == 'n' ? &b.name : &b.state;
                        g_free(*dst);
                        *dst = g_string_free(v, FALSE);
                } else if (!strcmp(k->str, "nodeid")) {
                        b.nodeid = (int32_t)rbk__js_num(j);
                } else if (!strcmp(k->str, "rtt") &&
                           rbk__js_peek(j) == '{') {
                        GString *k2 = g_string_new(NULL);
                        int f2 = 1;
                        while (rbk__js_member(j, k2, &f2)) {
                                if (!strcmp(k2->str, "avg"))
                                        b.rtt_avg_us = (int64_t)rbk__js_num(j);
                                else
                                        rbk__js_skip(j, 2);
                        }
                        g_string_free(k2, TRUE);
                } else {
                        rbk__js_skip(j, 2);
                }
        }
        g_string_free(k, TRUE);
        if (!j->bad && b.name) {
                if (!b.state)
                        b.state = g_strdup("UNKNOWN");
                g_array_append_val(out, b);
        } else {
                rbk__broker_clear(&b);
        }
}

GArray *rbk__rdstats_brokers(const char *json) {
        GArray *out = g_array_new(FALSE, FALSE, sizeof(rbk__broker_t));
        g_array_set_clear_func(out, rbk__broker_clear);
        if (!json)
                return out;
        rbk__js_t j = {json, json + strlen(json), 0};
        GString *k = g_string_new(NULL);
        int first = 1;
        while (rbk__js_member(&j, k, &first)) {
                if (strcmp(k->str, "brokers") || rbk__js_peek(&j) != '{') {
                        rbk__js_skip(&j, 1);
                        continue;
                }
                GString *name = g_string_new(NULL);
                int f2 = 1;
                while (rbk__js_member(&j, name, &f2))
                        rbk__js_broker(&j, out);
                g_string_free(name, TRUE);
        }
        g_string_free(k, TRUE);
        return out;
}

/* ------------------------------------------------------------ broker view */

void rbk__rdstats_init(rbk__rdstats_t *s) {
        memset(s, 0, sizeof(*s));
        g_mutex_init(&s->mu);
}

void rbk__rdstats_clear(rbk__rdstats_t *s) {
        if (s->brokers)
                g_array_free(s->brokers, TRUE);
        s->brokers = NULL;
        g_mutex_clear(&s->mu);
}

void rbk__rdstats_update(rbk__rdstats_t *s, const char *json) {
        GArray *b = rbk__rdstats_brokers(json);
        g_mutex_lock(&s->mu);
        GArray *old = s->brokers;
        s->brokers = b;
        s->at_ms = rbk__now_ms();
        g_mutex_unlock(&s->mu);
        if (old)
                g_array_free(old, TRUE);
}

void rbk__rdstats_all_down(rbk__rdstats_t *s, uint64_t progress) {
        g_mutex_lock(&s->mu);
        s->down_at_ms = rbk__now_ms();
        s->down_progress = progress;
        g_mutex_unlock(&s->mu);
}

/* Brokers of the cluster (node id >= 0), or every one listed when none
 * has a node id yet (bootstrap only). */
static int rbk__broker_counts(const rbk__broker_t *b) {
        return b->nodeid >= 0;
}

int rbk__rdstats_down(rbk__rdstats_t *s, uint64_t progress, char *why,
                      size_t why_size) {
        int down = 0;
        g_mutex_lock(&s->mu);
        int have_stats = s->brokers && s->at_ms;
        if (s->down_at_ms && progress == s->down_progress &&
            (!have_stats || s->down_at_ms >= s->at_ms)) {
                down = 1;
                g_snprintf(why, why_size,
                           "all broker connections are down (reported %" PRId64
                           " ms ago, nothing received since)",
                           rbk__now_ms() - s->down_at_ms);
        } else if (have_stats && s->brokers->len) {
                guint n = 0, up = 0, any_node = 0;
                for (guint i = 0; i < s->brokers->len; i++)
                        any_node |= rbk__broker_counts(
                            &g_array_index(s->brokers, rbk__broker_t, i));
                for (guint i = 0; i < s->brokers->len; i++) {
                        const rbk__broker_t *b =
                            &g_array_index(s->brokers, rbk__broker_t, i);
                        if (any_node && !rbk__broker_counts(b))
                                continue;
                        n++;
                        up += !strcmp(b->state, "UP");
                }
                if (n && !up) {
                        down = 1;
                        g_snprintf(why, why_size,
                                   "no broker connection is up (%u broker(s) "
                                   "in statistics of %" PRId64 " ms ago)",
                                   n, rbk__now_ms() - s->at_ms);
                }
        }
        g_mutex_unlock(&s->mu);
        return down;
}

/* The client's label and the broker's name and node id. */
static void rbk__broker_labels(GString *labels, const char *label,
                               const char *value, const rbk__broker_t *b) {
        char id[16];
        g_string_truncate(labels, 0);
        rbk__prom_label(labels, label, value);
        rbk__prom_label(labels, "broker", b->name);
        g_snprintf(id, sizeof(id), "%d", (int)b->nodeid);
        rbk__prom_label(labels, "nodeid", id);
}

void rbk__rdstats_prom(rbk__rdstats_t *s, GString *out, const char *prefix,
                       const char *label, const char *value) {
        g_mutex_lock(&s->mu);
        GArray *bs = s->brokers;
        guint n = bs ? bs->len : 0;
        GString *name = g_string_new(NULL), *labels = g_string_new(NULL);
        g_string_printf(name, "%s_broker_up", prefix);
        rbk__prom_family(out, name->str, "gauge",
                         "1 when the connection to the broker is up (state "
                         "UP in the latest librdkafka statistics), else 0");
        for (guint i = 0; i < n; i++) {
                const rbk__broker_t *b = &g_array_index(bs, rbk__broker_t, i);
                rbk__broker_labels(labels, label, value, b);
                rbk__prom_label(labels, "state", b->state);
                rbk__prom_sample(out, name->str, labels->str,
                                 !strcmp(b->state, "UP"));
        }
        g_string_printf(name, "%s_broker_rtt_avg_seconds", prefix);
        rbk__prom_family(out, name->str, "gauge",
                         "Mean request round-trip time to the broker over "
                         "the last statistics interval");
        for (guint i = 0; i < n; i++) {
                const rbk__broker_t *b = &g_array_index(bs, rbk__broker_t, i);
                if (b->rtt_avg_us < 0)
                        continue;
                rbk__broker_labels(labels, label, value, b);
                rbk__prom_sample(out, name->str, labels->str,
                                 (double)b->rtt_avg_us / 1e6);
        }
        g_string_printf(name, "%s_statistics_age_seconds", prefix);
        rbk__prom_family(out, name->str, "gauge",
                         "Age of the latest librdkafka statistics the broker "
                         "figures come from (NaN: none received)");
        g_string_truncate(labels, 0);
        rbk__prom_label(labels, label, value);
        rbk__prom_sample(out, name->str, labels->str,
                         s->at_ms ? (double)(rbk__now_ms() - s->at_ms) / 1e3
                                  : NAN);
        g_mutex_unlock(&s->mu);
        g_string_free(name, TRUE);
        g_string_free(labels, TRUE);
}
