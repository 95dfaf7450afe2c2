/*
 * config.h - the admin's libconfig file as a typed, validated model.
 *
 * This is the only module that touches libconfig.  Loading happens in two
 * steps, both of which collect every error rather than stopping at the
 * first:
 *   1. pb_config_load parses the file and checks its shape: unknown keys,
 *      types, ranges, required route fields (why, owner), names that refer
 *      to each other.  Integers are read as 64-bit; a value libconfig
 *      wrapped (an unsuffixed literal over 2^31-1) is detected from the
 *      source text and rejected.
 *   2. pb_config_bind checks each connector's settings against the settings
 *      its plugin declares, resolves env:/file: secrets, and checks that
 *      every route's destinations consume its event types and that its
 *      source emits them.
 * Every message names the file, the line, the setting's path and what was
 * expected: "plugboard.cfg:12: connectors.[1].settings.port: expected an
 * integer in [1, 65535], got 70000".
 */
#ifndef PB_CONFIG_H
#define PB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plugboard/plugboard.h>

/* Collected error messages, each one complete. */
typedef struct pb_diag {
    char **messages;
    size_t count;
} pb_diag_t;

void pb_diag_init(pb_diag_t *d);
void pb_diag_release(pb_diag_t *d);
void pb_diag_add(pb_diag_t *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A setting value as written in the file, before binding. */
typedef enum pb_raw_kind {
    PB_RAW_STRING = 1,
    PB_RAW_INT,
    PB_RAW_BOOL,
    PB_RAW_FLOAT,
    PB_RAW_OTHER, /* group, list or array: never a valid setting value */
} pb_raw_kind_t;

typedef struct pb_raw_setting {
    char *name;
    pb_raw_kind_t kind;
    char *str;   /* PB_RAW_STRING */
    int64_t i;   /* PB_RAW_INT */
    bool b;      /* PB_RAW_BOOL */
    double f;    /* PB_RAW_FLOAT */
    int line;
} pb_raw_setting_t;

typedef struct pb_connector_conf {
    char *name;       /* unique, [a-z0-9_-]+ */
    char *plugin;     /* plugin name or path to a .so */
    char *isolation;  /* "thread" (default) or "process" */
    int concurrency;  /* 1..64, default 1 */
    int64_t deliver_timeout_ms; /* 0 = plugin's or host default */
    bool watch;       /* upgrade when the plugin file changes */
    pb_raw_setting_t *settings;
    size_t settings_count;
    int line;
    /* filled by pb_config_bind */
    plugboard_settings_t *bound;
} pb_connector_conf_t;

typedef struct pb_retry_conf {
    int attempts;        /* 1..1000, default 10 */
    int64_t initial_ms;  /* default 1s */
    int64_t max_ms;      /* default 15m */
} pb_retry_conf_t;

typedef struct pb_route_conf {
    char *name;
    char *from;          /* a connector name */
    char **when;         /* event type patterns: "payment.failed", "payment.*" */
    size_t when_count;
    char **to;           /* connector names */
    size_t to_count;
    char *why;
    char *on_failure;    /* may be NULL */
    char *owner;
    char *notify;        /* connector name or NULL */
    pb_retry_conf_t retry;
    int64_t alert_after_ms;    /* a backlog older than this notifies the
                                  owner; 0 = never (the default) */
    int64_t alert_interval_ms; /* at most one unhealthy notice per
                                  (destination, cause) this often;
                                  default 1h */
    int line;
} pb_route_conf_t;

typedef struct pb_config {
    char *path;          /* the file as given */
    char *data_dir;      /* default "var" (relative to the working dir) */
    char *run_dir;       /* default <data_dir>/run */
    char *listen;        /* "127.0.0.1:8787"; NULL = no HTTP listener */
    char *admin_listen;  /* /metrics, /healthz, /readyz only; NULL = none
                            (then /metrics is on listen) */
    int64_t body_limit;  /* bytes, default 1 MiB, 1 KiB..64 MiB */
    int64_t idle_timeout_ms; /* keep-alive idle timeout, default 30s */
    int64_t max_connections; /* default 1024 */
    char **plugin_path;  /* directories searched for <plugin>.so */
    size_t plugin_path_count;
    char *log_level;     /* "info" */
    int64_t drain_timeout_ms; /* graceful stop budget, default 10s */
    int64_t dedupe_retention_ms; /* default 7 days */
    int64_t delivered_retention_ms; /* default 1 day */
    /* Source lines of the plugboard settings whose errors come after load
     * (a port in use, a directory that cannot be made, a reload changing
     * what only a restart can): 0 when the file does not set them. */
    int data_dir_line;
    int run_dir_line;
    int listen_line;
    int admin_listen_line;
    pb_connector_conf_t *connectors;
    size_t connector_count;
    pb_route_conf_t *routes;
    size_t route_count;
} pb_config_t;

/*
 * Parse and shape-check path.  Returns the model, or NULL with every error
 * in diag.  Caller owns the result (pb_config_destroy).
 */
pb_config_t *pb_config_load(const char *path, pb_diag_t *diag);
void pb_config_destroy(pb_config_t **cfg);

/*
 * The run directory path names (plugboard.run_dir, else
 * <plugboard.data_dir>/run), read from a file that parses but may not
 * validate - so that `ctl reload` can reach the running host and have it
 * report what is wrong.  Returns 0, or PB_ECONFIG when the file cannot be
 * read or parsed.
 */
int pb_config_run_dir(const char *path, char *out, size_t out_len);

/* "FILE:LINE" of a setting at line in cfg's file, or "FILE" when line is
 * 0 (not in the file), into buf; returns buf. */
const char *pb_config_where(const pb_config_t *cfg, int line, char *buf,
                            size_t len);

/* Find a connector by name; NULL when none.  Borrowed. */
pb_connector_conf_t *pb_config_connector(const pb_config_t *cfg,
                                         const char *name);

/* Is name a valid connector or route name, [a-z0-9_-]{1,63}?
 * (The SDK harness checks instance names by it too.) */
bool pb_config_name_valid(const char *name);

/* Parse "250ms", "5s", "15m", "2h", "7d" into ms; 0 or PB_EINVAL. */
int pb_parse_duration(const char *text, int64_t *out_ms);

/* Does an event type match a route pattern ("payment.*", "*", exact)? */
bool pb_type_matches(const char *pattern, const char *type);

/*
 * Looks up the descriptor of the plugin a connector names; the caller of
 * pb_config_bind supplies it (the loader).  Returns NULL and fills err when
 * the plugin cannot be loaded.
 */
typedef const plugboard_connector_t *(*pb_descriptor_fn)(
    void *ctx, const pb_connector_conf_t *conn, char *err, size_t err_len);

/*
 * Step 2: bind every connector's settings to its plugin's declared
 * settings and check routes against consumes/emits.  Returns 0, or
 * PB_ECONFIG with every error in diag.
 */
int pb_config_bind(pb_config_t *cfg, pb_descriptor_fn describe, void *ctx,
                   pb_diag_t *diag);

/*
 * Bound settings (the SDK's plugboard_settings_t), implemented here.
 * Strings are owned by the settings; borrowed by callers.
 */
const char *pb_settings_string(const plugboard_settings_t *s,
                               const char *name);
int64_t pb_settings_int(const plugboard_settings_t *s, const char *name);
bool pb_settings_bool(const plugboard_settings_t *s, const char *name);
bool pb_settings_is_set(const plugboard_settings_t *s, const char *name);
void pb_settings_destroy(plugboard_settings_t **s);

/*
 * Bind one setting list against a spec without a config file (used by the
 * SDK test harness and plugin-check).  where names the source in messages.
 */
plugboard_settings_t *pb_settings_bind(const plugboard_setting_spec_t *spec,
                                       const pb_raw_setting_t *raw,
                                       size_t raw_count, const char *where,
                                       pb_diag_t *diag);

/*
 * A standalone settings file, as `plugboard plugin-check --settings` reads
 * it: one group, settings = { name = value; ... };  Values are read as in
 * a connector's settings group (unbound: pass them to pb_settings_bind).
 * Returns 0 with *out (caller frees with pb_raw_settings_free), or
 * PB_ECONFIG with every error, file and line in diag.
 */
int pb_settings_file_load(const char *path, pb_raw_setting_t **out,
                          size_t *count, pb_diag_t *diag);
void pb_raw_settings_free(pb_raw_setting_t *raw, size_t count);

#endif /* PB_CONFIG_H */
