/*
 * paging_hook: the hook a service copies to get paged.
 *
 * Failures reach the application through one callback, the hook
 * (rbk_conf_set_hook). page_hook() below:
 *
 *   1. writes the event as one line of JSON (rbk_event_to_json) to stderr,
 *      where log collectors (Heroku's logplex, journald, Kubernetes) pick
 *      it up, and to syslog at the matching priority;
 *   2. for events that need a human (severity error or critical) and for
 *      quarantine resolutions (so the page can be closed), runs the shell
 *      command in RBK_PAGE_COMMAND, if set, with the event in its
 *      environment:
 *
 *        RBK_EVENT_CLASS      e.g. offset_out_of_range, quarantine_resolved
 *        RBK_EVENT_SEVERITY   info | warning | error | critical
 *        RBK_EVENT_MESSAGE    human-readable, secrets redacted
 *        RBK_EVENT_JSON       the whole event as JSON
 *        RBK_INCIDENT_KEY     stable key: use it as the pager's dedup key
 *        RBK_EVENT_REPEAT     1 if this incident was reported before
 *        RBK_EVENT_SUPPRESSED events of this incident rate-limited since
 *        RBK_CLIENT RBK_GROUP RBK_TOPIC RBK_PARTITION RBK_OFFSET
 *        RBK_COMMITTED_OFFSET RBK_LOW_WATERMARK RBK_HIGH_WATERMARK RBK_GAP
 *        RBK_SKIP_IF_LATEST RBK_REPLAY_IF_EARLIEST RBK_ERROR RBK_ID
 *        (only those that apply to the event are set)
 *
 * Rate limiting: the library delivers an event with an incident key at most
 * once per `rbk.hook.rate.limit.ms` (default one minute) and counts what it
 * suppressed, so one stuck partition pages once a minute, not once per
 * poll. Events without an incident key are paged at most once a minute per
 * class here. The command runs in the background (the hook must not block)
 * and is killed if it takes longer than 30 seconds.
 *
 * Build (installed library):
 *   cc -o paging_hook paging_hook.c $(pkg-config --cflags --libs robustkafka) -lpthread
 *
 * Try the command without a cluster (fires a sample offset_out_of_range):
 *   RBK_PAGE_COMMAND='env | grep ^RBK_ | sort' ./paging_hook --test
 * Run a consumer with the hook installed:
 *   RBK_PAGE_COMMAND='curl -s -d "$RBK_EVENT_JSON" https://pager.example/hook' \
 *       ./paging_hook -b 127.0.0.1:9092 -t events -g paging-demo
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <robustkafka.h>

extern char **environ;

/* ------------------------------------------------------------ the hook:
 * copy from here to the end-of-hook mark into your service. */

#define PAGE_COMMAND_TIMEOUT_MS 30000
#define PAGE_UNKEYED_INTERVAL_S 60

static pthread_once_t page_syslog_once = PTHREAD_ONCE_INIT;

static void page_syslog_open(void) {
        openlog("robustkafka", LOG_PID | LOG_NDELAY, LOG_USER);
}

static int page_syslog_priority(rbk_severity_t sev) {
        switch (sev) {
        case RBK_SEV_CRITICAL: return LOG_CRIT;
        case RBK_SEV_ERROR: return LOG_ERR;
        case RBK_SEV_WARNING: return LOG_WARNING;
        default: return LOG_INFO;
        }
}

/* Waits for a page command in the background; kills it when it hangs. */
static void *page_reap(void *arg) {
        pid_t pid = (pid_t)(intptr_t)arg;
        int status = 0;
        for (int waited = 0;; waited += 100) {
                pid_t r = waitpid(pid, &status, WNOHANG);
                if (r == pid || (r == -1 && errno != EINTR))
                        break;
                if (waited >= PAGE_COMMAND_TIMEOUT_MS) {
                        fprintf(stderr, "page: command (pid %d) timed out, "
                                "killed\n", (int)pid);
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        return NULL;
                }
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fprintf(stderr, "page: command failed (status %d)\n", status);
        return NULL;
}

struct page_env {
        char *vars[32];
        int n;
};

static void page_env_add(struct page_env *e, const char *name,
                         const char *value) {
        if (!value || e->n == 31)
                return;
        size_t len = strlen(name) + strlen(value) + 2;
        char *s = malloc(len);
        if (!s)
                return;
        snprintf(s, len, "%s=%s", name, value);
        e->vars[e->n++] = s;
}

static void page_env_add_int(struct page_env *e, const char *name,
                             int64_t v) {
        char buf[32];
        if (v == RBK_NO_VALUE)
                return;
        snprintf(buf, sizeof(buf), "%" PRId64, v);
        page_env_add(e, name, buf);
}

/* Runs RBK_PAGE_COMMAND through /bin/sh with the event in its environment.
 * posix_spawn(), not fork(): the hook runs on a library thread of a
 * multi-threaded process. */
static void page_run_command(const char *command, const rbk_event_t *ev,
                             const char *json) {
        struct page_env e = {{0}, 0};
        page_env_add(&e, "RBK_EVENT_CLASS", rbk_event_class_name(ev->cls));
        page_env_add(&e, "RBK_EVENT_SEVERITY", rbk_severity_name(ev->severity));
        page_env_add(&e, "RBK_EVENT_MESSAGE", ev->message);
        page_env_add(&e, "RBK_EVENT_JSON", json);
        page_env_add(&e, "RBK_INCIDENT_KEY", ev->incident_key);
        page_env_add_int(&e, "RBK_EVENT_REPEAT", ev->repeat);
        page_env_add_int(&e, "RBK_EVENT_SUPPRESSED", (int64_t)ev->suppressed);
        page_env_add(&e, "RBK_CLIENT", ev->client);
        page_env_add(&e, "RBK_GROUP", ev->group);
        page_env_add(&e, "RBK_TOPIC", ev->topic);
        page_env_add_int(&e, "RBK_PARTITION", ev->partition);
        page_env_add_int(&e, "RBK_OFFSET", ev->offset);
        page_env_add_int(&e, "RBK_COMMITTED_OFFSET", ev->committed_offset);
        page_env_add_int(&e, "RBK_LOW_WATERMARK", ev->low_watermark);
        page_env_add_int(&e, "RBK_HIGH_WATERMARK", ev->high_watermark);
        page_env_add_int(&e, "RBK_GAP", ev->gap);
        page_env_add_int(&e, "RBK_SKIP_IF_LATEST", ev->skip_if_latest);
        page_env_add_int(&e, "RBK_REPLAY_IF_EARLIEST", ev->replay_if_earliest);
        page_env_add(&e, "RBK_ERROR",
                     ev->err != RBK_OK ? rbk_err2name(ev->err) : NULL);
        page_env_add(&e, "RBK_ID", ev->id);

        /* The event's variables, then the process environment without
         * any variable of the same name. */
        size_t nenv = 0;
        while (environ && environ[nenv])
                nenv++;
        char **envp = calloc((size_t)e.n + nenv + 1, sizeof(*envp));
        if (envp) {
                size_t k = 0;
                for (int i = 0; i < e.n; i++)
                        envp[k++] = e.vars[i];
                for (size_t i = 0; i < nenv; i++) {
                        int shadowed = 0;
                        for (int j = 0; j < e.n && !shadowed; j++) {
                                size_t nl = (size_t)(strchr(e.vars[j], '=') -
                                                     e.vars[j]) + 1;
                                shadowed = !strncmp(environ[i], e.vars[j], nl);
                        }
                        if (!shadowed)
                                envp[k++] = environ[i];
                }
                char *argv[] = {"sh", "-c", (char *)command, NULL};
                posix_spawn_file_actions_t fa;
                posix_spawn_file_actions_init(&fa);
                posix_spawn_file_actions_addopen(&fa, 0, "/dev/null",
                                                 O_RDONLY, 0);
                pid_t pid;
                int rc = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, envp);
                posix_spawn_file_actions_destroy(&fa);
                if (rc != 0) {
                        fprintf(stderr, "page: cannot run RBK_PAGE_COMMAND: "
                                "%s\n", strerror(rc));
                } else {
                        pthread_t t;
                        pthread_attr_t attr;
                        pthread_attr_init(&attr);
                        pthread_attr_setdetachstate(&attr,
                                                    PTHREAD_CREATE_DETACHED);
                        if (pthread_create(&t, &attr, page_reap,
                                           (void *)(intptr_t)pid) != 0)
                                waitpid(pid, NULL, 0);
                        pthread_attr_destroy(&attr);
                }
                free(envp);
        }
        for (int i = 0; i < e.n; i++)
                free(e.vars[i]);
}

/* Events without an incident key: at most one page per class per minute. */
static int page_unkeyed_allowed(rbk_event_class_t cls) {
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        static time_t last[64];
        int idx = (int)cls & 63, ok;
        time_t now = time(NULL);
        pthread_mutex_lock(&lock);
        ok = last[idx] == 0 || now - last[idx] >= PAGE_UNKEYED_INTERVAL_S;
        if (ok)
                last[idx] = now;
        pthread_mutex_unlock(&lock);
        return ok;
}

/**
 * The hook: log every event as JSON, page for the ones that need a human.
 * Install with rbk_conf_set_hook(conf, page_hook, NULL). Called on a
 * library thread; it returns at once (the command runs in the background).
 */
static void page_hook(const rbk_event_t *ev, void *opaque) {
        (void)opaque;
        char *json = rbk_event_to_json(ev);
        if (!json)
                return;
        fprintf(stderr, "%s\n", json);
        pthread_once(&page_syslog_once, page_syslog_open);
        syslog(page_syslog_priority(ev->severity), "%s", json);

        const char *command = getenv("RBK_PAGE_COMMAND");
        int wanted = ev->severity >= RBK_SEV_ERROR ||
                     ev->cls == RBK_EV_QUARANTINE_RESOLVED;
        if (command && *command && wanted &&
            (ev->incident_key || page_unkeyed_allowed(ev->cls)))
                page_run_command(command, ev, json);
        rbk_free(json);
}

/* ------------------------------------------------------------ end of hook */

#ifndef RBK_PAGING_HOOK_ONLY /* examples/demo.c includes the hook alone */

static rbk_consumer_t *consumer;

static void on_signal(int sig) {
        (void)sig;
        rbk_consumer_stop(consumer);
}

static rbk_verdict_t handle(const rbk_message_t *msg, void *opaque) {
        (void)msg;
        (void)opaque;
        return RBK_HANDLED;
}

/* Fires a made-up quarantine event through the hook, to try a command. */
static int fire_test_event(void) {
        rbk_event_t ev;
        memset(&ev, 0, sizeof(ev));
        ev.version = RBK_EVENT_VERSION;
        ev.cls = RBK_EV_OFFSET_OUT_OF_RANGE;
        ev.severity = RBK_SEV_CRITICAL;
        ev.err = RBK_ERR_OUT_OF_RANGE;
        ev.client = "paging_hook";
        ev.message = "test event: committed offset 120 is below the log start "
                     "500; partition quarantined";
        ev.incident_key = "paging-test/orders/3/120";
        ev.group = "paging-test";
        ev.topic = "orders";
        ev.partition = 3;
        ev.offset = 120;
        ev.committed_offset = 120;
        ev.low_watermark = 500;
        ev.high_watermark = 900;
        ev.skip_if_latest = 400;
        ev.replay_if_earliest = 400;
        ev.gap = 380;
        ev.generation = RBK_NO_VALUE;
        page_hook(&ev, NULL);
        /* Give the background command time to finish before exiting. */
        for (int i = 0; i < 50 && getenv("RBK_PAGE_COMMAND"); i++) {
                if (waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD)
                        break;
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
        }
        return 0;
}

int main(int argc, char **argv) {
        const char *bootstrap = "127.0.0.1:9092", *topic = "events";
        const char *group = "paging-hook";
        char errstr[512];
        int opt;

        if (argc == 2 && !strcmp(argv[1], "--test"))
                return fire_test_event();
        while ((opt = getopt(argc, argv, "b:t:g:h")) != -1) {
                switch (opt) {
                case 'b': bootstrap = optarg; break;
                case 't': topic = optarg; break;
                case 'g': group = optarg; break;
                default:
                        fprintf(stderr, "usage: %s --test | [-b bootstrap] "
                                "[-t topic] [-g group]\n", argv[0]);
                        return opt == 'h' ? 0 : 2;
                }
        }

        rbk_conf_t *conf = getenv("KAFKA_URL")
                                   ? rbk_conf_from_env(NULL, errstr,
                                                       sizeof(errstr))
                                   : rbk_conf_new();
        if (!conf ||
            (!getenv("KAFKA_URL") &&
             rbk_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof(errstr)) != RBK_OK) ||
            rbk_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) !=
                    RBK_OK) {
                fprintf(stderr, "paging_hook: %s\n", errstr);
                rbk_conf_destroy(conf);
                return 2;
        }
        rbk_conf_set_hook(conf, page_hook, NULL);
        consumer = rbk_consumer_new(conf, errstr, sizeof(errstr));
        rbk_conf_destroy(conf);
        const char *topics[1] = {topic};
        if (!consumer || rbk_consumer_subscribe(consumer, topics, 1, errstr,
                                                sizeof(errstr)) != RBK_OK) {
                fprintf(stderr, "paging_hook: %s\n", errstr);
                rbk_consumer_destroy(consumer);
                return 2;
        }
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        fprintf(stderr, "paging_hook: consuming %s as %s; events go to "
                "stderr and syslog%s\n", topic, group,
                getenv("RBK_PAGE_COMMAND") ? " and RBK_PAGE_COMMAND" : "");
        rbk_err_t err = rbk_consumer_run(consumer, handle, NULL);
        rbk_consumer_close(consumer, -1);
        rbk_consumer_destroy(consumer);
        return err == RBK_OK ? 0 : 1;
}
#endif /* RBK_PAGING_HOOK_ONLY */
