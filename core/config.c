/*
 * config.c - the admin's libconfig file as a typed, validated model.
 *
 * The only code that includes <libconfig.h>.  pb_config_load reads the file
 * once into memory, parses that text, and walks the tree against a fixed
 * schema (the known keys of every group), copying every value it keeps into
 * a pb_config_t: libconfig's strings die with its config_t.  Every problem
 * is collected into the caller's pb_diag_t; nothing stops at the first.
 *
 * libconfig 1.5 stores an unsuffixed integer literal in 32 bits and wraps
 * it without a word (4294968320 becomes 1024), and saturates an L-suffixed
 * literal that overflows 64 bits.  So every integer this module reads is
 * also re-read from the source text on the setting's line and rejected when
 * the literal does not fit what libconfig produced.
 *
 * This file also owns the bound settings of a connector instance (struct
 * plugboard_settings): typed values with defaults applied and env:/file:
 * secrets resolved.  Secret values never enter a message and are wiped
 * from memory when the settings are destroyed.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libconfig.h>

#include "error.h"
#include "log.h"

#define PB_PATH_MAX 512
#define PB_MSG_MAX 1024
#define PB_NAME_MAX 63
#define PB_SECRET_FILE_MAX (1024 * 1024)

#define PB_MS_SECOND INT64_C(1000)
#define PB_MS_MINUTE (60 * PB_MS_SECOND)
#define PB_MS_HOUR (60 * PB_MS_MINUTE)
#define PB_MS_DAY (24 * PB_MS_HOUR)

/* ------------------------------------------------------------------ */
/* Diagnostics                                                         */
/* ------------------------------------------------------------------ */

void
pb_diag_init(pb_diag_t *d)
{
    d->messages = NULL;
    d->count = 0;
}

void
pb_diag_release(pb_diag_t *d)
{
    for (size_t i = 0; i < d->count; i++)
        free(d->messages[i]);
    free(d->messages);
    d->messages = NULL;
    d->count = 0;
}

void
pb_diag_add(pb_diag_t *d, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char *msg = malloc((size_t)n + 1);
    if (!msg)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    char **grown = realloc(d->messages, (d->count + 1) * sizeof *grown);
    if (!grown) {
        free(msg);
        return;
    }
    d->messages = grown;
    d->messages[d->count++] = msg;
}

/* ------------------------------------------------------------------ */
/* Durations, names and event type patterns                            */
/* ------------------------------------------------------------------ */

/* Reads one unit at p; returns its length in ms and advances, or 0. */
static int64_t
s_duration_unit(const char **p)
{
    const char *u = *p;

    if (u[0] == 'm' && u[1] == 's') {
        *p += 2;
        return 1;
    }
    *p += 1;
    switch (u[0]) {
    case 's':
        return PB_MS_SECOND;
    case 'm':
        return PB_MS_MINUTE;
    case 'h':
        return PB_MS_HOUR;
    case 'd':
        return PB_MS_DAY;
    default:
        return 0;
    }
}

/*
 * One or more <digits><unit> pairs with units in decreasing order
 * ("1h30m").  No sign, no spaces, no fractions, no bare numbers.
 */
int
pb_parse_duration(const char *text, int64_t *out_ms)
{
    if (!text || !*text)
        return PB_EINVAL;
    const char *p = text;
    int64_t total = 0;
    int64_t last_unit = INT64_MAX;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return PB_EINVAL;
        int64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            int digit = *p++ - '0';
            if (n > (INT64_MAX - digit) / 10)
                return PB_EINVAL;
            n = n * 10 + digit;
        }
        int64_t unit = s_duration_unit(&p);
        if (unit == 0 || unit >= last_unit)
            return PB_EINVAL;
        last_unit = unit;
        if (n > INT64_MAX / unit)
            return PB_EINVAL;
        n *= unit;
        if (total > INT64_MAX - n)
            return PB_EINVAL;
        total += n;
    }
    *out_ms = total;
    return 0;
}

/* ms as the largest unit that divides it: "15m", "1500ms". */
static const char *
s_fmt_duration(int64_t ms, char *buf, size_t len)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{PB_MS_DAY, "d"},
                 {PB_MS_HOUR, "h"},
                 {PB_MS_MINUTE, "m"},
                 {PB_MS_SECOND, "s"}};

    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, len, "%" PRId64 "%s", ms / units[i].ms,
                     units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, "%" PRId64 "ms", ms);
    return buf;
}

static bool
s_is_prefix_pattern(const char *p)
{
    size_t n = strlen(p);
    return n >= 2 && p[n - 2] == '.' && p[n - 1] == '*';
}

bool
pb_type_matches(const char *pattern, const char *type)
{
    if (!pattern || !type)
        return false;
    if (strcmp(pattern, PLUGBOARD_EV_ANY) == 0)
        return true;
    if (s_is_prefix_pattern(pattern)) {
        size_t n = strlen(pattern) - 1; /* keeps the dot */
        return strncmp(type, pattern, n) == 0 && type[n] != '\0';
    }
    return strcmp(pattern, type) == 0;
}

/* Can some event type match both a and b (each a pattern or a type)? */
static bool
s_patterns_overlap(const char *a, const char *b)
{
    if (pb_type_matches(a, b) || pb_type_matches(b, a))
        return true;
    if (s_is_prefix_pattern(a) && s_is_prefix_pattern(b)) {
        size_t na = strlen(a) - 1;
        size_t nb = strlen(b) - 1;
        return strncmp(a, b, na < nb ? na : nb) == 0;
    }
    return false;
}

/* Does any entry of a NULL-terminated list overlap pattern? */
static bool
s_list_overlaps(const char *const *list, const char *pattern)
{
    for (size_t i = 0; list && list[i]; i++)
        if (s_patterns_overlap(list[i], pattern))
            return true;
    return false;
}

/* "a, b, c", or "nothing" for an empty list. */
static const char *
s_list_join(const char *const *list, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; list && list[i] && used < len; i++) {
        int n =
            snprintf(buf + used, len - used, "%s%s", i ? ", " : "", list[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (!buf[0])
        snprintf(buf, len, "nothing");
    return buf;
}

/* Connector and route names: [a-z0-9_-]{1,63}. */
bool
pb_config_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > PB_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* An event type: [a-z0-9_]+ segments joined by dots; len bytes of text. */
static bool
s_type_valid(const char *text, size_t len)
{
    size_t seg = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '.') {
            if (seg == 0)
                return false;
            seg = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_') {
            seg++;
        } else {
            return false;
        }
    }
    return seg > 0;
}

/* "*", "payment.*" or "payment.failed". */
static bool
s_pattern_valid(const char *p)
{
    size_t n = strlen(p);
    if (strcmp(p, PLUGBOARD_EV_ANY) == 0)
        return true;
    if (s_is_prefix_pattern(p))
        return s_type_valid(p, n - 2);
    return s_type_valid(p, n);
}

static bool
s_blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool
s_starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void
s_fclose_keep_errno(FILE *f)
{
    int saved = errno;
    fclose(f);
    errno = saved;
}

/*
 * Reads a whole file into a NUL-terminated heap string; NULL with errno
 * set on failure (EFBIG past max bytes).  Caller owns the result.
 */
static char *
s_read_file(const char *path, size_t max, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        errno = EISDIR;
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        goto out_close;
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > max) {
                errno = EFBIG;
                goto out_free;
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown)
                goto out_free;
            buf = grown;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                errno = EIO;
                goto out_free;
            }
            break;
        }
    }
    if (len > max) {
        errno = EFBIG;
        goto out_free;
    }
    buf[len] = '\0';
    fclose(f);
    if (len_out)
        *len_out = len;
    return buf;

out_free:
    free(buf);
out_close:
    s_fclose_keep_errno(f);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The reader: one load in progress                                    */
/* ------------------------------------------------------------------ */

/* Source text of a file the config was read from, for integer checks. */
typedef struct pb_cfg_text {
    char *name;    /* as libconfig names it; NULL for the main file */
    char *display; /* the path to show in messages */
    char *text;    /* NULL when it could not be read */
} pb_cfg_text_t;

typedef struct pb_cfg_reader {
    const char *path;
    const char *include_dir;
    pb_diag_t *diag;
    bool failed;
    pb_cfg_text_t *texts;
    size_t text_count;
} pb_cfg_reader_t;

static void
s_reader_release(pb_cfg_reader_t *r)
{
    for (size_t i = 0; i < r->text_count; i++) {
        free(r->texts[i].name);
        free(r->texts[i].display);
        free(r->texts[i].text);
    }
    free(r->texts);
    r->texts = NULL;
    r->text_count = 0;
}

static void
s_oom(pb_cfg_reader_t *r)
{
    pb_diag_add(r->diag, "%s: out of memory", r->path);
    r->failed = true;
}

static char *
s_strdup(pb_cfg_reader_t *r, const char *s)
{
    char *copy = strdup(s);
    if (!copy)
        s_oom(r);
    return copy;
}

static pb_cfg_text_t *
s_add_text(pb_cfg_reader_t *r, const char *name, const char *display,
           char *text)
{
    pb_cfg_text_t *grown =
        realloc(r->texts, (r->text_count + 1) * sizeof *grown);
    if (!grown) {
        free(text);
        s_oom(r);
        return NULL;
    }
    r->texts = grown;
    pb_cfg_text_t *t = &r->texts[r->text_count++];
    t->name = name ? strdup(name) : NULL;
    t->display = strdup(display);
    t->text = text;
    if ((name && !t->name) || !t->display)
        s_oom(r);
    return t;
}

/* The source of setting s (the main file or an @include'd one). */
static pb_cfg_text_t *
s_source(pb_cfg_reader_t *r, const config_setting_t *s)
{
    const char *name = s ? config_setting_source_file(s) : NULL;

    for (size_t i = 0; i < r->text_count; i++) {
        const char *n = r->texts[i].name;
        if ((!name && !n) || (name && n && strcmp(name, n) == 0))
            return &r->texts[i];
    }
    if (!name)
        return NULL;
    /* libconfig opens an include relative to the include dir */
    char display[PB_PATH_MAX];
    if (name[0] != '/' && r->include_dir)
        snprintf(display, sizeof display, "%s/%s", r->include_dir, name);
    else
        snprintf(display, sizeof display, "%s", name);
    char *text = s_read_file(display, SIZE_MAX / 2, NULL);
    return s_add_text(r, name, display, text);
}

static const char *
s_file_of(pb_cfg_reader_t *r, const config_setting_t *s)
{
    pb_cfg_text_t *t = s_source(r, s);
    return t && t->display ? t->display : r->path;
}

/* "FILE:LINE: SUBJECT: message" for setting s. */
static void __attribute__((format(printf, 4, 5)))
s_err(pb_cfg_reader_t *r, const config_setting_t *s, const char *subject,
      const char *fmt, ...)
{
    char msg[PB_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    unsigned line = s ? config_setting_source_line(s) : 0;
    const char *file = s_file_of(r, s);
    if (line > 0)
        pb_diag_add(r->diag, "%s:%u: %s: %s", file, line, subject, msg);
    else
        pb_diag_add(r->diag, "%s: %s: %s", file, subject, msg);
    r->failed = true;
}

static const char *
s_kind(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    default:
        return "something else";
    }
}

/* A setting path longer than its buffer is shown cut, ending in "...":
 * an error message stays readable and never overruns. */
static const char *
s_fit(char *buf, size_t len, int n)
{
    if (n >= 0 && (size_t)n >= len && len > 4)
        memcpy(buf + len - 4, "...", 4);
    return buf;
}

static const char *
s_path(char *buf, size_t len, const char *parent, const char *key)
{
    if (parent && *parent)
        return s_fit(buf, len, snprintf(buf, len, "%s.%s", parent, key));
    return s_fit(buf, len, snprintf(buf, len, "%s", key));
}

static const char *
s_index_path(char *buf, size_t len, const char *parent, size_t i)
{
    return s_fit(buf, len, snprintf(buf, len, "%s.[%zu]", parent, i));
}

/* "routes.[0] ('name')", or just the path while the name is unknown. */
static const char *
s_label(char *buf, size_t len, const char *path, const char *name)
{
    if (name)
        return s_fit(buf, len, snprintf(buf, len, "%s ('%s')", path, name));
    return s_fit(buf, len, snprintf(buf, len, "%s", path));
}

/* ------------------------------------------------------------------ */
/* Integer literals, re-read from the source text                      */
/* ------------------------------------------------------------------ */

typedef struct pb_int_literal {
    const char *text; /* as written, without the L suffix */
    int len;
    bool suffixed; /* L or LL: libconfig reads it as 64-bit */
    bool fits64;
    int64_t value; /* when fits64 */
} pb_int_literal_t;

static bool
s_is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '*';
}

/* Parses an integer literal at p as libconfig would lex it. */
static bool
s_parse_literal(const char *p, pb_int_literal_t *lit)
{
    const char *start = p;
    bool neg = false;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    if (hex)
        p += 2;
    const char *digits = p;
    unsigned base = hex ? 16 : 10;
    uint64_t mag = 0;
    bool over = false;
    for (;; p++) {
        unsigned d;
        if (isdigit((unsigned char)*p))
            d = (unsigned)(*p - '0');
        else if (hex && isxdigit((unsigned char)*p))
            d = (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
        else
            break;
        if (mag > (UINT64_MAX - d) / base)
            over = true;
        else
            mag = mag * base + d;
    }
    if (p == digits)
        return false;
    if (!hex && (*p == '.' || *p == 'e' || *p == 'E'))
        return false; /* a float */
    lit->text = start;
    lit->len = (int)(p - start);
    lit->suffixed = *p == 'L';
    if (lit->suffixed && *++p == 'L')
        p++;
    if (s_is_name_char(*p) || *p == '.')
        return false;
    if (over) {
        lit->fits64 = false;
    } else if (neg) {
        lit->fits64 = mag <= (uint64_t)INT64_MAX + 1;
        lit->value = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        lit->fits64 = mag <= (uint64_t)INT64_MAX;
        lit->value = (int64_t)mag;
    }
    return true;
}

/* Whitespace and comments, across lines. */
static const char *
s_skip_space(const char *p)
{
    for (;;) {
        if (isspace((unsigned char)*p)) {
            p++;
        } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
            p = strchr(p, '\n');
            if (!p)
                return "";
        } else if (p[0] == '/' && p[1] == '*') {
            p = strstr(p + 2, "*/");
            if (!p)
                return "";
            p += 2;
        } else {
            return p;
        }
    }
}

/* Is lit, written for setting s, something libconfig could not hold? */
static bool
s_literal_ok(pb_cfg_reader_t *r, const config_setting_t *s, const char *path,
             const pb_int_literal_t *lit, int64_t got)
{
    if (!lit->fits64) {
        s_err(r, s, path, "integer %.*s does not fit in 64 bits", lit->len,
              lit->text);
        return false;
    }
    bool fits32 = lit->value >= INT32_MIN && lit->value <= INT32_MAX;
    int64_t wrapped = (int32_t)(uint32_t)(uint64_t)lit->value;
    if (!lit->suffixed && !fits32 && wrapped == got) {
        s_err(r, s, path,
              "integer %.*s does not fit in 32 bits; write it as %.*sL",
              lit->len, lit->text, lit->len, lit->text);
        return false;
    }
    return true;
}

/*
 * Finds "name = <literal>" (or ':') on the setting's source line and checks
 * that libconfig's value got is what the literal says.  Strings and
 * comments on the line are skipped.  A literal we cannot find is trusted.
 */
static bool
s_literal_check(pb_cfg_reader_t *r, const config_setting_t *s, const char *path,
                int64_t got)
{
    pb_cfg_text_t *src = s_source(r, s);
    const char *name = config_setting_name(s);
    unsigned line = config_setting_source_line(s);

    if (!src || !name || line == 0)
        return true;
    if (!src->text) {
        s_err(r, s, path, "cannot read '%s' again to check its integers",
              src->display);
        return false;
    }
    const char *p = src->text;
    for (unsigned l = 1; l < line && p; l++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (!p)
        return true;
    const char *eol = strchr(p, '\n');
    if (!eol)
        eol = p + strlen(p);
    size_t nlen = strlen(name);
    while (p < eol) {
        if (*p == '"') {
            for (p++; p < eol && *p != '"'; p++)
                if (*p == '\\' && p + 1 < eol)
                    p++;
            p++;
        } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
            break;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            if (!end)
                break;
            p = end + 2;
        } else if (s_is_name_char(*p)) {
            const char *tok = p;
            while (s_is_name_char(*p))
                p++;
            if ((size_t)(p - tok) != nlen || memcmp(tok, name, nlen) != 0)
                continue;
            const char *q = s_skip_space(p);
            pb_int_literal_t lit;
            if ((*q == '=' || *q == ':') &&
                s_parse_literal(s_skip_space(q + 1), &lit) &&
                !s_literal_ok(r, s, path, &lit, got))
                return false;
        } else {
            p++;
        }
    }
    return true;
}

/* An integer setting's value, 64-bit, after the literal check. */
static bool
s_int_value(pb_cfg_reader_t *r, const config_setting_t *s, const char *path,
            int64_t *out)
{
    int64_t v = config_setting_get_int64(s);
    if (!s_literal_check(r, s, path, v))
        return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------ */
/* Typed reads.  Each returns 1 when read, 0 when absent, -1 on error.  */
/* ------------------------------------------------------------------ */

static bool
s_is_int(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_INT ||
           config_setting_type(s) == CONFIG_TYPE_INT64;
}

/* Reports every member of group g whose name is not in known. */
static void
s_check_keys(pb_cfg_reader_t *r, const config_setting_t *g, const char *gp,
             const char *const *known)
{
    char expected[PB_MSG_MAX / 2];
    char path[PB_PATH_MAX];

    s_list_join(known, expected, sizeof expected);
    for (int i = 0; i < config_setting_length(g); i++) {
        config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        bool ok = false;
        for (size_t k = 0; name && known[k]; k++)
            ok = ok || strcmp(name, known[k]) == 0;
        if (!ok)
            s_err(r, m, s_path(path, sizeof path, gp, name ? name : "?"),
                  "unknown setting (expected one of: %s)", expected);
    }
}

static config_setting_t *
s_member(const config_setting_t *g, const char *key)
{
    return g ? config_setting_get_member(g, key) : NULL;
}

/* The source line of s, 0 for none. */
static int
s_line(const config_setting_t *s)
{
    return s ? (int)config_setting_source_line(s) : 0;
}

static int
s_group(pb_cfg_reader_t *r, const config_setting_t *g, const char *gp,
        const char *key, config_setting_t **out)
{
    char path[PB_PATH_MAX];
    config_setting_t *s = s_member(g, key);

    if (!s)
        return 0;
    if (!config_setting_is_group(s)) {
        s_err(r, s, s_path(path, sizeof path, gp, key),
              "expected a group { ... }, got %s", s_kind(s));
        return -1;
    }
    *out = s;
    return 1;
}

/* A string, copied into *out (replacing what was there). */
static int
s_string(pb_cfg_reader_t *r, const config_setting_t *g, const char *gp,
         const char *key, bool nonempty, char **out)
{
    char path[PB_PATH_MAX];
    config_setting_t *s = s_member(g, key);

    if (!s)
        return 0;
    s_path(path, sizeof path, gp, key);
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        s_err(r, s, path, "expected a string, got %s", s_kind(s));
        return -1;
    }
    const char *v = config_setting_get_string(s);
    if (nonempty && s_blank(v)) {
        s_err(r, s, path, "expected a non-empty string");
        return -1;
    }
    char *copy = s_strdup(r, v);
    if (!copy)
        return -1;
    free(*out);
    *out = copy;
    return 1;
}

static int
s_int(pb_cfg_reader_t *r, const config_setting_t *g, const char *gp,
      const char *key, int64_t min, int64_t max, int64_t *out)
{
    char path[PB_PATH_MAX];
    config_setting_t *s = s_member(g, key);
    int64_t v;

    if (!s)
        return 0;
    s_path(path, sizeof path, gp, key);
    if (!s_is_int(s)) {
        s_err(r, s, path,
              "expected an integer in [%" PRId64 ", %" PRId64 "], got %s", min,
              max, s_kind(s));
        return -1;
    }
    if (!s_int_value(r, s, path, &v))
        return -1;
    if (v < min || v > max) {
        s_err(r, s, path,
              "expected an integer in [%" PRId64 ", %" PRId64 "], got %" PRId64,
              min, max, v);
        return -1;
    }
    *out = v;
    return 1;
}

static int
s_duration(pb_cfg_reader_t *r, const config_setting_t *g, const char *gp,
           const char *key, int64_t min, int64_t max, int64_t *out)
{
    char path[PB_PATH_MAX], lo[32], hi[32];
    config_setting_t *s = s_member(g, key);
    int64_t v;

    if (!s)
        return 0;
    s_path(path, sizeof path, gp, key);
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        s_err(r, s, path, "expected a duration such as \"30s\", got %s",
              s_kind(s));
        return -1;
    }
    const char *text = config_setting_get_string(s);
    if (pb_parse_duration(text, &v) != 0) {
        s_err(r, s, path,
              "expected a duration such as \"250ms\", \"30s\", \"15m\", "
              "\"2h\" or \"7d\", got '%s'",
              text);
        return -1;
    }
    if (v < min || v > max) {
        s_err(r, s, path, "expected a duration in [%s, %s], got '%s'",
              s_fmt_duration(min, lo, sizeof lo),
              s_fmt_duration(max, hi, sizeof hi), text);
        return -1;
    }
    *out = v;
    return 1;
}

static void
s_free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Element i of a string-or-list setting, and its path. */
static config_setting_t *
s_elem(config_setting_t *s, size_t i, const char *path, char *buf, size_t len)
{
    if (config_setting_type(s) == CONFIG_TYPE_STRING) {
        snprintf(buf, len, "%s", path);
        return s;
    }
    s_index_path(buf, len, path, i);
    return config_setting_get_elem(s, (unsigned)i);
}

/*
 * One string or an array/list of non-empty strings, copied into *out
 * (replacing what was there).  *setting gets the libconfig setting.
 */
static int
s_strings(pb_cfg_reader_t *r, const config_setting_t *g, const char *gp,
          const char *key, char ***out, size_t *count,
          config_setting_t **setting)
{
    char path[PB_PATH_MAX], epath[PB_PATH_MAX];
    config_setting_t *s = s_member(g, key);

    if (!s)
        return 0;
    s_path(path, sizeof path, gp, key);
    int type = config_setting_type(s);
    if (type != CONFIG_TYPE_STRING && type != CONFIG_TYPE_ARRAY &&
        type != CONFIG_TYPE_LIST) {
        s_err(r, s, path, "expected a string or a list of strings, got %s",
              s_kind(s));
        return -1;
    }
    size_t n =
        type == CONFIG_TYPE_STRING ? 1 : (size_t)config_setting_length(s);
    char **v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        s_oom(r);
        return -1;
    }
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        config_setting_t *e = s_elem(s, i, path, epath, sizeof epath);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            s_err(r, e, epath, "expected a string, got %s", s_kind(e));
            ok = false;
        } else if (s_blank(config_setting_get_string(e))) {
            s_err(r, e, epath, "expected a non-empty string");
            ok = false;
        } else if (!(v[i] = s_strdup(r, config_setting_get_string(e)))) {
            ok = false;
        }
    }
    if (!ok) {
        s_free_strings(v, n);
        return -1;
    }
    s_free_strings(*out, *count);
    *out = v;
    *count = n;
    if (setting)
        *setting = s;
    return 1;
}

/* ------------------------------------------------------------------ */
/* The schema                                                          */
/* ------------------------------------------------------------------ */

static const char *const s_top_keys[] = {"plugboard", "connectors", "routes",
                                         NULL};
static const char *const s_plugboard_keys[] = {
    "data_dir", "run_dir",       "log_level",        "plugin_path",
    "http",     "drain_timeout", "dedupe_retention", "delivered_retention",
    NULL};
static const char *const s_http_keys[] = {
    "listen",          "body_limit",   "idle_timeout",
    "max_connections", "admin_listen", NULL};
static const char *const s_connector_keys[] = {
    "name",     "plugin", "isolation", "concurrency", "deliver_timeout",
    "settings", "watch",  NULL};
static const char *const s_route_keys[] = {
    "name",  "from",   "when",  "to",          "why",
    "on_failure", "owner", "notify", "retry", "alert_after",
    "alert_interval", NULL};
static const char *const s_retry_keys[] = {"attempts", "initial", "max", NULL};

#define PB_DEFAULT_LISTEN "127.0.0.1:8787"
#define PB_BODY_LIMIT_MIN INT64_C(1024)
#define PB_BODY_LIMIT_MAX (INT64_C(64) * 1024 * 1024)
#define PB_MAX_CONNECTIONS_MAX 100000
#define PB_CONCURRENCY_MAX 64
#define PB_ATTEMPTS_MAX 1000
#define PB_RETENTION_MAX (365 * PB_MS_DAY)
#define PB_RETRY_MAX (7 * PB_MS_DAY)

/* "HOST:PORT" with a port in [0, 65535] (0: any free port). */
static bool
s_listen_valid(const char *text)
{
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text)
        return false;
    const char *p = colon + 1;
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 5 || p[digits] != '\0')
        return false;
    return strtol(p, NULL, 10) <= 65535;
}

static void
s_load_http(pb_cfg_reader_t *r, pb_config_t *cfg, const config_setting_t *g)
{
    const char *gp = "plugboard.http";
    config_setting_t *s;

    s_check_keys(r, g, gp, s_http_keys);
    cfg->listen_line = s_line(s_member(g, "listen"));
    cfg->admin_listen_line = s_line(s_member(g, "admin_listen"));
    cfg->listen = s_strdup(r, PB_DEFAULT_LISTEN);
    if (s_string(r, g, gp, "listen", true, &cfg->listen) > 0 &&
        !s_listen_valid(cfg->listen)) {
        s = s_member(g, "listen");
        s_err(r, s, "plugboard.http.listen",
              "expected \"HOST:PORT\" such as \"" PB_DEFAULT_LISTEN
              "\", got '%s'",
              cfg->listen);
    }
    s_int(r, g, gp, "body_limit", PB_BODY_LIMIT_MIN, PB_BODY_LIMIT_MAX,
          &cfg->body_limit);
    s_duration(r, g, gp, "idle_timeout", PB_MS_SECOND, PB_MS_HOUR,
               &cfg->idle_timeout_ms);
    s_int(r, g, gp, "max_connections", 1, PB_MAX_CONNECTIONS_MAX,
          &cfg->max_connections);
    if (s_string(r, g, gp, "admin_listen", true, &cfg->admin_listen) > 0 &&
        !s_listen_valid(cfg->admin_listen))
        s_err(r, s_member(g, "admin_listen"), "plugboard.http.admin_listen",
              "expected \"HOST:PORT\" such as \"127.0.0.1:9787\", got '%s'",
              cfg->admin_listen);
}

static void
s_load_plugboard(pb_cfg_reader_t *r, pb_config_t *cfg,
                 const config_setting_t *g)
{
    const char *gp = "plugboard";
    config_setting_t *http = NULL;

    s_check_keys(r, g, gp, s_plugboard_keys);
    s_string(r, g, gp, "data_dir", true, &cfg->data_dir);
    s_string(r, g, gp, "run_dir", true, &cfg->run_dir);
    cfg->data_dir_line = s_line(s_member(g, "data_dir"));
    cfg->run_dir_line = s_line(s_member(g, "run_dir"));
    if (s_string(r, g, gp, "log_level", true, &cfg->log_level) > 0) {
        pb_log_level_t level;
        if (pb_log_parse_level(cfg->log_level, &level) != 0)
            s_err(r, s_member(g, "log_level"), "plugboard.log_level",
                  "expected one of error, warn, info, debug, got '%s'",
                  cfg->log_level);
    }
    s_strings(r, g, gp, "plugin_path", &cfg->plugin_path,
              &cfg->plugin_path_count, NULL);
    if (s_group(r, g, gp, "http", &http) > 0)
        s_load_http(r, cfg, http);
    s_duration(r, g, gp, "drain_timeout", 1, PB_MS_HOUR,
               &cfg->drain_timeout_ms);
    s_duration(r, g, gp, "dedupe_retention", 1, PB_RETENTION_MAX,
               &cfg->dedupe_retention_ms);
    s_duration(r, g, gp, "delivered_retention", 1, PB_RETENTION_MAX,
               &cfg->delivered_retention_ms);
}

/* A connector's settings group, kept raw until pb_config_bind. */
static void
s_load_raw_settings(pb_cfg_reader_t *r, pb_connector_conf_t *conn,
                    const config_setting_t *g, const char *gp)
{
    char path[PB_PATH_MAX];
    size_t n = (size_t)config_setting_length(g);

    conn->settings = calloc(n ? n : 1, sizeof *conn->settings);
    if (!conn->settings) {
        s_oom(r);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        pb_raw_setting_t *raw = &conn->settings[conn->settings_count++];
        raw->name = s_strdup(r, config_setting_name(m));
        raw->line = (int)config_setting_source_line(m);
        if (!raw->name)
            return;
        s_path(path, sizeof path, gp, raw->name);
        switch (config_setting_type(m)) {
        case CONFIG_TYPE_STRING:
            raw->kind = PB_RAW_STRING;
            raw->str = s_strdup(r, config_setting_get_string(m));
            break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
            raw->kind = PB_RAW_INT;
            s_int_value(r, m, path, &raw->i);
            break;
        case CONFIG_TYPE_BOOL:
            raw->kind = PB_RAW_BOOL;
            raw->b = config_setting_get_bool(m) != 0;
            break;
        case CONFIG_TYPE_FLOAT:
            raw->kind = PB_RAW_FLOAT;
            raw->f = config_setting_get_float(m);
            break;
        default:
            raw->kind = PB_RAW_OTHER;
            break;
        }
    }
}

static void
s_load_connector(pb_cfg_reader_t *r, pb_config_t *cfg, config_setting_t *c,
                 size_t idx)
{
    char path[PB_PATH_MAX], label[PB_PATH_MAX];
    pb_connector_conf_t *conn = &cfg->connectors[idx];
    config_setting_t *settings = NULL;
    int64_t concurrency = 1;

    s_index_path(path, sizeof path, "connectors", idx);
    conn->line = (int)config_setting_source_line(c);
    conn->concurrency = 1;
    if (!(conn->isolation = s_strdup(r, "thread")))
        return;
    if (!config_setting_is_group(c)) {
        s_err(r, c, path,
              "expected a group { name = ...; plugin = ...; }, got %s",
              s_kind(c));
        return;
    }
    s_check_keys(r, c, path, s_connector_keys);
    int got = s_string(r, c, path, "name", false, &conn->name);
    if (got == 0)
        s_err(r, c, path,
              "missing 'name': give the connector a unique name such as "
              "\"crm\"");
    if (got > 0 && !pb_config_name_valid(conn->name))
        s_err(r, s_member(c, "name"), s_path(label, sizeof label, path, "name"),
              "'%s' is not a valid connector name (use 1 to 63 of a-z, 0-9, "
              "'_' and '-')",
              conn->name);
    for (size_t j = 0; got > 0 && j < idx; j++) {
        if (cfg->connectors[j].name &&
            strcmp(cfg->connectors[j].name, conn->name) == 0)
            s_err(r, s_member(c, "name"),
                  s_path(label, sizeof label, path, "name"),
                  "connector name '%s' is already used at line %d", conn->name,
                  cfg->connectors[j].line);
    }
    s_label(label, sizeof label, path, conn->name);
    if (s_string(r, c, path, "plugin", true, &conn->plugin) == 0)
        s_err(r, c, label,
              "missing 'plugin': name the plugin that implements it, such as "
              "\"stripe\"");
    if (s_string(r, c, path, "isolation", false, &conn->isolation) > 0 &&
        strcmp(conn->isolation, "thread") != 0 &&
        strcmp(conn->isolation, "process") != 0)
        s_err(r, s_member(c, "isolation"),
              s_path(label, sizeof label, path, "isolation"),
              "expected \"thread\" or \"process\", got '%s'", conn->isolation);
    if (s_int(r, c, path, "concurrency", 1, PB_CONCURRENCY_MAX, &concurrency) >
        0)
        conn->concurrency = (int)concurrency;
    if (conn->concurrency > 1 && strcmp(conn->isolation, "process") == 0)
        s_err(r, s_member(c, "concurrency"),
              s_path(label, sizeof label, path, "concurrency"),
              "concurrency %d needs isolation = \"thread\": a worker process "
              "runs one delivery at a time",
              conn->concurrency);
    s_duration(r, c, path, "deliver_timeout", 1, PB_MS_HOUR,
               &conn->deliver_timeout_ms);
    config_setting_t *watch = s_member(c, "watch");
    if (watch && config_setting_type(watch) != CONFIG_TYPE_BOOL)
        s_err(r, watch, s_path(label, sizeof label, path, "watch"),
              "expected true or false, got %s", s_kind(watch));
    else if (watch)
        conn->watch = config_setting_get_bool(watch) != 0;
    if (s_group(r, c, path, "settings", &settings) > 0)
        s_load_raw_settings(r, conn, settings,
                            s_path(label, sizeof label, path, "settings"));
}

static void
s_load_connectors(pb_cfg_reader_t *r, pb_config_t *cfg, config_setting_t *list)
{
    if (!config_setting_is_list(list) &&
        !(config_setting_is_array(list) && config_setting_length(list) == 0)) {
        s_err(r, list, "connectors",
              "expected a list of groups: ( { name = ...; plugin = ...; }, "
              "... ), got %s",
              s_kind(list));
        return;
    }
    size_t n = (size_t)config_setting_length(list);
    cfg->connectors = calloc(n ? n : 1, sizeof *cfg->connectors);
    if (!cfg->connectors) {
        s_oom(r);
        return;
    }
    cfg->connector_count = n;
    for (size_t i = 0; i < n; i++)
        s_load_connector(r, cfg, config_setting_get_elem(list, (unsigned)i), i);
}

/* "(connectors: a, b)" for messages about a name that matches none. */
static const char *
s_connector_names(const pb_config_t *cfg, char *buf, size_t len)
{
    const char *sep = " ";
    int n = snprintf(buf, len, "connectors:");
    size_t used = n > 0 ? (size_t)n : 0;

    for (size_t i = 0; i < cfg->connector_count && used < len; i++) {
        if (!cfg->connectors[i].name)
            continue;
        n = snprintf(buf + used, len - used, "%s%s", sep,
                     cfg->connectors[i].name);
        used += n > 0 ? (size_t)n : 0;
        sep = ", ";
    }
    if (cfg->connector_count == 0)
        snprintf(buf, len, "no connectors are defined");
    return buf;
}

/* Reports name unless it names a connector. */
static void
s_check_ref(pb_cfg_reader_t *r, const pb_config_t *cfg,
            const config_setting_t *s, const char *path, const char *name)
{
    char names[PB_MSG_MAX / 2];

    if (pb_config_connector(cfg, name))
        return;
    s_err(r, s, path, "no connector named '%s' (%s)", name,
          s_connector_names(cfg, names, sizeof names));
}

static void
s_load_retry(pb_cfg_reader_t *r, pb_route_conf_t *route,
             const config_setting_t *g, const char *gp)
{
    char lo[32], hi[32];
    int64_t attempts = route->retry.attempts;

    s_check_keys(r, g, gp, s_retry_keys);
    if (s_int(r, g, gp, "attempts", 1, PB_ATTEMPTS_MAX, &attempts) > 0)
        route->retry.attempts = (int)attempts;
    int a = s_duration(r, g, gp, "initial", 1, PB_RETRY_MAX,
                       &route->retry.initial_ms);
    int b = s_duration(r, g, gp, "max", 1, PB_RETRY_MAX, &route->retry.max_ms);
    if (a >= 0 && b >= 0 && (a > 0 || b > 0) &&
        route->retry.initial_ms > route->retry.max_ms) {
        char path[PB_PATH_MAX];
        const char *key = a > 0 ? "initial" : "max";
        s_err(r, s_member(g, key), s_path(path, sizeof path, gp, key),
              "retry.initial (%s) is longer than retry.max (%s)",
              s_fmt_duration(route->retry.initial_ms, lo, sizeof lo),
              s_fmt_duration(route->retry.max_ms, hi, sizeof hi));
    }
}

/* when: valid, non-empty patterns. */
static void
s_load_when(pb_cfg_reader_t *r, pb_route_conf_t *route, config_setting_t *c,
            const char *path, const char *label)
{
    char epath[PB_PATH_MAX];
    config_setting_t *s = NULL;
    int got =
        s_strings(r, c, path, "when", &route->when, &route->when_count, &s);

    if (got == 0)
        s_err(r, c, label,
              "missing 'when': name the event types it carries, such as "
              "\"payment.failed\" or \"payment.*\"");
    if (got <= 0)
        return;
    s_path(epath, sizeof epath, path, "when");
    if (route->when_count == 0)
        s_err(r, s, epath, "expected at least one event type pattern");
    for (size_t i = 0; i < route->when_count; i++) {
        char ep[PB_PATH_MAX];
        config_setting_t *e = s_elem(s, i, epath, ep, sizeof ep);
        if (!s_pattern_valid(route->when[i]))
            s_err(r, e, ep,
                  "'%s' is not an event type pattern (expected \"*\", "
                  "\"payment.*\" or a type such as \"payment.failed\")",
                  route->when[i]);
    }
}

/* to: a non-empty list of distinct connector names. */
static void
s_load_to(pb_cfg_reader_t *r, const pb_config_t *cfg, pb_route_conf_t *route,
          config_setting_t *c, const char *path, const char *label)
{
    char tpath[PB_PATH_MAX];
    config_setting_t *s = NULL;
    int got = s_strings(r, c, path, "to", &route->to, &route->to_count, &s);

    if (got == 0)
        s_err(r, c, label,
              "missing 'to': list the connectors that receive its events");
    if (got <= 0)
        return;
    s_path(tpath, sizeof tpath, path, "to");
    if (route->to_count == 0)
        s_err(r, s, tpath, "expected at least one destination connector");
    for (size_t i = 0; i < route->to_count; i++) {
        char ep[PB_PATH_MAX];
        config_setting_t *e = s_elem(s, i, tpath, ep, sizeof ep);
        s_check_ref(r, cfg, e, ep, route->to[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(route->to[i], route->to[j]) == 0) {
                s_err(r, e, ep, "'%s' is listed twice", route->to[i]);
                break;
            }
    }
}

/* A required, non-blank text field of a route (why, owner). */
static void
s_load_required_text(pb_cfg_reader_t *r, config_setting_t *c, const char *path,
                     const char *label, const char *key, const char *hint,
                     char **out)
{
    int got = s_string(r, c, path, key, true, out);
    if (got == 0)
        s_err(r, c, label, "missing '%s': %s", key, hint);
}

#define PB_ALERT_MAX (30 * PB_MS_DAY)

/* alert_after and alert_interval: when and how often the owner hears of
 * an unhealthy destination (docs/operations.md, "Owner notices"). */
static void
s_load_alert(pb_cfg_reader_t *r, pb_route_conf_t *route,
             const config_setting_t *c, const char *path, const char *label)
{
    int after = s_duration(r, c, path, "alert_after", PB_MS_SECOND,
                           PB_ALERT_MAX, &route->alert_after_ms);
    s_duration(r, c, path, "alert_interval", PB_MS_SECOND, PB_ALERT_MAX,
               &route->alert_interval_ms);
    if (after > 0 && !route->notify)
        s_err(r, s_member(c, "alert_after"), label,
              "'alert_after' needs 'notify': name the connector that tells "
              "the owner");
}

static void
s_load_route(pb_cfg_reader_t *r, pb_config_t *cfg, config_setting_t *c,
             size_t idx)
{
    char path[PB_PATH_MAX], label[PB_PATH_MAX], sub[PB_PATH_MAX];
    pb_route_conf_t *route = &cfg->routes[idx];
    config_setting_t *retry = NULL;

    s_index_path(path, sizeof path, "routes", idx);
    route->line = (int)config_setting_source_line(c);
    route->retry.attempts = 10;
    route->retry.initial_ms = PB_MS_SECOND;
    route->retry.max_ms = 15 * PB_MS_MINUTE;
    route->alert_interval_ms = PB_MS_HOUR;
    if (!config_setting_is_group(c)) {
        s_err(r, c, path,
              "expected a group { name = ...; from = ...; ... }, got %s",
              s_kind(c));
        return;
    }
    s_check_keys(r, c, path, s_route_keys);
    int got = s_string(r, c, path, "name", false, &route->name);
    s_path(sub, sizeof sub, path, "name");
    if (got == 0)
        s_err(r, c, path,
              "missing 'name': give the route a unique name such as "
              "\"failed-payment-follow-up\"");
    if (got > 0 && !pb_config_name_valid(route->name))
        s_err(r, s_member(c, "name"), sub,
              "'%s' is not a valid route name (use 1 to 63 of a-z, 0-9, '_' "
              "and '-')",
              route->name);
    for (size_t j = 0; got > 0 && j < idx; j++)
        if (cfg->routes[j].name &&
            strcmp(cfg->routes[j].name, route->name) == 0)
            s_err(r, s_member(c, "name"), sub,
                  "route name '%s' is already used at line %d", route->name,
                  cfg->routes[j].line);
    s_label(label, sizeof label, path, route->name);

    got = s_string(r, c, path, "from", false, &route->from);
    if (got == 0)
        s_err(r, c, label,
              "missing 'from': name the connector whose events it carries");
    if (got > 0)
        s_check_ref(r, cfg, s_member(c, "from"),
                    s_path(sub, sizeof sub, path, "from"), route->from);
    s_load_when(r, route, c, path, label);
    s_load_to(r, cfg, route, c, path, label);
    s_load_required_text(r, c, path, label, "why",
                         "say which business bottleneck this route removes",
                         &route->why);
    s_load_required_text(r, c, path, label, "owner",
                         "name who must know when its deliveries fail, such "
                         "as \"billing-team@example.com\"",
                         &route->owner);
    s_string(r, c, path, "on_failure", true, &route->on_failure);
    if (s_string(r, c, path, "notify", false, &route->notify) > 0)
        s_check_ref(r, cfg, s_member(c, "notify"),
                    s_path(sub, sizeof sub, path, "notify"), route->notify);
    if (s_group(r, c, path, "retry", &retry) > 0)
        s_load_retry(r, route, retry, s_path(sub, sizeof sub, path, "retry"));
    s_load_alert(r, route, c, path, label);
}

static void
s_load_routes(pb_cfg_reader_t *r, pb_config_t *cfg, config_setting_t *list)
{
    if (!config_setting_is_list(list) &&
        !(config_setting_is_array(list) && config_setting_length(list) == 0)) {
        s_err(r, list, "routes",
              "expected a list of groups: ( { name = ...; from = ...; }, "
              "... ), got %s",
              s_kind(list));
        return;
    }
    size_t n = (size_t)config_setting_length(list);
    cfg->routes = calloc(n ? n : 1, sizeof *cfg->routes);
    if (!cfg->routes) {
        s_oom(r);
        return;
    }
    cfg->route_count = n;
    for (size_t i = 0; i < n; i++)
        s_load_route(r, cfg, config_setting_get_elem(list, (unsigned)i), i);
}

static void
s_load_root(pb_cfg_reader_t *r, pb_config_t *cfg, config_setting_t *root)
{
    config_setting_t *g = NULL;

    s_check_keys(r, root, "", s_top_keys);
    if (s_group(r, root, "", "plugboard", &g) > 0)
        s_load_plugboard(r, cfg, g);
    /* connectors first: routes refer to them wherever they are written */
    if ((g = s_member(root, "connectors")))
        s_load_connectors(r, cfg, g);
    if ((g = s_member(root, "routes")))
        s_load_routes(r, cfg, g);
    if (!cfg->run_dir && cfg->data_dir) {
        size_t n = strlen(cfg->data_dir);
        while (n > 1 && cfg->data_dir[n - 1] == '/')
            n--;
        if (!(cfg->run_dir = malloc(n + sizeof "/run")))
            s_oom(r);
        else
            snprintf(cfg->run_dir, n + sizeof "/run", "%.*s/run", (int)n,
                     cfg->data_dir);
    }
}

/* A model holding only the defaults. */
static pb_config_t *
s_config_new(const char *path)
{
    pb_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg->path = strdup(path);
    cfg->data_dir = strdup("var");
    cfg->log_level = strdup("info");
    cfg->body_limit = 1024 * 1024;
    cfg->idle_timeout_ms = 30 * PB_MS_SECOND;
    cfg->max_connections = 1024;
    cfg->drain_timeout_ms = 10 * PB_MS_SECOND;
    cfg->dedupe_retention_ms = 7 * PB_MS_DAY;
    cfg->delivered_retention_ms = PB_MS_DAY;
    if (!cfg->path || !cfg->data_dir || !cfg->log_level)
        pb_config_destroy(&cfg);
    return cfg;
}

#define PB_SYNTAX_QUOTE_MAX 60
#define PB_SYNTAX_EXPECTED                                                     \
    "expected NAME = VALUE; where VALUE is a \"string\", a number, true or "   \
    "false, { group }, [ array ] or ( list )"

/* The text of the file libconfig's syntax error is in, when read. */
static pb_cfg_text_t *
s_syntax_source(pb_cfg_reader_t *r, const config_t *lc)
{
    const char *name = config_error_file(lc);
    for (size_t i = 0; i < r->text_count; i++) {
        const char *n = r->texts[i].name;
        if ((!name && !n) || (name && n && strcmp(name, n) == 0))
            return &r->texts[i];
    }
    return NULL;
}

/* Line number line of text, trimmed, control bytes as '?', cut with
 * "..." past PB_SYNTAX_QUOTE_MAX; "" when there is none. */
static void
s_quote_line(const char *text, int line, char *out, size_t len)
{
    out[0] = '\0';
    if (!text || line < 1 || len < PB_SYNTAX_QUOTE_MAX + 4)
        return;
    const char *p = text;
    for (int l = 1; l < line && p; l++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (!p)
        return;
    size_t n = strcspn(p, "\n");
    while (n > 0 && isspace((unsigned char)*p)) {
        p++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)p[n - 1]))
        n--;
    bool cut = n > PB_SYNTAX_QUOTE_MAX;
    if (cut) {
        n = PB_SYNTAX_QUOTE_MAX;
        while (n > 0 && ((unsigned char)p[n] & 0xC0) == 0x80)
            n--; /* not inside a UTF-8 sequence */
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    strcpy(out + n, cut ? "..." : "");
}

static void
s_syntax_error(pb_cfg_reader_t *r, const config_t *lc)
{
    const char *text = config_error_text(lc) ? config_error_text(lc) : "";
    const char *file = r->path;
    char display[PB_PATH_MAX];

    if (config_error_file(lc)) {
        const char *name = config_error_file(lc);
        if (name[0] != '/' && r->include_dir)
            snprintf(display, sizeof display, "%s/%s", r->include_dir, name);
        else
            snprintf(display, sizeof display, "%s", name);
        file = display;
    }
    if (config_error_type(lc) == CONFIG_ERR_FILE_IO) {
        pb_diag_add(r->diag, "%s:%d: %s", file, config_error_line(lc), text);
    } else if (strcmp(text, "syntax error") == 0) {
        /* libconfig says no more: quote the line, say what fits there */
        char quoted[PB_SYNTAX_QUOTE_MAX + 8];
        pb_cfg_text_t *src = s_syntax_source(r, lc);
        s_quote_line(src ? src->text : NULL, config_error_line(lc), quoted,
                     sizeof quoted);
        if (quoted[0])
            pb_diag_add(r->diag, "%s:%d: syntax error in '%s': %s", file,
                        config_error_line(lc), quoted, PB_SYNTAX_EXPECTED);
        else
            pb_diag_add(r->diag,
                        "%s:%d: syntax error at an empty line or the end of "
                        "the file: a ';' or a closing '}', ']' or ')' may be "
                        "missing before it",
                        file, config_error_line(lc));
    } else {
        pb_diag_add(r->diag, "%s:%d: syntax error: %s", file,
                    config_error_line(lc), text);
    }
    r->failed = true;
}

/* The directory libconfig resolves @include against; NULL = cwd. */
static char *
s_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return NULL;
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

pb_config_t *
pb_config_load(const char *path, pb_diag_t *diag)
{
    pb_cfg_reader_t r = {.path = path, .diag = diag};
    config_t lc;

    pb_config_t *cfg = s_config_new(path);
    if (!cfg) {
        pb_diag_add(diag, "%s: out of memory", path);
        return NULL;
    }
    char *text = s_read_file(path, SIZE_MAX / 2, NULL);
    if (!text) {
        pb_diag_add(diag, "cannot read config file '%s': %s", path,
                    strerror(errno));
        pb_config_destroy(&cfg);
        return NULL;
    }
    char *dir = s_dirname(path);
    r.include_dir = dir;
    config_init(&lc);
    if (dir)
        config_set_include_dir(&lc, dir);
    if (!s_add_text(&r, NULL, path, text))
        goto out_release;
    if (!config_read_string(&lc, text)) {
        s_syntax_error(&r, &lc);
        goto out_release;
    }
    s_load_root(&r, cfg, config_root_setting(&lc));

out_release:
    config_destroy(&lc);
    s_reader_release(&r);
    free(dir);
    if (r.failed)
        pb_config_destroy(&cfg);
    return cfg;
}

static void
s_connector_release(pb_connector_conf_t *c)
{
    free(c->name);
    free(c->plugin);
    free(c->isolation);
    for (size_t i = 0; i < c->settings_count; i++) {
        free(c->settings[i].name);
        free(c->settings[i].str);
    }
    free(c->settings);
    pb_settings_destroy(&c->bound);
}

static void
s_route_release(pb_route_conf_t *r)
{
    free(r->name);
    free(r->from);
    s_free_strings(r->when, r->when_count);
    s_free_strings(r->to, r->to_count);
    free(r->why);
    free(r->on_failure);
    free(r->owner);
    free(r->notify);
}

void
pb_config_destroy(pb_config_t **cfgp)
{
    if (!cfgp || !*cfgp)
        return;
    pb_config_t *cfg = *cfgp;
    free(cfg->path);
    free(cfg->data_dir);
    free(cfg->run_dir);
    free(cfg->listen);
    free(cfg->admin_listen);
    s_free_strings(cfg->plugin_path, cfg->plugin_path_count);
    free(cfg->log_level);
    for (size_t i = 0; i < cfg->connector_count; i++)
        s_connector_release(&cfg->connectors[i]);
    free(cfg->connectors);
    for (size_t i = 0; i < cfg->route_count; i++)
        s_route_release(&cfg->routes[i]);
    free(cfg->routes);
    free(cfg);
    *cfgp = NULL;
}

const char *
pb_config_where(const pb_config_t *cfg, int line, char *buf, size_t len)
{
    if (line > 0)
        snprintf(buf, len, "%s:%d", cfg->path, line);
    else
        snprintf(buf, len, "%s", cfg->path);
    return buf;
}

pb_connector_conf_t *
pb_config_connector(const pb_config_t *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->connector_count; i++)
        if (cfg->connectors[i].name &&
            strcmp(cfg->connectors[i].name, name) == 0)
            return &cfg->connectors[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Bound settings                                                      */
/* ------------------------------------------------------------------ */

typedef struct pb_setting_value {
    char *name;
    plugboard_setting_type_t type;
    bool secret;
    bool set;  /* given, or defaulted */
    char *str; /* STRING; wiped on destroy when secret */
    int64_t i; /* INT, DURATION (ms) */
    bool b;    /* BOOL */
} pb_setting_value_t;

struct plugboard_settings {
    pb_setting_value_t *items;
    size_t count;
};

static const pb_setting_value_t *
s_find(const plugboard_settings_t *s, const char *name)
{
    for (size_t i = 0; s && name && i < s->count; i++)
        if (strcmp(s->items[i].name, name) == 0)
            return &s->items[i];
    return NULL;
}

const char *
pb_settings_string(const plugboard_settings_t *s, const char *name)
{
    const pb_setting_value_t *v = s_find(s, name);
    return v && v->set && v->type == PLUGBOARD_SETTING_STRING ? v->str : NULL;
}

int64_t
pb_settings_int(const plugboard_settings_t *s, const char *name)
{
    const pb_setting_value_t *v = s_find(s, name);
    if (!v || !v->set)
        return 0;
    if (v->type != PLUGBOARD_SETTING_INT &&
        v->type != PLUGBOARD_SETTING_DURATION)
        return 0;
    return v->i;
}

bool
pb_settings_bool(const plugboard_settings_t *s, const char *name)
{
    const pb_setting_value_t *v = s_find(s, name);
    return v && v->set && v->type == PLUGBOARD_SETTING_BOOL && v->b;
}

bool
pb_settings_is_set(const plugboard_settings_t *s, const char *name)
{
    const pb_setting_value_t *v = s_find(s, name);
    return v && v->set;
}

static void
s_wipe_free(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

void
pb_settings_destroy(plugboard_settings_t **sp)
{
    if (!sp || !*sp)
        return;
    plugboard_settings_t *s = *sp;
    for (size_t i = 0; i < s->count; i++) {
        free(s->items[i].name);
        if (s->items[i].secret)
            s_wipe_free(s->items[i].str);
        else
            free(s->items[i].str);
    }
    free(s->items);
    free(s);
    *sp = NULL;
}

/* Where binding messages point. */
typedef struct pb_bind {
    const char *where;  /* the config file, or the caller's source name */
    const char *prefix; /* "connectors.[1].settings", or NULL */
    int line;           /* line for messages without one, 0 for none */
    pb_diag_t *diag;
    bool failed;
} pb_bind_t;

/* "WHERE:LINE: PREFIX.NAME: message"; name NULL names the whole group. */
static void __attribute__((format(printf, 4, 5)))
s_bind_err(pb_bind_t *b, int line, const char *name, const char *fmt, ...)
{
    char msg[PB_MSG_MAX], head[PB_PATH_MAX], subject[PB_PATH_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line <= 0)
        line = b->line;
    if (line > 0)
        snprintf(head, sizeof head, "%s:%d", b->where, line);
    else
        snprintf(head, sizeof head, "%s", b->where);
    if (b->prefix && name)
        snprintf(subject, sizeof subject, " %s.%s:", b->prefix, name);
    else if (b->prefix || name)
        snprintf(subject, sizeof subject, " %s:", b->prefix ? b->prefix : name);
    else
        subject[0] = '\0';
    pb_diag_add(b->diag, "%s:%s %s", head, subject, msg);
    b->failed = true;
}

static const char *
s_raw_kind(pb_raw_kind_t kind)
{
    switch (kind) {
    case PB_RAW_STRING:
        return "a string";
    case PB_RAW_INT:
        return "an integer";
    case PB_RAW_BOOL:
        return "a boolean";
    case PB_RAW_FLOAT:
        return "a float";
    default:
        return "a group, list or array";
    }
}

static bool
s_spec_bounded(const plugboard_setting_spec_t *spec)
{
    return spec->min != 0 || spec->max != 0;
}

/* Range-checks an INT value; show says whether the value may be printed. */
static void
s_bind_int(pb_bind_t *b, const plugboard_setting_spec_t *spec,
           pb_setting_value_t *v, int64_t value, int line, bool show)
{
    if (s_spec_bounded(spec) && (value < spec->min || value > spec->max)) {
        if (show)
            s_bind_err(b, line, spec->name,
                       "expected an integer in [%" PRId64 ", %" PRId64
                       "], got %" PRId64,
                       spec->min, spec->max, value);
        else
            s_bind_err(b, line, spec->name,
                       "expected an integer in [%" PRId64 ", %" PRId64 "]",
                       spec->min, spec->max);
        return;
    }
    v->i = value;
    v->set = true;
}

static void
s_bind_duration(pb_bind_t *b, const plugboard_setting_spec_t *spec,
                pb_setting_value_t *v, const char *text, int line, bool show)
{
    char lo[32], hi[32];
    int64_t ms;

    if (pb_parse_duration(text, &ms) != 0) {
        if (show)
            s_bind_err(b, line, spec->name,
                       "expected a duration such as \"250ms\", \"30s\", "
                       "\"15m\" or \"2h\", got '%s'",
                       text);
        else
            s_bind_err(b, line, spec->name,
                       "expected a duration such as \"250ms\", \"30s\", "
                       "\"15m\" or \"2h\"");
        return;
    }
    if (s_spec_bounded(spec) && (ms < spec->min || ms > spec->max)) {
        s_fmt_duration(spec->min, lo, sizeof lo);
        s_fmt_duration(spec->max, hi, sizeof hi);
        if (show)
            s_bind_err(b, line, spec->name,
                       "expected a duration in [%s, %s], got '%s'", lo, hi,
                       text);
        else
            s_bind_err(b, line, spec->name, "expected a duration in [%s, %s]",
                       lo, hi);
        return;
    }
    v->i = ms;
    v->set = true;
}

/*
 * Binds a value given as text (a default, or a resolved secret): *text
 * is taken when the setting keeps it, else left to the caller.
 */
static void
s_bind_text(pb_bind_t *b, const plugboard_setting_spec_t *spec,
            pb_setting_value_t *v, char **text, int line, bool show)
{
    char *end;

    switch (spec->type) {
    case PLUGBOARD_SETTING_STRING:
        v->str = *text;
        *text = NULL;
        v->set = true;
        break;
    case PLUGBOARD_SETTING_INT: {
        errno = 0;
        long long n = strtoll(*text, &end, 10);
        if (!**text || *end || errno) {
            if (show)
                s_bind_err(b, line, spec->name, "expected an integer, got '%s'",
                           *text);
            else
                s_bind_err(b, line, spec->name, "expected an integer");
            break;
        }
        s_bind_int(b, spec, v, n, line, show);
        break;
    }
    case PLUGBOARD_SETTING_BOOL:
        if (strcmp(*text, "true") == 0 || strcmp(*text, "false") == 0) {
            v->b = strcmp(*text, "true") == 0;
            v->set = true;
        } else if (show) {
            s_bind_err(b, line, spec->name, "expected true or false, got '%s'",
                       *text);
        } else {
            s_bind_err(b, line, spec->name, "expected true or false");
        }
        break;
    case PLUGBOARD_SETTING_DURATION:
        s_bind_duration(b, spec, v, *text, line, show);
        break;
    default:
        s_bind_err(b, line, spec->name,
                   "the plugin declares an unknown setting type %d",
                   (int)spec->type);
        break;
    }
}

/* Reads a file: secret; NULL after reporting.  Caller wipes and frees. */
static char *
s_secret_file(pb_bind_t *b, const char *name, const char *path, int line)
{
    size_t len;
    char *text = s_read_file(path, PB_SECRET_FILE_MAX, &len);

    if (!text) {
        s_bind_err(b, line, name, "cannot read secret file '%s': %s", path,
                   strerror(errno));
        return NULL;
    }
    if (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    if (len > 0 && text[len - 1] == '\r')
        text[--len] = '\0';
    if (len == 0 || strlen(text) != len) {
        s_bind_err(b, line, name,
                   len == 0 ? "secret file '%s' is empty"
                            : "secret file '%s' contains a NUL byte",
                   path);
        s_wipe_free(text);
        return NULL;
    }
    return text;
}

/* Resolves "env:NAME" or "file:PATH"; NULL after reporting. */
static char *
s_resolve_secret(pb_bind_t *b, const char *name, const char *ref, int line)
{
    if (s_starts_with(ref, "env:")) {
        const char *var = ref + 4;
        if (!*var) {
            s_bind_err(b, line, name,
                       "expected env:NAME with the variable's name");
            return NULL;
        }
        const char *value = getenv(var);
        if (!value) {
            s_bind_err(b, line, name, "environment variable '%s' is not set",
                       var);
            return NULL;
        }
        if (!*value) {
            s_bind_err(b, line, name, "environment variable '%s' is empty",
                       var);
            return NULL;
        }
        char *copy = strdup(value);
        if (!copy)
            s_bind_err(b, line, name, "out of memory");
        return copy;
    }
    if (!ref[5]) {
        s_bind_err(b, line, name, "expected file:PATH with the file's path");
        return NULL;
    }
    return s_secret_file(b, name, ref + 5, line);
}

static bool
s_is_secret_ref(const char *text)
{
    return s_starts_with(text, "env:") || s_starts_with(text, "file:");
}

static void
s_bind_secret(pb_bind_t *b, const plugboard_setting_spec_t *spec,
              pb_setting_value_t *v, const pb_raw_setting_t *raw)
{
    if (raw->kind != PB_RAW_STRING || !raw->str || !s_is_secret_ref(raw->str)) {
        s_bind_err(b, raw->line, spec->name,
                   "secret settings must be given as env:NAME or file:PATH");
        return;
    }
    char *text = s_resolve_secret(b, spec->name, raw->str, raw->line);
    if (!text)
        return;
    s_bind_text(b, spec, v, &text, raw->line, false);
    s_wipe_free(text);
}

static void
s_bind_raw(pb_bind_t *b, const plugboard_setting_spec_t *spec,
           pb_setting_value_t *v, const pb_raw_setting_t *raw)
{
    if (spec->secret) {
        s_bind_secret(b, spec, v, raw);
        return;
    }
    switch (spec->type) {
    case PLUGBOARD_SETTING_STRING:
        if (raw->kind != PB_RAW_STRING || !raw->str) {
            s_bind_err(b, raw->line, spec->name, "expected a string, got %s",
                       s_raw_kind(raw->kind));
        } else if (!(v->str = strdup(raw->str))) {
            s_bind_err(b, raw->line, spec->name, "out of memory");
        } else {
            v->set = true;
        }
        break;
    case PLUGBOARD_SETTING_INT:
        if (raw->kind != PB_RAW_INT) {
            if (s_spec_bounded(spec))
                s_bind_err(b, raw->line, spec->name,
                           "expected an integer in [%" PRId64 ", %" PRId64
                           "], got %s",
                           spec->min, spec->max, s_raw_kind(raw->kind));
            else
                s_bind_err(b, raw->line, spec->name,
                           "expected an integer, got %s",
                           s_raw_kind(raw->kind));
            break;
        }
        s_bind_int(b, spec, v, raw->i, raw->line, true);
        break;
    case PLUGBOARD_SETTING_BOOL:
        if (raw->kind != PB_RAW_BOOL) {
            s_bind_err(b, raw->line, spec->name,
                       "expected true or false, got %s", s_raw_kind(raw->kind));
            break;
        }
        v->b = raw->b;
        v->set = true;
        break;
    case PLUGBOARD_SETTING_DURATION:
        if (raw->kind != PB_RAW_STRING || !raw->str) {
            s_bind_err(b, raw->line, spec->name,
                       "expected a duration such as \"30s\", got %s",
                       s_raw_kind(raw->kind));
            break;
        }
        s_bind_duration(b, spec, v, raw->str, raw->line, true);
        break;
    default:
        s_bind_err(b, raw->line, spec->name,
                   "the plugin declares an unknown setting type %d",
                   (int)spec->type);
        break;
    }
}

/* Applies spec's default to an unset value, or reports it missing. */
static void
s_bind_default(pb_bind_t *b, const plugboard_setting_spec_t *spec,
               pb_setting_value_t *v)
{
    if (!spec->default_value) {
        if (spec->required)
            s_bind_err(b, 0, NULL, "missing required setting '%s'%s%s",
                       spec->name, spec->help ? ": " : "",
                       spec->help ? spec->help : "");
        return;
    }
    char *text;
    if (spec->secret && s_is_secret_ref(spec->default_value))
        text = s_resolve_secret(b, spec->name, spec->default_value, 0);
    else if (!(text = strdup(spec->default_value)))
        s_bind_err(b, 0, spec->name, "out of memory");
    if (!text)
        return;
    s_bind_text(b, spec, v, &text, 0, !spec->secret);
    if (spec->secret)
        s_wipe_free(text);
    else
        free(text);
}

static void
s_bind_unknown(pb_bind_t *b, const plugboard_setting_spec_t *spec,
               const pb_raw_setting_t *raw)
{
    char names[PB_MSG_MAX / 2];
    size_t used = 0;

    names[0] = '\0';
    for (size_t i = 0; spec && spec[i].name && used < sizeof names; i++) {
        int n = snprintf(names + used, sizeof names - used, "%s%s",
                         i ? ", " : "", spec[i].name);
        used += n > 0 ? (size_t)n : 0;
    }
    if (names[0])
        s_bind_err(b, raw->line, raw->name,
                   "unknown setting (expected one of: %s)", names);
    else
        s_bind_err(b, raw->line, raw->name,
                   "unknown setting (the plugin declares no settings)");
}

static plugboard_settings_t *
s_settings_bind(pb_bind_t *b, const plugboard_setting_spec_t *spec,
                const pb_raw_setting_t *raw, size_t raw_count)
{
    size_t n = 0;
    while (spec && spec[n].name)
        n++;
    plugboard_settings_t *s = calloc(1, sizeof *s);
    if (!s || !(s->items = calloc(n ? n : 1, sizeof *s->items))) {
        free(s);
        pb_diag_add(b->diag, "%s: out of memory", b->where);
        return NULL;
    }
    for (size_t i = 0; i < n; i++, s->count++) {
        s->items[i].type = spec[i].type;
        s->items[i].secret = spec[i].secret;
        if (!(s->items[i].name = strdup(spec[i].name))) {
            s_bind_err(b, 0, NULL, "out of memory");
            goto out_destroy;
        }
    }
    for (size_t r = 0; r < raw_count; r++) {
        const char *name = raw[r].name ? raw[r].name : "";
        size_t k = 0;
        while (k < n && strcmp(spec[k].name, name) != 0)
            k++;
        bool twice = false;
        for (size_t j = 0; j < r && !twice; j++)
            twice = raw[j].name && strcmp(raw[j].name, name) == 0;
        if (k == n)
            s_bind_unknown(b, spec, &raw[r]);
        else if (twice)
            s_bind_err(b, raw[r].line, name, "given more than once");
        else
            s_bind_raw(b, &spec[k], &s->items[k], &raw[r]);
    }
    for (size_t k = 0; k < n; k++) {
        bool given = false;
        for (size_t r = 0; r < raw_count && !given; r++)
            given = raw[r].name && strcmp(raw[r].name, spec[k].name) == 0;
        if (!given)
            s_bind_default(b, &spec[k], &s->items[k]);
    }
    if (!b->failed)
        return s;

out_destroy:
    pb_settings_destroy(&s);
    return NULL;
}

plugboard_settings_t *
pb_settings_bind(const plugboard_setting_spec_t *spec,
                 const pb_raw_setting_t *raw, size_t raw_count,
                 const char *where, pb_diag_t *diag)
{
    pb_bind_t b = {.where = where ? where : "settings", .diag = diag};
    return s_settings_bind(&b, spec, raw, raw_count);
}

/* ------------------------------------------------------------------ */
/* Binding a loaded config to its plugins                              */
/* ------------------------------------------------------------------ */

static size_t
s_connector_index(const pb_config_t *cfg, const char *name)
{
    const pb_connector_conf_t *c = pb_config_connector(cfg, name);
    return c ? (size_t)(c - cfg->connectors) : cfg->connector_count;
}

/* Does every pattern of route match something connector ci emits? */
static bool
s_check_source(const pb_config_t *cfg, size_t ri,
               const plugboard_connector_t *const *descs, size_t ci,
               pb_diag_t *diag)
{
    const pb_route_conf_t *route = &cfg->routes[ri];
    const pb_connector_conf_t *conn = &cfg->connectors[ci];
    const char *const *list = descs[ci]->emits;
    char have[PB_MSG_MAX / 2];
    bool ok = true;

    for (size_t w = 0; w < route->when_count; w++) {
        if (s_list_overlaps(list, route->when[w]))
            continue;
        pb_diag_add(diag,
                    "%s:%d: routes.[%zu] ('%s'): source '%s' (plugin '%s') "
                    "does not emit '%s'; it emits: %s",
                    cfg->path, route->line, ri, route->name, conn->name,
                    conn->plugin, route->when[w],
                    s_list_join(list, have, sizeof have));
        ok = false;
    }
    return ok;
}

/* What of source entry e the pattern w lets through: e or w, whichever is
 * narrower, or NULL when no type matches both. */
static const char *
s_narrower(const char *e, const char *w)
{
    if (pb_type_matches(w, e))
        return e;
    if (pb_type_matches(e, w))
        return w;
    return NULL;
}

/* Does some entry of list match every type that x (a type or a pattern)
 * matches? */
static bool
s_list_covers(const char *const *list, const char *x)
{
    for (size_t i = 0; list && list[i]; i++)
        if (pb_type_matches(list[i], x))
            return true;
    return false;
}

/*
 * The destination check: every type the source declares it emits that
 * a pattern of the route matches must be consumed by the destination
 * (with "*" a source's every type).  When the source's types are not
 * known (it failed to load) or none matches (already an error of the
 * source), the destination must at least consume something the pattern
 * matches.
 */
static bool
s_check_destination(const pb_config_t *cfg, size_t ri,
                    const plugboard_connector_t *const *descs, size_t ci,
                    const plugboard_connector_t *src, pb_diag_t *diag)
{
    const pb_route_conf_t *route = &cfg->routes[ri];
    const pb_connector_conf_t *conn = &cfg->connectors[ci];
    const char *const *cons = descs[ci]->consumes;
    const char *const *emits = src ? src->emits : NULL;
    char have[PB_MSG_MAX / 2], miss[PB_MSG_MAX / 2];
    bool ok = true;

    for (size_t w = 0; w < route->when_count; w++) {
        const char *when = route->when[w];
        size_t flows = 0, used = 0, missing = 0;
        const char *last = when;

        miss[0] = '\0';
        for (size_t e = 0; emits && emits[e]; e++) {
            const char *x = s_narrower(emits[e], when);
            if (!x)
                continue;
            flows++;
            if (s_list_covers(cons, x))
                continue;
            missing++;
            last = x;
            if (used < sizeof miss) {
                int n = snprintf(miss + used, sizeof miss - used, "%s'%s'",
                                 used ? ", " : "", x);
                used += n > 0 ? (size_t)n : 0;
            }
        }
        if (flows == 0 && !s_list_overlaps(cons, when)) {
            snprintf(miss, sizeof miss, "'%s'", when);
            missing = 1;
        }
        if (missing == 0)
            continue;
        s_list_join(cons, have, sizeof have);
        if (flows == 0 || (missing == 1 && strcmp(last, when) == 0))
            pb_diag_add(diag,
                        "%s:%d: routes.[%zu] ('%s'): destination '%s' "
                        "(plugin '%s') does not consume %s; it consumes: %s",
                        cfg->path, route->line, ri, route->name, conn->name,
                        conn->plugin, miss, have);
        else
            pb_diag_add(diag,
                        "%s:%d: routes.[%zu] ('%s'): destination '%s' "
                        "(plugin '%s') does not consume %s, which source "
                        "'%s' emits and '%s' matches; it consumes: %s",
                        cfg->path, route->line, ri, route->name, conn->name,
                        conn->plugin, miss, route->from, when, have);
        ok = false;
    }
    return ok;
}

static bool
s_check_route(const pb_config_t *cfg, size_t ri,
              const plugboard_connector_t *const *descs, pb_diag_t *diag)
{
    const pb_route_conf_t *route = &cfg->routes[ri];
    char have[PB_MSG_MAX / 2];
    bool ok = true;
    size_t ci = s_connector_index(cfg, route->from);
    const plugboard_connector_t *src =
        ci < cfg->connector_count ? descs[ci] : NULL;

    if (src)
        ok &= s_check_source(cfg, ri, descs, ci, diag);
    for (size_t t = 0; t < route->to_count; t++) {
        ci = s_connector_index(cfg, route->to[t]);
        if (ci < cfg->connector_count && descs[ci])
            ok &= s_check_destination(cfg, ri, descs, ci, src, diag);
    }
    ci = route->notify ? s_connector_index(cfg, route->notify)
                       : cfg->connector_count;
    if (ci < cfg->connector_count && descs[ci] &&
        !s_list_overlaps(descs[ci]->consumes, PLUGBOARD_EV_DELIVERY_DEAD)) {
        pb_diag_add(diag,
                    "%s:%d: routes.[%zu] ('%s'): notify connector '%s' "
                    "(plugin '%s') does not consume '%s'; it consumes: %s",
                    cfg->path, route->line, ri, route->name, route->notify,
                    cfg->connectors[ci].plugin, PLUGBOARD_EV_DELIVERY_DEAD,
                    s_list_join(descs[ci]->consumes, have, sizeof have));
        ok = false;
    }
    if (ci < cfg->connector_count && descs[ci] && route->alert_after_ms > 0 &&
        !s_list_overlaps(descs[ci]->consumes,
                         PLUGBOARD_EV_CONNECTOR_UNHEALTHY)) {
        pb_diag_add(diag,
                    "%s:%d: routes.[%zu] ('%s'): 'alert_after' needs a notify "
                    "connector that consumes '%s'; '%s' (plugin '%s') "
                    "consumes: %s",
                    cfg->path, route->line, ri, route->name,
                    PLUGBOARD_EV_CONNECTOR_UNHEALTHY, route->notify,
                    cfg->connectors[ci].plugin,
                    s_list_join(descs[ci]->consumes, have, sizeof have));
        ok = false;
    }
    return ok;
}

int
pb_config_bind(pb_config_t *cfg, pb_descriptor_fn describe, void *ctx,
               pb_diag_t *diag)
{
    char prefix[PB_PATH_MAX], elem[PB_PATH_MAX];
    bool ok = true;
    size_t n = cfg->connector_count;
    const plugboard_connector_t **descs = calloc(n ? n : 1, sizeof *descs);

    if (!descs) {
        pb_diag_add(diag, "%s: out of memory", cfg->path);
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        pb_connector_conf_t *conn = &cfg->connectors[i];
        char err[PLUGBOARD_ERRBUF_MAX] = "";
        descs[i] = describe(ctx, conn, err, sizeof err);
        if (!descs[i] && s_starts_with(err, "cannot load plugin ")) {
            /* the loader's words already name the plugin's file */
            pb_diag_add(diag, "%s:%d: connectors.[%zu] ('%s'): %s",
                        cfg->path, conn->line, i, conn->name, err);
            ok = false;
            continue;
        }
        if (!descs[i]) {
            pb_diag_add(diag,
                        "%s:%d: connectors.[%zu] ('%s'): cannot load plugin "
                        "'%s'%s%s",
                        cfg->path, conn->line, i, conn->name, conn->plugin,
                        err[0] ? ": " : "", err);
            ok = false;
            continue;
        }
        pb_bind_t b = {
            .where = cfg->path,
            .prefix = s_path(prefix, sizeof prefix,
                             s_index_path(elem, sizeof elem, "connectors", i),
                             "settings"),
            .line = conn->line,
            .diag = diag};
        pb_settings_destroy(&conn->bound);
        conn->bound = s_settings_bind(&b, descs[i]->settings, conn->settings,
                                      conn->settings_count);
        if (!conn->bound)
            ok = false;
        if (descs[i]->run && conn->isolation &&
            strcmp(conn->isolation, "process") == 0) {
            pb_diag_add(diag,
                        "%s:%d: connectors.[%zu] ('%s').isolation: plugin "
                        "'%s' is a pull source (run), which a worker "
                        "process does not run: use isolation = \"thread\"",
                        cfg->path, conn->line, i, conn->name, conn->plugin);
            ok = false;
        }
    }
    for (size_t r = 0; r < cfg->route_count; r++)
        ok &= s_check_route(cfg, r, descs, diag);
    free(descs);
    return ok ? 0 : PB_ECONFIG;
}

/* ------------------------------------------------------------------ */
/* A standalone settings file (plugboard plugin-check --settings)      */
/* ------------------------------------------------------------------ */

static const char *const s_settings_file_keys[] = {"settings", NULL};

void
pb_raw_settings_free(pb_raw_setting_t *raw, size_t count)
{
    for (size_t i = 0; raw && i < count; i++) {
        free(raw[i].name);
        free(raw[i].str);
    }
    free(raw);
}

int
pb_settings_file_load(const char *path, pb_raw_setting_t **out,
                      size_t *count, pb_diag_t *diag)
{
    pb_cfg_reader_t r = {.path = path, .diag = diag};
    pb_connector_conf_t conn = {0};
    config_t lc;
    config_setting_t *g = NULL;

    *out = NULL;
    *count = 0;
    char *text = s_read_file(path, SIZE_MAX / 2, NULL);
    if (!text) {
        pb_diag_add(diag, "cannot read settings file '%s': %s", path,
                    strerror(errno));
        return PB_ECONFIG;
    }
    char *dir = s_dirname(path);
    r.include_dir = dir;
    config_init(&lc);
    if (dir)
        config_set_include_dir(&lc, dir);
    if (!s_add_text(&r, NULL, path, text))
        goto out_release;
    if (!config_read_string(&lc, text)) {
        s_syntax_error(&r, &lc);
        goto out_release;
    }
    s_check_keys(&r, config_root_setting(&lc), "", s_settings_file_keys);
    int found = s_group(&r, config_root_setting(&lc), "", "settings", &g);
    if (found == 0) {
        pb_diag_add(diag, "%s: missing 'settings': write settings = { ... };",
                    path);
        r.failed = true;
    } else if (found > 0) {
        s_load_raw_settings(&r, &conn, g, "settings");
    }

out_release:
    config_destroy(&lc);
    s_reader_release(&r);
    free(dir);
    if (r.failed) {
        pb_raw_settings_free(conn.settings, conn.settings_count);
        return PB_ECONFIG;
    }
    *out = conn.settings;
    *count = conn.settings_count;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The run directory of a file that may not validate (ctl reload)      */
/* ------------------------------------------------------------------ */

int
pb_config_run_dir(const char *path, char *out, size_t out_len)
{
    char *text = s_read_file(path, SIZE_MAX / 2, NULL);
    if (!text)
        return PB_ECONFIG;
    config_t lc;
    config_init(&lc);
    char *dir = s_dirname(path);
    if (dir)
        config_set_include_dir(&lc, dir);
    int rc = PB_ECONFIG;
    if (config_read_string(&lc, text)) {
        const char *run = NULL, *data = "var";
        config_lookup_string(&lc, "plugboard.run_dir", &run);
        config_lookup_string(&lc, "plugboard.data_dir", &data);
        size_t n = strlen(data);
        while (n > 1 && data[n - 1] == '/')
            n--;
        if (run)
            snprintf(out, out_len, "%s", run);
        else
            snprintf(out, out_len, "%.*s/run", (int)n, data);
        rc = 0;
    }
    config_destroy(&lc);
    free(dir);
    free(text);
    return rc;
}
