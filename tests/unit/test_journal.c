/*
 * test_journal.c - the durable journal: accepting events with their
 * deliveries in one transaction, deduplicating vendor ids and re-sent
 * envelopes, undoing one emitter's request to its mark, recording
 * delivery outcomes and attempt history, restart recovery, pruning, and
 * writes that fail.
 *
 * Each test works in a fresh temporary data directory.  What the journal
 * promises about the disk (WAL mode, what a row holds) is checked with a
 * second, independent SQLite connection on the same file; everything else
 * goes through the journal's own interface, as the router uses it.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <plugboard/plugboard.h>

#include "harness.h"
#include "journal.h"
#include "log.h"

static char *s_tmp;      /* removed after each test */
static char s_dir[4096]; /* s_tmp/data: the journal's data directory */

static void
setup(void)
{
    s_tmp = pb_test_tempdir("pb-journal");
    cr_assert_not_null(s_tmp);
    snprintf(s_dir, sizeof s_dir, "%s/data", s_tmp);
    pb_log_set_level(PB_LOG_ERROR); /* journal errors below are expected */
}

static void
teardown(void)
{
    pb_test_rmtree(s_tmp);
    free(s_tmp);
    s_tmp = NULL;
}

TestSuite(journal, .init = setup, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static pb_journal_t *
open_journal(void)
{
    char err[512] = "";
    pb_journal_t *j = pb_journal_open(s_dir, err, sizeof err);
    cr_assert_not_null(j, "%s", err);
    return j;
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A frame with bytes a text column would mangle: NULs and high bytes. */
static size_t
make_frame(uint8_t *out, size_t cap, const char *id)
{
    int n = snprintf((char *)out, cap, "frame:%s:", id);
    cr_assert(n > 0 && (size_t)n + 4 <= cap);
    out[n++] = 0x00;
    out[n++] = 0xff;
    out[n++] = 0x80;
    out[n++] = 0x00;
    return (size_t)n;
}

/*
 * Append event id (key "k:<id>") for the given destinations, each on
 * route "r1", inside the caller's transaction.  Delivery ids go to ids
 * (may be NULL).  Returns pb_journal_append's result; *dup gets the
 * duplicate flag.
 */
static int
append(pb_journal_t *j, const char *id, const char *dedupe,
       const char *const *dests, size_t n, int64_t *ids, bool *dup)
{
    pb_journal_target_t targets[8];
    cr_assert_leq(n, 8);
    for (size_t i = 0; i < n; i++)
        targets[i] =
            (pb_journal_target_t){.route = "r1", .destination = dests[i]};
    char key[64];
    snprintf(key, sizeof key, "k:%s", id);
    uint8_t frame[128];
    pb_journal_event_t ev = {
        .id = id,
        .type = "payment.failed",
        .source = "payments",
        .key = key,
        .dedupe_id = dedupe,
        .time_ms = 1700000000000,
        .frame = frame,
        .frame_len = make_frame(frame, sizeof frame, id),
        .targets = targets,
        .target_count = n,
    };
    int rc = pb_journal_append(j, &ev);
    for (size_t i = 0; ids && i < n; i++)
        ids[i] = targets[i].delivery_id;
    if (dup)
        *dup = ev.duplicate;
    return rc;
}

/* Append one event in a transaction of its own and commit it. */
static void
accept(pb_journal_t *j, const char *id, const char *dedupe,
       const char *const *dests, size_t n, int64_t *ids)
{
    bool dup = true;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, id, dedupe, dests, n, ids, &dup), 0, "%s",
                 pb_journal_errmsg(j));
    cr_assert(!dup, "'%s' taken for a duplicate", id);
    cr_assert_eq(pb_journal_commit(j), 0, "%s", pb_journal_errmsg(j));
}

static void
update(pb_journal_t *j, int64_t id, pb_delivery_state_t state, int attempts,
       int64_t next_ms, const char *error)
{
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(pb_journal_update(j, id, state, attempts, next_ms, error), 0);
    cr_assert_eq(pb_journal_commit(j), 0);
}

/* Pending deliveries, copied out of the callback. */
typedef struct pend {
    int64_t delivery_id;
    char route[32];
    char destination[32];
    char event_id[64];
    char key[64];
    int attempts;
    int64_t next_ms;
    uint8_t frame[128];
    size_t frame_len;
} pend_t;

typedef struct pending {
    pend_t items[32];
    size_t count;
    int stop_after; /* return 7 after this many; 0: never */
} pending_t;

static int
collect(void *ctx, const pb_journal_delivery_t *d)
{
    pending_t *p = ctx;
    cr_assert_lt(p->count, 32);
    pend_t *e = &p->items[p->count++];
    e->delivery_id = d->delivery_id;
    snprintf(e->route, sizeof e->route, "%s", d->route);
    snprintf(e->destination, sizeof e->destination, "%s", d->destination);
    snprintf(e->event_id, sizeof e->event_id, "%s", d->event_id);
    snprintf(e->key, sizeof e->key, "%s", d->key);
    e->attempts = d->attempts;
    e->next_ms = d->next_ms;
    cr_assert_leq(d->frame_len, sizeof e->frame);
    memcpy(e->frame, d->frame, d->frame_len);
    e->frame_len = d->frame_len;
    return p->stop_after && p->count == (size_t)p->stop_after ? 7 : 0;
}

static size_t
pending(pb_journal_t *j, pending_t *p)
{
    memset(p, 0, sizeof *p);
    cr_assert_eq(pb_journal_pending(j, collect, p), 0);
    return p->count;
}

/* The pending delivery p->items[i] is event id for destination dest. */
static void
assert_pend(const pending_t *p, size_t i, const char *id, const char *dest)
{
    cr_assert_lt(i, p->count);
    const pend_t *e = &p->items[i];
    char key[64];
    snprintf(key, sizeof key, "k:%s", id);
    uint8_t frame[128];
    size_t len = make_frame(frame, sizeof frame, id);
    cr_assert_str_eq(e->event_id, id);
    cr_assert_str_eq(e->destination, dest);
    cr_assert_str_eq(e->route, "r1");
    cr_assert_str_eq(e->key, key);
    cr_assert_eq(e->frame_len, len);
    cr_assert_eq(memcmp(e->frame, frame, len), 0, "frame bytes changed");
}

/* A second connection on the journal file, as an operator would open it. */
static sqlite3 *
sql_open(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/journal.db", s_dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL),
                 SQLITE_OK);
    return db;
}

/* First column of the first row of sql, as an integer (-1: no row). */
static int64_t
sql_int(const char *sql)
{
    sqlite3 *db = sql_open();
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    int64_t v =
        sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static bool
file_exists(const char *name)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    return stat(path, &st) == 0;
}

static void
assert_contains(const char *text, const char *part)
{
    cr_assert_not_null(strstr(text, part), "expected '%s' in: %s", part, text);
}

static const char *const s_two[] = {"crm", "mail"};

/* ------------------------------------------------------------------ */
/* Opening                                                             */
/* ------------------------------------------------------------------ */

Test(journal, open_creates_a_private_directory_and_a_wal_database)
{
    pb_journal_t *j = open_journal();
    struct stat st;
    cr_assert_eq(stat(s_dir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0700);
    cr_assert(file_exists("journal.db"));

    accept(j, "e1", NULL, s_two, 2, NULL);
    cr_assert(file_exists("journal.db-wal"));
    cr_assert_gt(pb_journal_size(j), 0);

    sqlite3 *db = sql_open();
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);

    pb_journal_close(&j);
    cr_assert_null(j);
    pb_journal_close(&j); /* idempotent */
    pb_journal_close(NULL);
}

Test(journal, open_uses_an_existing_directory)
{
    cr_assert_eq(mkdir(s_dir, 0750), 0);
    pb_journal_t *j = open_journal();
    cr_assert(file_exists("journal.db"));
    pb_journal_close(&j);
}

Test(journal, open_names_a_directory_it_cannot_create)
{
    char dir[4200], err[512] = "";
    snprintf(dir, sizeof dir, "%s/no/such/parent", s_tmp);
    cr_assert_null(pb_journal_open(dir, err, sizeof err));
    assert_contains(err, "cannot create data directory");
    assert_contains(err, dir);
    assert_contains(err, strerror(ENOENT));
}

Test(journal, open_names_the_file_it_cannot_open)
{
    /* the data "directory" is a regular file */
    FILE *f = fopen(s_dir, "w");
    cr_assert_not_null(f);
    fclose(f);
    char err[512] = "";
    cr_assert_null(pb_journal_open(s_dir, err, sizeof err));
    assert_contains(err, "not a directory");
    assert_contains(err, s_dir);
}

Test(journal, a_second_host_on_the_same_directory_is_refused)
{
    char err[512] = "";
    pb_journal_t *first = pb_journal_open(s_dir, err, sizeof err);
    cr_assert_not_null(first, "%s", err);
    cr_assert_null(pb_journal_open(s_dir, err, sizeof err));
    assert_contains(err, "in use by another plugboard host");
    assert_contains(err, s_dir);
    pb_journal_close(&first);
    /* the lock goes with its holder */
    pb_journal_t *again = pb_journal_open(s_dir, err, sizeof err);
    cr_assert_not_null(again, "%s", err);
    pb_journal_close(&again);
}

Test(journal, open_refuses_a_file_that_is_not_a_journal)
{
    cr_assert_eq(mkdir(s_dir, 0700), 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/journal.db", s_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database. ", f);
    fclose(f);
    char err[512] = "";
    cr_assert_null(pb_journal_open(s_dir, err, sizeof err));
    assert_contains(err, path);
    assert_contains(err, "not a database");
}

/* ------------------------------------------------------------------ */
/* Accepting events                                                    */
/* ------------------------------------------------------------------ */

Test(journal, accepted_event_is_pending_once_per_target_in_order)
{
    pb_journal_t *j = open_journal();
    int64_t a[2] = {0}, b[2] = {0};
    bool dup = true;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e1", NULL, s_two, 2, a, &dup), 0);
    cr_assert(!dup);
    cr_assert_eq(append(j, "e2", "", s_two, 2, b, &dup), 0);
    cr_assert(!dup);
    cr_assert_eq(pb_journal_commit(j), 0);

    /* delivery ids are assigned, distinct and in acceptance order */
    cr_assert_gt(a[0], 0);
    cr_assert_lt(a[0], a[1]);
    cr_assert_lt(a[1], b[0]);
    cr_assert_lt(b[0], b[1]);

    pending_t p;
    cr_assert_eq(pending(j, &p), 4);
    assert_pend(&p, 0, "e1", "crm");
    assert_pend(&p, 1, "e1", "mail");
    assert_pend(&p, 2, "e2", "crm");
    assert_pend(&p, 3, "e2", "mail");
    cr_assert_eq(p.items[0].delivery_id, a[0]);
    cr_assert_eq(p.items[3].delivery_id, b[1]);
    cr_assert_eq(p.items[0].attempts, 0);
    cr_assert_eq(p.items[0].next_ms, 0);
    pb_journal_close(&j);
}

Test(journal, event_without_targets_is_stored_but_not_pending)
{
    pb_journal_t *j = open_journal();
    accept(j, "lonely", NULL, NULL, 0, NULL);
    pending_t p;
    cr_assert_eq(pending(j, &p), 0);
    pb_journal_close(&j);
    cr_assert_eq(sql_int("SELECT count(*) FROM events WHERE id = 'lonely'"), 1);
}

Test(journal, pending_stops_when_the_callback_says_so)
{
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 2, NULL);
    pending_t p;
    memset(&p, 0, sizeof p);
    p.stop_after = 1;
    cr_assert_eq(pb_journal_pending(j, collect, &p), 7);
    cr_assert_eq(p.count, 1);
    pb_journal_close(&j);
}

/* ------------------------------------------------------------------ */
/* Deduplication                                                       */
/* ------------------------------------------------------------------ */

Test(journal, dedupe_id_is_accepted_once)
{
    pb_journal_t *j = open_journal();
    accept(j, "e1", "evt_1", s_two, 2, NULL);

    /* the vendor sends evt_1 again: a new event id, the same dedupe id */
    int64_t ids[2] = {0};
    bool dup = false;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e2", "evt_1", s_two, 2, ids, &dup), 0);
    cr_assert(dup);
    cr_assert_eq(ids[0], 0, "a duplicate gets no deliveries");
    cr_assert_eq(pb_journal_commit(j), 0);

    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    assert_pend(&p, 0, "e1", "crm");
    pb_journal_close(&j);
    cr_assert_eq(sql_int("SELECT count(*) FROM events"), 1);
    cr_assert_eq(sql_int("SELECT count(*) FROM deliveries"), 2);
}

Test(journal, dedupe_applies_within_one_transaction)
{
    /* two webhooks carrying the same vendor event in one group commit */
    pb_journal_t *j = open_journal();
    bool dup = true;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e1", "evt_1", s_two, 2, NULL, &dup), 0);
    cr_assert(!dup);
    cr_assert_eq(append(j, "e2", "evt_1", s_two, 2, NULL, &dup), 0);
    cr_assert(dup);
    cr_assert_eq(append(j, "e3", "evt_2", s_two, 1, NULL, &dup), 0);
    cr_assert(!dup);
    cr_assert_eq(pb_journal_commit(j), 0);
    pending_t p;
    cr_assert_eq(pending(j, &p), 3);
    pb_journal_close(&j);
}

Test(journal, events_without_dedupe_id_are_never_duplicates)
{
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 1, NULL);
    accept(j, "e2", "", s_two, 1, NULL);
    accept(j, "e3", NULL, s_two, 1, NULL);
    accept(j, "e4", "", s_two, 1, NULL);
    pending_t p;
    cr_assert_eq(pending(j, &p), 4);
    pb_journal_close(&j);
}

Test(journal, dedupe_survives_a_restart)
{
    pb_journal_t *j = open_journal();
    accept(j, "e1", "evt_1", s_two, 2, NULL);
    pb_journal_close(&j);

    j = open_journal();
    bool dup = false;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e2", "evt_1", s_two, 2, NULL, &dup), 0);
    cr_assert(dup);
    cr_assert_eq(pb_journal_commit(j), 0);
    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    pb_journal_close(&j);
}

/* ------------------------------------------------------------------ */
/* Delivery outcomes                                                   */
/* ------------------------------------------------------------------ */

Test(journal, delivered_leaves_pending)
{
    pb_journal_t *j = open_journal();
    int64_t ids[2];
    accept(j, "e1", NULL, s_two, 2, ids);
    update(j, ids[0], PB_DELIVERY_DELIVERED, 1, 0, NULL);

    pending_t p;
    cr_assert_eq(pending(j, &p), 1);
    assert_pend(&p, 0, "e1", "mail");
    cr_assert_eq(p.items[0].delivery_id, ids[1]);
    pb_journal_close(&j);
}

Test(journal, retry_keeps_pending_with_attempts_and_next_time)
{
    pb_journal_t *j = open_journal();
    int64_t ids[2];
    accept(j, "e1", NULL, s_two, 2, ids);
    update(j, ids[1], PB_DELIVERY_PENDING, 3, 1700000123456,
           "HTTP 503 from crm");

    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    cr_assert_eq(p.items[1].delivery_id, ids[1]);
    cr_assert_eq(p.items[1].attempts, 3);
    cr_assert_eq(p.items[1].next_ms, 1700000123456);
    cr_assert_eq(p.items[0].attempts, 0);
    pb_journal_close(&j);
}

Test(journal, dead_letter_leaves_pending_and_keeps_its_error)
{
    pb_journal_t *j = open_journal();
    int64_t ids[2];
    accept(j, "e1", NULL, s_two, 2, ids);
    update(j, ids[0], PB_DELIVERY_DEAD, 4, 0, "HTTP 422: invalid email");

    pending_t p;
    cr_assert_eq(pending(j, &p), 1);
    cr_assert_eq(p.items[0].delivery_id, ids[1]);
    pb_journal_close(&j);

    sqlite3 *db = sql_open();
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT state, last_error, attempts "
                                    "FROM deliveries WHERE id = ?1",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, ids[0]);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), PB_DELIVERY_DEAD);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 1),
                     "HTTP 422: invalid email");
    cr_assert_eq(sqlite3_column_int(st, 2), 4);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ------------------------------------------------------------------ */
/* Transactions and restarts                                           */
/* ------------------------------------------------------------------ */

Test(journal, rollback_discards_appended_events_and_dedupe_ids)
{
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 1, NULL);

    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e2", "evt_2", s_two, 2, NULL, NULL), 0);
    cr_assert_eq(append(j, "e3", NULL, s_two, 2, NULL, NULL), 0);
    pb_journal_rollback(j);
    pb_journal_rollback(j); /* harmless outside a transaction */

    pending_t p;
    cr_assert_eq(pending(j, &p), 1);
    assert_pend(&p, 0, "e1", "crm");
    /* evt_2 was never accepted, so it is not a duplicate now */
    accept(j, "e2", "evt_2", s_two, 2, NULL);
    cr_assert_eq(pending(j, &p), 3);
    pb_journal_close(&j);
}

Test(journal, committed_deliveries_survive_a_restart)
{
    pb_journal_t *j = open_journal();
    int64_t ids[2];
    accept(j, "e1", NULL, s_two, 2, ids);
    accept(j, "e2", NULL, s_two, 1, NULL);
    update(j, ids[0], PB_DELIVERY_PENDING, 2, 1700000000999, "timeout");
    pb_journal_close(&j);

    j = open_journal();
    pending_t p;
    cr_assert_eq(pending(j, &p), 3);
    assert_pend(&p, 0, "e1", "crm");
    assert_pend(&p, 1, "e1", "mail");
    assert_pend(&p, 2, "e2", "crm");
    cr_assert_eq(p.items[0].attempts, 2);
    cr_assert_eq(p.items[0].next_ms, 1700000000999);

    /* ids keep growing after a restart: no delivery id is reused */
    int64_t next[1];
    accept(j, "e3", NULL, s_two, 1, next);
    cr_assert_gt(next[0], p.items[2].delivery_id);
    pb_journal_close(&j);
}

Test(journal, uncommitted_events_are_gone_after_a_restart)
{
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 1, NULL);
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e2", NULL, s_two, 1, NULL, NULL), 0);
    pb_journal_close(&j); /* the process stops mid-transaction */

    j = open_journal();
    pending_t p;
    cr_assert_eq(pending(j, &p), 1);
    assert_pend(&p, 0, "e1", "crm");
    pb_journal_close(&j);
}

/* ------------------------------------------------------------------ */
/* Pruning                                                             */
/* ------------------------------------------------------------------ */

Test(journal, prune_forgets_old_dedupe_ids_and_delivered_events_only)
{
    pb_journal_t *j = open_journal();
    int64_t done[2], half[2], dead[1];
    accept(j, "done", "evt_done", s_two, 2, done);
    accept(j, "half", NULL, s_two, 2, half);
    accept(j, "dead", NULL, s_two, 1, dead);
    accept(j, "waiting", NULL, s_two, 1, NULL);
    update(j, done[0], PB_DELIVERY_DELIVERED, 1, 0, NULL);
    update(j, done[1], PB_DELIVERY_DELIVERED, 1, 0, NULL);
    update(j, half[0], PB_DELIVERY_DELIVERED, 1, 0, NULL);
    update(j, dead[0], PB_DELIVERY_DEAD, 5, 0, "HTTP 400");

    /* everything so far is older than a second from now */
    int64_t later = now_ms() + 1000;
    cr_assert_eq(pb_journal_prune(j, later, later, 0, NULL), 0);

    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    assert_pend(&p, 0, "half", "mail");
    assert_pend(&p, 1, "waiting", "crm");
    /* the dedupe id is forgotten: the vendor id is accepted anew */
    accept(j, "again", "evt_done", s_two, 1, NULL);
    pb_journal_close(&j);

    cr_assert_eq(sql_int("SELECT count(*) FROM events WHERE id = 'done'"), 0);
    cr_assert_eq(sql_int("SELECT count(*) FROM deliveries WHERE event_seq "
                         "NOT IN (SELECT seq FROM events)"),
                 0);
    /* a partly delivered event keeps both its rows */
    cr_assert_eq(sql_int("SELECT count(*) FROM deliveries d JOIN events e "
                         "ON e.seq = d.event_seq WHERE e.id = 'half'"),
                 2);
    /* a dead letter is kept until an admin replays or drops it */
    cr_assert_eq(sql_int("SELECT state FROM deliveries d JOIN events e "
                         "ON e.seq = d.event_seq WHERE e.id = 'dead'"),
                 PB_DELIVERY_DEAD);
}

Test(journal, prune_keeps_what_is_younger_than_the_cutoff)
{
    pb_journal_t *j = open_journal();
    int64_t ids[1];
    accept(j, "e1", "evt_1", s_two, 1, ids);
    update(j, ids[0], PB_DELIVERY_DELIVERED, 1, 0, NULL);

    int64_t earlier = now_ms() - 60000;
    cr_assert_eq(pb_journal_prune(j, earlier, earlier, 0, NULL), 0);
    bool dup = false;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e2", "evt_1", s_two, 1, NULL, &dup), 0);
    cr_assert(dup, "a recent dedupe id was forgotten");
    cr_assert_eq(pb_journal_commit(j), 0);
    pb_journal_close(&j);
    cr_assert_eq(sql_int("SELECT count(*) FROM events WHERE id = 'e1'"), 1);
}

Test(journal, prune_checkpoints_the_wal)
{
    pb_journal_t *j = open_journal();
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "e%d", i);
        accept(j, id, NULL, s_two, 2, NULL);
    }
    char wal[4200];
    struct stat st;
    snprintf(wal, sizeof wal, "%s/journal.db-wal", s_dir);
    cr_assert_eq(stat(wal, &st), 0);
    cr_assert_gt(st.st_size, 0);
    cr_assert_eq(pb_journal_prune(j, 0, 0, 0, NULL), 0);
    cr_assert_eq(stat(wal, &st), 0);
    cr_assert_eq(st.st_size, 0, "the WAL was not truncated");
    cr_assert_gt(pb_journal_size(j), 0);
    pb_journal_close(&j);
    cr_assert_eq(sql_int("SELECT count(*) FROM deliveries WHERE state = 0"),
                 100);
}

/*
 * A large backlog of old rows is pruned in bounded chunks, each in a
 * short transaction of its own, so the router is never stalled for long
 * and the WAL never has to hold the whole backlog: a call says when
 * there is more, and what is pending is kept wherever it sits.
 */
Test(journal, prune_works_through_a_backlog_in_bounded_chunks)
{
    enum { N = 250, BUDGET = 100, KEPT = 120 };
    pb_journal_t *j = open_journal();
    static const char *const one[] = {"crm"};
    cr_assert_eq(pb_journal_begin(j), 0);
    for (int i = 0; i < N; i++) {
        char id[16], dedupe[24];
        snprintf(id, sizeof id, "e%d", i);
        snprintf(dedupe, sizeof dedupe, "evt_%d", i);
        int64_t did[1];
        bool dup = true;
        cr_assert_eq(append(j, id, dedupe, one, 1, did, &dup), 0);
        cr_assert_not(dup);
        if (i != KEPT)
            cr_assert_eq(
                pb_journal_update(j, did[0], PB_DELIVERY_DELIVERED, 1, 0, NULL),
                0);
    }
    cr_assert_eq(pb_journal_commit(j), 0);

    int64_t later = now_ms() + 1000;
    int calls = 0;
    bool more = true;
    while (more) {
        cr_assert_lt(++calls, 10, "prune never finished");
        cr_assert_eq(pb_journal_prune(j, later, later, BUDGET, &more), 0);
        if (calls == 1) {
            pb_journal_close(&j);
            cr_assert_eq(sql_int("SELECT count(*) FROM events"), N - BUDGET,
                         "one call pruned more than its budget");
            cr_assert_eq(sql_int("SELECT count(*) FROM dedupe"), N - BUDGET);
            j = open_journal();
        }
    }
    cr_assert_eq(calls, 3, "250 rows in chunks of 100");
    pending_t p;
    cr_assert_eq(pending(j, &p), 1);
    assert_pend(&p, 0, "e120", "crm");
    pb_journal_close(&j);
    cr_assert_eq(sql_int("SELECT count(*) FROM events"), 1);
    cr_assert_eq(sql_int("SELECT count(*) FROM deliveries"), 1);
    cr_assert_eq(sql_int("SELECT count(*) FROM dedupe"), 0);
}

/* ------------------------------------------------------------------ */
/* Failing writes                                                      */
/* ------------------------------------------------------------------ */

/*
 * Make every write that extends a file fail, as a full disk does.  Unlike
 * chmod, RLIMIT_FSIZE also binds root, and it acts on files already open.
 * Criterion runs each test in its own process, so nothing else is hit.
 */
static struct rlimit s_saved_fsize;

static void
disk_full(void)
{
    signal(SIGXFSZ, SIG_IGN); /* get EFBIG instead of being killed */
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &s_saved_fsize), 0);
    struct rlimit none = {.rlim_cur = 0, .rlim_max = s_saved_fsize.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &none), 0);
}

static void
disk_ok(void)
{
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &s_saved_fsize), 0);
}

/* begin, append, commit; the first error, or 0 */
static int
try_accept(pb_journal_t *j, const char *id)
{
    int rc = pb_journal_begin(j);
    if (rc == 0)
        rc = append(j, id, "evt_full", s_two, 2, NULL, NULL);
    if (rc == 0)
        rc = pb_journal_commit(j);
    else
        pb_journal_rollback(j);
    return rc;
}

Test(journal, failing_writes_report_an_error_and_lose_nothing)
{
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 2, NULL);
    cr_assert_eq(pb_journal_prune(j, 0, 0, 0, NULL),
                 0); /* WAL back to 0 bytes */

    disk_full();
    int rc = try_accept(j, "e2");
    cr_assert_lt(rc, 0, "a write to a full disk succeeded");
    assert_contains(pb_journal_errmsg(j), "I/O");
    /* and again: the failure left no transaction open */
    cr_assert_lt(try_accept(j, "e2"), 0);
    /* reading still works */
    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    disk_ok();

    /* nothing accepted before was lost; the refused event can be retried
     * (its dedupe id was not remembered) */
    cr_assert_eq(pending(j, &p), 2);
    assert_pend(&p, 0, "e1", "crm");
    cr_assert_eq(try_accept(j, "e2"), 0, "%s", pb_journal_errmsg(j));
    pb_journal_close(&j);

    j = open_journal();
    cr_assert_eq(pending(j, &p), 4);
    assert_pend(&p, 0, "e1", "crm");
    assert_pend(&p, 3, "e2", "mail");
    pb_journal_close(&j);
}

/* ------------------------------------------------------------------ */
/* One emitter's request is all or nothing                             */
/* ------------------------------------------------------------------ */

Test(journal, unmark_undoes_one_emit_and_keeps_the_rest_of_the_batch)
{
    /*
     * The router appends a batch of requests in one transaction; when one
     * request fails part-way, it is undone to its mark and the rest is
     * committed.  Nothing of it may stay: a remembered dedupe id would
     * make the vendor's retry look like a duplicate of an event never
     * stored.
     */
    pb_journal_t *j = open_journal();
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e0", NULL, s_two, 1, NULL, NULL), 0);

    cr_assert_eq(pb_journal_mark(j), 0);
    cr_assert_eq(append(j, "e1", "evt_1", s_two, 2, NULL, NULL), 0);
    cr_assert_eq(append(j, "e2", "evt_2", s_two, 2, NULL, NULL), 0);
    cr_assert_eq(pb_journal_unmark(j, false), 0);

    cr_assert_eq(pb_journal_mark(j), 0);
    cr_assert_eq(append(j, "e3", "evt_3", s_two, 1, NULL, NULL), 0);
    cr_assert_eq(pb_journal_unmark(j, true), 0);
    cr_assert_eq(pb_journal_commit(j), 0);

    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    assert_pend(&p, 0, "e0", "crm");
    assert_pend(&p, 1, "e3", "crm");
    /* the undone request's retry is accepted, not taken for a duplicate */
    accept(j, "e1", "evt_1", s_two, 2, NULL);
    accept(j, "e2", "evt_2", s_two, 2, NULL);
    cr_assert_eq(pending(j, &p), 6);
    pb_journal_close(&j);
}

Test(journal, known_event_id_is_a_duplicate)
{
    /* the same envelope sent again (a re-sent request) is stored once */
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 2, NULL);
    int64_t ids[2] = {0};
    bool dup = false;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "e1", NULL, s_two, 2, ids, &dup), 0);
    cr_assert(dup);
    cr_assert_eq(ids[0], 0, "a duplicate gets no deliveries");
    cr_assert_eq(pb_journal_commit(j), 0);
    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    pb_journal_close(&j);
    cr_assert_eq(sql_int("SELECT count(*) FROM events"), 1);
}

/* ------------------------------------------------------------------ */
/* Attempt history                                                     */
/* ------------------------------------------------------------------ */

Test(journal, attempts_are_kept_until_their_event_is_pruned)
{
    pb_journal_t *j = open_journal();
    int64_t a[1], b[1];
    accept(j, "a", NULL, s_two, 1, a);
    accept(j, "b", NULL, s_two, 1, b);
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(
        pb_journal_record_attempt(j, a[0], 1, PLUGBOARD_RETRY, "HTTP 503"), 0);
    cr_assert_eq(pb_journal_record_attempt(j, a[0], 2, 0, NULL), 0);
    cr_assert_eq(pb_journal_update(j, a[0], PB_DELIVERY_DELIVERED, 2, 0, NULL),
                 0);
    cr_assert_eq(pb_journal_record_attempt(j, b[0], 1, 2, "HTTP 422"), 0);
    cr_assert_eq(pb_journal_update(j, b[0], PB_DELIVERY_DEAD, 1, 0, "HTTP 422"),
                 0);
    cr_assert_eq(pb_journal_commit(j), 0);
    pb_journal_close(&j);

    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM attempts WHERE delivery_id = %lld",
             (long long)a[0]);
    cr_assert_eq(sql_int(sql), 2);
    snprintf(sql, sizeof sql,
             "SELECT error FROM attempts WHERE delivery_id = %lld "
             "AND attempt = 1",
             (long long)a[0]);
    sqlite3 *db = sql_open();
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "HTTP 503");
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* pruning the delivered event takes its history; the dead letter's
     * history stays with it */
    j = open_journal();
    int64_t later = now_ms() + 1000;
    cr_assert_eq(pb_journal_prune(j, later, later, 0, NULL), 0);
    pb_journal_close(&j);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM attempts WHERE delivery_id = %lld",
             (long long)a[0]);
    cr_assert_eq(sql_int(sql), 0);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM attempts WHERE delivery_id = %lld",
             (long long)b[0]);
    cr_assert_eq(sql_int(sql), 1);
}

/* File modes do not bind root.  A skipped test gets no teardown. */
static void
skip_if_root(void)
{
    if (geteuid() != 0)
        return;
    teardown();
    cr_skip_test("root ignores file modes");
}

/* chmod the journal's files 0400 and its directory 0500, or back. */
static void
make_read_only(bool ro)
{
    const char *files[] = {"journal.db", "journal.db-wal", "journal.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", s_dir, files[i]);
        chmod(path, ro ? 0400 : 0600);
    }
    cr_assert_eq(chmod(s_dir, ro ? 0500 : 0700), 0);
}

Test(journal, read_only_journal_is_refused_at_open)
{
    /*
     * A host whose journal cannot be written would start and then answer
     * every webhook 503; refusing at open says what is wrong at once.
     * (chmod does not affect descriptors already open, which is why
     * failing writes under a running journal are simulated above with
     * RLIMIT_FSIZE instead.)
     */
    skip_if_root();
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 2, NULL);
    pb_journal_close(&j);

    /* a journal closed cleanly, then made read-only */
    make_read_only(true);
    char err[512] = "";
    j = pb_journal_open(s_dir, err, sizeof err);
    bool refused = j == NULL;
    pb_journal_close(&j);
    make_read_only(false); /* so teardown can remove it */
    cr_assert(refused, "a read-only journal was opened");
    assert_contains(err, s_dir);

    j = open_journal(); /* and nothing was lost */
    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    pb_journal_close(&j);
}

Test(journal, read_only_journal_with_a_wal_is_refused_at_open)
{
    /* as after a crash on a disk since remounted read-only: the WAL and
     * its index are still there, so SQLite can open the file read-only */
    skip_if_root();
    pb_journal_t *j = open_journal();
    accept(j, "e1", NULL, s_two, 2, NULL);
    make_read_only(true);
    pb_journal_close(&j); /* cannot remove the WAL now */
    cr_assert(file_exists("journal.db-wal"));

    char err[512] = "";
    j = pb_journal_open(s_dir, err, sizeof err);
    bool refused = j == NULL;
    int rc = j ? try_accept(j, "e2") : 0;
    pb_journal_close(&j);
    make_read_only(false);
    cr_assert(refused, "a read-only journal was opened (first write: %d)", rc);
    assert_contains(err, s_dir);

    j = open_journal();
    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    pb_journal_close(&j);
}

/* ------------------------------------------------------------------ */
/* Memory journal (benchmarks and tests)                               */
/* ------------------------------------------------------------------ */

Test(journal, memory_journal_works_and_touches_no_disk)
{
    char err[512] = "";
    pb_journal_t *j = pb_journal_open(NULL, err, sizeof err);
    cr_assert_not_null(j, "%s", err);
    int64_t ids[2] = {0};
    bool dup = true;
    cr_assert_eq(pb_journal_begin(j), 0);
    cr_assert_eq(append(j, "m1", "vendor-1", s_two, 2, ids, &dup), 0);
    cr_assert(!dup);
    cr_assert_eq(pb_journal_commit(j), 0);
    pending_t p;
    cr_assert_eq(pending(j, &p), 2);
    assert_pend(&p, 0, "m1", "crm");
    cr_assert_eq(pb_journal_size(j), 0);
    pb_journal_close(&j);

    /* a new memory journal starts empty */
    j = pb_journal_open(NULL, err, sizeof err);
    cr_assert_not_null(j, "%s", err);
    cr_assert_eq(pending(j, &p), 0);
    pb_journal_close(&j);
    struct stat st;
    cr_assert_neq(stat(":memory:", &st), 0, "no file named :memory:");
}
