/*
 * file.c - the "file" connector: append every event it receives to a file,
 * one JSON object per line (JSON Lines).
 *
 * A sink for audit trails, debugging and feeding tools that tail a file.
 * It owns one file descriptor, opened with O_APPEND at open() and reopened
 * when the path is moved or removed (log rotation).  Each event is written
 * with one write(2) so a line is never interleaved with another writer's;
 * with fsync = true (the default) the line is on disk before the delivery
 * is reported done, which is what at-least-once needs across a power loss.
 */
#include <plugboard/plugboard.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define S_FILE_MODE 0640

typedef struct s_file {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    char *path; /* owned, api->alloc */
    int fd;
    dev_t dev; /* identity of the file fd refers to */
    ino_t ino;
    bool fsync;
} s_file_t;

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "path",
        .type = PLUGBOARD_SETTING_STRING,
        .required = true,
        .help = "file to append events to, one JSON line each; created "
                "(mode 0640) if missing",
    },
    {
        .name = "mkdir",
        .type = PLUGBOARD_SETTING_BOOL,
        .default_value = "true",
        .help = "create the file's missing parent directories (mode 0750) "
                "at open; false makes a missing directory an error",
    },
    {
        .name = "fsync",
        .type = PLUGBOARD_SETTING_BOOL,
        .default_value = "true",
        .help = "flush each line to disk before reporting it delivered; "
                "false is faster but a power loss can lose recent lines",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {PLUGBOARD_EV_ANY, NULL};

/* Create the missing directories above path, like mkdir -p.  Returns 0
 * or an errno value. */
static int
s_make_parents(const char *path)
{
    char dir[4096];
    size_t len = strlen(path);
    if (len >= sizeof dir)
        return ENAMETOOLONG;
    memcpy(dir, path, len + 1);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            return errno;
        *p = '/';
    }
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return errno;
    return 0;
}

/* Open (or reopen) the file and remember its identity.  Returns 0 or an
 * errno value. */
static int
s_file_open_fd(s_file_t *f)
{
    int fd =
        open(f->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, S_FILE_MODE);
    if (fd < 0)
        return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return err;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return EISDIR;
    }
    if (f->fd >= 0)
        close(f->fd);
    f->fd = fd;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    return 0;
}

/* Reopen when the path no longer names the file we hold (rotated away or
 * deleted).  Returns 0 or an errno value; the old fd stays on failure. */
static int
s_file_follow(s_file_t *f)
{
    struct stat st;
    if (stat(f->path, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino)
        return 0;
    int err = s_file_open_fd(f);
    if (err == 0)
        f->api->log(f->host, PLUGBOARD_LOG_INFO,
                    "reopened path='%s' (moved or removed)", f->path);
    return err;
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    const char *path = api->setting_string(settings, "path");
    if (!path || !*path) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "setting 'path' is empty");
        return -1;
    }
    s_file_t *f = api->alloc(sizeof *f);
    if (!f)
        goto out_nomem;
    memset(f, 0, sizeof *f);
    f->api = api;
    f->host = host;
    f->fd = -1;
    f->fsync = api->setting_bool(settings, "fsync");
    size_t len = strlen(path);
    f->path = api->alloc(len + 1);
    if (!f->path)
        goto out_free_state;
    memcpy(f->path, path, len + 1);

    int err = api->setting_bool(settings, "mkdir") ? s_make_parents(path) : 0;
    if (err == 0)
        err = s_file_open_fd(f);
    if (err != 0) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot open '%s': %s", path,
                 strerror(err));
        api->free(f->path);
        api->free(f);
        return -1;
    }
    *state = f;
    return 0;

out_free_state:
    api->free(f);
out_nomem:
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
    return -1;
}

static void
s_close(void *state)
{
    s_file_t *f = state;
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    f->api->free(f->path);
    f->api->free(f);
}

static void
s_retry(plugboard_result_t *result, const char *what, const char *path, int err)
{
    result->outcome = PLUGBOARD_RETRY;
    snprintf(result->reason, sizeof result->reason, "cannot %s '%s': %s", what,
             path, strerror(err));
}

/*
 * After a short write, take the fragment back out so the retry does not
 * leave half a line in the file.  Only safe while nobody appended after
 * us; otherwise the fragment stays and readers skip the unparseable line.
 */
static void
s_undo_fragment(s_file_t *f, size_t written)
{
    off_t end = lseek(f->fd, 0, SEEK_CUR);
    struct stat st;
    if (end >= (off_t)written && fstat(f->fd, &st) == 0 && st.st_size == end &&
        ftruncate(f->fd, end - (off_t)written) == 0)
        return;
    f->api->log(f->host, PLUGBOARD_LOG_WARN,
                "partial line left in path='%s' after a short write", f->path);
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *result)
{
    s_file_t *f = state;
    const plugboard_host_api_t *api = f->api;

    int err = s_file_follow(f);
    if (err != 0) {
        s_retry(result, "reopen", f->path, err);
        return;
    }
    char *json = api->event_to_json(ev);
    if (!json) {
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason, "out of memory");
        return;
    }
    /* the line and its newline in one buffer, so one write(2) */
    size_t len = strlen(json);
    char *line = api->alloc(len + 1);
    if (!line) {
        api->free(json);
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason, "out of memory");
        return;
    }
    memcpy(line, json, len);
    line[len] = '\n';
    api->free(json);

    ssize_t n;
    do
        n = write(f->fd, line, len + 1);
    while (n < 0 && errno == EINTR);
    err = errno;
    api->free(line);
    if (n < 0) {
        s_retry(result, "append to", f->path, err);
        return;
    }
    if ((size_t)n != len + 1) {
        s_undo_fragment(f, (size_t)n);
        result->outcome = PLUGBOARD_RETRY;
        snprintf(result->reason, sizeof result->reason,
                 "short write to '%s': %zd of %zu bytes (disk full?)", f->path,
                 n, len + 1);
        return;
    }
    /* EINVAL/EROFS: the target (a pipe, /dev/stdout) cannot be synced */
    if (f->fsync && fdatasync(f->fd) != 0 && errno != EINVAL && errno != EROFS)
        s_retry(result, "sync", f->path, errno);
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "file",
    .version = "1.0.0",
    .summary = "append each event to a file as one JSON line",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = NULL,
    .flags = 0,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
