/*
 * check_leaky_open.c - a test plugin for plugin-check: every open mallocs
 * 64 bytes and opens /dev/null, and close frees neither.  plugin-check
 * must fail `lifecycle` naming the leaked memory and descriptors.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugboard.h>

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    char *volatile leak = malloc(64); /* BUG (on purpose): never freed */
    if (leak)
        memset(leak, 1, 64);
    (void)open("/dev/null", O_RDONLY | O_CLOEXEC); /* BUG: never closed */
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
    .name = "check_leaky_open",
    .version = "1.0.0",
    .summary = "test plugin: each open leaks memory and a descriptor",
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
