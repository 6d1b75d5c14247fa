/* The consumer's assignment: rebalances (eager, and cooperative where
 * librdkafka's group protocol says so), commits, and the re-assign with an
 * explicit commit that moves a partition's position (the only way a
 * position moves: librdkafka refuses to seek a partition whose offset was
 * reset with auto.offset.reset=error, its issue 2961). Partition state is
 * changed only through consumer_part.c's transitions. */
#include <stdio.h>
#include <string.h>

#include "consumer_internal.h"

/* Bound of the blocking metadata calls (committed offsets). */
#define RBK__QUERY_TIMEOUT_MS 5000
#define RBK__COMMIT_TIMEOUT_MS 10000

/* ------------------------------------------------------------ commits */

rd_kafka_resp_err_t rbk__commit_wait(rbk_consumer_t *c,
                                     rd_kafka_topic_partition_list_t *offsets,
                                     int timeout_ms) {
        rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
        rd_kafka_resp_err_t err = rd_kafka_commit_queue(c->rk, offsets, q,
                                                        NULL, NULL);
        if (!err) {
                int64_t deadline = rbk__now_ms() + MAX(timeout_ms, 0);
                err = RD_KAFKA_RESP_ERR__TIMED_OUT;
                for (;;) {
                        int64_t left = deadline - rbk__now_ms();
                        rd_kafka_event_t *ev =
                            rd_kafka_queue_poll(q, (int)MAX(left, 0));
                        if (ev && rd_kafka_event_type(ev) ==
                                      RD_KAFKA_EVENT_OFFSET_COMMIT) {
                                err = rd_kafka_event_error(ev);
                                const rd_kafka_topic_partition_list_t *r =
                                    rd_kafka_event_topic_partition_list(ev);
                                for (int i = 0; !err && r && i < r->cnt; i++)
                                        if (r->elems[i].err)
                                                err = r->elems[i].err;
                                rd_kafka_event_destroy(ev);
                                break;
                        }
                        if (ev)
                                rd_kafka_event_destroy(ev);
                        if (left <= 0)
                                break;
                }
        }
        rd_kafka_queue_destroy(q);
        return err;
}

/* Once close began, only the closing thread commits or moves a position.
 * librdkafka (its rd_kafka_cgrp_terminated()) asserts that no commit or
 * assignment change is outstanding when the group's termination completes,
 * and a commit sent from another thread can reach it after the termination
 * found nothing outstanding: the process would abort. commit_mu held. */
static int rbk__commit_refused(const rbk_consumer_t *c) {
        return c->closer && c->closer != g_thread_self();
}

/* A commit the library makes: the partitions (references) with a stored
 * offset above their committed one, and those stored offsets. Taken under
 * c->lock; stores made afterwards are not part of it. */
typedef struct rbk__covered_s {
        GPtrArray *parts;
        GArray *offs; /* int64_t */
        int save_failed; /* partitions left out: their window save failed */
} rbk__covered_t;

static void rbk__covered_take(rbk_consumer_t *c, rbk__covered_t *cv) {
        cv->parts = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        cv->offs = g_array_new(FALSE, FALSE, sizeof(int64_t));
        cv->save_failed = 0;
        g_mutex_lock(&c->lock);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                if (p->assigned && p->stored >= 0 &&
                    p->stored > p->committed) {
                        g_ptr_array_add(cv->parts, rbk__part_ref(p));
                        g_array_append_val(cv->offs, p->stored);
                }
        }
        g_mutex_unlock(&c->lock);
}

static void rbk__covered_clear(rbk__covered_t *cv) {
        g_ptr_array_free(cv->parts, TRUE);
        g_array_free(cv->offs, TRUE);
}

/* Saves the dedup windows of the partitions up to their offsets. A
 * partition whose save failed leaves the commit (its window does not cover
 * it: committing would let a later duplicate of what it handled pass); the
 * dedup_store_error event says why. No lock held. */
static void rbk__covered_save(rbk_consumer_t *c, rbk__covered_t *cv) {
        if (!c->dedup)
                return;
        for (guint i = 0; i < cv->parts->len;) {
                rbk__part_t *p = g_ptr_array_index(cv->parts, i);
                char e[256];
                if (!rbk__dedup_commit(c->dedup, p->utopic, p->partition,
                                       g_array_index(cv->offs, int64_t, i), e,
                                       sizeof(e))) {
                        i++;
                        continue;
                }
                rbk__consumer_dedup_error(c, p->utopic, p->partition, e);
                rbk__log(c->hooks, 4, "consumer",
                         "%s [%" PRId32 "]: offset %" PRId64
                         " not committed: its dedup window was not saved",
                         p->utopic, p->partition,
                         g_array_index(cv->offs, int64_t, i));
                g_ptr_array_remove_index(cv->parts, i);
                g_array_remove_index(cv->offs, i);
                cv->save_failed++;
        }
}

static rd_kafka_topic_partition_list_t *
rbk__covered_list(const rbk__covered_t *cv) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new((int)cv->parts->len);
        for (guint i = 0; i < cv->parts->len; i++) {
                rbk__part_t *p = g_ptr_array_index(cv->parts, i);
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)
                    ->offset = g_array_index(cv->offs, int64_t, i);
        }
        return l;
}

/* The test hook: a pause between the window save and the commit (a crash
 * there must lose nothing). */
static void rbk__commit_test_delay(rbk_consumer_t *c) {
        if (c->test_commit_delay_ms > 0)
                g_usleep((gulong)c->test_commit_delay_ms * 1000);
}

/* Saves the windows, then commits exactly the offsets they cover and
 * waits at most timeout_ms. commit_mu held. *save_failedp: partitions left
 * out because their save failed. */
static rd_kafka_resp_err_t rbk__commit_covered(rbk_consumer_t *c,
                                               int timeout_ms,
                                               int *save_failedp) {
        if (save_failedp)
                *save_failedp = 0;
        if (rbk__commit_refused(c))
                return RD_KAFKA_RESP_ERR__DESTROY;
        rbk__covered_t cv;
        rbk__covered_take(c, &cv);
        rbk__covered_save(c, &cv);
        if (save_failedp)
                *save_failedp = cv.save_failed;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (cv.parts->len) {
                rbk__commit_test_delay(c);
                rd_kafka_topic_partition_list_t *l = rbk__covered_list(&cv);
                err = rbk__commit_wait(c, l, timeout_ms);
                rd_kafka_topic_partition_list_destroy(l);
        }
        if (!err && cv.parts->len) {
                g_mutex_lock(&c->lock);
                c->commits++;
                for (guint i = 0; i < cv.parts->len; i++)
                        rbk__part_set_committed(
                            g_ptr_array_index(cv.parts, i),
                            g_array_index(cv.offs, int64_t, i));
                g_mutex_unlock(&c->lock);
        }
        rbk__covered_clear(&cv);
        return err;
}

rd_kafka_resp_err_t rbk__consumer_commit_stored(rbk_consumer_t *c,
                                                int timeout_ms) {
        g_mutex_lock(&c->commit_mu);
        rd_kafka_resp_err_t err = rbk__commit_covered(c, timeout_ms, NULL);
        g_mutex_unlock(&c->commit_mu);
        if (err && err != RD_KAFKA_RESP_ERR__DESTROY)
                rbk__log(c->hooks, 4, "consumer", "committing offsets failed: %s",
                         rd_kafka_err2str(err));
        return err;
}

void rbk__assign_commit_due(rbk_consumer_t *c, int64_t now) {
        if (!c->own_commit || c->commit_interval_ms <= 0 ||
            now < c->next_commit_ms)
                return;
        if (!g_mutex_trylock(&c->commit_mu))
                return; /* another commit is under way: next iteration */
        c->next_commit_ms = now + c->commit_interval_ms;
        if (rbk__commit_refused(c)) {
                g_mutex_unlock(&c->commit_mu);
                return;
        }
        rbk__covered_t cv;
        rbk__covered_take(c, &cv);
        rbk__covered_save(c, &cv);
        if (cv.parts->len) {
                rbk__commit_test_delay(c);
                /* As librdkafka's auto-commit: sent now, the result served
                 * by offset_commit_cb (rbk__assign_commit_result). */
                rd_kafka_topic_partition_list_t *l = rbk__covered_list(&cv);
                rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, l, 1);
                rd_kafka_topic_partition_list_destroy(l);
                if (!err) {
                        /* Close waits for its result before the group is
                         * left. */
                        g_mutex_lock(&c->lock);
                        c->async_commits++;
                        g_mutex_unlock(&c->lock);
                }
                if (err)
                        rbk__log(c->hooks, 4, "consumer",
                                 "offset commit failed: %s",
                                 rd_kafka_err2str(err));
        }
        g_mutex_unlock(&c->commit_mu);
        rbk__covered_clear(&cv);
}

rbk_err_t rbk__assign_commit_now(rbk_consumer_t *c, int timeout_ms,
                                 char *errstr, size_t errstr_size) {
        /* A revoke in progress (or a lost assignment): its own commit, or
         * none, decides; a commit now would race with the next owner. */
        int revoking = 0;
        g_mutex_lock(&c->lock);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v))
                revoking |= ((rbk__part_t *)v)->revoking;
        g_mutex_unlock(&c->lock);
        if (revoking || rd_kafka_assignment_lost(c->rk))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_STATE,
                                   "partitions are being revoked; nothing "
                                   "committed");
        int save_failed = 0;
        g_mutex_lock(&c->commit_mu);
        rd_kafka_resp_err_t err = rbk__commit_covered(
            c, timeout_ms < 0 ? RBK__COMMIT_TIMEOUT_MS : timeout_ms,
            &save_failed);
        g_mutex_unlock(&c->commit_mu);
        switch (err) {
        case RD_KAFKA_RESP_ERR_NO_ERROR:
        case RD_KAFKA_RESP_ERR__NO_OFFSET:
                break;
        case RD_KAFKA_RESP_ERR__DESTROY:
                return rbk__seterr(errstr, errstr_size, RBK_ERR_SHUTDOWN,
                                   "consumer is closing; nothing committed");
        case RD_KAFKA_RESP_ERR__TIMED_OUT:
                return rbk__seterr(errstr, errstr_size, RBK_ERR_TIMED_OUT,
                                   "no answer to the offset commit within "
                                   "%d ms",
                                   timeout_ms < 0 ? RBK__COMMIT_TIMEOUT_MS
                                                  : timeout_ms);
        case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
        case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
        case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
        case RD_KAFKA_RESP_ERR__STATE:
        case RD_KAFKA_RESP_ERR__WAIT_COORD:
                return rbk__seterr(errstr, errstr_size, RBK_ERR_STATE,
                                   "the group is rebalancing: %s: %s",
                                   rd_kafka_err2name(err),
                                   rd_kafka_err2str(err));
        default:
                return rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                                   "offset commit failed: %s: %s",
                                   rd_kafka_err2name(err),
                                   rd_kafka_err2str(err));
        }
        if (save_failed)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_STORE,
                                   "%d partition(s) not committed: saving "
                                   "their dedup windows failed",
                                   save_failed);
        return RBK_OK;
}

void rbk__assign_commit_result(rbk_consumer_t *c, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *offsets) {
        /* With the library's own commits, librdkafka's auto-commit is off:
         * every result served here answers one of rbk__assign_commit_due. */
        g_mutex_lock(&c->lock);
        if (c->own_commit && c->async_commits > 0 &&
            --c->async_commits == 0)
                g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
        if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
                return;
        if (err) {
                rbk__log(c->hooks, 4, "consumer", "offset commit failed: %s",
                         rd_kafka_err2str(err));
                return;
        }
        g_mutex_lock(&c->lock);
        c->commits++;
        for (int i = 0; offsets && i < offsets->cnt; i++) {
                rd_kafka_topic_partition_t *t = &offsets->elems[i];
                if (t->err || t->offset < 0)
                        continue;
                rbk__part_t *p = rbk__part_find(c, t->topic, t->partition);
                if (p)
                        rbk__part_set_committed(p, t->offset);
        }
        g_mutex_unlock(&c->lock);
}

static rd_kafka_resp_err_t rbk__commit_explicit_locked(
    rbk_consumer_t *c, rbk__part_t **parts, const int64_t *offsets,
    char *const *metas, size_t n) {
        if (n == 0)
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        if (rbk__commit_refused(c))
                return RD_KAFKA_RESP_ERR__DESTROY;
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new((int)n);
        for (size_t i = 0; i < n; i++) {
                rd_kafka_topic_partition_t *t = rd_kafka_topic_partition_list_add(
                    l, parts[i]->topic, parts[i]->partition);
                t->offset = offsets[i];
                if (metas && metas[i]) {
                        t->metadata = strdup(metas[i]);
                        t->metadata_size = strlen(metas[i]);
                }
        }
        rd_kafka_resp_err_t err =
            rbk__commit_wait(c, l, RBK__COMMIT_TIMEOUT_MS);
        rd_kafka_topic_partition_list_destroy(l);
        if (!err) {
                g_mutex_lock(&c->lock);
                for (size_t i = 0; i < n; i++)
                        rbk__part_set_committed(parts[i], offsets[i]);
                g_mutex_unlock(&c->lock);
        }
        return err;
}

rd_kafka_resp_err_t rbk__commit_explicit(rbk_consumer_t *c,
                                         rbk__part_t **parts,
                                         const int64_t *offsets,
                                         char *const *metas, size_t n) {
        g_mutex_lock(&c->commit_mu);
        rd_kafka_resp_err_t err =
            rbk__commit_explicit_locked(c, parts, offsets, metas, n);
        g_mutex_unlock(&c->commit_mu);
        return err;
}

/* ------------------------------------------------------------ rebalance */

static void rbk__app_rebalance(rbk_consumer_t *c, rbk_rebalance_t what,
                               rbk__part_t *p) {
        if (c->conf->rebalance_cb)
                c->conf->rebalance_cb(what, p->utopic, p->partition,
                                      c->conf->rebalance_opaque);
}

/* A partition queue became non-empty (librdkafka thread): wake the poll
 * thread out of rd_kafka_consumer_poll(). */
static void rbk__pq_event(rd_kafka_t *rk, void *opaque) {
        rbk_consumer_t *c = opaque;
        rd_kafka_queue_yield(c->cq);
}

/* Applies an assignment change to librdkafka: the whole list (eager) or
 * the listed partitions (cooperative). @add: assign, else revoke. */
static rd_kafka_resp_err_t rbk__apply(rbk_consumer_t *c,
                                      rd_kafka_topic_partition_list_t *parts,
                                      int add) {
        if (!c->cooperative)
                return rd_kafka_assign(c->rk, add ? parts : NULL);
        rd_kafka_error_t *error = add
                                      ? rd_kafka_incremental_assign(c->rk, parts)
                                      : rd_kafka_incremental_unassign(c->rk,
                                                                      parts);
        if (!error)
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_resp_err_t err = rd_kafka_error_code(error);
        rbk__log(c->hooks, 4, "consumer", "incremental %s failed: %s",
                 add ? "assign" : "unassign", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return err;
}

void rbk__assign_detach(rbk_consumer_t *c, GPtrArray *parts) {
        GPtrArray *pqs = g_ptr_array_new();
        g_mutex_lock(&c->lock);
        for (guint i = 0; i < parts->len; i++) {
                /* The partition queue goes now: its event callback lives on
                 * librdkafka's queue, which a new assignment shares. */
                rd_kafka_queue_t *pq =
                    rbk__part_detach(c, g_ptr_array_index(parts, i));
                if (pq)
                        g_ptr_array_add(pqs, pq);
        }
        g_mutex_unlock(&c->lock);
        for (guint i = 0; i < pqs->len; i++) {
                rd_kafka_queue_cb_event_enable(g_ptr_array_index(pqs, i), NULL,
                                               NULL);
                rd_kafka_queue_destroy(g_ptr_array_index(pqs, i));
        }
        g_ptr_array_free(pqs, TRUE);
}

static void rbk__on_assign(rbk_consumer_t *c,
                           rd_kafka_topic_partition_list_t *parts) {
        GPtrArray *mine = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        g_mutex_lock(&c->lock);
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_topic_partition_t *t = &parts->elems[i];
                rbk__part_t *p =
                    rbk__part_assign(c, t->topic, t->partition, t->offset);
                g_ptr_array_add(mine, rbk__part_ref(p));
        }
        g_mutex_unlock(&c->lock);

        for (guint i = 0; c->dedup && i < mine->len; i++) {
                rbk__part_t *p = g_ptr_array_index(mine, i);
                rbk__dedup_assign(c->dedup, p->utopic, p->partition);
        }

        /* The committed offsets, for stats and lag. */
        rd_kafka_topic_partition_list_t *q =
            rd_kafka_topic_partition_list_copy(parts);
        if (!rd_kafka_committed(c->rk, q, RBK__QUERY_TIMEOUT_MS)) {
                g_mutex_lock(&c->lock);
                for (int i = 0; i < q->cnt; i++) {
                        rbk__part_t *p = rbk__part_find(c, q->elems[i].topic,
                                                        q->elems[i].partition);
                        if (p)
                                rbk__part_set_committed(p, q->elems[i].offset);
                }
                g_mutex_unlock(&c->lock);
        }
        rd_kafka_topic_partition_list_destroy(q);

        /* Each partition's messages stay in its own queue, read by the
         * poll thread as room allows (set up before the fetch starts). */
        for (guint i = 0; i < mine->len; i++) {
                rbk__part_t *p = g_ptr_array_index(mine, i);
                rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(
                    c->rk, p->topic, p->partition);
                if (!pq)
                        continue;
                g_mutex_lock(&c->lock);
                int has = p->pq != NULL;
                if (!has)
                        rbk__part_set_queue(p, pq);
                g_mutex_unlock(&c->lock);
                if (has) {
                        rd_kafka_queue_destroy(pq);
                        continue;
                }
                rd_kafka_queue_forward(pq, NULL);
                rd_kafka_queue_cb_event_enable(pq, rbk__pq_event, c);
        }
        rd_kafka_resp_err_t err = rbk__apply(c, parts, 1);
        if (err)
                rbk__log(c->hooks, 3, "consumer", "assign failed: %s",
                         rd_kafka_err2str(err));
        else
                rbk__log(c->hooks, 6, "consumer", "assigned %d partition(s)%s",
                         parts->cnt, c->cooperative ? " (incremental)" : "");
        for (guint i = 0; i < mine->len; i++)
                rbk__app_rebalance(c, RBK_ASSIGNED,
                                   g_ptr_array_index(mine, i));
        g_ptr_array_free(mine, TRUE);
}

/* Hands back partitions: in-flight hand-outs finish (bounded; a dead
 * letter in flight counts), queued messages are dropped, stored offsets
 * committed (unless lost), state dropped, then the application hears
 * about each partition. */
static void rbk__on_revoke(rbk_consumer_t *c,
                           rd_kafka_topic_partition_list_t *parts, int lost) {
        GPtrArray *mine = g_ptr_array_new_with_free_func(
            (GDestroyNotify)rbk__part_unref);
        g_mutex_lock(&c->lock);
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_topic_partition_t *t = &parts->elems[i];
                rbk__part_t *p = rbk__part_find(c, t->topic, t->partition);
                if (!p)
                        continue;
                rbk__part_revoke_begin(c, p);
                g_ptr_array_add(mine, rbk__part_ref(p));
        }
        /* Let in-flight hand-outs finish and store: handlers of the run
         * API (with the poll API the application's thread is this one, so
         * its message stays with it and is refused when given back) and
         * dead letters of both. */
        if (!lost) {
                int64_t deadline = rbk__now_ms() + c->revoke_timeout_ms;
                for (;;) {
                        int busy = 0;
                        for (guint i = 0; i < mine->len; i++) {
                                rbk__part_t *p = g_ptr_array_index(mine, i);
                                busy += p->out == RBK__OUT_DEADLETTER ||
                                        (p->out == RBK__OUT_HANDLER &&
                                         c->running);
                        }
                        if (!busy)
                                break;
                        int64_t now = rbk__now_ms();
                        if (now >= deadline) {
                                rbk__log(c->hooks, 4, "consumer",
                                         "revoke: %d handler(s) or dead "
                                         "letter(s) still running after "
                                         "%" PRId64
                                         " ms; their offsets are not committed",
                                         busy, c->revoke_timeout_ms);
                                break;
                        }
                        rbk__consumer_wait(c, g_get_monotonic_time() +
                                                  (deadline - now) * 1000);
                }
        }
        g_mutex_unlock(&c->lock);

        if (!lost)
                rbk__consumer_commit_stored(c, (int)c->revoke_timeout_ms);

        rbk__assign_detach(c, mine);
        rbk__q_clear_resets(c, 1);

        for (guint i = 0; c->dedup && i < mine->len; i++) {
                rbk__part_t *p = g_ptr_array_index(mine, i);
                rbk__dedup_revoke(c->dedup, p->utopic, p->partition);
        }
        rd_kafka_resp_err_t err = rbk__apply(c, parts, 0);
        if (err)
                rbk__log(c->hooks, 4, "consumer", "unassign failed: %s",
                         rd_kafka_err2str(err));
        rbk__log(c->hooks, 6, "consumer", "%s %d partition(s)",
                 lost ? "lost" : "revoked", parts->cnt);
        for (guint i = 0; i < mine->len; i++)
                rbk__app_rebalance(c, lost ? RBK_LOST : RBK_REVOKED,
                                   g_ptr_array_index(mine, i));
        g_ptr_array_free(mine, TRUE);
        g_mutex_lock(&c->lock);
        rbk__consumer_wake(c);
        g_mutex_unlock(&c->lock);
}

void rbk__assign_rebalance(rbk_consumer_t *c, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *parts) {
        /* The group's protocol, fixed once the group chose its assignor
         * (librdkafka refuses a plain assign under COOPERATIVE). */
        const char *proto = rd_kafka_rebalance_protocol(c->rk);
        c->cooperative = proto && !strcmp(proto, "COOPERATIVE");
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                rbk__on_assign(c, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                rbk__on_revoke(c, parts, rd_kafka_assignment_lost(c->rk));
        } else {
                rbk__log(c->hooks, 3, "consumer", "rebalance error: %s",
                         rd_kafka_err2str(err));
                rbk__on_revoke(c, parts, 1);
        }
}

/* ------------------------------------------------------------ moving */

/* Eager: the whole assignment again, the targets at their new offsets,
 * quarantined partitions at their failed offset (they report the same,
 * known, incident and stay stopped), the rest at the library's own next
 * offset (not position(): the library holds messages librdkafka has
 * already handed over), their stored offsets stored again. */
static rd_kafka_resp_err_t rbk__move_eager(rbk_consumer_t *c,
                                           rbk__part_t **targets,
                                           const int64_t *offsets, size_t n) {
        rd_kafka_topic_partition_list_t *all =
            rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_t *restore =
            rd_kafka_topic_partition_list_new(8);
        g_mutex_lock(&c->lock);
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, c->parts);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                rbk__part_t *p = v;
                int64_t off = RD_KAFKA_OFFSET_INVALID;
                int target = 0;
                for (size_t i = 0; i < n; i++) {
                        if (targets[i] == p) {
                                off = offsets[i];
                                target = 1;
                        }
                }
                if (!target) {
                        if (p->quarantined)
                                off = p->q.failed_offset >= 0
                                          ? p->q.failed_offset
                                          : RD_KAFKA_OFFSET_INVALID;
                        else if (p->drain_to >= 0)
                                off = p->drain_to;
                        else if (p->fetch_next >= 0)
                                off = p->fetch_next;
                        if (p->stored >= 0)
                                rd_kafka_topic_partition_list_add(
                                    restore, p->topic, p->partition)
                                    ->offset = p->stored;
                        /* Quarantined partitions keep their generation:
                         * they report the known incident again. */
                        if (!p->quarantined && p->drain_to < 0)
                                rbk__part_reassigned(p, off);
                } else {
                        rbk__part_reposition(c, p, off, -1);
                }
                rd_kafka_topic_partition_list_add(all, p->topic, p->partition)
                    ->offset = off;
        }
        g_mutex_unlock(&c->lock);
        rd_kafka_resp_err_t err = rd_kafka_assign(c->rk, all);
        if (restore->cnt)
                rd_kafka_offsets_store(c->rk, restore);
        rd_kafka_topic_partition_list_destroy(all);
        rd_kafka_topic_partition_list_destroy(restore);
        return err;
}

/* Cooperative: the targets alone leave and come back at their new
 * offsets; every other partition keeps flowing. */
static rd_kafka_resp_err_t rbk__move_cooperative(rbk_consumer_t *c,
                                                 rbk__part_t **targets,
                                                 const int64_t *offsets,
                                                 size_t n) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new((int)n);
        g_mutex_lock(&c->lock);
        for (size_t i = 0; i < n; i++) {
                rbk__part_reposition(c, targets[i], offsets[i], -1);
                rd_kafka_topic_partition_list_add(l, targets[i]->topic,
                                                  targets[i]->partition)
                    ->offset = offsets[i];
        }
        g_mutex_unlock(&c->lock);
        rd_kafka_resp_err_t err = rbk__apply(c, l, 0);
        if (!err)
                err = rbk__apply(c, l, 1);
        rd_kafka_topic_partition_list_destroy(l);
        return err;
}

rd_kafka_resp_err_t rbk__assign_move(rbk_consumer_t *c, rbk__part_t **targets,
                                     const int64_t *offsets, char *const *metas,
                                     size_t n) {
        /* No offset is stored while the assignment is replaced. */
        g_mutex_lock(&c->lock);
        c->store_gate++;
        g_mutex_unlock(&c->lock);

        /* No other commit runs meanwhile (rbk_consumer_commit() from a
         * handler would commit a target's old stored offset). */
        g_mutex_lock(&c->commit_mu);
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (rbk__commit_refused(c)) {
                /* Closing: the assignment is not changed any more. */
                err = RD_KAFKA_RESP_ERR__DESTROY;
                goto done;
        }

        /* 1. Commit what is stored (an eager re-assign drops stored
         * offsets), the dedup windows saved first. */
        rd_kafka_resp_err_t cerr =
            rbk__commit_covered(c, RBK__COMMIT_TIMEOUT_MS, NULL);
        if (cerr)
                rbk__log(c->hooks, 4, "consumer",
                         "committing offsets failed: %s",
                         rd_kafka_err2str(cerr));

        /* 2. Targets forget their stored offset (librdkafka commits stored
         * offsets of removed partitions asynchronously), then their new
         * position is committed explicitly. */
        rd_kafka_topic_partition_list_t *unstore =
            rd_kafka_topic_partition_list_new((int)n);
        for (size_t i = 0; i < n; i++)
                rd_kafka_topic_partition_list_add(unstore, targets[i]->topic,
                                                  targets[i]->partition)
                    ->offset = RD_KAFKA_OFFSET_INVALID;
        rd_kafka_offsets_store(c->rk, unstore);
        rd_kafka_topic_partition_list_destroy(unstore);
        if (metas)
                err = rbk__commit_explicit_locked(c, targets, offsets, metas,
                                                  n);
        if (err) {
                rbk__log(c->hooks, 3, "quarantine",
                         "committing the new position failed: %s",
                         rd_kafka_err2str(err));
                goto done;
        }

        /* 3. The assignment again, with the targets at their new offsets.
         * Partition queues and their settings survive it. */
        err = c->cooperative ? rbk__move_cooperative(c, targets, offsets, n)
                             : rbk__move_eager(c, targets, offsets, n);
        if (err)
                rbk__log(c->hooks, 3, "quarantine", "re-assign failed: %s",
                         rd_kafka_err2str(err));
done:
        g_mutex_unlock(&c->commit_mu);
        g_mutex_lock(&c->lock);
        c->store_gate--;
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
        return err;
}

/* ------------------------------------------------------------ seek */

rbk_err_t rbk__assign_watermarks(rbk_consumer_t *c, const rbk__part_t *p,
                                 int64_t *lo, int64_t *hi, char *es,
                                 size_t esz) {
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            c->rk, p->topic, p->partition, lo, hi, RBK__QUERY_TIMEOUT_MS);
        if (err)
                return rbk__seterr(es, esz, RBK_ERR_KAFKA,
                                   "reading the watermarks of %s [%" PRId32
                                   "] failed: %s",
                                   p->utopic, p->partition,
                                   rd_kafka_err2str(err));
        return RBK_OK;
}

rbk_err_t rbk__assign_seek(rbk_consumer_t *c, rbk__req_t *req) {
        char *es = req->errstr;
        size_t esz = sizeof(req->errstr);
        const char *by = req->applied_by ? req->applied_by : "api";
        const char *utopic = rbk__unprefixed(c->prefix, req->topic);
        g_mutex_lock(&c->lock);
        rbk__part_t *p = rbk__part_find(c, req->topic, req->partition);
        if (!p || !p->assigned || p->revoking) {
                g_mutex_unlock(&c->lock);
                return rbk__seterr(es, esz, RBK_ERR_NOT_FOUND,
                                   "%s [%" PRId32
                                   "] is not assigned to this consumer",
                                   utopic, req->partition);
        }
        if (p->quarantined) {
                g_mutex_unlock(&c->lock);
                return rbk__seterr(es, esz, RBK_ERR_STATE,
                                   "%s [%" PRId32 "] is quarantined (incident "
                                   "%s): resolve it with rbk_consumer_resolve()",
                                   utopic, req->partition, p->q.incident_key);
        }
        if (p->out == RBK__OUT_DEADLETTER || p->hold == RBK__HOLD_DLQ_PENDING) {
                g_mutex_unlock(&c->lock);
                return rbk__seterr(es, esz, RBK_ERR_STATE,
                                   "%s [%" PRId32 "] has a dead letter in "
                                   "flight; try again",
                                   utopic, req->partition);
        }
        rbk__part_ref(p);
        int64_t from = rbk__part_first_unhandled(p);
        int64_t committed = p->committed >= 0 ? p->committed : RBK_NO_VALUE;
        g_mutex_unlock(&c->lock);

        rbk_err_t ret = RBK_OK;
        int64_t lo, hi, to;
        rd_kafka_resp_err_t err;
        if ((ret = rbk__assign_watermarks(c, p, &lo, &hi, es, esz)))
                goto out;
        if (req->by_time) {
                rd_kafka_topic_partition_list_t *l =
                    rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)
                    ->offset = req->offset;
                err = rd_kafka_offsets_for_times(c->rk, l,
                                                 RBK__QUERY_TIMEOUT_MS);
                if (!err)
                        err = l->elems[0].err;
                to = l->elems[0].offset;
                rd_kafka_topic_partition_list_destroy(l);
                if (err) {
                        ret = rbk__seterr(es, esz, RBK_ERR_KAFKA,
                                          "looking up timestamp %" PRId64
                                          " in %s [%" PRId32 "] failed: %s",
                                          req->offset, utopic, p->partition,
                                          rd_kafka_err2str(err));
                        goto out;
                }
                if (to < 0)
                        to = hi; /* nothing at or after it: the end */
        } else if (req->offset == RBK_EARLIEST) {
                to = lo;
        } else if (req->offset == RBK_LATEST) {
                to = hi;
        } else if (req->offset < lo || req->offset > hi) {
                ret = rbk__seterr(es, esz, RBK_ERR_OUT_OF_RANGE,
                                  "offset %" PRId64 " is outside %s [%" PRId32
                                  "]'s watermarks %" PRId64 "..%" PRId64,
                                  req->offset, utopic, p->partition, lo, hi);
                goto out;
        } else {
                to = req->offset;
        }

        char *meta = g_strdup_printf("rbk-seek:%s", by);
        char *metas[1] = {meta};
        err = rbk__assign_move(c, &p, &to, metas, 1);
        g_free(meta);
        if (err) {
                ret = rbk__seterr(es, esz, RBK_ERR_KAFKA,
                                  "moving %s [%" PRId32 "] failed: %s", utopic,
                                  p->partition, rd_kafka_err2str(err));
                goto out;
        }
        int64_t skips = from >= 0 && to > from ? to - from : 0;
        int64_t replays = from >= 0 && to < from ? from - to : 0;
        char *msg = g_strdup_printf(
            "%s moved %s [%" PRId32 "] of group %s from offset %" PRId64
            " to %" PRId64 " (log %" PRId64 "..%" PRId64 "): %" PRId64
            " message(s) skipped, %" PRId64 " handed again",
            by, utopic, p->partition, c->ugroup, from, to, lo, hi, skips,
            replays);
        rbk__log(c->hooks, 5, "consumer", "%s", msg);
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_POSITION_MOVED, RBK_SEV_INFO);
        ev.topic = p->topic;
        ev.partition = p->partition;
        ev.offset = to;
        ev.first_unhandled = from >= 0 ? from : RBK_NO_VALUE;
        ev.committed_offset = committed;
        ev.low_watermark = lo;
        ev.high_watermark = hi;
        ev.message = msg;
        rbk__consumer_emit(c, &ev);
        g_free(msg);
out:
        rbk__part_unref(p);
        return ret;
}
