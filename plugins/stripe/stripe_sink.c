/*
 * stripe_sink.c - contact.upserted into the Stripe customer it describes.
 *
 * Which customer: the event's customer.id when it is a Stripe id (cus_...,
 * GET /v1/customers/{id}); otherwise, or when that customer is gone, the
 * customers with the contact's e-mail (GET /v1/customers?email=, exact
 * and strongly consistent, unlike the search API).  None: nothing to do.
 *
 * The update is POST /v1/customers/{id}, form-encoded: email, name, and
 * two metadata keys, plugboard_contact_time (the event's time) and
 * plugboard_event_id.  It is built from the journaled event alone, so a
 * retry sends the byte-identical body with the same Idempotency-Key
 * ("plugboard-<event id>-<customer id>"), which Stripe requires.
 *
 * Never backwards: a customer whose plugboard_contact_time is newer than
 * the event was updated from a newer event, so an old or re-delivered one
 * is skipped; a customer that already has this e-mail and name is left
 * alone (no customer.updated echo).  Events whose contact.source is
 * "stripe" came from Stripe and are not written back to it.
 *
 * Answers: 409 (idempotency key in use, lock timeout) and 5xx are retried;
 * 400 idempotency_error (same key, other parameters) dead-letters with that
 * reason; 401/403 dead-letter as an authentication failure; other 4xx
 * dead-letter with Stripe's message; 429 waits Retry-After or a second.
 */
#include "stripe_sink.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <plugboard/vendor.h>

#define S_EMAIL_MAX 254
#define S_ID_MAX 64
#define S_MAX_MATCHES 10
#define S_TIME_KEY "plugboard_contact_time"
#define S_EVENT_KEY "plugboard_event_id"

struct stripe_sink {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    plugboard_http_t *http;
    char *base;
    char *auth_header;
    char *version_header; /* "Stripe-Version: ..." or NULL */
};

/* One Stripe call. */
typedef struct s_call {
    const char *what;
    const char *method;
    const char *path;
    const char *form;        /* POST body, or NULL */
    const char *idempotency; /* or NULL */
    long status;
    json_t *json; /* answer, owned by the caller */
} s_call_t;

/* ------------------------------------------------------------------ */
/* Calls                                                               */
/* ------------------------------------------------------------------ */

static plugboard_outcome_t
s_classify(stripe_sink_t *sk, s_call_t *call, plugboard_http_reply_t *r,
           plugboard_result_t *res)
{
    json_t *err = json_object_get(call->json, "error");
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *message = json_string_value(json_object_get(err, "message"));

    if (r->status == 400 && type != NULL &&
        strcmp(type, "idempotency_error") == 0) {
        sk->api->count(sk->host, "idempotency_mismatch", 1);
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "%s: idempotency key reused with other "
                             "parameters: %.120s",
                             call->what, message != NULL ? message : "");
        return PLUGBOARD_REJECT;
    }
    plugboard_http_report_auth(sk->api, sk->host, r, "Stripe");
    return plugboard_http_classify(r, call->what, message, 1000, res);
}

static plugboard_outcome_t
s_request(stripe_sink_t *sk, s_call_t *call, plugboard_result_t *res)
{
    size_t url_len = strlen(sk->base) + strlen(call->path) + 1;
    char *url = sk->api->alloc(url_len);
    char idem[160];
    const char *headers[6] = {sk->auth_header, "Accept: application/json"};
    size_t n = 2;
    plugboard_http_reply_t r;
    json_error_t jerr;
    plugboard_outcome_t out;

    call->status = 0;
    call->json = NULL;
    if (url == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    snprintf(url, url_len, "%s%s", sk->base, call->path);
    if (sk->version_header != NULL) {
        headers[n++] = sk->version_header;
    }
    if (call->form != NULL) {
        headers[n++] = "Content-Type: application/x-www-form-urlencoded";
    }
    if (call->idempotency != NULL) {
        snprintf(idem, sizeof idem, "Idempotency-Key: %s", call->idempotency);
        headers[n++] = idem;
    }
    if (plugboard_http_request(sk->http, call->method, url, headers, call->form,
                               call->form != NULL ? strlen(call->form) : 0,
                               &r) != 0) {
        sk->api->free(url);
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    sk->api->free(url);
    call->status = r.status;
    if (r.status == 0) {
        return plugboard_http_classify(&r, call->what, NULL, 0, res);
    }
    call->json =
        r.body_len > 0 ? plugboard_json_loadb(r.body, r.body_len, &jerr) : NULL;
    if (r.status >= 200 && r.status < 300) {
        if (json_is_object(call->json)) {
            return PLUGBOARD_OK;
        }
        sk->api->count(sk->host, "malformed_answer", 1);
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "%s: malformed JSON from Stripe (HTTP %ld)",
                             call->what, r.status);
        return PLUGBOARD_RETRY;
    }
    out = s_classify(sk, call, &r, res);
    sk->api->log(sk->host, PLUGBOARD_LOG_DEBUG, "%s %s -> %ld", call->method,
                 call->path, r.status);
    return out;
}

/* Is text a Stripe object id ("cus_" and [A-Za-z0-9_])? */
static bool
s_is_customer_id(const char *text, size_t len)
{
    if (len < 5 || len >= S_ID_MAX || strncmp(text, "cus_", 4) != 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)text[i]) && text[i] != '_') {
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* Finding the customers                                               */
/* ------------------------------------------------------------------ */

/* The customer with this id, as a one-element array; [] when gone. */
static plugboard_outcome_t
s_by_id(stripe_sink_t *sk, const char *id, json_t **out,
        plugboard_result_t *res)
{
    char path[S_ID_MAX + 16];
    s_call_t call = {.what = "read customer", .method = "GET", .path = path};
    plugboard_outcome_t o;

    snprintf(path, sizeof path, "/v1/customers/%s", id);
    o = s_request(sk, &call, res);
    *out = json_array();
    if (o == PLUGBOARD_OK &&
        !json_is_true(json_object_get(call.json, "deleted"))) {
        json_array_append(*out, call.json);
    } else if (call.status == 404) {
        memset(res, 0, sizeof *res); /* gone: look it up by e-mail */
        o = PLUGBOARD_OK;
    }
    json_decref(call.json);
    return o;
}

/* The customers with this e-mail (at most S_MAX_MATCHES). */
static plugboard_outcome_t
s_by_email(stripe_sink_t *sk, const char *email, json_t **out,
           plugboard_result_t *res)
{
    char *esc = plugboard_http_escape(sk->http, email, strlen(email));
    char path[3 * S_EMAIL_MAX + 64];
    s_call_t call = {.what = "list customers", .method = "GET", .path = path};
    plugboard_outcome_t o;
    json_t *data;

    *out = json_array();
    if (esc == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    snprintf(path, sizeof path, "/v1/customers?email=%s&limit=%d", esc,
             S_MAX_MATCHES);
    sk->api->free(esc);
    o = s_request(sk, &call, res);
    data = json_object_get(call.json, "data");
    if (o == PLUGBOARD_OK && !json_is_array(data)) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "list customers: answer without data");
        o = PLUGBOARD_RETRY;
    } else if (o == PLUGBOARD_OK) {
        json_array_extend(*out, data);
    }
    json_decref(call.json);
    return o;
}

/* ------------------------------------------------------------------ */
/* Updating one customer                                               */
/* ------------------------------------------------------------------ */

/* "k=v" appended to the form (value escaped); false when out of memory. */
static bool
s_form_add(stripe_sink_t *sk, char **form, const char *key, const char *value)
{
    char *esc = plugboard_http_escape(sk->http, value, strlen(value));
    size_t old = *form != NULL ? strlen(*form) : 0;
    size_t n = esc != NULL ? old + strlen(key) + strlen(esc) + 3 : 0;
    char *grown = n > 0 ? sk->api->alloc(n) : NULL;

    if (grown != NULL) {
        snprintf(grown, n, "%s%s%s=%s", old > 0 ? *form : "",
                 old > 0 ? "&" : "", key, esc);
    }
    sk->api->free(esc);
    sk->api->free(*form);
    *form = grown;
    return grown != NULL;
}

/* Was this customer last written from an event newer than time_ms? */
static bool
s_is_newer(json_t *customer, int64_t time_ms)
{
    const char *t = json_string_value(
        json_object_get(json_object_get(customer, "metadata"), S_TIME_KEY));
    char *end = NULL;
    long long v;

    if (t == NULL) {
        return false;
    }
    v = strtoll(t, &end, 10);
    return end != t && *end == '\0' && v > time_ms;
}

static bool
s_same(json_t *customer, const char *key, const char *want)
{
    const char *have = json_string_value(json_object_get(customer, key));

    return want == NULL || (have != NULL && strcmp(have, want) == 0);
}

static plugboard_outcome_t
s_update(stripe_sink_t *sk, const plugboard_event_t *ev, json_t *customer,
         const char *email, const char *name, plugboard_result_t *res)
{
    const char *id = json_string_value(json_object_get(customer, "id"));
    int64_t time_ms = sk->api->event_time_ms(ev);
    char path[S_ID_MAX + 16];
    char key[S_ID_MAX + 48];
    char when[24];
    char *form = NULL;
    s_call_t call = {.what = "update customer",
                     .method = "POST",
                     .path = path,
                     .idempotency = key};
    plugboard_outcome_t o;

    if (id == NULL || !s_is_customer_id(id, strlen(id))) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "Stripe answered a customer without a valid "
                             "id");
        return PLUGBOARD_RETRY;
    }
    if (s_is_newer(customer, time_ms)) {
        sk->api->count(sk->host, "stale_event_skipped", 1);
        return PLUGBOARD_OK;
    }
    if (s_same(customer, "email", email) && s_same(customer, "name", name)) {
        sk->api->count(sk->host, "customer_unchanged", 1);
        return PLUGBOARD_OK;
    }
    snprintf(path, sizeof path, "/v1/customers/%s", id);
    snprintf(key, sizeof key, "plugboard-%s-%s", sk->api->event_id(ev), id);
    snprintf(when, sizeof when, "%lld", (long long)time_ms);
    if (!s_form_add(sk, &form, "email", email) ||
        (name != NULL && !s_form_add(sk, &form, "name", name)) ||
        !s_form_add(sk, &form, "metadata[" S_TIME_KEY "]", when) ||
        !s_form_add(sk, &form, "metadata[" S_EVENT_KEY "]",
                    sk->api->event_id(ev))) {
        sk->api->free(form);
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    call.form = form;
    o = s_request(sk, &call, res);
    if (call.status == 404) {
        memset(res, 0, sizeof *res); /* deleted meanwhile: nothing to do */
        o = PLUGBOARD_OK;
    } else if (o == PLUGBOARD_OK) {
        sk->api->count(sk->host, "customer_updated", 1);
    }
    json_decref(call.json);
    sk->api->free(form);
    return o;
}

/* ------------------------------------------------------------------ */
/* deliver                                                             */
/* ------------------------------------------------------------------ */

/* The event's string at path, NUL-terminated into buf; NULL when absent,
 * empty or too long. */
static const char *
s_text(stripe_sink_t *sk, const plugboard_event_t *ev, const char *path,
       char *buf, size_t size)
{
    const char *s = NULL;
    size_t len = 0;

    if (!sk->api->event_string(ev, path, &s, &len) || len == 0 || len >= size ||
        memchr(s, '\0', len) != NULL) {
        return NULL;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return buf;
}

/* A plausible address, lower-cased in place. */
static const char *
s_email(char *text)
{
    size_t at = 0;

    if (text == NULL) {
        return NULL;
    }
    for (char *p = text; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || strchr("<>,;\"()\\", *p) != NULL) {
            return NULL;
        }
        at += *p == '@';
        *p = (char)tolower((unsigned char)*p);
    }
    return at == 1 && text[0] != '@' && text[strlen(text) - 1] != '@' ? text
                                                                      : NULL;
}

/* The customers this contact is about. */
static plugboard_outcome_t
s_customers(stripe_sink_t *sk, const plugboard_event_t *ev, const char *email,
            json_t **out, plugboard_result_t *res)
{
    char id[S_ID_MAX];
    plugboard_outcome_t o;

    if (s_text(sk, ev, "customer.id", id, sizeof id) != NULL &&
        s_is_customer_id(id, strlen(id))) {
        o = s_by_id(sk, id, out, res);
        if (o != PLUGBOARD_OK || json_array_size(*out) > 0) {
            return o;
        }
        json_decref(*out);
    }
    return s_by_email(sk, email, out, res);
}

void
stripe_sink_deliver(stripe_sink_t *sk, const plugboard_event_t *ev,
                    plugboard_result_t *res)
{
    char email_buf[S_EMAIL_MAX + 1];
    char name_buf[512];
    char source[32];
    const char *email;
    const char *name;
    json_t *customers = NULL;
    size_t i;
    json_t *c;

    if (strcmp(sk->api->event_type(ev), PLUGBOARD_EV_CONTACT_UPSERTED) != 0) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "stripe does not take '%s' events",
                             sk->api->event_type(ev));
        return;
    }
    if (s_text(sk, ev, "contact.source", source, sizeof source) != NULL &&
        strcmp(source, "stripe") == 0) {
        sk->api->count(sk->host, "own_event_skipped", 1);
        return;
    }
    email = s_email(
        (char *)s_text(sk, ev, "contact.email", email_buf, sizeof email_buf));
    if (email == NULL) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "contact.upserted has no valid contact.email");
        return;
    }
    name = s_text(sk, ev, "contact.name", name_buf, sizeof name_buf);
    if (s_customers(sk, ev, email, &customers, res) != PLUGBOARD_OK) {
        json_decref(customers);
        return;
    }
    if (json_array_size(customers) == 0) {
        sk->api->count(sk->host, "customer_not_found", 1);
        sk->api->log(sk->host, PLUGBOARD_LOG_INFO,
                     "no Stripe customer for %s; nothing to update", email);
    }
    json_array_foreach(customers, i, c)
    {
        if (s_update(sk, ev, c, email, name, res) != PLUGBOARD_OK) {
            break;
        }
    }
    json_decref(customers);
}

/* ------------------------------------------------------------------ */
/* Open and close                                                      */
/* ------------------------------------------------------------------ */

static char *
s_printf(const plugboard_host_api_t *api, const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *out = api->alloc(n);

    if (out != NULL) {
        snprintf(out, n, "%s%s", a, b);
    }
    return out;
}

void
stripe_sink_close(stripe_sink_t **skp)
{
    stripe_sink_t *sk;

    if (skp == NULL || *skp == NULL) {
        return;
    }
    sk = *skp;
    *skp = NULL;
    plugboard_http_destroy(&sk->http);
    if (sk->auth_header != NULL) {
        memset(sk->auth_header, 0, strlen(sk->auth_header));
    }
    sk->api->free(sk->auth_header);
    sk->api->free(sk->version_header);
    sk->api->free(sk->base);
    sk->api->free(sk);
}

static int
s_check_key(const char *key, const char *base, char *errbuf)
{
    if (strncmp(key, "sk_", 3) != 0 && strncmp(key, "rk_", 3) != 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'api_key' is not a secret or restricted key "
                 "(sk_... or rk_...)");
        return -1;
    }
    if (key[strcspn(key, " \t\r\n")] != '\0') {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'api_key' holds spaces or line breaks");
        return -1;
    }
    if (strncmp(base, "https://", 8) != 0 && strncmp(base, "http://", 7) != 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'api_base': expected an http(s) URL, got '%.64s'",
                 base);
        return -1;
    }
    return 0;
}

int
stripe_sink_open(const plugboard_host_api_t *api, plugboard_host_t *host,
                 const plugboard_settings_t *settings, stripe_sink_t **out,
                 char *errbuf)
{
    const char *key = api->setting_string(settings, "api_key");
    const char *base = api->setting_string(settings, "api_base");
    const char *version = api->setting_string(settings, "api_version");
    plugboard_http_options_t opt = {
        .user_agent = "plugboard-stripe",
        .connect_timeout_ms = api->setting_int(settings, "connect_timeout"),
        .timeout_ms = api->setting_int(settings, "timeout"),
    };
    stripe_sink_t *sk;
    size_t n;

    *out = NULL;
    if (key == NULL) {
        return 0;
    }
    if (s_check_key(key, base, errbuf) != 0) {
        return -1;
    }
    sk = api->alloc(sizeof *sk);
    if (sk == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(sk, 0, sizeof *sk);
    sk->api = api;
    sk->host = host;
    sk->base = s_printf(api, base, "");
    sk->auth_header = s_printf(api, "Authorization: Bearer ", key);
    sk->version_header =
        version != NULL ? s_printf(api, "Stripe-Version: ", version) : NULL;
    sk->http = plugboard_http_new(api, &opt);
    if (sk->base == NULL || sk->auth_header == NULL || sk->http == NULL ||
        (version != NULL && sk->version_header == NULL)) {
        stripe_sink_close(&sk);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    n = strlen(sk->base);
    while (n > 0 && sk->base[n - 1] == '/') {
        sk->base[--n] = '\0';
    }
    if (strncmp(key, "sk_live_", 8) == 0 && strncmp(base, "http://", 7) == 0) {
        api->log(host, PLUGBOARD_LOG_WARN,
                 "api_base is plain http: the live key travels unencrypted");
    }
    *out = sk;
    return 0;
}
