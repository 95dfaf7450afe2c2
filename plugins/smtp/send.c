/*
 * send.c - the smtp connector's sink: one event becomes one message, sent
 * in one SMTP transaction through libcurl.
 *
 * The message is built here (the SDK's mail helpers render the templates
 * and the RFC 5322 text) rather than by libcurl's MIME API, so every header
 * is ours: its Message-ID derives from the event id and the recipient, so
 * a re-send after an unknown outcome (a timeout after the final dot) keeps
 * it and receivers can drop the duplicate.  libcurl does the SMTP side:
 * STARTTLS (required, never a plaintext fallback) or implicit TLS, AUTH,
 * MAIL FROM, RCPT TO, and the dot-stuffing of the DATA section.
 *
 * The outcome is classified from the server's replies, which a libcurl
 * debug callback follows command by command (never recording what AUTH
 * sends): 4xx and failures to connect, to agree on TLS or to get an answer
 * are transient (retry); 5xx is permanent (reject, dead-letter), and the
 * reason names the command and quotes the reply ("recipient
 * <a@example.com> refused: 550 5.1.1 user unknown").  With bcc addresses a
 * refused copy is logged and counted without failing the delivery; the
 * primary recipient's answer decides.
 */
#include "smtp.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/sha.h>

#define S_REPLY_MAX 200 /* bytes of a server reply kept for a reason */
#define S_VERB_MAX 12
#define S_RCPT_MAX (SMTP_BCC_MAX + 1)
#define S_NAME_MAX 200 /* bytes of a recipient's name put in To */
#define S_ADDR_SHOWN 64 /* bytes of an address shown in a reason */

/*
 * Format a delivery's reason.  PLUGBOARD_REASON_MAX is part of the ABI, so
 * callers put what matters first (who refused, the reply's code) and a
 * reason that does not fit ends in "...": cut, and visibly so.  The log
 * line of the failure carries the whole reply.
 */
static void s_reason(plugboard_result_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
s_reason(plugboard_result_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof r->reason)
        memcpy(r->reason + sizeof r->reason - 4, "...", 4);
}

/* An address as a reason shows it: whole up to S_ADDR_SHOWN bytes, else
 * its start and its end around "..." (the domain stays readable). */
static void
s_short_addr(const char *addr, char out[S_ADDR_SHOWN + 1])
{
    size_t n = strlen(addr);
    if (n <= S_ADDR_SHOWN) {
        memcpy(out, addr, n + 1);
        return;
    }
    size_t head = (S_ADDR_SHOWN - 3) / 2;
    size_t tail = S_ADDR_SHOWN - 3 - head;
    memcpy(out, addr, head);
    memcpy(out + head, "...", 3);
    memcpy(out + head + 3, addr + n - tail, tail + 1);
}

/* ------------------------------------------------------------------ */
/* Following the SMTP dialogue                                         */
/* ------------------------------------------------------------------ */

typedef struct s_reply {
    int code;               /* 0 when none */
    char text[S_REPLY_MAX]; /* "550 5.1.1 user unknown", printable ASCII */
} s_reply_t;

typedef struct s_session {
    char verb[S_VERB_MAX]; /* the command awaiting an answer; "" for the
                              greeting, "." for the end of the message */
    char rcpt[PLUGBOARD_MAIL_ADDRESS_MAX + 1]; /* its address, for RCPT */
    bool message_sent;          /* 354 came: the message went out */
    bool final_reply;           /* the message's own reply came */
    s_reply_t last;             /* the last complete reply ... */
    char last_verb[S_VERB_MAX]; /* ... the command it answered ... */
    char last_rcpt[PLUGBOARD_MAIL_ADDRESS_MAX + 1]; /* ... and its address */
    char pending[S_REPLY_MAX]; /* a multi-line reply so far */
    size_t pending_len;
    bool pending_cut; /* it did not fit: shown ending in "..." */
    struct {
        char addr[PLUGBOARD_MAIL_ADDRESS_MAX + 1];
        s_reply_t reply;
    } rcpts[S_RCPT_MAX];
    size_t rcpt_count;
} s_session_t;

/* A command the client sent: remember its verb (and RCPT's address).
 * Lines that are not commands (AUTH exchanges) are ignored unread. */
static void
s_on_command(s_session_t *ss, const char *line, size_t n)
{
    static const char *const verbs[] = {
        "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL",
        "RCPT", "DATA", "RSET",     "QUIT", "NOOP",
    };
    size_t v = 0;
    while (v < n && isalpha((unsigned char)line[v]))
        v++;
    if (v >= S_VERB_MAX || (v < n && line[v] != ' ' && line[v] != '\r'))
        return;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strlen(verbs[i]) != v || strncasecmp(line, verbs[i], v) != 0)
            continue;
        memcpy(ss->verb, verbs[i], v + 1);
        ss->rcpt[0] = '\0';
        const char *lt = memchr(line, '<', n);
        const char *gt = lt ? memchr(lt, '>', n - (size_t)(lt - line)) : NULL;
        if (strcmp(ss->verb, "RCPT") == 0 && lt && gt &&
            (size_t)(gt - lt - 1) < sizeof ss->rcpt) {
            memcpy(ss->rcpt, lt + 1, (size_t)(gt - lt - 1));
            ss->rcpt[gt - lt - 1] = '\0';
        }
        return;
    }
}

/* A complete reply to ss->verb.  The reply to QUIT (sent when libcurl
 * closes a connection, after a failure too) never hides the one that
 * mattered. */
static void
s_on_reply(s_session_t *ss, int code)
{
    if (strcmp(ss->verb, "QUIT") == 0) {
        ss->pending_len = 0;
        ss->pending_cut = false;
        return;
    }
    ss->last.code = code;
    /* "NNN text", cut to fit with "..." at the end */
    size_t room = sizeof ss->last.text - 5; /* "NNN ", NUL */
    size_t n = ss->pending_len < room ? ss->pending_len : room;
    char *t = ss->last.text;
    size_t o = (size_t)snprintf(t, sizeof ss->last.text, "%03d", code % 1000);
    if (n > 0) {
        t[o++] = ' ';
        memcpy(t + o, ss->pending, n);
        o += n;
    }
    t[o] = '\0';
    if ((ss->pending_cut || n < ss->pending_len) && n >= 3)
        memcpy(t + o - 3, "...", 3);
    ss->pending_cut = false;
    memcpy(ss->last_verb, ss->verb, sizeof ss->verb);
    memcpy(ss->last_rcpt, ss->rcpt, sizeof ss->rcpt);
    ss->pending_len = 0;
    if (strcmp(ss->verb, "RCPT") == 0 && ss->rcpt_count < S_RCPT_MAX) {
        memcpy(ss->rcpts[ss->rcpt_count].addr, ss->rcpt, sizeof ss->rcpt);
        ss->rcpts[ss->rcpt_count].reply = ss->last;
        ss->rcpt_count++;
    } else if (strcmp(ss->verb, "DATA") == 0 && code == 354) {
        ss->message_sent = true;
        memcpy(ss->verb, ".", 2); /* the next reply answers the message */
    } else if (strcmp(ss->verb, ".") == 0) {
        ss->final_reply = true;
    }
}

/* One line of a reply: "250-first", "250 last", or "250". */
static void
s_on_reply_line(s_session_t *ss, const char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        n--;
    if (n < 3 || !isdigit((unsigned char)line[0]) ||
        !isdigit((unsigned char)line[1]) || !isdigit((unsigned char)line[2]))
        return;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    bool more = n > 3 && line[3] == '-';
    const char *text = n > 4 ? line + 4 : "";
    size_t len = n > 4 ? n - 4 : 0;
    if (len > 0 && ss->pending_len > 0 &&
        ss->pending_len + 1 < sizeof ss->pending)
        ss->pending[ss->pending_len++] = ' ';
    for (size_t i = 0; i < len; i++) {
        if (ss->pending_len + 1 >= sizeof ss->pending) {
            ss->pending_cut = true;
            break;
        }
        unsigned char c = (unsigned char)text[i];
        ss->pending[ss->pending_len++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (!more)
        s_on_reply(ss, code);
}

static int
s_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ctx)
{
    s_session_t *ss = ctx;
    (void)h;
    if (!ss)
        return 0;
    if (type == CURLINFO_HEADER_OUT) {
        s_on_command(ss, data, size);
    } else if (type == CURLINFO_HEADER_IN) {
        while (size > 0) {
            const char *nl = memchr(data, '\n', size);
            size_t n = nl ? (size_t)(nl - data) + 1 : size;
            s_on_reply_line(ss, data, n);
            data += n;
            size -= n;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The message                                                         */
/* ------------------------------------------------------------------ */

/*
 * The recipient's address: the fixed 'to' setting, else the event field
 * ('owner' for the host's owner notices, to_field for everything else), copied
 * into out.  false, with r rejected, when it is missing or not one bare
 * address.
 */
static bool
s_recipient(const smtp_t *s, const plugboard_event_t *ev,
            char out[PLUGBOARD_MAIL_ADDRESS_MAX + 1], plugboard_result_t *r)
{
    const plugboard_host_api_t *api = s->api;
    if (s->to.address) {
        snprintf(out, PLUGBOARD_MAIL_ADDRESS_MAX + 1, "%s", s->to.address);
        return true;
    }
    const char *type = api->event_type(ev);
    const char *field =
        strcmp(type, PLUGBOARD_EV_DELIVERY_DEAD) == 0 ||
                strcmp(type, PLUGBOARD_EV_CONNECTOR_UNHEALTHY) == 0
            ? "owner"
            : s->to_field;
    const char *v = NULL;
    size_t n = 0;
    if (!api->event_string(ev, field, &v, &n) ||
        !plugboard_mail_address_ok(v, n)) {
        r->outcome = PLUGBOARD_REJECT;
        s_reason(r, "recipient field '%s' is missing or not an address",
                 field);
        return false;
    }
    memcpy(out, v, n);
    out[n] = '\0';
    return true;
}

/*
 * The To header: the fixed 'to' as configured, else the address with the
 * name from to_name_field when there is one (controls blanked, quoted or
 * encoded by the mailbox parser; a name too long for one header line is
 * left out).  Returns api->alloc'd text or NULL.
 */
static char *
s_to_header(const smtp_t *s, const plugboard_event_t *ev, const char *rcpt)
{
    const plugboard_host_api_t *api = s->api;
    const char *name = NULL;
    size_t n = 0;
    const char *fixed = s->to.header ? s->to.header : rcpt;
    if (!s->to.header && s->to_name_field &&
        api->event_string(ev, s->to_name_field, &name, &n) && n > 0 &&
        n <= S_NAME_MAX) {
        char text[S_NAME_MAX + PLUGBOARD_MAIL_ADDRESS_MAX + 8];
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)name[i];
            text[o++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        }
        snprintf(text + o, sizeof text - o, " <%s>", rcpt);
        plugboard_mailbox_t mb;
        if (plugboard_mailbox_parse(api, text, 4, &mb) == 0) {
            char *header = mb.header;
            mb.header = NULL;
            plugboard_mailbox_release(api, &mb);
            return header;
        }
    }
    size_t len = strlen(fixed);
    char *copy = api->alloc(len + 1);
    if (copy)
        memcpy(copy, fixed, len + 1);
    return copy;
}

/* "<event token>.<8 hex of the recipient>@<domain>": one per event and
 * recipient, the same on every attempt. */
static void
s_message_id(const smtp_t *s, const plugboard_event_t *ev, const char *rcpt,
             char *out, size_t out_len)
{
    char token[PLUGBOARD_MAIL_ID_TOKEN_MAX];
    plugboard_mail_id_token(s->api->event_id(ev), token);
    char lower[PLUGBOARD_MAIL_ADDRESS_MAX + 1];
    size_t n = strlen(rcpt);
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)tolower((unsigned char)rcpt[i]);
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)lower, n, md);
    char hex[9];
    plugboard_hex_encode(md, 4, hex);
    snprintf(out, out_len, "%s.%s@%s", token, hex, s->message_id_domain);
}

/* The whole message for ev to rcpt (api->free), or NULL out of memory. */
static char *
s_build(const smtp_t *s, const plugboard_event_t *ev, const char *rcpt,
        const char *message_id, size_t *len)
{
    const plugboard_host_api_t *api = s->api;
    plugboard_mail_content_t content;
    if (plugboard_mail_render(api, s->templates, ev, &content) != 0)
        return NULL;
    char *to = s_to_header(s, ev, rcpt);
    const char *type = api->event_type(ev);
    char token[PLUGBOARD_MAIL_ID_TOKEN_MAX];
    plugboard_mail_id_token(api->event_id(ev), token);
    const plugboard_header_t extra[] = {
        {.name = "X-Plugboard-Event-Id", .value = token},
        {.name = "X-Plugboard-Event-Type", .value = type},
    };
    plugboard_mail_t mail = {
        .date_ms = api->now_ms(),
        .from = s->from.header,
        .to = to,
        .reply_to = s->reply_to.header,
        .message_id = message_id,
        .subject = content.subject[0] ? content.subject : type,
        .text = content.text,
        .html = content.html,
        .extra = extra,
        .extra_count = sizeof extra / sizeof extra[0],
    };
    char *msg = to ? plugboard_mail_build(api, &mail, len) : NULL;
    api->free(to);
    plugboard_mail_content_release(api, &content);
    return msg;
}

/* ------------------------------------------------------------------ */
/* The transaction                                                     */
/* ------------------------------------------------------------------ */

typedef struct s_reader {
    const char *data;
    size_t len;
    size_t off;
} s_reader_t;

static size_t
s_read(char *buf, size_t size, size_t nitems, void *ctx)
{
    s_reader_t *rd = ctx;
    size_t room = size * nitems;
    size_t n = rd->len - rd->off < room ? rd->len - rd->off : room;
    memcpy(buf, rd->data + rd->off, n);
    rd->off += n;
    return n;
}

/* Every option of one transaction; the handle keeps only its connection
 * from the previous one. */
static CURLcode
s_setup(smtp_t *s, struct curl_slist *rcpts, size_t rcpt_count, s_reader_t *rd,
        s_session_t *ss, char *errbuf)
{
    CURL *c = s->curl;
    char from[PLUGBOARD_MAIL_ADDRESS_MAX + 3];
    snprintf(from, sizeof from, "<%s>", s->envelope_from);
    curl_easy_reset(c);
    CURLcode rc = CURLE_OK;
#define S_SET(opt, val)                                                        \
    do {                                                                       \
        if (rc == CURLE_OK)                                                    \
            rc = curl_easy_setopt(c, opt, val);                                \
    } while (0)
    S_SET(CURLOPT_URL, s->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    S_SET(CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
    S_SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
    S_SET(CURLOPT_USE_SSL, s->tls == SMTP_TLS_NONE ? (long)CURLUSESSL_NONE
                                                   : (long)CURLUSESSL_ALL);
    if (s->ca_file)
        S_SET(CURLOPT_CAINFO, s->ca_file);
    if (s->username) {
        S_SET(CURLOPT_USERNAME, s->username);
        S_SET(CURLOPT_PASSWORD, s->password ? s->password : "");
    }
    S_SET(CURLOPT_MAIL_FROM, from);
    S_SET(CURLOPT_MAIL_RCPT, rcpts);
    if (rcpt_count > 1) /* one refused bcc must not stop the others */
#if LIBCURL_VERSION_NUM >= 0x080200
        S_SET(CURLOPT_MAIL_RCPT_ALLOWFAILS, 1L);
#else
        S_SET(CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);
#endif
    S_SET(CURLOPT_UPLOAD, 1L);
    S_SET(CURLOPT_READFUNCTION, s_read);
    S_SET(CURLOPT_READDATA, rd);
    S_SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)rd->len);
    S_SET(CURLOPT_CONNECTTIMEOUT_MS, (long)s->connect_timeout_ms);
    S_SET(CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
    S_SET(CURLOPT_NOSIGNAL, 1L);
    S_SET(CURLOPT_MAXAGE_CONN, 30L); /* servers drop idle clients */
    S_SET(CURLOPT_ERRORBUFFER, errbuf);
    S_SET(CURLOPT_DEBUGFUNCTION, s_debug);
    S_SET(CURLOPT_DEBUGDATA, ss);
    S_SET(CURLOPT_VERBOSE, 1L); /* feeds s_debug only */
#undef S_SET
    return rc;
}

/* Who a command's refusal is about, for the reason. */
static void
s_stage(const s_session_t *ss, const smtp_t *s, char *out, size_t out_len)
{
    const char *v = ss->last_verb;
    char addr[S_ADDR_SHOWN + 1];
    if (strcmp(v, "RCPT") == 0) {
        s_short_addr(ss->last_rcpt, addr);
        snprintf(out, out_len, "recipient <%s>", addr);
    } else if (strcmp(v, "MAIL") == 0) {
        s_short_addr(s->envelope_from, addr);
        snprintf(out, out_len, "sender <%s>", addr);
    } else if (strcmp(v, ".") == 0) {
        snprintf(out, out_len, "message");
    } else if (strcmp(v, "AUTH") == 0) {
        s_short_addr(s->username ? s->username : "", addr);
        snprintf(out, out_len, "authentication as '%s'", addr);
    } else if (v[0] == '\0' || strcmp(v, "QUIT") == 0) {
        snprintf(out, out_len, "connection");
    } else {
        snprintf(out, out_len, "%s", v);
    }
}

/* "recipient <addr>" with the address shortened for a reason. */
static void
s_rcpt_stage(const char *rcpt, char *out, size_t out_len)
{
    char addr[S_ADDR_SHOWN + 1];
    s_short_addr(rcpt, addr);
    snprintf(out, out_len, "recipient <%s>", addr);
}

/* Set r from an SMTP reply: 5xx rejects, anything else retries. */
static void
s_refused(plugboard_result_t *r, const char *stage, const s_reply_t *reply,
          const char *extra)
{
    r->outcome = reply->code >= 500 && reply->code < 600 ? PLUGBOARD_REJECT
                                                         : PLUGBOARD_RETRY;
    s_reason(r, "%s refused: %s%s", stage, reply->text, extra ? extra : "");
}

/* The delivery failed before the server's final word (rcpt: the primary
 * recipient). */
static void
s_failed(smtp_t *s, CURLcode res, long code, const s_session_t *ss,
         const char *rcpt, const char *errbuf, const char *message_id,
         plugboard_result_t *r)
{
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(res);
    char stage[S_ADDR_SHOWN + 40];
    const s_reply_t *primary = NULL;
    for (size_t i = 0; i < ss->rcpt_count && !primary; i++)
        if (strcasecmp(ss->rcpts[i].addr, rcpt) == 0)
            primary = &ss->rcpts[i].reply;
    if (ss->message_sent && !ss->final_reply) {
        r->outcome = PLUGBOARD_RETRY;
        s_reason(r,
                 "outcome unknown: no reply from %s after the message was "
                 "sent; the retry keeps Message-ID <%s> (%s)",
                 s->server, message_id, why);
    } else if (res == CURLE_USE_SSL_FAILED) {
        r->outcome = PLUGBOARD_RETRY;
        s_reason(r,
                 "%s offers no STARTTLS and tls = \"starttls\" requires it: "
                 "nothing was sent (%s)",
                 s->server, why);
    } else if (primary && primary->code >= 400 && !ss->message_sent) {
        /* every recipient refused: the primary's answer decides */
        s_rcpt_stage(rcpt, stage, sizeof stage);
        s_refused(r, stage, primary, NULL);
    } else if (code >= 400 && code < 600 && ss->last.code == code) {
        s_stage(ss, s, stage, sizeof stage);
        s_refused(r, stage, &ss->last, NULL);
        if (strcasecmp(ss->last_verb, "AUTH") == 0 &&
            PLUGBOARD_API_HAS(s->api, auth_failed)) {
            char why_auth[96];
            snprintf(why_auth, sizeof why_auth,
                     "the SMTP server refused the login: %ld", code);
            s->api->auth_failed(s->host, why_auth);
        }
    } else if (code >= 400 && code < 600) {
        r->outcome = code >= 500 ? PLUGBOARD_REJECT : PLUGBOARD_RETRY;
        s_reason(r, "%s answered %ld: %s", s->server, code, why);
    } else {
        r->outcome = PLUGBOARD_RETRY;
        s_reason(r, "cannot send through %s: %s", s->server, why);
    }
}

/* Add a refused bcc copy to the reason kept with a delivered attempt, so
 * the journal records which address was refused ("sent; bcc <a@x>
 * refused: 550 ...; bcc <b@x> refused: ..."). */
static void
s_note_bcc(plugboard_result_t *r, size_t nth, const char *addr,
           const s_reply_t *reply)
{
    char shown[S_ADDR_SHOWN + 1];
    size_t used = strlen(r->reason);

    if (r->outcome != PLUGBOARD_OK || used + 4 >= sizeof r->reason)
        return;
    s_short_addr(addr, shown);
    int n = snprintf(r->reason + used, sizeof r->reason - used,
                     "%sbcc <%s> refused: %s", nth == 0 ? "sent; " : "; ",
                     shown, reply->text);
    if (n >= (int)(sizeof r->reason - used))
        memcpy(r->reason + sizeof r->reason - 4, "...", 4);
}

/* Everything went through; a refused bcc copy is only reported (in the
 * reason of the delivered attempt, the log and a counter), a refused
 * primary recipient decides the outcome. */
static void
s_succeeded(smtp_t *s, const plugboard_event_t *ev, const s_session_t *ss,
            const char *rcpt, const char *message_id, plugboard_result_t *r)
{
    const plugboard_host_api_t *api = s->api;
    size_t refused = 0;
    for (size_t i = 0; i < ss->rcpt_count; i++) {
        const s_reply_t *reply = &ss->rcpts[i].reply;
        if (reply->code >= 200 && reply->code < 300)
            continue;
        if (strcasecmp(ss->rcpts[i].addr, rcpt) == 0) {
            char stage[S_ADDR_SHOWN + 16];
            s_rcpt_stage(rcpt, stage, sizeof stage);
            s_refused(r, stage, reply, " (bcc copies were sent)");
        } else {
            s_note_bcc(r, refused, ss->rcpts[i].addr, reply);
            refused++;
            api->count(s->host, "bcc_refused", 1);
            api->log(s->host, PLUGBOARD_LOG_WARN,
                     "bcc refused event=%s rcpt=<%s> reply=\"%s\"",
                     api->event_id(ev), ss->rcpts[i].addr, reply->text);
        }
    }
    if (r->outcome != PLUGBOARD_OK)
        return;
    api->count(s->host, "sent", 1);
    api->log(s->host, PLUGBOARD_LOG_INFO,
             "sent event=%s type=%s rcpt=<%s> message_id=<%s> bcc_refused=%zu "
             "reply=\"%s\"",
             api->event_id(ev), api->event_type(ev), rcpt, message_id, refused,
             ss->last.text);
}

/*
 * After a failure the kept connection may be mid-transaction (libcurl 7.88
 * returns a connection whose final reply timed out to its cache), so it
 * must not carry the next message.  Shutting its socket down makes libcurl
 * see it dead: the next delivery connects afresh, and closing it later
 * does not wait for a QUIT reply from a server that stalls.
 */
static void
s_drop_connection(smtp_t *s)
{
    curl_socket_t sock = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &sock) == CURLE_OK &&
        sock != CURL_SOCKET_BAD)
        shutdown(sock, SHUT_RDWR);
}

/* The envelope's recipients: the primary first, then bcc (minus it). */
static struct curl_slist *
s_rcpt_list(const smtp_t *s, const char *rcpt, size_t *count)
{
    char line[PLUGBOARD_MAIL_ADDRESS_MAX + 3];
    snprintf(line, sizeof line, "<%s>", rcpt);
    struct curl_slist *list = curl_slist_append(NULL, line);
    *count = 1;
    for (size_t i = 0; list && i < s->bcc_count; i++) {
        if (strcasecmp(s->bcc[i], rcpt) == 0)
            continue;
        snprintf(line, sizeof line, "<%s>", s->bcc[i]);
        struct curl_slist *more = curl_slist_append(list, line);
        if (!more) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = more;
        (*count)++;
    }
    return list;
}

void
smtp_send_deliver(smtp_t *s, const plugboard_event_t *ev, plugboard_result_t *r)
{
    const plugboard_host_api_t *api = s->api;
    char rcpt[PLUGBOARD_MAIL_ADDRESS_MAX + 1];
    if (!s_recipient(s, ev, rcpt, r))
        return;
    char message_id[PLUGBOARD_MAIL_ID_TOKEN_MAX + 300];
    s_message_id(s, ev, rcpt, message_id, sizeof message_id);

    size_t len = 0, rcpt_count = 0;
    char *msg = s_build(s, ev, rcpt, message_id, &len);
    struct curl_slist *rcpts = msg ? s_rcpt_list(s, rcpt, &rcpt_count) : NULL;
    if (!rcpts) {
        api->free(msg);
        r->outcome = PLUGBOARD_RETRY;
        snprintf(r->reason, sizeof r->reason, "out of memory");
        return;
    }
    s_reader_t rd = {.data = msg, .len = len};
    s_session_t ss;
    memset(&ss, 0, sizeof ss);
    char errbuf[CURL_ERROR_SIZE] = "";
    CURLcode res = s_setup(s, rcpts, rcpt_count, &rd, &ss, errbuf);
    if (res == CURLE_OK)
        res = curl_easy_perform(s->curl);
    long code = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
    if (res == CURLE_OK) {
        s_succeeded(s, ev, &ss, rcpt, message_id, r);
    } else {
        s_failed(s, res, code, &ss, rcpt, errbuf, message_id, r);
        s_drop_connection(s);
    }
    if (r->outcome != PLUGBOARD_OK) {
        api->count(
            s->host,
            r->outcome == PLUGBOARD_RETRY ? "send_retry" : "send_rejected", 1);
        api->log(s->host, PLUGBOARD_LOG_WARN,
                 "not sent event=%s type=%s outcome=%s rcpt=<%s> "
                 "reason=\"%s\" last_reply=\"%s\"",
                 api->event_id(ev), api->event_type(ev),
                 r->outcome == PLUGBOARD_RETRY ? "retry" : "reject", rcpt,
                 r->reason, ss.last.text);
    }
    /* the handle must not keep pointers into this call's memory (closing
     * the kept connection later sends QUIT with these options) */
    curl_easy_setopt(s->curl, CURLOPT_VERBOSE, 0L);
    curl_easy_setopt(s->curl, CURLOPT_DEBUGFUNCTION, NULL);
    curl_easy_setopt(s->curl, CURLOPT_MAIL_RCPT, NULL);
    curl_easy_setopt(s->curl, CURLOPT_READDATA, NULL);
    curl_easy_setopt(s->curl, CURLOPT_DEBUGDATA, NULL);
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(rcpts);
    api->free(msg);
}
