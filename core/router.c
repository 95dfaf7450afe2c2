/*
 * router.c - route table, group commit, acknowledgements and dispatch.
 *
 * Owns, on its thread: the ROUTER socket, the journal handle, and every
 * pending delivery in memory.  Events are shared between their deliveries
 * with a reference count.  Each destination keeps its pending deliveries in
 * acceptance order; dispatch walks that list and skips a delivery whose key
 * is already in flight or waiting for a retry, which is what keeps per-key
 * order across retries.
 */
#include "router.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "envelope.h"
#include "error.h"
#include "hostapi.h"
#include "control.h"
#include "log.h"
#include "metrics.h"
#include "retry.h"

#define S_BATCH_MAX 1024        /* messages per group commit */
#define S_MAX_PARTS 1100        /* parts of one message: 1000 events + room */
#define S_SCAN_MAX 20000        /* deliveries looked at per dispatch pass */
#define S_KEYSET_SLOTS 65536    /* must exceed 2 * S_SCAN_MAX */
#define S_DEAD_RETRY_MS 5000    /* dead letter not writable: try later */
#define S_PRUNE_EVERY_MS 60000
#define S_DLQ_PAGE 1000         /* dead letters per dlq.list answer, */
#define S_DLQ_PAGE_MAX 100000   /* unless its limit says otherwise */
#define S_MH_CACHE 8            /* hop series cached per route */

typedef struct s_event {
    int refs;
    char *id;
    char *key;
    char *type;
    uint8_t *frame;
    size_t len;
    int64_t accepted_ms;     /* wall clock: latency and age metrics */
} ev_t;

typedef struct s_delivery {
    int64_t id;
    ev_t *ev;
    int route;               /* index into routes, -1 when unknown */
    int dest;
    int attempts;            /* attempts made so far */
    int holds;               /* of them, PLUGBOARD_HOLD answers: they do
                                not count toward the route's attempts */
    int64_t next_ms;
    int64_t sent_ms;
    int64_t started_ms;      /* when one of the actor's workers took it
                                (estimated, s_check_timeouts); 0 queued */
    int64_t sent_us;         /* monotonic, for the latency histogram */
    pb_mhop_t *mh;           /* its (route, destination) series */
    bool inflight;
    bool changing;           /* a change for it is in the current batch */
    bool answered;           /* its actor answered in this batch: the
                                window slot is free, the key stays taken
                                until the answer is committed */
    bool removed;            /* a reload removed its route or destination:
                                its answer ends it (reload section) */
    struct s_delivery *prev, *next; /* destination FIFO */
    struct s_delivery *hnext;       /* id hash chain */
} dl_t;

typedef struct s_dest {
    char *name;
    char peer[80];           /* routing id deliveries go to: name or
                                "name#generation" (reload section) */
    bool retired;            /* removed by a reload: answers only */
    bool ready;
    int inflight;
    int answered;            /* of inflight: answered, not yet committed */
    int window;
    int workers;             /* deliveries the actor runs at once */
    int stuck;               /* of those, still inside a delivery that
                                timed out: busy until its late answer */
    int64_t timeout_ms;
    dl_t *head, *tail;
    pb_mconn_t *mc;          /* its metrics, looked up on first use */
} dest_t;

typedef struct s_route {
    const pb_route_conf_t *conf;
    int *to;                 /* destination indexes */
    size_t to_count;
    int notify;              /* destination index or -1 */
    pb_mhop_t *mh[S_MH_CACHE]; /* series of to[0..7] (metrics) */
    pb_mhop_t *mh_notify;
} route_t;

typedef struct s_keyslot {
    const char *key;
    uint32_t gen;
} keyslot_t;

/* One state change to write and then apply. */
typedef struct s_change {
    dl_t *dl;
    plugboard_outcome_t outcome;
    int64_t after_ms;
    char reason[PLUGBOARD_REASON_MAX];
    bool dead;               /* computed: becomes a dead letter */
    bool timeout;            /* no answer in time (metrics reason) */
    bool unwritten;          /* its write failed and was undone alone */
    int64_t next_ms;         /* computed for retries */
} change_t;

/* One EMIT in the current batch. */
typedef struct s_emit {
    char peer[80];           /* the routing id, answered with ACK */
    char source[64];         /* its connector name (before any '#') */
    uint64_t token;
    int status;
    uint32_t accepted, duplicates, unrouted;
    uint32_t dead;           /* unmapped vendor items kept as dead letters */
} emit_t;

/* Deliveries created by the current batch, applied after commit. */
typedef struct s_newdl {
    ev_t *ev;
    int route;
    int dest;
    int64_t id;
} newdl_t;

/* An admin request read in this batch, answered after its commit. */
typedef struct s_ctlreq {
    uint64_t seq;
    char *json;
} ctlreq_t;

struct pb_router {
    void *zctx;
    void *sock;
    char endpoint[256];
    void *ctl_sock;          /* the admin side's DEALER; its caller's thread */
    uint64_t ctl_seq;
    ctlreq_t *ctlreqs;
    size_t ctlreq_count, ctlreq_cap;
    int wake_fd;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    atomic_bool draining;
    const pb_config_t *cfg;
    pb_journal_t *journal;

    dest_t *dests;
    size_t dest_count;
    route_t *routes;
    size_t route_count;

    dl_t **table;            /* id -> delivery */
    size_t table_size;       /* power of two */
    size_t dl_count;

    keyslot_t *keys;
    uint32_t key_gen;

    /* batch scratch */
    emit_t *emits;
    size_t emit_count, emit_cap;
    change_t *changes;
    size_t change_count, change_cap;
    newdl_t *newdls;
    size_t newdl_count, newdl_cap;

    int64_t last_prune_ms;
    ev_t *recover_last;
    zmq_msg_t *parts;        /* S_MAX_PARTS, the message being read */
    int64_t *orphans;        /* recovered deliveries to removed connectors */
    size_t orphan_count, orphan_cap;

    /* reload: table swaps waiting for the end of the batch, and routing
     * ids that said HELO before a swap made them a destination's peer */
    struct s_swapreq **swaps;
    size_t swap_count, swap_cap;
    char (*hellos)[80];
    size_t hello_count;

    pb_metrics_t *metrics;   /* borrowed; NULL for none */
    bool recovering;         /* recovered deliveries are not "received" */
    int64_t last_gauges_ms;

    struct {
        atomic_uint_fast64_t accepted, duplicates, unrouted, delivered,
            retried, dead, timeouts, bad_frames, journal_errors, commits,
            pending, inflight;
    } stats;
};

/* reconfiguration by reload and upgrade: the section at the end */
static bool s_peer_is(const char *name, const char *peer);
static void s_hello(pb_router_t *r, int dest, const char *peer);
static void s_queue_swap(pb_router_t *r, zmq_msg_t *parts);
static void s_answer_swaps(pb_router_t *r);
static void s_removed_reason(char *reason, size_t len);

/* ---------------------------------------------------------------- */
/* small helpers                                                     */
/* ---------------------------------------------------------------- */

#define S_GROW(r, arr, count, cap)                                      \
    do {                                                                \
        if ((r)->count == (r)->cap) {                                   \
            size_t ncap_ = (r)->cap ? (r)->cap * 2 : 64;                \
            void *p_ = realloc((r)->arr, ncap_ * sizeof(*(r)->arr));    \
            if (!p_)                                                    \
                abort();                                                \
            (r)->arr = p_;                                              \
            (r)->cap = ncap_;                                            \
        }                                                               \
    } while (0)

static void
s_stat_add(atomic_uint_fast64_t *c, int64_t d)
{
    atomic_fetch_add(c, (uint_fast64_t)d);
}

static uint64_t
s_get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t
s_get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static int
s_find_dest(const pb_router_t *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->dest_count; i++)
        if (strlen(r->dests[i].name) == len &&
            memcmp(r->dests[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static int
s_find_route(const pb_router_t *r, const char *name)
{
    for (size_t i = 0; i < r->route_count; i++)
        if (strcmp(r->routes[i].conf->name, name) == 0)
            return (int)i;
    return -1;
}

static void
s_ev_release(ev_t *ev)
{
    if (ev && --ev->refs == 0) {
        free(ev->id);
        free(ev->key);
        free(ev->type);
        free(ev->frame);
        free(ev);
    }
}

static ev_t *
s_ev_new(const char *id, const char *key, const char *type,
         const uint8_t *frame, size_t len)
{
    ev_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->refs = 1;
    ev->accepted_ms = pb_now_ms();
    ev->id = strdup(id);
    ev->key = strdup(key);
    ev->type = strdup(type);
    ev->frame = malloc(len ? len : 1);
    if (!ev->id || !ev->key || !ev->type || !ev->frame) {
        s_ev_release(ev);
        return NULL;
    }
    memcpy(ev->frame, frame, len);
    ev->len = len;
    return ev;
}

/* ---------------------------------------------------------------- */
/* delivery table and FIFOs                                          */
/* ---------------------------------------------------------------- */

static void
s_table_grow(pb_router_t *r)
{
    size_t nsize = r->table_size ? r->table_size * 2 : 1024;
    dl_t **nt = calloc(nsize, sizeof *nt);
    if (!nt)
        abort();
    for (size_t i = 0; i < r->table_size; i++) {
        dl_t *d = r->table[i];
        while (d) {
            dl_t *next = d->hnext;
            size_t b = (size_t)d->id & (nsize - 1);
            d->hnext = nt[b];
            nt[b] = d;
            d = next;
        }
    }
    free(r->table);
    r->table = nt;
    r->table_size = nsize;
}

static dl_t *
s_lookup(const pb_router_t *r, int64_t id)
{
    if (!r->table_size)
        return NULL;
    for (dl_t *d = r->table[(size_t)id & (r->table_size - 1)]; d;
         d = d->hnext)
        if (d->id == id)
            return d;
    return NULL;
}

/* The metrics series of (route, dest); NULL without metrics. */
static pb_mhop_t *
s_hop_of(pb_router_t *r, int route, int dest)
{
    if (!r->metrics || route < 0)
        return NULL;
    const route_t *rt = &r->routes[route];
    for (size_t t = 0; t < rt->to_count && t < S_MH_CACHE; t++)
        if (rt->to[t] == dest && rt->mh[t])
            return rt->mh[t];
    if (dest == rt->notify && rt->mh_notify)
        return rt->mh_notify;
    return pb_metrics_hop(r->metrics, rt->conf->name, r->dests[dest].name);
}

static pb_mconn_t *
s_dest_mc(pb_router_t *r, int dest)
{
    if (!r->metrics || dest < 0)
        return NULL;
    if (!r->dests[dest].mc)
        r->dests[dest].mc = pb_metrics_connector(r->metrics,
                                                 r->dests[dest].name);
    return r->dests[dest].mc;
}

static void
s_add(pb_router_t *r, ev_t *ev, int route, int dest, int64_t id,
      int attempts, int64_t next_ms)
{
    if (r->dl_count + 1 > r->table_size / 2)
        s_table_grow(r);
    dl_t *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    d->id = id;
    d->ev = ev;
    ev->refs++;
    d->route = route;
    d->dest = dest;
    d->attempts = attempts;
    d->next_ms = next_ms;
    d->mh = s_hop_of(r, route, dest);
    pb_mhop_pending_add(d->mh, 1);
    if (!r->recovering)
        pb_mhop_received(d->mh);
    size_t b = (size_t)id & (r->table_size - 1);
    d->hnext = r->table[b];
    r->table[b] = d;
    dest_t *ds = &r->dests[dest];
    d->prev = ds->tail;
    if (ds->tail)
        ds->tail->next = d;
    else
        ds->head = d;
    ds->tail = d;
    r->dl_count++;
    s_stat_add(&r->stats.pending, 1);
}

static void
s_remove(pb_router_t *r, dl_t *d)
{
    dl_t **pp = &r->table[(size_t)d->id & (r->table_size - 1)];
    while (*pp != d)
        pp = &(*pp)->hnext;
    *pp = d->hnext;
    dest_t *ds = &r->dests[d->dest];
    if (d->prev)
        d->prev->next = d->next;
    else
        ds->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        ds->tail = d->prev;
    if (d->answered) {
        d->answered = false;
        ds->answered--;
    }
    if (d->inflight) {
        ds->inflight--;
        s_stat_add(&r->stats.inflight, -1);
        pb_mhop_inflight_add(d->mh, -1);
    }
    pb_mhop_pending_add(d->mh, -1);
    r->dl_count--;
    s_stat_add(&r->stats.pending, -1);
    s_ev_release(d->ev);
    free(d);
}

static const pb_retry_conf_t s_default_retry = {
    .attempts = 10, .initial_ms = 1000, .max_ms = 15 * 60 * 1000};

static const pb_retry_conf_t *
s_policy(const pb_router_t *r, const dl_t *d)
{
    return d->route >= 0 ? &r->routes[d->route].conf->retry
                         : &s_default_retry;
}

static const char *
s_route_name(const pb_router_t *r, int route)
{
    return route >= 0 ? r->routes[route].conf->name : "(removed)";
}

/* ---------------------------------------------------------------- */
/* sending                                                           */
/* ---------------------------------------------------------------- */

static int
s_send_parts(pb_router_t *r, const char *peer, const char *cmd,
             const void *a, size_t alen, const void *b, size_t blen,
             bool has_b)
{
    if (zmq_send(r->sock, peer, strlen(peer), ZMQ_SNDMORE | ZMQ_DONTWAIT) <
        0)
        return -1;
    if (zmq_send(r->sock, cmd, strlen(cmd), ZMQ_SNDMORE) < 0)
        return -1;
    if (zmq_send(r->sock, a, alen, has_b ? ZMQ_SNDMORE : 0) < 0)
        return -1;
    if (has_b && zmq_send(r->sock, b, blen, 0) < 0)
        return -1;
    return 0;
}

static void
s_send_ack(pb_router_t *r, const emit_t *e)
{
    uint8_t buf[PB_ACK_LEN];
    int32_t status = e->status;
    memcpy(buf, &e->token, 8);
    memcpy(buf + 8, &status, 4);
    memcpy(buf + 12, &e->accepted, 4);
    memcpy(buf + 16, &e->duplicates, 4);
    memcpy(buf + 20, &e->dead, 4);
    if (s_send_parts(r, e->peer, PB_MSG_ACK, buf, sizeof buf, NULL, 0,
                     false) != 0)
        pb_warn("router", "cannot acknowledge connector=%s: %s", e->peer,
                zmq_strerror(errno));
}

static bool
s_send_delivery(pb_router_t *r, dest_t *ds, dl_t *d, int64_t now)
{
    uint8_t hdr[12];
    uint32_t attempt = (uint32_t)d->attempts + 1;
    memcpy(hdr, &d->id, 8);
    memcpy(hdr + 8, &attempt, 4);
    if (s_send_parts(r, ds->peer, PB_MSG_DELIVER, hdr, sizeof hdr,
                     d->ev->frame, d->ev->len, true) != 0) {
        if (errno == EHOSTUNREACH)
            ds->ready = false;
        return false;
    }
    d->inflight = true;
    d->sent_ms = now;
    d->started_ms = 0;
    d->sent_us = pb_metrics_now_us();
    pb_mhop_inflight_add(d->mh, 1);
    ds->inflight++;
    s_stat_add(&r->stats.inflight, 1);
    return true;
}

/* ---------------------------------------------------------------- */
/* dispatch                                                          */
/* ---------------------------------------------------------------- */

static uint32_t
s_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Mark key as taken in this pass; returns true when it already was. */
static bool
s_key_taken(pb_router_t *r, const char *key)
{
    uint32_t i = s_hash(key) & (S_KEYSET_SLOTS - 1);
    for (;;) {
        keyslot_t *k = &r->keys[i];
        if (k->gen != r->key_gen) {
            k->gen = r->key_gen;
            k->key = key;
            return false;
        }
        if (strcmp(k->key, key) == 0)
            return true;
        i = (i + 1) & (S_KEYSET_SLOTS - 1);
    }
}

/* The window counts deliveries the actor still works on: one it has
 * answered frees its slot at once, while its key stays taken (the delivery
 * stays in flight) until the answer is committed, so per-key order holds
 * and the actor keeps working while the router waits for the fsync. */
static bool
s_window_full(const dest_t *ds)
{
    return ds->inflight - ds->answered >= ds->window;
}

static void
s_dispatch_dest(pb_router_t *r, dest_t *ds, int64_t now, int64_t *next_due)
{
    if (!ds->ready || ds->retired || s_window_full(ds) || !ds->head)
        return;
    if (++r->key_gen == 0) {
        memset(r->keys, 0, S_KEYSET_SLOTS * sizeof *r->keys);
        r->key_gen = 1;
    }
    size_t scanned = 0;
    for (dl_t *d = ds->head; d && scanned < S_SCAN_MAX; d = d->next) {
        scanned++;
        const char *key = d->ev->key;
        bool keyed = key[0] != '\0';
        if (d->inflight) {
            if (keyed)
                s_key_taken(r, key);
            continue;
        }
        bool taken = keyed && s_key_taken(r, key);
        if (taken || d->removed)
            continue;
        if (d->next_ms > now) {
            if (d->next_ms < *next_due)
                *next_due = d->next_ms;
            continue;
        }
        if (!s_send_delivery(r, ds, d, now))
            return;
        if (s_window_full(ds))
            return;
    }
}

static int64_t
s_dispatch(pb_router_t *r, int64_t now)
{
    int64_t next_due = now + 1000;
    if (atomic_load(&r->draining))
        return next_due;
    for (size_t i = 0; i < r->dest_count; i++)
        s_dispatch_dest(r, &r->dests[i], now, &next_due);
    return next_due;
}

/* ---------------------------------------------------------------- */
/* dead letters                                                      */
/* ---------------------------------------------------------------- */

/* Stage the host's notice b (taken) to route ri's notify connector in the
 * open transaction; it is dispatched once the transaction commits.
 * Returns 0 or a negative code (nothing of it is then kept). */
static int
s_stage_notice(pb_router_t *r, int ri, pb_builder_t **bp)
{
    const route_t *rt = &r->routes[ri];
    uint8_t *frame = NULL;
    size_t len = 0;
    int rc = pb_builder_encode(*bp, &frame, &len);
    pb_builder_destroy(bp);
    if (rc != 0)
        return rc;
    int err;
    char why[128];
    pb_envelope_t *env = pb_envelope_decode(frame, len, NULL, &err, why,
                                            sizeof why);
    if (!env) {
        free(frame);
        return err ? err : PB_EPROTO;
    }
    pb_journal_target_t target = {.route = rt->conf->name,
                                  .destination = r->dests[rt->notify].name};
    pb_journal_event_t je = {
        .id = pb_envelope_id(env),
        .type = pb_envelope_type(env),
        .source = "plugboard",
        .key = pb_envelope_key(env),
        .time_ms = pb_envelope_time_ms(env),
        .frame = frame,
        .frame_len = len,
        .targets = &target,
        .target_count = 1,
    };
    rc = pb_journal_append(r->journal, &je);
    if (rc == 0) {
        ev_t *ev = s_ev_new(je.id, je.key, je.type, frame, len);
        if (ev) {
            S_GROW(r, newdls, newdl_count, newdl_cap);
            r->newdls[r->newdl_count++] = (newdl_t){
                .ev = ev, .route = ri, .dest = rt->notify,
                .id = target.delivery_id};
        } else {
            rc = PB_ENOMEM;
        }
    }
    if (rc != 0)
        pb_error("router", "cannot store a notice route=%s type=%s: %s",
                 rt->conf->name, je.type, pb_journal_errmsg(r->journal));
    pb_envelope_destroy(&env);
    free(frame);
    return rc;
}

/* A host notice about route c: its key and the route's own fields. */
static pb_builder_t *
s_notice_new(const pb_route_conf_t *c, const char *type, const char *dest)
{
    pb_builder_t *b = pb_builder_new("plugboard", type);
    if (!b)
        return NULL;
    char key[300];
    snprintf(key, sizeof key, "route:%s", c->name);
    pb_builder_set_key(b, key);
    pb_builder_set_string(b, "route", c->name, strlen(c->name));
    pb_builder_set_string(b, "destination", dest, strlen(dest));
    pb_builder_set_string(b, "why", c->why, strlen(c->why));
    pb_builder_set_string(b, "owner", c->owner, strlen(c->owner));
    if (c->on_failure)
        pb_builder_set_string(b, "on_failure", c->on_failure,
                              strlen(c->on_failure));
    return b;
}

/* Stage a plugboard.delivery.dead notice for d in the open transaction.
 * Returns 0 (also when the route names no notify connector) or a negative
 * code: a dead letter whose notice cannot be stored is not written either,
 * so the owner is never left untold. */
static int
s_notify_dead(pb_router_t *r, const dl_t *d, const char *reason,
              const char *error)
{
    if (d->route < 0 || r->routes[d->route].notify < 0 ||
        strcmp(d->ev->type, PLUGBOARD_EV_DELIVERY_DEAD) == 0 ||
        strcmp(d->ev->type, PLUGBOARD_EV_CONNECTOR_UNHEALTHY) == 0)
        return 0;
    const pb_route_conf_t *c = r->routes[d->route].conf;
    pb_builder_t *b = s_notice_new(c, PLUGBOARD_EV_DELIVERY_DEAD,
                                   r->dests[d->dest].name);
    if (!b)
        return PB_ENOMEM;
    pb_builder_set_causation(b, d->ev->id);
    pb_builder_set_int(b, "attempts", d->attempts);
    pb_builder_set_int(b, "delivery_id", d->id);
    pb_builder_set_string(b, "last_error", error, strlen(error));
    pb_builder_set_string(b, "reason", reason, strlen(reason));
    pb_builder_set_string(b, "event.id", d->ev->id, strlen(d->ev->id));
    pb_builder_set_string(b, "event.type", d->ev->type,
                          strlen(d->ev->type));
    pb_builder_set_string(b, "event.key", d->ev->key, strlen(d->ev->key));
    pb_builder_set_int(b, "dead_at", pb_now_ms());
    return s_stage_notice(r, d->route, &b);
}

/* ---------------------------------------------------------------- */
/* handling one batch                                                */
/* ---------------------------------------------------------------- */

/* Collect targets for an event from connector `source`. */
static size_t
s_targets(const pb_router_t *r, const char *source, const char *type,
          pb_journal_target_t *out, int *route_of, int *dest_of, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < r->route_count; i++) {
        const route_t *rt = &r->routes[i];
        if (strcmp(rt->conf->from, source) != 0)
            continue;
        bool match = false;
        for (size_t w = 0; w < rt->conf->when_count && !match; w++)
            match = pb_type_matches(rt->conf->when[w], type);
        if (!match)
            continue;
        for (size_t t = 0; t < rt->to_count && n < max; t++) {
            out[n].route = rt->conf->name;
            out[n].destination = r->dests[rt->to[t]].name;
            route_of[n] = (int)i;
            dest_of[n] = rt->to[t];
            n++;
        }
    }
    return n;
}

#define S_MAX_TARGETS 64

/* The pseudo route of a source's unmapped vendor items. */
#define S_INGRESS_ROUTE "(ingress)"

/* The reason an unmapped item carries, cut to fit a dead letter's error. */
static void
s_unmapped_reason(const pb_envelope_t *env, char *out, size_t size)
{
    const char *s = NULL;
    size_t len = 0;
    if (!pb_event_string(env, "reason", &s, &len) || len == 0) {
        snprintf(out, size, "unmapped vendor item (no reason given)");
        return;
    }
    if (len >= size)
        len = size - 1;
    memcpy(out, s, len);
    out[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < 0x20)
            out[i] = ' ';
}

static int
s_handle_emit(pb_router_t *r, const char *peer, zmq_msg_t *parts,
              size_t nparts)
{
    S_GROW(r, emits, emit_count, emit_cap);
    emit_t *e = &r->emits[r->emit_count++];
    memset(e, 0, sizeof *e);
    snprintf(e->peer, sizeof e->peer, "%s", peer);
    snprintf(e->source, sizeof e->source, "%.*s", (int)strcspn(peer, "#"),
             peer);
    if (nparts >= 1 && zmq_msg_size(&parts[0]) == 8)
        e->token = s_get_u64(zmq_msg_data(&parts[0]));
    if (nparts < 2 || zmq_msg_size(&parts[0]) != 8) {
        s_stat_add(&r->stats.bad_frames, 1);
        e->status = PB_EPROTO;
        return 0;
    }

    /* decode everything first: a bad frame refuses the whole EMIT */
    size_t n = nparts - 1;
    pb_envelope_t **envs = calloc(n, sizeof *envs);
    if (!envs)
        abort();
    for (size_t i = 0; i < n; i++) {
        int err = 0;
        char why[256];
        envs[i] = pb_envelope_decode(zmq_msg_data(&parts[i + 1]),
                                     zmq_msg_size(&parts[i + 1]), NULL, &err,
                                     why, sizeof why);
        if (!envs[i]) {
            pb_warn("router", "rejected frame from connector=%s: %s", peer,
                    why);
            e->status = err ? err : PB_EPROTO;
        } else if (!s_peer_is(pb_envelope_source(envs[i]), peer)) {
            pb_warn("router",
                    "rejected frame from connector=%s: source is '%s'", peer,
                    pb_envelope_source(envs[i]));
            e->status = PB_EPROTO;
        }
        if (e->status != 0) {
            s_stat_add(&r->stats.bad_frames, 1);
            break;
        }
    }
    int rc = 0;
    size_t newdl_mark = r->newdl_count;
    bool marked = e->status == 0 && pb_journal_mark(r->journal) == 0;
    if (e->status == 0 && !marked)
        e->status = rc = PB_EJOURNAL;
    for (size_t i = 0; i < n && e->status == 0; i++) {
        pb_envelope_t *env = envs[i];
        pb_journal_target_t targets[S_MAX_TARGETS];
        int route_of[S_MAX_TARGETS], dest_of[S_MAX_TARGETS];
        bool unmapped = strcmp(pb_envelope_type(env),
                               PLUGBOARD_EV_INGRESS_UNMAPPED) == 0;
        size_t tn = 1;
        if (unmapped)
            targets[0] = (pb_journal_target_t){.route = S_INGRESS_ROUTE,
                                               .destination = e->source};
        else
            tn = s_targets(r, e->source, pb_envelope_type(env), targets,
                           route_of, dest_of, S_MAX_TARGETS);
        if (tn == S_MAX_TARGETS)
            pb_warn("router", "event type=%s from connector=%s matches %d "
                    "or more (route, destination) pairs; only the first "
                    "%d are delivered", pb_envelope_type(env), peer,
                    S_MAX_TARGETS, S_MAX_TARGETS);
        size_t flen;
        const uint8_t *frame = pb_envelope_frame(env, &flen);
        pb_journal_event_t je = {
            .id = pb_envelope_id(env),
            .type = pb_envelope_type(env),
            .source = e->source,
            .key = pb_envelope_key(env),
            .dedupe_id = pb_envelope_dedupe_id(env),
            .time_ms = pb_envelope_time_ms(env),
            .frame = frame,
            .frame_len = flen,
            .targets = targets,
            .target_count = tn,
        };
        rc = pb_journal_append(r->journal, &je);
        if (rc != 0) {
            e->status = rc;
            break;
        }
        if (je.duplicate) {
            e->duplicates++;
            continue;
        }
        if (!unmapped)
            e->accepted++;
        if (unmapped) {
            /* a dead letter of its source at once: no route can take it */
            char why[PLUGBOARD_REASON_MAX];
            s_unmapped_reason(env, why, sizeof why);
            rc = pb_journal_update(r->journal, targets[0].delivery_id,
                                   PB_DELIVERY_DEAD, 0, 0, why);
            if (rc != 0) {
                e->status = rc;
                break;
            }
            e->dead++;
            continue;
        }
        if (tn == 0) {
            e->unrouted++;
            continue;
        }
        ev_t *ev = s_ev_new(je.id, je.key, je.type, frame, flen);
        if (!ev)
            abort();
        for (size_t t = 0; t < tn; t++) {
            S_GROW(r, newdls, newdl_count, newdl_cap);
            r->newdls[r->newdl_count++] = (newdl_t){
                .ev = ev, .route = route_of[t], .dest = dest_of[t],
                .id = targets[t].delivery_id};
            ev->refs++;
        }
        s_ev_release(ev);
    }
    if (marked && pb_journal_unmark(r->journal, e->status == 0) != 0 &&
        e->status == 0)
        e->status = rc = PB_EJOURNAL;
    if (e->status != 0) {
        /* all or nothing: forget what this EMIT staged */
        while (r->newdl_count > newdl_mark)
            s_ev_release(r->newdls[--r->newdl_count].ev);
        e->accepted = e->duplicates = e->unrouted = e->dead = 0;
    }
    for (size_t i = 0; i < n; i++)
        pb_envelope_destroy(&envs[i]);
    free(envs);
    return rc;
}

static void
s_handle_result(pb_router_t *r, const char *peer, zmq_msg_t *parts,
                size_t nparts)
{
    if (nparts < 1 || zmq_msg_size(&parts[0]) != 21) {
        s_stat_add(&r->stats.bad_frames, 1);
        return;
    }
    const uint8_t *p = zmq_msg_data(&parts[0]);
    int64_t id = (int64_t)s_get_u64(p);
    uint32_t attempt = s_get_u32(p + 8);
    uint8_t outcome = p[12];
    int64_t after = (int64_t)s_get_u64(p + 13);
    dl_t *d = s_lookup(r, id);
    if (!d || !d->inflight || d->changing ||
        (uint32_t)d->attempts + 1 != attempt ||
        !s_peer_is(r->dests[d->dest].name, peer)) {
        pb_debug("router", "stale result delivery=%lld from connector=%s",
                 (long long)id, peer);
        /* a late answer: the worker it came from is free again */
        for (size_t i = 0; i < r->dest_count; i++)
            if (r->dests[i].stuck > 0 && strcmp(r->dests[i].peer, peer) == 0)
                r->dests[i].stuck--;
        return;
    }
    if (outcome > PLUGBOARD_HOLD) {
        s_stat_add(&r->stats.bad_frames, 1);
        outcome = PLUGBOARD_RETRY;
    }
    S_GROW(r, changes, change_count, change_cap);
    change_t *c = &r->changes[r->change_count++];
    memset(c, 0, sizeof *c);
    c->dl = d;
    d->changing = true;
    d->answered = true;
    r->dests[d->dest].answered++;
    c->outcome = (plugboard_outcome_t)outcome;
    c->after_ms = after < 0 ? 0 : after;
    if (nparts >= 2) {
        size_t len = zmq_msg_size(&parts[1]);
        if (len >= sizeof c->reason)
            len = sizeof c->reason - 1;
        memcpy(c->reason, zmq_msg_data(&parts[1]), len);
        c->reason[len] = '\0';
    }
    if (c->outcome != PLUGBOARD_OK && !c->reason[0])
        snprintf(c->reason, sizeof c->reason, "%s without a reason",
                 c->outcome == PLUGBOARD_REJECT ? "reject"
                 : c->outcome == PLUGBOARD_HOLD ? "hold"
                                                : "retry");
}

/* Write one change into the open transaction. */
static int
s_write_change(pb_router_t *r, change_t *c, int64_t now)
{
    dl_t *d = c->dl;
    int attempts = d->attempts + 1;
    int rc = pb_journal_record_attempt(
        r->journal, d->id, attempts,
        c->outcome == PLUGBOARD_HOLD ? PB_ATTEMPT_HELD : (int)c->outcome,
        c->reason);
    if (rc != 0)
        return rc;
    if (c->outcome == PLUGBOARD_OK)
        return pb_journal_update(r->journal, d->id, PB_DELIVERY_DELIVERED,
                                 attempts, 0, NULL);
    const pb_retry_conf_t *pol = s_policy(r, d);
    if (c->dead) {
        rc = pb_journal_update(r->journal, d->id, PB_DELIVERY_DEAD,
                               attempts, 0, c->reason);
        if (rc == 0) {
            d->attempts = attempts; /* the notice reports them */
            rc = s_notify_dead(r, d,
                               c->outcome == PLUGBOARD_REJECT ? "rejected"
                                                              : "exhausted",
                               c->reason);
            d->attempts = attempts - 1;
        }
        return rc;
    }
    int failed = attempts - d->holds - (c->outcome == PLUGBOARD_HOLD);
    c->next_ms = now + pb_retry_delay_ms(pol, failed > 0 ? failed : 1,
                                         c->after_ms, pb_retry_random());
    return pb_journal_update(r->journal, d->id, PB_DELIVERY_PENDING,
                             attempts, pb_now_ms() + (c->next_ms - now),
                             c->reason);
}

/*
 * Write one change behind its own mark, so that a change that cannot be
 * written (a dead letter or its notice the journal refuses) is undone
 * alone: it stays pending, its failure is logged and counted, and the
 * emits and results sharing its batch are still committed.  Returns
 * non-zero only when the transaction itself is broken.
 */
static int
s_write_change_alone(pb_router_t *r, change_t *c, int64_t now)
{
    size_t newdl_mark = r->newdl_count;
    if (pb_journal_mark(r->journal) != 0)
        return PB_EJOURNAL;
    int rc = s_write_change(r, c, now);
    if (pb_journal_unmark(r->journal, rc == 0) != 0)
        return PB_EJOURNAL;
    if (rc != 0) {
        c->unwritten = true;
        while (r->newdl_count > newdl_mark)
            s_ev_release(r->newdls[--r->newdl_count].ev);
        s_stat_add(&r->stats.journal_errors, 1);
    }
    return 0;
}

/* Count an answer (or a timeout) in the hop's series. */
static void
s_count_result(const change_t *c, bool committed)
{
    dl_t *d = c->dl;
    if (d->inflight)
        pb_mhop_attempt(d->mh, pb_metrics_now_us() - d->sent_us);
    if (c->outcome == PLUGBOARD_REJECT)
        pb_mhop_rejected(d->mh);
    if (c->outcome == PLUGBOARD_OK && committed)
        pb_mhop_delivered(d->mh, pb_now_ms() - d->ev->accepted_ms);
}

/* Apply a change in memory once its fate in the journal is known. */
static void
s_apply_change(pb_router_t *r, change_t *c, bool committed, int64_t now)
{
    dl_t *d = c->dl;
    dest_t *ds = &r->dests[d->dest];
    const char *dest = ds->name;
    d->changing = false;
    if (d->answered) {
        d->answered = false;
        ds->answered--;
    }
    s_count_result(c, committed);
    if (c->outcome == PLUGBOARD_OK && committed) {
        s_stat_add(&r->stats.delivered, 1);
        s_remove(r, d);
        return;
    }
    if (d->inflight) {
        d->inflight = false;
        ds->inflight--;
        s_stat_add(&r->stats.inflight, -1);
        pb_mhop_inflight_add(d->mh, -1);
    }
    d->attempts++;
    if (c->outcome == PLUGBOARD_HOLD && committed)
        d->holds++;
    if (c->dead && committed) {
        pb_warn("router",
                "dead letter route=%s destination=%s event=%s attempts=%d "
                "error=\"%s\"",
                s_route_name(r, d->route), dest, d->ev->id, d->attempts,
                c->reason);
        s_stat_add(&r->stats.dead, 1);
        pb_mhop_dead(d->mh);
        s_remove(r, d);
        return;
    }
    if (c->outcome == PLUGBOARD_OK) {
        /* the success could not be written: the journal still says
         * pending, so deliver again later (at least once) */
        pb_error("router",
                 "cannot record delivery route=%s destination=%s event=%s; "
                 "will deliver again",
                 s_route_name(r, d->route), dest, d->ev->id);
        d->next_ms = now + S_DEAD_RETRY_MS;
        return;
    }
    if (c->dead) {
        /* the dead letter could not be written: keep it pending */
        pb_error("router",
                 "cannot write dead letter route=%s destination=%s event=%s; "
                 "kept pending",
                 s_route_name(r, d->route), dest, d->ev->id);
        d->next_ms = now + S_DEAD_RETRY_MS;
        return;
    }
    s_stat_add(&r->stats.retried, 1);
    pb_mhop_retried(d->mh, c->timeout ? PB_RETRY_TIMEOUT
                           : c->after_ms > 0 || c->outcome == PLUGBOARD_HOLD
                               ? PB_RETRY_THROTTLED
                               : PB_RETRY_FAILED);
    d->next_ms = committed ? c->next_ms : now + S_DEAD_RETRY_MS;
    pb_info("router",
            "%s route=%s destination=%s event=%s attempt=%d in_ms=%lld "
            "error=\"%s\"",
            c->outcome == PLUGBOARD_HOLD ? "hold" : "retry",
            s_route_name(r, d->route), dest, d->ev->id, d->attempts,
            (long long)(d->next_ms - now), c->reason);
}

static void
s_batch_reset(pb_router_t *r)
{
    r->emit_count = 0;
    r->change_count = 0;
    for (size_t i = 0; i < r->newdl_count; i++)
        s_ev_release(r->newdls[i].ev);
    r->newdl_count = 0;
}

/* Write the batch in one transaction, then acknowledge and apply. */
static void
s_commit_batch(pb_router_t *r, bool began, int64_t now)
{
    bool committed = false;
    /* decide every change's fate first: a REJECT stays a dead letter in
     * the making even when the journal then fails */
    for (size_t i = 0; i < r->change_count; i++) {
        change_t *c = &r->changes[i];
        /* a hold spends no attempt: only failures count */
        c->dead = c->outcome != PLUGBOARD_OK &&
                  (c->outcome == PLUGBOARD_REJECT ||
                   c->dl->removed ||
                   (c->outcome == PLUGBOARD_RETRY &&
                    pb_retry_exhausted(s_policy(r, c->dl),
                                       c->dl->attempts + 1 - c->dl->holds)));
        if (c->dead && c->dl->removed)
            s_removed_reason(c->reason, sizeof c->reason);
    }
    if (began) {
        for (size_t i = 0; i < r->change_count; i++)
            if (s_write_change_alone(r, &r->changes[i], now) != 0)
                goto out_fail;
        int64_t t0 = pb_metrics_now_us();
        if (pb_journal_commit(r->journal) == 0) {
            committed = true;
            s_stat_add(&r->stats.commits, 1);
            pb_metrics_commit(r->metrics, pb_metrics_now_us() - t0,
                              r->emit_count + r->change_count, true);
        }
    }
out_fail:
    if (!committed) {
        if (began)
            pb_journal_rollback(r->journal);
        s_stat_add(&r->stats.journal_errors, 1);
        pb_metrics_commit(r->metrics, 0, 0, false);
        pb_error("router", "journal commit failed: %s",
                 pb_journal_errmsg(r->journal));
        /* the failure may have taken the whole busy timeout: "try later"
         * counts from now, not from before the attempt */
        now = pb_monotonic_ms();
    }
    for (size_t i = 0; i < r->emit_count; i++) {
        emit_t *e = &r->emits[i];
        if (!committed && e->status == 0)
            e->status = PB_EJOURNAL;
        if (e->status == 0) {
            s_stat_add(&r->stats.accepted, e->accepted);
            s_stat_add(&r->stats.duplicates, e->duplicates);
            s_stat_add(&r->stats.dead, e->dead);
            if (e->dead)
                pb_warn("router",
                        "dead letter route=" S_INGRESS_ROUTE
                        " destination=%s count=%u error=\"unmapped vendor "
                        "item\"",
                        e->source, (unsigned)e->dead);
            s_stat_add(&r->stats.unrouted, e->unrouted);
            pb_mconn_t *smc =
                s_dest_mc(r, s_find_dest(r, e->source, strlen(e->source)));
            pb_mconn_emitted(smc, e->accepted, e->duplicates);
            pb_mconn_unmapped(smc, e->dead);
        }
        s_send_ack(r, e);
    }
    if (committed)
        for (size_t i = 0; i < r->newdl_count; i++) {
            newdl_t *n = &r->newdls[i];
            s_add(r, n->ev, n->route, n->dest, n->id, 0, 0);
        }
    for (size_t i = 0; i < r->change_count; i++)
        s_apply_change(r, &r->changes[i],
                       committed && !r->changes[i].unwritten, now);
    s_batch_reset(r);
}

/* ---------------------------------------------------------------- */
/* admin requests                                                    */
/* ---------------------------------------------------------------- */

static json_t *
s_render_frame(const uint8_t *frame, size_t len)
{
    int err;
    char why[128];
    pb_envelope_t *env = pb_envelope_decode(frame, len, NULL, &err, why,
                                            sizeof why);
    if (!env)
        return json_string(why);
    char *text = pb_event_to_json(env);
    pb_envelope_destroy(&env);
    json_error_t jerr;
    json_t *out = text ? json_loads(text, 0, &jerr) : NULL;
    free(text);
    return out;
}

static int
s_replay_one(void *ctx, const pb_journal_delivery_t *jd)
{
    pb_router_t *r = ctx;
    if (strcmp(jd->route, S_INGRESS_ROUTE) == 0)
        return PB_EINVAL; /* an unmapped vendor item: nothing to send */
    int dest = s_find_dest(r, jd->destination, strlen(jd->destination));
    if (dest < 0)
        return PB_ENOENT;
    int err;
    char why[128];
    pb_envelope_t *env = pb_envelope_decode(jd->frame, jd->frame_len, NULL,
                                            &err, why, sizeof why);
    if (!env)
        return PB_EPROTO;
    ev_t *ev = s_ev_new(jd->event_id, jd->key, pb_envelope_type(env),
                        jd->frame, jd->frame_len);
    pb_envelope_destroy(&env);
    if (!ev)
        return PB_ENOMEM;
    S_GROW(r, newdls, newdl_count, newdl_cap);
    r->newdls[r->newdl_count++] =
        (newdl_t){.ev = ev, .route = s_find_route(r, jd->route),
                  .dest = dest, .id = jd->delivery_id};
    return 0;
}

/* Replay or drop the given ids in one transaction. */
static json_t *
s_dlq_change(pb_router_t *r, json_t *ids, bool replay)
{
    if (pb_journal_begin(r->journal) != 0)
        return pb_control_error("the journal is busy; try again");
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        int64_t id = json_integer_value(v);
        int rc = replay ? pb_journal_replay(r->journal, id, s_replay_one, r)
                        : pb_journal_drop(r->journal, id);
        if (rc != 0) {
            pb_journal_rollback(r->journal);
            s_batch_reset(r);
            if (rc == PB_ENOENT)
                return pb_control_error(
                    "no dead letter %lld%s", (long long)id,
                    replay ? " whose destination is configured" : "");
            if (rc == PB_EINVAL && replay)
                return pb_control_error(
                    "dead letter %lld is a vendor item its source could not "
                    "map: it cannot be replayed (fix the mapping, have the "
                    "vendor resend it, then drop this one)",
                    (long long)id);
            return pb_control_error("cannot change dead letter %lld: %s",
                                         (long long)id, pb_strerror(rc));
        }
    }
    if (pb_journal_commit(r->journal) != 0) {
        s_batch_reset(r);
        return pb_control_error("the journal could not commit: %s",
                                     pb_journal_errmsg(r->journal));
    }
    for (size_t k = 0; k < r->newdl_count; k++) {
        newdl_t *n = &r->newdls[k];
        s_add(r, n->ev, n->route, n->dest, n->id, 0, 0);
        pb_info("router", "replayed delivery=%lld route=%s destination=%s",
                (long long)n->id, s_route_name(r, n->route),
                r->dests[n->dest].name);
    }
    s_batch_reset(r);
    return json_pack("{s:b, s:O}", "ok", 1, replay ? "replayed" : "dropped",
                     ids);
}

/* {"cmd":"notice", "route", "destination", "cause", "detail", "since",
 * "interval_ms"}: journal a plugboard.connector.unhealthy notice to the
 * route's notify connector and dispatch it. */
static json_t *
s_unhealthy_notice(pb_router_t *r, json_t *req)
{
    const char *route = json_string_value(json_object_get(req, "route"));
    const char *dest = json_string_value(json_object_get(req, "destination"));
    const char *cause = json_string_value(json_object_get(req, "cause"));
    const char *detail = json_string_value(json_object_get(req, "detail"));
    int ri = route ? s_find_route(r, route) : -1;
    if (ri < 0 || !dest || !cause || !detail)
        return pb_control_error("notice needs a running route, a "
                                "destination, a cause and a detail");
    if (r->routes[ri].notify < 0)
        return pb_control_error("route '%s' has no notify connector", route);
    pb_builder_t *b = s_notice_new(r->routes[ri].conf,
                                   PLUGBOARD_EV_CONNECTOR_UNHEALTHY, dest);
    if (!b)
        return pb_control_error("out of memory");
    pb_builder_set_string(b, "cause", cause, strlen(cause));
    pb_builder_set_string(b, "detail", detail, strlen(detail));
    pb_builder_set_int(b, "since",
                       json_integer_value(json_object_get(req, "since")));
    pb_builder_set_int(b, "interval_ms", json_integer_value(json_object_get(
                                             req, "interval_ms")));
    if (pb_journal_begin(r->journal) != 0) {
        pb_builder_destroy(&b);
        return pb_control_error("the journal is busy; try again");
    }
    if (s_stage_notice(r, ri, &b) != 0 || r->newdl_count == 0 ||
        pb_journal_commit(r->journal) != 0) {
        pb_journal_rollback(r->journal);
        s_batch_reset(r);
        return pb_control_error("cannot journal the notice: %s",
                                pb_journal_errmsg(r->journal));
    }
    for (size_t k = 0; k < r->newdl_count; k++) {
        newdl_t *n = &r->newdls[k];
        s_add(r, n->ev, n->route, n->dest, n->id, 0, 0);
    }
    s_batch_reset(r);
    return json_pack("{s:b}", "ok", 1);
}

static bool
s_knows_connector(const pb_router_t *r, const char *name)
{
    if (s_find_dest(r, name, strlen(name)) >= 0)
        return true;
    for (size_t i = 0; i < r->route_count; i++)
        if (strcmp(r->routes[i].conf->from, name) == 0)
            return true;
    return false;
}

/* dlq.list found nothing: an error when the route or connector it names
 * is not in the running configuration (a removed route's dead letters
 * are still listed by its name, so only an empty answer is checked). */
static json_t *
s_unknown_filter(const pb_router_t *r, json_t *req)
{
    const char *route = json_string_value(json_object_get(req, "route"));
    const char *conn = json_string_value(json_object_get(req, "connector"));
    if (route && s_find_route(r, route) < 0)
        return pb_control_error("no route '%s' in the running configuration "
                                "and no dead letters of it", route);
    if (conn && !s_knows_connector(r, conn))
        return pb_control_error("no connector '%s' in the running "
                                "configuration and no dead letters of it",
                                conn);
    return NULL;
}

static json_t *
s_control(pb_router_t *r, json_t *req)
{
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    json_t *idv = json_object_get(req, "id");
    if (!cmd)
        return pb_control_error("no command");
    if (strcmp(cmd, "dlq.list") == 0) {
        /* one more than asked for tells whether there is a next page */
        json_int_t limit = json_integer_value(json_object_get(req, "limit"));
        if (limit <= 0)
            limit = S_DLQ_PAGE;
        if (limit > S_DLQ_PAGE_MAX)
            limit = S_DLQ_PAGE_MAX;
        json_t *list = pb_journal_dead_list(
            r->journal, json_string_value(json_object_get(req, "route")),
            json_string_value(json_object_get(req, "connector")),
            json_integer_value(json_object_get(req, "after")),
            (int)limit + 1);
        if (!list)
            return pb_control_error("cannot read the journal: %s",
                                         pb_journal_errmsg(r->journal));
        json_t *unknown = json_array_size(list) == 0
                              ? s_unknown_filter(r, req)
                              : NULL;
        if (unknown) {
            json_decref(list);
            return unknown;
        }
        bool more = json_array_size(list) > (size_t)limit;
        if (more)
            json_array_remove(list, (size_t)limit);
        json_t *out = json_pack("{s:b, s:o, s:b}", "ok", 1, "dead_letters",
                                list, "more", more);
        if (more)
            json_object_set_new(
                out, "next_after",
                json_incref(json_object_get(
                    json_array_get(list, (size_t)limit - 1), "id")));
        return out;
    }
    if (strcmp(cmd, "dlq.show") == 0) {
        if (!json_is_integer(idv))
            return pb_control_error("dlq.show needs an integer id");
        bool found;
        json_t *one = pb_journal_dead_show(r->journal, json_integer_value(idv),
                                           s_render_frame, &found);
        if (!one)
            return found ? pb_control_error("cannot read the journal")
                         : pb_control_error(
                               "no dead letter %lld",
                               (long long)json_integer_value(idv));
        return json_pack("{s:b, s:o}", "ok", 1, "dead_letter", one);
    }
    if (strcmp(cmd, "dlq.replay") == 0 || strcmp(cmd, "dlq.drop") == 0) {
        bool replay = cmd[4] == 'r';
        const char *all_for =
            json_string_value(json_object_get(req, "all_for"));
        json_t *ids;
        if (json_is_integer(idv))
            ids = json_pack("[O]", idv);
        else if (replay && all_for && s_find_route(r, all_for) < 0)
            return pb_control_error("no route '%s' in the running "
                                    "configuration", all_for);
        else if (replay && all_for)
            ids = pb_journal_dead_ids(r->journal, all_for);
        else
            return pb_control_error(
                "%s needs an integer id%s", cmd,
                replay ? " or all_for with a route name" : "");
        if (!ids)
            return pb_control_error("cannot read the journal");
        json_t *out = s_dlq_change(r, ids, replay);
        json_decref(ids);
        return out;
    }
    if (strcmp(cmd, "notice") == 0)
        return s_unhealthy_notice(r, req);
    return pb_control_error("unknown command '%s'", cmd);
}

static void
s_answer_control(pb_router_t *r)
{
    for (size_t i = 0; i < r->ctlreq_count; i++) {
        ctlreq_t *q = &r->ctlreqs[i];
        json_error_t jerr;
        json_t *req = q->json ? json_loads(q->json, 0, &jerr) : NULL;
        json_t *resp = req ? s_control(r, req)
                           : pb_control_error("request is not JSON");
        json_decref(req);
        char *text = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
        json_decref(resp);
        if (text) {
            s_send_parts(r, PB_CONTROL_PEER, PB_MSG_CONTROL_REPLY, &q->seq, 8,
                         text, strlen(text), true);
            free(text);
        }
        free(q->json);
    }
    r->ctlreq_count = 0;
}

/* Read up to S_BATCH_MAX waiting messages and handle them. */
static void
s_read_batch(pb_router_t *r, int64_t now)
{
    bool began = false;
    bool journal_ok = true;
    for (int m = 0; m < S_BATCH_MAX; m++) {
        zmq_msg_t *parts = r->parts;
        size_t nparts = 0;
        int more = 1;
        bool overflow = false;
        while (more) {
            zmq_msg_t tmp;
            zmq_msg_init(&tmp);
            if (zmq_msg_recv(&tmp, r->sock, nparts == 0 ? ZMQ_DONTWAIT : 0) <
                0) {
                zmq_msg_close(&tmp);
                break;
            }
            more = zmq_msg_more(&tmp);
            if (nparts < S_MAX_PARTS)
                parts[nparts++] = tmp;
            else {
                overflow = true;
                zmq_msg_close(&tmp);
            }
        }
        if (nparts == 0)
            break;
        char peer[80] = "";
        size_t plen = zmq_msg_size(&parts[0]);
        if (plen < sizeof peer) {
            memcpy(peer, zmq_msg_data(&parts[0]), plen);
            peer[plen] = '\0';
        }
        int dest = s_find_dest(r, peer, strcspn(peer, "#"));
        const char *cmd = nparts > 1 ? zmq_msg_data(&parts[1]) : "";
        size_t clen = nparts > 1 ? zmq_msg_size(&parts[1]) : 0;
        if (strcmp(peer, PB_CONTROL_PEER) == 0 && nparts == 4 &&
            clen == 3 && memcmp(cmd, PB_MSG_CONTROL, 3) == 0 &&
            zmq_msg_size(&parts[2]) == 8) {
            S_GROW(r, ctlreqs, ctlreq_count, ctlreq_cap);
            ctlreq_t *q = &r->ctlreqs[r->ctlreq_count++];
            q->seq = s_get_u64(zmq_msg_data(&parts[2]));
            q->json = strndup(zmq_msg_data(&parts[3]),
                              zmq_msg_size(&parts[3]));
        } else if (strcmp(peer, PB_CONTROL_PEER) == 0 && nparts == 4 &&
                   clen == 4 && memcmp(cmd, PB_MSG_SWAP, 4) == 0) {
            s_queue_swap(r, parts + 2);
        } else if (!overflow && nparts == 2 && clen == 4 &&
                   memcmp(cmd, PB_MSG_HELLO, 4) == 0) {
            s_hello(r, dest, peer);
        } else if (dest >= 0 && overflow && clen == 4 &&
                   memcmp(cmd, PB_MSG_EMIT, 4) == 0) {
            /* more events than one message may carry: refuse, answered */
            s_stat_add(&r->stats.bad_frames, 1);
            S_GROW(r, emits, emit_count, emit_cap);
            emit_t *e = &r->emits[r->emit_count++];
            memset(e, 0, sizeof *e);
            snprintf(e->peer, sizeof e->peer, "%s", peer);
            if (zmq_msg_size(&parts[2]) == 8)
                e->token = s_get_u64(zmq_msg_data(&parts[2]));
            e->status = PB_ETOOBIG;
        } else if (dest < 0 || overflow || nparts < 2) {
            s_stat_add(&r->stats.bad_frames, 1);
        } else if ((clen == 4 && memcmp(cmd, PB_MSG_EMIT, 4) == 0) ||
                   (clen == 3 && memcmp(cmd, PB_MSG_RESULT, 3) == 0)) {
            if (!began && journal_ok) {
                began = pb_journal_begin(r->journal) == 0;
                journal_ok = began;
            }
            if (cmd[0] == 'E') {
                if (!began) {
                    S_GROW(r, emits, emit_count, emit_cap);
                    emit_t *e = &r->emits[r->emit_count++];
                    memset(e, 0, sizeof *e);
                    snprintf(e->peer, sizeof e->peer, "%s", peer);
                    if (nparts > 2 && zmq_msg_size(&parts[2]) == 8)
                        e->token = s_get_u64(zmq_msg_data(&parts[2]));
                    e->status = PB_EJOURNAL;
                } else {
                    s_handle_emit(r, peer, parts + 2, nparts - 2);
                }
            } else {
                s_handle_result(r, peer, parts + 2, nparts - 2);
            }
        } else {
            s_stat_add(&r->stats.bad_frames, 1);
        }
        for (size_t i = 0; i < nparts; i++)
            zmq_msg_close(&parts[i]);
    }
    /* answers freed window slots: hand out more work before the commit
     * (deliveries in the lists are of events already committed) */
    if (r->change_count)
        s_dispatch(r, now);
    if (began || r->emit_count || r->change_count)
        s_commit_batch(r, began, now);
    s_answer_control(r);
    s_answer_swaps(r);
}

/* Deliveries in flight past their deadline count as transient failures. */
static void
s_check_timeouts(pb_router_t *r, int64_t now)
{
    bool began = false;
    for (size_t i = 0; i < r->dest_count; i++) {
        dest_t *ds = &r->dests[i];
        if (!ds->inflight)
            continue;
        /* The actor's workers (one, or the connector's concurrency) take
         * its deliveries in the order they were sent, so only that many
         * of the oldest in flight are being worked on; a delivery's clock
         * starts when it is one of those, not when it was queued, so a
         * large window never turns into false timeouts.  A worker stuck
         * in a call that timed out takes no new one until it answers.
         * Stop after the last one in flight instead of walking the whole
         * backlog. */
        int seen = 0, working = 0;
        for (dl_t *d = ds->head; d && seen < ds->inflight; d = d->next) {
            if (!d->inflight)
                continue;
            seen++;
            if (d->changing || !d->started_ms)
                continue;
            working++;
            if (now - d->started_ms < ds->timeout_ms)
                continue;
            if (!began)
                began = pb_journal_begin(r->journal) == 0;
            S_GROW(r, changes, change_count, change_cap);
            change_t *c = &r->changes[r->change_count++];
            memset(c, 0, sizeof *c);
            c->dl = d;
            d->changing = true;
            c->outcome = PLUGBOARD_RETRY;
            c->timeout = true;
            snprintf(c->reason, sizeof c->reason, "no answer within %lld ms",
                     (long long)ds->timeout_ms);
            s_stat_add(&r->stats.timeouts, 1);
            /* its worker is still inside that call: until it answers, the
             * deliveries queued behind it are not being worked on, and
             * their clocks must not run (nor spend their attempts) */
            if (ds->stuck < ds->workers)
                ds->stuck++;
        }
        /* the next ones' clocks start now, not when they were queued */
        while (working + ds->stuck < ds->workers) {
            dl_t *oldest = NULL;
            seen = 0;
            for (dl_t *d = ds->head; d && seen < ds->inflight; d = d->next) {
                if (!d->inflight)
                    continue;
                seen++;
                if (!d->changing && !d->started_ms &&
                    (!oldest || d->sent_ms < oldest->sent_ms))
                    oldest = d;
            }
            if (!oldest)
                break;
            oldest->started_ms = now;
            working++;
        }
    }
    if (r->change_count)
        s_commit_batch(r, began, now);
}

static void
s_maybe_prune(pb_router_t *r, int64_t now)
{
    if (now - r->last_prune_ms < S_PRUNE_EVERY_MS)
        return;
    r->last_prune_ms = now;
    int64_t wall = pb_now_ms();
    bool more = false;
    if (pb_journal_prune(r->journal, wall - r->cfg->dedupe_retention_ms,
                         wall - r->cfg->delivered_retention_ms, 0,
                         &more) != 0)
        s_stat_add(&r->stats.journal_errors, 1);
    else if (more) /* a backlog of old rows: the next chunk next turn */
        r->last_prune_ms = now - S_PRUNE_EVERY_MS;
}

/* Once a second: each hop's oldest pending delivery, and the journal's
 * size.  A destination's list is in acceptance order, so the first
 * delivery of a hop met on it is that hop's oldest. */
static void
s_update_gauges(pb_router_t *r, int64_t now)
{
    if (!r->metrics || now - r->last_gauges_ms < 1000)
        return;
    r->last_gauges_ms = now;
    pb_metrics_set_journal_size(r->metrics, pb_journal_size(r->journal));
    int64_t wall = pb_now_ms();
    for (size_t i = 0; i < r->dest_count; i++) {
        pb_mhop_t *seen[64];
        size_t n = 0, scanned = 0;
        for (dl_t *d = r->dests[i].head; d && scanned < S_SCAN_MAX;
             d = d->next, scanned++) {
            bool dup = !d->mh;
            for (size_t k = 0; k < n && !dup; k++)
                dup = seen[k] == d->mh;
            if (dup)
                continue;
            if (n < sizeof seen / sizeof *seen)
                seen[n++] = d->mh;
            pb_mhop_set_oldest(d->mh, wall - d->ev->accepted_ms);
        }
    }
}

static void *
s_thread(void *arg)
{
    pb_router_t *r = arg;
    int64_t next_due = pb_monotonic_ms();
    while (!atomic_load(&r->stop)) {
        int64_t now = pb_monotonic_ms();
        long timeout = (long)(next_due - now);
        if (timeout < 0)
            timeout = 0;
        if (timeout > 100)
            timeout = 100;
        zmq_pollitem_t items[] = {
            {.socket = r->sock, .events = ZMQ_POLLIN},
            {.fd = r->wake_fd, .events = ZMQ_POLLIN},
        };
        if (zmq_poll(items, 2, timeout) < 0 && errno != EINTR)
            break;
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t v;
            ssize_t rd = read(r->wake_fd, &v, sizeof v);
            (void)rd;
        }
        now = pb_monotonic_ms();
        s_read_batch(r, now);
        s_check_timeouts(r, now);
        next_due = s_dispatch(r, now);
        s_maybe_prune(r, now);
        s_update_gauges(r, now);
    }
    return NULL;
}

/* ---------------------------------------------------------------- */
/* set-up and tear-down                                              */
/* ---------------------------------------------------------------- */

static int
s_recover_one(void *ctx, const pb_journal_delivery_t *jd)
{
    pb_router_t *r = ctx;
    int dest = s_find_dest(r, jd->destination, strlen(jd->destination));
    if (dest < 0) {
        /* never dropped silently: it becomes a dead letter an admin can
         * see, and replay once the connector is configured again */
        S_GROW(r, orphans, orphan_count, orphan_cap);
        r->orphans[r->orphan_count++] = jd->delivery_id;
        pb_warn("router",
                "pending delivery=%lld for connector=%s which is no longer "
                "configured; made a dead letter",
                (long long)jd->delivery_id, jd->destination);
        return 0;
    }
    /* deliveries of one event are consecutive; share the event */
    ev_t *ev = NULL;
    if (r->recover_last && strcmp(r->recover_last->id, jd->event_id) == 0)
        ev = r->recover_last;
    bool fresh = ev == NULL;
    if (fresh) {
        int err;
        char why[128];
        pb_envelope_t *env = pb_envelope_decode(jd->frame, jd->frame_len,
                                                NULL, &err, why, sizeof why);
        if (!env) {
            pb_error("router", "journal frame of event=%s is invalid: %s",
                     jd->event_id, why);
            return 0;
        }
        ev = s_ev_new(jd->event_id, jd->key, pb_envelope_type(env),
                      jd->frame, jd->frame_len);
        if (ev) /* accepted before this start: its age counts from then */
            ev->accepted_ms = pb_envelope_time_ms(env);
        pb_envelope_destroy(&env);
        if (!ev)
            return PB_ENOMEM;
    }
    /* the journal holds wall-clock times; memory uses the monotonic clock */
    int64_t wait = jd->next_ms > 0 ? jd->next_ms - pb_now_ms() : 0;
    s_add(r, ev, s_find_route(r, jd->route), dest, jd->delivery_id,
          jd->attempts, pb_monotonic_ms() + (wait > 0 ? wait : 0));
    dl_t *held = s_lookup(r, jd->delivery_id);
    if (held)
        held->holds = jd->holds;
    if (fresh) {
        if (r->recover_last)
            s_ev_release(r->recover_last);
        r->recover_last = ev; /* keeps the reference s_ev_new gave */
    }
    return 0;
}

/* Dead-letter, in one transaction, what recovery found for connectors
 * that are no longer configured. */
static int
s_bury_orphans(pb_router_t *r)
{
    if (pb_journal_begin(r->journal) != 0)
        return PB_EJOURNAL;
    for (size_t i = 0; i < r->orphan_count; i++) {
        const char *why = "connector removed: its connector is no longer "
                          "configured";
        if (pb_journal_record_attempt(r->journal, r->orphans[i], 0,
                                      PLUGBOARD_REJECT, why) != 0 ||
            pb_journal_update(r->journal, r->orphans[i], PB_DELIVERY_DEAD, 0,
                              0, why) != 0) {
            pb_journal_rollback(r->journal);
            return PB_EJOURNAL;
        }
    }
    if (pb_journal_commit(r->journal) != 0)
        return PB_EJOURNAL;
    s_stat_add(&r->stats.dead, (int64_t)r->orphan_count);
    r->orphan_count = 0;
    return 0;
}

static int
s_build_routes(pb_router_t *r, char *err, size_t err_len)
{
    const pb_config_t *cfg = r->cfg;
    r->route_count = cfg->route_count;
    r->routes = calloc(cfg->route_count ? cfg->route_count : 1,
                       sizeof *r->routes);
    if (!r->routes)
        return PB_ENOMEM;
    for (size_t i = 0; i < cfg->route_count; i++) {
        const pb_route_conf_t *c = &cfg->routes[i];
        route_t *rt = &r->routes[i];
        rt->conf = c;
        rt->to = calloc(c->to_count ? c->to_count : 1, sizeof *rt->to);
        if (!rt->to)
            return PB_ENOMEM;
        for (size_t t = 0; t < c->to_count; t++) {
            rt->to[t] = s_find_dest(r, c->to[t], strlen(c->to[t]));
            if (rt->to[t] < 0) {
                snprintf(err, err_len, "route '%s': no connector '%s'",
                         c->name, c->to[t]);
                return PB_EINVAL;
            }
        }
        rt->to_count = c->to_count;
        rt->notify = c->notify ? s_find_dest(r, c->notify, strlen(c->notify))
                               : -1;
        for (size_t t = 0; t < rt->to_count && t < S_MH_CACHE; t++)
            rt->mh[t] = pb_metrics_hop(r->metrics, c->name, c->to[t]);
        rt->mh_notify = pb_metrics_hop(r->metrics, c->name, c->notify);
    }
    return 0;
}

pb_router_t *
pb_router_start(const pb_router_options_t *opt, char *err, size_t err_len)
{
    pb_router_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    r->zctx = opt->zmq_ctx;
    snprintf(r->endpoint, sizeof r->endpoint, "%s", opt->endpoint);
    r->cfg = opt->config;
    r->journal = opt->journal;
    r->metrics = opt->metrics;
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->keys = calloc(S_KEYSET_SLOTS, sizeof *r->keys);
    r->parts = calloc(S_MAX_PARTS, sizeof *r->parts);
    r->dests = calloc(opt->dest_count ? opt->dest_count : 1,
                      sizeof *r->dests);
    if (r->wake_fd < 0 || !r->keys || !r->parts || !r->dests) {
        snprintf(err, err_len, "out of memory");
        goto out_destroy;
    }
    r->dest_count = opt->dest_count;
    for (size_t i = 0; i < opt->dest_count; i++) {
        dest_t *ds = &r->dests[i];
        ds->name = strdup(opt->dests[i].name);
        snprintf(ds->peer, sizeof ds->peer, "%s",
                 opt->dests[i].peer ? opt->dests[i].peer : opt->dests[i].name);
        ds->window = opt->dests[i].window > 0 ? opt->dests[i].window
                                              : PB_ROUTER_DEFAULT_WINDOW;
        ds->timeout_ms =
            opt->dests[i].timeout_ms > 0 ? opt->dests[i].timeout_ms : 30000;
        ds->workers = opt->dests[i].workers > 0 ? opt->dests[i].workers : 1;
        if (ds->window < 2 * ds->workers) /* keep every worker busy */
            ds->window = 2 * ds->workers;
        if (!ds->name) {
            snprintf(err, err_len, "out of memory");
            goto out_destroy;
        }
    }
    if (s_build_routes(r, err, err_len) != 0)
        goto out_destroy;
    s_table_grow(r);

    r->sock = zmq_socket(r->zctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    if (!r->sock ||
        zmq_setsockopt(r->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
        zmq_setsockopt(r->sock, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(r->sock, ZMQ_SNDHWM, &zero, sizeof zero) ||
        zmq_setsockopt(r->sock, ZMQ_RCVHWM, &zero, sizeof zero) ||
        zmq_bind(r->sock, opt->endpoint) != 0) {
        snprintf(err, err_len, "cannot bind router to '%s': %s",
                 opt->endpoint, zmq_strerror(errno));
        goto out_destroy;
    }
    r->recovering = true;
    int prc = pb_journal_pending(r->journal, s_recover_one, r);
    r->recovering = false;
    if (r->recover_last)
        s_ev_release(r->recover_last);
    r->recover_last = NULL;
    if (prc < 0) {
        snprintf(err, err_len, "cannot read pending deliveries: %s",
                 pb_journal_errmsg(r->journal));
        goto out_destroy;
    }
    if (r->orphan_count && s_bury_orphans(r) != 0) {
        snprintf(err, err_len, "cannot record deliveries to removed "
                 "connectors: %s", pb_journal_errmsg(r->journal));
        goto out_destroy;
    }
    if (r->dl_count)
        pb_info("router", "recovered pending deliveries=%zu", r->dl_count);
    /* housekeeping on the first turn: a chunk is short, and dedupe ids
     * and delivered events past their retention go however short the
     * host's runs are */
    r->last_prune_ms = pb_monotonic_ms() - S_PRUNE_EVERY_MS;
    /* the socket is handed to the router thread; the thread start is the
     * memory barrier ZeroMQ asks for when a socket changes threads */
    if (pthread_create(&r->thread, NULL, s_thread, r) != 0) {
        snprintf(err, err_len, "cannot start router thread");
        goto out_destroy;
    }
    r->thread_started = true;
    return r;

out_destroy:
    pb_router_stop(&r);
    return NULL;
}

int
pb_router_drain(pb_router_t *r, int64_t timeout_ms)
{
    atomic_store(&r->draining, true);
    int64_t deadline = pb_monotonic_ms() + timeout_ms;
    while (atomic_load(&r->stats.inflight) > 0 &&
           pb_monotonic_ms() < deadline)
        usleep(10000);
    return (int)atomic_load(&r->stats.inflight);
}

void
pb_router_stop(pb_router_t **rp)
{
    if (!rp || !*rp)
        return;
    pb_router_t *r = *rp;
    *rp = NULL;
    if (r->thread_started) {
        atomic_store(&r->stop, true);
        uint64_t one = 1;
        ssize_t w = write(r->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(r->thread, NULL);
    }
    if (r->sock)
        zmq_close(r->sock);
    if (r->ctl_sock)
        zmq_close(r->ctl_sock);
    for (size_t i = 0; i < r->ctlreq_count; i++)
        free(r->ctlreqs[i].json);
    free(r->ctlreqs);
    for (size_t i = 0; i < r->dest_count; i++) {
        while (r->dests[i].head)
            s_remove(r, r->dests[i].head);
        free(r->dests[i].name);
    }
    s_batch_reset(r);
    for (size_t i = 0; i < r->route_count; i++)
        free(r->routes[i].to);
    free(r->routes);
    free(r->dests);
    free(r->table);
    free(r->orphans);
    free(r->parts);
    free(r->swaps);
    free(r->hellos);
    free(r->keys);
    free(r->emits);
    free(r->changes);
    free(r->newdls);
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    free(r);
}

void
pb_router_stats(pb_router_t *r, pb_router_stats_t *out)
{
    out->accepted = atomic_load(&r->stats.accepted);
    out->duplicates = atomic_load(&r->stats.duplicates);
    out->unrouted = atomic_load(&r->stats.unrouted);
    out->delivered = atomic_load(&r->stats.delivered);
    out->retried = atomic_load(&r->stats.retried);
    out->dead = atomic_load(&r->stats.dead);
    out->timeouts = atomic_load(&r->stats.timeouts);
    out->bad_frames = atomic_load(&r->stats.bad_frames);
    out->journal_errors = atomic_load(&r->stats.journal_errors);
    out->commits = atomic_load(&r->stats.commits);
    out->pending = atomic_load(&r->stats.pending);
    out->inflight = atomic_load(&r->stats.inflight);
}

json_t *
pb_router_control(pb_router_t *r, json_t *req, int timeout_ms)
{
    if (!r->ctl_sock) {
        r->ctl_sock = zmq_socket(r->zctx, ZMQ_DEALER);
        int zero = 0;
        if (!r->ctl_sock ||
            zmq_setsockopt(r->ctl_sock, ZMQ_ROUTING_ID, PB_CONTROL_PEER,
                           strlen(PB_CONTROL_PEER)) ||
            zmq_setsockopt(r->ctl_sock, ZMQ_LINGER, &zero, sizeof zero) ||
            zmq_connect(r->ctl_sock, r->endpoint) != 0) {
            if (r->ctl_sock)
                zmq_close(r->ctl_sock);
            r->ctl_sock = NULL;
            return pb_control_error("cannot reach the router: %s",
                                         zmq_strerror(errno));
        }
    }
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text)
        return pb_control_error("out of memory");
    uint64_t seq = ++r->ctl_seq;
    int rc = zmq_send(r->ctl_sock, PB_MSG_CONTROL, 3, ZMQ_SNDMORE) < 0 ||
             zmq_send(r->ctl_sock, &seq, 8, ZMQ_SNDMORE) < 0 ||
             zmq_send(r->ctl_sock, text, strlen(text), 0) < 0;
    free(text);
    if (rc)
        return pb_control_error("cannot reach the router: %s",
                                     zmq_strerror(errno));
    int64_t deadline = pb_monotonic_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - pb_monotonic_ms();
        if (left <= 0)
            return pb_control_error("the router did not answer within "
                                         "%d ms", timeout_ms);
        zmq_pollitem_t item = {.socket = r->ctl_sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, (long)left) <= 0)
            continue;
        zmq_msg_t parts[3];
        size_t n = 0;
        int more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, r->ctl_sock, 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (n < 3)
                parts[n++] = m;
            else
                zmq_msg_close(&m);
        }
        json_t *resp = NULL;
        if (n == 3 && zmq_msg_size(&parts[1]) == 8 &&
            s_get_u64(zmq_msg_data(&parts[1])) == seq) {
            json_error_t jerr;
            resp = json_loadb(zmq_msg_data(&parts[2]),
                              zmq_msg_size(&parts[2]), 0, &jerr);
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
        if (resp)
            return resp;
        /* an answer to an earlier request that timed out: skip it */
    }
}

/* ---------------------------------------------------------------- */
/* reconfiguration: reload and upgrade swap the table                */
/* ---------------------------------------------------------------- */

#define S_HELLOS_MAX 64         /* routing ids waiting for a swap */
#define S_REMOVED "route removed"

/* One pb_router_swap call; lives on the caller's stack until answered. */
typedef struct s_swapreq {
    const pb_router_table_t *table;
    pb_router_swap_result_t result;
    int rc;
    atomic_bool done;
} swapreq_t;

/* Is peer (a routing id, "name" or "name#generation") connector name? */
static bool
s_peer_is(const char *name, const char *peer)
{
    size_t len = strcspn(peer, "#");
    return strlen(name) == len && memcmp(name, peer, len) == 0;
}

/* The error a delivery whose route went away ends with. */
static void
s_removed_reason(char *reason, size_t len)
{
    char buf[PLUGBOARD_REASON_MAX + 64];
    int n = snprintf(buf, sizeof buf, S_REMOVED " (last error: %s)", reason);
    size_t copy = n < 0 ? 0 : (size_t)n;
    if (copy >= len)
        copy = len - 1;
    memcpy(reason, buf, copy);
    reason[copy] = '\0';
}

static void
s_hello(pb_router_t *r, int dest, const char *peer)
{
    if (dest >= 0 && strcmp(r->dests[dest].peer, peer) == 0) {
        r->dests[dest].ready = true;
        pb_debug("router", "connector=%s ready", peer);
        return;
    }
    /* an instance started beside the running one (or for a connector the
     * table does not have yet): ready once a swap names it */
    for (size_t i = 0; i < r->hello_count; i++)
        if (strcmp(r->hellos[i], peer) == 0)
            return;
    if (!r->hellos && !(r->hellos = calloc(S_HELLOS_MAX, sizeof *r->hellos)))
        abort();
    if (r->hello_count == S_HELLOS_MAX) {
        memmove(r->hellos, r->hellos + 1,
                (S_HELLOS_MAX - 1) * sizeof *r->hellos);
        r->hello_count--;
    }
    snprintf(r->hellos[r->hello_count++], sizeof r->hellos[0], "%s", peer);
    pb_debug("router", "instance=%s ready, waiting for a swap", peer);
}

static bool
s_take_hello(pb_router_t *r, const char *peer)
{
    for (size_t i = 0; i < r->hello_count; i++) {
        if (strcmp(r->hellos[i], peer) != 0)
            continue;
        memmove(r->hellos + i, r->hellos + i + 1,
                (r->hello_count - i - 1) * sizeof *r->hellos);
        r->hello_count--;
        return true;
    }
    return false;
}

static void
s_queue_swap(pb_router_t *r, zmq_msg_t *parts)
{
    swapreq_t *q;
    if (zmq_msg_size(&parts[1]) != sizeof q) {
        s_stat_add(&r->stats.bad_frames, 1);
        return;
    }
    memcpy(&q, zmq_msg_data(&parts[1]), sizeof q);
    S_GROW(r, swaps, swap_count, swap_cap);
    r->swaps[r->swap_count++] = q;
}

/* The old routing id of a destination gets nothing more. */
static void
s_bye(pb_router_t *r, const char *peer)
{
    if (s_send_parts(r, peer, PB_MSG_BYE, "", 0, NULL, 0, false) != 0)
        pb_debug("router", "cannot say bye to instance=%s: %s", peer,
                 zmq_strerror(errno));
}

static int
s_live_dest(const pb_router_t *r, const char *name)
{
    for (size_t i = 0; i < r->dest_count; i++)
        if (!r->dests[i].retired && strcmp(r->dests[i].name, name) == 0)
            return (int)i;
    return -1;
}

static bool
s_table_has(const pb_router_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->dest_count; i++)
        if (strcmp(t->dests[i].name, name) == 0)
            return true;
    return false;
}

static bool
s_keeps(const pb_router_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->keep_count; i++)
        if (strcmp(t->keep[i], name) == 0)
            return true;
    return false;
}

/* Does route ri still deliver to dest (as a destination or notifier)? */
static bool
s_route_reaches(const pb_router_t *r, int ri, int dest)
{
    const route_t *rt = &r->routes[ri];
    for (size_t i = 0; i < rt->to_count; i++)
        if (rt->to[i] == dest)
            return true;
    return rt->notify == dest;
}

/* The new destination array: the table's, in its order, taking over the
 * running ones by name; then removed ones that still have deliveries or
 * a running actor, as retired.  Fills dmap (old index -> new). */
static dest_t *
s_swap_dests(pb_router_t *r, const pb_router_table_t *t, int *dmap,
             size_t *count)
{
    size_t old_n = r->dest_count, k = t->dest_count;
    dest_t *nd = calloc(k + old_n + 1, sizeof *nd);
    if (!nd)
        return NULL;
    for (size_t o = 0; o < old_n; o++)
        dmap[o] = -1;
    for (size_t j = 0; j < t->dest_count; j++) {
        const pb_router_dest_options_t *opt = &t->dests[j];
        const char *peer = opt->peer ? opt->peer : opt->name;
        int o = s_live_dest(r, opt->name);
        dest_t *ds = &nd[j];
        if (o >= 0) {
            *ds = r->dests[o];
            dmap[o] = (int)j;
        } else if (!(ds->name = strdup(opt->name))) {
            abort();
        }
        ds->window = opt->window > 0 ? opt->window : PB_ROUTER_DEFAULT_WINDOW;
        ds->workers = opt->workers > 0 ? opt->workers : 1;
        if (ds->window < 2 * ds->workers) /* keep every worker busy */
            ds->window = 2 * ds->workers;
        ds->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : 30000;
        if (o < 0 || strcmp(ds->peer, peer) != 0) {
            ds->stuck = 0; /* a new instance: all its workers are free */
            if (o >= 0)
                s_bye(r, ds->peer);
            snprintf(ds->peer, sizeof ds->peer, "%s", peer);
            ds->ready = s_take_hello(r, peer);
        }
    }
    for (size_t o = 0; o < old_n; o++) {
        dest_t *ds = &r->dests[o];
        if (dmap[o] >= 0)
            continue;
        if (!ds->retired)
            s_bye(r, ds->peer);
        if (ds->head || s_keeps(t, ds->name)) {
            nd[k] = *ds;
            nd[k].retired = true;
            nd[k].ready = false;
            dmap[o] = (int)k++;
        } else {
            free(ds->name);
        }
    }
    *count = k;
    return nd;
}

/* Dead-letter, in one transaction, pending deliveries whose route or
 * destination the new table lacks.  names[i] is dead[i]'s old route. */
static void
s_bury_removed(pb_router_t *r, dl_t **dead, const char **names, size_t n,
               pb_router_swap_result_t *res)
{
    bool ok = pb_journal_begin(r->journal) == 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = pb_journal_record_attempt(r->journal, dead[i]->id, 0,
                                       PLUGBOARD_REJECT, S_REMOVED) == 0 &&
             pb_journal_update(r->journal, dead[i]->id, PB_DELIVERY_DEAD,
                               dead[i]->attempts, 0, S_REMOVED) == 0;
    if (ok)
        ok = pb_journal_commit(r->journal) == 0;
    else
        pb_journal_rollback(r->journal);
    for (size_t i = 0; i < n; i++) {
        dl_t *d = dead[i];
        if (!ok) {
            d->removed = true; /* not dispatched; buried at the next swap */
            continue;
        }
        pb_warn("router",
                "dead letter route=%s destination=%s event=%s attempts=%d "
                "error=\"" S_REMOVED "\"",
                names[i], r->dests[d->dest].name, d->ev->id, d->attempts);
        s_stat_add(&r->stats.dead, 1);
        pb_mhop_dead(d->mh);
        s_remove(r, d);
        res->dead_lettered++;
    }
    if (!ok) {
        s_stat_add(&r->stats.journal_errors, 1);
        pb_error("router", "cannot write dead letters for removed routes: "
                 "%s; deliveries=%zu kept pending, not dispatched",
                 pb_journal_errmsg(r->journal), n);
    }
}

/* Re-point every delivery to the new route indexes; collect those whose
 * route or destination is gone. */
static void
s_swap_deliveries(pb_router_t *r, const route_t *old_routes,
                  const int *rmap, pb_router_swap_result_t *res)
{
    dl_t **dead = NULL;
    const char **names = NULL;
    size_t n = 0, cap = 0;
    for (size_t b = 0; b < r->table_size; b++) {
        for (dl_t *d = r->table[b]; d; d = d->hnext) {
            int nr = d->route >= 0 ? rmap[d->route] : -1;
            bool gone = r->dests[d->dest].retired ||
                        (d->route >= 0 &&
                         (nr < 0 || !s_route_reaches(r, nr, d->dest)));
            if (!gone && !d->removed) {
                d->route = nr;
                continue;
            }
            const char *name = d->route >= 0 ? old_routes[d->route].conf->name
                                             : "(removed)";
            d->route = -1;
            if (d->inflight) {
                d->removed = true;
                res->finishing++;
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                dead = realloc(dead, cap * sizeof *dead);
                names = realloc(names, cap * sizeof *names);
                if (!dead || !names)
                    abort();
            }
            dead[n] = d;
            names[n++] = name;
        }
    }
    if (n)
        s_bury_removed(r, dead, names, n, res);
    free(dead);
    free(names);
}

static int
s_swap(pb_router_t *r, const pb_router_table_t *t,
       pb_router_swap_result_t *res)
{
    memset(res, 0, sizeof *res);
    size_t old_rn = r->route_count, count = 0;
    int *dmap = malloc((r->dest_count + 1) * sizeof *dmap);
    int *rmap = malloc((old_rn + 1) * sizeof *rmap);
    dest_t *nd = dmap && rmap ? s_swap_dests(r, t, dmap, &count) : NULL;
    if (!nd) {
        free(dmap);
        free(rmap);
        return PB_ENOMEM;
    }
    free(r->dests);
    r->dests = nd;
    r->dest_count = count;
    for (size_t b = 0; b < r->table_size; b++)
        for (dl_t *d = r->table[b]; d; d = d->hnext)
            d->dest = dmap[d->dest];

    route_t *old_routes = r->routes;
    r->cfg = t->config;
    r->routes = NULL;
    char err[256];
    if (s_build_routes(r, err, sizeof err) != 0)
        abort(); /* only out of memory: pb_router_swap checked names */
    for (size_t i = 0; i < old_rn; i++)
        rmap[i] = s_find_route(r, old_routes[i].conf->name);
    s_swap_deliveries(r, old_routes, rmap, res);
    for (size_t i = 0; i < old_rn; i++)
        free(old_routes[i].to);
    free(old_routes);
    free(dmap);
    free(rmap);
    r->hello_count = 0; /* instances that never became peers */
    pb_info("router",
            "route table swapped destinations=%zu routes=%zu "
            "dead_lettered=%zu finishing=%zu",
            t->dest_count, r->route_count, res->dead_lettered,
            res->finishing);
    return 0;
}

static void
s_answer_swaps(pb_router_t *r)
{
    for (size_t i = 0; i < r->swap_count; i++) {
        swapreq_t *q = r->swaps[i];
        q->rc = s_swap(r, q->table, &q->result);
        atomic_store(&q->done, true);
        if (s_send_parts(r, PB_CONTROL_PEER, PB_MSG_SWAP_REPLY, "", 0, NULL,
                         0, false) != 0)
            pb_error("router", "cannot answer a table swap: %s",
                     zmq_strerror(errno));
    }
    r->swap_count = 0;
}

/* Every route's destinations and notifier are in the table. */
static int
s_check_table(const pb_router_table_t *t, char *err, size_t err_len)
{
    const pb_config_t *cfg = t->config;
    for (size_t i = 0; i < cfg->route_count; i++) {
        const pb_route_conf_t *c = &cfg->routes[i];
        for (size_t k = 0; k <= c->to_count; k++) {
            const char *name = k < c->to_count ? c->to[k] : c->notify;
            if (name && !s_table_has(t, name)) {
                snprintf(err, err_len, "route '%s': no connector '%s'",
                         c->name, name);
                return PB_EINVAL;
            }
        }
    }
    return 0;
}

int
pb_router_swap(pb_router_t *r, const pb_router_table_t *table,
               pb_router_swap_result_t *out, char *err, size_t err_len)
{
    int rc = s_check_table(table, err, err_len);
    if (rc != 0)
        return rc;
    if (!r->ctl_sock) {
        r->ctl_sock = zmq_socket(r->zctx, ZMQ_DEALER);
        int zero = 0;
        if (!r->ctl_sock ||
            zmq_setsockopt(r->ctl_sock, ZMQ_ROUTING_ID, PB_CONTROL_PEER,
                           strlen(PB_CONTROL_PEER)) ||
            zmq_setsockopt(r->ctl_sock, ZMQ_LINGER, &zero, sizeof zero) ||
            zmq_connect(r->ctl_sock, r->endpoint) != 0) {
            snprintf(err, err_len, "cannot reach the router: %s",
                     zmq_strerror(errno));
            if (r->ctl_sock)
                zmq_close(r->ctl_sock);
            r->ctl_sock = NULL;
            return PB_EIO;
        }
    }
    swapreq_t q = {.table = table};
    atomic_init(&q.done, false);
    swapreq_t *qp = &q;
    uint64_t seq = ++r->ctl_seq;
    if (zmq_send(r->ctl_sock, PB_MSG_SWAP, 4, ZMQ_SNDMORE) < 0 ||
        zmq_send(r->ctl_sock, &seq, 8, ZMQ_SNDMORE) < 0 ||
        zmq_send(r->ctl_sock, &qp, sizeof qp, 0) < 0) {
        snprintf(err, err_len, "cannot reach the router: %s",
                 zmq_strerror(errno));
        return PB_EIO;
    }
    /* the router holds a pointer to q: wait for its answer, however long
     * (its thread never blocks for long) */
    int64_t since = pb_monotonic_ms();
    while (!atomic_load(&q.done)) {
        zmq_pollitem_t item = {.socket = r->ctl_sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 1000) <= 0) {
            if (pb_monotonic_ms() - since > 10000) {
                pb_warn("router", "still waiting for the route table swap");
                since = pb_monotonic_ms();
            }
            continue;
        }
        zmq_msg_t m;
        int more = 1;
        while (more) { /* an answer, or a stale CTLR: read it whole */
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, r->ctl_sock, 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
    }
    if (out)
        *out = q.result;
    if (q.rc != 0)
        snprintf(err, err_len, "the router could not swap tables: %s",
                 pb_strerror(q.rc));
    return q.rc;
}
