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
 *   |default:TEXT TEXT when the value is missing or empty
 * "{{$type}}", "{{$id}}", "{{$key}}", "{{$source}}", "{{$time}}" and
 * "{{$attempt}}" give envelope fields.  An unknown filter or an
 * unterminated "{{" is copied literally.  Returns a NUL-terminated string the caller frees with
 * api->free, or NULL when out of memory.
 */
char *plugboard_template_render(const plugboard_host_api_t *api,
                                const plugboard_event_t *ev,
                                const char *tmpl, plugboard_escape_t escape);

#ifdef __cplusplus
}
#endif

#endif /* PLUGBOARD_HELPERS_H */
