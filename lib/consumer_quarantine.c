/* Never an automatic offset reset: a partition whose position is out of
 * range is quarantined (held back alone, the hook paged) until an operator
 * resolves it; a partition of a group that never committed starts at
 * rbk.consumer.initial.offset instead (not an incident).
 *
 * librdkafka 2.0.2 with auto.offset.reset=error reports the partition with
 * an _AUTO_OFFSET_RESET message and stops fetching it; seeking it then fails
 * with _STATE (still so in 2.8), so every change of position here is a
 * re-assign with an explicit commit (rbk__assign_move()).
 *
 * Messages fetched before the failed position are valid data: the
 * partition keeps handing them out, in order, and is quarantined only once
 * none is left (rbk__part_drained()), so the page's numbers count from the
 * first offset not handled.
 *
 * A report is checked before it pages (rbk.consumer.out.of.range.recheck.ms
 * later): the partition's watermarks are queried again, and when the log
 * holds the failed position after all (lo <= failed <= hi) the report was
 * a broker's that is behind the log (a leader that lost its leadership and
 * still answers, a broker back from a network cut). The partition is then
 * re-assigned at that same position: nothing is rewound or skipped, so
 * this is no offset reset. Only when every message below the position was
 * handled and nothing holds the partition; at most RBK__OOR_DISPROVED_MAX
 * times per partition in RBK__OOR_WINDOW_MS, then it pages.
 *
 * Repeats across processes: when quarantining, the committed offset is
 * committed again with the metadata "rbk-quarantine:<incident key>"; the
 * next owner of the partition reads it back with rd_kafka_committed() and
 * reports the same incident as a repeat. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer_internal.h"
#include "incident.h"

#define RBK__QUERY_TIMEOUT_MS 5000
#define RBK__RESOLVE_WAIT_MS 30000
#define RBK__COMMIT_TIMEOUT_MS 10000
/* Disproved reports of one partition resumed in place per
 * RBK__OOR_WINDOW_MS; the next one pages. */
#define RBK__OOR_DISPROVED_MAX 3

static void rbk__reset_free(rbk__reset_t *r) {
        rbk__part_unref(r->part);
        g_free(r->reason);
        g_free(r);
}

void rbk__q_on_reset(rbk_consumer_t *c, const rd_kafka_message_t *rkm) {
        const char *topic = rd_kafka_topic_name(rkm->rkt);
        g_mutex_lock(&c->lock);
        rbk__part_t *p = rbk__part_find(c, topic, rkm->partition);
        if (!p || !rbk__part_out_of_range(c, p, rkm->offset)) {
                /* Not ours, the incident already known, or a report made
                 * before the partition's current position. */
                g_mutex_unlock(&c->lock);
                if (p)
                        rbk__log(c->hooks, 7, "quarantine",
                                 "%s [%" PRId32 "]: ignoring a stale report "
                                 "of offset %" PRId64,
                                 p->utopic, rkm->partition, rkm->offset);
                return;
        }
        for (guint i = 0; i < c->resets->len; i++) {
                rbk__reset_t *r = g_ptr_array_index(c->resets, i);
                if (r->part == p) {
                        g_mutex_unlock(&c->lock);
                        return;
                }
        }
        rbk__reset_t *r = g_new0(rbk__reset_t, 1);
        r->part = rbk__part_ref(p);
        r->assign_gen = p->assign_gen;
        r->failed_offset = rkm->offset;
        r->reason = g_strdup(rd_kafka_message_errstr(rkm));
        g_ptr_array_add(c->resets, r);
        g_mutex_unlock(&c->lock);
        rbk__log(c->hooks, 6, "quarantine",
                 "%s [%" PRId32 "]: no valid position (offset %" PRId64
                 "): %s",
                 p->utopic, rkm->partition, rkm->offset, r->reason);
}

void rbk__q_clear_resets(rbk_consumer_t *c, int only_detached) {
        g_mutex_lock(&c->lock);
        for (guint i = 0; i < c->resets->len;) {
                rbk__reset_t *r = g_ptr_array_index(c->resets, i);
                if (only_detached && r->part->assigned && !r->part->revoking) {
                        i++;
                        continue;
                }
                g_ptr_array_remove_index(c->resets, i);
                rbk__reset_free(r);
        }
        g_mutex_unlock(&c->lock);
}

/* Estimates for the hook (see docs/operations.md), from the first offset
 * not handled @u: what resolving to earliest or latest skips or replays. */
static void rbk__q_estimates(int64_t u, int64_t lo, int64_t hi,
                             rbk_event_t *ev) {
        if (u < 0 || lo < 0 || hi < 0)
                return;
        if (u < lo) { /* retention went past us: lo - u are gone */
                ev->gap = lo - u;
                ev->replay_if_earliest = 0;
                ev->skip_if_latest = hi - u;
        } else if (u > hi) { /* beyond the log end: the log is not ours */
                ev->gap = 0;
                ev->replay_if_earliest = hi - lo;
                ev->skip_if_latest = hi - lo;
        } else { /* within: a transient fetch error */
                ev->gap = 0;
                ev->replay_if_earliest = u - lo;
                ev->skip_if_latest = hi - u;
        }
}

/* Pages p's incident. @lo and @hi: the partition's watermarks if the
 * caller has just read them, else RBK_NO_VALUE (they are read here). */
static void rbk__quarantine(rbk_consumer_t *c, rbk__part_t *p, int64_t failed,
                            int64_t committed, const char *metadata,
                            const char *reason, int64_t lo, int64_t hi) {
        if ((lo == RBK_NO_VALUE || hi == RBK_NO_VALUE) &&
            rd_kafka_query_watermark_offsets(c->rk, p->topic, p->partition, &lo,
                                             &hi, RBK__QUERY_TIMEOUT_MS)) {
                lo = RBK_NO_VALUE;
                hi = RBK_NO_VALUE;
        }
        char *key = rbk__incident_key(RBK__INCIDENT_QUARANTINE, c->ugroup,
                                      p->utopic, p->partition, failed);
        char *marker = rbk__meta_quarantine(key);
        int marked = metadata && !strcmp(metadata, marker);

        g_mutex_lock(&c->lock);
        if (!p->assigned || p->revoking) {
                g_mutex_unlock(&c->lock);
                g_free(marker);
                g_free(key);
                return;
        }
        int repeat =
            marked || g_hash_table_contains(c->reported_keys, key);
        rbk_quarantine_t q;
        memset(&q, 0, sizeof(q));
        g_strlcpy(q.topic, p->utopic, sizeof(q.topic));
        q.partition = p->partition;
        q.failed_offset = failed;
        q.committed_offset = committed >= 0 ? committed : RBK_NO_VALUE;
        q.low_watermark = lo;
        q.high_watermark = hi;
        g_strlcpy(q.incident_key, key, sizeof(q.incident_key));
        int64_t unhandled = rbk__part_first_unhandled(p);
        if (unhandled < 0)
                unhandled = failed >= 0 ? failed : committed;
        rbk__part_quarantine(c, p, &q, unhandled);
        g_hash_table_add(c->reported_keys, g_strdup(key));
        if (c->resolved_keys)
                g_hash_table_remove(c->resolved_keys, key);
        g_mutex_unlock(&c->lock);

        /* The marker lets the next owner (any process) see the repeat. */
        if (committed >= 0 && !marked) {
                char *metas[1] = {marker};
                rd_kafka_resp_err_t err =
                    rbk__commit_explicit(c, &p, &committed, metas, 1);
                if (err)
                        rbk__log(c->hooks, 4, "quarantine",
                                 "could not mark incident %s in the "
                                 "committed offset: %s",
                                 key, rd_kafka_err2str(err));
        }

        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_OFFSET_OUT_OF_RANGE, RBK_SEV_CRITICAL);
        ev.kafka_err = RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET;
        ev.err = RBK_ERR_OUT_OF_RANGE;
        ev.incident_key = key;
        ev.repeat = repeat;
        ev.topic = p->topic;
        ev.partition = p->partition;
        ev.offset = failed;
        ev.committed_offset = committed >= 0 ? committed : RBK_NO_VALUE;
        ev.low_watermark = lo;
        ev.high_watermark = hi;
        ev.first_unhandled = unhandled >= 0 ? unhandled : RBK_NO_VALUE;
        rbk__q_estimates(unhandled, lo, hi, &ev);
        char *msg = g_strdup_printf(
            "partition %s [%" PRId32 "] of group %s quarantined: offset "
            "%" PRId64 " is out of range (log %" PRId64 "..%" PRId64
            ", committed %" PRId64 ", first unhandled %" PRId64
            ")%s; nothing of this partition is "
            "consumed until it is resolved (rbk_consumer_resolve, rbk-admin): "
            "%s",
            p->utopic, p->partition, c->ugroup, failed, lo, hi,
            committed >= 0 ? committed : (int64_t)RBK_NO_VALUE,
            unhandled >= 0 ? unhandled : (int64_t)RBK_NO_VALUE,
            repeat ? " [repeat]" : "", reason ? reason : "");
        ev.message = msg;
        rbk__consumer_emit(c, &ev);
        g_free(msg);
        g_free(marker);
        g_free(key);
}

static void rbk__emit_initial(rbk_consumer_t *c, rbk__part_t *p,
                              int64_t offset, int64_t lo, int64_t hi) {
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_INITIAL_POSITION, RBK_SEV_INFO);
        char *msg = g_strdup_printf(
            "group %s has no committed offset for %s [%" PRId32
            "]: starting at %s (offset %" PRId64
            ") as rbk.consumer.initial.offset says",
            c->ugroup, p->utopic, p->partition, c->initial_offset, offset);
        ev.topic = p->topic;
        ev.partition = p->partition;
        ev.offset = offset;
        ev.low_watermark = lo;
        ev.high_watermark = hi;
        ev.message = msg;
        rbk__consumer_emit(c, &ev);
        g_free(msg);
}

/* 1 when the report of p's position @failed as out of range is disproved
 * and p may resume there: the log, read again, holds it (lo <= failed <=
 * hi), every message below it was handled, nothing holds p, and p has not
 * had RBK__OOR_DISPROVED_MAX such reports in RBK__OOR_WINDOW_MS. Counts
 * and logs it. *lop and *hip: the watermarks read (for the page when it is
 * not disproved), RBK_NO_VALUE when they could not be read. */
static int rbk__q_disproved(rbk_consumer_t *c, rbk__part_t *p, int64_t failed,
                            int64_t now, int64_t *lop, int64_t *hip) {
        int64_t lo = -1, hi = -1;
        *lop = *hip = RBK_NO_VALUE;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            c->rk, p->topic, p->partition, &lo, &hi, RBK__QUERY_TIMEOUT_MS);
        if (err) {
                rbk__log(c->hooks, 4, "quarantine",
                         "%s [%" PRId32 "]: offset %" PRId64 " was reported "
                         "out of range and the log could not be read again "
                         "(%s): paging",
                         p->utopic, p->partition, failed, rd_kafka_err2str(err));
                return 0;
        }
        *lop = lo;
        *hip = hi;
        if (failed < lo || failed > hi)
                return 0; /* a real one */
        g_mutex_lock(&c->lock);
        int n = 0;
        int ok = p->assigned && !p->revoking && !p->quarantined &&
                 p->hold == RBK__HOLD_NONE &&
                 rbk__part_first_unhandled(p) == failed;
        if (ok) {
                n = rbk__part_oor_disproved(p, now);
                ok = n <= RBK__OOR_DISPROVED_MAX;
        }
        if (ok)
                c->oor_disproved++;
        g_mutex_unlock(&c->lock);
        if (ok)
                rbk__log(c->hooks, 4, "quarantine",
                         "%s [%" PRId32 "]: offset %" PRId64 " was reported "
                         "out of range, but the log holds it (%" PRId64
                         "..%" PRId64 "): the answer came from a broker "
                         "behind the log; resuming at %" PRId64
                         " (nothing skipped or read again; %d such report%s "
                         "in %d minutes)",
                         p->utopic, p->partition, failed, lo, hi, failed, n,
                         n == 1 ? "" : "s", RBK__OOR_WINDOW_MS / 60000);
        else if (n > RBK__OOR_DISPROVED_MAX)
                rbk__log(c->hooks, 3, "quarantine",
                         "%s [%" PRId32 "]: offset %" PRId64 " reported out "
                         "of range again, %d times in %d minutes though the "
                         "log holds it: paging",
                         p->utopic, p->partition, failed, n,
                         RBK__OOR_WINDOW_MS / 60000);
        return ok;
}

void rbk__q_process_resets(rbk_consumer_t *c) {
        int64_t now = rbk__now_ms();
        GPtrArray *due = g_ptr_array_new();
        g_mutex_lock(&c->lock);
        for (guint i = 0; i < c->resets->len;) {
                rbk__reset_t *r = g_ptr_array_index(c->resets, i);
                if (!r->part->assigned ||
                    r->part->assign_gen != r->assign_gen) {
                        /* Made before the partition's current assignment:
                         * it changes nothing. */
                        g_ptr_array_remove_index(c->resets, i);
                        rbk__reset_free(r);
                } else if (r->next_try_ms <= now &&
                           rbk__part_drained(r->part)) {
                        /* Every message fetched below the failed position
                         * was handled (or the partition is held). */
                        if (r->failed_offset >= 0 && c->oor_recheck_ms > 0 &&
                            !r->rechecked) {
                                /* Read the log again before paging. */
                                r->rechecked = 1;
                                r->next_try_ms = now + c->oor_recheck_ms;
                                i++;
                                continue;
                        }
                        g_ptr_array_remove_index(c->resets, i);
                        g_ptr_array_add(due, r);
                } else {
                        i++;
                }
        }
        g_mutex_unlock(&c->lock);
        if (!due->len) {
                g_ptr_array_free(due, TRUE);
                return;
        }

        /* What was handled before the failed position is committed first:
         * the incident's committed offset is then the first unhandled one,
         * and the marker commit below never moves it back. */
        rbk__consumer_commit_stored(c, RBK__COMMIT_TIMEOUT_MS);
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new((int)due->len);
        for (guint i = 0; i < due->len; i++) {
                rbk__reset_t *r = g_ptr_array_index(due, i);
                rd_kafka_topic_partition_list_add(l, r->part->topic,
                                                  r->part->partition);
        }
        rd_kafka_resp_err_t qerr =
            rd_kafka_committed(c->rk, l, RBK__QUERY_TIMEOUT_MS);

        GPtrArray *init = g_ptr_array_new(); /* rbk__part_t* (borrowed) */
        GPtrArray *init_r = g_ptr_array_new(); /* their reports */
        GArray *init_off = g_array_new(FALSE, FALSE, sizeof(int64_t));
        GArray *init_lo = g_array_new(FALSE, FALSE, sizeof(int64_t));
        GArray *init_hi = g_array_new(FALSE, FALSE, sizeof(int64_t));
        GPtrArray *again = g_ptr_array_new(); /* rbk__reset_t* to retry */
        GPtrArray *keep = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__reset_free);
        /* Resumed where they are: a commit appeared, or the log holds the
         * reported position. */
        GPtrArray *resume = g_ptr_array_new();
        GPtrArray *resume_r = g_ptr_array_new(); /* their reports */
        GArray *resume_off = g_array_new(FALSE, FALSE, sizeof(int64_t));

        for (guint i = 0; i < due->len; i++) {
                rbk__reset_t *r = g_ptr_array_index(due, i);
                rbk__part_t *p = r->part;
                g_ptr_array_add(keep, r);
                if (!p->assigned || p->revoking)
                        continue;
                rd_kafka_topic_partition_t *t =
                    rd_kafka_topic_partition_list_find(l, p->topic,
                                                       p->partition);
                int known = !qerr && t && !t->err;
                if (!known && ++r->tries < 5) {
                        r->next_try_ms = now + 1000;
                        g_ptr_array_add(again, r);
                        continue;
                }
                int64_t committed = known ? t->offset : RBK_NO_VALUE;
                const char *meta = known && t->metadata && t->metadata_size
                                       ? (const char *)t->metadata
                                       : NULL;
                char *metabuf = meta ? g_strndup(meta, t->metadata_size) : NULL;
                if (known && r->failed_offset < 0 && committed < 0 &&
                    strcmp(c->initial_offset, "error")) {
                        int64_t lo, hi;
                        if (rd_kafka_query_watermark_offsets(
                                c->rk, p->topic, p->partition, &lo, &hi,
                                RBK__QUERY_TIMEOUT_MS)) {
                                if (++r->tries < 5) {
                                        r->next_try_ms = now + 1000;
                                        g_ptr_array_add(again, r);
                                }
                                g_free(metabuf);
                                continue;
                        }
                        int64_t off =
                            !strcmp(c->initial_offset, "latest") ? hi : lo;
                        g_ptr_array_add(init, p);
                        g_ptr_array_add(init_r, r);
                        g_array_append_val(init_off, off);
                        g_array_append_val(init_lo, lo);
                        g_array_append_val(init_hi, hi);
                } else if (known && r->failed_offset < 0 && committed >= 0) {
                        /* A commit appeared since librdkafka looked: resume
                         * there (nothing was skipped). */
                        g_ptr_array_add(resume, p);
                        g_ptr_array_add(resume_r, r);
                        g_array_append_val(resume_off, committed);
                } else {
                        /* Read again (the second look) or not yet read. */
                        int64_t lo = RBK_NO_VALUE, hi = RBK_NO_VALUE;
                        if (r->rechecked &&
                            (r->disproved ||
                             rbk__q_disproved(c, p, r->failed_offset, now, &lo,
                                              &hi))) {
                                /* The log holds the position: resume
                                 * there (a failed resume is tried again,
                                 * not counted again). */
                                r->disproved = 1;
                                g_ptr_array_add(resume, p);
                                g_ptr_array_add(resume_r, r);
                                g_array_append_val(resume_off,
                                                   r->failed_offset);
                        } else {
                                rbk__quarantine(c, p, r->failed_offset,
                                                committed, metabuf, r->reason,
                                                lo, hi);
                        }
                }
                g_free(metabuf);
        }
        rd_kafka_topic_partition_list_destroy(l);

        if (init->len) {
                char **metas = g_new0(char *, init->len + 1);
                for (guint i = 0; i < init->len; i++)
                        metas[i] = rbk__meta_initial(c->initial_offset);
                rd_kafka_resp_err_t err = rbk__assign_move(
                    c, (rbk__part_t **)init->pdata,
                    (int64_t *)(void *)init_off->data, metas, init->len);
                g_strfreev(metas);
                for (guint i = 0; i < init->len; i++) {
                        rbk__part_t *p = g_ptr_array_index(init, i);
                        if (err) {
                                /* Try again shortly; after five failures
                                 * page someone rather than stay silent. */
                                rbk__reset_t *r = g_ptr_array_index(init_r, i);
                                rbk__log(c->hooks, 3, "quarantine",
                                         "%s [%" PRId32
                                         "]: applying the initial position "
                                         "failed: %s",
                                         p->utopic, p->partition,
                                         rd_kafka_err2str(err));
                                if (++r->tries < 5) {
                                        r->next_try_ms = now + 1000;
                                        g_ptr_array_add(again, r);
                                } else {
                                        rbk__quarantine(
                                            c, p, r->failed_offset,
                                            RBK_NO_VALUE, NULL,
                                            "the initial position could not "
                                            "be committed",
                                            RBK_NO_VALUE, RBK_NO_VALUE);
                                }
                                continue;
                        }
                        g_mutex_lock(&c->lock);
                        c->initial_positions++;
                        g_mutex_unlock(&c->lock);
                        rbk__emit_initial(c, p,
                                          g_array_index(init_off, int64_t, i),
                                          g_array_index(init_lo, int64_t, i),
                                          g_array_index(init_hi, int64_t, i));
                }
        }
        rd_kafka_resp_err_t rerr =
            resume->len ? rbk__assign_move(c, (rbk__part_t **)resume->pdata,
                                           (int64_t *)(void *)resume_off->data,
                                           NULL, resume->len)
                        : RD_KAFKA_RESP_ERR_NO_ERROR;
        /* Closing (_DESTROY): the assignment is not changed any more. */
        if (rerr == RD_KAFKA_RESP_ERR__DESTROY)
                rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        for (guint i = 0; rerr && i < resume->len; i++) {
                /* The re-assign failed and the partition is not fetched:
                 * try again shortly; after five failures page someone
                 * rather than leave it stopped. */
                rbk__part_t *p = g_ptr_array_index(resume, i);
                rbk__reset_t *r = g_ptr_array_index(resume_r, i);
                rbk__log(c->hooks, 3, "quarantine",
                         "%s [%" PRId32 "]: resuming at offset %" PRId64
                         " failed: %s",
                         p->utopic, p->partition,
                         g_array_index(resume_off, int64_t, i),
                         rd_kafka_err2str(rerr));
                if (++r->tries < 5) {
                        r->next_try_ms = now + 1000;
                        g_ptr_array_add(again, r);
                } else {
                        rbk__quarantine(c, p, r->failed_offset, RBK_NO_VALUE,
                                        NULL,
                                        "resuming at the position failed "
                                        "five times",
                                        RBK_NO_VALUE, RBK_NO_VALUE);
                }
        }

        /* Retries go back on the queue (keep must not free them). */
        g_mutex_lock(&c->lock);
        for (guint i = 0; i < again->len; i++) {
                rbk__reset_t *r = g_ptr_array_index(again, i);
                g_ptr_array_remove_fast(keep, r);
                g_ptr_array_add(c->resets, r);
        }
        g_mutex_unlock(&c->lock);
        g_ptr_array_free(again, TRUE);
        g_ptr_array_free(keep, TRUE);
        g_ptr_array_free(init, TRUE);
        g_ptr_array_free(init_r, TRUE);
        g_array_free(init_off, TRUE);
        g_array_free(init_lo, TRUE);
        g_array_free(init_hi, TRUE);
        g_ptr_array_free(resume, TRUE);
        g_ptr_array_free(resume_r, TRUE);
        g_array_free(resume_off, TRUE);
        g_ptr_array_free(due, TRUE);
}

/* ------------------------------------------------------------ resolve */

static void rbk__emit_resolved(rbk_consumer_t *c, rbk__part_t *p,
                               const char *key, rbk_resolve_t how,
                               int64_t chosen, int64_t lo, int64_t hi,
                               int64_t committed, const char *by) {
        char *msg = g_strdup_printf(
            "incident %s resolved by %s: %s, %s [%" PRId32
            "] resumes at offset %" PRId64 " (log %" PRId64 "..%" PRId64
            ", previously committed %" PRId64 ")",
            key, by, rbk__resolve_name(how), p->utopic, p->partition, chosen, lo,
            hi, committed);
        rbk__log(c->hooks, 5, "quarantine", "%s", msg);
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_QUARANTINE_RESOLVED, RBK_SEV_INFO);
        ev.topic = p->topic;
        ev.partition = p->partition;
        ev.offset = chosen;
        ev.committed_offset = committed;
        ev.low_watermark = lo;
        ev.high_watermark = hi;
        ev.incident_key = key;
        ev.message = msg;
        rbk__consumer_emit(c, &ev);
        g_free(msg);
}

/* Executes a resolution. Poll thread (holds poll_mu), c->lock not held. */
static rbk_err_t rbk__do_resolve(rbk_consumer_t *c, rbk__req_t *req) {
        char *es = req->errstr;
        size_t esz = sizeof(req->errstr);
        const char *by = req->applied_by ? req->applied_by : "api";
        g_mutex_lock(&c->lock);
        rbk__part_t *p = req->incident_key
                             ? rbk__part_find_incident(c, req->incident_key)
                             : rbk__part_find(c, req->topic, req->partition);
        if (!p || !p->assigned || p->revoking) {
                int gone = req->incident_key && c->resolved_keys &&
                           g_hash_table_contains(c->resolved_keys,
                                                 req->incident_key);
                g_mutex_unlock(&c->lock);
                if (gone)
                        return rbk__seterr(es, esz, RBK_ERR_ALREADY_RESOLVED,
                                           "incident %s was already resolved",
                                           req->incident_key);
                if (req->incident_key)
                        return rbk__seterr(es, esz, RBK_ERR_NOT_FOUND,
                                           "no partition of this consumer has "
                                           "incident %s",
                                           req->incident_key);
                return rbk__seterr(
                    es, esz, RBK_ERR_NOT_FOUND,
                    "%s [%" PRId32 "] is not assigned to this consumer",
                    rbk__unprefixed(c->prefix, req->topic), req->partition);
        }
        rbk_err_t rerr = rbk__part_resolvable(p, es, esz);
        if (rerr) {
                g_mutex_unlock(&c->lock);
                return rerr;
        }
        rbk__part_ref(p);
        int quarantined = p->quarantined;
        rbk_quarantine_t q = p->q;
        char *key = quarantined ? g_strdup(p->q.incident_key)
                                : rbk__part_hold_key(c, p);
        int64_t committed = quarantined ? q.committed_offset
                            : p->committed >= 0 ? p->committed
                                                : RBK_NO_VALUE;
        g_mutex_unlock(&c->lock);

        rbk_err_t ret = RBK_OK;
        if (!quarantined && req->how == RBK_RESOLVE_COMMITTED) {
                /* A held partition: hand the same message again. */
                g_mutex_lock(&c->lock);
                int64_t off = rbk__part_position(p);
                rbk__part_release_hold(c, p);
                c->resolutions++;
                g_mutex_unlock(&c->lock);
                rbk__emit_resolved(c, p, key, req->how, off, RBK_NO_VALUE,
                                   RBK_NO_VALUE, committed, by);
                goto out;
        }

        int64_t lo, hi;
        rd_kafka_resp_err_t err;
        if ((ret = rbk__assign_watermarks(c, p, &lo, &hi, es, esz)))
                goto out;
        int64_t chosen;
        switch (req->how) {
        case RBK_RESOLVE_EARLIEST:
                chosen = lo;
                break;
        case RBK_RESOLVE_LATEST:
                chosen = hi;
                break;
        case RBK_RESOLVE_COMMITTED:
                if (committed < 0) {
                        ret = rbk__seterr(
                            es, esz, RBK_ERR_STATE,
                            "%s [%" PRId32 "] has no committed offset; "
                            "choose earliest, latest or an offset",
                            p->utopic, p->partition);
                        goto out;
                }
                chosen = committed;
                break;
        default:
                if (req->offset < lo || req->offset > hi) {
                        ret = rbk__seterr(
                            es, esz, RBK_ERR_OUT_OF_RANGE,
                            "offset %" PRId64 " is outside %s [%" PRId32
                            "]'s watermarks %" PRId64 "..%" PRId64,
                            req->offset, p->utopic, p->partition, lo, hi);
                        goto out;
                }
                chosen = req->offset;
                break;
        }

        char *meta = rbk__meta_resolved(req->how, key);
        char *metas[1] = {meta};
        /* The partition is held back until after the re-assign. */
        err = rbk__assign_move(c, &p, &chosen, metas, 1);
        g_free(meta);
        if (err) {
                ret = rbk__seterr(es, esz, RBK_ERR_KAFKA,
                                  "resolving %s [%" PRId32 "] failed: %s",
                                  p->utopic, p->partition,
                                  rd_kafka_err2str(err));
                goto out;
        }
        g_mutex_lock(&c->lock);
        if (quarantined && q.failed_offset >= 0 && chosen != q.failed_offset)
                rbk__part_note_resolved(p, q.failed_offset);
        c->resolutions++;
        if (!c->resolved_keys)
                c->resolved_keys = g_hash_table_new_full(
                    g_str_hash, g_str_equal, g_free, NULL);
        g_hash_table_add(c->resolved_keys, g_strdup(key));
        g_mutex_unlock(&c->lock);
        rbk__emit_resolved(c, p, key, req->how, chosen, lo, hi, committed, by);
out:
        g_free(key);
        rbk__part_unref(p);
        return ret;
}

static rbk_err_t rbk__do_request(rbk_consumer_t *c, rbk__req_t *req) {
        return req->kind == RBK__REQ_SEEK ? rbk__assign_seek(c, req)
                                          : rbk__do_resolve(c, req);
}

void rbk__q_process_requests(rbk_consumer_t *c) {
        for (;;) {
                g_mutex_lock(&c->lock);
                rbk__req_t *req = NULL;
                for (GList *l = c->requests.head; l; l = l->next) {
                        rbk__req_t *r = l->data;
                        if (!r->taken) {
                                req = r;
                                break;
                        }
                }
                if (req)
                        req->taken = 1;
                g_mutex_unlock(&c->lock);
                if (!req)
                        return;
                rbk_err_t err = rbk__do_request(c, req);
                g_mutex_lock(&c->lock);
                req->err = err;
                req->done = 1;
                g_queue_remove(&c->requests, req);
                g_cond_broadcast(&c->cond);
                g_mutex_unlock(&c->lock);
        }
}

void rbk__q_fail_requests(rbk_consumer_t *c) {
        for (GList *l = c->requests.head; l;) {
                GList *next = l->next;
                rbk__req_t *r = l->data;
                if (!r->taken) {
                        r->err = RBK_ERR_SHUTDOWN;
                        g_strlcpy(r->errstr, "consumer is closed",
                                  sizeof(r->errstr));
                        r->done = 1;
                        g_queue_delete_link(&c->requests, l);
                }
                l = next;
        }
        g_cond_broadcast(&c->cond);
}

/* Runs a request on the poll thread: directly when called on it, else
 * queued; when nobody polls, the caller becomes the poll thread for it. */
rbk_err_t rbk__consumer_submit(rbk_consumer_t *c, rbk__req_t *req) {
        if (rbk__tl_poller == c)
                return rbk__do_request(c, req);
        int64_t deadline = rbk__now_ms() + RBK__RESOLVE_WAIT_MS;
        g_mutex_lock(&c->lock);
        if (c->closed) {
                g_mutex_unlock(&c->lock);
                return rbk__seterr(req->errstr, sizeof(req->errstr),
                                   RBK_ERR_SHUTDOWN, "consumer is closed");
        }
        g_queue_push_tail(&c->requests, req);
        while (!req->done) {
                if (!req->taken && rbk__now_ms() >= deadline) {
                        g_queue_remove(&c->requests, req);
                        g_mutex_unlock(&c->lock);
                        return rbk__seterr(req->errstr, sizeof(req->errstr),
                                           RBK_ERR_TIMED_OUT,
                                           "the consumer's poll thread did "
                                           "not serve the request in time");
                }
                if (!req->taken && g_mutex_trylock(&c->poll_mu)) {
                        g_mutex_unlock(&c->lock);
                        rbk__tl_poller = c;
                        rbk__q_process_requests(c);
                        rbk__tl_poller = NULL;
                        g_mutex_unlock(&c->poll_mu);
                        g_mutex_lock(&c->lock);
                        continue;
                }
                rbk__consumer_wait(c, g_get_monotonic_time() +
                                      50 * G_TIME_SPAN_MILLISECOND);
        }
        g_mutex_unlock(&c->lock);
        return req->err;
}

static rbk_err_t rbk__resolve_common(rbk_consumer_t *c, rbk__req_t *req,
                                     char *errstr, size_t errstr_size) {
        if (req->how < RBK_RESOLVE_EARLIEST || req->how > RBK_RESOLVE_OFFSET)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "unknown resolution %d", (int)req->how);
        if (rbk__forked(c->pid))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_FORKED,
                                   "consumer used in a forked child");
        rbk_err_t err = rbk__consumer_submit(c, req);
        if (err && errstr && errstr_size)
                g_strlcpy(errstr, req->errstr, errstr_size);
        return err;
}

rbk_err_t rbk__consumer_resolve(rbk_consumer_t *c, const char *topic,
                                int32_t partition, rbk_resolve_t how,
                                int64_t offset, const char *applied_by,
                                char *errstr, size_t errstr_size) {
        if (!c || !topic)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "%s is NULL", c ? "topic" : "consumer");
        rbk__req_t req;
        memset(&req, 0, sizeof(req));
        req.topic = rbk__prefixed(c->prefix, topic);
        req.partition = partition;
        req.how = how;
        req.offset = offset;
        req.applied_by = (char *)applied_by;
        rbk_err_t err = rbk__resolve_common(c, &req, errstr, errstr_size);
        g_free(req.topic);
        return err;
}

rbk_err_t rbk__consumer_resolve_by_incident(rbk_consumer_t *c,
                                            const char *incident_key,
                                            rbk_resolve_t how, int64_t offset,
                                            const char *applied_by,
                                            char *errstr, size_t errstr_size) {
        if (!c || !incident_key)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "%s is NULL",
                                   c ? "incident key" : "consumer");
        rbk__req_t req;
        memset(&req, 0, sizeof(req));
        req.incident_key = (char *)incident_key;
        req.how = how;
        req.offset = offset;
        req.applied_by = (char *)applied_by;
        return rbk__resolve_common(c, &req, errstr, errstr_size);
}

rbk_err_t rbk_consumer_resolve(rbk_consumer_t *c, const char *topic,
                               int32_t partition, rbk_resolve_t how,
                               int64_t offset, char *errstr,
                               size_t errstr_size) {
        return rbk__consumer_resolve(c, topic, partition, how, offset, "api",
                                     errstr, errstr_size);
}

size_t rbk_consumer_quarantined(rbk_consumer_t *c, rbk_quarantine_t *out,
                                size_t max) {
        if (!c || rbk__forked(c->pid))
                return 0;
        size_t n = 0;
        g_mutex_lock(&c->lock);
        GList *keys = g_list_sort(g_hash_table_get_keys(c->parts),
                                  (GCompareFunc)strcmp);
        for (GList *k = keys; k; k = k->next) {
                rbk__part_t *p = g_hash_table_lookup(c->parts, k->data);
                if (!p->quarantined)
                        continue;
                if (out && n < max)
                        out[n] = p->q;
                n++;
        }
        g_list_free(keys);
        g_mutex_unlock(&c->lock);
        return n;
}
