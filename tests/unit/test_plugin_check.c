/*
 * test_plugin_check.c - `plugboard plugin-check`, the connector
 * conformance checker, run as a user runs it (the real binary on real .so
 * files): it fails each deliberately broken test plugin with a message
 * naming the problem, passes the good one, and passes every bundled
 * connector (every plugins/NAME) with its settings from
 * tests/fixtures/plugin-check/.  Also: every canonical type has its sample
 * in docs/events.md.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"
#include "samples.h"

#define FIXTURES PB_SOURCE_DIR "/tests/fixtures/plugin-check"

static char *s_dir;

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-check");
    cr_assert_not_null(s_dir);
}

static void
teardown(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
}

/* plugboard plugin-check <test plugin> [--settings FILE]; the report in
 * *out (caller frees), the exit status returned. */
static int
check(const char *plugin, const char *settings, char **out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.so", PB_TEST_PLUGIN_DIR, plugin);
    const char *args[] = {"plugin-check", path, settings ? "--settings" : NULL,
                          settings, NULL};
    return pb_hostproc_run_cli(s_dir, args, NULL, out);
}

/* The line of check name in a report, or NULL. */
static const char *
line_of(const char *out, const char *status, const char *name)
{
    char head[64];
    snprintf(head, sizeof head, "  %-4s  %-13s ", status, name);
    return strstr(out, head);
}

/* Assert check name has status and its line mentions every needle. */
static void
expect_line(const char *out, const char *status, const char *name,
            const char *const *needles)
{
    const char *line = line_of(out, status, name);
    cr_assert_not_null(line, "no '%s %s' line in:\n%s", status, name, out);
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    for (size_t i = 0; needles && needles[i]; i++)
        cr_expect(memmem(line, len, needles[i], strlen(needles[i])),
                  "'%s' line does not mention '%s':\n%s", name, needles[i],
                  out);
}

TestSuite(plugin_check, .init = setup, .fini = teardown, .timeout = 120);

Test(plugin_check, passes_a_well_formed_plugin)
{
    char *out = NULL;
    int rc = check("good", NULL, &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "PASS: 13 passed, 0 failed"), "%s", out);
    static const char *const names[] = {
        "abi",       "size",      "metadata",      "load",      "settings",
        "open",      "lifecycle", "samples",       "malformed", "webhook",
        "in-flight", "threads",   "settings-read", NULL};
    for (size_t i = 0; names[i]; i++)
        cr_expect(line_of(out, "ok", names[i]), "%s not ok:\n%s", names[i],
                  out);
    free(out);
}

Test(plugin_check, fails_a_wrong_abi_naming_both_numbers)
{
    char *out = NULL;
    cr_expect_eq(check("wrong_abi", NULL, &out), 1);
    expect_line(out, "FAIL", "abi",
                (const char *const[]){"built for ABI 2, host speaks 1", NULL});
    cr_expect(strstr(out, "FAIL: 0 passed, 1 failed"), "%s", out);
    free(out);
}

Test(plugin_check, fails_a_truncated_descriptor)
{
    char *out = NULL;
    cr_expect_eq(check("small_size", NULL, &out), 1);
    expect_line(out, "FAIL", "size",
                (const char *const[]){"size 16", "smaller than ABI 1", NULL});
    free(out);
}

Test(plugin_check, fails_a_plugin_without_entry_point)
{
    char *out = NULL;
    cr_expect_eq(check("no_entry", NULL, &out), 1);
    expect_line(out, "FAIL", "abi",
                (const char *const[]){"plugboard_connector_entry", NULL});
    free(out);
}

Test(plugin_check, fails_missing_metadata_naming_each_gap)
{
    char *out = NULL;
    cr_expect_eq(check("check_no_metadata", NULL, &out), 1);
    expect_line(out, "FAIL", "metadata",
                (const char *const[]){"no version", "no summary",
                                      "'payments.failed'",
                                      "not a canonical type", NULL});
    cr_expect(strstr(out, "1 failed"), "only metadata fails:\n%s", out);
    free(out);
}

Test(plugin_check, fails_a_thread_that_outlives_close)
{
    char *out = NULL;
    cr_expect_eq(check("check_leaky_thread", NULL, &out), 1);
    expect_line(
        out, "FAIL", "lifecycle",
        (const char *const[]){"thread", "still runs after close", NULL});
    free(out);
}

Test(plugin_check, fails_leaked_memory_and_descriptors)
{
    char *out = NULL;
    cr_expect_eq(check("check_leaky_open", NULL, &out), 1);
    expect_line(out, "FAIL", "lifecycle",
                (const char *const[]){"leaks 100 descriptors", "leaks memory",
                                      "over 100 cycles", NULL});
    free(out);
}

Test(plugin_check, fails_a_crash_on_a_malformed_event)
{
    char *out = NULL;
    cr_expect_eq(check("check_crash_malformed", NULL, &out), 1);
    /* the canonical sample is fine; the same type without the field is
     * not, and the checker itself survives to report the rest */
    expect_line(out, "ok", "samples", NULL);
    expect_line(
        out, "FAIL", "malformed",
        (const char *const[]){"'payment.failed'", "missing fields", NULL});
    cr_expect(strstr(out, "FAIL: "), "%s", out);
    free(out);
}

Test(plugin_check, fails_a_crash_on_canonical_samples)
{
    char *out = NULL;
    cr_expect_eq(check("crash_deliver", NULL, &out), 1);
    expect_line(out, "FAIL", "samples",
                (const char *const[]){"delivering the 'contact.upserted' "
                                      "sample",
                                      NULL});
    free(out);
}

Test(plugin_check, fails_an_undeclared_setting_read)
{
    char *out = NULL;
    cr_expect_eq(check("check_undeclared_setting", NULL, &out), 1);
    expect_line(out, "FAIL", "settings-read",
                (const char *const[]){"'api_token'", "does not declare", NULL});
    cr_expect(strstr(out, " 1 failed"), "only settings-read fails:\n%s", out);
    free(out);
}

Test(plugin_check, fails_host_api_calls_from_a_foreign_thread)
{
    char *out = NULL;
    cr_expect_eq(check("check_foreign_thread", NULL, &out), 1);
    expect_line(out, "FAIL", "threads",
                (const char *const[]){"called count", "own threads", NULL});
    cr_expect(strstr(out, " 1 failed"), "only threads fails:\n%s", out);
    free(out);
}

/* The ABI 1.1 entries are wrapped too: event_count from a foreign thread */
Test(plugin_check, fails_event_count_from_a_foreign_thread)
{
    char *out = NULL;
    cr_expect_eq(check("check_foreign_event_count", NULL, &out), 1);
    expect_line(out, "FAIL", "threads",
                (const char *const[]){"called event_count", NULL});
    free(out);
}

Test(plugin_check, fails_a_deliver_past_its_deadline)
{
    char *out = NULL;
    cr_expect_eq(check("check_slow_deliver", NULL, &out), 1);
    expect_line(
        out, "FAIL", "samples",
        (const char *const[]){"within 200 ms", "'ticket.solved'", NULL});
    free(out);
}

Test(plugin_check, fails_a_reject_without_a_reason)
{
    char *out = NULL;
    cr_expect_eq(check("check_bad_result", NULL, &out), 1);
    expect_line(out, "FAIL", "samples",
                (const char *const[]){"reject without a reason", NULL});
    free(out);
}

Test(plugin_check, fails_open_with_its_message_and_skips_the_rest)
{
    char *out = NULL;
    cr_expect_eq(check("fail_open", NULL, &out), 1);
    expect_line(out, "FAIL", "open",
                (const char *const[]){"connection refused", NULL});
    expect_line(out, "skip", "lifecycle", NULL);
    free(out);
}

Test(plugin_check, names_missing_required_settings)
{
    char *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/file.so", PB_PLUGIN_DIR);
    const char *args[] = {"plugin-check", path, NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, args, NULL, &out), 1);
    expect_line(out, "FAIL", "open",
                (const char *const[]){"missing required setting 'path'",
                                      "--settings", NULL});
    free(out);
}

Test(plugin_check, reports_a_bad_settings_file_with_its_line)
{
    char cfg[4200], *out = NULL;
    snprintf(cfg, sizeof cfg, "%s/bad.cfg", s_dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs("settings = { label = \"x\"; };\nextra = 1;\n", f);
    fclose(f);
    cr_expect_eq(check("good", cfg, &out), 2);
    cr_expect(strstr(out, "bad.cfg:2: extra: unknown setting"), "%s", out);
    free(out);
}

Test(plugin_check, answers_usage_errors_and_help)
{
    char *out = NULL;
    const char *none[] = {"plugin-check", NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, none, NULL, &out), 2);
    free(out);
    const char *help[] = {"plugin-check", "--help", NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, help, NULL, &out), 0);
    cr_expect(strstr(out, "usage: plugboard plugin-check PATH.so"), "%s", out);
    /* the usage line lists every option the text below it explains */
    const char *nl = strchr(out, '\n');
    size_t first = nl ? (size_t)(nl - out) : strlen(out);
    cr_expect(memmem(out, first, "[--cycles N]", 12), "%s", out);
    free(out);
}

/* ------------------------------------------------------------------ */
/* Every bundled connector passes                                      */
/* ------------------------------------------------------------------ */

TestSuite(bundled, .init = setup, .fini = teardown, .timeout = 600);

Test(bundled, every_connector_passes_plugin_check)
{
    /* relative paths in the fixtures land in s_dir; templates are the
     * tree's */
    char link[4200];
    snprintf(link, sizeof link, "%s/templates", s_dir);
    cr_assert_eq(symlink(PB_SOURCE_DIR "/etc/templates", link), 0);
    static const char *const env[] = {
        "PLUGBOARD_CHECK_SECRET=plugin-check-not-a-real-secret", NULL};

    DIR *d = opendir(PB_PLUGIN_DIR);
    cr_assert_not_null(d, "no %s", PB_PLUGIN_DIR);
    struct dirent *e;
    size_t checked = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 4 || strcmp(e->d_name + n - 3, ".so") != 0)
            continue;
        char path[4200], cfg[4200];
        snprintf(path, sizeof path, "%s/%s", PB_PLUGIN_DIR, e->d_name);
        snprintf(cfg, sizeof cfg, "%s/%.*s.cfg", FIXTURES, (int)(n - 3),
                 e->d_name);
        bool has_cfg = access(cfg, R_OK) == 0;
        const char *args[] = {"plugin-check", path,
                              has_cfg ? "--settings" : NULL, cfg, NULL};
        char *out = NULL;
        int rc = pb_hostproc_run_cli(s_dir, args, env, &out);
        cr_expect_eq(rc, 0, "bundled connector %s fails plugin-check:\n%s",
                     e->d_name, out);
        cr_expect(strstr(out, "\nPASS: "), "%s", out);
        free(out);
        checked++;
    }
    closedir(d);
    /* every plugins/NAME of the tree was built and checked */
    d = opendir(PB_SOURCE_DIR "/plugins");
    cr_assert_not_null(d);
    size_t sources = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char so[4200];
        snprintf(so, sizeof so, "%s/%s.so", PB_PLUGIN_DIR, e->d_name);
        cr_expect_eq(access(so, R_OK), 0, "plugins/%s was not built: %s",
                     e->d_name, so);
        sources++;
    }
    closedir(d);
    cr_expect_geq(sources, 6, "plugins/ holds %zu connectors", sources);
    cr_expect_eq(checked, sources, "%zu connectors checked, %zu in plugins/",
                 checked, sources);
}

/* ------------------------------------------------------------------ */
/* The samples plugin-check and the harness deliver                    */
/* ------------------------------------------------------------------ */

Test(samples, every_canonical_type_has_its_docs_example)
{
    static const char *const header_types[] = {
        PLUGBOARD_EV_CONTACT_UPSERTED,
        PLUGBOARD_EV_DEAL_STAGE_CHANGED,
        PLUGBOARD_EV_PAYMENT_SUCCEEDED,
        PLUGBOARD_EV_PAYMENT_FAILED,
        PLUGBOARD_EV_PAYMENT_REFUNDED,
        PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
        PLUGBOARD_EV_DISPUTE_OPENED,
        PLUGBOARD_EV_TICKET_CREATED,
        PLUGBOARD_EV_TICKET_UPDATED,
        PLUGBOARD_EV_TICKET_SOLVED,
        PLUGBOARD_EV_EMAIL_DELIVERED,
        PLUGBOARD_EV_EMAIL_BOUNCED,
        PLUGBOARD_EV_EMAIL_COMPLAINED,
        PLUGBOARD_EV_DELIVERY_DEAD,
        PLUGBOARD_EV_CONNECTOR_UNHEALTHY,
        NULL};
    size_t n = 0;
    for (; header_types[n]; n++) {
        const char *type = header_types[n];
        cr_expect(pb_type_is_canonical(type), "%s", type);
        size_t len = 0;
        const char *json = pb_sample_json(type, &len);
        cr_assert_not_null(json, "docs/events.md has no example for %s", type);
        char why[256];
        pb_envelope_t *env = pb_event_from_json(json, len, 1, why, sizeof why);
        cr_assert_not_null(env, "%s example: %s", type, why);
        cr_expect_str_eq(pb_envelope_type(env), type);
        cr_expect_neq(pb_envelope_key(env)[0], '\0', "%s example has a key",
                      type);
        cr_expect_eq(pb_envelope_attempt(env), 1);
        pb_envelope_destroy(&env);
    }
    size_t listed = 0;
    while (pb_canonical_types[listed])
        listed++;
    cr_expect_eq(listed, n, "pb_canonical_types and plugboard.h differ");
}

Test(samples, a_sample_keeps_its_documented_fields)
{
    size_t len = 0;
    const char *json = pb_sample_json(PLUGBOARD_EV_PAYMENT_FAILED, &len);
    char why[256];
    pb_envelope_t *env = pb_event_from_json(json, len, 3, why, sizeof why);
    cr_assert_not_null(env, "%s", why);
    int64_t amount = 0;
    cr_expect(pb_event_int(env, "amount", &amount));
    cr_expect_eq(amount, 2000);
    const char *code = NULL;
    size_t code_len = 0;
    cr_expect(pb_event_string(env, "failure.code", &code, &code_len));
    cr_expect_eq(code_len, strlen("card_declined"));
    cr_expect_str_eq(pb_envelope_key(env), "cus_LOr4Jx1wZ2");
    cr_expect_eq(pb_envelope_time_ms(env), 1648320009000);
    cr_expect_eq(pb_envelope_attempt(env), 3);
    pb_envelope_destroy(&env);
}

Test(samples, unknown_types_have_none)
{
    cr_expect_null(pb_sample_json("payments.failed", NULL));
    cr_expect_null(pb_sample_json("*", NULL));
    cr_expect(!pb_type_is_canonical("payment"));
}

Test(plugin_check, passes_a_plugin_that_reports_refused_credentials)
{
    /* tally calls the ABI 1.1 entry auth_failed (and count) on every
     * delivery while its gate exists: "/" always does */
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/tally.cfg", s_dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs("settings = { auth_gate = \"/\"; count = \"sent=1\"; };\n", f);
    fclose(f);
    char *out = NULL;
    int rc = check("tally", cfg, &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(line_of(out, "ok", "samples"), "%s", out);
    cr_expect(line_of(out, "ok", "threads"), "%s", out);
    free(out);
}

/* A sink may emit from deliver (docs/sdk.md): emits without a webhook is
 * the ordinary case, not worth a warning. */
Test(plugin_check, passes_a_sink_that_emits_from_deliver_without_warning)
{
    char *out = NULL;
    cr_expect_eq(check("relay", NULL, &out), 0, "%s", out);
    cr_expect(line_of(out, "ok", "metadata"), "%s", out);
    cr_expect(!line_of(out, "warn", "metadata"), "%s", out);
    cr_expect(strstr(out, " 0 failed, 2 skipped, 0 warnings"), "%s", out);
    free(out);
}

Test(plugin_check, passes_a_pull_source_whose_run_stops_when_asked)
{
    char *out = NULL;
    cr_expect_eq(check("ticker", NULL, &out), 0, "%s", out);
    cr_expect(line_of(out, "ok", "run"), "%s", out);
    cr_expect(line_of(out, "ok", "metadata"), "%s", out);
    free(out);
}

Test(plugin_check, fails_a_run_that_returns_before_it_is_asked)
{
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/ticker.cfg", s_dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs("settings = { return_after = 1; interval = \"5ms\"; };\n", f);
    fclose(f);
    char *out = NULL;
    cr_expect_eq(check("ticker", cfg, &out), 1, "%s", out);
    expect_line(out, "FAIL", "run",
                (const char *const[]){"returned before the host asked",
                                      NULL});
    free(out);
}

/* Calls the host refuses where they were made are named, not passed
 * over because the plugin coped with the refusal. */
Test(plugin_check, names_emit_from_open_and_flush_outside_run)
{
    static const struct {
        const char *plugin, *settings, *needle;
    } cases[] = {
        {"relay", "settings = { emit_in_open = true; };\n", "emit from open"},
        {"ticker", "settings = { flush_in_open = true; };\n",
         "flush outside run"},
    };
    for (size_t i = 0; i < 2; i++) {
        char cfg[4300];
        snprintf(cfg, sizeof cfg, "%s/misuse%zu.cfg", s_dir, i);
        FILE *f = fopen(cfg, "w");
        cr_assert_not_null(f);
        fputs(cases[i].settings, f);
        fclose(f);
        char *out = NULL;
        cr_expect_eq(check(cases[i].plugin, cfg, &out), 1, "%s", out);
        expect_line(out, "FAIL", "threads",
                    (const char *const[]){cases[i].needle, NULL});
        free(out);
    }
}

Test(plugin_check, fails_a_run_that_ignores_run_wait)
{
    char *out = NULL;
    cr_expect_eq(check("check_stuck_run", NULL, &out), 1, "%s", out);
    expect_line(out, "FAIL", "run",
                (const char *const[]){"did not return within 3000 ms",
                                      "run_wait answered false", NULL});
    free(out);
}

/* A descriptor left half-done: each gap named with what to do, the
 * binding's message not doubled, scaffold TODOs warned about. */
Test(plugin_check, names_a_half_done_descriptor_plainly)
{
    char *out = NULL;
    cr_expect_eq(check("check_sloppy_metadata", NULL, &out), 1);
    expect_line(out, "FAIL", "metadata",
                (const char *const[]){"no name: set .name",
                                      "setting 'timeout': default \"soon\" "
                                      "is invalid: expected",
                                      NULL});
    cr_expect(!strstr(out, "invalid: default:"), "%s", out);
    expect_line(out, "warn", "metadata",
                (const char *const[]){"summary starts with TODO",
                                      "setting 'timeout': help starts with "
                                      "TODO",
                                      NULL});
    free(out);
}
