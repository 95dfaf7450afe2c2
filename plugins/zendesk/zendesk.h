/*
 * zendesk.h - what the parts of the zendesk connector share: its state,
 * the classified call to the Tickets API, and the two callbacks.
 *
 * zendesk.c owns the descriptor, settings, open/close, templates and
 * every HTTP call; zendesk_sink.c turns canonical events into tickets and
 * comments; zendesk_webhook.c verifies Zendesk's webhook signatures and
 * emits ticket events.  Internal to the plugin.
 */
#ifndef ZENDESK_H
#define ZENDESK_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <plugboard/helpers.h>
#include <plugboard/plugboard.h>
#include <plugboard/vendor.h>

#define ZD_ID_MAX 32
#define ZD_EXTERNAL_ID_MAX 255
#define ZD_EMAIL_MAX 254
#define ZD_MAX_TYPES 16

/* Subject and comment templates for one event type. */
typedef struct zd_template {
    const char *type; /* borrowed: a consumed type */
    char *subject;    /* owned */
    char *body;       /* owned */
} zd_template_t;

typedef struct zd_state {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    plugboard_http_t *http;
    char *base;                 /* api_base without a trailing '/' */
    char *auth_header;          /* "Authorization: Basic|Bearer ..." */
    const char *signing_secret; /* borrowed; may be NULL */
    int64_t tolerance_ms;
    const char *external_id; /* template, borrowed; may be NULL */
    const char *priority;    /* borrowed */
    json_t *tags;            /* array of strings, owned */
    bool public_comments;
    bool create_on[ZD_MAX_TYPES]; /* by index into zd_consumes */
    zd_template_t templates[ZD_MAX_TYPES];
} zd_state_t;

/* One call to the API. */
typedef struct zd_call {
    const char *what; /* for reasons: "create ticket" */
    const char *method;
    const char *path;        /* appended to api_base */
    json_t *body;            /* borrowed; NULL for none */
    const char *idempotency; /* Idempotency-Key, or NULL */
    bool fresh;              /* not idempotent: never resent by libcurl */
    long status;             /* out */
    json_t *json;            /* out: parsed answer, owned by the caller */
} zd_call_t;

/* Make one call.  PLUGBOARD_OK when a 2xx came with a JSON object;
 * otherwise res is filled.  The caller json_decref()s call->json. */
plugboard_outcome_t zd_request(zd_state_t *st, zd_call_t *call,
                               plugboard_result_t *res);

/* The consumed types, NULL-terminated, and the index of one (or -1). */
extern const char *const zd_consumes[];
int zd_type_index(const char *type);

/* ISO-8601 ("2099-07-04T05:33:18Z", fractions and offsets allowed) as
 * UTC milliseconds; false when text is not that. */
bool zd_iso_ms(const char *text, int64_t *ms);

/* Trim and lower-case an address into buf; NULL when it is not one. */
const char *zd_email(const char *text, size_t len, char *buf, size_t size);

void zd_deliver(void *state, const plugboard_event_t *ev,
                plugboard_result_t *res);
void zd_webhook(void *state, const plugboard_request_t *req,
                plugboard_response_t *resp);

#endif /* ZENDESK_H */
