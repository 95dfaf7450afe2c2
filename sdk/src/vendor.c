/*
 * vendor.c - the HTTP client, Retry-After parsing, answer classification
 * and exact-id JSON loading shared by connectors that call vendor APIs
 * (hubspot, zendesk, the stripe sink).
 *
 * The client owns one libcurl easy handle and the buffer of the last
 * answer; memory goes through the host API table.  Nothing here logs:
 * callers decide what an admin sees.
 */
#include <plugboard/vendor.h>

#include <plugboard/helpers.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/sha.h>

#define S_DEFAULT_CONNECT_MS 5000
#define S_DEFAULT_TIMEOUT_MS 30000
#define S_DEFAULT_MAX_BODY (4u * 1024u * 1024u)
#define S_NOPROXY "127.0.0.1,localhost,::1"

struct plugboard_http {
    const plugboard_host_api_t *api;
    CURL *curl;
    size_t max_body;
    char *buf; /* the last answer's body, NUL-terminated */
    size_t len;
    size_t cap;
    bool too_big;
    bool failed;     /* out of memory while receiving */
    bool fresh_next; /* the next request opens a new connection */
};

/* ------------------------------------------------------------------ */
/* Client                                                              */
/* ------------------------------------------------------------------ */

plugboard_http_t *
plugboard_http_new(const plugboard_host_api_t *api,
                   const plugboard_http_options_t *opt)
{
    plugboard_http_t *c = api->alloc(sizeof *c);

    if (c == NULL) {
        return NULL;
    }
    memset(c, 0, sizeof *c);
    c->api = api;
    c->max_body =
        opt != NULL && opt->max_body > 0 ? opt->max_body : S_DEFAULT_MAX_BODY;
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        api->free(c);
        return NULL;
    }
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c->curl, CURLOPT_NOPROXY, S_NOPROXY);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT,
                     opt != NULL && opt->user_agent != NULL ? opt->user_agent
                                                            : "plugboard");
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(opt != NULL && opt->connect_timeout_ms > 0
                                ? opt->connect_timeout_ms
                                : S_DEFAULT_CONNECT_MS));
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS,
                     (long)(opt != NULL && opt->timeout_ms > 0
                                ? opt->timeout_ms
                                : S_DEFAULT_TIMEOUT_MS));
    return c;
}

void
plugboard_http_destroy(plugboard_http_t **cp)
{
    plugboard_http_t *c;

    if (cp == NULL || *cp == NULL) {
        return;
    }
    c = *cp;
    *cp = NULL;
    curl_easy_cleanup(c->curl);
    c->api->free(c->buf);
    c->api->free(c);
}

static bool
s_reserve(plugboard_http_t *c, size_t extra)
{
    size_t cap;
    char *n;

    if (c->len + extra + 1 <= c->cap) {
        return true;
    }
    cap = c->cap > 0 ? c->cap : 1024;
    while (cap < c->len + extra + 1) {
        cap *= 2;
    }
    n = c->api->alloc(cap);
    if (n == NULL) {
        return false;
    }
    if (c->len > 0) {
        memcpy(n, c->buf, c->len);
    }
    c->api->free(c->buf);
    c->buf = n;
    c->cap = cap;
    return true;
}

static size_t
s_on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    plugboard_http_t *c = ctx;
    size_t n = size * nmemb;

    if (c->len + n > c->max_body) {
        c->too_big = true;
        return 0; /* aborts the transfer */
    }
    if (!s_reserve(c, n)) {
        c->failed = true;
        return 0;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
    c->buf[c->len] = '\0';
    return n;
}

static void
s_transport_error(plugboard_http_t *c, CURLcode rc, const char *errbuf,
                  plugboard_http_reply_t *reply)
{
    reply->status = 0;
    reply->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
    if (c->too_big) {
        snprintf(reply->transport, sizeof reply->transport,
                 "answer larger than %zu bytes", c->max_body);
    } else if (errbuf[0] != '\0') {
        snprintf(reply->transport, sizeof reply->transport, "%s", errbuf);
    } else {
        snprintf(reply->transport, sizeof reply->transport, "%s",
                 curl_easy_strerror(rc));
    }
}

int
plugboard_http_request(plugboard_http_t *c, const char *method, const char *url,
                       const char *const *headers, const char *body,
                       size_t body_len, plugboard_http_reply_t *reply)
{
    struct curl_slist *list = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    CURLcode rc;

    memset(reply, 0, sizeof *reply);
    reply->retry_after_ms = -1;
    c->len = 0;
    c->too_big = false;
    c->failed = false;
    if (!s_reserve(c, 0)) {
        return -1;
    }
    c->buf[0] = '\0';
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        struct curl_slist *n = curl_slist_append(list, headers[i]);

        if (n == NULL) {
            curl_slist_free_all(list);
            return -1;
        }
        list = n;
    }
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, NULL);
    } else {
        curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body != NULL ? body : "");
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(body != NULL ? body_len : 0));
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(method, "POST") == 0 ? NULL : method);
    }
    curl_easy_setopt(c->curl, CURLOPT_FRESH_CONNECT, c->fresh_next ? 1L : 0L);
    c->fresh_next = false;
    rc = curl_easy_perform(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(list);
    if (c->failed) {
        return -1;
    }
    reply->body = c->buf;
    reply->body_len = c->len;
    if (rc != CURLE_OK) {
        s_transport_error(c, rc, errbuf, reply);
        return 0;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &reply->status);
    reply->retry_after_ms = plugboard_retry_after_ms(
        plugboard_http_header(c, "Retry-After"), c->api->now_ms());
    return 0;
}

void
plugboard_http_fresh_next(plugboard_http_t *c)
{
    c->fresh_next = true;
}

const char *
plugboard_http_header(plugboard_http_t *c, const char *name)
{
    struct curl_header *h = NULL;

    if (curl_easy_header(c->curl, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK) {
        return NULL;
    }
    return h->value;
}

char *
plugboard_http_escape(plugboard_http_t *c, const char *s, size_t len)
{
    char *e = curl_easy_escape(c->curl, s, (int)len);
    char *out;
    size_t n;

    if (e == NULL) {
        return NULL;
    }
    n = strlen(e);
    out = c->api->alloc(n + 1);
    if (out != NULL) {
        memcpy(out, e, n + 1);
    }
    curl_free(e);
    return out;
}

/* ------------------------------------------------------------------ */
/* Retry-After and classification                                      */
/* ------------------------------------------------------------------ */

int64_t
plugboard_retry_after_ms(const char *value, int64_t now_ms)
{
    size_t n;
    int64_t secs = 0;
    time_t when;

    if (value == NULL) {
        return -1;
    }
    while (*value == ' ' || *value == '\t') {
        value++;
    }
    n = strspn(value, "0123456789");
    if (n > 0 && value[n + strspn(value + n, " \t")] == '\0') {
        if (n > 9) {
            return -1; /* more than 31 years: not a real answer */
        }
        for (size_t i = 0; i < n; i++) {
            secs = secs * 10 + (value[i] - '0');
        }
        return secs * 1000;
    }
    if (n > 0 || *value == '\0') {
        return -1;
    }
    when = curl_getdate(value, NULL);
    if (when < 0) {
        return -1;
    }
    return (int64_t)when * 1000 > now_ms ? (int64_t)when * 1000 - now_ms : 0;
}

void
plugboard_result_set(plugboard_result_t *out, plugboard_outcome_t outcome,
                     int64_t retry_after_ms, const char *fmt, ...)
{
    va_list ap;

    out->outcome = outcome;
    out->retry_after_ms = retry_after_ms > 0 ? retry_after_ms : 0;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
    for (char *p = out->reason; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *p = ' ';
        }
    }
}

/* The vendor's message, cleaned and cut into buf. */
static const char *
s_clean(const char *message, char *buf, size_t size)
{
    size_t n = 0;

    if (message == NULL || *message == '\0') {
        return "no explanation given";
    }
    for (; *message != '\0' && n + 1 < size; message++) {
        unsigned char ch = (unsigned char)*message;

        buf[n++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    /* do not end inside a UTF-8 sequence */
    if (*message != '\0') {
        while (n > 0 && ((unsigned char)buf[n - 1] & 0xc0) == 0x80) {
            n--;
        }
        if (n > 0 && ((unsigned char)buf[n - 1] & 0xc0) == 0xc0) {
            n--;
        }
    }
    buf[n] = '\0';
    return buf;
}

void
plugboard_http_report_auth(const plugboard_host_api_t *api,
                           plugboard_host_t *host,
                           const plugboard_http_reply_t *r, const char *vendor)
{
    if (!api || !r || (r->status != 401 && r->status != 403) ||
        !PLUGBOARD_API_HAS(api, auth_failed))
        return;
    char reason[128];
    snprintf(reason, sizeof reason, "%s refused the credentials: HTTP %ld",
             vendor ? vendor : "the vendor", r->status);
    api->auth_failed(host, reason);
}

plugboard_outcome_t
plugboard_http_classify(const plugboard_http_reply_t *r, const char *what,
                        const char *message, int64_t default_wait_ms,
                        plugboard_result_t *out)
{
    char clean[PLUGBOARD_VENDOR_MESSAGE_MAX + 1];
    long s = r->status;

    if (s == 0) {
        plugboard_result_set(out, PLUGBOARD_RETRY, 0, "%s: %s%s", what,
                             r->timed_out ? "timed out: " : "", r->transport);
    } else if (s >= 200 && s < 300) {
        out->outcome = PLUGBOARD_OK;
    } else if (s == 429) {
        /* the vendor's limit, not this event's failure: a hold */
        plugboard_result_set(out, PLUGBOARD_HOLD,
                             r->retry_after_ms >= 0 ? r->retry_after_ms
                                                    : default_wait_ms,
                             "%s: rate limited (HTTP 429): %s", what,
                             s_clean(message, clean, sizeof clean));
    } else if (s == 401 || s == 403) {
        plugboard_result_set(out, PLUGBOARD_REJECT, 0,
                             "%s: authentication failed: check the token "
                             "(HTTP %ld)",
                             what, s);
    } else if (s == 408 || s == 409 || s == 425 || s >= 500) {
        plugboard_result_set(
            out, PLUGBOARD_RETRY, r->retry_after_ms > 0 ? r->retry_after_ms : 0,
            "%s: HTTP %ld: %s", what, s, s_clean(message, clean, sizeof clean));
    } else {
        plugboard_result_set(out, PLUGBOARD_REJECT, 0, "%s: HTTP %ld: %s", what,
                             s, s_clean(message, clean, sizeof clean));
    }
    return out->outcome;
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */
/* ------------------------------------------------------------------ */

/* Does the integer literal p[0..n) (optional '-', digits) fit in int64? */
static bool
s_fits_int64(const char *p, size_t n)
{
    bool neg = n > 0 && p[0] == '-';
    const char *limit = neg ? "9223372036854775808" : "9223372036854775807";
    size_t lim_len = strlen(limit);

    if (neg) {
        p++;
        n--;
    }
    while (n > 1 && p[0] == '0') {
        p++;
        n--;
    }
    return n < lim_len || (n == lim_len && memcmp(p, limit, n) <= 0);
}

/*
 * A copy of text where every integer literal beyond int64 is quoted, so
 * it loads as a string.  NULL when out of memory.
 */
static char *
s_quote_big_ints(const char *text, size_t len, size_t *out_len)
{
    char *out = malloc(len * 2 + 1); /* each digit run gains 2 bytes */
    size_t o = 0;
    size_t i = 0;
    bool in_string = false;

    if (out == NULL) {
        return NULL;
    }
    while (i < len) {
        char ch = text[i];

        if (in_string) {
            out[o++] = ch;
            if (ch == '\\' && i + 1 < len) {
                out[o++] = text[++i];
            } else if (ch == '"') {
                in_string = false;
            }
            i++;
            continue;
        }
        if (ch == '"') {
            in_string = true;
            out[o++] = ch;
            i++;
            continue;
        }
        if (ch == '-' || isdigit((unsigned char)ch)) {
            size_t start = i;
            size_t end = i + (ch == '-');
            bool integer;

            while (end < len && isdigit((unsigned char)text[end])) {
                end++;
            }
            integer = end == len || strchr(".eE", text[end]) == NULL;
            if (integer && end > start + (ch == '-') &&
                !s_fits_int64(text + start, end - start)) {
                out[o++] = '"';
                memcpy(out + o, text + start, end - start);
                o += end - start;
                out[o++] = '"';
            } else {
                memcpy(out + o, text + start, end - start);
                o += end - start;
            }
            i = end;
            continue;
        }
        out[o++] = ch;
        i++;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

json_t *
plugboard_json_loadb(const char *text, size_t len, json_error_t *err)
{
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, err);
    size_t quoted_len = 0;
    char *quoted;

    if (root != NULL || json_error_code(err) != json_error_numeric_overflow) {
        return root;
    }
    quoted = s_quote_big_ints(text, len, &quoted_len);
    if (quoted == NULL) {
        return NULL;
    }
    root = json_loadb(quoted, quoted_len, JSON_REJECT_DUPLICATES, err);
    free(quoted);
    return root;
}

const char *
plugboard_json_id(const json_t *v, char *buf, size_t size)
{
    int n;

    if (json_is_string(v)) {
        size_t len = json_string_length(v);

        if (len == 0 || len >= size ||
            memchr(json_string_value(v), '\0', len) != NULL) {
            return NULL;
        }
        memcpy(buf, json_string_value(v), len + 1);
        return buf;
    }
    if (!json_is_integer(v)) {
        return NULL;
    }
    n = snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return n > 0 && (size_t)n < size ? buf : NULL;
}

/* ------------------------------------------------------------------ */
/* Unmapped vendor items                                               */
/* ------------------------------------------------------------------ */

int
plugboard_emit_unmapped(const plugboard_host_api_t *api,
                        plugboard_host_t *host, const char *dedupe_prefix,
                        const char *reason, const void *item, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    char dedupe[200];
    size_t kept = len < PLUGBOARD_UNMAPPED_PAYLOAD_MAX
                      ? len
                      : PLUGBOARD_UNMAPPED_PAYLOAD_MAX;
    plugboard_builder_t *b =
        api->builder_new(host, PLUGBOARD_EV_INGRESS_UNMAPPED);
    int n;

    if (b == NULL) {
        return PLUGBOARD_E_NOMEM;
    }
    SHA256(item, len, md);
    n = snprintf(dedupe, sizeof dedupe, "%.*s", 120,
                 dedupe_prefix != NULL ? dedupe_prefix : "");
    for (size_t i = 0; i < sizeof md && (size_t)n + 2 < sizeof dedupe; i++) {
        dedupe[n++] = hex[md[i] >> 4];
        dedupe[n++] = hex[md[i] & 15];
    }
    dedupe[n] = '\0';
    if (api->builder_set_dedupe_id(b, dedupe) != 0 ||
        api->builder_set_string(b, "reason", reason, strlen(reason)) != 0 ||
        api->builder_set_int(b, "payload_bytes", (int64_t)len) != 0) {
        api->builder_discard(&b);
        return PLUGBOARD_E_INVALID;
    }
    if (api->builder_set_string(b, "payload", item, kept) != 0) {
        /* not UTF-8 (or cut inside a character): keep the bytes */
        char *b64 = api->alloc((kept + 2) / 3 * 4 + 1);

        if (b64 == NULL) {
            api->builder_discard(&b);
            return PLUGBOARD_E_NOMEM;
        }
        plugboard_base64_encode(item, kept, b64);
        n = api->builder_set_string(b, "payload_base64", b64, strlen(b64));
        api->free(b64);
        if (n != 0) {
            api->builder_discard(&b);
            return PLUGBOARD_E_INVALID;
        }
    }
    return api->emit(host, &b);
}

int
plugboard_webhook_keep_malformed(const plugboard_host_api_t *api,
                                 plugboard_host_t *host,
                                 plugboard_response_t *resp,
                                 const char *dedupe_prefix,
                                 const plugboard_request_t *req, int position)
{
    int rc = plugboard_emit_unmapped(api, host, dedupe_prefix,
                                     "malformed JSON (or a duplicate key)",
                                     req->body, req->body_len);
    if (rc != 0) {
        api->count(host, "emit_failed", 1);
        api->log(host, PLUGBOARD_LOG_ERROR,
                 "webhook refused status=503 reason=\"cannot accept events "
                 "now\"");
        api->respond(resp, 503, "cannot accept events now");
        return rc;
    }
    api->count(host, "malformed_json", 1);
    api->log(host, PLUGBOARD_LOG_WARN,
             "unmappable webhook acknowledged reason=\"malformed JSON\" "
             "position=%d bytes=%zu",
             position, req->body_len);
    api->respond(resp, 200,
                 "{\"received\":true,\"events\":0,"
                 "\"unmappable\":\"malformed JSON\"}");
    return 0;
}
