/*
 * test_observe.c - seeing the flow, end to end with the real host binary:
 * /metrics (checked by promtool and against what the test sent),
 * /readyz, the admin listener, `ctl status`, `ctl top`, `ctl constraint`
 * following a bottleneck that moves, and `map` read by Graphviz.
 *
 * The constraint test runs three routes fed at the same rate from one
 * webhook source ("src", the good test plugin) to three sinks of the
 * "slow" test plugin: first one sink takes 100 ms per event (the others
 * are fast), then, after a restart with another config, that one is fast
 * and another is rate-limited by its "vendor" (RETRY with retry-after),
 * then all are fast.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"
#include "promtext.h"
#include "smtpd.h"

#define T_FEED_MS 5000 /* how long each constraint phase feeds */
#define T_TICK_MS 100  /* one POST of two events per tick: 20/s */

static char *s_dir;
static pb_hostproc_t s_host;

static void
teardown(void)
{
    if (s_host.pid > 0)
        pb_hostproc_stop(&s_host);
    pb_test_rmtree(s_dir);
    free(s_dir);
}

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-observe");
    cr_assert_not_null(s_dir);
}

TestSuite(observe, .init = setup, .fini = teardown);

/* Start the host on cfg (with @ADMIN@ replaced by admin_port). */
static void
start_host(const char *cfg, int admin_port)
{
    char ports[16];
    snprintf(ports, sizeof ports, "%d", admin_port);
    size_t cap = strlen(cfg) + 64;
    char *text = malloc(cap);
    const char *at = strstr(cfg, "@ADMIN@");
    if (at)
        snprintf(text, cap, "%.*s%s%s", (int)(at - cfg), cfg, ports,
                 at + strlen("@ADMIN@"));
    else
        snprintf(text, cap, "%s", cfg);
    bool up =
        pb_hostproc_start(&s_host, s_dir, pb_test_free_port(), text, NULL);
    free(text);
    if (!up) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("host did not start:\n%s", log ? log : "(no log)");
    }
}

typedef struct s_buf {
    char *data;
    size_t len;
} buf_t;

static size_t
s_collect(char *p, size_t size, size_t n, void *ctx)
{
    buf_t *b = ctx;
    char *grown = realloc(b->data, b->len + size * n + 1);
    if (!grown)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, p, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

/* GET http://127.0.0.1:port/path: the status, body in *out (malloc'd). */
static int
http_get(int port, const char *path, char **out, char *type, size_t tlen)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    buf_t b = {.data = calloc(1, 1)};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    long code = -1;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (type)
            snprintf(type, tlen, "%s", ct ? ct : "");
    }
    curl_easy_cleanup(c);
    *out = b.data;
    return (int)code;
}

static int
post_events(int n, int seq)
{
    char body[1024];
    size_t o = 0;
    o += (size_t)snprintf(body + o, sizeof body - o, "[");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(body + o, sizeof body - o,
                              "%s{\"type\":\"payment.failed\","
                              "\"key\":\"c%d-%d@example.com\"}",
                              i ? "," : "", seq, i);
    snprintf(body + o, sizeof body - o, "]");
    const char *headers[] = {"Content-Type: application/json", NULL};
    return pb_http_post(s_host.port, "/hooks/src", headers, body, strlen(body),
                        NULL);
}

/* Run the CLI with the NULL-terminated arguments; returns its exit status
 * and output (caller frees). */
static int
cli(char **out, ...)
{
    const char *args[16];
    size_t n = 0;
    va_list ap;
    va_start(ap, out);
    while (n + 1 < sizeof args / sizeof *args &&
           (args[n] = va_arg(ap, const char *)) != NULL)
        n++;
    va_end(ap);
    args[n] = NULL;
    return pb_hostproc_run_cli(s_dir, args, NULL, out);
}

static json_t *
parse_json(int rc, char *out)
{
    cr_assert_eq(rc, 0, "exit %d\n%s", rc, out);
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    cr_assert_not_null(j, "not JSON (%s):\n%s", err.text, out);
    free(out);
    return j;
}

/* ------------------------------------------------------------------ */
/* /metrics, /readyz, status, top, map --live                          */
/* ------------------------------------------------------------------ */

static const char s_cfg_metrics[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"warn\";\n"
    "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; body_limit = 4096;\n"
    "           admin_listen = \"127.0.0.1:@ADMIN@\"; };\n"
    "  drain_timeout = \"2s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"src\"; plugin = \"good\"; },\n"
    "  { name = \"crm\"; plugin = \"good\"; },\n"
    "  { name = \"mail\"; plugin = \"slow\"; },\n"
    "  { name = \"ops\"; plugin = \"good\";\n"
    "    settings = { reject_types = \"plugboard.delivery.dead\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"to-crm\"; from = \"src\"; when = \"payment.failed\";\n"
    "    to = [ \"crm\", \"mail\" ]; why = \"sales re-typed failures\";\n"
    "    owner = \"revops@example.com\"; notify = \"ops\"; }\n"
    ");\n";

Test(observe, metrics_page_counts_what_was_sent, .timeout = 60)
{
    int admin = pb_test_free_port();
    start_host(s_cfg_metrics, admin);
    /* 10 requests of 2 events, one malformed body, one too large */
    for (int i = 0; i < 10; i++)
        cr_assert_eq(post_events(2, i), 200);
    const char *headers[] = {"Content-Type: application/json", NULL};
    cr_assert_eq(
        pb_http_post(s_host.port, "/hooks/src", headers, "{nope", 5, NULL),
        400);
    char big[8192];
    memset(big, ' ', sizeof big);
    cr_assert_eq(
        pb_http_post(s_host.port, "/hooks/src", headers, big, sizeof big, NULL),
        413);

    /* every delivery done (the metrics say so) */
    char *text = NULL, type[128];
    for (int i = 0; i < 200; i++) {
        free(text);
        cr_assert_eq(http_get(admin, "/metrics", &text, type, sizeof type),
                     200);
        if (pb_prom_value(text, "plugboard_route_delivered_total{route=\""
                                "to-crm\",connector=\"mail\"}") == 20 &&
            pb_prom_value(text, "plugboard_route_delivered_total{route=\""
                                "to-crm\",connector=\"crm\"}") == 20)
            break;
        usleep(50000);
    }
    cr_assert(strstr(type, "text/plain; version=0.0.4"), "%s", type);
    cr_assert_eq(pb_prom_check(text), 2 + 2 * 3); /* journal + 3 hops */
    pb_prom_promtool(text);
    const struct {
        const char *series;
        double value;
    } want[] = {
        {"plugboard_ready", 1},
        {"plugboard_events_accepted_total", 20},
        {"plugboard_events_duplicate_total", 0},
        {"plugboard_malformed_inputs_total{reason=\"too_large\"}", 1},
        {"plugboard_malformed_inputs_total{reason=\"bad_frame\"}", 0},
        {"plugboard_connector_received_total{connector=\"src\","
         "kind=\"webhook\"}",
         11},
        {"plugboard_connector_webhook_responses_total{connector=\"src\","
         "class=\"2xx\"}",
         10},
        {"plugboard_connector_webhook_responses_total{connector=\"src\","
         "class=\"4xx\"}",
         1},
        {"plugboard_connector_emitted_total{connector=\"src\"}", 20},
        {"plugboard_connector_received_total{connector=\"crm\","
         "kind=\"delivery\"}",
         20},
        {"plugboard_connector_up{connector=\"mail\"}", 1},
        {"plugboard_connector_info{connector=\"mail\",plugin=\"slow\","
         "version=\"1.0.0\"}",
         1},
        {"plugboard_route_received_total{route=\"to-crm\",connector=\"crm\"}",
         20},
        {"plugboard_route_received_total{route=\"to-crm\",connector=\"ops\"}",
         0},
        {"plugboard_route_pending{route=\"to-crm\",connector=\"crm\"}", 0},
        {"plugboard_route_inflight{route=\"to-crm\",connector=\"mail\"}", 0},
        {"plugboard_route_oldest_pending_seconds{route=\"to-crm\","
         "connector=\"crm\"}",
         0},
        {"plugboard_route_dead_total{route=\"to-crm\",connector=\"crm\"}", 0},
        {"plugboard_route_delivery_seconds_count{route=\"to-crm\","
         "connector=\"crm\"}",
         20},
        {"plugboard_route_end_to_end_seconds_count{route=\"to-crm\","
         "connector=\"mail\"}",
         20},
        {"plugboard_journal_writable", 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_expect_eq(pb_prom_value(text, want[i].series), want[i].value,
                     "%s is %g, expected %g", want[i].series,
                     pb_prom_value(text, want[i].series), want[i].value);
    cr_expect_gt(pb_prom_value(text, "plugboard_journal_size_bytes"), 0);
    cr_expect_gt(pb_prom_value(text, "plugboard_journal_commit_seconds_count"),
                 0);
    free(text);

    /* /metrics lives on the admin listener only; /readyz on both */
    cr_expect_eq(http_get(s_host.port, "/metrics", &text, NULL, 0), 404);
    free(text);
    cr_expect_eq(http_get(s_host.port, "/readyz", &text, NULL, 0), 200);
    cr_expect_str_eq(text, "ready\n");
    free(text);
    cr_expect_eq(http_get(admin, "/readyz", &text, NULL, 0), 200);
    free(text);
    cr_expect_eq(http_get(admin, "/healthz", &text, NULL, 0), 200);
    free(text);
    cr_expect_eq(pb_http_post(admin, "/hooks/src", headers, "[]", 2, NULL),
                 404);

    /* ctl status: the tables and the numbers behind them */
    char *out = NULL;
    cr_assert_eq(cli(&out, "ctl", "status", "-c", s_host.config, NULL), 0);
    cr_expect(strstr(out, "CONNECTOR") && strstr(out, "ROUTE"), "%s", out);
    cr_expect(strstr(out, "to-crm") && strstr(out, "-> mail"), "%s", out);
    free(out);
    int rc = cli(&out, "ctl", "status", "-c", s_host.config, "--json", NULL);
    json_t *st = parse_json(rc, out);
    json_t *routes = json_object_get(st, "routes");
    cr_assert_eq(json_array_size(routes), 1);
    json_t *hop =
        json_array_get(json_object_get(json_array_get(routes, 0), "hops"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(hop, "connector")),
                     "crm");
    cr_expect_eq(json_integer_value(json_object_get(hop, "delivered")), 20);
    json_t *src = json_array_get(json_object_get(st, "connectors"), 0);
    cr_expect_eq(json_integer_value(json_object_get(src, "emitted")), 20);
    cr_expect_str_eq(json_string_value(json_object_get(src, "plugin")), "good");
    json_decref(st);

    /* ctl top, not on a terminal: one snapshot, then exit */
    cr_assert_eq(cli(&out, "ctl", "top", "-c", s_host.config, NULL), 0);
    cr_expect(strstr(out, "to-crm"), "%s", out);
    cr_expect_null(strstr(out, "\033["), "no escapes when not a terminal");
    free(out);

    /* map --live: the rates on the edges */
    cr_assert_eq(cli(&out, "map", "-c", s_host.config, "--live", NULL), 0);
    cr_expect(strstr(out, "/s in") && strstr(out, "busy"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------------ */
/* ctl constraint follows the bottleneck                               */
/* ------------------------------------------------------------------ */

/* %s: settings of a, b and c; %d: the phase (its own journal) */
static const char s_cfg_three[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var%d\";\n"
    "  log_level = \"warn\";\n"
    "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "  drain_timeout = \"1s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"src\"; plugin = \"good\"; },\n"
    "  { name = \"crm\"; plugin = \"slow\"; settings = { %s }; },\n"
    "  { name = \"mail\"; plugin = \"slow\"; settings = { %s }; },\n"
    "  { name = \"support\"; plugin = \"slow\"; settings = { %s }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"r-crm\"; from = \"src\"; when = \"payment.failed\";\n"
    "    to = [ \"crm\" ]; why = \"why crm\"; owner = \"crm@example.com\"; },\n"
    "  { name = \"r-mail\"; from = \"src\"; when = \"payment.failed\";\n"
    "    to = [ \"mail\" ]; why = \"customers never heard back\";\n"
    "    owner = \"billing@example.com\";\n"
    "    on_failure = \"the customer churns\"; },\n"
    "  { name = \"r-support\"; from = \"src\"; when = \"payment.failed\";\n"
    "    to = [ \"support\" ]; why = \"tickets were opened by hand\";\n"
    "    owner = \"support-lead@example.com\";\n"
    "    retry = { attempts = 1000; initial = \"100ms\"; max = \"1s\"; }; }\n"
    ");\n";

static void
run_phase(int phase, const char *crm, const char *mail, const char *support)
{
    char cfg[4096];
    snprintf(cfg, sizeof cfg, s_cfg_three, phase, crm, mail, support);
    start_host(cfg, 0);
    int seq = phase * 1000;
    for (int t = 0; t < T_FEED_MS / T_TICK_MS; t++) {
        cr_assert_eq(post_events(2, seq++), 200);
        usleep(T_TICK_MS * 1000);
    }
}

/* ctl constraint over the last 4 s of feeding */
static json_t *
constraint_now(void)
{
    char *out = NULL;
    int rc = cli(&out, "ctl", "constraint", "-c", s_host.config, "--window",
                 "4s", "--json", NULL);
    return parse_json(rc, out);
}

Test(observe, constraint_follows_the_bottleneck, .timeout = 90)
{
    /* 1: mail takes 100 ms per event while 20/s arrive */
    run_phase(1, "", "service = \"100ms\";", "");
    json_t *c = constraint_now();
    char *dump = json_dumps(c, JSON_INDENT(1));
    cr_assert(json_is_true(json_object_get(c, "constrained")), "%s", dump);
    json_t *k = json_object_get(c, "constraint");
    cr_expect_str_eq(json_string_value(json_object_get(k, "connector")), "mail",
                     "%s", dump);
    cr_expect_str_eq(json_string_value(json_object_get(k, "route")), "r-mail");
    cr_expect_str_eq(json_string_value(json_object_get(k, "cause")),
                     "saturated", "%s", dump);
    cr_expect_str_eq(json_string_value(json_object_get(k, "why")),
                     "customers never heard back");
    cr_expect_str_eq(json_string_value(json_object_get(k, "owner")),
                     "billing@example.com");
    cr_expect_str_eq(json_string_value(json_object_get(k, "on_failure")),
                     "the customer churns");
    json_t *ev = json_object_get(k, "evidence");
    cr_expect_gt(json_number_value(json_object_get(ev, "utilisation")), 0.8);
    cr_expect_gt(json_number_value(json_object_get(ev, "arrival_rate")),
                 json_number_value(json_object_get(ev, "completion_rate")));
    cr_expect_gt(json_number_value(json_object_get(ev, "backlog_trend")), 0);
    free(dump);
    json_decref(c);
    /* the same as text */
    char *out = NULL;
    cr_assert_eq(cli(&out, "ctl", "constraint", "-c", s_host.config, NULL), 0);
    cr_expect(strstr(out, "r-mail -> mail") && strstr(out, "suggestion:"), "%s",
              out);
    free(out);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);

    /* 2: mail made fast, support rate-limited to 5/s by its vendor */
    run_phase(2, "", "", "rate_limit = 5;");
    c = constraint_now();
    dump = json_dumps(c, JSON_INDENT(1));
    k = json_object_get(c, "constraint");
    cr_assert(json_is_true(json_object_get(c, "constrained")), "%s", dump);
    cr_expect_str_eq(json_string_value(json_object_get(k, "connector")),
                     "support", "%s", dump);
    cr_expect_str_eq(json_string_value(json_object_get(k, "cause")),
                     "throttled", "%s", dump);
    cr_expect_str_eq(json_string_value(json_object_get(k, "owner")),
                     "support-lead@example.com");
    cr_expect(strstr(json_string_value(json_object_get(k, "suggestion")),
                     "rate-limited"));
    cr_expect_gt(json_number_value(json_object_get(
                     json_object_get(k, "evidence"), "retry_share")),
                 0.2);
    free(dump);
    json_decref(c);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);

    /* 3: everything fast */
    run_phase(3, "", "", "");
    c = constraint_now();
    dump = json_dumps(c, JSON_INDENT(1));
    cr_expect(json_is_false(json_object_get(c, "constrained")), "%s", dump);
    cr_expect(strstr(json_string_value(json_object_get(c, "message")),
                     "nothing is constrained"),
              "%s", dump);
    free(dump);
    json_decref(c);
}

/* ------------------------------------------------------------------ */
/* map                                                                 */
/* ------------------------------------------------------------------ */

Test(observe, map_dot_is_read_by_graphviz_and_names_every_route)
{
    char cfg[4096], path[4200];
    snprintf(cfg, sizeof cfg, s_cfg_three, 9, "", "", "");
    snprintf(path, sizeof path, "%s/map.cfg", s_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    /* map reads the file and binds nothing: any port will do */
    char *port = strstr(cfg, "@PORT@");
    cr_assert_not_null(port);
    fprintf(f, "%.*s8787%s", (int)(port - cfg), cfg, port + 6);
    fclose(f);

    char *out = NULL;
    cr_assert_eq(cli(&out, "map", "-c", path, "--format", "dot", NULL), 0, "%s",
                 out);
    const char *expect[] = {"digraph plugboard",
                            "\"src\" -> \"crm\"",
                            "\"src\" -> \"mail\"",
                            "\"src\" -> \"support\"",
                            "route r-crm",
                            "route r-mail",
                            "route r-support",
                            "why: why crm",
                            "why: customers never heard back",
                            "why: tickets were opened by hand",
                            "owner: crm@example.com",
                            "owner: billing@example.com",
                            "owner: support-lead@example.com",
                            "on failure: the customer churns",
                            "plugin: slow"};
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++)
        cr_expect(strstr(out, expect[i]), "missing %s in:\n%s", expect[i], out);
    char dotfile[4200];
    snprintf(dotfile, sizeof dotfile, "%s/map.dot", s_dir);
    f = fopen(dotfile, "w");
    fputs(out, f);
    fclose(f);
    free(out);
    /* Graphviz reads it (Debian package 'graphviz', which make test
     * installs) and draws every route */
    char svgfile[4200];
    snprintf(svgfile, sizeof svgfile, "%s/map.svg", s_dir);
    const char *dot[] = {"dot", "-Tsvg", "-o", svgfile, dotfile, NULL};
    char *said = NULL;
    int rc = pb_test_tool(dot, NULL, &said);
    cr_assert_neq(rc, 127,
                  "Graphviz's dot is not installed (Debian package "
                  "'graphviz')");
    cr_expect_eq(rc, 0, "dot refused the map (exit %d):\n%s", rc, said);
    free(said);
    char *svg = pb_test_read_file(svgfile, NULL);
    cr_expect(svg && strstr(svg, "<svg"), "svg: %.300s", svg ? svg : "(none)");
    static const char *const routes[] = {"r&#45;crm", "r&#45;mail",
                                         "r&#45;support", NULL};
    for (size_t i = 0; svg && routes[i]; i++)
        cr_expect(strstr(svg, routes[i]), "%s not drawn", routes[i]);
    free(svg);

    /* text, and svg's advice */
    cr_assert_eq(cli(&out, "map", "-c", path, NULL), 0);
    cr_expect(strstr(out, "r-mail: src --[payment.failed]--> mail"), "%s", out);
    cr_expect(strstr(out, "owner:      support-lead@example.com"), "%s", out);
    free(out);
    /* the bundled plugins name the tool they connect */
    cr_assert_eq(cli(&out, "map", "-c",
                     PB_SOURCE_DIR "/etc/examples/production.cfg", NULL),
                 0, "%s", out);
    cr_expect(strstr(out, "plugin hubspot: HubSpot (CRM)"), "%s", out);
    cr_expect(strstr(out, "plugin zendesk: Zendesk (support desk)"), "%s",
              out);
    free(out);

    /* svg: drawn by Graphviz's dot when it is on the PATH */
    cr_assert_eq(cli(&out, "map", "-c", path, "--format", "svg", NULL), 0, "%s",
                 out);
    cr_expect(strstr(out, "<svg") && strstr(out, "r&#45;support"), "%.300s",
              out);
    free(out);
    /* and a clear message when it is not */
    static const char *const no_dot[] = {"PATH=/nonexistent", NULL};
    const char *args[] = {"map", "-c", path, "--format", "svg", NULL};
    cr_assert_eq(pb_hostproc_run_cli(s_dir, args, no_dot, &out), 1, "%s", out);
    cr_expect(strstr(out, "Graphviz") && strstr(out, "--format dot"), "%s",
              out);
    cr_expect_null(strstr(out, "<svg"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------------ */
/* owner notices: a crash loop is told once per interval, by SMTP      */
/* ------------------------------------------------------------------ */

/* @SMTP@: the SMTP test server's port */
static const char s_cfg_crash[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"warn\";\n"
    "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\", \"" PB_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "  drain_timeout = \"2s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"src\"; plugin = \"good\"; },\n"
    "  { name = \"out\"; plugin = \"stamp\"; isolation = \"process\";\n"
    "    settings = { record = \"@DIR@/out.jsonl\"; crash_key = \"*\"; }; },\n"
    "  { name = \"ops-mail\"; plugin = \"smtp\";\n"
    "    settings = { url = \"smtp://127.0.0.1:@SMTP@\"; tls = \"none\";\n"
    "      from = \"plugboard <plugboard@example.com>\";\n"
    "      templates = \"" PB_SOURCE_DIR "/etc/templates\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"to-out\"; from = \"src\"; when = \"payment.failed\";\n"
    "    to = [ \"out\" ]; why = \"orders were re-typed by hand\";\n"
    "    on_failure = \"orders ship late\";\n"
    "    owner = \"orders-team@example.com\"; notify = \"ops-mail\";\n"
    "    alert_interval = \"1h\";\n"
    "    retry = { attempts = 10; initial = \"50ms\"; max = \"200ms\"; }; }\n"
    ");\n";

/* Messages at the SMTP server whose raw text holds what. */
static size_t
s_mails_with(const pb_smtpd_t *sd, const char *what, char **first)
{
    size_t n = 0, total = pb_smtpd_count(sd);
    for (size_t i = 1; i <= total; i++) {
        char *raw = NULL;
        size_t len = 0;
        json_t *meta = NULL;
        if (!pb_smtpd_message(sd, i, &raw, &len, &meta))
            continue;
        if (strstr(raw, what)) {
            if (n++ == 0 && first)
                *first = strdup(raw);
        }
        free(raw);
        json_decref(meta);
    }
    return n;
}

typedef struct s_mailwait {
    const pb_smtpd_t *sd;
    const char *what;
    size_t want;
} mailwait_t;

static bool
s_mails_arrived(void *ctx)
{
    const mailwait_t *w = ctx;
    return s_mails_with(w->sd, w->what, NULL) >= w->want;
}

/* The host's owner_notices.checks from ctl status --json. */
static json_int_t
s_health_checks(void)
{
    char *out = NULL;
    int rc = cli(&out, "ctl", "status", "-c", s_host.config, "--json", NULL);
    json_t *st = parse_json(rc, out);
    json_int_t n = json_integer_value(
        json_object_get(json_object_get(st, "owner_notices"), "checks"));
    json_decref(st);
    return n;
}

static bool
s_checks_reached(void *ctx)
{
    return s_health_checks() >= *(json_int_t *)ctx;
}

Test(observe, a_crash_loop_notifies_the_owner_once_per_interval, .timeout = 120)
{
    pb_smtpd_t sd = {0};
    char smtpdir[4300], port[16];
    snprintf(smtpdir, sizeof smtpdir, "%s/smtpd", s_dir);
    cr_assert(pb_smtpd_start(&sd, smtpdir, NULL), "SMTP test server");
    snprintf(port, sizeof port, "%d", sd.port);
    const char *at = strstr(s_cfg_crash, "@SMTP@");
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%.*s%s%s", (int)(at - s_cfg_crash), s_cfg_crash,
             port, at + strlen("@SMTP@"));
    /* the stamp plugin's crash must kill its worker, not be reported */
    static const char *const env[] = {"ASAN_OPTIONS=handle_segv=0", NULL};
    bool up = pb_hostproc_start(&s_host, s_dir, pb_test_free_port(), cfg, env);
    if (!up) {
        char *log = pb_test_read_file(s_host.log, NULL);
        pb_smtpd_stop(&sd);
        cr_assert_fail("host did not start:\n%s", log ? log : "(no log)");
    }

    /* one event: its retries kill the worker five times -> failed */
    cr_assert_eq(post_events(1, 1), 200);
    mailwait_t unhealthy = {&sd, "out is unhealthy (crash_loop)", 1};
    bool told = pb_wait_until(s_mails_arrived, &unhealthy, 60000);
    if (!told) {
        char *log = pb_test_read_file(s_host.log, NULL);
        pb_smtpd_stop(&sd);
        cr_assert_fail("no unhealthy notice reached the SMTP server:\n%s",
                       log ? log : "");
    }
    char *mail = NULL;
    s_mails_with(&sd, "out is unhealthy (crash_loop)", &mail);
    cr_expect(strstr(mail, "To: orders-team@example.com") ||
                  strstr(mail, "orders-team@example.com"),
              "addressed to the route owner:\n%s", mail);
    cr_expect(strstr(mail, "orders were re-typed by hand"), "%s", mail);
    cr_expect(strstr(mail, "orders ship late"), "%s", mail);
    cr_expect(strstr(mail, "died 5 times"), "the evidence:\n%s", mail);
    free(mail);

    /* eight more events die at once (the connector failed): eight more
     * dead-letter notices, while the health check runs again and again */
    json_int_t checks = s_health_checks() + 3;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(post_events(2, 10 + i), 200);
    mailwait_t dead = {&sd, "could not reach out", 9};
    cr_assert(pb_wait_until(s_mails_arrived, &dead, 30000),
              "%zu dead-letter notices",
              s_mails_with(&sd,
                           "could not reach "
                           "out",
                           NULL));
    cr_assert(pb_wait_until(s_checks_reached, &checks, 30000));
    /* still one unhealthy notice: once per interval, not per event */
    cr_expect_eq(s_mails_with(&sd, "is unhealthy", NULL), 1);
    char *out = NULL;
    int rc = cli(&out, "ctl", "status", "-c", s_host.config, "--json", NULL);
    json_t *st = parse_json(rc, out);
    cr_expect_eq(json_integer_value(json_object_get(
                     json_object_get(st, "owner_notices"), "sent")),
                 1);
    json_decref(st);
    cr_expect_eq(pb_hostproc_stop(&s_host), 0);
    pb_smtpd_stop(&sd);
}

/* a backlog older than the route's alert_after: one notice, naming it */
static const char s_cfg_backlog[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"warn\";\n"
    "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "  drain_timeout = \"1s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"src\"; plugin = \"good\"; },\n"
    "  { name = \"crm\"; plugin = \"slow\"; settings = { service = \"1s\"; }; "
    "},\n"
    "  { name = \"ops\"; plugin = \"good\";\n"
    "    settings = { record = \"@DIR@/ops.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"to-crm\"; from = \"src\"; when = \"payment.failed\";\n"
    "    to = [ \"crm\" ]; why = \"sales re-typed failures\";\n"
    "    owner = \"revops@example.com\"; notify = \"ops\";\n"
    "    alert_after = \"1s\"; }\n"
    ");\n";

typedef struct s_noticewait {
    char path[4300];
    const char *cause;
    json_t *found; /* its data */
} noticewait_t;

static bool
s_notice_recorded(void *ctx)
{
    noticewait_t *w = ctx;
    char *text = pb_test_read_file(w->path, NULL);
    for (char *line = text ? strtok(text, "\n") : NULL; line && !w->found;
         line = strtok(NULL, "\n")) {
        json_t *ev = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(ev, "type"));
        json_t *data = json_object_get(ev, "data");
        const char *cause = json_string_value(json_object_get(data, "cause"));
        if (type && strcmp(type, "plugboard.connector.unhealthy") == 0 &&
            cause && strcmp(cause, w->cause) == 0)
            w->found = json_incref(data);
        json_decref(ev);
    }
    free(text);
    return w->found != NULL;
}

Test(observe, a_backlog_older_than_alert_after_notifies_the_owner,
     .timeout = 60)
{
    start_host(s_cfg_backlog, 0);
    /* four events at 1 s each: the last waits three seconds */
    cr_assert_eq(post_events(4, 1), 200);
    noticewait_t w = {.cause = "backlog"};
    snprintf(w.path, sizeof w.path, "%s/ops.jsonl", s_dir);
    cr_assert(pb_wait_until(s_notice_recorded, &w, 20000),
              "no backlog notice reached ops");
    cr_expect_str_eq(json_string_value(json_object_get(w.found, "route")),
                     "to-crm");
    cr_expect_str_eq(json_string_value(json_object_get(w.found, "destination")),
                     "crm");
    cr_expect_str_eq(json_string_value(json_object_get(w.found, "owner")),
                     "revops@example.com");
    const char *detail = json_string_value(json_object_get(w.found, "detail"));
    cr_expect(detail && strstr(detail, "alert_after 1 s"), "%s", detail);
    cr_expect_eq(json_integer_value(json_object_get(w.found, "interval_ms")),
                 3600000);
    json_decref(w.found);
}
