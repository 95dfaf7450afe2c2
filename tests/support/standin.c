/*
 * standin.c - vendor stand-in servers as child processes of a test.
 */
#define _GNU_SOURCE
#include "standin.h"

#include <curl/curl.h>
#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"
#include "harness.h"

#define S_PYTHON "/usr/bin/python3"
#define S_START_WAIT_MS 10000
#define S_STOP_WAIT_MS 3000

struct pb_standin {
    pid_t pid;
    char *dir;
    char record[4200];
    char url[64];
};

static void
s_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Read the port the stand-in wrote once listening; 0 while not there. */
static int
s_read_port(const char *path)
{
    char *text = pb_test_read_file(path, NULL);
    int port = text != NULL ? atoi(text) : 0;

    free(text);
    return port;
}

static pid_t
s_spawn(const char *vendor, const char *record, const char *ready)
{
    char script[4096];
    char parent[32];
    pid_t pid;

    snprintf(script, sizeof script, "%s/tests/stand-ins/%s.py", PB_SOURCE_DIR,
             vendor);
    snprintf(parent, sizeof parent, "%ld", (long)getpid());
    pid = fork();
    if (pid != 0) {
        return pid;
    }
    execl(S_PYTHON, "python3", script, "--port", "0", "--record", record,
          "--ready", ready, "--parent", parent, (char *)NULL);
    _exit(127);
}

pb_standin_t *
pb_standin_start(const char *vendor, char *err, size_t err_len)
{
    pb_standin_t *s = calloc(1, sizeof *s);
    char ready[4200];
    int port = 0;
    int status;

    if (s == NULL || (s->dir = pb_test_tempdir("pb-standin")) == NULL) {
        snprintf(err, err_len, "cannot make a temporary directory");
        free(s);
        return NULL;
    }
    snprintf(s->record, sizeof s->record, "%s/requests.jsonl", s->dir);
    snprintf(ready, sizeof ready, "%s/port", s->dir);
    s->pid = s_spawn(vendor, s->record, ready);
    if (s->pid < 0) {
        snprintf(err, err_len, "cannot fork: %s", strerror(errno));
        pb_test_rmtree(s->dir);
        free(s->dir);
        free(s);
        return NULL;
    }
    for (int waited = 0; waited < S_START_WAIT_MS && port == 0; waited += 10) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            snprintf(err, err_len,
                     "stand-in '%s' exited at start (status "
                     "%d)",
                     vendor, status);
            s->pid = 0;
            pb_standin_stop(&s);
            return NULL;
        }
        port = s_read_port(ready);
        if (port == 0) {
            s_sleep_ms(10);
        }
    }
    if (port == 0) {
        snprintf(err, err_len, "stand-in '%s' did not start listening", vendor);
        pb_standin_stop(&s);
        return NULL;
    }
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", port);
    return s;
}

void
pb_standin_stop(pb_standin_t **sp)
{
    pb_standin_t *s;
    int status;

    if (sp == NULL || *sp == NULL) {
        return;
    }
    s = *sp;
    *sp = NULL;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        for (int waited = 0;; waited += 10) {
            if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
                break;
            }
            if (waited >= S_STOP_WAIT_MS) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, &status, 0);
                break;
            }
            s_sleep_ms(10);
        }
    }
    pb_test_rmtree(s->dir);
    free(s->dir);
    free(s);
}

const char *
pb_standin_url(const pb_standin_t *s)
{
    return s->url;
}

/* Collect an answer body. */
typedef struct s_sink {
    char *data;
    size_t len;
} s_sink_t;

static size_t
s_collect(char *p, size_t size, size_t n, void *ctx)
{
    s_sink_t *b = ctx;
    char *grown = realloc(b->data, b->len + size * n + 1);

    if (grown == NULL) {
        return 0;
    }
    b->data = grown;
    memcpy(b->data + b->len, p, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

static int
s_call(pb_standin_t *s, const char *method, const char *path, const char *json,
       char **answer)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: "
                                                   "application/json");
    char url[256];
    s_sink_t sink = {0};
    long status = -1;

    snprintf(url, sizeof url, "%s%s", s->url, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json != NULL ? json : "{}");
    }
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (answer != NULL) {
        *answer = sink.data;
    } else {
        free(sink.data);
    }
    return (int)status;
}

int
pb_standin_post(pb_standin_t *s, const char *path, const char *json)
{
    return s_call(s, "POST", path, json, NULL);
}

int
pb_standin_fault(pb_standin_t *s, const char *json)
{
    return pb_standin_post(s, "/__standin/faults", json);
}

int
pb_standin_seed(pb_standin_t *s, const char *json)
{
    return pb_standin_post(s, "/__standin/seed", json);
}

json_t *
pb_standin_state(pb_standin_t *s)
{
    char *answer = NULL;
    json_error_t jerr;
    json_t *state = NULL;

    if (s_call(s, "GET", "/__standin/state", NULL, &answer) == 200) {
        state = json_loads(answer, 0, &jerr);
    }
    free(answer);
    return state;
}

json_t *
pb_standin_records(pb_standin_t *s)
{
    size_t len = 0;
    char *text = pb_test_read_file(s->record, &len);
    json_t *all = json_array();
    char *line = text;

    while (line != NULL && *line != '\0') {
        char *end = strchr(line, '\n');
        json_error_t jerr;
        json_t *rec;

        if (end != NULL) {
            *end = '\0';
        }
        rec = json_loads(line, 0, &jerr);
        if (rec != NULL) {
            json_array_append_new(all, rec);
        }
        line = end != NULL ? end + 1 : NULL;
    }
    free(text);
    return all;
}

static bool
s_matches(json_t *rec, const char *method, const char *pattern)
{
    const char *m = json_string_value(json_object_get(rec, "method"));
    const char *p = json_string_value(json_object_get(rec, "path"));

    return m != NULL && p != NULL &&
           (method == NULL || strcmp(m, method) == 0) &&
           fnmatch(pattern, p, 0) == 0;
}

size_t
pb_standin_count(pb_standin_t *s, const char *method, const char *path_pattern)
{
    json_t *all = pb_standin_records(s);
    size_t n = 0;
    size_t i;
    json_t *rec;

    json_array_foreach(all, i, rec)
    {
        n += s_matches(rec, method, path_pattern);
    }
    json_decref(all);
    return n;
}

json_t *
pb_standin_request(pb_standin_t *s, const char *method,
                   const char *path_pattern, size_t n)
{
    json_t *all = pb_standin_records(s);
    json_t *found = NULL;
    size_t i;
    json_t *rec;

    json_array_foreach(all, i, rec)
    {
        if (s_matches(rec, method, path_pattern) && n-- == 0) {
            found = json_incref(rec);
            break;
        }
    }
    json_decref(all);
    return found;
}

uint8_t *
pb_test_event_frame(const char *type, const char *key, const char *json_data,
                    size_t *len)
{
    json_error_t jerr;
    json_t *data = json_loads(json_data != NULL ? json_data : "{}", 0, &jerr);
    pb_builder_t *b = pb_builder_new("harness", type);
    uint8_t *frame = NULL;
    int rc = b != NULL && json_is_object(data) ? 0 : -1;
    const char *k;
    json_t *v;

    if (rc == 0 && key != NULL) {
        rc = pb_builder_set_key(b, key);
    }
    json_object_foreach(data, k, v)
    {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

        if (rc == 0) {
            rc = text != NULL ? pb_builder_set_json(b, k, text, strlen(text))
                              : -1;
        }
        free(text);
    }
    if (rc == 0) {
        rc = pb_builder_encode(b, &frame, len);
    }
    pb_builder_destroy(&b);
    json_decref(data);
    return rc == 0 ? frame : NULL;
}

void
pb_test_frame_set_attempt(uint8_t *frame, size_t len, uint32_t n)
{
    /* the builder writes "attempt" (a fixstr of 7) then a positive
     * fixint */
    static const uint8_t key[] = "\xa7"
                                 "attempt";
    uint8_t *at = memmem(frame, len, key, sizeof key - 1);

    if (at != NULL && at + sizeof key - 1 < frame + len &&
        at[sizeof key - 1] < 0x80 && n > 0 && n < 128) {
        at[sizeof key - 1] = (uint8_t)n;
    }
}
