/* Support for the producer suites (declared in producer_support.h). */
#include "producer_support.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ tracker */

ps_track_t *ps_track_new(size_t n) {
        ps_track_t *t = g_new0(ps_track_t, 1);
        g_mutex_init(&t->lock);
        g_cond_init(&t->cond);
        t->n = n;
        t->state = g_new0(int, n);
        t->reports = g_new0(int, n);
        t->id = g_new0(char *, n);
        t->err = g_new0(rbk_err_t, n);
        t->pp = g_new0(int, n);
        t->resent = g_new0(int, n);
        t->partition = g_new0(int32_t, n);
        t->offset = g_new0(int64_t, n);
        t->reason = g_new0(char *, n);
        return t;
}

void ps_track_free(ps_track_t *t) {
        for (size_t i = 0; i < t->n; i++) {
                g_free(t->id[i]);
                g_free(t->reason[i]);
        }
        g_free(t->state);
        g_free(t->reports);
        g_free(t->id);
        g_free(t->err);
        g_free(t->pp);
        g_free(t->resent);
        g_free(t->partition);
        g_free(t->offset);
        g_free(t->reason);
        g_mutex_clear(&t->lock);
        g_cond_clear(&t->cond);
        g_free(t);
}

/* The delivery callback: msg_opaque is index + 1. */
void ps_dr_cb(const rbk_delivery_t *dr, void *opaque) {
        ps_track_t *t = opaque;
        size_t i = (size_t)(uintptr_t)dr->msg_opaque;
        g_mutex_lock(&t->lock);
        if (i == 0 || i > t->n) {
                t->bad_opaque++;
        } else {
                i--;
                t->reports[i]++;
                if (t->reports[i] == 1) {
                        t->state[i] = dr->err == RBK_OK ? PS_DELIVERED
                                                        : PS_FAILED;
                        t->id[i] = dr->id ? g_strdup(dr->id) : NULL;
                        t->err[i] = dr->err;
                        t->pp[i] = dr->possibly_persisted;
                        t->resent[i] = dr->resent;
                        t->partition[i] = dr->partition;
                        t->offset[i] = dr->offset;
                        t->reason[i] = g_strdup(dr->reason ? dr->reason : "");
                }
                t->done++;
        }
        g_cond_broadcast(&t->cond);
        g_mutex_unlock(&t->lock);
}

/* Records that send() accepted message i (call before or after the report:
 * the report wins). */
void ps_track_accepted(ps_track_t *t, size_t i) {
        g_mutex_lock(&t->lock);
        if (t->state[i] == PS_NONE)
                t->state[i] = PS_ACCEPTED;
        g_mutex_unlock(&t->lock);
}

/* Waits until `want` reports arrived, up to timeout_ms. */
int ps_track_wait(ps_track_t *t, size_t want, int timeout_ms) {
        gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        g_mutex_lock(&t->lock);
        while (t->done < want && g_get_monotonic_time() < end)
                g_cond_wait_until(&t->cond, &t->lock, end);
        int ok = t->done >= want;
        g_mutex_unlock(&t->lock);
        return ok;
}

/* Counts by index: every accepted message must have exactly one report. */
ps_counts_t ps_track_counts(ps_track_t *t, const int *accepted) {
        ps_counts_t c = {0};
        g_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->n; i++) {
                if (t->reports[i] > 1)
                        c.double_reported++;
                if (!accepted[i])
                        continue;
                c.accepted++;
                if (t->reports[i] == 0)
                        c.unreported++;
                else if (t->state[i] == PS_DELIVERED)
                        c.delivered++;
                else
                        c.failed++;
        }
        g_mutex_unlock(&t->lock);
        return c;
}

/* ------------------------------------------------------------ hooks */

void ps_hook_cb(const rbk_event_t *ev, void *opaque) {
        ps_hooks_t *h = opaque;
        g_mutex_lock(&h->lock);
        if (ev->cls > 0 && ev->cls < 32) {
                h->count[ev->cls]++;
                g_strlcpy(h->last[ev->cls], ev->message ? ev->message : "",
                          sizeof(h->last[0]));
        }
        if (ev->generation != RBK_NO_VALUE)
                h->generation = ev->generation;
        g_mutex_unlock(&h->lock);
}

int ps_hook_count(ps_hooks_t *h, rbk_event_class_t cls) {
        g_mutex_lock(&h->lock);
        int n = h->count[cls];
        g_mutex_unlock(&h->lock);
        return n;
}

/* ------------------------------------------------------------ cluster */

rbk_testcluster_t *ps_cluster(const char *topic, int partitions) {
        char errstr[256];
        rbk_testcluster_t *tc = rbk_testcluster_new(3, errstr, sizeof(errstr));
        ck_assert_msg(tc, "rbk_testcluster_new: %s", errstr);
        ck_assert_int_eq(rbk_testcluster_create_topic(tc, topic, partitions, 3),
                         RBK_OK);
        return tc;
}

uint64_t ps_json_u64(const char *json, const char *name) {
        char pat[64];
        snprintf(pat, sizeof(pat), "\"%s\":", name);
        const char *s = strstr(json, pat);
        ck_assert_msg(s, "%s missing from %s", name, json);
        return g_ascii_strtoull(s + strlen(pat), NULL, 10);
}

void ps_set(rbk_conf_t *conf, const char *name, const char *value) {
        char errstr[512];
        rbk_err_t err = rbk_conf_set(conf, name, value, errstr, sizeof(errstr));
        ck_assert_msg(err == RBK_OK, "rbk_conf_set(%s=%s): %s", name, value,
                      errstr);
}

/* Faults make librdkafka log connection errors by design: keep the test
 * output to what matters (critical and worse, or everything with
 * RBK_TEST_VERBOSE set). */
void ps_log_cb(int level, const char *fac, const char *line, void *opaque) {
        (void)opaque;
        if (level <= 2 || getenv("RBK_TEST_VERBOSE"))
                fprintf(stderr, "%%%d|%s|%s\n", level, fac, line);
}

/* A producer configuration for the cluster, reporting to t. */
rbk_conf_t *ps_conf(rbk_testcluster_t *tc, ps_track_t *t) {
        rbk_conf_t *conf = rbk_conf_new();
        ps_set(conf, "bootstrap.servers", rbk_testcluster_bootstrap(tc));
        if (t)
                rbk_conf_set_delivery_cb(conf, ps_dr_cb, t);
        rbk_conf_set_log_cb(conf, ps_log_cb, NULL);
        return conf;
}

/* Sends message i with key "k<key>" and value "k<key>:<seq>:<i>". */
rbk_err_t ps_send(rbk_producer_t *p, const char *topic, size_t i, int key,
                  int seq, char *errstr, size_t errstr_size) {
        char k[32], v[64];
        snprintf(k, sizeof(k), "k%d", key);
        snprintf(v, sizeof(v), "k%d:%d:%zu", key, seq, i);
        rbk_msg_t m = RBK_MSG_INIT;
        m.topic = topic;
        m.key = k;
        m.key_len = strlen(k);
        m.value = v;
        m.value_len = strlen(v);
        m.opaque = (void *)(uintptr_t)(i + 1);
        return rbk_producer_send(p, &m, errstr, errstr_size);
}

/* ------------------------------------------------------------ reader */

void ps_rec_free(gpointer p) {
        ps_rec_t *r = p;
        g_free(r->id);
        g_free(r->value);
        g_free(r);
}

/* Reads every partition of topic from the beginning to its high watermark
 * with a plain librdkafka consumer (assign, no group). Records in partition
 * then offset order. */
GPtrArray *ps_read_topic(const char *bootstrap, const char *topic,
                         int partitions) {
        char errstr[512];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        ck_assert(rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr,
                                    sizeof(errstr)) == RD_KAFKA_CONF_OK);
        ck_assert(rd_kafka_conf_set(c, "group.id", "rbk-test-reader", errstr,
                                    sizeof(errstr)) == RD_KAFKA_CONF_OK);
        ck_assert(rd_kafka_conf_set(c, "enable.auto.commit", "false", errstr,
                                    sizeof(errstr)) == RD_KAFKA_CONF_OK);
        ck_assert(rd_kafka_conf_set(c, "log_level", "3", errstr,
                                    sizeof(errstr)) == RD_KAFKA_CONF_OK);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr,
                                      sizeof(errstr));
        ck_assert_msg(rk, "reader: %s", errstr);
        int64_t *high = g_new0(int64_t, partitions);
        int64_t *next = g_new0(int64_t, partitions);
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(partitions);
        for (int i = 0; i < partitions; i++) {
                int64_t lo = 0;
                rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
                for (int tries = 0; tries < 10 && err; tries++)
                        err = rd_kafka_query_watermark_offsets(
                            rk, topic, i, &lo, &high[i], 5000);
                ck_assert_msg(!err, "watermarks of %s [%d]: %s", topic, i,
                              rd_kafka_err2str(err));
                next[i] = lo;
                rd_kafka_topic_partition_list_add(l, topic, i)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
        }
        ck_assert(!rd_kafka_assign(rk, l));
        rd_kafka_topic_partition_list_destroy(l);
        GPtrArray **per = g_new0(GPtrArray *, partitions);
        for (int i = 0; i < partitions; i++)
                per[i] = g_ptr_array_new();
        gint64 end = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
        for (;;) {
                int left = 0;
                for (int i = 0; i < partitions; i++)
                        left += next[i] < high[i];
                if (!left)
                        break;
                ck_assert_msg(g_get_monotonic_time() < end,
                              "reading %s back timed out", topic);
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (!m)
                        continue;
                if (m->err) {
                        ck_assert_msg(m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF ||
                                          m->err == RD_KAFKA_RESP_ERR__TRANSPORT ||
                                          m->err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,
                                      "reader: %s", rd_kafka_message_errstr(m));
                        rd_kafka_message_destroy(m);
                        continue;
                }
                ps_rec_t *r = g_new0(ps_rec_t, 1);
                r->partition = m->partition;
                r->offset = m->offset;
                r->value = g_strndup(m->payload, m->len);
                r->timestamp = rd_kafka_message_timestamp(m, &r->tstype);
                rd_kafka_headers_t *h = NULL;
                if (!rd_kafka_message_headers(m, &h)) {
                        const void *v;
                        size_t sz;
                        if (!rd_kafka_header_get_last(h, RBK_MSGID_HEADER, &v,
                                                      &sz))
                                r->id = g_strndup(v, sz);
                        if (!rd_kafka_header_get_last(h, RBK_RESENT_HEADER, &v,
                                                      &sz))
                                r->resent = 1;
                }
                if (m->offset >= next[m->partition])
                        next[m->partition] = m->offset + 1;
                g_ptr_array_add(per[m->partition], r);
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        GPtrArray *all = g_ptr_array_new_with_free_func(ps_rec_free);
        for (int i = 0; i < partitions; i++) {
                for (guint j = 0; j < per[i]->len; j++)
                        g_ptr_array_add(all, g_ptr_array_index(per[i], j));
                g_ptr_array_free(per[i], TRUE);
        }
        g_free(per);
        g_free(high);
        g_free(next);
        return all;
}

/* Compares the log with the reports: every delivered id is in the log, ids
 * in the log were reported (delivered, or failed as possibly persisted),
 * and for each key the first occurrences come in send order (the value
 * carries the per-key sequence). */
ps_check_t ps_check_log(ps_track_t *t, GPtrArray *log) {
        ps_check_t c = {0};
        GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
        GHashTable *lastseq = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                    g_free, NULL);
        GHashTable *reported = g_hash_table_new(g_str_hash, g_str_equal);
        g_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->n; i++)
                if (t->id[i] && t->reports[i])
                        g_hash_table_insert(reported, t->id[i],
                                            GSIZE_TO_POINTER(i + 1));
        c.records = log->len;
        for (guint j = 0; j < log->len; j++) {
                ps_rec_t *r = g_ptr_array_index(log, j);
                if (!r->id) {
                        c.no_id++;
                        continue;
                }
                if (g_hash_table_contains(seen, r->id)) {
                        c.dup_ids++;
                        if (!r->resent)
                                c.dup_unflagged++;
                        continue;
                }
                g_hash_table_add(seen, r->id);
                gpointer v = g_hash_table_lookup(reported, r->id);
                if (!v) {
                        c.unknown++;
                } else {
                        size_t i = GPOINTER_TO_SIZE(v) - 1;
                        if (t->state[i] == PS_FAILED && !t->pp[i])
                                c.unknown++; /* failed for sure, yet here */
                }
                /* value: k<key>:<seq>:<index> */
                char **parts = g_strsplit(r->value, ":", 3);
                if (parts[0] && parts[1]) {
                        long seq = strtol(parts[1], NULL, 10);
                        gpointer prev;
                        if (g_hash_table_lookup_extended(lastseq, parts[0],
                                                         NULL, &prev) &&
                            GPOINTER_TO_SIZE(prev) >= (size_t)seq + 1)
                                c.order_errors++;
                        else
                                g_hash_table_insert(lastseq,
                                                    g_strdup(parts[0]),
                                                    GSIZE_TO_POINTER(seq + 1));
                }
                g_strfreev(parts);
        }
        for (size_t i = 0; i < t->n; i++) {
                if (!t->reports[i] || t->state[i] != PS_DELIVERED ||
                    (t->id[i] && g_hash_table_contains(seen, t->id[i])))
                        continue;
                if (t->offset[i] == RD_KAFKA_OFFSET_INVALID)
                        c.missing_implicit++;
                if (c.missing++ >= 4)
                        continue;
                const char *there = "nothing";
                for (guint j = 0; j < log->len; j++) {
                        ps_rec_t *r = g_ptr_array_index(log, j);
                        if (r->partition == t->partition[i] &&
                            r->offset == t->offset[i])
                                there = r->id ? r->id : "a record without id";
                }
                size_t used = strlen(c.missing_eg);
                snprintf(c.missing_eg + used, sizeof(c.missing_eg) - used,
                         "%s#%zu id %s reported at [%d] %" PRId64
                         " (resent %d), the log has %s there",
                         used ? "; " : "", i, t->id[i] ? t->id[i] : "-",
                         (int)t->partition[i], t->offset[i], t->resent[i],
                         there);
        }
        g_mutex_unlock(&t->lock);
        g_hash_table_destroy(seen);
        g_hash_table_destroy(lastseq);
        g_hash_table_destroy(reported);
        return c;
}
