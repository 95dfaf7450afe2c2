/*
 * health.c - once-per-interval bookkeeping for owner notices: one entry
 * per (route, destination, cause) ever seen unhealthy; and the record of
 * refused credentials each connector instance keeps.
 */
#include "health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct s_entry {
    char *key;        /* "route\ndestination\ncause" */
    int64_t since_ms; /* this episode's start; -1 while healthy */
    int64_t sent_ms;  /* the last notice; -1 for none */
} s_entry_t;

struct pb_health {
    s_entry_t *entries;
    size_t count, cap;
};

pb_health_t *
pb_health_new(void)
{
    return calloc(1, sizeof(pb_health_t));
}

void
pb_health_destroy(pb_health_t **hp)
{
    if (!hp || !*hp)
        return;
    pb_health_t *h = *hp;
    *hp = NULL;
    for (size_t i = 0; i < h->count; i++)
        free(h->entries[i].key);
    free(h->entries);
    free(h);
}

/* The entry of the triple; created when create is set.  NULL when absent
 * or out of memory. */
static s_entry_t *
s_find(pb_health_t *h, const char *route, const char *dest, const char *cause,
       bool create)
{
    char key[512];
    snprintf(key, sizeof key, "%s\n%s\n%s", route, dest, cause);
    for (size_t i = 0; i < h->count; i++)
        if (strcmp(h->entries[i].key, key) == 0)
            return &h->entries[i];
    if (!create)
        return NULL;
    if (h->count == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        s_entry_t *grown = realloc(h->entries, cap * sizeof *grown);
        if (!grown)
            return NULL;
        h->entries = grown;
        h->cap = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        return NULL;
    h->entries[h->count] = (s_entry_t){copy, -1, -1};
    return &h->entries[h->count++];
}

bool
pb_health_due(pb_health_t *h, const char *route, const char *dest,
              const char *cause, bool unhealthy, int64_t interval_ms,
              int64_t now_ms, int64_t *since_ms)
{
    s_entry_t *e = s_find(h, route, dest, cause, unhealthy);
    if (!e)
        return false;
    if (!unhealthy) {
        e->since_ms = -1;
        return false;
    }
    if (e->since_ms < 0)
        e->since_ms = now_ms;
    if (since_ms)
        *since_ms = e->since_ms;
    return e->sent_ms < 0 || now_ms - e->sent_ms >= interval_ms;
}

void
pb_health_sent(pb_health_t *h, const char *route, const char *dest,
               const char *cause, int64_t now_ms)
{
    s_entry_t *e = s_find(h, route, dest, cause, true);
    if (e)
        e->sent_ms = now_ms;
}

/* ---------------------------------------------------------------- */
/* refused credentials                                               */
/* ---------------------------------------------------------------- */

void
pb_auth_init(pb_auth_t *a)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
}

void
pb_auth_release(pb_auth_t *a)
{
    pthread_mutex_destroy(&a->lock);
}

/* Length of the valid UTF-8 sequence at p (left bytes), 0 when not. */
static size_t
s_utf8_len(const unsigned char *p, size_t left)
{
    size_t n = p[0] < 0x80                    ? 1
               : p[0] >= 0xC2 && p[0] <= 0xDF ? 2
               : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
               : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4
                                              : 0;
    if (n == 0 || n > left)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    /* overlong, surrogate and out-of-range forms */
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0) ||
        (p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] >= 0x90))
        return 0;
    return n;
}

static void
s_clean(const char *in, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t left = strlen(in), o = 0;
    while (left && o + 1 < cap) {
        size_t n = s_utf8_len(p, left);
        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7F))) {
            out[o++] = n == 0 ? '?' : ' ';
            n = 1;
        } else if (o + n < cap) {
            memcpy(out + o, p, n);
            o += n;
        } else {
            break; /* never cut a character in two */
        }
        p += n;
        left -= n;
    }
    out[o] = '\0';
}

bool
pb_auth_refused(pb_auth_t *a, const char *reason, int64_t now_ms)
{
    pthread_mutex_lock(&a->lock);
    bool began = !atomic_load(&a->refused);
    if (began) {
        a->since_ms = now_ms;
        a->episode = 0;
    }
    a->last_ms = now_ms;
    a->episode++;
    s_clean(reason && *reason ? reason : "credentials refused", a->reason,
            sizeof a->reason);
    atomic_fetch_add(&a->refusals, 1);
    atomic_store(&a->refused, true);
    pthread_mutex_unlock(&a->lock);
    return began;
}

uint64_t
pb_auth_mark(pb_auth_t *a)
{
    return atomic_load(&a->refusals);
}

bool
pb_auth_succeeded(pb_auth_t *a, uint64_t mark)
{
    if (!atomic_load(&a->refused))
        return false;
    pthread_mutex_lock(&a->lock);
    bool ended = atomic_load(&a->refused) && atomic_load(&a->refusals) == mark;
    if (ended) {
        atomic_store(&a->refused, false);
        a->reason[0] = '\0';
        a->episode = 0;
    }
    pthread_mutex_unlock(&a->lock);
    return ended;
}

void
pb_auth_get(pb_auth_t *a, pb_auth_info_t *out)
{
    pthread_mutex_lock(&a->lock);
    out->refused = atomic_load(&a->refused);
    out->since_ms = out->refused ? a->since_ms : 0;
    out->last_ms = out->refused ? a->last_ms : 0;
    out->refusals = out->refused ? a->episode : 0;
    snprintf(out->reason, sizeof out->reason, "%s",
             out->refused ? a->reason : "");
    pthread_mutex_unlock(&a->lock);
}
