/*
 * control.c - the admin socket: listening, one request per connection,
 * and the client side used by `plugboard dlq` and `plugboard ctl`.
 */
#define _GNU_SOURCE
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "reload.h"

#define S_MAX_REQUEST 65536
#define S_MAX_RESPONSE (64u * 1024u * 1024u)
#define S_SERVER_TIMEOUT_MS 2000

struct pb_control {
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

void
pb_control_path(const char *run_dir, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s/control.sock", run_dir);
}

json_t *
pb_control_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

static int
s_addr(const char *path, struct sockaddr_un *addr, char *err, size_t err_len)
{
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) {
        snprintf(err, err_len,
                 "control socket path '%s' is longer than %zu bytes; use a "
                 "shorter run_dir",
                 path, sizeof addr->sun_path - 1);
        return -1;
    }
    memcpy(addr->sun_path, path, strlen(path) + 1);
    return 0;
}

pb_control_t *
pb_control_listen(const char *path, char *err, size_t err_len)
{
    struct sockaddr_un addr;
    if (s_addr(path, &addr, err, err_len) != 0)
        return NULL;
    /* a live host on this socket means a second host on the same run_dir */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 &&
        connect(probe, (struct sockaddr *)&addr, sizeof addr) == 0) {
        close(probe);
        snprintf(err, err_len,
                 "another host is already running with control socket '%s'",
                 path);
        return NULL;
    }
    if (probe >= 0)
        close(probe);
    unlink(path);

    pb_control_t *ctl = calloc(1, sizeof *ctl);
    if (!ctl) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(ctl->path, sizeof ctl->path, "%s", path);
    ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    mode_t old = umask(0077);
    int rc = ctl->fd < 0 ? -1
                         : bind(ctl->fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (rc != 0 || chmod(path, 0600) != 0 || listen(ctl->fd, 16) != 0) {
        snprintf(err, err_len, "cannot listen on control socket '%s': %s",
                 path, strerror(errno));
        if (ctl->fd >= 0)
            close(ctl->fd);
        free(ctl);
        return NULL;
    }
    return ctl;
}

int
pb_control_fd(const pb_control_t *ctl)
{
    return ctl->fd;
}

/* Read until a newline or EOF, within the deadline.  Returns the length or
 * -1.  buf is NUL-terminated. */
static ssize_t
s_read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t len = 0;
    while (len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, timeout_ms);
        if (r <= 0)
            return -1;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (memchr(buf + len - (size_t)n, '\n', (size_t)n))
            break;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

static int
s_write_all(int fd, const char *p, size_t len, int timeout_ms)
{
    while (len) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return -1;
        ssize_t n = write(fd, p, len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void
pb_control_serve_one(pb_control_t *ctl, pb_control_fn fn, void *ctx)
{
    int fd = accept4(ctl->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    char *buf = malloc(S_MAX_REQUEST);
    json_t *resp = NULL;
    if (!buf)
        goto out_close;
    ssize_t n = s_read_line(fd, buf, S_MAX_REQUEST, S_SERVER_TIMEOUT_MS);
    json_error_t jerr;
    json_t *req = n > 0 ? json_loads(buf, JSON_REJECT_DUPLICATES, &jerr)
                        : NULL;
    const char *cmd = req ? json_string_value(json_object_get(req, "cmd"))
                          : NULL;
    if (!req)
        resp = pb_control_error("request is not a JSON object on one line");
    else if (!cmd)
        resp = pb_control_error("request has no \"cmd\" string");
    else
        resp = fn(ctx, cmd, req);
    if (!resp)
        resp = pb_control_error("out of memory");
    json_decref(req);
    char *text = json_dumps(resp, JSON_COMPACT);
    if (text) {
        size_t len = strlen(text);
        text[len] = '\n';
        s_write_all(fd, text, len + 1, S_SERVER_TIMEOUT_MS);
        free(text);
    }
    json_decref(resp);
out_close:
    free(buf);
    close(fd);
}

void
pb_control_close(pb_control_t **ctlp)
{
    if (!ctlp || !*ctlp)
        return;
    pb_control_t *ctl = *ctlp;
    *ctlp = NULL;
    close(ctl->fd);
    unlink(ctl->path);
    free(ctl);
}

json_t *
pb_control_request(const char *path, json_t *req, int timeout_ms, char *err,
                   size_t err_len)
{
    struct sockaddr_un addr;
    if (s_addr(path, &addr, err, err_len) != 0)
        return NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        snprintf(err, err_len,
                 "no host is running on '%s': %s (start one with `plugboard "
                 "run -c FILE`, and pass the same -c here)",
                 path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_t *resp = NULL;
    if (!text) {
        snprintf(err, err_len, "out of memory");
        goto out_close;
    }
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (!line) {
        free(text);
        snprintf(err, err_len, "out of memory");
        goto out_close;
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    int wrc = s_write_all(fd, line, len + 1, timeout_ms);
    free(line);
    if (wrc != 0) {
        snprintf(err, err_len, "cannot send the request: %s",
                 strerror(errno));
        goto out_close;
    }
    /* read the whole answer: one JSON document, then EOF */
    size_t cap = 65536, got = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (got + 1 >= cap) {
            if (cap >= S_MAX_RESPONSE)
                break;
            char *grown = realloc(buf, cap * 2);
            if (!grown)
                break;
            buf = grown;
            cap *= 2;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0) {
            snprintf(err, err_len, "the host did not answer within %d ms",
                     timeout_ms);
            free(buf);
            buf = NULL;
            break;
        }
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (buf) {
        buf[got] = '\0';
        json_error_t jerr;
        resp = json_loads(buf, 0, &jerr);
        if (!resp)
            snprintf(err, err_len, "the host's answer is not JSON: %s",
                     jerr.text);
        free(buf);
    } else if (!err[0]) {
        snprintf(err, err_len, "out of memory");
    }
out_close:
    close(fd);
    return resp;
}

/* ---------------------------------------------------------------- */
/* the admin commands: plugboard dlq ..., plugboard ctl ...          */
/* ---------------------------------------------------------------- */

#include <getopt.h>
#include <time.h>

#include "config.h"
#include "observe.h"

#define S_CLIENT_TIMEOUT_MS 15000

typedef struct s_cli {
    const char *config;
    bool json;
    const char *route;
    const char *connector;
    const char *all_for;
    long long after;
    int limit;
} cli_t;

static void
s_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Parse common options; leaves positional arguments from optind. */
static int
s_cli_options(int argc, char **argv, cli_t *o)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"route", required_argument, NULL, 'r'},
        {"connector", required_argument, NULL, 'C'},
        {"all-for", required_argument, NULL, 'a'},
        {"after", required_argument, NULL, 'A'},
        {"limit", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->config = getenv("PLUGBOARD_CONFIG");
    if (!o->config || !*o->config)
        o->config = "etc/plugboard.cfg";
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:jh", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o->config = optarg;
            break;
        case 'j':
            o->json = true;
            break;
        case 'r':
            o->route = optarg;
            break;
        case 'C':
            o->connector = optarg;
            break;
        case 'a':
            o->all_for = optarg;
            break;
        case 'A':
        case 'l': {
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || errno || v <= 0 ||
                (opt == 'l' && v > 100000)) {
                fprintf(stderr, "error: --%s needs a positive integer%s, "
                        "got '%s'\n", opt == 'A' ? "after" : "limit",
                        opt == 'l' ? " up to 100000" : "", optarg);
                return -1;
            }
            if (opt == 'A')
                o->after = v;
            else
                o->limit = (int)v;
            break;
        }
        case 'h':
            return 1;
        default:
            return -1;
        }
    }
    return 0;
}

/* Send req to the host that config_path describes. */
static json_t *
s_ask(const char *config_path, json_t *req)
{
    pb_diag_t diag;
    pb_diag_init(&diag);
    pb_config_t *cfg = pb_config_load(config_path, &diag);
    if (!cfg) {
        for (size_t i = 0; i < diag.count; i++)
            fprintf(stderr, "error: %s\n", diag.messages[i]);
        pb_diag_release(&diag);
        return NULL;
    }
    pb_diag_release(&diag);
    char path[4200], err[1024] = "";
    pb_control_path(cfg->run_dir, path, sizeof path);
    pb_config_destroy(&cfg);
    json_t *resp = pb_control_request(path, req, S_CLIENT_TIMEOUT_MS, err,
                                      sizeof err);
    if (!resp)
        fprintf(stderr, "error: %s\n", err);
    return resp;
}

/* Print an answer: raw JSON, or its error; returns the exit status. */
static int
s_finish(json_t *resp, bool json, void (*print)(json_t *))
{
    if (!resp)
        return 1;
    int rc = json_is_true(json_object_get(resp, "ok")) ? 0 : 1;
    if (json) {
        /* rates and seconds rounded: 0.006, not 0.0060000000000000001 */
        char *text = json_dumps(resp, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        if (text)
            printf("%s\n", text);
        free(text);
    } else if (rc != 0) {
        fprintf(stderr, "error: %s\n",
                json_string_value(json_object_get(resp, "error")));
    } else {
        print(resp);
    }
    json_decref(resp);
    return rc;
}

static const char *
s_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

static void
s_print_list(json_t *resp)
{
    json_t *list = json_object_get(resp, "dead_letters");
    if (json_array_size(list) == 0) {
        printf("no dead letters\n");
        return;
    }
    /* columns as wide as what they hold, so the last error lines up */
    int wr = 5, wd = 11, wt = 10;
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        int r = (int)strlen(s_str(d, "route"));
        int de = (int)strlen(s_str(d, "destination"));
        int t = (int)strlen(s_str(json_object_get(d, "event"), "type"));
        wr = r > wr ? (r < 64 ? r : 64) : wr;
        wd = de > wd ? (de < 64 ? de : 64) : wd;
        wt = t > wt ? (t < 64 ? t : 64) : wt;
    }
    printf("%-6s %-*s %-*s %-8s %-19s %-*s %s\n", "ID", wr, "ROUTE", wd,
           "DESTINATION", "ATTEMPTS", "DEAD AT (UTC)", wt, "EVENT TYPE",
           "LAST ERROR");
    json_array_foreach(list, i, d)
    {
        char when[32];
        s_time(json_integer_value(json_object_get(d, "dead_at")), when,
               sizeof when);
        json_t *ev = json_object_get(d, "event");
        printf("%-6lld %-*s %-*s %-8lld %-19s %-*s %.60s\n",
               (long long)json_integer_value(json_object_get(d, "id")), wr,
               s_str(d, "route"), wd, s_str(d, "destination"),
               (long long)json_integer_value(json_object_get(d, "attempts")),
               when, wt, s_str(ev, "type"), s_str(d, "last_error"));
    }
    if (json_is_true(json_object_get(resp, "more")))
        printf("%zu dead letters shown, and more: `plugboard dlq list "
               "--after %lld` for the next ones\n",
               json_array_size(list),
               (long long)json_integer_value(
                   json_object_get(resp, "next_after")));
    else
        printf("%zu dead letter%s; `plugboard dlq show ID` for the event "
               "and every attempt\n",
               json_array_size(list), json_array_size(list) == 1 ? "" : "s");
}

static void
s_print_show(json_t *resp)
{
    json_t *d = json_object_get(resp, "dead_letter");
    json_t *ev = json_object_get(d, "event");
    char when[32];
    s_time(json_integer_value(json_object_get(d, "dead_at")), when,
           sizeof when);
    printf("dead letter %lld\n",
           (long long)json_integer_value(json_object_get(d, "id")));
    printf("  route:        %s\n", s_str(d, "route"));
    printf("  destination:  %s\n", s_str(d, "destination"));
    printf("  dead since:   %s UTC after %lld attempt(s)\n", when,
           (long long)json_integer_value(json_object_get(d, "attempts")));
    printf("  last error:   %s\n", s_str(d, "last_error"));
    printf("  event:        %s %s key=%s\n", s_str(ev, "type"),
           s_str(ev, "id"), s_str(ev, "key"));
    printf("attempts:\n");
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(d, "history"), i, a)
    {
        s_time(json_integer_value(json_object_get(a, "at")), when,
               sizeof when);
        printf("  #%-3lld %s  %-8s %s\n",
               (long long)json_integer_value(json_object_get(a, "attempt")),
               when, s_str(a, "outcome"), s_str(a, "error"));
    }
    char *body = json_dumps(json_object_get(d, "event_body"), JSON_INDENT(2));
    printf("event body:\n%s\n", body ? body : "(unreadable)");
    free(body);
}

static void
s_print_changed(json_t *resp)
{
    json_t *ids = json_object_get(resp, "replayed");
    const char *verb = "replayed";
    if (!ids) {
        ids = json_object_get(resp, "dropped");
        verb = "dropped";
    }
    printf("%s %zu dead letter%s\n", verb, json_array_size(ids),
           json_array_size(ids) == 1 ? "" : "s");
}

static const char s_dlq_usage[] =
    "usage: plugboard dlq list [--route R] [--connector C] [--after ID] "
    "[--limit N]\n"
    "       plugboard dlq show ID\n"
    "       plugboard dlq replay ID | --all-for ROUTE\n"
    "       plugboard dlq drop ID\n"
    "options: -c FILE (the running host's config), --json\n"
    "Dead letters are deliveries that failed permanently or ran out of\n"
    "retries.  replay sends one again with a fresh attempt count (its\n"
    "history is kept); drop forgets it.\n";

/* The options each dlq command takes, as a bit set. */
enum {
    S_OPT_ROUTE = 1 << 0,
    S_OPT_CONNECTOR = 1 << 1,
    S_OPT_AFTER = 1 << 2,
    S_OPT_LIMIT = 1 << 3,
    S_OPT_ALL_FOR = 1 << 4,
};

/* Is sub a dlq command?  *opts gets the options it takes. */
static bool
s_dlq_command(const char *sub, unsigned *opts)
{
    static const struct {
        const char *name;
        unsigned opts;
    } cmds[] = {
        {"list", S_OPT_ROUTE | S_OPT_CONNECTOR | S_OPT_AFTER | S_OPT_LIMIT},
        {"show", 0},
        {"replay", S_OPT_ALL_FOR},
        {"drop", 0},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(sub, cmds[i].name) == 0) {
            *opts = cmds[i].opts;
            return true;
        }
    }
    return false;
}

/*
 * Refuses an option that sub does not take (rather than ignore it) and a
 * route or connector name that is empty or is the next option (`--route
 * -c FILE` took "-c" as the name).  0 when the options are fine.
 */
static int
s_dlq_check_options(const char *sub, unsigned allowed, const cli_t *o)
{
    static const struct {
        unsigned bit;
        const char *flag, *only, *what;
    } opts[] = {
        {S_OPT_ROUTE, "--route", "list", "a route name"},
        {S_OPT_CONNECTOR, "--connector", "list", "a connector name"},
        {S_OPT_AFTER, "--after", "list", NULL},
        {S_OPT_LIMIT, "--limit", "list", NULL},
        {S_OPT_ALL_FOR, "--all-for", "replay", "a route name"},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const char *text = NULL;
        bool given = false;
        if (opts[i].bit == S_OPT_ROUTE)
            text = o->route;
        else if (opts[i].bit == S_OPT_CONNECTOR)
            text = o->connector;
        else if (opts[i].bit == S_OPT_ALL_FOR)
            text = o->all_for;
        else if (opts[i].bit == S_OPT_AFTER)
            given = o->after != 0;
        else
            given = o->limit != 0;
        given = given || text != NULL;
        if (!given)
            continue;
        if (!(allowed & opts[i].bit)) {
            fprintf(stderr, "error: %s applies to dlq %s only, not to dlq "
                    "%s\n", opts[i].flag, opts[i].only, sub);
            return -1;
        }
        if (text && (!*text || *text == '-')) {
            fprintf(stderr, "error: %s needs %s, got '%s'\n", opts[i].flag,
                    opts[i].what, text);
            return -1;
        }
    }
    return 0;
}

/* The id argument: 1 when given and valid, 0 when absent, -1 (reported)
 * when it is not an id or more than one was given. */
static int
s_dlq_id(const char *sub, int argc, char **argv, long long *id)
{
    int npos = argc - optind;
    if (npos == 0)
        return 0;
    const char *arg = argv[optind];
    if (strcmp(sub, "list") == 0) {
        fprintf(stderr, "error: dlq list takes no id; unexpected argument "
                "'%s'\n", arg);
        return -1;
    }
    if (npos > 1) {
        fprintf(stderr, "error: unexpected argument '%s'; one id at a "
                "time\n", argv[optind + 1]);
        return -1;
    }
    char *end = NULL;
    errno = 0;
    *id = strtoll(arg, &end, 10);
    if (!*arg || !end || *end || errno != 0 || *id <= 0) {
        fprintf(stderr, "error: '%s' is not a dead-letter id (a positive "
                "integer from `plugboard dlq list`)\n", arg);
        return -1;
    }
    return 1;
}

int
pb_cli_dlq(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fputs(s_dlq_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    unsigned allowed = 0;
    if (!s_dlq_command(sub, &allowed)) {
        if (sub[0] == '-')
            fprintf(stderr, "error: missing dlq command (list, show, replay "
                    "or drop) before '%s'\n", sub);
        else
            fprintf(stderr, "error: unknown dlq command '%s' (expected "
                    "list, show, replay or drop)\n", sub);
        fputs(s_dlq_usage, stderr);
        return 2;
    }
    cli_t o;
    int prc = s_cli_options(argc - 1, argv + 1, &o);
    if (prc != 0) {
        fputs(s_dlq_usage, prc > 0 ? stdout : stderr);
        return prc > 0 ? 0 : 2;
    }
    if (s_dlq_check_options(sub, allowed, &o) != 0)
        return 2;
    long long id = 0;
    int idrc = s_dlq_id(sub, argc - 1, argv + 1, &id);
    if (idrc < 0)
        return 2;
    bool have_id = idrc > 0;
    if (strcmp(sub, "replay") == 0 && have_id && o.all_for) {
        fprintf(stderr, "error: give either an id or --all-for, not both\n");
        return 2;
    }
    if (strcmp(sub, "list") != 0 && !have_id && !o.all_for) {
        fprintf(stderr, "error: dlq %s needs a dead-letter id%s\n", sub,
                strcmp(sub, "replay") == 0 ? " or --all-for ROUTE" : "");
        return 2;
    }
    json_t *req = NULL;
    void (*print)(json_t *) = NULL;
    if (strcmp(sub, "list") == 0) {
        req = json_pack("{s:s}", "cmd", "dlq.list");
        if (o.route)
            json_object_set_new(req, "route", json_string(o.route));
        if (o.connector)
            json_object_set_new(req, "connector", json_string(o.connector));
        if (o.after)
            json_object_set_new(req, "after", json_integer(o.after));
        if (o.limit)
            json_object_set_new(req, "limit", json_integer(o.limit));
        print = s_print_list;
    } else if (strcmp(sub, "show") == 0 && have_id) {
        req = json_pack("{s:s, s:I}", "cmd", "dlq.show", "id",
                        (json_int_t)id);
        print = s_print_show;
    } else if (strcmp(sub, "replay") == 0 && (have_id || o.all_for)) {
        req = have_id ? json_pack("{s:s, s:I}", "cmd", "dlq.replay", "id",
                                  (json_int_t)id)
                      : json_pack("{s:s, s:s}", "cmd", "dlq.replay",
                                  "all_for", o.all_for);
        print = s_print_changed;
    } else if (strcmp(sub, "drop") == 0 && have_id) {
        req = json_pack("{s:s, s:I}", "cmd", "dlq.drop", "id",
                        (json_int_t)id);
        print = s_print_changed;
    } else {
        fputs(s_dlq_usage, stderr);
        return 2;
    }
    json_t *resp = s_ask(o.config, req);
    json_decref(req);
    return s_finish(resp, o.json, print);
}

/* connectors and routes with their numbers (core/observe.c) */
static void
s_print_status(json_t *resp)
{
    pb_observe_print_status(resp, stdout);
    pb_reload_print_status(resp, stdout);
}

static const char s_ctl_usage[] =
    "usage: plugboard ctl status [-c FILE] [--json]\n"
    "       plugboard ctl top [-c FILE] [--window DURATION] [-n COUNT]\n"
    "       plugboard ctl constraint [-c FILE] [--window DURATION] "
    "[--json]\n"
    "       plugboard ctl dlq ...   (same as plugboard dlq ...)\n"
    "       plugboard ctl reload [-c FILE] [--json]\n"
    "       plugboard ctl upgrade CONNECTOR [--plugin PATH] [-c FILE] "
    "[--json]\n"
    "Talks to the running host through the control socket in its run_dir.\n";

int
pb_cli_ctl(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fputs(s_ctl_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "dlq") == 0)
        return pb_cli_dlq(argc - 1, argv + 1);
    if (strcmp(argv[1], "top") == 0)
        return pb_cli_top(argc - 1, argv + 1);
    if (strcmp(argv[1], "constraint") == 0)
        return pb_cli_constraint(argc - 1, argv + 1);
    if (strcmp(argv[1], "reload") == 0 || strcmp(argv[1], "upgrade") == 0)
        return pb_reload_cli(argc - 1, argv + 1);
    if (strcmp(argv[1], "status") == 0) {
        cli_t o;
        int prc = s_cli_options(argc - 1, argv + 1, &o);
        if (prc != 0) {
            fputs(s_ctl_usage, prc > 0 ? stdout : stderr);
            return prc > 0 ? 0 : 2;
        }
        json_t *req = json_pack("{s:s}", "cmd", "status");
        json_t *resp = s_ask(o.config, req);
        json_decref(req);
        return s_finish(resp, o.json, s_print_status);
    }
    fprintf(stderr, "error: unknown ctl command '%s'\n", argv[1]);
    fputs(s_ctl_usage, stderr);
    return 2;
}
