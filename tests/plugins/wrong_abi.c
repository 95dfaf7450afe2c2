/*
 * wrong_abi.c - a test plugin built "for the next ABI": its descriptor
 * says PLUGBOARD_ABI_VERSION + 1, so the loader must refuse it with a
 * message naming both ABI numbers.  Otherwise well-formed.
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
    .abi_version = PLUGBOARD_ABI_VERSION + 1,
    .size = sizeof(plugboard_connector_t),
    .name = "wrong_abi",
    .version = "1.0.0",
    .summary = "test plugin: built for an ABI the host does not speak",
    .open = s_open,
    .close = s_close,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
