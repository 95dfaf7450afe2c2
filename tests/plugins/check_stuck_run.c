/*
 * check_stuck_run.c - a broken pull source for plugin-check's tests: its
 * run ignores run_wait and keeps polling long after the host asked it to
 * stop, so the host could never close it.
 */
#include <stdio.h>
#include <time.h>

#include <plugboard/plugboard.h>

static const plugboard_setting_spec_t s_settings[] = {{.name = NULL}};
static const char *const s_emits[] = {PLUGBOARD_EV_CONTACT_UPSERTED, NULL};

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    (void)api;
    (void)settings;
    (void)errbuf;
    *state = host;
    return 0;
}

static void
s_close(void *state)
{
    (void)state;
}

static void
s_run(void *state)
{
    (void)state;
    /* polls for 20 s whatever the host says */
    for (int i = 0; i < 400; i++) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "check_stuck_run",
    .version = "1.0.0",
    .summary = "pull source whose run never looks at run_wait",
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
