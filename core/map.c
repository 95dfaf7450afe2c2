/*
 * map.c - the integration map as text, Graphviz DOT or SVG (DOT drawn by
 * Graphviz's `dot`, run directly, without a shell), from the config model
 * and, with --live, the running host's numbers.
 */
#include "map.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "observe.h"

#define S_WRAP 44 /* label line width in DOT */

/* ------------------------------------------------------------------ */
/* live numbers                                                        */
/* ------------------------------------------------------------------ */

static json_t *
s_live_conn(json_t *live, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(live, "connectors"), i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            return c;
    }
    return NULL;
}

static json_t *
s_live_hop(json_t *live, const char *route, const char *connector)
{
    size_t i, k;
    json_t *r, *h;
    json_array_foreach(json_object_get(live, "routes"), i, r)
    {
        const char *n = json_string_value(json_object_get(r, "name"));
        if (!n || strcmp(n, route) != 0)
            continue;
        json_array_foreach(json_object_get(r, "hops"), k, h)
        {
            const char *c = json_string_value(json_object_get(h, "connector"));
            if (c && strcmp(c, connector) == 0)
                return h;
        }
    }
    return NULL;
}

static bool
s_is_constraint(json_t *constraint, const char *route, const char *connector)
{
    json_t *c = json_object_get(constraint, "constraint");
    const char *r = json_string_value(json_object_get(c, "route"));
    const char *n = json_string_value(json_object_get(c, "connector"));
    return r && n && strcmp(r, route) == 0 && strcmp(n, connector) == 0;
}

static double
s_num(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* "8.3/s in, 5.4/s out, 28 pending" */
static void
s_hop_numbers(json_t *h, char *out, size_t len)
{
    snprintf(out, len, "%.1f/s in, %.1f/s out, %lld pending",
             s_num(h, "in_rate"), s_num(h, "out_rate"),
             (long long)json_integer_value(json_object_get(h, "pending")));
}

/* "plugin stripe" and, live, ", 55% busy" */
static void
s_conn_numbers(json_t *c, char *out, size_t len)
{
    snprintf(out, len, "%.0f%% busy, %lld pending%s",
             100 * s_num(c, "utilisation"),
             (long long)json_integer_value(json_object_get(c, "pending")),
             json_is_false(json_object_get(c, "up")) ? ", DOWN" : "");
}

/* "250ms", "1s", "15m", "2h", "7d" (the config's own units) */
static const char *
s_dur(int64_t ms, char *out, size_t len)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (ms >= units[i].ms && ms % units[i].ms == 0) {
            snprintf(out, len, "%lld%s", (long long)(ms / units[i].ms),
                     units[i].unit);
            return out;
        }
    snprintf(out, len, "%lldms", (long long)ms);
    return out;
}

static void
s_join(char *const *v, size_t n, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o < len; i++) {
        int w = snprintf(out + o, len - o, "%s%s", i ? ", " : "", v[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/* The tool behind each plugin this tree ships, so the map reads as a
 * picture of the company's tools without loading any plugin; another
 * plugin shows its name only. */
static const char *
s_tool(const char *plugin)
{
    static const struct {
        const char *plugin, *tool;
    } tools[] = {
        {"stripe", "Stripe (payments)"},
        {"hubspot", "HubSpot (CRM)"},
        {"zendesk", "Zendesk (support desk)"},
        {"smtp", "e-mail over SMTP, SendGrid and Mailgun events"},
        {"file", "JSON-lines outbox file"},
        {"maildir", "Maildir (e-mail on disk)"},
    };
    for (size_t i = 0; i < sizeof tools / sizeof *tools; i++)
        if (strcmp(tools[i].plugin, plugin) == 0)
            return tools[i].tool;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* text                                                                */
/* ------------------------------------------------------------------ */

void
pb_map_text(const pb_config_t *cfg, json_t *live, json_t *constraint, FILE *out)
{
    char buf[512];
    fprintf(out, "integration map of %s%s\n\nconnectors\n", cfg->path,
            live ? " (live)" : "");
    for (size_t i = 0; i < cfg->connector_count; i++) {
        const pb_connector_conf_t *c = &cfg->connectors[i];
        const char *tool = s_tool(c->plugin);
        fprintf(out, "  %-20s plugin %s%s%s", c->name, c->plugin,
                tool ? ": " : "", tool ? tool : "");
        json_t *lc = live ? s_live_conn(live, c->name) : NULL;
        if (lc) {
            s_conn_numbers(lc, buf, sizeof buf);
            fprintf(out, "  [%s]", buf);
        }
        fprintf(out, "\n");
    }
    fprintf(out, "\nroutes\n");
    for (size_t i = 0; i < cfg->route_count; i++) {
        const pb_route_conf_t *r = &cfg->routes[i];
        char when[512], to[512];
        s_join(r->when, r->when_count, when, sizeof when);
        s_join(r->to, r->to_count, to, sizeof to);
        fprintf(out, "  %s: %s --[%s]--> %s\n", r->name, r->from, when, to);
        fprintf(out, "      why:        %s\n", r->why ? r->why : "");
        fprintf(out, "      owner:      %s\n", r->owner ? r->owner : "");
        if (r->on_failure)
            fprintf(out, "      on failure: %s\n", r->on_failure);
        if (r->notify)
            fprintf(out, "      notify:     %s\n", r->notify);
        char lo[32], hi[32];
        fprintf(out, "      retry:      %d attempts, backoff %s .. %s\n",
                r->retry.attempts, s_dur(r->retry.initial_ms, lo, sizeof lo),
                s_dur(r->retry.max_ms, hi, sizeof hi));
        for (size_t t = 0; live && t < r->to_count; t++) {
            json_t *h = s_live_hop(live, r->name, r->to[t]);
            if (!h)
                continue;
            s_hop_numbers(h, buf, sizeof buf);
            fprintf(out, "      -> %-14s %s%s\n", r->to[t], buf,
                    s_is_constraint(constraint, r->name, r->to[t])
                        ? "   <== the constraint"
                        : "");
        }
    }
    if (cfg->route_count == 0)
        fprintf(out, "  (none)\n");
}

/* ------------------------------------------------------------------ */
/* DOT                                                                 */
/* ------------------------------------------------------------------ */

/* Write s as the inside of a DOT string: quotes and backslashes escaped,
 * control characters dropped, wrapped at S_WRAP on spaces with "\n". */
static void
s_dot_text(FILE *out, const char *s)
{
    size_t col = 0;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == ' ' && col >= S_WRAP) {
            fputs("\\n", out);
            col = 0;
            continue;
        }
        if (ch == '"' || ch == '\\')
            fputc('\\', out);
        if (ch < 0x20 || ch == 0x7f)
            ch = ' ';
        fputc(ch, out);
        if ((ch & 0xC0) != 0x80) /* count characters, not UTF-8 bytes */
            col++;
    }
}

static void
s_dot_line(FILE *out, const char *prefix, const char *text)
{
    fputs(prefix, out);
    s_dot_text(out, text);
    fputs("\\n", out);
}

static void
s_dot_nodes(const pb_config_t *cfg, json_t *live, FILE *out)
{
    char buf[256];
    for (size_t i = 0; i < cfg->connector_count; i++) {
        const pb_connector_conf_t *c = &cfg->connectors[i];
        fprintf(out, "  \"");
        s_dot_text(out, c->name);
        fprintf(out, "\" [label=\"");
        s_dot_line(out, "", c->name);
        s_dot_line(out, "plugin: ", c->plugin);
        if (s_tool(c->plugin))
            s_dot_line(out, "tool: ", s_tool(c->plugin));
        json_t *lc = live ? s_live_conn(live, c->name) : NULL;
        if (lc) {
            s_conn_numbers(lc, buf, sizeof buf);
            s_dot_text(out, buf);
        }
        fprintf(out, "\"%s];\n",
                lc && json_is_false(json_object_get(lc, "up")) ? ", color=red"
                                                               : "");
    }
}

static void
s_dot_edge(const pb_route_conf_t *r, const char *to, json_t *live,
           json_t *constraint, FILE *out)
{
    char when[512], buf[256];
    s_join(r->when, r->when_count, when, sizeof when);
    fprintf(out, "  \"");
    s_dot_text(out, r->from);
    fprintf(out, "\" -> \"");
    s_dot_text(out, to);
    fprintf(out, "\" [label=\"");
    s_dot_line(out, "route ", r->name);
    s_dot_line(out, "", when);
    s_dot_line(out, "why: ", r->why);
    s_dot_line(out, "owner: ", r->owner);
    if (r->on_failure)
        s_dot_line(out, "on failure: ", r->on_failure);
    if (r->notify)
        s_dot_line(out, "notify: ", r->notify);
    json_t *h = live ? s_live_hop(live, r->name, to) : NULL;
    if (h) {
        s_hop_numbers(h, buf, sizeof buf);
        s_dot_line(out, "", buf);
    }
    bool hot = s_is_constraint(constraint, r->name, to);
    fprintf(out, "\"%s];\n",
            hot ? ", color=red, fontcolor=red, penwidth=3" : "");
}

void
pb_map_dot(const pb_config_t *cfg, json_t *live, json_t *constraint, FILE *out)
{
    fprintf(out, "digraph plugboard {\n"
                 "  rankdir=LR;\n"
                 "  label=\"");
    s_dot_text(out, cfg->path);
    fprintf(out,
            "%s\";\n"
            "  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n"
            "  edge [fontname=\"Helvetica\", fontsize=10];\n",
            live ? " (live)" : "");
    s_dot_nodes(cfg, live, out);
    for (size_t i = 0; i < cfg->route_count; i++)
        for (size_t t = 0; t < cfg->routes[i].to_count; t++)
            s_dot_edge(&cfg->routes[i], cfg->routes[i].to[t], live, constraint,
                       out);
    fprintf(out, "}\n");
}

/* ------------------------------------------------------------------ */
/* the command                                                         */
/* ------------------------------------------------------------------ */

const char pb_map_help[] =
    "usage: plugboard map [-c FILE] [--format text|dot|svg] [--live]\n"
    "\n"
    "Print the integration map of FILE: each connector with its plugin\n"
    "(and, for the bundled ones, the tool it connects),\n"
    "and each route as an edge from its source to every destination,\n"
    "labelled with its event types, why, owner, on_failure and notify.\n"
    "Reads only the config: no plugin is loaded, no host needs to run.\n"
    "--live adds the running host's rates, backlogs and utilisation and\n"
    "marks the hop `plugboard ctl constraint` names.  --format dot writes\n"
    "Graphviz DOT; --format svg draws it with Graphviz's dot (Debian\n"
    "package 'graphviz'), which must be on the PATH.\n";

/* The first executable `dot` on the PATH into path; false when none. */
static bool
s_find_dot(char *path, size_t len)
{
    const char *dirs = getenv("PATH");
    if (!dirs || !*dirs)
        dirs = "/usr/bin:/bin";
    while (*dirs) {
        size_t n = strcspn(dirs, ":");
        if (n > 0 &&
            (size_t)snprintf(path, len, "%.*s/dot", (int)n, dirs) < len &&
            access(path, X_OK) == 0)
            return true;
        dirs += n;
        if (*dirs == ':')
            dirs++;
    }
    return false;
}

/* Write the DOT map through `dot -Tsvg` to stdout; returns the exit
 * status for the command. */
static int
s_draw_svg(const pb_config_t *cfg, json_t *live, json_t *constraint,
           const char *config_path)
{
    char dot[PATH_MAX];
    if (!s_find_dot(dot, sizeof dot)) {
        fprintf(stderr,
                "error: cannot draw SVG: Graphviz's 'dot' is not on the PATH "
                "(Debian package 'graphviz'); install it, or write DOT and "
                "draw it where Graphviz is:\n    plugboard map -c %s "
                "--format dot%s > map.dot\n",
                config_path, live ? " --live" : "");
        return 1;
    }
    int fds[2];
    if (pipe(fds) != 0) {
        fprintf(stderr, "error: cannot run '%s': %s\n", dot, strerror(errno));
        return 1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "error: cannot run '%s': %s\n", dot, strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return 1;
    }
    if (pid == 0) {
        dup2(fds[0], STDIN_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(dot, "dot", "-Tsvg", (char *)NULL);
        fprintf(stderr, "error: cannot run '%s': %s\n", dot, strerror(errno));
        _exit(127);
    }
    close(fds[0]);
    /* dot may exit early: its status says why, not a SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    FILE *to = fdopen(fds[1], "w");
    if (to) {
        pb_map_dot(cfg, live, constraint, to);
        fclose(to);
    } else {
        close(fds[1]);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "error: '%s -Tsvg' failed (%s %d)\n", dot,
                WIFEXITED(st) ? "exit" : "signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return 1;
    }
    return 0;
}

/* Ask the running host for status and constraint; false on failure. */
static bool
s_fetch_live(const char *path, json_t **live, json_t **constraint)
{
    json_t *req = json_pack("{s:s}", "cmd", "status");
    *live = pb_observe_ask(path, req);
    json_decref(req);
    if (!*live || !json_is_true(json_object_get(*live, "ok")))
        return false;
    req = json_pack("{s:s}", "cmd", "constraint");
    *constraint = pb_observe_ask(path, req);
    json_decref(req);
    return true; /* no constraint answer: the map is still useful */
}

int
pb_cli_map(int argc, char **argv)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"format", required_argument, NULL, 'f'},
        {"live", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("PLUGBOARD_CONFIG");
    if (!path || !*path)
        path = "etc/plugboard.cfg";
    const char *format = "text";
    bool live = false;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:f:lh", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'f':
            format = optarg;
            break;
        case 'l':
            live = true;
            break;
        case 'h':
            fputs(pb_map_help, stdout);
            return 0;
        default:
            fputs(pb_map_help, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (strcmp(format, "text") != 0 && strcmp(format, "dot") != 0 &&
        strcmp(format, "svg") != 0) {
        fprintf(stderr, "error: --format '%s': expected text, dot or svg\n",
                format);
        return 2;
    }
    pb_diag_t diag;
    pb_diag_init(&diag);
    pb_config_t *cfg = pb_config_load(path, &diag);
    for (size_t i = 0; i < diag.count; i++)
        fprintf(stderr, "error: %s\n", diag.messages[i]);
    pb_diag_release(&diag);
    if (!cfg)
        return 1;
    json_t *status = NULL, *constraint = NULL;
    int rc = 0;
    if (live && !s_fetch_live(path, &status, &constraint)) {
        rc = 1;
    } else if (strcmp(format, "svg") == 0) {
        rc = s_draw_svg(cfg, status, constraint, path);
    } else if (strcmp(format, "dot") == 0) {
        pb_map_dot(cfg, status, constraint, stdout);
    } else {
        pb_map_text(cfg, status, constraint, stdout);
    }
    json_decref(status);
    json_decref(constraint);
    pb_config_destroy(&cfg);
    return rc;
}
