/*
 * test_metrics.c - the metrics registry, its Prometheus text, the
 * snapshot window, the constraint finder and the integration map.
 *
 * The exposition text is checked the way a scraper reads it: every
 * family's # TYPE appears once and before its samples, every histogram
 * series has +Inf equal to its _count and non-decreasing buckets, and
 * label values are escaped and valid UTF-8.  When promtool is installed
 * the same text also goes through `promtool check metrics`.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "constraint.h"
#include "error.h"
#include "harness.h"
#include "map.h"
#include "metrics.h"
#include "promtext.h"

static const pb_metrics_host_t s_host = {
    .version = "9.9.9",
    .ready = true,
    .start_time_ms = 1700000000000,
    .accepted = 7,
    .bad_frames = 1,
    .http_bad_request = 2,
    .http_too_large = 3,
};

/* ------------------------------------------------------------------ */
/* Histograms                                                          */
/* ------------------------------------------------------------------ */

Test(metrics, histogram_buckets_count_and_quantiles)
{
    pb_histo_t h;
    pb_histo_init(&h, &pb_histo_latency);
    pb_histo_observe(&h, 400);           /* 0.4 ms: first bucket */
    pb_histo_observe(&h, 500);           /* on the bound: same bucket */
    pb_histo_observe(&h, 20000);         /* 20 ms */
    pb_histo_observe(&h, 7200000000ull); /* 2 h: only +Inf */
    cr_assert_eq(pb_histo_count(&h), 4);
    cr_assert_eq(h.counts[0], 2);
    cr_assert_eq(h.counts[pb_histo_latency.count], 1);
    double p50 = pb_histo_quantile(&h, 0.5);
    cr_assert(p50 > 0 && p50 <= 0.0005, "p50 %g", p50);
    double p75 = pb_histo_quantile(&h, 0.75);
    cr_assert(p75 > 0.01 && p75 <= 0.025, "p75 %g", p75);
    pb_histo_t empty;
    pb_histo_init(&empty, &pb_histo_batch);
    cr_assert_eq(pb_histo_quantile(&empty, 0.5), 0);
}

/* ------------------------------------------------------------------ */
/* Escaping                                                            */
/* ------------------------------------------------------------------ */

Test(metrics, label_values_are_escaped)
{
    char buf[128];
    pb_metrics_escape_label("a\"b\\c\nd", buf, sizeof buf);
    cr_assert_str_eq(buf, "a\\\"b\\\\c\\nd");
    pb_metrics_escape_label("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6", buf,
                            sizeof buf);
    cr_assert_str_eq(buf, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6");
}

Test(metrics, label_values_are_made_valid_utf8)
{
    char buf[128];
    /* a stray byte, an overlong '/', a surrogate, a cut-off sequence */
    pb_metrics_escape_label("x\xffy\xc0\xafz\xed\xa0\x80w\xe2\x82", buf,
                            sizeof buf);
    cr_assert_str_eq(buf, "x\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbdz"
                          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdw"
                          "\xef\xbf\xbd\xef\xbf\xbd");
    /* never more than the buffer, never half an escape */
    size_t n = pb_metrics_escape_label("\"\"\"\"", buf, 6);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(buf, "\\\"\\\"");
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */
/* ------------------------------------------------------------------ */

static pb_metrics_t *
busy_registry(void)
{
    pb_metrics_t *m = pb_metrics_new();
    cr_assert_not_null(m);
    pb_mconn_t *src = pb_metrics_connector(m, "src");
    pb_mconn_t *crm = pb_metrics_connector(m, "crm");
    pb_mconn_describe(src, "good", "1.0 \"beta\"\n\xff");
    pb_mconn_describe(crm, "file", "2.0");
    pb_mconn_running(src, 1);
    pb_mconn_running(crm, 1);
    pb_mconn_webhook(src, 200);
    pb_mconn_webhook(src, 400);
    pb_mconn_webhook(src, 999);
    pb_mconn_emitted(src, 5, 1);
    pb_mconn_busy(crm, 1500000000);
    pb_mhop_t *h = pb_metrics_hop(m, "to-crm", "crm");
    for (int i = 0; i < 5; i++) {
        pb_mhop_received(h);
        pb_mhop_pending_add(h, 1);
    }
    for (int i = 0; i < 4; i++) {
        pb_mhop_inflight_add(h, 1);
        pb_mhop_attempt(h, 1000 * (i + 1));
        pb_mhop_inflight_add(h, -1);
        pb_mhop_delivered(h, 10 * (i + 1));
        pb_mhop_pending_add(h, -1);
    }
    pb_mhop_retried(h, PB_RETRY_THROTTLED);
    pb_mhop_set_oldest(h, 2500);
    pb_metrics_commit(m, 800, 3, true);
    pb_metrics_commit(m, 120000, 2000, true); /* past the last bucket */
    pb_metrics_set_journal_size(m, 4096);
    return m;
}

Test(metrics, render_families_once_and_histograms_consistent)
{
    pb_metrics_t *m = busy_registry();
    /* a hop with nothing observed still renders a valid histogram */
    pb_metrics_hop(m, "to-crm", "ops");
    char *text = pb_metrics_render(m, &s_host);
    cr_assert_not_null(text);
    /* 2 journal histograms + 2 per hop */
    cr_assert_eq(pb_prom_check(text), 6);
    pb_prom_promtool(text);
    free(text);
    pb_metrics_destroy(&m);
    cr_assert_null(m);
}

Test(metrics, render_numbers)
{
    pb_metrics_t *m = busy_registry();
    char *text = pb_metrics_render(m, &s_host);
    const char *expect[] = {
        "plugboard_build_info{version=\"9.9.9\"} 1\n",
        "plugboard_ready 1\n",
        "plugboard_events_accepted_total 7\n",
        "plugboard_malformed_inputs_total{reason=\"bad_frame\"} 1\n",
        "plugboard_malformed_inputs_total{reason=\"bad_request\"} 2\n",
        "plugboard_malformed_inputs_total{reason=\"too_large\"} 3\n",
        "plugboard_connector_info{connector=\"src\",plugin=\"good\","
        "version=\"1.0 \\\"beta\\\"\\n\xef\xbf\xbd\"} 1\n",
        "plugboard_connector_up{connector=\"crm\"} 1\n",
        "plugboard_connector_received_total{connector=\"src\","
        "kind=\"webhook\"} 3\n",
        "plugboard_connector_webhook_responses_total{connector=\"src\","
        "class=\"4xx\"} 1\n",
        "plugboard_connector_webhook_responses_total{connector=\"src\","
        "class=\"5xx\"} 1\n",
        "plugboard_connector_emitted_total{connector=\"src\"} 5\n",
        "plugboard_connector_duplicates_total{connector=\"src\"} 1\n",
        "plugboard_connector_busy_seconds_total{connector=\"crm\"} "
        "1.500000000\n",
        "plugboard_route_received_total{route=\"to-crm\",connector=\"crm\"} "
        "5\n",
        "plugboard_route_delivered_total{route=\"to-crm\",connector=\"crm\"} "
        "4\n",
        "plugboard_route_pending{route=\"to-crm\",connector=\"crm\"} 1\n",
        "plugboard_route_inflight{route=\"to-crm\",connector=\"crm\"} 0\n",
        "plugboard_route_oldest_pending_seconds{route=\"to-crm\","
        "connector=\"crm\"} 2.500\n",
        "plugboard_route_retried_total{route=\"to-crm\",connector=\"crm\","
        "reason=\"throttled\"} 1\n",
        "plugboard_route_delivery_seconds_bucket{route=\"to-crm\","
        "connector=\"crm\",le=\"0.001\"} 1\n",
        "plugboard_route_delivery_seconds_count{route=\"to-crm\","
        "connector=\"crm\"} 4\n",
        "plugboard_route_delivery_seconds_sum{route=\"to-crm\","
        "connector=\"crm\"} 0.01\n",
        "plugboard_route_end_to_end_seconds_count{route=\"to-crm\","
        "connector=\"crm\"} 4\n",
        "plugboard_journal_batch_size_bucket{le=\"1024\"} 1\n",
        "plugboard_journal_batch_size_bucket{le=\"+Inf\"} 2\n",
        "plugboard_journal_size_bytes 4096\n",
        "plugboard_journal_writable 1\n",
    };
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++)
        cr_expect(strstr(text, expect[i]), "missing: %s", expect[i]);
    free(text);
    pb_metrics_destroy(&m);
}

Test(metrics, same_names_same_series_and_null_is_harmless)
{
    pb_metrics_t *m = pb_metrics_new();
    cr_assert_eq(pb_metrics_connector(m, "a"), pb_metrics_connector(m, "a"));
    cr_assert_eq(pb_metrics_hop(m, "r", "a"), pb_metrics_hop(m, "r", "a"));
    cr_assert_neq(pb_metrics_hop(m, "r", "a"), pb_metrics_hop(m, "r", "b"));
    cr_assert_null(pb_metrics_hop(m, "r", NULL));
    /* updates without a registry do nothing */
    pb_mhop_received(NULL);
    pb_mhop_attempt(NULL, 5);
    pb_mconn_busy(NULL, 5);
    pb_metrics_commit(NULL, 1, 1, false);
    cr_assert_null(pb_metrics_connector(NULL, "a"));
    /* readiness: a connector that never ran is not up */
    char name[32];
    cr_assert_not(pb_metrics_all_up(m, name, sizeof name));
    cr_assert_str_eq(name, "a");
    pb_mconn_running(pb_metrics_connector(m, "a"), 1);
    cr_assert(pb_metrics_all_up(m, name, sizeof name));
    /* an upgrade: new instance up before the old one closes */
    pb_mconn_running(pb_metrics_connector(m, "a"), 1);
    pb_mconn_running(pb_metrics_connector(m, "a"), -1);
    cr_assert(pb_metrics_all_up(m, name, sizeof name));
    cr_assert(pb_metrics_journal_writable(m));
    pb_metrics_commit(m, 0, 0, false);
    cr_assert_not(pb_metrics_journal_writable(m));
    pb_metrics_destroy(&m);
    pb_metrics_destroy(&m); /* idempotent */
}

Test(metrics, oldest_pending_resets_when_the_backlog_empties)
{
    pb_metrics_t *m = pb_metrics_new();
    pb_mhop_t *h = pb_metrics_hop(m, "r", "a");
    pb_mhop_pending_add(h, 2);
    pb_mhop_set_oldest(h, 9000);
    pb_mhop_pending_add(h, -1);
    pb_metrics_snap_t s;
    cr_assert_eq(pb_metrics_snapshot(m, &s), 0);
    cr_assert_eq(s.hops[0].oldest_ms, 9000);
    pb_metrics_snap_release(&s);
    pb_mhop_pending_add(h, -1);
    cr_assert_eq(pb_metrics_snapshot(m, &s), 0);
    cr_assert_eq(s.hops[0].oldest_ms, 0);
    cr_assert_eq(s.hops[0].pending, 0);
    pb_metrics_snap_release(&s);
    pb_metrics_destroy(&m);
}

Test(metrics, sampler_window)
{
    pb_metrics_t *m = pb_metrics_new();
    pb_mhop_t *h = pb_metrics_hop(m, "r", "a");
    pb_metrics_snap_t old, now;
    /* nothing kept yet: both ends are now */
    cr_assert_eq(pb_metrics_window(m, 60000, &old, &now), PB_ENOENT);
    cr_assert_eq(old.t_ms, now.t_ms);
    pb_metrics_snap_release(&old);
    pb_metrics_snap_release(&now);
    cr_assert_eq(pb_metrics_sampler_start(m, 50, 4), 0);
    usleep(120000);
    for (int i = 0; i < 10; i++)
        pb_mhop_received(h);
    usleep(200000); /* the ring holds the last 4 (200 ms) */
    cr_assert_eq(pb_metrics_window(m, 60000, &old, &now), 0);
    cr_assert_gt(now.t_ms - old.t_ms, 100);
    cr_assert_lt(now.t_ms - old.t_ms, 400);
    cr_assert_eq(now.hops[0].received, 10);
    pb_metrics_snap_release(&old);
    pb_metrics_snap_release(&now);
    pb_metrics_destroy(&m); /* stops the sampler */
}

/* ------------------------------------------------------------------ */
/* The constraint finder, on made-up windows                           */
/* ------------------------------------------------------------------ */

static char *s_when[] = {"payment.failed"};
static char *s_to_fast[] = {"fast"}, *s_to_slow[] = {"slow"},
            *s_to_other[] = {"other"};

static pb_connector_conf_t s_conns[] = {
    {.name = "src", .plugin = "good"},
    {.name = "fast", .plugin = "good"},
    {.name = "slow", .plugin = "slow"},
    {.name = "other", .plugin = "slow"},
};

static pb_route_conf_t s_routes[] = {
    {.name = "r-fast",
     .from = "src",
     .when = s_when,
     .when_count = 1,
     .to = s_to_fast,
     .to_count = 1,
     .why = "why fast",
     .owner = "f@x"},
    {.name = "r-slow",
     .from = "src",
     .when = s_when,
     .when_count = 1,
     .to = s_to_slow,
     .to_count = 1,
     .why = "why slow",
     .owner = "s@x",
     .on_failure = "customers wait",
     .notify = "fast"},
    {.name = "r-other",
     .from = "src",
     .when = s_when,
     .when_count = 1,
     .to = s_to_other,
     .to_count = 1,
     .why = "why other",
     .owner = "o@x"},
};

static const pb_config_t s_cfg = {
    .path = "test.cfg",
    .connectors = s_conns,
    .connector_count = 4,
    .routes = s_routes,
    .route_count = 3,
};

typedef struct hopnums {
    uint64_t received, attempts, delivered, dead, throttled, failed;
    int64_t pending;
} hopnums_t;

/* A pair of snapshots 10 s apart: busy[i] seconds of busy time in the
 * window for connector i (src, fast, slow, other), hop numbers at the
 * start (a) and end (b) for r-fast, r-slow, r-other. */
static void
make_window(pb_metrics_snap_t *old, pb_metrics_snap_t *now,
            const double busy[4], const hopnums_t a[3], const hopnums_t b[3],
            const bool up[4])
{
    static const char *names[] = {"src", "fast", "slow", "other"};
    static const char *routes[] = {"r-fast", "r-slow", "r-other"};
    pb_metrics_snap_t *snaps[2] = {old, now};
    for (int s = 0; s < 2; s++) {
        pb_metrics_snap_t *x = snaps[s];
        memset(x, 0, sizeof *x);
        x->t_ms = s ? 20000 : 10000;
        x->conns = calloc(4, sizeof *x->conns);
        x->hops = calloc(3, sizeof *x->hops);
        x->conn_count = 4;
        x->hop_count = 3;
        for (int i = 0; i < 4; i++) {
            x->conns[i].name = names[i];
            x->conns[i].workers = 1;
            x->conns[i].up = up ? up[i] : true;
            x->conns[i].busy_ns = s ? (uint64_t)(busy[i] * 1e9) : 0;
        }
        for (int i = 0; i < 3; i++) {
            const hopnums_t *n = s ? &b[i] : &a[i];
            pb_mhop_snap_t *h = &x->hops[i];
            h->route = routes[i];
            h->connector = names[i + 1];
            h->received = n->received;
            h->attempts = n->attempts;
            h->delivered = n->delivered;
            h->dead = n->dead;
            h->retried[PB_RETRY_THROTTLED] = n->throttled;
            h->retried[PB_RETRY_FAILED] = n->failed;
            h->pending = n->pending;
        }
    }
}

static json_t *
judge(const double busy[4], const hopnums_t a[3], const hopnums_t b[3],
      const bool up[4])
{
    pb_metrics_snap_t old, now;
    make_window(&old, &now, busy, a, b, up);
    json_t *out = pb_constraint_json(&old, &now, &s_cfg);
    pb_metrics_snap_release(&old);
    pb_metrics_snap_release(&now);
    cr_assert_not_null(out);
    return out;
}

static const char *
jstr(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

/* 20 events/s to each of the three routes over 10 s */
static const hopnums_t s_start[3] = {{0}, {0}, {0}};
static const hopnums_t s_keep_up[3] = {
    {.received = 200, .attempts = 200, .delivered = 200},
    {.received = 200, .attempts = 200, .delivered = 200},
    {.received = 200, .attempts = 200, .delivered = 200},
};

Test(constraint, a_saturated_destination_is_named_with_its_route)
{
    hopnums_t b[3] = {s_keep_up[0], s_keep_up[1], s_keep_up[2]};
    b[1] = (hopnums_t){
        .received = 200, .attempts = 100, .delivered = 99, .pending = 101};
    double busy[4] = {0.2, 0.1, 9.9, 0.1};
    json_t *out = judge(busy, s_start, b, NULL);
    cr_assert(json_is_true(json_object_get(out, "constrained")));
    cr_assert_str_eq(jstr(out, "constraint", "connector"), "slow");
    cr_assert_str_eq(jstr(out, "constraint", "route"), "r-slow");
    cr_assert_str_eq(jstr(out, "constraint", "hop"), "r-slow -> slow");
    cr_assert_str_eq(jstr(out, "constraint", "cause"), "saturated");
    cr_assert_str_eq(jstr(out, "constraint", "why"), "why slow");
    cr_assert_str_eq(jstr(out, "constraint", "owner"), "s@x");
    cr_assert_str_eq(jstr(out, "constraint", "on_failure"), "customers wait");
    cr_assert_str_eq(jstr(out, "constraint", "notify"), "fast");
    cr_assert_str_eq(jstr(out, "constraint", "plugin"), "slow");
    json_t *ev =
        json_object_get(json_object_get(out, "constraint"), "evidence");
    cr_assert_float_eq(json_number_value(json_object_get(ev, "arrival_rate")),
                       20.0, 0.01);
    cr_assert_float_eq(
        json_number_value(json_object_get(ev, "completion_rate")), 9.9, 0.01);
    cr_assert_float_eq(json_number_value(json_object_get(ev, "utilisation")),
                       0.99, 0.001);
    cr_assert_eq(json_integer_value(json_object_get(ev, "backlog_end")), 101);
    cr_assert_float_eq(json_number_value(json_object_get(ev, "backlog_trend")),
                       10.1, 0.01);
    cr_assert(strstr(jstr(out, "constraint", "suggestion"), "concurrency"));
    cr_assert(strstr(jstr(out, "message", NULL), "r-slow -> slow"));
    json_decref(out);
}

Test(constraint, a_rate_limited_destination_is_named_as_throttled)
{
    hopnums_t b[3] = {s_keep_up[0], s_keep_up[1], s_keep_up[2]};
    b[2] = (hopnums_t){.received = 200,
                       .attempts = 160,
                       .delivered = 50,
                       .throttled = 110,
                       .pending = 150};
    double busy[4] = {0.2, 0.1, 0.1, 0.05};
    json_t *out = judge(busy, s_start, b, NULL);
    cr_assert_str_eq(jstr(out, "constraint", "connector"), "other");
    cr_assert_str_eq(jstr(out, "constraint", "cause"), "throttled");
    cr_assert(strstr(jstr(out, "constraint", "suggestion"), "rate-limited"));
    json_t *ev =
        json_object_get(json_object_get(out, "constraint"), "evidence");
    cr_assert_float_eq(json_number_value(json_object_get(ev, "retry_share")),
                       110.0 / 160.0, 0.001);
    json_decref(out);
}

Test(constraint, failing_and_growing_and_down)
{
    /* retries without retry-after: failing */
    hopnums_t b[3] = {s_keep_up[0], s_keep_up[1], s_keep_up[2]};
    b[0] = (hopnums_t){.received = 200,
                       .attempts = 200,
                       .delivered = 100,
                       .failed = 100,
                       .pending = 100};
    double busy[4] = {0.2, 0.3, 0.1, 0.1};
    json_t *out = judge(busy, s_start, b, NULL);
    cr_assert_str_eq(jstr(out, "constraint", "connector"), "fast");
    cr_assert_str_eq(jstr(out, "constraint", "cause"), "failing");
    json_decref(out);
    /* idle but not completing: backlog */
    b[0] = (hopnums_t){
        .received = 200, .attempts = 20, .delivered = 20, .pending = 180};
    out = judge(busy, s_start, b, NULL);
    cr_assert_str_eq(jstr(out, "constraint", "connector"), "fast");
    cr_assert_str_eq(jstr(out, "constraint", "cause"), "backlog");
    json_decref(out);
    /* not running with work waiting */
    b[0] = s_keep_up[0];
    b[1].pending = 3;
    bool up[4] = {true, true, false, true};
    out = judge(busy, s_start, b, up);
    cr_assert_str_eq(jstr(out, "constraint", "connector"), "slow");
    cr_assert_str_eq(jstr(out, "constraint", "cause"), "down");
    json_decref(out);
}

Test(constraint, nothing_is_constrained_when_everything_keeps_up)
{
    double busy[4] = {0.2, 0.4, 0.5, 0.3};
    json_t *out = judge(busy, s_start, s_keep_up, NULL);
    cr_assert(json_is_false(json_object_get(out, "constrained")));
    cr_assert_null(json_object_get(out, "constraint"));
    cr_assert(strstr(jstr(out, "message", NULL), "nothing is constrained"),
              "%s", jstr(out, "message", NULL));
    /* the list still ranks them */
    cr_assert_eq(json_array_size(json_object_get(out, "connectors")), 4);
    json_decref(out);
}

Test(constraint, too_short_a_window_says_so)
{
    pb_metrics_snap_t old, now;
    double busy[4] = {0};
    make_window(&old, &now, busy, s_start, s_keep_up, NULL);
    old.t_ms = now.t_ms - 500;
    json_t *out = pb_constraint_json(&old, &now, &s_cfg);
    cr_assert(json_is_false(json_object_get(out, "constrained")));
    cr_assert(json_is_true(json_object_get(out, "measuring")));
    json_decref(out);
    pb_metrics_snap_release(&old);
    pb_metrics_snap_release(&now);
}

Test(constraint, flow_rates_per_connector_and_route)
{
    pb_metrics_snap_t old, now;
    hopnums_t b[3] = {s_keep_up[0], s_keep_up[1], s_keep_up[2]};
    b[1].pending = 7;
    double busy[4] = {0.2, 0.4, 5.0, 0.3};
    make_window(&old, &now, busy, s_start, b, NULL);
    json_t *f = pb_flow_json(&old, &now, &s_cfg);
    pb_metrics_snap_release(&old);
    pb_metrics_snap_release(&now);
    cr_assert_float_eq(json_number_value(json_object_get(f, "window_s")), 10,
                       0.01);
    json_t *slow = json_array_get(json_object_get(f, "connectors"), 2);
    cr_assert_str_eq(json_string_value(json_object_get(slow, "name")), "slow");
    cr_assert_float_eq(json_number_value(json_object_get(slow, "utilisation")),
                       0.5, 0.001);
    cr_assert_float_eq(json_number_value(json_object_get(slow, "in_rate")), 20,
                       0.01);
    cr_assert_eq(json_integer_value(json_object_get(slow, "pending")), 7);
    json_t *r = json_array_get(json_object_get(f, "routes"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(r, "name")), "r-slow");
    cr_assert_str_eq(json_string_value(json_object_get(r, "why")), "why slow");
    json_t *hop = json_array_get(json_object_get(r, "hops"), 0);
    cr_assert_float_eq(json_number_value(json_object_get(hop, "out_rate")), 20,
                       0.01);
    json_decref(f);
}

/* ------------------------------------------------------------------ */
/* The map                                                             */
/* ------------------------------------------------------------------ */

Test(map, dot_lists_every_route_with_why_and_owner_escaped)
{
    char *why = "the team \"re-typed\" C:\\data by hand";
    pb_route_conf_t routes[3];
    memcpy(routes, s_routes, sizeof routes);
    routes[0].why = why;
    pb_config_t cfg = s_cfg;
    cfg.routes = routes;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    pb_map_dot(&cfg, NULL, NULL, f);
    fclose(f);
    cr_assert(strstr(text, "digraph plugboard {"));
    cr_assert(strstr(text, "\"src\" -> \"fast\""));
    cr_assert(strstr(text, "\"src\" -> \"slow\""));
    cr_assert(strstr(text, "\"src\" -> \"other\""));
    cr_assert(strstr(text, "why: the team \\\"re-typed\\\" C:\\\\data by hand"),
              "%s", text);
    cr_assert(strstr(text, "owner: s@x"));
    cr_assert(strstr(text, "on failure: customers wait"));
    cr_assert(strstr(text, "plugin: slow"));
    free(text);
}

/* ------------------------------------------------------------------ */
/* Custom counters (api->count)                                        */
/* ------------------------------------------------------------------ */

Test(metrics, custom_counters_render_per_connector_and_name)
{
    pb_metrics_t *m = pb_metrics_new();
    pb_mconn_t *crm = pb_metrics_connector(m, "crm");
    pb_mconn_t *mail = pb_metrics_connector(m, "mail");
    cr_assert_eq(pb_mconn_custom(crm, "contact_created", 1), 0);
    cr_assert_eq(pb_mconn_custom(crm, "contact_created", 2), 0);
    cr_assert_eq(pb_mconn_custom(crm, "rate_limited", 0), 0);
    cr_assert_eq(pb_mconn_custom(mail, "sent", 7), 0);
    char *text = pb_metrics_render(m, &s_host);
    cr_assert_not_null(text);
    pb_prom_check(text);
    pb_prom_promtool(text);
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_total{"
                                     "connector=\"crm\",name=\"contact_"
                                     "created\"}"),
                 3);
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_total{"
                                     "connector=\"crm\",name=\"rate_"
                                     "limited\"}"),
                 0);
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_total{"
                                     "connector=\"mail\",name=\"sent\"}"),
                 7);
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_total{"
                                     "connector=\"mail\",name=\"contact_"
                                     "created\"}"),
                 -1, "names are per connector");
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_dropped_"
                                     "total{connector=\"crm\"}"),
                 0);
    /* the family appears once, even with no samples of its own */
    const char *fam = "# TYPE plugboard_connector_custom_total counter\n";
    char *at = strstr(text, fam);
    cr_expect(at && !strstr(at + 1, fam), "one # TYPE line");
    free(text);
    pb_metrics_destroy(&m);
}

Test(metrics, custom_counters_guard_their_names_and_deltas)
{
    pb_metrics_t *m = pb_metrics_new();
    pb_mconn_t *c = pb_metrics_connector(m, "crm");
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    cr_expect_eq(pb_mconn_custom(c, "Bad-Name", 1), PB_EINVAL);
    cr_expect_eq(pb_mconn_custom(c, "", 1), PB_EINVAL);
    cr_expect_eq(pb_mconn_custom(c, "caf\xc3\xa9", 1), PB_EINVAL);
    cr_expect_eq(pb_mconn_custom(c, "with space", 1), PB_EINVAL);
    cr_expect_eq(pb_mconn_custom(c, long_name, 1), PB_EINVAL, "64 bytes");
    cr_expect_eq(pb_mconn_custom(c, NULL, 1), PB_EINVAL);
    long_name[63] = '\0';
    cr_expect_eq(pb_mconn_custom(c, long_name, 1), 0, "63 bytes is fine");
    cr_expect_eq(pb_mconn_custom(c, "refunds", -1), PB_ERANGE,
                 "a counter does not go down");
    /* 32 distinct names per connector, the 63-byte one included */
    char name[16];
    for (int i = 0; i < 31; i++) {
        snprintf(name, sizeof name, "n_%d", i);
        cr_expect_eq(pb_mconn_custom(c, name, 1), 0, "%s", name);
    }
    cr_expect_eq(pb_mconn_custom(c, "one_too_many", 1), PB_EFULL);
    cr_expect_eq(pb_mconn_custom(c, "n_3", 1), 0, "known names still count");
    pb_mconn_custom_dropped(c, 4, PB_CUSTOM_DROP_NEGATIVE); /* a worker's */
    char *text = pb_metrics_render(m, &s_host);
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_total{"
                                     "connector=\"crm\",name=\"n_3\"}"),
                 2);
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_total{"
                                     "connector=\"crm\",name=\"refunds\"}"),
                 -1, "a refused delta makes no series");
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_total{"
                                     "connector=\"crm\",name=\"one_too_"
                                     "many\"}"),
                 -1);
    /* 6 bad names + 1 negative + 1 over the limit + 4 from a worker */
    cr_expect_eq(pb_prom_value(text, "plugboard_connector_custom_dropped_"
                                     "total{connector=\"crm\"}"),
                 12);
    cr_expect_null(strstr(text, "Bad-Name"), "refused names are no label");
    pb_prom_promtool(text);
    free(text);
    /* without a registry: nothing, and no crash */
    cr_expect_eq(pb_mconn_custom(NULL, "sent", 1), 0);
    pb_mconn_custom_dropped(NULL, 1, PB_CUSTOM_DROP_BAD_NAME);
    pb_metrics_destroy(&m);
}

typedef struct s_counting {
    pb_mconn_t *c;
    int thread;
} counting_t;

static void *
s_count_many(void *arg)
{
    counting_t *ct = arg;
    char name[16];
    for (int i = 0; i < 20000; i++) {
        /* every thread races to create the same 8 names */
        snprintf(name, sizeof name, "k_%d", (i + ct->thread) % 8);
        pb_mconn_custom(ct->c, name, 1);
    }
    return NULL;
}

Test(metrics, custom_counters_from_many_threads_add_up)
{
    pb_metrics_t *m = pb_metrics_new();
    pb_mconn_t *c = pb_metrics_connector(m, "crm");
    pthread_t t[4];
    counting_t ct[4];
    for (int i = 0; i < 4; i++) {
        ct[i] = (counting_t){c, i};
        cr_assert_eq(pthread_create(&t[i], NULL, s_count_many, &ct[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = pb_metrics_render(m, &s_host);
    double total = 0;
    for (int k = 0; k < 8; k++) {
        char series[128];
        snprintf(series, sizeof series,
                 "plugboard_connector_custom_total{connector=\"crm\","
                 "name=\"k_%d\"}",
                 k);
        cr_expect_eq(pb_prom_value(text, series), 10000, "%s", series);
        total += pb_prom_value(text, series);
    }
    cr_expect_eq(total, 80000);
    /* one series per name, however the threads raced */
    size_t lines = 0;
    for (const char *p = text; (p = strstr(p, "name=\"k_0\"")); p++)
        lines++;
    cr_expect_eq(lines, 1);
    free(text);
    pb_metrics_destroy(&m);
}
