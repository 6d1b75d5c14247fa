/* Incident names, keys and commit-metadata markers. */
#include <glib.h>
#include <string.h>

#include "harness.h"
#include "incident.h"

START_TEST(resolution_names) {
        static const struct {
                rbk_resolve_t how;
                const char *name;
        } t[] = {
            {RBK_RESOLVE_EARLIEST, "earliest"},
            {RBK_RESOLVE_LATEST, "latest"},
            {RBK_RESOLVE_COMMITTED, "committed"},
            {RBK_RESOLVE_OFFSET, "offset"},
        };
        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                ck_assert_str_eq(rbk__resolve_name(t[i].how), t[i].name);
                ck_assert_int_eq(rbk__resolve_parse(t[i].name), t[i].how);
        }
        ck_assert_str_eq(rbk__resolve_name((rbk_resolve_t)0), "unknown");
        ck_assert_str_eq(rbk__resolve_name((rbk_resolve_t)99), "unknown");
        ck_assert_str_eq(rbk__resolve_name((rbk_resolve_t)-1), "unknown");
        ck_assert_int_eq(rbk__resolve_parse("Latest"), 0);
        ck_assert_int_eq(rbk__resolve_parse("latest "), 0);
        ck_assert_int_eq(rbk__resolve_parse(""), 0);
        ck_assert_int_eq(rbk__resolve_parse("unknown"), 0);
        ck_assert_int_eq(rbk__resolve_parse(NULL), 0);
}
END_TEST

START_TEST(keys_built) {
        char *k = rbk__incident_key(RBK__INCIDENT_QUARANTINE, "g", "t", 1, 100);
        ck_assert_str_eq(k, "g/t/1/100");
        g_free(k);
        k = rbk__incident_key(RBK__INCIDENT_GAVE_UP, "g", "t", 0, 7);
        ck_assert_str_eq(k, "g/t/0/gave-up/7");
        g_free(k);
        k = rbk__incident_key(RBK__INCIDENT_DEADLETTER, "a/b", "t.x-1", 12,
                              -1);
        ck_assert_str_eq(k, "a/b/t.x-1/12/deadletter/-1");
        g_free(k);
        k = rbk__incident_key(RBK__INCIDENT_QUARANTINE, "g", "t", 2147483647,
                              INT64_MAX);
        ck_assert_str_eq(k, "g/t/2147483647/9223372036854775807");
        g_free(k);
}
END_TEST

/* Builds a key and reads it back. */
static void roundtrip(rbk__incident_kind_t kind, const char *group,
                      const char *topic, int32_t part, int64_t off) {
        char *k = rbk__incident_key(kind, group, topic, part, off);
        rbk__incident_kind_t kk = (rbk__incident_kind_t)-1;
        char *g = NULL, *t = NULL;
        int32_t p = -2;
        int64_t o = -2;
        ck_assert_msg(rbk__incident_key_parse(k, &kk, &g, &t, &p, &o), "%s",
                      k);
        ck_assert_int_eq(kk, kind);
        ck_assert_str_eq(g, group);
        ck_assert_str_eq(t, topic);
        ck_assert_int_eq(p, part);
        ck_assert_int_eq(o, off);
        g_free(g);
        g_free(t);
        g_free(k);
}

START_TEST(keys_parsed) {
        roundtrip(RBK__INCIDENT_QUARANTINE, "g", "t", 1, 100);
        roundtrip(RBK__INCIDENT_GAVE_UP, "g", "t", 0, 7);
        roundtrip(RBK__INCIDENT_DEADLETTER, "g", "t", 3, -1);
        /* A group may hold '/', even the kind words. */
        roundtrip(RBK__INCIDENT_QUARANTINE, "team/a/gave-up/1", "t", 0, 5);
        roundtrip(RBK__INCIDENT_DEADLETTER, "x/deadletter", "orders", 9, 42);
        /* A topic named like a kind word stays a topic. */
        roundtrip(RBK__INCIDENT_QUARANTINE, "g", "gave-up", 3, 5);
        roundtrip(RBK__INCIDENT_GAVE_UP, "g", "deadletter", 3, 5);
        roundtrip(RBK__INCIDENT_QUARANTINE, "g", "t", 2147483647, INT64_MAX);

        /* Outputs are optional. */
        ck_assert(rbk__incident_key_parse("g/t/1/2", NULL, NULL, NULL, NULL,
                                          NULL));

        static const char *bad[] = {
            "",
            "g",
            "g/t",
            "g/t/1",
            "t/1/2",          /* no group */
            "/t/1/2",         /* empty group */
            "g//1/2",         /* empty topic */
            "g/t//2",         /* empty partition */
            "g/t/1/",         /* empty offset */
            "g/t/x/2",        /* partition not a number */
            "g/t/-1/2",       /* negative partition */
            "g/t/2147483648/2",
            "g/t/1/-2",       /* offsets below -1 */
            "g/t/1/+2",
            "g/t/1/2x",
            "g/t/1/99999999999999999999",
            "g/t/1/gave-up",  /* kind word, no offset */
            "g/t/gave-up/5",  /* kind word, no partition */
            "g/t/1/stalled/5",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                char *g = (char *)"untouched";
                ck_assert_msg(!rbk__incident_key_parse(bad[i], NULL, &g, NULL,
                                                       NULL, NULL),
                              "\"%s\" parsed", bad[i]);
                ck_assert_str_eq(g, "untouched");
        }
        ck_assert(!rbk__incident_key_parse(NULL, NULL, NULL, NULL, NULL,
                                           NULL));
}
END_TEST

START_TEST(quarantine_marker) {
        char *m = rbk__meta_quarantine("g-q/t-q/1/100");
        ck_assert_str_eq(m, "rbk-quarantine:g-q/t-q/1/100");
        ck_assert_str_eq(rbk__meta_quarantine_key(m), "g-q/t-q/1/100");
        g_free(m);
        ck_assert_ptr_null(rbk__meta_quarantine_key("rbk-quarantine:"));
        ck_assert_ptr_null(rbk__meta_quarantine_key("rbk-quarantine"));
        ck_assert_ptr_null(rbk__meta_quarantine_key(
            "rbk-resolved:latest:g/t/1/2"));
        ck_assert_ptr_null(rbk__meta_quarantine_key(""));
        ck_assert_ptr_null(rbk__meta_quarantine_key(NULL));
}
END_TEST

START_TEST(resolved_marker) {
        char *m = rbk__meta_resolved(RBK_RESOLVE_LATEST, "adm-g2/adm-t2/0/30");
        ck_assert_str_eq(m, "rbk-resolved:latest:adm-g2/adm-t2/0/30");
        rbk_resolve_t how = 0;
        ck_assert_str_eq(rbk__meta_resolved_key(m, &how), "adm-g2/adm-t2/0/30");
        ck_assert_int_eq(how, RBK_RESOLVE_LATEST);
        g_free(m);
        /* Group names may hold ':': only the first one ends the choice. */
        ck_assert_str_eq(rbk__meta_resolved_key("rbk-resolved:offset:a:b/t/0/1",
                                                NULL),
                         "a:b/t/0/1");
        /* A choice this version does not know is still a resolution. */
        how = RBK_RESOLVE_EARLIEST;
        ck_assert_str_eq(rbk__meta_resolved_key("rbk-resolved:later:g/t/0/1",
                                                &how),
                         "g/t/0/1");
        ck_assert_int_eq(how, 0);
        ck_assert_ptr_null(rbk__meta_resolved_key("rbk-resolved:", NULL));
        ck_assert_ptr_null(rbk__meta_resolved_key("rbk-resolved:latest", NULL));
        ck_assert_ptr_null(rbk__meta_resolved_key("rbk-resolved:latest:", NULL));
        ck_assert_ptr_null(rbk__meta_resolved_key("rbk-resolved::g/t/0/1", NULL));
        ck_assert_ptr_null(rbk__meta_resolved_key("rbk-quarantine:g/t/0/1",
                                                  NULL));
        ck_assert_ptr_null(rbk__meta_resolved_key(NULL, NULL));
}
END_TEST

START_TEST(initial_marker) {
        char *m = rbk__meta_initial("earliest");
        ck_assert_str_eq(m, "rbk-initial:earliest");
        ck_assert_str_eq(rbk__meta_initial_value(m), "earliest");
        g_free(m);
        ck_assert_ptr_null(rbk__meta_initial_value("rbk-initial:"));
        ck_assert_ptr_null(rbk__meta_initial_value("rbk-quarantine:g/t/0/1"));
        ck_assert_ptr_null(rbk__meta_initial_value(NULL));
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("incident");
        RBK_TCASE(s, resolution_names, 5);
        RBK_TCASE(s, keys_built, 5);
        RBK_TCASE(s, keys_parsed, 5);
        RBK_TCASE(s, quarantine_marker, 5);
        RBK_TCASE(s, resolved_marker, 5);
        RBK_TCASE(s, initial_marker, 5);
        return s;
}

RBK_TEST_MAIN()
