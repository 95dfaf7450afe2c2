/*
 * scaffold.c - `plugboard new-connector`: the embedded sdk/templates/
 * files, with {{name}}-style placeholders filled, written into a new
 * project directory.
 *
 * Placeholders: {{name}} the connector name, {{ident}} the name as a C
 * identifier ('-' becomes '_'), {{version}} the host version, {{abi}} the
 * connector ABI.  A template's path becomes the file's path with ".in"
 * dropped and "connector" in its base name replaced by the name
 * (tests/test_connector.c.in -> tests/test_<name>.c).
 */
#define _GNU_SOURCE
#include "scaffold.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <plugboard/plugboard.h>

#include "embedded.h"
#include "error.h"

#define S_PATH_MAX 4096

const char pb_scaffold_help[] =
    "usage: plugboard new-connector NAME [DIR]\n"
    "\n"
    "Write a new connector project into DIR (default ./NAME), to build out\n"
    "of this tree against the installed SDK:\n"
    "  CMakeLists.txt        find_package(plugboard), pkg-config fallback\n"
    "  NAME.c                the connector, every callback stubbed to a\n"
    "                        clear \"not supported\" answer\n"
    "  README.md             settings, events and failure modes to fill in\n"
    "  tests/test_NAME.c     a Criterion test using the SDK harness\n"
    "  plugin-check.cfg      the settings plugin-check opens it with\n"
    "Existing files are never overwritten: nothing is written when one of\n"
    "them exists.  NAME is [a-z][a-z0-9_-]*, at most 63 characters.\n"
    "Then: cmake -S DIR -B DIR/build && cmake --build DIR/build &&\n"
    "      (cd DIR/build && ctest); see docs/sdk.md.\n";

static bool
s_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63 || !(name[0] >= 'a' && name[0] <= 'z'))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    return true;
}

/* Growing text buffer; on allocation failure it stays NULL. */
typedef struct s_buf {
    char *data;
    size_t len, cap;
    bool failed;
} s_buf_t;

static void
s_append(s_buf_t *b, const char *text, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, text, n);
    b->len += n;
    b->data[b->len] = '\0';
}

typedef struct s_vars {
    const char *name;
    char ident[64];
    char abi[16];
} s_vars_t;

static const char *
s_var(const s_vars_t *v, const char *key, size_t len)
{
    if (len == 4 && strncmp(key, "name", 4) == 0)
        return v->name;
    if (len == 5 && strncmp(key, "ident", 5) == 0)
        return v->ident;
    if (len == 7 && strncmp(key, "version", 7) == 0)
        return PB_VERSION;
    if (len == 3 && strncmp(key, "abi", 3) == 0)
        return v->abi;
    return NULL;
}

/* text with {{var}} filled; unknown placeholders stay as they are.
 * Caller frees the result; NULL when out of memory. */
static char *
s_fill(const char *text, size_t len, const s_vars_t *v, size_t *out_len)
{
    s_buf_t b = {0};
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *open = memmem(p, (size_t)(end - p), "{{", 2);
        if (!open) {
            s_append(&b, p, (size_t)(end - p));
            break;
        }
        s_append(&b, p, (size_t)(open - p));
        const char *close = memmem(open, (size_t)(end - open), "}}", 2);
        const char *val =
            close ? s_var(v, open + 2, (size_t)(close - open - 2)) : NULL;
        if (val) {
            s_append(&b, val, strlen(val));
            p = close + 2;
        } else {
            s_append(&b, "{{", 2);
            p = open + 2;
        }
    }
    if (!b.data)
        s_append(&b, "", 0);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    *out_len = b.len;
    return b.data;
}

/* The output path of template rel, relative to the project. */
static void
s_target(const char *rel, const char *name, char *out, size_t len)
{
    char tmp[S_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", rel);
    size_t n = strlen(tmp);
    if (n > 3 && strcmp(tmp + n - 3, ".in") == 0)
        tmp[n - 3] = '\0';
    const char *base = strrchr(tmp, '/');
    base = base ? base + 1 : tmp;
    const char *hit = strstr(base, "connector");
    if (!hit) {
        snprintf(out, len, "%s", tmp);
        return;
    }
    snprintf(out, len, "%.*s%s%s", (int)(hit - tmp), tmp, name,
             hit + strlen("connector"));
}

/* mkdir -p of the directory part of path. */
static int
s_make_parents(const char *path)
{
    char dir[S_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(dir, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int
s_write_new(const char *path, const char *data, size_t len)
{
    if (s_make_parents(path) != 0)
        return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = errno;
            close(fd);
            unlink(path);
            errno = err;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return close(fd);
}

static size_t
s_count_templates(void)
{
    size_t n = 0;
    while (pb_embedded_templates[n].path)
        n++;
    return n;
}

/* Every target path; PB_EEXIST naming the first that exists. */
static int
s_plan(const char *name, const char *dir, char (*paths)[S_PATH_MAX], size_t n,
       char *err, size_t err_len)
{
    size_t clashes = 0;
    for (size_t i = 0; i < n; i++) {
        char rel[S_PATH_MAX];
        s_target(pb_embedded_templates[i].path, name, rel, sizeof rel);
        int w = snprintf(paths[i], S_PATH_MAX, "%s/%s", dir, rel);
        if (w < 0 || w >= S_PATH_MAX) {
            snprintf(err, err_len, "path too long under '%s'", dir);
            return PB_EINVAL;
        }
        struct stat st;
        if (lstat(paths[i], &st) == 0 && clashes++ == 0)
            snprintf(err, err_len, "refusing to overwrite '%s'", paths[i]);
    }
    if (clashes > 1) {
        size_t used = strlen(err);
        snprintf(err + used, err_len - used, " (and %zu more files)",
                 clashes - 1);
    }
    return clashes ? PB_EEXIST : 0;
}

int
pb_scaffold_write(const char *name, const char *dir, FILE *report, char *err,
                  size_t err_len)
{
    if (!name || !s_name_valid(name)) {
        snprintf(err, err_len,
                 "invalid connector name '%s': use [a-z][a-z0-9_-]*, at "
                 "most 63 characters",
                 name ? name : "");
        return PB_EINVAL;
    }
    s_vars_t v = {.name = name};
    snprintf(v.ident, sizeof v.ident, "%s", name);
    for (char *p = v.ident; *p; p++)
        if (*p == '-')
            *p = '_';
    snprintf(v.abi, sizeof v.abi, "%d", PLUGBOARD_ABI_VERSION);

    size_t n = s_count_templates();
    char(*paths)[S_PATH_MAX] = calloc(n ? n : 1, sizeof *paths);
    if (!paths) {
        snprintf(err, err_len, "out of memory");
        return PB_ENOMEM;
    }
    int rc = s_plan(name, dir ? dir : name, paths, n, err, err_len);
    size_t written = 0;
    for (; rc == 0 && written < n; written++) {
        const pb_embedded_t *t = &pb_embedded_templates[written];
        size_t len = 0;
        char *text = s_fill(t->data, t->len, &v, &len);
        if (!text) {
            snprintf(err, err_len, "out of memory");
            rc = PB_ENOMEM;
            break;
        }
        if (s_write_new(paths[written], text, len) != 0) {
            snprintf(err, err_len, "cannot write '%s': %s", paths[written],
                     strerror(errno));
            rc = errno == EEXIST ? PB_EEXIST : PB_EIO;
        } else if (report) {
            fprintf(report, "created %s\n", paths[written]);
        }
        free(text);
        if (rc != 0)
            break;
    }
    /* all or nothing: take back what this call wrote */
    for (size_t i = 0; rc != 0 && i < written; i++)
        unlink(paths[i]);
    free(paths);
    return rc;
}

int
pb_scaffold_cmd(int argc, char **argv)
{
    if (argc >= 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(pb_scaffold_help, stdout);
        return 0;
    }
    if (argc < 2 || argc > 3 || argv[1][0] == '-') {
        fputs(pb_scaffold_help, stderr);
        return 2;
    }
    const char *name = argv[1];
    const char *dir = argc == 3 ? argv[2] : name;
    char err[S_PATH_MAX + 128];
    int rc = pb_scaffold_write(name, dir, stdout, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", err);
        return rc == PB_EINVAL ? 2 : 1;
    }
    printf("\nnext:\n"
           "  cmake -S %s -B %s/build    (-DCMAKE_PREFIX_PATH=<plugboard "
           "prefix> if not standard)\n"
           "  cmake --build %s/build && (cd %s/build && ctest "
           "--output-on-failure)\n"
           "  plugboard plugin-check %s/build/%s.so --settings "
           "%s/plugin-check.cfg\n"
           "the SDK guide is docs/sdk.md (installed with the SDK "
           "documentation)\n",
           dir, dir, dir, dir, dir, name, dir);
    return 0;
}
