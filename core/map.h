/*
 * map.h - `plugboard map`: the integration map drawn from the config.
 *
 * Connectors (with the plugin each runs) are nodes; every (route,
 * destination) pair is an edge from the route's source, labelled with the
 * route's name, event types, why, owner, on_failure and notify.  Built
 * from pb_config_load alone, so no plugin is loaded and nothing needs to
 * run.  With --live the running host's rates, backlogs and utilisation
 * (the control socket's "status") are added, and the hop `ctl constraint`
 * names is drawn in red.  Formats: text (default), dot (Graphviz), svg
 * (the dot output drawn by Graphviz's `dot -Tsvg`, found on the PATH and
 * run without a shell; without it the command says so and fails).
 */
#ifndef PB_MAP_H
#define PB_MAP_H

#include <jansson.h>
#include <stdio.h>

#include "config.h"

/*
 * Write the map of cfg to out.  live is the host's status answer (with
 * "connectors" and "routes") or NULL; constraint the "constraint" answer
 * or NULL.  Both borrowed.
 */
void pb_map_text(const pb_config_t *cfg, json_t *live, json_t *constraint,
                 FILE *out);
void pb_map_dot(const pb_config_t *cfg, json_t *live, json_t *constraint,
                FILE *out);

/* `plugboard map [-c FILE] [--format text|dot|svg] [--live]`; argv[0] is
 * "map".  Returns the exit status. */
int pb_cli_map(int argc, char **argv);

extern const char pb_map_help[];

#endif /* PB_MAP_H */
