/*
 * traffic.h - steady webhook traffic against a running host, for the
 * reload, upgrade and isolation tests, and the "stamp" test sink's record
 * files read back.
 *
 * A traffic generator posts events of the "good" test source, one at a
 * time on one keep-alive connection, from its own thread:
 *   {"type":"payment.failed","key":"<prefix><n>@example.com",
 *    "dedupe":"<prefix><n>"}
 * A 200 marks n acknowledged.  A 503 must carry Retry-After (else it is
 * counted as a bad answer) and the same n is posted again, as a vendor
 * would; any other answer is a bad answer.
 */
#ifndef PB_TRAFFIC_H
#define PB_TRAFFIC_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pb_traffic pb_traffic_t;

/* Start posting to http://127.0.0.1:port/hooks/<connector>, pausing
 * pause_ms between requests.  NULL when the thread cannot start. */
pb_traffic_t *pb_traffic_start(int port, const char *connector,
                               const char *prefix, int pause_ms);

/* Stop and join; the counts stay readable until destroy. */
void pb_traffic_stop(pb_traffic_t *t);
void pb_traffic_destroy(pb_traffic_t **t);

size_t pb_traffic_acked(const pb_traffic_t *t);   /* 200s */
size_t pb_traffic_retried(const pb_traffic_t *t); /* 503 + Retry-After */
size_t pb_traffic_bad(const pb_traffic_t *t);     /* anything else */
/* The last bad answer, for messages ("" when none). */
const char *pb_traffic_last_bad(const pb_traffic_t *t);
/* The number of the event being posted now (or next): every event
 * numbered above it is posted after this call. */
size_t pb_traffic_next(const pb_traffic_t *t);
/* Was event n acknowledged? */
bool pb_traffic_was_acked(const pb_traffic_t *t, size_t n);

/* One line of a stamp record file. */
typedef struct pb_stamp_rec {
    char stamp[16]; /* the build's version */
    char label[64];
    int open;      /* which open of the instance's opens file (0: none) */
    char key[128]; /* the event's key */
} pb_stamp_rec_t;

/* Every record in path (caller frees *out); the count. */
size_t pb_stamp_read(const char *path, pb_stamp_rec_t **out);

/* The record for key, or NULL. */
const pb_stamp_rec_t *pb_stamp_find(const pb_stamp_rec_t *recs, size_t n,
                                    const char *key);

#endif /* PB_TRAFFIC_H */
