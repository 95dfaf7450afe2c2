/*
 * connector.h - one running connector instance: an actor thread.
 *
 * The actor owns the plugin instance's state and one DEALER socket to the
 * router (routing id = the connector's name).  open, deliver, webhook and
 * close all run on the actor's thread, one at a time, except that with
 * concurrency above 1 deliver runs on a pool of threads the actor starts
 * after open and joins before close; only the actor touches the socket.  Webhook requests
 * arrive from the HTTP listener's thread through a locked queue and an
 * eventfd the actor polls beside its socket; the actor calls the plugin,
 * sends the staged events to the router and parks the request until the
 * router's acknowledgement says they are durable, handling other work
 * meanwhile.
 */
#ifndef PB_CONNECTOR_H
#define PB_CONNECTOR_H

#include <stdbool.h>
#include <stdint.h>

#include <plugboard/plugboard.h>

#include "config.h"
#include "http.h"
#include "loader.h"
#include "metrics.h"

typedef struct pb_connector pb_connector_t;

typedef struct pb_connector_options {
    void *zmq_ctx;
    const char *router_endpoint;
    const char *name;                     /* copied */
    const pb_plugin_t *plugin;            /* borrowed until stop returns */
    const plugboard_settings_t *settings; /* borrowed until stop returns */
    int64_t ack_timeout_ms;               /* webhook answered 503 when the
                                             router does not acknowledge */
    const char *routing_id;               /* NULL = name; "name#gen" for an
                                             instance started beside the
                                             running one (copied) */
    /* isolation = "process": the plugin runs in a supervised worker
     * child (worker.h) that binds a copy of conf and loads the plugin's
     * private copy; the actor forwards deliveries and webhooks to it */
    const char *isolation;                /* "process", or NULL/"thread" */
    const char *config_path;              /* named in its messages */
    const char *log_level;                /* the worker's; NULL: info */
    const pb_connector_conf_t *conf;      /* the entry a worker binds:
                                             copied by spawn */
    const char *run_dir;                  /* copied */
    int64_t deliver_timeout_ms;           /* a worker call not answered
                                             in 9/10 of it is killed */
    pb_mconn_t *metrics;                  /* borrowed until stop returns;
                                             NULL: none */
    /* deliveries run at once: above 1, deliver() runs on that many pool
     * threads (one plugin state each, unless the plugin declares
     * PLUGBOARD_DELIVER_THREAD_SAFE) while the actor keeps the socket;
     * ignored with process isolation */
    int concurrency;
} pb_connector_options_t;

/*
 * Start the actor and open the plugin on it.  Returns once open has
 * returned: NULL with open's message in err when it failed.
 */
pb_connector_t *pb_connector_start(const pb_connector_options_t *opt,
                                   char *err, size_t err_len);

/*
 * The same in two steps, so a caller can do other work while plugins
 * open: spawn starts the thread and returns at once (NULL with the reason
 * in err when it could not); wait_open waits up to timeout_ms (< 0: for
 * ever) and returns 0 once open succeeded, PB_ETIMEDOUT while it still
 * runs, or PB_EIO with open's message in err.  After a failure, or to
 * abandon an instance whose open succeeded, call pb_connector_stop (it
 * joins the thread, so only once open has returned).
 */
pb_connector_t *pb_connector_spawn(const pb_connector_options_t *opt,
                                   char *err, size_t err_len);
int pb_connector_wait_open(pb_connector_t *c, int64_t timeout_ms, char *err,
                           size_t err_len);

/* Has the router said BYE (a newer instance or a reload replaced this
 * one)?  Everything it was sent before has then been read: once it has
 * finished those, pb_connector_stop does not wait long.  Thread-safe. */
bool pb_connector_retired(const pb_connector_t *c);

/*
 * Stop: finish queued webhooks, wait (bounded) for their acknowledgements,
 * close the plugin instance and join the thread.  NULLs *c.
 */
void pb_connector_stop(pb_connector_t **c);

/*
 * Hand a complete webhook request to the actor.  Thread-safe.  Returns 0
 * (the actor now owns w and will complete it), PB_ENOENT when the plugin
 * takes no webhooks, or PB_ESTOPPING.
 */
int pb_connector_submit_webhook(pb_connector_t *c, pb_webhook_t *w);

const char *pb_connector_name(const pb_connector_t *c);

/* What status shows of an instance: "running", or for a process-isolated
 * one "starting" (restarting after a death) or "failed", its restarts and
 * why it last died.  Main thread, on an instance whose open returned. */
typedef struct pb_connector_info {
    const char *state;
    int restarts;
    int pid;              /* its worker process, 0 for a thread */
    char failure[256];
} pb_connector_info_t;

void pb_connector_info(pb_connector_t *c, pb_connector_info_t *out);

#endif /* PB_CONNECTOR_H */
