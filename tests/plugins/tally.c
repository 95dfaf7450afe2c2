/*
 * tally.c - the test connector "tally": a sink that counts things with
 * api->count on every delivery and, while a gate file exists, is refused
 * by its "vendor" for bad credentials (api->auth_failed).  Settings:
 *
 *   count      STRING  ""  name=delta pairs, comma-separated, counted on
 *                          every delivery exactly as written (so bad names
 *                          and negative deltas reach the host too)
 *   distinct   INT     0   also count d_0 .. d_<n-1> by 1 each delivery
 *   auth_gate  STRING      while this file exists, every delivery calls
 *                          auth_failed("HTTP 401: the API token was
 *                          revoked") and answers RETRY
 *
 * It consumes every event type, takes no webhooks and declares deliver
 * thread-safe (its state is read-only after open).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plugboard/plugboard.h>

#define S_MAX_PAIRS 16

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "count",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "",
        .help = "name=delta pairs counted on every delivery",
    },
    {
        .name = "distinct",
        .type = PLUGBOARD_SETTING_INT,
        .default_value = "0",
        .min = 0,
        .max = 100,
        .help = "also count d_0 .. d_<n-1> on every delivery",
    },
    {
        .name = "auth_gate",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "while this file exists, credentials are refused",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

typedef struct s_pair {
    char name[80];
    int64_t delta;
} pair_t;

typedef struct s_tally {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    pair_t pairs[S_MAX_PAIRS];
    size_t pair_count;
    int64_t distinct;
    char gate[4096];
} tally_t;

static int
s_parse(tally_t *t, const char *spec, char *errbuf)
{
    while (spec && *spec) {
        size_t n = strcspn(spec, ",");
        const char *eq = memchr(spec, '=', n);
        if (!eq || t->pair_count == S_MAX_PAIRS ||
            (size_t)(eq - spec) >= sizeof t->pairs[0].name) {
            snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                     "setting 'count': expected name=delta pairs");
            return -1;
        }
        pair_t *p = &t->pairs[t->pair_count++];
        memcpy(p->name, spec, (size_t)(eq - spec));
        p->name[eq - spec] = '\0';
        p->delta = strtoll(eq + 1, NULL, 10);
        spec += n;
        if (*spec == ',')
            spec++;
    }
    return 0;
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    tally_t *t = api->alloc(sizeof *t);
    if (!t) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(t, 0, sizeof *t);
    t->api = api;
    t->host = host;
    t->distinct = api->setting_int(settings, "distinct");
    const char *gate = api->setting_string(settings, "auth_gate");
    snprintf(t->gate, sizeof t->gate, "%s", gate ? gate : "");
    if (s_parse(t, api->setting_string(settings, "count"), errbuf) != 0) {
        api->free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static void
s_close(void *state)
{
    tally_t *t = state;
    if (t)
        t->api->free(t);
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *result)
{
    (void)ev;
    tally_t *t = state;
    for (size_t i = 0; i < t->pair_count; i++)
        t->api->count(t->host, t->pairs[i].name, t->pairs[i].delta);
    for (int64_t i = 0; i < t->distinct; i++) {
        char name[32];
        snprintf(name, sizeof name, "d_%lld", (long long)i);
        t->api->count(t->host, name, 1);
    }
    result->outcome = PLUGBOARD_OK;
    if (t->gate[0] && access(t->gate, F_OK) == 0) {
        if (PLUGBOARD_API_HAS(t->api, auth_failed))
            t->api->auth_failed(t->host, "HTTP 401: the API token was revoked");
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason,
                 "send: authentication failed (HTTP 401)");
    }
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "tally",
    .version = "1.0.0",
    .summary = "test sink that counts things and can be refused "
               "credentials",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = NULL,
    .flags = PLUGBOARD_DELIVER_THREAD_SAFE,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
