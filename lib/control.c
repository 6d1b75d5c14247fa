/* The operator control channel: the message format, the internal plain
 * clients' configuration, and the listener each consumer runs on the
 * control topic (docs/rbk-admin.md).
 *
 * The listener is a plain librdkafka consumer with no group: it reads
 * partition 0 of the control topic with the simple consumer API, starting at
 * the end of the log as it is when the listener starts (older commands are
 * never replayed), and is never quarantined itself (an out-of-range position
 * simply starts again at the end). Acknowledgements go out through a small
 * producer created on the first one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "incident.h"

#define RBK__CTL_GROUP "rbk-control"
/* Bound of one consume call (the stop latency). */
#define RBK__CTL_POLL_MS 200
/* Bound of the listener's metadata and watermark queries (it bounds how
 * long stopping a consumer can wait for the listener). */
#define RBK__CTL_QUERY_MS 2000
/* Retry after a query failed (cluster unreachable). */
#define RBK__CTL_RETRY_ERR_MS 2000
/* Delivery bound of an acknowledgement. */
#define RBK__CTL_ACK_TIMEOUT_MS 10000

/* ------------------------------------------------------------ messages */

void rbk__control_msg_init(rbk__control_msg_t *m, rbk__ctl_type_t type) {
        memset(m, 0, sizeof(*m));
        m->type = type;
        m->partition = -1;
        m->offset = -1;
        m->pid = -1;
}

char *rbk__control_new_id(void) {
        return g_strdup_printf("%08x%08x%08x%08x", g_random_int(),
                               g_random_int(), g_random_int(), g_random_int());
}

char *rbk__control_msg_format(const rbk__control_msg_t *m, size_t *lenp,
                              char *errstr, size_t errstr_size) {
        if (!m || !lenp) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "control message is NULL");
                return NULL;
        }
        if (!*m->id) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "control message has no id");
                return NULL;
        }
        if (m->type != RBK__CTL_COMMAND && m->type != RBK__CTL_ACK) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "control message type %d is unknown",
                            (int)m->type);
                return NULL;
        }
        if (m->type == RBK__CTL_COMMAND &&
            (!*m->action || !*m->group || !*m->topic || m->partition < 0 ||
             !*m->incident_key ||
             rbk__resolve_parse(rbk__resolve_name(m->how)) == 0 ||
             (m->how == RBK_RESOLVE_OFFSET && m->offset < 0))) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "command %s is incomplete: it needs an action, "
                            "group, topic, partition, incident key and a "
                            "valid choice (with an offset for \"offset\")",
                            m->id);
                return NULL;
        }
        GKeyFile *kf = g_key_file_new();
        const char *g = RBK__CTL_GROUP;
        g_key_file_set_integer(kf, g, "version", RBK__CONTROL_PROTO);
        g_key_file_set_string(kf, g, "type",
                              m->type == RBK__CTL_COMMAND ? "command" : "ack");
        g_key_file_set_string(kf, g, "id", m->id);
        if (*m->action)
                g_key_file_set_string(kf, g, "action", m->action);
        if (*m->group)
                g_key_file_set_string(kf, g, "group", m->group);
        if (*m->topic)
                g_key_file_set_string(kf, g, "topic", m->topic);
        if (m->partition >= 0)
                g_key_file_set_int64(kf, g, "partition", m->partition);
        if (*m->incident_key)
                g_key_file_set_string(kf, g, "incident", m->incident_key);
        if (m->type == RBK__CTL_COMMAND) {
                g_key_file_set_string(kf, g, "choice",
                                      rbk__resolve_name(m->how));
                if (m->how == RBK_RESOLVE_OFFSET)
                        g_key_file_set_int64(kf, g, "offset", m->offset);
                if (m->expires_ms > 0)
                        g_key_file_set_int64(kf, g, "expires", m->expires_ms);
                if (*m->requested_by)
                        g_key_file_set_string(kf, g, "requested_by",
                                              m->requested_by);
        } else {
                g_key_file_set_integer(kf, g, "result", (int)m->result);
                g_key_file_set_string(kf, g, "result_name",
                                      rbk_err2name(m->result));
                if (*m->error)
                        g_key_file_set_string(kf, g, "error", m->error);
                if (*m->client)
                        g_key_file_set_string(kf, g, "client", m->client);
                if (*m->host)
                        g_key_file_set_string(kf, g, "host", m->host);
                if (m->pid >= 0)
                        g_key_file_set_int64(kf, g, "pid", m->pid);
                if (*m->member_id)
                        g_key_file_set_string(kf, g, "member_id",
                                              m->member_id);
        }
        gsize len = 0;
        char *data = g_key_file_to_data(kf, &len, NULL);
        g_key_file_free(kf);
        *lenp = len;
        return data;
}

/* Copies a string value into a fixed field; 0 if absent (and not required),
 * -1 with errstr when it does not fit or is required and absent. */
static int rbk__kf_str(GKeyFile *kf, const char *key, char *dst, size_t size,
                       int required, char *errstr, size_t errstr_size) {
        GError *gerr = NULL;
        char *v = g_key_file_get_string(kf, RBK__CTL_GROUP, key, &gerr);
        if (v && gerr) {
                /* A bad escape: GLib returns the partial value and an
                 * error. */
                g_free(v);
                v = NULL;
        }
        if (!v) {
                int missing = gerr && gerr->domain == G_KEY_FILE_ERROR &&
                              gerr->code == G_KEY_FILE_ERROR_KEY_NOT_FOUND;
                if (gerr)
                        g_error_free(gerr);
                if (missing && !required)
                        return 0;
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "\"%s\" is %s", key,
                            missing ? "missing" : "not a valid string");
                return -1;
        }
        size_t len = strlen(v);
        if (len >= size) {
                g_free(v);
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "\"%s\" is too long (%zu bytes, at most %zu)", key,
                            len, size - 1);
                return -1;
        }
        memcpy(dst, v, len + 1);
        g_free(v);
        if (required && !len) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "\"%s\" is empty", key);
                return -1;
        }
        return 0;
}

/* Reads an integer value; absent: *out unchanged, 0 (or -1 if required). */
static int rbk__kf_int(GKeyFile *kf, const char *key, int64_t *out,
                       int64_t min, int64_t max, int required, char *errstr,
                       size_t errstr_size) {
        if (!g_key_file_has_key(kf, RBK__CTL_GROUP, key, NULL)) {
                if (!required)
                        return 0;
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "\"%s\" is missing", key);
                return -1;
        }
        char *v = g_key_file_get_value(kf, RBK__CTL_GROUP, key, NULL);
        char *end = NULL;
        errno = 0;
        long long n = v ? strtoll(v, &end, 10) : 0;
        int ok = v && *v && end && !*end && errno == 0 && n >= min && n <= max;
        g_free(v);
        if (!ok) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "\"%s\" is not an integer in %" PRId64
                            "..%" PRId64,
                            key, min, max);
                return -1;
        }
        *out = n;
        return 0;
}

rbk_err_t rbk__control_msg_parse(const void *buf, size_t len,
                                 rbk__control_msg_t *out, char *errstr,
                                 size_t errstr_size) {
        char e[256];
        e[0] = '\0';
        if (!out)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "no output message");
        rbk__control_msg_init(out, 0);
        if (!buf || !len)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "empty control message");
        if (len > RBK__CONTROL_MAX_MSG)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "control message of %zu bytes is larger "
                                   "than %d",
                                   len, RBK__CONTROL_MAX_MSG);
        if (memchr(buf, '\0', len))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "control message holds a NUL byte");
        GKeyFile *kf = g_key_file_new();
        GError *gerr = NULL;
        if (!g_key_file_load_from_data(kf, buf, len, G_KEY_FILE_NONE, &gerr)) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "not a control message: %s", gerr->message);
                g_error_free(gerr);
                g_key_file_free(kf);
                return RBK_ERR_INVALID_ARG;
        }
        rbk_err_t ret = RBK_ERR_INVALID_ARG;
        int64_t version = 0, n;
        char type[16];
        rbk__control_msg_t m;
        rbk__control_msg_init(&m, 0);
        if (!g_key_file_has_group(kf, RBK__CTL_GROUP)) {
                g_snprintf(e, sizeof(e), "no [%s] group", RBK__CTL_GROUP);
                goto out;
        }
        if (rbk__kf_int(kf, "version", &version, 1, INT32_MAX, 1, e,
                        sizeof(e)))
                goto out;
        if (version < RBK__CONTROL_PROTO) {
                g_snprintf(e, sizeof(e), "protocol version %" PRId64
                           " is not supported",
                           version);
                goto out;
        }
        if (rbk__kf_str(kf, "type", type, sizeof(type), 1, e, sizeof(e)) ||
            rbk__kf_str(kf, "id", m.id, sizeof(m.id), 1, e, sizeof(e)))
                goto out;
        if (!strcmp(type, "command"))
                m.type = RBK__CTL_COMMAND;
        else if (!strcmp(type, "ack"))
                m.type = RBK__CTL_ACK;
        else {
                g_snprintf(e, sizeof(e), "unknown type \"%.*s\"", 15, type);
                goto out;
        }
        int cmd = m.type == RBK__CTL_COMMAND;
        if (rbk__kf_str(kf, "action", m.action, sizeof(m.action), cmd, e,
                        sizeof(e)) ||
            rbk__kf_str(kf, "group", m.group, sizeof(m.group), cmd, e,
                        sizeof(e)) ||
            rbk__kf_str(kf, "topic", m.topic, sizeof(m.topic), cmd, e,
                        sizeof(e)) ||
            rbk__kf_str(kf, "incident", m.incident_key,
                        sizeof(m.incident_key), cmd, e, sizeof(e)))
                goto out;
        n = -1;
        if (rbk__kf_int(kf, "partition", &n, 0, INT32_MAX, cmd, e, sizeof(e)))
                goto out;
        m.partition = (int32_t)n;
        if (cmd) {
                char choice[32];
                if (rbk__kf_str(kf, "choice", choice, sizeof(choice), 1, e,
                                sizeof(e)))
                        goto out;
                m.how = rbk__resolve_parse(choice);
                if (!m.how) {
                        g_snprintf(e, sizeof(e),
                                   "unknown choice \"%s\" (earliest, latest, "
                                   "committed or offset)",
                                   choice);
                        goto out;
                }
                if (rbk__kf_int(kf, "offset", &m.offset, 0, INT64_MAX,
                                m.how == RBK_RESOLVE_OFFSET, e, sizeof(e)) ||
                    rbk__kf_int(kf, "expires", &m.expires_ms, 0, INT64_MAX, 0,
                                e, sizeof(e)) ||
                    rbk__kf_str(kf, "requested_by", m.requested_by,
                                sizeof(m.requested_by), 0, e, sizeof(e)))
                        goto out;
                if (m.how != RBK_RESOLVE_OFFSET)
                        m.offset = -1;
        } else {
                n = 0;
                if (rbk__kf_int(kf, "result", &n, -1000, 0, 1, e, sizeof(e)))
                        goto out;
                m.result = (rbk_err_t)n;
                if (rbk__kf_str(kf, "error", m.error, sizeof(m.error), 0, e,
                                sizeof(e)) ||
                    rbk__kf_str(kf, "client", m.client, sizeof(m.client), 0,
                                e, sizeof(e)) ||
                    rbk__kf_str(kf, "host", m.host, sizeof(m.host), 0, e,
                                sizeof(e)) ||
                    rbk__kf_int(kf, "pid", &m.pid, 0, INT64_MAX, 0, e,
                                sizeof(e)) ||
                    rbk__kf_str(kf, "member_id", m.member_id,
                                sizeof(m.member_id), 0, e, sizeof(e)))
                        goto out;
        }
        *out = m;
        ret = RBK_OK;
out:
        g_key_file_free(kf);
        if (ret)
                rbk__seterr(errstr, errstr_size, ret, "control message: %s",
                            e);
        return ret;
}

/* ------------------------------------------------------------ rd confs */

/* Which client types a librdkafka property applies to, read once from
 * librdkafka's own property table: 'C', 'P' or '*'. */
static GHashTable *rbk__rd_scopes;

static gpointer rbk__rd_scopes_load(gpointer unused) {
        GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                              NULL);
        char *buf = NULL;
        size_t size = 0;
        FILE *fp = open_memstream(&buf, &size);
        if (fp) {
                rd_kafka_conf_properties_show(fp);
                fclose(fp);
        }
        char **lines = g_strsplit(buf ? buf : "", "\n", -1);
        for (char **l = lines; *l; l++) {
                char **cols = g_strsplit(*l, "|", 3);
                if (cols[0] && cols[1] && cols[2]) {
                        char *name = g_strstrip(cols[0]);
                        char *scope = g_strstrip(cols[1]);
                        if (*name && strcmp(name, "Property") &&
                            strlen(scope) == 1 && strchr("CP*", *scope))
                                g_hash_table_replace(
                                    h, g_strdup(name),
                                    GINT_TO_POINTER((int)*scope));
                }
                g_strfreev(cols);
        }
        g_strfreev(lines);
        free(buf);
        rbk__rd_scopes = h;
        return h;
}

/* Properties never copied into an internal client: group membership,
 * offset handling, the embedded mock cluster, the library's own choices. */
static const char *const rbk__ctl_skip[] = {
    "group.id", "group.instance.id", "partition.assignment.strategy",
    "session.timeout.ms", "heartbeat.interval.ms", "group.protocol.type",
    "coordinator.query.interval.ms", "max.poll.interval.ms",
    "enable.auto.commit", "auto.commit.interval.ms",
    "enable.auto.offset.store", "auto.offset.reset",
    "topic.auto.offset.reset", "offset.store.method", "offset.store.path",
    "offset.store.sync.interval.ms", "auto.commit.enable",
    "enable.partition.eof", "allow.auto.create.topics",
    "test.mock.num.brokers", "transactional.id", "enable.idempotence",
    "acks", "request.required.acks", "topic.acks",
    "topic.request.required.acks", "message.timeout.ms",
    "delivery.timeout.ms", "topic.message.timeout.ms",
    "topic.delivery.timeout.ms", "client.id", NULL};

static int rbk__ctl_skipped(const char *name, rd_kafka_type_t type) {
        for (int i = 0; rbk__ctl_skip[i]; i++)
                if (!strcmp(rbk__ctl_skip[i], name))
                        return 1;
        static GOnce once = G_ONCE_INIT;
        g_once(&once, rbk__rd_scopes_load, NULL);
        const char *n = !strncmp(name, "topic.", 6) ? name + 6 : name;
        int scope = GPOINTER_TO_INT(g_hash_table_lookup(rbk__rd_scopes, n));
        if (type == RD_KAFKA_PRODUCER && scope == 'C')
                return 1;
        if (type == RD_KAFKA_CONSUMER && scope == 'P')
                return 1;
        return 0;
}

static int rbk__rd_set_plain(rd_kafka_conf_t *rc, const char *name,
                             const char *value, char *errstr,
                             size_t errstr_size) {
        char e[256];
        if (rd_kafka_conf_set(rc, name, value, e, sizeof(e)) ==
            RD_KAFKA_CONF_OK)
                return 0;
        if (rbk__conf_is_secret(name))
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                            "control client: invalid value for secret "
                            "property \"%s\" (value not shown)",
                            name);
        else {
                rbk__redact(e);
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                            "control client: %s: %s", name, e);
        }
        return -1;
}

rd_kafka_conf_t *rbk__control_rd_conf(const rbk_conf_t *conf,
                                      rd_kafka_type_t type, char *errstr,
                                      size_t errstr_size) {
        if (!conf) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "configuration is NULL");
                return NULL;
        }
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        GList *names = g_hash_table_get_keys(conf->props);
        names = g_list_sort(names, (GCompareFunc)strcmp);
        for (GList *l = names; l; l = l->next) {
                const char *n = l->data;
                if (!strncmp(n, "rbk.", 4) || rbk__ctl_skipped(n, type))
                        continue;
                if (rbk__rd_set_plain(rc, n,
                                      g_hash_table_lookup(conf->props, n),
                                      errstr, errstr_size)) {
                        g_list_free(names);
                        rd_kafka_conf_destroy(rc);
                        return NULL;
                }
        }
        g_list_free(names);
        static const char *const cons[][2] = {
            {"client.id", "rbk-control"},
            /* allow.auto.create.topics is false by default for consumers;
             * setting it explicitly only adds a warning (AUTOCREATE) about
             * the first metadata request. */
            {"enable.auto.commit", "false"},
            {"enable.partition.eof", "false"},
            {NULL, NULL}};
        static const char *const prod[][2] = {
            {"client.id", "rbk-control"},
            {"allow.auto.create.topics", "false"},
            {"acks", "all"},
            {"enable.idempotence", "true"},
            {"message.timeout.ms", "10000"},
            {"linger.ms", "0"},
            {NULL, NULL}};
        const char *const(*set)[2] = type == RD_KAFKA_PRODUCER ? prod : cons;
        for (int i = 0; set[i][0]; i++)
                if (rbk__rd_set_plain(rc, set[i][0], set[i][1], errstr,
                                      errstr_size)) {
                        rd_kafka_conf_destroy(rc);
                        return NULL;
                }
        rbk__oauth_prepare(conf, rc);
        return rc;
}

int rbk__control_topic_exists(rd_kafka_t *rk, const char *full_topic,
                              int timeout_ms, int *partitions, char *errstr,
                              size_t errstr_size) {
        /* All topics: a request naming the topic could create it on a
         * broker with auto.create.topics.enable (the allow flag needs a
         * negotiated protocol version, which the first request lacks). */
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md,
                                                    timeout_ms);
        if (err) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "reading the cluster metadata failed: %s",
                            rd_kafka_err2str(err));
                return -1;
        }
        int ret = 0;
        for (int i = 0; i < md->topic_cnt; i++) {
                const rd_kafka_metadata_topic_t *t = &md->topics[i];
                if (strcmp(t->topic, full_topic))
                        continue;
                if (t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                    (!t->err && t->partition_cnt == 0)) {
                        ret = 0;
                } else if (t->err) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                                    "metadata of topic %s: %s", full_topic,
                                    rd_kafka_err2str(t->err));
                        ret = -1;
                } else {
                        if (partitions)
                                *partitions = t->partition_cnt;
                        ret = 1;
                }
        }
        rd_kafka_metadata_destroy(md);
        return ret;
}

/* Fetches a producer's metadata for a topic known to exist, so that the
 * first message does not wait for it (a fresh producer otherwise stalls
 * about a second on its first send, librdkafka issue 3202). */
static void rbk__ctl_warm(rd_kafka_t *producer, const char *topic,
                          int timeout_ms) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(producer, topic, NULL);
        if (!rkt)
                return;
        const struct rd_kafka_metadata *md = NULL;
        if (!rd_kafka_metadata(producer, 0, rkt, &md, timeout_ms))
                rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
}

/* ------------------------------------------------------------ listener */

int rbk__control_retry_ms = 30000;

struct rbk__control_s {
        rbk__control_ops_t ops;
        void *target;
        rbk__hooks_t *hooks;
        char *group;       /* as the application names it */
        char *topic;       /* full control topic name */
        char *client;      /* rbk.client.name */
        rd_kafka_t *rk;    /* the listener's plain consumer */
        rd_kafka_topic_t *rkt;
        rd_kafka_conf_t *pconf; /* for the acknowledgement producer */
        rbk_conf_t *oauth_conf; /* its token refresh callback, or NULL */
        rd_kafka_t *producer;   /* created on the first acknowledgement */
        GThread *thread;
        GMutex lock;
        GCond cond;
        int stop;
        int ready;
        uint64_t acked;
        GHashTable *seen;     /* command ids handled (bounded) */
        GQueue seen_order;    /* their order, oldest first */
        GHashTable *resolved; /* incident keys resolved by this listener */
};

#define RBK__CTL_SEEN_MAX 1024

static void rbk__ctl_rd_log(const rd_kafka_t *rk, int level, const char *fac,
                            const char *buf) {
        rbk__control_t *ctl = rd_kafka_opaque(rk);
        if (ctl)
                rbk__hooks_rd_log(ctl->hooks, level, fac, buf);
}

static void rbk__ctl_seen_add(rbk__control_t *ctl, const char *id) {
        char *k = g_strdup(id);
        g_hash_table_add(ctl->seen, k);
        g_queue_push_tail(&ctl->seen_order, k);
        while (g_queue_get_length(&ctl->seen_order) > RBK__CTL_SEEN_MAX) {
                char *old = g_queue_pop_head(&ctl->seen_order);
                g_hash_table_remove(ctl->seen, old);
                g_free(old);
        }
}

/* The acknowledgement producer, created (and its metadata fetched) when
 * the control topic is found, or on first use. NULL if it cannot be
 * created (logged). */
static rd_kafka_t *rbk__ctl_producer(rbk__control_t *ctl) {
        if (ctl->producer)
                return ctl->producer;
        char e[512];
        rd_kafka_conf_t *pc = rd_kafka_conf_dup(ctl->pconf);
        rd_kafka_conf_set_opaque(pc, ctl);
        rd_kafka_conf_set_log_cb(pc, rbk__ctl_rd_log);
        ctl->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, e, sizeof(e));
        if (!ctl->producer) {
                rd_kafka_conf_destroy(pc);
                rbk__log(ctl->hooks, 3, "control",
                         "cannot create the acknowledgement producer: %s", e);
                return NULL;
        }
        rbk__oauth_start(ctl->oauth_conf, ctl->producer);
        rbk__ctl_warm(ctl->producer, ctl->topic, RBK__CTL_QUERY_MS);
        return ctl->producer;
}

/* Publishes an acknowledgement and waits (bounded) for its delivery. */
static void rbk__ctl_ack(rbk__control_t *ctl, const rbk__control_msg_t *cmd,
                         rbk_err_t result, const char *error) {
        rbk__control_msg_t a;
        rbk__control_msg_init(&a, RBK__CTL_ACK);
        g_strlcpy(a.id, cmd->id, sizeof(a.id));
        g_strlcpy(a.action, cmd->action, sizeof(a.action));
        g_strlcpy(a.group, cmd->group, sizeof(a.group));
        g_strlcpy(a.topic, cmd->topic, sizeof(a.topic));
        a.partition = cmd->partition;
        g_strlcpy(a.incident_key, cmd->incident_key, sizeof(a.incident_key));
        a.result = result;
        if (error)
                g_strlcpy(a.error, error, sizeof(a.error));
        g_strlcpy(a.client, ctl->client, sizeof(a.client));
        g_strlcpy(a.host, g_get_host_name(), sizeof(a.host));
        a.pid = (int64_t)getpid();
        char *mid = ctl->ops.member_id ? ctl->ops.member_id(ctl->target)
                                       : NULL;
        if (mid)
                g_strlcpy(a.member_id, mid, sizeof(a.member_id));
        g_free(mid);
        char e[512];
        size_t len = 0;
        char *buf = rbk__control_msg_format(&a, &len, e, sizeof(e));
        if (!buf) {
                rbk__log(ctl->hooks, 3, "control",
                         "cannot format the acknowledgement of command %s: "
                         "%s",
                         cmd->id, e);
                return;
        }
        if (!rbk__ctl_producer(ctl)) {
                g_free(buf);
                return;
        }
        rd_kafka_resp_err_t err = rd_kafka_producev(
            ctl->producer, RD_KAFKA_V_TOPIC(ctl->topic),
            RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_KEY(a.id, strlen(a.id)),
            RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        g_free(buf);
        if (!err)
                err = rd_kafka_flush(ctl->producer, RBK__CTL_ACK_TIMEOUT_MS);
        if (err)
                rbk__log(ctl->hooks, 4, "control",
                         "the acknowledgement of command %s was not "
                         "delivered: %s",
                         cmd->id, rd_kafka_err2str(err));
        else {
                g_mutex_lock(&ctl->lock);
                ctl->acked++;
                g_mutex_unlock(&ctl->lock);
        }
}

/* Looks the incident up among the consumer's quarantines. */
static int rbk__ctl_holds(rbk__control_t *ctl, const rbk__control_msg_t *cmd,
                          rbk_quarantine_t *found) {
        size_t max = 16, n;
        rbk_quarantine_t *qs = NULL;
        for (;;) {
                qs = g_renew(rbk_quarantine_t, qs, max);
                n = ctl->ops.quarantined(ctl->target, qs, max);
                if (n <= max)
                        break;
                max = n;
        }
        int hit = 0;
        for (size_t i = 0; i < n && !hit; i++)
                if (!strcmp(qs[i].incident_key, cmd->incident_key)) {
                        *found = qs[i];
                        hit = 1;
                }
        g_free(qs);
        return hit;
}

static void rbk__ctl_handle(rbk__control_t *ctl, const rd_kafka_message_t *m) {
        rbk__control_msg_t cmd;
        char e[512];
        if (rbk__control_msg_parse(m->payload, m->len, &cmd, e, sizeof(e))) {
                rbk__log(ctl->hooks, 6, "control",
                         "ignoring the message at offset %" PRId64
                         " of %s: %s",
                         m->offset, ctl->topic, e);
                return;
        }
        if (cmd.type != RBK__CTL_COMMAND || strcmp(cmd.group, ctl->group))
                return; /* an acknowledgement, or another group's */
        if (g_hash_table_contains(ctl->seen, cmd.id))
                return;
        rbk__ctl_seen_add(ctl, cmd.id);
        if (strcmp(cmd.action, "resolve")) {
                rbk__log(ctl->hooks, 5, "control",
                         "ignoring command %s: unknown action \"%s\"", cmd.id,
                         cmd.action);
                return;
        }
        int64_t now = g_get_real_time() / 1000;
        rbk_quarantine_t q;
        if (!rbk__ctl_holds(ctl, &cmd, &q)) {
                if (g_hash_table_contains(ctl->resolved, cmd.incident_key)) {
                        g_snprintf(e, sizeof(e),
                                   "incident %s was already resolved by this "
                                   "consumer",
                                   cmd.incident_key);
                        rbk__ctl_ack(ctl, &cmd, RBK_ERR_ALREADY_RESOLVED, e);
                }
                return; /* not ours: the consumer holding it answers */
        }
        if (cmd.expires_ms > 0 && now > cmd.expires_ms) {
                rbk__log(ctl->hooks, 4, "control",
                         "not applying command %s for incident %s: it "
                         "expired %" PRId64 " ms ago (the operator was told "
                         "it timed out)",
                         cmd.id, cmd.incident_key, now - cmd.expires_ms);
                return;
        }
        if (strcmp(q.topic, cmd.topic) || q.partition != cmd.partition) {
                g_snprintf(e, sizeof(e),
                           "command names %s [%" PRId32
                           "] but incident %s is on %s [%" PRId32 "]",
                           cmd.topic, cmd.partition, cmd.incident_key, q.topic,
                           q.partition);
                rbk__ctl_ack(ctl, &cmd, RBK_ERR_INVALID_ARG, e);
                return;
        }
        char *by = g_strdup_printf("rbk-admin command %s%s%s%s", cmd.id,
                                   *cmd.requested_by ? " (" : "",
                                   cmd.requested_by,
                                   *cmd.requested_by ? ")" : "");
        rbk__log(ctl->hooks, 5, "control",
                 "applying %s: resolve incident %s with %s%s", by,
                 cmd.incident_key, rbk__resolve_name(cmd.how),
                 cmd.how == RBK_RESOLVE_OFFSET ? " offset" : "");
        e[0] = '\0';
        rbk_err_t err = ctl->ops.resolve(ctl->target, &cmd, by, e, sizeof(e));
        g_free(by);
        if (!err)
                g_hash_table_add(ctl->resolved, g_strdup(cmd.incident_key));
        rbk__ctl_ack(ctl, &cmd, err, err ? e : NULL);
}

/* Starts reading the control topic at its current end, if it exists:
 * 1 reading, 0 the topic does not exist, -1 the cluster did not answer. */
static int rbk__ctl_try_start(rbk__control_t *ctl, int *warned) {
        char e[512];
        int parts = 0;
        int r = rbk__control_topic_exists(ctl->rk, ctl->topic,
                                          RBK__CTL_QUERY_MS, &parts, e,
                                          sizeof(e));
        if (r <= 0) {
                if (r == 0 && !*warned) {
                        rbk__log(ctl->hooks, 4, "control",
                                 "control topic %s does not exist: operator "
                                 "commands (rbk-admin resolve) cannot reach "
                                 "this consumer until it is created (1 "
                                 "partition, replication factor 3); looking "
                                 "again every %.1f s",
                                 ctl->topic, rbk__control_retry_ms / 1000.0);
                        *warned = 1;
                } else if (r < 0) {
                        rbk__log(ctl->hooks, 7, "control", "%s", e);
                }
                return r;
        }
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            ctl->rk, ctl->topic, 0, &lo, &hi, RBK__CTL_QUERY_MS);
        if (err) {
                rbk__log(ctl->hooks, 7, "control",
                         "reading the end of %s failed: %s", ctl->topic,
                         rd_kafka_err2str(err));
                return -1;
        }
        if (!ctl->rkt)
                ctl->rkt = rd_kafka_topic_new(ctl->rk, ctl->topic, NULL);
        if (!ctl->rkt || rd_kafka_consume_start(ctl->rkt, 0, hi) == -1) {
                rbk__log(ctl->hooks, 4, "control",
                         "cannot read control topic %s: %s", ctl->topic,
                         rd_kafka_err2str(rd_kafka_last_error()));
                return -1;
        }
        rbk__ctl_producer(ctl);
        if (*warned)
                rbk__log(ctl->hooks, 5, "control",
                         "control topic %s found: listening for operator "
                         "commands",
                         ctl->topic);
        rbk__log(ctl->hooks, 7, "control",
                 "listening on %s [0] from offset %" PRId64, ctl->topic, hi);
        *warned = 0;
        g_mutex_lock(&ctl->lock);
        ctl->ready = 1;
        g_mutex_unlock(&ctl->lock);
        return 1;
}

static gpointer rbk__ctl_main(gpointer arg) {
        rbk__control_t *ctl = arg;
        int consuming = 0, warned = 0;
        int64_t next_try = 0;
        for (;;) {
                g_mutex_lock(&ctl->lock);
                int stop = ctl->stop;
                g_mutex_unlock(&ctl->lock);
                if (stop)
                        break;
                if (!consuming) {
                        int64_t now = rbk__now_ms();
                        if (now >= next_try) {
                                int r = rbk__ctl_try_start(ctl, &warned);
                                consuming = r > 0;
                                if (consuming)
                                        continue;
                                next_try = rbk__now_ms() +
                                           (r < 0 ? RBK__CTL_RETRY_ERR_MS
                                                  : rbk__control_retry_ms);
                        }
                        g_mutex_lock(&ctl->lock);
                        if (!ctl->stop)
                                g_cond_wait_until(
                                    &ctl->cond, &ctl->lock,
                                    g_get_monotonic_time() +
                                        MAX(0, next_try - rbk__now_ms()) *
                                            1000);
                        g_mutex_unlock(&ctl->lock);
                        continue;
                }
                rd_kafka_message_t *m =
                    rd_kafka_consume(ctl->rkt, 0, RBK__CTL_POLL_MS);
                if (!m)
                        continue;
                if (!m->err) {
                        rbk__ctl_handle(ctl, m);
                } else if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                           m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
                           m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                           m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE ||
                           m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
                        /* Deleted or truncated: start again at the end. */
                        rbk__log(ctl->hooks, 4, "control",
                                 "control topic %s: %s; starting again at "
                                 "its end",
                                 ctl->topic, rd_kafka_err2str(m->err));
                        rd_kafka_consume_stop(ctl->rkt, 0);
                        g_mutex_lock(&ctl->lock);
                        ctl->ready = 0;
                        g_mutex_unlock(&ctl->lock);
                        consuming = 0;
                        next_try = rbk__now_ms() + rbk__control_retry_ms;
                } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        rbk__log(ctl->hooks, 7, "control", "%s: %s",
                                 ctl->topic, rd_kafka_err2str(m->err));
                }
                rd_kafka_message_destroy(m);
        }
        if (consuming)
                rd_kafka_consume_stop(ctl->rkt, 0);
        return NULL;
}

static void rbk__ctl_free(rbk__control_t *ctl) {
        if (ctl->rkt)
                rd_kafka_topic_destroy(ctl->rkt);
        if (ctl->rk) {
                rbk__oauth_stop(ctl->rk);
                rd_kafka_destroy(ctl->rk);
        }
        if (ctl->producer) {
                rd_kafka_flush(ctl->producer, 1000);
                rbk__oauth_stop(ctl->producer);
                rd_kafka_destroy(ctl->producer);
        }
        rbk_conf_destroy(ctl->oauth_conf);
        if (ctl->pconf)
                rd_kafka_conf_destroy(ctl->pconf);
        if (ctl->hooks)
                rbk__hooks_destroy(ctl->hooks);
        if (ctl->seen)
                g_hash_table_destroy(ctl->seen);
        g_queue_clear_full(&ctl->seen_order, g_free);
        if (ctl->resolved)
                g_hash_table_destroy(ctl->resolved);
        g_free(ctl->group);
        g_free(ctl->topic);
        g_free(ctl->client);
        g_mutex_clear(&ctl->lock);
        g_cond_clear(&ctl->cond);
        g_free(ctl);
}

rbk__control_t *rbk__control_start_ops(const rbk__control_ops_t *ops,
                                       void *target, const rbk_conf_t *conf,
                                       const char *group, char *errstr,
                                       size_t errstr_size) {
        if (errstr && errstr_size)
                errstr[0] = '\0';
        if (!ops || !ops->quarantined || !ops->resolve || !conf || !group ||
            !*group) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "control listener: missing consumer, "
                            "configuration or group");
                return NULL;
        }
        if (!rbk__conf_bool(conf, "rbk.control.enable"))
                return NULL;
        const char *prefix = rbk__conf_prefix(conf);
        const char *ctopic = rbk__conf_str(conf, "rbk.control.topic");
        char e[512];
        if (rbk__topic_validate(prefix, ctopic, e, sizeof(e))) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                            "rbk.control.topic: %s", e);
                return NULL;
        }
        rbk__control_t *ctl = g_new0(rbk__control_t, 1);
        g_mutex_init(&ctl->lock);
        g_cond_init(&ctl->cond);
        ctl->ops = *ops;
        ctl->target = target;
        ctl->group = g_strdup(group);
        ctl->topic = rbk__prefixed(prefix, ctopic);
        const char *name = rbk__conf_str(conf, "rbk.client.name");
        ctl->client = g_strdup(name && *name ? name : "anonymous");
        ctl->hooks = rbk__hooks_new(conf, ctl->client);
        ctl->seen = g_hash_table_new(g_str_hash, g_str_equal);
        g_queue_init(&ctl->seen_order);
        /* seen_order owns the ids; seen only points at them. */
        ctl->resolved =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

        rd_kafka_conf_t *cc =
            rbk__control_rd_conf(conf, RD_KAFKA_CONSUMER, errstr, errstr_size);
        if (!cc)
                goto fail;
        ctl->pconf =
            rbk__control_rd_conf(conf, RD_KAFKA_PRODUCER, errstr, errstr_size);
        if (!ctl->pconf) {
                rd_kafka_conf_destroy(cc);
                goto fail;
        }
        rd_kafka_conf_set_opaque(cc, ctl);
        rd_kafka_conf_set_log_cb(cc, rbk__ctl_rd_log);
        ctl->rk = rd_kafka_new(RD_KAFKA_CONSUMER, cc, e, sizeof(e));
        if (!ctl->rk) {
                rd_kafka_conf_destroy(cc);
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating the control listener failed: %s", e);
                goto fail;
        }
        if (conf->oauth_cb)
                ctl->oauth_conf = rbk_conf_dup(conf);
        rbk__oauth_start(ctl->oauth_conf, ctl->rk);
        ctl->thread = g_thread_try_new("rbk-control", rbk__ctl_main, ctl, NULL);
        if (!ctl->thread) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                            "cannot start the control listener thread");
                goto fail;
        }
        return ctl;
fail:
        rbk__ctl_free(ctl);
        return NULL;
}

void rbk__control_stop(rbk__control_t *ctl) {
        if (!ctl)
                return;
        g_mutex_lock(&ctl->lock);
        ctl->stop = 1;
        g_cond_broadcast(&ctl->cond);
        g_mutex_unlock(&ctl->lock);
        if (ctl->thread)
                g_thread_join(ctl->thread);
        rbk__ctl_free(ctl);
}

int rbk__control_ready(rbk__control_t *ctl) {
        if (!ctl)
                return 0;
        g_mutex_lock(&ctl->lock);
        int r = ctl->ready;
        g_mutex_unlock(&ctl->lock);
        return r;
}

uint64_t rbk__control_acked(rbk__control_t *ctl) {
        if (!ctl)
                return 0;
        g_mutex_lock(&ctl->lock);
        uint64_t n = ctl->acked;
        g_mutex_unlock(&ctl->lock);
        return n;
}

/* ------------------------------------------------------------ client */

struct rbk__control_client_s {
        char *topic;
        rd_kafka_t *consumer;
        rd_kafka_topic_t *rkt;
        rd_kafka_t *producer;
};

void rbk__control_client_destroy(rbk__control_client_t *cl) {
        if (!cl)
                return;
        if (cl->rkt) {
                rd_kafka_consume_stop(cl->rkt, 0);
                rd_kafka_topic_destroy(cl->rkt);
        }
        if (cl->consumer) {
                rbk__oauth_stop(cl->consumer);
                rd_kafka_destroy(cl->consumer);
        }
        if (cl->producer) {
                rbk__oauth_stop(cl->producer);
                rd_kafka_destroy(cl->producer);
        }
        g_free(cl->topic);
        g_free(cl);
}

rbk__control_client_t *rbk__control_client_new(const rbk_conf_t *conf,
                                               int timeout_ms,
                                               rbk_err_t *errp, char *errstr,
                                               size_t errstr_size) {
        rbk_err_t dummy;
        if (!errp)
                errp = &dummy;
        *errp = RBK_ERR_INVALID_ARG;
        if (!conf) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "configuration is NULL");
                return NULL;
        }
        const char *prefix = rbk__conf_prefix(conf);
        const char *ctopic = rbk__conf_str(conf, "rbk.control.topic");
        char e[512];
        if (rbk__topic_validate(prefix, ctopic, e, sizeof(e))) {
                *errp = RBK_ERR_CONF;
                rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                            "control topic: %s", e);
                return NULL;
        }
        rbk__control_client_t *cl = g_new0(rbk__control_client_t, 1);
        cl->topic = rbk__prefixed(prefix, ctopic);
        rd_kafka_conf_t *cc = rbk__control_rd_conf(conf, RD_KAFKA_CONSUMER,
                                                   errstr, errstr_size);
        rd_kafka_conf_t *pc = rbk__control_rd_conf(conf, RD_KAFKA_PRODUCER,
                                                   errstr, errstr_size);
        if (!cc || !pc) {
                if (cc)
                        rd_kafka_conf_destroy(cc);
                if (pc)
                        rd_kafka_conf_destroy(pc);
                *errp = RBK_ERR_CONF;
                goto fail;
        }
        cl->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, e, sizeof(e));
        if (!cl->consumer) {
                rd_kafka_conf_destroy(cc);
                rd_kafka_conf_destroy(pc);
                *errp = RBK_ERR_KAFKA;
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating a client failed: %s", e);
                goto fail;
        }
        rbk__oauth_start(conf, cl->consumer);
        cl->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, e, sizeof(e));
        if (!cl->producer) {
                rd_kafka_conf_destroy(pc);
                *errp = RBK_ERR_KAFKA;
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating a producer failed: %s", e);
                goto fail;
        }
        rbk__oauth_start(conf, cl->producer);
        int r = rbk__control_topic_exists(cl->consumer, cl->topic, timeout_ms,
                                          NULL, e, sizeof(e));
        if (r <= 0) {
                *errp = r == 0 ? RBK_ERR_NOT_FOUND : RBK_ERR_KAFKA;
                if (r == 0)
                        rbk__seterr(errstr, errstr_size, RBK_ERR_NOT_FOUND,
                                    "control topic %s does not exist: no "
                                    "running consumer can be reached; create "
                                    "it (1 partition, replication factor 3)",
                                    cl->topic);
                else
                        rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA, "%s",
                                    e);
                goto fail;
        }
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            cl->consumer, cl->topic, 0, &lo, &hi, timeout_ms);
        if (err) {
                *errp = RBK_ERR_KAFKA;
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "reading the end of control topic %s failed: %s",
                            cl->topic, rd_kafka_err2str(err));
                goto fail;
        }
        rbk__ctl_warm(cl->producer, cl->topic, timeout_ms);
        cl->rkt = rd_kafka_topic_new(cl->consumer, cl->topic, NULL);
        if (!cl->rkt || rd_kafka_consume_start(cl->rkt, 0, hi) == -1) {
                *errp = RBK_ERR_KAFKA;
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "cannot read control topic %s: %s", cl->topic,
                            rd_kafka_err2str(rd_kafka_last_error()));
                if (cl->rkt) {
                        rd_kafka_topic_destroy(cl->rkt);
                        cl->rkt = NULL;
                }
                goto fail;
        }
        *errp = RBK_OK;
        return cl;
fail:
        rbk__control_client_destroy(cl);
        return NULL;
}

const char *rbk__control_client_topic(const rbk__control_client_t *cl) {
        return cl ? cl->topic : NULL;
}

rbk_err_t rbk__control_client_send(rbk__control_client_t *cl,
                                   const rbk__control_msg_t *cmd,
                                   int timeout_ms, char *errstr,
                                   size_t errstr_size) {
        if (!cl || !cmd)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "control client or command is NULL");
        size_t len = 0;
        char *buf = rbk__control_msg_format(cmd, &len, errstr, errstr_size);
        if (!buf)
                return RBK_ERR_INVALID_ARG;
        rd_kafka_resp_err_t err = rd_kafka_producev(
            cl->producer, RD_KAFKA_V_TOPIC(cl->topic), RD_KAFKA_V_PARTITION(0),
            RD_KAFKA_V_KEY(cmd->id, strlen(cmd->id)),
            RD_KAFKA_V_VALUE(buf, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        g_free(buf);
        if (err)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                                   "sending the command failed: %s",
                                   rd_kafka_err2str(err));
        err = rd_kafka_flush(cl->producer, timeout_ms);
        if (err)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_TIMED_OUT,
                                   "the command was not delivered to %s "
                                   "within %d ms: %s",
                                   cl->topic, timeout_ms,
                                   rd_kafka_err2str(err));
        return RBK_OK;
}

rbk_err_t rbk__control_client_wait_ack(rbk__control_client_t *cl,
                                       const char *id, int timeout_ms,
                                       rbk__control_msg_t *ack) {
        if (!cl || !id || !ack)
                return RBK_ERR_INVALID_ARG;
        int64_t deadline = rbk__now_ms() + timeout_ms;
        for (;;) {
                int64_t left = deadline - rbk__now_ms();
                if (left <= 0)
                        return RBK_ERR_TIMED_OUT;
                rd_kafka_message_t *m = rd_kafka_consume(
                    cl->rkt, 0, (int)MIN(left, RBK__CTL_POLL_MS));
                if (!m)
                        continue;
                int hit = 0;
                if (!m->err &&
                    !rbk__control_msg_parse(m->payload, m->len, ack, NULL,
                                            0) &&
                    ack->type == RBK__CTL_ACK && !strcmp(ack->id, id))
                        hit = 1;
                rd_kafka_message_destroy(m);
                if (hit)
                        return RBK_OK;
        }
}
