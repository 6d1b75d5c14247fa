/**
 * @file robustkafka/conf.h
 * @brief Configuration: robust defaults, refusal of unsafe settings, the
 * Heroku-style environment, redacted dumps.
 *
 * A configuration is a string-keyed object. Any librdkafka property passes
 * through by name; properties starting with `rbk.` are the library's own
 * (docs/configuration.md lists them all). The robust defaults are applied
 * before the user's settings, and the *effective* configuration (aliases,
 * default topic configuration and all) is validated when a client is created.
 */
#ifndef ROBUSTKAFKA_CONF_H
#define ROBUSTKAFKA_CONF_H

#include "common.h"
#include "event.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque configuration object. */
typedef struct rbk_conf_s rbk_conf_t;

/** Which kind of client a configuration is for. */
typedef enum rbk_client_type_t {
        RBK_PRODUCER = 1, /**< The high-level idempotent producer. */
        RBK_CONSUMER = 2  /**< The high-level group consumer. */
} rbk_client_type_t;

/**
 * @brief A new, empty configuration (robust defaults are applied later, when
 * a client is created).
 * @returns the object, freed with rbk_conf_destroy(); NULL only on OOM.
 * Thread-safety: the object is not shared; use it from one thread at a time.
 */
RBK_API rbk_conf_t *rbk_conf_new(void);

/**
 * @brief Frees a configuration. Accepts NULL.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API void rbk_conf_destroy(rbk_conf_t *conf);

/**
 * @brief A deep copy of a configuration, callbacks included.
 * @returns the copy, freed with rbk_conf_destroy(); NULL if @p conf is NULL.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API rbk_conf_t *rbk_conf_dup(const rbk_conf_t *conf);

/**
 * @brief Sets one property.
 *
 * `rbk.*` names must be known properties with valid values. librdkafka names
 * are checked against librdkafka (unknown names and bad values are refused
 * here). Some unsafe values are refused immediately (`auto.offset.reset`
 * other than `error` can never be set); the effective configuration is checked
 * again when the client is created.
 *
 * @param conf the configuration.
 * @param name property name, e.g. "bootstrap.servers" or "rbk.prefix".
 * @param value the value as a string; NULL resets the property to its default.
 * @param errstr buffer for a message naming the problem (may be NULL).
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG (NULL conf or name), RBK_ERR_CONF
 * (unknown name, bad value), RBK_ERR_UNSAFE_CONF (refused setting). On error
 * the configuration is unchanged. The value of a secret property never
 * appears in @p errstr.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API rbk_err_t rbk_conf_set(rbk_conf_t *conf, const char *name,
                               const char *value, char *errstr,
                               size_t errstr_size);

/**
 * @brief Reads the value the user set for a property (not the defaults).
 * @param conf the configuration.
 * @param name the property name.
 * @param dest buffer for the value (NUL-terminated); may be NULL to ask for
 * the size.
 * @param dest_size in: size of @p dest; out: size needed including the NUL.
 * @returns RBK_OK, RBK_ERR_NOT_FOUND when the property was never set,
 * RBK_ERR_INVALID_ARG for NULL arguments.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API rbk_err_t rbk_conf_get(const rbk_conf_t *conf, const char *name,
                               char *dest, size_t *dest_size);

/**
 * @brief Builds a configuration from the Heroku-style environment.
 *
 * Reads `<prefix>URL`, `<prefix>TRUSTED_CERT`, `<prefix>CLIENT_CERT`,
 * `<prefix>CLIENT_CERT_KEY` and `<prefix>PREFIX`. `URL` is a comma-separated
 * list of `kafka://host:port` or `kafka+ssl://host:port`. With `kafka+ssl`,
 * TLS is on, the PEMs go straight into `ssl.ca.pem`, `ssl.certificate.pem`
 * and `ssl.key.pem`, certificate verification stays on against the pinned CA
 * and only host-name verification is turned off (docs/heroku.md). PEMs are
 * parsed here: a bad certificate or key, or a key that does not match the
 * certificate, is an error naming the variable.
 *
 * @param var_prefix prefix of the variable names; NULL means "KAFKA_" (use
 * e.g. "HEROKU_KAFKA_GRAY_" for a second cluster).
 * @param errstr buffer for a message naming the variable and the problem.
 * @param errstr_size size of @p errstr.
 * @returns a new configuration (free with rbk_conf_destroy()), or NULL with a
 * message naming the variable and the problem in @p errstr. Secrets never
 * appear in @p errstr.
 * Thread-safety: reads the environment; do not call setenv() concurrently.
 */
RBK_API rbk_conf_t *rbk_conf_from_env(const char *var_prefix, char *errstr,
                                      size_t errstr_size);

/**
 * @brief Applies the environment (as rbk_conf_from_env()) on top of an
 * existing configuration.
 * @returns RBK_OK, RBK_ERR_URL, RBK_ERR_PEM, RBK_ERR_CONF; on error @p conf is
 * unchanged.
 * Thread-safety: as rbk_conf_from_env().
 */
RBK_API rbk_err_t rbk_conf_apply_env(rbk_conf_t *conf, const char *var_prefix,
                                     char *errstr, size_t errstr_size);

/**
 * @brief Validates the effective configuration for a client type: robust
 * defaults + user settings, resolved through librdkafka (aliases, default
 * topic configuration), then checked against the safety rules.
 * @returns RBK_OK, RBK_ERR_CONF or RBK_ERR_UNSAFE_CONF with the reason and
 * the opt-out (if any) in @p errstr.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API rbk_err_t rbk_conf_validate(const rbk_conf_t *conf,
                                    rbk_client_type_t type, char *errstr,
                                    size_t errstr_size);

/**
 * @brief The effective configuration for a client type, one `name=value`
 * per line, sorted, with secrets (`ssl.key.pem`, `ssl.key.password`,
 * `sasl.password`, ...) shown as `[redacted]`.
 * @returns a string to free with rbk_free(), or NULL with the reason in
 * @p errstr if the configuration is invalid.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API char *rbk_conf_dump(const rbk_conf_t *conf, rbk_client_type_t type,
                            char *errstr, size_t errstr_size);

/**
 * @brief Sets the hook: the one callback through which failures reach the
 * application (see event.h for the events and the thread that calls it).
 * @param conf the configuration.
 * @param hook the callback, or NULL to remove it.
 * @param opaque passed as the last argument of @p hook.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API void rbk_conf_set_hook(rbk_conf_t *conf, rbk_hook_cb_t *hook,
                               void *opaque);

/**
 * @brief A log line from the library or from librdkafka, already redacted.
 * @param level syslog level (0 emergency .. 7 debug).
 * @param facility short origin, e.g. "rbk" or librdkafka's facility.
 * @param line the message.
 * @param opaque as given to rbk_conf_set_log_cb().
 * Called from library threads and librdkafka's threads; must not block long.
 */
typedef void(rbk_log_cb_t)(int level, const char *facility, const char *line,
                           void *opaque);

/**
 * @brief Routes logs to the application; without it, warnings and errors go
 * to stderr.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API void rbk_conf_set_log_cb(rbk_conf_t *conf, rbk_log_cb_t *log_cb,
                                 void *opaque);

/**
 * @brief Statistics callback: librdkafka's statistics and the library's own
 * counters, every `statistics.interval.ms` (a librdkafka property, 0 by
 * default: set it, e.g. to 60000, or the callback never runs).
 *
 * Called on the client's poll thread: a producer's internal poll thread (the
 * one that runs delivery callbacks), a consumer's poll thread (inside
 * rbk_consumer_run(), rbk_consumer_poll() or rbk_consumer_close(), or the
 * thread rbk_consumer_start() made). It must not block long: the client
 * delivers nothing else meanwhile.
 * @param librdkafka_json librdkafka's statistics object, exactly as
 * librdkafka emitted it (see librdkafka's STATISTICS.md). Valid only during
 * the call.
 * @param rbk_json the client's counters, as rbk_producer_stats_json() or
 * rbk_consumer_stats_json() return them at that moment. Valid only during
 * the call.
 * @param opaque as given to rbk_conf_set_stats_cb().
 */
typedef void(rbk_stats_cb_t)(const char *librdkafka_json, const char *rbk_json,
                             void *opaque);

/**
 * @brief Sets the statistics callback of clients created from @p conf. The
 * latest librdkafka statistics also feed the per-broker figures of
 * rbk_producer_metrics() and rbk_consumer_metrics() and the broker check
 * of the health calls, with or without a callback.
 * @param conf the configuration.
 * @param cb the callback, or NULL to remove it.
 * @param opaque passed as the last argument of @p cb.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API void rbk_conf_set_stats_cb(rbk_conf_t *conf, rbk_stats_cb_t *cb,
                                   void *opaque);

/**
 * An opaque handle through which an OAUTHBEARER token refresh callback
 * hands its result back: valid only during the callback.
 */
typedef struct rbk_oauth_token_setter_s rbk_oauth_token_setter_t;

/**
 * @brief OAUTHBEARER token refresh callback (`sasl.mechanism=OAUTHBEARER`):
 * called when the client starts, before it connects, and again when the
 * token's lifetime is 80% spent. It must call rbk_oauthbearer_set_token()
 * or rbk_oauthbearer_set_token_failure() once, with @p setter, before it
 * returns.
 *
 * Called on a librdkafka background thread of the client (never on an
 * application thread, never concurrently for one client), for every
 * librdkafka instance the client runs: the producer's fresh instances
 * after a fatal error, the consumer, its dead-letter producer and its
 * control listener's clients.
 * @param oauthbearer_config the value of `sasl.oauthbearer.config` ("" when
 * not set).
 * @param setter where the result goes; valid only during the call.
 * @param opaque as given to rbk_conf_set_oauthbearer_token_refresh_cb().
 */
typedef void(rbk_oauthbearer_token_refresh_cb_t)(
    const char *oauthbearer_config, rbk_oauth_token_setter_t *setter,
    void *opaque);

/**
 * @brief Sets the OAUTHBEARER token refresh callback of clients created
 * from @p conf.
 * @param conf the configuration.
 * @param cb the callback, or NULL to remove it.
 * @param opaque passed as the last argument of @p cb.
 * Thread-safety: as rbk_conf_new().
 */
RBK_API void rbk_conf_set_oauthbearer_token_refresh_cb(
    rbk_conf_t *conf, rbk_oauthbearer_token_refresh_cb_t *cb, void *opaque);

/**
 * @brief Hands a token to the client (from a token refresh callback).
 * @param setter the callback's @p setter.
 * @param token the compact serialised token (a JWT); copied.
 * @param lifetime_ms when the token expires, in milliseconds since the
 * epoch.
 * @param principal the principal name the token is for; copied.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG (NULL argument, a malformed token,
 * a lifetime in the past) or RBK_ERR_STATE (the client does not use
 * OAUTHBEARER), the reason in @p errstr.
 * Thread-safety: only inside the callback that received @p setter.
 */
RBK_API rbk_err_t rbk_oauthbearer_set_token(rbk_oauth_token_setter_t *setter,
                                            const char *token,
                                            int64_t lifetime_ms,
                                            const char *principal,
                                            char *errstr, size_t errstr_size);

/**
 * @brief Tells the client that no token could be had; it logs @p reason,
 * fails connection attempts with it, and calls the refresh callback again
 * about 10 seconds later.
 * @param setter the callback's @p setter.
 * @param reason why (copied), not empty.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG (NULL or empty argument);
 * RBK_ERR_STATE (the client does not use OAUTHBEARER).
 * Thread-safety: only inside the callback that received @p setter.
 */
RBK_API rbk_err_t rbk_oauthbearer_set_token_failure(
    rbk_oauth_token_setter_t *setter, const char *reason);

/**
 * @brief Frees memory the library returned (dumps, JSON strings).
 * Accepts NULL.
 * Thread-safety: safe from any thread.
 */
RBK_API void rbk_free(void *ptr);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_CONF_H */
