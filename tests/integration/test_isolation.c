/*
 * test_isolation.c - isolation = "process" on the real host binary: the
 * plugin runs in a supervised `plugboard worker` child, and a plugin that
 * crashes takes down only its worker.
 *
 *   in  (good, process)   webhooks are forwarded to its worker
 *   in -> out   (stamp, process)  crashes on the events crash_key names
 *   in -> keep  (stamp, thread)   must get everything, whatever out does
 *   ops         (stamp, thread)   receives the dead-letter notices
 *
 * The host runs with ASAN_OPTIONS=handle_segv=0 so that a crashing worker
 * really dies of SIGSEGV (the test plugin's crash is not instrumented).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"
#include "traffic.h"

#define T_WAIT_MS 20000

static char *s_dir;
static int s_port;
static pb_hostproc_t s_host;

static const char *const s_env[] = {"ASAN_OPTIONS=handle_segv=0", NULL};

static char *
s_config(const char *out_settings, int attempts)
{
    char *text = NULL;
    if (asprintf(
            &text,
            "plugboard = {\n"
            "  data_dir = \"%s/var\";\n"
            "  log_level = \"info\";\n"
            "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\" ];\n"
            "  http = { listen = \"127.0.0.1:%d\"; };\n"
            "  drain_timeout = \"5s\";\n"
            "};\n"
            "connectors = (\n"
            "  { name = \"in\"; plugin = \"good\"; isolation = \"process\"; "
            "},\n"
            "  { name = \"out\"; plugin = \"stamp\"; isolation = \"process\";\n"
            "    settings = { record = \"%s/out.jsonl\"; %s }; },\n"
            "  { name = \"keep\"; plugin = \"stamp\";\n"
            "    settings = { record = \"%s/keep.jsonl\"; }; },\n"
            "  { name = \"ops\"; plugin = \"stamp\";\n"
            "    settings = { record = \"%s/ops.jsonl\"; }; }\n"
            ");\n"
            "routes = (\n"
            "  { name = \"to-out\"; from = \"in\"; when = \"*\"; to = [ "
            "\"out\" ];\n"
            "    why = \"orders were re-typed by hand\";\n"
            "    owner = \"ops@example.com\"; notify = \"ops\";\n"
            "    retry = { attempts = %d; initial = \"50ms\"; max = \"200ms\"; "
            "}; },\n"
            "  { name = \"to-keep\"; from = \"in\"; when = \"*\"; to = [ "
            "\"keep\" ];\n"
            "    why = \"the ledger missed failed payments\";\n"
            "    owner = \"ops@example.com\"; }\n"
            ");\n",
            s_dir, s_port, s_dir, out_settings, s_dir, s_dir, attempts) < 0)
        return NULL;
    return text;
}

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-isolation");
    cr_assert_not_null(s_dir);
    s_port = pb_test_free_port();
}

static void
s_start(const char *out_settings, int attempts)
{
    char *text = s_config(out_settings, attempts);
    bool up = pb_hostproc_start(&s_host, s_dir, s_port, text, s_env);
    free(text);
    if (!up) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("host did not start:\n%s", log ? log : "(no log)");
    }
}

static void
teardown(void)
{
    if (s_host.pid > 0) {
        int rc = pb_hostproc_stop(&s_host);
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_expect_eq(rc, 0, "host exit status %d; log:\n%s", rc,
                     log ? log : "");
        cr_expect(!log || (!strstr(log, "ERROR: AddressSanitizer") &&
                           !strstr(log, "ERROR: LeakSanitizer") &&
                           !strstr(log, "runtime error:")),
                  "sanitizer report in the host log:\n%s", log);
        free(log);
    }
    pb_test_rmtree(s_dir);
    free(s_dir);
    s_dir = NULL;
}

TestSuite(isolation, .init = setup, .fini = teardown, .timeout = 120);

static json_t *
s_ask(const char *a, const char *b, const char *c)
{
    const char *args[8];
    size_t k = 0;
    args[k++] = a;
    args[k++] = b;
    if (c)
        args[k++] = c;
    args[k++] = "--json";
    args[k++] = "-c";
    args[k++] = s_host.config;
    args[k] = NULL;
    char *out = NULL;
    int rc = pb_hostproc_run_cli(s_dir, args, NULL, &out);
    json_error_t jerr;
    json_t *j = rc == 0 ? json_loads(out, 0, &jerr) : NULL;
    cr_assert_not_null(j, "%s %s: exit %d: %s", a, b, rc, out);
    free(out);
    return j;
}

static json_t *
s_connector(json_t *status, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(status, "connectors"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return c;
    }
    return NULL;
}

static void
s_post(const char *key)
{
    char body[256], *resp = NULL;
    snprintf(body, sizeof body,
             "{\"type\":\"payment.failed\",\"key\":\"%s\",\"dedupe\":\"%s\"}",
             key, key);
    const char *headers[] = {"Content-Type: application/json", NULL};
    int st =
        pb_http_post(s_port, "/hooks/in", headers, body, strlen(body), &resp);
    cr_assert_eq(st, 200, "POST %s: %d %s", key, st, resp);
    free(resp);
}

typedef struct s_want {
    char path[4300];
    const char *key;
} want_t;

static bool
s_recorded(void *ctx)
{
    want_t *w = ctx;
    pb_stamp_rec_t *recs;
    size_t n = pb_stamp_read(w->path, &recs);
    bool found = pb_stamp_find(recs, n, w->key) != NULL;
    free(recs);
    return found;
}

static void
s_expect_recorded(const char *sink, const char *key)
{
    want_t w = {.key = key};
    snprintf(w.path, sizeof w.path, "%s/%s.jsonl", s_dir, sink);
    if (pb_wait_until(s_recorded, &w, T_WAIT_MS))
        return;
    char *log = pb_test_read_file(s_host.log, NULL);
    size_t len = log ? strlen(log) : 0;
    cr_assert_fail("%s never recorded %s; the host's log ends:\n%s", sink, key,
                   log ? log + (len > 6000 ? len - 6000 : 0) : "(none)");
}

/* The dead letters for destination out. */
static json_t *
s_dead(void)
{
    json_t *list = s_ask("dlq", "list", "--connector=out");
    json_t *dl = json_incref(json_object_get(list, "dead_letters"));
    json_decref(list);
    return dl;
}

static bool
s_dead_count(void *ctx)
{
    json_t *dl = s_dead();
    bool ok = json_array_size(dl) >= *(size_t *)ctx;
    json_decref(dl);
    return ok;
}

static bool
s_ops_notices(void *ctx)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/ops.jsonl", s_dir);
    return pb_count_lines(path) >= *(size_t *)ctx;
}

/* Did ops get a plugboard.delivery.dead notice saying key's delivery to
 * out died, with an error containing what? */
static bool
s_noticed(const char *key, const char *what)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/ops.jsonl", s_dir);
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (f && !found && getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        json_t *ev = json_object_get(j, "event");
        json_t *data = json_object_get(ev, "data");
        const char *type = json_string_value(json_object_get(ev, "type"));
        const char *dest =
            json_string_value(json_object_get(data, "destination"));
        const char *k = json_string_value(
            json_object_get(json_object_get(data, "event"), "key"));
        const char *err =
            json_string_value(json_object_get(data, "last_error"));
        found = type && strcmp(type, "plugboard.delivery.dead") == 0 && dest &&
                strcmp(dest, "out") == 0 && k && strcmp(k, key) == 0 && err &&
                strstr(err, what);
        json_decref(j);
    }
    free(line);
    if (f)
        fclose(f);
    return found;
}

/* Every acknowledged traffic event reached sink. */
typedef struct s_all {
    const pb_traffic_t *t;
    char path[4300];
    size_t missing;
} all_t;

static bool
s_all(void *ctx)
{
    all_t *a = ctx;
    pb_stamp_rec_t *recs;
    size_t n = pb_stamp_read(a->path, &recs);
    a->missing = 0;
    for (size_t k = 0; k < pb_traffic_acked(a->t) + pb_traffic_bad(a->t) +
                               pb_traffic_retried(a->t) + 10;
         k++) {
        if (!pb_traffic_was_acked(a->t, k))
            continue;
        char key[64];
        snprintf(key, sizeof key, "t%zu@example.com", k);
        a->missing += pb_stamp_find(recs, n, key) == NULL;
    }
    free(recs);
    return a->missing == 0;
}

static void
s_expect_all(const pb_traffic_t *t, const char *sink)
{
    all_t a = {.t = t};
    snprintf(a.path, sizeof a.path, "%s/%s.jsonl", s_dir, sink);
    cr_assert(pb_wait_until(s_all, &a, 30000),
              "%zu acknowledged events never reached %s", a.missing, sink);
}

/* ------------------------------------------------------------------ */

Test(isolation, a_segfault_kills_only_the_worker)
{
    s_start("crash_key = \"bad@example.com\";", 3);
    pb_traffic_t *t = pb_traffic_start(s_port, "in", "t", 5);
    s_post("before@example.com");
    s_expect_recorded("out", "before@example.com");
    s_post("bad@example.com");
    s_post("after@example.com");
    size_t one = 1;
    cr_assert(pb_wait_until(s_dead_count, &one, T_WAIT_MS),
              "the crashing event never became a dead letter");
    json_t *dl = s_dead();
    cr_assert_eq(json_array_size(dl), 1);
    json_t *d = json_array_get(dl, 0);
    cr_expect_eq(json_integer_value(json_object_get(d, "attempts")), 3);
    const char *err = json_string_value(json_object_get(d, "last_error"));
    cr_expect(strstr(err, "killed by signal 11"), "%s", err);
    cr_expect_str_eq(
        json_string_value(json_object_get(json_object_get(d, "event"), "key")),
        "bad@example.com");
    json_decref(dl);
    cr_assert(pb_wait_until(s_ops_notices, &one, T_WAIT_MS),
              "no dead-letter notice reached ops");
    cr_expect(s_noticed("bad@example.com", "killed by signal 11"),
              "ops got no notice naming the crashing event");
    /* the connector recovers for other events, the others never stopped */
    s_expect_recorded("out", "after@example.com");
    s_post("later@example.com");
    s_expect_recorded("out", "later@example.com");
    s_expect_recorded("keep", "bad@example.com");
    pb_traffic_stop(t);
    cr_expect_eq(pb_traffic_bad(t), 0, "last: %s", pb_traffic_last_bad(t));
    s_expect_all(t, "out");
    s_expect_all(t, "keep");
    pb_traffic_destroy(&t);
    json_t *st = s_ask("ctl", "status", NULL);
    json_t *out = s_connector(st, "out");
    cr_expect_str_eq(json_string_value(json_object_get(out, "state")),
                     "running");
    cr_expect_str_eq(json_string_value(json_object_get(out, "isolation")),
                     "process");
    cr_expect_eq(json_integer_value(json_object_get(out, "restarts")), 3);
    cr_expect(strstr(json_string_value(json_object_get(out, "failure")),
                     "Segmentation fault"));
    json_decref(st);
    cr_expect_eq(kill(s_host.pid, 0), 0, "the host died");
}

/* ctl constraint names out, cause down (once it has measured enough). */
static bool
s_out_is_down(void *ctx)
{
    (void)ctx;
    json_t *cons = s_ask("ctl", "constraint", NULL);
    json_t *hop = json_object_get(cons, "constraint");
    const char *who = json_string_value(json_object_get(hop, "connector"));
    const char *cause = json_string_value(json_object_get(hop, "cause"));
    bool down = who && cause && strcmp(who, "out") == 0 &&
                strcmp(cause, "down") == 0;
    json_decref(cons);
    return down;
}

Test(isolation, a_crash_loop_marks_the_connector_failed)
{
    s_start("crash_key = \"*\";", 10);
    s_post("first@example.com");
    size_t one = 1;
    cr_assert(pb_wait_until(s_dead_count, &one, T_WAIT_MS),
              "the event never became a dead letter");
    json_t *st = s_ask("ctl", "status", NULL);
    json_t *out = s_connector(st, "out");
    cr_assert_str_eq(json_string_value(json_object_get(out, "state")),
                     "failed");
    const char *why = json_string_value(json_object_get(out, "failure"));
    cr_expect(strstr(why, "died 5 times within 60 s") &&
                  strstr(why, "Segmentation fault"),
              "%s", why);
    cr_expect(json_is_false(json_object_get(out, "up")),
              "a failed connector is not up");
    json_decref(st);
    /* not ready: a load balancer or an alert must see the outage */
    char *page = NULL;
    cr_expect_eq(pb_http_get(s_host.port, "/readyz", &page), 503, "%s",
                 page);
    cr_expect(page && strstr(page, "'out'"), "%s", page);
    free(page);
    json_t *dl = s_dead();
    const char *err =
        json_string_value(json_object_get(json_array_get(dl, 0), "last_error"));
    cr_expect(strstr(err, "connector 'out' failed"), "%s", err);
    json_decref(dl);
    cr_assert(pb_wait_until(s_ops_notices, &one, T_WAIT_MS),
              "no dead-letter notice reached ops");
    cr_expect(s_noticed("first@example.com", "connector 'out' failed"),
              "ops got no notice naming the event of the failed connector");
    /* what arrives now becomes a dead letter at once, with a notice */
    s_post("second@example.com");
    size_t two = 2;
    cr_assert(pb_wait_until(s_dead_count, &two, T_WAIT_MS));
    cr_assert(pb_wait_until(s_ops_notices, &two, T_WAIT_MS));
    cr_expect(s_noticed("second@example.com", "connector 'out' failed"));
    s_expect_recorded("keep", "second@example.com");
    /* and the constraint finder names it, although nothing waits for it:
     * what arrives turns into dead letters */
    cr_expect(pb_wait_until(s_out_is_down, NULL, T_WAIT_MS),
              "ctl constraint never named the failed connector");

    /* a reload of the same file starts the failed connector afresh */
    json_decref(s_ask("ctl", "reload", NULL));
    st = s_ask("ctl", "status", NULL);
    cr_expect_str_eq(
        json_string_value(json_object_get(s_connector(st, "out"), "state")),
        "running", "a plain reload left the failed connector failed");
    json_decref(st);

    /* a reload that fixes the connector brings it back */
    char *text = s_config("crash_key = \"never\";", 10);
    FILE *f = fopen(s_host.config, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    json_decref(s_ask("ctl", "reload", NULL));
    st = s_ask("ctl", "status", NULL);
    cr_expect_str_eq(
        json_string_value(json_object_get(s_connector(st, "out"), "state")),
        "running");
    json_decref(st);
    json_decref(s_ask("dlq", "replay", "--all-for=to-out"));
    s_expect_recorded("out", "first@example.com");
    s_expect_recorded("out", "second@example.com");
}

/* The label out's record for key carries. */
static char *
s_label(const char *key)
{
    s_expect_recorded("out", key);
    char path[4300];
    snprintf(path, sizeof path, "%s/out.jsonl", s_dir);
    pb_stamp_rec_t *recs;
    size_t n = pb_stamp_read(path, &recs);
    const pb_stamp_rec_t *r = pb_stamp_find(recs, n, key);
    char *label = strdup(r ? r->label : "");
    free(recs);
    return label;
}

/* out's worker restarted more than *ctx times and runs again. */
static bool
s_restarted(void *ctx)
{
    json_t *st = s_ask("ctl", "status", NULL);
    json_t *out = s_connector(st, "out");
    bool ok =
        json_integer_value(json_object_get(out, "restarts")) > *(int *)ctx &&
        strcmp(json_string_value(json_object_get(out, "state")), "running") ==
            0;
    json_decref(st);
    return ok;
}

static void
s_kill_out_worker_only(void)
{
    json_t *st = s_ask("ctl", "status", NULL);
    int pid =
        (int)json_integer_value(json_object_get(s_connector(st, "out"), "pid"));
    json_decref(st);
    cr_assert_gt(pid, 0);
    cr_assert_eq(kill(pid, SIGKILL), 0);
}

/* Kill out's worker and wait until the host has started another. */
static void
s_kill_out_worker(int restarts_before)
{
    s_kill_out_worker_only();
    cr_assert(pb_wait_until(s_restarted, &restarts_before, T_WAIT_MS),
              "the killed worker was never restarted");
}

static void
s_write_config(const char *text)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", s_host.config);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(rename(tmp, s_host.config), 0);
}

Test(isolation, a_restarted_worker_runs_the_config_the_host_runs)
{
    s_start("label = \"A\";", 3);
    s_post("a@example.com");
    char *label = s_label("a@example.com");
    cr_assert_str_eq(label, "A");
    free(label);

    /* an edit the operator has not reloaded yet is not picked up by a
     * worker that happens to restart */
    char *text = s_config("label = \"EDITED\";", 3);
    s_write_config(text);
    free(text);
    s_kill_out_worker(0);
    s_post("b@example.com");
    label = s_label("b@example.com");
    cr_expect_str_eq(label, "A", "the restarted worker read the file on disk");
    free(label);

    /* nor does a file the host refused to reload break the restart */
    text = s_config("label = \"A\"; colour = \"red\";", 3);
    s_write_config(text);
    free(text);
    const char *args[] = {"ctl", "reload", "-c", s_host.config, NULL};
    char *out = NULL;
    cr_assert_eq(pb_hostproc_run_cli(s_dir, args, NULL, &out), 1, "%s", out);
    free(out);
    s_kill_out_worker(1);
    s_post("c@example.com");
    label = s_label("c@example.com");
    cr_expect_str_eq(label, "A");
    free(label);
    json_t *dl = s_dead();
    cr_expect_eq(json_array_size(dl), 0, "dead letters after a restart");
    json_decref(dl);

    /* a reload is what brings the edit in */
    text = s_config("label = \"B\";", 3);
    s_write_config(text);
    free(text);
    json_decref(s_ask("ctl", "reload", NULL));
    s_post("d@example.com");
    label = s_label("d@example.com");
    cr_expect_str_eq(label, "B");
    free(label);
}

static bool
s_out_failed(void *ctx)
{
    json_t *st = s_ask("ctl", "status", NULL);
    const char *state =
        json_string_value(json_object_get(s_connector(st, "out"), "state"));
    bool failed = state && strcmp(state, "failed") == 0;
    json_decref(st);
    return failed;
}

Test(isolation, a_worker_that_cannot_open_again_says_why)
{
    char settings[4400], opens[4300];
    snprintf(opens, sizeof opens, "%s/out.opens", s_dir);
    snprintf(settings, sizeof settings, "opens = \"%s\";", opens);
    s_start(settings, 3);
    /* the file its open appends to becomes a directory: every restart's
     * open fails, and each death must carry open's own reason */
    cr_assert_eq(unlink(opens), 0);
    cr_assert_eq(mkdir(opens, 0700), 0);
    s_kill_out_worker_only();
    cr_assert(pb_wait_until(s_out_failed, NULL, T_WAIT_MS), "out never failed");
    json_t *st = s_ask("ctl", "status", NULL);
    const char *why =
        json_string_value(json_object_get(s_connector(st, "out"), "failure"));
    cr_expect(why && strstr(why, "died 5 times") &&
                  strstr(why, "open failed: cannot write") &&
                  strstr(why, "Is a directory"),
              "%s", why);
    json_decref(st);
    char *log = pb_test_read_file(s_host.log, NULL);
    cr_expect(!strstr(log, "exited with status 1 while opening"),
              "a restart's open failure lost its reason:\n%s", log);
    free(log);
}

Test(isolation, a_killed_worker_restarts_and_the_host_takes_workers_along)
{
    s_start("", 5);
    s_post("a@example.com");
    s_expect_recorded("out", "a@example.com");
    json_t *st = s_ask("ctl", "status", NULL);
    int pid =
        (int)json_integer_value(json_object_get(s_connector(st, "out"), "pid"));
    json_decref(st);
    cr_assert_gt(pid, 0);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    s_post("b@example.com");
    s_expect_recorded("out", "b@example.com");
    st = s_ask("ctl", "status", NULL);
    json_t *out = s_connector(st, "out");
    int pid2 = (int)json_integer_value(json_object_get(out, "pid"));
    cr_expect_neq(pid2, pid);
    cr_expect_eq(json_integer_value(json_object_get(out, "restarts")), 1);
    int in_pid =
        (int)json_integer_value(json_object_get(s_connector(st, "in"), "pid"));
    json_decref(st);

    /* upgrade a process-isolated connector: the new worker runs v2 */
    char plugin[4300], *text = NULL;
    snprintf(plugin, sizeof plugin, PB_TEST_PLUGIN_DIR "/stamp_v2.so");
    const char *args[] = {"ctl",  "upgrade", "out",         "--plugin",
                          plugin, "-c",      s_host.config, NULL};
    cr_assert_eq(pb_hostproc_run_cli(s_dir, args, NULL, &text), 0, "%s", text);
    cr_assert(strstr(text, "now runs stamp 2.0.0"), "%s", text);
    free(text);
    s_post("c@example.com");
    want_t w = {.key = "c@example.com"};
    snprintf(w.path, sizeof w.path, "%s/out.jsonl", s_dir);
    cr_assert(pb_wait_until(s_recorded, &w, T_WAIT_MS));
    pb_stamp_rec_t *recs;
    size_t n = pb_stamp_read(w.path, &recs);
    cr_expect_str_eq(pb_stamp_find(recs, n, "c@example.com")->stamp, "2.0.0");
    free(recs);

    /* a host killed outright takes its workers with it */
    st = s_ask("ctl", "status", NULL);
    pid2 =
        (int)json_integer_value(json_object_get(s_connector(st, "out"), "pid"));
    json_decref(st);
    kill(s_host.pid, SIGKILL);
    int status;
    waitpid(s_host.pid, &status, 0);
    s_host.pid = 0;
    for (int i = 0; i < 100 && (kill(pid2, 0) == 0 || kill(in_pid, 0) == 0);
         i++)
        usleep(50000);
    cr_expect_neq(kill(pid2, 0), 0, "worker %d outlived its host", pid2);
    cr_expect_neq(kill(in_pid, 0), 0, "worker %d outlived its host", in_pid);
}
