/* Support for the producer suites: a mock cluster, a delivery tracker that
 * counts every message by index and id, and a plain librdkafka reader that
 * reads a topic back from the beginning to the high watermark.
 * Defined in producer_support.c, which is linked into every test runner. */
#ifndef RBK_PRODUCER_SUPPORT_H
#define RBK_PRODUCER_SUPPORT_H

#include <check.h>
#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "robustkafka.h"
#include "robustkafka/testing.h"

/* For static helpers in the suites that not every build uses. */
#define PS_UNUSED __attribute__((unused))

/* ------------------------------------------------------------ tracker */

enum { PS_NONE = 0, PS_ACCEPTED, PS_DELIVERED, PS_FAILED };

typedef struct ps_track_s {
        GMutex lock;
        GCond cond;
        size_t n;          /* message indexes 0..n-1 */
        int *state;        /* PS_* */
        int *reports;      /* delivery callbacks seen */
        char **id;         /* id from the report */
        rbk_err_t *err;
        int *pp;           /* possibly_persisted */
        int *resent;
        int32_t *partition;
        int64_t *offset;   /* offset from the report */
        char **reason;
        size_t done;       /* reports seen */
        size_t bad_opaque; /* reports for no known message */
} ps_track_t;

/* A tracker of messages 0..n-1, freed with ps_track_free(). */
ps_track_t *ps_track_new(size_t n);
/* Frees the tracker. */
void ps_track_free(ps_track_t *t);
/* Delivery callback recording into @opaque (ps_track_t); msg_opaque is
 * index + 1. */
void ps_dr_cb(const rbk_delivery_t *dr, void *opaque);
/* Marks message @i accepted by send() (a report already seen wins). */
void ps_track_accepted(ps_track_t *t, size_t i);
/* Waits until @want reports arrived: 1, or 0 after @timeout_ms. */
int ps_track_wait(ps_track_t *t, size_t want, int timeout_ms);

typedef struct {
        size_t accepted, delivered, failed, unreported, double_reported;
} ps_counts_t;

/* Counts by index: every accepted message must have exactly one report. */
ps_counts_t ps_track_counts(ps_track_t *t, const int *accepted);

/* ------------------------------------------------------------ hooks */

typedef struct ps_hooks_s {
        GMutex lock;
        int count[32];      /* by event class */
        int64_t generation; /* of the last event carrying one */
        char last[32][512]; /* last message by class */
} ps_hooks_t;

/* Event hook counting events by class into @opaque (ps_hooks_t). */
void ps_hook_cb(const rbk_event_t *ev, void *opaque);
/* Events of class @cls seen. */
int ps_hook_count(ps_hooks_t *h, rbk_event_class_t cls);

/* ------------------------------------------------------------ cluster */

/* A three-broker cluster with @topic created; fails the test if it cannot. */
rbk_testcluster_t *ps_cluster(const char *topic, int partitions);
/* The unsigned number after "@name": in @json (the first occurrence);
 * fails the test if it is missing. */
uint64_t ps_json_u64(const char *json, const char *name);
/* Sets one configuration property; fails the test if refused. */
void ps_set(rbk_conf_t *conf, const char *name, const char *value);
/* Log callback: critical and worse, everything with RBK_TEST_VERBOSE. */
void ps_log_cb(int level, const char *fac, const char *line, void *opaque);
/* A producer configuration for the cluster, reporting to @t (may be NULL). */
rbk_conf_t *ps_conf(rbk_testcluster_t *tc, ps_track_t *t);
/* Sends message @i with key "k<key>" and value "k<key>:<seq>:<i>". */
rbk_err_t ps_send(rbk_producer_t *p, const char *topic, size_t i, int key,
                  int seq, char *errstr, size_t errstr_size);

/* ------------------------------------------------------------ reader */

typedef struct {
        int32_t partition;
        int64_t offset;
        char *id;    /* rbk-id header, or NULL */
        int resent;  /* has rbk-resent */
        char *value; /* NUL-terminated copy */
        int64_t timestamp;
        rd_kafka_timestamp_type_t tstype;
} ps_rec_t;

/* Frees a ps_rec_t (the free function of ps_read_topic()'s array). */
void ps_rec_free(gpointer p);
/* Every record of @topic up to its high watermark, in partition then
 * offset order (ps_rec_t, freed with the array). */
GPtrArray *ps_read_topic(const char *bootstrap, const char *topic,
                         int partitions);

typedef struct {
        size_t records;       /* records in the log */
        size_t dup_ids;       /* records whose id appeared before */
        size_t dup_unflagged; /* of those, without rbk-resent or same-id */
        size_t missing;       /* delivered ids not found */
        size_t missing_implicit; /* of those, reported at offset -1001:
                                  * acknowledged implicitly by a later
                                  * request's success */
        size_t unknown;       /* ids in the log no report named */
        size_t order_errors;  /* per-key first occurrences out of order */
        size_t no_id;         /* records without an id header */
        char missing_eg[512]; /* the first missing ids, and what the log
                                 holds at their reported offsets */
} ps_check_t;

/* Compares the log read back with the reports (see ps_check_t). */
ps_check_t ps_check_log(ps_track_t *t, GPtrArray *log);

#endif
