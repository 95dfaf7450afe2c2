/*
 * log.c - key=value log lines on stderr.
 */
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

static atomic_int s_level = PB_LOG_INFO;

static const char *const s_names[] = {"error", "warn", "info", "debug"};

void
pb_log_set_level(pb_log_level_t level)
{
    atomic_store(&s_level, (int)level);
}

pb_log_level_t
pb_log_get_level(void)
{
    return (pb_log_level_t)atomic_load(&s_level);
}

int
pb_log_parse_level(const char *name, pb_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, s_names[i]) == 0) {
            *out = (pb_log_level_t)i;
            return 0;
        }
    }
    return PB_EINVAL;
}

void
pb_logv(pb_log_level_t level, const char *component, const char *fmt,
        va_list ap)
{
    if ((int)level > atomic_load(&s_level))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s %s%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                     s_names[level], component ? "component=" : "",
                     component ? component : "");
    if (n < 0 || (size_t)n >= sizeof line)
        n = (int)strlen(line);
    if (component && (size_t)n < sizeof line - 1)
        line[n++] = ' ';
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void
pb_log(pb_log_level_t level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pb_logv(level, component, fmt, ap);
    va_end(ap);
}
