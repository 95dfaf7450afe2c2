/*
 * smtpd.c - run tests/stand-ins/smtp_server.py for a test and read what it
 * stored (see smtpd.h).
 */
#define _GNU_SOURCE
#include "smtpd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define S_PYTHON "/usr/bin/python3" /* Debian's, with python3-aiosmtpd */
#define S_SCRIPT PB_SOURCE_DIR "/tests/stand-ins/smtp_server.py"
#define S_ARGS_MAX 32

/* The child: die with the test, log to dir/server.log, exec the server. */
static void
s_exec(const char *log, const char *const *argv, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(1);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    execv(S_PYTHON, (char *const *)argv);
    _exit(127);
}

bool
pb_smtpd_start(pb_smtpd_t *sd, const char *dir, const char *const *extra)
{
    memset(sd, 0, sizeof *sd);
    snprintf(sd->dir, sizeof sd->dir, "%s", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return false;
    char port_file[4300], log[4300];
    snprintf(port_file, sizeof port_file, "%s/port", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    unlink(port_file);
    const char *argv[S_ARGS_MAX + 1] = {S_PYTHON, S_SCRIPT,         "--dir",
                                        dir,      "--max-lifetime", "120"};
    size_t n = 6;
    for (size_t i = 0; extra && extra[i] && n < S_ARGS_MAX; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    sd->pid = fork();
    if (sd->pid < 0) {
        sd->pid = 0;
        return false;
    }
    if (sd->pid == 0)
        s_exec(log, argv, parent);
    for (int i = 0; i < 1000 && sd->port == 0; i++) {
        char *text = pb_test_read_file(port_file, NULL);
        if (text)
            sd->port = atoi(text);
        free(text);
        if (sd->port != 0)
            break;
        if (waitpid(sd->pid, NULL, WNOHANG) == sd->pid) {
            sd->pid = 0; /* it exited: the log says why */
            return false;
        }
        usleep(10000);
    }
    if (sd->port == 0)
        pb_smtpd_stop(sd);
    return sd->port != 0;
}

void
pb_smtpd_stop(pb_smtpd_t *sd)
{
    if (!sd || sd->pid <= 0)
        return;
    kill(sd->pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(sd->pid, NULL, WNOHANG) == sd->pid) {
            sd->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(sd->pid, SIGKILL);
    waitpid(sd->pid, NULL, 0);
    sd->pid = 0;
}

bool
pb_smtpd_rules(const pb_smtpd_t *sd, const char *text)
{
    char path[4300], tmp[4300];
    snprintf(path, sizeof path, "%s/rules", sd->dir);
    snprintf(tmp, sizeof tmp, "%s/rules.tmp", sd->dir);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0; /* never read half-written */
}

size_t
pb_smtpd_count(const pb_smtpd_t *sd)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/messages", sd->dir);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        n += len > 5 && strcmp(e->d_name + len - 5, ".json") == 0;
    }
    closedir(d);
    return n;
}

bool
pb_smtpd_message(const pb_smtpd_t *sd, size_t i, char **raw, size_t *len,
                 json_t **meta)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/messages/%04zu.json", sd->dir, i);
    json_error_t jerr;
    *meta = json_load_file(path, 0, &jerr);
    if (!*meta)
        return false;
    snprintf(path, sizeof path, "%s/messages/%04zu.eml", sd->dir, i);
    *raw = pb_test_read_file(path, len);
    if (!*raw) {
        json_decref(*meta);
        *meta = NULL;
        return false;
    }
    return true;
}

char *
pb_smtpd_session_log(const pb_smtpd_t *sd)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/session.log", sd->dir);
    char *text = pb_test_read_file(path, NULL);
    return text ? text : strdup("");
}
