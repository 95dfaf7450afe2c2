/*
 * check_foreign_thread.c - a test plugin for plugin-check: open starts a
 * thread that calls api->count (a host API function only the thread the
 * host called in from may use) and close joins it properly.  plugin-check
 * must fail `threads` naming count, and nothing else.
 *
 * Built once more as check_foreign_event_count.so (FOREIGN_EVENT_COUNT),
 * whose thread calls api->event_count instead (an ABI 1.1 entry, which
 * plugin-check must wrap like the others).
 */
#include <pthread.h>
#include <stdio.h>

#include <plugboard/plugboard.h>

typedef struct s_state {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    pthread_t thread;
} s_state_t;

static void *
s_worker(void *arg)
{
    s_state_t *st = arg;
#ifdef FOREIGN_EVENT_COUNT
    (void)st->api->event_count(NULL, "tags"); /* BUG (on purpose) */
#else
    st->api->count(st->host, "ticks", 1); /* BUG (on purpose) */
#endif
    st->api->log(st->host, PLUGBOARD_LOG_DEBUG, "tick"); /* allowed */
    return NULL;
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    s_state_t *st = api->alloc(sizeof *st);
    if (!st) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    st->api = api;
    st->host = host;
    if (pthread_create(&st->thread, NULL, s_worker, st) != 0) {
        api->free(st);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot start a thread");
        return -1;
    }
    *state = st;
    return 0;
}

static void
s_close(void *state)
{
    s_state_t *st = state;
    pthread_join(st->thread, NULL);
    st->api->free(st);
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
    .name = "check_foreign_thread",
    .version = "1.0.0",
    .summary = "test plugin: calls the host API from its own thread",
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
