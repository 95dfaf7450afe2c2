/*
 * mailgun.c - Mailgun's webhooks: verify the signature inside the body, map
 * the event to email.delivered, email.bounced or email.complained.
 *
 * Mailgun posts one event per request as JSON: {"signature": {"timestamp",
 * "token", "signature"}, "event-data": {...}}, where signature is the hex
 * HMAC-SHA256 of timestamp + token under the webhook signing key.  That
 * signature does not cover event-data, so whoever sees one signed request
 * could attach other event data to it while the timestamp is fresh.  The
 * replay cache closes that: a token is good for the one body it first came
 * with (Mailgun's own retries re-send that same body, which is accepted
 * again and deduplicated by the host), for as long as its timestamp is
 * fresh, after which the tolerance check refuses it anyway.
 *
 * Answers: forged, stale or replayed requests get 400; a transient problem
 * here gets 503, never 406, which Mailgun takes as "do not retry"; a
 * genuine event that cannot be mapped is acknowledged with 200 and logged.
 */
#include "smtp.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#define S_TOKEN_MAX 256 /* bytes of a token we accept */
#define S_TS_DIGITS 18
#define S_CACHE_MIN 256        /* slots */
#define S_CACHE_MAX (1u << 17) /* 131072 slots, about 9 MB */

/* ------------------------------------------------------------------ */
/* Replay cache                                                        */
/* ------------------------------------------------------------------ */

static size_t
s_slot_of(const uint8_t token[PLUGBOARD_SHA256_LEN], size_t cap)
{
    uint64_t h;
    memcpy(&h, token, sizeof h);
    return (size_t)(h & (cap - 1));
}

/* Put a live entry into a table known not to hold it. */
static void
s_insert(smtp_token_t *slots, size_t cap, const smtp_token_t *e)
{
    size_t i = s_slot_of(e->token, cap);
    while (slots[i].expires_ms != 0)
        i = (i + 1) & (cap - 1);
    slots[i] = *e;
}

/* Rebuild with only live entries, doubling when they fill half.  Returns
 * false when out of memory or at the size limit with no room. */
static bool
s_rehash(smtp_t *s, int64_t now)
{
    smtp_tokens_t *t = &s->tokens;
    size_t live = 0;
    for (size_t i = 0; i < t->cap; i++)
        live += t->slots[i].expires_ms > now;
    size_t cap = t->cap ? t->cap : S_CACHE_MIN;
    while (live * 2 >= cap && cap < S_CACHE_MAX)
        cap *= 2;
    if (live * 4 >= cap * 3)
        return false;
    smtp_token_t *slots = s->api->alloc(cap * sizeof *slots);
    if (!slots)
        return false;
    memset(slots, 0, cap * sizeof *slots);
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].expires_ms > now)
            s_insert(slots, cap, &t->slots[i]);
    s->api->free(t->slots);
    t->slots = slots;
    t->cap = cap;
    t->used = live;
    return true;
}

typedef enum s_seen {
    S_SEEN_NEW = 0, /* first use: recorded */
    S_SEEN_SAME,    /* used before with this very body */
    S_SEEN_OTHER,   /* used before with another body: a replay */
    S_SEEN_FULL,    /* cannot record it now */
} s_seen_t;

/* Look the token up and record it with the body until expires_ms.
 * Expired slots keep probe chains intact and are reused for new tokens. */
static s_seen_t
s_token_seen(smtp_t *s, const uint8_t token[PLUGBOARD_SHA256_LEN],
             const uint8_t body[PLUGBOARD_SHA256_LEN], int64_t now,
             int64_t expires_ms)
{
    smtp_tokens_t *t = &s->tokens;
    if ((t->cap == 0 || (t->used + 1) * 4 > t->cap * 3) && !s_rehash(s, now))
        return S_SEEN_FULL;
    size_t i = s_slot_of(token, t->cap);
    smtp_token_t *reuse = NULL;
    for (; t->slots[i].expires_ms != 0; i = (i + 1) & (t->cap - 1)) {
        smtp_token_t *e = &t->slots[i];
        if (e->expires_ms <= now) {
            if (!reuse)
                reuse = e;
            continue;
        }
        if (memcmp(e->token, token, PLUGBOARD_SHA256_LEN) == 0)
            return memcmp(e->body, body, PLUGBOARD_SHA256_LEN) == 0
                       ? S_SEEN_SAME
                       : S_SEEN_OTHER;
    }
    if (!reuse) {
        reuse = &t->slots[i];
        t->used++;
    }
    memcpy(reuse->token, token, PLUGBOARD_SHA256_LEN);
    memcpy(reuse->body, body, PLUGBOARD_SHA256_LEN);
    reuse->expires_ms = expires_ms > now ? expires_ms : now + 1;
    return S_SEEN_NEW;
}

void
smtp_tokens_release(smtp_t *s)
{
    s->api->free(s->tokens.slots);
    memset(&s->tokens, 0, sizeof s->tokens);
}

/* ------------------------------------------------------------------ */
/* Verification                                                        */
/* ------------------------------------------------------------------ */

typedef struct s_check {
    int status;
    const char *reason;
    const char *counter;
} s_check_t;

static int
s_check_fail(s_check_t *c, int status, const char *reason, const char *counter)
{
    c->status = status;
    c->reason = reason;
    c->counter = counter;
    return status;
}

/* The signature object's timestamp as digits (a string, or an integer in
 * case a sender writes it so) into buf; false when it is neither. */
static bool
s_timestamp(json_t *v, char *buf, size_t len, int64_t *t)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_string(v) && json_string_length(v) > 0 &&
             json_string_length(v) <= S_TS_DIGITS)
        snprintf(buf, len, "%s", json_string_value(v));
    else
        return false;
    *t = 0;
    for (const char *p = buf; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return false;
        *t = *t * 10 + (*p - '0');
    }
    return true;
}

/* Signature, then age, then the token's first use. */
static int
s_check(smtp_t *s, const plugboard_request_t *req, json_t *root, s_check_t *c)
{
    memset(c, 0, sizeof *c);
    json_t *sig = json_object_get(root, "signature");
    const char *token = smtp_json_str(sig, "token");
    const char *hex = smtp_json_str(sig, "signature");
    char ts[S_TS_DIGITS + 2];
    int64_t t = 0;
    if (!json_is_object(sig) || !token || !hex)
        return s_check_fail(c, 400,
                            "missing signature object (timestamp, "
                            "token, signature)",
                            "signature_missing");
    if (!s_timestamp(json_object_get(sig, "timestamp"), ts, sizeof ts, &t) ||
        strlen(token) > S_TOKEN_MAX)
        return s_check_fail(c, 400, "malformed signature object",
                            "signature_malformed");
    uint8_t given[PLUGBOARD_SHA256_LEN], mac[PLUGBOARD_SHA256_LEN];
    char msg[S_TS_DIGITS + S_TOKEN_MAX + 2];
    int n = snprintf(msg, sizeof msg, "%s%s", ts, token);
    if (plugboard_hmac_sha256(s->mailgun_key, strlen(s->mailgun_key), msg,
                              (size_t)n, mac) != 0)
        return s_check_fail(c, 503, "cannot compute HMAC", "internal_error");
    if (plugboard_hex_decode(hex, strlen(hex), given, sizeof given) != 0 ||
        !plugboard_equal_ct(given, mac, sizeof mac))
        return s_check_fail(c, 400,
                            "signature does not verify with "
                            "mailgun_signing_key",
                            "signature_rejected");
    int64_t now = req->received_ms > 0 ? req->received_ms : s->api->now_ms();
    if (t < (now - s->tolerance_ms) / 1000)
        return s_check_fail(c, 400,
                            "genuine signature but the timestamp is "
                            "older than webhook_tolerance (replay?)",
                            "timestamp_rejected");
    uint8_t token_hash[SHA256_DIGEST_LENGTH], body_hash[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, strlen(token), token_hash);
    SHA256(req->body, req->body_len, body_hash);
    switch (s_token_seen(s, token_hash, body_hash, now,
                         t * 1000 + s->tolerance_ms)) {
    case S_SEEN_OTHER:
        return s_check_fail(c, 400,
                            "token already used with another body "
                            "(replayed signature)",
                            "replay_rejected");
    case S_SEEN_FULL:
        return s_check_fail(c, 503, "replay cache full, try again later",
                            "internal_error");
    case S_SEEN_SAME:
        s->api->count(s->host, "token_reused_same_body", 1);
        break;
    case S_SEEN_NEW:
        break;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Mapping                                                             */
/* ------------------------------------------------------------------ */

/* json_t at a dotted path of objects. */
static json_t *
s_at(json_t *v, const char *path)
{
    char seg[64];
    while (v && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof seg)
            return NULL;
        memcpy(seg, path, n);
        seg[n] = '\0';
        path += n + (path[n] == '.');
        v = json_object_get(v, seg);
    }
    return v;
}

static const char *
s_str(json_t *v, const char *path)
{
    json_t *s = s_at(v, path);
    return json_is_string(s) && json_string_length(s) > 0 ? json_string_value(s)
                                                          : NULL;
}

/* bounce.type for a permanent failure, from Mailgun's reason. */
static const char *
s_bounce_type(const char *reason)
{
    static const char *const blocked[] = {
        "suppress-bounce",
        "suppress-unsubscribe",
        "suppress-complaint",
        "espblock",
        "blocked",
        NULL,
    };
    if (!reason)
        return "hard";
    for (size_t i = 0; blocked[i]; i++)
        if (strcmp(reason, blocked[i]) == 0)
            return "blocked";
    return strcmp(reason, "old") == 0 ? "soft" : "hard";
}

/* The canonical type for an event kind ("delivered", "failed", ...); NULL
 * with *known set when it maps to nothing. */
static const char *
s_type(json_t *ed, const char *kind, const char **bounce, bool *known)
{
    *bounce = NULL;
    *known = true;
    if (strcmp(kind, "delivered") == 0)
        return PLUGBOARD_EV_EMAIL_DELIVERED;
    if (strcmp(kind, "complained") == 0)
        return PLUGBOARD_EV_EMAIL_COMPLAINED;
    if (strcmp(kind, "failed") == 0) {
        const char *severity = s_str(ed, "severity");
        if (severity && strcmp(severity, "temporary") == 0)
            return NULL; /* Mailgun is still retrying */
        *bounce = s_bounce_type(s_str(ed, "reason"));
        return PLUGBOARD_EV_EMAIL_BOUNCED;
    }
    if (strcmp(kind, "rejected") == 0) {
        *bounce = "blocked"; /* Mailgun refused to send it */
        return PLUGBOARD_EV_EMAIL_BOUNCED;
    }
    static const char *const unmapped[] = {
        "accepted", "opened", "clicked", "unsubscribed", "stored", NULL,
    };
    *known = false;
    for (size_t i = 0; unmapped[i]; i++)
        *known = *known || strcmp(kind, unmapped[i]) == 0;
    return NULL;
}

/* "250 OK" from delivery-status code and message. */
static void
s_status_line(json_t *ed, char *out, size_t len)
{
    json_t *code = s_at(ed, "delivery-status.code");
    const char *msg = s_str(ed, "delivery-status.message");
    if (!msg)
        msg = s_str(ed, "delivery-status.description");
    out[0] = '\0';
    if (json_is_integer(code))
        snprintf(out, len, "%" JSON_INTEGER_FORMAT "%s%.*s",
                 json_integer_value(code), msg ? " " : "", (int)(len / 2),
                 msg ? msg : "");
    else if (msg)
        snprintf(out, len, "%s", msg);
}

/* Map event-data into batch; counts what happened in t. */
static void
s_map(smtp_t *s, json_t *ed, smtp_batch_t *batch, smtp_tally_t *t)
{
    const plugboard_host_api_t *api = s->api;
    const char *kind = s_str(ed, "event");
    if (!json_is_object(ed) || !kind) {
        t->malformed++;
        t->why = "no event-data.event";
        api->log(s->host, PLUGBOARD_LOG_WARN,
                 "mailgun event not mapped: no event-data.event");
        return;
    }
    const char *bounce;
    bool known;
    const char *type = s_type(ed, kind, &bounce, &known);
    if (!type) {
        known ? t->ignored++ : t->unknown++;
        if (!known)
            api->log(s->host, PLUGBOARD_LOG_INFO,
                     "mailgun event of unknown kind '%.40s' ignored", kind);
        return;
    }
    smtp_event_t ev = {0};
    if (!smtp_event_begin(s, &ev, type, "mailgun", s_str(ed, "recipient"))) {
        if (ev.rc == PLUGBOARD_E_NOMEM) {
            batch->nomem = true;
            return;
        }
        t->malformed++;
        t->why = "no valid event-data.recipient";
        api->log(s->host, PLUGBOARD_LOG_WARN,
                 "mailgun event id=%.64s not mapped: no valid recipient",
                 s_str(ed, "id") ? s_str(ed, "id") : "(none)");
        return;
    }
    json_t *jts = s_at(ed, "timestamp");
    double secs = json_is_number(jts) ? json_number_value(jts) : 0;
    int64_t ms = secs > 0 && secs < 9e15 ? (int64_t)(secs * 1000.0 + 0.5) : 0;
    smtp_event_time(&ev, ms);
    smtp_event_message_id(&ev, "email.message_id",
                          s_str(ed, "message.headers.message-id"));
    smtp_event_str(&ev, "email.provider_message_id", s_str(ed, "storage.key"));
    smtp_event_line(&ev, "email.subject", s_str(ed, "message.headers.subject"));
    json_t *tags = s_at(ed, "tags");
    if (json_is_array(tags) && json_array_size(tags) > 0)
        smtp_event_json(&ev, "email.tags", tags);
    char status[600];
    s_status_line(ed, status, sizeof status);
    if (strcmp(type, PLUGBOARD_EV_EMAIL_DELIVERED) == 0)
        smtp_event_line(&ev, "email.response", status);
    if (bounce) {
        json_t *code = s_at(ed, "delivery-status.code");
        char code_text[24] = "";
        if (json_is_integer(code) && json_integer_value(code) > 0)
            snprintf(code_text, sizeof code_text, "%" JSON_INTEGER_FORMAT,
                     json_integer_value(code));
        smtp_event_str(&ev, "bounce.type", bounce);
        smtp_event_str(&ev, "bounce.code", code_text);
        const char *why = s_str(ed, "delivery-status.message");
        if (!why)
            why = s_str(ed, "delivery-status.description");
        if (!why)
            why = s_str(ed, "reject.reason");
        if (!why)
            why = s_str(ed, "reason");
        smtp_event_line(&ev, "bounce.reason", why);
    }
    const char *id = s_str(ed, "id");
    if (id) {
        smtp_event_dedupe(&ev, "mailgun", id);
    } else {
        char ts[40];
        snprintf(ts, sizeof ts, "%" PRId64, ms);
        const char *parts[] = {kind, s_str(ed, "recipient"),
                               s_str(ed, "message.headers.message-id"), ts};
        smtp_event_dedupe_fingerprint(&ev, "mailgun", parts, 4);
    }
    if (smtp_batch_add(batch, &ev)) {
        t->emitted++;
    } else if (!batch->nomem) {
        t->malformed++;
        t->why = "a field was refused";
        api->log(s->host, PLUGBOARD_LOG_WARN,
                 "mailgun event not mapped: a field was refused (%d)", ev.rc);
    }
}

void
smtp_mailgun_webhook(smtp_t *s, const plugboard_request_t *req,
                     plugboard_response_t *resp)
{
    json_t *root = smtp_json_load(req->body, req->body_len);
    if (!json_is_object(root)) {
        json_decref(root);
        smtp_hook_refuse(s, resp, 400,
                         "expected a JSON body with a "
                         "signature object (Mailgun's "
                         "webhooks, not the legacy form posts)",
                         "malformed_json");
        return;
    }
    s_check_t check;
    if (s_check(s, req, root, &check) != 0) {
        json_decref(root);
        smtp_hook_refuse(s, resp, check.status, check.reason, check.counter);
        return;
    }
    smtp_tally_t tally = {0};
    smtp_batch_t batch = {.s = s};
    s_map(s, json_object_get(root, "event-data"), &batch, &tally);
    json_decref(root);
    if (tally.malformed && !batch.nomem)
        smtp_batch_unmapped(&batch, "mailgun", tally.why, req->body,
                            req->body_len);
    int rc = batch.nomem ? PLUGBOARD_E_NOMEM : smtp_batch_emit(&batch);
    smtp_batch_release(&batch);
    if (rc != 0)
        smtp_hook_refuse(s, resp, 503, "cannot accept events now",
                         "emit_failed");
    else
        smtp_hook_accept(s, resp, &tally);
}
