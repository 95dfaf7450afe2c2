/*
 * route_rig.c - see route_rig.h.
 */
#include "route_rig.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "harness.h"
#include "log.h"

void
pb_route_rig_start(pb_route_rig_t *r, const char *prefix, const char *name,
                   const char *from, const char *to, const char *when,
                   const pb_router_dest_options_t *to_opt)
{
    static int generation;
    memset(r, 0, sizeof *r);
    pb_log_set_level(PB_LOG_ERROR);
    r->dir = pb_test_tempdir(prefix);
    cr_assert_not_null(r->dir);
    char err[512] = "";
    r->journal = pb_journal_open(r->dir, err, sizeof err);
    cr_assert_not_null(r->journal, "journal: %s", err);
    r->zctx = zmq_ctx_new();
    cr_assert_not_null(r->zctx);
    r->when[0] = (char *)when;
    r->to[0] = (char *)to;
    r->route = (pb_route_conf_t){
        .name = (char *)name,
        .from = (char *)from,
        .when = r->when,
        .when_count = 1,
        .to = r->to,
        .to_count = 1,
        .why = "someone re-typed these events by hand",
        .owner = "ops@example.com",
        .retry = {10, 50, 200},
    };
    r->cfg = (pb_config_t){
        .data_dir = r->dir,
        .routes = &r->route,
        .route_count = 1,
        .dedupe_retention_ms = 86400000LL,
        .delivered_retention_ms = 86400000LL,
    };
    r->dests[0] = (pb_router_dest_options_t){.name = from};
    r->dests[1] = to_opt ? *to_opt : (pb_router_dest_options_t){0};
    r->dests[1].name = to;
    snprintf(r->endpoint, sizeof r->endpoint, "inproc://test-rig-%d-%d",
             (int)getpid(), ++generation);
    pb_router_options_t ro = {.zmq_ctx = r->zctx,
                              .endpoint = r->endpoint,
                              .config = &r->cfg,
                              .dests = r->dests,
                              .dest_count = 2,
                              .journal = r->journal};
    r->router = pb_router_start(&ro, err, sizeof err);
    cr_assert_not_null(r->router, "router: %s", err);
}

void
pb_route_rig_stop(pb_route_rig_t *r)
{
    pb_router_stop(&r->router);
    if (r->zctx)
        zmq_ctx_term(r->zctx);
    r->zctx = NULL;
    pb_journal_close(&r->journal);
    if (r->dir) {
        pb_test_rmtree(r->dir);
        free(r->dir);
        r->dir = NULL;
    }
}

void
pb_rig_plugin(const char *path, const pb_raw_setting_t *raw, size_t n,
              pb_plugin_t **plugin, plugboard_settings_t **settings)
{
    char err[512] = "";
    *plugin = pb_plugin_load(path, NULL, 0, NULL, err, sizeof err);
    cr_assert_not_null(*plugin, "%s", err);
    pb_diag_t diag;
    pb_diag_init(&diag);
    *settings = pb_settings_bind(pb_plugin_descriptor(*plugin)->settings, raw,
                                 n, "test", &diag);
    char first[512];
    snprintf(first, sizeof first, "%s",
             diag.count ? diag.messages[0] : "settings refused");
    pb_diag_release(&diag);
    cr_assert_not_null(*settings, "%s", first);
}
