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
