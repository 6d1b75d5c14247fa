/*
 * tls_client: the program behind tests/kafka/tls.sh.
 *
 * The configuration comes from the Heroku-style environment
 * (rbk_conf_from_env: KAFKA_URL, KAFKA_TRUSTED_CERT, KAFKA_CLIENT_CERT,
 * KAFKA_CLIENT_CERT_KEY, KAFKA_PREFIX) when KAFKA_URL is set, else from an
 * empty configuration; -X name=value properties are applied on top
 * (-X name=@file reads the value from a file, so no PEM or password has to
 * be on a command line). Every hook event is written to stderr as
 * "event: {json}" and every log line as "log: LEVEL FACILITY LINE", so the
 * suite can assert on them and grep them for secrets.
 *
 * Modes:
 *   tls_client produce -t TOPIC -n N -o ACKED [-r RATE] [-X name=value]...
 *       sends N messages with ids t-0..t-(N-1) at RATE msg/s (default 200);
 *       every delivered id goes to ACKED, one a line. Exit 0 when all N
 *       were delivered, 1 otherwise.
 *   tls_client consume -t TOPIC -g GROUP -o IDS -n N [-T SECS] [-X ...]
 *       writes the id of every handled message to IDS until N distinct ids
 *       were handled (exit 0) or SECS (default 120) passed (exit 1).
 *   tls_client probe -t TOPIC [-T MS] [-X ...]
 *       sends one message with message.timeout.ms=MS (default 8000) and
 *       waits for its report; prints one line on stdout:
 *       probe: result=conf_error|delivered|failed err=NAME kafka_err=NAME
 *              elapsed_ms=N client_errors=N suppressed=N
 *       and the message of the first client error event as
 *       probe-error: MESSAGE. Exit 0 (delivered), 1 (failed), 2 (refused
 *       at configuration time; the reason on stdout as probe-conf: MESSAGE).
 *   tls_client rdkafka-version
 *       prints the running librdkafka's version: 0xMMmmrrxx TEXT.
 *
 * -A SECS (any mode but rdkafka-version) installs an OAUTHBEARER token
 * refresh callback that mints unsecured JWTs (header {"alg":"none"}, claims
 * sub, iat, exp = iat + SECS) as Kafka's default validator accepts them;
 * -A fail installs one that always reports a failure. -k FILE appends every
 * minted token to FILE (for the suite's search for secrets). At exit the
 * number of callback calls goes to stderr as
 * "oauth: refreshes=N refused=N" (refused: tokens the client did not take).
 */
#include <robustkafka.h>

#include <librdkafka/rdkafka.h>
#include <glib.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *g_out;
static long g_delivered, g_failed, g_reported;
static int g_client_errors;
static uint64_t g_suppressed;
static char g_first_error[640];
static GHashTable *g_seen;
static int g_oauth_secs;             /* -A SECS; -1: -A fail; 0: none */
static FILE *g_tokens;               /* -k FILE */
static int g_refreshes, g_refused;

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

static void hook(const rbk_event_t *ev, void *opaque) {
        (void)opaque;
        char *json = rbk_event_to_json(ev);
        fprintf(stderr, "event: %s\n", json ? json : "?");
        rbk_free(json);
        if (ev->cls == RBK_EV_CLIENT_ERROR) {
                pthread_mutex_lock(&g_lock);
                if (!g_client_errors++)
                        snprintf(g_first_error, sizeof(g_first_error), "%s",
                                 ev->message);
                g_suppressed += ev->suppressed;
                pthread_mutex_unlock(&g_lock);
        }
}

static void log_cb(int level, const char *fac, const char *line,
                   void *opaque) {
        (void)opaque;
        fprintf(stderr, "log: %d %s %s\n", level, fac, line);
}

static char *read_file(const char *path) {
        gchar *s = NULL;
        GError *e = NULL;
        if (!g_file_get_contents(path, &s, NULL, &e)) {
                fprintf(stderr, "tls_client: cannot read %s: %s\n", path,
                        e->message);
                g_error_free(e);
                exit(2);
        }
        g_strchomp(s);
        return s;
}

/* ------------------------------------------------------------ OAUTHBEARER */

/* base64url without padding (RFC 7515, section 2), as a JWT uses it. */
static char *b64url(const char *s) {
        char *b = g_base64_encode((const guchar *)s, strlen(s));
        char *w = b;
        for (char *r = b; *r; r++) {
                if (*r == '=')
                        continue;
                *w++ = *r == '+' ? '-' : *r == '/' ? '_' : *r;
        }
        *w = '\0';
        return b;
}

static void oauth_refresh(const char *config, rbk_oauth_token_setter_t *setter,
                          void *opaque) {
        (void)config;
        (void)opaque;
        pthread_mutex_lock(&g_lock);
        int n = ++g_refreshes;
        pthread_mutex_unlock(&g_lock);
        if (g_oauth_secs < 0) {
                rbk_oauthbearer_set_token_failure(
                    setter, "identity provider unreachable (test)");
                return;
        }
        /* iat in whole seconds, never ahead of the broker's clock (the
         * unsecured validator allows no skew by default). */
        int64_t iat = g_get_real_time() / G_USEC_PER_SEC;
        int64_t exp = iat + g_oauth_secs;
        char claims[256];
        snprintf(claims, sizeof(claims),
                 "{\"sub\":\"rbk-oauth\",\"iat\":%" PRId64 ",\"exp\":%" PRId64
                 ",\"jti\":\"%d-%d\"}",
                 iat, exp, (int)getpid(), n);
        char *h = b64url("{\"alg\":\"none\"}"), *c = b64url(claims);
        char *jwt = g_strconcat(h, ".", c, ".", NULL);
        char e[512];
        rbk_err_t err = rbk_oauthbearer_set_token(setter, jwt, exp * 1000,
                                                  "rbk-oauth", e, sizeof(e));
        pthread_mutex_lock(&g_lock);
        if (err) {
                g_refused++;
                fprintf(stderr, "oauth: token refused: %s: %s\n",
                        rbk_err2name(err), e);
        }
        if (g_tokens) {
                fprintf(g_tokens, "%s\n", jwt);
                fflush(g_tokens);
        }
        pthread_mutex_unlock(&g_lock);
        g_free(jwt);
        g_free(c);
        g_free(h);
}

/* The configuration: environment (when KAFKA_URL is set) + -X properties.
 * NULL with the reason in errstr. */
static rbk_conf_t *make_conf(char **props, int nprops, char *errstr,
                             size_t size) {
        rbk_conf_t *conf = getenv("KAFKA_URL")
                               ? rbk_conf_from_env(NULL, errstr, size)
                               : rbk_conf_new();
        if (!conf)
                return NULL;
        for (int i = 0; i < nprops; i++) {
                char *name = g_strdup(props[i]);
                char *v = strchr(name, '=');
                *v++ = '\0';
                char *val = *v == '@' ? read_file(v + 1) : g_strdup(v);
                rbk_err_t err = rbk_conf_set(conf, name, val, errstr, size);
                g_free(val);
                g_free(name);
                if (err) {
                        rbk_conf_destroy(conf);
                        return NULL;
                }
        }
        rbk_conf_set_hook(conf, hook, NULL);
        rbk_conf_set_log_cb(conf, log_cb, NULL);
        if (g_oauth_secs)
                rbk_conf_set_oauthbearer_token_refresh_cb(conf, oauth_refresh,
                                                          NULL);
        return conf;
}

/* ------------------------------------------------------------ produce */

static void on_delivery(const rbk_delivery_t *dr, void *opaque) {
        (void)opaque;
        pthread_mutex_lock(&g_lock);
        if (dr->err == RBK_OK) {
                g_delivered++;
                if (g_out) {
                        fprintf(g_out, "%s\n", dr->id);
                        fflush(g_out);
                }
        } else {
                g_failed++;
                fprintf(stderr, "failed: %s %s %s\n", dr->id,
                        rbk_err2name(dr->err), dr->reason);
        }
        g_reported++;
        pthread_mutex_unlock(&g_lock);
}

static int do_produce(rbk_conf_t *conf, const char *topic, long n,
                      long rate) {
        char e[512];
        rbk_conf_set_delivery_cb(conf, on_delivery, NULL);
        rbk_producer_t *p = rbk_producer_new(conf, e, sizeof(e));
        if (!p) {
                fprintf(stderr, "tls_client produce: %s\n", e);
                return 2;
        }
        int64_t t0 = now_ms();
        for (long i = 0; i < n; i++) {
                char id[32], val[64];
                snprintf(id, sizeof(id), "t-%ld", i);
                snprintf(val, sizeof(val), "tls message %ld", i);
                rbk_msg_t m = RBK_MSG_INIT;
                m.topic = topic;
                m.key = id;
                m.key_len = strlen(id);
                m.value = val;
                m.value_len = strlen(val);
                m.id = id;
                rbk_err_t err = rbk_producer_send(p, &m, e, sizeof(e));
                if (err) {
                        fprintf(stderr, "tls_client produce: send %ld: %s: %s\n",
                                i, rbk_err2name(err), e);
                        break;
                }
                int64_t due = t0 + (i + 1) * 1000 / rate;
                int64_t now = now_ms();
                if (due > now)
                        sleep_ms((int)(due - now));
        }
        rbk_producer_close(p, 180000);
        rbk_producer_destroy(p);
        fprintf(stderr, "tls_client produce: delivered=%ld failed=%ld of %ld\n",
                g_delivered, g_failed, n);
        return g_delivered == n && g_failed == 0 ? 0 : 1;
}

/* ------------------------------------------------------------ consume */

static rbk_verdict_t on_message(const rbk_message_t *m, void *opaque) {
        (void)opaque;
        pthread_mutex_lock(&g_lock);
        const char *id = m->id ? m->id : "(none)";
        fprintf(g_out, "%s\n", id);
        fflush(g_out);
        g_hash_table_add(g_seen, g_strdup(id));
        pthread_mutex_unlock(&g_lock);
        return RBK_HANDLED;
}

static int do_consume(rbk_conf_t *conf, const char *topic, const char *group,
                      long n, int secs) {
        char e[512];
        if (rbk_conf_set(conf, "group.id", group, e, sizeof(e))) {
                fprintf(stderr, "tls_client consume: %s\n", e);
                return 2;
        }
        rbk_consumer_t *c = rbk_consumer_new(conf, e, sizeof(e));
        if (!c) {
                fprintf(stderr, "tls_client consume: %s\n", e);
                return 2;
        }
        const char *topics[] = {topic};
        if (rbk_consumer_subscribe(c, topics, 1, e, sizeof(e)) ||
            rbk_consumer_start(c, on_message, NULL)) {
                fprintf(stderr, "tls_client consume: %s\n", e);
                rbk_consumer_destroy(c);
                return 2;
        }
        int64_t end = now_ms() + (int64_t)secs * 1000;
        long have = 0;
        while (now_ms() < end) {
                pthread_mutex_lock(&g_lock);
                have = (long)g_hash_table_size(g_seen);
                pthread_mutex_unlock(&g_lock);
                if (have >= n)
                        break;
                sleep_ms(100);
        }
        rbk_consumer_stop(c);
        rbk_consumer_close(c, 30000);
        rbk_consumer_destroy(c);
        fprintf(stderr, "tls_client consume: %ld distinct ids of %ld\n", have,
                n);
        return have >= n ? 0 : 1;
}

/* ------------------------------------------------------------ probe */

static int do_probe(char **props, int nprops, const char *topic,
                    int bound_ms) {
        char e[512];
        int64_t t0 = now_ms();
        rbk_conf_t *conf = make_conf(props, nprops, e, sizeof(e));
        rbk_producer_t *p = NULL;
        if (conf) {
                char b[16];
                snprintf(b, sizeof(b), "%d", bound_ms);
                rbk_conf_set_delivery_cb(conf, on_delivery, NULL);
                if (rbk_conf_set(conf, "message.timeout.ms", b, e,
                                 sizeof(e)) == RBK_OK)
                        p = rbk_producer_new(conf, e, sizeof(e));
                rbk_conf_destroy(conf);
        }
        if (!p) {
                printf("probe: result=conf_error elapsed_ms=%" PRId64 "\n",
                       now_ms() - t0);
                printf("probe-conf: %s\n", e);
                return 2;
        }
        rbk_msg_t m = RBK_MSG_INIT;
        m.topic = topic;
        m.value = "probe";
        m.value_len = 5;
        int64_t off = -1;
        rbk_err_t err = rbk_producer_send_sync(p, &m, bound_ms + 30000, &off,
                                               e, sizeof(e));
        int64_t elapsed = now_ms() - t0;
        /* Let the poll thread report what it has before counting. */
        rbk_producer_close(p, 1000);
        rbk_producer_destroy(p);
        pthread_mutex_lock(&g_lock);
        const char *kerr = "none";
        if (err) {
                /* The reason names librdkafka's error: "...: _MSG_TIMED_OUT: ..." */
                kerr = strstr(e, "_MSG_TIMED_OUT") ? "_MSG_TIMED_OUT" : "other";
        }
        printf("probe: result=%s err=%s kafka_err=%s elapsed_ms=%" PRId64
               " client_errors=%d suppressed=%" PRIu64 "\n",
               err ? "failed" : "delivered", rbk_err2name(err), kerr, elapsed,
               g_client_errors, g_suppressed);
        if (err)
                printf("probe-reason: %s\n", e);
        if (g_client_errors)
                printf("probe-error: %s\n", g_first_error);
        pthread_mutex_unlock(&g_lock);
        return err ? 1 : 0;
}

/* ------------------------------------------------------------ main */

static int usage(void) {
        fprintf(stderr,
                "usage: tls_client produce -t TOPIC -n N -o ACKED [-r RATE] "
                "[-X name=value]...\n"
                "       tls_client consume -t TOPIC -g GROUP -o IDS -n N "
                "[-T SECS] [-X name=value]...\n"
                "       tls_client probe -t TOPIC [-T MS] [-X "
                "name=value]...\n"
                "       common options: -A SECS|fail (OAUTHBEARER tokens), "
                "-k TOKENS-FILE\n");
        return 2;
}

/* produce and consume: the configuration, the ids file, the mode. */
static int run_client(const char *mode, char **props, int nprops,
                      const char *topic, const char *group, const char *out,
                      long n, long rate, int timeout) {
        char e[512];
        if (!out || n <= 0)
                return usage();
        rbk_conf_t *conf = make_conf(props, nprops, e, sizeof(e));
        if (!conf) {
                fprintf(stderr, "tls_client %s: %s\n", mode, e);
                return 2;
        }
        g_out = fopen(out, "a");
        if (!g_out) {
                fprintf(stderr, "tls_client: cannot open %s: %s\n", out,
                        strerror(errno));
                return 2;
        }
        int rc;
        if (!strcmp(mode, "produce"))
                rc = do_produce(conf, topic, n, rate);
        else if (!strcmp(mode, "consume") && group)
                rc = do_consume(conf, topic, group, n,
                                timeout > 0 ? timeout : 120);
        else
                rc = usage();
        rbk_conf_destroy(conf);
        fclose(g_out);
        return rc;
}

int main(int argc, char **argv) {
        if (argc < 2)
                return usage();
        const char *mode = argv[1];
        if (!strcmp(mode, "rdkafka-version")) {
                /* For the suite: librdkafka's version, hex and as text. */
                printf("0x%08x %s\n", rd_kafka_version(),
                       rd_kafka_version_str());
                return 0;
        }
        const char *topic = NULL, *group = NULL, *out = NULL, *tokens = NULL;
        long n = 0, rate = 200;
        int timeout = -1, opt, nprops = 0;
        char *props[64];
        optind = 2;
        while ((opt = getopt(argc, argv, "t:g:o:n:r:T:X:A:k:")) != -1) {
                switch (opt) {
                case 't': topic = optarg; break;
                case 'g': group = optarg; break;
                case 'o': out = optarg; break;
                case 'n': n = atol(optarg); break;
                case 'r': rate = atol(optarg); break;
                case 'T': timeout = atoi(optarg); break;
                case 'A':
                        g_oauth_secs = !strcmp(optarg, "fail") ? -1 : atoi(optarg);
                        if (!g_oauth_secs)
                                return usage();
                        break;
                case 'k': tokens = optarg; break;
                case 'X':
                        if (nprops == 64 || !strchr(optarg, '='))
                                return usage();
                        props[nprops++] = optarg;
                        break;
                default: return usage();
                }
        }
        if (!topic || rate <= 0)
                return usage();
        setvbuf(stdout, NULL, _IOLBF, 0);
        g_seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        if (tokens && !(g_tokens = fopen(tokens, "a"))) {
                fprintf(stderr, "tls_client: cannot open %s: %s\n", tokens,
                        strerror(errno));
                return 2;
        }
        int rc;
        if (!strcmp(mode, "probe"))
                rc = do_probe(props, nprops, topic,
                              timeout > 0 ? timeout : 8000);
        else
                rc = run_client(mode, props, nprops, topic, group, out, n,
                                rate, timeout);
        if (g_oauth_secs) {
                pthread_mutex_lock(&g_lock);
                fprintf(stderr, "oauth: refreshes=%d refused=%d\n",
                        g_refreshes, g_refused);
                pthread_mutex_unlock(&g_lock);
        }
        if (g_tokens)
                fclose(g_tokens);
        return rc;
}
