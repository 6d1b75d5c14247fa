/* The consumer's metrics in the Prometheus text format and its health
 * check. Reads partition state under c->lock; writes none of it. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "consumer_internal.h"

/* One partition's figures, copied under the lock. */
typedef struct {
        char *key;   /* sort key */
        char *topic; /* prefix stripped */
        int32_t partition;
        int64_t lag, committed;
        uint64_t handled, retried, dead_lettered, duplicates, queued;
        int quarantined, paused, held, stalled;
        uint64_t handler_cnt;
        double handler_ms_sum;
        uint64_t buckets[RBK__LATENCY_BUCKETS + 1];
} rbk__pm_t;

static void rbk__pm_clear(gpointer p) {
        rbk__pm_t *m = p;
        g_free(m->key);
        g_free(m->topic);
}

static gint rbk__pm_cmp(gconstpointer a, gconstpointer b) {
        const rbk__pm_t *x = a, *y = b;
        int c = strcmp(x->topic, y->topic);
        if (c)
                return c;
        return x->partition < y->partition ? -1 : x->partition > y->partition;
}

/* Copies every assigned partition's figures (c->lock held). */
static GArray *rbk__pm_snapshot(rbk_consumer_t *c) {
        GArray *a = g_array_new(FALSE, TRUE, sizeof(rbk__pm_t));
        g_array_set_clear_func(a, rbk__pm_clear);
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                const rbk__part_t *p = v;
                rbk__pm_t m;
                memset(&m, 0, sizeof(m));
                m.key = g_strdup(k);
                m.topic = g_strdup(p->utopic);
                m.partition = p->partition;
                m.lag = rbk__part_lag(c, p);
                m.committed = p->committed;
                m.handled = p->handled;
                m.retried = p->retried;
                m.dead_lettered = p->dead_lettered;
                m.duplicates = p->duplicates;
                m.queued = rbk__part_queued(p);
                m.quarantined = p->quarantined;
                m.paused = p->paused;
                m.held = p->hold != RBK__HOLD_NONE;
                m.stalled = p->stall_reported;
                m.handler_cnt = p->handler_cnt;
                m.handler_ms_sum = p->handler_ms_sum;
                memcpy(m.buckets, p->handler_buckets, sizeof(m.buckets));
                g_array_append_val(a, m);
        }
        g_array_sort(a, rbk__pm_cmp);
        return a;
}

/* A partition family: one sample per partition, the value chosen by
 * @field (an offset into rbk__pm_t of a uint64_t, int or int64_t). */
typedef enum { RBK__F_U64, RBK__F_INT, RBK__F_I64_NAN } rbk__ftype_t;

typedef struct {
        const char *name, *type, *help;
        size_t off;
        rbk__ftype_t ft;
} rbk__pfam_t;

#define RBK__PF(n, t, h, f, ft) {n, t, h, offsetof(rbk__pm_t, f), ft}

static const rbk__pfam_t rbk__pfams[] = {
    RBK__PF("rbk_consumer_lag_messages", "gauge",
            "Messages between the partition's position and its high "
            "watermark (NaN: not known yet)",
            lag, RBK__F_I64_NAN),
    RBK__PF("rbk_consumer_committed_offset", "gauge",
            "Last committed offset of the partition (NaN: none yet)",
            committed, RBK__F_I64_NAN),
    RBK__PF("rbk_consumer_queued_messages", "gauge",
            "Messages fetched and waiting in the library's partition queue",
            queued, RBK__F_U64),
    RBK__PF("rbk_consumer_handled_total", "counter",
            "Messages the handler handled (RBK_HANDLED) since the partition "
            "was assigned",
            handled, RBK__F_U64),
    RBK__PF("rbk_consumer_retried_total", "counter",
            "Handler calls that asked for a retry (RBK_RETRY)", retried,
            RBK__F_U64),
    RBK__PF("rbk_consumer_dead_lettered_total", "counter",
            "Messages sent to the dead-letter topic", dead_lettered,
            RBK__F_U64),
    RBK__PF("rbk_consumer_duplicates_dropped_total", "counter",
            "Messages dropped by deduplication as provably seen", duplicates,
            RBK__F_U64),
    RBK__PF("rbk_consumer_quarantined", "gauge",
            "1 while the partition is quarantined (an out-of-range offset, "
            "waiting for an operator), else 0",
            quarantined, RBK__F_INT),
    RBK__PF("rbk_consumer_paused", "gauge",
            "1 while the application has paused the partition, else 0",
            paused, RBK__F_INT),
    RBK__PF("rbk_consumer_held", "gauge",
            "1 while the partition is held on a message the handler gave up "
            "on or whose dead letter is pending or failed, else 0",
            held, RBK__F_INT),
    RBK__PF("rbk_consumer_stalled", "gauge",
            "1 while the partition is stalled (lag and no progress for "
            "rbk.consumer.stall.timeout.ms), else 0",
            stalled, RBK__F_INT),
};

static void rbk__pm_labels(GString *l, const char *group, const rbk__pm_t *m) {
        char part[16];
        g_string_truncate(l, 0);
        rbk__prom_label(l, "group", group);
        rbk__prom_label(l, "topic", m->topic);
        g_snprintf(part, sizeof(part), "%" PRId32, m->partition);
        rbk__prom_label(l, "partition", part);
}

char *rbk_consumer_metrics(rbk_consumer_t *c) {
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        if (!c || rbk_consumer_stats(c, &st))
                return NULL;
        g_mutex_lock(&c->lock);
        GArray *parts = rbk__pm_snapshot(c);
        g_mutex_unlock(&c->lock);

        GString *out = g_string_new(NULL), *l = g_string_new(NULL);
        const struct {
                const char *name, *type, *help;
                uint64_t v;
        } cm[] = {
            {"rbk_consumer_consumed_total", "counter",
             "Messages received from Kafka", st.consumed},
            {"rbk_consumer_unprovable_total", "counter",
             "Messages passed to the handler that were too old for the "
             "deduplication window",
             st.unprovable},
            {"rbk_consumer_no_id_total", "counter",
             "Messages passed to the handler without an id header", st.no_id},
            {"rbk_consumer_commits_total", "counter",
             "Offset commits that succeeded", st.commits},
            {"rbk_consumer_quarantines_total", "counter",
             "Quarantine incidents, repeats included", st.quarantines},
            {"rbk_consumer_resolutions_total", "counter",
             "Quarantines and held partitions resolved", st.resolutions},
            {"rbk_consumer_stalls_total", "counter",
             "Partition stall events fired", st.stalls},
            {"rbk_consumer_out_of_range_disproved_total", "counter",
             "Out-of-range reports the log disproved (resumed in place, not "
             "paged)",
             st.out_of_range_disproved},
            {"rbk_consumer_assigned_partitions", "gauge",
             "Partitions currently assigned to this consumer",
             st.assigned_partitions},
            {"rbk_consumer_dedup_memory_bytes", "gauge",
             "Memory held by deduplication windows", st.dedup_memory_bytes},
        };
        g_string_truncate(l, 0);
        rbk__prom_label(l, "group", c->ugroup);
        for (size_t i = 0; i < G_N_ELEMENTS(cm); i++) {
                rbk__prom_family(out, cm[i].name, cm[i].type, cm[i].help);
                rbk__prom_sample_u64(out, cm[i].name, l->str, cm[i].v);
        }

        for (size_t f = 0; f < G_N_ELEMENTS(rbk__pfams); f++) {
                const rbk__pfam_t *fam = &rbk__pfams[f];
                rbk__prom_family(out, fam->name, fam->type, fam->help);
                for (guint i = 0; i < parts->len; i++) {
                        const rbk__pm_t *m =
                            &g_array_index(parts, rbk__pm_t, i);
                        const char *field = (const char *)m + fam->off;
                        double v;
                        if (fam->ft == RBK__F_U64)
                                v = (double)*(const uint64_t *)field;
                        else if (fam->ft == RBK__F_INT)
                                v = *(const int *)field ? 1.0 : 0.0;
                        else {
                                int64_t x = *(const int64_t *)field;
                                v = x < 0 ? NAN : (double)x;
                        }
                        rbk__pm_labels(l, c->ugroup, m);
                        rbk__prom_sample(out, fam->name, l->str, v);
                }
        }

        const char *h = "rbk_consumer_handler_latency_seconds";
        rbk__prom_family(out, h, "histogram",
                         "Time from hand-out to the handler's verdict (one "
                         "observation per message, or per batch in batch "
                         "mode)");
        for (guint i = 0; i < parts->len; i++) {
                const rbk__pm_t *m = &g_array_index(parts, rbk__pm_t, i);
                uint64_t cum = 0;
                GString *bl = g_string_new(NULL);
                for (int b = 0; b <= RBK__LATENCY_BUCKETS; b++) {
                        char le[32];
                        cum += m->buckets[b];
                        if (b < RBK__LATENCY_BUCKETS)
                                g_ascii_formatd(
                                    le, sizeof(le), "%g",
                                    (double)rbk__latency_bounds_ms[b] / 1e3);
                        else
                                g_strlcpy(le, "+Inf", sizeof(le));
                        rbk__pm_labels(bl, c->ugroup, m);
                        rbk__prom_label(bl, "le", le);
                        g_string_append_printf(out, "%s_bucket{%s} %" G_GUINT64_FORMAT "\n",
                                               h, bl->str, cum);
                }
                g_string_free(bl, TRUE);
                rbk__pm_labels(l, c->ugroup, m);
                rbk__prom_sample(out, "rbk_consumer_handler_latency_seconds_sum",
                                 l->str, m->handler_ms_sum / 1e3);
                rbk__prom_sample_u64(
                    out, "rbk_consumer_handler_latency_seconds_count", l->str,
                    cum);
        }
        g_array_free(parts, TRUE);

        rbk__rdstats_prom(&c->rdstats, out, "rbk_consumer", "group",
                          c->ugroup);
        g_string_free(l, TRUE);
        char *s = strdup(out->str); /* freed with rbk_free() */
        g_string_free(out, TRUE);
        return s;
}

/* ------------------------------------------------------------ health */

static void rbk__why(GString *w, rbk_err_t *worst, rbk_err_t err,
                     const char *fmt, ...) G_GNUC_PRINTF(4, 5);

/* Severity of a health error: the first of SHUTDOWN, FATAL, KAFKA, STATE
 * wins. */
static int rbk__health_rank(rbk_err_t e) {
        switch (e) {
        case RBK_ERR_SHUTDOWN:
                return 4;
        case RBK_ERR_FATAL:
                return 3;
        case RBK_ERR_KAFKA:
                return 2;
        case RBK_ERR_STATE:
                return 1;
        default:
                return 0;
        }
}

static void rbk__why(GString *w, rbk_err_t *worst, rbk_err_t err,
                     const char *fmt, ...) {
        va_list ap;
        if (w->len)
                g_string_append(w, "; ");
        va_start(ap, fmt);
        g_string_append_vprintf(w, fmt, ap);
        va_end(ap);
        if (rbk__health_rank(err) > rbk__health_rank(*worst))
                *worst = err;
}

rbk_err_t rbk_consumer_health(rbk_consumer_t *c, char *why, size_t why_size) {
        if (why && why_size)
                why[0] = '\0';
        if (!c)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(c->pid))
                return RBK_ERR_FORKED;
        rbk_err_t worst = RBK_OK;
        GString *w = g_string_new(NULL);
        char buf[512];

        g_mutex_lock(&c->lock);
        int closed = c->closed, subscribed = c->subscribed,
            joined = c->joined;
        int64_t unassigned = c->unassigned_since_ms;
        uint64_t consumed = c->consumed;
        GArray *parts = rbk__pm_snapshot(c);
        GPtrArray *incidents = g_ptr_array_new_with_free_func(g_free);
        for (guint i = 0; i < parts->len; i++) {
                const rbk__pm_t *m = &g_array_index(parts, rbk__pm_t, i);
                rbk__part_t *p = g_hash_table_lookup(c->parts, m->key);
                char *d = NULL;
                if (p && p->quarantined)
                        d = g_strdup_printf("incident %s, failed offset %" PRId64,
                                            p->q.incident_key,
                                            p->q.failed_offset);
                else if (p && p->hold != RBK__HOLD_NONE)
                        d = g_strdup(p->hold_reason ? p->hold_reason : "");
                g_ptr_array_add(incidents, d);
        }
        g_mutex_unlock(&c->lock);

        if (closed)
                rbk__why(w, &worst, RBK_ERR_SHUTDOWN, "the consumer is closed");
        if (c->rk && rd_kafka_fatal_error(c->rk, buf, sizeof(buf)))
                rbk__why(w, &worst, RBK_ERR_FATAL, "fatal error: %s", buf);
        if (!closed &&
            rbk__rdstats_down(&c->rdstats, consumed, buf, sizeof(buf)))
                rbk__why(w, &worst, RBK_ERR_KAFKA, "%s", buf);
        if (!closed && !subscribed)
                rbk__why(w, &worst, RBK_ERR_STATE, "not subscribed");
        else if (!closed && !joined)
                rbk__why(w, &worst, RBK_ERR_STATE,
                         "not joined the group yet (no assignment received)");
        else if (!closed && unassigned &&
                 rbk__now_ms() - unassigned > c->session_timeout_ms)
                rbk__why(w, &worst, RBK_ERR_STATE,
                         "no partition assigned for %" PRId64
                         " ms (longer than session.timeout.ms)",
                         rbk__now_ms() - unassigned);
        for (guint i = 0; !closed && i < parts->len; i++) {
                const rbk__pm_t *m = &g_array_index(parts, rbk__pm_t, i);
                const char *d = g_ptr_array_index(incidents, i);
                if (m->quarantined)
                        rbk__why(w, &worst, RBK_ERR_STATE,
                                 "partition %s [%" PRId32 "] quarantined (%s)",
                                 m->topic, m->partition, d ? d : "");
                else if (m->held)
                        rbk__why(w, &worst, RBK_ERR_STATE,
                                 "partition %s [%" PRId32 "] held%s%s",
                                 m->topic, m->partition, d && *d ? ": " : "",
                                 d ? d : "");
                if (m->stalled)
                        rbk__why(w, &worst, RBK_ERR_STATE,
                                 "partition %s [%" PRId32 "] stalled (lag %"
                                 PRId64 ", no progress for "
                                 "rbk.consumer.stall.timeout.ms)",
                                 m->topic, m->partition, m->lag);
        }
        g_ptr_array_free(incidents, TRUE);
        g_array_free(parts, TRUE);
        if (worst != RBK_OK && why && why_size)
                g_strlcpy(why, w->str, why_size);
        g_string_free(w, TRUE);
        return worst;
}
