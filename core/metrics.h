/*
 * metrics.h - the host's counters, gauges and histograms, their
 * Prometheus text rendering, and a ring of snapshots for rates.
 *
 * The registry holds three kinds of series, each found by name and kept
 * until the registry is destroyed (so a reload that rebuilds the route
 * table finds the same counters again):
 *   connector  (pb_mconn_t)  busy time, deliveries and webhooks received,
 *                            events emitted, up, workers, and the
 *                            plugin's own counters (api->count);
 *   hop        (pb_mhop_t)   one (route, destination connector) pair:
 *                            received, delivered, retried by reason,
 *                            rejected, dead, pending, in flight, age of
 *                            the oldest pending, delivery and end-to-end
 *                            latency histograms;
 *   host                     journal commit latency and batch size,
 *                            journal size and writability.
 * Lookups take a lock and belong to set-up; every update is one or two
 * relaxed atomic operations and accepts a NULL handle (a router or
 * connector started without metrics), so the hot paths pay nothing for
 * a registry they do not have.  Updates come from the router thread
 * (hops, journal), connector actor threads (busy time, received) and the
 * listener; reads (render, snapshots) from any thread.
 *
 * Histograms store one counter per bucket (not cumulative) and no
 * separate count: rendering derives the cumulative buckets and _count
 * from the same reads, so the +Inf bucket always equals _count.
 *
 * Labels carry only names the config validated (connector, route), a
 * fixed reason code, or a custom counter name a plugin chose, which must
 * match [a-z0-9_]{1,63} and of which a connector gets at most
 * PB_CUSTOM_MAX; values are escaped and made valid UTF-8 anyway, and free
 * text (vendor error messages) never becomes a label.
 */
#ifndef PB_METRICS_H
#define PB_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pb_metrics pb_metrics_t;
typedef struct pb_mconn pb_mconn_t;
typedef struct pb_mhop pb_mhop_t;

/* Why a delivery attempt is retried: a fixed set, used as label values. */
typedef enum pb_retry_reason {
    PB_RETRY_FAILED = 0,    /* the connector answered RETRY */
    PB_RETRY_THROTTLED = 1, /* RETRY with a retry-after (rate limited) */
    PB_RETRY_TIMEOUT = 2,   /* no answer within deliver_timeout */
    PB_RETRY_REASON_COUNT
} pb_retry_reason_t;

/* ------------------------------------------------------------------ */
/* Histograms                                                          */
/* ------------------------------------------------------------------ */

#define PB_HISTO_MAX_BOUNDS 24

/* Bucket upper bounds in raw units (microseconds for latencies);
 * rendered times scale. */
typedef struct pb_histo_spec {
    const uint64_t *bounds;
    size_t count;
    double scale;
} pb_histo_spec_t;

typedef struct pb_histo {
    const pb_histo_spec_t *spec;
    _Atomic uint64_t counts[PB_HISTO_MAX_BOUNDS + 1]; /* last is +Inf */
    _Atomic uint64_t sum;                             /* raw units */
} pb_histo_t;

/* Latency buckets, 0.5 ms .. 1 h, in microseconds. */
extern const pb_histo_spec_t pb_histo_latency;
/* Batch size buckets, 1 .. 1024 messages. */
extern const pb_histo_spec_t pb_histo_batch;

void pb_histo_init(pb_histo_t *h, const pb_histo_spec_t *spec);
void pb_histo_observe(pb_histo_t *h, uint64_t value);
/* Total observations (the sum of every bucket). */
uint64_t pb_histo_count(const pb_histo_t *h);
/* The q-quantile (0..1) estimated from the buckets, in rendered units;
 * 0 when empty. */
double pb_histo_quantile(const pb_histo_t *h, double q);

/* ------------------------------------------------------------------ */
/* Registry                                                            */
/* ------------------------------------------------------------------ */

/* An empty registry.  NULL when out of memory.  Caller owns it. */
pb_metrics_t *pb_metrics_new(void);

/* Stops the sampler and frees everything; every pb_mconn_t and pb_mhop_t
 * handed out is gone after this.  NULLs *m. */
void pb_metrics_destroy(pb_metrics_t **m);

/*
 * Find or create a series by name (copied).  Thread-safe.  The result is
 * borrowed until pb_metrics_destroy and is the same pointer for the same
 * names every time.  NULL when m is NULL or out of memory (updates on
 * NULL do nothing).
 */
pb_mconn_t *pb_metrics_connector(pb_metrics_t *m, const char *name);
pb_mhop_t *pb_metrics_hop(pb_metrics_t *m, const char *route,
                          const char *connector);

/* What the connector runs (copied, shown in plugboard_connector_info). */
void pb_mconn_describe(pb_mconn_t *c, const char *plugin, const char *version);

/* Monotonic clock in nanoseconds and microseconds. */
int64_t pb_metrics_now_ns(void);
int64_t pb_metrics_now_us(void);

/* ---- connector actor ---------------------------------------------- */
/* An instance opened (+1) or closed (-1); up while any runs (an upgrade
 * runs the new instance beside the old one for a while). */
void pb_mconn_running(pb_mconn_t *c, int delta);
/* How many deliver calls can run at once (utilisation divides by it). */
void pb_mconn_set_workers(pb_mconn_t *c, int workers);
/* Time spent inside a deliver or webhook callback. */
void pb_mconn_busy(pb_mconn_t *c, int64_t ns);
void pb_mconn_delivery_received(pb_mconn_t *c);
/* A webhook request handed to the connector and the status it chose. */
void pb_mconn_webhook(pb_mconn_t *c, int status);

/* ---- custom counters: api->count ------------------------------------ */
/*
 * plugboard_connector_custom_total{connector,name}.  Names come from
 * plugins, so their number is bounded: a name must match [a-z0-9_]{1,63}
 * and a connector gets at most PB_CUSTOM_MAX distinct names (kept until
 * the registry is destroyed).  Anything else is dropped: counted in
 * plugboard_connector_custom_dropped_total{connector} and logged at warn
 * once per connector and kind of misuse, naming the first offender.
 * Thread-safe from any number of threads; a known name costs a scan of
 * at most PB_CUSTOM_MAX short strings and one atomic add, a new one a
 * lock.
 */
#define PB_CUSTOM_MAX 32
#define PB_CUSTOM_NAME_MAX 63

/* Kinds of misuse, as a mask (pb_mconn_custom_dropped). */
#define PB_CUSTOM_DROP_BAD_NAME (1u << 0) /* not [a-z0-9_]{1,63} */
#define PB_CUSTOM_DROP_NEGATIVE (1u << 1) /* a counter never goes down */
#define PB_CUSTOM_DROP_TOO_MANY (1u << 2) /* past PB_CUSTOM_MAX names */

/* Does name match [a-z0-9_]{1,63}?  (NULL does not.) */
bool pb_metrics_custom_name_ok(const char *name);

/* Add delta (>= 0) to the connector's counter name.  Returns 0 (also when
 * c is NULL), or, when the count is dropped, PB_EINVAL for a bad name,
 * PB_ERANGE for a negative delta, PB_EFULL when the connector already has
 * PB_CUSTOM_MAX other names. */
int pb_mconn_custom(pb_mconn_t *c, const char *name, int64_t delta);

/* n counts dropped before they reached the registry (a worker process
 * checks its plugin's counts the same way), of the kinds in causes. */
void pb_mconn_custom_dropped(pb_mconn_t *c, uint64_t n, unsigned causes);

/* ---- router thread ------------------------------------------------- */
/* Events from this source accepted into the journal, and duplicates. */
void pb_mconn_emitted(pb_mconn_t *c, uint64_t accepted, uint64_t duplicates);
/* Vendor items from this source kept as (ingress) dead letters. */
void pb_mconn_unmapped(pb_mconn_t *c, uint64_t n);
void pb_mhop_received(pb_mhop_t *h);
void pb_mhop_pending_add(pb_mhop_t *h, int64_t delta);
void pb_mhop_inflight_add(pb_mhop_t *h, int64_t delta);
/* A connector's answer (or a timeout) arrived latency_us after dispatch. */
void pb_mhop_attempt(pb_mhop_t *h, int64_t latency_us);
void pb_mhop_delivered(pb_mhop_t *h, int64_t end_to_end_ms);
void pb_mhop_retried(pb_mhop_t *h, pb_retry_reason_t reason);
void pb_mhop_rejected(pb_mhop_t *h);
void pb_mhop_dead(pb_mhop_t *h);
void pb_mhop_set_oldest(pb_mhop_t *h, int64_t age_ms);
/* One group commit: its latency, how many messages it carried, and
 * whether it succeeded. */
void pb_metrics_commit(pb_metrics_t *m, int64_t latency_us, size_t batch,
                       bool ok);
void pb_metrics_set_journal_size(pb_metrics_t *m, int64_t bytes);

/* ---- readiness ------------------------------------------------------ */
/* Is the journal writable (the last commit succeeded)?  True before the
 * first commit. */
bool pb_metrics_journal_writable(pb_metrics_t *m);
/* Writes the name of the first connector that is not up to out (empty
 * when all are) and returns false when there is one. */
bool pb_metrics_all_up(pb_metrics_t *m, char *out, size_t out_len);

/* ------------------------------------------------------------------ */
/* Prometheus text                                                     */
/* ------------------------------------------------------------------ */

/* Numbers the registry does not hold, filled by the runtime. */
typedef struct pb_metrics_host {
    const char *version;
    bool ready;
    int64_t start_time_ms; /* wall clock */
    uint64_t accepted, duplicates, unrouted;
    uint64_t bad_frames, journal_errors;
    uint64_t http_requests, http_bad_request, http_too_large, http_aborted;
} pb_metrics_host_t;

/* The exposition text (format 0.0.4); caller frees.  NULL when out of
 * memory. */
char *pb_metrics_render(pb_metrics_t *m, const pb_metrics_host_t *host);

/* Append label value v to buf (at most cap bytes, NUL-terminated),
 * escaped for the text format and with invalid UTF-8 replaced by U+FFFD.
 * Returns the length written; exposed for tests. */
size_t pb_metrics_escape_label(const char *v, char *buf, size_t cap);

#define PB_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */
/* ------------------------------------------------------------------ */

typedef struct pb_mconn_snap {
    const char *name; /* borrowed from the registry */
    uint64_t busy_ns, deliveries, webhooks, emitted, unmapped;
    int workers;
    bool up;
} pb_mconn_snap_t;

typedef struct pb_mhop_snap {
    const char *route; /* borrowed from the registry */
    const char *connector;
    uint64_t received, attempts, delivered, rejected, dead;
    uint64_t retried[PB_RETRY_REASON_COUNT];
    int64_t pending, inflight, oldest_ms;
    double p50_ms, p99_ms; /* delivery latency, all time */
} pb_mhop_snap_t;

/* Every series at one instant.  Entries keep registry order, so index i
 * is the same series in every snapshot of one registry (later snapshots
 * may have more). */
typedef struct pb_metrics_snap {
    int64_t t_ms; /* monotonic */
    pb_mconn_snap_t *conns;
    size_t conn_count;
    pb_mhop_snap_t *hops;
    size_t hop_count;
} pb_metrics_snap_t;

/* Take a snapshot now.  Caller releases it. */
int pb_metrics_snapshot(pb_metrics_t *m, pb_metrics_snap_t *out);
void pb_metrics_snap_release(pb_metrics_snap_t *s);
/* Deep copy of in into out; 0 or PB_ENOMEM. */
int pb_metrics_snap_copy(const pb_metrics_snap_t *in, pb_metrics_snap_t *out);

/*
 * Keep a snapshot every interval_ms in a ring of keep entries, on a
 * thread of the registry's own (stopped by pb_metrics_destroy).  Returns
 * 0 or a negative code.
 */
int pb_metrics_sampler_start(pb_metrics_t *m, int64_t interval_ms, size_t keep);

/*
 * A window for rates: *old is a copy of the oldest kept snapshot taken at
 * most window_ms ago (or the oldest there is), *now a fresh one.  Returns
 * 0, or PB_ENOENT when no snapshot is kept yet (then *now is still set
 * and *old is a copy of it).  Caller releases both.
 */
int pb_metrics_window(pb_metrics_t *m, int64_t window_ms,
                      pb_metrics_snap_t *old, pb_metrics_snap_t *now);

#endif /* PB_METRICS_H */
