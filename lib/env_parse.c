/* Parsers for the Heroku-style environment: the KAFKA_URL broker list and
 * PEM certificates and keys. Pure functions of their input (no environment,
 * no configuration object), so the fuzz targets link this file and util.c
 * alone. Error messages name the variable and the problem; they never quote
 * certificates, keys, hosts or user information. */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <string.h>

#include "env.h"
#include "internal.h"

#define RBK__HOST_MAX 253       /* longest DNS name */
#define RBK__PEM_MAX (1 << 20)  /* longest PEM variable accepted */

/* ------------------------------------------------------------ URL list */

static int is_ws(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
               c == '\f';
}

static int is_digit(char c) {
        return c >= '0' && c <= '9';
}

static int is_host_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               is_digit(c) || c == '.' || c == '-' || c == '_';
}

static int is_scheme_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               is_digit(c) || c == '+' || c == '.' || c == '-';
}

static const char *find_n(const char *s, size_t len, char c) {
        return len ? memchr(s, c, len) : NULL;
}

#define URL_HINT "expected kafka://host:port or kafka+ssl://host:port"

/* Parses the port in s[0..len). Returns the port or 0 with errstr set. */
static unsigned parse_port(const char *var, int idx, const char *s,
                           size_t len, char *errstr, size_t errstr_size) {
        if (len == 0) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                            "%s entry %d: missing port (" URL_HINT ")", var,
                            idx);
                return 0;
        }
        unsigned long v = 0;
        for (size_t i = 0; i < len; i++) {
                if (!is_digit(s[i])) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: port is not a number", var,
                                    idx);
                        return 0;
                }
                if (v <= 65535)
                        v = v * 10 + (unsigned long)(s[i] - '0');
        }
        if (v == 0 || v > 65535) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                            "%s entry %d: port out of range (1-65535)", var,
                            idx);
                return 0;
        }
        return (unsigned)v;
}

/* Parses one trimmed, non-empty entry; appends "host:port" to out. Returns
 * the scheme (1 plain, 2 ssl) or 0 with errstr set. */
static int parse_entry(const char *var, int idx, const char *e, size_t len,
                       GString *out, char *errstr, size_t errstr_size) {
        const char *sep = NULL;
        for (size_t i = 0; i + 3 <= len; i++) {
                if (e[i] == ':' && e[i + 1] == '/' && e[i + 2] == '/') {
                        sep = e + i;
                        break;
                }
        }
        size_t slen = sep ? (size_t)(sep - e) : 0;
        if (!sep || slen == 0) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                            "%s entry %d: missing scheme (" URL_HINT ")", var,
                            idx);
                return 0;
        }
        int scheme;
        if (slen == 5 && !g_ascii_strncasecmp(e, "kafka", 5))
                scheme = 1;
        else if (slen == 9 && !g_ascii_strncasecmp(e, "kafka+ssl", 9))
                scheme = 2;
        else {
                /* Quote the scheme only when it is plainly a scheme (a
                 * mangled value could carry credentials before "://"). */
                int quotable = slen <= 16;
                for (size_t i = 0; quotable && i < slen; i++)
                        quotable = is_scheme_char(e[i]);
                if (quotable)
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: unknown scheme \"%.*s\" "
                                    "(" URL_HINT ")",
                                    var, idx, (int)slen, e);
                else
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: unknown scheme (" URL_HINT
                                    ")",
                                    var, idx);
                return 0;
        }

        const char *a = sep + 3;
        size_t rest = len - slen - 3;
        /* The authority ends at the first '/', '?' or '#'. */
        size_t alen = 0;
        while (alen < rest && a[alen] != '/' && a[alen] != '?' &&
               a[alen] != '#')
                alen++;
        if (find_n(a, alen, '@')) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                            "%s entry %d: user information (user@) is not "
                            "allowed (" URL_HINT ")",
                            var, idx);
                return 0;
        }
        if (alen < rest) {
                const char *what = a[alen] == '/'   ? "a path"
                                   : a[alen] == '?' ? "a query"
                                                    : "a fragment";
                rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                            "%s entry %d: %s is not allowed (" URL_HINT ")",
                            var, idx, what);
                return 0;
        }
        if (alen == 0) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                            "%s entry %d: missing host (" URL_HINT ")", var,
                            idx);
                return 0;
        }

        const char *host, *port;
        size_t hlen, plen;
        int v6 = 0;
        if (a[0] == '[') {
                const char *rb = find_n(a, alen, ']');
                if (!rb) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: IPv6 address without "
                                    "closing ']'",
                                    var, idx);
                        return 0;
                }
                host = a + 1;
                hlen = (size_t)(rb - host);
                if (hlen == 0) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: missing host (" URL_HINT
                                    ")",
                                    var, idx);
                        return 0;
                }
                char buf[INET6_ADDRSTRLEN + 1];
                struct in6_addr in6;
                int ok = hlen < sizeof(buf);
                if (ok) {
                        memcpy(buf, host, hlen);
                        buf[hlen] = '\0';
                        ok = inet_pton(AF_INET6, buf, &in6) == 1;
                }
                if (!ok) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: invalid IPv6 address", var,
                                    idx);
                        return 0;
                }
                const char *after = rb + 1;
                size_t afterlen = alen - (size_t)(after - a);
                if (afterlen == 0) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: missing port (" URL_HINT
                                    ")",
                                    var, idx);
                        return 0;
                }
                if (after[0] != ':') {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: expected ':' and a port "
                                    "after the IPv6 address",
                                    var, idx);
                        return 0;
                }
                port = after + 1;
                plen = afterlen - 1;
                v6 = 1;
        } else {
                const char *colon = find_n(a, alen, ':');
                if (colon && find_n(colon + 1,
                                    alen - (size_t)(colon + 1 - a), ':')) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: IPv6 addresses must be in "
                                    "brackets, e.g. kafka://[::1]:9092",
                                    var, idx);
                        return 0;
                }
                host = a;
                hlen = colon ? (size_t)(colon - a) : alen;
                if (hlen == 0) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: missing host (" URL_HINT
                                    ")",
                                    var, idx);
                        return 0;
                }
                for (size_t i = 0; i < hlen; i++) {
                        if (!is_host_char(host[i])) {
                                rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                            "%s entry %d: host name contains "
                                            "an illegal character (only "
                                            "letters, digits, '.', '-', '_')",
                                            var, idx);
                                return 0;
                        }
                }
                if (hlen > RBK__HOST_MAX) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: host name longer than %d "
                                    "characters",
                                    var, idx, RBK__HOST_MAX);
                        return 0;
                }
                if (!colon) {
                        rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                    "%s entry %d: missing port (" URL_HINT
                                    ")",
                                    var, idx);
                        return 0;
                }
                port = colon + 1;
                plen = alen - hlen - 1;
        }

        unsigned p = parse_port(var, idx, port, plen, errstr, errstr_size);
        if (!p)
                return 0;
        if (out->len)
                g_string_append_c(out, ',');
        if (v6)
                g_string_append_c(out, '[');
        g_string_append_len(out, host, (gssize)hlen);
        if (v6)
                g_string_append_c(out, ']');
        g_string_append_printf(out, ":%u", p);
        return scheme;
}

rbk_err_t rbk__env_parse_urls(const char *var, const char *value,
                              char **bootstrap, int *ssl, char *errstr,
                              size_t errstr_size) {
        if (!var)
                var = RBK__ENV_DEFAULT_PREFIX "URL";
        if (!value)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                   "%s is not set (" URL_HINT ")", var);
        const char *s = value;
        while (is_ws(*s))
                s++;
        if (!*s)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                   "%s is empty (" URL_HINT ")", var);

        GString *out = g_string_new(NULL);
        int first = 0, idx = 0;
        const char *p = value;
        for (;;) {
                const char *comma = strchr(p, ',');
                const char *end = comma ? comma : p + strlen(p);
                idx++;
                const char *b = p, *e = end;
                while (b < e && is_ws(*b))
                        b++;
                while (e > b && is_ws(e[-1]))
                        e--;
                if (b == e) {
                        g_string_free(out, TRUE);
                        return rbk__seterr(errstr, errstr_size, RBK_ERR_URL,
                                           "%s entry %d is empty (" URL_HINT
                                           ", separated by commas)",
                                           var, idx);
                }
                int sc = parse_entry(var, idx, b, (size_t)(e - b), out,
                                     errstr, errstr_size);
                if (!sc) {
                        g_string_free(out, TRUE);
                        return RBK_ERR_URL;
                }
                if (!first) {
                        first = sc;
                } else if (sc != first) {
                        g_string_free(out, TRUE);
                        return rbk__seterr(
                            errstr, errstr_size, RBK_ERR_URL,
                            "%s entry %d: uses %s:// but entry 1 uses "
                            "%s:// (all entries must use the same scheme)",
                            var, idx, sc == 2 ? "kafka+ssl" : "kafka",
                            first == 2 ? "kafka+ssl" : "kafka");
                }
                if (!comma)
                        break;
                p = comma + 1;
        }
        if (bootstrap)
                *bootstrap = g_string_free(out, FALSE);
        else
                g_string_free(out, TRUE);
        if (ssl)
                *ssl = first == 2;
        return RBK_OK;
}

/* ------------------------------------------------------------ PEM */

char *rbk__pem_normalize(const char *s, size_t len) {
        if (!s)
                return NULL;
        if (find_n(s, len, '\n'))
                return g_strndup(s, len);
        /* g_strndup stops at a NUL; so does everything below. */
        char *out = g_strndup(s, len);
        char *w = out;
        for (const char *r = out; *r; r++) {
                if (r[0] == '\\' && r[1] == 'n') {
                        *w++ = '\n';
                        r++;
                } else {
                        *w++ = *r;
                }
        }
        *w = '\0';
        return out;
}

/* Refuses to decrypt: a passphrase is never asked for on a terminal. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u) {
        (void)buf;
        (void)size;
        (void)rwflag;
        (void)u;
        return -1;
}

static const char *mem_find(const char *s, size_t len, const char *needle) {
        size_t n = strlen(needle);
        if (n > len)
                return NULL;
        return memmem(s, len, needle, n);
}

#define PEM_BEGIN "-----BEGIN "
#define PEM_END "-----END "
#define PEM_DASHES "-----"
#define PEM_LABEL_MAX 40

typedef struct pem_block_s {
        const char *start; /* "-----BEGIN ..." */
        size_t len;        /* through the END line's final dashes */
        char label[PEM_LABEL_MAX + 1];
} pem_block_t;

/* Finds the next PEM block at or after *pos; only whitespace may precede
 * it. Returns 1 (block), 0 (end of text) or -1 (errstr set). nblock is the
 * number of blocks already read, for messages. */
static int pem_next(const char *var, const char *s, size_t len, size_t *pos,
                    int nblock, pem_block_t *blk, char *errstr,
                    size_t errstr_size) {
        size_t i = *pos;
        while (i < len && is_ws(s[i]))
                i++;
        if (i == len) {
                *pos = i;
                return 0;
        }
        size_t bl = strlen(PEM_BEGIN);
        if (len - i < bl || memcmp(s + i, PEM_BEGIN, bl)) {
                if (nblock == 0)
                        rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                    "%s: not PEM: expected a BEGIN "
                                    "line at the start",
                                    var);
                else
                        rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                    "%s: unexpected text after PEM block %d "
                                    "(only PEM blocks and whitespace are "
                                    "allowed)",
                                    var, nblock);
                return -1;
        }
        int n = nblock + 1;
        const char *start = s + i;
        const char *lab = start + bl;
        size_t avail = len - i - bl;
        size_t llen = 0;
        while (llen < avail && llen <= PEM_LABEL_MAX &&
               ((lab[llen] >= 'A' && lab[llen] <= 'Z') ||
                is_digit(lab[llen]) || lab[llen] == ' '))
                llen++;
        if (llen == 0 || llen > PEM_LABEL_MAX || avail - llen < 5 ||
            memcmp(lab + llen, PEM_DASHES, 5)) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                            "%s: PEM block %d has a malformed BEGIN line",
                            var, n);
                return -1;
        }
        memcpy(blk->label, lab, llen);
        blk->label[llen] = '\0';
        const char *body = lab + llen + 5;
        size_t body_avail = avail - llen - 5;
        const char *end = mem_find(body, body_avail, PEM_END);
        if (!end || mem_find(body, (size_t)(end - body), PEM_BEGIN)) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                            "%s: PEM block %d (%s) is truncated: no END "
                            "line",
                            var, n, blk->label);
                return -1;
        }
        const char *elab = end + strlen(PEM_END);
        size_t erest = (size_t)(s + len - elab);
        if (erest < llen + 5 || memcmp(elab, blk->label, llen) ||
            memcmp(elab + llen, PEM_DASHES, 5)) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                            "%s: PEM block %d (%s) has an END line that "
                            "does not match its BEGIN line",
                            var, n, blk->label);
                return -1;
        }
        blk->start = start;
        blk->len = (size_t)(elab + llen + 5 - start);
        *pos = (size_t)(blk->start + blk->len - s);
        /* The END line must end the line. */
        if (*pos < len && !is_ws(s[*pos])) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                            "%s: unexpected text after PEM block %d (only "
                            "PEM blocks and whitespace are allowed)",
                            var, n);
                return -1;
        }
        return 1;
}

static int pem_block_encrypted(const pem_block_t *blk) {
        return !strcmp(blk->label, "ENCRYPTED PRIVATE KEY") ||
               mem_find(blk->start, blk->len, "Proc-Type: 4,ENCRYPTED");
}

rbk_err_t rbk__pem_parse_certs(const char *var, const char *pem, size_t len,
                               STACK_OF(X509) **certs, int *ncerts,
                               char *errstr, size_t errstr_size) {
        if (!pem)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                   "%s is not set", var);
        if (len > RBK__PEM_MAX)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                   "%s is larger than %d bytes", var,
                                   RBK__PEM_MAX);
        STACK_OF(X509) *sk = sk_X509_new_null();
        if (!sk)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                                   "%s: out of memory", var);
        rbk_err_t err = RBK_OK;
        size_t pos = 0;
        pem_block_t blk;
        int n = 0, r;
        while ((r = pem_next(var, pem, len, &pos, n, &blk, errstr,
                             errstr_size)) == 1) {
                n++;
                if (strcmp(blk.label, "CERTIFICATE")) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s: PEM block %d is \"%s\", "
                                          "expected \"CERTIFICATE\"",
                                          var, n, blk.label);
                        break;
                }
                BIO *bio = BIO_new_mem_buf(blk.start, (int)blk.len);
                X509 *x = bio ? PEM_read_bio_X509(bio, NULL, no_passphrase_cb,
                                                  NULL)
                              : NULL;
                BIO_free(bio);
                if (!x) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s: certificate %d is not a valid "
                                          "X.509 certificate (bad base64 or "
                                          "DER)",
                                          var, n);
                        break;
                }
                if (!sk_X509_push(sk, x)) {
                        X509_free(x);
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                                          "%s: out of memory", var);
                        break;
                }
        }
        if (r < 0)
                err = RBK_ERR_PEM;
        if (!err && n == 0)
                err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                  "%s holds no PEM certificate", var);
        ERR_clear_error();
        if (err) {
                sk_X509_pop_free(sk, X509_free);
                return err;
        }
        if (ncerts)
                *ncerts = n;
        if (certs)
                *certs = sk;
        else
                sk_X509_pop_free(sk, X509_free);
        return RBK_OK;
}

rbk_err_t rbk__pem_parse_key(const char *var, const char *pem, size_t len,
                             EVP_PKEY **key, char *errstr, size_t errstr_size) {
        if (!pem)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                   "%s is not set", var);
        if (len > RBK__PEM_MAX)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                   "%s is larger than %d bytes", var,
                                   RBK__PEM_MAX);
        EVP_PKEY *pk = NULL;
        rbk_err_t err = RBK_OK;
        size_t pos = 0;
        pem_block_t blk;
        int n = 0, r;
        size_t kl = strlen("PRIVATE KEY");
        while ((r = pem_next(var, pem, len, &pos, n, &blk, errstr,
                             errstr_size)) == 1) {
                n++;
                size_t ll = strlen(blk.label);
                if (!strcmp(blk.label, "EC PARAMETERS") && !pk)
                        continue; /* written by `openssl ecparam -genkey` */
                if (ll < kl || strcmp(blk.label + ll - kl, "PRIVATE KEY")) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s: PEM block %d is \"%s\", "
                                          "expected a private key",
                                          var, n, blk.label);
                        break;
                }
                if (pk) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s holds more than one private "
                                          "key",
                                          var);
                        break;
                }
                if (pem_block_encrypted(&blk)) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s: the private key is encrypted; "
                                          "passphrases are not supported",
                                          var);
                        break;
                }
                BIO *bio = BIO_new_mem_buf(blk.start, (int)blk.len);
                pk = bio ? PEM_read_bio_PrivateKey(bio, NULL,
                                                   no_passphrase_cb, NULL)
                         : NULL;
                BIO_free(bio);
                if (!pk) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s: PEM block %d is not a valid "
                                          "private key (bad base64 or DER)",
                                          var, n);
                        break;
                }
        }
        if (r < 0)
                err = RBK_ERR_PEM;
        if (!err && !pk)
                err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                  "%s holds no PEM private key", var);
        ERR_clear_error();
        if (err) {
                EVP_PKEY_free(pk);
                return err;
        }
        if (key)
                *key = pk;
        else
                EVP_PKEY_free(pk);
        return RBK_OK;
}
