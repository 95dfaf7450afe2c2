/*
 * test_stripe_sink.c - the stripe connector's sink: contact.upserted
 * updates the matching Stripe customer, checked against the Stripe
 * stand-in (tests/stand-ins/stripe.py), which records every request.
 *
 * What Stripe receives (endpoint, form body, Authorization,
 * Idempotency-Key, Stripe-Version), which customer is chosen, that an
 * older event never overwrites a newer one, that a retry sends the
 * byte-identical body under the same key, and how each failure is
 * classified.  test_stripe.c covers the webhook source.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "harness.h"
#include "standin.h"

#define PLUGIN PB_PLUGIN_DIR "/stripe.so"
#define FIXTURES PB_SOURCE_DIR "/tests/fixtures/stripe/"
#define API_KEY "sk_test_plugboard0000000000000000"

static pb_standin_t *s_st;

static void
s_setup(void)
{
    char err[256] = "";

    setenv("PB_TEST_STRIPE_API_KEY", API_KEY, 1);
    setenv("PB_TEST_STRIPE_BAD_KEY", "sk_test_revoked99999999", 1);
    setenv("PB_TEST_STRIPE_PK", "pk_test_publishable", 1);
    setenv("PB_TEST_STRIPE_SECRET", "whsec_plugboard_test_secret", 1);
    s_st = pb_standin_start("stripe", err, sizeof err);
    cr_assert_not_null(s_st, "%s", err);
}

static void
s_teardown(void)
{
    pb_standin_stop(&s_st);
}

TestSuite(stripe_sink, .init = s_setup, .fini = s_teardown, .timeout = 30);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static pb_harness_t *
s_open_with(const char *key_setting, const char *extra)
{
    char base[128];
    char err[512] = "";
    const char *settings[8] = {key_setting,          base,  "timeout=1s",
                               "connect_timeout=1s", extra, NULL};
    pb_harness_t *h;

    snprintf(base, sizeof base, "api_base=%s", pb_standin_url(s_st));
    h = pb_harness_open(PLUGIN, "payments", settings, err, sizeof err);
    cr_assert_not_null(h, "cannot open stripe: %s", err);
    return h;
}

static pb_harness_t *
s_open(void)
{
    return s_open_with("api_key=env:PB_TEST_STRIPE_API_KEY", NULL);
}

static void
s_seed(const char *json)
{
    cr_assert_eq(pb_standin_seed(s_st, json), 200);
}

static void
s_fault(const char *json)
{
    cr_assert_eq(pb_standin_fault(s_st, json), 200);
}

/* Deliver contact.upserted given as a whole event (with "time"). */
static void
s_deliver_json(pb_harness_t *h, const char *event, plugboard_outcome_t want,
               plugboard_result_t *r)
{
    cr_assert_eq(plugboard_harness_deliver_json(h, event, 1, r), 0);
    cr_assert_eq(r->outcome, want, "outcome %d, want %d, reason: %s",
                 r->outcome, want, r->reason);
}

static void
s_deliver(pb_harness_t *h, const char *data, plugboard_outcome_t want,
          plugboard_result_t *r)
{
    cr_assert_eq(pb_harness_deliver(h, "contact.upserted",
                                    "jane.doe@example.com", data, 1, r),
                 0);
    cr_assert_eq(r->outcome, want, "outcome %d, want %d, reason: %s",
                 r->outcome, want, r->reason);
}

static void
s_deliver_frame(pb_harness_t *h, uint8_t *frame, size_t len, uint32_t n,
                plugboard_outcome_t want, plugboard_result_t *r)
{
    pb_test_frame_set_attempt(frame, len, n);
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, r), 0);
    cr_assert_eq(r->outcome, want, "outcome %d, want %d, reason: %s",
                 r->outcome, want, r->reason);
}

static const char *
s_str(json_t *v, const char *key)
{
    return json_string_value(json_object_get(v, key));
}

static const char *
s_header(json_t *rec, const char *name)
{
    return s_str(json_object_get(rec, "headers"), name);
}

/* The customer with this id in the stand-in's state (new reference). */
static json_t *
s_customer(const char *id)
{
    json_t *state = pb_standin_state(s_st);
    json_t *found = NULL;
    size_t i;
    json_t *c;

    cr_assert_not_null(state);
    json_array_foreach(json_object_get(state, "customers"), i, c)
    {
        if (strcmp(s_str(c, "id"), id) == 0) {
            found = json_incref(c);
        }
    }
    json_decref(state);
    cr_assert_not_null(found, "no customer %s", id);
    return found;
}

static const char *const s_jane =
    "{\"contact\":{\"email\":\"jane.doe@example.com\",\"name\":\"Jane Doe\","
    "\"source\":\"hubspot\"},\"customer\":{\"id\":\"512\"}}";

static void
s_seed_jane(const char *name)
{
    char seed[256];

    snprintf(seed, sizeof seed,
             "{\"customers\":[{\"id\":\"cus_LOr4Jx1wZ2\",\"email\":"
             "\"jane.doe@example.com\",\"name\":\"%s\"}]}",
             name);
    s_seed(seed);
}

/* ------------------------------------------------------------------ */
/* Settings                                                            */
/* ------------------------------------------------------------------ */

Test(stripe_sink, api_key_alone_opens_a_sink_only_connector)
{
    pb_harness_t *h = s_open();
    const plugboard_connector_t *d = pb_harness_descriptor(h);
    int status = 0;
    char *resp = NULL;

    cr_assert_str_eq(d->consumes[0], "contact.upserted");
    cr_assert_not_null(d->deliver);
    cr_assert_eq(pb_harness_webhook(h, "POST", NULL, "{}", 2, &status, &resp),
                 0);
    cr_assert_eq(status, 503, "webhooks need signing_secret: %d", status);
    free(resp);
    pb_harness_close(&h);
}

Test(stripe_sink, wrong_or_missing_keys_fail_to_open)
{
    const char *none[] = {"tolerance=5m", NULL};
    const char *pk[] = {"api_key=env:PB_TEST_STRIPE_PK", NULL};
    const char *base[] = {"api_key=env:PB_TEST_STRIPE_API_KEY",
                          "api_base=ftp://stripe.example", NULL};
    char err[512];

    cr_assert_null(pb_harness_open(PLUGIN, NULL, none, err, sizeof err));
    cr_assert(strstr(err, "api_key") != NULL, "%s", err);
    cr_assert_null(pb_harness_open(PLUGIN, NULL, pk, err, sizeof err));
    cr_assert(strstr(err, "api_key") != NULL, "%s", err);
    cr_assert(strstr(err, "publishable") == NULL, "key leaked: %s", err);
    cr_assert_null(pb_harness_open(PLUGIN, NULL, base, err, sizeof err));
    cr_assert(strstr(err, "api_base") != NULL, "%s", err);
}

/* A source-only stripe connector refuses deliveries it cannot make. */
Test(stripe_sink, source_only_connector_rejects_deliveries)
{
    const char *settings[] = {"signing_secret=env:PB_TEST_STRIPE_SECRET", NULL};
    char err[512];
    pb_harness_t *h = pb_harness_open(PLUGIN, NULL, settings, err, sizeof err);
    plugboard_result_t r;

    cr_assert_not_null(h, "%s", err);
    s_deliver(h, s_jane, PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "api_key") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Updates                                                             */
/* ------------------------------------------------------------------ */

Test(stripe_sink, customer_found_by_email_gets_the_new_name)
{
    pb_harness_t *h = s_open_with("api_key=env:PB_TEST_STRIPE_API_KEY",
                                  "api_version=2024-06-20");
    plugboard_result_t r;
    json_t *rec, *c;
    char want[256];
    const char *key;

    s_seed_jane("J. Doe");
    s_deliver_json(h,
                   "{\"type\":\"contact.upserted\",\"key\":\"jane.doe@"
                   "example.com\",\"time\":1700000000000,\"data\":"
                   "{\"contact\":{\"email\":\"jane.doe@example.com\","
                   "\"name\":\"Jane Doe\",\"source\":\"hubspot\"}}}",
                   PLUGBOARD_OK, &r);
    rec = pb_standin_request(s_st, "GET", "/v1/customers", 0);
    cr_assert_not_null(rec);
    cr_assert_str_eq(s_str(rec, "query"),
                     "email=jane.doe%40example.com&limit=10");
    cr_assert_str_eq(s_header(rec, "authorization"), "Bearer " API_KEY);
    cr_assert_str_eq(s_header(rec, "stripe-version"), "2024-06-20");
    json_decref(rec);
    rec = pb_standin_request(s_st, "POST", "/v1/customers/cus_LOr4Jx1wZ2", 0);
    cr_assert_not_null(rec);
    cr_assert_str_eq(s_header(rec, "content-type"),
                     "application/x-www-form-urlencoded");
    key = s_header(rec, "idempotency-key");
    cr_assert_not_null(key);
    cr_assert_eq(strlen(key), strlen("plugboard--cus_LOr4Jx1wZ2") + 26, "%s",
                 key);
    cr_assert(strncmp(key, "plugboard-", 10) == 0, "%s", key);
    snprintf(want, sizeof want,
             "email=jane.doe%%40example.com&name=Jane%%20Doe"
             "&metadata[plugboard_contact_time]=1700000000000"
             "&metadata[plugboard_event_id]=%.26s",
             key + 10);
    cr_assert_str_eq(s_str(rec, "body"), want);
    json_decref(rec);
    c = s_customer("cus_LOr4Jx1wZ2");
    cr_assert_str_eq(s_str(c, "name"), "Jane Doe");
    json_decref(c);
    pb_harness_close(&h);
}

/* customer.id naming a Stripe customer (the openapi fixture, which has no
 * e-mail yet) is updated directly: that is how an e-mail changes. */
Test(stripe_sink, stripe_customer_id_is_updated_directly)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    size_t len = 0;
    char *fixture =
        pb_test_read_file(FIXTURES "openapi-fixtures/customer.json", &len);
    char *seed = NULL;
    json_t *c;

    cr_assert_not_null(fixture);
    cr_assert(asprintf(&seed, "{\"customers\":[%s]}", fixture) > 0);
    s_seed(seed);
    s_deliver(h,
              "{\"contact\":{\"email\":\"jane.doe@example.com\","
              "\"source\":\"zendesk\"},\"customer\":{\"id\":"
              "\"cus_QXg1o8vcGmoR32\"}}",
              PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_st, "GET", "/v1/customers/cus_*"), 1);
    cr_assert_eq(pb_standin_count(s_st, "GET", "/v1/customers"), 0);
    c = s_customer("cus_QXg1o8vcGmoR32");
    cr_assert_str_eq(s_str(c, "email"), "jane.doe@example.com");
    json_decref(c);
    free(seed);
    free(fixture);
    pb_harness_close(&h);
}

Test(stripe_sink, deleted_customer_id_falls_back_to_the_email)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_seed("{\"customers\":[{\"id\":\"cus_Gone\",\"deleted\":true},"
           "{\"id\":\"cus_Live\",\"email\":\"jane.doe@example.com\"}]}");
    s_deliver(h,
              "{\"contact\":{\"email\":\"jane.doe@example.com\",\"name\":"
              "\"Jane Doe\",\"source\":\"hubspot\"},\"customer\":{\"id\":"
              "\"cus_Gone\"}}",
              PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_st, "POST", "/v1/customers/cus_Live"), 1);
    cr_assert_eq(pb_standin_count(s_st, "POST", "/v1/customers/cus_Gone"), 0);
    pb_harness_close(&h);
}

Test(stripe_sink, no_matching_customer_is_nothing_to_do)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_deliver(h, s_jane, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_st, "GET", "/v1/customers"), 1);
    cr_assert_eq(pb_standin_count(s_st, "POST", "*"), 0);
    pb_harness_close(&h);
}

/* Stripe's own contacts are not written back to Stripe. */
Test(stripe_sink, contacts_from_stripe_are_not_echoed)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_deliver(h,
              "{\"contact\":{\"email\":\"jane.doe@example.com\",\"source\":"
              "\"stripe\"},\"customer\":{\"id\":\"cus_LOr4Jx1wZ2\"}}",
              PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_st, NULL, "*"), 0);
    pb_harness_close(&h);
}

/* An event older than the last one applied (a late re-delivery) does not
 * overwrite the newer name. */
Test(stripe_sink, older_event_never_overwrites_newer_state)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *c;

    s_seed_jane("J. Doe");
    s_deliver_json(h,
                   "{\"type\":\"contact.upserted\",\"time\":1700000002000,"
                   "\"data\":{\"contact\":{\"email\":\"jane.doe@example.com\","
                   "\"name\":\"Jane Newer\",\"source\":\"hubspot\"}}}",
                   PLUGBOARD_OK, &r);
    s_deliver_json(h,
                   "{\"type\":\"contact.upserted\",\"time\":1700000001000,"
                   "\"data\":{\"contact\":{\"email\":\"jane.doe@example.com\","
                   "\"name\":\"Jane Older\",\"source\":\"hubspot\"}}}",
                   PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_st, "POST", "*"), 1);
    c = s_customer("cus_LOr4Jx1wZ2");
    cr_assert_str_eq(s_str(c, "name"), "Jane Newer");
    json_decref(c);
    pb_harness_close(&h);
}

Test(stripe_sink, unchanged_customer_is_left_alone)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_seed_jane("Jane Doe");
    s_deliver(h, s_jane, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_st, "POST", "*"), 0);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Retries and failures                                                */
/* ------------------------------------------------------------------ */

/* A retried update sends the byte-identical body under the same key. */
Test(stripe_sink, retry_repeats_the_identical_request)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    size_t len = 0;
    uint8_t *frame = pb_test_event_frame("contact.upserted",
                                         "jane.doe@example.com", s_jane, &len);
    json_t *first, *second;

    cr_assert_not_null(frame);
    s_seed_jane("J. Doe");
    s_fault("{\"method\":\"POST\",\"path\":\"/v1/customers/*\","
            "\"status\":500,\"json\":{\"error\":{\"type\":\"api_error\","
            "\"message\":\"An unknown error occurred\"}}}");
    s_deliver_frame(h, frame, len, 1, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "HTTP 500: An unknown error occurred") != NULL,
              "%s", r.reason);
    s_deliver_frame(h, frame, len, 2, PLUGBOARD_OK, &r);
    first = pb_standin_request(s_st, "POST", "/v1/customers/*", 0);
    second = pb_standin_request(s_st, "POST", "/v1/customers/*", 1);
    cr_assert_not_null(second);
    cr_assert_str_eq(s_str(first, "body"), s_str(second, "body"));
    cr_assert_str_eq(s_header(first, "idempotency-key"),
                     s_header(second, "idempotency-key"));
    json_decref(first);
    json_decref(second);
    free(frame);
    pb_harness_close(&h);
}

/* The update lands but the answer is lost: the retry sees the customer is
 * already up to date and sends nothing. */
Test(stripe_sink, timeout_after_update_is_retried_without_duplicate)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    size_t len = 0;
    uint8_t *frame = pb_test_event_frame("contact.upserted",
                                         "jane.doe@example.com", s_jane, &len);

    s_seed_jane("J. Doe");
    s_fault("{\"method\":\"POST\",\"path\":\"/v1/customers/*\","
            "\"kind\":\"timeout\",\"apply\":true,\"delay_ms\":3000}");
    /* answered after 3 s: "timed out" shows timeout=1s ended the wait */
    s_deliver_frame(h, frame, len, 1, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "timed out") != NULL, "%s", r.reason);
    s_deliver_frame(h, frame, len, 2, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_st, "POST", "*"), 1);
    free(frame);
    pb_harness_close(&h);
}

Test(stripe_sink, idempotency_key_in_use_is_transient)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_seed_jane("J. Doe");
    s_fault("{\"method\":\"POST\",\"path\":\"/v1/customers/*\","
            "\"status\":409,\"headers\":{\"Stripe-Should-Retry\":\"true\"},"
            "\"json\":{\"error\":{\"type\":\"idempotency_error\",\"code\":"
            "\"idempotency_key_in_use\",\"message\":\"There is currently "
            "another in-progress request using this Idempotent Key.\"}}}");
    s_deliver(h, s_jane, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "HTTP 409") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

Test(stripe_sink, idempotency_mismatch_dead_letters)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_seed_jane("J. Doe");
    s_fault("{\"method\":\"POST\",\"path\":\"/v1/customers/*\","
            "\"status\":400,\"json\":{\"error\":{\"type\":"
            "\"idempotency_error\",\"message\":\"Keys for idempotent "
            "requests can only be used with the same parameters they were "
            "first used with.\"}}}");
    s_deliver(h, s_jane, PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "idempotency key reused with other "
                               "parameters") != NULL,
              "%s", r.reason);
    pb_harness_close(&h);
}

Test(stripe_sink, rate_limit_waits_retry_after_or_a_second)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/v1/customers\",\"status\":429,\"json\":{\"error\":"
            "{\"type\":\"invalid_request_error\",\"code\":\"rate_limit\","
            "\"message\":\"Too many requests\"}}}");
    s_deliver(h, s_jane, PLUGBOARD_HOLD, &r);
    cr_assert_eq(r.retry_after_ms, 1000);
    s_fault("{\"path\":\"/v1/customers\",\"status\":429,\"headers\":"
            "{\"Retry-After\":\"3\"},\"json\":{\"error\":{\"type\":"
            "\"invalid_request_error\",\"message\":\"Too many requests\"}}}");
    s_deliver(h, s_jane, PLUGBOARD_HOLD, &r);
    cr_assert_eq(r.retry_after_ms, 3000);
    pb_harness_close(&h);
}

Test(stripe_sink, bad_key_is_rejected_without_leaking_it)
{
    pb_harness_t *h = s_open_with("api_key=env:PB_TEST_STRIPE_BAD_KEY", NULL);
    plugboard_result_t r;

    s_deliver(h, s_jane, PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "authentication failed: check the token") !=
                  NULL,
              "%s", r.reason);
    cr_assert(strstr(r.reason, "9999") == NULL, "key leaked: %s", r.reason);
    /* the host is told, so the route owners hear of it */
    cr_assert_eq(plugboard_harness_auth_failed_count(h), 1);
    const char *told = plugboard_harness_auth_failed_reason(h, 0);
    cr_expect_str_eq(told, "Stripe refused the credentials: HTTP 401");
    pb_harness_close(&h);
}

Test(stripe_sink, invalid_email_rejects_with_stripe_message)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_seed("{\"customers\":[{\"id\":\"cus_X\",\"email\":\"a@b\"}]}");
    s_deliver(h,
              "{\"contact\":{\"email\":\"a@b\",\"name\":\"A\","
              "\"source\":\"hubspot\"}}",
              PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "HTTP 400: Invalid email address: a@b") != NULL,
              "%s", r.reason);
    pb_harness_close(&h);
}

Test(stripe_sink, malformed_answer_and_lost_connection_are_retried)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/v1/customers\",\"kind\":\"malformed\","
            "\"body\":\"{\\\"object\\\": \\\"list\\\", \\\"da\"}");
    s_deliver(h, s_jane, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "malformed JSON") != NULL, "%s", r.reason);
    /* twice: libcurl itself resends once on a reused connection */
    s_fault("{\"path\":\"/v1/customers\",\"kind\":\"close\","
            "\"times\":2}");
    s_deliver(h, s_jane, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "list customers") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}
