/* Micro-benchmark: nanoseconds per lookup+insert of the dedup window
 * (rbk__dedup_check_part + rbk__dedup_record_part on the partition's
 * handle with the id parsed once, the consumer's per-message path, the
 * partition lock included; also the calls by topic and partition, with and
 * without the id parsed) against a plain LRU of 100,000 ids
 * (GHashTable + GQueue, string keys, no locks), on the same id stream in
 * the same run.
 *
 *   make build/bench/dedup_bench && build/bench/dedup_bench [messages]
 *
 * The stream: 8 producers writing to 4 partitions (we consume one, so each
 * producer's sequences have gaps), reordered within 16 messages, 2% of
 * messages delivered twice. Ids are formatted up front; only the lookups
 * and inserts are timed. Best of 9 runs for each, in thread CPU time, alternating. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dedup.h"
#include "internal.h"

#define LRU_CAP 100000

static double now_ns(void) {
        struct timespec ts;
        /* CPU time of this thread: other processes on the machine do not
         * count against either side. */
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef struct lru_s {
        GHashTable *map; /* char* id -> GList* node in q */
        GQueue q;        /* most recent at the head; data = the key */
} lru_t;

static void lru_init(lru_t *l) {
        l->map = g_hash_table_new(g_str_hash, g_str_equal);
        g_queue_init(&l->q);
}

static void lru_free(lru_t *l) {
        g_hash_table_destroy(l->map);
        g_queue_clear_full(&l->q, g_free);
}

/* Returns 1 if the id was present (and touches it), else inserts it. */
static int lru_lookup_insert(lru_t *l, const char *id) {
        GList *node = g_hash_table_lookup(l->map, id);
        if (node) {
                g_queue_unlink(&l->q, node);
                g_queue_push_head_link(&l->q, node);
                return 1;
        }
        char *k = g_strdup(id);
        g_queue_push_head(&l->q, k);
        g_hash_table_insert(l->map, k, l->q.head);
        if (l->q.length > LRU_CAP) {
                char *old = g_queue_pop_tail(&l->q);
                g_hash_table_remove(l->map, old);
                g_free(old);
        }
        return 0;
}

int main(int argc, char **argv) {
        long n = argc > 1 ? atol(argv[1]) : 2000000;
        GRand *rnd = g_rand_new_with_seed(42);
        char (*ids)[RBK_MSGID_STR_SIZE] = g_malloc((size_t)n * RBK_MSGID_STR_SIZE);
        size_t *lens = g_new(size_t, (size_t)n);
        rbk_msgid_t *parsed = g_new(rbk_msgid_t, (size_t)n);
        uint64_t pids[8], next[8] = {0};
        rbk_msgid_t pend[16];
        int npend = 0;
        long i = 0;

        if (n < 1000) {
                fprintf(stderr, "usage: %s [messages >= 1000]\n", argv[0]);
                return 2;
        }
        for (int p = 0; p < 8; p++)
                pids[p] = ((uint64_t)g_rand_int(rnd) << 32) | g_rand_int(rnd) | 1;
        while (i < n) {
                if (i > 0 && g_rand_int_range(rnd, 0, 100) < 2) {
                        long j = i - 1 - g_rand_int_range(rnd, 0, (gint32)MIN(i, 1000));
                        memcpy(ids[i], ids[j], sizeof(ids[i]));
                        lens[i] = lens[j];
                        i++;
                        continue;
                }
                int p = g_rand_int_range(rnd, 0, 8);
                do
                        next[p]++;
                while (g_rand_int_range(rnd, 0, 4) != 0);
                pend[npend].producer_id = pids[p];
                pend[npend].seq = next[p];
                npend++;
                if (npend < 16)
                        continue;
                int k = g_rand_int_range(rnd, 0, npend);
                lens[i] = (size_t)rbk_msgid_format(&pend[k], ids[i], RBK_MSGID_STR_SIZE);
                i++;
                pend[k] = pend[--npend];
        }

        /* The consumer parses every id once to fill rbk_message_t.msgid. */
        for (long k = 0; k < n; k++)
                if (rbk_msgid_parse(ids[k], lens[k], &parsed[k]) != RBK_OK)
                        return 1;

        double best_win = 1e30, best_lru = 1e30, best_pre = 1e30;
        double best_part = 1e30;
        long dups_win = 0, dups_lru = 0;
        for (int run = 0; run < 9; run++) {
                rbk__dedup_t *d = rbk__dedup_new(NULL, "bench");
                rbk__dedup_assign(d, "topic", 0);
                long dups = 0;
                double t0 = now_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check(d, "topic", 0, ids[k], lens[k]) ==
                            RBK__DEDUP_DUPLICATE) {
                                dups++;
                                continue;
                        }
                        rbk__dedup_record(d, "topic", 0, ids[k], lens[k], k);
                }
                double t = (now_ns() - t0) / (double)n;
                if (t < best_win)
                        best_win = t;
                dups_win = dups;
                if (run == 0)
                        printf("window memory: %zu bytes\n", rbk__dedup_memory(d));
                rbk__dedup_destroy(d);

                d = rbk__dedup_new(NULL, "bench");
                rbk__dedup_assign(d, "topic", 0);
                t0 = now_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check_msgid(d, "topic", 0, ids[k], lens[k],
                                                   &parsed[k]) ==
                            RBK__DEDUP_DUPLICATE)
                                continue;
                        rbk__dedup_record_msgid(d, "topic", 0, ids[k], lens[k],
                                                &parsed[k], k);
                }
                t = (now_ns() - t0) / (double)n;
                if (t < best_pre)
                        best_pre = t;
                rbk__dedup_destroy(d);

                d = rbk__dedup_new(NULL, "bench");
                rbk__dedup_assign(d, "topic", 0);
                rbk__dedup_part_t *dp = rbk__dedup_part(d, "topic", 0);
                t0 = now_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check_part(d, dp, ids[k], lens[k],
                                                  &parsed[k]) ==
                            RBK__DEDUP_DUPLICATE)
                                continue;
                        rbk__dedup_record_part(d, dp, ids[k], lens[k],
                                               &parsed[k], k);
                }
                t = (now_ns() - t0) / (double)n;
                if (t < best_part)
                        best_part = t;
                rbk__dedup_destroy(d);

                if (getenv("DEDUP_BENCH_WINDOW_ONLY"))
                        continue; /* for profiling */
                lru_t l;
                lru_init(&l);
                dups = 0;
                t0 = now_ns();
                for (long k = 0; k < n; k++)
                        dups += lru_lookup_insert(&l, ids[k]);
                t = (now_ns() - t0) / (double)n;
                if (t < best_lru)
                        best_lru = t;
                dups_lru = dups;
                lru_free(&l);
        }

        printf("messages: %ld, duplicates found: window %ld, LRU %ld\n", n,
               dups_win, dups_lru);
        printf("window, raw header (check+record, parse, locks): %6.1f ns/message\n", best_win);
        printf("window, id parsed by the consumer (_msgid calls): %6.1f ns/message\n", best_pre);
        printf("window, the consumer's path (partition handle):   %6.1f ns/message\n", best_part);
        printf("GHashTable+GQueue LRU of %d ids (no locks):   %6.1f ns/message\n",
               LRU_CAP, best_lru);
        printf("ratio consumer's path/LRU: %.3f (1/%.1f)\n",
               best_part / best_lru, best_lru / best_part);
        printf("ratio raw/LRU:    %.3f (1/%.1f)\n", best_win / best_lru,
               best_lru / best_win);
        printf("ratio parsed/LRU: %.3f (1/%.1f)\n", best_pre / best_lru,
               best_lru / best_pre);
        g_free(ids);
        g_free(lens);
        g_free(parsed);
        g_rand_free(rnd);
        return 0;
}
