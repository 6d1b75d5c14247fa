/* Internal declarations shared by the library's sources. Never installed.
 * Internal names use the rbk__ prefix and are never exported. */
#ifndef RBK_INTERNAL_H
#define RBK_INTERNAL_H

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

#include "robustkafka.h"

/* ------------------------------------------------------------ util.c */

/* Writes a formatted message into a caller's errstr buffer (may be NULL or
 * size 0) and returns err, so error paths read `return rbk__seterr(...)`. */
rbk_err_t rbk__seterr(char *errstr, size_t errstr_size, rbk_err_t err,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Monotonic milliseconds. */
int64_t rbk__now_ms(void);

/* Validates a Kafka topic name (without prefix: prefix+name is checked):
 * non-empty, at most 249 chars, only [a-zA-Z0-9._-], not "." or "..". */
rbk_err_t rbk__topic_validate(const char *prefix, const char *topic,
                              char *errstr, size_t errstr_size);
/* The same, with the prefix's length; stores the topic's length in *lenp
 * (when not NULL) once it is valid. */
rbk_err_t rbk__topic_validate_len(size_t plen, const char *topic,
                                  size_t *lenp, char *errstr,
                                  size_t errstr_size);

/* Prefix handling (rbk.prefix / KAFKA_PREFIX). full: g_strconcat (g_free);
 * strip: pointer into name past the prefix when it starts with it. */
char *rbk__prefixed(const char *prefix, const char *name);
const char *rbk__unprefixed(const char *prefix, const char *name);

/* Fork detection, one for the whole library. A client records its process
 * at creation (rbk__getpid(), or getpid(): both agree) and every public
 * entry point starts with rbk__forked(creator), which returns 1 in a forked
 * child of that process (the call then fails with RBK_ERR_FORKED) and 0
 * otherwise. Outside a forked child it costs one memory load, no system
 * call: the process id is kept up to date by a pthread_atfork child
 * handler. */
extern gint rbk__pid_cached;
/* The calling process's id, without a system call. */
pid_t rbk__getpid(void);
/* For rbk__forked(): confirms a mismatch with getpid(). */
int rbk__forked_slow(pid_t creator);
static inline int rbk__forked(pid_t creator) {
        pid_t now = (pid_t)g_atomic_int_get(&rbk__pid_cached);
        return G_UNLIKELY(creator != now) && rbk__forked_slow(creator);
}

/* Versioned structs the library fills into a caller's memory (docs/abi.md).
 * RBK__END_OF is where a field ends: the size of the layout whose last field
 * it is. rbk__layout_copy() copies the first bytes of @p full, as many as
 * layout @p version has (sizes[version - 1], for 1 <= version <= n); any
 * other version (0 from a zeroed struct, an uninitialised field, a layout
 * this library does not know) gets the first layout. The version field
 * written is the layout filled, so the caller can tell. @p full starts with
 * its `int version`. */
#define RBK__END_OF(type, field)                                               \
        (offsetof(type, field) + sizeof(((type *)0)->field))
void rbk__layout_copy(void *out, void *full, const size_t *sizes, int n);

/* Appends @p s to @p out as a JSON string, quotes included: `"` and `\`
 * escaped, \n \r \t \b \f as such, other control characters (and DEL) as
 * \u00XX, valid UTF-8 unchanged, each byte of an invalid sequence as
 * \ufffd, so the result is always valid JSON. NULL appends "". */
void rbk__json_escape_str(GString *out, const char *s);

/* Redaction of secrets in text that may quote configuration or broker
 * messages: PEM blocks (BEGIN through END, or to the end when cut off) and
 * the values of ssl.key.pem=, sasl.password=, password= and secret= (case
 * insensitive, up to whitespace or a comma). */
#define RBK__REDACTED "[redacted]"
/* Redacts @p s. With @p may_grow, every secret becomes "[redacted]";
 * without, the string never gets longer (a value shorter than the marker
 * becomes "*"). */
void rbk__redact_gstring(GString *s, int may_grow);
/* A redacted copy of @p line (g_free). */
char *rbk__redact_dup(const char *line);
/* Redacts @p line in place (never longer than before); NULL is ignored. */
void rbk__redact(char *line);

/* ------------------------------------------------------------ metrics.c */

/* Prometheus text exposition, format 0.0.4. A family's # HELP and # TYPE
 * lines (@help escaped), then its samples, one family after the other. */
void rbk__prom_family(GString *out, const char *name, const char *type,
                      const char *help);
/* Appends name="value" to a label list (comma-separated), the value
 * escaped (backslash, double quote, line feed). */
void rbk__prom_label(GString *labels, const char *name, const char *value);
/* One sample line: name{labels} value (NaN, +Inf as the format spells
 * them). @labels may be NULL or "". */
void rbk__prom_sample(GString *out, const char *name, const char *labels,
                      double v);
void rbk__prom_sample_u64(GString *out, const char *name, const char *labels,
                          uint64_t v);

/* Handler latency histogram: upper bounds (ms) of the finite buckets. */
#define RBK__LATENCY_BUCKETS 12
extern const int64_t rbk__latency_bounds_ms[RBK__LATENCY_BUCKETS];
/* The first bucket @ms fits in (RBK__LATENCY_BUCKETS: beyond the last). */
int rbk__latency_bucket(int64_t ms);

/* One broker in librdkafka's statistics. */
typedef struct rbk__broker_s {
        char *name;         /* "host:port/nodeid" as librdkafka names it */
        int32_t nodeid;     /* -1 for bootstrap and logical brokers */
        char *state;        /* "UP", "DOWN", "CONNECT", ... */
        int64_t rtt_avg_us; /* -1 when not given */
} rbk__broker_t;
/* The brokers of a librdkafka statistics object (g_array_free frees the
 * entries too); empty when there are none or the text is malformed. */
GArray *rbk__rdstats_brokers(const char *json);

/* What a client keeps of librdkafka's statistics and broker-down errors,
 * for its metrics and health. Its own lock; any thread. */
typedef struct rbk__rdstats_s {
        GMutex mu;
        GArray *brokers;        /* of the latest statistics, or NULL */
        int64_t at_ms;          /* when they arrived, 0: never */
        int64_t down_at_ms;     /* last _ALL_BROKERS_DOWN error, 0: none */
        uint64_t down_progress; /* the client's progress count then */
} rbk__rdstats_t;
void rbk__rdstats_init(rbk__rdstats_t *s);
void rbk__rdstats_clear(rbk__rdstats_t *s);
/* New statistics arrived. */
void rbk__rdstats_update(rbk__rdstats_t *s, const char *json);
/* librdkafka reported all brokers down; @progress is a count the client
 * raises on every sign of a working connection (messages delivered or
 * received). */
void rbk__rdstats_all_down(rbk__rdstats_t *s, uint64_t progress);
/* 1 (the reason in @why) when every broker connection is down: the latest
 * all-down report, with no progress since and no statistics after it, or
 * the latest statistics showing no broker up. */
int rbk__rdstats_down(rbk__rdstats_t *s, uint64_t progress, char *why,
                      size_t why_size);
/* The broker families <prefix>_broker_up, <prefix>_broker_rtt_avg_seconds
 * and <prefix>_statistics_age_seconds, each sample labelled
 * @label="@value" plus the broker's. */
void rbk__rdstats_prom(rbk__rdstats_t *s, GString *out, const char *prefix,
                       const char *label, const char *value);

/* ------------------------------------------------------------ conf.c */

/* Memory handed to the application (dumps, JSON) is malloc()ed: rbk_free()
 * is free(). */

/* A reference-counted object a lower layer keeps for a higher one (the
 * configuration keeps the dedup store's holder): the owner sets destroy. */
typedef struct rbk__held_s {
        gint refcnt;
        void (*destroy)(struct rbk__held_s *h);
} rbk__held_t;
/* A new reference (NULL stays NULL). */
rbk__held_t *rbk__held_ref(rbk__held_t *h);
/* Drops a reference; the last one calls destroy. Accepts NULL. */
void rbk__held_unref(rbk__held_t *h);

struct rbk_conf_s {
        GHashTable *props; /* char* name -> char* value, as set by the user */
        rbk_hook_cb_t *hook;
        void *hook_opaque;
        rbk_log_cb_t *log_cb;
        void *log_opaque;
        rbk_delivery_cb_t *dr_cb;
        void *dr_opaque;
        rbk_rebalance_cb_t *rebalance_cb;
        void *rebalance_opaque;
        rbk__held_t *dedup_store; /* the dedup store's holder (dedup.c), a
                                   * reference, or NULL */
        rbk_stats_cb_t *stats_cb;
        void *stats_opaque;
        rbk_oauthbearer_token_refresh_cb_t *oauth_cb;
        void *oauth_opaque;
};

/* Builds the librdkafka configuration for a client: robust defaults, then
 * the user's librdkafka properties, then validation of the effective
 * configuration (aliases and default topic conf included). rbk.* properties
 * are not passed on. No callbacks are set; the caller sets its own.
 * Returns NULL with the reason in errstr. */
rd_kafka_conf_t *rbk__conf_build(const rbk_conf_t *conf, rbk_client_type_t type,
                                 char *errstr, size_t errstr_size);

/* OAUTHBEARER token refresh: rbk__conf_build() (and any other builder of
 * a librdkafka configuration, through rbk__oauth_prepare()) installs the library's
 * refresh callback (with librdkafka's SASL queue) when the configuration
 * has one; after rd_kafka_new() the client calls rbk__oauth_start(), which
 * maps the instance to the application's callback and serves the SASL
 * queue on librdkafka's background thread, and rbk__oauth_stop() before
 * rd_kafka_destroy(). Both do nothing without a callback. */
void rbk__oauth_prepare(const rbk_conf_t *conf, rd_kafka_conf_t *rc);
void rbk__oauth_start(const rbk_conf_t *conf, rd_kafka_t *rk);
void rbk__oauth_stop(rd_kafka_t *rk);

/* Effective value of an rbk.* property (user value or the documented
 * default). Never NULL for a known property. */
const char *rbk__conf_str(const rbk_conf_t *conf, const char *name);
int64_t rbk__conf_int(const rbk_conf_t *conf, const char *name);
int rbk__conf_bool(const rbk_conf_t *conf, const char *name);
/* The topic/group prefix ("" when none). */
const char *rbk__conf_prefix(const rbk_conf_t *conf);
/* 1 if the two configurations would build identical clients. */
int rbk__conf_equal(const rbk_conf_t *a, const rbk_conf_t *b);
/* 1 if the property name holds a secret (its value is never shown). */
int rbk__conf_is_secret(const char *name);
/* Sets without the librdkafka set-time check (for env.c, which has
 * already validated); returns RBK_OK. */
void rbk__conf_set_raw(rbk_conf_t *conf, const char *name, const char *value);

/* ------------------------------------------------------------ hooks.c */

typedef struct rbk__hooks_s rbk__hooks_t;

/* Dispatcher for one client: hook, log callback, rate limiting. client_name
 * is copied. */
rbk__hooks_t *rbk__hooks_new(const rbk_conf_t *conf, const char *client_name);
void rbk__hooks_destroy(rbk__hooks_t *h);
/* Sets every field to "does not apply", version, class and severity. */
void rbk__event_init(rbk_event_t *ev, rbk_event_class_t cls,
                     rbk_severity_t sev);
/* Fills client and repeat/suppressed, strips the prefix from topic and
 * group, rate-limits by incident key and calls the hook (serialised per
 * dispatcher). Also logs the event. Returns 1 if delivered, 0 if suppressed. */
int rbk__hooks_emit(rbk__hooks_t *h, rbk_event_t *ev);
/* Logs through the application's log callback (or stderr for level <= 4),
 * redacted. */
void rbk__log(rbk__hooks_t *h, int level, const char *fac, const char *fmt,
              ...) __attribute__((format(printf, 4, 5)));
/* Installs a librdkafka log_cb that routes through rbk__log (opaque must be
 * the rd_kafka_conf's opaque owner: pass the hooks via rd_kafka_conf_set_opaque
 * is NOT used; instead the client calls rbk__hooks_rd_log from its own log
 * callback). */
void rbk__hooks_rd_log(rbk__hooks_t *h, int level, const char *fac,
                       const char *buf);
/* Logs warnings for known issues of the running librdkafka version that
 * affect the library's defaults, and fires RBK_EV_VERSION_WARNING once per
 * process. */
void rbk__version_check(rbk__hooks_t *h);

/* ------------------------------------------------------------ msgid.c */

/* A fresh random non-zero producer instance id. */
uint64_t rbk__msgid_new_producer_id(void);
/* rbk_msgid_format() for a producer whose id's first 17 characters (16 hex
 * digits and '-') are already in prefix: copies them and writes the
 * sequence's digits. Returns the length, -1 when size is too small. */
int rbk__msgid_format_seq(const char *prefix, uint64_t seq, char *buf,
                          size_t size);

/* ------------------------------------------------------------ producer.c */

/* Raises a fatal error on the producer's current librdkafka instance
 * (rd_kafka_test_fatal_error); for rbk_testing_fatal_error(). */
rbk_err_t rbk__producer_test_fatal(rbk_producer_t *p, int kafka_err,
                                   const char *reason);

/* ------------------------------------------------------------ registry.c */

/* Clients the registry has created so far (for tests and statistics). */
uint64_t rbk__registry_created(void);
/* For tests: after rbk_shutdown() has finished, opens the registry again
 * (owned by the calling process). Does nothing otherwise. */
void rbk__registry_reset(void);

#endif /* RBK_INTERNAL_H */
