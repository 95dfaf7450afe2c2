/*
 * test_hubspot.c - the hubspot connector, loaded as the real hubspot.so,
 * driven through the test harness against the HubSpot stand-in
 * (tests/stand-ins/hubspot.py), which records every request it receives.
 *
 * Sink: what HubSpot receives for each canonical event (endpoint, method,
 * Authorization, JSON body); how every kind of failure is classified
 * (429 with and without Retry-After, the daily limit, 500, timeouts, 401,
 * validation errors, malformed answers); and that a retry after an unknown
 * outcome never creates a second contact or note.
 * Source: HubSpot's v3 webhook signatures with the corpus vectors and
 * samples (tests/fixtures/hubspot/); forged, stale, re-encoded and
 * wrong-URL requests are refused with 4xx and emit nothing.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "harness.h"
#include "standin.h"

#define PLUGIN PB_PLUGIN_DIR "/hubspot.so"
#define FIXTURES PB_SOURCE_DIR "/tests/fixtures/hubspot/"
#define TOKEN "pat-na1-11111111-2222-3333-4444-555555555555"
#define SECRET "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
#define PUBLIC_URL "https://www.example.com/webhook_uri"

static pb_standin_t *s_hs;

static void
s_setup(void)
{
    char err[256] = "";

    setenv("PB_TEST_HUBSPOT_TOKEN", TOKEN, 1);
    setenv("PB_TEST_HUBSPOT_BAD_TOKEN", "pat-na1-revoked-0000", 1);
    setenv("PB_TEST_HUBSPOT_SECRET", SECRET, 1);
    s_hs = pb_standin_start("hubspot", err, sizeof err);
    cr_assert_not_null(s_hs, "%s", err);
}

static void
s_teardown(void)
{
    pb_standin_stop(&s_hs);
}

TestSuite(hubspot, .init = s_setup, .fini = s_teardown, .timeout = 30);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* Open with the stand-in's URL and up to three extra settings. */
static pb_harness_t *
s_open3(const char *a, const char *b, const char *c)
{
    char base[128];
    char err[512] = "";
    const char *settings[12] = {
        "token=env:PB_TEST_HUBSPOT_TOKEN",
        base,
        "timeout=1s",
        "connect_timeout=1s",
        "searches_per_second=0",
        "client_secret=env:PB_TEST_HUBSPOT_SECRET",
        "public_url=" PUBLIC_URL,
    };
    size_t n = 7;
    pb_harness_t *h;

    snprintf(base, sizeof base, "api_base=%s", pb_standin_url(s_hs));
    if (a != NULL) {
        settings[n++] = a;
    }
    if (b != NULL) {
        settings[n++] = b;
    }
    if (c != NULL) {
        settings[n++] = c;
    }
    h = pb_harness_open(PLUGIN, "crm", settings, err, sizeof err);
    cr_assert_not_null(h, "cannot open hubspot: %s", err);
    return h;
}

static pb_harness_t *
s_open(void)
{
    return s_open3(NULL, NULL, NULL);
}

static void
s_deliver(pb_harness_t *h, const char *type, const char *data,
          plugboard_outcome_t want, plugboard_result_t *r)
{
    cr_assert_eq(
        pb_harness_deliver(h, type, "jane.doe@example.com", data, 1, r), 0);
    cr_assert_eq(r->outcome, want, "outcome %d, want %d, reason: %s",
                 r->outcome, want, r->reason);
}

/* The JSON body of the n-th request to method+path. */
static json_t *
s_body(const char *method, const char *path, size_t n)
{
    json_t *rec = pb_standin_request(s_hs, method, path, n);
    json_error_t jerr;
    json_t *body;

    cr_assert_not_null(rec, "no request %zu to %s %s", n, method, path);
    body =
        json_loads(json_string_value(json_object_get(rec, "body")), 0, &jerr);
    cr_assert_not_null(body, "request body is not JSON: %s", jerr.text);
    json_decref(rec);
    return body;
}

static const char *
s_str(json_t *v, const char *key)
{
    return json_string_value(json_object_get(v, key));
}

static json_t *
s_state(const char *kind)
{
    json_t *state = pb_standin_state(s_hs);
    json_t *list;

    cr_assert_not_null(state);
    list = json_incref(json_object_get(state, kind));
    json_decref(state);
    return list;
}

static void
s_seed(const char *json)
{
    cr_assert_eq(pb_standin_seed(s_hs, json), 200);
}

static void
s_fault(const char *json)
{
    cr_assert_eq(pb_standin_fault(s_hs, json), 200);
}

static char *
s_fixture(const char *name, size_t *len)
{
    char path[512];
    char *text;

    snprintf(path, sizeof path, FIXTURES "%s", name);
    text = pb_test_read_file(path, len);
    cr_assert_not_null(text, "cannot read %s", path);
    return text;
}

/* Seed the contact of the CRM guide's example (id "512"). */
static void
s_seed_docs_contact(void)
{
    char *contact = s_fixture("crm_v3_contact.docs_example.json", NULL);
    char *seed = NULL;

    cr_assert(asprintf(&seed, "{\"contacts\": [%s]}", contact) > 0);
    s_seed(seed);
    free(seed);
    free(contact);
}

static const char *const s_payment_failed =
    "{\"amount\":2000,\"currency\":\"USD\","
    "\"payment\":{\"id\":\"pi_3KhZ8b\",\"vendor\":\"stripe\","
    "\"description\":\"Pro plan, March\"},"
    "\"failure\":{\"code\":\"card_declined\","
    "\"message\":\"Your card was declined.\"},"
    "\"customer\":{\"email\":\"jane.doe@example.com\",\"name\":\"Jane Doe\"},"
    "\"invoice\":{\"url\":\"https://invoice.stripe.com/i/acct_1/test_1\"}}";

static const char *const s_contact =
    "{\"contact\":{\"email\":\"Jane.Doe@Example.com\",\"name\":\"Jane Q Doe\","
    "\"phone\":\"+15555550100\",\"company\":\"Example Ltd\","
    "\"source\":\"stripe\"},\"customer\":{\"id\":\"cus_LOr4Jx1wZ2\"}}";

/* ------------------------------------------------------------------ */
/* Descriptor and settings                                             */
/* ------------------------------------------------------------------ */

Test(hubspot, descriptor_is_a_sink_and_a_webhook_source)
{
    pb_harness_t *h = s_open();
    const plugboard_connector_t *d = pb_harness_descriptor(h);
    static const char *const consumes[] = {
        "contact.upserted", "deal.stage_changed", "payment.succeeded",
        "payment.failed",   "payment.refunded",   "subscription.canceled",
        "ticket.created",   "ticket.updated",     "ticket.solved",
        "email.bounced",
    };

    cr_assert_str_eq(d->name, "hubspot");
    cr_assert_not_null(d->deliver);
    cr_assert_not_null(d->webhook);
    for (size_t i = 0; i < sizeof consumes / sizeof consumes[0]; i++) {
        bool found = false;

        for (size_t j = 0; d->consumes[j] != NULL; j++) {
            found = found || strcmp(d->consumes[j], consumes[i]) == 0;
        }
        cr_assert(found, "consumes lacks %s", consumes[i]);
    }
    cr_assert_str_eq(d->emits[0], "contact.upserted");
    cr_assert_str_eq(d->emits[1], "deal.stage_changed");
    pb_harness_close(&h);
}

Test(hubspot, missing_token_or_bad_urls_fail_to_open)
{
    const char *no_token[] = {"api_base=http://127.0.0.1:1", NULL};
    const char *bad_base[] = {"token=env:PB_TEST_HUBSPOT_TOKEN",
                              "api_base=ftp://example.com", NULL};
    const char *secret_without_url[] = {
        "token=env:PB_TEST_HUBSPOT_TOKEN",
        "client_secret=env:PB_TEST_HUBSPOT_SECRET", NULL};
    const char *url_with_query[] = {"token=env:PB_TEST_HUBSPOT_TOKEN",
                                    "public_url=https://x.example/h?a=b", NULL};
    char err[512];

    cr_assert_null(pb_harness_open(PLUGIN, NULL, no_token, err, sizeof err));
    cr_assert(strstr(err, "token") != NULL, "%s", err);
    cr_assert_null(pb_harness_open(PLUGIN, NULL, bad_base, err, sizeof err));
    cr_assert(strstr(err, "api_base") != NULL, "%s", err);
    cr_assert_null(
        pb_harness_open(PLUGIN, NULL, secret_without_url, err, sizeof err));
    cr_assert(strstr(err, "public_url") != NULL, "%s", err);
    cr_assert_null(
        pb_harness_open(PLUGIN, NULL, url_with_query, err, sizeof err));
    cr_assert(strstr(err, "public_url") != NULL, "%s", err);
    cr_assert(strstr(err, TOKEN) == NULL, "token leaked: %s", err);
}

/* ------------------------------------------------------------------ */
/* contact.upserted                                                    */
/* ------------------------------------------------------------------ */

Test(hubspot, contact_upserted_searches_then_creates)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *rec, *body, *props, *filter, *contacts;

    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_OK, &r);
    rec =
        pb_standin_request(s_hs, "POST", "/crm/v3/objects/contacts/search", 0);
    cr_assert_not_null(rec);
    cr_assert_str_eq(s_str(json_object_get(rec, "headers"), "authorization"),
                     "Bearer " TOKEN);
    cr_assert_str_eq(s_str(json_object_get(rec, "headers"), "content-type"),
                     "application/json");
    json_decref(rec);
    body = s_body("POST", "/crm/v3/objects/contacts/search", 0);
    filter = json_object_get(
        json_array_get(
            json_object_get(
                json_array_get(json_object_get(body, "filterGroups"), 0),
                "filters"),
            0),
        "value");
    cr_assert_str_eq(json_string_value(filter), "jane.doe@example.com");
    json_decref(body);
    body = s_body("POST", "/crm/v3/objects/contacts", 0);
    props = json_object_get(body, "properties");
    cr_assert_str_eq(s_str(props, "email"), "jane.doe@example.com");
    cr_assert_str_eq(s_str(props, "firstname"), "Jane");
    cr_assert_str_eq(s_str(props, "lastname"), "Q Doe");
    cr_assert_str_eq(s_str(props, "phone"), "+15555550100");
    cr_assert_str_eq(s_str(props, "company"), "Example Ltd");
    json_decref(body);
    contacts = s_state("contacts");
    cr_assert_eq(json_array_size(contacts), 1);
    json_decref(contacts);
    pb_harness_close(&h);
}

Test(hubspot, contact_upserted_patches_the_existing_contact)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *body, *contacts;

    s_seed_docs_contact();
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_hs, "POST", "/crm/v3/objects/contacts"), 0,
                 "no create for a known e-mail");
    body = s_body("PATCH", "/crm/v3/objects/contacts/512", 0);
    cr_assert_str_eq(s_str(json_object_get(body, "properties"), "lastname"),
                     "Q Doe");
    json_decref(body);
    contacts = s_state("contacts");
    cr_assert_eq(json_array_size(contacts), 1);
    cr_assert_str_eq(
        s_str(json_object_get(json_array_get(contacts, 0), "properties"),
              "company"),
        "Example Ltd");
    json_decref(contacts);
    pb_harness_close(&h);
}

/* An id beyond 2^53 (where doubles lose digits) reaches HubSpot exactly. */
Test(hubspot, ids_beyond_2_pow_53_stay_exact)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_seed("{\"contacts\":[{\"id\":\"9007199254740993\",\"properties\":"
           "{\"email\":\"jane.doe@example.com\"}}]}");
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_hs, "PATCH",
                                  "/crm/v3/objects/contacts/9007199254740993"),
                 1);
    pb_harness_close(&h);
}

/* A contact that came from HubSpot is not written back to it. */
Test(hubspot, contacts_from_hubspot_are_not_echoed)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_deliver(h, "contact.upserted",
              "{\"contact\":{\"email\":\"jane.doe@example.com\","
              "\"source\":\"hubspot\"}}",
              PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 0);
    pb_harness_close(&h);
}

Test(hubspot, contact_without_email_is_rejected)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_deliver(h, "contact.upserted",
              "{\"contact\":{\"email\":\"not an address\",\"source\":\"x\"}}",
              PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "contact.email") != NULL, "%s", r.reason);
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 0);
    pb_harness_close(&h);
}

/*
 * The create reaches HubSpot, which creates the contact, but the answer
 * comes after the timeout: the delivery is retried (later than the
 * search index needs), and the retry finds the contact instead of
 * creating a second one.
 */
Test(hubspot, create_timeout_then_retry_does_not_duplicate)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *contacts;

    s_fault("{\"method\":\"POST\",\"path\":\"/crm/v3/objects/contacts\","
            "\"kind\":\"timeout\",\"apply\":true,\"delay_ms\":3000}");
    /* the answer comes after 3 s: "timed out" shows timeout=1s ended the
     * wait (a late answer would have been a success) */
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "timed out") != NULL, "%s", r.reason);
    cr_assert_geq(r.retry_after_ms, 5000);
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_OK, &r);
    contacts = s_state("contacts");
    cr_assert_eq(json_array_size(contacts), 1, "one contact, not two");
    json_decref(contacts);
    cr_assert_eq(pb_standin_count(s_hs, "POST", "/crm/v3/objects/contacts"), 1);
    pb_harness_close(&h);
}

/*
 * Each fault the stand-in injects on the contact create, then the same
 * event again on a fresh connector (as the host retries it): the first
 * answer gives the outcome the fault calls for, and whatever the first
 * attempt left behind, each e-mail ends up as exactly one contact.
 * Faults marked "apply" let HubSpot create the contact and then lose the
 * answer.
 */
Test(hubspot, every_fault_then_the_retry_leaves_one_contact)
{
    static const struct {
        const char *fault;
        plugboard_outcome_t first;
        const char *needle;
    } cases[] = {
        {"\"status\":500,\"apply\":true,\"json\":{\"status\":\"error\","
         "\"message\":\"internal error\"}",
         PLUGBOARD_RETRY, "HTTP 500"},
        {"\"kind\":\"malformed\",\"apply\":true", PLUGBOARD_RETRY,
         "malformed JSON"},
        {"\"kind\":\"timeout\",\"apply\":true,\"delay_ms\":3000",
         PLUGBOARD_RETRY, "timed out"},
        {"\"kind\":\"close\",\"apply\":true,\"times\":2", PLUGBOARD_RETRY,
         ""},
        {"\"status\":401,\"json\":{\"status\":\"error\",\"message\":"
         "\"Authentication credentials not found.\",\"category\":"
         "\"INVALID_AUTHENTICATION\"}",
         PLUGBOARD_REJECT, "authentication failed"},
        {"\"status\":429,\"headers\":{\"Retry-After\":\"1\"},\"json\":"
         "{\"status\":\"error\",\"message\":\"You have reached your "
         "secondly limit.\",\"errorType\":\"RATE_LIMIT\",\"policyName\":"
         "\"SECONDLY\"}",
         PLUGBOARD_HOLD, "rate limited"},
    };
    size_t n = sizeof cases / sizeof cases[0];

    for (size_t i = 0; i < n; i++) {
        char data[512], fault[512], email[64];
        size_t len = 0, k, same = 0;
        uint8_t *frame;
        pb_harness_t *h;
        plugboard_result_t r;
        json_t *contacts, *c;

        snprintf(email, sizeof email, "fault.%zu@example.com", i);
        snprintf(data, sizeof data,
                 "{\"contact\":{\"email\":\"%s\",\"name\":\"Fault Case\"}}",
                 email);
        snprintf(fault, sizeof fault,
                 "{\"method\":\"POST\",\"path\":\"/crm/v3/objects/contacts\","
                 "%s}",
                 cases[i].fault);
        frame = pb_test_event_frame("contact.upserted", email, data, &len);
        cr_assert_not_null(frame);
        h = s_open();
        s_fault(fault);
        cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
        cr_assert_eq(r.outcome, cases[i].first, "case %zu: %s", i, r.reason);
        cr_assert(strstr(r.reason, cases[i].needle) != NULL, "case %zu: %s",
                  i, r.reason);
        /* only the 401 tells the host the credentials were refused */
        cr_expect_eq(plugboard_harness_auth_failed_count(h),
                     strstr(cases[i].fault, "\"status\":401") ? 1u : 0u,
                     "case %zu", i);
        pb_harness_close(&h);
        /* a dead letter replayed, or a retry: the same event again */
        h = s_open();
        pb_test_frame_set_attempt(frame, len, 2);
        cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
        cr_assert_eq(r.outcome, PLUGBOARD_OK, "case %zu: %s", i, r.reason);
        pb_harness_close(&h);
        free(frame);
        contacts = s_state("contacts");
        json_array_foreach(contacts, k, c)
        {
            const char *e = s_str(json_object_get(c, "properties"), "email");
            if (e && strcasecmp(e, email) == 0)
                same++;
        }
        cr_assert_eq(same, 1, "case %zu: %zu contacts for %s", i, same,
                     email);
        cr_assert_eq(json_array_size(contacts), i + 1, "case %zu", i);
        json_decref(contacts);
    }
}

/* Search lags behind creates at HubSpot: the second upsert does not see
 * the contact the first one made, so its create is refused with 409; the
 * existing id in that answer is used. */
Test(hubspot, conflict_on_create_uses_the_existing_contact)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *contacts;

    s_seed("{\"search_lag_ms\": 60000}");
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_OK, &r);
    s_deliver(h, "contact.upserted",
              "{\"contact\":{\"email\":\"jane.doe@example.com\","
              "\"first_name\":\"Janet\",\"source\":\"zendesk\"}}",
              PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_hs, "POST", "/crm/v3/objects/contacts"), 2);
    cr_assert_eq(pb_standin_count(s_hs, "PATCH", "/crm/v3/objects/contacts/*"),
                 1);
    contacts = s_state("contacts");
    cr_assert_eq(json_array_size(contacts), 1);
    cr_assert_str_eq(
        s_str(json_object_get(json_array_get(contacts, 0), "properties"),
              "firstname"),
        "Janet");
    json_decref(contacts);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Failure classification                                              */
/* ------------------------------------------------------------------ */

Test(hubspot, rate_limit_with_retry_after_holds_every_request)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/crm/v3/objects/contacts/search\",\"status\":429,"
            "\"headers\":{\"Retry-After\":\"7\"},\"json\":{\"status\":"
            "\"error\",\"message\":\"You have reached your secondly limit.\","
            "\"errorType\":\"RATE_LIMIT\",\"policyName\":\"SECONDLY\"}}");
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    cr_assert_eq(r.retry_after_ms, 7000, "retry_after_ms %lld",
                 (long long)r.retry_after_ms);
    cr_assert(strstr(r.reason, "rate limited") != NULL, "%s", r.reason);
    /* held: the next delivery does not reach HubSpot at all */
    s_deliver(h, "payment.failed", s_payment_failed, PLUGBOARD_HOLD, &r);
    cr_assert_gt(r.retry_after_ms, 5000);
    cr_assert_leq(r.retry_after_ms, 7000);
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 1);
    pb_harness_close(&h);
}

/* HubSpot's ten-second window often answers 429 without Retry-After. */
Test(hubspot, ten_second_window_without_retry_after)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/crm/v3/objects/contacts/search\",\"status\":429,"
            "\"json\":{\"status\":\"error\",\"message\":\"You have reached "
            "your ten_secondly_rolling limit.\",\"errorType\":\"RATE_LIMIT\","
            "\"policyName\":\"TEN_SECONDLY_ROLLING\"}}");
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    cr_assert_eq(r.retry_after_ms, 10000);
    cr_assert(strstr(r.reason, "TEN_SECONDLY_ROLLING") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

/* The daily limit holds events until the account's midnight. */
Test(hubspot, daily_limit_holds_until_the_reset)
{
    pb_harness_t *h = s_open3("daily_reset_utc_offset=-300", NULL, NULL);
    plugboard_result_t r;
    int64_t now_local = (int64_t)time(NULL) * 1000 - 300LL * 60000;
    int64_t day = 86400000;
    int64_t want = (now_local / day + 1) * day - now_local;

    s_fault("{\"path\":\"/crm/v3/objects/contacts/search\",\"status\":429,"
            "\"json\":{\"status\":\"error\",\"message\":\"You have reached "
            "your daily limit.\",\"errorType\":\"RATE_LIMIT\","
            "\"policyName\":\"DAILY\"}}");
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    cr_assert(r.retry_after_ms > want - 5000 && r.retry_after_ms <= want,
              "retry_after_ms %lld, want about %lld",
              (long long)r.retry_after_ms, (long long)want);
    cr_assert(strstr(r.reason, "DAILY") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

Test(hubspot, retry_after_as_http_date)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    time_t later = time(NULL) + 4;
    char date[64], fault[256];

    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime(&later));
    snprintf(fault, sizeof fault,
             "{\"path\":\"/crm/v3/objects/contacts/search\",\"status\":429,"
             "\"headers\":{\"Retry-After\":\"%s\"},\"json\":{}}",
             date);
    s_fault(fault);
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    cr_assert(r.retry_after_ms > 2000 && r.retry_after_ms <= 4000,
              "retry_after_ms %lld", (long long)r.retry_after_ms);
    pb_harness_close(&h);
}

Test(hubspot, own_pacing_holds_before_hubspot_must)
{
    pb_harness_t *h = s_open3("requests_per_10s=2", "max_wait=0s", NULL);
    plugboard_result_t r;

    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_OK, &r);
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    cr_assert(strstr(r.reason, "requests_per_10s") != NULL, "%s", r.reason);
    cr_assert_gt(r.retry_after_ms, 8000);
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 2);
    pb_harness_close(&h);
}

/*
 * HubSpot counts requests per token.  Two states of one loaded plugin
 * with the same token (the workers of one connector with concurrency > 1)
 * share one pacer and one 429 hold: the second worker does not get a
 * window of its own, nor call HubSpot while HubSpot has said 429.
 */
Test(hubspot, states_with_one_token_share_the_pacing_and_the_hold)
{
    pb_harness_t *a = s_open3("requests_per_10s=2", "max_wait=0s", NULL);
    pb_harness_t *b = s_open3("requests_per_10s=2", "max_wait=0s", NULL);
    plugboard_result_t r;

    s_deliver(a, "contact.upserted", s_contact, PLUGBOARD_OK, &r);
    s_deliver(b, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    cr_assert(strstr(r.reason, "requests_per_10s") != NULL, "%s", r.reason);
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 2);
    pb_harness_close(&a);
    pb_harness_close(&b);

    a = s_open();
    b = s_open();
    s_fault("{\"path\":\"/crm/v3/objects/contacts/search\",\"status\":429,"
            "\"headers\":{\"Retry-After\":\"7\"},\"json\":{\"status\":"
            "\"error\",\"message\":\"You have reached your secondly limit.\","
            "\"errorType\":\"RATE_LIMIT\",\"policyName\":\"SECONDLY\"}}");
    s_deliver(a, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    s_deliver(b, "contact.upserted", s_contact, PLUGBOARD_HOLD, &r);
    cr_assert(strstr(r.reason, "held by HubSpot's rate limit") != NULL, "%s",
              r.reason);
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 3, "no call from b");
    pb_harness_close(&a);
    pb_harness_close(&b);
}

Test(hubspot, server_error_is_retried)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/crm/v3/objects/contacts\",\"status\":502,"
            "\"json\":{\"status\":\"error\",\"message\":\"Bad Gateway\"}}");
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "HTTP 502") != NULL, "%s", r.reason);
    cr_assert_eq(r.retry_after_ms, 0);
    pb_harness_close(&h);
}

Test(hubspot, bad_token_is_rejected_without_leaking_it)
{
    char base[128];
    char err[256];
    const char *settings[] = {"token=env:PB_TEST_HUBSPOT_BAD_TOKEN", base,
                              NULL};
    pb_harness_t *h;
    plugboard_result_t r;

    snprintf(base, sizeof base, "api_base=%s", pb_standin_url(s_hs));
    h = pb_harness_open(PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "authentication failed: check the token") !=
                  NULL,
              "%s", r.reason);
    cr_assert(strstr(r.reason, "revoked") == NULL, "token leaked");
    pb_harness_close(&h);
}

/* A validation error dead-letters with HubSpot's own message. */
Test(hubspot, validation_error_rejects_with_the_vendor_message)
{
    pb_harness_t *h = s_open3("event_property=no_such_property", NULL, NULL);
    plugboard_result_t r;

    s_seed_docs_contact();
    s_deliver(h, "payment.failed", s_payment_failed, PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "HTTP 400") != NULL, "%s", r.reason);
    cr_assert(strstr(r.reason, "no_such_property") != NULL, "%s", r.reason);
    cr_assert_lt(strlen(r.reason), 256);
    pb_harness_close(&h);
}

Test(hubspot, malformed_answer_is_retried)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/crm/v3/objects/contacts/search\","
            "\"kind\":\"malformed\",\"body\":\"{\\\"total\\\": 1, \\\"resu\"}");
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "malformed JSON") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

Test(hubspot, connection_refused_is_retried)
{
    const char *settings[] = {"token=env:PB_TEST_HUBSPOT_TOKEN",
                              "api_base=http://127.0.0.1:1",
                              "connect_timeout=1s", NULL};
    char err[256];
    pb_harness_t *h = pb_harness_open(PLUGIN, NULL, settings, err, sizeof err);
    plugboard_result_t r;

    cr_assert_not_null(h, "%s", err);
    s_deliver(h, "contact.upserted", s_contact, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "search contact") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Notes and deals                                                     */
/* ------------------------------------------------------------------ */

Test(hubspot, payment_failed_becomes_a_note_on_the_contact)
{
    pb_harness_t *h = s_open3("event_property=lifecyclestage", NULL, NULL);
    plugboard_result_t r;
    json_t *body, *assoc, *type, *props;
    const char *html;

    s_seed_docs_contact();
    s_deliver(h, "payment.failed", s_payment_failed, PLUGBOARD_OK, &r);
    body = s_body("POST", "/crm/v3/objects/notes", 0);
    props = json_object_get(body, "properties");
    html = s_str(props, "hs_note_body");
    cr_assert(strstr(html, "20.00 USD") != NULL, "%s", html);
    cr_assert(strstr(html, "Your card was declined.") != NULL, "%s", html);
    cr_assert(strstr(html, "plugboard event ") != NULL, "%s", html);
    cr_assert_eq(strlen(s_str(props, "hs_timestamp")), 24);
    assoc = json_array_get(json_object_get(body, "associations"), 0);
    cr_assert_str_eq(s_str(json_object_get(assoc, "to"), "id"), "512");
    type = json_array_get(json_object_get(assoc, "types"), 0);
    cr_assert_eq(json_integer_value(json_object_get(type, "associationTypeId")),
                 202);
    cr_assert_str_eq(s_str(type, "associationCategory"), "HUBSPOT_DEFINED");
    json_decref(body);
    body = s_body("PATCH", "/crm/v3/objects/contacts/512", 0);
    cr_assert_str_eq(
        s_str(json_object_get(body, "properties"), "lifecyclestage"),
        "payment.failed");
    json_decref(body);
    pb_harness_close(&h);
}

Test(hubspot, note_for_an_unknown_email_creates_the_contact)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *contacts, *body;

    s_deliver(h, "payment.failed", s_payment_failed, PLUGBOARD_OK, &r);
    contacts = s_state("contacts");
    cr_assert_eq(json_array_size(contacts), 1);
    json_decref(contacts);
    body = s_body("POST", "/crm/v3/objects/contacts", 0);
    cr_assert_str_eq(s_str(json_object_get(body, "properties"), "firstname"),
                     "Jane");
    json_decref(body);
    cr_assert_eq(pb_standin_count(s_hs, "POST", "/crm/v3/objects/notes"), 1);
    pb_harness_close(&h);
}

Test(hubspot, note_without_customer_email_is_rejected)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_deliver(h, "subscription.canceled",
              "{\"subscription\":{\"id\":\"sub_1\",\"status\":\"canceled\"},"
              "\"customer\":{\"id\":\"cus_1\"}}",
              PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "customer.email") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

/*
 * The note is created but the answer never arrives; the retry (attempt 2
 * of the same event) searches notes for the event's id, finds it, and
 * creates nothing.
 */
Test(hubspot, note_retry_after_timeout_does_not_duplicate)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    size_t len = 0;
    uint8_t *frame = pb_test_event_frame(
        "payment.failed", "jane.doe@example.com", s_payment_failed, &len);
    json_t *notes;

    cr_assert_not_null(frame);
    s_seed_docs_contact();
    s_fault("{\"method\":\"POST\",\"path\":\"/crm/v3/objects/notes\","
            "\"kind\":\"timeout\",\"apply\":true,\"delay_ms\":3000}");
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_RETRY, "%s", r.reason);
    cr_assert_geq(r.retry_after_ms, 5000);
    pb_test_frame_set_attempt(frame, len, 2);
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    cr_assert_eq(pb_standin_count(s_hs, "POST", "/crm/v3/objects/notes/search"),
                 1);
    notes = s_state("notes");
    cr_assert_eq(json_array_size(notes), 1, "one note, not two");
    json_decref(notes);
    free(frame);
    pb_harness_close(&h);
}

/*
 * HubSpot creates the note, then the connection drops before any answer.
 * libcurl would silently resend a request whose reused connection died;
 * a note create always goes out on a new connection, so HubSpot sees it
 * once, and the delivery is retried (and then finds the note).
 */
Test(hubspot, note_on_a_dropped_connection_is_not_resent)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    size_t len = 0;
    uint8_t *frame = pb_test_event_frame(
        "payment.failed", "jane.doe@example.com", s_payment_failed, &len);
    json_t *notes;

    cr_assert_not_null(frame);
    s_seed_docs_contact();
    s_fault("{\"method\":\"POST\",\"path\":\"/crm/v3/objects/notes\","
            "\"kind\":\"close\",\"apply\":true}");
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_RETRY, "%s", r.reason);
    cr_assert_eq(pb_standin_count(s_hs, "POST", "/crm/v3/objects/notes"), 1);
    pb_test_frame_set_attempt(frame, len, 2);
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    notes = s_state("notes");
    cr_assert_eq(json_array_size(notes), 1, "one note, not two");
    json_decref(notes);
    free(frame);
    pb_harness_close(&h);
}

Test(hubspot, deal_stage_changed_patches_the_deal)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *body;
    char *deal =
        s_fixture("crm_v3_deal_create_request.docs_example.json", NULL);
    json_error_t jerr;
    json_t *request = json_loads(deal, 0, &jerr);
    json_t *seed;
    char *text;

    /* the deals guide's example deal, stored under a 12-digit id */
    cr_assert_not_null(request, "%s", jerr.text);
    seed = json_pack("{s:[{s:s,s:O}]}", "deals", "id", "332507367156",
                     "properties", json_object_get(request, "properties"));
    text = json_dumps(seed, JSON_COMPACT);
    s_seed(text);
    free(text);
    json_decref(seed);
    json_decref(request);
    free(deal);
    /* the deal moves on from the guide's "contractsent" */
    s_deliver(h, "deal.stage_changed",
              "{\"deal\":{\"id\":\"332507367156\",\"stage\":\"closedwon\","
              "\"pipeline\":\"default\",\"vendor\":\"hubspot\"}}",
              PLUGBOARD_OK, &r);
    body = s_body("PATCH", "/crm/v3/objects/deals/332507367156", 0);
    cr_assert_str_eq(s_str(json_object_get(body, "properties"), "dealstage"),
                     "closedwon");
    cr_assert_str_eq(s_str(json_object_get(body, "properties"), "pipeline"),
                     "default");
    json_decref(body);
    s_deliver(h, "deal.stage_changed",
              "{\"deal\":{\"id\":\"1\",\"stage\":\"closedwon\","
              "\"vendor\":\"hubspot\"}}",
              PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "no HubSpot deal 1") != NULL, "%s", r.reason);
    s_deliver(h, "deal.stage_changed",
              "{\"deal\":{\"id\":\"332507367156\",\"stage\":\"won\","
              "\"vendor\":\"pipedrive\"}}",
              PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "pipedrive") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Webhooks                                                            */
/* ------------------------------------------------------------------ */

static void
s_sign(const char *secret, const char *method, const char *uri,
       const void *body, size_t len, const char *ts, char out[64])
{
    size_t n = strlen(method) + strlen(uri) + len + strlen(ts);
    unsigned char *msg = malloc(n + 1);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    size_t o = 0;

    cr_assert_not_null(msg);
    memcpy(msg + o, method, strlen(method));
    o += strlen(method);
    memcpy(msg + o, uri, strlen(uri));
    o += strlen(uri);
    memcpy(msg + o, body, len);
    o += len;
    memcpy(msg + o, ts, strlen(ts));
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, n, mac, &mac_len);
    EVP_EncodeBlock((unsigned char *)out, mac, (int)mac_len);
    free(msg);
}

/* POST body with the v3 headers; returns the status. */
static int
s_post(pb_harness_t *h, const void *body, size_t len, const char *sig,
       const char *ts, char **resp)
{
    char sig_header[128], ts_header[64];
    const char *headers[] = {"Content-Type: application/json", sig_header,
                             ts_header, NULL};
    int status = 0;

    snprintf(sig_header, sizeof sig_header, "X-HubSpot-Signature-v3: %s", sig);
    snprintf(ts_header, sizeof ts_header, "X-HubSpot-Request-Timestamp: %s",
             ts);
    cr_assert_eq(
        pb_harness_webhook(h, "POST", headers, body, len, &status, resp), 0);
    return status;
}

static void
s_now_ms(char out[32], long long delta_ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, 32, "%lld",
             (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + delta_ms);
}

/* Sign body now for PUBLIC_URL and post it; asserts the status. */
static void
s_post_signed(pb_harness_t *h, const void *body, size_t len, int want)
{
    char ts[32], sig[64];
    char *resp = NULL;
    int status;

    s_now_ms(ts, 0);
    s_sign(SECRET, "POST", PUBLIC_URL, body, len, ts, sig);
    status = s_post(h, body, len, sig, ts, &resp);
    cr_assert_eq(status, want, "status %d: %s", status, resp);
    free(resp);
}

static void
s_expect_refused(pb_harness_t *h, const void *body, size_t len, const char *sig,
                 const char *ts, const char *why)
{
    char *resp = NULL;
    int status = s_post(h, body, len, sig, ts, &resp);

    cr_assert(status >= 400 && status < 500, "status %d", status);
    cr_assert_str_eq(resp, why);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 0, "no API call");
    free(resp);
}

static const plugboard_event_t *
s_emitted(pb_harness_t *h, size_t i, const char *type)
{
    const plugboard_event_t *ev = pb_harness_emitted(h, i);

    cr_assert_not_null(ev, "no event %zu", i);
    cr_assert_str_eq(pb_harness_api()->event_type(ev), type);
    return ev;
}

static void
s_field(const plugboard_event_t *ev, const char *path, const char *want)
{
    const char *got = NULL;
    size_t len = 0;

    cr_assert(pb_harness_api()->event_string(ev, path, &got, &len),
              "%s missing", path);
    cr_assert(len == strlen(want) && memcmp(got, want, len) == 0,
              "%s is \"%.*s\", want \"%s\"", path, (int)len, got, want);
}

/* The derived v3 vector of corpus/hubspot/SIGNATURE.md verifies; being
 * from 2019 it is then refused as stale.  One byte changed: forged. */
Test(hubspot, derived_v3_vector_verifies_then_is_stale)
{
    pb_harness_t *h = s_open();
    char body[] = "{\"example_field\":\"example_value\"}";

    s_expect_refused(h, body, strlen(body),
                     "eT0ip2TKVpsIi1vb5C2Uu42eNdHL+oTE3NRZOF67O2U=",
                     "1564113600000", "timestamp outside the tolerance");
    body[3] = 'X';
    s_expect_refused(h, body, strlen(body),
                     "eT0ip2TKVpsIi1vb5C2Uu42eNdHL+oTE3NRZOF67O2U=",
                     "1564113600000", "invalid signature");
    pb_harness_close(&h);
}

/* v1 (a plain hash of secret + body, no timestamp) cannot stop replays:
 * the SDK's own vector is refused. */
Test(hubspot, v1_signature_alone_is_refused)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body =
        s_fixture("webhook_contact_creation.sdk_signature_vector.raw", &len);
    const char *headers[] = {
        "X-HubSpot-Signature: 232db2615f3d666fe21a8ec971ac7b5402d33b9a925784"
        "df3ca654d05f4817de",
        "X-HubSpot-Signature-Version: v1", NULL};
    int status = 0;
    char *resp = NULL;

    cr_assert_eq(
        pb_harness_webhook(h, "POST", headers, body, len, &status, &resp), 0);
    cr_assert_eq(status, 401);
    cr_assert(strstr(resp, "X-HubSpot-Signature-v3") != NULL, "%s", resp);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(resp);
    free(body);
    pb_harness_close(&h);
}

/* The SDK vector's body, signed v3 now: a contact.creation whose e-mail
 * is read back with one batch read. */
Test(hubspot, contact_creation_becomes_contact_upserted)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body =
        s_fixture("webhook_contact_creation.sdk_signature_vector.raw", &len);
    const plugboard_event_t *ev;
    json_t *read;

    s_seed("{\"contacts\":[{\"id\":\"123\",\"properties\":{\"email\":"
           "\" Jane.Doe@Example.COM \",\"firstname\":\"Jane\","
           "\"lastname\":\"Doe\"}}]}");
    s_post_signed(h, body, len, 200);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    ev = s_emitted(h, 0, "contact.upserted");
    s_field(ev, "contact.email", "jane.doe@example.com");
    s_field(ev, "contact.name", "Jane Doe");
    s_field(ev, "contact.source", "hubspot");
    s_field(ev, "customer.id", "123");
    cr_assert_str_eq(pb_harness_api()->event_key(ev), "jane.doe@example.com");
    cr_assert_eq(pb_harness_api()->event_time_ms(ev), 1564113600000LL);
    cr_assert_str_eq(pb_envelope_dedupe_id(ev), "hubspot:1");
    read = s_body("POST", "/crm/v3/objects/contacts/batch/read", 0);
    cr_assert_str_eq(
        s_str(json_array_get(json_object_get(read, "inputs"), 0), "id"), "123");
    json_decref(read);
    free(body);
    pb_harness_close(&h);
}

/* The docs' batch (legacy "eventType"): one contact exists, the other was
 * deleted; the request is still acknowledged. */
Test(hubspot, batch_with_a_deleted_contact_emits_the_rest)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body = s_fixture(
        "webhook_batch_contact_propertyChange_and_creation.docs_example.json",
        &len);

    s_seed("{\"contacts\":[{\"id\":\"1246965\",\"properties\":{\"email\":"
           "\"subscriber@example.com\"}}]}");
    s_post_signed(h, body, len, 200);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    s_field(s_emitted(h, 0, "contact.upserted"), "customer.id", "1246965");
    cr_assert_str_eq(pb_envelope_dedupe_id(pb_harness_emitted(h, 0)),
                     "hubspot:3816279340");
    free(body);
    pb_harness_close(&h);
}

Test(hubspot, dealstage_change_becomes_deal_stage_changed)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body = s_fixture(
        "webhook_deal_propertyChange_dealstage.community_capture.json", &len);
    const plugboard_event_t *ev;

    s_post_signed(h, body, len, 200);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    ev = s_emitted(h, 0, "deal.stage_changed");
    s_field(ev, "deal.id", "697680835");
    s_field(ev, "deal.stage", "1f4f1ec1-8174-49f3-a112-4eaa4748e38e");
    s_field(ev, "deal.vendor", "hubspot");
    s_field(ev, "deal.url",
            "https://app.hubspot.com/contacts/5799819/record/0-3/697680835");
    cr_assert_str_eq(pb_harness_api()->event_key(ev), "deal:697680835");
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 0, "no contact read");
    free(body);
    pb_harness_close(&h);
}

Test(hubspot, deal_creation_is_acknowledged_and_ignored)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body =
        s_fixture("webhook_deal_creation.community_capture.json", &len);

    s_post_signed(h, body, len, 200);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(body);
    pb_harness_close(&h);
}

/* Ids beyond int64 (jansson would refuse the whole batch) stay exact. */
Test(hubspot, object_id_beyond_int64_stays_exact)
{
    pb_harness_t *h = s_open();
    const char *body =
        "[{\"eventId\":99999999999999999999,\"subscriptionId\":1,"
        "\"portalId\":62515,\"occurredAt\":1564113600000,"
        "\"subscriptionType\":\"deal.propertyChange\",\"attemptNumber\":0,"
        "\"objectId\":18446744073709551617,\"propertyName\":\"dealstage\","
        "\"propertyValue\":\"closedwon\",\"changeSource\":\"CRM\"}]";

    s_post_signed(h, body, strlen(body), 200);
    cr_assert_eq(pb_harness_emitted_count(h), 1);
    s_field(s_emitted(h, 0, "deal.stage_changed"), "deal.id",
            "18446744073709551617");
    cr_assert_str_eq(pb_envelope_dedupe_id(pb_harness_emitted(h, 0)),
                     "hubspot:99999999999999999999");
    pb_harness_close(&h);
}

Test(hubspot, forged_stale_reencoded_and_wrong_url_are_refused)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body = s_fixture(
        "webhook_deal_propertyChange_dealstage.community_capture.json", &len);
    json_error_t jerr;
    json_t *parsed = json_loadb(body, len, 0, &jerr);
    char *reencoded = json_dumps(parsed, JSON_COMPACT);
    char ts[32], old[32], secs[32], sig[64];

    s_now_ms(ts, 0);
    /* forged: another secret */
    s_sign("someone-else", "POST", PUBLIC_URL, body, len, ts, sig);
    s_expect_refused(h, body, len, sig, ts, "invalid signature");
    /* stale: signed correctly six minutes ago */
    s_now_ms(old, -6 * 60 * 1000);
    s_sign(SECRET, "POST", PUBLIC_URL, body, len, old, sig);
    s_expect_refused(h, body, len, sig, old, "timestamp outside the tolerance");
    /* six minutes ahead is as stale as six minutes old */
    s_now_ms(old, 6 * 60 * 1000);
    s_sign(SECRET, "POST", PUBLIC_URL, body, len, old, sig);
    s_expect_refused(h, body, len, sig, old, "timestamp outside the tolerance");
    /* the timestamp is milliseconds: seconds are decades stale */
    snprintf(secs, sizeof secs, "%lld", (long long)time(NULL));
    s_sign(SECRET, "POST", PUBLIC_URL, body, len, secs, sig);
    s_expect_refused(h, body, len, sig, secs,
                     "timestamp outside the tolerance");
    /* re-encoded: same JSON, other bytes, original signature */
    s_sign(SECRET, "POST", PUBLIC_URL, body, len, ts, sig);
    s_expect_refused(h, reencoded, strlen(reencoded), sig, ts,
                     "invalid signature");
    /* signed for the host's own URL, not the public one HubSpot calls */
    s_sign(SECRET, "POST", "http://127.0.0.1:8787/hooks/crm", body, len, ts,
           sig);
    s_expect_refused(h, body, len, sig, ts, "invalid signature");
    /* inside the five-minute window (not a narrower one): four minutes
     * old, and from a clock a minute ahead, both accepted */
    char *resp = NULL;
    s_now_ms(old, -4 * 60 * 1000);
    s_sign(SECRET, "POST", PUBLIC_URL, body, len, old, sig);
    cr_assert_eq(s_post(h, body, len, sig, old, &resp), 200, "%s", resp);
    free(resp);
    s_now_ms(old, 60 * 1000);
    s_sign(SECRET, "POST", PUBLIC_URL, body, len, old, sig);
    cr_assert_eq(s_post(h, body, len, sig, old, &resp), 200, "%s", resp);
    free(resp);
    cr_assert_eq(pb_harness_emitted_count(h), 2);
    free(reencoded);
    json_decref(parsed);
    free(body);
    pb_harness_close(&h);
}

/* HubSpot decodes %3A, %2F, %40 ... in the URI before signing. */
Test(hubspot, signed_uri_has_hubspots_escapes_decoded)
{
    char base[128];
    char err[256];
    const char *settings[] = {
        "token=env:PB_TEST_HUBSPOT_TOKEN", base,
        "client_secret=env:PB_TEST_HUBSPOT_SECRET",
        "public_url=https://hooks.example.com/hooks/crm%3Aprod%40eu", NULL};
    const char *body = "[]";
    pb_harness_t *h;
    char ts[32], sig[64];
    char *resp = NULL;

    snprintf(base, sizeof base, "api_base=%s", pb_standin_url(s_hs));
    h = pb_harness_open(PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    s_now_ms(ts, 0);
    s_sign(SECRET, "POST", "https://hooks.example.com/hooks/crm:prod@eu", body,
           2, ts, sig);
    cr_assert_eq(s_post(h, body, 2, sig, ts, &resp), 200, "%s", resp);
    free(resp);
    pb_harness_close(&h);
}

/* When the contacts cannot be read, HubSpot is told to send it again. */
Test(hubspot, failed_contact_read_answers_503)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body =
        s_fixture("webhook_contact_creation.sdk_signature_vector.raw", &len);

    s_fault("{\"path\":\"/crm/v3/objects/contacts/batch/read\","
            "\"status\":500,\"json\":{\"status\":\"error\","
            "\"message\":\"internal error\"}}");
    s_post_signed(h, body, len, 503);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(body);
    pb_harness_close(&h);
}

/* Signed by HubSpot but not JSON we can read: acknowledged (HubSpot
 * retries a 4xx for a day), nothing emitted, no API call. */
Test(hubspot, signed_malformed_json_is_acknowledged)
{
    pb_harness_t *h = s_open();
    const char *body = "[{\"eventId\": 1, \"eventId\": 2}]";
    const char *trunc = "[{\"eventId\": 1,";

    const char *odd = "[{\"portalId\": 62515}]";
    const plugboard_event_t *ev;

    s_post_signed(h, trunc, strlen(trunc), 200);
    s_post_signed(h, body, strlen(body), 200); /* duplicate keys */
    s_post_signed(h, odd, strlen(odd), 200);   /* an event of no known shape */
    cr_assert_eq(pb_standin_count(s_hs, NULL, "*"), 0);
    /* each kept as a dead letter of the connector, with what was sent */
    cr_assert_eq(pb_harness_emitted_count(h), 3);
    ev = s_emitted(h, 0, PLUGBOARD_EV_INGRESS_UNMAPPED);
    s_field(ev, "reason", "malformed JSON (or a duplicate key)");
    s_field(ev, "payload", trunc);
    ev = s_emitted(h, 1, PLUGBOARD_EV_INGRESS_UNMAPPED);
    s_field(ev, "payload", body);
    ev = s_emitted(h, 2, PLUGBOARD_EV_INGRESS_UNMAPPED);
    s_field(ev, "reason", "hubspot event without subscriptionType, eventId "
                          "or objectId");
    s_field(ev, "payload", "{\"portalId\":62515}");
    pb_harness_close(&h);
}

Test(hubspot, webhook_without_client_secret_answers_503)
{
    char base[128];
    char err[256];
    const char *settings[] = {"token=env:PB_TEST_HUBSPOT_TOKEN", base, NULL};
    pb_harness_t *h;
    int status = 0;

    snprintf(base, sizeof base, "api_base=%s", pb_standin_url(s_hs));
    h = pb_harness_open(PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    cr_assert_eq(pb_harness_webhook(h, "POST", NULL, "[]", 2, &status, NULL),
                 0);
    cr_assert_eq(status, 503);
    pb_harness_close(&h);
}
