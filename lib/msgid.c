/* Message ids: "<16 lower-case hex digits>-<decimal sequence>".
 *
 * Formatting and parsing run once per produced and once per consumed
 * message, so both are hand-rolled: no snprintf, no allocation. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Two characters per table entry: hex "00".."ff" and decimal "00".."99".
 * Ids are formatted for every message sent and parsed for every message
 * consumed, so both directions avoid per-character branches. */
static const char rbk__hex2[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
static const char rbk__dec2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

#define RBK__ONES UINT64_C(0x0101010101010101)
/* Parses 8 lower-case hex digits at p (p[0] the most significant) into
 * *out; -1 when any byte is not one. The bytes are loaded into the lanes
 * of one word (p[0] in the lowest, on any byte order) and each is handled
 * in its own lane: bytes below 0x80 plus addends below 0x80 never carry
 * into the next. */
static int rbk__hex8(const unsigned char *p, uint32_t *out) {
        uint64_t x = (uint64_t)p[0] | (uint64_t)p[1] << 8 |
                     (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
                     (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
                     (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
        const uint64_t hi = RBK__ONES * 0x80;
        if (x & hi)
                return -1;
        /* The high bit of each lane: byte >= lower bound, byte > upper. */
        uint64_t ge_0 = x + RBK__ONES * (0x80 - '0');
        uint64_t gt_9 = x + RBK__ONES * (0x80 - '9' - 1);
        uint64_t ge_a = x + RBK__ONES * (0x80 - 'a');
        uint64_t gt_f = x + RBK__ONES * (0x80 - 'f' - 1);
        uint64_t ok = ((ge_0 & ~gt_9) | (ge_a & ~gt_f)) & hi;
        if (ok != hi)
                return -1;
        /* '0'-'9': low nibble; 'a'-'f': low nibble + 9 (bit 6 set). */
        uint64_t v = (x & (RBK__ONES * 0x0f)) + ((x >> 6) & RBK__ONES) * 9;
        /* Pairs of lanes into bytes (even lane high), then the four bytes. */
        v = ((v & UINT64_C(0x000f000f000f000f)) << 4) |
            ((v >> 8) & UINT64_C(0x000f000f000f000f));
        *out = (uint32_t)((v & 0xff) << 24 | ((v >> 16) & 0xff) << 16 |
                          ((v >> 32) & 0xff) << 8 | ((v >> 48) & 0xff));
        return 0;
}

/* Decimal digits of v (1..20). */
static int rbk__dec_len(uint64_t v) {
        int n = 1;
        while (v >= 10000) {
                v /= 10000;
                n += 4;
        }
        return n + (v >= 10) + (v >= 100) + (v >= 1000);
}

/* Writes the decimal digits of seq (dlen of them) and a NUL at buf. */
static void rbk__dec_write(uint64_t seq, int dlen, char *buf) {
        char *e = buf + dlen;
        *e = '\0';
        while (seq >= 100) {
                e -= 2;
                memcpy(e, rbk__dec2 + 2 * (seq % 100), 2);
                seq /= 100;
        }
        if (seq >= 10) {
                e -= 2;
                memcpy(e, rbk__dec2 + 2 * seq, 2);
        } else {
                *--e = (char)('0' + seq);
        }
}

int rbk_msgid_format(const rbk_msgid_t *id, char *buf, size_t size) {
        if (!id || !buf)
                return -1;
        uint64_t seq = id->seq;
        int dlen = rbk__dec_len(seq);
        /* 16 hex + '-' + digits + NUL */
        if (size < (size_t)(16 + 1 + dlen + 1))
                return -1;

        uint64_t pid = id->producer_id;
        for (int i = 14; i >= 0; i -= 2) {
                memcpy(buf + i, rbk__hex2 + 2 * (pid & 0xff), 2);
                pid >>= 8;
        }
        buf[16] = '-';
        rbk__dec_write(seq, dlen, buf + 17);
        return 17 + dlen;
}

int rbk__msgid_format_seq(const char *prefix, uint64_t seq, char *buf,
                          size_t size) {
        int dlen = rbk__dec_len(seq);
        if (size < (size_t)(17 + dlen + 1))
                return -1;
        memcpy(buf, prefix, 17);
        rbk__dec_write(seq, dlen, buf + 17);
        return 17 + dlen;
}

rbk_err_t rbk_msgid_parse(const void *value, size_t len, rbk_msgid_t *out) {
        const unsigned char *s = value;
        uint64_t pid = 0, seq = 0;
        size_t i;

        if (!value || !out)
                return RBK_ERR_INVALID_ARG;
        /* 16 hex, '-', 1..20 digits */
        if (len < 18 || len > 37 || s[16] != '-')
                return RBK_ERR_INVALID_ARG;

        /* Eight hex digits at a time: every byte checked to be 0-9 or a-f,
         * then converted and packed, first character most significant. */
        for (i = 0; i < 16; i += 8) {
                uint32_t half;
                if (rbk__hex8(s + i, &half))
                        return RBK_ERR_INVALID_ARG;
                pid = (pid << 32) | half;
        }

        /* The library never writes leading zeros (the sequence starts at
         * 1), so "0..." is not in its format: the form stays canonical. */
        if (s[17] == '0')
                return RBK_ERR_INVALID_ARG;
        size_t n = len - 17; /* 1..20 (len is 18..37) */
        /* Up to 19 digits cannot overflow 64 bits. */
        size_t easy = n < 19 ? n : 19;
        unsigned baddig = 0;
        for (i = 17; i < 17 + easy; i++) {
                unsigned c = (unsigned)s[i] - '0';
                baddig |= c > 9;
                seq = seq * 10 + c;
        }
        if (baddig)
                return RBK_ERR_INVALID_ARG;
        for (; i < len; i++) {
                unsigned c = (unsigned)s[i] - '0';
                if (c > 9 || seq > (UINT64_MAX - c) / 10)
                        return RBK_ERR_INVALID_ARG;
                seq = seq * 10 + c;
        }

        if (pid == 0 || seq == 0)
                return RBK_ERR_INVALID_ARG;

        out->producer_id = pid;
        out->seq = seq;
        return RBK_OK;
}

/* SplitMix64 finaliser: spreads the weak fallback entropy over all bits. */
static uint64_t rbk__mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

uint64_t rbk__msgid_new_producer_id(void) {
        uint64_t v = 0;

        for (int attempt = 0; attempt < 4; attempt++) {
                ssize_t r = getrandom(&v, sizeof(v), GRND_NONBLOCK);
                if (r == (ssize_t)sizeof(v) && v != 0)
                        return v;
                if (r < 0 && errno != EINTR && errno != EAGAIN)
                        break;
        }

        /* Fallback (no getrandom, or the pool is not initialised yet):
         * GLib's generator (seeded from /dev/urandom or the clock) mixed with
         * the time, the pid and a process-wide counter so two instances
         * created in the same microsecond still differ. */
        static gint counter;
        do {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                v = ((uint64_t)g_random_int() << 32) | g_random_int();
                v ^= rbk__mix64(((uint64_t)ts.tv_sec * 1000000000u +
                                 (uint64_t)ts.tv_nsec) ^
                                ((uint64_t)getpid() << 40) ^
                                (uint64_t)g_atomic_int_add(&counter, 1));
        } while (v == 0);
        return v;
}
