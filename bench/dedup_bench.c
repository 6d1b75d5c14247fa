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
 * Two streams, each with 2% of the messages delivered twice (a recent one
 * again) and reordered within 16 messages, producers writing to 4
 * partitions (we consume one, so each producer's sequences have gaps):
 *   - the existing one: 8 producers;
 *   - a fleet: 1,000 producer instances, 100 of them active at a time (the
 *     group moves on by 10 every 2,000 messages, so producers go idle and
 *     come back ten laps later), each contributing a little.
 * The fleet also runs with the old default bound of 16 producers and with
 * 64 bitmaps, to show what the defaults buy. Ids are formatted up front;
 * only the lookups and inserts are timed. Best of 9 runs for each, in
 * thread CPU time, alternating. */
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

typedef struct stream_s {
        long n;
        char (*ids)[RBK_MSGID_STR_SIZE];
        size_t *lens;
        rbk_msgid_t *parsed;
} stream_t;

/* @nprod producers, @group of them active at a time (moving on by 10 every
 * 2,000 messages). */
static int make_stream(stream_t *st, long n, unsigned nprod, unsigned group) {
        GRand *rnd = g_rand_new_with_seed(42);
        uint64_t *pids = g_new(uint64_t, nprod), *next = g_new0(uint64_t, nprod);
        rbk_msgid_t pend[16];
        int npend = 0;
        unsigned base = 0;
        long i = 0;

        st->n = n;
        st->ids = g_malloc((size_t)n * RBK_MSGID_STR_SIZE);
        st->lens = g_new(size_t, (size_t)n);
        st->parsed = g_new(rbk_msgid_t, (size_t)n);
        for (unsigned p = 0; p < nprod; p++)
                pids[p] = ((uint64_t)g_rand_int(rnd) << 32) | g_rand_int(rnd) | 1;
        while (i < n) {
                if (group < nprod && i && i % 2000 == 0)
                        base = (base + 10) % nprod;
                if (i > 0 && g_rand_int_range(rnd, 0, 100) < 2) {
                        long j = i - 1 - g_rand_int_range(rnd, 0, (gint32)MIN(i, 1000));
                        memcpy(st->ids[i], st->ids[j], sizeof(st->ids[i]));
                        st->lens[i] = st->lens[j];
                        i++;
                        continue;
                }
                unsigned p = (base + (unsigned)g_rand_int_range(rnd, 0, (gint32)group)) % nprod;
                do
                        next[p]++;
                while (g_rand_int_range(rnd, 0, 4) != 0);
                pend[npend].producer_id = pids[p];
                pend[npend].seq = next[p];
                npend++;
                if (npend < 16)
                        continue;
                int k = g_rand_int_range(rnd, 0, npend);
                st->lens[i] = (size_t)rbk_msgid_format(&pend[k], st->ids[i], RBK_MSGID_STR_SIZE);
                i++;
                pend[k] = pend[--npend];
        }
        g_free(pids);
        g_free(next);
        g_rand_free(rnd);
        /* The consumer parses every id once to fill rbk_message_t.msgid. */
        for (long k = 0; k < n; k++)
                if (rbk_msgid_parse(st->ids[k], st->lens[k], &st->parsed[k]) != RBK_OK)
                        return -1;
        return 0;
}

static void free_stream(stream_t *st) {
        g_free(st->ids);
        g_free(st->lens);
        g_free(st->parsed);
}

typedef struct result_s {
        double raw, pre, part, lru; /* best ns per message */
        long dups_win, dups_lru;
        size_t mem;
} result_t;

/* A configuration with one dedup property set (NULL: the defaults). */
static rbk_conf_t *bench_conf(const char *name, const char *value) {
        char err[256];
        if (!name)
                return NULL;
        rbk_conf_t *c = rbk_conf_new();
        if (rbk_conf_set(c, name, value, err, sizeof(err)) != RBK_OK) {
                fprintf(stderr, "%s\n", err);
                exit(2);
        }
        return c;
}

/* The window's three paths and (with @lru) the LRU, best of 9 each,
 * alternating. */
static void run(const stream_t *st, const rbk_conf_t *conf, int lru_too,
                result_t *r) {
        long n = st->n;
        r->raw = r->pre = r->part = r->lru = 1e30;
        for (int run = 0; run < 9; run++) {
                rbk__dedup_t *d = rbk__dedup_new(conf, "bench");
                rbk__dedup_assign(d, "topic", 0);
                long dups = 0;
                double t0 = now_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check(d, "topic", 0, st->ids[k], st->lens[k]) ==
                            RBK__DEDUP_DUPLICATE) {
                                dups++;
                                continue;
                        }
                        rbk__dedup_record(d, "topic", 0, st->ids[k], st->lens[k], k);
                }
                double t = (now_ns() - t0) / (double)n;
                if (t < r->raw)
                        r->raw = t;
                r->dups_win = dups;
                if (run == 0)
                        r->mem = rbk__dedup_memory(d);
                rbk__dedup_destroy(d);

                d = rbk__dedup_new(conf, "bench");
                rbk__dedup_assign(d, "topic", 0);
                t0 = now_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check_msgid(d, "topic", 0, st->ids[k], st->lens[k],
                                                   &st->parsed[k]) ==
                            RBK__DEDUP_DUPLICATE)
                                continue;
                        rbk__dedup_record_msgid(d, "topic", 0, st->ids[k], st->lens[k],
                                                &st->parsed[k], k);
                }
                t = (now_ns() - t0) / (double)n;
                if (t < r->pre)
                        r->pre = t;
                rbk__dedup_destroy(d);

                d = rbk__dedup_new(conf, "bench");
                rbk__dedup_assign(d, "topic", 0);
                rbk__dedup_part_t *dp = rbk__dedup_part(d, "topic", 0);
                t0 = now_ns();
                for (long k = 0; k < n; k++) {
                        if (rbk__dedup_check_part(d, dp, st->ids[k], st->lens[k],
                                                  &st->parsed[k]) ==
                            RBK__DEDUP_DUPLICATE)
                                continue;
                        rbk__dedup_record_part(d, dp, st->ids[k], st->lens[k],
                                               &st->parsed[k], k);
                }
                t = (now_ns() - t0) / (double)n;
                if (t < r->part)
                        r->part = t;
                rbk__dedup_destroy(d);

                if (!lru_too || getenv("DEDUP_BENCH_WINDOW_ONLY"))
                        continue; /* for profiling */
                lru_t l;
                lru_init(&l);
                dups = 0;
                t0 = now_ns();
                for (long k = 0; k < n; k++)
                        dups += lru_lookup_insert(&l, st->ids[k]);
                t = (now_ns() - t0) / (double)n;
                if (t < r->lru)
                        r->lru = t;
                r->dups_lru = dups;
                lru_free(&l);
        }
}

int main(int argc, char **argv) {
        long n = argc > 1 ? atol(argv[1]) : 2000000;
        stream_t st;
        result_t r, f, f16, f64;

        if (n < 1000) {
                fprintf(stderr, "usage: %s [messages >= 1000]\n", argv[0]);
                return 2;
        }
        if (make_stream(&st, n, 8, 8))
                return 1;
        run(&st, NULL, 1, &r);
        printf("window memory: %zu bytes\n", r.mem);
        printf("messages: %ld, duplicates found: window %ld, LRU %ld\n", n,
               r.dups_win, r.dups_lru);
        printf("window, raw header (check+record, parse, locks): %6.1f ns/message\n", r.raw);
        printf("window, id parsed by the consumer (_msgid calls): %6.1f ns/message\n", r.pre);
        printf("window, the consumer's path (partition handle):   %6.1f ns/message\n", r.part);
        printf("GHashTable+GQueue LRU of %d ids (no locks):   %6.1f ns/message\n",
               LRU_CAP, r.lru);
        printf("ratio consumer's path/LRU: %.3f (1/%.1f)\n",
               r.part / r.lru, r.lru / r.part);
        printf("ratio raw/LRU:    %.3f (1/%.1f)\n", r.raw / r.lru,
               r.lru / r.raw);
        printf("ratio parsed/LRU: %.3f (1/%.1f)\n", r.pre / r.lru,
               r.lru / r.pre);
        free_stream(&st);

        if (make_stream(&st, n, 1000, 100))
                return 1;
        run(&st, NULL, 1, &f);
        rbk_conf_t *c16 = bench_conf(RBK__DEDUP_MAX_PRODUCERS_PROP, "16");
        rbk_conf_t *c64 = bench_conf(RBK__DEDUP_ACTIVE_PRODUCERS_PROP, "64");
        run(&st, c16, 0, &f16);
        run(&st, c64, 0, &f64);
        printf("fleet (1000 producers, 100 active at a time): window memory %zu bytes\n",
               f.mem);
        printf("fleet: duplicates found: window %ld, LRU %ld; max.producers=16: %ld; "
               "active.producers=64: %ld\n",
               f.dups_win, f.dups_lru, f16.dups_win, f64.dups_win);
        printf("fleet: the consumer's path %6.1f ns/message, raw header %6.1f, LRU %6.1f\n",
               f.part, f.raw, f.lru);
        printf("fleet: max.producers=16 %6.1f ns/message (%zu bytes), "
               "active.producers=64 %6.1f ns/message (%zu bytes)\n",
               f16.part, f16.mem, f64.part, f64.mem);
        printf("fleet ratio consumer's path/LRU: %.3f (1/%.1f)\n", f.part / f.lru,
               f.lru / f.part);
        printf("fleet ratio raw/LRU:    %.3f (1/%.1f)\n", f.raw / f.lru,
               f.lru / f.raw);
        rbk_conf_destroy(c16);
        rbk_conf_destroy(c64);
        free_stream(&st);
        return 0;
}
