/* Internal declarations shared by the library's sources. Never installed. */
#ifndef RBK_INTERNAL_H
#define RBK_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "robustkafka.h"

/* Writes a formatted message into a caller's errstr buffer (may be NULL or
 * size 0) and returns err, so error paths read `return rbk__seterr(...)`. */
rbk_err_t rbk__seterr(char *errstr, size_t errstr_size, rbk_err_t err,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* RBK_INTERNAL_H */
