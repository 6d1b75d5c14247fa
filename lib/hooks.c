/* The hook dispatcher: one per client. It fills the common event fields,
 * rate-limits by incident key, serialises hook calls, logs every event and
 * routes the library's and librdkafka's log lines (redacted) to the
 * application's log callback or to stderr. */
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "internal.h"

/* Most incident keys remembered per dispatcher; beyond that, keys whose
 * window has expired are forgotten (their `repeat` history with them). */
#define RBK__HOOKS_MAX_KEYS 4096

typedef struct rbk__incident_s {
        int64_t last_ms;     /* when the last event of the key was delivered */
        uint64_t suppressed; /* dropped since then */
} rbk__incident_t;

struct rbk__hooks_s {
        rbk_hook_cb_t *hook;
        void *hook_opaque;
        rbk_log_cb_t *log_cb;
        void *log_opaque;
        char *client;
        char *prefix;
        int64_t rate_ms;

        GMutex lock;           /* protects incidents */
        GHashTable *incidents; /* char* key -> rbk__incident_t* */
        /* Serialises hook calls. Recursive so that a hook which calls back
         * into the library on its own thread (and so emits again) does not
         * deadlock; other threads still wait their turn. */
        GRecMutex hook_lock;
};

/* ------------------------------------------------------------ names */

const char *rbk_event_class_name(rbk_event_class_t cls) {
        switch (cls) {
        case RBK_EV_DELIVERY_FAILED:
                return "delivery_failed";
        case RBK_EV_FATAL_RECOVERED:
                return "fatal_recovered";
        case RBK_EV_FATAL_GAVE_UP:
                return "fatal_gave_up";
        case RBK_EV_OFFSET_OUT_OF_RANGE:
                return "offset_out_of_range";
        case RBK_EV_INITIAL_POSITION:
                return "initial_position";
        case RBK_EV_QUARANTINE_RESOLVED:
                return "quarantine_resolved";
        case RBK_EV_PARTITION_STALLED:
                return "partition_stalled";
        case RBK_EV_HANDLER_GAVE_UP:
                return "handler_gave_up";
        case RBK_EV_DEADLETTER_FAILED:
                return "deadletter_failed";
        case RBK_EV_DEDUP_STORE_ERROR:
                return "dedup_store_error";
        case RBK_EV_CLIENT_ERROR:
                return "client_error";
        case RBK_EV_VERSION_WARNING:
                return "version_warning";
        case RBK_EV_SHUTDOWN_UNDELIVERED:
                return "shutdown_undelivered";
        case RBK_EV_DEADLETTERED:
                return "deadlettered";
        case RBK_EV_POSITION_MOVED:
                return "position_moved";
        case RBK_EV_DEADLETTER_LIMIT:
                return "deadletter_limit";
        case RBK_EV_DEDUP_CAPACITY:
                return "dedup_capacity";
        }
        return "unknown";
}

const char *rbk_severity_name(rbk_severity_t sev) {
        switch (sev) {
        case RBK_SEV_INFO:
                return "info";
        case RBK_SEV_WARNING:
                return "warning";
        case RBK_SEV_ERROR:
                return "error";
        case RBK_SEV_CRITICAL:
                return "critical";
        }
        return "unknown";
}

/* ------------------------------------------------------------ JSON */

static void rbk__json_kstr(GString *out, const char *k, const char *v) {
        if (!v)
                return;
        g_string_append_printf(out, ",\"%s\":", k);
        rbk__json_escape_str(out, v);
}

static void rbk__json_kint(GString *out, const char *k, int64_t v) {
        if (v == RBK_NO_VALUE)
                return;
        g_string_append_printf(out, ",\"%s\":%" G_GINT64_FORMAT, k, (gint64)v);
}

char *rbk_event_to_json(const rbk_event_t *ev) {
        if (!ev)
                return NULL;
        GString *out = g_string_sized_new(256);
        g_string_append_printf(out, "{\"version\":%d", ev->version);
        rbk__json_kstr(out, "class", rbk_event_class_name(ev->cls));
        rbk__json_kstr(out, "severity", rbk_severity_name(ev->severity));
        if (ev->err != RBK_OK)
                rbk__json_kstr(out, "err", rbk_err2name(ev->err));
        if (ev->kafka_err != 0) {
                rbk__json_kint(out, "kafka_err", ev->kafka_err);
                rbk__json_kstr(out, "kafka_err_name",
                               rd_kafka_err2name(
                                   (rd_kafka_resp_err_t)ev->kafka_err));
        }
        rbk__json_kstr(out, "client", ev->client);
        rbk__json_kstr(out, "message", ev->message);
        rbk__json_kstr(out, "incident_key", ev->incident_key);
        g_string_append_printf(out, ",\"repeat\":%s",
                               ev->repeat ? "true" : "false");
        g_string_append_printf(out, ",\"suppressed\":%" G_GUINT64_FORMAT,
                               (guint64)ev->suppressed);
        rbk__json_kstr(out, "group", ev->group);
        rbk__json_kstr(out, "topic", ev->topic);
        rbk__json_kint(out, "partition", ev->partition);
        rbk__json_kint(out, "offset", ev->offset);
        rbk__json_kint(out, "committed_offset", ev->committed_offset);
        rbk__json_kint(out, "low_watermark", ev->low_watermark);
        rbk__json_kint(out, "high_watermark", ev->high_watermark);
        rbk__json_kint(out, "skip_if_latest", ev->skip_if_latest);
        rbk__json_kint(out, "replay_if_earliest", ev->replay_if_earliest);
        rbk__json_kint(out, "gap", ev->gap);
        rbk__json_kint(out, "first_unhandled", ev->first_unhandled);
        rbk__json_kint(out, "generation", ev->generation);
        rbk__json_kstr(out, "id", ev->id);
        g_string_append_c(out, '}');
        return g_string_free(out, FALSE);
}

/* ------------------------------------------------------------ logging */

static const char *rbk__level_name(int level) {
        static const char *names[] = {"EMERG",   "ALERT",  "CRIT", "ERROR",
                                      "WARNING", "NOTICE", "INFO", "DEBUG"};
        return level >= 0 && level <= 7 ? names[level] : "LOG";
}

static void rbk__log_line(rbk__hooks_t *h, int level, const char *fac,
                          const char *line) {
        char *red = rbk__redact_dup(line);
        if (h && h->log_cb) {
                h->log_cb(level, fac ? fac : "rbk", red, h->log_opaque);
        } else if (level <= LOG_WARNING) {
                struct timespec ts;
                struct tm tm;
                char tbuf[32];
                clock_gettime(CLOCK_REALTIME, &ts);
                gmtime_r(&ts.tv_sec, &tm);
                strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
                /* One fprintf per line: stdio locks the stream, so lines of
                 * concurrent threads do not interleave. */
                fprintf(stderr, "%s.%03ldZ|%s|%s|%s%s%s\n", tbuf,
                        (long)(ts.tv_nsec / 1000000), rbk__level_name(level),
                        fac ? fac : "rbk", h ? h->client : "",
                        h ? ": " : "", red);
        }
        g_free(red);
}

void rbk__log(rbk__hooks_t *h, int level, const char *fac, const char *fmt,
              ...) {
        /* Nothing would print it: skip the formatting. */
        if (!(h && h->log_cb) && level > LOG_WARNING)
                return;
        va_list ap;
        va_start(ap, fmt);
        char *line = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        rbk__log_line(h, level, fac, line);
        g_free(line);
}

void rbk__hooks_rd_log(rbk__hooks_t *h, int level, const char *fac,
                       const char *buf) {
        rbk__log_line(h, level, fac, buf ? buf : "");
}

/* ------------------------------------------------------------ dispatcher */

rbk__hooks_t *rbk__hooks_new(const rbk_conf_t *conf,
                             const char *client_name) {
        rbk__hooks_t *h = g_new0(rbk__hooks_t, 1);
        h->client = g_strdup(client_name ? client_name : "anonymous");
        h->rate_ms = 60000;
        if (conf) {
                h->hook = conf->hook;
                h->hook_opaque = conf->hook_opaque;
                h->log_cb = conf->log_cb;
                h->log_opaque = conf->log_opaque;
                h->prefix = g_strdup(rbk__conf_prefix(conf));
                int64_t r = rbk__conf_int(conf, "rbk.hook.rate.limit.ms");
                if (r >= 0)
                        h->rate_ms = r;
        }
        if (!h->prefix)
                h->prefix = g_strdup("");
        g_mutex_init(&h->lock);
        g_rec_mutex_init(&h->hook_lock);
        h->incidents =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return h;
}

void rbk__hooks_destroy(rbk__hooks_t *h) {
        if (!h)
                return;
        g_hash_table_destroy(h->incidents);
        g_mutex_clear(&h->lock);
        g_rec_mutex_clear(&h->hook_lock);
        g_free(h->client);
        g_free(h->prefix);
        g_free(h);
}

void rbk__event_init(rbk_event_t *ev, rbk_event_class_t cls,
                     rbk_severity_t sev) {
        memset(ev, 0, sizeof(*ev));
        ev->version = RBK_EVENT_VERSION;
        ev->cls = cls;
        ev->severity = sev;
        ev->err = RBK_OK;
        ev->message = "";
        ev->partition = RBK_NO_VALUE;
        ev->offset = RBK_NO_VALUE;
        ev->committed_offset = RBK_NO_VALUE;
        ev->low_watermark = RBK_NO_VALUE;
        ev->high_watermark = RBK_NO_VALUE;
        ev->skip_if_latest = RBK_NO_VALUE;
        ev->replay_if_earliest = RBK_NO_VALUE;
        ev->gap = RBK_NO_VALUE;
        ev->generation = RBK_NO_VALUE;
        ev->first_unhandled = RBK_NO_VALUE;
}

static int rbk__sev_level(rbk_severity_t sev) {
        switch (sev) {
        case RBK_SEV_CRITICAL:
        case RBK_SEV_ERROR:
                return LOG_ERR;
        case RBK_SEV_WARNING:
                return LOG_WARNING;
        default:
                return LOG_INFO;
        }
}

/* Forgets keys whose window is over and that hold no suppressed count; if
 * that frees nothing, forgets everything. Called with h->lock held. */
static void rbk__incidents_prune(rbk__hooks_t *h, int64_t now) {
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, h->incidents);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                rbk__incident_t *inc = v;
                if (inc->suppressed == 0 && now - inc->last_ms >= h->rate_ms)
                        g_hash_table_iter_remove(&it);
        }
        if (g_hash_table_size(h->incidents) >= RBK__HOOKS_MAX_KEYS)
                g_hash_table_remove_all(h->incidents);
}

/* Events that report a change of state (a partition quarantined, an
 * incident resolved, a partition held or released): never rate-limited, so
 * a pager that closes on "resolved" always hears that a partition is stuck
 * again. Only repeats of an unchanged state are. */
static int rbk__event_is_change(rbk_event_class_t cls) {
        switch (cls) {
        case RBK_EV_OFFSET_OUT_OF_RANGE:
        case RBK_EV_QUARANTINE_RESOLVED:
        case RBK_EV_HANDLER_GAVE_UP:
        case RBK_EV_DEADLETTERED:
        case RBK_EV_DEADLETTER_FAILED:
        case RBK_EV_INITIAL_POSITION:
        case RBK_EV_POSITION_MOVED:
        case RBK_EV_DEADLETTER_LIMIT:
                return 1;
        default:
                return 0;
        }
}

int rbk__hooks_emit(rbk__hooks_t *h, rbk_event_t *ev) {
        int deliver = 1;

        if (!h || !ev)
                return 0;

        ev->client = h->client;
        if (!ev->message)
                ev->message = "";
        ev->topic = rbk__unprefixed(h->prefix, ev->topic);
        ev->group = rbk__unprefixed(h->prefix, ev->group);

        if (ev->incident_key) {
                int64_t now = rbk__now_ms();
                /* Rate-limited per (class, incident key): the events of one
                 * incident (out of range, then resolved) share the key but
                 * must each get through. */
                char *ikey = g_strdup_printf("%d:%s", (int)ev->cls,
                                             ev->incident_key);
                g_mutex_lock(&h->lock);
                rbk__incident_t *inc = g_hash_table_lookup(h->incidents, ikey);
                if (!inc) {
                        if (g_hash_table_size(h->incidents) >=
                            RBK__HOOKS_MAX_KEYS)
                                rbk__incidents_prune(h, now);
                        inc = g_new0(rbk__incident_t, 1);
                        inc->last_ms = now;
                        g_hash_table_insert(h->incidents, ikey, inc);
                        ikey = NULL; /* owned by the table */
                        ev->suppressed = 0;
                } else {
                        ev->repeat = 1;
                        if (h->rate_ms > 0 && now - inc->last_ms < h->rate_ms &&
                            !rbk__event_is_change(ev->cls)) {
                                inc->suppressed++;
                                deliver = 0;
                        } else {
                                ev->suppressed = inc->suppressed;
                                inc->suppressed = 0;
                                inc->last_ms = now;
                        }
                }
                g_mutex_unlock(&h->lock);
                g_free(ikey);
        } else {
                ev->suppressed = 0;
        }

        /* The message may quote configuration or broker text: redact it. */
        const char *orig_msg = ev->message;
        char *red_msg = rbk__redact_dup(orig_msg);
        ev->message = red_msg;

        int level = deliver ? rbk__sev_level(ev->severity) : LOG_DEBUG;
        if (h->log_cb || level <= LOG_WARNING) {
                char *json = rbk_event_to_json(ev);
                rbk__log(h, level, "EVENT", "%s%s",
                         deliver ? "" : "rate-limited: ", json);
                g_free(json);
        }

        if (deliver && h->hook) {
                g_rec_mutex_lock(&h->hook_lock);
                h->hook(ev, h->hook_opaque);
                g_rec_mutex_unlock(&h->hook_lock);
        }

        ev->message = orig_msg;
        g_free(red_msg);
        return deliver;
}

/* ------------------------------------------------------------ version check */

/* librdkafka issues by the version range they affect, [from, below) (below
 * 0: no fixed version yet). Each says what the library does about it. */
static const struct {
        int from, below;
        const char *text;
} rbk__known_issues[] = {
    {0, 0x020601ff,
     "the cooperative-sticky assignor can loop forever (librdkafka issue "
     "4783, before 2.6.1): the library uses eager assignment"},
    {0, 0x020400ff,
     "closing a consumer with cooperative assignment can hang (librdkafka "
     "issue 4527, before 2.4.0): the library uses eager assignment"},
    {0, 0x020300ff,
     "no exponential retry backoff (before 2.3.0): retries wait the fixed "
     "retry.backoff.ms"},
    {0, 0x020100ff,
     "no KIP-320 log truncation detection (before 2.1.0): a truncation "
     "after an unclean leader election is not detected by the consumer"},
    {0, 0x020100ff,
     "no rd_kafka_offset_store_message() (before 2.1.0): offsets are "
     "stored with rd_kafka_offsets_store() at offset + 1"},
    {0, 0x020601ff,
     "SCRAM-SHA-256/512 logins are refused by Kafka 4 brokers (librdkafka "
     "pull request 4895, before 2.6.1): use SASL PLAIN over SASL_SSL or "
     "client certificates against Kafka 4"},
    {0x020300ff, 0x020a00ff,
     "a Metadata reply with TOPIC_AUTHORIZATION_FAILED, or for a topic "
     "deleted and re-created, can crash the client (librdkafka issue 4907, "
     "2.3.0 to 2.9.x): keep ACLs of every topic a client uses (its "
     "dead-letter topic included) in place while it runs; upgrade to "
     "2.10.0 or later"},
};

/* Not a warning, on every version so far: seeking a partition after an
 * _AUTO_OFFSET_RESET fails with _STATE (librdkafka issue 2961, present in
 * 2.0.2 and 2.8.0), so every position change is a re-assign at the chosen
 * offset (consumer_assign.c). */

/* Whether issue i affects version v. */
static int rbk__issue_applies(size_t i, int v) {
        return v >= rbk__known_issues[i].from &&
               (rbk__known_issues[i].below == 0 ||
                v < rbk__known_issues[i].below);
}

static gpointer rbk__version_check_once(gpointer arg) {
        rbk__hooks_t *h = arg;
        int v = rd_kafka_version();
        const char *vs = rd_kafka_version_str();

        int any = 0;
        for (size_t i = 0; i < G_N_ELEMENTS(rbk__known_issues); i++)
                any |= rbk__issue_applies(i, v);
        if (!any)
                return NULL;

        /* Logged at the level of the event it fires (info): the library
         * works around every issue, so a start is no cause for a warning. */
        const rbk_severity_t sev = RBK_SEV_INFO;
        const int level = rbk__sev_level(sev);
        GString *summary = g_string_new(NULL);
        g_string_printf(summary,
                        "librdkafka %s has known issues that the library "
                        "works around:",
                        vs);
        rbk__log(h, level, "VERSION",
                 "librdkafka %s has known issues that the library works "
                 "around; see docs/errors.md (version_warning)",
                 vs);
        for (size_t i = 0; i < G_N_ELEMENTS(rbk__known_issues); i++) {
                if (!rbk__issue_applies(i, v))
                        continue;
                rbk__log(h, level, "VERSION", "librdkafka %s: %s", vs,
                         rbk__known_issues[i].text);
                g_string_append_printf(summary, " %s;",
                                       rbk__known_issues[i].text);
        }
        if (summary->str[summary->len - 1] == ';')
                g_string_truncate(summary, summary->len - 1);

        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_VERSION_WARNING, sev);
        ev.message = summary->str;
        ev.incident_key = "librdkafka-version";
        rbk__hooks_emit(h, &ev);
        g_string_free(summary, TRUE);
        return NULL;
}

void rbk__version_check(rbk__hooks_t *h) {
        static GOnce once = G_ONCE_INIT;
        g_once(&once, rbk__version_check_once, h);
}
