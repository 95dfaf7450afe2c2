/*
 * relay.c - a test sink that emits from deliver: every payment.failed or
 * contact.upserted it is given becomes one contact.upserted for the same
 * key (the key as contact.email).  It has no webhook, so every event it
 * emits is emitted on a delivery thread (the actor's, a pool thread's or
 * a worker process's, as the connector is configured).
 *
 * The tests use it to see what the host adds to an event emitted during
 * a delivery (causation and correlation, docs/events.md), and that
 * plugin-check takes emits without a webhook as the ordinary case it is.
 * It keeps no state, so any concurrency is safe.  Setting emit_in_open
 * (bool) makes open emit too and fail unless emit answered
 * PLUGBOARD_E_INVALID: nothing may be emitted from open.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <plugboard/plugboard.h>

typedef struct s_relay {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
} relay_t;

static relay_t s_relay; /* open hands out this one, read-only after */

static const plugboard_setting_spec_t s_settings[] = {
    {.name = "emit_in_open",
     .type = PLUGBOARD_SETTING_BOOL,
     .default_value = "false",
     .help = "emit from open, and fail open unless the host refuses it"},
    {.name = NULL},
};

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    if (api->setting_bool(settings, "emit_in_open")) {
        plugboard_builder_t *b =
            api->builder_new(host, PLUGBOARD_EV_CONTACT_UPSERTED);
        api->builder_set_string(b, "contact.email", "open@example.com", 16);
        int rc = api->emit(host, &b);
        if (rc != PLUGBOARD_E_INVALID || b != NULL) {
            snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                     "emit in open returned %d, not PLUGBOARD_E_INVALID", rc);
            return -1;
        }
    }
    s_relay.api = api;
    s_relay.host = host;
    *state = &s_relay;
    return 0;
}

static void
s_close(void *state)
{
    (void)state;
}

static void
s_deliver(void *state, const plugboard_event_t *event,
          plugboard_result_t *result)
{
    relay_t *r = state;
    const char *key = r->api->event_key(event);
    plugboard_builder_t *b =
        r->api->builder_new(r->host, PLUGBOARD_EV_CONTACT_UPSERTED);
    if (!b || r->api->builder_set_key(b, key) != 0 ||
        r->api->builder_set_string(b, "contact.email", key, strlen(key)) != 0 ||
        r->api->builder_set_string(b, "contact.source", "relay", 5) != 0) {
        r->api->builder_discard(&b);
        result->outcome = PLUGBOARD_RETRY;
        strcpy(result->reason, "cannot build the relayed event");
        return;
    }
    int rc = r->api->emit(r->host, &b);
    if (rc != 0) {
        result->outcome = PLUGBOARD_RETRY;
        strcpy(result->reason, "the host refused the relayed event");
    }
}

static const char *const s_consumes[] = {PLUGBOARD_EV_PAYMENT_FAILED,
                                         PLUGBOARD_EV_CONTACT_UPSERTED, NULL};
static const char *const s_emits[] = {PLUGBOARD_EV_CONTACT_UPSERTED, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "relay",
    .version = "1.0.0",
    .summary = "turns each event it is given into a contact.upserted",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = s_emits,
    .flags = PLUGBOARD_DELIVER_THREAD_SAFE,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
