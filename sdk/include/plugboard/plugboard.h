/*
 * plugboard.h - everything a plugboard connector may include.
 *
 * A connector is a shared object that exports one function,
 * plugboard_connector_entry(), returning a static descriptor.  The host
 * loads it with dlopen(RTLD_NOW | RTLD_LOCAL), checks the descriptor's ABI
 * version and size, validates the admin's settings against the settings the
 * descriptor declares, and only then calls open().
 *
 * A connector links nothing from the host executable: every service the host
 * offers (emitting events, reading events, logging, clock, memory) is a
 * function pointer in the host API table passed to open().  The table is
 * append-only: entries added in a later revision of an ABI go at the end,
 * after an "ABI 1.n" marker (PLUGBOARD_ABI_VERSION does not change), and a
 * connector built against a newer header tests them with PLUGBOARD_API_HAS
 * before use.  The descriptor grows the same way; its size field tells the
 * host how much of it the plugin has.  docs/sdk.md states the policy.
 *
 * Threading rules (ABI 1, and 1.1 for run):
 *   - open, close, deliver and webhook of one connector instance are called
 *     from that instance's actor thread, one at a time.  When the admin
 *     sets a connector's concurrency above 1, deliver runs on that many
 *     delivery threads instead: against one shared state if the
 *     descriptor sets PLUGBOARD_DELIVER_THREAD_SAFE, otherwise each
 *     thread gets a state of its own (opened and closed on the actor
 *     thread), so calls on one state never overlap.  Events with the same
 *     key reach deliver one at a time, in order, whatever the concurrency.
 *   - A pull source's run (ABI 1.1) runs on a thread of its own, beside
 *     deliver and webhook of the same (actor) state; the host starts it
 *     after open and waits for it to return before close.
 *   - Host API functions may be called from the thread the host called
 *     into.  A connector's own threads may call log, now_ms, monotonic_ms,
 *     alloc and free only; they must all be joined before close() returns.
 *     (`plugboard plugin-check` detects calls from other threads.)
 *
 * Ownership rules:
 *   - Strings and views the host passes in are borrowed for the duration
 *     of the call that received them.  Copy what you keep.
 *   - Memory that crosses the boundary is allocated with api->alloc and
 *     freed with api->free.
 *   - Strings in the descriptor are static and live as long as the .so.
 */
#ifndef PLUGBOARD_H
#define PLUGBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes.  A major change (a field removed or moved,
 * a callback's meaning changed) bumps it; the host refuses plugins built for
 * another ABI with a message naming both numbers. */
#define PLUGBOARD_ABI_VERSION 1

/* The symbol every connector exports. */
#define PLUGBOARD_ENTRY_SYMBOL "plugboard_connector_entry"

/* ------------------------------------------------------------------ */
/* Canonical event types (docs/events.md lists their fields).          */
/* ------------------------------------------------------------------ */

#define PLUGBOARD_EV_CONTACT_UPSERTED      "contact.upserted"
#define PLUGBOARD_EV_DEAL_STAGE_CHANGED    "deal.stage_changed"
#define PLUGBOARD_EV_PAYMENT_SUCCEEDED     "payment.succeeded"
#define PLUGBOARD_EV_PAYMENT_FAILED        "payment.failed"
#define PLUGBOARD_EV_PAYMENT_REFUNDED      "payment.refunded"
#define PLUGBOARD_EV_SUBSCRIPTION_CANCELED "subscription.canceled"
#define PLUGBOARD_EV_DISPUTE_OPENED        "dispute.opened"
#define PLUGBOARD_EV_TICKET_CREATED        "ticket.created"
#define PLUGBOARD_EV_TICKET_UPDATED        "ticket.updated"
#define PLUGBOARD_EV_TICKET_SOLVED         "ticket.solved"
#define PLUGBOARD_EV_EMAIL_DELIVERED       "email.delivered"
#define PLUGBOARD_EV_EMAIL_BOUNCED         "email.bounced"
#define PLUGBOARD_EV_EMAIL_COMPLAINED      "email.complained"
#define PLUGBOARD_EV_DELIVERY_DEAD         "plugboard.delivery.dead"
/*
 * A source emits this for a verified vendor item it cannot map (another
 * api_version's shape, one malformed event in a batch), with data
 * "reason" (string: why, for the admin; no secrets) and "payload"
 * (string: the item as the vendor sent it).  The host journals it with
 * the request's other events, so the vendor still gets its 2xx, routes it
 * nowhere and keeps it at once as a dead letter of the source connector
 * (route "(ingress)", last error = reason).  It can be shown and dropped;
 * it cannot be replayed.  Hosts before it route it like any other type
 * (usually nowhere).
 */
#define PLUGBOARD_EV_INGRESS_UNMAPPED      "plugboard.ingress.unmapped"
#define PLUGBOARD_EV_CONNECTOR_UNHEALTHY   "plugboard.connector.unhealthy"

/* A connector that consumes every type lists this one pattern. */
#define PLUGBOARD_EV_ANY "*"

/* ------------------------------------------------------------------ */
/* Declared settings                                                   */
/* ------------------------------------------------------------------ */

typedef enum plugboard_setting_type {
    PLUGBOARD_SETTING_STRING = 1,
    PLUGBOARD_SETTING_INT = 2,      /* 64-bit signed, range [min, max] */
    PLUGBOARD_SETTING_BOOL = 3,
    PLUGBOARD_SETTING_DURATION = 4, /* "250ms", "5s", "15m", "1h"; read as ms */
} plugboard_setting_type_t;

/*
 * One setting a connector accepts.  The host rejects unknown settings,
 * values of the wrong type, out-of-range numbers and missing required
 * settings before open() is called, naming the config file and line.
 * A secret setting may be given as "env:NAME" or "file:/path"; the host
 * resolves it and never logs or prints its value.
 */
typedef struct plugboard_setting_spec {
    const char *name;
    plugboard_setting_type_t type;
    bool required;
    bool secret;
    const char *default_value; /* as text, NULL for none */
    int64_t min;               /* INT and DURATION: bounds, inclusive;  */
    int64_t max;               /* min == max == 0 means unbounded       */
    const char *help;          /* one line for `plugboard describe`      */
} plugboard_setting_spec_t;

/* Opaque: the validated settings of one connector instance. */
typedef struct plugboard_settings plugboard_settings_t;

/* ------------------------------------------------------------------ */
/* Events: an opaque read-only view and a builder                      */
/* ------------------------------------------------------------------ */

/* Opaque view of one event, borrowed for the duration of the call. */
typedef struct plugboard_event plugboard_event_t;

/* Opaque event under construction; owned by the connector until emitted. */
typedef struct plugboard_builder plugboard_builder_t;

/* The kinds of value a field can hold. */
typedef enum plugboard_value_kind {
    PLUGBOARD_VALUE_MISSING = 0,
    PLUGBOARD_VALUE_NIL,
    PLUGBOARD_VALUE_BOOL,
    PLUGBOARD_VALUE_INT,
    PLUGBOARD_VALUE_FLOAT,
    PLUGBOARD_VALUE_STRING,
    PLUGBOARD_VALUE_ARRAY,
    PLUGBOARD_VALUE_MAP,
} plugboard_value_kind_t;

/* ------------------------------------------------------------------ */
/* Delivery results                                                     */
/* ------------------------------------------------------------------ */

typedef enum plugboard_outcome {
    PLUGBOARD_OK = 0,     /* delivered; the host will not send it again     */
    PLUGBOARD_RETRY = 1,  /* transient: try again later (network, 5xx, 429) */
    PLUGBOARD_REJECT = 2, /* permanent: dead-letter now (validation 4xx)    */
    /* ABI 1, appended: not a failure of this event.  The vendor asks to
     * wait (a 429, a daily request limit, the connector's own pacing);
     * the host sends it again after retry_after_ms (or the route's
     * backoff when 0) and does not count the hold toward the route's
     * attempts, so a long rate limit never dead-letters.  The next send
     * still carries a higher attempt number.  Hosts before this value
     * treat it as PLUGBOARD_RETRY. */
    PLUGBOARD_HOLD = 3,
} plugboard_outcome_t;

#define PLUGBOARD_REASON_MAX 256

/* Longest ordering key and dedupe id, in bytes (docs/events.md). */
#define PLUGBOARD_KEY_MAX 256
/* Most events one webhook or deliver call, or one pull-source batch
 * (between two flushes), may emit. */
#define PLUGBOARD_EMIT_MAX 1000
/* Longest webhook answer body api->respond keeps, in bytes. */
#define PLUGBOARD_RESPONSE_BODY_MAX 4096

/*
 * What deliver() reports.  The host zeroes it before the call; a deliver
 * that returns without setting outcome has delivered (PLUGBOARD_OK).
 * retry_after_ms: with PLUGBOARD_RETRY, the earliest time to try again
 * (e.g. from a 429 Retry-After), 0 to let the route's backoff decide.
 * reason: a short human-readable cause, stored with the delivery and shown
 * to admins; never put secrets in it.
 */
typedef struct plugboard_result {
    plugboard_outcome_t outcome;
    int64_t retry_after_ms;
    char reason[PLUGBOARD_REASON_MAX];
} plugboard_result_t;

/* ------------------------------------------------------------------ */
/* Webhooks                                                             */
/* ------------------------------------------------------------------ */

typedef struct plugboard_header {
    const char *name;  /* as received; compare case-insensitively */
    const char *value;
} plugboard_header_t;

/*
 * An HTTP request to /hooks/<connector-name>, fully received.  The body is
 * the exact bytes sent (not NUL-terminated; body_len may be 0).  Borrowed
 * for the duration of the webhook call.
 */
typedef struct plugboard_request {
    const char *method;
    const char *path;     /* the URL path, e.g. "/hooks/payments" */
    const char *query;    /* raw query string without '?', or "" */
    const plugboard_header_t *headers;
    size_t header_count;
    const uint8_t *body;
    size_t body_len;
    int64_t received_ms;  /* wall clock when the body was complete */
} plugboard_request_t;

/*
 * The answer to a webhook.  The host fills status 200 and an empty body
 * before the call.  If the connector emitted events during the call and
 * leaves a 2xx status, the host sends the answer only after the events are
 * durable; if they cannot be made durable the sender gets 503 instead.
 * Set the body with api->respond().
 */
typedef struct plugboard_response plugboard_response_t;

/* ------------------------------------------------------------------ */
/* The host API table                                                  */
/* ------------------------------------------------------------------ */

/* Opaque handle for one connector instance, passed back to every call. */
typedef struct plugboard_host plugboard_host_t;

typedef enum plugboard_log_level {
    PLUGBOARD_LOG_ERROR = 0,
    PLUGBOARD_LOG_WARN = 1,
    PLUGBOARD_LOG_INFO = 2,
    PLUGBOARD_LOG_DEBUG = 3,
} plugboard_log_level_t;

typedef struct plugboard_host_api {
    uint32_t abi_version; /* the host's PLUGBOARD_ABI_VERSION */
    uint32_t size;        /* sizeof the host's table          */

    /* ABI 1 */

    /* Log one line, prefixed with the connector name.  fmt is printf-like;
     * the line is dropped cheaply when level is above the host's level. */
    void (*log)(plugboard_host_t *host, plugboard_log_level_t level,
                const char *fmt, ...) __attribute__((format(printf, 3, 4)));

    /* Wall clock and monotonic clock, in milliseconds. */
    int64_t (*now_ms)(void);
    int64_t (*monotonic_ms)(void);

    /* Memory for anything that crosses the boundary.  alloc returns NULL
     * when out of memory; free(NULL) does nothing. */
    void *(*alloc)(size_t size);
    void (*free)(void *ptr);

    /* Settings, validated and with defaults applied.  Borrowed until close.
     * setting_string returns NULL when the setting is absent and has no
     * default.  Secret values are resolved here and nowhere else. */
    const char *(*setting_string)(const plugboard_settings_t *s,
                                  const char *name);
    int64_t (*setting_int)(const plugboard_settings_t *s, const char *name);
    bool (*setting_bool)(const plugboard_settings_t *s, const char *name);
    bool (*setting_is_set)(const plugboard_settings_t *s, const char *name);

    /* Reading an event.  Paths are dot-separated segments into the
     * event's data ("customer.email"): in a map a segment is a key, in an
     * array the decimal index of an element from 0 ("ticket.tags.0",
     * "items.1.sku"; no sign, no leading zero, below the array's length,
     * or the path is missing).  api->event_count (ABI 1.1) gives an
     * array's length.  The envelope fields are separate calls.
     * Returned strings are borrowed from the view and NOT NUL-terminated
     * unless noted: use the length. */
    const char *(*event_type)(const plugboard_event_t *ev);  /* NUL-term */
    const char *(*event_id)(const plugboard_event_t *ev);    /* NUL-term */
    const char *(*event_source)(const plugboard_event_t *ev);/* NUL-term */
    /* NUL-term; "" when the event has no key (unordered) */
    const char *(*event_key)(const plugboard_event_t *ev);
    int64_t (*event_time_ms)(const plugboard_event_t *ev);
    uint32_t (*event_attempt)(const plugboard_event_t *ev);  /* 1 = first */
    plugboard_value_kind_t (*event_kind)(const plugboard_event_t *ev,
                                         const char *path);
    /* true and *out set when the field exists with that kind */
    bool (*event_string)(const plugboard_event_t *ev, const char *path,
                         const char **out, size_t *len);
    bool (*event_int)(const plugboard_event_t *ev, const char *path,
                      int64_t *out);
    bool (*event_bool)(const plugboard_event_t *ev, const char *path,
                       bool *out);
    /* The whole event (envelope and data) as one line of JSON, NUL-
     * terminated.  Caller frees with api->free.  NULL when out of memory. */
    char *(*event_to_json)(const plugboard_event_t *ev);

    /* Building and emitting events.  builder_new returns NULL when out of
     * memory or when type is not a valid event type name.  Setters
     * create intermediate maps along a dotted path and return 0, or a
     * negative code when the path is empty or crosses a non-map value. */
    plugboard_builder_t *(*builder_new)(plugboard_host_t *host,
                                        const char *type);
    /* The ordering key (docs/events.md: usually the lower-cased e-mail).
     * The string is copied.  At most PLUGBOARD_KEY_MAX (256) bytes of
     * UTF-8; a longer or invalid one returns PLUGBOARD_E_INVALID and
     * leaves the key as it was.  NULL or "" clears it (unordered). */
    int (*builder_set_key)(plugboard_builder_t *b, const char *key);
    /* A vendor's own event id: the host accepts an event with a given
     * dedupe id once, across restarts (within the retention window).
     * Copied; same limits and answers as builder_set_key. */
    int (*builder_set_dedupe_id)(plugboard_builder_t *b, const char *id);
    int (*builder_set_time_ms)(plugboard_builder_t *b, int64_t time_ms);
    int (*builder_set_string)(plugboard_builder_t *b, const char *path,
                              const char *value, size_t len);
    int (*builder_set_int)(plugboard_builder_t *b, const char *path,
                           int64_t value);
    int (*builder_set_bool)(plugboard_builder_t *b, const char *path,
                            bool value);
    int (*builder_set_null)(plugboard_builder_t *b, const char *path);
    /* Set a field from JSON text (object, array or scalar; len bytes).
     * Returns PLUGBOARD_E_INVALID when the text is not valid JSON. */
    int (*builder_set_json)(plugboard_builder_t *b, const char *path,
                            const char *json, size_t len);
    /* Discard a builder that will not be emitted; NULLs *b. */
    void (*builder_discard)(plugboard_builder_t **b);

    /* Hand an event to the host; takes ownership and NULLs *b, whatever
     * the result.  Allowed inside webhook(), deliver() (on every
     * delivery thread, and in a worker process) and run():
     *   - inside webhook(), the event is staged and becomes durable
     *     together with the request's other events before the vendor is
     *     answered;
     *   - inside deliver(), the events are sent when deliver returns,
     *     with causation = the delivered event's id and its correlation;
     *   - inside run(), the events are staged until api->flush hands them
     *     over as one batch.
     * From open(), close() or a connector's own thread, emit returns
     * PLUGBOARD_E_INVALID and the event is dropped.  One call may emit at
     * most PLUGBOARD_EMIT_MAX (1000) events; later ones return
     * PLUGBOARD_E_FULL.  Returns 0, or a negative PLUGBOARD_E_* code
     * (plugboard_strerror, in plugboard/helpers.h, words it). */
    int (*emit)(plugboard_host_t *host, plugboard_builder_t **b);

    /* Webhook answers.  Sets status and a short text body (copied; NULL
     * for none).  A body longer than PLUGBOARD_RESPONSE_BODY_MAX (4096)
     * bytes is cut there, on a UTF-8 character boundary.  A later call
     * replaces an earlier one. */
    void (*respond)(plugboard_response_t *resp, int status,
                    const char *body);
    /* Case-insensitive header lookup; NULL when absent.  When the header
     * appears more than once, the first value is returned. */
    const char *(*request_header)(const plugboard_request_t *req,
                                  const char *name);

    /* Count something in the connector's metrics:
     * plugboard_connector_custom_total{connector,name}.  name becomes a
     * label, so it must match [a-z0-9_]{1,63}, and a connector gets at
     * most 32 distinct names; delta must be >= 0 (it is a counter).
     * Anything else is dropped: counted in
     * plugboard_connector_custom_dropped_total{connector} and logged once
     * at warn per kind of misuse.  Thread-safe (any delivery thread). */
    void (*count)(plugboard_host_t *host, const char *name, int64_t delta);

    /* ABI 1.1 */
    /* Entries from here on are absent from an ABI 1 host's (shorter)
     * table: test each with PLUGBOARD_API_HAS(api, entry) before use. */

    /* The vendor refused this connector's credentials (HTTP 401/403,
     * SMTP 535).  Call it from deliver or webhook, beside the RETRY or
     * REJECT the refusal leads to.  The host remembers when and why
     * (reason, copied, cut to 255 bytes; NULL for none) until a delivery
     * that began after the refusal succeeds, shows it in `plugboard ctl
     * status`, and tells the owner of every route to this connector
     * (plugboard.connector.unhealthy, cause "auth") once per
     * alert_interval.  The reason goes to status and to owners' mail,
     * never into a label; it must not contain the secret or any part of
     * it ("HTTP 401: token expired", not the token). */
    void (*auth_failed)(plugboard_host_t *host, const char *reason);

    /* How many elements the array, or entries the map, at path holds
     * (paths as for event_kind); 0 for any other value and for a missing
     * path.  So a connector walks "ticket.tags" with event_count and
     * event_string(ev, "ticket.tags.<i>", ...). */
    size_t (*event_count)(const plugboard_event_t *ev, const char *path);

    /* Pull sources (the descriptor's run callback), from run's thread
     * only; anywhere else they answer PLUGBOARD_E_INVALID (flush,
     * durable) or false (run_wait).
     *
     * flush: hand the events emitted since the last flush to the host as
     * one batch, which becomes durable (or is refused) as a whole; *ticket
     * gets its number (increasing, > 0), or 0 when nothing was emitted.
     * Returns 0, PLUGBOARD_E_STOPPING when the host is stopping (the
     * events are discarded), or another negative code.  Events emitted in
     * run and never flushed are discarded when run returns. */
    int (*flush)(plugboard_host_t *host, uint64_t *ticket);
    /* Has batch ticket been made durable?  1 once it is in the journal
     * (advance your own cursor past its events only then), 0 while the
     * host still works on it, PLUGBOARD_E_REFUSED when the journal did
     * not take it (emit its events again), PLUGBOARD_E_UNKNOWN when it
     * was settled so long ago (more than 1024 refusals since) that the
     * host no longer knows - treat it as refused - and
     * PLUGBOARD_E_INVALID for a ticket this run never got.  Never
     * blocks.  Ask in ticket order and stop at the first answer that is
     * not 1: a cursor must not pass a batch that is not durable. */
    int (*durable)(plugboard_host_t *host, uint64_t ticket);
    /* Wait timeout_ms, or less when the host wants run to return: then
     * it answers false (the host is stopping, or replacing this
     * instance) and run must return now; true when the time passed. */
    bool (*run_wait)(plugboard_host_t *host, int64_t timeout_ms);
} plugboard_host_api_t;

/*
 * Does the host's table have entry field?  Entries appended in a later
 * revision of this ABI are absent from an older host's (shorter) table:
 *     if (PLUGBOARD_API_HAS(api, some_newer_call)) api->some_newer_call(...);
 */
#define PLUGBOARD_API_HAS(api, field)                                       \
    ((api)->size >= offsetof(plugboard_host_api_t, field) +                  \
                        sizeof((api)->field) &&                              \
     (api)->field != NULL)

/* Error codes returned by host API calls. */
#define PLUGBOARD_E_INVALID  (-22) /* bad argument or event             */
#define PLUGBOARD_E_NOMEM    (-12) /* out of memory                     */
#define PLUGBOARD_E_STOPPING (-125) /* host is stopping: emit refused   */
#define PLUGBOARD_E_FULL     (-105) /* too many events staged in a call */
#define PLUGBOARD_E_TOOBIG   (-27) /* a value longer than an event holds */
/* ABI 1.1, from durable(): */
#define PLUGBOARD_E_REFUSED  (-111) /* the journal did not take the batch */
#define PLUGBOARD_E_UNKNOWN  (-61)  /* its fate is no longer known: treat
                                       it as refused */

/* ------------------------------------------------------------------ */
/* The descriptor                                                      */
/* ------------------------------------------------------------------ */

/* deliver() may run concurrently on several threads with one state. */
#define PLUGBOARD_DELIVER_THREAD_SAFE (1u << 0)

#define PLUGBOARD_ERRBUF_MAX 256

typedef struct plugboard_connector {
    uint32_t abi_version; /* PLUGBOARD_ABI_VERSION */
    uint32_t size;        /* sizeof(plugboard_connector_t) */

    /* ABI 1 */
    const char *name;     /* plugin name, [a-z0-9_-]+, e.g. "stripe" */
    const char *version;  /* the plugin's own version, e.g. "1.2.0" */
    const char *summary;  /* one line */
    const plugboard_setting_spec_t *settings; /* ends with {.name = NULL} */
    const char *const *consumes; /* event types, NULL-terminated, or NULL */
    const char *const *emits;    /* event types, NULL-terminated, or NULL */
    uint32_t flags;              /* PLUGBOARD_DELIVER_* */
    uint32_t deliver_timeout_ms; /* a deliver that takes longer is a
                                    transient failure; 0 = host default */

    /*
     * Required.  Create the instance's state from validated settings.
     * api and host are valid until close() returns; keep them in state.
     * On failure write a message to errbuf (PLUGBOARD_ERRBUF_MAX bytes,
     * no secrets) and return a negative number; close is then not called.
     */
    int (*open)(const plugboard_host_api_t *api, plugboard_host_t *host,
                const plugboard_settings_t *settings, void **state,
                char *errbuf);

    /* Required.  Free everything; no thread the connector started may
     * still run when close returns.  Called once for each open that
     * succeeded, with the state that open stored (NULL only if open
     * stored NULL); never after an open that failed. */
    void (*close)(void *state);

    /* Sinks: deliver one event.  Fill result (see plugboard_result_t);
     * the host redelivers on RETRY, dead-letters on REJECT. */
    void (*deliver)(void *state, const plugboard_event_t *event,
                    plugboard_result_t *result);

    /* Push sources: handle one webhook request.  Verify it, emit events
     * with api->emit, and set the answer with api->respond. */
    void (*webhook)(void *state, const plugboard_request_t *request,
                    plugboard_response_t *response);

    /* ABI 1.1: a plugin built against an ABI 1 header has no fields from
     * here on (its size does not cover them); the host reads them as
     * NULL. */

    /*
     * Pull sources: poll a vendor API or tail a file until the host asks
     * to stop.  The host calls run once, on a thread of its own, after
     * open succeeded, and waits for it to return before close; it runs
     * beside deliver and webhook of the same state, so guard what they
     * share.  Emit events with api->emit, hand them over with api->flush,
     * learn with api->durable when a batch is in the journal (advance the
     * vendor cursor only then), and wait between polls with
     * api->run_wait, returning as soon as it answers false.  Needs
     * isolation = "thread" (a worker process does not run it).
     */
    void (*run)(void *state);
} plugboard_connector_t;

/* The function a connector exports under PLUGBOARD_ENTRY_SYMBOL. */
typedef const plugboard_connector_t *(*plugboard_entry_fn)(void);

#define PLUGBOARD_CONNECTOR_EXPORT \
    __attribute__((visibility("default"))) const plugboard_connector_t *

#ifdef __cplusplus
}
#endif

#endif /* PLUGBOARD_H */
