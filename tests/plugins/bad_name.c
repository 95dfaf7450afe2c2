/*
 * bad_name.c - a test plugin whose descriptor name "Bad Name!" breaks the
 * [a-z0-9_-] rule (names appear in paths, metrics labels and logs), so the
 * loader must refuse it quoting the name.
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

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "Bad Name!",
    .version = "1.0.0",
    .summary = "test plugin: invalid descriptor name",
    .open = s_open,
    .close = s_close,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
