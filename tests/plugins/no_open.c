/*
 * no_open.c - a test plugin whose descriptor has no open callback (open
 * is required), so the loader must refuse it naming the callback.
 */
#include <stddef.h>

#include <plugboard/plugboard.h>

static void
s_close(void *state)
{
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "no_open",
    .version = "1.0.0",
    .summary = "test plugin: descriptor without open",
    .open = NULL,
    .close = s_close,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
