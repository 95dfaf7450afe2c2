/*
 * router.h - the route table, the journal's one user, and dispatch.
 *
 * The router runs on its own thread with one ZeroMQ ROUTER socket that
 * every connector actor's DEALER connects to (routing id = connector
 * name).  Each turn it reads every waiting message, writes all of them in
 * one journal transaction (group commit), acknowledges the emitters, and
 * then dispatches due deliveries: per destination at most `window` in
 * flight, and never two with the same key at once, so events with the same
 * key reach a destination in acceptance order, across retries too.
 *
 * Messages (multipart; integers little-endian):
 *   actor -> router   "HELO"
 *                     "EMIT" token:u64 frame...   (one or more envelopes)
 *                     "RES"  id:i64 attempt:u32 outcome:u8 after_ms:i64 | reason
 *   router -> actor   "ACK"  token:u64 status:i32 accepted:u32 duplicates:u32
 *                                 unmapped:u32 (PB_ACK_LEN bytes; accepted
 *                                 counts routed events, unmapped the
 *                                 vendor items kept as (ingress) dead
 *                                 letters)
 *                     "DLV"  id:i64 attempt:u32 | frame
 *   admin  -> router  "CTL"  seq:u64 | request JSON   (routing id "@control")
 *   router -> admin   "CTLR" seq:u64 | answer JSON
 *   admin  -> router  "SWAP" seq:u64 | table pointer  (pb_router_swap)
 *   router -> admin   "SWPR" seq:u64
 *   router -> actor   "BYE"  ""      (nothing more will be delivered to
 *                                     this routing id: it may stop)
 * An actor's routing id is its connector name, or "name#generation" for
 * an instance a reload or upgrade started beside the old one; the router
 * maps both to the destination `name` and sends deliveries to the one
 * routing id the current table names.
 * A frame that fails to decode, an envelope whose source is not the
 * sender, or a message of unknown shape is rejected and counted; the
 * sender of a bad EMIT gets an ACK with a negative status and nothing of
 * that EMIT is stored.
 */
#ifndef PB_ROUTER_H
#define PB_ROUTER_H

#include <jansson.h>
#include <stdint.h>

#include "config.h"
#include "journal.h"
#include "metrics.h"

typedef struct pb_router pb_router_t;

#define PB_MSG_HELLO "HELO"
#define PB_MSG_EMIT "EMIT"
#define PB_MSG_RESULT "RES"
#define PB_MSG_ACK "ACK"
#define PB_ACK_LEN 24
#define PB_MSG_DELIVER "DLV"
#define PB_MSG_CONTROL "CTL"
#define PB_MSG_CONTROL_REPLY "CTLR"
#define PB_CONTROL_PEER "@control"
#define PB_MSG_SWAP "SWAP"
#define PB_MSG_SWAP_REPLY "SWPR"
#define PB_MSG_BYE "BYE"

/* Deliveries handed to a destination and not yet answered, unless a
 * connector says otherwise: enough to keep a connector busy across one
 * group commit.  An answer frees its slot at once; the delivery's key stays
 * taken until the answer is committed. */
#define PB_ROUTER_DEFAULT_WINDOW 64

/* Per-destination limits the router needs from each connector. */
typedef struct pb_router_dest_options {
    const char *name;
    int window;             /* deliveries in flight, default
                               PB_ROUTER_DEFAULT_WINDOW */
    int64_t timeout_ms;     /* a delivery not answered in time is a
                               transient failure */
    int workers;            /* deliveries the connector runs at once (its
                               concurrency), default 1: the deadline of
                               each runs from when a worker takes it */
    const char *peer;       /* routing id to deliver to; NULL = name */
} pb_router_dest_options_t;

typedef struct pb_router_options {
    void *zmq_ctx;
    const char *endpoint;           /* e.g. "inproc://plugboard-router" */
    const pb_config_t *config;      /* borrowed until stop */
    const pb_router_dest_options_t *dests;
    size_t dest_count;
    pb_journal_t *journal;          /* borrowed; used only by the router
                                       thread until stop returns */
    pb_metrics_t *metrics;          /* borrowed until stop; NULL: none */
} pb_router_options_t;

/*
 * Bind the socket, load pending deliveries from the journal (restart
 * recovery) and start the thread.  Returns NULL and writes the reason.
 */
pb_router_t *pb_router_start(const pb_router_options_t *opt, char *err,
                             size_t err_len);

/*
 * Stop dispatching new deliveries and wait up to timeout_ms for those in
 * flight to be answered.  Emits are still accepted meanwhile.  Returns the
 * number still in flight at the end (0 when drained).
 */
int pb_router_drain(pb_router_t *r, int64_t timeout_ms);

/* Stop the thread and free everything; pending deliveries stay in the
 * journal for the next start. */
void pb_router_stop(pb_router_t **r);

typedef struct pb_router_stats {
    uint64_t accepted;        /* events journaled */
    uint64_t duplicates;      /* events refused by dedupe id */
    uint64_t unrouted;        /* accepted events no route matched */
    uint64_t delivered;
    uint64_t retried;
    uint64_t dead;
    uint64_t timeouts;
    uint64_t bad_frames;      /* rejected frames or messages */
    uint64_t journal_errors;
    uint64_t commits;
    uint64_t pending;         /* deliveries not yet delivered or dead */
    uint64_t inflight;
} pb_router_stats_t;

/* Thread-safe snapshot. */
void pb_router_stats(pb_router_t *r, pb_router_stats_t *out);

/*
 * Answer an admin request on the router thread, which owns the journal:
 *   {"cmd":"dlq.list", "route"?, "connector"?, "after"?, "limit"?}
 *   {"cmd":"dlq.show", "id"}
 *   {"cmd":"dlq.replay", "id"} or {"cmd":"dlq.replay", "all_for": ROUTE}
 *   {"cmd":"dlq.drop", "id"}
 * Returns {"ok":true,...} or {"ok":false,"error":...}; the caller owns it.
 * Call from one thread only (the host's main thread), which is the thread
 * that must also call pb_router_stop.  Waits up to timeout_ms.
 */
json_t *pb_router_control(pb_router_t *r, json_t *req, int timeout_ms);

/*
 * A new route table, for reload and upgrade.  Destinations are matched to
 * the running ones by name: deliveries in memory keep their place and are
 * re-pointed to the new route and destination indexes.  A destination
 * whose peer changes gets "BYE" on its old routing id after everything
 * sent to it, and its new deliveries go to the new routing id (ready once
 * that actor said HELO, before or after the swap).  Pending deliveries of
 * a route, or to a destination, the table no longer has become dead
 * letters with the error "route removed" (no notice: the route is gone);
 * those in flight finish, and end as such a dead letter unless they
 * succeed.  A removed destination stays known (answers only) while it has
 * deliveries in flight or its name is in keep.
 */
typedef struct pb_router_table {
    const pb_config_t *config;      /* borrowed until the next swap or
                                       stop; the old one is no longer used
                                       when pb_router_swap returns */
    const pb_router_dest_options_t *dests;
    size_t dest_count;
    const char *const *keep;        /* removed destinations whose old actor
                                       still runs (its EMITs are acked) */
    size_t keep_count;
} pb_router_table_t;

typedef struct pb_router_swap_result {
    size_t dead_lettered;           /* pending deliveries made dead letters */
    size_t finishing;               /* in flight, ending with the answer */
} pb_router_swap_result_t;

/*
 * Hand the router thread a new table and wait until it uses it.  Call
 * from the thread that calls pb_router_control.  Returns 0, or a negative
 * code with the reason in err (the old table then stays).
 */
int pb_router_swap(pb_router_t *r, const pb_router_table_t *table,
                   pb_router_swap_result_t *out, char *err, size_t err_len);

#endif /* PB_ROUTER_H */
