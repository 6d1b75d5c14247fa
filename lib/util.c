/* Small helpers used across the library. */
#include <stdio.h>

#include "internal.h"

rbk_err_t rbk__seterr(char *errstr, size_t errstr_size, rbk_err_t err,
                      const char *fmt, ...) {
        if (errstr && errstr_size > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(errstr, errstr_size, fmt, ap);
                va_end(ap);
        }
        return err;
}
