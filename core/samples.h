/*
 * samples.h - the canonical event types and one sample event of each.
 *
 * The samples are the examples of docs/events.md, compiled into the binary
 * (core/embedded.h), so the contract document, the SDK test harness and
 * `plugboard plugin-check` cannot disagree about what an event looks like.
 */
#ifndef PB_SAMPLES_H
#define PB_SAMPLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plugboard/harness.h> /* PLUGBOARD_HARNESS_SOURCE */
#include <plugboard/plugboard.h>

#include "envelope.h"

/* The PLUGBOARD_EV_* types of plugboard.h, NULL-terminated. */
extern const char *const pb_canonical_types[];

/* Is type one of pb_canonical_types? */
bool pb_type_is_canonical(const char *type);

/*
 * The example of type in docs/events.md: one JSON object (the whole
 * envelope: id, type, key, time, data, ...).  Returns NULL when the
 * document has none.  Borrowed, static; *len gets its length.
 */
const char *pb_sample_json(const char *type, size_t *len);

/*
 * Build the event a destination would receive from JSON text: an object
 * with "type" (required), "key", "time", "dedupe", "source"
 * (PLUGBOARD_HARNESS_SOURCE when absent), "correlation", "causation" and
 * "data" (an object; "{}" when absent).  The id is new; attempt is as given (0
 * is taken as 1).  Returns NULL and writes the reason to why.  Caller owns the
 * result (pb_envelope_destroy).
 */
pb_envelope_t *pb_event_from_json(const char *json, size_t len,
                                  uint32_t attempt, char *why, size_t why_len);

/*
 * The same from parts: type, key (NULL for none) and data as JSON object
 * text (NULL for "{}").  source names the emitter (NULL for
 * PLUGBOARD_HARNESS_SOURCE).
 */
pb_envelope_t *pb_event_from_parts(const char *source, const char *type,
                                   const char *key, const char *json_data,
                                   uint32_t attempt, char *why, size_t why_len);

#endif /* PB_SAMPLES_H */
