/*
 * constraint.h - rates over a window of two metrics snapshots, and the
 * constraint finder: which hop limits throughput now, and why.
 *
 * For every connector the window gives: arrivals (deliveries created for
 * it) and completions (delivered or dead) per second, utilisation (time
 * inside its callbacks / (window x workers)), the backlog at both ends
 * and its trend, and the share of attempts that were retried (split into
 * throttled, i.e. retry-after, failed and timed out).  A connector is a
 * constraint candidate when
 *   - it is not running while deliveries wait for it        ("down"),
 *   - >= 20% of at least 5 attempts were retried, mostly with
 *     retry-after                                           ("throttled"),
 *     or mostly without                                     ("failing"),
 *   - its utilisation is >= 80%                             ("saturated"),
 *   - its backlog grew by at least max(5, 10% of arrivals)  ("backlog");
 * the candidate with the highest score (down 2, else the largest of
 * utilisation, retry share and backlog growth / arrivals) is the
 * constraint.  Its hop is the route with the largest backlog on it (for a
 * source, its busiest route); the answer carries that route's why, owner
 * and on_failure, every route through the connector, the evidence and a
 * one-line suggestion.  Pure functions: the tests feed them snapshots.
 */
#ifndef PB_CONSTRAINT_H
#define PB_CONSTRAINT_H

#include <jansson.h>

#include "config.h"
#include "metrics.h"

#define PB_CONSTRAINT_UTIL 0.8
#define PB_CONSTRAINT_RETRY_SHARE 0.2
#define PB_CONSTRAINT_MIN_ATTEMPTS 5
#define PB_CONSTRAINT_MIN_GROWTH 5
#define PB_CONSTRAINT_MIN_WINDOW_MS 1500

/*
 * Per-connector and per-route numbers with rates between old and now:
 *   {"window_s": W,
 *    "connectors": [{"name","up","workers","received","webhooks",
 *                    "emitted","busy_s","utilisation","delivered",
 *                    "retried","rejected","dead","pending","inflight",
 *                    "oldest_pending_s","in_rate","out_rate"}],
 *    "routes": [{"name","from","when":[...],"why","owner","on_failure",
 *                "notify","hops":[{"connector","received","delivered",
 *                "retried","rejected","dead","pending","inflight",
 *                "oldest_pending_s","in_rate","out_rate","p50_ms",
 *                "p99_ms"}]}]}
 * cfg (borrowed) gives the routes' text and the order.  Caller owns the
 * result; NULL when out of memory.
 */
json_t *pb_flow_json(const pb_metrics_snap_t *old, const pb_metrics_snap_t *now,
                     const pb_config_t *cfg);

/*
 * The constraint between old and now:
 *   {"window_s": W, "constrained": true|false, "message": "...",
 *    "constraint": {"connector","route","hop","cause","score",
 *                   "evidence":{...},"why","owner","on_failure","notify",
 *                   "routes":[...],"suggestion"},
 *    "connectors": [{"connector","cause","score","utilisation",
 *                    "arrival_rate","completion_rate","backlog_trend",
 *                    "retry_share"}]}   (highest score first)
 * "constraint" is present only when constrained.  Caller owns the result.
 */
json_t *pb_constraint_json(const pb_metrics_snap_t *old,
                           const pb_metrics_snap_t *now,
                           const pb_config_t *cfg);

#endif /* PB_CONSTRAINT_H */
