/*
 * reload.h - changing a running host: config reload, connector upgrade,
 * and the connector instances they start beside the running ones and
 * retire.
 *
 * After start the runtime hands its connectors to this module, which owns
 * them from then on as instances: a connector name, a generation, an actor
 * (routing id "name" for generation 0, "name#gen" after), the plugin it
 * runs (shared, reference counted, unloaded with its last instance) and
 * its bound settings.  The runtime's view - its config and the plugin and
 * connector arrays aligned with the config's connectors - is updated in
 * place on the main thread after every change, so code that reads that
 * view on the main thread needs no lock.
 *
 * A reload parses and binds the new file completely, opens new and changed
 * connectors beside the running ones, and only then swaps the route table
 * (pb_router_swap) and the webhook lookup; unchanged connectors keep their
 * instance.  An upgrade does the same for one connector with a new build
 * of its plugin.  Replaced and removed instances retire: the router says
 * BYE after the last delivery it sent them, and pb_reload_tick stops them
 * (closing the plugin on their own thread), then unloads the plugin when
 * no instance runs it.  Any failure before the swap undoes everything and
 * leaves the old configuration running.
 *
 * All functions run on the main thread except pb_reload_submit_webhook.
 */
#ifndef PB_RELOAD_H
#define PB_RELOAD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "connector.h"
#include "http.h"
#include "loader.h"
#include "metrics.h"
#include "router.h"

typedef struct pb_reload pb_reload_t;

/* Serve the admin socket for up to timeout_ms while a reload waits for
 * plugins to open, so that other requests are answered (and a second
 * reload refused) meanwhile. */
typedef void (*pb_reload_pump_fn)(void *ctx, int timeout_ms);

typedef struct pb_reload_options {
    void *zmq_ctx;
    const char *router_endpoint;
    pb_router_t *router;            /* borrowed */
    const char *copy_dir;           /* private plugin copies (copied) */
    const char *default_plugin_dir; /* when the config has no
                                       plugin_path (copied) */
    int64_t open_timeout_ms;        /* longest wait for a plugin's open
                                       during a reload (default 20 s) */
    /* The runtime's view, owned by the runtime and kept current here.
     * The connectors and plugins in it at pb_reload_new are adopted. */
    pb_config_t **cfg;
    pb_plugin_t ***plugins;
    size_t *plugin_count; /* the plugins array's length */
    pb_connector_t ***connectors;
    pb_reload_pump_fn pump; /* may be NULL: then it sleeps */
    void *pump_ctx;
    pb_metrics_t *metrics; /* borrowed; NULL: none */
} pb_reload_options_t;

/* Adopt the running connectors.  NULL when out of memory. */
pb_reload_t *pb_reload_new(const pb_reload_options_t *opt);

/*
 * Hand a webhook to the instance serving its connector now.  Thread-safe
 * (the HTTP listener's thread): the lookup and the hand-over happen under
 * one lock that the swap takes too, so a request reaches either the old
 * instance (which finishes it before it stops) or the new one.  Returns as
 * pb_connector_submit_webhook; PB_ENOENT for an unknown connector.
 */
int pb_reload_submit_webhook(pb_reload_t *rl, pb_webhook_t *w);

/*
 * Reload the config at path.  Returns the answer for the admin (caller
 * owns it): {"ok":true,"added":[..],"changed":[..],"removed":[..],
 * "unchanged":[..],"dead_lettered":N} or {"ok":false,"error":"..."}
 * with every reason.  The log says the same.
 */
json_t *pb_reload_config(pb_reload_t *rl, const char *path);

/*
 * Replace the plugin build of connector name: plugin is a path or plugin
 * name (NULL: the connector's configured plugin, loaded afresh).  Returns
 * {"ok":true,"connector":..,"plugin":..,"version":..,"previous":..,
 * "generation":N} or an error answer.
 */
json_t *pb_reload_upgrade(pb_reload_t *rl, const char *name,
                          const char *plugin);

/* Is a reload or upgrade running (waiting for plugins to open)? */
bool pb_reload_busy(const pb_reload_t *rl);

/* Stop retired instances that are done, unload unused plugins, and
 * upgrade watched connectors whose plugin file changed.  Call often
 * (every few hundred ms). */
void pb_reload_tick(pb_reload_t *rl);

/*
 * Add each connector's instance state to a status answer: connectors is
 * the array of {"name":..} objects for the current connectors, in config
 * order; fields state, generation, isolation, uptime_s, restarts and
 * draining are set, and retired or starting instances appended.
 */
void pb_reload_status(pb_reload_t *rl, json_t *connectors);

/* Stop every instance (current ones last) and unload every plugin; the
 * runtime's plugin and connector arrays are left holding NULLs. */
void pb_reload_shutdown(pb_reload_t *rl);

void pb_reload_destroy(pb_reload_t **rl);

/* `plugboard ctl reload ...` and `plugboard ctl upgrade ...`: argv[0] is
 * "reload" or "upgrade".  Returns the exit status. */
int pb_reload_cli(int argc, char **argv);

/* The instance table of `ctl status` (version, isolation, state, uptime,
 * restarts), after the connector table. */
void pb_reload_print_status(json_t *resp, FILE *out);

#endif /* PB_RELOAD_H */
