/*
 * health.h - when to tell a route's owner that a destination is
 * unhealthy: the once-per-interval bookkeeping behind the host's
 * plugboard.connector.unhealthy notices.
 *
 * The runtime looks at every (route, destination, cause) once a second
 * (a crash-looping worker, a backlog older than the route's alert_after)
 * and asks pb_health_due whether a notice goes out now.  One goes out when
 * the pair is unhealthy and none of that cause went out for it within the
 * route's interval: so an owner hears of a problem at once, again every
 * interval while it lasts, and never once per event.  Recovering and
 * failing again within the interval sends nothing new.  The clock is the
 * caller's (monotonic ms), so tests drive it.  Single-threaded: the host's
 * main thread.
 */
#ifndef PB_HEALTH_H
#define PB_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

typedef struct pb_health pb_health_t;

/* NULL when out of memory.  Destroy nulls the pointer; idempotent. */
pb_health_t *pb_health_new(void);
void pb_health_destroy(pb_health_t **h);

/*
 * Record what was seen of (route, destination, cause) at now_ms and say
 * whether a notice is due: unhealthy, and no notice of it was sent (see
 * pb_health_sent) within interval_ms.  *since_ms (may be NULL) gets when
 * this unhealthy episode began.  A healthy observation ends the episode
 * but keeps the time of the last notice.  Names are copied.
 */
bool pb_health_due(pb_health_t *h, const char *route, const char *dest,
                   const char *cause, bool unhealthy, int64_t interval_ms,
                   int64_t now_ms, int64_t *since_ms);

/* The notice pb_health_due asked for was journaled at now_ms. */
void pb_health_sent(pb_health_t *h, const char *route, const char *dest,
                    const char *cause, int64_t now_ms);

#endif /* PB_HEALTH_H */
