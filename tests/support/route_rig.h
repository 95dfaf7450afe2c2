/*
 * route_rig.h - one route on a real router and a real journal in a fresh
 * temporary directory, for tests that run real connector actors (or
 * router_peer.h peers) against it, and the test plugin loading they share.
 *
 * The rig owns the directory, the journal, the ZeroMQ context and the
 * router; connectors and peers the test starts on it must be stopped
 * before pb_route_rig_stop.  Failures are Criterion assertions.
 */
#ifndef PB_ROUTE_RIG_H
#define PB_ROUTE_RIG_H

#include <stddef.h>

#include "config.h"
#include "journal.h"
#include "loader.h"
#include "router.h"

typedef struct pb_route_rig {
    char *dir; /* the temporary directory, removed at stop */
    pb_journal_t *journal;
    void *zctx;
    pb_router_t *router;
    char endpoint[96]; /* the router's inproc:// endpoint */
    char *when[1];
    char *to[1];
    pb_route_conf_t route;
    pb_config_t cfg;
    pb_router_dest_options_t dests[2]; /* from, to */
} pb_route_rig_t;

/*
 * Start a router with one route named name from connector `from` to
 * connector `to` for the events `when` matches (retry 10 attempts, 50 to
 * 200 ms).  to_opt gives the destination's router options (its name is
 * filled in; NULL for defaults).  prefix names the temporary directory.
 */
void pb_route_rig_start(pb_route_rig_t *r, const char *prefix, const char *name,
                        const char *from, const char *to, const char *when,
                        const pb_router_dest_options_t *to_opt);

/* Stop the router, close the journal and the context, remove the
 * directory; idempotent. */
void pb_route_rig_stop(pb_route_rig_t *r);

/* Load the plugin at path and bind raw settings (n of them) against its
 * declared settings.  Caller destroys both. */
void pb_rig_plugin(const char *path, const pb_raw_setting_t *raw, size_t n,
                   pb_plugin_t **plugin, plugboard_settings_t **settings);

#endif /* PB_ROUTE_RIG_H */
