/*
 * hostproc.c - start and stop the real host binary from tests.
 */
#define _GNU_SOURCE
#include "hostproc.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <plugboard/helpers.h>

extern char **environ;

int
pb_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static char *
s_replace_all(const char *text, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = strstr(text, from); p; p = strstr(p + fl, from))
        n++;
    char *out = malloc(strlen(text) + n * tl + 1);
    char *o = out;
    const char *p = text;
    for (const char *q; (q = strstr(p, from)); p = q + fl) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
    }
    strcpy(o, p);
    return out;
}

static char **
s_env(const char *const *extra)
{
    size_t n = 0, m = 0;
    while (environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **env = calloc(n + m + 1, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        env[k++] = (char *)extra[i];
    for (size_t i = 0; i < n; i++)
        env[k++] = environ[i];
    return env;
}

static bool
s_healthy(int port)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
    CURL *c = curl_easy_init();
    FILE *devnull = fopen("/dev/null", "w");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 500L);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, devnull);
    long code = 0;
    bool ok = curl_easy_perform(c) == CURLE_OK &&
              curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) ==
                  CURLE_OK &&
              code == 200;
    curl_easy_cleanup(c);
    fclose(devnull);
    return ok;
}

bool
pb_hostproc_start(pb_hostproc_t *hp, const char *dir, int port,
                  const char *config_text, const char *const *env)
{
    memset(hp, 0, sizeof *hp);
    snprintf(hp->dir, sizeof hp->dir, "%s", dir);
    snprintf(hp->config, sizeof hp->config, "%s/plugboard.cfg", dir);
    snprintf(hp->log, sizeof hp->log, "%s/host.log", dir);
    hp->port = port;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    char *a = s_replace_all(config_text, "@PORT@", ports);
    char *text = s_replace_all(a, "@DIR@", dir);
    free(a);
    FILE *f = fopen(hp->config, "w");
    if (!f) {
        free(text);
        return false;
    }
    fputs(text, f);
    fclose(f);
    free(text);

    char **envp = s_env(env);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(hp->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (chdir(dir) != 0)
            _exit(126);
        char *const argv[] = {(char *)PB_HOST_BINARY, "run", "-c",
                              hp->config, NULL};
        execve(PB_HOST_BINARY, argv, envp);
        _exit(127);
    }
    free(envp);
    if (pid < 0)
        return false;
    hp->pid = pid;
    for (int i = 0; i < 200; i++) {
        if (s_healthy(port))
            return true;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            hp->pid = 0;
            return false;
        }
        usleep(50000);
    }
    return false;
}

int
pb_hostproc_stop(pb_hostproc_t *hp)
{
    if (hp->pid <= 0)
        return -1;
    kill(hp->pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 600; i++) {
        pid_t r = waitpid(hp->pid, &status, WNOHANG);
        if (r == hp->pid) {
            hp->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(50000);
    }
    kill(hp->pid, SIGKILL);
    waitpid(hp->pid, &status, 0);
    hp->pid = 0;
    return -1;
}

int
pb_hostproc_run_cli(const char *dir, const char *const *args,
                    const char *const *env, char **out)
{
    char outpath[4200];
    snprintf(outpath, sizeof outpath, "%s/cli.out", dir);
    char **envp = s_env(env);
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = (char *)PB_HOST_BINARY;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (chdir(dir) != 0)
            _exit(126);
        execve(PB_HOST_BINARY, argv, envp);
        _exit(127);
    }
    free(envp);
    free(argv);
    int status = 0;
    waitpid(pid, &status, 0);
    if (out) {
        FILE *f = fopen(outpath, "r");
        size_t cap = 65536, len = 0;
        *out = calloc(1, cap + 1);
        if (f) {
            len = fread(*out, 1, cap, f);
            fclose(f);
        }
        (*out)[len] = '\0';
    }
    unlink(outpath);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct s_buf {
    char *data;
    size_t len;
} buf_t;

static size_t
s_collect(char *p, size_t size, size_t n, void *ctx)
{
    buf_t *b = ctx;
    char *grown = realloc(b->data, b->len + size * n + 1);
    if (!grown)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, p, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

int
pb_http_post(int port, const char *path, const char *const *headers,
             const void *body, size_t len, char **resp)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    buf_t b = {.data = calloc(1, 1), .len = 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    long code = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (resp)
        *resp = b.data;
    else
        free(b.data);
    return (int)code;
}

int
pb_http_get(int port, const char *path, char **resp)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    buf_t b = {.data = calloc(1, 1), .len = 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    long code = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (resp)
        *resp = b.data;
    else
        free(b.data);
    return (int)code;
}

void
pb_stripe_sign(const char *secret, const void *body, size_t len, char *out,
               size_t out_len)
{
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)time(NULL));
    size_t tl = strlen(t);
    char *msg = malloc(tl + 1 + len);
    memcpy(msg, t, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    uint8_t mac[PLUGBOARD_SHA256_LEN];
    plugboard_hmac_sha256(secret, strlen(secret), msg, tl + 1 + len, mac);
    free(msg);
    char hex[2 * PLUGBOARD_SHA256_LEN + 1];
    plugboard_hex_encode(mac, sizeof mac, hex);
    snprintf(out, out_len, "t=%s,v1=%s", t, hex);
}

bool
pb_wait_until(bool (*fn)(void *ctx), void *ctx, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (fn(ctx))
            return true;
        usleep(20000);
    }
    return fn(ctx);
}

size_t
pb_count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF)
        if (ch == '\n')
            n++;
    fclose(f);
    return n;
}
