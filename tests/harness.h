/* Shared helpers for the Check suites. Each tests/test_*.c is one runner:
 * it defines `static Suite *suite(void)` and ends with RBK_TEST_MAIN(). */
#ifndef RBK_TEST_HARNESS_H
#define RBK_TEST_HARNESS_H

#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define RBK_TEST_HAVE_VALGRIND_H 1
#endif
#endif

/* Runs the suite, prints Check's summary, exits non-zero on any failure.
 * CK_FORK, CK_RUN_CASE and CK_VERBOSITY work as documented by Check. */
#define RBK_TEST_MAIN()                                                      \
        int main(void) {                                                     \
                SRunner *sr = srunner_create(suite());                       \
                srunner_run_all(sr, CK_ENV);                                 \
                int nf = srunner_ntests_failed(sr);                          \
                srunner_free(sr);                                            \
                return nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                \
        }

/* Adds a test case holding one test with a timeout in seconds. */
#define RBK_TCASE(s, fn, secs)                                               \
        do {                                                                 \
                TCase *tc_ = tcase_create(#fn);                              \
                tcase_set_timeout(tc_, (secs));                              \
                tcase_add_test(tc_, fn);                                     \
                suite_add_tcase((s), tc_);                                   \
        } while (0)

/* Whether the test runs under valgrind (RBK_TEST_SLOW=1, set by
 * scripts/run-tests for check-valgrind, or valgrind seen directly). */
static inline int rbk_test_under_valgrind(void) {
#ifdef RBK_TEST_HAVE_VALGRIND_H
        if (RUNNING_ON_VALGRIND)
                return 1;
#endif
        const char *slow = getenv("RBK_TEST_SLOW");
        return slow && *slow == '1';
}

/* Scales a message count down under valgrind, never below `min`. */
static inline long rbk_test_scale(long n, long min) {
        if (rbk_test_under_valgrind())
                n /= 10;
        return n < min ? min : n;
}

/* Ends a forked child of a test with @code. Under valgrind (check-valgrind)
 * the child's leak check is turned off first: what the parent allocated is
 * the child's too, and a leak report would replace @code with valgrind's
 * error exit code. The parent's own checks are unchanged. */
static inline void rbk_test_child_exit(int code) {
#ifdef RBK_TEST_HAVE_VALGRIND_H
        VALGRIND_CLO_CHANGE("--leak-check=no");
#endif
        _exit(code);
}

#endif
