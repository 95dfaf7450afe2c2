/*
 * smtp.h - the parts of the "smtp" connector and what they share.
 *
 * The connector is one plugin with two roles.  As a sink it renders an
 * e-mail per event from templates and hands it to an SMTP server with
 * libcurl (send.c).  As a push source it takes the delivery-event webhooks
 * of the e-mail service behind that server, SendGrid (sendgrid.c) or
 * Mailgun (mailgun.c), and emits email.delivered, email.bounced and
 * email.complained (hooks.c holds what both providers share).  smtp.c owns
 * the descriptor, the settings and the instance's state.
 *
 * Nothing here is visible outside the plugin (the build hides every symbol
 * but the entry point).  The state is used by one thread at a time: the
 * descriptor does not declare deliver thread-safe, so each worker of a
 * connector with concurrency > 1 has its own.
 */
#ifndef SMTP_H
#define SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include <plugboard/helpers.h>
#include <plugboard/plugboard.h>

#define SMTP_BCC_MAX 32 /* addresses in the bcc setting */

/* How the connection to the SMTP server is protected. */
typedef enum smtp_tls {
    SMTP_TLS_STARTTLS = 0, /* smtp://, STARTTLS required before anything */
    SMTP_TLS_IMPLICIT = 1, /* smtps://, TLS from the first byte */
    SMTP_TLS_NONE = 2,     /* plaintext; loopback servers only */
} smtp_tls_t;

/* Which e-mail service's webhooks this instance accepts. */
typedef enum smtp_provider {
    SMTP_PROVIDER_NONE = 0,
    SMTP_PROVIDER_SENDGRID = 1,
    SMTP_PROVIDER_MAILGUN = 2,
} smtp_provider_t;

/* Mailgun tokens already seen, so one signature serves one body. */
typedef struct smtp_token {
    uint8_t token[PLUGBOARD_SHA256_LEN]; /* SHA-256 of the token */
    uint8_t body[PLUGBOARD_SHA256_LEN];  /* SHA-256 of the request body */
    int64_t expires_ms;                  /* 0: the slot is free */
} smtp_token_t;

typedef struct smtp_tokens {
    smtp_token_t *slots; /* open addressing by token hash */
    size_t cap;          /* a power of two, or 0 */
    size_t used;
} smtp_tokens_t;

/* One connector instance. */
typedef struct smtp {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;

    /* sink: NULL url means this instance only takes webhooks */
    char *url;    /* as handed to libcurl, EHLO name as its path */
    char *server; /* "host:port" for messages, no credentials */
    smtp_tls_t tls;
    const char *username; /* borrowed from the settings */
    const char *password; /* borrowed, secret: never logged */
    const char *ca_file;  /* borrowed, or NULL for the system store */
    int64_t connect_timeout_ms;
    int64_t timeout_ms;
    plugboard_mailbox_t from;
    plugboard_mailbox_t reply_to; /* header NULL when unset */
    plugboard_mailbox_t to;       /* header NULL when unset */
    char *envelope_from;          /* MAIL FROM address */
    char *to_field;               /* event field with the recipient */
    char *to_name_field;          /* event field with its name, or NULL */
    char **bcc;                   /* envelope-only recipients */
    size_t bcc_count;
    char *message_id_domain;
    plugboard_mail_templates_t *templates;
    CURL *curl; /* kept between deliveries: the connection is reused */

    /* webhooks */
    smtp_provider_t provider;
    EVP_PKEY *sendgrid_key;  /* owned */
    const char *mailgun_key; /* borrowed, secret */
    int64_t tolerance_ms;
    smtp_tokens_t tokens;
} smtp_t;

/* ---- send.c: the sink ----------------------------------------------- */

/* Deliver ev as one message; fills r (see plugboard_result_t). */
void smtp_send_deliver(smtp_t *s, const plugboard_event_t *ev,
                       plugboard_result_t *r);

/* ---- hooks.c: what both webhook providers share ---------------------- */

/* What a webhook request came to, for the answer and the counters. */
typedef struct smtp_tally {
    size_t emitted;   /* canonical events handed to the host */
    size_t ignored;   /* known event kinds that map to nothing */
    size_t unknown;   /* event kinds this connector does not know */
    size_t malformed; /* events that could not be mapped (logged) */
    const char *why;  /* static: why the last one could not be */
} smtp_tally_t;

/* A canonical e-mail event under construction, with a sticky error so a
 * run of setters is checked once. */
typedef struct smtp_event {
    const plugboard_host_api_t *api;
    plugboard_builder_t *b;
    int rc;
} smtp_event_t;

/*
 * Parse a vendor's JSON body with the SDK's one rule for vendor documents
 * (plugboard_json_loadb): integers beyond 64 bits, which jansson refuses
 * (and would make the whole batch fail), are read as strings so ids stay
 * exact; duplicate keys make the document invalid.  Returns the document
 * (json_decref) or NULL when the text is not such JSON.
 */
json_t *smtp_json_load(const uint8_t *body, size_t len);

/* The non-empty string member key of obj, or NULL. */
const char *smtp_json_str(json_t *obj, const char *key);

/* Start an event of type for the recipient email (trimmed, lower-cased
 * into the event, also its key) from vendor.  false when email is not an
 * address (ev->rc is PLUGBOARD_E_INVALID) or out of memory. */
bool smtp_event_begin(smtp_t *s, smtp_event_t *ev, const char *type,
                      const char *vendor, const char *email);
void smtp_event_str(smtp_event_t *ev, const char *path, const char *value);
/* Like smtp_event_str, with line breaks and other controls turned into
 * spaces and runs of them into one (bounce reasons span lines). */
void smtp_event_line(smtp_event_t *ev, const char *path, const char *value);
void smtp_event_json(smtp_event_t *ev, const char *path, json_t *value);
void smtp_event_time(smtp_event_t *ev, int64_t ms);
/* "<vendor>:<id>" (an id too long for a dedupe id is hashed). */
void smtp_event_dedupe(smtp_event_t *ev, const char *vendor, const char *id);
/* "<vendor>:fp:<hex>": a fingerprint of what identifies the occurrence
 * (count strings, NULLs allowed), for vendors whose ids are missing or
 * not stable across re-posts. */
void smtp_event_dedupe_fingerprint(smtp_event_t *ev, const char *vendor,
                                   const char *const *parts, size_t count);
/* A message id without the angle brackets it may carry. */
void smtp_event_message_id(smtp_event_t *ev, const char *path,
                           const char *value);

/* A built event waiting to be emitted, or discarded on error. */
typedef struct smtp_batch {
    smtp_t *s;
    plugboard_builder_t **items;
    size_t count, cap;
    bool nomem;
} smtp_batch_t;

/* Keep a verified item that cannot be mapped as a dead letter of this
 * connector (plugboard_emit_unmapped, dedupe "<provider>:unmapped:<hash>"),
 * its reason "<provider> event: <why>"; a failure to stage it sets
 * batch->nomem, so the vendor gets 503 and sends the request again. */
void smtp_batch_unmapped(smtp_batch_t *batch, const char *provider,
                         const char *why, const void *item, size_t len);

/* Add a finished event (takes ev->b).  false when ev failed: the caller
 * counts it as malformed (or ev->rc is PLUGBOARD_E_NOMEM). */
bool smtp_batch_add(smtp_batch_t *batch, smtp_event_t *ev);
/* Emit everything; returns 0, or the first error (the rest discarded). */
int smtp_batch_emit(smtp_batch_t *batch);
void smtp_batch_release(smtp_batch_t *batch);

/* Answer the sender: 200 with the tally as JSON. */
void smtp_hook_accept(smtp_t *s, plugboard_response_t *resp,
                      const smtp_tally_t *tally);
/* Answer with an error status, log it and count it under counter. */
void smtp_hook_refuse(smtp_t *s, plugboard_response_t *resp, int status,
                      const char *reason, const char *counter);

/* ---- sendgrid.c ------------------------------------------------------ */

/* Parse the public key setting (base64 SubjectPublicKeyInfo, or PEM).
 * Returns the key or NULL with errbuf filled. */
EVP_PKEY *smtp_sendgrid_key(const char *text, char *errbuf);
void smtp_sendgrid_webhook(smtp_t *s, const plugboard_request_t *req,
                           plugboard_response_t *resp);

/* ---- mailgun.c ------------------------------------------------------- */

void smtp_mailgun_webhook(smtp_t *s, const plugboard_request_t *req,
                          plugboard_response_t *resp);
void smtp_tokens_release(smtp_t *s);

#endif /* SMTP_H */
