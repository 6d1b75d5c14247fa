/* Duplicate dropping: windows against an exact reference, eviction, caller
 * ids, serialization, the SQLite store and a kill -9 between save and the
 * rest. */
#include <errno.h>
#include <pthread.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dedup.h"
#include "harness.h"
#include "internal.h"

/* ---------------------------------------------------------------- helpers */

/* A configuration built directly (the dedup layer reads only props and
 * dedup_store), freed with tconf_free(). */
static rbk_conf_t *tconf_new(void) {
        rbk_conf_t *c = g_new0(rbk_conf_t, 1);
        c->props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         g_free);
        return c;
}

static void tconf_set(rbk_conf_t *c, const char *name, const char *value) {
        ck_assert_int_eq(rbk__dedup_conf_check(name, value, NULL, 0), RBK_OK);
        g_hash_table_replace(c->props, g_strdup(name), g_strdup(value));
}

static void tconf_free(rbk_conf_t *c) {
        rbk__held_unref(c->dedup_store);
        g_hash_table_destroy(c->props);
        g_free(c);
}

static int fmt_id(char *buf, uint64_t pid, uint64_t seq) {
        rbk_msgid_t m = {pid, seq};
        int n = rbk_msgid_format(&m, buf, RBK_MSGID_STR_SIZE);
        ck_assert_int_gt(n, 0);
        return n;
}

static rbk__dedup_verdict_t chk(rbk__dedup_t *d, const char *topic,
                                uint64_t pid, uint64_t seq) {
        char b[RBK_MSGID_STR_SIZE];
        int n = fmt_id(b, pid, seq);
        return rbk__dedup_check(d, topic, 0, b, (size_t)n);
}

static void rec(rbk__dedup_t *d, const char *topic, uint64_t pid,
                uint64_t seq) {
        char b[RBK_MSGID_STR_SIZE];
        int n = fmt_id(b, pid, seq);
        rbk__dedup_record(d, topic, 0, b, (size_t)n, (int64_t)seq);
}

static rbk__dedup_verdict_t chks(rbk__dedup_t *d, const char *s) {
        return rbk__dedup_check(d, "t", 0, s, strlen(s));
}

static void recs(rbk__dedup_t *d, const char *s) {
        rbk__dedup_record(d, "t", 0, s, strlen(s), 0);
}

/* Error callback that counts and keeps the last reason. */
typedef struct errs_s {
        int n;
        rbk_err_t last;
        char reason[512];
} errs_t;

static void errs_cb(const char *topic, int32_t partition, rbk_err_t err,
                    const char *reason, void *opaque) {
        errs_t *e = opaque;
        e->n++;
        e->last = err;
        g_strlcpy(e->reason, reason, sizeof(e->reason));
}

/* An in-memory store: blobs by "group/topic/partition". */
typedef struct memstore_s {
        pthread_mutex_t lock; /* store callbacks must be thread-safe */
        GHashTable *blobs; /* key -> GBytes */
        int saves, loads, destroyed;
        rbk_err_t fail_load; /* returned by load when not RBK_OK */
        rbk_err_t fail_save;
        int seen_result; /* returned by seen; 0 = not seen */
        int seen_calls;
} memstore_t;

static char *mkey(const char *g, const char *t, int32_t p) {
        return g_strdup_printf("%s/%s/%d", g, t, (int)p);
}

static rbk_err_t ms_load(const char *group, const char *topic,
                         int32_t partition, void **blobp, size_t *sizep,
                         int64_t *next_offsetp, char *errstr,
                         size_t errstr_size, void *opaque) {
        memstore_t *m = opaque;
        g_atomic_int_inc(&m->loads);
        if (m->fail_load != RBK_OK) {
                snprintf(errstr, errstr_size, "disk on fire");
                return m->fail_load;
        }
        char *k = mkey(group, topic, partition);
        pthread_mutex_lock(&m->lock);
        GBytes *b = g_hash_table_lookup(m->blobs, k);
        g_free(k);
        if (!b) {
                pthread_mutex_unlock(&m->lock);
                return RBK_ERR_NOT_FOUND;
        }
        gsize n;
        const void *p = g_bytes_get_data(b, &n);
        *blobp = malloc(n ? n : 1);
        memcpy(*blobp, p, n);
        *sizep = n;
        pthread_mutex_unlock(&m->lock);
        return RBK_OK;
}

static rbk_err_t ms_save(const char *group, const char *topic,
                         int32_t partition, const void *blob, size_t size,
                         int64_t next_offset, char *errstr,
                         size_t errstr_size, void *opaque) {
        memstore_t *m = opaque;
        g_atomic_int_inc(&m->saves);
        if (m->fail_save != RBK_OK) {
                snprintf(errstr, errstr_size, "disk full");
                return m->fail_save;
        }
        pthread_mutex_lock(&m->lock);
        g_hash_table_replace(m->blobs, mkey(group, topic, partition),
                             g_bytes_new(blob, size));
        pthread_mutex_unlock(&m->lock);
        return RBK_OK;
}

static int ms_seen(const char *group, const char *topic, int32_t partition,
                   const void *id, size_t id_len, char *errstr,
                   size_t errstr_size, void *opaque) {
        memstore_t *m = opaque;
        m->seen_calls++;
        if (m->seen_result < 0)
                snprintf(errstr, errstr_size, "lookup failed");
        return m->seen_result;
}

static void ms_destroy(void *opaque) {
        ((memstore_t *)opaque)->destroyed++;
}

static void memstore_init(memstore_t *m) {
        memset(m, 0, sizeof(*m));
        pthread_mutex_init(&m->lock, NULL);
        m->blobs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify)g_bytes_unref);
}

static void memstore_attach(memstore_t *m, rbk_conf_t *c, int with_seen) {
        rbk_dedup_store_t st = RBK_DEDUP_STORE_INIT;
        st.load = ms_load;
        st.save = ms_save;
        st.seen = with_seen ? ms_seen : NULL;
        st.destroy = ms_destroy;
        st.opaque = m;
        ck_assert_int_eq(rbk_conf_set_dedup_store(c, &st, NULL, 0), RBK_OK);
}

static GBytes *memstore_blob(memstore_t *m, const char *g, const char *t,
                             int32_t p) {
        char *k = mkey(g, t, p);
        GBytes *b = g_hash_table_lookup(m->blobs, k);
        g_free(k);
        return b;
}

/* ---------------------------------------------------------------- basics */

START_TEST(no_id_and_basic_verdicts) {
        rbk__dedup_t *d = rbk__dedup_new(NULL, "g");
        uint64_t dups, unp, noid;
        const uint64_t P = UINT64_C(0x9f86d081884c7d65);

        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, NULL, 0), RBK__DEDUP_NO_ID);
        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, "x", 0), RBK__DEDUP_NO_ID);
        rbk__dedup_record(d, "t", 0, NULL, 0, 1); /* ignored */

        ck_assert_int_eq(chk(d, "t", P, 42), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", P, 42), RBK__DEDUP_NEW); /* check does not record */
        rec(d, "t", P, 42);
        ck_assert_int_eq(chk(d, "t", P, 42), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", P, 41), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", P, 43), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", P + 1, 42), RBK__DEDUP_NEW); /* other producer */
        /* windows are per partition */
        char b[RBK_MSGID_STR_SIZE];
        int n = fmt_id(b, P, 42);
        ck_assert_int_eq(rbk__dedup_check(d, "t", 1, b, (size_t)n), RBK__DEDUP_NEW);
        ck_assert_int_eq(rbk__dedup_check(d, "u", 0, b, (size_t)n), RBK__DEDUP_NEW);

        rbk__dedup_partition_counts(d, "t", 0, &dups, &unp, &noid);
        ck_assert_uint_eq(dups, 1);
        ck_assert_uint_eq(unp, 0);
        ck_assert_uint_eq(noid, 2);
        rbk__dedup_partition_counts(d, "nope", 0, &dups, &unp, &noid);
        ck_assert_uint_eq(dups + unp + noid, 0);

        /* revoke restarts the counters but keeps the window, so a
         * partition lost and assigned back still drops what this process
         * handled */
        size_t mem_before = rbk__dedup_memory(d);
        rbk__dedup_revoke(d, "t", 0);
        rbk__dedup_partition_counts(d, "t", 0, &dups, NULL, NULL);
        ck_assert_uint_eq(dups, 0);
        ck_assert_uint_eq(rbk__dedup_memory(d), mem_before);
        /* a revoked partition is not brought back by a late handler */
        ck_assert_int_eq(chk(d, "t", P, 42), RBK__DEDUP_UNPROVABLE);
        rec(d, "t", P, 43);
        rbk__dedup_assign(d, "t", 0);
        ck_assert_int_eq(chk(d, "t", P, 43), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", P, 42), RBK__DEDUP_DUPLICATE);
        /* the pre-parsed variants share the windows with the raw calls */
        rbk_msgid_t m = {P, 77};
        n = fmt_id(b, P, 77);
        ck_assert_int_eq(rbk__dedup_check_msgid(d, "t", 0, b, (size_t)n, &m), RBK__DEDUP_NEW);
        rbk__dedup_record_msgid(d, "t", 0, b, (size_t)n, &m, 1);
        ck_assert_int_eq(chk(d, "t", P, 77), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check_msgid(d, "t", 0, b, (size_t)n, &m), RBK__DEDUP_DUPLICATE);
        rbk__dedup_record_msgid(d, "t", 0, "order-5", 7, NULL, 2);
        ck_assert_int_eq(chks(d, "order-5"), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check_msgid(d, "t", 0, "order-5", 7, NULL), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check_msgid(d, "t", 0, NULL, 0, NULL), RBK__DEDUP_NO_ID);
        rbk__dedup_destroy(d);
        rbk__dedup_destroy(NULL);
}
END_TEST

START_TEST(window_slides) {
        rbk_conf_t *c = tconf_new();
        tconf_set(c, RBK__DEDUP_WINDOW_PROP, "64");
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        const uint64_t P = 7;

        for (uint64_t s = 1; s <= 200; s++)
                rec(d, "t", P, s);
        for (uint64_t s = 137; s <= 200; s++)
                ck_assert_int_eq(chk(d, "t", P, s), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", P, 136), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", P, 1), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", P, 201), RBK__DEDUP_NEW);
        /* a small jump clears exactly the positions passed over */
        rec(d, "t", P, 210);
        for (uint64_t s = 147; s <= 200; s++)
                ck_assert_int_eq(chk(d, "t", P, s), RBK__DEDUP_DUPLICATE);
        for (uint64_t s = 201; s < 210; s++)
                ck_assert_int_eq(chk(d, "t", P, s), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", P, 146), RBK__DEDUP_UNPROVABLE);
        /* late arrival within the window, then a jump past the window */
        rec(d, "t", P, 205);
        ck_assert_int_eq(chk(d, "t", P, 205), RBK__DEDUP_DUPLICATE);
        rec(d, "t", P, 100000);
        ck_assert_int_eq(chk(d, "t", P, 205), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", P, 100000 - 63), RBK__DEDUP_NEW);
        rec(d, "t", P, 100000 - 63);
        ck_assert_int_eq(chk(d, "t", P, 100000 - 63), RBK__DEDUP_DUPLICATE);
        rec(d, "t", P, 100000 - 64); /* too old to keep */
        ck_assert_int_eq(chk(d, "t", P, 100000 - 64), RBK__DEDUP_UNPROVABLE);
        /* a huge sequence does not overflow */
        rec(d, "t", P, UINT64_MAX);
        ck_assert_int_eq(chk(d, "t", P, UINT64_MAX), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", P, UINT64_MAX - 1), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", P, 1), RBK__DEDUP_UNPROVABLE);
        rbk__dedup_destroy(d);
        tconf_free(c);
}
END_TEST

START_TEST(eviction_never_claims_old_sequences) {
        rbk_conf_t *c = tconf_new();
        tconf_set(c, RBK__DEDUP_MAX_PRODUCERS_PROP, "2");
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        const uint64_t A = 0xa, B = 0xb, C = 0xc;

        for (uint64_t s = 1; s <= 10; s++)
                rec(d, "t", A, s);
        rec(d, "t", B, 1);
        rec(d, "t", C, 1); /* evicts A, the least recently recorded */
        ck_assert_int_eq(chk(d, "t", B, 1), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", C, 1), RBK__DEDUP_DUPLICATE);
        /* C took A's slot: none of A's bits may show through */
        for (uint64_t s = 2; s <= 12; s++)
                ck_assert_int_eq(chk(d, "t", C, s), RBK__DEDUP_NEW);
        for (uint64_t s = 1; s <= 10; s++)
                ck_assert_int_eq(chk(d, "t", A, s), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", A, 11), RBK__DEDUP_NEW);
        /* A comes back (evicts B): its old sequences stay unprovable, even
         * though they are inside the new entry's window */
        rec(d, "t", A, 20);
        ck_assert_int_eq(chk(d, "t", A, 20), RBK__DEDUP_DUPLICATE);
        for (uint64_t s = 1; s <= 10; s++)
                ck_assert_int_eq(chk(d, "t", A, s), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", A, 15), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", B, 1), RBK__DEDUP_UNPROVABLE);
        /* an old one re-recorded after the comeback is provable again */
        rec(d, "t", A, 5);
        ck_assert_int_eq(chk(d, "t", A, 5), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", A, 4), RBK__DEDUP_UNPROVABLE);
        uint64_t unp;
        rbk__dedup_partition_counts(d, "t", 0, NULL, &unp, NULL);
        ck_assert_uint_eq(unp, 10 + 10 + 1 + 1);
        rbk__dedup_destroy(d);
        tconf_free(c);
}
END_TEST

START_TEST(foreign_ids_and_garbled_headers) {
        rbk_conf_t *c = tconf_new();
        tconf_set(c, RBK__DEDUP_FOREIGN_WINDOW_PROP, "3");
        rbk__dedup_t *d = rbk__dedup_new(c, "g");

        ck_assert_int_eq(chks(d, "order-17"), RBK__DEDUP_NEW);
        recs(d, "order-17");
        ck_assert_int_eq(chks(d, "order-17"), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chks(d, "order-1"), RBK__DEDUP_NEW);
        ck_assert_int_eq(chks(d, "order-170"), RBK__DEDUP_NEW);
        recs(d, "b");
        recs(d, "c");
        recs(d, "c"); /* already there: no effect on the FIFO */
        ck_assert_int_eq(chks(d, "order-17"), RBK__DEDUP_DUPLICATE);
        recs(d, "d"); /* evicts order-17, the oldest */
        ck_assert_int_eq(chks(d, "order-17"), RBK__DEDUP_NEW);
        ck_assert_int_eq(chks(d, "b"), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chks(d, "c"), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chks(d, "d"), RBK__DEDUP_DUPLICATE);

        /* garbled forms of our format are exact-match caller ids: recording
         * one never makes the real id a duplicate, and vice versa */
        const char *garbled[] = {
            "9f86d081884c7d65-01", "9F86D081884C7D65-1", "9f86d081884c7d65-",
            "9f86d081884c7d65-1 ", "9f86d081884c7d6-1", "0000000000000000-1",
            "9f86d081884c7d65-0", "9f86d081884c7d65-99999999999999999999",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(garbled); i++) {
                rbk__dedup_t *g = rbk__dedup_new(NULL, "g");
                recs(g, garbled[i]);
                ck_assert_int_eq(chks(g, garbled[i]), RBK__DEDUP_DUPLICATE);
                ck_assert_int_eq(chks(g, "9f86d081884c7d65-1"), RBK__DEDUP_NEW);
                recs(g, "9f86d081884c7d65-1");
                ck_assert_int_eq(chks(g, "9f86d081884c7d65-1"),
                                 RBK__DEDUP_DUPLICATE);
                rbk__dedup_destroy(g);
        }
        /* binary bytes with a NUL in the middle are compared in full */
        rbk__dedup_t *g = rbk__dedup_new(NULL, "g");
        const char bin1[] = {'a', 0, 'b'}, bin2[] = {'a', 0, 'c'};
        rbk__dedup_record(g, "t", 0, bin1, 3, 0);
        ck_assert_int_eq(rbk__dedup_check(g, "t", 0, bin1, 3), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check(g, "t", 0, bin2, 3), RBK__DEDUP_NEW);
        ck_assert_int_eq(rbk__dedup_check(g, "t", 0, bin1, 1), RBK__DEDUP_NEW);
        /* an id longer than RBK_MSGID_MAX_LEN is never kept */
        char big[RBK_MSGID_MAX_LEN + 1];
        memset(big, 'x', sizeof(big));
        rbk__dedup_record(g, "t", 0, big, sizeof(big), 0);
        ck_assert_int_eq(rbk__dedup_check(g, "t", 0, big, sizeof(big)),
                         RBK__DEDUP_UNPROVABLE);
        rbk__dedup_destroy(g);

        /* foreign.window=0 turns caller ids off */
        rbk_conf_t *c0 = tconf_new();
        tconf_set(c0, RBK__DEDUP_FOREIGN_WINDOW_PROP, "0");
        g = rbk__dedup_new(c0, "g");
        recs(g, "order-17");
        ck_assert_int_eq(chks(g, "order-17"), RBK__DEDUP_UNPROVABLE);
        rbk__dedup_destroy(g);
        tconf_free(c0);

        rbk__dedup_destroy(d);
        tconf_free(c);
}
END_TEST

START_TEST(conf_values_checked) {
        char err[256];
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_WINDOW_PROP, "1000", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_ptr_nonnull(strstr(err, "power of two"));
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_WINDOW_PROP, "32", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_WINDOW_PROP, "abc", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_ptr_nonnull(strstr(err, RBK__DEDUP_WINDOW_PROP));
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_WINDOW_PROP, "1024", err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_MAX_PRODUCERS_PROP, "0", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_MAX_PRODUCERS_PROP, "65537", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_MAX_PRODUCERS_PROP, "65536", err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_ACTIVE_PRODUCERS_PROP, "0", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_ACTIVE_PRODUCERS_PROP, "1025", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_ACTIVE_PRODUCERS_PROP, "1", err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_IDLE_BYTES_PROP, "0", err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_IDLE_BYTES_PROP, "1073741825", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_MAX_PRODUCERS_PROP, "-1", err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_FOREIGN_WINDOW_PROP, "0", err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(rbk__dedup_conf_check(RBK__DEDUP_FOREIGN_WINDOW_PROP, NULL, err, sizeof(err)), RBK_ERR_CONF);
        ck_assert_int_eq(rbk__dedup_conf_check("rbk.dedup.nope", "1", err, sizeof(err)), RBK_ERR_NOT_FOUND);

        /* an invalid value that slipped in falls back to the default */
        rbk_conf_t *c = tconf_new();
        g_hash_table_replace(c->props, g_strdup(RBK__DEDUP_WINDOW_PROP), g_strdup("1000"));
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        rec(d, "t", 1, 1);
        rec(d, "t", 1, 65536);
        ck_assert_int_eq(chk(d, "t", 1, 1), RBK__DEDUP_DUPLICATE);
        rbk__dedup_destroy(d);
        /* a producer bound above what is supported is clamped, not reset */
        g_hash_table_replace(c->props, g_strdup(RBK__DEDUP_MAX_PRODUCERS_PROP), g_strdup("100000"));
        g_hash_table_replace(c->props, g_strdup(RBK__DEDUP_WINDOW_PROP), g_strdup("1024"));
        d = rbk__dedup_new(c, "g");
        for (uint64_t p = 1; p <= 65536; p++)
                rec(d, "t", p, 1);
        for (uint64_t p = 1; p <= 65536; p++)
                ck_assert_int_eq(chk(d, "t", p, 1), RBK__DEDUP_DUPLICATE);
        rec(d, "t", 65537, 1);
        ck_assert_int_eq(chk(d, "t", 1, 1), RBK__DEDUP_UNPROVABLE);
        rbk__dedup_destroy(d);
        tconf_free(c);
}
END_TEST

START_TEST(store_setter_and_ownership) {
        rbk_conf_t *c = tconf_new();
        memstore_t m;
        char err[256];
        rbk_dedup_store_t st = RBK_DEDUP_STORE_INIT;

        memstore_init(&m);
        ck_assert_int_eq(rbk_conf_set_dedup_store(NULL, &st, err, sizeof(err)), RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_conf_set_dedup_store(c, &st, err, sizeof(err)), RBK_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(err, "load and save"));
        st.version = 99;
        st.load = ms_load;
        st.save = ms_save;
        ck_assert_int_eq(rbk_conf_set_dedup_store(c, &st, err, sizeof(err)), RBK_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(err, "version 99"));
        ck_assert_ptr_null(c->dedup_store);

        memstore_attach(&m, c, 0);
        rbk__held_t *copy = rbk__held_ref(c->dedup_store); /* as rbk_conf_dup */
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        tconf_free(c);
        rbk__held_unref(copy);
        ck_assert_int_eq(m.destroyed, 0); /* the consumer still uses it */
        rec(d, "t", 1, 1);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 2, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(m.saves, 1);
        rbk__dedup_destroy(d);
        ck_assert_int_eq(m.destroyed, 1);

        /* replacing and removing release the old store */
        memstore_t m2;
        memstore_init(&m2);
        c = tconf_new();
        memstore_attach(&m, c, 0);
        memstore_attach(&m2, c, 0);
        ck_assert_int_eq(m.destroyed, 2);
        ck_assert_int_eq(rbk_conf_set_dedup_store(c, NULL, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(m2.destroyed, 1);
        ck_assert_ptr_null(c->dedup_store);
        tconf_free(c);
        g_hash_table_destroy(m.blobs);
        g_hash_table_destroy(m2.blobs);
}
END_TEST

/* ---------------------------------------------------------------- randomized */

/* Reference: an exact set of recorded (producer index, seq), and per
 * producer the highest recorded sequence. */
static gpointer refkey(unsigned pi, uint64_t seq) {
        return GSIZE_TO_POINTER(((gsize)pi << 48) | (gsize)seq);
}

static guint refhash(gconstpointer k) {
        guint64 z = GPOINTER_TO_SIZE(k) * UINT64_C(0x9e3779b97f4a7c15);
        return (guint)(z >> 32);
}

typedef struct caps_s {
        int n;
        uint64_t forgotten;
        char reason[512];
} caps_t;

static void caps_cb(const char *topic, int32_t partition, uint64_t forgotten,
                    const char *reason, void *opaque) {
        caps_t *c = opaque;
        c->n++;
        c->forgotten += forgotten;
        g_strlcpy(c->reason, reason, sizeof(c->reason));
}

typedef struct fleet_s {
        /* in */
        uint32_t seed;
        unsigned nprod, group; /* producers; active at a time */
        long rotate;           /* steps between moves of the group by 10 */
        const char *window, *maxprod, *active, *idle_bytes; /* NULL: default */
        unsigned nparts;         /* partitions written (0: 4) */
        unsigned recent, recent_pm; /* redeliveries among the last @recent
                                       ids, per mille (0: 256, 25) */
        long steps;
        int exact; /* nothing forgotten expected: verdicts exact both ways */
        /* out */
        caps_t caps;
        size_t mem;
        long dups, unp;
} fleet_t;

/* One randomized run. @nprod producer instances write to @nparts
 * partitions (partition 0 is consumed, so its sequences have gaps), @group
 * of them at a time, the group moving on by 10 every @rotate steps (so
 * producers go idle and, after a lap, come back); deliveries are reordered
 * within a small buffer, redelivered (recently or long ago, 4% in all), and
 * the handler fails ~5% of the time (not recorded, redelivered later).
 * Every verdict is checked against the exact set of recorded ids: never a
 * duplicate that was not recorded; with @exact (nothing forgotten) every
 * answer both ways. */
static void fleet_run(fleet_t *f) {
        GRand *rnd = g_rand_new_with_seed(f->seed);
        rbk_conf_t *c = tconf_new();
        if (f->window)
                tconf_set(c, RBK__DEDUP_WINDOW_PROP, f->window);
        if (f->maxprod)
                tconf_set(c, RBK__DEDUP_MAX_PRODUCERS_PROP, f->maxprod);
        if (f->active)
                tconf_set(c, RBK__DEDUP_ACTIVE_PRODUCERS_PROP, f->active);
        if (f->idle_bytes)
                tconf_set(c, RBK__DEDUP_IDLE_BYTES_PROP, f->idle_bytes);
        uint64_t window = f->window ? g_ascii_strtoull(f->window, NULL, 10)
                                    : RBK__DEDUP_WINDOW_DEFAULT;
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        memset(&f->caps, 0, sizeof(f->caps));
        rbk__dedup_set_capacity_cb(d, caps_cb, &f->caps);
        GHashTable *ref = g_hash_table_new(refhash, g_direct_equal);
        uint64_t *pids = g_new(uint64_t, f->nprod);
        uint64_t *next = g_new0(uint64_t, f->nprod);
        uint64_t *hwm = g_new0(uint64_t, f->nprod);
        GArray *hist = g_array_new(FALSE, FALSE, sizeof(uint64_t) * 2);
        uint64_t pend[16][2];
        int npend = 0;
        unsigned base = 0;
        unsigned nparts = f->nparts ? f->nparts : 4;
        unsigned recent = f->recent ? f->recent : 256;
        unsigned recent_pm = f->recent_pm ? f->recent_pm : 25;
        long exp_dups = 0;

        f->dups = f->unp = 0;
        for (unsigned i = 0; i < f->nprod; i++)
                pids[i] = ((uint64_t)g_rand_int(rnd) << 32) | g_rand_int(rnd) | 1;
        for (long step = 0; step < f->steps; step++) {
                uint64_t pi, seq;
                uint32_t r = g_rand_int_range(rnd, 0, 1000);
                if (step && step % f->rotate == 0)
                        base = (base + 10) % f->nprod;
                if (r < 40 && hist->len) {
                        guint h = r < recent_pm ? hist->len - 1 - g_rand_int_range(rnd, 0, MIN(hist->len, recent))
                                         : (guint)g_rand_int_range(rnd, 0, (gint32)hist->len);
                        uint64_t *e = &g_array_index(hist, uint64_t, 2 * h);
                        pi = e[0];
                        seq = e[1];
                } else {
                        unsigned p = (base + (unsigned)g_rand_int_range(rnd, 0, (gint32)f->group)) % f->nprod;
                        do
                                next[p]++;
                        while (g_rand_int_range(rnd, 0, (gint32)nparts) != 0);
                        pend[npend][0] = p;
                        pend[npend][1] = next[p];
                        npend++;
                        if (npend < 16 && g_rand_int_range(rnd, 0, 4))
                                continue;
                        int k = g_rand_int_range(rnd, 0, npend);
                        pi = pend[k][0];
                        seq = pend[k][1];
                        pend[k][0] = pend[npend - 1][0];
                        pend[k][1] = pend[npend - 1][1];
                        npend--;
                        uint64_t e[2] = {pi, seq};
                        g_array_append_vals(hist, e, 1);
                }

                char b[RBK_MSGID_STR_SIZE];
                int n = fmt_id(b, pids[pi], seq);
                rbk__dedup_verdict_t v = rbk__dedup_check(d, "t", 0, b, (size_t)n);
                int seen = g_hash_table_contains(ref, refkey((unsigned)pi, seq));
                if (v == RBK__DEDUP_DUPLICATE && !seen)
                        ck_abort_msg("seed %u step %ld: %s reported DUPLICATE "
                                     "but never recorded", f->seed, step, b);
                if (f->exact) {
                        int in_window = seq <= hwm[pi] && hwm[pi] - seq < window;
                        if (seen && in_window && ++exp_dups)
                                ck_assert_msg(v == RBK__DEDUP_DUPLICATE,
                                              "seed %u step %ld: %s recorded, in the "
                                              "window, verdict %d", f->seed, step, b, v);
                        if (!seen)
                                ck_assert_msg(v == RBK__DEDUP_NEW ||
                                                  (v == RBK__DEDUP_UNPROVABLE && !in_window &&
                                                   seq <= hwm[pi]),
                                              "seed %u step %ld: %s verdict %d", f->seed, step, b, v);
                }
                if (v == RBK__DEDUP_DUPLICATE) {
                        f->dups++;
                        continue;
                }
                if (v == RBK__DEDUP_UNPROVABLE)
                        f->unp++;
                if (g_rand_int_range(rnd, 0, 100) < 5)
                        continue; /* handler failed: not recorded */
                rbk__dedup_record(d, "t", 0, b, (size_t)n, step);
                g_hash_table_add(ref, refkey((unsigned)pi, seq));
                if (seq > hwm[pi])
                        hwm[pi] = seq;
        }
        uint64_t cd, cu;
        rbk__dedup_partition_counts(d, "t", 0, &cd, &cu, NULL);
        ck_assert_uint_eq(cd, (uint64_t)f->dups);
        ck_assert_uint_eq(cu, (uint64_t)f->unp);
        if (f->exact)
                ck_assert_int_eq(f->dups, exp_dups);
        f->mem = rbk__dedup_memory(d);
        g_array_free(hist, TRUE);
        g_free(pids);
        g_free(next);
        g_free(hwm);
        g_hash_table_destroy(ref);
        rbk__dedup_destroy(d);
        tconf_free(c);
        g_rand_free(rnd);
}

static void randomized_run(uint32_t seed, unsigned nprod, unsigned maxprod,
                           unsigned window, unsigned nparts, long steps,
                           int exact) {
        char wbuf[32], pbuf[32];
        snprintf(wbuf, sizeof(wbuf), "%u", window);
        snprintf(pbuf, sizeof(pbuf), "%u", maxprod);
        fleet_t f = {.seed = seed, .nprod = nprod, .group = nprod,
                     .rotate = G_MAXLONG, .window = wbuf, .maxprod = pbuf,
                     .nparts = nparts, .recent = 64, .recent_pm = 30,
                     .steps = steps, .exact = exact};
        fleet_run(&f);
        /* the run did exercise duplicates */
        ck_assert_int_gt(f.dups, exact || maxprod > 1 ? steps / 1000 : 0);
        if (!exact)
                ck_assert_int_gt(f.unp, 0);
        /* memory is bounded by the producer bound */
        ck_assert_uint_le(f.mem, (size_t)maxprod * (window / 8 + 64) + 4096);
}

/* Valgrind makes the randomized runs 50x slower: scale them down there. */
static long scale(long n) {
        return rbk_test_under_valgrind() ? n / 40 : n;
}

START_TEST(randomized_exact_within_window) {
        /* 8 producers, room for all: the verdict is exact both ways */
        randomized_run(1, 8, 16, 1024, 4, scale(1500000), 1);
        randomized_run(2, 3, 3, 64, 1, scale(300000), 1);
        randomized_run(3, 12, 16, 65536, 50, scale(300000), 1);
}
END_TEST

START_TEST(randomized_with_eviction) {
        /* 40 producers, 16 kept: never a false duplicate */
        randomized_run(4, 40, 16, 1024, 3, scale(1500000), 0);
        randomized_run(5, 5, 3, 256, 2, scale(300000), 0);
        randomized_run(6, 4, 1, 256, 1, scale(300000), 0);
}
END_TEST

/* ---------------------------------------------------------------- persistence */

/* Records a mixed set into d (partition 0 of "t"): producer 0xA1 seqs
 * 1..3000 except multiples of 7, producer 0xB2 odd seqs, caller ids. */
static void fill(rbk__dedup_t *d) {
        for (uint64_t s = 1; s <= 3000; s++)
                if (s % 7)
                        rec(d, "t", 0xA1, s);
        for (uint64_t s = 1; s <= 500; s += 2)
                rec(d, "t", 0xB2, s);
        recs(d, "order-1");
        recs(d, "order-2");
}

/* The verdicts of a fixed set of queries. */
static void verdicts(rbk__dedup_t *d, GString *out) {
        g_string_truncate(out, 0);
        for (uint64_t s = 1; s <= 3100; s++)
                g_string_append_c(out, (char)('0' + chk(d, "t", 0xA1, s)));
        for (uint64_t s = 1; s <= 600; s++)
                g_string_append_c(out, (char)('0' + chk(d, "t", 0xB2, s)));
        g_string_append_c(out, (char)('0' + chks(d, "order-1")));
        g_string_append_c(out, (char)('0' + chks(d, "order-2")));
        g_string_append_c(out, (char)('0' + chks(d, "order-3")));
}

START_TEST(serialization_round_trip) {
        memstore_t m;
        errs_t e = {0};
        char err[256];
        GString *before = g_string_new(NULL), *after = g_string_new(NULL);
        rbk_conf_t *c = tconf_new();

        memstore_init(&m);
        tconf_set(c, RBK__DEDUP_WINDOW_PROP, "1024");
        memstore_attach(&m, c, 0);
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        rbk__dedup_set_error_cb(d, errs_cb, &e);
        rbk__dedup_assign(d, "t", 0);
        ck_assert_int_eq(m.loads, 1);
        /* nothing recorded: no save */
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 0, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(m.saves, 0);
        fill(d);
        verdicts(d, before);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 3000, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(m.saves, 1);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 3000, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(m.saves, 1); /* clean: not saved again */
        rbk__dedup_revoke(d, "t", 0);
        rbk__dedup_assign(d, "t", 0); /* reloads */
        verdicts(d, after);
        ck_assert_str_eq(before->str, after->str);
        rbk__dedup_destroy(d);

        /* a fresh consumer of the same group gets the same answers */
        d = rbk__dedup_new(c, "g");
        verdicts(d, after); /* check assigns on first use */
        ck_assert_str_eq(before->str, after->str);
        rbk__dedup_destroy(d);
        /* another group does not */
        d = rbk__dedup_new(c, "other");
        ck_assert_int_eq(chks(d, "order-1"), RBK__DEDUP_NEW);
        rbk__dedup_destroy(d);

        /* a smaller window: what fits is kept, nothing false */
        rbk_conf_t *c2 = tconf_new();
        tconf_set(c2, RBK__DEDUP_WINDOW_PROP, "64");
        tconf_set(c2, RBK__DEDUP_MAX_PRODUCERS_PROP, "1");
        c2->dedup_store = rbk__held_ref(c->dedup_store);
        d = rbk__dedup_new(c2, "g");
        for (uint64_t s = 1; s <= 3000; s++) {
                rbk__dedup_verdict_t v = chk(d, "t", 0xA1, s);
                /* 0xB2 was recorded last, so it is the one producer kept */
                ck_assert_int_ne(v, RBK__DEDUP_DUPLICATE);
        }
        for (uint64_t s = 1; s <= 500; s++) {
                rbk__dedup_verdict_t v = chk(d, "t", 0xB2, s);
                if (s > 499 - 64 && (s % 2))
                        ck_assert_int_eq(v, RBK__DEDUP_DUPLICATE);
                else
                        ck_assert_int_ne(v, RBK__DEDUP_DUPLICATE);
        }
        rbk__dedup_destroy(d);
        tconf_free(c2);

        /* a larger window */
        c2 = tconf_new();
        tconf_set(c2, RBK__DEDUP_WINDOW_PROP, "65536");
        c2->dedup_store = rbk__held_ref(c->dedup_store);
        d = rbk__dedup_new(c2, "g");
        verdicts(d, after);
        ck_assert_str_eq(before->str, after->str);
        rbk__dedup_destroy(d);
        tconf_free(c2);

        ck_assert_int_eq(e.n, 0);
        tconf_free(c);
        g_hash_table_destroy(m.blobs);
        g_string_free(before, TRUE);
        g_string_free(after, TRUE);
}
END_TEST

/* Every single-byte corruption and every truncation of a saved window is
 * refused (reported, partition starts empty): never a false duplicate. */
START_TEST(corrupt_blob_starts_empty) {
        memstore_t m;
        errs_t e = {0};
        char err[256];
        rbk_conf_t *c = tconf_new();

        memstore_init(&m);
        tconf_set(c, RBK__DEDUP_WINDOW_PROP, "128");
        memstore_attach(&m, c, 0);
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        for (uint64_t s = 1; s <= 100; s++)
                rec(d, "t", 0xA1, s);
        recs(d, "order-1");
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 101, err, sizeof(err)), RBK_OK);
        rbk__dedup_destroy(d);

        GBytes *good = g_bytes_ref(memstore_blob(&m, "g", "t", 0));
        gsize n;
        const unsigned char *gp = g_bytes_get_data(good, &n);
        ck_assert_uint_gt(n, 16);
        int tried = 0;
        for (gsize i = 0; i < n + n; i++) {
                unsigned char *bad = g_memdup2(gp, n);
                gsize bn = n;
                if (i < n)
                        bad[i] ^= (unsigned char)(1u << (i % 8));
                else
                        bn = i - n; /* truncated to 0..n-1 bytes */
                g_hash_table_replace(m.blobs, mkey("g", "t", 0),
                                     g_bytes_new_take(bad, bn));
                e.n = 0;
                d = rbk__dedup_new(c, "g");
                rbk__dedup_set_error_cb(d, errs_cb, &e);
                rbk__dedup_assign(d, "t", 0);
                ck_assert_msg(e.n == 1, "corruption %zu not reported", (size_t)i);
                ck_assert_int_eq(e.last, RBK_ERR_STORE);
                ck_assert_ptr_nonnull(strstr(e.reason, "corrupt"));
                for (uint64_t s = 1; s <= 100; s++)
                        ck_assert_int_eq(chk(d, "t", 0xA1, s), RBK__DEDUP_NEW);
                ck_assert_int_eq(chks(d, "order-1"), RBK__DEDUP_NEW);
                /* and it keeps working */
                rec(d, "t", 0xA1, 5);
                ck_assert_int_eq(chk(d, "t", 0xA1, 5), RBK__DEDUP_DUPLICATE);
                rbk__dedup_destroy(d);
                tried++;
        }
        ck_assert_int_eq(tried, (int)(2 * n));

        /* a load that fails is reported the same way */
        m.fail_load = RBK_ERR_IO;
        e.n = 0;
        d = rbk__dedup_new(c, "g");
        rbk__dedup_set_error_cb(d, errs_cb, &e);
        ck_assert_int_eq(chk(d, "t", 0xA1, 5), RBK__DEDUP_NEW);
        ck_assert_int_eq(e.n, 1);
        ck_assert_ptr_nonnull(strstr(e.reason, "disk on fire"));
        /* a save that fails is returned */
        m.fail_save = RBK_ERR_IO;
        rec(d, "t", 0xA1, 5);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 6, err, sizeof(err)), RBK_ERR_STORE);
        ck_assert_ptr_nonnull(strstr(err, "disk full"));
        m.fail_save = RBK_OK;
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 6, err, sizeof(err)), RBK_OK);
        rbk__dedup_destroy(d);

        g_bytes_unref(good);
        tconf_free(c);
        g_hash_table_destroy(m.blobs);
}
END_TEST

START_TEST(store_seen_consulted) {
        memstore_t m;
        errs_t e = {0};
        rbk_conf_t *c = tconf_new();

        memstore_init(&m);
        memstore_attach(&m, c, 1);
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        rbk__dedup_set_error_cb(d, errs_cb, &e);
        ck_assert_int_eq(chk(d, "t", 0xA1, 5), RBK__DEDUP_NEW);
        ck_assert_int_eq(m.seen_calls, 1);
        rec(d, "t", 0xA1, 5);
        ck_assert_int_eq(chk(d, "t", 0xA1, 5), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(m.seen_calls, 1); /* the window answered */
        m.seen_result = 1;
        ck_assert_int_eq(chk(d, "t", 0xA1, 6), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chks(d, "order-9"), RBK__DEDUP_DUPLICATE);
        m.seen_result = 0; /* learnt: the window proves it now */
        ck_assert_int_eq(chk(d, "t", 0xA1, 6), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chks(d, "order-9"), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", 0xA1, 7), RBK__DEDUP_NEW);
        m.seen_result = -1;
        ck_assert_int_eq(chk(d, "t", 0xA1, 8), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(e.n, 1);
        ck_assert_ptr_nonnull(strstr(e.reason, "lookup failed"));
        rbk__dedup_destroy(d);
        tconf_free(c);
        g_hash_table_destroy(m.blobs);
}
END_TEST

/* ---------------------------------------------------------------- SQLite */

static char *tmpdir_new(void) {
        GError *ge = NULL;
        char *dir = g_dir_make_tmp("rbk-dedup-XXXXXX", &ge);
        ck_assert_msg(dir != NULL, "tmp dir: %s", ge ? ge->message : "?");
        return dir;
}

static void tmpdir_free(char *dir) {
        const char *name;
        GDir *gd = g_dir_open(dir, 0, NULL);
        while (gd && (name = g_dir_read_name(gd))) {
                char *p = g_build_filename(dir, name, NULL);
                g_unlink(p);
                g_free(p);
        }
        if (gd)
                g_dir_close(gd);
        g_rmdir(dir);
        g_free(dir);
}

static rbk_conf_t *sqlite_conf(const char *path) {
        char err[512];
        rbk_dedup_store_t *st = rbk_dedup_sqlite_new(path, err, sizeof(err));
        ck_assert_msg(st != NULL, "%s", err);
        rbk_conf_t *c = tconf_new();
        ck_assert_int_eq(rbk_conf_set_dedup_store(c, st, err, sizeof(err)), RBK_OK);
        return c;
}

static int64_t sql_int(sqlite3 *db, const char *sql) {
        sqlite3_stmt *st;
        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        int64_t v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

START_TEST(sqlite_round_trip) {
        char *dir = tmpdir_new();
        char *path = g_build_filename(dir, "dedup.db", NULL);
        char err[512];
        GString *before = g_string_new(NULL), *after = g_string_new(NULL);

        ck_assert_ptr_null(rbk_dedup_sqlite_new("", err, sizeof(err)));
        ck_assert_ptr_null(rbk_dedup_sqlite_new("/nonexistent/dir/x.db", err, sizeof(err)));
        ck_assert_ptr_nonnull(strstr(err, "/nonexistent/dir/x.db"));

        /* never handed over: released by the caller */
        rbk_dedup_store_t *st = rbk_dedup_sqlite_new(path, err, sizeof(err));
        ck_assert_msg(st != NULL, "%s", err);
        st->destroy(st->opaque);

        rbk_conf_t *c = sqlite_conf(path);
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        fill(d);
        verdicts(d, before);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 3001, err, sizeof(err)), RBK_OK);
        rbk__dedup_destroy(d);
        tconf_free(c);

        c = sqlite_conf(path);
        d = rbk__dedup_new(c, "g");
        verdicts(d, after);
        ck_assert_str_eq(before->str, after->str);
        rbk__dedup_destroy(d);
        tconf_free(c);

        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_stmt *q;
        sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), "wal");
        sqlite3_finalize(q);
        ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM rbk_dedup_window"), 1);
        ck_assert_int_eq(sql_int(db, "SELECT next_offset FROM rbk_dedup_window"), 3001);
        /* damage the saved window: reported, the partition starts empty */
        ck_assert_int_eq(sqlite3_exec(db, "UPDATE rbk_dedup_window SET blob = x'00112233'", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        c = sqlite_conf(path);
        d = rbk__dedup_new(c, "g");
        errs_t e = {0};
        rbk__dedup_set_error_cb(d, errs_cb, &e);
        ck_assert_int_eq(chks(d, "order-1"), RBK__DEDUP_NEW);
        ck_assert_int_eq(e.n, 1);
        rbk__dedup_destroy(d);
        tconf_free(c);

        g_string_free(before, TRUE);
        g_string_free(after, TRUE);
        g_free(path);
        tmpdir_free(dir);
}
END_TEST

static rbk_message_t tmsg(const char *topic, int32_t partition, int64_t offset,
                          const char *id) {
        rbk_message_t m;
        memset(&m, 0, sizeof(m));
        m.version = RBK_MESSAGE_VERSION;
        m.topic = topic;
        m.partition = partition;
        m.offset = offset;
        m.id = id;
        return m;
}

/* The end of a test on an application database: the configuration (and its
 * store), the application's connection, the file and its directory. */
static void sqlite_app_done(rbk_conf_t *c, sqlite3 *db, char *path,
                            char *dir) {
        tconf_free(c);
        sqlite3_close(db);
        g_free(path);
        tmpdir_free(dir);
}

START_TEST(sqlite_record_in_txn) {
        char *dir = tmpdir_new();
        char *path = g_build_filename(dir, "app.db", NULL);
        char err[512], id[RBK_MSGID_STR_SIZE];
        sqlite3 *db;

        /* the application's database, opened before the store ever was */
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE effects (id TEXT PRIMARY KEY)", NULL, NULL, NULL), SQLITE_OK);

        fmt_id(id, 0xA1, 1);
        rbk_message_t m = tmsg("t", 0, 10, id);
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(db, "g", &m, err, sizeof(err)), RBK_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(err, "transaction"));
        rbk_message_t noid = tmsg("t", 0, 11, NULL);
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(db, "g", &noid, err, sizeof(err)), RBK_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(err, "no rbk-id"));
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(NULL, "g", &m, err, sizeof(err)), RBK_ERR_INVALID_ARG);
        /* committed with the effect (creates the table on the way) */
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(db, "g", &m, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(db, "g", &m, err, sizeof(err)), RBK_OK);
        sqlite3_exec(db, "INSERT INTO effects VALUES ('a')", NULL, NULL, NULL);
        ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        /* rolled back with the effect */
        char id2[RBK_MSGID_STR_SIZE];
        fmt_id(id2, 0xA1, 2);
        rbk_message_t m2 = tmsg("t", 0, 11, id2);
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(db, "g", &m2, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
        /* a caller-supplied id */
        rbk_message_t m3 = tmsg("t", 0, 12, "order-17");
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(db, "g", &m3, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);

        rbk_conf_t *c = sqlite_conf(path);
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, id, strlen(id)), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, id2, strlen(id2)), RBK__DEDUP_NEW);
        ck_assert_int_eq(chks(d, "order-17"), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check(d, "t", 1, id, strlen(id)), RBK__DEDUP_NEW);
        rbk__dedup_t *d2 = rbk__dedup_new(c, "other-group");
        ck_assert_int_eq(rbk__dedup_check(d2, "t", 0, id, strlen(id)), RBK__DEDUP_NEW);
        rbk__dedup_destroy(d2);

        /* the save with the commit prunes the rows the saved window
         * proves (both ids were learnt, the one at the committed offset
         * too); they stay provable through the saved window */
        ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM rbk_dedup_txn"), 2);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 12, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM rbk_dedup_txn"), 0);
        rbk__dedup_destroy(d);
        tconf_free(c);
        c = sqlite_conf(path);
        d = rbk__dedup_new(c, "g");
        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, id, strlen(id)), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chks(d, "order-17"), RBK__DEDUP_DUPLICATE);
        rbk__dedup_destroy(d);
        sqlite_app_done(c, db, path, dir);
}
END_TEST

/* Records @id at @offset of t [0] in a transaction of the application's. */
static void txn_row(sqlite3 *db, const char *id, int64_t offset) {
        char err[512];
        rbk_message_t m = tmsg("t", 0, offset, id);
        ck_assert_int_eq(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(rbk_dedup_sqlite_record_in_txn(db, "g", &m, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

static int txn_has(sqlite3 *db, const char *id) {
        char *sql = sqlite3_mprintf("SELECT count(*) FROM rbk_dedup_txn WHERE id = CAST(%Q AS BLOB)", id);
        int n = (int)sql_int(db, sql);
        sqlite3_free(sql);
        return n;
}

/* A save prunes an rbk_dedup_txn row only when the window it saves proves
 * the id (or has moved past it), never because the row lies below the
 * committed offset: a consumer restarted at the committed offset with a
 * window saved before an id was handled keeps that id's row, so a later
 * duplicate of it is still dropped. */
START_TEST(sqlite_txn_rows_pruned_by_proof) {
        char *dir = tmpdir_new();
        char *path = g_build_filename(dir, "app.db", NULL);
        char err[512], x[RBK_MSGID_STR_SIZE], y[RBK_MSGID_STR_SIZE],
            z[RBK_MSGID_STR_SIZE], a[RBK_MSGID_STR_SIZE];
        const uint64_t P = 0xB1, Q = 0xB2;
        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        rbk_conf_t *c = sqlite_conf(path);
        tconf_set(c, RBK__DEDUP_WINDOW_PROP, "64");

        /* A window saved with P's 1..3 handled (committed offset 4). */
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        for (uint64_t q = 1; q <= 3; q++)
                rec(d, "t", P, q);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 4, err, sizeof(err)), RBK_OK);
        rbk__dedup_destroy(d);

        /* Rows of the application's transactions. */
        fmt_id(x, P, 5); /* handled; the window saved next never holds it */
        fmt_id(y, P, 6); /* handled and recorded in the window */
        fmt_id(z, Q, 1); /* its producer's window moves past it */
        fmt_id(a, P, 9); /* at or above the committed offset, not proven */
        txn_row(db, z, 4);
        txn_row(db, x, 5);
        txn_row(db, y, 6);
        txn_row(db, "order-7", 7); /* a caller id the window never held */
        txn_row(db, a, 20);

        /* Restarted at the committed offset 4 with the window saved before
         * x was handled: y and Q's 65 are handled, x is not, and offset 10
         * is committed. */
        d = rbk__dedup_new(c, "g");
        rbk__dedup_record(d, "t", 0, y, strlen(y), 6);
        rec(d, "t", Q, 65);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 10, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(txn_has(db, y), 0); /* proven by the window */
        ck_assert_int_eq(txn_has(db, z), 0); /* the window moved past it */
        ck_assert_int_eq(txn_has(db, x), 1); /* below 10, not proven: kept */
        ck_assert_int_eq(txn_has(db, "order-7"), 1);
        ck_assert_int_eq(txn_has(db, a), 1);
        ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM rbk_dedup_txn"), 3);
        rbk__dedup_destroy(d);

        /* The next owner drops a later duplicate of x (and of the caller
         * id) through the kept rows, learns them, and its save prunes them. */
        d = rbk__dedup_new(c, "g");
        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, x, strlen(x)), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chks(d, "order-7"), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, y, strlen(y)), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(rbk__dedup_check(d, "t", 0, z, strlen(z)), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 30, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(txn_has(db, x), 0);
        ck_assert_int_eq(txn_has(db, "order-7"), 0);
        ck_assert_int_eq(txn_has(db, a), 1); /* P's window has not reached 9 */

        /* Rows the window cannot place (caller ids it does not hold): at
         * most a window's worth (64) stay, the highest offsets. */
        for (int i = 0; i < 70; i++) {
                char cid[32];
                snprintf(cid, sizeof(cid), "c-%d", i);
                txn_row(db, cid, 100 + i);
        }
        rec(d, "t", P, 7);
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 200, err, sizeof(err)), RBK_OK);
        ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM rbk_dedup_txn WHERE off >= 100"), 64);
        ck_assert_int_eq(sql_int(db, "SELECT min(off) FROM rbk_dedup_txn WHERE off >= 100"), 106);
        ck_assert_int_eq(txn_has(db, a), 1);
        rbk__dedup_destroy(d);
        sqlite_app_done(c, db, path, dir);
}
END_TEST

/* A consumer process records and commits ids 1..200 through the store,
 * then handles 201..300 (recorded in memory; 251..300 also in the
 * application's own transactions) and is killed with SIGKILL before its
 * next commit. The restarted consumer drops 1..200 and 251..300 and hands
 * 201..250 to the handler again: redelivered, never lost. */
/* A partition that comes back to the same consumer keeps the window it had
 * (records newer than the last save included), unless another consumer of
 * the group handled the partition in between and saved a newer window. */
START_TEST(reassign_keeps_own_window_unless_store_newer) {
        char *dir = tmpdir_new();
        char *path = g_build_filename(dir, "dedup.db", NULL);
        char err[512];
        rbk_conf_t *c = sqlite_conf(path);
        rbk__dedup_t *a = rbk__dedup_new(c, "g");
        rbk__dedup_t *b = rbk__dedup_new(c, "g");
        const uint64_t P = 11;

        /* a handles 1..10, saves at offset 11, then handles 11..20 */
        for (uint64_t s = 1; s <= 10; s++)
                rec(a, "t", P, s);
        ck_assert_int_eq(rbk__dedup_commit(a, "t", 0, 11, err, sizeof(err)), RBK_OK);
        for (uint64_t s = 11; s <= 20; s++)
                rec(a, "t", P, s);
        /* lost, assigned back: 11..20 (never saved) are still known */
        rbk__dedup_revoke(a, "t", 0);
        /* A handler still running at the loss finishes (21): its id goes
         * into the retained window, which stays revoked. */
        char b21[RBK_MSGID_STR_SIZE];
        int n21 = fmt_id(b21, P, 21);
        rbk_msgid_t m21;
        ck_assert_int_eq(rbk_msgid_parse(b21, (size_t)n21, &m21), RBK_OK);
        rbk__dedup_record_part(a, rbk__dedup_part(a, "t", 0), b21, (size_t)n21,
                               &m21, 20);
        ck_assert_int_eq(chk(a, "t", P, 21), RBK__DEDUP_UNPROVABLE);
        rbk__dedup_assign(a, "t", 0);
        ck_assert_int_eq(chk(a, "t", P, 15), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(a, "t", P, 5), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(a, "t", P, 21), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(a, "t", P, 22), RBK__DEDUP_NEW);
        ck_assert_int_eq(rbk__dedup_commit(a, "t", 0, 21, err, sizeof(err)), RBK_OK);
        rbk__dedup_revoke(a, "t", 0);

        /* b takes over, loads a's save, handles 21..40 and saves at 41 */
        rbk__dedup_assign(b, "t", 0);
        ck_assert_int_eq(chk(b, "t", P, 20), RBK__DEDUP_DUPLICATE);
        for (uint64_t s = 21; s <= 40; s++)
                rec(b, "t", P, s);
        ck_assert_int_eq(rbk__dedup_commit(b, "t", 0, 41, err, sizeof(err)), RBK_OK);
        rbk__dedup_revoke(b, "t", 0);

        /* back to a: the store's window is newer than a's own, so it wins */
        rbk__dedup_assign(a, "t", 0);
        ck_assert_int_eq(chk(a, "t", P, 30), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(a, "t", P, 40), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(a, "t", P, 41), RBK__DEDUP_NEW);

        rbk__dedup_destroy(a);
        rbk__dedup_destroy(b);
        tconf_free(c);
        g_free(path);
        tmpdir_free(dir);
}
END_TEST

START_TEST(sqlite_kill_9_before_commit) {
        char *dir = tmpdir_new();
        char *path = g_build_filename(dir, "dedup.db", NULL);
        int pfd[2];
        const uint64_t P = UINT64_C(0x1234567890abcdef);

        ck_assert_int_eq(pipe(pfd), 0);
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                char err[512], b[RBK_MSGID_STR_SIZE];
                close(pfd[0]);
                rbk_dedup_store_t *st = rbk_dedup_sqlite_new(path, err, sizeof(err));
                if (!st)
                        rbk_test_child_exit(10);
                rbk_conf_t *c = g_new0(rbk_conf_t, 1);
                if (rbk_conf_set_dedup_store(c, st, err, sizeof(err)) != RBK_OK)
                        rbk_test_child_exit(11);
                rbk__dedup_t *d = rbk__dedup_new(c, "g");
                sqlite3 *db;
                if (sqlite3_open(path, &db) != SQLITE_OK)
                        rbk_test_child_exit(12);
                sqlite3_busy_timeout(db, 5000);
                rbk__dedup_assign(d, "t", 3);
                for (uint64_t s = 1; s <= 300; s++) {
                        rbk_msgid_t m = {P, s};
                        int n = rbk_msgid_format(&m, b, sizeof(b));
                        if (rbk__dedup_check(d, "t", 3, b, (size_t)n) != RBK__DEDUP_NEW)
                                rbk_test_child_exit(13);
                        if (s > 250) { /* the handler records in its txn */
                                rbk_message_t msg = tmsg("t", 3, (int64_t)s - 1, b);
                                if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
                                    rbk_dedup_sqlite_record_in_txn(db, "g", &msg, err, sizeof(err)) != RBK_OK ||
                                    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
                                        rbk_test_child_exit(14);
                        }
                        rbk__dedup_record(d, "t", 3, b, (size_t)n, (int64_t)s - 1);
                        if (s == 200 && rbk__dedup_commit(d, "t", 3, 200, err, sizeof(err)) != RBK_OK)
                                rbk_test_child_exit(15);
                }
                /* tell the parent, then wait to be killed */
                if (write(pfd[1], "k", 1) != 1)
                        rbk_test_child_exit(16);
                for (;;)
                        pause();
        }
        close(pfd[1]);
        char ch;
        ssize_t r;
        do
                r = read(pfd[0], &ch, 1);
        while (r < 0 && errno == EINTR);
        int status = 0;
        if (r != 1) {
                waitpid(pid, &status, 0);
                ck_abort_msg("child failed before the kill: exit %d",
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        close(pfd[0]);
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        rbk_conf_t *c = sqlite_conf(path);
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        errs_t e = {0};
        rbk__dedup_set_error_cb(d, errs_cb, &e);
        rbk__dedup_assign(d, "t", 3);
        for (uint64_t s = 1; s <= 300; s++) {
                char b[RBK_MSGID_STR_SIZE];
                int n = fmt_id(b, P, s);
                rbk__dedup_verdict_t v = rbk__dedup_check(d, "t", 3, b, (size_t)n);
                if (s <= 200 || s > 250)
                        ck_assert_msg(v == RBK__DEDUP_DUPLICATE, "seq %d: %d", (int)s, v);
                else
                        ck_assert_msg(v == RBK__DEDUP_NEW, "seq %d: %d", (int)s, v);
        }
        ck_assert_int_eq(e.n, 0);
        rbk__dedup_destroy(d);
        tconf_free(c);
        g_free(path);
        tmpdir_free(dir);
}
END_TEST

/* ---------------------------------------------------------------- threads, memory */

typedef struct worker_s {
        rbk__dedup_t *d;
        int32_t partition;
        int failures;
} worker_t;

static gpointer worker(gpointer p) {
        worker_t *w = p;
        for (uint64_t s = 1; s <= 20000; s++) {
                char b[RBK_MSGID_STR_SIZE];
                int n = fmt_id(b, 0xA1 + (s % 3), s);
                if (rbk__dedup_check(w->d, "t", w->partition, b, (size_t)n) != RBK__DEDUP_NEW)
                        w->failures++;
                rbk__dedup_record(w->d, "t", w->partition, b, (size_t)n, (int64_t)s);
                if (rbk__dedup_check(w->d, "t", w->partition, b, (size_t)n) != RBK__DEDUP_DUPLICATE)
                        w->failures++;
        }
        return NULL;
}

START_TEST(partitions_in_parallel) {
        rbk__dedup_t *d = rbk__dedup_new(NULL, "g");
        worker_t w[6];
        GThread *th[6];
        for (int i = 0; i < 6; i++) {
                w[i].d = d;
                w[i].partition = i;
                w[i].failures = 0;
                th[i] = g_thread_new("w", worker, &w[i]);
        }
        size_t mem = 0;
        for (int i = 0; i < 1000; i++) { /* stats from another thread */
                mem = rbk__dedup_memory(d);
                uint64_t x;
                rbk__dedup_partition_counts(d, "t", i % 6, &x, NULL, NULL);
        }
        for (int i = 0; i < 6; i++) {
                g_thread_join(th[i]);
                ck_assert_int_eq(w[i].failures, 0);
        }
        mem = rbk__dedup_memory(d);
        ck_assert_uint_ge(mem, 6 * 3 * (RBK__DEDUP_WINDOW_DEFAULT / 8));
        ck_assert_uint_le(mem, 6 * 3 * (RBK__DEDUP_WINDOW_DEFAULT / 8) + 6 * 4096 + 4096);
        for (int i = 0; i < 6; i++)
                rbk__dedup_revoke(d, "t", i);
        /* revoked windows are kept (and counted) for a re-assignment */
        ck_assert_uint_eq(rbk__dedup_memory(d), mem);
        rbk__dedup_destroy(d);
}
END_TEST

/* A handler finishing after its partition was revoked (lost, or revoke
 * timed out) races with revoke and a new assignment: memory-safe, and never
 * a false duplicate. */
typedef struct churn_s {
        rbk__dedup_t *d;
        gint stop;
        long falsedup;
} churn_t;

static gpointer churner(gpointer p) {
        churn_t *c = p;
        for (uint64_t s = 1; !g_atomic_int_get(&c->stop); s++) {
                char b[RBK_MSGID_STR_SIZE];
                int n = fmt_id(b, 0xA1, s);
                if (rbk__dedup_check(c->d, "t", 0, b, (size_t)n) == RBK__DEDUP_DUPLICATE)
                        c->falsedup++;
                rbk__dedup_record(c->d, "t", 0, b, (size_t)n, (int64_t)s);
                char e[128];
                rbk__dedup_commit(c->d, "t", 0, (int64_t)s, e, sizeof(e));
        }
        return NULL;
}

START_TEST(revoke_races_with_late_handler) {
        memstore_t m;
        rbk_conf_t *c = tconf_new();
        memstore_init(&m);
        memstore_attach(&m, c, 0);
        churn_t ch = {rbk__dedup_new(c, "g"), 0, 0};
        rbk__dedup_assign(ch.d, "t", 0);
        GThread *th = g_thread_new("churn", churner, &ch);
        for (int i = 0; i < 2000; i++) {
                rbk__dedup_revoke(ch.d, "t", 0);
                (void)rbk__dedup_memory(ch.d);
                rbk__dedup_assign(ch.d, "t", 0);
        }
        g_atomic_int_set(&ch.stop, 1);
        g_thread_join(th);
        ck_assert_int_eq(ch.falsedup, 0);
        rbk__dedup_destroy(ch.d);
        tconf_free(c);
        g_hash_table_destroy(m.blobs);
}
END_TEST

START_TEST(memory_bounded) {
        rbk__dedup_t *d = rbk__dedup_new(NULL, "g");
        size_t empty = rbk__dedup_memory(d);
        for (uint64_t p = 1; p <= 200; p++)
                rec(d, "t", p, p * 1000);
        size_t full = rbk__dedup_memory(d);
        const size_t wbytes = RBK__DEDUP_WINDOW_DEFAULT / 8;
        /* 128 active bitmaps, 72 idle producers of one run each */
        ck_assert_uint_ge(full, empty + RBK__DEDUP_ACTIVE_PRODUCERS_DEFAULT * wbytes);
        ck_assert_uint_le(full, empty + RBK__DEDUP_ACTIVE_PRODUCERS_DEFAULT * (wbytes + 64) +
                                    200 * 128 + 4096);
        for (uint64_t p = 1; p <= 200; p++)
                ck_assert_int_eq(chk(d, "t", p, p * 1000), RBK__DEDUP_DUPLICATE);
        for (int i = 0; i < 20000; i++) {
                char b[32];
                snprintf(b, sizeof(b), "caller-%d", i);
                recs(d, b);
        }
        size_t withf = rbk__dedup_memory(d);
        ck_assert_uint_gt(withf, full + 10000 * 16);
        ck_assert_uint_lt(withf, full + 10000 * 120);
        ck_assert_int_eq(chks(d, "caller-9999"), RBK__DEDUP_NEW);
        ck_assert_int_eq(chks(d, "caller-10000"), RBK__DEDUP_DUPLICATE);
        rbk__dedup_destroy(d);
}
END_TEST

/* ---------------------------------------------------------------- fleets */

START_TEST(fleet_of_1000_producers_at_the_defaults) {
        /* 1,000 producer instances, 100 active at a time, the group going
         * round all of them 1.5 times: every duplicate within the window
         * is dropped, nothing else, nothing forgotten. */
        fleet_t f = {.seed = 11, .nprod = 1000, .group = 100,
                     .rotate = rbk_test_under_valgrind() ? 100 : 2000,
                     .steps = scale(300000), .exact = 1};
        fleet_run(&f);
        ck_assert_int_eq(f.caps.n, 0);
        ck_assert_int_gt(f.dups, f.steps / 100);
        ck_assert_int_eq(f.unp, 0);
        /* the bound at the defaults: the active bitmaps, the idle budget,
         * the producer entries and their table */
        const size_t bound = (size_t)RBK__DEDUP_ACTIVE_PRODUCERS_DEFAULT *
                                 (RBK__DEDUP_WINDOW_DEFAULT / 8) +
                             RBK__DEDUP_IDLE_BYTES_DEFAULT +
                             (size_t)RBK__DEDUP_MAX_PRODUCERS_DEFAULT * 128 +
                             64 * 1024;
        fprintf(stderr, "fleet_of_1000_producers: %zu bytes for one partition "
                        "(bound %zu)\n", f.mem, bound);
        ck_assert_uint_le(f.mem, bound);
}
END_TEST

START_TEST(fleet_beyond_the_bounds_never_a_false_duplicate) {
        /* more producers than tracked, few bitmaps, a small idle budget:
         * windows are forgotten, duplicates pass, none is invented */
        fleet_t f = {.seed = 12, .nprod = 300, .group = 40, .rotate = 500,
                     .window = "4096", .maxprod = "200", .active = "16",
                     .idle_bytes = "8192", .steps = 300000};
        /* (Not scaled under valgrind: fewer steps would stay inside the
         * bounds, and the point is to leave them.) */
        fleet_run(&f);
        ck_assert_int_gt(f.caps.n, 0);
        ck_assert_uint_gt(f.caps.forgotten, 0);
        ck_assert_int_gt(f.dups, 0);
        ck_assert_int_gt(f.unp, 0);
        ck_assert_uint_le(f.mem, 16 * (4096 / 8 + 64) + 8192 + 200 * 128 + 64 * 1024);
        /* no idle budget at all, and a one-producer bound */
        fleet_t g = {.seed = 13, .nprod = 50, .group = 10, .rotate = 300,
                     .window = "1024", .active = "4", .idle_bytes = "0",
                     .steps = scale(200000)};
        fleet_run(&g);
        ck_assert_int_gt(g.caps.n, 0);
        fleet_t h = {.seed = 14, .nprod = 20, .group = 5, .rotate = 100,
                     .window = "256", .maxprod = "1", .steps = scale(100000)};
        fleet_run(&h);
        ck_assert_int_gt(h.caps.n, 0);
        /* room for the whole fleet with few bitmaps: still exact */
        fleet_t e = {.seed = 15, .nprod = 300, .group = 30, .rotate = 500,
                     .window = "4096", .active = "8", .steps = scale(300000),
                     .exact = 1};
        fleet_run(&e);
        ck_assert_int_eq(e.caps.n, 0);
}
END_TEST

START_TEST(compaction_exact_in_both_forms) {
        /* one bitmap for three producers: nearly every record compacts one
         * window and expands another. Dense (two partitions: the words
         * form) and sparse (fifty: the runs form), small windows so that
         * they wrap around the ring; exact both ways. */
        static const char *const windows[] = {"64", "256", "4096"};
        for (unsigned k = 0; k < 3; k++) {
                fleet_t f = {.seed = 20 + k, .nprod = 3, .group = 3,
                             .rotate = G_MAXLONG, .window = windows[k],
                             .active = "1", .nparts = 2,
                             .steps = scale(100000), .exact = 1};
                fleet_run(&f);
                ck_assert_int_eq(f.caps.n, 0);
                ck_assert_int_gt(f.dups, 0);
                f.seed += 10;
                f.nparts = 50;
                fleet_run(&f);
                ck_assert_int_eq(f.caps.n, 0);
                ck_assert_int_gt(f.dups, 0);
        }
}
END_TEST

START_TEST(idle_windows_compacted_and_expanded) {
        rbk_conf_t *c = tconf_new();
        tconf_set(c, RBK__DEDUP_ACTIVE_PRODUCERS_PROP, "2");
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        caps_t caps = {0};
        rbk__dedup_set_capacity_cb(d, caps_cb, &caps);
        const uint64_t A = 0xa, B = 0xb, C = 0xc;
        /* A: a dense run, holes, a run across a word and the wrap */
        for (uint64_t s = 1; s <= 300; s++)
                if (s % 7)
                        rec(d, "t", A, s);
        rec(d, "t", A, 262144 + 100); /* slides the window: 101..300 stay */
        rec(d, "t", B, 5);
        size_t two = rbk__dedup_memory(d);
        rec(d, "t", C, 9); /* A, the least recent, is compacted */
        size_t three = rbk__dedup_memory(d);
        ck_assert_uint_lt(three - two, 1024); /* no third bitmap */
        for (uint64_t s = 1; s <= 400; s++) {
                rbk__dedup_verdict_t want =
                    s <= 100 ? RBK__DEDUP_UNPROVABLE
                    : s <= 300 && s % 7 ? RBK__DEDUP_DUPLICATE
                                        : RBK__DEDUP_NEW;
                ck_assert_int_eq(chk(d, "t", A, s), want);
        }
        ck_assert_int_eq(chk(d, "t", A, 262144 + 100), RBK__DEDUP_DUPLICATE);
        /* A records again: expanded (B compacted), the same answers */
        rec(d, "t", A, 154);
        ck_assert_int_eq(chk(d, "t", A, 154), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", A, 161), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", A, 153), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", A, 100), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", B, 5), RBK__DEDUP_DUPLICATE);
        ck_assert_int_eq(chk(d, "t", B, 4), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", C, 9), RBK__DEDUP_DUPLICATE);
        ck_assert_uint_le(rbk__dedup_memory(d), two + 1024); /* still two bitmaps */
        ck_assert_int_eq(caps.n, 0);
        rbk__dedup_destroy(d);
        tconf_free(c);
}
END_TEST

START_TEST(capacity_reported_once_per_window) {
        rbk_conf_t *c = tconf_new();
        tconf_set(c, RBK__DEDUP_WINDOW_PROP, "1024");
        tconf_set(c, RBK__DEDUP_MAX_PRODUCERS_PROP, "16");
        tconf_set(c, RBK__DEDUP_ACTIVE_PRODUCERS_PROP, "4");
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        caps_t caps = {0};
        rbk__dedup_set_capacity_cb(d, caps_cb, &caps);
        for (uint64_t p = 1; p <= 16; p++)
                rec(d, "t", p, 1);
        ck_assert_int_eq(caps.n, 0); /* at the bound, not beyond */
        rec(d, "t", 17, 1);          /* producer 1 forgotten */
        ck_assert_int_eq(caps.n, 1);
        ck_assert_uint_eq(caps.forgotten, 1);
        ck_assert_ptr_nonnull(strstr(caps.reason, "rbk.dedup.max.producers=16"));
        ck_assert_int_eq(chk(d, "t", 1, 1), RBK__DEDUP_UNPROVABLE);
        /* more losses within the same window of records: no more reports */
        for (uint64_t p = 18; p <= 100; p++)
                rec(d, "t", p, 1);
        ck_assert_int_eq(caps.n, 1);
        /* a window of records later, the losses held back are reported,
         * with the count since the last report */
        for (uint64_t s = 2; s <= 1024; s++)
                rec(d, "t", 100, s);
        ck_assert_int_eq(caps.n, 2);
        ck_assert_uint_eq(caps.forgotten, 1 + 83);
        rec(d, "t", 101, 1); /* within the new window: held back */
        ck_assert_int_eq(caps.n, 2);
        for (uint64_t s = 1025; s <= 2048; s++)
                rec(d, "t", 100, s);
        ck_assert_int_eq(caps.n, 3);
        ck_assert_uint_eq(caps.forgotten, 1 + 83 + 1);
        for (uint64_t s = 2049; s <= 4096; s++)
                rec(d, "t", 100, s);
        ck_assert_int_eq(caps.n, 3); /* nothing lost since: silent */
        /* the idle budget: idle windows forgotten are reported too */
        rbk__dedup_destroy(d);
        tconf_set(c, RBK__DEDUP_IDLE_BYTES_PROP, "0");
        tconf_set(c, RBK__DEDUP_MAX_PRODUCERS_PROP, "1024");
        d = rbk__dedup_new(c, "g");
        memset(&caps, 0, sizeof(caps));
        rbk__dedup_set_capacity_cb(d, caps_cb, &caps);
        for (uint64_t p = 1; p <= 4; p++)
                rec(d, "t", p, 3);
        ck_assert_int_eq(caps.n, 0);
        rec(d, "t", 5, 3); /* producer 1 made idle: nothing may be kept */
        ck_assert_int_eq(caps.n, 1);
        ck_assert_ptr_nonnull(strstr(caps.reason, "rbk.dedup.idle.bytes=0"));
        ck_assert_int_eq(chk(d, "t", 1, 3), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", 1, 2), RBK__DEDUP_UNPROVABLE);
        ck_assert_int_eq(chk(d, "t", 1, 4), RBK__DEDUP_NEW);
        ck_assert_int_eq(chk(d, "t", 2, 3), RBK__DEDUP_DUPLICATE);
        rbk__dedup_destroy(d);
        tconf_free(c);
}
END_TEST

START_TEST(fleet_window_saved_and_loaded) {
        /* idle producers' windows go into the saved blob like active ones */
        memstore_t m;
        memstore_init(&m);
        rbk_conf_t *c = tconf_new();
        tconf_set(c, RBK__DEDUP_WINDOW_PROP, "4096");
        tconf_set(c, RBK__DEDUP_ACTIVE_PRODUCERS_PROP, "8");
        memstore_attach(&m, c, 0);
        rbk__dedup_t *d = rbk__dedup_new(c, "g");
        rbk__dedup_assign(d, "t", 0);
        for (uint64_t p = 1; p <= 100; p++)
                for (uint64_t s = p; s <= 5000; s += p % 5 + 1)
                        rec(d, "t", p, s);
        char err[256];
        ck_assert_int_eq(rbk__dedup_commit(d, "t", 0, 10, err, sizeof(err)), RBK_OK);
        GString *want = g_string_new(NULL), *got = g_string_new(NULL);
        for (uint64_t p = 1; p <= 101; p++)
                for (uint64_t s = 1; s <= 5100; s++)
                        g_string_append_c(want, (char)('0' + chk(d, "t", p, s)));
        rbk__dedup_destroy(d);
        d = rbk__dedup_new(c, "g");
        rbk__dedup_assign(d, "t", 0);
        for (uint64_t p = 1; p <= 101; p++)
                for (uint64_t s = 1; s <= 5100; s++)
                        g_string_append_c(got, (char)('0' + chk(d, "t", p, s)));
        ck_assert_str_eq(got->str, want->str);
        rbk__dedup_destroy(d);
        g_string_free(want, TRUE);
        g_string_free(got, TRUE);
        tconf_free(c);
        g_hash_table_destroy(m.blobs);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("dedup");
        RBK_TCASE(s, no_id_and_basic_verdicts, 10);
        RBK_TCASE(s, window_slides, 10);
        RBK_TCASE(s, eviction_never_claims_old_sequences, 10);
        RBK_TCASE(s, foreign_ids_and_garbled_headers, 10);
        RBK_TCASE(s, conf_values_checked, 10);
        RBK_TCASE(s, store_setter_and_ownership, 10);
        RBK_TCASE(s, randomized_exact_within_window, 60);
        RBK_TCASE(s, randomized_with_eviction, 60);
        RBK_TCASE(s, serialization_round_trip, 30);
        RBK_TCASE(s, corrupt_blob_starts_empty, 60);
        RBK_TCASE(s, store_seen_consulted, 10);
        RBK_TCASE(s, sqlite_round_trip, 30);
        RBK_TCASE(s, sqlite_record_in_txn, 30);
        RBK_TCASE(s, sqlite_txn_rows_pruned_by_proof, 30);
        RBK_TCASE(s, reassign_keeps_own_window_unless_store_newer, 30);
        RBK_TCASE(s, sqlite_kill_9_before_commit, 30);
        RBK_TCASE(s, partitions_in_parallel, 30);
        RBK_TCASE(s, revoke_races_with_late_handler, 30);
        RBK_TCASE(s, memory_bounded, 10);
        RBK_TCASE(s, fleet_of_1000_producers_at_the_defaults, 120);
        RBK_TCASE(s, fleet_beyond_the_bounds_never_a_false_duplicate, 120);
        RBK_TCASE(s, idle_windows_compacted_and_expanded, 10);
        RBK_TCASE(s, compaction_exact_in_both_forms, 60);
        RBK_TCASE(s, capacity_reported_once_per_window, 10);
        RBK_TCASE(s, fleet_window_saved_and_loaded, 30);
        return s;
}

RBK_TEST_MAIN()
