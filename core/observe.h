/*
 * observe.h - what the running host says about its flow, and the commands
 * that show it.
 *
 * Host side (called by the runtime): the /metrics and /readyz pages, and
 * the control-socket answers "status" (extended with per-connector and
 * per-route numbers), "flow" and "constraint".  Client side: the tables
 * of `plugboard ctl status`, `plugboard ctl top` and `plugboard ctl
 * constraint`.  The numbers come from core/metrics.h, the analysis from
 * core/constraint.h; this module only connects them to HTTP, the control
 * socket and a terminal.
 */
#ifndef PB_OBSERVE_H
#define PB_OBSERVE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "metrics.h"

/* Window used when a request names none. */
#define PB_OBSERVE_STATUS_WINDOW_MS 10000
#define PB_OBSERVE_CONSTRAINT_WINDOW_MS 60000
/* Snapshots the host keeps: one a second for a minute. */
#define PB_OBSERVE_SAMPLE_MS 1000
#define PB_OBSERVE_SAMPLES 61

/*
 * Is the host ready?  started: start-up finished (config loaded, every
 * part running).  Also needs a writable journal and every connector up.
 * Writes the first reason it is not to why.
 */
bool pb_observe_ready(pb_metrics_t *m, bool started, char *why, size_t why_len);

/*
 * An HTTP page: "/metrics" (only when serve_metrics; 404 otherwise) or
 * "/readyz" (200 "ready" or 503 with the reason).  host->ready is
 * computed here.  Fills *body (malloc'd) and *type; returns the status.
 */
int pb_observe_page(pb_metrics_t *m, pb_metrics_host_t *host, bool started,
                    bool serve_metrics, const char *path, char **body,
                    const char **type);

/*
 * Control answers.  status: the runtime's answer (taken, returned) with
 * each connector entry extended by its numbers and "routes" and
 * "window_s" added; req may carry "window_s".  pb_observe_control answers
 * "flow" and "constraint" (req may carry "window_s").  Callers own the
 * results.
 */
json_t *pb_observe_status(json_t *status, pb_metrics_t *m,
                          const pb_config_t *cfg, json_t *req);
json_t *pb_observe_control(pb_metrics_t *m, const pb_config_t *cfg,
                           const char *cmd, json_t *req);

/* Client side: print a status answer as tables. */
void pb_observe_print_status(json_t *resp, FILE *out);

/* `plugboard ctl top` and `plugboard ctl constraint`; argv[0] is the
 * subcommand.  Return the exit status. */
int pb_cli_top(int argc, char **argv);
int pb_cli_constraint(int argc, char **argv);

/* Ask the host that config_path describes (shared with `map --live`).
 * Prints the reason and returns NULL when it cannot. */
json_t *pb_observe_ask(const char *config_path, json_t *req);

#endif /* PB_OBSERVE_H */
