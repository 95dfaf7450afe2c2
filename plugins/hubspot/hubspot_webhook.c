/*
 * hubspot_webhook.c - HubSpot webhooks (Webhooks API, signature v3) into
 * contact.upserted and deal.stage_changed.
 *
 * Verification follows HubSpot's documentation and its PHP SDK
 * (lib/Utils/Signature.php): X-HubSpot-Signature-v3 is the base64
 * HMAC-SHA256, under the app's client secret, of
 *     method + URI + raw body + X-HubSpot-Request-Timestamp
 * where URI is the full URL HubSpot called, with the characters HubSpot
 * lists (%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B) decoded.  The
 * host sits behind a proxy, so the URL comes from the public_url setting
 * plus the request's query string.  The timestamp is in milliseconds and
 * must be within `tolerance` (5 minutes) of now, either way.  The
 * signature is checked first, so a genuine but stale request is told
 * apart from a forged one in the logs.
 *
 * A request is a JSON array of up to 100 events (a single object is taken
 * as one).  The events carry ids, not e-mail addresses, so the contacts
 * they name are read back with one batch read (POST
 * /crm/v3/objects/contacts/batch/read); when that read fails the request
 * is answered 503 and HubSpot delivers it again.  Everything is built
 * before anything is emitted.  Events of other types are counted and
 * acknowledged; an event that cannot be mapped (no id, contact without an
 * e-mail, contact deleted) is logged, counted and acknowledged, because a
 * 4xx would only make HubSpot retry it for a day and then give up.
 */
#include "hubspot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_SIG_HEADER "X-HubSpot-Signature-v3"
#define S_TS_HEADER "X-HubSpot-Request-Timestamp"
#define S_B64_LEN 44 /* base64 of 32 bytes, padded */
#define S_TS_DIGITS 15

/* What one HubSpot event becomes. */
typedef enum s_kind {
    S_IGNORED = 0,
    S_CONTACT,
    S_DEAL_STAGE,
} s_kind_t;

typedef struct s_item {
    s_kind_t kind;
    char event_id[HS_ID_MAX];
    char object_id[HS_ID_MAX];
    char portal_id[HS_ID_MAX];
    int64_t occurred_ms;
    json_t *raw; /* the event object, borrowed from the root */
} s_item_t;

/* ------------------------------------------------------------------ */
/* Signature                                                           */
/* ------------------------------------------------------------------ */

/* Decode the escapes HubSpot decodes before signing; in place. */
static void
s_decode_uri(char *uri)
{
    static const char *const table[][2] = {
        {"3A", ":"}, {"2F", "/"}, {"3F", "?"}, {"40", "@"},
        {"21", "!"}, {"24", "$"}, {"27", "'"}, {"28", "("},
        {"29", ")"}, {"2A", "*"}, {"2C", ","}, {"3B", ";"},
    };
    char *o = uri;

    for (const char *p = uri; *p != '\0';) {
        bool done = false;

        for (size_t i = 0;
             *p == '%' && !done && i < sizeof table / sizeof table[0]; i++) {
            if (strncasecmp(p + 1, table[i][0], 2) == 0) {
                *o++ = table[i][1][0];
                p += 3;
                done = true;
            }
        }
        if (!done) {
            *o++ = *p++;
        }
    }
    *o = '\0';
}

/* The base64 signature HubSpot would send for this request, into out. */
static int
s_expected(hs_state_t *st, const plugboard_request_t *req, const char *ts,
           char out[S_B64_LEN + 1])
{
    const char *query = req->query != NULL ? req->query : "";
    size_t uri_len = strlen(st->public_url) + strlen(query) + 2;
    size_t len = strlen(req->method) + uri_len + req->body_len + strlen(ts);
    char *msg = st->api->alloc(len + 1);
    uint8_t mac[PLUGBOARD_SHA256_LEN];
    size_t n;
    int rc;

    if (msg == NULL) {
        return -1;
    }
    snprintf(msg, len + 1, "%s%s%s%s", req->method, st->public_url,
             query[0] != '\0' ? "?" : "", query);
    s_decode_uri(msg + strlen(req->method));
    n = strlen(msg);
    if (req->body_len > 0) {
        memcpy(msg + n, req->body, req->body_len);
    }
    n += req->body_len;
    memcpy(msg + n, ts, strlen(ts));
    n += strlen(ts);
    rc = plugboard_hmac_sha256(st->client_secret, strlen(st->client_secret),
                               msg, n, mac);
    st->api->free(msg);
    if (rc != 0) {
        return -1;
    }
    plugboard_base64_encode(mac, sizeof mac, out);
    return 0;
}

/* 0 when verified, else the status to answer with *why set. */
static int
s_verify(hs_state_t *st, const plugboard_request_t *req, const char **why,
         const char **counter)
{
    const char *sig = st->api->request_header(req, S_SIG_HEADER);
    const char *ts = st->api->request_header(req, S_TS_HEADER);
    char expected[S_B64_LEN + 1];
    int64_t t = 0;
    int64_t now;
    size_t n;

    *counter = "signature_rejected";
    if (sig == NULL || ts == NULL) {
        *why = "missing " S_SIG_HEADER " or " S_TS_HEADER;
        *counter = "signature_missing";
        return 401;
    }
    n = strspn(ts, "0123456789");
    if (n == 0 || n > S_TS_DIGITS || ts[n] != '\0') {
        *why = "malformed " S_TS_HEADER ": expected milliseconds";
        *counter = "signature_malformed";
        return 400;
    }
    if (s_expected(st, req, ts, expected) != 0) {
        *why = "out of memory";
        *counter = "internal_error";
        return 503;
    }
    if (strlen(sig) != S_B64_LEN ||
        !plugboard_equal_ct(sig, expected, S_B64_LEN)) {
        *why = "invalid signature";
        return 401;
    }
    for (size_t i = 0; i < n; i++) {
        t = t * 10 + (ts[i] - '0');
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
/* Reading the events                                                  */
/* ------------------------------------------------------------------ */

static bool
s_is_contact_change(const char *type)
{
    static const char *const kinds[] = {
        "contact.creation",
        "contact.propertyChange",
        "contact.restore",
        "contact.merge",
    };

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(type, kinds[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Classify one event and read its ids; false when it is malformed. */
static bool
s_read_item(json_t *e, s_item_t *it)
{
    json_t *type = json_object_get(e, "subscriptionType");
    json_t *at = json_object_get(e, "occurredAt");
    const char *t;
    const char *prop;

    memset(it, 0, sizeof *it);
    it->raw = e;
    if (!json_is_string(type)) {
        type = json_object_get(e, "eventType"); /* the legacy name */
    }
    t = json_string_value(type);
    if (t == NULL ||
        plugboard_json_id(json_object_get(e, "eventId"), it->event_id,
                          sizeof it->event_id) == NULL ||
        plugboard_json_id(json_object_get(e, "objectId"), it->object_id,
                          sizeof it->object_id) == NULL ||
        !hs_is_id(it->object_id)) {
        return false;
    }
    plugboard_json_id(json_object_get(e, "portalId"), it->portal_id,
                      sizeof it->portal_id);
    it->occurred_ms = json_is_integer(at) ? json_integer_value(at) : 0;
    prop = json_string_value(json_object_get(e, "propertyName"));
    if (s_is_contact_change(t)) {
        it->kind = S_CONTACT;
    } else if (strcmp(t, "deal.propertyChange") == 0 && prop != NULL &&
               strcmp(prop, "dealstage") == 0) {
        it->kind = json_is_string(json_object_get(e, "propertyValue"))
                       ? S_DEAL_STAGE
                       : S_IGNORED;
    }
    return true;
}

/*
 * Read the contacts the items name, in one batch read.  On success
 * *contacts maps id -> properties (new reference).  Returns 0, or the
 * status to answer with.
 */
static int
s_fetch_contacts(hs_state_t *st, const s_item_t *items, size_t n,
                 json_t **contacts)
{
    json_t *inputs = json_array();
    json_t *seen = json_object();
    json_t *body;
    hs_call_t call = {.what = "read contacts",
                      .method = "POST",
                      .path = "/crm/v3/objects/contacts/batch/read"};
    plugboard_result_t res = {0};
    size_t i;
    json_t *c;

    *contacts = json_object();
    for (i = 0; i < n; i++) {
        if (items[i].kind == S_CONTACT &&
            json_object_get(seen, items[i].object_id) == NULL) {
            json_object_set_new(seen, items[i].object_id, json_true());
            json_array_append_new(inputs,
                                  json_pack("{s:s}", "id", items[i].object_id));
        }
    }
    json_decref(seen);
    if (json_array_size(inputs) == 0) {
        json_decref(inputs);
        return 0;
    }
    body = json_pack("{s:[s,s,s,s,s],s:o}", "properties", "email", "firstname",
                     "lastname", "phone", "company", "inputs", inputs);
    call.body = body;
    if (body == NULL || hs_request(st, &call, &res) != PLUGBOARD_OK) {
        st->api->log(st->host, PLUGBOARD_LOG_ERROR,
                     "cannot read the contacts a webhook names: %s; "
                     "answering 503 so HubSpot sends it again",
                     body == NULL ? "out of memory" : res.reason);
        json_decref(call.json);
        json_decref(body);
        return 503;
    }
    json_array_foreach(json_object_get(call.json, "results"), i, c)
    {
        char id[HS_ID_MAX];
        json_t *props = json_object_get(c, "properties");

        if (plugboard_json_id(json_object_get(c, "id"), id, sizeof id) &&
            json_is_object(props)) {
            json_object_set(*contacts, id, props);
        }
    }
    json_decref(call.json);
    json_decref(body);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Building events                                                     */
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

static bool
s_begin(hs_state_t *st, s_build_t *o, const char *type, const s_item_t *it,
        const char *key, int64_t received_ms)
{
    char dedupe[HS_ID_MAX + 16];

    o->api = st->api;
    o->rc = 0;
    o->b = st->api->builder_new(st->host, type);
    if (o->b == NULL) {
        return false;
    }
    snprintf(dedupe, sizeof dedupe, "hubspot:%s", it->event_id);
    o->rc = st->api->builder_set_key(o->b, key);
    if (o->rc == 0) {
        o->rc = st->api->builder_set_dedupe_id(o->b, dedupe);
    }
    if (o->rc == 0) {
        o->rc = st->api->builder_set_time_ms(
            o->b, it->occurred_ms > 0 ? it->occurred_ms : received_ms);
    }
    return true;
}

/* contact.upserted for one contact event; NULL builder when the contact
 * has no usable e-mail (counted). */
static int
s_build_contact(hs_state_t *st, const s_item_t *it, json_t *contacts,
                int64_t received_ms, plugboard_builder_t **out)
{
    json_t *props = json_object_get(contacts, it->object_id);
    const char *raw = json_string_value(json_object_get(props, "email"));
    const char *first = json_string_value(json_object_get(props, "firstname"));
    const char *last = json_string_value(json_object_get(props, "lastname"));
    char email[HS_EMAIL_MAX + 1];
    char name[512];
    s_build_t o;

    *out = NULL;
    if (raw == NULL ||
        hs_email(raw, strlen(raw), email, sizeof email) == NULL) {
        st->api->count(
            st->host,
            props == NULL ? "contact_not_found" : "contact_without_email", 1);
        return 0;
    }
    snprintf(name, sizeof name, "%s%s%s", first != NULL ? first : "",
             first != NULL && first[0] && last != NULL && last[0] ? " " : "",
             last != NULL ? last : "");
    if (!s_begin(st, &o, PLUGBOARD_EV_CONTACT_UPSERTED, it, email,
                 received_ms)) {
        return -1;
    }
    s_set(&o, "contact.email", email);
    s_set(&o, "contact.name", name);
    s_set(&o, "contact.first_name", first);
    s_set(&o, "contact.last_name", last);
    s_set(&o, "contact.phone",
          json_string_value(json_object_get(props, "phone")));
    s_set(&o, "contact.company",
          json_string_value(json_object_get(props, "company")));
    s_set(&o, "contact.source", "hubspot");
    s_set(&o, "customer.id", it->object_id);
    if (o.rc != 0) {
        st->api->builder_discard(&o.b);
        return -1;
    }
    *out = o.b;
    return 0;
}

static int
s_build_deal(hs_state_t *st, const s_item_t *it, int64_t received_ms,
             plugboard_builder_t **out)
{
    const char *stage =
        json_string_value(json_object_get(it->raw, "propertyValue"));
    char key[HS_ID_MAX + 8];
    char url[160];
    s_build_t o;

    *out = NULL;
    snprintf(key, sizeof key, "deal:%s", it->object_id);
    if (!s_begin(st, &o, PLUGBOARD_EV_DEAL_STAGE_CHANGED, it, key,
                 received_ms)) {
        return -1;
    }
    s_set(&o, "deal.id", it->object_id);
    s_set(&o, "deal.stage", stage);
    s_set(&o, "deal.vendor", "hubspot");
    if (it->portal_id[0] != '\0') {
        snprintf(url, sizeof url,
                 "https://app.hubspot.com/contacts/%s/record/0-3/%s",
                 it->portal_id, it->object_id);
        s_set(&o, "deal.url", url);
    }
    if (o.rc != 0) {
        st->api->builder_discard(&o.b);
        return -1;
    }
    *out = o.b;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The callback                                                        */
/* ------------------------------------------------------------------ */

static void
s_refuse(hs_state_t *st, plugboard_response_t *resp, int status,
         const char *why, const char *counter)
{
    st->api->count(st->host, counter, 1);
    st->api->log(st->host,
                 status >= 500 ? PLUGBOARD_LOG_ERROR : PLUGBOARD_LOG_WARN,
                 "webhook refused status=%d reason=\"%s\"", status, why);
    st->api->respond(resp, status, why);
}

/* Read the events of root into items (allocated); returns the count.  A
 * malformed event is kept alone as a dead letter; *failed when that could
 * not be staged. */
static size_t
s_read_items(hs_state_t *st, json_t *root, s_item_t **items, bool *failed)
{
    size_t n = json_is_array(root) ? json_array_size(root) : 1;
    size_t used = 0;

    *items = st->api->alloc((n > 0 ? n : 1) * sizeof **items);
    if (*items == NULL) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_is_array(root) ? json_array_get(root, i) : root;

        if (!json_is_object(e) || !s_read_item(e, &(*items)[used])) {
            char *text = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);

            st->api->count(st->host, "malformed_event", 1);
            st->api->log(st->host, PLUGBOARD_LOG_WARN,
                         "webhook event %zu has no type, eventId or "
                         "objectId; kept as a dead letter",
                         i);
            if (plugboard_emit_unmapped(
                    st->api, st->host, "hubspot:unmapped:",
                    "hubspot event without subscriptionType, eventId or "
                    "objectId",
                    text != NULL ? text : "", text != NULL ? strlen(text) : 0) !=
                0) {
                *failed = true;
            }
            free(text);
            continue;
        }
        if ((*items)[used].kind == S_IGNORED) {
            st->api->count(st->host, "ignored_event_type", 1);
            continue;
        }
        used++;
    }
    return used;
}

/* Build every event, then emit them all; returns the status to answer. */
static int
s_map_and_emit(hs_state_t *st, const s_item_t *items, size_t n,
               json_t *contacts, int64_t received_ms, size_t *emitted)
{
    plugboard_builder_t **out = st->api->alloc((n > 0 ? n : 1) * sizeof *out);
    size_t built = 0;
    int status = 200;

    *emitted = 0;
    if (out == NULL) {
        return 503;
    }
    for (size_t i = 0; i < n && status == 200; i++) {
        int rc = items[i].kind == S_CONTACT
                     ? s_build_contact(st, &items[i], contacts, received_ms,
                                       &out[built])
                     : s_build_deal(st, &items[i], received_ms, &out[built]);

        if (rc != 0) {
            status = 503;
        } else if (out[built] != NULL) {
            built++;
        }
    }
    for (size_t i = 0; i < built; i++) {
        if (status != 200) {
            st->api->builder_discard(&out[i]);
        } else if (st->api->emit(st->host, &out[i]) != 0) {
            status = 503;
        } else {
            (*emitted)++;
        }
    }
    st->api->free(out);
    return status;
}

void
hs_webhook(void *state, const plugboard_request_t *req,
           plugboard_response_t *resp)
{
    hs_state_t *st = state;
    const char *why = NULL;
    const char *counter = NULL;
    s_item_t *items = NULL;
    json_t *contacts = NULL;
    json_error_t jerr;
    json_t *root;
    size_t n;
    size_t emitted = 0;
    bool failed = false;
    int status;
    char body[64];

    if (req->method == NULL || strcmp(req->method, "POST") != 0) {
        s_refuse(st, resp, 405, "method not allowed: HubSpot sends POST",
                 "method_rejected");
        return;
    }
    if (st->client_secret == NULL) {
        s_refuse(st, resp, 503,
                 "webhooks are not configured: set "
                 "client_secret and public_url",
                 "not_configured");
        return;
    }
    status = s_verify(st, req, &why, &counter);
    if (status != 0) {
        s_refuse(st, resp, status, why, counter);
        return;
    }
    root = plugboard_json_loadb((const char *)req->body, req->body_len, &jerr);
    if (!json_is_array(root) && !json_is_object(root)) {
        /* signed by HubSpot: a 4xx would only make it retry for a day;
         * kept as a dead letter instead */
        json_decref(root);
        plugboard_webhook_keep_malformed(st->api, st->host, resp,
                                         "hubspot:unmapped:", req, jerr.position);
        return;
    }
    n = s_read_items(st, root, &items, &failed);
    status = items == NULL || failed ? 503
                                     : s_fetch_contacts(st, items, n, &contacts);
    if (status == 0) {
        status =
            s_map_and_emit(st, items, n, contacts, req->received_ms, &emitted);
    }
    json_decref(contacts);
    st->api->free(items);
    json_decref(root);
    if (status != 200) {
        s_refuse(st, resp, status, "cannot accept events now", "emit_failed");
        return;
    }
    snprintf(body, sizeof body, "{\"received\":true,\"events\":%zu}", emitted);
    st->api->respond(resp, 200, body);
}
