/*
 * check_sloppy_metadata.c - a test plugin for plugin-check: a descriptor
 * left half-done from the scaffold.  It has no name, a setting whose
 * default does not parse ("soon" for a duration), and summary and help
 * text that still start with "TODO".  plugin-check must fail `metadata`
 * saying to set .name and what the default should be (once, without the
 * binding's own prefix), and warn about each TODO.
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

static const plugboard_setting_spec_t s_settings[] = {
    {.name = "timeout",
     .type = PLUGBOARD_SETTING_DURATION,
     .default_value = "soon",
     .help = "TODO: say what this setting does"},
    {.name = NULL},
};

static const char *const s_consumes[] = {PLUGBOARD_EV_TICKET_CREATED, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .version = "0.1.0",
    .summary = "TODO: one line saying what this connector does",
    .settings = s_settings,
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
