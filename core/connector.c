/*
 * connector.c - the connector actor: a thread, a DEALER socket, the plugin
 * instance's state, the webhooks waiting for their events to be
 * acknowledged, and, with concurrency above 1, the pool of delivery
 * threads that run deliver() while the actor keeps the socket.
 */
#include "connector.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "envelope.h"
#include "error.h"
#include "health.h"
#include "hostapi.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "worker.h"

#define S_MAX_STAGED PLUGBOARD_EMIT_MAX /* events one callback may emit */

/* One delivery handed to the pool: copied out of the router's message,
 * run on a pool thread, handed back to the actor for its RESULT. */
typedef struct s_job {
    struct s_job *next;
    uint8_t hdr[12];
    uint8_t *frame;
    size_t flen;
    plugboard_result_t res;
    pb_builder_t **staged; /* events deliver() emitted */
    size_t staged_count, staged_cap;
} job_t;

typedef struct s_pool_thread {
    pthread_t thread;
    struct pb_connector *c;
    void *state;     /* the state its deliver() gets */
    bool own_state;  /* opened for this thread alone: closed with it */
    bool started;
} pool_thread_t;

/* Events a pull source flushed, waiting for the actor to send them. */
typedef struct s_batch {
    struct s_batch *next;
    uint64_t ticket;
    pb_builder_t **staged;
    size_t count;
} batch_t;

#define S_RUN_TOKEN (1ull << 63) /* EMIT tokens of a pull source's batches */
#define S_RUN_REFUSED_MAX 1024   /* refused batches remembered */

typedef struct s_parked {
    uint64_t token;
    pb_webhook_t *w;
    int64_t since_ms;
} parked_t;

struct pb_connector {
    char name[64];
    char rid[80];               /* routing id: name, or name#generation */
    atomic_bool retired;        /* the router said BYE: nothing more comes */
    pb_worker_options_t wopt;   /* isolation = "process" (worker.h) */
    char run_dir[4096];         /* wopt's */
    pb_frames_t wconf;          /* wopt's: the entry a worker binds */
    bool isolated;
    pb_worker_t *worker;        /* the actor thread's; set before open
                                   returns, read by pb_connector_info */
    bool counted_down;          /* its worker failed: no longer counted
                                   as running in the metrics */
    pb_frames_t raw;            /* events a worker emitted, encoded */
    const plugboard_connector_t *desc;
    const plugboard_settings_t *settings;
    void *zctx;
    char endpoint[256];
    int64_t ack_timeout_ms;
    pb_mconn_t *mc;             /* metrics; NULL for none */
    pb_auth_t auth;             /* refused credentials (thread-safe) */

    pthread_t thread;
    pthread_t self;             /* the actor thread, for emit checks */
    int wake_fd;
    atomic_bool stop;

    /* start-up handshake */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open_state;             /* 0 running open, 1 ok, -1 failed */
    char open_err[PLUGBOARD_ERRBUF_MAX + 64];

    /* webhook inbox, under lock */
    pb_webhook_t **inbox;
    size_t inbox_count, inbox_cap;
    bool closed;                /* no more submissions */

    /* the delivery pool (concurrency > 1), under pool_lock */
    int concurrency;
    pool_thread_t *pool;
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    job_t *queue_head, *queue_tail;
    job_t *done_head, *done_tail;
    bool pool_stop;
    atomic_int jobs_out;        /* handed to the pool, result not sent */

    /* a pull source's run thread (desc->run); under run_lock unless
     * noted */
    bool run_started;           /* actor thread */
    pthread_t run_thread;
    atomic_bool run_alive;      /* run has not returned yet */
    atomic_bool run_stop;       /* run_wait answers false */
    pthread_mutex_t run_lock;
    pthread_cond_t run_cond;
    pb_builder_t **run_staged;  /* run thread only: emitted, not flushed */
    size_t run_staged_count, run_staged_cap;
    uint64_t run_next_ticket;   /* run thread only */
    batch_t *out_head, *out_tail; /* flushed, not yet sent */
    uint64_t *pending;          /* flushed, not yet answered */
    size_t pending_count, pending_cap;
    struct {
        uint64_t ticket;
        int status;
    } refused[S_RUN_REFUSED_MAX]; /* a ring of the latest refusals */
    size_t refused_next;
    uint64_t forgotten_through; /* a refusal of a ticket up to here may
                                   have left the ring: those are unknown */
    atomic_bool run_ended;      /* run returned before it was asked to */

    /* actor-thread only */
    void *sock;
    void *state;
    plugboard_host_t host;
    bool in_callback;
    bool opening;               /* in open: emit is refused */
    pb_builder_t **staged;
    size_t staged_count, staged_cap;
    parked_t *parked;
    size_t parked_count, parked_cap;
    uint64_t next_token;
};

/* ---------------------------------------------------------------- */
/* staging emitted events                                            */
/* ---------------------------------------------------------------- */

static void s_run_answered(pb_connector_t *c, uint64_t ticket, int status);

/* The delivery a pool thread is running, so emit() knows where to stage. */
static __thread job_t *s_current_job;
static __thread const pb_connector_t *s_current_owner;
/* The connector whose run() this thread is. */
static __thread const pb_connector_t *s_current_run;

static int
s_push_staged(pb_builder_t ***list, size_t *count, size_t *cap,
              pb_builder_t *b)
{
    if (*count >= S_MAX_STAGED) {
        pb_builder_destroy(&b);
        return PLUGBOARD_E_FULL;
    }
    if (*count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        pb_builder_t **n = realloc(*list, ncap * sizeof *n);
        if (!n) {
            pb_builder_destroy(&b);
            return PLUGBOARD_E_NOMEM;
        }
        *list = n;
        *cap = ncap;
    }
    (*list)[(*count)++] = b;
    return 0;
}

static int
s_stage(void *ctx, pb_builder_t *b)
{
    pb_connector_t *c = ctx;
    if (s_current_job && s_current_owner == c)
        return s_push_staged(&s_current_job->staged,
                             &s_current_job->staged_count,
                             &s_current_job->staged_cap, b);
    if (s_current_run == c)
        return s_push_staged(&c->run_staged, &c->run_staged_count,
                             &c->run_staged_cap, b);
    if (c->opening && pthread_equal(pthread_self(), c->self)) {
        pb_warn("connector", "connector=%s emitted during open; event "
                "refused", c->name);
        pb_builder_destroy(&b);
        return PLUGBOARD_E_INVALID;
    }
    if (!pthread_equal(pthread_self(), c->self) || !c->in_callback) {
        pb_warn("connector", "connector=%s emitted outside a callback; "
                "event refused", c->name);
        pb_builder_destroy(&b);
        return PLUGBOARD_E_INVALID;
    }
    return s_push_staged(&c->staged, &c->staged_count, &c->staged_cap, b);
}

static void
s_destroy_builders(pb_builder_t **list, size_t *count)
{
    for (size_t i = 0; i < *count; i++)
        pb_builder_destroy(&list[i]);
    *count = 0;
}

static void
s_unstage(pb_connector_t *c)
{
    s_destroy_builders(c->staged, &c->staged_count);
    pb_frames_release(&c->raw);
}

/* api->count, from any thread a callback runs on (or the worker's
 * report, on the actor thread). */
static void
s_count(void *ctx, const char *name, int64_t delta)
{
    pb_connector_t *c = ctx;
    pb_mconn_custom(c->mc, name, delta);
}

static void
s_count_dropped(void *ctx, uint64_t n, unsigned causes)
{
    pb_connector_t *c = ctx;
    pb_mconn_custom_dropped(c->mc, n, causes);
}

/* api->auth_failed.  The reason is the plugin's free text: it goes to
 * status and owner notices, never into the log. */
static void
s_auth_failed(void *ctx, const char *reason)
{
    pb_connector_t *c = ctx;
    if (pb_auth_refused(&c->auth, reason, pb_now_ms()))
        pb_warn("connector",
                "connector=%s credentials refused by its vendor; `plugboard "
                "ctl status` shows why, route owners are told",
                c->name);
}

/* Send staged (count builders) and c->raw (a worker's, already encoded)
 * as one EMIT.  Returns 0 or a negative code; both lists are emptied
 * either way. */
static int
s_send_events(pb_connector_t *c, uint64_t token, pb_builder_t **staged,
              size_t *count)
{
    int rc = 0;
    if (zmq_send(c->sock, PB_MSG_EMIT, 4, ZMQ_SNDMORE) < 0 ||
        zmq_send(c->sock, &token, 8, ZMQ_SNDMORE) < 0) {
        rc = PB_EIO;
        goto out;
    }
    size_t total = *count + c->raw.count;
    for (size_t i = 0; i < total; i++) {
        uint8_t *frame = NULL;
        size_t len = 0;
        if (i >= *count) { /* a worker's, already encoded */
            size_t k = i - *count;
            int flags = i + 1 < total ? ZMQ_SNDMORE : 0;
            if (zmq_send(c->sock, c->raw.data[k], c->raw.len[k], flags) < 0) {
                rc = PB_EIO;
                goto out;
            }
            continue;
        }
        rc = pb_builder_encode(staged[i], &frame, &len);
        if (rc != 0) {
            /* the message must still be terminated: send an empty frame,
             * which the router rejects, so nothing of it is stored */
            zmq_send(c->sock, "", 0, 0);
            goto out;
        }
        int flags = i + 1 < total ? ZMQ_SNDMORE : 0;
        int sent = zmq_send(c->sock, frame, len, flags);
        free(frame);
        if (sent < 0) {
            rc = PB_EIO;
            goto out;
        }
    }
out:
    s_destroy_builders(staged, count);
    pb_frames_release(&c->raw);
    return rc;
}

/* The events the actor's own callback staged, as one EMIT. */
static int
s_send_staged(pb_connector_t *c, uint64_t token)
{
    return s_send_events(c, token, c->staged, &c->staged_count);
}

/* ---------------------------------------------------------------- */
/* webhooks                                                          */
/* ---------------------------------------------------------------- */

static void
s_handle_webhook(pb_connector_t *c, pb_webhook_t *w)
{
    plugboard_response_t *resp = pb_webhook_response(w);
    int64_t t0 = pb_metrics_now_ns();
    c->in_callback = true;
    if (c->worker)
        pb_worker_webhook(c->worker, pb_webhook_request(w), resp, &c->raw);
    else
        c->desc->webhook(c->state, pb_webhook_request(w), resp);
    c->in_callback = false;
    pb_mconn_busy(c->mc, pb_metrics_now_ns() - t0);
    int status = pb_response_status(resp);
    pb_mconn_webhook(c->mc, status);
    if (c->staged_count + c->raw.count == 0 || status < 200 || status > 299) {
        s_unstage(c);
        pb_webhook_complete(w, 0, NULL);
        return;
    }
    uint64_t token = ++c->next_token;
    int rc = s_send_staged(c, token);
    if (rc != 0) {
        pb_error("connector", "connector=%s cannot hand events to the "
                 "router: %s", c->name, pb_strerror(rc));
        pb_webhook_complete(w, rc == PB_EIO ? 503 : 500,
                            "events could not be accepted\n");
        return;
    }
    if (c->parked_count == c->parked_cap) {
        size_t cap = c->parked_cap ? c->parked_cap * 2 : 16;
        parked_t *n = realloc(c->parked, cap * sizeof *n);
        if (!n)
            abort();
        c->parked = n;
        c->parked_cap = cap;
    }
    c->parked[c->parked_count++] =
        (parked_t){.token = token, .w = w, .since_ms = pb_monotonic_ms()};
}

static void
s_unpark(pb_connector_t *c, size_t i, int status, const char *body)
{
    pb_webhook_t *w = c->parked[i].w;
    c->parked[i] = c->parked[--c->parked_count];
    pb_webhook_complete(w, status, body);
}

static void
s_handle_ack(pb_connector_t *c, const uint8_t *p, size_t len)
{
    if (len != PB_ACK_LEN)
        return;
    uint64_t token;
    int32_t status;
    memcpy(&token, p, 8);
    memcpy(&status, p + 8, 4);
    if (token & S_RUN_TOKEN) {
        s_run_answered(c, token & ~S_RUN_TOKEN, status);
        return;
    }
    if (token == 0) {
        if (status < 0)
            pb_error("connector", "connector=%s events emitted during "
                     "delivery were not accepted: %s", c->name,
                     pb_strerror(status));
        return;
    }
    for (size_t i = 0; i < c->parked_count; i++) {
        if (c->parked[i].token != token)
            continue;
        if (status < 0) {
            pb_error("connector", "connector=%s webhook events not "
                     "accepted: %s", c->name, pb_strerror(status));
            s_unpark(c, i, 503, "events could not be stored; retry later\n");
        } else {
            /* tell the sender what became of its events */
            uint32_t accepted, duplicates, unmapped;
            memcpy(&accepted, p + 12, 4);
            memcpy(&duplicates, p + 16, 4);
            memcpy(&unmapped, p + 20, 4);
            int st = pb_response_status(pb_webhook_response(c->parked[i].w));
            if (accepted == 0 && duplicates == 0) {
                /* nothing routed, only unmapped items kept: the
                 * connector's own answer says why */
                s_unpark(c, i, 0, NULL); /* 0: keep its status and body */
                return;
            }
            char body[128];
            if (unmapped)
                snprintf(body, sizeof body,
                         "{\"received\":true,\"accepted\":%u,"
                         "\"duplicates\":%u,\"unmapped\":%u}\n",
                         accepted, duplicates, unmapped);
            else
                snprintf(body, sizeof body,
                         "{\"received\":true,\"accepted\":%u,"
                         "\"duplicates\":%u}\n",
                         accepted, duplicates);
            s_unpark(c, i, st, body);
        }
        return;
    }
}

static void
s_expire_parked(pb_connector_t *c, int64_t now)
{
    for (size_t i = 0; i < c->parked_count;) {
        if (now - c->parked[i].since_ms >= c->ack_timeout_ms) {
            pb_error("connector", "connector=%s no acknowledgement within "
                     "%lld ms; answering 503", c->name,
                     (long long)c->ack_timeout_ms);
            s_unpark(c, i, 503, "events could not be stored; retry later\n");
        } else {
            i++;
        }
    }
}

static void
s_drain_inbox(pb_connector_t *c)
{
    for (;;) {
        pthread_mutex_lock(&c->lock);
        pb_webhook_t *w = NULL;
        if (c->inbox_count) {
            w = c->inbox[0];
            memmove(c->inbox, c->inbox + 1,
                    (c->inbox_count - 1) * sizeof *c->inbox);
            c->inbox_count--;
        }
        pthread_mutex_unlock(&c->lock);
        if (!w)
            return;
        s_handle_webhook(c, w);
    }
}

/* ---------------------------------------------------------------- */
/* deliveries                                                        */
/* ---------------------------------------------------------------- */

static void
s_send_result(pb_connector_t *c, const uint8_t *hdr,
              const plugboard_result_t *res)
{
    uint8_t buf[21];
    memcpy(buf, hdr, 12);
    buf[12] = (uint8_t)res->outcome;
    int64_t after = res->retry_after_ms;
    memcpy(buf + 13, &after, 8);
    size_t rlen = strnlen(res->reason, sizeof res->reason);
    if (zmq_send(c->sock, PB_MSG_RESULT, 3, ZMQ_SNDMORE) < 0 ||
        zmq_send(c->sock, buf, sizeof buf, ZMQ_SNDMORE) < 0 ||
        zmq_send(c->sock, res->reason, rlen, 0) < 0)
        pb_error("connector", "connector=%s cannot report a result: %s",
                 c->name, zmq_strerror(errno));
}

/* Events list[from..to) were emitted while delivering cause: they name
 * it as their causation and share its correlation. */
static void
s_inherit(pb_builder_t **list, size_t from, size_t to,
          const pb_envelope_t *cause)
{
    for (size_t i = from; i < to; i++)
        pb_builder_inherit(list[i], cause);
}

/* Decode frame and hand it to the plugin (or its worker process) with
 * state; fills res.  Runs on the actor thread or on a pool thread. */
static void
s_run_delivery(pb_connector_t *c, void *state, const uint8_t *hdr,
               const uint8_t *frame, size_t flen, plugboard_result_t *res)
{
    memset(res, 0, sizeof *res);
    char why[200];
    int err = 0;
    pb_envelope_t *env = pb_envelope_decode(frame, flen, NULL, &err, why,
                                            sizeof why);
    if (!env) {
        res->outcome = PLUGBOARD_REJECT;
        snprintf(res->reason, sizeof res->reason, "malformed event: %s", why);
        return;
    }
    if (!c->desc->deliver) {
        res->outcome = PLUGBOARD_REJECT;
        snprintf(res->reason, sizeof res->reason,
                 "connector '%s' does not deliver events", c->name);
        pb_envelope_destroy(&env);
        return;
    }
    uint32_t attempt;
    memcpy(&attempt, hdr + 8, 4);
    pb_envelope_set_attempt(env, attempt);
    uint64_t mark = pb_auth_mark(&c->auth);
    int64_t t0 = pb_metrics_now_ns();
    if (c->worker) {
        /* the worker marks what deliver emitted (s_child_deliver) */
        pb_worker_deliver(c->worker, hdr, frame, flen, res, &c->raw);
    } else {
        job_t *j = s_current_job;
        size_t before = j ? j->staged_count : c->staged_count;
        c->desc->deliver(state, env, res);
        s_inherit(j ? j->staged : c->staged, before,
                  j ? j->staged_count : c->staged_count, env);
    }
    pb_mconn_busy(c->mc, pb_metrics_now_ns() - t0);
    if (res->outcome > PLUGBOARD_HOLD) {
        snprintf(res->reason, sizeof res->reason,
                 "connector returned unknown outcome %d", (int)res->outcome);
        res->outcome = PLUGBOARD_RETRY;
    }
    /* a delivery that began after the last refusal went through */
    if (res->outcome == PLUGBOARD_OK && pb_auth_succeeded(&c->auth, mark))
        pb_info("connector", "connector=%s credentials accepted again",
                c->name);
    res->reason[sizeof res->reason - 1] = '\0';
    pb_envelope_destroy(&env);
}

static void
s_enqueue_job(pb_connector_t *c, const uint8_t *hdr, const uint8_t *frame,
              size_t flen)
{
    job_t *j = calloc(1, sizeof *j);
    if (!j || !(j->frame = malloc(flen ? flen : 1))) {
        /* the router's deadline turns this into a retry */
        pb_error("connector", "connector=%s out of memory queueing a "
                 "delivery", c->name);
        free(j);
        return;
    }
    memcpy(j->hdr, hdr, sizeof j->hdr);
    memcpy(j->frame, frame, flen);
    j->flen = flen;
    atomic_fetch_add(&c->jobs_out, 1);
    pthread_mutex_lock(&c->pool_lock);
    if (c->queue_tail)
        c->queue_tail->next = j;
    else
        c->queue_head = j;
    c->queue_tail = j;
    pthread_cond_signal(&c->pool_cond);
    pthread_mutex_unlock(&c->pool_lock);
}

static void
s_handle_delivery(pb_connector_t *c, const uint8_t *hdr, size_t hlen,
                  const uint8_t *frame, size_t flen)
{
    if (hlen != 12)
        return;
    pb_mconn_delivery_received(c->mc);
    if (c->pool) {
        s_enqueue_job(c, hdr, frame, flen);
        return;
    }
    plugboard_result_t res;
    c->in_callback = true;
    s_run_delivery(c, c->state, hdr, frame, flen, &res);
    c->in_callback = false;
    if (c->staged_count || c->raw.count)
        s_send_staged(c, 0);
    s_send_result(c, hdr, &res);
}

/* ---------------------------------------------------------------- */
/* the delivery pool                                                 */
/* ---------------------------------------------------------------- */

static void *
s_pool_thread(void *arg)
{
    pool_thread_t *pt = arg;
    pb_connector_t *c = pt->c;
    s_current_owner = c;
    pthread_mutex_lock(&c->pool_lock);
    for (;;) {
        while (!c->queue_head && !c->pool_stop)
            pthread_cond_wait(&c->pool_cond, &c->pool_lock);
        job_t *j = c->queue_head;
        if (!j) /* stopping, and everything queued has been run */
            break;
        c->queue_head = j->next;
        if (!c->queue_head)
            c->queue_tail = NULL;
        pthread_mutex_unlock(&c->pool_lock);

        s_current_job = j;
        s_run_delivery(c, pt->state, j->hdr, j->frame, j->flen, &j->res);
        s_current_job = NULL;

        pthread_mutex_lock(&c->pool_lock);
        j->next = NULL;
        if (c->done_tail)
            c->done_tail->next = j;
        else
            c->done_head = j;
        c->done_tail = j;
        uint64_t one = 1;
        ssize_t w = write(c->wake_fd, &one, sizeof one);
        (void)w;
    }
    pthread_mutex_unlock(&c->pool_lock);
    return NULL;
}

static void
s_free_job(job_t *j)
{
    s_destroy_builders(j->staged, &j->staged_count);
    free(j->staged);
    free(j->frame);
    free(j);
}

/* Actor thread: send the results (and emitted events) of finished jobs. */
static void
s_pool_results(pb_connector_t *c)
{
    if (!c->pool)
        return;
    pthread_mutex_lock(&c->pool_lock);
    job_t *j = c->done_head;
    c->done_head = c->done_tail = NULL;
    pthread_mutex_unlock(&c->pool_lock);
    while (j) {
        job_t *next = j->next;
        if (j->staged_count)
            s_send_events(c, 0, j->staged, &j->staged_count);
        s_send_result(c, j->hdr, &j->res);
        s_free_job(j);
        atomic_fetch_sub(&c->jobs_out, 1);
        j = next;
    }
}

/* Actor thread, in s_open: open one state per pool thread unless deliver
 * is thread-safe, then start the threads.  0, or -1 with open_err set. */
static int
s_pool_start(pb_connector_t *c)
{
    bool shared = (c->desc->flags & PLUGBOARD_DELIVER_THREAD_SAFE) != 0;
    c->pool = calloc((size_t)c->concurrency, sizeof *c->pool);
    if (!c->pool) {
        snprintf(c->open_err, sizeof c->open_err, "out of memory");
        return -1;
    }
    for (int i = 0; i < c->concurrency; i++) {
        pool_thread_t *pt = &c->pool[i];
        pt->c = c;
        pt->state = c->state;
        /* the actor's own state serves webhooks; a sink without them
         * lends it to the first thread */
        if (shared || (i == 0 && !c->desc->webhook))
            continue;
        char errbuf[PLUGBOARD_ERRBUF_MAX] = "";
        c->opening = true;
        int rc = c->desc->open(pb_host_api(), &c->host, c->settings,
                               &pt->state, errbuf);
        c->opening = false;
        s_unstage(c);
        if (rc != 0) {
            errbuf[sizeof errbuf - 1] = '\0';
            snprintf(c->open_err, sizeof c->open_err,
                     "open failed for delivery thread %d of %d: %s", i + 1,
                     c->concurrency, errbuf[0] ? errbuf : "no reason given");
            return -1;
        }
        pt->own_state = true;
    }
    for (int i = 0; i < c->concurrency; i++) {
        if (pthread_create(&c->pool[i].thread, NULL, s_pool_thread,
                           &c->pool[i]) != 0) {
            snprintf(c->open_err, sizeof c->open_err,
                     "cannot start delivery thread %d of %d: %s", i + 1,
                     c->concurrency, strerror(errno));
            return -1;
        }
        c->pool[i].started = true;
    }
    return 0;
}

/* Actor thread: let the threads run what is queued, join them, send
 * their last results, close the states opened for them. */
static void
s_pool_stop(pb_connector_t *c)
{
    if (!c->pool)
        return;
    pthread_mutex_lock(&c->pool_lock);
    c->pool_stop = true;
    pthread_cond_broadcast(&c->pool_cond);
    pthread_mutex_unlock(&c->pool_lock);
    for (int i = 0; i < c->concurrency; i++)
        if (c->pool[i].started)
            pthread_join(c->pool[i].thread, NULL);
    if (c->sock)
        s_pool_results(c);
    for (int i = 0; i < c->concurrency; i++)
        if (c->pool[i].own_state)
            c->desc->close(c->pool[i].state);
    free(c->pool);
    c->pool = NULL;
}

static void
s_handle_message(pb_connector_t *c)
{
    zmq_msg_t parts[4];
    size_t n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 4)
            parts[n++] = m;
        else
            zmq_msg_close(&m);
    }
    if (n >= 2) {
        const char *cmd = zmq_msg_data(&parts[0]);
        size_t clen = zmq_msg_size(&parts[0]);
        if (clen == 3 && memcmp(cmd, PB_MSG_ACK, 3) == 0)
            s_handle_ack(c, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]));
        else if (clen == 3 && memcmp(cmd, PB_MSG_BYE, 3) == 0)
            atomic_store(&c->retired, true);
        else if (clen == 3 && memcmp(cmd, PB_MSG_DELIVER, 3) == 0 && n == 3)
            s_handle_delivery(c, zmq_msg_data(&parts[1]),
                              zmq_msg_size(&parts[1]),
                              zmq_msg_data(&parts[2]),
                              zmq_msg_size(&parts[2]));
    }
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

/* ---------------------------------------------------------------- */
/* pull sources: run, flush, durable, run_wait                       */
/* ---------------------------------------------------------------- */

/* Under run_lock: forget ticket as pending; true when it was. */
static bool
s_unpend(pb_connector_t *c, uint64_t ticket)
{
    for (size_t i = 0; i < c->pending_count; i++)
        if (c->pending[i] == ticket) {
            c->pending[i] = c->pending[--c->pending_count];
            return true;
        }
    return false;
}

/* The router's answer to batch ticket (or the actor's, when it could not
 * be sent): wake run. */
static void
s_run_answered(pb_connector_t *c, uint64_t ticket, int status)
{
    int why = status; /* the host's own code, for its log */
    if (status < 0)
        status = PLUGBOARD_E_REFUSED;
    pthread_mutex_lock(&c->run_lock);
    if (s_unpend(c, ticket) && status < 0) {
        uint64_t old = c->refused[c->refused_next].ticket;
        if (old > c->forgotten_through)
            c->forgotten_through = old;
        c->refused[c->refused_next].ticket = ticket;
        c->refused[c->refused_next].status = status;
        c->refused_next = (c->refused_next + 1) % S_RUN_REFUSED_MAX;
    }
    pthread_cond_broadcast(&c->run_cond);
    pthread_mutex_unlock(&c->run_lock);
    if (why < 0)
        pb_error("connector", "connector=%s batch=%llu not accepted: %s",
                 c->name, (unsigned long long)ticket, pb_strerror(why));
}

/* Actor thread: send what run flushed, in order. */
static void
s_send_batches(pb_connector_t *c)
{
    if (!c->run_started)
        return;
    pthread_mutex_lock(&c->run_lock);
    batch_t *b = c->out_head;
    c->out_head = c->out_tail = NULL;
    pthread_mutex_unlock(&c->run_lock);
    while (b) {
        batch_t *next = b->next;
        int rc = s_send_events(c, S_RUN_TOKEN | b->ticket, b->staged,
                               &b->count);
        if (rc != 0)
            s_run_answered(c, b->ticket, rc);
        free(b->staged);
        free(b);
        b = next;
    }
}

static int
s_run_flush(void *ctx, uint64_t *ticket)
{
    pb_connector_t *c = ctx;
    *ticket = 0;
    if (s_current_run != c)
        return PLUGBOARD_E_INVALID;
    if (atomic_load(&c->run_stop)) {
        s_destroy_builders(c->run_staged, &c->run_staged_count);
        return PLUGBOARD_E_STOPPING;
    }
    if (c->run_staged_count == 0)
        return 0;
    batch_t *b = calloc(1, sizeof *b);
    pthread_mutex_lock(&c->run_lock);
    if (b && c->pending_count == c->pending_cap) {
        size_t cap = c->pending_cap ? c->pending_cap * 2 : 16;
        uint64_t *n = realloc(c->pending, cap * sizeof *n);
        if (n) {
            c->pending = n;
            c->pending_cap = cap;
        }
    }
    if (!b || c->pending_count == c->pending_cap) {
        pthread_mutex_unlock(&c->run_lock);
        free(b);
        s_destroy_builders(c->run_staged, &c->run_staged_count);
        return PLUGBOARD_E_NOMEM;
    }
    b->ticket = ++c->run_next_ticket;
    b->staged = c->run_staged;
    b->count = c->run_staged_count;
    c->run_staged = NULL;
    c->run_staged_count = c->run_staged_cap = 0;
    c->pending[c->pending_count++] = b->ticket;
    if (c->out_tail)
        c->out_tail->next = b;
    else
        c->out_head = b;
    c->out_tail = b;
    pthread_mutex_unlock(&c->run_lock);
    *ticket = b->ticket;
    uint64_t one = 1;
    ssize_t w = write(c->wake_fd, &one, sizeof one);
    (void)w;
    return 0;
}

static int
s_run_durable(void *ctx, uint64_t ticket)
{
    pb_connector_t *c = ctx;
    if (s_current_run != c || ticket == 0 || ticket > c->run_next_ticket)
        return PLUGBOARD_E_INVALID;
    int answer = 1;
    pthread_mutex_lock(&c->run_lock);
    for (size_t i = 0; i < c->pending_count && answer == 1; i++)
        if (c->pending[i] == ticket)
            answer = 0;
    for (size_t i = 0; i < S_RUN_REFUSED_MAX && answer == 1; i++)
        if (c->refused[i].ticket == ticket)
            answer = c->refused[i].status;
    /* settled so long ago that a refusal of it may have been forgotten:
     * never claim it durable */
    if (answer == 1 && ticket <= c->forgotten_through)
        answer = PLUGBOARD_E_UNKNOWN;
    pthread_mutex_unlock(&c->run_lock);
    return answer;
}

static bool
s_run_wait(void *ctx, int64_t timeout_ms)
{
    pb_connector_t *c = ctx;
    if (s_current_run != c || atomic_load(&c->run_stop))
        return false;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (timeout_ms > 0 ? timeout_ms : 0) * 1000000;
    until.tv_sec += (time_t)(ns / 1000000000);
    until.tv_nsec = (long)(ns % 1000000000);
    /* the whole timeout, unless the host asks run to stop: a poller's
     * interval is its own to keep */
    pthread_mutex_lock(&c->run_lock);
    while (!atomic_load(&c->run_stop) && timeout_ms > 0 &&
           pthread_cond_timedwait(&c->run_cond, &c->run_lock, &until) == 0)
        ;
    pthread_mutex_unlock(&c->run_lock);
    return !atomic_load(&c->run_stop);
}

static const pb_run_fns_t s_run_fns = {
    .flush = s_run_flush,
    .durable = s_run_durable,
    .wait = s_run_wait,
};

static void *
s_run_main(void *arg)
{
    pb_connector_t *c = arg;
    s_current_run = c;
    c->desc->run(c->state);
    if (!atomic_load(&c->run_stop)) {
        atomic_store(&c->run_ended, true);
        pb_error("connector", "connector=%s run returned before the host "
                 "asked it to; it polls no more until a reload or restart",
                 c->name);
    }
    s_destroy_builders(c->run_staged, &c->run_staged_count);
    free(c->run_staged);
    c->run_staged = NULL;
    c->run_staged_cap = 0;
    atomic_store(&c->run_alive, false);
    uint64_t one = 1;
    ssize_t w = write(c->wake_fd, &one, sizeof one);
    (void)w;
    return NULL;
}

/* Actor thread, in s_open: start run.  0, or -1 with open_err set. */
static int
s_run_start(pb_connector_t *c)
{
    atomic_store(&c->run_alive, true);
    if (pthread_create(&c->run_thread, NULL, s_run_main, c) != 0) {
        atomic_store(&c->run_alive, false);
        snprintf(c->open_err, sizeof c->open_err,
                 "cannot start the run thread: %s", strerror(errno));
        return -1;
    }
    c->run_started = true;
    return 0;
}

/* Ask run to return (run_wait answers false from now on). */
static void
s_run_ask_stop(pb_connector_t *c)
{
    if (!c->run_started || atomic_load(&c->run_stop))
        return;
    pthread_mutex_lock(&c->run_lock);
    atomic_store(&c->run_stop, true);
    pthread_cond_broadcast(&c->run_cond);
    pthread_mutex_unlock(&c->run_lock);
}

/* Actor thread, run has returned: join it and free what it left. */
static void
s_run_join(pb_connector_t *c)
{
    if (!c->run_started)
        return;
    pthread_join(c->run_thread, NULL);
    c->run_started = false;
    pthread_mutex_lock(&c->run_lock);
    batch_t *b = c->out_head;
    c->out_head = c->out_tail = NULL;
    pthread_mutex_unlock(&c->run_lock);
    while (b) {
        batch_t *next = b->next;
        s_destroy_builders(b->staged, &b->count);
        free(b->staged);
        free(b);
        b = next;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_count = c->pending_cap = 0;
}

/* ---------------------------------------------------------------- */
/* the actor                                                         */
/* ---------------------------------------------------------------- */

static void
s_signal_open(pb_connector_t *c, int state)
{
    pthread_mutex_lock(&c->lock);
    c->open_state = state;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int
s_open(pb_connector_t *c)
{
    c->sock = zmq_socket(c->zctx, ZMQ_DEALER);
    int zero = 0;
    if (!c->sock ||
        zmq_setsockopt(c->sock, ZMQ_ROUTING_ID, c->rid, strlen(c->rid)) ||
        zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(c->sock, ZMQ_SNDHWM, &zero, sizeof zero) ||
        zmq_setsockopt(c->sock, ZMQ_RCVHWM, &zero, sizeof zero) ||
        zmq_connect(c->sock, c->endpoint) != 0) {
        snprintf(c->open_err, sizeof c->open_err,
                 "cannot connect to the router: %s", zmq_strerror(errno));
        return -1;
    }
    if (c->isolated && c->desc->run) {
        snprintf(c->open_err, sizeof c->open_err,
                 "plugin '%s' is a pull source (run): it needs isolation "
                 "= \"thread\"; a worker process does not run it",
                 c->desc->name);
        return -1;
    }
    if (c->isolated) { /* the plugin opens in a worker process */
        c->worker = pb_worker_start(&c->wopt, c->open_err,
                                    sizeof c->open_err);
        if (!c->worker)
            return -1;
        zmq_send(c->sock, PB_MSG_HELLO, 4, 0);
        return 0;
    }
    char errbuf[PLUGBOARD_ERRBUF_MAX] = "";
    c->opening = true;
    int rc = c->desc->open(pb_host_api(), &c->host, c->settings, &c->state,
                           errbuf);
    c->opening = false;
    s_unstage(c);
    if (rc != 0) {
        errbuf[sizeof errbuf - 1] = '\0';
        snprintf(c->open_err, sizeof c->open_err, "open failed: %s",
                 errbuf[0] ? errbuf : "no reason given");
        return -1;
    }
    if ((c->concurrency > 1 && c->desc->deliver && s_pool_start(c) != 0) ||
        (c->desc->run && s_run_start(c) != 0)) {
        s_pool_stop(c);
        c->desc->close(c->state);
        c->state = NULL;
        return -1;
    }
    zmq_send(c->sock, PB_MSG_HELLO, 4, 0);
    return 0;
}

/* Supervise the worker process; one that failed for good (a crash loop)
 * is down: /readyz, connector_up and the constraint finder say so. */
static void
s_tick_worker(pb_connector_t *c)
{
    pb_worker_tick(c->worker);
    if (c->counted_down)
        return;
    pb_worker_info_t wi;
    pb_worker_info(c->worker, &wi);
    if (wi.state && strcmp(wi.state, "failed") == 0) {
        c->counted_down = true;
        pb_mconn_running(c->mc, -1);
    }
}

static void *
s_thread(void *arg)
{
    pb_connector_t *c = arg;
    c->self = pthread_self();
    if (s_open(c) != 0) {
        if (c->sock)
            zmq_close(c->sock);
        c->sock = NULL;
        s_signal_open(c, -1);
        return NULL;
    }
    s_signal_open(c, 1);
    pb_mconn_running(c->mc, 1);

    int64_t stop_deadline = 0;
    bool stop_warned = false;
    for (;;) {
        bool stopping = atomic_load(&c->stop);
        int64_t now = pb_monotonic_ms();
        if (stopping) {
            if (!stop_deadline)
                stop_deadline = now + c->ack_timeout_ms;
            s_run_ask_stop(c);
            pthread_mutex_lock(&c->lock);
            bool inbox_empty = c->inbox_count == 0;
            pthread_mutex_unlock(&c->lock);
            /* run is waited for however long it takes: close must not
             * free its state under it */
            if (inbox_empty && !atomic_load(&c->run_alive) &&
                (c->parked_count == 0 || now >= stop_deadline))
                break;
            if (atomic_load(&c->run_alive) && now >= stop_deadline &&
                !stop_warned) {
                stop_warned = true;
                pb_warn("connector", "connector=%s stop waits for its run "
                        "to return (run_wait has answered false for %lld "
                        "ms)", c->name, (long long)c->ack_timeout_ms);
            }
        }
        zmq_pollitem_t items[] = {
            {.socket = c->sock, .events = ZMQ_POLLIN},
            {.fd = c->wake_fd, .events = ZMQ_POLLIN},
        };
        if (zmq_poll(items, 2, 100) < 0 && errno != EINTR)
            break;
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t v;
            ssize_t rd = read(c->wake_fd, &v, sizeof v);
            (void)rd;
        }
        s_drain_inbox(c);
        s_pool_results(c);
        s_send_batches(c);
        for (int i = 0; i < 256; i++) {
            int events = 0;
            size_t sz = sizeof events;
            zmq_getsockopt(c->sock, ZMQ_EVENTS, &events, &sz);
            if (!(events & ZMQ_POLLIN))
                break;
            s_handle_message(c);
        }
        s_expire_parked(c, pb_monotonic_ms());
        if (c->worker)
            s_tick_worker(c);
        if (atomic_load(&c->run_ended) && !c->counted_down) {
            c->counted_down = true; /* a pull source that stopped: down */
            pb_mconn_running(c->mc, -1);
        }
    }
    while (c->parked_count)
        s_unpark(c, 0, 503, "shutting down; retry later\n");
    s_run_ask_stop(c);
    s_run_join(c);
    s_pool_stop(c);
    if (!c->counted_down)
        pb_mconn_running(c->mc, -1);
    if (c->worker)
        pb_worker_stop(&c->worker);
    else
        c->desc->close(c->state);
    c->state = NULL;
    zmq_close(c->sock);
    c->sock = NULL;
    return NULL;
}

pb_connector_t *
pb_connector_start(const pb_connector_options_t *opt, char *err,
                   size_t err_len)
{
    pb_connector_t *c = pb_connector_spawn(opt, err, err_len);
    if (c && pb_connector_wait_open(c, -1, err, err_len) != 0)
        pb_connector_stop(&c);
    return c;
}

int
pb_connector_wait_open(pb_connector_t *c, int64_t timeout_ms, char *err,
                       size_t err_len)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (timeout_ms > 0 ? timeout_ms : 0) * 1000000;
    until.tv_sec += (time_t)(ns / 1000000000);
    until.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&c->lock);
    while (c->open_state == 0 && timeout_ms != 0)
        if (timeout_ms < 0)
            pthread_cond_wait(&c->cond, &c->lock);
        else if (pthread_cond_timedwait(&c->cond, &c->lock, &until) != 0)
            break;
    int state = c->open_state;
    pthread_mutex_unlock(&c->lock);
    if (state == 0)
        return PB_ETIMEDOUT;
    if (state < 0) {
        snprintf(err, err_len, "cannot start connector '%s': %s", c->name,
                 c->open_err);
        return PB_EIO;
    }
    return 0;
}

bool
pb_connector_retired(const pb_connector_t *c)
{
    pb_connector_t *m = (pb_connector_t *)c;
    return atomic_load(&m->retired) && atomic_load(&m->jobs_out) == 0;
}

pb_connector_t *
pb_connector_spawn(const pb_connector_options_t *opt, char *err,
                   size_t err_len)
{
    pb_connector_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", opt->name);
    snprintf(c->rid, sizeof c->rid, "%s",
             opt->routing_id ? opt->routing_id : opt->name);
    snprintf(c->endpoint, sizeof c->endpoint, "%s", opt->router_endpoint);
    c->desc = pb_plugin_descriptor(opt->plugin);
    c->settings = opt->settings;
    c->isolated = opt->isolation && strcmp(opt->isolation, "process") == 0;
    snprintf(c->run_dir, sizeof c->run_dir, "%s",
             opt->run_dir ? opt->run_dir : "");
    c->wopt = (pb_worker_options_t){
        .zmq_ctx = opt->zmq_ctx,
        .name = c->name,
        .conf = &c->wconf,
        .plugin_file = pb_plugin_file(opt->plugin),
        .run_dir = c->run_dir,
        /* answer before the router's own deadline counts a timeout */
        .call_timeout_ms = opt->deliver_timeout_ms > 0
                               ? opt->deliver_timeout_ms * 9 / 10
                               : 27000,
        .on_count = s_count,
        .on_dropped = s_count_dropped,
        .on_auth_failed = s_auth_failed,
        .report_ctx = c,
    };
    if (c->isolated && (!opt->conf || !opt->run_dir)) {
        snprintf(err, err_len,
                 "connector '%s': process isolation needs "
                 "its config entry and the run directory",
                 c->name);
        free(c);
        return NULL;
    }
    /* a copy: a worker restarted later binds what the host validated,
     * whatever the file or the host's config objects become */
    if (c->isolated &&
        pb_worker_conf(&c->wconf, opt->config_path, opt->log_level, opt->conf,
                       err, err_len) != 0) {
        free(c);
        return NULL;
    }
    c->zctx = opt->zmq_ctx;
    c->ack_timeout_ms = opt->ack_timeout_ms > 0 ? opt->ack_timeout_ms : 10000;
    c->mc = opt->metrics;
    c->concurrency = opt->concurrency > 1 && !c->isolated ? opt->concurrency
                                                          : 1;
    /* deliver runs on the actor thread, or on the pool's */
    pb_mconn_set_workers(c->mc, c->concurrency);
    pb_host_init(&c->host, c->name, s_stage, s_count, c);
    pb_host_on_auth_failed(&c->host, s_auth_failed);
    pb_host_on_run(&c->host, &s_run_fns);
    pb_auth_init(&c->auth);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
    pthread_cond_init(&c->pool_cond, NULL);
    pthread_mutex_init(&c->run_lock, NULL);
    pthread_cond_init(&c->run_cond, NULL);
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0 || pthread_create(&c->thread, NULL, s_thread, c)) {
        snprintf(err, err_len, "cannot start connector '%s': %s", c->name,
                 strerror(errno));
        goto out_free;
    }
    return c;

out_free:
    pb_frames_release(&c->wconf);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    pb_auth_release(&c->auth);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_cond_destroy(&c->pool_cond);
    pthread_mutex_destroy(&c->run_lock);
    pthread_cond_destroy(&c->run_cond);
    free(c);
    return NULL;
}

void
pb_connector_stop(pb_connector_t **cp)
{
    if (!cp || !*cp)
        return;
    pb_connector_t *c = *cp;
    *cp = NULL;
    pthread_mutex_lock(&c->lock);
    c->closed = true;
    pthread_mutex_unlock(&c->lock);
    atomic_store(&c->stop, true);
    uint64_t one = 1;
    ssize_t w = write(c->wake_fd, &one, sizeof one);
    (void)w;
    pthread_join(c->thread, NULL);
    s_unstage(c);
    free(c->staged);
    free(c->parked);
    free(c->inbox);
    pb_frames_release(&c->wconf);
    close(c->wake_fd);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_cond_destroy(&c->pool_cond);
    pthread_mutex_destroy(&c->run_lock);
    pthread_cond_destroy(&c->run_cond);
    pb_auth_release(&c->auth);
    free(c);
}

int
pb_connector_submit_webhook(pb_connector_t *c, pb_webhook_t *w)
{
    if (!c->desc->webhook)
        return PB_ENOENT;
    pthread_mutex_lock(&c->lock);
    if (c->closed) {
        pthread_mutex_unlock(&c->lock);
        return PB_ESTOPPING;
    }
    if (c->inbox_count == c->inbox_cap) {
        size_t cap = c->inbox_cap ? c->inbox_cap * 2 : 16;
        pb_webhook_t **n = realloc(c->inbox, cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&c->lock);
            return PB_ENOMEM;
        }
        c->inbox = n;
        c->inbox_cap = cap;
    }
    c->inbox[c->inbox_count++] = w;
    pthread_mutex_unlock(&c->lock);
    uint64_t one = 1;
    ssize_t wr = write(c->wake_fd, &one, sizeof one);
    (void)wr;
    return 0;
}

const char *
pb_connector_name(const pb_connector_t *c)
{
    return c->name;
}

void
pb_connector_info(pb_connector_t *c, pb_connector_info_t *out)
{
    memset(out, 0, sizeof *out);
    out->state = "running";
    pb_auth_get(&c->auth, &out->auth);
    if (atomic_load(&c->run_ended)) {
        out->state = "failed";
        snprintf(out->failure, sizeof out->failure,
                 "its run returned before the host asked it to: it polls "
                 "no more until a reload or restart");
        return;
    }
    if (!c->worker)
        return;
    pb_worker_info_t wi;
    pb_worker_info(c->worker, &wi);
    out->state = wi.state;
    out->restarts = wi.restarts;
    out->pid = wi.pid;
    snprintf(out->failure, sizeof out->failure, "%s", wi.failure);
}
