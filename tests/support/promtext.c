/*
 * promtext.c - the test reader of Prometheus text (promtext.h).
 */
#define _GNU_SOURCE
#include "promtext.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* A small reader of the text format                                   */
/* ------------------------------------------------------------------ */

/* Family a sample belongs to: the name without a histogram suffix when
 * that family is a histogram. */
static bool
s_in_family(const char *sample, const char *family, const char *type)
{
    size_t n = strlen(family);
    if (strncmp(sample, family, n) != 0)
        return false;
    const char *rest = sample + n;
    if (*rest == '\0')
        return strcmp(type, "histogram") != 0;
    return strcmp(type, "histogram") == 0 &&
           (strcmp(rest, "_bucket") == 0 || strcmp(rest, "_sum") == 0 ||
            strcmp(rest, "_count") == 0);
}

/* The label set of a sample line without the le="..." pair, for matching
 * a histogram's buckets with its _count. */
static void
s_series_key(const char *line, char *out, size_t len)
{
    const char *open = strchr(line, '{');
    const char *space = strchr(line, ' ');
    out[0] = '\0';
    if (!open || (space && space < open))
        return;
    const char *close = strstr(open, "} ");
    if (!close)
        return;
    size_t o = 0;
    const char *p = open;
    while (p <= close && o + 1 < len) {
        size_t skip = strncmp(p, "le=\"", 4) == 0    ? 4
                      : strncmp(p, ",le=\"", 5) == 0 ? 5
                                                     : 0;
        if (skip) {
            p = strchr(p + skip, '"') + 1;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
    if (strcmp(out, "{}") == 0) /* only le: no labels */
        out[0] = '\0';
}

static double
s_value(const char *line)
{
    const char *sp = strrchr(line, ' ');
    return sp ? strtod(sp + 1, NULL) : -1;
}

/* Check the whole text; returns the number of histogram series seen. */
int
pb_prom_check(const char *text)
{
    char *copy = strdup(text);
    char families[256][128];
    size_t nfam = 0;
    char family[128] = "", type[32] = "";
    char key[1024], last_key[1024] = "";
    double last_bucket = -1, inf = -1;
    int histos = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            cr_assert_eq(sscanf(line + 7, "%127s %31s", family, type), 2);
            for (size_t i = 0; i < nfam; i++)
                cr_assert_str_neq(families[i], family,
                                  "family %s appears twice", family);
            cr_assert_lt(nfam, 256);
            snprintf(families[nfam++], sizeof families[0], "%s", family);
            snprintf(last_key, sizeof last_key, "(new family)");
            continue;
        }
        cr_assert_neq(line[0], '#', "unexpected comment: %s", line);
        char name[128];
        size_t nl = strcspn(line, "{ ");
        cr_assert_lt(nl, sizeof name);
        memcpy(name, line, nl);
        name[nl] = '\0';
        cr_assert(s_in_family(name, family, type),
                  "sample %s outside its family %s", name, family);
        if (strcmp(type, "histogram") != 0)
            continue;
        s_series_key(line, key, sizeof key);
        double v = s_value(line);
        size_t fl = strlen(family);
        if (strcmp(name + fl, "_bucket") == 0) {
            if (strcmp(key, last_key) != 0) {
                snprintf(last_key, sizeof last_key, "%s", key);
                last_bucket = -1;
                inf = -1;
            }
            cr_assert_geq(v, last_bucket, "buckets decrease: %s", line);
            last_bucket = v;
            if (strstr(line, "le=\"+Inf\""))
                inf = v;
        } else if (strcmp(name + fl, "_count") == 0) {
            cr_assert_str_eq(key, last_key, "_count without buckets: %s", line);
            cr_assert_geq(inf, 0, "no +Inf bucket before %s", line);
            cr_assert_eq(v, inf, "+Inf bucket %g != _count %g for %s%s", inf, v,
                         family, key);
            histos++;
        }
    }
    free(copy);
    return histos;
}

int
pb_test_tool(const char *const *argv, const char *in_path, char **out)
{
    char log[] = "/tmp/pb-tool-XXXXXX";
    int lfd = mkstemp(log);
    cr_assert_geq(lfd, 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int in = open(in_path ? in_path : "/dev/null", O_RDONLY);
        if (in < 0)
            _exit(126);
        dup2(in, STDIN_FILENO);
        dup2(lfd, STDOUT_FILENO);
        dup2(lfd, STDERR_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(lfd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    FILE *f = fopen(log, "r");
    char *text = calloc(1, 65536);
    if (f && text)
        text[fread(text, 1, 65535, f)] = '\0';
    if (f)
        fclose(f);
    unlink(log);
    if (out)
        *out = text;
    else
        free(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void
pb_prom_promtool(const char *text)
{
    char path[] = "/tmp/pb-metrics-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    const char *argv[] = {"promtool", "check", "metrics", NULL};
    char *out = NULL;
    int rc = pb_test_tool(argv, path, &out);
    unlink(path);
    cr_assert_neq(rc, 127,
                  "promtool is not installed: install the Debian package "
                  "'prometheus' (make test-deps does)");
    cr_assert_eq(rc, 0, "promtool refused the text (exit %d):\n%s", rc, out);
    free(out);
}

double
pb_prom_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}
