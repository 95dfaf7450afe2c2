/*
 * hubspot_sink.c - canonical events into HubSpot CRM writes.
 *
 *   contact.upserted        find the contact by e-mail (search, EQ), then
 *                           PATCH it or create it
 *   payment.*, dispute.opened, subscription.canceled, ticket.*,
 *   email.bounced           a note on the contact's timeline (created with
 *                           its association to the contact), then the
 *                           optional event_property on the contact
 *   deal.stage_changed      PATCH the deal's dealstage (and pipeline)
 *
 * Never a duplicate on retry:
 *   - contacts: search before create; and HubSpot keeps e-mail unique, so
 *     a create that races a previous attempt (or a search index that has
 *     not caught up) answers 409 "Contact already exists. Existing ID: N",
 *     which is read and used as the found contact;
 *   - notes: every note carries the event id as a token; a retried
 *     delivery (attempt > 1) first searches notes for that token and
 *     creates none when one exists.  After a create whose outcome is
 *     unknown (timeout) the retry waits HS_SETTLE_MS so the search index
 *     has the note;
 *   - PATCHes are idempotent by nature.
 */
#include "hubspot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_MARKER "plugboard event "

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* The e-mail at path, lower-cased into buf, or NULL. */
static const char *
s_event_email(hs_state_t *st, const plugboard_event_t *ev, const char *path,
              char *buf, size_t size)
{
    const char *s = NULL;
    size_t len = 0;

    if (!st->api->event_string(ev, path, &s, &len)) {
        return NULL;
    }
    return hs_email(s, len, buf, size);
}

/* An answer's "id", checked to be a HubSpot id, into id. */
static bool
s_answer_id(json_t *obj, char id[HS_ID_MAX])
{
    return plugboard_json_id(json_object_get(obj, "id"), id, HS_ID_MAX) !=
               NULL &&
           hs_is_id(id);
}

/* A one-filter search body. */
static json_t *
s_search_body(const char *property, const char *op, const char *value,
              const char *returned)
{
    return json_pack("{s:[{s:[{s:s,s:s,s:s}]}],s:[s],s:i}", "filterGroups",
                     "filters", "propertyName", property, "operator", op,
                     "value", value, "properties", returned, "limit", 1);
}

/* UTC milliseconds as ISO-8601 ("2024-05-01T12:00:00.000Z"). */
static void
s_iso(int64_t ms, char out[64])
{
    time_t secs;
    struct tm tm;

    if (ms < 0) {
        ms = 0;
    }
    secs = (time_t)(ms / 1000);
    gmtime_r(&secs, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ms % 1000));
}

/* ------------------------------------------------------------------ */
/* Contacts                                                            */
/* ------------------------------------------------------------------ */

/*
 * Search a contact by e-mail.  OK with id set, or id "" when there is
 * none; otherwise res says why not.
 */
static plugboard_outcome_t
s_find_contact(hs_state_t *st, const char *email, char id[HS_ID_MAX],
               plugboard_result_t *res)
{
    json_t *body = s_search_body("email", "EQ", email, "email");
    hs_call_t call = {
        .what = "search contact",
        .method = "POST",
        .path = "/crm/v3/objects/contacts/search",
        .body = body,
        .search = true,
    };
    plugboard_outcome_t out;
    json_t *first;

    id[0] = '\0';
    if (body == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    out = hs_request(st, &call, res);
    json_decref(body);
    if (out != PLUGBOARD_OK) {
        json_decref(call.json);
        return out;
    }
    first = json_array_get(json_object_get(call.json, "results"), 0);
    if (first != NULL && !s_answer_id(first, id)) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "search contact: answer without a valid id");
        out = PLUGBOARD_RETRY;
    }
    json_decref(call.json);
    return out;
}

/* The existing contact's id from a 409 "... Existing ID: 512". */
static bool
s_conflict_id(json_t *answer, char id[HS_ID_MAX])
{
    const char *msg = json_string_value(json_object_get(answer, "message"));
    const char *p = msg != NULL ? strstr(msg, "Existing ID: ") : NULL;
    size_t n;

    if (p == NULL) {
        return false;
    }
    p += strlen("Existing ID: ");
    n = strspn(p, "0123456789");
    if (n == 0 || n >= HS_ID_MAX) {
        return false;
    }
    memcpy(id, p, n);
    id[n] = '\0';
    return true;
}

static plugboard_outcome_t
s_patch(hs_state_t *st, const char *what, const char *object, const char *id,
        json_t *props, plugboard_result_t *res, long *status)
{
    char path[96];
    json_t *body = json_pack("{s:O}", "properties", props);
    hs_call_t call = {
        .what = what, .method = "PATCH", .path = path, .body = body};
    plugboard_outcome_t out;

    snprintf(path, sizeof path, "/crm/v3/objects/%s/%s", object, id);
    if (body == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    out = hs_request(st, &call, res);
    *status = call.status;
    json_decref(call.json);
    json_decref(body);
    return out;
}

/* POST a new contact; a 409 yields the existing contact's id. */
static plugboard_outcome_t
s_create_contact(hs_state_t *st, json_t *props, char id[HS_ID_MAX],
                 bool *existed, plugboard_result_t *res)
{
    json_t *body = json_pack("{s:O}", "properties", props);
    hs_call_t call = {.what = "create contact",
                      .method = "POST",
                      .path = "/crm/v3/objects/contacts",
                      .body = body};
    plugboard_outcome_t out;

    *existed = false;
    if (body == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    out = hs_request(st, &call, res);
    json_decref(body);
    if (out == PLUGBOARD_OK && !s_answer_id(call.json, id)) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "create contact: answer without a valid id");
        out = PLUGBOARD_RETRY;
    } else if (call.status == 409 && s_conflict_id(call.json, id)) {
        st->api->count(st->host, "contact_conflict_resolved", 1);
        *existed = true;
        memset(res, 0, sizeof *res); /* the 409 is an answer, not a failure */
        out = PLUGBOARD_OK;
    } else if (call.status == 0 && out == PLUGBOARD_RETRY) {
        /* it may exist now: look it up again once search has it */
        if (res->retry_after_ms < HS_SETTLE_MS) {
            res->retry_after_ms = HS_SETTLE_MS;
        }
    }
    json_decref(call.json);
    return out;
}

/*
 * Find or create the contact with this e-mail; with update, PATCH the
 * other properties onto an existing one.  props holds "email" and
 * whatever else is known.  OK with id set.
 */
static plugboard_outcome_t
s_upsert_contact(hs_state_t *st, const char *email, json_t *props, bool update,
                 char id[HS_ID_MAX], plugboard_result_t *res)
{
    bool existed = false;
    long status = 0;
    plugboard_outcome_t out = s_find_contact(st, email, id, res);

    if (out != PLUGBOARD_OK) {
        return out;
    }
    if (id[0] == '\0') {
        out = s_create_contact(st, props, id, &existed, res);
        if (out != PLUGBOARD_OK || !existed) {
            if (out == PLUGBOARD_OK) {
                st->api->count(st->host, "contact_created", 1);
            }
            return out;
        }
    }
    if (!update || json_object_size(props) <= 1) {
        return PLUGBOARD_OK;
    }
    out = s_patch(st, "update contact", "contacts", id, props, res, &status);
    if (status == 404) {
        /* deleted or merged since the search: try again from the top */
        plugboard_result_set(res, PLUGBOARD_RETRY, HS_SETTLE_MS,
                             "update contact: contact %s vanished (merged "
                             "or deleted); will look it up again",
                             id);
    }
    return out;
}

/* Set name properties: first/last as given, else split the full name at
 * its first space. */
static int
s_set_names(hs_state_t *st, const plugboard_event_t *ev, json_t *props,
            const char *block)
{
    char first_path[48], last_path[48], name_path[48];
    json_t *first, *last, *name;
    int rc = 0;

    snprintf(first_path, sizeof first_path, "%s.first_name", block);
    snprintf(last_path, sizeof last_path, "%s.last_name", block);
    snprintf(name_path, sizeof name_path, "%s.name", block);
    first = hs_event_string(st, ev, first_path);
    last = hs_event_string(st, ev, last_path);
    name = first == NULL && last == NULL ? hs_event_string(st, ev, name_path)
                                         : NULL;
    if (name != NULL) {
        const char *full = json_string_value(name);
        const char *space = strchr(full, ' ');

        first = json_stringn(full, space != NULL ? (size_t)(space - full)
                                                 : strlen(full));
        if (space != NULL && space[strspn(space, " ")] != '\0') {
            last = json_string(space + strspn(space, " "));
        }
        json_decref(name);
    }
    if (first != NULL) {
        rc |= json_object_set_new(props, "firstname", first);
    }
    if (last != NULL) {
        rc |= json_object_set_new(props, "lastname", last);
    }
    return rc;
}

static void
s_contact_upserted(hs_state_t *st, const plugboard_event_t *ev,
                   plugboard_result_t *res)
{
    char email[HS_EMAIL_MAX + 1];
    char id[HS_ID_MAX];
    const char *source = NULL;
    size_t source_len = 0;
    json_t *props;
    json_t *v;

    if (st->api->event_string(ev, "contact.source", &source, &source_len) &&
        source_len == 7 && memcmp(source, "hubspot", 7) == 0) {
        /* it came from HubSpot: writing it back could only loop */
        st->api->count(st->host, "own_event_skipped", 1);
        return;
    }
    if (s_event_email(st, ev, "contact.email", email, sizeof email) == NULL) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "%s has no valid contact.email",
                             "contact.upserted");
        return;
    }
    props = json_pack("{s:s}", "email", email);
    if (props == NULL || s_set_names(st, ev, props, "contact") != 0) {
        json_decref(props);
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return;
    }
    if ((v = hs_event_string(st, ev, "contact.phone")) != NULL) {
        json_object_set_new(props, "phone", v);
    }
    if ((v = hs_event_string(st, ev, "contact.company")) != NULL) {
        json_object_set_new(props, "company", v);
    }
    if (s_upsert_contact(st, email, props, true, id, res) == PLUGBOARD_OK) {
        st->api->log(st->host, PLUGBOARD_LOG_DEBUG, "contact upserted id=%s",
                     id);
    }
    json_decref(props);
}

/* ------------------------------------------------------------------ */
/* Notes                                                               */
/* ------------------------------------------------------------------ */

/* Is there a note carrying this event's id?  OK with *found set. */
static plugboard_outcome_t
s_find_note(hs_state_t *st, const char *event_id, bool *found,
            plugboard_result_t *res)
{
    json_t *body = s_search_body("hs_note_body", "CONTAINS_TOKEN", event_id,
                                 "hs_timestamp");
    hs_call_t call = {
        .what = "search note",
        .method = "POST",
        .path = "/crm/v3/objects/notes/search",
        .body = body,
        .search = true,
    };
    plugboard_outcome_t out;

    *found = false;
    if (body == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    out = hs_request(st, &call, res);
    json_decref(body);
    if (out == PLUGBOARD_OK) {
        *found = json_array_size(json_object_get(call.json, "results")) > 0;
    }
    json_decref(call.json);
    return out;
}

/* The note's HTML: the rendered template, line breaks as <br>, and the
 * marker that finds it again.  Caller frees with api->free. */
static char *
s_note_html(hs_state_t *st, const plugboard_event_t *ev, int index)
{
    char *text = plugboard_template_render(st->api, ev, st->notes[index],
                                           PLUGBOARD_ESCAPE_HTML);
    const char *id = st->api->event_id(ev);
    size_t breaks = 0;
    size_t n;
    char *html;
    char *o;

    if (text == NULL) {
        return NULL;
    }
    for (const char *p = text; *p != '\0'; p++) {
        breaks += *p == '\n';
    }
    n = strlen(text) + breaks * 4 + strlen(S_MARKER) + strlen(id) + 32;
    html = st->api->alloc(n);
    if (html != NULL) {
        o = html;
        for (const char *p = text; *p != '\0'; p++) {
            if (*p == '\n') {
                memcpy(o, "<br>", 4);
                o += 4;
            } else if (*p != '\r') {
                *o++ = *p;
            }
        }
        snprintf(o, n - (size_t)(o - html),
                 "<br><br><small>" S_MARKER "%s</small>", id);
    }
    st->api->free(text);
    return html;
}

static plugboard_outcome_t
s_create_note(hs_state_t *st, const plugboard_event_t *ev, int index,
              const char *contact_id, plugboard_result_t *res)
{
    char when[64];
    char *html = s_note_html(st, ev, index);
    json_t *body;
    hs_call_t call = {.what = "create note",
                      .method = "POST",
                      .path = "/crm/v3/objects/notes",
                      .fresh = true};
    plugboard_outcome_t out;

    s_iso(st->api->event_time_ms(ev), when);
    body = html != NULL
               ? json_pack("{s:{s:s,s:s},s:[{s:{s:s},s:[{s:s,s:i}]}]}",
                           "properties", "hs_timestamp", when, "hs_note_body",
                           html, "associations", "to", "id", contact_id,
                           "types", "associationCategory", "HUBSPOT_DEFINED",
                           "associationTypeId", 202)
               : NULL;
    st->api->free(html);
    if (body == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "create note: out of memory or the note is "
                             "not valid UTF-8");
        return PLUGBOARD_RETRY;
    }
    call.body = body;
    out = hs_request(st, &call, res);
    if (call.status == 0 && out == PLUGBOARD_RETRY &&
        res->retry_after_ms < HS_SETTLE_MS) {
        res->retry_after_ms = HS_SETTLE_MS; /* let search find it */
    }
    json_decref(call.json);
    json_decref(body);
    return out;
}

/* Find (or create) the contact an event is about; OK with id set. */
static plugboard_outcome_t
s_contact_of(hs_state_t *st, const plugboard_event_t *ev, char id[HS_ID_MAX],
             plugboard_result_t *res)
{
    char email[HS_EMAIL_MAX + 1];
    json_t *props;
    plugboard_outcome_t out;

    if (s_event_email(st, ev, "customer.email", email, sizeof email) == NULL) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "%s has no valid customer.email: cannot find the "
                             "HubSpot contact",
                             st->api->event_type(ev));
        return PLUGBOARD_REJECT;
    }
    if (!st->create_contacts) {
        out = s_find_contact(st, email, id, res);
        if (out == PLUGBOARD_OK && id[0] == '\0') {
            plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                                 "no HubSpot contact with e-mail '%s' "
                                 "(create_contacts is off)",
                                 email);
            return PLUGBOARD_REJECT;
        }
        return out;
    }
    props = json_pack("{s:s}", "email", email);
    if (props == NULL || s_set_names(st, ev, props, "customer") != 0) {
        json_decref(props);
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    out = s_upsert_contact(st, email, props, false, id, res);
    json_decref(props);
    return out;
}

static void
s_note(hs_state_t *st, const plugboard_event_t *ev, int index,
       plugboard_result_t *res)
{
    char id[HS_ID_MAX];
    bool found = false;
    long status = 0;
    json_t *props;

    if (s_contact_of(st, ev, id, res) != PLUGBOARD_OK) {
        return;
    }
    if (st->api->event_attempt(ev) > 1 &&
        s_find_note(st, st->api->event_id(ev), &found, res) != PLUGBOARD_OK) {
        return;
    }
    if (found) {
        st->api->count(st->host, "note_already_present", 1);
    } else if (s_create_note(st, ev, index, id, res) != PLUGBOARD_OK) {
        return;
    }
    if (st->event_property == NULL) {
        return;
    }
    props = json_pack("{s:s}", st->event_property, st->api->event_type(ev));
    if (props == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return;
    }
    s_patch(st, "set contact property", "contacts", id, props, res, &status);
    json_decref(props);
}

/* ------------------------------------------------------------------ */
/* Deals                                                               */
/* ------------------------------------------------------------------ */

static void
s_deal_stage(hs_state_t *st, const plugboard_event_t *ev,
             plugboard_result_t *res)
{
    json_t *id = hs_event_string(st, ev, "deal.id");
    json_t *stage = hs_event_string(st, ev, "deal.stage");
    json_t *vendor = hs_event_string(st, ev, "deal.vendor");
    json_t *pipeline = hs_event_string(st, ev, "deal.pipeline");
    json_t *props = NULL;
    long status = 0;

    if (id == NULL || stage == NULL || !hs_is_id(json_string_value(id))) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "%s needs deal.id (a HubSpot deal id) and "
                             "deal.stage",
                             "deal.stage_changed");
    } else if (vendor != NULL &&
               strcmp(json_string_value(vendor), "hubspot") != 0) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "deal.stage_changed is about a '%s' deal, not a "
                             "HubSpot one",
                             json_string_value(vendor));
    } else if ((props = json_pack("{s:O}", "dealstage", stage)) == NULL ||
               (pipeline != NULL &&
                json_object_set(props, "pipeline", pipeline) != 0)) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
    } else {
        s_patch(st, "update deal", "deals", json_string_value(id), props, res,
                &status);
        if (status == 404) {
            plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                                 "update deal: no HubSpot deal %s",
                                 json_string_value(id));
        }
    }
    json_decref(props);
    json_decref(pipeline);
    json_decref(vendor);
    json_decref(stage);
    json_decref(id);
}

/* ------------------------------------------------------------------ */
/* deliver                                                             */
/* ------------------------------------------------------------------ */

void
hs_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *res)
{
    hs_state_t *st = state;
    const char *type = st->api->event_type(ev);
    int note = hs_note_index(type);

    if (strcmp(type, PLUGBOARD_EV_CONTACT_UPSERTED) == 0) {
        s_contact_upserted(st, ev, res);
    } else if (strcmp(type, PLUGBOARD_EV_DEAL_STAGE_CHANGED) == 0) {
        s_deal_stage(st, ev, res);
    } else if (note >= 0) {
        s_note(st, ev, note, res);
    } else {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "hubspot does not take '%s' events", type);
    }
    if (res->outcome != PLUGBOARD_OK) {
        st->api->count(st->host,
                       res->outcome == PLUGBOARD_HOLD    ? "deliver_held"
                       : res->outcome == PLUGBOARD_RETRY ? "deliver_retry"
                                                         : "deliver_reject",
                       1);
    }
}
