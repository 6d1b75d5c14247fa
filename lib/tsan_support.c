/* ThreadSanitizer builds only (-fsanitize=thread, `make check-tsan`): makes
 * the threads and locks of GLib and librdkafka visible to TSan.
 *
 * GLib and librdkafka are not instrumented: TSan sees what they do only
 * through the libc functions its runtime intercepts (pthread_*, malloc, ...).
 * Two gaps make it both crash and report races that are none; this file
 * closes them. A build without TSan compiles nothing here.
 *
 * 1. C11 threads. librdkafka creates its threads with thrd_create() and locks
 *    with mtx_*()/cnd_*() (<threads.h>). gcc 12's TSan intercepts none of
 *    them, and glibc implements them by calling its pthread code directly, so
 *    TSan never learns of librdkafka's threads (the first intercepted call
 *    in one dereferences a thread state that was never set up: SIGSEGV) nor
 *    of its locks. The definitions below take the place of glibc's for
 *    librdkafka (the program exports them, and it comes first in the lookup
 *    order) and do the same work through the pthread functions, which TSan
 *    intercepts. glibc's C11 types are its pthread types under another name
 *    (same size and layout), as its own implementation relies on.
 *
 * 2. GLib's locks. On Linux GMutex, GRecMutex and GCond are built on
 *    atomics and futex(2), not on pthread, so TSan sees none of their
 *    happens-before edges and reports every access made under a GMutex as a
 *    race. The g_* definitions below take the place of GLib's for every
 *    caller linked with this library: each calls GLib's own function, found
 *    with dlsym(RTLD_NEXT), and tells TSan what it did through the mutex
 *    annotations of <sanitizer/tsan_interface.h>. TSan then checks the code
 *    under these locks as it checks code under pthread mutexes, lock-order
 *    inversions included. Covered: g_mutex_*, g_rec_mutex_*, g_cond_wait*,
 *    g_once_init_*, the GLib primitives lib/ and tests/ use; and
 *    g_get_host_name(), which computes its answer once, in whichever thread
 *    calls first, and hands it to the others out of TSan's sight.
 */
#if defined(__SANITIZE_THREAD__)

#include <dlfcn.h>
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <sanitizer/tsan_interface.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <threads.h>

/* ------------------------------------------------------------ C11 threads */

#define C11 __attribute__((visibility("default")))

/* The caller of these is librdkafka, whose own memory accesses TSan ignores
 * (tests/tsan.supp: called_from_lib): a lock's memory is ordered by
 * librdkafka's atomics (an object is set up in one thread and handed to
 * another), invisible to TSan. The accesses the pthread calls make to the
 * lock itself are ignored the same way; the ordering the lock gives is
 * not: TSan still sees every lock, unlock and wait. */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#define LIB_ACCESS(call)                                                     \
        ({                                                                   \
                AnnotateIgnoreReadsBegin(__FILE__, __LINE__);                \
                AnnotateIgnoreWritesBegin(__FILE__, __LINE__);               \
                int r_ = (call);                                             \
                AnnotateIgnoreWritesEnd(__FILE__, __LINE__);                 \
                AnnotateIgnoreReadsEnd(__FILE__, __LINE__);                  \
                r_;                                                          \
        })

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t layout");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t layout");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t layout");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag layout");

static int c11_err(int err) {
        switch (err) {
        case 0: return thrd_success;
        case EBUSY: return thrd_busy;
        case ETIMEDOUT: return thrd_timedout;
        case ENOMEM: return thrd_nomem;
        default: return thrd_error;
        }
}

typedef struct {
        thrd_start_t func;
        void *arg;
} c11_start_t;

static void *c11_start(void *p) {
        c11_start_t s = *(c11_start_t *)p;
        free(p);
        return (void *)(intptr_t)s.func(s.arg);
}

C11 int thrd_create(thrd_t *thr, thrd_start_t func, void *arg) {
        c11_start_t *s = malloc(sizeof(*s));
        if (!s)
                return thrd_nomem;
        s->func = func;
        s->arg = arg;
        int err = pthread_create((pthread_t *)thr, NULL, c11_start, s);
        if (err)
                free(s);
        return c11_err(err);
}

C11 int thrd_join(thrd_t thr, int *res) {
        void *r = NULL;
        int err = pthread_join((pthread_t)thr, &r);
        if (!err && res)
                *res = (int)(intptr_t)r;
        return c11_err(err);
}

C11 int thrd_detach(thrd_t thr) {
        return c11_err(pthread_detach((pthread_t)thr));
}

C11 int mtx_init(mtx_t *m, int type) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, (type & mtx_recursive)
                                              ? PTHREAD_MUTEX_RECURSIVE
                                              : PTHREAD_MUTEX_DEFAULT);
        int err = LIB_ACCESS(pthread_mutex_init((pthread_mutex_t *)m, &a));
        pthread_mutexattr_destroy(&a);
        return c11_err(err);
}

C11 int mtx_lock(mtx_t *m) {
        return c11_err(LIB_ACCESS(pthread_mutex_lock((pthread_mutex_t *)m)));
}

C11 int mtx_trylock(mtx_t *m) {
        return c11_err(LIB_ACCESS(pthread_mutex_trylock((pthread_mutex_t *)m)));
}

C11 int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts) {
        return c11_err(
                LIB_ACCESS(pthread_mutex_timedlock((pthread_mutex_t *)m, ts)));
}

C11 int mtx_unlock(mtx_t *m) {
        return c11_err(LIB_ACCESS(pthread_mutex_unlock((pthread_mutex_t *)m)));
}

C11 void mtx_destroy(mtx_t *m) {
        LIB_ACCESS(pthread_mutex_destroy((pthread_mutex_t *)m));
}

C11 int cnd_init(cnd_t *c) {
        return c11_err(LIB_ACCESS(pthread_cond_init((pthread_cond_t *)c, NULL)));
}

C11 int cnd_signal(cnd_t *c) {
        return c11_err(LIB_ACCESS(pthread_cond_signal((pthread_cond_t *)c)));
}

C11 int cnd_broadcast(cnd_t *c) {
        return c11_err(
                LIB_ACCESS(pthread_cond_broadcast((pthread_cond_t *)c)));
}

C11 int cnd_wait(cnd_t *c, mtx_t *m) {
        return c11_err(LIB_ACCESS(pthread_cond_wait((pthread_cond_t *)c,
                                                    (pthread_mutex_t *)m)));
}

C11 int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m,
                      const struct timespec *restrict ts) {
        return c11_err(LIB_ACCESS(pthread_cond_timedwait(
                (pthread_cond_t *)c, (pthread_mutex_t *)m, ts)));
}

C11 void cnd_destroy(cnd_t *c) {
        LIB_ACCESS(pthread_cond_destroy((pthread_cond_t *)c));
}

C11 void call_once(once_flag *flag, void (*func)(void)) {
        pthread_once((pthread_once_t *)flag, func);
}

/* GLib's definition of `name`, looked up once. The lookup may run in two
 * threads at once; both store the same pointer. */
#define REAL(ret, name, params)                                              \
        static ret(*real_##name) params;                                     \
        static ret(*get_##name(void)) params {                               \
                ret(*f) params = __atomic_load_n(&real_##name,               \
                                                 __ATOMIC_ACQUIRE);          \
                if (!f) {                                                    \
                        f = (ret(*) params)dlsym(RTLD_NEXT, #name);          \
                        if (!f) {                                            \
                                fprintf(stderr, "tsan_glib: no %s\n", #name); \
                                abort();                                     \
                        }                                                    \
                        __atomic_store_n(&real_##name, f, __ATOMIC_RELEASE); \
                }                                                            \
                return f;                                                    \
        }

REAL(void, g_mutex_init, (GMutex *))
REAL(void, g_mutex_clear, (GMutex *))
REAL(void, g_mutex_lock, (GMutex *))
REAL(gboolean, g_mutex_trylock, (GMutex *))
REAL(void, g_mutex_unlock, (GMutex *))
REAL(void, g_rec_mutex_init, (GRecMutex *))
REAL(void, g_rec_mutex_clear, (GRecMutex *))
REAL(void, g_rec_mutex_lock, (GRecMutex *))
REAL(gboolean, g_rec_mutex_trylock, (GRecMutex *))
REAL(void, g_rec_mutex_unlock, (GRecMutex *))
REAL(void, g_cond_wait, (GCond *, GMutex *))
REAL(gboolean, g_cond_wait_until, (GCond *, GMutex *, gint64))
REAL(gboolean, g_once_init_enter, (volatile void *))
REAL(void, g_once_init_leave, (volatile void *, gsize))
REAL(const gchar *, g_get_host_name, (void))

/* ---------------------------------------------------------------- GMutex */

void g_mutex_init(GMutex *m) {
        get_g_mutex_init()(m);
        __tsan_mutex_create(m, 0);
}

void g_mutex_clear(GMutex *m) {
        __tsan_mutex_destroy(m, 0);
        get_g_mutex_clear()(m);
}

void g_mutex_lock(GMutex *m) {
        __tsan_mutex_pre_lock(m, 0);
        get_g_mutex_lock()(m);
        __tsan_mutex_post_lock(m, 0, 0);
}

gboolean g_mutex_trylock(GMutex *m) {
        __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
        gboolean ok = get_g_mutex_trylock()(m);
        __tsan_mutex_post_lock(m, ok ? __tsan_mutex_try_lock
                                     : __tsan_mutex_try_lock |
                                               __tsan_mutex_try_lock_failed,
                               0);
        return ok;
}

void g_mutex_unlock(GMutex *m) {
        __tsan_mutex_pre_unlock(m, 0);
        get_g_mutex_unlock()(m);
        __tsan_mutex_post_unlock(m, 0);
}

/* ---------------------------------------------------------------- GRecMutex */

void g_rec_mutex_init(GRecMutex *m) {
        get_g_rec_mutex_init()(m);
        __tsan_mutex_create(m, __tsan_mutex_write_reentrant);
}

void g_rec_mutex_clear(GRecMutex *m) {
        __tsan_mutex_destroy(m, 0);
        get_g_rec_mutex_clear()(m);
}

void g_rec_mutex_lock(GRecMutex *m) {
        __tsan_mutex_pre_lock(m, __tsan_mutex_write_reentrant);
        get_g_rec_mutex_lock()(m);
        __tsan_mutex_post_lock(m, __tsan_mutex_write_reentrant, 0);
}

gboolean g_rec_mutex_trylock(GRecMutex *m) {
        unsigned f = __tsan_mutex_write_reentrant | __tsan_mutex_try_lock;
        __tsan_mutex_pre_lock(m, f);
        gboolean ok = get_g_rec_mutex_trylock()(m);
        __tsan_mutex_post_lock(m, ok ? f : f | __tsan_mutex_try_lock_failed,
                               0);
        return ok;
}

void g_rec_mutex_unlock(GRecMutex *m) {
        __tsan_mutex_pre_unlock(m, 0);
        get_g_rec_mutex_unlock()(m);
        __tsan_mutex_post_unlock(m, 0);
}

/* ---------------------------------------------------------------- GCond */

/* A wait releases the mutex and takes it again before it returns: annotated
 * as an unlock before GLib's wait and a lock after it. Signal and broadcast
 * need nothing: the waiter's data comes with the mutex. */
void g_cond_wait(GCond *c, GMutex *m) {
        __tsan_mutex_pre_unlock(m, 0);
        __tsan_mutex_post_unlock(m, 0);
        get_g_cond_wait()(c, m);
        __tsan_mutex_pre_lock(m, 0);
        __tsan_mutex_post_lock(m, 0, 0);
}

gboolean g_cond_wait_until(GCond *c, GMutex *m, gint64 end_time) {
        __tsan_mutex_pre_unlock(m, 0);
        __tsan_mutex_post_unlock(m, 0);
        gboolean r = get_g_cond_wait_until()(c, m, end_time);
        __tsan_mutex_pre_lock(m, 0);
        __tsan_mutex_post_lock(m, 0, 0);
        return r;
}

/* ---------------------------------------------------------------- GOnce */

/* g_once_init_enter() (the macro) loads the location with acquire order in
 * instrumented code; GLib's g_once_init_leave() stores it out of TSan's
 * sight. The release is announced here, on the same address; a caller that
 * waited inside GLib for another thread's initialization acquires it. */
#undef g_once_init_enter
#undef g_once_init_leave

gboolean g_once_init_enter(volatile void *location) {
        gboolean first = get_g_once_init_enter()(location);
        if (!first)
                __tsan_acquire((void *)location);
        return first;
}

void g_once_init_leave(volatile void *location, gsize result) {
        __tsan_release((void *)location);
        get_g_once_init_leave()(location, result);
}

/* ---------------------------------------------------------------- caches */

/* GLib computes the host name on the first call, stores it with its own
 * g_once (not seen by TSan) and returns the same string to every later
 * caller. Calls run one at a time under a pthread mutex here, so the first
 * caller's writes happen before every later caller's reads. */
static pthread_mutex_t host_name_lock = PTHREAD_MUTEX_INITIALIZER;

const gchar *g_get_host_name(void) {
        pthread_mutex_lock(&host_name_lock);
        const gchar *name = get_g_get_host_name()();
        pthread_mutex_unlock(&host_name_lock);
        return name;
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int rbk__tsan_glib_unused;
#endif
