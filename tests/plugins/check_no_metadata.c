/*
 * check_no_metadata.c - a test plugin for plugin-check: loads and works,
 * but its descriptor says nothing about itself: no version, no summary,
 * and it consumes a type that is not canonical ("payments.failed", a
 * typo of "payment.failed").  plugin-check must fail `metadata` naming
 * each of the three.
 */
#include <stddef.h>

#include <plugboard/plugboard.h>

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    *state = NULL;
    return 0;
}

static void
s_close(void *state)
{
}

static void
s_deliver(void *state, const plugboard_event_t *event,
          plugboard_result_t *result)
{
}

static const char *const s_consumes[] = {"payments.failed", NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "check_no_metadata",
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
