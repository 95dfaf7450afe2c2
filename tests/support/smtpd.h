/*
 * smtpd.h - a real SMTP server for tests: tests/stand-ins/smtp_server.py
 * (aiosmtpd, Debian's python3-aiosmtpd under /usr/bin/python3) on
 * 127.0.0.1 and a port the kernel picks, storing every message it accepts
 * in a directory, with replies scripted through a rules file (see the
 * script's header for the rule syntax and the TLS and AUTH options).
 *
 * The server is a child of the test process and dies with it; stop it
 * with pb_smtpd_stop all the same.
 */
#ifndef PB_SMTPD_H
#define PB_SMTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

typedef struct pb_smtpd {
    char dir[4200]; /* messages/, rules, session.log, server.log, port */
    pid_t pid;      /* 0 when not running */
    int port;
} pb_smtpd_t;

/*
 * Start the server storing under dir (created if missing) with extra
 * command-line arguments (NULL-terminated, may be NULL), and wait up to
 * 10 s until it listens.  Returns false when it did not come up; its
 * output is in dir/server.log.
 */
bool pb_smtpd_start(pb_smtpd_t *sd, const char *dir, const char *const *extra);

/* SIGTERM, then SIGKILL after 5 s; idempotent. */
void pb_smtpd_stop(pb_smtpd_t *sd);

/* Replace the scripted replies ("rcpt ADDR CODE TEXT" lines, ...). */
bool pb_smtpd_rules(const pb_smtpd_t *sd, const char *text);

/* Messages stored so far. */
size_t pb_smtpd_count(const pb_smtpd_t *sd);

/*
 * Message i (1 for the first stored): its bytes as received, dot-stuffing
 * removed (*raw, malloc'd, NUL-terminated, length in *len) and its
 * envelope {"mail_from", "rcpt_tos", "auth", "tls"} (*meta, json_decref).
 * Returns false when there is no such message.
 */
bool pb_smtpd_message(const pb_smtpd_t *sd, size_t i, char **raw, size_t *len,
                      json_t **meta);

/* What the server logged about sessions: one line per EHLO, completed
 * STARTTLS and AUTH attempt (malloc'd, "" when none). */
char *pb_smtpd_session_log(const pb_smtpd_t *sd);

#endif /* PB_SMTPD_H */
