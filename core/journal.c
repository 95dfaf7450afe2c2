/*
 * journal.c - the embedded journal: SQLite in WAL mode.
 *
 * Tables: events (the accepted frames), deliveries (one row per route and
 * destination, with state, attempts, next attempt time and last error) and
 * dedupe (vendor event ids already accepted).  Statements are prepared
 * once; every statement is reset right after use so no reader holds a
 * snapshot open and the WAL can always be checkpointed.
 */
#include "journal.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "error.h"
#include "log.h"

enum {
    S_INSERT_DEDUPE,
    S_INSERT_EVENT,
    S_INSERT_DELIVERY,
    S_UPDATE_DELIVERY,
    S_INSERT_ATTEMPT,
    S_BEGIN,
    S_COMMIT,
    S_MARK,
    S_UNMARK,
    S_UNDO_MARK,
    S_COUNT
};

static const char *const s_sql[S_COUNT] = {
    [S_INSERT_DEDUPE] =
        "INSERT OR IGNORE INTO dedupe(vendor_id, seen_ms) VALUES (?1, ?2)",
    [S_INSERT_EVENT] =
        "INSERT OR IGNORE INTO events(id, type, source, key, time_ms, accepted_ms, "
        "frame) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_INSERT_DELIVERY] =
        "INSERT INTO deliveries(event_seq, route, destination, state, "
        "attempts, next_ms, updated_ms) VALUES (?1, ?2, ?3, 0, 0, 0, ?4)",
    [S_UPDATE_DELIVERY] =
        "UPDATE deliveries SET state = ?2, attempts = ?3, next_ms = ?4, "
        "last_error = ?5, updated_ms = ?6 WHERE id = ?1",
    [S_INSERT_ATTEMPT] =
        "INSERT INTO attempts(delivery_id, attempt, at_ms, outcome, error) "
        "VALUES (?1, ?2, ?3, ?4, ?5)",
    /* transaction control runs once per batch and per EMIT: prepared
     * once like the rest, not parsed again by sqlite3_exec each time */
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_MARK] = "SAVEPOINT emit",
    [S_UNMARK] = "RELEASE emit",
    [S_UNDO_MARK] = "ROLLBACK TO emit",
};

static const char s_schema[] =
    "CREATE TABLE IF NOT EXISTS events ("
    "  seq INTEGER PRIMARY KEY,"
    "  id TEXT NOT NULL UNIQUE,"
    "  type TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  time_ms INTEGER NOT NULL,"
    "  accepted_ms INTEGER NOT NULL,"
    "  frame BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS deliveries ("
    "  id INTEGER PRIMARY KEY,"
    "  event_seq INTEGER NOT NULL REFERENCES events(seq),"
    "  route TEXT NOT NULL,"
    "  destination TEXT NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL,"
    "  next_ms INTEGER NOT NULL,"
    "  last_error TEXT,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS deliveries_by_state"
    "  ON deliveries(state, id);"
    "CREATE INDEX IF NOT EXISTS deliveries_by_event"
    "  ON deliveries(event_seq);"
    "CREATE TABLE IF NOT EXISTS dedupe ("
    "  vendor_id TEXT PRIMARY KEY,"
    "  seen_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS dedupe_by_time ON dedupe(seen_ms);"
    "CREATE TABLE IF NOT EXISTS attempts ("
    "  delivery_id INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  outcome INTEGER NOT NULL," /* 0 ok, 1 retry, 2 reject, 3 replayed */
    "  error TEXT);"
    "CREATE INDEX IF NOT EXISTS attempts_by_delivery"
    "  ON attempts(delivery_id);";

struct pb_journal {
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
    char *path;
    char *wal_path;
    bool memory; /* ":memory:", for benchmarks and tests */
    int lock_fd; /* <dir>/journal.lock, held for the journal's life */
    char last_error[256]; /* the last failure, kept past a rollback */
};

static int64_t
s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
s_exec(pb_journal_t *j, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(j->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(j->last_error, sizeof j->last_error, "%s",
                 msg ? msg : sqlite3_errmsg(j->db));
        pb_error("journal", "statement failed: %s", j->last_error);
        sqlite3_free(msg);
        return PB_EJOURNAL;
    }
    return 0;
}

/* One host per data directory: two routers on one journal would deliver
 * everything twice.  The lock dies with the process, so a crash leaves no
 * stale lock behind. */
static int
s_lock(pb_journal_t *j, const char *dir, char *err, size_t err_len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/journal.lock", dir);
    j->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->lock_fd < 0) {
        snprintf(err, err_len, "cannot open '%s': %s", path,
                 strerror(errno));
        return -1;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(j->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        snprintf(err, err_len,
                 "data_dir '%s' is in use by another plugboard host%s%s%s; "
                 "each host needs its own data_dir",
                 dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(j->lock_fd, 0) == 0 &&
        pwrite(j->lock_fd, pid, (size_t)len, 0) != len)
        pb_warn("journal", "cannot write the pid into '%s'", path);
    return 0;
}

pb_journal_t *
pb_journal_open(const char *dir, char *err, size_t err_len)
{
    bool memory = dir == NULL;
    if (memory)
        dir = ":memory:";
    else if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_len, "cannot create data directory '%s': %s", dir,
                 strerror(errno));
        return NULL;
    }
    struct stat dst;
    if (!memory && (stat(dir, &dst) != 0 || !S_ISDIR(dst.st_mode))) {
        snprintf(err, err_len, "data directory '%s' is not a directory",
                 dir);
        return NULL;
    }
    pb_journal_t *j = calloc(1, sizeof *j);
    if (!j)
        goto out_nomem;
    size_t n = strlen(dir) + 32;
    j->path = malloc(n);
    j->wal_path = malloc(n);
    if (!j->path || !j->wal_path)
        goto out_free;
    snprintf(j->path, n, memory ? "%s" : "%s/journal.db", dir);
    snprintf(j->wal_path, n, memory ? "%s" : "%s/journal.db-wal", dir);
    j->memory = memory;
    j->lock_fd = -1;
    if (!memory && s_lock(j, dir, err, err_len) != 0)
        goto out_close;

    if (sqlite3_open_v2(j->path, &j->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, err_len, "cannot open journal '%s': %s", j->path,
                 j->db ? sqlite3_errmsg(j->db) : "out of memory");
        goto out_close;
    }
    sqlite3_busy_timeout(j->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(j->db,
                     memory ? "PRAGMA synchronous=OFF;"
                              "PRAGMA foreign_keys=OFF;"
                            : "PRAGMA journal_mode=WAL;"
                              "PRAGMA synchronous=FULL;"
                              "PRAGMA foreign_keys=OFF;"
                              "PRAGMA journal_size_limit=67108864;",
                     NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(j->db, s_schema, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(j->db,
                     "PRAGMA temp_store=MEMORY;"
                     "CREATE TEMP TABLE prune_seq(seq INTEGER PRIMARY KEY);",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_len, "cannot initialise journal '%s': %s", j->path,
                 msg ? msg : sqlite3_errmsg(j->db));
        sqlite3_free(msg);
        goto out_close;
    }
    if (sqlite3_db_readonly(j->db, "main") != 0) {
        snprintf(err, err_len,
                 "cannot open journal '%s' for writing: the file or its "
                 "directory is read-only",
                 j->path);
        goto out_close;
    }
    for (int i = 0; i < S_COUNT; i++) {
        if (sqlite3_prepare_v3(j->db, s_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                               &j->stmt[i], NULL) != SQLITE_OK) {
            snprintf(err, err_len, "cannot prepare journal statement: %s",
                     sqlite3_errmsg(j->db));
            goto out_close;
        }
    }
    return j;

out_close:
    pb_journal_close(&j);
    return NULL;
out_free:
    free(j->path);
    free(j->wal_path);
    free(j);
out_nomem:
    snprintf(err, err_len, "out of memory");
    return NULL;
}

void
pb_journal_close(pb_journal_t **jp)
{
    if (!jp || !*jp)
        return;
    pb_journal_t *j = *jp;
    *jp = NULL;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(j->stmt[i]);
    if (j->db) {
        sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                  NULL, NULL);
        sqlite3_close(j->db);
    }
    if (j->lock_fd >= 0)
        close(j->lock_fd);
    free(j->path);
    free(j->wal_path);
    free(j);
}

/* Run one prepared transaction-control statement. */
static int
s_control(pb_journal_t *j, int which)
{
    sqlite3_stmt *st = j->stmt[which];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        snprintf(j->last_error, sizeof j->last_error, "%s",
                 sqlite3_errmsg(j->db));
        pb_error("journal", "statement failed: %s", j->last_error);
        return PB_EJOURNAL;
    }
    return 0;
}

int
pb_journal_begin(pb_journal_t *j)
{
    return s_control(j, S_BEGIN);
}

int
pb_journal_commit(pb_journal_t *j)
{
    int rc = s_control(j, S_COMMIT);
    if (rc != 0)
        pb_journal_rollback(j);
    return rc;
}

void
pb_journal_rollback(pb_journal_t *j)
{
    if (!sqlite3_get_autocommit(j->db))
        sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Run a prepared statement that returns no rows, then reset it. */
static int
s_step(pb_journal_t *j, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
        snprintf(j->last_error, sizeof j->last_error, "%s",
                 sqlite3_errmsg(j->db));
        pb_error("journal", "write failed: %s", j->last_error);
        return PB_EJOURNAL;
    }
    return 0;
}

static void
s_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_STATIC);
}

int
pb_journal_mark(pb_journal_t *j)
{
    return s_control(j, S_MARK);
}

int
pb_journal_unmark(pb_journal_t *j, bool keep)
{
    if (!keep && s_control(j, S_UNDO_MARK) != 0)
        return PB_EJOURNAL;
    return s_control(j, S_UNMARK);
}

int
pb_journal_append(pb_journal_t *j, pb_journal_event_t *ev)
{
    int64_t now = s_now_ms();
    ev->duplicate = false;
    if (ev->dedupe_id && *ev->dedupe_id) {
        sqlite3_stmt *st = j->stmt[S_INSERT_DEDUPE];
        s_bind_text(st, 1, ev->dedupe_id);
        sqlite3_bind_int64(st, 2, now);
        int rc = s_step(j, st);
        if (rc != 0)
            return rc;
        if (sqlite3_changes(j->db) == 0) {
            ev->duplicate = true;
            return 0;
        }
    }
    if (!ev->frame || !ev->id || !*ev->id)
        return PB_EINVAL;
    sqlite3_stmt *st = j->stmt[S_INSERT_EVENT];
    s_bind_text(st, 1, ev->id);
    s_bind_text(st, 2, ev->type);
    s_bind_text(st, 3, ev->source);
    s_bind_text(st, 4, ev->key);
    sqlite3_bind_int64(st, 5, ev->time_ms);
    sqlite3_bind_int64(st, 6, now);
    sqlite3_bind_blob(st, 7, ev->frame, (int)ev->frame_len, SQLITE_STATIC);
    int rc = s_step(j, st);
    if (rc != 0)
        return rc;
    if (sqlite3_changes(j->db) == 0) {
        /* the same envelope id again: a re-sent request */
        ev->duplicate = true;
        return 0;
    }
    int64_t seq = sqlite3_last_insert_rowid(j->db);

    st = j->stmt[S_INSERT_DELIVERY];
    for (size_t i = 0; i < ev->target_count; i++) {
        sqlite3_bind_int64(st, 1, seq);
        s_bind_text(st, 2, ev->targets[i].route);
        s_bind_text(st, 3, ev->targets[i].destination);
        sqlite3_bind_int64(st, 4, now);
        rc = s_step(j, st);
        if (rc != 0)
            return rc;
        ev->targets[i].delivery_id = sqlite3_last_insert_rowid(j->db);
    }
    return 0;
}

int
pb_journal_update(pb_journal_t *j, int64_t delivery_id,
                  pb_delivery_state_t state, int attempts, int64_t next_ms,
                  const char *error)
{
    sqlite3_stmt *st = j->stmt[S_UPDATE_DELIVERY];
    sqlite3_bind_int64(st, 1, delivery_id);
    sqlite3_bind_int(st, 2, (int)state);
    sqlite3_bind_int(st, 3, attempts);
    sqlite3_bind_int64(st, 4, next_ms);
    if (error)
        sqlite3_bind_text(st, 5, error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);
    sqlite3_bind_int64(st, 6, s_now_ms());
    return s_step(j, st);
}

int
pb_journal_record_attempt(pb_journal_t *j, int64_t delivery_id, int attempt,
                          int outcome, const char *error)
{
    sqlite3_stmt *st = j->stmt[S_INSERT_ATTEMPT];
    sqlite3_bind_int64(st, 1, delivery_id);
    sqlite3_bind_int(st, 2, attempt);
    sqlite3_bind_int64(st, 3, s_now_ms());
    sqlite3_bind_int(st, 4, outcome);
    if (error && *error)
        sqlite3_bind_text(st, 5, error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);
    return s_step(j, st);
}

int
pb_journal_pending(pb_journal_t *j, pb_journal_each_fn fn, void *ctx)
{
    static const char sql[] =
        "SELECT d.id, d.route, d.destination, e.id, e.key, d.attempts, "
        "d.next_ms, e.frame, "
        /* holds since the last replay spent no attempt */
        "(SELECT COUNT(*) FROM attempts a WHERE a.delivery_id = d.id "
        "AND a.outcome = 4 AND a.rowid > IFNULL((SELECT MAX(b.rowid) FROM "
        "attempts b WHERE b.delivery_id = d.id AND b.outcome = 3), 0)) "
        "FROM deliveries d JOIN events e "
        "ON e.seq = d.event_seq WHERE d.state = 0 ORDER BY d.id";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK) {
        pb_error("journal", "cannot read pending deliveries: %s",
                 sqlite3_errmsg(j->db));
        return PB_EJOURNAL;
    }
    int rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        pb_journal_delivery_t d = {
            .delivery_id = sqlite3_column_int64(st, 0),
            .route = (const char *)sqlite3_column_text(st, 1),
            .destination = (const char *)sqlite3_column_text(st, 2),
            .event_id = (const char *)sqlite3_column_text(st, 3),
            .key = (const char *)sqlite3_column_text(st, 4),
            .attempts = sqlite3_column_int(st, 5),
            .holds = sqlite3_column_int(st, 8),
            .next_ms = sqlite3_column_int64(st, 6),
            .frame = sqlite3_column_blob(st, 7),
            .frame_len = (size_t)sqlite3_column_bytes(st, 7),
        };
        rc = fn(ctx, &d);
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE) {
        pb_error("journal", "cannot read pending deliveries: %s",
                 sqlite3_errmsg(j->db));
        rc = PB_EJOURNAL;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---------------------------------------------------------------- */
/* dead letters                                                      */
/* ---------------------------------------------------------------- */

#define S_DEAD_COLUMNS                                                    \
    "d.id, d.route, d.destination, d.attempts, d.last_error, "           \
    "d.updated_ms, e.id, e.type, e.key, e.accepted_ms, e.frame"

static const char *
s_col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? t : "";
}

static json_t *
s_dead_row(sqlite3_stmt *st)
{
    return json_pack("{s:I, s:s, s:s, s:i, s:s, s:I, s:{s:s, s:s, s:s, s:I}}",
                     "id", (json_int_t)sqlite3_column_int64(st, 0), "route",
                     s_col_text(st, 1), "destination", s_col_text(st, 2),
                     "attempts", sqlite3_column_int(st, 3), "last_error",
                     s_col_text(st, 4), "dead_at",
                     (json_int_t)sqlite3_column_int64(st, 5), "event", "id",
                     s_col_text(st, 6), "type", s_col_text(st, 7), "key",
                     s_col_text(st, 8), "accepted_at",
                     (json_int_t)sqlite3_column_int64(st, 9));
}

json_t *
pb_journal_dead_list(pb_journal_t *j, const char *route,
                     const char *destination, int64_t after_id, int limit)
{
    static const char sql[] =
        "SELECT " S_DEAD_COLUMNS " FROM deliveries d JOIN events e ON "
        "e.seq = d.event_seq WHERE d.state = 2 AND d.id > ?1 AND (?2 IS "
        "NULL OR d.route = ?2) AND (?3 IS NULL OR d.destination = ?3) "
        "ORDER BY d.id LIMIT ?4";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, after_id);
    if (route)
        sqlite3_bind_text(st, 2, route, -1, SQLITE_STATIC);
    if (destination)
        sqlite3_bind_text(st, 3, destination, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, limit > 0 ? limit : 1000);
    json_t *out = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(out, s_dead_row(st));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *
pb_journal_dead_ids(pb_journal_t *j, const char *route)
{
    static const char sql[] =
        "SELECT id FROM deliveries WHERE state = 2 AND route = ?1 ORDER BY id";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, route, -1, SQLITE_STATIC);
    json_t *out = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(out,
                              json_integer(sqlite3_column_int64(st, 0)));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static const char *const s_outcomes[] = {"ok", "retry", "reject",
                                         "replayed", "held"};

json_t *
pb_journal_dead_show(pb_journal_t *j, int64_t id, pb_journal_frame_fn render,
                     bool *found)
{
    static const char sql[] =
        "SELECT " S_DEAD_COLUMNS " FROM deliveries d JOIN events e ON "
        "e.seq = d.event_seq WHERE d.state = 2 AND d.id = ?1";
    static const char hist[] =
        "SELECT attempt, at_ms, outcome, error FROM attempts WHERE "
        "delivery_id = ?1 ORDER BY rowid";
    *found = false;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    json_t *out = NULL;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *found = true;
        out = s_dead_row(st);
        json_t *body = render ? render(sqlite3_column_blob(st, 10),
                                       (size_t)sqlite3_column_bytes(st, 10))
                              : NULL;
        json_object_set_new(out, "event_body", body ? body : json_null());
    }
    sqlite3_finalize(st);
    if (!out)
        return NULL;
    if (sqlite3_prepare_v2(j->db, hist, -1, &st, NULL) != SQLITE_OK) {
        json_decref(out);
        return NULL;
    }
    sqlite3_bind_int64(st, 1, id);
    json_t *h = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        int oc = sqlite3_column_int(st, 2);
        json_array_append_new(
            h, json_pack("{s:i, s:I, s:s, s:s?}", "attempt",
                         sqlite3_column_int(st, 0), "at",
                         (json_int_t)sqlite3_column_int64(st, 1), "outcome",
                         oc >= 0 && oc < 5 ? s_outcomes[oc] : "?", "error",
                         (const char *)sqlite3_column_text(st, 3)));
    }
    sqlite3_finalize(st);
    json_object_set_new(out, "history", h);
    return out;
}

int
pb_journal_replay(pb_journal_t *j, int64_t id, pb_journal_each_fn fn,
                  void *ctx)
{
    static const char sql[] =
        "SELECT d.id, d.route, d.destination, e.id, e.key, e.frame FROM "
        "deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.state = "
        "2 AND d.id = ?1";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK)
        return PB_EJOURNAL;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? PB_ENOENT : PB_EJOURNAL;
    }
    rc = pb_journal_update(j, id, PB_DELIVERY_PENDING, 0, 0, NULL);
    if (rc == 0)
        rc = pb_journal_record_attempt(j, id, 0, PB_ATTEMPT_REPLAYED,
                                       "replayed by an admin");
    if (rc == 0) {
        pb_journal_delivery_t d = {
            .delivery_id = id,
            .route = s_col_text(st, 1),
            .destination = s_col_text(st, 2),
            .event_id = s_col_text(st, 3),
            .key = s_col_text(st, 4),
            .attempts = 0,
            .next_ms = 0,
            .frame = sqlite3_column_blob(st, 5),
            .frame_len = (size_t)sqlite3_column_bytes(st, 5),
        };
        rc = fn(ctx, &d);
    }
    sqlite3_finalize(st);
    return rc;
}

int
pb_journal_drop(pb_journal_t *j, int64_t id)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "DELETE FROM deliveries WHERE id = %lld AND state = 2",
             (long long)id);
    int rc = s_exec(j, sql);
    if (rc != 0)
        return rc;
    if (sqlite3_changes(j->db) == 0)
        return PB_ENOENT;
    snprintf(sql, sizeof sql, "DELETE FROM attempts WHERE delivery_id = %lld",
             (long long)id);
    return s_exec(j, sql);
}

/* One chunk of pruning in its own transaction: at most budget events
 * and budget dedupe ids.  Returns how many of each went, or a negative
 * code. */
static int
s_prune_chunk(pb_journal_t *j, int64_t dedupe_before_ms,
              int64_t delivered_before_ms, int budget)
{
    char sql[1600];
    /* Events are accepted in seq order, so the old ones are the first
     * rows: find where the young ones start instead of reading them all.
     * An event goes only when none of its deliveries is pending or dead. */
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE;"
             "DELETE FROM prune_seq;"
             "INSERT INTO prune_seq SELECT e.seq FROM events e WHERE "
             "e.seq < coalesce((SELECT seq FROM events WHERE accepted_ms >= "
             "%lld ORDER BY seq LIMIT 1), 9223372036854775807) AND "
             "e.accepted_ms < %lld AND NOT EXISTS (SELECT 1 FROM deliveries "
             "d WHERE d.event_seq = e.seq AND d.state != 1) ORDER BY e.seq "
             "LIMIT %d;"
             "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM "
             "deliveries WHERE event_seq IN (SELECT seq FROM prune_seq));"
             "DELETE FROM deliveries WHERE event_seq IN (SELECT seq FROM "
             "prune_seq);"
             "DELETE FROM events WHERE seq IN (SELECT seq FROM prune_seq);"
             "DELETE FROM dedupe WHERE vendor_id IN (SELECT vendor_id FROM "
             "dedupe WHERE seen_ms < %lld ORDER BY seen_ms LIMIT %d);",
             (long long)delivered_before_ms, (long long)delivered_before_ms,
             budget, (long long)dedupe_before_ms, budget);
    int rc = s_exec(j, sql);
    int dedupe = rc == 0 ? sqlite3_changes(j->db) : 0;
    int events = 0;
    if (rc == 0) {
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(j->db, "SELECT count(*) FROM prune_seq", -1,
                                &st, NULL) == SQLITE_OK
                 ? 0
                 : PB_EJOURNAL;
        if (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
            events = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    if (rc == 0)
        rc = s_exec(j, "DELETE FROM prune_seq; COMMIT");
    if (rc != 0) {
        pb_journal_rollback(j);
        return rc;
    }
    return events > dedupe ? events : dedupe;
}

int
pb_journal_prune(pb_journal_t *j, int64_t dedupe_before_ms,
                 int64_t delivered_before_ms, int budget, bool *more)
{
    if (budget <= 0)
        budget = PB_JOURNAL_PRUNE_BUDGET;
    if (more)
        *more = false;
    int rc = s_prune_chunk(j, dedupe_before_ms, delivered_before_ms, budget);
    if (rc < 0)
        return rc;
    if (rc >= budget) {
        /* more to do: let the WAL be reused now, so a large backlog of old
         * rows never makes it grow past one chunk */
        if (more)
            *more = true;
        sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                  NULL, NULL);
        return 0;
    }
    sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
                              NULL);
    return 0;
}

int64_t
pb_journal_size(pb_journal_t *j)
{
    struct stat st;
    int64_t total = 0;
    if (j->memory)
        return 0;
    if (stat(j->path, &st) == 0)
        total += st.st_size;
    if (stat(j->wal_path, &st) == 0)
        total += st.st_size;
    return total;
}

const char *
pb_journal_errmsg(pb_journal_t *j)
{
    return j->last_error[0] ? j->last_error : sqlite3_errmsg(j->db);
}
