/*
 * harness.h - the SDK test harness: drive one connector in-process,
 * without a running host (libplugboard-harness.a).
 *
 * The harness loads the real .so through the host's own loader (the same
 * ABI, size and descriptor checks), validates settings with the host's own
 * settings binding (unknown keys, types, ranges, required, defaults,
 * env:/file: secrets), opens the connector with the host's real API table
 * and captures what it emits.  So a connector that behaves under the
 * harness behaves in the host; only the router, journal and HTTP listener
 * are missing.  Sample events are the examples of docs/events.md, the
 * contract every connector is written against.
 *
 * A typical Criterion test (see `plugboard new-connector`):
 *
 *     char err[256];
 *     const char *settings[] = {"path=/tmp/out.txt", NULL};
 *     plugboard_harness_t *h =
 *         plugboard_harness_open(PLUGIN_PATH, NULL, settings, err,
 *                                sizeof err);
 *     cr_assert_not_null(h, "%s", err);
 *     plugboard_result_t res;
 *     cr_assert_eq(plugboard_harness_deliver_sample(h, "payment.failed",
 *                                                   &res), 0);
 *     cr_expect_eq(res.outcome, PLUGBOARD_OK, "%s", res.reason);
 *     plugboard_harness_close(&h);
 *
 * Calls are made on the calling thread, one at a time, as the host's actor
 * thread would make them.  A harness object is single-threaded.
 *
 * Linking: pkg-config --libs plugboard-harness, or the CMake target
 * plugboard::harness (find_package(plugboard)).
 */
#ifndef PLUGBOARD_HARNESS_H
#define PLUGBOARD_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plugboard/plugboard.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct plugboard_harness plugboard_harness_t;

/* The source (api->event_source) of every event the harness builds for
 * deliver, deliver_json and deliver_sample when the JSON names none.  A
 * JSON event's own "source" is kept (the docs/events.md samples have
 * theirs: "payments", "support", ...).  plugin-check's events use it
 * too. */
#define PLUGBOARD_HARNESS_SOURCE "harness"

/*
 * Load plugin_path (a path to the .so) and open one instance.  settings
 * is a NULL-terminated array of "name=value" strings (NULL for none);
 * each value is read as the declared type: integers in decimal, booleans
 * true/false, durations as text ("5s"), strings as they are, secrets as
 * env:NAME or file:PATH.  The instance is named after the plugin unless
 * name is non-NULL (the name is the emitted events' source and the
 * webhook path /hooks/<name>); a name must be one a config would take, 1
 * to 63 of a-z, 0-9, '_' and '-'.
 * Returns NULL and writes the reason to err (err_len bytes): "'NAME' is
 * not a valid connector name (...)", the loader's or the settings
 * binding's message, or "open failed: <open's errbuf>".
 * Caller owns the result (plugboard_harness_close).
 */
plugboard_harness_t *plugboard_harness_open(const char *plugin_path,
                                            const char *name,
                                            const char *const *settings,
                                            char *err, size_t err_len);

/* Close the instance (the connector's close()), unload the plugin and free
 * everything, captured events included.  NULLs *h; NULL is a no-op. */
void plugboard_harness_close(plugboard_harness_t **h);

/* The plugin's descriptor as the host copied it.  Borrowed until close. */
const plugboard_connector_t *
plugboard_harness_descriptor(const plugboard_harness_t *h);

/* The host API table the connector was opened with: use it to read
 * captured events (api->event_type, api->event_string, ...).  Static. */
const plugboard_host_api_t *plugboard_harness_api(void);

/*
 * Deliver one event of type with ordering key (NULL for "") and data given
 * as JSON object text (NULL for {}), as delivery attempt number attempt
 * (1 for the first, as api->event_attempt counts).  The event's source is
 * PLUGBOARD_HARNESS_SOURCE.  *result is zeroed before deliver() runs, as
 * the host does.  Returns 0, or PLUGBOARD_E_INVALID (and deliver() is not
 * called) when the connector has no deliver, attempt is 0, the type is
 * not a valid type name or the JSON is not an object.
 */
int plugboard_harness_deliver(plugboard_harness_t *h, const char *type,
                              const char *key, const char *json_data,
                              uint32_t attempt, plugboard_result_t *result);

/*
 * Deliver the canonical sample of type: the example event in
 * docs/events.md (so "payment.failed" carries amount, currency, payment.*,
 * failure.*, invoice.* as documented).  Returns 0, or PLUGBOARD_E_INVALID
 * when type is not a canonical type or the connector has no deliver.
 */
int plugboard_harness_deliver_sample(plugboard_harness_t *h, const char *type,
                                     plugboard_result_t *result);

/*
 * Deliver an event given as one JSON object: "type" (required), "key",
 * "time", "dedupe", "source" (PLUGBOARD_HARNESS_SOURCE when absent),
 * "correlation", "causation", "data" (the shape docs/events.md shows and
 * api->event_to_json writes); the id is new.  Same returns as
 * plugboard_harness_deliver, attempt 0 refused likewise.
 */
int plugboard_harness_deliver_json(plugboard_harness_t *h, const char *json,
                                   uint32_t attempt,
                                   plugboard_result_t *result);

/* Deliver an already encoded envelope frame (MessagePack, as the host
 * sends it; for replaying captured traffic).  PLUGBOARD_E_INVALID when it
 * does not decode. */
int plugboard_harness_deliver_frame(plugboard_harness_t *h, const void *frame,
                                    size_t len, plugboard_result_t *result);

/*
 * The sample event of a canonical type as JSON text (see
 * deliver_sample), or NULL when type is not canonical.  Static; *len (if
 * non-NULL) gets its length; the text is NOT NUL-terminated at len.
 */
const char *plugboard_harness_sample(const char *type, size_t *len);

/*
 * Call the connector's webhook as the host would for a POST (or method)
 * to /hooks/<name>.  headers is a NULL-terminated array of "Name: value"
 * strings (NULL for none).  *status gets the answer's status; *resp_body,
 * when resp_body is non-NULL, a copy of its body the caller frees with
 * free().  Events emitted during the call are captured (below).  Returns
 * 0, or PLUGBOARD_E_INVALID when the connector has no webhook.
 */
int plugboard_harness_webhook(plugboard_harness_t *h, const char *method,
                              const char *const *headers, const void *body,
                              size_t body_len, int *status, char **resp_body);

/* Events the connector emitted, in order.  Borrowed until the next clear
 * or close; read them with plugboard_harness_api(). */
size_t plugboard_harness_emitted_count(const plugboard_harness_t *h);
const plugboard_event_t *plugboard_harness_emitted(const plugboard_harness_t *h,
                                                   size_t i);
/*
 * Run the connector's run callback (a pull source, ABI 1.1) on a thread of
 * its own for about run_ms: api->run_wait answers true until then and
 * false after, api->flush hands a batch over (its events join the emitted
 * list, see plugboard_harness_emitted; after run_wait answered false it
 * answers PLUGBOARD_E_STOPPING and drops them, as the host does) and
 * api->durable answers 0 ("not yet") the first time it is asked about a
 * batch and 1 after (the harness has no journal).  Blocks until run
 * returns, so a run that ignores run_wait hangs the test (its timeout
 * catches it).  Events emitted and never flushed are dropped, as the host
 * drops them.  Returns 0, or PLUGBOARD_E_INVALID when the connector has
 * no run.
 */
int plugboard_harness_run(plugboard_harness_t *h, int64_t run_ms);

/*
 * The connector's api->auth_failed calls (ABI 1.1), in order: how many,
 * and the reason of call i as given ("" for NULL; NULL when i is past
 * the last).  Borrowed until the next clear or close.  So a test can
 * assert that a 401 from its fake vendor is reported as refused
 * credentials, and that the reason holds no secret.
 */
size_t plugboard_harness_auth_failed_count(const plugboard_harness_t *h);
const char *plugboard_harness_auth_failed_reason(const plugboard_harness_t *h,
                                                 size_t i);

/* Forget the captured events and auth_failed calls. */
void plugboard_harness_clear(plugboard_harness_t *h);

#ifdef __cplusplus
}
#endif

#endif /* PLUGBOARD_HARNESS_H */
