/*
 * plugin_check.c - the connector conformance checker (plugin_check.h).
 *
 * The parent process only reads the descriptor and binds settings: no
 * plugin code but its entry function runs in it.  Each group of checks
 * that calls into the plugin runs in a forked child, which reports lines
 * ("note TEXT", "result NAME STATUS TEXT") through a pipe.  In the child a
 * watchdog (ITIMER_REAL, default SIGALRM action) bounds every call, and
 * the crash signals are back at their default action, so a crash or a
 * hang ends the child and the parent reports it against the note the
 * child wrote last ("crashed (SIGSEGV) while delivering 'payment.failed'
 * with missing fields").
 *
 * The child opens the plugin with a host API table of its own: the host's
 * real functions behind wrappers that record which thread calls, which
 * settings are read with which type, api->alloc/free balance and what is
 * emitted.
 */
#define _GNU_SOURCE
#include "plugin_check.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "error.h"
#include "hostapi.h"
#include "http.h"
#include "loader.h"
#include "log.h"
#include "runtime.h"
#include "samples.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define S_ASAN 1
#endif
#ifdef S_ASAN
/* the sanitizer allocator's live bytes (sanitizer/allocator_interface.h,
 * which GCC does not ship); malloc statistics mean nothing under ASan */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#define S_CALL_DEADLINE_MS 10000   /* open, close, webhook */
#define S_RUN_STOP_MS 3000         /* run returning once asked to */
#define S_DELIVER_DEFAULT_MS 30000 /* the router's default deadline */
#define S_LINE_MAX 1024
#define S_WARMUP_CYCLES 5
#define S_THREAD_SETTLE_MS 2000 /* for ended threads to leave /proc */
#define S_INFLIGHT_WORKERS 4

const char pb_plugin_check_help[] =
    "usage: plugboard plugin-check PATH.so [--settings FILE] [--cycles N]\n"
    "                              [--verbose]\n"
    "\n"
    "Load a connector plugin and check that it conforms to the connector\n"
    "contract (docs/sdk.md): ABI and size, complete metadata, settings\n"
    "validated by the host before open, 100 open/close cycles without\n"
    "leaked memory, descriptors or threads, every consumed canonical type\n"
    "answered within its deadline, malformed events and requests answered\n"
    "rather than crashing, a clean close with deliveries in flight, a\n"
    "pull source's run that stops when asked, and\n"
    "the threading rules of the host API.  Plugin code runs in forked\n"
    "children, so a crash fails one check, not the checker.\n"
    "\n"
    "options:\n"
    "  --settings FILE   a libconfig file holding the settings to open the\n"
    "                    plugin with:  settings = { path = \"out.txt\"; };\n"
    "  --cycles N        open/close cycles for the leak check (default 100)\n"
    "  --verbose         show progress and the plugin's own log lines\n"
    "\n"
    "PATH.so is a file when it has a '/' or ends in .so (./notes.so,\n"
    "notes.so); a bare name (notes) is looked up in the default plugin\n"
    "directory.  Exit status: 0 when every check passed, 1 when any\n"
    "failed, 2 on a usage error.\n";

/* ------------------------------------------------------------------ */
/* The checker's state                                                 */
/* ------------------------------------------------------------------ */

typedef enum s_status {
    S_OK = 0,
    S_FAIL,
    S_SKIP,
    S_WARN,
} s_status_t;

static const char *const s_status_names[] = {"ok", "FAIL", "skip", "warn"};

typedef struct s_check {
    const pb_check_options_t *opt;
    FILE *out;
    char path[4096];
    void *handle;              /* our own dlopen, for the raw descriptor */
    plugboard_connector_t raw; /* the plugin's descriptor, as it says */
    pb_plugin_t *plugin;       /* the host loader's view */
    const plugboard_connector_t *desc;
    pb_raw_setting_t *given; /* --settings, unbound */
    size_t given_count;
    plugboard_settings_t *settings; /* bound; NULL when binding failed */
    int cycles;
    bool can_open; /* settings bound and open succeeded */
    unsigned passed, failed, skipped, warned;
} s_check_t;

/* What a child writes back. */
typedef struct s_child {
    int fd;
} s_child_t;

typedef void (*s_child_fn)(s_check_t *c, s_child_t *ch);

static void __attribute__((format(printf, 4, 5)))
s_result(s_check_t *c, s_status_t st, const char *name, const char *fmt, ...)
{
    char msg[S_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(c->out, "  %-4s  %-13s %s\n", s_status_names[st], name, msg);
    fflush(c->out);
    switch (st) {
    case S_OK:
        c->passed++;
        break;
    case S_FAIL:
        c->failed++;
        break;
    case S_SKIP:
        c->skipped++;
        break;
    case S_WARN:
        c->warned++;
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* Append "; text" (or "text") to buf. */
static void __attribute__((format(printf, 3, 4)))
s_add(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used + 3 >= len)
        return;
    if (used) {
        memcpy(buf + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static bool
s_name_ok(const char *name, bool dash)
{
    if (!name || !*name || strlen(name) > 63)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || (dash && *p == '-')))
            return false;
    return true;
}

/* Entries of a /proc/self directory, "." and ".." aside; -1 on error. */
static long
s_count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static long
s_threads(void)
{
    return s_count_dir("/proc/self/task");
}

/*
 * Threads of the process once those that have ended are gone, for a count
 * expected to be at most limit.  A joined thread can still be listed in
 * /proc/self/task for a moment: pthread_join returns when the kernel
 * clears the thread's id, a little before it removes the task.  So a count
 * above limit is read again until it drops, for up to S_THREAD_SETTLE_MS;
 * a thread that really outlives close stays and is counted.
 */
static long
s_threads_settled(long limit)
{
    long n = s_threads();
    int64_t until = pb_monotonic_ms() + S_THREAD_SETTLE_MS;
    while (n > limit && pb_monotonic_ms() < until) {
        usleep(1000);
        n = s_threads();
    }
    return n;
}

/* Descriptors open, not counting the one opendir uses to count them. */
static long
s_fds(void)
{
    long n = s_count_dir("/proc/self/fd");
    return n > 0 ? n - 1 : n;
}

/* Bytes the process has allocated and not freed. */
static size_t
s_heap_bytes(void)
{
#ifdef S_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
#endif
}

static int64_t
s_deliver_deadline(const s_check_t *c)
{
    return c->desc && c->desc->deliver_timeout_ms
               ? (int64_t)c->desc->deliver_timeout_ms
               : S_DELIVER_DEFAULT_MS;
}

static const char *
s_outcome_name(plugboard_outcome_t o)
{
    switch (o) {
    case PLUGBOARD_OK:
        return "ok";
    case PLUGBOARD_RETRY:
        return "retry";
    case PLUGBOARD_REJECT:
        return "reject";
    case PLUGBOARD_HOLD:
        return "hold";
    }
    return "invalid";
}

/* ------------------------------------------------------------------ */
/* The checker's host API table (used in children only)                */
/* ------------------------------------------------------------------ */

/* Thread the host called into: set around every callback. */
static _Thread_local bool s_in_call;
static const plugboard_connector_t *s_desc;
static const plugboard_host_api_t *s_real;
static plugboard_host_api_t s_api;
static plugboard_host_t s_host;
static bool s_verbose;

static atomic_uint s_foreign_calls;
static _Atomic(const char *) s_foreign_first;
static atomic_long s_api_blocks; /* api->alloc (and event_to_json) - free */
static atomic_uint s_setting_reads;
static atomic_bool s_stopping; /* emit answers PLUGBOARD_E_STOPPING */
static atomic_uint s_emitted;
static pthread_mutex_t s_note_lock = PTHREAD_MUTEX_INITIALIZER;
static char s_undeclared[512]; /* settings read but not declared */
static char s_mistyped[512];   /* settings read with another type */
static char s_bad_emits[512];  /* emitted types not declared */

/* Calls the host refuses where they were made (emit from open, a pull
 * source's calls outside run): the first one, and how many. */
static atomic_uint s_misused;
static _Atomic(const char *) s_misused_first;
static __thread bool s_in_open;

static void
s_misuse(const char *what)
{
    if (atomic_fetch_add(&s_misused, 1) == 0)
        atomic_store(&s_misused_first, what);
}

/* Functions a connector's own threads may call. */
static void
s_restricted(const char *fn)
{
    if (s_in_call)
        return;
    if (atomic_fetch_add(&s_foreign_calls, 1) == 0)
        atomic_store(&s_foreign_first, fn);
}

/* Add name to a ", "-separated list once. */
static void
s_note_name(char *list, size_t len, const char *name)
{
    pthread_mutex_lock(&s_note_lock);
    char quoted[160];
    snprintf(quoted, sizeof quoted, "'%s'", name);
    if (!strstr(list, quoted) && strlen(list) + strlen(quoted) + 3 < len) {
        if (*list)
            strcat(list, ", ");
        strcat(list, quoted);
    }
    pthread_mutex_unlock(&s_note_lock);
}

static const char *
s_setting_type_name(plugboard_setting_type_t t)
{
    switch (t) {
    case PLUGBOARD_SETTING_STRING:
        return "string";
    case PLUGBOARD_SETTING_INT:
        return "integer";
    case PLUGBOARD_SETTING_BOOL:
        return "bool";
    case PLUGBOARD_SETTING_DURATION:
        return "duration";
    }
    return "unknown";
}

/* A settings getter was called for name expecting one of two types. */
static void
s_setting_read(const char *fn, const char *name, plugboard_setting_type_t a,
               plugboard_setting_type_t b)
{
    s_restricted(fn);
    atomic_fetch_add(&s_setting_reads, 1);
    const plugboard_setting_spec_t *spec = NULL;
    for (size_t i = 0; name && s_desc->settings && s_desc->settings[i].name;
         i++)
        if (strcmp(s_desc->settings[i].name, name) == 0)
            spec = &s_desc->settings[i];
    if (!spec) {
        s_note_name(s_undeclared, sizeof s_undeclared, name ? name : "(null)");
        return;
    }
    if (a && spec->type != a && spec->type != b) {
        char what[160];
        snprintf(what, sizeof what, "%s (%s) with %s", name,
                 s_setting_type_name(spec->type), fn);
        s_note_name(s_mistyped, sizeof s_mistyped, what);
    }
}

static void
s_w_log(plugboard_host_t *host, plugboard_log_level_t level, const char *fmt,
        ...)
{
    if (!s_verbose)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "        plugin log: %s\n", msg);
}

static void *
s_w_alloc(size_t size)
{
    void *p = s_real->alloc(size);
    if (p)
        atomic_fetch_add(&s_api_blocks, 1);
    return p;
}

static void
s_w_free(void *ptr)
{
    if (ptr)
        atomic_fetch_sub(&s_api_blocks, 1);
    s_real->free(ptr);
}

static const char *
s_w_setting_string(const plugboard_settings_t *s, const char *name)
{
    s_setting_read("setting_string", name, PLUGBOARD_SETTING_STRING, 0);
    return s_real->setting_string(s, name);
}

static int64_t
s_w_setting_int(const plugboard_settings_t *s, const char *name)
{
    s_setting_read("setting_int", name, PLUGBOARD_SETTING_INT,
                   PLUGBOARD_SETTING_DURATION);
    return s_real->setting_int(s, name);
}

static bool
s_w_setting_bool(const plugboard_settings_t *s, const char *name)
{
    s_setting_read("setting_bool", name, PLUGBOARD_SETTING_BOOL, 0);
    return s_real->setting_bool(s, name);
}

static bool
s_w_setting_is_set(const plugboard_settings_t *s, const char *name)
{
    s_setting_read("setting_is_set", name, 0, 0);
    return s_real->setting_is_set(s, name);
}

/* Wrappers that only check the calling thread. */
#define S_WRAP(ret, fn, params, args)                                          \
    static ret s_w_##fn params                                                 \
    {                                                                          \
        s_restricted(#fn);                                                     \
        return s_real->fn args;                                                \
    }
#define S_WRAP_VOID(fn, params, args)                                          \
    static void s_w_##fn params                                                \
    {                                                                          \
        s_restricted(#fn);                                                     \
        s_real->fn args;                                                       \
    }

typedef const plugboard_event_t *s_ev_t;
S_WRAP(const char *, event_type, (s_ev_t ev), (ev))
S_WRAP(const char *, event_id, (s_ev_t ev), (ev))
S_WRAP(const char *, event_source, (s_ev_t ev), (ev))
S_WRAP(const char *, event_key, (s_ev_t ev), (ev))
S_WRAP(int64_t, event_time_ms, (s_ev_t ev), (ev))
S_WRAP(uint32_t, event_attempt, (s_ev_t ev), (ev))
S_WRAP(plugboard_value_kind_t, event_kind, (s_ev_t ev, const char *p), (ev, p))
S_WRAP(bool, event_string,
       (s_ev_t ev, const char *p, const char **o, size_t *l), (ev, p, o, l))
S_WRAP(bool, event_int, (s_ev_t ev, const char *p, int64_t *o), (ev, p, o))
S_WRAP(bool, event_bool, (s_ev_t ev, const char *p, bool *o), (ev, p, o))
S_WRAP(plugboard_builder_t *, builder_new,
       (plugboard_host_t * h, const char *t), (h, t))
S_WRAP(int, builder_set_key, (plugboard_builder_t * b, const char *k), (b, k))
S_WRAP(int, builder_set_dedupe_id, (plugboard_builder_t * b, const char *k),
       (b, k))
S_WRAP(int, builder_set_time_ms, (plugboard_builder_t * b, int64_t t), (b, t))
S_WRAP(int, builder_set_string,
       (plugboard_builder_t * b, const char *p, const char *v, size_t l),
       (b, p, v, l))
S_WRAP(int, builder_set_int,
       (plugboard_builder_t * b, const char *p, int64_t v), (b, p, v))
S_WRAP(int, builder_set_bool, (plugboard_builder_t * b, const char *p, bool v),
       (b, p, v))
S_WRAP(int, builder_set_null, (plugboard_builder_t * b, const char *p), (b, p))
S_WRAP(int, builder_set_json,
       (plugboard_builder_t * b, const char *p, const char *j, size_t l),
       (b, p, j, l))
S_WRAP_VOID(builder_discard, (plugboard_builder_t * *b), (b))
S_WRAP(int, emit, (plugboard_host_t * h, plugboard_builder_t **b), (h, b))
S_WRAP_VOID(respond, (plugboard_response_t * r, int s, const char *body),
            (r, s, body))
S_WRAP(const char *, request_header,
       (const plugboard_request_t *r, const char *n), (r, n))
S_WRAP_VOID(count, (plugboard_host_t * h, const char *n, int64_t d), (h, n, d))
/* ABI 1.1: the checker's handle keeps no record, only the thread check */
S_WRAP_VOID(auth_failed, (plugboard_host_t * h, const char *r), (h, r))
S_WRAP(size_t, event_count, (s_ev_t ev, const char *p), (ev, p))

static char *
s_w_event_to_json(const plugboard_event_t *ev)
{
    s_restricted("event_to_json");
    char *json = s_real->event_to_json(ev);
    if (json)
        atomic_fetch_add(&s_api_blocks, 1);
    return json;
}

/* The handle's emit: check the type against emits, then drop it. */
static int
s_capture(void *ctx, pb_builder_t *b)
{
    if (s_in_open) { /* as the host: nothing is emitted from open */
        s_misuse("emit from open");
        pb_builder_destroy(&b);
        return PLUGBOARD_E_INVALID;
    }
    uint8_t *frame = NULL;
    size_t len = 0;
    int rc = pb_builder_encode(b, &frame, &len);
    pb_builder_destroy(&b);
    if (rc != 0)
        return rc;
    char why[128];
    int err = 0;
    pb_envelope_t *env =
        pb_envelope_decode(frame, len, NULL, &err, why, sizeof why);
    free(frame);
    if (!env)
        return PB_EPROTO;
    const char *type = pb_envelope_type(env);
    /* a dead letter of an unmapped vendor item needs no declaring */
    bool declared = strcmp(type, PLUGBOARD_EV_INGRESS_UNMAPPED) == 0;
    for (size_t i = 0; s_desc->emits && s_desc->emits[i]; i++)
        declared = declared || strcmp(s_desc->emits[i], type) == 0;
    if (!declared)
        s_note_name(s_bad_emits, sizeof s_bad_emits, type);
    pb_envelope_destroy(&env);
    atomic_fetch_add(&s_emitted, 1);
    return atomic_load(&s_stopping) ? PB_ESTOPPING : 0;
}

static const pb_run_fns_t s_pc_run_fns; /* a pull source's calls, below */

static void
s_api_init(const plugboard_connector_t *desc)
{
    s_desc = desc;
    s_real = pb_host_api();
    s_api = *s_real;
    s_api.log = s_w_log;
    s_api.alloc = s_w_alloc;
    s_api.free = s_w_free;
    s_api.setting_string = s_w_setting_string;
    s_api.setting_int = s_w_setting_int;
    s_api.setting_bool = s_w_setting_bool;
    s_api.setting_is_set = s_w_setting_is_set;
    s_api.event_type = s_w_event_type;
    s_api.event_id = s_w_event_id;
    s_api.event_source = s_w_event_source;
    s_api.event_key = s_w_event_key;
    s_api.event_time_ms = s_w_event_time_ms;
    s_api.event_attempt = s_w_event_attempt;
    s_api.event_kind = s_w_event_kind;
    s_api.event_string = s_w_event_string;
    s_api.event_int = s_w_event_int;
    s_api.event_bool = s_w_event_bool;
    s_api.event_to_json = s_w_event_to_json;
    s_api.builder_new = s_w_builder_new;
    s_api.builder_set_key = s_w_builder_set_key;
    s_api.builder_set_dedupe_id = s_w_builder_set_dedupe_id;
    s_api.builder_set_time_ms = s_w_builder_set_time_ms;
    s_api.builder_set_string = s_w_builder_set_string;
    s_api.builder_set_int = s_w_builder_set_int;
    s_api.builder_set_bool = s_w_builder_set_bool;
    s_api.builder_set_null = s_w_builder_set_null;
    s_api.builder_set_json = s_w_builder_set_json;
    s_api.builder_discard = s_w_builder_discard;
    s_api.emit = s_w_emit;
    s_api.respond = s_w_respond;
    s_api.request_header = s_w_request_header;
    s_api.count = s_w_count;
    s_api.auth_failed = s_w_auth_failed;
    s_api.event_count = s_w_event_count;
    pb_host_init(&s_host, desc->name, s_capture, NULL, NULL);
    pb_host_on_run(&s_host, &s_pc_run_fns); /* refuses outside run */
}

/* ------------------------------------------------------------------ */
/* Children: reporting, watchdog, calls into the plugin                */
/* ------------------------------------------------------------------ */

static void
s_child_write(s_child_t *ch, const char *line)
{
    size_t len = strlen(line);
    while (len > 0) {
        ssize_t n = write(ch->fd, line, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        line += n;
        len -= (size_t)n;
    }
}

static void __attribute__((format(printf, 2, 3)))
s_note(s_child_t *ch, const char *fmt, ...)
{
    char line[S_LINE_MAX];
    int n = snprintf(line, sizeof line, "note ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++)
        if (*p == '\n')
            *p = ' ';
    strcat(line, "\n");
    s_child_write(ch, line);
}

static void __attribute__((format(printf, 4, 5)))
s_report(s_child_t *ch, const char *name, s_status_t st, const char *fmt, ...)
{
    char line[S_LINE_MAX];
    int n = snprintf(line, sizeof line, "result %s %d ", name, (int)st);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++)
        if (*p == '\n')
            *p = ' ';
    strcat(line, "\n");
    s_child_write(ch, line);
}

/* Arm the watchdog: SIGALRM (default action: the child ends) after ms. */
static void
s_arm(int64_t ms)
{
    struct itimerval t = {0};
    t.it_value.tv_sec = (time_t)(ms / 1000);
    t.it_value.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    setitimer(ITIMER_REAL, &t, NULL);
}

static void
s_disarm(void)
{
    struct itimerval t = {0};
    setitimer(ITIMER_REAL, &t, NULL);
}

/* What the parent prints when the watchdog fires during the next call. */
static void
s_expect(s_child_t *ch, int64_t ms, const char *what)
{
    s_note(ch, "deadline %" PRId64 " %s", ms, what);
    s_arm(ms);
}

static int
s_open(s_check_t *c, s_child_t *ch, void **state, char *errbuf)
{
    *state = NULL;
    errbuf[0] = '\0';
    s_expect(ch, S_CALL_DEADLINE_MS, "in open");
    s_in_call = true;
    s_in_open = true;
    int rc = c->desc->open(&s_api, &s_host, c->settings, state, errbuf);
    s_in_open = false;
    s_in_call = false;
    s_disarm();
    errbuf[PLUGBOARD_ERRBUF_MAX - 1] = '\0';
    return rc;
}

static void
s_close(s_check_t *c, s_child_t *ch, void *state)
{
    s_expect(ch, S_CALL_DEADLINE_MS, "in close");
    s_in_call = true;
    c->desc->close(state);
    s_in_call = false;
    s_disarm();
}

/* Deliver env under the watchdog; fills result.  Returns ms taken. */
static int64_t
s_deliver(s_check_t *c, s_child_t *ch, void *state, const pb_envelope_t *env,
          const char *what, plugboard_result_t *result)
{
    memset(result, 0, sizeof *result);
    s_expect(ch, s_deliver_deadline(c), what);
    int64_t t0 = pb_monotonic_ms();
    s_in_call = true;
    c->desc->deliver(state, env, result);
    s_in_call = false;
    s_disarm();
    return pb_monotonic_ms() - t0;
}

/* Is result something the host can act on?  Writes the problem to why. */
static bool
s_result_valid(const plugboard_result_t *r, char *why, size_t len)
{
    if (r->outcome != PLUGBOARD_OK && r->outcome != PLUGBOARD_RETRY &&
        r->outcome != PLUGBOARD_REJECT && r->outcome != PLUGBOARD_HOLD) {
        snprintf(why, len, "outcome %d is not OK, RETRY, REJECT or HOLD",
                 (int)r->outcome);
        return false;
    }
    if (!memchr(r->reason, '\0', sizeof r->reason)) {
        snprintf(why, len, "reason is not NUL-terminated");
        return false;
    }
    if (r->outcome != PLUGBOARD_OK && !r->reason[0]) {
        snprintf(why, len, "%s without a reason", s_outcome_name(r->outcome));
        return false;
    }
    if (r->retry_after_ms < 0) {
        snprintf(why, len, "negative retry_after_ms %" PRId64,
                 r->retry_after_ms);
        return false;
    }
    return true;
}

/* Call the webhook with a request under the watchdog.  Returns status. */
static int
s_webhook(s_check_t *c, s_child_t *ch, void *state, const char *method,
          const void *body, size_t len, const char *what)
{
    plugboard_header_t hdr[] = {{"Content-Type", "application/json"}};
    char path[128];
    snprintf(path, sizeof path, "/hooks/%s", c->desc->name);
    plugboard_request_t req = {
        .method = method,
        .path = path,
        .query = "",
        .headers = hdr,
        .header_count = 1,
        .body = body,
        .body_len = len,
        .received_ms = pb_now_ms(),
    };
    plugboard_response_t *resp = pb_response_new();
    if (!resp)
        return -1;
    s_expect(ch, S_CALL_DEADLINE_MS, what);
    s_in_call = true;
    c->desc->webhook(state, &req, resp);
    s_in_call = false;
    s_disarm();
    int status = pb_response_status(resp);
    pb_response_destroy(&resp);
    return status;
}

/* The canonical types the plugin consumes, NULL-terminated; static. */
static size_t
s_consumed_types(const plugboard_connector_t *d, const char **out)
{
    size_t n = 0;
    for (size_t t = 0; pb_canonical_types[t]; t++) {
        bool match = false;
        for (size_t i = 0; d->consumes && d->consumes[i] && !match; i++)
            match = pb_type_matches(d->consumes[i], pb_canonical_types[t]);
        if (match)
            out[n++] = pb_canonical_types[t];
    }
    out[n] = NULL;
    return n;
}

static pb_envelope_t *
s_sample(const char *type)
{
    size_t len = 0;
    const char *json = pb_sample_json(type, &len);
    char why[256];
    return json ? pb_event_from_json(json, len, 1, why, sizeof why) : NULL;
}

/* ------------------------------------------------------------------ */
/* Running a child and reading its report                              */
/* ------------------------------------------------------------------ */

typedef struct s_report_state {
    const char *const *names;
    size_t count;
    bool *seen;
    char last[S_LINE_MAX]; /* the last note, what was being done */
    int64_t deadline_ms;   /* of the call in progress, 0 for none */
} s_report_state_t;

static void
s_parse_line(s_check_t *c, s_report_state_t *rs, char *line)
{
    if (strncmp(line, "note ", 5) == 0) {
        const char *text = line + 5;
        rs->deadline_ms = 0;
        if (strncmp(text, "deadline ", 9) == 0) {
            char *end;
            rs->deadline_ms = strtoll(text + 9, &end, 10);
            text = *end == ' ' ? end + 1 : end;
        }
        snprintf(rs->last, sizeof rs->last, "%s", text);
        if (c->opt->verbose)
            fprintf(c->out, "        ... %s\n", text);
        return;
    }
    char name[64];
    int st, used = 0;
    if (strncmp(line, "result ", 7) != 0 ||
        sscanf(line + 7, "%63s %d %n", name, &st, &used) < 2 || st < 0 ||
        st > S_WARN)
        return;
    for (size_t i = 0; i < rs->count; i++)
        if (strcmp(rs->names[i], name) == 0 && st != S_WARN)
            rs->seen[i] = true;
    s_result(c, (s_status_t)st, name, "%s", line + 7 + used);
}

/* Why a child ended without reporting everything. */
static void
s_describe_end(int wstatus, bool killed, const s_report_state_t *rs, char *buf,
               size_t len)
{
    const char *doing = rs->last[0] ? rs->last : "starting";
    if (killed)
        snprintf(buf, len,
                 "did not finish (killed after the checker's "
                 "budget) while %s",
                 doing);
    else if (WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGALRM)
        snprintf(buf, len, "did not return within %" PRId64 " ms %s",
                 rs->deadline_ms, doing);
    else if (WIFSIGNALED(wstatus))
        snprintf(buf, len, "crashed (SIG%s) %s",
                 sigabbrev_np(WTERMSIG(wstatus))
                     ? sigabbrev_np(WTERMSIG(wstatus))
                     : "?",
                 doing);
    else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0)
        snprintf(buf, len,
                 "ended with exit status %d %s (a sanitizer "
                 "report on stderr, or exit() in the plugin)",
                 WEXITSTATUS(wstatus), doing);
    else
        snprintf(buf, len,
                 "ended without a result %s (exit() in the "
                 "plugin?)",
                 doing);
}

/* Read the child's lines until EOF or the budget runs out. */
static bool
s_read_child(s_check_t *c, s_report_state_t *rs, int fd, int64_t budget_ms)
{
    char buf[8192];
    size_t used = 0;
    int64_t end = pb_monotonic_ms() + budget_ms;
    for (;;) {
        int64_t left = end - pb_monotonic_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return true;
        used += (size_t)n;
        buf[used] = '\0';
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = '\0';
            s_parse_line(c, rs, start);
            start = nl + 1;
        }
        used -= (size_t)(start - buf);
        memmove(buf, start, used);
        if (used == sizeof buf - 1)
            used = 0; /* an overlong line: drop it */
    }
}

static void
s_child_setup(s_check_t *c)
{
    /* a crash must end the child with its signal, whatever handler a
     * sanitizer installed, so the parent can name it */
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    signal(SIGFPE, SIG_DFL);
    signal(SIGILL, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    s_verbose = c->opt->verbose;
    atomic_store(&s_foreign_calls, 0);
    atomic_store(&s_foreign_first, NULL);
    atomic_store(&s_misused, 0);
    atomic_store(&s_misused_first, NULL);
    atomic_store(&s_api_blocks, 0);
    atomic_store(&s_setting_reads, 0);
    atomic_store(&s_stopping, false);
    atomic_store(&s_emitted, 0);
    s_undeclared[0] = s_mistyped[0] = s_bad_emits[0] = '\0';
    s_api_init(c->desc);
}

/*
 * Run fn in a child that reports the checks in names.  Every name the
 * child did not report is failed with the reason it ended.
 */
static void
s_run_child(s_check_t *c, const char *const *names, size_t count, s_child_fn fn,
            int64_t budget_ms)
{
    int fds[2];
    bool seen[8] = {false};
    s_report_state_t rs = {.names = names, .count = count, .seen = seen};

    fflush(c->out);
    fflush(stderr);
    if (count > 8 || pipe2(fds, O_CLOEXEC) != 0) {
        for (size_t i = 0; i < count; i++)
            s_result(c, S_FAIL, names[i], "cannot start a child: %s",
                     strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        s_child_t ch = {.fd = fds[1]};
        s_child_setup(c);
        fn(c, &ch);
        _exit(0);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        for (size_t i = 0; i < count; i++)
            s_result(c, S_FAIL, names[i], "cannot fork: %s", strerror(errno));
        return;
    }
    bool done = s_read_child(c, &rs, fds[0], budget_ms);
    if (!done)
        kill(pid, SIGKILL);
    close(fds[0]);
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    char why[S_LINE_MAX + 200];
    s_describe_end(wstatus, !done, &rs, why, sizeof why);
    for (size_t i = 0; i < count; i++)
        if (!seen[i])
            s_result(c, S_FAIL, names[i], "%s", why);
}

/* ------------------------------------------------------------------ */
/* Parent-side checks: descriptor, metadata, loader, settings          */
/* ------------------------------------------------------------------ */

static const size_t s_abi1_size =
    offsetof(plugboard_connector_t, webhook) + sizeof(void (*)(void));

/* dlopen the file ourselves and copy the descriptor as the plugin wrote
 * it.  Reports abi and size.  Returns true when the rest can be read. */
static bool
s_check_descriptor(s_check_t *c)
{
    c->handle = dlopen(c->path, RTLD_NOW | RTLD_LOCAL);
    if (!c->handle) {
        s_result(c, S_FAIL, "abi", "cannot load '%s': %s", c->path, dlerror());
        return false;
    }
    plugboard_entry_fn entry;
    *(void **)&entry = dlsym(c->handle, PLUGBOARD_ENTRY_SYMBOL);
    const plugboard_connector_t *d = entry ? entry() : NULL;
    if (!d) {
        s_result(c, S_FAIL, "abi", "%s",
                 entry ? PLUGBOARD_ENTRY_SYMBOL "() returned NULL"
                       : "no '" PLUGBOARD_ENTRY_SYMBOL "' symbol exported: "
                         "declare it with PLUGBOARD_CONNECTOR_EXPORT");
        return false;
    }
    if (d->abi_version != PLUGBOARD_ABI_VERSION) {
        s_result(c, S_FAIL, "abi",
                 "built for ABI %u, host speaks %d: rebuild "
                 "against this SDK's plugboard.h",
                 d->abi_version, PLUGBOARD_ABI_VERSION);
        return false;
    }
    s_result(c, S_OK, "abi", "ABI %u, as the host", d->abi_version);
    if (d->size < s_abi1_size) {
        s_result(c, S_FAIL, "size",
                 "descriptor size %u is smaller than ABI %d's %zu bytes: "
                 "set .size = sizeof(plugboard_connector_t)",
                 d->size, PLUGBOARD_ABI_VERSION, s_abi1_size);
        return false;
    }
    size_t n = d->size < sizeof c->raw ? d->size : sizeof c->raw;
    memcpy(&c->raw, d, n);
    if (d->size > sizeof c->raw)
        s_result(c, S_OK, "size",
                 "%u bytes, from a newer header: the host reads its "
                 "first %zu",
                 d->size, sizeof c->raw);
    else
        s_result(c, S_OK, "size", "%u bytes", d->size);
    return true;
}

/* A default value must bind as its own type. */
static void
s_check_default(const plugboard_setting_spec_t *s, char *probs, size_t len)
{
    if (!s->default_value)
        return;
    if (s->secret) {
        s_add(probs, len,
              "secret setting '%s' has a default value: secrets "
              "come from env:NAME or file:PATH only",
              s->name);
        return;
    }
    plugboard_setting_spec_t one[2] = {*s, {.name = NULL}};
    one[0].required = false;
    pb_diag_t diag;
    pb_diag_init(&diag);
    plugboard_settings_t *b = pb_settings_bind(one, NULL, 0, "default", &diag);
    if (!b) {
        /* the binding words it "default: <name>: expected ..." */
        const char *why = diag.count ? diag.messages[0] : "rejected";
        char head[96];
        snprintf(head, sizeof head, "default: %s: ", s->name);
        if (strncmp(why, head, strlen(head)) == 0)
            why += strlen(head);
        s_add(probs, len, "setting '%s': default \"%s\" is invalid: %s",
              s->name, s->default_value, why);
    }
    pb_settings_destroy(&b);
    pb_diag_release(&diag);
}

static void
s_check_settings_meta(const plugboard_connector_t *d, char *probs, size_t len,
                      size_t *count)
{
    *count = 0;
    for (size_t i = 0; d->settings && d->settings[i].name; i++, (*count)++) {
        const plugboard_setting_spec_t *s = &d->settings[i];
        if (i >= 256) {
            s_add(probs, len, "settings table has no {.name = NULL} end");
            return;
        }
        if (!s_name_ok(s->name, false))
            s_add(probs, len, "setting name '%s' is not [a-z0-9_]+", s->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->settings[j].name, s->name) == 0)
                s_add(probs, len, "setting '%s' is declared twice", s->name);
        if (s->type < PLUGBOARD_SETTING_STRING ||
            s->type > PLUGBOARD_SETTING_DURATION) {
            s_add(probs, len, "setting '%s' has unknown type %d", s->name,
                  (int)s->type);
            continue;
        }
        if (!s->help || !*s->help)
            s_add(probs, len, "setting '%s' has no help text", s->name);
        if (s->min > s->max)
            s_add(probs, len, "setting '%s' has min %" PRId64 " > max %" PRId64,
                  s->name, s->min, s->max);
        if (s->required && s->default_value)
            s_add(probs, len, "setting '%s' is required and has a default",
                  s->name);
        s_check_default(s, probs, len);
    }
}

/* Is p "*", a canonical type or "<family>.*" matching one? */
static bool
s_pattern_known(const char *p)
{
    if (!p)
        return false;
    if (strcmp(p, PLUGBOARD_EV_ANY) == 0 || pb_type_is_canonical(p))
        return true;
    size_t n = strlen(p);
    if (n < 3 || strcmp(p + n - 2, ".*") != 0)
        return false;
    for (size_t i = 0; pb_canonical_types[i]; i++)
        if (pb_type_matches(p, pb_canonical_types[i]))
            return true;
    return false;
}

static void
s_check_types(const plugboard_connector_t *d, char *probs, size_t len,
              char *warns, size_t wlen)
{
    size_t nc = 0, ne = 0;
    for (; d->consumes && d->consumes[nc] && nc < 256; nc++)
        if (!s_pattern_known(d->consumes[nc]))
            s_add(probs, len,
                  "consumes '%s': not a canonical type "
                  "(docs/events.md), '*' or '<family>.*'",
                  d->consumes[nc]);
    for (; d->emits && d->emits[ne] && ne < 256; ne++) {
        const char *t = d->emits[ne];
        if (strcmp(t, PLUGBOARD_EV_DELIVERY_DEAD) == 0 ||
            strcmp(t, PLUGBOARD_EV_CONNECTOR_UNHEALTHY) == 0)
            s_add(probs, len, "emits '%s': only the host emits it", t);
        else if (!pb_type_is_canonical(t))
            s_add(probs, len,
                  "emits '%s': not a canonical type "
                  "(docs/events.md; patterns are for consumes)",
                  t);
    }
    if (d->deliver && nc == 0)
        s_add(probs, len,
              "has deliver but consumes nothing: no route can "
              "reach it");
    if (!d->deliver && nc > 0)
        s_add(probs, len, "consumes events but has no deliver");
    if (!d->deliver && !d->webhook && !d->run)
        s_add(probs, len,
              "has neither deliver, webhook nor run: it can do "
              "nothing");
    /* a sink may emit from deliver: emits without a webhook is fine */
    if ((d->webhook || d->run) && ne == 0)
        s_add(warns, wlen, "%s but declares no emits",
              d->webhook ? "has a webhook" : "has run (a pull source)");
}

/* Text the scaffold left for the author to write. */
static bool
s_is_todo(const char *text)
{
    while (*text == ' ')
        text++;
    return strncmp(text, "TODO", 4) == 0;
}

static void
s_check_metadata(s_check_t *c)
{
    const plugboard_connector_t *d = &c->raw;
    char probs[2048] = "", warns[1024] = "";
    size_t nsettings = 0;

    if (!d->name || !*d->name)
        s_add(probs, sizeof probs,
              "no name: set .name to the plugin's name, "
              "[a-z0-9_-]{1,63}, e.g. \"notes\"");
    else if (!s_name_ok(d->name, true))
        s_add(probs, sizeof probs, "name '%s' is not [a-z0-9_-]{1,63}",
              d->name);
    if (!d->version || !*d->version)
        s_add(probs, sizeof probs,
              "no version: set .version, e.g. "
              "\"1.0.0\"");
    if (!d->summary || !*d->summary)
        s_add(probs, sizeof probs,
              "no summary: set .summary to one line "
              "saying what it does");
    else if (strchr(d->summary, '\n'))
        s_add(probs, sizeof probs, "summary is more than one line");
    if (d->summary && s_is_todo(d->summary))
        s_add(warns, sizeof warns,
              "summary starts with TODO: say what the connector does");
    for (size_t i = 0; d->settings && d->settings[i].name && i < 256; i++)
        if (d->settings[i].help && s_is_todo(d->settings[i].help))
            s_add(warns, sizeof warns, "setting '%s': help starts with TODO",
                  d->settings[i].name);
    if (!d->open || !d->close)
        s_add(probs, sizeof probs,
              "no %s callback (open and close are "
              "required)",
              d->open ? "close" : "open");
    if (d->flags & ~PLUGBOARD_DELIVER_THREAD_SAFE)
        s_add(probs, sizeof probs, "unknown flags 0x%x", d->flags);
    s_check_settings_meta(d, probs, sizeof probs, &nsettings);
    s_check_types(d, probs, sizeof probs, warns, sizeof warns);
    if (d->deliver_timeout_ms > 3600000u)
        s_add(warns, sizeof warns, "deliver_timeout_ms %u is over an hour",
              d->deliver_timeout_ms);
    if (warns[0])
        s_result(c, S_WARN, "metadata", "%s", warns);
    if (probs[0])
        s_result(c, S_FAIL, "metadata", "%s", probs);
    else
        s_result(c, S_OK, "metadata",
                 "%s %s: summary, %zu setting%s documented, "
                 "consumes/emits canonical",
                 d->name, d->version, nsettings, nsettings == 1 ? "" : "s");
}

static bool
s_check_load(s_check_t *c)
{
    char err[1024];
    c->plugin = pb_plugin_load(c->path, NULL, 0, NULL, err, sizeof err);
    if (!c->plugin) {
        s_result(c, S_FAIL, "load", "%s", err);
        return false;
    }
    c->desc = pb_plugin_descriptor(c->plugin);
    s_result(c, S_OK, "load", "the host's loader accepts it");
    return true;
}

/* Bind the given settings with one entry replaced or added.  Returns
 * true when the host rejected it with a message naming name. */
static bool
s_rejects(s_check_t *c, const pb_raw_setting_t *bad, char *msg, size_t len)
{
    size_t n = c->given_count;
    pb_raw_setting_t *raw = calloc(n + 1, sizeof *raw);
    if (!raw)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(c->given[i].name, bad->name) != 0)
            raw[k++] = c->given[i];
    raw[k++] = *bad;
    pb_diag_t diag;
    pb_diag_init(&diag);
    plugboard_settings_t *s =
        pb_settings_bind(c->desc->settings, raw, k, "plugin-check", &diag);
    bool named = false;
    for (size_t i = 0; i < diag.count; i++)
        named = named || strstr(diag.messages[i], bad->name);
    snprintf(msg, len, "%s", diag.count ? diag.messages[0] : "");
    pb_settings_destroy(&s);
    pb_diag_release(&diag);
    free(raw);
    return !s && named;
}

/* A value of the wrong type for spec (or out of its range). */
static pb_raw_setting_t
s_wrong_value(const plugboard_setting_spec_t *spec, bool range)
{
    pb_raw_setting_t r = {.name = (char *)spec->name, .line = 0};
    if (range) {
        r.kind = PB_RAW_INT;
        r.i = spec->max + 1;
        return r;
    }
    switch (spec->type) {
    case PLUGBOARD_SETTING_STRING:
        if (spec->secret) {
            r.kind = PB_RAW_STRING; /* inline, not env:/file: */
            r.str = "inline-secret-value";
        } else {
            r.kind = PB_RAW_INT;
            r.i = 42;
        }
        break;
    case PLUGBOARD_SETTING_INT:
        r.kind = PB_RAW_STRING;
        r.str = "forty-two";
        break;
    case PLUGBOARD_SETTING_BOOL:
        r.kind = PB_RAW_STRING;
        r.str = "yes";
        break;
    case PLUGBOARD_SETTING_DURATION:
        r.kind = PB_RAW_BOOL;
        r.b = true;
        break;
    }
    return r;
}

static void
s_check_settings(s_check_t *c)
{
    char msg[512], fails[2048] = "";
    unsigned cases = 0;
    pb_raw_setting_t unknown = {.name = "plugin_check_unknown_setting",
                                .kind = PB_RAW_STRING,
                                .str = "x"};
    cases++;
    if (!s_rejects(c, &unknown, msg, sizeof msg))
        s_add(fails, sizeof fails, "the host accepted unknown setting '%s'",
              unknown.name);
    for (size_t i = 0; c->desc->settings && c->desc->settings[i].name; i++) {
        const plugboard_setting_spec_t *s = &c->desc->settings[i];
        pb_raw_setting_t bad = s_wrong_value(s, false);
        cases++;
        if (!s_rejects(c, &bad, msg, sizeof msg))
            s_add(fails, sizeof fails,
                  "the host accepted a wrong-typed "
                  "'%s'",
                  s->name);
        bool bounded = (s->min || s->max) && s->max < INT64_MAX &&
                       s->type == PLUGBOARD_SETTING_INT;
        if (!bounded)
            continue;
        bad = s_wrong_value(s, true);
        cases++;
        if (!s_rejects(c, &bad, msg, sizeof msg))
            s_add(fails, sizeof fails,
                  "the host accepted '%s' = %" PRId64 " above its max", s->name,
                  bad.i);
    }
    if (fails[0])
        s_result(c, S_FAIL, "settings", "%s", fails);
    else
        s_result(c, S_OK, "settings",
                 "%u bad value%s (unknown, wrong-typed, out of range) "
                 "rejected by the host before open",
                 cases, cases == 1 ? "" : "s");
}

/* Bind --settings.  Reports a failure under "open" when they do not. */
static bool
s_bind_given(s_check_t *c)
{
    pb_diag_t diag;
    pb_diag_init(&diag);
    c->settings = pb_settings_bind(
        c->desc->settings, c->given, c->given_count,
        c->opt->settings_path ? c->opt->settings_path : "plugin-check", &diag);
    if (!c->settings) {
        char all[2048] = "";
        for (size_t i = 0; i < diag.count; i++)
            s_add(all, sizeof all, "%s", diag.messages[i]);
        s_result(c, S_FAIL, "open", "settings rejected: %s%s", all,
                 c->opt->settings_path ? ""
                                       : " (give them with --settings FILE)");
    }
    pb_diag_release(&diag);
    return c->settings != NULL;
}

/* ------------------------------------------------------------------ */
/* Child-side checks                                                   */
/* ------------------------------------------------------------------ */

static void
s_child_open(s_check_t *c, s_child_t *ch)
{
    void *state;
    char errbuf[PLUGBOARD_ERRBUF_MAX];
    if (s_open(c, ch, &state, errbuf) != 0) {
        s_report(ch, "open", S_FAIL, "open failed: %s",
                 errbuf[0] ? errbuf
                           : "(no message: write one to errbuf on failure)");
        return;
    }
    s_close(c, ch, state);
    s_report(ch, "open", S_OK, "opens with the given settings and closes");
}

typedef struct s_cycle_stats {
    long threads_before;
    long worst_threads;
    int worst_cycle;
} s_cycle_stats_t;

/* n open/close cycles; false (after reporting) when open fails. */
static bool
s_cycles(s_check_t *c, s_child_t *ch, int n, int first, s_cycle_stats_t *st)
{
    for (int i = 0; i < n; i++) {
        void *state;
        char errbuf[PLUGBOARD_ERRBUF_MAX];
        if (s_open(c, ch, &state, errbuf) != 0) {
            s_report(ch, "lifecycle", S_FAIL, "open failed on cycle %d: %s",
                     first + i + 1, errbuf);
            return false;
        }
        s_close(c, ch, state);
        /* wait for ended threads until a leak is found, not after */
        long t = st->worst_cycle ? s_threads()
                                 : s_threads_settled(st->threads_before);
        if (t > st->worst_threads) {
            st->worst_threads = t;
            if (!st->worst_cycle)
                st->worst_cycle = first + i + 1;
        }
    }
    return true;
}

static void
s_child_lifecycle(s_check_t *c, s_child_t *ch)
{
    s_cycle_stats_t st = {.threads_before = s_threads()};
    st.worst_threads = st.threads_before;
    s_note(ch, "warming up with %d open/close cycles", S_WARMUP_CYCLES);
    if (!s_cycles(c, ch, S_WARMUP_CYCLES, 0, &st))
        return;
    long fds0 = s_fds();
    size_t heap0 = s_heap_bytes();
    s_note(ch, "measuring %d open/close cycles", c->cycles);
    if (!s_cycles(c, ch, c->cycles, S_WARMUP_CYCLES, &st))
        return;
    size_t heap1 = s_heap_bytes();
    long fds1 = s_fds();
    long blocks = atomic_load(&s_api_blocks);
    long grown = heap1 > heap0 ? (long)(heap1 - heap0) : 0;

    char fails[1024] = "";
    if (st.worst_threads > st.threads_before)
        s_add(fails, sizeof fails,
              "a thread started in open still runs after close (from "
              "cycle %d on; %ld threads at most, %ld before the first "
              "open): stop and join every thread in close",
              st.worst_cycle, st.worst_threads, st.threads_before);
    if (fds1 > fds0)
        s_add(fails, sizeof fails, "leaks %ld descriptor%s over %d cycles",
              fds1 - fds0, fds1 - fds0 == 1 ? "" : "s", c->cycles);
    if (grown > PB_CHECK_HEAP_BOUND)
        s_add(fails, sizeof fails,
              "leaks memory: the heap grew %ld bytes over %d cycles "
              "(bound %d)",
              grown, c->cycles, PB_CHECK_HEAP_BOUND);
    if (blocks > 0)
        s_add(fails, sizeof fails,
              "%ld block%s from api->alloc or "
              "event_to_json never freed",
              blocks, blocks == 1 ? "" : "s");
    if (fails[0])
        s_report(ch, "lifecycle", S_FAIL, "%s", fails);
    else
        s_report(ch, "lifecycle", S_OK,
                 "%d open/close cycles: heap %+ld bytes (bound %d), "
                 "descriptors %+ld, no thread outlives close",
                 c->cycles, grown, PB_CHECK_HEAP_BOUND, fds1 - fds0);
}

typedef struct s_tally {
    unsigned n, ok, retry, reject;
    int64_t slowest;
    char bad[1024];    /* invalid results */
    char retried[512]; /* the first events answered RETRY */
} s_tally_t;

static void
s_tally(s_tally_t *t, const char *what, const plugboard_result_t *r, int64_t ms)
{
    char why[256];
    t->n++;
    if (ms > t->slowest)
        t->slowest = ms;
    if (!s_result_valid(r, why, sizeof why)) {
        s_add(t->bad, sizeof t->bad, "%s: %s", what, why);
        return;
    }
    if (r->outcome == PLUGBOARD_OK)
        t->ok++;
    else if (r->outcome == PLUGBOARD_RETRY || r->outcome == PLUGBOARD_HOLD) {
        if (t->retry++ < 2)
            s_add(t->retried, sizeof t->retried, "%s", what);
    } else
        t->reject++;
}

static void
s_child_samples(s_check_t *c, s_child_t *ch)
{
    const char *types[32];
    size_t n = s_consumed_types(c->desc, types);
    void *state;
    char errbuf[PLUGBOARD_ERRBUF_MAX];
    if (s_open(c, ch, &state, errbuf) != 0) {
        s_report(ch, "samples", S_FAIL, "open failed: %s", errbuf);
        return;
    }
    s_tally_t t = {0};
    char missing[512] = "";
    for (size_t i = 0; i < n; i++) {
        pb_envelope_t *env = s_sample(types[i]);
        if (!env) {
            s_add(missing, sizeof missing, "%s", types[i]);
            continue;
        }
        char what[160];
        snprintf(what, sizeof what, "delivering the '%s' sample", types[i]);
        plugboard_result_t r;
        int64_t ms = s_deliver(c, ch, state, env, what, &r);
        if (c->opt->verbose)
            s_note(ch, "%s: %s%s%s (%" PRId64 " ms)", types[i],
                   s_outcome_name(r.outcome), r.reason[0] ? " " : "", r.reason,
                   ms);
        s_tally(&t, types[i], &r, ms);
        pb_envelope_destroy(&env);
    }
    s_close(c, ch, state);
    if (missing[0])
        s_report(ch, "samples", S_FAIL, "no sample in docs/events.md for: %s",
                 missing);
    else if (t.bad[0])
        s_report(ch, "samples", S_FAIL, "invalid results: %s", t.bad);
    else
        s_report(ch, "samples", S_OK,
                 "%u canonical sample%s answered within %" PRId64
                 " ms: %u ok, %u retry, %u reject (slowest %" PRId64 " ms)",
                 t.n, t.n == 1 ? "" : "s", s_deliver_deadline(c), t.ok, t.retry,
                 t.reject, t.slowest);
}

/* Every leaf of v replaced by a value of another kind; maps kept. */
static json_t *
s_mistype(json_t *v)
{
    if (json_is_object(v)) {
        json_t *out = json_object();
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m)
        {
            json_object_set_new(out, k, s_mistype(m));
        }
        return out;
    }
    if (json_is_string(v))
        return json_integer(7);
    if (json_is_integer(v) || json_is_real(v))
        return json_string("seven");
    if (json_is_array(v))
        return json_string("not-an-array");
    if (json_is_boolean(v))
        return json_string("yes");
    return json_integer(7); /* null */
}

/* Every top-level map of data replaced by a scalar. */
static json_t *
s_flatten(json_t *data)
{
    json_t *out = json_object();
    const char *k;
    json_t *m;
    json_object_foreach(data, k, m)
    {
        json_object_set_new(
            out, k, json_is_object(m) ? json_integer(42) : json_incref(m));
    }
    return out;
}

/* The malformed variants of one sample: data {}, mistyped, flattened. */
static size_t
s_malformed(const char *type, char **out, const char **names)
{
    size_t len = 0;
    const char *text = pb_sample_json(type, &len);
    json_error_t jerr;
    json_t *root = text ? json_loadb(text, len, 0, &jerr) : NULL;
    json_t *data = json_object_get(root, "data");
    if (!json_is_object(data)) {
        json_decref(root);
        return 0;
    }
    json_t *variants[3] = {json_object(), s_mistype(data), s_flatten(data)};
    static const char *const labels[3] = {
        "with missing fields (empty data)",
        "with wrong-typed fields",
        "with blocks replaced by numbers",
    };
    for (size_t i = 0; i < 3; i++) {
        json_object_set_new(root, "data", variants[i]);
        out[i] = json_dumps(root, JSON_COMPACT);
        names[i] = labels[i];
    }
    json_decref(root);
    return 3;
}

static void
s_child_malformed(s_check_t *c, s_child_t *ch)
{
    const char *types[32];
    size_t n = s_consumed_types(c->desc, types);
    void *state;
    char errbuf[PLUGBOARD_ERRBUF_MAX];
    if (s_open(c, ch, &state, errbuf) != 0) {
        s_report(ch, "malformed", S_FAIL, "open failed: %s", errbuf);
        return;
    }
    s_tally_t t = {0};
    for (size_t i = 0; i < n; i++) {
        char *json[3] = {NULL};
        const char *labels[3];
        size_t nv = s_malformed(types[i], json, labels);
        for (size_t v = 0; v < nv; v++) {
            char why[256], what[256];
            pb_envelope_t *env =
                json[v] ? pb_event_from_json(json[v], strlen(json[v]), 1, why,
                                             sizeof why)
                        : NULL;
            free(json[v]);
            if (!env)
                continue;
            snprintf(what, sizeof what, "delivering a '%s' %s", types[i],
                     labels[v]);
            plugboard_result_t r;
            int64_t ms = s_deliver(c, ch, state, env, what, &r);
            s_tally(&t, what + strlen("delivering "), &r, ms);
            pb_envelope_destroy(&env);
        }
    }
    s_close(c, ch, state);
    if (t.retried[0])
        s_report(ch, "malformed", S_WARN,
                 "answered RETRY to %u malformed event%s, which no retry "
                 "can fix (answer REJECT), e.g. %s%s",
                 t.retry, t.retry == 1 ? "" : "s", t.retried,
                 t.retry > 2 ? ", ..." : "");
    if (t.bad[0])
        s_report(ch, "malformed", S_FAIL, "invalid results: %s", t.bad);
    else
        s_report(ch, "malformed", S_OK,
                 "%u malformed events answered: %u ok, %u retry, %u "
                 "reject",
                 t.n, t.ok, t.retry, t.reject);
}

static void
s_child_webhook(s_check_t *c, s_child_t *ch)
{
    void *state;
    char errbuf[PLUGBOARD_ERRBUF_MAX];
    if (s_open(c, ch, &state, errbuf) != 0) {
        s_report(ch, "webhook", S_FAIL, "open failed: %s", errbuf);
        return;
    }
    static char junk[65536];
    memset(junk, 0xff, sizeof junk);
    struct {
        const char *method, *body, *what;
        size_t len;
    } reqs[] = {
        {"POST", "", "answering an empty POST", 0},
        {"POST", "{\"type\":", "answering a POST of truncated JSON", 8},
        {"POST", "[1,2,3]", "answering a POST of a JSON array", 7},
        {"POST", junk, "answering a POST of 64 KiB of 0xff bytes", sizeof junk},
        {"GET", "", "answering a GET", 0},
    };
    char statuses[256] = "", bad[512] = "", ok2xx[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof reqs / sizeof *reqs; i++) {
        int st = s_webhook(c, ch, state, reqs[i].method, reqs[i].body,
                           reqs[i].len, reqs[i].what);
        int w = snprintf(statuses + used, sizeof statuses - used, "%s%d",
                         used ? ", " : "", st);
        if (w > 0 && (size_t)w < sizeof statuses - used)
            used += (size_t)w;
        if (st < 100 || st > 599)
            s_add(bad, sizeof bad, "%s: status %d", reqs[i].what + 10, st);
        else if (st < 300)
            s_add(ok2xx, sizeof ok2xx, "%s", reqs[i].what + 10);
    }
    s_close(c, ch, state);
    if (ok2xx[0])
        s_report(ch, "webhook", S_WARN,
                 "answered 2xx to requests a vendor would not send: %s", ok2xx);
    if (bad[0])
        s_report(ch, "webhook", S_FAIL, "invalid answers: %s", bad);
    else if (s_bad_emits[0])
        s_report(ch, "webhook", S_FAIL,
                 "emitted types it does not "
                 "declare in emits: %s",
                 s_bad_emits);
    else
        s_report(ch, "webhook", S_OK, "5 malformed requests answered (%s)",
                 statuses);
}

/* In-flight work: one worker calling deliver (or webhook) in a loop. */
typedef struct s_worker {
    s_check_t *c;
    void *state;
    atomic_bool *stop;
    atomic_uint *calls;
    pthread_t thread;
} s_worker_t;

static void *
s_worker_main(void *arg)
{
    s_worker_t *w = arg;
    const char *types[32];
    size_t n = s_consumed_types(w->c->desc, types);
    size_t i = 0;
    s_in_call = true; /* this thread is one the host calls in from */
    while (!atomic_load(w->stop)) {
        atomic_fetch_add(w->calls, 1);
        if (w->c->desc->deliver && n > 0) {
            pb_envelope_t *env = s_sample(types[i++ % n]);
            plugboard_result_t r = {0};
            if (env)
                w->c->desc->deliver(w->state, env, &r);
            pb_envelope_destroy(&env);
        } else if (w->c->desc->webhook) {
            plugboard_request_t req = {.method = "POST",
                                       .path = "/hooks/check",
                                       .query = "",
                                       .body = (const uint8_t *)"{}",
                                       .body_len = 2};
            plugboard_response_t *resp = pb_response_new();
            if (resp)
                w->c->desc->webhook(w->state, &req, resp);
            pb_response_destroy(&resp);
        }
    }
    return NULL;
}

static void
s_child_inflight(s_check_t *c, s_child_t *ch)
{
    long threads0 = s_threads();
    void *state;
    char errbuf[PLUGBOARD_ERRBUF_MAX];
    if (s_open(c, ch, &state, errbuf) != 0) {
        s_report(ch, "in-flight", S_FAIL, "open failed: %s", errbuf);
        return;
    }
    int n = c->desc->deliver && (c->desc->flags & PLUGBOARD_DELIVER_THREAD_SAFE)
                ? S_INFLIGHT_WORKERS
                : 1;
    atomic_bool stop = false;
    atomic_uint calls = 0;
    s_worker_t w[S_INFLIGHT_WORKERS];
    for (int i = 0; i < n; i++) {
        w[i] = (s_worker_t){c, state, &stop, &calls, 0};
        if (pthread_create(&w[i].thread, NULL, s_worker_main, &w[i]) != 0)
            n = i;
    }
    s_note(ch, "with %s on %d thread%s in flight",
           c->desc->deliver ? "deliveries" : "webhook calls", n,
           n == 1 ? "" : "s");
    /* let them get going, then stop the host while calls are in flight */
    int64_t until = pb_monotonic_ms() + 2000;
    while (atomic_load(&calls) < (unsigned)(2 * n) && pb_monotonic_ms() < until)
        usleep(1000);
    atomic_store(&s_stopping, true);
    atomic_store(&stop, true);
    s_expect(ch, s_deliver_deadline(c) + 1000,
             "for the calls in flight to return after the host stopped");
    for (int i = 0; i < n; i++)
        pthread_join(w[i].thread, NULL);
    s_disarm();
    int64_t t0 = pb_monotonic_ms();
    s_close(c, ch, state);
    int64_t took = pb_monotonic_ms() - t0;
    long threads1 = s_threads_settled(threads0);
    if (threads1 > threads0)
        s_report(ch, "in-flight", S_FAIL,
                 "%ld thread%s still running after close", threads1 - threads0,
                 threads1 - threads0 == 1 ? "" : "s");
    else
        s_report(ch, "in-flight", S_OK,
                 "%u %s on %d thread%s stopped; close took %" PRId64
                 " ms; no thread left",
                 atomic_load(&calls),
                 c->desc->deliver ? "deliveries" : "webhook calls", n,
                 n == 1 ? "" : "s", took);
}

/* ---- run (pull sources) -------------------------------------------- */

/* As the host: only run's thread may call these; an empty flush gets
 * ticket 0; each batch is "not yet" (0) when first asked about, durable
 * after, so a source's waiting path runs too. */
static atomic_bool s_run_stop;
static atomic_uint s_run_batches;
static uint64_t s_run_tickets, s_run_asked;
static unsigned s_run_flushed_at; /* s_emitted at the last flush */
static __thread bool s_in_run;

static int
s_pc_flush(void *ctx, uint64_t *ticket)
{
    (void)ctx;
    *ticket = 0;
    if (!s_in_run) {
        s_misuse("flush outside run");
        return PLUGBOARD_E_INVALID;
    }
    if (atomic_load(&s_run_stop))
        return PLUGBOARD_E_STOPPING;
    unsigned now = atomic_load(&s_emitted);
    if (now == s_run_flushed_at)
        return 0;
    s_run_flushed_at = now;
    *ticket = ++s_run_tickets;
    atomic_fetch_add(&s_run_batches, 1);
    return 0;
}

static int
s_pc_durable(void *ctx, uint64_t ticket)
{
    (void)ctx;
    if (!s_in_run)
        s_misuse("durable outside run");
    if (!s_in_run || ticket == 0 || ticket > s_run_tickets)
        return PLUGBOARD_E_INVALID;
    if (ticket > s_run_asked) {
        s_run_asked = ticket;
        return 0;
    }
    return 1;
}

static bool
s_pc_wait(void *ctx, int64_t timeout_ms)
{
    (void)ctx;
    if (!s_in_run) {
        s_misuse("run_wait outside run");
        return false;
    }
    int64_t until = pb_monotonic_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    while (!atomic_load(&s_run_stop) && pb_monotonic_ms() < until)
        usleep(1000);
    return !atomic_load(&s_run_stop);
}

static const pb_run_fns_t s_pc_run_fns = {
    .flush = s_pc_flush,
    .durable = s_pc_durable,
    .wait = s_pc_wait,
};

typedef struct s_runner {
    const plugboard_connector_t *desc;
    void *state;
    atomic_bool done;
} s_runner_t;

static void *
s_runner_main(void *arg)
{
    s_runner_t *r = arg;
    s_in_call = true; /* the host runs run: its calls are allowed */
    s_in_run = true;
    s_run_flushed_at = atomic_load(&s_emitted);
    r->desc->run(r->state);
    atomic_store(&r->done, true);
    return NULL;
}

/* run polls for a while, then the host asks it to stop: it must return
 * promptly and leave no thread behind. */
static void
s_child_run(s_check_t *c, s_child_t *ch)
{
    long threads0 = s_threads();
    void *state;
    char errbuf[PLUGBOARD_ERRBUF_MAX];
    if (s_open(c, ch, &state, errbuf) != 0) {
        s_report(ch, "run", S_FAIL, "open failed: %s", errbuf);
        return;
    }
    s_runner_t r = {.desc = c->desc, .state = state};
    pthread_t t;
    if (pthread_create(&t, NULL, s_runner_main, &r) != 0) {
        s_report(ch, "run", S_FAIL, "cannot start a thread");
        return;
    }
    s_note(ch, "run polling for 300 ms");
    usleep(300 * 1000);
    bool early = atomic_load(&r.done);
    atomic_store(&s_run_stop, true);
    int64_t t0 = pb_monotonic_ms();
    s_expect(ch, S_RUN_STOP_MS,
             "after run_wait answered false (return from run as soon as "
             "it does)");
    pthread_join(t, NULL);
    s_disarm();
    int64_t took = pb_monotonic_ms() - t0;
    s_close(c, ch, state);
    long threads1 = s_threads_settled(threads0);
    if (early)
        s_report(ch, "run", S_FAIL,
                 "run returned before the host asked it to: a pull source "
                 "polls until run_wait answers false (the host marks it "
                 "failed otherwise)");
    else if (threads1 > threads0)
        s_report(ch, "run", S_FAIL,
                 "%ld thread%s still running after close", threads1 - threads0,
                 threads1 - threads0 == 1 ? "" : "s");
    else
        s_report(ch, "run", S_OK,
                 "%u batch%s flushed in 300 ms; run returned %" PRId64
                 " ms after the host asked",
                 atomic_load(&s_run_batches),
                 atomic_load(&s_run_batches) == 1 ? "" : "es", took);
}

static void
s_child_usage(s_check_t *c, s_child_t *ch)
{
    static const char *const allowed =
        "a connector's own threads may call only log, now_ms, "
        "monotonic_ms, alloc and free";
    void *state;
    char errbuf[PLUGBOARD_ERRBUF_MAX];
    if (s_open(c, ch, &state, errbuf) != 0) {
        s_report(ch, "threads", S_FAIL, "open failed: %s", errbuf);
        s_report(ch, "settings-read", S_FAIL, "open failed: %s", errbuf);
        return;
    }
    const char *types[32];
    size_t n = c->desc->deliver ? s_consumed_types(c->desc, types) : 0;
    for (size_t i = 0; i < n; i++) {
        pb_envelope_t *env = s_sample(types[i]);
        plugboard_result_t r;
        if (env)
            s_deliver(c, ch, state, env, "delivering samples", &r);
        pb_envelope_destroy(&env);
    }
    if (c->desc->webhook)
        s_webhook(c, ch, state, "POST", "{}", 2, "answering a webhook");
    s_note(ch, "idle for 200 ms with the instance open");
    usleep(200 * 1000);
    s_close(c, ch, state);

    unsigned foreign = atomic_load(&s_foreign_calls);
    unsigned misused = atomic_load(&s_misused);
    if (misused)
        s_report(ch, "threads", S_FAIL,
                 "called %s (%u refused call%s): emit only from webhook, "
                 "deliver or run, and flush, durable and run_wait only "
                 "from run",
                 atomic_load(&s_misused_first), misused,
                 misused == 1 ? "" : "s");
    else if (foreign)
        s_report(ch, "threads", S_FAIL,
                 "called %s from a thread the host did not call in from "
                 "(%u call%s): %s",
                 atomic_load(&s_foreign_first), foreign,
                 foreign == 1 ? "" : "s", allowed);
    else
        s_report(ch, "threads", S_OK,
                 "every restricted host API call came from a thread the "
                 "host called in from");
    if (s_undeclared[0])
        s_report(ch, "settings-read", S_FAIL,
                 "reads setting %s it does not declare (the host answers "
                 "NULL, 0 or false): declare it in the settings table",
                 s_undeclared);
    else if (s_mistyped[0])
        s_report(ch, "settings-read", S_FAIL,
                 "reads settings with another type's getter: %s", s_mistyped);
    else
        s_report(ch, "settings-read", S_OK,
                 "%u setting read%s, all declared and of their type",
                 atomic_load(&s_setting_reads),
                 atomic_load(&s_setting_reads) == 1 ? "" : "s");
}

/* ------------------------------------------------------------------ */
/* The whole run                                                       */
/* ------------------------------------------------------------------ */

static void
s_skip(s_check_t *c, const char *const *names, size_t n, const char *why)
{
    for (size_t i = 0; i < n; i++)
        s_result(c, S_SKIP, names[i], "%s", why);
}

static void
s_run_children(s_check_t *c)
{
    static const char *const n_open[] = {"open"};
    static const char *const n_life[] = {"lifecycle"};
    static const char *const n_samples[] = {"samples"};
    static const char *const n_malformed[] = {"malformed"};
    static const char *const n_webhook[] = {"webhook"};
    static const char *const n_inflight[] = {"in-flight"};
    static const char *const n_run[] = {"run"};
    static const char *const n_usage[] = {"threads", "settings-read"};
    static const char *const n_after_open[] = {
        "lifecycle", "samples", "malformed",     "webhook",
        "in-flight", "threads", "settings-read", "run"};
    int64_t deliver_ms = s_deliver_deadline(c);
    unsigned failed = c->failed;

    if (!s_bind_given(c)) {
        s_skip(c, n_after_open, 8, "needs settings the plugin accepts");
        return;
    }
    s_run_child(c, n_open, 1, s_child_open, 3 * S_CALL_DEADLINE_MS);
    if (c->failed > failed) {
        s_skip(c, n_after_open, 8, "needs a plugin that opens");
        return;
    }
    s_run_child(c, n_life, 1, s_child_lifecycle,
                (int64_t)(c->cycles + S_WARMUP_CYCLES) * 2 *
                        S_CALL_DEADLINE_MS +
                    10000);
    if (c->desc->deliver) {
        s_run_child(c, n_samples, 1, s_child_samples, 20 * deliver_ms + 60000);
        s_run_child(c, n_malformed, 1, s_child_malformed,
                    50 * deliver_ms + 60000);
    } else {
        s_skip(c, n_samples, 1, "no deliver: consumes nothing");
        s_skip(c, n_malformed, 1, "no deliver: consumes nothing");
    }
    if (c->desc->webhook)
        s_run_child(c, n_webhook, 1, s_child_webhook, 10 * S_CALL_DEADLINE_MS);
    else
        s_skip(c, n_webhook, 1, "no webhook");
    if (c->desc->deliver || c->desc->webhook)
        s_run_child(c, n_inflight, 1, s_child_inflight,
                    deliver_ms + 4 * S_CALL_DEADLINE_MS);
    else
        s_skip(c, n_inflight, 1, "no deliver and no webhook");
    if (c->desc->run)
        s_run_child(c, n_run, 1, s_child_run,
                    S_RUN_STOP_MS + 3 * S_CALL_DEADLINE_MS);
    else
        s_skip(c, n_run, 1, "no run: not a pull source");
    s_run_child(c, n_usage, 2, s_child_usage,
                20 * deliver_ms + 4 * S_CALL_DEADLINE_MS);
}

/* A value with a '/' or ending in ".so" is a file (as for ctl upgrade);
 * a bare name is looked up in the default plugin dir. */
static void
s_resolve_path(s_check_t *c, const char *plugin)
{
    size_t n = strlen(plugin);
    if (strchr(plugin, '/') || (n > 3 && strcmp(plugin + n - 3, ".so") == 0))
        snprintf(c->path, sizeof c->path, "%s", plugin);
    else
        snprintf(c->path, sizeof c->path, "%s/%s.so",
                 pb_runtime_default_plugin_dir(), plugin);
}

static int
s_load_given(s_check_t *c)
{
    if (!c->opt->settings_path)
        return 0;
    pb_diag_t diag;
    pb_diag_init(&diag);
    int rc = pb_settings_file_load(c->opt->settings_path, &c->given,
                                   &c->given_count, &diag);
    for (size_t i = 0; i < diag.count; i++)
        fprintf(stderr, "error: %s\n", diag.messages[i]);
    pb_diag_release(&diag);
    return rc;
}

int
pb_plugin_check(const pb_check_options_t *opt)
{
    s_check_t c = {.opt = opt, .out = opt->out ? opt->out : stdout};
    c.cycles = opt->cycles > 0 ? opt->cycles : PB_CHECK_CYCLES;
    s_resolve_path(&c, opt->plugin);
    if (s_load_given(&c) != 0)
        return PB_ECONFIG;

    fprintf(c.out, "plugin-check %s\n", c.path);
    if (s_check_descriptor(&c)) {
        s_check_metadata(&c);
        if (s_check_load(&c)) {
            s_check_settings(&c);
            s_run_children(&c);
        }
    }
    fprintf(c.out, "%s: %u passed, %u failed, %u skipped, %u warning%s\n",
            c.failed ? "FAIL" : "PASS", c.passed, c.failed, c.skipped, c.warned,
            c.warned == 1 ? "" : "s");
    fflush(c.out);

    pb_settings_destroy(&c.settings);
    pb_raw_settings_free(c.given, c.given_count);
    pb_plugin_destroy(&c.plugin);
    if (c.handle)
        dlclose(c.handle);
    return (int)c.failed;
}

int
pb_plugin_check_cmd(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"settings", required_argument, NULL, 's'},
        {"cycles", required_argument, NULL, 'n'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    pb_check_options_t opt = {.out = stdout};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "s:n:vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            opt.settings_path = optarg;
            break;
        case 'n':
            opt.cycles = atoi(optarg);
            if (opt.cycles < 1 || opt.cycles > 100000) {
                fprintf(stderr, "error: --cycles wants 1..100000, got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'v':
            opt.verbose = true;
            break;
        case 'h':
            fputs(pb_plugin_check_help, stdout);
            return 0;
        default:
            fputs(pb_plugin_check_help, stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fputs(pb_plugin_check_help, stderr);
        return 2;
    }
    opt.plugin = argv[optind];
    pb_log_set_level(opt.verbose ? PB_LOG_DEBUG : PB_LOG_WARN);
    int failed = pb_plugin_check(&opt);
    if (failed < 0)
        return 2;
    return failed ? 1 : 0;
}
