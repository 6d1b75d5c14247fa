/* Helper of tests/kafka/admin.sh (real Kafka):
 *
 *   admin_consumer commit  -b BS -t TOPIC -g GROUP -p PARTITION -O OFFSET
 *       commits OFFSET for GROUP from outside (no membership)
 *   admin_consumer consume -b BS -t TOPIC -g GROUP -c CONTROL_TOPIC -d DIR
 *       runs a librobustkafka consumer until SIGTERM; appends
 *       "<partition> <offset>" per handled message to DIR/handled and the
 *       incident key of each quarantine to DIR/quarantined (both flushed)
 *
 * Exit 0 on a clean stop, 1 on error, 2 on usage. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "robustkafka.h"

static rbk_consumer_t *g_c;
static FILE *g_handled, *g_quarantined;

static void on_term(int sig) {
        (void)sig;
        rbk_consumer_stop(g_c);
}

static rbk_verdict_t handler(const rbk_message_t *m, void *opaque) {
        (void)opaque;
        fprintf(g_handled, "%" PRId32 " %" PRId64 "\n", m->partition,
                m->offset);
        fflush(g_handled);
        return RBK_HANDLED;
}

static void hook(const rbk_event_t *ev, void *opaque) {
        (void)opaque;
        if (ev->cls == RBK_EV_OFFSET_OUT_OF_RANGE && ev->incident_key) {
                fprintf(g_quarantined, "%s\n", ev->incident_key);
                fflush(g_quarantined);
        }
}

static int usage(void) {
        fprintf(stderr,
                "usage: admin_consumer commit -b BS -t TOPIC -g GROUP -p P "
                "-O OFFSET\n"
                "       admin_consumer consume -b BS -t TOPIC -g GROUP -c "
                "CONTROL -d DIR\n");
        return 2;
}

static int do_commit(const char *bs, const char *topic, const char *group,
                     int32_t partition, int64_t offset) {
        char e[512];
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        if (rd_kafka_conf_set(rc, "bootstrap.servers", bs, e, sizeof(e)) ||
            rd_kafka_conf_set(rc, "group.id", group, e, sizeof(e)) ||
            rd_kafka_conf_set(rc, "enable.auto.commit", "false", e,
                              sizeof(e))) {
                fprintf(stderr, "admin_consumer: %s\n", e);
                rd_kafka_conf_destroy(rc);
                return 1;
        }
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, e, sizeof(e));
        if (!rk) {
                fprintf(stderr, "admin_consumer: %s\n", e);
                return 1;
        }
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
        rd_kafka_resp_err_t err = rd_kafka_commit(rk, l, 0);
        if (!err && l->elems[0].err)
                err = l->elems[0].err;
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        if (err) {
                fprintf(stderr, "admin_consumer: commit: %s\n",
                        rd_kafka_err2str(err));
                return 1;
        }
        return 0;
}

static int set(rbk_conf_t *conf, const char *k, const char *v) {
        char e[512];
        if (rbk_conf_set(conf, k, v, e, sizeof(e))) {
                fprintf(stderr, "admin_consumer: %s\n", e);
                return -1;
        }
        return 0;
}

static int do_consume(const char *bs, const char *topic, const char *group,
                      const char *control, const char *dir) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/handled", dir);
        g_handled = fopen(path, "a");
        snprintf(path, sizeof(path), "%s/quarantined", dir);
        g_quarantined = fopen(path, "a");
        if (!g_handled || !g_quarantined) {
                fprintf(stderr, "admin_consumer: cannot open files in %s\n",
                        dir);
                return 1;
        }
        rbk_conf_t *conf = rbk_conf_new();
        if (set(conf, "bootstrap.servers", bs) ||
            set(conf, "group.id", group) ||
            set(conf, "session.timeout.ms", "6000") ||
            set(conf, "auto.commit.interval.ms", "500") ||
            set(conf, "rbk.client.name", "admin-test-consumer") ||
            set(conf, "rbk.control.topic", control) ||
            set(conf, "rbk.hook.rate.limit.ms", "0"))
                return 1;
        rbk_conf_set_hook(conf, hook, NULL);
        char e[512];
        g_c = rbk_consumer_new(conf, e, sizeof(e));
        if (!g_c) {
                fprintf(stderr, "admin_consumer: %s\n", e);
                return 1;
        }
        const char *topics[1] = {topic};
        if (rbk_consumer_subscribe(g_c, topics, 1, e, sizeof(e))) {
                fprintf(stderr, "admin_consumer: %s\n", e);
                return 1;
        }
        signal(SIGTERM, on_term);
        signal(SIGINT, on_term);
        rbk_err_t err = rbk_consumer_run(g_c, handler, NULL);
        rbk_consumer_destroy(g_c);
        rbk_conf_destroy(conf);
        fclose(g_handled);
        fclose(g_quarantined);
        return err ? 1 : 0;
}

int main(int argc, char **argv) {
        if (argc < 2)
                return usage();
        const char *mode = argv[1];
        const char *bs = NULL, *topic = NULL, *group = NULL, *control = NULL,
                   *dir = NULL;
        int32_t partition = 0;
        int64_t offset = -1;
        int ch;
        optind = 2;
        while ((ch = getopt(argc, argv, "b:t:g:c:d:p:O:")) != -1) {
                switch (ch) {
                case 'b': bs = optarg; break;
                case 't': topic = optarg; break;
                case 'g': group = optarg; break;
                case 'c': control = optarg; break;
                case 'd': dir = optarg; break;
                case 'p': partition = (int32_t)atoi(optarg); break;
                case 'O': offset = atoll(optarg); break;
                default: return usage();
                }
        }
        if (!bs || !topic || !group)
                return usage();
        if (!strcmp(mode, "commit") && offset >= 0)
                return do_commit(bs, topic, group, partition, offset);
        if (!strcmp(mode, "consume") && control && dir)
                return do_consume(bs, topic, group, control, dir);
        return usage();
}
