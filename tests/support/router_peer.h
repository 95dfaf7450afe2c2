/*
 * router_peer.h - a fake connector actor for router tests.
 *
 * A peer is one DEALER socket with a routing id (the connector name),
 * connected to a router endpoint, that speaks the protocol documented in
 * core/router.h: it sends HELO, EMIT and RES, and receives ACK and DLV.
 * It does nothing on its own: the test decides what to send and how to
 * answer each delivery, so every test reads as a conversation.
 *
 * Like every ZeroMQ socket, a peer is used and destroyed by the thread
 * that created it.  Receives always take a timeout so that a router that
 * stays silent makes a test fail instead of hang.
 */
#ifndef PB_ROUTER_PEER_H
#define PB_ROUTER_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"

typedef struct pb_peer pb_peer_t;

/* One message from the router. */
typedef struct pb_peer_msg {
    char cmd[8];   /* "ACK" or "DLV" (or whatever came) */
    int64_t at_ms; /* monotonic time it was received */
    /* ACK */
    uint64_t token;
    int32_t status;
    uint32_t accepted;
    uint32_t duplicates;
    uint32_t unmapped;
    /* DLV */
    int64_t id;
    uint32_t attempt;
    pb_envelope_t *env; /* the decoded frame; NULL if it did not
                           decode (a test failure in itself) */
} pb_peer_msg_t;

/*
 * Create a DEALER named name, connect it to endpoint and, when hello is
 * true, say HELO.  Returns NULL on failure.  Caller owns the result.
 */
pb_peer_t *pb_peer_new(void *zmq_ctx, const char *endpoint, const char *name,
                       bool hello);
/* Close the socket (linger 0) and free; idempotent, nulls *p. */
void pb_peer_destroy(pb_peer_t **p);

/*
 * Send cmd followed by n raw frames (parts[i], lens[i]); n may be 0.
 * Returns 0 or a negative code.  For hostile messages.
 */
int pb_peer_send(pb_peer_t *p, const char *cmd, const void *const *parts,
                 const size_t *lens, size_t n);

/* "EMIT" token frames...  Returns 0 or a negative code. */
int pb_peer_emit(pb_peer_t *p, uint64_t token, const uint8_t *const *frames,
                 const size_t *lens, size_t n);
int pb_peer_emit1(pb_peer_t *p, uint64_t token, const uint8_t *frame,
                  size_t len);

/* "RES" id attempt outcome after_ms | reason (reason may be NULL: no
 * reason frame).  Returns 0 or a negative code. */
int pb_peer_result(pb_peer_t *p, int64_t id, uint32_t attempt, uint8_t outcome,
                   int64_t after_ms, const char *reason);

/*
 * Wait up to timeout_ms for one message and parse it into *m (released
 * first is not needed; *m is overwritten).  Returns 0, PB_ETIMEDOUT when
 * nothing came, or PB_EPROTO when the message has an unexpected shape
 * (m->cmd still says what came).  Release m with pb_peer_msg_release.
 */
int pb_peer_recv(pb_peer_t *p, pb_peer_msg_t *m, int timeout_ms);
void pb_peer_msg_release(pb_peer_msg_t *m);

/* The id of a delivered event, "" when the frame did not decode. */
const char *pb_peer_msg_event_id(const pb_peer_msg_t *m);

#endif /* PB_ROUTER_PEER_H */
