/*
 * test_sdk_hmac.c - the SDK's signature helpers: HMAC-SHA256 against the
 * RFC 4231 vectors and the Stripe-derived vector, constant-time compare,
 * hex and base64.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include <plugboard/helpers.h>

/* Hex of the HMAC of msg under key, into hex (65 bytes). */
static void
hmac_hex(const void *key, size_t key_len, const void *msg, size_t msg_len,
         char hex[2 * PLUGBOARD_SHA256_LEN + 1])
{
    uint8_t mac[PLUGBOARD_SHA256_LEN];

    cr_assert_eq(plugboard_hmac_sha256(key, key_len, msg, msg_len, mac), 0);
    plugboard_hex_encode(mac, sizeof mac, hex);
}

static void
fill(uint8_t *buf, uint8_t byte, size_t n)
{
    memset(buf, byte, n);
}

TestSuite(sdk_hmac);

/* RFC 4231 section 4.2 */
Test(sdk_hmac, rfc4231_case1)
{
    uint8_t key[20];
    char hex[65];

    fill(key, 0x0b, sizeof key);
    hmac_hex(key, sizeof key, "Hi There", 8, hex);
    cr_assert_str_eq(hex, "b0344c61d8db38535ca8afceaf0bf12b"
                          "881dc200c9833da726e9376c2e32cff7");
}

/* RFC 4231 section 4.3: a key shorter than the output */
Test(sdk_hmac, rfc4231_case2)
{
    char hex[65];
    const char *msg = "what do ya want for nothing?";

    hmac_hex("Jefe", 4, msg, strlen(msg), hex);
    cr_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c7"
                          "5a003f089d2739839dec58b964ec3843");
}

/* RFC 4231 section 4.4 */
Test(sdk_hmac, rfc4231_case3)
{
    uint8_t key[20];
    uint8_t msg[50];
    char hex[65];

    fill(key, 0xaa, sizeof key);
    fill(msg, 0xdd, sizeof msg);
    hmac_hex(key, sizeof key, msg, sizeof msg, hex);
    cr_assert_str_eq(hex, "773ea91e36800e46854db8ebd09181a7"
                          "2959098b3ef8c122d9635514ced565fe");
}

/* RFC 4231 section 4.5 */
Test(sdk_hmac, rfc4231_case4)
{
    uint8_t key[25];
    uint8_t msg[50];
    char hex[65];

    for (size_t i = 0; i < sizeof key; i++) {
        key[i] = (uint8_t)(i + 1);
    }
    fill(msg, 0xcd, sizeof msg);
    hmac_hex(key, sizeof key, msg, sizeof msg, hex);
    cr_assert_str_eq(hex, "82558a389a443c0ea4cc819899f2083a"
                          "85f0faa3e578f8077a2e3ff46729665b");
}

/* RFC 4231 section 4.6: output truncated to 128 bits */
Test(sdk_hmac, rfc4231_case5_truncated)
{
    uint8_t key[20];
    char hex[65];

    fill(key, 0x0c, sizeof key);
    hmac_hex(key, sizeof key, "Test With Truncation", 20, hex);
    cr_assert(strncmp(hex, "a3b6167473100ee06e0c796c2955552b", 32) == 0,
              "got %s", hex);
}

/* RFC 4231 section 4.7: a key longer than the block is hashed first */
Test(sdk_hmac, rfc4231_case6_long_key)
{
    uint8_t key[131];
    char hex[65];
    const char *msg = "Test Using Larger Than Block-Size Key - Hash Key First";

    fill(key, 0xaa, sizeof key);
    hmac_hex(key, sizeof key, msg, strlen(msg), hex);
    cr_assert_str_eq(hex, "60e431591ee0b67f0d8a26aacbf5b77f"
                          "8e0bc6213728c5140546040f0ee37f54");
}

/* RFC 4231 section 4.8: long key and long message */
Test(sdk_hmac, rfc4231_case7_long_key_and_data)
{
    uint8_t key[131];
    char hex[65];
    const char *msg =
        "This is a test using a larger than block-size key and a larger "
        "than block-size data. The key needs to be hashed before being "
        "used by the HMAC algorithm.";

    fill(key, 0xaa, sizeof key);
    hmac_hex(key, sizeof key, msg, strlen(msg), hex);
    cr_assert_str_eq(hex, "9b09ffa71b942fcb27635fbcd5b0e944"
                          "bfdc63644f0713938a7f51535c3a35e2");
}

/* The derived Stripe vector of corpus/stripe/SIGNATURE.md: the literal
 * whsec_ string is the key, "<t>.<payload>" the message. */
Test(sdk_hmac, stripe_derived_vector)
{
    const char *path = PB_SOURCE_DIR "/tests/fixtures/stripe/edge/"
                                     "sdk_test_minimal_event.payload.json";
    FILE *f = fopen(path, "rb");
    char msg[512];
    size_t n;
    char hex[65];

    cr_assert_not_null(f, "cannot open %s", path);
    memcpy(msg, "1492774577.", 11);
    n = fread(msg + 11, 1, sizeof msg - 11, f);
    fclose(f);
    cr_assert_eq(n, 125);
    hmac_hex("whsec_test_secret", 17, msg, 11 + n, hex);
    cr_assert_str_eq(hex, "d21d91b425674689e03346536b8fec63"
                          "84a8721d43ebe269a1689a3ad22cba9c");
}

Test(sdk_hmac, empty_key_and_message)
{
    char hex[65];

    /* HMAC-SHA256("", "") as computed by Python's hmac module */
    hmac_hex(NULL, 0, NULL, 0, hex);
    cr_assert_str_eq(hex, "b613679a0814d9ec772f95d778c35fc5"
                          "ff1697c493715653c6c712144292c5ad");
    hmac_hex("", 0, "", 0, hex);
    cr_assert_str_eq(hex, "b613679a0814d9ec772f95d778c35fc5"
                          "ff1697c493715653c6c712144292c5ad");
}

Test(sdk_hmac, rejects_null_with_length)
{
    uint8_t mac[PLUGBOARD_SHA256_LEN];

    cr_assert_eq(plugboard_hmac_sha256(NULL, 3, "x", 1, mac), -1);
    cr_assert_eq(plugboard_hmac_sha256("k", 1, NULL, 3, mac), -1);
}

Test(sdk_hmac, equal_ct)
{
    uint8_t a[32];
    uint8_t b[32];

    fill(a, 0x5a, sizeof a);
    fill(b, 0x5a, sizeof b);
    cr_assert(plugboard_equal_ct(a, b, sizeof a));
    b[0] ^= 1;
    cr_assert_not(plugboard_equal_ct(a, b, sizeof a));
    b[0] ^= 1;
    b[31] ^= 0x80;
    cr_assert_not(plugboard_equal_ct(a, b, sizeof a));
    /* only the first n bytes count */
    cr_assert(plugboard_equal_ct(a, b, 31));
    cr_assert(plugboard_equal_ct("x", "y", 0));
}

Test(sdk_hmac, hex_round_trip)
{
    uint8_t in[256];
    uint8_t back[256];
    char hex[513];

    for (size_t i = 0; i < sizeof in; i++) {
        in[i] = (uint8_t)i;
    }
    plugboard_hex_encode(in, sizeof in, hex);
    cr_assert_eq(strlen(hex), 512);
    cr_assert(strncmp(hex, "000102030405", 12) == 0);
    cr_assert(strcmp(hex + 500, "fafbfcfdfeff") == 0);
    cr_assert_eq(plugboard_hex_decode(hex, 512, back, sizeof back), 0);
    cr_assert_arr_eq(in, back, sizeof in);

    plugboard_hex_encode(in, 0, hex);
    cr_assert_str_eq(hex, "");
}

Test(sdk_hmac, hex_decode_accepts_upper_case)
{
    uint8_t out[4];

    cr_assert_eq(plugboard_hex_decode("DeadBEEF", 8, out, 4), 0);
    cr_assert_eq(out[0], 0xde);
    cr_assert_eq(out[1], 0xad);
    cr_assert_eq(out[2], 0xbe);
    cr_assert_eq(out[3], 0xef);
}

Test(sdk_hmac, hex_decode_rejects_bad_text)
{
    uint8_t out[4];

    cr_assert_eq(plugboard_hex_decode("deadbee", 7, out, 4), -1);
    cr_assert_eq(plugboard_hex_decode("deadbeef00", 10, out, 4), -1);
    cr_assert_eq(plugboard_hex_decode("deadbeeg", 8, out, 4), -1);
    cr_assert_eq(plugboard_hex_decode("dead bee", 8, out, 4), -1);
    cr_assert_eq(plugboard_hex_decode("", 0, out, 0), 0);
}

/* RFC 4648 section 10 */
Test(sdk_hmac, base64_rfc4648_vectors)
{
    static const struct {
        const char *in;
        const char *out;
    } v[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    char out[16];

    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        plugboard_base64_encode((const uint8_t *)v[i].in, strlen(v[i].in),
                                out);
        cr_assert_str_eq(out, v[i].out, "base64(\"%s\")", v[i].in);
    }
}

Test(sdk_hmac, base64_of_a_mac)
{
    uint8_t key[20];
    uint8_t mac[PLUGBOARD_SHA256_LEN];
    char out[45];

    fill(key, 0x0b, sizeof key);
    cr_assert_eq(plugboard_hmac_sha256(key, sizeof key, "Hi There", 8, mac),
                 0);
    plugboard_base64_encode(mac, sizeof mac, out);
    /* RFC 4231 case 1 in base64 (openssl dgst -binary | base64) */
    cr_assert_str_eq(out, "sDRMYdjbOFNcqK/OrwvxK4gdwgDJgz2nJuk3bC4yz/c=");
}

Test(sdk_hmac, base64_all_bytes)
{
    uint8_t in[256];
    char out[4 * 86 + 1];
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < sizeof in; i++) {
        in[i] = (uint8_t)i;
    }
    plugboard_base64_encode(in, sizeof in, out);
    cr_assert_eq(strlen(out), 4 * 86);
    cr_assert_str_eq(out + 4 * 86 - 4, "/w==");
    for (size_t i = 0; i < 4 * 86 - 2; i++) {
        cr_assert_not_null(strchr(alphabet, out[i]), "byte %zu", i);
    }
}
