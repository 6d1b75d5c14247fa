/* The consumer's side of the control listener (control.c): the ops table
 * through which the listener reaches a group consumer, so that the control
 * module never includes the consumer's internals. */
#include "consumer_internal.h"
#include "control.h"

#include <librdkafka/rdkafka_mock.h>

static size_t rbk__ctl_c_quarantined(void *target, rbk_quarantine_t *out,
                                     size_t max) {
        return rbk_consumer_quarantined(target, out, max);
}

static rbk_err_t rbk__ctl_c_resolve(void *target, const rbk__control_msg_t *cmd,
                                    const char *applied_by, char *errstr,
                                    size_t errstr_size) {
        return rbk__consumer_resolve_by_incident(target, cmd->incident_key,
                                                 cmd->how, cmd->offset,
                                                 applied_by, errstr,
                                                 errstr_size);
}

static char *rbk__ctl_c_member(void *target) {
        rbk_consumer_t *c = target;
        if (!c->rk)
                return NULL;
        char *m = rd_kafka_memberid(c->rk);
        char *r = m && *m ? g_strdup(m) : NULL;
        if (m)
                rd_kafka_mem_free(c->rk, m);
        return r;
}

static const rbk__control_ops_t rbk__ctl_consumer_ops = {
    rbk__ctl_c_quarantined, rbk__ctl_c_resolve, rbk__ctl_c_member};

rbk__control_t *rbk__control_start(rbk_consumer_t *c, const rbk_conf_t *conf,
                                   const char *group, char *errstr,
                                   size_t errstr_size) {
        rd_kafka_mock_cluster_t *mc =
            c && c->rk ? rd_kafka_handle_mock_cluster(c->rk) : NULL;
        if (!mc || !conf)
                return rbk__control_start_ops(&rbk__ctl_consumer_ops, c, conf,
                                              group, errstr, errstr_size);
        rbk_conf_t *dup = rbk_conf_dup(conf);
        rbk__conf_set_raw(dup, "bootstrap.servers",
                          rd_kafka_mock_cluster_bootstraps(mc));
        rbk__control_t *ctl = rbk__control_start_ops(
            &rbk__ctl_consumer_ops, c, dup, group, errstr, errstr_size);
        rbk_conf_destroy(dup);
        return ctl;
}
