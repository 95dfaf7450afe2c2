/*
 * worker.h - process isolation: a connector instance's plugin runs in a
 * supervised child process, `plugboard worker`, instead of on the actor's
 * thread.
 *
 * The actor keeps its socket to the router, its webhook inbox and its
 * parking of webhooks; only the calls into the plugin move.  Each call is
 * one request over a ZeroMQ PAIR socket bound by the actor at
 * ipc://<run_dir>/w-<host pid>-<name>-<n>.sock (a new endpoint per child),
 * answered by the child with the outcome and the events the plugin
 * emitted during the call (already encoded):
 *
 *   child  -> actor   "WANT"                              (connected)
 *   actor  -> child   "CONF" config path | log level | name | plugin |
 *                            line:i32 | per setting: name |
 *                            kind:u8 line:i32 value
 *   child  -> actor   "HELO" version | "FAIL" reason      (after open)
 *   actor  -> child   "DLV"  id:i64 attempt:u32 | frame
 *   child  -> actor   "RES"  outcome:u8 after_ms:i64 | reason | frame...
 *   actor  -> child   "HOOK" method | path | query | received_ms:i64 |
 *                            headers (name NUL value NUL ...) | body
 *   child  -> actor   "HOKR" status:i32 | body | frame...
 *   actor  -> child   "STOP"                              (close, exit 0)
 *
 * One call at a time, so when the child dies (a signal, abort, exit) or
 * does not answer within the deadline (it is then killed), exactly the
 * call in progress fails: a delivery answers RETRY with the cause, which
 * spends that delivery's attempt, and a webhook answers 503; whatever the
 * router has not yet handed over stays pending.  The child is started
 * again after a backoff (100 ms, doubling, at most 5 s); five deaths
 * within 60 s mark the worker failed: every delivery is then answered
 * REJECT naming the cause (dead letters, with notices) and every webhook
 * 503, until an upgrade or reload replaces the instance.
 *
 * The child is given its connector's entry as the host parsed it (the
 * raw settings, secrets still as env:/file: references), binds it and
 * loads the exact plugin file the host loaded (its private copy): a
 * restart runs the configuration the host runs, never whatever the file
 * on disk says now.  It dies with the host (PR_SET_PDEATHSIG).
 *
 * A pb_worker_t is used by one thread, the actor's, except
 * pb_worker_info, which any thread may call.
 */
#ifndef PB_WORKER_H
#define PB_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plugboard/plugboard.h>

#include "config.h"

typedef struct pb_worker pb_worker_t;

/* Encoded envelopes a plugin emitted during one call. */
typedef struct pb_frames {
    uint8_t **data;
    size_t *len;
    size_t count, cap;
} pb_frames_t;

void pb_frames_release(pb_frames_t *f);

typedef struct pb_worker_options {
    void *zmq_ctx;
    const char *name;        /* connector name (copied) */
    const pb_frames_t *conf; /* the entry the child binds, from
                                pb_worker_conf: borrowed until stop */
    const char *plugin_file; /* the plugin file to load (copied) */
    const char *run_dir;     /* where the ipc endpoint goes (copied) */
    int64_t call_timeout_ms; /* a call not answered in time kills the
                                child (default 30 s) */
    int64_t open_timeout_ms; /* start-up, open included (default 20 s) */
} pb_worker_options_t;

/*
 * The CONF message for connector entry conf of the config at config_path
 * (named in the child's messages), with the host's log level (NULL:
 * info): a copy, so the entry may go away afterwards.  Returns 0, or
 * PB_EINVAL / PB_ENOMEM with the reason in err.  Caller releases out.
 */
int pb_worker_conf(pb_frames_t *out, const char *config_path,
                   const char *log_level, const pb_connector_conf_t *conf,
                   char *err, size_t err_len);

/*
 * Start the child and wait until its open returned.  NULL with the reason
 * in err (open's own message when open failed).  Caller owns the result.
 */
pb_worker_t *pb_worker_start(const pb_worker_options_t *opt, char *err,
                             size_t err_len);

/* Ask the child to close the plugin and exit; kill it when it does not
 * within 5 s.  NULLs *w. */
void pb_worker_stop(pb_worker_t **w);

/*
 * Deliver one event (hdr is the router's 12-byte id/attempt header).
 * Always fills res; frames the plugin emitted go to out (caller releases
 * them).
 */
void pb_worker_deliver(pb_worker_t *w, const uint8_t *hdr, const uint8_t *frame,
                       size_t len, plugboard_result_t *res, pb_frames_t *out);

/* Hand one webhook request to the plugin; fills resp (503 when the child
 * is not available or dies) and out. */
void pb_worker_webhook(pb_worker_t *w, const plugboard_request_t *req,
                       plugboard_response_t *resp, pb_frames_t *out);

/* Notice a child that died while idle and start it again when its
 * backoff has passed.  Call every turn of the actor's loop. */
void pb_worker_tick(pb_worker_t *w);

typedef struct pb_worker_info {
    const char *state; /* "running", "starting" (restarting) or
                          "failed" */
    int restarts;
    int pid;
    char failure[256]; /* why it last died, or why it failed */
} pb_worker_info_t;

/* Thread-safe snapshot. */
void pb_worker_info(pb_worker_t *w, pb_worker_info_t *out);

/* `plugboard worker ...`, the child's side.  Returns the exit status. */
int pb_worker_main(int argc, char **argv);

#endif /* PB_WORKER_H */
