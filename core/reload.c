/*
 * reload.c - config reload, connector upgrade, and the connector instances
 * they start beside the running ones and retire.
 *
 * Owns every connector instance after start (current and retired), the
 * reference-counted plugins they run, the settings of retired instances,
 * and the webhook lookup table the HTTP listener reads under hook_lock.
 * Everything else runs on the main thread.
 */
#define _GNU_SOURCE
#include "reload.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "control.h"
#include "error.h"
#include "hostapi.h"
#include "log.h"

#define S_WAIT_STEP_MS 20     /* pump slice while plugins open */
#define S_WATCH_SETTLE_MS 500 /* a changed file must stay so this long */
#define S_OPEN_TIMEOUT_MS 20000

/* A loaded plugin and the instances running it. */
typedef struct s_plug {
    pb_plugin_t *p;
    int refs;
    struct stat st; /* its file when loaded (watch) */
    bool have_st;
} plug_t;

typedef struct s_inst {
    char name[64];
    char rid[80]; /* routing id */
    uint32_t gen;
    char isolation[16];
    pb_connector_t *actor;
    plug_t *plug;                   /* one reference */
    plugboard_settings_t *settings; /* owned when not current; current
                                       instances use their config's */
    int64_t started_wall, started_mono;
    int64_t retired_mono; /* 0 while current */
    bool opening;         /* abandoned while its open still ran */
    bool warned;
    /* watch = true: a changed plugin file, upgraded once it settles */
    struct stat watch_st, watch_failed;
    bool watch_pending, watch_failed_set;
    int64_t watch_since;
} inst_t;

typedef struct s_hook {
    char name[64];
    pb_connector_t *actor;
} hook_t;

struct pb_reload {
    pb_reload_options_t opt;
    char copy_dir[4096];
    char default_dir[4096];
    inst_t **cur; /* aligned with (*opt.cfg)->connectors */
    size_t cur_count;
    inst_t **retired;
    size_t retired_count, retired_cap;
    inst_t **starting; /* a reload's new instances, for status */
    size_t starting_count;
    uint32_t next_gen;
    bool busy;
    int64_t busy_since;

    pthread_mutex_t hook_lock; /* guards hooks, hook_count, stopping */
    hook_t *hooks;
    size_t hook_count;
    bool stopping;
};

/* What a reload has prepared; undone unless committed. */
typedef struct s_stage {
    pb_reload_t *rl;
    pb_config_t *cfg; /* the new config */
    plug_t **plugs;   /* per new connector, a reference */
    inst_t **insts;   /* per new connector, who serves it */
    bool *fresh;      /* insts[i] was started by this reload */
    const char *const *search;
    size_t search_count;
} stage_t;

/* ---------------------------------------------------------------- */
/* plugins and instances                                             */
/* ---------------------------------------------------------------- */

static plug_t *
s_plug_new(pb_plugin_t *p)
{
    plug_t *pl = calloc(1, sizeof *pl);
    if (!pl) {
        pb_plugin_destroy(&p);
        return NULL;
    }
    pl->p = p;
    pl->refs = 1;
    pl->have_st = stat(pb_plugin_path(p), &pl->st) == 0;
    return pl;
}

/* ---------------------------------------------------------------- */
/* is a thread still inside a plugin?                                */
/* ---------------------------------------------------------------- */

#define S_TEXT_MAX 8
#define S_STACK_SCAN_MAX (256 * 1024)

/* The executable segments of one loaded object. */
typedef struct s_text {
    const char *name;
    uintptr_t lo[S_TEXT_MAX], hi[S_TEXT_MAX];
    size_t n;
} text_t;

static int
s_text_cb(struct dl_phdr_info *info, size_t size, void *ctx)
{
    text_t *t = ctx;
    if (!info->dlpi_name || strcmp(info->dlpi_name, t->name) != 0)
        return 0;
    for (int i = 0; i < info->dlpi_phnum && t->n < S_TEXT_MAX; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        t->lo[t->n] = info->dlpi_addr + ph->p_vaddr;
        t->hi[t->n++] = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
    }
    return 1;
}

static bool
s_in_text(const text_t *t, uintptr_t a)
{
    for (size_t i = 0; i < t->n; i++)
        if (a >= t->lo[i] && a < t->hi[i])
            return true;
    return false;
}

/* The end of the mapping that holds addr, or 0. */
static uintptr_t
s_map_end(uintptr_t addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    uintptr_t end = 0;
    while (f && !end && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && addr >= lo && addr < hi)
            end = hi;
    }
    if (f)
        fclose(f);
    return end;
}

/* Does the live part of a stack (sp upwards) hold an address in t?  Read
 * through /proc/self/mem, which neither faults nor trips the sanitizers. */
static bool
s_stack_refers(int mem, uintptr_t sp, const text_t *t)
{
    uintptr_t end = s_map_end(sp);
    if (end > sp + S_STACK_SCAN_MAX)
        end = sp + S_STACK_SCAN_MAX;
    uint64_t buf[2048];
    for (uintptr_t at = sp & ~(uintptr_t)7; at < end;) {
        size_t want = end - at < sizeof buf ? end - at : sizeof buf;
        ssize_t got = pread(mem, buf, want, (off_t)at);
        if (got <= 0)
            return false;
        for (size_t k = 0; k < (size_t)got / 8; k++)
            if (s_in_text(t, (uintptr_t)buf[k]))
                return true;
        at += (uintptr_t)got;
    }
    return false;
}

/*
 * How many threads other than the caller are inside the plugin's code, or
 * blocked in a call made from it: their instruction pointer, or an address
 * on their stack, is in its text.  A thread busy running (not in a system
 * call) shows neither and is not seen; a stale address on a live stack can
 * make a false positive, which only keeps the code loaded.  Their ids go
 * to tids.
 */
static int
s_threads_inside(const pb_plugin_t *p, char *tids, size_t len)
{
    Dl_info di;
    void *fn;
    const plugboard_connector_t *d = pb_plugin_descriptor(p);
    memcpy(&fn, &d->open, sizeof fn);
    tids[0] = '\0';
    if (!dladdr(fn, &di) || !di.dli_fname)
        return 0;
    text_t t = {.name = di.dli_fname};
    dl_iterate_phdr(s_text_cb, &t);
    long self = (long)syscall(SYS_gettid);
    DIR *dir = t.n ? opendir("/proc/self/task") : NULL;
    int mem = dir ? open("/proc/self/mem", O_RDONLY | O_CLOEXEC) : -1;
    int found = 0;
    size_t at = 0;
    struct dirent *e;
    while (mem >= 0 && (e = readdir(dir))) {
        long tid = strtol(e->d_name, NULL, 10);
        char path[64], line[512];
        snprintf(path, sizeof path, "/proc/self/task/%ld/syscall", tid);
        FILE *f = tid > 0 && tid != self ? fopen(path, "r") : NULL;
        bool ok = f && fgets(line, sizeof line, f);
        if (f)
            fclose(f);
        /* "nr a1 ... a6 sp pc" or "-1 sp pc": the last two numbers */
        char *pc_s = ok ? strrchr(line, ' ') : NULL;
        if (!pc_s || strncmp(line, "running", 7) == 0)
            continue;
        *pc_s = '\0';
        char *sp_s = strrchr(line, ' ');
        uintptr_t pc = (uintptr_t)strtoull(pc_s + 1, NULL, 16);
        uintptr_t sp = sp_s ? (uintptr_t)strtoull(sp_s + 1, NULL, 16) : 0;
        if (!s_in_text(&t, pc) && !(sp && s_stack_refers(mem, sp, &t)))
            continue;
        found++;
        if (at < len)
            at += (size_t)snprintf(tids + at, len - at, "%s%ld", at ? "," : "",
                                   tid);
    }
    if (mem >= 0)
        close(mem);
    if (dir)
        closedir(dir);
    return found;
}

/* A plugin whose code a thread may still run: never unloaded, and shown
 * by status as a "leaked" row of the instance that last ran it. */
typedef struct s_abandoned {
    pb_plugin_t *p;
    char name[64], instance[80], isolation[16];
    char plugin[64], version[32];
    char why[200];
    int64_t since_wall;
} abandoned_t;

/* Main thread only; forgotten at pb_reload_destroy. */
static abandoned_t *s_abandoned;
static size_t s_abandoned_count;

/* Drop one reference; in is the instance that held it (NULL: a reload's
 * or upgrade's own), named when its plugin cannot be unloaded. */
static void
s_plug_release(plug_t **plp, const inst_t *in)
{
    plug_t *pl = *plp;
    *plp = NULL;
    if (!pl || --pl->refs > 0)
        return;
    const plugboard_connector_t *d = pb_plugin_descriptor(pl->p);
    const char *version = d->version ? d->version : "?";
    char tids[128];
    int n = s_threads_inside(pl->p, tids, sizeof tids);
    abandoned_t *grown =
        n ? realloc(s_abandoned, (s_abandoned_count + 1) * sizeof *grown)
          : NULL;
    if (grown) {
        abandoned_t *a = &grown[s_abandoned_count++];
        s_abandoned = grown;
        memset(a, 0, sizeof *a);
        a->p = pl->p;
        snprintf(a->name, sizeof a->name, "%s", in ? in->name : "");
        snprintf(a->instance, sizeof a->instance, "%s",
                 in ? (in->gen ? in->rid : in->name) : "");
        snprintf(a->isolation, sizeof a->isolation, "%s",
                 in ? in->isolation : "thread");
        snprintf(a->plugin, sizeof a->plugin, "%s", d->name);
        snprintf(a->version, sizeof a->version, "%s", version);
        snprintf(a->why, sizeof a->why,
                 "left %d thread%s running in its code after close (tid "
                 "%.100s); kept loaded",
                 n, n == 1 ? "" : "s", tids);
        a->since_wall = pb_now_ms();
        pb_error("reload",
                 "plugin=%s version=%s left %d thread%s running in its code "
                 "after close (tid %s); it is not unloaded: fix its close",
                 d->name, version, n, n == 1 ? "" : "s", tids);
        free(pl);
        return;
    }
    pb_info("reload", "plugin=%s version=%s unloaded", d->name, version);
    pb_plugin_destroy(&pl->p);
    free(pl);
}

static const char *
s_version(const inst_t *in)
{
    const char *v = pb_plugin_descriptor(in->plug->p)->version;
    return v ? v : "";
}

static inst_t *
s_inst_new(pb_reload_t *rl, const pb_connector_conf_t *conf, plug_t *plug)
{
    inst_t *in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    snprintf(in->name, sizeof in->name, "%s", conf->name);
    in->gen = ++rl->next_gen;
    snprintf(in->rid, sizeof in->rid, "%s#%u", conf->name, in->gen);
    snprintf(in->isolation, sizeof in->isolation, "%s",
             conf->isolation ? conf->isolation : "thread");
    in->plug = plug;
    plug->refs++;
    return in;
}

/* Only for an instance whose actor is stopped (or never started). */
static void
s_inst_free(inst_t *in)
{
    if (!in)
        return;
    pb_settings_destroy(&in->settings);
    s_plug_release(&in->plug, in);
    free(in);
}

static int
s_current(const pb_reload_t *rl, const char *name)
{
    for (size_t i = 0; i < rl->cur_count; i++)
        if (strcmp(rl->cur[i]->name, name) == 0)
            return (int)i;
    return -1;
}

static void
s_search(const pb_reload_t *rl, const pb_config_t *cfg,
         const char *const **search, size_t *count)
{
    static const char *one[1];
    if (cfg->plugin_path_count) {
        *search = (const char *const *)cfg->plugin_path;
        *count = cfg->plugin_path_count;
    } else {
        one[0] = rl->default_dir;
        *search = one;
        *count = 1;
    }
}

/* Start an instance's actor; its open runs on its own thread. */
static int
s_spawn(pb_reload_t *rl, inst_t *in, const pb_config_t *cfg,
        const pb_connector_conf_t *conf, const plugboard_settings_t *settings,
        char *err, size_t err_len)
{
    const plugboard_connector_t *d = pb_plugin_descriptor(in->plug->p);
    pb_connector_options_t co = {
        .zmq_ctx = rl->opt.zmq_ctx,
        .router_endpoint = rl->opt.router_endpoint,
        .name = in->name,
        .plugin = in->plug->p,
        .settings = settings,
        .routing_id = in->rid,
        .metrics = pb_metrics_connector(rl->opt.metrics, in->name),
        .isolation = conf->isolation,
        .config_path = cfg->path,
        .log_level = cfg->log_level,
        .conf = conf,
        .run_dir = cfg->run_dir,
        .concurrency = conf->concurrency,
        .deliver_timeout_ms = conf->deliver_timeout_ms
                                  ? conf->deliver_timeout_ms
                                  : d->deliver_timeout_ms,
    };
    in->actor = pb_connector_spawn(&co, err, err_len);
    in->started_wall = pb_now_ms();
    in->started_mono = pb_monotonic_ms();
    return in->actor ? 0 : PB_EIO;
}

/*
 * Wait, serving the admin socket, until every instance in insts whose
 * fresh flag is set has opened or failed, or the open timeout passed.
 * Failures go to diag; instances still opening are marked so.  Returns
 * the number that did not open.
 */
static size_t
s_wait_opens(pb_reload_t *rl, inst_t **insts, const bool *fresh, size_t n,
             const pb_config_t *cfg, pb_diag_t *diag)
{
    int64_t deadline = pb_monotonic_ms() + rl->opt.open_timeout_ms;
    size_t failed = 0;
    for (;;) {
        size_t waiting = 0;
        for (size_t i = 0; i < n; i++)
            if (fresh[i] && insts[i]->actor &&
                pb_connector_wait_open(insts[i]->actor, 0, NULL, 0) ==
                    PB_ETIMEDOUT)
                waiting++;
        if (!waiting || pb_monotonic_ms() >= deadline)
            break;
        if (rl->opt.pump)
            rl->opt.pump(rl->opt.pump_ctx, S_WAIT_STEP_MS);
        else
            usleep(S_WAIT_STEP_MS * 1000);
    }
    for (size_t i = 0; i < n; i++) {
        if (!fresh[i] || !insts[i]->actor)
            continue;
        char err[PLUGBOARD_ERRBUF_MAX + 128] = "";
        const pb_connector_conf_t *conf =
            pb_config_connector(cfg, insts[i]->name);
        int rc = pb_connector_wait_open(insts[i]->actor, 0, err, sizeof err);
        if (rc == 0)
            continue;
        failed++;
        if (rc == PB_ETIMEDOUT) {
            insts[i]->opening = true;
            snprintf(err, sizeof err,
                     "cannot start connector '%s': open did not return "
                     "within %lld ms",
                     insts[i]->name, (long long)rl->opt.open_timeout_ms);
        }
        pb_diag_add(diag, "%s:%d: %s", cfg->path, conf ? conf->line : 0, err);
    }
    return failed;
}

/* The metrics name what a connector runs once an instance serves it. */
static void
s_describe_metrics(pb_reload_t *rl, const inst_t *in)
{
    const plugboard_connector_t *d = pb_plugin_descriptor(in->plug->p);
    pb_mconn_describe(pb_metrics_connector(rl->opt.metrics, in->name), d->name,
                      d->version);
}

/* Stop an instance that never became current: after a failed reload or
 * upgrade.  One still inside open retires instead, owning settings. */
static void
s_discard(pb_reload_t *rl, inst_t *in, plugboard_settings_t **settings)
{
    if (in->opening) {
        in->settings = *settings;
        *settings = NULL;
        in->retired_mono = pb_monotonic_ms();
        if (rl->retired_count == rl->retired_cap) {
            size_t cap = rl->retired_cap ? rl->retired_cap * 2 : 8;
            inst_t **n = realloc(rl->retired, cap * sizeof *n);
            if (!n)
                abort();
            rl->retired = n;
            rl->retired_cap = cap;
        }
        rl->retired[rl->retired_count++] = in;
        return;
    }
    pb_connector_stop(&in->actor);
    s_inst_free(in);
}

static void
s_retire(pb_reload_t *rl, inst_t *in, plugboard_settings_t **settings)
{
    in->settings = *settings;
    *settings = NULL;
    in->retired_mono = pb_monotonic_ms();
    if (rl->retired_count == rl->retired_cap) {
        size_t cap = rl->retired_cap ? rl->retired_cap * 2 : 8;
        inst_t **n = realloc(rl->retired, cap * sizeof *n);
        if (!n)
            abort();
        rl->retired = n;
        rl->retired_cap = cap;
    }
    rl->retired[rl->retired_count++] = in;
    pb_info("reload", "instance=%s version=%s draining", in->rid,
            s_version(in));
}

/* ---------------------------------------------------------------- */
/* the swap                                                          */
/* ---------------------------------------------------------------- */

/* Route table for cfg served by insts (aligned with its connectors);
 * removed names whose instances still run are kept. */
static int
s_swap_table(pb_reload_t *rl, const pb_config_t *cfg, inst_t **insts,
             pb_router_swap_result_t *res, char *err, size_t err_len)
{
    size_t n = cfg->connector_count;
    size_t nk = rl->retired_count + rl->cur_count;
    pb_router_dest_options_t *dests = calloc(n ? n : 1, sizeof *dests);
    const char **keep = calloc(nk ? nk : 1, sizeof *keep);
    if (!dests || !keep) {
        free(dests);
        free(keep);
        snprintf(err, err_len, "out of memory");
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const pb_connector_conf_t *c = &cfg->connectors[i];
        dests[i].name = c->name;
        dests[i].peer = insts[i]->gen ? insts[i]->rid : insts[i]->name;
        dests[i].window = PB_ROUTER_DEFAULT_WINDOW;
        dests[i].workers = c->concurrency;
        dests[i].timeout_ms =
            c->deliver_timeout_ms
                ? c->deliver_timeout_ms
                : pb_plugin_descriptor(insts[i]->plug->p)->deliver_timeout_ms;
    }
    size_t k = 0;
    for (size_t i = 0; i < rl->retired_count; i++)
        keep[k++] = rl->retired[i]->name;
    for (size_t i = 0; i < rl->cur_count; i++)
        keep[k++] = rl->cur[i]->name; /* those removed now still run */
    pb_router_table_t t = {.config = cfg,
                           .dests = dests,
                           .dest_count = n,
                           .keep = keep,
                           .keep_count = k};
    int rc = pb_router_swap(rl->opt.router, &t, res, err, err_len);
    free(dests);
    free(keep);
    return rc;
}

/* Point the webhook lookup at insts (aligned with cfg's connectors). */
static void
s_set_hooks(pb_reload_t *rl, const pb_config_t *cfg, inst_t **insts)
{
    size_t n = cfg->connector_count;
    hook_t *h = calloc(n ? n : 1, sizeof *h);
    if (!h)
        abort();
    for (size_t i = 0; i < n; i++) {
        snprintf(h[i].name, sizeof h[i].name, "%s", insts[i]->name);
        h[i].actor = insts[i]->actor;
    }
    pthread_mutex_lock(&rl->hook_lock);
    hook_t *old = rl->hooks;
    rl->hooks = h;
    rl->hook_count = n;
    pthread_mutex_unlock(&rl->hook_lock);
    free(old);
}

/* Replace the runtime's view with cfg served by insts. */
static void
s_set_view(pb_reload_t *rl, pb_config_t *cfg, inst_t **insts)
{
    size_t n = cfg->connector_count;
    pb_plugin_t **plugins = calloc(n ? n : 1, sizeof *plugins);
    pb_connector_t **actors = calloc(n ? n : 1, sizeof *actors);
    if (!plugins || !actors)
        abort();
    for (size_t i = 0; i < n; i++) {
        plugins[i] = insts[i]->plug->p;
        actors[i] = insts[i]->actor;
    }
    free(*rl->opt.plugins);
    free(*rl->opt.connectors);
    *rl->opt.plugins = plugins;
    *rl->opt.plugin_count = n;
    *rl->opt.connectors = actors;
    if (*rl->opt.cfg != cfg) {
        pb_config_destroy(rl->opt.cfg);
        *rl->opt.cfg = cfg;
    }
    if (rl->cur != insts) {
        free(rl->cur);
        rl->cur = insts;
    }
    rl->cur_count = n;
}

static json_t *
s_busy(const pb_reload_t *rl)
{
    return pb_control_error(
        "a reload or upgrade is already in progress (for %lld ms); try "
        "again when it finishes",
        (long long)(pb_monotonic_ms() - rl->busy_since));
}

/* {"ok":false,"error":"<what>:\n  <each reason>"}, logged too. */
static json_t *
s_failure(const char *what, const pb_diag_t *diag)
{
    size_t len = strlen(what) + 2;
    for (size_t i = 0; i < diag->count; i++)
        len += strlen(diag->messages[i]) + 3;
    char *msg = malloc(len + 1);
    if (!msg)
        return pb_control_error("%s", what);
    size_t at =
        (size_t)snprintf(msg, len + 1, "%s%s", what, diag->count ? ":" : "");
    for (size_t i = 0; i < diag->count; i++) {
        at += (size_t)snprintf(msg + at, len + 1 - at, "\n  %s",
                               diag->messages[i]);
        pb_error("reload", "%s: %s", what, diag->messages[i]);
    }
    if (!diag->count)
        pb_error("reload", "%s", what);
    json_t *out = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
    free(msg);
    return out;
}

/* ---------------------------------------------------------------- */
/* reload                                                            */
/* ---------------------------------------------------------------- */

static bool
s_same_raw(const pb_connector_conf_t *a, const pb_connector_conf_t *b)
{
    if (a->settings_count != b->settings_count)
        return false;
    for (size_t i = 0; i < a->settings_count; i++) {
        const pb_raw_setting_t *x = &a->settings[i], *y = NULL;
        for (size_t k = 0; k < b->settings_count && !y; k++)
            if (strcmp(b->settings[k].name, x->name) == 0)
                y = &b->settings[k];
        if (!y || x->kind != y->kind)
            return false;
        if ((x->kind == PB_RAW_STRING && strcmp(x->str, y->str) != 0) ||
            (x->kind == PB_RAW_INT && x->i != y->i) ||
            (x->kind == PB_RAW_BOOL && x->b != y->b) ||
            (x->kind == PB_RAW_FLOAT && x->f != y->f) ||
            x->kind == PB_RAW_OTHER)
            return false;
    }
    return true;
}

static bool
s_streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool
s_same_conf(const pb_connector_conf_t *a, const pb_connector_conf_t *b)
{
    return s_streq(a->plugin, b->plugin) &&
           s_streq(a->isolation, b->isolation) &&
           a->concurrency == b->concurrency &&
           a->deliver_timeout_ms == b->deliver_timeout_ms &&
           a->watch == b->watch && s_same_raw(a, b);
}

/* Settings a reload reads but does not apply: their names go to
 * restart (a JSON array), for the answer and the log, and cfg keeps the
 * values in use, so that the next reload names them again. */
static void
s_keep_deferred(pb_config_t *old, pb_config_t *cfg, json_t *restart)
{
    struct {
        const char *name;
        bool same;
    } deferred[] = {
        {"plugboard.http.body_limit", old->body_limit == cfg->body_limit},
        {"plugboard.http.idle_timeout",
         old->idle_timeout_ms == cfg->idle_timeout_ms},
        {"plugboard.http.max_connections",
         old->max_connections == cfg->max_connections},
        {"plugboard.http.admin_listen",
         s_streq(old->admin_listen, cfg->admin_listen)},
    };
    for (size_t i = 0; i < sizeof deferred / sizeof *deferred; i++) {
        if (deferred[i].same)
            continue;
        json_array_append_new(restart, json_string(deferred[i].name));
        pb_warn("reload", "setting=%s changed; not applied until the host "
                "restarts", deferred[i].name);
    }
    cfg->body_limit = old->body_limit;
    cfg->idle_timeout_ms = old->idle_timeout_ms;
    cfg->max_connections = old->max_connections;
    char *admin = cfg->admin_listen;
    cfg->admin_listen = old->admin_listen;
    old->admin_listen = admin;
}

/* What only a restart can change. */
static int
s_check_fixed(const pb_config_t *old, const pb_config_t *cfg, pb_diag_t *diag)
{
    int rc = 0;
    struct {
        const char *name, *a, *b;
        int line; /* of the new value; 0 when the file leaves it out */
    } fixed[] = {
        {"plugboard.data_dir", old->data_dir, cfg->data_dir,
         cfg->data_dir_line},
        {"plugboard.run_dir", old->run_dir, cfg->run_dir, cfg->run_dir_line},
        {"plugboard.http.listen", old->listen, cfg->listen, cfg->listen_line},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        if (s_streq(fixed[i].a, fixed[i].b))
            continue;
        char where[4200];
        pb_diag_add(diag,
                    "%s: %s cannot change while the host runs ('%s' -> "
                    "'%s'); restart the host for it",
                    pb_config_where(cfg, fixed[i].line, where, sizeof where),
                    fixed[i].name, fixed[i].a ? fixed[i].a : "",
                    fixed[i].b ? fixed[i].b : "");
        rc = PB_ECONFIG;
    }
    return rc;
}

static bool
s_isolated(const pb_connector_conf_t *conf)
{
    return conf->isolation && strcmp(conf->isolation, "process") == 0;
}

/* Is a private copy of it kept on disk, for a worker process to load? */
static bool
s_kept(const plug_t *pl)
{
    return strcmp(pb_plugin_file(pl->p), pb_plugin_path(pl->p)) != 0;
}

/* pb_config_bind's plugin lookup: a connector whose plugin line did not
 * change keeps the code it runs (reload changes config; upgrade code). */
static const plugboard_connector_t *
s_describe_new(void *ctx, const pb_connector_conf_t *conn, char *err,
               size_t err_len)
{
    stage_t *st = ctx;
    pb_reload_t *rl = st->rl;
    size_t i = (size_t)(conn - st->cfg->connectors);
    int j = s_current(rl, conn->name);
    const pb_config_t *old = *rl->opt.cfg;
    if (j >= 0 && strcmp(old->connectors[j].plugin, conn->plugin) == 0 &&
        (!s_isolated(conn) || s_kept(rl->cur[j]->plug))) {
        st->plugs[i] = rl->cur[j]->plug;
        st->plugs[i]->refs++;
    } else {
        pb_plugin_t *p =
            pb_plugin_load_kept(conn->plugin, st->search, st->search_count,
                                rl->copy_dir, s_isolated(conn), err, err_len);
        if (!p)
            return NULL;
        if (!(st->plugs[i] = s_plug_new(p))) {
            snprintf(err, err_len, "out of memory");
            return NULL;
        }
    }
    return pb_plugin_descriptor(st->plugs[i]->p);
}

static int
s_stage_bind(stage_t *st, pb_diag_t *diag)
{
    size_t n = st->cfg->connector_count;
    st->plugs = calloc(n ? n : 1, sizeof *st->plugs);
    st->insts = calloc(n ? n : 1, sizeof *st->insts);
    st->fresh = calloc(n ? n : 1, sizeof *st->fresh);
    if (!st->plugs || !st->insts || !st->fresh) {
        pb_diag_add(diag, "out of memory");
        return PB_ENOMEM;
    }
    s_search(st->rl, st->cfg, &st->search, &st->search_count);
    return pb_config_bind(st->cfg, s_describe_new, st, diag);
}

/* Has this instance's worker failed for good (a crash loop)?  A reload
 * then starts it afresh, changed entry or not: that is how an admin who
 * fixed the cause brings it back. */
static bool
s_has_failed(inst_t *in)
{
    pb_connector_info_t info;
    if (!in->actor || in->opening)
        return false;
    pb_connector_info(in->actor, &info);
    return info.state && strcmp(info.state, "failed") == 0;
}

/* Keep unchanged connectors' instances; start the others. */
static int
s_stage_start(stage_t *st, pb_diag_t *diag)
{
    pb_reload_t *rl = st->rl;
    const pb_config_t *old = *rl->opt.cfg;
    size_t n = st->cfg->connector_count;
    for (size_t i = 0; i < n; i++) {
        pb_connector_conf_t *conf = &st->cfg->connectors[i];
        int j = s_current(rl, conf->name);
        if (j >= 0 && rl->cur[j]->plug == st->plugs[i] &&
            s_same_conf(&old->connectors[j], conf) &&
            !s_has_failed(rl->cur[j])) {
            st->insts[i] = rl->cur[j];
            continue;
        }
        inst_t *in = s_inst_new(rl, conf, st->plugs[i]);
        char err[PLUGBOARD_ERRBUF_MAX + 128];
        if (!in) {
            pb_diag_add(diag, "out of memory");
            return PB_ENOMEM;
        }
        st->insts[i] = in;
        st->fresh[i] = true;
        if (s_spawn(rl, in, st->cfg, conf, conf->bound, err, sizeof err) != 0) {
            pb_diag_add(diag, "%s:%d: %s", st->cfg->path, conf->line, err);
            return PB_EIO;
        }
    }
    rl->starting = st->insts;
    rl->starting_count = n;
    size_t failed = s_wait_opens(rl, st->insts, st->fresh, n, st->cfg, diag);
    rl->starting = NULL;
    rl->starting_count = 0;
    return failed ? PB_EIO : 0;
}

static void
s_stage_undo(stage_t *st)
{
    size_t n = st->cfg ? st->cfg->connector_count : 0;
    for (size_t i = 0; st->insts && i < n; i++)
        if (st->fresh && st->fresh[i])
            s_discard(st->rl, st->insts[i], &st->cfg->connectors[i].bound);
    for (size_t i = 0; st->plugs && i < n; i++)
        s_plug_release(&st->plugs[i], NULL);
    free(st->plugs);
    free(st->insts);
    free(st->fresh);
    pb_config_destroy(&st->cfg);
}

static void
s_add_name(json_t *obj, const char *list, const char *name)
{
    json_array_append_new(json_object_get(obj, list), json_string(name));
}

/* One key=value line: "config reloaded added=a,b changed= ...". */
static void
s_log_reloaded(json_t *out)
{
    static const char *const keys[] = {"added", "changed", "removed",
                                       "unchanged"};
    char line[1024];
    size_t at = 0;
    for (size_t k = 0; k < 4 && at < sizeof line; k++) {
        at += (size_t)snprintf(line + at, sizeof line - at, "%s%s=",
                               k ? " " : "", keys[k]);
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(out, keys[k]), i, v)
        {
            if (at >= sizeof line)
                break;
            at += (size_t)snprintf(line + at, sizeof line - at, "%s%s",
                                   i ? "," : "", json_string_value(v));
        }
    }
    pb_info("reload", "config reloaded %s dead_lettered=%lld", line,
            (long long)json_integer_value(
                json_object_get(out, "dead_lettered")));
}

/* The new table is in use: hand webhooks over, retire what the new
 * config does not keep, and make it the runtime's view. */
static json_t *
s_stage_commit(stage_t *st, const pb_router_swap_result_t *res)
{
    pb_reload_t *rl = st->rl;
    pb_config_t *old = *rl->opt.cfg;
    size_t n = st->cfg->connector_count;
    json_t *out = json_pack("{s:b, s:[], s:[], s:[], s:[], s:I}", "ok", 1,
                            "added", "changed", "removed", "unchanged",
                            "dead_lettered", (json_int_t)res->dead_lettered);
    s_set_hooks(rl, st->cfg, st->insts);
    for (size_t j = 0; j < rl->cur_count; j++) {
        inst_t *in = rl->cur[j];
        pb_connector_conf_t *nc = pb_config_connector(st->cfg, in->name);
        size_t i = nc ? (size_t)(nc - st->cfg->connectors) : n;
        if (i < n && st->insts[i] == in) {
            /* the running instance reads these settings: the new config
             * owns them now, the old one the fresh duplicate */
            plugboard_settings_t *tmp = nc->bound;
            nc->bound = old->connectors[j].bound;
            old->connectors[j].bound = tmp;
            s_add_name(out, "unchanged", in->name);
            continue;
        }
        s_add_name(out, i < n ? "changed" : "removed", in->name);
        s_retire(rl, in, &old->connectors[j].bound);
    }
    for (size_t i = 0; i < n; i++) {
        if (st->fresh[i] && s_current(rl, st->insts[i]->name) < 0)
            s_add_name(out, "added", st->insts[i]->name);
        if (st->fresh[i])
            s_describe_metrics(rl, st->insts[i]);
        s_plug_release(&st->plugs[i], NULL);
    }
    pb_log_level_t level;
    if (st->cfg->log_level &&
        pb_log_parse_level(st->cfg->log_level, &level) == 0)
        pb_log_set_level(level);
    s_set_view(rl, st->cfg, st->insts);
    st->cfg = NULL;
    st->insts = NULL;
    free(st->plugs);
    free(st->fresh);
    s_log_reloaded(out);
    return out;
}

json_t *
pb_reload_config(pb_reload_t *rl, const char *path)
{
    if (rl->busy)
        return s_busy(rl);
    rl->busy = true;
    rl->busy_since = pb_monotonic_ms();
    pb_info("reload", "reloading config=%s", path);
    pb_diag_t diag;
    pb_diag_init(&diag);
    stage_t st = {.rl = rl};
    json_t *answer;
    char err[512];
    pb_router_swap_result_t res;
    st.cfg = pb_config_load(path, &diag);
    if (!st.cfg || s_check_fixed(*rl->opt.cfg, st.cfg, &diag) != 0 ||
        s_stage_bind(&st, &diag) != 0 || s_stage_start(&st, &diag) != 0)
        goto out_fail;
    if (s_swap_table(rl, st.cfg, st.insts, &res, err, sizeof err) != 0) {
        pb_diag_add(&diag, "%s", err);
        goto out_fail;
    }
    json_t *restart = json_array();
    s_keep_deferred(*rl->opt.cfg, st.cfg, restart);
    answer = s_stage_commit(&st, &res);
    json_object_set_new(answer, "restart_needed", restart);
    goto out;
out_fail:
    answer = s_failure("config not reloaded; the running configuration is "
                       "unchanged",
                       &diag);
    s_stage_undo(&st);
out:
    pb_diag_release(&diag);
    rl->busy = false;
    return answer;
}

/* ---------------------------------------------------------------- */
/* upgrade                                                           */
/* ---------------------------------------------------------------- */

typedef struct s_upctx {
    pb_reload_t *rl;
    size_t index;
    plug_t *plug;
} upctx_t;

static const plugboard_connector_t *
s_describe_up(void *ctx, const pb_connector_conf_t *conn, char *err,
              size_t err_len)
{
    upctx_t *u = ctx;
    size_t i = (size_t)(conn - (*u->rl->opt.cfg)->connectors);
    return pb_plugin_descriptor(i == u->index ? u->plug->p
                                              : u->rl->cur[i]->plug->p);
}

/*
 * Check the new build against the running config (its settings, and the
 * routes against what it consumes and emits) with pb_config_bind, without
 * disturbing the settings running instances use.  *out: the connector's
 * newly bound settings.
 */
static int
s_rebind(pb_reload_t *rl, size_t index, plug_t *plug,
         plugboard_settings_t **out, pb_diag_t *diag)
{
    pb_config_t *cfg = *rl->opt.cfg;
    size_t n = cfg->connector_count;
    plugboard_settings_t **saved = calloc(n ? n : 1, sizeof *saved);
    if (!saved) {
        pb_diag_add(diag, "out of memory");
        return PB_ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        saved[k] = cfg->connectors[k].bound;
        cfg->connectors[k].bound = NULL;
    }
    upctx_t u = {.rl = rl, .index = index, .plug = plug};
    int rc = pb_config_bind(cfg, s_describe_up, &u, diag);
    *out = cfg->connectors[index].bound;
    cfg->connectors[index].bound = NULL;
    for (size_t k = 0; k < n; k++) {
        pb_settings_destroy(&cfg->connectors[k].bound);
        cfg->connectors[k].bound = saved[k];
    }
    free(saved);
    if (rc != 0)
        pb_settings_destroy(out);
    return rc;
}

/* Start the new build beside the running instance, then swap. */
static json_t *
s_upgrade(pb_reload_t *rl, size_t j, plug_t *plug, pb_diag_t *diag)
{
    pb_config_t *cfg = *rl->opt.cfg;
    pb_connector_conf_t *conf = &cfg->connectors[j];
    char err[PLUGBOARD_ERRBUF_MAX + 128];
    plugboard_settings_t *settings = NULL;
    if (s_rebind(rl, j, plug, &settings, diag) != 0)
        return NULL;
    inst_t *in = s_inst_new(rl, conf, plug);
    if (!in) {
        pb_settings_destroy(&settings);
        pb_diag_add(diag, "out of memory");
        return NULL;
    }
    bool fresh = true;
    if (s_spawn(rl, in, cfg, conf, settings, err, sizeof err) != 0) {
        pb_diag_add(diag, "%s", err);
        goto out_discard;
    }
    rl->starting = &in;
    rl->starting_count = 1;
    size_t failed = s_wait_opens(rl, &in, &fresh, 1, cfg, diag);
    rl->starting = NULL;
    rl->starting_count = 0;
    if (failed)
        goto out_discard;
    inst_t **insts = calloc(rl->cur_count, sizeof *insts);
    if (!insts)
        abort();
    memcpy(insts, rl->cur, rl->cur_count * sizeof *insts);
    insts[j] = in;
    pb_router_swap_result_t res;
    int rc = s_swap_table(rl, cfg, insts, &res, err, sizeof err);
    if (rc != 0) {
        free(insts);
        pb_diag_add(diag, "%s", err);
        goto out_discard;
    }
    s_set_hooks(rl, cfg, insts);
    inst_t *old = rl->cur[j];
    json_t *out = json_pack(
        "{s:b, s:s, s:s, s:s, s:s, s:i}", "ok", 1, "connector", in->name,
        "plugin", pb_plugin_descriptor(plug->p)->name, "version", s_version(in),
        "previous", s_version(old), "generation", (int)in->gen);
    pb_info("reload",
            "connector=%s upgraded version=%s previous=%s "
            "instance=%s",
            in->name, s_version(in), s_version(old), in->rid);
    s_describe_metrics(rl, in);
    s_retire(rl, old, &conf->bound);
    conf->bound = settings;
    free(rl->cur);
    rl->cur = insts;
    s_set_view(rl, cfg, insts);
    return out;

out_discard:
    s_discard(rl, in, &settings);
    pb_settings_destroy(&settings);
    return NULL;
}

json_t *
pb_reload_upgrade(pb_reload_t *rl, const char *name, const char *plugin)
{
    if (rl->busy)
        return s_busy(rl);
    int j = s_current(rl, name);
    if (j < 0)
        return pb_control_error("no connector '%s' is running", name);
    rl->busy = true;
    rl->busy_since = pb_monotonic_ms();
    pb_config_t *cfg = *rl->opt.cfg;
    const char *what = plugin ? plugin : cfg->connectors[j].plugin;
    pb_info("reload", "upgrading connector=%s plugin=%s", name, what);
    pb_diag_t diag;
    pb_diag_init(&diag);
    const char *const *search;
    size_t count;
    char err[PLUGBOARD_ERRBUF_MAX + 128];
    s_search(rl, cfg, &search, &count);
    json_t *answer = NULL;
    pb_plugin_t *p =
        pb_plugin_load_kept(what, search, count, rl->copy_dir,
                            s_isolated(&cfg->connectors[j]), err, sizeof err);
    plug_t *plug = p ? s_plug_new(p) : NULL;
    const char *running = pb_plugin_descriptor(rl->cur[j]->plug->p)->name;
    if (!plug)
        pb_diag_add(&diag, "%s", p ? "out of memory" : err);
    else if (strcmp(pb_plugin_descriptor(plug->p)->name, running) != 0)
        /* another tool is a config change, with its own settings */
        pb_diag_add(&diag,
                    "'%s' is plugin '%s', not '%s': to bind the connector "
                    "to another plugin, change its plugin line and reload",
                    pb_plugin_path(plug->p),
                    pb_plugin_descriptor(plug->p)->name, running);
    else
        answer = s_upgrade(rl, (size_t)j, plug, &diag);
    s_plug_release(&plug, NULL); /* the new instance holds its own */
    if (!answer) {
        char what_failed[160];
        snprintf(what_failed, sizeof what_failed,
                 "connector '%s' not upgraded; the running instance keeps "
                 "serving",
                 name);
        answer = s_failure(what_failed, &diag);
    }
    pb_diag_release(&diag);
    rl->busy = false;
    return answer;
}

/* ---------------------------------------------------------------- */
/* retiring, watching                                                */
/* ---------------------------------------------------------------- */

static bool
s_done(pb_reload_t *rl, inst_t *in, int64_t now)
{
    if (in->opening) {
        if (pb_connector_wait_open(in->actor, 0, NULL, 0) == PB_ETIMEDOUT)
            return false;
        in->opening = false;
        return true;
    }
    if (pb_connector_retired(in->actor))
        return true;
    int64_t budget = (*rl->opt.cfg)->drain_timeout_ms;
    if (!in->warned && now - in->retired_mono > budget) {
        in->warned = true;
        pb_warn("reload",
                "instance=%s has not finished what it was sent after %lld "
                "ms; it keeps running, and its plugin loaded, until it does",
                in->rid, (long long)budget);
    }
    return false;
}

static bool
s_same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
           a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Upgrade one watched connector whose plugin file changed and then
 * stayed the same for a moment (so a copy in progress is not loaded). */
static void
s_watch(pb_reload_t *rl, int64_t now)
{
    const pb_config_t *cfg = *rl->opt.cfg;
    for (size_t i = 0; i < rl->cur_count; i++) {
        inst_t *in = rl->cur[i];
        struct stat st;
        if (!cfg->connectors[i].watch || !in->plug->have_st ||
            stat(pb_plugin_path(in->plug->p), &st) != 0 ||
            s_same_file(&st, &in->plug->st) ||
            (in->watch_failed_set && s_same_file(&st, &in->watch_failed)))
            continue;
        if (!in->watch_pending || !s_same_file(&st, &in->watch_st)) {
            in->watch_st = st;
            in->watch_since = now;
            in->watch_pending = true;
            continue;
        }
        if (now - in->watch_since < S_WATCH_SETTLE_MS)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s", pb_plugin_path(in->plug->p));
        pb_info("reload", "connector=%s plugin file %s changed; upgrading",
                in->name, path);
        json_t *a = pb_reload_upgrade(rl, in->name, path);
        if (!json_is_true(json_object_get(a, "ok"))) {
            in->watch_failed = st; /* not again until the file changes */
            in->watch_failed_set = true;
            in->watch_pending = false;
        }
        json_decref(a);
        return;
    }
}

void
pb_reload_tick(pb_reload_t *rl)
{
    int64_t now = pb_monotonic_ms();
    for (size_t i = 0; i < rl->retired_count;) {
        inst_t *in = rl->retired[i];
        if (!s_done(rl, in, now)) {
            i++;
            continue;
        }
        memmove(rl->retired + i, rl->retired + i + 1,
                (rl->retired_count - i - 1) * sizeof *rl->retired);
        rl->retired_count--;
        pb_connector_stop(&in->actor);
        pb_info("reload", "instance=%s stopped", in->rid);
        s_inst_free(in);
    }
    if (!rl->busy)
        s_watch(rl, now);
}

/* ---------------------------------------------------------------- */
/* status                                                            */
/* ---------------------------------------------------------------- */

static json_t *
s_inst_json(const inst_t *in, json_t *o, const char *state, int64_t now)
{
    const plugboard_connector_t *d = pb_plugin_descriptor(in->plug->p);
    if (!o)
        o = json_pack("{s:s}", "name", in->name);
    json_object_set_new(o, "plugin", json_string(d->name));
    json_object_set_new(o, "version", json_string(s_version(in)));
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "isolation", json_string(in->isolation));
    json_object_set_new(o, "generation", json_integer(in->gen));
    json_object_set_new(o, "instance",
                        json_string(in->gen ? in->rid : in->name));
    json_object_set_new(o, "started_at", json_integer(in->started_wall));
    json_object_set_new(o, "uptime_s",
                        json_integer((now - in->started_mono) / 1000));
    pb_connector_info_t info = {.state = state};
    if (strcmp(state, "starting") != 0 && !in->opening)
        pb_connector_info(in->actor, &info);
    if (strcmp(state, "running") == 0) /* a worker restarting or failed */
        json_object_set_new(o, "state", json_string(info.state));
    json_object_set_new(o, "restarts", json_integer(info.restarts));
    if (info.pid)
        json_object_set_new(o, "pid", json_integer(info.pid));
    if (info.failure[0])
        json_object_set_new(o, "failure", json_string(info.failure));
    if (info.auth.refused)
        json_object_set_new(o, "auth_failed",
                            json_pack("{s:s, s:I, s:I, s:I}", "reason",
                                      info.auth.reason, "since",
                                      (json_int_t)info.auth.since_ms, "last",
                                      (json_int_t)info.auth.last_ms, "refusals",
                                      (json_int_t)info.auth.refusals));
    return o;
}

void
pb_reload_status(pb_reload_t *rl, json_t *connectors)
{
    int64_t now = pb_monotonic_ms();
    for (size_t i = 0; i < rl->cur_count; i++) {
        json_t *o = json_array_get(connectors, i);
        if (!o)
            break;
        s_inst_json(rl->cur[i], o, "running", now);
        int draining = 0;
        for (size_t k = 0; k < rl->retired_count; k++)
            draining += strcmp(rl->retired[k]->name, rl->cur[i]->name) == 0;
        json_object_set_new(o, "draining", json_integer(draining));
    }
    for (size_t k = 0; k < rl->retired_count; k++) {
        inst_t *in = rl->retired[k];
        json_t *o = s_inst_json(in, NULL, "draining", now);
        json_object_set_new(o, "draining_s",
                            json_integer((now - in->retired_mono) / 1000));
        json_array_append_new(connectors, o);
    }
    for (size_t k = 0; k < s_abandoned_count; k++) {
        const abandoned_t *a = &s_abandoned[k];
        json_array_append_new(
            connectors,
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "name",
                      a->name, "instance", a->instance, "plugin", a->plugin,
                      "version", a->version, "state", "leaked", "isolation",
                      a->isolation, "since", (json_int_t)a->since_wall,
                      "failure", a->why));
    }
    for (size_t k = 0; k < rl->starting_count; k++) {
        inst_t *in = rl->starting[k];
        if (in && in->actor && s_current(rl, in->name) >= 0 &&
            rl->cur[s_current(rl, in->name)] == in)
            continue;
        if (in && in->actor)
            json_array_append_new(connectors,
                                  s_inst_json(in, NULL, "starting", now));
    }
}

/* ---------------------------------------------------------------- */
/* life cycle                                                        */
/* ---------------------------------------------------------------- */

pb_reload_t *
pb_reload_new(const pb_reload_options_t *opt)
{
    pb_reload_t *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->opt = *opt;
    if (rl->opt.open_timeout_ms <= 0)
        rl->opt.open_timeout_ms = S_OPEN_TIMEOUT_MS;
    snprintf(rl->copy_dir, sizeof rl->copy_dir, "%s",
             opt->copy_dir ? opt->copy_dir : "");
    snprintf(rl->default_dir, sizeof rl->default_dir, "%s",
             opt->default_plugin_dir ? opt->default_plugin_dir : "");
    rl->opt.copy_dir = rl->copy_dir;
    rl->opt.default_plugin_dir = rl->default_dir;
    pthread_mutex_init(&rl->hook_lock, NULL);
    const pb_config_t *cfg = *opt->cfg;
    size_t n = cfg->connector_count;
    rl->cur = calloc(n ? n : 1, sizeof *rl->cur);
    if (!rl->cur)
        goto out_free;
    for (size_t i = 0; i < n; i++) {
        inst_t *in = calloc(1, sizeof *in);
        plug_t *pl = in ? calloc(1, sizeof *pl) : NULL;
        if (!pl) {
            free(in);
            goto out_free;
        }
        pl->p = (*opt->plugins)[i];
        pl->refs = 1;
        pl->have_st = stat(pb_plugin_path(pl->p), &pl->st) == 0;
        snprintf(in->name, sizeof in->name, "%s", cfg->connectors[i].name);
        snprintf(in->rid, sizeof in->rid, "%s", cfg->connectors[i].name);
        snprintf(in->isolation, sizeof in->isolation, "%s",
                 cfg->connectors[i].isolation ? cfg->connectors[i].isolation
                                              : "thread");
        in->actor = (*opt->connectors)[i];
        in->plug = pl;
        in->started_wall = pb_now_ms();
        in->started_mono = pb_monotonic_ms();
        rl->cur[rl->cur_count++] = in;
    }
    s_set_hooks(rl, cfg, rl->cur);
    return rl;

out_free:
    /* the runtime still owns its connectors and plugins */
    for (size_t i = 0; i < rl->cur_count; i++) {
        free(rl->cur[i]->plug);
        free(rl->cur[i]);
    }
    free(rl->cur);
    pthread_mutex_destroy(&rl->hook_lock);
    free(rl);
    return NULL;
}

int
pb_reload_submit_webhook(pb_reload_t *rl, pb_webhook_t *w)
{
    const char *name = pb_webhook_connector(w);
    pthread_mutex_lock(&rl->hook_lock);
    int rc = rl->stopping ? PB_ESTOPPING : PB_ENOENT;
    for (size_t i = 0; i < rl->hook_count; i++) {
        if (strcmp(rl->hooks[i].name, name) == 0) {
            rc = pb_connector_submit_webhook(rl->hooks[i].actor, w);
            break;
        }
    }
    pthread_mutex_unlock(&rl->hook_lock);
    return rc;
}

bool
pb_reload_busy(const pb_reload_t *rl)
{
    return rl->busy;
}

void
pb_reload_shutdown(pb_reload_t *rl)
{
    if (!rl)
        return;
    pthread_mutex_lock(&rl->hook_lock);
    rl->stopping = true;
    rl->hook_count = 0;
    pthread_mutex_unlock(&rl->hook_lock);
    for (size_t i = 0; i < rl->retired_count; i++) {
        inst_t *in = rl->retired[i];
        if (in->opening)
            pb_connector_wait_open(in->actor, -1, NULL, 0);
        pb_connector_stop(&in->actor);
        s_inst_free(in);
    }
    rl->retired_count = 0;
    for (size_t i = 0; i < rl->cur_count; i++) {
        pb_connector_stop(&rl->cur[i]->actor);
        (*rl->opt.connectors)[i] = NULL;
    }
    for (size_t i = 0; i < rl->cur_count; i++) {
        (*rl->opt.plugins)[i] = NULL;
        s_inst_free(rl->cur[i]);
    }
    rl->cur_count = 0;
}

void
pb_reload_destroy(pb_reload_t **rlp)
{
    if (!rlp || !*rlp)
        return;
    pb_reload_t *rl = *rlp;
    *rlp = NULL;
    pb_reload_shutdown(rl);
    for (size_t i = 0; i < s_abandoned_count; i++)
        pb_plugin_abandon(&s_abandoned[i].p);
    free(s_abandoned);
    s_abandoned = NULL;
    s_abandoned_count = 0;
    free(rl->cur);
    free(rl->retired);
    free(rl->hooks);
    pthread_mutex_destroy(&rl->hook_lock);
    free(rl);
}

/* ---------------------------------------------------------------- */
/* plugboard ctl reload | upgrade                                    */
/* ---------------------------------------------------------------- */

#include <getopt.h>
#include <limits.h>

#define S_CLI_TIMEOUT_MS 90000 /* plugins may take a while to open */

static const char s_reload_usage[] =
    "usage: plugboard ctl reload [-c FILE] [--json]\n"
    "       plugboard ctl upgrade CONNECTOR [--plugin PATH] [-c FILE] "
    "[--json]\n"
    "\n"
    "reload: the running host re-reads FILE (the file it was started with),\n"
    "validates it completely, opens new and changed connectors beside the\n"
    "running ones and only then switches to it; unchanged connectors keep\n"
    "running untouched.  On any error the old configuration stays and the\n"
    "command exits 1 with the reason.  SIGHUP does the same.\n"
    "\n"
    "upgrade: load a new build of CONNECTOR's plugin (PATH, else the\n"
    "plugin its config names) from a private copy, start it beside the\n"
    "running instance, move new deliveries to it and retire the old one\n"
    "once it has finished what it holds.  Prints the version now serving.\n"
    "PATH must be a build of the same plugin; to bind CONNECTOR to another\n"
    "plugin, change its plugin line and reload.\n";

static void
s_cli_list(json_t *resp, const char *key, const char *label, bool *first)
{
    json_t *list = json_object_get(resp, key);
    if (json_array_size(list) == 0)
        return;
    printf("%s%s", *first ? "" : "; ", label);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
        printf("%s%s", i ? ", " : " ", json_string_value(v));
    *first = false;
}

static void
s_cli_print(const char *sub, json_t *resp)
{
    if (strcmp(sub, "upgrade") == 0) {
        printf(
            "connector '%s' now runs %s %s (was %s), instance %s#%lld\n",
            json_string_value(json_object_get(resp, "connector")),
            json_string_value(json_object_get(resp, "plugin")),
            json_string_value(json_object_get(resp, "version")),
            json_string_value(json_object_get(resp, "previous")),
            json_string_value(json_object_get(resp, "connector")),
            (long long)json_integer_value(json_object_get(resp, "generation")));
        return;
    }
    bool first = true;
    printf("config reloaded: ");
    s_cli_list(resp, "added", "added", &first);
    s_cli_list(resp, "changed", "changed", &first);
    s_cli_list(resp, "removed", "removed", &first);
    s_cli_list(resp, "unchanged", "unchanged", &first);
    printf("%s\n", first ? "nothing changed" : "");
    json_int_t dead =
        json_integer_value(json_object_get(resp, "dead_lettered"));
    if (dead)
        printf("%lld pending deliver%s of removed routes became dead letters "
               "(plugboard dlq list)\n",
               (long long)dead, dead == 1 ? "y" : "ies");
    json_t *restart = json_object_get(resp, "restart_needed");
    if (json_array_size(restart) > 0) {
        printf("not applied, restart the host for them:");
        size_t i;
        json_t *v;
        json_array_foreach(restart, i, v)
            printf("%s %s", i ? "," : "", json_string_value(v));
        printf("\n");
    }
}

int
pb_reload_cli(int argc, char **argv)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"plugin", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *sub = argv[0], *plugin = NULL;
    const char *config = getenv("PLUGBOARD_CONFIG");
    bool json = false;
    if (!config || !*config)
        config = "etc/plugboard.cfg";
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:p:jh", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config = optarg;
            break;
        case 'p':
            plugin = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(s_reload_usage, stdout);
            return 0;
        default:
            fputs(s_reload_usage, stderr);
            return 2;
        }
    }
    bool upgrade = strcmp(sub, "upgrade") == 0;
    if (optind + (upgrade ? 1 : 0) != argc || (!upgrade && plugin)) {
        fputs(s_reload_usage, stderr);
        return 2;
    }
    char run_dir[4096], sock[4200], err[1024] = "";
    if (pb_config_run_dir(config, run_dir, sizeof run_dir) != 0) {
        /* not even its syntax: say why here, the host is not asked */
        pb_diag_t diag;
        pb_diag_init(&diag);
        pb_config_t *cfg = pb_config_load(config, &diag);
        pb_config_destroy(&cfg);
        fprintf(stderr, "error: config not reloaded; the running "
                        "configuration is unchanged:\n");
        for (size_t i = 0; i < diag.count; i++)
            fprintf(stderr, "  %s\n", diag.messages[i]);
        pb_diag_release(&diag);
        return 1;
    }
    /* a path means the file the operator names, whatever the host's
     * directory: a relative one that is not here goes no further */
    char abs[PATH_MAX];
    size_t plen = plugin ? strlen(plugin) : 0;
    if (plugin && (strchr(plugin, '/') ||
                   (plen > 3 && strcmp(plugin + plen - 3, ".so") == 0))) {
        if (!realpath(plugin, abs)) {
            fprintf(stderr,
                    "error: connector '%s' not upgraded; the running "
                    "instance keeps serving:\n  cannot read '%s': %s\n",
                    argv[optind], plugin, strerror(errno));
            return 1;
        }
        plugin = abs;
    }
    pb_control_path(run_dir, sock, sizeof sock);
    json_t *req = json_pack("{s:s}", "cmd", sub);
    if (upgrade) {
        json_object_set_new(req, "name", json_string(argv[optind]));
        if (plugin)
            json_object_set_new(req, "plugin", json_string(plugin));
    }
    json_t *resp =
        pb_control_request(sock, req, S_CLI_TIMEOUT_MS, err, sizeof err);
    json_decref(req);
    if (!resp && upgrade) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (!resp) {
        /* the socket is found through the file as it is now: one whose
         * run directory moved cannot lead to the host that runs */
        fprintf(stderr,
                "error: config not reloaded: %s\n"
                "  the control socket is looked for in the run directory "
                "'%s' names now ('%s'); if its plugboard.data_dir or "
                "plugboard.run_dir changed, the running host keeps the old "
                "one: restart the host for that change\n",
                err, config, run_dir);
        return 1;
    }
    int rc = json_is_true(json_object_get(resp, "ok")) ? 0 : 1;
    if (json) {
        char *text =
            json_dumps(resp, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        printf("%s\n", text ? text : "{}");
        free(text);
    } else if (rc != 0) {
        fprintf(stderr, "error: %s\n",
                json_string_value(json_object_get(resp, "error")));
    } else {
        s_cli_print(sub, resp);
    }
    json_decref(resp);
    return rc;
}

void
pb_reload_print_status(json_t *resp, FILE *out)
{
    json_t *conns = json_object_get(resp, "connectors");
    if (json_array_size(conns) == 0 ||
        !json_object_get(json_array_get(conns, 0), "generation"))
        return;
    fprintf(out, "\n%-16s %-16s %-10s %-9s %-9s %8s %8s\n", "CONNECTOR",
            "INSTANCE", "VERSION", "ISOLATION", "STATE", "UPTIME", "RESTARTS");
    size_t i;
    json_t *c;
    json_array_foreach(conns, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "state"));
        const char *why = json_string_value(json_object_get(c, "failure"));
        fprintf(out, "%-16s %-16s %-10s %-9s %-9s %7llds %8lld%s%s\n",
                json_string_value(json_object_get(c, "name")),
                json_string_value(json_object_get(c, "instance")),
                json_string_value(json_object_get(c, "version")),
                json_string_value(json_object_get(c, "isolation")),
                st ? st : "",
                (long long)json_integer_value(json_object_get(c, "uptime_s")),
                (long long)json_integer_value(json_object_get(c, "restarts")),
                why ? "  " : "", why ? why : "");
    }
}
