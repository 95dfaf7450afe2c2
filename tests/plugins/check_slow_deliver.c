/*
 * check_slow_deliver.c - a test plugin for plugin-check: it promises a
 * 200 ms delivery deadline (deliver_timeout_ms) and then takes 5 s on a
 * ticket.solved event.  plugin-check must fail `samples` saying deliver did
 * not return within 200 ms for the 'ticket.solved' sample.
 */
#include <string.h>
#include <unistd.h>

#include <plugboard/plugboard.h>

static const plugboard_host_api_t *s_api;

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    s_api = api;
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
    if (strcmp(s_api->event_type(event), PLUGBOARD_EV_TICKET_SOLVED) == 0)
        sleep(5);
}

static const char *const s_consumes[] = {"ticket.*", NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "check_slow_deliver",
    .version = "1.0.0",
    .summary = "test plugin: deliver overruns its own deadline",
    .consumes = s_consumes,
    .deliver_timeout_ms = 200,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
