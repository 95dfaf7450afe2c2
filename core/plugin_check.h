/*
 * plugin_check.h - `plugboard plugin-check`: the conformance checker for
 * connector plugins.
 *
 * It loads a plugin and runs every check a connector must pass before it
 * meets real traffic, printing one line per check (ok / FAIL / skip, plus
 * warnings):
 *
 *   abi          the descriptor's ABI is the host's
 *   size         the descriptor is at least ABI 1's size
 *   metadata     name, version, summary; every setting typed and
 *                documented, defaults valid; consumes/emits are canonical
 *                types or documented patterns; callbacks match them
 *   load         the host's loader accepts it
 *   settings     unknown and wrong-typed settings are rejected by the host
 *                before open (no plugin code runs)
 *   open         it opens with the --settings given, and closes
 *   lifecycle    100 open/close cycles leak no heap, descriptors or threads
 *   samples      every consumed canonical type (docs/events.md example)
 *                gets a valid result within the delivery deadline
 *   malformed    events with missing or wrong-typed fields are answered
 *   webhook      malformed webhook requests are answered; only declared
 *                types are emitted
 *   in-flight    stop with deliveries in flight: they return, close works
 *   threads      restricted host API calls come only from host threads
 *   settings-read  only declared settings are read, with their own types
 *
 * Everything that runs plugin code runs in a forked child, one per check
 * group, with a watchdog on each call: a crash or a hang fails that check
 * with what was being done, and the checker carries on.
 */
#ifndef PB_PLUGIN_CHECK_H
#define PB_PLUGIN_CHECK_H

#include <stdbool.h>
#include <stdio.h>

/* How many open/close cycles `lifecycle` measures, and the heap growth
 * over them that counts as a leak. */
#define PB_CHECK_CYCLES 100
#define PB_CHECK_HEAP_BOUND 1024

typedef struct pb_check_options {
    const char *plugin;        /* path to the .so, or a plugin name */
    const char *settings_path; /* libconfig file: settings = {...}; or NULL */
    int cycles;                /* 0 = PB_CHECK_CYCLES */
    bool verbose;              /* show progress and the plugin's logs */
    FILE *out;                 /* report; NULL = stdout */
} pb_check_options_t;

/*
 * Run every check and print the report.  Returns the number of failed
 * checks (0: the plugin conforms), or a negative code when the checker
 * could not start (unreadable settings file: the message is printed).
 */
int pb_plugin_check(const pb_check_options_t *opt);

/* The command: plugboard plugin-check PATH.so [--settings FILE] ...
 * Exit status 0 when every check passed, 1 on any failure, 2 on usage. */
int pb_plugin_check_cmd(int argc, char **argv);

/* Its --help text. */
extern const char pb_plugin_check_help[];

#endif /* PB_PLUGIN_CHECK_H */
