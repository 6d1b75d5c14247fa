/*
 * metrics_server: a consumer and a producer served to Prometheus and to
 * probes over HTTP on 127.0.0.1, with libmicrohttpd. The library opens no
 * port; this program does.
 *
 *   GET /metrics   rbk_consumer_metrics() followed by rbk_producer_metrics()
 *                  (text/plain; version=0.0.4)
 *   GET /healthz   200 "ok", or 503 with the reasons of rbk_consumer_health()
 *                  and rbk_producer_health()
 *
 * The producer sends -n messages to the topic (spread over its partitions),
 * the consumer reads them in group -g; both run until SIGTERM or SIGINT.
 * statistics.interval.ms is 1000, so the per-broker figures are filled.
 *
 * RBK_EXAMPLE_NEEDS: libmicrohttpd (the HTTP server; the library needs none)
 * Build (installed library):
 *   cc -o metrics_server metrics_server.c \
 *      $(pkg-config --cflags --libs robustkafka libmicrohttpd)
 *
 * Run:
 *   ./metrics_server -b 127.0.0.1:9092 -t events -g watchers -p 9464
 *   curl -s 127.0.0.1:9464/metrics; curl -s 127.0.0.1:9464/healthz
 *
 * With -p 0 a free port is chosen; the first line on stdout is
 * `listening=127.0.0.1:<port>`. Exit status: 0 after a clean stop, 1 on
 * errors, 2 for usage.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <robustkafka.h>

static volatile sig_atomic_t stopping;

static void on_signal(int sig) {
        (void)sig;
        stopping = 1;
}

typedef struct {
        rbk_consumer_t *c;
        rbk_producer_t *p;
} app_t;

static rbk_verdict_t handle(const rbk_message_t *m, void *opaque) {
        (void)m;
        (void)opaque;
        return RBK_HANDLED;
}

/* Hands @body (malloc()ed, taken) to libmicrohttpd with @status. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, char *body) {
        struct MHD_Response *r = MHD_create_response_from_buffer(
            strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!r) {
                free(body);
                return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", type);
        enum MHD_Result ret = MHD_queue_response(conn, status, r);
        MHD_destroy_response(r);
        return ret;
}

/* libmicrohttpd's request handler: on its own thread. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *data_size, void **state) {
        (void)version;
        (void)data;
        (void)data_size;
        (void)state;
        app_t *app = cls;
        if (strcmp(method, "GET"))
                return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
                             strdup("GET only\n"));
        if (!strcmp(url, "/metrics")) {
                char *cm = rbk_consumer_metrics(app->c);
                char *pm = rbk_producer_metrics(app->p);
                size_t n = (cm ? strlen(cm) : 0) + (pm ? strlen(pm) : 0) + 1;
                char *body = malloc(n);
                if (!body) {
                        rbk_free(cm);
                        rbk_free(pm);
                        return MHD_NO;
                }
                snprintf(body, n, "%s%s", cm ? cm : "", pm ? pm : "");
                rbk_free(cm);
                rbk_free(pm);
                return reply(conn, MHD_HTTP_OK,
                             "text/plain; version=0.0.4; charset=utf-8", body);
        }
        if (!strcmp(url, "/healthz")) {
                char cw[1024], pw[1024], *body = malloc(2200);
                if (!body)
                        return MHD_NO;
                rbk_err_t ce = rbk_consumer_health(app->c, cw, sizeof(cw));
                rbk_err_t pe = rbk_producer_health(app->p, pw, sizeof(pw));
                if (!ce && !pe) {
                        snprintf(body, 2200, "ok\n");
                        return reply(conn, MHD_HTTP_OK, "text/plain", body);
                }
                snprintf(body, 2200, "consumer: %s%s%s\nproducer: %s%s%s\n",
                         rbk_err2name(ce), ce ? ": " : "", ce ? cw : "",
                         rbk_err2name(pe), pe ? ": " : "", pe ? pw : "");
                return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                             body);
        }
        return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain",
                     strdup("/metrics or /healthz\n"));
}

static int set(rbk_conf_t *conf, const char *k, const char *v) {
        char e[512];
        if (rbk_conf_set(conf, k, v, e, sizeof(e)) == RBK_OK)
                return 0;
        fprintf(stderr, "metrics_server: %s: %s\n", k, e);
        return -1;
}

int main(int argc, char **argv) {
        const char *bootstrap = NULL, *topic = NULL, *group = "metrics-server";
        int port = 9464, n = 100, opt;
        while ((opt = getopt(argc, argv, "b:t:g:p:n:")) != -1) {
                switch (opt) {
                case 'b': bootstrap = optarg; break;
                case 't': topic = optarg; break;
                case 'g': group = optarg; break;
                case 'p': port = atoi(optarg); break;
                case 'n': n = atoi(optarg); break;
                default: bootstrap = NULL; optind = argc; break;
                }
        }
        if (!bootstrap || !topic || port < 0 || port > 65535) {
                fprintf(stderr, "usage: metrics_server -b BOOTSTRAP -t TOPIC "
                                "[-g GROUP] [-p PORT] [-n MESSAGES]\n");
                return 2;
        }
        char e[512];
        rbk_conf_t *conf = rbk_conf_new();
        if (set(conf, "bootstrap.servers", bootstrap) ||
            set(conf, "statistics.interval.ms", "1000") ||
            set(conf, "rbk.client.name", "metrics-server"))
                return 2;
        app_t app = {NULL, NULL};
        app.p = rbk_producer_new(conf, e, sizeof(e));
        if (!app.p) {
                fprintf(stderr, "metrics_server: producer: %s\n", e);
                return 1;
        }
        if (set(conf, "group.id", group))
                return 2;
        app.c = rbk_consumer_new(conf, e, sizeof(e));
        const char *topics[] = {topic};
        if (!app.c ||
            rbk_consumer_subscribe(app.c, topics, 1, e, sizeof(e)) ||
            rbk_consumer_start(app.c, handle, NULL)) {
                fprintf(stderr, "metrics_server: consumer: %s\n", e);
                return 1;
        }
        for (int i = 0; i < n; i++) {
                char v[32];
                snprintf(v, sizeof(v), "message-%d", i);
                rbk_msg_t m = RBK_MSG_INIT;
                m.topic = topic;
                m.key = v;
                m.key_len = strlen(v);
                m.value = v;
                m.value_len = strlen(v);
                if (rbk_producer_send(app.p, &m, e, sizeof(e))) {
                        fprintf(stderr, "metrics_server: send: %s\n", e);
                        return 1;
                }
        }

        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct MHD_Daemon *d = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
            on_request, &app, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
            MHD_OPTION_END);
        if (!d) {
                fprintf(stderr, "metrics_server: cannot listen on "
                                "127.0.0.1:%d\n", port);
                return 1;
        }
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        printf("listening=127.0.0.1:%u\n", info ? info->port : (unsigned)port);
        fflush(stdout);

        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        while (!stopping)
                pause();
        MHD_stop_daemon(d);
        rbk_consumer_stop(app.c);
        rbk_err_t ce = rbk_consumer_close(app.c, 10000);
        rbk_err_t pe = rbk_producer_close(app.p, 10000);
        rbk_consumer_destroy(app.c);
        rbk_producer_destroy(app.p);
        rbk_conf_destroy(conf);
        return ce || pe ? 1 : 0;
}
