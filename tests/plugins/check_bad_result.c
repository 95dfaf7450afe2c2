/*
 * check_bad_result.c - a test plugin for plugin-check: deliver answers
 * REJECT without a reason, so an admin looking at the dead letter cannot
 * tell why.  plugin-check must fail `samples` saying "reject without a
 * reason".
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
    result->outcome = PLUGBOARD_REJECT; /* BUG (on purpose): no reason */
}

static const char *const s_consumes[] = {PLUGBOARD_EV_EMAIL_BOUNCED, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "check_bad_result",
    .version = "1.0.0",
    .summary = "test plugin: rejects without saying why",
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
