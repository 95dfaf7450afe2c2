/*
 * check_leaky_thread.c - a test plugin for plugin-check: open starts a
 * worker thread and close forgets to stop and join it, so the thread
 * outlives close (the contract forbids it: the host may unload the .so
 * right after close).  plugin-check must fail `lifecycle` saying a thread
 * still runs after close.
 */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include <plugboard/plugboard.h>

static void *
s_worker(void *arg)
{
    for (;;)
        sleep(1);
    return NULL;
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    pthread_t t;
    if (pthread_create(&t, NULL, s_worker, NULL) != 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot start a thread");
        return -1;
    }
    pthread_detach(t); /* BUG (on purpose): never stopped, never joined */
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

static const char *const s_consumes[] = {PLUGBOARD_EV_TICKET_CREATED, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "check_leaky_thread",
    .version = "1.0.0",
    .summary = "test plugin: a thread started in open outlives close",
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
