/*
 * test_smtp.c - the "smtp" connector against a real SMTP server, and its
 * SendGrid and Mailgun webhooks against the vendors' signature vectors.
 *
 * Each mail test starts tests/stand-ins/smtp_server.py (aiosmtpd, Debian's
 * python3-aiosmtpd, under /usr/bin/python3) on 127.0.0.1 and a port the
 * kernel picks, drives the real plugins/smtp.so through the test harness,
 * and parses what the server stored: envelope, headers, the decoded
 * subject and body.  Replies are scripted through the server's rules file
 * (451, 550, a stall after the final dot); TLS tests make a throw-away
 * certificate with the openssl command.  The fixture teardown stops the
 * server, and the server dies with the test process in any case.
 *
 * Webhook tests use the vendor vectors copied into tests/fixtures (see
 * their SOURCES.md); fresh requests are signed here with a key made for
 * the test (SendGrid) or the fixture's key (Mailgun).
 */
#define _GNU_SOURCE /* memmem, strndup */

#include <criterion/criterion.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <plugboard/helpers.h>

#include "envelope.h"
#include "harness.h"
#include "smtpd.h"

#define S_PLUGIN PB_PLUGIN_DIR "/smtp.so"
#define S_TEMPLATES PB_SOURCE_DIR "/etc/templates"
#define S_FIXTURES PB_SOURCE_DIR "/tests/fixtures"
#define S_FROM "from=Billing <billing@example.com>"
#define S_PASSWORD_ENV "PB_TEST_SMTP_PASSWORD"
#define S_MAILGUN_KEY_ENV "PB_TEST_MAILGUN_KEY"
#define S_MAILGUN_KEY "TEST_WEBHOOK_SIGNING_KEY"

/* SendGrid's published vector (sendgrid-python test_eventwebhook.py). */
#define S_SG_KEY                                                               \
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8k"  \
    "F9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
#define S_SG_OTHER_KEY                                                         \
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW"  \
    "6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
#define S_SG_TS "1600112502"
#define S_SG_SIG                                                               \
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+"  \
    "luQAbPIqHh89M15TluLtEZtM="

static char *s_dir;        /* the test's temporary directory */
static pb_smtpd_t s_smtpd; /* the SMTP server */
static int s_port;         /* where it listens (or a dummy) */
static char s_templates[4200] = S_TEMPLATES;

/* ------------------------------------------------------------------ */
/* The SMTP server                                                     */
/* ------------------------------------------------------------------ */

static void
s_server_stop(void)
{
    pb_smtpd_stop(&s_smtpd);
}

/* Start the server with extra arguments (NULL-terminated). */
static void
s_server_start(const char *const *extra)
{
    char dir[4300];
    snprintf(dir, sizeof dir, "%s/server", s_dir);
    bool up = pb_smtpd_start(&s_smtpd, dir, extra);
    char log[4400];
    snprintf(log, sizeof log, "%s/server.log", dir);
    char *out = up ? NULL : pb_test_read_file(log, NULL);
    cr_assert(up, "SMTP stand-in did not start: %s", out ? out : "(no log)");
    s_port = s_smtpd.port;
}

/* Replace the server's scripted replies. */
static void
s_rules(const char *text)
{
    cr_assert(pb_smtpd_rules(&s_smtpd, text));
}

static char *
s_session_log(void)
{
    return pb_smtpd_session_log(&s_smtpd);
}

/* A message the server stored: raw bytes and {"mail_from", "rcpt_tos",
 * "auth", "tls"}. */
typedef struct s_msg {
    char *raw;
    size_t len;
    json_t *meta;
} s_msg_t;

static size_t
s_msg_count(void)
{
    return pb_smtpd_count(&s_smtpd);
}

/* Message number i (1 for the first the server stored). */
static void
s_msg_load(size_t i, s_msg_t *m)
{
    cr_assert(pb_smtpd_message(&s_smtpd, i, &m->raw, &m->len, &m->meta),
              "no message %zu", i);
    cr_assert_eq(strlen(m->raw), m->len, "no NUL bytes in the message");
}

static void
s_msg_release(s_msg_t *m)
{
    free(m->raw);
    json_decref(m->meta);
}

/* The envelope's recipients as "a,b". */
static char *
s_rcpts(const s_msg_t *m)
{
    char buf[1024] = "";
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(m->meta, "rcpt_tos"), i, v)
    {
        if (i)
            strcat(buf, ",");
        strncat(buf, json_string_value(v), sizeof buf - strlen(buf) - 1);
    }
    return strdup(buf);
}

/* ------------------------------------------------------------------ */
/* Reading messages                                                    */
/* ------------------------------------------------------------------ */

/* CRLF everywhere and every line at most max octets (without CRLF). */
static void
s_assert_lines(const char *text, size_t max)
{
    size_t col = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            cr_assert(p > text && p[-1] == '\r', "bare LF at offset %zu",
                      (size_t)(p - text));
            cr_assert_leq(col - 1, max, "line of %zu octets", col - 1);
            col = 0;
        } else {
            cr_assert(*p != '\r' || p[1] == '\n', "bare CR");
            col++;
        }
    }
    cr_assert_eq(col, 0, "ends with CRLF");
}

/* Split a message; *body points into msg.  Returns the header block
 * (malloc'd, ending with CRLF). */
static char *
s_split(const char *msg, const char **body)
{
    const char *sep = strstr(msg, "\r\n\r\n");
    cr_assert_not_null(sep, "no blank line after the headers");
    *body = sep + 4;
    return strndup(msg, (size_t)(sep - msg) + 2);
}

/* Number of header fields (lines not starting with whitespace). */
static size_t
s_header_count(const char *headers)
{
    size_t n = 0;
    for (const char *line = headers; *line;) {
        if (*line != ' ' && *line != '\t')
            n++;
        const char *next = strstr(line, "\r\n");
        cr_assert_not_null(next);
        line = next + 2;
    }
    return n;
}

/* The unfolded value of header name (malloc'd), NULL when absent; asserts
 * it appears at most once. */
static char *
s_header(const char *headers, const char *name)
{
    size_t nlen = strlen(name);
    char *found = NULL;
    for (const char *line = headers; *line;) {
        const char *end = strstr(line, "\r\n");
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            cr_assert_null(found, "header %s appears twice", name);
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            found = calloc(1, strlen(v) + 1);
            size_t o = 0;
            for (const char *p = v;;) {
                const char *e = strstr(p, "\r\n");
                memcpy(found + o, p, (size_t)(e - p));
                o += (size_t)(e - p);
                if (e[2] != ' ' && e[2] != '\t')
                    break;
                p = e + 2;
            }
        }
        line = end + 2;
    }
    return found;
}

static size_t
s_b64_decode(const char *in, size_t n, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        const char *p = in[i] ? strchr(alphabet, in[i]) : NULL;
        cr_assert_not_null(p, "bad base64 character '%c'", in[i]);
        acc = (acc << 6) | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    return o;
}

/* An unfolded header value: plain text, or =?UTF-8?B?...?= words
 * separated by whitespace (each at most 75 characters), decoded. */
static char *
s_decode_header(const char *value)
{
    if (strncmp(value, "=?", 2) != 0)
        return strdup(value);
    char *out = calloc(1, strlen(value) + 1);
    size_t o = 0;
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        cr_assert(strncmp(p, "=?UTF-8?B?", 10) == 0, "not an encoded word: %s",
                  p);
        const char *end = strstr(p + 10, "?=");
        cr_assert_not_null(end);
        cr_assert_leq((size_t)(end + 2 - p), 75, "encoded word too long");
        o += s_b64_decode(p + 10, (size_t)(end - p - 10), out + o);
        p = end + 2;
    }
    out[o] = '\0';
    return out;
}

/* Decode quoted-printable (malloc'd); asserts lines of at most 76. */
static char *
s_qp_decode(const char *body)
{
    s_assert_lines(body, 76);
    char *out = calloc(1, strlen(body) + 1);
    size_t o = 0;
    for (const char *p = body; *p;) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 3;
        } else if (p[0] == '=') {
            unsigned int v;
            cr_assert(sscanf(p + 1, "%2X", &v) == 1, "bad =XX at %.8s", p);
            out[o++] = (char)v;
            p += 3;
        } else {
            if (*p == ' ' || *p == '\t')
                cr_assert(p[1] != '\r', "unencoded trailing whitespace");
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------------------ */
/* The connector                                                       */
/* ------------------------------------------------------------------ */

static bool
s_has_key(const char *const *list, size_t n, const char *setting)
{
    size_t k = strcspn(setting, "=");
    for (size_t i = 0; i < n; i++)
        if (strncmp(list[i], setting, k + 1) == 0)
            return true;
    return false;
}

/*
 * Open the connector with the defaults (the server's URL, tls = none,
 * from, templates) and the given "name=value" settings, which override a
 * default of the same name.  Returns NULL with err filled when open fails.
 */
static pb_harness_t *
s_try_open(char *err, size_t err_len, const char *const *extra)
{
    char url[64], tdir[4300];
    snprintf(url, sizeof url, "url=smtp://127.0.0.1:%d", s_port);
    snprintf(tdir, sizeof tdir, "templates=%s", s_templates);
    const char *defaults[] = {url, "tls=none", S_FROM, tdir};
    const char *settings[40];
    size_t n = 0, extra_n = 0;
    while (extra && extra[extra_n])
        extra_n++;
    for (size_t i = 0; i < 4; i++)
        if (!s_has_key(extra, extra_n, defaults[i]))
            settings[n++] = defaults[i];
    for (size_t i = 0; i < extra_n && n < 39; i++)
        settings[n++] = extra[i];
    settings[n] = NULL;
    return pb_harness_open(S_PLUGIN, "mail", settings, err, err_len);
}

#define S_OPEN(...) s_open((const char *const[]){__VA_ARGS__, NULL})

static pb_harness_t *
s_open(const char *const *extra)
{
    char err[512] = "";
    pb_harness_t *h = s_try_open(err, sizeof err, extra);
    cr_assert_not_null(h, "open: %s", err);
    return h;
}

/* Open expected to fail; returns the error. */
static char *
s_open_fails(const char *const *extra)
{
    char err[512] = "";
    pb_harness_t *h = s_try_open(err, sizeof err, extra);
    cr_assert_null(h, "open should have failed");
    return strdup(err);
}

static void
s_deliver(pb_harness_t *h, const char *type, const char *json,
          plugboard_outcome_t want, plugboard_result_t *r)
{
    cr_assert_eq(pb_harness_deliver(h, type, "ada@example.com", json, 1, r), 0);
    cr_assert_eq(r->outcome, want, "outcome %d, reason: %s", r->outcome,
                 r->reason);
}

/* One event encoded, so the same event (same id) can be sent again. */
static uint8_t *
s_frame(const char *type, const char *json, size_t *len)
{
    pb_builder_t *b = pb_builder_new("payments", type);
    cr_assert_not_null(b);
    json_error_t jerr;
    json_t *data = json_loads(json, 0, &jerr);
    cr_assert_not_null(data, "%s", jerr.text);
    const char *k;
    json_t *v;
    json_object_foreach(data, k, v)
    {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        cr_assert_eq(pb_builder_set_json(b, k, text, strlen(text)), 0);
        free(text);
    }
    json_decref(data);
    uint8_t *frame = NULL;
    cr_assert_eq(pb_builder_encode(b, &frame, len), 0);
    pb_builder_destroy(&b);
    return frame;
}

/* A temporary templates directory; file and text pairs, NULL-ended. */
static void
s_template_dir(const char *file, const char *text, ...)
{
    snprintf(s_templates, sizeof s_templates, "%s/templates", s_dir);
    mkdir(s_templates, 0700);
    va_list ap;
    va_start(ap, text);
    while (file) {
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", s_templates, file);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        file = va_arg(ap, const char *);
        text = file ? va_arg(ap, const char *) : NULL;
    }
    va_end(ap);
}

/* A self-signed certificate for 127.0.0.1 and localhost in s_dir. */
static void
s_make_cert(char *cert, char *key, size_t len)
{
    snprintf(cert, len, "%s/cert.pem", s_dir);
    snprintf(key, len, "%s/key.pem", s_dir);
    char cmd[9000];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "
             "/CN=localhost -addext "
             "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout '%s' "
             "-out '%s' >/dev/null 2>&1",
             key, cert);
    cr_assert_eq(system(cmd), 0, "openssl req failed");
}

static const char s_failed[] =
    "{\"customer\": {\"email\": \"ada@example.com\", \"name\": \"Ada "
    "Lovelace\", \"id\": \"cus_1\"},"
    " \"amount\": 1250, \"currency\": \"USD\","
    " \"payment\": {\"id\": \"pi_1\", \"description\": \"Pro plan, May\"},"
    " \"failure\": {\"code\": \"card_declined\","
    "  \"message\": \"Your card was declined.\"},"
    " \"invoice\": {\"id\": \"in_1\","
    "  \"url\": \"https://pay.example.com/i/in_1\"}}";

static void
s_setup(void)
{
    s_dir = pb_test_tempdir("pb-smtp");
    cr_assert_not_null(s_dir);
    snprintf(s_templates, sizeof s_templates, "%s", S_TEMPLATES);
    memset(&s_smtpd, 0, sizeof s_smtpd);
    s_port = 0;
    setenv(S_PASSWORD_ENV, "s3cret pass", 1);
    setenv(S_MAILGUN_KEY_ENV, S_MAILGUN_KEY, 1);
}

static void
s_teardown(void)
{
    s_server_stop();
    pb_test_rmtree(s_dir);
    free(s_dir);
    s_dir = NULL;
}

TestSuite(smtp, .init = s_setup, .fini = s_teardown,
          .description = "smtp connector: sending");
TestSuite(sendgrid, .init = s_setup, .fini = s_teardown,
          .description = "smtp connector: SendGrid event webhook");
TestSuite(mailgun, .init = s_setup, .fini = s_teardown,
          .description = "smtp connector: Mailgun webhooks");

/* ------------------------------------------------------------------ */
/* Sending                                                             */
/* ------------------------------------------------------------------ */

Test(smtp, failed_payment_reaches_the_server_well_formed)
{
    s_server_start(NULL);
    pb_harness_t *h = S_OPEN("reply_to=Support <support@example.com>");
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    cr_assert_eq(s_msg_count(), 1);
    s_msg_t m;
    s_msg_load(1, &m);
    cr_expect_str_eq(json_string_value(json_object_get(m.meta, "mail_from")),
                     "billing@example.com");
    char *rcpts = s_rcpts(&m);
    cr_expect_str_eq(rcpts, "ada@example.com");
    s_assert_lines(m.raw, 998);
    const char *body;
    char *headers = s_split(m.raw, &body);
    static const char *const required[] = {
        "Date",
        "From",
        "To",
        "Reply-To",
        "Subject",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Auto-Submitted",
        "X-Plugboard-Event-Id",
        "X-Plugboard-Event-Type",
    };
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        char *v = s_header(headers, required[i]);
        cr_expect_not_null(v, "missing header %s", required[i]);
        free(v);
    }
    cr_expect_eq(s_header_count(headers), 12, "%s", headers);
    cr_expect_null(s_header(headers, "Bcc"));
    char *to = s_header(headers, "To");
    char *from = s_header(headers, "From");
    char *subject = s_header(headers, "Subject");
    char *mid = s_header(headers, "Message-ID");
    char *date = s_header(headers, "Date");
    char *ctype = s_header(headers, "Content-Type");
    cr_expect_str_eq(to, "Ada Lovelace <ada@example.com>");
    cr_expect_str_eq(from, "Billing <billing@example.com>");
    cr_expect_str_eq(subject, "Action needed: your payment of 12.50 USD "
                              "didn't go through");
    cr_expect(mid[0] == '<' && strstr(mid, "@example.com>") != NULL, "%s", mid);
    cr_expect(strstr(date, " +0000") != NULL, "%s", date);
    cr_expect_str_eq(ctype, "text/plain; charset=UTF-8");
    char *text = s_qp_decode(body);
    cr_expect(strstr(text, "Hi Ada Lovelace,") != NULL, "%s", text);
    cr_expect(strstr(text, "Your card was declined.") != NULL, "%s", text);
    cr_expect(strstr(text, "https://pay.example.com/i/in_1") != NULL);
    cr_expect(strstr(text, "\r\n-- \r\n") != NULL, "signature separator");
    free(text);
    free(ctype);
    free(date);
    free(mid);
    free(subject);
    free(from);
    free(to);
    free(headers);
    free(rcpts);
    s_msg_release(&m);
}

Test(smtp, hostile_values_make_exactly_one_well_formed_message)
{
    s_template_dir("payment.failed.txt",
                   "Subject: Hello {{customer.name}}: {{note}}\n"
                   "\n"
                   "{{body}}\n",
                   NULL);
    s_server_start(NULL);
    pb_harness_t *h = S_OPEN("tls=none");

    /* a 2,000-octet line, lines that are or start with dots, a line that
     * mbox readers would mangle, non-ASCII */
    char *long_line = malloc(2001);
    memset(long_line, 'x', 2000);
    long_line[2000] = '\0';
    char *json = malloc(8000);
    snprintf(json, 8000,
             "{\"customer\": {\"email\": \"eve@example.com\","
             " \"name\": \"Eve\\r\\nBcc: attacker@evil.example\"},"
             " \"note\": \"Caf\\u00e9 \\r\\n.\\r\\nX-Injected: yes\","
             " \"body\": \"Line one\\n.\\n.leading dot\\n..two dots\\n%s\\n"
             "na\\u00efve caf\\u00e9 \\u2713\\nFrom here\\n.\"}",
             long_line);
    plugboard_result_t r;
    s_deliver(h, "payment.failed", json, PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    cr_assert_eq(s_msg_count(), 1, "exactly one message");
    s_msg_t m;
    s_msg_load(1, &m);
    char *rcpts = s_rcpts(&m);
    cr_expect_str_eq(rcpts, "eve@example.com", "only the configured field");
    s_assert_lines(m.raw, 998);
    const char *body;
    char *headers = s_split(m.raw, &body);
    cr_expect_eq(s_header_count(headers), 11, "%s", headers);
    cr_expect_null(strstr(headers, "\r\nBcc:"), "%s", headers);
    cr_expect_null(strstr(headers, "\r\nX-Injected:"), "%s", headers);
    char *to = s_header(headers, "To");
    cr_expect_str_eq(to, "\"Eve  Bcc: attacker@evil.example\" "
                         "<eve@example.com>");
    char *subject = s_header(headers, "Subject");
    char *decoded = s_decode_header(subject);
    cr_expect_str_eq(decoded, "Hello Eve  Bcc: attacker@evil.example: "
                              "Caf\xc3\xa9   .  X-Injected: yes");
    char *text = s_qp_decode(body);
    char *want = malloc(8000);
    snprintf(want, 8000,
             "Line one\r\n.\r\n.leading dot\r\n..two dots\r\n%s\r\n"
             "na\xc3\xafve caf\xc3\xa9 \xe2\x9c\x93\r\nFrom here\r\n.\r\n",
             long_line);
    cr_expect_str_eq(text, want);
    /* on the wire: a lone dot survived dot-stuffing, neither lost nor
     * doubled (the server removes one leading dot from each line) */
    cr_expect_not_null(memmem(body, strlen(body), "\r\n.\r\n", 5));
    cr_expect_not_null(memmem(body, strlen(body), "\r\n.leading dot\r\n", 16));
    cr_expect_not_null(memmem(body, strlen(body), "\r\n..two dots\r\n", 14));
    free(want);
    free(text);
    free(decoded);
    free(subject);
    free(to);
    free(headers);
    free(rcpts);
    s_msg_release(&m);
    free(json);
    free(long_line);
}

Test(smtp, html_template_makes_multipart_alternative)
{
    s_template_dir("payment.succeeded.txt",
                   "Subject: Receipt for {{amount|money}}\n\nThanks "
                   "{{customer.name}}, we got {{amount|money}}.\n",
                   "payment.succeeded.html",
                   "<p>Thanks <b>{{customer.name}}</b>, we got "
                   "{{amount|money}}.</p>\n",
                   NULL);
    s_server_start(NULL);
    pb_harness_t *h = S_OPEN("tls=none");
    plugboard_result_t r;
    s_deliver(h, "payment.succeeded",
              "{\"customer\": {\"email\": \"ada@example.com\","
              " \"name\": \"Ada <3 & co\"}, \"amount\": 500,"
              " \"currency\": \"EUR\"}",
              PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    s_msg_t m;
    s_msg_load(1, &m);
    s_assert_lines(m.raw, 998);
    const char *body;
    char *headers = s_split(m.raw, &body);
    char *ctype = s_header(headers, "Content-Type");
    cr_expect_null(s_header(headers, "Content-Transfer-Encoding"));
    const char *b = strstr(ctype, "boundary=\"");
    cr_assert_not_null(b, "%s", ctype);
    cr_expect(strncmp(ctype, "multipart/alternative;", 22) == 0, "%s", ctype);
    char boundary[128];
    snprintf(boundary, sizeof boundary, "\r\n--%.*s",
             (int)strcspn(b + 10, "\""), b + 10);
    const char *p1 = strstr(body, boundary + 2); /* first has no CRLF */
    cr_assert_not_null(p1);
    const char *p2 = strstr(p1 + 1, boundary);
    cr_assert_not_null(p2);
    const char *end = strstr(p2 + 1, boundary);
    cr_assert_not_null(end);
    cr_expect(strncmp(end + strlen(boundary), "--\r\n", 4) == 0);

    char *part1 = strndup(p1, (size_t)(p2 - p1) + 2);
    char *part2 = strndup(p2 + 2, (size_t)(end - p2));
    const char *t1, *t2;
    char *h1 = s_split(strchr(part1, '\n') + 1, &t1);
    char *h2 = s_split(strchr(part2, '\n') + 1, &t2);
    char *c1 = s_header(h1, "Content-Type");
    char *c2 = s_header(h2, "Content-Type");
    cr_expect_str_eq(c1, "text/plain; charset=UTF-8");
    cr_expect_str_eq(c2, "text/html; charset=UTF-8");
    char *text = s_qp_decode(t1);
    char *html = s_qp_decode(t2);
    cr_expect_str_eq(text, "Thanks Ada <3 & co, we got 5.00 EUR.\r\n");
    cr_expect_str_eq(html, "<p>Thanks <b>Ada &lt;3 &amp; co</b>, we got "
                           "5.00 EUR.</p>\r\n");
    free(html);
    free(text);
    free(c2);
    free(c1);
    free(h2);
    free(h1);
    free(part2);
    free(part1);
    free(ctype);
    free(headers);
    s_msg_release(&m);
}

Test(smtp, temporary_reply_retries_with_the_reply_text)
{
    s_server_start(NULL);
    s_rules("rcpt ada@example.com 451 4.3.0 mailbox busy, try again later\n");
    pb_harness_t *h = S_OPEN("tls=none");
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_expect(strstr(r.reason, "451 4.3.0 mailbox busy, try again later"), "%s",
              r.reason);
    cr_expect(strstr(r.reason, "<ada@example.com>"), "%s", r.reason);
    cr_expect_eq(s_msg_count(), 0);

    s_rules(""); /* the mailbox is free again: the retry goes through */
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    cr_expect_eq(s_msg_count(), 1);
    pb_harness_close(&h);
}

Test(smtp, permanent_reply_rejects_with_the_reply)
{
    s_server_start(NULL);
    s_rules("rcpt nobody@example.com 550 5.1.1 user unknown\n");
    pb_harness_t *h = S_OPEN("tls=none");
    plugboard_result_t r;
    s_deliver(h, "payment.failed",
              "{\"customer\": {\"email\": \"nobody@example.com\"}}",
              PLUGBOARD_REJECT, &r);
    cr_expect_str_eq(r.reason, "recipient <nobody@example.com> refused: 550 "
                               "5.1.1 user unknown");
    cr_expect_eq(s_msg_count(), 0);

    /* refused after the data: the message's own reply decides */
    s_rules("data 554 5.7.1 message rejected as spam\n");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_REJECT, &r);
    cr_expect_str_eq(r.reason,
                     "message refused: 554 5.7.1 message rejected as spam");
    s_rules("data 452 4.3.1 insufficient system storage\n");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_expect(strstr(r.reason, "452 4.3.1 insufficient system storage"), "%s",
              r.reason);
    s_rules("mail 553 5.7.1 sender not allowed\n");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_REJECT, &r);
    cr_expect_str_eq(r.reason, "sender <billing@example.com> refused: 553 "
                               "5.7.1 sender not allowed");
    cr_expect_eq(s_msg_count(), 0);
    pb_harness_close(&h);
}

/* A reason has room for 255 bytes: with the longest address a path may
 * hold and a long reply, the reply's code still shows, and a cut shows. */
Test(smtp, long_address_and_reply_keep_the_code_in_the_reason)
{
    char addr[PLUGBOARD_MAIL_ADDRESS_MAX + 1];
    memset(addr, 'a', 60);
    memset(addr + 60, 'b', 180);
    addr[30] = '@';
    addr[120] = '.';
    memcpy(addr + 240, ".example.com", 13); /* 252 octets */
    cr_assert(plugboard_mail_address_ok(addr, strlen(addr)));
    char rules[1024], json[512];
    snprintf(rules, sizeof rules,
             "rcpt %s 550 5.1.1 the mailbox you tried to reach does not "
             "exist; please check the address for typing errors and spaces "
             "and try again, or ask the recipient for another address they "
             "read more often than this one\n",
             addr);
    snprintf(json, sizeof json, "{\"customer\": {\"email\": \"%s\"}}", addr);
    s_server_start(NULL);
    s_rules(rules);
    pb_harness_t *h = S_OPEN("tls=none");
    plugboard_result_t r;
    s_deliver(h, "payment.failed", json, PLUGBOARD_REJECT, &r);
    pb_harness_close(&h);
    cr_expect_eq(s_msg_count(), 0);
    cr_expect(strncmp(r.reason, "recipient <aaaa", 15) == 0, "%s", r.reason);
    cr_expect(strstr(r.reason, ".example.com> refused: 550 5.1.1 the mailbox "
                               "you tried to reach does not exist") != NULL,
              "%s", r.reason);
    size_t n = strlen(r.reason);
    cr_expect(n >= 3 && strcmp(r.reason + n - 3, "...") == 0,
              "a cut is visible: %s", r.reason);
}

Test(smtp, server_down_retries)
{
    s_server_start(NULL);
    pb_harness_t *h = S_OPEN("tls=none", "connect_timeout=2s");
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    s_server_stop(); /* the kept connection dies with it */
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", s_port);
    cr_expect(strstr(r.reason, want) != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

Test(smtp, stall_after_the_data_retries_and_the_resend_keeps_message_id)
{
    s_server_start(NULL);
    s_rules("data-delay 4\n");
    pb_harness_t *h = S_OPEN("tls=none", "timeout=1s");
    size_t len = 0;
    uint8_t *frame = s_frame("payment.failed", s_failed, &len);
    plugboard_result_t r;
    /* the server answers after 4 s: a retry (not OK) shows that timeout
     * = 1s ended the wait */
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_RETRY, "%s", r.reason);
    cr_expect(strstr(r.reason, "outcome unknown") != NULL, "%s", r.reason);
    cr_expect(strstr(r.reason, "timeout") != NULL, "%s", r.reason);

    s_rules("");
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    pb_harness_close(&h);
    free(frame);

    /* the server kept the stalled copy too: same Message-ID on both */
    cr_assert_eq(s_msg_count(), 2);
    s_msg_t a, b;
    s_msg_load(1, &a);
    s_msg_load(2, &b);
    const char *body;
    char *ha = s_split(a.raw, &body);
    char *hb = s_split(b.raw, &body);
    char *ma = s_header(ha, "Message-ID");
    char *mb = s_header(hb, "Message-ID");
    cr_expect_str_eq(ma, mb);
    free(ma);
    free(mb);
    free(ha);
    free(hb);
    s_msg_release(&a);
    s_msg_release(&b);
}

Test(smtp, message_id_is_per_event_and_recipient)
{
    s_server_start(NULL);
    pb_harness_t *h = S_OPEN("tls=none");
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    s_msg_t a, b;
    s_msg_load(1, &a);
    s_msg_load(2, &b);
    const char *body;
    char *ha = s_split(a.raw, &body);
    char *hb = s_split(b.raw, &body);
    char *ma = s_header(ha, "Message-ID");
    char *mb = s_header(hb, "Message-ID");
    cr_expect_str_neq(ma, mb, "two events, two messages");
    free(ma);
    free(mb);
    free(ha);
    free(hb);
    s_msg_release(&a);
    s_msg_release(&b);
}

Test(smtp, refused_bcc_does_not_stop_delivery)
{
    s_server_start(NULL);
    s_rules("rcpt gone@example.com 550 5.1.1 no such user\n");
    pb_harness_t *h =
        S_OPEN("tls=none", "bcc=archive@example.com, gone@example.com");
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    /* delivered, and the reason the journal keeps with the attempt names
     * the copy that was refused */
    cr_expect(strstr(r.reason, "bcc <gone@example.com> refused: 550 5.1.1 "
                               "no such user") != NULL,
              "%s", r.reason);
    cr_expect_null(strstr(r.reason, "archive@example.com"), "%s", r.reason);
    cr_assert_eq(s_msg_count(), 1);
    s_msg_t m;
    s_msg_load(1, &m);
    char *rcpts = s_rcpts(&m);
    cr_expect_str_eq(rcpts, "ada@example.com,archive@example.com");
    cr_expect_null(strstr(m.raw, "archive@example.com"), "bcc is not shown");

    /* the primary recipient refused: that decides, whatever bcc got */
    s_rules("rcpt ada@example.com 550 5.1.1 user unknown\n");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_REJECT, &r);
    cr_expect(strstr(r.reason, "<ada@example.com> refused: 550 5.1.1 user "
                               "unknown"),
              "%s", r.reason);

    /* everyone refused, the primary only for now: retried, and the
     * reason is the primary's */
    s_rules("rcpt ada@example.com 450 4.2.1 try later\n"
            "rcpt archive@example.com 550 5.1.1 gone\n"
            "rcpt gone@example.com 550 5.1.1 gone\n");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_expect_str_eq(r.reason, "recipient <ada@example.com> refused: 450 "
                               "4.2.1 try later");
    cr_expect_eq(s_msg_count(), 2, "the archive copy of the REJECT case only");
    free(rcpts);
    s_msg_release(&m);
    pb_harness_close(&h);
}

Test(smtp, starttls_and_auth)
{
    char cert[4300], key[4300], ca[4400];
    s_make_cert(cert, key, sizeof cert);
    s_server_start((const char *const[]){"--cert", cert, "--key", key,
                                         "--starttls", "--auth",
                                         "mailer:s3cret pass", NULL});
    snprintf(ca, sizeof ca, "ca_file=%s", cert);
    pb_harness_t *h =
        S_OPEN("tls=starttls", ca, "username=mailer",
               "password=env:" S_PASSWORD_ENV, "helo=app.example");
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    s_msg_t m;
    s_msg_load(1, &m);
    cr_expect(json_is_true(json_object_get(m.meta, "tls")));
    cr_expect_str_eq(json_string_value(json_object_get(m.meta, "auth")),
                     "mailer");
    char *log = s_session_log();
    const char *tls = strstr(log, "STARTTLS");
    const char *auth = strstr(log, "AUTH");
    cr_expect(tls && auth && tls < auth, "STARTTLS before AUTH:\n%s", log);
    cr_expect(strstr(log, "EHLO app.example") != NULL, "%s", log);
    free(log);
    s_msg_release(&m);

    /* a wrong password is a permanent refusal; the secret stays out of
     * the reason */
    setenv("PB_TEST_WRONG_PASSWORD", "not it", 1);
    h = S_OPEN("tls=starttls", ca, "username=mailer",
               "password=env:PB_TEST_WRONG_PASSWORD");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_REJECT, &r);
    cr_expect(
        strncmp(r.reason, "authentication as 'mailer' refused: 535", 39) == 0,
        "%s", r.reason);
    cr_expect_null(strstr(r.reason, "not it"));
    cr_expect_eq(s_msg_count(), 1);
    /* the host is told the login was refused, without the secret */
    cr_assert_eq(plugboard_harness_auth_failed_count(h), 1);
    const char *told = plugboard_harness_auth_failed_reason(h, 0);
    cr_expect(strstr(told, "535") && !strstr(told, "not it"), "%s", told);
    pb_harness_close(&h);
}

Test(smtp, starttls_required_never_falls_back_to_plaintext)
{
    /* a careless server: no STARTTLS, AUTH offered in the clear */
    s_server_start((const char *const[]){"--auth", "mailer:s3cret pass",
                                         "--auth-plaintext", NULL});
    pb_harness_t *h = S_OPEN("tls=starttls", "username=mailer",
                             "password=env:" S_PASSWORD_ENV);
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_expect(strstr(r.reason, "STARTTLS") != NULL, "%s", r.reason);
    pb_harness_close(&h);
    char *log = s_session_log();
    cr_expect_null(strstr(log, "AUTH"), "no AUTH in plaintext:\n%s", log);
    cr_expect_eq(s_msg_count(), 0);
    free(log);
}

Test(smtp, implicit_tls)
{
    char cert[4300], key[4300], ca[4400], url[64];
    s_make_cert(cert, key, sizeof cert);
    s_server_start((const char *const[]){"--cert", cert, "--key", key,
                                         "--implicit-tls", NULL});
    snprintf(ca, sizeof ca, "ca_file=%s", cert);
    snprintf(url, sizeof url, "url=smtps://127.0.0.1:%d", s_port);
    pb_harness_t *h = S_OPEN(url, "tls=implicit", ca);
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    s_msg_t m;
    s_msg_load(1, &m);
    cr_expect(json_is_true(json_object_get(m.meta, "tls")));
    s_msg_release(&m);
}

Test(smtp, untrusted_certificate_retries_and_sends_nothing)
{
    char cert[4300], key[4300], other[4400];
    s_make_cert(cert, key, sizeof cert);
    s_server_start((const char *const[]){"--cert", cert, "--key", key,
                                         "--starttls", NULL});
    /* trust some other CA than the one that signed the server's cert */
    snprintf(other, sizeof other, "ca_file=%s/other.pem", s_dir);
    char cmd[9000];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=other "
             "-keyout '%s/other.key' -out '%s/other.pem' >/dev/null 2>&1",
             s_dir, s_dir);
    cr_assert_eq(system(cmd), 0);
    pb_harness_t *h = S_OPEN("tls=starttls", other);
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_expect(strcasestr(r.reason, "certificate") != NULL, "%s", r.reason);
    cr_expect_eq(s_msg_count(), 0);
    pb_harness_close(&h);
}

Test(smtp, open_refuses_unsafe_or_wrong_settings)
{
    s_port = 2525;
    static const struct {
        const char *a, *b, *c;
        const char *needle;
    } cases[] = {
        {"url=smtp://mail.example.com:25", "tls=none", NULL, "loopback"},
        {"url=smtps://127.0.0.1:465", "tls=starttls", NULL, "smtps://"},
        {"url=smtp://127.0.0.1:25", "tls=implicit", NULL, "smtps://"},
        {"url=http://127.0.0.1:25", NULL, NULL, "scheme"},
        {"url=smtp://u:p@127.0.0.1:25", NULL, NULL, "credentials"},
        {"url=smtp://127.0.0.1:25/x?y", NULL, NULL, "path"},
        {"tls=maybe", NULL, NULL, "'tls'"},
        {"from=Billing", NULL, NULL, "'from'"},
        {"to=a@b, c@d", NULL, NULL, "'to'"},
        {"bcc=archive@example.com, not an address", NULL, NULL, "'bcc'"},
        {"envelope_from=Bounces <b@example.com>", NULL, NULL,
         "'envelope_from'"},
        {"password=env:" S_PASSWORD_ENV, NULL, NULL, "'username'"},
        {"templates=/nonexistent/templates", NULL, NULL,
         "/nonexistent/templates"},
        {"webhook_provider=postmark", NULL, NULL, "'webhook_provider'"},
        {"webhook_provider=sendgrid", NULL, NULL, "'sendgrid_public_key'"},
        {"webhook_provider=sendgrid", "sendgrid_public_key=bm90IGEga2V5", NULL,
         "'sendgrid_public_key'"},
        {"webhook_provider=mailgun", NULL, NULL, "'mailgun_signing_key'"},
        {"mailgun_signing_key=env:" S_MAILGUN_KEY_ENV, NULL, NULL,
         "'webhook_provider'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *err = s_open_fails(
            (const char *const[]){cases[i].a, cases[i].b, cases[i].c, NULL});
        cr_expect(strstr(err, cases[i].needle) != NULL,
                  "case %zu: '%s' lacks '%s'", i, err, cases[i].needle);
        free(err);
    }
    /* nothing to do at all */
    const char *nothing[] = {"templates=" S_TEMPLATES, NULL};
    char err[512] = "";
    cr_expect_null(pb_harness_open(S_PLUGIN, NULL, nothing, err, sizeof err));
    cr_expect(strstr(err, "'url'") && strstr(err, "'webhook_provider'"), "%s",
              err);
}

Test(smtp, recipients_come_only_from_the_configured_field)
{
    s_server_start(NULL);
    static const char *const bad[] = {
        "",
        "ada",
        "ada@@example.com",
        "Ada <ada@example.com>",
        "ada@example.com, eve@evil.example",
        "ada@example.com\\r\\nRCPT TO:<eve@evil.example>",
        "ada@exa mple.com",
    };
    pb_harness_t *h = S_OPEN("tls=none");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"customer\": {\"email\": \"%s\"}}",
                 bad[i]);
        plugboard_result_t r;
        s_deliver(h, "payment.failed", json, PLUGBOARD_REJECT, &r);
        cr_expect(strstr(r.reason, "'customer.email'") != NULL, "%s", r.reason);
    }
    pb_harness_close(&h);
    cr_expect_eq(s_msg_count(), 0);

    h = S_OPEN("tls=none", "to_field=contact.email");
    plugboard_result_t r;
    s_deliver(h, "contact.upserted",
              "{\"contact\": {\"email\": \"bob@example.com\", \"name\": "
              "\"Bob\"}, \"customer\": {\"email\": \"not-this@example.com\"}}",
              PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    s_msg_t m;
    s_msg_load(1, &m);
    char *rcpts = s_rcpts(&m);
    cr_expect_str_eq(rcpts, "bob@example.com");
    const char *body;
    char *headers = s_split(m.raw, &body);
    char *to = s_header(headers, "To");
    cr_expect_str_eq(to, "Bob <bob@example.com>");
    free(to);
    free(headers);
    free(rcpts);
    s_msg_release(&m);
}

Test(smtp, non_ascii_recipient_name_is_encoded)
{
    s_server_start(NULL);
    pb_harness_t *h = S_OPEN("tls=none");
    plugboard_result_t r;
    s_deliver(h, "payment.failed",
              "{\"customer\": {\"email\": \"zoe@example.com\","
              " \"name\": \"Zo\\u00eb \\u00dcnicode\"},"
              " \"amount\": 1250, \"currency\": \"USD\"}",
              PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    s_msg_t m;
    s_msg_load(1, &m);
    s_assert_lines(m.raw, 998);
    const char *body;
    char *headers = s_split(m.raw, &body);
    char *to = s_header(headers, "To");
    const char *lt = strstr(to, " <zoe@example.com>");
    cr_assert_not_null(lt, "%s", to);
    char *name = strndup(to, (size_t)(lt - to));
    char *decoded = s_decode_header(name);
    cr_expect_str_eq(decoded, "Zo\xc3\xab \xc3\x9cnicode");
    free(decoded);
    free(name);
    free(to);
    free(headers);
    s_msg_release(&m);
}

static const char s_dead[] =
    "{\"route\": \"failed-payment-follow-up\", \"destination\": \"crm\","
    " \"why\": \"finance chased failed cards by hand\","
    " \"owner\": \"billing-team@example.com\","
    " \"on_failure\": \"the customer is never asked to update the card\","
    " \"attempts\": 10, \"last_error\": \"HTTP 503 from api.hubapi.com\","
    " \"reason\": \"exhausted\","
    " \"event\": {\"id\": \"01HXAMPLE\", \"type\": \"payment.failed\","
    "  \"key\": \"ada@example.com\"}}";

Test(smtp, dead_letter_notice_goes_to_the_route_owner)
{
    s_server_start(NULL);
    pb_harness_t *h = S_OPEN("tls=none");
    plugboard_result_t r;
    s_deliver(h, "plugboard.delivery.dead", s_dead, PLUGBOARD_OK, &r);
    s_deliver(h, "plugboard.delivery.dead", "{\"route\": \"r\"}",
              PLUGBOARD_REJECT, &r);
    cr_expect(strstr(r.reason, "'owner'") != NULL, "%s", r.reason);
    pb_harness_close(&h);
    s_msg_t m;
    s_msg_load(1, &m);
    char *rcpts = s_rcpts(&m);
    cr_expect_str_eq(rcpts, "billing-team@example.com");
    const char *body;
    char *headers = s_split(m.raw, &body);
    char *subject = s_header(headers, "Subject");
    cr_expect(strstr(subject, "failed-payment-follow-up") != NULL, "%s",
              subject);
    char *text = s_qp_decode(body);
    cr_expect(strstr(text, "HTTP 503 from api.hubapi.com") != NULL, "%s", text);
    free(text);
    free(subject);
    free(headers);
    free(rcpts);
    s_msg_release(&m);
}

Test(smtp, webhooks_not_configured_answer_400)
{
    s_port = 2525;
    pb_harness_t *h = S_OPEN("tls=none");
    int status = 0;
    char *body = NULL;
    cr_assert_eq(pb_harness_webhook(h, "POST", NULL, "[]", 2, &status, &body),
                 0);
    cr_expect_eq(status, 400);
    cr_expect(strstr(body, "webhooks not configured") != NULL, "%s", body);
    cr_expect_eq(pb_harness_emitted_count(h), 0);
    free(body);
    pb_harness_close(&h);
}

Test(smtp, describes_itself)
{
    s_port = 2525;
    pb_harness_t *h = S_OPEN("tls=none");
    const plugboard_connector_t *d = pb_harness_descriptor(h);
    cr_expect_str_eq(d->name, "smtp");
    static const char *const consumes[] = {
        "payment.failed",        "payment.succeeded",       "payment.refunded",
        "subscription.canceled", "dispute.opened",          "contact.upserted",
        "ticket.created",        "ticket.updated",          "ticket.solved",
        "email.bounced",         "plugboard.delivery.dead",
    };
    for (size_t i = 0; i < sizeof consumes / sizeof *consumes; i++) {
        bool found = false;
        for (size_t k = 0; d->consumes[k]; k++)
            found = found || strcmp(d->consumes[k], consumes[i]) == 0;
        cr_expect(found, "consumes %s", consumes[i]);
    }
    size_t emits = 0;
    while (d->emits[emits])
        emits++;
    cr_expect_eq(emits, 3);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Webhooks: helpers                                                   */
/* ------------------------------------------------------------------ */

/* The i-th emitted event as JSON (json_decref). */
static json_t *
s_emitted(pb_harness_t *h, size_t i)
{
    const pb_envelope_t *env = pb_harness_emitted(h, i);
    cr_assert_not_null(env, "no emitted event %zu", i);
    char *text = pb_event_to_json(env);
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    free(text);
    cr_assert_not_null(doc);
    return doc;
}

/* A string at a dotted path of an emitted event's JSON, or NULL. */
static const char *
s_at(json_t *doc, const char *path)
{
    char seg[64];
    json_t *v = doc;
    while (v && *path) {
        size_t n = strcspn(path, ".");
        snprintf(seg, sizeof seg, "%.*s", (int)n, path);
        path += n + (path[n] == '.');
        v = json_object_get(v, seg);
    }
    return json_string_value(v);
}

static int
s_post(pb_harness_t *h, const char *const *headers, const void *body,
       size_t len, char **resp)
{
    int status = 0;
    cr_assert_eq(
        pb_harness_webhook(h, "POST", headers, body, len, &status, resp), 0);
    return status;
}

static char *
s_fixture(const char *name, size_t *len)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", S_FIXTURES, name);
    char *text = pb_test_read_file(path, len);
    cr_assert_not_null(text, "cannot read %s", path);
    return text;
}

static pb_harness_t *
s_open_sendgrid(const char *key_b64)
{
    char key[512];
    snprintf(key, sizeof key, "sendgrid_public_key=%s", key_b64);
    const char *settings[] = {"webhook_provider=sendgrid", key, NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(S_PLUGIN, "mail-events", settings, err, sizeof err);
    cr_assert_not_null(h, "open: %s", err);
    return h;
}

/* A P-256 key made for the test, its public half as SendGrid shows it. */
static EVP_PKEY *
s_sg_keygen(char *pub_b64, size_t len)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cr_assert_not_null(k);
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    cr_assert_gt(n, 0);
    cr_assert_lt((size_t)(4 * ((n + 2) / 3) + 1), len);
    plugboard_base64_encode(der, (size_t)n, pub_b64);
    OPENSSL_free(der);
    return k;
}

/* The signature header value for ts + body under k. */
static void
s_sg_sign(EVP_PKEY *k, const char *ts, const void *body, size_t len, char *out,
          size_t out_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char sig[256];
    size_t sig_len = sizeof sig;
    cr_assert_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
    cr_assert_eq(EVP_DigestSignUpdate(ctx, ts, strlen(ts)), 1);
    cr_assert_eq(EVP_DigestSignUpdate(ctx, body, len), 1);
    cr_assert_eq(EVP_DigestSignFinal(ctx, sig, &sig_len), 1);
    EVP_MD_CTX_free(ctx);
    cr_assert_lt(4 * ((sig_len + 2) / 3) + 1, out_len);
    plugboard_base64_encode(sig, sig_len, out);
}

/* POST body signed now with k; returns the status. */
static int
s_sg_post(pb_harness_t *h, EVP_PKEY *k, const char *body, size_t len,
          char **resp)
{
    char ts[32], sig[256], sig_h[320], ts_h[80];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    s_sg_sign(k, ts, body, len, sig, sizeof sig);
    snprintf(sig_h, sizeof sig_h, "X-Twilio-Email-Event-Webhook-Signature: %s",
             sig);
    snprintf(ts_h, sizeof ts_h, "X-Twilio-Email-Event-Webhook-Timestamp: %s",
             ts);
    const char *headers[] = {"Content-Type: application/json", sig_h, ts_h,
                             NULL};
    return s_post(h, headers, body, len, resp);
}

/* ------------------------------------------------------------------ */
/* SendGrid                                                            */
/* ------------------------------------------------------------------ */

Test(sendgrid, vendor_vector_verifies)
{
    size_t len = 0;
    char *payload = s_fixture("sendgrid/signature_vector_payload.raw", &len);
    cr_assert_eq(len, 327);
    const char *headers[] = {
        "X-Twilio-Email-Event-Webhook-Signature: " S_SG_SIG,
        "X-Twilio-Email-Event-Webhook-Timestamp: " S_SG_TS, NULL};

    /* genuine: refused only because it is from 2020 */
    pb_harness_t *h = s_open_sendgrid(S_SG_KEY);
    char *resp = NULL;
    cr_expect_eq(s_post(h, headers, payload, len, &resp), 400);
    cr_expect(strstr(resp, "genuine signature") != NULL, "%s", resp);
    free(resp);

    /* one byte changed, or the trailing CRLF dropped: forged */
    payload[10] ^= 1;
    cr_expect_eq(s_post(h, headers, payload, len, &resp), 400);
    cr_expect(strstr(resp, "does not verify") != NULL, "%s", resp);
    free(resp);
    payload[10] ^= 1;
    cr_expect_eq(s_post(h, headers, payload, len - 2, &resp), 400);
    cr_expect(strstr(resp, "does not verify") != NULL, "%s", resp);
    free(resp);
    cr_expect_eq(pb_harness_emitted_count(h), 0);
    pb_harness_close(&h);

    /* the SDK test's other key does not verify the vector */
    h = s_open_sendgrid(S_SG_OTHER_KEY);
    cr_expect_eq(s_post(h, headers, payload, len, &resp), 400);
    cr_expect(strstr(resp, "does not verify") != NULL, "%s", resp);
    free(resp);
    cr_expect_eq(pb_harness_emitted_count(h), 0);
    pb_harness_close(&h);
    free(payload);
}

Test(sendgrid, batch_maps_each_event)
{
    char pub[256];
    EVP_PKEY *k = s_sg_keygen(pub, sizeof pub);
    pb_harness_t *h = s_open_sendgrid(pub);
    size_t len = 0;
    char *body = s_fixture(
        "sendgrid/event_webhook_batch_all_types.docs_example.json", &len);
    char *resp = NULL;
    cr_assert_eq(s_sg_post(h, k, body, len, &resp), 200, "%s", resp);
    cr_expect_str_eq(resp, "{\"received\":true,\"events\":4,\"ignored\":7,"
                           "\"unknown\":0,\"malformed\":0}");
    free(resp);
    cr_assert_eq(pb_harness_emitted_count(h), 4);

    json_t *e = s_emitted(h, 0);
    cr_expect_str_eq(s_at(e, "type"), "email.delivered");
    cr_expect_str_eq(s_at(e, "key"), "example@test.com");
    cr_expect_eq(json_integer_value(json_object_get(e, "time")),
                 1513299569000LL);
    cr_expect_str_eq(s_at(e, "data.customer.email"), "example@test.com");
    cr_expect_str_eq(s_at(e, "data.email.vendor"), "sendgrid");
    cr_expect_str_eq(s_at(e, "data.email.message_id"),
                     "14c5d75ce93.dfd.64b469@ismtpd-555");
    cr_expect_str_eq(s_at(e, "data.email.provider_message_id"),
                     "sg_message_id");
    cr_expect_str_eq(s_at(e, "data.email.response"), "250 OK");
    cr_expect_str_eq(
        json_string_value(json_array_get(
            json_object_get(
                json_object_get(json_object_get(e, "data"), "email"), "tags"),
            0)),
        "cat facts");
    cr_expect(strncmp(s_at(e, "dedupe"), "sendgrid:fp:", 12) == 0);
    json_decref(e);

    e = s_emitted(h, 1);
    cr_expect_str_eq(s_at(e, "type"), "email.bounced");
    cr_expect_str_eq(s_at(e, "data.bounce.type"), "hard");
    cr_expect_str_eq(s_at(e, "data.bounce.code"), "5.0.0");
    cr_expect_str_eq(s_at(e, "data.bounce.reason"), "500 unknown recipient");
    json_decref(e);
    e = s_emitted(h, 2);
    cr_expect_str_eq(s_at(e, "type"), "email.bounced");
    cr_expect_str_eq(s_at(e, "data.bounce.type"), "blocked");
    cr_expect_str_eq(s_at(e, "data.bounce.reason"), "Bounced Address");
    json_decref(e);
    e = s_emitted(h, 3);
    cr_expect_str_eq(s_at(e, "type"), "email.complained");
    json_decref(e);

    /* the blocked example */
    pb_harness_clear(h);
    free(body);
    body = s_fixture("sendgrid/event_webhook_blocked.docs_example.json", &len);
    cr_assert_eq(s_sg_post(h, k, body, len, NULL), 200);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    e = s_emitted(h, 0);
    cr_expect_str_eq(s_at(e, "data.bounce.type"), "blocked");
    cr_expect_str_eq(s_at(e, "data.vendor.sendgrid.sg_event_id"),
                     "6g4ZI7SA-xmRDv57GoPIPw==");
    json_decref(e);
    free(body);

    /* processed only: acknowledged, nothing to emit */
    pb_harness_clear(h);
    body = s_fixture(
        "sendgrid/event_webhook_processed_with_pool.docs_example.json", &len);
    cr_expect_eq(s_sg_post(h, k, body, len, NULL), 200);
    cr_expect_eq(pb_harness_emitted_count(h), 0);
    free(body);
    pb_harness_close(&h);
    EVP_PKEY_free(k);
}

Test(sendgrid, forged_stale_and_reencoded_bodies_are_refused)
{
    char pub[256];
    EVP_PKEY *k = s_sg_keygen(pub, sizeof pub);
    pb_harness_t *h = s_open_sendgrid(pub);
    size_t len = 0;
    char *body =
        s_fixture("sendgrid/event_webhook_blocked.docs_example.json", &len);
    char ts[32], sig[256], sig_h[320], ts_h[80];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    s_sg_sign(k, ts, body, len, sig, sizeof sig);
    snprintf(sig_h, sizeof sig_h, "X-Twilio-Email-Event-Webhook-Signature: %s",
             sig);
    snprintf(ts_h, sizeof ts_h, "X-Twilio-Email-Event-Webhook-Timestamp: %s",
             ts);
    const char *headers[] = {sig_h, ts_h, NULL};

    /* re-encoded: the same JSON, compacted */
    json_t *doc = json_loadb(body, len, 0, NULL);
    char *compact = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *resp = NULL;
    cr_expect_eq(s_post(h, headers, compact, strlen(compact), &resp), 400);
    cr_expect(strstr(resp, "does not verify") != NULL, "%s", resp);
    free(resp);
    /* signed for another timestamp */
    char other_ts[80];
    snprintf(other_ts, sizeof other_ts,
             "X-Twilio-Email-Event-Webhook-Timestamp: %lld",
             (long long)time(NULL) - 1);
    const char *moved[] = {sig_h, other_ts, NULL};
    cr_expect_eq(s_post(h, moved, body, len, NULL), 400);
    /* no signature at all */
    const char *none[] = {ts_h, NULL};
    cr_expect_eq(s_post(h, none, body, len, NULL), 400);
    /* stale: genuinely signed an hour ago */
    char old[32];
    snprintf(old, sizeof old, "%lld", (long long)time(NULL) - 3600);
    s_sg_sign(k, old, body, len, sig, sizeof sig);
    snprintf(sig_h, sizeof sig_h, "X-Twilio-Email-Event-Webhook-Signature: %s",
             sig);
    snprintf(ts_h, sizeof ts_h, "X-Twilio-Email-Event-Webhook-Timestamp: %s",
             old);
    cr_expect_eq(s_post(h, headers, body, len, &resp), 400);
    cr_expect(strstr(resp, "older than") != NULL, "%s", resp);
    free(resp);
    cr_expect_eq(pb_harness_emitted_count(h), 0);

    /* and the untouched request is accepted */
    cr_expect_eq(s_sg_post(h, k, body, len, NULL), 200);
    cr_expect_eq(pb_harness_emitted_count(h), 1);
    free(compact);
    json_decref(doc);
    free(body);
    pb_harness_close(&h);
    EVP_PKEY_free(k);
}

Test(sendgrid, a_malformed_event_does_not_fail_the_batch)
{
    char pub[256];
    EVP_PKEY *k = s_sg_keygen(pub, sizeof pub);
    pb_harness_t *h = s_open_sendgrid(pub);
    static const char body[] =
        "[{\"email\":\"Ada@Example.COM\",\"timestamp\":1700000000,"
        "\"event\":\"delivered\",\"sg_message_id\":\"m1\","
        "\"asm_group_id\":123456789012345678901234567890,"
        "\"big_id\":9007199254740993},"
        " {\"timestamp\":1700000000,\"event\":\"bounce\"},"
        " 42,"
        " {\"email\":\"ada@example.com\",\"event\":\"teleported\"},"
        " {\"email\":\"bob@example.com\",\"timestamp\":1700000001,"
        "\"event\":\"spamreport\",\"category\":[\"a\",\"b\"]}]";
    char *resp = NULL;
    cr_assert_eq(s_sg_post(h, k, body, strlen(body), &resp), 200, "%s", resp);
    cr_expect_str_eq(resp, "{\"received\":true,\"events\":2,\"ignored\":0,"
                           "\"unknown\":1,\"malformed\":2}");
    free(resp);
    /* each malformed event is kept alone as a dead letter of the
     * connector (staged first), the good ones are routed */
    cr_assert_eq(pb_harness_emitted_count(h), 4);
    json_t *e = s_emitted(h, 0);
    cr_expect_str_eq(s_at(e, "type"), PLUGBOARD_EV_INGRESS_UNMAPPED);
    cr_expect_str_eq(s_at(e, "data.reason"),
                     "sendgrid event: no valid \"email\"");
    cr_expect_str_eq(s_at(e, "data.payload"),
                     "{\"timestamp\":1700000000,\"event\":\"bounce\"}");
    cr_expect(strncmp(s_at(e, "dedupe"), "sendgrid:unmapped:", 18) == 0);
    json_decref(e);
    e = s_emitted(h, 1);
    cr_expect_str_eq(s_at(e, "type"), PLUGBOARD_EV_INGRESS_UNMAPPED);
    cr_expect_str_eq(s_at(e, "data.reason"),
                     "sendgrid event: not a JSON object");
    cr_expect_str_eq(s_at(e, "data.payload"), "42");
    json_decref(e);
    e = s_emitted(h, 2);
    cr_expect_str_eq(s_at(e, "data.customer.email"), "ada@example.com");
    cr_expect_str_eq(s_at(e, "key"), "ada@example.com");
    json_decref(e);
    e = s_emitted(h, 3);
    cr_expect_str_eq(s_at(e, "type"), "email.complained");
    json_decref(e);

    /* duplicate keys make a document invalid (the SDK's one rule): the
     * genuine request is acknowledged, nothing is emitted */
    pb_harness_clear(h);
    static const char dup[] =
        "[{\"email\":\"ada@example.com\",\"event\":\"delivered\","
        "\"email\":\"eve@example.com\"}]";
    cr_expect_eq(s_sg_post(h, k, dup, strlen(dup), &resp), 200);
    cr_expect(strstr(resp, "\"events\":0") && strstr(resp, "\"malformed\":1"),
              "%s", resp);
    free(resp);
    cr_expect_eq(pb_harness_emitted_count(h), 1, "the body's dead letter");
    e = s_emitted(h, 0);
    cr_expect_str_eq(s_at(e, "type"), PLUGBOARD_EV_INGRESS_UNMAPPED);
    cr_expect_str_eq(s_at(e, "data.payload"), dup);
    json_decref(e);
    pb_harness_close(&h);
    EVP_PKEY_free(k);
}

Test(sendgrid, a_reposted_event_keeps_its_dedupe_id)
{
    char pub[256];
    EVP_PKEY *k = s_sg_keygen(pub, sizeof pub);
    pb_harness_t *h = s_open_sendgrid(pub);
    static const char first[] =
        "[{\"email\":\"ada@example.com\",\"timestamp\":1700000000,"
        "\"event\":\"bounce\",\"sg_event_id\":\"id-one\","
        "\"sg_message_id\":\"m1\",\"reason\":\"550 no such user\"}]";
    static const char again[] = /* re-posted with a new sg_event_id */
        "[{\"email\":\"ada@example.com\",\"timestamp\":1700000000,"
        "\"event\":\"bounce\",\"sg_event_id\":\"id-two\","
        "\"sg_message_id\":\"m1\",\"reason\":\"550 no such user\"}]";
    static const char other[] = /* a different bounce, no sg_event_id */
        "[{\"email\":\"ada@example.com\",\"timestamp\":1700000500,"
        "\"event\":\"bounce\",\"sg_message_id\":\"m2\","
        "\"reason\":\"550 no such user\"}]";
    cr_assert_eq(s_sg_post(h, k, first, strlen(first), NULL), 200);
    cr_assert_eq(s_sg_post(h, k, again, strlen(again), NULL), 200);
    cr_assert_eq(s_sg_post(h, k, other, strlen(other), NULL), 200);
    cr_assert_eq(pb_harness_emitted_count(h), 3);
    json_t *a = s_emitted(h, 0), *b = s_emitted(h, 1), *c = s_emitted(h, 2);
    cr_expect_str_eq(s_at(a, "dedupe"), s_at(b, "dedupe"));
    cr_expect_str_neq(s_at(a, "dedupe"), s_at(c, "dedupe"));
    cr_expect_str_eq(s_at(a, "data.bounce.code"), "550");
    json_decref(a);
    json_decref(b);
    json_decref(c);
    pb_harness_close(&h);
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------------ */
/* Mailgun                                                             */
/* ------------------------------------------------------------------ */

static pb_harness_t *
s_open_mailgun(const char *key_ref)
{
    char key[128];
    snprintf(key, sizeof key, "mailgun_signing_key=%s", key_ref);
    const char *settings[] = {"webhook_provider=mailgun", key, NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(S_PLUGIN, "mail-events", settings, err, sizeof err);
    cr_assert_not_null(h, "open: %s", err);
    return h;
}

/* The fixture re-signed age_s seconds ago with a fresh token (malloc'd
 * JSON text). */
static char *
s_mg_signed(const char *fixture, const char *token, long long age_s)
{
    size_t len = 0;
    char *text = s_fixture(fixture, &len);
    json_t *doc = json_loadb(text, len, 0, NULL);
    cr_assert_not_null(doc);
    free(text);
    char ts[32], msg[160], hex[65];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL) - age_s);
    snprintf(msg, sizeof msg, "%s%s", ts, token);
    uint8_t mac[PLUGBOARD_SHA256_LEN];
    plugboard_hmac_sha256(S_MAILGUN_KEY, strlen(S_MAILGUN_KEY), msg,
                          strlen(msg), mac);
    plugboard_hex_encode(mac, sizeof mac, hex);
    json_t *sig = json_object_get(doc, "signature");
    json_object_set_new(sig, "timestamp", json_string(ts));
    json_object_set_new(sig, "token", json_string(token));
    json_object_set_new(sig, "signature", json_string(hex));
    char *out = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return out;
}

/* The fixture re-signed now with a fresh token (malloc'd JSON text). */
static char *
s_mg_fresh(const char *fixture, const char *token)
{
    return s_mg_signed(fixture, token, 0);
}

Test(mailgun, derived_vectors_verify)
{
    static const char *const files[] = {
        "mailgun/event_delivered.anymail_fixture.json",
        "mailgun/event_failed_permanent.anymail_fixture.json",
    };
    pb_harness_t *good = s_open_mailgun("env:" S_MAILGUN_KEY_ENV);
    setenv("PB_TEST_WRONG_KEY", "not-the-key", 1);
    pb_harness_t *wrong = s_open_mailgun("env:PB_TEST_WRONG_KEY");
    for (size_t i = 0; i < 2; i++) {
        size_t len = 0;
        char *body = s_fixture(files[i], &len);
        char *resp = NULL;
        /* genuine: refused only because it is from 2018 */
        cr_expect_eq(s_post(good, NULL, body, len, &resp), 400);
        cr_expect(strstr(resp, "genuine signature") != NULL, "%s", resp);
        free(resp);
        cr_expect_eq(s_post(wrong, NULL, body, len, &resp), 400);
        cr_expect(strstr(resp, "does not verify") != NULL, "%s", resp);
        free(resp);
        free(body);
    }
    cr_expect_eq(pb_harness_emitted_count(good), 0);
    cr_expect_eq(pb_harness_emitted_count(wrong), 0);
    pb_harness_close(&good);
    pb_harness_close(&wrong);
}

Test(mailgun, delivered_and_failed_events_map)
{
    pb_harness_t *h = s_open_mailgun("env:" S_MAILGUN_KEY_ENV);
    char *body = s_mg_fresh("mailgun/event_delivered.anymail_fixture.json",
                            "651869375b9df3c98fc15c4889b102119add1235c38fc9"
                            "2899");
    char *resp = NULL;
    cr_assert_eq(s_post(h, NULL, body, strlen(body), &resp), 200, "%s", resp);
    free(resp);
    free(body);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    json_t *e = s_emitted(h, 0);
    cr_expect_str_eq(s_at(e, "type"), "email.delivered");
    cr_expect_str_eq(s_at(e, "key"), "recipient@example.com");
    cr_expect_str_eq(s_at(e, "dedupe"), "mailgun:hTWCTD81RtiDN-...");
    cr_expect_eq(json_integer_value(json_object_get(e, "time")),
                 1534108637153LL);
    cr_expect_str_eq(s_at(e, "data.email.vendor"), "mailgun");
    cr_expect_str_eq(s_at(e, "data.email.message_id"),
                     "20180812211713.1.DF5966851B4BAA99@example.org");
    cr_expect_str_eq(s_at(e, "data.email.subject"), "Testing");
    cr_expect_str_eq(s_at(e, "data.email.response"), "250 OK");
    json_decref(e);

    pb_harness_clear(h);
    body = s_mg_fresh("mailgun/event_failed_permanent.anymail_fixture.json",
                      "1234567890abcdef1234567890abcdef-2");
    cr_assert_eq(s_post(h, NULL, body, strlen(body), NULL), 200);
    free(body);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    e = s_emitted(h, 0);
    cr_expect_str_eq(s_at(e, "type"), "email.bounced");
    cr_expect_str_eq(s_at(e, "data.customer.email"), "invalid@example.com");
    cr_expect_str_eq(s_at(e, "data.bounce.type"), "hard");
    cr_expect_str_eq(s_at(e, "data.bounce.code"), "550");
    cr_expect_str_eq(s_at(e, "data.bounce.reason"),
                     "5.1.1 The email account that you tried to reach does "
                     "not exist. Please try 5.1.1 double-checking the "
                     "recipient's email address for typos");
    /* no event id in this fixture: a fingerprint stands in */
    cr_expect(strncmp(s_at(e, "dedupe"), "mailgun:fp:", 11) == 0);
    json_decref(e);
    pb_harness_close(&h);
}

Test(mailgun, forged_stale_and_replayed_requests_are_refused)
{
    pb_harness_t *h = s_open_mailgun("env:" S_MAILGUN_KEY_ENV);
    char *body = s_mg_fresh("mailgun/event_delivered.anymail_fixture.json",
                            "token-for-replay-test-0001");
    json_t *doc = json_loads(body, 0, NULL);
    char *resp = NULL;

    /* forged: the signature changed */
    json_t *sig = json_object_get(doc, "signature");
    char *hex = strdup(json_string_value(json_object_get(sig, "signature")));
    hex[0] = hex[0] == 'a' ? 'b' : 'a';
    json_object_set_new(sig, "signature", json_string(hex));
    char *forged = json_dumps(doc, JSON_COMPACT);
    cr_expect_eq(s_post(h, NULL, forged, strlen(forged), &resp), 400);
    cr_expect(strstr(resp, "does not verify") != NULL, "%s", resp);
    free(resp);
    free(forged);
    free(hex);

    /* the genuine request, then its signature with other event data */
    cr_expect_eq(s_post(h, NULL, body, strlen(body), NULL), 200);
    cr_expect_eq(pb_harness_emitted_count(h), 1);
    json_decref(doc);
    doc = json_loads(body, 0, NULL);
    json_object_set_new(json_object_get(doc, "event-data"), "recipient",
                        json_string("victim@example.com"));
    char *replay = json_dumps(doc, JSON_COMPACT);
    cr_expect_eq(s_post(h, NULL, replay, strlen(replay), &resp), 400);
    cr_expect(strstr(resp, "token already used") != NULL, "%s", resp);
    free(resp);
    free(replay);
    /* Mailgun retrying the very same request is accepted again (the host
     * drops the duplicate by its dedupe id) */
    cr_expect_eq(s_post(h, NULL, body, strlen(body), NULL), 200);
    cr_expect_eq(pb_harness_emitted_count(h), 2);

    /* stale: genuinely signed, ten minutes ago (webhook_tolerance 5m) */
    char *stale = s_mg_signed("mailgun/event_delivered.anymail_fixture.json",
                              "token-for-stale-test-0001", 600);
    cr_expect_eq(s_post(h, NULL, stale, strlen(stale), &resp), 400);
    cr_expect(resp && strstr(resp, "older than webhook_tolerance") != NULL,
              "%s", resp);
    free(resp);
    cr_expect_eq(pb_harness_emitted_count(h), 2, "nothing more routed");

    /* not JSON, no signature object */
    cr_expect_eq(s_post(h, NULL, "token=x&signature=y", 19, NULL), 400);
    cr_expect_eq(s_post(h, NULL, "{\"event-data\": {}}", 18, NULL), 400);
    cr_expect_eq(pb_harness_emitted_count(h), 2, "nothing more routed");
    json_decref(doc);
    free(body);
    pb_harness_close(&h);

    /* the freshness window is a setting: an hour admits the same request */
    const char *settings[] = {"webhook_provider=mailgun",
                              "mailgun_signing_key=env:" S_MAILGUN_KEY_ENV,
                              "webhook_tolerance=1h", NULL};
    char err[512] = "";
    h = pb_harness_open(S_PLUGIN, "mail-events", settings, err, sizeof err);
    cr_assert_not_null(h, "open: %s", err);
    cr_expect_eq(s_post(h, NULL, stale, strlen(stale), NULL), 200);
    cr_expect_eq(pb_harness_emitted_count(h), 1);
    pb_harness_close(&h);
    free(stale);
}

Test(mailgun, temporary_failures_and_other_kinds_are_acknowledged)
{
    pb_harness_t *h = s_open_mailgun("env:" S_MAILGUN_KEY_ENV);
    char *body =
        s_mg_fresh("mailgun/event_failed_permanent.anymail_fixture.json",
                   "token-temporary-0001");
    json_t *doc = json_loads(body, 0, NULL);
    json_object_set_new(json_object_get(doc, "event-data"), "severity",
                        json_string("temporary"));
    char *temp = json_dumps(doc, JSON_COMPACT);
    free(body);
    body = s_mg_fresh("mailgun/event_failed_permanent.anymail_fixture.json",
                      "token-temporary-0002");
    json_decref(doc);
    doc = json_loads(body, 0, NULL);
    json_object_set_new(json_object_get(doc, "event-data"), "event",
                        json_string("opened"));
    char *opened = json_dumps(doc, JSON_COMPACT);
    char *resp = NULL;
    cr_expect_eq(s_post(h, NULL, temp, strlen(temp), &resp), 200);
    cr_expect(strstr(resp, "\"ignored\":1") != NULL, "%s", resp);
    free(resp);
    cr_expect_eq(s_post(h, NULL, opened, strlen(opened), NULL), 200);
    cr_expect_eq(pb_harness_emitted_count(h), 0);
    free(opened);
    free(temp);
    json_decref(doc);
    free(body);
    pb_harness_close(&h);
}

/* A genuine request whose event cannot be mapped (no recipient) is
 * acknowledged and kept as a dead letter with its body. */
Test(mailgun, an_unmappable_event_is_kept_as_a_dead_letter)
{
    pb_harness_t *h = s_open_mailgun("env:" S_MAILGUN_KEY_ENV);
    char *body = s_mg_fresh("mailgun/event_delivered.anymail_fixture.json",
                            "token-unmappable-0001");
    json_t *doc = json_loads(body, 0, NULL);
    json_object_del(json_object_get(doc, "event-data"), "recipient");
    char *text = json_dumps(doc, JSON_COMPACT);
    char *resp = NULL;

    cr_assert_eq(s_post(h, NULL, text, strlen(text), &resp), 200, "%s", resp);
    cr_expect(strstr(resp, "\"malformed\":1") != NULL, "%s", resp);
    free(resp);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    json_t *e = s_emitted(h, 0);
    cr_expect_str_eq(s_at(e, "type"), PLUGBOARD_EV_INGRESS_UNMAPPED);
    cr_expect_str_eq(s_at(e, "data.reason"),
                     "mailgun event: no valid event-data.recipient");
    cr_expect_str_eq(s_at(e, "data.payload"), text);
    json_decref(e);
    free(text);
    json_decref(doc);
    free(body);
    pb_harness_close(&h);
}
