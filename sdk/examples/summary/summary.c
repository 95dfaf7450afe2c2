/*
 * summary.c - an example plugboard connector: a sink that appends one
 * human-readable line per event to a file ("2024-05-01 12:00 UTC
 * payment.failed jane@example.com 20.00 USD").
 *
 * Small enough to read in one sitting, it shows every part a real sink
 * has: settings declared as data and read once in open(); state allocated
 * through the host API; events read through the event view (here with the
 * SDK's template helper); and each failure classified - RETRY for what may
 * clear by itself (a full disk), REJECT for what never will (an event
 * missing the field the admin required).  docs/sdk.md walks through it.
 */
#include <plugboard/helpers.h>
#include <plugboard/plugboard.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct s_summary {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    int fd;              /* the file, O_APPEND */
    const char *line;    /* template; borrowed from settings until close */
    const char *require; /* field path every event must carry, or NULL */
    size_t max_length;   /* longer lines are cut */
} s_summary_t;

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "path",
        .type = PLUGBOARD_SETTING_STRING,
        .required = true,
        .help = "file to append one line per event to (created 0640)",
    },
    {
        .name = "line",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "{{$time|date}} {{$type}} {{$key}}",
        .help = "the line, as a template: {{field.path}}, {{$type}}, "
                "{{amount|money}} (sdk helpers.h)",
    },
    {
        .name = "require",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "a field path events must carry (e.g. customer.email); "
                "events without it are rejected, not retried",
    },
    {
        .name = "max_length",
        .type = PLUGBOARD_SETTING_INT,
        .default_value = "512",
        .min = 16,
        .max = 65536,
        .help = "longest line written, in bytes; longer lines are cut",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    const char *path = api->setting_string(settings, "path");
    s_summary_t *s = api->alloc(sizeof *s);
    if (!s) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    *s = (s_summary_t){
        .api = api,
        .host = host,
        .line = api->setting_string(settings, "line"),
        .require = api->setting_string(settings, "require"),
        .max_length = (size_t)api->setting_int(settings, "max_length"),
    };
    s->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (s->fd < 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot open '%s': %s", path,
                 strerror(errno));
        api->free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static void
s_close(void *state)
{
    s_summary_t *s = state;
    close(s->fd);
    s->api->free(s);
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *result)
{
    s_summary_t *s = state;
    const plugboard_host_api_t *api = s->api;

    /* permanent: no retry will add a missing field */
    if (s->require && api->event_kind(ev, s->require) <= PLUGBOARD_VALUE_NIL) {
        result->outcome = PLUGBOARD_REJECT;
        snprintf(result->reason, sizeof result->reason, "event has no '%s'",
                 s->require);
        return;
    }
    /* HEADER escaping turns CR/LF into spaces: one event, one line */
    char *text =
        plugboard_template_render(api, ev, s->line, PLUGBOARD_ESCAPE_HEADER);
    if (!text) {
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason, "out of memory");
        return;
    }
    size_t len = strlen(text);
    if (len > s->max_length)
        len = s->max_length;
    text[len] = '\n'; /* the NUL's place: one write(2) per line */
    ssize_t n = write(s->fd, text, len + 1);
    int err = errno;
    api->free(text);
    /* transient: a full disk or an I/O error may clear; the host backs
     * off and tries again */
    if (n != (ssize_t)(len + 1)) {
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason, "cannot append: %s",
                 n < 0 ? strerror(err) : "short write");
    }
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "summary",
    .version = "1.0.0",
    .summary = "append a one-line summary of each event to a file",
    .settings = s_settings,
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
