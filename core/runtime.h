/*
 * runtime.h - the running host: wires config, loader, journal, router,
 * connector actors and the HTTP listener together, in that order, and
 * takes them down in reverse with a bounded drain.
 */
#ifndef PB_RUNTIME_H
#define PB_RUNTIME_H

#include <stdint.h>

#include "config.h"
#include "router.h"

typedef struct pb_runtime pb_runtime_t;

/*
 * Validate config_path completely without starting anything: parse, load
 * every plugin, bind settings, check routes.  Returns 0, or PB_ECONFIG
 * with every problem in diag.  routes, when not NULL, gets the number of
 * routes the config declares.
 */
int pb_runtime_check(const char *config_path, pb_diag_t *diag,
                     size_t *routes);

/*
 * Start the host.  Returns NULL with every problem in diag; nothing is left
 * running then.  Caller owns the result.
 */
pb_runtime_t *pb_runtime_start(const char *config_path, pb_diag_t *diag);

/* The HTTP port bound, or 0 when there is no listener. */
uint16_t pb_runtime_http_port(const pb_runtime_t *rt);

void pb_runtime_stats(pb_runtime_t *rt, pb_router_stats_t *out);

/*
 * Graceful stop: refuse new connections, finish the webhooks in hand, let
 * deliveries in flight finish (up to the configured drain timeout), stop
 * every connector, close the journal.  NULLs *rt.
 */
void pb_runtime_stop(pb_runtime_t **rt);

/* The admin socket's descriptor (poll it for readability), or -1. */
int pb_runtime_control_fd(const pb_runtime_t *rt);

/* Answer one admin client waiting on the control socket.  Main thread. */
void pb_runtime_serve_control(pb_runtime_t *rt);

/* Housekeeping: stop retired connector instances, upgrade watched ones
 * whose plugin file changed.  Main thread, every few hundred ms. */
void pb_runtime_tick(pb_runtime_t *rt);

/* Reload the config file (SIGHUP).  Returns 0, or PB_ECONFIG when the old
 * configuration stays (the reason is logged).  Main thread. */
int pb_runtime_reload(pb_runtime_t *rt);

/* The plugin search path used when the config gives none. */
const char *pb_runtime_default_plugin_dir(void);

#endif /* PB_RUNTIME_H */
