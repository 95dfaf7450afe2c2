/*
 * samples.c - canonical event types, their docs/events.md examples, and
 * events built from JSON for the SDK harness and plugin-check.
 */
#include "samples.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "embedded.h"
#include "error.h"

const char *const pb_canonical_types[] = {
    PLUGBOARD_EV_CONTACT_UPSERTED,
    PLUGBOARD_EV_DEAL_STAGE_CHANGED,
    PLUGBOARD_EV_PAYMENT_SUCCEEDED,
    PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_PAYMENT_REFUNDED,
    PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    PLUGBOARD_EV_DISPUTE_OPENED,
    PLUGBOARD_EV_TICKET_CREATED,
    PLUGBOARD_EV_TICKET_UPDATED,
    PLUGBOARD_EV_TICKET_SOLVED,
    PLUGBOARD_EV_EMAIL_DELIVERED,
    PLUGBOARD_EV_EMAIL_BOUNCED,
    PLUGBOARD_EV_EMAIL_COMPLAINED,
    PLUGBOARD_EV_DELIVERY_DEAD,
    PLUGBOARD_EV_CONNECTOR_UNHEALTHY,
    NULL,
};

bool
pb_type_is_canonical(const char *type)
{
    for (size_t i = 0; type && pb_canonical_types[i]; i++)
        if (strcmp(pb_canonical_types[i], type) == 0)
            return true;
    return false;
}

static const pb_embedded_t *
s_events_doc(void)
{
    for (size_t i = 0; pb_embedded_docs[i].path; i++)
        if (strcmp(pb_embedded_docs[i].path, "events.md") == 0)
            return &pb_embedded_docs[i];
    return NULL;
}

/* Start of the line after "## <type>" in doc, or NULL. */
static const char *
s_section(const char *doc, const char *type)
{
    char heading[128];
    int n = snprintf(heading, sizeof heading, "\n## %s\n", type);
    if (n < 0 || (size_t)n >= sizeof heading)
        return NULL;
    const char *at = strstr(doc, heading);
    return at ? at + (size_t)n : NULL;
}

const char *
pb_sample_json(const char *type, size_t *len)
{
    const pb_embedded_t *doc = s_events_doc();
    if (!doc || !type || !pb_type_is_canonical(type))
        return NULL;
    const char *sec = s_section(doc->data, type);
    if (!sec)
        return NULL;
    const char *next = strstr(sec, "\n## ");
    const char *open = strstr(sec, "```json\n");
    if (!open || (next && open > next))
        return NULL;
    open += strlen("```json\n");
    const char *close = strstr(open, "\n```");
    if (!close)
        return NULL;
    if (len)
        *len = (size_t)(close - open);
    return open;
}

/* Copy the string member key of obj into the builder with set. */
static int
s_copy_string(json_t *obj, const char *key, pb_builder_t *b,
              int (*set)(pb_builder_t *, const char *))
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_string(v))
        return PB_EINVAL;
    return set(b, json_string_value(v));
}

/* Every member of the data object, by its JSON text. */
static int
s_set_data(pb_builder_t *b, json_t *data)
{
    const char *k;
    json_t *v;
    json_object_foreach(data, k, v)
    {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!text)
            return PB_ENOMEM;
        int rc = pb_builder_set_json(b, k, text, strlen(text));
        free(text);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Encode b and decode it again, as a destination would receive it. */
static pb_envelope_t *
s_finish(pb_builder_t *b, uint32_t attempt, char *why, size_t why_len)
{
    uint8_t *frame = NULL;
    size_t len = 0;
    int rc = pb_builder_encode(b, &frame, &len);
    if (rc != 0) {
        snprintf(why, why_len, "cannot encode the event: %s", pb_strerror(rc));
        return NULL;
    }
    int err = 0;
    pb_envelope_t *env =
        pb_envelope_decode(frame, len, NULL, &err, why, why_len);
    free(frame);
    if (env)
        pb_envelope_set_attempt(env, attempt ? attempt : 1);
    return env;
}

static pb_envelope_t *
s_from_object(json_t *root, const char *source, uint32_t attempt, char *why,
              size_t why_len)
{
    json_t *type = json_object_get(root, "type");
    json_t *data = json_object_get(root, "data");
    json_t *src = json_object_get(root, "source");
    json_t *time = json_object_get(root, "time");
    if (!json_is_string(type)) {
        snprintf(why, why_len, "the event has no \"type\" string");
        return NULL;
    }
    if (data && !json_is_object(data)) {
        snprintf(why, why_len, "\"data\" is not an object");
        return NULL;
    }
    if (json_is_string(src))
        source = json_string_value(src);
    pb_builder_t *b = pb_builder_new(source, json_string_value(type));
    if (!b) {
        snprintf(why, why_len, "'%s' is not a valid event type",
                 json_string_value(type));
        return NULL;
    }
    int rc = s_copy_string(root, "key", b, pb_builder_set_key);
    if (rc == 0)
        rc = s_copy_string(root, "dedupe", b, pb_builder_set_dedupe_id);
    if (rc == 0)
        rc = s_copy_string(root, "correlation", b, pb_builder_set_correlation);
    if (rc == 0)
        rc = s_copy_string(root, "causation", b, pb_builder_set_causation);
    if (rc == 0 && json_is_integer(time))
        rc = pb_builder_set_time_ms(b, json_integer_value(time));
    if (rc == 0 && data)
        rc = s_set_data(b, data);
    pb_envelope_t *env = NULL;
    if (rc != 0)
        snprintf(why, why_len, "cannot build the event: %s", pb_strerror(rc));
    else
        env = s_finish(b, attempt, why, why_len);
    pb_builder_destroy(&b);
    return env;
}

pb_envelope_t *
pb_event_from_json(const char *json, size_t len, uint32_t attempt, char *why,
                   size_t why_len)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!json_is_object(root)) {
        snprintf(why, why_len, "not a JSON object: %s",
                 root ? "another JSON value" : jerr.text);
        json_decref(root);
        return NULL;
    }
    pb_envelope_t *env =
        s_from_object(root, PLUGBOARD_HARNESS_SOURCE, attempt, why, why_len);
    json_decref(root);
    return env;
}

pb_envelope_t *
pb_event_from_parts(const char *source, const char *type, const char *key,
                    const char *json_data, uint32_t attempt, char *why,
                    size_t why_len)
{
    json_error_t jerr;
    json_t *data = json_loads(json_data ? json_data : "{}", 0, &jerr);
    if (!json_is_object(data)) {
        snprintf(why, why_len, "data is not a JSON object: %s",
                 data ? "another JSON value" : jerr.text);
        json_decref(data);
        return NULL;
    }
    json_t *root =
        json_pack("{s:s, s:o}", "type", type ? type : "", "data", data);
    if (root && key)
        json_object_set_new(root, "key", json_string(key));
    if (!root) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    pb_envelope_t *env =
        s_from_object(root, source ? source : PLUGBOARD_HARNESS_SOURCE, attempt,
                      why, why_len);
    json_decref(root);
    return env;
}
