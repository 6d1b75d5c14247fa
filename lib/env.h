/* Heroku-style environment: the parsers behind rbk_conf_from_env() and
 * rbk_conf_apply_env(), exposed (rbk__ prefix, never exported) so that the
 * unit tests and the fuzz targets can reach them. Never installed. */
#ifndef RBK_ENV_H
#define RBK_ENV_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

#include "robustkafka.h"

/* The variable prefix when the caller gives none. */
#define RBK__ENV_DEFAULT_PREFIX "KAFKA_"

/* Parses a broker URL list: comma-separated `kafka://host:port` or
 * `kafka+ssl://host:port` entries (whitespace around entries ignored, one
 * scheme for all entries, IPv6 hosts in brackets). var names the variable in
 * messages; value may be NULL (unset). On success *bootstrap is
 * "host:port,..." (g_free) and *ssl is 1 for kafka+ssl, else 0; on error both
 * are untouched and RBK_ERR_URL is returned with a message naming var, the
 * 1-based entry and the problem. The message never quotes host names, user
 * information or anything after the scheme. */
rbk_err_t rbk__env_parse_urls(const char *var, const char *value,
                              char **bootstrap, int *ssl, char *errstr,
                              size_t errstr_size);

/* Returns a copy of a PEM variable's value (g_free) with literal "\n"
 * escapes turned into newlines when the value holds no real newline
 * (some tools flatten multi-line variables that way); otherwise a plain
 * copy. len bytes of s are read; the result is NUL-terminated. */
char *rbk__pem_normalize(const char *s, size_t len);

/* Parses len bytes of one or more PEM certificates. The text must be only
 * "-----BEGIN CERTIFICATE-----" blocks separated by whitespace: anything
 * else (text between or after blocks, truncated blocks, other block types,
 * undecodable certificates) is RBK_ERR_PEM with a message naming var and
 * the block number, never quoting the content. At least one certificate is
 * required. certs (may be NULL) receives the certificates (free with
 * sk_X509_pop_free(*certs, X509_free)); ncerts (may be NULL) their number.
 * OpenSSL's error queue is left empty. */
rbk_err_t rbk__pem_parse_certs(const char *var, const char *pem, size_t len,
                               STACK_OF(X509) **certs, int *ncerts,
                               char *errstr, size_t errstr_size);

/* Parses len bytes holding exactly one unencrypted PEM private key
 * ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"; an "EC PARAMETERS"
 * block before it is allowed). Same strictness and error rules as
 * rbk__pem_parse_certs(); passphrase-protected keys are refused, never
 * prompted for. key (may be NULL) receives the key (EVP_PKEY_free). */
rbk_err_t rbk__pem_parse_key(const char *var, const char *pem, size_t len,
                             EVP_PKEY **key, char *errstr, size_t errstr_size);

#endif /* RBK_ENV_H */
