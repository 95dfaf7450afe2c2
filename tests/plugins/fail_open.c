/*
 * fail_open.c - a well-formed test plugin whose open always fails with
 * "cannot reach the vendor: connection refused", as a connector does when
 * its vendor is down at start-up.  The host must report that message and
 * must not call close.
 */
#include <stdio.h>

#include <plugboard/plugboard.h>

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
             "cannot reach the vendor: connection refused");
    return -1;
}

static void
s_close(void *state)
{
    /* never called: open failed */
}

static void
s_deliver(void *state, const plugboard_event_t *event,
          plugboard_result_t *result)
{
    result->outcome = PLUGBOARD_OK;
}

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "fail_open",
    .version = "1.0.0",
    .summary = "test plugin: open always fails",
    .consumes = s_consumes,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
