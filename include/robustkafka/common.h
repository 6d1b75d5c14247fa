/**
 * @file robustkafka/common.h
 * @brief Version, visibility and error codes shared by every librobustkafka header.
 *
 * Include <robustkafka.h> rather than this file directly.
 */
#ifndef ROBUSTKAFKA_COMMON_H
#define ROBUSTKAFKA_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @name Version
 * The Makefile reads these three lines to name the shared library. */
/**@{*/
#define RBK_VERSION_MAJOR 0 /**< Incremented on ABI breaks (and the soname with it). */
#define RBK_VERSION_MINOR 1 /**< Incremented on additions. */
#define RBK_VERSION_PATCH 0 /**< Incremented on fixes. */
/** The version as one number, 0xMMmmpp: compare with `>=` in preprocessor checks. */
#define RBK_VERSION_NUM \
        ((RBK_VERSION_MAJOR << 16) | (RBK_VERSION_MINOR << 8) | RBK_VERSION_PATCH)
/**@}*/

/** Marks a public symbol; everything else is hidden (`-fvisibility=hidden`). */
#if defined(__GNUC__) || defined(__clang__)
#define RBK_API __attribute__((visibility("default")))
#else
#define RBK_API
#endif

/**
 * @brief The runtime library version, as RBK_VERSION_NUM.
 * @returns 0xMMmmpp of the library actually loaded (may differ from the header's).
 * Thread-safety: safe from any thread.
 */
RBK_API int rbk_version(void);

/**
 * @brief The runtime library version as a string, "MAJOR.MINOR.PATCH".
 * @returns a static string; never NULL; do not free.
 * Thread-safety: safe from any thread.
 */
RBK_API const char *rbk_version_str(void);

/**
 * @brief Error codes returned by every function of the library.
 *
 * 0 is success, every error is negative. Codes are only ever appended, never
 * renumbered (the ABI policy in docs/abi.md).
 */
typedef enum rbk_err_t {
        RBK_OK = 0,                      /**< Success. */
        RBK_ERR_INVALID_ARG = -1,        /**< A NULL or invalid argument. */
        RBK_ERR_NOMEM = -2,              /**< Out of memory. */
        RBK_ERR_CONF = -3,               /**< Invalid configuration property or value. */
        RBK_ERR_UNSAFE_CONF = -4,        /**< A setting that defeats a safety guarantee, refused. */
        RBK_ERR_URL = -5,                /**< Malformed broker URL (KAFKA_URL). */
        RBK_ERR_PEM = -6,                /**< Malformed or mismatching PEM certificate or key. */
        RBK_ERR_INVALID_TOPIC = -7,      /**< Topic name empty, too long or with illegal characters. */
        RBK_ERR_MSG_SIZE_TOO_LARGE = -8, /**< Message larger than message.max.bytes. */
        RBK_ERR_QUEUE_FULL = -9,         /**< Producer queue stayed full for the whole wait. */
        RBK_ERR_TIMED_OUT = -10,         /**< A bounded wait expired. */
        RBK_ERR_SHUTDOWN = -11,          /**< The client or registry is shut down. */
        RBK_ERR_STATE = -12,             /**< The call is not valid in the object's current state. */
        RBK_ERR_EXISTS = -13,            /**< The named object exists with a different configuration. */
        RBK_ERR_NOT_FOUND = -14,         /**< Unknown name, topic, partition or incident. */
        RBK_ERR_FORKED = -15,            /**< Handle used in a forked child; create clients after fork. */
        RBK_ERR_FATAL = -16,             /**< Unrecoverable client error (recovery gave up). */
        RBK_ERR_KAFKA = -17,             /**< librdkafka reported an error; the message says which. */
        RBK_ERR_DELIVERY = -18,          /**< A message could not be delivered. */
        RBK_ERR_OUT_OF_RANGE = -19,      /**< An offset outside the partition's watermarks. */
        RBK_ERR_NOT_QUARANTINED = -20,   /**< Resolve asked for a partition that is not quarantined. */
        RBK_ERR_WOULD_BLOCK = -21,       /**< The call would block on a thread that must not block. */
        RBK_ERR_STORE = -22,             /**< A dedup store failed. */
        RBK_ERR_TOO_MANY_HEADERS = -23,  /**< More headers than the library accepts on one message. */
        RBK_ERR_ALREADY_RESOLVED = -24,  /**< The incident was already resolved. */
        RBK_ERR_IO = -25,                /**< An operating-system I/O call failed. */
        RBK_ERR__END = -26               /**< Not an error: one below the last code. */
} rbk_err_t;

/**
 * @brief A human-readable description of an error code.
 * @returns a static string; never NULL; "Unknown error" for codes not listed.
 * Thread-safety: safe from any thread.
 */
RBK_API const char *rbk_err2str(rbk_err_t err);

/**
 * @brief The symbolic name of an error code, e.g. "RBK_ERR_QUEUE_FULL".
 * @returns a static string; never NULL; "RBK_ERR_UNKNOWN" for codes not listed.
 * Thread-safety: safe from any thread.
 */
RBK_API const char *rbk_err2name(rbk_err_t err);

/**
 * @brief Whether retrying the same call later may succeed.
 * @returns 1 for transient errors (queue full, timed out, Kafka transport
 * errors), 0 otherwise (invalid input, unsafe configuration, shutdown, fatal).
 * Thread-safety: safe from any thread.
 */
RBK_API int rbk_err_is_retriable(rbk_err_t err);

/**
 * @brief Whether the error means the client cannot be used any more.
 * @returns 1 for RBK_ERR_FATAL, RBK_ERR_SHUTDOWN and RBK_ERR_FORKED, else 0.
 * Thread-safety: safe from any thread.
 */
RBK_API int rbk_err_is_fatal(rbk_err_t err);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_COMMON_H */
