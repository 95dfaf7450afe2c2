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
 *
 * pb_auth_t, below, is the other half: what one connector instance was
 * last told about its credentials (api->auth_failed), the evidence behind
 * cause "auth".  Unlike pb_health_t it is thread-safe.
 */
#ifndef PB_HEALTH_H
#define PB_HEALTH_H

#include <pthread.h>
#include <stdatomic.h>
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

/* ------------------------------------------------------------------ */
/* Refused credentials                                                 */
/* ------------------------------------------------------------------ */

#define PB_AUTH_REASON_MAX 256

/*
 * One connector instance's record of refused credentials, embedded in
 * the instance (_init / _release).  Refusals come from deliver or webhook
 * calls on any of its threads (or from its worker process, through the
 * actor); successes from every delivery; reads from the main thread.  A
 * refusal starts an episode that lasts until a delivery that began after
 * the latest refusal succeeds: pb_auth_mark before the call,
 * pb_auth_succeeded after it, so a success that raced a refusal clears
 * nothing.  While nothing is refused a success costs one atomic load.
 */
typedef struct pb_auth {
    pthread_mutex_t lock;
    _Atomic uint64_t refusals; /* ever: the marks */
    atomic_bool refused;       /* an episode is on */
    /* under lock */
    int64_t since_ms, last_ms; /* wall clock */
    uint64_t episode;          /* refusals in this episode */
    char reason[PB_AUTH_REASON_MAX];
} pb_auth_t;

typedef struct pb_auth_info {
    bool refused;
    int64_t since_ms;  /* first refusal of the episode, wall clock */
    int64_t last_ms;   /* latest */
    uint64_t refusals; /* in the episode */
    char reason[PB_AUTH_REASON_MAX]; /* the latest; "" when not refused */
} pb_auth_info_t;

void pb_auth_init(pb_auth_t *a);
void pb_auth_release(pb_auth_t *a);

/*
 * The vendor refused the credentials at now_ms (wall clock).  reason is
 * copied, cut to PB_AUTH_REASON_MAX - 1 bytes, control characters made
 * spaces and bytes that are not UTF-8 made '?' (it goes into JSON and
 * mail); NULL or "" reads "credentials refused".  Returns true when this
 * began an episode.
 */
bool pb_auth_refused(pb_auth_t *a, const char *reason, int64_t now_ms);

/* Before a delivery: what to hand pb_auth_succeeded after it. */
uint64_t pb_auth_mark(pb_auth_t *a);

/* The delivery that took mark succeeded: the episode ends unless a
 * refusal came after mark.  Returns true when it ended one. */
bool pb_auth_succeeded(pb_auth_t *a, uint64_t mark);

/* A consistent copy of the record. */
void pb_auth_get(pb_auth_t *a, pb_auth_info_t *out);

#endif /* PB_HEALTH_H */
