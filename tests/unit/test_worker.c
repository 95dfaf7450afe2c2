/*
 * test_worker.c - the report a worker process sends with every reply
 * (its plugin's api->count and api->auth_failed calls), read by the host
 * as a hostile child may write it: a well-formed report is passed on
 * whole; one that does not read exactly, at any length, is refused whole
 * and calls nothing.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "health.h"
#include "metrics.h"
#include "worker.h"

typedef struct s_seen {
    int counts;
    char names[40][80];
    int64_t deltas[40];
    uint64_t dropped;
    unsigned causes;
    int auths;
    char reason[PB_AUTH_REASON_MAX];
} seen_t;

static void
on_count(void *ctx, const char *name, int64_t delta)
{
    seen_t *s = ctx;
    if (s->counts < 40) {
        snprintf(s->names[s->counts], sizeof s->names[0], "%s", name);
        s->deltas[s->counts] = delta;
    }
    s->counts++;
}

static void
on_dropped(void *ctx, uint64_t n, unsigned causes)
{
    seen_t *s = ctx;
    s->dropped += n;
    s->causes |= causes;
}

static void
on_auth(void *ctx, const char *reason)
{
    seen_t *s = ctx;
    s->auths++;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
}

/* Report bytes, written field by field as worker.h describes them. */
typedef struct s_report {
    uint8_t b[8192];
    size_t len;
} report_t;

static void
put(report_t *r, const void *p, size_t n)
{
    cr_assert_leq(r->len + n, sizeof r->b);
    memcpy(r->b + r->len, p, n);
    r->len += n;
}

static void
head(report_t *r, uint32_t dropped, uint8_t causes, const char *reason,
     uint8_t names)
{
    uint8_t version = 1, flag = reason != NULL;
    uint16_t rlen = reason ? (uint16_t)strlen(reason) : 0;
    r->len = 0;
    put(r, &version, 1);
    put(r, &dropped, 4);
    put(r, &causes, 1);
    put(r, &flag, 1);
    put(r, &rlen, 2);
    put(r, reason ? reason : "", rlen);
    put(r, &names, 1);
}

static void
name(report_t *r, const char *n, int64_t delta)
{
    uint8_t nl = (uint8_t)strlen(n);
    put(r, &nl, 1);
    put(r, n, nl);
    put(r, &delta, 8);
}

static int
read_report(const report_t *r, seen_t *s)
{
    memset(s, 0, sizeof *s);
    pb_worker_options_t to = {.on_count = on_count,
                              .on_dropped = on_dropped,
                              .on_auth_failed = on_auth,
                              .report_ctx = s};
    return pb_worker_read_report(&to, r->b, r->len);
}

Test(worker_report, a_well_formed_report_is_passed_on)
{
    report_t r;
    head(&r, 3, PB_CUSTOM_DROP_BAD_NAME, "HTTP 401: token expired", 2);
    name(&r, "sent", 4);
    name(&r, "bytes", 900);
    seen_t s;
    cr_assert_eq(read_report(&r, &s), 0);
    cr_expect_eq(s.counts, 2);
    cr_expect_str_eq(s.names[0], "sent");
    cr_expect_eq(s.deltas[0], 4);
    cr_expect_str_eq(s.names[1], "bytes");
    cr_expect_eq(s.deltas[1], 900);
    cr_expect_eq(s.dropped, 3);
    cr_expect_eq(s.causes, PB_CUSTOM_DROP_BAD_NAME);
    cr_expect_eq(s.auths, 1);
    cr_expect_str_eq(s.reason, "HTTP 401: token expired");

    /* the empty report of a call that counted nothing */
    head(&r, 0, 0, NULL, 0);
    cr_assert_eq(read_report(&r, &s), 0);
    cr_expect_eq(s.counts + s.auths, 0);
    cr_expect_eq(s.dropped, 0);
}

Test(worker_report, every_truncation_and_any_extra_byte_is_refused)
{
    report_t r;
    head(&r, 1, PB_CUSTOM_DROP_NEGATIVE, "SMTP 535", 2);
    name(&r, "sent", 1);
    name(&r, "d_0", 2);
    size_t whole = r.len;
    seen_t s;
    for (size_t len = 0; len < whole; len++) {
        r.len = len;
        cr_expect_eq(read_report(&r, &s), PB_EPROTO, "%zu of %zu bytes", len,
                     whole);
        cr_expect_eq(s.counts + s.auths, 0, "nothing called at %zu", len);
        cr_expect_eq(s.dropped, 0);
    }
    r.len = whole;
    put(&r, "x", 1);
    cr_expect_eq(read_report(&r, &s), PB_EPROTO, "a byte left over");
    cr_expect_eq(s.counts, 0);
}

Test(worker_report, lengths_past_the_bounds_are_refused)
{
    report_t r;
    seen_t s;
    /* 33 names */
    head(&r, 0, 0, NULL, PB_CUSTOM_MAX + 1);
    for (int i = 0; i <= PB_CUSTOM_MAX; i++) {
        char n[16];
        snprintf(n, sizeof n, "n_%d", i);
        name(&r, n, 1);
    }
    cr_expect_eq(read_report(&r, &s), PB_EPROTO);
    cr_expect_eq(s.counts, 0);
    /* a name of 0 and of 64 bytes */
    head(&r, 0, 0, NULL, 1);
    name(&r, "", 1);
    cr_expect_eq(read_report(&r, &s), PB_EPROTO);
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    head(&r, 0, 0, NULL, 1);
    name(&r, long_name, 1);
    cr_expect_eq(read_report(&r, &s), PB_EPROTO);
    /* a reason of 256 bytes, and one with a NUL inside */
    char big[300];
    memset(big, 'r', 256);
    big[256] = '\0';
    head(&r, 0, 0, big, 0);
    cr_expect_eq(read_report(&r, &s), PB_EPROTO);
    head(&r, 0, 0, "abc", 0);
    r.b[9 + 1] = '\0'; /* "a\0c" */
    cr_expect_eq(read_report(&r, &s), PB_EPROTO);
    cr_expect_eq(s.auths, 0);
    /* another version, an auth flag that is neither 0 nor 1 */
    head(&r, 0, 0, NULL, 0);
    r.b[0] = 2;
    cr_expect_eq(read_report(&r, &s), PB_EPROTO);
    head(&r, 0, 0, NULL, 0);
    r.b[6] = 7;
    cr_expect_eq(read_report(&r, &s), PB_EPROTO);
    cr_expect_eq(pb_worker_read_report(
                     &(pb_worker_options_t){.on_count = on_count}, NULL, 0),
                 PB_EPROTO);
}

Test(worker_report, garbage_never_crashes_and_names_are_checked_by_the_host)
{
    /* random bytes of every length up to 3000: refused or read, never a
     * read past the end (ASan would say so) */
    report_t r;
    seen_t s;
    unsigned seed = 7;
    for (int round = 0; round < 3000; round++) {
        r.len = (size_t)round;
        for (size_t i = 0; i < r.len; i++) {
            seed = seed * 1103515245u + 12345u;
            r.b[i] = (uint8_t)(seed >> 16);
        }
        if (r.len > 0 && round % 2)
            r.b[0] = 1; /* the right version, more often */
        read_report(&r, &s);
    }
    /* a report may name anything that fits the bounds: the host's
     * counters refuse what is not [a-z0-9_] or is negative */
    pb_metrics_t *m = pb_metrics_new();
    pb_mconn_t *c = pb_metrics_connector(m, "out");
    head(&r, 0, 0, NULL, 2);
    name(&r, "Bad Name", 1);
    name(&r, "sent", -5);
    cr_assert_eq(read_report(&r, &s), 0);
    cr_expect_eq(s.counts, 2);
    for (int i = 0; i < s.counts; i++)
        cr_expect_neq(pb_mconn_custom(c, s.names[i], s.deltas[i]), 0, "%s",
                      s.names[i]);
    pb_metrics_destroy(&m);
}
