/*
 * test_retry.c - the backoff policy: capped exponential backoff with full
 * jitter, a connector's retry-after, and when attempts are used up.
 *
 * The random number is a parameter, so every draw here is exact: the
 * delay is r modulo (ceiling + 1), so r = 0 draws 0 and r = c the ceiling
 * c itself.
 */
#include <criterion/criterion.h>

#include <stdint.h>

#include "retry.h"

static const pb_retry_conf_t s_policy = {
    .attempts = 10, .initial_ms = 1000, .max_ms = 15 * 60 * 1000};

/* The r that draws the top of [0, ceiling]. */
static uint64_t
top(int64_t ceiling)
{
    return (uint64_t)ceiling;
}

Test(retry, the_ceiling_doubles_per_failure_up_to_max)
{
    int64_t want = 1000;
    for (int failed = 1; failed <= 30; failed++) {
        int64_t cap = want < s_policy.max_ms ? want : s_policy.max_ms;
        cr_assert_eq(pb_retry_delay_ms(&s_policy, failed, 0, top(cap)), cap,
                     "failure %d: ceiling %lld", failed, (long long)cap);
        /* one past the ceiling wraps to 0: nothing above the ceiling */
        cr_assert_eq(pb_retry_delay_ms(&s_policy, failed, 0, top(cap) + 1), 0);
        if (want < s_policy.max_ms)
            want *= 2;
    }
}

Test(retry, full_jitter_spans_zero_to_the_ceiling)
{
    /* failure 3: ceiling 4000 ms */
    cr_assert_eq(pb_retry_delay_ms(&s_policy, 3, 0, 0), 0);
    cr_assert_eq(pb_retry_delay_ms(&s_policy, 3, 0, 1234), 1234);
    cr_assert_eq(pb_retry_delay_ms(&s_policy, 3, 0, 4000), 4000);
    /* many real draws: every one within [0, 4000], and they spread */
    int64_t lo = INT64_MAX, hi = -1;
    for (int i = 0; i < 10000; i++) {
        int64_t d = pb_retry_delay_ms(&s_policy, 3, 0, pb_retry_random());
        cr_assert(d >= 0 && d <= 4000, "draw %lld", (long long)d);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    cr_assert_lt(lo, 400, "10000 draws never came near 0 (lowest %lld)",
                 (long long)lo);
    cr_assert_gt(hi, 3600,
                 "10000 draws never came near the ceiling "
                 "(highest %lld)",
                 (long long)hi);
}

Test(retry, retry_after_wins_when_it_is_later)
{
    /* failure 1: ceiling 1000 ms */
    cr_assert_eq(pb_retry_delay_ms(&s_policy, 1, 30000, 500), 30000,
                 "a 429's Retry-After: 30 s is honoured");
    cr_assert_eq(pb_retry_delay_ms(&s_policy, 1, 200, 500), 500,
                 "a shorter retry-after does not cut the backoff");
    /* even beyond max: the vendor said when */
    cr_assert_eq(pb_retry_delay_ms(&s_policy, 1, 3600000, 0), 3600000);
}

Test(retry, a_degenerate_policy_still_waits_a_little)
{
    pb_retry_conf_t zero = {.attempts = 1, .initial_ms = 0, .max_ms = 0};
    cr_assert_eq(pb_retry_delay_ms(&zero, 5, 0, 1), 1);
    cr_assert_eq(pb_retry_delay_ms(&zero, 5, 0, 2), 0);
    /* initial above max: max wins */
    pb_retry_conf_t odd = {.attempts = 3, .initial_ms = 5000, .max_ms = 100};
    cr_assert_eq(pb_retry_delay_ms(&odd, 1, 0, 100), 100);
    cr_assert_eq(pb_retry_delay_ms(&odd, 1, 0, 101), 0);
}

Test(retry, attempts_are_used_up_at_the_policy_count)
{
    cr_assert_not(pb_retry_exhausted(&s_policy, 0));
    cr_assert_not(pb_retry_exhausted(&s_policy, 9));
    cr_assert(pb_retry_exhausted(&s_policy, 10));
    cr_assert(pb_retry_exhausted(&s_policy, 11));
    pb_retry_conf_t once = {.attempts = 1, .initial_ms = 10, .max_ms = 10};
    cr_assert(pb_retry_exhausted(&once, 1), "one attempt, no retry");
}
