/*
 * worker.c - process isolation: the supervised child that runs one
 * connector's plugin (`plugboard worker`), and the actor's side that
 * starts it, calls it over ipc://, notices its death and restarts it.
 *
 * Host side: owns the child's pid, the PAIR socket bound for it (used
 * only by the actor's thread) and its supervision record (under lock, for
 * pb_worker_info).  Child side: owns the plugin instance, its config and
 * its socket; everything is freed before it exits.
 */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "envelope.h"
#include "error.h"
#include "health.h"
#include "hostapi.h"
#include "http.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"

#define S_MSG_WANT "WANT"
#define S_MSG_CONF "CONF"
#define S_MSG_HELLO "HELO"
#define S_MSG_FAIL "FAIL"
#define S_MSG_DELIVER "DLV"
#define S_MSG_RESULT "RES"
#define S_MSG_HOOK "HOOK"
#define S_MSG_HOOK_REPLY "HOKR"
#define S_MSG_STOP "STOP"

#define S_POLL_MS 50
#define S_LOOP_DEATHS 5        /* this many deaths ... */
#define S_LOOP_WINDOW_MS 60000 /* ... within this long: failed */
#define S_BACKOFF_FIRST_MS 100
#define S_BACKOFF_MAX_MS 5000
#define S_STOP_WAIT_MS 5000
#define S_MAX_PARTS 1100 /* a reply: 4 parts and its frames */
#define S_CONF_HEAD 6    /* CONF's parts before the settings */
#define S_CONF_WAIT_MS 20000
#define S_HEAD_PARTS 4   /* RES/HOKR, two of their own, the report */
#define S_REPORT_VERSION 1
/* version, dropped, causes, auth flag, reason, names and deltas */
#define S_REPORT_MAX                                                           \
    (1 + 4 + 1 + 1 + 2 + (PB_AUTH_REASON_MAX - 1) + 1 +                        \
     PB_CUSTOM_MAX * (1 + PB_CUSTOM_NAME_MAX + 8))

extern char **environ;

struct pb_worker {
    void *zctx;
    char name[64];
    char plugin[4096];
    const pb_frames_t *conf; /* the CONF message (borrowed) */
    char run_dir[4096];
    int64_t call_timeout_ms;
    int64_t open_timeout_ms;
    void (*on_count)(void *ctx, const char *name, int64_t delta);
    void (*on_dropped)(void *ctx, uint64_t n, unsigned causes);
    void (*on_auth_failed)(void *ctx, const char *reason);
    void *report_ctx;

    /* the actor's thread only */
    bool bad_report_warned;
    void *sock;
    char sock_path[4200];
    pid_t pid; /* 0 while no child runs */
    unsigned seq;
    int64_t deaths[S_LOOP_DEATHS]; /* when the last deaths were */
    size_t death_next;
    int64_t respawn_at;

    /* under lock: what pb_worker_info reports */
    pthread_mutex_t lock;
    const char *state;
    int restarts;
    bool failed;
    char failure[256];
};

void
pb_frames_release(pb_frames_t *f)
{
    for (size_t i = 0; i < f->count; i++)
        free(f->data[i]);
    free(f->data);
    free(f->len);
    memset(f, 0, sizeof *f);
}

static int
s_frames_add(pb_frames_t *f, const void *data, size_t len)
{
    if (f->count == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        uint8_t **d = realloc(f->data, cap * sizeof *d);
        if (d)
            f->data = d;
        size_t *l = d ? realloc(f->len, cap * sizeof *l) : NULL;
        if (!l)
            return PB_ENOMEM;
        f->len = l;
        f->cap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return PB_ENOMEM;
    memcpy(copy, data, len);
    f->data[f->count] = copy;
    f->len[f->count++] = len;
    return 0;
}

/* ---------------------------------------------------------------- */
/* messages                                                          */
/* ---------------------------------------------------------------- */

typedef struct s_msg {
    zmq_msg_t parts[S_MAX_PARTS];
    size_t n;
} msg_t;

static void
s_msg_close(msg_t *m)
{
    for (size_t i = 0; i < m->n; i++)
        zmq_msg_close(&m->parts[i]);
    m->n = 0;
}

/* Receive one whole multipart message (the first part without waiting
 * when flags say so).  Parts past S_MAX_PARTS are dropped. */
static int
s_recv(void *sock, msg_t *m, int flags)
{
    m->n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, m->n == 0 ? flags : 0) < 0) {
            zmq_msg_close(&part);
            s_msg_close(m);
            return -1;
        }
        more = zmq_msg_more(&part);
        if (m->n < S_MAX_PARTS)
            m->parts[m->n++] = part;
        else
            zmq_msg_close(&part);
    }
    return 0;
}

static bool
s_is(const msg_t *m, size_t i, const char *what)
{
    return i < m->n && zmq_msg_size(&m->parts[i]) == strlen(what) &&
           memcmp(zmq_msg_data((zmq_msg_t *)&m->parts[i]), what,
                  strlen(what)) == 0;
}

static const uint8_t *
s_data(msg_t *m, size_t i, size_t *len)
{
    *len = zmq_msg_size(&m->parts[i]);
    return zmq_msg_data(&m->parts[i]);
}

/* Parts given as (pointer, length) pairs; the last part ends the message. */
static int
s_send(void *sock, size_t n, const void *const *data, const size_t *len)
{
    for (size_t i = 0; i < n; i++)
        if (zmq_send(sock, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            return PB_EIO;
    return 0;
}

/* ---------------------------------------------------------------- */
/* the actor's side: starting and supervising the child              */
/* ---------------------------------------------------------------- */

static void
s_set_state(pb_worker_t *w, const char *state, const char *failure)
{
    pthread_mutex_lock(&w->lock);
    w->state = state;
    if (failure)
        snprintf(w->failure, sizeof w->failure, "%s", failure);
    pthread_mutex_unlock(&w->lock);
}

static void
s_describe_status(int status, char *out, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(out, len, "stopped (status %#x)", (unsigned)status);
}

/* Has the child exited?  Its status in *status; a child that vanished
 * without one (SIGCHLD ignored) counts as gone too. */
static bool
s_gone(pb_worker_t *w, int *status)
{
    pid_t r = waitpid(w->pid, status, WNOHANG);
    if (r < 0 && errno == ECHILD && kill(w->pid, 0) != 0) {
        *status = 0;
        return true;
    }
    return r == w->pid;
}

static void
s_close_sock(pb_worker_t *w)
{
    if (w->sock)
        zmq_close(w->sock);
    w->sock = NULL;
    if (w->sock_path[0])
        unlink(w->sock_path);
    w->sock_path[0] = '\0';
}

/* Wait up to ms for the child to exit; its status, or -1. */
static int
s_reap(pb_worker_t *w, int64_t ms)
{
    int64_t until = pb_monotonic_ms() + ms;
    for (;;) {
        int status;
        pid_t r = waitpid(w->pid, &status, WNOHANG);
        if (r == w->pid || (r < 0 && errno == ECHILD))
            return r == w->pid ? status : 0;
        if (pb_monotonic_ms() >= until)
            return -1;
        usleep(10000);
    }
}

static void
s_kill(pb_worker_t *w)
{
    kill(w->pid, SIGKILL);
    s_reap(w, 10000);
    w->pid = 0;
}

/*
 * The child is gone (what says how): count it, and either schedule a
 * restart after the backoff or, after S_LOOP_DEATHS deaths within
 * S_LOOP_WINDOW_MS, mark the worker failed.
 */
static void
s_died(pb_worker_t *w, const char *what)
{
    s_close_sock(w);
    w->pid = 0;
    int64_t now = pb_monotonic_ms();
    w->deaths[w->death_next++ % S_LOOP_DEATHS] = now;
    int recent = 0;
    for (size_t i = 0; i < S_LOOP_DEATHS; i++)
        recent += w->deaths[i] && now - w->deaths[i] < S_LOOP_WINDOW_MS;
    pthread_mutex_lock(&w->lock);
    w->restarts++;
    pthread_mutex_unlock(&w->lock);
    if (recent >= S_LOOP_DEATHS) {
        char why[256];
        snprintf(why, sizeof why,
                 "its worker died %d times within %d s; last: %.160s", recent,
                 S_LOOP_WINDOW_MS / 1000, what);
        pthread_mutex_lock(&w->lock);
        w->failed = true;
        pthread_mutex_unlock(&w->lock);
        s_set_state(w, "failed", why);
        pb_error("worker",
                 "connector=%s failed: %s; deliveries become dead "
                 "letters until it is upgraded or reloaded",
                 w->name, why);
        return;
    }
    int64_t backoff = S_BACKOFF_FIRST_MS << (recent - 1);
    if (backoff > S_BACKOFF_MAX_MS)
        backoff = S_BACKOFF_MAX_MS;
    w->respawn_at = now + backoff;
    s_set_state(w, "starting", what);
    pb_error("worker", "connector=%s %s; restarting in %lld ms", w->name, what,
             (long long)backoff);
}

static int
s_exec(pb_worker_t *w, char *err, size_t err_len)
{
    char exe[4096], parent[32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(err, err_len, "cannot find the plugboard binary: %s",
                 strerror(errno));
        return PB_EIO;
    }
    exe[n] = '\0';
    snprintf(parent, sizeof parent, "%d", (int)getpid());
    char endpoint[4300];
    snprintf(endpoint, sizeof endpoint, "ipc://%s", w->sock_path);
    char *argv[] = {"plugboard", "worker",  "--connector", w->name,
                    "--plugin",  w->plugin, "--endpoint",  endpoint,
                    "--parent",  parent,    NULL};
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    /* its own process group: a terminal's Ctrl-C reaches the host only,
     * which stops its workers itself */
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    int rc = posix_spawn(&w->pid, exe, NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        w->pid = 0;
        snprintf(err, err_len, "cannot start a worker process: %s",
                 strerror(rc));
        return PB_EIO;
    }
    return 0;
}

/* One setting's value part: kind:u8 line:i32 value. */
static int
s_conf_value(pb_frames_t *f, const pb_raw_setting_t *r)
{
    uint8_t buf[16];
    size_t len = 5;
    int32_t line = r->line;
    buf[0] = (uint8_t)r->kind;
    memcpy(buf + 1, &line, 4);
    if (r->kind == PB_RAW_INT) {
        memcpy(buf + 5, &r->i, 8);
        len += 8;
    } else if (r->kind == PB_RAW_FLOAT) {
        memcpy(buf + 5, &r->f, 8);
        len += 8;
    } else if (r->kind == PB_RAW_BOOL) {
        buf[5] = r->b ? 1 : 0;
        len += 1;
    }
    if (r->kind != PB_RAW_STRING)
        return s_frames_add(f, buf, len);
    size_t slen = r->str ? strlen(r->str) : 0;
    uint8_t *v = malloc(5 + slen);
    if (!v)
        return PB_ENOMEM;
    memcpy(v, buf, 5);
    memcpy(v + 5, r->str ? r->str : "", slen);
    int rc = s_frames_add(f, v, 5 + slen);
    free(v);
    return rc;
}

int
pb_worker_conf(pb_frames_t *out, const char *config_path, const char *log_level,
               const pb_connector_conf_t *c, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    if (!c || !c->name || !c->plugin) {
        snprintf(err, err_len, "no connector entry for the worker");
        return PB_EINVAL;
    }
    if (c->settings_count > (S_MAX_PARTS - S_CONF_HEAD) / 2) {
        snprintf(err, err_len, "too many settings for a worker process (%zu)",
                 c->settings_count);
        return PB_EINVAL;
    }
    const char *path = config_path ? config_path : "";
    const char *level = log_level ? log_level : "info";
    int32_t line = c->line;
    int rc = s_frames_add(out, S_MSG_CONF, 4);
    if (!rc)
        rc = s_frames_add(out, path, strlen(path));
    if (!rc)
        rc = s_frames_add(out, level, strlen(level));
    if (!rc)
        rc = s_frames_add(out, c->name, strlen(c->name));
    if (!rc)
        rc = s_frames_add(out, c->plugin, strlen(c->plugin));
    if (!rc)
        rc = s_frames_add(out, &line, 4);
    for (size_t i = 0; !rc && i < c->settings_count; i++) {
        const pb_raw_setting_t *r = &c->settings[i];
        rc = s_frames_add(out, r->name, strlen(r->name));
        if (!rc)
            rc = s_conf_value(out, r);
    }
    if (rc) {
        pb_frames_release(out);
        snprintf(err, err_len, "out of memory");
    }
    return rc;
}

/* Start a child and wait for its HELO (or FAIL). */
static int
s_spawn(pb_worker_t *w, char *err, size_t err_len)
{
    int n = snprintf(w->sock_path, sizeof w->sock_path, "%s/w-%d-%s-%u.sock",
                     w->run_dir, (int)getpid(), w->name, ++w->seq);
    if (n >= 100) { /* sun_path */
        snprintf(err, err_len,
                 "the worker socket path '%s' is too long; use a shorter "
                 "run_dir",
                 w->sock_path);
        w->sock_path[0] = '\0';
        return PB_EINVAL;
    }
    char endpoint[4300];
    snprintf(endpoint, sizeof endpoint, "ipc://%s", w->sock_path);
    unlink(w->sock_path);
    w->sock = zmq_socket(w->zctx, ZMQ_PAIR);
    int zero = 0;
    /* a send to a child that is gone must not wait for a new one */
    int send_ms = (int)w->call_timeout_ms;
    if (!w->sock ||
        zmq_setsockopt(w->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(w->sock, ZMQ_SNDTIMEO, &send_ms, sizeof send_ms) ||
        zmq_bind(w->sock, endpoint) != 0) {
        snprintf(err, err_len, "cannot bind '%s': %s", endpoint,
                 zmq_strerror(errno));
        s_close_sock(w);
        return PB_EIO;
    }
    if (s_exec(w, err, err_len) != 0) {
        s_close_sock(w);
        return PB_EIO;
    }
    int64_t until = pb_monotonic_ms() + w->open_timeout_ms;
    for (;;) {
        zmq_pollitem_t item = {.socket = w->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, S_POLL_MS) > 0) {
            msg_t *m = malloc(sizeof *m);
            if (!m || s_recv(w->sock, m, 0) != 0) {
                free(m);
                continue;
            }
            if (s_is(m, 0, S_MSG_WANT)) { /* its entry, then its open */
                s_msg_close(m);
                free(m);
                if (s_send(w->sock, w->conf->count,
                           (const void *const *)w->conf->data,
                           w->conf->len) != 0) {
                    snprintf(err, err_len,
                             "cannot hand its worker the config: %s",
                             zmq_strerror(errno));
                    s_kill(w);
                    s_close_sock(w);
                    return PB_EIO;
                }
                continue;
            }
            bool hello = s_is(m, 0, S_MSG_HELLO);
            if (!hello) {
                size_t len = 0;
                const uint8_t *why = m->n > 1 ? s_data(m, 1, &len) : NULL;
                snprintf(err, err_len, "open failed: %.*s", (int)len,
                         why ? (const char *)why : "no reason given");
            }
            s_msg_close(m);
            free(m);
            if (hello)
                return 0;
            if (s_reap(w, 2000) < 0)
                s_kill(w);
            w->pid = 0;
            s_close_sock(w);
            return PB_EIO;
        }
        int status;
        if (s_gone(w, &status)) {
            char how[128];
            s_describe_status(status, how, sizeof how);
            snprintf(err, err_len, "its worker %s while opening", how);
            w->pid = 0;
            s_close_sock(w);
            return PB_EIO;
        }
        if (pb_monotonic_ms() >= until) {
            s_kill(w);
            snprintf(err, err_len, "its worker did not open within %lld ms",
                     (long long)w->open_timeout_ms);
            s_close_sock(w);
            return PB_ETIMEDOUT;
        }
    }
}

/* A child that died while idle is not the next call's fault. */
static void
s_check_idle(pb_worker_t *w)
{
    int status;
    if (w->pid && s_gone(w, &status)) {
        char how[128], why[200];
        s_describe_status(status, how, sizeof how);
        snprintf(why, sizeof why, "worker process %s while idle", how);
        s_died(w, why);
    }
}

/* A child to call: wait out the backoff and start one, counting failed
 * starts as deaths.  Returns false when the worker has failed. */
static bool
s_ensure(pb_worker_t *w)
{
    s_check_idle(w);
    while (!w->pid && !w->failed) {
        int64_t wait = w->respawn_at - pb_monotonic_ms();
        if (wait > 0)
            usleep((useconds_t)wait * 1000);
        char err[512];
        if (s_spawn(w, err, sizeof err) == 0) {
            s_set_state(w, "running", NULL);
            pb_info("worker", "connector=%s worker pid=%d running", w->name,
                    (int)w->pid);
            return true;
        }
        s_died(w, err);
    }
    return w->pid != 0;
}

/* Wait for the answer to the call just sent.  0 with the reply in m, or
 * PB_EIO when the child died or was killed (reason in why). */
static int
s_answer(pb_worker_t *w, msg_t *m, const char *doing, char *why, size_t why_len)
{
    int64_t until = pb_monotonic_ms() + w->call_timeout_ms;
    for (;;) {
        zmq_pollitem_t item = {.socket = w->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, S_POLL_MS) > 0 &&
            s_recv(w->sock, m, ZMQ_DONTWAIT) == 0)
            return 0;
        int status;
        if (s_gone(w, &status)) {
            char how[128];
            s_describe_status(status, how, sizeof how);
            snprintf(why, why_len, "worker process %s while %s", how, doing);
            s_died(w, why);
            return PB_EIO;
        }
        if (pb_monotonic_ms() >= until) {
            s_kill(w);
            snprintf(why, why_len,
                     "worker process gave no answer within %lld ms while %s; "
                     "killed",
                     (long long)w->call_timeout_ms, doing);
            s_died(w, why);
            return PB_EIO;
        }
    }
}

/* A request could not even be sent: the child is dead or stuck. */
static void
s_unreachable(pb_worker_t *w, const char *doing, char *why, size_t len)
{
    int status;
    char how[128] = "did not take a request";
    if (s_gone(w, &status))
        s_describe_status(status, how, sizeof how);
    else
        s_kill(w);
    snprintf(why, len, "worker process %s while %s", how, doing);
    s_died(w, why);
}

/* A failure too long for the reason is shown cut, ending in "...". */
static void
s_failed_reason(pb_worker_t *w, char *out, size_t len)
{
    pthread_mutex_lock(&w->lock);
    int n =
        snprintf(out, len, "connector '%s' failed: %s", w->name, w->failure);
    pthread_mutex_unlock(&w->lock);
    if (n >= 0 && (size_t)n >= len && len > 4)
        memcpy(out + len - 4, "...", 4);
}

/* Bounded reads from a report. */
typedef struct s_reader {
    const uint8_t *p;
    size_t left;
} reader_t;

static bool
s_take(reader_t *r, void *out, size_t n)
{
    if (r->left < n)
        return false;
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

/* Check a whole report before acting on any of it: true when it reads
 * exactly.  Names, when names is set, are copied out NUL-terminated. */
static bool
s_parse_report(const uint8_t *data, size_t len, uint32_t *dropped,
               uint8_t *causes, bool *auth, char *reason,
               char (*names)[PB_CUSTOM_NAME_MAX + 1], int64_t *deltas,
               size_t *count)
{
    reader_t r = {data, len};
    uint8_t version, flag, n;
    uint16_t rlen;
    if (len > S_REPORT_MAX || !s_take(&r, &version, 1) ||
        version != S_REPORT_VERSION || !s_take(&r, dropped, 4) ||
        !s_take(&r, causes, 1) || !s_take(&r, &flag, 1) || flag > 1 ||
        !s_take(&r, &rlen, 2) || rlen >= PB_AUTH_REASON_MAX ||
        !s_take(&r, reason, rlen))
        return false;
    reason[rlen] = '\0';
    if (strlen(reason) != rlen || !s_take(&r, &n, 1) || n > PB_CUSTOM_MAX)
        return false;
    *auth = flag == 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t nl;
        if (!s_take(&r, &nl, 1) || nl == 0 || nl > PB_CUSTOM_NAME_MAX ||
            !s_take(&r, names[i], nl) || !s_take(&r, &deltas[i], 8))
            return false;
        names[i][nl] = '\0';
    }
    *count = n;
    return r.left == 0;
}

int
pb_worker_read_report(const pb_worker_options_t *to, const uint8_t *data,
                      size_t len)
{
    uint32_t dropped = 0;
    uint8_t causes = 0;
    bool auth = false;
    char reason[PB_AUTH_REASON_MAX];
    char names[PB_CUSTOM_MAX][PB_CUSTOM_NAME_MAX + 1];
    int64_t deltas[PB_CUSTOM_MAX];
    size_t n = 0;
    if (!data || !s_parse_report(data, len, &dropped, &causes, &auth, reason,
                                 names, deltas, &n))
        return PB_EPROTO;
    for (size_t i = 0; i < n && to->on_count; i++)
        to->on_count(to->report_ctx, names[i], deltas[i]);
    if (dropped && to->on_dropped)
        to->on_dropped(to->report_ctx, dropped, causes);
    if (auth && to->on_auth_failed)
        to->on_auth_failed(to->report_ctx, reason);
    return 0;
}

/* A reply's report: hand what it says to the actor, or ignore the whole
 * of it when it does not read exactly. */
static void
s_report(pb_worker_t *w, const uint8_t *data, size_t len)
{
    pb_worker_options_t to = {.on_count = w->on_count,
                              .on_dropped = w->on_dropped,
                              .on_auth_failed = w->on_auth_failed,
                              .report_ctx = w->report_ctx};
    if (pb_worker_read_report(&to, data, len) == 0)
        return;
    if (!w->bad_report_warned)
        pb_warn("worker",
                "connector=%s worker pid=%d sent a malformed report (%zu "
                "bytes); its counters and credential reports are ignored",
                w->name, (int)w->pid, len);
    w->bad_report_warned = true;
}

void
pb_worker_deliver(pb_worker_t *w, const uint8_t *hdr, const uint8_t *frame,
                  size_t len, plugboard_result_t *res, pb_frames_t *out)
{
    memset(res, 0, sizeof *res);
    if (!s_ensure(w)) {
        res->outcome = PLUGBOARD_REJECT;
        s_failed_reason(w, res->reason, sizeof res->reason);
        return;
    }
    const void *data[] = {S_MSG_DELIVER, hdr, frame};
    size_t lens[] = {3, 12, len};
    msg_t *m = malloc(sizeof *m);
    if (!m || s_send(w->sock, 3, data, lens) != 0) {
        free(m);
        res->outcome = PLUGBOARD_RETRY;
        s_unreachable(w, "delivering", res->reason, sizeof res->reason);
        return;
    }
    if (s_answer(w, m, "delivering", res->reason, sizeof res->reason) != 0) {
        res->outcome = PLUGBOARD_RETRY;
        free(m);
        return;
    }
    size_t rl = 0, why_len = 0;
    const uint8_t *r = m->n >= S_HEAD_PARTS && s_is(m, 0, S_MSG_RESULT)
                           ? s_data(m, 1, &rl)
                           : NULL;
    if (!r || rl != 9) {
        res->outcome = PLUGBOARD_RETRY;
        snprintf(res->reason, sizeof res->reason,
                 "malformed answer from the worker process");
    } else {
        res->outcome = (plugboard_outcome_t)r[0];
        memcpy(&res->retry_after_ms, r + 1, 8);
        const uint8_t *why = s_data(m, 2, &why_len);
        if (why_len >= sizeof res->reason)
            why_len = sizeof res->reason - 1;
        memcpy(res->reason, why, why_len);
        size_t pl;
        const uint8_t *report = s_data(m, 3, &pl);
        s_report(w, report, pl);
        for (size_t i = S_HEAD_PARTS; i < m->n; i++) {
            size_t fl;
            const uint8_t *f = s_data(m, i, &fl);
            s_frames_add(out, f, fl);
        }
    }
    s_msg_close(m);
    free(m);
}

/* name NUL value NUL ..., for the HOOK message. */
static char *
s_pack_headers(const plugboard_request_t *req, size_t *len)
{
    size_t n = 0;
    for (size_t i = 0; i < req->header_count; i++)
        n += strlen(req->headers[i].name) + strlen(req->headers[i].value) + 2;
    char *buf = malloc(n ? n : 1), *p = buf;
    for (size_t i = 0; buf && i < req->header_count; i++) {
        size_t a = strlen(req->headers[i].name) + 1;
        size_t b = strlen(req->headers[i].value) + 1;
        memcpy(p, req->headers[i].name, a);
        memcpy(p + a, req->headers[i].value, b);
        p += a + b;
    }
    *len = n;
    return buf;
}

void
pb_worker_webhook(pb_worker_t *w, const plugboard_request_t *req,
                  plugboard_response_t *resp, pb_frames_t *out)
{
    char why[PLUGBOARD_REASON_MAX];
    if (!s_ensure(w)) {
        s_failed_reason(w, why, sizeof why);
        pb_response_set(resp, 503, why);
        return;
    }
    size_t hlen;
    char *headers = s_pack_headers(req, &hlen);
    int64_t received = req->received_ms;
    const void *data[] = {S_MSG_HOOK,
                          req->method,
                          req->path,
                          req->query ? req->query : "",
                          &received,
                          headers,
                          req->body ? (const void *)req->body : ""};
    size_t lens[] = {4,
                     strlen(req->method),
                     strlen(req->path),
                     req->query ? strlen(req->query) : 0,
                     8,
                     hlen,
                     req->body_len};
    msg_t *m = malloc(sizeof *m);
    int rc = headers && m ? s_send(w->sock, 7, data, lens) : PB_ENOMEM;
    free(headers);
    if (rc == PB_EIO)
        s_unreachable(w, "handling a webhook", why, sizeof why);
    if (rc != 0 || s_answer(w, m, "handling a webhook", why, sizeof why) != 0) {
        free(m);
        pb_response_set(resp, 503,
                        "the connector is restarting; retry "
                        "later");
        return;
    }
    size_t sl = 0, bl = 0;
    const uint8_t *st = m->n >= S_HEAD_PARTS && s_is(m, 0, S_MSG_HOOK_REPLY)
                            ? s_data(m, 1, &sl)
                            : NULL;
    if (!st || sl != 4) {
        pb_response_set(resp, 500, "malformed answer from the worker");
    } else {
        int32_t status;
        memcpy(&status, st, 4);
        const uint8_t *body = s_data(m, 2, &bl);
        char *text = strndup((const char *)body, bl);
        pb_response_set(resp, status, text ? text : "");
        free(text);
        size_t pl;
        const uint8_t *report = s_data(m, 3, &pl);
        s_report(w, report, pl);
        for (size_t i = S_HEAD_PARTS; i < m->n; i++) {
            size_t fl;
            const uint8_t *f = s_data(m, i, &fl);
            s_frames_add(out, f, fl);
        }
    }
    s_msg_close(m);
    free(m);
}

void
pb_worker_tick(pb_worker_t *w)
{
    s_check_idle(w);
    if (!w->pid && !w->failed && pb_monotonic_ms() >= w->respawn_at)
        s_ensure(w);
}

void
pb_worker_info(pb_worker_t *w, pb_worker_info_t *out)
{
    pthread_mutex_lock(&w->lock);
    out->state = w->state;
    out->restarts = w->restarts;
    out->pid = (int)w->pid;
    snprintf(out->failure, sizeof out->failure, "%s", w->failure);
    pthread_mutex_unlock(&w->lock);
}

pb_worker_t *
pb_worker_start(const pb_worker_options_t *opt, char *err, size_t err_len)
{
    pb_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    w->zctx = opt->zmq_ctx;
    snprintf(w->name, sizeof w->name, "%s", opt->name);
    snprintf(w->plugin, sizeof w->plugin, "%s", opt->plugin_file);
    snprintf(w->run_dir, sizeof w->run_dir, "%s", opt->run_dir);
    w->call_timeout_ms =
        opt->call_timeout_ms > 0 ? opt->call_timeout_ms : 30000;
    w->open_timeout_ms =
        opt->open_timeout_ms > 0 ? opt->open_timeout_ms : 20000;
    w->on_count = opt->on_count;
    w->on_dropped = opt->on_dropped;
    w->on_auth_failed = opt->on_auth_failed;
    w->report_ctx = opt->report_ctx;
    w->state = "starting";
    pthread_mutex_init(&w->lock, NULL);
    w->conf = opt->conf;
    if (!w->conf || !w->conf->count) {
        snprintf(err, err_len, "no connector entry for the worker");
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    if (s_spawn(w, err, err_len) != 0) {
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    w->state = "running";
    pb_info("worker", "connector=%s worker pid=%d running", w->name,
            (int)w->pid);
    return w;
}

void
pb_worker_stop(pb_worker_t **wp)
{
    if (!wp || !*wp)
        return;
    pb_worker_t *w = *wp;
    *wp = NULL;
    s_check_idle(w);
    if (w->pid) {
        const void *data[] = {S_MSG_STOP};
        size_t lens[] = {4};
        int status = -1;
        if (s_send(w->sock, 1, data, lens) == 0)
            status = s_reap(w, S_STOP_WAIT_MS);
        if (status == -1) {
            pb_warn("worker",
                    "connector=%s worker pid=%d did not stop; "
                    "killing it",
                    w->name, (int)w->pid);
            s_kill(w);
        }
    }
    s_close_sock(w);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

/* ---------------------------------------------------------------- */
/* the child: plugboard worker                                       */
/* ---------------------------------------------------------------- */

typedef struct s_child {
    const char *name, *plugin, *endpoint;
    long parent;
    pb_config_t *cfg;
    pb_connector_conf_t *conf;
    pb_plugin_t *p;
    const plugboard_connector_t *desc;
    plugboard_host_t host;
    void *state;
    bool opened;
    bool opening; /* in open: emit is refused */
    pb_builder_t **staged;
    size_t staged_count, staged_cap;
    void *zctx, *sock;
    /* the next reply's report */
    char names[PB_CUSTOM_MAX][PB_CUSTOM_NAME_MAX + 1];
    int64_t deltas[PB_CUSTOM_MAX];
    size_t name_count;
    uint32_t dropped;
    uint8_t drop_causes;
    bool auth_refused;
    char auth_reason[PB_AUTH_REASON_MAX];
} child_t;

static int
s_child_stage(void *ctx, pb_builder_t *b)
{
    child_t *ch = ctx;
    if (ch->opening) {
        pb_warn("worker", "connector=%s emitted during open; event refused",
                ch->name);
        pb_builder_destroy(&b);
        return PLUGBOARD_E_INVALID;
    }
    if (ch->staged_count >= PLUGBOARD_EMIT_MAX) { /* as in the host */
        pb_builder_destroy(&b);
        return PLUGBOARD_E_FULL;
    }
    if (ch->staged_count == ch->staged_cap) {
        size_t cap = ch->staged_cap ? ch->staged_cap * 2 : 8;
        pb_builder_t **n = realloc(ch->staged, cap * sizeof *n);
        if (!n || cap > S_MAX_PARTS - S_HEAD_PARTS) {
            if (n)
                ch->staged = n;
            pb_builder_destroy(&b);
            return n ? PLUGBOARD_E_FULL : PLUGBOARD_E_NOMEM;
        }
        ch->staged = n;
        ch->staged_cap = cap;
    }
    ch->staged[ch->staged_count++] = b;
    return 0;
}

/* api->count in the child: checked as the host checks it (so the report
 * stays bounded), summed per name until the next reply. */
static void
s_child_count(void *ctx, const char *name, int64_t delta)
{
    child_t *ch = ctx;
    unsigned cause = 0;
    size_t i = 0;
    if (!pb_metrics_custom_name_ok(name))
        cause = PB_CUSTOM_DROP_BAD_NAME;
    else if (delta < 0)
        cause = PB_CUSTOM_DROP_NEGATIVE;
    while (!cause && i < ch->name_count && strcmp(ch->names[i], name) != 0)
        i++;
    if (!cause && i == ch->name_count) {
        if (i == PB_CUSTOM_MAX) {
            cause = PB_CUSTOM_DROP_TOO_MANY;
        } else {
            snprintf(ch->names[i], sizeof ch->names[i], "%s", name);
            ch->deltas[i] = 0;
            ch->name_count++;
        }
    }
    if (cause) {
        if (ch->dropped < UINT32_MAX)
            ch->dropped++;
        ch->drop_causes |= (uint8_t)cause;
        return;
    }
    ch->deltas[i] =
        delta > INT64_MAX - ch->deltas[i] ? INT64_MAX : ch->deltas[i] + delta;
}

static void
s_child_auth_failed(void *ctx, const char *reason)
{
    child_t *ch = ctx;
    ch->auth_refused = true;
    /* cut on a character boundary is the host's job: it cleans the text */
    snprintf(ch->auth_reason, sizeof ch->auth_reason, "%s",
             reason ? reason : "");
}

static void
s_put(uint8_t *buf, size_t *o, const void *data, size_t n)
{
    memcpy(buf + *o, data, n);
    *o += n;
}

/* The report part (see worker.h) into buf (S_REPORT_MAX bytes); resets
 * what it reported.  Returns its length. */
static size_t
s_child_report(child_t *ch, uint8_t *buf)
{
    size_t o = 0;
    uint8_t version = S_REPORT_VERSION, flag = ch->auth_refused;
    uint16_t rlen = ch->auth_refused ? (uint16_t)strlen(ch->auth_reason) : 0;
    uint8_t n = (uint8_t)ch->name_count;
    s_put(buf, &o, &version, 1);
    s_put(buf, &o, &ch->dropped, 4);
    s_put(buf, &o, &ch->drop_causes, 1);
    s_put(buf, &o, &flag, 1);
    s_put(buf, &o, &rlen, 2);
    s_put(buf, &o, ch->auth_reason, rlen);
    s_put(buf, &o, &n, 1);
    for (size_t i = 0; i < ch->name_count; i++) {
        uint8_t nl = (uint8_t)strlen(ch->names[i]);
        s_put(buf, &o, &nl, 1);
        s_put(buf, &o, ch->names[i], nl);
        s_put(buf, &o, &ch->deltas[i], 8);
    }
    ch->name_count = 0;
    ch->dropped = 0;
    ch->drop_causes = 0;
    ch->auth_refused = false;
    return o;
}

/* Send head parts, the report, then every staged event encoded, as one
 * message. */
static void
s_child_reply(child_t *ch, size_t n, const void *const *data, const size_t *len)
{
    size_t total = n + 1 + ch->staged_count;
    for (size_t i = 0; i < n; i++)
        zmq_send(ch->sock, data[i], len[i], i + 1 < total ? ZMQ_SNDMORE : 0);
    uint8_t report[S_REPORT_MAX];
    size_t rlen = s_child_report(ch, report);
    zmq_send(ch->sock, report, rlen, n + 1 < total ? ZMQ_SNDMORE : 0);
    n++;
    for (size_t i = 0; i < ch->staged_count; i++) {
        uint8_t *frame = NULL;
        size_t flen = 0;
        pb_builder_encode(ch->staged[i], &frame, &flen);
        zmq_send(ch->sock, frame ? frame : (uint8_t *)"", frame ? flen : 0,
                 n + i + 1 < total ? ZMQ_SNDMORE : 0);
        free(frame);
        pb_builder_destroy(&ch->staged[i]);
    }
    ch->staged_count = 0;
}

static void
s_child_deliver(child_t *ch, msg_t *m)
{
    plugboard_result_t res;
    memset(&res, 0, sizeof res);
    size_t hl = 0, fl = 0;
    const uint8_t *hdr = m->n == 3 ? s_data(m, 1, &hl) : NULL;
    const uint8_t *frame = m->n == 3 ? s_data(m, 2, &fl) : NULL;
    char why[200];
    int err;
    pb_envelope_t *env =
        hdr && hl == 12
            ? pb_envelope_decode(frame, fl, NULL, &err, why, sizeof why)
            : NULL;
    if (!env) {
        res.outcome = PLUGBOARD_REJECT;
        snprintf(res.reason, sizeof res.reason, "malformed event");
    } else {
        uint32_t attempt;
        memcpy(&attempt, hdr + 8, 4);
        pb_envelope_set_attempt(env, attempt);
        size_t before = ch->staged_count;
        ch->desc->deliver(ch->state, env, &res);
        /* what deliver emitted was caused by env (docs/events.md) */
        for (size_t i = before; i < ch->staged_count; i++)
            pb_builder_inherit(ch->staged[i], env);
        res.reason[sizeof res.reason - 1] = '\0';
        if (res.outcome > PLUGBOARD_HOLD) {
            snprintf(res.reason, sizeof res.reason,
                     "connector returned unknown outcome %d", (int)res.outcome);
            res.outcome = PLUGBOARD_RETRY;
        }
    }
    pb_envelope_destroy(&env);
    uint8_t r[9];
    r[0] = (uint8_t)res.outcome;
    int64_t after = res.retry_after_ms;
    memcpy(r + 1, &after, 8);
    const void *data[] = {S_MSG_RESULT, r, res.reason};
    size_t lens[] = {3, sizeof r, strlen(res.reason)};
    s_child_reply(ch, 3, data, lens);
}

static void
s_child_webhook(child_t *ch, msg_t *m)
{
    plugboard_response_t *resp = pb_response_new();
    char *parts[6] = {NULL};
    plugboard_header_t *headers = NULL;
    size_t hcount = 0;
    int64_t received = 0;
    bool ok = m->n == 7 && resp;
    for (size_t i = 0; ok && i < 6; i++) {
        size_t len;
        const uint8_t *d = s_data(m, i + 1, &len);
        if (i == 3 && len == 8)
            memcpy(&received, d, 8);
        ok = (parts[i] = malloc(len + 1)) != NULL;
        if (ok) {
            memcpy(parts[i], d, len);
            parts[i][len] = '\0';
        }
    }
    size_t hlen = ok ? zmq_msg_size(&m->parts[5]) : 0;
    for (size_t at = 0; ok && at < hlen; hcount++) {
        plugboard_header_t *n = realloc(headers, (hcount + 1) * sizeof *n);
        ok = n != NULL;
        if (!ok)
            break;
        headers = n;
        headers[hcount].name = parts[4] + at;
        at += strlen(parts[4] + at) + 1;
        headers[hcount].value = at < hlen ? parts[4] + at : "";
        at += strlen(headers[hcount].value) + 1;
    }
    int32_t status = 500;
    const char *body = "malformed request from the host";
    if (ok && ch->desc->webhook) {
        size_t blen = zmq_msg_size(&m->parts[6]);
        plugboard_request_t req = {.method = parts[0],
                                   .path = parts[1],
                                   .query = parts[2],
                                   .headers = headers,
                                   .header_count = hcount,
                                   .body = (const uint8_t *)parts[5],
                                   .body_len = blen,
                                   .received_ms = received};
        ch->desc->webhook(ch->state, &req, resp);
        status = pb_response_status(resp);
        body = pb_response_body(resp);
    }
    const void *data[] = {S_MSG_HOOK_REPLY, &status, body};
    size_t lens[] = {4, 4, strlen(body)};
    s_child_reply(ch, 3, data, lens);
    for (size_t i = 0; i < 6; i++)
        free(parts[i]);
    free(headers);
    pb_response_destroy(&resp);
}

/* Bind only this connector: the host has checked the routes. */
static const plugboard_connector_t *
s_child_describe(void *ctx, const pb_connector_conf_t *conn, char *err,
                 size_t err_len)
{
    child_t *ch = ctx;
    ch->p = pb_plugin_load(ch->plugin, NULL, 0, NULL, err, err_len);
    return ch->p ? pb_plugin_descriptor(ch->p) : NULL;
}

/* A string part, copied; NULL when out of memory. */
static char *
s_part_str(msg_t *m, size_t i)
{
    size_t len;
    const uint8_t *d = s_data(m, i, &len);
    return strndup((const char *)d, len);
}

/* One setting from its name part and its value part. */
static bool
s_conf_setting(msg_t *m, size_t i, pb_raw_setting_t *r)
{
    size_t len;
    const uint8_t *v = s_data(m, i + 1, &len);
    int32_t line;
    if (len < 5 || !(r->name = s_part_str(m, i)))
        return false;
    r->kind = (pb_raw_kind_t)v[0];
    memcpy(&line, v + 1, 4);
    r->line = line;
    size_t want = r->kind == PB_RAW_INT || r->kind == PB_RAW_FLOAT ? 13
                  : r->kind == PB_RAW_BOOL                         ? 6
                                                                   : 5;
    if (r->kind == PB_RAW_STRING)
        return (r->str = strndup((const char *)v + 5, len - 5)) != NULL;
    if (len != want)
        return false;
    if (r->kind == PB_RAW_INT)
        memcpy(&r->i, v + 5, 8);
    else if (r->kind == PB_RAW_FLOAT)
        memcpy(&r->f, v + 5, 8);
    else if (r->kind == PB_RAW_BOOL)
        r->b = v[5] != 0;
    return true;
}

/* The config the host runs, as far as this connector goes: its entry
 * from the CONF message m, without routes. */
static pb_config_t *
s_conf_parse(msg_t *m)
{
    if (m->n < S_CONF_HEAD || (m->n - S_CONF_HEAD) % 2 ||
        zmq_msg_size(&m->parts[5]) != 4)
        return NULL;
    pb_config_t *cfg = calloc(1, sizeof *cfg);
    pb_connector_conf_t *c = cfg ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        free(cfg);
        return NULL;
    }
    cfg->connectors = c;
    cfg->connector_count = 1;
    size_t count = (m->n - S_CONF_HEAD) / 2;
    int32_t line;
    memcpy(&line, zmq_msg_data(&m->parts[5]), 4);
    c->line = line;
    c->concurrency = 1;
    c->settings = calloc(count ? count : 1, sizeof *c->settings);
    bool ok = (cfg->path = s_part_str(m, 1)) &&
              (cfg->log_level = s_part_str(m, 2)) &&
              (c->name = s_part_str(m, 3)) && (c->plugin = s_part_str(m, 4)) &&
              c->settings;
    for (size_t k = 0; ok && k < count; k++) {
        ok = s_conf_setting(m, S_CONF_HEAD + 2 * k, &c->settings[k]);
        c->settings_count++;
    }
    if (!ok)
        pb_config_destroy(&cfg);
    return cfg;
}

/* Ask the host for the connector's entry and wait for it. */
static pb_config_t *
s_child_conf(child_t *ch, char *err, size_t err_len)
{
    const void *data[] = {S_MSG_WANT};
    size_t lens[] = {4};
    msg_t *m = malloc(sizeof *m);
    pb_config_t *cfg = NULL;
    int64_t until = pb_monotonic_ms() + S_CONF_WAIT_MS;
    if (!m || s_send(ch->sock, 1, data, lens) != 0) {
        free(m);
        snprintf(err, err_len, "cannot ask the host for the config");
        return NULL;
    }
    while (!cfg && pb_monotonic_ms() < until &&
           (ch->parent <= 0 || getppid() == (pid_t)ch->parent)) {
        zmq_pollitem_t item = {.socket = ch->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 200) <= 0 ||
            s_recv(ch->sock, m, ZMQ_DONTWAIT) != 0)
            continue;
        if (s_is(m, 0, S_MSG_CONF) && !(cfg = s_conf_parse(m)))
            snprintf(err, err_len, "malformed config from the host");
        bool conf = s_is(m, 0, S_MSG_CONF);
        s_msg_close(m);
        if (conf)
            break;
    }
    free(m);
    if (!cfg && !err[0])
        snprintf(err, err_len, "the host sent no config");
    return cfg;
}

static int
s_child_open(child_t *ch, char *err, size_t err_len)
{
    pb_diag_t diag;
    pb_diag_init(&diag);
    err[0] = '\0';
    ch->cfg = s_child_conf(ch, err, err_len);
    if (!ch->cfg)
        return PB_ECONFIG;
    pb_log_level_t level;
    if (pb_log_parse_level(ch->cfg->log_level, &level) == 0)
        pb_log_set_level(level);
    ch->conf = &ch->cfg->connectors[0];
    if (pb_config_bind(ch->cfg, s_child_describe, ch, &diag) != 0) {
        snprintf(err, err_len, "%s",
                 diag.count ? diag.messages[0] : "cannot bind the settings");
        pb_diag_release(&diag);
        return PB_ECONFIG;
    }
    pb_diag_release(&diag);
    ch->desc = pb_plugin_descriptor(ch->p);
    pb_host_init(&ch->host, ch->name, s_child_stage, s_child_count, ch);
    pb_host_on_auth_failed(&ch->host, s_child_auth_failed);
    char errbuf[PLUGBOARD_ERRBUF_MAX] = "";
    ch->opening = true;
    int rc = ch->desc->open(pb_host_api(), &ch->host, ch->conf->bound,
                            &ch->state, errbuf);
    ch->opening = false;
    if (rc != 0) {
        errbuf[sizeof errbuf - 1] = '\0';
        snprintf(err, err_len, "%s", errbuf[0] ? errbuf : "no reason given");
        return PB_EIO;
    }
    ch->opened = true;
    return 0;
}

static void
s_child_loop(child_t *ch)
{
    msg_t *m = malloc(sizeof *m);
    while (m) {
        if (ch->parent > 0 && getppid() != (pid_t)ch->parent)
            break; /* the host is gone */
        zmq_pollitem_t item = {.socket = ch->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 1000) <= 0 ||
            s_recv(ch->sock, m, ZMQ_DONTWAIT) != 0)
            continue;
        bool stop = s_is(m, 0, S_MSG_STOP);
        if (s_is(m, 0, S_MSG_DELIVER))
            s_child_deliver(ch, m);
        else if (s_is(m, 0, S_MSG_HOOK))
            s_child_webhook(ch, m);
        s_msg_close(m);
        if (stop)
            break;
    }
    free(m);
}

static const char s_worker_usage[] =
    "usage: plugboard worker --connector NAME --plugin PATH "
    "--endpoint ipc://PATH [--parent PID]\n"
    "Runs one connector in this process for the host that started it\n"
    "with isolation = \"process\", which hands it the connector's entry\n"
    "over the endpoint; not meant to be run by hand.\n";

int
pb_worker_main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"connector", required_argument, NULL, 'n'},
        {"plugin", required_argument, NULL, 'p'},
        {"endpoint", required_argument, NULL, 'e'},
        {"parent", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    child_t ch = {0};
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (opt) {
        case 'n':
            ch.name = optarg;
            break;
        case 'p':
            ch.plugin = optarg;
            break;
        case 'e':
            ch.endpoint = optarg;
            break;
        case 'P':
            ch.parent = strtol(optarg, NULL, 10);
            break;
        case 'h':
            fputs(s_worker_usage, stdout);
            return 0;
        default:
            fputs(s_worker_usage, stderr);
            return 2;
        }
    }
    if (!ch.name || !ch.plugin || !ch.endpoint) {
        fputs(s_worker_usage, stderr);
        return 2;
    }
    /* die with the host, even when it is killed */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (ch.parent > 0 && getppid() != (pid_t)ch.parent)
        return 1;
    ch.zctx = zmq_ctx_new();
    ch.sock = ch.zctx ? zmq_socket(ch.zctx, ZMQ_PAIR) : NULL;
    int zero = 0;
    if (!ch.sock || zmq_setsockopt(ch.sock, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_connect(ch.sock, ch.endpoint) != 0) {
        fprintf(stderr, "error: cannot connect to '%s': %s\n", ch.endpoint,
                zmq_strerror(errno));
        return 1;
    }
    char err[PLUGBOARD_ERRBUF_MAX + 256];
    int rc = s_child_open(&ch, err, sizeof err);
    if (rc == 0) {
        const char *v = ch.desc->version ? ch.desc->version : "";
        const void *data[] = {S_MSG_HELLO, v};
        size_t lens[] = {4, strlen(v)};
        s_send(ch.sock, 2, data, lens);
        s_child_loop(&ch);
    } else {
        const void *data[] = {S_MSG_FAIL, err};
        size_t lens[] = {4, strlen(err)};
        s_send(ch.sock, 2, data, lens);
    }
    if (ch.opened)
        ch.desc->close(ch.state);
    free(ch.staged);
    /* a FAIL just sent must still reach the host: a bounded linger */
    int linger = 1000;
    zmq_setsockopt(ch.sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(ch.sock);
    zmq_ctx_term(ch.zctx);
    pb_plugin_destroy(&ch.p);
    pb_config_destroy(&ch.cfg);
    return rc == 0 ? 0 : 1;
}
