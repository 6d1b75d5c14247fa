/* Support for the consumer suites (declared in consumer_support.h). */
#include "consumer_support.h"
#include "consumer_internal.h" /* the internal entry points below */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ cluster */

void cs_log_quiet(const rd_kafka_t *rk, int level, const char *fac,
                  const char *buf) {
        if ((level <= 3 || getenv("CS_DEBUG")) && getenv("CS_VERBOSE"))
                fprintf(stderr, "%%%d %s %s\n", level, fac, buf);
}

/* The cluster is the library's public test helper (rbk_testcluster_*).
 * The messages the suites consume are written by a plain librdkafka
 * producer, not by this library's: their partitions, keys and headers are
 * exactly what the test gives, and no code under test takes part. Tests
 * also use it directly (cl->prk) for watermarks and their own produce
 * calls. */
cs_cluster_t *cs_cluster_new(void) {
        cs_cluster_t *cl = g_new0(cs_cluster_t, 1);
        char e[512];
        cl->tc = rbk_testcluster_new(3, e, sizeof(e));
        ck_assert_msg(cl->tc != NULL, "rbk_testcluster_new: %s", e);
        cl->mc = rbk_testcluster_mock(cl->tc);
        ck_assert(cl->mc != NULL);
        cl->bootstraps = g_strdup(rbk_testcluster_bootstrap(cl->tc));
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        ck_assert(rd_kafka_conf_set(rc, "bootstrap.servers", cl->bootstraps,
                                    e, sizeof(e)) == RD_KAFKA_CONF_OK);
        rd_kafka_conf_set(rc, "enable.idempotence", "true", e, sizeof(e));
        rd_kafka_conf_set(rc, "linger.ms", "1", e, sizeof(e));
        rd_kafka_conf_set_log_cb(rc, cs_log_quiet);
        cl->prk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, e, sizeof(e));
        ck_assert_msg(cl->prk != NULL, "%s", e);
        return cl;
}

void cs_cluster_destroy(cs_cluster_t *cl) {
        if (!cl)
                return;
        rd_kafka_flush(cl->prk, 10000);
        rd_kafka_destroy(cl->prk);
        rbk_testcluster_destroy(cl->tc);
        g_free(cl->bootstraps);
        g_free(cl);
}

void cs_topic(cs_cluster_t *cl, const char *topic, int partitions) {
        ck_assert_int_eq(rbk_testcluster_create_topic(cl->tc, topic,
                                                      partitions, 3),
                         RBK_OK);
}

/* Produces n messages to one partition; ids "<tag>-<partition>-<i>" for i
 * in [from, from+n); the value is the id. Waits for delivery. */
void cs_produce(cs_cluster_t *cl, const char *topic, int32_t partition,
                int from, int n, const char *tag) {
        for (int i = from; i < from + n; i++) {
                char id[128];
                snprintf(id, sizeof(id), "%s-%d-%d", tag, (int)partition, i);
                rd_kafka_resp_err_t err;
                for (;;) {
                        err = rd_kafka_producev(
                            cl->prk, RD_KAFKA_V_TOPIC(topic),
                            RD_KAFKA_V_PARTITION(partition),
                            RD_KAFKA_V_VALUE(id, strlen(id)),
                            RD_KAFKA_V_KEY(id, strlen(id)),
                            RD_KAFKA_V_HEADER(RBK_MSGID_HEADER, id,
                                              (ssize_t)strlen(id)),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_END);
                        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                break;
                        rd_kafka_poll(cl->prk, 10);
                }
                ck_assert_msg(!err, "produce: %s", rd_kafka_err2str(err));
        }
        ck_assert_int_eq(rd_kafka_flush(cl->prk, 20000), 0);
}

/* A consumer configuration for the cluster. */
rbk_conf_t *cs_conf(cs_cluster_t *cl, const char *group) {
        rbk_conf_t *conf = rbk_conf_new();
        char e[512];
        const char *kv[][2] = {{"bootstrap.servers", cl->bootstraps},
                               {"group.id", group},
                               {"session.timeout.ms", "6000"},
                               {"heartbeat.interval.ms", "500"},
                               {"auto.commit.interval.ms", "500"},
                               {"fetch.wait.max.ms", "50"},
                               {"topic.metadata.refresh.interval.ms", "1000"},
                               {"rbk.hook.rate.limit.ms", "0"},
                               {NULL, NULL}};
        for (int i = 0; kv[i][0]; i++)
                ck_assert_msg(rbk_conf_set(conf, kv[i][0], kv[i][1], e,
                                           sizeof(e)) == RBK_OK,
                              "%s: %s", kv[i][0], e);
        /* RBK_TEST_ASSIGNOR runs the consumer suites under another
         * rebalance protocol than the library's choice for the installed
         * librdkafka (e.g. range,roundrobin, eager, on 2.8.0). */
        const char *assignor = getenv("RBK_TEST_ASSIGNOR");
        if (assignor && *assignor)
                ck_assert_msg(rbk_conf_set(conf,
                                           "partition.assignment.strategy",
                                           assignor, e,
                                           sizeof(e)) == RBK_OK,
                              "RBK_TEST_ASSIGNOR=%s: %s", assignor, e);
        return conf;
}

void cs_set(rbk_conf_t *conf, const char *k, const char *v) {
        char e[512];
        ck_assert_msg(rbk_conf_set(conf, k, v, e, sizeof(e)) == RBK_OK,
                      "%s: %s", k, e);
}

rbk_consumer_t *cs_consumer_subscribed(rbk_conf_t *conf, const char *topic) {
        char e[512];
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        ck_assert_msg(c != NULL, "%s", e);
        const char *topics[] = {topic};
        ck_assert_msg(rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)) ==
                          RBK_OK,
                      "subscribe %s: %s", topic, e);
        return c;
}

/* The committed offset of a group for one partition, read with a plain
 * librdkafka consumer of the same group (-1001 when none). */
int64_t cs_committed(cs_cluster_t *cl, const char *group, const char *topic,
                     int32_t partition, char *meta, size_t meta_size) {
        char e[512];
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        rd_kafka_conf_set(rc, "bootstrap.servers", cl->bootstraps, e, sizeof(e));
        rd_kafka_conf_set(rc, "group.id", group, e, sizeof(e));
        rd_kafka_conf_set_log_cb(rc, cs_log_quiet);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        ck_assert(rk != NULL);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, partition);
        rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, 10000);
        ck_assert_msg(!err, "committed: %s", rd_kafka_err2str(err));
        int64_t off = l->elems[0].offset;
        if (meta && meta_size) {
                meta[0] = '\0';
                if (l->elems[0].metadata)
                        snprintf(meta, meta_size, "%.*s",
                                 (int)l->elems[0].metadata_size,
                                 (const char *)l->elems[0].metadata);
        }
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        return off;
}

/* Commits an offset for a group from outside (standalone, no membership:
 * only valid while no member is in the group). */
void cs_commit(cs_cluster_t *cl, const char *group, const char *topic,
               int32_t partition, int64_t offset) {
        char e[512];
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        rd_kafka_conf_set(rc, "bootstrap.servers", cl->bootstraps, e, sizeof(e));
        rd_kafka_conf_set(rc, "group.id", group, e, sizeof(e));
        rd_kafka_conf_set(rc, "enable.auto.commit", "false", e, sizeof(e));
        rd_kafka_conf_set_log_cb(rc, cs_log_quiet);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        ck_assert(rk != NULL);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
        rd_kafka_resp_err_t err = rd_kafka_commit(rk, l, 0);
        ck_assert_msg(!err, "commit: %s", rd_kafka_err2str(err));
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

/* ------------------------------------------------------------ recorder */

cs_rec_t *cs_rec_new(void) {
        cs_rec_t *r = g_new0(cs_rec_t, 1);
        g_mutex_init(&r->lock);
        r->ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        r->log = g_ptr_array_new_with_free_func(g_free);
        r->first = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        r->last = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return r;
}

void cs_rec_free(cs_rec_t *r) {
        g_hash_table_destroy(r->ids);
        g_ptr_array_free(r->log, TRUE);
        g_hash_table_destroy(r->first);
        g_hash_table_destroy(r->last);
        g_mutex_clear(&r->lock);
        g_free(r);
}

void cs_rec_add(cs_rec_t *r, const rbk_message_t *m) {
        char tp[300];
        snprintf(tp, sizeof(tp), "%s/%d", m->topic, (int)m->partition);
        g_mutex_lock(&r->lock);
        if (m->id) {
                gpointer v = g_hash_table_lookup(r->ids, m->id);
                g_hash_table_replace(r->ids, g_strdup(m->id),
                                     GINT_TO_POINTER(GPOINTER_TO_INT(v) + 1));
        }
        g_ptr_array_add(r->log, g_strdup_printf("%s/%" PRId64 "/%s/%d", tp,
                                                m->offset,
                                                m->id ? m->id : "-",
                                                m->attempt));
        if (!g_hash_table_contains(r->first, tp)) {
                int64_t *f = g_new(int64_t, 1);
                *f = m->offset;
                g_hash_table_insert(r->first, g_strdup(tp), f);
        }
        int64_t *l = g_hash_table_lookup(r->last, tp);
        if (l && m->offset < *l)
                r->order_errors++;
        int64_t *nl = g_new(int64_t, 1);
        *nl = m->offset;
        g_hash_table_replace(r->last, g_strdup(tp), nl);
        r->total++;
        g_mutex_unlock(&r->lock);
}

size_t cs_rec_distinct(cs_rec_t *r) {
        g_mutex_lock(&r->lock);
        size_t n = g_hash_table_size(r->ids);
        g_mutex_unlock(&r->lock);
        return n;
}

int cs_rec_has(cs_rec_t *r, const char *id) {
        g_mutex_lock(&r->lock);
        int y = g_hash_table_contains(r->ids, id);
        g_mutex_unlock(&r->lock);
        return y;
}

int64_t cs_rec_first(cs_rec_t *r, const char *topic, int32_t partition) {
        char tp[300];
        snprintf(tp, sizeof(tp), "%s/%d", topic, (int)partition);
        g_mutex_lock(&r->lock);
        int64_t *f = g_hash_table_lookup(r->first, tp);
        int64_t v = f ? *f : -1;
        g_mutex_unlock(&r->lock);
        return v;
}

uint64_t cs_rec_total(cs_rec_t *r) {
        g_mutex_lock(&r->lock);
        uint64_t n = r->total;
        g_mutex_unlock(&r->lock);
        return n;
}

/* Every id "<tag>-<p>-<i>" for p < parts, i < n was seen: returns the
 * number missing (and names the first in @first_missing). */
int cs_rec_missing(cs_rec_t *r, const char *tag, int parts, int n,
                   char *first_missing, size_t sz) {
        int missing = 0;
        for (int p = 0; p < parts; p++)
                for (int i = 0; i < n; i++) {
                        char id[128];
                        snprintf(id, sizeof(id), "%s-%d-%d", tag, p, i);
                        if (!cs_rec_has(r, id)) {
                                if (!missing && first_missing)
                                        g_strlcpy(first_missing, id, sz);
                                missing++;
                        }
                }
        return missing;
}

/* ------------------------------------------------------------ waiting */

/* Bounds grow fivefold under valgrind (RBK_TEST_SLOW=1). */
gint64 cs_ms(gint64 ms) {
        const char *slow = getenv("RBK_TEST_SLOW");
        return slow && *slow == '1' ? ms * 5 : ms;
}

/* Polls @fn every 20 ms until it is true or @timeout_ms passes. */
int cs_wait(cs_cond_fn *fn, void *arg, int timeout_ms) {
        gint64 deadline = g_get_monotonic_time() + cs_ms(timeout_ms) * 1000;
        while (!fn(arg)) {
                if (g_get_monotonic_time() >= deadline)
                        return 0;
                g_usleep(20000);
        }
        return 1;
}

/* ------------------------------------------------------------ events */

static void cs_ev_free(gpointer p) {
        cs_ev_t *e = p;
        g_free(e->message);
        g_free(e->incident_key);
        g_free(e->topic);
        g_free(e->group);
        g_free(e->id);
        g_free(e);
}

cs_events_t *cs_events_new(void) {
        cs_events_t *h = g_new0(cs_events_t, 1);
        g_mutex_init(&h->lock);
        h->evs = g_ptr_array_new_with_free_func(cs_ev_free);
        return h;
}

void cs_events_free(cs_events_t *h) {
        g_ptr_array_free(h->evs, TRUE);
        g_mutex_clear(&h->lock);
        g_free(h);
}

void cs_hook(const rbk_event_t *ev, void *opaque) {
        cs_events_t *h = opaque;
        cs_ev_t *e = g_new0(cs_ev_t, 1);
        e->ev = *ev;
        e->message = g_strdup(ev->message);
        e->incident_key = g_strdup(ev->incident_key);
        e->topic = g_strdup(ev->topic);
        e->group = g_strdup(ev->group);
        e->id = g_strdup(ev->id);
        e->ev.message = e->message;
        e->ev.incident_key = e->incident_key;
        e->ev.topic = e->topic;
        e->ev.group = e->group;
        e->ev.id = e->id;
        if (getenv("CS_VERBOSE"))
                fprintf(stderr, "EVENT %s: %s\n",
                        rbk_event_class_name(ev->cls), ev->message);
        g_mutex_lock(&h->lock);
        g_ptr_array_add(h->evs, e);
        g_mutex_unlock(&h->lock);
}

int cs_events_count(cs_events_t *h, rbk_event_class_t cls) {
        int n = 0;
        g_mutex_lock(&h->lock);
        for (guint i = 0; i < h->evs->len; i++)
                n += ((cs_ev_t *)g_ptr_array_index(h->evs, i))->ev.cls == cls;
        g_mutex_unlock(&h->lock);
        return n;
}

/* A copy of the @nth event of class @cls (0-based), or 0 if none. */
int cs_events_get(cs_events_t *h, rbk_event_class_t cls, int nth,
                  rbk_event_t *out, char *key, size_t keysz) {
        int found = 0;
        g_mutex_lock(&h->lock);
        for (guint i = 0; i < h->evs->len; i++) {
                cs_ev_t *e = g_ptr_array_index(h->evs, i);
                if (e->ev.cls != cls || nth-- > 0)
                        continue;
                *out = e->ev;
                out->message = NULL;
                out->incident_key = NULL;
                out->topic = NULL;
                out->group = NULL;
                out->id = NULL;
                if (key)
                        snprintf(key, keysz, "%s",
                                 e->incident_key ? e->incident_key : "");
                found = 1;
                break;
        }
        g_mutex_unlock(&h->lock);
        return found;
}

void cs_log_cb(int level, const char *fac, const char *line, void *opaque) {
        if (getenv("CS_VERBOSE"))
                fprintf(stderr, "LOG %d %s %s\n", level, fac, line);
}

/* ------------------------------------------------------------ internals */

void cs_inject_reset(rbk_consumer_t *c, const char *topic, int32_t partition,
                     int64_t offset) {
        rd_kafka_message_t rkm;
        memset(&rkm, 0, sizeof(rkm));
        rkm.err = RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET;
        rkm.rkt = rd_kafka_topic_new(c->rk, topic, NULL);
        ck_assert_ptr_nonnull(rkm.rkt);
        rkm.partition = partition;
        rkm.offset = offset;
        rbk__q_on_reset(c, &rkm);
        rd_kafka_topic_destroy(rkm.rkt);
}

void cs_revoke_and_assign(rbk_consumer_t *c) {
        rd_kafka_topic_partition_list_t *l = NULL;
        g_mutex_lock(&c->poll_mu);
        rbk__tl_poller = c;
        ck_assert_int_eq(rd_kafka_assignment(c->rk, &l), 0);
        if (l->cnt) {
                rbk__assign_rebalance(c, RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS,
                                      l);
                rbk__assign_rebalance(c, RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS,
                                      l);
        }
        rbk__tl_poller = NULL;
        g_mutex_unlock(&c->poll_mu);
        rd_kafka_topic_partition_list_destroy(l);
}
