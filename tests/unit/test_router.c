/*
 * test_router.c - the router: group commit, acknowledgements, dispatch,
 * retries with backoff, dead letters and their notices, per-key order,
 * deadlines, restart recovery, and its refusal of hostile messages.
 *
 * Each test runs a real router thread on a real journal in a temporary
 * directory and talks to it through fake connector actors (router_peer.h)
 * named "src" (the emitter), "a", "b" (destinations) and "ops" (where dead
 * letter notices go).  The journal is checked with plain SQL afterwards,
 * the way an admin would look at it.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "envelope.h"
#include "error.h"
#include "harness.h"
#include "hostapi.h"
#include "journal.h"
#include "log.h"
#include "router.h"
#include "router_peer.h"

#define T_WAIT_MS 3000 /* how long anything expected may take */
#define T_TYPE "contact.upserted"

/* ------------------------------------------------------------------ */
/* The rig: journal, context, router and four peers                     */
/* ------------------------------------------------------------------ */

struct rig_opts {
    const char *to[3];     /* destinations of the route; default a, b */
    const char *notify;    /* NULL: no dead letter notices */
    pb_retry_conf_t retry; /* zero: {5, 100ms, 400ms} */
    int64_t timeout_ms;    /* deadline of destination "a"; 0: default */
    int64_t retention_ms;  /* dedupe and delivered; 0: 7 days, 1 day */
    int window;            /* window of destination "a"; 0: default */
};

static struct rig {
    char *dir;
    pb_journal_t *journal;
    void *zctx;
    pb_router_t *router;
    int generation;
    char *when[1];
    char *to[3];
    pb_route_conf_t route;
    pb_config_t cfg;
    pb_router_dest_options_t dests[4];
    pb_peer_t *src, *a, *b, *ops;
} g;

static void
rig_connect(void)
{
    char endpoint[96];
    snprintf(endpoint, sizeof endpoint, "inproc://test-router-%d-%d",
             (int)getpid(), ++g.generation);
    pb_router_options_t opt = {
        .zmq_ctx = g.zctx,
        .endpoint = endpoint,
        .config = &g.cfg,
        .dests = g.dests,
        .dest_count = 4,
        .journal = g.journal,
    };
    char err[256] = "";
    g.router = pb_router_start(&opt, err, sizeof err);
    cr_assert_not_null(g.router, "router: %s", err);
    g.src = pb_peer_new(g.zctx, endpoint, "src", true);
    g.a = pb_peer_new(g.zctx, endpoint, "a", true);
    g.b = pb_peer_new(g.zctx, endpoint, "b", true);
    g.ops = pb_peer_new(g.zctx, endpoint, "ops", true);
    cr_assert(g.src && g.a && g.b && g.ops);
}

static void
rig_disconnect(void)
{
    pb_peer_destroy(&g.src);
    pb_peer_destroy(&g.a);
    pb_peer_destroy(&g.b);
    pb_peer_destroy(&g.ops);
    pb_router_stop(&g.router);
}

static void
rig_start(const struct rig_opts *o)
{
    pb_log_set_level(PB_LOG_ERROR);
    g.dir = pb_test_tempdir("pb-router");
    cr_assert_not_null(g.dir);
    char err[256] = "";
    g.journal = pb_journal_open(g.dir, err, sizeof err);
    cr_assert_not_null(g.journal, "journal: %s", err);
    g.zctx = zmq_ctx_new();
    cr_assert_not_null(g.zctx);

    size_t n = 0;
    for (; n < 3 && o->to[n]; n++)
        g.to[n] = (char *)o->to[n];
    if (n == 0) {
        g.to[n++] = "a";
        g.to[n++] = "b";
    }
    g.when[0] = "contact.*";
    g.route = (pb_route_conf_t){
        .name = "contacts-to-crm",
        .from = "src",
        .when = g.when,
        .when_count = 1,
        .to = g.to,
        .to_count = n,
        .why = "sales re-typed every new contact by hand",
        .on_failure = "new leads wait a day for a first call",
        .owner = "sales-ops@example.com",
        .notify = (char *)o->notify,
        .retry = o->retry.attempts ? o->retry : (pb_retry_conf_t){5, 100, 400},
    };
    g.cfg = (pb_config_t){
        .data_dir = g.dir,
        .routes = &g.route,
        .route_count = 1,
        .dedupe_retention_ms =
            o->retention_ms ? o->retention_ms : 7 * 86400000LL,
        .delivered_retention_ms =
            o->retention_ms ? o->retention_ms : 86400000LL,
    };
    g.dests[0] = (pb_router_dest_options_t){.name = "src"};
    g.dests[1] = (pb_router_dest_options_t){
        .name = "a", .timeout_ms = o->timeout_ms, .window = o->window};
    g.dests[2] = (pb_router_dest_options_t){.name = "b"};
    g.dests[3] = (pb_router_dest_options_t){.name = "ops"};
    rig_connect();
}

/* Stop the router and start a new one on the same journal, as after a
 * crash; the peers reconnect to the new one. */
static void
rig_restart(void)
{
    rig_disconnect();
    rig_connect();
}

static void
rig_teardown(void)
{
    rig_disconnect();
    if (g.zctx)
        zmq_ctx_term(g.zctx);
    pb_journal_close(&g.journal);
    if (g.dir) {
        pb_test_rmtree(g.dir);
        free(g.dir);
    }
    memset(&g, 0, sizeof g);
}

TestSuite(router, .fini = rig_teardown, .timeout = 40);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* An event from source; *len gets the frame's size, id its id.  Caller
 * frees the frame. */
static uint8_t *
event_new(const char *source, const char *key, const char *dedupe, size_t *len,
          char id[PB_ID_LEN + 1])
{
    pb_builder_t *b = pb_builder_new(source, T_TYPE);
    cr_assert_not_null(b);
    if (key)
        cr_assert_eq(pb_builder_set_key(b, key), 0);
    if (dedupe)
        cr_assert_eq(pb_builder_set_dedupe_id(b, dedupe), 0);
    cr_assert_eq(pb_builder_set_string(b, "email", "ann@example.com", 15), 0);
    uint8_t *frame = NULL;
    cr_assert_eq(pb_builder_encode(b, &frame, len), 0);
    pb_builder_destroy(&b);
    if (id) {
        int err;
        char why[128];
        pb_envelope_t *env =
            pb_envelope_decode(frame, *len, NULL, &err, why, sizeof why);
        cr_assert_not_null(env, "%s", why);
        snprintf(id, PB_ID_LEN + 1, "%s", pb_envelope_id(env));
        pb_envelope_destroy(&env);
    }
    return frame;
}

/* Emit one event from "src" and expect it accepted; returns its id. */
static void
emit_accepted(uint64_t token, const char *key, char id[PB_ID_LEN + 1])
{
    size_t len;
    uint8_t *frame = event_new("src", key, NULL, &len, id);
    cr_assert_eq(pb_peer_emit1(g.src, token, frame, len), 0);
    free(frame);
    pb_peer_msg_t m;
    cr_assert_eq(pb_peer_recv(g.src, &m, T_WAIT_MS), 0, "no ACK");
    cr_assert_str_eq(m.cmd, "ACK");
    cr_assert_eq(m.token, token);
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.accepted, 1);
    cr_assert_eq(m.duplicates, 0);
}

/* The next message at p must be an ACK for token; returns it. */
static pb_peer_msg_t
expect_ack(pb_peer_t *p, uint64_t token, int timeout_ms)
{
    pb_peer_msg_t m;
    cr_assert_eq(pb_peer_recv(p, &m, timeout_ms), 0, "no ACK for %" PRIu64,
                 token);
    cr_assert_str_eq(m.cmd, "ACK");
    cr_assert_eq(m.token, token);
    return m;
}

/* The next message at p must be a delivery; caller releases it. */
static pb_peer_msg_t
expect_dlv(pb_peer_t *p, int timeout_ms)
{
    pb_peer_msg_t m;
    int rc = pb_peer_recv(p, &m, timeout_ms);
    cr_assert_eq(rc, 0, "no delivery (%d, cmd '%s')", rc, m.cmd);
    cr_assert_str_eq(m.cmd, "DLV");
    return m;
}

static void
expect_silence(pb_peer_t *p, int ms)
{
    pb_peer_msg_t m;
    int rc = pb_peer_recv(p, &m, ms);
    cr_assert_eq(rc, PB_ETIMEDOUT, "unexpected %s (event %s attempt %u)", m.cmd,
                 pb_peer_msg_event_id(&m), m.attempt);
    pb_peer_msg_release(&m);
}

/* Wait until cond (over the stats snapshot `st`) holds, or T_WAIT_MS. */
#define WAIT_STATS(st, cond)                                                   \
    do {                                                                       \
        int64_t dl_ = pb_monotonic_ms() + T_WAIT_MS;                           \
        pb_router_stats(g.router, &(st));                                      \
        while (!(cond) && pb_monotonic_ms() < dl_) {                           \
            usleep(2000);                                                      \
            pb_router_stats(g.router, &(st));                                  \
        }                                                                      \
    } while (0)

/* One delivery as the journal holds it. */
struct row {
    char event_id[PB_ID_LEN + 1];
    char destination[32];
    int state;
    int attempts;
    char error[PLUGBOARD_REASON_MAX];
};

/* Read every delivery, in id order, with a connection of our own. */
static int
journal_rows(struct row *rows, int max)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", g.dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT e.id, d.destination, d.state, "
                                    "d.attempts, coalesce(d.last_error, '') "
                                    "FROM deliveries d JOIN events e "
                                    "ON e.seq = d.event_seq ORDER BY d.id",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < max) {
        struct row *r = &rows[n++];
        snprintf(r->event_id, sizeof r->event_id, "%s",
                 (const char *)sqlite3_column_text(st, 0));
        snprintf(r->destination, sizeof r->destination, "%s",
                 (const char *)sqlite3_column_text(st, 1));
        r->state = sqlite3_column_int(st, 2);
        r->attempts = sqlite3_column_int(st, 3);
        snprintf(r->error, sizeof r->error, "%s",
                 (const char *)sqlite3_column_text(st, 4));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A growable byte string for writing hostile frames by hand. */
struct bytes {
    uint8_t *p;
    size_t n;
};

static void
put(struct bytes *b, const void *src, size_t n)
{
    b->p = realloc(b->p, b->n + n + 1);
    cr_assert_not_null(b->p);
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void
put_u8(struct bytes *b, uint8_t v)
{
    put(b, &v, 1);
}

static void
put_str(struct bytes *b, const char *s)
{
    put_u8(b, (uint8_t)(0xa0 | strlen(s)));
    put(b, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* Accepting and delivering                                            */
/* ------------------------------------------------------------------ */

Test(router, emit_reaches_every_destination_once)
{
    rig_start(&(struct rig_opts){.to = {"a", "b"}});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, "ann@example.com", id);

    pb_peer_msg_t da = expect_dlv(g.a, T_WAIT_MS);
    pb_peer_msg_t db = expect_dlv(g.b, T_WAIT_MS);
    cr_assert_str_eq(pb_peer_msg_event_id(&da), id);
    cr_assert_str_eq(pb_peer_msg_event_id(&db), id);
    cr_assert_str_eq(pb_envelope_type(da.env), T_TYPE);
    cr_assert_str_eq(pb_envelope_key(da.env), "ann@example.com");
    cr_assert_eq(da.attempt, 1);
    cr_assert_eq(db.attempt, 1);
    cr_assert_neq(da.id, db.id, "one delivery per destination");
    expect_silence(g.a, 100);
    expect_silence(g.b, 0);

    cr_assert_eq(pb_peer_result(g.a, da.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    cr_assert_eq(pb_peer_result(g.b, db.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    pb_router_stats_t st;
    WAIT_STATS(st, st.delivered == 2);
    cr_assert_eq(st.delivered, 2);
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.pending, 0);
    cr_assert_eq(st.inflight, 0);
    cr_assert_eq(st.bad_frames, 0);

    struct row rows[4];
    cr_assert_eq(journal_rows(rows, 4), 2);
    cr_assert_str_eq(rows[0].destination, "a");
    cr_assert_str_eq(rows[1].destination, "b");
    for (int i = 0; i < 2; i++) {
        cr_assert_str_eq(rows[i].event_id, id);
        cr_assert_eq(rows[i].state, PB_DELIVERY_DELIVERED);
        cr_assert_eq(rows[i].attempts, 1);
    }
    pb_peer_msg_release(&da);
    pb_peer_msg_release(&db);
}

Test(router, many_emits_share_few_commits)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    enum { N = 200 };
    for (int i = 0; i < N; i++) {
        size_t len;
        uint8_t *frame = event_new("src", NULL, NULL, &len, NULL);
        cr_assert_eq(pb_peer_emit1(g.src, 1000 + i, frame, len), 0);
        free(frame);
    }
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        pb_peer_msg_t m;
        cr_assert_eq(pb_peer_recv(g.src, &m, 5000), 0, "ACK %d missing", i);
        cr_assert_str_eq(m.cmd, "ACK");
        cr_assert(m.token >= 1000 && m.token < 1000 + N);
        cr_assert_not(seen[m.token - 1000], "ACK twice");
        seen[m.token - 1000] = true;
        cr_assert_eq(m.status, 0);
        cr_assert_eq(m.accepted, 1);
    }
    pb_router_stats_t st;
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.accepted, N);
    fprintf(stderr, "router group commit: %d emits in %" PRIu64 " commits\n", N,
            (uint64_t)st.commits);
    cr_assert_lt(st.commits, N, "%" PRIu64 " commits for %d emits",
                 (uint64_t)st.commits, N);
}

Test(router, dedupe_id_refuses_the_second_event)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    char id1[PB_ID_LEN + 1];
    size_t l1, l2;
    uint8_t *f1 = event_new("src", NULL, "evt_1MvN8z", &l1, id1);
    uint8_t *f2 = event_new("src", NULL, "evt_1MvN8z", &l2, NULL);
    cr_assert_eq(pb_peer_emit1(g.src, 1, f1, l1), 0);
    pb_peer_msg_t m = expect_ack(g.src, 1, T_WAIT_MS);
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.accepted, 1);
    cr_assert_eq(m.duplicates, 0);
    cr_assert_eq(pb_peer_emit1(g.src, 2, f2, l2), 0);
    m = expect_ack(g.src, 2, T_WAIT_MS);
    cr_assert_eq(m.status, 0, "a duplicate is not an error");
    cr_assert_eq(m.accepted, 0);
    cr_assert_eq(m.duplicates, 1);
    free(f1);
    free(f2);

    /* twice in one EMIT: the first wins */
    char id3[PB_ID_LEN + 1];
    size_t lens[2];
    const uint8_t *frames[2];
    uint8_t *f3 = event_new("src", NULL, "evt_2", &lens[0], id3);
    uint8_t *f4 = event_new("src", NULL, "evt_2", &lens[1], NULL);
    frames[0] = f3;
    frames[1] = f4;
    cr_assert_eq(pb_peer_emit(g.src, 3, frames, lens, 2), 0);
    m = expect_ack(g.src, 3, T_WAIT_MS);
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.accepted, 1);
    cr_assert_eq(m.duplicates, 1);
    free(f3);
    free(f4);

    pb_peer_msg_t d1 = expect_dlv(g.a, T_WAIT_MS);
    pb_peer_msg_t d2 = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_str_eq(pb_peer_msg_event_id(&d1), id1);
    cr_assert_str_eq(pb_peer_msg_event_id(&d2), id3);
    expect_silence(g.a, 300);
    pb_router_stats_t st;
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.accepted, 2);
    cr_assert_eq(st.duplicates, 2);
    pb_peer_msg_release(&d1);
    pb_peer_msg_release(&d2);
}

/* ------------------------------------------------------------------ */
/* Hostile input                                                       */
/* ------------------------------------------------------------------ */

/* The required envelope keys, from "src", with "data" last and its value
 * left for the caller. */
static struct bytes
hostile_head(void)
{
    struct bytes b = {0};
    put_u8(&b, 0x85);
    put_str(&b, "id");
    put_str(&b, "01HZX3J8Q2W4E6R8T0Y2U4I6O8");
    put_str(&b, "type");
    put_str(&b, T_TYPE);
    put_str(&b, "source");
    put_str(&b, "src");
    put_str(&b, "time");
    put_u8(&b, 0xcd); /* uint16 */
    put_u8(&b, 0x12);
    put_u8(&b, 0x34);
    put_str(&b, "data");
    return b;
}

/* Send an EMIT carrying frames and expect it refused, with bad_frames
 * counted once more. */
static void
expect_refused(uint64_t token, const uint8_t *const *frames, const size_t *lens,
               size_t n, uint64_t *bad)
{
    cr_assert_eq(pb_peer_emit(g.src, token, frames, lens, n), 0);
    pb_peer_msg_t m = expect_ack(g.src, token, T_WAIT_MS);
    cr_assert_lt(m.status, 0, "EMIT %" PRIu64 " was not refused", token);
    cr_assert_eq(m.accepted, 0);
    pb_router_stats_t st;
    (*bad)++;
    WAIT_STATS(st, st.bad_frames == *bad);
    cr_assert_eq(st.bad_frames, *bad, "EMIT %" PRIu64, token);
}

Test(router, hostile_frames_are_refused_and_counted)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    uint64_t bad = 0;
    size_t vlen;
    uint8_t *valid = event_new("src", NULL, NULL, &vlen, NULL);

    /* garbage */
    static const uint8_t garbage[] = "\xc1\xc1 this is not msgpack";
    const uint8_t *f[2] = {garbage};
    size_t l[2] = {sizeof garbage - 1};
    expect_refused(1, f, l, 1, &bad);

    /* a valid frame cut short */
    f[0] = valid;
    l[0] = vlen - 5;
    expect_refused(2, f, l, 1, &bad);

    /* a string that claims 2 GiB */
    struct bytes big = {0};
    put_u8(&big, 0x85);
    put_str(&big, "id");
    put(&big,
        "\xdb\x7f\xff\xff\xff"
        "0123",
        9);
    f[0] = big.p;
    l[0] = big.n;
    expect_refused(3, f, l, 1, &bad);

    /* data nested 100 deep */
    struct bytes deep = hostile_head();
    for (int i = 0; i < 100; i++) {
        put_u8(&deep, 0x81);
        put_str(&deep, "k");
    }
    put_u8(&deep, 0xc0);
    f[0] = deep.p;
    l[0] = deep.n;
    expect_refused(4, f, l, 1, &bad);

    /* "src" speaking for "b" */
    size_t slen;
    uint8_t *spoof = event_new("b", NULL, NULL, &slen, NULL);
    f[0] = spoof;
    l[0] = slen;
    expect_refused(5, f, l, 1, &bad);

    /* one good frame and one bad: nothing of that EMIT is stored */
    f[0] = valid;
    l[0] = vlen;
    f[1] = garbage;
    l[1] = sizeof garbage - 1;
    expect_refused(6, f, l, 2, &bad);

    /* an EMIT without frames */
    expect_refused(7, f, l, 0, &bad);

    /* a token of the wrong size */
    const void *parts[2] = {"abc", valid};
    size_t plens[2] = {3, vlen};
    cr_assert_eq(pb_peer_send(g.src, "EMIT", parts, plens, 2), 0);
    pb_peer_msg_t m = expect_ack(g.src, 0, T_WAIT_MS);
    cr_assert_lt(m.status, 0);
    pb_router_stats_t st;
    WAIT_STATS(st, st.bad_frames == bad + 1);
    cr_assert_eq(st.bad_frames, ++bad);

    /* an unknown command */
    cr_assert_eq(pb_peer_send(g.src, "HACK", NULL, NULL, 0), 0);
    WAIT_STATS(st, st.bad_frames == bad + 1);
    cr_assert_eq(st.bad_frames, ++bad);

    /* a connector the router does not know: dropped, no answer */
    char endpoint[96];
    snprintf(endpoint, sizeof endpoint, "inproc://test-router-%d-%d",
             (int)getpid(), g.generation);
    pb_peer_t *mallory = pb_peer_new(g.zctx, endpoint, "mallory", true);
    cr_assert_not_null(mallory);
    size_t mlen;
    uint8_t *mframe = event_new("mallory", NULL, NULL, &mlen, NULL);
    cr_assert_eq(pb_peer_emit1(mallory, 9, mframe, mlen), 0);
    free(mframe);
    bad += 1; /* its EMIT; a HELO from an unknown routing id is only
                 remembered, for a table swap that may name it (reload) */
    WAIT_STATS(st, st.bad_frames == bad);
    cr_assert_eq(st.bad_frames, bad);
    expect_silence(mallory, 100);
    pb_peer_destroy(&mallory);

    /* nothing so far was stored or delivered */
    expect_silence(g.a, 100);
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.accepted, 0);
    cr_assert_eq(st.pending, 0);

    /* and the router still works */
    char id[PB_ID_LEN + 1];
    emit_accepted(10, NULL, id);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_str_eq(pb_peer_msg_event_id(&d), id);

    /* a result of the wrong size is counted and ignored */
    const void *rparts[1] = {"\x01\x02\x03\x04\x05"};
    size_t rlens[1] = {5};
    cr_assert_eq(pb_peer_send(g.a, "RES", rparts, rlens, 1), 0);
    WAIT_STATS(st, st.bad_frames == bad + 1);
    cr_assert_eq(st.bad_frames, ++bad);
    cr_assert_eq(st.inflight, 1);
    cr_assert_eq(st.delivered, 0);

    /* a result for someone else's delivery is ignored */
    cr_assert_eq(pb_peer_result(g.b, d.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    usleep(100000);
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.delivered, 0);

    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    WAIT_STATS(st, st.delivered == 1);
    cr_assert_eq(st.delivered, 1);
    cr_assert_eq(st.pending, 0);
    cr_assert_eq(st.accepted, 1);

    struct row rows[4];
    cr_assert_eq(journal_rows(rows, 4), 1, "refused EMITs left rows");
    pb_peer_msg_release(&d);
    free(valid);
    free(spoof);
    free(big.p);
    free(deep.p);
}

Test(router, a_repeated_result_is_applied_once)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, NULL, id);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    /* keep the router busy with EMITs so both answers land in one batch */
    for (int i = 0; i < 20; i++) {
        size_t len;
        uint8_t *frame = event_new("src", "k", NULL, &len, NULL);
        cr_assert_eq(pb_peer_emit1(g.src, 100 + i, frame, len), 0);
        free(frame);
    }
    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    for (int i = 0; i < 20; i++) {
        pb_peer_msg_t m = expect_ack(g.src, 100 + i, T_WAIT_MS);
        cr_assert_eq(m.status, 0);
    }
    pb_router_stats_t st;
    WAIT_STATS(st, st.delivered >= 1);
    usleep(100000);
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.delivered, 1);
    cr_assert_eq(st.accepted, 21);
    cr_assert_eq(st.pending, 20);
    pb_peer_msg_release(&d);
}

/* ------------------------------------------------------------------ */
/* Retries, dead letters, deadlines                                    */
/* ------------------------------------------------------------------ */

/* The delay the router drew after attempt `attempt` of delivery id: the
 * next attempt time it journaled minus the time it journaled the failure
 * (both wall clock, written in one transaction). */
static int64_t
drawn_delay_ms(int64_t id, int attempt)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", g.dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT d.next_ms - a.at_ms FROM "
                                    "deliveries d JOIN attempts a ON "
                                    "a.delivery_id = d.id WHERE d.id = ?1 "
                                    "AND a.attempt = ?2 AND d.attempts = ?2",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, attempt);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW,
                 "attempt %d of delivery %lld is not the journal's last",
                 attempt, (long long)id);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/*
 * Backoff observed, without a timed assertion: after each failure the
 * router draws a delay within the policy's ceiling for that attempt
 * (full jitter: [0, min(max, initial * 2^(n-1))]) and journals the next
 * attempt time; the destination's clock then shows that the next attempt
 * came no earlier than that delay after it answered.  Six failures with
 * ceilings 40, 80, 160, 160, 160, 160 ms: a router that did not wait
 * would be caught by any draw above a few milliseconds.
 */
Test(router, transient_failures_are_retried_with_backoff)
{
    enum { FAILS = 6 };
    rig_start(&(struct rig_opts){.to = {"a"}, .retry = {8, 40, 160}});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, "ann@example.com", id);

    static const int64_t ceiling[FAILS] = {40, 80, 160, 160, 160, 160};
    int64_t id0 = 0, answered = 0, drawn_total = 0, waited_total = 0;
    for (uint32_t attempt = 1; attempt <= FAILS + 1; attempt++) {
        pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
        cr_assert_str_eq(pb_peer_msg_event_id(&d), id);
        cr_assert_eq(d.attempt, attempt);
        if (attempt == 1)
            id0 = d.id;
        cr_assert_eq(d.id, id0, "same delivery every attempt");
        if (attempt > 1) {
            int64_t drawn = drawn_delay_ms(d.id, (int)attempt - 1);
            int64_t waited = d.at_ms - answered;
            cr_assert_geq(drawn, 0);
            cr_assert_leq(drawn, ceiling[attempt - 2] + 1,
                          "delay %lld ms after attempt %u, ceiling %lld ms",
                          (long long)drawn, attempt - 1,
                          (long long)ceiling[attempt - 2]);
            /* 2 ms: the clocks tick in whole milliseconds, apart */
            cr_assert_geq(waited + 2, drawn,
                          "attempt %u came %lld ms after the failure, the "
                          "backoff was %lld ms",
                          attempt, (long long)waited, (long long)drawn);
            drawn_total += drawn;
            waited_total += waited;
        }
        uint8_t outcome = attempt <= FAILS ? PLUGBOARD_RETRY : PLUGBOARD_OK;
        answered = pb_monotonic_ms();
        cr_assert_eq(pb_peer_result(g.a, d.id, attempt, outcome, 0,
                                    attempt <= FAILS ? "HTTP 503" : NULL),
                     0);
        pb_peer_msg_release(&d);
    }
    fprintf(stderr,
            "router backoff: %d retries drew %lld ms in all, waited %lld ms\n",
            FAILS, (long long)drawn_total, (long long)waited_total);
    pb_router_stats_t st;
    WAIT_STATS(st, st.delivered == 1);
    cr_assert_eq(st.delivered, 1);
    cr_assert_eq(st.retried, FAILS);
    cr_assert_eq(st.dead, 0);
    cr_assert_eq(st.pending, 0);
    expect_silence(g.a, 100);

    struct row rows[2];
    cr_assert_eq(journal_rows(rows, 2), 1);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DELIVERED);
    cr_assert_eq(rows[0].attempts, FAILS + 1);
}

Test(router, retry_after_is_honoured)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .retry = {5, 10, 20}});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, NULL, id);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    int64_t sent = pb_monotonic_ms();
    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_RETRY, 300,
                                "HTTP 429 retry-after 0.3s"),
                 0);
    pb_peer_msg_t d2 = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(d2.id, d.id);
    cr_assert_eq(d2.attempt, 2);
    cr_assert_geq(d2.at_ms - sent, 250, "redelivered after %lld ms",
                  (long long)(d2.at_ms - sent));
    cr_assert_eq(pb_peer_result(g.a, d2.id, 2, PLUGBOARD_OK, 0, NULL), 0);
    pb_router_stats_t st;
    WAIT_STATS(st, st.delivered == 1);
    cr_assert_eq(st.delivered, 1);
    pb_peer_msg_release(&d);
    pb_peer_msg_release(&d2);
}

Test(router, rejection_dead_letters_at_once_and_notifies_the_owner)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .notify = "ops"});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, "ann@example.com", id);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_REJECT, 0,
                                "HTTP 422: email is invalid"),
                 0);

    pb_peer_msg_t n = expect_dlv(g.ops, T_WAIT_MS);
    const pb_envelope_t *ev = n.env;
    cr_assert_str_eq(pb_envelope_type(ev), PLUGBOARD_EV_DELIVERY_DEAD);
    cr_assert_eq(n.attempt, 1);
    struct {
        const char *path, *want;
    } fields[] = {
        {"route", "contacts-to-crm"},
        {"destination", "a"},
        {"why", "sales re-typed every new contact by hand"},
        {"owner", "sales-ops@example.com"},
        {"on_failure", "new leads wait a day for a first call"},
        {"last_error", "HTTP 422: email is invalid"},
        {"event.id", id},
        {"event.type", T_TYPE},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *s = NULL;
        size_t len = 0;
        cr_assert(pb_event_string(ev, fields[i].path, &s, &len),
                  "notice lacks %s", fields[i].path);
        cr_assert_eq(len, strlen(fields[i].want), "%s", fields[i].path);
        cr_assert_eq(memcmp(s, fields[i].want, len), 0, "%s: %.*s",
                     fields[i].path, (int)len, s);
    }
    int64_t attempts = 0;
    cr_assert(pb_event_int(ev, "attempts", &attempts));
    cr_assert_eq(attempts, 1);
    cr_assert_eq(pb_peer_result(g.ops, n.id, 1, PLUGBOARD_OK, 0, NULL), 0);

    pb_router_stats_t st;
    WAIT_STATS(st, st.dead == 1 && st.delivered == 1);
    cr_assert_eq(st.dead, 1);
    cr_assert_eq(st.retried, 0);
    cr_assert_eq(st.delivered, 1, "the notice was delivered");
    cr_assert_eq(st.pending, 0);
    expect_silence(g.a, 200);

    struct row rows[4];
    cr_assert_eq(journal_rows(rows, 4), 2);
    cr_assert_str_eq(rows[0].destination, "a");
    cr_assert_eq(rows[0].state, PB_DELIVERY_DEAD);
    cr_assert_eq(rows[0].attempts, 1);
    cr_assert_str_eq(rows[0].error, "HTTP 422: email is invalid");
    cr_assert_str_eq(rows[1].destination, "ops");
    cr_assert_eq(rows[1].state, PB_DELIVERY_DELIVERED);
    pb_peer_msg_release(&d);
    pb_peer_msg_release(&n);
}

Test(router, exhausted_attempts_dead_letter_with_the_last_error)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .retry = {3, 10, 20}});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, NULL, id);
    for (uint32_t attempt = 1; attempt <= 3; attempt++) {
        pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
        cr_assert_eq(d.attempt, attempt);
        char why[64];
        snprintf(why, sizeof why, "HTTP 503 (try %u)", attempt);
        cr_assert_eq(
            pb_peer_result(g.a, d.id, attempt, PLUGBOARD_RETRY, 0, why), 0);
        pb_peer_msg_release(&d);
    }
    pb_router_stats_t st;
    WAIT_STATS(st, st.dead == 1);
    cr_assert_eq(st.dead, 1);
    cr_assert_eq(st.retried, 2);
    cr_assert_eq(st.pending, 0);
    expect_silence(g.a, 200);
    expect_silence(g.ops, 0); /* no notify configured */

    struct row rows[2];
    cr_assert_eq(journal_rows(rows, 2), 1);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DEAD);
    cr_assert_eq(rows[0].attempts, 3);
    cr_assert_str_eq(rows[0].error, "HTTP 503 (try 3)");
}

/*
 * A vendor's rate limit is not the event's failure: HOLD answers (a 429,
 * a daily limit) spend none of the route's attempts, across a restart
 * too, while every send still gets its own attempt number (so a
 * connector knows an earlier send may have written something).  Only
 * genuine failures count toward the budget.
 */
Test(router, holds_for_a_rate_limit_spend_no_attempt)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .retry = {3, 10, 20}});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, NULL, id);
    uint32_t attempt = 1;
    /* four holds: more than the three attempts the route allows */
    for (int i = 0; i < 4; i++, attempt++) {
        pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
        cr_assert_eq(d.attempt, attempt);
        cr_assert_eq(pb_peer_result(g.a, d.id, attempt, PLUGBOARD_HOLD, 20,
                                    "rate limited: HTTP 429"),
                     0);
        pb_peer_msg_release(&d);
    }
    /* one genuine failure, then the host restarts */
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(d.attempt, attempt);
    cr_assert_eq(
        pb_peer_result(g.a, d.id, attempt, PLUGBOARD_RETRY, 0, "HTTP 503"), 0);
    pb_peer_msg_release(&d);
    attempt++;
    pb_router_stats_t st;
    WAIT_STATS(st, st.retried == 5);
    cr_assert_eq(st.dead, 0);
    rig_restart();
    /* after the restart: one more hold, then the second and third real
     * failures; the third uses up the budget */
    d = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(d.attempt, attempt);
    cr_assert_eq(pb_peer_result(g.a, d.id, attempt, PLUGBOARD_HOLD, 0,
                                "held: daily limit"),
                 0);
    pb_peer_msg_release(&d);
    attempt++;
    d = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(d.attempt, attempt);
    cr_assert_eq(
        pb_peer_result(g.a, d.id, attempt, PLUGBOARD_RETRY, 0, "HTTP 502"), 0);
    pb_peer_msg_release(&d);
    attempt++;
    d = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(d.attempt, attempt);
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.dead, 0, "two failures and five holds are not three");
    cr_assert_eq(
        pb_peer_result(g.a, d.id, attempt, PLUGBOARD_RETRY, 0, "HTTP 500"), 0);
    pb_peer_msg_release(&d);
    WAIT_STATS(st, st.dead == 1);
    cr_assert_eq(st.dead, 1);
    expect_silence(g.a, 100);
    struct row rows[2];
    cr_assert_eq(journal_rows(rows, 2), 1);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DEAD);
    cr_assert_eq(rows[0].attempts, 8, "every send is counted as made");
    cr_assert_str_eq(rows[0].error, "HTTP 500");
}

/*
 * A source that verified a vendor item but cannot map it emits it as
 * plugboard.ingress.unmapped: accepted with the rest of its request (so
 * the vendor gets its 2xx), routed nowhere, and kept at once as a dead
 * letter of the source connector with the source's reason.  It can be
 * dropped; a replay is refused, since no route could take it.
 */
Test(router, an_unmapped_vendor_item_becomes_a_dead_letter_of_its_source)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    pb_builder_t *b = pb_builder_new("src", PLUGBOARD_EV_INGRESS_UNMAPPED);
    cr_assert_not_null(b);
    cr_assert_eq(pb_builder_set_string(b, "reason",
                                       "malformed event: no amount", 26),
                 0);
    cr_assert_eq(pb_builder_set_string(b, "payload", "{\"id\":\"evt_1\"}", 14),
                 0);
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    pb_builder_destroy(&b);
    cr_assert_eq(pb_peer_emit1(g.src, 7, frame, len), 0);
    free(frame);
    pb_peer_msg_t m = expect_ack(g.src, 7, T_WAIT_MS);
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.accepted, 0, "an unmapped item is not an accepted event");
    cr_assert_eq(m.unmapped, 1, "durable before the vendor is answered");
    expect_silence(g.a, 100);

    pb_router_stats_t st;
    WAIT_STATS(st, st.dead == 1);
    cr_assert_eq(st.dead, 1);
    cr_assert_eq(st.pending, 0);
    struct row rows[2];
    cr_assert_eq(journal_rows(rows, 2), 1);
    cr_assert_str_eq(rows[0].destination, "src");
    cr_assert_eq(rows[0].state, PB_DELIVERY_DEAD);
    cr_assert_str_eq(rows[0].error, "malformed event: no amount");

    json_t *req = json_pack("{s:s}", "cmd", "dlq.list");
    json_t *list = pb_router_control(g.router, req, T_WAIT_MS);
    json_decref(req);
    json_t *dl = json_array_get(json_object_get(list, "dead_letters"), 0);
    cr_assert_not_null(dl);
    cr_assert_str_eq(json_string_value(json_object_get(dl, "route")),
                     "(ingress)");
    json_int_t id = json_integer_value(json_object_get(dl, "id"));
    json_decref(list);
    req = json_pack("{s:s,s:I}", "cmd", "dlq.replay", "id", id);
    json_t *resp = pb_router_control(g.router, req, T_WAIT_MS);
    json_decref(req);
    cr_assert(json_is_false(json_object_get(resp, "ok")));
    const char *err = json_string_value(json_object_get(resp, "error"));
    cr_assert(err && strstr(err, "cannot be replayed"), "%s", err);
    json_decref(resp);
    expect_silence(g.a, 100);
    req = json_pack("{s:s,s:I}", "cmd", "dlq.drop", "id", id);
    resp = pb_router_control(g.router, req, T_WAIT_MS);
    json_decref(req);
    cr_assert(json_is_true(json_object_get(resp, "ok")));
    json_decref(resp);
}

Test(router, same_key_keeps_order_across_retries)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .retry = {5, 50, 100}});
    char ids[4][PB_ID_LEN + 1];
    const char *keys[4] = {"K", "K", "K", "L"};
    uint8_t *frames[4];
    size_t lens[4];
    for (int i = 0; i < 4; i++)
        frames[i] = event_new("src", keys[i], NULL, &lens[i], ids[i]);
    cr_assert_eq(
        pb_peer_emit(g.src, 1, (const uint8_t *const *)frames, lens, 4), 0);
    pb_peer_msg_t ack = expect_ack(g.src, 1, T_WAIT_MS);
    cr_assert_eq(ack.status, 0);
    cr_assert_eq(ack.accepted, 4);
    for (int i = 0; i < 4; i++)
        free(frames[i]);

    /* answer as they come: e1's first attempt fails, all else succeeds */
    struct {
        int ev;
        uint32_t attempt;
    } log[16];
    int n = 0, done = 0;
    while (done < 4) {
        pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
        int ev = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(pb_peer_msg_event_id(&d), ids[i]) == 0)
                ev = i;
        cr_assert_geq(ev, 0);
        cr_assert_lt(n, 16);
        log[n].ev = ev;
        log[n].attempt = d.attempt;
        n++;
        bool fail = ev == 0 && d.attempt == 1;
        cr_assert_eq(pb_peer_result(g.a, d.id, d.attempt,
                                    fail ? PLUGBOARD_RETRY : PLUGBOARD_OK, 0,
                                    fail ? "HTTP 502" : NULL),
                     0);
        if (!fail)
            done++;
        pb_peer_msg_release(&d);
    }
    cr_assert_eq(n, 5);
    /* key K: e1, e1 again, e2, e3 */
    int k[4], kn = 0, e4_at = -1, e1_retry_at = -1;
    for (int i = 0; i < n; i++) {
        if (log[i].ev == 3)
            e4_at = i;
        else
            k[kn++] = i;
        if (log[i].ev == 0 && log[i].attempt == 2)
            e1_retry_at = i;
    }
    cr_assert_eq(kn, 4);
    cr_assert(log[k[0]].ev == 0 && log[k[0]].attempt == 1);
    cr_assert(log[k[1]].ev == 0 && log[k[1]].attempt == 2);
    cr_assert(log[k[2]].ev == 1 && log[k[2]].attempt == 1);
    cr_assert(log[k[3]].ev == 2 && log[k[3]].attempt == 1);
    /* key L did not wait for K's retry */
    cr_assert_lt(e4_at, e1_retry_at);
    pb_router_stats_t st;
    WAIT_STATS(st, st.delivered == 4);
    cr_assert_eq(st.delivered, 4);
    cr_assert_eq(st.retried, 1);
}

/* With a window of one, K1's answer frees the slot at once, so L1 goes
 * out while that answer is still being committed; K2 waits for the commit
 * of K1's success (per-key order), though it was accepted before L1. */
Test(router, an_answer_frees_the_window_slot_but_not_the_key)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .window = 1});
    char ids[3][PB_ID_LEN + 1];
    const char *keys[3] = {"K", "K", "L"};
    uint8_t *frames[3];
    size_t lens[3];
    for (int i = 0; i < 3; i++)
        frames[i] = event_new("src", keys[i], NULL, &lens[i], ids[i]);
    cr_assert_eq(
        pb_peer_emit(g.src, 1, (const uint8_t *const *)frames, lens, 3), 0);
    pb_peer_msg_t ack = expect_ack(g.src, 1, T_WAIT_MS);
    cr_assert_eq(ack.accepted, 3);
    for (int i = 0; i < 3; i++)
        free(frames[i]);

    const int want[3] = {0, 2, 1}; /* K1, then L1, then K2 */
    for (int n = 0; n < 3; n++) {
        pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
        cr_expect_str_eq(pb_peer_msg_event_id(&d), ids[want[n]],
                         "delivery %d is event %d", n + 1, want[n] + 1);
        cr_assert_eq(
            pb_peer_result(g.a, d.id, d.attempt, PLUGBOARD_OK, 0, NULL), 0);
        pb_peer_msg_release(&d);
    }
    pb_router_stats_t st;
    WAIT_STATS(st, st.delivered == 3);
    cr_assert_eq(st.delivered, 3);
    cr_assert_eq(st.inflight, 0);
}

Test(router, an_unanswered_delivery_is_retried_after_its_deadline)
{
    rig_start(&(struct rig_opts){
        .to = {"a"}, .retry = {5, 10, 20}, .timeout_ms = 200});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, NULL, id);
    pb_peer_msg_t d1 = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(d1.attempt, 1);
    /* no answer */
    pb_peer_msg_t d2 = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(d2.id, d1.id);
    cr_assert_eq(d2.attempt, 2);
    cr_assert_geq(d2.at_ms - d1.at_ms, 190, "redelivered after %lld ms",
                  (long long)(d2.at_ms - d1.at_ms));
    pb_router_stats_t st;
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.timeouts, 1);

    /* the late answer to attempt 1 is ignored (were it not, the delivery
     * would be dead), the answer to attempt 2 counts */
    cr_assert_eq(pb_peer_result(g.a, d1.id, 1, PLUGBOARD_REJECT, 0, "late"), 0);
    cr_assert_eq(pb_peer_result(g.a, d2.id, 2, PLUGBOARD_OK, 0, NULL), 0);
    WAIT_STATS(st, st.delivered == 1);
    cr_assert_eq(st.delivered, 1);
    cr_assert_eq(st.dead, 0);
    cr_assert_eq(st.timeouts, 1);
    struct row rows[2];
    cr_assert_eq(journal_rows(rows, 2), 1);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DELIVERED);
    cr_assert_eq(rows[0].attempts, 2);
    pb_peer_msg_release(&d1);
    pb_peer_msg_release(&d2);
}

/* ------------------------------------------------------------------ */
/* Durability                                                          */
/* ------------------------------------------------------------------ */

Test(router, a_restart_redelivers_what_was_pending)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    char id[PB_ID_LEN + 1];
    size_t len;
    uint8_t *frame = event_new("src", "K", "vendor-evt-7", &len, id);
    cr_assert_eq(pb_peer_emit1(g.src, 1, frame, len), 0);
    free(frame);
    pb_peer_msg_t m = expect_ack(g.src, 1, T_WAIT_MS);
    cr_assert_eq(m.accepted, 1);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    /* no answer: the host goes down with the delivery in flight */

    rig_restart();
    pb_router_stats_t st;
    pb_router_stats(g.router, &st);
    cr_assert_eq(st.pending, 1);
    pb_peer_msg_t again = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(again.id, d.id, "same delivery");
    cr_assert_str_eq(pb_peer_msg_event_id(&again), id);
    cr_assert_geq(again.attempt, 1);

    /* the vendor's id is still remembered */
    frame = event_new("src", "K", "vendor-evt-7", &len, NULL);
    cr_assert_eq(pb_peer_emit1(g.src, 2, frame, len), 0);
    free(frame);
    m = expect_ack(g.src, 2, T_WAIT_MS);
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.duplicates, 1);

    cr_assert_eq(
        pb_peer_result(g.a, again.id, again.attempt, PLUGBOARD_OK, 0, NULL), 0);
    WAIT_STATS(st, st.delivered == 1);
    cr_assert_eq(st.delivered, 1);
    cr_assert_eq(st.pending, 0);
    struct row rows[2];
    cr_assert_eq(journal_rows(rows, 2), 1);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DELIVERED);
    pb_peer_msg_release(&d);
    pb_peer_msg_release(&again);
}

/* The first column of the first row of sql, with our own connection. */
static int64_t
journal_int(const char *sql)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", g.dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/*
 * The route's retention settings reach the journal: with a retention of
 * 1 ms, a restart prunes the delivered event and forgets its vendor id,
 * so the vendor's event sent again is accepted anew (with the default
 * week it is a duplicate: a_restart_redelivers_what_was_pending).  What
 * is still pending is never pruned.
 */
Test(router, a_restart_prunes_what_is_past_its_retention)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .retention_ms = 1});
    size_t len;
    uint8_t *frame = event_new("src", "K", "vendor-evt-8", &len, NULL);
    cr_assert_eq(pb_peer_emit1(g.src, 1, frame, len), 0);
    free(frame);
    cr_assert_eq(expect_ack(g.src, 1, T_WAIT_MS).accepted, 1);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    pb_peer_msg_release(&d);
    char kept[PB_ID_LEN + 1];
    emit_accepted(2, "L", kept); /* stays pending: never answered */
    pb_peer_msg_t k = expect_dlv(g.a, T_WAIT_MS);
    pb_router_stats_t st;
    WAIT_STATS(st, st.delivered == 1);
    cr_assert_eq(st.delivered, 1);
    usleep(5000); /* past the 1 ms retention */

    rig_restart();
    int64_t deadline = pb_monotonic_ms() + T_WAIT_MS;
    while (journal_int("SELECT count(*) FROM events") != 1 &&
           pb_monotonic_ms() < deadline)
        usleep(10000);
    cr_assert_eq(journal_int("SELECT count(*) FROM events"), 1,
                 "the delivered event is pruned, the pending one kept");
    cr_assert_eq(journal_int("SELECT count(*) FROM dedupe"), 0);
    struct row rows[4];
    cr_assert_eq(journal_rows(rows, 4), 1);
    cr_assert_str_eq(rows[0].event_id, kept);
    cr_assert_eq(rows[0].state, PB_DELIVERY_PENDING);

    frame = event_new("src", "K", "vendor-evt-8", &len, NULL);
    cr_assert_eq(pb_peer_emit1(g.src, 3, frame, len), 0);
    free(frame);
    pb_peer_msg_t m = expect_ack(g.src, 3, T_WAIT_MS);
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.accepted, 1, "a forgotten vendor id is accepted anew");
    cr_assert_eq(m.duplicates, 0);
    pb_peer_msg_release(&k);
}

/*
 * While another connection holds the database's write lock, nothing can
 * be committed: an EMIT is refused (the webhook's sender would get a 503
 * and retry) and a result cannot be recorded, so its delivery stays
 * pending and is made again.  Once the lock is gone, all works.  This test
 * waits out the journal's 5 s busy timeout once.
 */
Test(router, a_journal_that_cannot_commit_refuses_and_recovers)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    char id0[PB_ID_LEN + 1];
    emit_accepted(1, NULL, id0);
    pb_peer_msg_t d0 = expect_dlv(g.a, T_WAIT_MS);

    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", g.dir);
    sqlite3 *lock = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &lock, SQLITE_OPEN_READWRITE, NULL),
                 SQLITE_OK);
    /* the router may be inside a commit of its own: wait for it */
    sqlite3_busy_timeout(lock, 5000);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(lock));

    cr_assert_eq(pb_peer_result(g.a, d0.id, 1, PLUGBOARD_OK, 0, NULL), 0);
    size_t len;
    uint8_t *frame = event_new("src", NULL, NULL, &len, NULL);
    cr_assert_eq(pb_peer_emit1(g.src, 2, frame, len), 0);
    free(frame);
    pb_peer_msg_t m = expect_ack(g.src, 2, 12000);
    cr_assert_lt(m.status, 0);
    cr_assert_eq(m.accepted, 0);
    usleep(50000); /* the batch is applied just after the ACKs go */
    pb_router_stats_t st;
    pb_router_stats(g.router, &st);
    cr_assert_geq(st.journal_errors, 1);
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.delivered, 0, "an unrecorded result is not a delivery");
    cr_assert_eq(st.pending, 1);

    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);

    char id2[PB_ID_LEN + 1];
    emit_accepted(3, NULL, id2);
    /* the new event now, the unrecorded one again a little later */
    bool got0 = false, got2 = false;
    while (!got0 || !got2) {
        pb_peer_msg_t d = expect_dlv(g.a, 8000);
        const char *eid = pb_peer_msg_event_id(&d);
        if (strcmp(eid, id0) == 0) {
            cr_assert_not(got0);
            cr_assert_eq(d.id, d0.id);
            got0 = true;
        } else {
            cr_assert_str_eq(eid, id2);
            cr_assert_not(got2);
            got2 = true;
        }
        cr_assert_eq(
            pb_peer_result(g.a, d.id, d.attempt, PLUGBOARD_OK, 0, NULL), 0);
        pb_peer_msg_release(&d);
    }
    WAIT_STATS(st, st.delivered == 2);
    cr_assert_eq(st.delivered, 2);
    cr_assert_eq(st.pending, 0);
    struct row rows[4];
    cr_assert_eq(journal_rows(rows, 4), 2, "the refused EMIT left no row");
    cr_assert_str_eq(rows[0].event_id, id0);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DELIVERED);
    cr_assert_str_eq(rows[1].event_id, id2);
    cr_assert_eq(rows[1].state, PB_DELIVERY_DELIVERED);
    pb_peer_msg_release(&d0);
}

/*
 * A dead letter that cannot be written loses nothing: while another
 * connection holds the write lock, a REJECT cannot be recorded, so the
 * delivery stays pending in the journal (and no notice goes out); once
 * the lock is gone it is delivered again and, rejected again, becomes a
 * proper dead letter with its notice.  This test waits out the journal's
 * 5 s busy timeout once, and the router's retry of an unwritable dead
 * letter (5 s) once.
 */
Test(router, a_dead_letter_that_cannot_be_written_stays_pending)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .notify = "ops"});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, "ann@example.com", id);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);

    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", g.dir);
    sqlite3 *lock = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &lock, SQLITE_OPEN_READWRITE, NULL),
                 SQLITE_OK);
    /* the router may be inside a commit of its own: wait for it */
    sqlite3_busy_timeout(lock, 5000);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(lock));

    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_REJECT, 0,
                                "HTTP 422: email is invalid"),
                 0);
    pb_router_stats_t st;
    int64_t deadline = pb_monotonic_ms() + 12000;
    do {
        usleep(20000);
        pb_router_stats(g.router, &st);
    } while ((st.journal_errors == 0 || st.inflight != 0) &&
             pb_monotonic_ms() < deadline);
    cr_assert_geq(st.journal_errors, 1, "the failed write is counted");
    cr_assert_eq(st.dead, 0, "not a dead letter yet");
    cr_assert_eq(st.pending, 1);
    cr_assert_eq(st.inflight, 0,
                 "not sent again while the journal is still locked");
    struct row rows[4];
    cr_assert_eq(journal_rows(rows, 4), 1, "no notice was stored");
    cr_assert_eq(rows[0].state, PB_DELIVERY_PENDING);
    cr_assert_eq(rows[0].attempts, 0);
    expect_silence(g.ops, 100);

    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);

    /* delivered again, rejected again: now a dead letter */
    pb_peer_msg_t again = expect_dlv(g.a, 9000);
    cr_assert_eq(again.id, d.id, "the same delivery");
    cr_assert_str_eq(pb_peer_msg_event_id(&again), id);
    cr_assert_eq(pb_peer_result(g.a, again.id, again.attempt, PLUGBOARD_REJECT,
                                0, "HTTP 422: email is invalid"),
                 0);
    pb_peer_msg_t n = expect_dlv(g.ops, T_WAIT_MS);
    cr_assert_str_eq(pb_envelope_type(n.env), PLUGBOARD_EV_DELIVERY_DEAD);
    const char *s = NULL;
    size_t len = 0;
    cr_assert(pb_event_string(n.env, "event.id", &s, &len));
    cr_assert_eq(len, strlen(id));
    cr_assert_eq(memcmp(s, id, len), 0);
    cr_assert(pb_event_string(n.env, "last_error", &s, &len));
    cr_assert_eq(len, strlen("HTTP 422: email is invalid"));
    cr_assert_eq(pb_peer_result(g.ops, n.id, n.attempt, PLUGBOARD_OK, 0, NULL),
                 0);
    WAIT_STATS(st, st.dead == 1 && st.delivered == 1);
    cr_assert_eq(st.dead, 1);
    cr_assert_eq(st.delivered, 1, "the notice");
    cr_assert_eq(st.pending, 0);
    expect_silence(g.a, 200);

    cr_assert_eq(journal_rows(rows, 4), 2);
    cr_assert_str_eq(rows[0].event_id, id);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DEAD);
    cr_assert_str_eq(rows[0].error, "HTTP 422: email is invalid");
    cr_assert_str_eq(rows[1].destination, "ops");
    cr_assert_eq(rows[1].state, PB_DELIVERY_DELIVERED);
    pb_peer_msg_release(&d);
    pb_peer_msg_release(&again);
    pb_peer_msg_release(&n);
}

/*
 * An envelope id the journal already holds is the same event sent again
 * (an emitter that lost its ACK): a duplicate, not an error, and never a
 * reason to refuse, or half-store, the events sent with it.
 */
Test(router, a_known_event_id_is_a_duplicate)
{
    rig_start(&(struct rig_opts){.to = {"a"}});
    char id1[PB_ID_LEN + 1], id2[PB_ID_LEN + 1];
    size_t l1, l2;
    uint8_t *f1 = event_new("src", NULL, NULL, &l1, id1);
    uint8_t *f2 = event_new("src", NULL, NULL, &l2, id2);
    cr_assert_eq(pb_peer_emit1(g.src, 1, f2, l2), 0);
    pb_peer_msg_t m = expect_ack(g.src, 1, T_WAIT_MS);
    cr_assert_eq(m.status, 0);
    const uint8_t *frames[2] = {f1, f2};
    size_t lens[2] = {l1, l2};
    cr_assert_eq(pb_peer_emit(g.src, 2, frames, lens, 2), 0);
    m = expect_ack(g.src, 2, T_WAIT_MS);
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.accepted, 1);
    cr_assert_eq(m.duplicates, 1);
    free(f1);
    free(f2);
    pb_peer_msg_t d1 = expect_dlv(g.a, T_WAIT_MS);
    pb_peer_msg_t d2 = expect_dlv(g.a, T_WAIT_MS);
    cr_assert_str_eq(pb_peer_msg_event_id(&d1), id2);
    cr_assert_str_eq(pb_peer_msg_event_id(&d2), id1);
    expect_silence(g.a, 200);
    pb_peer_msg_release(&d1);
    pb_peer_msg_release(&d2);
}

/* Run sql on the journal with a connection of our own. */
static void
journal_exec(const char *sql)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", g.dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s",
                 sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

/*
 * A dead letter whose notice the journal refuses is not written either
 * (the owner would never be told), and the refusal is that change's
 * alone: the emits committed in the same batch are accepted.  A trigger
 * makes the journal refuse every plugboard.delivery.dead event; the
 * write lock, held while the REJECT and the emits queue up, puts them all
 * in one batch.  Once the trigger is gone, the delivery is made again
 * (after the router's 5 s pause for unwritable dead letters) and, rejected
 * again, becomes a dead letter with its notice.
 */
Test(router, a_dead_letter_whose_notice_cannot_be_stored_stays_pending)
{
    rig_start(&(struct rig_opts){.to = {"a"}, .notify = "ops"});
    char id[PB_ID_LEN + 1];
    emit_accepted(1, "ann@example.com", id);
    pb_peer_msg_t d = expect_dlv(g.a, T_WAIT_MS);
    journal_exec("CREATE TRIGGER no_notices BEFORE INSERT ON events "
                 "WHEN NEW.type = 'plugboard.delivery.dead' BEGIN "
                 "SELECT RAISE(ABORT, 'notices cannot be stored'); END");

    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", g.dir);
    sqlite3 *lock = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &lock, SQLITE_OPEN_READWRITE, NULL),
                 SQLITE_OK);
    /* the router may be inside a commit of its own: wait for it */
    sqlite3_busy_timeout(lock, 5000);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(lock));
    cr_assert_eq(pb_peer_result(g.a, d.id, 1, PLUGBOARD_REJECT, 0,
                                "HTTP 422: email is invalid"),
                 0);
    enum { N = 10 };
    for (int i = 0; i < N; i++) {
        size_t len;
        uint8_t *frame = event_new("src", NULL, NULL, &len, NULL);
        cr_assert_eq(pb_peer_emit1(g.src, 100 + i, frame, len), 0);
        free(frame);
    }
    usleep(200000); /* all of it waits for the lock, well within 5 s */
    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);

    for (int i = 0; i < N; i++) {
        pb_peer_msg_t m = expect_ack(g.src, 100 + i, T_WAIT_MS);
        cr_assert_eq(m.status, 0, "emit %d refused with the dead letter", i);
        cr_assert_eq(m.accepted, 1);
    }
    pb_router_stats_t st;
    WAIT_STATS(st, st.journal_errors >= 1 && st.inflight == N);
    cr_assert_geq(st.journal_errors, 1, "the refused notice is counted");
    cr_assert_eq(st.dead, 0, "no dead letter without its notice");
    cr_assert_eq(st.accepted, 1 + N);
    struct row rows[N + 4];
    cr_assert_eq(journal_rows(rows, N + 4), 1 + N, "no notice was stored");
    cr_assert_str_eq(rows[0].event_id, id);
    cr_assert_eq(rows[0].state, PB_DELIVERY_PENDING);
    expect_silence(g.ops, 100);

    journal_exec("DROP TRIGGER no_notices");
    /* the others first, then the kept delivery again */
    pb_peer_msg_t again;
    for (;;) {
        again = expect_dlv(g.a, 9000);
        if (again.id == d.id)
            break;
        cr_assert_eq(
            pb_peer_result(g.a, again.id, again.attempt, PLUGBOARD_OK, 0, NULL),
            0);
        pb_peer_msg_release(&again);
    }
    cr_assert_eq(pb_peer_result(g.a, again.id, again.attempt, PLUGBOARD_REJECT,
                                0, "HTTP 422: email is invalid"),
                 0);
    pb_peer_msg_t n = expect_dlv(g.ops, T_WAIT_MS);
    cr_assert_str_eq(pb_envelope_type(n.env), PLUGBOARD_EV_DELIVERY_DEAD);
    const char *s = NULL;
    size_t len = 0;
    cr_assert(pb_event_string(n.env, "event.id", &s, &len));
    cr_assert_eq(len, strlen(id));
    cr_assert_eq(memcmp(s, id, len), 0);
    cr_assert_eq(pb_peer_result(g.ops, n.id, n.attempt, PLUGBOARD_OK, 0, NULL),
                 0);
    WAIT_STATS(st, st.dead == 1 && st.delivered == N + 1);
    cr_assert_eq(st.dead, 1);
    cr_assert_eq(st.delivered, N + 1, "the others and the notice");
    cr_assert_eq(st.pending, 0);
    cr_assert_eq(journal_rows(rows, N + 4), N + 2);
    cr_assert_eq(rows[0].state, PB_DELIVERY_DEAD);
    cr_assert_str_eq(rows[N + 1].destination, "ops");
    cr_assert_eq(rows[N + 1].state, PB_DELIVERY_DELIVERED);
    pb_peer_msg_release(&d);
    pb_peer_msg_release(&again);
    pb_peer_msg_release(&n);
}
