/*
 * runtime.c - start and stop the host's parts in order.
 */
#include "runtime.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "connector.h"
#include "control.h"
#include "error.h"
#include "health.h"
#include "http.h"
#include "journal.h"
#include "loader.h"
#include "hostapi.h"
#include "log.h"
#include "metrics.h"
#include "observe.h"
#include "reload.h"

#ifndef PB_BUILD_PLUGIN_DIR
#define PB_BUILD_PLUGIN_DIR "build/plugins"
#endif
#ifndef PB_INSTALL_PLUGIN_DIR
#define PB_INSTALL_PLUGIN_DIR "/usr/local/lib/plugboard/plugins"
#endif

#define S_ROUTER_ENDPOINT "inproc://plugboard-router"

struct pb_runtime {
    pb_config_t *cfg;
    pb_plugin_t **plugins;        /* one per connector */
    size_t plugin_count;
    char plugin_copy_dir[4096];
    void *zctx;
    pb_journal_t *journal;
    pb_router_t *router;
    pb_connector_t **connectors;  /* one per connector, same order */
    pb_http_t *http;
    pb_control_t *control;
    pb_metrics_t *metrics;        /* outlives every part that updates it */
    pb_http_t *admin_http;        /* plugboard.http.admin_listen */
    int64_t start_ms;
    _Atomic bool started;         /* for /readyz */
    bool metrics_on_admin;        /* /metrics only on admin_listen; fixed
                                     at start (the listener reads it) */
    pb_reload_t *reload;          /* owns the connectors once started */
    pb_health_t *health;          /* owner notices sent, main thread */
    int64_t health_checked_ms;    /* monotonic */
    uint64_t health_checks;       /* health passes made (status shows) */
    uint64_t health_notices;      /* unhealthy notices journaled */
    uint64_t *unmapped_seen;      /* per metrics connector (registry
                                     order): unmapped count last pass */
    size_t unmapped_seen_count;
};

typedef struct s_loadctx {
    pb_runtime_t *rt;
    const char *const *search;
    size_t search_count;
} loadctx_t;

static bool
s_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Does this executable live in the build tree (beside PB_BUILD_PLUGIN_DIR)? */
static bool
s_running_from_build_tree(void)
{
    static const char plugins[] = PB_BUILD_PLUGIN_DIR;
    const char *slash = strrchr(plugins, '/');
    size_t root = slash ? (size_t)(slash - plugins) : 0;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    return root > 0 && n > (ssize_t)root &&
           strncmp(exe, plugins, root) == 0 && exe[root] == '/';
}

/* The build tree's plugins for a binary run from the build tree; the
 * installed ones (PB_INSTALL_PLUGIN_DIR, from CMAKE_INSTALL_PREFIX) for
 * an installed binary, even when a build directory is still around. */
const char *
pb_runtime_default_plugin_dir(void)
{
    if (s_running_from_build_tree() && s_is_dir(PB_BUILD_PLUGIN_DIR))
        return PB_BUILD_PLUGIN_DIR;
    if (s_is_dir(PB_INSTALL_PLUGIN_DIR))
        return PB_INSTALL_PLUGIN_DIR;
    if (s_is_dir(PB_BUILD_PLUGIN_DIR))
        return PB_BUILD_PLUGIN_DIR;
    return PB_INSTALL_PLUGIN_DIR;
}

static const plugboard_connector_t *
s_describe(void *ctx, const pb_connector_conf_t *conn, char *err,
           size_t err_len)
{
    loadctx_t *lc = ctx;
    pb_runtime_t *rt = lc->rt;
    size_t i = (size_t)(conn - rt->cfg->connectors);
    const char *copy = rt->plugin_copy_dir[0] ? rt->plugin_copy_dir : NULL;
    /* a process-isolated connector's worker loads the very same copy */
    bool keep = conn->isolation && strcmp(conn->isolation, "process") == 0;
    rt->plugins[i] = pb_plugin_load_kept(conn->plugin, lc->search,
                                         lc->search_count, copy, keep, err,
                                         err_len);
    return rt->plugins[i] ? pb_plugin_descriptor(rt->plugins[i]) : NULL;
}

static void
s_unload(pb_runtime_t *rt)
{
    for (size_t i = 0; i < rt->plugin_count; i++)
        pb_plugin_destroy(&rt->plugins[i]);
    free(rt->plugins);
    rt->plugins = NULL;
    rt->plugin_count = 0;
}

/* Parse, load plugins, bind.  Leaves rt->cfg and rt->plugins set. */
static int
s_prepare(pb_runtime_t *rt, const char *path, bool private_copies,
          pb_diag_t *diag)
{
    rt->cfg = pb_config_load(path, diag);
    if (!rt->cfg)
        return PB_ECONFIG;
    pb_log_level_t level;
    if (rt->cfg->log_level &&
        pb_log_parse_level(rt->cfg->log_level, &level) == 0)
        pb_log_set_level(level);
    if (private_copies) {
        char where[4200];
        if (mkdir(rt->cfg->data_dir, 0700) != 0 && errno != EEXIST) {
            pb_diag_add(diag, "%s: plugboard.data_dir: cannot create '%s': %s",
                        pb_config_where(rt->cfg, rt->cfg->data_dir_line, where,
                                        sizeof where),
                        rt->cfg->data_dir, strerror(errno));
            return PB_ECONFIG;
        }
        if (mkdir(rt->cfg->run_dir, 0700) != 0 && errno != EEXIST) {
            pb_diag_add(diag, "%s: plugboard.run_dir: cannot create '%s': %s",
                        pb_config_where(rt->cfg, rt->cfg->run_dir_line, where,
                                        sizeof where),
                        rt->cfg->run_dir, strerror(errno));
            return PB_ECONFIG;
        }
        snprintf(rt->plugin_copy_dir, sizeof rt->plugin_copy_dir,
                 "%s/plugins", rt->cfg->run_dir);
    }
    rt->plugin_count = rt->cfg->connector_count;
    rt->plugins = calloc(rt->plugin_count ? rt->plugin_count : 1,
                         sizeof *rt->plugins);
    if (!rt->plugins)
        return PB_ENOMEM;
    const char *fallback = pb_runtime_default_plugin_dir();
    loadctx_t lc = {.rt = rt};
    if (rt->cfg->plugin_path_count) {
        lc.search = (const char *const *)rt->cfg->plugin_path;
        lc.search_count = rt->cfg->plugin_path_count;
    } else {
        lc.search = &fallback;
        lc.search_count = 1;
    }
    return pb_config_bind(rt->cfg, s_describe, &lc, diag);
}

int
pb_runtime_check(const char *config_path, pb_diag_t *diag, size_t *routes)
{
    pb_runtime_t rt;
    memset(&rt, 0, sizeof rt);
    int rc = s_prepare(&rt, config_path, false, diag);
    if (routes)
        *routes = rt.cfg ? rt.cfg->route_count : 0;
    s_unload(&rt);
    pb_config_destroy(&rt.cfg);
    return rc;
}

static int
s_on_webhook(void *ctx, pb_webhook_t *w)
{
    pb_runtime_t *rt = ctx;
    if (rt->reload) /* safe against a reload swapping connectors */
        return pb_reload_submit_webhook(rt->reload, w);
    const char *name = pb_webhook_connector(w);
    for (size_t i = 0; i < rt->cfg->connector_count; i++)
        if (strcmp(rt->cfg->connectors[i].name, name) == 0)
            return pb_connector_submit_webhook(rt->connectors[i], w);
    return PB_ENOENT;
}

/* The numbers /metrics shows that the registry does not hold. */
static void
s_host_numbers(pb_runtime_t *rt, pb_metrics_host_t *h)
{
    pb_router_stats_t st;
    pb_http_stats_t hs;
    memset(&hs, 0, sizeof hs);
    pb_runtime_stats(rt, &st);
    if (rt->http)
        pb_http_stats(rt->http, &hs);
    *h = (pb_metrics_host_t){
        .version = PB_VERSION,
        .start_time_ms = rt->start_ms,
        .accepted = st.accepted,
        .duplicates = st.duplicates,
        .unrouted = st.unrouted,
        .bad_frames = st.bad_frames,
        .journal_errors = st.journal_errors,
        .http_requests = hs.requests,
        .http_bad_request = hs.bad_request,
        .http_too_large = hs.too_large,
        .http_aborted = hs.aborted,
    };
}

/* /metrics and /readyz; /metrics moves to admin_listen when there is one */
static int
s_on_page(void *ctx, const char *path, char **body, const char **type)
{
    pb_runtime_t *rt = ctx;
    pb_metrics_host_t h;
    s_host_numbers(rt, &h);
    return pb_observe_page(rt->metrics, &h, rt->started,
                           !rt->metrics_on_admin, path, body, type);
}

static int
s_on_admin_page(void *ctx, const char *path, char **body, const char **type)
{
    pb_runtime_t *rt = ctx;
    pb_metrics_host_t h;
    s_host_numbers(rt, &h);
    return pb_observe_page(rt->metrics, &h, rt->started, true, path, body,
                           type);
}

/* Metrics first: the router and connectors update it from their start. */
static int
s_start_metrics(pb_runtime_t *rt, pb_diag_t *diag)
{
    rt->start_ms = pb_now_ms();
    rt->metrics_on_admin = rt->cfg->admin_listen != NULL;
    rt->metrics = pb_metrics_new();
    if (!rt->metrics) {
        pb_diag_add(diag, "out of memory");
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < rt->cfg->connector_count; i++) {
        const plugboard_connector_t *d = pb_plugin_descriptor(rt->plugins[i]);
        pb_mconn_describe(
            pb_metrics_connector(rt->metrics, rt->cfg->connectors[i].name),
            d->name, d->version);
    }
    return 0;
}

static int
s_start_admin(pb_runtime_t *rt, pb_diag_t *diag)
{
    char err[512];
    const pb_config_t *cfg = rt->cfg;
    if (cfg->admin_listen) {
        pb_http_options_t ao = {
            .listen = cfg->admin_listen,
            .body_limit = 1024,
            .idle_timeout_s = 30,
            .max_connections = 64,
            .on_page = s_on_admin_page,
            .ctx = rt,
        };
        rt->admin_http = pb_http_start(&ao, err, sizeof err);
        if (!rt->admin_http) {
            char where[4200];
            pb_diag_add(diag, "%s: plugboard.http.admin_listen: %s",
                        pb_config_where(cfg, cfg->admin_listen_line, where,
                                        sizeof where),
                        err);
            return PB_EIO;
        }
        pb_info("runtime", "admin pages on %s port=%u", cfg->admin_listen,
                (unsigned)pb_http_port(rt->admin_http));
    }
    if (pb_metrics_sampler_start(rt->metrics, PB_OBSERVE_SAMPLE_MS,
                                 PB_OBSERVE_SAMPLES) != 0) {
        pb_diag_add(diag, "cannot start the metrics sampler");
        return PB_EIO;
    }
    return 0;
}

/* Serve the admin socket while a reload waits for plugins to open. */
static void
s_pump(void *ctx, int timeout_ms)
{
    pb_runtime_t *rt = ctx;
    struct pollfd p = {.fd = pb_runtime_control_fd(rt), .events = POLLIN};
    if (p.fd < 0)
        usleep((useconds_t)timeout_ms * 1000);
    else if (poll(&p, 1, timeout_ms) > 0)
        pb_runtime_serve_control(rt);
}

/* Hand the started connectors to reload.c, which owns them from now on. */
static int
s_start_reload(pb_runtime_t *rt, pb_diag_t *diag)
{
    pb_reload_options_t o = {
        .zmq_ctx = rt->zctx,
        .router_endpoint = S_ROUTER_ENDPOINT,
        .router = rt->router,
        .copy_dir = rt->plugin_copy_dir,
        .default_plugin_dir = pb_runtime_default_plugin_dir(),
        .cfg = &rt->cfg,
        .plugins = &rt->plugins,
        .plugin_count = &rt->plugin_count,
        .connectors = &rt->connectors,
        .pump = s_pump,
        .pump_ctx = rt,
        .metrics = rt->metrics,
    };
    rt->reload = pb_reload_new(&o);
    if (!rt->reload) {
        pb_diag_add(diag, "out of memory");
        return PB_ENOMEM;
    }
    return 0;
}

static int
s_start_parts(pb_runtime_t *rt, pb_diag_t *diag)
{
    char err[512];
    const pb_config_t *cfg = rt->cfg;
    if (s_start_metrics(rt, diag) != 0)
        return PB_ENOMEM;
    rt->journal = pb_journal_open(cfg->data_dir, err, sizeof err);
    if (!rt->journal) {
        pb_diag_add(diag, "%s", err);
        return PB_EJOURNAL;
    }
    rt->zctx = zmq_ctx_new();
    if (!rt->zctx) {
        pb_diag_add(diag, "cannot create the messaging context");
        return PB_ENOMEM;
    }
    size_t n = cfg->connector_count;
    pb_router_dest_options_t *dests = calloc(n ? n : 1, sizeof *dests);
    rt->connectors = calloc(n ? n : 1, sizeof *rt->connectors);
    if (!dests || !rt->connectors) {
        free(dests);
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const plugboard_connector_t *d = pb_plugin_descriptor(rt->plugins[i]);
        dests[i].name = cfg->connectors[i].name;
        dests[i].window = PB_ROUTER_DEFAULT_WINDOW;
        dests[i].workers = cfg->connectors[i].concurrency;
        dests[i].timeout_ms = cfg->connectors[i].deliver_timeout_ms
                                  ? cfg->connectors[i].deliver_timeout_ms
                                  : d->deliver_timeout_ms;
    }
    pb_router_options_t ro = {
        .zmq_ctx = rt->zctx,
        .endpoint = S_ROUTER_ENDPOINT,
        .config = cfg,
        .dests = dests,
        .dest_count = n,
        .journal = rt->journal,
        .metrics = rt->metrics,
    };
    rt->router = pb_router_start(&ro, err, sizeof err);
    free(dests);
    if (!rt->router) {
        pb_diag_add(diag, "%s", err);
        return PB_EIO;
    }
    for (size_t i = 0; i < n; i++) {
        pb_connector_options_t co = {
            .zmq_ctx = rt->zctx,
            .router_endpoint = S_ROUTER_ENDPOINT,
            .name = cfg->connectors[i].name,
            .plugin = rt->plugins[i],
            .settings = cfg->connectors[i].bound,
            .metrics = pb_metrics_connector(rt->metrics,
                                            cfg->connectors[i].name),
            .isolation = cfg->connectors[i].isolation,
            .config_path = cfg->path,
            .log_level = cfg->log_level,
            .conf = &cfg->connectors[i],
            .run_dir = cfg->run_dir,
            .concurrency = cfg->connectors[i].concurrency,
            .deliver_timeout_ms =
                cfg->connectors[i].deliver_timeout_ms
                    ? cfg->connectors[i].deliver_timeout_ms
                    : pb_plugin_descriptor(rt->plugins[i])->deliver_timeout_ms,
        };
        rt->connectors[i] = pb_connector_start(&co, err, sizeof err);
        if (!rt->connectors[i]) {
            pb_diag_add(diag, "%s:%d: %s", cfg->path,
                        cfg->connectors[i].line, err);
            return PB_EIO;
        }
        pb_info("runtime", "connector=%s plugin=%s version=%s started",
                cfg->connectors[i].name,
                pb_plugin_descriptor(rt->plugins[i])->name,
                pb_plugin_descriptor(rt->plugins[i])->version);
    }
    if (s_start_reload(rt, diag) != 0)
        return PB_ENOMEM;
    if (cfg->listen) {
        pb_http_options_t ho = {
            .listen = cfg->listen,
            .body_limit = (size_t)cfg->body_limit,
            .idle_timeout_s = (unsigned)((cfg->idle_timeout_ms + 999) / 1000),
            .max_connections = (unsigned)cfg->max_connections,
            .on_webhook = s_on_webhook,
            .on_page = s_on_page,
            .ctx = rt,
        };
        rt->http = pb_http_start(&ho, err, sizeof err);
        if (!rt->http) {
            char where[4200];
            pb_diag_add(
                diag, "%s: plugboard.http.listen: %s",
                pb_config_where(cfg, cfg->listen_line, where, sizeof where),
                err);
            return PB_EIO;
        }
        pb_info("runtime", "listening on %s port=%u", cfg->listen,
                (unsigned)pb_http_port(rt->http));
    }
    char path[4200];
    pb_control_path(cfg->run_dir, path, sizeof path);
    rt->control = pb_control_listen(path, err, sizeof err);
    if (!rt->control) {
        pb_diag_add(diag, "%s", err);
        return PB_EIO;
    }
    if (s_start_admin(rt, diag) != 0)
        return PB_EIO;
    rt->started = true;
    return 0;
}

pb_runtime_t *
pb_runtime_start(const char *config_path, pb_diag_t *diag)
{
    pb_runtime_t *rt = calloc(1, sizeof *rt);
    if (!rt) {
        pb_diag_add(diag, "out of memory");
        return NULL;
    }
    if (s_prepare(rt, config_path, true, diag) != 0 ||
        s_start_parts(rt, diag) != 0) {
        pb_runtime_stop(&rt);
        return NULL;
    }
    return rt;
}

uint16_t
pb_runtime_http_port(const pb_runtime_t *rt)
{
    return rt->http ? pb_http_port(rt->http) : 0;
}

void
pb_runtime_stats(pb_runtime_t *rt, pb_router_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (rt->router)
        pb_router_stats(rt->router, out);
}

void
pb_runtime_stop(pb_runtime_t **rtp)
{
    if (!rtp || !*rtp)
        return;
    pb_runtime_t *rt = *rtp;
    *rtp = NULL;
    size_t n = rt->cfg ? rt->cfg->connector_count : 0;
    pb_control_close(&rt->control);
    if (rt->http)
        pb_http_quiesce(rt->http);
    if (rt->router) {
        int left = pb_router_drain(rt->router, rt->cfg->drain_timeout_ms);
        if (left)
            pb_warn("runtime", "deliveries still in flight=%d after the "
                    "drain timeout; they stay pending in the journal", left);
    }
    /* connectors finish the webhooks they hold while the router can
     * still acknowledge them */
    pb_reload_shutdown(rt->reload);
    for (size_t i = 0; rt->connectors && i < n; i++)
        pb_connector_stop(&rt->connectors[i]);
    pb_reload_destroy(&rt->reload);
    pb_health_destroy(&rt->health);
    free(rt->unmapped_seen);
    pb_http_stop(&rt->http);
    pb_http_stop(&rt->admin_http);
    if (rt->router) {
        /* the last word on this run, once nothing can change it */
        pb_router_stats_t st;
        pb_router_stats(rt->router, &st);
        pb_info("runtime",
                "stopped accepted=%llu duplicates=%llu delivered=%llu "
                "retried=%llu dead=%llu pending=%llu",
                (unsigned long long)st.accepted,
                (unsigned long long)st.duplicates,
                (unsigned long long)st.delivered,
                (unsigned long long)st.retried, (unsigned long long)st.dead,
                (unsigned long long)st.pending);
    }
    pb_router_stop(&rt->router);
    pb_metrics_destroy(&rt->metrics); /* nothing updates it any more */
    free(rt->connectors);
    if (rt->zctx)
        zmq_ctx_term(rt->zctx);
    pb_journal_close(&rt->journal);
    for (size_t i = 0; rt->cfg && i < rt->cfg->connector_count; i++)
        pb_settings_destroy(&rt->cfg->connectors[i].bound);
    s_unload(rt);
    pb_config_destroy(&rt->cfg);
    free(rt);
}

int
pb_runtime_control_fd(const pb_runtime_t *rt)
{
    return rt->control ? pb_control_fd(rt->control) : -1;
}

static json_t *
s_status(pb_runtime_t *rt)
{
    pb_router_stats_t st;
    pb_runtime_stats(rt, &st);
    json_t *conns = json_array();
    for (size_t i = 0; i < rt->cfg->connector_count; i++) {
        const plugboard_connector_t *d = pb_plugin_descriptor(rt->plugins[i]);
        json_array_append_new(
            conns, json_pack("{s:s, s:s, s:s, s:s}", "name",
                             rt->cfg->connectors[i].name, "plugin", d->name,
                             "version", d->version ? d->version : "",
                             "state", "running"));
    }
    if (rt->reload) /* instance state, draining and starting instances */
        pb_reload_status(rt->reload, conns);
    return json_pack(
        "{s:b, s:s, s:o, s:{s:I, s:I}, "
        "s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
        "ok", 1, "version", PB_VERSION, "connectors", conns, "owner_notices",
        "checks", (json_int_t)rt->health_checks, "sent",
        (json_int_t)rt->health_notices, "totals",
        "accepted", (json_int_t)st.accepted, "duplicates",
        (json_int_t)st.duplicates, "unrouted", (json_int_t)st.unrouted,
        "delivered", (json_int_t)st.delivered, "retried",
        (json_int_t)st.retried, "dead", (json_int_t)st.dead, "pending",
        (json_int_t)st.pending, "inflight", (json_int_t)st.inflight,
        "bad_frames", (json_int_t)st.bad_frames);
}

static json_t *
s_control(void *ctx, const char *cmd, json_t *req)
{
    pb_runtime_t *rt = ctx;
    if (strncmp(cmd, "dlq.", 4) == 0)
        return pb_router_control(rt->router, req, 10000);
    if (strcmp(cmd, "status") == 0)
        return pb_observe_status(s_status(rt), rt->metrics, rt->cfg, req);
    if (strcmp(cmd, "constraint") == 0 || strcmp(cmd, "flow") == 0)
        return pb_observe_control(rt->metrics, rt->cfg, cmd, req);
    if (strcmp(cmd, "reload") == 0)
        return pb_reload_config(rt->reload, rt->cfg->path);
    if (strcmp(cmd, "upgrade") == 0) {
        const char *name = json_string_value(json_object_get(req, "name"));
        if (!name)
            return pb_control_error("upgrade needs a connector \"name\"");
        return pb_reload_upgrade(
            rt->reload, name,
            json_string_value(json_object_get(req, "plugin")));
    }
    return pb_control_error("unknown command '%s'", cmd);
}

/* ---------------------------------------------------------------- */
/* owner notices: plugboard.connector.unhealthy                      */
/* ---------------------------------------------------------------- */

static const plugboard_connector_t *
s_descriptor_of(const pb_runtime_t *rt, const char *name)
{
    for (size_t i = 0; i < rt->cfg->connector_count && i < rt->plugin_count;
         i++)
        if (strcmp(rt->cfg->connectors[i].name, name) == 0)
            return pb_plugin_descriptor(rt->plugins[i]);
    return NULL;
}

static bool
s_consumes(const plugboard_connector_t *d, const char *type)
{
    for (size_t i = 0; d && d->consumes && d->consumes[i]; i++)
        if (pb_type_matches(d->consumes[i], type))
            return true;
    return false;
}

/* The "connectors" entry of status for name, or NULL. */
static json_t *
s_conn_status(json_t *status, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(status, "connectors"), i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            return c;
    }
    return NULL;
}

static const pb_mhop_snap_t *
s_hop_snap(const pb_metrics_snap_t *snap, const char *route, const char *dest)
{
    for (size_t i = 0; i < snap->hop_count; i++)
        if (strcmp(snap->hops[i].route, route) == 0 &&
            strcmp(snap->hops[i].connector, dest) == 0)
            return &snap->hops[i];
    return NULL;
}

/* Ask the router to send one notice when it is due; at most once per
 * interval for (route, dest, cause). */
static void
s_maybe_notify(pb_runtime_t *rt, const pb_route_conf_t *r, const char *dest,
               const char *cause, bool unhealthy, const char *detail,
               int64_t now)
{
    int64_t since = now;
    if (!pb_health_due(rt->health, r->name, dest, cause, unhealthy,
                       r->alert_interval_ms, now, &since))
        return;
    int64_t since_wall = pb_now_ms() - (now - since);
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "cmd",
                            "notice", "route", r->name, "destination", dest,
                            "cause", cause, "detail", detail, "since",
                            (json_int_t)since_wall, "interval_ms",
                            (json_int_t)r->alert_interval_ms);
    json_t *resp = req ? pb_router_control(rt->router, req, 10000) : NULL;
    if (json_is_true(json_object_get(resp, "ok"))) {
        pb_health_sent(rt->health, r->name, dest, cause, now);
        rt->health_notices++;
        pb_warn("runtime",
                "route=%s connector=%s unhealthy cause=%s owner=%s notify=%s "
                "notice sent",
                r->name, dest, cause, r->owner, r->notify);
    } else {
        pb_error("runtime",
                 "route=%s connector=%s unhealthy cause=%s: cannot send the "
                 "owner notice: %s",
                 r->name, dest, cause,
                 resp ? json_string_value(json_object_get(resp, "error"))
                      : "out of memory");
    }
    json_decref(req);
    json_decref(resp);
}

static void
s_grow_unmapped_seen(pb_runtime_t *rt, size_t n)
{
    if (n <= rt->unmapped_seen_count)
        return;
    uint64_t *seen = realloc(rt->unmapped_seen, n * sizeof *seen);
    if (!seen)
        return;
    /* a series first seen now starts from zero: what it counted before
     * this pass is news too */
    memset(seen + rt->unmapped_seen_count, 0,
           (n - rt->unmapped_seen_count) * sizeof *seen);
    rt->unmapped_seen = seen;
    rt->unmapped_seen_count = n;
}

/* Route r's source kept vendor items it could not map as (ingress) dead
 * letters since the last pass: tell the route's owner, once per interval
 * (the items have no route of their own, so no dead-letter notice). */
static void
s_check_unmapped(pb_runtime_t *rt, const pb_route_conf_t *r,
                 const pb_metrics_snap_t *snap, int64_t now)
{
    for (size_t i = 0; snap && i < snap->conn_count &&
                       i < rt->unmapped_seen_count;
         i++) {
        const pb_mconn_snap_t *c = &snap->conns[i];
        if (strcmp(c->name, r->from) != 0)
            continue;
        uint64_t fresh = c->unmapped > rt->unmapped_seen[i]
                             ? c->unmapped - rt->unmapped_seen[i]
                             : 0;
        char detail[300];
        snprintf(detail, sizeof detail,
                 "%llu verified vendor item(s) from '%s' could not be "
                 "mapped to events and were kept as dead letters (%llu in "
                 "all): plugboard dlq list --connector %s",
                 (unsigned long long)fresh, r->from,
                 (unsigned long long)c->unmapped, r->from);
        s_maybe_notify(rt, r, r->from, "unmapped", fresh > 0, detail, now);
        return;
    }
}

/* Once a second: every route destination that is crash-looping, whose
 * vendor refuses its credentials, or whose oldest pending delivery is
 * older than the route's alert_after; every route source that could not
 * map what its vendor sent. */
static void
s_check_health(pb_runtime_t *rt)
{
    int64_t now = pb_monotonic_ms();
    if (!rt->started || !rt->router || now - rt->health_checked_ms < 1000)
        return;
    rt->health_checked_ms = now;
    if (!rt->health && !(rt->health = pb_health_new()))
        return;
    json_t *status = s_status(rt);
    pb_metrics_snap_t snap = {0};
    bool have_snap = rt->metrics && pb_metrics_snapshot(rt->metrics, &snap) == 0;
    s_grow_unmapped_seen(rt, have_snap ? snap.conn_count : 0);
    for (size_t i = 0; status && i < rt->cfg->route_count; i++) {
        const pb_route_conf_t *r = &rt->cfg->routes[i];
        if (!r->notify || !s_consumes(s_descriptor_of(rt, r->notify),
                                      PLUGBOARD_EV_CONNECTOR_UNHEALTHY))
            continue;
        s_check_unmapped(rt, r, have_snap ? &snap : NULL, now);
        for (size_t k = 0; k < r->to_count; k++) {
            const char *dest = r->to[k];
            if (strcmp(dest, r->notify) == 0)
                continue;
            json_t *c = s_conn_status(status, dest);
            const char *state = json_string_value(json_object_get(c, "state"));
            const char *why = json_string_value(json_object_get(c, "failure"));
            s_maybe_notify(rt, r, dest, "crash_loop",
                           state && strcmp(state, "failed") == 0,
                           why ? why : "its worker keeps dying", now);
            /* the connector's own words (api->auth_failed), no secret */
            json_t *auth = json_object_get(c, "auth_failed");
            const char *reason =
                json_string_value(json_object_get(auth, "reason"));
            s_maybe_notify(rt, r, dest, "auth", auth != NULL,
                           reason ? reason : "credentials refused", now);
            const pb_mhop_snap_t *h =
                have_snap ? s_hop_snap(&snap, r->name, dest) : NULL;
            bool old = r->alert_after_ms > 0 && h && h->pending > 0 &&
                       h->oldest_ms > r->alert_after_ms;
            char detail[200];
            snprintf(detail, sizeof detail,
                     "its oldest pending delivery is %lld s old (alert_after "
                     "%lld s); %lld pending",
                     h ? (long long)(h->oldest_ms / 1000) : 0LL,
                     (long long)(r->alert_after_ms / 1000),
                     h ? (long long)h->pending : 0LL);
            s_maybe_notify(rt, r, dest, "backlog", old, detail, now);
        }
    }
    for (size_t i = 0; have_snap && i < snap.conn_count &&
                       i < rt->unmapped_seen_count;
         i++)
        rt->unmapped_seen[i] = snap.conns[i].unmapped;
    if (have_snap)
        pb_metrics_snap_release(&snap);
    json_decref(status);
    rt->health_checks++;
}

void
pb_runtime_tick(pb_runtime_t *rt)
{
    if (rt->reload)
        pb_reload_tick(rt->reload);
    s_check_health(rt);
}

int
pb_runtime_reload(pb_runtime_t *rt)
{
    json_t *a = pb_reload_config(rt->reload, rt->cfg->path);
    /* the reload logged each reason on its own line already */
    int rc = json_is_true(json_object_get(a, "ok")) ? 0 : PB_ECONFIG;
    json_decref(a);
    return rc;
}

void
pb_runtime_serve_control(pb_runtime_t *rt)
{
    if (rt->control)
        pb_control_serve_one(rt->control, s_control, rt);
}
