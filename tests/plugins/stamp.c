/*
 * stamp.c - the test sink "stamp" for reload and upgrade tests.  It is
 * built twice from this file: stamp.so says version 1.0.0 and stamp_v2.so
 * (compiled with -DSTAMP_VERSION="2.0.0", tests/CMakeLists.txt) 2.0.0, so
 * a test can tell which build delivered what.  stamp_v3.so (3.0.0,
 * -DSTAMP_RENAMED_LABEL) calls its label setting "tag": a new build whose
 * settings no longer fit a config written for the old one.
 *
 * Settings:
 *   record      STRING    file: every delivered event is appended as one
 *                         line {"stamp":VERSION,"label":LABEL,"open":N,
 *                         "event":{..}}, N the instance's line in opens
 *                         (1 for the first open; 0 without opens)
 *   label       STRING    "x", written into every record line
 *   opens       STRING    file: one line "VERSION LABEL" per open, so a
 *                         test can count how often an instance started
 *   open_delay  DURATION  "0ms", sleep this long in open (a slow vendor)
 *   open_gate   STRING    file: open waits until it exists (at most 60 s),
 *                         so a test decides when an open returns
 *   crash_key   STRING    deliver dereferences NULL for events with this
 *                         key, or every event for "*" (process-isolation
 *                         tests only; run them with ASAN_OPTIONS
 *                         handle_segv=0 so the process really dies)
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <plugboard/plugboard.h>

#ifndef STAMP_VERSION
#define STAMP_VERSION "1.0.0"
#endif

static const plugboard_setting_spec_t s_settings[] = {
    {.name = "record",
     .type = PLUGBOARD_SETTING_STRING,
     .help = "file to append each delivered event to, with the version"},
#ifdef STAMP_RENAMED_LABEL
    {.name = "tag",
#else
    {.name = "label",
#endif
     .type = PLUGBOARD_SETTING_STRING,
     .default_value = "x",
     .help = "a label written into every record line"},
    {.name = "opens",
     .type = PLUGBOARD_SETTING_STRING,
     .help = "file to append one line to per open"},
    {.name = "open_delay",
     .type = PLUGBOARD_SETTING_DURATION,
     .default_value = "0ms",
     .min = 0,
     .max = 60000,
     .help = "sleep this long in open"},
    {.name = "open_gate",
     .type = PLUGBOARD_SETTING_STRING,
     .help = "wait in open until this file exists (at most 60 s)"},
    {.name = "crash_key",
     .type = PLUGBOARD_SETTING_STRING,
     .help = "crash in deliver on events with this key"},
    {.name = NULL},
};

typedef struct s_stamp {
    const plugboard_host_api_t *api;
    char label[64];
    char crash_key[128];
    int record_fd;
    int open_no; /* which open of the opens file this instance was */
    pthread_mutex_t lock;
} s_stamp_t;

static void
s_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int
s_append(const char *path, const char *line, char *errbuf)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, strlen(line)) < 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot write '%s': %s", path,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* Lines in path (0 when it cannot be read). */
static int
s_lines(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char buf[4096];
    ssize_t got;
    int n = 0;
    while (fd >= 0 && (got = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < got; i++)
            n += buf[i] == '\n';
    if (fd >= 0)
        close(fd);
    return n;
}

static void
s_close(void *state)
{
    s_stamp_t *s = state;
    if (!s)
        return;
    if (s->record_fd >= 0)
        close(s->record_fd);
    pthread_mutex_destroy(&s->lock);
    s->api->free(s);
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    s_sleep_ms(api->setting_int(settings, "open_delay"));
    const char *gate = api->setting_string(settings, "open_gate");
    for (int i = 0; gate && access(gate, F_OK) != 0 && i < 6000; i++)
        s_sleep_ms(10);
    s_stamp_t *s = api->alloc(sizeof *s);
    if (!s) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(s, 0, sizeof *s);
    s->api = api;
    s->record_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
#ifdef STAMP_RENAMED_LABEL
    const char *label = api->setting_string(settings, "tag");
#else
    const char *label = api->setting_string(settings, "label");
#endif
    const char *crash = api->setting_string(settings, "crash_key");
    snprintf(s->label, sizeof s->label, "%s", label ? label : "x");
    snprintf(s->crash_key, sizeof s->crash_key, "%s", crash ? crash : "");
    const char *record = api->setting_string(settings, "record");
    const char *opens = api->setting_string(settings, "opens");
    if (record) {
        s->record_fd =
            open(record, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (s->record_fd < 0) {
            snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                     "cannot open record '%s': %s", record, strerror(errno));
            s_close(s);
            return -1;
        }
    }
    if (opens) {
        char line[128];
        snprintf(line, sizeof line, "%s %s %d\n", STAMP_VERSION, s->label,
                 (int)getpid());
        if (s_append(opens, line, errbuf) != 0) {
            s_close(s);
            return -1;
        }
        s->open_no = s_lines(opens); /* one instance opens at a time */
    }
    *state = s;
    return 0;
}

/* A real SIGSEGV: the sanitizers must not turn it into an exit. */
__attribute__((no_sanitize("undefined"), noinline)) static void
s_crash(void)
{
    int *volatile target = NULL;
    *target = 1;
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *result)
{
    s_stamp_t *s = state;
    const plugboard_host_api_t *api = s->api;
    if (s->crash_key[0] && (strcmp(s->crash_key, "*") == 0 ||
                            strcmp(api->event_key(ev), s->crash_key) == 0))
        s_crash(); /* on purpose: the worker process dies */
    char *json = api->event_to_json(ev);
    if (!json) {
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason, "out of memory");
        return;
    }
    size_t len = strlen(json) + strlen(s->label) + 64;
    char *line = api->alloc(len);
    int rc = -1;
    if (line) {
        int n = snprintf(line, len,
                         "{\"stamp\":\"" STAMP_VERSION
                         "\",\"label\":\"%s\",\"open\":%d,\"event\":%s}\n",
                         s->label, s->open_no, json);
        pthread_mutex_lock(&s->lock);
        rc = s->record_fd < 0 ? 0 : (int)write(s->record_fd, line, (size_t)n);
        pthread_mutex_unlock(&s->lock);
        api->free(line);
    }
    api->free(json);
    if (rc < 0) {
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason, "cannot record");
        return;
    }
    result->outcome = PLUGBOARD_OK;
}

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "stamp",
    .version = STAMP_VERSION,
    .summary = "test sink that stamps its build's version on what it records",
    .settings = s_settings,
    .consumes = s_consumes,
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
