/*
 * bench_sink.c - the benchmark's counting sink.
 *
 * deliver() reads the event's "seq" field, counts the delivery and, the
 * first time a seq is seen, stores the monotonic time in nanoseconds in a
 * table the benchmark lends (for latency).  Every instance in the process
 * shares the counters: the benchmark loads this file without a private
 * copy and reaches the same globals with dlsym (bench_sink_reset,
 * bench_sink_count); a connector never does that, a benchmark may.
 */
#include <plugboard/plugboard.h>

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define S_EXPORT __attribute__((visibility("default")))

typedef struct s_sink {
    const plugboard_host_api_t *api;
} s_sink_t;

static atomic_uint_fast64_t s_count;
static _Atomic(uint64_t *) s_times;
static atomic_size_t s_times_cap;

/* Zero the count and lend a table of cap times (may be NULL). */
S_EXPORT void
bench_sink_reset(uint64_t *times, size_t cap)
{
    atomic_store(&s_times, NULL);
    atomic_store(&s_times_cap, times ? cap : 0);
    atomic_store(&s_times, times);
    atomic_store(&s_count, 0);
}

/* Deliveries seen since the last reset, by every instance. */
S_EXPORT uint64_t
bench_sink_count(void)
{
    return atomic_load(&s_count);
}

static const plugboard_setting_spec_t s_settings[] = {{.name = NULL}};
static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    (void)host;
    (void)settings;
    (void)errbuf;
    s_sink_t *s = api->alloc(sizeof *s);
    if (!s)
        return -1;
    s->api = api;
    *state = s;
    return 0;
}

static void
s_close(void *state)
{
    s_sink_t *s = state;
    if (s)
        s->api->free(s);
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *res)
{
    s_sink_t *s = state;
    int64_t seq = -1;
    uint64_t *times = atomic_load(&s_times);
    if (times && s->api->event_int(ev, "seq", &seq) && seq >= 0 &&
        (size_t)seq < atomic_load(&s_times_cap) && times[seq] == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        times[seq] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    atomic_fetch_add(&s_count, 1);
    res->outcome = PLUGBOARD_OK;
}

static const plugboard_connector_t s_descriptor = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "bench_sink",
    .version = "0.1.0",
    .summary = "benchmark sink: counts deliveries and records their time",
    .settings = s_settings,
    .consumes = s_consumes,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_descriptor;
}
