/*
 * hostapi.h - the host API table handed to connectors, and the per-instance
 * handle (struct plugboard_host) it is called with.
 *
 * The table is one static, immutable object shared by every connector.  The
 * handle says which connector is calling and where its emitted events go:
 * the connector actor points emit at its staging area; the test harness
 * points it at a list.
 */
#ifndef PB_HOSTAPI_H
#define PB_HOSTAPI_H

#include <plugboard/plugboard.h>

#include "envelope.h"

/* Takes ownership of b whatever it returns; 0 or a negative code. */
typedef int (*pb_emit_fn)(void *ctx, pb_builder_t *b);
/* Adds delta to a connector's custom counter. */
typedef void (*pb_count_fn)(void *ctx, const char *name, int64_t delta);
/* The vendor refused the connector's credentials (reason may be NULL). */
typedef void (*pb_auth_failed_fn)(void *ctx, const char *reason);

/* A pull source's calls (api->flush, durable, run_wait): see plugboard.h.
 * The connector checks that the caller is its run thread. */
typedef struct pb_run_fns {
    int (*flush)(void *ctx, uint64_t *ticket);
    int (*durable)(void *ctx, uint64_t ticket);
    bool (*wait)(void *ctx, int64_t timeout_ms);
} pb_run_fns_t;

struct plugboard_host {
    char name[64];     /* connector instance name, for logs and sources */
    pb_emit_fn emit;
    pb_count_fn count;
    pb_auth_failed_fn auth_failed; /* NULL: the call does nothing */
    const pb_run_fns_t *run;       /* NULL: not a pull source's host */
    void *ctx;
};

/* The table; static, valid for the life of the process. */
const plugboard_host_api_t *pb_host_api(void);

/* Prepare a handle for connector name (copied, truncated to 63 bytes). */
void pb_host_init(plugboard_host_t *host, const char *name, pb_emit_fn emit,
                  pb_count_fn count, void *ctx);

/* Where api->auth_failed goes for this handle (after pb_host_init). */
void pb_host_on_auth_failed(plugboard_host_t *host, pb_auth_failed_fn fn);

/* Where api->flush, durable and run_wait go (fns borrowed, static). */
void pb_host_on_run(plugboard_host_t *host, const pb_run_fns_t *fns);

/* Wall and monotonic clocks in ms (also host API entries). */
int64_t pb_now_ms(void);
int64_t pb_monotonic_ms(void);

#endif /* PB_HOSTAPI_H */
