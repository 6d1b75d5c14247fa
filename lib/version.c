/* Version and error-code tables. */
#include "robustkafka.h"
#include "internal.h"

int rbk_version(void) {
        return RBK_VERSION_NUM;
}

#define RBK__STR2(x) #x
#define RBK__STR(x) RBK__STR2(x)

const char *rbk_version_str(void) {
        return RBK__STR(RBK_VERSION_MAJOR) "." RBK__STR(
            RBK_VERSION_MINOR) "." RBK__STR(RBK_VERSION_PATCH);
}

static const struct {
        rbk_err_t code;
        const char *name;
        const char *desc;
        int retriable;
} rbk__errs[] = {
#define E(c, r, d) {c, #c, d, r}
    E(RBK_OK, 0, "Success"),
    E(RBK_ERR_INVALID_ARG, 0, "Invalid argument"),
    E(RBK_ERR_NOMEM, 1, "Out of memory"),
    E(RBK_ERR_CONF, 0, "Invalid configuration"),
    E(RBK_ERR_UNSAFE_CONF, 0, "Unsafe configuration refused"),
    E(RBK_ERR_URL, 0, "Malformed broker URL"),
    E(RBK_ERR_PEM, 0, "Malformed or mismatching PEM certificate or key"),
    E(RBK_ERR_INVALID_TOPIC, 0, "Invalid topic name"),
    E(RBK_ERR_MSG_SIZE_TOO_LARGE, 0, "Message larger than message.max.bytes"),
    E(RBK_ERR_QUEUE_FULL, 1, "Producer queue full"),
    E(RBK_ERR_TIMED_OUT, 1, "Timed out"),
    E(RBK_ERR_SHUTDOWN, 0, "Client is shut down"),
    E(RBK_ERR_STATE, 0, "Invalid in the current state"),
    E(RBK_ERR_EXISTS, 0, "Exists with a different configuration"),
    E(RBK_ERR_NOT_FOUND, 0, "Not found"),
    E(RBK_ERR_FORKED, 0, "Client used in a forked child process"),
    E(RBK_ERR_FATAL, 0, "Fatal client error"),
    E(RBK_ERR_KAFKA, 1, "Kafka error"),
    E(RBK_ERR_DELIVERY, 1, "Message delivery failed"),
    E(RBK_ERR_OUT_OF_RANGE, 0, "Offset out of range"),
    E(RBK_ERR_NOT_QUARANTINED, 0, "Partition is not quarantined"),
    E(RBK_ERR_WOULD_BLOCK, 1, "Call would block a thread that must not block"),
    E(RBK_ERR_STORE, 1, "Dedup store error"),
    E(RBK_ERR_TOO_MANY_HEADERS, 0, "Too many headers"),
    E(RBK_ERR_ALREADY_RESOLVED, 0, "Incident already resolved"),
    E(RBK_ERR_IO, 1, "I/O error"),
#undef E
};

static int rbk__err_idx(rbk_err_t err) {
        int i = -(int)err;
        if (i < 0 || i >= (int)(sizeof(rbk__errs) / sizeof(rbk__errs[0])))
                return -1;
        return i;
}

const char *rbk_err2str(rbk_err_t err) {
        int i = rbk__err_idx(err);
        return i < 0 ? "Unknown error" : rbk__errs[i].desc;
}

const char *rbk_err2name(rbk_err_t err) {
        int i = rbk__err_idx(err);
        return i < 0 ? "RBK_ERR_UNKNOWN" : rbk__errs[i].name;
}

int rbk_err_is_retriable(rbk_err_t err) {
        int i = rbk__err_idx(err);
        return i <= 0 ? 0 : rbk__errs[i].retriable;
}

int rbk_err_is_fatal(rbk_err_t err) {
        return err == RBK_ERR_FATAL || err == RBK_ERR_SHUTDOWN ||
               err == RBK_ERR_FORKED;
}
