/*
 * standin.h - start, command and stop a vendor stand-in server
 * (tests/stand-ins/<vendor>.py) from a connector test.
 *
 * The stand-in runs as a child process (/usr/bin/python3) on a free
 * loopback port chosen by the kernel, records every request it receives
 * to a file in a private temporary directory, and takes commands (faults,
 * seed data) over HTTP.  Stop it in the suite's .fini so it is stopped
 * even when a test fails; if the test process dies anyway, the stand-in
 * notices its parent is gone and exits by itself.
 */
#ifndef PB_STANDIN_H
#define PB_STANDIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct pb_standin pb_standin_t;

/* Start tests/stand-ins/<vendor>.py and wait until it listens.  Returns
 * NULL with the reason in err. */
pb_standin_t *pb_standin_start(const char *vendor, char *err, size_t err_len);

/* SIGTERM, wait (then SIGKILL), remove its files; NULLs *s.  NULL-safe. */
void pb_standin_stop(pb_standin_t **s);

/* "http://127.0.0.1:<port>"; borrowed. */
const char *pb_standin_url(const pb_standin_t *s);

/* POST json to a control path ("/__standin/faults", "/__standin/seed").
 * Returns the HTTP status, or -1 when the stand-in did not answer. */
int pb_standin_post(pb_standin_t *s, const char *path, const char *json);

/* Shorthands for the two commands tests use most. */
int pb_standin_fault(pb_standin_t *s, const char *json);
int pb_standin_seed(pb_standin_t *s, const char *json);

/* GET /__standin/state: the vendor's records.  Caller json_decref()s. */
json_t *pb_standin_state(pb_standin_t *s);

/* Every request recorded so far, oldest first: an array of objects with
 * "method", "path", "query", "headers" (lower-case names), "body" (text)
 * and "fault".  Caller json_decref()s. */
json_t *pb_standin_records(pb_standin_t *s);

/* How many recorded requests have this method and a path matching the
 * fnmatch pattern. */
size_t pb_standin_count(pb_standin_t *s, const char *method,
                        const char *path_pattern);

/* The n-th (0-based) recorded request matching method and pattern, or
 * NULL; a new reference. */
json_t *pb_standin_request(pb_standin_t *s, const char *method,
                           const char *path_pattern, size_t n);

/*
 * An encoded event (the frame the router sends) whose id stays the same
 * on every attempt, as a redelivery's does: build it once, then set the
 * attempt before each plugboard_harness_deliver_frame().  data is JSON
 * object text.  Caller free()s; NULL when the event is invalid.
 */
uint8_t *pb_test_event_frame(const char *type, const char *key,
                             const char *json_data, size_t *len);
/* Mark the frame as attempt n (1..127). */
void pb_test_frame_set_attempt(uint8_t *frame, size_t len, uint32_t n);

#endif /* PB_STANDIN_H */
