/*
 * test_connector.c - the connector actor with a concurrency above 1: its
 * deliveries run on a pool of threads, each plugin state used by one
 * thread at a time (or one state shared when the plugin says deliver is
 * thread-safe), per-key order kept, and each delivery's deadline running
 * from when a thread takes it.
 *
 * Each test runs a real router on a real journal, a fake source peer
 * ("src", router_peer.h) that emits events, and a real connector actor
 * ("sink") running the test plugin tests/plugins/gather.c, which records
 * every event it delivered in a file; the tests read that file.
 */
#include <criterion/criterion.h>

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
#include "route_rig.h"
#include "router_peer.h"

#define T_WAIT_MS 10000

static struct rig {
    pb_route_rig_t r;
    char record[512];
    pb_plugin_t *plugin;
    plugboard_settings_t *settings;
    pb_connector_t *sink;
    pb_peer_t *src;
} g;

typedef struct rig_opts {
    const char *plugin; /* "gather" or "gather_ts" */
    int concurrency;
    int64_t gather;       /* the plugin's setting */
    const char *hang_key; /* NULL: none */
    int64_t hang_ms;
    int64_t timeout_ms; /* the sink's deadline; 0: 30 s */
} rig_opts_t;

static void
rig_start(const rig_opts_t *o)
{
    pb_router_dest_options_t sink = {.timeout_ms = o->timeout_ms,
                                     .workers = o->concurrency};
    pb_route_rig_start(&g.r, "pb-connector", "to-sink", "src", "sink", "*",
                       &sink);
    snprintf(g.record, sizeof g.record, "%s/delivered.txt", g.r.dir);
    char path[512], hang[32], err[512] = "";
    snprintf(path, sizeof path, "%s/%s.so", PB_TEST_PLUGIN_DIR, o->plugin);
    snprintf(hang, sizeof hang, "%lldms", (long long)o->hang_ms);
    pb_raw_setting_t raw[] = {
        {.name = "gather", .kind = PB_RAW_INT, .i = o->gather},
        {.name = "record", .kind = PB_RAW_STRING, .str = g.record},
        {.name = "hang_key",
         .kind = PB_RAW_STRING,
         .str = (char *)(o->hang_key ? o->hang_key : "")},
        {.name = "hang", .kind = PB_RAW_STRING, .str = hang},
    };
    pb_rig_plugin(path, raw, 4, &g.plugin, &g.settings);
    pb_connector_options_t co = {
        .zmq_ctx = g.r.zctx,
        .router_endpoint = g.r.endpoint,
        .name = "sink",
        .plugin = g.plugin,
        .settings = g.settings,
        .concurrency = o->concurrency,
    };
    g.sink = pb_connector_start(&co, err, sizeof err);
    cr_assert_not_null(g.sink, "%s", err);
    g.src = pb_peer_new(g.r.zctx, g.r.endpoint, "src", true);
    cr_assert_not_null(g.src);
}

static void
rig_teardown(void)
{
    pb_peer_destroy(&g.src);
    pb_connector_stop(&g.sink);
    pb_route_rig_stop(&g.r);
    pb_settings_destroy(&g.settings);
    pb_plugin_destroy(&g.plugin);
    memset(&g, 0, sizeof g);
}

TestSuite(connector, .fini = rig_teardown, .timeout = 60);

/* Emit one event with key and seq from "src" and wait for its ACK. */
static void
emit(uint64_t token, const char *key, int seq)
{
    pb_builder_t *b = pb_builder_new("src", "contact.upserted");
    cr_assert_not_null(b);
    cr_assert_eq(pb_builder_set_key(b, key), 0);
    cr_assert_eq(pb_builder_set_int(b, "seq", seq), 0);
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    pb_builder_destroy(&b);
    cr_assert_eq(pb_peer_emit1(g.src, token, frame, len), 0);
    free(frame);
    pb_peer_msg_t m;
    cr_assert_eq(pb_peer_recv(g.src, &m, T_WAIT_MS), 0, "no ACK");
    cr_assert_str_eq(m.cmd, "ACK");
    cr_assert_eq(m.status, 0);
    pb_peer_msg_release(&m);
}

/* One line of the record: key, attempt, states open, the event's seq. */
typedef struct line {
    char key[64];
    unsigned attempt;
    int states;
    long long seq;
} line_t;

/* Wait until the record holds at least n lines (or T_WAIT_MS passed);
 * returns how many it holds, lines in *out (caller frees). */
static size_t
read_record(size_t n, line_t **out)
{
    *out = NULL;
    size_t count = 0;
    for (int waited = 0; waited <= T_WAIT_MS; waited += 20) {
        free(*out);
        *out = calloc(256, sizeof **out);
        count = 0;
        FILE *f = fopen(g.record, "r");
        if (f) {
            line_t l;
            while (count < 256 && fscanf(f, "%63s %u %d %lld", l.key,
                                         &l.attempt, &l.states, &l.seq) == 4)
                (*out)[count++] = l;
            fclose(f);
        }
        if (count >= n)
            break;
        usleep(20000);
    }
    return count;
}

Test(connector, four_deliveries_run_at_once_each_on_its_own_state)
{
    /* gather = 4: a deliver succeeds only once four run at the same time,
     * which a connector running one delivery at a time never reaches */
    rig_start(&(rig_opts_t){.plugin = "gather", .concurrency = 4, .gather = 4});
    const char *keys[] = {"a@example.com", "b@example.com", "c@example.com",
                          "d@example.com", "e@example.com", "f@example.com",
                          "g@example.com", "h@example.com"};
    for (int i = 0; i < 8; i++)
        emit((uint64_t)i + 1, keys[i], i);
    line_t *l;
    size_t n = read_record(8, &l);
    cr_assert_eq(n, 8, "%zu of 8 events delivered", n);
    for (size_t i = 0; i < n; i++) {
        cr_expect_eq(l[i].attempt, 1, "%s took attempt %u", l[i].key,
                     l[i].attempt);
        /* not thread-safe: one state per delivery thread, none for the
         * actor since the plugin takes no webhooks */
        cr_expect_eq(l[i].states, 4, "%d states open", l[i].states);
    }
    free(l);
}

Test(connector, a_thread_safe_plugin_shares_one_state)
{
    rig_start(
        &(rig_opts_t){.plugin = "gather_ts", .concurrency = 3, .gather = 3});
    for (int i = 0; i < 6; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d@example.com", i);
        emit((uint64_t)i + 1, key, i);
    }
    line_t *l;
    size_t n = read_record(6, &l);
    cr_assert_eq(n, 6, "%zu of 6 events delivered", n);
    for (size_t i = 0; i < n; i++) {
        cr_expect_eq(l[i].attempt, 1);
        cr_expect_eq(l[i].states, 1, "%d states open", l[i].states);
    }
    free(l);
}

Test(connector, events_of_one_key_keep_their_order_across_threads)
{
    rig_start(&(rig_opts_t){.plugin = "gather", .concurrency = 4, .gather = 1});
    /* three keys interleaved; each key's events must arrive in order
     * although four threads deliver */
    const char *keys[] = {"x@example.com", "y@example.com", "z@example.com"};
    long long last[3] = {-1, -1, -1};
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 30; i++)
        emit((uint64_t)i + 1, keys[i % 3], i);
    line_t *l;
    size_t n = read_record(30, &l);
    cr_assert_eq(n, 30);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            if (strcmp(l[i].key, keys[k]) != 0)
                continue;
            cr_expect_gt(l[i].seq, last[k], "%s: seq %lld after %lld", keys[k],
                         l[i].seq, last[k]);
            last[k] = l[i].seq;
            seen[k]++;
        }
    for (int k = 0; k < 3; k++)
        cr_expect_eq(seen[k], 10, "%s delivered %d times", keys[k], seen[k]);
    free(l);
}

Test(connector, a_hung_delivery_times_out_while_other_threads_answer)
{
    /* one thread hangs on the first attempt of "slow@"; the other keeps
     * answering.  The hung delivery's deadline runs from when its thread
     * took it, so it times out and is retried while the others flow */
    rig_start(&(rig_opts_t){.plugin = "gather",
                            .concurrency = 2,
                            .gather = 1,
                            .hang_key = "slow@example.com",
                            .hang_ms = 4000,
                            .timeout_ms = 800});
    emit(1, "slow@example.com", 0);
    /* answers keep coming for longer than the hang lasts */
    for (int i = 0; i < 90; i++) {
        char key[32];
        snprintf(key, sizeof key, "q%d@example.com", i);
        emit((uint64_t)i + 2, key, i);
        usleep(50000);
    }
    line_t *l;
    size_t n = read_record(92, &l);
    bool retried = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i].key, "slow@example.com") == 0 && l[i].attempt == 2)
            retried = true;
    cr_expect(retried, "the hung delivery was never retried (%zu lines)", n);
    free(l);
}

Test(connector, a_stuck_worker_spends_no_attempts_of_what_waits_behind_it)
{
    /* one delivery thread, stuck for 3 s in the first attempt of
     * "slow@"; its deadline is 500 ms.  The attempt times out and is sent
     * again, but the thread is still inside the old call: what waits
     * behind it must not have its clock run (nor its attempts spent)
     * until the late answer frees the thread */
    rig_start(&(rig_opts_t){.plugin = "gather",
                            .concurrency = 1,
                            .gather = 1,
                            .hang_key = "slow@example.com",
                            .hang_ms = 3000,
                            .timeout_ms = 500});
    emit(1, "slow@example.com", 0);
    emit(2, "next@example.com", 1);
    line_t *l;
    size_t n = read_record(3, &l);
    cr_assert_geq(n, 3, "%zu deliveries recorded", n);
    unsigned slow_max = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(l[i].key, "next@example.com") == 0)
            cr_expect_eq(l[i].attempt, 1,
                         "next@ waited behind the stuck call and still "
                         "took attempt %u",
                         l[i].attempt);
        else if (l[i].attempt > slow_max)
            slow_max = l[i].attempt;
    }
    cr_expect_eq(slow_max, 2, "slow@ took %u attempts", slow_max);
    free(l);
}
