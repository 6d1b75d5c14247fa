/* libFuzzer target: the KAFKA_URL list parser (rbk__env_parse_urls).
 * Invariants checked beyond "no crash, no leak, no UB":
 *  - the result is RBK_OK or RBK_ERR_URL, with a message naming the variable;
 *  - on success the output is non-empty, has one host:port per input entry,
 *    and parsing it back (as kafka:// entries) gives the same output. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "internal.h"

static size_t count_char(const char *s, char c) {
        size_t n = 0;
        for (; *s; s++)
                n += *s == c;
        return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *in = g_strndup((const char *)data, size); /* stops at a NUL */
        char *bs = NULL;
        int ssl = -1;
        char errstr[512];
        errstr[0] = '\0';
        rbk_err_t err = rbk__env_parse_urls("KAFKA_URL", in, &bs, &ssl, errstr,
                                            sizeof(errstr));
        if (err != RBK_OK) {
                if (err != RBK_ERR_URL || bs || ssl != -1 ||
                    strncmp(errstr, "KAFKA_URL", 9))
                        abort();
                g_free(in);
                return 0;
        }
        if (!bs || !*bs || (ssl != 0 && ssl != 1))
                abort();
        if (count_char(bs, ',') != count_char(in, ','))
                abort();
        /* Round trip. */
        char **entries = g_strsplit(bs, ",", -1);
        GString *again = g_string_new(NULL);
        for (char **e = entries; *e; e++)
                g_string_append_printf(again, "%s%s://%s",
                                       e == entries ? "" : ",",
                                       ssl ? "kafka+ssl" : "kafka", *e);
        char *bs2 = NULL;
        int ssl2 = -1;
        if (rbk__env_parse_urls("KAFKA_URL", again->str, &bs2, &ssl2, errstr,
                                sizeof(errstr)) != RBK_OK ||
            strcmp(bs, bs2) || ssl != ssl2)
                abort();
        g_free(bs2);
        g_string_free(again, TRUE);
        g_strfreev(entries);
        g_free(bs);
        g_free(in);
        return 0;
}
