/*
 * ticker.c - the test connector "ticker": a pull source.  Its run()
 * emits contact.upserted events numbered 0, 1, 2, ... (field "seq", key
 * "tick@example.com"), `batch` of them per flush, one flush every
 * `interval`, `count` events in all (0: until stopped).  It keeps a
 * cursor the way a real poller keeps its vendor cursor: it advances past
 * a batch only once api->durable says the batch is in the journal, and
 * writes each advance to the file `cursor` as "durable <seq>", and each
 * refused batch as "refused <first seq> <last seq>".
 */
#include <stdio.h>
#include <string.h>

#include <plugboard/plugboard.h>

static const plugboard_setting_spec_t s_settings[] = {
    {.name = "interval",
     .type = PLUGBOARD_SETTING_DURATION,
     .default_value = "20ms",
     .min = 1,
     .max = 60000,
     .help = "time between two flushes"},
    {.name = "batch",
     .type = PLUGBOARD_SETTING_INT,
     .default_value = "1",
     .min = 1,
     .max = 1000,
     .help = "events per flush"},
    {.name = "count",
     .type = PLUGBOARD_SETTING_INT,
     .default_value = "0",
     .min = 0,
     .max = 1000000,
     .help = "events in all (0: until stopped)"},
    {.name = "return_after",
     .type = PLUGBOARD_SETTING_INT,
     .default_value = "0",
     .min = 0,
     .max = 1000000,
     .help = "return from run after this many events, unasked (0: never)"},
    {.name = "flush_in_open",
     .type = PLUGBOARD_SETTING_BOOL,
     .default_value = "false",
     .help = "call api->flush from open (a misuse plugin-check names)"},
    {.name = "cursor",
     .type = PLUGBOARD_SETTING_STRING,
     .default_value = "",
     .help = "file the durable cursor is written to"},
    {.name = NULL},
};

static const char *const s_emits[] = {PLUGBOARD_EV_CONTACT_UPSERTED, NULL};

#define S_INFLIGHT 256 /* batches flushed, durability not known yet */

typedef struct s_ticker {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    int64_t interval_ms, batch, count, return_after;
    char cursor[512];
    struct {
        uint64_t ticket;
        int64_t first, last;
    } inflight[S_INFLIGHT];
    size_t inflight_count;
} s_ticker_t;

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    if (!PLUGBOARD_API_HAS(api, run_wait)) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "this host is too old: ticker needs ABI 1.1's run calls");
        return -1;
    }
    if (api->setting_bool(settings, "flush_in_open")) {
        uint64_t ticket;
        api->flush(host, &ticket); /* refused: not run's thread */
    }
    s_ticker_t *t = api->alloc(sizeof *t);
    if (!t) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(t, 0, sizeof *t);
    t->api = api;
    t->host = host;
    t->interval_ms = api->setting_int(settings, "interval");
    t->batch = api->setting_int(settings, "batch");
    t->count = api->setting_int(settings, "count");
    t->return_after = api->setting_int(settings, "return_after");
    snprintf(t->cursor, sizeof t->cursor, "%s",
             api->setting_string(settings, "cursor"));
    *state = t;
    return 0;
}

static void
s_close(void *state)
{
    s_ticker_t *t = state;
    if (t)
        t->api->free(t);
}

static void
s_note(const s_ticker_t *t, const char *what, int64_t a, int64_t b)
{
    if (!t->cursor[0])
        return;
    FILE *f = fopen(t->cursor, "a");
    if (!f)
        return;
    if (b >= 0)
        fprintf(f, "%s %lld %lld\n", what, (long long)a, (long long)b);
    else
        fprintf(f, "%s %lld\n", what, (long long)a);
    fclose(f);
}

/* Advance the cursor over the leading batches that are durable. */
static void
s_advance(s_ticker_t *t)
{
    size_t done = 0;
    while (done < t->inflight_count) {
        int d = t->api->durable(t->host, t->inflight[done].ticket);
        if (d == 0)
            break;
        if (d > 0)
            s_note(t, "durable", t->inflight[done].last, -1);
        else
            s_note(t, "refused", t->inflight[done].first,
                   t->inflight[done].last);
        done++;
    }
    memmove(t->inflight, t->inflight + done,
            (t->inflight_count - done) * sizeof t->inflight[0]);
    t->inflight_count -= done;
}

static void
s_run(void *state)
{
    s_ticker_t *t = state;
    const plugboard_host_api_t *api = t->api;
    int64_t seq = 0;
    while (api->run_wait(t->host, t->interval_ms)) {
        s_advance(t);
        if (t->return_after && seq >= t->return_after)
            return; /* a broken source: stops polling on its own */
        if ((t->count && seq >= t->count) || t->inflight_count == S_INFLIGHT)
            continue;
        int64_t first = seq;
        for (int64_t i = 0; i < t->batch && (!t->count || seq < t->count);
             i++, seq++) {
            plugboard_builder_t *b =
                api->builder_new(t->host, PLUGBOARD_EV_CONTACT_UPSERTED);
            api->builder_set_key(b, "tick@example.com");
            api->builder_set_string(b, "contact.email", "tick@example.com", 16);
            api->builder_set_int(b, "seq", seq);
            api->emit(t->host, &b);
        }
        uint64_t ticket = 0;
        if (api->flush(t->host, &ticket) != 0)
            s_note(t, "refused", first, seq - 1);
        else if (ticket) {
            t->inflight[t->inflight_count].ticket = ticket;
            t->inflight[t->inflight_count].first = first;
            t->inflight[t->inflight_count].last = seq - 1;
            t->inflight_count++;
        }
    }
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "ticker",
    .version = "1.0.0",
    .summary = "test pull source that emits numbered events from run()",
    .settings = s_settings,
    .emits = s_emits,
    .open = s_open,
    .close = s_close,
    .run = s_run,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
