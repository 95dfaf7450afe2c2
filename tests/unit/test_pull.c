/*
 * test_pull.c - pull sources: a connector whose run() polls on a thread of
 * its own, hands its events over with flush, and advances its own cursor
 * only once durable says a batch is in the journal.
 *
 * Each test runs a real router on a real journal, a real connector actor
 * running the test plugin tests/plugins/ticker.c as "ticker", and a fake
 * destination peer "sink" (router_peer.h) that answers every delivery.
 * The tests read what the sink received, the ticker's cursor file, and
 * the journal.
 */
#include <criterion/criterion.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "connector.h"
#include "envelope.h"
#include "harness.h"
#include "journal.h"
#include "loader.h"
#include "log.h"
#include "router.h"
#include "hostproc.h"
#include "route_rig.h"
#include "router_peer.h"

#define T_WAIT_MS 10000

static struct rig {
    pb_route_rig_t r;
    char cursor[512];
    pb_plugin_t *plugin;
    plugboard_settings_t *settings;
    pb_connector_t *ticker;
    pb_connector_conf_t conf; /* for a worker process: never started */
    pb_peer_t *sink;
} g;

static void
rig_start_with(int64_t count, int64_t batch, int64_t return_after)
{
    pb_route_rig_start(&g.r, "pb-pull", "ticks", "ticker", "sink",
                       "contact.upserted", NULL);
    snprintf(g.cursor, sizeof g.cursor, "%s/cursor.txt", g.r.dir);
    g.sink = pb_peer_new(g.r.zctx, g.r.endpoint, "sink", true);
    cr_assert_not_null(g.sink);
    pb_raw_setting_t raw[] = {
        {.name = "count", .kind = PB_RAW_INT, .i = count},
        {.name = "batch", .kind = PB_RAW_INT, .i = batch},
        {.name = "interval", .kind = PB_RAW_STRING, .str = "10ms"},
        {.name = "cursor", .kind = PB_RAW_STRING, .str = g.cursor},
        {.name = "return_after", .kind = PB_RAW_INT, .i = return_after},
    };
    pb_rig_plugin(PB_TEST_PLUGIN_DIR "/ticker.so", raw, 5, &g.plugin,
                  &g.settings);
}

static void
rig_start(int64_t count, int64_t batch)
{
    rig_start_with(count, batch, 0);
}

static pb_connector_t *
ticker_start(const char *isolation, char *err, size_t err_len)
{
    pb_connector_options_t co = {
        .zmq_ctx = g.r.zctx,
        .router_endpoint = g.r.endpoint,
        .name = "ticker",
        .plugin = g.plugin,
        .settings = g.settings,
        .isolation = isolation,
        .config_path = "unused.cfg",
        .run_dir = g.r.dir,
        .conf = &g.conf,
    };
    return pb_connector_start(&co, err, err_len);
}

static void
rig_teardown(void)
{
    pb_connector_stop(&g.ticker);
    pb_peer_destroy(&g.sink);
    pb_route_rig_stop(&g.r);
    pb_settings_destroy(&g.settings);
    pb_plugin_destroy(&g.plugin);
    memset(&g, 0, sizeof g);
}

TestSuite(pull, .fini = rig_teardown, .timeout = 60);

/* Answer deliveries at the sink until n arrived; their seqs in seqs. */
static size_t
sink_take(size_t n, long long *seqs)
{
    size_t got = 0;
    while (got < n) {
        pb_peer_msg_t m;
        if (pb_peer_recv(g.sink, &m, T_WAIT_MS) != 0)
            break;
        if (strcmp(m.cmd, "DLV") == 0 && m.env) {
            int64_t seq = -1;
            pb_event_int(m.env, "seq", &seq);
            seqs[got++] = seq;
            cr_assert_eq(
                pb_peer_result(g.sink, m.id, m.attempt, PLUGBOARD_OK, 0, NULL),
                0);
        }
        pb_peer_msg_release(&m);
    }
    return got;
}

/* The last "durable <seq>" of the cursor file, -1 when none. */
static long long
cursor_now(int *refused)
{
    long long last = -1, a, b;
    char word[16];
    *refused = 0;
    FILE *f = fopen(g.cursor, "r");
    if (!f)
        return -1;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%15s %lld %lld", word, &a, &b) >= 2) {
            if (strcmp(word, "durable") == 0)
                last = a;
            else if (strcmp(word, "refused") == 0)
                (*refused)++;
        }
    }
    fclose(f);
    return last;
}

static bool
cursor_reached(void *want)
{
    int refused;
    return cursor_now(&refused) >= *(long long *)want;
}

static int
journal_count(const char *sql)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/journal.db", g.r.dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

Test(pull, run_emits_in_order_and_the_cursor_follows_durability)
{
    rig_start(20, 2);
    char err[512] = "";
    g.ticker = ticker_start(NULL, err, sizeof err);
    cr_assert_not_null(g.ticker, "%s", err);
    long long seqs[20];
    size_t n = sink_take(20, seqs);
    cr_assert_eq(n, 20, "%zu of 20 events reached the sink", n);
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(seqs[i], (long long)i, "event %zu has seq %lld", i,
                     seqs[i]);
    long long want = 19;
    cr_assert(pb_wait_until(cursor_reached, &want, T_WAIT_MS),
              "the cursor never reached the last batch");
    /* stop returns: run saw run_wait answer false and returned */
    pb_connector_stop(&g.ticker);
    cr_expect_eq(journal_count("SELECT count(*) FROM events WHERE source = "
                               "'ticker'"),
                 20);
}

Test(pull, the_cursor_never_passes_what_the_journal_refused)
{
    rig_start(0, 1);
    /* nothing can be committed while another connection holds the
     * write lock: every batch flushed meanwhile is refused */
    char path[4200];
    snprintf(path, sizeof path, "%s/journal.db", g.r.dir);
    sqlite3 *lock = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &lock, SQLITE_OPEN_READWRITE, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(lock, 5000);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(lock));
    char err[512] = "";
    g.ticker = ticker_start(NULL, err, sizeof err);
    cr_assert_not_null(g.ticker, "%s", err);
    int refused = 0;
    for (int i = 0; i < 400 && refused == 0; i++) {
        usleep(25000);
        cursor_now(&refused);
    }
    cr_assert_gt(refused, 0,
                 "no batch was refused while the journal was "
                 "locked");
    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);
    /* once the journal takes writes again, the cursor moves on */
    long long want = 0;
    cr_assert(pb_wait_until(cursor_reached, &want, T_WAIT_MS),
              "the cursor never moved after the lock was gone");
    pb_connector_stop(&g.ticker);
    /* what the cursor passed reached the sink (only journaled events are
     * delivered); what was refused did not */
    long long durable[512], refused_seq[512];
    size_t nd = 0, nr = 0;
    FILE *f = fopen(g.cursor, "r");
    cr_assert_not_null(f);
    char line[128], word[16];
    long long a, b;
    while (fgets(line, sizeof line, f)) {
        int k = sscanf(line, "%15s %lld %lld", word, &a, &b);
        if (k >= 2 && strcmp(word, "durable") == 0 && nd < 512)
            durable[nd++] = a;
        else if (k == 3 && strcmp(word, "refused") == 0 && nr < 512)
            refused_seq[nr++] = a;
    }
    fclose(f);
    cr_assert_gt(nd, 0);
    int events = journal_count("SELECT count(*) FROM events WHERE source = "
                               "'ticker'");
    long long *got = calloc((size_t)events + 1, sizeof *got);
    size_t n = sink_take((size_t)events, got);
    cr_assert_eq(n, (size_t)events, "%zu of %d journaled events delivered", n,
                 events);
    for (size_t i = 0; i < nd; i++) {
        bool seen = false;
        for (size_t k = 0; k < n; k++)
            seen = seen || got[k] == durable[i];
        cr_expect(seen, "the cursor passed seq %lld, which never arrived",
                  durable[i]);
    }
    for (size_t i = 0; i < nr; i++)
        for (size_t k = 0; k < n; k++)
            cr_expect_neq(got[k], refused_seq[i],
                          "refused seq %lld was delivered", refused_seq[i]);
    free(got);
}

Test(pull, a_pull_source_in_a_worker_process_is_refused_saying_why)
{
    rig_start(1, 1);
    g.conf.name = "ticker";
    g.conf.plugin = PB_TEST_PLUGIN_DIR "/ticker.so";
    g.conf.isolation = "process";
    char err[512] = "";
    g.ticker = ticker_start("process", err, sizeof err);
    cr_assert_null(g.ticker);
    cr_expect(strstr(err, "pull source") && strstr(err, "isolation"), "%s",
              err);
}

static bool
ticker_failed(void *ctx)
{
    (void)ctx;
    pb_connector_info_t info;
    pb_connector_info(g.ticker, &info);
    return info.state && strcmp(info.state, "failed") == 0;
}

Test(pull, a_run_that_returns_unasked_marks_the_connector_failed)
{
    /* its run gives up after 3 events: the connector can no longer do
     * its job, so status (and /readyz, reloads) must see it */
    rig_start_with(0, 1, 3);
    char err[512] = "";
    g.ticker = ticker_start(NULL, err, sizeof err);
    cr_assert_not_null(g.ticker, "%s", err);
    cr_assert(pb_wait_until(ticker_failed, NULL, T_WAIT_MS),
              "a source whose run returned still looks healthy");
    pb_connector_info_t info;
    pb_connector_info(g.ticker, &info);
    cr_expect(strstr(info.failure, "run returned"), "%s", info.failure);
    long long seqs[3];
    cr_expect_eq(sink_take(3, seqs), 3, "what it flushed still arrives");
}

static int
ticker_events(void)
{
    return journal_count("SELECT count(*) FROM events WHERE source = "
                         "'ticker'");
}

Test(pull, run_wait_keeps_the_poll_interval)
{
    /* a batch per poll, and its durability known within a millisecond:
     * run_wait must still wait the interval it was given, or the loop of
     * docs/sdk.md polls the vendor at journal speed */
    rig_start(0, 1);
    char err[512] = "";
    pb_settings_destroy(&g.settings); /* replaced: a 100 ms interval */
    pb_plugin_destroy(&g.plugin);
    pb_raw_setting_t raw[] = {
        {.name = "interval", .kind = PB_RAW_STRING, .str = "100ms"},
        {.name = "cursor", .kind = PB_RAW_STRING, .str = g.cursor},
    };
    pb_rig_plugin(PB_TEST_PLUGIN_DIR "/ticker.so", raw, 2, &g.plugin,
                  &g.settings);
    g.ticker = ticker_start(NULL, err, sizeof err);
    cr_assert_not_null(g.ticker, "%s", err);
    usleep(1000 * 1000);
    pb_connector_stop(&g.ticker);
    int n = ticker_events();
    /* about 10 polls in a second; a loop that does not wait makes
     * hundreds */
    cr_expect_leq(n, 30, "%d batches in about a second at a 100 ms poll", n);
    cr_expect_geq(n, 1);
}
