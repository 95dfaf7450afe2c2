/*
 * harness.h - drive one connector in-process, without a router or journal.
 *
 * Loads a real plugin .so through the host's loader, binds settings through
 * the host's settings validation, opens it with the real host API table,
 * and captures what it emits.  Used by connector tests.
 */
#ifndef PB_HARNESS_H
#define PB_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include <plugboard/plugboard.h>

#include "envelope.h"

typedef struct pb_harness pb_harness_t;

/*
 * Open plugin_path with settings given as "name=value" strings (NULL-
 * terminated array; values parsed by the declared type: ints in decimal,
 * bools true/false, durations "5s").  The connector instance is named
 * after the plugin unless name is non-NULL.  Returns NULL and writes the
 * reason (a settings error or open's errbuf) to err.
 */
pb_harness_t *pb_harness_open(const char *plugin_path, const char *name,
                              const char *const *settings, char *err,
                              size_t err_len);
void pb_harness_close(pb_harness_t **h);

/* The plugin's descriptor; borrowed. */
const plugboard_connector_t *pb_harness_descriptor(const pb_harness_t *h);

/*
 * Deliver one event built from type, key and data (JSON object text) with
 * the given attempt number (1 for the first).  Fills *result.  Returns 0,
 * or PB_EINVAL when the plugin has no deliver or the JSON is invalid.
 */
int pb_harness_deliver(pb_harness_t *h, const char *type, const char *key,
                       const char *json_data, uint32_t attempt,
                       plugboard_result_t *result);
/* Deliver an already encoded envelope frame. */
int pb_harness_deliver_frame(pb_harness_t *h, const void *frame, size_t len,
                             plugboard_result_t *result);

/*
 * Call the plugin's webhook with a request.  headers is a NULL-terminated
 * array of "Name: value" strings.  *status gets the answer's status and
 * *body (if non-NULL) a malloc'd copy of its body.  Events emitted during
 * the call are captured (see below).  Returns 0, or PB_EINVAL when the
 * plugin has no webhook.
 */
int pb_harness_webhook(pb_harness_t *h, const char *method,
                       const char *const *headers, const void *body,
                       size_t body_len, int *status, char **resp_body);

/* Captured emitted events, in order; borrowed until clear or close. */
size_t pb_harness_emitted_count(const pb_harness_t *h);
const pb_envelope_t *pb_harness_emitted(const pb_harness_t *h, size_t i);
void pb_harness_clear(pb_harness_t *h);

/* The harness's host API (the host's real table). */
const plugboard_host_api_t *pb_harness_api(void);

/* Helpers for tests: read a whole file (malloc'd, NUL-terminated, length in
 * *len); make a fresh temporary directory (malloc'd path); remove a tree. */
char *pb_test_read_file(const char *path, size_t *len);
char *pb_test_tempdir(const char *prefix);
void pb_test_rmtree(const char *path);

#endif /* PB_HARNESS_H */
