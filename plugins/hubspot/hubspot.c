/*
 * hubspot.c - the HubSpot CRM connector: descriptor, settings, open and
 * close, and the one paced, classified way every part calls the CRM v3
 * API.
 *
 * Every request goes through hs_request(), which
 *   - paces requests per token below HubSpot's ten-second limit (and the
 *     search endpoints' per-second limit), waiting up to max_wait and
 *     otherwise answering PLUGBOARD_HOLD without calling HubSpot at all;
 *   - turns a 429 into a hold: until Retry-After, else the rest of the
 *     ten-second window (HubSpot often sends no Retry-After), or, for the
 *     daily limit, until the daily reset; while held, deliveries are
 *     answered PLUGBOARD_HOLD at once.  A hold spends none of the
 *     event's attempts, so neither a burst nor a day-long limit can
 *     dead-letter an event;
 *   - classifies every other answer the plugboard way (see
 *     plugboard_http_classify) with HubSpot's own "message".
 * plugins/hubspot/README.md is the admin's view.
 */
#include "hubspot.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_VERSION "0.1.0"
#define S_TEN_SECONDS 10000
#define S_DAY_MS 86400000LL
#define S_TEMPLATE_MAX (64 * 1024)

/* ------------------------------------------------------------------ */
/* Descriptor                                                          */
/* ------------------------------------------------------------------ */

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "token",
        .type = PLUGBOARD_SETTING_STRING,
        .required = true,
        .secret = true,
        .help = "private app access token (pat-...) with the crm.objects."
                "contacts and crm.objects.deals read/write scopes",
    },
    {
        .name = "api_base",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "https://api.hubapi.com",
        .help = "base URL of the HubSpot API (tests point it at a "
                "stand-in)",
    },
    {
        .name = "timeout",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "10s",
        .min = 100,
        .max = 60000,
        .help = "how long one API request may take (100ms..60s); "
                "longer is a transient failure",
    },
    {
        .name = "connect_timeout",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "5s",
        .min = 100,
        .max = 60000,
        .help = "how long connecting to the API may take (100ms..60s)",
    },
    {
        .name = "requests_per_10s",
        .type = PLUGBOARD_SETTING_INT,
        .default_value = "100",
        .min = 0,
        .max = 1000,
        .help = "pace requests per token below this many per ten seconds "
                "(HubSpot: 100 for free/starter, 190 for professional/"
                "enterprise apps); 0 = unpaced",
    },
    {
        .name = "searches_per_second",
        .type = PLUGBOARD_SETTING_INT,
        .default_value = "4",
        .min = 0,
        .max = 100,
        .help = "pace CRM search requests below this many per second "
                "(HubSpot allows 5 per token); 0 = unpaced",
    },
    {
        .name = "max_wait",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "1s",
        .min = 0,
        .max = 10000,
        .help = "how long a delivery may wait for a pacing or rate-limit "
                "slot before it is answered 'retry later' (0..10s)",
    },
    {
        .name = "daily_reset_utc_offset",
        .type = PLUGBOARD_SETTING_INT,
        .default_value = "0",
        .min = -720,
        .max = 840,
        .help = "the HubSpot account's time zone as minutes from UTC: the "
                "daily limit resets at its midnight",
    },
    {
        .name = "create_contacts",
        .type = PLUGBOARD_SETTING_BOOL,
        .default_value = "true",
        .help = "create the contact when a payment, ticket or bounce event "
                "names an e-mail HubSpot does not know (else dead-letter)",
    },
    {
        .name = "event_property",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "contact property (single-line text, created in HubSpot "
                "first) set to the event type with every timeline note",
    },
    {
        .name = "note_templates",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "directory of <event.type>.txt note templates replacing "
                "the built-in ones",
    },
    {
        .name = "client_secret",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "the app's client secret: verifies webhook signatures "
                "(X-HubSpot-Signature-v3); webhooks are refused without it",
    },
    {
        .name = "public_url",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "the webhook URL exactly as configured in the HubSpot app "
                "(https://hooks.example.com/hooks/crm); HubSpot signs it, "
                "and behind a proxy the host cannot know it",
    },
    {
        .name = "tolerance",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "5m",
        .min = 1000,
        .max = 3600000,
        .help = "how far a webhook's X-HubSpot-Request-Timestamp may be "
                "from now (HubSpot: 5 minutes)",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {
    PLUGBOARD_EV_CONTACT_UPSERTED,  PLUGBOARD_EV_DEAL_STAGE_CHANGED,
    PLUGBOARD_EV_PAYMENT_SUCCEEDED, PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_PAYMENT_REFUNDED,  PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    PLUGBOARD_EV_DISPUTE_OPENED,    PLUGBOARD_EV_TICKET_CREATED,
    PLUGBOARD_EV_TICKET_UPDATED,    PLUGBOARD_EV_TICKET_SOLVED,
    PLUGBOARD_EV_EMAIL_BOUNCED,     NULL,
};

static const char *const s_emits[] = {
    PLUGBOARD_EV_CONTACT_UPSERTED,
    PLUGBOARD_EV_DEAL_STAGE_CHANGED,
    NULL,
};

const char *const hs_note_types[HS_NOTE_COUNT] = {
    [HS_NOTE_PAYMENT_SUCCEEDED] = PLUGBOARD_EV_PAYMENT_SUCCEEDED,
    [HS_NOTE_PAYMENT_FAILED] = PLUGBOARD_EV_PAYMENT_FAILED,
    [HS_NOTE_PAYMENT_REFUNDED] = PLUGBOARD_EV_PAYMENT_REFUNDED,
    [HS_NOTE_SUBSCRIPTION_CANCELED] = PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    [HS_NOTE_DISPUTE_OPENED] = PLUGBOARD_EV_DISPUTE_OPENED,
    [HS_NOTE_TICKET_CREATED] = PLUGBOARD_EV_TICKET_CREATED,
    [HS_NOTE_TICKET_UPDATED] = PLUGBOARD_EV_TICKET_UPDATED,
    [HS_NOTE_TICKET_SOLVED] = PLUGBOARD_EV_TICKET_SOLVED,
    [HS_NOTE_EMAIL_BOUNCED] = PLUGBOARD_EV_EMAIL_BOUNCED,
};

/* Built-in note templates: plain text, values HTML-escaped, line breaks
 * kept. */
static const char *const s_default_notes[HS_NOTE_COUNT] = {
    [HS_NOTE_PAYMENT_SUCCEEDED] =
        "Payment received: {{amount|money}}\n"
        "For: {{payment.description|default:(no description)}}\n"
        "Payment: {{payment.id}} ({{payment.vendor}})",
    [HS_NOTE_PAYMENT_FAILED] =
        "Payment FAILED: {{amount|money}}\n"
        "Reason: {{failure.message|default:none given}} "
        "({{failure.code|default:no code}})\n"
        "Invoice: {{invoice.url|default:none}}\n"
        "Next automatic attempt: "
        "{{invoice.next_payment_attempt|date|default:none}}\n"
        "Payment: {{payment.id}} ({{payment.vendor}})",
    [HS_NOTE_PAYMENT_REFUNDED] =
        "Refund: {{refund.amount|money}} of a payment of {{amount|money}}\n"
        "Payment: {{payment.id}} ({{payment.vendor}})",
    [HS_NOTE_SUBSCRIPTION_CANCELED] =
        "Subscription canceled: {{subscription.id}} "
        "({{subscription.status}})\n"
        "Reason: {{subscription.cancellation_reason|default:none given}}\n"
        "Plan: {{plan.id|default:unknown}} "
        "{{plan.amount|money}} per {{plan.interval|default:period}}",
    [HS_NOTE_DISPUTE_OPENED] =
        "Payment DISPUTED: {{amount|money}}\n"
        "Reason: {{dispute.reason|default:none given}}\n"
        "Evidence due: {{dispute.evidence_due_at|date|default:unknown}}\n"
        "Dispute: {{dispute.id}}",
    [HS_NOTE_TICKET_CREATED] =
        "Support ticket opened: {{ticket.subject|default:(no subject)}}\n"
        "Priority: {{ticket.priority|default:normal}}, status: "
        "{{ticket.status|default:new}}\n"
        "Ticket: {{ticket.url|default:}} ({{ticket.vendor}} "
        "{{ticket.id}})",
    [HS_NOTE_TICKET_UPDATED] =
        "Support ticket updated: {{ticket.subject|default:(no subject)}}\n"
        "Status: {{ticket.status|default:unknown}}\n"
        "{{ticket.comment}}\n"
        "Ticket: {{ticket.url|default:}} ({{ticket.vendor}} "
        "{{ticket.id}})",
    [HS_NOTE_TICKET_SOLVED] =
        "Support ticket solved: {{ticket.subject|default:(no subject)}}\n"
        "Solved: {{ticket.solved_at|date|default:now}}\n"
        "Ticket: {{ticket.url|default:}} ({{ticket.vendor}} "
        "{{ticket.id}})",
    [HS_NOTE_EMAIL_BOUNCED] = "E-mail bounced ({{bounce.type}}): "
                              "{{bounce.reason|default:no reason given}} "
                              "{{bounce.code|default:}}\n"
                              "Subject: {{email.subject|default:unknown}}\n"
                              "Sent by: {{email.vendor}}",
};

int
hs_note_index(const char *type)
{
    for (int i = 0; i < HS_NOTE_COUNT; i++) {
        if (strcmp(type, hs_note_types[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

json_t *
hs_event_string(hs_state_t *st, const plugboard_event_t *ev, const char *path)
{
    const char *s = NULL;
    size_t len = 0;

    if (!st->api->event_string(ev, path, &s, &len) || len == 0) {
        return NULL;
    }
    return json_stringn(s, len);
}

const char *
hs_email(const char *text, size_t len, char *buf, size_t size)
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
        if (ch == '@') {
            at++;
        }
        buf[n++] = (char)tolower(ch);
    }
    buf[n] = '\0';
    return at == 1 && buf[0] != '@' && buf[n - 1] != '@' ? buf : NULL;
}

bool
hs_is_id(const char *text)
{
    size_t n = text != NULL ? strspn(text, "0123456789") : 0;

    return n > 0 && n < HS_ID_MAX && text[n] == '\0';
}

static void
s_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* Pacing and rate limits                                              */
/* ------------------------------------------------------------------ */

/*
 * HubSpot counts requests per token, so the pacers and the hold after a
 * 429 belong to the token, not to one state: every state of this loaded
 * plugin with the same token (the workers of one connector when its
 * concurrency is above 1) shares one hs_limits_t, found by token in a
 * list under s_limits_lock and freed with its last state.  The pacers are
 * sized by the first state to open.  Connectors are loaded from private
 * copies of the plugin, so two connectors never share one.
 */
typedef struct hs_limits {
    struct hs_limits *next;
    char *auth_header; /* the key: "Authorization: Bearer <token>" */
    int refs;
    pthread_mutex_t lock; /* guards everything below */
    hs_pacer_t pace;      /* all requests, per ten seconds */
    hs_pacer_t search_pace; /* search requests, per second */
    int64_t blocked_until;  /* monotonic ms: HubSpot said 429 */
    bool blocked_daily;
} hs_limits_t;

static pthread_mutex_t s_limits_lock = PTHREAD_MUTEX_INITIALIZER;
static hs_limits_t *s_limits;

static int
s_pacer_init(hs_state_t *st, hs_pacer_t *p, int64_t per_window,
             int64_t window_ms)
{
    memset(p, 0, sizeof *p);
    p->window_ms = window_ms;
    if (per_window <= 0) {
        return 0;
    }
    p->sent = st->api->alloc((size_t)per_window * sizeof *p->sent);
    if (p->sent == NULL) {
        return -1;
    }
    p->cap = (size_t)per_window;
    return 0;
}

/* How long until the pacer allows one more request (0 = now). */
static int64_t
s_pacer_wait(const hs_pacer_t *p, int64_t now)
{
    if (p->cap == 0 || p->count < p->cap) {
        return 0;
    }
    return p->sent[p->head] + p->window_ms > now
               ? p->sent[p->head] + p->window_ms - now
               : 0;
}

static void
s_pacer_note(hs_pacer_t *p, int64_t now)
{
    if (p->cap == 0) {
        return;
    }
    if (p->count < p->cap) {
        p->sent[(p->head + p->count) % p->cap] = now;
        p->count++;
        return;
    }
    p->sent[p->head] = now;
    p->head = (p->head + 1) % p->cap;
}

static void
s_limits_free(hs_state_t *st, hs_limits_t *l)
{
    pthread_mutex_destroy(&l->lock);
    st->api->free(l->pace.sent);
    st->api->free(l->search_pace.sent);
    if (l->auth_header != NULL) {
        memset(l->auth_header, 0, strlen(l->auth_header));
        st->api->free(l->auth_header);
    }
    st->api->free(l);
}

/* Attach st to its token's limits, creating them; -1 when out of memory. */
static int
s_limits_attach(hs_state_t *st, int64_t per_10s, int64_t per_second)
{
    hs_limits_t *l;

    pthread_mutex_lock(&s_limits_lock);
    for (l = s_limits; l != NULL; l = l->next) {
        if (strcmp(l->auth_header, st->auth_header) == 0) {
            l->refs++;
            st->limits = l;
            pthread_mutex_unlock(&s_limits_lock);
            return 0;
        }
    }
    l = st->api->alloc(sizeof *l);
    if (l != NULL) {
        memset(l, 0, sizeof *l);
        pthread_mutex_init(&l->lock, NULL);
        l->auth_header = st->api->alloc(strlen(st->auth_header) + 1);
    }
    if (l == NULL || l->auth_header == NULL ||
        s_pacer_init(st, &l->pace, per_10s, S_TEN_SECONDS) != 0 ||
        s_pacer_init(st, &l->search_pace, per_second, 1000) != 0) {
        if (l != NULL) {
            s_limits_free(st, l);
        }
        pthread_mutex_unlock(&s_limits_lock);
        return -1;
    }
    strcpy(l->auth_header, st->auth_header);
    l->refs = 1;
    l->next = s_limits;
    s_limits = l;
    st->limits = l;
    pthread_mutex_unlock(&s_limits_lock);
    return 0;
}

static void
s_limits_detach(hs_state_t *st)
{
    hs_limits_t **pp;

    if (st->limits == NULL) {
        return;
    }
    pthread_mutex_lock(&s_limits_lock);
    if (--st->limits->refs == 0) {
        for (pp = &s_limits; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == st->limits) {
                *pp = st->limits->next;
                break;
            }
        }
        s_limits_free(st, st->limits);
    }
    st->limits = NULL;
    pthread_mutex_unlock(&s_limits_lock);
}

/*
 * Wait for a slot: the hold after a 429, then the pacers.  Waits up to
 * max_wait; beyond that fills res with RETRY after the remaining time and
 * returns false.
 */
static bool
s_pace(hs_state_t *st, bool search, plugboard_result_t *res)
{
    hs_limits_t *l = st->limits;

    for (;;) {
        int64_t now = st->api->monotonic_ms();
        int64_t wait = 0;
        const char *why = NULL;

        pthread_mutex_lock(&l->lock);
        if (l->blocked_until > now) {
            wait = l->blocked_until - now;
            why = l->blocked_daily ? "HubSpot's daily request limit"
                                   : "HubSpot's rate limit";
        } else if (s_pacer_wait(&l->pace, now) > 0) {
            wait = s_pacer_wait(&l->pace, now);
            why = "pacing below requests_per_10s";
        } else if (search && s_pacer_wait(&l->search_pace, now) > 0) {
            wait = s_pacer_wait(&l->search_pace, now);
            why = "pacing below searches_per_second";
        }
        if (wait == 0) {
            s_pacer_note(&l->pace, now);
            if (search) {
                s_pacer_note(&l->search_pace, now);
            }
        }
        pthread_mutex_unlock(&l->lock);
        if (wait == 0) {
            return true;
        }
        if (wait > st->max_wait_ms) {
            st->api->count(st->host, "rate_limit_hold", 1);
            plugboard_result_set(res, PLUGBOARD_HOLD, wait,
                                 "held by %s for %lld ms", why,
                                 (long long)wait);
            return false;
        }
        s_sleep_ms(wait);
    }
}

/* Milliseconds from now (wall clock) to the next daily reset. */
static int64_t
s_until_daily_reset(const hs_state_t *st)
{
    int64_t offset = (int64_t)st->daily_reset_offset_min * 60000;
    int64_t local = st->api->now_ms() + offset;
    int64_t next = (local / S_DAY_MS + 1) * S_DAY_MS;

    return next - local;
}

/* A 429: hold every request until HubSpot will take one again. */
static void
s_rate_limited(hs_state_t *st, plugboard_http_reply_t *r, json_t *json,
               const char *what, plugboard_result_t *res)
{
    const char *policy = json_string_value(json_object_get(json, "policyName"));
    const char *interval = plugboard_http_header(
        st->http, "X-HubSpot-RateLimit-Interval-Milliseconds");
    bool daily = policy != NULL && strcmp(policy, "DAILY") == 0;
    int64_t wait;

    if (daily) {
        wait = s_until_daily_reset(st);
    } else if (r->retry_after_ms >= 0) {
        wait = r->retry_after_ms;
    } else if (policy != NULL && strcmp(policy, "SECONDLY") == 0) {
        wait = 1000;
    } else if (interval != NULL && atol(interval) > 0 &&
               atol(interval) <= 60000) {
        wait = atol(interval);
    } else {
        wait = S_TEN_SECONDS;
    }
    if (wait < 1) {
        wait = 1;
    }
    pthread_mutex_lock(&st->limits->lock);
    if (st->api->monotonic_ms() + wait > st->limits->blocked_until) {
        st->limits->blocked_until = st->api->monotonic_ms() + wait;
        st->limits->blocked_daily = daily;
    }
    pthread_mutex_unlock(&st->limits->lock);
    st->api->count(st->host, daily ? "rate_limited_daily" : "rate_limited",
                   1);
    st->api->log(st->host, PLUGBOARD_LOG_WARN,
                 "rate limited by HubSpot policy=%s; holding requests for "
                 "%lld ms",
                 policy != NULL ? policy : "(none)", (long long)wait);
    plugboard_result_set(res, PLUGBOARD_HOLD, wait,
                         "%s: rate limited by HubSpot (%s): retry in "
                         "%lld ms",
                         what, policy != NULL ? policy : "HTTP 429",
                         (long long)wait);
}

/* ------------------------------------------------------------------ */
/* The API call                                                        */
/* ------------------------------------------------------------------ */

static plugboard_outcome_t
s_send(hs_state_t *st, hs_call_t *call, const char *url, const char *body,
       plugboard_result_t *res)
{
    const char *headers[] = {
        st->auth_header,
        "Content-Type: application/json",
        "Accept: application/json",
        NULL,
    };
    plugboard_http_reply_t r;
    json_error_t jerr;
    const char *message;

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
                                 "%s: malformed JSON from HubSpot "
                                 "(HTTP %ld)",
                                 call->what, r.status);
            return PLUGBOARD_RETRY;
        }
        return PLUGBOARD_OK;
    }
    if (r.status == 429) {
        s_rate_limited(st, &r, call->json, call->what, res);
        return PLUGBOARD_HOLD;
    }
    message = json_string_value(json_object_get(call->json, "message"));
    plugboard_http_report_auth(st->api, st->host, &r, "HubSpot");
    return plugboard_http_classify(&r, call->what, message, 0, res);
}

plugboard_outcome_t
hs_request(hs_state_t *st, hs_call_t *call, plugboard_result_t *res)
{
    size_t url_len = strlen(st->base) + strlen(call->path) + 1;
    char *url;
    char *body = NULL;
    plugboard_outcome_t out;

    call->status = 0;
    call->json = NULL;
    if (!s_pace(st, call->search, res)) {
        return PLUGBOARD_HOLD;
    }
    url = st->api->alloc(url_len);
    if (call->body != NULL) {
        body = json_dumps(call->body, JSON_COMPACT);
    }
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
s_strdup(hs_state_t *st, const char *s)
{
    size_t n = strlen(s);
    char *out = st->api->alloc(n + 1);

    if (out != NULL) {
        memcpy(out, s, n + 1);
    }
    return out;
}

/* The http(s) URL in value, without trailing '/', or NULL with errbuf. */
static char *
s_base_url(hs_state_t *st, const char *name, const char *value, char *errbuf)
{
    char *out;
    size_t n;

    if (strncmp(value, "https://", 8) != 0 &&
        strncmp(value, "http://", 7) != 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting '%s': expected an http(s) URL, got '%.64s'", name,
                 value);
        return NULL;
    }
    out = s_strdup(st, value);
    if (out == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return NULL;
    }
    n = strlen(out);
    while (n > 0 && out[n - 1] == '/') {
        out[--n] = '\0';
    }
    return out;
}

/* Read one template file into *out; a missing file leaves *out NULL. */
static int
s_read_template(hs_state_t *st, const char *dir, const char *type, char **out,
                char *errbuf)
{
    char path[4096];
    FILE *f;
    size_t n;

    *out = NULL;
    snprintf(path, sizeof path, "%s/%s.txt", dir, type);
    f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot read '%.160s': %s", path,
                 strerror(errno));
        return -1;
    }
    *out = st->api->alloc(S_TEMPLATE_MAX + 1);
    if (*out == NULL) {
        fclose(f);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    n = fread(*out, 1, S_TEMPLATE_MAX + 1, f);
    fclose(f);
    if (n > S_TEMPLATE_MAX) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "template '%.160s' is larger than %d bytes", path,
                 S_TEMPLATE_MAX);
        return -1;
    }
    (*out)[n] = '\0';
    return 0;
}

static int
s_load_templates(hs_state_t *st, const char *dir, char *errbuf)
{
    for (int i = 0; i < HS_NOTE_COUNT; i++) {
        if (dir != NULL && s_read_template(st, dir, hs_note_types[i],
                                           &st->notes[i], errbuf) != 0) {
            return -1;
        }
        if (st->notes[i] == NULL) {
            st->notes[i] = s_strdup(st, s_default_notes[i]);
            if (st->notes[i] == NULL) {
                snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
                return -1;
            }
        }
    }
    return 0;
}

static void
s_close(void *state)
{
    hs_state_t *st = state;

    if (st == NULL) {
        return;
    }
    plugboard_http_destroy(&st->http);
    for (int i = 0; i < HS_NOTE_COUNT; i++) {
        st->api->free(st->notes[i]);
    }
    s_limits_detach(st);
    st->api->free(st->base);
    if (st->auth_header != NULL) {
        memset(st->auth_header, 0, strlen(st->auth_header));
        st->api->free(st->auth_header);
    }
    st->api->free(st);
}

/* Check the token and build the Authorization header. */
static int
s_auth(hs_state_t *st, const char *token, char *errbuf)
{
    size_t n;

    if (token == NULL || token[0] == '\0' ||
        token[strcspn(token, "\r\n \t")] != '\0') {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'token' is empty or holds spaces or line breaks: "
                 "expected a private app token (pat-...)");
        return -1;
    }
    n = strlen("Authorization: Bearer ") + strlen(token) + 1;
    st->auth_header = st->api->alloc(n);
    if (st->auth_header == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    snprintf(st->auth_header, n, "Authorization: Bearer %s", token);
    return 0;
}

/* public_url: an http(s) URL without query or fragment. */
static int
s_check_public_url(const char *url, char *errbuf)
{
    if (url == NULL) {
        return 0;
    }
    if ((strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) ||
        strpbrk(url, "?#") != NULL || url[strcspn(url, " \t\r\n")]) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'public_url': expected the webhook's http(s) URL "
                 "without query or fragment, got '%.64s'",
                 url);
        return -1;
    }
    return 0;
}

static int
s_configure(hs_state_t *st, const plugboard_settings_t *set, char *errbuf)
{
    const plugboard_host_api_t *api = st->api;
    plugboard_http_options_t opt = {
        .user_agent = "plugboard-hubspot/" S_VERSION,
        .connect_timeout_ms = api->setting_int(set, "connect_timeout"),
        .timeout_ms = api->setting_int(set, "timeout"),
    };

    st->client_secret = api->setting_string(set, "client_secret");
    st->public_url = api->setting_string(set, "public_url");
    st->tolerance_ms = api->setting_int(set, "tolerance");
    st->max_wait_ms = api->setting_int(set, "max_wait");
    st->daily_reset_offset_min =
        (int)api->setting_int(set, "daily_reset_utc_offset");
    st->create_contacts = api->setting_bool(set, "create_contacts");
    st->event_property = api->setting_string(set, "event_property");
    if (s_auth(st, api->setting_string(set, "token"), errbuf) != 0 ||
        s_check_public_url(st->public_url, errbuf) != 0) {
        return -1;
    }
    if (st->client_secret != NULL && st->public_url == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting 'client_secret' needs 'public_url': HubSpot signs "
                 "the URL it calls");
        return -1;
    }
    st->base = s_base_url(st, "api_base", api->setting_string(set, "api_base"),
                          errbuf);
    if (st->base == NULL ||
        s_load_templates(st, api->setting_string(set, "note_templates"),
                         errbuf) != 0) {
        return -1;
    }
    if (s_limits_attach(st, api->setting_int(set, "requests_per_10s"),
                        api->setting_int(set, "searches_per_second")) != 0 ||
        (st->http = plugboard_http_new(api, &opt)) == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    return 0;
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    hs_state_t *st = api->alloc(sizeof *st);

    if (st == NULL) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
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
    .name = "hubspot",
    .version = S_VERSION,
    .summary = "HubSpot CRM: contacts, timeline notes and deal stages "
               "(CRM v3 API); contact and deal-stage webhooks",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = s_emits,
    .flags = 0,
    .deliver_timeout_ms = 60000,
    .open = s_open,
    .close = s_close,
    .deliver = hs_deliver,
    .webhook = hs_webhook,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
