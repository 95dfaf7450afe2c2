/*
 * hmac.c - the "signatures" helpers of helpers.h: HMAC-SHA256, constant-
 * time comparison, hex and base64.
 *
 * Webhook connectors use these to check vendor signatures (Stripe, HubSpot,
 * SendGrid, Mailgun, Zendesk all sign with HMAC-SHA256 and send the result
 * as hex or base64).  HMAC is OpenSSL's; everything else is plain C with no
 * state, so every function here is thread-safe and allocates nothing.
 */
#include <plugboard/helpers.h>

#include <limits.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

int
plugboard_hmac_sha256(const void *key, size_t key_len, const void *msg,
                      size_t msg_len, uint8_t out[PLUGBOARD_SHA256_LEN])
{
    /* OpenSSL treats a NULL key as "reuse the previous key", so an empty
     * key (or message) gets a valid pointer of its own. */
    static const uint8_t empty[1];
    unsigned int out_len = 0;

    if (out == NULL || (key == NULL && key_len > 0)
        || (msg == NULL && msg_len > 0) || key_len > INT_MAX) {
        return -1;
    }
    if (HMAC(EVP_sha256(), key != NULL ? key : empty, (int)key_len,
             msg != NULL ? msg : empty, msg_len, out, &out_len) == NULL
        || out_len != PLUGBOARD_SHA256_LEN) {
        return -1;
    }
    return 0;
}

bool
plugboard_equal_ct(const void *a, const void *b, size_t n)
{
    if (n == 0) {
        return true;
    }
    return CRYPTO_memcmp(a, b, n) == 0;
}

void
plugboard_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

/* The value of one hex digit, or -1. */
static int
s_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int
plugboard_hex_decode(const char *text, size_t text_len, uint8_t *out,
                     size_t n)
{
    size_t i;

    if (text_len != 2 * n || (text == NULL && n > 0)) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        int hi = s_hex_value(text[2 * i]);
        int lo = s_hex_value(text[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return -1;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void
plugboard_base64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    char *p = out;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8
                     | in[i + 2];

        *p++ = alphabet[v >> 18 & 0x3f];
        *p++ = alphabet[v >> 12 & 0x3f];
        *p++ = alphabet[v >> 6 & 0x3f];
        *p++ = alphabet[v & 0x3f];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;

        *p++ = alphabet[v >> 18 & 0x3f];
        *p++ = alphabet[v >> 12 & 0x3f];
        *p++ = '=';
        *p++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

        *p++ = alphabet[v >> 18 & 0x3f];
        *p++ = alphabet[v >> 12 & 0x3f];
        *p++ = alphabet[v >> 6 & 0x3f];
        *p++ = '=';
    }
    *p = '\0';
}
