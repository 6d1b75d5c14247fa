/* Dead letters: with rbk.consumer.giveup=deadletter, a message the handler
 * gave up on is published to rbk.consumer.deadletter.topic (same key, value
 * and headers, plus rbk-dlq-error, rbk-dlq-topic, rbk-dlq-partition and
 * rbk-dlq-offset) by a producer the consumer creates on first use from its
 * own configuration. The origin offset is stored only once the dead
 * letter's delivery report says delivered; until then the partition is held
 * back, and the message stays with the send (a hand-out of its own, which a
 * revoke waits for and never frees underneath). If the dead letter cannot be delivered, the partition stays held and
 * RBK_EV_DEADLETTER_FAILED fires; rbk_consumer_resolve() releases it. */
#include <stdio.h>
#include <string.h>

#include "consumer_internal.h"
#include "incident.h"

#define RBK__DLQ_MAX_HEADERS RBK_MAX_HEADERS

typedef struct {
        rbk_consumer_t *c;
        rbk__part_t *p; /* a reference */
        uint64_t ticket; /* the hand-out the send holds */
        int64_t offset;
        char *id;
} rbk__dlq_ctx_t;

static void rbk__dlq_event(rbk_consumer_t *c, rbk__part_t *p, int64_t offset,
                           const char *id, int ok, rbk_err_t err,
                           int kafka_err, const char *reason) {
        rbk_event_t ev;
        rbk__event_init(&ev, ok ? RBK_EV_DEADLETTERED : RBK_EV_DEADLETTER_FAILED,
                        ok ? RBK_SEV_WARNING : RBK_SEV_ERROR);
        char *msg =
            ok ? g_strdup_printf("%s [%" PRId32 "] offset %" PRId64
                                 " sent to dead-letter topic %s",
                                 p->utopic, p->partition, offset, c->dlq_topic)
               : g_strdup_printf(
                     "%s [%" PRId32 "] offset %" PRId64
                     " could not be sent to dead-letter topic %s: %s; the "
                     "partition stays paused until rbk_consumer_resolve() "
                     "releases it",
                     p->utopic, p->partition, offset, c->dlq_topic, reason);
        ev.err = err;
        ev.kafka_err = kafka_err;
        rbk__consumer_emit_part(c, &ev, p, RBK__INCIDENT_DEADLETTER, offset, id,
                                msg);
}

/* The outcome of one dead letter: the hand-out ends. Any thread; c->lock
 * not held. */
static void rbk__dlq_outcome(rbk__dlq_ctx_t *x, rbk_err_t err, int kafka_err,
                             const char *reason) {
        rbk_consumer_t *c = x->c;
        rbk__part_t *p = x->p;
        g_mutex_lock(&c->lock);
        int mine = rbk__part_deadletter_done(c, p, x->ticket, !err, reason);
        g_mutex_unlock(&c->lock);
        /* A failure for a partition gone is quiet: its next owner decides. */
        if (mine || !err)
                rbk__dlq_event(c, p, x->offset, x->id, !err, err, kafka_err,
                               reason);
        rbk__part_unref(p);
        g_free(x->id);
        g_free(x);
}

static void rbk__dlq_dr(const rbk_delivery_t *dr, void *opaque) {
        rbk__dlq_outcome(dr->msg_opaque, dr->err, dr->kafka_err,
                         dr->reason ? dr->reason : "");
}

/* Consumer-only librdkafka properties of the consumer's configuration
 * are dropped from the dead-letter producer's copy (librdkafka would warn
 * about each of them). */
static void rbk__dlq_strip_consumer_props(rbk_conf_t *pc) {
        static const char *const names[] = {
            "group.id", "group.instance.id", "session.timeout.ms",
            "heartbeat.interval.ms", "group.protocol.type",
            "coordinator.query.interval.ms", "max.poll.interval.ms",
            "enable.auto.commit", "auto.commit.interval.ms",
            "enable.auto.offset.store", "queued.min.messages",
            "queued.max.messages.kbytes", "enable.partition.eof",
            "check.crcs", "isolation.level", "auto.offset.reset",
            "partition.assignment.strategy", "offset.store.method",
            "consume.callback.max.messages", NULL};
        GPtrArray *drop = g_ptr_array_new_with_free_func(g_free);
        GHashTableIter it;
        gpointer k;
        g_hash_table_iter_init(&it, pc->props);
        while (g_hash_table_iter_next(&it, &k, NULL)) {
                const char *n = k;
                int consumer_only = g_str_has_prefix(n, "fetch.");
                for (int i = 0; !consumer_only && names[i]; i++)
                        consumer_only = !strcmp(n, names[i]);
                if (consumer_only)
                        g_ptr_array_add(drop, g_strdup(n));
        }
        for (guint i = 0; i < drop->len; i++)
                g_hash_table_remove(pc->props, g_ptr_array_index(drop, i));
        g_ptr_array_free(drop, TRUE);
}

/* The producer, created on first use. */
static rbk_producer_t *rbk__dlq_producer(rbk_consumer_t *c, char *errstr,
                                         size_t errstr_size) {
        g_mutex_lock(&c->dlq_mu);
        if (!c->dlq) {
                rbk_conf_t *pc = rbk_conf_dup(c->conf);
                rbk__dlq_strip_consumer_props(pc);
                rbk_conf_set_delivery_cb(pc, rbk__dlq_dr, c);
                c->dlq = rbk_producer_new(pc, errstr, errstr_size);
                rbk_conf_destroy(pc);
        }
        rbk_producer_t *p = c->dlq;
        g_mutex_unlock(&c->dlq_mu);
        return p;
}

void rbk__dlq_send(rbk_consumer_t *c, rbk__part_t *p, rd_kafka_message_t *rkm,
                   uint64_t ticket, int attempts, const char *reason) {
        char e[512];
        e[0] = '\0';
        rbk__dlq_ctx_t *x = g_new0(rbk__dlq_ctx_t, 1);
        x->c = c;
        x->p = rbk__part_ref(p);
        x->ticket = ticket;
        x->offset = rkm->offset;

        rbk_header_t hdrs[RBK__DLQ_MAX_HEADERS];
        size_t n = 0;
        char partbuf[16], offbuf[24], attbuf[16], errbuf[160];
        snprintf(errbuf, sizeof(errbuf),
                 "handler returned RBK_RETRY %d time(s)", attempts);
        snprintf(partbuf, sizeof(partbuf), "%" PRId32, p->partition);
        snprintf(offbuf, sizeof(offbuf), "%" PRId64, rkm->offset);
        snprintf(attbuf, sizeof(attbuf), "%d", attempts);
        /* rbk-dlq-reason: the handler's own (rbk_message_set_error()), or
         * what the library saw; rbk-dlq-error stays for older readers. */
        const char *ours[6][2] = {{"rbk-dlq-error", reason ? reason : errbuf},
                                  {"rbk-dlq-reason", reason ? reason : errbuf},
                                  {"rbk-dlq-attempts", attbuf},
                                  {"rbk-dlq-topic", p->utopic},
                                  {"rbk-dlq-partition", partbuf},
                                  {"rbk-dlq-offset", offbuf}};
        for (int i = 0; i < 6; i++) {
                hdrs[n].name = ours[i][0];
                hdrs[n].value = ours[i][1];
                hdrs[n].size = strlen(ours[i][1]);
                n++;
        }
        /* The original headers; the id travels as the message id. */
        rd_kafka_headers_t *rh;
        if (!rd_kafka_message_headers(rkm, &rh)) {
                const char *name;
                const void *val;
                size_t sz;
                for (size_t i = 0;
                     n < RBK__DLQ_MAX_HEADERS &&
                     !rd_kafka_header_get_all(rh, i, &name, &val, &sz);
                     i++) {
                        if (!strcmp(name, RBK_MSGID_HEADER)) {
                                g_free(x->id);
                                x->id = val && sz && sz <= RBK_MSGID_MAX_LEN
                                            ? g_strndup(val, sz)
                                            : NULL;
                                if (x->id && strlen(x->id) != sz) {
                                        g_free(x->id); /* embedded NUL */
                                        x->id = NULL;
                                }
                                continue;
                        }
                        if (!strcmp(name, RBK_RESENT_HEADER))
                                continue; /* the producer's own marker */
                        hdrs[n].name = name;
                        hdrs[n].value = val;
                        hdrs[n].size = sz;
                        n++;
                }
        }

        rbk_producer_t *prod = rbk__dlq_producer(c, e, sizeof(e));
        rbk_err_t err = RBK_ERR_STATE;
        if (prod) {
                rbk_msg_t m = RBK_MSG_INIT;
                m.topic = c->dlq_topic;
                m.key = rkm->key;
                m.key_len = rkm->key_len;
                m.value = rkm->payload;
                m.value_len = rkm->len;
                m.headers = hdrs;
                m.header_cnt = n;
                m.id = x->id;
                m.opaque = x;
                err = rbk_producer_send(prod, &m, e, sizeof(e));
        }
        if (err) {
                char why[600];
                snprintf(why, sizeof(why), "%s%s%s", rbk_err2name(err),
                         *e ? ": " : "", e);
                rbk__dlq_outcome(x, err ? err : RBK_ERR_DELIVERY, 0, why);
        }
}

void rbk__dlq_flush(rbk_consumer_t *c, int timeout_ms) {
        int64_t deadline = rbk__now_ms() + MAX(timeout_ms, 0);
        g_mutex_lock(&c->lock);
        while (c->dlq_inflight > 0 && rbk__now_ms() < deadline)
                rbk__consumer_wait(c, g_get_monotonic_time() +
                                      50 * G_TIME_SPAN_MILLISECOND);
        g_mutex_unlock(&c->lock);
}

void rbk__dlq_close(rbk_consumer_t *c, int timeout_ms) {
        g_mutex_lock(&c->dlq_mu);
        rbk_producer_t *p = c->dlq;
        c->dlq = NULL;
        g_mutex_unlock(&c->dlq_mu);
        if (p) {
                rbk_producer_close(p, timeout_ms);
                rbk_producer_destroy(p);
        }
}
