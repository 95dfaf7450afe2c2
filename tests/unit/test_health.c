/*
 * test_health.c - when an owner hears that a destination is unhealthy:
 * at once, then at most once per interval while it lasts, never once per
 * observation; each (route, destination, cause) on its own clock.  The
 * clock is driven by the test.
 */
#include <criterion/criterion.h>

#include <string.h>

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

/* ------------------------------------------------------------------ */
/* Refused credentials: what api->auth_failed leaves behind            */
/* ------------------------------------------------------------------ */

Test(auth, a_refusal_is_remembered_until_a_later_success)
{
    pb_auth_t a;
    pb_auth_init(&a);
    pb_auth_info_t info;
    pb_auth_get(&a, &info);
    cr_expect_not(info.refused);
    cr_expect_not(pb_auth_succeeded(&a, pb_auth_mark(&a)), "nothing to clear");

    uint64_t mark = pb_auth_mark(&a);
    cr_expect(pb_auth_refused(&a, "HTTP 401: token expired", 1000),
              "an episode begins");
    cr_expect_not(pb_auth_refused(&a, "HTTP 403: scope missing", 2000),
                  "the same episode goes on");
    pb_auth_get(&a, &info);
    cr_expect(info.refused);
    cr_expect_eq(info.since_ms, 1000);
    cr_expect_eq(info.last_ms, 2000);
    cr_expect_eq(info.refusals, 2);
    cr_expect_str_eq(info.reason, "HTTP 403: scope missing", "the latest");

    /* a call that began before the refusal proves nothing */
    cr_expect_not(pb_auth_succeeded(&a, mark));
    pb_auth_get(&a, &info);
    cr_expect(info.refused);
    /* one that began after it does */
    cr_expect(pb_auth_succeeded(&a, pb_auth_mark(&a)));
    pb_auth_get(&a, &info);
    cr_expect_not(info.refused);
    cr_expect_str_eq(info.reason, "");
    cr_expect_eq(info.refusals, 0);

    /* and a new refusal is a new episode */
    cr_expect(pb_auth_refused(&a, "SMTP 535", 5000));
    pb_auth_get(&a, &info);
    cr_expect_eq(info.since_ms, 5000);
    cr_expect_eq(info.refusals, 1);
    pb_auth_release(&a);
}

Test(auth, the_reason_is_bounded_text)
{
    pb_auth_t a;
    pb_auth_init(&a);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    pb_auth_refused(&a, big, 1);
    pb_auth_info_t info;
    pb_auth_get(&a, &info);
    cr_expect_eq(strlen(info.reason), sizeof info.reason - 1);
    /* control characters and bytes that are not UTF-8 do not survive:
     * the reason goes into JSON and e-mail */
    pb_auth_refused(&a, "bad\r\ntoken\x01 \xff caf\xc3\xa9", 2);
    pb_auth_get(&a, &info);
    cr_expect_str_eq(info.reason, "bad  token  ? caf\xc3\xa9");
    pb_auth_refused(&a, NULL, 3);
    pb_auth_get(&a, &info);
    cr_expect_str_eq(info.reason, "credentials refused");
    pb_auth_release(&a);
}
