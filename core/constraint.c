/*
 * constraint.c - per-connector flows over a window, the status numbers
 * built from them, and the choice of the one constraint.
 */
#include "constraint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One connector's numbers over the window. */
typedef struct s_flow {
    const char *name;
    bool up;
    int workers;
    /* in the window */
    double arrivals, completions, attempts, retries, throttled, timeouts;
    double rejected, dead, delivered, webhooks, busy_s, util;
    int64_t backlog_old, backlog_now, inflight, oldest_ms;
    /* since start */
    uint64_t t_received, t_delivered, t_retried, t_rejected, t_dead;
    uint64_t t_deliveries, t_webhooks, t_emitted;
    double t_busy_s;
    /* verdict */
    const char *cause;
    double score;
} flow_t;

static const pb_mhop_snap_t s_zero_hop;
static const pb_mconn_snap_t s_zero_conn;

static uint64_t
s_retried(const pb_mhop_snap_t *h)
{
    uint64_t n = 0;
    for (int k = 0; k < PB_RETRY_REASON_COUNT; k++)
        n += h->retried[k];
    return n;
}

/* The same hop in old (index i first, then by name), or zeros. */
static const pb_mhop_snap_t *
s_old_hop(const pb_metrics_snap_t *old, size_t i, const pb_mhop_snap_t *h)
{
    if (i < old->hop_count && strcmp(old->hops[i].route, h->route) == 0 &&
        strcmp(old->hops[i].connector, h->connector) == 0)
        return &old->hops[i];
    for (size_t k = 0; k < old->hop_count; k++)
        if (strcmp(old->hops[k].route, h->route) == 0 &&
            strcmp(old->hops[k].connector, h->connector) == 0)
            return &old->hops[k];
    return &s_zero_hop;
}

static const pb_mconn_snap_t *
s_old_conn(const pb_metrics_snap_t *old, size_t i, const pb_mconn_snap_t *c)
{
    if (i < old->conn_count && strcmp(old->conns[i].name, c->name) == 0)
        return &old->conns[i];
    for (size_t k = 0; k < old->conn_count; k++)
        if (strcmp(old->conns[k].name, c->name) == 0)
            return &old->conns[k];
    return &s_zero_conn;
}

/* Counter difference, never negative (a counter cannot go back). */
static double
s_delta(uint64_t now, uint64_t old)
{
    return now > old ? (double)(now - old) : 0.0;
}

static double
s_window_s(const pb_metrics_snap_t *old, const pb_metrics_snap_t *now)
{
    double dt = (double)(now->t_ms - old->t_ms) / 1000.0;
    return dt > 0 ? dt : 0;
}

static void
s_add_hop(flow_t *f, const pb_mhop_snap_t *h, const pb_mhop_snap_t *o)
{
    f->arrivals += s_delta(h->received, o->received);
    f->delivered += s_delta(h->delivered, o->delivered);
    f->dead += s_delta(h->dead, o->dead);
    f->completions += s_delta(h->delivered + h->dead, o->delivered + o->dead);
    f->attempts += s_delta(h->attempts, o->attempts);
    f->retries += s_delta(s_retried(h), s_retried(o));
    f->throttled +=
        s_delta(h->retried[PB_RETRY_THROTTLED], o->retried[PB_RETRY_THROTTLED]);
    f->timeouts +=
        s_delta(h->retried[PB_RETRY_TIMEOUT], o->retried[PB_RETRY_TIMEOUT]);
    f->rejected += s_delta(h->rejected, o->rejected);
    f->backlog_old += o->pending;
    f->backlog_now += h->pending;
    f->inflight += h->inflight;
    if (h->oldest_ms > f->oldest_ms)
        f->oldest_ms = h->oldest_ms;
    f->t_received += h->received;
    f->t_delivered += h->delivered;
    f->t_retried += s_retried(h);
    f->t_rejected += h->rejected;
    f->t_dead += h->dead;
}

/* One flow per connector of now, in registry order.  Caller frees. */
static flow_t *
s_flows(const pb_metrics_snap_t *old, const pb_metrics_snap_t *now, double dt)
{
    flow_t *flows =
        calloc(now->conn_count ? now->conn_count : 1, sizeof *flows);
    if (!flows)
        return NULL;
    for (size_t i = 0; i < now->conn_count; i++) {
        const pb_mconn_snap_t *c = &now->conns[i];
        const pb_mconn_snap_t *o = s_old_conn(old, i, c);
        flow_t *f = &flows[i];
        f->name = c->name;
        f->up = c->up;
        f->workers = c->workers > 0 ? c->workers : 1;
        f->busy_s = s_delta(c->busy_ns, o->busy_ns) / 1e9;
        f->webhooks = s_delta(c->webhooks, o->webhooks);
        f->util = dt > 0 ? f->busy_s / (dt * f->workers) : 0;
        if (f->util > 1)
            f->util = 1; /* a callback that started before the window */
        f->t_deliveries = c->deliveries;
        f->t_webhooks = c->webhooks;
        f->t_emitted = c->emitted;
        f->t_busy_s = (double)c->busy_ns / 1e9;
        for (size_t k = 0; k < now->hop_count; k++) {
            const pb_mhop_snap_t *h = &now->hops[k];
            if (strcmp(h->connector, c->name) == 0)
                s_add_hop(f, h, s_old_hop(old, k, h));
        }
    }
    return flows;
}

static double
s_round(double v, double unit)
{
    return round(v / unit) * unit;
}

/* ------------------------------------------------------------------ */
/* status numbers                                                      */
/* ------------------------------------------------------------------ */

static json_t *
s_conn_json(const flow_t *f, double dt, const pb_config_t *cfg)
{
    const pb_connector_conf_t *cc =
        cfg ? pb_config_connector(cfg, f->name) : NULL;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(f->name));
    if (cc)
        json_object_set_new(o, "plugin", json_string(cc->plugin));
    json_object_set_new(o, "up", json_boolean(f->up));
    json_object_set_new(o, "workers", json_integer(f->workers));
    json_object_set_new(o, "received",
                        json_integer((json_int_t)f->t_deliveries));
    json_object_set_new(o, "webhooks", json_integer((json_int_t)f->t_webhooks));
    json_object_set_new(o, "emitted", json_integer((json_int_t)f->t_emitted));
    json_object_set_new(o, "busy_s", json_real(s_round(f->t_busy_s, 0.001)));
    json_object_set_new(o, "utilisation", json_real(s_round(f->util, 0.001)));
    json_object_set_new(o, "delivered",
                        json_integer((json_int_t)f->t_delivered));
    json_object_set_new(o, "retried", json_integer((json_int_t)f->t_retried));
    json_object_set_new(o, "rejected", json_integer((json_int_t)f->t_rejected));
    json_object_set_new(o, "dead", json_integer((json_int_t)f->t_dead));
    json_object_set_new(o, "pending", json_integer(f->backlog_now));
    json_object_set_new(o, "inflight", json_integer(f->inflight));
    json_object_set_new(o, "oldest_pending_s",
                        json_real(s_round((double)f->oldest_ms / 1000, 0.1)));
    json_object_set_new(
        o, "in_rate", json_real(dt > 0 ? s_round(f->arrivals / dt, 0.01) : 0));
    json_object_set_new(
        o, "out_rate",
        json_real(dt > 0 ? s_round(f->completions / dt, 0.01) : 0));
    return o;
}

static json_t *
s_hop_json(const pb_mhop_snap_t *h, const pb_mhop_snap_t *o, double dt)
{
    double in = s_delta(h->received, o->received);
    double out = s_delta(h->delivered + h->dead, o->delivered + o->dead);
    return json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f}",
        "connector", h->connector, "received", (json_int_t)h->received,
        "delivered", (json_int_t)h->delivered, "retried",
        (json_int_t)s_retried(h), "rejected", (json_int_t)h->rejected, "dead",
        (json_int_t)h->dead, "pending", (json_int_t)h->pending, "inflight",
        (json_int_t)h->inflight, "oldest_pending_s",
        s_round((double)h->oldest_ms / 1000, 0.1), "in_rate",
        dt > 0 ? s_round(in / dt, 0.01) : 0.0, "out_rate",
        dt > 0 ? s_round(out / dt, 0.01) : 0.0, "p50_ms",
        s_round(h->p50_ms, 0.01), "p99_ms", s_round(h->p99_ms, 0.01));
}

static json_t *
s_strings_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *
s_route_json(const pb_route_conf_t *rc, const pb_metrics_snap_t *old,
             const pb_metrics_snap_t *now, double dt)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:o, s:s, s:s}", "name", rc->name, "from", rc->from, "when",
        s_strings_json(rc->when, rc->when_count), "why", rc->why ? rc->why : "",
        "owner", rc->owner ? rc->owner : "");
    if (!o)
        return NULL;
    if (rc->on_failure)
        json_object_set_new(o, "on_failure", json_string(rc->on_failure));
    if (rc->notify)
        json_object_set_new(o, "notify", json_string(rc->notify));
    json_t *hops = json_array();
    for (size_t k = 0; k < now->hop_count; k++) {
        const pb_mhop_snap_t *h = &now->hops[k];
        if (strcmp(h->route, rc->name) == 0)
            json_array_append_new(hops,
                                  s_hop_json(h, s_old_hop(old, k, h), dt));
    }
    json_object_set_new(o, "hops", hops);
    return o;
}

json_t *
pb_flow_json(const pb_metrics_snap_t *old, const pb_metrics_snap_t *now,
             const pb_config_t *cfg)
{
    double dt = s_window_s(old, now);
    flow_t *flows = s_flows(old, now, dt);
    if (!flows)
        return NULL;
    json_t *conns = json_array();
    for (size_t i = 0; i < now->conn_count; i++)
        json_array_append_new(conns, s_conn_json(&flows[i], dt, cfg));
    free(flows);
    json_t *routes = json_array();
    for (size_t i = 0; cfg && i < cfg->route_count; i++)
        json_array_append_new(routes,
                              s_route_json(&cfg->routes[i], old, now, dt));
    return json_pack("{s:f, s:o, s:o}", "window_s", s_round(dt, 0.1),
                     "connectors", conns, "routes", routes);
}

/* ------------------------------------------------------------------ */
/* the constraint                                                      */
/* ------------------------------------------------------------------ */

/* Give f its cause and score; no cause when it keeps up. */
static void
s_judge(flow_t *f)
{
    f->cause = NULL;
    f->score = 0;
    /* not running while events are meant for it: waiting in the backlog,
     * or (a failed worker) turning into dead letters */
    if (!f->up && (f->backlog_now > 0 || f->arrivals > 0 || f->dead > 0)) {
        f->cause = "down";
        f->score = 2;
        return;
    }
    double growth = (double)(f->backlog_now - f->backlog_old);
    double retry_share = f->attempts > 0 ? f->retries / f->attempts : 0;
    if (f->attempts >= PB_CONSTRAINT_MIN_ATTEMPTS &&
        retry_share >= PB_CONSTRAINT_RETRY_SHARE) {
        f->cause = f->throttled * 2 >= f->retries ? "throttled" : "failing";
        f->score = retry_share;
    }
    if (f->util >= PB_CONSTRAINT_UTIL && f->util > f->score) {
        f->cause = "saturated";
        f->score = f->util;
    }
    double min_growth = f->arrivals * 0.1;
    if (min_growth < PB_CONSTRAINT_MIN_GROWTH)
        min_growth = PB_CONSTRAINT_MIN_GROWTH;
    if (growth >= min_growth) {
        double share = growth / (f->arrivals > 1 ? f->arrivals : 1);
        if (share > 1)
            share = 1;
        if (!f->cause) {
            f->cause = "backlog";
            f->score = share;
        }
    }
}

/* The route that matters most on f: the largest backlog towards it, then
 * the most arrivals; for a pure source, its busiest outgoing route. */
static const char *
s_pick_route(const flow_t *f, const pb_metrics_snap_t *old,
             const pb_metrics_snap_t *now, const pb_config_t *cfg)
{
    const char *best = NULL;
    int64_t best_pending = -1;
    double best_in = -1;
    for (size_t k = 0; k < now->hop_count; k++) {
        const pb_mhop_snap_t *h = &now->hops[k];
        if (strcmp(h->connector, f->name) != 0)
            continue;
        double in = s_delta(h->received, s_old_hop(old, k, h)->received);
        if (h->pending > best_pending ||
            (h->pending == best_pending && in > best_in)) {
            best = h->route;
            best_pending = h->pending;
            best_in = in;
        }
    }
    if (best)
        return best;
    for (size_t k = 0; k < now->hop_count; k++) {
        const pb_mhop_snap_t *h = &now->hops[k];
        const pb_route_conf_t *rc = NULL;
        for (size_t i = 0; cfg && i < cfg->route_count && !rc; i++)
            if (strcmp(cfg->routes[i].name, h->route) == 0)
                rc = &cfg->routes[i];
        if (!rc || strcmp(rc->from, f->name) != 0)
            continue;
        double in = s_delta(h->received, s_old_hop(old, k, h)->received);
        if (in > best_in) {
            best = h->route;
            best_in = in;
        }
    }
    return best;
}

static const pb_route_conf_t *
s_route_conf(const pb_config_t *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->route_count; i++)
        if (strcmp(cfg->routes[i].name, name) == 0)
            return &cfg->routes[i];
    return NULL;
}

static void
s_suggest(const flow_t *f, double dt, char *out, size_t len)
{
    double share = f->attempts > 0 ? 100.0 * f->retries / f->attempts : 0;
    if (strcmp(f->cause, "down") == 0)
        snprintf(out, len,
                 "connector '%s' is not running: %lld deliveries wait for "
                 "it and %.0f became dead letters in the window; "
                 "`plugboard ctl status` says why, fix it and reload",
                 f->name, (long long)f->backlog_now, f->dead);
    else if (strcmp(f->cause, "throttled") == 0)
        snprintf(out, len,
                 "connector '%s' is rate-limited by its vendor (%.0f%% of "
                 "attempts answered retry-after): ask the vendor for a "
                 "higher limit, or send it less",
                 f->name, share);
    else if (strcmp(f->cause, "failing") == 0)
        snprintf(out, len,
                 "connector '%s' is failing (%.0f%% of attempts retried): "
                 "check its errors with `plugboard dlq list --connector %s` "
                 "and the vendor's status",
                 f->name, share, f->name);
    else if (strcmp(f->cause, "saturated") == 0)
        snprintf(out, len,
                 "connector '%s' is busy %.0f%% of the time with %d "
                 "worker%s: raise its concurrency or make its calls faster",
                 f->name, 100 * f->util, f->workers,
                 f->workers == 1 ? "" : "s");
    else
        snprintf(out, len,
                 "connector '%s' completes %.1f/s while %.1f/s arrive and "
                 "its backlog grows by %.1f/s: check the vendor's response "
                 "time and deliver_timeout",
                 f->name, dt > 0 ? f->completions / dt : 0,
                 dt > 0 ? f->arrivals / dt : 0,
                 dt > 0 ? (double)(f->backlog_now - f->backlog_old) / dt : 0);
}

static json_t *
s_evidence(const flow_t *f, double dt)
{
    double per = dt > 0 ? 1 / dt : 0;
    return json_pack(
        "{s:f, s:f, s:f, s:f, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:I, "
        "s:f, s:f}",
        "window_s", s_round(dt, 0.1), "arrival_rate",
        s_round(f->arrivals * per, 0.01), "completion_rate",
        s_round(f->completions * per, 0.01), "utilisation",
        s_round(f->util, 0.001), "workers", f->workers, "backlog_start",
        (json_int_t)f->backlog_old, "backlog_end", (json_int_t)f->backlog_now,
        "backlog_trend",
        s_round((double)(f->backlog_now - f->backlog_old) * per, 0.01),
        "retry_share",
        s_round(f->attempts > 0 ? f->retries / f->attempts : 0, 0.001),
        "throttled_share",
        s_round(f->attempts > 0 ? f->throttled / f->attempts : 0, 0.001),
        "timeout_share",
        s_round(f->attempts > 0 ? f->timeouts / f->attempts : 0, 0.001),
        "attempt_rate", s_round(f->attempts * per, 0.01), "inflight",
        (json_int_t)f->inflight, "oldest_pending_s",
        s_round((double)f->oldest_ms / 1000, 0.1), "dead", (double)f->dead);
}

static void
s_set_text(json_t *o, const char *key, const char *v)
{
    if (v)
        json_object_set_new(o, key, json_string(v));
}

/* Every route that delivers to, or starts at, connector name. */
static json_t *
s_routes_through(const char *name, const pb_metrics_snap_t *now,
                 const pb_config_t *cfg)
{
    json_t *a = json_array();
    for (size_t i = 0; cfg && i < cfg->route_count; i++) {
        const pb_route_conf_t *rc = &cfg->routes[i];
        int64_t pending = 0;
        bool through = strcmp(rc->from, name) == 0;
        for (size_t k = 0; k < now->hop_count; k++)
            if (strcmp(now->hops[k].route, rc->name) == 0 &&
                strcmp(now->hops[k].connector, name) == 0) {
                through = true;
                pending += now->hops[k].pending;
            }
        if (!through)
            continue;
        json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "route", rc->name, "why",
                              rc->why ? rc->why : "", "owner",
                              rc->owner ? rc->owner : "", "pending",
                              (json_int_t)pending);
        s_set_text(o, "on_failure", rc->on_failure);
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *
s_constraint(const flow_t *f, double dt, const pb_metrics_snap_t *old,
             const pb_metrics_snap_t *now, const pb_config_t *cfg)
{
    const char *route = s_pick_route(f, old, now, cfg);
    const pb_route_conf_t *rc = s_route_conf(cfg, route);
    char hop[300], suggestion[512];
    if (route)
        snprintf(hop, sizeof hop, "%s -> %s", route, f->name);
    else
        snprintf(hop, sizeof hop, "%s", f->name);
    s_suggest(f, dt, suggestion, sizeof suggestion);
    json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:o, s:s, s:o}", "connector",
                          f->name, "hop", hop, "cause", f->cause, "score",
                          s_round(f->score, 0.001), "evidence",
                          s_evidence(f, dt), "suggestion", suggestion, "routes",
                          s_routes_through(f->name, now, cfg));
    const pb_connector_conf_t *cc =
        cfg ? pb_config_connector(cfg, f->name) : NULL;
    if (cc)
        s_set_text(o, "plugin", cc->plugin);
    s_set_text(o, "route", route);
    if (rc) {
        s_set_text(o, "why", rc->why);
        s_set_text(o, "owner", rc->owner);
        s_set_text(o, "on_failure", rc->on_failure);
        s_set_text(o, "notify", rc->notify);
    }
    return o;
}

static int
s_by_score(const void *a, const void *b)
{
    const flow_t *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    if (x->util != y->util)
        return x->util < y->util ? 1 : -1;
    return strcmp(x->name, y->name);
}

json_t *
pb_constraint_json(const pb_metrics_snap_t *old, const pb_metrics_snap_t *now,
                   const pb_config_t *cfg)
{
    double dt = s_window_s(old, now);
    if (dt * 1000 < PB_CONSTRAINT_MIN_WINDOW_MS) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "not enough data yet: %.1f s measured, at least %.1f s "
                 "needed; ask again in a few seconds",
                 dt, PB_CONSTRAINT_MIN_WINDOW_MS / 1000.0);
        return json_pack("{s:f, s:b, s:b, s:s}", "window_s", s_round(dt, 0.1),
                         "constrained", 0, "measuring", 1, "message", msg);
    }
    flow_t *flows = s_flows(old, now, dt);
    if (!flows)
        return NULL;
    for (size_t i = 0; i < now->conn_count; i++)
        s_judge(&flows[i]);
    qsort(flows, now->conn_count, sizeof *flows, s_by_score);
    json_t *list = json_array();
    for (size_t i = 0; i < now->conn_count; i++) {
        const flow_t *f = &flows[i];
        double per = 1 / dt;
        json_t *o = json_pack(
            "{s:s, s:f, s:f, s:f, s:f, s:f, s:f}", "connector", f->name,
            "score", s_round(f->score, 0.001), "utilisation",
            s_round(f->util, 0.001), "arrival_rate",
            s_round(f->arrivals * per, 0.01), "completion_rate",
            s_round(f->completions * per, 0.01), "backlog_trend",
            s_round((double)(f->backlog_now - f->backlog_old) * per, 0.01),
            "retry_share",
            s_round(f->attempts > 0 ? f->retries / f->attempts : 0, 0.001));
        s_set_text(o, "cause", f->cause);
        json_array_append_new(list, o);
    }
    json_t *out = json_pack("{s:f, s:o}", "window_s", s_round(dt, 0.1),
                            "connectors", list);
    char msg[600];
    if (now->conn_count && flows[0].cause) {
        json_t *c = s_constraint(&flows[0], dt, old, now, cfg);
        snprintf(msg, sizeof msg, "'%s' limits throughput (%s): %s",
                 json_string_value(json_object_get(c, "hop")), flows[0].cause,
                 json_string_value(json_object_get(c, "suggestion")));
        json_object_set_new(out, "constrained", json_true());
        json_object_set_new(out, "constraint", c);
    } else {
        const flow_t *busiest = NULL;
        for (size_t i = 0; i < now->conn_count; i++)
            if (!busiest || flows[i].util > busiest->util)
                busiest = &flows[i];
        if (busiest)
            snprintf(msg, sizeof msg,
                     "nothing is constrained: every connector keeps up "
                     "(busiest '%s' at %.0f%% utilisation)",
                     busiest->name, 100 * busiest->util);
        else
            snprintf(msg, sizeof msg, "nothing is constrained");
        json_object_set_new(out, "constrained", json_false());
    }
    json_object_set_new(out, "message", json_string(msg));
    free(flows);
    return out;
}
