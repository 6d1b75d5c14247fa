/* Small helpers used across the library. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

rbk_err_t rbk__seterr(char *errstr, size_t errstr_size, rbk_err_t err,
                      const char *fmt, ...) {
        if (errstr && errstr_size > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(errstr, errstr_size, fmt, ap);
                va_end(ap);
        }
        return err;
}

int64_t rbk__now_ms(void) {
        return g_get_monotonic_time() / 1000;
}

/* Characters Kafka allows in a topic name: a-z A-Z 0-9 . _ - */
static const unsigned char rbk__legal_name[256] = {
        ['.'] = 1, ['_'] = 1, ['-'] = 1,
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
        ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
        ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
        ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
        ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
        ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
        ['y'] = 1, ['z'] = 1,
        ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
        ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
        ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
        ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
        ['Y'] = 1, ['Z'] = 1,
};

rbk_err_t rbk__topic_validate_len(size_t plen, const char *topic,
                                  size_t *lenp, char *errstr,
                                  size_t errstr_size) {
        if (!topic)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_TOPIC,
                                   "topic name is NULL");
        /* One pass: length and characters (NUL is not legal). */
        size_t len = 0;
        while (rbk__legal_name[(unsigned char)topic[len]])
                len++;
        if (topic[len] != '\0')
                return rbk__seterr(
                    errstr, errstr_size, RBK_ERR_INVALID_TOPIC,
                    "topic name has an illegal character at position "
                    "%zu (0x%02x); allowed are a-z A-Z 0-9 . _ -",
                    len, (unsigned char)topic[len]);
        if (len == 0)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_TOPIC,
                                   "topic name is empty");
        if (plen + len > 249)
                return rbk__seterr(
                    errstr, errstr_size, RBK_ERR_INVALID_TOPIC,
                    "topic name is %zu characters long (with the %zu-character "
                    "prefix); Kafka allows at most 249",
                    len, plen);
        if (plen == 0 && (!strcmp(topic, ".") || !strcmp(topic, "..")))
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_TOPIC,
                                   "topic name \"%s\" is not allowed", topic);
        if (lenp)
                *lenp = len;
        return RBK_OK;
}

rbk_err_t rbk__topic_validate(const char *prefix, const char *topic,
                              char *errstr, size_t errstr_size) {
        return rbk__topic_validate_len(prefix ? strlen(prefix) : 0, topic,
                                       NULL, errstr, errstr_size);
}

char *rbk__prefixed(const char *prefix, const char *name) {
        return g_strconcat(prefix ? prefix : "", name, NULL);
}

const char *rbk__unprefixed(const char *prefix, const char *name) {
        size_t plen = prefix ? strlen(prefix) : 0;
        if (name && plen && !strncmp(name, prefix, plen))
                return name + plen;
        return name;
}

/* The process id as getpid() returns it, kept in memory: recorded when the
 * library is loaded and again in every forked child by a pthread_atfork
 * child handler (which runs before fork() returns in the child, while it
 * has one thread). getpid() is a system call on every call since glibc
 * 2.25; this is one load. */
gint rbk__pid_cached;

static void rbk__atfork_child(void) {
        g_atomic_int_set(&rbk__pid_cached, (gint)getpid());
}

__attribute__((constructor)) static void rbk__util_init(void) {
        g_atomic_int_set(&rbk__pid_cached, (gint)getpid());
        pthread_atfork(NULL, NULL, rbk__atfork_child);
}

pid_t rbk__getpid(void) {
        return (pid_t)g_atomic_int_get(&rbk__pid_cached);
}

int rbk__forked_slow(pid_t creator) {
        /* The cache disagrees: a fork, or a child made without the atfork
         * handlers (a raw clone()), where only the system call is right. */
        return creator != getpid();
}

void rbk__layout_copy(void *out, void *full, const size_t *sizes, int n) {
        int version = *(const int *)out;
        if (version < 1 || version > n)
                version = 1;
        *(int *)full = version;
        memcpy(out, full, sizes[version - 1]);
}

void rbk__json_escape_str(GString *out, const char *s) {
        const unsigned char *p = (const unsigned char *)(s ? s : "");
        g_string_append_c(out, '"');
        while (*p) {
                unsigned char c = *p;
                if (c < 0x80) {
                        switch (c) {
                        case '"':
                                g_string_append(out, "\\\"");
                                break;
                        case '\\':
                                g_string_append(out, "\\\\");
                                break;
                        case '\n':
                                g_string_append(out, "\\n");
                                break;
                        case '\r':
                                g_string_append(out, "\\r");
                                break;
                        case '\t':
                                g_string_append(out, "\\t");
                                break;
                        case '\b':
                                g_string_append(out, "\\b");
                                break;
                        case '\f':
                                g_string_append(out, "\\f");
                                break;
                        default:
                                if (c < 0x20 || c == 0x7f)
                                        g_string_append_printf(out, "\\u%04x",
                                                               c);
                                else
                                        g_string_append_c(out, (char)c);
                        }
                        p++;
                        continue;
                }
                /* Multi-byte: one sequence, validated (no overlong forms,
                 * no surrogates, nothing above U+10FFFF). */
                gunichar u = g_utf8_get_char_validated((const char *)p, -1);
                if (u == (gunichar)-1 || u == (gunichar)-2) {
                        g_string_append(out, "\\ufffd");
                        p++;
                } else {
                        int n = g_unichar_to_utf8(u, NULL);
                        g_string_append_len(out, (const char *)p, n);
                        p += n;
                }
        }
        g_string_append_c(out, '"');
}

/* ------------------------------------------------------------ redaction */

/* Case-insensitive search for @p needle in @p s from @p from. */
static const char *rbk__strcasestr_from(const char *s, const char *needle) {
        size_t n = strlen(needle);
        for (; *s; s++)
                if (g_ascii_strncasecmp(s, needle, n) == 0)
                        return s;
        return NULL;
}

static const char *const rbk__secret_keys[] = {
    "ssl.key.pem=", "sasl.password=", "password=", "secret=",
};

void rbk__redact_gstring(GString *s, int may_grow) {
        static const size_t mlen = sizeof(RBK__REDACTED) - 1;
        gsize pos = 0;
        const char *hit;

        /* PEM blocks, whatever their type: BEGIN line through END line. A
         * block cut off before its END is redacted to the end. */
        while ((hit = strstr(s->str + pos, "-----BEGIN"))) {
                gsize start = (gsize)(hit - s->str), end;
                const char *e = strstr(hit + 10, "-----END");
                if (e) {
                        const char *close = strstr(e + 8, "-----");
                        end = close ? (gsize)(close - s->str) + 5
                                    : (gsize)(e - s->str) + 8;
                } else {
                        end = s->len;
                }
                g_string_erase(s, (gssize)start, (gssize)(end - start));
                g_string_insert(s, (gssize)start, RBK__REDACTED);
                pos = start + mlen;
        }

        /* name=value pairs: the value runs to whitespace, a comma or the
         * end. */
        for (size_t k = 0; k < G_N_ELEMENTS(rbk__secret_keys); k++) {
                const char *key = rbk__secret_keys[k];
                size_t klen = strlen(key);
                pos = 0;
                while ((hit = rbk__strcasestr_from(s->str + pos, key))) {
                        gsize vstart = (gsize)(hit - s->str) + klen, vend;
                        for (vend = vstart; vend < s->len; vend++) {
                                char c = s->str[vend];
                                if (g_ascii_isspace(c) || c == ',')
                                        break;
                        }
                        gsize vlen = vend - vstart;
                        if (vlen == 0 ||
                            (vlen == mlen &&
                             !memcmp(s->str + vstart, RBK__REDACTED, mlen))) {
                                pos = vend;
                                continue;
                        }
                        const char *marker =
                            (may_grow || vlen >= mlen) ? RBK__REDACTED : "*";
                        g_string_erase(s, (gssize)vstart, (gssize)vlen);
                        g_string_insert(s, (gssize)vstart, marker);
                        pos = vstart + strlen(marker);
                }
        }
}

char *rbk__redact_dup(const char *line) {
        GString *s = g_string_new(line);
        rbk__redact_gstring(s, 1);
        return g_string_free(s, FALSE);
}

void rbk__redact(char *line) {
        if (!line)
                return;
        size_t len = strlen(line);
        GString *s = g_string_new_len(line, (gssize)len);
        rbk__redact_gstring(s, 0);
        /* Never longer than the input: see rbk__redact_gstring(). */
        g_assert(s->len <= len);
        memcpy(line, s->str, s->len + 1);
        g_string_free(s, TRUE);
}

rbk__held_t *rbk__held_ref(rbk__held_t *h) {
        if (h)
                g_atomic_int_inc(&h->refcnt);
        return h;
}

void rbk__held_unref(rbk__held_t *h) {
        if (h && g_atomic_int_dec_and_test(&h->refcnt))
                h->destroy(h);
}
