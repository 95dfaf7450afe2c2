/*
 * observe.c - /metrics and /readyz, the status/flow/constraint answers,
 * and the ctl status / top / constraint commands that print them.
 */
#include "observe.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "constraint.h"
#include "control.h"
#include "error.h"

/* ------------------------------------------------------------------ */
/* host side                                                           */
/* ------------------------------------------------------------------ */

bool
pb_observe_ready(pb_metrics_t *m, bool started, char *why, size_t why_len)
{
    char name[128];
    if (!started) {
        snprintf(why, why_len, "starting");
        return false;
    }
    if (!pb_metrics_journal_writable(m)) {
        snprintf(why, why_len, "the journal is not writable");
        return false;
    }
    if (!pb_metrics_all_up(m, name, sizeof name)) {
        snprintf(why, why_len, "connector '%s' is not running", name);
        return false;
    }
    snprintf(why, why_len, "ready");
    return true;
}

int
pb_observe_page(pb_metrics_t *m, pb_metrics_host_t *host, bool started,
                bool serve_metrics, const char *path, char **body,
                const char **type)
{
    char why[256];
    host->ready = pb_observe_ready(m, started, why, sizeof why);
    *type = "text/plain; charset=utf-8";
    if (strcmp(path, "/readyz") == 0) {
        size_t n = strlen(why) + 2;
        if ((*body = malloc(n)))
            snprintf(*body, n, "%s\n", why);
        return host->ready ? 200 : 503;
    }
    if (strcmp(path, "/metrics") == 0 && serve_metrics) {
        *body = pb_metrics_render(m, host);
        if (!*body)
            return 500;
        *type = PB_METRICS_CONTENT_TYPE;
        return 200;
    }
    *body = strdup("not found\n");
    return 404;
}

/* "window_s" of a request, in ms, or def. */
static int64_t
s_window(json_t *req, int64_t def)
{
    json_t *w = req ? json_object_get(req, "window_s") : NULL;
    if (!json_is_number(w))
        return def;
    double s = json_number_value(w);
    if (s < 1)
        s = 1;
    if (s > 3600)
        s = 3600;
    return (int64_t)(s * 1000);
}

/* Flow or constraint JSON over the request's window; NULL on failure. */
static json_t *
s_over_window(pb_metrics_t *m, const pb_config_t *cfg, json_t *req, int64_t def,
              bool constraint)
{
    pb_metrics_snap_t old, now;
    int rc = pb_metrics_window(m, s_window(req, def), &old, &now);
    if (rc != 0 && rc != PB_ENOENT)
        return NULL;
    json_t *out = constraint ? pb_constraint_json(&old, &now, cfg)
                             : pb_flow_json(&old, &now, cfg);
    pb_metrics_snap_release(&old);
    pb_metrics_snap_release(&now);
    return out;
}

json_t *
pb_observe_status(json_t *status, pb_metrics_t *m, const pb_config_t *cfg,
                  json_t *req)
{
    if (!status || !m)
        return status;
    json_t *flow =
        s_over_window(m, cfg, req, PB_OBSERVE_STATUS_WINDOW_MS, false);
    if (!flow)
        return status;
    json_t *fconns = json_object_get(flow, "connectors");
    size_t i, k;
    json_t *c, *f;
    json_array_foreach(json_object_get(status, "connectors"), i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_array_foreach(fconns, k, f)
        {
            const char *fn = json_string_value(json_object_get(f, "name"));
            if (name && fn && strcmp(name, fn) == 0)
                json_object_update_missing(c, f);
        }
    }
    json_object_set(status, "routes", json_object_get(flow, "routes"));
    json_object_set(status, "window_s", json_object_get(flow, "window_s"));
    json_decref(flow);
    return status;
}

json_t *
pb_observe_control(pb_metrics_t *m, const pb_config_t *cfg, const char *cmd,
                   json_t *req)
{
    bool constraint = strcmp(cmd, "constraint") == 0;
    if (!constraint && strcmp(cmd, "flow") != 0)
        return pb_control_error("unknown command '%s'", cmd);
    if (!m)
        return pb_control_error("this host keeps no metrics");
    json_t *out = s_over_window(m, cfg, req,
                                constraint ? PB_OBSERVE_CONSTRAINT_WINDOW_MS
                                           : PB_OBSERVE_STATUS_WINDOW_MS,
                                constraint);
    if (!out)
        return pb_control_error("out of memory");
    json_object_set_new(out, "ok", json_true());
    return out;
}

/* ------------------------------------------------------------------ */
/* printing                                                            */
/* ------------------------------------------------------------------ */

static const char *
s_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static long long
s_int(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static double
s_num(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* "0s", "5.2s", "3m10s", "2h05m" */
static const char *
s_age(double s, char *buf, size_t len)
{
    if (s < 60)
        snprintf(buf, len, s < 10 && s > 0 ? "%.1fs" : "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, len, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
    return buf;
}

static const char *
s_state(json_t *c)
{
    const char *st = s_str(c, "state");
    json_t *up = json_object_get(c, "up");
    if (json_is_false(up))
        return "down";
    return *st ? st : "running";
}

static void
s_print_connectors(json_t *resp, FILE *out)
{
    fprintf(out, "%-16s %-10s %-8s %5s %7s %7s %7s %5s %7s %9s %7s %5s %8s\n",
            "CONNECTOR", "PLUGIN", "STATE", "UTIL", "IN/s", "OUT/s", "PENDING",
            "INFL", "OLDEST", "DELIVERED", "RETRIED", "DEAD", "EMITTED");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(resp, "connectors"), i, c)
    {
        char age[32];
        fprintf(out,
                "%-16s %-10s %-8s %4.0f%% %7.1f %7.1f %7lld %5lld %7s %9lld "
                "%7lld %5lld %8lld\n",
                s_str(c, "name"), s_str(c, "plugin"), s_state(c),
                100 * s_num(c, "utilisation"), s_num(c, "in_rate"),
                s_num(c, "out_rate"), s_int(c, "pending"), s_int(c, "inflight"),
                s_age(s_num(c, "oldest_pending_s"), age, sizeof age),
                s_int(c, "delivered"), s_int(c, "retried"), s_int(c, "dead"),
                s_int(c, "emitted"));
    }
    /* api->auth_failed, until a delivery goes through again */
    bool first = true;
    json_array_foreach(json_object_get(resp, "connectors"), i, c)
    {
        json_t *a = json_object_get(c, "auth_failed");
        if (!a)
            continue;
        char age[32];
        double ago = (double)(time(NULL) * 1000LL - s_int(a, "since")) / 1000;
        fprintf(out, "%s%s: credentials refused %lld time%s in %s: %s\n",
                first ? "\n" : "", s_str(c, "name"), s_int(a, "refusals"),
                s_int(a, "refusals") == 1 ? "" : "s",
                s_age(ago > 0 ? ago : 0, age, sizeof age), s_str(a, "reason"));
        first = false;
    }
}

static void
s_print_routes(json_t *resp, FILE *out)
{
    json_t *routes = json_object_get(resp, "routes");
    if (json_array_size(routes) == 0)
        return;
    fprintf(out, "\n%-26s %-14s %7s %7s %7s %5s %7s %9s %7s %6s %5s %8s %8s\n",
            "ROUTE", "-> CONNECTOR", "IN/s", "OUT/s", "PENDING", "INFL",
            "OLDEST", "DELIVERED", "RETRIED", "REJECT", "DEAD", "P50(ms)",
            "P99(ms)");
    size_t i, k;
    json_t *r, *h;
    json_array_foreach(routes, i, r)
    {
        json_array_foreach(json_object_get(r, "hops"), k, h)
        {
            char age[32], to[80];
            snprintf(to, sizeof to, "-> %s", s_str(h, "connector"));
            fprintf(out,
                    "%-26s %-14s %7.1f %7.1f %7lld %5lld %7s %9lld %7lld "
                    "%6lld %5lld %8.1f %8.1f\n",
                    k == 0 ? s_str(r, "name") : "", to, s_num(h, "in_rate"),
                    s_num(h, "out_rate"), s_int(h, "pending"),
                    s_int(h, "inflight"),
                    s_age(s_num(h, "oldest_pending_s"), age, sizeof age),
                    s_int(h, "delivered"), s_int(h, "retried"),
                    s_int(h, "rejected"), s_int(h, "dead"), s_num(h, "p50_ms"),
                    s_num(h, "p99_ms"));
        }
    }
}

void
pb_observe_print_status(json_t *resp, FILE *out)
{
    fprintf(out, "plugboard %s", s_str(resp, "version"));
    if (json_object_get(resp, "window_s"))
        fprintf(out, "  (rates over the last %.0f s)", s_num(resp, "window_s"));
    fprintf(out, "\n\n");
    s_print_connectors(resp, out);
    s_print_routes(resp, out);
    json_t *t = json_object_get(resp, "totals");
    if (t) {
        fprintf(out, "\ntotals:");
        const char *key;
        json_t *v;
        json_object_foreach(t, key, v)
            fprintf(out, " %s=%lld", key, (long long)json_integer_value(v));
        fprintf(out, "\n");
    }
}

static void
s_print_constraint(json_t *resp, FILE *out)
{
    json_t *c = json_object_get(resp, "constraint");
    if (!json_is_true(json_object_get(resp, "constrained")) || !c) {
        fprintf(out, "%s\n", s_str(resp, "message"));
        return;
    }
    json_t *e = json_object_get(c, "evidence");
    char age[32];
    fprintf(out, "constraint: %s (%s)\n", s_str(c, "hop"), s_str(c, "cause"));
    fprintf(out, "  evidence over the last %.1f s:\n", s_num(e, "window_s"));
    fprintf(out, "    arrivals     %.2f/s, completions %.2f/s\n",
            s_num(e, "arrival_rate"), s_num(e, "completion_rate"));
    fprintf(out, "    utilisation  %.0f%% of %lld worker%s\n",
            100 * s_num(e, "utilisation"), s_int(e, "workers"),
            s_int(e, "workers") == 1 ? "" : "s");
    fprintf(out,
            "    backlog      %lld -> %lld (%+.2f/s), oldest pending %s, "
            "%lld in flight\n",
            s_int(e, "backlog_start"), s_int(e, "backlog_end"),
            s_num(e, "backlog_trend"),
            s_age(s_num(e, "oldest_pending_s"), age, sizeof age),
            s_int(e, "inflight"));
    fprintf(out,
            "    retries      %.0f%% of attempts (throttled %.0f%%, timed "
            "out %.0f%%)\n",
            100 * s_num(e, "retry_share"), 100 * s_num(e, "throttled_share"),
            100 * s_num(e, "timeout_share"));
    if (*s_str(c, "route")) {
        fprintf(out, "  route %s\n", s_str(c, "route"));
        fprintf(out, "    why:         %s\n", s_str(c, "why"));
        fprintf(out, "    owner:       %s\n", s_str(c, "owner"));
        if (*s_str(c, "on_failure"))
            fprintf(out, "    on failure:  %s\n", s_str(c, "on_failure"));
        if (*s_str(c, "notify"))
            fprintf(out, "    notify:      %s\n", s_str(c, "notify"));
    }
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(c, "routes"), i, r)
    {
        if (strcmp(s_str(r, "route"), s_str(c, "route")) != 0)
            fprintf(out,
                    "  also through it: route %s (pending %lld; owner "
                    "%s)\n",
                    s_str(r, "route"), s_int(r, "pending"), s_str(r, "owner"));
    }
    fprintf(out, "  suggestion: %s\n", s_str(c, "suggestion"));
}

/* ------------------------------------------------------------------ */
/* the commands                                                        */
/* ------------------------------------------------------------------ */

#define S_CLIENT_TIMEOUT_MS 15000

json_t *
pb_observe_ask(const char *config_path, json_t *req)
{
    pb_diag_t diag;
    pb_diag_init(&diag);
    pb_config_t *cfg = pb_config_load(config_path, &diag);
    if (!cfg) {
        for (size_t i = 0; i < diag.count; i++)
            fprintf(stderr, "error: %s\n", diag.messages[i]);
        pb_diag_release(&diag);
        return NULL;
    }
    pb_diag_release(&diag);
    char path[4200], err[1024] = "";
    pb_control_path(cfg->run_dir, path, sizeof path);
    pb_config_destroy(&cfg);
    json_t *resp =
        pb_control_request(path, req, S_CLIENT_TIMEOUT_MS, err, sizeof err);
    if (!resp)
        fprintf(stderr, "error: %s\n", err);
    else if (!json_is_true(json_object_get(resp, "ok")))
        fprintf(stderr, "error: %s\n", s_str(resp, "error"));
    return resp;
}

/* The longest window the kept snapshots cover. */
#define S_MAX_WINDOW_MS                                                    \
    ((PB_OBSERVE_SAMPLES - 1) * PB_OBSERVE_SAMPLE_MS)

typedef struct s_opts {
    const char *config;
    bool json;
    double window_s; /* 0: the host's default */
    long count;      /* top: refreshes, 0 = until interrupted */
} opts_t;

static int
s_options(int argc, char **argv, opts_t *o, const char *usage)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"window", required_argument, NULL, 'w'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->config = getenv("PLUGBOARD_CONFIG");
    if (!o->config || !*o->config)
        o->config = "etc/plugboard.cfg";
    optind = 1;
    int opt;
    int64_t ms;
    while ((opt = getopt_long(argc, argv, "c:jw:n:h", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o->config = optarg;
            break;
        case 'j':
            o->json = true;
            break;
        case 'w':
            if (pb_parse_duration(optarg, &ms) != 0 || ms < 1000 ||
                ms > S_MAX_WINDOW_MS) {
                fprintf(stderr,
                        "error: --window '%s': expected a duration from 1s "
                        "to %ds (the host keeps %d s of snapshots), such as "
                        "\"30s\"\n",
                        optarg, S_MAX_WINDOW_MS / 1000, S_MAX_WINDOW_MS / 1000);
                return 2;
            }
            o->window_s = (double)ms / 1000.0;
            break;
        case 'n':
            o->count = strtol(optarg, NULL, 10);
            break;
        case 'h':
            fputs(usage, stdout);
            return 1;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
        fputs(usage, stderr);
        return 2;
    }
    return 0;
}

static json_t *
s_request(const char *cmd, const opts_t *o)
{
    json_t *req = json_pack("{s:s}", "cmd", cmd);
    if (req && o->window_s > 0)
        json_object_set_new(req, "window_s", json_real(o->window_s));
    return req;
}

static const char s_constraint_usage[] =
    "usage: plugboard ctl constraint [-c FILE] [--window DURATION] [--json]\n"
    "\n"
    "Name the hop (route -> connector) that limits throughput now, from\n"
    "rates measured over the window (default and at most 60s): the\n"
    "connector that is busiest, whose backlog grows, or whose attempts go\n"
    "to retries; with its evidence, the route's why, owner and on_failure,\n"
    "and a suggestion.  Says so when nothing is constrained.\n";

int
pb_cli_constraint(int argc, char **argv)
{
    opts_t o;
    int rc = s_options(argc, argv, &o, s_constraint_usage);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    json_t *req = s_request("constraint", &o);
    json_t *resp = pb_observe_ask(o.config, req);
    json_decref(req);
    if (!resp)
        return 1;
    rc = json_is_true(json_object_get(resp, "ok")) ? 0 : 1;
    if (rc == 0 && o.json) {
        char *text = json_dumps(resp, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        if (text)
            printf("%s\n", text);
        free(text);
    } else if (rc == 0) {
        s_print_constraint(resp, stdout);
    }
    json_decref(resp);
    return rc;
}

static const char s_top_usage[] =
    "usage: plugboard ctl top [-c FILE] [--window DURATION] [-n COUNT]\n"
    "\n"
    "Connectors and routes of the running host with rates over the window\n"
    "(default 10s, at most 60s), refreshed every second in a terminal\n"
    "until Ctrl-C or COUNT refreshes.  When stdout is not a terminal,\n"
    "prints one snapshot\n"
    "(or COUNT of them, a second apart).\n";

static volatile sig_atomic_t s_top_stop;

static void
s_on_sigint(int sig)
{
    (void)sig;
    s_top_stop = 1;
}

int
pb_cli_top(int argc, char **argv)
{
    opts_t o;
    int rc = s_options(argc, argv, &o, s_top_usage);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    bool tty = isatty(STDOUT_FILENO);
    long count = o.count > 0 ? o.count : (tty ? 0 : 1);
    struct sigaction sa = {.sa_handler = s_on_sigint};
    sigaction(SIGINT, &sa, NULL);
    for (long i = 0; !s_top_stop && (count == 0 || i < count); i++) {
        if (i > 0)
            sleep(1);
        if (s_top_stop)
            break;
        json_t *req = s_request("status", &o);
        json_t *resp = pb_observe_ask(o.config, req);
        json_decref(req);
        if (!resp || !json_is_true(json_object_get(resp, "ok"))) {
            json_decref(resp);
            return 1;
        }
        if (tty)
            fputs("\033[H\033[2J", stdout); /* home, clear */
        time_t t = time(NULL);
        char when[32];
        strftime(when, sizeof when, "%H:%M:%S", localtime(&t));
        printf("%s  ", when);
        pb_observe_print_status(resp, stdout);
        if (tty)
            printf("\n(refreshing every second; Ctrl-C to quit)\n");
        else if (count > 1)
            printf("\n");
        fflush(stdout);
        json_decref(resp);
    }
    return 0;
}
