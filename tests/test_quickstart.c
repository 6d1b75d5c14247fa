/* The README's quickstart: the snippet it shows is examples/quickstart.c
 * (line for line), and that program sends and handles its message on the
 * mock cluster. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>

#include "harness.h"
#include "robustkafka/testing.h"

#define main quickstart_main
#include "../examples/quickstart.c"
#undef main

/* The lines between the quickstart markers of examples/quickstart.c, one
 * indentation level removed. */
static char *example_snippet(void) {
        char *src = NULL;
        ck_assert(g_file_get_contents("examples/quickstart.c", &src, NULL,
                                      NULL));
        const char *b = strstr(src, "/* quickstart-begin */\n");
        const char *e = strstr(src, "        /* quickstart-end */");
        ck_assert(b && e && b < e);
        b += strlen("/* quickstart-begin */\n");
        GString *out = g_string_new(NULL);
        char *body = g_strndup(b, (gsize)(e - b));
        char **lines = g_strsplit(body, "\n", -1);
        g_free(body);
        for (char **l = lines; *l; l++) {
                if (!**l && !l[1])
                        break; /* the split after the last newline */
                g_string_append(out, g_str_has_prefix(*l, "        ")
                                         ? *l + 8
                                         : *l);
                g_string_append_c(out, '\n');
        }
        g_strfreev(lines);
        g_free(src);
        return g_string_free(out, FALSE);
}

/* The ```c block that follows the quickstart marker in README.md. */
static char *readme_snippet(void) {
        char *md = NULL;
        ck_assert(g_file_get_contents("README.md", &md, NULL, NULL));
        const char *m = strstr(md, "<!-- quickstart: examples/quickstart.c -->");
        ck_assert_msg(m, "README.md has no quickstart marker");
        const char *b = strstr(m, "```c\n");
        ck_assert(b);
        b += strlen("```c\n");
        const char *e = strstr(b, "```\n");
        ck_assert(e);
        char *s = g_strndup(b, (gsize)(e - b));
        g_free(md);
        return s;
}

START_TEST(readme_shows_the_example) {
        char *want = example_snippet();
        char *got = readme_snippet();
        ck_assert_msg(!strcmp(want, got),
                      "README.md's quickstart differs from "
                      "examples/quickstart.c:\n--- example\n%s--- README\n%s",
                      want, got);
        char **lines = g_strsplit(want, "\n", -1);
        ck_assert_int_le(g_strv_length(lines) - 1, 20); /* a snippet */
        g_strfreev(lines);
        g_free(want);
        g_free(got);
}
END_TEST

START_TEST(example_runs_on_the_mock_cluster) {
        char errstr[512];
        rbk_testcluster_t *tc = rbk_testcluster_new(3, errstr, sizeof(errstr));
        ck_assert_msg(tc, "%s", errstr);
        ck_assert_int_eq(rbk_testcluster_create_topic(tc, "greetings", 1, 3),
                         RBK_OK);
        /* KAFKA_URL lists every broker as kafka://host:port. */
        GString *url = g_string_new(NULL);
        char **brokers = g_strsplit(rbk_testcluster_bootstrap(tc), ",", -1);
        for (char **b = brokers; *b; b++)
                g_string_append_printf(url, "%skafka://%s",
                                       url->len ? "," : "", *b);
        g_strfreev(brokers);
        char out[] = "/tmp/rbk-quickstart-XXXXXX";
        int fd = mkstemp(out);
        ck_assert_int_ge(fd, 0);
        /* The example as built (BUILD/examples/quickstart, next to this
         * program's BUILD/tests), in a process of its own: rbk_shutdown()
         * ends a process's registry for good, and this process has threads
         * (the cluster's), after which a fork may only exec. */
        char *self = g_file_read_link("/proc/self/exe", NULL);
        ck_assert_ptr_nonnull(self);
        char *dir = g_path_get_dirname(self);
        char *prog = g_build_filename(dir, "..", "examples", "quickstart", NULL);
        ck_assert_msg(g_file_test(prog, G_FILE_TEST_IS_EXECUTABLE),
                      "%s is not built (make examples)", prog);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                setenv("KAFKA_URL", url->str, 1);
                unsetenv("KAFKA_PREFIX");
                dup2(fd, STDOUT_FILENO);
                execl(prog, prog, (char *)NULL);
                rbk_test_child_exit(127);
        }
        g_free(prog);
        g_free(dir);
        g_free(self);
        int status = 0;
        gint64 deadline = g_get_monotonic_time() + 50 * G_USEC_PER_SEC;
        while (waitpid(pid, &status, WNOHANG) == 0) {
                if (g_get_monotonic_time() > deadline) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        ck_abort_msg("quickstart did not finish in 50 s");
                }
                g_usleep(50000);
        }
        close(fd);
        char *printed = NULL;
        ck_assert(g_file_get_contents(out, &printed, NULL, NULL));
        unlink(out);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "quickstart failed (status %d): %s", status, printed);
        ck_assert_msg(strstr(printed, "greetings [0] at offset 0: hello"),
                      "printed: %s", printed);
        g_free(printed);
        g_string_free(url, TRUE);
        rbk_testcluster_destroy(tc);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("quickstart");
        RBK_TCASE(s, readme_shows_the_example, 10);
        RBK_TCASE(s, example_runs_on_the_mock_cluster, 60);
        return s;
}

RBK_TEST_MAIN()
