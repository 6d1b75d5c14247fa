/* Incidents: the names, keys and commit-metadata markers that the consumer,
 * the control listener and rbk-admin share, so that each is written and
 * read in one place.
 *
 * An incident key names one stopped position of one partition of a group,
 * with the group and topic as the application names them (no prefix):
 *
 *   <group>/<topic>/<partition>/<offset>             quarantine (out of range)
 *   <group>/<topic>/<partition>/gave-up/<offset>     handler gave up
 *   <group>/<topic>/<partition>/deadletter/<offset>  dead-letter send failed
 *
 * The offset is the failed position (quarantine) or the held message's
 * offset (-1 when none is held). Topic names never contain '/'; a group
 * name may, so keys are read from the right.
 *
 * Commit metadata written with the library's own commits:
 *
 *   rbk-quarantine:<key>        the committed offset is quarantined
 *   rbk-resolved:<how>:<key>    an operator resolved <key> (how: below)
 *   rbk-initial:<initial>       first position (rbk.consumer.initial.offset)
 *
 * Never installed. */
#ifndef RBK_INCIDENT_H
#define RBK_INCIDENT_H

#include "internal.h"

#define RBK__META_QUARANTINE "rbk-quarantine:"
#define RBK__META_RESOLVED "rbk-resolved:"
#define RBK__META_INITIAL "rbk-initial:"
/* A partition the application paused: "rbk-paused:<client name>". */
#define RBK__META_PAUSED "rbk-paused:"

/* ------------------------------------------------------------ resolutions */

/* The name of a resolution choice: "earliest", "latest", "committed",
 * "offset"; "unknown" for any other value. Never NULL. */
const char *rbk__resolve_name(rbk_resolve_t how);
/* The choice a name stands for (exact, case-sensitive), or 0 for NULL or an
 * unknown name. */
rbk_resolve_t rbk__resolve_parse(const char *name);

/* ------------------------------------------------------------ keys */

typedef enum rbk__incident_kind_e {
        RBK__INCIDENT_QUARANTINE = 0, /* .../<offset> */
        RBK__INCIDENT_GAVE_UP,        /* .../gave-up/<offset> */
        RBK__INCIDENT_DEADLETTER      /* .../deadletter/<offset> */
} rbk__incident_kind_t;

/* Builds an incident key (g_free). group and topic without prefix. */
char *rbk__incident_key(rbk__incident_kind_t kind, const char *group,
                        const char *topic, int32_t partition, int64_t offset);

/* Reads an incident key. Returns 1 and fills every non-NULL output (group
 * and topic g_malloc'ed, for g_free), or 0, touching none, when @p key is
 * not one (NULL, empty group or topic, a partition or offset that is not a
 * decimal number in range). */
int rbk__incident_key_parse(const char *key, rbk__incident_kind_t *kindp,
                            char **groupp, char **topicp,
                            int32_t *partitionp, int64_t *offsetp);

/* ------------------------------------------------------------ metadata */

/* "rbk-quarantine:<key>" (g_free). */
char *rbk__meta_quarantine(const char *key);
/* The key in a quarantine marker (a pointer into @p meta), or NULL when
 * @p meta is NULL, another text or a marker with an empty key. */
const char *rbk__meta_quarantine_key(const char *meta);

/* "rbk-resolved:<how>:<key>" (g_free). */
char *rbk__meta_resolved(rbk_resolve_t how, const char *key);
/* The key in a resolution marker (a pointer into @p meta), or NULL when
 * @p meta is not one. *howp (if not NULL) is set to the choice, 0 when its
 * name is unknown (a newer writer): the marker is still recognised. */
const char *rbk__meta_resolved_key(const char *meta, rbk_resolve_t *howp);

/* "rbk-initial:<initial>" (g_free), initial as rbk.consumer.initial.offset
 * ("earliest", "latest"). */
char *rbk__meta_initial(const char *initial);
/* The value in an initial-position marker (a pointer into @p meta), or
 * NULL when @p meta is not one. */
const char *rbk__meta_initial_value(const char *meta);

#endif /* RBK_INCIDENT_H */
