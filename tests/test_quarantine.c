/* Never an automatic offset reset: out-of-range partitions are quarantined
 * alone with full context, held until resolved, resolutions resume exactly
 * where asked and are committed; new groups start at the initial position
 * without an incident; the next owner reports the same incident as a
 * repeat. */
#include "consumer_internal.h" /* rbk__consumer_resolve_by_incident */
#include "consumer_support.h"
#include "harness.h"

typedef struct {
        rbk_consumer_t *c;
        cs_rec_t *rec;
        cs_events_t *evs;
        rbk_conf_t *conf;
} qc_t;

/* rbk_quarantine_t as programs built against its first layout have it. */
typedef struct {
        char topic[256];
        int32_t partition;
        int64_t failed_offset;
        int64_t committed_offset;
        int64_t low_watermark;
        int64_t high_watermark;
        char incident_key[512];
} old_quarantine_t;

/* The same entry as a later layout with fields this library does not know. */
typedef struct {
        old_quarantine_t v1;
        int64_t later[4];
} later_quarantine_t;

static void canary_intact(const unsigned char *b, size_t n, const char *what) {
        for (size_t k = 0; k < n; k++)
                ck_assert_msg(b[k] == 0xA5, "%s: byte %zu past the entries "
                              "written", what, k);
}

/* With one partition quarantined (g-q/t-q/1/100): neither listing writes
 * past the caller's entries, whatever their size. */
static void check_quarantine_entry_sizes(rbk_consumer_t *c) {
        struct {
                old_quarantine_t q[1];
                unsigned char canary[64];
        } old;
        memset(&old, 0xA5, sizeof(old));
        ck_assert_uint_eq(
            rbk_consumer_quarantined(c, (rbk_quarantine_t *)old.q, 1), 1);
        ck_assert_str_eq(old.q[0].incident_key, "g-q/t-q/1/100");
        canary_intact(old.canary, sizeof(old.canary), "old symbol");

        memset(&old, 0xA5, sizeof(old));
        ck_assert_uint_eq(rbk_consumer_quarantined2(c, old.q, 1,
                                                    sizeof(old.q[0])),
                          1);
        ck_assert_str_eq(old.q[0].topic, "t-q");
        ck_assert_int_eq(old.q[0].failed_offset, 100);
        ck_assert_str_eq(old.q[0].incident_key, "g-q/t-q/1/100");
        canary_intact(old.canary, sizeof(old.canary), "first layout");

        struct {
                later_quarantine_t q[2];
                unsigned char canary[64];
        } later;
        memset(&later, 0xA5, sizeof(later));
        ck_assert_uint_eq(rbk_consumer_quarantined2(c, later.q, 2,
                                                    sizeof(later.q[0])),
                          1);
        ck_assert_int_eq(later.q[0].v1.partition, 1);
        ck_assert_int_eq(later.q[0].v1.high_watermark, 10);
        for (size_t k = 0; k < G_N_ELEMENTS(later.q[0].later); k++)
                ck_assert_int_eq(later.q[0].later[k], 0);
        /* Only one partition: the second entry is untouched. */
        canary_intact((const unsigned char *)&later.q[1], sizeof(later.q[1]),
                      "unused entry");
        canary_intact(later.canary, sizeof(later.canary), "later layout");

        /* Entries smaller than the first layout: nothing written. */
        memset(&old, 0xA5, sizeof(old));
        ck_assert_uint_eq(rbk_consumer_quarantined2(c, old.q, 1,
                                                    sizeof(old.q[0]) - 1),
                          0);
        canary_intact((const unsigned char *)&old, sizeof(old), "too small");
        ck_assert_uint_eq(rbk_consumer_quarantined2(c, NULL, 0,
                                                    sizeof(rbk_quarantine_t)),
                          1);
        ck_assert_uint_eq(rbk_consumer_quarantined2(NULL, NULL, 0,
                                                    sizeof(rbk_quarantine_t)),
                          0);
}

static rbk_verdict_t h_rec(const rbk_message_t *m, void *opaque) {
        cs_rec_add(opaque, m);
        return RBK_HANDLED;
}

static void qc_start_with(qc_t *q, cs_cluster_t *cl, const char *group,
                          const char *topic, const char *initial,
                          const char *recheck_ms) {
        q->conf = cs_conf(cl, group);
        if (initial)
                cs_set(q->conf, "rbk.consumer.initial.offset", initial);
        if (recheck_ms)
                cs_set(q->conf, "rbk.consumer.out.of.range.recheck.ms",
                       recheck_ms);
        q->evs = cs_events_new();
        q->rec = cs_rec_new();
        rbk_conf_set_hook(q->conf, cs_hook, q->evs);
        q->c = cs_consumer_subscribed(q->conf, topic);
        ck_assert_int_eq(rbk_consumer_start(q->c, h_rec, q->rec), RBK_OK);
}

static void qc_start(qc_t *q, cs_cluster_t *cl, const char *group,
                     const char *topic, const char *initial) {
        qc_start_with(q, cl, group, topic, initial, NULL);
}

static uint64_t disproved(rbk_consumer_t *c) {
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        ck_assert_int_eq(rbk_consumer_stats(c, &st), RBK_OK);
        return st.out_of_range_disproved;
}

static void qc_stop(qc_t *q) {
        rbk_consumer_stop(q->c);
        ck_assert_int_eq(rbk_consumer_close(q->c, 10000), RBK_OK);
        rbk_consumer_destroy(q->c);
        cs_rec_free(q->rec);
        cs_events_free(q->evs);
        rbk_conf_destroy(q->conf);
}

static int part_count(cs_rec_t *r, const char *topic, int p) {
        char pre[300];
        snprintf(pre, sizeof(pre), "%s/%d/", topic, p);
        int n = 0;
        g_mutex_lock(&r->lock);
        for (guint i = 0; i < r->log->len; i++)
                n += g_str_has_prefix(g_ptr_array_index(r->log, i), pre);
        g_mutex_unlock(&r->lock);
        return n;
}

/* ------------------------------------------------------------ beyond end */

START_TEST(beyond_log_end_quarantines_only_that_partition) {
        char e[512], key[512], meta[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-q", 3);
        for (int p = 0; p < 3; p++)
                cs_produce(cl, "t-q", p, 0, 10, "q");
        cs_commit(cl, "g-q", "t-q", 0, 0);
        cs_commit(cl, "g-q", "t-q", 1, 100); /* beyond the log end (10) */
        cs_commit(cl, "g-q", "t-q", 2, 0);

        qc_t q;
        qc_start(&q, cl, "g-q", "t-q", NULL);
        ck_assert(CS_WAIT(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              1,
                          60000));
        ck_assert(CS_WAIT(part_count(q.rec, "t-q", 0) == 10 &&
                              part_count(q.rec, "t-q", 2) == 10,
                          10000));
        rbk_event_t ev;
        ck_assert(cs_events_get(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE, 0, &ev, key,
                                sizeof(key)));
        ck_assert_int_eq(ev.severity, RBK_SEV_CRITICAL);
        ck_assert_int_eq(ev.partition, 1);
        ck_assert_int_eq(ev.offset, 100);
        ck_assert_int_eq(ev.committed_offset, 100);
        ck_assert_int_eq(ev.low_watermark, 0);
        ck_assert_int_eq(ev.high_watermark, 10);
        ck_assert_int_eq(ev.gap, 0);
        ck_assert_int_eq(ev.skip_if_latest, 10);
        ck_assert_int_eq(ev.replay_if_earliest, 10);
        ck_assert_int_eq(ev.repeat, 0);
        ck_assert_str_eq(key, "g-q/t-q/1/100");
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_INITIAL_POSITION), 0);

        /* Listed, counted, marked in the committed offset. */
        rbk_quarantine_t ql[4];
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, ql, 4), 1);
        ck_assert_str_eq(ql[0].topic, "t-q");
        ck_assert_int_eq(ql[0].partition, 1);
        ck_assert_int_eq(ql[0].failed_offset, 100);
        ck_assert_int_eq(ql[0].committed_offset, 100);
        ck_assert_int_eq(ql[0].high_watermark, 10);
        ck_assert_str_eq(ql[0].incident_key, "g-q/t-q/1/100");
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, NULL, 0), 1);
        check_quarantine_entry_sizes(q.c);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        rbk_consumer_stats(q.c, &st);
        ck_assert_uint_eq(st.quarantines, 1);
        ck_assert_uint_eq(st.quarantined_partitions, 1);
        ck_assert_int_eq(cs_committed(cl, "g-q", "t-q", 1, meta, sizeof(meta)),
                         100);
        ck_assert_str_eq(meta, "rbk-quarantine:g-q/t-q/1/100");
        char *js = rbk_consumer_stats_json(q.c);
        ck_assert_msg(strstr(js, "\"incident_key\":\"g-q/t-q/1/100\"") != NULL,
                      "%s", js);
        rbk_free(js);

        /* Others keep flowing; the quarantined partition stays still and the
         * hook does not fire again. */
        cs_produce(cl, "t-q", 0, 10, 5, "q");
        cs_produce(cl, "t-q", 1, 10, 5, "q");
        ck_assert(CS_WAIT(part_count(q.rec, "t-q", 0) == 15, 10000));
        ck_assert_int_eq(part_count(q.rec, "t-q", 1), 0);
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE), 1);

        /* Bad resolutions change nothing. */
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-q", 0,
                                              RBK_RESOLVE_EARLIEST, 0, e,
                                              sizeof(e)),
                         RBK_ERR_NOT_QUARANTINED);
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-q", 1, RBK_RESOLVE_OFFSET,
                                              50, e, sizeof(e)),
                         RBK_ERR_OUT_OF_RANGE);
        ck_assert_msg(strstr(e, "0..15") != NULL, "%s", e);
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-q", 1, RBK_RESOLVE_OFFSET,
                                              -3, e, sizeof(e)),
                         RBK_ERR_OUT_OF_RANGE);
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-q", 9,
                                              RBK_RESOLVE_EARLIEST, 0, e,
                                              sizeof(e)),
                         RBK_ERR_NOT_FOUND);
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "nope", 1,
                                              RBK_RESOLVE_EARLIEST, 0, e,
                                              sizeof(e)),
                         RBK_ERR_NOT_FOUND);
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, NULL, 0), 1);
        ck_assert_int_eq(cs_committed(cl, "g-q", "t-q", 1, NULL, 0), 100);

        /* Resolve to an explicit offset: resumes exactly there. */
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-q", 1, RBK_RESOLVE_OFFSET,
                                              4, e, sizeof(e)),
                         RBK_OK);
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, NULL, 0), 0);
        ck_assert(CS_WAIT(part_count(q.rec, "t-q", 1) == 11, 10000));
        ck_assert_int_eq(cs_rec_first(q.rec, "t-q", 1), 4);
        ck_assert_int_eq(q.rec->order_errors, 0);
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_QUARANTINE_RESOLVED), 1);
        ck_assert(cs_events_get(q.evs, RBK_EV_QUARANTINE_RESOLVED, 0, &ev, key,
                                sizeof(key)));
        ck_assert_str_eq(key, "g-q/t-q/1/100");
        ck_assert_int_eq(ev.offset, 4);
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-q", 1,
                                              RBK_RESOLVE_EARLIEST, 0, e,
                                              sizeof(e)),
                         RBK_ERR_NOT_QUARANTINED);
        rbk_consumer_stats(q.c, &st);
        ck_assert_uint_eq(st.resolutions, 1);
        qc_stop(&q);
        ck_assert_int_eq(cs_committed(cl, "g-q", "t-q", 1, NULL, 0), 15);

        /* After a restart the resolved position holds. */
        cs_produce(cl, "t-q", 1, 15, 3, "q");
        qc_start(&q, cl, "g-q", "t-q", NULL);
        ck_assert(CS_WAIT(part_count(q.rec, "t-q", 1) == 3, 60000));
        ck_assert_int_eq(cs_rec_first(q.rec, "t-q", 1), 15);
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE), 0);
        ck_assert_int_eq(part_count(q.rec, "t-q", 0), 0);
        qc_stop(&q);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ earliest/latest */

START_TEST(resolve_earliest_and_latest) {
        char e[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-el", 2);
        for (int p = 0; p < 2; p++) {
                cs_produce(cl, "t-el", p, 0, 10, "el");
                cs_commit(cl, "g-el", "t-el", p, 50);
        }
        qc_t q;
        qc_start(&q, cl, "g-el", "t-el", NULL);
        ck_assert(CS_WAIT(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              2,
                          60000));
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, NULL, 0), 2);
        /* Earliest for partition 0, while partition 1 stays quarantined,
         * by incident key as the operator tool does. */
        ck_assert_int_eq(rbk__consumer_resolve_by_incident(
                             q.c, "g-el/t-el/0/99", RBK_RESOLVE_EARLIEST, 0,
                             "ops", e, sizeof(e)),
                         RBK_ERR_NOT_FOUND);
        ck_assert_int_eq(rbk__consumer_resolve_by_incident(
                             q.c, "g-el/t-el/0/50", RBK_RESOLVE_EARLIEST, 0,
                             "ops@example", e, sizeof(e)),
                         RBK_OK);
        ck_assert_int_eq(rbk__consumer_resolve_by_incident(
                             q.c, "g-el/t-el/0/50", RBK_RESOLVE_EARLIEST, 0,
                             "ops@example", e, sizeof(e)),
                         RBK_ERR_ALREADY_RESOLVED);
        ck_assert(CS_WAIT(cs_events_count(q.evs, RBK_EV_QUARANTINE_RESOLVED) ==
                              1,
                          5000));
        g_mutex_lock(&q.evs->lock);
        const char *msg =
            ((cs_ev_t *)g_ptr_array_index(q.evs->evs, q.evs->evs->len - 1))
                ->message;
        ck_assert_msg(strstr(msg, "ops@example") != NULL, "%s", msg);
        g_mutex_unlock(&q.evs->lock);
        ck_assert(CS_WAIT(part_count(q.rec, "t-el", 0) == 10, 10000));
        ck_assert_int_eq(cs_rec_first(q.rec, "t-el", 0), 0);
        ck_assert_int_eq(part_count(q.rec, "t-el", 1), 0);
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, NULL, 0), 1);
        /* A report of offset 50 made before the re-assign took effect
         * (librdkafka versions no such report) reaches the library late:
         * it is stale and must not quarantine partition 0 again. */
        cs_inject_reset(q.c, "t-el", 0, 50);
        ck_assert(!CS_WAIT(rbk_consumer_quarantined(q.c, NULL, 0) != 1, 1500));
        /* The re-assign did not report partition 1 again. */
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE), 2);
        /* Latest for partition 1: only what comes after. */
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-el", 1,
                                              RBK_RESOLVE_LATEST, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert_int_eq(cs_committed(cl, "g-el", "t-el", 1, NULL, 0), 10);
        ck_assert(!CS_WAIT(part_count(q.rec, "t-el", 1) > 0, 500));
        cs_produce(cl, "t-el", 1, 10, 3, "el");
        ck_assert(CS_WAIT(part_count(q.rec, "t-el", 1) == 3, 10000));
        ck_assert_int_eq(cs_rec_first(q.rec, "t-el", 1), 10);
        /* Partition 0 kept its place through the second re-assign. */
        ck_assert_int_eq(part_count(q.rec, "t-el", 0), 10);
        /* Any other offset reported out of range is a new incident. */
        rbk_event_t ev;
        char key[256];
        cs_inject_reset(q.c, "t-el", 0, 77);
        ck_assert(CS_WAIT(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              3,
                          10000));
        ck_assert(cs_events_get(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE, 2, &ev, key,
                                sizeof(key)));
        ck_assert_str_eq(key, "g-el/t-el/0/77");
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, NULL, 0), 1);
        qc_stop(&q);
        ck_assert_int_eq(cs_committed(cl, "g-el", "t-el", 0, NULL, 0), 10);
        ck_assert_int_eq(cs_committed(cl, "g-el", "t-el", 1, NULL, 0), 13);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ fetch error */

/* Topic @topic of three partitions, partition p led by broker p + 1 alone;
 * 10, 10 and 5 messages, group @group committed at 5 on each. A consumer
 * of it (recheck_ms as qc_start_with()) is returned once partitions 0 and
 * 1 flow: the assignment is in place, and partition 2 waits at its end
 * (offset 5). Only then may broker 3, which leads only partition 2, fail
 * its next Fetch: an error pushed earlier could be spent on a Fetch of an
 * assignment that a slow group join replaces, and librdkafka drops such
 * outdated replies. */
static void fe_start(qc_t *q, cs_cluster_t *cl, const char *topic,
                     const char *group, const char *recheck_ms) {
        cs_topic(cl, topic, 3);
        for (int p = 0; p < 3; p++) {
                ck_assert_int_eq(rd_kafka_mock_partition_set_leader(
                                     cl->mc, topic, p, p + 1),
                                 0);
                cs_produce(cl, topic, p, 0, p == 2 ? 5 : 10, "fe");
                cs_commit(cl, group, topic, p, 5);
        }
        qc_start_with(q, cl, group, topic, NULL, recheck_ms);
        ck_assert(CS_WAIT(part_count(q->rec, topic, 0) == 5 &&
                              part_count(q->rec, topic, 1) == 5,
                          60000));
}

/* Broker 3 answers its next Fetch with OFFSET_OUT_OF_RANGE. */
static void fe_fail_next_fetch(cs_cluster_t *cl) {
        ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                             cl->mc, 3, 1 /* Fetch */, 1,
                             RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE, 0),
                         0);
}

/* Waits for the one page and reads it. */
static void fe_wait_page(qc_t *q, rbk_event_t *ev, char *key, size_t key_size) {
        ck_assert(CS_WAIT(cs_events_count(q->evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              1,
                          60000));
        ck_assert(cs_events_get(q->evs, RBK_EV_OFFSET_OUT_OF_RANGE, 0, ev, key,
                                key_size));
}

START_TEST(fetch_out_of_range_then_retry_committed) {
        char e[512], key[512];
        cs_cluster_t *cl = cs_cluster_new();
        qc_t q;
        /* Without the second look: the operator decides. */
        fe_start(&q, cl, "t-fe", "g-fe", "0");
        fe_fail_next_fetch(cl);
        rbk_event_t ev;
        fe_wait_page(&q, &ev, key, sizeof(key));
        ck_assert_int_eq(ev.partition, 2);
        ck_assert_int_eq(ev.offset, 5);
        ck_assert_int_eq(ev.committed_offset, 5);
        ck_assert_int_eq(ev.low_watermark, 0);
        ck_assert_int_eq(ev.high_watermark, 5);
        ck_assert_int_eq(ev.gap, 0);
        ck_assert_int_eq(ev.replay_if_earliest, 5);
        ck_assert_int_eq(ev.skip_if_latest, 0);
        ck_assert_str_eq(key, "g-fe/t-fe/2/5");
        /* Quarantined: what arrives now is held back. */
        cs_produce(cl, "t-fe", 2, 5, 5, "fe");
        ck_assert(!CS_WAIT(part_count(q.rec, "t-fe", 2) > 0, 500));
        /* The condition was transient: try the committed offset again. */
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-fe", 2,
                                              RBK_RESOLVE_COMMITTED, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(part_count(q.rec, "t-fe", 2) == 5, 10000));
        ck_assert_int_eq(cs_rec_first(q.rec, "t-fe", 2), 5);
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE), 1);
        ck_assert_uint_eq(disproved(q.c), 0);
        qc_stop(&q);
        for (int p = 0; p < 3; p++)
                ck_assert_int_eq(cs_committed(cl, "g-fe", "t-fe", p, NULL, 0),
                                 10);
        cs_cluster_destroy(cl);
}
END_TEST

/* The same fetch error with the library's defaults: the log is read again
 * before anyone is paged, holds the position, and the partition resumes
 * there: nothing skipped, nothing read twice, no page. A partition that
 * keeps being reported out of range pages at the fourth report in ten
 * minutes. */
START_TEST(disproved_out_of_range_resumes_in_place) {
        cs_cluster_t *cl = cs_cluster_new();
        qc_t q;
        fe_start(&q, cl, "t-dp", "g-dp", NULL);
        int64_t next = 5; /* partition 2's position */
        for (int round = 1; round <= 3; round++) {
                fe_fail_next_fetch(cl);
                ck_assert_msg(CS_WAIT(disproved(q.c) == (uint64_t)round, 60000),
                              "round %d: the report was not disproved", round);
                ck_assert_int_eq(
                    cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE), 0);
                /* Fetching again from the same position: what arrives is
                 * handled, from exactly there. */
                cs_produce(cl, "t-dp", 2, (int)next, 2, "fe");
                next += 2;
                ck_assert_msg(CS_WAIT(part_count(q.rec, "t-dp", 2) ==
                                          (int)(next - 5),
                                      30000),
                              "round %d: %d of partition 2 handled", round,
                              part_count(q.rec, "t-dp", 2));
        }
        ck_assert_int_eq(cs_rec_first(q.rec, "t-dp", 2), 5);
        ck_assert_uint_eq(cs_rec_total(q.rec), cs_rec_distinct(q.rec));
        /* The fourth report in the window pages. */
        fe_fail_next_fetch(cl);
        rbk_event_t ev;
        char key[512];
        fe_wait_page(&q, &ev, key, sizeof(key));
        ck_assert_int_eq(ev.partition, 2);
        ck_assert_int_eq(ev.offset, next);
        ck_assert_int_eq(ev.high_watermark, next);
        ck_assert_uint_eq(disproved(q.c), 3);
        rbk_quarantine_t qs[4];
        ck_assert_uint_eq(rbk_consumer_quarantined(q.c, qs, 4), 1);
        ck_assert_int_eq(qs[0].partition, 2);
        qc_stop(&q);
        ck_assert_int_eq(cs_committed(cl, "g-dp", "t-dp", 2, NULL, 0), next);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ new groups */

START_TEST(new_group_starts_at_initial_position) {
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-new", 2);
        for (int p = 0; p < 2; p++)
                cs_produce(cl, "t-new", p, 0, 5, "n");
        /* earliest (the default) */
        qc_t q;
        qc_start(&q, cl, "g-new-e", "t-new", NULL);
        ck_assert(CS_WAIT(cs_rec_distinct(q.rec) == 10, 60000));
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_INITIAL_POSITION), 2);
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE), 0);
        rbk_event_t ev;
        ck_assert(cs_events_get(q.evs, RBK_EV_INITIAL_POSITION, 0, &ev, NULL,
                                0));
        ck_assert_int_eq(ev.severity, RBK_SEV_INFO);
        ck_assert_int_eq(ev.offset, 0);
        ck_assert_int_eq(cs_rec_first(q.rec, "t-new", 0), 0);
        rbk_consumer_stats_t st = RBK_CONSUMER_STATS_INIT;
        rbk_consumer_stats(q.c, &st);
        ck_assert_uint_eq(st.initial_positions, 2);
        ck_assert_uint_eq(st.quarantines, 0);
        qc_stop(&q);

        /* latest: only what is produced afterwards; the position is
         * committed at once so a crash cannot skip what comes next. */
        qc_start(&q, cl, "g-new-l", "t-new", "latest");
        ck_assert(CS_WAIT(cs_events_count(q.evs, RBK_EV_INITIAL_POSITION) == 2,
                          60000));
        ck_assert_int_eq(cs_committed(cl, "g-new-l", "t-new", 0, NULL, 0), 5);
        cs_produce(cl, "t-new", 0, 5, 2, "n");
        ck_assert(CS_WAIT(cs_rec_distinct(q.rec) == 2, 10000));
        ck_assert_int_eq(cs_rec_first(q.rec, "t-new", 0), 5);
        qc_stop(&q);

        /* error: a new group is quarantined too. */
        qc_start(&q, cl, "g-new-x", "t-new", "error");
        ck_assert(CS_WAIT(cs_events_count(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              2,
                          60000));
        ck_assert(cs_events_get(q.evs, RBK_EV_OFFSET_OUT_OF_RANGE, 0, &ev, NULL,
                                0));
        ck_assert_int_eq(ev.committed_offset, RBK_NO_VALUE);
        ck_assert_int_eq(cs_events_count(q.evs, RBK_EV_INITIAL_POSITION), 0);
        char e[512];
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-new", 0,
                                              RBK_RESOLVE_COMMITTED, 0, e,
                                              sizeof(e)),
                         RBK_ERR_STATE);
        ck_assert_int_eq(rbk_consumer_resolve(q.c, "t-new", 0,
                                              RBK_RESOLVE_EARLIEST, 0, e,
                                              sizeof(e)),
                         RBK_OK);
        ck_assert(CS_WAIT(part_count(q.rec, "t-new", 0) == 7, 10000));
        ck_assert_int_eq(part_count(q.rec, "t-new", 1), 0);
        qc_stop(&q);
        cs_cluster_destroy(cl);
}
END_TEST

/* ------------------------------------------------------------ repeat */

START_TEST(next_owner_reports_the_same_incident_as_repeat) {
        char key1[512], key2[512];
        cs_cluster_t *cl = cs_cluster_new();
        cs_topic(cl, "t-rep", 1);
        cs_produce(cl, "t-rep", 0, 0, 10, "rp");
        cs_commit(cl, "g-rep", "t-rep", 0, 77);
        qc_t a;
        qc_start(&a, cl, "g-rep", "t-rep", NULL);
        ck_assert(CS_WAIT(cs_events_count(a.evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              1,
                          60000));
        rbk_event_t ev;
        ck_assert(cs_events_get(a.evs, RBK_EV_OFFSET_OUT_OF_RANGE, 0, &ev, key1,
                                sizeof(key1)));
        ck_assert_int_eq(ev.repeat, 0);
        qc_stop(&a); /* hands the partition back unresolved */

        /* Another consumer (its own hook history) takes it over. */
        qc_t b;
        qc_start(&b, cl, "g-rep", "t-rep", NULL);
        ck_assert(CS_WAIT(cs_events_count(b.evs, RBK_EV_OFFSET_OUT_OF_RANGE) ==
                              1,
                          60000));
        ck_assert(cs_events_get(b.evs, RBK_EV_OFFSET_OUT_OF_RANGE, 0, &ev, key2,
                                sizeof(key2)));
        ck_assert_str_eq(key2, key1);
        ck_assert_int_eq(ev.repeat, 1);
        ck_assert_int_eq(ev.offset, 77);
        ck_assert_int_eq(cs_rec_distinct(b.rec), 0);
        qc_stop(&b);
        cs_cluster_destroy(cl);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("quarantine");
        RBK_TCASE(s, beyond_log_end_quarantines_only_that_partition, 180);
        RBK_TCASE(s, resolve_earliest_and_latest, 180);
        RBK_TCASE(s, fetch_out_of_range_then_retry_committed, 180);
        RBK_TCASE(s, disproved_out_of_range_resumes_in_place, 180);
        RBK_TCASE(s, new_group_starts_at_initial_position, 180);
        RBK_TCASE(s, next_owner_reports_the_same_incident_as_repeat, 180);
        return s;
}

RBK_TEST_MAIN()
