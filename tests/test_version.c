/* Version and error-code tables. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "robustkafka.h"

START_TEST(version_matches_header) {
        ck_assert_int_eq(rbk_version(), RBK_VERSION_NUM);
        char buf[32];
        snprintf(buf, sizeof(buf), "%d.%d.%d", RBK_VERSION_MAJOR,
                 RBK_VERSION_MINOR, RBK_VERSION_PATCH);
        ck_assert_str_eq(rbk_version_str(), buf);
}
END_TEST

START_TEST(every_error_has_name_and_text) {
        for (int e = 0; e > RBK_ERR__END; e--) {
                const char *name = rbk_err2name((rbk_err_t)e);
                const char *str = rbk_err2str((rbk_err_t)e);
                ck_assert_msg(strncmp(name, "RBK_", 4) == 0, "code %d", e);
                ck_assert_str_ne(name, "RBK_ERR_UNKNOWN");
                ck_assert_str_ne(str, "Unknown error");
        }
        ck_assert_str_eq(rbk_err2name(RBK_ERR_QUEUE_FULL), "RBK_ERR_QUEUE_FULL");
        ck_assert_str_eq(rbk_err2name(RBK_ERR_IO), "RBK_ERR_IO");
        ck_assert_str_eq(rbk_err2name(RBK_ERR__END), "RBK_ERR_UNKNOWN");
        ck_assert_str_eq(rbk_err2name((rbk_err_t)5), "RBK_ERR_UNKNOWN");
        ck_assert_str_eq(rbk_err2str((rbk_err_t)-1000), "Unknown error");
}
END_TEST

START_TEST(retriable_and_fatal_classes) {
        ck_assert(rbk_err_is_retriable(RBK_ERR_QUEUE_FULL));
        ck_assert(rbk_err_is_retriable(RBK_ERR_TIMED_OUT));
        ck_assert(!rbk_err_is_retriable(RBK_ERR_UNSAFE_CONF));
        ck_assert(!rbk_err_is_retriable(RBK_OK));
        ck_assert(!rbk_err_is_retriable(RBK_ERR_FATAL));
        ck_assert(rbk_err_is_fatal(RBK_ERR_FATAL));
        ck_assert(rbk_err_is_fatal(RBK_ERR_FORKED));
        ck_assert(!rbk_err_is_fatal(RBK_ERR_QUEUE_FULL));
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("version");
        RBK_TCASE(s, version_matches_header, 5);
        RBK_TCASE(s, every_error_has_name_and_text, 5);
        RBK_TCASE(s, retriable_and_fatal_classes, 5);
        return s;
}

RBK_TEST_MAIN()
