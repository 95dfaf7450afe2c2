/*
 * hostproc.h - run the real plugboard binary in a test: write a config,
 * start `plugboard run`, wait for /healthz, talk HTTP with libcurl, stop it
 * with SIGTERM and collect its exit status.
 */
#ifndef PB_HOSTPROC_H
#define PB_HOSTPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct pb_hostproc {
    char dir[4096];      /* the test's temporary directory (cwd of the host) */
    char config[4200];   /* dir/plugboard.cfg */
    char log[4200];      /* dir/host.log: the host's stderr */
    int port;
    pid_t pid;
} pb_hostproc_t;

/* A free TCP port on 127.0.0.1 (bound and released; good enough here). */
int pb_test_free_port(void);

/*
 * Write config_text to dir/plugboard.cfg (with "@PORT@" replaced by port
 * and "@DIR@" by dir), start the host there with the extra environment
 * entries ("NAME=value", NULL-terminated), and wait up to 10 s for
 * /healthz.  Returns false when it did not come up (the log tells why).
 */
bool pb_hostproc_start(pb_hostproc_t *hp, const char *dir, int port,
                       const char *config_text, const char *const *env);

/* SIGTERM and wait up to 30 s (then SIGKILL).  Returns the exit status
 * (0..255), or -1 when it had to be killed or died from a signal. */
int pb_hostproc_stop(pb_hostproc_t *hp);

/* Run `plugboard ARGS...` to completion in dir; returns the exit status
 * and the combined output in *out (malloc'd). */
int pb_hostproc_run_cli(const char *dir, const char *const *args,
                        const char *const *env, char **out);

/*
 * POST body to http://127.0.0.1:<port><path> with headers ("Name: value",
 * NULL-terminated).  Returns the HTTP status (or -1) and the response body
 * in *resp (malloc'd) when resp is non-NULL.
 */
int pb_http_post(int port, const char *path, const char *const *headers,
                 const void *body, size_t len, char **resp);

/* GET http://127.0.0.1:<port><path>: the status (or -1), the body in
 * *resp (malloc'd) when resp is non-NULL. */
int pb_http_get(int port, const char *path, char **resp);

/* A Stripe-Signature header value for body, signed now with secret. */
void pb_stripe_sign(const char *secret, const void *body, size_t len,
                    char *out, size_t out_len);

/* Poll until fn(ctx) is true or timeout_ms passes; returns the last
 * result. */
bool pb_wait_until(bool (*fn)(void *ctx), void *ctx, int timeout_ms);

/* Lines in a text file (0 when missing). */
size_t pb_count_lines(const char *path);

#endif /* PB_HOSTPROC_H */
