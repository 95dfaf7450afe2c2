/*
 * sendgrid.c - SendGrid's Event Webhook: verify its signature, map its
 * events to email.delivered, email.bounced and email.complained.
 *
 * SendGrid signs "<X-Twilio-Email-Event-Webhook-Timestamp><raw body>" with
 * ECDSA P-256 / SHA-256 and sends the DER signature, base64, in
 * X-Twilio-Email-Event-Webhook-Signature; the admin copies the public key
 * (base64 SubjectPublicKeyInfo) from Mail Settings.  This is how SendGrid's
 * own helper (sendgrid-python, helpers/eventwebhook) checks it.  The
 * signature is checked over the bytes received, before any parsing; only a
 * verified body whose timestamp is within the tolerance is read.
 *
 * A request is a JSON array of events.  Each is mapped on its own: an
 * element that cannot be mapped (no address, not an object) is logged and
 * counted, and the rest of the batch still goes through with a 2xx, since
 * an error answer makes SendGrid re-post the whole batch for a day.
 * SendGrid re-posts batches and can give the same event a new sg_event_id
 * (and some events have none), so the dedupe id is a fingerprint of what
 * identifies the occurrence, not sg_event_id (which is kept as
 * vendor.sendgrid.sg_event_id).
 */
#include "smtp.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/x509.h>

#define S_SIG_HEADER "X-Twilio-Email-Event-Webhook-Signature"
#define S_TS_HEADER "X-Twilio-Email-Event-Webhook-Timestamp"
#define S_SIG_MAX 256  /* bytes of a DER ECDSA P-256 signature, with room */
#define S_KEY_MAX 1024 /* bytes of a DER public key */
#define S_TS_DIGITS 18

/* ------------------------------------------------------------------ */
/* Base64 and the key                                                  */
/* ------------------------------------------------------------------ */

static int
s_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Decode standard base64 (padding optional, no other characters) into out
 * (room for max bytes).  Returns the length, or -1 when the text is not
 * base64 or does not fit.
 */
static long
s_b64_decode(const char *in, size_t n, uint8_t *out, size_t max)
{
    while (n > 0 && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = s_b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == max)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

EVP_PKEY *
smtp_sendgrid_key(const char *text, char *errbuf)
{
    /* keep the base64 characters, dropping PEM armour and whitespace */
    char b64[2 * S_KEY_MAX];
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '-') { /* "-----BEGIN PUBLIC KEY-----" and END lines */
            const char *nl = strchr(p, '\n');
            if (!nl)
                break;
            p = nl;
            continue;
        }
        if (isspace((unsigned char)*p))
            continue;
        if (n + 1 >= sizeof b64)
            goto out_bad;
        b64[n++] = *p;
    }
    uint8_t der[S_KEY_MAX];
    long der_len = s_b64_decode(b64, n, der, sizeof der);
    if (der_len <= 0)
        goto out_bad;
    const unsigned char *p = der;
    EVP_PKEY *key = d2i_PUBKEY(NULL, &p, der_len);
    if (!key || p != der + der_len)
        goto out_free;
    char group[64] = "";
    if (!EVP_PKEY_is_a(key, "EC") ||
        !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                        sizeof group, NULL) ||
        strcmp(group, "prime256v1") != 0) {
        EVP_PKEY_free(key);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'sendgrid_public_key' is not an ECDSA P-256 key: "
                 "copy the verification key from SendGrid's Mail Settings");
        return NULL;
    }
    return key;

out_free:
    EVP_PKEY_free(key);
out_bad:
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
             "setting 'sendgrid_public_key' is not a base64 public key as "
             "SendGrid's Mail Settings show it");
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Verification                                                        */
/* ------------------------------------------------------------------ */

/* Whether sig verifies "<ts><body>" under key.  *nomem on failure to
 * allocate (the caller answers 503, not a refusal). */
static bool
s_verify(EVP_PKEY *key, const char *ts, const uint8_t *body, size_t len,
         const uint8_t *sig, size_t sig_len, bool *nomem)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    *nomem = ctx == NULL;
    if (!ctx)
        return false;
    bool ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestVerifyUpdate(ctx, ts, strlen(ts)) == 1 &&
              (len == 0 || EVP_DigestVerifyUpdate(ctx, body, len) == 1) &&
              EVP_DigestVerifyFinal(ctx, sig, sig_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* The request's verdict: 0 when it may be read, else the HTTP status with
 * the reason and counter set. */
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

/* Signature first, then age: a stale but genuine request is told apart
 * from a forged one (as SendGrid's and Stripe's libraries do). */
static int
s_check(smtp_t *s, const plugboard_request_t *req, s_check_t *c)
{
    const plugboard_host_api_t *api = s->api;
    const char *sig = api->request_header(req, S_SIG_HEADER);
    const char *ts = api->request_header(req, S_TS_HEADER);
    memset(c, 0, sizeof *c);
    if (!sig || !*sig || !ts || !*ts)
        return s_check_fail(
            c, 400, "missing " S_SIG_HEADER " or " S_TS_HEADER " header",
            "signature_missing");
    size_t ts_len = strlen(ts);
    int64_t t = 0;
    for (size_t i = 0; i < ts_len; i++) {
        if (!isdigit((unsigned char)ts[i]) || ts_len > S_TS_DIGITS)
            return s_check_fail(c, 400, "malformed " S_TS_HEADER " header",
                                "signature_malformed");
        t = t * 10 + (ts[i] - '0');
    }
    uint8_t der[S_SIG_MAX];
    long der_len = s_b64_decode(sig, strlen(sig), der, sizeof der);
    if (der_len <= 0)
        return s_check_fail(c, 400, "malformed " S_SIG_HEADER " header",
                            "signature_malformed");
    bool nomem = false;
    if (!s_verify(s->sendgrid_key, ts, req->body, req->body_len, der,
                  (size_t)der_len, &nomem))
        return nomem ? s_check_fail(c, 503, "out of memory", "internal_error")
                     : s_check_fail(c, 400,
                                    "signature does not verify "
                                    "with sendgrid_public_key",
                                    "signature_rejected");
    int64_t now_ms = req->received_ms > 0 ? req->received_ms : api->now_ms();
    if (t < (now_ms - s->tolerance_ms) / 1000)
        return s_check_fail(c, 400,
                            "genuine signature but the timestamp is "
                            "older than webhook_tolerance (replay?)",
                            "timestamp_rejected");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Mapping                                                             */
/* ------------------------------------------------------------------ */

/* SendGrid event kinds that are real but have no canonical event. */
static bool
s_known_unmapped(const char *kind)
{
    static const char *const kinds[] = {
        "processed",
        "deferred",
        "open",
        "click",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
        "machine_opened",
        NULL,
    };
    for (size_t i = 0; kinds[i]; i++)
        if (strcmp(kind, kinds[i]) == 0)
            return true;
    return false;
}

/* "category" as a JSON array of strings (SendGrid sends a string or an
 * array); NULL when there is none.  New reference. */
static json_t *
s_tags(json_t *e)
{
    json_t *cat = json_object_get(e, "category");
    json_t *tags = json_array();
    if (!tags)
        return NULL;
    if (json_is_string(cat)) {
        json_array_append(tags, cat);
    } else if (json_is_array(cat)) {
        size_t i;
        json_t *v;
        json_array_foreach(cat, i, v)
        {
            if (json_is_string(v))
                json_array_append(tags, v);
        }
    }
    if (json_array_size(tags) == 0) {
        json_decref(tags);
        return NULL;
    }
    return tags;
}

/* The event's time in ms (SendGrid sends UNIX seconds), and its text. */
static int64_t
s_time(json_t *e, char *text, size_t text_len)
{
    json_t *ts = json_object_get(e, "timestamp");
    text[0] = '\0';
    if (json_is_integer(ts)) {
        json_int_t v = json_integer_value(ts);
        snprintf(text, text_len, "%" JSON_INTEGER_FORMAT, v);
        return v > 0 && v < INT64_MAX / 1000 ? (int64_t)v * 1000 : 0;
    }
    if (json_is_real(ts)) {
        double v = json_real_value(ts);
        snprintf(text, text_len, "%.3f", v);
        return v > 0 && v < 9e15 ? (int64_t)(v * 1000.0 + 0.5) : 0;
    }
    return 0;
}

/* bounce.code: the enhanced status ("5.1.1"), else the reply code that
 * starts the reason ("550 ..."). */
static void
s_bounce_code(smtp_event_t *ev, json_t *e)
{
    const char *status = smtp_json_str(e, "status");
    const char *reason = smtp_json_str(e, "reason");
    if (status) {
        smtp_event_line(ev, "bounce.code", status);
    } else if (reason && isdigit((unsigned char)reason[0]) &&
               isdigit((unsigned char)reason[1]) &&
               isdigit((unsigned char)reason[2]) &&
               (reason[3] == ' ' || reason[3] == '\0')) {
        char code[4] = {reason[0], reason[1], reason[2], '\0'};
        smtp_event_str(ev, "bounce.code", code);
    }
}

/* Map one element; counts what happened to it in t. */
static void
s_map(smtp_t *s, json_t *e, size_t index, smtp_batch_t *batch, smtp_tally_t *t)
{
    const plugboard_host_api_t *api = s->api;
    const char *why = NULL;
    const char *kind = json_is_object(e) ? smtp_json_str(e, "event") : NULL;
    const char *type = NULL, *bounce = NULL;
    if (!json_is_object(e))
        why = "not a JSON object";
    else if (!kind)
        why = "no \"event\"";
    else if (strcmp(kind, "delivered") == 0)
        type = PLUGBOARD_EV_EMAIL_DELIVERED;
    else if (strcmp(kind, "bounce") == 0) {
        type = PLUGBOARD_EV_EMAIL_BOUNCED;
        const char *bt = smtp_json_str(e, "type");
        bounce = bt && strcmp(bt, "blocked") == 0 ? "blocked" : "hard";
    } else if (strcmp(kind, "dropped") == 0) {
        type = PLUGBOARD_EV_EMAIL_BOUNCED;
        bounce = "blocked"; /* SendGrid refused to send (suppressions) */
    } else if (strcmp(kind, "spamreport") == 0)
        type = PLUGBOARD_EV_EMAIL_COMPLAINED;
    if (!why && !type) {
        bool known = s_known_unmapped(kind);
        known ? t->ignored++ : t->unknown++;
        if (!known)
            api->log(s->host, PLUGBOARD_LOG_INFO,
                     "sendgrid event [%zu] of unknown kind '%.40s' ignored",
                     index, kind);
        return;
    }
    smtp_event_t ev = {0};
    if (!why && !smtp_event_begin(s, &ev, type, "sendgrid",
                                  smtp_json_str(e, "email"))) {
        if (ev.rc == PLUGBOARD_E_NOMEM) {
            batch->nomem = true;
            return;
        }
        why = "no valid \"email\"";
    }
    if (why) {
        /* kept alone as a dead letter; the rest of the batch goes on */
        char *text = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
        t->malformed++;
        api->log(s->host, PLUGBOARD_LOG_WARN,
                 "sendgrid event [%zu] not mapped: %s", index, why);
        smtp_batch_unmapped(batch, "sendgrid", why, text ? text : "",
                            text ? strlen(text) : 0);
        free(text);
        return;
    }
    char ts[40];
    smtp_event_time(&ev, s_time(e, ts, sizeof ts));
    smtp_event_message_id(&ev, "email.message_id", smtp_json_str(e, "smtp-id"));
    smtp_event_str(&ev, "email.provider_message_id",
                   smtp_json_str(e, "sg_message_id"));
    json_t *tags = s_tags(e);
    smtp_event_json(&ev, "email.tags", tags);
    json_decref(tags);
    if (strcmp(kind, "delivered") == 0)
        smtp_event_line(&ev, "email.response", smtp_json_str(e, "response"));
    if (bounce) {
        smtp_event_str(&ev, "bounce.type", bounce);
        s_bounce_code(&ev, e);
        smtp_event_line(&ev, "bounce.reason", smtp_json_str(e, "reason"));
    }
    smtp_event_str(&ev, "vendor.sendgrid.sg_event_id",
                   smtp_json_str(e, "sg_event_id"));
    const char *parts[] = {
        kind,
        smtp_json_str(e, "email"),
        smtp_json_str(e, "sg_message_id"),
        smtp_json_str(e, "smtp-id"),
        ts,
        smtp_json_str(e, "type"),
        smtp_json_str(e, "status"),
        smtp_json_str(e, "reason"),
    };
    smtp_event_dedupe_fingerprint(&ev, "sendgrid", parts,
                                  sizeof parts / sizeof parts[0]);
    if (smtp_batch_add(batch, &ev))
        t->emitted++;
    else if (!batch->nomem) {
        t->malformed++;
        api->log(s->host, PLUGBOARD_LOG_WARN,
                 "sendgrid event [%zu] not mapped: a field was refused (%d)",
                 index, ev.rc);
    }
}

void
smtp_sendgrid_webhook(smtp_t *s, const plugboard_request_t *req,
                      plugboard_response_t *resp)
{
    s_check_t check;
    if (s_check(s, req, &check) != 0) {
        smtp_hook_refuse(s, resp, check.status, check.reason, check.counter);
        return;
    }
    smtp_tally_t tally = {0};
    json_t *root = smtp_json_load(req->body, req->body_len);
    if (!json_is_array(root)) {
        /* genuine, so a 4xx would only make SendGrid re-post it for days:
         * acknowledged and kept as a dead letter */
        smtp_batch_t dead = {.s = s};
        json_decref(root);
        tally.malformed = 1;
        s->api->log(s->host, PLUGBOARD_LOG_ERROR,
                    "sendgrid webhook body is not a JSON array of events; "
                    "acknowledged and kept as a dead letter");
        smtp_batch_unmapped(&dead, "sendgrid",
                            "the body is not a JSON array of events (or has "
                            "a duplicate key)",
                            req->body, req->body_len);
        if (dead.nomem)
            smtp_hook_refuse(s, resp, 503, "cannot accept events now",
                             "emit_failed");
        else
            smtp_hook_accept(s, resp, &tally);
        return;
    }
    smtp_batch_t batch = {.s = s};
    size_t i;
    json_t *e;
    json_array_foreach(root, i, e) s_map(s, e, i, &batch, &tally);
    json_decref(root);
    int rc = batch.nomem ? PLUGBOARD_E_NOMEM : smtp_batch_emit(&batch);
    smtp_batch_release(&batch);
    if (rc == PLUGBOARD_E_FULL)
        smtp_hook_refuse(s, resp, 503,
                         "too many events in one request for "
                         "the host to stage",
                         "emit_failed");
    else if (rc != 0)
        smtp_hook_refuse(s, resp, 503, "cannot accept events now",
                         "emit_failed");
    else
        smtp_hook_accept(s, resp, &tally);
}
