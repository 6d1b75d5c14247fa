/* The control channel: message format (round trips, refusal of malformed
 * input), the internal clients' configuration, and the listener against the
 * mock cluster with a fake consumer (applies only commands for an incident
 * it holds, acknowledges with its identity, never twice, never another
 * group's or an expired one; waits for a missing control topic). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "harness.h"
#include "robustkafka/testing.h"

static char errstr[512];

/* ------------------------------------------------------------ format */

static void fill_cmd(rbk__control_msg_t *m, const char *id) {
        rbk__control_msg_init(m, RBK__CTL_COMMAND);
        g_strlcpy(m->id, id, sizeof(m->id));
        g_strlcpy(m->action, "resolve", sizeof(m->action));
        g_strlcpy(m->group, "g1", sizeof(m->group));
        g_strlcpy(m->topic, "orders", sizeof(m->topic));
        m->partition = 3;
        g_strlcpy(m->incident_key, "g1/orders/3/5000", sizeof(m->incident_key));
        m->how = RBK_RESOLVE_OFFSET;
        m->offset = 42;
        m->expires_ms = 1700000000000;
        g_strlcpy(m->requested_by, "ops@host pid 7", sizeof(m->requested_by));
}

START_TEST(command_round_trip) {
        rbk__control_msg_t m, p;
        fill_cmd(&m, "abc123");
        size_t len = 0;
        char *buf = rbk__control_msg_format(&m, &len, errstr, sizeof(errstr));
        ck_assert_msg(buf != NULL, "%s", errstr);
        ck_assert_uint_eq(len, strlen(buf));
        ck_assert_int_eq(rbk__control_msg_parse(buf, len, &p, errstr,
                                                sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(p.type, RBK__CTL_COMMAND);
        ck_assert_str_eq(p.id, "abc123");
        ck_assert_str_eq(p.action, "resolve");
        ck_assert_str_eq(p.group, "g1");
        ck_assert_str_eq(p.topic, "orders");
        ck_assert_int_eq(p.partition, 3);
        ck_assert_str_eq(p.incident_key, "g1/orders/3/5000");
        ck_assert_int_eq(p.how, RBK_RESOLVE_OFFSET);
        ck_assert_int_eq(p.offset, 42);
        ck_assert_int_eq(p.expires_ms, 1700000000000);
        ck_assert_str_eq(p.requested_by, "ops@host pid 7");
        g_free(buf);

        /* Other choices carry no offset. */
        m.how = RBK_RESOLVE_LATEST;
        buf = rbk__control_msg_format(&m, &len, errstr, sizeof(errstr));
        ck_assert_ptr_nonnull(buf);
        ck_assert_ptr_null(strstr(buf, "offset="));
        ck_assert_int_eq(rbk__control_msg_parse(buf, len, &p, NULL, 0),
                         RBK_OK);
        ck_assert_int_eq(p.how, RBK_RESOLVE_LATEST);
        ck_assert_int_eq(p.offset, -1);
        g_free(buf);
}
END_TEST

START_TEST(ack_round_trip) {
        rbk__control_msg_t m, p;
        rbk__control_msg_init(&m, RBK__CTL_ACK);
        g_strlcpy(m.id, "abc123", sizeof(m.id));
        g_strlcpy(m.incident_key, "g1/orders/3/5000", sizeof(m.incident_key));
        m.result = RBK_ERR_NOT_QUARANTINED;
        /* Values with newlines and '=' survive. */
        g_strlcpy(m.error, "line one\nline=two [x]", sizeof(m.error));
        g_strlcpy(m.client, "billing", sizeof(m.client));
        g_strlcpy(m.host, "web.1", sizeof(m.host));
        m.pid = 4242;
        g_strlcpy(m.member_id, "rdkafka-1234", sizeof(m.member_id));
        size_t len = 0;
        char *buf = rbk__control_msg_format(&m, &len, errstr, sizeof(errstr));
        ck_assert_msg(buf != NULL, "%s", errstr);
        ck_assert_int_eq(rbk__control_msg_parse(buf, len, &p, errstr,
                                                sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(p.type, RBK__CTL_ACK);
        ck_assert_str_eq(p.id, "abc123");
        ck_assert_int_eq(p.result, RBK_ERR_NOT_QUARANTINED);
        ck_assert_str_eq(p.error, "line one\nline=two [x]");
        ck_assert_str_eq(p.client, "billing");
        ck_assert_str_eq(p.host, "web.1");
        ck_assert_int_eq(p.pid, 4242);
        ck_assert_str_eq(p.member_id, "rdkafka-1234");
        ck_assert_str_eq(p.incident_key, "g1/orders/3/5000");
        g_free(buf);
}
END_TEST

START_TEST(format_refuses_incomplete) {
        rbk__control_msg_t m;
        size_t len;
        fill_cmd(&m, "");
        ck_assert_ptr_null(
            rbk__control_msg_format(&m, &len, errstr, sizeof(errstr)));
        ck_assert_ptr_nonnull(strstr(errstr, "no id"));
        fill_cmd(&m, "x");
        m.incident_key[0] = '\0';
        ck_assert_ptr_null(
            rbk__control_msg_format(&m, &len, errstr, sizeof(errstr)));
        ck_assert_ptr_nonnull(strstr(errstr, "incomplete"));
        fill_cmd(&m, "x");
        m.offset = -5;
        ck_assert_ptr_null(rbk__control_msg_format(&m, &len, NULL, 0));
        fill_cmd(&m, "x");
        m.how = (rbk_resolve_t)9;
        ck_assert_ptr_null(rbk__control_msg_format(&m, &len, NULL, 0));
        ck_assert_ptr_null(rbk__control_msg_format(NULL, &len, NULL, 0));
}
END_TEST

static void expect_refused(const char *text, const char *why) {
        rbk__control_msg_t p;
        errstr[0] = '\0';
        ck_assert_int_eq(rbk__control_msg_parse(text, strlen(text), &p, errstr,
                                                sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_msg(strstr(errstr, why) != NULL,
                      "parsing <%s>: message <%s> lacks <%s>", text, errstr,
                      why);
}

#define CMD_HEAD "[rbk-control]\nversion=1\ntype=command\nid=a\n"
#define CMD_BODY                                                             \
        "action=resolve\ngroup=g\ntopic=t\npartition=0\nincident=g/t/0/9\n"

START_TEST(parse_refuses_malformed) {
        expect_refused("hello", "not a control message");
        expect_refused("[other]\nversion=1\n", "no [rbk-control]");
        expect_refused("[rbk-control]\ntype=command\nid=a\n",
                       "\"version\" is missing");
        expect_refused("[rbk-control]\nversion=0\ntype=ack\nid=a\nresult=0\n",
                       "not an integer");
        expect_refused("[rbk-control]\nversion=x\n", "not an integer");
        expect_refused("[rbk-control]\nversion=1\ntype=bogus\nid=a\n",
                       "unknown type");
        expect_refused("[rbk-control]\nversion=1\ntype=command\nid=\n",
                       "\"id\" is empty");
        expect_refused(CMD_HEAD "group=g\n", "\"action\" is missing");
        /* A bad escape (GLib returns a partial value with an error). */
        expect_refused(CMD_HEAD "action=res\\qolve\n",
                       "\"action\" is not a valid string");
        expect_refused(CMD_HEAD CMD_BODY, "\"choice\" is missing");
        expect_refused(CMD_HEAD CMD_BODY "choice=sideways\n",
                       "unknown choice");
        expect_refused(CMD_HEAD CMD_BODY "choice=offset\n",
                       "\"offset\" is missing");
        expect_refused(CMD_HEAD CMD_BODY "choice=offset\noffset=-1\n",
                       "not an integer");
        expect_refused(CMD_HEAD CMD_BODY "choice=offset\noffset=12x\n",
                       "not an integer");
        expect_refused(CMD_HEAD
                       "action=resolve\ngroup=g\ntopic=t\npartition=-3\n"
                       "incident=k\nchoice=latest\n",
                       "\"partition\" is not");
        expect_refused(CMD_HEAD
                       "action=resolve\ngroup=g\ntopic=t\npartition="
                       "99999999999999999999\nincident=k\nchoice=latest\n",
                       "\"partition\" is not");
        expect_refused("[rbk-control]\nversion=1\ntype=ack\nid=a\nresult=5\n",
                       "\"result\" is not");

        /* Too long for its field. */
        GString *s = g_string_new(CMD_HEAD CMD_BODY "choice=latest\ngroup=");
        for (int i = 0; i < 300; i++)
                g_string_append_c(s, 'g');
        g_string_append_c(s, '\n');
        expect_refused(s->str, "too long");
        g_string_free(s, TRUE);

        /* Larger than any message, a NUL inside, empty. */
        char *big = g_malloc0(RBK__CONTROL_MAX_MSG + 2);
        memset(big, 'x', RBK__CONTROL_MAX_MSG + 1);
        rbk__control_msg_t p;
        ck_assert_int_eq(rbk__control_msg_parse(big, RBK__CONTROL_MAX_MSG + 1,
                                                &p, errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(errstr, "larger"));
        g_free(big);
        const char nul[] = CMD_HEAD "\0x";
        ck_assert_int_eq(rbk__control_msg_parse(nul, sizeof(nul) - 1, &p,
                                                errstr, sizeof(errstr)),
                         RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk__control_msg_parse("", 0, &p, NULL, 0),
                         RBK_ERR_INVALID_ARG);
        ck_assert_int_eq(rbk__control_msg_parse(NULL, 3, &p, NULL, 0),
                         RBK_ERR_INVALID_ARG);

        /* A newer protocol version is read; unknown keys are ignored. */
        const char *newer = "[rbk-control]\nversion=7\ntype=command\nid=a\n"
                            CMD_BODY "choice=earliest\nfuture=1\n";
        ck_assert_int_eq(rbk__control_msg_parse(newer, strlen(newer), &p,
                                                errstr, sizeof(errstr)),
                         RBK_OK);
        ck_assert_int_eq(p.how, RBK_RESOLVE_EARLIEST);
}
END_TEST

/* Random bytes and random mutations of a valid message never crash. */
START_TEST(parse_survives_garbage) {
        rbk__control_msg_t m, p;
        fill_cmd(&m, "seed");
        size_t len;
        char *valid = rbk__control_msg_format(&m, &len, NULL, 0);
        ck_assert_ptr_nonnull(valid);
        GRand *r = g_rand_new_with_seed(1234);
        char buf[1024];
        for (int i = 0; i < 20000; i++) {
                size_t n;
                if (i % 2) {
                        n = g_rand_int_range(r, 1, sizeof(buf));
                        for (size_t j = 0; j < n; j++)
                                buf[j] = (char)g_rand_int(r);
                } else {
                        n = len;
                        memcpy(buf, valid, n);
                        for (int k = 0; k < 4; k++)
                                buf[g_rand_int_range(r, 0, (gint32)n)] =
                                    (char)g_rand_int_range(r, 1, 256);
                }
                rbk_err_t err = rbk__control_msg_parse(buf, n, &p, errstr,
                                                       sizeof(errstr));
                ck_assert(err == RBK_OK || err == RBK_ERR_INVALID_ARG);
        }
        g_rand_free(r);
        g_free(valid);
}
END_TEST

START_TEST(new_ids) {
        char *a = rbk__control_new_id(), *b = rbk__control_new_id();
        ck_assert_uint_eq(strlen(a), 32);
        ck_assert_str_ne(a, b);
        g_free(a);
        g_free(b);
}
END_TEST

/* ------------------------------------------------------------ rd conf */

static char *rd_get(rd_kafka_conf_t *rc, const char *name) {
        char buf[512];
        size_t sz = sizeof(buf);
        if (rd_kafka_conf_get(rc, name, buf, &sz) != RD_KAFKA_CONF_OK)
                return NULL;
        return g_strdup(buf);
}

static void set(rbk_conf_t *c, const char *n, const char *v) {
        ck_assert_msg(rbk_conf_set(c, n, v, errstr, sizeof(errstr)) == RBK_OK,
                      "%s: %s", n, errstr);
}

START_TEST(rd_conf_copies_connection_only) {
        rbk_conf_t *c = rbk_conf_new();
        set(c, "bootstrap.servers", "127.0.0.1:1");
        set(c, "group.id", "the-group");
        set(c, "group.instance.id", "inst-1");
        set(c, "session.timeout.ms", "6000");
        set(c, "fetch.wait.max.ms", "77");
        set(c, "socket.timeout.ms", "12345");
        set(c, "enable.auto.commit", "true");
        set(c, "rbk.client.name", "svc");
        for (int t = 0; t < 2; t++) {
                rd_kafka_type_t type = t ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER;
                rd_kafka_conf_t *rc =
                    rbk__control_rd_conf(c, type, errstr, sizeof(errstr));
                ck_assert_msg(rc != NULL, "%s", errstr);
                char *v = rd_get(rc, "bootstrap.servers");
                ck_assert_str_eq(v, "127.0.0.1:1");
                g_free(v);
                v = rd_get(rc, "socket.timeout.ms");
                ck_assert_str_eq(v, "12345");
                g_free(v);
                v = rd_get(rc, "group.id");
                ck_assert_msg(v == NULL || !*v, "group.id copied: %s", v);
                g_free(v);
                v = rd_get(rc, "group.instance.id");
                ck_assert_msg(v == NULL || !*v, "group.instance.id copied");
                g_free(v);
                v = rd_get(rc, "allow.auto.create.topics");
                ck_assert_str_eq(v, "false");
                g_free(v);
                v = rd_get(rc, "fetch.wait.max.ms");
                /* A consumer property reaches only the consumer. */
                ck_assert_str_eq(v, t ? "500" : "77");
                g_free(v);
                if (!t) {
                        v = rd_get(rc, "enable.auto.commit");
                        ck_assert_str_eq(v, "false");
                        g_free(v);
                } else {
                        v = rd_get(rc, "acks");
                        ck_assert_str_eq(v, "-1");
                        g_free(v);
                }
                rd_kafka_conf_destroy(rc);
        }
        ck_assert_ptr_null(rbk__control_rd_conf(NULL, RD_KAFKA_CONSUMER,
                                                errstr, sizeof(errstr)));
        rbk_conf_destroy(c);
}
END_TEST

/* ------------------------------------------------------------ listener */

typedef struct fake_s {
        GMutex lock;
        int quarantined;          /* holds the incident */
        rbk_quarantine_t q;
        int resolves;             /* resolve calls */
        rbk__control_msg_t last;  /* the last command applied */
        char applied_by[512];
        rbk_err_t next_err;       /* what resolve returns */
} fake_t;

static size_t fake_quarantined(void *target, rbk_quarantine_t *out,
                               size_t max) {
        fake_t *f = target;
        g_mutex_lock(&f->lock);
        size_t n = f->quarantined ? 1 : 0;
        if (n && max)
                out[0] = f->q;
        g_mutex_unlock(&f->lock);
        return n;
}

static rbk_err_t fake_resolve(void *target, const rbk__control_msg_t *cmd,
                              const char *applied_by, char *es, size_t esz) {
        fake_t *f = target;
        g_mutex_lock(&f->lock);
        f->resolves++;
        f->last = *cmd;
        g_strlcpy(f->applied_by, applied_by, sizeof(f->applied_by));
        rbk_err_t err = f->next_err;
        if (!err)
                f->quarantined = 0;
        g_mutex_unlock(&f->lock);
        if (err)
                g_snprintf(es, esz, "fake failure");
        return err;
}

static char *fake_member(void *target) {
        return g_strdup("member-xyz");
}

static const rbk__control_ops_t fake_ops = {fake_quarantined, fake_resolve,
                                            fake_member};

static void fake_init(fake_t *f, const char *key) {
        memset(f, 0, sizeof(*f));
        g_mutex_init(&f->lock);
        f->quarantined = 1;
        g_strlcpy(f->q.topic, "orders", sizeof(f->q.topic));
        f->q.partition = 2;
        f->q.failed_offset = 900;
        g_strlcpy(f->q.incident_key, key, sizeof(f->q.incident_key));
}

/* Counts the log lines holding a text: how a test sees the listener's
 * progress (the log callback gets every level). */
typedef struct logwatch_s {
        GMutex lock;
        const char *needle;
        int seen;
} logwatch_t;

static void logwatch_cb(int level, const char *fac, const char *line,
                        void *opaque) {
        logwatch_t *w = opaque;
        g_mutex_lock(&w->lock);
        w->seen += strstr(line, w->needle) != NULL;
        g_mutex_unlock(&w->lock);
}

static void logwatch_init(logwatch_t *w, rbk_conf_t *c, const char *needle) {
        memset(w, 0, sizeof(*w));
        g_mutex_init(&w->lock);
        w->needle = needle;
        rbk_conf_set_log_cb(c, logwatch_cb, w);
}

/* Waits until a line holding the text was logged: 1, or 0 after @secs. */
static int logwatch_wait(logwatch_t *w, int secs) {
        int64_t deadline = rbk__now_ms() + secs * 1000;
        for (;;) {
                g_mutex_lock(&w->lock);
                int seen = w->seen;
                g_mutex_unlock(&w->lock);
                if (seen)
                        return 1;
                if (rbk__now_ms() >= deadline)
                        return 0;
                g_usleep(20000);
        }
}

static int fake_resolves(fake_t *f) {
        g_mutex_lock(&f->lock);
        int n = f->resolves;
        g_mutex_unlock(&f->lock);
        return n;
}

/* A three-broker cluster, failing the test if it cannot start. */
static rbk_testcluster_t *cluster_new(void) {
        char e[256];
        rbk_testcluster_t *tc = rbk_testcluster_new(3, e, sizeof(e));
        ck_assert_msg(tc != NULL, "rbk_testcluster_new: %s", e);
        return tc;
}

static rbk_conf_t *conf_for(rbk_testcluster_t *tc, const char *client) {
        rbk_conf_t *c = rbk_conf_new();
        set(c, "bootstrap.servers", rbk_testcluster_bootstrap(tc));
        set(c, "group.id", "g-ctl");
        set(c, "rbk.client.name", client);
        set(c, "rbk.control.topic", "ctl-topic");
        return c;
}

static void wait_ready(rbk__control_t *ctl, int secs) {
        int64_t deadline = rbk__now_ms() + secs * 1000;
        while (!rbk__control_ready(ctl)) {
                ck_assert_msg(rbk__now_ms() < deadline,
                              "listener not ready after %d s", secs);
                g_usleep(20000);
        }
}

static void send_cmd(rbk__control_client_t *cl, const rbk__control_msg_t *m) {
        ck_assert_msg(rbk__control_client_send(cl, m, 10000, errstr,
                                               sizeof(errstr)) == RBK_OK,
                      "send: %s", errstr);
}

static void cmd_for(rbk__control_msg_t *m, const char *key) {
        char *id = rbk__control_new_id();
        fill_cmd(m, id);
        g_free(id);
        g_strlcpy(m->group, "g-ctl", sizeof(m->group));
        g_strlcpy(m->topic, "orders", sizeof(m->topic));
        m->partition = 2;
        g_strlcpy(m->incident_key, key, sizeof(m->incident_key));
        m->how = RBK_RESOLVE_LATEST;
        m->expires_ms = g_get_real_time() / 1000 + 60000;
}

START_TEST(listener_applies_and_acks) {
        rbk_testcluster_t *tc = cluster_new();
        ck_assert_int_eq(rbk_testcluster_create_topic(tc, "ctl-topic", 1, 3),
                         RBK_OK);
        rbk_conf_t *c = conf_for(tc, "svc-a");
        fake_t f;
        const char *key = "g-ctl/orders/2/900";
        fake_init(&f, key);
        rbk__control_t *ctl = rbk__control_start_ops(&fake_ops, &f, c, "g-ctl",
                                                     errstr, sizeof(errstr));
        ck_assert_msg(ctl != NULL, "%s", errstr);
        wait_ready(ctl, 20);

        rbk_err_t err;
        rbk__control_client_t *cl =
            rbk__control_client_new(c, 10000, &err, errstr, sizeof(errstr));
        ck_assert_msg(cl != NULL, "%s", errstr);
        ck_assert_str_eq(rbk__control_client_topic(cl), "ctl-topic");

        /* Another group's command and an unknown incident: silence. */
        rbk__control_msg_t other, unknown, cmd, ack;
        cmd_for(&other, key);
        g_strlcpy(other.group, "someone-else", sizeof(other.group));
        send_cmd(cl, &other);
        cmd_for(&unknown, "g-ctl/orders/2/1");
        send_cmd(cl, &unknown);

        /* The real one. */
        cmd_for(&cmd, key);
        cmd.how = RBK_RESOLVE_OFFSET;
        cmd.offset = 17;
        send_cmd(cl, &cmd);
        ck_assert_int_eq(rbk__control_client_wait_ack(cl, cmd.id, 15000, &ack),
                         RBK_OK);
        ck_assert_int_eq(ack.result, RBK_OK);
        ck_assert_str_eq(ack.client, "svc-a");
        ck_assert_int_eq(ack.pid, getpid());
        ck_assert_str_eq(ack.member_id, "member-xyz");
        ck_assert_str_eq(ack.host, g_get_host_name());
        ck_assert_str_eq(ack.incident_key, key);
        ck_assert_int_eq(fake_resolves(&f), 1);
        ck_assert_int_eq(f.last.how, RBK_RESOLVE_OFFSET);
        ck_assert_int_eq(f.last.offset, 17);
        ck_assert_ptr_nonnull(strstr(f.applied_by, cmd.id));
        ck_assert_ptr_nonnull(strstr(f.applied_by, "ops@host pid 7"));

        /* Neither ignored command got an answer (they came first). */
        ck_assert_int_eq(rbk__control_client_wait_ack(cl, other.id, 300, &ack),
                         RBK_ERR_TIMED_OUT);

        /* The same command again: ignored. A new one for the same incident:
         * already resolved. */
        send_cmd(cl, &cmd);
        rbk__control_msg_t again;
        cmd_for(&again, key);
        send_cmd(cl, &again);
        ck_assert_int_eq(
            rbk__control_client_wait_ack(cl, again.id, 15000, &ack), RBK_OK);
        ck_assert_int_eq(ack.result, RBK_ERR_ALREADY_RESOLVED);
        ck_assert_ptr_nonnull(strstr(ack.error, "already resolved"));
        ck_assert_int_eq(fake_resolves(&f), 1);
        /* The listener counts an acknowledgement once its flush returned,
         * which may be just after the client read it. */
        int64_t until = rbk__now_ms() + 10000;
        while (rbk__control_acked(ctl) < 2 && rbk__now_ms() < until)
                g_usleep(20000);
        ck_assert_uint_eq(rbk__control_acked(ctl), 2);

        /* A failing resolve is acknowledged with its error. */
        const char *key2 = "g-ctl/orders/2/950";
        g_mutex_lock(&f.lock);
        f.quarantined = 1;
        g_strlcpy(f.q.incident_key, key2, sizeof(f.q.incident_key));
        f.next_err = RBK_ERR_OUT_OF_RANGE;
        g_mutex_unlock(&f.lock);
        rbk__control_msg_t bad;
        cmd_for(&bad, key2);
        send_cmd(cl, &bad);
        ck_assert_int_eq(rbk__control_client_wait_ack(cl, bad.id, 15000, &ack),
                         RBK_OK);
        ck_assert_int_eq(ack.result, RBK_ERR_OUT_OF_RANGE);
        ck_assert_str_eq(ack.error, "fake failure");

        /* A command naming the wrong partition for the incident. */
        g_mutex_lock(&f.lock);
        f.next_err = RBK_OK;
        g_mutex_unlock(&f.lock);
        rbk__control_msg_t wrong;
        cmd_for(&wrong, key2);
        wrong.partition = 5;
        send_cmd(cl, &wrong);
        ck_assert_int_eq(
            rbk__control_client_wait_ack(cl, wrong.id, 15000, &ack), RBK_OK);
        ck_assert_int_eq(ack.result, RBK_ERR_INVALID_ARG);

        /* An expired command is never applied. */
        rbk__control_msg_t old;
        cmd_for(&old, key2);
        old.expires_ms = g_get_real_time() / 1000 - 1000;
        send_cmd(cl, &old);
        ck_assert_int_eq(rbk__control_client_wait_ack(cl, old.id, 1500, &ack),
                         RBK_ERR_TIMED_OUT);
        ck_assert_int_eq(fake_resolves(&f), 2);

        rbk__control_client_destroy(cl);
        rbk__control_stop(ctl);
        rbk_conf_destroy(c);
        g_mutex_clear(&f.lock);
        rbk_testcluster_destroy(tc);
}
END_TEST

START_TEST(listener_waits_for_missing_topic) {
        rbk_testcluster_t *tc = cluster_new();
        rbk__control_retry_ms = 300;
        rbk_conf_t *c = conf_for(tc, "svc-b");
        logwatch_t w;
        logwatch_init(&w, c, "does not exist");
        fake_t f;
        fake_init(&f, "g-ctl/orders/2/900");
        rbk__control_t *ctl = rbk__control_start_ops(&fake_ops, &f, c, "g-ctl",
                                                     errstr, sizeof(errstr));
        ck_assert_msg(ctl != NULL, "%s", errstr);
        /* The listener looked, found no topic, and is not ready. */
        ck_assert_msg(logwatch_wait(&w, 20),
                      "the listener never reported the missing topic");
        ck_assert_int_eq(rbk__control_ready(ctl), 0);

        /* The client refuses clearly too. */
        rbk_err_t err;
        ck_assert_ptr_null(
            rbk__control_client_new(c, 5000, &err, errstr, sizeof(errstr)));
        ck_assert_int_eq(err, RBK_ERR_NOT_FOUND);
        ck_assert_ptr_nonnull(strstr(errstr, "does not exist"));

        ck_assert_int_eq(rbk_testcluster_create_topic(tc, "ctl-topic", 1, 3),
                         RBK_OK);
        wait_ready(ctl, 20);
        rbk__control_stop(ctl);

        /* Disabled: no listener, no error. */
        set(c, "rbk.control.enable", "false");
        errstr[0] = 'x';
        ck_assert_ptr_null(rbk__control_start_ops(&fake_ops, &f, c, "g-ctl",
                                                  errstr, sizeof(errstr)));
        ck_assert_str_eq(errstr, "");
        /* Bad arguments. */
        ck_assert_ptr_null(rbk__control_start_ops(&fake_ops, &f, c, "",
                                                  errstr, sizeof(errstr)));
        ck_assert_ptr_nonnull(strstr(errstr, "missing"));
        rbk__control_stop(NULL);
        rbk_conf_destroy(c);
        g_mutex_clear(&f.lock);
        g_mutex_clear(&w.lock);
        rbk_testcluster_destroy(tc);
}
END_TEST

/* A listener on an unreachable cluster stops promptly (a consumer's close
 * waits for it). */
START_TEST(listener_stops_promptly_when_unreachable) {
        rbk_conf_t *c = rbk_conf_new();
        set(c, "bootstrap.servers", "127.0.0.1:1");
        set(c, "group.id", "g");
        set(c, "log_level", "0");
        logwatch_t w;
        logwatch_init(&w, c, "reading the cluster metadata failed");
        fake_t f;
        fake_init(&f, "g/t/0/1");
        rbk__control_t *ctl = rbk__control_start_ops(&fake_ops, &f, c, "g",
                                                     errstr, sizeof(errstr));
        ck_assert_msg(ctl != NULL, "%s", errstr);
        /* Its first look at the cluster failed: it is between attempts. */
        ck_assert_msg(logwatch_wait(&w, 20),
                      "the listener never reported the unreachable cluster");
        int64_t t0 = rbk__now_ms();
        rbk__control_stop(ctl);
        int64_t took = rbk__now_ms() - t0;
        ck_assert_msg(took < 3000, "stop took %" PRId64 " ms", took);
        rbk_conf_destroy(c);
        g_mutex_clear(&f.lock);
        g_mutex_clear(&w.lock);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("control");
        RBK_TCASE(s, command_round_trip, 10);
        RBK_TCASE(s, ack_round_trip, 10);
        RBK_TCASE(s, format_refuses_incomplete, 10);
        RBK_TCASE(s, parse_refuses_malformed, 10);
        RBK_TCASE(s, parse_survives_garbage, 60);
        RBK_TCASE(s, new_ids, 10);
        RBK_TCASE(s, rd_conf_copies_connection_only, 10);
        RBK_TCASE(s, listener_applies_and_acks, 90);
        RBK_TCASE(s, listener_waits_for_missing_topic, 60);
        RBK_TCASE(s, listener_stops_promptly_when_unreachable, 30);
        return s;
}

RBK_TEST_MAIN()
