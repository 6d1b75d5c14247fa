/* Small shared helpers: the JSON string escaper, redaction, fork
 * detection. */
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

/* The escaper's output for @p in (g_free). */
static char *esc(const char *in) {
        GString *s = g_string_new(NULL);
        rbk__json_escape_str(s, in);
        return g_string_free(s, FALSE);
}

#define ESC_EQ(in, want)                                                     \
        do {                                                                 \
                char *got_ = esc(in);                                        \
                ck_assert_str_eq(got_, want);                                \
                g_free(got_);                                                \
        } while (0)

START_TEST(json_escape_plain_and_quotes) {
        ESC_EQ("", "\"\"");
        ESC_EQ(NULL, "\"\"");
        ESC_EQ("abc 123", "\"abc 123\"");
        ESC_EQ("say \"hi\"", "\"say \\\"hi\\\"\"");
        ESC_EQ("a\\b", "\"a\\\\b\"");
        ESC_EQ("/", "\"/\"");
        ESC_EQ("\\\"", "\"\\\\\\\"\"");
}
END_TEST

START_TEST(json_escape_control_characters) {
        ESC_EQ("a\nb\rc\td", "\"a\\nb\\rc\\td\"");
        ESC_EQ("\b\f", "\"\\b\\f\"");
        ESC_EQ("\x01", "\"\\u0001\"");
        ESC_EQ("\x1f", "\"\\u001f\"");
        ESC_EQ("x\x1by", "\"x\\u001by\"");
        ESC_EQ("\x7f", "\"\\u007f\"");
        /* Every byte below 0x20 comes out as an escape, never raw. */
        for (int c = 1; c < 0x20; c++) {
                char in[2] = {(char)c, 0};
                char *got = esc(in);
                ck_assert_msg(got[1] == '\\', "byte 0x%02x", c);
                for (const char *q = got; *q; q++)
                        ck_assert_int_ge((unsigned char)*q, 0x20);
                g_free(got);
        }
}
END_TEST

START_TEST(json_escape_utf8) {
        /* Valid UTF-8 (2, 3 and 4 bytes) passes through unchanged. */
        ESC_EQ("caf\xc3\xa9", "\"caf\xc3\xa9\"");
        ESC_EQ("\xe2\x82\xac", "\"\xe2\x82\xac\"");
        ESC_EQ("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"");
        /* Invalid: a lone continuation byte, a cut-off sequence, an overlong
         * '/', a surrogate, a byte never valid: each byte is U+FFFD. */
        ESC_EQ("a\x80z", "\"a\\ufffdz\"");
        ESC_EQ("\xe2\x82", "\"\\ufffd\\ufffd\"");
        ESC_EQ("\xc0\xaf", "\"\\ufffd\\ufffd\"");
        ESC_EQ("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
        ESC_EQ("\xff", "\"\\ufffd\"");
        /* Whatever the input, the output is valid UTF-8 (and so JSON). */
        char in[256];
        for (int i = 0; i < 255; i++)
                in[i] = (char)(i + 1);
        in[255] = 0;
        char *got = esc(in);
        ck_assert(g_utf8_validate(got, -1, NULL));
        g_free(got);
}
END_TEST

START_TEST(json_escape_appends) {
        GString *s = g_string_new("{\"k\":");
        rbk__json_escape_str(s, "v\"");
        g_string_append_c(s, '}');
        ck_assert_str_eq(s->str, "{\"k\":\"v\\\"\"}");
        g_string_free(s, TRUE);
}
END_TEST

START_TEST(redact_in_place_never_grows) {
        char buf[128];
        snprintf(buf, sizeof(buf), "password=abc, secret=0123456789abc end");
        rbk__redact(buf);
        ck_assert_str_eq(buf, "password=*, secret=[redacted] end");
        snprintf(buf, sizeof(buf), "a -----BEGIN X-----\nAAAA\n-----END X----- b");
        rbk__redact(buf);
        ck_assert_str_eq(buf, "a [redacted] b");
        snprintf(buf, sizeof(buf), "no secrets, password= here");
        rbk__redact(buf);
        ck_assert_str_eq(buf, "no secrets, password= here");
        rbk__redact(NULL);
}
END_TEST

START_TEST(redact_copy) {
        char *r = rbk__redact_dup("sasl.password=ab x SECRET=c,"
                                  " -----BEGIN KEY-----MIIcutoff");
        ck_assert_str_eq(r, "sasl.password=[redacted] x SECRET=[redacted],"
                            " [redacted]");
        g_free(r);
        /* Already redacted text stays as it is. */
        r = rbk__redact_dup("password=[redacted] secret=[redacted]");
        ck_assert_str_eq(r, "password=[redacted] secret=[redacted]");
        g_free(r);
        GString *s = g_string_new("password=pw");
        rbk__redact_gstring(s, 0);
        ck_assert_str_eq(s->str, "password=*");
        g_string_free(s, TRUE);
}
END_TEST

START_TEST(fork_detected_only_in_the_child) {
        pid_t parent = getpid();
        ck_assert_int_eq(rbk__getpid(), parent);
        ck_assert_int_eq(rbk__forked(parent), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                /* Exit codes name the check that failed. */
                if (rbk__getpid() != getpid())
                        rbk_test_child_exit(10);
                if (!rbk__forked(parent))
                        rbk_test_child_exit(11);
                if (rbk__forked(getpid()))
                        rbk_test_child_exit(12);
                pid_t grandchild = fork();
                if (grandchild < 0)
                        rbk_test_child_exit(13);
                if (grandchild == 0)
                        rbk_test_child_exit(rbk__forked(parent) && rbk__forked(getppid()) &&
                                      !rbk__forked(getpid())
                                  ? 0
                                  : 14);
                int st;
                if (waitpid(grandchild, &st, 0) != grandchild ||
                    !WIFEXITED(st))
                        rbk_test_child_exit(15);
                rbk_test_child_exit(WEXITSTATUS(st));
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st));
        ck_assert_int_eq(WEXITSTATUS(st), 0);
        /* The parent is unaffected. */
        ck_assert_int_eq(rbk__forked(parent), 0);
        ck_assert_int_eq(rbk__getpid(), parent);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("util");
        RBK_TCASE(s, json_escape_plain_and_quotes, 5);
        RBK_TCASE(s, json_escape_control_characters, 5);
        RBK_TCASE(s, json_escape_utf8, 5);
        RBK_TCASE(s, json_escape_appends, 5);
        RBK_TCASE(s, redact_in_place_never_grows, 5);
        RBK_TCASE(s, redact_copy, 5);
        RBK_TCASE(s, fork_detected_only_in_the_child, 10);
        return s;
}

RBK_TEST_MAIN()
