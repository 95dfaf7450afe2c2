/*
 * zendesk.c - the Zendesk Support connector: descriptor, settings, open
 * and close, ticket templates, and the one classified way every part
 * calls the Tickets API (zd_request).
 *
 * Authentication is an API token ("<email>/token:<token>", HTTP Basic) or
 * an OAuth access token (Bearer), each from a secret setting; exactly one
 * must be configured.  Answers are classified the plugboard way
 * (plugboard_http_classify): 429 and 503 honour Retry-After, 401/403
 * dead-letter as an authentication failure, 422 and other 4xx dead-letter
 * with Zendesk's own description, 5xx and timeouts are retried.
 * plugins/zendesk/README.md is the admin's view.
 */
#include "zendesk.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_VERSION "0.1.0"
#define S_TEMPLATE_MAX (64 * 1024)

/* ------------------------------------------------------------------ */
/* Descriptor                                                          */
/* ------------------------------------------------------------------ */

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "api_base",
        .type = PLUGBOARD_SETTING_STRING,
        .required = true,
        .help = "your Zendesk's URL, https://<subdomain>.zendesk.com",
    },
    {
        .name = "email",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "the agent the API token belongs to (API token auth)",
    },
    {
        .name = "api_token",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "API token (Admin Center > Apps and integrations > Zendesk "
                "API); needs 'email'",
    },
    {
        .name = "oauth_token",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "OAuth access token with tickets:read and tickets:write "
                "(instead of email and api_token)",
    },
    {
        .name = "timeout",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "10s",
        .min = 100,
        .max = 60000,
        .help = "how long one API request may take (100ms..60s)",
    },
    {
        .name = "connect_timeout",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "5s",
        .min = 100,
        .max = 60000,
        .help = "how long connecting to Zendesk may take (100ms..60s)",
    },
    {
        .name = "create_on",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "payment.failed, dispute.opened, "
                         "subscription.canceled, email.bounced",
        .help = "event types that open a ticket when none exists for their "
                "external id; other consumed types only add comments",
    },
    {
        .name = "external_id",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "template of the ticket's external_id (default: from "
                "dispute.id, payment.id, subscription.id, invoice.id, else "
                "customer.email)",
    },
    {
        .name = "templates",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "directory of <event.type>.txt ticket templates ('Subject: "
                "...', a blank line, the comment) replacing the built-in "
                "ones",
    },
    {
        .name = "priority",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "normal",
        .help = "priority of new tickets: low, normal, high or urgent",
    },
    {
        .name = "tags",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "plugboard",
        .help = "tags of new tickets, comma-separated; the event type is "
                "added (payment_failed)",
    },
    {
        .name = "public_comments",
        .type = PLUGBOARD_SETTING_BOOL,
        .default_value = "false",
        .help = "post comments as public replies the requester sees "
                "(default: internal notes)",
    },
    {
        .name = "signing_secret",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "the webhook's signing secret (Admin Center > Webhooks > "
                "Reveal secret); webhooks are refused without it",
    },
    {
        .name = "tolerance",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "5m",
        .min = 1000,
        .max = 3600000,
        .help = "how far a webhook's signature timestamp may be from now",
    },
    {.name = NULL},
};

const char *const zd_consumes[] = {
    PLUGBOARD_EV_PAYMENT_SUCCEEDED, PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_PAYMENT_REFUNDED,  PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    PLUGBOARD_EV_DISPUTE_OPENED,    PLUGBOARD_EV_EMAIL_BOUNCED,
    PLUGBOARD_EV_EMAIL_COMPLAINED,  NULL,
};

static const char *const s_emits[] = {
    PLUGBOARD_EV_TICKET_CREATED,
    PLUGBOARD_EV_TICKET_UPDATED,
    PLUGBOARD_EV_TICKET_SOLVED,
    NULL,
};

/* Built-in templates, in zd_consumes order: subject, then comment. */
static const char *const s_default_templates[][2] = {
    {"Payment received: {{amount|money}} from "
     "{{customer.email|default:a customer}}",
     "A payment of {{amount|money}} was received.\n"
     "For: {{payment.description|default:(no description)}}\n"
     "Payment: {{payment.id}} ({{payment.vendor}})"},
    {"Payment failed: {{amount|money}} from "
     "{{customer.email|default:a customer}}",
     "A payment of {{amount|money}} failed.\n"
     "Reason: {{failure.message|default:none given}} "
     "({{failure.code|default:no code}})\n"
     "Invoice: {{invoice.url|default:none}}\n"
     "Next automatic attempt: "
     "{{invoice.next_payment_attempt|date|default:none}}\n"
     "Payment: {{payment.id}} ({{payment.vendor}})"},
    {"Refund: {{refund.amount|money}} to "
     "{{customer.email|default:a customer}}",
     "{{refund.amount|money}} of a payment of {{amount|money}} was "
     "refunded.\nPayment: {{payment.id}} ({{payment.vendor}})"},
    {"Subscription canceled: {{customer.email|default:a customer}}",
     "Subscription {{subscription.id}} ended ({{subscription.status}}).\n"
     "Reason: {{subscription.cancellation_reason|default:none given}}\n"
     "Plan: {{plan.id|default:unknown}} {{plan.amount|money}} per "
     "{{plan.interval|default:period}}"},
    {"Dispute opened: {{amount|money}} from "
     "{{customer.email|default:a customer}}",
     "A payment of {{amount|money}} is disputed "
     "({{dispute.reason|default:no reason given}}).\n"
     "Evidence is due {{dispute.evidence_due_at|date|default:soon}}.\n"
     "Dispute: {{dispute.id}}; payment: {{payment.id|default:unknown}}"},
    {"E-mail bounced: {{customer.email}}",
     "Mail to {{customer.email}} bounced ({{bounce.type}}): "
     "{{bounce.reason|default:no reason given}} {{bounce.code}}\n"
     "Subject: {{email.subject|default:unknown}}"},
    {"Spam complaint: {{customer.email}}",
     "{{customer.email}} marked our mail as spam "
     "({{complaint.feedback_type|default:no type given}}).\n"
     "Subject: {{email.subject|default:unknown}}"},
};

_Static_assert(sizeof s_default_templates / sizeof s_default_templates[0] ==
                   sizeof zd_consumes / sizeof zd_consumes[0] - 1,
               "one built-in template per consumed type");
_Static_assert(sizeof zd_consumes / sizeof zd_consumes[0] <= ZD_MAX_TYPES,
               "ZD_MAX_TYPES holds every consumed type");

int
zd_type_index(const char *type)
{
    for (int i = 0; zd_consumes[i] != NULL; i++) {
        if (strcmp(zd_consumes[i], type) == 0) {
            return i;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

const char *
zd_email(const char *text, size_t len, char *buf, size_t size)
{
    size_t at = 0;
    size_t n = 0;

    while (len > 0 && isspace((unsigned char)*text)) {
        text++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1])) {
        len--;
    }
    if (len == 0 || len >= size) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];

        if (ch <= 0x20 || ch == 0x7f || strchr("<>,;\"()[]\\", ch)) {
            return NULL;
        }
        at += ch == '@';
        buf[n++] = (char)tolower(ch);
    }
    buf[n] = '\0';
    return at == 1 && buf[0] != '@' && buf[n - 1] != '@' ? buf : NULL;
}

static bool
s_digits(const char **p, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) {
            return false;
        }
        *out = *out * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return true;
}

bool
zd_iso_ms(const char *text, int64_t *ms)
{
    struct tm tm = {0};
    const char *p = text;
    int y, mo, d, h, mi, s, oh = 0, om = 0, sign = 0, frac = 0, scale = 100;

    if (text == NULL || !s_digits(&p, 4, &y) || *p++ != '-' ||
        !s_digits(&p, 2, &mo) || *p++ != '-' || !s_digits(&p, 2, &d) ||
        (*p != 'T' && *p != 't' && *p != ' ')) {
        return false;
    }
    p++;
    if (!s_digits(&p, 2, &h) || *p++ != ':' || !s_digits(&p, 2, &mi) ||
        *p++ != ':' || !s_digits(&p, 2, &s)) {
        return false;
    }
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++) {
            frac += scale * (*p - '0');
            scale /= 10;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (!s_digits(&p, 2, &oh)) {
            return false;
        }
        if (*p == ':') {
            p++;
        }
        if (!s_digits(&p, 2, &om)) {
            return false;
        }
    } else {
        return false;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
        mi > 59 || s > 60 || oh > 23 || om > 59) {
        return false;
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    *ms = (int64_t)timegm(&tm) * 1000 + frac -
          (int64_t)sign * (oh * 60 + om) * 60000;
    return true;
}

/* ------------------------------------------------------------------ */
/* The API call                                                        */
/* ------------------------------------------------------------------ */

/* Zendesk's explanation: "description" and the first detail. */
static void
s_message(json_t *json, char *buf, size_t size)
{
    const char *error = json_string_value(json_object_get(json, "error"));
    const char *desc = json_string_value(json_object_get(json, "description"));
    json_t *details = json_object_get(json, "details");
    const char *detail = NULL;
    const char *key;
    json_t *v;

    json_object_foreach(details, key, v)
    {
        detail = json_string_value(
            json_object_get(json_array_get(v, 0), "description"));
        if (detail != NULL) {
            break;
        }
    }
    if (json_is_object(json_object_get(json, "error"))) {
        error = json_string_value(
            json_object_get(json_object_get(json, "error"), "message"));
    }
    snprintf(buf, size, "%s%s%s%s%s", error != NULL ? error : "",
             error != NULL && desc != NULL ? ": " : "",
             desc != NULL ? desc : "", detail != NULL ? ": " : "",
             detail != NULL ? detail : "");
}

static plugboard_outcome_t
s_send(zd_state_t *st, zd_call_t *call, const char *url, const char *body,
       plugboard_result_t *res)
{
    char idem[128];
    const char *headers[] = {
        st->auth_header,
        "Content-Type: application/json",
        "Accept: application/json",
        NULL,
        NULL,
    };
    plugboard_http_reply_t r;
    json_error_t jerr;
    char message[PLUGBOARD_VENDOR_MESSAGE_MAX + 1];

    if (call->idempotency != NULL) {
        snprintf(idem, sizeof idem, "Idempotency-Key: %s", call->idempotency);
        headers[3] = idem;
    }
    if (plugboard_http_request(st->http, call->method, url, headers, body,
                               body != NULL ? strlen(body) : 0, &r) != 0) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "%s: out of memory",
                             call->what);
        return PLUGBOARD_RETRY;
    }
    call->status = r.status;
    if (r.status == 0) {
        return plugboard_http_classify(&r, call->what, NULL, 0, res);
    }
    call->json =
        r.body_len > 0 ? plugboard_json_loadb(r.body, r.body_len, &jerr) : NULL;
    if (r.status >= 200 && r.status < 300) {
        if (!json_is_object(call->json)) {
            st->api->count(st->host, "malformed_answer", 1);
            plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                                 "%s: malformed JSON from Zendesk (HTTP %ld)",
                                 call->what, r.status);
            return PLUGBOARD_RETRY;
        }
        return PLUGBOARD_OK;
    }
    if (r.status == 429) {
        st->api->count(st->host, "rate_limited", 1);
    }
    s_message(call->json, message, sizeof message);
    plugboard_http_report_auth(st->api, st->host, &r, "Zendesk");
    return plugboard_http_classify(
        &r, call->what, message[0] != '\0' ? message : NULL, 60000, res);
}

plugboard_outcome_t
zd_request(zd_state_t *st, zd_call_t *call, plugboard_result_t *res)
{
    size_t url_len = strlen(st->base) + strlen(call->path) + 1;
    char *url = st->api->alloc(url_len);
    char *body =
        call->body != NULL ? json_dumps(call->body, JSON_COMPACT) : NULL;
    plugboard_outcome_t out;

    call->status = 0;
    call->json = NULL;
    if (url == NULL || (call->body != NULL && body == NULL)) {
        st->api->free(url);
        free(body);
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "%s: out of memory",
                             call->what);
        return PLUGBOARD_RETRY;
    }
    snprintf(url, url_len, "%s%s", st->base, call->path);
    if (call->fresh) {
        plugboard_http_fresh_next(st->http);
    }
    out = s_send(st, call, url, body, res);
    st->api->log(st->host, PLUGBOARD_LOG_DEBUG, "%s %s -> %ld", call->method,
                 call->path, call->status);
    st->api->free(url);
    free(body);
    return out;
}

/* ------------------------------------------------------------------ */
/* Open and close                                                      */
/* ------------------------------------------------------------------ */

static char *
s_strdup(zd_state_t *st, const char *s, size_t n)
{
    char *out = st->api->alloc(n + 1);

    if (out != NULL) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}

static int
s_nomem(char *errbuf)
{
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
    return -1;
}

/* Split a "Subject: ...\n\nbody" template file. */
static int
s_parse_template(zd_state_t *st, zd_template_t *t, const char *text,
                 const char *path, char *errbuf)
{
    const char *nl = strchr(text, '\n');
    const char *subject = text + strlen("Subject:");
    size_t subject_len;

    if (strncmp(text, "Subject:", 8) != 0 || nl == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "template '%.160s': the first line must be 'Subject: ...'",
                 path);
        return -1;
    }
    subject += strspn(subject, " \t");
    subject_len = (size_t)(nl - subject);
    if (subject_len > 0 && subject[subject_len - 1] == '\r') {
        subject_len--;
    }
    text = nl + 1;
    text += strspn(text, "\r\n");
    t->subject = s_strdup(st, subject, subject_len);
    t->body = s_strdup(st, text, strlen(text));
    return t->subject != NULL && t->body != NULL ? 0 : s_nomem(errbuf);
}

/* The template of type from dir, or the built-in one. */
static int
s_load_template(zd_state_t *st, int i, const char *dir, char *errbuf)
{
    zd_template_t *t = &st->templates[i];
    char path[4096];
    char *text;
    FILE *f;
    size_t n;
    int rc;

    t->type = zd_consumes[i];
    snprintf(path, sizeof path, "%s/%s.txt", dir != NULL ? dir : "", t->type);
    f = dir != NULL ? fopen(path, "rb") : NULL;
    if (f == NULL) {
        if (dir != NULL && errno != ENOENT) {
            snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot read '%.160s': %s",
                     path, strerror(errno));
            return -1;
        }
        t->subject = s_strdup(st, s_default_templates[i][0],
                              strlen(s_default_templates[i][0]));
        t->body = s_strdup(st, s_default_templates[i][1],
                           strlen(s_default_templates[i][1]));
        return t->subject != NULL && t->body != NULL ? 0 : s_nomem(errbuf);
    }
    text = st->api->alloc(S_TEMPLATE_MAX + 1);
    if (text == NULL) {
        fclose(f);
        return s_nomem(errbuf);
    }
    n = fread(text, 1, S_TEMPLATE_MAX + 1, f);
    fclose(f);
    text[n <= S_TEMPLATE_MAX ? n : S_TEMPLATE_MAX] = '\0';
    rc = n <= S_TEMPLATE_MAX ? s_parse_template(st, t, text, path, errbuf) : -1;
    if (n > S_TEMPLATE_MAX) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "template '%.160s' is larger than %d bytes", path,
                 S_TEMPLATE_MAX);
    }
    st->api->free(text);
    return rc;
}

/* Walk a comma/space separated list; calls fn for each item. */
static int
s_each_item(const char *list,
            int (*fn)(zd_state_t *, const char *, size_t, char *),
            zd_state_t *st, char *errbuf)
{
    const char *p = list;

    while (p != NULL && *p != '\0') {
        size_t skip = strspn(p, ", \t");
        size_t n;

        p += skip;
        n = strcspn(p, ", \t");
        if (n > 0 && fn(st, p, n, errbuf) != 0) {
            return -1;
        }
        p += n;
    }
    return 0;
}

static int
s_add_create_on(zd_state_t *st, const char *item, size_t n, char *errbuf)
{
    for (int i = 0; zd_consumes[i] != NULL; i++) {
        if (strlen(zd_consumes[i]) == n &&
            strncmp(zd_consumes[i], item, n) == 0) {
            st->create_on[i] = true;
            return 0;
        }
    }
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
             "setting 'create_on': '%.*s' is not an event type zendesk "
             "consumes",
             (int)(n < 64 ? n : 64), item);
    return -1;
}

static int
s_add_tag(zd_state_t *st, const char *item, size_t n, char *errbuf)
{
    char tag[64];

    if (n >= sizeof tag || item[strspn(item, "abcdefghijklmnopqrstuvwxyz"
                                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                             "0123456789_-/:.")] != item[n]) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'tags': '%.*s' is not a Zendesk tag (letters, "
                 "digits, _ - / : . up to 63 characters)",
                 (int)(n < 64 ? n : 64), item);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        tag[i] = (char)tolower((unsigned char)item[i]);
    }
    tag[n] = '\0';
    return json_array_append_new(st->tags, json_string(tag)) == 0
               ? 0
               : s_nomem(errbuf);
}

/* The Authorization header from exactly one of the two schemes. */
static int
s_auth(zd_state_t *st, const plugboard_settings_t *set, char *errbuf)
{
    const char *email = st->api->setting_string(set, "email");
    const char *token = st->api->setting_string(set, "api_token");
    const char *oauth = st->api->setting_string(set, "oauth_token");
    size_t n;
    char *plain;

    if ((token != NULL) == (oauth != NULL) ||
        (token != NULL && email == NULL)) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "set either 'email' and 'api_token', or 'oauth_token'");
        return -1;
    }
    if (oauth != NULL) {
        n = strlen("Authorization: Bearer ") + strlen(oauth) + 1;
        st->auth_header = st->api->alloc(n);
        if (st->auth_header == NULL) {
            return s_nomem(errbuf);
        }
        snprintf(st->auth_header, n, "Authorization: Bearer %s", oauth);
    } else {
        n = strlen(email) + strlen("/token:") + strlen(token);
        plain = st->api->alloc(n + 1);
        st->auth_header = st->api->alloc(strlen("Authorization: Basic ") +
                                         4 * (n / 3 + 1) + 1);
        if (plain == NULL || st->auth_header == NULL) {
            st->api->free(plain);
            return s_nomem(errbuf);
        }
        snprintf(plain, n + 1, "%s/token:%s", email, token);
        strcpy(st->auth_header, "Authorization: Basic ");
        plugboard_base64_encode((const uint8_t *)plain, n,
                                st->auth_header + strlen(st->auth_header));
        memset(plain, 0, n);
        st->api->free(plain);
    }
    if (st->auth_header[strcspn(st->auth_header, "\r\n")] != '\0') {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "the Zendesk token holds a line break");
        return -1;
    }
    return 0;
}

static void
s_close(void *state)
{
    zd_state_t *st = state;

    if (st == NULL) {
        return;
    }
    plugboard_http_destroy(&st->http);
    for (int i = 0; i < ZD_MAX_TYPES; i++) {
        st->api->free(st->templates[i].subject);
        st->api->free(st->templates[i].body);
    }
    json_decref(st->tags);
    st->api->free(st->base);
    if (st->auth_header != NULL) {
        memset(st->auth_header, 0, strlen(st->auth_header));
        st->api->free(st->auth_header);
    }
    st->api->free(st);
}

static int
s_base(zd_state_t *st, const char *value, char *errbuf)
{
    size_t n;

    if (strncmp(value, "https://", 8) != 0 &&
        strncmp(value, "http://", 7) != 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'api_base': expected https://<subdomain>."
                 "zendesk.com, got '%.64s'",
                 value);
        return -1;
    }
    n = strlen(value);
    while (n > 0 && value[n - 1] == '/') {
        n--;
    }
    st->base = s_strdup(st, value, n);
    return st->base != NULL ? 0 : s_nomem(errbuf);
}

static int
s_configure(zd_state_t *st, const plugboard_settings_t *set, char *errbuf)
{
    const plugboard_host_api_t *api = st->api;
    const char *dir = api->setting_string(set, "templates");
    plugboard_http_options_t opt = {
        .user_agent = "plugboard-zendesk/" S_VERSION,
        .connect_timeout_ms = api->setting_int(set, "connect_timeout"),
        .timeout_ms = api->setting_int(set, "timeout"),
    };
    static const char *const priorities[] = {"low", "normal", "high", "urgent"};
    bool known = false;

    st->signing_secret = api->setting_string(set, "signing_secret");
    st->tolerance_ms = api->setting_int(set, "tolerance");
    st->external_id = api->setting_string(set, "external_id");
    st->priority = api->setting_string(set, "priority");
    st->public_comments = api->setting_bool(set, "public_comments");
    for (size_t i = 0; i < sizeof priorities / sizeof priorities[0]; i++) {
        known = known || strcmp(st->priority, priorities[i]) == 0;
    }
    if (!known) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'priority': expected low, normal, high or urgent, "
                 "got '%.32s'",
                 st->priority);
        return -1;
    }
    if ((st->tags = json_array()) == NULL) {
        return s_nomem(errbuf);
    }
    if (s_base(st, api->setting_string(set, "api_base"), errbuf) != 0 ||
        s_auth(st, set, errbuf) != 0 ||
        s_each_item(api->setting_string(set, "create_on"), s_add_create_on, st,
                    errbuf) != 0 ||
        s_each_item(api->setting_string(set, "tags"), s_add_tag, st, errbuf) !=
            0) {
        return -1;
    }
    for (int i = 0; zd_consumes[i] != NULL; i++) {
        if (s_load_template(st, i, dir, errbuf) != 0) {
            return -1;
        }
    }
    st->http = plugboard_http_new(api, &opt);
    return st->http != NULL ? 0 : s_nomem(errbuf);
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    zd_state_t *st = api->alloc(sizeof *st);

    if (st == NULL) {
        return s_nomem(errbuf);
    }
    memset(st, 0, sizeof *st);
    st->api = api;
    st->host = host;
    if (s_configure(st, settings, errbuf) != 0) {
        s_close(st);
        return -1;
    }
    if (strncmp(st->base, "http://", 7) == 0) {
        api->log(host, PLUGBOARD_LOG_WARN,
                 "api_base is plain http: the token travels unencrypted");
    }
    *state = st;
    return 0;
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "zendesk",
    .version = S_VERSION,
    .summary = "Zendesk Support: tickets (one per external id) and "
               "comments from events; ticket webhooks",
    .settings = s_settings,
    .consumes = zd_consumes,
    .emits = s_emits,
    .flags = 0,
    .deliver_timeout_ms = 60000,
    .open = s_open,
    .close = s_close,
    .deliver = zd_deliver,
    .webhook = zd_webhook,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
