/*
 * journal.h - the durable store of accepted events and of one delivery
 * record per (route, destination).
 *
 * The router is the only user and must not know how the journal stores
 * things: this interface speaks of events, deliveries and transactions,
 * never of SQL, so a broker-backed journal can replace it.  The embedded
 * implementation is a SQLite database in WAL mode at <data_dir>/journal.db
 * with synchronous=FULL: a commit that returned 0 survives a crash of the
 * process or the machine.
 *
 * Single-threaded: one journal handle is used by one thread (the router).
 */
#ifndef PB_JOURNAL_H
#define PB_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct pb_journal pb_journal_t;

typedef enum pb_delivery_state {
    PB_DELIVERY_PENDING = 0,   /* waiting or in flight */
    PB_DELIVERY_DELIVERED = 1,
    PB_DELIVERY_DEAD = 2,      /* dead letter, kept until replayed/dropped */
} pb_delivery_state_t;

/* One (route, destination) an accepted event must reach. */
typedef struct pb_journal_target {
    const char *route;
    const char *destination;
    int64_t delivery_id; /* out: assigned by pb_journal_append */
} pb_journal_target_t;

/* One event to accept.  Strings are borrowed for the call. */
typedef struct pb_journal_event {
    const char *id;
    const char *type;
    const char *source;
    const char *key;
    const char *dedupe_id;   /* "" or NULL: no dedupe */
    int64_t time_ms;
    const uint8_t *frame;
    size_t frame_len;
    pb_journal_target_t *targets;
    size_t target_count;
    bool duplicate;          /* out: dedupe id seen before; nothing stored */
} pb_journal_event_t;

/* A delivery read back at start-up.  Borrowed for the callback only. */
typedef struct pb_journal_delivery {
    int64_t delivery_id;
    const char *route;
    const char *destination;
    const char *event_id;
    const char *key;
    int attempts;
    int holds;       /* of them, holds since the last replay (pending) */
    int64_t next_ms;
    const uint8_t *frame;
    size_t frame_len;
} pb_journal_delivery_t;

/*
 * Open or create the journal in dir (created with mode 0700 if missing).
 * Returns NULL and writes the reason to err.  Caller owns the result.
 *
 * dir NULL opens a memory journal, for benchmarks and tests: the same
 * schema and statements in an in-memory SQLite database with
 * synchronous=OFF, so nothing survives close and nothing touches a disk.
 */
pb_journal_t *pb_journal_open(const char *dir, char *err, size_t err_len);
void pb_journal_close(pb_journal_t **j);

/* Group commit: everything between begin and commit is one transaction. */
int pb_journal_begin(pb_journal_t *j);
int pb_journal_commit(pb_journal_t *j);
void pb_journal_rollback(pb_journal_t *j);

/*
 * Inside a transaction: a mark that a group of appends can be undone to
 * (one emitter's request is all or nothing).  pb_journal_unmark(keep =
 * false) undoes every write since the mark; keep = true keeps them.
 */
int pb_journal_mark(pb_journal_t *j);
int pb_journal_unmark(pb_journal_t *j, bool keep);

/* Inside a transaction: accept one event (or find it a duplicate: its
 * dedupe id, or its own id, was accepted before). */
int pb_journal_append(pb_journal_t *j, pb_journal_event_t *ev);

/* Inside a transaction: record a delivery's new state.  error may be
 * NULL.  next_ms is when a pending delivery may be tried next. */
int pb_journal_update(pb_journal_t *j, int64_t delivery_id,
                      pb_delivery_state_t state, int attempts,
                      int64_t next_ms, const char *error);

/* Outcome codes of the attempt history beyond plugboard_outcome_t's first
 * three (0 ok, 1 retry, 2 reject). */
#define PB_ATTEMPT_REPLAYED 3 /* an admin replayed the dead letter */
#define PB_ATTEMPT_HELD 4     /* PLUGBOARD_HOLD: spent no attempt */

/* Inside a transaction: remember one attempt's outcome (0..2 or a
 * PB_ATTEMPT_* code) and error for `dlq show`. */
int pb_journal_record_attempt(pb_journal_t *j, int64_t delivery_id,
                              int attempt, int outcome, const char *error);

/*
 * Every pending delivery, in acceptance order, for restart recovery.  The
 * callback returns 0 to go on.  Returns 0, or the callback's non-zero
 * value, or a negative code.
 */
typedef int (*pb_journal_each_fn)(void *ctx, const pb_journal_delivery_t *d);
int pb_journal_pending(pb_journal_t *j, pb_journal_each_fn fn, void *ctx);

/*
 * Dead letters, for admins.  Each query runs to completion before it
 * returns, so no reader keeps a snapshot open.  Results are JSON (caller
 * owns them); NULL when the journal cannot be read.
 *
 * pb_journal_dead_list: up to limit dead letters with id > after_id,
 * optionally only of route and/or destination (NULL for any), oldest
 * first: [{"id","route","destination","attempts","last_error","dead_at",
 * "event":{"id","type","key","accepted_at"}}].
 * pb_journal_dead_show: one dead letter as above plus "event_body" (what
 * render makes of the stored frame, e.g. the whole event as JSON) and
 * "history": [{"attempt","at","outcome","error"}] with outcome "ok",
 * "retry", "reject" or "replayed"; NULL with *found = false when no dead
 * letter has that id.
 */
json_t *pb_journal_dead_list(pb_journal_t *j, const char *route,
                             const char *destination, int64_t after_id,
                             int limit);
typedef json_t *(*pb_journal_frame_fn)(const uint8_t *frame, size_t len);
json_t *pb_journal_dead_show(pb_journal_t *j, int64_t id,
                             pb_journal_frame_fn render, bool *found);

/*
 * Inside a transaction: make dead letter id pending again with a fresh
 * attempt count (its history is kept, with a "replayed" entry), and hand
 * it to fn for dispatch.  Returns 0, PB_ENOENT when id is not a dead
 * letter, or a negative code.
 */
int pb_journal_replay(pb_journal_t *j, int64_t id, pb_journal_each_fn fn,
                      void *ctx);

/* Inside a transaction: forget dead letter id and its history.  Returns 0
 * or PB_ENOENT. */
int pb_journal_drop(pb_journal_t *j, int64_t id);

/* Ids of the dead letters of a route, oldest first (JSON array of ints). */
json_t *pb_journal_dead_ids(pb_journal_t *j, const char *route);

/*
 * Housekeeping, outside a transaction: forget dedupe ids older than
 * dedupe_before_ms, and events accepted before delivered_before_ms whose
 * every delivery was delivered (with their deliveries and attempt
 * history).  One call does at most `budget` events and `budget` dedupe
 * ids (<= 0: PB_JOURNAL_PRUNE_BUDGET) in one short transaction, so it
 * neither stalls the caller nor swells the WAL with a large backlog;
 * *more (may be NULL) says whether to call again.  The WAL is
 * checkpointed after each call, and truncated once nothing is left.
 * Returns 0 or a negative code.
 */
#define PB_JOURNAL_PRUNE_BUDGET 2000
int pb_journal_prune(pb_journal_t *j, int64_t dedupe_before_ms,
                     int64_t delivered_before_ms, int budget, bool *more);

/* Bytes on disk (database + WAL). */
int64_t pb_journal_size(pb_journal_t *j);

/* The last error message, for logs. Borrowed. */
const char *pb_journal_errmsg(pb_journal_t *j);

#endif /* PB_JOURNAL_H */
