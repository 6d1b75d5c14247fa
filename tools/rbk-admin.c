/* rbk-admin: resolves quarantined partitions of a running consumer fleet
 * without restarting it, shows a group's positions, and drives the local
 * test cluster. docs/rbk-admin.md is the manual.
 *
 *   rbk-admin [OPTIONS] status GROUP [TOPIC]
 *   rbk-admin [OPTIONS] resolve GROUP TOPIC PARTITION CHOICE [--yes]
 *   rbk-admin fail N | restore N | cluster-status
 *
 * Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 refused (out of range,
 * already resolved, not quarantined), 5 timeout. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "incident.h"
#include "internal.h"

enum {
        EX_OK_ = 0,
        EX_ERROR = 1,
        EX_USAGE_ = 2,
        EX_NOTFOUND = 3,
        EX_REFUSED = 4,
        EX_TIMEOUT = 5
};

static const char *prog = "rbk-admin";

/* ------------------------------------------------------------ options */

typedef struct opts_s {
        const char *bootstrap;
        const char *prefix;
        const char *env_prefix;
        const char *control_topic;
        const char *incident;
        int yes;
        int timeout_s;
        int verbose;
        int help;
} opts_t;

static opts_t o = {.timeout_s = 30};

static void err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: error: ", prog);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

static const char *const usage_main =
    "usage: rbk-admin [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  status GROUP [TOPIC]        committed offsets, watermarks, lag and\n"
    "                              quarantined partitions of a group\n"
    "  resolve GROUP TOPIC PARTITION earliest|latest|committed|OFFSET\n"
    "                              resume a quarantined partition\n"
    "  fail N | restore N          kill -9 / restart node N of the local\n"
    "                              test cluster (scripts/kafka-cluster)\n"
    "  cluster-status              nodes and partition leaders of it\n"
    "\n"
    "Options:\n"
    "  --bootstrap HOST:PORT[,...] brokers (plaintext); otherwise KAFKA_URL,\n"
    "                              KAFKA_TRUSTED_CERT, KAFKA_CLIENT_CERT,\n"
    "                              KAFKA_CLIENT_CERT_KEY, KAFKA_PREFIX\n"
    "  --env-prefix P              read P_URL, P_TRUSTED_CERT... instead\n"
    "                              (e.g. HEROKU_KAFKA_GRAY_)\n"
    "  --prefix P                  topic and group prefix (KAFKA_PREFIX)\n"
    "  --control-topic NAME        control topic (default rbk-control)\n"
    "  -v, --verbose               show librdkafka warnings\n"
    "  -h, --help                  help (after a command: that command's)\n"
    "\n"
    "Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 refused (out of\n"
    "range, already resolved, not quarantined), 5 timeout.\n"
    "See docs/rbk-admin.md.\n";

static const char *const usage_status =
    "usage: rbk-admin [OPTIONS] status GROUP [TOPIC]\n"
    "\n"
    "For every partition of TOPIC (without TOPIC: every partition the group\n"
    "has committed offsets for) prints the committed offset, the log start\n"
    "and end (low/high watermarks), the lag, the member that owns it, and a\n"
    "state:\n"
    "  ok             committed offset within the log\n"
    "  OUT-OF-RANGE   committed offset outside the log: a consumer that\n"
    "                 reaches it quarantines the partition\n"
    "  QUARANTINED    a consumer quarantined it; the incident key follows\n"
    "  resolved       the last commit was an operator resolution\n"
    "  no-commit      the group never committed this partition\n"
    "Group names and topics are given without the prefix.\n"
    "\n"
    "Exit codes: 0 shown, 1 error, 2 usage, 3 unknown group or topic,\n"
    "5 timeout.\n";

static const char *const usage_resolve =
    "usage: rbk-admin [OPTIONS] resolve GROUP TOPIC PARTITION CHOICE\n"
    "                 [--yes] [--timeout SECONDS] [--incident KEY]\n"
    "\n"
    "CHOICE is one of\n"
    "  earliest    resume at the log start (replays what is there)\n"
    "  latest      resume at the log end (skips what is there)\n"
    "  committed   try the committed offset again\n"
    "  OFFSET      resume at this offset (within the watermarks)\n"
    "\n"
    "Prints how many messages are skipped or replayed and asks for\n"
    "confirmation (on a terminal; --yes for scripts: without a terminal and\n"
    "without --yes the command is refused). When the group has running\n"
    "members, the command goes to them over the control topic and the\n"
    "consumer holding the incident applies it and acknowledges; the tool\n"
    "waits --timeout seconds (default 30) for that. When the group has no\n"
    "running member, the chosen offset is committed directly.\n"
    "The incident key is read from the committed offset's metadata; give\n"
    "--incident KEY when the consumer could not record it there.\n"
    "\n"
    "Exit codes: 0 resolved, 1 error, 2 usage (or no --yes without a\n"
    "terminal), 3 unknown group, topic or partition, 4 refused (offset\n"
    "outside the log, already resolved or not quarantined, declined),\n"
    "5 no acknowledgement in time.\n";

static const char *const usage_cluster =
    "usage: rbk-admin fail N | restore N | cluster-status\n"
    "\n"
    "Runs scripts/kafka-cluster (the local 3-node test cluster, see\n"
    "docs/kafka-cluster.md): fail N kills node N (1..3) with SIGKILL,\n"
    "restore N restarts it and waits until it is back, cluster-status shows\n"
    "the nodes and partition leaders. The script is found through\n"
    "$RBK_KAFKA_CLUSTER, else next to the binary in a source tree\n"
    "(build/bin/../../scripts/kafka-cluster); an installed rbk-admin needs\n"
    "RBK_KAFKA_CLUSTER.\n"
    "\n"
    "Exit codes: 0 ok, 1 the script failed (or cluster-status: some nodes\n"
    "down), 2 usage, 3 script not found.\n";

/* ------------------------------------------------------------ clients */

/* librdkafka's lines only with --verbose: connection errors repeat many
 * times, and the tool says itself what failed. */
static void tool_rd_log(const rd_kafka_t *rk, int level, const char *fac,
                        const char *buf) {
        if (o.verbose) {
                char *line = g_strdup(buf);
                rbk__redact(line);
                fprintf(stderr, "%s: kafka: %s\n", prog, line);
                g_free(line);
        }
}

static rbk_conf_t *tool_conf(int *exit_code) {
        char e[512];
        rbk_conf_t *conf;
        if (o.bootstrap) {
                conf = rbk_conf_new();
                if (rbk_conf_set(conf, "bootstrap.servers", o.bootstrap, e,
                                 sizeof(e))) {
                        err("--bootstrap: %s", e);
                        rbk_conf_destroy(conf);
                        *exit_code = EX_USAGE_;
                        return NULL;
                }
        } else {
                const char *vp = o.env_prefix ? o.env_prefix : "KAFKA_";
                char *var = g_strconcat(vp, "URL", NULL);
                int have = getenv(var) && *getenv(var);
                if (!have) {
                        err("no cluster given: set %s (Heroku-style "
                            "environment) or use --bootstrap HOST:PORT",
                            var);
                        g_free(var);
                        *exit_code = EX_USAGE_;
                        return NULL;
                }
                g_free(var);
                conf = rbk_conf_from_env(vp, e, sizeof(e));
                if (!conf) {
                        err("%s", e);
                        *exit_code = EX_USAGE_;
                        return NULL;
                }
        }
        if ((o.prefix &&
             rbk_conf_set(conf, "rbk.prefix", o.prefix, e, sizeof(e))) ||
            (o.control_topic && rbk_conf_set(conf, "rbk.control.topic",
                                             o.control_topic, e, sizeof(e)))) {
                err("%s", e);
                rbk_conf_destroy(conf);
                *exit_code = EX_USAGE_;
                return NULL;
        }
        return conf;
}

/* The tool's own client (metadata, watermarks, Admin API). */
static rd_kafka_t *tool_client(const rbk_conf_t *conf) {
        char e[512];
        rd_kafka_conf_t *rc =
            rbk__control_rd_conf(conf, RD_KAFKA_PRODUCER, e, sizeof(e));
        if (!rc) {
                err("%s", e);
                return NULL;
        }
        rd_kafka_conf_set_log_cb(rc, tool_rd_log);
        const char *dbg = getenv("RBK_ADMIN_DEBUG");
        if (dbg && *dbg &&
            rd_kafka_conf_set(rc, "debug", dbg, e, sizeof(e)) !=
                RD_KAFKA_CONF_OK) {
                err("RBK_ADMIN_DEBUG: %s", e);
                rd_kafka_conf_destroy(rc);
                return NULL;
        }
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, e, sizeof(e));
        if (!rk) {
                rd_kafka_conf_destroy(rc);
                err("creating a client failed: %s", e);
        }
        return rk;
}

/* Bound of each metadata, offset and watermark query: 10 s, or --timeout
 * when shorter (at least 2 s). */
static int query_ms(void) {
        return MAX(2000, MIN(o.timeout_s, 10) * 1000);
}

/* Exit code for a failed librdkafka call. */
static int kafka_exit(rd_kafka_resp_err_t e) {
        return e == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                       e == RD_KAFKA_RESP_ERR__TRANSPORT ||
                       e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
                   ? EX_TIMEOUT
                   : EX_ERROR;
}

/* The metadata of all topics, read once when the tool connects (asking
 * for all topics never creates one). */
static const struct rd_kafka_metadata *g_md;

/* Reads the metadata; 0, or the exit code after saying why. */
static int cluster_connect(rd_kafka_t *rk, const rbk_conf_t *conf) {
        rd_kafka_resp_err_t e =
            rd_kafka_metadata(rk, 1, NULL, &g_md, query_ms());
        if (!e)
                return EX_OK_;
        char bs[512] = "?";
        size_t sz = sizeof(bs);
        rbk_conf_get(conf, "bootstrap.servers", bs, &sz);
        err("cannot reach the cluster (%s) within %d ms: %s%s", bs,
            query_ms(), rd_kafka_err2str(e),
            o.verbose ? "" : " (-v shows librdkafka's messages)");
        g_md = NULL;
        return kafka_exit(e);
}

/* Number of partitions of a topic (full name), 0 for an unknown topic. */
static int topic_partitions(rd_kafka_t *rk, const char *topic) {
        int n = 0;
        for (int i = 0; g_md && i < g_md->topic_cnt; i++)
                if (!strcmp(g_md->topics[i].topic, topic) &&
                    !g_md->topics[i].err)
                        n = g_md->topics[i].partition_cnt;
        return n;
}

/* Waits for an Admin API result event. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, const char *what) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, query_ms() + 2000);
        if (!ev) {
                err("%s: no answer within %d ms", what, query_ms() + 2000);
                return NULL;
        }
        return ev;
}

static rd_kafka_AdminOptions_t *admin_opts(rd_kafka_t *rk,
                                           rd_kafka_admin_op_t op) {
        rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, op);
        char e[256];
        rd_kafka_AdminOptions_set_request_timeout(ao, query_ms(), e, sizeof(e));
        return ao;
}

/* The group's state and who owns which partition. */
typedef struct group_info_s {
        int known;            /* Describe answered */
        rd_kafka_consumer_group_state_t state;
        size_t members;
        GHashTable *owner;    /* "topic\x01partition" -> "client@host" */
        char why[256];        /* when !known */
} group_info_t;

static char *pkey(const char *topic, int32_t partition) {
        return g_strdup_printf("%s\x01%" PRId32, topic, partition);
}

static void group_describe(rd_kafka_t *rk, const char *group,
                           group_info_t *gi) {
        memset(gi, 0, sizeof(*gi));
        gi->owner = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          g_free);
        /* librdkafka's mock cluster has no DescribeGroups, and a 2.0.2
         * client that asks it anyway stops answering (metadata calls time
         * out, destroy hangs): do not ask it. */
        char *cid = rd_kafka_clusterid(rk, query_ms());
        int mock = cid && !strncmp(cid, "mockCluster", 11);
        if (cid)
                rd_kafka_mem_free(rk, cid);
        if (mock) {
                g_strlcpy(gi->why, "the mock cluster cannot describe groups",
                          sizeof(gi->why));
                return;
        }
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *ao =
            admin_opts(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
        const char *groups[1] = {group};
        rd_kafka_DescribeConsumerGroups(rk, groups, 1, ao, q);
        rd_kafka_AdminOptions_destroy(ao);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, query_ms() + 2000);
        if (!ev) {
                g_strlcpy(gi->why, "no answer", sizeof(gi->why));
        } else if (rd_kafka_event_error(ev)) {
                g_snprintf(gi->why, sizeof(gi->why), "%s",
                           rd_kafka_event_error_string(ev));
        } else {
                const rd_kafka_DescribeConsumerGroups_result_t *res =
                    rd_kafka_event_DescribeConsumerGroups_result(ev);
                size_t n = 0;
                const rd_kafka_ConsumerGroupDescription_t **ds =
                    rd_kafka_DescribeConsumerGroups_result_groups(res, &n);
                const rd_kafka_error_t *ge =
                    n ? rd_kafka_ConsumerGroupDescription_error(ds[0]) : NULL;
                if (!n) {
                        g_strlcpy(gi->why, "empty answer", sizeof(gi->why));
                } else if (ge) {
                        g_snprintf(gi->why, sizeof(gi->why), "%s",
                                   rd_kafka_error_string(ge));
                } else {
                        gi->known = 1;
                        gi->state = rd_kafka_ConsumerGroupDescription_state(
                            ds[0]);
                        gi->members =
                            rd_kafka_ConsumerGroupDescription_member_count(
                                ds[0]);
                        for (size_t i = 0; i < gi->members; i++) {
                                const rd_kafka_MemberDescription_t *m =
                                    rd_kafka_ConsumerGroupDescription_member(
                                        ds[0], i);
                                const rd_kafka_topic_partition_list_t *a =
                                    rd_kafka_MemberAssignment_partitions(
                                        rd_kafka_MemberDescription_assignment(
                                            m));
                                for (int j = 0; a && j < a->cnt; j++)
                                        g_hash_table_replace(
                                            gi->owner,
                                            pkey(a->elems[j].topic,
                                                 a->elems[j].partition),
                                            g_strdup_printf(
                                                "%s@%s",
                                                rd_kafka_MemberDescription_client_id(
                                                    m),
                                                rd_kafka_MemberDescription_host(
                                                    m)));
                        }
                }
        }
        if (ev)
                rd_kafka_event_destroy(ev);
        rd_kafka_queue_destroy(q);
}

static void group_info_clear(group_info_t *gi) {
        if (gi->owner)
                g_hash_table_destroy(gi->owner);
        gi->owner = NULL;
}

/* Committed offsets (with metadata) of a group; parts NULL: all.
 * Returns the list (destroy it) or NULL with *exit_code set. */
static rd_kafka_topic_partition_list_t *
group_offsets(rd_kafka_t *rk, const char *group,
              const rd_kafka_topic_partition_list_t *parts, int *exit_code) {
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *ao =
            admin_opts(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
        rd_kafka_ListConsumerGroupOffsets_t *req =
            rd_kafka_ListConsumerGroupOffsets_new(group, parts);
        rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, ao, q);
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
        rd_kafka_AdminOptions_destroy(ao);
        rd_kafka_topic_partition_list_t *out = NULL;
        rd_kafka_event_t *ev = admin_wait(q, "reading committed offsets");
        if (!ev) {
                *exit_code = EX_TIMEOUT;
        } else if (rd_kafka_event_error(ev)) {
                err("reading the committed offsets of group %s failed: %s",
                    group, rd_kafka_event_error_string(ev));
                *exit_code = kafka_exit(rd_kafka_event_error(ev));
        } else {
                size_t n = 0;
                const rd_kafka_group_result_t **gr =
                    rd_kafka_ListConsumerGroupOffsets_result_groups(
                        rd_kafka_event_ListConsumerGroupOffsets_result(ev),
                        &n);
                const rd_kafka_error_t *ge =
                    n ? rd_kafka_group_result_error(gr[0]) : NULL;
                if (!n || ge) {
                        err("reading the committed offsets of group %s "
                            "failed: %s",
                            group,
                            ge ? rd_kafka_error_string(ge) : "no result");
                        *exit_code = EX_ERROR;
                } else {
                        const rd_kafka_topic_partition_list_t *l =
                            rd_kafka_group_result_partitions(gr[0]);
                        out = l ? rd_kafka_topic_partition_list_copy(l)
                                : rd_kafka_topic_partition_list_new(0);
                }
        }
        if (ev)
                rd_kafka_event_destroy(ev);
        rd_kafka_queue_destroy(q);
        return out;
}

/* Commits one offset with metadata for a group with no members.
 * Returns the partition's (or request's) error. */
static rd_kafka_resp_err_t group_commit(rd_kafka_t *rk, const char *group,
                                        const char *topic, int32_t partition,
                                        int64_t offset, const char *meta,
                                        char *es, size_t esz) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_t *t =
            rd_kafka_topic_partition_list_add(l, topic, partition);
        t->offset = offset;
        t->metadata = strdup(meta);
        t->metadata_size = strlen(meta);
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *ao =
            admin_opts(rk, RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS);
        rd_kafka_AlterConsumerGroupOffsets_t *req =
            rd_kafka_AlterConsumerGroupOffsets_new(group, l);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_AlterConsumerGroupOffsets(rk, &req, 1, ao, q);
        rd_kafka_AlterConsumerGroupOffsets_destroy(req);
        rd_kafka_AdminOptions_destroy(ao);
        rd_kafka_resp_err_t ret = RD_KAFKA_RESP_ERR__TIMED_OUT;
        g_strlcpy(es, "no answer in time", esz);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, query_ms() + 2000);
        if (ev && rd_kafka_event_error(ev)) {
                ret = rd_kafka_event_error(ev);
                g_strlcpy(es, rd_kafka_event_error_string(ev), esz);
        } else if (ev) {
                size_t n = 0;
                const rd_kafka_group_result_t **gr =
                    rd_kafka_AlterConsumerGroupOffsets_result_groups(
                        rd_kafka_event_AlterConsumerGroupOffsets_result(ev),
                        &n);
                const rd_kafka_error_t *ge =
                    n ? rd_kafka_group_result_error(gr[0]) : NULL;
                const rd_kafka_topic_partition_list_t *pl =
                    n ? rd_kafka_group_result_partitions(gr[0]) : NULL;
                if (ge) {
                        ret = rd_kafka_error_code(ge);
                        g_strlcpy(es, rd_kafka_error_string(ge), esz);
                } else if (pl && pl->cnt > 0 && pl->elems[0].err) {
                        ret = pl->elems[0].err;
                        g_strlcpy(es, rd_kafka_err2str(ret), esz);
                } else if (!n) {
                        ret = RD_KAFKA_RESP_ERR__FAIL;
                        g_strlcpy(es, "empty answer", esz);
                } else {
                        ret = RD_KAFKA_RESP_ERR_NO_ERROR;
                        es[0] = '\0';
                }
        }
        if (ev)
                rd_kafka_event_destroy(ev);
        rd_kafka_queue_destroy(q);
        return ret;
}

static char *meta_of(const rd_kafka_topic_partition_t *t) {
        if (!t || !t->metadata || !t->metadata_size)
                return g_strdup("");
        return g_strndup(t->metadata, t->metadata_size);
}

/* ------------------------------------------------------------ status */

static const char *state_name(const group_info_t *gi) {
        return gi->known ? rd_kafka_consumer_group_state_name(gi->state)
                         : "unknown";
}

static int cmd_status(rd_kafka_t *rk, const rbk_conf_t *conf, int argc,
                      char **argv) {
        if (argc < 2 || argc > 3) {
                fputs(usage_status, stderr);
                return EX_USAGE_;
        }
        const char *prefix = rbk__conf_prefix(conf);
        char *group = rbk__prefixed(prefix, argv[1]);
        char *topic = argc > 2 ? rbk__prefixed(prefix, argv[2]) : NULL;
        int rc = EX_OK_;
        rd_kafka_topic_partition_list_t *want = NULL, *got = NULL;
        group_info_t gi;
        group_describe(rk, group, &gi);

        if (topic) {
                int n = topic_partitions(rk, topic);
                if (n == 0) {
                        err("unknown topic %s", argv[2]);
                        rc = EX_NOTFOUND;
                        goto out;
                }
                want = rd_kafka_topic_partition_list_new(n);
                for (int i = 0; i < n; i++)
                        rd_kafka_topic_partition_list_add(want, topic, i);
        }
        got = group_offsets(rk, group, want, &rc);
        if (!got)
                goto out;
        int committed_any = 0;
        for (int i = 0; i < got->cnt; i++)
                if (got->elems[i].offset >= 0)
                        committed_any = 1;
        int members_known = gi.known && gi.members > 0;
        if (!committed_any && !members_known) {
                if (topic)
                        err("group %s has no committed offset for %s and no "
                            "running member (unknown group?)",
                            argv[1], argv[2]);
                else
                        err("unknown group %s (no committed offset and no "
                            "running member)%s",
                            argv[1],
                            gi.known ? ""
                                     : "; give a TOPIC if the cluster cannot "
                                       "list a group's offsets");
                rc = EX_NOTFOUND;
                goto out;
        }
        if (!topic)
                rd_kafka_topic_partition_list_sort(got, NULL, NULL);

        printf("group %s: state %s", argv[1], state_name(&gi));
        if (gi.known)
                printf(", %zu member%s", gi.members,
                       gi.members == 1 ? "" : "s");
        else
                printf(" (%s)", gi.why);
        printf("\n%-24s %9s %12s %12s %12s %10s  %-14s %s\n", "TOPIC",
               "PARTITION", "COMMITTED", "LOW", "HIGH", "LAG", "STATE",
               "OWNER / INCIDENT");
        int quarantined = 0, out_of_range = 0;
        for (int i = 0; i < got->cnt; i++) {
                const rd_kafka_topic_partition_t *t = &got->elems[i];
                int64_t lo = -1, hi = -1;
                rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
                    rk, t->topic, t->partition, &lo, &hi, query_ms());
                char *meta = meta_of(t);
                char lag[32] = "-", low[32] = "?", high[32] = "?",
                     com[32] = "-";
                const char *state = "ok";
                if (!e) {
                        g_snprintf(low, sizeof(low), "%" PRId64, lo);
                        g_snprintf(high, sizeof(high), "%" PRId64, hi);
                }
                if (t->offset >= 0)
                        g_snprintf(com, sizeof(com), "%" PRId64, t->offset);
                if (t->err) {
                        state = "error";
                } else if (t->offset < 0) {
                        state = "no-commit";
                } else if (!e && (t->offset < lo || t->offset > hi)) {
                        state = "OUT-OF-RANGE";
                        out_of_range++;
                } else if (!e) {
                        g_snprintf(lag, sizeof(lag), "%" PRId64,
                                   hi - t->offset);
                }
                const char *qkey = rbk__meta_quarantine_key(meta);
                if (qkey) {
                        state = "QUARANTINED";
                        quarantined++;
                } else if (rbk__meta_resolved_key(meta, NULL) &&
                           !strcmp(state, "ok")) {
                        state = "resolved";
                } else if (meta && g_str_has_prefix(meta, RBK__META_PAUSED) &&
                           !strcmp(state, "ok")) {
                        state = "paused";
                }
                char *k = pkey(t->topic, t->partition);
                const char *owner = g_hash_table_lookup(gi.owner, k);
                g_free(k);
                printf("%-24s %9" PRId32 " %12s %12s %12s %10s  %-14s %s",
                       rbk__unprefixed(prefix, t->topic), t->partition, com,
                       low, high, lag, state, owner ? owner : "-");
                if (!strcmp(state, "QUARANTINED"))
                        printf("  incident %s", qkey);
                else if (!strcmp(state, "resolved"))
                        printf("  (%s)", meta);
                else if (!strcmp(state, "paused"))
                        printf("  by %s", meta + strlen(RBK__META_PAUSED));
                if (t->err)
                        printf("  %s", rd_kafka_err2str(t->err));
                if (e)
                        printf("  watermarks: %s", rd_kafka_err2str(e));
                putchar('\n');
                g_free(meta);
        }
        if (quarantined || out_of_range)
                printf("%d partition(s) quarantined, %d committed offset(s) "
                       "out of range; see `rbk-admin resolve --help`\n",
                       quarantined, out_of_range);
out:
        if (want)
                rd_kafka_topic_partition_list_destroy(want);
        if (got)
                rd_kafka_topic_partition_list_destroy(got);
        group_info_clear(&gi);
        g_free(group);
        g_free(topic);
        return rc;
}

/* ------------------------------------------------------------ resolve */

static int parse_i64(const char *s, int64_t *out) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (!*s || !end || *end || errno || v < 0)
                return -1;
        *out = v;
        return 0;
}

static int confirm(void) {
        if (o.yes)
                return 1;
        if (!isatty(STDIN_FILENO)) {
                err("refusing to act without confirmation: stdin is not a "
                    "terminal; add --yes");
                return -1;
        }
        printf("Proceed? [y/N] ");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof(line), stdin))
                return 0;
        g_strstrip(line);
        return !g_ascii_strcasecmp(line, "y") ||
               !g_ascii_strcasecmp(line, "yes");
}

static int ack_exit(const rbk__control_msg_t *ack) {
        switch (ack->result) {
        case RBK_OK:
                return EX_OK_;
        case RBK_ERR_NOT_QUARANTINED:
        case RBK_ERR_ALREADY_RESOLVED:
        case RBK_ERR_OUT_OF_RANGE:
                return EX_REFUSED;
        case RBK_ERR_NOT_FOUND:
                return EX_NOTFOUND;
        case RBK_ERR_TIMED_OUT:
                return EX_TIMEOUT;
        default:
                return EX_ERROR;
        }
}

static char *requested_by(void) {
        const char *user = g_get_user_name();
        return g_strdup_printf("%s@%s pid %ld", user ? user : "?",
                               g_get_host_name(), (long)getpid());
}

/* Sends the command over the control topic and waits for the answer. */
static int resolve_live(const rbk_conf_t *conf, rbk__control_msg_t *cmd) {
        char e[512];
        rbk_err_t cerr;
        rbk__control_client_t *cl =
            rbk__control_client_new(conf, query_ms(), &cerr, e, sizeof(e));
        if (!cl) {
                err("%s", e);
                return EX_ERROR;
        }
        int64_t wait_ms = (int64_t)o.timeout_s * 1000;
        cmd->expires_ms = g_get_real_time() / 1000 + wait_ms;
        printf("sending command %s to the consumers of group %s on %s ...\n",
               cmd->id, cmd->group, rbk__control_client_topic(cl));
        fflush(stdout);
        int rc;
        if (rbk__control_client_send(cl, cmd, (int)MIN(wait_ms, 15000), e,
                                     sizeof(e))) {
                err("%s", e);
                rbk__control_client_destroy(cl);
                return EX_ERROR;
        }
        rbk__control_msg_t ack;
        if (rbk__control_client_wait_ack(cl, cmd->id, (int)wait_ms, &ack)) {
                err("no consumer acknowledged command %s within %d s. No "
                    "running consumer of group %s holds incident %s with "
                    "the control channel on (rbk.control.enable), or the one "
                    "that does is stuck. The command expires now and is not "
                    "applied later (unless a consumer was applying it at "
                    "this moment): check with `rbk-admin status %s %s`",
                    cmd->id, o.timeout_s, cmd->group, cmd->incident_key,
                    cmd->group, cmd->topic);
                rbk__control_client_destroy(cl);
                return EX_TIMEOUT;
        }
        rbk__control_client_destroy(cl);
        char who[1024];
        g_snprintf(who, sizeof(who),
                   "consumer %s on host %s pid %" PRId64 "%s%s", ack.client,
                   ack.host, ack.pid, *ack.member_id ? " member " : "",
                   ack.member_id);
        rc = ack_exit(&ack);
        if (rc == EX_OK_) {
                char off[32] = "";
                if (cmd->how == RBK_RESOLVE_OFFSET)
                        g_snprintf(off, sizeof(off), " %" PRId64, cmd->offset);
                printf("resolved: incident %s, %s [%" PRId32
                       "] resumed (%s%s) by %s\n",
                       cmd->incident_key, cmd->topic, cmd->partition,
                       rbk__resolve_name(cmd->how), off, who);
        } else if (ack.result == RBK_ERR_NOT_QUARANTINED ||
                   ack.result == RBK_ERR_ALREADY_RESOLVED) {
                err("already resolved or not quarantined: %s (answered by "
                    "%s)",
                    ack.error, who);
        } else {
                err("%s refused: %s (%s)", who, ack.error,
                    rbk_err2name(ack.result));
        }
        return rc;
}

/* Checks resolve's arguments before anything connects. */
static int resolve_args(int argc, char **argv, int32_t *partitionp,
                        rbk_resolve_t *howp, int64_t *offsetp) {
        if (argc != 5) {
                fputs(usage_resolve, stderr);
                return EX_USAGE_;
        }
        int64_t part64;
        if (parse_i64(argv[3], &part64) || part64 > INT32_MAX) {
                err("PARTITION must be a partition number, not \"%s\"",
                    argv[3]);
                return EX_USAGE_;
        }
        int32_t partition = (int32_t)part64;
        rbk_resolve_t how = rbk__resolve_parse(argv[4]);
        int64_t offset = -1;
        if (!how || how == RBK_RESOLVE_OFFSET) {
                if (parse_i64(argv[4], &offset)) {
                        err("CHOICE must be earliest, latest, committed or "
                            "an offset, not \"%s\"",
                            argv[4]);
                        return EX_USAGE_;
                }
                how = RBK_RESOLVE_OFFSET;
        }
        if (!*argv[1]) {
                err("GROUP is empty");
                return EX_USAGE_;
        }
        *partitionp = partition;
        *howp = how;
        *offsetp = offset;
        return EX_OK_;
}

static int cmd_resolve(rd_kafka_t *rk, const rbk_conf_t *conf, int argc,
                       char **argv) {
        int32_t partition;
        rbk_resolve_t how;
        int64_t offset;
        int arc = resolve_args(argc, argv, &partition, &how, &offset);
        if (arc)
                return arc;
        const char *ugroup = argv[1], *utopic = argv[2];
        const char *prefix = rbk__conf_prefix(conf);
        char e[512];
        if (rbk__topic_validate(prefix, utopic, e, sizeof(e))) {
                err("TOPIC: %s", e);
                return EX_USAGE_;
        }
        char *group = rbk__prefixed(prefix, ugroup);
        char *topic = rbk__prefixed(prefix, utopic);
        int rc = EX_ERROR;
        rd_kafka_topic_partition_list_t *want = NULL, *got = NULL;
        group_info_t gi;
        memset(&gi, 0, sizeof(gi));

        int n = topic_partitions(rk, topic);
        if (n == 0) {
                err("unknown topic %s", utopic);
                rc = EX_NOTFOUND;
                goto out;
        }
        if (partition >= n) {
                err("unknown partition %" PRId32 ": topic %s has %d "
                    "partition%s (0..%d)",
                    partition, utopic, n, n == 1 ? "" : "s", n - 1);
                rc = EX_NOTFOUND;
                goto out;
        }
        int64_t lo, hi;
        rd_kafka_resp_err_t ke = rd_kafka_query_watermark_offsets(
            rk, topic, partition, &lo, &hi, query_ms());
        if (ke) {
                err("reading the watermarks of %s [%" PRId32 "] failed: %s",
                    utopic, partition, rd_kafka_err2str(ke));
                rc = kafka_exit(ke);
                goto out;
        }
        want = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(want, topic, partition);
        got = group_offsets(rk, group, want, &rc);
        if (!got)
                goto out;
        group_describe(rk, group, &gi);
        const rd_kafka_topic_partition_t *t = got->cnt ? &got->elems[0] : NULL;
        int64_t committed = t && !t->err ? t->offset : -1;
        char *meta = meta_of(t);
        if (committed < 0 && !(gi.known && gi.members > 0)) {
                err("group %s has no committed offset for %s [%" PRId32
                    "] and no running member (unknown group?)",
                    ugroup, utopic, partition);
                g_free(meta);
                rc = EX_NOTFOUND;
                goto out;
        }
        int in_range = committed >= lo && committed <= hi;
        char *key = NULL;
        if (o.incident)
                key = g_strdup(o.incident);
        else if (rbk__meta_quarantine_key(meta))
                key = g_strdup(rbk__meta_quarantine_key(meta));
        if (!key && rbk__meta_resolved_key(meta, NULL)) {
                err("already resolved or not quarantined: the last commit "
                    "of %s [%" PRId32 "] is an operator resolution (%s), "
                    "offset %" PRId64 " within the log %" PRId64 "..%" PRId64,
                    utopic, partition, meta, committed, lo, hi);
                g_free(meta);
                rc = EX_REFUSED;
                goto out;
        }
        if (!key && (in_range || committed < 0)) {
                if (committed >= 0)
                        err("already resolved or not quarantined: the "
                            "committed offset %" PRId64 " of %s [%" PRId32
                            "] is within the log %" PRId64 "..%" PRId64
                            " and carries no quarantine mark",
                            committed, utopic, partition, lo, hi);
                else
                        err("already resolved or not quarantined: %s [%" PRId32
                            "] has no committed offset and no quarantine "
                            "mark",
                            utopic, partition);
                g_free(meta);
                rc = EX_REFUSED;
                goto out;
        }
        if (!key) {
                /* Out of range but not marked (yet): the consumer's key
                 * uses the failed position, which is the committed one. */
                key = rbk__incident_key(RBK__INCIDENT_QUARANTINE, ugroup,
                                        utopic, partition, committed);
                printf("note: no quarantine mark in the committed offset; "
                       "assuming incident %s (use --incident KEY to name "
                       "another)\n",
                       key);
        }
        g_free(meta);

        int64_t target;
        switch (how) {
        case RBK_RESOLVE_EARLIEST:
                target = lo;
                break;
        case RBK_RESOLVE_LATEST:
                target = hi;
                break;
        case RBK_RESOLVE_COMMITTED:
                if (committed < 0) {
                        err("%s [%" PRId32 "] has no committed offset; "
                            "choose earliest, latest or an offset",
                            utopic, partition);
                        rc = EX_REFUSED;
                        g_free(key);
                        goto out;
                }
                target = committed;
                break;
        default:
                if (offset < lo || offset > hi) {
                        err("offset %" PRId64 " is outside the log of %s "
                            "[%" PRId32 "]: %" PRId64 "..%" PRId64,
                            offset, utopic, partition, lo, hi);
                        rc = EX_REFUSED;
                        g_free(key);
                        goto out;
                }
                target = offset;
                break;
        }

        printf("incident %s\n", key);
        printf("  %s [%" PRId32 "] of group %s: log %" PRId64 "..%" PRId64
               " (%" PRId64 " messages), committed %" PRId64 "%s\n",
               utopic, partition, ugroup, lo, hi, hi - lo, committed,
               committed >= 0 && !in_range ? " (out of range)" : "");
        if (committed >= 0 && committed < lo)
                printf("  %" PRId64 " message(s) before the log start were "
                       "deleted by retention and are lost whatever you "
                       "choose\n",
                       lo - committed);
        if (how == RBK_RESOLVE_OFFSET)
                printf("  resuming at offset %" PRId64 ": ", target);
        else
                printf("  resuming at %s = offset %" PRId64 ": ",
                       rbk__resolve_name(how), target);
        if (committed >= lo && committed <= hi) {
                if (target > committed)
                        printf("skips %" PRId64 " message(s)\n",
                               target - committed);
                else if (target < committed)
                        printf("replays %" PRId64 " message(s)\n",
                               committed - target);
                else
                        printf("nothing skipped or replayed\n");
        } else {
                printf("skips %" PRId64 " message(s) of the log and "
                       "delivers %" PRId64 " (whether the consumer saw them "
                       "before is unknown)\n",
                       target - lo, hi - target);
        }
        if (how == RBK_RESOLVE_COMMITTED && !in_range)
                printf("  note: the committed offset is out of range; the "
                       "consumer will quarantine the partition again\n");
        fflush(stdout);
        int ok = confirm();
        if (ok <= 0) {
                if (ok == 0)
                        err("not confirmed; nothing changed");
                rc = ok < 0 ? EX_USAGE_ : EX_REFUSED;
                g_free(key);
                goto out;
        }

        /* No running member: the position is committed here. A member
         * joining meanwhile makes the broker refuse the commit. */
        if (!gi.known || gi.members == 0) {
                char *m = rbk__meta_resolved(how, key);
                char es[512];
                ke = group_commit(rk, group, topic, partition, target, m, es,
                                  sizeof(es));
                g_free(m);
                if (!ke) {
                        printf("resolved: group %s has no running member; "
                               "committed offset %" PRId64 " for %s [%" PRId32
                               "] directly (incident %s)\n",
                               ugroup, target, utopic, partition, key);
                        rc = EX_OK_;
                        g_free(key);
                        goto out;
                }
                if (ke != RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID &&
                    ke != RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION &&
                    ke != RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS &&
                    ke != RD_KAFKA_RESP_ERR_GROUP_SUBSCRIBED_TO_TOPIC) {
                        err("committing offset %" PRId64 " for group %s "
                            "failed: %s",
                            target, ugroup, es);
                        rc = kafka_exit(ke);
                        g_free(key);
                        goto out;
                }
                if (o.verbose)
                        fprintf(stderr,
                                "%s: the group has running members (%s); "
                                "asking them\n",
                                prog, es);
        }

        rbk__control_msg_t cmd;
        rbk__control_msg_init(&cmd, RBK__CTL_COMMAND);
        char *id = rbk__control_new_id();
        g_strlcpy(cmd.id, id, sizeof(cmd.id));
        g_free(id);
        g_strlcpy(cmd.action, "resolve", sizeof(cmd.action));
        g_strlcpy(cmd.group, ugroup, sizeof(cmd.group));
        g_strlcpy(cmd.topic, utopic, sizeof(cmd.topic));
        cmd.partition = partition;
        if (strlen(key) >= sizeof(cmd.incident_key)) {
                err("incident key is too long");
                rc = EX_USAGE_;
                g_free(key);
                goto out;
        }
        g_strlcpy(cmd.incident_key, key, sizeof(cmd.incident_key));
        cmd.how = how;
        cmd.offset = how == RBK_RESOLVE_OFFSET ? offset : -1;
        char *by = requested_by();
        g_strlcpy(cmd.requested_by, by, sizeof(cmd.requested_by));
        g_free(by);
        g_free(key);
        rc = resolve_live(conf, &cmd);
out:
        if (want)
                rd_kafka_topic_partition_list_destroy(want);
        if (got)
                rd_kafka_topic_partition_list_destroy(got);
        group_info_clear(&gi);
        g_free(group);
        g_free(topic);
        return rc;
}

/* ------------------------------------------------------------ cluster */

static char *find_cluster_script(void) {
        const char *env = getenv("RBK_KAFKA_CLUSTER");
        if (env && *env)
                return g_strdup(env);
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return NULL;
        exe[n] = '\0';
        char *dir = g_path_get_dirname(exe);
        const char *rel[] = {"../../scripts/kafka-cluster",
                             "../scripts/kafka-cluster",
                             "../../../scripts/kafka-cluster", NULL};
        for (int i = 0; rel[i]; i++) {
                char *p = g_build_filename(dir, rel[i], NULL);
                if (access(p, X_OK) == 0) {
                        g_free(dir);
                        return p;
                }
                g_free(p);
        }
        g_free(dir);
        return NULL;
}

static int cmd_cluster(int argc, char **argv) {
        const char *c = argv[0];
        int need = strcmp(c, "cluster-status") ? 2 : 1;
        if (argc != need ||
            (need == 2 && (strlen(argv[1]) != 1 || argv[1][0] < '1' ||
                           argv[1][0] > '9'))) {
                fputs(usage_cluster, stderr);
                return EX_USAGE_;
        }
        char *script = find_cluster_script();
        if (!script) {
                err("scripts/kafka-cluster not found: set RBK_KAFKA_CLUSTER "
                    "to its path");
                return EX_NOTFOUND;
        }
        if (access(script, X_OK) != 0) {
                err("%s is not an executable script: %s", script,
                    g_strerror(errno));
                g_free(script);
                return EX_NOTFOUND;
        }
        char *args[4] = {script, need == 1 ? "status" : (char *)c,
                         need == 2 ? argv[1] : NULL, NULL};
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
                err("fork: %s", g_strerror(errno));
                g_free(script);
                return EX_ERROR;
        }
        if (pid == 0) {
                execv(script, args);
                fprintf(stderr, "%s: error: cannot run %s: %s\n", prog, script,
                        strerror(errno));
                _exit(127);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        g_free(script);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return EX_OK_;
        if (WIFEXITED(st))
                err("kafka-cluster %s exited with status %d", args[1],
                    WEXITSTATUS(st));
        else
                err("kafka-cluster %s was killed by signal %d", args[1],
                    WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        return EX_ERROR;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
        static const struct option longopts[] = {
            {"bootstrap", required_argument, NULL, 'b'},
            {"prefix", required_argument, NULL, 'p'},
            {"env-prefix", required_argument, NULL, 'E'},
            {"control-topic", required_argument, NULL, 'c'},
            {"incident", required_argument, NULL, 'i'},
            {"timeout", required_argument, NULL, 't'},
            {"yes", no_argument, NULL, 'y'},
            {"verbose", no_argument, NULL, 'v'},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},
            {NULL, 0, NULL, 0}};
        int ch;
        opterr = 0;
        while ((ch = getopt_long(argc, argv, "hvy", longopts, NULL)) != -1) {
                switch (ch) {
                case 'b':
                        o.bootstrap = optarg;
                        break;
                case 'p':
                        o.prefix = optarg;
                        break;
                case 'E':
                        o.env_prefix = optarg;
                        break;
                case 'c':
                        o.control_topic = optarg;
                        break;
                case 'i':
                        o.incident = optarg;
                        break;
                case 't': {
                        int64_t v;
                        if (parse_i64(optarg, &v) || v <= 0 || v > 3600) {
                                err("--timeout takes 1..3600 seconds, not "
                                    "\"%s\"",
                                    optarg);
                                return EX_USAGE_;
                        }
                        o.timeout_s = (int)v;
                        break;
                }
                case 'y':
                        o.yes = 1;
                        break;
                case 'v':
                        o.verbose = 1;
                        break;
                case 'h':
                        o.help = 1;
                        break;
                case 'V':
                        printf("rbk-admin %s (librdkafka %s)\n",
                               rbk_version_str(), rd_kafka_version_str());
                        return EX_OK_;
                default:
                        err("unknown option %s (see --help)",
                            argv[optind - 1]);
                        return EX_USAGE_;
                }
        }
        int nargs = argc - optind;
        char **args = argv + optind;
        if (nargs == 0) {
                fputs(usage_main, o.help ? stdout : stderr);
                return o.help ? EX_OK_ : EX_USAGE_;
        }
        const char *c = args[0];
        int is_status = !strcmp(c, "status"), is_resolve = !strcmp(c, "resolve");
        int is_cluster = !strcmp(c, "fail") || !strcmp(c, "restore") ||
                         !strcmp(c, "cluster-status");
        if (!is_status && !is_resolve && !is_cluster) {
                err("unknown command \"%s\" (see --help)", c);
                return EX_USAGE_;
        }
        if (o.help) {
                fputs(is_status    ? usage_status
                      : is_resolve ? usage_resolve
                                   : usage_cluster,
                      stdout);
                return EX_OK_;
        }
        if (!is_resolve && (o.yes || o.incident)) {
                err("--yes and --incident apply to resolve only");
                return EX_USAGE_;
        }
        if (is_cluster)
                return cmd_cluster(nargs, args);
        if (is_status && (nargs < 2 || nargs > 3 || !*args[1])) {
                fputs(usage_status, stderr);
                return EX_USAGE_;
        }
        if (is_resolve) {
                int32_t p;
                rbk_resolve_t h;
                int64_t off;
                int arc = resolve_args(nargs, args, &p, &h, &off);
                if (arc)
                        return arc;
        }

        int rc = EX_ERROR;
        rbk_conf_t *conf = tool_conf(&rc);
        if (!conf)
                return rc;
        rd_kafka_t *rk = tool_client(conf);
        if (!rk) {
                rbk_conf_destroy(conf);
                return EX_ERROR;
        }
        rc = cluster_connect(rk, conf);
        if (rc == EX_OK_)
                rc = is_status ? cmd_status(rk, conf, nargs, args)
                               : cmd_resolve(rk, conf, nargs, args);
        if (g_md)
                rd_kafka_metadata_destroy(g_md);
        rd_kafka_destroy(rk);
        rbk_conf_destroy(conf);
        return rc;
}
