/*
 * promtext.h - read Prometheus text exposition in tests: check it the way
 * a scraper would, look up one sample, and run `promtool check metrics`
 * on it; run a tool such as Graphviz's dot without a shell.
 */
#ifndef PB_PROMTEXT_H
#define PB_PROMTEXT_H

#include <stdbool.h>

/*
 * Assert (Criterion) that text is well formed: each family's # TYPE once
 * and before its samples, samples inside their family, every histogram
 * series' buckets non-decreasing and its +Inf bucket equal to its _count.
 * Returns the number of histogram series.
 */
int pb_prom_check(const char *text);

/* The value of the sample written exactly as series ("name{labels}" or
 * "name"); -1 when absent. */
double pb_prom_value(const char *text, const char *series);

/* `promtool check metrics` on text.  Fails the test with promtool's message
 * when it refuses the text, and when promtool is not installed (Debian
 * package 'prometheus', which `make test` installs). */
void pb_prom_promtool(const char *text);

/* Run argv[0] (looked up in PATH, no shell) with stdin from in_path (NULL:
 * /dev/null); its stdout and stderr, up to 64 KiB, in *out (caller frees;
 * out may be NULL).  Returns its exit status, 127 when it cannot be run,
 * -1 when it died of a signal. */
int pb_test_tool(const char *const *argv, const char *in_path, char **out);

#endif /* PB_PROMTEXT_H */
