/**
 * @file robustkafka/msgid.h
 * @brief The message id header every produced message carries.
 *
 * Header `rbk-id`, value in text: 16 lower-case hex digits of the producer
 * instance id (random, chosen when a producer is created), a '-', and the
 * decimal sequence number of the message within that producer instance
 * (starting at 1, counting across all partitions). Example:
 * `9f86d081884c7d65-42`. An `rbk-id` value in any other form is a
 * caller-supplied id. docs/message-ids.md has the details and the cost.
 */
#ifndef ROBUSTKAFKA_MSGID_H
#define ROBUSTKAFKA_MSGID_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The header name of the message id. */
#define RBK_MSGID_HEADER "rbk-id"
/** Header set on a message re-sent after a fatal-error recovery whose first
 * attempt was possibly persisted: a duplicate with the same id may exist. */
#define RBK_RESENT_HEADER "rbk-resent"
/** Longest formatted id: 16 + 1 + 20 digits, plus the NUL. */
#define RBK_MSGID_STR_SIZE 38
/** Longest caller-supplied id accepted, in bytes. */
#define RBK_MSGID_MAX_LEN 256

/** A parsed message id. */
typedef struct rbk_msgid_s {
        uint64_t producer_id; /**< Random per producer instance; never 0. */
        uint64_t seq;         /**< 1, 2, 3, ... within the producer instance. */
} rbk_msgid_t;

/**
 * @brief Formats an id as the header value.
 * @param id the id.
 * @param buf output, at least RBK_MSGID_STR_SIZE bytes for any id.
 * @param size size of @p buf.
 * @returns the length written (without NUL), or -1 if @p buf is too small or
 * an argument is NULL.
 * Thread-safety: safe from any thread.
 */
RBK_API int rbk_msgid_format(const rbk_msgid_t *id, char *buf, size_t size);

/**
 * @brief Parses a header value in the library's format.
 * @param value the bytes (need not be NUL-terminated).
 * @param len number of bytes in @p value.
 * @param out receives the parsed id.
 * @returns RBK_OK, or RBK_ERR_INVALID_ARG if the value is not in the format
 * (a caller-supplied or garbled id).
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_msgid_parse(const void *value, size_t len,
                                  rbk_msgid_t *out);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_MSGID_H */
