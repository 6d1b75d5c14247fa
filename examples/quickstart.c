/*
 * quickstart: the smallest complete use of the library, shown in README.md
 * (the lines between the quickstart markers, kept equal to the README by
 * tests/test_quickstart.c, which also runs it on the mock cluster).
 *
 * Sends one message to topic "greetings", then consumes it in group
 * "quickstart" and prints it. Configuration comes from the environment
 * (KAFKA_URL, KAFKA_PREFIX, certificates: docs/heroku.md).
 *
 * Build (installed library):
 *   cc -o quickstart quickstart.c $(pkg-config --cflags --libs robustkafka)
 * Run:
 *   KAFKA_URL=kafka://127.0.0.1:9092 ./quickstart
 *
 * Exit status: 0 when the message was sent and handled, 1 otherwise.
 */
#include <stdio.h>

#include <robustkafka.h>

/* Called on a worker thread for each message, in offset order per partition. */
static rbk_verdict_t handle(const rbk_message_t *m, void *opaque) {
        printf("%s [%d] at offset %lld: %.*s\n", m->topic, (int)m->partition,
               (long long)m->offset, (int)m->value_len,
               (const char *)m->value);
        rbk_consumer_stop(opaque); /* one message is all this example wants */
        return RBK_HANDLED;        /* its offset is stored only now */
}

static int stop_with(const char *what, const char *errstr) {
        fprintf(stderr, "quickstart: %s: %s\n", what, errstr);
        rbk_shutdown(-1);
        return 1;
}

int main(void) {
        char errstr[512];
        /* quickstart-begin */
        rbk_conf_t *conf = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
        if (!conf || rbk_conf_set(conf, "group.id", "quickstart", errstr, sizeof(errstr)))
                return stop_with("configuration", errstr);
        rbk_producer_t *p = rbk_producer_get("main", conf, errstr, sizeof(errstr));
        rbk_msg_t msg = RBK_MSG_INIT;
        msg.topic = "greetings";
        msg.value = "hello";
        msg.value_len = 5;
        if (!p || rbk_producer_send_sync(p, &msg, 10000, NULL, errstr, sizeof(errstr)))
                return stop_with("send", errstr);

        rbk_consumer_t *c = rbk_consumer_get("main", conf, errstr, sizeof(errstr));
        const char *topics[] = {"greetings"};
        if (!c || rbk_consumer_subscribe(c, topics, 1, errstr, sizeof(errstr)))
                return stop_with("subscribe", errstr);
        rbk_consumer_run(c, handle, c); /* until handle() stops it */
        rbk_conf_destroy(conf);
        return rbk_shutdown(-1) == RBK_OK ? 0 : 1; /* commit, flush, close all */
        /* quickstart-end */
}
