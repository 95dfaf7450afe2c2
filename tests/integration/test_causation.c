/*
 * test_causation.c - events a connector emits inside deliver carry the
 * delivered event's id as their causation and its correlation
 * (docs/events.md, "The envelope"), on every thread deliver runs on: the
 * actor thread, a pool thread (concurrency 2) and a worker process
 * (isolation = "process").  Real host binary, one chain:
 *
 *   in (good, webhook) --payment.failed--> a (relay, concurrency 1)
 *   a --contact.upserted--> b (relay, concurrency 2)
 *   b --contact.upserted--> c (relay, isolation = "process")
 *   every hop also --> end (good, records every event it is given)
 *
 * relay (tests/plugins/relay.c) emits one contact.upserted per delivery.
 * Each relay also emits from open and fails to open unless emit refuses
 * it (PLUGBOARD_E_INVALID): the host starting shows that it does, on the
 * actor thread, for a pool thread's own state and in a worker.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "hostproc.h"

#define T_WAIT_MS 20000

static char *s_dir;
static char s_record[4300];
static pb_hostproc_t s_host;

#define ROUTE(n, f, w, t)                                                      \
    "  { name = \"" n "\"; from = \"" f "\"; when = \"" w "\"; to = " t ";\n"  \
    "    why = \"chains were traced by hand\"; owner = \"ops@example.com\"; "  \
    "}"

static const char s_config[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "  drain_timeout = \"5s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"in\"; plugin = \"good\"; },\n"
    "  { name = \"a\"; plugin = \"relay\";\n"
    "    settings = { emit_in_open = true; }; },\n"
    "  { name = \"b\"; plugin = \"relay\"; concurrency = 2;\n"
    "    settings = { emit_in_open = true; }; },\n"
    "  { name = \"c\"; plugin = \"relay\"; isolation = \"process\";\n"
    "    settings = { emit_in_open = true; }; },\n"
    "  { name = \"end\"; plugin = \"good\";\n"
    "    settings = { record = \"@DIR@/end.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n" ROUTE("in-a", "in", "payment.failed", "[ \"a\", \"end\" ]") ",\n" ROUTE(
        "a-b", "a", "contact.upserted",
        "[ \"b\", \"end\" ]") ",\n" ROUTE("b-c", "b", "contact.upserted",
                                          "[ \"c\", \"end\" ]") ",\n" ROUTE("c-"
                                                                            "en"
                                                                            "d",
                                                                            "c",
                                                                            "co"
                                                                            "nt"
                                                                            "ac"
                                                                            "t."
                                                                            "up"
                                                                            "se"
                                                                            "rt"
                                                                            "e"
                                                                            "d",
                                                                            "\""
                                                                            "en"
                                                                            "d"
                                                                            "\"") "\n);\n";

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-causation");
    cr_assert_not_null(s_dir);
    snprintf(s_record, sizeof s_record, "%s/end.jsonl", s_dir);
    if (!pb_hostproc_start(&s_host, s_dir, pb_test_free_port(), s_config,
                           NULL)) {
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
}

TestSuite(causation, .init = setup, .fini = teardown, .timeout = 120);

static bool
s_four_recorded(void *ctx)
{
    (void)ctx;
    return pb_count_lines(s_record) >= 4;
}

/* The recorded event whose source is source (a new reference), or NULL. */
static json_t *
s_from(json_t *const *evs, size_t n, const char *source)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(json_string_value(json_object_get(evs[i], "source")),
                   source) == 0)
            return evs[i];
    return NULL;
}

static const char *
s_field(json_t *ev, const char *name)
{
    const char *v = json_string_value(json_object_get(ev, name));
    return v ? v : "(absent)";
}

Test(causation, deliver_emits_name_their_cause_and_keep_the_correlation)
{
    const char body[] = "{\"type\":\"payment.failed\",\"key\":"
                        "\"ada@example.com\",\"dedupe\":\"evt_chain_1\"}";
    const char *headers[] = {"Content-Type: application/json", NULL};
    char *resp = NULL;
    int st = pb_http_post(s_host.port, "/hooks/in", headers, body, strlen(body),
                          &resp);
    cr_assert_eq(st, 200, "%d %s", st, resp);
    free(resp);
    cr_assert(pb_wait_until(s_four_recorded, NULL, T_WAIT_MS),
              "end recorded %zu events", pb_count_lines(s_record));

    char *text = pb_test_read_file(s_record, NULL);
    cr_assert_not_null(text);
    json_t *evs[8];
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line && n < 8;
         line = strtok(NULL, "\n")) {
        json_error_t jerr;
        evs[n] = json_loads(line, 0, &jerr);
        cr_assert_not_null(evs[n], "%s: %s", line, jerr.text);
        n++;
    }
    free(text);
    cr_assert_eq(n, 4, "one event per hop");
    json_t *orig = s_from(evs, n, "in"), *a = s_from(evs, n, "a"),
           *b = s_from(evs, n, "b"), *c = s_from(evs, n, "c");
    cr_assert(orig && a && b && c, "an event of each hop");

    const char *root = s_field(orig, "id");
    cr_expect_str_eq(s_field(orig, "correlation"), root);
    /* the actor thread, a pool thread, a worker process */
    cr_expect_str_eq(s_field(a, "causation"), root);
    cr_expect_str_eq(s_field(b, "causation"), s_field(a, "id"));
    cr_expect_str_eq(s_field(c, "causation"), s_field(b, "id"));
    cr_expect_str_eq(s_field(a, "correlation"), root);
    cr_expect_str_eq(s_field(b, "correlation"), root);
    cr_expect_str_eq(s_field(c, "correlation"), root);
    for (size_t i = 0; i < n; i++)
        json_decref(evs[i]);
}
