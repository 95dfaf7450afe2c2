/*
 * test_maildir.c - the "maildir" connector: what lands in the Maildir is a
 * well-formed RFC 5322 message (CRLF, short lines, encoded subject, quoted-
 * printable body), recipients come only from the configured field, header
 * injection is impossible, and redelivery never duplicates a message.
 *
 * Drives the real plugins/maildir.so through the test harness with the
 * shipped templates in etc/templates, and parses the delivered file here.
 */
#define _GNU_SOURCE /* memmem */

#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "harness.h"

#define S_PLUGIN PB_PLUGIN_DIR "/maildir.so"
#define S_TEMPLATES PB_SOURCE_DIR "/etc/templates"
#define S_FROM "from=Billing <billing@example.com>"

/* Headers the connector writes when reply_to is not set. */
#define S_HEADER_COUNT 11

static char *s_dir;
static char s_root[4096];

static void
s_setup(void)
{
    s_dir = pb_test_tempdir("pb-maildir");
    cr_assert_not_null(s_dir);
    snprintf(s_root, sizeof s_root, "%s/Maildir", s_dir);
}

static void
s_teardown(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
    s_dir = NULL;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* Open the connector with path=s_root, templates=dir and extra settings. */
static pb_harness_t *
s_open_with(const char *templates, const char *extra1, const char *extra2,
            char *err, size_t err_len)
{
    char path[4200], tdir[4200];
    snprintf(path, sizeof path, "path=%s", s_root);
    snprintf(tdir, sizeof tdir, "templates=%s", templates);
    const char *settings[] = {path, tdir, S_FROM, extra1, extra2, NULL};
    if (!extra1)
        settings[3] = NULL;
    else if (!extra2)
        settings[4] = NULL;
    return pb_harness_open(S_PLUGIN, "mail", settings, err, err_len);
}

static pb_harness_t *
s_open(const char *extra1, const char *extra2)
{
    char err[512] = "";
    pb_harness_t *h = s_open_with(S_TEMPLATES, extra1, extra2, err, sizeof err);
    cr_assert_not_null(h, "open: %s", err);
    return h;
}

static void
s_deliver(pb_harness_t *h, const char *type, const char *json,
          plugboard_outcome_t want, plugboard_result_t *r)
{
    cr_assert_eq(pb_harness_deliver(h, type, "ada@example.com", json, 1, r), 0);
    cr_assert_eq(r->outcome, want, "outcome %d, reason: %s", r->outcome,
                 r->reason);
}

/* Number of entries in s_root/sub; the last name in *name if non-NULL. */
static size_t
s_count(const char *sub, char *name, size_t name_len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", s_root, sub);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "cannot open %s", path);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        if (name)
            snprintf(name, name_len, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

/* The one message in new/ (malloc'd); asserts tmp/ is empty. */
static char *
s_only_message(void)
{
    char name[512], path[4800];
    cr_assert_eq(s_count("new", name, sizeof name), 1,
                 "exactly one message in new/");
    cr_assert_eq(s_count("tmp", NULL, 0), 0, "nothing left in tmp/");
    snprintf(path, sizeof path, "%s/new/%s", s_root, name);
    size_t len = 0;
    char *msg = pb_test_read_file(path, &len);
    cr_assert_not_null(msg);
    cr_assert_eq(strlen(msg), len, "no NUL bytes in the message");
    return msg;
}

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
    cr_assert_eq(col, 0, "message ends with CRLF");
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
            /* join continuation lines, dropping the CRLF */
            size_t cap = strlen(v) + 1, o = 0;
            found = malloc(cap);
            const char *p = v;
            for (;;) {
                const char *e = strstr(p, "\r\n");
                memcpy(found + o, p, (size_t)(e - p));
                o += (size_t)(e - p);
                if (e[2] != ' ' && e[2] != '\t')
                    break;
                p = e + 2;
            }
            found[o] = '\0';
        }
        line = end + 2;
    }
    return found;
}

static int
s_b64_value(char c)
{
    const char *alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

/* Decode base64 text (n chars) appending to out; returns bytes added. */
static size_t
s_b64_decode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        int v = s_b64_value(in[i]);
        cr_assert_geq(v, 0, "bad base64 character '%c'", in[i]);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    return o;
}

static bool
s_utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80         ? 1
                     : (c >> 5) == 6  ? 2
                     : (c >> 4) == 14 ? 3
                     : (c >> 3) == 30 ? 4
                                      : 0;
        if (len == 0 || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* Decode an unfolded header value made only of =?UTF-8?B?...?= words
 * separated by whitespace (malloc'd).  Each word must be at most 75
 * characters and hold whole UTF-8 characters (RFC 2047). */
static char *
s_rfc2047_decode(const char *value)
{
    char *out = calloc(1, strlen(value) + 1);
    size_t o = 0;
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        cr_assert(strncmp(p, "=?UTF-8?B?", 10) == 0, "not an encoded word: %s",
                  p);
        const char *end = strstr(p + 10, "?=");
        cr_assert_not_null(end);
        cr_assert_leq((size_t)(end + 2 - p), 75, "encoded word too long");
        size_t got = s_b64_decode(p + 10, (size_t)(end - p - 10), out + o);
        cr_assert(s_utf8_valid(out + o, got), "word splits a character");
        o += got;
        p = end + 2;
    }
    out[o] = '\0';
    return out;
}

/* Decode a quoted-printable body (malloc'd); asserts lines <= 76. */
static char *
s_qp_decode(const char *body)
{
    s_assert_lines(body, 76);
    char *out = calloc(1, strlen(body) + 1);
    size_t o = 0;
    for (const char *p = body; *p;) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 3; /* soft line break */
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

/* A temporary templates directory holding one template file. */
static void
s_template_dir(char *out, size_t out_len, const char *file, const char *text)
{
    snprintf(out, out_len, "%s/templates", s_dir);
    mkdir(out, 0700);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", out, file);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static const char s_failed[] =
    "{\"customer\": {\"email\": \"ada@example.com\", \"name\": \"Ada\","
    " \"id\": \"cus_1\"},"
    " \"amount\": 1250, \"currency\": \"USD\","
    " \"payment\": {\"id\": \"pi_1\", \"description\": \"Pro plan, May\"},"
    " \"failure\": {\"code\": \"card_declined\","
    "  \"message\": \"Your card was declined.\"},"
    " \"invoice\": {\"id\": \"in_1\","
    "  \"url\": \"https://pay.example.com/i/in_1\"}}";

TestSuite(maildir, .init = s_setup, .fini = s_teardown,
          .description = "maildir connector");

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

Test(maildir, failed_payment_becomes_one_well_formed_message)
{
    pb_harness_t *h = s_open(NULL, NULL);
    plugboard_result_t r;
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    char *msg = s_only_message();
    s_assert_lines(msg, 998);
    const char *body;
    char *headers = s_split(msg, &body);
    static const char *const required[] = {
        "Date",
        "From",
        "To",
        "Subject",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "X-Plugboard-Event-Id",
        "X-Plugboard-Event-Type",
    };
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        char *v = s_header(headers, required[i]);
        cr_expect_not_null(v, "missing header %s", required[i]);
        free(v);
    }
    cr_expect_eq(s_header_count(headers), S_HEADER_COUNT);

    char *to = s_header(headers, "To");
    char *from = s_header(headers, "From");
    char *subject = s_header(headers, "Subject");
    char *date = s_header(headers, "Date");
    char *mid = s_header(headers, "Message-ID");
    char *cte = s_header(headers, "Content-Transfer-Encoding");
    char *type = s_header(headers, "X-Plugboard-Event-Type");
    cr_expect_str_eq(to, "ada@example.com");
    cr_expect_str_eq(from, "Billing <billing@example.com>");
    cr_expect_str_eq(subject,
                     "Action needed: your payment of 12.50 USD didn't go "
                     "through");
    cr_expect(strstr(date, " +0000") != NULL, "Date in UTC: %s", date);
    cr_expect(mid[0] == '<' && strchr(mid, '@') && mid[strlen(mid) - 1] == '>',
              "Message-ID: %s", mid);
    cr_expect_str_eq(cte, "quoted-printable");
    cr_expect_str_eq(type, "payment.failed");

    char *text = s_qp_decode(body);
    cr_expect(strstr(text, "Hi Ada,") != NULL, "%s", text);
    cr_expect(strstr(text, "12.50 USD") != NULL, "%s", text);
    cr_expect(strstr(text, "Your card was declined.") != NULL, "%s", text);
    cr_expect(strstr(text, "https://pay.example.com/i/in_1") != NULL);
    cr_expect(strstr(text, "\r\n-- \r\n") != NULL, "signature separator");
    cr_expect(strstr(text, "{{") == NULL, "no unrendered tags: %s", text);

    free(text);
    free(to);
    free(from);
    free(subject);
    free(date);
    free(mid);
    free(cte);
    free(type);
    free(headers);
    free(msg);
}

Test(maildir, creates_the_maildir_directories)
{
    pb_harness_t *h = s_open(NULL, NULL);
    static const char *const subs[] = {"", "/tmp", "/new", "/cur"};
    for (size_t i = 0; i < 4; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s%s", s_root, subs[i]);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s exists", path);
        cr_expect(S_ISDIR(st.st_mode));
        cr_expect_eq(st.st_mode & 0777, 0700, "%s is 0700", path);
    }
    pb_harness_close(&h);
}

Test(maildir, non_ascii_subject_is_rfc2047_encoded)
{
    char tdir[4200];
    s_template_dir(tdir, sizeof tdir, "payment.failed.txt",
                   "Subject: Payment for {{customer.name}}: {{amount|money}}\n"
                   "\n"
                   "Dear {{customer.name}}, na\xc3\xafve caf\xc3\xa9 "
                   "=== {{amount|money}}\n");
    char err[512] = "";
    pb_harness_t *h = s_open_with(tdir, NULL, NULL, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    plugboard_result_t r;
    s_deliver(h, "payment.failed",
              "{\"customer\": {\"email\": \"zoe@example.com\","
              " \"name\": \"Zo\\u00eb \\u00dcnicode\"},"
              " \"amount\": 1250, \"currency\": \"USD\"}",
              PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    char *msg = s_only_message();
    s_assert_lines(msg, 78); /* encoded and folded: every line short */
    const char *body;
    char *headers = s_split(msg, &body);
    char *subject = s_header(headers, "Subject");
    char *decoded = s_rfc2047_decode(subject);
    cr_expect_str_eq(decoded,
                     "Payment for Zo\xc3\xab \xc3\x9cnicode: 12.50 USD");
    char *text = s_qp_decode(body);
    cr_expect_str_eq(text, "Dear Zo\xc3\xab \xc3\x9cnicode, na\xc3\xafve "
                           "caf\xc3\xa9 === 12.50 USD\r\n");
    cr_expect(strstr(body, "=C3=AF") != NULL, "non-ASCII is encoded");
    cr_expect(strstr(body, "=3D=3D=3D") != NULL, "'=' is encoded");
    free(text);
    free(decoded);
    free(subject);
    free(headers);
    free(msg);
}

Test(maildir, long_subject_is_folded_into_short_encoded_words)
{
    char tdir[4200];
    s_template_dir(tdir, sizeof tdir, "payment.failed.txt",
                   "Subject: {{note}}\n\n{{note}}\n");
    char err[512] = "";
    pb_harness_t *h = s_open_with(tdir, NULL, NULL, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    /* 300 two-byte characters and a long body line */
    char note[700];
    size_t o = 0;
    for (int i = 0; i < 300; i++)
        o += (size_t)snprintf(note + o, sizeof note - o, "\xc3\xa9");
    char json[1024];
    snprintf(json, sizeof json,
             "{\"customer\": {\"email\": \"ada@example.com\"},"
             " \"note\": \"%s\"}",
             note);
    plugboard_result_t r;
    s_deliver(h, "payment.failed", json, PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    char *msg = s_only_message();
    s_assert_lines(msg, 78);
    const char *body;
    char *headers = s_split(msg, &body);
    char *subject = s_header(headers, "Subject");
    char *decoded = s_rfc2047_decode(subject);
    cr_expect_str_eq(decoded, note);
    char *text = s_qp_decode(body);
    cr_expect_eq(strlen(text), strlen(note) + 2);
    cr_expect(strncmp(text, note, strlen(note)) == 0);
    free(text);
    free(decoded);
    free(subject);
    free(headers);
    free(msg);
}

Test(maildir, header_injection_adds_no_header)
{
    char tdir[4200];
    s_template_dir(tdir, sizeof tdir, "payment.failed.txt",
                   "Subject: Hello {{customer.name}}\n\n"
                   "Hello {{customer.name}}\n");
    char err[512] = "";
    pb_harness_t *h = s_open_with(tdir, NULL, NULL, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    plugboard_result_t r;
    s_deliver(h, "payment.failed",
              "{\"customer\": {\"email\": \"eve@example.com\","
              " \"name\": \"Eve\\r\\nBcc: attacker@evil.example\\r\\n\\r\\n"
              "body\"}}",
              PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    char *msg = s_only_message();
    s_assert_lines(msg, 998);
    const char *body;
    char *headers = s_split(msg, &body);
    cr_expect_eq(s_header_count(headers), S_HEADER_COUNT);
    cr_expect_null(strstr(headers, "\r\nBcc:"), "%s", headers);
    cr_expect(strncasecmp(headers, "Bcc:", 4) != 0);
    char *subject = s_header(headers, "Subject");
    cr_expect_str_eq(subject, "Hello Eve  Bcc: attacker@evil.example    body");
    char *to = s_header(headers, "To");
    cr_expect_str_eq(to, "eve@example.com");
    free(to);
    free(subject);
    free(headers);
    free(msg);
}

Test(maildir, recipient_injection_is_rejected)
{
    pb_harness_t *h = s_open(NULL, NULL);
    plugboard_result_t r;
    s_deliver(h, "payment.failed",
              "{\"customer\": {\"email\": "
              "\"ada@example.com\\r\\nBcc: attacker@evil.example\"}}",
              PLUGBOARD_REJECT, &r);
    cr_expect_eq(s_count("new", NULL, 0), 0);
    pb_harness_close(&h);
}

Test(maildir, missing_recipient_is_rejected)
{
    pb_harness_t *h = s_open(NULL, NULL);
    plugboard_result_t r;
    s_deliver(h, "payment.failed", "{\"amount\": 1250, \"currency\": \"USD\"}",
              PLUGBOARD_REJECT, &r);
    cr_expect_str_eq(r.reason, "recipient field 'customer.email' is missing "
                               "or not an address");
    /* a number where the address should be */
    s_deliver(h, "payment.failed", "{\"customer\": {\"email\": 42}}",
              PLUGBOARD_REJECT, &r);
    cr_expect_eq(s_count("new", NULL, 0), 0);
    cr_expect_eq(s_count("tmp", NULL, 0), 0);
    pb_harness_close(&h);
}

Test(maildir, bad_addresses_are_rejected)
{
    static const char *const bad[] = {
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@@example.com",
        "ada@b@example.com",
        "Ada <ada@example.com>",
        "<ada@example.com>",
        "ada lovelace@example.com",
        "ada@example.com, eve@evil.example",
        "ada@example.com;eve@evil.example",
        "ada.@example.com",
        "ada@example..com",
        "\\\"ada\\\"@example.com",
        "ada@exa mple.com",
        "ada\\t@example.com",
    };
    pb_harness_t *h = s_open(NULL, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"customer\": {\"email\": \"%s\"}}",
                 bad[i]);
        plugboard_result_t r;
        cr_assert_eq(pb_harness_deliver(h, "payment.failed", NULL, json, 1, &r),
                     0);
        cr_expect_eq(r.outcome, PLUGBOARD_REJECT, "'%s' accepted", bad[i]);
        cr_expect(strstr(r.reason, "customer.email") != NULL);
    }
    cr_expect_eq(s_count("new", NULL, 0), 0);
    pb_harness_close(&h);
}

Test(maildir, to_field_chooses_the_recipient)
{
    pb_harness_t *h = s_open("to_field=contact.email", NULL);
    plugboard_result_t r;
    s_deliver(h, "contact.upserted",
              "{\"contact\": {\"email\": \"bob+news@example.co.uk\","
              " \"name\": \"Bob\"}, \"customer\": {\"email\": "
              "\"not-this@example.com\"}}",
              PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    char *msg = s_only_message();
    const char *body;
    char *headers = s_split(msg, &body);
    char *to = s_header(headers, "To");
    cr_expect_str_eq(to, "bob+news@example.co.uk");
    free(to);
    free(headers);
    free(msg);
}

/* Patch the attempt in an encoded frame (a positive fixint after the
 * "attempt" key). */
static void
s_set_frame_attempt(uint8_t *frame, size_t len, uint8_t attempt)
{
    static const char key[] = "\xa7"
                              "attempt";
    uint8_t *p = memmem(frame, len, key, sizeof key - 1);
    cr_assert_not_null(p, "attempt key not found in frame");
    cr_assert_lt(p[sizeof key - 1], 0x80, "attempt is a fixint");
    p[sizeof key - 1] = attempt;
}

Test(maildir, redelivery_does_not_duplicate)
{
    pb_builder_t *b = pb_builder_new("stripe", "payment.failed");
    cr_assert_not_null(b);
    cr_assert_eq(
        pb_builder_set_string(b, "customer.email", "ada@example.com", 15), 0);
    cr_assert_eq(pb_builder_set_int(b, "amount", 1250), 0);
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    pb_builder_destroy(&b);

    pb_harness_t *h = s_open(NULL, NULL);
    plugboard_result_t r;
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    char first[512];
    cr_assert_eq(s_count("new", first, sizeof first), 1);

    /* the host retries it (attempt 2): still one message */
    s_set_frame_attempt(frame, len, 2);
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    cr_expect_eq(s_count("new", NULL, 0), 1);
    cr_expect_eq(s_count("tmp", NULL, 0), 0);

    /* a mail reader has moved it to cur/ and marked it seen */
    char from[4800], to[4800];
    snprintf(from, sizeof from, "%s/new/%s", s_root, first);
    snprintf(to, sizeof to, "%s/cur/%s:2,S", s_root, first);
    cr_assert_eq(rename(from, to), 0);
    s_set_frame_attempt(frame, len, 3);
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    cr_expect_eq(s_count("new", NULL, 0), 0);
    cr_expect_eq(s_count("cur", NULL, 0), 1);
    cr_expect_eq(s_count("tmp", NULL, 0), 0);

    /* a different event is a different message */
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    cr_expect_eq(s_count("new", NULL, 0), 1);
    pb_harness_close(&h);
    free(frame);
}

static const char s_dead[] =
    "{\"route\": \"failed-payment-follow-up\", \"destination\": \"crm\","
    " \"why\": \"finance chased failed cards by hand\","
    " \"owner\": \"billing-team@example.com\","
    " \"on_failure\": \"the customer is never asked to update the card\","
    " \"attempts\": 10, \"last_error\": \"HTTP 503 from api.hubapi.com\","
    " \"reason\": \"retries exhausted\","
    " \"event\": {\"id\": \"01HXAMPLE\", \"type\": \"payment.failed\","
    "  \"key\": \"ada@example.com\"}}";

Test(maildir, dead_letter_notice_goes_to_the_route_owner)
{
    pb_harness_t *h = s_open(NULL, NULL);
    plugboard_result_t r;
    s_deliver(h, "plugboard.delivery.dead", s_dead, PLUGBOARD_OK, &r);
    pb_harness_close(&h);

    char *msg = s_only_message();
    s_assert_lines(msg, 998);
    const char *body;
    char *headers = s_split(msg, &body);
    char *to = s_header(headers, "To");
    char *subject = s_header(headers, "Subject");
    cr_expect_str_eq(to, "billing-team@example.com");
    cr_expect(strstr(subject, "failed-payment-follow-up") != NULL, "%s",
              subject);
    char *text = s_qp_decode(body);
    static const char *const want[] = {
        "failed-payment-follow-up",
        "\"crm\"",
        "finance chased failed cards",
        "never asked to update the card",
        "10",
        "HTTP 503 from api.hubapi.com",
        "01HXAMPLE",
        "payment.failed",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_expect(strstr(text, want[i]) != NULL, "body lacks '%s':\n%s",
                  want[i], text);
    free(text);
    free(to);
    free(subject);
    free(headers);
    free(msg);
}

Test(maildir, fixed_to_overrides_the_event)
{
    pb_harness_t *h = s_open("to=Ops <ops@example.com>",
                             "reply_to=Support <support@example.com>");
    plugboard_result_t r;
    s_deliver(h, "plugboard.delivery.dead", s_dead, PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    char *msg = s_only_message();
    const char *body;
    char *headers = s_split(msg, &body);
    char *to = s_header(headers, "To");
    char *reply_to = s_header(headers, "Reply-To");
    cr_expect_str_eq(to, "Ops <ops@example.com>");
    cr_expect_str_eq(reply_to, "Support <support@example.com>");
    cr_expect_eq(s_header_count(headers), S_HEADER_COUNT + 1);
    free(to);
    free(reply_to);
    free(headers);
    free(msg);
}

Test(maildir, dead_letter_without_owner_is_rejected)
{
    pb_harness_t *h = s_open(NULL, NULL);
    plugboard_result_t r;
    s_deliver(h, "plugboard.delivery.dead", "{\"route\": \"r\"}",
              PLUGBOARD_REJECT, &r);
    cr_expect(strstr(r.reason, "'owner'") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

Test(maildir, missing_template_uses_the_generic_message)
{
    pb_harness_t *h = s_open(NULL, NULL);
    plugboard_result_t r;
    s_deliver(h, "ticket.created",
              "{\"customer\": {\"email\": \"ada@example.com\"},"
              " \"ticket\": {\"id\": \"T-7\", \"subject\": \"Printer on "
              "fire\"}}",
              PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    char *msg = s_only_message();
    s_assert_lines(msg, 998);
    const char *body;
    char *headers = s_split(msg, &body);
    char *subject = s_header(headers, "Subject");
    cr_expect_str_eq(subject, "ticket.created for ada@example.com");
    char *text = s_qp_decode(body);
    cr_expect(strstr(text, "ticket.created") != NULL, "%s", text);
    cr_expect(strstr(text, "\"subject\": \"Printer on fire\"") != NULL, "%s",
              text);
    free(text);
    free(subject);
    free(headers);
    free(msg);
}

Test(maildir, non_ascii_from_name_is_encoded)
{
    char path[4200], tdir[4200];
    snprintf(path, sizeof path, "path=%s", s_root);
    snprintf(tdir, sizeof tdir, "templates=%s", S_TEMPLATES);
    const char *settings[] = {
        path, tdir, "from=Caf\xc3\xa9 Billing <billing@example.com>", NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(S_PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    plugboard_result_t r;
    s_deliver(h, "payment.succeeded", s_failed, PLUGBOARD_OK, &r);
    pb_harness_close(&h);
    char *msg = s_only_message();
    s_assert_lines(msg, 998);
    const char *body;
    char *headers = s_split(msg, &body);
    char *from = s_header(headers, "From");
    const char *lt = strstr(from, " <billing@example.com>");
    cr_assert_not_null(lt, "%s", from);
    char *name = strndup(from, (size_t)(lt - from));
    char *decoded = s_rfc2047_decode(name);
    cr_expect_str_eq(decoded, "Caf\xc3\xa9 Billing");
    free(decoded);
    free(name);
    free(from);
    free(headers);
    free(msg);
}

Test(maildir, open_fails_on_bad_settings)
{
    char path[4200], tdir[4200], err[512];
    snprintf(path, sizeof path, "path=%s", s_root);
    snprintf(tdir, sizeof tdir, "templates=%s", S_TEMPLATES);
    const char *bad_from[] = {path, tdir, "from=Billing", NULL};
    cr_expect_null(pb_harness_open(S_PLUGIN, NULL, bad_from, err, sizeof err));
    cr_expect(strstr(err, "'from'") != NULL, "%s", err);

    const char *bad_to[] = {path, tdir, S_FROM, "to=a@b, c@d", NULL};
    cr_expect_null(pb_harness_open(S_PLUGIN, NULL, bad_to, err, sizeof err));
    cr_expect(strstr(err, "'to'") != NULL, "%s", err);

    char nodir[4300];
    snprintf(nodir, sizeof nodir, "templates=%s/none", s_dir);
    const char *no_templates[] = {path, nodir, S_FROM, NULL};
    cr_expect_null(
        pb_harness_open(S_PLUGIN, NULL, no_templates, err, sizeof err));
    cr_expect(strstr(err, "/none") != NULL, "%s", err);

    char deep[4300];
    snprintf(deep, sizeof deep, "path=%s/a/b/Maildir", s_dir);
    const char *no_parent[] = {deep, tdir, S_FROM, NULL};
    cr_expect_null(pb_harness_open(S_PLUGIN, NULL, no_parent, err, sizeof err));
    cr_expect(strstr(err, "/a/b/Maildir") != NULL, "%s", err);
}

Test(maildir, open_fails_naming_an_unparseable_template)
{
    char tdir[4200], err[512] = "";
    s_template_dir(tdir, sizeof tdir, "payment.failed.txt",
                   "Hello {{customer.name}}\n\nno subject line\n");
    cr_expect_null(s_open_with(tdir, NULL, NULL, err, sizeof err));
    cr_expect(strstr(err, "payment.failed.txt") != NULL, "%s", err);
    cr_expect(strstr(err, "Subject") != NULL, "%s", err);

    s_template_dir(tdir, sizeof tdir, "payment.failed.txt",
                   "Subject: hi\nno blank line\n");
    cr_expect_null(s_open_with(tdir, NULL, NULL, err, sizeof err));
    cr_expect(strstr(err, "payment.failed.txt") != NULL, "%s", err);
}

Test(maildir, shipped_templates_all_render)
{
    static const struct {
        const char *type;
        const char *json;
        const char *needle;
    } cases[] = {
        {"payment.succeeded", s_failed, "12.50 USD"},
        {"payment.refunded",
         "{\"customer\": {\"email\": \"ada@example.com\"}, \"amount\": 1250,"
         " \"currency\": \"EUR\", \"refund\": {\"amount\": 500}}",
         "5.00 EUR"},
        {"subscription.canceled",
         "{\"customer\": {\"email\": \"ada@example.com\"},"
         " \"subscription\": {\"id\": \"sub_1\","
         "  \"canceled_at\": 1714564800000},"
         " \"plan\": {\"id\": \"pro\", \"amount\": 120000,"
         "  \"currency\": \"JPY\", \"interval\": \"month\"}}",
         "120000 JPY per month"},
    };
    pb_harness_t *h = s_open(NULL, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        plugboard_result_t r;
        s_deliver(h, cases[i].type, cases[i].json, PLUGBOARD_OK, &r);
        char name[512], path[4800];
        cr_assert_eq(s_count("new", name, sizeof name), 1);
        snprintf(path, sizeof path, "%s/new/%s", s_root, name);
        char *msg = pb_test_read_file(path, NULL);
        s_assert_lines(msg, 998);
        const char *body;
        char *headers = s_split(msg, &body);
        char *text = s_qp_decode(body);
        cr_expect(strstr(text, cases[i].needle) != NULL, "%s: %s",
                  cases[i].type, text);
        cr_expect(strstr(text, "{{") == NULL, "%s", text);
        free(text);
        free(headers);
        free(msg);
        unlink(path);
    }
    pb_harness_close(&h);
}

Test(maildir, consumes_the_notice_types)
{
    pb_harness_t *h = s_open(NULL, NULL);
    const plugboard_connector_t *d = pb_harness_descriptor(h);
    cr_expect_str_eq(d->name, "maildir");
    static const char *const want[] = {
        "payment.failed",        "payment.succeeded", "payment.refunded",
        "subscription.canceled", "contact.upserted",  "plugboard.delivery.dead",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        bool found = false;
        for (size_t k = 0; d->consumes[k]; k++)
            found = found || strcmp(d->consumes[k], want[i]) == 0;
        cr_expect(found, "consumes %s", want[i]);
    }
    pb_harness_close(&h);
}
