/* Message id formatting and parsing. */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "internal.h"
#include "robustkafka.h"

/* Formats with the library and with printf, parses back, compares. */
static void roundtrip(uint64_t pid, uint64_t seq) {
        rbk_msgid_t id = {pid, seq}, back = {0, 0};
        char buf[RBK_MSGID_STR_SIZE], ref[64];
        int n = rbk_msgid_format(&id, buf, sizeof(buf));
        int rn = snprintf(ref, sizeof(ref), "%016" PRIx64 "-%" PRIu64, pid,
                          seq);
        ck_assert_int_eq(n, rn);
        ck_assert_str_eq(buf, ref);
        ck_assert_int_eq(rbk_msgid_parse(buf, (size_t)n, &back), RBK_OK);
        ck_assert_msg(back.producer_id == pid && back.seq == seq,
                      "round trip of %s", buf);
}

START_TEST(roundtrip_extremes) {
        roundtrip(1, 1);
        roundtrip(UINT64_MAX, UINT64_MAX);
        roundtrip(1, UINT64_MAX);
        roundtrip(UINT64_MAX, 1);
        roundtrip(0x9f86d081884c7d65ull, 42);
        roundtrip(0x10, 10);
        roundtrip(0x8000000000000000ull, 10000000000000000000ull);
        /* Every change of length of the sequence, on both sides. */
        for (uint64_t p10 = 10; p10 <= 10000000000000000000ull / 10 * 10;
             p10 *= 10) {
                roundtrip(0x0123456789abcdefull, p10 - 1);
                roundtrip(0xfedcba9876543210ull, p10);
                roundtrip(0x00000000000000a0ull, p10 + 1);
                if (p10 > UINT64_MAX / 10)
                        break;
        }
        /* Longest id fills RBK_MSGID_STR_SIZE exactly. */
        rbk_msgid_t id = {UINT64_MAX, UINT64_MAX};
        char buf[RBK_MSGID_STR_SIZE];
        ck_assert_int_eq(rbk_msgid_format(&id, buf, sizeof(buf)),
                         RBK_MSGID_STR_SIZE - 1);
}
END_TEST

START_TEST(roundtrip_random) {
        GRand *r = g_rand_new_with_seed(12345);
        for (int i = 0; i < 200000; i++) {
                uint64_t pid = ((uint64_t)g_rand_int(r) << 32) | g_rand_int(r);
                uint64_t seq = ((uint64_t)g_rand_int(r) << 32) | g_rand_int(r);
                /* Vary the magnitude so every length of sequence occurs. */
                int shift = g_rand_int_range(r, 0, 64);
                seq >>= shift;
                pid >>= g_rand_int_range(r, 0, 64);
                if (pid == 0)
                        pid = 1;
                if (seq == 0)
                        seq = 1;
                roundtrip(pid, seq);
        }
        g_rand_free(r);
}
END_TEST

START_TEST(malformed_rejected) {
        static const char *bad[] = {
            "",
            "-",
            "9f86d081884c7d65",           /* no sequence */
            "9f86d081884c7d65-",          /* empty sequence */
            "9f86d081884c7d65-+1",        /* sign */
            "9f86d081884c7d65--1",        /* negative */
            "9f86d081884c7d65- 1",        /* space */
            "9f86d081884c7d65-1 ",        /* trailing space */
            "9f86d081884c7d65-1x",        /* trailing garbage */
            "9f86d081884c7d65-1:",        /* ':' is '9' + 1 */
            "9f86d081884c7d65-?5",        /* '?' is '9' + 6 */
            "9f86d081884c7d65-1/",        /* '/' is '0' - 1 */
            "9f86d081884c7d65-1234567890123456789:", /* 20th char */
            "9f86d081884c7d:5-1",         /* ':' among the hex digits */
            "9f86d081884c7d`5-1",         /* '`' is 'a' - 1 */
            "9f86d081884c7d65-0",         /* seq 0 */
            "9f86d081884c7d65-01",        /* leading zero */
            "0000000000000000-1",         /* producer id 0 */
            "9F86D081884C7D65-1",         /* upper case */
            "9f86d081884c7d6-1",          /* 15 hex digits */
            "9f86d081884c7d655-1",        /* 17 hex digits */
            "9f86d081884c7d6g-1",         /* not hex */
            "9f86d081884c7d65_1",         /* wrong separator */
            "9f86d081884c7d65-18446744073709551616", /* UINT64_MAX + 1 */
            "9f86d081884c7d65-99999999999999999999", /* overflow, 20 digits */
            "9f86d081884c7d65-100000000000000000000", /* 21 digits */
            "0x9f86d081884c7d-1",
            " 9f86d081884c7d65-1",
            "order-12345",                /* a caller-supplied id */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                rbk_msgid_t out = {7, 7};
                ck_assert_msg(rbk_msgid_parse(bad[i], strlen(bad[i]), &out) ==
                                  RBK_ERR_INVALID_ARG,
                              "accepted \"%s\"", bad[i]);
                ck_assert_msg(out.producer_id == 7 && out.seq == 7,
                              "output changed for \"%s\"", bad[i]);
        }

        /* Embedded NUL and bytes after the value are part of the length. */
        const char nul[] = "9f86d081884c7d65-12\0003";
        rbk_msgid_t out;
        ck_assert_int_eq(rbk_msgid_parse(nul, sizeof(nul) - 1, &out),
                         RBK_ERR_INVALID_ARG);
        /* The value need not be NUL-terminated: a prefix of a longer buffer. */
        ck_assert_int_eq(rbk_msgid_parse(nul, 19, &out), RBK_OK);
        ck_assert_uint_eq(out.seq, 12);
        ck_assert_int_eq(rbk_msgid_parse(NULL, 19, &out), RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_msgid_parse(nul, 19, NULL), RBK_ERR_INVALID_ARG);
}
END_TEST

/* The format as a plain character loop: what rbk_msgid_parse() must
 * accept, and the values it must return. */
static int ref_parse(const unsigned char *s, size_t len, uint64_t *pid,
                     uint64_t *seq) {
        if (len < 18 || len > 37 || s[16] != '-' || s[17] == '0')
                return -1;
        uint64_t p = 0, q = 0;
        for (size_t i = 0; i < 16; i++) {
                int v = s[i] >= '0' && s[i] <= '9'   ? s[i] - '0'
                        : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10
                                                     : -1;
                if (v < 0)
                        return -1;
                p = p << 4 | (uint64_t)v;
        }
        for (size_t i = 17; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                unsigned d = s[i] - '0';
                if (q > (UINT64_MAX - d) / 10)
                        return -1;
                q = q * 10 + d;
        }
        if (!p || !q)
                return -1;
        *pid = p;
        *seq = q;
        return 0;
}

/* Valid ids with one or two bytes changed to anything (every byte value
 * occurs), and lengths around the bounds: the same verdict and values as
 * the plain loop. */
START_TEST(parse_matches_reference) {
        GRand *r = g_rand_new_with_seed(777);
        long accepted = 0, refused = 0;
        for (int i = 0; i < 400000; i++) {
                rbk_msgid_t id = {((uint64_t)g_rand_int(r) << 32) | g_rand_int(r),
                                  ((uint64_t)g_rand_int(r) << 32) | g_rand_int(r)};
                id.seq >>= g_rand_int_range(r, 0, 64);
                id.producer_id |= 1;
                id.seq |= 1;
                unsigned char b[64];
                int n = rbk_msgid_format(&id, (char *)b, sizeof(b));
                ck_assert_int_gt(n, 0);
                int changes = g_rand_int_range(r, 0, 3);
                for (int k = 0; k < changes; k++)
                        b[g_rand_int_range(r, 0, n)] =
                            (unsigned char)g_rand_int_range(r, 0, 256);
                size_t len = (size_t)n;
                if (g_rand_int_range(r, 0, 8) == 0) {
                        /* Digits added or removed at the end. */
                        int d = g_rand_int_range(r, -3, 4);
                        for (int k = 0; k < d && len < sizeof(b); k++)
                                b[len++] = (unsigned char)('0' +
                                                           g_rand_int_range(r, 0, 10));
                        if (d < 0 && (size_t)-d < len)
                                len -= (size_t)-d;
                }
                uint64_t rp = 0, rs = 0;
                int want = ref_parse(b, len, &rp, &rs);
                rbk_msgid_t got = {7, 7};
                rbk_err_t err = rbk_msgid_parse(b, len, &got);
                ck_assert_msg((err == RBK_OK) == (want == 0),
                              "verdict differs for \"%.*s\"", (int)len, b);
                if (want == 0) {
                        ck_assert_msg(got.producer_id == rp && got.seq == rs,
                                      "values differ for \"%.*s\"", (int)len,
                                      b);
                        accepted++;
                } else {
                        refused++;
                }
        }
        /* Both outcomes were exercised. */
        ck_assert_int_gt(accepted, 100000);
        ck_assert_int_gt(refused, 100000);
        g_rand_free(r);
}
END_TEST

START_TEST(format_small_buffer) {
        rbk_msgid_t id = {0xabcdefull, 12345};
        char buf[RBK_MSGID_STR_SIZE];
        /* "0000000000abcdef-12345" is 22 characters: needs 23 bytes. */
        memset(buf, 'Z', sizeof(buf));
        ck_assert_int_eq(rbk_msgid_format(&id, buf, 22), -1);
        ck_assert_int_eq(buf[0], 'Z'); /* nothing written */
        ck_assert_int_eq(rbk_msgid_format(&id, buf, 0), -1);
        ck_assert_int_eq(rbk_msgid_format(&id, buf, 23), 22);
        ck_assert_str_eq(buf, "0000000000abcdef-12345");
        ck_assert_int_eq(rbk_msgid_format(NULL, buf, sizeof(buf)), -1);
        ck_assert_int_eq(rbk_msgid_format(&id, NULL, sizeof(buf)), -1);
}
END_TEST

/* The producer's path (its prefix formatted once) writes what
 * rbk_msgid_format() writes. */
START_TEST(format_seq_matches) {
        static const uint64_t seqs[] = {1, 9, 10, 99, 100, 12345, 999999,
                                        1000000, UINT64_MAX / 3, UINT64_MAX};
        rbk_msgid_t id = {0x00c0ffee12345678ull, 1};
        char prefix[RBK_MSGID_STR_SIZE], a[RBK_MSGID_STR_SIZE],
            b[RBK_MSGID_STR_SIZE];
        ck_assert_int_eq(rbk_msgid_format(&id, prefix, sizeof(prefix)), 18);
        for (size_t i = 0; i < G_N_ELEMENTS(seqs); i++) {
                id.seq = seqs[i];
                int n = rbk_msgid_format(&id, a, sizeof(a));
                ck_assert_int_eq(rbk__msgid_format_seq(prefix, seqs[i], b,
                                                       sizeof(b)),
                                 n);
                ck_assert_str_eq(a, b);
                ck_assert_int_eq(rbk__msgid_format_seq(prefix, seqs[i], b,
                                                       (size_t)n),
                                 -1);
        }
}
END_TEST

START_TEST(new_producer_ids) {
        GHashTable *seen = g_hash_table_new(g_int64_hash, g_int64_equal);
        static uint64_t ids[10000];
        for (int i = 0; i < 10000; i++) {
                ids[i] = rbk__msgid_new_producer_id();
                ck_assert(ids[i] != 0);
                ck_assert_msg(!g_hash_table_contains(seen, &ids[i]),
                              "producer id repeated");
                g_hash_table_add(seen, &ids[i]);
        }
        g_hash_table_destroy(seen);
}
END_TEST

/* Not a benchmark, a guard: formatting plus parsing should stay far below
 * a microsecond per id. */
START_TEST(fast_enough) {
        rbk_msgid_t id = {0x9f86d081884c7d65ull, 1}, out;
        char buf[RBK_MSGID_STR_SIZE];
        const int n = 1000000;
        gint64 t0 = g_get_monotonic_time();
        uint64_t sum = 0;
        for (int i = 0; i < n; i++) {
                id.seq = (uint64_t)i + 1000000000ull;
                int len = rbk_msgid_format(&id, buf, sizeof(buf));
                rbk_msgid_parse(buf, (size_t)len, &out);
                sum += out.seq;
        }
        gint64 us = g_get_monotonic_time() - t0;
        ck_assert(sum > 0);
        fprintf(stderr, "msgid: format+parse %.1f ns per id\n",
                (double)us * 1000.0 / n);
        /* Generous bound: sanitizer and valgrind builds are much slower. */
        ck_assert_msg(us < 20 * 1000 * 1000, "took %" G_GINT64_FORMAT " us",
                      us);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("msgid");
        RBK_TCASE(s, roundtrip_extremes, 10);
        RBK_TCASE(s, roundtrip_random, 60);
        RBK_TCASE(s, format_seq_matches, 10);
        RBK_TCASE(s, malformed_rejected, 10);
        RBK_TCASE(s, parse_matches_reference, 60);
        RBK_TCASE(s, format_small_buffer, 10);
        RBK_TCASE(s, new_producer_ids, 30);
        RBK_TCASE(s, fast_enough, 60);
        return s;
}

RBK_TEST_MAIN()
