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

static int rbk__legal_name_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

rbk_err_t rbk__topic_validate(const char *prefix, const char *topic,
                              char *errstr, size_t errstr_size) {
        if (!topic)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_TOPIC,
                                   "topic name is NULL");
        size_t plen = prefix ? strlen(prefix) : 0;
        size_t len = strlen(topic);
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
        for (size_t i = 0; i < len; i++) {
                if (!rbk__legal_name_char(topic[i]))
                        return rbk__seterr(
                            errstr, errstr_size, RBK_ERR_INVALID_TOPIC,
                            "topic name has an illegal character at position "
                            "%zu (0x%02x); allowed are a-z A-Z 0-9 . _ -",
                            i, (unsigned char)topic[i]);
        }
        return RBK_OK;
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

/* fork()s this process descends from, counted by a pthread_atfork child
 * handler: rbk__forked() needs getpid() (a system call on every call since
 * glibc 2.25) only in a process that was forked. */
static volatile gint rbk__forks;

static void rbk__atfork_child(void) {
        rbk__forks++;
}

__attribute__((constructor)) static void rbk__util_init(void) {
        pthread_atfork(NULL, NULL, rbk__atfork_child);
}

int rbk__forked(pid_t creator) {
        if (G_LIKELY(!g_atomic_int_get(&rbk__forks)))
                return 0;
        return getpid() != creator;
}
