/*
 * good.c - the well-formed test connector "good": a sink that can be told
 * to fail, reject or be slow, and a webhook source that emits whatever
 * event the request describes.
 *
 * Loader, router, connector and integration tests use it as a stand-in
 * for any real connector.  Settings:
 *
 *   label         STRING    "x"    names the instance in its webhook
 *                                  answers and logs (tells builds apart)
 *   fail_first    INT       0      answer RETRY to the first N deliveries
 *                                  of each event id, then succeed
 *   reject_types  STRING    unset  comma-separated event types answered
 *                                  REJECT (exact names, spaces ignored)
 *   delay         DURATION  "0ms"  sleep this long in every deliver
 *   record        STRING    unset  a file: every event answered OK is
 *                                  appended as one JSON line
 *                                  (api->event_to_json, so with its
 *                                  attempt number)
 *
 * deliver is thread-safe (PLUGBOARD_DELIVER_THREAD_SAFE): the per-id
 * failure counts and the record file are guarded by one mutex, and delay
 * is slept outside it, so concurrency = N really has N calls in flight.
 * Order inside deliver: delay, reject_types, fail_first, record.
 *
 * The webhook takes POST bodies of the form
 *   {"type": "payment.failed", "key": "a@example.com",
 *    "dedupe": "evt_1", "data": {"amount": 1200}}
 * (key, dedupe and data optional) or a JSON array of such objects.  Every
 * event is built before any is emitted, so a bad body emits nothing.  The
 * answer is 200 {"accepted":N,"label":"..."}; 400 when the body is not
 * JSON, not of that shape, or names a type this connector does not emit;
 * 405 for a method other than POST; 413 when the host refuses that many
 * events in one request; 503 when the host is stopping.
 *
 * It links only libplugboard-sdk (and the jansson it brings), never host
 * symbols.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <plugboard/plugboard.h>

#define S_MAX_EVENTS 64 /* events one webhook request may carry */
#define S_MAX_REJECT 32 /* types reject_types may list */
#define S_TYPE_MAX 64   /* longest event type name kept */

/* ------------------------------------------------------------------ */
/* Descriptor data                                                     */
/* ------------------------------------------------------------------ */

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "label",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "x",
        .help = "a name for this instance, echoed in webhook answers",
    },
    {
        .name = "fail_first",
        .type = PLUGBOARD_SETTING_INT,
        .default_value = "0",
        .min = 0,
        .max = 1000000,
        .help = "answer RETRY to the first N deliveries of each event id",
    },
    {
        .name = "reject_types",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "comma-separated event types to answer REJECT",
    },
    {
        .name = "delay",
        .type = PLUGBOARD_SETTING_DURATION,
        .default_value = "0ms",
        .min = 0,
        .max = 3600000,
        .help = "sleep this long in every deliver (0ms..1h)",
    },
    {
        .name = "record",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "file to append each delivered event to, one JSON line",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static const char *const s_emits[] = {
    PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_CONTACT_UPSERTED,
    NULL,
};

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

/* One event id and how many times deliver has seen it. */
typedef struct s_seen {
    char *id; /* api->alloc; NULL marks a free slot */
    int64_t count;
} s_seen_t;

typedef struct s_good {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    const char *label; /* borrowed from settings until close */
    int64_t fail_first;
    int64_t delay_ms;
    char reject[S_MAX_REJECT][S_TYPE_MAX];
    size_t reject_count;
    int record_fd;     /* -1 when record is unset */
    char *record_path; /* api->alloc, for messages */

    pthread_mutex_t lock; /* guards seen and writes to record_fd */
    s_seen_t *seen;       /* open addressing, power-of-two capacity */
    size_t seen_cap;
    size_t seen_count;
} s_good_t;

static char *
s_strdup(const plugboard_host_api_t *api, const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = api->alloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

/* ------------------------------------------------------------------ */
/* Per-event-id counts                                                 */
/* ------------------------------------------------------------------ */

static uint64_t
s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static s_seen_t *
s_seen_slot(s_seen_t *table, size_t cap, const char *id)
{
    size_t i = (size_t)s_hash(id) & (cap - 1);
    while (table[i].id && strcmp(table[i].id, id) != 0)
        i = (i + 1) & (cap - 1);
    return &table[i];
}

/* Keep the table at most half full.  Returns 0 or -1 (out of memory). */
static int
s_seen_grow(s_good_t *g)
{
    if (g->seen_count * 2 < g->seen_cap)
        return 0;
    size_t cap = g->seen_cap ? g->seen_cap * 2 : 64;
    s_seen_t *table = g->api->alloc(cap * sizeof *table);
    if (!table)
        return -1;
    memset(table, 0, cap * sizeof *table);
    for (size_t i = 0; i < g->seen_cap; i++)
        if (g->seen[i].id)
            *s_seen_slot(table, cap, g->seen[i].id) = g->seen[i];
    g->api->free(g->seen);
    g->seen = table;
    g->seen_cap = cap;
    return 0;
}

/* Count one more delivery of id; the new count, or -1 when out of
 * memory.  Called with the lock held. */
static int64_t
s_seen_bump(s_good_t *g, const char *id)
{
    if (s_seen_grow(g) != 0)
        return -1;
    s_seen_t *slot = s_seen_slot(g->seen, g->seen_cap, id);
    if (!slot->id) {
        if (!(slot->id = s_strdup(g->api, id)))
            return -1;
        g->seen_count++;
    }
    return ++slot->count;
}

/* ------------------------------------------------------------------ */
/* open / close                                                        */
/* ------------------------------------------------------------------ */

/* Split reject_types into g->reject.  Returns 0, or -1 with errbuf. */
static int
s_parse_reject(s_good_t *g, const char *list, char *errbuf)
{
    const char *p = list;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 0)
            break;
        if (n >= S_TYPE_MAX || g->reject_count == S_MAX_REJECT) {
            snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                     "setting 'reject_types': at most %d types of at most "
                     "%d characters",
                     S_MAX_REJECT, S_TYPE_MAX - 1);
            return -1;
        }
        memcpy(g->reject[g->reject_count], p, n);
        g->reject[g->reject_count++][n] = '\0';
        p += n;
        p += strcspn(p, ",");
    }
    return 0;
}

static int
s_open_record(s_good_t *g, const char *path, char *errbuf)
{
    g->record_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (g->record_fd < 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot open record '%s': %s",
                 path, strerror(errno));
        return -1;
    }
    if (!(g->record_path = s_strdup(g->api, path))) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    return 0;
}

static void
s_close(void *state)
{
    s_good_t *g = state;
    if (!g)
        return;
    const plugboard_host_api_t *api = g->api;
    for (size_t i = 0; i < g->seen_cap; i++)
        api->free(g->seen[i].id);
    api->free(g->seen);
    if (g->record_fd >= 0)
        close(g->record_fd);
    api->free(g->record_path);
    pthread_mutex_destroy(&g->lock);
    api->free(g);
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    s_good_t *g = api->alloc(sizeof *g);
    if (!g) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(g, 0, sizeof *g);
    g->api = api;
    g->host = host;
    g->record_fd = -1;
    pthread_mutex_init(&g->lock, NULL);
    g->label = api->setting_string(settings, "label");
    if (!g->label)
        g->label = "x";
    g->fail_first = api->setting_int(settings, "fail_first");
    g->delay_ms = api->setting_int(settings, "delay");

    const char *record = api->setting_string(settings, "record");
    if (s_parse_reject(g, api->setting_string(settings, "reject_types"),
                       errbuf) != 0 ||
        (record && *record && s_open_record(g, record, errbuf) != 0)) {
        s_close(g);
        return -1;
    }
    api->log(host, PLUGBOARD_LOG_DEBUG,
             "opened label=%s fail_first=%lld delay_ms=%lld rejects=%zu",
             g->label, (long long)g->fail_first, (long long)g->delay_ms,
             g->reject_count);
    *state = g;
    return 0;
}

/* ------------------------------------------------------------------ */
/* deliver                                                             */
/* ------------------------------------------------------------------ */

static void
s_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static bool
s_rejected(const s_good_t *g, const char *type)
{
    for (size_t i = 0; i < g->reject_count; i++)
        if (strcmp(g->reject[i], type) == 0)
            return true;
    return false;
}

/* Append one line to the record file.  Returns 0 or an errno value.
 * Called with the lock held, so lines never interleave. */
static int
s_record(s_good_t *g, const plugboard_event_t *ev)
{
    char *json = g->api->event_to_json(ev);
    if (!json)
        return ENOMEM;
    size_t len = strlen(json);
    char *line = g->api->alloc(len + 1);
    if (!line) {
        g->api->free(json);
        return ENOMEM;
    }
    memcpy(line, json, len);
    line[len] = '\n';
    g->api->free(json);

    int err = 0;
    size_t done = 0;
    while (done < len + 1) {
        ssize_t n = write(g->record_fd, line + done, len + 1 - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : EIO;
            break;
        }
        done += (size_t)n;
    }
    g->api->free(line);
    return err;
}

/* Count this delivery of the event; true (and result set to RETRY) while
 * the event has been seen at most fail_first times.  Lock held. */
static bool
s_fail_on_purpose(s_good_t *g, const char *id, plugboard_result_t *result)
{
    if (g->fail_first <= 0)
        return false;
    int64_t count = s_seen_bump(g, id);
    if (count > g->fail_first)
        return false;
    result->outcome = PLUGBOARD_RETRY;
    if (count < 0)
        snprintf(result->reason, sizeof result->reason, "out of memory");
    else
        snprintf(result->reason, sizeof result->reason,
                 "failing delivery %lld of %lld on purpose (fail_first)",
                 (long long)count, (long long)g->fail_first);
    return true;
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *result)
{
    s_good_t *g = state;
    const plugboard_host_api_t *api = g->api;
    const char *type = api->event_type(ev);

    result->outcome = PLUGBOARD_OK;
    if (g->delay_ms > 0)
        s_sleep_ms(g->delay_ms);
    if (s_rejected(g, type)) {
        result->outcome = PLUGBOARD_REJECT;
        snprintf(result->reason, sizeof result->reason,
                 "type '%s' is rejected by setting reject_types", type);
        return;
    }
    pthread_mutex_lock(&g->lock);
    int err = 0;
    if (!s_fail_on_purpose(g, api->event_id(ev), result) && g->record_fd >= 0 &&
        (err = s_record(g, ev)) != 0) {
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason,
                 "cannot append to record '%s': %s", g->record_path,
                 strerror(err));
    }
    pthread_mutex_unlock(&g->lock);
}

/* ------------------------------------------------------------------ */
/* webhook                                                             */
/* ------------------------------------------------------------------ */

static bool
s_emits_type(const char *type)
{
    for (size_t i = 0; s_emits[i]; i++)
        if (strcmp(s_emits[i], type) == 0)
            return true;
    return false;
}

/* A JSON string without embedded NULs, or NULL. */
static const char *
s_text(const json_t *v)
{
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    return strlen(s) == json_string_length(v) ? s : NULL;
}

/* Copy each member of data into the builder's data map. */
static int
s_build_data(s_good_t *g, plugboard_builder_t *b, json_t *data, char *why,
             size_t why_len)
{
    const char *name;
    json_t *value;
    json_object_foreach(data, name, value)
    {
        if (!*name || strchr(name, '.')) {
            snprintf(why, why_len, "data key '%s' is empty or has a '.'", name);
            return -1;
        }
        char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        int rc = text ? g->api->builder_set_json(b, name, text, strlen(text))
                      : PLUGBOARD_E_NOMEM;
        free(text);
        if (rc != 0) {
            snprintf(why, why_len, "cannot set data field '%s' (%d)", name, rc);
            return -1;
        }
    }
    return 0;
}

/* Build one event from its JSON description.  NULL with why set. */
static plugboard_builder_t *
s_build(s_good_t *g, json_t *item, char *why, size_t why_len)
{
    const plugboard_host_api_t *api = g->api;
    if (!json_is_object(item)) {
        snprintf(why, why_len, "each event must be a JSON object");
        return NULL;
    }
    const char *type = s_text(json_object_get(item, "type"));
    json_t *key = json_object_get(item, "key");
    json_t *dedupe = json_object_get(item, "dedupe");
    json_t *data = json_object_get(item, "data");
    if (!type) {
        snprintf(why, why_len, "'type' must be a string");
        return NULL;
    }
    if (!s_emits_type(type)) {
        snprintf(why, why_len, "type '%.64s' is not one 'good' emits", type);
        return NULL;
    }
    if ((key && !s_text(key)) || (dedupe && !s_text(dedupe)) ||
        (data && !json_is_object(data))) {
        snprintf(why, why_len,
                 "'key' and 'dedupe' must be strings and "
                 "'data' an object");
        return NULL;
    }
    plugboard_builder_t *b = api->builder_new(g->host, type);
    if (!b) {
        snprintf(why, why_len, "cannot build event of type '%s'", type);
        return NULL;
    }
    int rc = 0;
    if (key)
        rc = api->builder_set_key(b, s_text(key));
    if (rc == 0 && dedupe)
        rc = api->builder_set_dedupe_id(b, s_text(dedupe));
    if (rc != 0)
        snprintf(why, why_len, "invalid 'key' or 'dedupe' (%d)", rc);
    if (rc == 0 && data)
        rc = s_build_data(g, b, data, why, why_len);
    if (rc != 0)
        api->builder_discard(&b);
    return b;
}

static int
s_emit_status(int rc)
{
    if (rc == PLUGBOARD_E_INVALID)
        return 400;
    if (rc == PLUGBOARD_E_FULL)
        return 413;
    return 503;
}

/* 200 {"accepted":n,"label":"..."}, the label JSON-escaped. */
static void
s_respond_ok(s_good_t *g, plugboard_response_t *resp, size_t n)
{
    json_t *answer =
        json_pack("{s:I,s:s}", "accepted", (json_int_t)n, "label", g->label);
    char *text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
    g->api->respond(resp, 200, text ? text : "");
    free(text);
    json_decref(answer);
}

static void
s_webhook(void *state, const plugboard_request_t *req,
          plugboard_response_t *resp)
{
    s_good_t *g = state;
    const plugboard_host_api_t *api = g->api;
    char why[256];

    if (strcasecmp(req->method, "POST") != 0) {
        api->respond(resp, 405, "only POST is accepted");
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)req->body, req->body_len,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(why, sizeof why, "body is not JSON: %s (line %d)", jerr.text,
                 jerr.line);
        api->respond(resp, 400, why);
        return;
    }
    size_t n = json_is_array(root) ? json_array_size(root) : 1;
    if (n == 0 || n > S_MAX_EVENTS) {
        snprintf(why, sizeof why, "expected 1 to %d events, got %zu",
                 S_MAX_EVENTS, n);
        api->respond(resp, 400, why);
        json_decref(root);
        return;
    }

    /* build everything first: a bad item emits nothing */
    plugboard_builder_t *built[S_MAX_EVENTS] = {NULL};
    size_t i;
    for (i = 0; i < n; i++) {
        json_t *item = json_is_array(root) ? json_array_get(root, i) : root;
        if (!(built[i] = s_build(g, item, why, sizeof why)))
            break;
    }
    json_decref(root);
    if (i < n) {
        for (size_t k = 0; k < i; k++)
            api->builder_discard(&built[k]);
        api->respond(resp, 400, why);
        return;
    }

    int rc = 0;
    for (i = 0; i < n; i++) {
        int r = rc == 0 ? api->emit(g->host, &built[i]) : 0;
        if (built[i])
            api->builder_discard(&built[i]);
        if (rc == 0)
            rc = r;
    }
    if (rc != 0) {
        snprintf(why, sizeof why, "cannot accept the events (%d)", rc);
        api->respond(resp, s_emit_status(rc), why);
        return;
    }
    s_respond_ok(g, resp, n);
}

/* ------------------------------------------------------------------ */
/* The descriptor                                                      */
/* ------------------------------------------------------------------ */

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "good",
    .version = "1.0.0",
    .summary = "test connector: a configurable sink and a JSON webhook",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = s_emits,
    .flags = PLUGBOARD_DELIVER_THREAD_SAFE,
    .deliver_timeout_ms = 0,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
    .webhook = s_webhook,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
