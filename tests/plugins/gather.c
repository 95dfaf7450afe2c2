/*
 * gather.c - the test connector "gather": a sink that proves how many of
 * its deliveries run at once.  Built twice: gather.so (deliver is not
 * thread-safe, so the host gives every delivery thread a state of its
 * own) and gather_ts.so (GATHER_THREAD_SAFE: one shared state).
 * Settings:
 *
 *   gather   INT       1       a deliver waits until this many deliveries
 *                              are inside deliver at once, then succeeds;
 *                              if they never are within `wait`, RETRY
 *   wait     DURATION  "5s"    how long a deliver waits for the others
 *   hang_key STRING    ""      the first attempt of an event with this
 *                              key sleeps `hang` before it answers
 *   hang     DURATION  "0ms"
 *   record   STRING    ""      append "<key> <attempt> <states> <seq>"
 *                              per delivered event (states: how many
 *                              states of this plugin are open; seq: the
 *                              event's integer field "seq", or -1)
 *
 * The counters are process-wide, since states may be many.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <plugboard/plugboard.h>

static const plugboard_setting_spec_t s_settings[] = {
    {.name = "gather",
     .type = PLUGBOARD_SETTING_INT,
     .default_value = "1",
     .min = 1,
     .max = 64,
     .help = "deliveries that must be inside deliver at once"},
    {.name = "wait",
     .type = PLUGBOARD_SETTING_DURATION,
     .default_value = "5s",
     .min = 1,
     .max = 60000,
     .help = "how long a deliver waits for the others"},
    {.name = "hang_key",
     .type = PLUGBOARD_SETTING_STRING,
     .default_value = "",
     .help = "key whose first attempt hangs"},
    {.name = "hang",
     .type = PLUGBOARD_SETTING_DURATION,
     .default_value = "0ms",
     .min = 0,
     .max = 60000,
     .help = "how long that attempt hangs"},
    {.name = "record",
     .type = PLUGBOARD_SETTING_STRING,
     .default_value = "",
     .help = "file to append delivered keys to"},
    {.name = NULL},
};

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_cond = PTHREAD_COND_INITIALIZER;
static int s_inside; /* deliveries inside deliver now */
static int s_high;   /* the most there have been at once */
static int s_states; /* open states */

typedef struct s_gather {
    const plugboard_host_api_t *api;
    int64_t gather, wait_ms, hang_ms;
    char hang_key[128];
    char record[512];
} s_gather_t;

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    (void)host;
    s_gather_t *g = api->alloc(sizeof *g);
    if (!g) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(g, 0, sizeof *g);
    g->api = api;
    g->gather = api->setting_int(settings, "gather");
    g->wait_ms = api->setting_int(settings, "wait");
    g->hang_ms = api->setting_int(settings, "hang");
    snprintf(g->hang_key, sizeof g->hang_key, "%s",
             api->setting_string(settings, "hang_key"));
    snprintf(g->record, sizeof g->record, "%s",
             api->setting_string(settings, "record"));
    pthread_mutex_lock(&s_lock);
    s_states++;
    pthread_mutex_unlock(&s_lock);
    *state = g;
    return 0;
}

static void
s_close(void *state)
{
    s_gather_t *g = state;
    if (!g)
        return;
    pthread_mutex_lock(&s_lock);
    s_states--;
    pthread_mutex_unlock(&s_lock);
    g->api->free(g);
}

static void
s_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *res)
{
    s_gather_t *g = state;
    const char *key = g->api->event_key(ev);
    uint32_t attempt = g->api->event_attempt(ev);
    if (g->hang_key[0] && attempt == 1 && strcmp(key, g->hang_key) == 0)
        s_sleep_ms(g->hang_ms);

    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + g->wait_ms * 1000000;
    until.tv_sec += (time_t)(ns / 1000000000);
    until.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&s_lock);
    s_inside++;
    if (s_inside > s_high)
        s_high = s_inside;
    pthread_cond_broadcast(&s_cond);
    while (s_high < g->gather)
        if (pthread_cond_timedwait(&s_cond, &s_lock, &until) != 0)
            break;
    bool gathered = s_high >= g->gather;
    int high = s_high, states = s_states;
    s_inside--;
    if (gathered && g->record[0]) {
        FILE *f = fopen(g->record, "a");
        if (f) {
            int64_t seq = -1;
            g->api->event_int(ev, "seq", &seq);
            fprintf(f, "%s %u %d %lld\n", key, attempt, states, (long long)seq);
            fclose(f);
        }
    }
    pthread_mutex_unlock(&s_lock);
    if (!gathered) {
        res->outcome = PLUGBOARD_RETRY;
        snprintf(res->reason, sizeof res->reason,
                 "at most %d deliveries ran at once, %lld wanted", high,
                 (long long)g->gather);
    }
}

#ifdef GATHER_THREAD_SAFE
#define S_NAME "gather_ts"
#define S_FLAGS PLUGBOARD_DELIVER_THREAD_SAFE
#else
#define S_NAME "gather"
#define S_FLAGS 0
#endif

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = S_NAME,
    .version = "1.0.0",
    .summary = "test sink that counts its deliveries running at once",
    .settings = s_settings,
    .consumes = s_consumes,
    .flags = S_FLAGS,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
