/* libFuzzer target: the PEM parsers (rbk__pem_normalize,
 * rbk__pem_parse_certs, rbk__pem_parse_key). The first byte chooses the
 * parser (and whether "\n" escapes are normalised first); the rest is the
 * variable's value. Invariants beyond "no crash, no leak, no UB":
 *  - the result is RBK_OK or RBK_ERR_PEM, the message names the variable and
 *    never contains a PEM boundary ("-----");
 *  - on success the certificate count is at least one and matches the stack;
 *  - OpenSSL's error queue is empty afterwards. */
#include <openssl/err.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_msg(rbk_err_t err, const char *var, const char *errstr) {
        if (err == RBK_OK)
                return;
        if (err != RBK_ERR_PEM || strncmp(errstr, var, strlen(var)) ||
            strstr(errstr, "-----"))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        int mode = data[0] & 3;
        const char *pem = (const char *)data + 1;
        size_t len = size - 1;
        char *norm = NULL;
        if (mode >= 2) {
                norm = rbk__pem_normalize(pem, len);
                if (!norm || strlen(norm) > len)
                        abort();
                pem = norm;
                len = strlen(norm);
        }
        char errstr[512];
        errstr[0] = '\0';
        if (mode == 0 || mode == 2) {
                STACK_OF(X509) *sk = NULL;
                int n = -1;
                const char *var = "KAFKA_TRUSTED_CERT";
                rbk_err_t err = rbk__pem_parse_certs(var, pem, len, &sk, &n,
                                                     errstr, sizeof(errstr));
                check_msg(err, var, errstr);
                if (err == RBK_OK) {
                        if (n < 1 || !sk || sk_X509_num(sk) != n)
                                abort();
                        sk_X509_pop_free(sk, X509_free);
                } else if (sk || n != -1) {
                        abort();
                }
        } else {
                EVP_PKEY *k = NULL;
                const char *var = "KAFKA_CLIENT_CERT_KEY";
                rbk_err_t err = rbk__pem_parse_key(var, pem, len, &k, errstr,
                                                   sizeof(errstr));
                check_msg(err, var, errstr);
                if ((err == RBK_OK) != (k != NULL))
                        abort();
                EVP_PKEY_free(k);
        }
        if (ERR_peek_error() != 0)
                abort();
        g_free(norm);
        return 0;
}
