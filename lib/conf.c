/* Configuration: the library's own rbk.* properties, the robust librdkafka
 * defaults, refusal of unsafe settings (checked on the *effective*
 * configuration, so every alias path is caught) and redacted dumps. */
#include <openssl/err.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "dedup.h"

/* ------------------------------------------------------------ rbk.* table */

typedef enum { P_BOOL, P_INT, P_STR, P_ENUM, P_NAME } rbk__ptype_t;

typedef struct rbk__prop_s {
        const char *name;
        rbk__ptype_t type;
        const char *def;
        int64_t min, max;  /* P_INT */
        const char *enums; /* P_ENUM: comma-separated */
} rbk__prop_t;

/* Every rbk.* property with its default. docs/configuration.md explains
 * each; keep the two in step. */
static const rbk__prop_t rbk__props[] = {
    {"rbk.client.name", P_STR, "anonymous", 0, 0, NULL},
    {"rbk.prefix", P_NAME, "", 0, 0, NULL},
    {"rbk.unsafe.allow", P_STR, "", 0, 0, NULL},
    {"rbk.msgid.enable", P_BOOL, "true", 0, 0, NULL},
    {"rbk.hook.rate.limit.ms", P_INT, "60000", 0, 86400000, NULL},
    {"rbk.shutdown.timeout.ms", P_INT, "15000", 0, 3600000, NULL},
    {"rbk.metadata.warm.topics", P_STR, "", 0, 0, NULL},
    {"rbk.producer.send.timeout.ms", P_INT, "10000", 0, 3600000, NULL},
    {"rbk.producer.fatal.max.recoveries", P_INT, "5", 0, 1000, NULL},
    {"rbk.producer.fatal.window.ms", P_INT, "60000", 1, 86400000, NULL},
    {"rbk.producer.fatal.drain.ms", P_INT, "2000", 0, 600000, NULL},
    {"rbk.producer.sender.frees", P_BOOL, "true", 0, 0, NULL},
    {"rbk.consumer.workers", P_INT, "4", 1, 256, NULL},
    {"rbk.consumer.queue.max", P_INT, "1000", 1, 10000000, NULL},
    {"rbk.consumer.retry.max.attempts", P_INT, "5", 1, 1000000, NULL},
    {"rbk.consumer.retry.backoff.ms", P_INT, "200", 0, 3600000, NULL},
    {"rbk.consumer.retry.backoff.max.ms", P_INT, "30000", 0, 86400000, NULL},
    {"rbk.consumer.giveup", P_ENUM, "pause", 0, 0, "pause,deadletter"},
    {"rbk.consumer.deadletter.topic", P_STR, "", 0, 0, NULL},
    {"rbk.consumer.deadletter.limit", P_INT, "100", 0, 100000000, NULL},
    {"rbk.consumer.batch.max.messages", P_INT, "100", 1, 100000, NULL},
    {"rbk.consumer.batch.max.ms", P_INT, "0", 0, 3600000, NULL},
    {"rbk.consumer.deadletter.limit.window.ms", P_INT, "60000", 1, 86400000,
     NULL},
    {"rbk.consumer.stall.timeout.ms", P_INT, "60000", 0, 86400000, NULL},
    {"rbk.consumer.out.of.range.recheck.ms", P_INT, "2000", 0, 600000, NULL},
    {"rbk.consumer.revoke.timeout.ms", P_INT, "10000", 0, 3600000, NULL},
    {"rbk.consumer.initial.offset", P_ENUM, "earliest", 0, 0,
     "earliest,latest,error"},
    {"rbk.dedup.enable", P_BOOL, "true", 0, 0, NULL},
    {"rbk.dedup.window", P_INT, "262144", 64, 16777216, NULL},
    {"rbk.dedup.max.producers", P_INT, "1024", 1, 65536, NULL},
    {"rbk.dedup.active.producers", P_INT, "128", 1, 1024, NULL},
    {"rbk.dedup.idle.bytes", P_INT, "1048576", 0, 1073741824, NULL},
    {"rbk.dedup.foreign.window", P_INT, "10000", 0, 10000000, NULL},
    {"rbk.control.topic", P_STR, "rbk-control", 0, 0, NULL},
    {"rbk.control.enable", P_BOOL, "true", 0, 0, NULL},
    {NULL, 0, NULL, 0, 0, NULL},
};

static const rbk__prop_t *rbk__prop_find(const char *name) {
        for (const rbk__prop_t *p = rbk__props; p->name; p++)
                if (!strcmp(p->name, name))
                        return p;
        return NULL;
}

static int rbk__parse_bool(const char *v, int *out) {
        if (!strcmp(v, "true") || !strcmp(v, "1")) {
                *out = 1;
                return 0;
        }
        if (!strcmp(v, "false") || !strcmp(v, "0")) {
                *out = 0;
                return 0;
        }
        return -1;
}

static int rbk__parse_int(const char *v, int64_t *out) {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end)
                return -1;
        *out = n;
        return 0;
}

static int rbk__enum_has(const char *list, const char *v) {
        size_t vl = strlen(v);
        const char *s = list;
        while (*s) {
                const char *e = strchr(s, ',');
                size_t l = e ? (size_t)(e - s) : strlen(s);
                if (l == vl && !strncmp(s, v, l))
                        return 1;
                if (!e)
                        break;
                s = e + 1;
        }
        return 0;
}

static rbk_err_t rbk__prop_check(const rbk__prop_t *p, const char *v,
                                 char *errstr, size_t errstr_size) {
        int b;
        int64_t n;
        switch (p->type) {
        case P_BOOL:
                if (rbk__parse_bool(v, &b))
                        return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                           "%s: expected true or false, got "
                                           "\"%s\"",
                                           p->name, v);
                break;
        case P_INT:
                if (rbk__parse_int(v, &n) || n < p->min || n > p->max)
                        return rbk__seterr(
                            errstr, errstr_size, RBK_ERR_CONF,
                            "%s: expected an integer from %lld to %lld, got "
                            "\"%s\"",
                            p->name, (long long)p->min, (long long)p->max, v);
                if (!strcmp(p->name, "rbk.dedup.window") && (n & (n - 1)))
                        return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                           "%s: must be a power of two, got "
                                           "%lld",
                                           p->name, (long long)n);
                break;
        case P_ENUM:
                if (!rbk__enum_has(p->enums, v))
                        return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                           "%s: expected one of %s, got "
                                           "\"%s\"",
                                           p->name, p->enums, v);
                break;
        case P_NAME:
                if (strlen(v) > 100)
                        return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                           "%s: at most 100 characters",
                                           p->name);
                for (const char *c = v; *c; c++)
                        if (!g_ascii_isalnum(*c) && *c != '.' && *c != '_' &&
                            *c != '-')
                                return rbk__seterr(
                                    errstr, errstr_size, RBK_ERR_CONF,
                                    "%s: illegal character at position %d; "
                                    "allowed are a-z A-Z 0-9 . _ -",
                                    p->name, (int)(c - v));
                break;
        case P_STR:
                break;
        }
        return RBK_OK;
}

/* ------------------------------------------------------------ secrets */

int rbk__conf_is_secret(const char *name) {
        static const char *const exact[] = {
            "ssl.key.pem", "ssl_key", "sasl.oauthbearer.config",
            "ssl.keystore.location", NULL};
        for (int i = 0; exact[i]; i++)
                if (!strcmp(name, exact[i]))
                        return 1;
        return strstr(name, "password") != NULL ||
               strstr(name, "secret") != NULL;
}

/* ------------------------------------------------------------ object */

rbk_conf_t *rbk_conf_new(void) {
        rbk_conf_t *conf = g_new0(rbk_conf_t, 1);
        conf->props =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return conf;
}

void rbk_conf_destroy(rbk_conf_t *conf) {
        if (!conf)
                return;
        g_hash_table_destroy(conf->props);
        rbk__held_unref(conf->dedup_store);
        g_free(conf);
}

rbk_conf_t *rbk_conf_dup(const rbk_conf_t *conf) {
        if (!conf)
                return NULL;
        rbk_conf_t *c = rbk_conf_new();
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, conf->props);
        while (g_hash_table_iter_next(&it, &k, &v))
                g_hash_table_insert(c->props, g_strdup(k), g_strdup(v));
        c->hook = conf->hook;
        c->hook_opaque = conf->hook_opaque;
        c->log_cb = conf->log_cb;
        c->log_opaque = conf->log_opaque;
        c->dr_cb = conf->dr_cb;
        c->dr_opaque = conf->dr_opaque;
        c->rebalance_cb = conf->rebalance_cb;
        c->rebalance_opaque = conf->rebalance_opaque;
        c->dedup_store = rbk__held_ref(conf->dedup_store);
        c->stats_cb = conf->stats_cb;
        c->stats_opaque = conf->stats_opaque;
        c->oauth_cb = conf->oauth_cb;
        c->oauth_opaque = conf->oauth_opaque;
        return c;
}

void rbk__conf_set_raw(rbk_conf_t *conf, const char *name, const char *value) {
        if (value)
                g_hash_table_insert(conf->props, g_strdup(name),
                                    g_strdup(value));
        else
                g_hash_table_remove(conf->props, name);
}

/* Reads a property of a librdkafka conf (global, then default topic conf). */
static int rbk__rd_get(rd_kafka_conf_t *rc, const char *name, char *buf,
                       size_t size) {
        size_t sz = size;
        if (rd_kafka_conf_get(rc, name, buf, &sz) == RD_KAFKA_CONF_OK)
                return 0;
        rd_kafka_topic_conf_t *tc = rd_kafka_conf_get_default_topic_conf(rc);
        sz = size;
        if (tc && rd_kafka_topic_conf_get(tc, name, buf, &sz) ==
                      RD_KAFKA_CONF_OK)
                return 0;
        buf[0] = '\0';
        return -1;
}

/* Sets a librdkafka property, with a message that never shows a secret. */
static rbk_err_t rbk__rd_set(rd_kafka_conf_t *rc, const char *name,
                             const char *value, char *errstr,
                             size_t errstr_size) {
        char rderr[512];
        rd_kafka_conf_res_t r =
            rd_kafka_conf_set(rc, name, value, rderr, sizeof(rderr));
        if (r == RD_KAFKA_CONF_OK)
                return RBK_OK;
        if (r == RD_KAFKA_CONF_UNKNOWN)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                   "unknown configuration property \"%s\"",
                                   name);
        if (rbk__conf_is_secret(name))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                   "invalid value for secret property \"%s\" "
                                   "(value not shown)",
                                   name);
        rbk__redact(rderr);
        return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF, "%s: %s", name,
                           rderr);
}

/* transactional.id is refused on both client types, with no opt-out: the
 * library never runs Kafka transactions (docs/non-goals.md), so a producer
 * carrying one would fail every send with a state error. */
static rbk_err_t rbk__transactional_refused(char *errstr, size_t errstr_size,
                                            const char *value) {
        return rbk__seterr(errstr, errstr_size, RBK_ERR_UNSAFE_CONF,
                           "transactional.id=%s refused: Kafka transactions "
                           "are not supported by this library "
                           "(docs/non-goals.md), so every send of a "
                           "transactional producer would fail; duplicates "
                           "are handled by idempotence and message ids "
                           "(no opt-out exists)",
                           value);
}

rbk_err_t rbk_conf_set(rbk_conf_t *conf, const char *name, const char *value,
                       char *errstr, size_t errstr_size) {
        if (!conf || !name || !*name)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "rbk_conf_set: %s is NULL or empty",
                                   !conf ? "conf" : "name");
        if (!strncmp(name, "rbk.", 4)) {
                const rbk__prop_t *p = rbk__prop_find(name);
                if (!p)
                        return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                           "unknown library property \"%s\" "
                                           "(docs/configuration.md lists "
                                           "them)",
                                           name);
                if (value) {
                        rbk_err_t err =
                            rbk__prop_check(p, value, errstr, errstr_size);
                        if (err)
                                return err;
                }
                rbk__conf_set_raw(conf, name, value);
                return RBK_OK;
        }
        if (!value) {
                rbk__conf_set_raw(conf, name, NULL);
                return RBK_OK;
        }
        if (!strcmp(name, "transactional.id"))
                return rbk__transactional_refused(errstr, errstr_size, value);
        /* Check the name and value against librdkafka on a scratch conf that
         * starts from auto.offset.reset=error: if the setting (under any
         * alias, e.g. topic.auto.offset.reset or smallest/beginning) changes
         * it, it is refused now. */
        rd_kafka_conf_t *scratch = rd_kafka_conf_new();
        char buf[64];
        rd_kafka_conf_set(scratch, "auto.offset.reset", "error", NULL, 0);
        rbk_err_t err = rbk__rd_set(scratch, name, value, errstr, errstr_size);
        if (!err) {
                rbk__rd_get(scratch, "auto.offset.reset", buf, sizeof(buf));
                if (strcmp(buf, "error"))
                        err = rbk__seterr(
                            errstr, errstr_size, RBK_ERR_UNSAFE_CONF,
                            "%s=%s refused: auto.offset.reset is always "
                            "\"error\" in this library, so an out-of-range "
                            "offset quarantines the partition instead of "
                            "silently replaying or skipping messages; use "
                            "rbk.consumer.initial.offset for partitions with "
                            "no committed offset (no opt-out exists)",
                            name, value);
        }
        rd_kafka_conf_destroy(scratch);
        if (err)
                return err;
        rbk__conf_set_raw(conf, name, value);
        return RBK_OK;
}

rbk_err_t rbk_conf_get(const rbk_conf_t *conf, const char *name, char *dest,
                       size_t *dest_size) {
        if (!conf || !name || !dest_size)
                return RBK_ERR_INVALID_ARG;
        const char *v = g_hash_table_lookup(conf->props, name);
        if (!v)
                return RBK_ERR_NOT_FOUND;
        size_t need = strlen(v) + 1;
        if (dest && *dest_size > 0)
                g_strlcpy(dest, v, *dest_size);
        *dest_size = need;
        return RBK_OK;
}

/* ------------------------------------------------------------ rbk.* values */

const char *rbk__conf_str(const rbk_conf_t *conf, const char *name) {
        const char *v = conf ? g_hash_table_lookup(conf->props, name) : NULL;
        if (v)
                return v;
        const rbk__prop_t *p = rbk__prop_find(name);
        g_assert(p != NULL); /* an unknown name is a bug in the library */
        return p->def;
}

int64_t rbk__conf_int(const rbk_conf_t *conf, const char *name) {
        int64_t n = 0;
        rbk__parse_int(rbk__conf_str(conf, name), &n);
        return n;
}

int rbk__conf_bool(const rbk_conf_t *conf, const char *name) {
        int b = 0;
        rbk__parse_bool(rbk__conf_str(conf, name), &b);
        return b;
}

const char *rbk__conf_prefix(const rbk_conf_t *conf) {
        return rbk__conf_str(conf, "rbk.prefix");
}

static int rbk__cmp_str(gconstpointer a, gconstpointer b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The user's property names, sorted (the order they are applied in). */
static GPtrArray *rbk__sorted_names(const rbk_conf_t *conf) {
        GPtrArray *names = g_ptr_array_new();
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, conf->props);
        while (g_hash_table_iter_next(&it, &k, &v))
                g_ptr_array_add(names, k);
        g_ptr_array_sort(names, rbk__cmp_str);
        return names;
}

int rbk__conf_equal(const rbk_conf_t *a, const rbk_conf_t *b) {
        if (!a || !b)
                return a == b;
        if (g_hash_table_size(a->props) != g_hash_table_size(b->props))
                return 0;
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, a->props);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                const char *bv = g_hash_table_lookup(b->props, k);
                if (!bv || strcmp(v, bv))
                        return 0;
        }
        return a->hook == b->hook && a->hook_opaque == b->hook_opaque &&
               a->log_cb == b->log_cb && a->log_opaque == b->log_opaque &&
               a->dr_cb == b->dr_cb && a->dr_opaque == b->dr_opaque &&
               a->rebalance_cb == b->rebalance_cb &&
               a->rebalance_opaque == b->rebalance_opaque &&
               a->dedup_store == b->dedup_store &&
               a->stats_cb == b->stats_cb &&
               a->stats_opaque == b->stats_opaque &&
               a->oauth_cb == b->oauth_cb && a->oauth_opaque == b->oauth_opaque;
}

/* ------------------------------------------------------------ build */

/* librdkafka releases with fixes our defaults depend on. */
#define RBK__RD_COOPERATIVE_SAFE 0x020601ff /* 2.6.1: issues 4783, 4527 */

static const char *const rbk__producer_defaults[][2] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"max.in.flight.requests.per.connection", "5"},
    {"message.send.max.retries", "2147483647"},
    {"message.timeout.ms", "120000"}, /* the delivery timeout */
    /* A produce request to a leader that stopped answering (frozen, cut off)
     * is given up after this, the connection closed and the metadata
     * refreshed; before it, an idempotent producer cannot move the
     * partition's in-flight batches to the new leader (docs/producer.md,
     * "A leader that stops answering"). librdkafka's default is 60000. */
    {"socket.timeout.ms", "10000"},
    {"retry.backoff.ms", "100"},
    {"linger.ms", "5"},
    {"partitioner", "murmur2_random"},
    {"socket.keepalive.enable", "true"},
    {NULL, NULL},
};

static const char *const rbk__consumer_defaults[][2] = {
    {"auto.offset.reset", "error"},
    {"enable.auto.offset.store", "false"},
    {"enable.auto.commit", "true"},
    {"auto.commit.interval.ms", "5000"},
    {"enable.partition.eof", "false"},
    /* A heartbeat to a group coordinator that stopped answering is given up
     * after this and the new coordinator looked up, well within
     * session.timeout.ms (45000): a frozen or cut-off coordinator no longer
     * fences the members (docs/consumer.md, "Gray failures"). */
    {"socket.timeout.ms", "10000"},
    {"socket.keepalive.enable", "true"},
    {NULL, NULL},
};

/* Whether the user named a setting in rbk.unsafe.allow. */
static int rbk__allowed(const rbk_conf_t *conf, const char *name) {
        return rbk__enum_has(rbk__conf_str(conf, "rbk.unsafe.allow"), name);
}

static rbk_err_t rbk__unsafe(char *errstr, size_t errstr_size,
                             const char *what, const char *why,
                             const char *optout) {
        return rbk__seterr(errstr, errstr_size, RBK_ERR_UNSAFE_CONF,
                           "%s refused: %s; to accept the risk, name it in "
                           "rbk.unsafe.allow (rbk.unsafe.allow=%s)",
                           what, why, optout);
}

static rbk_err_t rbk__validate_effective(const rbk_conf_t *conf,
                                         rd_kafka_conf_t *rc,
                                         rbk_client_type_t type, char *errstr,
                                         size_t errstr_size) {
        char v[256], what[300];
        /* Never transactions, on either client type, no opt-out (also when
         * the property reached the configuration without rbk_conf_set()). */
        const char *txn = g_hash_table_lookup(conf->props, "transactional.id");
        if (txn || (!rbk__rd_get(rc, "transactional.id", v, sizeof(v)) && *v))
                return rbk__transactional_refused(errstr, errstr_size,
                                                  txn ? txn : v);
        /* Never an automatic reset, on either client type, no opt-out. */
        rbk__rd_get(rc, "auto.offset.reset", v, sizeof(v));
        if (type == RBK_CONSUMER && strcmp(v, "error"))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_UNSAFE_CONF,
                                   "auto.offset.reset=%s refused: it is "
                                   "always \"error\" (no opt-out exists)",
                                   v);
        if (type == RBK_PRODUCER) {
                rbk__rd_get(rc, "enable.idempotence", v, sizeof(v));
                if (strcmp(v, "true") && !rbk__allowed(conf, "enable.idempotence")) {
                        snprintf(what, sizeof(what), "enable.idempotence=%s", v);
                        return rbk__unsafe(errstr, errstr_size, what,
                                           "without idempotence a retry after "
                                           "a leader change can duplicate or "
                                           "reorder messages",
                                           "enable.idempotence");
                }
                rbk__rd_get(rc, "acks", v, sizeof(v));
                if (strcmp(v, "-1") && strcmp(v, "all") &&
                    !rbk__allowed(conf, "acks")) {
                        snprintf(what, sizeof(what), "acks=%s", v);
                        return rbk__unsafe(errstr, errstr_size, what,
                                           "a message acknowledged by fewer "
                                           "than all in-sync replicas is lost "
                                           "when the leader fails",
                                           "acks");
                }
                rbk__rd_get(rc, "message.send.max.retries", v, sizeof(v));
                if (atoll(v) <= 0 && !rbk__allowed(conf, "retries")) {
                        snprintf(what, sizeof(what), "retries=%s", v);
                        return rbk__unsafe(errstr, errstr_size, what,
                                           "without retries every leader "
                                           "election fails messages",
                                           "retries");
                }
        } else {
                size_t sz = sizeof(v);
                if (rd_kafka_conf_get(rc, "group.id", v, &sz) !=
                        RD_KAFKA_CONF_OK ||
                    !*v)
                        return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                           "group.id is required for a "
                                           "consumer");
                rbk__rd_get(rc, "enable.auto.offset.store", v, sizeof(v));
                if (strcmp(v, "false") &&
                    !rbk__allowed(conf, "enable.auto.offset.store"))
                        return rbk__unsafe(
                            errstr, errstr_size,
                            "enable.auto.offset.store=true",
                            "offsets would be stored before the handler ran, "
                            "so a crash loses messages",
                            "enable.auto.offset.store");
                rbk__rd_get(rc, "partition.assignment.strategy", v, sizeof(v));
                if (strstr(v, "cooperative-sticky") &&
                    rd_kafka_version() < RBK__RD_COOPERATIVE_SAFE &&
                    !rbk__allowed(conf, "partition.assignment.strategy")) {
                        snprintf(what, sizeof(what),
                                 "partition.assignment.strategy=%s", v);
                        return rbk__unsafe(
                            errstr, errstr_size, what,
                            "cooperative-sticky assignment can loop forever "
                            "(librdkafka issue 4783) or hang on close (4527) "
                            "before librdkafka 2.6.1",
                            "partition.assignment.strategy");
                }
        }
        return RBK_OK;
}

/* ------------------------------------------------------------ OAUTHBEARER */

struct rbk_oauth_token_setter_s {
        rd_kafka_t *rk;
};

typedef struct {
        rbk_oauthbearer_token_refresh_cb_t *cb;
        void *opaque;
} rbk__oauth_t;

/* rd_kafka_t* -> rbk__oauth_t*: librdkafka hands its refresh callback the
 * instance's opaque, which belongs to the client; the application's
 * callback is found by instance instead. */
static GMutex rbk__oauth_mu;
static GHashTable *rbk__oauth_map;

static void rbk__oauth_refresh(rd_kafka_t *rk, const char *oauthbearer_config,
                               void *opaque) {
        rbk__oauth_t o = {NULL, NULL};
        g_mutex_lock(&rbk__oauth_mu);
        rbk__oauth_t *e =
            rbk__oauth_map ? g_hash_table_lookup(rbk__oauth_map, rk) : NULL;
        if (e)
                o = *e;
        g_mutex_unlock(&rbk__oauth_mu);
        if (!o.cb) {
                rd_kafka_oauthbearer_set_token_failure(rk,
                                                       "client is closing");
                return;
        }
        rbk_oauth_token_setter_t setter = {rk};
        o.cb(oauthbearer_config ? oauthbearer_config : "", &setter, o.opaque);
}

void rbk__oauth_prepare(const rbk_conf_t *conf, rd_kafka_conf_t *rc) {
        if (!conf || !conf->oauth_cb)
                return;
        rd_kafka_conf_set_oauthbearer_token_refresh_cb(rc, rbk__oauth_refresh);
        rd_kafka_conf_enable_sasl_queue(rc, 1);
}

void rbk__oauth_start(const rbk_conf_t *conf, rd_kafka_t *rk) {
        if (!conf || !conf->oauth_cb || !rk)
                return;
        rbk__oauth_t *e = g_new(rbk__oauth_t, 1);
        e->cb = conf->oauth_cb;
        e->opaque = conf->oauth_opaque;
        g_mutex_lock(&rbk__oauth_mu);
        if (!rbk__oauth_map)
                rbk__oauth_map = g_hash_table_new_full(g_direct_hash,
                                                       g_direct_equal, NULL,
                                                       g_free);
        g_hash_table_replace(rbk__oauth_map, rk, e);
        g_mutex_unlock(&rbk__oauth_mu);
        rd_kafka_error_t *err = rd_kafka_sasl_background_callbacks_enable(rk);
        if (err)
                rd_kafka_error_destroy(err);
}

void rbk__oauth_stop(rd_kafka_t *rk) {
        g_mutex_lock(&rbk__oauth_mu);
        if (rbk__oauth_map && rk)
                g_hash_table_remove(rbk__oauth_map, rk);
        g_mutex_unlock(&rbk__oauth_mu);
}

rbk_err_t rbk_oauthbearer_set_token(rbk_oauth_token_setter_t *setter,
                                    const char *token, int64_t lifetime_ms,
                                    const char *principal, char *errstr,
                                    size_t errstr_size) {
        if (!setter || !setter->rk || !token || !principal)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "setter, token and principal are required");
        char e[512] = "";
        rd_kafka_resp_err_t err = rd_kafka_oauthbearer_set_token(
            setter->rk, token, lifetime_ms, principal, NULL, 0, e, sizeof(e));
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                return RBK_OK;
        rbk__redact(e);
        return rbk__seterr(errstr, errstr_size,
                           err == RD_KAFKA_RESP_ERR__STATE ? RBK_ERR_STATE
                                                           : RBK_ERR_INVALID_ARG,
                           "OAUTHBEARER token refused: %s",
                           *e ? e : rd_kafka_err2str(err));
}

rbk_err_t rbk_oauthbearer_set_token_failure(rbk_oauth_token_setter_t *setter,
                                            const char *reason) {
        if (!setter || !setter->rk || !reason || !*reason)
                return RBK_ERR_INVALID_ARG;
        rd_kafka_resp_err_t err =
            rd_kafka_oauthbearer_set_token_failure(setter->rk, reason);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                return RBK_OK;
        return err == RD_KAFKA_RESP_ERR__STATE ? RBK_ERR_STATE
                                               : RBK_ERR_INVALID_ARG;
}

rd_kafka_conf_t *rbk__conf_build(const rbk_conf_t *conf, rbk_client_type_t type,
                                 char *errstr, size_t errstr_size) {
        if (!conf) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "configuration is NULL");
                return NULL;
        }
        if (type != RBK_PRODUCER && type != RBK_CONSUMER) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "unknown client type %d", (int)type);
                return NULL;
        }
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        const char *const(*defs)[2] = type == RBK_PRODUCER
                                          ? rbk__producer_defaults
                                          : rbk__consumer_defaults;
        for (int i = 0; defs[i][0]; i++)
                if (rbk__rd_set(rc, defs[i][0], defs[i][1], errstr,
                                errstr_size))
                        goto fail;
        if (type == RBK_CONSUMER) {
                /* Eager assignment where cooperative-sticky has known hangs. */
                const char *strategy =
                    rd_kafka_version() < RBK__RD_COOPERATIVE_SAFE
                        ? "range,roundrobin"
                        : "cooperative-sticky";
                if (rbk__rd_set(rc, "partition.assignment.strategy", strategy,
                                errstr, errstr_size))
                        goto fail;
        }
        GPtrArray *names = rbk__sorted_names(conf);
        for (guint i = 0; i < names->len; i++) {
                const char *n = g_ptr_array_index(names, i);
                if (!strncmp(n, "rbk.", 4))
                        continue;
                if (rbk__rd_set(rc, n, g_hash_table_lookup(conf->props, n),
                                errstr, errstr_size)) {
                        g_ptr_array_free(names, TRUE);
                        goto fail;
                }
        }
        g_ptr_array_free(names, TRUE);
        if (rbk__validate_effective(conf, rc, type, errstr, errstr_size))
                goto fail;
        rbk__oauth_prepare(conf, rc);
        return rc;
fail:
        rd_kafka_conf_destroy(rc);
        return NULL;
}

static void rbk__conf_quiet_log(const rd_kafka_t *rk, int level,
                                const char *fac, const char *buf) {}

rbk_err_t rbk_conf_validate(const rbk_conf_t *conf, rbk_client_type_t type,
                            char *errstr, size_t errstr_size) {
        char e[512];
        e[0] = '\0';
        rd_kafka_conf_t *rc = rbk__conf_build(conf, type, e, sizeof(e));
        if (!rc) {
                if (errstr && errstr_size)
                        g_strlcpy(errstr, e, errstr_size);
                if (!conf || (type != RBK_PRODUCER && type != RBK_CONSUMER))
                        return RBK_ERR_INVALID_ARG;
                return strstr(e, "refused") ? RBK_ERR_UNSAFE_CONF
                                            : RBK_ERR_CONF;
        }
        /* What only librdkafka's own checks at client creation find (e.g.
         * max.in.flight above 5 with idempotence): a client is made and
         * destroyed at once, with no bootstrap servers, so nothing
         * connects. The message is the one creation gives. */
        char rderr[512];
        /* librdkafka's TLS set-up leaves OpenSSL errors on this thread's
         * queue: they are the trial's, not the caller's. */
        ERR_set_mark();
        rd_kafka_conf_set(rc, "bootstrap.servers", "", NULL, 0);
        rd_kafka_conf_set_log_cb(rc, rbk__conf_quiet_log);
        rd_kafka_t *rk =
            rd_kafka_new(type == RBK_PRODUCER ? RD_KAFKA_PRODUCER
                                              : RD_KAFKA_CONSUMER,
                         rc, rderr, sizeof(rderr));
        if (!rk) {
                rd_kafka_conf_destroy(rc);
                ERR_pop_to_mark();
                rbk__redact(rderr);
                return rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                                   "creating the librdkafka %s failed: %s",
                                   type == RBK_PRODUCER ? "producer"
                                                        : "consumer",
                                   rderr);
        }
        rd_kafka_destroy(rk);
        ERR_pop_to_mark();
        return RBK_OK;
}

/* ------------------------------------------------------------ dump */

static void rbk__dump_add(GPtrArray *lines, const char *name,
                          const char *value) {
        if (!strcmp(name, "default_topic_conf"))
                return;
        g_ptr_array_add(lines,
                        g_strdup_printf("%s=%s", name,
                                        rbk__conf_is_secret(name) &&
                                                value && *value
                                            ? RBK__REDACTED
                                            : (value ? value : "")));
}

char *rbk_conf_dump(const rbk_conf_t *conf, rbk_client_type_t type,
                    char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *rc = rbk__conf_build(conf, type, errstr, errstr_size);
        if (!rc)
                return NULL;
        GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
        size_t cnt;
        const char **arr = rd_kafka_conf_dump(rc, &cnt);
        for (size_t i = 0; i + 1 < cnt; i += 2)
                rbk__dump_add(lines, arr[i], arr[i + 1]);
        rd_kafka_conf_dump_free(arr, cnt);
        rd_kafka_topic_conf_t *tc = rd_kafka_conf_get_default_topic_conf(rc);
        if (tc) {
                arr = rd_kafka_topic_conf_dump(tc, &cnt);
                for (size_t i = 0; i + 1 < cnt; i += 2)
                        rbk__dump_add(lines, arr[i], arr[i + 1]);
                rd_kafka_conf_dump_free(arr, cnt);
        }
        for (const rbk__prop_t *p = rbk__props; p->name; p++)
                rbk__dump_add(lines, p->name, rbk__conf_str(conf, p->name));
        g_ptr_array_sort(lines, rbk__cmp_str);
        GString *out = g_string_new(NULL);
        for (guint i = 0; i < lines->len; i++) {
                g_string_append(out, g_ptr_array_index(lines, i));
                g_string_append_c(out, '\n');
        }
        g_ptr_array_free(lines, TRUE);
        rd_kafka_conf_destroy(rc);
        /* Returned to the app, freed with rbk_free() (free()). */
        char *s = strdup(out->str);
        g_string_free(out, TRUE);
        return s;
}

/* ------------------------------------------------------------ callbacks */

void rbk_conf_set_hook(rbk_conf_t *conf, rbk_hook_cb_t *hook, void *opaque) {
        if (!conf)
                return;
        conf->hook = hook;
        conf->hook_opaque = opaque;
}

void rbk_conf_set_log_cb(rbk_conf_t *conf, rbk_log_cb_t *log_cb,
                         void *opaque) {
        if (!conf)
                return;
        conf->log_cb = log_cb;
        conf->log_opaque = opaque;
}

void rbk_conf_set_delivery_cb(rbk_conf_t *conf, rbk_delivery_cb_t *cb,
                              void *opaque) {
        if (!conf)
                return;
        conf->dr_cb = cb;
        conf->dr_opaque = opaque;
}

void rbk_conf_set_rebalance_cb(rbk_conf_t *conf, rbk_rebalance_cb_t *cb,
                               void *opaque) {
        if (!conf)
                return;
        conf->rebalance_cb = cb;
        conf->rebalance_opaque = opaque;
}

void rbk_conf_set_stats_cb(rbk_conf_t *conf, rbk_stats_cb_t *cb,
                           void *opaque) {
        if (!conf)
                return;
        conf->stats_cb = cb;
        conf->stats_opaque = opaque;
}

void rbk_conf_set_oauthbearer_token_refresh_cb(
    rbk_conf_t *conf, rbk_oauthbearer_token_refresh_cb_t *cb, void *opaque) {
        if (!conf)
                return;
        conf->oauth_cb = cb;
        conf->oauth_opaque = opaque;
}

void rbk_free(void *ptr) {
        free(ptr);
}
