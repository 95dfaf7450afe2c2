/*
 * http.h - the host's one HTTP listener (libmicrohttpd).
 *
 * The listener belongs to the host, not to connectors, so reloading or
 * upgrading a webhook connector never closes the port.  It serves:
 *   POST /hooks/<connector>  - handed to the on_webhook callback
 *   GET  /healthz            - 200 "ok" while the listener runs
 *   GET  /readyz, /metrics   - through the on_page callback (without one:
 *                              /readyz 200 "ready", /metrics 404)
 * Request bodies are assembled from every piece libmicrohttpd hands over
 * (chunked and Expect: 100-continue included) and handed on only when
 * complete.  A Content-Length above body_limit gets 413 before the body is
 * read; a chunked body that grows past it gets 413 too.  Both
 * Content-Length and Transfer-Encoding, or two different Content-Lengths,
 * get 400.  A body that ends early (the client hangs up) is never handed
 * on.  Idle keep-alive connections close after idle_timeout_s.  Polling
 * uses epoll, so descriptors above 1024 work.
 *
 * A webhook is answered asynchronously: on_webhook takes the request and
 * later calls pb_webhook_complete from any thread; the connection is
 * suspended meanwhile, so one slow commit does not block other requests.
 */
#ifndef PB_HTTP_H
#define PB_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <plugboard/plugboard.h>

typedef struct pb_http pb_http_t;

/* One webhook request in flight.  Its request part is what the connector's
 * webhook() sees.  struct plugboard_response is part of it. */
typedef struct pb_webhook pb_webhook_t;

/* The request view; borrowed until pb_webhook_complete. */
const plugboard_request_t *pb_webhook_request(const pb_webhook_t *w);
/* The connector name from the path /hooks/<name>; borrowed likewise. */
const char *pb_webhook_connector(const pb_webhook_t *w);
/* The response the connector fills (status preset to 200). */
plugboard_response_t *pb_webhook_response(pb_webhook_t *w);

/* SDK host API: set status and a text body (copied, truncated to 4 KiB). */
void pb_response_set(plugboard_response_t *resp, int status,
                     const char *body);
int pb_response_status(const plugboard_response_t *resp);
/* A free-standing response, for the test harness and plugin-check.
 * pb_response_body is borrowed, NUL-terminated. */
plugboard_response_t *pb_response_new(void);
void pb_response_destroy(plugboard_response_t **resp);
const char *pb_response_body(const plugboard_response_t *resp);

/* SDK host API: case-insensitive header lookup. */
const char *pb_request_header(const plugboard_request_t *req,
                              const char *name);

/*
 * Answer the request and release it.  Thread-safe.  status and body
 * override what the response holds when status > 0; pass 0 and NULL to
 * send the response as the connector left it.  After this call w is gone.
 * Safe after pb_http_stop: then it is a no-op that only releases w (stop
 * has already answered 503).  When on_webhook returns non-zero, the callee
 * must not have called this.
 */
void pb_webhook_complete(pb_webhook_t *w, int status, const char *body);

/*
 * Called on the listener's thread when a /hooks/<name> body is complete.
 * Return 0 when the request was taken (it will be completed later), or
 * PB_ENOENT for an unknown connector (404), PB_ESTOPPING (503) and so on;
 * on a non-zero return the listener answers and frees the request itself.
 */
typedef int (*pb_webhook_fn)(void *ctx, pb_webhook_t *w);

/* Optional pages: fill *body (malloc'd, caller of the callback frees it)
 * and *content_type (static) and return the status. */
typedef int (*pb_page_fn)(void *ctx, const char *path, char **body,
                          const char **content_type);

typedef struct pb_http_options {
    const char *listen;        /* "127.0.0.1:8787"; port 0 picks a free one */
    size_t body_limit;         /* bytes */
    unsigned idle_timeout_s;   /* keep-alive idle timeout */
    unsigned max_connections;
    pb_webhook_fn on_webhook;
    pb_page_fn on_page;
    void *ctx;
} pb_http_options_t;

/* Start listening.  Returns NULL and writes the reason to err. */
pb_http_t *pb_http_start(const pb_http_options_t *opt, char *err,
                         size_t err_len);
/* The port actually bound (useful with port 0). */
uint16_t pb_http_port(const pb_http_t *http);
/* Stop accepting new connections but keep serving those in flight. */
void pb_http_quiesce(pb_http_t *http);
/* Stop: answers every still-suspended webhook with 503, then closes. */
void pb_http_stop(pb_http_t **http);

/* Counters for metrics and tests. */
typedef struct pb_http_stats {
    uint64_t requests;
    uint64_t too_large;     /* 413 */
    uint64_t bad_request;   /* 400 */
    uint64_t aborted;       /* bodies that ended early */
} pb_http_stats_t;
void pb_http_stats(const pb_http_t *http, pb_http_stats_t *out);

#endif /* PB_HTTP_H */
