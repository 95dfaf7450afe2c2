/*
 * test_swap_tool.c - the design's promise: swapping a tool is rebinding one
 * connector.  The same routes run twice with the real host: once with `crm`
 * bound to the file sink and once bound to hubspot (against the local
 * HubSpot stand-in).  Only the `crm` connector entry differs between the
 * two configs; the routes text is the same string.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "hostproc.h"
#include "standin.h"

#define SECRET "whsec_swap_test_secret"
#define SAMPLES PB_SOURCE_DIR "/etc/samples/stripe"

static const char s_head[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  plugin_path = [ \"" PB_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; };\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"payments\"; plugin = \"stripe\";\n"
    "    settings = { signing_secret = \"env:STRIPE_WEBHOOK_SECRET\"; }; },\n";

/* The one thing that changes. */
static const char s_crm_file[] =
    "  { name = \"crm\"; plugin = \"file\";\n"
    "    settings = { path = \"@DIR@/crm.jsonl\"; }; }\n";
static const char s_crm_hubspot[] =
    "  { name = \"crm\"; plugin = \"hubspot\";\n"
    "    settings = { token = \"env:HUBSPOT_TOKEN\"; api_base = \"%s\"; }; "
    "}\n";

static const char s_routes[] =
    ");\n"
    "routes = (\n"
    "  { name = \"payments-to-crm\"; from = \"payments\";\n"
    "    when = [ \"contact.upserted\", \"payment.failed\" ];\n"
    "    to = [ \"crm\" ];\n"
    "    why = \"account managers re-typed payment outcomes by hand\";\n"
    "    owner = \"revops@example.com\";\n"
    "    retry = { attempts = 5; initial = \"50ms\"; max = \"200ms\"; }; }\n"
    ");\n";

static const char *const s_env[] = {"STRIPE_WEBHOOK_SECRET=" SECRET,
                                    "HUBSPOT_TOKEN=pat-na1-11111111-2222-3333-4444-555555555555", NULL};

static char *s_dir;
static pb_hostproc_t s_host;
static pb_standin_t *s_hs;

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-swap");
    cr_assert_not_null(s_dir);
}

static void
teardown(void)
{
    if (s_host.pid > 0)
        pb_hostproc_stop(&s_host);
    pb_standin_stop(&s_hs);
    pb_test_rmtree(s_dir);
    free(s_dir);
}

TestSuite(swap_tool, .init = setup, .fini = teardown, .timeout = 90);

static void
start_with(const char *crm_entry)
{
    size_t n = strlen(s_head) + strlen(crm_entry) + strlen(s_routes) + 1;
    char *cfg = malloc(n);
    snprintf(cfg, n, "%s%s%s", s_head, crm_entry, s_routes);
    bool up = pb_hostproc_start(&s_host, s_dir, pb_test_free_port(), cfg,
                                s_env);
    free(cfg);
    if (!up) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("host did not start:\n%s", log ? log : "");
    }
}

static void
post(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", SAMPLES, name);
    size_t len = 0;
    char *body = pb_test_read_file(path, &len);
    cr_assert_not_null(body);
    char sig[256], header[300];
    pb_stripe_sign(SECRET, body, len, sig, sizeof sig);
    snprintf(header, sizeof header, "Stripe-Signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", header, NULL};
    cr_assert_eq(pb_http_post(s_host.port, "/hooks/payments", headers, body,
                              len, NULL),
                 200, "%s", name);
    free(body);
}

static void
send_the_same_events(void)
{
    post("checkout.session.completed.json");
    post("invoice.payment_failed.with_customer_email.json");
}

static bool
file_has_two(void *ctx)
{
    return pb_count_lines(ctx) >= 2;
}

static bool
hubspot_has_contact_and_note(void *ctx)
{
    return pb_standin_count(s_hs, "POST", "/crm/v3/objects/contacts") >= 1 &&
           pb_standin_count(s_hs, "POST", "/crm/v3/objects/notes") >= 1;
}

Test(swap_tool, the_same_routes_drive_a_file_or_hubspot)
{
    /* 1: crm is the file sink */
    start_with(s_crm_file);
    send_the_same_events();
    char outbox[4200];
    snprintf(outbox, sizeof outbox, "%s/crm.jsonl", s_dir);
    cr_assert(pb_wait_until(file_has_two, outbox, 15000),
              "the file sink got both events");
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    char *text = pb_test_read_file(outbox, NULL);
    cr_expect(strstr(text, "\"type\":\"contact.upserted\"") != NULL);
    cr_expect(strstr(text, "\"type\":\"payment.failed\"") != NULL);
    cr_expect(strstr(text, "jane.doe@example.com") != NULL);
    free(text);

    /* 2: crm is HubSpot; a fresh journal so the same events are new */
    char var[4200];
    snprintf(var, sizeof var, "%s/var", s_dir);
    pb_test_rmtree(var);
    char err[256] = "";
    s_hs = pb_standin_start("hubspot", err, sizeof err);
    cr_assert_not_null(s_hs, "%s", err);
    char entry[1024];
    snprintf(entry, sizeof entry, s_crm_hubspot, pb_standin_url(s_hs));
    start_with(entry);
    send_the_same_events();
    if (!pb_wait_until(hubspot_has_contact_and_note, NULL, 20000)) {
        json_t *recs = pb_standin_records(s_hs);
        char *dump = json_dumps(recs, JSON_COMPACT);
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_log_error("HubSpot did not get the contact and the note.\n"
                     "requests: %.3000s\nhost log: %s", dump, log);
        free(dump);
        free(log);
        json_decref(recs);
        cr_assert_fail("see the log above");
    }
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    json_t *create =
        pb_standin_request(s_hs, "POST", "/crm/v3/objects/contacts", 0);
    cr_assert_not_null(create);
    char *dump = json_dumps(create, JSON_COMPACT);
    cr_expect(strstr(dump, "jane.doe@example.com") != NULL, "%s", dump);
    cr_expect(strstr(dump, "Bearer pat-na1-11111111-2222-3333-4444-555555555555") != NULL,
              "the token from the environment: %s", dump);
    free(dump);
    json_decref(create);
}
