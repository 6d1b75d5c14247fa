/* The public test helper: librdkafka's mock cluster behind a small API.
 *
 * Fork: a cluster records the process that created it. Its brokers are
 * threads of that process, so in a forked child every call fails at once
 * (RBK_ERR_FORKED, or NULL for a pointer) instead of waiting for a mock
 * thread that does not exist there, and destroy frees nothing. */
#include <string.h>

#include "internal.h" /* rdkafka.h first: rdkafka_mock.h needs it */
#include <librdkafka/rdkafka_mock.h>
#include "robustkafka/testing.h"

struct rbk_testcluster_s {
        rd_kafka_t *rk; /* the handle the mock cluster lives in */
        rd_kafka_mock_cluster_t *mc;
        int brokers;
        pid_t pid; /* the process that created it */
};

/* 1 when @tc is NULL or used in a forked child: no call may go on. */
static int rbk__tc_unusable(const rbk_testcluster_t *tc) {
        return !tc || rbk__forked(tc->pid);
}

/* The error of a call on an unusable @tc. */
static rbk_err_t rbk__tc_unusable_err(const rbk_testcluster_t *tc) {
        return tc ? RBK_ERR_FORKED : RBK_ERR_INVALID_ARG;
}

rbk_testcluster_t *rbk_testcluster_new(int brokers, char *errstr,
                                       size_t errstr_size) {
        if (brokers < 1 || brokers > 32) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "broker count %d is out of range (1 to 32)",
                            brokers);
                return NULL;
        }
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        char rderr[256];
        /* The handle only hosts the cluster: it never connects anywhere. */
        if (rd_kafka_conf_set(c, "log_level", "3", rderr, sizeof(rderr)) !=
            RD_KAFKA_CONF_OK) {
                rd_kafka_conf_destroy(c);
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA, "%s", rderr);
                return NULL;
        }
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, c, rderr, sizeof(rderr));
        if (!rk) {
                rd_kafka_conf_destroy(c);
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating the mock cluster's handle failed: %s",
                            rderr);
                return NULL;
        }
        rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
        if (!mc) {
                rd_kafka_destroy(rk);
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating the mock cluster failed");
                return NULL;
        }
        rbk_testcluster_t *tc = g_new0(rbk_testcluster_t, 1);
        tc->rk = rk;
        tc->mc = mc;
        tc->brokers = brokers;
        tc->pid = rbk__getpid();
        return tc;
}

void rbk_testcluster_destroy(rbk_testcluster_t *tc) {
        if (rbk__tc_unusable(tc))
                return; /* in a child: the brokers' threads are not here */
        rd_kafka_mock_cluster_destroy(tc->mc);
        rd_kafka_destroy(tc->rk);
        g_free(tc);
}

const char *rbk_testcluster_bootstrap(rbk_testcluster_t *tc) {
        return rbk__tc_unusable(tc) ? NULL
                                    : rd_kafka_mock_cluster_bootstraps(tc->mc);
}

rd_kafka_mock_cluster_t *rbk_testcluster_mock(rbk_testcluster_t *tc) {
        return rbk__tc_unusable(tc) ? NULL : tc->mc;
}

static rbk_err_t rbk__tc_err(rd_kafka_resp_err_t err) {
        switch (err) {
        case RD_KAFKA_RESP_ERR_NO_ERROR:
                return RBK_OK;
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        case RD_KAFKA_RESP_ERR__UNKNOWN_BROKER:
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
                return RBK_ERR_NOT_FOUND;
        case RD_KAFKA_RESP_ERR__INVALID_ARG:
                return RBK_ERR_INVALID_ARG;
        default:
                return RBK_ERR_KAFKA;
        }
}

static int rbk__tc_broker_ok(rbk_testcluster_t *tc, int broker_id) {
        return broker_id >= 1 && broker_id <= tc->brokers;
}

rbk_err_t rbk_testcluster_create_topic(rbk_testcluster_t *tc, const char *name,
                                       int partitions, int replication) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (!name || !*name || partitions < 1 || replication < 1 ||
            replication > tc->brokers)
                return RBK_ERR_INVALID_ARG;
        return rbk__tc_err(
            rd_kafka_mock_topic_create(tc->mc, name, partitions, replication));
}

rbk_err_t rbk_testcluster_set_leader(rbk_testcluster_t *tc, const char *topic,
                                     int32_t partition, int broker_id) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (!topic || partition < 0 ||
            (broker_id != -1 && !rbk__tc_broker_ok(tc, broker_id)))
                return RBK_ERR_INVALID_ARG;
        return rbk__tc_err(rd_kafka_mock_partition_set_leader(
            tc->mc, topic, partition, broker_id));
}

rbk_err_t rbk_testcluster_broker_down(rbk_testcluster_t *tc, int broker_id) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (!rbk__tc_broker_ok(tc, broker_id))
                return RBK_ERR_NOT_FOUND;
        return rbk__tc_err(rd_kafka_mock_broker_set_down(tc->mc, broker_id));
}

rbk_err_t rbk_testcluster_broker_up(rbk_testcluster_t *tc, int broker_id) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (!rbk__tc_broker_ok(tc, broker_id))
                return RBK_ERR_NOT_FOUND;
        return rbk__tc_err(rd_kafka_mock_broker_set_up(tc->mc, broker_id));
}

rbk_err_t rbk_testcluster_push_request_errors(rbk_testcluster_t *tc,
                                              int api_key, size_t cnt,
                                              int kafka_err) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (api_key < 0 || api_key > 32767 || cnt == 0 ||
            cnt > 1000000)
                return RBK_ERR_INVALID_ARG;
        rd_kafka_resp_err_t *errs = g_new(rd_kafka_resp_err_t, cnt);
        for (size_t i = 0; i < cnt; i++)
                errs[i] = (rd_kafka_resp_err_t)kafka_err;
        rd_kafka_mock_push_request_errors_array(tc->mc, (int16_t)api_key, cnt,
                                                errs);
        g_free(errs);
        return RBK_OK;
}

rbk_err_t rbk_testcluster_push_produce_errors(rbk_testcluster_t *tc,
                                              size_t cnt, int kafka_err) {
        return rbk_testcluster_push_request_errors(tc, RBK_TEST_API_PRODUCE,
                                                   cnt, kafka_err);
}

rbk_err_t rbk_testcluster_broker_push_request_errors(rbk_testcluster_t *tc,
                                                     int broker_id, int api_key,
                                                     size_t cnt, int kafka_err,
                                                     int rtt_ms) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (api_key < 0 || api_key > 32767 || cnt == 0 ||
            cnt > 100000 || rtt_ms < 0)
                return RBK_ERR_INVALID_ARG;
        if (!rbk__tc_broker_ok(tc, broker_id))
                return RBK_ERR_NOT_FOUND;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        /* The variadic API takes (error, rtt) pairs; push them one by one. */
        for (size_t i = 0; i < cnt && !err; i++)
                err = rd_kafka_mock_broker_push_request_error_rtts(
                    tc->mc, broker_id, (int16_t)api_key, 1,
                    (rd_kafka_resp_err_t)kafka_err, rtt_ms);
        return rbk__tc_err(err);
}

rbk_err_t rbk_testcluster_delay_produce(rbk_testcluster_t *tc, int broker_id,
                                        int rtt_ms, size_t count) {
        return rbk_testcluster_broker_push_request_errors(
            tc, broker_id, RBK_TEST_API_PRODUCE, count, 0, rtt_ms);
}

rbk_err_t rbk_testcluster_clear_request_errors(rbk_testcluster_t *tc,
                                               int api_key) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (api_key < 0 || api_key > 32767)
                return RBK_ERR_INVALID_ARG;
        rd_kafka_mock_clear_request_errors(tc->mc, (int16_t)api_key);
        return RBK_OK;
}

rbk_err_t rbk_testcluster_set_coordinator(rbk_testcluster_t *tc,
                                          const char *key_type, const char *key,
                                          int broker_id) {
        if (rbk__tc_unusable(tc))
                return rbk__tc_unusable_err(tc);
        if (!key_type || !key ||
            (strcmp(key_type, "group") && strcmp(key_type, "transaction")))
                return RBK_ERR_INVALID_ARG;
        if (!rbk__tc_broker_ok(tc, broker_id))
                return RBK_ERR_NOT_FOUND;
        return rbk__tc_err(
            rd_kafka_mock_coordinator_set(tc->mc, key_type, key, broker_id));
}

rbk_err_t rbk_testing_fatal_error(rbk_producer_t *p, int kafka_err,
                                  const char *reason) {
        if (!p)
                return RBK_ERR_INVALID_ARG;
        return rbk__producer_test_fatal(p, kafka_err, reason);
}
