/*
 * retry.h - when to try a failed delivery again.
 *
 * Capped exponential backoff with full jitter: attempt n (1-based, the
 * attempt that just failed) waits a uniformly random time in
 * [0, min(max, initial * 2^(n-1))].  A connector's retry-after (e.g. from
 * a 429 Retry-After header) overrides the backoff when it is later.
 */
#ifndef PB_RETRY_H
#define PB_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* Delay before the next attempt after attempt `failed` failed.  r is a
 * uniformly random 64-bit number (tests pass fixed ones). */
int64_t pb_retry_delay_ms(const pb_retry_conf_t *policy, int failed,
                          int64_t retry_after_ms, uint64_t r);

/* Has a delivery used up its attempts? */
bool pb_retry_exhausted(const pb_retry_conf_t *policy, int attempts);

/* A random 64-bit number for jitter (not for secrets). */
uint64_t pb_retry_random(void);

#endif /* PB_RETRY_H */
