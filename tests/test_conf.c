/* Configuration: defaults, refusal of unsafe settings through every alias
 * path, rbk.* validation, redacted dumps. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

static char errstr[512];

/* The effective value of a property in the dump, or NULL. */
static char *dump_value(const rbk_conf_t *conf, rbk_client_type_t type,
                        const char *name) {
        char *d = rbk_conf_dump(conf, type, errstr, sizeof(errstr));
        ck_assert_msg(d != NULL, "dump failed: %s", errstr);
        char key[256];
        snprintf(key, sizeof(key), "\n%s=", name);
        char *res = NULL;
        GString *s = g_string_new("\n");
        g_string_append(s, d);
        char *p = strstr(s->str, key);
        if (p) {
                p += strlen(key);
                res = g_strndup(p, strcspn(p, "\n"));
        }
        g_string_free(s, TRUE);
        rbk_free(d);
        return res;
}

static void assert_effective(rbk_conf_t *conf, rbk_client_type_t type,
                             const char *name, const char *want) {
        char *v = dump_value(conf, type, name);
        ck_assert_msg(v != NULL, "%s missing from dump", name);
        ck_assert_msg(!strcmp(v, want), "%s=%s, want %s", name, v, want);
        g_free(v);
}

START_TEST(producer_defaults_present) {
        rbk_conf_t *c = rbk_conf_new();
        assert_effective(c, RBK_PRODUCER, "enable.idempotence", "true");
        assert_effective(c, RBK_PRODUCER, "request.required.acks", "-1");
        assert_effective(c, RBK_PRODUCER, "message.send.max.retries",
                         "2147483647");
        assert_effective(c, RBK_PRODUCER, "message.timeout.ms", "120000");
        assert_effective(c, RBK_PRODUCER, "retry.backoff.ms", "100");
        assert_effective(c, RBK_PRODUCER, "socket.timeout.ms", "10000");
        assert_effective(c, RBK_PRODUCER, "queue.buffering.max.ms", "5");
        assert_effective(c, RBK_PRODUCER, "partitioner", "murmur2_random");
        assert_effective(c, RBK_PRODUCER, "rbk.msgid.enable", "true");
        ck_assert_int_eq(rbk_conf_validate(c, RBK_PRODUCER, errstr,
                                           sizeof(errstr)),
                         RBK_OK);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(consumer_defaults_present) {
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(c, "group.id", "g", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        assert_effective(c, RBK_CONSUMER, "auto.offset.reset", "error");
        assert_effective(c, RBK_CONSUMER, "enable.auto.offset.store", "false");
        assert_effective(c, RBK_CONSUMER, "enable.auto.commit", "true");
        assert_effective(c, RBK_CONSUMER, "socket.timeout.ms", "10000");
        assert_effective(c, RBK_CONSUMER, "session.timeout.ms", "45000");
        assert_effective(c, RBK_CONSUMER, "partition.assignment.strategy",
                         rd_kafka_version() < 0x020601ff ? "range,roundrobin"
                                                         : "cooperative-sticky");
        assert_effective(c, RBK_CONSUMER, "rbk.consumer.initial.offset",
                         "earliest");
        rbk_conf_destroy(c);
}
END_TEST

/* Every way of asking librdkafka for an automatic reset is refused at set
 * time, whatever rbk.unsafe.allow says. */
static const char *const reset_paths[][2] = {
    {"auto.offset.reset", "earliest"},
    {"auto.offset.reset", "latest"},
    {"auto.offset.reset", "smallest"},
    {"auto.offset.reset", "largest"},
    {"auto.offset.reset", "beginning"},
    {"auto.offset.reset", "end"},
    {"topic.auto.offset.reset", "earliest"},
    {"topic.auto.offset.reset", "smallest"},
};

START_TEST(auto_offset_reset_refused_every_path) {
        const char *name = reset_paths[_i][0], *value = reset_paths[_i][1];
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(c, "rbk.unsafe.allow",
                                      "auto.offset.reset", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        errstr[0] = '\0';
        ck_assert_int_eq(rbk_conf_set(c, name, value, errstr, sizeof(errstr)),
                         RBK_ERR_UNSAFE_CONF);
        ck_assert_msg(strstr(errstr, "auto.offset.reset"), "msg: %s", errstr);
        ck_assert_msg(strstr(errstr, "quarantine"), "msg: %s", errstr);
        /* Nothing was stored. */
        size_t sz = 0;
        ck_assert_int_eq(rbk_conf_get(c, name, NULL, &sz), RBK_ERR_NOT_FOUND);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(auto_offset_reset_error_accepted) {
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(c, "auto.offset.reset", "error", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_set(c, "group.id", "g", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_validate(c, RBK_CONSUMER, errstr,
                                           sizeof(errstr)),
                         RBK_OK);
        rbk_conf_destroy(c);
}
END_TEST

/* Unsafe producer settings through every alias: refused when the client is
 * validated, accepted only with the exact opt-out. */
static const char *const unsafe_producer[][3] = {
    /* name, value, opt-out */
    {"enable.idempotence", "false", "enable.idempotence"},
    {"acks", "1", "acks"},
    {"acks", "0", "acks"},
    {"request.required.acks", "1", "acks"},
    {"topic.request.required.acks", "0", "acks"},
    {"topic.acks", "1", "acks"},
    {"retries", "0", "retries"},
    {"message.send.max.retries", "0", "retries"},
};

START_TEST(unsafe_producer_refused_then_opt_out) {
        const char *name = unsafe_producer[_i][0];
        const char *value = unsafe_producer[_i][1];
        const char *optout = unsafe_producer[_i][2];
        rbk_conf_t *c = rbk_conf_new();
        /* Idempotence requires acks=all and retries (librdkafka refuses
         * the client otherwise, and so does validation). */
        int needs_no_idem = strstr(name, "acks") || strstr(name, "retries");
        if (needs_no_idem)
                ck_assert_int_eq(rbk_conf_set(c, "enable.idempotence", "false",
                                              errstr, sizeof(errstr)),
                                 RBK_OK);
        ck_assert_int_eq(rbk_conf_set(c, name, value, errstr, sizeof(errstr)),
                         RBK_OK);
        errstr[0] = '\0';
        rbk_err_t err = rbk_conf_validate(c, RBK_PRODUCER, errstr,
                                          sizeof(errstr));
        ck_assert_int_eq(err, RBK_ERR_UNSAFE_CONF);
        ck_assert_msg(strstr(errstr, "rbk.unsafe.allow"), "msg: %s", errstr);
        char *dump = rbk_conf_dump(c, RBK_PRODUCER, NULL, 0);
        ck_assert_ptr_null(dump);
        /* The exact opt-out (plus idempotence, when that was also off). */
        char allow[128];
        snprintf(allow, sizeof(allow), "%s%s", optout,
                 needs_no_idem ? ",enable.idempotence" : "");
        ck_assert_int_eq(rbk_conf_set(c, "rbk.unsafe.allow", allow, errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        err = rbk_conf_validate(c, RBK_PRODUCER, errstr, sizeof(errstr));
        ck_assert_msg(err == RBK_OK, "with opt-out %s: %s", allow, errstr);
        /* A different opt-out does not help. */
        ck_assert_int_eq(rbk_conf_set(c, "rbk.unsafe.allow",
                                      "partition.assignment.strategy", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_validate(c, RBK_PRODUCER, errstr,
                                           sizeof(errstr)),
                         RBK_ERR_UNSAFE_CONF);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(unsafe_consumer_refused) {
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(c, "group.id", "g", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_set(c, "enable.auto.offset.store", "true",
                                      errstr, sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_validate(c, RBK_CONSUMER, errstr,
                                           sizeof(errstr)),
                         RBK_ERR_UNSAFE_CONF);
        ck_assert_msg(strstr(errstr, "enable.auto.offset.store"), "%s", errstr);
        rbk_conf_set(c, "enable.auto.offset.store", NULL, NULL, 0);
        ck_assert_int_eq(rbk_conf_set(c, "partition.assignment.strategy",
                                      "cooperative-sticky", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        rbk_err_t want = rd_kafka_version() < 0x020601ff ? RBK_ERR_UNSAFE_CONF
                                                         : RBK_OK;
        ck_assert_int_eq(rbk_conf_validate(c, RBK_CONSUMER, errstr,
                                           sizeof(errstr)),
                         want);
        if (want)
                ck_assert_msg(strstr(errstr, "4783"), "%s", errstr);
        ck_assert_int_eq(rbk_conf_set(c, "rbk.unsafe.allow",
                                      "partition.assignment.strategy", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_validate(c, RBK_CONSUMER, errstr,
                                           sizeof(errstr)),
                         RBK_OK);
        rbk_conf_destroy(c);
}
END_TEST

/* Transactions are a non-goal: transactional.id is refused when set and, if
 * it reached a configuration another way, when the configuration is
 * validated, for both client types and whatever rbk.unsafe.allow says. */
START_TEST(transactional_id_refused) {
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(c, "group.id", "g", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_set(c, "rbk.unsafe.allow",
                                      "transactional.id", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        errstr[0] = '\0';
        ck_assert_int_eq(rbk_conf_set(c, "transactional.id", "txn-1", errstr,
                                      sizeof(errstr)),
                         RBK_ERR_UNSAFE_CONF);
        ck_assert_msg(strstr(errstr, "transactional.id=txn-1 refused"), "%s",
                      errstr);
        ck_assert_msg(strstr(errstr, "transactions"), "%s", errstr);
        size_t sz = 0;
        ck_assert_int_eq(rbk_conf_get(c, "transactional.id", NULL, &sz),
                         RBK_ERR_NOT_FOUND);
        ck_assert_int_eq(rbk_conf_validate(c, RBK_PRODUCER, errstr,
                                           sizeof(errstr)),
                         RBK_OK);
        /* Stored behind rbk_conf_set()'s back: validation refuses it. */
        rbk__conf_set_raw(c, "transactional.id", "txn-1");
        for (int t = 0; t < 2; t++) {
                rbk_client_type_t type = t ? RBK_CONSUMER : RBK_PRODUCER;
                errstr[0] = '\0';
                ck_assert_int_eq(rbk_conf_validate(c, type, errstr,
                                                   sizeof(errstr)),
                                 RBK_ERR_UNSAFE_CONF);
                ck_assert_msg(strstr(errstr, "transactional.id"), "%s",
                              errstr);
        }
        ck_assert_ptr_null(rbk_producer_new(c, errstr, sizeof(errstr)));
        ck_assert_msg(strstr(errstr, "transactional.id"), "%s", errstr);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(consumer_needs_group) {
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_validate(c, RBK_CONSUMER, errstr,
                                           sizeof(errstr)),
                         RBK_ERR_CONF);
        ck_assert_msg(strstr(errstr, "group.id"), "%s", errstr);
        rbk_conf_destroy(c);
}
END_TEST

static const char *const bad_props[][3] = {
    /* name, value, expected substring */
    {"rbk.nonexistent", "1", "unknown library property"},
    {"no.such.librdkafka.property", "1", "unknown configuration property"},
    {"rbk.msgid.enable", "maybe", "true or false"},
    {"rbk.consumer.workers", "0", "from 1 to 256"},
    {"rbk.consumer.workers", "12abc", "integer"},
    {"rbk.consumer.giveup", "drop", "pause,deadletter"},
    {"rbk.consumer.initial.offset", "smallest", "earliest,latest,error"},
    {"rbk.dedup.window", "1000", "power of two"},
    {"rbk.prefix", "bad prefix!", "illegal character"},
    {"linger.ms", "-5", "linger.ms"},
    {"compression.codec", "zip", "compression.codec"},
};

START_TEST(bad_values_refused) {
        rbk_conf_t *c = rbk_conf_new();
        errstr[0] = '\0';
        ck_assert_int_eq(rbk_conf_set(c, bad_props[_i][0], bad_props[_i][1],
                                      errstr, sizeof(errstr)),
                         RBK_ERR_CONF);
        ck_assert_msg(strstr(errstr, bad_props[_i][2]), "%s=%s: %s",
                      bad_props[_i][0], bad_props[_i][1], errstr);
        ck_assert_uint_eq(g_hash_table_size(c->props), 0);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(null_arguments) {
        ck_assert_int_eq(rbk_conf_set(NULL, "a", "b", errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_msg(strstr(errstr, "conf"), "%s", errstr);
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(c, NULL, "b", errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_conf_set(c, "", "b", NULL, 0), RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_conf_validate(NULL, RBK_PRODUCER, errstr,
                                           sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk_conf_validate(c, (rbk_client_type_t)7, errstr,
                                           sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_ptr_null(rbk_conf_dump(NULL, RBK_PRODUCER, NULL, 0));
        ck_assert_ptr_null(rbk_conf_dup(NULL));
        rbk_conf_destroy(NULL);
        rbk_free(NULL);
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(get_set_reset_dup_equal) {
        rbk_conf_t *c = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(c, "linger.ms", "20", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        char buf[8];
        size_t sz = sizeof(buf);
        ck_assert_int_eq(rbk_conf_get(c, "linger.ms", buf, &sz), RBK_OK);
        ck_assert_str_eq(buf, "20");
        ck_assert_uint_eq(sz, 3);
        rbk_conf_t *d = rbk_conf_dup(c);
        ck_assert(rbk__conf_equal(c, d));
        rbk_conf_set(d, "linger.ms", "21", NULL, 0);
        ck_assert(!rbk__conf_equal(c, d));
        rbk_conf_set(d, "linger.ms", "20", NULL, 0);
        ck_assert(rbk__conf_equal(c, d));
        rbk_conf_set_hook(d, (rbk_hook_cb_t *)1, NULL);
        ck_assert(!rbk__conf_equal(c, d));
        ck_assert_int_eq(rbk_conf_set(c, "linger.ms", NULL, errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        sz = sizeof(buf);
        ck_assert_int_eq(rbk_conf_get(c, "linger.ms", buf, &sz),
                         RBK_ERR_NOT_FOUND);
        assert_effective(c, RBK_PRODUCER, "queue.buffering.max.ms", "5");
        ck_assert_int_eq(rbk__conf_int(c, "rbk.consumer.workers"), 4);
        rbk_conf_set(c, "rbk.consumer.workers", "8", NULL, 0);
        ck_assert_int_eq(rbk__conf_int(c, "rbk.consumer.workers"), 8);
        ck_assert(rbk__conf_bool(c, "rbk.dedup.enable"));
        ck_assert_str_eq(rbk__conf_prefix(c), "");
        rbk_conf_destroy(c);
        rbk_conf_destroy(d);
}
END_TEST

START_TEST(dump_redacts_secrets) {
        rbk_conf_t *c = rbk_conf_new();
        const char *key =
            "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE "
            "KEY-----\n";
        ck_assert_int_eq(rbk_conf_set(c, "ssl.key.pem", key, errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_set(c, "sasl.password", "hunter2", errstr,
                                      sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_set(c, "ssl.key.password", "pw-xyzzy",
                                      errstr, sizeof(errstr)),
                         RBK_OK);
        char *d = rbk_conf_dump(c, RBK_PRODUCER, errstr, sizeof(errstr));
        ck_assert_ptr_nonnull(d);
        ck_assert_ptr_null(strstr(d, "SECRETKEYMATERIAL"));
        ck_assert_ptr_null(strstr(d, "hunter2"));
        ck_assert_ptr_null(strstr(d, "pw-xyzzy"));
        ck_assert_ptr_nonnull(strstr(d, "sasl.password=[redacted]"));
        ck_assert_ptr_nonnull(strstr(d, "ssl.key.pem=[redacted]"));
        rbk_free(d);
        /* A bad value for a secret never echoes it. */
        errstr[0] = '\0';
        rbk_err_t err = rbk_conf_set(c, "ssl.key.password", NULL, errstr,
                                     sizeof(errstr));
        ck_assert_int_eq(err, RBK_OK);
        ck_assert(rbk__conf_is_secret("sasl.password"));
        ck_assert(rbk__conf_is_secret("ssl.key.pem"));
        ck_assert(rbk__conf_is_secret("ssl.keystore.password"));
        ck_assert(!rbk__conf_is_secret("ssl.ca.pem"));
        ck_assert(!rbk__conf_is_secret("bootstrap.servers"));
        rbk_conf_destroy(c);
}
END_TEST

START_TEST(topic_names) {
        ck_assert_int_eq(rbk__topic_validate("", "orders", errstr,
                                             sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(rbk__topic_validate(NULL, "a.b_c-1", NULL, 0), RBK_OK);
        ck_assert_int_eq(rbk__topic_validate("", "", errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_msg(strstr(errstr, "empty"), "%s", errstr);
        ck_assert_int_eq(rbk__topic_validate("", NULL, errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_int_eq(rbk__topic_validate("", "a b", errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_msg(strstr(errstr, "position 1"), "%s", errstr);
        ck_assert_int_eq(rbk__topic_validate("", "..", errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_int_eq(rbk__topic_validate("", "ab\x80", errstr,
                                             sizeof(errstr)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_msg(strstr(errstr, "position 2 (0x80)"), "%s", errstr);
        size_t tlen = 0;
        ck_assert_int_eq(rbk__topic_validate_len(3, "orders.v2", &tlen, NULL, 0),
                         RBK_OK);
        ck_assert_uint_eq(tlen, 9);
        char longname[300];
        memset(longname, 'a', 249);
        longname[249] = '\0';
        ck_assert_int_eq(rbk__topic_validate("", longname, NULL, 0), RBK_OK);
        ck_assert_int_eq(rbk__topic_validate("p.", longname, errstr,
                                             sizeof(errstr)),
                         RBK_ERR_INVALID_TOPIC);
        ck_assert_msg(strstr(errstr, "249"), "%s", errstr);
        char *full = rbk__prefixed("tenant-1.", "orders");
        ck_assert_str_eq(full, "tenant-1.orders");
        ck_assert_str_eq(rbk__unprefixed("tenant-1.", full), "orders");
        ck_assert_str_eq(rbk__unprefixed("", full), "tenant-1.orders");
        ck_assert_str_eq(rbk__unprefixed("other.", full), "tenant-1.orders");
        g_free(full);
}
END_TEST

/* Validation refuses what client creation refuses, with the same message:
 * also what only librdkafka's own creation checks find. */
START_TEST(validate_refuses_what_creation_refuses) {
        char ev[512], en[512];
        rbk_conf_t *conf = rbk_conf_new();
        ck_assert_int_eq(rbk_conf_set(conf, "bootstrap.servers",
                                      "127.0.0.1:1", ev, sizeof(ev)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_set(conf,
                                      "max.in.flight.requests.per.connection",
                                      "6", ev, sizeof(ev)),
                         RBK_OK);
        rbk_err_t verr = rbk_conf_validate(conf, RBK_PRODUCER, ev, sizeof(ev));
        ck_assert_int_ne(verr, RBK_OK);
        rbk_producer_t *p = rbk_producer_new(conf, en, sizeof(en));
        ck_assert_ptr_null(p);
        ck_assert_str_eq(ev, en);
        ck_assert_ptr_nonnull(strstr(ev, "max.in.flight"));
        /* A valid configuration still passes, and connects to nothing. */
        ck_assert_int_eq(rbk_conf_set(conf,
                                      "max.in.flight.requests.per.connection",
                                      "5", ev, sizeof(ev)),
                         RBK_OK);
        ck_assert_int_eq(rbk_conf_validate(conf, RBK_PRODUCER, ev, sizeof(ev)),
                         RBK_OK);
        rbk_conf_destroy(conf);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("conf");
        RBK_TCASE(s, producer_defaults_present, 10);
        RBK_TCASE(s, consumer_defaults_present, 10);
        TCase *tc = tcase_create("auto_offset_reset_refused_every_path");
        tcase_add_loop_test(tc, auto_offset_reset_refused_every_path, 0,
                            G_N_ELEMENTS(reset_paths));
        suite_add_tcase(s, tc);
        RBK_TCASE(s, auto_offset_reset_error_accepted, 10);
        tc = tcase_create("unsafe_producer_refused_then_opt_out");
        tcase_add_loop_test(tc, unsafe_producer_refused_then_opt_out, 0,
                            G_N_ELEMENTS(unsafe_producer));
        suite_add_tcase(s, tc);
        RBK_TCASE(s, unsafe_consumer_refused, 10);
        RBK_TCASE(s, transactional_id_refused, 10);
        RBK_TCASE(s, consumer_needs_group, 10);
        tc = tcase_create("bad_values_refused");
        tcase_add_loop_test(tc, bad_values_refused, 0, G_N_ELEMENTS(bad_props));
        suite_add_tcase(s, tc);
        RBK_TCASE(s, null_arguments, 10);
        RBK_TCASE(s, get_set_reset_dup_equal, 10);
        RBK_TCASE(s, dump_redacts_secrets, 10);
        RBK_TCASE(s, topic_names, 10);
        RBK_TCASE(s, validate_refuses_what_creation_refuses, 10);
        return s;
}

RBK_TEST_MAIN()
