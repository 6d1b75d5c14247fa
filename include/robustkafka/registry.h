/**
 * @file robustkafka/registry.h
 * @brief The process-wide client registry as a whole: the clients of
 * rbk_producer_get() and rbk_consumer_get() (declared with their client
 * types) are shut down together by rbk_shutdown().
 */
#ifndef ROBUSTKAFKA_REGISTRY_H
#define ROBUSTKAFKA_REGISTRY_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Shuts down every registry client within @p timeout_ms in total
 * (negative: `rbk.shutdown.timeout.ms` of each, default 15000): stops and
 * closes consumers (committing stored offsets), flushes and closes producers
 * (reporting what could not be delivered). Later *_get() calls fail with
 * RBK_ERR_SHUTDOWN. Safe to call twice and from atexit().
 *
 * Clients created with rbk_producer_new() or rbk_consumer_new() are not in
 * the registry: the application closes and destroys them itself.
 * @param timeout_ms the bound for all clients together; negative for each
 * client's own `rbk.shutdown.timeout.ms`.
 * @returns RBK_OK, or RBK_ERR_TIMED_OUT if some client did not finish
 * cleanly, or RBK_ERR_FORKED in a forked child.
 * Thread-safety: safe from any thread except library callbacks.
 */
RBK_API rbk_err_t rbk_shutdown(int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* ROBUSTKAFKA_REGISTRY_H */
