/*
 * test_summary.c - the example connector's tests, with the SDK harness:
 * open with settings, deliver canonical samples, read what it wrote.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plugboard/harness.h>

#ifndef CONNECTOR_PATH
#error "build with -DCONNECTOR_PATH=\"path/to/summary.so\""
#endif

static char s_path[64];

static void
setup(void)
{
    snprintf(s_path, sizeof s_path, "/tmp/summary-test-XXXXXX");
    int fd = mkstemp(s_path);
    cr_assert(fd >= 0);
    close(fd);
}

static void
teardown(void)
{
    unlink(s_path);
}

static plugboard_harness_t *
open_summary(const char *extra)
{
    char path[128], err[512];
    snprintf(path, sizeof path, "path=%s", s_path);
    const char *settings[] = {path, extra, NULL};
    plugboard_harness_t *h =
        plugboard_harness_open(CONNECTOR_PATH, NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    return h;
}

static char *
written(void)
{
    static char buf[4096];
    FILE *f = fopen(s_path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

TestSuite(summary, .init = setup, .fini = teardown);

Test(summary, writes_one_line_per_event)
{
    plugboard_harness_t *h =
        open_summary("line={{$type}} {{customer.id}} {{amount|money}}");
    plugboard_result_t r;
    cr_assert_eq(plugboard_harness_deliver_sample(h, "payment.failed", &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    cr_expect_str_eq(written(), "payment.failed cus_LOr4Jx1wZ2 20.00 USD\n");
    plugboard_harness_close(&h);
}

Test(summary, rejects_events_without_the_required_field)
{
    plugboard_harness_t *h = open_summary("require=customer.email");
    plugboard_result_t r;
    /* the payment.failed sample knows the customer by id only */
    cr_assert_eq(plugboard_harness_deliver_sample(h, "payment.failed", &r), 0);
    cr_expect_eq(r.outcome, PLUGBOARD_REJECT);
    cr_expect(strstr(r.reason, "customer.email"), "%s", r.reason);
    cr_expect_str_eq(written(), "");
    plugboard_harness_close(&h);
}

Test(summary, cuts_long_lines)
{
    plugboard_harness_t *h = open_summary("max_length=16");
    plugboard_result_t r;
    cr_assert_eq(plugboard_harness_deliver(h, "ticket.created", "k",
                                           "{\"ticket\":{\"id\":\"1\"}}", 1,
                                           &r),
                 0);
    cr_expect_eq(r.outcome, PLUGBOARD_OK, "%s", r.reason);
    cr_expect_eq(strlen(written()), 17);
    plugboard_harness_close(&h);
}

Test(summary, refuses_a_max_length_out_of_range)
{
    char path[128], err[512];
    snprintf(path, sizeof path, "path=%s", s_path);
    const char *settings[] = {path, "max_length=8", NULL};
    cr_expect_null(plugboard_harness_open(CONNECTOR_PATH, NULL, settings, err,
                                          sizeof err));
    cr_expect(strstr(err, "max_length"), "%s", err);
}
