/* Duplicate dropping: per-partition windows of recorded message ids.
 *
 * Ids in the library's format: per producer id, a high-water mark (hwm, the
 * highest recorded sequence) and a bitmap of W = rbk.dedup.window sequences.
 * Bit (s mod W) is set iff sequence s in (hwm - W, hwm] was recorded; moving
 * the hwm forward clears the positions it passes over. Check and record are a
 * bit test and a bit set. Producers are kept in an array found through an
 * open-addressing table (at most rbk.dedup.max.producers, least recently
 * recorded forgotten first). Only rbk.dedup.active.producers of them hold a
 * bitmap; the others hold it compacted (runs or words, see "compacted
 * windows" below), at most rbk.dedup.idle.bytes per partition, and are
 * expanded again, taking the bitmap of the least recently recorded active
 * producer, when recorded. A forgotten producer's (id, hwm) goes to a small
 * ring so that when it comes back its old sequences are reported
 * UNPROVABLE, not NEW; its new entry starts with an empty bitmap, so it can
 * never claim an old sequence. A forgotten idle window keeps its hwm and
 * raises its floor above it. Forgetting is reported through the capacity
 * callback.
 *
 * Caller-supplied ids: an exact-match set (GHashTable) with a FIFO ring of at
 * most rbk.dedup.foreign.window ids.
 *
 * Partition entries ("shells") live until rbk__dedup_destroy(); revoke only
 * empties them. So a pointer to a shell, once looked up, stays valid, and a
 * per-thread one-entry cache saves the map lookup on the hot path.
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "internal.h"

#define RBK__EVICTED_RING 64 /* remembered evicted producers per partition */
#define RBK__WINDOW_MIN 64
#define RBK__WINDOW_MAX (1u << 24)
#define RBK__MAX_PRODUCERS_MAX 65536
#define RBK__ACTIVE_PRODUCERS_MAX 1024
#define RBK__IDLE_BYTES_MAX (UINT64_C(1) << 30)
#define RBK__FOREIGN_WINDOW_MAX 10000000

/* Blob format (docs/dedup.md): 16-byte header, then the payload. */
#define RBK__BLOB_MAGIC "RBKD"
#define RBK__BLOB_VERSION 1
#define RBK__BLOB_HDR 16

/* ---------------------------------------------------------------- types */

/* A producer is active (a bitmap of W bits) or idle (the same bitmap
 * compacted, see rbk__rle_encode()). At most
 * rbk.dedup.active.producers are active per partition; recording for an idle
 * producer re-expands it, compacting the least recently recorded active
 * one. */
typedef struct rbk__prod_s {
        uint64_t pid;
        uint64_t hwm;   /* highest recorded sequence, 0 if none */
        uint64_t floor; /* below: UNPROVABLE unless the bit is set */
        uint64_t tick;  /* last record, for LRU */
        uint64_t lo;    /* lowest sequence recorded, UINT64_MAX if none */
        uint64_t *bits; /* W/64 words while active, else NULL */
        unsigned char *rle; /* idle: the compacted bitmap, NULL if empty */
        uint32_t rle_len;
        uint32_t slot; /* while active: index in win.active */
} rbk__prod_t;

typedef struct rbk__evicted_s {
        uint64_t pid;
        uint64_t hwm;
} rbk__evicted_t;

typedef struct rbk__fkey_s {
        uint64_t hash;
        size_t len;
        const unsigned char *data; /* points at inl for stored keys */
        unsigned char inl[];
} rbk__fkey_t;

/* The windows of one partition (movable as a unit: built from a blob
 * without locks, then installed). */
typedef struct rbk__win_s {
        rbk__prod_t *prods;
        uint32_t nprod, cap, hint;
        uint32_t *htab; /* pid -> index + 1 (0: empty), linear probing */
        uint32_t hbits; /* htab has 1 << hbits slots, at least 2 * cap */
        uint32_t *active; /* indexes of the active producers */
        uint32_t nactive, active_cap;
        size_t idle_bytes; /* sum of rle_len */
        uint64_t lost;     /* windows forgotten: beyond max.producers or
                              the idle budget (capacity reports) */
        uint64_t tick;
        rbk__evicted_t evicted[RBK__EVICTED_RING];
        uint32_t nevicted, evicted_next;
        GHashTable *foreign; /* rbk__fkey_t* set, NULL until first use */
        rbk__fkey_t **fring; /* FIFO, oldest at fhead */
        size_t fcap, fhead, fcount;
        size_t mem; /* bytes held by this window */
} rbk__win_t;

typedef struct rbk__pkey_s {
        const char *topic;
        int32_t partition;
} rbk__pkey_t;

/* The partition lock. Critical sections are short (a bit test, a bit set,
 * an encode of at most a few hundred KiB for a save), the common case is
 * uncontended (calls for one partition are serialized by the consumer), and
 * it is taken twice per message: an inline test-and-set lock costs a third
 * of a GMutex pair there. Contended waiters spin briefly, then yield. */
typedef struct rbk__plock_s {
        int v;
} rbk__plock_t;

static inline void rbk__plock_lock(rbk__plock_t *l) {
        if (G_LIKELY(!__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE)))
                return;
        for (unsigned spins = 0;; spins++) {
                if (!__atomic_load_n(&l->v, __ATOMIC_RELAXED) &&
                    !__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
                        return;
                if (spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
                        __builtin_ia32_pause();
#endif
                } else
                        sched_yield();
        }
}

static inline void rbk__plock_unlock(rbk__plock_t *l) {
        __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE);
}

typedef struct rbk__dpart_s {
        rbk__pkey_t key; /* first: the map's key; topic owned */
        rbk__plock_t lock;
        int assigned;
        int revoked; /* revoked and not assigned again: no auto-assign */
        rbk__win_t win;
        uint64_t rec_gen, saved_gen; /* dirty iff different */
        int64_t last_offset;
        /* the last id parsed (check then record parse the same id) */
        unsigned char last_id[RBK_MSGID_STR_SIZE];
        size_t last_len; /* 0: nothing cached */
        rbk_msgid_t last_m;
        int last_ours;
        /* counters, atomic */
        uint64_t dups, unprovable, no_id;
        size_t mem; /* atomic copy of win.mem + shell while assigned */
        /* capacity reports: win.lost at the last one, and the rec_gen
         * before which the next one waits (one per window of records) */
        uint64_t lost_seen, cap_next;
} rbk__dpart_t;

typedef struct rbk__store_holder_s {
        rbk__held_t held; /* first: the configuration keeps it as this */
        rbk_dedup_store_t store;
} rbk__store_holder_t;

struct rbk__dedup_s {
        uint64_t serial; /* distinguishes instances for the thread cache */
        char *group;
        uint64_t window, wmask;
        size_t wwords;
        uint32_t max_producers;
        uint32_t active_producers; /* <= max_producers */
        size_t idle_bytes;         /* budget of compacted windows */
        size_t foreign_window;
        uint64_t seed;
        rbk__store_holder_t *holder; /* NULL without a store */
        pthread_mutex_t lock;        /* the map only (pthread: visible to TSan) */
        GHashTable *parts;           /* rbk__dpart_t* (key = &part->key) */
        rbk__dedup_error_cb_t *error_cb;
        void *error_opaque;
        rbk__dedup_capacity_cb_t *capacity_cb;
        void *capacity_opaque;
};

static uint64_t rbk__dedup_serial_next = 1;

/* ---------------------------------------------------------------- conf */

static rbk_err_t rbk__dedup_parse_prop(const char *name, const char *value,
                                       uint64_t *out, char *errstr,
                                       size_t errstr_size) {
        uint64_t min, max;
        int pow2 = 0;
        guint64 v;

        if (!strcmp(name, RBK__DEDUP_WINDOW_PROP)) {
                min = RBK__WINDOW_MIN;
                max = RBK__WINDOW_MAX;
                pow2 = 1;
        } else if (!strcmp(name, RBK__DEDUP_MAX_PRODUCERS_PROP)) {
                min = 1;
                max = RBK__MAX_PRODUCERS_MAX;
        } else if (!strcmp(name, RBK__DEDUP_ACTIVE_PRODUCERS_PROP)) {
                min = 1;
                max = RBK__ACTIVE_PRODUCERS_MAX;
        } else if (!strcmp(name, RBK__DEDUP_IDLE_BYTES_PROP)) {
                min = 0;
                max = RBK__IDLE_BYTES_MAX;
        } else if (!strcmp(name, RBK__DEDUP_FOREIGN_WINDOW_PROP)) {
                min = 0;
                max = RBK__FOREIGN_WINDOW_MAX;
        } else {
                return rbk__seterr(errstr, errstr_size, RBK_ERR_NOT_FOUND,
                                   "%s: not a dedup property", name);
        }
        if (!value || !g_ascii_string_to_unsigned(value, 10, min, max, &v,
                                                  NULL))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                   "%s: expected an integer from %" G_GUINT64_FORMAT
                                   " to %" G_GUINT64_FORMAT "%s",
                                   name, (guint64)min, (guint64)max,
                                   pow2 ? " that is a power of two" : "");
        if (pow2 && (v & (v - 1)))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                   "%s: %" G_GUINT64_FORMAT
                                   " is not a power of two",
                                   name, (guint64)v);
        *out = v;
        return RBK_OK;
}

rbk_err_t rbk__dedup_conf_check(const char *name, const char *value,
                                char *errstr, size_t errstr_size) {
        uint64_t v;
        if (!name)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "NULL property name");
        return rbk__dedup_parse_prop(name, value, &v, errstr, errstr_size);
}

static uint64_t rbk__dedup_conf_get(const rbk_conf_t *conf, const char *name,
                                    uint64_t def) {
        const char *value;
        uint64_t v;
        if (!conf || !conf->props)
                return def;
        value = g_hash_table_lookup(conf->props, name);
        if (!value)
                return def;
        if (rbk__dedup_parse_prop(name, value, &v, NULL, 0) == RBK_OK)
                return v;
        /* Accepted by a wider check elsewhere: clamp a number to the bounds
         * this file supports; anything else gets the default. */
        guint64 n;
        if (!g_ascii_string_to_unsigned(value, 10, 0, G_MAXUINT64, &n, NULL))
                return def;
        if (!strcmp(name, RBK__DEDUP_MAX_PRODUCERS_PROP))
                return n < 1 ? 1 : n > RBK__MAX_PRODUCERS_MAX ? RBK__MAX_PRODUCERS_MAX : n;
        if (!strcmp(name, RBK__DEDUP_ACTIVE_PRODUCERS_PROP))
                return n < 1 ? 1 : n > RBK__ACTIVE_PRODUCERS_MAX ? RBK__ACTIVE_PRODUCERS_MAX : n;
        if (!strcmp(name, RBK__DEDUP_IDLE_BYTES_PROP))
                return n > RBK__IDLE_BYTES_MAX ? RBK__IDLE_BYTES_MAX : n;
        if (!strcmp(name, RBK__DEDUP_FOREIGN_WINDOW_PROP))
                return n > RBK__FOREIGN_WINDOW_MAX ? RBK__FOREIGN_WINDOW_MAX : n;
        return def;
}

/* ---------------------------------------------------------------- store holder */

static void rbk__store_holder_destroy(rbk__held_t *held) {
        rbk__store_holder_t *h = (rbk__store_holder_t *)held;
        if (h->store.destroy)
                h->store.destroy(h->store.opaque);
        g_free(h);
}

rbk_err_t rbk_conf_set_dedup_store(rbk_conf_t *conf,
                                   const rbk_dedup_store_t *store,
                                   char *errstr, size_t errstr_size) {
        rbk__store_holder_t *h = NULL;

        if (!conf)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "rbk_conf_set_dedup_store: NULL conf");
        if (store) {
                if (store->version != RBK_DEDUP_STORE_VERSION)
                        return rbk__seterr(
                            errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "rbk_conf_set_dedup_store: store version %d, "
                            "expected %d (initialise with RBK_DEDUP_STORE_INIT)",
                            store->version, RBK_DEDUP_STORE_VERSION);
                if (!store->load || !store->save)
                        return rbk__seterr(
                            errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "rbk_conf_set_dedup_store: the load and save "
                            "callbacks are required");
                h = g_new0(rbk__store_holder_t, 1);
                h->held.refcnt = 1;
                h->held.destroy = rbk__store_holder_destroy;
                h->store = *store;
        }
        rbk__held_unref(conf->dedup_store);
        conf->dedup_store = h ? &h->held : NULL;
        return RBK_OK;
}

/* ---------------------------------------------------------------- hashing, CRC */

static uint64_t rbk__mix(uint64_t z) {
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static uint64_t rbk__hash_bytes(uint64_t seed, const unsigned char *p,
                                size_t len) {
        uint64_t h = seed ^ UINT64_C(0xcbf29ce484222325);
        for (size_t i = 0; i < len; i++)
                h = (h ^ p[i]) * UINT64_C(0x100000001b3);
        return rbk__mix(h ^ len);
}

static guint rbk__fkey_hash(gconstpointer k) {
        return (guint)((const rbk__fkey_t *)k)->hash;
}

static gboolean rbk__fkey_equal(gconstpointer a, gconstpointer b) {
        const rbk__fkey_t *x = a, *y = b;
        return x->hash == y->hash && x->len == y->len &&
               !memcmp(x->data, y->data, x->len);
}

/* CRC-32C (Castagnoli), reflected, table-driven. */
static uint32_t rbk__crc_table[256];

static void rbk__crc_init(void) {
        static gsize done = 0;
        if (g_once_init_enter(&done)) {
                for (uint32_t i = 0; i < 256; i++) {
                        uint32_t c = i;
                        for (int k = 0; k < 8; k++)
                                c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
                        rbk__crc_table[i] = c;
                }
                g_once_init_leave(&done, 1);
        }
}

static uint32_t rbk__crc32c(const unsigned char *p, size_t len) {
        uint32_t c = 0xffffffffu;
        rbk__crc_init();
        for (size_t i = 0; i < len; i++)
                c = rbk__crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
        return c ^ 0xffffffffu;
}

/* ---------------------------------------------------------------- windows */

static void rbk__win_init(rbk__win_t *w) {
        memset(w, 0, sizeof(*w));
}

static void rbk__fkey_destroy(gpointer p) {
        g_free(p);
}

static size_t rbk__fkey_cost(const rbk__fkey_t *k) {
        /* the key, plus a GHashTable slot (hash, key; sized at ~2x load) */
        return sizeof(*k) + k->len + 2 * (sizeof(guint) + sizeof(gpointer));
}

static void rbk__win_clear(rbk__win_t *w) {
        for (uint32_t i = 0; i < w->nprod; i++) {
                g_free(w->prods[i].bits);
                g_free(w->prods[i].rle);
        }
        g_free(w->prods);
        g_free(w->htab);
        g_free(w->active);
        if (w->foreign)
                g_hash_table_destroy(w->foreign); /* frees the keys */
        g_free(w->fring);
        rbk__win_init(w);
}

/* Clears the bit positions of sequences from..from+n-1 (n < W). */
static void rbk__bits_clear_range(uint64_t *bits, uint64_t wmask,
                                  uint64_t from, uint64_t n) {
        uint64_t p = from & wmask;
        while (n > 0) {
                uint64_t bit = p & 63;
                uint64_t take = 64 - bit;
                if (take > n)
                        take = n;
                uint64_t m = take == 64 ? ~UINT64_C(0)
                                        : ((UINT64_C(1) << take) - 1) << bit;
                bits[p >> 6] &= ~m;
                n -= take;
                p = (p + take) & wmask;
        }
}

/* Sets the bit positions from..from+n-1 (no wrap: from + n <= W). */
static void rbk__bits_set_run(uint64_t *bits, uint64_t from, uint64_t n) {
        while (n > 0) {
                uint64_t bit = from & 63;
                uint64_t take = 64 - bit;
                if (take > n)
                        take = n;
                bits[from >> 6] |= take == 64 ? ~UINT64_C(0)
                                              : ((UINT64_C(1) << take) - 1)
                                                    << bit;
                n -= take;
                from += take;
        }
}

static inline int rbk__bit_test(const uint64_t *bits, uint64_t wmask,
                                uint64_t s) {
        uint64_t p = s & wmask;
        return (int)((bits[p >> 6] >> (p & 63)) & 1);
}

static inline void rbk__bit_set(uint64_t *bits, uint64_t wmask, uint64_t s) {
        uint64_t p = s & wmask;
        bits[p >> 6] |= UINT64_C(1) << (p & 63);
}

/* ---------------------------------------------------------------- compacted windows
 *
 * An idle producer's bitmap is kept compacted, in the smaller of two forms,
 * both over the bit positions of its sequences in [lo, hwm] (lo: the lowest
 * sequence recorded in the window), in ring order from word `base`:
 *   - runs: tag 0, base, then per run of set positions the gap from the end
 *     of the previous run and the run's length - 1 (offsets from base * 64),
 *     as LEB128 varints: 2 to 4 bytes a run, for the sparse case (a producer
 *     spread over many partitions);
 *   - words: tag 1, base, the word count c, then c 64-bit words: 1 bit a
 *     sequence of the span, for the dense case.
 * Only the words of [lo, hwm] are scanned, so compacting a producer that
 * sent a few thousand messages reads a few hundred bytes, not W/8. */

#define RBK__CW_RUNS 0
#define RBK__CW_WORDS 1

static size_t rbk__varint_put(unsigned char *p, uint64_t v) {
        size_t n = 0;
        while (v >= 0x80) {
                p[n++] = (unsigned char)(v | 0x80);
                v >>= 7;
        }
        p[n++] = (unsigned char)v;
        return n;
}

static inline int rbk__varint_get(const unsigned char *p, uint32_t len,
                                  uint32_t *off, uint64_t *v) {
        uint64_t x = 0;
        for (unsigned shift = 0; *off < len && shift < 64; shift += 7) {
                unsigned char c = p[(*off)++];
                x |= (uint64_t)(c & 0x7f) << shift;
                if (!(c & 0x80)) {
                        *v = x;
                        return 0;
                }
        }
        return -1;
}

/* The bytes a compacted window of @len bytes costs (malloc overhead
 * included). */
static size_t rbk__rle_cost(uint32_t len) {
        return len ? len + 16 : 0;
}

/* The ring words holding sequences [lo, hwm] of a producer: the first one
 * and how many. */
static void rbk__prod_words(const rbk__dedup_t *d, const rbk__prod_t *p,
                            uint64_t *first, uint64_t *count) {
        uint64_t lo = p->lo;
        if (p->hwm >= d->window && lo < p->hwm - d->window + 1)
                lo = p->hwm - d->window + 1;
        uint64_t n = (p->hwm >> 6) - (lo >> 6) + 1;
        if (n > d->wwords)
                n = d->wwords;
        *first = ((p->hwm >> 6) - (n - 1)) % d->wwords;
        *count = n;
}

/* Compacts producer @p's bitmap and clears it. Returns a g_malloc'd
 * buffer, or NULL (*lenp = 0) when no bit is set. */
static unsigned char *rbk__rle_encode(const rbk__dedup_t *d,
                                      const rbk__prod_t *p, uint32_t *lenp) {
        uint64_t *bits = p->bits;
        uint64_t base, nw;
        size_t cap = 0, len = 0;
        unsigned char *out = NULL;
        uint64_t pos = 0, start = 0; /* end of the previous run; open run */
        uint64_t fnz = UINT64_MAX, lnz = 0; /* nonzero words, ring order */
        int open = 0;

        *lenp = 0;
        if (p->lo == UINT64_MAX || p->lo > p->hwm)
                return NULL; /* nothing recorded */
        rbk__prod_words(d, p, &base, &nw);

        /* Count the runs first: at 2 bytes a run or more, a dense window
         * goes into the words form without encoding its runs. */
        uint64_t nruns = 0, carry = 0;
        for (uint64_t j = 0; j < nw; j++) {
                uint64_t x = bits[(base + j) % d->wwords];
                if (!x) {
                        carry = 0;
                        continue;
                }
                if (fnz == UINT64_MAX)
                        fnz = j;
                lnz = j;
                nruns += (uint64_t)__builtin_popcountll(x & ~((x << 1) | carry));
                carry = x >> 63;
        }
        if (fnz == UINT64_MAX)
                return NULL;
        int words = 2 * nruns + 12 >= 8 * (lnz - fnz + 1);

#define RBK__RLE_EMIT(end)                                                    \
        do {                                                                  \
                if (len + 20 > cap) {                                         \
                        cap = cap ? cap * 2 : 64;                             \
                        out = g_realloc(out, cap);                            \
                }                                                             \
                len += rbk__varint_put(out + len, start - pos);               \
                len += rbk__varint_put(out + len, (end) - start - 1);         \
                pos = (end);                                                  \
        } while (0)

        for (uint64_t j = fnz; !words && j <= lnz; j++) {
                uint64_t x = bits[(base + j) % d->wwords];
                if (!x && !open)
                        continue;
                if (x == ~UINT64_C(0) && open)
                        continue;
                unsigned b = 0;
                while (b < 64) {
                        if (open) {
                                uint64_t y = ~x >> b;
                                if (!y)
                                        break;
                                b += (unsigned)__builtin_ctzll(y);
                                RBK__RLE_EMIT(j * 64 + b);
                                open = 0;
                        } else {
                                uint64_t y = x >> b;
                                if (!y)
                                        break;
                                b += (unsigned)__builtin_ctzll(y);
                                start = j * 64 + b;
                                open = 1;
                        }
                }
        }
        if (open)
                RBK__RLE_EMIT((lnz + 1) * 64);
#undef RBK__RLE_EMIT
        unsigned char hdr[24];
        size_t runs_hdr = 1 + rbk__varint_put(hdr, base);
        uint64_t wbase = (base + fnz) % d->wwords, c = lnz - fnz + 1;
        size_t words_hdr = 1 + rbk__varint_put(hdr, wbase);
        words_hdr += rbk__varint_put(hdr, c);
        unsigned char *res;
        if (words || words_hdr + 8 * c < runs_hdr + len) {
                res = g_malloc(words_hdr + 8 * c);
                res[0] = RBK__CW_WORDS;
                size_t o = 1 + rbk__varint_put(res + 1, wbase);
                o += rbk__varint_put(res + o, c);
                for (uint64_t j = 0; j < c; j++, o += 8)
                        memcpy(res + o, &bits[(wbase + j) % d->wwords], 8);
                *lenp = (uint32_t)o;
        } else {
                res = g_malloc(runs_hdr + len);
                res[0] = RBK__CW_RUNS;
                size_t o = 1 + rbk__varint_put(res + 1, base);
                memcpy(res + o, out, len);
                *lenp = (uint32_t)(o + len);
        }
        g_free(out);
        for (uint64_t j = fnz; j <= lnz; j++)
                bits[(base + j) % d->wwords] = 0;
        return res;
}

/* Sets the bits of a compacted window in @bits (all clear). */
static void rbk__rle_expand(const rbk__dedup_t *d, const unsigned char *p,
                            uint32_t len, uint64_t *bits) {
        uint32_t off = 1;
        uint64_t base, pos = 0, gap, n;
        if (len < 2 || rbk__varint_get(p, len, &off, &base))
                return;
        if (p[0] == RBK__CW_WORDS) {
                if (rbk__varint_get(p, len, &off, &n) || n > d->wwords)
                        return;
                for (uint64_t j = 0; j < n && off + 8 <= len; j++, off += 8)
                        memcpy(&bits[(base + j) % d->wwords], p + off, 8);
                return;
        }
        base *= 64;
        while (off < len && !rbk__varint_get(p, len, &off, &gap) &&
               !rbk__varint_get(p, len, &off, &n)) {
                pos += gap;
                n += 1;
                if (pos >= d->window || n > d->window - pos)
                        return; /* cannot happen: we encoded it */
                /* the run, at ring positions base + pos.., may wrap */
                uint64_t at = (base + pos) & d->wmask;
                uint64_t first = n < d->window - at ? n : d->window - at;
                rbk__bits_set_run(bits, at, first);
                if (first < n)
                        rbk__bits_set_run(bits, 0, n - first);
                pos += n;
        }
}

/* Is bit position @q set in a compacted window? */
static int rbk__rle_test(const rbk__dedup_t *d, const unsigned char *p,
                         uint32_t len, uint64_t q) {
        uint32_t off = 1;
        uint64_t base, pos = 0, gap, n;
        if (len < 2 || rbk__varint_get(p, len, &off, &base))
                return 0;
        q = (q - base * 64) & d->wmask; /* offset from base */
        if (p[0] == RBK__CW_WORDS) {
                uint64_t word;
                if (rbk__varint_get(p, len, &off, &n) || (q >> 6) >= n ||
                    off + 8 * (q >> 6) + 8 > len)
                        return 0;
                memcpy(&word, p + off + 8 * (q >> 6), 8);
                return (int)((word >> (q & 63)) & 1);
        }
        while (off < len && !rbk__varint_get(p, len, &off, &gap) &&
               !rbk__varint_get(p, len, &off, &n)) {
                pos += gap;
                if (q < pos)
                        return 0;
                pos += n + 1;
                if (q < pos)
                        return 1;
        }
        return 0;
}

/* ---------------------------------------------------------------- producers */

static inline uint32_t rbk__hslot(const rbk__win_t *w, uint64_t pid) {
        return (uint32_t)((pid * UINT64_C(0x9e3779b97f4a7c15)) >>
                          (64 - w->hbits));
}

static inline int rbk__win_find(rbk__win_t *w, uint64_t pid) {
        if (G_UNLIKELY(!w->nprod))
                return -1;
        if (w->prods[w->hint].pid == pid)
                return (int)w->hint;
        uint32_t mask = (1u << w->hbits) - 1;
        for (uint32_t h = rbk__hslot(w, pid);; h = (h + 1) & mask) {
                uint32_t e = w->htab[h];
                if (!e)
                        return -1;
                if (w->prods[e - 1].pid == pid) {
                        w->hint = e - 1;
                        return (int)(e - 1);
                }
        }
}

/* Adds prods[i] (its pid set, not in the table) to the table. */
static void rbk__htab_add(rbk__win_t *w, uint32_t i) {
        uint32_t mask = (1u << w->hbits) - 1;
        uint32_t h = rbk__hslot(w, w->prods[i].pid);
        while (w->htab[h])
                h = (h + 1) & mask;
        w->htab[h] = i + 1;
}

/* Removes prods[i] (in the table) from it: backward-shift deletion. */
static void rbk__htab_del(rbk__win_t *w, uint32_t i) {
        uint32_t mask = (1u << w->hbits) - 1;
        uint32_t h = rbk__hslot(w, w->prods[i].pid);
        while (w->htab[h] != i + 1)
                h = (h + 1) & mask;
        for (;;) {
                uint32_t j = h;
                w->htab[h] = 0;
                for (;;) {
                        j = (j + 1) & mask;
                        if (!w->htab[j])
                                return;
                        uint32_t k = rbk__hslot(w, w->prods[w->htab[j] - 1].pid);
                        /* entry j stays if its home k is cyclically in (h, j] */
                        if (h <= j ? (h < k && k <= j) : (h < k || k <= j))
                                continue;
                        w->htab[h] = w->htab[j];
                        h = j;
                        break;
                }
        }
}

static int rbk__win_evicted_find(const rbk__win_t *w, uint64_t pid) {
        for (uint32_t i = 0; i < w->nevicted; i++)
                if (w->evicted[i].pid == pid)
                        return (int)i;
        return -1;
}

static void rbk__win_evicted_add(rbk__win_t *w, uint64_t pid, uint64_t hwm) {
        int i = rbk__win_evicted_find(w, pid);
        if (i >= 0) {
                if (hwm > w->evicted[i].hwm)
                        w->evicted[i].hwm = hwm;
                return;
        }
        w->evicted[w->evicted_next].pid = pid;
        w->evicted[w->evicted_next].hwm = hwm;
        w->evicted_next = (w->evicted_next + 1) % RBK__EVICTED_RING;
        if (w->nevicted < RBK__EVICTED_RING)
                w->nevicted++;
}

/* Removes entry i of the evicted ring (order does not matter for lookups,
 * only for which one is overwritten next: keep it simple). */
static void rbk__win_evicted_del(rbk__win_t *w, int i) {
        w->evicted[i].pid = 0;
        w->evicted[i].hwm = 0;
}

/* Verdict for sequence s of producer pid; does not modify the window
 * except the lookup hint. */
static rbk__dedup_verdict_t rbk__win_check_seq(const rbk__dedup_t *d,
                                               rbk__win_t *w, uint64_t pid,
                                               uint64_t s) {
        int i = rbk__win_find(w, pid);
        if (i < 0) {
                int e = rbk__win_evicted_find(w, pid);
                if (e >= 0 && s <= w->evicted[e].hwm)
                        return RBK__DEDUP_UNPROVABLE;
                return RBK__DEDUP_NEW;
        }
        const rbk__prod_t *p = &w->prods[i];
        if (s <= p->hwm) {
                if (p->hwm - s >= d->window)
                        return RBK__DEDUP_UNPROVABLE;
                if (G_LIKELY(p->bits)
                        ? rbk__bit_test(p->bits, d->wmask, s)
                        : (p->rle &&
                           rbk__rle_test(d, p->rle, p->rle_len, s & d->wmask)))
                        return RBK__DEDUP_DUPLICATE;
        }
        return s < p->floor ? RBK__DEDUP_UNPROVABLE : RBK__DEDUP_NEW;
}

/* Forgets an idle producer's compacted window (its high-water mark stays,
 * and everything up to it becomes UNPROVABLE). */
static void rbk__win_drop_idle(rbk__win_t *w, rbk__prod_t *p) {
        if (!p->rle)
                return;
        w->idle_bytes -= p->rle_len;
        w->mem -= rbk__rle_cost(p->rle_len);
        g_free(p->rle);
        p->rle = NULL;
        p->rle_len = 0;
        p->lo = UINT64_MAX;
        if (p->floor <= p->hwm)
                p->floor = p->hwm + 1;
        w->lost++;
}

/* Compacted windows over rbk.dedup.idle.bytes: the least recently recorded
 * ones are forgotten. */
static void rbk__win_idle_budget(const rbk__dedup_t *d, rbk__win_t *w) {
        while (w->idle_bytes > d->idle_bytes) {
                rbk__prod_t *v = NULL;
                for (uint32_t i = 0; i < w->nprod; i++) {
                        rbk__prod_t *p = &w->prods[i];
                        if (p->rle && (!v || p->tick < v->tick))
                                v = p;
                }
                if (!v)
                        break;
                rbk__win_drop_idle(w, v);
        }
}

/* Makes active producer i idle: compacts its bitmap, which it returns
 * (cleared) for another producer. */
static uint64_t *rbk__win_compact(const rbk__dedup_t *d, rbk__win_t *w,
                                  uint32_t i) {
        rbk__prod_t *p = &w->prods[i];
        uint64_t *bits = p->bits;
        p->rle = rbk__rle_encode(d, p, &p->rle_len);
        p->bits = NULL;
        w->idle_bytes += p->rle_len;
        w->mem += rbk__rle_cost(p->rle_len);
        uint32_t last = w->active[--w->nactive];
        w->active[p->slot] = last;
        w->prods[last].slot = p->slot;
        return bits;
}

/* Gives idle producer i a bitmap (a new one, or that of the least recently
 * recorded active producer, compacted) and expands its window into it. */
static void rbk__win_activate(const rbk__dedup_t *d, rbk__win_t *w,
                              uint32_t i) {
        uint64_t *bits;
        if (!w->active) {
                w->active_cap = d->active_producers;
                w->active = g_new(uint32_t, w->active_cap);
                w->mem += w->active_cap * sizeof(uint32_t);
        }
        if (w->nactive < w->active_cap) {
                bits = g_new0(uint64_t, d->wwords);
                w->mem += d->wwords * sizeof(uint64_t);
        } else {
                uint32_t v = w->active[0];
                for (uint32_t j = 1; j < w->nactive; j++)
                        if (w->prods[w->active[j]].tick < w->prods[v].tick)
                                v = w->active[j];
                bits = rbk__win_compact(d, w, v);
        }
        rbk__prod_t *p = &w->prods[i];
        if (p->rle) {
                rbk__rle_expand(d, p->rle, p->rle_len, bits);
                w->idle_bytes -= p->rle_len;
                w->mem -= rbk__rle_cost(p->rle_len);
                g_free(p->rle);
                p->rle = NULL;
                p->rle_len = 0;
        }
        p->bits = bits;
        p->slot = w->nactive;
        w->active[w->nactive++] = i;
        rbk__win_idle_budget(d, w);
}

/* A slot for a new producer, active: appended, or the least recently
 * recorded one forgotten (into the evicted ring). */
static rbk__prod_t *rbk__win_new_prod(const rbk__dedup_t *d, rbk__win_t *w,
                                      uint64_t pid) {
        uint32_t i;
        uint64_t floor = 0;
        int e = rbk__win_evicted_find(w, pid);

        if (e >= 0) {
                floor = w->evicted[e].hwm + 1;
                rbk__win_evicted_del(w, e);
        }
        if (w->nprod < d->max_producers) {
                if (w->nprod == w->cap) {
                        uint32_t ncap = w->cap ? w->cap * 2 : 4;
                        if (ncap > d->max_producers)
                                ncap = d->max_producers;
                        w->prods = g_renew(rbk__prod_t, w->prods, ncap);
                        w->mem += (ncap - w->cap) * sizeof(rbk__prod_t);
                        w->cap = ncap;
                        uint32_t hb = 1;
                        while ((1u << hb) < 2 * ncap)
                                hb++;
                        if (hb != w->hbits) {
                                w->mem += ((size_t)(1u << hb) -
                                           (w->htab ? (size_t)(1u << w->hbits) : 0)) *
                                          sizeof(uint32_t);
                                g_free(w->htab);
                                w->hbits = hb;
                                w->htab = g_new0(uint32_t, (size_t)1 << hb);
                                for (uint32_t j = 0; j < w->nprod; j++)
                                        rbk__htab_add(w, j);
                        }
                }
                i = w->nprod++;
                memset(&w->prods[i], 0, sizeof(w->prods[i]));
        } else {
                i = 0;
                for (uint32_t j = 1; j < w->nprod; j++)
                        if (w->prods[j].tick < w->prods[i].tick)
                                i = j;
                rbk__prod_t *v = &w->prods[i];
                rbk__win_evicted_add(w, v->pid, v->hwm);
                rbk__htab_del(w, i);
                if (v->bits) {
                        memset(v->bits, 0, d->wwords * sizeof(uint64_t));
                        w->lost++;
                } else {
                        rbk__win_drop_idle(w, v); /* counts it */
                }
        }
        rbk__prod_t *p = &w->prods[i];
        p->pid = pid;
        p->hwm = 0;
        p->floor = floor;
        p->tick = 0;
        p->lo = UINT64_MAX;
        rbk__htab_add(w, i);
        if (!p->bits)
                rbk__win_activate(d, w, i);
        w->hint = i;
        return p;
}

static void rbk__win_record_seq(const rbk__dedup_t *d, rbk__win_t *w,
                                uint64_t pid, uint64_t s) {
        int i = rbk__win_find(w, pid);
        rbk__prod_t *p;
        if (G_LIKELY(i >= 0)) {
                p = &w->prods[i];
                if (G_UNLIKELY(!p->bits))
                        rbk__win_activate(d, w, (uint32_t)i);
        } else {
                p = rbk__win_new_prod(d, w, pid);
        }

        p->tick = ++w->tick;
        if (s > p->hwm) {
                uint64_t delta = s - p->hwm;
                if (delta >= d->window) {
                        memset(p->bits, 0, d->wwords * sizeof(uint64_t));
                        p->lo = s;
                } else {
                        rbk__bits_clear_range(p->bits, d->wmask, p->hwm + 1,
                                              delta);
                }
                p->hwm = s;
        } else if (p->hwm - s >= d->window) {
                return; /* older than the window: cannot be kept */
        }
        if (s < p->lo)
                p->lo = s;
        rbk__bit_set(p->bits, d->wmask, s);
}

static int rbk__win_foreign_has(const rbk__dedup_t *d, rbk__win_t *w,
                                const void *id, size_t len) {
        if (!w->foreign)
                return 0;
        rbk__fkey_t k = {rbk__hash_bytes(d->seed, id, len), len, id};
        return g_hash_table_contains(w->foreign, &k);
}

static void rbk__win_foreign_add(const rbk__dedup_t *d, rbk__win_t *w,
                                 const void *id, size_t len) {
        if (d->foreign_window == 0)
                return;
        if (rbk__win_foreign_has(d, w, id, len))
                return;
        if (!w->foreign)
                w->foreign = g_hash_table_new_full(
                    rbk__fkey_hash, rbk__fkey_equal, rbk__fkey_destroy, NULL);
        if (w->fcount == w->fcap) {
                if (w->fcap < d->foreign_window) {
                        size_t ncap = w->fcap ? w->fcap * 2 : 64;
                        if (ncap > d->foreign_window)
                                ncap = d->foreign_window;
                        rbk__fkey_t **n = g_new(rbk__fkey_t *, ncap);
                        for (size_t i = 0; i < w->fcount; i++)
                                n[i] = w->fring[(w->fhead + i) % w->fcap];
                        g_free(w->fring);
                        w->fring = n;
                        w->mem += (ncap - w->fcap) * sizeof(rbk__fkey_t *);
                        w->fcap = ncap;
                        w->fhead = 0;
                } else {
                        rbk__fkey_t *old = w->fring[w->fhead];
                        w->fhead = (w->fhead + 1) % w->fcap;
                        w->fcount--;
                        w->mem -= rbk__fkey_cost(old);
                        g_hash_table_remove(w->foreign, old); /* frees it */
                }
        }
        rbk__fkey_t *k = g_malloc(sizeof(*k) + len);
        k->hash = rbk__hash_bytes(d->seed, id, len);
        k->len = len;
        memcpy(k->inl, id, len);
        k->data = k->inl;
        g_hash_table_add(w->foreign, k);
        w->fring[(w->fhead + w->fcount) % w->fcap] = k;
        w->fcount++;
        w->mem += rbk__fkey_cost(k);
}

/* ---------------------------------------------------------------- blob */

typedef struct rbk__buf_s {
        unsigned char *p;
        size_t len, cap;
} rbk__buf_t;

static void rbk__buf_put(rbk__buf_t *b, const void *src, size_t n) {
        if (b->len + n > b->cap) {
                size_t ncap = b->cap ? b->cap * 2 : 256;
                while (ncap < b->len + n)
                        ncap *= 2;
                b->p = g_realloc(b->p, ncap);
                b->cap = ncap;
        }
        memcpy(b->p + b->len, src, n);
        b->len += n;
}

static void rbk__buf_u32(rbk__buf_t *b, uint32_t v) {
        unsigned char x[4];
        for (int i = 0; i < 4; i++)
                x[i] = (unsigned char)(v >> (8 * i));
        rbk__buf_put(b, x, 4);
}

static void rbk__buf_u64(rbk__buf_t *b, uint64_t v) {
        unsigned char x[8];
        for (int i = 0; i < 8; i++)
                x[i] = (unsigned char)(v >> (8 * i));
        rbk__buf_put(b, x, 8);
}

static void rbk__wr_u32(unsigned char *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (unsigned char)(v >> (8 * i));
}

/* Serializes a window: see docs/dedup.md for the layout. Returns a g_malloc'd
 * buffer. */
static unsigned char *rbk__win_encode(const rbk__dedup_t *d,
                                      const rbk__win_t *w, size_t *sizep) {
        rbk__buf_t b = {0};
        uint32_t nev = 0;

        for (uint32_t i = 0; i < w->nevicted; i++)
                if (w->evicted[i].pid)
                        nev++;
        rbk__buf_put(&b, RBK__BLOB_MAGIC, 4);
        rbk__buf_u32(&b, RBK__BLOB_VERSION);
        rbk__buf_u32(&b, 0); /* payload length, patched below */
        rbk__buf_u32(&b, 0); /* CRC-32C of the payload, patched below */

        rbk__buf_u32(&b, (uint32_t)d->window);
        rbk__buf_u32(&b, w->nprod);
        rbk__buf_u32(&b, nev);
        rbk__buf_u32(&b, (uint32_t)w->fcount);
        rbk__buf_u64(&b, w->tick);
        uint64_t *tmp = NULL; /* an idle producer's window, expanded */
        for (uint32_t i = 0; i < w->nprod; i++) {
                const rbk__prod_t *p = &w->prods[i];
                uint64_t *bits = p->bits;
                uint32_t nz = 0;
                if (!bits) {
                        if (!tmp)
                                tmp = g_new0(uint64_t, d->wwords);
                        if (p->rle)
                                rbk__rle_expand(d, p->rle, p->rle_len, tmp);
                        bits = tmp;
                }
                for (size_t k = 0; k < d->wwords; k++)
                        if (bits[k])
                                nz++;
                rbk__buf_u64(&b, p->pid);
                rbk__buf_u64(&b, p->hwm);
                rbk__buf_u64(&b, p->floor);
                rbk__buf_u64(&b, p->tick);
                rbk__buf_u32(&b, nz);
                for (size_t k = 0; k < d->wwords; k++) {
                        if (!bits[k])
                                continue;
                        rbk__buf_u32(&b, (uint32_t)k);
                        rbk__buf_u64(&b, bits[k]);
                        if (bits == tmp)
                                tmp[k] = 0;
                }
        }
        g_free(tmp);
        for (uint32_t i = 0; i < w->nevicted; i++) {
                if (!w->evicted[i].pid)
                        continue;
                rbk__buf_u64(&b, w->evicted[i].pid);
                rbk__buf_u64(&b, w->evicted[i].hwm);
        }
        for (size_t i = 0; i < w->fcount; i++) {
                const rbk__fkey_t *k = w->fring[(w->fhead + i) % w->fcap];
                rbk__buf_u32(&b, (uint32_t)k->len);
                rbk__buf_put(&b, k->data, k->len);
        }
        rbk__wr_u32(b.p + 8, (uint32_t)(b.len - RBK__BLOB_HDR));
        rbk__wr_u32(b.p + 12, rbk__crc32c(b.p + RBK__BLOB_HDR,
                                          b.len - RBK__BLOB_HDR));
        *sizep = b.len;
        return b.p;
}

typedef struct rbk__rd_s {
        const unsigned char *p;
        size_t len, off;
} rbk__rd_t;

static int rbk__rd_u32(rbk__rd_t *r, uint32_t *v) {
        if (r->len - r->off < 4)
                return -1;
        *v = 0;
        for (int i = 0; i < 4; i++)
                *v |= (uint32_t)r->p[r->off + i] << (8 * i);
        r->off += 4;
        return 0;
}

static int rbk__rd_u64(rbk__rd_t *r, uint64_t *v) {
        if (r->len - r->off < 8)
                return -1;
        *v = 0;
        for (int i = 0; i < 8; i++)
                *v |= (uint64_t)r->p[r->off + i] << (8 * i);
        r->off += 8;
        return 0;
}

typedef struct rbk__saved_prod_s {
        uint64_t pid, hwm, floor, tick;
        size_t words_off; /* offset of the (index, word) pairs in the blob */
        uint32_t nz;
} rbk__saved_prod_t;

static int rbk__saved_prod_cmp(const void *a, const void *b) {
        const rbk__saved_prod_t *x = a, *y = b;
        /* most recently recorded first */
        return x->tick < y->tick ? 1 : x->tick > y->tick ? -1 : 0;
}

#define RBK__CORRUPT(...)                                                     \
        do {                                                                  \
                rbk__seterr(errstr, errstr_size, RBK_ERR_STORE,               \
                            "corrupt saved dedup window: " __VA_ARGS__);      \
                goto fail;                                                    \
        } while (0)

/* A blob checked and located (pass 1 of a decode): the header fields, the
 * producers with where their words are, the evicted ones, where the caller
 * ids start. Valid while the blob is. */
typedef struct rbk__blob_s {
        const unsigned char *p;
        size_t size;
        uint32_t sw, nprod, nev, nfor;
        uint64_t tick;
        rbk__saved_prod_t *sp; /* nprod entries, in blob order */
        rbk__evicted_t ev[RBK__EVICTED_RING];
        size_t foreign_off;
} rbk__blob_t;

/* Checks every field of a blob and locates its parts into *b (b->sp to
 * g_free). On any inconsistency returns RBK_ERR_STORE with the reason and
 * leaves nothing to free. */
static rbk_err_t rbk__blob_parse(const void *blob, size_t size, rbk__blob_t *b,
                                 char *errstr, size_t errstr_size) {
        rbk__rd_t r = {blob, size, 0};
        uint32_t ver, plen, crc;
        rbk__saved_prod_t *sp = NULL;

        memset(b, 0, sizeof(*b));
        if (!blob || size < RBK__BLOB_HDR)
                RBK__CORRUPT("%zu bytes, shorter than the header", size);
        if (memcmp(blob, RBK__BLOB_MAGIC, 4))
                RBK__CORRUPT("bad magic");
        r.off = 4;
        rbk__rd_u32(&r, &ver);
        rbk__rd_u32(&r, &plen);
        rbk__rd_u32(&r, &crc);
        if (ver != RBK__BLOB_VERSION)
                RBK__CORRUPT("format version %u, this library reads %u", ver,
                             RBK__BLOB_VERSION);
        if ((size_t)plen != size - RBK__BLOB_HDR)
                RBK__CORRUPT("payload length %u, blob holds %zu", plen,
                             size - RBK__BLOB_HDR);
        if (rbk__crc32c(r.p + RBK__BLOB_HDR, plen) != crc)
                RBK__CORRUPT("checksum mismatch");

        if (rbk__rd_u32(&r, &b->sw) || rbk__rd_u32(&r, &b->nprod) ||
            rbk__rd_u32(&r, &b->nev) || rbk__rd_u32(&r, &b->nfor) ||
            rbk__rd_u64(&r, &b->tick))
                RBK__CORRUPT("truncated header fields");
        if (b->sw < RBK__WINDOW_MIN || b->sw > RBK__WINDOW_MAX ||
            (b->sw & (b->sw - 1)))
                RBK__CORRUPT("window size %u", b->sw);
        if (b->nprod > RBK__MAX_PRODUCERS_MAX || b->nev > RBK__EVICTED_RING)
                RBK__CORRUPT("%u producers, %u evicted", b->nprod, b->nev);

        sp = g_new0(rbk__saved_prod_t, b->nprod ? b->nprod : 1);
        for (uint32_t i = 0; i < b->nprod; i++) {
                if (rbk__rd_u64(&r, &sp[i].pid) || rbk__rd_u64(&r, &sp[i].hwm) ||
                    rbk__rd_u64(&r, &sp[i].floor) ||
                    rbk__rd_u64(&r, &sp[i].tick) || rbk__rd_u32(&r, &sp[i].nz))
                        RBK__CORRUPT("truncated producer %u", i);
                if (!sp[i].pid)
                        RBK__CORRUPT("producer id 0");
                for (uint32_t j = 0; j < i; j++)
                        if (sp[j].pid == sp[i].pid)
                                RBK__CORRUPT("producer %016" G_GINT64_MODIFIER
                                             "x twice",
                                             (guint64)sp[i].pid);
                if (sp[i].nz > b->sw / 64 ||
                    (r.len - r.off) / 12 < (size_t)sp[i].nz)
                        RBK__CORRUPT("producer %u: %u words", i, sp[i].nz);
                sp[i].words_off = r.off;
                for (uint32_t k = 0; k < sp[i].nz; k++) {
                        uint32_t idx = 0;
                        uint64_t word = 0;
                        rbk__rd_u32(&r, &idx);
                        rbk__rd_u64(&r, &word);
                        if (idx >= b->sw / 64)
                                RBK__CORRUPT("producer %u: word index %u", i,
                                             idx);
                }
        }
        for (uint32_t i = 0; i < b->nev; i++)
                if (rbk__rd_u64(&r, &b->ev[i].pid) ||
                    rbk__rd_u64(&r, &b->ev[i].hwm))
                        RBK__CORRUPT("truncated evicted producer %u", i);
        b->foreign_off = r.off;
        for (uint32_t i = 0; i < b->nfor; i++) {
                uint32_t len = 0;
                if (rbk__rd_u32(&r, &len) || len == 0 ||
                    len > RBK_MSGID_MAX_LEN || r.len - r.off < len)
                        RBK__CORRUPT("caller-supplied id %u", i);
                r.off += len;
        }
        if (r.off != r.len)
                RBK__CORRUPT("%zu trailing bytes", r.len - r.off);
        b->p = blob;
        b->size = size;
        b->sp = sp;
        return RBK_OK;

fail:
        g_free(sp);
        memset(b, 0, sizeof(*b));
        return RBK_ERR_STORE;
}

/* Builds a window from a blob. The blob may come from a configuration with
 * another window size or bounds: what fits is kept, the rest is treated as
 * evicted. On any inconsistency returns RBK_ERR_STORE and leaves *w empty. */
static rbk_err_t rbk__win_decode(const rbk__dedup_t *d, const void *blob,
                                 size_t size, rbk__win_t *w, char *errstr,
                                 size_t errstr_size) {
        rbk__blob_t b;

        rbk__win_init(w);
        if (rbk__blob_parse(blob, size, &b, errstr, errstr_size) != RBK_OK)
                return RBK_ERR_STORE;
        uint32_t sw = b.sw, nprod = b.nprod;
        rbk__saved_prod_t *sp = b.sp;

        /* Producers most recent first; those over the bound become
         * evicted. */
        qsort(sp, nprod, sizeof(*sp), rbk__saved_prod_cmp);
        w->tick = b.tick;
        for (uint32_t i = 0; i < b.nev; i++)
                if (b.ev[i].pid)
                        rbk__win_evicted_add(w, b.ev[i].pid, b.ev[i].hwm);
        /* Insert least recent first so that the most recent end up kept. */
        for (uint32_t n = nprod; n-- > 0;) {
                rbk__saved_prod_t *s = &sp[n];
                if (n >= d->max_producers) {
                        rbk__win_evicted_add(w, s->pid, s->hwm);
                        continue;
                }
                rbk__prod_t *p = rbk__win_new_prod(d, w, s->pid);
                p->hwm = s->hwm;
                p->floor = s->floor;
                /* saved with a smaller window: what it could not hold is
                 * unknown, not new */
                if (s->hwm >= sw && p->floor < s->hwm - sw + 1)
                        p->floor = s->hwm - sw + 1;
                p->tick = s->tick;
                rbk__rd_t wr = {blob, size, s->words_off};
                for (uint32_t k = 0; k < s->nz; k++) {
                        uint32_t idx = 0;
                        uint64_t word = 0;
                        rbk__rd_u32(&wr, &idx);
                        rbk__rd_u64(&wr, &word);
                        while (word) {
                                uint64_t pos = (uint64_t)idx * 64 +
                                               (uint64_t)__builtin_ctzll(word);
                                word &= word - 1;
                                /* the sequence in (hwm - sw, hwm] at pos */
                                uint64_t back = (s->hwm - pos) & (sw - 1);
                                if (back >= s->hwm)
                                        continue; /* sequence <= 0 */
                                if (back >= d->window)
                                        continue; /* outside our window */
                                rbk__bit_set(p->bits, d->wmask, s->hwm - back);
                                if (s->hwm - back < p->lo)
                                        p->lo = s->hwm - back;
                        }
                }
        }
        rbk__rd_t r = {blob, size, b.foreign_off};
        for (uint32_t i = 0; i < b.nfor; i++) {
                uint32_t len = 0;
                rbk__rd_u32(&r, &len);
                if (b.nfor - i <= d->foreign_window)
                        rbk__win_foreign_add(d, w, r.p + r.off, len);
                r.off += len;
        }
        g_free(sp);
        return RBK_OK;
}

/* ---------------------------------------------------------------- proofs
 *
 * What a saved window proves, for a store pruning the ids it keeps beside
 * it (rbk_dedup_txn): the window's own answer for an id, read from the
 * blob, with the blob's window size. */

struct rbk__dedup_proof_s {
        rbk__blob_t b;         /* sp sorted by producer id */
        GHashTable *foreign;   /* rbk__fkey_t* into the blob's caller ids */
        uint64_t unplaced;     /* rows counted by rbk__dedup_proof_prunes() */
};

static int rbk__saved_pid_cmp(const void *a, const void *b) {
        const rbk__saved_prod_t *x = a, *y = b;
        return x->pid < y->pid ? -1 : x->pid > y->pid;
}

rbk__dedup_proof_t *rbk__dedup_proof_new(const void *blob, size_t size,
                                         char *errstr, size_t errstr_size) {
        rbk__dedup_proof_t *pf = g_new0(rbk__dedup_proof_t, 1);
        if (rbk__blob_parse(blob, size, &pf->b, errstr, errstr_size)) {
                g_free(pf);
                return NULL;
        }
        qsort(pf->b.sp, pf->b.nprod, sizeof(*pf->b.sp), rbk__saved_pid_cmp);
        pf->foreign = g_hash_table_new_full(rbk__fkey_hash, rbk__fkey_equal,
                                            g_free, NULL);
        rbk__rd_t r = {blob, size, pf->b.foreign_off};
        for (uint32_t i = 0; i < pf->b.nfor; i++) {
                uint32_t len = 0;
                rbk__rd_u32(&r, &len);
                rbk__fkey_t *k = g_new0(rbk__fkey_t, 1);
                k->data = r.p + r.off;
                k->len = len;
                k->hash = rbk__hash_bytes(0, k->data, len);
                g_hash_table_add(pf->foreign, k);
                r.off += len;
        }
        return pf;
}

void rbk__dedup_proof_free(rbk__dedup_proof_t *pf) {
        if (!pf)
                return;
        g_hash_table_destroy(pf->foreign);
        g_free(pf->b.sp);
        g_free(pf);
}

/* rbk__win_check_seq() on the blob: the saved window's verdict on sequence
 * @s of producer @pid; *placedp is 0 when the window does not track the
 * producer (so cannot tell how far past the sequence it has moved). */
static rbk__dedup_verdict_t rbk__proof_seq(const rbk__dedup_proof_t *pf,
                                           uint64_t pid, uint64_t s,
                                           int *placedp) {
        const rbk__blob_t *b = &pf->b;
        rbk__saved_prod_t key = {.pid = pid};
        const rbk__saved_prod_t *sp =
            bsearch(&key, b->sp, b->nprod, sizeof(*b->sp), rbk__saved_pid_cmp);
        *placedp = sp != NULL;
        if (!sp) {
                for (uint32_t i = 0; i < b->nev; i++)
                        if (b->ev[i].pid == pid && s <= b->ev[i].hwm)
                                return RBK__DEDUP_UNPROVABLE;
                return RBK__DEDUP_NEW;
        }
        if (s <= sp->hwm) {
                if (sp->hwm - s >= b->sw)
                        return RBK__DEDUP_UNPROVABLE;
                uint64_t pos = s & (b->sw - 1);
                rbk__rd_t r = {b->p, b->size, sp->words_off};
                for (uint32_t k = 0; k < sp->nz; k++) {
                        uint32_t idx = 0;
                        uint64_t word = 0;
                        rbk__rd_u32(&r, &idx);
                        rbk__rd_u64(&r, &word);
                        if (idx == pos / 64 && ((word >> (pos % 64)) & 1))
                                return RBK__DEDUP_DUPLICATE;
                }
        }
        return s < sp->floor ? RBK__DEDUP_UNPROVABLE : RBK__DEDUP_NEW;
}

int rbk__dedup_proof_prunes(rbk__dedup_proof_t *pf, const void *id,
                            size_t id_len, int below) {
        rbk_msgid_t m;
        rbk__dedup_verdict_t v;
        int placed = 0;

        if (!pf || !id || !id_len)
                return 0;
        if (rbk_msgid_parse(id, id_len, &m) == RBK_OK) {
                v = rbk__proof_seq(pf, m.producer_id, m.seq, &placed);
        } else {
                rbk__fkey_t k = {rbk__hash_bytes(0, id, id_len), id_len, id};
                v = g_hash_table_contains(pf->foreign, &k)
                        ? RBK__DEDUP_DUPLICATE
                        : RBK__DEDUP_NEW;
        }
        if (v == RBK__DEDUP_DUPLICATE)
                return 1; /* the window proves it */
        if (!below)
                return 0;
        if (v == RBK__DEDUP_UNPROVABLE)
                return 1; /* the window has moved past it */
        /* Not known to the window: kept, at most a window's worth of them
         * (the highest offsets: the caller goes from the highest down). */
        return !placed && ++pf->unplaced > pf->b.sw;
}

/* ---------------------------------------------------------------- partitions */

static guint rbk__pkey_hash(gconstpointer k) {
        const rbk__pkey_t *p = k;
        return g_str_hash(p->topic) * 31u + (guint)p->partition;
}

static gboolean rbk__pkey_equal(gconstpointer a, gconstpointer b) {
        const rbk__pkey_t *x = a, *y = b;
        return x->partition == y->partition && !strcmp(x->topic, y->topic);
}

static void rbk__dpart_free(gpointer p) {
        rbk__dpart_t *part = p;
        rbk__win_clear(&part->win);
        g_free((char *)part->key.topic);
        g_free(part);
}

static void rbk__dpart_update_mem(rbk__dpart_t *part) {
        /* Counted assigned or not: a revoked partition keeps its window. */
        size_t m = sizeof(*part) + part->win.mem;
        __atomic_store_n(&part->mem, m, __ATOMIC_RELAXED);
}

/* strcmp()==0, inline: topic names are short and this runs twice per
 * message. */
static inline int rbk__streq(const char *a, const char *b) {
        while (*a && *a == *b) {
                a++;
                b++;
        }
        return *a == *b;
}

/* One-entry per-thread cache of the last partition looked up. */
static __thread struct {
        const rbk__dedup_t *d;
        uint64_t serial;
        int32_t partition;
        rbk__dpart_t *part;
} rbk__dedup_tc;

/* The shell of a partition (created if absent and @create). Valid until
 * rbk__dedup_destroy(). */
static __attribute__((noinline)) rbk__dpart_t *
rbk__dpart_get_slow(rbk__dedup_t *d, const char *topic, int32_t partition,
                    int create) {
        rbk__dpart_t *part;
        rbk__pkey_t k = {topic, partition};
        pthread_mutex_lock(&d->lock);
        part = g_hash_table_lookup(d->parts, &k);
        if (!part && create) {
                part = g_new0(rbk__dpart_t, 1);
                part->key.topic = g_strdup(topic);
                part->key.partition = partition;
                part->last_offset = -1;
                g_hash_table_add(d->parts, part);
        }
        pthread_mutex_unlock(&d->lock);
        if (part) {
                rbk__dedup_tc.d = d;
                rbk__dedup_tc.serial = d->serial;
                rbk__dedup_tc.partition = partition;
                rbk__dedup_tc.part = part;
        }
        return part;
}

static inline rbk__dpart_t *rbk__dpart_get(rbk__dedup_t *d, const char *topic,
                                           int32_t partition, int create) {
        if (G_LIKELY(rbk__dedup_tc.d == d &&
                     rbk__dedup_tc.serial == d->serial &&
                     rbk__dedup_tc.partition == partition &&
                     rbk__streq(rbk__dedup_tc.part->key.topic, topic)))
                return rbk__dedup_tc.part;
        return rbk__dpart_get_slow(d, topic, partition, create);
}

static void rbk__dedup_report(rbk__dedup_t *d, const char *topic,
                              int32_t partition, rbk_err_t err,
                              const char *reason) {
        if (d->error_cb)
                d->error_cb(topic, partition, err, reason, d->error_opaque);
}

/* Assigns a shell: loads the saved window (no lock held), installs it. */
static void rbk__dpart_assign(rbk__dedup_t *d, rbk__dpart_t *part) {
        rbk__win_t w;
        char err[512] = "";
        rbk_err_t r = RBK_OK;

        rbk__win_init(&w);
        rbk__plock_lock(&part->lock);
        int already = part->assigned;
        rbk__plock_unlock(&part->lock);
        if (already)
                return;

        int64_t next_offset = -1; /* of the store's saved window */
        if (d->holder) {
                const rbk_dedup_store_t *st = &d->holder->store;
                void *blob = NULL;
                size_t size = 0;
                char serr[400] = "";
                r = st->load(d->group, part->key.topic, part->key.partition,
                             &blob, &size, &next_offset, serr, sizeof(serr),
                             st->opaque);
                if (r == RBK_OK) {
                        r = rbk__win_decode(d, blob, size, &w, err,
                                            sizeof(err));
                } else if (r == RBK_ERR_NOT_FOUND) {
                        r = RBK_OK;
                } else {
                        snprintf(err, sizeof(err),
                                 "dedup store: loading the saved window "
                                 "failed (%s): %s; starting empty",
                                 rbk_err2name(r), serr[0] ? serr : "no reason given");
                        r = RBK_ERR_STORE;
                }
                free(blob);
        }

        rbk__plock_lock(&part->lock);
        if (!part->assigned) {
                /* A window retained from an earlier assignment holds only
                 * ids this process handled, so it stays valid: a partition
                 * lost and assigned back (a coordinator failover) must not
                 * hand its messages to the handler again. It is replaced
                 * only when the store's saved window is newer, i.e. another
                 * consumer handled the partition in between. */
                int retained = part->win.nprod > 0 || part->win.fcount > 0;
                if (retained && next_offset <= part->last_offset + 1) {
                        /* kept as it is, unsaved records still dirty */
                        rbk__win_clear(&w);
                } else {
                        rbk__win_clear(&part->win);
                        part->win = w;
                        part->lost_seen = 0;
                        part->last_offset = -1;
                        part->saved_gen = part->rec_gen;
                }
                part->revoked = 0;
                __atomic_store_n(&part->assigned, 1, __ATOMIC_RELEASE);
                __atomic_store_n(&part->dups, 0, __ATOMIC_RELAXED);
                __atomic_store_n(&part->unprovable, 0, __ATOMIC_RELAXED);
                __atomic_store_n(&part->no_id, 0, __ATOMIC_RELAXED);
                rbk__dpart_update_mem(part);
        } else {
                rbk__win_clear(&w);
        }
        rbk__plock_unlock(&part->lock);

        if (r != RBK_OK)
                rbk__dedup_report(d, part->key.topic, part->key.partition, r,
                                  err);
}

/* The partition's shell, locked and assigned (assigned on first use). */
/* The partition's shell, locked and assigned; a partition never assigned
 * is assigned on first use. NULL (nothing locked) for a partition revoked
 * and not assigned again: a handler still finishing after a lost or timed
 * out revoke must not bring back windows for a partition we no longer own. */
static inline rbk__dpart_t *rbk__dpart_lock(rbk__dedup_t *d,
                                            rbk__dpart_t *part) {
        rbk__plock_lock(&part->lock);
        if (G_LIKELY(part->assigned))
                return part;
        if (part->revoked) {
                rbk__plock_unlock(&part->lock);
                return NULL;
        }
        rbk__plock_unlock(&part->lock);
        rbk__dpart_assign(d, part);
        rbk__plock_lock(&part->lock);
        if (!part->assigned) { /* revoked meanwhile */
                rbk__plock_unlock(&part->lock);
                return NULL;
        }
        return part;
}

static inline rbk__dpart_t *rbk__dpart_acquire(rbk__dedup_t *d,
                                               const char *topic,
                                               int32_t partition) {
        return rbk__dpart_lock(d, rbk__dpart_get(d, topic, partition, 1));
}

/* ---------------------------------------------------------------- API */

rbk__dedup_t *rbk__dedup_new(const rbk_conf_t *conf, const char *group) {
        rbk__dedup_t *d = g_new0(rbk__dedup_t, 1);

        d->serial = __atomic_fetch_add(&rbk__dedup_serial_next, 1,
                                       __ATOMIC_RELAXED);
        d->group = g_strdup(group ? group : "");
        d->window = rbk__dedup_conf_get(conf, RBK__DEDUP_WINDOW_PROP,
                                        RBK__DEDUP_WINDOW_DEFAULT);
        d->wmask = d->window - 1;
        d->wwords = (size_t)(d->window / 64);
        d->max_producers = (uint32_t)rbk__dedup_conf_get(
            conf, RBK__DEDUP_MAX_PRODUCERS_PROP,
            RBK__DEDUP_MAX_PRODUCERS_DEFAULT);
        d->active_producers = (uint32_t)rbk__dedup_conf_get(
            conf, RBK__DEDUP_ACTIVE_PRODUCERS_PROP,
            RBK__DEDUP_ACTIVE_PRODUCERS_DEFAULT);
        if (d->active_producers > d->max_producers)
                d->active_producers = d->max_producers;
        d->idle_bytes = (size_t)rbk__dedup_conf_get(
            conf, RBK__DEDUP_IDLE_BYTES_PROP, RBK__DEDUP_IDLE_BYTES_DEFAULT);
        d->foreign_window = (size_t)rbk__dedup_conf_get(
            conf, RBK__DEDUP_FOREIGN_WINDOW_PROP,
            RBK__DEDUP_FOREIGN_WINDOW_DEFAULT);
        d->seed = ((uint64_t)g_random_int() << 32) ^ g_random_int();
        if (conf)
                d->holder = (rbk__store_holder_t *)rbk__held_ref(conf->dedup_store);
        pthread_mutex_init(&d->lock, NULL);
        d->parts = g_hash_table_new_full(rbk__pkey_hash, rbk__pkey_equal,
                                         NULL, rbk__dpart_free);
        return d;
}

void rbk__dedup_destroy(rbk__dedup_t *d) {
        if (!d)
                return;
        if (rbk__dedup_tc.d == d)
                rbk__dedup_tc.d = NULL;
        g_hash_table_destroy(d->parts);
        pthread_mutex_destroy(&d->lock);
        rbk__held_unref(d->holder ? &d->holder->held : NULL);
        g_free(d->group);
        g_free(d);
}

void rbk__dedup_set_error_cb(rbk__dedup_t *d, rbk__dedup_error_cb_t *cb,
                             void *opaque) {
        if (!d)
                return;
        d->error_cb = cb;
        d->error_opaque = opaque;
}

void rbk__dedup_set_capacity_cb(rbk__dedup_t *d,
                                rbk__dedup_capacity_cb_t *cb, void *opaque) {
        if (!d)
                return;
        d->capacity_cb = cb;
        d->capacity_opaque = opaque;
}

void rbk__dedup_assign(rbk__dedup_t *d, const char *topic, int32_t partition) {
        if (!d || !topic)
                return;
        rbk__dpart_assign(d, rbk__dpart_get(d, topic, partition, 1));
}

void rbk__dedup_revoke(rbk__dedup_t *d, const char *topic, int32_t partition) {
        rbk__dpart_t *part;
        if (!d || !topic || !(part = rbk__dpart_get(d, topic, partition, 0)))
                return;
        rbk__plock_lock(&part->lock);
        /* The window is kept (see rbk__dpart_assign()). */
        __atomic_store_n(&part->assigned, 0, __ATOMIC_RELEASE);
        part->revoked = 1;
        part->last_len = 0;
        rbk__dpart_update_mem(part);
        rbk__plock_unlock(&part->lock);
}

/* Ids in the library's format parse; anything else is caller-supplied.
 * Called with the partition locked; remembers the last id parsed, since
 * record follows check with the same id. */
static inline int rbk__dedup_parse(rbk__dpart_t *part, const void *id,
                                   size_t len, rbk_msgid_t *m) {
        if (len == part->last_len && !memcmp(id, part->last_id, len)) {
                *m = part->last_m;
                return part->last_ours;
        }
        int ours = rbk_msgid_parse(id, len, m) == RBK_OK;
        if (len < sizeof(part->last_id)) {
                memcpy(part->last_id, id, len);
                part->last_len = len;
                part->last_m = ours ? *m : (rbk_msgid_t){0, 0};
                part->last_ours = ours;
        }
        return ours;
}

/* Asks the store whether the application recorded the id (slow path). */
static __attribute__((noinline)) rbk__dedup_verdict_t
rbk__dedup_check_store(rbk__dedup_t *d, rbk__dpart_t *part, const char *topic,
                       int32_t partition, const void *id, size_t id_len,
                       const rbk_msgid_t *m, rbk__dedup_verdict_t v) {
        const rbk_dedup_store_t *st = &d->holder->store;
        char serr[400] = "";
        int s = st->seen(d->group, topic, partition, id, id_len, serr,
                         sizeof(serr), st->opaque);
        if (s == 1) {
                /* Provably recorded (by the application, in its own
                 * transaction): learn it, so the window proves it from now
                 * on even after the store prunes it. */
                rbk__plock_lock(&part->lock);
                if (part->assigned) {
                        if (m)
                                rbk__win_record_seq(d, &part->win,
                                                    m->producer_id, m->seq);
                        else if (id_len <= RBK_MSGID_MAX_LEN)
                                rbk__win_foreign_add(d, &part->win, id,
                                                     id_len);
                        part->rec_gen++;
                        rbk__dpart_update_mem(part);
                }
                rbk__plock_unlock(&part->lock);
                return RBK__DEDUP_DUPLICATE;
        }
        if (s != 0) {
                char msg[512];
                snprintf(msg, sizeof(msg),
                         "dedup store: looking up an id failed: %s; "
                         "the message is passed to the handler",
                         serr[0] ? serr : "no reason given");
                rbk__dedup_report(d, topic, partition, RBK_ERR_STORE, msg);
                return RBK__DEDUP_UNPROVABLE;
        }
        return v;
}

/* check, the partition locked, the id known to be ours (@m) or not (@m
 * NULL). Unlocks the partition. */
static inline rbk__dedup_verdict_t
rbk__dedup_check_locked(rbk__dedup_t *d, rbk__dpart_t *part, const char *topic,
                      int32_t partition, const void *id, size_t id_len,
                      const rbk_msgid_t *m) {
        rbk__dedup_verdict_t v;

        if (m)
                v = rbk__win_check_seq(d, &part->win, m->producer_id, m->seq);
        else if (id_len > RBK_MSGID_MAX_LEN)
                v = RBK__DEDUP_UNPROVABLE; /* never recorded: unbounded size */
        else
                v = rbk__win_foreign_has(d, &part->win, id, id_len)
                        ? RBK__DEDUP_DUPLICATE
                        : (d->foreign_window ? RBK__DEDUP_NEW
                                             : RBK__DEDUP_UNPROVABLE);
        rbk__plock_unlock(&part->lock);

        if (v != RBK__DEDUP_DUPLICATE && d->holder && d->holder->store.seen)
                v = rbk__dedup_check_store(d, part, topic, partition, id,
                                           id_len, m, v);
        if (v == RBK__DEDUP_DUPLICATE)
                __atomic_fetch_add(&part->dups, 1, __ATOMIC_RELAXED);
        else if (v == RBK__DEDUP_UNPROVABLE)
                __atomic_fetch_add(&part->unprovable, 1, __ATOMIC_RELAXED);
        return v;
}

static rbk__dedup_verdict_t rbk__dedup_check_noid(rbk__dedup_t *d,
                                                  const char *topic,
                                                  int32_t partition) {
        rbk__dpart_t *part = rbk__dpart_acquire(d, topic, partition);
        if (part) {
                __atomic_fetch_add(&part->no_id, 1, __ATOMIC_RELAXED);
                rbk__plock_unlock(&part->lock);
        }
        return RBK__DEDUP_NO_ID;
}

rbk__dedup_verdict_t rbk__dedup_check(rbk__dedup_t *d, const char *topic,
                                      int32_t partition, const void *id,
                                      size_t id_len) {
        rbk_msgid_t m;
        rbk__dpart_t *part;

        if (!d || !topic)
                return RBK__DEDUP_UNPROVABLE;
        if (!id || id_len == 0)
                return rbk__dedup_check_noid(d, topic, partition);
        if (!(part = rbk__dpart_acquire(d, topic, partition)))
                return RBK__DEDUP_UNPROVABLE; /* revoked */
        return rbk__dedup_check_locked(
            d, part, topic, partition, id, id_len,
            rbk__dedup_parse(part, id, id_len, &m) ? &m : NULL);
}

rbk__dedup_verdict_t rbk__dedup_check_msgid(rbk__dedup_t *d,
                                            const char *topic,
                                            int32_t partition, const void *id,
                                            size_t id_len,
                                            const rbk_msgid_t *msgid) {
        rbk__dpart_t *part;

        if (!d || !topic)
                return RBK__DEDUP_UNPROVABLE;
        if (!id || id_len == 0)
                return rbk__dedup_check_noid(d, topic, partition);
        if (!(part = rbk__dpart_acquire(d, topic, partition)))
                return RBK__DEDUP_UNPROVABLE; /* revoked */
        return rbk__dedup_check_locked(d, part, topic, partition, id, id_len,
                                     msgid);
}

/* Windows were forgotten (rbk.dedup.max.producers or rbk.dedup.idle.bytes
 * exceeded): reports it once per window of records on the partition. Called
 * with the partition locked, which it unlocks; the callback runs unlocked. */
static __attribute__((noinline)) void
rbk__dedup_capacity_unlock(rbk__dedup_t *d, rbk__dpart_t *part) {
        uint64_t lost = part->win.lost - part->lost_seen;
        if (!d->capacity_cb || part->rec_gen < part->cap_next) {
                rbk__plock_unlock(&part->lock);
                return;
        }
        char msg[512];
        snprintf(msg, sizeof(msg),
                 "dedup capacity exceeded: %" G_GUINT64_FORMAT
                 " producer windows forgotten (%u producers tracked, "
                 "rbk.dedup.max.producers=%u; %zu bytes of idle windows, "
                 "rbk.dedup.idle.bytes=%zu); duplicates of their earlier "
                 "messages may reach the handler",
                 (guint64)lost, part->win.nprod, d->max_producers,
                 part->win.idle_bytes, d->idle_bytes);
        part->lost_seen = part->win.lost;
        part->cap_next = part->rec_gen + d->window;
        rbk__plock_unlock(&part->lock);
        d->capacity_cb(part->key.topic, part->key.partition, lost, msg,
                       d->capacity_opaque);
}

/* record, the partition locked, the id known to be ours (@m) or not. */
static inline void rbk__dedup_record_locked(rbk__dedup_t *d, rbk__dpart_t *part,
                                          const void *id, size_t id_len,
                                          const rbk_msgid_t *m,
                                          int64_t offset) {
        if (m) {
                size_t before = part->win.mem;
                rbk__win_record_seq(d, &part->win, m->producer_id, m->seq);
                if (part->win.mem != before)
                        rbk__dpart_update_mem(part);
        } else if (id_len <= RBK_MSGID_MAX_LEN) {
                rbk__win_foreign_add(d, &part->win, id, id_len);
                rbk__dpart_update_mem(part);
        }
        part->rec_gen++;
        if (offset > part->last_offset)
                part->last_offset = offset;
        if (G_UNLIKELY(part->win.lost != part->lost_seen))
                rbk__dedup_capacity_unlock(d, part);
        else
                rbk__plock_unlock(&part->lock);
}

void rbk__dedup_record(rbk__dedup_t *d, const char *topic, int32_t partition,
                       const void *id, size_t id_len, int64_t offset) {
        rbk_msgid_t m;
        rbk__dpart_t *part;

        if (!d || !topic || !id || id_len == 0)
                return;
        if (!(part = rbk__dpart_acquire(d, topic, partition)))
                return; /* revoked */
        rbk__dedup_record_locked(
            d, part, id, id_len,
            rbk__dedup_parse(part, id, id_len, &m) ? &m : NULL, offset);
}

void rbk__dedup_record_msgid(rbk__dedup_t *d, const char *topic,
                             int32_t partition, const void *id, size_t id_len,
                             const rbk_msgid_t *msgid, int64_t offset) {
        rbk__dpart_t *part;
        if (!d || !topic || !id || id_len == 0 ||
            !(part = rbk__dpart_acquire(d, topic, partition)))
                return;
        rbk__dedup_record_locked(d, part, id, id_len, msgid, offset);
}

rbk_err_t rbk__dedup_commit(rbk__dedup_t *d, const char *topic,
                            int32_t partition, int64_t next_offset,
                            char *errstr, size_t errstr_size) {
        rbk__dpart_t *part;
        unsigned char *blob;
        size_t size;
        uint64_t gen;
        rbk_err_t r;

        if (!d || !topic)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "rbk__dedup_commit: NULL argument");
        if (!d->holder || !(part = rbk__dpart_get(d, topic, partition, 0)))
                return RBK_OK;
        rbk__plock_lock(&part->lock);
        if (!part->assigned || part->rec_gen == part->saved_gen) {
                rbk__plock_unlock(&part->lock);
                return RBK_OK;
        }
        blob = rbk__win_encode(d, &part->win, &size);
        gen = part->rec_gen;
        rbk__plock_unlock(&part->lock);

        const rbk_dedup_store_t *st = &d->holder->store;
        char serr[400] = "";
        r = st->save(d->group, topic, partition, blob, size, next_offset, serr,
                     sizeof(serr), st->opaque);
        g_free(blob);
        if (r != RBK_OK)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_STORE,
                                   "dedup store: saving the window of %s [%" PRId32
                                   "] failed (%s): %s",
                                   topic, partition, rbk_err2name(r),
                                   serr[0] ? serr : "no reason given");
        rbk__plock_lock(&part->lock);
        if (part->assigned && part->saved_gen < gen)
                part->saved_gen = gen;
        rbk__plock_unlock(&part->lock);
        return RBK_OK;
}

size_t rbk__dedup_memory(rbk__dedup_t *d) {
        GHashTableIter it;
        gpointer k;
        size_t total;

        if (!d)
                return 0;
        total = sizeof(*d);
        pthread_mutex_lock(&d->lock);
        g_hash_table_iter_init(&it, d->parts);
        while (g_hash_table_iter_next(&it, &k, NULL))
                total += __atomic_load_n(&((rbk__dpart_t *)k)->mem,
                                         __ATOMIC_RELAXED);
        pthread_mutex_unlock(&d->lock);
        return total;
}

void rbk__dedup_partition_counts(rbk__dedup_t *d, const char *topic,
                                 int32_t partition, uint64_t *dups,
                                 uint64_t *unprovable, uint64_t *no_id) {
        rbk__dpart_t *part = NULL;
        uint64_t a = 0, b = 0, c = 0;

        if (d && topic)
                part = rbk__dpart_get(d, topic, partition, 0);
        if (part) {
                rbk__plock_lock(&part->lock);
                if (part->assigned) {
                        a = __atomic_load_n(&part->dups, __ATOMIC_RELAXED);
                        b = __atomic_load_n(&part->unprovable, __ATOMIC_RELAXED);
                        c = __atomic_load_n(&part->no_id, __ATOMIC_RELAXED);
                }
                rbk__plock_unlock(&part->lock);
        }
        if (dups)
                *dups = a;
        if (unprovable)
                *unprovable = b;
        if (no_id)
                *no_id = c;
}

rbk__dedup_part_t *rbk__dedup_part(rbk__dedup_t *d, const char *topic,
                                   int32_t partition) {
        if (!d || !topic)
                return NULL;
        return rbk__dpart_get(d, topic, partition, 1);
}

rbk__dedup_verdict_t rbk__dedup_check_part(rbk__dedup_t *d,
                                           rbk__dedup_part_t *dp,
                                           const void *id, size_t id_len,
                                           const rbk_msgid_t *msgid) {
        rbk__dpart_t *part;

        if (!d || !dp)
                return RBK__DEDUP_UNPROVABLE;
        part = rbk__dpart_lock(d, dp);
        if (!id || id_len == 0) {
                if (part) {
                        __atomic_fetch_add(&part->no_id, 1, __ATOMIC_RELAXED);
                        rbk__plock_unlock(&part->lock);
                }
                return RBK__DEDUP_NO_ID;
        }
        if (!part)
                return RBK__DEDUP_UNPROVABLE; /* revoked */
        return rbk__dedup_check_locked(d, part, part->key.topic,
                                       part->key.partition, id, id_len, msgid);
}

void rbk__dedup_record_part(rbk__dedup_t *d, rbk__dedup_part_t *dp,
                            const void *id, size_t id_len,
                            const rbk_msgid_t *msgid, int64_t offset) {
        rbk__dpart_t *part = dp;
        if (!d || !dp || !id || id_len == 0)
                return;
        rbk__plock_lock(&part->lock);
        if (!part->assigned && !part->revoked) {
                /* never assigned yet: assigned on first use */
                rbk__plock_unlock(&part->lock);
                if (!(part = rbk__dpart_lock(d, dp)))
                        return;
        }
        /* A handler that finished after its partition was lost or revoked
         * still records into the retained window (it stays revoked, and is
         * never saved while so): if the partition comes straight back, this
         * process does not hand the id to its handler again. */
        rbk__dedup_record_locked(d, part, id, id_len, msgid, offset);
}
