/*
 * test_envelope.c - the envelope: builder -> frame -> decoded view, the
 * decoder's refusal of hostile frames, ids, and JSON rendering.
 *
 * Hostile frames are written byte by byte (struct bytes below) so each
 * test shows exactly what the attacker sent.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <msgpack.h>

#include "envelope.h"
#include "error.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* A growable byte string for writing frames by hand. */
struct bytes {
    uint8_t *p;
    size_t n;
};

static void
put(struct bytes *b, const void *src, size_t n)
{
    b->p = realloc(b->p, b->n + n + 1);
    cr_assert_not_null(b->p);
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void
put_u8(struct bytes *b, uint8_t v)
{
    put(b, &v, 1);
}

static void
put_be(struct bytes *b, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--)
        put_u8(b, (uint8_t)(v >> (8 * i)));
}

/* A fixstr (up to 31 bytes). */
static void
put_str(struct bytes *b, const char *s)
{
    put_u8(b, (uint8_t)(0xa0 | strlen(s)));
    put(b, s, strlen(s));
}

/* The required envelope fields and, as its last key, "data" with its
 * value left for the caller to append. */
static struct bytes
envelope_head(void)
{
    struct bytes b = {0};
    put_u8(&b, 0x85); /* map of 5 */
    put_str(&b, "id");
    put_str(&b, "01HZX3J8Q2W4E6R8T0Y2U4I6O8");
    put_str(&b, "type");
    put_str(&b, "payment.failed");
    put_str(&b, "source");
    put_str(&b, "payments");
    put_str(&b, "time");
    put_u8(&b, 0xcf); /* uint64 */
    put_be(&b, 1700000000000ull, 8);
    put_str(&b, "data");
    return b;
}

static pb_envelope_t *
decode(const struct bytes *b, int *err, char *why, size_t why_len)
{
    return pb_envelope_decode(b->p, b->n, NULL, err, why, why_len);
}

/* Assert the frame is refused as malformed, with a reason containing
 * what. */
static void
assert_rejected(const struct bytes *b, const char *what)
{
    char why[256] = "";
    int err = 0;
    pb_envelope_t *env = decode(b, &err, why, sizeof why);

    cr_assert_null(env, "frame accepted; expected '%s'", what);
    cr_assert_eq(err, PB_EPROTO, "err %d (%s)", err, why);
    cr_assert(strstr(why, what), "reason '%s' lacks '%s'", why, what);
}

/* Build and encode an event; the caller frees *frame. */
static pb_envelope_t *
round_trip(pb_builder_t *b, uint8_t **frame, size_t *len)
{
    char why[256] = "";
    int err = -1;

    cr_assert_eq(pb_builder_encode(b, frame, len), 0);
    pb_envelope_t *env =
        pb_envelope_decode(*frame, *len, NULL, &err, why, sizeof why);
    cr_assert_not_null(env, "decode failed: %s", why);
    cr_assert_eq(err, 0);
    return env;
}

/* A frame using most of what a builder can say, for truncation tests. */
static void
rich_frame(uint8_t **frame, size_t *len)
{
    pb_builder_t *b = pb_builder_new("payments", "payment.failed");
    cr_assert_not_null(b);
    cr_assert_eq(pb_builder_set_key(b, "ana@example.com"), 0);
    cr_assert_eq(pb_builder_set_dedupe_id(b, "evt_1N2b3C"), 0);
    cr_assert_eq(pb_builder_set_causation(b, "01HZX3J8Q2W4E6R8T0Y2U4I6O8"), 0);
    cr_assert_eq(
        pb_builder_set_string(b, "customer.email", "ana@example.com", 15), 0);
    cr_assert_eq(pb_builder_set_int(b, "amount", -1200), 0);
    cr_assert_eq(pb_builder_set_int(b, "big", INT64_MAX), 0);
    cr_assert_eq(pb_builder_set_bool(b, "retryable", true), 0);
    cr_assert_eq(pb_builder_set_null(b, "coupon"), 0);
    const char *items = "[1, \"two\", 3.5, {\"x\": [true, null]}]";
    cr_assert_eq(pb_builder_set_json(b, "items", items, strlen(items)), 0);
    cr_assert_eq(pb_builder_encode(b, frame, len), 0);
    pb_builder_destroy(&b);
}

/* ------------------------------------------------------------------ */
/* Round trips                                                         */
/* ------------------------------------------------------------------ */

Test(envelope, round_trip_keeps_every_envelope_field)
{
    pb_builder_t *b = pb_builder_new("payments", PLUGBOARD_EV_PAYMENT_FAILED);
    cr_assert_not_null(b);
    cr_assert_eq(pb_builder_set_key(b, "ana@example.com"), 0);
    cr_assert_eq(pb_builder_set_dedupe_id(b, "evt_1N2b3C"), 0);
    cr_assert_eq(pb_builder_set_time_ms(b, 1700000000123), 0);
    cr_assert_eq(pb_builder_set_correlation(b, "01HZX000000000000000000000"),
                 0);
    cr_assert_eq(pb_builder_set_causation(b, "01HZX111111111111111111111"), 0);
    cr_assert_eq(pb_builder_set_int(b, "amount", 1200), 0);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);

    cr_assert_eq(strlen(pb_envelope_id(env)), PB_ID_LEN);
    cr_assert_str_eq(pb_envelope_type(env), "payment.failed");
    cr_assert_str_eq(pb_envelope_source(env), "payments");
    cr_assert_str_eq(pb_envelope_key(env), "ana@example.com");
    cr_assert_str_eq(pb_envelope_dedupe_id(env), "evt_1N2b3C");
    cr_assert_str_eq(pb_envelope_correlation(env),
                     "01HZX000000000000000000000");
    cr_assert_eq(pb_envelope_time_ms(env), 1700000000123);
    cr_assert_eq(pb_envelope_attempt(env), 1);

    /* the SDK view reads the same object */
    cr_assert_str_eq(pb_event_type(env), "payment.failed");
    cr_assert_str_eq(pb_event_id(env), pb_envelope_id(env));
    cr_assert_str_eq(pb_event_source(env), "payments");
    cr_assert_str_eq(pb_event_key(env), "ana@example.com");
    cr_assert_eq(pb_event_time_ms(env), 1700000000123);
    cr_assert_eq(pb_event_attempt(env), 1);

    /* the envelope keeps the exact bytes it was given */
    size_t kept_len;
    const uint8_t *kept = pb_envelope_frame(env, &kept_len);
    cr_assert_eq(kept_len, len);
    cr_assert_eq(memcmp(kept, frame, len), 0);
    cr_assert_neq(kept, frame);

    pb_envelope_destroy(&env);
    cr_assert_null(env);
    pb_envelope_destroy(&env); /* idempotent */
    free(frame);
    pb_builder_destroy(&b);
    cr_assert_null(b);
}

Test(envelope, encode_fills_defaults)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    int64_t before = (int64_t)time(NULL) * 1000 - 1000;
    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    int64_t after = (int64_t)time(NULL) * 1000 + 1000;

    cr_assert_str_eq(pb_envelope_key(env), "");
    cr_assert_str_eq(pb_envelope_dedupe_id(env), "");
    cr_assert_eq(pb_envelope_attempt(env), 1);
    cr_assert(pb_envelope_time_ms(env) >= before &&
              pb_envelope_time_ms(env) <= after);
    /* a new event starts its own conversation */
    cr_assert_str_eq(pb_envelope_correlation(env), pb_envelope_id(env));
    cr_assert_eq(pb_event_kind(env, "anything"), PLUGBOARD_VALUE_MISSING);

    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, each_encode_gets_a_new_id)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    uint8_t *f1, *f2;
    size_t l1, l2;
    pb_envelope_t *e1 = round_trip(b, &f1, &l1);
    pb_envelope_t *e2 = round_trip(b, &f2, &l2);

    cr_assert(strcmp(pb_envelope_id(e1), pb_envelope_id(e2)) < 0);

    pb_envelope_destroy(&e1);
    pb_envelope_destroy(&e2);
    free(f1);
    free(f2);
    pb_builder_destroy(&b);
}

Test(envelope, round_trip_keeps_nested_data)
{
    pb_builder_t *b = pb_builder_new("payments", "payment.failed");
    const char *name = "Zoë Ångström 日本 ✓";
    cr_assert_eq(
        pb_builder_set_string(b, "customer.email", "zoe@example.com", 15), 0);
    cr_assert_eq(pb_builder_set_string(b, "customer.name", name, strlen(name)),
                 0);
    cr_assert_eq(pb_builder_set_int(b, "customer.address.zip", 10115), 0);
    cr_assert_eq(pb_builder_set_int(b, "amount", -1200), 0);
    cr_assert_eq(pb_builder_set_int(b, "max", INT64_MAX), 0);
    cr_assert_eq(pb_builder_set_int(b, "min", INT64_MIN), 0);
    cr_assert_eq(pb_builder_set_int(b, "zero", 0), 0);
    cr_assert_eq(pb_builder_set_bool(b, "paid", false), 0);
    cr_assert_eq(pb_builder_set_bool(b, "vip", true), 0);
    cr_assert_eq(pb_builder_set_null(b, "coupon"), 0);
    const char *items = "[1, \"two\", 3.5, {\"x\": true}]";
    cr_assert_eq(pb_builder_set_json(b, "items", items, strlen(items)), 0);
    cr_assert_eq(pb_builder_set_json(b, "ratio", "0.25", 4), 0);
    const char *obj = "{\"plan\": {\"id\": \"pro\", \"seats\": 3}}";
    cr_assert_eq(pb_builder_set_json(b, "sub", obj, strlen(obj)), 0);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    const char *s;
    size_t n;
    int64_t i;
    bool flag;

    cr_assert(pb_event_string(env, "customer.email", &s, &n));
    cr_assert_eq(n, 15);
    cr_assert_eq(memcmp(s, "zoe@example.com", n), 0);
    cr_assert(pb_event_string(env, "customer.name", &s, &n));
    cr_assert_eq(n, strlen(name));
    cr_assert_eq(memcmp(s, name, n), 0);
    cr_assert(pb_event_int(env, "customer.address.zip", &i));
    cr_assert_eq(i, 10115);
    cr_assert(pb_event_int(env, "amount", &i));
    cr_assert_eq(i, -1200);
    cr_assert(pb_event_int(env, "max", &i));
    cr_assert_eq(i, INT64_MAX);
    cr_assert(pb_event_int(env, "min", &i));
    cr_assert_eq(i, INT64_MIN);
    cr_assert(pb_event_int(env, "zero", &i));
    cr_assert_eq(i, 0);
    cr_assert(pb_event_bool(env, "paid", &flag));
    cr_assert_not(flag);
    cr_assert(pb_event_bool(env, "vip", &flag));
    cr_assert(flag);
    cr_assert(pb_event_string(env, "sub.plan.id", &s, &n));
    cr_assert_eq(memcmp(s, "pro", 3), 0);
    cr_assert(pb_event_int(env, "sub.plan.seats", &i));
    cr_assert_eq(i, 3);

    cr_assert_eq(pb_event_kind(env, "coupon"), PLUGBOARD_VALUE_NIL);
    cr_assert_eq(pb_event_kind(env, "vip"), PLUGBOARD_VALUE_BOOL);
    cr_assert_eq(pb_event_kind(env, "amount"), PLUGBOARD_VALUE_INT);
    cr_assert_eq(pb_event_kind(env, "ratio"), PLUGBOARD_VALUE_FLOAT);
    cr_assert_eq(pb_event_kind(env, "customer.name"), PLUGBOARD_VALUE_STRING);
    cr_assert_eq(pb_event_kind(env, "items"), PLUGBOARD_VALUE_ARRAY);
    cr_assert_eq(pb_event_kind(env, "customer"), PLUGBOARD_VALUE_MAP);
    cr_assert_eq(pb_event_kind(env, "sub.plan"), PLUGBOARD_VALUE_MAP);

    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, strings_may_hold_any_utf8_bytes_including_nul)
{
    pb_builder_t *b = pb_builder_new("mail", "email.bounced");
    cr_assert_eq(pb_builder_set_string(b, "blob", "a\0b", 3), 0);
    cr_assert_eq(pb_builder_set_string(b, "empty", NULL, 0), 0);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    const char *s;
    size_t n;

    cr_assert(pb_event_string(env, "blob", &s, &n));
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(s, "a\0b", 3), 0);
    cr_assert(pb_event_string(env, "empty", &s, &n));
    cr_assert_eq(n, 0);

    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, later_setters_replace_earlier_values)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    cr_assert_eq(pb_builder_set_int(b, "customer.age", 40), 0);
    cr_assert_eq(pb_builder_set_int(b, "customer.age", 41), 0);
    cr_assert_eq(pb_builder_set_string(b, "customer", "gone", 4), 0);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);

    cr_assert_eq(pb_event_kind(env, "customer"), PLUGBOARD_VALUE_STRING);
    cr_assert_eq(pb_event_kind(env, "customer.age"), PLUGBOARD_VALUE_MISSING);

    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, router_sets_attempt_without_touching_the_frame)
{
    pb_builder_t *b = pb_builder_new("payments", "payment.failed");
    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);

    pb_envelope_set_attempt(env, 3);
    cr_assert_eq(pb_envelope_attempt(env), 3);
    cr_assert_eq(pb_event_attempt(env), 3);
    size_t kept_len;
    const uint8_t *kept = pb_envelope_frame(env, &kept_len);
    cr_assert_eq(memcmp(kept, frame, len), 0);

    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

/* ------------------------------------------------------------------ */
/* Lookups                                                             */
/* ------------------------------------------------------------------ */

Test(envelope, lookups_miss_cleanly)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    cr_assert_eq(pb_builder_set_string(b, "customer.email", "a@b.c", 5), 0);
    cr_assert_eq(pb_builder_set_int(b, "customer.age", 42), 0);
    cr_assert_eq(pb_builder_set_int(b, "n", 5), 0);
    cr_assert_eq(pb_builder_set_json(b, "tags", "[\"x\"]", 5), 0);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    const char *s = "untouched";
    size_t n = 99;
    int64_t i = 77;
    bool flag = true;

    /* missing */
    cr_assert_eq(pb_event_kind(env, "customer.phone"), PLUGBOARD_VALUE_MISSING);
    cr_assert_not(pb_event_string(env, "customer.phone", &s, &n));
    cr_assert_not(pb_event_string(env, "nobody.email", &s, &n));
    /* crossing a scalar, or an array by a key */
    cr_assert_eq(pb_event_kind(env, "n.x"), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, "customer.email.domain"),
                 PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, "tags.x"), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, "tags.1"), PLUGBOARD_VALUE_MISSING);
    /* wrong kind */
    cr_assert_not(pb_event_int(env, "customer.email", &i));
    cr_assert_not(pb_event_string(env, "customer.age", &s, &n));
    cr_assert_not(pb_event_bool(env, "n", &flag));
    cr_assert_not(pb_event_string(env, "customer", &s, &n));
    /* malformed paths */
    cr_assert_eq(pb_event_kind(env, ""), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, NULL), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, ".customer"), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, "customer."), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, "customer..email"),
                 PLUGBOARD_VALUE_MISSING);
    /* keys compare by bytes: no prefix or case folding */
    cr_assert_eq(pb_event_kind(env, "Customer.email"), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, "customer.emai"), PLUGBOARD_VALUE_MISSING);
    /* outputs untouched on a miss */
    cr_assert_str_eq(s, "untouched");
    cr_assert_eq(n, 99);
    cr_assert_eq(i, 77);
    cr_assert(flag);

    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

/* Arrays are indexed by decimal segments, from 0: "ticket.tags.0". */
Test(envelope, array_elements_read_by_index)
{
    pb_builder_t *b = pb_builder_new("desk", "ticket.created");
    const char *tags = "[\"hardware\", \"urgent\"]";
    cr_assert_eq(pb_builder_set_json(b, "ticket.tags", tags, strlen(tags)), 0);
    const char *mix = "[7, true, null, {\"id\": \"c_1\", \"n\": [10, 20]},"
                      " [\"deep\"]]";
    cr_assert_eq(pb_builder_set_json(b, "mix", mix, strlen(mix)), 0);
    const char *obj = "{\"0\": \"key zero\", \"01\": \"key 01\"}";
    cr_assert_eq(pb_builder_set_json(b, "numbered", obj, strlen(obj)), 0);
    cr_assert_eq(pb_builder_set_json(b, "none", "[]", 2), 0);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    const char *s;
    size_t n;
    int64_t i;
    bool flag = false;

    cr_assert_eq(pb_event_kind(env, "ticket.tags.0"), PLUGBOARD_VALUE_STRING);
    cr_assert(pb_event_string(env, "ticket.tags.0", &s, &n));
    cr_expect(n == 8 && memcmp(s, "hardware", 8) == 0);
    cr_assert(pb_event_string(env, "ticket.tags.1", &s, &n));
    cr_expect(n == 6 && memcmp(s, "urgent", 6) == 0);
    cr_expect_eq(pb_event_kind(env, "ticket.tags.2"), PLUGBOARD_VALUE_MISSING);
    cr_assert(pb_event_int(env, "mix.0", &i));
    cr_expect_eq(i, 7);
    cr_assert(pb_event_bool(env, "mix.1", &flag));
    cr_expect(flag);
    cr_expect_eq(pb_event_kind(env, "mix.2"), PLUGBOARD_VALUE_NIL);
    /* nested: through a map in an array, an array in a map in an array */
    cr_assert(pb_event_string(env, "mix.3.id", &s, &n));
    cr_expect(n == 3 && memcmp(s, "c_1", 3) == 0);
    cr_assert(pb_event_int(env, "mix.3.n.1", &i));
    cr_expect_eq(i, 20);
    cr_assert(pb_event_string(env, "mix.4.0", &s, &n));
    cr_expect(n == 4 && memcmp(s, "deep", 4) == 0);
    cr_expect_eq(pb_event_kind(env, "mix.4"), PLUGBOARD_VALUE_ARRAY);
    /* in a map, a digit segment is a key like any other */
    cr_assert(pb_event_string(env, "numbered.0", &s, &n));
    cr_expect(n == 8 && memcmp(s, "key zero", 8) == 0);
    cr_assert(pb_event_string(env, "numbered.01", &s, &n));
    cr_expect(n == 6 && memcmp(s, "key 01", 6) == 0);
    cr_expect_eq(pb_event_kind(env, "none.0"), PLUGBOARD_VALUE_MISSING);

    /* counts: elements of an array, entries of a map, 0 for the rest */
    cr_expect_eq(pb_event_count(env, "ticket.tags"), 2);
    cr_expect_eq(pb_event_count(env, "mix"), 5);
    cr_expect_eq(pb_event_count(env, "mix.3"), 2);
    cr_expect_eq(pb_event_count(env, "mix.3.n"), 2);
    cr_expect_eq(pb_event_count(env, "ticket"), 1);
    cr_expect_eq(pb_event_count(env, "none"), 0);
    cr_expect_eq(pb_event_count(env, "mix.0"), 0, "a scalar");
    cr_expect_eq(pb_event_count(env, "ticket.tags.0"), 0, "a string");
    cr_expect_eq(pb_event_count(env, "absent"), 0);
    cr_expect_eq(pb_event_count(env, ""), 0);
    cr_expect_eq(pb_event_count(env, NULL), 0);
    cr_expect_eq(pb_event_count(NULL, "mix"), 0);

    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

/* An index segment that is not the plain decimal of an element in range
 * misses, whatever it holds. */
Test(envelope, hostile_indexes_miss)
{
    pb_builder_t *b = pb_builder_new("desk", "ticket.created");
    const char *tags = "[\"a\", \"b\", \"c\"]";
    cr_assert_eq(pb_builder_set_json(b, "tags", tags, strlen(tags)), 0);
    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    const char *s = "untouched";
    size_t n = 99;

    static const char *const bad[] = {
        "tags.3",  /* one past the end */
        "tags.-1", /* signs */
        "tags.+1",
        "tags.01", /* leading zeros */
        "tags.00",
        "tags. 1", /* spaces, other text */
        "tags.1 ",
        "tags.1x",
        "tags.0x1",
        "tags.1e0",
        "tags.1.5",        /* crossing a string */
        "tags.4294967296", /* 2^32, which a 32-bit index would wrap to 0 */
        "tags.18446744073709551616", /* 2^64, wraps a uint64 to 0 */
        "tags.18446744073709551617", /* wraps to 1 */
        "tags.99999999999999999999999999999999999999",
        "tags.",
        "tags..0",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        cr_expect_eq(pb_event_kind(env, bad[k]), PLUGBOARD_VALUE_MISSING, "%s",
                     bad[k]);
        cr_expect_not(pb_event_string(env, bad[k], &s, &n), "%s", bad[k]);
        cr_expect_eq(pb_event_count(env, bad[k]), 0, "%s", bad[k]);
    }
    cr_expect_str_eq(s, "untouched");
    cr_expect_eq(n, 99);
    cr_assert(pb_event_string(env, "tags.2", &s, &n));
    cr_expect(n == 1 && s[0] == 'c');
    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

/* An array declaring more elements than its frame holds is refused at
 * decode, so an index never walks past the frame; an index into a huge
 * (but honest) array16 reads its last element. */
Test(envelope, index_into_a_long_array_stays_in_the_frame)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0x81);
    put_str(&b, "a");
    put_u8(&b, 0xdc); /* array16 of 300 fixints */
    put_be(&b, 300, 2);
    for (int k = 0; k < 300; k++)
        put_u8(&b, (uint8_t)(k % 128));
    char why[256] = "";
    int err = -1;
    pb_envelope_t *env = decode(&b, &err, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    int64_t i = -1;
    cr_expect(pb_event_int(env, "a.299", &i));
    cr_expect_eq(i, 299 % 128);
    cr_expect_eq(pb_event_kind(env, "a.300"), PLUGBOARD_VALUE_MISSING);
    cr_expect_eq(pb_event_count(env, "a"), 300);
    pb_envelope_destroy(&env);
    free(b.p);
}

/* Every MessagePack format, written by hand, is walked and read. */
static struct bytes
every_format_frame(void)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0xde); /* map16 */
    put_be(&b, 34, 2);
    put_str(&b, "nil"), put_u8(&b, 0xc0);
    put_str(&b, "t"), put_u8(&b, 0xc3);
    put_str(&b, "f"), put_u8(&b, 0xc2);
    put_str(&b, "pfix"), put_u8(&b, 0x7f);
    put_str(&b, "nfix"), put_u8(&b, 0xe0);
    put_str(&b, "u8"), put_u8(&b, 0xcc), put_be(&b, 0xff, 1);
    put_str(&b, "u16"), put_u8(&b, 0xcd), put_be(&b, 0xffff, 2);
    put_str(&b, "u32"), put_u8(&b, 0xce), put_be(&b, 0xffffffff, 4);
    put_str(&b, "u64"), put_u8(&b, 0xcf), put_be(&b, UINT64_MAX, 8);
    put_str(&b, "u64s"), put_u8(&b, 0xcf), put_be(&b, INT64_MAX, 8);
    put_str(&b, "i8"), put_u8(&b, 0xd0), put_be(&b, 0x80, 1);
    put_str(&b, "i16"), put_u8(&b, 0xd1), put_be(&b, 0x8000, 2);
    put_str(&b, "i32"), put_u8(&b, 0xd2), put_be(&b, 0x80000000, 4);
    put_str(&b, "i64"), put_u8(&b, 0xd3), put_be(&b, 0x8000000000000000, 8);
    put_str(&b, "f32"), put_u8(&b, 0xca), put_be(&b, 0x3fc00000, 4); /* 1.5 */
    put_str(&b, "f64"), put_u8(&b, 0xcb);
    put_be(&b, 0xc004000000000000, 8); /* -2.5 */
    put_str(&b, "s8"), put_u8(&b, 0xd9), put_be(&b, 3, 1), put(&b, "abc", 3);
    put_str(&b, "s16"), put_u8(&b, 0xda), put_be(&b, 3, 2), put(&b, "def", 3);
    put_str(&b, "s32"), put_u8(&b, 0xdb), put_be(&b, 3, 4), put(&b, "ghi", 3);
    put_str(&b, "b8"), put_u8(&b, 0xc4), put_be(&b, 2, 1), put(&b, "\1\2", 2);
    put_str(&b, "b16"), put_u8(&b, 0xc5), put_be(&b, 1, 2), put_u8(&b, 0xff);
    put_str(&b, "b32"), put_u8(&b, 0xc6), put_be(&b, 0, 4);
    put_str(&b, "fe1"), put_u8(&b, 0xd4), put_u8(&b, 1), put(&b, "a", 1);
    put_str(&b, "fe2"), put_u8(&b, 0xd5), put_u8(&b, 1), put(&b, "ab", 2);
    put_str(&b, "fe4"), put_u8(&b, 0xd6), put_u8(&b, 1), put(&b, "abcd", 4);
    put_str(&b, "fe8"), put_u8(&b, 0xd7), put_u8(&b, 0xff);
    put(&b, "abcdefgh", 8);
    put_str(&b, "fe16"), put_u8(&b, 0xd8), put_u8(&b, 2);
    put(&b, "abcdefghijklmnop", 16);
    put_str(&b, "e8"), put_u8(&b, 0xc7), put_be(&b, 3, 1), put_u8(&b, 5);
    put(&b, "xyz", 3);
    put_str(&b, "e16"), put_u8(&b, 0xc8), put_be(&b, 1, 2), put_u8(&b, 5);
    put(&b, "x", 1);
    put_str(&b, "e32"), put_u8(&b, 0xc9), put_be(&b, 0, 4), put_u8(&b, 5);
    put_str(&b, "a16"), put_u8(&b, 0xdc), put_be(&b, 2, 2);
    put_u8(&b, 0x01), put_u8(&b, 0x02);
    put_str(&b, "a32"), put_u8(&b, 0xdd), put_be(&b, 1, 4), put_u8(&b, 0xc0);
    put_str(&b, "m16"), put_u8(&b, 0xde), put_be(&b, 1, 2);
    put_str(&b, "k"), put_u8(&b, 0x01);
    put_str(&b, "m32"), put_u8(&b, 0xdf), put_be(&b, 1, 4);
    put_str(&b, "k"), put_u8(&b, 0x02);
    return b;
}

Test(envelope, walker_reads_every_msgpack_format)
{
    struct bytes b = every_format_frame();
    char why[256] = "";
    int err = -1;
    pb_envelope_t *env = decode(&b, &err, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    int64_t i;
    bool flag;
    const char *s;
    size_t n;

    cr_assert_eq(pb_event_kind(env, "nil"), PLUGBOARD_VALUE_NIL);
    cr_assert(pb_event_bool(env, "t", &flag) && flag);
    cr_assert(pb_event_bool(env, "f", &flag) && !flag);
    cr_assert(pb_event_int(env, "pfix", &i) && i == 127);
    cr_assert(pb_event_int(env, "nfix", &i) && i == -32);
    cr_assert(pb_event_int(env, "u8", &i) && i == 255);
    cr_assert(pb_event_int(env, "u16", &i) && i == 65535);
    cr_assert(pb_event_int(env, "u32", &i) && i == 4294967295);
    /* an unsigned value past INT64_MAX is an int that no int64 holds */
    cr_assert_eq(pb_event_kind(env, "u64"), PLUGBOARD_VALUE_INT);
    cr_assert_not(pb_event_int(env, "u64", &i));
    cr_assert(pb_event_int(env, "u64s", &i) && i == INT64_MAX);
    cr_assert(pb_event_int(env, "i8", &i) && i == -128);
    cr_assert(pb_event_int(env, "i16", &i) && i == -32768);
    cr_assert(pb_event_int(env, "i32", &i) && i == INT32_MIN);
    cr_assert(pb_event_int(env, "i64", &i) && i == INT64_MIN);
    cr_assert_eq(pb_event_kind(env, "f32"), PLUGBOARD_VALUE_FLOAT);
    cr_assert_eq(pb_event_kind(env, "f64"), PLUGBOARD_VALUE_FLOAT);
    cr_assert(pb_event_string(env, "s8", &s, &n) && n == 3 &&
              !memcmp(s, "abc", 3));
    cr_assert(pb_event_string(env, "s16", &s, &n) && !memcmp(s, "def", 3));
    cr_assert(pb_event_string(env, "s32", &s, &n) && !memcmp(s, "ghi", 3));
    /* binary reads as bytes with a length */
    cr_assert(pb_event_string(env, "b8", &s, &n) && n == 2 &&
              !memcmp(s, "\1\2", 2));
    cr_assert(pb_event_string(env, "b32", &s, &n) && n == 0);
    /* extensions have no SDK kind */
    cr_assert_eq(pb_event_kind(env, "fe16"), PLUGBOARD_VALUE_MISSING);
    cr_assert_eq(pb_event_kind(env, "a16"), PLUGBOARD_VALUE_ARRAY);
    cr_assert_eq(pb_event_kind(env, "a32"), PLUGBOARD_VALUE_ARRAY);
    cr_assert(pb_event_int(env, "m16.k", &i) && i == 1);
    cr_assert(pb_event_int(env, "m32.k", &i) && i == 2);

    pb_envelope_destroy(&env);
    free(b.p);
}

/* ------------------------------------------------------------------ */
/* Hostile frames                                                      */
/* ------------------------------------------------------------------ */

Test(envelope, rejects_string_longer_than_the_frame)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0x81);
    put_str(&b, "s");
    put_u8(&b, 0xdb); /* str32 claiming 4 GiB, 3 bytes present */
    put_be(&b, 0xffffffff, 4);
    put(&b, "abc", 3);
    assert_rejected(&b, "string length 4294967295 exceeds the 3 bytes left "
                        "at offset");
    free(b.p);
}

Test(envelope, rejects_binary_and_extension_longer_than_the_frame)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0x81);
    put_str(&b, "b");
    put_u8(&b, 0xc6);
    put_be(&b, 0x7fffffff, 4);
    put_u8(&b, 0);
    assert_rejected(&b, "binary length 2147483647 exceeds the 1 bytes left");
    free(b.p);

    b = envelope_head();
    put_u8(&b, 0x81);
    put_str(&b, "e");
    put_u8(&b, 0xd8); /* fixext16 with 2 bytes */
    put_u8(&b, 1);
    put(&b, "ab", 2);
    assert_rejected(&b, "extension length 16 exceeds the 2 bytes left");
    free(b.p);
}

Test(envelope, rejects_array_count_larger_than_the_frame)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0x81);
    put_str(&b, "a");
    put_u8(&b, 0xdd); /* array32 of 4294967295 items, 2 bytes present */
    put_be(&b, 0xffffffff, 4);
    put_u8(&b, 0x01);
    put_u8(&b, 0x02);
    assert_rejected(&b, "array count 4294967295 exceeds the 2 bytes left");
    free(b.p);
}

Test(envelope, rejects_map_count_larger_than_the_frame)
{
    /* at top level */
    struct bytes b = {0};
    put_u8(&b, 0xdf);
    put_be(&b, 0xffffffff, 4);
    put_str(&b, "id");
    put_str(&b, "x");
    assert_rejected(&b, "map count 4294967295 needs 8589934590 bytes but "
                        "only 5 are left at offset 0");
    free(b.p);

    /* a count that needs exactly one byte more than present */
    b = envelope_head();
    put_u8(&b, 0x82);
    put_u8(&b, 0x01);
    put_u8(&b, 0x02);
    put_u8(&b, 0x03);
    assert_rejected(&b, "map count 2 needs 4 bytes but only 3 are left");
    free(b.p);
}

/* data = {"a": [[...[]...]]} nested so the deepest array sits at level
 * depth (the envelope map is level 1, data level 2). */
static struct bytes
nested_frame(int depth)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0x81);
    put_str(&b, "a");
    for (int level = 3; level < depth; level++)
        put_u8(&b, 0x91);
    put_u8(&b, 0x90);
    return b;
}

Test(envelope, nesting_at_the_limit_passes_and_deeper_fails)
{
    struct bytes ok = nested_frame(PB_ENVELOPE_DEFAULT_MAX_DEPTH);
    struct bytes deep = nested_frame(PB_ENVELOPE_DEFAULT_MAX_DEPTH + 1);
    char why[256];
    int err;

    pb_envelope_t *env = decode(&ok, &err, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    cr_assert_eq(pb_event_kind(env, "a"), PLUGBOARD_VALUE_ARRAY);
    pb_envelope_destroy(&env);
    assert_rejected(&deep, "nesting deeper than 32 at offset");

    /* a caller's own limit applies */
    pb_envelope_limits_t tight = {.max_frame = 0, .max_depth = 4};
    struct bytes four = nested_frame(4), five = nested_frame(5);
    env = pb_envelope_decode(four.p, four.n, &tight, &err, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    pb_envelope_destroy(&env);
    env = pb_envelope_decode(five.p, five.n, &tight, &err, why, sizeof why);
    cr_assert_null(env);
    cr_assert_eq(err, PB_EPROTO);
    cr_assert(strstr(why, "nesting deeper than 4"), "%s", why);

    free(ok.p);
    free(deep.p);
    free(four.p);
    free(five.p);
}

Test(envelope, rejects_a_nesting_bomb_without_recursing)
{
    /* 100000 nested one-element arrays: the walker neither recurses nor
     * allocates per level, even with a permissive limit */
    struct bytes b = nested_frame(100000);
    pb_envelope_limits_t loose = {.max_depth = 1000000};
    char why[256];
    int err;

    assert_rejected(&b, "nesting deeper than 32");
    pb_envelope_t *env =
        pb_envelope_decode(b.p, b.n, &loose, &err, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    char *json = pb_event_to_json(env); /* too deep to render: NULL */
    cr_assert_null(json);
    pb_envelope_destroy(&env);
    free(b.p);
}

Test(envelope, rejects_every_truncation_of_a_valid_frame)
{
    uint8_t *frame;
    size_t len;
    rich_frame(&frame, &len);

    for (size_t cut = 0; cut < len; cut++) {
        /* an exact-size copy so the sanitizer sees any overread */
        uint8_t *prefix = malloc(cut ? cut : 1);
        memcpy(prefix, frame, cut);
        char why[256] = "";
        int err = 0;
        pb_envelope_t *env =
            pb_envelope_decode(prefix, cut, NULL, &err, why, sizeof why);
        cr_assert_null(env, "prefix of %zu/%zu bytes accepted", cut, len);
        cr_assert_eq(err, PB_EPROTO, "prefix %zu: err %d", cut, err);
        cr_assert_neq(why[0], '\0', "prefix %zu: no reason", cut);
        free(prefix);
    }
    free(frame);
}

Test(envelope, rejects_trailing_bytes)
{
    uint8_t *frame;
    size_t len;
    rich_frame(&frame, &len);
    struct bytes b = {0};
    put(&b, frame, len);
    put_u8(&b, 0xc0);
    put_u8(&b, 0xc0);

    char why[256];
    assert_rejected(&b, "2 unexpected bytes after the envelope");
    snprintf(why, sizeof why, "at offset %zu", len);
    assert_rejected(&b, why);
    free(b.p);
    free(frame);
}

Test(envelope, rejects_reserved_type_byte)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0x81);
    put_str(&b, "x");
    put_u8(&b, 0xc1);
    assert_rejected(&b, "invalid type byte 0xc1");
    free(b.p);
}

Test(envelope, rejects_top_level_that_is_not_a_map)
{
    static const struct {
        uint8_t bytes[4];
        size_t n;
        const char *what;
    } cases[] = {
        {{0x90}, 1, "envelope is an array, not a map"},
        {{0xa1, 'x'}, 2, "envelope is a string, not a map"},
        {{0x05}, 1, "envelope is an integer, not a map"},
        {{0xc0}, 1, "envelope is nil, not a map"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bytes b = {0};
        put(&b, cases[i].bytes, cases[i].n);
        assert_rejected(&b, cases[i].what);
        free(b.p);
    }
}

Test(envelope, rejects_empty_frame)
{
    int err = 0;
    char why[64];
    cr_assert_null(pb_envelope_decode("", 0, NULL, &err, why, sizeof why));
    cr_assert_eq(err, PB_EPROTO);
    cr_assert_null(pb_envelope_decode(NULL, 0, NULL, &err, NULL, 0));
    cr_assert_eq(err, PB_EPROTO);
}

/* An envelope with the usual fields, leaving one out (omit) or giving one
 * a value of the wrong kind (mistype). */
static struct bytes
frame_without(const char *omit, const char *mistype)
{
    static const char *const fields[] = {"id",   "type",    "source", "key",
                                         "time", "attempt", "data"};
    const size_t count = sizeof fields / sizeof fields[0];
    struct bytes b = {0};

    put_u8(&b, (uint8_t)(0x80 | (count - (omit ? 1 : 0))));
    for (size_t i = 0; i < count; i++) {
        const char *f = fields[i];
        if (omit && strcmp(f, omit) == 0)
            continue;
        put_str(&b, f);
        bool wrong = mistype && strcmp(f, mistype) == 0;
        bool numeric = !strcmp(f, "time") || !strcmp(f, "attempt");
        if (wrong && (numeric || !strcmp(f, "data")))
            put_str(&b, "oops");
        else if (wrong)
            put_u8(&b, 0x07);
        else if (!strcmp(f, "time"))
            put_be(&b, 0xd3, 1), put_be(&b, 1700000000000, 8);
        else if (!strcmp(f, "attempt"))
            put_u8(&b, 0x02);
        else if (!strcmp(f, "data"))
            put_u8(&b, 0x80);
        else if (!strcmp(f, "type"))
            put_str(&b, "ticket.created");
        else
            put_str(&b, "x1");
    }
    return b;
}

Test(envelope, rejects_missing_required_fields)
{
    static const char *const required[] = {"id", "type", "source", "time",
                                           "data"};
    char what[64];

    for (size_t i = 0; i < 5; i++) {
        struct bytes b = frame_without(required[i], NULL);
        snprintf(what, sizeof what, "missing required field '%s'", required[i]);
        assert_rejected(&b, what);
        free(b.p);
    }
    /* key and attempt are optional: attempt defaults to 1 */
    struct bytes b = frame_without("attempt", NULL);
    int err;
    pb_envelope_t *env = decode(&b, &err, NULL, 0);
    cr_assert_not_null(env);
    cr_assert_eq(pb_envelope_attempt(env), 1);
    pb_envelope_destroy(&env);
    free(b.p);
    b = frame_without("key", NULL);
    env = decode(&b, &err, NULL, 0);
    cr_assert_not_null(env);
    cr_assert_str_eq(pb_envelope_key(env), "");
    pb_envelope_destroy(&env);
    free(b.p);
}

Test(envelope, rejects_wrongly_typed_fields)
{
    static const struct {
        const char *field;
        const char *what;
    } cases[] = {
        {"id", "field 'id' at offset 4 is an integer, not a string"},
        {"type", "field 'type' at offset"},
        {"source", "field 'source' at offset"},
        {"key", "field 'key' at offset"},
        {"time", "field 'time' at offset"},
        {"attempt", "field 'attempt' at offset"},
        {"data", "is a string, not a map"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bytes b = frame_without(NULL, cases[i].field);
        assert_rejected(&b, cases[i].what);
        free(b.p);
    }

    /* the well-typed frame is fine */
    struct bytes b = frame_without(NULL, NULL);
    int err;
    pb_envelope_t *env = decode(&b, &err, NULL, 0);
    cr_assert_not_null(env);
    cr_assert_eq(pb_envelope_attempt(env), 2);
    pb_envelope_destroy(&env);
    free(b.p);
}

Test(envelope, rejects_bad_envelope_keys_and_values)
{
    /* a non-string key */
    struct bytes b = {0};
    put_u8(&b, 0x81);
    put_u8(&b, 0x01);
    put_u8(&b, 0x02);
    assert_rejected(&b, "envelope key at offset 1 is an integer, not a string");
    free(b.p);

    /* a duplicate field */
    b = envelope_head();
    b.p[0] = 0x86;
    put_u8(&b, 0x80);
    put_str(&b, "type");
    put_str(&b, "payment.succeeded");
    assert_rejected(&b, "duplicate field 'type'");
    free(b.p);

    /* a type that is not an event type name */
    b = frame_without("type", NULL);
    b.p[0]++;
    put_str(&b, "type");
    put_str(&b, "Payment Failed");
    assert_rejected(&b, "field 'type' at offset");
    free(b.p);

    /* a negative attempt */
    b = frame_without("attempt", NULL);
    b.p[0]++;
    put_str(&b, "attempt");
    put_u8(&b, 0xff);
    assert_rejected(&b, "field 'attempt' at offset");
    free(b.p);

    /* an envelope string with a NUL byte in it */
    b = frame_without("key", NULL);
    b.p[0]++;
    put_str(&b, "key");
    put_u8(&b, 0xa3);
    put(&b, "a\0b", 3);
    assert_rejected(&b, "contains a NUL byte");
    free(b.p);
}

Test(envelope, unknown_envelope_fields_are_ignored)
{
    struct bytes b = frame_without("key", NULL);
    b.p[0]++;
    put_str(&b, "future");
    put_u8(&b, 0x92), put_u8(&b, 0x01), put_u8(&b, 0x80);
    int err;
    pb_envelope_t *env = decode(&b, &err, NULL, 0);
    cr_assert_not_null(env);
    pb_envelope_destroy(&env);
    free(b.p);
}

Test(envelope, rejects_frame_larger_than_the_limit)
{
    uint8_t *frame;
    size_t len;
    rich_frame(&frame, &len);
    pb_envelope_limits_t small = {.max_frame = len - 1,
                                  .max_depth = PB_ENVELOPE_DEFAULT_MAX_DEPTH};
    char why[256];
    int err = 0;

    cr_assert_null(
        pb_envelope_decode(frame, len, &small, &err, why, sizeof why));
    cr_assert_eq(err, PB_ETOOBIG);
    cr_assert(strstr(why, "exceeds the limit"), "%s", why);

    small.max_frame = len;
    pb_envelope_t *env =
        pb_envelope_decode(frame, len, &small, &err, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    pb_envelope_destroy(&env);
    free(frame);
}

Test(envelope, decoder_keeps_no_state_between_frames)
{
    struct bytes bad = envelope_head();
    put_u8(&bad, 0xdd);
    put_be(&bad, 0xffffffff, 4);
    uint8_t *frame;
    size_t len;
    rich_frame(&frame, &len);
    int err;

    for (int round = 0; round < 3; round++) {
        cr_assert_null(decode(&bad, &err, NULL, 0));
        pb_envelope_t *env =
            pb_envelope_decode(frame, len, NULL, &err, NULL, 0);
        cr_assert_not_null(env);
        cr_assert_eq(err, 0);
        cr_assert_str_eq(pb_envelope_key(env), "ana@example.com");
        pb_envelope_destroy(&env);
    }
    free(bad.p);
    free(frame);
}

/* ------------------------------------------------------------------ */
/* Ids                                                                 */
/* ------------------------------------------------------------------ */

Test(envelope, ids_are_unique_and_strictly_increasing)
{
    static char ids[1000][PB_ID_LEN + 1];
    const char *crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    for (int i = 0; i < 1000; i++) {
        pb_id_new(ids[i]);
        cr_assert_eq(strlen(ids[i]), PB_ID_LEN);
        cr_assert_eq(strspn(ids[i], crockford), PB_ID_LEN, "%s", ids[i]);
        if (i > 0)
            cr_assert(strcmp(ids[i - 1], ids[i]) < 0, "%s then %s", ids[i - 1],
                      ids[i]);
    }
}

Test(envelope, id_starts_with_the_time)
{
    char a[PB_ID_LEN + 1], b[PB_ID_LEN + 1];
    pb_id_new(a);
    struct timespec pause = {.tv_nsec = 3 * 1000 * 1000};
    nanosleep(&pause, NULL);
    pb_id_new(b);
    /* the first 10 characters are the millisecond; they moved on */
    cr_assert(strncmp(a, b, 10) < 0, "%s then %s", a, b);
}

#define ID_THREADS 4
#define ID_PER_THREAD 1000

static char s_thread_ids[ID_THREADS * ID_PER_THREAD][PB_ID_LEN + 1];

static void *
make_ids(void *arg)
{
    char(*mine)[PB_ID_LEN + 1] = arg;
    for (int i = 0; i < ID_PER_THREAD; i++)
        pb_id_new(mine[i]);
    return NULL;
}

static int
cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

Test(envelope, ids_from_many_threads_never_collide)
{
    pthread_t t[ID_THREADS];
    for (int i = 0; i < ID_THREADS; i++)
        pthread_create(&t[i], NULL, make_ids, s_thread_ids[i * ID_PER_THREAD]);
    for (int i = 0; i < ID_THREADS; i++)
        pthread_join(t[i], NULL);
    qsort(s_thread_ids, ID_THREADS * ID_PER_THREAD, PB_ID_LEN + 1, cmp_id);
    for (int i = 1; i < ID_THREADS * ID_PER_THREAD; i++)
        cr_assert_neq(strcmp(s_thread_ids[i - 1], s_thread_ids[i]), 0);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */
/* ------------------------------------------------------------------ */

Test(envelope, to_json_is_one_parseable_object_with_the_data)
{
    uint8_t *frame;
    size_t len;
    rich_frame(&frame, &len);
    pb_envelope_t *env = pb_envelope_decode(frame, len, NULL, NULL, NULL, 0);
    cr_assert_not_null(env);
    pb_envelope_set_attempt(env, 2);

    char *text = pb_event_to_json(env);
    cr_assert_not_null(text);
    cr_assert_null(strchr(text, '\n'));
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    cr_assert_not_null(j, "%s: %s", jerr.text, text);

    cr_assert_str_eq(json_string_value(json_object_get(j, "id")),
                     pb_envelope_id(env));
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")),
                     "payment.failed");
    cr_assert_str_eq(json_string_value(json_object_get(j, "source")),
                     "payments");
    cr_assert_str_eq(json_string_value(json_object_get(j, "key")),
                     "ana@example.com");
    cr_assert_eq(json_integer_value(json_object_get(j, "time")),
                 pb_envelope_time_ms(env));
    cr_assert_eq(json_integer_value(json_object_get(j, "attempt")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(j, "dedupe")),
                     "evt_1N2b3C");
    cr_assert_str_eq(json_string_value(json_object_get(j, "causation")),
                     "01HZX3J8Q2W4E6R8T0Y2U4I6O8");

    json_t *data = json_object_get(j, "data");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(data, "customer"), "email")),
                     "ana@example.com");
    cr_assert_eq(json_integer_value(json_object_get(data, "amount")), -1200);
    cr_assert_eq(json_integer_value(json_object_get(data, "big")), INT64_MAX);
    cr_assert(json_is_true(json_object_get(data, "retryable")));
    cr_assert(json_is_null(json_object_get(data, "coupon")));
    json_t *items = json_object_get(data, "items");
    cr_assert_eq(json_array_size(items), 4);
    cr_assert_str_eq(json_string_value(json_array_get(items, 1)), "two");
    cr_assert(json_is_real(json_array_get(items, 2)));
    cr_assert_float_eq(json_real_value(json_array_get(items, 2)), 3.5, 1e-12);

    json_decref(j);
    free(text);
    pb_envelope_destroy(&env);
    free(frame);
}

Test(envelope, to_json_spells_what_json_lacks)
{
    struct bytes b = every_format_frame();
    pb_envelope_t *env = decode(&b, NULL, NULL, 0);
    cr_assert_not_null(env);
    char *text = pb_event_to_json(env);
    cr_assert_not_null(text);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j, "%s", text);
    json_t *data = json_object_get(j, "data");

    /* no key, no correlation: key is "", correlation is left out */
    cr_assert_str_eq(json_string_value(json_object_get(j, "key")), "");
    cr_assert_null(json_object_get(j, "correlation"));
    /* uint64 past INT64_MAX keeps every digit as a string */
    cr_assert_str_eq(json_string_value(json_object_get(data, "u64")),
                     "18446744073709551615");
    cr_assert_eq(json_integer_value(json_object_get(data, "i64")), INT64_MIN);
    /* floats as reals, bytes as base64, extensions as type + base64 */
    cr_assert_float_eq(json_real_value(json_object_get(data, "f32")), 1.5,
                       1e-12);
    cr_assert_float_eq(json_real_value(json_object_get(data, "f64")), -2.5,
                       1e-12);
    cr_assert_str_eq(json_string_value(json_object_get(data, "b8")), "AQI=");
    cr_assert_str_eq(json_string_value(json_object_get(data, "b16")), "/w==");
    cr_assert_str_eq(json_string_value(json_object_get(data, "b32")), "");
    json_t *ext = json_object_get(data, "e8");
    cr_assert_eq(json_integer_value(json_object_get(ext, "ext")), 5);
    cr_assert_str_eq(json_string_value(json_object_get(ext, "data")), "eHl6");
    cr_assert_eq(
        json_integer_value(json_object_get(json_object_get(data, "m32"), "k")),
        2);

    json_decref(j);
    free(text);
    pb_envelope_destroy(&env);
    free(b.p);
}

Test(envelope, to_json_survives_invalid_utf8_in_a_frame)
{
    struct bytes b = envelope_head();
    put_u8(&b, 0x81);
    put_u8(&b, 0xa2), put(&b, "k\xff", 2);
    put_u8(&b, 0xa3), put(&b, "a\xc0z", 3);
    pb_envelope_t *env = decode(&b, NULL, NULL, 0);
    cr_assert_not_null(env);
    char *text = pb_event_to_json(env);
    cr_assert_not_null(text);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j, "%s", text);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(j, "data"), "k\xef\xbf\xbd")),
                     "a\xef\xbf\xbdz");
    json_decref(j);
    free(text);
    pb_envelope_destroy(&env);
    free(b.p);
}

/* ------------------------------------------------------------------ */
/* Builder rules                                                       */
/* ------------------------------------------------------------------ */

Test(envelope, builder_rejects_invalid_type_names)
{
    static const char *const bad[] = {
        "",         "Payment.failed", "payment..failed", ".payment",
        "payment.", "payment failed", "payment-failed",  "payment.*",
        "paymént",  "a.b\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pb_builder_t *b = pb_builder_new("payments", bad[i]);
        cr_assert_null(b, "'%s' accepted", bad[i]);
    }
    cr_assert_null(pb_builder_new("payments", NULL));

    char longest[66];
    memset(longest, 'a', 65);
    longest[65] = '\0';
    cr_assert_null(pb_builder_new("payments", longest));
    longest[64] = '\0';
    pb_builder_t *b = pb_builder_new("payments", longest);
    cr_assert_not_null(b);
    pb_builder_destroy(&b);

    static const char *const good[] = {"a", "payment.failed", "x_1.y_2.z3",
                                       "plugboard.delivery.dead"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        b = pb_builder_new("payments", good[i]);
        cr_assert_not_null(b, "'%s' refused", good[i]);
        pb_builder_destroy(&b);
    }
}

Test(envelope, builder_rejects_a_path_crossing_a_scalar)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    cr_assert_eq(pb_builder_set_int(b, "customer", 1), 0);
    cr_assert_eq(pb_builder_set_string(b, "customer.email", "a@b.c", 5),
                 PB_EINVAL);
    cr_assert_eq(pb_builder_set_int(b, "customer.x.y", 2), PB_EINVAL);
    cr_assert_eq(pb_builder_set_json(b, "tags", "[1]", 3), 0);
    cr_assert_eq(pb_builder_set_bool(b, "tags.first", true), PB_EINVAL);

    /* nothing was changed by the failed calls */
    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    int64_t i;
    cr_assert(pb_event_int(env, "customer", &i) && i == 1);
    cr_assert_eq(pb_event_kind(env, "tags"), PLUGBOARD_VALUE_ARRAY);
    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, builder_rejects_empty_paths_and_segments)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    static const char *const bad[] = {"", ".", "a..b", ".a", "a."};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(pb_builder_set_int(b, bad[i], 1), PB_EINVAL, "'%s'",
                     bad[i]);
    cr_assert_eq(pb_builder_set_null(b, NULL), PB_EINVAL);
    cr_assert_eq(pb_builder_set_int(b, "a\xff", 1), PB_EINVAL);
    pb_builder_destroy(&b);
}

Test(envelope, builder_rejects_invalid_utf8)
{
    pb_builder_t *b = pb_builder_new("mail", "email.bounced");
    static const struct {
        const char *s;
        size_t n;
    } bad[] = {
        {"\xff", 1},             /* never valid */
        {"\xc0\xaf", 2},         /* overlong '/' */
        {"\xed\xa0\x80", 3},     /* surrogate */
        {"\xf4\x90\x80\x80", 4}, /* past U+10FFFF */
        {"ab\xe2\x82", 4},       /* cut short */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(pb_builder_set_string(b, "x", bad[i].s, bad[i].n),
                     PB_EINVAL, "case %zu", i);
    cr_assert_eq(pb_builder_set_string(b, "x", "\xe2\x82\xac", 3), 0);
    cr_assert_eq(pb_builder_set_key(b, "\xff"), PB_EINVAL);
    pb_builder_destroy(&b);
}

Test(envelope, builder_rejects_invalid_json)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    static const char *const bad[] = {
        "", "{", "[1,]", "{\"a\" 1}", "nul", "1 2", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(pb_builder_set_json(b, "x", bad[i], strlen(bad[i])),
                     PB_EINVAL, "'%s'", bad[i]);
    /* len bounds the text: what follows is not read */
    cr_assert_eq(pb_builder_set_json(b, "x", "12garbage", 2), 0);
    cr_assert_eq(pb_builder_set_json(b, "s", "\"a\\u0000b\"", 10), 0);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    int64_t i;
    const char *s;
    size_t n;
    cr_assert(pb_event_int(env, "x", &i) && i == 12);
    cr_assert(pb_event_string(env, "s", &s, &n) && n == 3);
    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, builder_limits_envelope_strings)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    char text[258];
    memset(text, 'k', 257);
    text[257] = '\0';
    cr_assert_eq(pb_builder_set_key(b, text), PB_EINVAL);
    cr_assert_eq(pb_builder_set_dedupe_id(b, text), PB_EINVAL);
    cr_assert_eq(pb_builder_set_correlation(b, text), PB_EINVAL);
    cr_assert_eq(pb_builder_set_causation(b, text), PB_EINVAL);
    text[256] = '\0';
    cr_assert_eq(pb_builder_set_key(b, text), 0);
    cr_assert_eq(pb_builder_set_time_ms(b, -1), PB_EINVAL);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    cr_assert_str_eq(pb_envelope_key(env), text);
    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, builder_keeps_data_within_the_depth_limit)
{
    /* envelope 1 + data 2 + 30 more segments = 32: decodable */
    char path[128] = "a";
    for (int i = 1; i < 31; i++)
        strcat(path, ".a");
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    cr_assert_eq(pb_builder_set_int(b, path, 1), 0);
    strcat(path, ".a");
    cr_assert_eq(pb_builder_set_int(b, path, 1), PB_EINVAL);
    /* under one segment a value may nest 30 deep: 1 + 1 + 30 = 32 */
    char json[64];
    memset(json, '[', 30);
    memset(json + 30, ']', 30);
    cr_assert_eq(pb_builder_set_json(b, "x", json, 60), 0);
    memset(json, '[', 31);
    memset(json + 31, ']', 31);
    cr_assert_eq(pb_builder_set_json(b, "y", json, 62), PB_EINVAL);

    uint8_t *frame;
    size_t len;
    pb_envelope_t *env = round_trip(b, &frame, &len);
    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(envelope, encode_refuses_frames_over_the_limit)
{
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    size_t mib = 1024 * 1024;
    char *big = malloc(mib);
    memset(big, 'x', mib);
    char path[8];
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "f%d", i);
        cr_assert_eq(pb_builder_set_string(b, path, big, mib), 0);
    }
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), PB_ETOOBIG);
    cr_assert_null(frame);
    free(big);
    pb_builder_destroy(&b);
}
