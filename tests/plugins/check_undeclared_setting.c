/*
 * check_undeclared_setting.c - a test plugin for plugin-check: declares a
 * "path" setting but also reads "api_token", which it never declared, so
 * no admin can set it and the host answers NULL.  plugin-check must fail
 * `settings-read` naming 'api_token'.
 */
#include <stddef.h>

#include <plugboard/plugboard.h>

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "path",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "/dev/null",
        .help = "where events would go",
    },
    {.name = NULL},
};

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    (void)api->setting_string(settings, "path");
    /* BUG (on purpose): not in s_settings */
    (void)api->setting_string(settings, "api_token");
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

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "check_undeclared_setting",
    .version = "1.0.0",
    .summary = "test plugin: reads a setting it does not declare",
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
