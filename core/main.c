/*
 * main.c - the plugboard command line.
 *
 *   plugboard run [-c FILE]           start the host
 *   plugboard check [-c FILE]         validate a config, start nothing
 *   plugboard ctl status|top|constraint|dlq|reload|upgrade
 *                                     ask the running host
 *   plugboard map [-c FILE]           the integration map (text, DOT)
 *   plugboard describe PLUGIN         print a plugin's documentation
 *   plugboard new-connector NAME [DIR]  write a connector project scaffold
 *   plugboard plugin-check PATH.so      check a plugin against the contract
 *   plugboard version | help [COMMAND]
 * Every command answers --help.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "control.h"
#include "error.h"
#include "loader.h"
#include "log.h"
#include "map.h"
#include "plugin_check.h"
#include "runtime.h"
#include "scaffold.h"
#include "worker.h"

#define S_DEFAULT_CONFIG "etc/plugboard.cfg"

static const char s_usage[] =
    "usage: plugboard <command> [options]\n"
    "\n"
    "commands:\n"
    "  run [-c FILE]          start the host with FILE (default %s)\n"
    "  check [-c FILE]        validate FILE completely; exit 0 when valid\n"
    "  describe PLUGIN [-p DIR]\n"
    "                         print a connector plugin's settings and events\n"
    "  dlq list|show|replay|drop\n"
    "                         dead letters of the running host (dlq --help)\n"
    "  ctl status|top|constraint|dlq|reload|upgrade\n"
    "                         ask the running host (ctl --help)\n"
    "  map [-c FILE] [--format text|dot|svg] [--live]\n"
    "                         the integration map: connectors and routes\n"
    "  new-connector NAME [DIR]\n"
    "                         write a new connector project (SDK scaffold)\n"
    "  plugin-check PATH.so [--settings FILE] [--cycles N]\n"
    "                         check a plugin against the connector contract\n"
    "  version                print the version\n"
    "  help [COMMAND]         this text, or COMMAND's (also COMMAND --help)\n"
    "\n"
    "PLUGIN is a plugin name searched in DIR (default %s) or a path to a\n"
    ".so file.  The config file is documented in docs/operations.md.\n";

static void
s_print_usage(FILE *out)
{
    fprintf(out, s_usage, S_DEFAULT_CONFIG, pb_runtime_default_plugin_dir());
}

static void
s_print_diag(const pb_diag_t *diag)
{
    for (size_t i = 0; i < diag->count; i++)
        fprintf(stderr, "error: %s\n", diag->messages[i]);
}

/* -c FILE, with PLUGBOARD_CONFIG as the fallback before the default. */
static const char *
s_config_arg(int argc, char **argv)
{
    const char *path = getenv("PLUGBOARD_CONFIG");
    if (!path || !*path)
        path = S_DEFAULT_CONFIG;
    optind = 1;
    int opt;
    while ((opt = getopt(argc, argv, "c:")) != -1) {
        if (opt == 'c')
            path = optarg;
        else
            return NULL;
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
        return NULL;
    }
    return path;
}

static int
s_cmd_check(int argc, char **argv)
{
    const char *path = s_config_arg(argc, argv);
    if (!path) {
        s_print_usage(stderr);
        return 2;
    }
    pb_log_set_level(PB_LOG_WARN);
    pb_diag_t diag;
    pb_diag_init(&diag);
    size_t routes = 0;
    int rc = pb_runtime_check(path, &diag, &routes);
    if (rc != 0) {
        s_print_diag(&diag);
        fprintf(stderr, "%s: %zu error%s\n", path, diag.count,
                diag.count == 1 ? "" : "s");
    } else {
        if (routes == 0)
            fprintf(stderr, "warning: %s: no routes: the host would "
                    "accept webhooks but routes nothing\n", path);
        printf("%s: ok\n", path);
    }
    pb_diag_release(&diag);
    return rc == 0 ? 0 : 1;
}

static int
s_cmd_run(int argc, char **argv)
{
    const char *path = s_config_arg(argc, argv);
    if (!path) {
        s_print_usage(stderr);
        return 2;
    }
    /* every thread inherits this mask; signals are taken only here */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* worker processes are waited for: SIGCHLD must not be left ignored
     * by whatever started the host (children would vanish unwaited) */
    signal(SIGCHLD, SIG_DFL);

    pb_diag_t diag;
    pb_diag_init(&diag);
    pb_runtime_t *rt = pb_runtime_start(path, &diag);
    if (!rt) {
        s_print_diag(&diag);
        pb_diag_release(&diag);
        return 1;
    }
    pb_diag_release(&diag);
    pb_info("main", "plugboard %s running config=%s", PB_VERSION, path);

    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    for (;;) {
        struct pollfd fds[2] = {
            {.fd = sfd, .events = POLLIN},
            {.fd = pb_runtime_control_fd(rt), .events = POLLIN},
        };
        /* a short timeout: housekeeping (retired instances, watch) */
        int ready = poll(fds, 2, 200);
        pb_runtime_tick(rt);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents & POLLIN)
            pb_runtime_serve_control(rt);
        if (!(fds[0].revents & POLLIN))
            continue;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si)
            continue;
        if (si.ssi_signo == SIGHUP) {
            pb_info("main", "SIGHUP received; reloading config=%s", path);
            pb_runtime_reload(rt);
            continue;
        }
        pb_info("main", "signal=%s stopping",
                si.ssi_signo == SIGINT ? "INT" : "TERM");
        break;
    }
    close(sfd);
    pb_runtime_stop(&rt);
    return 0;
}

static const char *
s_type_name(plugboard_setting_type_t t)
{
    switch (t) {
    case PLUGBOARD_SETTING_STRING:
        return "string";
    case PLUGBOARD_SETTING_INT:
        return "integer";
    case PLUGBOARD_SETTING_BOOL:
        return "bool";
    case PLUGBOARD_SETTING_DURATION:
        return "duration";
    }
    return "?";
}

static void
s_print_types(const char *title, const char *const *types)
{
    printf("%s:", title);
    if (!types || !types[0])
        printf(" (none)");
    for (size_t i = 0; types && types[i]; i++)
        printf(" %s", types[i]);
    printf("\n");
}

/* ms as the largest unit that divides it, as config errors show
 * durations: "15m", "1h", "1500ms". */
static const char *
s_duration_text(int64_t ms, char *buf, size_t len)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, len, "%lld%s", (long long)(ms / units[i].ms),
                     units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, "%lldms", (long long)ms);
    return buf;
}

/* One setting of describe's list; width: the longest name's length. */
static void
s_print_setting(const plugboard_setting_spec_t *s, int width)
{
    printf("  %-*s %-8s %s%s", width, s->name, s_type_name(s->type),
           s->required ? "required" : "optional",
           s->secret ? ", secret (env:NAME or file:PATH)" : "");
    if (s->default_value)
        printf(", default %s", s->default_value);
    if ((s->min || s->max) && s->type == PLUGBOARD_SETTING_DURATION) {
        char lo[32], hi[32];
        printf(", range [%s, %s]", s_duration_text(s->min, lo, sizeof lo),
               s_duration_text(s->max, hi, sizeof hi));
    } else if (s->min || s->max) {
        printf(", range [%lld, %lld]", (long long)s->min, (long long)s->max);
    }
    printf("\n  %-*s %s\n", width, "", s->help ? s->help : "");
}

static int
s_cmd_describe(int argc, char **argv)
{
    const char *dir = pb_runtime_default_plugin_dir();
    optind = 1;
    int opt;
    while ((opt = getopt(argc, argv, "p:")) != -1) {
        if (opt == 'p')
            dir = optarg;
        else {
            s_print_usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "usage: plugboard describe PLUGIN [-p DIR]\n");
        return 2;
    }
    char err[512];
    pb_plugin_t *p = pb_plugin_load(argv[optind], &dir, 1, NULL, err,
                                    sizeof err);
    if (!p) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    const plugboard_connector_t *d = pb_plugin_descriptor(p);
    printf("%s %s (ABI %u)\n  %s\n\n", d->name, d->version ? d->version : "?",
           d->abi_version, d->summary ? d->summary : "");
    printf("settings:\n");
    if (!d->settings || !d->settings[0].name)
        printf("  (none)\n");
    int width = 22;
    for (size_t i = 0; d->settings && d->settings[i].name; i++)
        if ((int)strlen(d->settings[i].name) > width)
            width = (int)strlen(d->settings[i].name);
    for (size_t i = 0; d->settings && d->settings[i].name; i++)
        s_print_setting(&d->settings[i], width);
    printf("\n");
    s_print_types("consumes", d->consumes);
    s_print_types("emits", d->emits);
    printf("callbacks:%s%s%s%s%s\n", " open close",
           d->deliver ? " deliver" : "", d->webhook ? " webhook" : "",
           d->run ? " run" : "",
           (d->flags & PLUGBOARD_DELIVER_THREAD_SAFE) ? " (thread-safe)"
                                                       : "");
    if (d->run)
        printf("pull source: polls on a thread of its own; needs isolation "
               "= \"thread\"\n");
    if (d->webhook)
        printf("webhook path: /hooks/<connector name>\n");
    pb_plugin_destroy(&p);
    return 0;
}

/* One subcommand.  Commands of other concerns live beside that concern
 * (e.g. `dlq` in control.c) and are declared in cli.h. */
typedef struct s_command {
    const char *name;
    int (*run)(int argc, char **argv);
} s_command_t;

static int
s_cmd_version(int argc, char **argv)
{
    printf("plugboard %s (connector ABI %d)\n", PB_VERSION,
           PLUGBOARD_ABI_VERSION);
    return 0;
}

/* --help of the commands that do not answer it themselves. */
typedef struct s_help {
    const char *name;
    const char *text;
} s_help_t;

static const s_help_t s_helps[] = {
    {"run", "usage: plugboard run [-c FILE]\n"
            "\n"
            "Start the host: validate FILE completely, load the connectors,\n"
            "open the journal and the HTTP listener, and route events until\n"
            "SIGINT or SIGTERM, which stop intake and drain deliveries in\n"
            "flight.  FILE defaults to $PLUGBOARD_CONFIG, then\n"
            "etc/plugboard.cfg.  Logs go to stderr, one key=value line each.\n"},
    {"check", "usage: plugboard check [-c FILE]\n"
              "\n"
              "Validate FILE as `run` would (syntax, every setting of every\n"
              "connector against its plugin, routes against what connectors\n"
              "consume and emit) and start nothing.  Prints every error with\n"
              "file and line; exit status 0 when valid, 1 when not.  A valid\n"
              "file without routes gets a warning (it routes nothing).\n"},
    {"describe", "usage: plugboard describe PLUGIN [-p DIR]\n"
                 "\n"
                 "Print a connector plugin's documentation: its settings\n"
                 "(type, default, range, help), the event types it consumes\n"
                 "and emits, and its callbacks.  PLUGIN is a name looked up\n"
                 "in DIR (default: the host's plugin directory) or a path to\n"
                 "a .so file.\n"},
    {"version", "usage: plugboard version\n"
                "\n"
                "Print the host's version and the connector ABI it speaks.\n"},
    {"help", "usage: plugboard help [COMMAND]\n"
             "\n"
             "List the commands, or print COMMAND's help.\n"},
    {"new-connector", pb_scaffold_help},
    {"plugin-check", pb_plugin_check_help},
};

static const char *
s_help_text(const char *name)
{
    for (size_t i = 0; i < sizeof s_helps / sizeof *s_helps; i++)
        if (strcmp(s_helps[i].name, name) == 0)
            return s_helps[i].text;
    return NULL;
}

static const s_command_t *s_find_command(const char *name);

static int
s_cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        s_print_usage(stdout);
        return 0;
    }
    const char *text = s_help_text(argv[1]);
    if (text) {
        fputs(text, stdout);
        return 0;
    }
    const s_command_t *cmd = s_find_command(argv[1]);
    if (!cmd) {
        fprintf(stderr, "error: unknown command '%s'\n", argv[1]);
        return 2;
    }
    char *args[] = {argv[1], "--help", NULL};
    return cmd->run(2, args);
}

static const s_command_t s_commands[] = {
    {"run", s_cmd_run},
    {"check", s_cmd_check},
    {"describe", s_cmd_describe},
    {"dlq", pb_cli_dlq},
    {"ctl", pb_cli_ctl},
    {"map", pb_cli_map},
    {"worker", pb_worker_main},
    {"new-connector", pb_scaffold_cmd},
    {"plugin-check", pb_plugin_check_cmd},
    {"version", s_cmd_version},
    {"--version", s_cmd_version},
    {"help", s_cmd_help},
    {"--help", s_cmd_help},
    {"-h", s_cmd_help},
};

static const s_command_t *
s_find_command(const char *name)
{
    for (size_t i = 0; i < sizeof s_commands / sizeof *s_commands; i++)
        if (strcmp(name, s_commands[i].name) == 0)
            return &s_commands[i];
    return NULL;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        s_print_usage(stderr);
        return 2;
    }
    const s_command_t *cmd = s_find_command(argv[1]);
    if (!cmd) {
        fprintf(stderr, "error: unknown command '%s'\n", argv[1]);
        s_print_usage(stderr);
        return 2;
    }
    /* COMMAND --help: from the table above, else the command answers */
    const char *help = s_help_text(cmd->name);
    if (help && argc > 2 &&
        (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
        fputs(help, stdout);
        return 0;
    }
    return cmd->run(argc - 1, argv + 1);
}
