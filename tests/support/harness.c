/*
 * harness.c - drive one connector in-process: the host's loader, settings
 * binding and API table, without router or journal.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "hostapi.h"
#include "http.h"
#include "loader.h"

struct pb_harness {
    pb_plugin_t *plugin;
    const plugboard_connector_t *desc;
    plugboard_settings_t *settings;
    plugboard_host_t host;
    void *state;
    pb_envelope_t **emitted;
    size_t emitted_count;
    size_t emitted_cap;
};

static int
s_capture(void *ctx, pb_builder_t *b)
{
    pb_harness_t *h = ctx;
    uint8_t *frame = NULL;
    size_t len = 0;
    int rc = pb_builder_encode(b, &frame, &len);
    pb_builder_destroy(&b);
    if (rc != 0)
        return rc;
    char why[256];
    int err = 0;
    pb_envelope_t *env = pb_envelope_decode(frame, len, NULL, &err, why,
                                            sizeof why);
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
    return 0;
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

/* "name=value" -> raw setting typed by the declared spec */
static int
s_raw(const plugboard_connector_t *d, const char *text, pb_raw_setting_t *r)
{
    const char *eq = strchr(text, '=');
    if (!eq)
        return PB_EINVAL;
    r->name = strndup(text, (size_t)(eq - text));
    const char *v = eq + 1;
    const plugboard_setting_spec_t *s = s_spec(d, text, (size_t)(eq - text));
    r->line = 0;
    if (s && s->type == PLUGBOARD_SETTING_INT) {
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
    r->str = strdup(v);
    return 0;
}

pb_harness_t *
pb_harness_open(const char *plugin_path, const char *name,
                const char *const *settings, char *err, size_t err_len)
{
    pb_harness_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    h->plugin = pb_plugin_load(plugin_path, NULL, 0, NULL, err, err_len);
    if (!h->plugin)
        goto out_free;
    h->desc = pb_plugin_descriptor(h->plugin);

    size_t n = 0;
    while (settings && settings[n])
        n++;
    pb_raw_setting_t *raw = calloc(n ? n : 1, sizeof *raw);
    for (size_t i = 0; i < n; i++)
        s_raw(h->desc, settings[i], &raw[i]);
    pb_diag_t diag;
    pb_diag_init(&diag);
    h->settings = pb_settings_bind(h->desc->settings, raw, n, "harness",
                                   &diag);
    for (size_t i = 0; i < n; i++) {
        free(raw[i].name);
        free(raw[i].str);
    }
    free(raw);
    if (!h->settings) {
        snprintf(err, err_len, "%s",
                 diag.count ? diag.messages[0] : "settings rejected");
        pb_diag_release(&diag);
        goto out_unload;
    }
    pb_diag_release(&diag);

    pb_host_init(&h->host, name ? name : h->desc->name, s_capture, NULL, h);
    char errbuf[PLUGBOARD_ERRBUF_MAX] = "";
    if (h->desc->open(pb_host_api(), &h->host, h->settings, &h->state,
                      errbuf) != 0) {
        snprintf(err, err_len, "open failed: %s", errbuf);
        goto out_settings;
    }
    return h;

out_settings:
    pb_settings_destroy(&h->settings);
out_unload:
    pb_plugin_destroy(&h->plugin);
out_free:
    free(h);
    return NULL;
}

void
pb_harness_close(pb_harness_t **hp)
{
    if (!hp || !*hp)
        return;
    pb_harness_t *h = *hp;
    *hp = NULL;
    h->desc->close(h->state);
    pb_harness_clear(h);
    free(h->emitted);
    pb_settings_destroy(&h->settings);
    pb_plugin_destroy(&h->plugin);
    free(h);
}

const plugboard_connector_t *
pb_harness_descriptor(const pb_harness_t *h)
{
    return h->desc;
}

int
pb_harness_deliver_frame(pb_harness_t *h, const void *frame, size_t len,
                         plugboard_result_t *result)
{
    if (!h->desc->deliver)
        return PB_EINVAL;
    char why[256];
    int err = 0;
    pb_envelope_t *env = pb_envelope_decode(frame, len, NULL, &err, why,
                                            sizeof why);
    if (!env)
        return err ? err : PB_EPROTO;
    memset(result, 0, sizeof *result);
    h->desc->deliver(h->state, env, result);
    pb_envelope_destroy(&env);
    return 0;
}

int
pb_harness_deliver(pb_harness_t *h, const char *type, const char *key,
                   const char *json_data, uint32_t attempt,
                   plugboard_result_t *result)
{
    if (!h->desc->deliver)
        return PB_EINVAL;
    json_error_t jerr;
    json_t *data = json_loads(json_data ? json_data : "{}", 0, &jerr);
    if (!data || !json_is_object(data)) {
        json_decref(data);
        return PB_EINVAL;
    }
    pb_builder_t *b = pb_builder_new("harness", type);
    int rc = b ? 0 : PB_EINVAL;
    if (rc == 0 && key)
        rc = pb_builder_set_key(b, key);
    const char *k;
    json_t *v;
    json_object_foreach(data, k, v)
    {
        if (rc != 0)
            break;
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        rc = text ? pb_builder_set_json(b, k, text, strlen(text))
                  : PB_ENOMEM;
        free(text);
    }
    json_decref(data);
    uint8_t *frame = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = pb_builder_encode(b, &frame, &len);
    pb_builder_destroy(&b);
    if (rc != 0)
        return rc;
    char why[256];
    int err = 0;
    pb_envelope_t *env = pb_envelope_decode(frame, len, NULL, &err, why,
                                            sizeof why);
    free(frame);
    if (!env)
        return err ? err : PB_EPROTO;
    pb_envelope_set_attempt(env, attempt ? attempt : 1);
    memset(result, 0, sizeof *result);
    h->desc->deliver(h->state, env, result);
    pb_envelope_destroy(&env);
    return 0;
}

int
pb_harness_webhook(pb_harness_t *h, const char *method,
                   const char *const *headers, const void *body,
                   size_t body_len, int *status, char **resp_body)
{
    if (!h->desc->webhook)
        return PB_EINVAL;
    size_t n = 0;
    while (headers && headers[n])
        n++;
    plugboard_header_t *hv = calloc(n ? n : 1, sizeof *hv);
    char **names = calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(headers[i], ':');
        size_t nl = colon ? (size_t)(colon - headers[i]) : strlen(headers[i]);
        names[i] = strndup(headers[i], nl);
        const char *v = colon ? colon + 1 : "";
        while (*v == ' ')
            v++;
        hv[i].name = names[i];
        hv[i].value = v;
    }
    char path[128];
    snprintf(path, sizeof path, "/hooks/%s", h->host.name);
    plugboard_request_t req = {
        .method = method,
        .path = path,
        .query = "",
        .headers = hv,
        .header_count = n,
        .body = body,
        .body_len = body_len,
        .received_ms = pb_now_ms(),
    };
    plugboard_response_t *resp = pb_response_new();
    h->desc->webhook(h->state, &req, resp);
    *status = pb_response_status(resp);
    if (resp_body)
        *resp_body = strdup(pb_response_body(resp));
    pb_response_destroy(&resp);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(hv);
    return 0;
}

size_t
pb_harness_emitted_count(const pb_harness_t *h)
{
    return h->emitted_count;
}

const pb_envelope_t *
pb_harness_emitted(const pb_harness_t *h, size_t i)
{
    return i < h->emitted_count ? h->emitted[i] : NULL;
}

void
pb_harness_clear(pb_harness_t *h)
{
    for (size_t i = 0; i < h->emitted_count; i++)
        pb_envelope_destroy(&h->emitted[i]);
    h->emitted_count = 0;
}

const plugboard_host_api_t *
pb_harness_api(void)
{
    return pb_host_api();
}

char *
pb_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    size_t got = buf ? fread(buf, 1, (size_t)size, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[got] = '\0';
    if (len)
        *len = got;
    return buf;
}

char *
pb_test_tempdir(const char *prefix)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/%s-XXXXXX", base ? base : "/tmp",
             prefix ? prefix : "pbtest");
    if (!mkdtemp(tmpl))
        return NULL;
    return strdup(tmpl);
}

static int
s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

void
pb_test_rmtree(const char *path)
{
    if (path)
        nftw(path, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}
