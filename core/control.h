/*
 * control.h - the admin socket and the commands that use it.
 *
 * The running host listens on a Unix-domain stream socket,
 * <run_dir>/control.sock, created with mode 0600 so only its owner can
 * talk to it.  A client sends one request, a JSON object on one line
 * ({"cmd":"dlq.list","route":"x"}), and reads one JSON object back
 * ({"ok":true,...} or {"ok":false,"error":"..."}); then the connection
 * closes.  The server side runs on the main thread, one client at a time,
 * with a short timeout for reading the request so a stuck client cannot
 * hold the host's admin interface.
 */
#ifndef PB_CONTROL_H
#define PB_CONTROL_H

#include <jansson.h>
#include <stddef.h>

typedef struct pb_control pb_control_t;

/* Answer one request: cmd is the request's "cmd", req the whole request
 * (borrowed).  Returns a new JSON object, owned by the caller. */
typedef json_t *(*pb_control_fn)(void *ctx, const char *cmd, json_t *req);

/*
 * Listen on path (an old socket file there is replaced when no host
 * answers on it; a live one is an error).  Returns NULL and writes the
 * reason to err.
 */
pb_control_t *pb_control_listen(const char *path, char *err, size_t err_len);

/* The listening descriptor, to poll for readability. */
int pb_control_fd(const pb_control_t *ctl);

/* Accept one waiting client and answer it through fn. */
void pb_control_serve_one(pb_control_t *ctl, pb_control_fn fn, void *ctx);

/* Stop listening and remove the socket file.  NULLs *ctl. */
void pb_control_close(pb_control_t **ctl);

/*
 * Client: send req to the host listening on path and wait up to
 * timeout_ms for the answer.  Returns the answer (caller owns it), or NULL
 * with the reason in err (e.g. "no host is running on '...': connection
 * refused").
 */
json_t *pb_control_request(const char *path, json_t *req, int timeout_ms,
                           char *err, size_t err_len);

/* Error answer helper: {"ok":false,"error":"<msg>"}.  Caller owns it. */
json_t *pb_control_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* The socket path for a config's run directory: "<run_dir>/control.sock". */
void pb_control_path(const char *run_dir, char *out, size_t out_len);

/* `plugboard dlq ...` and `plugboard ctl ...`: argv[0] is the command. */
int pb_cli_dlq(int argc, char **argv);
int pb_cli_ctl(int argc, char **argv);

#endif /* PB_CONTROL_H */
