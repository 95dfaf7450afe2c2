/*
 * harness.c - the SDK test harness (plugboard/harness.h): one connector
 * driven in-process through the host's loader, settings binding and API
 * table, without router, journal or HTTP listener.
 *
 * Built into libplugboard-harness.a together with the host modules it
 * uses (sdk/CMakeLists.txt), and linked into the tree's own tests.
 */
#define _GNU_SOURCE
#include <plugboard/harness.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "envelope.h"
#include "error.h"
#include "hostapi.h"
#include "http.h"
#include "loader.h"
#include "samples.h"

struct plugboard_harness {
    pb_plugin_t *plugin;
    const plugboard_connector_t *desc;
    plugboard_settings_t *settings;
    plugboard_host_t host;
    void *state;
    pb_envelope_t **emitted;
    size_t emitted_count;
    size_t emitted_cap;
    char **auth_reasons; /* api->auth_failed calls */
    size_t auth_count, auth_cap;
    const pb_envelope_t *delivering; /* during deliver: its event */
    bool opening;                    /* in open: emit is refused */
    size_t call_emits;               /* emitted in the current call */
    /* plugboard_harness_run */
    bool running;
    pthread_t run_thread;
    int64_t run_until_ms;   /* monotonic: run_wait answers false after */
    uint64_t run_tickets;   /* batches flushed */
    uint64_t run_asked;     /* the newest ticket durable was asked about */
    bool run_stopped;       /* run_wait has answered false */
    size_t run_flushed;     /* emitted_count at the last flush */
};

/* The host handle's emit: encode, decode back, keep. */
static int
s_capture(void *ctx, pb_builder_t *b)
{
    plugboard_harness_t *h = ctx;
    uint8_t *frame = NULL;
    size_t len = 0;
    if (h->opening) { /* as the host: nothing is emitted from open */
        pb_builder_destroy(&b);
        return PLUGBOARD_E_INVALID;
    }
    if (h->call_emits >= PLUGBOARD_EMIT_MAX) {
        pb_builder_destroy(&b);
        return PLUGBOARD_E_FULL;
    }
    /* emitted during deliver: caused by the delivered event, as in the
     * host (docs/events.md) */
    int rc = h->delivering ? pb_builder_inherit(b, h->delivering) : 0;
    if (rc == 0)
        rc = pb_builder_encode(b, &frame, &len);
    pb_builder_destroy(&b);
    if (rc != 0)
        return rc;
    char why[256];
    int err = 0;
    pb_envelope_t *env =
        pb_envelope_decode(frame, len, NULL, &err, why, sizeof why);
    free(frame);
    if (!env)
        return err ? err : PB_EPROTO;
    if (h->emitted_count == h->emitted_cap) {
        size_t cap = h->emitted_cap ? h->emitted_cap * 2 : 8;
        pb_envelope_t **n = realloc(h->emitted, cap * sizeof *n);
        if (!n) {
            pb_envelope_destroy(&env);
            return PB_ENOMEM;
        }
        h->emitted = n;
        h->emitted_cap = cap;
    }
    h->emitted[h->emitted_count++] = env;
    h->call_emits++;
    return 0;
}

/* The host handle's auth_failed: keep a copy of the reason. */
static void
s_auth_failed(void *ctx, const char *reason)
{
    plugboard_harness_t *h = ctx;
    if (h->auth_count == h->auth_cap) {
        size_t cap = h->auth_cap ? h->auth_cap * 2 : 8;
        char **n = realloc(h->auth_reasons, cap * sizeof *n);
        if (!n)
            return;
        h->auth_reasons = n;
        h->auth_cap = cap;
    }
    char *copy = strdup(reason ? reason : "");
    if (copy)
        h->auth_reasons[h->auth_count++] = copy;
}

static const plugboard_setting_spec_t *
s_spec(const plugboard_connector_t *d, const char *name, size_t len)
{
    for (size_t i = 0; d->settings && d->settings[i].name; i++)
        if (strlen(d->settings[i].name) == len &&
            strncmp(d->settings[i].name, name, len) == 0)
            return &d->settings[i];
    return NULL;
}

/* "name=value" -> a raw setting typed by the declared spec, as libconfig
 * would have typed it in a config file.  Returns 0 or PB_EINVAL/NOMEM. */
static int
s_raw(const plugboard_connector_t *d, const char *text, pb_raw_setting_t *r)
{
    const char *eq = strchr(text, '=');
    if (!eq)
        return PB_EINVAL;
    if (!(r->name = strndup(text, (size_t)(eq - text))))
        return PB_ENOMEM;
    const char *v = eq + 1;
    const plugboard_setting_spec_t *s = s_spec(d, text, (size_t)(eq - text));
    if (s && s->type == PLUGBOARD_SETTING_INT && !s->secret) {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (*v && !*end && errno == 0) {
            r->kind = PB_RAW_INT;
            r->i = n;
            return 0;
        }
    } else if (s && s->type == PLUGBOARD_SETTING_BOOL &&
               (!strcmp(v, "true") || !strcmp(v, "false"))) {
        r->kind = PB_RAW_BOOL;
        r->b = !strcmp(v, "true");
        return 0;
    }
    r->kind = PB_RAW_STRING;
    return (r->str = strdup(v)) ? 0 : PB_ENOMEM;
}

/* Bind "name=value" strings against the descriptor.  NULL and err on a
 * malformed entry or a settings error. */
static plugboard_settings_t *
s_bind(const plugboard_connector_t *d, const char *const *settings, char *err,
       size_t err_len)
{
    size_t n = 0;
    while (settings && settings[n])
        n++;
    pb_raw_setting_t *raw = calloc(n ? n : 1, sizeof *raw);
    if (!raw) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    plugboard_settings_t *bound = NULL;
    for (size_t i = 0; i < n; i++) {
        if (s_raw(d, settings[i], &raw[i]) != 0) {
            snprintf(err, err_len, "setting '%s' is not name=value",
                     settings[i]);
            goto out_free;
        }
    }
    pb_diag_t diag;
    pb_diag_init(&diag);
    bound = pb_settings_bind(d->settings, raw, n, "harness", &diag);
    if (!bound)
        snprintf(err, err_len, "%s",
                 diag.count ? diag.messages[0] : "settings rejected");
    pb_diag_release(&diag);
out_free:
    pb_raw_settings_free(raw, n);
    return bound;
}

/* A pull source's calls, from its run thread (plugboard_harness_run). */
static int
s_h_flush(void *ctx, uint64_t *ticket)
{
    plugboard_harness_t *h = ctx;
    *ticket = 0;
    if (!h->running || !pthread_equal(pthread_self(), h->run_thread))
        return PLUGBOARD_E_INVALID;
    if (h->run_stopped) { /* as the host: dropped */
        while (h->emitted_count > h->run_flushed)
            pb_envelope_destroy(&h->emitted[--h->emitted_count]);
        return PLUGBOARD_E_STOPPING;
    }
    if (h->emitted_count == h->run_flushed)
        return 0;
    h->run_flushed = h->emitted_count;
    h->call_emits = 0;
    *ticket = ++h->run_tickets;
    return 0;
}

static int
s_h_durable(void *ctx, uint64_t ticket)
{
    plugboard_harness_t *h = ctx;
    if (!h->running || !pthread_equal(pthread_self(), h->run_thread) ||
        ticket == 0 || ticket > h->run_tickets)
        return PLUGBOARD_E_INVALID;
    /* no journal here: a batch is "not yet" when first asked about, then
     * durable, so a source's waiting path runs too */
    if (ticket > h->run_asked) {
        h->run_asked = ticket;
        return 0;
    }
    return 1;
}

static bool
s_h_wait(void *ctx, int64_t timeout_ms)
{
    plugboard_harness_t *h = ctx;
    if (!h->running || !pthread_equal(pthread_self(), h->run_thread))
        return false;
    int64_t left = h->run_until_ms - pb_monotonic_ms();
    if (left <= 0) {
        h->run_stopped = true;
        return false;
    }
    int64_t ms = timeout_ms < left ? timeout_ms : left;
    if (ms > 0) {
        struct timespec ts = {.tv_sec = ms / 1000,
                              .tv_nsec = (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    h->run_stopped = pb_monotonic_ms() >= h->run_until_ms;
    return !h->run_stopped;
}

static const pb_run_fns_t s_harness_run_fns = {
    .flush = s_h_flush,
    .durable = s_h_durable,
    .wait = s_h_wait,
};

static void *
s_h_run(void *arg)
{
    plugboard_harness_t *h = arg;
    h->desc->run(h->state);
    return NULL;
}

int
plugboard_harness_run(plugboard_harness_t *h, int64_t run_ms)
{
    if (!h || !h->desc->run || h->running)
        return PLUGBOARD_E_INVALID;
    h->run_flushed = h->emitted_count;
    h->run_stopped = false;
    h->run_until_ms = pb_monotonic_ms() + (run_ms > 0 ? run_ms : 0);
    h->running = true;
    h->call_emits = 0;
    if (pthread_create(&h->run_thread, NULL, s_h_run, h) != 0) {
        h->running = false;
        return PLUGBOARD_E_NOMEM;
    }
    pthread_join(h->run_thread, NULL);
    h->running = false;
    /* emitted and never flushed: dropped, as the host drops them */
    while (h->emitted_count > h->run_flushed)
        pb_envelope_destroy(&h->emitted[--h->emitted_count]);
    return 0;
}

plugboard_harness_t *
plugboard_harness_open(const char *plugin_path, const char *name,
                       const char *const *settings, char *err, size_t err_len)
{
    if (name && !pb_config_name_valid(name)) {
        snprintf(err, err_len,
                 "'%s' is not a valid connector name (use 1 to 63 of a-z, "
                 "0-9, '_' and '-')",
                 name);
        return NULL;
    }
    plugboard_harness_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    h->plugin = pb_plugin_load(plugin_path, NULL, 0, NULL, err, err_len);
    if (!h->plugin)
        goto out_free;
    h->desc = pb_plugin_descriptor(h->plugin);
    h->settings = s_bind(h->desc, settings, err, err_len);
    if (!h->settings)
        goto out_unload;

    pb_host_init(&h->host, name ? name : h->desc->name, s_capture, NULL, h);
    pb_host_on_auth_failed(&h->host, s_auth_failed);
    pb_host_on_run(&h->host, &s_harness_run_fns);
    char errbuf[PLUGBOARD_ERRBUF_MAX] = "";
    h->opening = true;
    int rc =
        h->desc->open(pb_host_api(), &h->host, h->settings, &h->state, errbuf);
    h->opening = false;
    if (rc != 0) {
        errbuf[PLUGBOARD_ERRBUF_MAX - 1] = '\0';
        snprintf(err, err_len, "open failed: %s", errbuf);
        goto out_settings;
    }
    return h;

out_settings:
    plugboard_harness_clear(h); /* auth_failed calls open made */
    free(h->emitted);
    free(h->auth_reasons);
    pb_settings_destroy(&h->settings);
out_unload:
    pb_plugin_destroy(&h->plugin);
out_free:
    free(h);
    return NULL;
}

void
plugboard_harness_close(plugboard_harness_t **hp)
{
    if (!hp || !*hp)
        return;
    plugboard_harness_t *h = *hp;
    *hp = NULL;
    h->desc->close(h->state);
    plugboard_harness_clear(h);
    free(h->emitted);
    free(h->auth_reasons);
    pb_settings_destroy(&h->settings);
    pb_plugin_destroy(&h->plugin);
    free(h);
}

const plugboard_connector_t *
plugboard_harness_descriptor(const plugboard_harness_t *h)
{
    return h->desc;
}

const plugboard_host_api_t *
plugboard_harness_api(void)
{
    return pb_host_api();
}

/* Deliver env (owned: destroyed here). */
static int
s_deliver(plugboard_harness_t *h, pb_envelope_t *env,
          plugboard_result_t *result)
{
    if (!env)
        return PLUGBOARD_E_INVALID;
    memset(result, 0, sizeof *result);
    h->delivering = env;
    h->call_emits = 0;
    h->desc->deliver(h->state, env, result);
    h->delivering = NULL;
    pb_envelope_destroy(&env);
    return 0;
}

int
plugboard_harness_deliver_frame(plugboard_harness_t *h, const void *frame,
                                size_t len, plugboard_result_t *result)
{
    if (!h->desc->deliver)
        return PLUGBOARD_E_INVALID;
    char why[256];
    int err = 0;
    return s_deliver(
        h, pb_envelope_decode(frame, len, NULL, &err, why, sizeof why), result);
}

int
plugboard_harness_deliver(plugboard_harness_t *h, const char *type,
                          const char *key, const char *json_data,
                          uint32_t attempt, plugboard_result_t *result)
{
    if (!h->desc->deliver || attempt == 0)
        return PLUGBOARD_E_INVALID;
    char why[256];
    return s_deliver(h,
                     pb_event_from_parts(PLUGBOARD_HARNESS_SOURCE, type, key,
                                         json_data, attempt, why, sizeof why),
                     result);
}

int
plugboard_harness_deliver_json(plugboard_harness_t *h, const char *json,
                               uint32_t attempt, plugboard_result_t *result)
{
    if (!h->desc->deliver || !json || attempt == 0)
        return PLUGBOARD_E_INVALID;
    char why[256];
    return s_deliver(
        h, pb_event_from_json(json, strlen(json), attempt, why, sizeof why),
        result);
}

const char *
plugboard_harness_sample(const char *type, size_t *len)
{
    return pb_sample_json(type, len);
}

int
plugboard_harness_deliver_sample(plugboard_harness_t *h, const char *type,
                                 plugboard_result_t *result)
{
    size_t len = 0;
    const char *json = pb_sample_json(type, &len);
    if (!h->desc->deliver || !json)
        return PLUGBOARD_E_INVALID;
    char why[256];
    return s_deliver(h, pb_event_from_json(json, len, 1, why, sizeof why),
                     result);
}

/* "Name: value" strings -> header views; names are copied into names[]. */
static int
s_headers(const char *const *headers, size_t n, plugboard_header_t *hv,
          char **names)
{
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(headers[i], ':');
        size_t nl = colon ? (size_t)(colon - headers[i]) : strlen(headers[i]);
        if (!(names[i] = strndup(headers[i], nl)))
            return PB_ENOMEM;
        const char *v = colon ? colon + 1 : "";
        while (*v == ' ')
            v++;
        hv[i].name = names[i];
        hv[i].value = v;
    }
    return 0;
}

int
plugboard_harness_webhook(plugboard_harness_t *h, const char *method,
                          const char *const *headers, const void *body,
                          size_t body_len, int *status, char **resp_body)
{
    if (!h->desc->webhook)
        return PLUGBOARD_E_INVALID;
    size_t n = 0;
    while (headers && headers[n])
        n++;
    plugboard_header_t *hv = calloc(n ? n : 1, sizeof *hv);
    char **names = calloc(n ? n : 1, sizeof *names);
    plugboard_response_t *resp = pb_response_new();
    int rc = hv && names && resp ? s_headers(headers, n, hv, names) : PB_ENOMEM;
    if (rc == 0) {
        char path[128];
        snprintf(path, sizeof path, "/hooks/%s", h->host.name);
        plugboard_request_t req = {
            .method = method ? method : "POST",
            .path = path,
            .query = "",
            .headers = hv,
            .header_count = n,
            .body = body,
            .body_len = body_len,
            .received_ms = pb_now_ms(),
        };
        h->call_emits = 0;
        h->desc->webhook(h->state, &req, resp);
        *status = pb_response_status(resp);
        if (resp_body)
            *resp_body = strdup(pb_response_body(resp));
    }
    pb_response_destroy(&resp);
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(hv);
    return rc;
}

size_t
plugboard_harness_emitted_count(const plugboard_harness_t *h)
{
    return h->emitted_count;
}

const plugboard_event_t *
plugboard_harness_emitted(const plugboard_harness_t *h, size_t i)
{
    return i < h->emitted_count ? h->emitted[i] : NULL;
}

size_t
plugboard_harness_auth_failed_count(const plugboard_harness_t *h)
{
    return h->auth_count;
}

const char *
plugboard_harness_auth_failed_reason(const plugboard_harness_t *h, size_t i)
{
    return i < h->auth_count ? h->auth_reasons[i] : NULL;
}

void
plugboard_harness_clear(plugboard_harness_t *h)
{
    for (size_t i = 0; i < h->emitted_count; i++)
        pb_envelope_destroy(&h->emitted[i]);
    h->emitted_count = 0;
    for (size_t i = 0; i < h->auth_count; i++)
        free(h->auth_reasons[i]);
    h->auth_count = 0;
}
