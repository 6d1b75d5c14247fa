/* Support for the consumer suites: an in-process mock cluster, a plain
 * librdkafka producer that writes messages with ids, a recorder of what the
 * handler saw (by id and by partition/offset), and bounded waits.
 * Defined in consumer_support.c, which is linked into every test runner. */
#ifndef RBK_CONSUMER_SUPPORT_H
#define RBK_CONSUMER_SUPPORT_H

#include <check.h>
#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "robustkafka.h"
#include "robustkafka/testing.h"

/* For static helpers in the suites that not every build uses. */
#define CS_UNUSED __attribute__((unused))

/* ------------------------------------------------------------ cluster */

typedef struct cs_cluster_s {
        rbk_testcluster_t *tc;       /* the cluster (rbk_testcluster_new) */
        rd_kafka_mock_cluster_t *mc; /* its mock, for rd_kafka_mock_* calls */
        rd_kafka_t *prk;             /* plain producer of the test messages */
        char *bootstraps;
} cs_cluster_t;

/* librdkafka log callback: quiet unless CS_VERBOSE (CS_DEBUG: all levels). */
void cs_log_quiet(const rd_kafka_t *rk, int level, const char *fac,
                  const char *buf);
/* A three-broker cluster with its producer; fails the test if it cannot. */
cs_cluster_t *cs_cluster_new(void);
/* Flushes the producer, stops the cluster and frees it (NULL accepted). */
void cs_cluster_destroy(cs_cluster_t *cl);
/* Creates @topic with @partitions partitions, replication factor 3. */
void cs_topic(cs_cluster_t *cl, const char *topic, int partitions);
/* Produces ids "<tag>-<partition>-<i>", i in [from, from+n), and waits for
 * their delivery (the id is key, value and rbk-id header). */
void cs_produce(cs_cluster_t *cl, const char *topic, int32_t partition,
                int from, int n, const char *tag);
/* A consumer configuration for the cluster and @group, with short timers. */
rbk_conf_t *cs_conf(cs_cluster_t *cl, const char *group);
/* Sets one configuration property; fails the test if refused. */
void cs_set(rbk_conf_t *conf, const char *k, const char *v);
/* A consumer made from @conf and subscribed to @topic (asserted). */
rbk_consumer_t *cs_consumer_subscribed(rbk_conf_t *conf, const char *topic);
/* The group's committed offset of a partition (-1001 when none), and its
 * metadata into @meta when given. */
int64_t cs_committed(cs_cluster_t *cl, const char *group, const char *topic,
                     int32_t partition, char *meta, size_t meta_size);
/* Commits @offset for @group from outside (only while the group is empty). */
void cs_commit(cs_cluster_t *cl, const char *group, const char *topic,
               int32_t partition, int64_t offset);

/* ------------------------------------------------------------ recorder */

typedef struct cs_rec_s {
        GMutex lock;
        GHashTable *ids;     /* id -> count */
        GPtrArray *log;      /* "topic/partition/offset/id/attempt" in order */
        GHashTable *first;   /* "topic/partition" -> first offset handled (int64) */
        GHashTable *last;    /* "topic/partition" -> last offset handled */
        int order_errors;    /* a partition went backwards (excluding retries) */
        uint64_t total;
} cs_rec_t;

/* An empty recorder, freed with cs_rec_free(). */
cs_rec_t *cs_rec_new(void);
/* Frees the recorder. */
void cs_rec_free(cs_rec_t *r);
/* Records one handled message (thread-safe). */
void cs_rec_add(cs_rec_t *r, const rbk_message_t *m);
/* Distinct ids recorded. */
size_t cs_rec_distinct(cs_rec_t *r);
/* Whether @id was recorded. */
int cs_rec_has(cs_rec_t *r, const char *id);
/* The first offset recorded for a partition, -1 if none. */
int64_t cs_rec_first(cs_rec_t *r, const char *topic, int32_t partition);
/* Messages recorded, duplicates included. */
uint64_t cs_rec_total(cs_rec_t *r);
/* How many ids "<tag>-<p>-<i>" (p < parts, i < n) were not recorded; the
 * first into @first_missing. */
int cs_rec_missing(cs_rec_t *r, const char *tag, int parts, int n,
                   char *first_missing, size_t sz);

/* ------------------------------------------------------------ waiting */

/* A bound in ms, five times longer under valgrind (RBK_TEST_SLOW=1). */
gint64 cs_ms(gint64 ms);

typedef int(cs_cond_fn)(void *arg);

/* Polls @fn every 20 ms until true (1) or @timeout_ms passed (0). */
int cs_wait(cs_cond_fn *fn, void *arg, int timeout_ms);

/* Polls @expr every 20 ms until true (1) or @timeout_ms passed (0). */
#define CS_WAIT(expr, timeout_ms)                                           \
        ({                                                                   \
                gint64 cs_dl_ = g_get_monotonic_time() +                     \
                                cs_ms(timeout_ms) * 1000;                    \
                int cs_ok_;                                                  \
                while (!(cs_ok_ = !!(expr)) &&                               \
                       g_get_monotonic_time() < cs_dl_)                      \
                        g_usleep(20000);                                     \
                cs_ok_;                                                      \
        })

/* ------------------------------------------------------------ events */

typedef struct cs_events_s {
        GMutex lock;
        GPtrArray *evs; /* rbk_event_t copies (strings duplicated) */
} cs_events_t;

typedef struct cs_ev_s {
        rbk_event_t ev;
        char *message, *incident_key, *topic, *group, *id;
} cs_ev_t;

/* An empty event recorder for cs_hook(), freed with cs_events_free(). */
cs_events_t *cs_events_new(void);
/* Frees the recorder and its events. */
void cs_events_free(cs_events_t *h);
/* Event hook recording a copy of each event into @opaque (cs_events_t). */
void cs_hook(const rbk_event_t *ev, void *opaque);
/* Events of class @cls recorded. */
int cs_events_count(cs_events_t *h, rbk_event_class_t cls);
/* Copies the @nth event of class @cls (0-based, strings NULL) and its
 * incident key into @key: 1, or 0 if none. */
int cs_events_get(cs_events_t *h, rbk_event_class_t cls, int nth,
                  rbk_event_t *out, char *key, size_t keysz);
/* Log callback: prints only with CS_VERBOSE set. */
void cs_log_cb(int level, const char *fac, const char *line, void *opaque);

/* A report of an out-of-range offset as librdkafka makes one (the library
 * reads err, rkt, partition and offset), handed to the consumer. */
void cs_inject_reset(rbk_consumer_t *c, const char *topic, int32_t partition,
                     int64_t offset);
/* Revokes and re-assigns the consumer's whole assignment from the calling
 * thread, as a rebalance would (it becomes the poll thread for it). */
void cs_revoke_and_assign(rbk_consumer_t *c);

#endif
