/*
 * crash_deliver.c - a test plugin that opens fine and crashes in deliver
 * by writing through a NULL pointer.  It is for process-isolation tests
 * (isolation = "process"): the supervisor must see the worker die, count
 * it, retry the delivery without spending more than one attempt, and keep
 * every other connector running.  Never call its deliver in-process.
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
    /* volatile: the store must really happen, not be optimised away */
    int *volatile target = NULL;
    *target = 1;
    result->outcome = PLUGBOARD_OK;
}

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "crash_deliver",
    .version = "1.0.0",
    .summary = "test plugin: deliver dereferences NULL",
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
