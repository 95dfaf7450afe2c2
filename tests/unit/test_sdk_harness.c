/*
 * test_sdk_harness.c - the SDK test harness (plugboard/harness.h) as a
 * connector author uses it: open with settings, deliver canonical samples
 * and JSON events, feed webhook requests, read what was emitted through
 * the host API table.  Uses the "good" test plugin.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/harness.h>

#include "envelope.h"
#include "harness.h"

#define GOOD PB_TEST_PLUGIN_DIR "/good.so"

static char *s_dir;
static char s_record[4200];

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-harness");
    cr_assert_not_null(s_dir);
    snprintf(s_record, sizeof s_record, "%s/record.jsonl", s_dir);
}

static void
teardown(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
}

static plugboard_harness_t *
open_good(const char *extra)
{
    char record[4300], err[512];
    snprintf(record, sizeof record, "record=%s", s_record);
    const char *settings[] = {record, extra, NULL};
    plugboard_harness_t *h =
        plugboard_harness_open(GOOD, "shop", settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    return h;
}

TestSuite(sdk_harness, .init = setup, .fini = teardown);

Test(sdk_harness, delivers_canonical_samples)
{
    plugboard_harness_t *h = open_good(NULL);
    plugboard_result_t r;
    cr_assert_eq(plugboard_harness_deliver_sample(h, "ticket.created", &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    char *rec = pb_test_read_file(s_record, NULL);
    cr_assert_not_null(rec);
    cr_expect(strstr(rec, "\"subject\":\"Printer on fire\""), "%s", rec);
    cr_expect(strstr(rec, "\"key\":\"ada@example.com\""), "%s", rec);
    free(rec);
    cr_expect_eq(plugboard_harness_deliver_sample(h, "ticket.exploded", &r),
                 PLUGBOARD_E_INVALID);
    plugboard_harness_close(&h);
    cr_expect_null(h);
}

Test(sdk_harness, delivers_json_events_with_their_attempt)
{
    plugboard_harness_t *h = open_good("fail_first=1");
    plugboard_result_t r;
    const char *ev = "{\"type\":\"payment.failed\",\"key\":\"k@example.com\","
                     "\"data\":{\"amount\":5,\"currency\":\"EUR\"}}";
    cr_assert_eq(plugboard_harness_deliver_json(h, ev, 1, &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_RETRY);
    cr_expect_neq(r.reason[0], '\0');
    cr_expect_eq(plugboard_harness_deliver_json(h, "{\"data\":{}}", 1, &r),
                 PLUGBOARD_E_INVALID, "no type");
    cr_expect_eq(
        plugboard_harness_deliver(h, "payment.failed", NULL, "[1]", 1, &r),
        PLUGBOARD_E_INVALID, "data must be an object");
    plugboard_harness_close(&h);
}

Test(sdk_harness, captures_what_a_webhook_emits)
{
    plugboard_harness_t *h = open_good(NULL);
    const char body[] = "{\"type\":\"contact.upserted\",\"key\":\"a@b.c\","
                        "\"data\":{\"contact\":{\"email\":\"a@b.c\"}}}";
    int status = 0;
    char *resp = NULL;
    cr_assert_eq(plugboard_harness_webhook(h, "POST", NULL, body,
                                           sizeof body - 1, &status, &resp),
                 0);
    cr_expect_eq(status, 200, "%s", resp);
    free(resp);
    cr_assert_eq(plugboard_harness_emitted_count(h), 1);
    const plugboard_host_api_t *api = plugboard_harness_api();
    const plugboard_event_t *ev = plugboard_harness_emitted(h, 0);
    cr_expect_str_eq(api->event_type(ev), "contact.upserted");
    cr_expect_str_eq(api->event_source(ev), "shop");
    const char *email = NULL;
    size_t len = 0;
    cr_expect(api->event_string(ev, "contact.email", &email, &len));
    cr_expect_eq(len, 5);
    plugboard_harness_clear(h);
    cr_expect_eq(plugboard_harness_emitted_count(h), 0);
    cr_expect_null(plugboard_harness_emitted(h, 0));
    plugboard_harness_close(&h);
}

/* Array fields (docs/events.md has ticket.tags, ticket.changed,
 * email.tags) read through the table the harness hands out: an element
 * by index, the length by api->event_count (ABI 1.1).  "good" emits only
 * contact.upserted and payment.failed, so the arrays ride in one of
 * those, shaped as a ticket's. */
Test(sdk_harness, reads_array_fields_by_index_and_count)
{
    plugboard_harness_t *h = open_good(NULL);
    const char body[] =
        "{\"type\":\"contact.upserted\",\"key\":\"ada@example.com\","
        "\"data\":{\"contact\":{\"email\":\"ada@example.com\"},"
        "\"ticket\":{\"id\":\"4711\",\"tags\":[\"hardware\","
        "\"urgent\"]},\"changed\":[]}}";
    int status = 0;
    cr_assert_eq(plugboard_harness_webhook(h, "POST", NULL, body,
                                           sizeof body - 1, &status, NULL),
                 0);
    cr_assert_eq(status, 200);
    cr_assert_eq(plugboard_harness_emitted_count(h), 1);
    const plugboard_host_api_t *api = plugboard_harness_api();
    const plugboard_event_t *ev = plugboard_harness_emitted(h, 0);
    cr_assert(PLUGBOARD_API_HAS(api, event_count));
    cr_expect_eq(api->event_kind(ev, "ticket.tags"), PLUGBOARD_VALUE_ARRAY);
    cr_expect_eq(api->event_count(ev, "ticket.tags"), 2);
    cr_expect_eq(api->event_count(ev, "changed"), 0);
    cr_expect_eq(api->event_count(ev, "ticket"), 2, "a map's entries");
    cr_expect_eq(api->event_count(ev, "ticket.id"), 0);
    const char *tag = NULL;
    size_t len = 0;
    cr_expect(api->event_string(ev, "ticket.tags.1", &tag, &len));
    cr_expect(len == 6 && memcmp(tag, "urgent", 6) == 0);
    cr_expect_eq(api->event_kind(ev, "ticket.tags.2"), PLUGBOARD_VALUE_MISSING);
    cr_expect_eq(api->event_kind(ev, "ticket.tags.01"),
                 PLUGBOARD_VALUE_MISSING);
    plugboard_harness_close(&h);
}

Test(sdk_harness, refuses_bad_settings_before_open)
{
    char err[512];
    const char *wrong[] = {"fail_first=lots", NULL};
    cr_expect_null(plugboard_harness_open(GOOD, NULL, wrong, err, sizeof err));
    cr_expect(strstr(err, "fail_first"), "%s", err);
    const char *unknown[] = {"colour=blue", NULL};
    cr_expect_null(
        plugboard_harness_open(GOOD, NULL, unknown, err, sizeof err));
    cr_expect(strstr(err, "colour"), "%s", err);
    cr_expect_null(plugboard_harness_open(PB_TEST_PLUGIN_DIR "/wrong_abi.so",
                                          NULL, NULL, err, sizeof err));
    cr_expect(strstr(err, "ABI 2"), "%s", err);
}

/* Attempts count from 1, as the host's do: 0 is a mistake in the test,
 * not a first attempt. */
Test(sdk_harness, attempt_zero_is_refused)
{
    plugboard_harness_t *h = open_good(NULL);
    plugboard_result_t r;
    cr_expect_eq(
        plugboard_harness_deliver(h, "payment.failed", NULL, NULL, 0, &r),
        PLUGBOARD_E_INVALID);
    cr_expect_eq(plugboard_harness_deliver_json(
                     h, "{\"type\":\"payment.failed\"}", 0, &r),
                 PLUGBOARD_E_INVALID);
    char *rec = pb_test_read_file(s_record, NULL);
    cr_expect(!rec || !*rec, "nothing was delivered: %s", rec ? rec : "");
    free(rec);
    cr_assert_eq(
        plugboard_harness_deliver(h, "payment.failed", NULL, NULL, 2, &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    rec = pb_test_read_file(s_record, NULL);
    cr_assert_not_null(rec);
    cr_expect(strstr(rec, "\"attempt\":2"), "%s", rec);
    free(rec);
    plugboard_harness_close(&h);
}

/* An event the harness builds, from parts or from JSON without a
 * "source", comes from "harness" (PLUGBOARD_HARNESS_SOURCE); a JSON
 * event's own source is kept. */
Test(sdk_harness, built_events_come_from_one_documented_source)
{
    plugboard_harness_t *h = open_good(NULL);
    plugboard_result_t r;
    cr_assert_eq(
        plugboard_harness_deliver(h, "payment.failed", "a@x.io", NULL, 1, &r),
        0);
    cr_assert_eq(
        plugboard_harness_deliver_json(
            h, "{\"type\":\"payment.failed\",\"key\":\"b@x.io\"}", 1, &r),
        0);
    cr_assert_eq(plugboard_harness_deliver_json(
                     h,
                     "{\"type\":\"payment.failed\",\"key\":\"c@x.io\","
                     "\"source\":\"payments\"}",
                     1, &r),
                 0);
    char *rec = pb_test_read_file(s_record, NULL);
    cr_assert_not_null(rec);
    char *second = strchr(rec, '\n');
    cr_assert_not_null(second);
    char *third = strchr(second + 1, '\n');
    cr_assert_not_null(third);
    *second = *third = '\0';
    cr_expect(strstr(rec, "\"source\":\"" PLUGBOARD_HARNESS_SOURCE "\""),
              "deliver: %s", rec);
    cr_expect(strstr(second + 1, "\"source\":\"harness\""), "deliver_json: %s",
              second + 1);
    cr_expect(strstr(third + 1, "\"source\":\"payments\""), "own source: %s",
              third + 1);
    free(rec);
    plugboard_harness_close(&h);
}

/* The harness takes only an instance name a config would take. */
Test(sdk_harness, refuses_a_name_the_config_would_refuse)
{
    char err[512] = "";
    static const char *const bad[] = {"Bad Name", "", "shop.eu", "UPPER",
                                      "x/y"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        cr_expect_null(
            plugboard_harness_open(GOOD, bad[i], NULL, err, sizeof err), "%s",
            bad[i]);
        cr_expect(strstr(err, "not a valid connector name"), "'%s': %s", bad[i],
                  err);
    }
    char long_name[66];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    cr_expect_null(
        plugboard_harness_open(GOOD, long_name, NULL, err, sizeof err));
    cr_expect(strstr(err, "1 to 63"), "%s", err);
    long_name[63] = '\0';
    plugboard_harness_t *h =
        plugboard_harness_open(GOOD, long_name, NULL, err, sizeof err);
    cr_expect_not_null(h, "63 characters are fine: %s", err);
    plugboard_harness_close(&h);
    h = plugboard_harness_open(GOOD, "shop-eu_2", NULL, err, sizeof err);
    cr_expect_not_null(h, "%s", err);
    plugboard_harness_close(&h);
}

Test(sdk_harness, samples_are_the_documented_examples)
{
    size_t len = 0;
    const char *json = plugboard_harness_sample("payment.refunded", &len);
    cr_assert_not_null(json);
    cr_expect(memmem(json, len, "\"re_3KhZ6f\"", 11));
    cr_expect_null(plugboard_harness_sample("nope", NULL));
}

Test(sdk_harness, records_refused_credentials)
{
    char gate[4300], setting[4400], err[512];
    snprintf(gate, sizeof gate, "%s/refused", s_dir);
    snprintf(setting, sizeof setting, "auth_gate=%s", gate);
    const char *settings[] = {setting, NULL};
    plugboard_harness_t *h = plugboard_harness_open(
        PB_TEST_PLUGIN_DIR "/tally.so", NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    plugboard_result_t r;
    cr_assert_eq(plugboard_harness_deliver_sample(h, "payment.failed", &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_OK);
    cr_expect_eq(plugboard_harness_auth_failed_count(h), 0);
    cr_expect_null(plugboard_harness_auth_failed_reason(h, 0));

    FILE *f = fopen(gate, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(plugboard_harness_deliver_sample(h, "payment.failed", &r), 0);
    cr_assert_eq(plugboard_harness_deliver_sample(h, "payment.failed", &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_RETRY);
    cr_expect_eq(plugboard_harness_auth_failed_count(h), 2);
    cr_expect_str_eq(plugboard_harness_auth_failed_reason(h, 1),
                     "HTTP 401: the API token was revoked");
    cr_expect_null(plugboard_harness_auth_failed_reason(h, 2));
    /* the API table the harness hands out has the ABI 1.1 entry */
    cr_expect(PLUGBOARD_API_HAS(plugboard_harness_api(), auth_failed));
    plugboard_harness_clear(h);
    cr_expect_eq(plugboard_harness_auth_failed_count(h), 0);
    plugboard_harness_close(&h);
}

/* An event emitted inside deliver names the delivered event as its
 * causation and keeps its correlation, as in the host. */
Test(sdk_harness, deliver_emits_inherit_causation_and_correlation)
{
    char err[512];
    plugboard_harness_t *h = plugboard_harness_open(
        PB_TEST_PLUGIN_DIR "/relay.so", NULL, NULL, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    pb_builder_t *b = pb_builder_new("crm", "contact.upserted");
    cr_assert_not_null(b);
    cr_assert_eq(pb_builder_set_key(b, "ada@example.com"), 0);
    cr_assert_eq(pb_builder_set_correlation(b, "01JE5M0A1B2C3D4E5F6G7H8J9K"),
                 0);
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    pb_builder_destroy(&b);
    char why[128];
    int e = 0;
    pb_envelope_t *sent =
        pb_envelope_decode(frame, len, NULL, &e, why, sizeof why);
    cr_assert_not_null(sent, "%s", why);

    plugboard_result_t r;
    cr_assert_eq(plugboard_harness_deliver_frame(h, frame, len, &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    cr_assert_eq(plugboard_harness_emitted_count(h), 1);
    const plugboard_event_t *ev = plugboard_harness_emitted(h, 0);
    cr_expect_str_eq(pb_envelope_causation(ev), pb_envelope_id(sent));
    cr_expect_str_eq(pb_envelope_correlation(ev), "01JE5M0A1B2C3D4E5F6G7H8J9K");

    /* an event with no correlation of its own starts the chain */
    plugboard_harness_clear(h);
    cr_assert_eq(
        plugboard_harness_deliver(h, "payment.failed", "b@x.io", NULL, 1, &r),
        0);
    cr_assert_eq(plugboard_harness_emitted_count(h), 1);
    ev = plugboard_harness_emitted(h, 0);
    cr_expect_eq(strlen(pb_envelope_causation(ev)), PB_ID_LEN);
    cr_expect_str_eq(pb_envelope_correlation(ev), pb_envelope_causation(ev));
    pb_envelope_destroy(&sent);
    free(frame);
    plugboard_harness_close(&h);
}

/* Nothing may be emitted from open: the harness refuses it as the host
 * does (relay's open fails unless emit answers PLUGBOARD_E_INVALID). */
Test(sdk_harness, emit_in_open_is_refused)
{
    char err[512];
    const char *settings[] = {"emit_in_open=true", NULL};
    plugboard_harness_t *h = plugboard_harness_open(
        PB_TEST_PLUGIN_DIR "/relay.so", NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    cr_expect_eq(plugboard_harness_emitted_count(h), 0);
    plugboard_harness_close(&h);
}

/* The limits plugboard.h states: key length, "" for no key. */
Test(sdk_harness, builder_and_emit_limits_are_as_documented)
{
    const plugboard_host_api_t *api = plugboard_harness_api();
    plugboard_builder_t *b = pb_builder_new("shop", "contact.upserted");
    char key[PLUGBOARD_KEY_MAX + 2];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    cr_expect_eq(api->builder_set_key(b, "first@example.com"), 0);
    cr_expect_eq(api->builder_set_key(b, key), PLUGBOARD_E_INVALID, "257");
    cr_expect_eq(api->builder_set_dedupe_id(b, key), PLUGBOARD_E_INVALID);
    key[PLUGBOARD_KEY_MAX] = '\0';
    cr_expect_eq(api->builder_set_dedupe_id(b, key), 0, "256 bytes fit");
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    char why[128];
    int e = 0;
    pb_envelope_t *env =
        pb_envelope_decode(frame, len, NULL, &e, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    cr_expect_str_eq(api->event_key(env), "first@example.com",
                     "a refused key leaves the old one");
    pb_envelope_destroy(&env);
    free(frame);
    cr_expect_eq(api->builder_set_key(b, NULL), 0);
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    env = pb_envelope_decode(frame, len, NULL, &e, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    cr_expect_str_eq(api->event_key(env), "", "no key reads as \"\"");
    pb_envelope_destroy(&env);
    free(frame);
    pb_builder_destroy(&b);
}

Test(sdk_harness, runs_a_pull_source_and_marks_its_batches_durable)
{
    char cursor[4300], err[512];
    snprintf(cursor, sizeof cursor, "cursor=%s/cursor.txt", s_dir);
    const char *settings[] = {"count=5", "interval=5ms", cursor, NULL};
    plugboard_harness_t *h = plugboard_harness_open(
        PB_TEST_PLUGIN_DIR "/ticker.so", NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    cr_assert_eq(plugboard_harness_run(h, 400), 0);
    cr_assert_eq(plugboard_harness_emitted_count(h), 5);
    for (size_t i = 0; i < 5; i++) {
        int64_t seq = -1;
        cr_expect(pb_event_int(plugboard_harness_emitted(h, i), "seq", &seq));
        cr_expect_eq(seq, (int64_t)i);
    }
    pb_harness_close(&h);
    /* the ticker advanced its cursor over every batch: durable said so */
    char path[4300];
    snprintf(path, sizeof path, "%s/cursor.txt", s_dir);
    char *text = pb_test_read_file(path, NULL);
    cr_assert_not_null(text);
    cr_expect(strstr(text, "durable 4\n"), "%s", text);
    free(text);

    /* a connector without run has nothing to run */
    h = open_good(NULL);
    cr_expect_eq(plugboard_harness_run(h, 10), PLUGBOARD_E_INVALID);
    pb_harness_close(&h);
}
