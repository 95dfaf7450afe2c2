/*
 * abi1_size.c - a plugin as one built against the ABI 1 header looks to
 * the host: its descriptor's size stops after webhook, so the host must
 * read every later field (ABI 1.1's run) as absent, whatever lies in
 * memory behind it.  Here a run pointer does lie there.
 */
#include <stddef.h>

#include <plugboard/plugboard.h>

static const plugboard_setting_spec_t s_settings[] = {{.name = NULL}};
static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    (void)api;
    (void)settings;
    (void)errbuf;
    *state = host;
    return 0;
}

static void
s_close(void *state)
{
    (void)state;
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *r)
{
    (void)state;
    (void)ev;
    (void)r;
}

static void
s_run(void *state)
{
    (void)state; /* never called: the size says ABI 1 */
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = offsetof(plugboard_connector_t, webhook) +
            sizeof(((plugboard_connector_t *)0)->webhook),
    .name = "abi1_size",
    .version = "1.0.0",
    .summary = "a descriptor of ABI 1's size",
    .settings = s_settings,
    .consumes = s_consumes,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
    .run = s_run,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
