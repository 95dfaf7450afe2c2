/*
 * test_admin.c - what an operator sees: the command line's help, check
 * and describe output, the ctl commands' answers and errors against a
 * running host, and the bytes of the host's HTTP answers on a raw socket.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"

static char *s_dir;

static void
setup_dir(void)
{
    s_dir = pb_test_tempdir("pb-admin");
    cr_assert_not_null(s_dir);
}

static void
teardown_dir(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
}

/* Write text to s_dir/name; the path in out. */
static void
write_file(const char *name, const char *text, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s/%s", s_dir, name);
    FILE *f = fopen(out, "w");
    cr_assert_not_null(f, "%s", out);
    fputs(text, f);
    fclose(f);
}

/* `plugboard ARGS...` in s_dir: the exit status, the output in *out. */
static int
cli(const char *const *args, char **out)
{
    return pb_hostproc_run_cli(s_dir, args, NULL, out);
}

/* The line of text that contains needle, copied into line. */
static bool
line_with(const char *text, const char *needle, char *line, size_t len)
{
    const char *p = strstr(text, needle);
    if (!p)
        return false;
    const char *start = p;
    while (start > text && start[-1] != '\n')
        start--;
    const char *end = strchr(p, '\n');
    size_t n = end ? (size_t)(end - start) : strlen(start);
    if (n >= len)
        n = len - 1;
    memcpy(line, start, n);
    line[n] = '\0';
    return true;
}

TestSuite(admin_cli, .init = setup_dir, .fini = teardown_dir, .timeout = 60);

Test(admin_cli, help_lists_every_ctl_command)
{
    char *out = NULL;
    const char *args[] = {"--help", NULL};
    cr_assert_eq(cli(args, &out), 0, "%s", out);
    char line[512];
    cr_assert(line_with(out, "  ctl ", line, sizeof line), "%s", out);
    static const char *const subs[] = {"status", "top", "constraint", "dlq",
                                       "reload", "upgrade", NULL};
    for (size_t i = 0; subs[i]; i++)
        cr_expect(strstr(line, subs[i]), "'%s' not in '%s'", subs[i], line);
    free(out);
}

Test(admin_cli, describe_shows_durations_as_durations_in_aligned_columns)
{
    char *out = NULL;
    const char *args[] = {"describe", "-p", PB_PLUGIN_DIR, "stripe", NULL};
    cr_assert_eq(cli(args, &out), 0, "%s", out);
    char line[512];
    /* tolerance is a duration of 1s..1h: the unit errors use too */
    cr_assert(line_with(out, "  tolerance ", line, sizeof line), "%s", out);
    cr_expect(strstr(line, "range [1s, 1h]"), "%s", line);
    cr_expect(!strstr(out, "3600000"), "%s", out);
    /* every setting's type starts in the same column, the longest name's
     * too */
    const char *lines[] = {"  signing_secret_previous ", "  tolerance ",
                           "  signing_secret "};
    long col = -1;
    for (size_t i = 0; i < 3; i++) {
        cr_assert(line_with(out, lines[i], line, sizeof line), "%s", out);
        const char *type = strstr(line, " string ");
        if (!type)
            type = strstr(line, " duration ");
        cr_assert_not_null(type, "%s", line);
        long at = (long)(type - line);
        if (col < 0)
            col = at;
        cr_expect_eq(at, col, "type column of '%s':\n%s", line, out);
    }
    free(out);
}

Test(admin_cli, check_warns_that_an_empty_config_routes_nothing)
{
    char path[4200];
    write_file("empty.cfg", "", path, sizeof path);
    char *out = NULL;
    const char *args[] = {"check", "-c", path, NULL};
    cr_expect_eq(cli(args, &out), 0, "%s", out);
    cr_expect(strstr(out, "warning: ") && strstr(out, "routes nothing"),
              "%s", out);
    free(out);
    write_file("only.cfg", "plugboard = { log_level = \"info\"; };\n", path,
               sizeof path);
    cr_expect_eq(cli(args, &out), 0, "%s", out);
    cr_expect(strstr(out, "routes nothing"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------------ */
/* Against a running host                                              */
/* ------------------------------------------------------------------ */

#define SECRET "whsec_admin_test_secret"

static const char s_head[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"info\";\n"
    "  plugin_path = [ \"" PB_PLUGIN_DIR "\" ];\n";
static const char s_http[] =
    "  http = { listen = \"127.0.0.1:@PORT@\"; body_limit = 65536; };\n";
static const char s_tail[] =
    "  drain_timeout = \"5s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"payments\"; plugin = \"stripe\";\n"
    "    settings = { signing_secret = \"env:STRIPE_WEBHOOK_SECRET\"; }; },\n"
    "  { name = \"crm\"; plugin = \"file\";\n"
    "    settings = { path = \"@DIR@/out/crm.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"payments-to-crm\"; from = \"payments\";\n"
    "    when = [ \"payment.*\" ]; to = [ \"crm\" ];\n"
    "    why = \"payments re-typed into the CRM\";\n"
    "    owner = \"revops@example.com\"; }\n"
    ");\n";

static const char *const s_env[] = {"STRIPE_WEBHOOK_SECRET=" SECRET, NULL};
static pb_hostproc_t s_host;

static void
setup_host(void)
{
    setup_dir();
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s%s%s", s_head, s_http, s_tail);
    int port = pb_test_free_port();
    if (!pb_hostproc_start(&s_host, s_dir, port, cfg, s_env)) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("host did not start:\n%s", log ? log : "(no log)");
    }
}

static void
teardown_host(void)
{
    if (s_host.pid > 0)
        pb_hostproc_stop(&s_host);
    teardown_dir();
}

/* Rewrite the running host's config: s_head, http, s_tail with @DIR@
 * and @PORT@ filled in. */
static void
rewrite_config(const char *http, int port)
{
    char text[4096], out[8192], ports[16];
    snprintf(text, sizeof text, "%s%s%s", s_head, http, s_tail);
    snprintf(ports, sizeof ports, "%d", port);
    size_t o = 0;
    for (const char *p = text; *p && o + 4200 < sizeof out;) {
        if (strncmp(p, "@DIR@", 5) == 0) {
            o += (size_t)snprintf(out + o, sizeof out - o, "%s", s_dir);
            p += 5;
        } else if (strncmp(p, "@PORT@", 6) == 0) {
            o += (size_t)snprintf(out + o, sizeof out - o, "%s", ports);
            p += 6;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    FILE *f = fopen(s_host.config, "w");
    cr_assert_not_null(f);
    fputs(out, f);
    fclose(f);
}

/* `plugboard ctl ARGS... -c <config>`: exit status, output in *out. */
static int
ctl(const char *const *args, char **out)
{
    const char *argv[16];
    size_t n = 0;
    argv[n++] = "ctl";
    for (size_t i = 0; args[i] && n < 12; i++)
        argv[n++] = args[i];
    argv[n++] = "-c";
    argv[n++] = s_host.config;
    argv[n] = NULL;
    return pb_hostproc_run_cli(s_dir, argv, s_env, out);
}

/* Send req on a fresh connection, read to EOF; caller frees. */
static char *
raw_request(const char *req, size_t len, size_t *got)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s_host.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(write(fd, req, len), (ssize_t)len);
    size_t cap = 65536, n = 0;
    char *buf = calloc(1, cap + 1);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0)
            break;
        ssize_t r = read(fd, buf + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *got = n;
    return buf;
}

/* One well-formed response: one status line, a Content-Length that is
 * exactly the bytes after the head. */
static void
expect_one_response(const char *resp, size_t n, const char *status)
{
    cr_expect(strncmp(resp, status, strlen(status)) == 0, "%s", resp);
    cr_expect(!strstr(resp + 1, "HTTP/1.1 "), "a second status line:\n%s",
              resp);
    const char *end = strstr(resp, "\r\n\r\n");
    cr_assert_not_null(end, "%s", resp);
    const char *cl = strcasestr(resp, "\r\nContent-Length: ");
    cr_assert(cl && cl < end, "%s", resp);
    long want = atol(cl + 18);
    cr_expect_eq((long)(n - (size_t)(end + 4 - resp)), want, "%s", resp);
}

TestSuite(admin_host, .init = setup_host, .fini = teardown_host,
          .timeout = 120);

/* Known bug, not fixed: libmicrohttpd 0.9.75 answers these itself before
 * any plugboard callback runs, and writes its own 400 head twice before
 * its HTML page.  Enable when the host works around or no longer uses
 * that version. */
Test(admin_host, a_bad_content_length_gets_one_well_formed_answer,
     .disabled = true)
{
    static const char *const lengths[] = {"-1", "99999999999999999999999",
                                          "12abc"};
    for (size_t i = 0; i < 3; i++) {
        char req[512];
        int len = snprintf(req, sizeof req,
                           "POST /hooks/payments HTTP/1.1\r\nHost: t\r\n"
                           "Connection: close\r\nContent-Length: %s\r\n\r\n"
                           "{}",
                           lengths[i]);
        size_t n = 0;
        char *resp = raw_request(req, (size_t)len, &n);
        expect_one_response(resp, n, "HTTP/1.1 4");
        free(resp);
    }
}

Test(admin_host, a_window_above_the_maximum_is_refused_naming_it)
{
    char *out = NULL;
    const char *top[] = {"top", "--window", "90s", NULL};
    cr_expect_eq(ctl(top, &out), 2, "%s", out);
    cr_expect(strstr(out, "error: --window '90s'") && strstr(out, "60s"),
              "%s", out);
    cr_expect(!strstr(out, "rates over"), "%s", out);
    free(out);
    const char *constraint[] = {"constraint", "--window", "5m", NULL};
    cr_expect_eq(ctl(constraint, &out), 2, "%s", out);
    cr_expect(strstr(out, "error: --window '5m'") && strstr(out, "60s"),
              "%s", out);
    free(out);
    /* the maximum itself is fine */
    const char *max[] = {"constraint", "--window", "60s", NULL};
    cr_expect_eq(ctl(max, &out), 0, "%s", out);
    free(out);
}

Test(admin_host, dlq_list_names_an_unknown_route_or_connector)
{
    char *out = NULL;
    const char *route[] = {"dlq", "list", "--route", "nosuch", NULL};
    cr_expect_eq(ctl(route, &out), 1, "%s", out);
    cr_expect(strstr(out, "no route 'nosuch'"), "%s", out);
    free(out);
    const char *conn[] = {"dlq", "list", "--connector", "nosuch", NULL};
    cr_expect_eq(ctl(conn, &out), 1, "%s", out);
    cr_expect(strstr(out, "no connector 'nosuch'"), "%s", out);
    free(out);
    /* a known route with nothing dead is still an empty list */
    const char *known[] = {"dlq", "list", "--route", "payments-to-crm",
                           NULL};
    cr_expect_eq(ctl(known, &out), 0, "%s", out);
    cr_expect(strstr(out, "no dead letters"), "%s", out);
    free(out);
}

Test(admin_host, upgrade_takes_a_value_ending_in_so_as_a_path)
{
    char path[4200];
    write_file("notelf.so", "not an ELF file at all, just text\n", path,
               sizeof path);
    char *out = NULL;
    const char *args[] = {"upgrade", "crm", "--plugin", "notelf.so", NULL};
    cr_expect_eq(ctl(args, &out), 1, "%s", out);
    cr_expect(!strstr(out, "notelf.so.so"), "%s", out);
    cr_expect(strstr(out, path), "names the file in the caller's cwd: %s",
              out);
    free(out);
}

Test(admin_host, reload_says_which_changes_wait_for_a_restart)
{
    int admin = pb_test_free_port();
    char http[512];
    snprintf(http, sizeof http,
             "  http = { listen = \"127.0.0.1:@PORT@\"; body_limit = 131072;\n"
             "           admin_listen = \"127.0.0.1:%d\"; };\n",
             admin);
    rewrite_config(http, s_host.port);
    char *out = NULL;
    const char *args[] = {"reload", NULL};
    cr_expect_eq(ctl(args, &out), 0, "%s", out);
    cr_expect(strstr(out, "not applied"), "%s", out);
    cr_expect(strstr(out, "plugboard.http.body_limit"), "%s", out);
    cr_expect(strstr(out, "plugboard.http.admin_listen"), "%s", out);
    cr_expect(strstr(out, "restart"), "%s", out);
    free(out);
    const char *json[] = {"reload", "--json", NULL};
    cr_expect_eq(ctl(json, &out), 0, "%s", out);
    cr_expect(strstr(out, "\"restart_needed\"") &&
                  strstr(out, "\"plugboard.http.body_limit\""),
              "%s", out);
    free(out);
}

Test(admin_host, a_refused_reload_is_logged_once_per_reason)
{
    rewrite_config(s_http, pb_test_free_port());
    char *out = NULL;
    const char *args[] = {"reload", NULL};
    cr_expect_eq(ctl(args, &out), 1, "%s", out);
    /* file and line of the new value (s_http is line 5) */
    char want[4300];
    snprintf(want, sizeof want, "%s:5: plugboard.http.listen cannot change",
             s_host.config);
    cr_expect(strstr(out, want), "want '%s' in:\n%s", want, out);
    free(out);
    /* SIGHUP's refusal: one key=value line per reason in the log, no
     * message spread over lines, no JSON inside a line */
    kill(s_host.pid, SIGHUP);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    char *log = pb_test_read_file(s_host.log, NULL);
    cr_assert_not_null(log);
    size_t refused = 0, listening = 0;
    for (char *line = log, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        cr_assert_not_null(nl, "unterminated last line");
        *nl = '\0';
        cr_expect(strncmp(line, "ts=", 3) == 0, "not a log line: '%s'", line);
        cr_expect(strstr(line, " component="), "no component: '%s'", line);
        cr_expect(!strchr(line, '{'), "JSON in a line: '%s'", line);
        if (strstr(line, "plugboard.http.listen cannot change"))
            refused++;
        if (strstr(line, "listening on"))
            listening++;
    }
    /* once for ctl reload, once for SIGHUP */
    cr_expect_eq(refused, 2, "%s", pb_test_read_file(s_host.log, NULL));
    cr_expect_eq(listening, 1);
    free(log);
}

Test(admin_host, a_successful_reload_is_logged_as_key_value)
{
    char *out = NULL;
    const char *args[] = {"reload", NULL};
    cr_expect_eq(ctl(args, &out), 0, "%s", out);
    free(out);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    char *log = pb_test_read_file(s_host.log, NULL);
    char line[1024];
    cr_assert(line_with(log, "config reloaded", line, sizeof line), "%s",
              log);
    cr_expect(strstr(line, " unchanged=payments,crm"), "%s", line);
    cr_expect(!strchr(line, '{'), "%s", line);
    /* a plugin's own lines carry a component too */
    cr_expect(!strstr(log, "level=info connector="), "%s", log);
    free(log);
}

/* Write a second host's config (s_head, http, s_tail) into DIR/second.cfg
 * under dir, @DIR@ and @PORT@ (s_host's port) filled in; path gets it. */
static void
write_second(const char *dir, const char *http, char *path, size_t path_len)
{
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s%s%s", s_head, http, s_tail);
    snprintf(path, path_len, "%s/second.cfg", dir);
    char text[8192];
    size_t o = 0;
    for (const char *p = cfg; *p;) {
        if (strncmp(p, "@DIR@", 5) == 0) {
            o += (size_t)snprintf(text + o, sizeof text - o, "%s", dir);
            p += 5;
        } else if (strncmp(p, "@PORT@", 6) == 0) {
            o += (size_t)snprintf(text + o, sizeof text - o, "%d",
                                  s_host.port);
            p += 6;
        } else {
            text[o++] = *p++;
        }
    }
    text[o] = '\0';
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* `plugboard run -c path` in dir fails; its output names want. */
static void
expect_run_fails(const char *dir, const char *path, const char *want,
                 const char *cause)
{
    char *out = NULL;
    const char *args[] = {"run", "-c", path, NULL};
    cr_expect_eq(pb_hostproc_run_cli(dir, args, s_env, &out), 1, "%s", out);
    cr_expect(strstr(out, want), "want '%s' in:\n%s", want, out);
    cr_expect(strstr(out, cause), "want '%s' in:\n%s", cause, out);
    free(out);
}

Test(admin_host, run_on_a_port_in_use_names_file_and_setting)
{
    /* another host (its own data_dir) on the same listen address */
    char dir[4200], path[4300], want[4400];
    snprintf(dir, sizeof dir, "%s/second", s_dir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    write_second(dir, s_http, path, sizeof path);
    /* s_http is line 5 */
    snprintf(want, sizeof want, "error: %s:5: plugboard.http.listen: ", path);
    expect_run_fails(dir, path, want, "Address already in use");

    /* the admin listener on it, its own line */
    char http[256];
    snprintf(http, sizeof http,
             "  http = { listen = \"127.0.0.1:%d\";\n"
             "           admin_listen = \"127.0.0.1:@PORT@\"; };\n",
             pb_test_free_port());
    write_second(dir, http, path, sizeof path);
    snprintf(want, sizeof want,
             "error: %s:6: plugboard.http.admin_listen: ", path);
    expect_run_fails(dir, path, want, "Address already in use");
}

Test(admin_host, run_with_a_data_dir_it_cannot_create_names_the_line)
{
    char dir[4200], path[4300], want[4400], file[4300];
    snprintf(dir, sizeof dir, "%s/second", s_dir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    /* data_dir = "@DIR@/var" (line 2) under a regular file */
    snprintf(file, sizeof file, "%s/second/x", s_dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    write_second(dir, s_http, path, sizeof path);
    char *text = pb_test_read_file(path, NULL);
    cr_assert_not_null(text);
    char *at = strstr(text, "/var\"");
    cr_assert_not_null(at);
    char moved[8300];
    snprintf(moved, sizeof moved, "%.*s/x/var%s", (int)(at - text), text,
             at + 4);
    free(text);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(moved, f);
    fclose(f);
    snprintf(want, sizeof want, "error: %s:2: plugboard.data_dir: ", path);
    expect_run_fails(dir, path, want, "Not a directory");
}
