/**
 * @file robustkafka/testing.h
 * @brief A Kafka cluster inside the test process, with fault injection, for
 * the application's own test suites.
 *
 * A thin helper over librdkafka's mock cluster (`rdkafka_mock.h`): brokers
 * listen on 127.0.0.1, speak the Kafka protocol to any client (this library,
 * librdkafka, kcat, other processes), and let a test move partition leaders,
 * take brokers down, push request errors and delays, and raise fatal
 * producer errors. It models no replication, no transactions and, unless a
 * `transactional.id` is used, no idempotent sequence checks (docs/testing.md
 * lists what it does and does not model).
 *
 * Not for production: include it from test code only. It does not include
 * librdkafka's headers; Kafka error codes are passed as plain ints (the
 * values of librdkafka's `rd_kafka_resp_err_t`, which are Kafka's protocol
 * error codes for positive values).
 */
#ifndef ROBUSTKAFKA_TESTING_H
#define ROBUSTKAFKA_TESTING_H

#include "common.h"
#include "producer.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque in-process test cluster. */
typedef struct rbk_testcluster_s rbk_testcluster_t;

/** librdkafka's mock cluster (`rd_kafka_mock_cluster_t` in
 * `rdkafka_mock.h`), declared here without including librdkafka. */
struct rd_kafka_mock_cluster_s;

/** @name Kafka request types (ApiKey) for the request fault functions. */
/**@{*/
#define RBK_TEST_API_PRODUCE 0           /**< Produce */
#define RBK_TEST_API_FETCH 1             /**< Fetch */
#define RBK_TEST_API_LIST_OFFSETS 2      /**< ListOffsets */
#define RBK_TEST_API_METADATA 3          /**< Metadata */
#define RBK_TEST_API_OFFSET_COMMIT 8     /**< OffsetCommit */
#define RBK_TEST_API_OFFSET_FETCH 9      /**< OffsetFetch */
#define RBK_TEST_API_FIND_COORDINATOR 10 /**< FindCoordinator */
#define RBK_TEST_API_JOIN_GROUP 11       /**< JoinGroup */
#define RBK_TEST_API_HEARTBEAT 12        /**< Heartbeat */
#define RBK_TEST_API_SYNC_GROUP 14       /**< SyncGroup */
#define RBK_TEST_API_INIT_PRODUCER_ID 22 /**< InitProducerId */
/**@}*/

/**
 * @brief Starts a cluster of @p brokers brokers (ids 1 to @p brokers) on
 * loopback ports chosen by the system.
 *
 * The brokers are threads of the process that created the cluster: in a
 * forked child every call on it fails at once (RBK_ERR_FORKED, or NULL for
 * a pointer) and rbk_testcluster_destroy() frees nothing.
 * @param brokers number of brokers, 1 to 32.
 * @param errstr buffer for the reason of a failure.
 * @param errstr_size size of @p errstr.
 * @returns the cluster, freed with rbk_testcluster_destroy(); NULL with the
 * reason in @p errstr.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_testcluster_t *rbk_testcluster_new(int brokers, char *errstr,
                                               size_t errstr_size);

/**
 * @brief Stops the cluster and frees it. Clients still connected see their
 * brokers disappear. Accepts NULL. In a forked child it frees nothing.
 * Thread-safety: no other call on @p tc may run concurrently.
 */
RBK_API void rbk_testcluster_destroy(rbk_testcluster_t *tc);

/**
 * @brief The cluster's bootstrap list, `host:port,host:port,...`, for
 * `bootstrap.servers`.
 * @returns a string owned by @p tc, valid until rbk_testcluster_destroy();
 * NULL if @p tc is NULL or in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API const char *rbk_testcluster_bootstrap(rbk_testcluster_t *tc);

/**
 * @brief librdkafka's mock cluster behind @p tc, for the faults this header
 * does not wrap (`rdkafka_mock.h`: rd_kafka_mock_broker_set_rtt(),
 * rd_kafka_mock_topic_set_error(), rd_kafka_mock_push_request_errors(),
 * ...). Include `<librdkafka/rdkafka.h>` and `<librdkafka/rdkafka_mock.h>`
 * to use it.
 * @param tc the cluster.
 * @returns the mock cluster, owned by @p tc and valid until
 * rbk_testcluster_destroy(); NULL if @p tc is NULL or in a forked child.
 * Thread-safety: safe from any thread, as librdkafka's mock functions are.
 */
RBK_API struct rd_kafka_mock_cluster_s *
rbk_testcluster_mock(rbk_testcluster_t *tc);

/**
 * @brief Creates a topic (topics are also auto-created on first use with the
 * mock's defaults).
 * @param tc the cluster.
 * @param name full topic name (no prefix is applied).
 * @param partitions partition count, at least 1.
 * @param replication replication factor, 1 to the broker count.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG or RBK_ERR_KAFKA (the reason logged
 * nowhere; check the arguments); RBK_ERR_FORKED in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_create_topic(rbk_testcluster_t *tc,
                                               const char *name, int partitions,
                                               int replication);

/**
 * @brief Moves the leader of a partition to @p broker_id (-1: no leader).
 * Clients find out through their next metadata refresh, as after a real
 * leader election.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG, RBK_ERR_NOT_FOUND (unknown topic or
 * partition), RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_set_leader(rbk_testcluster_t *tc,
                                             const char *topic,
                                             int32_t partition, int broker_id);

/**
 * @brief Takes a broker down: its connections are closed and new ones
 * refused. Leaders and coordinators do not move by themselves: move them with
 * rbk_testcluster_set_leader() and rbk_testcluster_set_coordinator().
 * @returns RBK_OK, RBK_ERR_INVALID_ARG, RBK_ERR_NOT_FOUND (unknown broker),
 * RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_broker_down(rbk_testcluster_t *tc,
                                              int broker_id);

/**
 * @brief Brings a broker taken down back up.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG, RBK_ERR_NOT_FOUND, RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_broker_up(rbk_testcluster_t *tc,
                                            int broker_id);

/**
 * @brief Makes the next @p cnt requests of type @p api_key, to any broker,
 * fail with @p kafka_err (for example 6, NOT_LEADER_FOR_PARTITION, on
 * RBK_TEST_API_PRODUCE). The error applies to the whole request.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG or RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_push_request_errors(rbk_testcluster_t *tc,
                                                      int api_key, size_t cnt,
                                                      int kafka_err);

/**
 * @brief As rbk_testcluster_push_request_errors() for Produce requests:
 * the next @p cnt Produce requests fail with @p kafka_err.
 * @returns as rbk_testcluster_push_request_errors().
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_push_produce_errors(rbk_testcluster_t *tc,
                                                      size_t cnt,
                                                      int kafka_err);

/**
 * @brief Makes the next @p cnt requests of type @p api_key handled by
 * broker @p broker_id fail with @p kafka_err (0 to succeed), each answered
 * after @p rtt_ms.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG, RBK_ERR_NOT_FOUND, RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_broker_push_request_errors(
    rbk_testcluster_t *tc, int broker_id, int api_key, size_t cnt,
    int kafka_err, int rtt_ms);

/**
 * @brief Delays the responses to the next @p count Produce requests that
 * broker @p broker_id handles by @p rtt_ms each; the requests succeed. With
 * @p rtt_ms above the client's `socket.timeout.ms` the client times the
 * request out and retries it, and the mock (which checks no sequence
 * numbers) writes the batch twice: the way to make real duplicates.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG, RBK_ERR_NOT_FOUND, RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_delay_produce(rbk_testcluster_t *tc,
                                                int broker_id, int rtt_ms,
                                                size_t count);

/**
 * @brief Forgets every pushed error of request type @p api_key.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG or RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_clear_request_errors(rbk_testcluster_t *tc,
                                                       int api_key);

/**
 * @brief Sets the coordinator of a consumer group or transactional id.
 * @param tc the cluster.
 * @param key_type "group" or "transaction".
 * @param key the group name or transactional id.
 * @param broker_id the broker that becomes coordinator.
 * @returns RBK_OK, RBK_ERR_INVALID_ARG, RBK_ERR_NOT_FOUND (unknown broker),
 * RBK_ERR_KAFKA, RBK_ERR_FORKED.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testcluster_set_coordinator(rbk_testcluster_t *tc,
                                                  const char *key_type,
                                                  const char *key,
                                                  int broker_id);

/**
 * @brief Raises a fatal error on the producer's current librdkafka instance,
 * as a broker-side idempotence failure would (librdkafka's
 * `rd_kafka_test_fatal_error()`). The producer recovers from it as from a
 * real one (docs/producer.md).
 * @param p the producer.
 * @param kafka_err the cause, e.g. 45 (OUT_OF_ORDER_SEQUENCE_NUMBER).
 * @param reason free text, shown in the cause.
 * @returns RBK_OK; RBK_ERR_INVALID_ARG; RBK_ERR_STATE when the producer is
 * closed, has given up, is already recovering or its instance already has a
 * fatal error; RBK_ERR_FORKED in a forked child.
 * Thread-safety: safe from any thread.
 */
RBK_API rbk_err_t rbk_testing_fatal_error(rbk_producer_t *p, int kafka_err,
                                          const char *reason);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_TESTING_H */
