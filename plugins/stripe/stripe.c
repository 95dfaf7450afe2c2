/*
 * stripe.c - the Stripe webhook source: verifies Stripe-Signature, maps
 * Stripe events to canonical events and emits them.
 *
 * One request is one Stripe event.  The signature is checked the way
 * Stripe's own libraries check it (stripe-python stripe/_webhook.py,
 * stripe-node src/Webhooks.ts): HMAC-SHA256 under the endpoint secret of
 * "<t>.<raw body>", compared in constant time against every v1 signature
 * in the header; only timestamps older than the tolerance are refused.
 * Only then is the body parsed (jansson) and mapped; the mapping builds
 * every canonical event first and emits only when all were built, so a
 * malformed event emits nothing.  plugins/stripe/README.md is the admin's
 * view of all this; docs/events.md defines the fields emitted.
 *
 * The state owns nothing but itself: the secrets are borrowed from the
 * settings, which live until close.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <plugboard/helpers.h>
#include <plugboard/plugboard.h>
#include <plugboard/vendor.h>

#include "stripe_sink.h"

#define S_PLUGIN_VERSION "0.1.0"
#define S_HEADER "Stripe-Signature"
#define S_SIG_HEX_LEN (2 * PLUGBOARD_SHA256_LEN)
#define S_MAX_SECRETS 2 /* current and previous */
#define S_MAX_OUT 2     /* canonical events one Stripe event can become */
#define S_MAX_T_DIGITS 18
#define S_EMAIL_MAX 254 /* RFC 5321 path limit, below the key limit */

/* ------------------------------------------------------------------ */
/* Descriptor                                                          */
/* ------------------------------------------------------------------ */

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "signing_secret",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "the endpoint's signing secret (whsec_...), from the "
                "Stripe dashboard or `stripe listen`; needed for webhooks "
                "(set it, api_key, or both)",
    },
    {
        .name = "signing_secret_previous",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "the secret being rolled out of use; signatures made with "
                "either secret are accepted until this one is removed",
    },
    {
        .name = "tolerance",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "5m",
        .min = 1000,
        .max = 3600000,
        .help = "how old a signature timestamp may be (1s..1h); older "
                "requests are refused as possible replays",
    },
    {
        .name = "prefer_invoice_events",
        .type = PLUGBOARD_SETTING_BOOL,
        .default_value = "true",
        .help = "when a failed payment intent belongs to an invoice, emit "
                "payment.failed from invoice.payment_failed only (Stripe "
                "sends both)",
    },
    STRIPE_SINK_SETTINGS,
    {.name = NULL},
};

static const char *const s_consumes[] = {
    PLUGBOARD_EV_CONTACT_UPSERTED,
    NULL,
};

static const char *const s_emits[] = {
    PLUGBOARD_EV_PAYMENT_SUCCEEDED,
    PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_PAYMENT_REFUNDED,
    PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    PLUGBOARD_EV_DISPUTE_OPENED,
    PLUGBOARD_EV_CONTACT_UPSERTED,
    NULL,
};

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

typedef struct s_stripe {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    const char *secrets[S_MAX_SECRETS]; /* borrowed from the settings */
    size_t secret_count;
    int64_t tolerance_ms;
    bool prefer_invoice_events;
    stripe_sink_t *sink; /* NULL without api_key */
} s_stripe_t;

/* What a webhook request comes to. */
typedef enum s_verdict {
    S_VERDICT_OK = 0,
    S_VERDICT_MALFORMED, /* 400: the event's content is unusable */
    S_VERDICT_NOMEM,     /* 503: Stripe will retry */
} s_verdict_t;

/* One Stripe event being mapped: its parsed JSON and the canonical events
 * built from it, owned here until emitted or discarded. */
typedef struct s_map {
    s_stripe_t *st;
    const char *event_id;   /* borrowed from root */
    const char *event_type; /* the Stripe type, borrowed from root */
    json_t *object;         /* data.object, borrowed from root */
    int64_t time_ms;
    plugboard_builder_t *out[S_MAX_OUT];
    size_t out_count;
    const char *why;        /* with S_VERDICT_MALFORMED: for the sender */
} s_map_t;

/* A builder with a sticky error, so a run of setters checks once. */
typedef struct s_build {
    const plugboard_host_api_t *api;
    plugboard_builder_t *b;
    int rc;
} s_build_t;

/* ------------------------------------------------------------------ */
/* Signature verification                                              */
/* ------------------------------------------------------------------ */

/* One item of the header, "key=value", trimmed of spaces and tabs. */
typedef struct s_item {
    const char *key;
    size_t key_len;
    const char *value; /* NULL when the item has no '=' */
    size_t value_len;
} s_item_t;

static void
s_trim(const char **p, size_t *len)
{
    while (*len > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*len)--;
    }
    while (*len > 0 && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t')) {
        (*len)--;
    }
}

/* Split the next comma-separated item off *cursor; false at the end. */
static bool
s_next_item(const char **cursor, s_item_t *item)
{
    const char *start = *cursor;
    const char *end;
    const char *eq;

    if (start == NULL) {
        return false;
    }
    end = strchr(start, ',');
    *cursor = end != NULL ? end + 1 : NULL;
    if (end == NULL) {
        end = start + strlen(start);
    }
    eq = memchr(start, '=', (size_t)(end - start));
    item->key = start;
    item->key_len = (size_t)((eq != NULL ? eq : end) - start);
    item->value = eq != NULL ? eq + 1 : NULL;
    item->value_len = eq != NULL ? (size_t)(end - eq - 1) : 0;
    s_trim(&item->key, &item->key_len);
    if (item->value != NULL) {
        s_trim(&item->value, &item->value_len);
    }
    return true;
}

static bool
s_item_is(const s_item_t *item, const char *key)
{
    return item->key_len == strlen(key)
           && memcmp(item->key, key, item->key_len) == 0;
}

/*
 * Find the one "t" item and count the "v1" items.  Returns false when the
 * header is garbled: no t, t twice, or t not plain decimal digits.
 */
static bool
s_parse_header(const char *header, int64_t *t, size_t *v1_count)
{
    const char *cursor = header;
    s_item_t item;
    bool have_t = false;

    *v1_count = 0;
    while (s_next_item(&cursor, &item)) {
        if (s_item_is(&item, "v1") && item.value != NULL) {
            (*v1_count)++;
        }
        if (!s_item_is(&item, "t")) {
            continue;
        }
        if (have_t || item.value == NULL || item.value_len == 0
            || item.value_len > S_MAX_T_DIGITS) {
            return false;
        }
        *t = 0;
        for (size_t i = 0; i < item.value_len; i++) {
            if (!isdigit((unsigned char)item.value[i])) {
                return false;
            }
            *t = *t * 10 + (item.value[i] - '0');
        }
        have_t = true;
    }
    return have_t;
}

/*
 * Lower-case hex HMAC-SHA256 of "<t>.<body>" under secret into hex.
 * Returns 0, or -1 when out of memory.
 */
static int
s_expected(const s_stripe_t *st, int64_t t, const uint8_t *body,
           size_t body_len, const char *secret, char hex[S_SIG_HEX_LEN + 1])
{
    char prefix[S_MAX_T_DIGITS + 2];
    int prefix_len = snprintf(prefix, sizeof prefix, "%" PRId64 ".", t);
    uint8_t mac[PLUGBOARD_SHA256_LEN];
    uint8_t *msg = st->api->alloc((size_t)prefix_len + body_len + 1);
    int rc;

    if (msg == NULL) {
        return -1;
    }
    memcpy(msg, prefix, (size_t)prefix_len);
    if (body_len > 0) {
        memcpy(msg + prefix_len, body, body_len);
    }
    rc = plugboard_hmac_sha256(secret, strlen(secret), msg,
                               (size_t)prefix_len + body_len, mac);
    st->api->free(msg);
    if (rc != 0) {
        return -1;
    }
    plugboard_hex_encode(mac, sizeof mac, hex);
    return 0;
}

/* Does any v1 item in header equal expected?  Every item is compared, in
 * constant time per item. */
static bool
s_any_v1_matches(const char *header, const char *expected)
{
    const char *cursor = header;
    s_item_t item;
    bool found = false;

    while (s_next_item(&cursor, &item)) {
        if (s_item_is(&item, "v1") && item.value != NULL
            && item.value_len == S_SIG_HEX_LEN
            && plugboard_equal_ct(item.value, expected, S_SIG_HEX_LEN)) {
            found = true;
        }
    }
    return found;
}

/* Outcome of checking a request's signature. */
typedef struct s_check {
    int status;         /* 0 when verified, else the HTTP status */
    const char *reason; /* for the sender and the log */
    const char *counter;
} s_check_t;

static void
s_check_fail(s_check_t *c, int status, const char *reason,
             const char *counter)
{
    c->status = status;
    c->reason = reason;
    c->counter = counter;
}

/*
 * Verify Stripe-Signature against every configured secret, then the
 * timestamp.  The signature comes first, as in Stripe's libraries, so a
 * stale but genuine request is told apart from a forged one.
 */
static void
s_verify(s_stripe_t *st, const plugboard_request_t *req, s_check_t *c)
{
    const char *header = st->api->request_header(req, S_HEADER);
    char expected[S_SIG_HEX_LEN + 1];
    int64_t t = 0;
    int64_t now_ms;
    size_t v1_count;
    size_t matched = S_MAX_SECRETS;

    memset(c, 0, sizeof *c);
    if (header == NULL || header[strspn(header, " \t")] == '\0') {
        s_check_fail(c, 400, "missing Stripe-Signature header",
                     "signature_missing");
        return;
    }
    if (!s_parse_header(header, &t, &v1_count)) {
        s_check_fail(c, 400, "malformed Stripe-Signature header",
                     "signature_malformed");
        return;
    }
    if (v1_count == 0) {
        s_check_fail(c, 400, "no v1 signature in Stripe-Signature header",
                     "signature_rejected");
        return;
    }
    for (size_t i = 0; i < st->secret_count && matched == S_MAX_SECRETS;
         i++) {
        if (s_expected(st, t, req->body, req->body_len, st->secrets[i],
                       expected) != 0) {
            s_check_fail(c, 503, "out of memory", "internal_error");
            return;
        }
        if (s_any_v1_matches(header, expected)) {
            matched = i;
        }
    }
    memset(expected, 0, sizeof expected);
    if (matched == S_MAX_SECRETS) {
        s_check_fail(c, 400, "no valid v1 signature", "signature_rejected");
        return;
    }
    if (matched > 0) {
        st->api->count(st->host, "signature_previous_secret", 1);
    }
    /* Like Stripe's libraries, refuse only what is too old: a timestamp
     * ahead of our clock is Stripe's clock running ahead, not a replay. */
    now_ms = req->received_ms > 0 ? req->received_ms : st->api->now_ms();
    if (t < (now_ms - st->tolerance_ms) / 1000) {
        s_check_fail(c, 400, "timestamp outside the tolerance",
                     "timestamp_rejected");
    }
}

/* ------------------------------------------------------------------ */
/* Reading Stripe JSON                                                 */
/* ------------------------------------------------------------------ */

/*
 * The value at a dotted path ("charges.data.0.billing_details.email");
 * numeric segments index arrays.  NULL when any step is missing.
 */
static json_t *
s_at(json_t *v, const char *path)
{
    char seg[64];

    while (v != NULL && *path != '\0') {
        size_t n = strcspn(path, ".");

        if (n >= sizeof seg) {
            return NULL;
        }
        memcpy(seg, path, n);
        seg[n] = '\0';
        path += n + (path[n] == '.');
        if (json_is_array(v) && isdigit((unsigned char)seg[0])) {
            v = json_array_get(v, strtoul(seg, NULL, 10));
        } else {
            v = json_object_get(v, seg);
        }
    }
    return v;
}

/* The non-empty string at path, or NULL. */
static const char *
s_str(json_t *v, const char *path)
{
    json_t *s = s_at(v, path);

    if (!json_is_string(s) || json_string_length(s) == 0) {
        return NULL;
    }
    return json_string_value(s);
}

/* The id of the object at path: Stripe sends a reference as its id string,
 * or the whole object when it was expanded. */
static const char *
s_ref(json_t *v, const char *path)
{
    json_t *r = s_at(v, path);

    if (json_is_object(r)) {
        return s_str(r, "id");
    }
    return s_str(v, path);
}

/* The expanded object at path, or NULL when it is only a reference. */
static json_t *
s_expanded(json_t *v, const char *path)
{
    json_t *r = s_at(v, path);

    return json_is_object(r) ? r : NULL;
}

/* The first non-NULL of up to four candidates. */
static const char *
s_first(const char *a, const char *b, const char *c, const char *d)
{
    return a != NULL ? a : b != NULL ? b : c != NULL ? c : d;
}

static bool
s_int(json_t *v, const char *path, int64_t *out)
{
    json_t *i = s_at(v, path);

    if (!json_is_integer(i)) {
        return false;
    }
    *out = json_integer_value(i);
    return true;
}

/* ------------------------------------------------------------------ */
/* Building canonical events                                           */
/* ------------------------------------------------------------------ */

static void
s_set_str(s_build_t *o, const char *path, const char *value)
{
    if (o->rc == 0 && value != NULL) {
        o->rc = o->api->builder_set_string(o->b, path, value, strlen(value));
    }
}

static void
s_set_int(s_build_t *o, const char *path, int64_t value)
{
    if (o->rc == 0) {
        o->rc = o->api->builder_set_int(o->b, path, value);
    }
}

/* An optional integer field copied from the Stripe object. */
static void
s_copy_int(s_build_t *o, const char *path, json_t *v, const char *from)
{
    int64_t i;

    if (s_int(v, from, &i)) {
        s_set_int(o, path, i);
    }
}

/* An optional seconds timestamp copied as UTC milliseconds. */
static void
s_copy_time(s_build_t *o, const char *path, json_t *v, const char *from)
{
    int64_t s;

    if (s_int(v, from, &s) && s > 0 && s < INT64_MAX / 1000) {
        s_set_int(o, path, s * 1000);
    }
}

/*
 * An e-mail address trimmed and lower-cased into buf, or NULL when text
 * is absent, too long or not an address at all.
 */
static const char *
s_email(const char *text, char *buf, size_t size)
{
    size_t len;

    if (text == NULL) {
        return NULL;
    }
    while (isspace((unsigned char)*text)) {
        text++;
    }
    len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1])) {
        len--;
    }
    if (len == 0 || len >= size || memchr(text, '@', len) == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] = (char)tolower((unsigned char)text[i]);
    }
    buf[len] = '\0';
    return buf;
}

/* Start a canonical event of type for the Stripe event being mapped. */
static bool
s_begin(s_map_t *m, s_build_t *o, const char *type)
{
    o->api = m->st->api;
    o->rc = 0;
    o->b = m->st->api->builder_new(m->st->host, type);
    return o->b != NULL;
}

/*
 * Finish the event started with s_begin: envelope fields, then keep it
 * for emission.  key is the ordering key (lower-cased e-mail, else the
 * customer id, else the object's own id).  Each emitted event is
 * deduplicated as "stripe:<event id>:<stripe type>:<canonical type>": the
 * same for every retry of one Stripe event, and distinct for the two events
 * a paid checkout yields.  The Stripe type is part of it because event ids
 * are only unique per account and test fixtures reuse zeroed ids.
 */
static s_verdict_t
s_finish(s_map_t *m, s_build_t *o, const char *type, const char *key)
{
    char dedupe[320];

    snprintf(dedupe, sizeof dedupe, "stripe:%s:%s:%s", m->event_id,
             m->event_type ? m->event_type : "", type);
    if (o->rc == 0 && key != NULL) {
        o->rc = o->api->builder_set_key(o->b, key);
    }
    if (o->rc == 0) {
        o->rc = o->api->builder_set_dedupe_id(o->b, dedupe);
    }
    if (o->rc == 0) {
        o->rc = o->api->builder_set_time_ms(o->b, m->time_ms);
    }
    if (o->rc != 0) {
        o->api->builder_discard(&o->b);
        return o->rc == PLUGBOARD_E_NOMEM ? S_VERDICT_NOMEM
                                          : S_VERDICT_MALFORMED;
    }
    m->out[m->out_count++] = o->b;
    o->b = NULL;
    return S_VERDICT_OK;
}

static s_verdict_t
s_malformed(s_map_t *m, const char *why)
{
    m->why = why;
    return S_VERDICT_MALFORMED;
}

/* amount (integer minor units) and currency (upper-case ISO 4217). */
static bool
s_set_money(s_build_t *o, const char *amount_path, const char *cur_path,
            int64_t amount, const char *currency)
{
    char upper[4];

    if (currency == NULL || strlen(currency) != 3) {
        return false;
    }
    for (int i = 0; i < 3; i++) {
        if (!isalpha((unsigned char)currency[i])) {
            return false;
        }
        upper[i] = (char)toupper((unsigned char)currency[i]);
    }
    upper[3] = '\0';
    s_set_int(o, amount_path, amount);
    s_set_str(o, cur_path, upper);
    return true;
}

/* Who paid, as far as the Stripe object tells. */
typedef struct s_person {
    const char *email; /* lower-cased, in buf */
    const char *name;
    const char *customer_id;
    char buf[S_EMAIL_MAX + 1];
} s_person_t;

static void
s_set_person(s_build_t *o, const s_person_t *p)
{
    s_set_str(o, "customer.email", p->email);
    s_set_str(o, "customer.name", p->name);
    s_set_str(o, "customer.id", p->customer_id);
}

static const char *
s_person_key(const s_person_t *p, const char *fallback)
{
    return p->email != NULL ? p->email
           : p->customer_id != NULL ? p->customer_id
                                    : fallback;
}

/* ------------------------------------------------------------------ */
/* Mappings, one per Stripe event type                                 */
/* ------------------------------------------------------------------ */

/* payment_intent.succeeded and payment_intent.payment_failed. */
static s_verdict_t
s_map_payment_intent(s_map_t *m, const char *type)
{
    json_t *pi = m->object;
    json_t *charge = s_at(pi, "charges.data.0");
    json_t *pm = s_at(pi, "last_payment_error.payment_method");
    json_t *customer = s_expanded(pi, "customer");
    bool failed = strcmp(type, PLUGBOARD_EV_PAYMENT_FAILED) == 0;
    const char *id = s_str(pi, "id");
    s_person_t who = {0};
    s_build_t o;
    int64_t amount;

    if (charge == NULL) {
        charge = s_expanded(pi, "latest_charge");
    }
    if (failed && m->st->prefer_invoice_events
        && s_ref(pi, "invoice") != NULL) {
        m->st->api->count(m->st->host, "payment_failed_left_to_invoice", 1);
        return S_VERDICT_OK;
    }
    if (id == NULL || !s_int(pi, "amount", &amount)) {
        return s_malformed(m, "malformed event: payment intent without "
                              "id or amount");
    }
    if (!failed) {
        int64_t received;

        if (s_int(pi, "amount_received", &received) && received > 0) {
            amount = received;
        }
    }
    who.email = s_email(
        s_first(s_str(pi, "receipt_email"),
                s_str(charge, "billing_details.email"),
                s_str(pm, "billing_details.email"),
                s_str(customer, "email")),
        who.buf, sizeof who.buf);
    who.name = s_first(s_str(charge, "billing_details.name"),
                       s_str(pm, "billing_details.name"),
                       s_str(customer, "name"), s_str(pi, "shipping.name"));
    who.customer_id = s_ref(pi, "customer");
    if (!s_begin(m, &o, type)) {
        return S_VERDICT_NOMEM;
    }
    if (!s_set_money(&o, "amount", "currency", amount,
                     s_str(pi, "currency"))) {
        o.api->builder_discard(&o.b);
        return s_malformed(m, "malformed event: payment intent without "
                              "a currency");
    }
    s_set_person(&o, &who);
    s_set_str(&o, "payment.id", id);
    s_set_str(&o, "payment.vendor", "stripe");
    s_set_str(&o, "payment.description", s_str(pi, "description"));
    s_set_str(&o, "invoice.id", s_ref(pi, "invoice"));
    if (failed) {
        s_set_str(&o, "failure.code",
                  s_first(s_str(pi, "last_payment_error.code"),
                          s_str(charge, "failure_code"), NULL, NULL));
        s_set_str(&o, "failure.message",
                  s_first(s_str(pi, "last_payment_error.message"),
                          s_str(charge, "failure_message"), NULL, NULL));
        s_set_str(&o, "failure.decline_code",
                  s_str(pi, "last_payment_error.decline_code"));
    }
    return s_finish(m, &o, type, s_person_key(&who, id));
}

static s_verdict_t
s_map_pi_succeeded(s_map_t *m)
{
    return s_map_payment_intent(m, PLUGBOARD_EV_PAYMENT_SUCCEEDED);
}

static s_verdict_t
s_map_pi_failed(s_map_t *m)
{
    return s_map_payment_intent(m, PLUGBOARD_EV_PAYMENT_FAILED);
}

/* invoice.payment_failed: an invoice's automatic collection failed. */
static s_verdict_t
s_map_invoice_failed(s_map_t *m)
{
    json_t *inv = m->object;
    json_t *charge = s_expanded(inv, "charge");
    json_t *pi = s_expanded(inv, "payment_intent");
    json_t *customer = s_expanded(inv, "customer");
    const char *id = s_str(inv, "id");
    const char *payment_id;
    s_person_t who = {0};
    s_build_t o;
    int64_t amount;

    if (id == NULL || !s_int(inv, "amount_due", &amount)) {
        return s_malformed(m, "malformed event: invoice without id or "
                              "amount_due");
    }
    payment_id = s_first(s_ref(inv, "payment_intent"), s_ref(inv, "charge"),
                         id, NULL);
    who.email = s_email(s_first(s_str(inv, "customer_email"),
                                s_str(customer, "email"),
                                s_str(charge, "billing_details.email"),
                                NULL),
                        who.buf, sizeof who.buf);
    who.name = s_first(s_str(inv, "customer_name"), s_str(customer, "name"),
                       s_str(charge, "billing_details.name"), NULL);
    who.customer_id = s_ref(inv, "customer");
    if (!s_begin(m, &o, PLUGBOARD_EV_PAYMENT_FAILED)) {
        return S_VERDICT_NOMEM;
    }
    if (!s_set_money(&o, "amount", "currency", amount,
                     s_str(inv, "currency"))) {
        o.api->builder_discard(&o.b);
        return s_malformed(m, "malformed event: invoice without a "
                              "currency");
    }
    s_set_person(&o, &who);
    s_set_str(&o, "payment.id", payment_id);
    s_set_str(&o, "payment.vendor", "stripe");
    s_set_str(&o, "payment.description", s_str(inv, "description"));
    s_set_str(&o, "invoice.id", id);
    s_set_str(&o, "invoice.url", s_str(inv, "hosted_invoice_url"));
    s_set_str(&o, "invoice.number", s_str(inv, "number"));
    s_copy_int(&o, "invoice.attempt_count", inv, "attempt_count");
    s_copy_time(&o, "invoice.next_payment_attempt", inv,
                "next_payment_attempt");
    s_set_str(&o, "subscription.id", s_ref(inv, "subscription"));
    s_set_str(&o, "failure.code",
              s_first(s_str(pi, "last_payment_error.code"),
                      s_str(charge, "failure_code"), NULL, NULL));
    s_set_str(&o, "failure.message",
              s_first(s_str(pi, "last_payment_error.message"),
                      s_str(charge, "failure_message"), NULL, NULL));
    s_set_str(&o, "failure.decline_code",
              s_str(pi, "last_payment_error.decline_code"));
    return s_finish(m, &o, PLUGBOARD_EV_PAYMENT_FAILED,
                    s_person_key(&who, id));
}

/* charge.refunded: some or all of a charge was refunded. */
static s_verdict_t
s_map_charge_refunded(s_map_t *m)
{
    json_t *ch = m->object;
    json_t *customer = s_expanded(ch, "customer");
    const char *id = s_str(ch, "id");
    const char *payment_id;
    s_person_t who = {0};
    s_build_t o;
    int64_t amount;
    int64_t refunded;

    if (id == NULL || !s_int(ch, "amount", &amount)
        || !s_int(ch, "amount_refunded", &refunded)) {
        return s_malformed(m, "malformed event: charge without id, amount "
                              "or amount_refunded");
    }
    payment_id = s_first(s_ref(ch, "payment_intent"), id, NULL, NULL);
    who.email = s_email(s_first(s_str(ch, "receipt_email"),
                                s_str(ch, "billing_details.email"),
                                s_str(customer, "email"), NULL),
                        who.buf, sizeof who.buf);
    who.name = s_first(s_str(ch, "billing_details.name"),
                       s_str(customer, "name"), NULL, NULL);
    who.customer_id = s_ref(ch, "customer");
    if (!s_begin(m, &o, PLUGBOARD_EV_PAYMENT_REFUNDED)) {
        return S_VERDICT_NOMEM;
    }
    if (!s_set_money(&o, "amount", "currency", amount,
                     s_str(ch, "currency"))) {
        o.api->builder_discard(&o.b);
        return s_malformed(m, "malformed event: charge without a currency");
    }
    s_set_person(&o, &who);
    s_set_int(&o, "refund.amount", refunded);
    s_set_str(&o, "refund.id", s_str(ch, "refunds.data.0.id"));
    s_set_str(&o, "payment.id", payment_id);
    s_set_str(&o, "payment.charge_id", id);
    s_set_str(&o, "payment.vendor", "stripe");
    s_set_str(&o, "payment.description", s_str(ch, "description"));
    s_set_str(&o, "invoice.id", s_ref(ch, "invoice"));
    return s_finish(m, &o, PLUGBOARD_EV_PAYMENT_REFUNDED,
                    s_person_key(&who, payment_id));
}

/* customer.subscription.deleted: the subscription has ended. */
static s_verdict_t
s_map_subscription_deleted(s_map_t *m)
{
    json_t *sub = m->object;
    json_t *customer = s_expanded(sub, "customer");
    json_t *plan = s_at(sub, "plan");
    json_t *price = s_at(sub, "items.data.0.price");
    const char *id = s_str(sub, "id");
    s_person_t who = {0};
    s_build_t o;
    int64_t plan_amount;
    int64_t when;

    if (id == NULL || s_ref(sub, "customer") == NULL) {
        return s_malformed(m, "malformed event: subscription without id "
                              "or customer");
    }
    who.email = s_email(s_str(customer, "email"), who.buf, sizeof who.buf);
    who.name = s_str(customer, "name");
    who.customer_id = s_ref(sub, "customer");
    if (!s_begin(m, &o, PLUGBOARD_EV_SUBSCRIPTION_CANCELED)) {
        return S_VERDICT_NOMEM;
    }
    s_set_person(&o, &who);
    s_set_str(&o, "subscription.id", id);
    s_set_str(&o, "subscription.status", s_str(sub, "status"));
    s_copy_time(&o, "subscription.canceled_at", sub,
                s_int(sub, "canceled_at", &when) ? "canceled_at"
                                                 : "ended_at");
    s_set_str(&o, "subscription.cancellation_reason",
              s_str(sub, "cancellation_details.reason"));
    /* "plan" is the legacy single-price view; items carry the price on
     * API versions that dropped it. */
    if (json_is_object(plan)) {
        s_set_str(&o, "plan.id", s_str(plan, "id"));
        s_set_str(&o, "plan.interval", s_str(plan, "interval"));
        if (s_int(plan, "amount", &plan_amount)) {
            s_set_money(&o, "plan.amount", "plan.currency", plan_amount,
                        s_str(plan, "currency"));
        }
    } else if (json_is_object(price)) {
        s_set_str(&o, "plan.id", s_str(price, "id"));
        s_set_str(&o, "plan.interval", s_str(price, "recurring.interval"));
        if (s_int(price, "unit_amount", &plan_amount)) {
            s_set_money(&o, "plan.amount", "plan.currency", plan_amount,
                        s_str(price, "currency"));
        }
    }
    return s_finish(m, &o, PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
                    s_person_key(&who, id));
}

/* Build contact.upserted; emits nothing without an e-mail address. */
static s_verdict_t
s_contact(s_map_t *m, const char *email, const char *name,
          const char *phone, const char *customer_id)
{
    char buf[S_EMAIL_MAX + 1];
    const char *lower = s_email(email, buf, sizeof buf);
    s_build_t o;

    if (lower == NULL) {
        m->st->api->count(m->st->host, "contact_without_email", 1);
        return S_VERDICT_OK;
    }
    if (!s_begin(m, &o, PLUGBOARD_EV_CONTACT_UPSERTED)) {
        return S_VERDICT_NOMEM;
    }
    s_set_str(&o, "contact.email", lower);
    s_set_str(&o, "contact.name", name);
    s_set_str(&o, "contact.phone", phone);
    s_set_str(&o, "contact.source", "stripe");
    s_set_str(&o, "customer.id", customer_id);
    return s_finish(m, &o, PLUGBOARD_EV_CONTACT_UPSERTED, lower);
}

/* customer.created and customer.updated. */
static s_verdict_t
s_map_customer(s_map_t *m)
{
    json_t *cus = m->object;

    if (s_str(cus, "id") == NULL) {
        return s_malformed(m, "malformed event: customer without id");
    }
    return s_contact(m, s_str(cus, "email"), s_str(cus, "name"),
                     s_str(cus, "phone"), s_str(cus, "id"));
}

/* checkout.session.completed: the buyer is a contact; a paid session is
 * also a successful payment. */
static s_verdict_t
s_map_checkout_completed(s_map_t *m)
{
    json_t *cs = m->object;
    const char *id = s_str(cs, "id");
    const char *status = s_str(cs, "payment_status");
    s_person_t who = {0};
    s_verdict_t v;
    s_build_t o;
    int64_t amount;

    if (id == NULL) {
        return s_malformed(m, "malformed event: checkout session without "
                              "id");
    }
    who.email = s_email(s_first(s_str(cs, "customer_details.email"),
                                s_str(cs, "customer_email"), NULL, NULL),
                        who.buf, sizeof who.buf);
    who.name = s_str(cs, "customer_details.name");
    who.customer_id = s_ref(cs, "customer");
    v = s_contact(m, who.email, who.name,
                  s_str(cs, "customer_details.phone"), who.customer_id);
    if (v != S_VERDICT_OK || status == NULL || strcmp(status, "paid") != 0) {
        return v;
    }
    if (!s_int(cs, "amount_total", &amount)) {
        return s_malformed(m, "malformed event: paid checkout session "
                              "without amount_total");
    }
    if (!s_begin(m, &o, PLUGBOARD_EV_PAYMENT_SUCCEEDED)) {
        return S_VERDICT_NOMEM;
    }
    if (!s_set_money(&o, "amount", "currency", amount,
                     s_str(cs, "currency"))) {
        o.api->builder_discard(&o.b);
        return s_malformed(m, "malformed event: paid checkout session "
                              "without a currency");
    }
    s_set_person(&o, &who);
    s_set_str(&o, "payment.id", s_first(s_ref(cs, "payment_intent"),
                                        s_ref(cs, "invoice"), id, NULL));
    s_set_str(&o, "payment.vendor", "stripe");
    s_set_str(&o, "invoice.id", s_ref(cs, "invoice"));
    s_set_str(&o, "subscription.id", s_ref(cs, "subscription"));
    return s_finish(m, &o, PLUGBOARD_EV_PAYMENT_SUCCEEDED,
                    s_person_key(&who, id));
}

/* charge.dispute.created: the cardholder disputed a charge. */
static s_verdict_t
s_map_dispute_created(s_map_t *m)
{
    json_t *dp = m->object;
    json_t *charge = s_expanded(dp, "charge");
    const char *id = s_str(dp, "id");
    s_person_t who = {0};
    s_build_t o;
    int64_t amount;

    if (id == NULL || !s_int(dp, "amount", &amount)) {
        return s_malformed(m, "malformed event: dispute without id or "
                              "amount");
    }
    who.email = s_email(s_first(s_str(charge, "receipt_email"),
                                s_str(charge, "billing_details.email"),
                                s_str(dp, "evidence.customer_email_address"),
                                NULL),
                        who.buf, sizeof who.buf);
    who.name = s_first(s_str(charge, "billing_details.name"),
                       s_str(dp, "evidence.customer_name"), NULL, NULL);
    who.customer_id = s_ref(charge, "customer");
    if (!s_begin(m, &o, PLUGBOARD_EV_DISPUTE_OPENED)) {
        return S_VERDICT_NOMEM;
    }
    if (!s_set_money(&o, "amount", "currency", amount,
                     s_str(dp, "currency"))) {
        o.api->builder_discard(&o.b);
        return s_malformed(m, "malformed event: dispute without a "
                              "currency");
    }
    s_set_person(&o, &who);
    s_set_str(&o, "dispute.id", id);
    s_set_str(&o, "dispute.reason", s_str(dp, "reason"));
    s_set_str(&o, "dispute.status", s_str(dp, "status"));
    s_copy_time(&o, "dispute.evidence_due_at", dp, "evidence_details.due_by");
    s_set_str(&o, "payment.id", s_first(s_ref(dp, "payment_intent"),
                                        s_ref(dp, "charge"), NULL, NULL));
    s_set_str(&o, "payment.charge_id", s_ref(dp, "charge"));
    s_set_str(&o, "payment.vendor", "stripe");
    return s_finish(m, &o, PLUGBOARD_EV_DISPUTE_OPENED,
                    s_person_key(&who, id));
}

static const struct {
    const char *stripe_type;
    s_verdict_t (*map)(s_map_t *m);
} s_mappings[] = {
    {"payment_intent.succeeded", s_map_pi_succeeded},
    {"payment_intent.payment_failed", s_map_pi_failed},
    {"invoice.payment_failed", s_map_invoice_failed},
    {"charge.refunded", s_map_charge_refunded},
    {"customer.subscription.deleted", s_map_subscription_deleted},
    {"checkout.session.completed", s_map_checkout_completed},
    {"charge.dispute.created", s_map_dispute_created},
    {"customer.created", s_map_customer},
    {"customer.updated", s_map_customer},
};

/* ------------------------------------------------------------------ */
/* Callbacks                                                           */
/* ------------------------------------------------------------------ */

/* Refuse an API key pasted where the signing secret belongs. */
static int
s_check_secret(const char *name, const char *value, char *errbuf)
{
    static const char *const api_keys[] = {"sk_", "rk_", "pk_"};

    if (value == NULL || value[0] == '\0') {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting '%s' is empty: expected the endpoint's signing "
                 "secret (whsec_...)", name);
        return -1;
    }
    for (size_t i = 0; i < sizeof api_keys / sizeof api_keys[0]; i++) {
        if (strncmp(value, api_keys[i], 3) == 0) {
            snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                     "setting '%s' holds an API key (%s...), not the "
                     "endpoint's signing secret (whsec_...)", name,
                     api_keys[i]);
            return -1;
        }
    }
    return 0;
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    const char *secret = api->setting_string(settings, "signing_secret");
    const char *previous =
        api->setting_string(settings, "signing_secret_previous");
    s_stripe_t *st;

    if (secret == NULL && api->setting_string(settings, "api_key") == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "set 'signing_secret' (webhooks), 'api_key' (updating "
                 "customers) or both");
        return -1;
    }
    if ((secret != NULL
         && s_check_secret("signing_secret", secret, errbuf) != 0)
        || (previous != NULL
            && s_check_secret("signing_secret_previous", previous, errbuf)
                   != 0)) {
        return -1;
    }
    st = api->alloc(sizeof *st);
    if (st == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(st, 0, sizeof *st);
    st->api = api;
    st->host = host;
    if (stripe_sink_open(api, host, settings, &st->sink, errbuf) != 0) {
        api->free(st);
        return -1;
    }
    if (secret != NULL) {
        st->secrets[st->secret_count++] = secret;
    }
    if (previous != NULL) {
        st->secrets[st->secret_count++] = previous;
    }
    st->tolerance_ms = api->setting_int(settings, "tolerance");
    st->prefer_invoice_events =
        api->setting_bool(settings, "prefer_invoice_events");
    if (secret != NULL && strncmp(secret, "whsec_", 6) != 0) {
        api->log(host, PLUGBOARD_LOG_WARN,
                 "signing_secret does not start with whsec_; Stripe "
                 "endpoint secrets do");
    }
    *state = st;
    return 0;
}

static void
s_close(void *state)
{
    s_stripe_t *st = state;

    if (st != NULL) {
        stripe_sink_close(&st->sink);
        st->api->free(st);
    }
}

/* contact.upserted: see stripe_sink.c. */
static void
s_deliver(void *state, const plugboard_event_t *event,
          plugboard_result_t *result)
{
    s_stripe_t *st = state;

    if (st->sink == NULL) {
        plugboard_result_set(result, PLUGBOARD_REJECT, 0,
                             "this stripe connector has no api_key: it "
                             "cannot update customers");
        return;
    }
    stripe_sink_deliver(st->sink, event, result);
}

/* Answer with an error status, count it and log it. */
static void
s_refuse(s_stripe_t *st, plugboard_response_t *resp, int status,
         const char *reason, const char *counter)
{
    st->api->count(st->host, counter, 1);
    st->api->log(st->host,
                 status >= 500 ? PLUGBOARD_LOG_ERROR : PLUGBOARD_LOG_WARN,
                 "webhook refused status=%d reason=\"%s\"", status, reason);
    st->api->respond(resp, status, reason);
}

/*
 * A verified request whose content cannot be mapped: Stripe sent it, so
 * it is acknowledged (a 4xx or 5xx makes Stripe retry for days and then
 * disable the endpoint), counted, logged at warn with its id, type,
 * api_version and why, and kept as a dead letter of this connector with
 * the body, for an admin to look at.  If that cannot be stored, Stripe
 * gets 503 and sends it again.
 */
static void
s_unmappable(s_stripe_t *st, const plugboard_request_t *req,
             plugboard_response_t *resp, json_t *root, const char *reason,
             const char *counter)
{
    json_t *answer;
    char *text;

    if (plugboard_emit_unmapped(st->api, st->host, "stripe:unmapped:",
                                reason, req->body, req->body_len) != 0) {
        s_refuse(st, resp, 503, "cannot accept events now", "emit_failed");
        return;
    }
    st->api->count(st->host, counter, 1);
    st->api->log(st->host, PLUGBOARD_LOG_WARN,
                 "unmappable event acknowledged id=%s type=%s "
                 "api_version=%s reason=\"%s\"",
                 s_str(root, "id") != NULL ? s_str(root, "id") : "(none)",
                 s_str(root, "type") != NULL ? s_str(root, "type") : "(none)",
                 s_str(root, "api_version") != NULL
                     ? s_str(root, "api_version")
                     : "(none)",
                 reason);
    answer = json_pack("{s:b,s:i,s:s}", "received", 1, "events", 0,
                       "unmappable", reason);
    text = answer != NULL ? json_dumps(answer, JSON_COMPACT) : NULL;
    st->api->respond(resp, 200,
                     text != NULL ? text
                                  : "{\"received\":true,\"events\":0}");
    free(text);
    json_decref(answer);
}

/* Map one parsed Stripe event; fills m->out or says why not. */
static s_verdict_t
s_map_event(s_map_t *m, json_t *root, const plugboard_request_t *req)
{
    const char *type = s_str(root, "type");
    int64_t created;

    m->event_id = s_str(root, "id");
    m->event_type = type;
    m->object = s_at(root, "data.object");
    m->time_ms = req->received_ms > 0 ? req->received_ms
                                      : m->st->api->now_ms();
    if (s_int(root, "created", &created) && created > 0
        && created < INT64_MAX / 1000) {
        m->time_ms = created * 1000;
    }
    for (size_t i = 0; type != NULL
                       && i < sizeof s_mappings / sizeof s_mappings[0];
         i++) {
        if (strcmp(type, s_mappings[i].stripe_type) != 0) {
            continue;
        }
        if (!json_is_object(m->object)) {
            return s_malformed(m, "malformed event: no data.object");
        }
        return s_mappings[i].map(m);
    }
    m->st->api->count(m->st->host, "ignored_event_type", 1);
    m->st->api->log(m->st->host, PLUGBOARD_LOG_DEBUG,
                    "ignored event id=%s type=%s", m->event_id,
                    type != NULL ? type : "(none)");
    return S_VERDICT_OK;
}

/* Emit what s_map_event built; false when the host refused any. */
static bool
s_emit_all(s_map_t *m)
{
    bool ok = true;

    for (size_t i = 0; i < m->out_count; i++) {
        int rc = m->st->api->emit(m->st->host, &m->out[i]);

        if (rc != 0) {
            m->st->api->log(m->st->host, PLUGBOARD_LOG_ERROR,
                            "cannot emit event id=%s: error %d",
                            m->event_id, rc);
            ok = false;
        }
    }
    m->out_count = 0;
    return ok;
}

static void
s_discard_all(s_map_t *m)
{
    for (size_t i = 0; i < m->out_count; i++) {
        m->st->api->builder_discard(&m->out[i]);
    }
    m->out_count = 0;
}

/* A v2 "thin" event notification, which carries no object to map. */
static bool
s_is_thin_event(json_t *root)
{
    const char *object = s_str(root, "object");

    return object != NULL && strcmp(object, "v2.core.event") == 0;
}

static void
s_webhook(void *state, const plugboard_request_t *req,
          plugboard_response_t *resp)
{
    s_stripe_t *st = state;
    s_map_t m = {.st = st};
    json_error_t jerr;
    json_t *root;
    s_check_t check;
    s_verdict_t v;
    size_t emitted;
    char body[64];

    if (req->method != NULL && strcmp(req->method, "POST") != 0) {
        s_refuse(st, resp, 405, "method not allowed: Stripe sends POST",
                 "method_rejected");
        return;
    }
    if (st->secret_count == 0) {
        s_refuse(st, resp, 503, "webhooks are not configured: set "
                                "signing_secret",
                 "not_configured");
        return;
    }
    s_verify(st, req, &check);
    if (check.status != 0) {
        s_refuse(st, resp, check.status, check.reason, check.counter);
        return;
    }
    /* the SDK's parser: a number beyond int64 stays its digits instead of
     * failing the document, and a duplicate key makes it invalid */
    root = req->body_len > 0 ? plugboard_json_loadb((const char *)req->body,
                                                    req->body_len, &jerr)
                             : NULL;
    if (root == NULL) {
        s_unmappable(st, req, resp, NULL, "malformed JSON", "malformed_json");
        return;
    }
    if (s_is_thin_event(root)) {
        s_unmappable(st, req, resp, root,
                     "thin (v2) events are not supported: send snapshot "
                     "events to this endpoint",
                     "unsupported_event");
        json_decref(root);
        return;
    }
    if (!json_is_object(root) || s_str(root, "id") == NULL) {
        s_unmappable(st, req, resp, root, "malformed event: no id",
                     "malformed_event");
        json_decref(root);
        return;
    }
    v = s_map_event(&m, root, req);
    if (v != S_VERDICT_OK) {
        s_discard_all(&m);
        if (v == S_VERDICT_NOMEM) {
            s_refuse(st, resp, 503, "out of memory", "internal_error");
        } else {
            s_unmappable(st, req, resp, root,
                         m.why != NULL ? m.why : "malformed event",
                         "malformed_event");
        }
        json_decref(root);
        return;
    }
    emitted = m.out_count;
    if (!s_emit_all(&m)) {
        json_decref(root);
        s_refuse(st, resp, 503, "cannot accept events now", "emit_failed");
        return;
    }
    json_decref(root);
    snprintf(body, sizeof body, "{\"received\":true,\"events\":%zu}",
             emitted);
    st->api->respond(resp, 200, body);
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "stripe",
    .version = S_PLUGIN_VERSION,
    .summary = "Stripe webhooks: verified payments, refunds, failed "
               "payments, cancellations, disputes and customers; updates "
               "customers from contact.upserted",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = s_emits,
    .deliver_timeout_ms = 60000,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
    .webhook = s_webhook,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
