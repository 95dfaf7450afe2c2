/*
 * envelope.h - the message envelope: bounded MessagePack encode/decode, the
 * read-only event view connectors see, and the builder they emit with.
 *
 * Wire format: one MessagePack map with string keys
 *   id (str, 26-char sortable id), type (str), source (str), key (str),
 *   time (int, UTC ms), correlation (str), causation (str), attempt (uint),
 *   dedupe (str, vendor event id, optional), data (map)
 * Unknown keys are ignored (forward compatibility); id, type, source, time
 * and data are required.
 *
 * The decoder trusts nothing: before anything is read, the whole frame is
 * walked once and rejected if any declared length or element count exceeds
 * the bytes present, nesting exceeds limits.max_depth, the frame exceeds
 * limits.max_frame, or bytes trail the map.  A rejected frame never
 * allocates in proportion to what it declares.
 *
 * struct plugboard_event (the SDK's opaque view) is pb_envelope_t.
 */
#ifndef PB_ENVELOPE_H
#define PB_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plugboard/plugboard.h>

typedef struct plugboard_event pb_envelope_t;
typedef struct plugboard_builder pb_builder_t;

typedef struct pb_envelope_limits {
    size_t max_frame; /* bytes, default 4 MiB  */
    int max_depth;    /* nesting, default 32    */
} pb_envelope_limits_t;

#define PB_ENVELOPE_DEFAULT_MAX_FRAME (4u * 1024u * 1024u)
#define PB_ENVELOPE_DEFAULT_MAX_DEPTH 32
#define PB_ID_LEN 26 /* characters, without the NUL */

/* Fill out with a new unique id: 48-bit ms time then 80 random bits, in
 * Crockford base32, so ids sort by creation time.  out holds 27 bytes. */
void pb_id_new(char out[PB_ID_LEN + 1]);

/*
 * Decode and validate one frame.  The envelope keeps its own copy of the
 * bytes.  Returns NULL on a bad frame and writes the reason to why (e.g.
 * "string length 4294967295 exceeds the 12 bytes left at offset 40") and
 * sets *err to PB_EPROTO, PB_ETOOBIG or PB_ENOMEM.  limits may be NULL for
 * the defaults.  Caller owns the result; free with pb_envelope_destroy.
 */
pb_envelope_t *pb_envelope_decode(const void *frame, size_t len,
                                  const pb_envelope_limits_t *limits,
                                  int *err, char *why, size_t why_len);
void pb_envelope_destroy(pb_envelope_t **env);

/* Borrowed accessors; strings NUL-terminated, "" when absent. */
const char *pb_envelope_id(const pb_envelope_t *env);
const char *pb_envelope_type(const pb_envelope_t *env);
const char *pb_envelope_source(const pb_envelope_t *env);
const char *pb_envelope_key(const pb_envelope_t *env);
const char *pb_envelope_dedupe_id(const pb_envelope_t *env);
const char *pb_envelope_correlation(const pb_envelope_t *env);
const char *pb_envelope_causation(const pb_envelope_t *env);
int64_t pb_envelope_time_ms(const pb_envelope_t *env);
uint32_t pb_envelope_attempt(const pb_envelope_t *env);
/* The attempt a delivery is on; the router sets it per delivery. */
void pb_envelope_set_attempt(pb_envelope_t *env, uint32_t attempt);
/* The frame bytes as decoded (attempt as encoded). Borrowed. */
const uint8_t *pb_envelope_frame(const pb_envelope_t *env, size_t *len);

/* The SDK's event view functions (plugboard_host_api_t entries). */
const char *pb_event_type(const plugboard_event_t *ev);
const char *pb_event_id(const plugboard_event_t *ev);
const char *pb_event_source(const plugboard_event_t *ev);
const char *pb_event_key(const plugboard_event_t *ev);
int64_t pb_event_time_ms(const plugboard_event_t *ev);
uint32_t pb_event_attempt(const plugboard_event_t *ev);
plugboard_value_kind_t pb_event_kind(const plugboard_event_t *ev,
                                     const char *path);
bool pb_event_string(const plugboard_event_t *ev, const char *path,
                     const char **out, size_t *len);
bool pb_event_int(const plugboard_event_t *ev, const char *path,
                  int64_t *out);
bool pb_event_bool(const plugboard_event_t *ev, const char *path, bool *out);
/* Elements of the array or entries of the map at path; 0 for anything
 * else, and when path is missing. */
size_t pb_event_count(const plugboard_event_t *ev, const char *path);
/* JSON text of the whole envelope, data as a nested object.  Caller frees
 * with free(). */
char *pb_event_to_json(const plugboard_event_t *ev);

/*
 * Builder.  pb_builder_new returns NULL when out of memory or when type is
 * not a valid type name ([a-z0-9_]+ segments joined by '.', at most 64
 * characters).  source is the emitting connector's name (copied).
 */
pb_builder_t *pb_builder_new(const char *source, const char *type);
void pb_builder_destroy(pb_builder_t **b);
int pb_builder_set_key(pb_builder_t *b, const char *key);
int pb_builder_set_dedupe_id(pb_builder_t *b, const char *id);
int pb_builder_set_time_ms(pb_builder_t *b, int64_t time_ms);
int pb_builder_set_correlation(pb_builder_t *b, const char *id);
int pb_builder_set_causation(pb_builder_t *b, const char *id);
/* b is caused by delivering cause: causation becomes cause's id and
 * correlation cause's correlation (its id when it has none), each only
 * when not set already.  0, or PB_EINVAL / PB_ENOMEM. */
int pb_builder_inherit(pb_builder_t *b, const pb_envelope_t *cause);
int pb_builder_set_string(pb_builder_t *b, const char *path,
                          const char *value, size_t len);
int pb_builder_set_int(pb_builder_t *b, const char *path, int64_t value);
int pb_builder_set_bool(pb_builder_t *b, const char *path, bool value);
int pb_builder_set_null(pb_builder_t *b, const char *path);
/* JSON text (len bytes) at path: objects become maps, arrays arrays,
 * integers int, reals float.  PB_EINVAL when not valid JSON. */
int pb_builder_set_json(pb_builder_t *b, const char *path, const char *json,
                        size_t len);
/*
 * Encode to a frame: assigns a new id, time now unless set, attempt 1.
 * *out is malloc'd; caller frees.  Returns 0 or PB_ENOMEM / PB_ETOOBIG.
 */
int pb_builder_encode(const pb_builder_t *b, uint8_t **out, size_t *len);

#endif /* PB_ENVELOPE_H */
