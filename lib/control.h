/* The operator control channel (docs/rbk-admin.md): every consumer with
 * rbk.control.enable=true runs a listener on the control topic
 * (rbk.control.topic, prefixed like every topic); rbk-admin publishes
 * commands there and the listener whose consumer holds the named incident
 * applies the command and publishes an acknowledgement on the same topic.
 *
 * Messages are small GKeyFile texts, one group "[rbk-control]":
 *
 *   [rbk-control]
 *   version=1
 *   type=command            (or ack)
 *   id=<command id>         (an ack carries the id of its command)
 *   ...fields below...
 *
 * Never installed; rbk-admin (tools/) and the consumer use it. */
#ifndef RBK_CONTROL_H
#define RBK_CONTROL_H

#include "internal.h"

/* Protocol version written in every message; messages of a higher version
 * are still read (unknown keys are ignored), lower ones are refused. */
#define RBK__CONTROL_PROTO 1
/* Messages larger than this are ignored unread. */
#define RBK__CONTROL_MAX_MSG 65536

typedef enum rbk__ctl_type_t {
        RBK__CTL_COMMAND = 1,
        RBK__CTL_ACK = 2
} rbk__ctl_type_t;

/* One control message, command or acknowledgement. Strings are
 * NUL-terminated; parsing refuses values that do not fit. */
typedef struct rbk__control_msg_s {
        rbk__ctl_type_t type;
        char id[128];           /* command id (ack: the command's id) */
        /* Command (an ack repeats group/topic/partition/incident_key). */
        char action[32];        /* "resolve" */
        char group[256];        /* group as the application names it */
        char topic[256];        /* topic without prefix */
        int32_t partition;
        char incident_key[512]; /* group/topic/partition/failed offset */
        rbk_resolve_t how;
        int64_t offset;         /* RBK_RESOLVE_OFFSET: the offset; else -1 */
        int64_t expires_ms;     /* wall-clock ms since the epoch; 0: never */
        char requested_by[256]; /* user@host pid, for the decision log */
        /* Acknowledgement. */
        rbk_err_t result;
        char error[512];        /* empty on success */
        char client[256];       /* rbk.client.name of the consumer */
        char host[256];
        int64_t pid;
        char member_id[256];    /* group member id, or empty */
} rbk__control_msg_t;

/* Sets every field to empty / -1 and the type. */
void rbk__control_msg_init(rbk__control_msg_t *m, rbk__ctl_type_t type);

/* Serialises a message. Returns a g_malloc'ed buffer (g_free) of *lenp
 * bytes, or NULL with errstr set when a field is invalid (empty id, command
 * without group/topic/incident, unknown choice). */
char *rbk__control_msg_format(const rbk__control_msg_t *m, size_t *lenp,
                              char *errstr, size_t errstr_size);

/* Parses a message (untrusted bytes). RBK_OK, or RBK_ERR_INVALID_ARG with
 * the reason; *out is fully written either way. */
rbk_err_t rbk__control_msg_parse(const void *buf, size_t len,
                                 rbk__control_msg_t *out, char *errstr,
                                 size_t errstr_size);

/* A fresh command id (g_free): random, 32 hex digits. */
char *rbk__control_new_id(void);

/* A librdkafka configuration for an internal plain client (the listener's
 * consumer, the acknowledgement producer, rbk-admin's clients): every
 * librdkafka property of conf that applies to that client type (bootstrap,
 * security, socket, debug...) except group membership, offset handling and
 * the embedded mock cluster, plus allow.auto.create.topics=false (a control
 * topic is never created by accident), enable.auto.commit=false and
 * enable.partition.eof=false for consumers, acks=all and a bounded
 * message.timeout.ms for producers. No callbacks are set. Returns NULL with
 * the reason in errstr (secrets never shown). */
rd_kafka_conf_t *rbk__control_rd_conf(const rbk_conf_t *conf,
                                      rd_kafka_type_t type, char *errstr,
                                      size_t errstr_size);

/* Whether a topic exists, read from the metadata of all topics (never
 * creates it, even on brokers with auto.create.topics.enable).
 * Returns 1 (and *partitions), 0 if the cluster says it does not exist, or
 * -1 if the cluster could not be asked (errstr says why). */
int rbk__control_topic_exists(rd_kafka_t *rk, const char *full_topic,
                              int timeout_ms, int *partitions, char *errstr,
                              size_t errstr_size);

/* ------------------------------------------------------------ listener */

typedef struct rbk__control_s rbk__control_t;

/* What the listener needs from its consumer. Called on the listener's
 * thread. */
typedef struct rbk__control_ops_s {
        /* As rbk_consumer_quarantined(). */
        size_t (*quarantined)(void *target, rbk_quarantine_t *out,
                              size_t max);
        /* Resolves the incident cmd->incident_key as cmd says; applied_by
         * names the operator command for the decision log. Returns as
         * rbk_consumer_resolve(). */
        rbk_err_t (*resolve)(void *target, const rbk__control_msg_t *cmd,
                             const char *applied_by, char *errstr,
                             size_t errstr_size);
        /* The consumer's group member id (g_free), or NULL. May be NULL. */
        char *(*member_id)(void *target);
} rbk__control_ops_t;

/* Starts a listener for a consumer of @group (the group as the application
 * names it, without prefix) on its own thread. conf is the consumer's
 * configuration (copied as needed). Returns NULL with errstr "" when
 * rbk.control.enable is false, NULL with the reason in errstr if the
 * listener's clients cannot be created. A missing control topic is not an
 * error: the listener logs one warning and checks again periodically. */
rbk__control_t *rbk__control_start_ops(const rbk__control_ops_t *ops,
                                       void *target, const rbk_conf_t *conf,
                                       const char *group, char *errstr,
                                       size_t errstr_size);

/* The same for a group consumer (rbk_consumer_new() calls it last, with
 * the group as the application names it; rbk_consumer_close() stops it
 * first): resolves by incident key through the consumer's poll thread and
 * reports the consumer's member id. A consumer on an embedded mock cluster
 * (test.mock.num.brokers) gets a listener on that cluster. Defined on the
 * consumer's side, in consumer_control.c, which builds the ops table: the
 * listener itself knows the consumer only through rbk__control_ops_t. */
rbk__control_t *rbk__control_start(rbk_consumer_t *c, const rbk_conf_t *conf,
                                   const char *group, char *errstr,
                                   size_t errstr_size);

/* Stops the listener (waits for a command being applied to finish) and
 * frees it. Accepts NULL. */
void rbk__control_stop(rbk__control_t *ctl);

/* 1 once the listener reads the control topic: every command published
 * after this returned 1 is seen. */
int rbk__control_ready(rbk__control_t *ctl);

/* Commands this listener applied (successfully or not) and acknowledged. */
uint64_t rbk__control_acked(rbk__control_t *ctl);

/* How often (ms) a listener looks again for a missing control topic;
 * 30000. Tests lower it. */
extern int rbk__control_retry_ms;

/* ------------------------------------------------------------ client */

/* The operator's side (rbk-admin): publishes commands and reads the
 * acknowledgements that follow them. */
typedef struct rbk__control_client_s rbk__control_client_t;

/* Opens the control topic named by conf (rbk.control.topic, prefixed) and
 * starts reading it at its current end. Returns NULL with *errp
 * RBK_ERR_NOT_FOUND when the topic does not exist, RBK_ERR_KAFKA when the
 * cluster cannot be reached, with the reason in errstr. */
rbk__control_client_t *rbk__control_client_new(const rbk_conf_t *conf,
                                               int timeout_ms,
                                               rbk_err_t *errp, char *errstr,
                                               size_t errstr_size);

/* Publishes a command and waits (bounded) for its delivery. */
rbk_err_t rbk__control_client_send(rbk__control_client_t *cl,
                                   const rbk__control_msg_t *cmd,
                                   int timeout_ms, char *errstr,
                                   size_t errstr_size);

/* Waits for the next acknowledgement of command @id (messages read before
 * are skipped). RBK_OK with *ack, or RBK_ERR_TIMED_OUT. */
rbk_err_t rbk__control_client_wait_ack(rbk__control_client_t *cl,
                                       const char *id, int timeout_ms,
                                       rbk__control_msg_t *ack);

/* The full control topic name. */
const char *rbk__control_client_topic(const rbk__control_client_t *cl);

/* Closes and frees. Accepts NULL. */
void rbk__control_client_destroy(rbk__control_client_t *cl);

#endif /* RBK_CONTROL_H */
