/*
 * hooks.c - what the smtp connector's two webhook providers share: reading
 * vendor JSON, building the canonical email.* events (docs/events.md),
 * emitting a request's events together, and answering the sender.
 *
 * A request's events are built first and emitted only when the request as
 * a whole is accepted, so a refused request emits nothing; the host then
 * answers 2xx only once they are durable.  Nothing here keeps state.
 */
#include "smtp.h"

#include <plugboard/vendor.h>

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#define S_DEDUPE_MAX 200 /* longer vendor ids are hashed */
#define S_LINE_MAX 1000  /* bytes of one-line text kept (bounce reasons) */

/* ------------------------------------------------------------------ */
/* JSON                                                                */
/* ------------------------------------------------------------------ */

json_t *
smtp_json_load(const uint8_t *body, size_t len)
{
    json_error_t err;
    if (!body || len == 0)
        return NULL;
    return plugboard_json_loadb((const char *)body, len, &err);
}

const char *
smtp_json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return NULL;
    return json_string_value(v);
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

bool
smtp_event_begin(smtp_t *s, smtp_event_t *ev, const char *type,
                 const char *vendor, const char *email)
{
    char buf[PLUGBOARD_MAIL_ADDRESS_MAX + 1];
    memset(ev, 0, sizeof *ev);
    ev->api = s->api;
    ev->rc = PLUGBOARD_E_INVALID;
    if (!email)
        return false;
    while (isspace((unsigned char)*email))
        email++;
    size_t n = strlen(email);
    while (n > 0 && isspace((unsigned char)email[n - 1]))
        n--;
    if (n > PLUGBOARD_MAIL_ADDRESS_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)tolower((unsigned char)email[i]);
    buf[n] = '\0';
    if (!plugboard_mail_address_ok(buf, n))
        return false;
    ev->b = s->api->builder_new(s->host, type);
    if (!ev->b) {
        ev->rc = PLUGBOARD_E_NOMEM;
        return false;
    }
    ev->rc = 0;
    smtp_event_str(ev, "customer.email", buf);
    smtp_event_str(ev, "email.vendor", vendor);
    if (ev->rc == 0)
        ev->rc = s->api->builder_set_key(ev->b, buf);
    return ev->rc == 0;
}

void
smtp_event_str(smtp_event_t *ev, const char *path, const char *value)
{
    if (ev->rc == 0 && value && *value)
        ev->rc = ev->api->builder_set_string(ev->b, path, value, strlen(value));
}

void
smtp_event_line(smtp_event_t *ev, const char *path, const char *value)
{
    char line[S_LINE_MAX + 1];
    size_t o = 0;
    bool space = true; /* drops leading blanks and collapses runs */
    for (const char *p = value; p && *p && o < S_LINE_MAX; p++) {
        unsigned char c = (unsigned char)*p;
        bool blank = c <= 0x20 || c == 0x7f;
        if (blank && space)
            continue;
        line[o++] = blank ? ' ' : (char)c;
        space = blank;
    }
    while (o > 0 && line[o - 1] == ' ')
        o--;
    line[o] = '\0';
    smtp_event_str(ev, path, line);
}

void
smtp_event_json(smtp_event_t *ev, const char *path, json_t *value)
{
    if (ev->rc != 0 || !value)
        return;
    char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!text) {
        ev->rc = PLUGBOARD_E_NOMEM;
        return;
    }
    ev->rc = ev->api->builder_set_json(ev->b, path, text, strlen(text));
    free(text);
}

void
smtp_event_time(smtp_event_t *ev, int64_t ms)
{
    if (ev->rc == 0 && ms > 0)
        ev->rc = ev->api->builder_set_time_ms(ev->b, ms);
}

static void
s_sha_hex(const void *data, size_t n, char hex[2 * SHA256_DIGEST_LENGTH + 1])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(data, n, md);
    plugboard_hex_encode(md, sizeof md, hex);
}

void
smtp_event_dedupe(smtp_event_t *ev, const char *vendor, const char *id)
{
    char dedupe[S_DEDUPE_MAX + 80];
    if (ev->rc != 0 || !id || !*id)
        return;
    if (strlen(id) <= S_DEDUPE_MAX) {
        snprintf(dedupe, sizeof dedupe, "%s:%s", vendor, id);
    } else {
        char hex[2 * SHA256_DIGEST_LENGTH + 1];
        s_sha_hex(id, strlen(id), hex);
        snprintf(dedupe, sizeof dedupe, "%s:h:%s", vendor, hex);
    }
    ev->rc = ev->api->builder_set_dedupe_id(ev->b, dedupe);
}

void
smtp_event_dedupe_fingerprint(smtp_event_t *ev, const char *vendor,
                              const char *const *parts, size_t count)
{
    if (ev->rc != 0)
        return;
    size_t len = 0;
    for (size_t i = 0; i < count; i++)
        len += (parts[i] ? strlen(parts[i]) : 0) + 1;
    char *joined = ev->api->alloc(len ? len : 1);
    if (!joined) {
        ev->rc = PLUGBOARD_E_NOMEM;
        return;
    }
    size_t o = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = parts[i] ? strlen(parts[i]) : 0;
        memcpy(joined + o, parts[i] ? parts[i] : "", n);
        o += n;
        joined[o++] = '\0'; /* the NUL separates the parts */
    }
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)joined, len, md);
    ev->api->free(joined);
    char hex[33];
    plugboard_hex_encode(md, 16, hex);
    char dedupe[80];
    snprintf(dedupe, sizeof dedupe, "%s:fp:%s", vendor, hex);
    ev->rc = ev->api->builder_set_dedupe_id(ev->b, dedupe);
}

void
smtp_event_message_id(smtp_event_t *ev, const char *path, const char *value)
{
    char id[S_LINE_MAX + 1];
    if (!value)
        return;
    while (isspace((unsigned char)*value) || *value == '<')
        value++;
    size_t n = strlen(value);
    while (n > 0 &&
           (isspace((unsigned char)value[n - 1]) || value[n - 1] == '>'))
        n--;
    if (n == 0 || n > S_LINE_MAX)
        return;
    memcpy(id, value, n);
    id[n] = '\0';
    smtp_event_str(ev, path, id);
}

/* ------------------------------------------------------------------ */
/* Batches                                                             */
/* ------------------------------------------------------------------ */

bool
smtp_batch_add(smtp_batch_t *batch, smtp_event_t *ev)
{
    const plugboard_host_api_t *api = batch->s->api;
    if (ev->rc != 0) {
        if (ev->rc == PLUGBOARD_E_NOMEM)
            batch->nomem = true;
        if (ev->b)
            api->builder_discard(&ev->b);
        return false;
    }
    if (batch->count == batch->cap) {
        size_t cap = batch->cap ? batch->cap * 2 : 16;
        plugboard_builder_t **items = api->alloc(cap * sizeof *items);
        if (!items) {
            batch->nomem = true;
            api->builder_discard(&ev->b);
            return false;
        }
        if (batch->count)
            memcpy(items, batch->items, batch->count * sizeof *items);
        api->free(batch->items);
        batch->items = items;
        batch->cap = cap;
    }
    batch->items[batch->count++] = ev->b;
    ev->b = NULL;
    return true;
}

void
smtp_batch_unmapped(smtp_batch_t *batch, const char *provider,
                    const char *why, const void *item, size_t len)
{
    char prefix[64], reason[PLUGBOARD_REASON_MAX];
    snprintf(prefix, sizeof prefix, "%s:unmapped:", provider);
    snprintf(reason, sizeof reason, "%s event: %s", provider, why);
    if (plugboard_emit_unmapped(batch->s->api, batch->s->host, prefix, reason,
                                item, len) != 0)
        batch->nomem = true;
}

int
smtp_batch_emit(smtp_batch_t *batch)
{
    const plugboard_host_api_t *api = batch->s->api;
    int first = 0;
    for (size_t i = 0; i < batch->count; i++) {
        if (first != 0) {
            api->builder_discard(&batch->items[i]);
            continue;
        }
        first = api->emit(batch->s->host, &batch->items[i]);
    }
    batch->count = 0;
    return first;
}

void
smtp_batch_release(smtp_batch_t *batch)
{
    const plugboard_host_api_t *api = batch->s->api;
    for (size_t i = 0; i < batch->count; i++)
        api->builder_discard(&batch->items[i]);
    api->free(batch->items);
    batch->items = NULL;
    batch->count = batch->cap = 0;
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */
/* ------------------------------------------------------------------ */

void
smtp_hook_accept(smtp_t *s, plugboard_response_t *resp, const smtp_tally_t *t)
{
    char body[160];
    snprintf(body, sizeof body,
             "{\"received\":true,\"events\":%zu,\"ignored\":%zu,"
             "\"unknown\":%zu,\"malformed\":%zu}",
             t->emitted, t->ignored, t->unknown, t->malformed);
    if (t->ignored)
        s->api->count(s->host, "ignored_event", (int64_t)t->ignored);
    if (t->unknown)
        s->api->count(s->host, "unknown_event", (int64_t)t->unknown);
    if (t->malformed)
        s->api->count(s->host, "malformed_event", (int64_t)t->malformed);
    s->api->respond(resp, 200, body);
}

void
smtp_hook_refuse(smtp_t *s, plugboard_response_t *resp, int status,
                 const char *reason, const char *counter)
{
    s->api->count(s->host, counter, 1);
    s->api->log(s->host,
                status >= 500 ? PLUGBOARD_LOG_ERROR : PLUGBOARD_LOG_WARN,
                "webhook refused status=%d reason=\"%s\"", status, reason);
    s->api->respond(resp, status, reason);
}
