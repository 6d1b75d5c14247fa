/* Configuration from the Heroku-style environment: KAFKA_URL,
 * KAFKA_TRUSTED_CERT, KAFKA_CLIENT_CERT, KAFKA_CLIENT_CERT_KEY, KAFKA_PREFIX
 * (or the same names under another prefix). Everything is parsed and
 * validated first (env_parse.c), then set, so a failure leaves the
 * configuration as it was. */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "env.h"
#include "internal.h"

#define RBK__ENV_PREFIX_MAX 100 /* longest KAFKA_PREFIX accepted */

/* Frees a string that may hold key material, wiping it first. */
static void free_secret(char *s) {
        if (s) {
                OPENSSL_cleanse(s, strlen(s));
                g_free(s);
        }
}

/* getenv() with "" treated as unset. */
static const char *env_get(const char *name) {
        const char *v = getenv(name);
        return v && *v ? v : NULL;
}

/* An expired client certificate can never connect: every broker refuses it
 * in the handshake with an alert that does not say why ("certificate
 * unknown"). Refused here, naming the variable and the date. A certificate
 * not yet valid is left to the brokers (clocks may be a little apart). */
static rbk_err_t check_not_expired(const char *var, X509 *cert, char *errstr,
                                   size_t errstr_size) {
        const ASN1_TIME *na = X509_get0_notAfter(cert);
        if (X509_cmp_current_time(na) >= 0)
                return RBK_OK;
        struct tm tm;
        char when[64] = "an unreadable date";
        if (ASN1_TIME_to_tm(na, &tm) == 1)
                strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
        ERR_clear_error();
        return rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                           "%s expired on %s (brokers refuse it in the TLS "
                           "handshake; the cluster's current client "
                           "certificate is needed)",
                           var, when);
}

static rbk_err_t check_prefix(const char *var, const char *v, char *errstr,
                              size_t errstr_size) {
        size_t n = strlen(v);
        if (n > RBK__ENV_PREFIX_MAX)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_CONF,
                                   "%s is longer than %d characters", var,
                                   RBK__ENV_PREFIX_MAX);
        for (size_t i = 0; i < n; i++) {
                char ch = v[i];
                if (!g_ascii_isalnum(ch) && ch != '.' && ch != '_' &&
                    ch != '-')
                        return rbk__seterr(
                            errstr, errstr_size, RBK_ERR_CONF,
                            "%s contains an illegal character at position "
                            "%zu (only letters, digits, '.', '_' and '-' are "
                            "allowed in topic and group names)",
                            var, i + 1);
        }
        return RBK_OK;
}

rbk_err_t rbk_conf_apply_env(rbk_conf_t *conf, const char *var_prefix,
                             char *errstr, size_t errstr_size) {
        if (!conf)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "conf is NULL");
        const char *vp = var_prefix ? var_prefix : RBK__ENV_DEFAULT_PREFIX;
        char *v_url = g_strconcat(vp, "URL", NULL);
        char *v_ca = g_strconcat(vp, "TRUSTED_CERT", NULL);
        char *v_cert = g_strconcat(vp, "CLIENT_CERT", NULL);
        char *v_key = g_strconcat(vp, "CLIENT_CERT_KEY", NULL);
        char *v_prefix = g_strconcat(vp, "PREFIX", NULL);
        char *bootstrap = NULL, *ca = NULL, *cert = NULL, *key = NULL;
        STACK_OF(X509) *certs = NULL;
        EVP_PKEY *pkey = NULL;
        int ssl = 0;
        rbk_err_t err;

        err = rbk__env_parse_urls(v_url, getenv(v_url), &bootstrap, &ssl,
                                  errstr, errstr_size);
        if (err)
                goto done;

        const char *prefix = env_get(v_prefix);
        if (prefix &&
            (err = check_prefix(v_prefix, prefix, errstr, errstr_size)))
                goto done;

        if (ssl) {
                const char *e_ca = env_get(v_ca);
                const char *e_cert = env_get(v_cert);
                const char *e_key = env_get(v_key);
                if (!e_ca) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s uses kafka+ssl:// but %s is not "
                                          "set (the CA certificate that "
                                          "signed the brokers' certificates)",
                                          v_url, v_ca);
                        goto done;
                }
                if (e_cert && !e_key) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s is set but %s is not (a client "
                                          "certificate needs its private key)",
                                          v_cert, v_key);
                        goto done;
                }
                if (e_key && !e_cert) {
                        err = rbk__seterr(errstr, errstr_size, RBK_ERR_PEM,
                                          "%s is set but %s is not (a private "
                                          "key needs its client certificate)",
                                          v_key, v_cert);
                        goto done;
                }
                ca = rbk__pem_normalize(e_ca, strlen(e_ca));
                err = rbk__pem_parse_certs(v_ca, ca, strlen(ca), NULL, NULL,
                                           errstr, errstr_size);
                if (err)
                        goto done;
                if (e_cert) {
                        int n = 0;
                        cert = rbk__pem_normalize(e_cert, strlen(e_cert));
                        err = rbk__pem_parse_certs(v_cert, cert, strlen(cert),
                                                   &certs, &n, errstr,
                                                   errstr_size);
                        if (err)
                                goto done;
                        if (n != 1) {
                                err = rbk__seterr(
                                    errstr, errstr_size, RBK_ERR_PEM,
                                    "%s holds %d certificates; expected "
                                    "exactly one (the client certificate)",
                                    v_cert, n);
                                goto done;
                        }
                        err = check_not_expired(v_cert, sk_X509_value(certs, 0),
                                                errstr, errstr_size);
                        if (err)
                                goto done;
                        key = rbk__pem_normalize(e_key, strlen(e_key));
                        err = rbk__pem_parse_key(v_key, key, strlen(key),
                                                 &pkey, errstr, errstr_size);
                        if (err)
                                goto done;
                        int match = X509_check_private_key(
                            sk_X509_value(certs, 0), pkey);
                        ERR_clear_error();
                        if (match != 1) {
                                err = rbk__seterr(errstr, errstr_size,
                                                  RBK_ERR_PEM,
                                                  "%s does not match %s", v_key,
                                                  v_cert);
                                goto done;
                        }
                }
        }

        /* Everything is valid: now change the configuration. */
        rbk__conf_set_raw(conf, "bootstrap.servers", bootstrap);
        if (ssl) {
                rbk__conf_set_raw(conf, "security.protocol", "ssl");
                rbk__conf_set_raw(conf, "ssl.ca.pem", ca);
                if (cert) {
                        rbk__conf_set_raw(conf, "ssl.certificate.pem", cert);
                        rbk__conf_set_raw(conf, "ssl.key.pem", key);
                }
                rbk__conf_set_raw(conf, "enable.ssl.certificate.verification",
                                  "true");
                rbk__conf_set_raw(conf, "ssl.endpoint.identification.algorithm",
                                  "none");
        } else {
                rbk__conf_set_raw(conf, "security.protocol", "plaintext");
        }
        if (prefix)
                rbk__conf_set_raw(conf, "rbk.prefix", prefix);
        err = RBK_OK;

done:
        if (certs)
                sk_X509_pop_free(certs, X509_free);
        EVP_PKEY_free(pkey);
        ERR_clear_error();
        g_free(bootstrap);
        g_free(ca);
        g_free(cert);
        free_secret(key);
        g_free(v_url);
        g_free(v_ca);
        g_free(v_cert);
        g_free(v_key);
        g_free(v_prefix);
        return err;
}

rbk_conf_t *rbk_conf_from_env(const char *var_prefix, char *errstr,
                              size_t errstr_size) {
        rbk_conf_t *conf = rbk_conf_new();
        if (!conf) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                            "out of memory");
                return NULL;
        }
        if (rbk_conf_apply_env(conf, var_prefix, errstr, errstr_size)) {
                rbk_conf_destroy(conf);
                return NULL;
        }
        return conf;
}
