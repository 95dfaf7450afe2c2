/*
 * health.c - once-per-interval bookkeeping for owner notices: one entry
 * per (route, destination, cause) ever seen unhealthy.
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
