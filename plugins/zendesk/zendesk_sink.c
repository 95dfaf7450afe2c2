/*
 * zendesk_sink.c - canonical events into Zendesk tickets and comments.
 *
 * Every event has an external id: the `external_id` template, or by
 * default the first of dispute.id, payment.id, subscription.id,
 * invoice.id, customer.email, prefixed with its kind
 * ("plugboard:payment:pi_3KhZ8b").  Events about the same thing share it,
 * so a payment.succeeded after a payment.failed lands on the failed
 * payment's ticket.
 *
 *   1. GET /api/v2/tickets.json?external_id=X lists the tickets with that
 *      external id; the newest one that is not closed is "the ticket".
 *   2. A ticket exists: PUT /api/v2/tickets/{id}.json adds the event's
 *      comment.  On a retry (attempt > 1) the ticket's latest comments are
 *      read first and the comment is not added again when one already
 *      carries the event's id.
 *   3. None exists and the type is in create_on: POST
 *      /api/v2/tickets.json with the external id, the requester by e-mail
 *      and an Idempotency-Key from the event id.  A create whose answer was
 *      lost is found by step 1 on the retry (the list is read from the
 *      database, not a search index), and Zendesk's idempotency replays
 *      the first answer besides.
 *   4. None exists and the type only comments: nothing to do (counted).
 */
#include "zendesk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MARKER "plugboard event "

/* ------------------------------------------------------------------ */
/* External id                                                         */
/* ------------------------------------------------------------------ */

/* Trim spaces; false when nothing is left or it does not fit. */
static bool
s_set_external(char out[ZD_EXTERNAL_ID_MAX + 1], const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        n--;
    }
    if (n == 0 || n > ZD_EXTERNAL_ID_MAX) {
        return false;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

/* The event's external id into out; false when it has none that fits. */
static bool
s_external_id(zd_state_t *st, const plugboard_event_t *ev,
              char out[ZD_EXTERNAL_ID_MAX + 1])
{
    static const char *const paths[][2] = {
        {"dispute.id", "dispute"},           {"payment.id", "payment"},
        {"subscription.id", "subscription"}, {"invoice.id", "invoice"},
        {"customer.email", "customer"},
    };
    char buf[ZD_EXTERNAL_ID_MAX + 64];

    if (st->external_id != NULL) {
        char *r = plugboard_template_render(st->api, ev, st->external_id,
                                            PLUGBOARD_ESCAPE_HEADER);
        bool ok = r != NULL && s_set_external(out, r, strlen(r));

        st->api->free(r);
        return ok;
    }
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        const char *v = NULL;
        size_t len = 0;
        int n;

        if (!st->api->event_string(ev, paths[i][0], &v, &len) || len == 0 ||
            len > ZD_EXTERNAL_ID_MAX) {
            continue;
        }
        n = snprintf(buf, sizeof buf, "plugboard:%s:%.*s", paths[i][1],
                     (int)len, v);
        return n > 0 && s_set_external(out, buf, (size_t)n);
    }
    snprintf(buf, sizeof buf, "plugboard:event:%s", st->api->event_id(ev));
    return s_set_external(out, buf, strlen(buf));
}

/* ------------------------------------------------------------------ */
/* Finding the ticket                                                  */
/* ------------------------------------------------------------------ */

/* Is decimal id a newer ticket than best (longer, or greater)? */
static bool
s_newer(const char *id, const char *best)
{
    size_t a = strlen(id), b = strlen(best);

    return a != b ? a > b : strcmp(id, best) > 0;
}

/* The newest open ticket with this external id; OK with id "" when none. */
static plugboard_outcome_t
s_find_ticket(zd_state_t *st, const char *external, char id[ZD_ID_MAX],
              plugboard_result_t *res)
{
    char *esc = plugboard_http_escape(st->http, external, strlen(external));
    char path[4 * ZD_EXTERNAL_ID_MAX + 64];
    zd_call_t call = {.what = "find ticket", .method = "GET", .path = path};
    plugboard_outcome_t out;
    size_t i;
    json_t *t;

    id[0] = '\0';
    if (esc == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    snprintf(path, sizeof path, "/api/v2/tickets.json?external_id=%s", esc);
    st->api->free(esc);
    out = zd_request(st, &call, res);
    json_array_foreach(
        out == PLUGBOARD_OK ? json_object_get(call.json, "tickets") : NULL, i,
        t)
    {
        const char *status = json_string_value(json_object_get(t, "status"));
        const char *ext = json_string_value(json_object_get(t, "external_id"));
        char tid[ZD_ID_MAX];

        if (plugboard_json_id(json_object_get(t, "id"), tid, sizeof tid) ==
                NULL ||
            tid[strspn(tid, "0123456789")] != '\0' || ext == NULL ||
            strcmp(ext, external) != 0 ||
            (status != NULL && (strcmp(status, "closed") == 0 ||
                                strcmp(status, "deleted") == 0))) {
            continue;
        }
        if (id[0] == '\0' || s_newer(tid, id)) {
            strcpy(id, tid);
        }
    }
    json_decref(call.json);
    return out;
}

/* Does one of the ticket's latest comments carry this event's marker? */
static plugboard_outcome_t
s_has_comment(zd_state_t *st, const char *ticket, const char *marker,
              bool *found, plugboard_result_t *res)
{
    char path[96];
    zd_call_t call = {.what = "read comments", .method = "GET", .path = path};
    plugboard_outcome_t out;
    size_t i;
    json_t *c;

    *found = false;
    snprintf(path, sizeof path,
             "/api/v2/tickets/%s/comments.json?sort_order=desc", ticket);
    out = zd_request(st, &call, res);
    json_array_foreach(
        out == PLUGBOARD_OK ? json_object_get(call.json, "comments") : NULL, i,
        c)
    {
        const char *body = json_string_value(json_object_get(c, "body"));

        if (body != NULL && strstr(body, marker) != NULL) {
            *found = true;
        }
    }
    json_decref(call.json);
    return out;
}

/* ------------------------------------------------------------------ */
/* Writing                                                             */
/* ------------------------------------------------------------------ */

/* The rendered comment with its marker line, as a JSON string. */
static json_t *
s_comment(zd_state_t *st, const plugboard_event_t *ev, const zd_template_t *t,
          const char *marker)
{
    char *text =
        plugboard_template_render(st->api, ev, t->body, PLUGBOARD_ESCAPE_NONE);
    size_t n = text != NULL ? strlen(text) + strlen(marker) + 64 : 0;
    char *full = text != NULL ? st->api->alloc(n) : NULL;
    json_t *out = NULL;

    if (full != NULL) {
        snprintf(full, n, "%s\n\n-- %s (%s)", text, marker,
                 st->api->event_type(ev));
        out =
            json_pack("{s:s,s:b}", "body", full, "public", st->public_comments);
    }
    st->api->free(full);
    st->api->free(text);
    return out;
}

static plugboard_outcome_t
s_add_comment(zd_state_t *st, const char *ticket, json_t *comment,
              plugboard_result_t *res)
{
    char path[64];
    json_t *body = json_pack("{s:{s:O}}", "ticket", "comment", comment);
    zd_call_t call = {.what = "comment on ticket",
                      .method = "PUT",
                      .path = path,
                      .body = body,
                      .fresh = true};
    plugboard_outcome_t out;

    snprintf(path, sizeof path, "/api/v2/tickets/%s.json", ticket);
    if (body == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0, "out of memory");
        return PLUGBOARD_RETRY;
    }
    out = zd_request(st, &call, res);
    json_decref(call.json);
    json_decref(body);
    return out;
}

/* The new ticket's JSON. */
static json_t *
s_ticket_body(zd_state_t *st, const plugboard_event_t *ev,
              const zd_template_t *t, json_t *comment, const char *external)
{
    char *subject = plugboard_template_render(st->api, ev, t->subject,
                                              PLUGBOARD_ESCAPE_HEADER);
    json_t *tags = json_deep_copy(st->tags);
    const char *type = st->api->event_type(ev);
    const char *email_raw = NULL;
    size_t email_len = 0;
    char email[ZD_EMAIL_MAX + 1];
    char type_tag[64];
    json_t *ticket = NULL;
    json_t *name;

    snprintf(type_tag, sizeof type_tag, "%s", type);
    for (char *p = type_tag; *p != '\0'; p++) {
        *p = *p == '.' ? '_' : *p;
    }
    if (subject != NULL && tags != NULL &&
        json_array_append_new(tags, json_string(type_tag)) == 0) {
        ticket = json_pack("{s:s,s:O,s:s,s:O,s:s}", "subject",
                           subject[0] != '\0' ? subject : type, "comment",
                           comment, "priority", st->priority, "tags", tags,
                           "external_id", external);
    }
    if (ticket != NULL &&
        st->api->event_string(ev, "customer.email", &email_raw, &email_len) &&
        zd_email(email_raw, email_len, email, sizeof email) != NULL) {
        json_t *requester = json_pack("{s:s}", "email", email);

        name = NULL;
        if (requester != NULL) {
            const char *n = NULL;
            size_t nl = 0;

            if (st->api->event_string(ev, "customer.name", &n, &nl) && nl > 0 &&
                (name = json_stringn(n, nl)) != NULL) {
                json_object_set_new(requester, "name", name);
            }
            json_object_set_new(ticket, "requester", requester);
        }
    }
    json_decref(tags);
    st->api->free(subject);
    return ticket != NULL ? json_pack("{s:o}", "ticket", ticket) : NULL;
}

static plugboard_outcome_t
s_create_ticket(zd_state_t *st, const plugboard_event_t *ev,
                const zd_template_t *t, json_t *comment, const char *external,
                plugboard_result_t *res)
{
    char key[64];
    json_t *body = s_ticket_body(st, ev, t, comment, external);
    zd_call_t call = {.what = "create ticket",
                      .method = "POST",
                      .path = "/api/v2/tickets.json",
                      .body = body,
                      .idempotency = key};
    plugboard_outcome_t out;

    snprintf(key, sizeof key, "plugboard-%s", st->api->event_id(ev));
    if (body == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "create ticket: out of memory or a text is "
                             "not valid UTF-8");
        return PLUGBOARD_RETRY;
    }
    out = zd_request(st, &call, res);
    if (out == PLUGBOARD_OK) {
        st->api->count(st->host, "ticket_created", 1);
    }
    json_decref(call.json);
    json_decref(body);
    return out;
}

/* ------------------------------------------------------------------ */
/* deliver                                                             */
/* ------------------------------------------------------------------ */

static void
s_deliver(zd_state_t *st, const plugboard_event_t *ev, int index,
          plugboard_result_t *res)
{
    char external[ZD_EXTERNAL_ID_MAX + 1];
    char ticket[ZD_ID_MAX];
    char marker[64];
    bool found = false;
    json_t *comment;

    if (!s_external_id(st, ev, external)) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "the external_id template renders empty or "
                             "longer than %d bytes",
                             ZD_EXTERNAL_ID_MAX);
        return;
    }
    if (s_find_ticket(st, external, ticket, res) != PLUGBOARD_OK) {
        return;
    }
    if (ticket[0] == '\0' && !st->create_on[index]) {
        st->api->count(st->host, "no_ticket_to_comment", 1);
        st->api->log(st->host, PLUGBOARD_LOG_INFO,
                     "no open ticket with external_id=%s for %s; nothing "
                     "to comment on",
                     external, st->api->event_type(ev));
        return;
    }
    snprintf(marker, sizeof marker, S_MARKER "%s", st->api->event_id(ev));
    if (ticket[0] != '\0' && st->api->event_attempt(ev) > 1 &&
        s_has_comment(st, ticket, marker, &found, res) != PLUGBOARD_OK) {
        return;
    }
    if (found) {
        st->api->count(st->host, "comment_already_present", 1);
        return;
    }
    comment = s_comment(st, ev, &st->templates[index], marker);
    if (comment == NULL) {
        plugboard_result_set(res, PLUGBOARD_RETRY, 0,
                             "out of memory or the comment is not valid "
                             "UTF-8");
        return;
    }
    if (ticket[0] != '\0') {
        s_add_comment(st, ticket, comment, res);
    } else {
        s_create_ticket(st, ev, &st->templates[index], comment, external, res);
    }
    json_decref(comment);
}

void
zd_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *res)
{
    zd_state_t *st = state;
    int index = zd_type_index(st->api->event_type(ev));

    if (index < 0) {
        plugboard_result_set(res, PLUGBOARD_REJECT, 0,
                             "zendesk does not take '%s' events",
                             st->api->event_type(ev));
        return;
    }
    s_deliver(st, ev, index, res);
    if (res->outcome != PLUGBOARD_OK) {
        st->api->count(st->host,
                       res->outcome == PLUGBOARD_HOLD    ? "deliver_held"
                       : res->outcome == PLUGBOARD_RETRY ? "deliver_retry"
                                                         : "deliver_reject",
                       1);
    }
}
