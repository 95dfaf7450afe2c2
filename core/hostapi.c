/*
 * hostapi.c - the function table connectors call, as thin adapters over
 * the envelope, config and http modules.
 */
#include "hostapi.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "error.h"
#include "http.h"
#include "log.h"

int64_t
pb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
pb_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_log(plugboard_host_t *host, plugboard_log_level_t level, const char *fmt,
      ...)
{
    if ((int)level < 0 || level > PLUGBOARD_LOG_DEBUG)
        level = PLUGBOARD_LOG_ERROR;
    if ((int)level > (int)pb_log_get_level())
        return;
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pb_log((pb_log_level_t)level, "plugin", "connector=%s %s",
           host ? host->name : "?", msg);
}

static void *
s_alloc(size_t size)
{
    return malloc(size ? size : 1);
}

static void
s_free(void *ptr)
{
    free(ptr);
}

static plugboard_builder_t *
s_builder_new(plugboard_host_t *host, const char *type)
{
    return pb_builder_new(host ? host->name : "", type);
}

static void
s_builder_discard(plugboard_builder_t **b)
{
    pb_builder_destroy(b);
}

static int
s_emit(plugboard_host_t *host, plugboard_builder_t **b)
{
    if (!b || !*b)
        return PLUGBOARD_E_INVALID;
    pb_builder_t *own = *b;
    *b = NULL;
    if (!host || !host->emit) {
        pb_builder_destroy(&own);
        return PLUGBOARD_E_STOPPING;
    }
    return host->emit(host->ctx, own);
}

static void
s_count(plugboard_host_t *host, const char *name, int64_t delta)
{
    if (host && host->count && name)
        host->count(host->ctx, name, delta);
}

static void
s_auth_failed(plugboard_host_t *host, const char *reason)
{
    if (host && host->auth_failed)
        host->auth_failed(host->ctx, reason);
}

static int
s_flush(plugboard_host_t *host, uint64_t *ticket)
{
    if (ticket)
        *ticket = 0;
    if (!host || !host->run || !ticket)
        return PLUGBOARD_E_INVALID;
    return host->run->flush(host->ctx, ticket);
}

static int
s_durable(plugboard_host_t *host, uint64_t ticket)
{
    if (!host || !host->run)
        return PLUGBOARD_E_INVALID;
    return host->run->durable(host->ctx, ticket);
}

static bool
s_run_wait(plugboard_host_t *host, int64_t timeout_ms)
{
    if (!host || !host->run)
        return false;
    return host->run->wait(host->ctx, timeout_ms);
}

static char *
s_event_to_json(const plugboard_event_t *ev)
{
    /* pb_event_to_json allocates with malloc, which is what s_free frees */
    return pb_event_to_json(ev);
}

static const plugboard_host_api_t s_api = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_host_api_t),
    .log = s_log,
    .now_ms = pb_now_ms,
    .monotonic_ms = pb_monotonic_ms,
    .alloc = s_alloc,
    .free = s_free,
    .setting_string = pb_settings_string,
    .setting_int = pb_settings_int,
    .setting_bool = pb_settings_bool,
    .setting_is_set = pb_settings_is_set,
    .event_type = pb_event_type,
    .event_id = pb_event_id,
    .event_source = pb_event_source,
    .event_key = pb_event_key,
    .event_time_ms = pb_event_time_ms,
    .event_attempt = pb_event_attempt,
    .event_kind = pb_event_kind,
    .event_string = pb_event_string,
    .event_int = pb_event_int,
    .event_bool = pb_event_bool,
    .event_to_json = s_event_to_json,
    .builder_new = s_builder_new,
    .builder_set_key = pb_builder_set_key,
    .builder_set_dedupe_id = pb_builder_set_dedupe_id,
    .builder_set_time_ms = pb_builder_set_time_ms,
    .builder_set_string = pb_builder_set_string,
    .builder_set_int = pb_builder_set_int,
    .builder_set_bool = pb_builder_set_bool,
    .builder_set_null = pb_builder_set_null,
    .builder_set_json = pb_builder_set_json,
    .builder_discard = s_builder_discard,
    .emit = s_emit,
    .respond = pb_response_set,
    .request_header = pb_request_header,
    .count = s_count,
    /* ABI 1.1 */
    .auth_failed = s_auth_failed,
    .event_count = pb_event_count,
    .flush = s_flush,
    .durable = s_durable,
    .run_wait = s_run_wait,
};

const plugboard_host_api_t *
pb_host_api(void)
{
    return &s_api;
}

void
pb_host_init(plugboard_host_t *host, const char *name, pb_emit_fn emit,
             pb_count_fn count, void *ctx)
{
    memset(host, 0, sizeof *host);
    snprintf(host->name, sizeof host->name, "%s", name ? name : "");
    host->emit = emit;
    host->count = count;
    host->ctx = ctx;
}

void
pb_host_on_run(plugboard_host_t *host, const pb_run_fns_t *fns)
{
    host->run = fns;
}

void
pb_host_on_auth_failed(plugboard_host_t *host, pb_auth_failed_fn fn)
{
    host->auth_failed = fn;
}
