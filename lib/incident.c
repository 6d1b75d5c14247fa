/* Incident names, keys and commit-metadata markers (incident.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "incident.h"

/* ------------------------------------------------------------ resolutions */

static const char *const rbk__resolve_names[] = {
    [RBK_RESOLVE_EARLIEST] = "earliest",
    [RBK_RESOLVE_LATEST] = "latest",
    [RBK_RESOLVE_COMMITTED] = "committed",
    [RBK_RESOLVE_OFFSET] = "offset",
};

const char *rbk__resolve_name(rbk_resolve_t how) {
        if ((int)how >= 0 && (size_t)how < G_N_ELEMENTS(rbk__resolve_names) &&
            rbk__resolve_names[how])
                return rbk__resolve_names[how];
        return "unknown";
}

rbk_resolve_t rbk__resolve_parse(const char *name) {
        for (size_t i = 0; name && i < G_N_ELEMENTS(rbk__resolve_names); i++)
                if (rbk__resolve_names[i] && !strcmp(name, rbk__resolve_names[i]))
                        return (rbk_resolve_t)i;
        return (rbk_resolve_t)0;
}

/* ------------------------------------------------------------ keys */

/* The word between partition and offset, by kind (NULL: none). */
static const char *const rbk__kind_words[] = {
    [RBK__INCIDENT_QUARANTINE] = NULL,
    [RBK__INCIDENT_GAVE_UP] = "gave-up",
    [RBK__INCIDENT_DEADLETTER] = "deadletter",
};

char *rbk__incident_key(rbk__incident_kind_t kind, const char *group,
                        const char *topic, int32_t partition, int64_t offset) {
        const char *word = (size_t)kind < G_N_ELEMENTS(rbk__kind_words)
                               ? rbk__kind_words[kind]
                               : NULL;
        return g_strdup_printf("%s/%s/%" PRId32 "/%s%s%" PRId64,
                               group ? group : "", topic ? topic : "",
                               partition, word ? word : "", word ? "/" : "",
                               offset);
}

/* Reads the decimal number s[0..len) into *v, within [min, max]. */
static int rbk__parse_num(const char *s, size_t len, int64_t min, int64_t max,
                          int64_t *v) {
        if (len == 0 || len > 20)
                return 0;
        char buf[24];
        memcpy(buf, s, len);
        buf[len] = '\0';
        const char *digits = buf[0] == '-' ? buf + 1 : buf;
        if (!g_ascii_isdigit(digits[0]))
                return 0;
        char *end;
        errno = 0;
        long long n = strtoll(buf, &end, 10);
        if (*end || errno || n < min || n > max)
                return 0;
        *v = (int64_t)n;
        return 1;
}

/* The segment before position @p end of @p key (exclusive): its start. */
static const char *rbk__seg_before(const char *key, const char *end) {
        const char *p = end;
        while (p > key && p[-1] != '/')
                p--;
        return p;
}

int rbk__incident_key_parse(const char *key, rbk__incident_kind_t *kindp,
                            char **groupp, char **topicp,
                            int32_t *partitionp, int64_t *offsetp) {
        if (!key)
                return 0;
        const char *end = key + strlen(key);
        /* offset */
        const char *s = rbk__seg_before(key, end);
        int64_t offset, partition;
        if (s == key || !rbk__parse_num(s, (size_t)(end - s), -1, INT64_MAX,
                                        &offset))
                return 0;
        end = s - 1;
        /* kind word, if any */
        rbk__incident_kind_t kind = RBK__INCIDENT_QUARANTINE;
        s = rbk__seg_before(key, end);
        for (size_t k = 0; k < G_N_ELEMENTS(rbk__kind_words); k++) {
                const char *w = rbk__kind_words[k];
                if (w && s > key && (size_t)(end - s) == strlen(w) &&
                    !memcmp(s, w, strlen(w))) {
                        kind = (rbk__incident_kind_t)k;
                        end = s - 1;
                        s = rbk__seg_before(key, end);
                        break;
                }
        }
        /* partition */
        if (s == key ||
            !rbk__parse_num(s, (size_t)(end - s), 0, INT32_MAX, &partition))
                return 0;
        end = s - 1;
        /* topic, then the group: the rest, '/' and all */
        s = rbk__seg_before(key, end);
        if (s == end || s == key || s - 1 == key)
                return 0;
        if (kindp)
                *kindp = kind;
        if (groupp)
                *groupp = g_strndup(key, (gsize)(s - 1 - key));
        if (topicp)
                *topicp = g_strndup(s, (gsize)(end - s));
        if (partitionp)
                *partitionp = (int32_t)partition;
        if (offsetp)
                *offsetp = offset;
        return 1;
}

/* ------------------------------------------------------------ metadata */

/* The text after @p prefix in @p meta, or NULL. */
static const char *rbk__after(const char *meta, const char *prefix) {
        size_t n = strlen(prefix);
        return meta && !strncmp(meta, prefix, n) ? meta + n : NULL;
}

char *rbk__meta_quarantine(const char *key) {
        return g_strconcat(RBK__META_QUARANTINE, key ? key : "", NULL);
}

const char *rbk__meta_quarantine_key(const char *meta) {
        const char *key = rbk__after(meta, RBK__META_QUARANTINE);
        return key && *key ? key : NULL;
}

char *rbk__meta_resolved(rbk_resolve_t how, const char *key) {
        return g_strconcat(RBK__META_RESOLVED, rbk__resolve_name(how), ":",
                           key ? key : "", NULL);
}

const char *rbk__meta_resolved_key(const char *meta, rbk_resolve_t *howp) {
        const char *how = rbk__after(meta, RBK__META_RESOLVED);
        const char *colon = how ? strchr(how, ':') : NULL;
        if (!colon || colon == how || !colon[1])
                return NULL;
        if (howp) {
                char *name = g_strndup(how, (gsize)(colon - how));
                *howp = rbk__resolve_parse(name);
                g_free(name);
        }
        return colon + 1;
}

char *rbk__meta_initial(const char *initial) {
        return g_strconcat(RBK__META_INITIAL, initial ? initial : "", NULL);
}

const char *rbk__meta_initial_value(const char *meta) {
        const char *v = rbk__after(meta, RBK__META_INITIAL);
        return v && *v ? v : NULL;
}
