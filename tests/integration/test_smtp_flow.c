/*
 * test_smtp_flow.c - the smtp connector inside the real host: Stripe's
 * failed payments become e-mail on a real SMTP server (aiosmtpd), a 4xx is
 * retried by the host until the server takes the message, events that
 * cannot be mailed become dead letters whose owner notices also go out by
 * SMTP, and a signed SendGrid bounce posted to /hooks/mail-events reaches
 * the ops mailbox.  A server that stalls after the final dot holds up
 * only the mail connector: the payments ledger (a file connector) goes on.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <plugboard/helpers.h>

#include "harness.h"
#include "hostproc.h"
#include "smtpd.h"

#define SECRET "whsec_integration_test_secret"
#define SAMPLES PB_SOURCE_DIR "/etc/samples/stripe"
#define TEMPLATES PB_SOURCE_DIR "/etc/templates"

static const char s_config[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"info\";\n"
    "  plugin_path = [ \"" PB_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "  drain_timeout = \"5s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"payments\"; plugin = \"stripe\";\n"
    "    settings = { signing_secret = \"env:STRIPE_WEBHOOK_SECRET\"; }; },\n"
    "  { name = \"mail\"; plugin = \"smtp\";\n"
    "    settings = { url = \"smtp://127.0.0.1:@SMTP@\"; tls = \"none\";\n"
    "      from = \"Billing <billing@example.com>\"; timeout = \"30s\";\n"
    "      templates = \"" TEMPLATES "\"; }; },\n"
    "  { name = \"ops-mail\"; plugin = \"smtp\";\n"
    "    settings = { url = \"smtp://127.0.0.1:@SMTP@\"; tls = \"none\";\n"
    "      from = \"plugboard <plugboard@example.com>\";\n"
    "      to = \"Ops <ops@example.com>\";\n"
    "      templates = \"" TEMPLATES "\"; }; },\n"
    "  { name = \"mail-events\"; plugin = \"smtp\";\n"
    "    settings = { webhook_provider = \"sendgrid\";\n"
    "      sendgrid_public_key = \"@SGKEY@\"; }; },\n"
    "  { name = \"ledger\"; plugin = \"file\";\n"
    "    settings = { path = \"@DIR@/ledger.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"failed-payment-email\"; from = \"payments\";\n"
    "    when = \"payment.failed\"; to = [ \"mail\" ];\n"
    "    why = \"customers never heard their card failed\";\n"
    "    on_failure = \"the customer churns\";\n"
    "    owner = \"billing-team@example.com\"; notify = \"ops-mail\";\n"
    "    retry = { attempts = 20; initial = \"100ms\"; max = \"300ms\"; }; },\n"
    "  { name = \"bounces-to-ops\"; from = \"mail-events\";\n"
    "    when = \"email.bounced\"; to = [ \"ops-mail\" ];\n"
    "    why = \"bounced addresses kept getting invoices\";\n"
    "    owner = \"ops@example.com\"; notify = \"ops-mail\"; },\n"
    "  { name = \"payments-ledger\"; from = \"payments\";\n"
    "    when = \"payment.*\"; to = [ \"ledger\" ];\n"
    "    why = \"finance reconciled payments from screenshots\";\n"
    "    owner = \"finance@example.com\"; }\n"
    ");\n";

static char *s_dir;
static pb_hostproc_t s_host;
static pb_smtpd_t s_smtpd;
static EVP_PKEY *s_key;

/* text with every "@NAME@" replaced by value (malloc'd). */
static char *
s_replace(const char *text, const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value), count = 0;
    for (const char *p = text; (p = strstr(p, name)); p += n)
        count++;
    char *out = malloc(strlen(text) + count * v + 1);
    char *o = out;
    for (const char *p = text;;) {
        const char *hit = strstr(p, name);
        size_t k = hit ? (size_t)(hit - p) : strlen(p);
        memcpy(o, p, k);
        o += k;
        if (!hit)
            break;
        memcpy(o, value, v);
        o += v;
        p = hit + n;
    }
    *o = '\0';
    return out;
}

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-smtp-flow");
    cr_assert_not_null(s_dir);
    char dir[4300];
    snprintf(dir, sizeof dir, "%s/smtpd", s_dir);
    cr_assert(pb_smtpd_start(&s_smtpd, dir, NULL), "SMTP stand-in");

    s_key = EVP_EC_gen("P-256");
    cr_assert_not_null(s_key);
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(s_key, &der);
    char pub[256], smtp_port[16];
    plugboard_base64_encode(der, (size_t)der_len, pub);
    OPENSSL_free(der);
    snprintf(smtp_port, sizeof smtp_port, "%d", s_smtpd.port);
    char *a = s_replace(s_config, "@SMTP@", smtp_port);
    char *b = s_replace(a, "@SGKEY@", pub);
    char *config = s_replace(b, "@DIR@", s_dir);
    free(a);
    free(b);

    static const char *const env[] = {"STRIPE_WEBHOOK_SECRET=" SECRET, NULL};
    bool up =
        pb_hostproc_start(&s_host, s_dir, pb_test_free_port(), config, env);
    free(config);
    if (!up) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("host did not start:\n%s", log ? log : "(no log)");
    }
}

static void
teardown(void)
{
    if (s_host.pid > 0)
        pb_hostproc_stop(&s_host);
    pb_smtpd_stop(&s_smtpd);
    EVP_PKEY_free(s_key);
    pb_test_rmtree(s_dir);
    free(s_dir);
}

static int
s_post_stripe(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", SAMPLES, name);
    size_t len = 0;
    char *body = pb_test_read_file(path, &len);
    cr_assert_not_null(body, "sample %s", path);
    char sig[256], header[300];
    pb_stripe_sign(SECRET, body, len, sig, sizeof sig);
    snprintf(header, sizeof header, "Stripe-Signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", header, NULL};
    int status =
        pb_http_post(s_host.port, "/hooks/payments", headers, body, len, NULL);
    free(body);
    return status;
}

/* POST body to /hooks/mail-events signed as SendGrid; the status. */
static int
s_post_sendgrid_body(const char *body, size_t len)
{
    char ts[32], sig_b64[256], sig_h[320], ts_h[80];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    unsigned char sig[256];
    size_t sig_len = sizeof sig;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    cr_assert_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s_key), 1);
    EVP_DigestSignUpdate(ctx, ts, strlen(ts));
    EVP_DigestSignUpdate(ctx, body, len);
    cr_assert_eq(EVP_DigestSignFinal(ctx, sig, &sig_len), 1);
    EVP_MD_CTX_free(ctx);
    plugboard_base64_encode(sig, sig_len, sig_b64);
    snprintf(sig_h, sizeof sig_h, "X-Twilio-Email-Event-Webhook-Signature: %s",
             sig_b64);
    snprintf(ts_h, sizeof ts_h, "X-Twilio-Email-Event-Webhook-Timestamp: %s",
             ts);
    const char *headers[] = {"Content-Type: application/json", sig_h, ts_h,
                             NULL};
    return pb_http_post(s_host.port, "/hooks/mail-events", headers, body, len,
                        NULL);
}

static int
s_post_sendgrid(const char *fixture)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", PB_SOURCE_DIR, fixture);
    size_t len = 0;
    char *body = pb_test_read_file(path, &len);
    cr_assert_not_null(body);
    int status = s_post_sendgrid_body(body, len);
    free(body);
    return status;
}

static bool
s_arrived(void *ctx)
{
    return pb_smtpd_count(&s_smtpd) >= *(size_t *)ctx;
}

/* Messages whose envelope goes to rcpt; the first one's text in *first. */
static size_t
s_find(const char *rcpt, const char *needle, char **first)
{
    size_t n = 0;
    *first = NULL;
    for (size_t i = 1; i <= pb_smtpd_count(&s_smtpd); i++) {
        char *raw = NULL;
        size_t len = 0;
        json_t *meta = NULL;
        cr_assert(pb_smtpd_message(&s_smtpd, i, &raw, &len, &meta));
        json_t *to = json_array_get(json_object_get(meta, "rcpt_tos"), 0);
        if (strcmp(json_string_value(to), rcpt) == 0 &&
            (!needle || strstr(raw, needle))) {
            n++;
            if (!*first) {
                *first = raw;
                raw = NULL;
            }
        }
        free(raw);
        json_decref(meta);
    }
    return n;
}

TestSuite(smtp_flow, .init = setup, .fini = teardown, .timeout = 120);

Test(smtp_flow, failed_payments_bounces_and_dead_letters_go_out_by_smtp)
{
    /* the customer's mailbox is busy at first: the host retries */
    cr_assert(pb_smtpd_rules(&s_smtpd, "rcpt jane.doe@example.com 451 4.2.0 "
                                       "mailbox busy\n"));
    static const char *const samples[] = {
        "invoice.payment_failed.json",
        "invoice.payment_failed.with_customer_email.json",
        "payment_intent.payment_failed.json",
    };
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++)
        cr_expect_eq(s_post_stripe(samples[i]), 200, "%s", samples[i]);
    cr_expect_eq(
        s_post_sendgrid("sendgrid/event_webhook_blocked.docs_example.json"),
        200);

    /* two owner notices (failed payments without an address) and the
     * bounce notice reach ops while the customer's message waits */
    size_t want = 3;
    cr_assert(pb_wait_until(s_arrived, &want, 15000), "notices arrived");
    cr_assert(pb_smtpd_rules(&s_smtpd, ""));
    want = 4;
    if (!pb_wait_until(s_arrived, &want, 15000)) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("the customer's message did not arrive:\n%s", log);
    }
    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "host exits 0 on SIGTERM");

    char *msg = NULL;
    cr_expect_eq(s_find("jane.doe@example.com", NULL, &msg), 1);
    cr_assert_not_null(msg);
    cr_expect(strstr(msg, "\r\nX-Plugboard-Event-Type: payment.failed\r\n"));
    cr_expect(strstr(msg, "\r\nFrom: Billing <billing@example.com>\r\n"));
    cr_expect(strstr(msg, "20.00 USD") != NULL, "%s", msg);
    free(msg);

    cr_expect_eq(s_find("ops@example.com",
                        "X-Plugboard-Event-Type: plugboard.delivery.dead",
                        &msg),
                 2);
    cr_expect(msg && strstr(msg, "customer.email"), "%s", msg);
    free(msg);
    cr_expect_eq(s_find("ops@example.com",
                        "X-Plugboard-Event-Type: email.bounced", &msg),
                 1);
    cr_expect(msg && strstr(msg, "example@test.com"), "%s", msg);
    free(msg);

    /* the host saw the 451 and retried */
    char *log = pb_test_read_file(s_host.log, NULL);
    cr_expect(strstr(log, "451 4.2.0 mailbox busy") != NULL, "%s", log);
    free(log);
}

static bool
s_ledger_has(void *needle)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/ledger.jsonl", s_dir);
    char *text = pb_test_read_file(path, NULL);
    bool found = text && strstr(text, needle);
    free(text);
    return found;
}

/*
 * The server stores the customer's message and then sits on its reply to
 * the final dot.  While the mail connector waits (its timeout is 30 s),
 * a payment that only the ledger takes reaches it: one connector's stalled
 * vendor holds up no other.  A host that let it would deliver the ledger's
 * event only after the 30 s.
 */
Test(smtp_flow, a_server_stalled_after_the_data_holds_up_no_other_connector)
{
    cr_assert(pb_smtpd_rules(&s_smtpd, "data-delay 60\n"));
    cr_expect_eq(
        s_post_stripe("invoice.payment_failed.with_customer_email.json"), 200);
    size_t one = 1;
    cr_assert(pb_wait_until(s_arrived, &one, 15000),
              "the stalled message reached the server");
    cr_expect_eq(s_post_stripe("payment_intent.succeeded.json"), 200);
    cr_assert(pb_wait_until(s_ledger_has, "\"payment.succeeded\"", 10000),
              "the ledger did not get the payment while mail was stalled");
    cr_expect_eq(pb_smtpd_count(&s_smtpd), 1, "the server is still stalled");
    /* end the stall: the mail connector's attempt fails at once */
    pb_smtpd_stop(&s_smtpd);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "host exits 0 on SIGTERM");
}

/*
 * One malformed event in a SendGrid batch: the batch gets its 2xx, the
 * good event goes to ops, and the bad one is a dead letter of mail-events
 * that `plugboard dlq` lists with its reason.
 */
Test(smtp_flow, a_malformed_event_in_a_batch_is_a_dead_letter_alone)
{
    static const char batch[] =
        "[{\"email\":\"gone@example.com\",\"timestamp\":1700000000,"
        "\"event\":\"bounce\",\"type\":\"bounce\",\"sg_event_id\":\"sg-1\","
        "\"reason\":\"550 5.1.1 no such user\"},"
        "{\"timestamp\":1700000001,\"event\":\"bounce\"}]";
    cr_assert_eq(s_post_sendgrid_body(batch, strlen(batch)), 200);
    size_t one = 1;
    cr_assert(pb_wait_until(s_arrived, &one, 15000), "the good bounce");
    const char *args[] = {"dlq", "list", "--json", "-c", s_host.config, NULL};
    char *out = NULL;
    cr_assert_eq(pb_hostproc_run_cli(s_dir, args, NULL, &out), 0, "%s", out);
    json_t *list = json_loads(out, 0, NULL);
    cr_assert_not_null(list, "%s", out);
    json_t *all = json_is_array(list) ? list
                                      : json_object_get(list, "dead_letters");
    cr_assert_eq(json_array_size(all), 1, "%s", out);
    json_t *dl = json_array_get(all, 0);
    cr_expect_str_eq(json_string_value(json_object_get(dl, "route")),
                     "(ingress)");
    cr_expect_str_eq(json_string_value(json_object_get(dl, "destination")),
                     "mail-events");
    cr_expect_str_eq(json_string_value(json_object_get(dl, "last_error")),
                     "sendgrid event: no valid \"email\"");
    json_decref(list);
    free(out);
    /* the item has no route, so no dead-letter notice: the owners of the
     * routes it feeds hear that their source could not map what came */
    size_t two = 2;
    cr_assert(pb_wait_until(s_arrived, &two, 15000), "no owner notice");
    char *notice = NULL;
    cr_expect_eq(s_find("ops@example.com",
                        "mail-events is unhealthy (unmapped)", &notice),
                 1);
    cr_expect(notice && strstr(notice, "Cause:       unmapped"), "%s",
              notice ? notice : "(none)");
    free(notice);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "host exits 0 on SIGTERM");
}
