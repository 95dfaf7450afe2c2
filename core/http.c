/*
 * http.c - the host's one HTTP listener, on libmicrohttpd.
 *
 * Owns the MHD daemon (one internal epoll thread), the per-request state
 * of every /hooks/<name> request (struct pb_webhook) and the response a
 * connector fills (struct plugboard_response).  Everything a connector or
 * the router may touch from another thread lives in a pb_webhook_t, which
 * copies the request out of libmicrohttpd's memory pool, so a parked
 * request stays readable whatever happens to its connection.
 *
 * Lifetimes.  A webhook is reference counted under the listener's lock:
 * one reference for the connection (dropped when libmicrohttpd reports
 * the request finished, however it finished) and one for the owner the
 * on_webhook callback handed it to (dropped by pb_webhook_complete).  Each
 * webhook also holds a reference on the pb_http_t, so the lock and the
 * counters outlive pb_http_stop while an owner still holds a webhook.
 *
 * Parking.  When on_webhook takes a request the connection is suspended
 * and the webhook put on the parked list.  pb_webhook_complete, from any
 * thread, stores the answer and resumes the connection; the listener
 * thread then queues it.  A complete that runs before on_webhook has even
 * returned just stores the answer, and the listener sends it without
 * suspending.  pb_http_stop answers every parked webhook with 503 itself
 * and marks it forced; the owner's later pb_webhook_complete is then a
 * no-op that only drops its reference.  MHD_resume_connection is never
 * called with the lock held (libmicrohttpd takes its own locks there, and
 * only the listener thread nests them inside ours, when it suspends), and
 * stop waits for resumes in progress, then (up to 2 s) for the forced
 * 503s to be sent, before stopping the daemon.
 *
 * Choices the header leaves open:
 *   - Answers decided before the body (400, 404, 405, 413) close the
 *     connection: the unread body must not be taken for the next request.
 *     A chunked body that outgrows the limit is read and dropped up to
 *     8 MiB more, then answered 413; past that the connection is cut.
 *   - Transfer-Encoding other than exactly "chunked" is refused with 400,
 *     and so is a header name holding whitespace ("Transfer-Encoding :").
 *   - /readyz without an on_page callback answers 200 "ready"; /metrics
 *     without one is 404.
 *   - on_webhook results: PB_ENOENT 404, PB_ESTOPPING, PB_EFULL and
 *     PB_EBUSY 503 with Retry-After, anything else 500.  Every 503 this
 *     listener sends carries Retry-After: 5.
 *   - body_limit 0 means the default, 1 MiB.
 *   - query is the raw query string from the request line (escapes kept),
 *     so signatures over the URL can be checked.
 */
#define _GNU_SOURCE
#include "http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

#define PB_RESPONSE_BODY_MAX 4096          /* pb_response_set truncates */
#define PB_HTTP_DEFAULT_BODY_LIMIT (1u << 20)
#define PB_HTTP_DISCARD_MAX (8u << 20)     /* over-limit bytes we swallow */
#define PB_HTTP_STOP_WAIT_MS 2000          /* for forced 503s to go out */
#define PB_HOOK_NAME_MAX 63
#define PB_HOOKS_PREFIX "/hooks/"
#define PB_HOOKS_PREFIX_LEN 7

static const char s_json_type[] = "application/json";
static const char s_text_type[] = "text/plain; charset=utf-8";

/* con_cls of a GET page between its first and final call */
static char s_page_marker;

struct plugboard_response {
    int status;
    size_t len;
    char body[PB_RESPONSE_BODY_MAX + 1];
};

/* Where one /hooks request is; transitions under http->lock once the
 * webhook can be reached from another thread (S_HANDLING onwards). */
typedef enum pb_hook_state {
    S_NEW = 0,   /* created by the URI callback; headers not checked yet */
    S_RECEIVING, /* body arriving */
    S_HANDLING,  /* on_webhook running on the listener thread */
    S_PARKED,    /* connection suspended, waiting for complete */
    S_ANSWERED,  /* answer stored; queue it on the next handler call */
    S_DONE,      /* answer queued (or refused early) */
} pb_hook_state_t;

struct pb_webhook {
    pb_http_t *http;               /* a reference, see s_http_unref */
    struct MHD_Connection *conn;
    int refs;                      /* under http->lock */
    pb_hook_state_t state;
    bool forced;                   /* answered by stop: complete no-ops */
    bool owner_done;               /* pb_webhook_complete was called */
    bool too_large;
    pb_webhook_t *prev, *next;     /* parked list */
    pb_webhook_t *stop_next;       /* stop's private resume list */

    char connector[PB_HOOK_NAME_MAX + 1];
    char *query;                   /* raw, from the request line */
    uint8_t *body;
    size_t body_len, body_cap, discarded;
    void *copy;                    /* headers array and their strings */
    plugboard_request_t req;
    struct plugboard_response resp;
};

struct pb_http {
    struct MHD_Daemon *daemon;
    pb_http_options_t opt;
    size_t body_limit;
    uint16_t port;
    int quiesced_fd;               /* -1 until pb_http_quiesce */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;                      /* the owner plus every live webhook */
    bool stopping;
    pb_webhook_t *parked;          /* suspended, waiting for complete */
    unsigned resuming;             /* completes inside resume_connection */
    unsigned forced_pending;       /* forced 503s not yet finished */

    _Atomic uint64_t requests;
    _Atomic uint64_t too_large;
    _Atomic uint64_t bad_request;
    _Atomic uint64_t aborted;
};

/* ------------------------------------------------------------------ */
/* Responses                                                            */
/* ------------------------------------------------------------------ */

void
pb_response_set(plugboard_response_t *resp, int status, const char *body)
{
    if (resp == NULL)
        return;
    resp->status = status;
    size_t n = body ? strlen(body) : 0;
    if (n > PB_RESPONSE_BODY_MAX) {
        n = PB_RESPONSE_BODY_MAX;
        /* do not cut a UTF-8 sequence in half */
        while (n > 0 && ((unsigned char)body[n] & 0xC0) == 0x80)
            n--;
    }
    if (n > 0)
        memmove(resp->body, body, n);
    resp->body[n] = '\0';
    resp->len = n;
}

int
pb_response_status(const plugboard_response_t *resp)
{
    return resp ? resp->status : 0;
}

plugboard_response_t *
pb_response_new(void)
{
    plugboard_response_t *resp = calloc(1, sizeof *resp);
    if (resp)
        resp->status = 200;
    return resp;
}

void
pb_response_destroy(plugboard_response_t **resp)
{
    if (resp == NULL || *resp == NULL)
        return;
    free(*resp);
    *resp = NULL;
}

const char *
pb_response_body(const plugboard_response_t *resp)
{
    return resp ? resp->body : NULL;
}

const char *
pb_request_header(const plugboard_request_t *req, const char *name)
{
    if (req == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < req->header_count; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Webhook accessors and reference counting                             */
/* ------------------------------------------------------------------ */

const plugboard_request_t *
pb_webhook_request(const pb_webhook_t *w)
{
    return &w->req;
}

const char *
pb_webhook_connector(const pb_webhook_t *w)
{
    return w->connector;
}

plugboard_response_t *
pb_webhook_response(pb_webhook_t *w)
{
    return &w->resp;
}

static void
s_http_free(pb_http_t *http)
{
    pthread_cond_destroy(&http->cond);
    pthread_mutex_destroy(&http->lock);
    free(http);
}

/* Drop one reference on http; the last one frees it. */
static void
s_http_unref(pb_http_t *http)
{
    pthread_mutex_lock(&http->lock);
    bool last = --http->refs == 0;
    pthread_mutex_unlock(&http->lock);
    if (last)
        s_http_free(http);
}

/* Drop one reference on w; the last one frees it and its http ref. */
static void
s_webhook_unref(pb_webhook_t *w)
{
    pb_http_t *http = w->http;
    pthread_mutex_lock(&http->lock);
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&http->lock);
    if (!last)
        return;
    free(w->query);
    free(w->body);
    free(w->copy);
    free(w);
    s_http_unref(http);
}

/* A webhook with the connection's reference; NULL when out of memory.
 * query is the raw query string (copied), or NULL. */
static pb_webhook_t *
s_webhook_new(pb_http_t *http, const char *query)
{
    pb_webhook_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    if (query && (w->query = strdup(query)) == NULL) {
        free(w);
        return NULL;
    }
    w->http = http;
    w->refs = 1;
    w->state = S_NEW;
    pb_response_set(&w->resp, 200, NULL);
    pthread_mutex_lock(&http->lock);
    http->refs++;
    pthread_mutex_unlock(&http->lock);
    return w;
}

static void
s_parked_unlink(pb_http_t *http, pb_webhook_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        http->parked = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static void
s_parked_link(pb_http_t *http, pb_webhook_t *w)
{
    w->prev = NULL;
    w->next = http->parked;
    if (http->parked)
        http->parked->prev = w;
    http->parked = w;
}

void
pb_webhook_complete(pb_webhook_t *w, int status, const char *body)
{
    if (w == NULL)
        return;
    pb_http_t *http = w->http;
    struct MHD_Connection *resume = NULL;

    pthread_mutex_lock(&http->lock);
    assert(!w->owner_done); /* completing twice is a programming error */
    w->owner_done = true;
    if (!w->forced) {
        if (status > 0)
            pb_response_set(&w->resp, status, body);
        if (w->state == S_HANDLING) {
            w->state = S_ANSWERED; /* the listener sends it on return */
        } else if (w->state == S_PARKED) {
            w->state = S_ANSWERED;
            s_parked_unlink(http, w);
            resume = w->conn;
            http->resuming++;
        }
    }
    pthread_mutex_unlock(&http->lock);

    if (resume) {
        MHD_resume_connection(resume);
        pthread_mutex_lock(&http->lock);
        if (--http->resuming == 0)
            pthread_cond_broadcast(&http->cond);
        pthread_mutex_unlock(&http->lock);
    }
    s_webhook_unref(w);
}

/* ------------------------------------------------------------------ */
/* Sending answers                                                      */
/* ------------------------------------------------------------------ */

/* Queue status with body (len bytes, copied).  Adds Allow for 405 and
 * Retry-After for 503. */
static enum MHD_Result
s_queue(struct MHD_Connection *conn, unsigned status, const char *body,
        size_t len, const char *content_type, const char *allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    if (content_type == NULL)
        content_type = (len > 0 && body[0] == '{') ? s_json_type
                                                   : s_text_type;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
s_queue_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    return s_queue(conn, status, text, strlen(text), s_text_type, NULL);
}

/* Send what the webhook holds, or 503 when stop answered it (its owner
 * may still be writing w->resp then); w->state becomes S_DONE. */
static enum MHD_Result
s_queue_webhook(pb_webhook_t *w)
{
    w->state = S_DONE;
    if (w->forced)
        return s_queue_text(w->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                            "shutting down\n");
    int status = w->resp.status;
    if (status < 100 || status > 599)
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    return s_queue(w->conn, (unsigned)status, w->resp.body, w->resp.len,
                   NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* Pages other than /hooks                                              */
/* ------------------------------------------------------------------ */

static bool
s_is_get(const char *method)
{
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
           strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

static enum MHD_Result
s_serve_page(pb_http_t *http, struct MHD_Connection *conn, const char *url)
{
    if (http->opt.on_page == NULL) {
        if (strcmp(url, "/readyz") == 0)
            return s_queue_text(conn, MHD_HTTP_OK, "ready\n");
        return s_queue_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
    }
    char *body = NULL;
    const char *type = NULL;
    int status = http->opt.on_page(http->opt.ctx, url, &body, &type);
    if (status < 100 || status > 599) {
        free(body);
        return s_queue_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                            "internal error\n");
    }
    enum MHD_Result ret = s_queue(conn, (unsigned)status, body ? body : "",
                                  body ? strlen(body) : 0,
                                  type ? type : s_text_type, NULL);
    free(body);
    return ret;
}

static bool
s_is_page(const char *url, const char *method)
{
    return s_is_get(method) &&
           (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
            strcmp(url, "/metrics") == 0);
}

static bool
s_has_body(struct MHD_Connection *conn)
{
    const char *cl = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return (cl && strcmp(cl, "0") != 0) ||
           MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

static enum MHD_Result
s_serve_other(pb_http_t *http, struct MHD_Connection *conn, const char *url,
              const char *method)
{
    bool known = strcmp(url, "/healthz") == 0 ||
                 strcmp(url, "/readyz") == 0 || strcmp(url, "/metrics") == 0;
    if (!known)
        return s_queue_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
    if (!s_is_get(method))
        return s_queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                       "method not allowed\n", 19, s_text_type,
                       "GET, HEAD");
    if (strcmp(url, "/healthz") == 0)
        return s_queue_text(conn, MHD_HTTP_OK, "ok\n");
    return s_serve_page(http, conn, url);
}

/* ------------------------------------------------------------------ */
/* /hooks/<name>: checks before the body                                */
/* ------------------------------------------------------------------ */

static bool
s_valid_hook_name(const char *name)
{
    size_t n = 0;
    for (; name[n]; n++) {
        char c = name[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok || n >= PB_HOOK_NAME_MAX)
            return false;
    }
    return n > 0;
}

/* Parse a Content-Length value: digits only; false when malformed. */
static bool
s_parse_length(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* What the framing headers say; filled by s_framing_cb. */
typedef struct pb_framing {
    unsigned cl_count, te_count;
    uint64_t length;
    bool malformed;   /* a bad or conflicting Content-Length */
    bool te_chunked;  /* every Transfer-Encoding is exactly "chunked" */
    char bad_name[48]; /* the first header name holding a space or tab */
} pb_framing_t;

static enum MHD_Result
s_framing_cb(void *cls, enum MHD_ValueKind kind, const char *key,
             const char *value)
{
    pb_framing_t *f = cls;
    if (f->bad_name[0] == '\0' && key[strcspn(key, " \t")] != '\0') {
        /* kept for the log and the answer: control bytes shown as '?' */
        size_t i = 0;
        for (; key[i] && i + 1 < sizeof f->bad_name; i++) {
            unsigned char c = (unsigned char)key[i];
            f->bad_name[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        }
        f->bad_name[i] = '\0';
    }
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        uint64_t v = 0;
        if (value == NULL || !s_parse_length(value, &v) ||
            (f->cl_count > 0 && v != f->length))
            f->malformed = true;
        f->length = v;
        f->cl_count++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        if (value == NULL || strcasecmp(value, "chunked") != 0 ||
            f->te_count > 0)
            f->te_chunked = false;
        else
            f->te_chunked = true;
        f->te_count++;
    }
    return MHD_YES;
}

/* 0 when the request may proceed, else the status to refuse it with;
 * why gets the reason, for the log line and the sender. */
static unsigned
s_check_framing(pb_http_t *http, struct MHD_Connection *conn, char *why,
                size_t why_len)
{
    pb_framing_t f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, s_framing_cb, &f);
    if (f.bad_name[0] != '\0') {
        /* "Transfer-Encoding : chunked" frames nothing here, but a proxy
         * in front may take it for chunked (RFC 9112 5.1: refuse) */
        snprintf(why, why_len, "whitespace in the header name '%s'",
                 f.bad_name);
        return MHD_HTTP_BAD_REQUEST;
    }
    if (f.cl_count > 0 && f.te_count > 0) {
        snprintf(why, why_len, "both Content-Length and Transfer-Encoding");
        return MHD_HTTP_BAD_REQUEST;
    }
    if (f.malformed) {
        snprintf(why, why_len, "malformed or conflicting Content-Length");
        return MHD_HTTP_BAD_REQUEST;
    }
    if (f.te_count > 0 && !f.te_chunked) {
        snprintf(why, why_len, "unsupported Transfer-Encoding");
        return MHD_HTTP_BAD_REQUEST;
    }
    if (f.cl_count > 0 && f.length > http->body_limit) {
        snprintf(why, why_len,
                 "Content-Length %" PRIu64 " is above the limit of %zu bytes",
                 f.length, http->body_limit);
        return MHD_HTTP_CONTENT_TOO_LARGE;
    }
    return 0;
}

/* Answer 400 or 413 now, saying why to the sender and in the log. */
static enum MHD_Result
s_refuse(pb_http_t *http, pb_webhook_t *w, unsigned status, const char *why)
{
    char text[256];
    bool too_large = status == MHD_HTTP_CONTENT_TOO_LARGE;

    atomic_fetch_add(too_large ? &http->too_large : &http->bad_request, 1);
    pb_warn("http", "refused webhook for '%s' with %u: %s", w->connector,
            status, why);
    snprintf(text, sizeof text, "%s: %s\n",
             too_large ? "request body too large" : "bad request", why);
    w->state = S_DONE;
    return s_queue_text(w->conn, status, text);
}

/* The first call for a /hooks request: everything before the body. */
static enum MHD_Result
s_hook_begin(pb_http_t *http, pb_webhook_t *w, const char *url,
             const char *method)
{
    const char *name = url + PB_HOOKS_PREFIX_LEN;
    if (!s_valid_hook_name(name)) {
        w->state = S_DONE;
        return s_queue_text(w->conn, MHD_HTTP_NOT_FOUND, "not found\n");
    }
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        w->state = S_DONE;
        return s_queue(w->conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                       "method not allowed\n", 19, s_text_type, "POST");
    }
    snprintf(w->connector, sizeof w->connector, "%s", name);
    char why[160];
    unsigned refuse = s_check_framing(http, w->conn, why, sizeof why);
    if (refuse)
        return s_refuse(http, w, refuse, why);
    w->state = S_RECEIVING;
    return MHD_YES;
}

/* ------------------------------------------------------------------ */
/* /hooks/<name>: the body                                              */
/* ------------------------------------------------------------------ */

/* Append one piece of the body; false when the connection should be
 * dropped (out of memory, or far too much data after a 413). */
static bool
s_hook_append(pb_http_t *http, pb_webhook_t *w, const char *data,
              size_t len)
{
    if (!w->too_large && len > http->body_limit - w->body_len) {
        w->too_large = true;
        free(w->body);
        w->body = NULL;
        w->body_len = w->body_cap = 0;
    }
    if (w->too_large) {
        w->discarded += len;
        return w->discarded <= PB_HTTP_DISCARD_MAX;
    }
    if (w->body_len + len > w->body_cap) {
        size_t cap = w->body_cap ? w->body_cap : 4096;
        while (cap < w->body_len + len)
            cap *= 2;
        if (cap > http->body_limit)
            cap = http->body_limit;
        uint8_t *p = realloc(w->body, cap);
        if (p == NULL)
            return false;
        w->body = p;
        w->body_cap = cap;
    }
    memcpy(w->body + w->body_len, data, len);
    w->body_len += len;
    return true;
}

typedef struct pb_header_copy {
    plugboard_header_t *headers;
    char *strings;
    size_t count, bytes;
} pb_header_copy_t;

static enum MHD_Result
s_header_size_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                 const char *value)
{
    pb_header_copy_t *c = cls;
    c->count++;
    c->bytes += strlen(key) + 1 + (value ? strlen(value) : 0) + 1;
    return MHD_YES;
}

static char *
s_put(pb_header_copy_t *c, const char *s)
{
    size_t n = strlen(s) + 1;
    char *dst = c->strings;
    memcpy(dst, s, n);
    c->strings += n;
    return dst;
}

static enum MHD_Result
s_header_copy_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                 const char *value)
{
    pb_header_copy_t *c = cls;
    c->headers[c->count].name = s_put(c, key);
    c->headers[c->count].value = s_put(c, value ? value : "");
    c->count++;
    return MHD_YES;
}

static int64_t
s_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Fill w->req with copies of everything, so the view does not depend on
 * the connection's memory.  Returns 0 or PB_ENOMEM. */
static int
s_build_request(pb_webhook_t *w, const char *url, const char *method)
{
    pb_header_copy_t c = {0};
    MHD_get_connection_values(w->conn, MHD_HEADER_KIND, s_header_size_cb,
                              &c);
    size_t fixed = strlen(url) + 1 + strlen(method) + 1;
    size_t array = c.count * sizeof(plugboard_header_t);
    w->copy = malloc(array + c.bytes + fixed);
    if (w->copy == NULL)
        return PB_ENOMEM;
    c.headers = w->copy;
    c.strings = (char *)w->copy + array;
    c.count = 0;
    MHD_get_connection_values(w->conn, MHD_HEADER_KIND, s_header_copy_cb,
                              &c);
    w->req.method = s_put(&c, method);
    w->req.path = s_put(&c, url);
    w->req.query = w->query ? w->query : "";
    w->req.headers = c.headers;
    w->req.header_count = c.count;
    w->req.body = w->body ? w->body : (const uint8_t *)"";
    w->req.body_len = w->body_len;
    w->req.received_ms = s_wall_ms();
    return 0;
}

/* The status for a non-zero on_webhook result. */
static enum MHD_Result
s_queue_refusal(pb_webhook_t *w, int rc)
{
    w->state = S_DONE;
    switch (rc) {
    case PB_ENOENT:
        return s_queue_text(w->conn, MHD_HTTP_NOT_FOUND,
                            "unknown connector\n");
    case PB_ESTOPPING:
        return s_queue_text(w->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                            "shutting down\n");
    case PB_EFULL:
    case PB_EBUSY:
        return s_queue_text(w->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                            "busy, retry later\n");
    default:
        return s_queue_text(w->conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                            "internal error\n");
    }
}

/* The body is complete: hand the request on and park the connection,
 * unless it was answered already. */
static enum MHD_Result
s_hook_dispatch(pb_http_t *http, pb_webhook_t *w, const char *url,
                const char *method)
{
    if (w->too_large) {
        char why[96];
        snprintf(why, sizeof why, "the body is above the limit of %zu bytes",
                 http->body_limit);
        return s_refuse(http, w, MHD_HTTP_CONTENT_TOO_LARGE, why);
    }
    if (http->opt.on_webhook == NULL)
        return s_queue_refusal(w, PB_ENOENT);
    if (s_build_request(w, url, method) != 0)
        return s_queue_refusal(w, PB_ENOMEM);

    pthread_mutex_lock(&http->lock);
    w->state = S_HANDLING;
    w->refs++; /* the owner's */
    pthread_mutex_unlock(&http->lock);

    int rc = http->opt.on_webhook(http->opt.ctx, w);
    if (rc != 0) {
        /* not taken: the owner reference goes back to us */
        pthread_mutex_lock(&http->lock);
        w->refs--;
        pthread_mutex_unlock(&http->lock);
        return s_queue_refusal(w, rc);
    }

    pthread_mutex_lock(&http->lock);
    if (w->state == S_HANDLING && http->stopping) {
        w->forced = true;
        w->state = S_ANSWERED;
        http->forced_pending++;
    }
    if (w->state == S_ANSWERED) {
        pthread_mutex_unlock(&http->lock);
        return s_queue_webhook(w);
    }
    w->state = S_PARKED;
    s_parked_link(http, w);
    MHD_suspend_connection(w->conn);
    pthread_mutex_unlock(&http->lock);
    return MHD_YES;
}

/* ------------------------------------------------------------------ */
/* libmicrohttpd callbacks                                              */
/* ------------------------------------------------------------------ */

/* Runs once per request, before anything else: for /hooks requests,
 * create the webhook and keep the raw query string. */
static void *
s_uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    if (strncmp(uri, PB_HOOKS_PREFIX, PB_HOOKS_PREFIX_LEN) != 0)
        return NULL;
    const char *q = strchr(uri, '?');
    pb_webhook_t *w = s_webhook_new(cls, q ? q + 1 : NULL);
    if (w)
        w->conn = conn;
    return w;
}

/* A /hooks request the URI callback did not see as one (the raw path
 * spelled the prefix with escapes) or could not allocate for. */
static enum MHD_Result
s_hook_escaped(pb_http_t *http, struct MHD_Connection *conn, void **con_cls,
               const char *url, const char *method)
{
    pb_webhook_t *w = s_webhook_new(http, NULL);
    if (w == NULL)
        return s_queue_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                            "internal error\n");
    w->conn = conn;
    *con_cls = w;
    return s_hook_begin(http, w, url, method);
}

static enum MHD_Result
s_access_cb(void *cls, struct MHD_Connection *conn, const char *url,
            const char *method, const char *version,
            const char *upload_data, size_t *upload_data_size,
            void **con_cls)
{
    pb_http_t *http = cls;
    pb_webhook_t *w = *con_cls;
    bool hooks = strncmp(url, PB_HOOKS_PREFIX, PB_HOOKS_PREFIX_LEN) == 0;

    if (w == (pb_webhook_t *)&s_page_marker) {
        *upload_data_size = 0; /* s_has_body said there is none */
        return s_serve_other(http, conn, url, method);
    }
    if (w == NULL) {
        atomic_fetch_add(&http->requests, 1);
        if (hooks)
            return s_hook_escaped(http, conn, con_cls, url, method);
        if (s_is_page(url, method) && !s_has_body(conn)) {
            /* answer on the final call: an answer queued before the
             * (empty) body makes libmicrohttpd close the connection */
            *con_cls = &s_page_marker;
            return MHD_YES;
        }
        return s_serve_other(http, conn, url, method);
    }
    switch (w->state) {
    case S_NEW:
        atomic_fetch_add(&http->requests, 1);
        return s_hook_begin(http, w, url, method);
    case S_RECEIVING:
        if (*upload_data_size > 0) {
            bool ok = s_hook_append(http, w, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return ok ? MHD_YES : MHD_NO;
        }
        return s_hook_dispatch(http, w, url, method);
    case S_ANSWERED:
        return s_queue_webhook(w); /* resumed */
    default:
        /* S_HANDLING and S_PARKED cannot be seen here; S_DONE means a
         * response is queued and libmicrohttpd will not call again */
        *upload_data_size = 0;
        return MHD_YES;
    }
}

/* Runs once per request whatever ended it: drop the connection's
 * reference; a body that never completed counts as aborted. */
static void
s_completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
               enum MHD_RequestTerminationCode toe)
{
    pb_http_t *http = cls;
    pb_webhook_t *w = *con_cls;
    *con_cls = NULL;
    if (w == NULL || w == (pb_webhook_t *)&s_page_marker)
        return;
    bool aborted = false;
    pthread_mutex_lock(&http->lock);
    if (w->state == S_RECEIVING) {
        aborted = true;
    } else if (w->state == S_PARKED) {
        /* cannot happen while the daemon runs; be safe regardless */
        s_parked_unlink(http, w);
        w->forced = true;
    }
    if (w->forced && w->state != S_PARKED && http->forced_pending > 0 &&
        --http->forced_pending == 0)
        pthread_cond_broadcast(&http->cond);
    w->state = S_DONE;
    pthread_mutex_unlock(&http->lock);
    if (aborted && w->too_large) {
        /* the sender went on far past the limit: cut, never answered */
        atomic_fetch_add(&http->too_large, 1);
        pb_warn("http", "cut webhook for '%s': the body is above the limit "
                "of %zu bytes (%zu bytes past it discarded)", w->connector,
                http->body_limit, w->discarded);
    } else if (aborted) {
        atomic_fetch_add(&http->aborted, 1);
        pb_info("http", "webhook for '%s' aborted before its body was "
                "complete (%zu bytes received)", w->connector, w->body_len);
    }
    s_webhook_unref(w);
}

static void
s_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    pb_debug("http", "libmicrohttpd: %s", line);
}

/* ------------------------------------------------------------------ */
/* Start, quiesce, stop                                                 */
/* ------------------------------------------------------------------ */

/* Parse "host:port", "[v6]:port", ":port" or "*:port" into ss. */
static int
s_parse_listen(const char *listen, struct sockaddr_storage *ss,
               char *err, size_t err_len)
{
    char host[256];
    const char *port;
    if (listen == NULL || *listen == '\0')
        goto bad;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (end == NULL || end[1] != ':' ||
            (size_t)(end - listen - 1) >= sizeof host)
            goto bad;
        memcpy(host, listen + 1, (size_t)(end - listen - 1));
        host[end - listen - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (colon == NULL || (size_t)(colon - listen) >= sizeof host)
            goto bad;
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        port = colon + 1;
    }
    uint64_t p;
    if (!s_parse_length(port, &p) || p > 65535)
        goto bad;
    memset(ss, 0, sizeof *ss);
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_ANY);
        in->sin_port = htons((uint16_t)p);
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "cannot resolve listen address '%s': %s",
                 listen, gai_strerror(rc));
        return PB_EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
bad:
    snprintf(err, err_len, "invalid listen address '%s': expected "
             "host:port or [v6]:port", listen ? listen : "");
    return PB_EINVAL;
}

static unsigned
s_daemon_flags(const struct sockaddr_storage *ss)
{
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    if (pb_log_get_level() >= PB_LOG_DEBUG)
        flags |= MHD_USE_ERROR_LOG;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        flags |= IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)
                     ? MHD_USE_DUAL_STACK
                     : MHD_USE_IPv6;
    }
    return flags;
}

pb_http_t *
pb_http_start(const pb_http_options_t *opt, char *err, size_t err_len)
{
    struct sockaddr_storage ss;
    if (s_parse_listen(opt->listen, &ss, err, err_len) != 0)
        return NULL;
    pb_http_t *http = calloc(1, sizeof *http);
    if (http == NULL) {
        snprintf(err, err_len, "cannot start http listener: out of memory");
        return NULL;
    }
    http->opt = *opt;
    http->body_limit = opt->body_limit ? opt->body_limit
                                       : PB_HTTP_DEFAULT_BODY_LIMIT;
    http->quiesced_fd = -1;
    http->refs = 1;
    pthread_mutex_init(&http->lock, NULL);
    pthread_cond_init(&http->cond, NULL);

    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_CONNECTION_TIMEOUT, opt->idle_timeout_s, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)s_completed_cb, http},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)s_uri_cb, http},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)s_mhd_log, NULL},
        {opt->max_connections ? MHD_OPTION_CONNECTION_LIMIT
                              : MHD_OPTION_END,
         opt->max_connections, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    errno = 0;
    http->daemon = MHD_start_daemon(s_daemon_flags(&ss), 0, NULL, NULL,
                                    s_access_cb, http, MHD_OPTION_ARRAY,
                                    ops, MHD_OPTION_END);
    if (http->daemon == NULL) {
        snprintf(err, err_len, "cannot listen on '%s': %s", opt->listen,
                 errno ? strerror(errno) : "libmicrohttpd failed to start");
        s_http_free(http);
        return NULL;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? info->port : 0;
    return http; /* the caller logs where, naming what it listens for */
}

uint16_t
pb_http_port(const pb_http_t *http)
{
    return http ? http->port : 0;
}

void
pb_http_quiesce(pb_http_t *http)
{
    if (http == NULL || http->daemon == NULL || http->quiesced_fd >= 0)
        return;
    MHD_socket fd = MHD_quiesce_daemon(http->daemon);
    if (fd == MHD_INVALID_SOCKET) {
        pb_warn("http", "cannot stop accepting connections");
        return;
    }
    /* Refuse (RST) new connections now rather than leaving them in the
     * backlog; the descriptor is closed only after the daemon stops. */
    shutdown(fd, SHUT_RDWR);
    http->quiesced_fd = fd;
    pb_info("http", "no longer accepting connections port=%u",
            (unsigned)http->port);
}

/* Answer every parked webhook with 503 and resume its connection. */
static void
s_force_parked(pb_http_t *http)
{
    pb_webhook_t *list = NULL;
    unsigned n = 0;

    pthread_mutex_lock(&http->lock);
    http->stopping = true;
    while (http->parked) {
        pb_webhook_t *w = http->parked;
        s_parked_unlink(http, w);
        w->forced = true;
        w->state = S_ANSWERED;
        w->refs++; /* ours, until resumed */
        w->stop_next = list;
        list = w;
        http->forced_pending++;
        n++;
    }
    /* completes already past the parked list must finish resuming
     * before the daemon goes away */
    while (http->resuming > 0)
        pthread_cond_wait(&http->cond, &http->lock);
    pthread_mutex_unlock(&http->lock);

    if (n > 0)
        pb_warn("http", "answering %u parked webhooks with 503 at stop", n);
    while (list) {
        pb_webhook_t *w = list;
        list = w->stop_next;
        MHD_resume_connection(w->conn);
        s_webhook_unref(w);
    }
}

/* Wait (bounded) until every forced 503 has been sent. */
static void
s_wait_forced(pb_http_t *http)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += PB_HTTP_STOP_WAIT_MS / 1000;
    deadline.tv_nsec += (PB_HTTP_STOP_WAIT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&http->lock);
    while (http->forced_pending > 0) {
        if (pthread_cond_timedwait(&http->cond, &http->lock, &deadline) ==
            ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&http->lock);
}

void
pb_http_stop(pb_http_t **httpp)
{
    if (httpp == NULL || *httpp == NULL)
        return;
    pb_http_t *http = *httpp;
    *httpp = NULL;

    pb_http_quiesce(http);
    s_force_parked(http);
    s_wait_forced(http);
    MHD_stop_daemon(http->daemon);
    http->daemon = NULL;
    if (http->quiesced_fd >= 0)
        close(http->quiesced_fd);
    pb_info("http", "stopped port=%u", (unsigned)http->port);
    s_http_unref(http);
}

void
pb_http_stats(const pb_http_t *http, pb_http_stats_t *out)
{
    pb_http_t *h = (pb_http_t *)http;
    out->requests = atomic_load(&h->requests);
    out->too_large = atomic_load(&h->too_large);
    out->bad_request = atomic_load(&h->bad_request);
    out->aborted = atomic_load(&h->aborted);
}
