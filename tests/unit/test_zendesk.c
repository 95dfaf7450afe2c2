/*
 * test_zendesk.c - the zendesk connector, loaded as the real zendesk.so,
 * driven through the test harness against the Zendesk stand-in
 * (tests/stand-ins/zendesk.py), which records every request it receives.
 *
 * Sink: one ticket per external id (search before create, Idempotency-Key),
 * follow-up events as comments, what Zendesk receives (auth header, JSON
 * body), how failures are classified, and no duplicate ticket or comment
 * after an unknown outcome.
 * Source: Zendesk's webhook signature with the corpus vector and samples
 * (tests/fixtures/zendesk/); forged, stale and re-encoded requests are
 * refused with 4xx and emit nothing.
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

#define PLUGIN PB_PLUGIN_DIR "/zendesk.so"
#define FIXTURES PB_SOURCE_DIR "/tests/fixtures/zendesk/"
#define AGENT "agent@example.com"
#define API_TOKEN "zd-api-token-0123456789"
#define OAUTH_TOKEN "zd-oauth-token-9876543210"
#define SECRET "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="

static pb_standin_t *s_zd;

static void
s_setup(void)
{
    char err[256] = "";

    setenv("PB_TEST_ZENDESK_TOKEN", API_TOKEN, 1);
    setenv("PB_TEST_ZENDESK_OAUTH", OAUTH_TOKEN, 1);
    setenv("PB_TEST_ZENDESK_BAD", "zd-revoked-token", 1);
    setenv("PB_TEST_ZENDESK_SECRET", SECRET, 1);
    s_zd = pb_standin_start("zendesk", err, sizeof err);
    cr_assert_not_null(s_zd, "%s", err);
}

static void
s_teardown(void)
{
    pb_standin_stop(&s_zd);
}

TestSuite(zendesk, .init = s_setup, .fini = s_teardown, .timeout = 30);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static pb_harness_t *
s_open_auth(const char *auth1, const char *auth2, const char *extra)
{
    char base[128];
    char err[512] = "";
    const char *settings[10] = {
        base,
        "timeout=1s",
        "connect_timeout=1s",
        "signing_secret=env:PB_TEST_ZENDESK_SECRET",
    };
    size_t n = 4;
    pb_harness_t *h;

    snprintf(base, sizeof base, "api_base=%s", pb_standin_url(s_zd));
    if (auth1 != NULL) {
        settings[n++] = auth1;
    }
    if (auth2 != NULL) {
        settings[n++] = auth2;
    }
    if (extra != NULL) {
        settings[n++] = extra;
    }
    h = pb_harness_open(PLUGIN, "support", settings, err, sizeof err);
    cr_assert_not_null(h, "cannot open zendesk: %s", err);
    return h;
}

static pb_harness_t *
s_open_with(const char *extra)
{
    return s_open_auth("email=" AGENT, "api_token=env:PB_TEST_ZENDESK_TOKEN",
                       extra);
}

static pb_harness_t *
s_open(void)
{
    return s_open_with(NULL);
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

/* Deliver one frame as attempt n. */
static void
s_deliver_frame(pb_harness_t *h, uint8_t *frame, size_t len, uint32_t n,
                plugboard_outcome_t want, plugboard_result_t *r)
{
    pb_test_frame_set_attempt(frame, len, n);
    cr_assert_eq(pb_harness_deliver_frame(h, frame, len, r), 0);
    cr_assert_eq(r->outcome, want, "outcome %d, want %d, reason: %s",
                 r->outcome, want, r->reason);
}

static json_t *
s_body(const char *method, const char *path, size_t n)
{
    json_t *rec = pb_standin_request(s_zd, method, path, n);
    json_error_t jerr;
    json_t *body;

    cr_assert_not_null(rec, "no request %zu to %s %s", n, method, path);
    body =
        json_loads(json_string_value(json_object_get(rec, "body")), 0, &jerr);
    cr_assert_not_null(body, "body is not JSON: %s", jerr.text);
    json_decref(rec);
    return body;
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

static json_t *
s_state(const char *kind)
{
    json_t *state = pb_standin_state(s_zd);
    json_t *v;

    cr_assert_not_null(state);
    v = json_incref(json_object_get(state, kind));
    json_decref(state);
    return v;
}

static size_t
s_comment_count(const char *ticket)
{
    json_t *comments = s_state("comments");
    size_t n = json_array_size(json_object_get(comments, ticket));

    json_decref(comments);
    return n;
}

static void
s_fault(const char *json)
{
    cr_assert_eq(pb_standin_fault(s_zd, json), 200);
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

static const char *const s_failed =
    "{\"amount\":2000,\"currency\":\"USD\","
    "\"payment\":{\"id\":\"pi_3KhZ8b\",\"vendor\":\"stripe\"},"
    "\"failure\":{\"code\":\"card_declined\","
    "\"message\":\"Your card was declined.\"},"
    "\"customer\":{\"email\":\"Jane.Doe@example.com\",\"name\":\"Jane Doe\"}}";

static const char *const s_succeeded =
    "{\"amount\":2000,\"currency\":\"USD\","
    "\"payment\":{\"id\":\"pi_3KhZ8b\",\"vendor\":\"stripe\"},"
    "\"customer\":{\"email\":\"jane.doe@example.com\"}}";

/* ------------------------------------------------------------------ */
/* Descriptor and settings                                             */
/* ------------------------------------------------------------------ */

Test(zendesk, descriptor_is_a_sink_and_a_webhook_source)
{
    pb_harness_t *h = s_open();
    const plugboard_connector_t *d = pb_harness_descriptor(h);

    cr_assert_str_eq(d->name, "zendesk");
    cr_assert_not_null(d->deliver);
    cr_assert_not_null(d->webhook);
    cr_assert_str_eq(d->emits[0], "ticket.created");
    cr_assert_str_eq(d->emits[1], "ticket.updated");
    cr_assert_str_eq(d->emits[2], "ticket.solved");
    cr_assert_str_eq(d->consumes[1], "payment.failed");
    pb_harness_close(&h);
}

Test(zendesk, settings_are_checked_at_open)
{
    char base[128], err[512];
    const char *both[] = {base, "email=" AGENT,
                          "api_token=env:PB_TEST_ZENDESK_TOKEN",
                          "oauth_token=env:PB_TEST_ZENDESK_OAUTH", NULL};
    const char *none[] = {base, NULL};
    const char *token_only[] = {base, "api_token=env:PB_TEST_ZENDESK_TOKEN",
                                NULL};
    const char *priority[] = {base, "oauth_token=env:PB_TEST_ZENDESK_OAUTH",
                              "priority=critical", NULL};
    const char *create_on[] = {base, "oauth_token=env:PB_TEST_ZENDESK_OAUTH",
                               "create_on=payment.failed, ticket.created",
                               NULL};
    const char *tags[] = {base, "oauth_token=env:PB_TEST_ZENDESK_OAUTH",
                          "tags=ok, not ok!", NULL};

    snprintf(base, sizeof base, "api_base=%s", pb_standin_url(s_zd));
    cr_assert_null(pb_harness_open(PLUGIN, NULL, both, err, sizeof err));
    cr_assert(strstr(err, "oauth_token") != NULL, "%s", err);
    cr_assert(strstr(err, API_TOKEN) == NULL, "secret leaked: %s", err);
    cr_assert_null(pb_harness_open(PLUGIN, NULL, none, err, sizeof err));
    cr_assert_null(pb_harness_open(PLUGIN, NULL, token_only, err, sizeof err));
    cr_assert_null(pb_harness_open(PLUGIN, NULL, priority, err, sizeof err));
    cr_assert(strstr(err, "priority") != NULL, "%s", err);
    cr_assert_null(pb_harness_open(PLUGIN, NULL, create_on, err, sizeof err));
    cr_assert(strstr(err, "ticket.created") != NULL, "%s", err);
    cr_assert_null(pb_harness_open(PLUGIN, NULL, tags, err, sizeof err));
    cr_assert(strstr(err, "tags") != NULL, "%s", err);
}

/* ------------------------------------------------------------------ */
/* Tickets and comments                                                */
/* ------------------------------------------------------------------ */

Test(zendesk, payment_failed_opens_one_ticket)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *rec, *body, *t, *tags, *tickets;

    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    rec = pb_standin_request(s_zd, "GET", "/api/v2/tickets.json", 0);
    cr_assert_not_null(rec);
    cr_assert_str_eq(s_str(rec, "query"),
                     "external_id=plugboard%3Apayment%3Api_3KhZ8b");
    /* base64("agent@example.com/token:zd-api-token-0123456789") */
    cr_assert_str_eq(s_header(rec, "authorization"),
                     "Basic YWdlbnRAZXhhbXBsZS5jb20vdG9rZW46emQtYXBpLXRva2"
                     "VuLTAxMjM0NTY3ODk=");
    json_decref(rec);
    rec = pb_standin_request(s_zd, "POST", "/api/v2/tickets.json", 0);
    cr_assert_not_null(rec);
    cr_assert_eq(strlen(s_header(rec, "idempotency-key")),
                 strlen("plugboard-") + 26);
    cr_assert_str_eq(s_header(rec, "content-type"), "application/json");
    json_decref(rec);
    body = s_body("POST", "/api/v2/tickets.json", 0);
    t = json_object_get(body, "ticket");
    cr_assert_str_eq(s_str(t, "external_id"), "plugboard:payment:pi_3KhZ8b");
    cr_assert_str_eq(s_str(t, "subject"),
                     "Payment failed: 20.00 USD from Jane.Doe@example.com");
    cr_assert_str_eq(s_str(t, "priority"), "normal");
    cr_assert_str_eq(s_str(json_object_get(t, "requester"), "email"),
                     "jane.doe@example.com");
    cr_assert_str_eq(s_str(json_object_get(t, "requester"), "name"),
                     "Jane Doe");
    cr_assert(strstr(s_str(json_object_get(t, "comment"), "body"),
                     "Your card was declined.") != NULL);
    cr_assert(json_is_false(
        json_object_get(json_object_get(t, "comment"), "public")));
    tags = json_object_get(t, "tags");
    cr_assert_str_eq(json_string_value(json_array_get(tags, 0)), "plugboard");
    cr_assert_str_eq(json_string_value(json_array_get(tags, 1)),
                     "payment_failed");
    json_decref(body);
    tickets = s_state("tickets");
    cr_assert_eq(json_array_size(tickets), 1);
    json_decref(tickets);
    pb_harness_close(&h);
}

Test(zendesk, follow_up_event_comments_on_the_same_ticket)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *body, *tickets;

    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    s_deliver(h, "payment.succeeded", s_succeeded, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_zd, "POST", "/api/v2/tickets.json"), 1);
    body = s_body("PUT", "/api/v2/tickets/35436.json", 0);
    cr_assert(strstr(s_str(json_object_get(json_object_get(body, "ticket"),
                                           "comment"),
                           "body"),
                     "A payment of 20.00 USD was received.") != NULL);
    json_decref(body);
    tickets = s_state("tickets");
    cr_assert_eq(json_array_size(tickets), 1);
    json_decref(tickets);
    cr_assert_eq(s_comment_count("35436"), 2);
    pb_harness_close(&h);
}

/* A ticket as the Tickets API reference shows it (numeric id, external_id
 * "ahg35h3jh") is found by its external id and commented on. */
Test(zendesk, ticket_from_the_api_reference_gets_the_comment)
{
    pb_harness_t *h = s_open_with("external_id={{invoice.id}}");
    plugboard_result_t r;
    char *shown = s_fixture("ticket_show_response.docs_example.json", NULL);
    json_error_t jerr;
    json_t *answer = json_loads(shown, 0, &jerr);
    json_t *seed;
    char *text;

    cr_assert_not_null(answer, "%s", jerr.text);
    seed = json_pack("{s:[O]}", "tickets", json_object_get(answer, "ticket"));
    text = json_dumps(seed, JSON_COMPACT);
    cr_assert_eq(pb_standin_seed(s_zd, text), 200);
    s_deliver(h, "payment.succeeded",
              "{\"amount\":745,\"currency\":\"USD\",\"payment\":{\"id\":"
              "\"pi_1\",\"vendor\":\"stripe\"},\"invoice\":{\"id\":"
              "\"ahg35h3jh\"}}",
              PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_zd, "PUT", "/api/v2/tickets/35436.json"),
                 1);
    cr_assert_eq(pb_standin_count(s_zd, "POST", "*"), 0);
    free(text);
    json_decref(seed);
    json_decref(answer);
    free(shown);
    pb_harness_close(&h);
}

Test(zendesk, follow_up_without_a_ticket_does_nothing)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_deliver(h, "payment.succeeded", s_succeeded, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_zd, "GET", "/api/v2/tickets.json"), 1);
    cr_assert_eq(pb_standin_count(s_zd, "POST", "*"), 0);
    cr_assert_eq(pb_standin_count(s_zd, "PUT", "*"), 0);
    pb_harness_close(&h);
}

Test(zendesk, closed_ticket_is_not_reopened)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    json_t *tickets;

    cr_assert_eq(pb_standin_seed(s_zd, "{\"tickets\":[{\"id\":35000,\"status\":"
                                       "\"closed\",\"external_id\":"
                                       "\"plugboard:payment:pi_3KhZ8b\"}]}"),
                 200);
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_zd, "PUT", "*"), 0);
    tickets = s_state("tickets");
    cr_assert_eq(json_array_size(tickets), 2);
    json_decref(tickets);
    pb_harness_close(&h);
}

Test(zendesk, oauth_token_is_sent_as_bearer)
{
    pb_harness_t *h = s_open_auth("oauth_token=env:PB_TEST_ZENDESK_OAUTH", NULL,
                                  "external_id=acme:{{customer.email}}");
    plugboard_result_t r;
    json_t *rec;

    s_deliver(h, "email.bounced",
              "{\"customer\":{\"email\":\"nobody@example.com\"},"
              "\"email\":{\"vendor\":\"mailgun\"},"
              "\"bounce\":{\"type\":\"hard\",\"code\":\"550\"}}",
              PLUGBOARD_OK, &r);
    rec = pb_standin_request(s_zd, "POST", "/api/v2/tickets.json", 0);
    cr_assert_not_null(rec);
    cr_assert_str_eq(s_header(rec, "authorization"), "Bearer " OAUTH_TOKEN);
    json_decref(rec);
    rec = pb_standin_request(s_zd, "GET", "/api/v2/tickets.json", 0);
    cr_assert_str_eq(s_str(rec, "query"),
                     "external_id=acme%3Anobody%40example.com");
    json_decref(rec);
    pb_harness_close(&h);
}

/*
 * Zendesk creates the ticket but the answer comes after the timeout; the
 * retry of the same event finds it by external id and adds nothing.
 */
Test(zendesk, create_timeout_then_retry_does_not_duplicate)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    size_t len = 0;
    uint8_t *frame = pb_test_event_frame(
        "payment.failed", "jane.doe@example.com", s_failed, &len);
    json_t *tickets;

    cr_assert_not_null(frame);
    s_fault("{\"method\":\"POST\",\"path\":\"/api/v2/tickets.json\","
            "\"kind\":\"timeout\",\"apply\":true,\"delay_ms\":3000}");
    /* answered after 3 s: "timed out" shows timeout=1s ended the wait */
    s_deliver_frame(h, frame, len, 1, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "timed out") != NULL, "%s", r.reason);
    s_deliver_frame(h, frame, len, 2, PLUGBOARD_OK, &r);
    tickets = s_state("tickets");
    cr_assert_eq(json_array_size(tickets), 1, "one ticket, not two");
    json_decref(tickets);
    cr_assert_eq(pb_standin_count(s_zd, "POST", "/api/v2/tickets.json"), 1);
    cr_assert_eq(pb_standin_count(s_zd, "PUT", "*"), 0);
    cr_assert_eq(s_comment_count("35436"), 1);
    free(frame);
    pb_harness_close(&h);
}

/*
 * Each fault the stand-in injects on the ticket create, then the same
 * event again on a fresh connector (as the host retries it): the first
 * answer gives the outcome the fault calls for, and whatever the first
 * attempt left behind, each event ends up as exactly one ticket.  Faults
 * marked "apply" let Zendesk create the ticket and then lose the answer.
 */
Test(zendesk, every_fault_then_the_retry_leaves_one_ticket)
{
    static const struct {
        const char *fault;
        plugboard_outcome_t first;
        const char *needle;
    } cases[] = {
        {"\"status\":429,\"headers\":{\"Retry-After\":\"5\"},"
         "\"body\":\"Rate limit exceeded\"",
         PLUGBOARD_HOLD, "HTTP 429"},
        {"\"status\":500,\"apply\":true,\"json\":{\"error\":"
         "\"InternalError\"}",
         PLUGBOARD_RETRY, "HTTP 500"},
        {"\"kind\":\"malformed\",\"apply\":true", PLUGBOARD_RETRY,
         "malformed JSON"},
        {"\"kind\":\"timeout\",\"apply\":true,\"delay_ms\":3000",
         PLUGBOARD_RETRY, "timed out"},
        {"\"kind\":\"close\",\"apply\":true,\"times\":2", PLUGBOARD_RETRY,
         ""},
        {"\"status\":401,\"json\":{\"error\":\"Couldn't authenticate "
         "you\"}",
         PLUGBOARD_REJECT, "authentication failed"},
    };
    size_t n = sizeof cases / sizeof cases[0];

    for (size_t i = 0; i < n; i++) {
        char data[512], fault[512], ext[64];
        size_t len = 0;
        uint8_t *frame;
        pb_harness_t *h;
        plugboard_result_t r;
        json_t *tickets, *t;
        size_t k, same = 0;

        snprintf(data, sizeof data,
                 "{\"amount\":2000,\"currency\":\"USD\","
                 "\"payment\":{\"id\":\"pi_fault_%zu\",\"vendor\":"
                 "\"stripe\"},\"failure\":{\"code\":\"card_declined\"},"
                 "\"customer\":{\"email\":\"jane.doe@example.com\"}}",
                 i);
        snprintf(ext, sizeof ext, "plugboard:payment:pi_fault_%zu", i);
        snprintf(fault, sizeof fault,
                 "{\"method\":\"POST\",\"path\":\"/api/v2/tickets.json\",%s}",
                 cases[i].fault);
        frame = pb_test_event_frame("payment.failed", "jane.doe@example.com",
                                    data, &len);
        cr_assert_not_null(frame);
        h = s_open();
        s_fault(fault);
        s_deliver_frame(h, frame, len, 1, cases[i].first, &r);
        cr_assert(strstr(r.reason, cases[i].needle) != NULL, "case %zu: %s",
                  i, r.reason);
        /* only the 401 tells the host the credentials were refused */
        cr_expect_eq(plugboard_harness_auth_failed_count(h),
                     strstr(cases[i].fault, "\"status\":401") ? 1u : 0u,
                     "case %zu", i);
        pb_harness_close(&h);
        /* a dead letter replayed, or a retry: the same event again */
        h = s_open();
        s_deliver_frame(h, frame, len, 2, PLUGBOARD_OK, &r);
        pb_harness_close(&h);
        free(frame);
        tickets = s_state("tickets");
        json_array_foreach(tickets, k, t)
        {
            if (s_str(t, "external_id") && strcmp(s_str(t, "external_id"),
                                                  ext) == 0)
                same++;
        }
        cr_assert_eq(same, 1, "case %zu: %zu tickets for %s", i, same, ext);
        cr_assert_eq(json_array_size(tickets), i + 1, "case %zu", i);
        json_decref(tickets);
    }
}

/* The same for a comment: the retry reads the latest comments first. */
Test(zendesk, comment_timeout_then_retry_does_not_duplicate)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;
    size_t len = 0;
    uint8_t *frame = pb_test_event_frame(
        "payment.succeeded", "jane.doe@example.com", s_succeeded, &len);

    cr_assert_not_null(frame);
    cr_assert_eq(pb_standin_seed(s_zd, "{\"tickets\":[{\"id\":40000,\"status\":"
                                       "\"open\",\"external_id\":"
                                       "\"plugboard:payment:pi_3KhZ8b\"}]}"),
                 200);
    s_fault("{\"method\":\"PUT\",\"path\":\"/api/v2/tickets/*\","
            "\"kind\":\"timeout\",\"apply\":true,\"delay_ms\":3000}");
    s_deliver_frame(h, frame, len, 1, PLUGBOARD_RETRY, &r);
    s_deliver_frame(h, frame, len, 2, PLUGBOARD_OK, &r);
    cr_assert_eq(pb_standin_count(s_zd, "PUT", "*"), 1);
    cr_assert_eq(
        pb_standin_count(s_zd, "GET", "/api/v2/tickets/40000/comments.json"),
        1);
    cr_assert_eq(s_comment_count("40000"), 1, "one comment, not two");
    free(frame);
    pb_harness_close(&h);
}

/* A comment whose connection drops before the answer is not resent by
 * libcurl on its own (it goes out on a new connection). */
Test(zendesk, comment_on_a_dropped_connection_is_not_resent)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    cr_assert_eq(pb_standin_seed(s_zd, "{\"tickets\":[{\"id\":40000,\"status\":"
                                       "\"open\",\"external_id\":"
                                       "\"plugboard:payment:pi_3KhZ8b\"}]}"),
                 200);
    s_fault("{\"method\":\"PUT\",\"path\":\"/api/v2/tickets/*\","
            "\"kind\":\"close\",\"apply\":true}");
    s_deliver(h, "payment.succeeded", s_succeeded, PLUGBOARD_RETRY, &r);
    cr_assert_eq(pb_standin_count(s_zd, "PUT", "*"), 1);
    cr_assert_eq(s_comment_count("40000"), 1);
    pb_harness_close(&h);
}

Test(zendesk, rate_limit_honours_retry_after)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/api/v2/tickets.json\",\"status\":429,"
            "\"headers\":{\"Retry-After\":\"93\"},"
            "\"body\":\"Rate limit for ticket updates exceeded, please wait "
            "before updating this ticket again\"}");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_HOLD, &r);
    cr_assert_eq(r.retry_after_ms, 93000);
    cr_assert(strstr(r.reason, "HTTP 429") != NULL, "%s", r.reason);
    pb_harness_close(&h);
}

Test(zendesk, unavailable_and_server_errors_are_retried)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/api/v2/tickets.json\",\"status\":503,"
            "\"headers\":{\"Retry-After\":\"30\"},\"json\":{\"error\":"
            "\"Unavailable\",\"description\":\"Maintenance\"}}");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_assert_eq(r.retry_after_ms, 30000);
    s_fault("{\"path\":\"/api/v2/tickets.json\",\"status\":500,"
            "\"json\":{\"error\":\"InternalError\"}}");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "HTTP 500: InternalError") != NULL, "%s",
              r.reason);
    pb_harness_close(&h);
}

Test(zendesk, bad_token_is_rejected)
{
    pb_harness_t *h =
        s_open_auth("email=" AGENT, "api_token=env:PB_TEST_ZENDESK_BAD", NULL);
    plugboard_result_t r;

    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "authentication failed: check the token") !=
                  NULL,
              "%s", r.reason);
    cr_assert(strstr(r.reason, "revoked") == NULL, "token leaked");
    pb_harness_close(&h);
}

Test(zendesk, validation_error_rejects_with_zendesk_details)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_deliver(h, "payment.failed",
              "{\"amount\":1,\"currency\":\"USD\",\"payment\":{\"id\":\"p1\","
              "\"vendor\":\"stripe\"},\"customer\":{\"email\":\"a@b\"}}",
              PLUGBOARD_REJECT, &r);
    cr_assert(strstr(r.reason, "HTTP 422") != NULL, "%s", r.reason);
    cr_assert(strstr(r.reason, "Requester: Email is invalid") != NULL, "%s",
              r.reason);
    pb_harness_close(&h);
}

Test(zendesk, malformed_answer_is_retried)
{
    pb_harness_t *h = s_open();
    plugboard_result_t r;

    s_fault("{\"path\":\"/api/v2/tickets.json\",\"kind\":\"malformed\","
            "\"body\":\"{\\\"tickets\\\": [{\\\"id\\\": 1\"}");
    s_deliver(h, "payment.failed", s_failed, PLUGBOARD_RETRY, &r);
    cr_assert(strstr(r.reason, "malformed JSON") != NULL, "%s", r.reason);
    cr_assert_eq(pb_standin_count(s_zd, "POST", "*"), 0);
    pb_harness_close(&h);
}

/* ------------------------------------------------------------------ */
/* Webhooks                                                            */
/* ------------------------------------------------------------------ */

static void
s_sign(const char *ts, const void *body, size_t len, char out[64])
{
    size_t n = strlen(ts) + len;
    unsigned char *msg = malloc(n + 1);
    unsigned char mac[32];
    unsigned int mac_len = 0;

    cr_assert_not_null(msg);
    memcpy(msg, ts, strlen(ts));
    memcpy(msg + strlen(ts), body, len);
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), msg, n, mac, &mac_len);
    EVP_EncodeBlock((unsigned char *)out, mac, (int)mac_len);
    free(msg);
}

static void
s_iso_now(char out[32], int delta_s)
{
    time_t t = time(NULL) + delta_s;

    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
}

static int
s_post(pb_harness_t *h, const void *body, size_t len, const char *sig,
       const char *ts, char **resp)
{
    char sig_header[128], ts_header[96];
    const char *headers[] = {
        "Content-Type: application/json", sig_header, ts_header,
        "X-Zendesk-Webhook-Invocation-Id: 8350205582", NULL};
    int status = 0;

    snprintf(sig_header, sizeof sig_header, "X-Zendesk-Webhook-Signature: %s",
             sig);
    snprintf(ts_header, sizeof ts_header,
             "X-Zendesk-Webhook-Signature-Timestamp: %s", ts);
    cr_assert_eq(
        pb_harness_webhook(h, "POST", headers, body, len, &status, resp), 0);
    return status;
}

static void
s_post_signed(pb_harness_t *h, const void *body, size_t len, int want)
{
    char ts[32], sig[64];
    char *resp = NULL;
    int status;

    s_iso_now(ts, 0);
    s_sign(ts, body, len, sig);
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
    free(resp);
}

static const plugboard_event_t *
s_emitted(pb_harness_t *h, const char *type)
{
    const plugboard_event_t *ev = pb_harness_emitted(h, 0);

    cr_assert_eq(pb_harness_emitted_count(h), 1);
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

/* The community SDK's vector verifies; its timestamp "1234" is not the
 * ISO-8601 Zendesk sends, so it is then refused.  A changed byte is a
 * forgery. */
Test(zendesk, sdk_vector_verifies_then_is_refused_for_its_timestamp)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body = s_fixture("trigger_webhook_ticket_update.json", &len);

    cr_assert_eq(len, 174);
    s_expect_refused(h, body, len,
                     "PlxjkFT3fSnU9NWSRjLHP86izLX68auazS1Xo8ZfiZE=", "1234",
                     "signature timestamp is not ISO-8601");
    body[len - 2] = ' ';
    s_expect_refused(h, body, len,
                     "PlxjkFT3fSnU9NWSRjLHP86izLX68auazS1Xo8ZfiZE=", "1234",
                     "invalid signature");
    free(body);
    pb_harness_close(&h);
}

/* The same trigger body signed now: its flat keys map to ticket.updated. */
Test(zendesk, trigger_sample_becomes_ticket_updated)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body = s_fixture("trigger_webhook_ticket_update.json", &len);
    const plugboard_event_t *ev;
    const char *tags = NULL;
    size_t tags_len = 0;

    s_post_signed(h, body, len, 200);
    ev = s_emitted(h, "ticket.updated");
    s_field(ev, "ticket.id", "12345");
    s_field(ev, "ticket.vendor", "zendesk");
    s_field(ev, "ticket.priority", "normal");
    s_field(ev, "ticket.assignee_email", "kren@example.com");
    cr_assert_eq(pb_harness_api()->event_kind(ev, "ticket.tags"),
                 PLUGBOARD_VALUE_ARRAY);
    cr_assert_not(
        pb_harness_api()->event_string(ev, "ticket.tags", &tags, &tags_len));
    cr_assert_str_eq(pb_harness_api()->event_key(ev), "ticket:12345");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "zendesk:invocation:8350205582:ticket.updated");
    free(body);
    pb_harness_close(&h);
}

/* The trigger body the README documents, requester included. */
Test(zendesk, documented_trigger_body_carries_the_requester)
{
    pb_harness_t *h = s_open();
    const char *body =
        "{\"event\":\"ticket.created\",\"ticket\":{\"id\":\"6596848315901\","
        "\"subject\":\"Printer on fire\",\"status\":\"New\","
        "\"priority\":\"Urgent\",\"url\":\"example.zendesk.com/agent/"
        "tickets/6596848315901\",\"tags\":\"hardware fire\","
        "\"requester\":{\"email\":\"Ada@Example.com\",\"name\":"
        "\"Ada Lovelace\",\"id\":\"7421\"}}}";
    const plugboard_event_t *ev;

    s_post_signed(h, body, strlen(body), 200);
    ev = s_emitted(h, "ticket.created");
    s_field(ev, "ticket.id", "6596848315901");
    s_field(ev, "ticket.status", "new");
    s_field(ev, "ticket.priority", "urgent");
    s_field(ev, "customer.email", "ada@example.com");
    s_field(ev, "customer.name", "Ada Lovelace");
    s_field(ev, "customer.id", "7421");
    cr_assert_str_eq(pb_harness_api()->event_key(ev), "ada@example.com");
    pb_harness_close(&h);
}

/* A trigger body written with raw numbers ({{ticket.id}} unquoted): an id
 * beyond 2^53 stays exact, and one beyond int64 does not make the whole
 * body unreadable. */
Test(zendesk, numeric_ids_stay_exact)
{
    pb_harness_t *h = s_open();
    const char *body =
        "{\"event\":\"ticket.created\",\"ticket\":{\"id\":9007199254740993,"
        "\"subject\":\"Printer on fire\",\"status\":\"New\","
        "\"requester\":{\"email\":\"ada@example.com\","
        "\"id\":123456789012345678901234567890}}}";
    const plugboard_event_t *ev;

    s_post_signed(h, body, strlen(body), 200);
    ev = s_emitted(h, "ticket.created");
    s_field(ev, "ticket.id", "9007199254740993");
    s_field(ev, "customer.id", "123456789012345678901234567890");
    s_field(ev, "customer.email", "ada@example.com");
    pb_harness_close(&h);
}

/* Event webhooks, in the schema of Zendesk's ticket event reference (this
 * body is written here after that schema; ids are strings there). */
Test(zendesk, ticket_events_map_to_created_updated_solved)
{
    pb_harness_t *h = s_open();
    const char *created =
        "{\"account_id\":22129848,\"detail\":{\"actor_id\":\"8447388090494\","
        "\"created_at\":\"2025-01-08T10:12:07Z\",\"description\":\"It "
        "burns\",\"id\":\"5158\",\"priority\":\"LOW\",\"requester_id\":"
        "\"8447388090494\",\"status\":\"NEW\",\"subject\":\"Printer on "
        "fire\",\"tags\":[\"tag_1\",\"tag_2\"],\"updated_at\":"
        "\"2025-01-08T10:12:07Z\"},\"event\":{},\"id\":"
        "\"cbe4028c-7239-495d-b020-f22348516046\",\"subject\":"
        "\"zen:ticket:5158\",\"time\":\"2025-01-08T10:12:07.672717030Z\","
        "\"type\":\"zen:event-type:ticket.created\","
        "\"zendesk_event_version\":\"2022-11-06\"}";
    const char *solved =
        "{\"account_id\":22129848,\"detail\":{\"id\":\"5158\",\"status\":"
        "\"SOLVED\",\"subject\":\"Printer on fire\",\"requester_id\":"
        "\"8447388090494\"},\"event\":{\"current\":\"SOLVED\",\"previous\":"
        "\"OPEN\"},\"id\":\"0f0b7e7a-8bd3-4c52-9f36-0d5f8c3a6e11\","
        "\"time\":\"2025-01-09T08:00:00Z\",\"type\":"
        "\"zen:event-type:ticket.status_changed\"}";
    const plugboard_event_t *ev;
    int64_t solved_at = 0;

    s_post_signed(h, created, strlen(created), 200);
    ev = s_emitted(h, "ticket.created");
    s_field(ev, "ticket.id", "5158");
    s_field(ev, "ticket.status", "new");
    s_field(ev, "ticket.priority", "low");
    s_field(ev, "customer.id", "8447388090494");
    cr_assert_eq(pb_harness_api()->event_time_ms(ev), 1736331127672LL);
    cr_assert_str_eq(pb_envelope_dedupe_id(ev),
                     "zendesk:cbe4028c-7239-495d-b020-f22348516046");
    cr_assert_str_eq(pb_harness_api()->event_key(ev), "ticket:5158");
    pb_harness_clear(h);
    s_post_signed(h, solved, strlen(solved), 200);
    ev = s_emitted(h, "ticket.solved");
    s_field(ev, "ticket.status", "solved");
    s_field(ev, "ticket.previous_status", "open");
    cr_assert(pb_harness_api()->event_int(ev, "ticket.solved_at", &solved_at));
    cr_assert_eq(solved_at, 1736409600000LL);
    pb_harness_close(&h);
}

/* A user event (the docs' sample) is acknowledged and not routed. */
Test(zendesk, other_event_types_are_acknowledged)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body =
        s_fixture("event_webhook_user_active_changed.docs_example.json", &len);

    s_post_signed(h, body, len, 200);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    free(body);
    pb_harness_close(&h);
}

Test(zendesk, forged_stale_and_reencoded_are_refused)
{
    pb_harness_t *h = s_open();
    size_t len;
    char *body = s_fixture("trigger_webhook_ticket_update.json", &len);
    json_error_t jerr;
    json_t *parsed = json_loadb(body, len, 0, &jerr);
    char *reencoded = json_dumps(parsed, JSON_COMPACT);
    char ts[32], old[32], sig[64];

    s_iso_now(ts, 0);
    s_expect_refused(h, body, len,
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", ts,
                     "invalid signature");
    s_iso_now(old, -600);
    s_sign(old, body, len, sig);
    s_expect_refused(h, body, len, sig, old, "timestamp outside the tolerance");
    s_sign(ts, body, len, sig);
    s_expect_refused(h, reencoded, strlen(reencoded), sig, ts,
                     "invalid signature");
    free(reencoded);
    json_decref(parsed);
    free(body);
    pb_harness_close(&h);
}

/* Verified but unusable bodies are acknowledged: a 4xx counts toward
 * Zendesk's circuit breaker, which then deactivates the webhook. */
Test(zendesk, unmappable_and_malformed_bodies_are_acknowledged)
{
    pb_harness_t *h = s_open();
    const char *no_id = "{\"type\":\"Agent Comment\",\"priority\":\"High\"}";
    const char *broken = "{\"ticket\": {\"id\": ";
    const char *dup = "{\"ticket\": {\"id\": \"1\", \"id\": \"2\"}}";

    const plugboard_event_t *ev;

    s_post_signed(h, no_id, strlen(no_id), 200);
    s_post_signed(h, broken, strlen(broken), 200);
    s_post_signed(h, dup, strlen(dup), 200);
    /* nothing routed: each is kept as a dead letter of the connector */
    cr_assert_eq(pb_harness_emitted_count(h), 3);
    ev = pb_harness_emitted(h, 0);
    cr_assert_str_eq(pb_harness_api()->event_type(ev),
                     PLUGBOARD_EV_INGRESS_UNMAPPED);
    s_field(ev, "reason", "ticket webhook without a ticket id");
    s_field(ev, "payload", no_id);
    ev = pb_harness_emitted(h, 1);
    s_field(ev, "reason", "malformed JSON (or a duplicate key)");
    s_field(ev, "payload", broken);
    ev = pb_harness_emitted(h, 2);
    s_field(ev, "payload", dup);
    pb_harness_close(&h);
}
