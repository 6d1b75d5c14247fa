/* A librdkafka mock cluster in a process of its own, for the benchmarks:
 * the clients measured run in other processes, so their CPU time
 * (getrusage(RUSAGE_SELF)) never includes the brokers'.
 *
 *   mockcluster [-b BROKERS] TOPIC:PARTITIONS ...
 *
 * Creates the cluster (3 brokers unless -b says otherwise) through an
 * internal producer handle, creates each topic with replication factor
 * min(3, brokers), prints the bootstrap list as one line on stdout, then
 * runs until SIGTERM or SIGINT. All brokers share one thread of this process
 * (librdkafka's mock design). */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_req;

static void on_signal(int sig) {
        (void)sig;
        stop_req = 1;
}

static int usage(const char *argv0) {
        fprintf(stderr, "usage: %s [-b BROKERS] TOPIC:PARTITIONS ...\n",
                argv0);
        return 2;
}

int main(int argc, char **argv) {
        int brokers = 3;
        int i = 1;
        if (i + 1 < argc && !strcmp(argv[i], "-b")) {
                brokers = atoi(argv[i + 1]);
                i += 2;
        }
        if (brokers < 1 || brokers > 16 || i >= argc)
                return usage(argv[0]);

        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        /* The handle only hosts the cluster; it never connects. */
        rd_kafka_conf_set(conf, "bootstrap.servers", "", NULL, 0);
        rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "mockcluster: rd_kafka_new: %s\n", errstr);
                return 1;
        }
        rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
        if (!mc) {
                fprintf(stderr, "mockcluster: cannot create the cluster\n");
                rd_kafka_destroy(rk);
                return 1;
        }
        int rf = brokers < 3 ? brokers : 3;
        for (; i < argc; i++) {
                char name[256];
                const char *colon = strrchr(argv[i], ':');
                int parts = colon ? atoi(colon + 1) : 0;
                size_t len = colon ? (size_t)(colon - argv[i]) : 0;
                if (!colon || parts < 1 || len == 0 || len >= sizeof(name)) {
                        fprintf(stderr,
                                "mockcluster: bad topic \"%s\" (want "
                                "NAME:PARTITIONS)\n",
                                argv[i]);
                        rd_kafka_mock_cluster_destroy(mc);
                        rd_kafka_destroy(rk);
                        return 2;
                }
                memcpy(name, argv[i], len);
                name[len] = '\0';
                rd_kafka_resp_err_t err =
                    rd_kafka_mock_topic_create(mc, name, parts, rf);
                if (err) {
                        fprintf(stderr, "mockcluster: creating %s: %s\n", name,
                                rd_kafka_err2str(err));
                        rd_kafka_mock_cluster_destroy(mc);
                        rd_kafka_destroy(rk);
                        return 1;
                }
        }

        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, SIGTERM);
        sigaddset(&block, SIGINT);
        /* Blocked until sigsuspend(): a signal can never slip in between
         * the check and the wait. */
        pthread_sigmask(SIG_BLOCK, &block, &old);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
        fflush(stdout);
        while (!stop_req)
                sigsuspend(&old);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 0;
}
