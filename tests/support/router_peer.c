/*
 * router_peer.c - a fake connector actor for router tests: one DEALER
 * socket speaking the router protocol, driven by the test thread.
 */
#include "router_peer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "error.h"
#include "hostapi.h"
#include "router.h"

struct pb_peer {
    void *sock;
};

pb_peer_t *
pb_peer_new(void *zmq_ctx, const char *endpoint, const char *name, bool hello)
{
    pb_peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->sock = zmq_socket(zmq_ctx, ZMQ_DEALER);
    int zero = 0;
    if (!p->sock ||
        zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, name, strlen(name)) != 0 ||
        zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(p->sock, ZMQ_SNDHWM, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(p->sock, ZMQ_RCVHWM, &zero, sizeof zero) != 0 ||
        zmq_connect(p->sock, endpoint) != 0)
        goto out_destroy;
    if (hello && pb_peer_send(p, "HELO", NULL, NULL, 0) != 0)
        goto out_destroy;
    return p;

out_destroy:
    pb_peer_destroy(&p);
    return NULL;
}

void
pb_peer_destroy(pb_peer_t **pp)
{
    if (!pp || !*pp)
        return;
    pb_peer_t *p = *pp;
    *pp = NULL;
    if (p->sock)
        zmq_close(p->sock);
    free(p);
}

int
pb_peer_send(pb_peer_t *p, const char *cmd, const void *const *parts,
             const size_t *lens, size_t n)
{
    if (zmq_send(p->sock, cmd, strlen(cmd), n ? ZMQ_SNDMORE : 0) < 0)
        return PB_EIO;
    for (size_t i = 0; i < n; i++)
        if (zmq_send(p->sock, parts[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) <
            0)
            return PB_EIO;
    return 0;
}

int
pb_peer_emit(pb_peer_t *p, uint64_t token, const uint8_t *const *frames,
             const size_t *lens, size_t n)
{
    const void *parts[65];
    size_t plens[65];
    if (n > 64)
        return PB_EINVAL;
    parts[0] = &token;
    plens[0] = sizeof token;
    for (size_t i = 0; i < n; i++) {
        parts[i + 1] = frames[i];
        plens[i + 1] = lens[i];
    }
    return pb_peer_send(p, "EMIT", parts, plens, n + 1);
}

int
pb_peer_emit1(pb_peer_t *p, uint64_t token, const uint8_t *frame, size_t len)
{
    return pb_peer_emit(p, token, &frame, &len, 1);
}

int
pb_peer_result(pb_peer_t *p, int64_t id, uint32_t attempt, uint8_t outcome,
               int64_t after_ms, const char *reason)
{
    uint8_t buf[21];
    memcpy(buf, &id, 8);
    memcpy(buf + 8, &attempt, 4);
    buf[12] = outcome;
    memcpy(buf + 13, &after_ms, 8);
    const void *parts[2] = {buf, reason};
    size_t lens[2] = {sizeof buf, reason ? strlen(reason) : 0};
    return pb_peer_send(p, "RES", parts, lens, reason ? 2 : 1);
}

/* Receive every part of one message; returns the count (at most max). */
static int
s_recv_parts(pb_peer_t *p, zmq_msg_t *parts, int max)
{
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_init(&tmp);
        if (zmq_msg_recv(&tmp, p->sock, 0) < 0) {
            zmq_msg_close(&tmp);
            break;
        }
        more = zmq_msg_more(&tmp);
        if (n < max)
            parts[n++] = tmp;
        else
            zmq_msg_close(&tmp);
    }
    return n;
}

static int
s_parse(pb_peer_msg_t *m, zmq_msg_t *parts, int n)
{
    size_t clen = zmq_msg_size(&parts[0]);
    if (clen >= sizeof m->cmd)
        clen = sizeof m->cmd - 1;
    memcpy(m->cmd, zmq_msg_data(&parts[0]), clen);
    m->cmd[clen] = '\0';
    if (strcmp(m->cmd, "ACK") == 0) {
        if (n != 2 || zmq_msg_size(&parts[1]) != PB_ACK_LEN)
            return PB_EPROTO;
        const uint8_t *b = zmq_msg_data(&parts[1]);
        memcpy(&m->token, b, 8);
        memcpy(&m->status, b + 8, 4);
        memcpy(&m->accepted, b + 12, 4);
        memcpy(&m->duplicates, b + 16, 4);
        memcpy(&m->unmapped, b + 20, 4);
        return 0;
    }
    if (strcmp(m->cmd, "DLV") == 0) {
        if (n != 3 || zmq_msg_size(&parts[1]) != 12)
            return PB_EPROTO;
        const uint8_t *b = zmq_msg_data(&parts[1]);
        memcpy(&m->id, b, 8);
        memcpy(&m->attempt, b + 8, 4);
        int err;
        char why[128];
        m->env =
            pb_envelope_decode(zmq_msg_data(&parts[2]), zmq_msg_size(&parts[2]),
                               NULL, &err, why, sizeof why);
        return m->env ? 0 : PB_EPROTO;
    }
    return PB_EPROTO;
}

int
pb_peer_recv(pb_peer_t *p, pb_peer_msg_t *m, int timeout_ms)
{
    memset(m, 0, sizeof *m);
    zmq_pollitem_t item = {.socket = p->sock, .events = ZMQ_POLLIN};
    int64_t deadline = pb_monotonic_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - pb_monotonic_ms();
        if (left < 0)
            left = 0;
        int rc = zmq_poll(&item, 1, (long)left);
        if (rc > 0)
            break;
        if (rc < 0 && errno == EINTR)
            continue;
        return PB_ETIMEDOUT;
    }
    zmq_msg_t parts[8];
    int n = s_recv_parts(p, parts, 8);
    m->at_ms = pb_monotonic_ms();
    int rc = n > 0 ? s_parse(m, parts, n) : PB_EPROTO;
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
    return rc;
}

void
pb_peer_msg_release(pb_peer_msg_t *m)
{
    if (m)
        pb_envelope_destroy(&m->env);
}

const char *
pb_peer_msg_event_id(const pb_peer_msg_t *m)
{
    return m->env ? pb_envelope_id(m->env) : "";
}
