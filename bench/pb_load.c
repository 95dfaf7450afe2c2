/*
 * pb_load.c - an open-loop HTTP load generator for webhook latency at a
 * fixed rate (wrk, from Debian, only runs closed-loop: as fast as it can).
 *
 * Request i is due at start + i / rate.  At its due time it goes out on an
 * idle keep-alive connection (HTTP/1.1, one request in flight per
 * connection); when every connection is busy it waits, and its latency
 * still counts from the due time, so a stall shows in the percentiles
 * instead of slowing the load down (no coordinated omission).
 *
 * Each body is the template with "__EVENT_ID__" replaced by a fresh Stripe
 * event id, signed the way Stripe signs (Stripe-Signature: t=<now>,v1=
 * HMAC-SHA256(secret, "<t>.<body>")).
 *
 * With --tail FILE (use one connection and a low rate) it also waits,
 * after each answer, for one more line in FILE -- the file sink's output --
 * and reports due -> line visible as the delivered latency.
 *
 * Loopback only: --host must be 127.x.x.x.  Bounded: --duration (or
 * --count) and a 10 s grace for answers.  Prints one JSON object.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_CONN 256
#define S_GRACE_NS 10000000000ull

typedef struct s_conn {
    int fd;
    bool busy;
    uint64_t due;          /* of the request in flight */
    char *out;             /* request bytes still to send */
    size_t out_len, out_off;
    char in[16384];
    size_t in_len;
} conn_t;

static const char *s_host = "127.0.0.1";
static int s_port;
static const char *s_path = "/hooks/payments";
static const char *s_secret = "";
static char *s_template;
static size_t s_template_len;
static uint64_t s_run_id;

static uint64_t
s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
s_die(const char *what, const char *why)
{
    fprintf(stderr, "pb_load: %s: %s\n", what, why);
    exit(1);
}

static int
s_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)s_port)};
    inet_pton(AF_INET, s_host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        s_die("connect", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Build request seq: body from the template, signed now.  Caller frees. */
static char *
s_request(uint64_t seq, size_t *len)
{
    char id[64];
    snprintf(id, sizeof id, "evt_load%08llx%010llu",
             (unsigned long long)s_run_id, (unsigned long long)seq);
    const char *mark = strstr(s_template, "__EVENT_ID__");
    if (!mark)
        s_die("template", "no __EVENT_ID__ in the template");
    size_t pre = (size_t)(mark - s_template), idl = strlen(id);
    size_t post = s_template_len - pre - 12;
    size_t blen = pre + idl + post;
    char *body = malloc(blen + 32);
    memcpy(body, s_template, pre);
    memcpy(body + pre, id, idl);
    memcpy(body + pre + idl, mark + 12, post);

    long long t = (long long)time(NULL);
    char prefix[32];
    int plen = snprintf(prefix, sizeof prefix, "%lld.", t);
    unsigned char mac[32];
    unsigned int mlen = 0;
    char *msg = malloc((size_t)plen + blen);
    memcpy(msg, prefix, (size_t)plen);
    memcpy(msg + plen, body, blen);
    HMAC(EVP_sha256(), s_secret, (int)strlen(s_secret),
         (const unsigned char *)msg, (size_t)plen + blen, mac, &mlen);
    free(msg);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);

    size_t cap = blen + 512;
    char *req = malloc(cap);
    int n = snprintf(req, cap,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Type: application/json\r\n"
                     "Stripe-Signature: t=%lld,v1=%s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     s_path, s_host, s_port, t, hex, blen);
    memcpy(req + n, body, blen);
    free(body);
    *len = (size_t)n + blen;
    return req;
}

/* A complete response in c->in?  Returns its total length (0: not yet)
 * and the status. */
static size_t
s_response(conn_t *c, int *status)
{
    c->in[c->in_len < sizeof c->in ? c->in_len : sizeof c->in - 1] = '\0';
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end)
        return 0;
    size_t head = (size_t)(end - c->in) + 4;
    size_t clen = 0;
    char *cl = strcasestr(c->in, "\r\ncontent-length:");
    if (cl && cl < end)
        clen = (size_t)strtoul(cl + 17, NULL, 10);
    if (c->in_len < head + clen)
        return 0;
    *status = atoi(c->in + 9);
    return head + clen;
}

/* Lines in path so far (counting incrementally from *off). */
static long
s_count_lines(const char *path, off_t *off, long lines)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lines;
    char buf[65536];
    ssize_t n;
    while ((n = pread(fd, buf, sizeof buf, *off)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
        *off += n;
    }
    close(fd);
    return lines;
}

static int
s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
s_pct(const double *v, long n, double p)
{
    if (n == 0)
        return 0;
    return v[(long)(p * (double)(n - 1) + 0.5)];
}

int
main(int argc, char **argv)
{
    double rate = 100, duration = 5;
    long count = 0;
    int nconn = 8;
    const char *template_path = NULL, *tail = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host"))
            s_host = v;
        else if (!strcmp(k, "--port"))
            s_port = atoi(v);
        else if (!strcmp(k, "--path"))
            s_path = v;
        else if (!strcmp(k, "--rate"))
            rate = atof(v);
        else if (!strcmp(k, "--duration"))
            duration = atof(v);
        else if (!strcmp(k, "--count"))
            count = atol(v);
        else if (!strcmp(k, "--connections"))
            nconn = atoi(v);
        else if (!strcmp(k, "--secret"))
            s_secret = v;
        else if (!strcmp(k, "--template"))
            template_path = v;
        else if (!strcmp(k, "--tail"))
            tail = v;
        else
            s_die("usage", "unknown option");
    }
    if (strncmp(s_host, "127.", 4) != 0)
        s_die("host", "loopback addresses only");
    if (!s_port || !template_path || rate <= 0 || nconn < 1 ||
        nconn > S_MAX_CONN)
        s_die("usage", "pb_load --port P --template FILE --secret S "
                       "[--rate R] [--duration S | --count N] "
                       "[--connections C] [--tail FILE]");
    FILE *tf = fopen(template_path, "rb");
    if (!tf)
        s_die(template_path, strerror(errno));
    fseek(tf, 0, SEEK_END);
    s_template_len = (size_t)ftell(tf);
    rewind(tf);
    s_template = malloc(s_template_len + 1);
    if (fread(s_template, 1, s_template_len, tf) != s_template_len)
        s_die(template_path, "short read");
    s_template[s_template_len] = '\0';
    fclose(tf);
    s_run_id = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    if (!count)
        count = (long)(rate * duration);

    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    for (int i = 0; i < nconn; i++)
        conns[i].fd = s_connect();
    double *lat = calloc((size_t)count, sizeof *lat);
    double *dlv = calloc((size_t)count, sizeof *dlv);
    long done = 0, ok = 0, errors = 0, ndlv = 0, tail_lines = 0;
    off_t tail_off = 0;
    if (tail)
        tail_lines = s_count_lines(tail, &tail_off, 0);
    long next = 0;
    uint64_t gap = (uint64_t)(1e9 / rate);
    uint64_t start = s_now_ns();
    uint64_t stop_at = start + (uint64_t)count * gap + S_GRACE_NS;

    while (done < count && s_now_ns() < stop_at) {
        uint64_t now = s_now_ns();
        /* start every request that is due, on idle connections */
        for (int i = 0; i < nconn && next < count; i++) {
            uint64_t due = start + (uint64_t)next * gap;
            if (due > now)
                break;
            if (conns[i].busy)
                continue;
            conn_t *c = &conns[i];
            c->out = s_request((uint64_t)next, &c->out_len);
            c->out_off = 0;
            c->in_len = 0;
            c->due = due;
            c->busy = true;
            next++;
        }
        struct pollfd pf[S_MAX_CONN];
        for (int i = 0; i < nconn; i++) {
            pf[i].fd = conns[i].fd;
            pf[i].events = !conns[i].busy ? 0
                           : conns[i].out_off < conns[i].out_len ? POLLOUT
                                                                 : POLLIN;
            pf[i].revents = 0;
        }
        int timeout = 1;
        if (next < count) {
            uint64_t due = start + (uint64_t)next * gap;
            now = s_now_ns();
            timeout = due > now ? (int)((due - now) / 1000000) : 0;
        }
        poll(pf, (nfds_t)nconn, timeout);
        for (int i = 0; i < nconn; i++) {
            conn_t *c = &conns[i];
            if (!c->busy)
                continue;
            if (c->out_off < c->out_len) {
                ssize_t w = send(c->fd, c->out + c->out_off,
                                 c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0)
                    c->out_off += (size_t)w;
                else if (w < 0 && errno != EAGAIN)
                    s_die("send", strerror(errno));
                continue;
            }
            ssize_t r = recv(c->fd, c->in + c->in_len,
                             sizeof c->in - 1 - c->in_len, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN)) {
                /* the server closed: count an error, reconnect */
                errors++;
                lat[done++] = (double)(s_now_ns() - c->due) / 1e6;
                close(c->fd);
                c->fd = s_connect();
                c->busy = false;
                free(c->out);
                continue;
            }
            if (r < 0)
                continue;
            c->in_len += (size_t)r;
            int status = 0;
            if (!s_response(c, &status))
                continue;
            uint64_t t = s_now_ns();
            lat[done] = (double)(t - c->due) / 1e6;
            done++;
            if (status >= 200 && status < 300)
                ok++;
            else
                errors++;
            c->busy = false;
            free(c->out);
            if (tail && status >= 200 && status < 300) {
                uint64_t limit = t + 5000000000ull;
                long want = tail_lines + 1;
                while ((tail_lines = s_count_lines(tail, &tail_off,
                                                   tail_lines)) < want &&
                       s_now_ns() < limit)
                    usleep(50);
                if (tail_lines >= want)
                    dlv[ndlv++] = (double)(s_now_ns() - c->due) / 1e6;
            }
        }
    }
    double secs = (double)(s_now_ns() - start) / 1e9;
    qsort(lat, (size_t)done, sizeof *lat, s_cmp);
    qsort(dlv, (size_t)ndlv, sizeof *dlv, s_cmp);
    printf("{\"rate\":%.1f,\"connections\":%d,\"requests\":%ld,\"ok\":%ld,"
           "\"errors\":%ld,\"seconds\":%.3f,\"achieved_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"max_ms\":%.3f",
           rate, nconn, done, ok, errors, secs, (double)done / secs,
           s_pct(lat, done, 0.5), s_pct(lat, done, 0.9),
           s_pct(lat, done, 0.99), done ? lat[done - 1] : 0.0);
    if (tail)
        printf(",\"delivered\":%ld,\"delivered_p50_ms\":%.3f,"
               "\"delivered_p99_ms\":%.3f",
               ndlv, s_pct(dlv, ndlv, 0.5), s_pct(dlv, ndlv, 0.99));
    printf("}\n");
    for (int i = 0; i < nconn; i++) {
        if (conns[i].busy)
            free(conns[i].out);
        close(conns[i].fd);
    }
    free(conns);
    free(lat);
    free(dlv);
    free(s_template);
    return 0;
}
