/*
 * producer_service: a long-lived producer service, the template to copy.
 *
 *   - one process-wide producer (rbk_producer_get), shared by N worker
 *     threads: every thread asks for it by name and gets the same handle;
 *   - configured from the environment (KAFKA_URL, KAFKA_TRUSTED_CERT,
 *     KAFKA_CLIENT_CERT, KAFKA_CLIENT_CERT_KEY, KAFKA_PREFIX) when KAFKA_URL
 *     is set, otherwise from the bootstrap servers given with -b;
 *   - a delivery callback that counts every message exactly once, as
 *     delivered or failed;
 *   - a clean stop on SIGTERM (or SIGINT): workers stop sending,
 *     rbk_shutdown() flushes what is in flight within the stop window and
 *     reports what could not be delivered, then a summary is printed.
 *
 * Build (installed library):
 *   cc -o producer_service producer_service.c $(pkg-config --cflags --libs robustkafka)
 *
 * Run:
 *   KAFKA_URL=kafka://127.0.0.1:9092 ./producer_service -t events -w 4
 *   ./producer_service -b 127.0.0.1:9092 -t events -n 10000
 *
 * Exit status: 0 when every accepted message was delivered, 1 otherwise,
 * 2 for usage or configuration errors.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <robustkafka.h>

static volatile sig_atomic_t stopping;

static void on_signal(int sig) {
        (void)sig;
        stopping = 1;
}

/* Counters updated by the delivery callback (producer's poll thread) and by
 * the workers. */
static struct {
        atomic_ulong accepted;
        atomic_ulong rejected;
        atomic_ulong delivered;
        atomic_ulong failed;
        atomic_ulong failed_shutdown;
        atomic_ulong possibly_persisted;
        atomic_ulong resent;
} cnt;

/* Called exactly once per accepted message, on the producer's poll thread.
 * Keep it short: count, and log failures (a real service would also
 * persist or re-queue the failed payloads it cannot lose). */
static void on_delivery(const rbk_delivery_t *dr, void *opaque) {
        (void)opaque;
        if (dr->resent)
                atomic_fetch_add(&cnt.resent, 1);
        if (dr->err == RBK_OK) {
                atomic_fetch_add(&cnt.delivered, 1);
                return;
        }
        unsigned long n = atomic_fetch_add(&cnt.failed, 1);
        if (dr->err == RBK_ERR_SHUTDOWN)
                atomic_fetch_add(&cnt.failed_shutdown, 1);
        if (dr->possibly_persisted)
                atomic_fetch_add(&cnt.possibly_persisted, 1);
        if (n < 10) /* the first few; the summary has the totals */
                fprintf(stderr,
                        "producer_service: message %s to %s failed: %s (%s)%s\n",
                        dr->id ? dr->id : "-", dr->topic ? dr->topic : "-",
                        rbk_err2name(dr->err), dr->reason,
                        dr->possibly_persisted ? ", possibly persisted" : "");
}

/* Failures reach the application through the hook only. Here it just logs
 * the event as JSON; examples/paging_hook.c pages a human. */
static void on_event(const rbk_event_t *ev, void *opaque) {
        (void)opaque;
        char *json = rbk_event_to_json(ev);
        fprintf(stderr, "producer_service: event %s\n", json ? json : "?");
        rbk_free(json);
}

struct worker {
        pthread_t thread;
        int index;
        const rbk_conf_t *conf; /* shared, read-only */
        const char *topic;
        unsigned long count;    /* messages to send; 0: until stopped */
        double rate;            /* messages per second; 0: unthrottled */
};

static void sleep_ms(long ms) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !stopping)
                ;
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker_main(void *arg) {
        struct worker *w = arg;
        char errstr[512];

        /* Any thread (or module) asks for the producer by name: the first
         * call creates it, later calls return the same handle. Never create
         * a producer per request. */
        rbk_producer_t *p = rbk_producer_get(NULL, w->conf, errstr,
                                             sizeof(errstr));
        if (!p) {
                fprintf(stderr, "producer_service: worker %d: %s\n", w->index,
                        errstr);
                return NULL;
        }

        char key[32], value[128];
        snprintf(key, sizeof(key), "worker-%d", w->index);
        double start = now_s();
        unsigned long i = 0;
        while (!stopping && (w->count == 0 || i < w->count)) {
                int vlen = snprintf(value, sizeof(value),
                                    "{\"worker\":%d,\"n\":%lu}", w->index, i);
                rbk_msg_t m = RBK_MSG_INIT;
                m.topic = w->topic;
                m.key = key;
                m.key_len = strlen(key);
                m.value = value;
                m.value_len = (size_t)vlen;

                rbk_err_t err = rbk_producer_send(p, &m, errstr,
                                                  sizeof(errstr));
                if (err == RBK_OK) {
                        atomic_fetch_add(&cnt.accepted, 1);
                        i++;
                } else if (rbk_err_is_retriable(err)) {
                        /* Queue full for the whole send timeout: the
                         * cluster is slower than we are. Back off and try
                         * the same message again. */
                        fprintf(stderr, "producer_service: worker %d: %s, "
                                "backing off\n", w->index, errstr);
                        sleep_ms(500);
                        continue;
                } else {
                        /* Not accepted and not retriable: invalid message,
                         * shutdown, or the producer gave up after too many
                         * fatal errors. The callback will not run for it. */
                        atomic_fetch_add(&cnt.rejected, 1);
                        fprintf(stderr, "producer_service: worker %d: %s: "
                                "%s\n", w->index, rbk_err2name(err), errstr);
                        if (rbk_err_is_fatal(err))
                                break;
                        i++;
                }
                if (w->rate > 0) {
                        double due = start + (double)i / w->rate;
                        double ahead = due - now_s();
                        if (ahead > 0.001)
                                sleep_ms((long)(ahead * 1000));
                }
        }

        rbk_producer_put(p); /* drops this thread's reference only */
        return NULL;
}

static void usage(const char *argv0) {
        fprintf(stderr,
                "usage: %s [-b bootstrap] [-t topic] [-w workers] [-n count] "
                "[-r rate] [-X name=value]...\n"
                "  Configuration comes from KAFKA_URL and friends when "
                "KAFKA_URL is set,\n"
                "  else from -b (default 127.0.0.1:9092).\n"
                "  -t topic     topic to produce to (default: events)\n"
                "  -w workers   sending threads (default: 4)\n"
                "  -n count     messages per worker, 0 = until SIGTERM "
                "(default: 0)\n"
                "  -r rate      messages per second per worker, 0 = "
                "unthrottled (default: 100)\n"
                "  -X name=val  any configuration property (repeatable)\n",
                argv0);
}

int main(int argc, char **argv) {
        const char *bootstrap = "127.0.0.1:9092", *topic = "events";
        int nworkers = 4;
        unsigned long count = 0;
        double rate = 100;
        char errstr[512];
        char *props[64];
        int nprops = 0, opt;

        while ((opt = getopt(argc, argv, "b:t:w:n:r:X:h")) != -1) {
                switch (opt) {
                case 'b': bootstrap = optarg; break;
                case 't': topic = optarg; break;
                case 'w': nworkers = atoi(optarg); break;
                case 'n': count = strtoul(optarg, NULL, 10); break;
                case 'r': rate = atof(optarg); break;
                case 'X':
                        if (nprops == 64 || !strchr(optarg, '=')) {
                                usage(argv[0]);
                                return 2;
                        }
                        props[nprops++] = optarg;
                        break;
                default: usage(argv[0]); return opt == 'h' ? 0 : 2;
                }
        }
        if (nworkers < 1 || nworkers > 256 || rate < 0) {
                usage(argv[0]);
                return 2;
        }

        /* Configuration: the Heroku-style environment when present (URL,
         * certificates and prefix all come from there), else the command
         * line. The library applies its robust defaults on top. */
        rbk_conf_t *conf;
        if (getenv("KAFKA_URL")) {
                conf = rbk_conf_from_env(NULL, errstr, sizeof(errstr));
                if (!conf) {
                        fprintf(stderr, "producer_service: %s\n", errstr);
                        return 2;
                }
        } else {
                conf = rbk_conf_new();
                if (!conf || rbk_conf_set(conf, "bootstrap.servers", bootstrap,
                                          errstr, sizeof(errstr)) != RBK_OK) {
                        fprintf(stderr, "producer_service: %s\n",
                                conf ? errstr : "out of memory");
                        rbk_conf_destroy(conf);
                        return 2;
                }
        }
        rbk_conf_set(conf, "rbk.client.name", "producer_service", NULL, 0);
        for (int i = 0; i < nprops; i++) {
                char *eq = strchr(props[i], '=');
                *eq = '\0';
                if (rbk_conf_set(conf, props[i], eq + 1, errstr,
                                 sizeof(errstr)) != RBK_OK) {
                        fprintf(stderr, "producer_service: -X %s: %s\n",
                                props[i], errstr);
                        rbk_conf_destroy(conf);
                        return 2;
                }
        }
        rbk_conf_set_delivery_cb(conf, on_delivery, NULL);
        rbk_conf_set_hook(conf, on_event, NULL);

        /* Create the singleton up front, so a bad configuration fails the
         * start instead of every worker. */
        rbk_producer_t *p = rbk_producer_get(NULL, conf, errstr,
                                             sizeof(errstr));
        if (!p) {
                fprintf(stderr, "producer_service: %s\n", errstr);
                rbk_conf_destroy(conf);
                return 2;
        }

        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        struct worker *workers = calloc((size_t)nworkers, sizeof(*workers));
        if (!workers) {
                fprintf(stderr, "producer_service: out of memory\n");
                return 2;
        }
        fprintf(stderr, "producer_service: %d workers producing to %s%s\n",
                nworkers, topic, count ? "" : " until SIGTERM");
        double t0 = now_s();
        int started = 0;
        for (int i = 0; i < nworkers; i++) {
                workers[i].index = i;
                workers[i].conf = conf;
                workers[i].topic = topic;
                workers[i].count = count;
                workers[i].rate = rate;
                if (pthread_create(&workers[i].thread, NULL, worker_main,
                                   &workers[i]) != 0) {
                        fprintf(stderr, "producer_service: cannot start "
                                "worker %d\n", i);
                        stopping = 1;
                        break;
                }
                started++;
        }
        for (int i = 0; i < started; i++)
                pthread_join(workers[i].thread, NULL);
        free(workers);

        /* Stop: flush what is in flight, report the rest as failed with
         * RBK_ERR_SHUTDOWN through the delivery callback. The platform
         * sends SIGKILL 30 s after SIGTERM (Heroku, Kubernetes): a worker
         * blocked on a full queue returns within
         * rbk.producer.send.timeout.ms (10 s), and the shutdown takes at
         * most rbk.shutdown.timeout.ms (15 s). Registry clients are shut
         * down with rbk_shutdown(), never destroyed. */
        double t1 = now_s();
        fprintf(stderr, "producer_service: %s, flushing\n",
                stopping ? "stop requested" : "done sending");
        rbk_producer_put(p);
        rbk_err_t err = rbk_shutdown(-1);
        double t2 = now_s();
        rbk_conf_destroy(conf);

        unsigned long accepted = atomic_load(&cnt.accepted);
        unsigned long delivered = atomic_load(&cnt.delivered);
        unsigned long failed = atomic_load(&cnt.failed);
        printf("producer_service: accepted=%lu delivered=%lu failed=%lu "
               "failed_at_shutdown=%lu possibly_persisted=%lu resent=%lu "
               "rejected=%lu send_rate=%.0f/s shutdown=%.1fs%s\n",
               accepted, delivered, failed, atomic_load(&cnt.failed_shutdown),
               atomic_load(&cnt.possibly_persisted), atomic_load(&cnt.resent),
               atomic_load(&cnt.rejected),
               t1 > t0 ? (double)accepted / (t1 - t0) : 0.0, t2 - t1,
               err == RBK_OK ? "" : " (timed out)");
        /* Every accepted message was reported exactly once. */
        if (delivered + failed != accepted)
                fprintf(stderr, "producer_service: %lu messages unreported\n",
                        accepted - delivered - failed);
        return failed == 0 && delivered == accepted ? 0 : 1;
}
