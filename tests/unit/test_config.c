/*
 * test_config.c - the config file as admins write it, and every way it
 * can be wrong.
 *
 * Each test writes a small config to a temporary file (or loads the
 * fixture tests/fixtures/config/full.cfg), loads it, and checks either the
 * model or the messages: every message must name the file, the line, the
 * setting and what was expected.  Binding uses fake plugin descriptors
 * defined here, returned by s_describe.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "config.h"
#include "error.h"

#ifndef PB_SOURCE_DIR
#define PB_SOURCE_DIR "."
#endif

#define FULL_CFG PB_SOURCE_DIR "/tests/fixtures/config/full.cfg"

/* ------------------------------------------------------------------ */
/* Fake plugins                                                        */
/* ------------------------------------------------------------------ */

static const plugboard_setting_spec_t s_stripe_settings[] = {
    {.name = "signing_secret",
     .type = PLUGBOARD_SETTING_STRING,
     .required = true,
     .secret = true,
     .help = "the endpoint's signing secret"},
    {.name = "tolerance",
     .type = PLUGBOARD_SETTING_DURATION,
     .default_value = "5m",
     .min = 1000,
     .max = 3600000,
     .help = "how old a signed request may be"},
    {.name = NULL},
};
static const char *const s_stripe_emits[] = {
    "payment.failed", "payment.succeeded", "payment.refunded", NULL};

static const plugboard_setting_spec_t s_hubspot_settings[] = {
    {.name = "token",
     .type = PLUGBOARD_SETTING_STRING,
     .required = true,
     .secret = true,
     .help = "a private app token"},
    {.name = "port",
     .type = PLUGBOARD_SETTING_INT,
     .default_value = "443",
     .min = 1,
     .max = 65535},
    {.name = "sandbox",
     .type = PLUGBOARD_SETTING_BOOL,
     .default_value = "false"},
    {.name = "base_url",
     .type = PLUGBOARD_SETTING_STRING,
     .default_value = "https://api.hubapi.com"},
    {.name = "quota", .type = PLUGBOARD_SETTING_INT},
    {.name = NULL},
};
static const char *const s_hubspot_consumes[] = {"payment.*",
                                                 "contact.upserted", NULL};

static const plugboard_setting_spec_t s_smtp_settings[] = {
    {.name = "url", .type = PLUGBOARD_SETTING_STRING, .required = true},
    {.name = "from", .type = PLUGBOARD_SETTING_STRING, .required = true},
    {.name = NULL},
};
static const char *const s_any[] = {PLUGBOARD_EV_ANY, NULL};

static const char *const s_zendesk_consumes[] = {"payment.failed",
                                                 "ticket.created", NULL};

static const char *const s_file_consumes[] = {"contact.upserted", NULL};

#define FAKE(n, set, cons, em)                                                 \
    {                                                                          \
        .abi_version = PLUGBOARD_ABI_VERSION,                                  \
        .size = sizeof(plugboard_connector_t), .name = n, .version = "1",      \
        .summary = "fake " n, .settings = set, .consumes = cons, .emits = em   \
    }

static void
s_fake_run(void *state)
{
    (void)state;
}

static const char *const s_poller_emits[] = {"contact.upserted", NULL};

static const plugboard_connector_t s_plugins[] = {
    {.abi_version = PLUGBOARD_ABI_VERSION,
     .size = sizeof(plugboard_connector_t),
     .name = "poller",
     .version = "1",
     .summary = "fake pull source",
     .emits = s_poller_emits,
     .run = s_fake_run},
    FAKE("stripe", s_stripe_settings, NULL, s_stripe_emits),
    FAKE("hubspot", s_hubspot_settings, s_hubspot_consumes, NULL),
    FAKE("smtp", s_smtp_settings, s_any, NULL),
    FAKE("zendesk", NULL, s_zendesk_consumes, NULL),
    FAKE("file", NULL, s_file_consumes, NULL),
};

static const plugboard_connector_t *
s_describe(void *ctx, const pb_connector_conf_t *conn, char *err,
           size_t err_len)
{
    int *calls = ctx;
    if (calls)
        (*calls)++;
    for (size_t i = 0; i < sizeof s_plugins / sizeof s_plugins[0]; i++)
        if (strcmp(s_plugins[i].name, conn->plugin) == 0)
            return &s_plugins[i];
    if (strcmp(conn->plugin, "old") == 0) /* as the loader words it */
        snprintf(err, err_len, "cannot load plugin '/p/old.so': built for "
                 "ABI 2, host speaks 1");
    else
        snprintf(err, err_len, "no file '%s.so' in the plugin path",
                 conn->plugin);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static pb_diag_t s_diag;
static char s_file[64];
static char s_dump_buf[16384];

static void
s_setup(void)
{
    pb_diag_init(&s_diag);
    setenv("PB_TEST_STRIPE_SECRET", "whsec_stripe_value_123", 1);
    setenv("PB_TEST_HUBSPOT_TOKEN", "pat-hubspot-value-456", 1);
}

static void
s_teardown(void)
{
    pb_diag_release(&s_diag);
}

TestSuite(config, .init = s_setup, .fini = s_teardown);

/* Writes text to a temporary .cfg file and loads it; the file is gone
 * afterwards but its name stays in s_file for assertions. */
static pb_config_t *
s_load(const char *text)
{
    snprintf(s_file, sizeof s_file, "/tmp/pb-config-XXXXXX.cfg");
    int fd = mkstemps(s_file, 4);
    cr_assert(fd >= 0, "mkstemps failed");
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    pb_config_t *cfg = pb_config_load(s_file, &s_diag);
    unlink(s_file);
    return cfg;
}

/* Every message, one a line, for failure output. */
static const char *
s_dump(void)
{
    size_t used = 0;
    s_dump_buf[0] = '\0';
    for (size_t i = 0; i < s_diag.count && used < sizeof s_dump_buf; i++) {
        int n = snprintf(s_dump_buf + used, sizeof s_dump_buf - used, "  %s\n",
                         s_diag.messages[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    return s_dump_buf;
}

/* Is there a message starting "FILE:LINE: " (line 0: any line) and
 * holding every needle (NULL-terminated)? */
static bool
s_has(const char *file, int line, ...)
{
    char head[128];
    if (line > 0)
        snprintf(head, sizeof head, "%s:%d: ", file, line);
    else
        snprintf(head, sizeof head, "%s:", file);
    for (size_t i = 0; i < s_diag.count; i++) {
        const char *m = s_diag.messages[i];
        if (strncmp(m, head, strlen(head)) != 0)
            continue;
        bool all = true;
        va_list ap;
        va_start(ap, line);
        for (const char *n; all && (n = va_arg(ap, const char *));)
            all = strstr(m, n) != NULL;
        va_end(ap);
        if (all)
            return true;
    }
    return false;
}

#define expect_msg(line, ...)                                                  \
    cr_assert(s_has(s_file, line, __VA_ARGS__, NULL),                          \
              "expected a message at %s:%d with " #__VA_ARGS__ ", got:\n%s",   \
              s_file, line, s_dump())

/* No message anywhere holds text (for secrets). */
static void
s_assert_nowhere(const char *text)
{
    for (size_t i = 0; i < s_diag.count; i++)
        cr_assert(strstr(s_diag.messages[i], text) == NULL,
                  "message leaks '%s': %s", text, s_diag.messages[i]);
}

/* Connectors every route test can use. */
#define CONNECTORS                                                             \
    "connectors = (\n"                                /* 1 */                  \
    "  { name = \"payments\"; plugin = \"stripe\";\n" /* 2 */                  \
    "    settings = { signing_secret = \"env:PB_TEST_STRIPE_SECRET\"; }; },\n" \
    "  { name = \"crm\"; plugin = \"hubspot\";\n" /* 4 */                      \
    "    settings = { token = \"env:PB_TEST_HUBSPOT_TOKEN\"; }; },\n"          \
    "  { name = \"mail\"; plugin = \"smtp\";\n" /* 6 */                        \
    "    settings = { url = \"smtp://127.0.0.1:2525\"; from = \"a@b.c\"; }; "  \
    "},\n"                                                                     \
    "  { name = \"support\"; plugin = \"zendesk\"; },\n" /* 8 */               \
    "  { name = \"archive\"; plugin = \"file\"; }\n"     /* 9 */               \
    ");\n"                                               /* 10 */

#define ROUTE_BODY                                                             \
    "why = \"finance chased failed cards by hand\"; "                          \
    "owner = \"billing@example.com\"; "

/* ------------------------------------------------------------------ */
/* Loading                                                             */
/* ------------------------------------------------------------------ */

Test(config, full_fixture_loads_every_value)
{
    pb_config_t *cfg = pb_config_load(FULL_CFG, &s_diag);
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());

    cr_expect_str_eq(cfg->path, FULL_CFG);
    cr_expect_str_eq(cfg->data_dir, "var/test");
    cr_expect_str_eq(cfg->run_dir, "var/test/sockets");
    cr_expect_str_eq(cfg->log_level, "debug");
    cr_assert_eq(cfg->plugin_path_count, 2);
    cr_expect_str_eq(cfg->plugin_path[0], "build/plugins");
    cr_expect_str_eq(cfg->plugin_path[1], "/usr/lib/plugboard");
    cr_expect_str_eq(cfg->listen, "127.0.0.1:9797");
    cr_expect_eq(cfg->body_limit, 2097152);
    cr_expect_eq(cfg->idle_timeout_ms, 45000);
    cr_expect_eq(cfg->max_connections, 512);
    cr_expect_eq(cfg->drain_timeout_ms, 5000);
    cr_expect_eq(cfg->dedupe_retention_ms, 14LL * 86400000);
    cr_expect_eq(cfg->delivered_retention_ms, 12LL * 3600000);

    cr_assert_eq(cfg->connector_count, 4);
    pb_connector_conf_t *pay = &cfg->connectors[0];
    cr_expect_str_eq(pay->name, "payments");
    cr_expect_str_eq(pay->plugin, "stripe");
    cr_expect_str_eq(pay->isolation, "thread");
    cr_expect_eq(pay->concurrency, 1);
    cr_expect_eq(pay->deliver_timeout_ms, 30000);
    cr_expect_eq(pay->line, 20);
    cr_assert_eq(pay->settings_count, 2);
    cr_expect_str_eq(pay->settings[0].name, "signing_secret");
    cr_expect_eq(pay->settings[0].kind, PB_RAW_STRING);
    cr_expect_eq(pay->settings[0].line, 27);

    pb_connector_conf_t *crm = pb_config_connector(cfg, "crm");
    cr_assert_not_null(crm);
    cr_expect_eq(crm->concurrency, 4);
    cr_expect_str_eq(crm->isolation, "thread");
    cr_expect_eq(crm->deliver_timeout_ms, 0);
    cr_assert_eq(crm->settings_count, 4);
    cr_expect_eq(crm->settings[1].kind, PB_RAW_INT);
    cr_expect_eq(crm->settings[1].i, 8443);
    cr_expect_eq(crm->settings[2].kind, PB_RAW_BOOL);
    cr_expect(crm->settings[2].b);
    cr_expect_eq(crm->settings[3].i, 5000000000LL, "64-bit L value");
    cr_expect_str_eq(pb_config_connector(cfg, "mail")->isolation, "process");
    cr_expect_null(pb_config_connector(cfg, "nope"));

    cr_assert_eq(cfg->route_count, 2);
    pb_route_conf_t *r = &cfg->routes[0];
    cr_expect_str_eq(r->name, "failed-payment-follow-up");
    cr_expect_str_eq(r->from, "payments");
    cr_assert_eq(r->when_count, 1);
    cr_expect_str_eq(r->when[0], "payment.failed");
    cr_assert_eq(r->to_count, 3);
    cr_expect_str_eq(r->to[2], "support");
    cr_expect_str_eq(r->owner, "billing-team@example.com");
    cr_expect_not_null(r->on_failure);
    cr_expect_str_eq(r->notify, "mail");
    cr_expect_eq(r->retry.attempts, 12);
    cr_expect_eq(r->retry.initial_ms, 2000);
    cr_expect_eq(r->retry.max_ms, 30 * 60000);

    r = &cfg->routes[1];
    cr_assert_eq(r->when_count, 2);
    cr_expect_str_eq(r->when[1], "payment.refunded");
    cr_assert_eq(r->to_count, 1, "a single string is a one-item list");
    cr_expect_str_eq(r->to[0], "crm");
    cr_expect_null(r->on_failure);
    cr_expect_null(r->notify);
    cr_expect_eq(r->retry.attempts, 10);
    cr_expect_eq(r->retry.initial_ms, 1000);
    cr_expect_eq(r->retry.max_ms, 15 * 60000);

    pb_config_destroy(&cfg);
    cr_assert_null(cfg);
    pb_config_destroy(&cfg); /* idempotent */
}

Test(config, empty_file_gets_every_default)
{
    pb_config_t *cfg = s_load("# nothing\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_expect_str_eq(cfg->data_dir, "var");
    cr_expect_str_eq(cfg->run_dir, "var/run");
    cr_expect_null(cfg->listen, "no http group, no listener");
    cr_expect_eq(cfg->body_limit, 1024 * 1024);
    cr_expect_eq(cfg->idle_timeout_ms, 30000);
    cr_expect_eq(cfg->max_connections, 1024);
    cr_expect_str_eq(cfg->log_level, "info");
    cr_expect_eq(cfg->plugin_path_count, 0);
    cr_expect_eq(cfg->drain_timeout_ms, 10000);
    cr_expect_eq(cfg->dedupe_retention_ms, 7LL * 86400000);
    cr_expect_eq(cfg->delivered_retention_ms, 86400000);
    cr_expect_eq(cfg->connector_count, 0);
    cr_expect_eq(cfg->route_count, 0);
    pb_config_destroy(&cfg);
}

Test(config, http_group_without_listen_uses_default_address)
{
    pb_config_t *cfg =
        s_load("plugboard = { data_dir = \"/srv/pb/\"; http = { }; };\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_expect_str_eq(cfg->listen, "127.0.0.1:8787");
    cr_expect_str_eq(cfg->run_dir, "/srv/pb/run");
    pb_config_destroy(&cfg);
}

Test(config, missing_file_is_reported_with_its_cause)
{
    pb_config_t *cfg = pb_config_load("/nonexistent/plugboard.cfg", &s_diag);
    cr_assert_null(cfg);
    cr_assert_eq(s_diag.count, 1);
    cr_expect_str_eq(s_diag.messages[0],
                     "cannot read config file '/nonexistent/plugboard.cfg': "
                     "No such file or directory");
}

Test(config, a_directory_is_not_a_config_file)
{
    char dir[] = "/tmp/pb-config-dir-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    pb_config_t *cfg = pb_config_load(dir, &s_diag);
    rmdir(dir);
    cr_assert_null(cfg);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    cr_expect(strstr(s_diag.messages[0], "cannot read config file") &&
                  strstr(s_diag.messages[0], dir) &&
                  strstr(s_diag.messages[0], "Is a directory"),
              "%s", s_dump());
}

Test(config, syntax_error_names_file_and_line)
{
    pb_config_t *cfg = s_load("plugboard = {\n"
                              "  data_dir = \"var\";\n"
                              "  log_level = ;\n"
                              "};\n");
    cr_assert_null(cfg);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(3, "syntax error");
}

/* libconfig says only "syntax error": the message also quotes the line
 * and says what a setting looks like. */
Test(config, syntax_error_quotes_the_line_and_says_what_was_expected)
{
    pb_config_t *cfg = s_load("plugboard = {\n"
                              "  data_dir = \"var\";\n"
                              "\t log_level = ;   # a comment\n"
                              "};\n");
    cr_assert_null(cfg);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(3, "syntax error in 'log_level = ;   # a comment'",
               "expected NAME = VALUE; where VALUE is a \"string\", a "
               "number, true or false, { group }, [ array ] or ( list )");

    /* a long line is cut, and a control byte is not echoed */
    char text[512];
    snprintf(text, sizeof text, "plugboard = { data_dir \x01= \"%0200d\"; };\n",
             0);
    cfg = s_load(text);
    cr_assert_null(cfg);
    expect_msg(1, "syntax error in 'plugboard = { data_dir ?= \"000");
    cr_assert(strstr(s_diag.messages[s_diag.count - 1], "...'"), "%s",
              s_dump());
    cr_assert(strlen(s_diag.messages[s_diag.count - 1]) < 300, "%s", s_dump());

    /* an error found at the end of the file has no line to quote */
    cfg = s_load("plugboard = {\n  http = { listen = \"x:1\"\n};\n");
    cr_assert_null(cfg);
    expect_msg(4, "syntax error at an empty line or the end of the file: a "
                  "';' or a closing '}', ']' or ')' may be missing");
}

Test(config, unknown_keys_are_errors_at_every_level)
{
    pb_config_t *cfg = s_load(
        CONNECTORS                                                    /* 1-10 */
        "plugins = 1;\n"                                              /* 11 */
        "plugboard = { datadir = \"var\";\n"                          /* 12 */
        "  http = { port = 80; }; };\n"                               /* 13 */
        "routes = ( { name = \"r\"; from = \"payments\";\n"           /* 14 */
        "  when = \"payment.failed\"; to = \"crm\"; " ROUTE_BODY "\n" /* 15 */
        "  whyy = \"typo\";\n"                                        /* 16 */
        "  retry = { tries = 3; }; } );\n");                          /* 17 */
    cr_assert_null(cfg);
    expect_msg(11, ": plugins: unknown setting (expected one of: plugboard, "
                   "connectors, routes)");
    expect_msg(12, "plugboard.datadir: unknown setting (expected one of: "
                   "data_dir, run_dir,");
    expect_msg(13, "plugboard.http.port: unknown setting (expected one of: "
                   "listen, body_limit, idle_timeout, max_connections, "
                   "admin_listen)");
    expect_msg(16, "routes.[0].whyy: unknown setting (expected one of: name, "
                   "from, when, to, why, on_failure, owner, notify, retry, "
                   "alert_after, alert_interval)");
    expect_msg(17, "routes.[0].retry.tries: unknown setting (expected one "
                   "of: attempts, initial, max)");
    cr_expect_eq(s_diag.count, 5, "%s", s_dump());
}

Test(config, unknown_connector_key)
{
    pb_config_t *cfg = s_load("connectors = (\n"
                              "  { name = \"crm\"; plugin = \"hubspot\";\n"
                              "    isolaton = \"process\"; }\n"
                              ");\n");
    cr_assert_null(cfg);
    expect_msg(3, "connectors.[0].isolaton: unknown setting (expected one "
                  "of: name, plugin, isolation, concurrency, "
                  "deliver_timeout, settings, watch)");
}

Test(config, wrong_types_say_what_was_expected)
{
    pb_config_t *cfg = s_load("plugboard = {\n"
                              "  data_dir = 5;\n"
                              "  http = { body_limit = \"big\";\n"
                              "           idle_timeout = 30; };\n"
                              "  plugin_path = [ 1, 2 ];\n"
                              "  log_level = \"verbose\";\n"
                              "};\n"
                              "connectors = { name = \"x\"; };\n");
    cr_assert_null(cfg);
    expect_msg(2, "plugboard.data_dir: expected a string, got an integer");
    expect_msg(3, "plugboard.http.body_limit: expected an integer in "
                  "[1024, 67108864], got a string");
    expect_msg(4, "plugboard.http.idle_timeout: expected a duration such as "
                  "\"30s\", got an integer");
    expect_msg(5, "plugboard.plugin_path.[0]: expected a string, got an "
                  "integer");
    expect_msg(6, "plugboard.log_level: expected one of error, warn, info, "
                  "debug, got 'verbose'");
    expect_msg(8, "connectors: expected a list of groups");
}

/* ------------------------------------------------------------------ */
/* Integers: libconfig 1.5 wraps unsuffixed literals over 32 bits      */
/* ------------------------------------------------------------------ */

Test(config, wrapped_integer_is_rejected_not_applied)
{
    /* libconfig 1.5 reads 4294968320 (2^32 + 1024) as 1024, silently */
    pb_config_t *cfg = s_load("plugboard = {\n"
                              "  http = {\n"
                              "    body_limit = 4294968320;\n"
                              "  };\n"
                              "};\n");
    cr_assert_null(cfg, "a wrapped value must not load (it would be 1024)");
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(3, "plugboard.http.body_limit: integer 4294968320 does not "
                  "fit in 32 bits; write it as 4294968320L");
}

Test(config, wrapped_integer_in_range_after_wrapping_is_still_rejected)
{
    /* 2^32 + 10 wraps to 10, a valid concurrency */
    pb_config_t *cfg = s_load("connectors = ( { name = \"a\"; plugin = \"p\"; "
                              "concurrency = 4294967306; } );\n");
    cr_assert_null(cfg);
    expect_msg(1, "connectors.[0].concurrency: integer 4294967306 does not "
                  "fit in 32 bits");
}

Test(config, wrapped_hex_and_64_bit_overflow_are_rejected)
{
    pb_config_t *cfg = s_load("plugboard = { http = {\n"
                              "  max_connections = 0x100000400;\n"
                              "  body_limit = 99999999999999999999L;\n"
                              "}; };\n");
    cr_assert_null(cfg);
    expect_msg(2, "plugboard.http.max_connections: integer 0x100000400 does "
                  "not fit in 32 bits; write it as 0x100000400L");
    expect_msg(3, "plugboard.http.body_limit: integer 99999999999999999999 "
                  "does not fit in 64 bits");
}

Test(config, wrapped_integer_in_plugin_settings_is_rejected)
{
    pb_config_t *cfg = s_load("connectors = ( { name = \"crm\";\n"
                              "  plugin = \"hubspot\";\n"
                              "  settings = { quota = 5000000000; }; } );\n");
    cr_assert_null(cfg);
    expect_msg(3, "connectors.[0].settings.quota: integer 5000000000 does "
                  "not fit in 32 bits; write it as 5000000000L");
}

Test(config, l_suffixed_64_bit_values_are_read_as_64_bit)
{
    pb_config_t *cfg =
        s_load("plugboard = { http = { body_limit = 2097152L; }; };\n"
               "connectors = ( { name = \"crm\"; plugin = \"hubspot\";\n"
               "  settings = { quota = 5000000000L; low = -3000000000L;\n"
               "               small = -2147483648; }; } );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_expect_eq(cfg->body_limit, 2097152);
    pb_connector_conf_t *c = &cfg->connectors[0];
    cr_assert_eq(c->settings_count, 3);
    cr_expect_eq(c->settings[0].i, 5000000000LL);
    cr_expect_eq(c->settings[1].i, -3000000000LL);
    cr_expect_eq(c->settings[2].i, -2147483648LL, "INT32_MIN fits");
    pb_config_destroy(&cfg);
}

Test(config, strings_and_comments_holding_numbers_are_not_literals)
{
    pb_config_t *cfg = s_load("plugboard = { http = { body_limit = 2048; }; }; "
                              "# body_limit = 4294968320\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_expect_eq(cfg->body_limit, 2048);
    pb_config_destroy(&cfg);
}

Test(config, included_files_are_checked_and_named_in_messages)
{
    char dir[] = "/tmp/pb-config-dir-XXXXXX";
    char main_path[128], inc_path[128];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(main_path, sizeof main_path, "%s/plugboard.cfg", dir);
    snprintf(inc_path, sizeof inc_path, "%s/http.cfg", dir);
    FILE *f = fopen(inc_path, "w");
    cr_assert_not_null(f);
    fputs("# included\nbody_limit = 4294968320;\n", f);
    fclose(f);
    f = fopen(main_path, "w");
    cr_assert_not_null(f);
    fputs("plugboard = { http = {\n@include \"http.cfg\"\n}; };\n", f);
    fclose(f);

    pb_config_t *cfg = pb_config_load(main_path, &s_diag);
    unlink(inc_path);
    unlink(main_path);
    rmdir(dir);
    cr_assert_null(cfg);
    cr_assert(s_has(inc_path, 2,
                    "plugboard.http.body_limit: integer "
                    "4294968320 does not fit in 32 bits",
                    NULL),
              "got:\n%s", s_dump());
}

/* ------------------------------------------------------------------ */
/* Ranges                                                              */
/* ------------------------------------------------------------------ */

Test(config, out_of_range_values_are_reported_with_the_range)
{
    pb_config_t *cfg = s_load(
        CONNECTORS /* 1-10 */
        "plugboard = { http = { body_limit = 512; max_connections = 0;\n" /* 11
                                                                           */
        "  idle_timeout = \"2h\"; }; };\n"                            /* 12 */
        "routes = ( { name = \"r\"; from = \"payments\";\n"           /* 13 */
        "  when = \"payment.failed\"; to = \"crm\"; " ROUTE_BODY "\n" /* 14 */
        "  retry = { attempts = 1001;\n"                              /* 15 */
        "            initial = \"1h\"; max = \"8d\"; }; },\n"         /* 16 */
        " { name = \"s\"; from = \"payments\";\n"                     /* 17 */
        "  when = \"payment.failed\"; to = \"crm\"; " ROUTE_BODY "\n" /* 18 */
        "  retry = { initial = \"30m\"; }; } );\n");                  /* 19 */
    cr_assert_null(cfg);
    expect_msg(11, "plugboard.http.body_limit: expected an integer in "
                   "[1024, 67108864], got 512");
    expect_msg(11, "plugboard.http.max_connections: expected an integer in "
                   "[1, 100000], got 0");
    expect_msg(12, "plugboard.http.idle_timeout: expected a duration in "
                   "[1s, 1h], got '2h'");
    expect_msg(15, "routes.[0].retry.attempts: expected an integer in "
                   "[1, 1000], got 1001");
    expect_msg(16, "routes.[0].retry.max: expected a duration in [1ms, 7d], "
                   "got '8d'");
    expect_msg(19, "routes.[1].retry.initial: retry.initial (30m) is longer "
                   "than retry.max (15m)");
}

Test(config, connector_fields_are_checked)
{
    pb_config_t *cfg = s_load(
        "connectors = (\n"
        "  { name = \"Bad Name\"; plugin = \"x\"; },\n"            /* 2 */
        "  { name = \"ok\"; plugin = \"x\"; isolation = \"vm\";\n" /* 3 */
        "    concurrency = 65; deliver_timeout = \"soon\"; },\n"   /* 4 */
        "  { plugin = \"x\"; },\n"                                 /* 5 */
        "  { name = \"noplugin\"; },\n"                            /* 6 */
        "  { name = \"iso\"; plugin = \"x\"; isolation = \"process\";\n"
        "    concurrency = 4; }\n"                                  /* 8 */
        ");\n");
    cr_assert_null(cfg);
    expect_msg(2, "connectors.[0].name: 'Bad Name' is not a valid connector "
                  "name");
    expect_msg(3, "connectors.[1].isolation: expected \"thread\" or "
                  "\"process\", got 'vm'");
    expect_msg(4, "connectors.[1].concurrency: expected an integer in "
                  "[1, 64], got 65");
    expect_msg(4,
               "connectors.[1].deliver_timeout: expected a duration such "
               "as \"250ms\"",
               "got 'soon'");
    expect_msg(5, "connectors.[2]: missing 'name'");
    expect_msg(6, "connectors.[3] ('noplugin'): missing 'plugin'");
    expect_msg(8, "connectors.[4].concurrency: concurrency 4 needs "
                  "isolation = \"thread\"");
}

/* ------------------------------------------------------------------ */
/* Routes                                                              */
/* ------------------------------------------------------------------ */

Test(config, route_without_why_is_rejected)
{
    pb_config_t *cfg =
        s_load(CONNECTORS
               "routes = ( { name = \"failed-payment-follow-up\";\n" /* 11 */
               "  from = \"payments\"; when = \"payment.failed\";\n"
               "  to = [ \"crm\" ]; owner = \"billing@example.com\"; } );\n");
    cr_assert_null(cfg);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(11, "routes.[0] ('failed-payment-follow-up'): missing 'why': "
                   "say which business bottleneck this route removes");
}

Test(config, route_without_owner_or_with_blank_why_is_rejected)
{
    pb_config_t *cfg = s_load(
        CONNECTORS
        "routes = ( { name = \"r\";\n" /* 11 */
        "  from = \"payments\"; when = \"payment.failed\"; to = [ \"crm\" ];\n"
        "  why = \"  \"; } );\n"); /* 13 */
    cr_assert_null(cfg);
    expect_msg(11, "routes.[0] ('r'): missing 'owner': name who must know");
    expect_msg(13, "routes.[0].why: expected a non-empty string");
}

Test(config, duplicate_connector_name_is_rejected)
{
    pb_config_t *cfg = s_load("connectors = (\n"
                              "  { name = \"crm\"; plugin = \"hubspot\"; },\n"
                              "  { name = \"mail\"; plugin = \"smtp\"; },\n"
                              "  { name = \"crm\"; plugin = \"salesforce\"; }\n"
                              ");\n");
    cr_assert_null(cfg);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(4, "connectors.[2].name: connector name 'crm' is already used "
                  "at line 2");
}

Test(config, route_references_must_name_connectors)
{
    pb_config_t *cfg = s_load(
        CONNECTORS
        "routes = ( { name = \"r\"; from = \"paymnts\";\n" /* 11 */
        "  when = \"payment.failed\"; " ROUTE_BODY "\n"
        "  to = [ \"crm\",\n"                                /* 13 */
        "         \"helpdesk\",\n"                           /* 14 */
        "         \"crm\" ];\n"                              /* 15 */
        "  notify = \"pager\"; },\n"                         /* 16 */
        "  { name = \"r\"; from = \"payments\"; to = [ ];\n" /* 17 */
        "    when = [ \"Payment.Failed\", \"payment.*\", \"*\" ]; " ROUTE_BODY
        "} );\n");
    cr_assert_null(cfg);
    expect_msg(11, "routes.[0].from: no connector named 'paymnts' "
                   "(connectors: payments, crm, mail, support, archive)");
    expect_msg(14, "routes.[0].to.[1]: no connector named 'helpdesk'");
    expect_msg(15, "routes.[0].to.[2]: 'crm' is listed twice");
    expect_msg(16, "routes.[0].notify: no connector named 'pager'");
    expect_msg(17, "routes.[1].name: route name 'r' is already used at line "
                   "11");
    expect_msg(17, "routes.[1].to: expected at least one destination");
    expect_msg(18, "routes.[1].when.[0]: 'Payment.Failed' is not an event "
                   "type pattern");
}

Test(config, route_missing_fields_are_each_reported)
{
    pb_config_t *cfg = s_load(CONNECTORS "routes = ( { } );\n");
    cr_assert_null(cfg);
    expect_msg(11, "routes.[0]: missing 'name'");
    expect_msg(11, "routes.[0]: missing 'from'");
    expect_msg(11, "routes.[0]: missing 'when'");
    expect_msg(11, "routes.[0]: missing 'to'");
    expect_msg(11, "routes.[0]: missing 'why'");
    expect_msg(11, "routes.[0]: missing 'owner'");
    cr_expect_eq(s_diag.count, 6, "%s", s_dump());
}

Test(config, several_errors_are_reported_together)
{
    pb_config_t *cfg =
        s_load("plugboard = { log_level = \"loud\"; bogus = 1; };\n"    /* 1 */
               "connectors = ( { name = \"a\"; plugin = \"x\"; },\n"    /* 2 */
               "               { name = \"a\"; plugin = \"y\"; } );\n"  /* 3 */
               "routes = ( { name = \"r\"; from = \"b\"; to = \"a\";\n" /* 4 */
               "             when = \"x.y\"; owner = \"o\"; } );\n");   /* 5 */
    cr_assert_null(cfg);
    expect_msg(1, "plugboard.log_level");
    expect_msg(1, "plugboard.bogus: unknown setting");
    expect_msg(3, "connector name 'a' is already used at line 2");
    expect_msg(4, "routes.[0].from: no connector named 'b'");
    expect_msg(4, "missing 'why'");
    cr_expect_eq(s_diag.count, 5, "%s", s_dump());
}

Test(config, listen_address_is_checked)
{
    pb_config_t *cfg =
        s_load("plugboard = { http = { listen = \"localhost\"; }; };\n");
    cr_assert_null(cfg);
    expect_msg(1, "plugboard.http.listen: expected \"HOST:PORT\"",
               "got 'localhost'");
}

/* ------------------------------------------------------------------ */
/* Binding to plugins                                                  */
/* ------------------------------------------------------------------ */

Test(config, bind_full_fixture_resolves_secrets_and_defaults)
{
    pb_config_t *cfg = pb_config_load(FULL_CFG, &s_diag);
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    int calls = 0;
    cr_assert_eq(pb_config_bind(cfg, s_describe, &calls, &s_diag), 0,
                 "errors:\n%s", s_dump());
    cr_expect_eq(calls, 4);

    const plugboard_settings_t *st = cfg->connectors[0].bound;
    cr_assert_not_null(st);
    cr_expect_str_eq(pb_settings_string(st, "signing_secret"),
                     "whsec_stripe_value_123");
    cr_expect_eq(pb_settings_int(st, "tolerance"), 10 * 60000);

    const plugboard_settings_t *crm = cfg->connectors[1].bound;
    cr_expect_str_eq(pb_settings_string(crm, "token"), "pat-hubspot-value-456");
    cr_expect_eq(pb_settings_int(crm, "port"), 8443);
    cr_expect(pb_settings_bool(crm, "sandbox"));
    cr_expect_eq(pb_settings_int(crm, "quota"), 5000000000LL);
    /* defaulted */
    cr_expect_str_eq(pb_settings_string(crm, "base_url"),
                     "https://api.hubapi.com");
    cr_expect(pb_settings_is_set(crm, "base_url"));
    /* unknown names */
    cr_expect_null(pb_settings_string(crm, "nope"));
    cr_expect_eq(pb_settings_int(crm, "nope"), 0);
    cr_expect_not(pb_settings_bool(crm, "nope"));
    cr_expect_not(pb_settings_is_set(crm, "nope"));
    /* a plugin without settings binds to an empty set */
    cr_expect_not_null(cfg->connectors[3].bound);
    pb_config_destroy(&cfg);
}

Test(config, bind_default_applied_when_setting_absent)
{
    pb_config_t *cfg = s_load(CONNECTORS);
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), 0, "%s",
                 s_dump());
    const plugboard_settings_t *st =
        pb_config_connector(cfg, "payments")->bound;
    cr_expect_eq(pb_settings_int(st, "tolerance"), 5 * 60000);
    cr_expect(pb_settings_is_set(st, "tolerance"));
    const plugboard_settings_t *crm = pb_config_connector(cfg, "crm")->bound;
    cr_expect_eq(pb_settings_int(crm, "port"), 443);
    cr_expect(pb_settings_is_set(crm, "sandbox"));
    cr_expect_not(pb_settings_bool(crm, "sandbox"));
    cr_expect_not(pb_settings_is_set(crm, "quota"), "no default, not given");
    cr_expect_eq(pb_settings_int(crm, "quota"), 0);
    pb_config_destroy(&cfg);
}

Test(config, bind_reports_unknown_and_wrong_typed_plugin_settings)
{
    pb_config_t *cfg = s_load(
        "connectors = ( { name = \"crm\"; plugin = \"hubspot\"; settings = {\n"
        "  token = \"env:PB_TEST_HUBSPOT_TOKEN\";\n" /* 2 */
        "  prot = 8080;\n"                           /* 3 */
        "  port = 70000;\n"                          /* 4 */
        "  sandbox = \"yes\";\n"                     /* 5 */
        "  base_url = 3.5;\n"                        /* 6 */
        "  quota = [ 1 ];\n"                         /* 7 */
        "}; },\n"
        "  { name = \"payments\"; plugin = \"stripe\"; settings = {\n" /* 9 */
        "  signing_secret = \"env:PB_TEST_STRIPE_SECRET\";\n"
        "  tolerance = \"2h\"; }; } );\n"); /* 11 */
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(3, "connectors.[0].settings.prot: unknown setting (expected "
                  "one of: token, port, sandbox, base_url, quota)");
    expect_msg(4, "connectors.[0].settings.port: expected an integer in "
                  "[1, 65535], got 70000");
    expect_msg(5, "connectors.[0].settings.sandbox: expected true or false, "
                  "got a string");
    expect_msg(6, "connectors.[0].settings.base_url: expected a string, got "
                  "a float");
    expect_msg(7, "connectors.[0].settings.quota: expected an integer, got "
                  "a group, list or array");
    expect_msg(11, "connectors.[1].settings.tolerance: expected a duration "
                   "in [1s, 1h], got '2h'");
    cr_expect_eq(s_diag.count, 6, "%s", s_dump());
    cr_expect_null(cfg->connectors[0].bound);
    pb_config_destroy(&cfg);
}

Test(config, bind_reports_missing_required_setting)
{
    pb_config_t *cfg =
        s_load("connectors = (\n"
               "  { name = \"mail\"; plugin = \"smtp\";\n"
               "    settings = { url = \"smtp://x:25\"; }; } );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(2, "connectors.[0].settings: missing required setting 'from'");
    pb_config_destroy(&cfg);
}

Test(config, bind_reports_a_plugin_that_cannot_load)
{
    pb_config_t *cfg =
        s_load("connectors = (\n"
               "  { name = \"crm\"; plugin = \"salesforce\"; } );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(2, "connectors.[0] ('crm'): cannot load plugin 'salesforce': "
                  "no file 'salesforce.so' in the plugin path");
    pb_config_destroy(&cfg);
}

Test(config, bind_says_cannot_load_once)
{
    pb_config_t *cfg = s_load("connectors = (\n"
                              "  { name = \"crm\"; plugin = \"old\"; } );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(2, "connectors.[0] ('crm'): cannot load plugin '/p/old.so': "
                  "built for ABI 2, host speaks 1");
    cr_expect(!s_has(s_file, 2, "cannot load plugin 'old'", NULL), "%s",
              s_dump());
    pb_config_destroy(&cfg);
}

Test(config, bind_missing_env_secret_never_prints_a_value)
{
    unsetenv("PB_TEST_HUBSPOT_TOKEN");
    pb_config_t *cfg = s_load(CONNECTORS);
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(5, "connectors.[1].settings.token: environment variable "
                  "'PB_TEST_HUBSPOT_TOKEN' is not set");
    s_assert_nowhere("whsec_stripe_value_123");
    s_assert_nowhere("pat-hubspot");
    pb_config_destroy(&cfg);
}

Test(config, bind_inline_secret_is_rejected_without_echoing_it)
{
    pb_config_t *cfg = s_load(
        "connectors = ( { name = \"payments\"; plugin = \"stripe\";\n"
        "  settings = { signing_secret = \"whsec_inline_oops\"; }; } );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(2, "connectors.[0].settings.signing_secret: secret settings "
                  "must be given as env:NAME or file:PATH");
    s_assert_nowhere("whsec_inline_oops");
    pb_config_destroy(&cfg);
}

Test(config, bind_reads_file_secret_and_strips_the_newline)
{
    char secret_path[] = "/tmp/pb-secret-XXXXXX";
    int fd = mkstemp(secret_path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "s3cr3t-from-file\n", 17), 17);
    close(fd);

    char text[512];
    snprintf(text, sizeof text,
             "connectors = ( { name = \"payments\"; plugin = \"stripe\";\n"
             "  settings = { signing_secret = \"file:%s\"; }; },\n"
             "  { name = \"crm\"; plugin = \"hubspot\";\n"
             "  settings = { token = \"file:%s.missing\"; }; } );\n",
             secret_path, secret_path);
    pb_config_t *cfg = s_load(text);
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_expect_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    unlink(secret_path);
    cr_expect_str_eq(
        pb_settings_string(cfg->connectors[0].bound, "signing_secret"),
        "s3cr3t-from-file");
    expect_msg(4, "connectors.[1].settings.token: cannot read secret file '",
               ".missing': No such file or directory");
    s_assert_nowhere("s3cr3t");
    pb_config_destroy(&cfg);
}

Test(config, bind_refuses_a_pull_source_in_a_worker_process)
{
    pb_config_t *cfg = s_load("connectors = (\n"
                              "  { name = \"feed\"; plugin = \"poller\";\n"
                              "    isolation = \"process\"; }\n"
                              ");\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(2, "connectors.[0] ('feed').isolation: plugin 'poller' is a "
                  "pull source (run), which a worker process does not run");
    pb_config_destroy(&cfg);
}

Test(config, bind_rejects_destination_that_does_not_consume_the_type)
{
    pb_config_t *cfg = s_load(
        CONNECTORS "routes = ( { name = \"x\"; from = \"payments\";\n" /* 11 */
                   "  when = \"payment.failed\"; to = [ \"archive\", \"crm\" "
                   "]; " ROUTE_BODY "} );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    cr_assert_eq(s_diag.count, 1, "%s", s_dump());
    expect_msg(11, "routes.[0] ('x'): destination 'archive' (plugin 'file') "
                   "does not consume 'payment.failed'; it consumes: "
                   "contact.upserted");
    pb_config_destroy(&cfg);
}

Test(config, bind_checks_source_emits_and_notify_consumes)
{
    pb_config_t *cfg = s_load(
        CONNECTORS
        "routes = ( { name = \"a\"; from = \"payments\";\n" /* 11 */
        "  when = [ \"ticket.*\", \"payment.*\" ]; to = \"mail\"; " ROUTE_BODY
        "notify = \"support\"; },\n"
        "  { name = \"b\"; from = \"crm\"; when = \"*\"; to = \"mail\"; " /* 13
                                                                           */
        ROUTE_BODY "notify = \"mail\"; },\n"
        "  { name = \"c\"; from = \"payments\"; when = \"*\"; " /* 14 */
        "to = [ \"support\", \"crm\" ]; " ROUTE_BODY "} );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(11, "routes.[0] ('a'): source 'payments' (plugin 'stripe') "
                   "does not emit 'ticket.*'; it emits: payment.failed, "
                   "payment.succeeded, payment.refunded");
    expect_msg(11, "routes.[0] ('a'): notify connector 'support' (plugin "
                   "'zendesk') does not consume 'plugboard.delivery.dead'");
    expect_msg(13, "routes.[1] ('b'): source 'crm' (plugin 'hubspot') does "
                   "not emit '*'; it emits: nothing");
    /* "*" from payments: crm consumes payment.*, support only one type */
    expect_msg(14, "routes.[2] ('c'): destination 'support' (plugin "
                   "'zendesk') does not consume 'payment.succeeded', "
                   "'payment.refunded', which source 'payments' emits and "
                   "'*' matches; it consumes: payment.failed, ticket.created");
    cr_expect_eq(s_diag.count, 4, "%s", s_dump());
    pb_config_destroy(&cfg);
}

/* A pattern is expanded against what the source declares it emits: each
 * destination must consume every type that can reach it, not just one. */
Test(config, bind_checks_every_type_a_wildcard_route_carries)
{
    pb_config_t *cfg = s_load(
        CONNECTORS
        "routes = ( { name = \"a\"; from = \"payments\";\n" /* 11 */
        "  when = \"*\"; to = \"archive\"; " ROUTE_BODY "},\n"
        "  { name = \"b\"; from = \"payments\";\n" /* 13 */
        "  when = \"payment.*\"; to = \"support\"; " ROUTE_BODY "},\n"
        "  { name = \"c\"; from = \"payments\";\n" /* 15 */
        "  when = \"*\"; to = [ \"crm\", \"mail\" ]; " ROUTE_BODY "},\n"
        "  { name = \"d\"; from = \"payments\";\n" /* 17 */
        "  when = [ \"payment.failed\", \"ticket.*\" ]; to = \"support\"; "
        ROUTE_BODY "} );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(11, "routes.[0] ('a'): destination 'archive' (plugin 'file') "
                   "does not consume 'payment.failed', 'payment.succeeded', "
                   "'payment.refunded', which source 'payments' emits and "
                   "'*' matches; it consumes: contact.upserted");
    expect_msg(13, "routes.[1] ('b'): destination 'support' (plugin "
                   "'zendesk') does not consume 'payment.succeeded', "
                   "'payment.refunded', which source 'payments' emits and "
                   "'payment.*' matches");
    /* d: payment.failed is consumed; ticket.* is the source's error only */
    expect_msg(17, "routes.[3] ('d'): source 'payments' (plugin 'stripe') "
                   "does not emit 'ticket.*'");
    cr_expect_eq(s_diag.count, 3, "c is valid, d has one error:\n%s",
                 s_dump());
    pb_config_destroy(&cfg);
}

/* alert_after and alert_interval: owner notices about an unhealthy
 * destination (docs/operations.md, "Owner notices") */
Test(config, route_alerts_are_read_and_checked)
{
    pb_config_t *cfg = s_load(
        CONNECTORS
        "routes = ( { name = \"a\"; from = \"payments\";\n" /* 11 */
        "  when = \"payment.failed\"; to = \"mail\"; " ROUTE_BODY
        "notify = \"mail\"; alert_after = \"10m\"; },\n"
        "  { name = \"b\"; from = \"payments\";\n" /* 13 */
        "  when = \"payment.failed\"; to = \"mail\"; " ROUTE_BODY
        "notify = \"mail\"; alert_interval = \"15m\"; } );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_expect_eq(cfg->routes[0].alert_after_ms, 10 * 60 * 1000);
    cr_expect_eq(cfg->routes[0].alert_interval_ms, 60 * 60 * 1000,
                 "an hour unless set");
    cr_expect_eq(cfg->routes[1].alert_after_ms, 0, "no backlog alert");
    cr_expect_eq(cfg->routes[1].alert_interval_ms, 15 * 60 * 1000);
    pb_config_destroy(&cfg);

    cfg = s_load(CONNECTORS
                 "routes = ( { name = \"a\"; from = \"payments\";\n" /* 11 */
                 "  when = \"payment.failed\"; to = \"mail\"; " ROUTE_BODY
                 "\n  alert_after = \"10m\"; },\n" /* 13 */
                 "  { name = \"b\"; from = \"payments\";\n" /* 14 */
                 "  when = \"payment.failed\"; to = \"mail\"; " ROUTE_BODY
                 "notify = \"mail\";\n" /* 15 */
                 "  alert_after = \"500ms\"; alert_interval = 60; } );\n");
    cr_assert_null(cfg);
    expect_msg(13, "routes.[0] ('a'): 'alert_after' needs 'notify'");
    expect_msg(16, "routes.[1].alert_after: expected a duration in [1s, 30d], "
                   "got '500ms'");
    expect_msg(16, "routes.[1].alert_interval: expected a duration such as "
                   "\"30s\", got an integer");
    cr_expect_eq(s_diag.count, 3, "%s", s_dump());
}

Test(config, bind_needs_an_alert_notify_that_consumes_unhealthy)
{
    pb_config_t *cfg = s_load(
        CONNECTORS "routes = ( { name = \"x\"; from = \"payments\";\n" /* 11 */
                   "  when = \"payment.failed\"; to = \"mail\"; " ROUTE_BODY
                   "notify = \"archive\"; alert_after = \"1h\"; } );\n");
    cr_assert_not_null(cfg, "errors:\n%s", s_dump());
    cr_assert_eq(pb_config_bind(cfg, s_describe, NULL, &s_diag), PB_ECONFIG);
    expect_msg(11, "routes.[0] ('x'): 'alert_after' needs a notify connector "
                   "that consumes 'plugboard.connector.unhealthy'; 'archive' "
                   "(plugin 'file') consumes: contact.upserted");
    pb_config_destroy(&cfg);
}

Test(config, settings_bind_without_a_file_names_the_source)
{
    pb_raw_setting_t raw[] = {
        {.name = "url", .kind = PB_RAW_STRING, .str = "smtp://h:25"},
        {.name = "port", .kind = PB_RAW_INT, .i = 25},
    };
    plugboard_settings_t *s =
        pb_settings_bind(s_smtp_settings, raw, 2, "harness", &s_diag);
    cr_assert_null(s);
    cr_expect_eq(s_diag.count, 2, "%s", s_dump());
    cr_expect_str_eq(s_diag.messages[0],
                     "harness: port: unknown setting (expected one of: url, "
                     "from)");
    cr_expect_str_eq(s_diag.messages[1],
                     "harness: missing required setting 'from'");

    raw[1] = (pb_raw_setting_t){
        .name = "from", .kind = PB_RAW_STRING, .str = "a@b.c"};
    pb_diag_release(&s_diag);
    s = pb_settings_bind(s_smtp_settings, raw, 2, "harness", &s_diag);
    cr_assert_not_null(s, "%s", s_dump());
    cr_expect_str_eq(pb_settings_string(s, "from"), "a@b.c");
    pb_settings_destroy(&s);
    cr_expect_null(s);
    pb_settings_destroy(&s);

    s = pb_settings_bind(NULL, NULL, 0, "harness", &s_diag);
    cr_assert_not_null(s, "no declared settings and none given is fine");
    pb_settings_destroy(&s);
}

/* ------------------------------------------------------------------ */
/* Durations and patterns                                              */
/* ------------------------------------------------------------------ */

Test(config, parse_duration_table)
{
    static const struct {
        const char *text;
        int rc;
        int64_t ms;
    } cases[] = {
        {"250ms", 0, 250},
        {"5s", 0, 5000},
        {"15m", 0, 900000},
        {"2h", 0, 7200000},
        {"7d", 0, 604800000},
        {"0s", 0, 0},
        {"1h30m", 0, 5400000},
        {"1m500ms", 0, 60500},
        {"", PB_EINVAL, 0},
        {"5", PB_EINVAL, 0},
        {"-5s", PB_EINVAL, 0},
        {"+5s", PB_EINVAL, 0},
        {"5 s", PB_EINVAL, 0},
        {" 5s", PB_EINVAL, 0},
        {"5s ", PB_EINVAL, 0},
        {"1.5s", PB_EINVAL, 0},
        {"5w", PB_EINVAL, 0},
        {"5sec", PB_EINVAL, 0},
        {"s", PB_EINVAL, 0},
        {"30m1h", PB_EINVAL, 0},
        {"1s1s", PB_EINVAL, 0},
        {"9223372036854775807ms", 0, INT64_MAX},
        {"9223372036854775808ms", PB_EINVAL, 0},
        {"106751991167301d", PB_EINVAL, 0},
        {"99999999999999999999s", PB_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = -1;
        int rc = pb_parse_duration(cases[i].text, &ms);
        cr_expect_eq(rc, cases[i].rc, "'%s': rc %d", cases[i].text, rc);
        if (cases[i].rc == 0)
            cr_expect_eq(ms, cases[i].ms, "'%s': %lld ms", cases[i].text,
                         (long long)ms);
        else
            cr_expect_eq(ms, -1, "'%s': output untouched on error",
                         cases[i].text);
    }
    int64_t ms;
    cr_expect_eq(pb_parse_duration(NULL, &ms), PB_EINVAL);
}

Test(config, type_matches_table)
{
    static const struct {
        const char *pattern;
        const char *type;
        bool match;
    } cases[] = {
        {"*", "payment.failed", true},
        {"*", "plugboard.delivery.dead", true},
        {"payment.*", "payment.failed", true},
        {"payment.*", "payment.card.expired", true},
        {"payment.*", "payment", false},
        {"payment.*", "payment.", false},
        {"payment.*", "payments.failed", false},
        {"payment.*", "subscription.canceled", false},
        {"payment.failed", "payment.failed", true},
        {"payment.failed", "payment.failed.twice", false},
        {"payment.failed", "payment.succeeded", false},
        {"plugboard.delivery.*", "plugboard.delivery.dead", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_expect_eq(pb_type_matches(cases[i].pattern, cases[i].type),
                     cases[i].match, "'%s' vs '%s'", cases[i].pattern,
                     cases[i].type);
    cr_expect_not(pb_type_matches(NULL, "a"));
    cr_expect_not(pb_type_matches("a", NULL));
}

Test(config, diag_collects_formatted_messages)
{
    pb_diag_add(&s_diag, "%s:%d: %s", "f.cfg", 7, "x");
    pb_diag_add(&s_diag, "second");
    cr_assert_eq(s_diag.count, 2);
    cr_expect_str_eq(s_diag.messages[0], "f.cfg:7: x");
    cr_expect_str_eq(s_diag.messages[1], "second");
    pb_diag_release(&s_diag);
    cr_expect_eq(s_diag.count, 0);
    cr_expect_null(s_diag.messages);
}
