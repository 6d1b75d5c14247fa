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

static const char rbk__hexdigits[16] = "0123456789abcdef";

int rbk_msgid_format(const rbk_msgid_t *id, char *buf, size_t size) {
        char dec[20];
        int dlen = 0;
        uint64_t seq, pid;

        if (!id || !buf)
                return -1;

        seq = id->seq;
        do {
                dec[dlen++] = (char)('0' + (int)(seq % 10));
                seq /= 10;
        } while (seq);

        /* 16 hex + '-' + digits + NUL */
        if (size < (size_t)(16 + 1 + dlen + 1))
                return -1;

        pid = id->producer_id;
        for (int i = 15; i >= 0; i--) {
                buf[i] = rbk__hexdigits[pid & 0xf];
                pid >>= 4;
        }
        buf[16] = '-';
        for (int i = 0; i < dlen; i++)
                buf[17 + i] = dec[dlen - 1 - i];
        buf[17 + dlen] = '\0';
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

        for (i = 0; i < 16; i++) {
                unsigned char c = s[i];
                unsigned v;
                if (c >= '0' && c <= '9')
                        v = c - '0';
                else if (c >= 'a' && c <= 'f')
                        v = c - 'a' + 10;
                else
                        return RBK_ERR_INVALID_ARG;
                pid = (pid << 4) | v;
        }

        /* The library never writes leading zeros (the sequence starts at
         * 1), so "0..." is not in its format: the form stays canonical. */
        if (s[17] == '0')
                return RBK_ERR_INVALID_ARG;
        for (i = 17; i < len; i++) {
                unsigned c = (unsigned)s[i] - '0';
                if (c > 9)
                        return RBK_ERR_INVALID_ARG;
                if (seq > (UINT64_MAX - c) / 10)
                        return RBK_ERR_INVALID_ARG; /* overflow */
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
