/*
 * retry.c - capped exponential backoff with full jitter.
 */
#include "retry.h"

#include <sys/random.h>

int64_t
pb_retry_delay_ms(const pb_retry_conf_t *policy, int failed,
                  int64_t retry_after_ms, uint64_t r)
{
    int64_t cap = policy->max_ms > 0 ? policy->max_ms : 1;
    int64_t ceiling = policy->initial_ms > 0 ? policy->initial_ms : 1;
    for (int i = 1; i < failed && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    int64_t delay = (int64_t)(r % (uint64_t)(ceiling + 1));
    if (retry_after_ms > delay)
        delay = retry_after_ms;
    return delay;
}

bool
pb_retry_exhausted(const pb_retry_conf_t *policy, int attempts)
{
    return attempts >= policy->attempts;
}

uint64_t
pb_retry_random(void)
{
    static __thread uint64_t s_state;
    if (s_state == 0) {
        if (getrandom(&s_state, sizeof s_state, 0) != sizeof s_state ||
            s_state == 0)
            s_state = 0x9e3779b97f4a7c15ull;
    }
    /* xorshift64* */
    s_state ^= s_state >> 12;
    s_state ^= s_state << 25;
    s_state ^= s_state >> 27;
    return s_state * 0x2545f4914f6cdd1dull;
}
