/*
 * test_health.c - when an owner hears that a destination is unhealthy:
 * at once, then at most once per interval while it lasts, never once per
 * observation; each (route, destination, cause) on its own clock.  The
 * clock is driven by the test.
 */
#include <criterion/criterion.h>

#include "health.h"

#define HOUR (60 * 60 * 1000)

Test(health, notifies_at_once_then_once_per_interval)
{
    pb_health_t *h = pb_health_new();
    cr_assert_not_null(h);
    int64_t since = -1;
    cr_expect_not(
        pb_health_due(h, "r", "crm", "crash_loop", false, HOUR, 0, &since),
        "healthy: nothing to say");
    cr_assert(
        pb_health_due(h, "r", "crm", "crash_loop", true, HOUR, 1000, &since));
    cr_expect_eq(since, 1000);
    pb_health_sent(h, "r", "crm", "crash_loop", 1000);
    /* every observation within the hour: silent */
    int due = 0;
    for (int64_t t = 2000; t < 1000 + HOUR; t += 1000)
        due += pb_health_due(h, "r", "crm", "crash_loop", true, HOUR, t, NULL);
    cr_expect_eq(due, 0, "%d notices within one interval", due);
    /* the hour is up and it still fails: once more, same episode */
    cr_expect(pb_health_due(h, "r", "crm", "crash_loop", true, HOUR,
                            1000 + HOUR, &since));
    cr_expect_eq(since, 1000);
    pb_health_destroy(&h);
    cr_expect_null(h);
    pb_health_destroy(&h);
}

Test(health, flapping_within_the_interval_stays_silent)
{
    pb_health_t *h = pb_health_new();
    cr_assert(pb_health_due(h, "r", "crm", "backlog", true, HOUR, 0, NULL));
    pb_health_sent(h, "r", "crm", "backlog", 0);
    cr_expect_not(
        pb_health_due(h, "r", "crm", "backlog", false, HOUR, 5000, NULL));
    int64_t since = -1;
    cr_expect_not(
        pb_health_due(h, "r", "crm", "backlog", true, HOUR, 9000, &since),
        "recovered and failed again: still within the interval");
    cr_expect_eq(since, 9000, "a new episode began");
    pb_health_destroy(&h);
}

Test(health, a_notice_not_sent_is_asked_for_again)
{
    pb_health_t *h = pb_health_new();
    cr_assert(pb_health_due(h, "r", "crm", "crash_loop", true, HOUR, 0, NULL));
    /* the router could not journal it: no pb_health_sent */
    cr_expect(
        pb_health_due(h, "r", "crm", "crash_loop", true, HOUR, 1000, NULL));
    pb_health_destroy(&h);
}

Test(health, each_destination_and_cause_has_its_own_clock)
{
    pb_health_t *h = pb_health_new();
    cr_assert(pb_health_due(h, "r", "crm", "crash_loop", true, HOUR, 0, NULL));
    pb_health_sent(h, "r", "crm", "crash_loop", 0);
    cr_expect(pb_health_due(h, "r", "crm", "backlog", true, HOUR, 10, NULL));
    cr_expect(
        pb_health_due(h, "r", "mail", "crash_loop", true, HOUR, 10, NULL));
    cr_expect(
        pb_health_due(h, "other", "crm", "crash_loop", true, HOUR, 10, NULL));
    cr_expect_not(
        pb_health_due(h, "r", "crm", "crash_loop", true, HOUR, 10, NULL));
    pb_health_destroy(&h);
}
