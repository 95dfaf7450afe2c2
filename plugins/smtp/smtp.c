/*
 * smtp.c - the "smtp" connector: its descriptor, settings, and the state of
 * one instance (see smtp.h for how the parts divide the work).
 *
 * open() checks every setting before anything runs, so a mistake is an
 * error naming the setting rather than a surprise at the first delivery:
 * the URL's scheme must agree with `tls`, plaintext is allowed only to a
 * loopback server, addresses must parse, templates must load, and a
 * webhook provider needs its key.  The state owns the parsed addresses,
 * the templates, the libcurl handle (kept so the connection is reused),
 * the SendGrid public key and Mailgun's replay cache; secret values stay
 * borrowed from the settings, which live until close.
 */
#include "smtp.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define S_PLUGIN_VERSION "1.0.0"

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "url",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "SMTP server: smtp://host:587 (STARTTLS) or smtps://host:465 "
                "(implicit TLS); unset for an instance that only takes "
                "webhooks",
    },
    {
        .name = "tls",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "starttls | implicit | none (default: starttls for smtp://, "
                "implicit for smtps://); none is refused unless the server "
                "is on loopback",
    },
    {
        .name = "username",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "SMTP AUTH user name; AUTH happens only over TLS (or to a "
                "loopback server)",
    },
    {
        .name = "password",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "SMTP AUTH password or API key",
    },
    {
        .name = "ca_file",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "PEM file of CA certificates to verify the server with "
                "(default: the system's)",
    },
    {
        .name = "helo",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "the name given in EHLO (default: this machine's host name)",
    },
    {
        .name = "connect_timeout",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "10s",
        .min = 100,
        .max = 300000,
        .help = "how long to wait for the connection, TLS included",
    },
    {
        .name = "timeout",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "60s",
        .min = 100,
        .max = 110000,
        .help = "how long one whole delivery may take (connect to the "
                "server's final reply); past it the delivery is retried",
    },
    {
        .name = "from",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "sender, e.g. \"Billing <billing@example.com>\" (required "
                "with url)",
    },
    {
        .name = "reply_to",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "Reply-To, e.g. \"Support <support@example.com>\"",
    },
    {
        .name = "to",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "fixed recipient for every message, overriding to_field "
                "(and the owner of dead-letter notices)",
    },
    {
        .name = "to_field",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "customer.email",
        .help = "event field holding the recipient's address (the only "
                "place recipients come from)",
    },
    {
        .name = "to_name_field",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "event field with the recipient's name for the To header "
                "(default: 'name' beside to_field, customer.name for "
                "customer.email; \"\" for none)",
    },
    {
        .name = "bcc",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "comma-separated addresses that get a blind copy of every "
                "message (an archive); a refused one does not stop delivery",
    },
    {
        .name = "envelope_from",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "MAIL FROM address, where bounces go (default: from's "
                "address)",
    },
    {
        .name = "message_id_domain",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "right side of Message-ID (default: from's domain)",
    },
    {
        .name = "templates",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "directory of <event.type>.txt templates (and optional "
                "<event.type>.html), read at open (required with url)",
    },
    {
        .name = "webhook_provider",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "none",
        .help = "sendgrid | mailgun | none: whose event webhooks "
                "/hooks/<name> accepts",
    },
    {
        .name = "sendgrid_public_key",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "SendGrid's signed-webhook verification key (base64, as "
                "shown in Mail Settings)",
    },
    {
        .name = "mailgun_signing_key",
        .type = PLUGBOARD_SETTING_STRING,
        .secret = true,
        .help = "Mailgun's HTTP webhook signing key",
    },
    {
        .name = "webhook_tolerance",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "5m",
        .min = 1000,
        .max = 3600000,
        .help = "how old a webhook's signed timestamp may be (1s..1h)",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {
    PLUGBOARD_EV_PAYMENT_SUCCEEDED,
    PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_PAYMENT_REFUNDED,
    PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    PLUGBOARD_EV_DISPUTE_OPENED,
    PLUGBOARD_EV_CONTACT_UPSERTED,
    PLUGBOARD_EV_TICKET_CREATED,
    PLUGBOARD_EV_TICKET_UPDATED,
    PLUGBOARD_EV_TICKET_SOLVED,
    PLUGBOARD_EV_EMAIL_BOUNCED,
    PLUGBOARD_EV_DELIVERY_DEAD,
    PLUGBOARD_EV_CONNECTOR_UNHEALTHY,
    NULL,
};

static const char *const s_emits[] = {
    PLUGBOARD_EV_EMAIL_DELIVERED,
    PLUGBOARD_EV_EMAIL_BOUNCED,
    PLUGBOARD_EV_EMAIL_COMPLAINED,
    NULL,
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static char *
s_strdup(const plugboard_host_api_t *api, const char *s)
{
    size_t n = strlen(s);
    char *d = api->alloc(n + 1);
    if (d)
        memcpy(d, s, n + 1);
    return d;
}

static int s_fail(char *errbuf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
s_fail(char *errbuf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, PLUGBOARD_ERRBUF_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

/* A string setting, NULL when unset or empty. */
static const char *
s_setting(const smtp_t *s, const plugboard_settings_t *set, const char *name)
{
    const char *v = s->api->setting_string(set, name);
    return v && *v ? v : NULL;
}

/* ------------------------------------------------------------------ */
/* The server: URL, TLS, credentials                                   */
/* ------------------------------------------------------------------ */

/* 127.0.0.0/8, ::1, localhost: where plaintext never leaves the host. */
static bool
s_is_loopback(const char *host)
{
    char buf[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        if (n - 2 >= sizeof buf)
            return false;
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return strcasecmp(host, "localhost") == 0;
}

static int
s_parse_tls(const char *text, const char *scheme, smtp_tls_t *tls, char *errbuf)
{
    bool smtps = strcmp(scheme, "smtps") == 0;
    if (!text)
        *tls = smtps ? SMTP_TLS_IMPLICIT : SMTP_TLS_STARTTLS;
    else if (strcmp(text, "starttls") == 0)
        *tls = SMTP_TLS_STARTTLS;
    else if (strcmp(text, "implicit") == 0)
        *tls = SMTP_TLS_IMPLICIT;
    else if (strcmp(text, "none") == 0)
        *tls = SMTP_TLS_NONE;
    else
        return s_fail(errbuf,
                      "setting 'tls' is '%s': expected starttls, "
                      "implicit or none",
                      text);
    if (smtps && *tls != SMTP_TLS_IMPLICIT)
        return s_fail(errbuf,
                      "setting 'tls' is '%s' but 'url' is smtps:// "
                      "(implicit TLS): use smtp:// for starttls or "
                      "none",
                      text);
    if (!smtps && *tls == SMTP_TLS_IMPLICIT)
        return s_fail(errbuf, "setting 'tls' is 'implicit' but 'url' is "
                              "smtp://: write smtps://host:465");
    return 0;
}

/* The URL parts we check, each curl_free'd by s_url_release. */
typedef struct s_url {
    CURLU *u;
    char *scheme, *host, *port, *user, *password, *path, *query, *fragment;
} s_url_t;

static void
s_url_release(s_url_t *p)
{
    curl_free(p->scheme);
    curl_free(p->host);
    curl_free(p->port);
    curl_free(p->user);
    curl_free(p->password);
    curl_free(p->path);
    curl_free(p->query);
    curl_free(p->fragment);
    curl_url_cleanup(p->u);
}

static int
s_url_parse(const char *url, s_url_t *p, char *errbuf)
{
    memset(p, 0, sizeof *p);
    p->u = curl_url();
    if (!p->u)
        return s_fail(errbuf, "out of memory");
    if (curl_url_set(p->u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(p->u, CURLUPART_SCHEME, &p->scheme, 0) != CURLUE_OK ||
        curl_url_get(p->u, CURLUPART_HOST, &p->host, 0) != CURLUE_OK ||
        curl_url_get(p->u, CURLUPART_PORT, &p->port, CURLU_DEFAULT_PORT) !=
            CURLUE_OK)
        return s_fail(errbuf, "setting 'url' is not a URL like "
                              "smtp://mail.example.com:587");
    curl_url_get(p->u, CURLUPART_USER, &p->user, 0);
    curl_url_get(p->u, CURLUPART_PASSWORD, &p->password, 0);
    curl_url_get(p->u, CURLUPART_PATH, &p->path, 0);
    curl_url_get(p->u, CURLUPART_QUERY, &p->query, 0);
    curl_url_get(p->u, CURLUPART_FRAGMENT, &p->fragment, 0);
    if (strcmp(p->scheme, "smtp") != 0 && strcmp(p->scheme, "smtps") != 0)
        return s_fail(errbuf,
                      "setting 'url' has scheme '%s': expected "
                      "smtp:// or smtps://",
                      p->scheme);
    if (p->user || p->password)
        return s_fail(errbuf, "setting 'url' holds credentials: put them in "
                              "'username' and 'password' (a secret)");
    if ((p->path && strcmp(p->path, "/") != 0) || p->query || p->fragment)
        return s_fail(errbuf, "setting 'url' has a path or query: give only "
                              "smtp[s]://host:port (the EHLO name is the "
                              "'helo' setting)");
    return 0;
}

/* url, tls, helo, credentials, CA and timeouts into s. */
static int
s_open_server(smtp_t *s, const plugboard_settings_t *set, const char *url,
              char *errbuf)
{
    const plugboard_host_api_t *api = s->api;
    s_url_t p;
    int rc = s_url_parse(url, &p, errbuf);
    if (rc == 0)
        rc = s_parse_tls(s_setting(s, set, "tls"), p.scheme, &s->tls, errbuf);
    if (rc == 0 && s->tls == SMTP_TLS_NONE && !s_is_loopback(p.host))
        rc = s_fail(errbuf,
                    "setting 'tls' is 'none' but '%s' is not a loopback "
                    "address: mail (and any password) would cross the "
                    "network in plaintext; use starttls or implicit",
                    p.host);
    const char *helo = s_setting(s, set, "helo");
    if (rc == 0 && helo &&
        curl_url_set(p.u, CURLUPART_PATH, helo, CURLU_URLENCODE) != CURLUE_OK)
        rc = s_fail(errbuf, "setting 'helo' is not a usable name");
    char *full = NULL;
    if (rc == 0 && curl_url_get(p.u, CURLUPART_URL, &full, 0) != CURLUE_OK)
        rc = s_fail(errbuf, "setting 'url' cannot be used");
    if (rc == 0) {
        char server[300];
        snprintf(server, sizeof server, "%s:%s", p.host, p.port);
        s->url = s_strdup(api, full);
        s->server = s_strdup(api, server);
        if (!s->url || !s->server)
            rc = s_fail(errbuf, "out of memory");
    }
    curl_free(full);
    s_url_release(&p);
    if (rc != 0)
        return rc;

    s->username = s_setting(s, set, "username");
    s->password = api->setting_string(set, "password");
    if (s->password && !s->username)
        return s_fail(errbuf, "setting 'password' is set without 'username'");
    s->ca_file = s_setting(s, set, "ca_file");
    s->connect_timeout_ms = api->setting_int(set, "connect_timeout");
    s->timeout_ms = api->setting_int(set, "timeout");
    return 0;
}

/* ------------------------------------------------------------------ */
/* The message: addresses, recipients, templates                       */
/* ------------------------------------------------------------------ */

static int
s_open_mailbox(smtp_t *s, const plugboard_settings_t *set, const char *name,
               size_t col, plugboard_mailbox_t *mb, char *errbuf)
{
    const char *text = s_setting(s, set, name);
    if (!text)
        return 0;
    int rc = plugboard_mailbox_parse(s->api, text, col, mb);
    if (rc == PLUGBOARD_E_NOMEM)
        return s_fail(errbuf, "out of memory");
    if (rc != 0)
        return s_fail(errbuf,
                      "setting '%s' is not an address like \"Name "
                      "<user@example.com>\"",
                      name);
    return 0;
}

/* A setting that must be one bare address (copied), or NULL when unset. */
static int
s_open_address(smtp_t *s, const plugboard_settings_t *set, const char *name,
               char **out, char *errbuf)
{
    const char *text = s_setting(s, set, name);
    if (!text)
        return 0;
    if (!plugboard_mail_address_ok(text, strlen(text)))
        return s_fail(errbuf,
                      "setting '%s' is not a bare address like "
                      "bounces@example.com",
                      name);
    *out = s_strdup(s->api, text);
    return *out ? 0 : s_fail(errbuf, "out of memory");
}

/* bcc: addresses separated by commas, semicolons or spaces. */
static int
s_open_bcc(smtp_t *s, const plugboard_settings_t *set, char *errbuf)
{
    const char *text = s_setting(s, set, "bcc");
    if (!text)
        return 0;
    s->bcc = s->api->alloc(SMTP_BCC_MAX * sizeof *s->bcc);
    if (!s->bcc)
        return s_fail(errbuf, "out of memory");
    const char *p = text;
    while (*p) {
        p += strspn(p, ", ;\t");
        size_t n = strcspn(p, ", ;\t");
        if (n == 0)
            break;
        if (!plugboard_mail_address_ok(p, n))
            return s_fail(errbuf,
                          "setting 'bcc' holds '%.*s', which is not "
                          "a bare address",
                          (int)(n > 80 ? 80 : n), p);
        if (s->bcc_count == SMTP_BCC_MAX)
            return s_fail(errbuf,
                          "setting 'bcc' holds more than %d "
                          "addresses",
                          SMTP_BCC_MAX);
        char *a = s->api->alloc(n + 1);
        if (!a)
            return s_fail(errbuf, "out of memory");
        memcpy(a, p, n);
        a[n] = '\0';
        s->bcc[s->bcc_count++] = a;
        p += n;
    }
    return 0;
}

/* to_field, and to_name_field (by default 'name' beside to_field). */
static int
s_open_fields(smtp_t *s, const plugboard_settings_t *set, char *errbuf)
{
    const plugboard_host_api_t *api = s->api;
    const char *field = s_setting(s, set, "to_field");
    s->to_field = s_strdup(api, field ? field : "customer.email");
    if (!s->to_field)
        return s_fail(errbuf, "out of memory");
    if (api->setting_is_set(set, "to_name_field")) {
        const char *name = s_setting(s, set, "to_name_field");
        if (name && !(s->to_name_field = s_strdup(api, name)))
            return s_fail(errbuf, "out of memory");
        return 0;
    }
    const char *dot = strrchr(s->to_field, '.');
    const char *last = dot ? dot + 1 : s->to_field;
    if (strcmp(last, "email") != 0)
        return 0;
    size_t prefix = (size_t)(last - s->to_field);
    s->to_name_field = api->alloc(prefix + 5);
    if (!s->to_name_field)
        return s_fail(errbuf, "out of memory");
    memcpy(s->to_name_field, s->to_field, prefix);
    memcpy(s->to_name_field + prefix, "name", 5);
    return 0;
}

static int
s_open_message(smtp_t *s, const plugboard_settings_t *set, char *errbuf)
{
    const plugboard_host_api_t *api = s->api;
    if (!s_setting(s, set, "from"))
        return s_fail(errbuf, "setting 'from' is required with 'url'");
    const char *dir = s_setting(s, set, "templates");
    if (!dir)
        return s_fail(errbuf, "setting 'templates' is required with 'url'");
    /* col: where the value starts, after "From: ", "To: ", "Reply-To: " */
    if (s_open_mailbox(s, set, "from", 6, &s->from, errbuf) ||
        s_open_mailbox(s, set, "to", 4, &s->to, errbuf) ||
        s_open_mailbox(s, set, "reply_to", 10, &s->reply_to, errbuf) ||
        s_open_address(s, set, "envelope_from", &s->envelope_from, errbuf) ||
        s_open_bcc(s, set, errbuf) || s_open_fields(s, set, errbuf))
        return -1;
    if (!s->envelope_from &&
        !(s->envelope_from = s_strdup(api, s->from.address)))
        return s_fail(errbuf, "out of memory");
    const char *domain = s_setting(s, set, "message_id_domain");
    if (domain) {
        char probe[300];
        snprintf(probe, sizeof probe, "x@%s", domain);
        if (!plugboard_mail_address_ok(probe, strlen(probe)))
            return s_fail(errbuf, "setting 'message_id_domain' is not a "
                                  "domain like example.com");
    }
    s->message_id_domain =
        s_strdup(api, domain ? domain : strchr(s->from.address, '@') + 1);
    if (!s->message_id_domain)
        return s_fail(errbuf, "out of memory");
    s->templates = plugboard_mail_templates_load(api, dir, errbuf);
    return s->templates ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* Webhooks                                                            */
/* ------------------------------------------------------------------ */

static int
s_open_webhooks(smtp_t *s, const plugboard_settings_t *set, char *errbuf)
{
    const char *provider = s_setting(s, set, "webhook_provider");
    const char *sg_key = s_setting(s, set, "sendgrid_public_key");
    const char *mg_key = s_setting(s, set, "mailgun_signing_key");
    if (!provider || strcmp(provider, "none") == 0)
        s->provider = SMTP_PROVIDER_NONE;
    else if (strcmp(provider, "sendgrid") == 0)
        s->provider = SMTP_PROVIDER_SENDGRID;
    else if (strcmp(provider, "mailgun") == 0)
        s->provider = SMTP_PROVIDER_MAILGUN;
    else
        return s_fail(errbuf,
                      "setting 'webhook_provider' is '%s': expected "
                      "sendgrid, mailgun or none",
                      provider);
    if (sg_key && s->provider != SMTP_PROVIDER_SENDGRID)
        return s_fail(errbuf, "setting 'sendgrid_public_key' is set but "
                              "'webhook_provider' is not \"sendgrid\"");
    if (mg_key && s->provider != SMTP_PROVIDER_MAILGUN)
        return s_fail(errbuf, "setting 'mailgun_signing_key' is set but "
                              "'webhook_provider' is not \"mailgun\"");
    if (s->provider == SMTP_PROVIDER_SENDGRID) {
        if (!sg_key)
            return s_fail(errbuf, "setting 'sendgrid_public_key' is required "
                                  "with webhook_provider = \"sendgrid\"");
        s->sendgrid_key = smtp_sendgrid_key(sg_key, errbuf);
        if (!s->sendgrid_key)
            return -1;
    }
    if (s->provider == SMTP_PROVIDER_MAILGUN) {
        if (!mg_key)
            return s_fail(errbuf, "setting 'mailgun_signing_key' is required "
                                  "with webhook_provider = \"mailgun\"");
        s->mailgun_key = mg_key;
    }
    s->tolerance_ms = s->api->setting_int(set, "webhook_tolerance");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Callbacks                                                           */
/* ------------------------------------------------------------------ */

static void
s_close(void *state)
{
    smtp_t *s = state;
    if (!s)
        return;
    const plugboard_host_api_t *api = s->api;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    api->free(s->url);
    api->free(s->server);
    plugboard_mailbox_release(api, &s->from);
    plugboard_mailbox_release(api, &s->reply_to);
    plugboard_mailbox_release(api, &s->to);
    api->free(s->envelope_from);
    api->free(s->to_field);
    api->free(s->to_name_field);
    for (size_t i = 0; i < s->bcc_count; i++)
        api->free(s->bcc[i]);
    api->free(s->bcc);
    api->free(s->message_id_domain);
    plugboard_mail_templates_destroy(&s->templates);
    EVP_PKEY_free(s->sendgrid_key);
    smtp_tokens_release(s);
    api->free(s);
    curl_global_cleanup();
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *set, void **state, char *errbuf)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return s_fail(errbuf, "cannot initialise libcurl");
    smtp_t *s = api->alloc(sizeof *s);
    if (!s) {
        curl_global_cleanup();
        return s_fail(errbuf, "out of memory");
    }
    memset(s, 0, sizeof *s);
    s->api = api;
    s->host = host;

    const char *url = s_setting(s, set, "url");
    if (s_open_webhooks(s, set, errbuf) != 0)
        goto out_close;
    if (!url && s->provider == SMTP_PROVIDER_NONE) {
        s_fail(errbuf, "set 'url' (to send mail) or 'webhook_provider' (to "
                       "receive e-mail events): as configured this connector "
                       "would do nothing");
        goto out_close;
    }
    if (url && (s_open_server(s, set, url, errbuf) != 0 ||
                s_open_message(s, set, errbuf) != 0))
        goto out_close;
    if (url && !(s->curl = curl_easy_init())) {
        s_fail(errbuf, "cannot create a libcurl handle");
        goto out_close;
    }
    static const char *const tls_names[] = {"starttls", "implicit", "none"};
    static const char *const providers[] = {"none", "sendgrid", "mailgun"};
    api->log(host, PLUGBOARD_LOG_INFO,
             "opened server=%s tls=%s auth=%s templates=%zu webhooks=%s",
             s->server ? s->server : "(none)",
             s->server ? tls_names[s->tls] : "-", s->username ? "yes" : "no",
             plugboard_mail_templates_count(s->templates),
             providers[s->provider]);
    *state = s;
    return 0;

out_close:
    s_close(s);
    return -1;
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *r)
{
    smtp_t *s = state;
    if (!s->url) {
        r->outcome = PLUGBOARD_REJECT;
        snprintf(r->reason, sizeof r->reason,
                 "this connector has no 'url': it only receives webhooks");
        return;
    }
    smtp_send_deliver(s, ev, r);
}

static void
s_webhook(void *state, const plugboard_request_t *req,
          plugboard_response_t *resp)
{
    smtp_t *s = state;
    if (s->provider == SMTP_PROVIDER_NONE) {
        smtp_hook_refuse(s, resp, 400,
                         "webhooks not configured: set webhook_provider",
                         "webhook_not_configured");
        return;
    }
    if (!req->method || strcmp(req->method, "POST") != 0) {
        smtp_hook_refuse(s, resp, 405, "method not allowed: send POST",
                         "method_rejected");
        return;
    }
    if (s->provider == SMTP_PROVIDER_SENDGRID)
        smtp_sendgrid_webhook(s, req, resp);
    else
        smtp_mailgun_webhook(s, req, resp);
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "smtp",
    .version = S_PLUGIN_VERSION,
    .summary = "send templated e-mail over SMTP; take SendGrid or Mailgun "
               "delivery, bounce and complaint webhooks",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = s_emits,
    .flags = 0,
    .deliver_timeout_ms = 120000, /* above the longest 'timeout' allowed */
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
