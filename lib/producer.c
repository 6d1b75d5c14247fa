/* The robust producer: an idempotent librdkafka producer behind a handle
 * that outlives it.
 *
 * Every accepted message is copied into one record (struct rbk__rec_s) that
 * the library keeps until the message's final report. librdkafka gets
 * pointers into the record (no RD_KAFKA_MSG_F_COPY), the record pointer as
 * the message opaque, and the library's own poll thread serves delivery
 * reports as events from librdkafka's main queue.
 *
 * Records of accepted, unreported messages sit in one ring of slots in
 * acceptance order (rbk__out_t: a record leaves it by its own slot, touching
 * no other record). Sends are serialised by p->send_lock: a sender adds its
 * record to p->incoming and then calls rd_kafka_produceva() before the
 * next sender can, so acceptance order is also the order in which librdkafka
 * enqueued the messages: restricted to one partition it is the partition's
 * order. A send takes no other lock (in the steady state): the poll thread,
 * holding both locks, moves p->incoming to the tail of p->outstanding
 * (rbk__merge_incoming()) before it handles a delivery-report batch, so
 * every record reported is in p->outstanding, and so do close, flush, stats
 * and the recovery before they look at the list. After a fatal error the
 * poll thread drains and retires the librdkafka instance (failed and purged
 * messages stay in the list, unreported), creates a fresh one and re-sends
 * the list in order, each record to the partition it had.
 *
 * Records come from a per-producer pool (size classes, see rbk__pool_*):
 * the sender takes them from its stash (under p->send_lock), the poll thread
 * gives reported ones back in batches (to p->pool_free under p->lock), so
 * neither thread calls malloc()/free() per message in the steady state and
 * no record is freed on another thread than the one that allocated it.
 *
 * Locking: lock order p->close_lock, p->send_lock, p->lock. p->send_lock
 * protects the sender's fields (seq, accepted, incoming, stash), p->lock
 * every other mutable field after it in the struct. closing, recovering,
 * gave_up, rk and mainq are written holding both locks, so a sender reads
 * them holding p->send_lock alone, and once one of them is set no sender is
 * inside rd_kafka_produceva() with the instance being replaced; fatal_pending
 * is read without a lock (atomically). Neither lock is held while
 * application callbacks (delivery callback, hook, log) run. The poll thread
 * is the only one that replaces p->rk. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* Set on the producer poll threads: application callbacks run there, and a
 * send made from them must never block. */
static __thread int rbk__tls_no_block;

/* How long the poll thread blocks on the queue between state checks. */
#define RBK__POLL_MS 100
/* Longest wait for librdkafka to hand back purged messages. */
#define RBK__PURGE_WAIT_MS 5000
/* Budget for warming topic metadata at creation. */
#define RBK__WARM_BUDGET_MS 5000
/* Delivery reports handled per p->lock hold. */
#define RBK__DR_CHUNK 256
/* Record pool: size classes of 256 << c bytes, c < RBK__POOL_CLASSES; each
 * side (sender stash, poll-thread free list) keeps at most
 * RBK__POOL_MAX_BYTES per class. Larger records are malloc()ed. The pool
 * only ever holds records that were in flight at once (a sender takes from
 * it before allocating), and the poll thread frees it after a poll interval
 * without events. */
#define RBK__POOL_CLASSES 5
#define RBK__POOL_MIN_SHIFT 8
#define RBK__POOL_MAX_BYTES (32u << 20)
/* Records a sender adds to p->incoming before it merges them itself. */
#define RBK__MERGE_BATCH 64
/* Delivery-report events the poll thread keeps (handled) for a sender to
 * destroy, and how long (ms) it lets them wait for one when nothing else
 * arrives before destroying them itself. */
#define RBK__PARK_MAX 32
#define RBK__PARK_MS 10

typedef struct rbk__sync_s rbk__sync_t;
typedef struct rbk__rec_s rbk__rec_t;

/* The outstanding records in acceptance order: a ring of slots. Positions
 * grow without bound; position i is slot i & (cap - 1). A record knows its
 * position, so removing it clears its slot and touches no other record; the
 * head advances over cleared slots. When the ring is full it is compacted in
 * place (the live records moved down, in order, their positions rewritten)
 * if at most half of it is live, or doubled otherwise, so it holds at most
 * about twice as many slots as the most records outstanding at one time
 * (RBK__OUT_MIN at least; it does not shrink). */
typedef struct rbk__out_s {
        rbk__rec_t **slot;
        uint64_t cap;  /* a power of two */
        uint64_t head; /* position of the oldest slot in use */
        uint64_t tail; /* position after the newest */
        uint64_t length; /* records in it */
        uint64_t compactions; /* times compacted (statistics) */
        uint64_t growths;     /* times enlarged, not counting the first
                               * allocation (statistics) */
} rbk__out_t;
#define RBK__OUT_MIN 1024

typedef struct rbk__hdr_s {
        const char *name;
        const void *value;
        size_t size;
} rbk__hdr_t;

/* One accepted message. Allocated in one block with everything it points to
 * (topic, id, key, value, headers). The fields the poll thread reads or
 * writes for a report come first, in 160 bytes (three or four cache lines,
 * each a miss there: the sender wrote the record last); the fields only the
 * sender and librdkafka read come after them. */
struct rbk__rec_s {
        /* Read or written by the poll thread per report. */
        struct rbk__rec_s *next; /* chains free records in the pool */
        const char *topic; /* full (prefixed) topic name */
        const char *id;    /* header value, NULL when ids are off */
        const void *key;
        size_t key_len;
        const void *value;
        size_t value_len;
        void *opaque;      /* the application's rbk_msg_t.opaque */
        rbk__sync_t *sync; /* waiter of rbk_producer_send_sync(), or NULL */
        uint64_t oseq;  /* acceptance number (p->accepted once accepted) */
        uint64_t opos;  /* its slot in p->outstanding (see rbk__out_t) */
        /* The id header as librdkafka's own header list, kept with the
         * record across its reuses from the pool (see rbk__id_headers()):
         * the record's, or librdkafka's while rkh_lent is set. */
        rd_kafka_headers_t *rkh;
        int rkh_lent;
        gint partition;        /* partition librdkafka chose, or -1 (atomic) */
        int in_rk;             /* librdkafka holds it (awaiting its report) */
        int resent;            /* times re-sent by fatal-error recovery */
        int possibly_persisted; /* an earlier attempt may be in the log */
        int pool_class; /* size class in the pool, -1 when malloc()ed */
        /* The final status, set when the record leaves p->outstanding. */
        rbk_err_t f_err;
        int f_kafka_err;
        int f_retriable;
        int f_pp;
        int32_t f_partition;
        int f_hook;     /* fire RBK_EV_DELIVERY_FAILED for it */
        int64_t f_offset;
        char *f_reason; /* g_malloc'ed, NULL when delivered */
        /* Read by the sender and librdkafka only. */
        size_t id_len;     /* the id's length */
        rbk__hdr_t *hdrs;
        size_t hdr_cnt;
        int64_t timestamp; /* CreateTime, kept across re-sends */
        int32_t partition_req; /* partition asked for, or RD_KAFKA_PARTITION_UA */
        char *rkh_val;  /* the id's bytes in rkh */
        size_t rkh_len; /* their length */
};

/* The bytes at the head of a record the poll thread reads or writes per
 * report (through f_reason). */
#define RBK__REC_REPORT_BYTES (offsetof(rbk__rec_t, id_len))

/* A chain of free records of one size class. */
typedef struct rbk__pool_s {
        rbk__rec_t *head;
        rbk__rec_t *tail; /* kept for chains being handed back only */
        guint n;
} rbk__pool_t;

struct rbk__sync_s {
        GCond cond;
        int done;
        rbk_err_t err;
        int64_t offset;
        char reason[256];
        rbk__rec_t *rec; /* NULL once reported */
};

struct rbk_producer_s {
        /* Immutable after creation. */
        rbk_conf_t *conf;
        rbk__hooks_t *hooks;
        char *client_name;
        char *prefix;
        size_t prefix_len;
        pid_t pid;
        uint64_t producer_id;
        char id_prefix[RBK_MSGID_STR_SIZE]; /* "<producer_id in hex>-" */
        int msgid_enable;
        int64_t send_timeout_ms;
        int64_t max_recoveries;
        int64_t fatal_window_ms;
        int64_t drain_ms;
        int64_t shutdown_timeout_ms;
        size_t max_msg_bytes;
        rbk_delivery_cb_t *dr_cb;
        void *dr_opaque;
        rbk_stats_cb_t *stats_cb;
        void *stats_opaque;
        GThread *thread;
        rbk__rdstats_t rdstats; /* latest librdkafka statistics (own lock) */

        GMutex close_lock; /* serialises rbk_producer_close() */
        int closed;
        rbk_err_t close_result;

        /* The sender's side (own cache lines). */
        GMutex send_lock __attribute__((aligned(64)));
        uint64_t seq;      /* last message sequence number used */
        uint64_t accepted; /* messages accepted (numbers records) */
        /* Accepted, not yet in outstanding, in acceptance order: a sender
         * merges them once there are RBK__MERGE_BATCH. */
        rbk__rec_t *incoming[RBK__MERGE_BATCH];
        guint incoming_n;
        rbk__pool_t stash[RBK__POOL_CLASSES]; /* sender's free records */

        GMutex lock __attribute__((aligned(64)));
        GCond cond; /* queue room, state changes, reports done */
        int waiters;
        int stop;            /* the poll thread must finish */
        int64_t generation;
        uint64_t merged;     /* records up to this number are merged */
        rbk__out_t outstanding; /* records not yet final, acceptance order */
        uint64_t rk_pending; /* those the current instance holds */
        uint64_t unreported; /* those whose delivery callback is not done */
        GArray *recoveries;  /* int64 times (ms) of recent recoveries */
        char fatal_reason[512];
        uint64_t shutdown_undelivered;
        rbk_producer_stats_t st;
        rbk__pool_t pool_free[RBK__POOL_CLASSES]; /* given back, for stash */

        /* Read by every send, written rarely (p->lock; the first six
         * holding p->send_lock too, or atomically): a cache line of their
         * own, apart from what the poll thread writes per message. */
        int closing __attribute__((aligned(64))); /* sends fail: SHUTDOWN */
        int recovering;    /* fatal error being recovered: sends wait */
        int gave_up;       /* recovery gave up: sends fail with FATAL */
        int fatal_pending; /* the current instance raised a fatal error
                            * (atomic: senders read it without a lock) */
        rd_kafka_t *rk;    /* NULL after giving up or closing */
        rd_kafka_queue_t *mainq;
        uint64_t room_gen; /* delivery-report batches released (atomic) */
        int merge_waiters; /* poll thread waits for a merge (atomic) */

        /* Delivery-report events handled by the poll thread and kept for a
         * sender to destroy (rbk__park(), rbk__unpark()): librdkafka's
         * messages are then freed by the thread that allocated them, which
         * is what allocators are fast at. park_lock is held while
         * destroying; parked_n is read atomically without it. */
        GMutex park_lock __attribute__((aligned(64)));
        int park;     /* rbk.producer.sender.frees (set at creation) */
        int parked_n; /* events in parked[] */
        rd_kafka_event_t *parked[RBK__PARK_MAX];
        uint64_t freed_by_senders; /* events destroyed by senders (atomic) */
};

/* ------------------------------------------------------------ helpers */

static int rbk__unpark(rbk_producer_t *p, int wait);

/* Room for n more records at the tail of out: compacts or grows it. */
static void rbk__out_reserve(rbk__out_t *out, uint64_t n) {
        if (out->tail - out->head + n <= out->cap)
                return;
        if (out->length + n <= out->cap / 2) {
                /* Compact: live records down to the head, in order. */
                uint64_t mask = out->cap - 1, w = out->head;
                for (uint64_t r = out->head; r != out->tail; r++) {
                        rbk__rec_t *rec = out->slot[r & mask];
                        if (!rec)
                                continue;
                        out->slot[r & mask] = NULL;
                        rec->opos = w;
                        out->slot[w++ & mask] = rec;
                }
                out->tail = w;
                out->compactions++;
                return;
        }
        uint64_t cap = out->cap ? out->cap : RBK__OUT_MIN;
        while (cap / 2 < out->length + n)
                cap *= 2;
        rbk__rec_t **slot = g_new0(rbk__rec_t *, cap);
        uint64_t w = 0;
        for (uint64_t r = out->head; r != out->tail; r++) {
                rbk__rec_t *rec = out->slot[r & (out->cap - 1)];
                if (!rec)
                        continue;
                rec->opos = w;
                slot[w++] = rec;
        }
        g_free(out->slot);
        out->slot = slot;
        if (out->cap)
                out->growths++;
        out->cap = cap;
        out->head = 0;
        out->tail = w;
}

/* Takes rec out of out, touching no other record. */
static void rbk__out_remove(rbk__out_t *out, rbk__rec_t *rec) {
        uint64_t mask = out->cap - 1;
        out->slot[rec->opos & mask] = NULL;
        out->length--;
        if (rec->opos == out->head)
                while (out->head != out->tail && !out->slot[out->head & mask])
                        out->head++;
}

/* The oldest record of out, or NULL. */
static rbk__rec_t *rbk__out_first(const rbk__out_t *out) {
        return out->head != out->tail ? out->slot[out->head & (out->cap - 1)]
                                      : NULL;
}

/* Iterates over the records of out in acceptance order (rec set to each). */
#define RBK__OUT_FOREACH(out, pos, rec)                                        \
        for (uint64_t pos = (out)->head; pos != (out)->tail; pos++)            \
                if (((rec) = (out)->slot[pos & ((out)->cap - 1)]))

/* Moves the records accepted since the last call to the tail of
 * p->outstanding. Caller holds p->send_lock and p->lock. */
static void rbk__merge_incoming(rbk_producer_t *p) {
        rbk__out_t *out = &p->outstanding;
        guint n = p->incoming_n;
        if (!n)
                return;
        rbk__out_reserve(out, n);
        uint64_t mask = out->cap - 1;
        for (guint i = 0; i < n; i++) {
                rbk__rec_t *rec = p->incoming[i];
                rec->opos = out->tail++;
                out->slot[rec->opos & mask] = rec;
        }
        out->length += n;
        p->rk_pending += n;
        p->unreported += n;
        p->incoming_n = 0;
        p->merged = p->accepted;
}

/* Returns (holding p->lock, which the caller holds) once every record up to
 * number top is merged. A sender merges every RBK__MERGE_BATCH records and
 * whenever the poll thread waits; the poll thread merges itself when no
 * send holds p->send_lock. Poll thread only. */
static void rbk__await_merged(rbk_producer_t *p, uint64_t top) {
        while (p->merged < top) {
                g_mutex_unlock(&p->lock);
                if (g_mutex_trylock(&p->send_lock)) {
                        g_mutex_lock(&p->lock);
                        rbk__merge_incoming(p);
                        g_mutex_unlock(&p->send_lock);
                        continue;
                }
                g_mutex_lock(&p->lock);
                if (p->merged >= top)
                        break;
                g_atomic_int_inc(&p->merge_waiters);
                g_cond_wait_until(&p->cond, &p->lock,
                                  g_get_monotonic_time() + 1000);
                g_atomic_int_dec_and_test(&p->merge_waiters);
        }
}

/* Takes both locks and merges; returns holding p->lock alone. */
static void rbk__lock_merged(rbk_producer_t *p) {
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        rbk__merge_incoming(p);
        g_mutex_unlock(&p->send_lock);
}

static int64_t rbk__deadline_us(int64_t timeout_ms) {
        return g_get_monotonic_time() + timeout_ms * 1000;
}

/* Whether a Kafka error on a message is worth sending it again for. */
static int rbk__kerr_retriable(rd_kafka_resp_err_t err) {
        switch (err) {
        case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
        case RD_KAFKA_RESP_ERR__TIMED_OUT:
        case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
        case RD_KAFKA_RESP_ERR__TRANSPORT:
        case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
        case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
        case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        case RD_KAFKA_RESP_ERR__FATAL:
        case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
        case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
        case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
        case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
        case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
        case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
        case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
        case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
        case RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER:
        case RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID:
        case RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED:
                return 1;
        default:
                return 0;
        }
}

/* ------------------------------------------------------------ partitioner */

/* A wrapper around librdkafka's built-in partitioners that records the
 * chosen partition in the record, so in-flight counts per partition are
 * known before delivery. Used only for the partitioners whose key-less
 * behaviour (sticky) a custom callback keeps unchanged; librdkafka calls it
 * with its topic lock held, so it touches nothing but the record. */
typedef int32_t(rbk__partitioner_t)(const rd_kafka_topic_t *rkt,
                                    const void *key, size_t keylen,
                                    int32_t partition_cnt, void *rkt_opaque,
                                    void *msg_opaque);

static const struct rbk__partitioner_s {
        const char *name;
        rbk__partitioner_t *fn;
} rbk__partitioners[] = {
    {"murmur2_random", rd_kafka_msg_partitioner_murmur2_random},
    {"consistent_random", rd_kafka_msg_partitioner_consistent_random},
    {"fnv1a_random", rd_kafka_msg_partitioner_fnv1a_random},
    {"random", rd_kafka_msg_partitioner_random},
};

static int32_t rbk__partitioner(const rd_kafka_topic_t *rkt, const void *key,
                                size_t keylen, int32_t partition_cnt,
                                void *rkt_opaque, void *msg_opaque) {
        const struct rbk__partitioner_s *pt = rkt_opaque;
        int32_t part = pt->fn(rkt, key, keylen, partition_cnt, NULL,
                              msg_opaque);
        rbk__rec_t *rec = msg_opaque;
        if (rec && part >= 0 && part < partition_cnt)
                __atomic_store_n(&rec->partition, part, __ATOMIC_RELAXED);
        return part;
}

static void rbk__install_partitioner(rd_kafka_conf_t *c) {
        rd_kafka_topic_conf_t *tc = rd_kafka_conf_get_default_topic_conf(c);
        if (!tc) {
                tc = rd_kafka_topic_conf_new();
                rd_kafka_conf_set_default_topic_conf(c, tc);
                tc = rd_kafka_conf_get_default_topic_conf(c);
                if (!tc)
                        return;
        }
        char name[64];
        size_t sz = sizeof(name);
        if (rd_kafka_topic_conf_get(tc, "partitioner", name, &sz) !=
            RD_KAFKA_CONF_OK)
                return;
        for (size_t i = 0; i < G_N_ELEMENTS(rbk__partitioners); i++) {
                if (!strcmp(name, rbk__partitioners[i].name)) {
                        rd_kafka_topic_conf_set_opaque(
                            tc, (void *)&rbk__partitioners[i]);
                        rd_kafka_topic_conf_set_partitioner_cb(
                            tc, rbk__partitioner);
                        return;
                }
        }
}

/* ------------------------------------------------------------ instances */

static void rbk__rd_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                           const char *buf) {
        rbk_producer_t *p = rd_kafka_opaque(rk);
        if (p && p->hooks)
                rbk__hooks_rd_log(p->hooks, level, fac, buf);
}

/* Closes a broker connection of a producer instance abortively (SO_LINGER
 * 0: the kernel drops what it has not delivered and resets the connection).
 *
 * librdkafka closes a connection when a request on it times out and retries
 * the request; the library re-sends what a replaced instance held. After a
 * plain close() the kernel keeps retransmitting the bytes it still holds;
 * behind a network partition the broker's side of the connection stays
 * open, and when the partition heals it receives the old produce request.
 * Within one instance its sequence numbers make that harmless, but a
 * replaced instance's request is appended after the re-send and newer
 * messages, a second copy. An abortive close drops those bytes. It
 * cannot recall what the broker's kernel already has (a paused broker still
 * appends that), and a producer closes its connections only after its
 * requests are answered or given up, so nothing else is lost. */
static int rbk__close_socket(int fd, void *opaque) {
        const struct linger now = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &now, sizeof(now));
        return close(fd);
}

/* A fresh librdkafka producer with the library's callbacks, and its main
 * queue. NULL with the reason in errstr. */
static rd_kafka_t *rbk__instance_new(rbk_producer_t *p, rd_kafka_queue_t **qp,
                                     char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c =
            rbk__conf_build(p->conf, RBK_PRODUCER, errstr, errstr_size);
        if (!c)
                return NULL;
        if (!p->max_msg_bytes) {
                char v[32];
                size_t sz = sizeof(v);
                if (rd_kafka_conf_get(c, "message.max.bytes", v, &sz) ==
                    RD_KAFKA_CONF_OK)
                        p->max_msg_bytes = (size_t)g_ascii_strtoull(v, NULL, 10);
                if (!p->max_msg_bytes)
                        p->max_msg_bytes = 1000000;
        }
        rd_kafka_conf_set_opaque(c, p);
        rd_kafka_conf_set_log_cb(c, rbk__rd_log_cb);
        rd_kafka_conf_set_events(c, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR |
                                        RD_KAFKA_EVENT_STATS);
        rbk__install_partitioner(c);
        rd_kafka_conf_set_closesocket_cb(c, rbk__close_socket);
        char rderr[512];
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, rderr, sizeof(rderr));
        if (!rk) {
                rd_kafka_conf_destroy(c);
                rbk__redact(rderr);
                rbk__seterr(errstr, errstr_size, RBK_ERR_KAFKA,
                            "creating the librdkafka producer failed: %s",
                            rderr);
                return NULL;
        }
        rbk__oauth_start(p->conf, rk);
        *qp = rd_kafka_queue_get_main(rk);
        return rk;
}

/* Fetches metadata for each topic so the first send to it does not wait on
 * librdkafka's metadata retry. Bounded by budget_ms in total. */
static void rbk__warm(rbk_producer_t *p, rd_kafka_t *rk, GPtrArray *topics,
                      int64_t budget_ms) {
        int64_t end = rbk__now_ms() + budget_ms;
        for (guint i = 0; i < topics->len; i++) {
                int64_t left = end - rbk__now_ms();
                if (left <= 0)
                        break;
                const char *t = g_ptr_array_index(topics, i);
                rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, t, NULL);
                if (!rkt)
                        continue;
                const struct rd_kafka_metadata *md = NULL;
                rd_kafka_resp_err_t err =
                    rd_kafka_metadata(rk, 0, rkt, &md, (int)left);
                if (err)
                        rbk__log(p->hooks, 5, "rbk",
                                 "metadata for topic %s not warmed: %s",
                                 rbk__unprefixed(p->prefix, t),
                                 rd_kafka_err2str(err));
                if (md)
                        rd_kafka_metadata_destroy(md);
                rd_kafka_topic_destroy(rkt);
        }
}

static void rbk__warm_conf_topics(rbk_producer_t *p, rd_kafka_t *rk) {
        const char *list = rbk__conf_str(p->conf, "rbk.metadata.warm.topics");
        if (!list || !*list)
                return;
        GPtrArray *topics = g_ptr_array_new_with_free_func(g_free);
        char **names = g_strsplit(list, ",", -1);
        for (char **n = names; *n; n++) {
                char *t = g_strstrip(*n);
                if (!*t)
                        continue;
                if (rbk__topic_validate(p->prefix, t, NULL, 0) != RBK_OK) {
                        rbk__log(p->hooks, 4, "rbk",
                                 "rbk.metadata.warm.topics: invalid topic "
                                 "name \"%s\" ignored",
                                 t);
                        continue;
                }
                g_ptr_array_add(topics, rbk__prefixed(p->prefix, t));
        }
        g_strfreev(names);
        rbk__warm(p, rk, topics, RBK__WARM_BUDGET_MS);
        g_ptr_array_free(topics, TRUE);
}

/* ------------------------------------------------------------ produce */

/* The record's id header as a librdkafka header list holding it alone,
 * NULL when it cannot be made.
 *
 * librdkafka 2.0.2 makes, for a message given its headers one by one
 * (RD_KAFKA_VTYPE_HEADER), a header list, its element array and the header
 * (three allocations on the sending thread) and frees them with the
 * message, on the thread that serves the delivery report. Under glibc's
 * malloc that hand-over is the largest part of the id's cost: the sender's
 * malloc() sorts and merges the chunks the other thread freed into the
 * shared arena, under the arena's lock. So the record keeps its list: it is
 * handed over whole (RD_KAFKA_VTYPE_HEADERS), taken back from the delivered
 * message (rd_kafka_message_detach_headers(), in rbk__dr_one()) and reused
 * with the record; the id is written over the last one's when it has the
 * same length (the value lies in the header's own allocation, which the
 * list owns), else the header is replaced, on the sending thread. A list
 * still lent to librdkafka when the record is reused or freed (its
 * instance was destroyed without reporting it) is librdkafka's to free. */
static rd_kafka_headers_t *rbk__id_headers(rbk__rec_t *rec) {
        if (rec->rkh_lent) {
                rec->rkh = NULL;
                rec->rkh_val = NULL;
                rec->rkh_lent = 0;
        }
        rd_kafka_headers_t *h = rec->rkh;
        if (h) {
                if (rec->rkh_val && rec->rkh_len == rec->id_len) {
                        memcpy(rec->rkh_val, rec->id, rec->id_len);
                        return h;
                }
                rd_kafka_header_remove(h, RBK_MSGID_HEADER);
        }
        if (!h)
                h = rec->rkh = rd_kafka_headers_new(1);
        const void *v = NULL;
        size_t sz = 0;
        if (rd_kafka_header_add(h, RBK_MSGID_HEADER, -1, rec->id,
                                (ssize_t)rec->id_len) ||
            rd_kafka_header_cnt(h) != 1 ||
            rd_kafka_header_get_last(h, RBK_MSGID_HEADER, &v, &sz)) {
                rd_kafka_headers_destroy(h);
                rec->rkh = NULL;
                rec->rkh_val = NULL;
                return NULL;
        }
        rec->rkh_val = (char *)v;
        rec->rkh_len = sz;
        return h;
}

/* Frees a record with the header list it keeps. */
static void rbk__rec_dispose(rbk__rec_t *rec) {
        if (rec->rkh && !rec->rkh_lent)
                rd_kafka_headers_destroy(rec->rkh);
        g_free(rec);
}

/* Hands one record to instance rk. The caller holds p->send_lock (a send)
 * or p->lock (a re-send while sends are held), and does the bookkeeping
 * (rec->in_rk, p->rk_pending). */
static rd_kafka_resp_err_t rbk__produce(rd_kafka_t *rk, rbk__rec_t *rec) {
        rd_kafka_vu_t vu[9 + RBK_MAX_HEADERS];
        size_t n = 0;
        int32_t part = rec->partition_req;
        if (part == RD_KAFKA_PARTITION_UA) {
                /* A re-send goes where the first attempt went. */
                gint known = g_atomic_int_get(&rec->partition);
                if (known >= 0)
                        part = known;
        }
        vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
        vu[n++].u.cstr = rec->topic;
        vu[n].vtype = RD_KAFKA_VTYPE_PARTITION;
        vu[n++].u.i32 = part;
        vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
        vu[n].u.mem.ptr = (void *)rec->value;
        vu[n++].u.mem.size = rec->value_len;
        if (rec->key) {
                vu[n].vtype = RD_KAFKA_VTYPE_KEY;
                vu[n].u.mem.ptr = (void *)rec->key;
                vu[n++].u.mem.size = rec->key_len;
        }
        vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
        vu[n++].u.ptr = rec;
        vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
        vu[n++].u.i = 0; /* no copy, no free: the record owns the bytes */
        vu[n].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
        vu[n++].u.i64 = rec->timestamp;
        rd_kafka_headers_t *lent = NULL;
        if (rec->id && !rec->hdr_cnt && !rec->possibly_persisted &&
            (lent = rbk__id_headers(rec))) {
                vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
                vu[n++].u.headers = lent;
        }
        for (size_t i = 0; i < rec->hdr_cnt; i++) {
                vu[n].vtype = RD_KAFKA_VTYPE_HEADER;
                vu[n].u.header.name = rec->hdrs[i].name;
                vu[n].u.header.val = rec->hdrs[i].value;
                vu[n++].u.header.size = (ssize_t)rec->hdrs[i].size;
        }
        if (rec->id && !lent) {
                vu[n].vtype = RD_KAFKA_VTYPE_HEADER;
                vu[n].u.header.name = RBK_MSGID_HEADER;
                vu[n].u.header.val = rec->id;
                vu[n++].u.header.size = (ssize_t)rec->id_len;
        }
        char rs[24];
        if (rec->possibly_persisted) {
                int len = g_snprintf(rs, sizeof(rs), "%d", rec->resent);
                vu[n].vtype = RD_KAFKA_VTYPE_HEADER;
                vu[n].u.header.name = RBK_RESENT_HEADER;
                vu[n].u.header.val = rs;
                vu[n++].u.header.size = len;
        }
        /* librdkafka holds the list until the report; a refused message
         * leaves it with the caller. Set before: the report may come
         * before produceva returns. */
        rec->rkh_lent = lent != NULL;
        rd_kafka_error_t *error = rd_kafka_produceva(rk, vu, n);
        if (!error)
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        rec->rkh_lent = 0;
        /* A fatal instance refuses with the cause's code, flagged fatal. */
        rd_kafka_resp_err_t err = rd_kafka_error_is_fatal(error)
                                      ? RD_KAFKA_RESP_ERR__FATAL
                                      : rd_kafka_error_code(error);
        rd_kafka_error_destroy(error);
        return err;
}


/* ------------------------------------------------------------ record pool */

/* The size class of a record of total bytes, -1 when too large to pool. */
static int rbk__pool_class(size_t total) {
        for (int c = 0; c < RBK__POOL_CLASSES; c++)
                if (total <= ((size_t)1 << (RBK__POOL_MIN_SHIFT + c)))
                        return c;
        return -1;
}

/* Most records of class c one side of the pool keeps. */
static guint rbk__pool_cap(int c) {
        return RBK__POOL_MAX_BYTES >> (RBK__POOL_MIN_SHIFT + c);
}

static void rbk__pool_push(rbk__pool_t *pl, rbk__rec_t *rec) {
        rec->next = pl->head;
        pl->head = rec;
        pl->n++;
}

/* Moves chain src to dst (empty); src's count is read without a lock. */
static void rbk__pool_take(rbk__pool_t *dst, rbk__pool_t *src) {
        *dst = *src;
        src->head = src->tail = NULL;
        __atomic_store_n(&src->n, 0, __ATOMIC_RELAXED);
}

static void rbk__pool_clear(rbk__pool_t *pl) {
        rbk__rec_t *rec = pl->head;
        while (rec) {
                rbk__rec_t *next = rec->next;
                rbk__rec_dispose(rec);
                rec = next;
        }
        pl->head = NULL;
        pl->n = 0;
}

/* Frees the free records of both sides (poll thread, when idle, and
 * destruction). The sender's stash only if no send is under way. */
static void rbk__pool_trim(rbk_producer_t *p) {
        rbk__pool_t back[RBK__POOL_CLASSES];
        g_mutex_lock(&p->lock);
        for (int c = 0; c < RBK__POOL_CLASSES; c++)
                rbk__pool_take(&back[c], &p->pool_free[c]);
        g_mutex_unlock(&p->lock);
        for (int c = 0; c < RBK__POOL_CLASSES; c++)
                rbk__pool_clear(&back[c]);
        if (g_mutex_trylock(&p->send_lock)) {
                memcpy(back, p->stash, sizeof(back));
                memset(p->stash, 0, sizeof(p->stash));
                g_mutex_unlock(&p->send_lock);
                for (int c = 0; c < RBK__POOL_CLASSES; c++)
                        rbk__pool_clear(&back[c]);
        }
}

/* Starts fetching what the next two sends of class c will write, taking
 * next (the stash's new head) the next send and the record behind it the
 * one after: their memory was last touched long ago (at saturation
 * librdkafka's queue holds 100,000 messages, and each thread finds another
 * thread's lines out of its caches). next's lines were asked for by the
 * previous send, so reading it now costs no wait: its id header list (the
 * struct librdkafka reads the serialized size from, the header the id is
 * written into) is asked for, and the lines of the record behind it. A
 * list still lent to librdkafka is not touched (a prefetch never faults,
 * but it is not ours to read). Always inlined: GCC takes a function whose
 * only effect is prefetches for one without effects and drops its call. */
static inline __attribute__((always_inline)) void
rbk__stash_prefetch(const rbk__rec_t *next, int c, size_t total) {
        if (next->rkh && !next->rkh_lent) {
                __builtin_prefetch(next->rkh, 0, 3);
                if (next->rkh_val)
                        __builtin_prefetch(next->rkh_val, 1, 3);
        }
        const rbk__rec_t *after = next->next;
        if (after)
                for (size_t o = 0;
                     o < ((size_t)1 << (RBK__POOL_MIN_SHIFT + c)) && o < total;
                     o += 64)
                        __builtin_prefetch((const char *)after + o, 1, 3);
}

/* The message's CreateTime, 0 for now: a field of layout version 2, never
 * read from a version 1 message (its struct ends before it). */
static int64_t rbk__msg_timestamp(const rbk_msg_t *msg) {
        return msg->version >= 2 ? msg->timestamp : 0;
}

/* Builds the record for msg. The caller has validated msg and holds
 * p->send_lock (the stash). */
static rbk__rec_t *rbk__rec_new(rbk_producer_t *p, const rbk_msg_t *msg,
                                size_t topic_len, size_t id_len) {
        size_t hdr_bytes = 0;
        for (size_t i = 0; i < msg->header_cnt; i++)
                hdr_bytes += strlen(msg->headers[i].name) + 1 +
                             msg->headers[i].size;
        size_t total = sizeof(rbk__rec_t) + msg->header_cnt * sizeof(rbk__hdr_t) +
                       p->prefix_len + topic_len + 1 + id_len + 1 +
                       msg->key_len + msg->value_len + hdr_bytes;
        int c = rbk__pool_class(total);
        rbk__rec_t *rec;
        rd_kafka_headers_t *rkh = NULL;
        char *rkh_val = NULL;
        size_t rkh_len = 0;
        int rkh_lent = 0;
        if (c >= 0 && !p->stash[c].head &&
            __atomic_load_n(&p->pool_free[c].n, __ATOMIC_RELAXED)) {
                /* Take what the poll thread gave back, all at once. */
                g_mutex_lock(&p->lock);
                rbk__pool_take(&p->stash[c], &p->pool_free[c]);
                g_mutex_unlock(&p->lock);
        }
        if (c >= 0 && p->stash[c].head) {
                rec = p->stash[c].head;
                rkh = rec->rkh;
                rkh_val = rec->rkh_val;
                rkh_len = rec->rkh_len;
                rkh_lent = rec->rkh_lent;
                rbk__rec_t *next = rec->next;
                p->stash[c].head = next;
                p->stash[c].n--;
                if (next)
                        rbk__stash_prefetch(next, c, total);
        } else {
                rec = g_try_malloc(c >= 0 ? (size_t)1 << (RBK__POOL_MIN_SHIFT + c)
                                          : total);
                if (!rec)
                        return NULL;
        }
        memset(rec, 0, sizeof(*rec)); /* the bytes behind it are all written */
        rec->rkh = rkh;
        rec->rkh_val = rkh_val;
        rec->rkh_len = rkh_len;
        rec->rkh_lent = rkh_lent;
        rec->pool_class = c;
        rec->hdrs = (rbk__hdr_t *)(rec + 1);
        char *b = (char *)(rec->hdrs + msg->header_cnt);

        char *topic = b;
        memcpy(b, p->prefix, p->prefix_len);
        memcpy(b + p->prefix_len, msg->topic, topic_len + 1);
        b += p->prefix_len + topic_len + 1;
        rec->topic = topic;

        if (id_len) {
                if (msg->id)
                        memcpy(b, msg->id, id_len + 1);
                else
                        b[0] = '\0'; /* formatted when sent */
                rec->id = b;
                rec->id_len = msg->id ? id_len : 0;
                b += id_len + 1;
        }
        if (msg->key) {
                memcpy(b, msg->key, msg->key_len);
                rec->key = b;
                rec->key_len = msg->key_len;
                b += msg->key_len;
        }
        if (msg->value) {
                memcpy(b, msg->value, msg->value_len);
                rec->value = b;
                rec->value_len = msg->value_len;
                b += msg->value_len;
        }
        for (size_t i = 0; i < msg->header_cnt; i++) {
                const rbk_header_t *h = &msg->headers[i];
                size_t nl = strlen(h->name) + 1;
                memcpy(b, h->name, nl);
                rec->hdrs[i].name = b;
                b += nl;
                rec->hdrs[i].value = NULL;
                rec->hdrs[i].size = 0;
                if (h->value) {
                        memcpy(b, h->value, h->size);
                        rec->hdrs[i].value = b;
                        rec->hdrs[i].size = h->size;
                        b += h->size;
                }
        }
        rec->hdr_cnt = msg->header_cnt;
        rec->opaque = msg->opaque;
        rec->partition_req = msg->partition;
        rec->partition = msg->partition >= 0 ? msg->partition : -1;
        rec->timestamp = rbk__msg_timestamp(msg);
        if (!rec->timestamp)
                rec->timestamp = g_get_real_time() / 1000;
        return rec;
}

static void rbk__rec_free(rbk__rec_t *rec) {
        g_free(rec->f_reason);
        rbk__rec_dispose(rec);
}

/* Gives a reported record back to the pool chain back (poll thread), or
 * frees it when it is not poolable or that side of the pool is full
 * (seen: what p->pool_free holds). */
static void rbk__rec_release(rbk__rec_t *rec, rbk__pool_t *back,
                             const guint *seen) {
        int c = rec->pool_class;
        if (rec->f_reason)
                g_free(rec->f_reason);
        if (c < 0 || back[c].n + seen[c] >= rbk__pool_cap(c)) {
                rbk__rec_dispose(rec);
                return;
        }
        if (!back[c].head)
                back[c].tail = rec;
        rbk__pool_push(&back[c], rec);
}

/* Every public entry point checks for a fork first, before it takes a
 * lock: one a parent thread held at fork() time stays held in the child. */
static rbk_err_t rbk__forked_err(char *errstr, size_t errstr_size) {
        return rbk__seterr(errstr, errstr_size, RBK_ERR_FORKED,
                           "producer used in a forked child process; create "
                           "clients after fork()");
}

static rbk_err_t rbk__validate(rbk_producer_t *p, const rbk_msg_t *msg,
                               size_t *topic_lenp, size_t *id_lenp,
                               char *errstr, size_t errstr_size) {
        if (msg->version < 1 || msg->version > RBK_MSG_VERSION)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "msg->version is %d, expected 1 to %d "
                                   "(initialise messages with RBK_MSG_INIT)",
                                   msg->version, RBK_MSG_VERSION);
        if (rbk__msg_timestamp(msg) < 0)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "msg->timestamp is %" PRId64 "; use "
                                   "milliseconds since the epoch, or 0 for "
                                   "now",
                                   rbk__msg_timestamp(msg));
        rbk_err_t err = rbk__topic_validate_len(p->prefix_len, msg->topic,
                                                topic_lenp, errstr, errstr_size);
        if (err)
                return err;
        if (msg->partition < RBK_PARTITION_ANY)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "msg->partition is %d; use a partition "
                                   "number or RBK_PARTITION_ANY",
                                   (int)msg->partition);
        if (!msg->key && msg->key_len)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "msg->key is NULL but msg->key_len is %zu",
                                   msg->key_len);
        if (!msg->value && msg->value_len)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "msg->value is NULL but msg->value_len is "
                                   "%zu",
                                   msg->value_len);
        if (msg->value_len > p->max_msg_bytes)
                return rbk__seterr(errstr, errstr_size,
                                   RBK_ERR_MSG_SIZE_TOO_LARGE,
                                   "message value is %zu bytes; "
                                   "message.max.bytes is %zu",
                                   msg->value_len, p->max_msg_bytes);
        if (msg->header_cnt > RBK_MAX_HEADERS)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_TOO_MANY_HEADERS,
                                   "message has %zu headers; at most %d are "
                                   "accepted",
                                   msg->header_cnt, RBK_MAX_HEADERS);
        if (msg->header_cnt && !msg->headers)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "msg->headers is NULL but msg->header_cnt "
                                   "is %zu",
                                   msg->header_cnt);
        for (size_t i = 0; i < msg->header_cnt; i++) {
                const rbk_header_t *h = &msg->headers[i];
                if (!h->name || !*h->name)
                        return rbk__seterr(errstr, errstr_size,
                                           RBK_ERR_INVALID_ARG,
                                           "header %zu has no name", i);
                if (!h->value && h->size)
                        return rbk__seterr(errstr, errstr_size,
                                           RBK_ERR_INVALID_ARG,
                                           "header \"%s\" has a NULL value "
                                           "but size %zu",
                                           h->name, h->size);
                if (!strcmp(h->name, RBK_MSGID_HEADER) ||
                    !strcmp(h->name, RBK_RESENT_HEADER))
                        return rbk__seterr(
                            errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "header \"%s\" is reserved by the library (set "
                            "msg->id to choose the message id)",
                            h->name);
        }
        *id_lenp = 0;
        if (msg->id) {
                size_t l = strlen(msg->id);
                if (l == 0)
                        return rbk__seterr(errstr, errstr_size,
                                           RBK_ERR_INVALID_ARG,
                                           "msg->id is empty; use NULL for "
                                           "a generated id");
                if (l > RBK_MSGID_MAX_LEN)
                        return rbk__seterr(errstr, errstr_size,
                                           RBK_ERR_INVALID_ARG,
                                           "msg->id is %zu bytes long; at "
                                           "most %d are accepted",
                                           l, RBK_MSGID_MAX_LEN);
                *id_lenp = l;
        } else if (p->msgid_enable) {
                *id_lenp = RBK_MSGID_STR_SIZE - 1;
        }
        return RBK_OK;
}

/* Accepts msg: validates, copies and hands it to librdkafka, waiting
 * (bounded) for queue room or for a fatal-error recovery. sync, if not NULL,
 * is attached to the record before it becomes visible. */
static rbk_err_t rbk__send(rbk_producer_t *p, const rbk_msg_t *msg,
                           rbk__sync_t *sync, char *errstr,
                           size_t errstr_size) {
        if (!p)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "producer is NULL");
        if (!msg)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                                   "msg is NULL");
        if (rbk__forked(p->pid))
                return rbk__forked_err(errstr, errstr_size);
        size_t id_len = 0, topic_len = 0;
        rbk_err_t err =
            rbk__validate(p, msg, &topic_len, &id_len, errstr, errstr_size);
        if (err)
                return err;
        int generated = !msg->id && id_len > 0;
        rbk__rec_t *rec = NULL;

        /* The deadline is read from the clock only when a wait starts: most
         * sends never wait. */
        int64_t end = 0;
        int waited_room = 0;
        for (;;) {
                const char *why = NULL;
                rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
                uint64_t room_gen = 0;
                /* Frees librdkafka's reported messages here, where they were
                 * (mostly) allocated. */
                rbk__unpark(p, 0);
                g_mutex_lock(&p->send_lock);
                if (!rec) {
                        rec = rbk__rec_new(p, msg, topic_len, id_len);
                        if (!rec) {
                                g_mutex_unlock(&p->send_lock);
                                return rbk__seterr(
                                    errstr, errstr_size, RBK_ERR_NOMEM,
                                    "out of memory copying the message");
                        }
                        rec->sync = sync;
                        if (sync)
                                sync->rec = rec;
                }
                /* closing, gave_up, recovering and rk only change under
                 * p->send_lock too. */
                if (p->closing || p->gave_up) {
                        g_mutex_unlock(&p->send_lock);
                        g_mutex_lock(&p->lock);
                        if (p->closing)
                                err = rbk__seterr(errstr, errstr_size,
                                                  RBK_ERR_SHUTDOWN,
                                                  "producer is closed");
                        else
                                err = rbk__seterr(
                                    errstr, errstr_size, RBK_ERR_FATAL,
                                    "producer gave up after repeated fatal "
                                    "errors: %s",
                                    p->fatal_reason);
                        break;
                }
                if (p->recovering || g_atomic_int_get(&p->fatal_pending) ||
                    !p->rk) {
                        why = "fatal-error recovery";
                } else {
                        if (generated) {
                                int l = rbk__msgid_format_seq(
                                    p->id_prefix, p->seq + 1, (char *)rec->id,
                                    RBK_MSGID_STR_SIZE);
                                rec->id_len = l > 0 ? (size_t)l : 0;
                        }
                        /* Linked before librdkafka can report it; unlinked
                         * again if librdkafka refuses it. */
                        room_gen = __atomic_load_n(&p->room_gen,
                                                   __ATOMIC_ACQUIRE);
                        p->incoming[p->incoming_n++] = rec;
                        rec->in_rk = 1;
                        rec->oseq = p->accepted + 1;
                        kerr = rbk__produce(p->rk, rec);
                        if (!kerr) {
                                if (generated)
                                        p->seq++;
                                p->accepted++;
                                if (p->incoming_n >= RBK__MERGE_BATCH ||
                                    g_atomic_int_get(&p->merge_waiters)) {
                                        g_mutex_lock(&p->lock);
                                        rbk__merge_incoming(p);
                                        if (p->merge_waiters)
                                                g_cond_broadcast(&p->cond);
                                        g_mutex_unlock(&p->lock);
                                }
                                g_mutex_unlock(&p->send_lock);
                                return RBK_OK;
                        }
                        p->incoming_n--;
                        rec->in_rk = 0;
                }
                g_mutex_unlock(&p->send_lock);
                g_mutex_lock(&p->lock);
                if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                        if (p->room_gen != room_gen) {
                                /* Room appeared since: try again. */
                                g_mutex_unlock(&p->lock);
                                continue;
                        }
                        why = "room in the producer queue";
                        if (!waited_room && !rbk__tls_no_block) {
                                waited_room = 1;
                                p->st.queue_full_waits++;
                        }
                } else if (kerr == RD_KAFKA_RESP_ERR__FATAL) {
                        if (!p->fatal_pending && p->mainq)
                                rd_kafka_queue_yield(p->mainq);
                        g_atomic_int_set(&p->fatal_pending, 1);
                        why = "fatal-error recovery";
                } else if (kerr == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
                        err = rbk__seterr(errstr, errstr_size,
                                          RBK_ERR_MSG_SIZE_TOO_LARGE,
                                          "message (key, value and headers) "
                                          "is larger than message.max.bytes "
                                          "(%zu)",
                                          p->max_msg_bytes);
                        break;
                } else if (kerr) {
                        err = rbk__seterr(
                            errstr, errstr_size, RBK_ERR_KAFKA,
                            "librdkafka refused the message for topic %s: "
                            "%s: %s",
                            msg->topic, rd_kafka_err2name(kerr),
                            rd_kafka_err2str(kerr));
                        break;
                } else if (!p->recovering && !p->fatal_pending && p->rk &&
                           !p->closing && !p->gave_up) {
                        /* The recovery ended meanwhile. */
                        g_mutex_unlock(&p->lock);
                        continue;
                }
                /* Wait for room or for the recovery to finish (p->lock). */
                if (rbk__tls_no_block) {
                        err = rbk__seterr(
                            errstr, errstr_size, RBK_ERR_WOULD_BLOCK,
                            "send from a delivery callback would wait for "
                            "%s",
                            why);
                        break;
                }
                if (!end)
                        end = rbk__deadline_us(p->send_timeout_ms);
                if (g_get_monotonic_time() >= end) {
                        err = rbk__seterr(
                            errstr, errstr_size, RBK_ERR_QUEUE_FULL,
                            "waited %" G_GINT64_FORMAT " ms for %s "
                            "(rbk.producer.send.timeout.ms)",
                            p->send_timeout_ms, why);
                        break;
                }
                /* Bounded slices: a wake-up can never be missed for long. */
                int64_t slice = g_get_monotonic_time() + RBK__POLL_MS * 1000;
                p->waiters++;
                g_cond_wait_until(&p->cond, &p->lock, MIN(slice, end));
                p->waiters--;
                g_mutex_unlock(&p->lock);
        }
        /* Here holding p->lock only. */
        g_mutex_unlock(&p->lock);
        if (sync)
                sync->rec = NULL;
        rbk__rec_free(rec);
        return err;
}

rbk_err_t rbk_producer_send(rbk_producer_t *p, const rbk_msg_t *msg,
                            char *errstr, size_t errstr_size) {
        return rbk__send(p, msg, NULL, errstr, errstr_size);
}

rbk_err_t rbk_producer_send_sync(rbk_producer_t *p, const rbk_msg_t *msg,
                                 int timeout_ms, int64_t *offsetp, char *errstr,
                                 size_t errstr_size) {
        if (p && rbk__forked(p->pid))
                return rbk__forked_err(errstr, errstr_size);
        if (rbk__tls_no_block)
                return rbk__seterr(errstr, errstr_size, RBK_ERR_WOULD_BLOCK,
                                   "rbk_producer_send_sync() called from a "
                                   "delivery callback or hook");
        rbk__sync_t sync;
        memset(&sync, 0, sizeof(sync));
        g_cond_init(&sync.cond);
        rbk_err_t err = rbk__send(p, msg, &sync, errstr, errstr_size);
        if (err) {
                g_cond_clear(&sync.cond);
                return err;
        }
        int64_t end = rbk__deadline_us(timeout_ms < 0 ? 0 : timeout_ms);
        g_mutex_lock(&p->lock);
        while (!sync.done && g_get_monotonic_time() < end)
                g_cond_wait_until(&sync.cond, &p->lock, end);
        if (!sync.done) {
                /* Detach: the record stays accepted and is reported to the
                 * delivery callback alone. */
                sync.rec->sync = NULL;
                g_mutex_unlock(&p->lock);
                g_cond_clear(&sync.cond);
                return rbk__seterr(errstr, errstr_size, RBK_ERR_TIMED_OUT,
                                   "no delivery report within %d ms; the "
                                   "message is still in flight",
                                   timeout_ms);
        }
        g_mutex_unlock(&p->lock);
        g_cond_clear(&sync.cond);
        if (sync.err == RBK_OK) {
                if (offsetp)
                        *offsetp = sync.offset;
                return RBK_OK;
        }
        return rbk__seterr(errstr, errstr_size, sync.err, "%s", sync.reason);
}

/* ------------------------------------------------------------ reports */

/* Records made final whose delivery callbacks are still to run (the poll
 * thread's own array). */
typedef struct rbk__done_s {
        rbk__rec_t **v;
        guint len, cap;
} rbk__done_t;

static inline void rbk__done_add(rbk__done_t *done, rbk__rec_t *rec) {
        if (G_UNLIKELY(done->len == done->cap)) {
                done->cap = done->cap ? done->cap * 2 : 256;
                done->v = g_renew(rbk__rec_t *, done->v, done->cap);
        }
        done->v[done->len++] = rec;
}

/* Makes rec final (caller holds p->lock): unlinks it, counts it, wakes a
 * synchronous sender. The delivery callback runs later, without the lock. */
static void rbk__finalize(rbk_producer_t *p, rbk__rec_t *rec, rbk_err_t err,
                          int kafka_err, int32_t partition, int64_t offset,
                          int pp, char *reason, rbk__done_t *done) {
        rbk__out_remove(&p->outstanding, rec);
        rec->f_err = err;
        rec->f_kafka_err = kafka_err;
        rec->f_partition = partition;
        rec->f_offset = offset;
        rec->f_pp = pp;
        rec->f_retriable =
            err == RBK_OK ? 0 : rbk__kerr_retriable((rd_kafka_resp_err_t)kafka_err);
        rec->f_reason = reason;
        if (err == RBK_OK) {
                p->st.delivered++;
        } else {
                p->st.failed++;
                if (pp)
                        p->st.possibly_persisted++;
                if (err == RBK_ERR_SHUTDOWN)
                        p->shutdown_undelivered++;
        }
        if (rec->sync) {
                rbk__sync_t *s = rec->sync;
                s->err = err;
                s->offset = offset;
                g_strlcpy(s->reason, reason ? reason : "", sizeof(s->reason));
                s->done = 1;
                s->rec = NULL;
                rec->sync = NULL;
                g_cond_signal(&s->cond);
        }
        rbk__done_add(done, rec);
}

/* Runs the delivery callback of every final record, gives them back to the
 * pool, and updates the unreported count. Poll thread, without p->lock. */
static void rbk__report(rbk_producer_t *p, rbk__done_t *done) {
        if (!done->len)
                return;
        rbk__pool_t back[RBK__POOL_CLASSES];
        memset(back, 0, sizeof(back));
        /* What the free list holds now (a sender may have emptied it). */
        guint seen[RBK__POOL_CLASSES];
        for (int c = 0; c < RBK__POOL_CLASSES; c++)
                seen[c] = __atomic_load_n(&p->pool_free[c].n, __ATOMIC_RELAXED);
        for (guint i = 0; i < done->len; i++) {
                rbk__rec_t *rec = done->v[i];
                if (p->dr_cb) {
                        rbk_delivery_t dr;
                        memset(&dr, 0, sizeof(dr));
                        dr.version = RBK_DELIVERY_VERSION;
                        dr.err = rec->f_err;
                        dr.kafka_err = rec->f_kafka_err;
                        dr.reason = rec->f_reason ? rec->f_reason : "";
                        dr.retriable = rec->f_retriable;
                        dr.possibly_persisted = rec->f_pp;
                        dr.topic = rec->topic + p->prefix_len;
                        dr.partition = rec->f_partition;
                        dr.offset = rec->f_offset;
                        dr.id = rec->id;
                        dr.key = rec->key;
                        dr.key_len = rec->key_len;
                        dr.value = rec->value;
                        dr.value_len = rec->value_len;
                        dr.msg_opaque = rec->opaque;
                        dr.resent = rec->resent;
                        p->dr_cb(&dr, p->dr_opaque);
                }
                if (rec->f_hook) {
                        rbk_event_t ev;
                        char key[320];
                        rbk__event_init(&ev, RBK_EV_DELIVERY_FAILED,
                                        RBK_SEV_ERROR);
                        g_snprintf(key, sizeof(key), "delivery_failed/%s/%s",
                                   rec->topic + p->prefix_len,
                                   rd_kafka_err2name(
                                       (rd_kafka_resp_err_t)rec->f_kafka_err));
                        ev.err = rec->f_err;
                        ev.kafka_err = rec->f_kafka_err;
                        ev.message = rec->f_reason ? rec->f_reason : "";
                        ev.incident_key = key;
                        ev.topic = rec->topic;
                        ev.partition = rec->f_partition;
                        ev.id = rec->id;
                        rbk__hooks_emit(p->hooks, &ev);
                }
                rbk__rec_release(rec, back, seen);
        }
        g_mutex_lock(&p->lock);
        p->unreported -= done->len;
        for (int c = 0; c < RBK__POOL_CLASSES; c++) {
                rbk__pool_t *pl = &p->pool_free[c];
                if (back[c].head) {
                        back[c].tail->next = pl->head;
                        pl->head = back[c].head;
                        __atomic_store_n(&pl->n, pl->n + back[c].n,
                                         __ATOMIC_RELAXED);
                }
        }
        /* Flush and close wait for the count (as waiters). */
        if (p->waiters)
                g_cond_broadcast(&p->cond);
        g_mutex_unlock(&p->lock);
        done->len = 0;
}

/* One delivery report from instance rk (caller holds p->lock). */
static void rbk__dr_one(rbk_producer_t *p, rd_kafka_t *rk,
                        const rd_kafka_message_t *m, rbk__done_t *done) {
        rbk__rec_t *rec = m->_private;
        if (rec && rec->rkh_lent) {
                /* The id header list comes back with the record. */
                rd_kafka_headers_t *h = NULL;
                rd_kafka_message_detach_headers((rd_kafka_message_t *)m, &h);
                if (h == rec->rkh)
                        rec->rkh_lent = 0;
                else if (h)
                        rd_kafka_headers_destroy(h);
        }
        if (!rec || !rec->in_rk)
                return;
        rec->in_rk = 0;
        p->rk_pending--;
        if (m->partition >= 0)
                __atomic_store_n(&rec->partition, m->partition,
                                 __ATOMIC_RELAXED);
        if (!m->err) {
                rbk__finalize(p, rec, RBK_OK, 0, m->partition, m->offset, 0,
                              NULL, done);
                return;
        }
        rd_kafka_msg_status_t status = rd_kafka_message_status(m);
        int pp = status != RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
        if (rd_kafka_fatal_error(rk, NULL, 0) && !p->stop) {
                /* The instance is lost: keep the record for the re-send. */
                if (pp)
                        rec->possibly_persisted = 1;
                g_atomic_int_set(&p->fatal_pending, 1);
                return;
        }
        if (p->stop && (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                           m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT ||
                           rd_kafka_fatal_error(rk, NULL, 0))) {
                rbk__finalize(
                    p, rec, RBK_ERR_SHUTDOWN, m->err, m->partition, -1,
                    pp || rec->possibly_persisted,
                    g_strdup_printf("producer closed before delivery (%s)%s",
                                    rd_kafka_err2name(m->err),
                                    pp ? "; possibly persisted" : ""),
                    done);
                return;
        }
        rbk__finalize(p, rec,
                      m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
                          ? RBK_ERR_MSG_SIZE_TOO_LARGE
                          : RBK_ERR_DELIVERY,
                      m->err, m->partition, -1, pp || rec->possibly_persisted,
                      g_strdup_printf("delivery to %s [%d] failed: %s: %s%s",
                                      rec->topic + p->prefix_len,
                                      (int)m->partition,
                                      rd_kafka_err2name(m->err),
                                      rd_kafka_err2str(m->err),
                                      pp ? " (possibly persisted)" : ""),
                      done);
        rec->f_hook = 1;
}

static void rbk__client_error(rbk_producer_t *p, rd_kafka_resp_err_t err,
                              const char *reason, int64_t gen) {
        rbk_event_t ev;
        char key[128], msg[640];
        rbk__event_init(&ev, RBK_EV_CLIENT_ERROR,
                        err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
                            ? RBK_SEV_ERROR
                            : RBK_SEV_WARNING);
        g_snprintf(key, sizeof(key), "client_error/%s", rd_kafka_err2name(err));
        g_snprintf(msg, sizeof(msg), "producer client error: %s: %s",
                   rd_kafka_err2name(err), reason ? reason : "");
        rbk__redact(msg);
        ev.err = RBK_ERR_KAFKA;
        ev.kafka_err = err;
        ev.message = msg;
        ev.incident_key = key;
        ev.generation = gen;
        rbk__hooks_emit(p->hooks, &ev);
}

/* Queue room appeared (librdkafka's messages freed) or may appear soon (a
 * report parked): wakes senders that wait for it. */
static void rbk__room_released(rbk_producer_t *p) {
        g_mutex_lock(&p->lock);
        __atomic_store_n(&p->room_gen, p->room_gen + 1, __ATOMIC_RELEASE);
        if (p->waiters)
                g_cond_broadcast(&p->cond);
        g_mutex_unlock(&p->lock);
}

/* Keeps the handled delivery-report event ev for a sender to destroy.
 * Returns 0 (ev not taken) when parking is off, the parking slots are full
 * or a sender is destroying parked events right now. Poll thread only. */
static int rbk__park(rbk_producer_t *p, rd_kafka_event_t *ev) {
        if (!p->park || !g_mutex_trylock(&p->park_lock))
                return 0;
        int n = p->parked_n, taken = n < RBK__PARK_MAX;
        if (taken) {
                p->parked[n] = ev;
                __atomic_store_n(&p->parked_n, n + 1, __ATOMIC_RELEASE);
        }
        g_mutex_unlock(&p->park_lock);
        return taken;
}

/* Destroys the parked delivery-report events, which frees librdkafka's
 * messages and so makes queue room. A sender calls it with wait 0 (it skips
 * when another thread is at it); the poll thread with wait 1 before it
 * destroys an instance and when reports stop arriving. Returns the number
 * destroyed. Any thread. */
static int rbk__unpark(rbk_producer_t *p, int wait) {
        if (!__atomic_load_n(&p->parked_n, __ATOMIC_ACQUIRE))
                return 0;
        if (wait)
                g_mutex_lock(&p->park_lock);
        else if (!g_mutex_trylock(&p->park_lock))
                return 0;
        int n = p->parked_n;
        for (int i = 0; i < n; i++) {
                rd_kafka_event_destroy(p->parked[i]);
                p->parked[i] = NULL;
        }
        __atomic_store_n(&p->parked_n, 0, __ATOMIC_RELEASE);
        if (!rbk__tls_no_block)
                __atomic_add_fetch(&p->freed_by_senders, (uint64_t)n,
                                   __ATOMIC_RELAXED);
        g_mutex_unlock(&p->park_lock);
        if (n)
                rbk__room_released(p);
        return n;
}

/* Handles one event of instance rk and destroys it, or, if park is set
 * and it is a delivery report, parks it for a sender to destroy. Poll
 * thread only. */
static void rbk__handle_event(rbk_producer_t *p, rd_kafka_t *rk,
                              rd_kafka_event_t *ev, int park,
                              rbk__done_t *done) {
        switch (rd_kafka_event_type(ev)) {
        case RD_KAFKA_EVENT_DR: {
                /* Every record reported was linked to p->incoming before
                 * it was produced: once merged, it is in p->outstanding. */
                const rd_kafka_message_t *ms[RBK__DR_CHUNK];
                size_t n;
                do {
                        n = rd_kafka_event_message_array(ev, ms, RBK__DR_CHUNK);
                        if (!n)
                                break;
                        /* The records' report fields (their first 160
                         * bytes) were written by a sender long ago: ask
                         * for all of them before reading any, so the
                         * misses overlap. */
                        for (size_t i = 0; i < n; i++) {
                                const char *r = ms[i]->_private;
                                if (r)
                                        for (size_t o = 0; o < RBK__REC_REPORT_BYTES;
                                             o += 64)
                                                __builtin_prefetch(r + o, 1, 3);
                        }
                        uint64_t top = 0;
                        for (size_t i = 0; i < n; i++) {
                                const rbk__rec_t *rec = ms[i]->_private;
                                if (rec && rec->oseq > top)
                                        top = rec->oseq;
                        }
                        g_mutex_lock(&p->lock);
                        rbk__await_merged(p, top);
                        for (size_t i = 0; i < n; i++)
                                rbk__dr_one(p, rk, ms[i], done);
                        g_mutex_unlock(&p->lock);
                } while (n == RBK__DR_CHUNK);
                /* Destroying the event frees librdkafka's messages: that is
                 * when queue room appears. Parked, it is destroyed by the
                 * next send (which room_gen's change wakes), or by this
                 * thread when reports stop coming. */
                if (!park || !rbk__park(p, ev))
                        rd_kafka_event_destroy(ev);
                rbk__room_released(p);
                rbk__report(p, done);
                return;
        }
        case RD_KAFKA_EVENT_ERROR: {
                rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
                if (rd_kafka_event_error_is_fatal(ev) ||
                    err == RD_KAFKA_RESP_ERR__FATAL) {
                        g_mutex_lock(&p->lock);
                        g_atomic_int_set(&p->fatal_pending, 1);
                        g_mutex_unlock(&p->lock);
                } else {
                        int64_t gen;
                        uint64_t delivered;
                        g_mutex_lock(&p->lock);
                        gen = p->generation;
                        delivered = p->st.delivered;
                        g_mutex_unlock(&p->lock);
                        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                                rbk__rdstats_all_down(&p->rdstats, delivered);
                        rbk__client_error(p, err, rd_kafka_event_error_string(ev),
                                          gen);
                }
                break;
        }
        case RD_KAFKA_EVENT_STATS: {
                const char *json = rd_kafka_event_stats(ev);
                rbk__rdstats_update(&p->rdstats, json);
                if (p->stats_cb && json) {
                        char *mine = rbk_producer_stats_json(p);
                        p->stats_cb(json, mine ? mine : "{}",
                                    p->stats_opaque);
                        free(mine);
                }
                break;
        }
        default:
                break;
        }
        rd_kafka_event_destroy(ev);
}

/* Polls instance rk until it holds none of our records or the deadline (ms,
 * monotonic) passes. Returns 1 when empty. Poll thread only. */
static int rbk__drain(rbk_producer_t *p, rd_kafka_t *rk, rd_kafka_queue_t *q,
                      int64_t end_ms, rbk__done_t *done) {
        for (;;) {
                g_mutex_lock(&p->lock);
                uint64_t pending = p->rk_pending;
                g_mutex_unlock(&p->lock);
                if (!pending)
                        return 1;
                int64_t left = end_ms - rbk__now_ms();
                if (left <= 0)
                        return 0;
                rd_kafka_event_t *ev =
                    rd_kafka_queue_poll(q, (int)MIN(left, RBK__POLL_MS));
                if (ev)
                        rbk__handle_event(p, rk, ev, 0, done);
        }
}

/* Retires the current instance: purges what it still holds, waits (bounded)
 * for those reports, destroys it. Records it never handed back are marked
 * possibly persisted. Poll thread only. */
static void rbk__retire(rbk_producer_t *p, rbk__done_t *done) {
        rd_kafka_t *rk = p->rk;
        rd_kafka_queue_t *q = p->mainq;
        if (!rk)
                return;
        g_mutex_lock(&p->lock);
        uint64_t pending = p->rk_pending;
        g_mutex_unlock(&p->lock);
        if (pending) {
                rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE |
                                       RD_KAFKA_PURGE_F_INFLIGHT);
                rbk__drain(p, rk, q, rbk__now_ms() + RBK__PURGE_WAIT_MS, done);
        }
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        p->rk = NULL;
        p->mainq = NULL;
        g_mutex_unlock(&p->send_lock);
        g_mutex_unlock(&p->lock);
        /* Reports still queued (other than ours) are dropped by destroy. */
        rd_kafka_event_t *ev;
        while ((ev = rd_kafka_queue_poll(q, 0)))
                rbk__handle_event(p, rk, ev, 0, done);
        /* Parked events hold the instance's messages: destroyed before it
         * (waiting for a sender that is destroying some). */
        rbk__unpark(p, 1);
        rd_kafka_queue_destroy(q);
        rbk__oauth_stop(rk);
        rd_kafka_destroy(rk);
        g_mutex_lock(&p->lock);
        rbk__rec_t *rec;
        RBK__OUT_FOREACH(&p->outstanding, pos, rec) {
                if (rec->in_rk) {
                        rec->in_rk = 0;
                        rec->possibly_persisted = 1;
                }
        }
        p->rk_pending = 0;
        g_mutex_unlock(&p->lock);
}

/* Fails every outstanding record with err and reason (poll thread). */
static void rbk__fail_all(rbk_producer_t *p, rbk_err_t err, const char *reason,
                          rbk__done_t *done) {
        g_mutex_lock(&p->lock);
        rbk__rec_t *rec;
        while ((rec = rbk__out_first(&p->outstanding))) {
                rbk__finalize(p, rec, err,
                              err == RBK_ERR_SHUTDOWN
                                  ? RD_KAFKA_RESP_ERR__DESTROY
                                  : RD_KAFKA_RESP_ERR__FATAL,
                              g_atomic_int_get(&rec->partition), -1,
                              rec->possibly_persisted, g_strdup(reason), done);
        }
        g_mutex_unlock(&p->lock);
        rbk__report(p, done);
}

/* ------------------------------------------------------------ recovery */

static int rbk__wait_stop(rbk_producer_t *p, int64_t ms) {
        int64_t end = rbk__deadline_us(ms);
        g_mutex_lock(&p->lock);
        while (!p->stop && g_get_monotonic_time() < end)
                g_cond_wait_until(&p->cond, &p->lock, end);
        int closing = p->stop;
        g_mutex_unlock(&p->lock);
        return closing;
}

/* Gives up: fails everything outstanding with RBK_ERR_FATAL and fires the
 * hook. The caller has retired the instance. */
static void rbk__give_up(rbk_producer_t *p, int recoveries, const char *cause,
                         rbk__done_t *done) {
        char reason[768];
        g_snprintf(reason, sizeof(reason),
                   "fatal producer error not recovered (%d recoveries within "
                   "%" G_GINT64_FORMAT " ms, rbk.producer.fatal.max."
                   "recoveries=%" G_GINT64_FORMAT "): %s",
                   recoveries, p->fatal_window_ms, p->max_recoveries, cause);
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        p->gave_up = 1;
        p->recovering = 0;
        g_mutex_unlock(&p->send_lock);
        int64_t gen = p->generation;
        uint64_t lost = p->outstanding.length;
        g_cond_broadcast(&p->cond);
        g_mutex_unlock(&p->lock);
        rbk__log(p->hooks, 2, "rbk", "%s; %" G_GUINT64_FORMAT " message(s) "
                 "fail, later sends fail with RBK_ERR_FATAL",
                 reason, lost);
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_FATAL_GAVE_UP, RBK_SEV_CRITICAL);
        ev.err = RBK_ERR_FATAL;
        ev.message = reason;
        ev.incident_key = "fatal_gave_up";
        ev.generation = gen;
        rbk__hooks_emit(p->hooks, &ev);
        rbk__fail_all(p, RBK_ERR_FATAL, reason, done);
}

/* The supervisor: replaces a fatally failed instance. Poll thread only. */
static void rbk__recover(rbk_producer_t *p, rbk__done_t *done) {
        char cause[512];
        rd_kafka_resp_err_t ferr =
            rd_kafka_fatal_error(p->rk, cause, sizeof(cause));
        char full[640];
        g_snprintf(full, sizeof(full), "%s: %s", rd_kafka_err2name(ferr),
                   ferr ? cause : "fatal error");
        rbk__redact(full);

        /* (1) Hold new sends: once set under p->send_lock, no sender is
         * inside rd_kafka_produceva() any more, and every record accepted
         * is in p->outstanding. */
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        p->recovering = 1;
        rbk__merge_incoming(p);
        g_mutex_unlock(&p->send_lock);
        p->st.fatal_errors++;
        g_strlcpy(p->fatal_reason, full, sizeof(p->fatal_reason));
        int64_t old_gen = p->generation;
        g_mutex_unlock(&p->lock);
        rbk__log(p->hooks, 3, "rbk",
                 "fatal producer error in generation %" G_GINT64_FORMAT
                 ": %s; replacing the librdkafka instance",
                 old_gen, full);

        /* (2) Let the old instance finish what it can, then purge it. */
        rbk__drain(p, p->rk, p->mainq, rbk__now_ms() + p->drain_ms, done);
        rbk__retire(p, done);

        /* (3) A fresh instance, rate-limited. */
        rd_kafka_t *rk = NULL;
        rd_kafka_queue_t *q = NULL;
        for (;;) {
                int64_t now = rbk__now_ms();
                g_mutex_lock(&p->lock);
                guint keep = 0;
                for (guint i = 0; i < p->recoveries->len; i++) {
                        int64_t t = g_array_index(p->recoveries, int64_t, i);
                        if (now - t < p->fatal_window_ms)
                                g_array_index(p->recoveries, int64_t, keep++) = t;
                }
                g_array_set_size(p->recoveries, keep);
                int closing = p->stop;
                g_mutex_unlock(&p->lock);
                if (closing) {
                        g_mutex_lock(&p->send_lock);
                        g_mutex_lock(&p->lock);
                        p->recovering = 0;
                        g_mutex_unlock(&p->send_lock);
                        g_mutex_unlock(&p->lock);
                        return; /* the shutdown reports what is left */
                }
                if ((int64_t)keep >= p->max_recoveries) {
                        rbk__give_up(p, (int)keep, full, done);
                        return;
                }
                /* Back off when recoveries follow each other closely. */
                if (keep > 0 &&
                    rbk__wait_stop(p, MIN(100LL << (keep - 1), 2000)))
                        continue;
                char errstr[512];
                g_mutex_lock(&p->lock);
                g_array_append_val(p->recoveries, now);
                g_mutex_unlock(&p->lock);
                rk = rbk__instance_new(p, &q, errstr, sizeof(errstr));
                if (rk)
                        break;
                rbk__log(p->hooks, 3, "rbk",
                         "fatal-error recovery: %s; retrying", errstr);
        }

        /* Warm the metadata of the topics to re-send to. */
        GPtrArray *topics = g_ptr_array_new_with_free_func(g_free);
        GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
        g_mutex_lock(&p->lock);
        rbk__rec_t *orec;
        RBK__OUT_FOREACH(&p->outstanding, pos, orec) {
                if (!g_hash_table_contains(seen, orec->topic)) {
                        g_hash_table_add(seen, (gpointer)orec->topic);
                        g_ptr_array_add(topics, g_strdup(orec->topic));
                }
        }
        g_mutex_unlock(&p->lock);
        g_hash_table_destroy(seen);
        rbk__warm(p, rk, topics, MAX(p->drain_ms, 1000));
        g_ptr_array_free(topics, TRUE);

        /* (4) Re-send everything outstanding, in acceptance order. */
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        p->rk = rk;
        p->mainq = q;
        g_mutex_unlock(&p->send_lock);
        p->generation++;
        g_atomic_int_set(&p->fatal_pending, 0);
        int64_t gen = p->generation;
        GPtrArray *todo = g_ptr_array_sized_new(p->outstanding.length);
        RBK__OUT_FOREACH(&p->outstanding, pos, orec)
                g_ptr_array_add(todo, orec);
        g_mutex_unlock(&p->lock);

        uint64_t resent = 0, flagged = 0, refused = 0;
        for (guint i = 0; i < todo->len; i++) {
                rbk__rec_t *rec = g_ptr_array_index(todo, i);
                for (;;) {
                        g_mutex_lock(&p->lock);
                        if (p->stop) {
                                g_mutex_unlock(&p->lock);
                                goto out;
                        }
                        rec->resent++;
                        rd_kafka_resp_err_t kerr = rbk__produce(p->rk, rec);
                        if (!kerr) {
                                rec->in_rk = 1;
                                p->rk_pending++;
                                resent++;
                                p->st.resent++;
                                if (rec->possibly_persisted)
                                        flagged++;
                                g_mutex_unlock(&p->lock);
                                break;
                        }
                        rec->resent--;
                        if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL ||
                            kerr == RD_KAFKA_RESP_ERR__FATAL) {
                                g_mutex_unlock(&p->lock);
                                /* Room comes from reports of re-sent ones;
                                 * a new fatal error is handled next round. */
                                rd_kafka_event_t *ev =
                                    rd_kafka_queue_poll(q, RBK__POLL_MS);
                                if (ev)
                                        rbk__handle_event(p, rk, ev, 0,
                                                          done);
                                if (kerr == RD_KAFKA_RESP_ERR__FATAL) {
                                        g_mutex_lock(&p->lock);
                                        g_atomic_int_set(&p->fatal_pending, 1);
                                        g_mutex_unlock(&p->lock);
                                        goto out;
                                }
                                continue;
                        }
                        refused++;
                        rbk__finalize(
                            p, rec, RBK_ERR_DELIVERY, kerr,
                            g_atomic_int_get(&rec->partition), -1,
                            rec->possibly_persisted,
                            g_strdup_printf("re-sending after a fatal error "
                                            "failed: %s: %s",
                                            rd_kafka_err2name(kerr),
                                            rd_kafka_err2str(kerr)),
                            done);
                        rec->f_hook = 1;
                        g_mutex_unlock(&p->lock);
                        break;
                }
        }
out:
        g_ptr_array_free(todo, TRUE);
        rbk__report(p, done);

        /* (5) Sends resume on the same handle (unless the fresh instance
         * failed too: then the next round starts at once). */
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        int again = p->fatal_pending && !p->stop;
        if (!again)
                p->recovering = 0;
        g_mutex_unlock(&p->send_lock);
        g_cond_broadcast(&p->cond);
        g_mutex_unlock(&p->lock);
        if (again)
                return;

        char msg[1024];
        g_snprintf(msg, sizeof(msg),
                   "fatal producer error recovered: %s; librdkafka instance "
                   "replaced (generation %" G_GINT64_FORMAT "), %" G_GUINT64_FORMAT
                   " message(s) re-sent, %" G_GUINT64_FORMAT
                   " of them possibly duplicated (header " RBK_RESENT_HEADER
                   "), %" G_GUINT64_FORMAT " refused",
                   full, gen, resent, flagged, refused);
        rbk__log(p->hooks, 4, "rbk", "%s", msg);
        rbk_event_t ev;
        rbk__event_init(&ev, RBK_EV_FATAL_RECOVERED, RBK_SEV_WARNING);
        ev.err = RBK_ERR_FATAL;
        ev.kafka_err = ferr;
        ev.message = msg;
        char key[64];
        /* One incident per recovery: recoveries are rate-limited already. */
        g_snprintf(key, sizeof(key), "fatal_recovered/%" G_GINT64_FORMAT, gen);
        ev.incident_key = key;
        ev.generation = gen;
        rbk__hooks_emit(p->hooks, &ev);
}

/* ------------------------------------------------------------ poll thread */

static void rbk__shutdown(rbk_producer_t *p, rbk__done_t *done) {
        rbk__retire(p, done);
        rbk__fail_all(p, RBK_ERR_SHUTDOWN,
                      "producer closed before the message was delivered",
                      done);
        g_mutex_lock(&p->lock);
        uint64_t n = p->shutdown_undelivered;
        int64_t gen = p->generation;
        g_mutex_unlock(&p->lock);
        if (n) {
                char msg[256];
                g_snprintf(msg, sizeof(msg),
                           "producer closed with %" G_GUINT64_FORMAT
                           " message(s) undelivered; each was reported to its "
                           "delivery callback with RBK_ERR_SHUTDOWN",
                           n);
                rbk__log(p->hooks, 3, "rbk", "%s", msg);
                rbk_event_t ev;
                rbk__event_init(&ev, RBK_EV_SHUTDOWN_UNDELIVERED, RBK_SEV_ERROR);
                ev.err = RBK_ERR_SHUTDOWN;
                ev.message = msg;
                ev.incident_key = "shutdown_undelivered";
                ev.generation = gen;
                rbk__hooks_emit(p->hooks, &ev);
        }
}

static gpointer rbk__poll_main(gpointer arg) {
        rbk_producer_t *p = arg;
        rbk__done_t donebuf = {NULL, 0, 0}, *done = &donebuf;
        int idle = 0;
        rbk__tls_no_block = 1;
        for (;;) {
                g_mutex_lock(&p->lock);
                int stop = p->stop, fatal = p->fatal_pending;
                rd_kafka_t *rk = p->rk;
                rd_kafka_queue_t *q = p->mainq;
                if (!stop && !rk)
                        g_cond_wait_until(&p->cond, &p->lock,
                                          rbk__deadline_us(RBK__POLL_MS));
                g_mutex_unlock(&p->lock);
                if (stop)
                        break;
                if (!rk)
                        continue; /* gave up: only close is left */
                if (fatal) {
                        rbk__recover(p, done);
                        continue;
                }
                /* Parked reports wait RBK__PARK_MS for a sender at most. */
                int parked = __atomic_load_n(&p->parked_n, __ATOMIC_ACQUIRE);
                rd_kafka_event_t *ev =
                    rd_kafka_queue_poll(q, parked ? RBK__PARK_MS : RBK__POLL_MS);
                if (ev) {
                        rbk__handle_event(p, rk, ev, 1, done);
                        idle = 0;
                } else if (parked) {
                        rbk__unpark(p, 1);
                } else if (!idle) {
                        /* A poll interval without events: give the
                         * pooled records' memory back. */
                        rbk__pool_trim(p);
                        idle = 1;
                }
        }
        rbk__shutdown(p, done);
        g_free(done->v);
        return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static void rbk__producer_free(rbk_producer_t *p) {
        for (int c = 0; c < RBK__POOL_CLASSES; c++) {
                rbk__pool_clear(&p->stash[c]);
                rbk__pool_clear(&p->pool_free[c]);
        }
        if (p->recoveries)
                g_array_free(p->recoveries, TRUE);
        g_free(p->outstanding.slot);
        rbk__hooks_destroy(p->hooks);
        rbk_conf_destroy(p->conf);
        rbk__rdstats_clear(&p->rdstats);
        g_free(p->client_name);
        g_free(p->prefix);
        g_mutex_clear(&p->lock);
        g_mutex_clear(&p->send_lock);
        g_mutex_clear(&p->close_lock);
        g_mutex_clear(&p->park_lock);
        g_cond_clear(&p->cond);
        g_aligned_free(p);
}

rbk_producer_t *rbk_producer_new(const rbk_conf_t *conf, char *errstr,
                                 size_t errstr_size) {
        if (!conf) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_INVALID_ARG,
                            "conf is NULL");
                return NULL;
        }
        rbk_producer_t *p = g_aligned_alloc0(1, sizeof(*p), 64);
        g_mutex_init(&p->lock);
        g_mutex_init(&p->send_lock);
        g_mutex_init(&p->close_lock);
        g_mutex_init(&p->park_lock);
        g_cond_init(&p->cond);
        p->recoveries = g_array_new(FALSE, FALSE, sizeof(int64_t));
        rbk__rdstats_init(&p->rdstats);
        p->conf = rbk_conf_dup(conf);
        if (!p->conf) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                            "out of memory copying the configuration");
                rbk__producer_free(p);
                return NULL;
        }
        p->pid = rbk__getpid();
        p->client_name = g_strdup(rbk__conf_str(p->conf, "rbk.client.name"));
        p->prefix = g_strdup(rbk__conf_prefix(p->conf));
        p->prefix_len = strlen(p->prefix);
        p->msgid_enable = rbk__conf_bool(p->conf, "rbk.msgid.enable");
        p->send_timeout_ms =
            rbk__conf_int(p->conf, "rbk.producer.send.timeout.ms");
        p->max_recoveries =
            rbk__conf_int(p->conf, "rbk.producer.fatal.max.recoveries");
        p->fatal_window_ms =
            rbk__conf_int(p->conf, "rbk.producer.fatal.window.ms");
        p->drain_ms = rbk__conf_int(p->conf, "rbk.producer.fatal.drain.ms");
        p->park = rbk__conf_bool(p->conf, "rbk.producer.sender.frees");
        p->shutdown_timeout_ms =
            rbk__conf_int(p->conf, "rbk.shutdown.timeout.ms");
        p->dr_cb = p->conf->dr_cb;
        p->dr_opaque = p->conf->dr_opaque;
        p->stats_cb = p->conf->stats_cb;
        p->stats_opaque = p->conf->stats_opaque;
        p->hooks = rbk__hooks_new(p->conf, p->client_name);
        rbk__version_check(p->hooks);
        p->producer_id = rbk__msgid_new_producer_id();
        {
                rbk_msgid_t mid = {p->producer_id, 1};
                rbk_msgid_format(&mid, p->id_prefix, sizeof(p->id_prefix));
        }
        p->st.version = RBK_PRODUCER_STATS_VERSION;

        p->rk = rbk__instance_new(p, &p->mainq, errstr, errstr_size);
        if (!p->rk) {
                rbk__producer_free(p);
                return NULL;
        }
        p->generation = 1;
        rbk__warm_conf_topics(p, p->rk);

        GError *gerr = NULL;
        p->thread = g_thread_try_new("rbk-producer", rbk__poll_main, p, &gerr);
        if (!p->thread) {
                rbk__seterr(errstr, errstr_size, RBK_ERR_NOMEM,
                            "cannot start the producer poll thread: %s",
                            gerr ? gerr->message : "unknown error");
                g_clear_error(&gerr);
                rd_kafka_queue_destroy(p->mainq);
                rbk__oauth_stop(p->rk);
                rd_kafka_destroy(p->rk);
                rbk__producer_free(p);
                return NULL;
        }
        return p;
}

rbk_err_t rbk_producer_flush(rbk_producer_t *p, int timeout_ms) {
        if (!p)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(p->pid))
                return RBK_ERR_FORKED;
        if (rbk__tls_no_block)
                return RBK_ERR_WOULD_BLOCK;
        int64_t end = rbk__deadline_us(timeout_ms < 0 ? 0 : timeout_ms);
        /* Merged on every check: a record accepted meanwhile (by a
         * delivery callback, say) counts as soon as it is accepted. */
        rbk__lock_merged(p);
        while (p->unreported && g_get_monotonic_time() < end) {
                int64_t slice = g_get_monotonic_time() + RBK__POLL_MS * 1000;
                p->waiters++;
                g_cond_wait_until(&p->cond, &p->lock, MIN(slice, end));
                p->waiters--;
                g_mutex_unlock(&p->lock);
                rbk__lock_merged(p);
        }
        rbk_err_t err = p->unreported ? RBK_ERR_TIMED_OUT : RBK_OK;
        g_mutex_unlock(&p->lock);
        return err;
}

rbk_err_t rbk_producer_close(rbk_producer_t *p, int timeout_ms) {
        if (!p)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(p->pid))
                return RBK_ERR_FORKED;
        if (rbk__tls_no_block)
                return RBK_ERR_WOULD_BLOCK;
        g_mutex_lock(&p->close_lock);
        if (p->closed) {
                rbk_err_t r = p->close_result;
                g_mutex_unlock(&p->close_lock);
                return r;
        }
        if (timeout_ms < 0)
                timeout_ms = (int)p->shutdown_timeout_ms;
        int64_t end = rbk__deadline_us(timeout_ms);
        /* Once closing is set under p->send_lock, no sender is inside
         * rd_kafka_produceva() and none gets there. */
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        p->closing = 1;
        rbk__merge_incoming(p);
        g_mutex_unlock(&p->send_lock);
        g_cond_broadcast(&p->cond);
        /* Flush, bounded. */
        p->waiters++;
        while (p->unreported && g_get_monotonic_time() < end)
                g_cond_wait_until(&p->cond, &p->lock, end);
        p->waiters--;
        p->stop = 1;
        g_cond_broadcast(&p->cond);
        if (p->mainq)
                rd_kafka_queue_yield(p->mainq); /* wake the poll thread */
        g_mutex_unlock(&p->lock);
        g_thread_join(p->thread);
        p->thread = NULL;
        g_mutex_lock(&p->lock);
        p->close_result = p->shutdown_undelivered ? RBK_ERR_TIMED_OUT : RBK_OK;
        g_mutex_unlock(&p->lock);
        p->closed = 1;
        rbk_err_t r = p->close_result;
        g_mutex_unlock(&p->close_lock);
        return r;
}

void rbk_producer_destroy(rbk_producer_t *p) {
        if (!p)
                return;
        if (rbk__forked(p->pid))
                return; /* librdkafka's threads do not exist here */
        rbk_producer_close(p, -1);
        rbk__producer_free(p);
}

/* ------------------------------------------------------------ stats */

/* The size of each rbk_producer_stats_t layout, by version: a field appended
 * to the struct comes with a new version and a new entry here, so a caller
 * compiled against an older header is never written past its struct. */
static const size_t rbk__pstats_sizes[] = {
    RBK__END_OF(rbk_producer_stats_t, generation), /* 1 */
};
G_STATIC_ASSERT(G_N_ELEMENTS(rbk__pstats_sizes) == RBK_PRODUCER_STATS_VERSION);
/* The last layout is the whole struct: no field appended without a version. */
G_STATIC_ASSERT(RBK__END_OF(rbk_producer_stats_t, generation) ==
                sizeof(rbk_producer_stats_t));

rbk_err_t rbk_producer_stats(rbk_producer_t *p, rbk_producer_stats_t *out) {
        if (!p || !out)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(p->pid))
                return RBK_ERR_FORKED;
        rbk_producer_stats_t full;
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        rbk__merge_incoming(p);
        full = p->st;
        full.accepted = p->accepted;
        g_mutex_unlock(&p->send_lock);
        full.in_flight = p->unreported;
        full.generation = p->generation;
        g_mutex_unlock(&p->lock);
        rbk__layout_copy(out, &full, rbk__pstats_sizes,
                         RBK_PRODUCER_STATS_VERSION);
        return RBK_OK;
}

typedef struct {
        const char *topic;
        int32_t partition;
        uint64_t n;
} rbk__pcount_t;

static gint rbk__pcount_cmp(gconstpointer a, gconstpointer b) {
        const rbk__pcount_t *x = a, *y = b;
        int c = strcmp(x->topic, y->topic);
        if (c)
                return c;
        return x->partition < y->partition ? -1 : x->partition > y->partition;
}

char *rbk_producer_stats_json(rbk_producer_t *p) {
        if (!p || rbk__forked(p->pid))
                return NULL;
        rbk_producer_stats_t st;
        GArray *counts = g_array_new(FALSE, FALSE, sizeof(rbk__pcount_t));
        GHashTable *idx = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                g_free, NULL);
        int closing, recovering, gave_up;
        g_mutex_lock(&p->send_lock);
        g_mutex_lock(&p->lock);
        rbk__merge_incoming(p);
        st = p->st;
        st.accepted = p->accepted;
        g_mutex_unlock(&p->send_lock);
        st.in_flight = p->unreported;
        st.generation = p->generation;
        closing = p->closing;
        recovering = p->recovering || p->fatal_pending;
        gave_up = p->gave_up;
        rbk__rec_t *rec;
        RBK__OUT_FOREACH(&p->outstanding, pos, rec) {
                int32_t part = g_atomic_int_get(&rec->partition);
                char *key = g_strdup_printf("%d/%s", (int)part, rec->topic);
                gpointer v;
                if (g_hash_table_lookup_extended(idx, key, NULL, &v)) {
                        g_array_index(counts, rbk__pcount_t,
                                      GPOINTER_TO_UINT(v) - 1)
                            .n++;
                        g_free(key);
                } else {
                        rbk__pcount_t c = {rec->topic + p->prefix_len, part, 1};
                        g_array_append_val(counts, c);
                        g_hash_table_insert(idx, key,
                                            GUINT_TO_POINTER(counts->len));
                }
        }
        /* The topic strings live in records: format while locked. */
        g_array_sort(counts, rbk__pcount_cmp);
        GString *s = g_string_new("{\"client\":");
        rbk__json_escape_str(s, p->client_name);
        g_string_append_printf(
            s,
            ",\"state\":\"%s\",\"generation\":%" G_GINT64_FORMAT
            ",\"accepted\":%" G_GUINT64_FORMAT ",\"delivered\":%" G_GUINT64_FORMAT
            ",\"failed\":%" G_GUINT64_FORMAT ",\"in_flight\":%" G_GUINT64_FORMAT
            ",\"queue_full_waits\":%" G_GUINT64_FORMAT
            ",\"resent\":%" G_GUINT64_FORMAT
            ",\"possibly_persisted\":%" G_GUINT64_FORMAT
            ",\"fatal_errors\":%" G_GUINT64_FORMAT
            ",\"outstanding_slots\":%" G_GUINT64_FORMAT
            ",\"outstanding_compactions\":%" G_GUINT64_FORMAT
            ",\"outstanding_growths\":%" G_GUINT64_FORMAT
            ",\"reports_parked\":%d"
            ",\"reports_freed_by_senders\":%" G_GUINT64_FORMAT
            ",\"partitions\":[",
            closing ? "closed"
                    : gave_up ? "gave_up"
                              : recovering ? "recovering" : "running",
            st.generation, st.accepted, st.delivered, st.failed, st.in_flight,
            st.queue_full_waits, st.resent, st.possibly_persisted,
            st.fatal_errors, p->outstanding.cap, p->outstanding.compactions,
            p->outstanding.growths,
            __atomic_load_n(&p->parked_n, __ATOMIC_ACQUIRE),
            (guint64)__atomic_load_n(&p->freed_by_senders, __ATOMIC_RELAXED));
        for (guint i = 0; i < counts->len; i++) {
                rbk__pcount_t *c = &g_array_index(counts, rbk__pcount_t, i);
                g_string_append(s, i ? ",{\"topic\":" : "{\"topic\":");
                rbk__json_escape_str(s, c->topic);
                g_string_append_printf(s,
                                       ",\"partition\":%d,\"in_flight\":%" G_GUINT64_FORMAT
                                       "}",
                                       (int)c->partition, c->n);
        }
        g_mutex_unlock(&p->lock);
        g_string_append(s, "]}");
        g_array_free(counts, TRUE);
        g_hash_table_destroy(idx);
        char *out = strdup(s->str); /* freed with rbk_free() */
        g_string_free(s, TRUE);
        return out;
}

/* ------------------------------------------------------------ metrics */

char *rbk_producer_metrics(rbk_producer_t *p) {
        if (!p || rbk__forked(p->pid))
                return NULL;
        rbk_producer_stats_t st = RBK_PRODUCER_STATS_INIT;
        if (rbk_producer_stats(p, &st))
                return NULL;
        int recovering, gave_up, closing;
        g_mutex_lock(&p->lock);
        closing = p->closing;
        recovering = p->recovering || p->fatal_pending;
        gave_up = p->gave_up;
        g_mutex_unlock(&p->lock);
        const struct {
                const char *name, *type, *help;
                double v;
        } m[] = {
            {"rbk_producer_accepted_total", "counter",
             "Messages the producer accepted (rbk_producer_send() returned "
             "RBK_OK)",
             (double)st.accepted},
            {"rbk_producer_delivered_total", "counter",
             "Messages reported delivered", (double)st.delivered},
            {"rbk_producer_failed_total", "counter",
             "Messages reported failed", (double)st.failed},
            {"rbk_producer_possibly_persisted_total", "counter",
             "Failed messages that may be in the log anyway",
             (double)st.possibly_persisted},
            {"rbk_producer_in_flight_messages", "gauge",
             "Messages accepted and not yet reported", (double)st.in_flight},
            {"rbk_producer_resent_total", "counter",
             "Messages sent again by fatal-error recovery", (double)st.resent},
            {"rbk_producer_queue_full_waits_total", "counter",
             "Sends that had to wait for room in the queue",
             (double)st.queue_full_waits},
            {"rbk_producer_fatal_errors_total", "counter",
             "Fatal errors of librdkafka instances", (double)st.fatal_errors},
            {"rbk_producer_generation", "gauge",
             "librdkafka instances created so far (1: never recovered)",
             (double)st.generation},
            {"rbk_producer_recovering", "gauge",
             "1 while a fatal error is being recovered, else 0",
             recovering ? 1.0 : 0.0},
            {"rbk_producer_gave_up", "gauge",
             "1 once fatal-error recovery gave up (sends fail), else 0",
             gave_up ? 1.0 : 0.0},
            {"rbk_producer_closed", "gauge", "1 once the producer is closed",
             closing ? 1.0 : 0.0},
        };
        GString *labels = g_string_new(NULL);
        rbk__prom_label(labels, "client", p->client_name);
        GString *out = g_string_new(NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(m); i++) {
                rbk__prom_family(out, m[i].name, m[i].type, m[i].help);
                rbk__prom_sample(out, m[i].name, labels->str, m[i].v);
        }
        rbk__rdstats_prom(&p->rdstats, out, "rbk_producer", "client",
                          p->client_name);
        g_string_free(labels, TRUE);
        char *s = strdup(out->str); /* freed with rbk_free() */
        g_string_free(out, TRUE);
        return s;
}

rbk_err_t rbk_producer_health(rbk_producer_t *p, char *why, size_t why_size) {
        if (why && why_size)
                why[0] = '\0';
        if (!p)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(p->pid))
                return RBK_ERR_FORKED;
        int closing, recovering, gave_up;
        uint64_t delivered;
        char fatal[512];
        g_mutex_lock(&p->lock);
        closing = p->closing;
        recovering = p->recovering || p->fatal_pending;
        gave_up = p->gave_up;
        delivered = p->st.delivered;
        g_strlcpy(fatal, p->fatal_reason, sizeof(fatal));
        g_mutex_unlock(&p->lock);
        if (closing)
                return rbk__seterr(why, why_size, RBK_ERR_SHUTDOWN,
                                   "the producer is closed");
        if (gave_up)
                return rbk__seterr(why, why_size, RBK_ERR_FATAL,
                                   "fatal-error recovery gave up: %s",
                                   *fatal ? fatal : "unknown error");
        if (recovering)
                return rbk__seterr(why, why_size, RBK_ERR_FATAL,
                                   "a fatal error is being recovered%s%s",
                                   *fatal ? ": " : "", fatal);
        char down[256];
        if (rbk__rdstats_down(&p->rdstats, delivered, down, sizeof(down)))
                return rbk__seterr(why, why_size, RBK_ERR_KAFKA, "%s", down);
        return RBK_OK;
}

/* ------------------------------------------------------------ testing */

rbk_err_t rbk__producer_test_fatal(rbk_producer_t *p, int kafka_err,
                                   const char *reason) {
        if (!p)
                return RBK_ERR_INVALID_ARG;
        if (rbk__forked(p->pid))
                return RBK_ERR_FORKED;
        rbk_err_t err = RBK_OK;
        g_mutex_lock(&p->lock);
        if (!p->rk || p->closing || p->recovering)
                err = RBK_ERR_STATE;
        else if (rd_kafka_test_fatal_error(p->rk,
                                           (rd_kafka_resp_err_t)kafka_err,
                                           reason ? reason : "test") !=
                 RD_KAFKA_RESP_ERR_NO_ERROR)
                err = RBK_ERR_STATE;
        g_mutex_unlock(&p->lock);
        return err;
}
