/*
 * vendor.h - helpers for connectors that call a vendor's HTTP API.
 *
 * A small libcurl client (one easy handle, reused so connections stay
 * open), the parsing of Retry-After, the classification of an answer into
 * a delivery result (ok / retry / reject) the way every plugboard connector
 * classifies, and a JSON loader that keeps ids exact.  Linked into
 * connectors from libplugboard-sdk.a; a connector using it links libcurl
 * and jansson itself (the build does that for every plugin).
 *
 * A client is single-threaded: one per connector state (deliver and
 * webhook of one instance run on one thread), or one per worker.
 */
#ifndef PLUGBOARD_VENDOR_H
#define PLUGBOARD_VENDOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <plugboard/plugboard.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How much of a vendor's message goes into a delivery's reason. */
#define PLUGBOARD_VENDOR_MESSAGE_MAX 160

typedef struct plugboard_http plugboard_http_t;

typedef struct plugboard_http_options {
    const char *user_agent;     /* NULL: "plugboard" */
    int64_t connect_timeout_ms; /* <= 0: 5 s */
    int64_t timeout_ms;         /* whole exchange; <= 0: 30 s */
    size_t max_body;            /* answer bytes kept; 0: 4 MiB */
} plugboard_http_options_t;

/*
 * The answer to one request.  body is NUL-terminated and owned by the
 * client: valid until the next request or destroy.
 */
typedef struct plugboard_http_reply {
    long status;         /* HTTP status; 0 when no answer came */
    bool timed_out;      /* with status 0: the timeout expired */
    char transport[128]; /* with status 0: what went wrong */
    const char *body;
    size_t body_len;
    int64_t retry_after_ms; /* from Retry-After; -1 when absent */
} plugboard_http_reply_t;

/* A client, or NULL when out of memory.  Destroy with
 * plugboard_http_destroy, which NULLs the pointer. */
plugboard_http_t *plugboard_http_new(const plugboard_host_api_t *api,
                                     const plugboard_http_options_t *opt);
void plugboard_http_destroy(plugboard_http_t **c);

/*
 * Send one request and wait for the whole answer.  headers is a NULL-
 * terminated list of "Name: value" lines (may be NULL); body may be NULL
 * for none.  Redirects are not followed; only http and https are spoken;
 * loopback is never sent through a proxy.  Returns 0 when an answer came
 * (any status) or when the exchange failed in transport (status 0, see
 * reply->transport); -1 only when out of memory.  Vendor answers, even
 * errors, are ordinary outcomes: classify them.
 */
int plugboard_http_request(plugboard_http_t *c, const char *method,
                           const char *url, const char *const *headers,
                           const char *body, size_t body_len,
                           plugboard_http_reply_t *reply);

/*
 * Send the next request on a new connection.  libcurl silently sends a
 * request again when the reused connection it went out on turns out to be
 * dead before any answer came, which would repeat a create the vendor may
 * already have done; call this before a request that creates something and
 * carries no idempotency key.
 */
void plugboard_http_fresh_next(plugboard_http_t *c);

/* A header of the last answer (case-insensitive), or NULL.  Borrowed
 * until the next request. */
const char *plugboard_http_header(plugboard_http_t *c, const char *name);

/* Percent-encode len bytes of s for a URL query or form value.  Caller
 * frees with api->free; NULL when out of memory. */
char *plugboard_http_escape(plugboard_http_t *c, const char *s, size_t len);

/*
 * Milliseconds to wait according to a Retry-After value: delta-seconds
 * ("120") or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT") relative to
 * now_ms (0 when the date has passed).  -1 when value is NULL or neither.
 */
int64_t plugboard_retry_after_ms(const char *value, int64_t now_ms);

/*
 * The delivery result for an answer, by the rules every plugboard
 * connector follows:
 *   2xx                        -> OK
 *   429                        -> HOLD after Retry-After (else
 *                                 default_wait_ms): spends no attempt
 *   401, 403                   -> REJECT "authentication failed: check
 *                                 the token"
 *   408, 409, 425, 5xx         -> RETRY
 *   other 4xx                  -> REJECT with "<what>: HTTP <n>: <message>"
 *   no answer (timeout, refused connection, DNS) -> RETRY
 * what names the operation ("create contact"); message is the vendor's
 * own explanation (may be NULL), cleaned of control characters and cut
 * to PLUGBOARD_VENDOR_MESSAGE_MAX bytes.  Returns the outcome.
 */
plugboard_outcome_t plugboard_http_classify(const plugboard_http_reply_t *r,
                                            const char *what,
                                            const char *message,
                                            int64_t default_wait_ms,
                                            plugboard_result_t *out);

/*
 * When r is a 401 or 403, tell the host that vendor ("HubSpot") refused
 * the connector's credentials (api->auth_failed, ABI 1.1; nothing on an
 * older host), so the route owners hear of it once per interval instead
 * of meeting only dead letters.  The reason the host keeps is "<vendor>
 * refused the credentials: HTTP <n>": never the token.  Call it before
 * plugboard_http_classify, from the thread the host called in on.
 */
void plugboard_http_report_auth(const plugboard_host_api_t *api,
                                plugboard_host_t *host,
                                const plugboard_http_reply_t *r,
                                const char *vendor);

/* Printf into out->reason, replacing control characters by spaces. */
void plugboard_result_set(plugboard_result_t *out, plugboard_outcome_t outcome,
                          int64_t retry_after_ms, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Parse JSON so that ids stay exact: integers that do not fit in 64 bits
 * (jansson refuses them, failing the whole document) are read as strings
 * instead, digit for digit.  Duplicate keys in an object make the
 * document invalid (JSON_REJECT_DUPLICATES): the one rule for every
 * vendor document.  Returns a new reference, or NULL with err filled.
 */
json_t *plugboard_json_loadb(const char *text, size_t len, json_error_t *err);

/*
 * An id as the vendor spells it, into buf: a string as is, an integer in
 * decimal.  NULL when v is neither (a float is never an exact id), empty,
 * or longer than size - 1.
 */
const char *plugboard_json_id(const json_t *v, char *buf, size_t size);

/* Bytes of an unmapped item kept in its dead letter. */
#define PLUGBOARD_UNMAPPED_PAYLOAD_MAX (16u * 1024u)

/*
 * Inside webhook(): keep a verified vendor item this source cannot map as
 * a dead letter of the source (PLUGBOARD_EV_INGRESS_UNMAPPED), with reason
 * (what the admin reads; no secrets) and the item's bytes (the first
 * PLUGBOARD_UNMAPPED_PAYLOAD_MAX; as "payload" when UTF-8, else base64 in
 * "payload_base64").  Its dedupe id is dedupe_prefix followed by the
 * SHA-256 of the item, so a vendor resending it makes one dead letter.
 * The item becomes durable with the request's events, before the vendor
 * is answered.  Returns emit's result (0, or a negative code).
 */
int plugboard_emit_unmapped(const plugboard_host_api_t *api,
                            plugboard_host_t *host, const char *dedupe_prefix,
                            const char *reason, const void *item, size_t len);

/*
 * Inside webhook(), for a verified request whose body is not JSON (or has
 * a duplicate key): keep the body as one unmapped dead letter (as
 * plugboard_emit_unmapped, reason "malformed JSON (or a duplicate key)")
 * and answer 200 {"received":true,"events":0,"unmappable":"malformed
 * JSON"}, so the vendor does not retry it for days; when it cannot be
 * kept, answer 503 so the vendor sends it again later.  position is where
 * the parser stopped (for the log).  Counts "malformed_json" or
 * "emit_failed".  Returns emit's result.
 */
int plugboard_webhook_keep_malformed(const plugboard_host_api_t *api,
                                     plugboard_host_t *host,
                                     plugboard_response_t *resp,
                                     const char *dedupe_prefix,
                                     const plugboard_request_t *req,
                                     int position);

#ifdef __cplusplus
}
#endif

#endif /* PLUGBOARD_VENDOR_H */
