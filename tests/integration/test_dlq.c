/*
 * test_dlq.c - retries, dead letters and what an admin does with them,
 * against the real host binary.
 *
 * Three webhook sources (the test plugin "good") each feed one route to
 * one "good" sink that misbehaves on purpose:
 *
 *   in_retry   -> flaky     fail_first = 3, retry {10, 100ms, 1s}
 *   in_reject  -> picky     reject_types = "payment.failed"
 *   in_exhaust -> stubborn  fail_first = 4, retry {3, 10ms, 50ms}
 *
 * and every route names "ops" (a "good" sink too) for its dead-letter
 * notices.  Each sink appends what it accepted to a record file, and the
 * journal is read with a read-only SQLite connection, the way an admin
 * would look at it.  The dead letters are then listed, shown, replayed
 * and dropped with the `plugboard dlq` command against the running host.
 *
 * good's fail_first counts per event id across all attempts, replays
 * included: a stubborn event fails attempts 1..3, is dead, and after a
 * replay fails once more (its 4th delivery) and then succeeds on the
 * replay's attempt 2.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "hostproc.h"

#define T_WAIT_MS 15000 /* how long anything expected may take */
#define T_ERR_STUBBORN(n) "failing delivery " #n " of 4 on purpose (fail_first)"
#define T_ERR_PICKY "type 'payment.failed' is rejected by setting reject_types"

static const char s_config[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"info\";\n"
    "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "  drain_timeout = \"5s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"in_retry\"; plugin = \"good\"; },\n"
    "  { name = \"in_reject\"; plugin = \"good\"; },\n"
    "  { name = \"in_exhaust\"; plugin = \"good\"; },\n"
    "  { name = \"flaky\"; plugin = \"good\";\n"
    "    settings = { fail_first = 3; record = \"@DIR@/flaky.jsonl\"; }; },\n"
    "  { name = \"picky\"; plugin = \"good\";\n"
    "    settings = { reject_types = \"payment.failed\";\n"
    "                 record = \"@DIR@/picky.jsonl\"; }; },\n"
    "  { name = \"stubborn\"; plugin = \"good\";\n"
    "    settings = { fail_first = 4; record = \"@DIR@/stubborn.jsonl\"; }; "
    "},\n"
    "  { name = \"ops\"; plugin = \"good\";\n"
    "    settings = { record = \"@DIR@/ops.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"retry-route\"; from = \"in_retry\"; when = \"*\";\n"
    "    to = [ \"flaky\" ]; why = \"contacts re-typed by hand\";\n"
    "    owner = \"crm-team@example.com\"; notify = \"ops\";\n"
    "    retry = { attempts = 10; initial = \"100ms\"; max = \"1s\"; }; },\n"
    "  { name = \"reject-route\"; from = \"in_reject\"; when = \"*\";\n"
    "    to = [ \"picky\" ];\n"
    "    why = \"finance chased failed cards by hand\";\n"
    "    on_failure = \"the customer is never asked to update the card\";\n"
    "    owner = \"billing-team@example.com\"; notify = \"ops\"; },\n"
    "  { name = \"exhaust-route\"; from = \"in_exhaust\"; when = \"*\";\n"
    "    to = [ \"stubborn\" ]; why = \"support saw contacts a day late\";\n"
    "    on_failure = \"agents answer without the customer's history\";\n"
    "    owner = \"support-team@example.com\"; notify = \"ops\";\n"
    "    retry = { attempts = 3; initial = \"10ms\"; max = \"50ms\"; }; }\n"
    ");\n";

static char *s_dir;
static pb_hostproc_t s_host;

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-dlq");
    cr_assert_not_null(s_dir);
    int port = pb_test_free_port();
    if (!pb_hostproc_start(&s_host, s_dir, port, s_config, NULL)) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("host did not start:\n%s", log ? log : "(no log)");
    }
}

static void
teardown(void)
{
    if (s_host.pid > 0)
        pb_hostproc_stop(&s_host);
    pb_test_rmtree(s_dir);
    free(s_dir);
    s_dir = NULL;
}

TestSuite(dlq, .init = setup, .fini = teardown, .timeout = 90);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static void
post(const char *connector, const char *json)
{
    char path[128];
    snprintf(path, sizeof path, "/hooks/%s", connector);
    const char *headers[] = {"Content-Type: application/json", NULL};
    char *resp = NULL;
    int status =
        pb_http_post(s_host.port, path, headers, json, strlen(json), &resp);
    cr_assert_eq(status, 200, "POST %s: %d %s", path, status, resp);
    free(resp);
}

/* Every JSON line of a sink's record file (an empty array if none). */
static json_t *
read_record(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.jsonl", s_dir, name);
    json_t *all = json_array();
    FILE *f = fopen(path, "r");
    if (!f)
        return all;
    char line[65536];
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *ev = json_loads(line, 0, &err);
        cr_assert_not_null(ev, "%s: line is not JSON: %s", name, err.text);
        json_array_append_new(all, ev);
    }
    fclose(f);
    return all;
}

struct lines_want {
    const char *name;
    size_t n;
};

static bool
has_lines(void *ctx)
{
    struct lines_want *w = ctx;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.jsonl", s_dir, w->name);
    return pb_count_lines(path) >= w->n;
}

static void
wait_lines(const char *name, size_t n)
{
    struct lines_want w = {name, n};
    if (!pb_wait_until(has_lines, &w, T_WAIT_MS)) {
        char *log = pb_test_read_file(s_host.log, NULL);
        size_t len = log ? strlen(log) : 0;
        cr_assert_fail("%s: %zu lines expected; host log:\n%s", name, n,
                       log ? log + (len > 6000 ? len - 6000 : 0) : "");
    }
}

/* The string at a '.'-separated path of a JSON object, or "". */
static const char *
str_at(json_t *obj, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = obj;
    for (char *save = NULL, *part = strtok_r(buf, ".", &save); part && v;
         part = strtok_r(NULL, ".", &save))
        v = json_object_get(v, part);
    const char *s = json_string_value(v);
    return s ? s : "";
}

static json_int_t
int_at(json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static sqlite3 *
journal_open(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/var/journal.db", s_dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    return db;
}

/* The first column of the first row of a query as an integer (-1 when
 * there is no row). */
static int64_t
journal_int(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    sqlite3 *db = journal_open();
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK,
                 "%s: %s", sql, sqlite3_errmsg(db));
    int64_t v =
        sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* One row of the attempts table. */
struct attempt {
    int attempt;
    int64_t at_ms;
    int outcome; /* 0 ok, 1 retry, 2 reject, 3 replayed */
    char error[256];
};

/* The attempt history of a delivery, in the order it was written. */
static int
journal_attempts(int64_t delivery_id, struct attempt *out, int max)
{
    sqlite3 *db = journal_open();
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT attempt, at_ms, outcome, "
                                    "coalesce(error, '') FROM attempts "
                                    "WHERE delivery_id = ?1 ORDER BY rowid",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_int64(st, 1, delivery_id);
    int n = 0;
    while (n < max && sqlite3_step(st) == SQLITE_ROW) {
        out[n].attempt = sqlite3_column_int(st, 0);
        out[n].at_ms = sqlite3_column_int64(st, 1);
        out[n].outcome = sqlite3_column_int(st, 2);
        snprintf(out[n].error, sizeof out[n].error, "%s",
                 (const char *)sqlite3_column_text(st, 3));
        n++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The delivery id of event_id to destination. */
static int64_t
delivery_of(const char *event_id, const char *destination)
{
    return journal_int("SELECT d.id FROM deliveries d JOIN events e ON "
                       "e.seq = d.event_seq WHERE e.id = '%s' AND "
                       "d.destination = '%s'",
                       event_id, destination);
}

struct state_want {
    int64_t id;
    int state;
};

static bool
state_reached(void *ctx)
{
    struct state_want *w = ctx;
    return journal_int("SELECT state FROM deliveries WHERE id = %lld",
                       (long long)w->id) == w->state;
}

/* The sink records an event before its answer reaches the journal: wait
 * for the journal to say so too. */
static void
wait_state(int64_t id, int state)
{
    struct state_want w = {id, state};
    cr_assert(pb_wait_until(state_reached, &w, T_WAIT_MS),
              "delivery %lld: state %lld, expected %d", (long long)id,
              (long long)journal_int("SELECT state FROM deliveries WHERE "
                                     "id = %lld",
                                     (long long)id),
              state);
}

struct dead_want {
    int64_t n;
};

static bool
dead_count_reached(void *ctx)
{
    struct dead_want *w = ctx;
    return journal_int("SELECT count(*) FROM deliveries WHERE state = 2") >=
           w->n;
}

/* Run `plugboard dlq ARGS... -c CONFIG`; the combined output in *out. */
static int
dlq(char **out, ...)
{
    const char *args[16] = {"dlq"};
    size_t n = 1;
    va_list ap;
    va_start(ap, out);
    for (const char *a; n < 13 && (a = va_arg(ap, const char *));)
        args[n++] = a;
    va_end(ap);
    args[n++] = "-c";
    args[n++] = s_host.config;
    args[n] = NULL;
    return pb_hostproc_run_cli(s_dir, args, NULL, out);
}

/* `dlq ... --json`, parsed; asserts exit status want. */
static json_t *
dlq_json(int want, const char *sub, const char *a1, const char *a2)
{
    char *out = NULL;
    int rc = a1 ? a2 ? dlq(&out, sub, a1, a2, "--json", NULL)
                     : dlq(&out, sub, a1, "--json", NULL)
                : dlq(&out, sub, "--json", NULL);
    cr_assert_eq(rc, want, "dlq %s %s: exit %d\n%s", sub, a1 ? a1 : "", rc,
                 out);
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    cr_assert_not_null(j, "dlq %s --json is JSON: %s\n%s", sub, err.text, out);
    free(out);
    return j;
}

/* The dead letter in a --json list whose destination and event key
 * match; NULL when absent. */
static json_t *
find_dead(json_t *list, const char *destination, const char *key)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(list, "dead_letters"), i, d)
    {
        if (strcmp(str_at(d, "destination"), destination) == 0 &&
            strcmp(str_at(d, "event.key"), key) == 0)
            return d;
    }
    return NULL;
}

/* The record line whose event key is key; NULL when absent. */
static json_t *
find_key(json_t *record, const char *key)
{
    size_t i;
    json_t *ev;
    json_array_foreach(record, i, ev)
    {
        if (strcmp(str_at(ev, "key"), key) == 0)
            return ev;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Retries                                                             */
/* ------------------------------------------------------------------ */

/*
 * flaky answers RETRY three times, then OK.  The destination gets the
 * event on attempt 4, and the attempt history shows the backoff: full
 * jitter draws each delay from [0, min(max, initial * 2^(n-1))], so a
 * single gap may legitimately be close to 0, but the gaps never shrink
 * below zero and add up to clearly more than nothing (three draws under
 * 20 ms in all: odds of about 1 in 6000).  No upper bound: a slow,
 * sanitized host may take longer, and that is no failure.  That each
 * delay stays within its ceiling and each attempt waits for the delay
 * drawn is proven exactly by test_router's
 * transient_failures_are_retried_with_backoff and by test_retry.
 */
Test(dlq, a_flaky_destination_gets_the_event_after_backoff)
{
    post("in_retry", "{\"type\":\"contact.upserted\",\"key\":"
                     "\"ann@example.com\",\"data\":{\"case\":\"backoff\"}}");
    wait_lines("flaky", 1);
    json_t *rec = read_record("flaky");
    cr_assert_eq(json_array_size(rec), 1, "delivered once");
    json_t *ev = json_array_get(rec, 0);
    cr_expect_str_eq(str_at(ev, "data.case"), "backoff");
    cr_expect_eq(int_at(ev, "attempt"), 4, "three failures, then success");

    int64_t id = delivery_of(str_at(ev, "id"), "flaky");
    cr_assert_gt(id, 0);
    wait_state(id, 1);
    cr_expect_eq(journal_int("SELECT attempts FROM deliveries WHERE id = "
                             "%lld",
                             (long long)id),
                 4);
    struct attempt a[8];
    cr_assert_eq(journal_attempts(id, a, 8), 4);
    static const int64_t ceiling[3] = {100, 200, 400};
    int64_t total = 0;
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(a[i].attempt, i + 1);
        cr_expect_eq(a[i].outcome, i < 3 ? 1 : 0);
        if (i < 3)
            cr_expect(strstr(a[i].error, "fail_first") != NULL,
                      "attempt %d error: '%s'", i + 1, a[i].error);
        if (i == 0)
            continue;
        int64_t gap = a[i].at_ms - a[i - 1].at_ms;
        total += gap;
        cr_log_info("backoff: attempt %d came %lld ms after attempt %d "
                    "(ceiling %lld ms)",
                    i + 1, (long long)gap, i, (long long)ceiling[i - 1]);
        cr_expect_geq(gap, 0, "attempt %d before attempt %d", i + 1, i);
    }
    cr_expect_geq(total, 20, "backoff observed: %lld ms over 3 retries",
                  (long long)total);
    json_decref(rec);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "clean exit on SIGTERM");
}

/*
 * Events with one key reach flaky in acceptance order although each of
 * them fails three times first: e2 and e3 wait for e1 (they are not even
 * tried before e1 is delivered), e3 for e2.
 */
Test(dlq, same_key_order_holds_under_retries)
{
    post("in_retry", "{\"type\":\"contact.upserted\",\"key\":"
                     "\"kim@example.com\",\"data\":{\"n\":1}}");
    post("in_retry",
         "[{\"type\":\"contact.upserted\",\"key\":\"kim@example.com\","
         "\"data\":{\"n\":2}},"
         "{\"type\":\"contact.upserted\",\"key\":\"kim@example.com\","
         "\"data\":{\"n\":3}},"
         "{\"type\":\"contact.upserted\",\"key\":\"lee@example.com\","
         "\"data\":{\"n\":4}}]");
    wait_lines("flaky", 4);
    json_t *rec = read_record("flaky");
    cr_assert_eq(json_array_size(rec), 4);
    json_int_t order[4];
    char ids[4][64];
    int kn = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(rec, i, ev)
    {
        cr_expect_eq(int_at(ev, "attempt"), 4, "each failed three times");
        if (strcmp(str_at(ev, "key"), "kim@example.com") != 0)
            continue;
        order[kn] = int_at(json_object_get(ev, "data"), "n");
        snprintf(ids[kn], sizeof ids[kn], "%s", str_at(ev, "id"));
        kn++;
    }
    cr_assert_eq(kn, 3);
    cr_expect(order[0] == 1 && order[1] == 2 && order[2] == 3,
              "kim's events arrived as %lld %lld %lld", (long long)order[0],
              (long long)order[1], (long long)order[2]);

    /* the journal's history: the next event of the key was first tried
     * only after the previous one succeeded */
    for (int k = 0; k < 3; k++)
        wait_state(delivery_of(ids[k], "flaky"), 1);
    for (int k = 1; k < 3; k++) {
        int64_t prev = delivery_of(ids[k - 1], "flaky");
        int64_t next = delivery_of(ids[k], "flaky");
        int64_t prev_ok = journal_int("SELECT at_ms FROM attempts WHERE "
                                      "delivery_id = %lld AND outcome = 0",
                                      (long long)prev);
        int64_t next_first = journal_int("SELECT min(at_ms) FROM attempts "
                                         "WHERE delivery_id = %lld",
                                         (long long)next);
        cr_expect_geq(next_first, prev_ok,
                      "n=%d tried at %lld, before n=%d was delivered at %lld",
                      k + 1, (long long)next_first, k, (long long)prev_ok);
    }
    json_decref(rec);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "clean exit on SIGTERM");
}

/* ------------------------------------------------------------------ */
/* Dead letters                                                        */
/* ------------------------------------------------------------------ */

/* The notice about the dead letter of event_id, from ops' record. */
static json_t *
find_notice(json_t *ops, const char *event_id)
{
    size_t i;
    json_t *n;
    json_array_foreach(ops, i, n)
    {
        if (strcmp(str_at(n, "data.event.id"), event_id) == 0)
            return n;
    }
    return NULL;
}

static void
expect_notice(json_t *ops, const char *event_id, const char *route,
              const char *destination, const char *why, const char *owner,
              const char *on_failure, int attempts, const char *last_error)
{
    json_t *n = find_notice(ops, event_id);
    cr_assert_not_null(n, "no notice about event %s", event_id);
    cr_expect_str_eq(str_at(n, "type"), "plugboard.delivery.dead");
    json_t *d = json_object_get(n, "data");
    cr_expect_str_eq(str_at(d, "route"), route);
    cr_expect_str_eq(str_at(d, "destination"), destination);
    cr_expect_str_eq(str_at(d, "why"), why);
    cr_expect_str_eq(str_at(d, "owner"), owner);
    cr_expect_str_eq(str_at(d, "on_failure"), on_failure);
    cr_expect_eq(int_at(d, "attempts"), attempts, "%s", route);
    cr_expect_str_eq(str_at(d, "last_error"), last_error);
}

/*
 * The whole life of dead letters: picky rejects a payment.failed (dead at
 * once, after 1 attempt), stubborn runs three contacts out of attempts
 * (dead after 3, with the last error).  Each dead letter tells ops.  An
 * admin lists them, shows one, replays it (delivered on the replay's
 * second attempt, same delivery, history kept), drops another and
 * replays the rest of the route with --all-for.
 */
Test(dlq, dead_letters_are_listed_shown_replayed_and_dropped)
{
    post("in_reject", "{\"type\":\"payment.failed\",\"key\":"
                      "\"bob@example.com\",\"data\":{\"amount\":1200}}");
    post("in_exhaust",
         "[{\"type\":\"contact.upserted\",\"key\":\"a@example.com\"},"
         "{\"type\":\"contact.upserted\",\"key\":\"b@example.com\"},"
         "{\"type\":\"contact.upserted\",\"key\":\"c@example.com\"}]");
    if (!pb_wait_until(dead_count_reached, &(struct dead_want){4}, T_WAIT_MS))
        cr_assert_fail("4 dead letters expected, %lld in the journal",
                       (long long)journal_int("SELECT count(*) FROM "
                                              "deliveries WHERE state = 2"));
    wait_lines("ops", 4);
    cr_expect_eq(journal_int("SELECT count(*) FROM deliveries WHERE state = "
                             "2"),
                 4, "nothing else died");

    /* the admin's view: a table, and the same as JSON */
    char *out = NULL;
    cr_assert_eq(dlq(&out, "list", NULL), 0, "%s", out);
    cr_expect(strstr(out, "ROUTE") && strstr(out, "DESTINATION") &&
                  strstr(out, "LAST ERROR"),
              "a table with a header:\n%s", out);
    cr_expect(strstr(out, "reject-route") && strstr(out, "exhaust-route"), "%s",
              out);
    cr_expect(strstr(out, "4 dead letters") != NULL, "%s", out);
    free(out);

    json_t *list = dlq_json(0, "list", NULL, NULL);
    cr_assert(json_is_true(json_object_get(list, "ok")));
    cr_assert_eq(json_array_size(json_object_get(list, "dead_letters")), 4);
    json_t *rej = find_dead(list, "picky", "bob@example.com");
    json_t *da = find_dead(list, "stubborn", "a@example.com");
    json_t *db = find_dead(list, "stubborn", "b@example.com");
    json_t *dc = find_dead(list, "stubborn", "c@example.com");
    cr_assert(rej && da && db && dc, "every dead letter listed");
    json_int_t id_rej = int_at(rej, "id"), id_a = int_at(da, "id"),
               id_b = int_at(db, "id"), id_c = int_at(dc, "id");
    cr_assert(id_rej > 0 && id_a > 0 && id_b > 0 && id_c > 0);
    char ev_rej[64], ev_a[64], ev_b[64], ev_c[64];
    snprintf(ev_rej, sizeof ev_rej, "%s", str_at(rej, "event.id"));
    snprintf(ev_a, sizeof ev_a, "%s", str_at(da, "event.id"));
    snprintf(ev_b, sizeof ev_b, "%s", str_at(db, "event.id"));
    snprintf(ev_c, sizeof ev_c, "%s", str_at(dc, "event.id"));

    /* a permanent rejection: dead at once */
    cr_expect_str_eq(str_at(rej, "route"), "reject-route");
    cr_expect_eq(int_at(rej, "attempts"), 1);
    cr_expect_str_eq(str_at(rej, "last_error"), T_ERR_PICKY);
    cr_expect_str_eq(str_at(rej, "event.type"), "payment.failed");
    struct attempt h[8];
    cr_expect_eq(journal_attempts(id_rej, h, 8), 1, "one attempt only");
    cr_expect_eq(h[0].outcome, 2);
    json_t *picky = read_record("picky");
    cr_expect_eq(json_array_size(picky), 0, "picky accepted nothing");
    json_decref(picky);
    /* exhausted: dead after 3 with the last error */
    json_t *dead[3] = {da, db, dc};
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(str_at(dead[i], "route"), "exhaust-route");
        cr_expect_eq(int_at(dead[i], "attempts"), 3);
        cr_expect_str_eq(str_at(dead[i], "last_error"), T_ERR_STUBBORN(3));
    }

    /* the owners were told, through ops */
    json_t *ops = read_record("ops");
    cr_expect_eq(json_array_size(ops), 4);
    expect_notice(
        ops, ev_rej, "reject-route", "picky",
        "finance chased failed cards by hand", "billing-team@example.com",
        "the customer is never asked to update the card", 1, T_ERR_PICKY);
    expect_notice(ops, ev_a, "exhaust-route", "stubborn",
                  "support saw contacts a day late", "support-team@example.com",
                  "agents answer without the customer's history", 3,
                  T_ERR_STUBBORN(3));
    json_decref(ops);
    json_decref(list);

    /* a page of the list says that there is more, and where it goes on */
    list = dlq_json(0, "list", "--limit", "3");
    json_t *page = json_object_get(list, "dead_letters");
    cr_expect_eq(json_array_size(page), 3);
    cr_expect(json_is_true(json_object_get(list, "more")));
    json_int_t next = int_at(list, "next_after");
    cr_expect_eq(next, int_at(json_array_get(page, 2), "id"));
    json_decref(list);
    cr_assert_eq(dlq(&out, "list", "--limit", "3", NULL), 0, "%s", out);
    char hint[64];
    snprintf(hint, sizeof hint, "dlq list --after %lld", (long long)next);
    cr_expect(strstr(out, "3 dead letters shown, and more") &&
                  strstr(out, hint),
              "a short page says so:\n%s", out);
    free(out);
    snprintf(hint, sizeof hint, "%lld", (long long)next);
    list = dlq_json(0, "list", "--after", hint);
    cr_expect_eq(json_array_size(json_object_get(list, "dead_letters")), 1);
    cr_expect(json_is_false(json_object_get(list, "more")));
    cr_expect_null(json_object_get(list, "next_after"));
    json_decref(list);

    /* filters */
    list = dlq_json(0, "list", "--route", "exhaust-route");
    cr_expect_eq(json_array_size(json_object_get(list, "dead_letters")), 3);
    json_decref(list);
    list = dlq_json(0, "list", "--connector", "picky");
    cr_expect_eq(json_array_size(json_object_get(list, "dead_letters")), 1);
    json_decref(list);

    /* show: the event and every attempt's error */
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)id_a);
    cr_assert_eq(dlq(&out, "show", ids, NULL), 0, "%s", out);
    cr_expect(strstr(out, T_ERR_STUBBORN(1)) &&
                  strstr(out, T_ERR_STUBBORN(2)) &&
                  strstr(out, T_ERR_STUBBORN(3)),
              "every attempt's error:\n%s", out);
    cr_expect(strstr(out, "exhaust-route") && strstr(out, ev_a) &&
                  strstr(out, "a@example.com"),
              "%s", out);
    free(out);
    json_t *show = dlq_json(0, "show", ids, NULL);
    json_t *hist =
        json_object_get(json_object_get(show, "dead_letter"), "history");
    cr_assert_eq(json_array_size(hist), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *a = json_array_get(hist, i);
        cr_expect_eq(int_at(a, "attempt"), (json_int_t)i + 1);
        cr_expect_str_eq(str_at(a, "outcome"), "retry");
        cr_expect(strstr(str_at(a, "error"), "of 4 on purpose") != NULL);
    }
    json_decref(show);

    /* replay: a fresh attempt count, the same delivery, history kept */
    cr_assert_eq(dlq(&out, "replay", ids, NULL), 0, "%s", out);
    cr_expect(strstr(out, "replayed 1 dead letter") != NULL, "%s", out);
    free(out);
    wait_lines("stubborn", 1);
    json_t *rec = read_record("stubborn");
    cr_assert_eq(json_array_size(rec), 1);
    json_t *got = find_key(rec, "a@example.com");
    cr_assert_not_null(got, "the replayed event was delivered");
    cr_expect_str_eq(str_at(got, "id"), ev_a, "the same event");
    cr_expect_eq(int_at(got, "attempt"), 2,
                 "the replay's attempt 2 (delivery 5 of the event)");
    json_decref(rec);
    cr_expect_eq(delivery_of(ev_a, "stubborn"), id_a, "the same delivery");
    wait_state(id_a, 1);
    cr_expect_eq(journal_int("SELECT attempts FROM deliveries WHERE id = "
                             "%lld",
                             (long long)id_a),
                 2);
    struct attempt ha[8];
    cr_assert_eq(journal_attempts(id_a, ha, 8), 6,
                 "3 failures, the replay, 1 failure, the success");
    static const int want_outcome[6] = {1, 1, 1, 3, 1, 0};
    static const int want_attempt[6] = {1, 2, 3, 0, 1, 2};
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(ha[i].outcome, want_outcome[i], "history row %d", i);
        cr_expect_eq(ha[i].attempt, want_attempt[i], "history row %d", i);
    }
    cr_expect_str_eq(ha[2].error, T_ERR_STUBBORN(3), "provenance kept");
    cr_expect_str_eq(ha[4].error, T_ERR_STUBBORN(4));
    /* no longer a dead letter */
    cr_expect_eq(dlq(&out, "show", ids, NULL), 1, "%s", out);
    free(out);

    /* drop one */
    snprintf(ids, sizeof ids, "%lld", (long long)id_b);
    cr_assert_eq(dlq(&out, "drop", ids, NULL), 0, "%s", out);
    cr_expect(strstr(out, "dropped 1 dead letter") != NULL, "%s", out);
    free(out);
    cr_expect_eq(journal_int("SELECT count(*) FROM deliveries WHERE id = "
                             "%lld",
                             (long long)id_b),
                 0, "forgotten");
    cr_expect_eq(journal_int("SELECT count(*) FROM attempts WHERE "
                             "delivery_id = %lld",
                             (long long)id_b),
                 0, "with its history");
    cr_expect_eq(dlq(&out, "show", ids, NULL), 1, "%s", out);
    free(out);

    /* replay what is left of the route: C */
    cr_assert_eq(dlq(&out, "replay", "--all-for", "exhaust-route", NULL), 0,
                 "%s", out);
    cr_expect(strstr(out, "replayed 1 dead letter") != NULL, "%s", out);
    free(out);
    wait_lines("stubborn", 2);
    rec = read_record("stubborn");
    cr_expect_eq(json_array_size(rec), 2);
    got = find_key(rec, "c@example.com");
    cr_assert_not_null(got);
    cr_expect_str_eq(str_at(got, "id"), ev_c);
    cr_expect_eq(int_at(got, "attempt"), 2);
    cr_expect_null(find_key(rec, "b@example.com"), "dropped, not delivered");
    json_decref(rec);
    wait_state(id_c, 1);

    /* only the rejection is left; no new notices */
    list = dlq_json(0, "list", NULL, NULL);
    json_t *left = json_object_get(list, "dead_letters");
    cr_expect_eq(json_array_size(left), 1);
    cr_expect_eq(int_at(json_array_get(left, 0), "id"), id_rej);
    json_decref(list);
    ops = read_record("ops");
    cr_expect_eq(json_array_size(ops), 4);
    json_decref(ops);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "clean exit on SIGTERM");
}

/* ------------------------------------------------------------------ */
/* Errors an admin can make                                            */
/* ------------------------------------------------------------------ */

Test(dlq, unknown_ids_and_a_stopped_host_are_clear_errors)
{
    char *out = NULL;
    cr_expect_eq(dlq(&out, "show", "424242", NULL), 1, "%s", out);
    cr_expect(strstr(out, "no dead letter 424242") != NULL, "%s", out);
    free(out);
    cr_expect_eq(dlq(&out, "replay", "424242", NULL), 1, "%s", out);
    cr_expect(strstr(out, "no dead letter 424242") != NULL, "%s", out);
    free(out);
    cr_expect_eq(dlq(&out, "drop", "424242", NULL), 1, "%s", out);
    cr_expect(strstr(out, "no dead letter 424242") != NULL, "%s", out);
    free(out);
    cr_expect_eq(dlq(&out, "replay", "--all-for", "exhaust-route", NULL), 0,
                 "nothing to replay is not an error: %s", out);
    cr_expect(strstr(out, "replayed 0 dead letters") != NULL, "%s", out);
    free(out);
    json_t *j = dlq_json(1, "show", "424242", NULL);
    cr_expect(json_is_false(json_object_get(j, "ok")));
    cr_expect(strstr(str_at(j, "error"), "424242") != NULL);
    json_decref(j);

    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "clean exit on SIGTERM");
    char sock[4300];
    snprintf(sock, sizeof sock, "%s/var/run/control.sock", s_dir);
    cr_expect_eq(dlq(&out, "list", NULL), 1, "%s", out);
    cr_expect(strstr(out, sock) != NULL, "names the socket '%s':\n%s", sock,
              out);
    cr_expect(strstr(out, "error:") != NULL, "%s", out);
    free(out);
}

/* `dlq` with a bad argument: exit 2, and *out must hold every needle. */
static void
expect_usage_error(const char *needle, const char *a1, const char *a2,
                   const char *a3, const char *a4)
{
    char *out = NULL;
    int rc = dlq(&out, a1, a2, a3, a4, NULL);
    cr_expect_eq(rc, 2, "dlq %s %s %s %s: exit %d\n%s", a1, a2 ? a2 : "",
                 a3 ? a3 : "", a4 ? a4 : "", rc, out);
    cr_expect(strstr(out, "error: ") != NULL && strstr(out, needle) != NULL,
              "dlq %s %s %s %s: expected an error with \"%s\", got:\n%s", a1,
              a2 ? a2 : "", a3 ? a3 : "", a4 ? a4 : "", needle, out);
    free(out);
}

Test(dlq, bad_arguments_name_what_was_wrong_and_change_nothing)
{
    post("in_reject", "{\"type\":\"payment.failed\",\"key\":"
                      "\"bob@example.com\",\"data\":{\"amount\":1200}}");
    if (!pb_wait_until(dead_count_reached, &(struct dead_want){1}, T_WAIT_MS))
        cr_assert_fail("a dead letter expected");
    wait_lines("ops", 1);
    int64_t id = journal_int("SELECT id FROM deliveries WHERE state = 2");
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)id);

    expect_usage_error("unknown dlq command 'frob' (expected list, show, "
                       "replay or drop)",
                       "frob", ids, NULL, NULL);
    /* options before the command: the command is missing */
    expect_usage_error("missing dlq command (list, show, replay or drop)",
                       "--json", NULL, NULL, NULL);
    expect_usage_error("dlq list takes no id; unexpected argument '5'", "list",
                       "5", NULL, NULL);
    expect_usage_error("dlq show needs a dead-letter id", "show", NULL, NULL,
                       NULL);
    expect_usage_error("dlq drop needs a dead-letter id", "drop", NULL, NULL,
                       NULL);
    expect_usage_error("dlq replay needs a dead-letter id or --all-for ROUTE",
                       "replay", NULL, NULL, NULL);
    expect_usage_error("'abc' is not a dead-letter id", "drop", "abc", NULL,
                       NULL);
    expect_usage_error("'1e3' is not a dead-letter id", "drop", "1e3", NULL,
                       NULL);
    expect_usage_error("unexpected argument '7'; one id at a time", "drop", ids,
                       "7", NULL);
    expect_usage_error("give either an id or --all-for, not both", "replay",
                       ids, "--all-for", "reject-route");
    /* an option the command does not take is not silently ignored */
    expect_usage_error("--route applies to dlq list only", "drop", ids,
                       "--route", "reject-route");
    expect_usage_error("--all-for applies to dlq replay only", "drop", ids,
                       "--all-for", "reject-route");
    expect_usage_error("--limit applies to dlq list only", "show", ids,
                       "--limit", "5");
    /* an option's value may not be the next option (here -c) */
    expect_usage_error("--route needs a route name, got '-c'", "list",
                       "--route", NULL, NULL);
    expect_usage_error("--all-for needs a route name, got ''", "replay",
                       "--all-for", "", NULL);
    expect_usage_error("--limit needs a positive integer up to 100000, got "
                       "'0'",
                       "list", "--limit", "0", NULL);

    /* the dead letter is as it was: not dropped, not replayed */
    cr_expect_eq(journal_int("SELECT count(*) FROM deliveries WHERE state = "
                             "2 AND id = %lld",
                             (long long)id),
                 1);
    cr_expect_eq(journal_int("SELECT count(*) FROM attempts WHERE "
                             "delivery_id = %lld",
                             (long long)id),
                 1, "no replay was recorded");
    char *out = NULL;
    cr_expect_eq(dlq(&out, "show", ids, NULL), 0, "%s", out);
    cr_expect(strstr(out, "reject-route") != NULL, "%s", out);
    free(out);
}
