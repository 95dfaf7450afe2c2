/*
 * stripe_sink.h - the stripe connector's sink side: contact.upserted
 * updates the matching Stripe customer's e-mail and name.
 *
 * Owned by stripe.c's state; internal to the plugin.
 */
#ifndef STRIPE_SINK_H
#define STRIPE_SINK_H

#include <plugboard/plugboard.h>

typedef struct stripe_sink stripe_sink_t;

/* The settings the sink adds to the stripe descriptor, in order; stripe.c
 * copies them into its table. */
#define STRIPE_SINK_SETTINGS                                                 \
    {                                                                        \
        .name = "api_key",                                                   \
        .type = PLUGBOARD_SETTING_STRING,                                    \
        .secret = true,                                                      \
        .help = "secret or restricted API key (sk_... / rk_..., customers "  \
                "write) for updating customers; without it the connector "   \
                "is a webhook source only",                                  \
    },                                                                       \
    {                                                                        \
        .name = "api_base",                                                  \
        .type = PLUGBOARD_SETTING_STRING,                                    \
        .default_value = "https://api.stripe.com",                           \
        .help = "base URL of the Stripe API (tests point it at a stand-in)", \
    },                                                                       \
    {                                                                        \
        .name = "api_version",                                               \
        .type = PLUGBOARD_SETTING_STRING,                                    \
        .help = "Stripe-Version to send (default: the account's)",           \
    },                                                                       \
    {                                                                        \
        .name = "timeout",                                                   \
        .type = PLUGBOARD_SETTING_DURATION,                                  \
        .default_value = "10s",                                              \
        .min = 100,                                                          \
        .max = 60000,                                                        \
        .help = "how long one API request may take (100ms..60s)",            \
    },                                                                       \
    {                                                                        \
        .name = "connect_timeout",                                           \
        .type = PLUGBOARD_SETTING_DURATION,                                  \
        .default_value = "5s",                                               \
        .min = 100,                                                          \
        .max = 60000,                                                        \
        .help = "how long connecting to the API may take (100ms..60s)",      \
    }

/*
 * Open the sink from the validated settings.  *sink is NULL when no
 * api_key is set (the connector is then a source only).  Returns 0, or -1
 * with a message in errbuf (PLUGBOARD_ERRBUF_MAX bytes, no secrets).
 * Caller owns *sink (stripe_sink_close).
 */
int stripe_sink_open(const plugboard_host_api_t *api, plugboard_host_t *host,
                     const plugboard_settings_t *settings,
                     stripe_sink_t **sink, char *errbuf);

/* Free the sink; NULLs *sink.  NULL-safe. */
void stripe_sink_close(stripe_sink_t **sink);

/* Deliver one event (see stripe_sink.c for what it does). */
void stripe_sink_deliver(stripe_sink_t *sink, const plugboard_event_t *ev,
                         plugboard_result_t *res);

#endif /* STRIPE_SINK_H */
