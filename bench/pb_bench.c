/*
 * pb_bench.c - the in-process benchmarks: the two ceilings and routing
 * through the real host parts.
 *
 *   pb_bench zmq     --size S --count N
 *       ZeroMQ inproc PUSH -> PULL of one MessagePack envelope of S bytes
 *       between two threads: the transport ceiling, no host.
 *   pb_bench sqlite  --size S --count N --batch B --targets T --dir D
 *       Batched inserts of N events (and T delivery rows each) into a
 *       journal database created by pb_journal_open (so schema, indexes
 *       and WAL mode are the journal's), synchronous=FULL, B events per
 *       transaction: the durable-store ceiling.
 *   pb_bench route   --size S --count N --sinks K --journal on|off --dir D
 *                    [--window W]
 *       One source -> K counting sinks through the real config loader,
 *       plugin loader, journal, router and connector actors, wired as
 *       core/runtime.c wires them.  A bench thread is the source actor: a
 *       DEALER named "source" that sends EMIT batches of envelopes (copies
 *       of one built with pb_builder_encode, each with a fresh id and its
 *       own key; --prebuilt 0 builds each one) and keeps a bounded window
 *       of them waiting for their ACK.  The clock runs from the first EMIT until the sinks
 *       have seen all N x K deliveries.  --window is the router's
 *       per-destination window (default PB_ROUTER_DEFAULT_WINDOW, what
 *       core/runtime.c gives every connector), for experiments.
 *   pb_bench latency --count N --rate R --dir D
 *       The same wiring with the journal on, one event at a time at R per
 *       second: emit -> ACK (accepted, durable) and emit -> the sink's
 *       deliver() call (delivered).
 *
 * Each prints one JSON object on stdout.  Nothing here asserts on time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "connector.h"
#include "envelope.h"
#include "error.h"
#include "journal.h"
#include "loader.h"
#include "log.h"
#include "router.h"

#ifndef PB_BENCH_PLUGIN_DIR
#define PB_BENCH_PLUGIN_DIR "build-bench/bench/plugins"
#endif

#define S_EMIT_BATCH 32    /* envelopes per EMIT message (the router
                              reads at most 64 parts per message) */
#define S_EMIT_WINDOW 32   /* EMIT messages waiting for their ACK */
#define S_MAX_SINKS 8
#define S_WAIT_MS 60000    /* give up on a run after this long */
#define S_ENDPOINT "inproc://plugboard-router"

typedef struct s_opts {
    const char *mode;
    size_t size;
    long count;
    long batch;
    int targets;
    int sinks;
    bool journal;
    const char *dir;
    double rate;
    int window;
    bool prebuilt;
} opts_t;

static double
s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
s_die(const char *what, const char *why)
{
    fprintf(stderr, "pb_bench: %s: %s\n", what, why);
    exit(1);
}

/* ---------------------------------------------------------------- */
/* envelopes of a given size                                         */
/* ---------------------------------------------------------------- */

static char s_pad[1 << 20];
static size_t s_pad_len;

/* Encode one bench.event from source with seq and the current pad. */
static int
s_encode(const char *source, int64_t seq, uint8_t **out, size_t *len)
{
    pb_builder_t *b = pb_builder_new(source, "bench.event");
    if (!b)
        return PB_ENOMEM;
    char key[32];
    /* 4096 customers: keyed like real events, never limited by per-key
     * ordering in one window */
    snprintf(key, sizeof key, "customer-%04" PRId64, seq % 4096);
    int rc = pb_builder_set_key(b, key);
    if (rc == 0)
        rc = pb_builder_set_int(b, "seq", seq);
    if (rc == 0)
        rc = pb_builder_set_string(b, "pad", s_pad, s_pad_len);
    if (rc == 0)
        rc = pb_builder_encode(b, out, len);
    pb_builder_destroy(&b);
    return rc;
}

/* Choose the pad so that an envelope is size bytes (within the few bytes
 * the integer seq takes as it grows). */
static void
s_size_pad(size_t size)
{
    memset(s_pad, 'x', sizeof s_pad);
    s_pad_len = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t *f;
        size_t len;
        if (s_encode("source", 1 << 20, &f, &len) != 0)
            s_die("encode", "cannot build an envelope");
        free(f);
        if (len == size)
            return;
        long want = (long)s_pad_len + (long)size - (long)len;
        s_pad_len = want > 0 ? (size_t)want : 0;
        if (s_pad_len >= sizeof s_pad)
            s_die("encode", "size too large");
    }
}

/* A prebuilt event for the routing runs: one envelope, and where its id
 * and the four digits of its key sit in the frame.  Each event sent is a
 * copy with a fresh id and its own key, so the clock measures the host,
 * not the bench source's builder (the ZeroMQ ceiling sends a prebuilt
 * frame too); --prebuilt 0 builds every envelope instead. */
static struct {
    uint8_t *frame;
    size_t len;
    size_t id_at;
    size_t key_at;
} s_tmpl;

static void
s_tmpl_init(void)
{
    char why[256];
    int err = 0;
    if (s_encode("source", 1 << 20, &s_tmpl.frame, &s_tmpl.len) != 0)
        s_die("encode", "cannot build an envelope");
    pb_envelope_t *env = pb_envelope_decode(s_tmpl.frame, s_tmpl.len, NULL,
                                            &err, why, sizeof why);
    if (!env)
        s_die("decode", why);
    const uint8_t *id = memmem(s_tmpl.frame, s_tmpl.len, pb_envelope_id(env),
                               PB_ID_LEN);
    /* seq 1 << 20 is customer 0 */
    const uint8_t *key = memmem(s_tmpl.frame, s_tmpl.len, "customer-0000",
                                13);
    pb_envelope_destroy(&env);
    if (!id || !key)
        s_die("encode", "cannot find the id and key in the envelope");
    s_tmpl.id_at = (size_t)(id - s_tmpl.frame);
    s_tmpl.key_at = (size_t)(key - s_tmpl.frame) + 9;
}

/* The prebuilt event for seq into buf (s_tmpl.len bytes). */
static void
s_tmpl_fill(uint8_t *buf, long seq)
{
    char id[PB_ID_LEN + 1], digits[8];
    memcpy(buf, s_tmpl.frame, s_tmpl.len);
    pb_id_new(id);
    memcpy(buf + s_tmpl.id_at, id, PB_ID_LEN);
    snprintf(digits, sizeof digits, "%04ld", seq % 4096);
    memcpy(buf + s_tmpl.key_at, digits, 4);
}

/* ---------------------------------------------------------------- */
/* ceiling 1: ZeroMQ                                                 */
/* ---------------------------------------------------------------- */

typedef struct s_pull {
    void *sock;
    long count;
    size_t cap;
} pull_t;

static void *
s_pull_thread(void *arg)
{
    pull_t *p = arg;
    char *buf = malloc(p->cap);
    for (long i = 0; i < p->count; i++)
        if (zmq_recv(p->sock, buf, p->cap, 0) < 0)
            s_die("zmq_recv", zmq_strerror(errno));
    free(buf);
    return NULL;
}

static void
s_bench_zmq(const opts_t *o)
{
    uint8_t *frame;
    size_t len;
    if (s_encode("source", 1 << 20, &frame, &len) != 0)
        s_die("encode", "cannot build an envelope");
    void *ctx = zmq_ctx_new();
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    if (zmq_bind(pull, "inproc://bench-ceiling") != 0 ||
        zmq_connect(push, "inproc://bench-ceiling") != 0)
        s_die("zmq", zmq_strerror(errno));
    pull_t p = {.sock = NULL, .count = o->count, .cap = len + 64};
    /* the PULL socket moves to its thread; pthread_create is the barrier */
    p.sock = pull;
    pthread_t th;
    double t0 = s_now();
    pthread_create(&th, NULL, s_pull_thread, &p);
    for (long i = 0; i < o->count; i++)
        if (zmq_send(push, frame, len, 0) < 0)
            s_die("zmq_send", zmq_strerror(errno));
    pthread_join(th, NULL);
    double dt = s_now() - t0;
    zmq_close(push);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    free(frame);
    printf("{\"mode\":\"zmq\",\"size\":%zu,\"count\":%ld,\"seconds\":%.6f,"
           "\"events_per_s\":%.1f}\n",
           len, o->count, dt, (double)o->count / dt);
}

/* ---------------------------------------------------------------- */
/* ceiling 2: SQLite batched inserts                                 */
/* ---------------------------------------------------------------- */

/* The two statements core/journal.c runs for every accepted event. */
static const char s_sql_event[] =
    "INSERT INTO events(id, type, source, key, time_ms, accepted_ms, frame) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
static const char s_sql_delivery[] =
    "INSERT INTO deliveries(event_seq, route, destination, state, attempts, "
    "next_ms, updated_ms) VALUES (?1, ?2, ?3, 0, 0, 0, ?4)";

static void
s_sql_ok(sqlite3 *db, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE)
        s_die(what, sqlite3_errmsg(db));
}

static void
s_bench_sqlite(const opts_t *o)
{
    char err[512];
    /* create the journal's schema and WAL file exactly as the host does */
    pb_journal_t *j = pb_journal_open(o->dir, err, sizeof err);
    if (!j)
        s_die("journal", err);
    pb_journal_close(&j);

    char path[4096];
    snprintf(path, sizeof path, "%s/journal.db", o->dir);
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        s_die("sqlite", "cannot open the journal database");
    /* the PRAGMAs pb_journal_open sets */
    s_sql_ok(db, sqlite3_exec(db, "PRAGMA journal_mode=WAL;"
                                  "PRAGMA synchronous=FULL;"
                                  "PRAGMA foreign_keys=OFF;"
                                  "PRAGMA journal_size_limit=67108864;",
                              NULL, NULL, NULL), "pragma");
    sqlite3_stmt *ev, *dl;
    s_sql_ok(db, sqlite3_prepare_v3(db, s_sql_event, -1,
                                    SQLITE_PREPARE_PERSISTENT, &ev, NULL),
             "prepare");
    s_sql_ok(db, sqlite3_prepare_v3(db, s_sql_delivery, -1,
                                    SQLITE_PREPARE_PERSISTENT, &dl, NULL),
             "prepare");

    uint8_t *frame;
    size_t len;
    if (s_encode("source", 1 << 20, &frame, &len) != 0)
        s_die("encode", "cannot build an envelope");
    /* the ids are made before the clock starts: in the host they arrive
     * in the envelopes */
    char(*ids)[PB_ID_LEN + 1] = malloc((size_t)o->count * sizeof *ids);
    for (long i = 0; i < o->count; i++)
        pb_id_new(ids[i]);
    static const char *const dests[] = {"sink1", "sink2", "sink3", "sink4",
                                        "sink5", "sink6", "sink7", "sink8"};
    long commits = 0;
    double t0 = s_now();
    for (long i = 0; i < o->count;) {
        s_sql_ok(db, sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                 "begin");
        for (long b = 0; b < o->batch && i < o->count; b++, i++) {
            int64_t now = (int64_t)(s_now() * 1000);
            char key[32];
            snprintf(key, sizeof key, "customer-%04ld", i % 4096);
            sqlite3_bind_text(ev, 1, ids[i], -1, SQLITE_STATIC);
            sqlite3_bind_text(ev, 2, "bench.event", -1, SQLITE_STATIC);
            sqlite3_bind_text(ev, 3, "source", -1, SQLITE_STATIC);
            sqlite3_bind_text(ev, 4, key, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(ev, 5, now);
            sqlite3_bind_int64(ev, 6, now);
            sqlite3_bind_blob(ev, 7, frame, (int)len, SQLITE_STATIC);
            s_sql_ok(db, sqlite3_step(ev), "insert event");
            sqlite3_reset(ev);
            int64_t seq = sqlite3_last_insert_rowid(db);
            for (int t = 0; t < o->targets; t++) {
                sqlite3_bind_int64(dl, 1, seq);
                sqlite3_bind_text(dl, 2, "bench", -1, SQLITE_STATIC);
                sqlite3_bind_text(dl, 3, dests[t % S_MAX_SINKS], -1,
                                  SQLITE_STATIC);
                sqlite3_bind_int64(dl, 4, now);
                s_sql_ok(db, sqlite3_step(dl), "insert delivery");
                sqlite3_reset(dl);
            }
        }
        s_sql_ok(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), "commit");
        commits++;
    }
    double dt = s_now() - t0;
    sqlite3_finalize(ev);
    sqlite3_finalize(dl);
    sqlite3_close(db);
    free(ids);
    free(frame);
    printf("{\"mode\":\"sqlite\",\"size\":%zu,\"count\":%ld,\"batch\":%ld,"
           "\"targets\":%d,\"commits\":%ld,\"seconds\":%.6f,"
           "\"events_per_s\":%.1f}\n",
           len, o->count, o->batch, o->targets, commits, dt,
           (double)o->count / dt);
}

/* ---------------------------------------------------------------- */
/* the host, wired as core/runtime.c wires it                        */
/* ---------------------------------------------------------------- */

typedef struct s_host {
    char dir[4096];
    char cfg_path[4200];
    pb_config_t *cfg;
    pb_plugin_t *plugins[S_MAX_SINKS + 1];
    size_t plugin_count;
    pb_journal_t *journal;
    void *zctx;
    pb_router_t *router;
    pb_connector_t *sinks[S_MAX_SINKS];
    int sink_count;
    void *sink_so;
    void (*sink_reset)(uint64_t *times, size_t cap);
    uint64_t (*sink_count_fn)(void);
} host_t;

static const plugboard_connector_t *
s_describe(void *ctx, const pb_connector_conf_t *conn, char *err,
           size_t err_len)
{
    host_t *h = ctx;
    const char *search = PB_BENCH_PLUGIN_DIR;
    size_t i = (size_t)(conn - h->cfg->connectors);
    /* no private copy: the benchmark reaches the sink's counters */
    h->plugins[i] = pb_plugin_load(conn->plugin, &search, 1, NULL, err,
                                   err_len);
    if (h->plugins[i] && i + 1 > h->plugin_count)
        h->plugin_count = i + 1;
    return h->plugins[i] ? pb_plugin_descriptor(h->plugins[i]) : NULL;
}

static void
s_write_config(host_t *h, int sinks)
{
    snprintf(h->cfg_path, sizeof h->cfg_path, "%s/bench.cfg", h->dir);
    FILE *f = fopen(h->cfg_path, "w");
    if (!f)
        s_die("config", strerror(errno));
    fprintf(f,
            "plugboard = { data_dir = \"%s/data\"; log_level = \"warn\";\n"
            "  plugin_path = [ \"%s\" ]; };\n"
            "connectors = (\n"
            "  { name = \"source\"; plugin = \"bench_source\"; }",
            h->dir, PB_BENCH_PLUGIN_DIR);
    for (int i = 0; i < sinks; i++)
        fprintf(f, ",\n  { name = \"sink%d\"; plugin = \"bench_sink\"; }",
                i + 1);
    fprintf(f, "\n);\nroutes = (\n  { name = \"bench\"; from = \"source\"; "
               "when = \"bench.event\";\n    to = [ ");
    for (int i = 0; i < sinks; i++)
        fprintf(f, "%s\"sink%d\"", i ? ", " : "", i + 1);
    fprintf(f, " ];\n    why = \"measure routing throughput\";\n"
               "    owner = \"bench@example.com\"; }\n);\n");
    fclose(f);
}

static void
s_host_start(host_t *h, const opts_t *o)
{
    char err[512];
    snprintf(h->dir, sizeof h->dir, "%s", o->dir);
    if (mkdir(h->dir, 0700) != 0 && errno != EEXIST)
        s_die(h->dir, strerror(errno));
    s_write_config(h, o->sinks);
    pb_diag_t diag;
    pb_diag_init(&diag);
    h->cfg = pb_config_load(h->cfg_path, &diag);
    if (!h->cfg || pb_config_bind(h->cfg, s_describe, h, &diag) != 0) {
        for (size_t i = 0; i < diag.count; i++)
            fprintf(stderr, "%s\n", diag.messages[i]);
        s_die("config", "invalid");
    }
    pb_diag_release(&diag);
    pb_log_set_level(PB_LOG_WARN);

    h->journal = pb_journal_open(o->journal ? h->cfg->data_dir : NULL, err,
                                 sizeof err);
    if (!h->journal)
        s_die("journal", err);
    h->zctx = zmq_ctx_new();
    size_t n = h->cfg->connector_count;
    pb_router_dest_options_t dests[S_MAX_SINKS + 1];
    for (size_t i = 0; i < n; i++) {
        const plugboard_connector_t *d = pb_plugin_descriptor(h->plugins[i]);
        dests[i] = (pb_router_dest_options_t){
            .name = h->cfg->connectors[i].name,
            .window = o->window, /* core/runtime.c: the router default */
            .timeout_ms = h->cfg->connectors[i].deliver_timeout_ms
                              ? h->cfg->connectors[i].deliver_timeout_ms
                              : d->deliver_timeout_ms,
        };
    }
    pb_router_options_t ro = {
        .zmq_ctx = h->zctx,
        .endpoint = S_ENDPOINT,
        .config = h->cfg,
        .dests = dests,
        .dest_count = n,
        .journal = h->journal,
    };
    h->router = pb_router_start(&ro, err, sizeof err);
    if (!h->router)
        s_die("router", err);
    /* connector 0 is the source: the bench thread plays its actor */
    for (size_t i = 1; i < n; i++) {
        pb_connector_options_t co = {
            .zmq_ctx = h->zctx,
            .router_endpoint = S_ENDPOINT,
            .name = h->cfg->connectors[i].name,
            .plugin = h->plugins[i],
            .settings = h->cfg->connectors[i].bound,
        };
        h->sinks[h->sink_count] = pb_connector_start(&co, err, sizeof err);
        if (!h->sinks[h->sink_count])
            s_die("connector", err);
        h->sink_count++;
    }
    h->sink_so = dlopen(pb_plugin_path(h->plugins[1]),
                        RTLD_NOW | RTLD_NOLOAD);
    if (!h->sink_so)
        s_die("dlopen", dlerror());
    *(void **)&h->sink_reset = dlsym(h->sink_so, "bench_sink_reset");
    *(void **)&h->sink_count_fn = dlsym(h->sink_so, "bench_sink_count");
    if (!h->sink_reset || !h->sink_count_fn)
        s_die("dlsym", "bench_sink counters not found");
}

static void
s_host_stop(host_t *h)
{
    pb_router_drain(h->router, 5000);
    for (int i = 0; i < h->sink_count; i++)
        pb_connector_stop(&h->sinks[i]);
    pb_router_stop(&h->router);
    zmq_ctx_term(h->zctx);
    pb_journal_close(&h->journal);
    h->sink_reset(NULL, 0);
    dlclose(h->sink_so);
    for (size_t i = 0; i < h->cfg->connector_count; i++)
        pb_settings_destroy(&h->cfg->connectors[i].bound);
    for (size_t i = 0; i < h->plugin_count; i++)
        pb_plugin_destroy(&h->plugins[i]);
    pb_config_destroy(&h->cfg);
}

/* The source actor's socket, as a connector actor opens it. */
static void *
s_source_socket(host_t *h)
{
    void *s = zmq_socket(h->zctx, ZMQ_DEALER);
    int zero = 0;
    if (!s || zmq_setsockopt(s, ZMQ_ROUTING_ID, "source", 6) ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero) ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero) ||
        zmq_connect(s, S_ENDPOINT) != 0)
        s_die("source socket", zmq_strerror(errno));
    zmq_send(s, PB_MSG_HELLO, 4, 0);
    return s;
}

/* Send one EMIT of seq [first, first + n). */
static void
s_send_emit(void *sock, uint64_t token, long first, long n, bool prebuilt)
{
    if (zmq_send(sock, PB_MSG_EMIT, 4, ZMQ_SNDMORE) < 0 ||
        zmq_send(sock, &token, 8, ZMQ_SNDMORE) < 0)
        s_die("emit", zmq_strerror(errno));
    for (long i = 0; i < n; i++) {
        uint8_t *f;
        size_t len;
        if (prebuilt) {
            f = malloc(s_tmpl.len);
            if (!f)
                s_die("emit", "out of memory");
            s_tmpl_fill(f, first + i);
            len = s_tmpl.len;
        } else if (s_encode("source", first + i, &f, &len) != 0) {
            s_die("encode", "cannot build an envelope");
        }
        if (zmq_send(sock, f, len, i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            s_die("emit", zmq_strerror(errno));
        free(f);
    }
}

/* Wait for one ACK; returns the events it accepted (dies on an error). */
static uint32_t
s_recv_ack(void *sock)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    for (;;) {
        int ready = zmq_poll(&it, 1, S_WAIT_MS);
        if (ready < 0)
            s_die("ack", zmq_strerror(errno));
        if (ready == 0)
            s_die("ack", "no acknowledgement from the router");
        zmq_msg_t cmd, body;
        zmq_msg_init(&cmd);
        zmq_msg_init(&body);
        zmq_msg_recv(&cmd, sock, 0);
        bool ack = zmq_msg_size(&cmd) == 3 &&
                   memcmp(zmq_msg_data(&cmd), PB_MSG_ACK, 3) == 0;
        int more = zmq_msg_more(&cmd);
        if (more)
            zmq_msg_recv(&body, sock, 0);
        while (zmq_msg_more(&body)) {
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, sock, 0);
            int m = zmq_msg_more(&x);
            zmq_msg_close(&x);
            if (!m)
                break;
        }
        uint32_t accepted = 0;
        if (ack && zmq_msg_size(&body) == PB_ACK_LEN) {
            const uint8_t *p = zmq_msg_data(&body);
            int32_t status;
            memcpy(&status, p + 8, 4);
            memcpy(&accepted, p + 12, 4);
            if (status < 0)
                s_die("ack", pb_strerror(status));
        }
        zmq_msg_close(&cmd);
        zmq_msg_close(&body);
        if (ack)
            return accepted;
    }
}

static void
s_wait_sinks(host_t *h, uint64_t want)
{
    double deadline = s_now() + S_WAIT_MS / 1000.0;
    while (h->sink_count_fn() < want) {
        if (s_now() > deadline)
            s_die("sinks", "deliveries did not complete in time");
        usleep(100);
    }
}

static void
s_bench_route(const opts_t *o)
{
    host_t h;
    memset(&h, 0, sizeof h);
    s_host_start(&h, o);
    if (o->prebuilt)
        s_tmpl_init();
    h.sink_reset(NULL, 0);
    void *sock = s_source_socket(&h);
    usleep(20000); /* let HELO reach the router */

    uint64_t token = 0;
    long sent = 0, acked = 0, outstanding = 0;
    double t0 = s_now();
    while (acked < o->count) {
        while (outstanding < S_EMIT_WINDOW && sent < o->count) {
            long n = o->count - sent < S_EMIT_BATCH ? o->count - sent
                                                    : S_EMIT_BATCH;
            s_send_emit(sock, ++token, sent, n, o->prebuilt);
            sent += n;
            outstanding++;
        }
        acked += s_recv_ack(sock);
        outstanding--;
    }
    double t_acked = s_now();
    s_wait_sinks(&h, (uint64_t)o->count * (uint64_t)o->sinks);
    double t_done = s_now();
    pb_router_stats_t st;
    pb_router_stats(h.router, &st);
    zmq_close(sock);
    s_host_stop(&h);
    double dt = t_done - t0;
    printf("{\"mode\":\"route\",\"size\":%zu,\"count\":%ld,\"sinks\":%d,"
           "\"journal\":%s,\"seconds\":%.6f,\"accept_seconds\":%.6f,"
           "\"events_per_s\":%.1f,\"deliveries_per_s\":%.1f,"
           "\"accepted_per_s\":%.1f,\"commits\":%" PRIu64 ","
           "\"events_per_commit\":%.1f,\"emit_batch\":%d,"
           "\"emit_window\":%d,\"window\":%d,\"prebuilt\":%s}\n",
           o->size, o->count, o->sinks, o->journal ? "true" : "false", dt,
           t_acked - t0, (double)o->count / dt,
           (double)o->count * o->sinks / dt,
           (double)o->count / (t_acked - t0), st.commits,
           st.commits ? (double)st.accepted / (double)st.commits : 0.0,
           S_EMIT_BATCH, S_EMIT_WINDOW, o->window,
           o->prebuilt ? "true" : "false");
    free(s_tmpl.frame);
}

static int
s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
s_pct(double *v, long n, double p)
{
    long i = (long)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void
s_bench_latency(const opts_t *o)
{
    host_t h;
    memset(&h, 0, sizeof h);
    s_host_start(&h, o);
    uint64_t *delivered = calloc((size_t)o->count, sizeof *delivered);
    uint64_t *sent = calloc((size_t)o->count, sizeof *sent);
    double *acc = calloc((size_t)o->count, sizeof *acc);
    double *dlv = calloc((size_t)o->count, sizeof *dlv);
    h.sink_reset(delivered, (size_t)o->count);
    void *sock = s_source_socket(&h);
    usleep(20000);

    uint64_t start = s_now_ns();
    uint64_t gap = (uint64_t)(1e9 / o->rate);
    for (long i = 0; i < o->count; i++) {
        uint64_t due = start + (uint64_t)i * gap;
        uint64_t now = s_now_ns();
        if (due > now) {
            struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000u),
                                  .tv_nsec = (long)((due - now) % 1000000000u)};
            nanosleep(&ts, NULL);
        }
        sent[i] = s_now_ns();
        s_send_emit(sock, (uint64_t)i + 1, i, 1, false);
        s_recv_ack(sock);
        acc[i] = (double)(s_now_ns() - sent[i]) / 1e6;
    }
    s_wait_sinks(&h, (uint64_t)o->count);
    zmq_close(sock);
    s_host_stop(&h);
    for (long i = 0; i < o->count; i++)
        dlv[i] = (double)(delivered[i] - sent[i]) / 1e6;
    qsort(acc, (size_t)o->count, sizeof *acc, s_cmp_double);
    qsort(dlv, (size_t)o->count, sizeof *dlv, s_cmp_double);
    printf("{\"mode\":\"latency\",\"size\":%zu,\"count\":%ld,\"rate\":%.1f,"
           "\"accepted_p50_ms\":%.3f,\"accepted_p99_ms\":%.3f,"
           "\"delivered_p50_ms\":%.3f,\"delivered_p99_ms\":%.3f,"
           "\"delivered_max_ms\":%.3f}\n",
           o->size, o->count, o->rate, s_pct(acc, o->count, 0.50),
           s_pct(acc, o->count, 0.99), s_pct(dlv, o->count, 0.50),
           s_pct(dlv, o->count, 0.99), dlv[o->count - 1]);
    free(delivered);
    free(sent);
    free(acc);
    free(dlv);
}

/* ---------------------------------------------------------------- */

static void
s_usage(void)
{
    fprintf(stderr,
            "usage: pb_bench zmq|sqlite|route|latency [--size BYTES] "
            "[--count N] [--batch N] [--targets N] [--sinks N] "
            "[--journal on|off] [--dir DIR] [--rate PER_S] "
            "[--window N] [--prebuilt 1|0]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    opts_t o = {.size = 256, .count = 100000, .batch = 1024, .targets = 1,
                .sinks = 1, .journal = true, .rate = 20,
                .window = PB_ROUTER_DEFAULT_WINDOW, .prebuilt = true};
    if (argc < 2)
        s_usage();
    o.mode = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--size") == 0)
            o.size = (size_t)atol(v);
        else if (strcmp(k, "--count") == 0)
            o.count = atol(v);
        else if (strcmp(k, "--batch") == 0)
            o.batch = atol(v);
        else if (strcmp(k, "--targets") == 0)
            o.targets = atoi(v);
        else if (strcmp(k, "--sinks") == 0)
            o.sinks = atoi(v);
        else if (strcmp(k, "--journal") == 0)
            o.journal = strcmp(v, "off") != 0;
        else if (strcmp(k, "--dir") == 0)
            o.dir = v;
        else if (strcmp(k, "--rate") == 0)
            o.rate = atof(v);
        else if (strcmp(k, "--window") == 0)
            o.window = atoi(v);
        else if (strcmp(k, "--prebuilt") == 0)
            o.prebuilt = strcmp(v, "0") != 0;
        else
            s_usage();
    }
    if (o.count < 1 || o.batch < 1 || o.sinks < 1 || o.sinks > S_MAX_SINKS ||
        o.targets < 1 || o.rate <= 0 || o.window < 1)
        s_usage();
    s_size_pad(o.size);
    if (strcmp(o.mode, "zmq") == 0) {
        s_bench_zmq(&o);
    } else if (strcmp(o.mode, "sqlite") == 0 ||
               strcmp(o.mode, "route") == 0 ||
               strcmp(o.mode, "latency") == 0) {
        if (!o.dir)
            s_die(o.mode, "--dir is required");
        if (o.mode[0] == 's')
            s_bench_sqlite(&o);
        else if (o.mode[0] == 'r')
            s_bench_route(&o);
        else
            s_bench_latency(&o);
    } else {
        s_usage();
    }
    return 0;
}
