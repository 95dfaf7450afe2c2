/*
 * test_main_flow.c - the main job end to end: the real host binary, real
 * HTTP, the real Stripe sample payloads signed as Stripe signs them, and
 * the real outputs: JSON-lines outboxes, a Maildir and the SQLite journal.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"

#define SECRET "whsec_integration_test_secret"
#define SAMPLES PB_SOURCE_DIR "/etc/samples/stripe"

/* The default config's shape, with paths in the test's directory. */
static const char s_config[] =
    "plugboard = {\n"
    "  data_dir = \"@DIR@/var\";\n"
    "  log_level = \"info\";\n"
    "  plugin_path = [ \"" PB_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:@PORT@\"; body_limit = 65536; };\n"
    "  drain_timeout = \"5s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"payments\"; plugin = \"stripe\";\n"
    "    settings = { signing_secret = \"env:STRIPE_WEBHOOK_SECRET\"; }; },\n"
    "  { name = \"crm\"; plugin = \"file\";\n"
    "    settings = { path = \"@DIR@/out/crm.jsonl\"; }; },\n"
    "  { name = \"mail\"; plugin = \"maildir\";\n"
    "    settings = { path = \"@DIR@/mail\"; from = \"Billing "
    "<billing@example.com>\";\n"
    "                 templates = \"" PB_SOURCE_DIR "/etc/templates\"; }; },\n"
    "  { name = \"support\"; plugin = \"file\";\n"
    "    settings = { path = \"@DIR@/out/support.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"payments-to-crm\"; from = \"payments\";\n"
    "    when = [ \"payment.*\", \"subscription.canceled\", "
    "\"contact.upserted\" ];\n"
    "    to = [ \"crm\" ]; why = \"payments re-typed into the CRM\";\n"
    "    owner = \"revops@example.com\"; notify = \"mail\"; },\n"
    "  { name = \"failed-payment-follow-up\"; from = \"payments\";\n"
    "    when = \"payment.failed\"; to = [ \"mail\", \"support\" ];\n"
    "    why = \"finance chased failed cards by hand\";\n"
    "    on_failure = \"the customer churns\";\n"
    "    owner = \"billing-team@example.com\"; notify = \"mail\"; },\n"
    "  { name = \"cancellation-save\"; from = \"payments\";\n"
    "    when = \"subscription.canceled\"; to = [ \"mail\", \"support\" ];\n"
    "    why = \"cancellations noticed too late\";\n"
    "    owner = \"success-team@example.com\"; notify = \"mail\"; }\n"
    ");\n";

static const char *const s_env[] = {"STRIPE_WEBHOOK_SECRET=" SECRET, NULL};

static char *s_dir;
static pb_hostproc_t s_host;

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-flow");
    cr_assert_not_null(s_dir);
    int port = pb_test_free_port();
    bool up = pb_hostproc_start(&s_host, s_dir, port, s_config, s_env);
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
    pb_test_rmtree(s_dir);
    free(s_dir);
}

static int
post_sample(const char *name, const char *secret, char **resp)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", SAMPLES, name);
    size_t len = 0;
    char *body = pb_test_read_file(path, &len);
    cr_assert_not_null(body, "sample %s", path);
    char sig[256], header[300];
    pb_stripe_sign(secret, body, len, sig, sizeof sig);
    snprintf(header, sizeof header, "Stripe-Signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", header, NULL};
    int status = pb_http_post(s_host.port, "/hooks/payments", headers, body,
                              len, resp);
    free(body);
    return status;
}

/* Every JSON line of an outbox. */
static json_t *
read_outbox(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/out/%s", s_dir, name);
    json_t *all = json_array();
    FILE *f = fopen(path, "r");
    if (!f)
        return all;
    char line[65536];
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *ev = json_loads(line, 0, &err);
        cr_assert_not_null(ev, "outbox line is JSON: %s", err.text);
        json_array_append_new(all, ev);
    }
    fclose(f);
    return all;
}

static size_t
count_type(json_t *events, const char *type)
{
    size_t n = 0, i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        if (strcmp(json_string_value(json_object_get(ev, "type")), type) == 0)
            n++;
    }
    return n;
}

/* Messages in the Maildir's new/ directory. */
static size_t
maildir_count(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/mail/new", s_dir);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The text of the first message whose To: header is `to` (or NULL). */
static char *
maildir_find(const char *to, size_t *count)
{
    char path[4200], file[8400], want[300];
    snprintf(path, sizeof path, "%s/mail/new", s_dir);
    snprintf(want, sizeof want, "\r\nTo: %s\r\n", to);
    DIR *d = opendir(path);
    if (!d)
        return NULL;
    char *found = NULL;
    *count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        char *text = pb_test_read_file(file, NULL);
        if (text && strstr(text, want)) {
            (*count)++;
            if (!found) {
                found = text;
                continue;
            }
        }
        free(text);
    }
    closedir(d);
    return found;
}

static bool
outputs_settled(void *ctx)
{
    size_t *want = ctx;
    char crm[4200], support[4200];
    snprintf(crm, sizeof crm, "%s/out/crm.jsonl", s_dir);
    snprintf(support, sizeof support, "%s/out/support.jsonl", s_dir);
    return pb_count_lines(crm) >= want[0] &&
           pb_count_lines(support) >= want[1] && maildir_count() >= want[2];
}

/* SELECT count(*) ... on the journal, read-only. */
static int
journal_count(const char *sql)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/var/journal.db", s_dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK,
                 "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

TestSuite(main_flow, .init = setup, .fini = teardown, .timeout = 120);

Test(main_flow, real_stripe_samples_reach_crm_mail_and_support)
{
    static const char *const samples[] = {
        "charge.refunded.json",
        "checkout.session.completed.json",
        "customer.subscription.deleted.json",
        "invoice.payment_failed.json",
        "invoice.payment_failed.with_customer_email.json",
        "payment_intent.payment_failed.json",
        "payment_intent.succeeded.json",
    };
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        char *resp = NULL;
        int status = post_sample(samples[i], SECRET, &resp);
        cr_expect_eq(status, 200, "%s: %d %s", samples[i], status, resp);
        cr_expect(strstr(resp, "\"duplicates\":0") != NULL, "%s: %s",
                  samples[i], resp);
        free(resp);
    }

    /* a forged request is refused and journals nothing */
    char *resp = NULL;
    int status = post_sample("charge.refunded.json", "whsec_forged", &resp);
    cr_expect_eq(status, 400);
    cr_expect(strstr(resp, "signature") != NULL, "reason: %s", resp);
    free(resp);

    /* Stripe retrying an accepted event: 200, and not routed again */
    status = post_sample("charge.refunded.json", SECRET, &resp);
    cr_expect_eq(status, 200);
    cr_expect(strstr(resp, "\"accepted\":0,\"duplicates\":1") != NULL,
              "duplicate: %s", resp);
    free(resp);

    /* crm: 8 events; support: 4; mail: 1 to the customer + 3 notices */
    size_t want[3] = {8, 4, 4};
    if (!pb_wait_until(outputs_settled, want, 15000)) {
        char *log = pb_test_read_file(s_host.log, NULL);
        cr_assert_fail("outputs did not arrive; host log:\n%s", log);
    }
    cr_assert_eq(pb_hostproc_stop(&s_host), 0, "host exits 0 on SIGTERM");

    json_t *crm = read_outbox("crm.jsonl");
    cr_expect_eq(json_array_size(crm), 8);
    cr_expect_eq(count_type(crm, "payment.refunded"), 1, "no duplicate");
    cr_expect_eq(count_type(crm, "payment.failed"), 3);
    cr_expect_eq(count_type(crm, "payment.succeeded"), 2);
    cr_expect_eq(count_type(crm, "subscription.canceled"), 1);
    cr_expect_eq(count_type(crm, "contact.upserted"), 1);
    size_t i;
    json_t *ev;
    bool saw_customer = false;
    json_array_foreach(crm, i, ev)
    {
        cr_expect_str_eq(json_string_value(json_object_get(ev, "source")),
                         "payments");
        cr_expect_eq(strlen(json_string_value(json_object_get(ev, "id"))),
                     26);
        json_t *data = json_object_get(ev, "data");
        const char *email =
            json_string_value(json_object_get(json_object_get(data,
                                                              "customer"),
                                              "email"));
        if (strcmp(json_string_value(json_object_get(ev, "type")),
                   "payment.failed") == 0 &&
            email && strcmp(email, "jane.doe@example.com") == 0) {
            saw_customer = true;
            cr_expect_eq(json_integer_value(json_object_get(data, "amount")),
                         2000);
            cr_expect_str_eq(
                json_string_value(json_object_get(data, "currency")), "USD");
            cr_expect_str_eq(json_string_value(json_object_get(ev, "key")),
                             "jane.doe@example.com");
        }
    }
    cr_expect(saw_customer, "the failed invoice with an e-mail reached crm");
    json_decref(crm);

    json_t *support = read_outbox("support.jsonl");
    cr_expect_eq(json_array_size(support), 4);
    cr_expect_eq(count_type(support, "payment.failed"), 3);
    cr_expect_eq(count_type(support, "subscription.canceled"), 1);
    json_decref(support);

    /* the customer got one e-mail about the failed payment */
    size_t n = 0;
    char *msg = maildir_find("jane.doe@example.com", &n);
    cr_assert_not_null(msg, "a message to the customer");
    cr_expect_eq(n, 1);
    cr_expect(strstr(msg, "X-Plugboard-Event-Type: payment.failed\r\n"));
    cr_expect(strstr(msg, "20.00 USD") != NULL, "amount in the message");
    for (char *p = msg; (p = strchr(p, '\n')); p++)
        cr_assert(p > msg && p[-1] == '\r', "CRLF line endings only");
    free(msg);

    /* events without a customer e-mail could not be mailed: each became a
     * dead letter and its route's owner was told */
    msg = maildir_find("billing-team@example.com", &n);
    cr_expect_eq(n, 2, "two failed payments without an e-mail");
    cr_expect(msg && strstr(msg, "plugboard.delivery.dead"));
    free(msg);
    msg = maildir_find("success-team@example.com", &n);
    cr_expect_eq(n, 1, "one cancellation without an e-mail");
    free(msg);
    msg = maildir_find("revops@example.com", &n);
    cr_expect_eq(n, 0, "the crm route delivered everything");
    free(msg);

    /* the journal agrees: 8 events from Stripe + 3 notices; nothing left
     * pending; 3 dead letters with their reason */
    cr_expect_eq(journal_count("SELECT count(*) FROM events WHERE source = "
                               "'payments'"),
                 8);
    cr_expect_eq(journal_count("SELECT count(*) FROM events WHERE type = "
                               "'plugboard.delivery.dead'"),
                 3);
    cr_expect_eq(journal_count("SELECT count(*) FROM deliveries WHERE "
                               "state = 0"),
                 0);
    cr_expect_eq(journal_count("SELECT count(*) FROM deliveries WHERE state "
                               "= 2 AND last_error LIKE '%customer.email%'"),
                 3);
}

Test(main_flow, dedupe_survives_a_restart)
{
    char *resp = NULL;
    cr_assert_eq(post_sample("invoice.payment_failed.json", SECRET, &resp),
                 200);
    free(resp);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    cr_assert(pb_hostproc_start(&s_host, s_dir, s_host.port, s_config,
                                s_env),
              "restart");
    cr_assert_eq(post_sample("invoice.payment_failed.json", SECRET, &resp),
                 200);
    cr_expect(strstr(resp, "\"accepted\":0,\"duplicates\":1") != NULL,
              "after restart: %s", resp);
    free(resp);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    cr_expect_eq(journal_count("SELECT count(*) FROM events WHERE source = "
                               "'payments'"),
                 1);
}

/* Send len bytes of a raw request to the host; unless hang_up, read the
 * whole answer (the request asks for Connection: close).  Caller frees. */
static char *
raw_request(const char *req, size_t len, bool hang_up)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s_host.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        cr_assert_gt(n, 0);
        off += (size_t)n;
    }
    size_t cap = 65536, got = 0;
    char *out = calloc(1, cap);
    if (hang_up) /* give the server a moment to begin the request */
        poll(NULL, 0, 100);
    while (!hang_up && got + 1 < cap) {
        ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return out;
}

/* The value of one sample line of /metrics (-1 when absent). */
static long long
metric(const char *sample)
{
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: t\r\n"
                       "Connection: close\r\n\r\n";
    char *page = raw_request(req, sizeof req - 1, false);
    long long v = -1;
    for (char *p = page; (p = strstr(p, sample)); p++) {
        if ((p == page || p[-1] == '\n') && p[strlen(sample)] == ' ') {
            v = atoll(p + strlen(sample) + 1);
            break;
        }
    }
    free(page);
    return v;
}

static bool
some_aborted(void *ctx)
{
    (void)ctx;
    return metric("plugboard_malformed_inputs_total{reason=\"aborted\"}") >=
           1;
}

/* A signed sample as one raw request: head (with extra framing headers,
 * or a Content-Length) then the first body_part bytes of the body. */
static char *
signed_request(const char *framing, size_t body_part, size_t *len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/payment_intent.payment_failed.json",
             SAMPLES);
    size_t blen = 0;
    char *body = pb_test_read_file(path, &blen);
    cr_assert_not_null(body);
    char sig[256];
    pb_stripe_sign(SECRET, body, blen, sig, sizeof sig);
    char *req = malloc(1024 + blen);
    int n = snprintf(req, 1024,
                     "POST /hooks/payments HTTP/1.1\r\nHost: t\r\n"
                     "Connection: close\r\nStripe-Signature: %s\r\n"
                     "Content-Type: application/json\r\n",
                     sig);
    if (framing)
        n += snprintf(req + n, 1024 - (size_t)n, "%s", framing);
    else
        n += snprintf(req + n, 1024 - (size_t)n, "Content-Length: %zu\r\n",
                      blen);
    n += snprintf(req + n, 1024 - (size_t)n, "\r\n");
    size_t part = body_part < blen ? body_part : blen;
    memcpy(req + n, body, part);
    *len = (size_t)n + part;
    free(body);
    return req;
}

Test(main_flow, truncated_and_ambiguous_bodies_journal_nothing)
{
    size_t len;
    /* a sender that hangs up half way through a correctly signed body */
    char *req = signed_request(NULL, 300, &len);
    /* when the server reads the head, the partial body and the hang-up in
     * one go, it drops the connection before the request begins and there
     * is nothing to count: send again until one hang-up is seen mid-body.
     * Whichever it was, nothing of it may be journaled (checked below). */
    bool seen = false;
    for (int i = 0; i < 20 && !seen; i++) {
        free(raw_request(req, len, true));
        seen = pb_wait_until(some_aborted, NULL, 1500);
    }
    free(req);
    cr_assert(seen, "the hang-up was not seen");

    /* Content-Length and Transfer-Encoding together: which body is
     * meant is ambiguous (request smuggling), so 400, saying why */
    req = signed_request("Content-Length: 20\r\n"
                         "Transfer-Encoding: chunked\r\n",
                         SIZE_MAX, &len);
    char *resp = raw_request(req, len, false);
    free(req);
    cr_expect(strncmp(resp, "HTTP/1.1 400 ", 13) == 0, "%s", resp);
    cr_expect(strstr(resp, "both Content-Length and Transfer-Encoding"),
              "%s", resp);
    free(resp);

    /* two different lengths */
    req = signed_request("Content-Length: 20\r\nContent-Length: 21\r\n",
                         SIZE_MAX, &len);
    resp = raw_request(req, len, false);
    free(req);
    cr_expect(strncmp(resp, "HTTP/1.1 400 ", 13) == 0, "%s", resp);
    cr_expect(strstr(resp, "conflicting Content-Length"), "%s", resp);
    free(resp);

    /* the same request whole and well framed is accepted: so the refusals
     * above were for their framing, not for the event */
    req = signed_request(NULL, SIZE_MAX, &len);
    resp = raw_request(req, len, false);
    free(req);
    cr_expect(strncmp(resp, "HTTP/1.1 200 ", 13) == 0, "%s", resp);
    free(resp);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    /* (a dead-letter notice the host emits itself is not counted) */
    int n = journal_count("SELECT count(*) FROM events WHERE source = "
                          "'payments'");
    cr_expect_eq(n, 1, "only the well-framed request became an event, got %d",
                 n);
}

/* A signed event the connector cannot map: 2xx with the connector's own
 * reason (the vendor must not retry it for days), not "accepted": it is
 * kept as an (ingress) dead letter, not routed. */
Test(main_flow, a_signed_but_unmappable_event_is_answered_with_its_reason)
{
    static const char body[] =
        "{\"id\":\"evt_unmappable_1\",\"object\":\"event\","
        "\"type\":\"payment_intent.succeeded\",\"data\":{}}";
    char sig[256], header[300];
    pb_stripe_sign(SECRET, body, sizeof body - 1, sig, sizeof sig);
    snprintf(header, sizeof header, "Stripe-Signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", header, NULL};
    char *resp = NULL;
    cr_assert_eq(pb_http_post(s_host.port, "/hooks/payments", headers, body,
                              sizeof body - 1, &resp),
                 200, "%s", resp);
    cr_expect(strstr(resp, "\"unmappable\"") != NULL, "%s", resp);
    cr_expect(strstr(resp, "\"accepted\"") == NULL, "%s", resp);
    free(resp);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    cr_expect_eq(journal_count("SELECT count(*) FROM deliveries WHERE "
                               "route = '(ingress)' AND state = 2"),
                 1);
}

Test(main_flow, oversize_bodies_and_unknown_hooks_journal_nothing)
{
    /* over the 64 KiB body limit: 413 before the body is read */
    size_t len = 70000;
    char *body = malloc(len);
    memset(body, 'x', len);
    char sig[256], header[300];
    pb_stripe_sign(SECRET, body, len, sig, sizeof sig);
    snprintf(header, sizeof header, "Stripe-Signature: %s", sig);
    const char *headers[] = {header, NULL};
    cr_expect_eq(pb_http_post(s_host.port, "/hooks/payments", headers, body,
                              len, NULL),
                 413);
    free(body);
    /* an unknown connector is 404 */
    cr_expect_eq(pb_http_post(s_host.port, "/hooks/nobody", NULL, "{}", 2,
                              NULL),
                 404);
    /* a sink takes no webhooks */
    cr_expect_eq(pb_http_post(s_host.port, "/hooks/crm", NULL, "{}", 2,
                              NULL),
                 404);
    cr_assert_eq(pb_hostproc_stop(&s_host), 0);
    cr_expect_eq(journal_count("SELECT count(*) FROM events"), 0);
}

Test(main_flow, check_and_describe_from_the_command_line)
{
    const char *ok[] = {"check", "-c", s_host.config, NULL};
    char *out = NULL;
    cr_expect_eq(pb_hostproc_run_cli(s_dir, ok, s_env, &out), 0, "%s", out);
    free(out);

    /* without the secret's environment variable the config is invalid */
    const char *noenv[] = {"STRIPE_WEBHOOK_SECRET=", NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, ok, noenv, &out), 1);
    cr_expect(strstr(out, "STRIPE_WEBHOOK_SECRET") != NULL, "%s", out);
    cr_expect(strstr(out, "plugboard.cfg:") != NULL, "names the file: %s",
              out);
    free(out);

    /* the shipped configs stay valid */
    const char *shipped[] = {"check", "-c", PB_SOURCE_DIR "/etc/plugboard.cfg",
                             NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, shipped, s_env, &out), 0, "%s",
                 out);
    free(out);
    const char *example[] = {"check", "-c",
                             PB_SOURCE_DIR "/etc/examples/production.cfg",
                             NULL};
    const char *prod_env[] = {"STRIPE_WEBHOOK_SECRET=whsec_x",
                              "STRIPE_API_KEY=rk_test_x",
                              "HUBSPOT_TOKEN=pat-x",
                              "HUBSPOT_CLIENT_SECRET=s",
                              "SMTP_PASSWORD=p",
                              "ZENDESK_API_TOKEN=z",
                              "ZENDESK_WEBHOOK_SECRET=w",
                              NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, example, prod_env, &out), 0,
                 "%s", out);
    free(out);

    const char *describe[] = {"describe", "-p", PB_PLUGIN_DIR, "stripe",
                              NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, describe, NULL, &out), 0);
    cr_expect(strstr(out, "signing_secret") != NULL, "%s", out);
    cr_expect(strstr(out, "payment.failed") != NULL, "%s", out);
    free(out);
}
