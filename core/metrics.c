/*
 * metrics.c - the registry of series, histograms, Prometheus text and the
 * snapshot ring.
 *
 * Owns every pb_mconn_t and pb_mhop_t (allocated one by one, so pointers
 * stay valid while the arrays that list them grow), the host-wide
 * journal series, and the sampler thread with its ring of snapshots.
 * m->lock guards the lists, the descriptive strings and the ring; the
 * numbers themselves are atomics updated without it.
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"

#define S_RELAXED memory_order_relaxed

static const uint64_t s_latency_bounds[] = {
    500,      1000,     2500,      5000,      10000,       25000,   50000,
    100000,   250000,   500000,    1000000,   2500000,     5000000, 10000000,
    30000000, 60000000, 300000000, 900000000, 3600000000u,
};
const pb_histo_spec_t pb_histo_latency = {
    .bounds = s_latency_bounds,
    .count = sizeof s_latency_bounds / sizeof *s_latency_bounds,
    .scale = 1e-6,
};

static const uint64_t s_batch_bounds[] = {1,  2,   4,   8,   16,  32,
                                          64, 128, 256, 512, 1024};
const pb_histo_spec_t pb_histo_batch = {
    .bounds = s_batch_bounds,
    .count = sizeof s_batch_bounds / sizeof *s_batch_bounds,
    .scale = 1.0,
};

_Static_assert(sizeof s_latency_bounds / sizeof *s_latency_bounds <=
                   PB_HISTO_MAX_BOUNDS,
               "latency buckets fit a histogram");

static const char *const s_retry_reasons[PB_RETRY_REASON_COUNT] = {
    [PB_RETRY_FAILED] = "failed",
    [PB_RETRY_THROTTLED] = "throttled",
    [PB_RETRY_TIMEOUT] = "timeout",
};

/* webhook answers by class: 2xx, 3xx, 4xx, 5xx */
#define S_CLASSES 4
static const char *const s_classes[S_CLASSES] = {"2xx", "3xx", "4xx", "5xx"};

/* One custom counter: name is written once, before the slot is
 * published by custom_count (release), and never changes after. */
typedef struct s_custom {
    char name[PB_CUSTOM_NAME_MAX + 1];
    _Atomic uint64_t value;
} custom_t;

struct pb_mconn {
    char *name;
    char *plugin; /* under the registry lock */
    char *version;
    atomic_int running;
    atomic_int workers;
    _Atomic uint64_t busy_ns, deliveries, webhooks, emitted, duplicates;
    _Atomic uint64_t unmapped; /* vendor items kept as (ingress) dead
                                  letters */
    _Atomic uint64_t answers[S_CLASSES];
    /* api->count: slots [0, custom_count) are published */
    custom_t custom[PB_CUSTOM_MAX];
    atomic_size_t custom_count;
    pthread_mutex_t custom_lock; /* adding a slot */
    _Atomic uint64_t custom_dropped;
    atomic_uint custom_warned; /* PB_CUSTOM_DROP_* kinds logged */
};

struct pb_mhop {
    char *route;
    char *connector;
    _Atomic uint64_t received, attempts, delivered, rejected, dead;
    _Atomic uint64_t retried[PB_RETRY_REASON_COUNT];
    _Atomic int64_t pending, inflight, oldest_ms;
    pb_histo_t latency;
    pb_histo_t e2e;
};

struct pb_metrics {
    pthread_mutex_t lock;
    pb_mconn_t **conns;
    size_t conn_count, conn_cap;
    pb_mhop_t **hops;
    size_t hop_count, hop_cap;

    pb_histo_t commit;
    pb_histo_t batch;
    _Atomic int64_t journal_size;
    atomic_bool journal_ok;

    /* sampler, under lock */
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool stop;
    int64_t interval_ms;
    pb_metrics_snap_t *ring; /* keep entries, oldest at ring_head */
    size_t keep, ring_count, ring_head;
};

/* ------------------------------------------------------------------ */
/* Histograms                                                          */
/* ------------------------------------------------------------------ */

void
pb_histo_init(pb_histo_t *h, const pb_histo_spec_t *spec)
{
    memset(h, 0, sizeof *h);
    h->spec = spec;
}

void
pb_histo_observe(pb_histo_t *h, uint64_t value)
{
    const pb_histo_spec_t *spec = h->spec;
    size_t lo = 0, hi = spec->count; /* first bound >= value */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (spec->bounds[mid] < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    atomic_fetch_add_explicit(&h->counts[lo], 1, S_RELAXED);
    atomic_fetch_add_explicit(&h->sum, value, S_RELAXED);
}

uint64_t
pb_histo_count(const pb_histo_t *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= h->spec->count; i++)
        n += atomic_load_explicit(&h->counts[i], S_RELAXED);
    return n;
}

double
pb_histo_quantile(const pb_histo_t *h, double q)
{
    uint64_t counts[PB_HISTO_MAX_BOUNDS + 1], total = 0;
    size_t n = h->spec->count;
    for (size_t i = 0; i <= n; i++)
        total += counts[i] = atomic_load_explicit(&h->counts[i], S_RELAXED);
    if (total == 0)
        return 0;
    double rank = q * (double)total, seen = 0;
    for (size_t i = 0; i <= n; i++) {
        if (counts[i] == 0 || seen + (double)counts[i] < rank) {
            seen += (double)counts[i];
            continue;
        }
        double lower = i ? (double)h->spec->bounds[i - 1] : 0;
        if (i == n)
            return lower * h->spec->scale;
        double upper = (double)h->spec->bounds[i];
        double frac = (rank - seen) / (double)counts[i];
        return (lower + (upper - lower) * frac) * h->spec->scale;
    }
    return (double)h->spec->bounds[n - 1] * h->spec->scale;
}

/* ------------------------------------------------------------------ */
/* Registry                                                            */
/* ------------------------------------------------------------------ */

int64_t
pb_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
pb_metrics_now_us(void)
{
    return pb_metrics_now_ns() / 1000;
}

pb_metrics_t *
pb_metrics_new(void)
{
    pb_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    pb_histo_init(&m->commit, &pb_histo_latency);
    pb_histo_init(&m->batch, &pb_histo_batch);
    atomic_store(&m->journal_ok, true);
    return m;
}

static void
s_ring_clear(pb_metrics_t *m)
{
    for (size_t i = 0; i < m->ring_count; i++)
        pb_metrics_snap_release(&m->ring[(m->ring_head + i) % m->keep]);
    free(m->ring);
    m->ring = NULL;
    m->ring_count = m->ring_head = 0;
}

void
pb_metrics_destroy(pb_metrics_t **mp)
{
    if (!mp || !*mp)
        return;
    pb_metrics_t *m = *mp;
    *mp = NULL;
    if (m->started) {
        pthread_mutex_lock(&m->lock);
        m->stop = true;
        pthread_cond_signal(&m->cond);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->thread, NULL);
    }
    s_ring_clear(m);
    for (size_t i = 0; i < m->conn_count; i++) {
        free(m->conns[i]->name);
        free(m->conns[i]->plugin);
        free(m->conns[i]->version);
        pthread_mutex_destroy(&m->conns[i]->custom_lock);
        free(m->conns[i]);
    }
    for (size_t i = 0; i < m->hop_count; i++) {
        free(m->hops[i]->route);
        free(m->hops[i]->connector);
        free(m->hops[i]);
    }
    free(m->conns);
    free(m->hops);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Make room for one more pointer in *arr; false when out of memory. */
static bool
s_reserve(void ***arr, size_t count, size_t *cap)
{
    if (count < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    void **n = realloc(*arr, ncap * sizeof *n);
    if (!n)
        return false;
    *arr = n;
    *cap = ncap;
    return true;
}

pb_mconn_t *
pb_metrics_connector(pb_metrics_t *m, const char *name)
{
    if (!m || !name)
        return NULL;
    pthread_mutex_lock(&m->lock);
    pb_mconn_t *c = NULL;
    for (size_t i = 0; i < m->conn_count && !c; i++)
        if (strcmp(m->conns[i]->name, name) == 0)
            c = m->conns[i];
    if (!c && s_reserve((void ***)&m->conns, m->conn_count, &m->conn_cap) &&
        (c = calloc(1, sizeof *c))) {
        if ((c->name = strdup(name))) {
            atomic_store(&c->workers, 1);
            pthread_mutex_init(&c->custom_lock, NULL);
            m->conns[m->conn_count++] = c;
        } else {
            free(c);
            c = NULL;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return c;
}

pb_mhop_t *
pb_metrics_hop(pb_metrics_t *m, const char *route, const char *connector)
{
    if (!m || !route || !connector)
        return NULL;
    pthread_mutex_lock(&m->lock);
    pb_mhop_t *h = NULL;
    for (size_t i = 0; i < m->hop_count && !h; i++)
        if (strcmp(m->hops[i]->route, route) == 0 &&
            strcmp(m->hops[i]->connector, connector) == 0)
            h = m->hops[i];
    if (!h && s_reserve((void ***)&m->hops, m->hop_count, &m->hop_cap) &&
        (h = calloc(1, sizeof *h))) {
        h->route = strdup(route);
        h->connector = strdup(connector);
        pb_histo_init(&h->latency, &pb_histo_latency);
        pb_histo_init(&h->e2e, &pb_histo_latency);
        if (h->route && h->connector) {
            m->hops[m->hop_count++] = h;
        } else {
            free(h->route);
            free(h->connector);
            free(h);
            h = NULL;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return h;
}

/* The registry a series belongs to is not known to the series: describe
 * strings are swapped under a lock of their own. */
static pthread_mutex_t s_describe_lock = PTHREAD_MUTEX_INITIALIZER;

void
pb_mconn_describe(pb_mconn_t *c, const char *plugin, const char *version)
{
    if (!c)
        return;
    char *p = plugin ? strdup(plugin) : NULL;
    char *v = version ? strdup(version) : NULL;
    pthread_mutex_lock(&s_describe_lock);
    free(c->plugin);
    free(c->version);
    c->plugin = p;
    c->version = v;
    pthread_mutex_unlock(&s_describe_lock);
}

/* ---- updates ------------------------------------------------------- */

#define S_ADD(field, n) atomic_fetch_add_explicit(&(field), (n), S_RELAXED)

void
pb_mconn_running(pb_mconn_t *c, int delta)
{
    if (c)
        atomic_fetch_add(&c->running, delta);
}

void
pb_mconn_set_workers(pb_mconn_t *c, int workers)
{
    if (c)
        atomic_store(&c->workers, workers > 0 ? workers : 1);
}

void
pb_mconn_busy(pb_mconn_t *c, int64_t ns)
{
    if (c && ns > 0)
        S_ADD(c->busy_ns, (uint64_t)ns);
}

void
pb_mconn_delivery_received(pb_mconn_t *c)
{
    if (c)
        S_ADD(c->deliveries, 1);
}

void
pb_mconn_webhook(pb_mconn_t *c, int status)
{
    if (!c)
        return;
    S_ADD(c->webhooks, 1);
    int cls = status / 100 - 2;
    if (cls < 0 || cls >= S_CLASSES)
        cls = S_CLASSES - 1; /* nonsense status: the host answers 5xx */
    S_ADD(c->answers[cls], 1);
}

void
pb_mconn_emitted(pb_mconn_t *c, uint64_t accepted, uint64_t duplicates)
{
    if (!c)
        return;
    S_ADD(c->emitted, accepted);
    S_ADD(c->duplicates, duplicates);
}

void
pb_mconn_unmapped(pb_mconn_t *c, uint64_t n)
{
    if (c)
        S_ADD(c->unmapped, n);
}

/* ---- custom counters ----------------------------------------------- */

bool
pb_metrics_custom_name_ok(const char *name)
{
    if (!name)
        return false;
    size_t n = 0;
    for (; name[n]; n++) {
        char ch = name[n];
        if (n >= PB_CUSTOM_NAME_MAX || !((ch >= 'a' && ch <= 'z') ||
                                         (ch >= '0' && ch <= '9') || ch == '_'))
            return false;
    }
    return n > 0;
}

/* The first name of a kind of misuse, logged once per connector: shown
 * cut and with anything outside [a-z0-9_] as '?', since it is what the
 * plugin should not have sent. */
static void
s_custom_drop(pb_mconn_t *c, unsigned kind, const char *name, uint64_t n)
{
    S_ADD(c->custom_dropped, n);
    unsigned before = atomic_fetch_or(&c->custom_warned, kind);
    if (before & kind)
        return;
    char shown[PB_CUSTOM_NAME_MAX + 1] = "";
    for (size_t i = 0; name && name[i] && i < PB_CUSTOM_NAME_MAX; i++) {
        char ch = name[i];
        bool ok =
            (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
        shown[i] = ok ? ch : '?';
        shown[i + 1] = '\0';
    }
    const char *why = kind == PB_CUSTOM_DROP_BAD_NAME
                          ? "its name is not [a-z0-9_]{1,63}"
                      : kind == PB_CUSTOM_DROP_NEGATIVE
                          ? "a negative delta (counters only go up)"
                          : "the connector would have more than 32 names";
    if (name)
        pb_warn("metrics",
                "connector=%s custom counter '%s' dropped: %s; further drops "
                "of this kind are only counted in "
                "plugboard_connector_custom_dropped_total",
                c->name, shown, why);
    else
        pb_warn("metrics",
                "connector=%s custom counter dropped by its worker: %s; "
                "further drops of this kind are only counted in "
                "plugboard_connector_custom_dropped_total",
                c->name, why);
}

/* The published slot of name, or NULL. */
static custom_t *
s_custom_find(pb_mconn_t *c, const char *name, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (strcmp(c->custom[i].name, name) == 0)
            return &c->custom[i];
    return NULL;
}

int
pb_mconn_custom(pb_mconn_t *c, const char *name, int64_t delta)
{
    if (!c)
        return 0;
    if (!pb_metrics_custom_name_ok(name)) {
        s_custom_drop(c, PB_CUSTOM_DROP_BAD_NAME, name ? name : "(null)", 1);
        return PB_EINVAL;
    }
    if (delta < 0) {
        s_custom_drop(c, PB_CUSTOM_DROP_NEGATIVE, name, 1);
        return PB_ERANGE;
    }
    size_t n = atomic_load_explicit(&c->custom_count, memory_order_acquire);
    custom_t *slot = s_custom_find(c, name, 0, n);
    if (!slot) {
        pthread_mutex_lock(&c->custom_lock);
        size_t now = atomic_load_explicit(&c->custom_count, S_RELAXED);
        slot = s_custom_find(c, name, n, now); /* another thread's */
        if (!slot && now < PB_CUSTOM_MAX) {
            slot = &c->custom[now];
            snprintf(slot->name, sizeof slot->name, "%s", name);
            atomic_store_explicit(&slot->value, 0, S_RELAXED);
            atomic_store_explicit(&c->custom_count, now + 1,
                                  memory_order_release);
        }
        pthread_mutex_unlock(&c->custom_lock);
    }
    if (!slot) {
        s_custom_drop(c, PB_CUSTOM_DROP_TOO_MANY, name, 1);
        return PB_EFULL;
    }
    S_ADD(slot->value, (uint64_t)delta);
    return 0;
}

void
pb_mconn_custom_dropped(pb_mconn_t *c, uint64_t n, unsigned causes)
{
    if (!c || n == 0)
        return;
    unsigned kinds[] = {PB_CUSTOM_DROP_BAD_NAME, PB_CUSTOM_DROP_NEGATIVE,
                        PB_CUSTOM_DROP_TOO_MANY};
    bool counted = false;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        if (!(causes & kinds[i]))
            continue;
        s_custom_drop(c, kinds[i], NULL, counted ? 0 : n);
        counted = true;
    }
    if (!counted)
        S_ADD(c->custom_dropped, n);
}

void
pb_mhop_received(pb_mhop_t *h)
{
    if (h)
        S_ADD(h->received, 1);
}

void
pb_mhop_pending_add(pb_mhop_t *h, int64_t delta)
{
    if (h && S_ADD(h->pending, delta) + delta <= 0)
        atomic_store_explicit(&h->oldest_ms, 0, S_RELAXED); /* none left */
}

void
pb_mhop_inflight_add(pb_mhop_t *h, int64_t delta)
{
    if (h)
        S_ADD(h->inflight, delta);
}

void
pb_mhop_attempt(pb_mhop_t *h, int64_t latency_us)
{
    if (!h)
        return;
    S_ADD(h->attempts, 1);
    pb_histo_observe(&h->latency, latency_us > 0 ? (uint64_t)latency_us : 0);
}

void
pb_mhop_delivered(pb_mhop_t *h, int64_t end_to_end_ms)
{
    if (!h)
        return;
    S_ADD(h->delivered, 1);
    pb_histo_observe(&h->e2e,
                     end_to_end_ms > 0 ? (uint64_t)end_to_end_ms * 1000 : 0);
}

void
pb_mhop_retried(pb_mhop_t *h, pb_retry_reason_t reason)
{
    if (h && reason >= 0 && reason < PB_RETRY_REASON_COUNT)
        S_ADD(h->retried[reason], 1);
}

void
pb_mhop_rejected(pb_mhop_t *h)
{
    if (h)
        S_ADD(h->rejected, 1);
}

void
pb_mhop_dead(pb_mhop_t *h)
{
    if (h)
        S_ADD(h->dead, 1);
}

void
pb_mhop_set_oldest(pb_mhop_t *h, int64_t age_ms)
{
    if (h)
        atomic_store_explicit(&h->oldest_ms, age_ms > 0 ? age_ms : 0,
                              S_RELAXED);
}

void
pb_metrics_commit(pb_metrics_t *m, int64_t latency_us, size_t batch, bool ok)
{
    if (!m)
        return;
    if (ok) {
        pb_histo_observe(&m->commit, latency_us > 0 ? (uint64_t)latency_us : 0);
        pb_histo_observe(&m->batch, batch);
    }
    atomic_store(&m->journal_ok, ok);
}

void
pb_metrics_set_journal_size(pb_metrics_t *m, int64_t bytes)
{
    if (m)
        atomic_store_explicit(&m->journal_size, bytes, S_RELAXED);
}

bool
pb_metrics_journal_writable(pb_metrics_t *m)
{
    return !m || atomic_load(&m->journal_ok);
}

bool
pb_metrics_all_up(pb_metrics_t *m, char *out, size_t out_len)
{
    if (out_len)
        out[0] = '\0';
    if (!m)
        return true;
    bool all = true;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->conn_count && all; i++)
        if (atomic_load(&m->conns[i]->running) <= 0) {
            all = false;
            snprintf(out, out_len, "%s", m->conns[i]->name);
        }
    pthread_mutex_unlock(&m->lock);
    return all;
}

/* ------------------------------------------------------------------ */
/* Text rendering                                                      */
/* ------------------------------------------------------------------ */

typedef struct s_buf {
    char *data;
    size_t len, cap;
    bool failed;
} buf_t;

static void s_printf(buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
s_printf(buf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n;
        char *d = realloc(b->data, ncap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = ncap;
    }
}

/* Length of the valid UTF-8 sequence at p (at most left bytes), or 0. */
static size_t
s_utf8_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

size_t
pb_metrics_escape_label(const char *v, char *buf, size_t cap)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)(v ? v : "");
    size_t left = strlen((const char *)p);
    if (cap == 0)
        return 0;
    while (left) {
        char tmp[4];
        const char *out = tmp;
        size_t n = 1, consumed = 1;
        if (*p == '\\' || *p == '"') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            n = 2;
        } else if (*p == '\n') {
            memcpy(tmp, "\\n", 2);
            n = 2;
        } else if ((consumed = s_utf8_len(p, left)) == 0) {
            out = "\xEF\xBF\xBD"; /* U+FFFD for a byte that is not UTF-8 */
            n = 3;
            consumed = 1;
        } else {
            out = (const char *)p;
            n = consumed;
        }
        if (o + n >= cap)
            break;
        memcpy(buf + o, out, n);
        o += n;
        p += consumed;
        left -= consumed;
    }
    buf[o] = '\0';
    return o;
}

/* Label set {k1="v1",k2="v2"} from NULL-terminated key, value pairs; the
 * extra text (already formatted, e.g. le="0.5") goes last. */
static void
s_labels(char *out, size_t cap, const char *extra, ...)
{
    size_t o = 0;
    va_list ap;
    va_start(ap, extra);
    const char *k;
    out[0] = '\0';
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        char esc[512];
        pb_metrics_escape_label(v, esc, sizeof esc);
        int n =
            snprintf(out + o, cap - o, "%s%s=\"%s\"", o ? "," : "{", k, esc);
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
    va_end(ap);
    if (extra && o < cap) {
        int n = snprintf(out + o, cap - o, "%s%s", o ? "," : "{", extra);
        if (n > 0 && (size_t)n < cap - o)
            o += (size_t)n;
    }
    if (o && o + 1 < cap) {
        out[o++] = '}';
        out[o] = '\0';
    }
}

static void
s_family(buf_t *b, const char *name, const char *type, const char *help)
{
    s_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
s_histo(buf_t *b, const char *name, const pb_histo_t *h, const char *k1,
        const char *v1, const char *k2, const char *v2)
{
    char labels[1200], le[64];
    uint64_t cum = 0;
    const pb_histo_spec_t *spec = h->spec;
    for (size_t i = 0; i <= spec->count; i++) {
        cum += atomic_load_explicit(&h->counts[i], S_RELAXED);
        if (i < spec->count)
            snprintf(le, sizeof le, "le=\"%.6g\"",
                     (double)spec->bounds[i] * spec->scale);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        s_labels(labels, sizeof labels, le, k1, v1, k2, v2, NULL);
        s_printf(b, "%s_bucket%s %" PRIu64 "\n", name, labels, cum);
    }
    s_labels(labels, sizeof labels, NULL, k1, v1, k2, v2, NULL);
    double sum = (double)atomic_load_explicit(&h->sum, S_RELAXED) * spec->scale;
    s_printf(b, "%s_sum%s %.9g\n", name, labels, sum);
    s_printf(b, "%s_count%s %" PRIu64 "\n", name, labels, cum);
}

static void
s_render_host(buf_t *b, pb_metrics_t *m, const pb_metrics_host_t *host)
{
    char l[256];
    s_family(b, "plugboard_build_info", "gauge",
             "The running plugboard version (always 1).");
    s_labels(l, sizeof l, NULL, "version", host->version, NULL);
    s_printf(b, "plugboard_build_info%s 1\n", l);
    s_family(b, "plugboard_start_time_seconds", "gauge",
             "When the host started, in seconds since the epoch.");
    s_printf(b, "plugboard_start_time_seconds %.3f\n",
             (double)host->start_time_ms / 1000.0);
    s_family(b, "plugboard_ready", "gauge",
             "1 when the host is ready (config loaded, journal writable, "
             "every connector running).");
    s_printf(b, "plugboard_ready %d\n", host->ready ? 1 : 0);
    s_family(b, "plugboard_events_accepted_total", "counter",
             "Events written to the journal.");
    s_printf(b, "plugboard_events_accepted_total %" PRIu64 "\n",
             host->accepted);
    s_family(b, "plugboard_events_duplicate_total", "counter",
             "Events refused because their id was accepted before.");
    s_printf(b, "plugboard_events_duplicate_total %" PRIu64 "\n",
             host->duplicates);
    s_family(b, "plugboard_events_unrouted_total", "counter",
             "Accepted events that no route matched.");
    s_printf(b, "plugboard_events_unrouted_total %" PRIu64 "\n",
             host->unrouted);
    s_family(b, "plugboard_malformed_inputs_total", "counter",
             "Inputs refused before they became events, by reason.");
    const struct {
        const char *reason;
        uint64_t v;
    } mal[] = {
        {"bad_frame", host->bad_frames},
        {"bad_request", host->http_bad_request},
        {"too_large", host->http_too_large},
        {"aborted", host->http_aborted},
    };
    for (size_t i = 0; i < sizeof mal / sizeof *mal; i++) {
        s_labels(l, sizeof l, NULL, "reason", mal[i].reason, NULL);
        s_printf(b, "plugboard_malformed_inputs_total%s %" PRIu64 "\n", l,
                 mal[i].v);
    }
    s_family(b, "plugboard_http_requests_total", "counter",
             "HTTP requests received by the listener.");
    s_printf(b, "plugboard_http_requests_total %" PRIu64 "\n",
             host->http_requests);
    s_family(b, "plugboard_journal_commit_seconds", "histogram",
             "Time to commit one group of journal writes.");
    s_histo(b, "plugboard_journal_commit_seconds", &m->commit, NULL, NULL, NULL,
            NULL);
    s_family(b, "plugboard_journal_batch_size", "histogram",
             "Messages (emits and results) written in one commit.");
    s_histo(b, "plugboard_journal_batch_size", &m->batch, NULL, NULL, NULL,
            NULL);
    s_family(b, "plugboard_journal_errors_total", "counter",
             "Journal transactions that failed.");
    s_printf(b, "plugboard_journal_errors_total %" PRIu64 "\n",
             host->journal_errors);
    s_family(b, "plugboard_journal_size_bytes", "gauge",
             "Bytes the journal uses on disk (database and WAL).");
    s_printf(b, "plugboard_journal_size_bytes %" PRId64 "\n",
             atomic_load_explicit(&m->journal_size, S_RELAXED));
    s_family(b, "plugboard_journal_writable", "gauge",
             "1 when the last journal commit succeeded.");
    s_printf(b, "plugboard_journal_writable %d\n",
             atomic_load(&m->journal_ok) ? 1 : 0);
}

/* One connector counter family, read through an accessor. */
typedef uint64_t (*conn_get_fn)(const pb_mconn_t *c);

static uint64_t
s_c_emitted(const pb_mconn_t *c)
{
    return atomic_load_explicit(&c->emitted, S_RELAXED);
}

static uint64_t
s_c_duplicates(const pb_mconn_t *c)
{
    return atomic_load_explicit(&c->duplicates, S_RELAXED);
}

static uint64_t
s_c_unmapped(const pb_mconn_t *c)
{
    return atomic_load_explicit(&c->unmapped, S_RELAXED);
}

static uint64_t
s_c_custom_dropped(const pb_mconn_t *c)
{
    return atomic_load_explicit(&c->custom_dropped, S_RELAXED);
}

static void
s_conn_counter(buf_t *b, pb_metrics_t *m, const char *name, const char *help,
               conn_get_fn get)
{
    char l[256];
    s_family(b, name, "counter", help);
    for (size_t i = 0; i < m->conn_count; i++) {
        s_labels(l, sizeof l, NULL, "connector", m->conns[i]->name, NULL);
        s_printf(b, "%s%s %" PRIu64 "\n", name, l, get(m->conns[i]));
    }
}

static void
s_render_connectors(buf_t *b, pb_metrics_t *m)
{
    char l[1200];
    s_family(b, "plugboard_connector_info", "gauge",
             "The plugin and version each connector runs (always 1).");
    pthread_mutex_lock(&s_describe_lock);
    for (size_t i = 0; i < m->conn_count; i++) {
        const pb_mconn_t *c = m->conns[i];
        s_labels(l, sizeof l, NULL, "connector", c->name, "plugin",
                 c->plugin ? c->plugin : "", "version",
                 c->version ? c->version : "", NULL);
        s_printf(b, "plugboard_connector_info%s 1\n", l);
    }
    pthread_mutex_unlock(&s_describe_lock);
    s_family(b, "plugboard_connector_up", "gauge",
             "1 while the connector's plugin is open and running.");
    for (size_t i = 0; i < m->conn_count; i++) {
        s_labels(l, sizeof l, NULL, "connector", m->conns[i]->name, NULL);
        s_printf(b, "plugboard_connector_up%s %d\n", l,
                 atomic_load(&m->conns[i]->running) > 0 ? 1 : 0);
    }
    s_family(b, "plugboard_connector_workers", "gauge",
             "Deliver calls the connector can run at once.");
    for (size_t i = 0; i < m->conn_count; i++) {
        s_labels(l, sizeof l, NULL, "connector", m->conns[i]->name, NULL);
        s_printf(b, "plugboard_connector_workers%s %d\n", l,
                 atomic_load(&m->conns[i]->workers));
    }
    s_family(b, "plugboard_connector_received_total", "counter",
             "Deliveries and webhook requests handed to the connector.");
    for (size_t i = 0; i < m->conn_count; i++) {
        const pb_mconn_t *c = m->conns[i];
        s_labels(l, sizeof l, NULL, "connector", c->name, "kind", "delivery",
                 NULL);
        s_printf(b, "plugboard_connector_received_total%s %" PRIu64 "\n", l,
                 atomic_load_explicit(&c->deliveries, S_RELAXED));
        s_labels(l, sizeof l, NULL, "connector", c->name, "kind", "webhook",
                 NULL);
        s_printf(b, "plugboard_connector_received_total%s %" PRIu64 "\n", l,
                 atomic_load_explicit(&c->webhooks, S_RELAXED));
    }
    s_family(b, "plugboard_connector_webhook_responses_total", "counter",
             "Webhook requests by the status class the connector chose.");
    for (size_t i = 0; i < m->conn_count; i++)
        for (size_t k = 0; k < S_CLASSES; k++) {
            s_labels(l, sizeof l, NULL, "connector", m->conns[i]->name, "class",
                     s_classes[k], NULL);
            s_printf(
                b,
                "plugboard_connector_webhook_responses_total%s %" PRIu64 "\n",
                l, atomic_load_explicit(&m->conns[i]->answers[k], S_RELAXED));
        }
    s_conn_counter(b, m, "plugboard_connector_emitted_total",
                   "Events the connector emitted that were accepted.",
                   s_c_emitted);
    s_conn_counter(b, m, "plugboard_connector_duplicates_total",
                   "Events the connector emitted that were duplicates.",
                   s_c_duplicates);
    s_conn_counter(b, m, "plugboard_connector_unmapped_total",
                   "Verified vendor items the connector could not map, "
                   "kept as dead letters of the (ingress) route.",
                   s_c_unmapped);
    s_family(b, "plugboard_connector_custom_total", "counter",
             "What the connector counted itself (api->count), by name.");
    for (size_t i = 0; i < m->conn_count; i++) {
        pb_mconn_t *c = m->conns[i];
        size_t n = atomic_load_explicit(&c->custom_count, memory_order_acquire);
        for (size_t k = 0; k < n; k++) {
            s_labels(l, sizeof l, NULL, "connector", c->name, "name",
                     c->custom[k].name, NULL);
            s_printf(b, "plugboard_connector_custom_total%s %" PRIu64 "\n", l,
                     atomic_load_explicit(&c->custom[k].value, S_RELAXED));
        }
    }
    s_conn_counter(b, m, "plugboard_connector_custom_dropped_total",
                   "Counts the connector made that were dropped: a name not "
                   "[a-z0-9_]{1,63}, a negative delta, or past 32 names.",
                   s_c_custom_dropped);
    s_family(b, "plugboard_connector_busy_seconds_total", "counter",
             "Time spent inside the connector's deliver and webhook "
             "callbacks.");
    for (size_t i = 0; i < m->conn_count; i++) {
        s_labels(l, sizeof l, NULL, "connector", m->conns[i]->name, NULL);
        s_printf(
            b, "plugboard_connector_busy_seconds_total%s %.9f\n", l,
            (double)atomic_load_explicit(&m->conns[i]->busy_ns, S_RELAXED) /
                1e9);
    }
}

/* Hop families: counters and gauges read through an offset. */
typedef struct s_hopfam {
    const char *name;
    const char *type;
    const char *help;
    size_t offset; /* of an _Atomic uint64_t or int64_t */
    bool is_signed;
    double scale; /* gauges in ms rendered as seconds */
} hopfam_t;

static const hopfam_t s_hop_families[] = {
    {"plugboard_route_received_total", "counter",
     "Deliveries the route created for this destination.",
     offsetof(pb_mhop_t, received), false, 0},
    {"plugboard_route_delivered_total", "counter",
     "Deliveries the destination accepted.", offsetof(pb_mhop_t, delivered),
     false, 0},
    {"plugboard_route_rejected_total", "counter",
     "Deliveries the destination refused permanently.",
     offsetof(pb_mhop_t, rejected), false, 0},
    {"plugboard_route_dead_total", "counter",
     "Deliveries that became dead letters.", offsetof(pb_mhop_t, dead), false,
     0},
    {"plugboard_route_pending", "gauge",
     "Deliveries not yet delivered or dead (the backlog).",
     offsetof(pb_mhop_t, pending), true, 0},
    {"plugboard_route_inflight", "gauge",
     "Deliveries handed to the destination and not answered yet.",
     offsetof(pb_mhop_t, inflight), true, 0},
    {"plugboard_route_oldest_pending_seconds", "gauge",
     "Age of the oldest pending delivery (0 when none).",
     offsetof(pb_mhop_t, oldest_ms), true, 1e-3},
};

static void
s_render_hops(buf_t *b, pb_metrics_t *m)
{
    char l[1200];
    for (size_t f = 0; f < sizeof s_hop_families / sizeof *s_hop_families;
         f++) {
        const hopfam_t *fam = &s_hop_families[f];
        s_family(b, fam->name, fam->type, fam->help);
        for (size_t i = 0; i < m->hop_count; i++) {
            pb_mhop_t *h = m->hops[i];
            s_labels(l, sizeof l, NULL, "route", h->route, "connector",
                     h->connector, NULL);
            const char *p = (const char *)h + fam->offset;
            if (!fam->is_signed) {
                s_printf(
                    b, "%s%s %" PRIu64 "\n", fam->name, l,
                    atomic_load_explicit((_Atomic uint64_t *)p, S_RELAXED));
                continue;
            }
            int64_t v = atomic_load_explicit((_Atomic int64_t *)p, S_RELAXED);
            if (v < 0)
                v = 0; /* a gauge read between two updates */
            if (fam->scale)
                s_printf(b, "%s%s %.3f\n", fam->name, l,
                         (double)v * fam->scale);
            else
                s_printf(b, "%s%s %" PRId64 "\n", fam->name, l, v);
        }
    }
    s_family(b, "plugboard_route_retried_total", "counter",
             "Delivery attempts that will be tried again, by reason.");
    for (size_t i = 0; i < m->hop_count; i++)
        for (int k = 0; k < PB_RETRY_REASON_COUNT; k++) {
            s_labels(l, sizeof l, NULL, "route", m->hops[i]->route, "connector",
                     m->hops[i]->connector, "reason", s_retry_reasons[k], NULL);
            s_printf(b, "plugboard_route_retried_total%s %" PRIu64 "\n", l,
                     atomic_load_explicit(&m->hops[i]->retried[k], S_RELAXED));
        }
    s_family(b, "plugboard_route_delivery_seconds", "histogram",
             "Time from handing a delivery to the destination to its "
             "answer.");
    for (size_t i = 0; i < m->hop_count; i++)
        s_histo(b, "plugboard_route_delivery_seconds", &m->hops[i]->latency,
                "route", m->hops[i]->route, "connector", m->hops[i]->connector);
    s_family(b, "plugboard_route_end_to_end_seconds", "histogram",
             "Time from accepting an event to its delivery.");
    for (size_t i = 0; i < m->hop_count; i++)
        s_histo(b, "plugboard_route_end_to_end_seconds", &m->hops[i]->e2e,
                "route", m->hops[i]->route, "connector", m->hops[i]->connector);
}

char *
pb_metrics_render(pb_metrics_t *m, const pb_metrics_host_t *host)
{
    buf_t b = {.cap = 16384};
    if (!m || !(b.data = malloc(b.cap)))
        return NULL;
    b.data[0] = '\0';
    s_render_host(&b, m, host);
    pthread_mutex_lock(&m->lock);
    s_render_connectors(&b, m);
    s_render_hops(&b, m);
    pthread_mutex_unlock(&m->lock);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* ------------------------------------------------------------------ */
/* Snapshots and the sampler                                           */
/* ------------------------------------------------------------------ */

int
pb_metrics_snapshot(pb_metrics_t *m, pb_metrics_snap_t *out)
{
    memset(out, 0, sizeof *out);
    if (!m)
        return PB_EINVAL;
    pthread_mutex_lock(&m->lock);
    out->t_ms = pb_metrics_now_ns() / 1000000;
    out->conns = calloc(m->conn_count ? m->conn_count : 1, sizeof *out->conns);
    out->hops = calloc(m->hop_count ? m->hop_count : 1, sizeof *out->hops);
    if (!out->conns || !out->hops) {
        pthread_mutex_unlock(&m->lock);
        pb_metrics_snap_release(out);
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < m->conn_count; i++) {
        const pb_mconn_t *c = m->conns[i];
        pb_mconn_snap_t *s = &out->conns[i];
        s->name = c->name;
        s->busy_ns = atomic_load_explicit(&c->busy_ns, S_RELAXED);
        s->deliveries = atomic_load_explicit(&c->deliveries, S_RELAXED);
        s->webhooks = atomic_load_explicit(&c->webhooks, S_RELAXED);
        s->emitted = atomic_load_explicit(&c->emitted, S_RELAXED);
        s->unmapped = atomic_load_explicit(&c->unmapped, S_RELAXED);
        s->workers = atomic_load(&c->workers);
        s->up = atomic_load(&c->running) > 0;
    }
    out->conn_count = m->conn_count;
    for (size_t i = 0; i < m->hop_count; i++) {
        const pb_mhop_t *h = m->hops[i];
        pb_mhop_snap_t *s = &out->hops[i];
        s->route = h->route;
        s->connector = h->connector;
        s->received = atomic_load_explicit(&h->received, S_RELAXED);
        s->attempts = atomic_load_explicit(&h->attempts, S_RELAXED);
        s->delivered = atomic_load_explicit(&h->delivered, S_RELAXED);
        s->rejected = atomic_load_explicit(&h->rejected, S_RELAXED);
        s->dead = atomic_load_explicit(&h->dead, S_RELAXED);
        for (int k = 0; k < PB_RETRY_REASON_COUNT; k++)
            s->retried[k] = atomic_load_explicit(&h->retried[k], S_RELAXED);
        s->pending = atomic_load_explicit(&h->pending, S_RELAXED);
        s->inflight = atomic_load_explicit(&h->inflight, S_RELAXED);
        s->oldest_ms = atomic_load_explicit(&h->oldest_ms, S_RELAXED);
        if (s->pending < 0)
            s->pending = 0;
        if (s->inflight < 0)
            s->inflight = 0;
        s->p50_ms = pb_histo_quantile(&h->latency, 0.5) * 1000.0;
        s->p99_ms = pb_histo_quantile(&h->latency, 0.99) * 1000.0;
    }
    out->hop_count = m->hop_count;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

void
pb_metrics_snap_release(pb_metrics_snap_t *s)
{
    if (!s)
        return;
    free(s->conns);
    free(s->hops);
    memset(s, 0, sizeof *s);
}

int
pb_metrics_snap_copy(const pb_metrics_snap_t *in, pb_metrics_snap_t *out)
{
    *out = *in;
    out->conns =
        calloc(in->conn_count ? in->conn_count : 1, sizeof *out->conns);
    out->hops = calloc(in->hop_count ? in->hop_count : 1, sizeof *out->hops);
    if (!out->conns || !out->hops) {
        pb_metrics_snap_release(out);
        return PB_ENOMEM;
    }
    if (in->conn_count)
        memcpy(out->conns, in->conns, in->conn_count * sizeof *in->conns);
    if (in->hop_count)
        memcpy(out->hops, in->hops, in->hop_count * sizeof *in->hops);
    return 0;
}

static void *
s_sampler(void *arg)
{
    pb_metrics_t *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (m->interval_ms % 1000) * 1000000;
        ts.tv_sec += m->interval_ms / 1000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        int rc = 0;
        while (!m->stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&m->cond, &m->lock, &ts);
        if (m->stop)
            break;
        pthread_mutex_unlock(&m->lock);
        pb_metrics_snap_t snap;
        int src = pb_metrics_snapshot(m, &snap);
        pthread_mutex_lock(&m->lock);
        if (src != 0)
            continue;
        size_t slot = (m->ring_head + m->ring_count) % m->keep;
        if (m->ring_count == m->keep) {
            pb_metrics_snap_release(&m->ring[m->ring_head]);
            m->ring_head = (m->ring_head + 1) % m->keep;
        } else {
            m->ring_count++;
        }
        m->ring[slot] = snap;
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int
pb_metrics_sampler_start(pb_metrics_t *m, int64_t interval_ms, size_t keep)
{
    if (!m || m->started || interval_ms <= 0 || keep < 2)
        return PB_EINVAL;
    m->ring = calloc(keep, sizeof *m->ring);
    if (!m->ring)
        return PB_ENOMEM;
    m->keep = keep;
    m->interval_ms = interval_ms;
    if (pthread_create(&m->thread, NULL, s_sampler, m) != 0) {
        free(m->ring);
        m->ring = NULL;
        return PB_EIO;
    }
    m->started = true;
    return 0;
}

int
pb_metrics_window(pb_metrics_t *m, int64_t window_ms, pb_metrics_snap_t *old,
                  pb_metrics_snap_t *now)
{
    memset(old, 0, sizeof *old);
    int rc = pb_metrics_snapshot(m, now);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&m->lock);
    const pb_metrics_snap_t *pick = NULL;
    for (size_t i = 0; i < m->ring_count && !pick; i++) {
        const pb_metrics_snap_t *s = &m->ring[(m->ring_head + i) % m->keep];
        if (now->t_ms - s->t_ms <= window_ms)
            pick = s;
    }
    if (!pick && m->ring_count) /* all older than the window: the newest */
        pick = &m->ring[(m->ring_head + m->ring_count - 1) % m->keep];
    rc =
        pick ? pb_metrics_snap_copy(pick, old) : pb_metrics_snap_copy(now, old);
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && !pick)
        rc = PB_ENOENT;
    if (rc != 0 && rc != PB_ENOENT) {
        pb_metrics_snap_release(now);
        return rc;
    }
    return rc;
}
