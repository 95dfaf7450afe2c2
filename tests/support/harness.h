/*
 * harness.h - the in-tree tests' names for the SDK test harness.
 *
 * The harness itself is public SDK API (sdk/include/plugboard/harness.h,
 * sdk/harness/harness.c, installed as libplugboard-harness.a); this header
 * only gives it the core's pb_ names, so the tree's tests read like the
 * rest of the core, and adds the small file helpers tests share.  Emitted
 * events are pb_envelope_t (the SDK's plugboard_event_t), so tests can use
 * the envelope accessors on them.
 */
#ifndef PB_HARNESS_H
#define PB_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include <plugboard/harness.h>
#include <plugboard/plugboard.h>

#include "envelope.h"

typedef plugboard_harness_t pb_harness_t;

static inline pb_harness_t *
pb_harness_open(const char *plugin_path, const char *name,
                const char *const *settings, char *err, size_t err_len)
{
    return plugboard_harness_open(plugin_path, name, settings, err, err_len);
}

static inline void
pb_harness_close(pb_harness_t **h)
{
    plugboard_harness_close(h);
}

static inline const plugboard_connector_t *
pb_harness_descriptor(const pb_harness_t *h)
{
    return plugboard_harness_descriptor(h);
}

static inline int
pb_harness_deliver(pb_harness_t *h, const char *type, const char *key,
                   const char *json_data, uint32_t attempt,
                   plugboard_result_t *result)
{
    return plugboard_harness_deliver(h, type, key, json_data, attempt, result);
}

static inline int
pb_harness_deliver_frame(pb_harness_t *h, const void *frame, size_t len,
                         plugboard_result_t *result)
{
    return plugboard_harness_deliver_frame(h, frame, len, result);
}

static inline int
pb_harness_webhook(pb_harness_t *h, const char *method,
                   const char *const *headers, const void *body,
                   size_t body_len, int *status, char **resp_body)
{
    return plugboard_harness_webhook(h, method, headers, body, body_len, status,
                                     resp_body);
}

static inline size_t
pb_harness_emitted_count(const pb_harness_t *h)
{
    return plugboard_harness_emitted_count(h);
}

static inline const pb_envelope_t *
pb_harness_emitted(const pb_harness_t *h, size_t i)
{
    return plugboard_harness_emitted(h, i);
}

static inline void
pb_harness_clear(pb_harness_t *h)
{
    plugboard_harness_clear(h);
}

static inline const plugboard_host_api_t *
pb_harness_api(void)
{
    return plugboard_harness_api();
}

/* Helpers for tests: read a whole file (malloc'd, NUL-terminated, length in
 * *len); make a fresh temporary directory (malloc'd path); remove a tree. */
char *pb_test_read_file(const char *path, size_t *len);
char *pb_test_tempdir(const char *prefix);
void pb_test_rmtree(const char *path);

#endif /* PB_HARNESS_H */
