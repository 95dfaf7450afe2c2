/*
 * test_connector_docs.c - each real connector's README says what
 * `plugboard describe <name>` prints from its descriptor: the same
 * settings (no more, no fewer), their defaults, secrets marked as such,
 * and every event type it consumes and emits.  A setting added to a
 * descriptor without a README row, or a README row left behind after a
 * setting was renamed, fails here.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "hostproc.h"

#define S_MAX 64

typedef struct s_setting {
    char name[64];
    char kind[16];
    char dflt[160]; /* "" when none */
    bool secret;
} s_setting_t;

typedef struct s_described {
    s_setting_t settings[S_MAX];
    size_t n;
    char consumes[1024];
    char emits[1024];
} s_described_t;

/* Run `plugboard describe name` and parse its settings and event lists. */
static void
s_describe(const char *name, s_described_t *d)
{
    const char *args[] = {"describe", name, "-p", PB_PLUGIN_DIR, NULL};
    char *dir = pb_test_tempdir("pb-docs");
    char *out = NULL;

    cr_assert_not_null(dir);
    cr_assert_eq(pb_hostproc_run_cli(dir, args, NULL, &out), 0, "%s", out);
    pb_test_rmtree(dir);
    free(dir);
    memset(d, 0, sizeof *d);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char nm[64], kind[16];
        if (strncmp(line, "consumes: ", 10) == 0) {
            snprintf(d->consumes, sizeof d->consumes, "%s", line + 10);
        } else if (strncmp(line, "emits: ", 7) == 0) {
            snprintf(d->emits, sizeof d->emits, "%s", line + 7);
        } else if (line[0] == ' ' && line[1] == ' ' && line[2] != ' ' &&
                   sscanf(line, " %63s %15s", nm, kind) == 2 &&
                   (strcmp(kind, "string") == 0 ||
                    strcmp(kind, "integer") == 0 || strcmp(kind, "bool") == 0 ||
                    strcmp(kind, "duration") == 0)) {
            cr_assert_lt(d->n, S_MAX);
            s_setting_t *s = &d->settings[d->n++];
            snprintf(s->name, sizeof s->name, "%s", nm);
            snprintf(s->kind, sizeof s->kind, "%s", kind);
            s->secret = strstr(line, "secret (env:") != NULL;
            const char *df = strstr(line, "default ");
            if (df) {
                df += 8;
                size_t k = strcspn(df, ",");
                /* a list default ("a, b") runs to ", range" or the end */
                const char *range = strstr(df, ", range");
                const char *sec = strstr(df, ", secret");
                const char *end = range ? range : sec ? sec : df + strlen(df);
                if (strchr(df, ',') && end > df + k)
                    k = (size_t)(end - df);
                snprintf(s->dflt, sizeof s->dflt, "%.*s", (int)k, df);
            }
        }
    }
    free(out);
}

/* The text of the README's "## Settings" section (malloc'd). */
static char *
s_settings_section(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/plugins/%s/README.md", PB_SOURCE_DIR, name);
    char *text = pb_test_read_file(path, NULL);
    cr_assert_not_null(text, "%s", path);
    char *start = strstr(text, "\n## Settings\n");
    cr_assert_not_null(start, "%s has no '## Settings'", path);
    start += 1;
    char *end = strstr(start + 3, "\n## ");
    char *out = strndup(start, end ? (size_t)(end - start) : strlen(start));
    free(text);
    return out;
}

/* The settings table row whose first cell names setting (copy, or NULL). */
static char *
s_row(const char *section, const char *setting)
{
    char want[80];
    snprintf(want, sizeof want, "`%s`", setting);
    for (const char *p = section; (p = strstr(p, "\n|")); p++) {
        const char *row = p + 1;
        const char *cell_end = strchr(row + 1, '|');
        const char *line_end = strchr(row, '\n');
        if (!cell_end || (line_end && cell_end > line_end))
            continue;
        char *first = strndup(row, (size_t)(cell_end - row));
        bool hit = strstr(first, want) != NULL;
        free(first);
        if (hit)
            return strndup(row,
                           line_end ? (size_t)(line_end - row) : strlen(row));
    }
    return NULL;
}

/* s without backticks and spaces, lower case (malloc'd). */
static char *
s_squash(const char *s)
{
    char *out = malloc(strlen(s) + 1), *o = out;
    for (; *s; s++)
        if (*s != '`' && !isspace((unsigned char)*s))
            *o++ = (char)tolower((unsigned char)*s);
    *o = '\0';
    return out;
}

static void
s_check(const char *name)
{
    s_described_t d;
    s_describe(name, &d);
    cr_assert_gt(d.n, 0, "describe %s printed no settings", name);
    char *section = s_settings_section(name);

    /* every described setting has its row, with its default and secrecy */
    for (size_t i = 0; i < d.n; i++) {
        const s_setting_t *s = &d.settings[i];
        char *row = s_row(section, s->name);
        cr_expect_not_null(row, "%s README: no row for setting '%s'", name,
                           s->name);
        if (!row)
            continue;
        if (s->dflt[0]) {
            char *r = s_squash(row), *v = s_squash(s->dflt);
            cr_expect(strstr(r, v) != NULL,
                      "%s README: '%s' default '%s' not in: %s", name, s->name,
                      s->dflt, row);
            free(r);
            free(v);
        }
        if (s->secret)
            cr_expect(strstr(row, "secret") != NULL,
                      "%s README: '%s' is a secret: %s", name, s->name, row);
        free(row);
    }
    /* every name in the table's first column is a described setting */
    for (const char *p = section; (p = strstr(p, "\n| `")); p++) {
        const char *cell_end = strchr(p + 2, '|');
        for (const char *q = p + 2; q && q < cell_end;) {
            q = strchr(q, '`');
            if (!q || q >= cell_end)
                break;
            const char *e = strchr(q + 1, '`');
            cr_assert_not_null(e);
            bool known = false;
            for (size_t i = 0; i < d.n && !known; i++)
                known = strlen(d.settings[i].name) == (size_t)(e - q - 1) &&
                        strncmp(d.settings[i].name, q + 1,
                                (size_t)(e - q - 1)) == 0;
            cr_expect(known,
                      "%s README documents '%.*s', which describe "
                      "does not print",
                      name, (int)(e - q - 1), q + 1);
            q = e + 1;
        }
    }
    free(section);

    /* every consumed and emitted type is named in the README */
    char path[4200];
    snprintf(path, sizeof path, "%s/plugins/%s/README.md", PB_SOURCE_DIR, name);
    char *readme = pb_test_read_file(path, NULL);
    char lists[2100];
    snprintf(lists, sizeof lists, "%s %s", d.consumes, d.emits);
    for (char *t = strtok(lists, " "); t; t = strtok(NULL, " ")) {
        char want[80];
        snprintf(want, sizeof want, "`%s`", t);
        cr_expect(strstr(readme, want) != NULL,
                  "%s README never names event type %s", name, t);
    }
    free(readme);
}

Test(connector_docs, hubspot_readme_matches_describe)
{
    s_check("hubspot");
}
Test(connector_docs, smtp_readme_matches_describe)
{
    s_check("smtp");
}
Test(connector_docs, zendesk_readme_matches_describe)
{
    s_check("zendesk");
}
Test(connector_docs, stripe_readme_matches_describe)
{
    s_check("stripe");
}
