/*
 * test_stripe.c - the Stripe connector, loaded as the real stripe.so and
 * driven through the test harness: signature rules, event mapping from
 * real sample payloads, failure answers and counters.
 *
 * Payloads are signed here with the current time, the way Stripe signs
 * them; the signature is computed with OpenSSL directly so these tests do
 * not lean on the SDK helper the connector itself uses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "harness.h"
#include "hostapi.h"
#include "http.h"
#include "loader.h"

#define PLUGIN PB_PLUGIN_DIR "/stripe.so"
#define FIXTURES PB_SOURCE_DIR "/tests/fixtures/stripe/"
#define SECRET "whsec_plugboard_test_secret_0123456789abcdef"
#define PREVIOUS "whsec_plugboard_previous_secret_fedcba9876543210"
#define OTHER "whsec_someone_elses_secret"
#define ZERO_EVT "evt_000000000000000000000000"
/* Secret settings are read from the environment, never inline. */
#define SECRET_SETTING "signing_secret=env:PB_TEST_STRIPE_SECRET"
#define PREVIOUS_SETTING "signing_secret_previous=env:PB_TEST_STRIPE_PREVIOUS"
#define SDK_SECRET_SETTING "signing_secret=env:PB_TEST_STRIPE_SDK_SECRET"
#define API_KEY_SETTING "signing_secret=env:PB_TEST_STRIPE_API_KEY"

static const char *const s_default_settings[] = {
    SECRET_SETTING,
    NULL,
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static pb_harness_t *
open_with(const char *const *settings)
{
    char err[512] = "";
    pb_harness_t *h = pb_harness_open(PLUGIN, NULL, settings, err,
                                      sizeof err);

    cr_assert_not_null(h, "cannot open %s: %s", PLUGIN, err);
    return h;
}

static pb_harness_t *
open_default(void)
{
    return open_with(s_default_settings);
}

static char *
fixture(const char *name, size_t *len)
{
    char path[512];
    char *body;

    snprintf(path, sizeof path, FIXTURES "%s", name);
    body = pb_test_read_file(path, len);
    cr_assert_not_null(body, "cannot read %s", path);
    return body;
}

static long long
now_s(void)
{
    return (long long)time(NULL);
}

/* Lower-case hex v1 signature of "<t>.<body>" under secret. */
static void
v1_of(const char *secret, long long t, const void *body, size_t len,
      char hex[65])
{
    char prefix[32];
    int plen = snprintf(prefix, sizeof prefix, "%lld.", t);
    unsigned char *msg = malloc((size_t)plen + len + 1);
    unsigned char mac[32];
    unsigned int mac_len = 0;

    cr_assert_not_null(msg);
    memcpy(msg, prefix, (size_t)plen);
    memcpy(msg + plen, body, len);
    cr_assert_not_null(HMAC(EVP_sha256(), secret, (int)strlen(secret), msg,
                            (size_t)plen + len, mac, &mac_len));
    free(msg);
    for (unsigned int i = 0; i < mac_len; i++) {
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    }
}

/* A Stripe-Signature header line signed with secret at t. */
static void
signed_header(char *out, size_t size, const char *secret, long long t,
              const void *body, size_t len)
{
    char hex[65];

    v1_of(secret, t, body, len, hex);
    snprintf(out, size, "Stripe-Signature: t=%lld,v1=%s", t, hex);
}

/* POST body with one header line (NULL for none); returns the status and
 * the answer's body in *resp (caller frees, may pass NULL). */
static int
post(pb_harness_t *h, const char *header_line, const void *body,
     size_t len, char **resp)
{
    const char *headers[] = {
        "Content-Type: application/json; charset=utf-8",
        header_line,
        NULL,
    };
    int status = 0;

    cr_assert_eq(pb_harness_webhook(h, "POST", headers, body, len, &status,
                                    resp),
                 0);
    return status;
}

/* Sign body now with SECRET and post it; asserts the status. */
static void
post_signed(pb_harness_t *h, const void *body, size_t len, int want,
            const char *want_body)
{
    char header[256];
    char *resp = NULL;
    int status;

    signed_header(header, sizeof header, SECRET, now_s(), body, len);
    status = post(h, header, body, len, &resp);
    cr_assert_eq(status, want, "status %d, body \"%s\"", status, resp);
    if (want_body != NULL) {
        cr_assert_str_eq(resp, want_body);
    }
    free(resp);
}

/* Post with a given header line and expect 400 with reason, and nothing
 * emitted. */
static void
expect_refused(pb_harness_t *h, const char *header_line, const void *body,
               size_t len, const char *reason)
{
    char *resp = NULL;
    int status = post(h, header_line, body, len, &resp);

    cr_assert_eq(status, 400, "status %d, body \"%s\"", status, resp);
    cr_assert_str_eq(resp, reason);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(resp);
}

static const pb_envelope_t *
emitted(pb_harness_t *h, size_t i, const char *type)
{
    const pb_envelope_t *ev = pb_harness_emitted(h, i);

    cr_assert_not_null(ev, "no event %zu", i);
    cr_assert_str_eq(pb_envelope_type(ev), type);
    cr_assert_str_eq(pb_envelope_source(ev), "stripe");
    return ev;
}

static void
assert_str(const pb_envelope_t *ev, const char *path, const char *want)
{
    const plugboard_host_api_t *api = pb_harness_api();
    const char *got = NULL;
    size_t len = 0;
    bool found = api->event_string(ev, path, &got, &len);

    if (want == NULL) {
        cr_assert_eq(api->event_kind(ev, path), PLUGBOARD_VALUE_MISSING,
                     "%s should be absent", path);
        return;
    }
    cr_assert(found, "%s missing, want \"%s\"", path, want);
    cr_assert(len == strlen(want) && memcmp(got, want, len) == 0,
              "%s is \"%.*s\", want \"%s\"", path, (int)len, got, want);
}

static void
assert_int(const pb_envelope_t *ev, const char *path, int64_t want)
{
    int64_t got = 0;

    cr_assert(pb_harness_api()->event_int(ev, path, &got), "%s missing",
              path);
    cr_assert_eq(got, want, "%s is %lld, want %lld", path, (long long)got,
                 (long long)want);
}

/* Event i is the dead letter of an unmapped item: its reason, the body
 * kept as it came, and a dedupe id from the body's hash. */
static void
assert_unmapped(pb_harness_t *h, size_t i, const char *reason,
                const void *body, size_t len)
{
    const pb_envelope_t *ev =
        emitted(h, i, PLUGBOARD_EV_INGRESS_UNMAPPED);
    char *copy = strndup(body, len);

    assert_str(ev, "reason", reason);
    if (len > 0) {
        assert_str(ev, "payload", copy);
    }
    cr_assert(strncmp(pb_envelope_dedupe_id(ev), "stripe:unmapped:", 16) == 0,
              "%s", pb_envelope_dedupe_id(ev));
    free(copy);
}

/* Wrap a Stripe object in an event envelope, as Stripe sends it. */
static char *
wrap_event(const char *type, const char *object, size_t *len)
{
    size_t size = strlen(object) + strlen(type) + 256;
    char *out = malloc(size);

    cr_assert_not_null(out);
    *len = (size_t)snprintf(out, size,
                            "{\n  \"id\": \"evt_1TestWrapped\",\n"
                            "  \"object\": \"event\",\n"
                            "  \"api_version\": \"2024-06-20\",\n"
                            "  \"created\": 1721948530,\n"
                            "  \"data\": {\n    \"object\": %s\n  },\n"
                            "  \"livemode\": false,\n"
                            "  \"type\": \"%s\"\n}\n",
                            object, type);
    return out;
}

/* ------------------------------------------------------------------ */
/* Descriptor and settings                                             */
/* ------------------------------------------------------------------ */

static void
set_secrets(void)
{
    setenv("PB_TEST_STRIPE_SECRET", SECRET, 1);
    setenv("PB_TEST_STRIPE_PREVIOUS", PREVIOUS, 1);
    setenv("PB_TEST_STRIPE_SDK_SECRET", "whsec_test_secret", 1);
    setenv("PB_TEST_STRIPE_API_KEY", "sk_test_abc123", 1);
}

TestSuite(stripe, .init = set_secrets);

Test(stripe, descriptor_declares_a_webhook_source)
{
    pb_harness_t *h = open_default();
    const plugboard_connector_t *d = pb_harness_descriptor(h);
    static const char *const want[] = {
        "payment.succeeded", "payment.failed",  "payment.refunded",
        "subscription.canceled", "dispute.opened", "contact.upserted",
    };

    cr_assert_str_eq(d->name, "stripe");
    cr_assert_str_eq(d->version, "0.1.0");
    cr_assert_not_null(d->summary);
    /* the sink side (test_stripe_sink.c): contact.upserted only */
    cr_assert_str_eq(d->consumes[0], "contact.upserted");
    cr_assert_null(d->consumes[1]);
    cr_assert_not_null(d->deliver);
    cr_assert_not_null(d->webhook);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        bool found = false;

        for (size_t j = 0; d->emits[j] != NULL; j++) {
            found = found || strcmp(d->emits[j], want[i]) == 0;
        }
        cr_assert(found, "emits lacks %s", want[i]);
    }
    pb_harness_close(&h);
    cr_assert_null(h);
}

Test(stripe, missing_signing_secret_fails_to_open)
{
    const char *const settings[] = {"tolerance=5m", NULL};
    char err[512] = "";
    pb_harness_t *h = pb_harness_open(PLUGIN, NULL, settings, err,
                                      sizeof err);

    cr_assert_null(h);
    cr_assert(strstr(err, "signing_secret") != NULL, "err: %s", err);
}

Test(stripe, api_key_instead_of_signing_secret_fails_to_open)
{
    const char *const settings[] = {API_KEY_SETTING, NULL};
    char err[512] = "";
    pb_harness_t *h = pb_harness_open(PLUGIN, NULL, settings, err,
                                      sizeof err);

    cr_assert_null(h);
    cr_assert(strstr(err, "API key") != NULL, "err: %s", err);
    cr_assert(strstr(err, "abc123") == NULL, "secret leaked: %s", err);
}

Test(stripe, tolerance_is_range_checked)
{
    const char *const too_long[] = {SECRET_SETTING,
                                    "tolerance=2h", NULL};
    const char *const zero[] = {SECRET_SETTING, "tolerance=0s",
                                NULL};
    char err[512] = "";
    pb_harness_t *h;

    h = pb_harness_open(PLUGIN, NULL, too_long, err, sizeof err);
    cr_assert_null(h);
    cr_assert(strstr(err, "tolerance") != NULL, "err: %s", err);
    h = pb_harness_open(PLUGIN, NULL, zero, err, sizeof err);
    cr_assert_null(h);
    cr_assert(strstr(err, "tolerance") != NULL, "err: %s", err);
}

Test(stripe, unknown_setting_fails_to_open)
{
    const char *const settings[] = {SECRET_SETTING,
                                    "secret=whsec_x", NULL};
    char err[512] = "";

    cr_assert_null(pb_harness_open(PLUGIN, NULL, settings, err, sizeof err));
    cr_assert(strstr(err, "secret") != NULL, "err: %s", err);
}

/* ------------------------------------------------------------------ */
/* The vectors of corpus/stripe/SIGNATURE.md                           */
/* ------------------------------------------------------------------ */

#define DERIVED_HEADER                                                  \
    "Stripe-Signature: t=1492774577,v1=d21d91b425674689e03346536b8fec63" \
    "84a8721d43ebe269a1689a3ad22cba9c"

/* The derived vector verifies; being from 2017 it is then refused as
 * stale.  The signature is checked first, so the reason proves it
 * matched: with one byte changed the reason is the signature. */
Test(stripe, derived_vector_verifies_then_is_stale)
{
    const char *const settings[] = {SDK_SECRET_SETTING, NULL};
    pb_harness_t *h = open_with(settings);
    size_t len;
    char *body = fixture("edge/sdk_test_minimal_event.payload.json", &len);

    cr_assert_eq(len, 125);
    expect_refused(h, DERIVED_HEADER, body, len,
                   "timestamp outside the tolerance");
    body[len - 2] = ' '; /* a space for the newline before '}' */
    expect_refused(h, DERIVED_HEADER, body, len, "no valid v1 signature");
    free(body);
    pb_harness_close(&h);
}

/* The same inputs signed now are accepted; the event has no type, which
 * Stripe's SDK accepts and this connector answers as ignored. */
Test(stripe, sdk_test_payload_signed_now_is_accepted)
{
    const char *const settings[] = {SDK_SECRET_SETTING, NULL};
    pb_harness_t *h = open_with(settings);
    char header[256];
    char *resp = NULL;
    size_t len;
    char *body = fixture("edge/sdk_test_minimal_event.payload.json", &len);

    signed_header(header, sizeof header, "whsec_test_secret", now_s(), body,
                  len);
    cr_assert_eq(post(h, header, body, len, &resp), 200);
    cr_assert_str_eq(resp, "{\"received\":true,\"events\":0}");
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(resp);
    free(body);
    pb_harness_close(&h);
}

/* The example header on Stripe's docs page has no known secret or
 * payload, so it must never verify. */
Test(stripe, docs_example_header_is_refused)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("payment_intent.succeeded.json", &len);

    expect_refused(h,
                   "Stripe-Signature: t=1492774577,"
                   "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0"
                   "ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a9"
                   "44a07aba816edb039989a39",
                   body, len, "no valid v1 signature");
    free(body);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Mapping real sample payloads                                        */
/* ------------------------------------------------------------------ */

Test(stripe, payment_intent_succeeded_becomes_payment_succeeded)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("payment_intent.succeeded.json", &len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    ev = emitted(h, 0, "payment.succeeded");
    assert_int(ev, "amount", 2000);
    assert_str(ev, "currency", "USD");
    assert_str(ev, "payment.id", "pi_000000000000000000000000");
    assert_str(ev, "payment.vendor", "stripe");
    assert_str(ev, "payment.description", "(created by Stripe CLI)");
    /* no billing name or customer: the shipping name is all there is */
    assert_str(ev, "customer.name", "Jane Doe");
    assert_str(ev, "customer.email", NULL);
    assert_str(ev, "customer.id", NULL);
    assert_str(ev, "failure.code", NULL);
    /* no e-mail and no customer: ordered by the payment itself */
    cr_assert_str_eq(pb_envelope_key(ev), "pi_000000000000000000000000");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:" ZERO_EVT ":payment_intent.succeeded:payment.succeeded");
    cr_assert_eq(pb_envelope_time_ms(ev), 1648320033000LL);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, payment_intent_payment_failed_becomes_payment_failed)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("payment_intent.payment_failed.json", &len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    ev = emitted(h, 0, "payment.failed");
    assert_int(ev, "amount", 2000);
    assert_str(ev, "currency", "USD");
    assert_str(ev, "payment.id", "pi_000000000000000000000000");
    assert_str(ev, "failure.code", "card_declined");
    assert_str(ev, "failure.message", "Your card was declined.");
    assert_str(ev, "failure.decline_code", "generic_decline");
    assert_str(ev, "invoice.id", NULL);
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:" ZERO_EVT ":payment_intent.payment_failed:payment.failed");
    cr_assert_eq(pb_envelope_time_ms(ev), 1648320029000LL);
    free(body);
    pb_harness_close(&h);
}

/* Stripe sends payment_intent.payment_failed and invoice.payment_failed
 * for one failed invoice payment; by default only the invoice's counts. */
static char *
failed_pi_of_invoice(size_t *len)
{
    char *body = fixture("payment_intent.payment_failed.json", len);
    const char *pi_level = "\n      \"invoice\": null,";
    char *at = strstr(body, pi_level);
    char *out = malloc(*len + 16);

    cr_assert_not_null(at);
    cr_assert_not_null(out);
    *len = (size_t)sprintf(out, "%.*s\n      \"invoice\": \"in_123\",%s",
                           (int)(at - body), body, at + strlen(pi_level));
    free(body);
    return out;
}

Test(stripe, failed_payment_of_an_invoice_is_left_to_the_invoice_event)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = failed_pi_of_invoice(&len);

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":0}");
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, failed_payment_of_an_invoice_when_not_preferring_invoices)
{
    const char *const settings[] = {SECRET_SETTING,
                                    "prefer_invoice_events=false", NULL};
    pb_harness_t *h = open_with(settings);
    size_t len;
    char *body = failed_pi_of_invoice(&len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    ev = emitted(h, 0, "payment.failed");
    assert_str(ev, "invoice.id", "in_123");
    assert_str(ev, "failure.code", "card_declined");
    free(body);
    pb_harness_close(&h);
}

Test(stripe, invoice_payment_failed_becomes_payment_failed)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("invoice.payment_failed.json", &len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    ev = emitted(h, 0, "payment.failed");
    assert_int(ev, "amount", 2000);
    assert_str(ev, "currency", "USD");
    assert_str(ev, "customer.id", "cus_00000000000000");
    assert_str(ev, "customer.email", NULL);
    assert_str(ev, "payment.id", "pi_000000000000000000000000");
    assert_str(ev, "payment.vendor", "stripe");
    assert_str(ev, "payment.description", "(created by Stripe CLI)");
    assert_str(ev, "invoice.id", "in_000000000000000000000000");
    assert_str(ev, "invoice.url",
               "https://invoice.stripe.com/i/acct_0000000000000000/"
               "test_000000000000000000000000000000000000000000000000000"
               "00000000000000000000000000000000000000000000000000");
    assert_str(ev, "invoice.number", "C93E45D7-0001");
    assert_int(ev, "invoice.attempt_count", 1);
    /* the charge is not expanded in the sample: no failure details */
    assert_str(ev, "failure.code", NULL);
    cr_assert_str_eq(pb_envelope_key(ev), "cus_00000000000000");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:" ZERO_EVT ":invoice.payment_failed:payment.failed");
    cr_assert_eq(pb_envelope_time_ms(ev), 1648320009000LL);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, charge_refunded_becomes_payment_refunded)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("charge.refunded.json", &len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    ev = emitted(h, 0, "payment.refunded");
    assert_int(ev, "amount", 100);
    assert_int(ev, "refund.amount", 100);
    assert_str(ev, "refund.id", "re_000000000000000000000000");
    assert_str(ev, "currency", "USD");
    /* no payment intent in the sample: the charge is the payment */
    assert_str(ev, "payment.id", "ch_000000000000000000000000");
    assert_str(ev, "payment.charge_id", "ch_000000000000000000000000");
    assert_str(ev, "payment.vendor", "stripe");
    assert_str(ev, "payment.description", "(created by Stripe CLI)");
    cr_assert_str_eq(pb_envelope_key(ev), "ch_000000000000000000000000");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:" ZERO_EVT ":charge.refunded:payment.refunded");
    cr_assert_eq(pb_envelope_time_ms(ev), 1648319949000LL);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, subscription_deleted_becomes_subscription_canceled)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("customer.subscription.deleted.json", &len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    ev = emitted(h, 0, "subscription.canceled");
    assert_str(ev, "customer.id", "cus_00000000000000");
    assert_str(ev, "subscription.id", "sub_000000000000000000000000");
    assert_str(ev, "subscription.status", "canceled");
    assert_int(ev, "subscription.canceled_at", 1648320097000LL);
    assert_str(ev, "plan.id", "price_000000000000000000000000");
    assert_int(ev, "plan.amount", 1500);
    assert_str(ev, "plan.currency", "USD");
    assert_str(ev, "plan.interval", "month");
    cr_assert_str_eq(pb_envelope_key(ev), "cus_00000000000000");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:" ZERO_EVT ":customer.subscription.deleted:subscription.canceled");
    free(body);
    pb_harness_close(&h);
}

Test(stripe, paid_checkout_becomes_contact_and_payment)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("checkout.session.completed.json", &len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":2}");
    cr_assert_eq(pb_harness_emitted_count(h), 2);
    ev = emitted(h, 0, "contact.upserted");
    assert_str(ev, "contact.email", "jane.doe@example.com");
    assert_str(ev, "contact.source", "stripe");
    assert_str(ev, "contact.phone", NULL);
    assert_str(ev, "customer.id", "cus_00000000000000");
    cr_assert_str_eq(pb_envelope_key(ev), "jane.doe@example.com");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:" ZERO_EVT ":checkout.session.completed:contact.upserted");
    cr_assert_eq(pb_envelope_time_ms(ev), 1648319959000LL);

    ev = emitted(h, 1, "payment.succeeded");
    assert_int(ev, "amount", 3000);
    assert_str(ev, "currency", "USD");
    assert_str(ev, "customer.email", "jane.doe@example.com");
    assert_str(ev, "customer.id", "cus_00000000000000");
    assert_str(ev, "payment.id", "pi_000000000000000000000000");
    assert_str(ev, "payment.vendor", "stripe");
    cr_assert_str_eq(pb_envelope_key(ev), "jane.doe@example.com");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:" ZERO_EVT
                     ":checkout.session.completed:payment.succeeded");
    free(body);
    pb_harness_close(&h);
}

Test(stripe, unpaid_checkout_becomes_contact_only)
{
    pb_harness_t *h = open_default();
    size_t olen;
    size_t len;
    char *object = fixture("openapi-fixtures/checkout.session.json", &olen);
    char *body = wrap_event("checkout.session.completed", object, &len);
    const pb_envelope_t *ev;

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    ev = emitted(h, 0, "contact.upserted");
    assert_str(ev, "contact.email", "example@example.com");
    assert_str(ev, "customer.id", NULL);
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:evt_1TestWrapped:checkout.session.completed:contact.upserted");
    cr_assert_eq(pb_envelope_time_ms(ev), 1721948530000LL);
    free(body);
    free(object);
    pb_harness_close(&h);
}

Test(stripe, customer_without_email_emits_nothing)
{
    pb_harness_t *h = open_default();
    size_t olen;
    size_t len;
    char *object = fixture("openapi-fixtures/customer.json", &olen);
    char *body = wrap_event("customer.created", object, &len);

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":0}");
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(body);
    free(object);
    pb_harness_close(&h);
}

/* Synthetic: no sample of a customer with an e-mail was collected. */
Test(stripe, customer_updated_becomes_contact_upserted)
{
    static const char body[] =
        "{\"id\":\"evt_1CustUpd\",\"object\":\"event\",\"created\":1700000000,"
        "\"type\":\"customer.updated\",\"data\":{\"object\":{"
        "\"id\":\"cus_Q1\",\"object\":\"customer\","
        "\"email\":\" Jane.Doe@Example.COM \",\"name\":\"Jane Doe\","
        "\"phone\":\"+15555550100\"},\"previous_attributes\":{\"name\":null}}}";
    pb_harness_t *h = open_default();
    const pb_envelope_t *ev;

    post_signed(h, body, strlen(body), 200,
                "{\"received\":true,\"events\":1}");
    ev = emitted(h, 0, "contact.upserted");
    assert_str(ev, "contact.email", "jane.doe@example.com");
    assert_str(ev, "contact.name", "Jane Doe");
    assert_str(ev, "contact.phone", "+15555550100");
    assert_str(ev, "contact.source", "stripe");
    assert_str(ev, "customer.id", "cus_Q1");
    cr_assert_str_eq(pb_envelope_key(ev), "jane.doe@example.com");
    cr_assert_eq(pb_envelope_time_ms(ev), 1700000000000LL);
    pb_harness_close(&h);
}

/* Synthetic: no dispute sample was collected (see fixtures' SOURCES.md). */
Test(stripe, dispute_created_becomes_dispute_opened)
{
    static const char body[] =
        "{\"id\":\"evt_1Disp\",\"object\":\"event\",\"created\":1700000100,"
        "\"type\":\"charge.dispute.created\",\"data\":{\"object\":{"
        "\"id\":\"dp_1\",\"object\":\"dispute\",\"amount\":4999,"
        "\"currency\":\"eur\",\"reason\":\"fraudulent\","
        "\"status\":\"needs_response\",\"charge\":\"ch_1\","
        "\"payment_intent\":\"pi_1\",\"evidence\":{"
        "\"customer_email_address\":\"Buyer@Example.com\","
        "\"customer_name\":\"B. Uyer\"},"
        "\"evidence_details\":{\"due_by\":1700900000}}}}";
    pb_harness_t *h = open_default();
    const pb_envelope_t *ev;

    post_signed(h, body, strlen(body), 200,
                "{\"received\":true,\"events\":1}");
    ev = emitted(h, 0, "dispute.opened");
    assert_str(ev, "dispute.id", "dp_1");
    assert_int(ev, "amount", 4999);
    assert_str(ev, "currency", "EUR");
    assert_str(ev, "dispute.reason", "fraudulent");
    assert_str(ev, "dispute.status", "needs_response");
    assert_int(ev, "dispute.evidence_due_at", 1700900000000LL);
    assert_str(ev, "payment.id", "pi_1");
    assert_str(ev, "payment.charge_id", "ch_1");
    assert_str(ev, "customer.email", "buyer@example.com");
    assert_str(ev, "customer.name", "B. Uyer");
    cr_assert_str_eq(pb_envelope_key(ev), "buyer@example.com");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "stripe:evt_1Disp:charge.dispute.created:dispute.opened");
    pb_harness_close(&h);
}

Test(stripe, unknown_event_type_is_answered_and_ignored)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("customer.deleted.json", &len);

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":0}");
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(body);
    pb_harness_close(&h);
}

/* A genuine event that cannot be mapped (another api_version's shape) is
 * acknowledged with its reason: a 4xx would make Stripe retry it for days
 * and then disable the endpoint. */
Test(stripe, known_type_without_required_fields_is_acknowledged)
{
    static const char body[] =
        "{\"id\":\"evt_1\",\"object\":\"event\",\"created\":1,"
        "\"api_version\":\"2099-01-01.future\","
        "\"type\":\"payment_intent.succeeded\",\"data\":{\"object\":{"
        "\"id\":\"pi_1\",\"object\":\"payment_intent\",\"amount\":10}}}";
    pb_harness_t *h = open_default();

    post_signed(h, body, strlen(body), 200,
                "{\"received\":true,\"events\":0,\"unmappable\":"
                "\"malformed event: payment intent without a currency\"}");
    /* kept as a dead letter of the connector, with the body */
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    assert_unmapped(h, 0, "malformed event: payment intent without a currency",
                    body, strlen(body));
    pb_harness_close(&h);
}

/* One number beyond int64 somewhere in the event (a metadata value, an
 * application's own id) must not make the whole event unreadable: the
 * SDK's parser keeps it as its digits and the event maps as usual. */
Test(stripe, a_field_beyond_int64_does_not_lose_the_event)
{
    static const char object[] =
        "{\"id\":\"pi_big\",\"object\":\"payment_intent\",\"amount\":2000,"
        "\"currency\":\"usd\",\"status\":\"succeeded\","
        "\"amount_received\":2000,"
        "\"metadata\":{\"order\":123456789012345678901234567890},"
        "\"receipt_email\":\"big@example.com\"}";
    pb_harness_t *h = open_default();
    size_t len;
    char *body = wrap_event("payment_intent.succeeded", object, &len);

    post_signed(h, body, len, 200, "{\"received\":true,\"events\":1}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    assert_int(emitted(h, 0, "payment.succeeded"), "amount", 2000);
    free(body);
    pb_harness_close(&h);
}

/* Duplicate keys follow the SDK's one rule (the document is invalid),
 * not jansson's default (the last one wins): acknowledged, nothing
 * emitted. */
Test(stripe, a_duplicate_key_makes_the_event_unmappable)
{
    static const char object[] =
        "{\"id\":\"pi_dup\",\"object\":\"payment_intent\",\"amount\":2000,"
        "\"amount\":1,\"currency\":\"usd\",\"status\":\"succeeded\","
        "\"amount_received\":2000}";
    pb_harness_t *h = open_default();
    size_t len;
    char *body = wrap_event("payment_intent.succeeded", object, &len);

    post_signed(h, body, len, 200,
                "{\"received\":true,\"events\":0,\"unmappable\":"
                "\"malformed JSON\"}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    assert_unmapped(h, 0, "malformed JSON", body, len);
    free(body);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Signature rules                                                     */
/* ------------------------------------------------------------------ */

Test(stripe, forged_signature_is_refused)
{
    pb_harness_t *h = open_default();
    char header[256];
    size_t len;
    char *body = fixture("payment_intent.succeeded.json", &len);

    signed_header(header, sizeof header, OTHER, now_s(), body, len);
    expect_refused(h, header, body, len, "no valid v1 signature");
    free(body);
    pb_harness_close(&h);
}

Test(stripe, stale_timestamp_is_refused)
{
    pb_harness_t *h = open_default();
    char header[256];
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    signed_header(header, sizeof header, SECRET, now_s() - 301, body, len);
    expect_refused(h, header, body, len, "timestamp outside the tolerance");
    signed_header(header, sizeof header, SECRET, now_s() - 280, body, len);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, tolerance_setting_is_honoured)
{
    const char *const settings[] = {SECRET_SETTING,
                                    "tolerance=1m", NULL};
    pb_harness_t *h = open_with(settings);
    char header[256];
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    signed_header(header, sizeof header, SECRET, now_s() - 90, body, len);
    expect_refused(h, header, body, len, "timestamp outside the tolerance");
    signed_header(header, sizeof header, SECRET, now_s() - 30, body, len);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    free(body);
    pb_harness_close(&h);
}

/* As in stripe-python and stripe-node: only too-old timestamps are
 * refused; a timestamp ahead of our clock is accepted. */
Test(stripe, future_timestamp_is_accepted)
{
    pb_harness_t *h = open_default();
    char header[256];
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    signed_header(header, sizeof header, SECRET, now_s() + 3600, body, len);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, any_v1_may_match_in_either_order)
{
    pb_harness_t *h = open_default();
    char good[65];
    char bad[65];
    char header[512];
    long long t = now_s();
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    v1_of(SECRET, t, body, len, good);
    v1_of(OTHER, t, body, len, bad);
    snprintf(header, sizeof header, "Stripe-Signature: t=%lld,v1=%s,v1=%s",
             t, bad, good);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    snprintf(header, sizeof header,
             "Stripe-Signature: t=%lld,v1=%s,v1=%s,v0=%s", t, good, bad,
             bad);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    /* and v0 is never what makes it valid */
    snprintf(header, sizeof header, "Stripe-Signature: t=%lld,v1=%s,v0=%s",
             t, bad, good);
    pb_harness_clear(h);
    expect_refused(h, header, body, len, "no valid v1 signature");
    free(body);
    pb_harness_close(&h);
}

Test(stripe, v0_only_is_refused)
{
    pb_harness_t *h = open_default();
    char good[65];
    char header[256];
    long long t = now_s();
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    v1_of(SECRET, t, body, len, good);
    snprintf(header, sizeof header, "Stripe-Signature: t=%lld,v0=%s", t,
             good);
    expect_refused(h, header, body, len,
                   "no v1 signature in Stripe-Signature header");
    free(body);
    pb_harness_close(&h);
}

/* The signature covers the raw bytes: equivalent JSON is not enough. */
Test(stripe, one_changed_byte_in_the_body_is_refused)
{
    pb_harness_t *h = open_default();
    char header[256];
    size_t len;
    char *body = fixture("payment_intent.succeeded.json", &len);
    char *spaced = malloc(len + 1);

    cr_assert_not_null(spaced);
    signed_header(header, sizeof header, SECRET, now_s(), body, len);
    /* one more space of indentation: the same JSON value */
    spaced[0] = '{';
    spaced[1] = ' ';
    memcpy(spaced + 2, body + 1, len - 1);
    expect_refused(h, header, spaced, len + 1, "no valid v1 signature");
    /* the amount 2000 becomes 3000 */
    memcpy(spaced, body, len);
    spaced[strstr(body, "\"amount\": 2000") - body + 10] = '3';
    expect_refused(h, header, spaced, len, "no valid v1 signature");
    /* and the untouched body still passes */
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    free(spaced);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, previous_secret_is_accepted_during_rotation)
{
    const char *const rotating[] = {SECRET_SETTING,
                                    PREVIOUS_SETTING,
                                    NULL};
    pb_harness_t *h = open_with(rotating);
    char header[256];
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    signed_header(header, sizeof header, PREVIOUS, now_s(), body, len);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    signed_header(header, sizeof header, SECRET, now_s(), body, len);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    cr_assert_eq(pb_harness_emitted_count(h), 2);
    pb_harness_clear(h);
    signed_header(header, sizeof header, OTHER, now_s(), body, len);
    expect_refused(h, header, body, len, "no valid v1 signature");
    pb_harness_close(&h);

    /* once the previous secret is removed, it no longer verifies */
    h = open_default();
    signed_header(header, sizeof header, PREVIOUS, now_s(), body, len);
    expect_refused(h, header, body, len, "no valid v1 signature");
    free(body);
    pb_harness_close(&h);
}

Test(stripe, missing_header_is_refused)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    expect_refused(h, NULL, body, len, "missing Stripe-Signature header");
    expect_refused(h, "Stripe-Signature: ", body, len,
                   "missing Stripe-Signature header");
    free(body);
    pb_harness_close(&h);
}

Test(stripe, garbled_header_is_refused)
{
    static const char *const garbled[] = {
        "Stripe-Signature: t=abc,v1=0000",
        "Stripe-Signature: t=,v1=0000",
        "Stripe-Signature: t=-5,v1=0000",
        "Stripe-Signature: t=1492774577v1=0000", /* no comma */
        "Stripe-Signature: t=1,t=2,v1=0000",
        "Stripe-Signature: t=1234567890123456789012,v1=0000",
        "Stripe-Signature: bad_header",
        "Stripe-Signature: i'm not even a real signature header",
        "Stripe-Signature: v1=bad_signature", /* no t */
        "Stripe-Signature: t",
    };
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    for (size_t i = 0; i < sizeof garbled / sizeof garbled[0]; i++) {
        expect_refused(h, garbled[i], body, len,
                       "malformed Stripe-Signature header");
    }
    free(body);
    pb_harness_close(&h);
}

/* Header names are matched without regard to case, as HTTP requires;
 * the hex must be lower-case, as Stripe's libraries compare strings. */
Test(stripe, header_name_case_and_hex_case)
{
    pb_harness_t *h = open_default();
    char hex[65];
    char header[256];
    long long t = now_s();
    size_t len;
    char *body = fixture("charge.refunded.json", &len);

    v1_of(SECRET, t, body, len, hex);
    snprintf(header, sizeof header, "stripe-signature: t=%lld,v1=%s", t,
             hex);
    cr_assert_eq(post(h, header, body, len, NULL), 200);
    pb_harness_clear(h);
    for (char *p = hex; *p; p++) {
        if (*p >= 'a' && *p <= 'f') {
            *p = (char)(*p - 'a' + 'A');
        }
    }
    snprintf(header, sizeof header, "Stripe-Signature: t=%lld,v1=%s", t,
             hex);
    expect_refused(h, header, body, len, "no valid v1 signature");
    free(body);
    pb_harness_close(&h);
}

/* Signed by Stripe, so from Stripe: whatever it is, answering 4xx would
 * only make Stripe send it again for days. */
Test(stripe, malformed_json_with_a_valid_signature_is_acknowledged)
{
    static const char truncated[] = "{\"id\":\"evt_1\",\"type\":\"charge.re";
    pb_harness_t *h = open_default();

    post_signed(h, truncated, strlen(truncated), 200,
                "{\"received\":true,\"events\":0,\"unmappable\":"
                "\"malformed JSON\"}");
    post_signed(h, "", 0, 200,
                "{\"received\":true,\"events\":0,\"unmappable\":"
                "\"malformed JSON\"}");
    post_signed(h, "[1,2]", 5, 200,
                "{\"received\":true,\"events\":0,\"unmappable\":"
                "\"malformed event: no id\"}");
    cr_assert_eq(pb_harness_emitted_count(h), 3);
    assert_unmapped(h, 0, "malformed JSON", truncated, strlen(truncated));
    assert_unmapped(h, 1, "malformed JSON", "", 0);
    assert_unmapped(h, 2, "malformed event: no id", "[1,2]", 5);
    pb_harness_close(&h);
}

Test(stripe, thin_v2_event_is_acknowledged)
{
    pb_harness_t *h = open_default();
    size_t len;
    char *body = fixture("edge/sdk_test_v2_thin_event.payload.json", &len);

    post_signed(h, body, len, 200,
                "{\"received\":true,\"events\":0,\"unmappable\":"
                "\"thin (v2) events are not supported: send snapshot "
                "events to this endpoint\"}");
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    assert_unmapped(h, 0,
                    "thin (v2) events are not supported: send snapshot "
                    "events to this endpoint",
                    body, len);
    free(body);
    pb_harness_close(&h);
}

Test(stripe, only_post_is_accepted)
{
    pb_harness_t *h = open_default();
    int status = 0;
    const char *headers[] = {NULL};

    cr_assert_eq(pb_harness_webhook(h, "GET", headers, "", 0, &status, NULL),
                 0);
    cr_assert_eq(status, 405);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Counters: a host handle of our own, to see api->count               */
/* ------------------------------------------------------------------ */

typedef struct counted {
    char names[16][48];
    int64_t values[16];
    size_t n;
    size_t emitted;
} counted_t;

static void
on_count(void *ctx, const char *name, int64_t delta)
{
    counted_t *c = ctx;

    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->names[i], name) == 0) {
            c->values[i] += delta;
            return;
        }
    }
    cr_assert_lt(c->n, 16);
    snprintf(c->names[c->n], sizeof c->names[0], "%s", name);
    c->values[c->n++] = delta;
}

static int
on_emit(void *ctx, pb_builder_t *b)
{
    counted_t *c = ctx;

    c->emitted++;
    pb_builder_destroy(&b);
    return 0;
}

static int64_t
counter(const counted_t *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->names[i], name) == 0) {
            return c->values[i];
        }
    }
    return 0;
}

static int
call(const plugboard_connector_t *d, void *state, const char *header,
     const void *body, size_t len)
{
    plugboard_header_t hv = {"Stripe-Signature", header};
    plugboard_request_t req = {
        .method = "POST",
        .path = "/hooks/stripe",
        .query = "",
        .headers = &hv,
        .header_count = header != NULL,
        .body = body,
        .body_len = len,
        .received_ms = pb_now_ms(),
    };
    plugboard_response_t *resp = pb_response_new();
    int status;

    d->webhook(state, &req, resp);
    status = pb_response_status(resp);
    pb_response_destroy(&resp);
    return status;
}

Test(stripe, refusals_and_ignored_events_are_counted)
{
    char err[256] = "";
    pb_plugin_t *plugin = pb_plugin_load(PLUGIN, NULL, 0, NULL, err,
                                         sizeof err);
    const plugboard_connector_t *d;
    pb_raw_setting_t raw = {.name = "signing_secret", .kind = PB_RAW_STRING,
                            .str = "env:PB_TEST_STRIPE_SECRET"};
    plugboard_settings_t *settings;
    plugboard_host_t host;
    counted_t c = {0};
    pb_diag_t diag;
    char errbuf[PLUGBOARD_ERRBUF_MAX] = "";
    void *state = NULL;
    char header[256];
    size_t len;
    size_t ilen;
    char *body = fixture("charge.refunded.json", &len);
    char *ignored = fixture("customer.deleted.json", &ilen);

    cr_assert_not_null(plugin, "%s", err);
    d = pb_plugin_descriptor(plugin);
    pb_diag_init(&diag);
    settings = pb_settings_bind(d->settings, &raw, 1, "test", &diag);
    pb_diag_release(&diag);
    cr_assert_not_null(settings);
    pb_host_init(&host, "payments", on_emit, on_count, &c);
    cr_assert_eq(d->open(pb_host_api(), &host, settings, &state, errbuf), 0,
                 "%s", errbuf);

    cr_assert_eq(call(d, state, NULL, body, len), 400);
    cr_assert_eq(call(d, state, "t=abc", body, len), 400);
    signed_header(header, sizeof header, OTHER, now_s(), body, len);
    cr_assert_eq(call(d, state, header + 18, body, len), 400);
    signed_header(header, sizeof header, SECRET, now_s() - 3600, body, len);
    cr_assert_eq(call(d, state, header + 18, body, len), 400);
    signed_header(header, sizeof header, SECRET, now_s(), "{", 1);
    cr_assert_eq(call(d, state, header + 18, "{", 1), 200);
    cr_assert_eq(c.emitted, 1, "the dead letter of the malformed body");
    signed_header(header, sizeof header, SECRET, now_s(), ignored, ilen);
    cr_assert_eq(call(d, state, header + 18, ignored, ilen), 200);
    cr_assert_eq(c.emitted, 1);
    signed_header(header, sizeof header, SECRET, now_s(), body, len);
    cr_assert_eq(call(d, state, header + 18, body, len), 200);
    cr_assert_eq(c.emitted, 2);

    cr_assert_eq(counter(&c, "signature_missing"), 1);
    cr_assert_eq(counter(&c, "signature_malformed"), 1);
    cr_assert_eq(counter(&c, "signature_rejected"), 1);
    cr_assert_eq(counter(&c, "timestamp_rejected"), 1);
    cr_assert_eq(counter(&c, "malformed_json"), 1);
    cr_assert_eq(counter(&c, "ignored_event_type"), 1);

    d->close(state);
    pb_settings_destroy(&settings);
    pb_plugin_destroy(&plugin);
    free(ignored);
    free(body);
}
