/*
 * log.h - one line per event, key=value, to stderr.
 *
 * Thread-safe: each line is written with one write(2).  Secrets never reach
 * this module: callers log names of settings, never their values.
 */
#ifndef PB_LOG_H
#define PB_LOG_H

#include <stdarg.h>

typedef enum pb_log_level {
    PB_LOG_ERROR = 0,
    PB_LOG_WARN = 1,
    PB_LOG_INFO = 2,
    PB_LOG_DEBUG = 3,
} pb_log_level_t;

/* Set the most verbose level printed (default PB_LOG_INFO). */
void pb_log_set_level(pb_log_level_t level);
pb_log_level_t pb_log_get_level(void);
/* Parse "error", "warn", "info", "debug"; returns 0 or PB_EINVAL. */
int pb_log_parse_level(const char *name, pb_log_level_t *out);

/* Log one line: "ts=... level=... component=... msg". */
void pb_log(pb_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pb_logv(pb_log_level_t level, const char *component, const char *fmt,
             va_list ap);

#define pb_error(comp, ...) pb_log(PB_LOG_ERROR, comp, __VA_ARGS__)
#define pb_warn(comp, ...) pb_log(PB_LOG_WARN, comp, __VA_ARGS__)
#define pb_info(comp, ...) pb_log(PB_LOG_INFO, comp, __VA_ARGS__)
#define pb_debug(comp, ...) pb_log(PB_LOG_DEBUG, comp, __VA_ARGS__)

#endif /* PB_LOG_H */
