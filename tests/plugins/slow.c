/*
 * slow.c - the test connector "slow": a sink with a fixed service time,
 * or one that a vendor rate-limits.  The constraint finder's tests use it
 * to make one hop the bottleneck on purpose.  Settings:
 *
 *   service     DURATION  "0ms"  sleep this long in every deliver
 *   rate_limit  INT       0      accept at most N deliveries per second
 *                                (0: no limit); beyond it answer RETRY
 *                                with retry_after = the time left in the
 *                                current second, as a vendor's 429 does
 *
 * It consumes every event type and takes no webhooks.  With a
 * connector concurrency above 1 each delivery thread has its own state;
 * the counters are still kept under a lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <plugboard/plugboard.h>

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "service",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "0ms",
        .min = 0,
        .max = 60000,
        .help = "fixed time every deliver takes (0ms..60s)",
    },
    {
        .name = "rate_limit",
        .type = PLUGBOARD_SETTING_INT,
        .default_value = "0",
        .min = 0,
        .max = 1000000,
        .help = "deliveries accepted per second; more get RETRY with "
                "retry-after (0: unlimited)",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

typedef struct s_slow {
    const plugboard_host_api_t *api;
    int64_t service_ms;
    int64_t rate_limit;
    pthread_mutex_t lock;
    int64_t second; /* monotonic second the count belongs to */
    int64_t count;  /* deliveries accepted in it */
} s_slow_t;

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    (void)host;
    s_slow_t *s = api->alloc(sizeof *s);
    if (!s) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(s, 0, sizeof *s);
    s->api = api;
    s->service_ms = api->setting_int(settings, "service");
    s->rate_limit = api->setting_int(settings, "rate_limit");
    pthread_mutex_init(&s->lock, NULL);
    *state = s;
    return 0;
}

static void
s_close(void *state)
{
    s_slow_t *s = state;
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    s->api->free(s);
}

static void
s_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* true (and result set to RETRY) when this second's quota is used up */
static bool
s_limited(s_slow_t *s, plugboard_result_t *result)
{
    if (s->rate_limit <= 0)
        return false;
    int64_t now = s->api->monotonic_ms();
    bool limited;
    pthread_mutex_lock(&s->lock);
    if (now / 1000 != s->second) {
        s->second = now / 1000;
        s->count = 0;
    }
    limited = s->count >= s->rate_limit;
    if (!limited)
        s->count++;
    pthread_mutex_unlock(&s->lock);
    if (limited) {
        result->outcome = PLUGBOARD_RETRY;
        result->retry_after_ms = 1000 - now % 1000;
        snprintf(result->reason, sizeof result->reason,
                 "HTTP 429: more than %lld requests per second",
                 (long long)s->rate_limit);
    }
    return limited;
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *result)
{
    (void)ev;
    s_slow_t *s = state;
    result->outcome = PLUGBOARD_OK;
    if (s_limited(s, result))
        return;
    if (s->service_ms > 0)
        s_sleep_ms(s->service_ms);
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "slow",
    .version = "1.0.0",
    .summary = "test sink with a fixed service time or a vendor rate limit",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = NULL,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
