/*
 * hubspot.h - what the parts of the hubspot connector share: its state,
 * the paced and classified call to the CRM v3 API, and the two callbacks.
 *
 * hubspot.c owns the descriptor, the settings, open/close and every HTTP
 * call (pacing per token, 429 handling, error classification);
 * hubspot_sink.c turns canonical events into CRM writes;
 * hubspot_webhook.c verifies HubSpot's v3 signatures and emits events.
 * Internal to the plugin: nothing here is exported from the .so.
 */
#ifndef HUBSPOT_H
#define HUBSPOT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <plugboard/helpers.h>
#include <plugboard/plugboard.h>
#include <plugboard/vendor.h>

#define HS_ID_MAX 32      /* HubSpot object ids: decimal, well below */
#define HS_EMAIL_MAX 254  /* RFC 5321 path limit */
#define HS_SETTLE_MS 5000 /* search index catch-up after an unknown outcome */

/* The canonical types that become a note on the contact's timeline. */
enum {
    HS_NOTE_PAYMENT_SUCCEEDED,
    HS_NOTE_PAYMENT_FAILED,
    HS_NOTE_PAYMENT_REFUNDED,
    HS_NOTE_SUBSCRIPTION_CANCELED,
    HS_NOTE_DISPUTE_OPENED,
    HS_NOTE_TICKET_CREATED,
    HS_NOTE_TICKET_UPDATED,
    HS_NOTE_TICKET_SOLVED,
    HS_NOTE_EMAIL_BOUNCED,
    HS_NOTE_COUNT,
};

/* A sliding window of request times (monotonic ms). */
typedef struct hs_pacer {
    int64_t *sent; /* ring of cap times */
    size_t cap;    /* requests allowed per window; 0 = unpaced */
    size_t count;
    size_t head; /* the oldest when count == cap */
    int64_t window_ms;
} hs_pacer_t;

typedef struct hs_state {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    plugboard_http_t *http;
    char *base;                /* api_base without a trailing '/' */
    char *auth_header;         /* "Authorization: Bearer ..." */
    const char *client_secret; /* borrowed from the settings; may be NULL */
    const char *public_url;    /* borrowed; may be NULL */
    int64_t tolerance_ms;
    int64_t max_wait_ms;
    int daily_reset_offset_min;
    bool create_contacts;
    const char *event_property; /* borrowed; may be NULL */
    struct hs_limits *limits;   /* pacing and 429 hold of the token,
                                   shared; see hubspot.c */
    char *notes[HS_NOTE_COUNT]; /* note templates, owned */
} hs_state_t;

/* One call to the API. */
typedef struct hs_call {
    const char *what; /* for reasons: "search contact" */
    const char *method;
    const char *path; /* appended to api_base */
    json_t *body;     /* borrowed; NULL for none */
    bool search;      /* also paced by the search limit */
    bool fresh;       /* a create without idempotency: never resent */
    long status;      /* out: HTTP status, 0 when none */
    json_t *json;     /* out: the parsed answer, owned by the caller */
} hs_call_t;

/*
 * Make one paced call.  PLUGBOARD_OK when a 2xx came with a JSON body
 * (call->json set).  Otherwise res is filled (RETRY or REJECT, the vendor's
 * message in the reason) and call->status/json let the caller treat a
 * particular answer (404, 409) differently.  The caller json_decref()s
 * call->json in every case.
 */
plugboard_outcome_t hs_request(hs_state_t *st, hs_call_t *call,
                               plugboard_result_t *res);

/* The string at path as a new JSON string, or NULL when absent, empty or
 * not UTF-8. */
json_t *hs_event_string(hs_state_t *st, const plugboard_event_t *ev,
                        const char *path);

/* Trim and lower-case an address into buf; NULL when it is not one. */
const char *hs_email(const char *text, size_t len, char *buf, size_t size);

/* Is text a HubSpot object id (1..HS_ID_MAX-1 decimal digits)? */
bool hs_is_id(const char *text);

/* The callbacks. */
void hs_deliver(void *state, const plugboard_event_t *ev,
                plugboard_result_t *res);
void hs_webhook(void *state, const plugboard_request_t *req,
                plugboard_response_t *resp);

/* The index of a note type, or -1. */
int hs_note_index(const char *type);
extern const char *const hs_note_types[HS_NOTE_COUNT];

#endif /* HUBSPOT_H */
