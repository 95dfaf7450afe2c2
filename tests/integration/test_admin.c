/*
 * test_admin.c - what an operator sees: the command line's help, check
 * and describe output, the ctl commands' answers and errors against a
 * running host, and the bytes of the host's HTTP answers on a raw socket.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"

static char *s_dir;

static void
setup_dir(void)
{
    s_dir = pb_test_tempdir("pb-admin");
    cr_assert_not_null(s_dir);
}

static void
teardown_dir(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
}

/* Write text to s_dir/name; the path in out. */
static void
write_file(const char *name, const char *text, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s/%s", s_dir, name);
    FILE *f = fopen(out, "w");
    cr_assert_not_null(f, "%s", out);
    fputs(text, f);
    fclose(f);
}

/* `plugboard ARGS...` in s_dir: the exit status, the output in *out. */
static int
cli(const char *const *args, char **out)
{
    return pb_hostproc_run_cli(s_dir, args, NULL, out);
}

/* The line of text that contains needle, copied into line. */
static bool
line_with(const char *text, const char *needle, char *line, size_t len)
{
    const char *p = strstr(text, needle);
    if (!p)
        return false;
    const char *start = p;
    while (start > text && start[-1] != '\n')
        start--;
    const char *end = strchr(p, '\n');
    size_t n = end ? (size_t)(end - start) : strlen(start);
    if (n >= len)
        n = len - 1;
    memcpy(line, start, n);
    line[n] = '\0';
    return true;
}

TestSuite(admin_cli, .init = setup_dir, .fini = teardown_dir, .timeout = 60);

Test(admin_cli, help_lists_every_ctl_command)
{
    char *out = NULL;
    const char *args[] = {"--help", NULL};
    cr_assert_eq(cli(args, &out), 0, "%s", out);
    char line[512];
    cr_assert(line_with(out, "  ctl ", line, sizeof line), "%s", out);
    static const char *const subs[] = {"status", "top", "constraint", "dlq",
                                       "reload", "upgrade", NULL};
    for (size_t i = 0; subs[i]; i++)
        cr_expect(strstr(line, subs[i]), "'%s' not in '%s'", subs[i], line);
    free(out);
}

Test(admin_cli, describe_shows_durations_as_durations_in_aligned_columns)
{
    char *out = NULL;
    const char *args[] = {"describe", "-p", PB_PLUGIN_DIR, "stripe", NULL};
    cr_assert_eq(cli(args, &out), 0, "%s", out);
    char line[512];
    /* tolerance is a duration of 1s..1h: the unit errors use too */
    cr_assert(line_with(out, "  tolerance ", line, sizeof line), "%s", out);
    cr_expect(strstr(line, "range [1s, 1h]"), "%s", line);
    cr_expect(!strstr(out, "3600000"), "%s", out);
    /* every setting's type starts in the same column, the longest name's
     * too */
    const char *lines[] = {"  signing_secret_previous ", "  tolerance ",
                           "  signing_secret "};
    long col = -1;
    for (size_t i = 0; i < 3; i++) {
        cr_assert(line_with(out, lines[i], line, sizeof line), "%s", out);
        const char *type = strstr(line, " string ");
        if (!type)
            type = strstr(line, " duration ");
        cr_assert_not_null(type, "%s", line);
        long at = (long)(type - line);
        if (col < 0)
            col = at;
        cr_expect_eq(at, col, "type column of '%s':\n%s", line, out);
    }
    free(out);
}

Test(admin_cli, check_warns_that_an_empty_config_routes_nothing)
{
    char path[4200];
    write_file("empty.cfg", "", path, sizeof path);
    char *out = NULL;
    const char *args[] = {"check", "-c", path, NULL};
    cr_expect_eq(cli(args, &out), 0, "%s", out);
    cr_expect(strstr(out, "warning: ") && strstr(out, "routes nothing"),
              "%s", out);
    free(out);
    write_file("only.cfg", "plugboard = { log_level = \"info\"; };\n", path,
               sizeof path);
    cr_expect_eq(cli(args, &out), 0, "%s", out);
    cr_expect(strstr(out, "routes nothing"), "%s", out);
    free(out);
}
