/*
 * template.c - render "{{path}}" templates against an event.
 *
 * The one text-substitution engine connectors share (mail subjects and
 * bodies, ticket texts).  It owns nothing beyond the string it returns: the
 * event is read through the host API table and the result is allocated
 * with api->alloc, so a connector using it links nothing from the host.
 *
 * Syntax, inside "{{" and "}}" (whitespace around the inside is ignored):
 *   path              a dotted field of the event's data ("customer.email");
 *                     strings as is, integers in decimal, booleans as
 *                     true/false; other kinds (floats, maps, arrays, null)
 *                     and absent fields render as ""
 *   $type $id $key $source $attempt
 *                     envelope fields; $time is the event time as
 *                     "2024-05-01 12:00 UTC"
 *   path|money        integer minor units as "12.50 USD", using the
 *                     currency next to the amount ("plan.currency" for
 *                     "plan.amount") or else the event's "currency"; the
 *                     number of decimals follows ISO 4217 (JPY, KRW and
 *                     other zero-decimal currencies 0, BHD, KWD ... 3)
 *   path|date         integer UTC milliseconds as "2024-05-01 12:00 UTC"
 *   ...|default:text  text when the value renders as ""; must come last
 *                     (everything after "default:" is the text)
 * Filters chain left to right: "{{plan.amount|money|default:n/a}}".
 * A tag with an unknown filter, an invalid path, or an unterminated "{{" is
 * copied to the output literally, so a typo shows up in the message instead
 * of silently vanishing.
 *
 * Escaping applies to every substituted value (default text included),
 * never to the template's own text.
 */
#include <plugboard/helpers.h>

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define S_PATH_MAX 256

/* A growable string allocated through the host API. */
typedef struct s_buf {
    const plugboard_host_api_t *api;
    char *data;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; the result will be NULL */
} s_buf_t;

static bool
s_buf_reserve(s_buf_t *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 128;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *data = b->api->alloc(cap);
    if (!data) {
        b->failed = true;
        return false;
    }
    if (b->len)
        memcpy(data, b->data, b->len);
    b->api->free(b->data);
    b->data = data;
    b->cap = cap;
    return true;
}

static void
s_buf_add(s_buf_t *b, const char *s, size_t n)
{
    if (n == 0 || !s_buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void
s_buf_addc(s_buf_t *b, char c)
{
    s_buf_add(b, &c, 1);
}

/* Append a substituted value, escaped. */
static void
s_buf_add_escaped(s_buf_t *b, const char *s, size_t n,
                  plugboard_escape_t escape)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (escape == PLUGBOARD_ESCAPE_HEADER) {
            /* CR and LF would start a new header line; every other C0
             * control and DEL is replaced too so nothing odd reaches a
             * header (a NUL would also truncate the result) */
            s_buf_addc(b, (c < 0x20 || c == 0x7f) ? ' ' : (char)c);
            continue;
        }
        if (c == '\0')
            continue; /* would truncate the NUL-terminated result */
        if (escape == PLUGBOARD_ESCAPE_HTML) {
            const char *rep = NULL;
            switch (c) {
            case '&':
                rep = "&amp;";
                break;
            case '<':
                rep = "&lt;";
                break;
            case '>':
                rep = "&gt;";
                break;
            case '"':
                rep = "&quot;";
                break;
            case '\'':
                rep = "&#39;";
                break;
            default:
                break;
            }
            if (rep) {
                s_buf_add(b, rep, strlen(rep));
                continue;
            }
        }
        s_buf_addc(b, (char)c);
    }
}

/* ISO 4217 minor-unit exponent: 0 and 3 are the exceptions to 2. */
static int
s_currency_decimals(const char *cur, size_t len)
{
    static const char *const zero[] = {
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
        "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF", NULL,
    };
    static const char *const three[] = {
        "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND", NULL,
    };
    if (len != 3)
        return 2;
    for (size_t i = 0; zero[i]; i++)
        if (strncasecmp(cur, zero[i], 3) == 0)
            return 0;
    for (size_t i = 0; three[i]; i++)
        if (strncasecmp(cur, three[i], 3) == 0)
            return 3;
    return 2;
}

/*
 * Find the currency for the amount at path: "<parent>.currency" first
 * ("plan.currency" for "plan.amount"), then the event's "currency".
 */
static bool
s_find_currency(const plugboard_host_api_t *api, const plugboard_event_t *ev,
                const char *path, const char **cur, size_t *cur_len)
{
    const char *dot = strrchr(path, '.');
    if (dot) {
        char sib[S_PATH_MAX + 16];
        int n =
            snprintf(sib, sizeof sib, "%.*s.currency", (int)(dot - path), path);
        if (n > 0 && (size_t)n < sizeof sib &&
            api->event_string(ev, sib, cur, cur_len) && *cur_len > 0)
            return true;
    }
    return api->event_string(ev, "currency", cur, cur_len) && *cur_len > 0;
}

/* "12.50 USD" from minor units; the currency is upper-cased. */
static void
s_format_money(char *out, size_t out_len, int64_t minor, const char *cur,
               size_t cur_len)
{
    int decimals = cur ? s_currency_decimals(cur, cur_len) : 2;
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    uint64_t scale = decimals == 0 ? 1 : decimals == 3 ? 1000 : 100;
    char code[8] = "";
    if (cur) {
        size_t n = cur_len < sizeof code - 1 ? cur_len : sizeof code - 1;
        for (size_t i = 0; i < n; i++)
            code[i] = (char)toupper((unsigned char)cur[i]);
        code[n] = '\0';
    }
    const char *sign = minor < 0 ? "-" : "";
    const char *sep = code[0] ? " " : "";
    if (decimals == 0)
        snprintf(out, out_len, "%s%" PRIu64 "%s%s", sign, mag, sep, code);
    else
        snprintf(out, out_len, "%s%" PRIu64 ".%0*" PRIu64 "%s%s", sign,
                 mag / scale, decimals, mag % scale, sep, code);
}

/* "2024-05-01 12:00 UTC" from UTC milliseconds. */
static void
s_format_date(char *out, size_t out_len, int64_t ms)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        out[0] = '\0';
        return;
    }
    snprintf(out, out_len, "%04d-%02d-%02d %02d:%02d UTC", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min);
}

/* Milliseconds in the config's own units: "250ms", "30s", "15m", "1h",
 * "7d"; a value that is not a whole unit keeps the next smaller one
 * ("90s"). */
static void
s_format_duration(char *out, size_t out_len, int64_t ms)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (ms >= units[i].ms && ms % units[i].ms == 0) {
            snprintf(out, out_len, "%lld%s", (long long)(ms / units[i].ms),
                     units[i].unit);
            return;
        }
    snprintf(out, out_len, "%lldms", (long long)ms);
}

/* The value being filtered: text (borrowed or in scratch) or an integer. */
typedef struct s_value {
    const char *text;
    size_t len;
    bool is_int;
    int64_t num;
    char scratch[96];
} s_value_t;

static void
s_value_set_scratch(s_value_t *v)
{
    v->text = v->scratch;
    v->len = strlen(v->scratch);
    v->is_int = false;
}

static bool
s_path_valid(const char *p, size_t n)
{
    if (n == 0 || n >= S_PATH_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.' && c != '$')
            return false;
        if (c == '$' && i != 0)
            return false;
    }
    return true;
}

/* Look up path (NUL-terminated) into v.  false when the name is an
 * unknown envelope field: the tag is then copied literally. */
static bool
s_lookup(const plugboard_host_api_t *api, const plugboard_event_t *ev,
         const char *path, s_value_t *v)
{
    memset(v, 0, sizeof *v);
    v->text = "";
    if (path[0] == '$') {
        const char *name = path + 1;
        if (strcmp(name, "type") == 0)
            v->text = api->event_type(ev);
        else if (strcmp(name, "id") == 0)
            v->text = api->event_id(ev);
        else if (strcmp(name, "key") == 0)
            v->text = api->event_key(ev);
        else if (strcmp(name, "source") == 0)
            v->text = api->event_source(ev);
        else if (strcmp(name, "attempt") == 0) {
            v->is_int = true;
            v->num = api->event_attempt(ev);
            snprintf(v->scratch, sizeof v->scratch, "%" PRId64, v->num);
            v->text = v->scratch;
        } else if (strcmp(name, "time") == 0) {
            s_format_date(v->scratch, sizeof v->scratch,
                          api->event_time_ms(ev));
            v->text = v->scratch;
        } else
            return false;
        if (!v->text)
            v->text = "";
        v->len = strlen(v->text);
        return true;
    }
    bool bval;
    switch (api->event_kind(ev, path)) {
    case PLUGBOARD_VALUE_STRING:
        if (!api->event_string(ev, path, &v->text, &v->len)) {
            v->text = "";
            v->len = 0;
        }
        break;
    case PLUGBOARD_VALUE_INT:
        if (api->event_int(ev, path, &v->num)) {
            v->is_int = true;
            snprintf(v->scratch, sizeof v->scratch, "%" PRId64, v->num);
            v->text = v->scratch;
            v->len = strlen(v->scratch);
        }
        break;
    case PLUGBOARD_VALUE_BOOL:
        if (api->event_bool(ev, path, &bval)) {
            v->text = bval ? "true" : "false";
            v->len = strlen(v->text);
        }
        break;
    default:
        break; /* missing, null, float, map, array: "" */
    }
    return true;
}

/*
 * Apply the filters in spec (the text after the first '|', n bytes) to v.
 * Returns false when a filter is unknown.
 */
static bool
s_apply_filters(const plugboard_host_api_t *api, const plugboard_event_t *ev,
                const char *path, const char *spec, size_t n, s_value_t *v)
{
    while (n > 0) {
        while (n > 0 && isspace((unsigned char)spec[0])) {
            spec++;
            n--;
        }
        const char *bar = memchr(spec, '|', n);
        size_t flen = bar ? (size_t)(bar - spec) : n;
        size_t step = flen; /* bytes up to the '|' */
        while (flen > 0 && isspace((unsigned char)spec[flen - 1]))
            flen--;
        if (n >= 8 && strncmp(spec, "default:", 8) == 0) {
            if (v->len == 0) {
                v->text = spec + 8;
                v->len = n - 8;
                v->is_int = false;
            }
            return true; /* default takes the rest, '|' included */
        } else if (flen == 5 && strncmp(spec, "money", 5) == 0) {
            if (v->is_int) {
                const char *cur = NULL;
                size_t cur_len = 0;
                if (!s_find_currency(api, ev, path, &cur, &cur_len))
                    cur = NULL;
                s_format_money(v->scratch, sizeof v->scratch, v->num, cur,
                               cur_len);
                s_value_set_scratch(v);
            } else {
                v->text = ""; /* not an amount: treat as missing */
                v->len = 0;
            }
        } else if (flen == 8 && strncmp(spec, "duration", 8) == 0) {
            if (v->is_int && v->num >= 0) {
                s_format_duration(v->scratch, sizeof v->scratch, v->num);
                s_value_set_scratch(v);
            } else {
                v->text = "";
                v->len = 0;
            }
        } else if (flen == 4 && strncmp(spec, "date", 4) == 0) {
            if (v->is_int) {
                s_format_date(v->scratch, sizeof v->scratch, v->num);
                s_value_set_scratch(v);
            } else {
                v->text = "";
                v->len = 0;
            }
        } else {
            return false;
        }
        if (!bar)
            break;
        spec = bar + 1;
        n -= step + 1;
        if (n == 0)
            return false; /* trailing '|' */
    }
    return true;
}

/* Render one tag body (between "{{" and "}}").  false: copy it literally. */
static bool
s_render_tag(s_buf_t *out, const plugboard_event_t *ev, const char *tag,
             size_t n, plugboard_escape_t escape)
{
    while (n > 0 && isspace((unsigned char)tag[0])) {
        tag++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)tag[n - 1]))
        n--;
    const char *bar = memchr(tag, '|', n);
    size_t plen = bar ? (size_t)(bar - tag) : n;
    while (plen > 0 && isspace((unsigned char)tag[plen - 1]))
        plen--;
    if (!s_path_valid(tag, plen))
        return false;
    char path[S_PATH_MAX];
    memcpy(path, tag, plen);
    path[plen] = '\0';

    s_value_t v;
    if (!s_lookup(out->api, ev, path, &v))
        return false;
    if (bar) {
        const char *spec = bar + 1;
        size_t slen = n - (size_t)(spec - tag);
        if (!s_apply_filters(out->api, ev, path, spec, slen, &v))
            return false;
    }
    s_buf_add_escaped(out, v.text, v.len, escape);
    return true;
}

char *
plugboard_template_render(const plugboard_host_api_t *api,
                          const plugboard_event_t *ev, const char *tmpl,
                          plugboard_escape_t escape)
{
    if (!api || !ev || !tmpl)
        return NULL;
    s_buf_t out = {.api = api};
    if (!s_buf_reserve(&out, strlen(tmpl)))
        return NULL;

    const char *p = tmpl;
    while (*p) {
        const char *open = strstr(p, "{{");
        if (!open) {
            s_buf_add(&out, p, strlen(p));
            break;
        }
        s_buf_add(&out, p, (size_t)(open - p));
        const char *close = strstr(open + 2, "}}");
        if (!close) {
            s_buf_add(&out, open, strlen(open)); /* unterminated: literal */
            break;
        }
        size_t tag_len = (size_t)(close - open - 2);
        if (!s_render_tag(&out, ev, open + 2, tag_len, escape))
            s_buf_add(&out, open, tag_len + 4);
        p = close + 2;
    }
    if (out.failed) {
        api->free(out.data);
        return NULL;
    }
    out.data[out.len] = '\0';
    return out.data;
}
