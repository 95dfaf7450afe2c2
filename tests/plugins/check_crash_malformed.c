/*
 * check_crash_malformed.c - a test plugin for plugin-check: deliver trusts
 * that "currency" is a string and uses it without checking event_string's
 * answer, so it handles the canonical payment.failed sample but crashes on
 * an event missing the field or carrying a number there.  plugin-check must
 * pass `samples` and fail `malformed` naming the crash.
 */
#include <stddef.h>

#include <plugboard/plugboard.h>

typedef struct s_state {
    const plugboard_host_api_t *api;
} s_state_t;

static s_state_t s_the_state;

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    s_the_state.api = api;
    *state = &s_the_state;
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
    s_state_t *st = state;
    const char *volatile currency = NULL;
    size_t len = 0;
    /* BUG (on purpose): the answer is not checked, currency stays NULL */
    st->api->event_string(event, "currency", (const char **)&currency, &len);
    if (currency[0] == '\0')
        result->outcome = PLUGBOARD_REJECT;
}

static const char *const s_consumes[] = {PLUGBOARD_EV_PAYMENT_FAILED, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "check_crash_malformed",
    .version = "1.0.0",
    .summary = "test plugin: crashes on an event without a currency",
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
