/*
 * promtext.h - read Prometheus text exposition in tests: check it the way
 * a scraper would, look up one sample, and run `promtool check metrics`
 * on it when promtool is installed.
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

/* `promtool check metrics` on text: true when it passed; false, with a
 * warning that names the missing Debian package, when promtool is not
 * installed.  A refusal fails the test with promtool's message. */
bool pb_prom_promtool(const char *text);

#endif /* PB_PROMTEXT_H */
