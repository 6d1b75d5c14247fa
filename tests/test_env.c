/* Configuration from the Heroku-style environment: the KAFKA_URL table,
 * PEM certificates and keys generated here with OpenSSL's C API, the
 * prefix, alternate variable prefixes, and "on error nothing changes". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "harness.h"
#include "internal.h"

/* ------------------------------------------------------------ fixtures */

/* Generated once in suite() (before Check forks), read-only afterwards. */
static struct {
        char *ca1, *ca2;           /* self-signed CA certificates */
        char *ca1_key;             /* the CA's key (PKCS#8) */
        char *client, *client_key; /* EC client cert signed by ca1, key */
        char *client_key_trad;     /* same key, "EC PRIVATE KEY" form */
        char *other_key;           /* an EC key matching nothing */
        char *rsa_client, *rsa_key_trad; /* RSA cert + "RSA PRIVATE KEY" */
        char *expired;             /* client key's certificate, expired */
        char *enc_key;             /* client key encrypted with a passphrase */
        /* Broker certificates for the TLS handshake tests, named for a host
         * that is not the loopback address the client connects to. */
        char *broker, *broker_key;     /* signed by ca1 */
        char *rogue, *rogue_key;       /* signed by ca2 */
} fx;

/* Fixtures are made outside any test, where Check's asserts cannot run. */
#define NEED(cond)                                                           \
        do {                                                                 \
                if (!(cond)) {                                               \
                        fprintf(stderr, "%s:%d: fixture: %s failed\n",      \
                                __FILE__, __LINE__, #cond);                  \
                        ERR_print_errors_fp(stderr);                         \
                        exit(2);                                             \
                }                                                            \
        } while (0)

static char *bio_to_str(BIO *bio) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        NEED(n > 0);
        char *s = g_strndup(data, (gsize)n);
        BIO_free(bio);
        return s;
}

static char *cert_pem(X509 *x) {
        BIO *b = BIO_new(BIO_s_mem());
        NEED(PEM_write_bio_X509(b, x));
        return bio_to_str(b);
}

static char *key_pem(EVP_PKEY *k, int traditional, const char *pass) {
        BIO *b = BIO_new(BIO_s_mem());
        if (pass)
                NEED(PEM_write_bio_PrivateKey(b, k, EVP_aes_128_cbc(),
                                                   NULL, 0, NULL,
                                                   (void *)pass));
        else if (traditional)
                NEED(PEM_write_bio_PrivateKey_traditional(
                    b, k, NULL, NULL, 0, NULL, NULL));
        else
                NEED(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL,
                                                   NULL));
        return bio_to_str(b);
}

/* A certificate for key k named cn, signed by issuer_key (self-signed when
 * issuer is NULL). */
static X509 *make_cert(EVP_PKEY *k, const char *cn, X509 *issuer,
                       EVP_PKEY *issuer_key, long serial) {
        X509 *x = X509_new();
        NEED(x != NULL);
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
        X509_gmtime_adj(X509_getm_notBefore(x), -60);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365);
        X509_NAME *name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   (const unsigned char *)cn, -1, -1, 0);
        X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
        X509_set_pubkey(x, k);
        /* CAs (the self-signed ones) say so; OpenSSL refuses a v3 issuer
         * without basicConstraints CA:TRUE. */
        X509V3_CTX v3;
        X509V3_set_ctx_nodb(&v3);
        X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(
            NULL, &v3, NID_basic_constraints,
            issuer ? "critical,CA:FALSE" : "critical,CA:TRUE");
        NEED(ext != NULL);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        NEED(X509_sign(x, issuer_key ? issuer_key : k, EVP_sha256()) > 0);
        return x;
}

static void fixtures_init(void) {
        EVP_PKEY *ca1k = EVP_EC_gen("P-256"), *ca2k = EVP_EC_gen("P-256");
        EVP_PKEY *ck = EVP_EC_gen("P-256"), *ok = EVP_EC_gen("P-256");
        EVP_PKEY *rk = EVP_RSA_gen(2048);
        NEED(ca1k && ca2k && ck && ok && rk);
        X509 *ca1 = make_cert(ca1k, "Test CA 1", NULL, NULL, 1);
        X509 *ca2 = make_cert(ca2k, "Test CA 2", NULL, NULL, 2);
        X509 *cl = make_cert(ck, "client", ca1, ca1k, 3);
        X509 *rc = make_cert(rk, "rsa client", ca1, ca1k, 4);
        X509 *xc = make_cert(ck, "client", ca1, ca1k, 7);
        /* Valid from two days ago until yesterday; signed again. */
        X509_gmtime_adj(X509_getm_notBefore(xc), -2 * 86400L);
        X509_gmtime_adj(X509_getm_notAfter(xc), -86400L);
        NEED(X509_sign(xc, ca1k, EVP_sha256()) > 0);
        fx.expired = cert_pem(xc);
        X509_free(xc);
        fx.ca1 = cert_pem(ca1);
        fx.ca2 = cert_pem(ca2);
        fx.ca1_key = key_pem(ca1k, 0, NULL);
        fx.client = cert_pem(cl);
        fx.client_key = key_pem(ck, 0, NULL);
        fx.client_key_trad = key_pem(ck, 1, NULL);
        fx.other_key = key_pem(ok, 0, NULL);
        fx.rsa_client = cert_pem(rc);
        fx.rsa_key_trad = key_pem(rk, 1, NULL);
        fx.enc_key = key_pem(ck, 0, "passphrase");
        EVP_PKEY *bk = EVP_EC_gen("P-256");
        NEED(bk != NULL);
        X509 *bc = make_cert(bk, "broker.example.invalid", ca1, ca1k, 5);
        X509 *rgc = make_cert(bk, "broker.example.invalid", ca2, ca2k, 6);
        fx.broker = cert_pem(bc);
        fx.broker_key = key_pem(bk, 0, NULL);
        fx.rogue = cert_pem(rgc);
        fx.rogue_key = key_pem(bk, 0, NULL);
        X509_free(bc);
        X509_free(rgc);
        EVP_PKEY_free(bk);
        X509_free(ca1);
        X509_free(ca2);
        X509_free(cl);
        X509_free(rc);
        EVP_PKEY_free(ca1k);
        EVP_PKEY_free(ca2k);
        EVP_PKEY_free(ck);
        EVP_PKEY_free(ok);
        EVP_PKEY_free(rk);
        NEED(strstr(fx.client_key_trad, "BEGIN EC PRIVATE KEY"));
        NEED(strstr(fx.rsa_key_trad, "BEGIN RSA PRIVATE KEY"));
        NEED(strstr(fx.enc_key, "BEGIN ENCRYPTED PRIVATE KEY"));
}

static void fixtures_free(void) {
        g_free(fx.ca1);
        g_free(fx.ca2);
        g_free(fx.ca1_key);
        g_free(fx.client);
        g_free(fx.client_key);
        g_free(fx.client_key_trad);
        g_free(fx.other_key);
        g_free(fx.rsa_client);
        g_free(fx.rsa_key_trad);
        g_free(fx.expired);
        g_free(fx.enc_key);
        g_free(fx.broker);
        g_free(fx.broker_key);
        g_free(fx.rogue);
        g_free(fx.rogue_key);
}

static const char *const VARS[] = {"URL", "TRUSTED_CERT", "CLIENT_CERT",
                                   "CLIENT_CERT_KEY", "PREFIX"};

/* Runs before every test: no variable of either prefix is left set. */
static void env_reset(void) {
        const char *prefixes[] = {"KAFKA_", "HEROKU_KAFKA_GRAY_"};
        for (size_t p = 0; p < G_N_ELEMENTS(prefixes); p++) {
                for (size_t v = 0; v < G_N_ELEMENTS(VARS); v++) {
                        char *n = g_strconcat(prefixes[p], VARS[v], NULL);
                        unsetenv(n);
                        g_free(n);
                }
        }
}

static void env_set(const char *name, const char *value) {
        if (value)
                ck_assert_int_eq(setenv(name, value, 1), 0);
        else
                ck_assert_int_eq(unsetenv(name), 0);
}

static void set_ssl_env(const char *prefix, const char *ca, const char *cert,
                        const char *key) {
        char *n;
        n = g_strconcat(prefix, "TRUSTED_CERT", NULL);
        env_set(n, ca);
        g_free(n);
        n = g_strconcat(prefix, "CLIENT_CERT", NULL);
        env_set(n, cert);
        g_free(n);
        n = g_strconcat(prefix, "CLIENT_CERT_KEY", NULL);
        env_set(n, key);
        g_free(n);
}

/* The value of a property (g_free), or NULL when it was never set. */
static char *conf_value(const rbk_conf_t *c, const char *name) {
        size_t sz = 0;
        if (rbk_conf_get(c, name, NULL, &sz) != RBK_OK)
                return NULL;
        char *v = g_malloc(sz);
        ck_assert_int_eq(rbk_conf_get(c, name, v, &sz), RBK_OK);
        return v;
}

static void assert_prop(const rbk_conf_t *c, const char *name,
                        const char *expect) {
        char *v = conf_value(c, name);
        if (!expect) {
                ck_assert_msg(v == NULL, "%s is set", name);
        } else {
                ck_assert_msg(v != NULL, "%s is not set", name);
                ck_assert_str_eq(v, expect);
        }
        g_free(v);
}

/* No 12-character run of the secret's base64 body appears in errstr. */
static void assert_no_secret(const char *errstr, const char *secret) {
        size_t n = strlen(secret);
        for (size_t i = 0; i + 12 <= n; i++) {
                if (memchr(secret + i, '\n', 12) || secret[i] == '-')
                        continue;
                ck_assert_msg(memmem(errstr, strlen(errstr), secret + i, 12) ==
                                  NULL,
                              "secret text leaked into \"%s\"", errstr);
        }
}

/* Expects rbk_conf_from_env() to fail with err, a message containing sub,
 * no secret, and an empty OpenSSL error queue. */
static void expect_env_error(const char *prefix, rbk_err_t err,
                             const char *sub) {
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(prefix, errstr, sizeof(errstr));
        ck_assert_msg(c == NULL, "expected failure containing \"%s\"", sub);
        ck_assert_msg(strstr(errstr, sub) != NULL,
                      "errstr \"%s\" lacks \"%s\"", errstr, sub);
        ck_assert_ptr_null(strstr(errstr, "-----")); /* no PEM text at all */
        assert_no_secret(errstr, fx.client_key);
        assert_no_secret(errstr, fx.other_key);
        assert_no_secret(errstr, fx.rsa_key_trad);
        ck_assert_uint_eq(ERR_peek_error(), 0);
        /* The code, through the entry point that returns it. */
        c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_apply_env(c, prefix, NULL, 0), err);
        rbk_conf_destroy(c);
}

/* ------------------------------------------------------------ URL table */

typedef struct url_case_s {
        const char *url;    /* NULL: unset */
        rbk_err_t err;      /* expected result */
        const char *expect; /* OK: bootstrap.servers; else errstr substring */
        int ssl;            /* OK: expected TLS */
} url_case_t;

static const url_case_t url_cases[] = {
    /* good */
    {"kafka://localhost:9092", RBK_OK, "localhost:9092", 0},
    {"kafka+ssl://ec2-1-2-3-4.compute-1.amazonaws.com:9096", RBK_OK,
     "ec2-1-2-3-4.compute-1.amazonaws.com:9096", 1},
    {"kafka+ssl://a:9096,kafka+ssl://b:9096,kafka+ssl://c:9096", RBK_OK,
     "a:9096,b:9096,c:9096", 1},
    {"  kafka://a:1 ,\tkafka://b:65535  ", RBK_OK, "a:1,b:65535", 0},
    {"kafka://h:1\n", RBK_OK, "h:1", 0},
    {"kafka://[::1]:9092", RBK_OK, "[::1]:9092", 0},
    {"kafka://[2001:db8::10]:9092, kafka://10.0.0.1:9093", RBK_OK,
     "[2001:db8::10]:9092,10.0.0.1:9093", 0},
    {"kafka+ssl://[::ffff:127.0.0.1]:9096", RBK_OK,
     "[::ffff:127.0.0.1]:9096", 1},
    {"KAFKA+SSL://Host.Example:9096", RBK_OK, "Host.Example:9096", 1},
    {"kafka://a:009092", RBK_OK, "a:9092", 0},
    {"kafka://under_score.local:9092", RBK_OK, "under_score.local:9092", 0},
    /* bad: the whole value */
    {NULL, RBK_ERR_URL, "KAFKA_URL is not set", 0},
    {"", RBK_ERR_URL, "KAFKA_URL is empty", 0},
    {"  \t ", RBK_ERR_URL, "KAFKA_URL is empty", 0},
    /* bad: one entry */
    {"kafka://a:1,,kafka://b:2", RBK_ERR_URL, "KAFKA_URL entry 2 is empty", 0},
    {"kafka://a:1,", RBK_ERR_URL, "KAFKA_URL entry 2 is empty", 0},
    {",kafka://a:1", RBK_ERR_URL, "KAFKA_URL entry 1 is empty", 0},
    {"http://a:1", RBK_ERR_URL, "entry 1: unknown scheme \"http\"", 0},
    {"kafka+sasl_ssl://a:1", RBK_ERR_URL, "entry 1: unknown scheme", 0},
    {"a:9092", RBK_ERR_URL, "KAFKA_URL entry 1: missing scheme", 0},
    {"://a:9092", RBK_ERR_URL, "entry 1: missing scheme", 0},
    {"kafka://", RBK_ERR_URL, "entry 1: missing host", 0},
    {"kafka://:9092", RBK_ERR_URL, "entry 1: missing host", 0},
    {"kafka://[]:9092", RBK_ERR_URL, "entry 1: missing host", 0},
    {"kafka://a:1,kafka://host", RBK_ERR_URL, "entry 2: missing port", 0},
    {"kafka://host:", RBK_ERR_URL, "entry 1: missing port", 0},
    {"kafka://[::1]", RBK_ERR_URL, "entry 1: missing port", 0},
    {"kafka://host:abc", RBK_ERR_URL, "entry 1: port is not a number", 0},
    {"kafka://host:-1", RBK_ERR_URL, "port is not a number", 0},
    {"kafka://host:90 92", RBK_ERR_URL, "port is not a number", 0},
    {"kafka://host:0", RBK_ERR_URL, "entry 1: port out of range", 0},
    {"kafka://host:65536", RBK_ERR_URL, "port out of range", 0},
    {"kafka://host:99999999999999999999999", RBK_ERR_URL, "port out of range",
     0},
    {"kafka://host:9092/", RBK_ERR_URL, "entry 1: a path is not allowed", 0},
    {"kafka://host:9092/path", RBK_ERR_URL, "a path is not allowed", 0},
    {"kafka://host:9092?x=1", RBK_ERR_URL, "a query is not allowed", 0},
    {"kafka://host:9092#f", RBK_ERR_URL, "a fragment is not allowed", 0},
    {"kafka://user:s3cr3tpw@host:9092", RBK_ERR_URL,
     "entry 1: user information (user@) is not allowed", 0},
    {"kafka://a:1,kafka+ssl://b:2", RBK_ERR_URL,
     "entry 2: uses kafka+ssl:// but entry 1 uses kafka://", 0},
    {"kafka+ssl://a:1, kafka+ssl://b:2, kafka://c:3", RBK_ERR_URL,
     "entry 3: uses kafka:// but entry 1 uses kafka+ssl://", 0},
    {"kafka://::1:9092", RBK_ERR_URL, "must be in brackets", 0},
    {"kafka://[::1:9092", RBK_ERR_URL, "closing ']'", 0},
    {"kafka://[zz::1]:9092", RBK_ERR_URL, "entry 1: invalid IPv6 address", 0},
    {"kafka://[::1]x:9092", RBK_ERR_URL, "after the IPv6 address", 0},
    {"kafka://ho st:9092", RBK_ERR_URL, "illegal character", 0},
};

START_TEST(url_table) {
        const url_case_t *tc = &url_cases[_i];
        /* TLS entries need a CA; plain ones ignore it. */
        set_ssl_env("KAFKA_", fx.ca1, NULL, NULL);
        env_set("KAFKA_URL", tc->url);
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        if (tc->err == RBK_OK) {
                ck_assert_msg(c != NULL, "case %d \"%s\": %s", _i, tc->url,
                              errstr);
                assert_prop(c, "bootstrap.servers", tc->expect);
                assert_prop(c, "security.protocol",
                            tc->ssl ? "ssl" : "plaintext");
                assert_prop(c, "ssl.ca.pem", tc->ssl ? fx.ca1 : NULL);
                rbk_conf_destroy(c);
        } else {
                ck_assert_msg(c == NULL, "case %d \"%s\" succeeded", _i,
                              tc->url ? tc->url : "(unset)");
                ck_assert_msg(strstr(errstr, tc->expect) != NULL,
                              "case %d: \"%s\" lacks \"%s\"", _i, errstr,
                              tc->expect);
                ck_assert_ptr_null(strstr(errstr, "s3cr3tpw"));
                ck_assert_ptr_null(strstr(errstr, "user:"));
                c = rbk_conf_new();
                ck_assert_int_eq(rbk_conf_apply_env(c, NULL, NULL, 0),
                                 tc->err);
                rbk_conf_destroy(c);
        }
}
END_TEST

/* The parser directly: outputs untouched on error, NULL outputs allowed. */
START_TEST(url_parser_contract) {
        char *bs = (char *)"untouched";
        int ssl = 7;
        char errstr[256];
        ck_assert_int_eq(rbk__env_parse_urls("X_URL", "kafka://h", &bs, &ssl,
                                             errstr, sizeof(errstr)),
                         RBK_ERR_URL);
        ck_assert_str_eq(bs, "untouched");
        ck_assert_int_eq(ssl, 7);
        ck_assert_str_eq(errstr, "X_URL entry 1: missing port (expected "
                                 "kafka://host:port or kafka+ssl://host:port)");
        ck_assert_int_eq(rbk__env_parse_urls("X_URL", "kafka://h:1", NULL,
                                             NULL, NULL, 0),
                         RBK_OK);
        ck_assert_int_eq(rbk__env_parse_urls("X_URL", "kafka://h:1,,", NULL,
                                             NULL, errstr, 1),
                         RBK_ERR_URL);
        ck_assert_str_eq(errstr, "");
        /* Long lists: every entry counted. */
        GString *g = g_string_new(NULL);
        for (int i = 0; i < 200; i++)
                g_string_append_printf(g, "%skafka+ssl://b%d:%d",
                                       i ? "," : "", i, 9000 + i);
        ck_assert_int_eq(rbk__env_parse_urls("X_URL", g->str, &bs, &ssl,
                                             errstr, sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(ssl, 1);
        ck_assert(g_str_has_prefix(bs, "b0:9000,b1:9001,"));
        ck_assert(g_str_has_suffix(bs, ",b199:9199"));
        g_free(bs);
        g_string_append(g, ",kafka+ssl://b:0");
        ck_assert_int_eq(rbk__env_parse_urls("X_URL", g->str, NULL, NULL,
                                             errstr, sizeof(errstr)),
                         RBK_ERR_URL);
        ck_assert_str_eq(errstr, "X_URL entry 201: port out of range (1-65535)");
        g_string_free(g, TRUE);
}
END_TEST

/* ------------------------------------------------------------ TLS */

START_TEST(ssl_full_profile) {
        env_set("KAFKA_URL", "kafka+ssl://b1.example:9096,kafka+ssl://b2."
                             "example:9096");
        set_ssl_env("KAFKA_", fx.ca1, fx.client, fx.client_key);
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "bootstrap.servers", "b1.example:9096,b2.example:9096");
        assert_prop(c, "security.protocol", "ssl");
        assert_prop(c, "ssl.ca.pem", fx.ca1);
        assert_prop(c, "ssl.certificate.pem", fx.client);
        assert_prop(c, "ssl.key.pem", fx.client_key);
        assert_prop(c, "enable.ssl.certificate.verification", "true");
        assert_prop(c, "ssl.endpoint.identification.algorithm", "none");
        assert_prop(c, "rbk.prefix", NULL);
        /* No temp files: nothing points at a location. */
        assert_prop(c, "ssl.ca.location", NULL);
        assert_prop(c, "ssl.certificate.location", NULL);
        assert_prop(c, "ssl.key.location", NULL);
        /* librdkafka accepts the result for both client types, and a dump
         * redacts the key. */
        ck_assert_msg(rbk_conf_validate(c, RBK_PRODUCER, errstr,
                                        sizeof(errstr)) == RBK_OK,
                      "%s", errstr);
        ck_assert_int_eq(rbk_conf_set(c, "group.id", "env-test", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_msg(rbk_conf_validate(c, RBK_CONSUMER, errstr,
                                        sizeof(errstr)) == RBK_OK,
                      "%s", errstr);
        char *dump = rbk_conf_dump(c, RBK_PRODUCER, errstr, sizeof(errstr));
        ck_assert_msg(dump != NULL, "%s", errstr);
        ck_assert_ptr_nonnull(strstr(dump, "ssl.key.pem=[redacted]"));
        ck_assert_ptr_nonnull(
            strstr(dump, "ssl.endpoint.identification.algorithm=none"));
        /* (The certificates are in the dump, and an EC key's PKCS#8 text
         * shares its public half with the certificate: check the key's
         * first body line, which holds the private scalar.) */
        ck_assert_ptr_null(strstr(dump, "PRIVATE KEY"));
        const char *l1 = strchr(fx.client_key, '\n') + 1;
        char *line1 = g_strndup(l1, (gsize)(strchr(l1, '\n') - l1));
        ck_assert_int_gt(strlen(line1), 40);
        ck_assert_ptr_null(strstr(dump, line1));
        g_free(line1);
        rbk_free(dump);
        rbk_conf_destroy(c);
        ck_assert_uint_eq(ERR_peek_error(), 0);
}
END_TEST

START_TEST(ssl_ca_only) {
        /* Server authentication only: no client certificate. */
        env_set("KAFKA_URL", "kafka+ssl://b1:9096");
        set_ssl_env("KAFKA_", fx.ca1, NULL, NULL);
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "ssl.ca.pem", fx.ca1);
        assert_prop(c, "ssl.certificate.pem", NULL);
        assert_prop(c, "ssl.key.pem", NULL);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(ssl_two_cas_and_rsa_traditional_key) {
        char *two = g_strconcat(fx.ca1, "\n", fx.ca2, NULL);
        env_set("KAFKA_URL", "kafka+ssl://b1:9096");
        set_ssl_env("KAFKA_", two, fx.rsa_client, fx.rsa_key_trad);
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "ssl.ca.pem", two);
        assert_prop(c, "ssl.key.pem", fx.rsa_key_trad);
        rbk_conf_destroy(c);

        int n = 0;
        STACK_OF(X509) *sk = NULL;
        ck_assert_int_eq(rbk__pem_parse_certs("V", two, strlen(two), &sk, &n,
                                              errstr, sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(sk_X509_num(sk), 2);
        X509_NAME *nm = X509_get_subject_name(sk_X509_value(sk, 1));
        char cn[64];
        ck_assert_int_gt(X509_NAME_get_text_by_NID(nm, NID_commonName, cn,
                                                   sizeof(cn)),
                         0);
        ck_assert_str_eq(cn, "Test CA 2");
        sk_X509_pop_free(sk, X509_free);
        g_free(two);
}
END_TEST

START_TEST(ssl_ec_traditional_key_with_parameters) {
        /* `openssl ecparam -genkey` writes EC PARAMETERS before the key. */
        char *k = g_strconcat("-----BEGIN EC PARAMETERS-----\n"
                              "BggqhkjOPQMBBw==\n"
                              "-----END EC PARAMETERS-----\n",
                              fx.client_key_trad, NULL);
        env_set("KAFKA_URL", "kafka+ssl://b1:9096");
        set_ssl_env("KAFKA_", fx.ca1, fx.client, k);
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        rbk_conf_destroy(c);
        g_free(k);
}
END_TEST

/* Literal "\n" escapes instead of newlines are accepted and unescaped. */
START_TEST(ssl_escaped_newlines) {
        char *esc[3];
        const char *src[3] = {fx.ca1, fx.client, fx.client_key};
        for (int i = 0; i < 3; i++) {
                GString *g = g_string_new(NULL);
                for (const char *p = src[i]; *p; p++) {
                        if (*p == '\n')
                                g_string_append(g, "\\n");
                        else
                                g_string_append_c(g, *p);
                }
                esc[i] = g_string_free(g, FALSE);
                ck_assert_ptr_null(strchr(esc[i], '\n'));
        }
        env_set("KAFKA_URL", "kafka+ssl://b1:9096");
        set_ssl_env("KAFKA_", esc[0], esc[1], esc[2]);
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "ssl.ca.pem", fx.ca1);
        assert_prop(c, "ssl.certificate.pem", fx.client);
        assert_prop(c, "ssl.key.pem", fx.client_key);
        rbk_conf_destroy(c);
        for (int i = 0; i < 3; i++)
                g_free(esc[i]);

        /* With a real newline present, backslashes are left alone. */
        char *s = rbk__pem_normalize("a\\nb\nc", 6);
        ck_assert_str_eq(s, "a\\nb\nc");
        g_free(s);
        s = rbk__pem_normalize("a\\nb\\", 5);
        ck_assert_str_eq(s, "a\nb\\");
        g_free(s);
}
END_TEST

/* Cuts a PEM in the middle of its base64 body (no END line). */
static char *truncated(const char *pem) {
        return g_strndup(pem, strlen(pem) / 2);
}

/* Removes a chunk of the base64 body but keeps BEGIN and END lines. */
static char *corrupted_body(const char *pem) {
        const char *body = strchr(pem, '\n') + 1;
        return g_strconcat("-----BEGIN CERTIFICATE-----\n",
                           body + 40, NULL);
}

START_TEST(ssl_bad_trusted_cert) {
        env_set("KAFKA_URL", "kafka+ssl://b1:9096");

        set_ssl_env("KAFKA_", NULL, fx.client, fx.client_key);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_URL uses kafka+ssl:// but KAFKA_TRUSTED_CERT "
                         "is not set");

        set_ssl_env("KAFKA_", "not a certificate", NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM, "KAFKA_TRUSTED_CERT: not PEM");

        char *s = g_strconcat("garbage\n", fx.ca1, NULL);
        set_ssl_env("KAFKA_", s, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM, "KAFKA_TRUSTED_CERT: not PEM");
        g_free(s);

        s = g_strconcat(fx.ca1, "garbage\n", fx.ca2, NULL);
        set_ssl_env("KAFKA_", s, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_TRUSTED_CERT: unexpected text after PEM "
                         "block 1");
        g_free(s);

        s = g_strconcat(fx.ca1, fx.ca2, "\ntrailing", NULL);
        set_ssl_env("KAFKA_", s, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_TRUSTED_CERT: unexpected text after PEM "
                         "block 2");
        g_free(s);

        s = truncated(fx.ca1);
        set_ssl_env("KAFKA_", s, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_TRUSTED_CERT: PEM block 1 (CERTIFICATE) is "
                         "truncated");
        g_free(s);

        /* A truncated first certificate running into a complete second. */
        char *t = truncated(fx.ca1);
        s = g_strconcat(t, "\n", fx.ca2, NULL);
        set_ssl_env("KAFKA_", s, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM, "PEM block 1 (CERTIFICATE) is "
                                            "truncated");
        g_free(s);
        g_free(t);

        s = corrupted_body(fx.ca1);
        set_ssl_env("KAFKA_", s, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_TRUSTED_CERT: certificate 1 is not a valid "
                         "X.509 certificate");
        g_free(s);

        /* A key pasted in the wrong variable: named, never quoted. */
        set_ssl_env("KAFKA_", fx.client_key, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_TRUSTED_CERT: PEM block 1 is \"PRIVATE KEY\", "
                         "expected \"CERTIFICATE\"");

        s = g_strdup(fx.ca1);
        *strstr(s, "-----END CERTIFICATE") = '\0';
        char *s2 = g_strconcat(s, "-----END PRIVATE KEY-----\n", NULL);
        set_ssl_env("KAFKA_", s2, NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM, "does not match its BEGIN line");
        g_free(s);
        g_free(s2);

        set_ssl_env("KAFKA_", "  \n\t ", NULL, NULL);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_TRUSTED_CERT holds no PEM certificate");
}
END_TEST

START_TEST(ssl_bad_client_cert_and_key) {
        env_set("KAFKA_URL", "kafka+ssl://b1:9096");

        set_ssl_env("KAFKA_", fx.ca1, fx.client, NULL);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT is set but KAFKA_CLIENT_CERT_KEY "
                         "is not");

        set_ssl_env("KAFKA_", fx.ca1, NULL, fx.client_key);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY is set but KAFKA_CLIENT_CERT "
                         "is not");

        set_ssl_env("KAFKA_", fx.ca1, fx.client, fx.other_key);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY does not match "
                         "KAFKA_CLIENT_CERT");

        /* RSA certificate, EC key. */
        set_ssl_env("KAFKA_", fx.ca1, fx.rsa_client, fx.client_key);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY does not match "
                         "KAFKA_CLIENT_CERT");

        set_ssl_env("KAFKA_", fx.ca1, fx.expired, fx.client_key);
        expect_env_error(NULL, RBK_ERR_PEM, "KAFKA_CLIENT_CERT expired on ");

        char *two = g_strconcat(fx.client, fx.ca1, NULL);
        set_ssl_env("KAFKA_", fx.ca1, two, fx.client_key);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT holds 2 certificates; expected "
                         "exactly one");
        g_free(two);

        char *s = truncated(fx.client_key);
        set_ssl_env("KAFKA_", fx.ca1, fx.client, s);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY: PEM block 1 (PRIVATE KEY) is "
                         "truncated");
        g_free(s);

        s = g_strconcat(fx.client_key, "x", NULL);
        set_ssl_env("KAFKA_", fx.ca1, fx.client, s);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY: unexpected text after PEM "
                         "block 1");
        g_free(s);

        s = g_strconcat(fx.client_key, fx.other_key, NULL);
        set_ssl_env("KAFKA_", fx.ca1, fx.client, s);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY holds more than one private "
                         "key");
        g_free(s);

        /* Base64 damaged inside the key: the message says so, and quotes
         * nothing of it. */
        s = g_strdup(fx.client_key);
        char *body = strchr(s, '\n') + 1;
        for (int i = 10; i < 30; i++)
                body[i] = '!';
        set_ssl_env("KAFKA_", fx.ca1, fx.client, s);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY: PEM block 1 is not a valid "
                         "private key");
        g_free(s);

        set_ssl_env("KAFKA_", fx.ca1, fx.client, fx.client);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY: PEM block 1 is "
                         "\"CERTIFICATE\", expected a private key");

        /* Never prompts for a passphrase. */
        set_ssl_env("KAFKA_", fx.ca1, fx.client, fx.enc_key);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT_KEY: the private key is "
                         "encrypted");

        set_ssl_env("KAFKA_", fx.ca1, fx.client_key, fx.client_key);
        expect_env_error(NULL, RBK_ERR_PEM,
                         "KAFKA_CLIENT_CERT: PEM block 1 is \"PRIVATE KEY\"");
}
END_TEST

/* Plain kafka:// ignores the certificate variables, even broken ones. */
START_TEST(plain_ignores_certs) {
        env_set("KAFKA_URL", "kafka://b1:9092");
        set_ssl_env("KAFKA_", "garbage", "garbage", "garbage");
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "security.protocol", "plaintext");
        assert_prop(c, "ssl.ca.pem", NULL);
        assert_prop(c, "ssl.key.pem", NULL);
        assert_prop(c, "ssl.endpoint.identification.algorithm", NULL);
        rbk_conf_destroy(c);
}
END_TEST

/* ------------------------------------------------------------ prefix */

START_TEST(topic_prefix) {
        env_set("KAFKA_URL", "kafka://b1:9092");
        env_set("KAFKA_PREFIX", "name-1234.");
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "rbk.prefix", "name-1234.");
        rbk_conf_destroy(c);

        char longest[101];
        memset(longest, 'p', 100);
        longest[100] = '\0';
        env_set("KAFKA_PREFIX", longest);
        c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "rbk.prefix", longest);
        rbk_conf_destroy(c);

        char *too_long = g_strconcat(longest, "p", NULL);
        env_set("KAFKA_PREFIX", too_long);
        expect_env_error(NULL, RBK_ERR_CONF,
                         "KAFKA_PREFIX is longer than 100 characters");
        g_free(too_long);

        env_set("KAFKA_PREFIX", "bad/prefix.");
        expect_env_error(NULL, RBK_ERR_CONF,
                         "KAFKA_PREFIX contains an illegal character at "
                         "position 4");
        env_set("KAFKA_PREFIX", "tab\t");
        expect_env_error(NULL, RBK_ERR_CONF, "KAFKA_PREFIX contains an illegal");

        /* Empty means no prefix. */
        env_set("KAFKA_PREFIX", "");
        c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "rbk.prefix", NULL);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(alternate_prefix) {
        const char *p = "HEROKU_KAFKA_GRAY_";
        env_set("HEROKU_KAFKA_GRAY_URL", "kafka+ssl://gray1:9096,"
                                         "kafka+ssl://gray2:9096");
        env_set("HEROKU_KAFKA_GRAY_PREFIX", "gray-42.");
        set_ssl_env(p, fx.ca2, fx.client, fx.client_key);
        /* The default variables belong to another cluster. */
        env_set("KAFKA_URL", "kafka://default:9092");
        env_set("KAFKA_PREFIX", "default.");
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(p, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "bootstrap.servers", "gray1:9096,gray2:9096");
        assert_prop(c, "ssl.ca.pem", fx.ca2);
        assert_prop(c, "ssl.certificate.pem", fx.client);
        assert_prop(c, "rbk.prefix", "gray-42.");
        rbk_conf_destroy(c);

        c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        assert_prop(c, "bootstrap.servers", "default:9092");
        assert_prop(c, "rbk.prefix", "default.");
        rbk_conf_destroy(c);

        /* Messages name the alternate variables. */
        env_set("HEROKU_KAFKA_GRAY_CLIENT_CERT_KEY", fx.other_key);
        expect_env_error(p, RBK_ERR_PEM,
                         "HEROKU_KAFKA_GRAY_CLIENT_CERT_KEY does not match "
                         "HEROKU_KAFKA_GRAY_CLIENT_CERT");
        unsetenv("HEROKU_KAFKA_GRAY_URL");
        expect_env_error(p, RBK_ERR_URL, "HEROKU_KAFKA_GRAY_URL is not set");
}
END_TEST

/* ------------------------------------------------------------ apply */

START_TEST(apply_env_is_all_or_nothing) {
        rbk_conf_t *c = rbk_conf_new();
        rbk__conf_set_raw(c, "bootstrap.servers", "orig:1");
        rbk__conf_set_raw(c, "rbk.prefix", "keep.");
        char errstr[512] = "";

        /* Valid URL and prefix, bad key: nothing changes. */
        env_set("KAFKA_URL", "kafka+ssl://new:9096");
        env_set("KAFKA_PREFIX", "new.");
        set_ssl_env("KAFKA_", fx.ca1, fx.client, fx.other_key);
        ck_assert_int_eq(rbk_conf_apply_env(c, NULL, errstr, sizeof(errstr)),
                         RBK_ERR_PEM);
        assert_prop(c, "bootstrap.servers", "orig:1");
        assert_prop(c, "rbk.prefix", "keep.");
        assert_prop(c, "security.protocol", NULL);
        assert_prop(c, "ssl.ca.pem", NULL);
        assert_prop(c, "ssl.certificate.pem", NULL);
        assert_prop(c, "ssl.key.pem", NULL);

        /* Valid TLS, bad prefix: nothing changes. */
        set_ssl_env("KAFKA_", fx.ca1, fx.client, fx.client_key);
        env_set("KAFKA_PREFIX", "new/");
        ck_assert_int_eq(rbk_conf_apply_env(c, NULL, errstr, sizeof(errstr)),
                         RBK_ERR_CONF);
        assert_prop(c, "bootstrap.servers", "orig:1");
        assert_prop(c, "rbk.prefix", "keep.");
        assert_prop(c, "ssl.ca.pem", NULL);

        /* Bad URL: nothing changes. */
        env_set("KAFKA_PREFIX", "new.");
        env_set("KAFKA_URL", "kafka+ssl://new:9096,kafka://x:1");
        ck_assert_int_eq(rbk_conf_apply_env(c, NULL, errstr, sizeof(errstr)),
                         RBK_ERR_URL);
        assert_prop(c, "bootstrap.servers", "orig:1");
        assert_prop(c, "security.protocol", NULL);

        /* All valid: applied over the existing values. */
        env_set("KAFKA_URL", "kafka+ssl://new:9096");
        ck_assert_int_eq(rbk_conf_apply_env(c, NULL, errstr, sizeof(errstr)),
                         RBK_OK);
        assert_prop(c, "bootstrap.servers", "new:9096");
        assert_prop(c, "rbk.prefix", "new.");
        assert_prop(c, "ssl.key.pem", fx.client_key);

        /* Without PREFIX set, the configuration's prefix stays. */
        unsetenv("KAFKA_PREFIX");
        ck_assert_int_eq(rbk_conf_apply_env(c, NULL, errstr, sizeof(errstr)),
                         RBK_OK);
        assert_prop(c, "rbk.prefix", "new.");
        rbk_conf_destroy(c);

        ck_assert_int_eq(rbk_conf_apply_env(NULL, NULL, errstr,
                                            sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        /* NULL or tiny errstr buffers are fine. */
        unsetenv("KAFKA_URL");
        ck_assert_ptr_null(rbk_conf_from_env(NULL, NULL, 0));
        errstr[0] = 'x';
        ck_assert_ptr_null(rbk_conf_from_env(NULL, errstr, 1));
        ck_assert_str_eq(errstr, "");
}
END_TEST

/* The parsers leave OpenSSL's error queue empty, whatever the input. */
START_TEST(openssl_error_queue_left_empty) {
        char errstr[256];
        const char *inputs[] = {fx.ca1, "junk", "-----BEGIN CERTIFICATE-----\n"
                                                "AAAA\n"
                                                "-----END CERTIFICATE-----\n"};
        for (size_t i = 0; i < G_N_ELEMENTS(inputs); i++) {
                ERR_clear_error();
                rbk__pem_parse_certs("V", inputs[i], strlen(inputs[i]), NULL,
                                     NULL, errstr, sizeof(errstr));
                ck_assert_uint_eq(ERR_peek_error(), 0);
                rbk__pem_parse_key("V", inputs[i], strlen(inputs[i]), NULL,
                                   errstr, sizeof(errstr));
                ck_assert_uint_eq(ERR_peek_error(), 0);
        }
        /* Embedded NUL: the length, not the NUL, bounds the parse. */
        char buf[8] = {'-', '-', '\0', '-', '-', 'x', 'y', 'z'};
        ck_assert_int_eq(rbk__pem_parse_certs("V", buf, sizeof(buf), NULL,
                                              NULL, errstr, sizeof(errstr)),
                         RBK_ERR_PEM);
}
END_TEST


/* ------------------------------------------------------------ TLS handshake */

/* A loopback TLS server that stands in for a broker: it completes (or fails)
 * the handshake, records the outcome and closes. It requires a client
 * certificate signed by ca1. */
typedef struct tls_srv_s {
        int lfd;
        int port;
        SSL_CTX *ctx;
        GThread *thread;
        gint stop;
        gint ok;          /* handshakes completed */
        gint failed;      /* handshakes that failed */
        gint client_cert; /* completed with a verified client certificate */
} tls_srv_t;

static gpointer tls_srv_run(gpointer arg) {
        tls_srv_t *srv = arg;
        while (!g_atomic_int_get(&srv->stop)) {
                struct pollfd pfd = {.fd = srv->lfd, .events = POLLIN};
                if (poll(&pfd, 1, 50) <= 0)
                        continue;
                int fd = accept(srv->lfd, NULL, NULL);
                if (fd < 0)
                        continue;
                struct timeval tv = {.tv_sec = 5};
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                SSL *ssl = SSL_new(srv->ctx);
                SSL_set_fd(ssl, fd);
                if (SSL_accept(ssl) == 1) {
                        X509 *peer = SSL_get1_peer_certificate(ssl);
                        if (peer && SSL_get_verify_result(ssl) == X509_V_OK)
                                g_atomic_int_inc(&srv->client_cert);
                        X509_free(peer);
                        g_atomic_int_inc(&srv->ok);
                        SSL_shutdown(ssl);
                } else {
                        g_atomic_int_inc(&srv->failed);
                }
                SSL_free(ssl);
                close(fd);
                ERR_clear_error();
        }
        return NULL;
}

static X509 *x509_from(const char *pem) {
        BIO *b = BIO_new_mem_buf(pem, -1);
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
        ck_assert_ptr_nonnull(x);
        return x;
}

static void tls_srv_start(tls_srv_t *srv, const char *cert, const char *key) {
        memset(srv, 0, sizeof(*srv));
        srv->ctx = SSL_CTX_new(TLS_server_method());
        ck_assert_ptr_nonnull(srv->ctx);
        X509 *x = x509_from(cert);
        ck_assert_int_eq(SSL_CTX_use_certificate(srv->ctx, x), 1);
        X509_free(x);
        BIO *b = BIO_new_mem_buf(key, -1);
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        ck_assert_ptr_nonnull(k);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey(srv->ctx, k), 1);
        EVP_PKEY_free(k);
        X509 *ca = x509_from(fx.ca1);
        X509_STORE_add_cert(SSL_CTX_get_cert_store(srv->ctx), ca);
        X509_free(ca);
        SSL_CTX_set_verify(srv->ctx,
                           SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           NULL);

        srv->lfd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(srv->lfd, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(srv->lfd, (struct sockaddr *)&sa, sizeof(sa)),
                         0);
        ck_assert_int_eq(listen(srv->lfd, 16), 0);
        socklen_t sl = sizeof(sa);
        getsockname(srv->lfd, (struct sockaddr *)&sa, &sl);
        srv->port = ntohs(sa.sin_port);
        srv->thread = g_thread_new("tls-srv", tls_srv_run, srv);
}

static void tls_srv_stop(tls_srv_t *srv) {
        g_atomic_int_set(&srv->stop, 1);
        g_thread_join(srv->thread);
        close(srv->lfd);
        SSL_CTX_free(srv->ctx);
}

/* A librdkafka producer from the environment's configuration (every
 * property the environment set, passed through as is), plus overrides
 * (name, value pairs, NULL-terminated). It asks for metadata, which makes it
 * connect; the caller then watches the server. */
static rd_kafka_t *client_from(const rbk_conf_t *c, const char *const *extra) {
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        char err[512];
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, c->props);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                if (g_str_has_prefix(k, "rbk."))
                        continue;
                ck_assert_msg(rd_kafka_conf_set(rc, k, v, err, sizeof(err)) ==
                                  RD_KAFKA_CONF_OK,
                              "%s: %s", (char *)k, err);
        }
        for (; extra && *extra; extra += 2)
                ck_assert_int_eq(rd_kafka_conf_set(rc, extra[0], extra[1], err,
                                                   sizeof(err)),
                                 RD_KAFKA_CONF_OK);
        /* Failed handshakes are expected in some tests: keep stderr quiet
         * unless RBK_TEST_TLS_DEBUG is set. */
        int dbg = getenv("RBK_TEST_TLS_DEBUG") != NULL;
        rd_kafka_conf_set(rc, "log_level", dbg ? "7" : "0", NULL, 0);
        if (dbg)
                rd_kafka_conf_set(rc, "debug", "security,broker", NULL, 0);
        rd_kafka_conf_set(rc, "reconnect.backoff.ms", "50", NULL, 0);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, err, sizeof(err));
        ck_assert_msg(rk != NULL, "rd_kafka_new: %s", err);
        return rk;
}

/* Polls until the counter reaches min or the deadline passes. */
static int await_count(gint *counter, int min, int timeout_ms) {
        int64_t end = g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
        while (g_atomic_int_get(counter) < min &&
               g_get_monotonic_time() < end)
                g_usleep(10 * 1000);
        return g_atomic_int_get(counter);
}

static rbk_conf_t *tls_env_conf(int port) {
        char *url = g_strdup_printf("kafka+ssl://127.0.0.1:%d", port);
        env_set("KAFKA_URL", url);
        g_free(url);
        set_ssl_env("KAFKA_", fx.ca1, fx.client, fx.client_key);
        char errstr[512] = "";
        rbk_conf_t *c = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        ck_assert_msg(c != NULL, "%s", errstr);
        return c;
}

/* The broker's certificate names another host, but the pinned CA signed it:
 * the handshake completes (only host-name verification is off) and the
 * broker sees the client certificate. */
START_TEST(tls_handshake_pinned_ca) {
        tls_srv_t srv;
        tls_srv_start(&srv, fx.broker, fx.broker_key);
        rbk_conf_t *c = tls_env_conf(srv.port);
        rd_kafka_t *rk = client_from(c, NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 0, NULL, &md, 2000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR)
                rd_kafka_metadata_destroy(md);
        ck_assert_msg(await_count(&srv.client_cert, 1, 15000) >= 1,
                      "handshakes: %d ok, %d failed, %d with a client "
                      "certificate",
                      g_atomic_int_get(&srv.ok), g_atomic_int_get(&srv.failed),
                      g_atomic_int_get(&srv.client_cert));
        ck_assert_int_eq(g_atomic_int_get(&srv.failed), 0);
        rd_kafka_destroy(rk);
        rbk_conf_destroy(c);
        tls_srv_stop(&srv);
}
END_TEST

/* A broker certificate from another CA is refused: verification is on. */
START_TEST(tls_handshake_other_ca_refused) {
        tls_srv_t srv;
        tls_srv_start(&srv, fx.rogue, fx.rogue_key);
        rbk_conf_t *c = tls_env_conf(srv.port);
        rd_kafka_t *rk = client_from(c, NULL);
        const struct rd_kafka_metadata *md = NULL;
        ck_assert_int_ne(rd_kafka_metadata(rk, 0, NULL, &md, 1000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_int_ge(await_count(&srv.failed, 2, 15000), 2);
        ck_assert_int_eq(g_atomic_int_get(&srv.ok), 0);
        rd_kafka_destroy(rk);
        rbk_conf_destroy(c);
        tls_srv_stop(&srv);
}
END_TEST

/* Control: with host-name verification back on, the same broker is
 * refused, so the first test really exercises a host-name mismatch. */
START_TEST(tls_handshake_hostname_check_would_fail) {
        tls_srv_t srv;
        tls_srv_start(&srv, fx.broker, fx.broker_key);
        rbk_conf_t *c = tls_env_conf(srv.port);
        const char *const extra[] = {"ssl.endpoint.identification.algorithm",
                                     "https", NULL};
        rd_kafka_t *rk = client_from(c, extra);
        const struct rd_kafka_metadata *md = NULL;
        ck_assert_int_ne(rd_kafka_metadata(rk, 0, NULL, &md, 1000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_int_ge(await_count(&srv.failed, 2, 15000), 2);
        ck_assert_int_eq(g_atomic_int_get(&srv.ok), 0);
        rd_kafka_destroy(rk);
        rbk_conf_destroy(c);
        tls_srv_stop(&srv);
}
END_TEST

static Suite *suite(void) {
        /* The stand-in broker writes to sockets the client may have closed
         * already (a refused handshake): that must not kill the runner. */
        signal(SIGPIPE, SIG_IGN);
        fixtures_init();
        atexit(fixtures_free);
        Suite *s = suite_create("env");
        TCase *tc = tcase_create("url_table");
        tcase_add_checked_fixture(tc, env_reset, NULL);
        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, url_table, 0, (int)G_N_ELEMENTS(url_cases));
        tcase_add_test(tc, url_parser_contract);
        suite_add_tcase(s, tc);

        tc = tcase_create("pem");
        tcase_add_checked_fixture(tc, env_reset, NULL);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, ssl_full_profile);
        tcase_add_test(tc, ssl_ca_only);
        tcase_add_test(tc, ssl_two_cas_and_rsa_traditional_key);
        tcase_add_test(tc, ssl_ec_traditional_key_with_parameters);
        tcase_add_test(tc, ssl_escaped_newlines);
        tcase_add_test(tc, ssl_bad_trusted_cert);
        tcase_add_test(tc, ssl_bad_client_cert_and_key);
        tcase_add_test(tc, plain_ignores_certs);
        tcase_add_test(tc, openssl_error_queue_left_empty);
        suite_add_tcase(s, tc);

        tc = tcase_create("prefix_and_apply");
        tcase_add_checked_fixture(tc, env_reset, NULL);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, topic_prefix);
        tcase_add_test(tc, alternate_prefix);
        tcase_add_test(tc, apply_env_is_all_or_nothing);
        suite_add_tcase(s, tc);

        tc = tcase_create("tls_handshake");
        tcase_add_checked_fixture(tc, env_reset, NULL);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, tls_handshake_pinned_ca);
        tcase_add_test(tc, tls_handshake_other_ca_refused);
        tcase_add_test(tc, tls_handshake_hostname_check_would_fail);
        suite_add_tcase(s, tc);
        return s;
}

RBK_TEST_MAIN()
