/*
 * bench_source.c - the benchmark's source connector.
 *
 * Declares that it emits bench.event and does nothing else: the benchmark
 * does not start an actor for it.  A bench thread takes its place on the
 * router, with a DEALER whose routing id is this connector's name, and
 * emits batches as fast as the router acknowledges them (bench/pb_bench.c).
 * The plugin exists so that the config, the route checks and the router's
 * table are exactly what the host builds for a real source.
 */
#include <plugboard/plugboard.h>

#include <stddef.h>

static const plugboard_setting_spec_t s_settings[] = {{.name = NULL}};
static const char *const s_emits[] = {"bench.event", NULL};

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    (void)api;
    (void)host;
    (void)settings;
    (void)errbuf;
    *state = NULL;
    return 0;
}

static void
s_close(void *state)
{
    (void)state;
}

static const plugboard_connector_t s_descriptor = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "bench_source",
    .version = "0.1.0",
    .summary = "benchmark source: emits bench.event (driven by pb_bench)",
    .settings = s_settings,
    .emits = s_emits,
    .open = s_open,
    .close = s_close,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_descriptor;
}
