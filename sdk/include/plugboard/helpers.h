/*
 * helpers.h - helpers linked into connectors from libplugboard-sdk.a.
 *
 * Nothing here calls into the host except through the api table passed in,
 * so a connector using these still links nothing from the host executable.
 * Functions are thread-safe unless noted.
 */
#ifndef PLUGBOARD_HELPERS_H
#define PLUGBOARD_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plugboard/plugboard.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- errors ------------------------------------------------------------- */

/* A short message for a code a host API call returned (0 and the
 * PLUGBOARD_E_* codes of plugboard.h), e.g. "the host is stopping";
 * "unknown error" for any other.  Static; never NULL. */
const char *plugboard_strerror(int code);

/* --- signatures --------------------------------------------------------- */

#define PLUGBOARD_SHA256_LEN 32

/* HMAC-SHA256 of msg under key into out.  Returns 0, or -1 on failure. */
int plugboard_hmac_sha256(const void *key, size_t key_len, const void *msg,
                          size_t msg_len,
                          uint8_t out[PLUGBOARD_SHA256_LEN]);

/* Compare n bytes in time independent of where they differ. */
bool plugboard_equal_ct(const void *a, const void *b, size_t n);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void plugboard_hex_encode(const uint8_t *in, size_t n, char *out);

/* Decode hex (either case) of exactly 2n characters into out (n bytes).
 * Returns 0, or -1 when text is not exactly that. */
int plugboard_hex_decode(const char *text, size_t text_len, uint8_t *out,
                         size_t n);

/* Standard base64 with padding into out (4*ceil(n/3)+1 bytes). */
void plugboard_base64_encode(const uint8_t *in, size_t n, char *out);

/* --- templates ---------------------------------------------------------- */

/* How substituted values are escaped. */
typedef enum plugboard_escape {
    PLUGBOARD_ESCAPE_NONE = 0,   /* as is (plain text bodies) */
    PLUGBOARD_ESCAPE_HEADER = 1, /* CR, LF and other controls replaced by
                                    a space: safe inside a header value */
    PLUGBOARD_ESCAPE_HTML = 2,   /* & < > " ' escaped */
} plugboard_escape_t;

/*
 * Render a template against an event.  "{{path}}" is replaced by the
 * event's field at that dotted path (strings as is, integers in decimal,
 * booleans as true/false; floats, maps and arrays render as "").
 * Filters, which chain left to right ("{{refund.amount|money|default:n/a}}"):
 *   |money        integer minor units with the currency beside the amount
 *                 ("plan.currency" for "plan.amount") or the event's
 *                 "currency": "12.50 EUR"; zero- and three-decimal
 *                 currencies are formatted as such
 *   |date         UTC milliseconds as "2024-05-01 12:00 UTC"
 *   |duration     milliseconds as the config writes them: "30s", "1h"
 *   |default:TEXT TEXT when the value is missing or empty
 * "{{$type}}", "{{$id}}", "{{$key}}", "{{$source}}", "{{$time}}" and
 * "{{$attempt}}" give envelope fields.  An unknown filter or an
 * unterminated "{{" is copied literally.  Returns a NUL-terminated string the caller frees with
 * api->free, or NULL when out of memory.
 */
char *plugboard_template_render(const plugboard_host_api_t *api,
                                const plugboard_event_t *ev,
                                const char *tmpl, plugboard_escape_t escape);

/* --- e-mail messages (mime.c) -------------------------------------------- */

#define PLUGBOARD_MAIL_ADDRESS_MAX 254 /* RFC 5321 path limit */
#define PLUGBOARD_MAIL_ID_TOKEN_MAX 66 /* see plugboard_mail_id_token */

/*
 * Whether s (n bytes) is one bare address: local@domain, one '@', no
 * spaces, controls, angle brackets, commas or quotes, dots not leading,
 * trailing or doubled, at most 254 bytes.  UTF-8 is allowed (RFC 6531).
 */
bool plugboard_mail_address_ok(const char *s, size_t n);

/* A mailbox from a setting, ready for a From/To/Reply-To header. */
typedef struct plugboard_mailbox {
    char *header;  /* "Name <addr>" with the name quoted or RFC 2047
                      encoded as needed, or the bare address */
    char *address; /* the bare address, for the SMTP envelope */
} plugboard_mailbox_t;

/*
 * Parse "addr" or "Display Name <addr>" into *out; col is the column the
 * header value starts at ("From: " is 6), so encoded words fold within 78
 * characters.  Returns 0 (release *out with plugboard_mailbox_release),
 * PLUGBOARD_E_INVALID when text is not such a mailbox, or
 * PLUGBOARD_E_NOMEM.  On error *out is zeroed.
 */
int plugboard_mailbox_parse(const plugboard_host_api_t *api, const char *text,
                            size_t col, plugboard_mailbox_t *out);
void plugboard_mailbox_release(const plugboard_host_api_t *api,
                               plugboard_mailbox_t *mb);

/*
 * An event id as a token safe in file names and Message-IDs: the id as is
 * when it is at most 64 characters of [A-Za-z0-9_-] (host ids always are),
 * otherwise "h" and the SHA-256 of it in hex.  One id, one token.
 */
void plugboard_mail_id_token(const char *id,
                             char out[PLUGBOARD_MAIL_ID_TOKEN_MAX]);

/*
 * Mail templates: a directory of <event.type>.txt files, each a first line
 * "Subject: <template>", a blank line, and the plain-text body template
 * (LF or CRLF), plus an optional <event.type>.html beside it holding an
 * HTML body template (its values are HTML-escaped).  Read once at load;
 * read-only afterwards, so one set may serve several threads.
 */
typedef struct plugboard_mail_templates plugboard_mail_templates_t;

/* Load every template in dir.  Returns the set (destroy it), or NULL with
 * errbuf (PLUGBOARD_ERRBUF_MAX) naming the directory or file and what is
 * wrong: "cannot parse template '<dir>/<file>': <why>". */
plugboard_mail_templates_t *
plugboard_mail_templates_load(const plugboard_host_api_t *api,
                              const char *dir, char *errbuf);
size_t plugboard_mail_templates_count(const plugboard_mail_templates_t *set);
/* Idempotent; NULLs *set. */
void plugboard_mail_templates_destroy(plugboard_mail_templates_t **set);

/* A message's rendered texts; each allocated with api->alloc. */
typedef struct plugboard_mail_content {
    char *subject; /* rendered with PLUGBOARD_ESCAPE_HEADER */
    char *text;    /* plain-text body */
    char *html;    /* HTML body, or NULL when the type has no .html */
} plugboard_mail_content_t;

/*
 * Render the template for ev's type into *out.  A type without a template
 * gets a generic message: subject "<type> for <key>" and a body naming the
 * event followed by its full content as indented JSON.  Returns 0 (release
 * *out), or PLUGBOARD_E_NOMEM with *out zeroed.
 */
int plugboard_mail_render(const plugboard_host_api_t *api,
                          const plugboard_mail_templates_t *set,
                          const plugboard_event_t *ev,
                          plugboard_mail_content_t *out);
void plugboard_mail_content_release(const plugboard_host_api_t *api,
                                    plugboard_mail_content_t *c);

/* What one message holds.  Strings are borrowed for the call. */
typedef struct plugboard_mail {
    int64_t date_ms;        /* Date, UTC ms */
    const char *from;       /* header-ready mailboxes (plugboard_mailbox_t */
    const char *to;         /*   header, or a checked bare address)       */
    const char *reply_to;   /* NULL: no Reply-To */
    const char *message_id; /* without the angle brackets: "x@domain" */
    const char *subject;    /* UTF-8 text; folded or RFC 2047 encoded */
    const char *text;       /* plain-text body, UTF-8, LF or CRLF */
    const char *html;       /* NULL: text/plain only; else the message is
                               multipart/alternative (text, then HTML) */
    const plugboard_header_t *extra; /* more header fields, appended */
    size_t extra_count;
} plugboard_mail_t;

/*
 * The message as RFC 5322 text: CRLF line ends, every line at most 998
 * octets (header lines folded within 78 where a space allows), non-ASCII
 * header text as RFC 2047 encoded words, bodies quoted-printable with lines
 * of at most 76, and Date, From, To, [Reply-To], Subject, Message-ID,
 * MIME-Version, Content-Type, [Content-Transfer-Encoding], Auto-Submitted
 * and the extra fields in that order.  Control characters in any header
 * value become spaces.  The MIME boundary derives from message_id, so the
 * same mail gives the same bytes.  Returns the text (api->free; length in
 * *len), or NULL when out of memory or a required field or an extra
 * field's name is missing or invalid.
 */
char *plugboard_mail_build(const plugboard_host_api_t *api,
                           const plugboard_mail_t *mail, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* PLUGBOARD_HELPERS_H */
