/*
 * test_crash_recovery.c - kill -9 at random points loses nothing that was
 * acknowledged.
 *
 * The real host binary runs a webhook source "src" and a sink "dst" (both
 * the test plugin "good"; dst appends every delivered event to a record
 * file).  A client thread POSTs numbered events to /hooks/src at load, ten
 * per request over one keep-alive connection, and resends a request that
 * did not get a 2xx, as a vendor would (with the same dedupe ids).  A
 * request that got a 2xx is acknowledged: the host promised its events
 * are journaled.  Meanwhile the test SIGKILLs the host at random moments
 * and restarts it on the same data directory.  At the end every
 * acknowledged event must be in the record file at least once, the first
 * deliveries of each key must be in acceptance order, and the
 * duplicates that at-least-once delivery allows are counted and reported.
 *
 * PB_CRASH_SEED=<n> replays one run's kill schedule.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"

#define C_KILLS 5  /* SIGKILLs per run */
#define C_BATCH 10 /* events per request */
#define C_KEYS 10  /* keys k0..k9 */
#define C_MAX_EVENTS 400000
#define C_SETTLE_MS 30000 /* bound on the final catch-up */

static const char s_config[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"warn\";\n"
    "  plugin_path = [ \"" PB_TEST_PLUGIN_DIR "\", \"" PB_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "  drain_timeout = \"5s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"src\"; plugin = \"good\"; settings = { label = \"src\"; }; "
    "},\n"
    "  { name = \"dst\"; plugin = \"good\";\n"
    "    settings = { label = \"dst\"; record = \"@DIR@/record.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"numbers\"; from = \"src\"; when = \"contact.upserted\";\n"
    "    to = [ \"dst\" ];\n"
    "    why = \"numbered events must survive any crash\";\n"
    "    owner = \"durability@example.com\";\n"
    "    retry = { attempts = 1000; initial = \"10ms\"; max = \"200ms\"; }; }\n"
    ");\n";

/* ------------------------------------------------------------------ */
/* The client: one thread, one keep-alive connection                  */
/* ------------------------------------------------------------------ */

static struct client {
    pthread_t thread;
    bool started;
    atomic_bool stop;
    int port;
    uint8_t *acked;  /* acked[n]: a 2xx covered event n */
    atomic_int sent; /* events 0..sent-1 were sent at least once */
    atomic_int requests, failures;
} s_client;

/* What the destination recorded so far, read incrementally. */
static struct record {
    long offset;            /* bytes consumed (whole lines) */
    int *count;             /* deliveries of event n */
    char (*ids)[32];        /* event id of n's first delivery */
    int last_first[C_KEYS]; /* last first-delivered n per key */
    size_t lines, torn, order_violations, id_mismatches;
    int max_attempt;
} s_rec;

static char *s_dir;
static pb_hostproc_t s_host;

static size_t
s_discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

/* POST events first..first+C_BATCH-1; true on a 2xx. */
static bool
s_post_batch(CURL *c, int first)
{
    char body[C_BATCH * 128];
    size_t len = 0;
    body[len++] = '[';
    for (int n = first; n < first + C_BATCH; n++)
        len += (size_t)snprintf(body + len, sizeof body - len,
                                "%s{\"type\":\"contact.upserted\","
                                "\"key\":\"k%d\",\"dedupe\":\"crash-%d\","
                                "\"data\":{\"n\":%d}}",
                                n == first ? "" : ",", n % C_KEYS, n, n);
    body[len++] = ']';
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
    long code = 0;
    atomic_fetch_add(&s_client.requests, 1);
    if (curl_easy_perform(c) == CURLE_OK &&
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
        code >= 200 && code < 300)
        return true;
    atomic_fetch_add(&s_client.failures, 1);
    return false;
}

static void *
s_client_run(void *arg)
{
    (void)arg;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hooks/src", s_client.port);
    CURL *c = curl_easy_init();
    struct curl_slist *hl =
        curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_discard);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    int first = 0;
    while (!atomic_load(&s_client.stop) && first + C_BATCH <= C_MAX_EVENTS) {
        atomic_store(&s_client.sent, first + C_BATCH);
        if (s_post_batch(c, first)) {
            for (int n = first; n < first + C_BATCH; n++)
                s_client.acked[n] = 1;
            first += C_BATCH;
        } else {
            usleep(20000); /* host down or restarting: send again */
        }
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return NULL;
}

static void
s_client_stop(void)
{
    if (!s_client.started)
        return;
    atomic_store(&s_client.stop, true);
    pthread_join(s_client.thread, NULL);
    s_client.started = false;
}

/* ------------------------------------------------------------------ */
/* Set-up and tear-down                                               */
/* ------------------------------------------------------------------ */

static void
setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s_dir = pb_test_tempdir("pb-crash");
    cr_assert_not_null(s_dir);
    memset(&s_client, 0, sizeof s_client);
    s_client.acked = calloc(C_MAX_EVENTS, 1);
    cr_assert_not_null(s_client.acked);
}

/* Runs also when an assertion failed: nothing may outlive the test. */
static void
teardown(void)
{
    s_client_stop();
    if (s_host.pid > 0)
        pb_hostproc_stop(&s_host);
    free(s_client.acked);
    s_client.acked = NULL;
    free(s_rec.count);
    free(s_rec.ids);
    memset(&s_rec, 0, sizeof s_rec);
    pb_test_rmtree(s_dir);
    free(s_dir);
    s_dir = NULL;
    curl_global_cleanup();
}

TestSuite(crash_recovery, .init = setup, .fini = teardown, .timeout = 150);

static void
fail_with_log(const char *what)
{
    char *log = pb_test_read_file(s_host.log, NULL);
    size_t len = log ? strlen(log) : 0;
    cr_assert_fail("%s; host log (last 4000 bytes):\n%s", what,
                   log ? log + (len > 4000 ? len - 4000 : 0) : "(none)");
}

static void
start_host(int port)
{
    if (!pb_hostproc_start(&s_host, s_dir, port, s_config, NULL))
        fail_with_log("host did not come up");
}

static void
kill_host(void)
{
    cr_assert_gt(s_host.pid, 0);
    kill(s_host.pid, SIGKILL);
    int status = 0;
    cr_assert_eq(waitpid(s_host.pid, &status, 0), s_host.pid);
    s_host.pid = 0;
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the host was running until killed (status %d)", status);
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* Reading the record file                                            */
/* ------------------------------------------------------------------ */

static void
record_line(char *line)
{
    json_error_t err;
    json_t *ev = json_loads(line, 0, &err);
    json_t *nv = ev ? json_object_get(json_object_get(ev, "data"), "n") : NULL;
    const char *key = json_string_value(json_object_get(ev, "key"));
    const char *id = json_string_value(json_object_get(ev, "id"));
    if (!json_is_integer(nv) || !key || !id || key[0] != 'k') {
        s_rec.torn++; /* a write cut by SIGKILL */
        json_decref(ev);
        return;
    }
    int n = (int)json_integer_value(nv);
    int k = atoi(key + 1);
    int attempt = (int)json_integer_value(json_object_get(ev, "attempt"));
    if (attempt > s_rec.max_attempt)
        s_rec.max_attempt = attempt;
    if (n < 0 || n >= C_MAX_EVENTS || k < 0 || k >= C_KEYS || n % C_KEYS != k) {
        s_rec.torn++;
        json_decref(ev);
        return;
    }
    s_rec.lines++;
    if (s_rec.count[n]++ == 0) {
        snprintf(s_rec.ids[n], sizeof s_rec.ids[n], "%s", id);
        if (n <= s_rec.last_first[k]) {
            if (s_rec.order_violations++ < 5)
                cr_log_error("key k%d: first delivery of %d after %d", k, n,
                             s_rec.last_first[k]);
        }
        if (n > s_rec.last_first[k])
            s_rec.last_first[k] = n;
    } else if (strcmp(s_rec.ids[n], id) != 0) {
        s_rec.id_mismatches++; /* accepted twice: dedupe failed */
    }
    json_decref(ev);
}

static void
record_read(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/record.jsonl", s_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fseek(f, s_rec.offset, SEEK_SET);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] != '\n')
            break; /* being written: read it next time */
        s_rec.offset += len;
        record_line(line);
    }
    free(line);
    fclose(f);
}

static bool
all_acked_delivered(void *ctx)
{
    int sent = *(int *)ctx;
    record_read();
    for (int n = 0; n < sent; n++)
        if (s_client.acked[n] && s_rec.count[n] == 0)
            return false;
    return true;
}

/* SELECT count(*) ... on the journal, read-only (the host may be up). */
static int
journal_count(const char *sql)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/var/journal.db", s_dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sqlite3_errmsg(db));
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static bool
nothing_pending(void *ctx)
{
    (void)ctx;
    return journal_count("SELECT count(*) FROM deliveries WHERE state != 1") ==
           0;
}

/* ------------------------------------------------------------------ */
/* The test                                                           */
/* ------------------------------------------------------------------ */

Test(crash_recovery, kill_9_at_random_points_loses_nothing_acknowledged)
{
    const char *seed_env = getenv("PB_CRASH_SEED");
    unsigned seed = seed_env && *seed_env
                        ? (unsigned)strtoul(seed_env, NULL, 10)
                        : (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    cr_log_info("crash_recovery: seed %u (PB_CRASH_SEED=%u replays the "
                "kill schedule)",
                seed, seed);

    int port = pb_test_free_port();
    cr_assert_gt(port, 0);
    start_host(port);
    s_client.port = port;
    cr_assert_eq(pthread_create(&s_client.thread, NULL, s_client_run, NULL), 0);
    s_client.started = true;

    /* kill at random moments: sometimes right after a restart (while the
     * journal's pending deliveries are being redelivered), mostly under
     * steady load */
    int uptimes[C_KILLS];
    for (int k = 0; k < C_KILLS; k++) {
        int up = rand() % 4 == 0 ? 20 + rand() % 200 : 1200 + rand() % 1600;
        uptimes[k] = up;
        sleep_ms(up);
        kill_host();
        sleep_ms(rand() % 100);
        start_host(port);
    }
    sleep_ms(1000); /* traffic against the last incarnation too */
    s_client_stop();
    int sent = atomic_load(&s_client.sent);

    s_rec.count = calloc(C_MAX_EVENTS, sizeof *s_rec.count);
    s_rec.ids = calloc(C_MAX_EVENTS, sizeof *s_rec.ids);
    cr_assert(s_rec.count && s_rec.ids);
    for (int k = 0; k < C_KEYS; k++)
        s_rec.last_first[k] = -1;
    if (!pb_wait_until(all_acked_delivered, &sent, C_SETTLE_MS))
        cr_log_error("acknowledged events still missing after %d ms",
                     C_SETTLE_MS);
    cr_expect(pb_wait_until(nothing_pending, NULL, 10000),
              "deliveries still pending or dead: %d",
              journal_count("SELECT count(*) FROM deliveries WHERE "
                            "state != 1"));
    int events = journal_count("SELECT count(*) FROM events");
    cr_assert_eq(pb_hostproc_stop(&s_host), 0,
                 "the host exits 0 on SIGTERM (no sanitizer report)");
    record_read();

    int acked = 0, missing = 0, delivered = 0, unacked_delivered = 0;
    size_t duplicates = 0, redelivered = 0;
    for (int n = 0; n < sent; n++) {
        if (s_client.acked[n])
            acked++;
        if (s_rec.count[n] > 0) {
            delivered++;
            if (!s_client.acked[n])
                unacked_delivered++;
            duplicates += (size_t)(s_rec.count[n] - 1);
            redelivered += s_rec.count[n] > 1;
        } else if (s_client.acked[n]) {
            if (missing++ < 10)
                cr_log_error("acknowledged event %d was never delivered", n);
        }
    }
    cr_log_info("crash_recovery: %d kills (uptimes %d %d %d %d %d ms), "
                "%d requests (%d failed and were sent again)",
                C_KILLS, uptimes[0], uptimes[1], uptimes[2], uptimes[3],
                uptimes[4], atomic_load(&s_client.requests),
                atomic_load(&s_client.failures));
    cr_log_info("crash_recovery: sent %d, acknowledged %d, journaled %d, "
                "delivered %d distinct in %zu deliveries: %zu duplicates "
                "(%zu events delivered more than once, max attempt %d), "
                "%d delivered unacknowledged, %d missing, %zu torn lines",
                sent, acked, events, delivered, s_rec.lines, duplicates,
                redelivered, s_rec.max_attempt, unacked_delivered, missing,
                s_rec.torn);
    printf("crash_recovery: acknowledged=%d delivered=%d duplicates=%zu "
           "missing=%d kills=%d seed=%u\n",
           acked, delivered, duplicates, missing, C_KILLS, seed);
    fflush(stdout);

    cr_expect_gt(acked, 100, "load was applied (%d acknowledged)", acked);
    cr_expect_eq(missing, 0, "%d acknowledged events were lost", missing);
    cr_expect_eq(s_rec.order_violations, 0,
                 "%zu first deliveries out of per-key order",
                 s_rec.order_violations);
    cr_expect_eq(s_rec.id_mismatches, 0,
                 "%zu numbers were accepted as two events (dedupe)",
                 s_rec.id_mismatches);
    cr_expect_leq(events, sent, "an event accepted twice");
    cr_expect_geq(events, acked);
    cr_expect_leq(s_rec.torn, 2, "%zu unreadable record lines", s_rec.torn);
}
