/*
 * test_sdk_scaffold.c - `plugboard new-connector` (core/scaffold.c): the
 * project it writes from the embedded sdk/templates/, the placeholders it
 * fills, names it refuses, files it never overwrites; and `--help` for
 * every subcommand of the CLI.  (Building the scaffold against an
 * installed SDK is tests/integration/test_sdk_install.c.)
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "harness.h"
#include "hostproc.h"
#include "scaffold.h"

static char *s_dir;
static char s_proj[4200];

static void
setup(void)
{
    s_dir = pb_test_tempdir("pb-scaffold");
    cr_assert_not_null(s_dir);
    snprintf(s_proj, sizeof s_proj, "%s/acme-crm", s_dir);
}

static void
teardown(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
}

static char *
read_in_proj(const char *rel)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", s_proj, rel);
    char *text = pb_test_read_file(path, NULL);
    cr_assert_not_null(text, "no %s", path);
    return text;
}

TestSuite(scaffold, .init = setup, .fini = teardown);

Test(scaffold, writes_a_complete_project)
{
    char err[512];
    cr_assert_eq(pb_scaffold_write("acme-crm", s_proj, NULL, err, sizeof err),
                 0, "%s", err);
    static const char *const files[] = {"CMakeLists.txt",
                                        "acme-crm.c",
                                        "README.md",
                                        "tests/test_acme-crm.c",
                                        ".gitignore",
                                        "plugin-check.cfg",
                                        NULL};
    for (size_t i = 0; files[i]; i++) {
        char *text = read_in_proj(files[i]);
        cr_expect_null(strstr(text, "{{"), "%s keeps a placeholder", files[i]);
        free(text);
    }

    char *src = read_in_proj("acme-crm.c");
    cr_expect(strstr(src, ".name = \"acme-crm\""), "%s", src);
    cr_expect(strstr(src, "docs/sdk.md"), "points to the SDK guide");
    cr_expect(strstr(src, "PLUGBOARD_REJECT"), "deliver stub rejects");
    cr_expect(strstr(src, "respond(response, 501"), "webhook stub: 501");
    cr_expect(strstr(src, "not supported yet"), "says so");
    free(src);

    char *cmake = read_in_proj("CMakeLists.txt");
    cr_expect(strstr(cmake, "find_package(plugboard CONFIG QUIET)"));
    cr_expect(strstr(cmake, "pkg_check_modules(PLUGBOARD_SDK_PC REQUIRED"));
    cr_expect(strstr(cmake, "add_library(acme-crm MODULE acme-crm.c)"));
    free(cmake);

    /* a C identifier where one is needed: the Criterion suite name */
    char *test = read_in_proj("tests/test_acme-crm.c");
    cr_expect(strstr(test, "Test(acme_crm, answers_the_canonical_sample)"),
              "%s", test);
    cr_expect(strstr(test, "plugboard/harness.h"));
    free(test);
}

Test(scaffold, never_overwrites_a_file)
{
    char err[512];
    cr_assert_eq(mkdir(s_proj, 0755), 0);
    char readme[4400];
    snprintf(readme, sizeof readme, "%s/README.md", s_proj);
    FILE *f = fopen(readme, "w");
    fputs("mine\n", f);
    fclose(f);

    cr_expect_eq(pb_scaffold_write("acme-crm", s_proj, NULL, err, sizeof err),
                 PB_EEXIST);
    cr_expect(strstr(err, "refusing to overwrite"), "%s", err);
    cr_expect(strstr(err, "README.md"), "%s", err);
    char *text = read_in_proj("README.md");
    cr_expect_str_eq(text, "mine\n");
    free(text);
    /* all or nothing: no other file was written */
    char src[4400];
    snprintf(src, sizeof src, "%s/acme-crm.c", s_proj);
    cr_expect_neq(access(src, F_OK), 0);
}

Test(scaffold, refuses_names_that_are_not_plugin_names)
{
    char err[512];
    static const char *const bad[] = {"",    "Acme", "9lives", "a b",
                                      "a/b", "-x",   "x.y",    NULL};
    for (size_t i = 0; bad[i]; i++) {
        cr_expect_eq(pb_scaffold_write(bad[i], s_proj, NULL, err, sizeof err),
                     PB_EINVAL, "'%s' accepted", bad[i]);
        cr_expect(strstr(err, "invalid connector name"), "%s", err);
    }
    cr_expect_neq(access(s_proj, F_OK), 0, "nothing created");
}

Test(scaffold, the_command_writes_and_then_refuses)
{
    char *out = NULL;
    const char *args[] = {"new-connector", "acme-crm", s_proj, NULL};
    cr_expect_eq(pb_hostproc_run_cli(s_dir, args, NULL, &out), 0, "%s", out);
    cr_expect(strstr(out, "created "), "%s", out);
    /* the next step names the settings the connector is checked with, as
     * its ctest does: without them a required setting fails `open` */
    char next[8600];
    snprintf(next, sizeof next,
             "plugboard plugin-check %s/build/acme-crm.so --settings "
             "%s/plugin-check.cfg\n",
             s_proj, s_proj);
    cr_expect(strstr(out, next), "says what next:\n%s", out);
    free(out);
    cr_expect_eq(pb_hostproc_run_cli(s_dir, args, NULL, &out), 1, "%s", out);
    cr_expect(strstr(out, "error: refusing to overwrite"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------------ */
/* Every subcommand answers --help                                     */
/* ------------------------------------------------------------------ */

Test(cli, every_command_answers_help)
{
    char *dir = pb_test_tempdir("pb-help");
    static const char *const commands[] = {
        "run",     "check", "describe",      "dlq",          "ctl",
        "version", "help",  "new-connector", "plugin-check", NULL};
    for (size_t i = 0; commands[i]; i++) {
        char *out = NULL;
        const char *args[] = {commands[i], "--help", NULL};
        int rc = pb_hostproc_run_cli(dir, args, NULL, &out);
        cr_expect_eq(rc, 0, "%s --help: exit %d\n%s", commands[i], rc, out);
        cr_expect(strstr(out, "usage:") || strstr(out, "Usage:"),
                  "%s --help:\n%s", commands[i], out);
        free(out);
        const char *via_help[] = {"help", commands[i], NULL};
        rc = pb_hostproc_run_cli(dir, via_help, NULL, &out);
        cr_expect_eq(rc, 0, "help %s: exit %d\n%s", commands[i], rc, out);
        free(out);
    }
    char *out = NULL;
    const char *list[] = {"help", NULL};
    cr_expect_eq(pb_hostproc_run_cli(dir, list, NULL, &out), 0);
    cr_expect(strstr(out, "new-connector"), "%s", out);
    cr_expect(strstr(out, "plugin-check"), "%s", out);
    free(out);
    pb_test_rmtree(dir);
    free(dir);
}
