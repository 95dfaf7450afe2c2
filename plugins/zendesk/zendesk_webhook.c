/*
 * zendesk_webhook.c - Zendesk webhooks into ticket.created,
 * ticket.updated and ticket.solved.
 *
 * Verification as Zendesk documents it
 * (developer.zendesk.com/documentation/webhooks/verifying/):
 * X-Zendesk-Webhook-Signature is the base64 HMAC-SHA256, under the
 * webhook's signing secret (the string as shown, not decoded), of
 * X-Zendesk-Webhook-Signature-Timestamp followed by the raw body.  Zendesk
 * sets no replay window; this connector refuses timestamps further than
 * `tolerance` from now, and the signature is checked first so a stale
 * genuine request is told apart from a forged one.
 *
 * Two body shapes are understood:
 *   - event webhooks ("type": "zen:event-type:ticket.created", ...,
 *     "detail": the ticket, "event": what changed).  Other event types
 *     (users, organizations) are acknowledged and ignored;
 *   - trigger webhooks, whose body the admin writes: the shape documented
 *     in plugins/zendesk/README.md ({"event": "ticket.created",
 *     "ticket": {"id": "{{ticket.id}}", ...}}), with the flat keys
 *     community examples use (ticketID, assigneeEmail) also read.
 * A body that verifies but cannot be mapped (no ticket id) is
 * acknowledged, logged and counted: a 4xx would make Zendesk retry it and
 * eventually deactivate the webhook.
 */
#include "zendesk.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SIG_HEADER "X-Zendesk-Webhook-Signature"
#define S_TS_HEADER "X-Zendesk-Webhook-Signature-Timestamp"
#define S_INVOCATION_HEADER "X-Zendesk-Webhook-Invocation-Id"
#define S_EVENT_PREFIX "zen:event-type:"
#define S_B64_LEN 44
#define S_MAX_CHANGED 4

/* One ticket event, normalised from either body shape.  Strings are
 * borrowed from the parsed body unless they are buffers here. */
typedef struct s_ticket {
    bool unmappable;  /* a ticket webhook without a ticket id */
    const char *type; /* canonical */
    char id[ZD_ID_MAX];
    const char *subject;
    const char *description;
    char status[16];
    char previous_status[16];
    char priority[16];
    const char *url;
    const char *comment;
    json_t *tags; /* owned */
    char email[ZD_EMAIL_MAX + 1];
    const char *name;
    char requester_id[ZD_ID_MAX];
    char assignee_email[ZD_EMAIL_MAX + 1];
    int64_t created_at;
    int64_t updated_at;
    int64_t time_ms;
    const char *changed[S_MAX_CHANGED];
    size_t changed_count;
    char dedupe[128];
} s_ticket_t;

/* ------------------------------------------------------------------ */
/* Signature                                                           */
/* ------------------------------------------------------------------ */

static int
s_verify(zd_state_t *st, const plugboard_request_t *req, const char **why,
         const char **counter)
{
    const char *sig = st->api->request_header(req, S_SIG_HEADER);
    const char *ts = st->api->request_header(req, S_TS_HEADER);
    uint8_t mac[PLUGBOARD_SHA256_LEN];
    char expected[S_B64_LEN + 1];
    size_t ts_len;
    uint8_t *msg;
    int64_t t;
    int64_t now;
    int rc;

    *counter = "signature_rejected";
    if (sig == NULL || ts == NULL) {
        *why = "missing " S_SIG_HEADER " or " S_TS_HEADER;
        *counter = "signature_missing";
        return 401;
    }
    ts_len = strlen(ts);
    msg = st->api->alloc(ts_len + req->body_len + 1);
    if (msg == NULL) {
        *why = "out of memory";
        *counter = "internal_error";
        return 503;
    }
    memcpy(msg, ts, ts_len);
    if (req->body_len > 0) {
        memcpy(msg + ts_len, req->body, req->body_len);
    }
    rc = plugboard_hmac_sha256(st->signing_secret, strlen(st->signing_secret),
                               msg, ts_len + req->body_len, mac);
    st->api->free(msg);
    if (rc != 0) {
        *why = "out of memory";
        *counter = "internal_error";
        return 503;
    }
    plugboard_base64_encode(mac, sizeof mac, expected);
    if (strlen(sig) != S_B64_LEN ||
        !plugboard_equal_ct(sig, expected, S_B64_LEN)) {
        *why = "invalid signature";
        return 401;
    }
    if (!zd_iso_ms(ts, &t)) {
        *why = "signature timestamp is not ISO-8601";
        *counter = "timestamp_rejected";
        return 401;
    }
    now = req->received_ms > 0 ? req->received_ms : st->api->now_ms();
    if (t < now - st->tolerance_ms || t > now + st->tolerance_ms) {
        *why = "timestamp outside the tolerance";
        *counter = "timestamp_rejected";
        return 401;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reading a ticket                                                    */
/* ------------------------------------------------------------------ */

/* The first non-empty string among the keys of obj. */
static const char *
s_first(json_t *obj, const char *a, const char *b, const char *c)
{
    const char *keys[] = {a, b, c};

    for (size_t i = 0; i < 3 && keys[i] != NULL; i++) {
        const char *v = json_string_value(json_object_get(obj, keys[i]));

        if (v != NULL && v[0] != '\0') {
            return v;
        }
    }
    return NULL;
}

/* A lower-case enumeration into buf when it is one of allowed. */
static void
s_enum(const char *value, char *buf, size_t size, const char *const *allowed)
{
    size_t n = value != NULL ? strlen(value) : 0;

    buf[0] = '\0';
    if (n == 0 || n >= size) {
        return;
    }
    for (size_t i = 0; i <= n; i++) {
        buf[i] = (char)tolower((unsigned char)value[i]);
    }
    for (size_t i = 0; allowed[i] != NULL; i++) {
        if (strcmp(buf, allowed[i]) == 0) {
            return;
        }
    }
    buf[0] = '\0';
}

static const char *const s_statuses[] = {"new",    "open",   "pending", "hold",
                                         "solved", "closed", NULL};
static const char *const s_priorities[] = {"low", "normal", "high", "urgent",
                                           NULL};

/* Tags from an array or a space-separated string ("{{ticket.tags}}"). */
static json_t *
s_tags(json_t *v)
{
    json_t *out = json_array();
    size_t i;
    json_t *t;

    if (json_is_array(v)) {
        json_array_foreach(v, i, t)
        {
            if (json_is_string(t) && json_string_length(t) > 0) {
                json_array_append(out, t);
            }
        }
    } else if (json_is_string(v)) {
        const char *p = json_string_value(v);

        while (*p != '\0') {
            size_t n;

            p += strspn(p, " ,");
            n = strcspn(p, " ,");
            if (n > 0) {
                json_array_append_new(out, json_stringn(p, n));
            }
            p += n;
        }
    }
    return out;
}

static void
s_email_into(const char *raw, char *buf)
{
    if (raw == NULL ||
        zd_email(raw, strlen(raw), buf, ZD_EMAIL_MAX + 1) == NULL) {
        buf[0] = '\0';
    }
}

static void
s_id_into(json_t *v, char *buf)
{
    if (plugboard_json_id(v, buf, ZD_ID_MAX) == NULL ||
        buf[strspn(buf, "0123456789")] != '\0') {
        buf[0] = '\0';
    }
}

static void
s_time_into(const char *text, int64_t *ms)
{
    if (text == NULL || !zd_iso_ms(text, ms)) {
        *ms = 0;
    }
}

/* A "zen:event-type:ticket.*" event; false when it is not one to emit. */
static bool
s_read_event(json_t *root, const char *kind, s_ticket_t *t)
{
    json_t *d = json_object_get(root, "detail");
    json_t *e = json_object_get(root, "event");
    const char *current = json_string_value(json_object_get(e, "current"));
    const char *uuid = json_string_value(json_object_get(root, "id"));
    json_t *comment = json_object_get(e, "comment");

    if (!json_is_object(d)) {
        return false;
    }
    s_id_into(json_object_get(d, "id"), t->id);
    t->subject = s_first(d, "subject", NULL, NULL);
    t->description = s_first(d, "description", NULL, NULL);
    s_enum(s_first(d, "status", NULL, NULL), t->status, sizeof t->status,
           s_statuses);
    s_enum(s_first(d, "priority", NULL, NULL), t->priority, sizeof t->priority,
           s_priorities);
    t->tags = s_tags(json_object_get(d, "tags"));
    s_id_into(json_object_get(d, "requester_id"), t->requester_id);
    s_time_into(s_first(d, "created_at", NULL, NULL), &t->created_at);
    s_time_into(s_first(d, "updated_at", NULL, NULL), &t->updated_at);
    s_time_into(s_first(root, "time", NULL, NULL), &t->time_ms);
    if (uuid != NULL && strlen(uuid) < 96) {
        snprintf(t->dedupe, sizeof t->dedupe, "zendesk:%s", uuid);
    }
    if (strcmp(kind, "ticket.created") == 0) {
        t->type = PLUGBOARD_EV_TICKET_CREATED;
        return true;
    }
    if (strcmp(kind, "ticket.soft_deleted") == 0 ||
        strcmp(kind, "ticket.permanently_deleted") == 0 ||
        strcmp(kind, "ticket.marked_as_spam") == 0 ||
        strcmp(kind, "ticket.merged") == 0) {
        return false;
    }
    t->type = PLUGBOARD_EV_TICKET_UPDATED;
    if (strcmp(kind, "ticket.status_changed") == 0) {
        s_enum(current, t->status, sizeof t->status, s_statuses);
        s_enum(json_string_value(json_object_get(e, "previous")),
               t->previous_status, sizeof t->previous_status, s_statuses);
        t->changed[t->changed_count++] = "status";
    } else if (strcmp(kind, "ticket.priority_changed") == 0) {
        s_enum(current, t->priority, sizeof t->priority, s_priorities);
        t->changed[t->changed_count++] = "priority";
    } else if (strcmp(kind, "ticket.comment_added") == 0) {
        if (json_is_true(json_object_get(comment, "is_public"))) {
            t->comment = s_first(comment, "body", NULL, NULL);
        }
        t->changed[t->changed_count++] = "comment";
    } else if (strcmp(kind, "ticket.tags_changed") == 0) {
        t->changed[t->changed_count++] = "tags";
    } else if (strcmp(kind, "ticket.subject_changed") == 0) {
        t->changed[t->changed_count++] = "subject";
    }
    if (strcmp(t->status, "solved") == 0 || strcmp(t->status, "closed") == 0) {
        t->type = PLUGBOARD_EV_TICKET_SOLVED;
    }
    return true;
}

/* A trigger webhook's admin-written body. */
static void
s_read_trigger(json_t *root, const char *invocation, s_ticket_t *t)
{
    json_t *tk = json_is_object(json_object_get(root, "ticket"))
                     ? json_object_get(root, "ticket")
                     : root;
    json_t *req = json_object_get(tk, "requester");
    const char *event = s_first(root, "event", NULL, NULL);
    json_t *id = json_object_get(tk, "id");

    if (json_string_length(id) == 0 && !json_is_integer(id)) {
        id = json_object_get(root, "ticketID");
    }
    if (json_string_length(id) == 0 && !json_is_integer(id)) {
        id = json_object_get(root, "ticket_id");
    }
    s_id_into(id, t->id);
    t->subject = s_first(tk, "subject", "title", NULL);
    t->description = s_first(tk, "description", NULL, NULL);
    s_enum(s_first(tk, "status", NULL, NULL), t->status, sizeof t->status,
           s_statuses);
    s_enum(s_first(tk, "priority", NULL, NULL), t->priority, sizeof t->priority,
           s_priorities);
    t->url = s_first(tk, "url", "link", NULL);
    t->comment = s_first(tk, "comment", "latest_public_comment", NULL);
    t->tags = s_tags(json_object_get(tk, "tags"));
    s_email_into(json_is_object(req)
                     ? s_first(req, "email", NULL, NULL)
                     : s_first(tk, "requester_email", "requesterEmail", NULL),
                 t->email);
    t->name = json_is_object(req)
                  ? s_first(req, "name", NULL, NULL)
                  : s_first(tk, "requester_name", "requesterName", NULL);
    if (json_is_object(req)) {
        s_id_into(json_object_get(req, "id"), t->requester_id);
    }
    s_email_into(s_first(tk, "assignee_email", "assigneeEmail", NULL),
                 t->assignee_email);
    if (event != NULL && (strcmp(event, PLUGBOARD_EV_TICKET_CREATED) == 0 ||
                          strcmp(event, PLUGBOARD_EV_TICKET_UPDATED) == 0 ||
                          strcmp(event, PLUGBOARD_EV_TICKET_SOLVED) == 0)) {
        t->type = event;
    } else if (strcmp(t->status, "solved") == 0 ||
               strcmp(t->status, "closed") == 0) {
        t->type = PLUGBOARD_EV_TICKET_SOLVED;
    } else {
        t->type = PLUGBOARD_EV_TICKET_UPDATED;
    }
    if (invocation != NULL && strlen(invocation) < 64) {
        snprintf(t->dedupe, sizeof t->dedupe, "zendesk:invocation:%s:%s",
                 invocation, t->type);
    }
}

/* ------------------------------------------------------------------ */
/* Building the event                                                  */
/* ------------------------------------------------------------------ */

typedef struct s_build {
    const plugboard_host_api_t *api;
    plugboard_builder_t *b;
    int rc;
} s_build_t;

static void
s_set(s_build_t *o, const char *path, const char *value)
{
    if (o->rc == 0 && value != NULL && value[0] != '\0') {
        o->rc = o->api->builder_set_string(o->b, path, value, strlen(value));
    }
}

static void
s_set_ms(s_build_t *o, const char *path, int64_t ms)
{
    if (o->rc == 0 && ms > 0) {
        o->rc = o->api->builder_set_int(o->b, path, ms);
    }
}

static void
s_set_json(s_build_t *o, const char *path, json_t *v)
{
    char *text;

    if (o->rc != 0 || v == NULL || json_array_size(v) == 0) {
        return;
    }
    text = json_dumps(v, JSON_COMPACT);
    o->rc = text != NULL
                ? o->api->builder_set_json(o->b, path, text, strlen(text))
                : PLUGBOARD_E_NOMEM;
    free(text);
}

static plugboard_builder_t *
s_build(zd_state_t *st, s_ticket_t *t, int64_t received_ms)
{
    s_build_t o = {.api = st->api};
    char key[ZD_ID_MAX + 8];
    char url[512];
    json_t *changed = json_array();

    o.b = st->api->builder_new(st->host, t->type);
    if (o.b == NULL || changed == NULL) {
        json_decref(changed);
        st->api->builder_discard(&o.b);
        return NULL;
    }
    snprintf(key, sizeof key, "ticket:%s", t->id);
    o.rc = st->api->builder_set_key(o.b, t->email[0] ? t->email : key);
    if (o.rc == 0 && t->dedupe[0] != '\0') {
        o.rc = st->api->builder_set_dedupe_id(o.b, t->dedupe);
    }
    if (o.rc == 0) {
        o.rc = st->api->builder_set_time_ms(o.b, t->time_ms > 0 ? t->time_ms
                                                                : received_ms);
    }
    if (t->url == NULL) {
        snprintf(url, sizeof url, "%s/agent/tickets/%s", st->base, t->id);
    }
    s_set(&o, "ticket.id", t->id);
    s_set(&o, "ticket.vendor", "zendesk");
    s_set(&o, "ticket.subject", t->subject);
    s_set(&o, "ticket.description", t->description);
    s_set(&o, "ticket.status", t->status);
    s_set(&o, "ticket.priority", t->priority);
    s_set(&o, "ticket.url", t->url != NULL ? t->url : url);
    s_set_json(&o, "ticket.tags", t->tags);
    s_set(&o, "ticket.assignee_email", t->assignee_email);
    s_set_ms(&o, "ticket.created_at", t->created_at);
    if (strcmp(t->type, PLUGBOARD_EV_TICKET_CREATED) != 0) {
        for (size_t i = 0; i < t->changed_count; i++) {
            json_array_append_new(changed, json_string(t->changed[i]));
        }
        s_set_json(&o, "ticket.changed", changed);
        s_set(&o, "ticket.previous_status", t->previous_status);
        s_set_ms(&o, "ticket.updated_at", t->updated_at);
        s_set(&o, "ticket.comment", t->comment);
    }
    if (strcmp(t->type, PLUGBOARD_EV_TICKET_SOLVED) == 0) {
        s_set_ms(&o, "ticket.solved_at", t->time_ms);
    }
    s_set(&o, "customer.email", t->email);
    s_set(&o, "customer.name", t->name);
    s_set(&o, "customer.id", t->requester_id);
    json_decref(changed);
    if (o.rc != 0) {
        st->api->builder_discard(&o.b);
    }
    return o.b;
}

/* ------------------------------------------------------------------ */
/* The callback                                                        */
/* ------------------------------------------------------------------ */

static void
s_refuse(zd_state_t *st, plugboard_response_t *resp, int status,
         const char *why, const char *counter)
{
    st->api->count(st->host, counter, 1);
    st->api->log(st->host,
                 status >= 500 ? PLUGBOARD_LOG_ERROR : PLUGBOARD_LOG_WARN,
                 "webhook refused status=%d reason=\"%s\"", status, why);
    st->api->respond(resp, status, why);
}

/* Read root into t; false (counted) when there is nothing to emit. */
static bool
s_read(zd_state_t *st, json_t *root, const plugboard_request_t *req,
       s_ticket_t *t)
{
    const char *type = json_string_value(json_object_get(root, "type"));
    bool ok = true;

    if (type != NULL &&
        strncmp(type, S_EVENT_PREFIX, strlen(S_EVENT_PREFIX)) == 0) {
        const char *kind = type + strlen(S_EVENT_PREFIX);

        if (strncmp(kind, "ticket.", 7) != 0) {
            st->api->count(st->host, "ignored_event_type", 1);
            return false;
        }
        ok = s_read_event(root, kind, t);
    } else {
        s_read_trigger(root, st->api->request_header(req, S_INVOCATION_HEADER),
                       t);
    }
    if (!ok) {
        st->api->count(st->host, "ignored_event_type", 1);
        return false;
    }
    if (t->id[0] == '\0') {
        st->api->count(st->host, "unmappable_event", 1);
        st->api->log(st->host, PLUGBOARD_LOG_WARN,
                     "webhook without a ticket id acknowledged and kept as "
                     "a dead letter: see the body shape in the README");
        t->unmappable = true;
        return false;
    }
    return true;
}

void
zd_webhook(void *state, const plugboard_request_t *req,
           plugboard_response_t *resp)
{
    zd_state_t *st = state;
    const char *why = NULL;
    const char *counter = NULL;
    s_ticket_t t;
    plugboard_builder_t *b = NULL;
    json_error_t jerr;
    json_t *root;
    int status;
    size_t emitted = 0;
    char body[64];

    if (req->method == NULL || strcmp(req->method, "POST") != 0) {
        s_refuse(st, resp, 405, "method not allowed: Zendesk sends POST",
                 "method_rejected");
        return;
    }
    if (st->signing_secret == NULL) {
        s_refuse(st, resp, 503,
                 "webhooks are not configured: set "
                 "signing_secret",
                 "not_configured");
        return;
    }
    status = s_verify(st, req, &why, &counter);
    if (status != 0) {
        s_refuse(st, resp, status, why, counter);
        return;
    }
    root = plugboard_json_loadb((const char *)req->body, req->body_len, &jerr);
    if (!json_is_object(root)) {
        /* signed by Zendesk: a 4xx would count toward its circuit breaker;
         * kept as a dead letter instead */
        json_decref(root);
        plugboard_webhook_keep_malformed(st->api, st->host, resp,
                                         "zendesk:unmapped:", req, jerr.position);
        return;
    }
    memset(&t, 0, sizeof t);
    if (s_read(st, root, req, &t)) {
        b = s_build(st, &t, req->received_ms);
        if (b == NULL || st->api->emit(st->host, &b) != 0) {
            json_decref(t.tags);
            json_decref(root);
            s_refuse(st, resp, 503, "cannot accept events now", "emit_failed");
            return;
        }
        emitted = 1;
    } else if (t.unmappable &&
               plugboard_emit_unmapped(st->api, st->host, "zendesk:unmapped:",
                                       "ticket webhook without a ticket id",
                                       req->body, req->body_len) != 0) {
        json_decref(t.tags);
        json_decref(root);
        s_refuse(st, resp, 503, "cannot accept events now", "emit_failed");
        return;
    }
    json_decref(t.tags);
    json_decref(root);
    snprintf(body, sizeof body, "{\"received\":true,\"events\":%zu}", emitted);
    st->api->respond(resp, 200, body);
}
