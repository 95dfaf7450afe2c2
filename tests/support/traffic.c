/*
 * traffic.c - steady webhook traffic from a thread, and stamp records.
 */
#define _GNU_SOURCE
#include "traffic.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define T_MAX_EVENTS 200000

struct pb_traffic {
    int port;
    char connector[64];
    char prefix[32];
    int pause_ms;
    pthread_t thread;
    atomic_bool stop;
    atomic_size_t acked, retried, bad;
    atomic_size_t next;       /* the event being posted */
    unsigned char *acked_map; /* T_MAX_EVENTS flags */
    char last_bad[256];
};

typedef struct s_answer {
    bool retry_after;
} answer_t;

static size_t
s_header(char *buf, size_t size, size_t n, void *ctx)
{
    answer_t *a = ctx;
    if (size * n > 12 && strncasecmp(buf, "Retry-After:", 12) == 0)
        a->retry_after = true;
    return size * n;
}

static size_t
s_discard(char *buf, size_t size, size_t n, void *ctx)
{
    return size * n;
}

static void *
s_run(void *arg)
{
    pb_traffic_t *t = arg;
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hooks/%s", t->port,
             t->connector);
    CURL *c = curl_easy_init();
    struct curl_slist *hl =
        curl_slist_append(NULL, "Content-Type: application/json");
    size_t n = 0;
    while (!atomic_load(&t->stop) && n < T_MAX_EVENTS) {
        atomic_store(&t->next, n);
        char body[256];
        snprintf(body, sizeof body,
                 "{\"type\":\"payment.failed\",\"key\":\"%s%zu@example.com\","
                 "\"dedupe\":\"%s%zu\"}",
                 t->prefix, n, t->prefix, n);
        answer_t a = {0};
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_discard);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
        long code = -1;
        CURLcode rc = curl_easy_perform(c);
        if (rc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) {
            t->acked_map[n] = 1;
            atomic_fetch_add(&t->acked, 1);
            n++;
        } else if (code == 503 && a.retry_after) {
            atomic_fetch_add(&t->retried, 1);
            usleep(20000); /* then the same event again */
        } else {
            snprintf(
                t->last_bad, sizeof t->last_bad, "event %zu: HTTP %ld (%s)%s",
                n, code, curl_easy_strerror(rc),
                code >= 500 && !a.retry_after ? " without Retry-After" : "");
            atomic_fetch_add(&t->bad, 1);
            n++;
        }
        if (t->pause_ms)
            usleep((useconds_t)t->pause_ms * 1000);
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return NULL;
}

pb_traffic_t *
pb_traffic_start(int port, const char *connector, const char *prefix,
                 int pause_ms)
{
    pb_traffic_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->acked_map = calloc(T_MAX_EVENTS, 1);
    t->port = port;
    t->pause_ms = pause_ms;
    snprintf(t->connector, sizeof t->connector, "%s", connector);
    snprintf(t->prefix, sizeof t->prefix, "%s", prefix);
    if (!t->acked_map || pthread_create(&t->thread, NULL, s_run, t) != 0) {
        free(t->acked_map);
        free(t);
        return NULL;
    }
    return t;
}

void
pb_traffic_stop(pb_traffic_t *t)
{
    if (!t || atomic_exchange(&t->stop, true))
        return;
    pthread_join(t->thread, NULL);
}

void
pb_traffic_destroy(pb_traffic_t **tp)
{
    if (!tp || !*tp)
        return;
    pb_traffic_stop(*tp);
    free((*tp)->acked_map);
    free(*tp);
    *tp = NULL;
}

size_t
pb_traffic_acked(const pb_traffic_t *t)
{
    return atomic_load(&((pb_traffic_t *)t)->acked);
}

size_t
pb_traffic_retried(const pb_traffic_t *t)
{
    return atomic_load(&((pb_traffic_t *)t)->retried);
}

size_t
pb_traffic_bad(const pb_traffic_t *t)
{
    return atomic_load(&((pb_traffic_t *)t)->bad);
}

const char *
pb_traffic_last_bad(const pb_traffic_t *t)
{
    return t->last_bad;
}

size_t
pb_traffic_next(const pb_traffic_t *t)
{
    return atomic_load(&((pb_traffic_t *)t)->next);
}

bool
pb_traffic_was_acked(const pb_traffic_t *t, size_t n)
{
    return n < T_MAX_EVENTS && t->acked_map[n];
}

size_t
pb_stamp_read(const char *path, pb_stamp_rec_t **out)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        if (!j)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            *out = realloc(*out, cap * sizeof **out);
        }
        pb_stamp_rec_t *r = &(*out)[n++];
        memset(r, 0, sizeof *r);
        const char *s = json_string_value(json_object_get(j, "stamp"));
        const char *l = json_string_value(json_object_get(j, "label"));
        const char *k = json_string_value(
            json_object_get(json_object_get(j, "event"), "key"));
        snprintf(r->stamp, sizeof r->stamp, "%s", s ? s : "");
        snprintf(r->label, sizeof r->label, "%s", l ? l : "");
        r->open = (int)json_integer_value(json_object_get(j, "open"));
        snprintf(r->key, sizeof r->key, "%s", k ? k : "");
        json_decref(j);
    }
    free(line);
    fclose(f);
    return n;
}

const pb_stamp_rec_t *
pb_stamp_find(const pb_stamp_rec_t *recs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(recs[i].key, key) == 0)
            return &recs[i];
    return NULL;
}
