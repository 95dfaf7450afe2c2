/*
 * small_size.c - a test plugin whose descriptor has the right ABI version
 * but claims to be only 16 bytes long (as a truncated or hand-rolled
 * struct would): the loader must refuse it, naming both sizes, and must
 * not read past those 16 bytes.
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
    .size = 16,
    .name = "small_size",
    .version = "1.0.0",
    .summary = "test plugin: descriptor smaller than the ABI's",
    .open = s_open,
    .close = s_close,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
