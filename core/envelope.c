/*
 * envelope.c - the message envelope: MessagePack encoding with msgpack-c,
 * decoding with a bounded walker, the read-only event view connectors see,
 * and the builder they emit with.
 *
 * The decoder never calls msgpack_unpack: msgpack-c allocates according to
 * the counts a frame declares, and a hostile frame controls those.  Instead
 * one walk over the bytes proves that every declared length and count fits
 * in what is present, that nesting stays within the limit and that nothing
 * trails the map.  Only then is anything allocated: one copy of the frame
 * and NUL-terminated copies of the envelope strings.  Field lookups re-read
 * the validated bytes lazily; no tree is ever built.
 *
 * This file owns struct plugboard_event (pb_envelope_t) and struct
 * plugboard_builder (pb_builder_t).  Both are single-threaded objects;
 * pb_id_new is thread-safe.
 */
#include "envelope.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>
#include <msgpack.h>

#include "error.h"

#define S_TYPE_MAX 64  /* characters in an event type name         */
#define S_ID_MAX 64    /* bytes in a decoded id                     */
#define S_TEXT_MAX 256 /* bytes in key, dedupe, correlation, ...   */
_Static_assert(S_TEXT_MAX == PLUGBOARD_KEY_MAX, "plugboard.h's key limit");
#define S_JSON_DEPTH 2048 /* recursion cap when rendering JSON        */

/* ------------------------------------------------------------------ */
/* Envelope fields                                                     */
/* ------------------------------------------------------------------ */

enum s_field {
    F_ID,
    F_TYPE,
    F_SOURCE,
    F_KEY,
    F_TIME,
    F_CORRELATION,
    F_CAUSATION,
    F_ATTEMPT,
    F_DEDUPE,
    F_DATA,
    F_COUNT
};

static const char *const s_field_names[F_COUNT] = {
    [F_ID] = "id",
    [F_TYPE] = "type",
    [F_SOURCE] = "source",
    [F_KEY] = "key",
    [F_TIME] = "time",
    [F_CORRELATION] = "correlation",
    [F_CAUSATION] = "causation",
    [F_ATTEMPT] = "attempt",
    [F_DEDUPE] = "dedupe",
    [F_DATA] = "data",
};

static const bool s_field_required[F_COUNT] = {
    [F_ID] = true,   [F_TYPE] = true, [F_SOURCE] = true,
    [F_TIME] = true, [F_DATA] = true,
};

struct plugboard_event {
    uint8_t *frame; /* owned copy of the validated frame        */
    size_t len;
    char *text[F_COUNT]; /* owned; string fields only, NULL = absent */
    int64_t time_ms;
    uint32_t attempt;
    size_t data_off; /* offset of the data map in frame          */
};

struct plugboard_builder {
    char *source; /* owned */
    char type[S_TYPE_MAX + 1];
    char *text[F_COUNT]; /* owned; key, correlation, causation, dedupe */
    int64_t time_ms;
    bool has_time;
    json_t *data; /* owned; always an object */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* Write a reason to why (may be NULL) and return PB_EPROTO. */
static int s_fail(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
s_fail(char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return PB_EPROTO;
}

static int64_t
s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
s_be(const uint8_t *p, size_t width)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Length of the valid UTF-8 sequence at s (n > 0 bytes), 0 when invalid:
 * overlong forms, surrogates and code points past U+10FFFF are invalid. */
static size_t
s_utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t k;
    uint32_t cp, min;

    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        k = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        k = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        k = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t j = 1; j < k; j++) {
        if ((s[j] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

static bool
s_utf8_valid(const void *s, size_t n)
{
    const uint8_t *p = s;
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_seq(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* A copy of n bytes with each invalid UTF-8 byte replaced by U+FFFD,
 * NUL-terminated; *out_len excludes the NUL.  Caller frees; NULL when out
 * of memory. */
static char *
s_utf8_fix(const uint8_t *s, size_t n, size_t *out_len)
{
    char *out = malloc(n * 3 + 1);
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_seq(s + i, n - i);
        if (k == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* [a-z0-9_]+ segments joined by '.', 1..64 characters. */
static bool
s_type_valid(const char *type, size_t len)
{
    bool segment_empty = true;

    if (!type || len == 0 || len > S_TYPE_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = type[i];
        if (c == '.') {
            if (segment_empty)
                return false;
            segment_empty = true;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_') {
            segment_empty = false;
        } else {
            return false;
        }
    }
    return !segment_empty;
}

/* ------------------------------------------------------------------ */
/* Reading one MessagePack header, bounds-checked                      */
/* ------------------------------------------------------------------ */

enum s_kind {
    K_NIL,
    K_BOOL,
    K_UINT,
    K_INT,
    K_FLOAT,
    K_STR,
    K_BIN,
    K_EXT,
    K_ARRAY,
    K_MAP,
    K_BAD
};

/* How a value reads in a message: "field 'time' is a string, ..." */
static const char *const s_kind_phrase[] = {
    [K_NIL] = "nil",         [K_BOOL] = "a boolean",   [K_UINT] = "an integer",
    [K_INT] = "an integer",  [K_FLOAT] = "a float",    [K_STR] = "a string",
    [K_BIN] = "binary data", [K_EXT] = "an extension", [K_ARRAY] = "an array",
    [K_MAP] = "a map",
};

/* One decoded header.  Fixed-size scalars are wholly inside hlen; str,
 * bin and ext payloads follow it (n bytes); containers' elements follow
 * it (n items, or n key/value pairs). */
struct s_item {
    enum s_kind kind;
    size_t hlen;
    uint64_t n;
    uint64_t u; /* K_BOOL, K_UINT */
    int64_t i;  /* K_INT */
    double f;   /* K_FLOAT */
    int8_t ext; /* K_EXT type */
};

/* The formats 0xc0..0xdf: kind, bytes of length/value after the type
 * byte, and for fixext the payload size. */
static const struct s_format {
    enum s_kind kind;
    uint8_t width;
    uint8_t fixed;
    const char *name;
} s_formats[0x20] = {
    {K_NIL, 0, 0, "nil"},       {K_BAD, 0, 0, "reserved"},
    {K_BOOL, 0, 0, "false"},    {K_BOOL, 0, 0, "true"},
    {K_BIN, 1, 0, "bin8"},      {K_BIN, 2, 0, "bin16"},
    {K_BIN, 4, 0, "bin32"},     {K_EXT, 1, 0, "ext8"},
    {K_EXT, 2, 0, "ext16"},     {K_EXT, 4, 0, "ext32"},
    {K_FLOAT, 4, 0, "float32"}, {K_FLOAT, 8, 0, "float64"},
    {K_UINT, 1, 0, "uint8"},    {K_UINT, 2, 0, "uint16"},
    {K_UINT, 4, 0, "uint32"},   {K_UINT, 8, 0, "uint64"},
    {K_INT, 1, 0, "int8"},      {K_INT, 2, 0, "int16"},
    {K_INT, 4, 0, "int32"},     {K_INT, 8, 0, "int64"},
    {K_EXT, 0, 1, "fixext1"},   {K_EXT, 0, 2, "fixext2"},
    {K_EXT, 0, 4, "fixext4"},   {K_EXT, 0, 8, "fixext8"},
    {K_EXT, 0, 16, "fixext16"}, {K_STR, 1, 0, "str8"},
    {K_STR, 2, 0, "str16"},     {K_STR, 4, 0, "str32"},
    {K_ARRAY, 2, 0, "array16"}, {K_ARRAY, 4, 0, "array32"},
    {K_MAP, 2, 0, "map16"},     {K_MAP, 4, 0, "map32"},
};

/* The one-byte forms: fixint, fixmap, fixarray, fixstr, negative fixint. */
static void
s_head_fix(uint8_t b, struct s_item *it)
{
    it->hlen = 1;
    if (b <= 0x7f) {
        it->kind = K_UINT, it->u = b;
    } else if (b <= 0x8f) {
        it->kind = K_MAP, it->n = b & 0x0f;
    } else if (b <= 0x9f) {
        it->kind = K_ARRAY, it->n = b & 0x0f;
    } else if (b <= 0xbf) {
        it->kind = K_STR, it->n = b & 0x1f;
    } else {
        it->kind = K_INT, it->i = (int8_t)b;
    }
}

/* The forms 0xc0..0xdf, whose header may continue past the type byte. */
static int
s_head_long(const uint8_t *buf, size_t len, size_t pos, struct s_item *it,
            char *why, size_t why_len)
{
    uint8_t b = buf[pos];
    const struct s_format *fmt = &s_formats[b - 0xc0];
    size_t need = fmt->width + (fmt->kind == K_EXT ? 1 : 0);
    const uint8_t *p = buf + pos + 1;
    uint64_t v;

    if (fmt->kind == K_BAD)
        return s_fail(why, why_len, "invalid type byte 0x%02x at offset %zu", b,
                      pos);
    if (len - pos - 1 < need)
        return s_fail(why, why_len,
                      "frame ends inside a %s header at offset %zu", fmt->name,
                      pos);
    it->kind = fmt->kind;
    it->hlen = 1 + need;
    v = s_be(p, fmt->width);
    switch (fmt->kind) {
    case K_BOOL:
        it->u = (b == 0xc3);
        break;
    case K_UINT:
        it->u = v;
        break;
    case K_INT:
        /* sign-extend from width bytes */
        it->i = fmt->width == 8
                    ? (int64_t)v
                    : (int64_t)(v ^ (1ull << (fmt->width * 8 - 1))) -
                          (int64_t)(1ull << (fmt->width * 8 - 1));
        break;
    case K_FLOAT:
        if (fmt->width == 4) {
            uint32_t w = (uint32_t)v;
            float f;
            memcpy(&f, &w, sizeof f);
            it->f = f;
        } else {
            memcpy(&it->f, &v, sizeof it->f);
        }
        break;
    case K_EXT:
        it->n = fmt->width ? v : fmt->fixed;
        it->ext = (int8_t)p[fmt->width];
        break;
    default: /* K_NIL, K_STR, K_BIN, K_ARRAY, K_MAP */
        it->n = v;
        break;
    }
    return 0;
}

/*
 * Read the header at pos and check that what it declares fits in the bytes
 * left: a payload of n bytes needs n, an array of n items at least n (one
 * byte each), a map of n pairs at least 2n.  Returns 0 or PB_EPROTO with a
 * reason in why (which may be NULL).
 */
static int
s_head_read(const uint8_t *buf, size_t len, size_t pos, struct s_item *it,
            char *why, size_t why_len)
{
    size_t left;

    memset(it, 0, sizeof *it);
    if (pos >= len)
        return s_fail(why, why_len,
                      "frame ends at offset %zu where a value should start",
                      pos);
    if (buf[pos] >= 0xc0 && buf[pos] <= 0xdf) {
        int rc = s_head_long(buf, len, pos, it, why, why_len);
        if (rc)
            return rc;
    } else {
        s_head_fix(buf[pos], it);
    }
    left = len - pos - it->hlen;
    switch (it->kind) {
    case K_STR:
    case K_BIN:
    case K_EXT:
        if (it->n > left)
            return s_fail(why, why_len,
                          "%s length %" PRIu64
                          " exceeds the %zu bytes left at offset %zu",
                          it->kind == K_STR   ? "string"
                          : it->kind == K_BIN ? "binary"
                                              : "extension",
                          it->n, left, pos);
        break;
    case K_ARRAY:
        if (it->n > left)
            return s_fail(why, why_len,
                          "array count %" PRIu64
                          " exceeds the %zu bytes left at offset %zu",
                          it->n, left, pos);
        break;
    case K_MAP:
        if (it->n * 2 > left)
            return s_fail(why, why_len,
                          "map count %" PRIu64 " needs %" PRIu64
                          " bytes but only %zu are left at offset %zu",
                          it->n, it->n * 2, left, pos);
        break;
    default:
        break;
    }
    return 0;
}

/* Offset just past the value at pos, in bytes already validated.  Returns
 * len when something is wrong, so a caller's next read fails cleanly. */
static size_t
s_skip(const uint8_t *buf, size_t len, size_t pos)
{
    uint64_t pending = 1;

    while (pending > 0) {
        struct s_item it;
        if (s_head_read(buf, len, pos, &it, NULL, 0) != 0)
            return len;
        pending--;
        pos += it.hlen;
        if (it.kind == K_ARRAY)
            pending += it.n;
        else if (it.kind == K_MAP)
            pending += it.n * 2;
        else if (it.kind == K_STR || it.kind == K_BIN || it.kind == K_EXT)
            pos += it.n;
    }
    return pos;
}

/* ------------------------------------------------------------------ */
/* Validating a whole frame                                            */
/* ------------------------------------------------------------------ */

/*
 * Walk every value in the frame without recursion: left[d] counts the
 * values still expected at nesting level d.  The stack is bounded by the
 * depth limit and by the frame length (each level costs a header byte), so
 * nothing here grows with what the frame declares.
 */
static int
s_walk(const uint8_t *buf, size_t len, int max_depth, uint64_t *left, char *why,
       size_t why_len)
{
    size_t pos = 0;
    int level = 0;

    left[0] = 1;
    while (level >= 0) {
        struct s_item it;
        int rc;

        if (left[level] == 0) {
            level--;
            continue;
        }
        left[level]--;
        rc = s_head_read(buf, len, pos, &it, why, why_len);
        if (rc)
            return rc;
        pos += it.hlen;
        if (it.kind == K_ARRAY || it.kind == K_MAP) {
            if (level + 1 > max_depth)
                return s_fail(why, why_len,
                              "nesting deeper than %d at offset %zu", max_depth,
                              pos - it.hlen);
            left[++level] = it.kind == K_MAP ? it.n * 2 : it.n;
        } else if (it.kind == K_STR || it.kind == K_BIN || it.kind == K_EXT) {
            pos += it.n;
        }
    }
    if (pos != len)
        return s_fail(why, why_len,
                      "%zu unexpected bytes after the envelope at offset %zu",
                      len - pos, pos);
    return 0;
}

static int
s_validate(const uint8_t *buf, size_t len, int max_depth, char *why,
           size_t why_len)
{
    uint64_t local[PB_ENVELOPE_DEFAULT_MAX_DEPTH + 1];
    uint64_t *left = local;
    size_t levels = (size_t)max_depth < len ? (size_t)max_depth : len;
    int rc;

    if (levels + 1 > sizeof local / sizeof local[0]) {
        left = malloc((levels + 1) * sizeof *left);
        if (!left) {
            s_fail(why, why_len, "out of memory validating a frame");
            return PB_ENOMEM;
        }
    }
    rc = s_walk(buf, len, max_depth, left, why, why_len);
    if (left != local)
        free(left);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Reading the envelope fields of a validated frame                    */
/* ------------------------------------------------------------------ */

static int
s_field_find(const uint8_t *name, size_t len)
{
    for (int f = 0; f < F_COUNT; f++) {
        if (strlen(s_field_names[f]) == len &&
            memcmp(s_field_names[f], name, len) == 0)
            return f;
    }
    return -1;
}

static int
s_read_text(pb_envelope_t *env, enum s_field f, size_t pos,
            const struct s_item *v, char *why, size_t why_len)
{
    const char *name = s_field_names[f];
    const uint8_t *s = env->frame + pos + v->hlen;
    size_t max = f == F_ID || f == F_TYPE ? S_ID_MAX : S_TEXT_MAX;

    if (v->kind == K_NIL && !s_field_required[f])
        return 0;
    if (v->kind != K_STR)
        return s_fail(why, why_len,
                      "field '%s' at offset %zu is %s, not a string", name, pos,
                      s_kind_phrase[v->kind]);
    if (v->n > max)
        return s_fail(why, why_len,
                      "field '%s' at offset %zu is %" PRIu64
                      " bytes, longer than %zu",
                      name, pos, v->n, max);
    if (memchr(s, '\0', v->n))
        return s_fail(why, why_len,
                      "field '%s' at offset %zu contains a NUL byte", name,
                      pos);
    if (f == F_TYPE && !s_type_valid((const char *)s, v->n))
        return s_fail(why, why_len,
                      "field 'type' at offset %zu is not a valid event type",
                      pos);
    if (f == F_ID && v->n == 0)
        return s_fail(why, why_len, "field 'id' at offset %zu is empty", pos);
    env->text[f] = strndup((const char *)s, v->n);
    return env->text[f] ? 0 : PB_ENOMEM;
}

static int
s_read_time(pb_envelope_t *env, size_t pos, const struct s_item *v, char *why,
            size_t why_len)
{
    if (v->kind == K_INT) {
        env->time_ms = v->i;
    } else if (v->kind == K_UINT && v->u <= INT64_MAX) {
        env->time_ms = (int64_t)v->u;
    } else if (v->kind == K_UINT) {
        return s_fail(why, why_len,
                      "field 'time' at offset %zu is out of range", pos);
    } else {
        return s_fail(why, why_len,
                      "field 'time' at offset %zu is %s, not an integer", pos,
                      s_kind_phrase[v->kind]);
    }
    return 0;
}

static int
s_read_attempt(pb_envelope_t *env, size_t pos, const struct s_item *v,
               char *why, size_t why_len)
{
    uint64_t a;

    if (v->kind == K_UINT)
        a = v->u;
    else if (v->kind == K_INT && v->i >= 0)
        a = (uint64_t)v->i;
    else
        return s_fail(why, why_len,
                      "field 'attempt' at offset %zu is %s, not an unsigned "
                      "integer",
                      pos,
                      v->kind == K_INT ? "negative" : s_kind_phrase[v->kind]);
    if (a > UINT32_MAX)
        return s_fail(why, why_len,
                      "field 'attempt' at offset %zu is out of range", pos);
    env->attempt = (uint32_t)a;
    return 0;
}

static int
s_read_field(pb_envelope_t *env, enum s_field f, size_t pos, char *why,
             size_t why_len)
{
    struct s_item v;
    int rc = s_head_read(env->frame, env->len, pos, &v, why, why_len);

    if (rc)
        return rc;
    switch (f) {
    case F_TIME:
        return s_read_time(env, pos, &v, why, why_len);
    case F_ATTEMPT:
        return s_read_attempt(env, pos, &v, why, why_len);
    case F_DATA:
        if (v.kind != K_MAP)
            return s_fail(why, why_len,
                          "field 'data' at offset %zu is %s, not a map", pos,
                          s_kind_phrase[v.kind]);
        env->data_off = pos;
        return 0;
    default:
        return s_read_text(env, f, pos, &v, why, why_len);
    }
}

static int
s_read_fields(pb_envelope_t *env, char *why, size_t why_len)
{
    bool seen[F_COUNT] = {false};
    struct s_item top;
    size_t pos;
    int rc;

    rc = s_head_read(env->frame, env->len, 0, &top, why, why_len);
    if (rc)
        return rc;
    if (top.kind != K_MAP)
        return s_fail(why, why_len, "envelope is %s, not a map",
                      s_kind_phrase[top.kind]);
    pos = top.hlen;
    for (uint64_t i = 0; i < top.n; i++) {
        struct s_item k;
        size_t vpos;
        int f;

        rc = s_head_read(env->frame, env->len, pos, &k, why, why_len);
        if (rc)
            return rc;
        if (k.kind != K_STR)
            return s_fail(why, why_len,
                          "envelope key at offset %zu is %s, not a string", pos,
                          s_kind_phrase[k.kind]);
        vpos = pos + k.hlen + k.n;
        f = s_field_find(env->frame + pos + k.hlen, k.n);
        if (f >= 0) {
            if (seen[f])
                return s_fail(why, why_len,
                              "duplicate field '%s' at offset %zu",
                              s_field_names[f], pos);
            seen[f] = true;
            rc = s_read_field(env, (enum s_field)f, vpos, why, why_len);
            if (rc)
                return rc;
        }
        pos = s_skip(env->frame, env->len, vpos);
    }
    for (int f = 0; f < F_COUNT; f++) {
        if (s_field_required[f] && !seen[f])
            return s_fail(why, why_len, "missing required field '%s'",
                          s_field_names[f]);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */
/* ------------------------------------------------------------------ */

pb_envelope_t *
pb_envelope_decode(const void *frame, size_t len,
                   const pb_envelope_limits_t *limits, int *err, char *why,
                   size_t why_len)
{
    size_t max_frame = PB_ENVELOPE_DEFAULT_MAX_FRAME;
    int max_depth = PB_ENVELOPE_DEFAULT_MAX_DEPTH;
    pb_envelope_t *env;
    int rc, ignored;

    if (!err)
        err = &ignored;
    if (why && why_len)
        why[0] = '\0';
    if (limits && limits->max_frame > 0)
        max_frame = limits->max_frame;
    if (limits && limits->max_depth > 0)
        max_depth = limits->max_depth;

    if (len > max_frame) {
        s_fail(why, why_len, "frame of %zu bytes exceeds the limit of %zu", len,
               max_frame);
        *err = PB_ETOOBIG;
        return NULL;
    }
    if (!frame || len == 0) {
        *err = s_fail(why, why_len, "empty frame");
        return NULL;
    }
    rc = s_validate(frame, len, max_depth, why, why_len);
    if (rc) {
        *err = rc;
        return NULL;
    }

    env = calloc(1, sizeof *env);
    if (!env)
        goto out_nomem;
    env->frame = malloc(len);
    if (!env->frame)
        goto out_destroy;
    memcpy(env->frame, frame, len);
    env->len = len;
    env->attempt = 1;
    rc = s_read_fields(env, why, why_len);
    if (rc) {
        pb_envelope_destroy(&env);
        *err = rc;
        if (rc == PB_ENOMEM)
            s_fail(why, why_len, "out of memory decoding a frame");
        return NULL;
    }
    *err = 0;
    return env;

out_destroy:
    pb_envelope_destroy(&env);
out_nomem:
    s_fail(why, why_len, "out of memory decoding a frame");
    *err = PB_ENOMEM;
    return NULL;
}

void
pb_envelope_destroy(pb_envelope_t **env)
{
    if (!env || !*env)
        return;
    for (int f = 0; f < F_COUNT; f++)
        free((*env)->text[f]);
    free((*env)->frame);
    free(*env);
    *env = NULL;
}

static const char *
s_text(const pb_envelope_t *env, enum s_field f)
{
    return env && env->text[f] ? env->text[f] : "";
}

const char *
pb_envelope_id(const pb_envelope_t *env)
{
    return s_text(env, F_ID);
}

const char *
pb_envelope_type(const pb_envelope_t *env)
{
    return s_text(env, F_TYPE);
}

const char *
pb_envelope_source(const pb_envelope_t *env)
{
    return s_text(env, F_SOURCE);
}

const char *
pb_envelope_key(const pb_envelope_t *env)
{
    return s_text(env, F_KEY);
}

const char *
pb_envelope_dedupe_id(const pb_envelope_t *env)
{
    return s_text(env, F_DEDUPE);
}

const char *
pb_envelope_correlation(const pb_envelope_t *env)
{
    return s_text(env, F_CORRELATION);
}

const char *
pb_envelope_causation(const pb_envelope_t *env)
{
    return s_text(env, F_CAUSATION);
}

int64_t
pb_envelope_time_ms(const pb_envelope_t *env)
{
    return env ? env->time_ms : 0;
}

uint32_t
pb_envelope_attempt(const pb_envelope_t *env)
{
    return env ? env->attempt : 0;
}

void
pb_envelope_set_attempt(pb_envelope_t *env, uint32_t attempt)
{
    if (env)
        env->attempt = attempt;
}

const uint8_t *
pb_envelope_frame(const pb_envelope_t *env, size_t *len)
{
    if (len)
        *len = env ? env->len : 0;
    return env ? env->frame : NULL;
}

/* ------------------------------------------------------------------ */
/* The event view: lookups by dotted path in the data map              */
/* ------------------------------------------------------------------ */

/* Offset of the value under key seg in the map at m (read at pos), or 0
 * when it has no such string key (0 is never a data offset). */
static size_t
s_map_get(const pb_envelope_t *env, size_t pos, const struct s_item *m,
          const char *seg, size_t n)
{
    pos += m->hlen;
    for (uint64_t i = 0; i < m->n; i++) {
        struct s_item k;
        if (s_head_read(env->frame, env->len, pos, &k, NULL, 0) != 0)
            return 0;
        if (k.kind == K_STR && k.n == n &&
            memcmp(env->frame + pos + k.hlen, seg, n) == 0)
            return pos + k.hlen + k.n;
        pos = s_skip(env->frame, env->len, pos);
        pos = s_skip(env->frame, env->len, pos);
    }
    return 0;
}

/* seg (n bytes) as an array index: plain decimal digits, no sign, no
 * leading zero (but "0"), below count.  False for anything else, overflow
 * included. */
static bool
s_index_parse(const char *seg, size_t n, uint64_t count, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || (n > 1 && seg[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (seg[i] < '0' || seg[i] > '9')
            return false;
        if (v > (UINT64_MAX - (uint64_t)(seg[i] - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(seg[i] - '0');
    }
    if (v >= count)
        return false;
    *out = v;
    return true;
}

/* Offset of element seg (a decimal index) of the array a (read at pos),
 * or 0 when seg is not an index in range. */
static size_t
s_array_get(const pb_envelope_t *env, size_t pos, const struct s_item *a,
            const char *seg, size_t n)
{
    uint64_t index;

    if (!s_index_parse(seg, n, a->n, &index))
        return 0;
    pos += a->hlen;
    for (uint64_t i = 0; i < index && pos < env->len; i++)
        pos = s_skip(env->frame, env->len, pos);
    return pos < env->len ? pos : 0;
}

/* Offset of the value under seg in the map or array at pos, or 0. */
static size_t
s_child_get(const pb_envelope_t *env, size_t pos, const char *seg, size_t n)
{
    struct s_item c;

    if (s_head_read(env->frame, env->len, pos, &c, NULL, 0) != 0)
        return 0;
    if (c.kind == K_MAP)
        return s_map_get(env, pos, &c, seg, n);
    if (c.kind == K_ARRAY)
        return s_array_get(env, pos, &c, seg, n);
    return 0;
}

/* Find path in the data map; true and *it set when present.  A segment is
 * a key in a map (the first of duplicate keys wins) and a decimal index
 * from 0 in an array ("tags.0"). */
static bool
s_lookup(const plugboard_event_t *ev, const char *path, struct s_item *it,
         size_t *at)
{
    size_t pos;

    if (!ev || !path || !*path)
        return false;
    pos = ev->data_off;
    for (const char *seg = path;;) {
        const char *dot = strchr(seg, '.');
        size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
        if (n == 0)
            return false;
        pos = s_child_get(ev, pos, seg, n);
        if (pos == 0)
            return false;
        if (!dot)
            break;
        seg = dot + 1;
    }
    if (s_head_read(ev->frame, ev->len, pos, it, NULL, 0) != 0)
        return false;
    if (at)
        *at = pos;
    return true;
}

const char *
pb_event_type(const plugboard_event_t *ev)
{
    return pb_envelope_type(ev);
}

const char *
pb_event_id(const plugboard_event_t *ev)
{
    return pb_envelope_id(ev);
}

const char *
pb_event_source(const plugboard_event_t *ev)
{
    return pb_envelope_source(ev);
}

const char *
pb_event_key(const plugboard_event_t *ev)
{
    return pb_envelope_key(ev);
}

int64_t
pb_event_time_ms(const plugboard_event_t *ev)
{
    return pb_envelope_time_ms(ev);
}

uint32_t
pb_event_attempt(const plugboard_event_t *ev)
{
    return pb_envelope_attempt(ev);
}

plugboard_value_kind_t
pb_event_kind(const plugboard_event_t *ev, const char *path)
{
    struct s_item it;

    if (!s_lookup(ev, path, &it, NULL))
        return PLUGBOARD_VALUE_MISSING;
    switch (it.kind) {
    case K_NIL:
        return PLUGBOARD_VALUE_NIL;
    case K_BOOL:
        return PLUGBOARD_VALUE_BOOL;
    case K_UINT:
    case K_INT:
        return PLUGBOARD_VALUE_INT;
    case K_FLOAT:
        return PLUGBOARD_VALUE_FLOAT;
    case K_STR:
    case K_BIN: /* bytes: read with pb_event_string and its length */
        return PLUGBOARD_VALUE_STRING;
    case K_ARRAY:
        return PLUGBOARD_VALUE_ARRAY;
    case K_MAP:
        return PLUGBOARD_VALUE_MAP;
    default: /* extensions have no kind in the SDK and cannot be read */
        return PLUGBOARD_VALUE_MISSING;
    }
}

bool
pb_event_string(const plugboard_event_t *ev, const char *path, const char **out,
                size_t *len)
{
    struct s_item it;
    size_t at;

    if (!s_lookup(ev, path, &it, &at) || (it.kind != K_STR && it.kind != K_BIN))
        return false;
    if (out)
        *out = (const char *)ev->frame + at + it.hlen;
    if (len)
        *len = (size_t)it.n;
    return true;
}

bool
pb_event_int(const plugboard_event_t *ev, const char *path, int64_t *out)
{
    struct s_item it;

    if (!s_lookup(ev, path, &it, NULL))
        return false;
    if (it.kind == K_INT) {
        if (out)
            *out = it.i;
        return true;
    }
    if (it.kind == K_UINT && it.u <= INT64_MAX) {
        if (out)
            *out = (int64_t)it.u;
        return true;
    }
    return false;
}

bool
pb_event_bool(const plugboard_event_t *ev, const char *path, bool *out)
{
    struct s_item it;

    if (!s_lookup(ev, path, &it, NULL) || it.kind != K_BOOL)
        return false;
    if (out)
        *out = it.u != 0;
    return true;
}

size_t
pb_event_count(const plugboard_event_t *ev, const char *path)
{
    struct s_item it;

    if (!s_lookup(ev, path, &it, NULL) ||
        (it.kind != K_ARRAY && it.kind != K_MAP))
        return 0;
    return it.n > SIZE_MAX ? SIZE_MAX : (size_t)it.n;
}

/* ------------------------------------------------------------------ */
/* JSON rendering                                                      */
/* ------------------------------------------------------------------ */

static char *
s_base64(const uint8_t *p, size_t n)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = abc[(v >> 18) & 63];
        out[o++] = abc[(v >> 12) & 63];
        out[o++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? abc[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* A JSON string of bytes that should be UTF-8; invalid bytes become
 * U+FFFD so the output is always valid JSON. */
static json_t *
s_json_text(const uint8_t *s, size_t n)
{
    json_t *j;
    size_t fixed_len;
    char *fixed;

    if (s_utf8_valid(s, n))
        return json_stringn_nocheck((const char *)s, n);
    fixed = s_utf8_fix(s, n, &fixed_len);
    if (!fixed)
        return NULL;
    j = json_stringn_nocheck(fixed, fixed_len);
    free(fixed);
    return j;
}

static json_t *
s_json_base64(const uint8_t *p, size_t n)
{
    char *text = s_base64(p, n);
    json_t *j = text ? json_string_nocheck(text) : NULL;

    free(text);
    return j;
}

static json_t *s_json_value(const uint8_t *buf, size_t len, size_t *pos,
                            int depth);

/* The text of a map key at *pos (advanced past it): strings as they are,
 * scalars as their JSON spelling.  NULL for keys with no sensible text
 * (containers, extensions) and when out of memory. */
static char *
s_json_key(const uint8_t *buf, size_t len, size_t *pos, size_t *klen)
{
    struct s_item k;
    char tmp[32];
    const char *lit = tmp;
    size_t at = *pos;

    *pos = s_skip(buf, len, at);
    if (s_head_read(buf, len, at, &k, NULL, 0) != 0)
        return NULL;
    switch (k.kind) {
    case K_STR:
    case K_BIN:
        return s_utf8_fix(buf + at + k.hlen, (size_t)k.n, klen);
    case K_NIL:
        lit = "null";
        break;
    case K_BOOL:
        lit = k.u ? "true" : "false";
        break;
    case K_UINT:
        snprintf(tmp, sizeof tmp, "%" PRIu64, k.u);
        break;
    case K_INT:
        snprintf(tmp, sizeof tmp, "%" PRId64, k.i);
        break;
    case K_FLOAT:
        snprintf(tmp, sizeof tmp, "%.17g", k.f);
        break;
    default:
        return NULL;
    }
    return s_utf8_fix((const uint8_t *)lit, strlen(lit), klen);
}

static json_t *
s_json_map(const uint8_t *buf, size_t len, size_t *pos, uint64_t pairs,
           int depth)
{
    json_t *obj = json_object();

    for (uint64_t i = 0; obj && i < pairs; i++) {
        size_t klen = 0;
        char *key = s_json_key(buf, len, pos, &klen);
        json_t *val = s_json_value(buf, len, pos, depth + 1);
        bool ok = val != NULL;

        /* the first of duplicate keys wins, as in lookups */
        if (ok && key && !json_object_getn(obj, key, klen))
            ok = json_object_setn_new_nocheck(obj, key, klen, val) == 0;
        else
            json_decref(val);
        free(key);
        if (!ok) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *
s_json_array(const uint8_t *buf, size_t len, size_t *pos, uint64_t items,
             int depth)
{
    json_t *arr = json_array();

    for (uint64_t i = 0; arr && i < items; i++) {
        json_t *val = s_json_value(buf, len, pos, depth + 1);
        if (!val || json_array_append_new(arr, val) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *
s_json_ext(const uint8_t *p, size_t n, int8_t type)
{
    json_t *obj = json_object();

    if (!obj || json_object_set_new(obj, "ext", json_integer(type)) != 0 ||
        json_object_set_new(obj, "data", s_json_base64(p, n)) != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* The value at *pos as JSON, advancing *pos past it.  NULL when out of
 * memory or nested deeper than S_JSON_DEPTH. */
static json_t *
s_json_value(const uint8_t *buf, size_t len, size_t *pos, int depth)
{
    struct s_item it;
    const uint8_t *payload;

    if (depth > S_JSON_DEPTH || s_head_read(buf, len, *pos, &it, NULL, 0) != 0)
        return NULL;
    payload = buf + *pos + it.hlen;
    *pos += it.hlen;
    if (it.kind == K_STR || it.kind == K_BIN || it.kind == K_EXT)
        *pos += it.n;
    switch (it.kind) {
    case K_NIL:
        return json_null();
    case K_BOOL:
        return json_boolean(it.u);
    case K_UINT: {
        char digits[24];
        if (it.u <= INT64_MAX)
            return json_integer((json_int_t)it.u);
        /* past what JSON readers hold exactly: keep every digit */
        snprintf(digits, sizeof digits, "%" PRIu64, it.u);
        return json_string_nocheck(digits);
    }
    case K_INT:
        return json_integer((json_int_t)it.i);
    case K_FLOAT:
        return isfinite(it.f) ? json_real(it.f) : json_null();
    case K_STR:
        return s_json_text(payload, (size_t)it.n);
    case K_BIN:
        return s_json_base64(payload, (size_t)it.n);
    case K_EXT:
        return s_json_ext(payload, (size_t)it.n, it.ext);
    case K_ARRAY:
        return s_json_array(buf, len, pos, it.n, depth);
    case K_MAP:
        return s_json_map(buf, len, pos, it.n, depth);
    default:
        return NULL;
    }
}

/* Add key: text to obj; an empty text is left out unless always.  False
 * when out of memory. */
static bool
s_json_put_text(json_t *obj, const char *key, const char *text, bool always)
{
    if (!text)
        text = "";
    if (!*text && !always)
        return true;
    return json_object_set_new(
               obj, key, s_json_text((const uint8_t *)text, strlen(text))) == 0;
}

/* Serialise with malloc (not jansson's allocator, which a process may
 * have replaced), so the caller's free() is always right. */
static char *
s_json_dump(const json_t *root)
{
    size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
    size_t need = json_dumpb(root, NULL, 0, flags);
    char *text;

    if (need == 0)
        return NULL;
    text = malloc(need + 1);
    if (!text)
        return NULL;
    if (json_dumpb(root, text, need, flags) != need) {
        free(text);
        return NULL;
    }
    text[need] = '\0';
    return text;
}

char *
pb_event_to_json(const plugboard_event_t *ev)
{
    json_t *root;
    size_t pos;
    char *text = NULL;
    bool ok;

    if (!ev)
        return NULL;
    root = json_object();
    if (!root)
        return NULL;
    pos = ev->data_off;
    ok = s_json_put_text(root, "id", ev->text[F_ID], true) &&
         s_json_put_text(root, "type", ev->text[F_TYPE], true) &&
         s_json_put_text(root, "source", ev->text[F_SOURCE], true) &&
         s_json_put_text(root, "key", ev->text[F_KEY], true) &&
         json_object_set_new(root, "time", json_integer(ev->time_ms)) == 0 &&
         json_object_set_new(root, "attempt", json_integer(ev->attempt)) == 0 &&
         s_json_put_text(root, "correlation", ev->text[F_CORRELATION], false) &&
         s_json_put_text(root, "causation", ev->text[F_CAUSATION], false) &&
         s_json_put_text(root, "dedupe", ev->text[F_DEDUPE], false) &&
         json_object_set_new(root, "data",
                             s_json_value(ev->frame, ev->len, &pos, 0)) == 0;
    if (ok)
        text = s_json_dump(root);
    json_decref(root);
    return text;
}

/* ------------------------------------------------------------------ */
/* Ids                                                                 */
/* ------------------------------------------------------------------ */

static pthread_mutex_t s_id_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t s_id_ms;      /* time part of the last id issued   */
static uint8_t s_id_rand[10]; /* random part of the last id issued */

static void
s_random(uint8_t *buf, size_t n)
{
    static uint64_t fallback;
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r < 0 && errno != EINTR) {
            break;
        }
    }
    /* no kernel randomness (very old kernel, seccomp): splitmix64 over the
     * clock keeps ids unique within the process, if not unpredictable */
    for (; got < n; got++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t z = (fallback += 0x9e3779b97f4a7c15ull) ^ (uint64_t)ts.tv_nsec;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        buf[got] = (uint8_t)(z ^ (z >> 31));
    }
}

/* Add one to the 80-bit big-endian random part; false when it wraps. */
static bool
s_id_increment(uint8_t rand[10])
{
    for (int i = 9; i >= 0; i--) {
        if (++rand[i] != 0)
            return true;
    }
    return false;
}

static void
s_id_format(uint64_t ms, const uint8_t rand[10], char out[PB_ID_LEN + 1])
{
    static const char abc[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    uint8_t bytes[16];

    for (int i = 0; i < 6; i++)
        bytes[i] = (uint8_t)(ms >> (8 * (5 - i)));
    memcpy(bytes + 6, rand, 10);
    /* 128 bits as 26 five-bit digits: the first digit holds two zero bits */
    for (int d = 0; d < PB_ID_LEN; d++) {
        unsigned v = 0;
        for (int b = d * 5 - 2; b < d * 5 + 3; b++) {
            unsigned bit = b < 0 ? 0 : (bytes[b / 8] >> (7 - b % 8)) & 1u;
            v = (v << 1) | bit;
        }
        out[d] = abc[v];
    }
    out[PB_ID_LEN] = '\0';
}

void
pb_id_new(char out[PB_ID_LEN + 1])
{
    uint64_t now = (uint64_t)s_now_ms() & 0xffffffffffffull;
    uint8_t fresh[10], rand[10];
    uint64_t ms;

    s_random(fresh, sizeof fresh);
    pthread_mutex_lock(&s_id_lock);
    if (now > s_id_ms) {
        s_id_ms = now;
        memcpy(s_id_rand, fresh, sizeof s_id_rand);
    } else if (!s_id_increment(s_id_rand)) {
        /* same millisecond (or the clock stepped back): stay ordered */
        s_id_ms++;
        memcpy(s_id_rand, fresh, sizeof s_id_rand);
    }
    ms = s_id_ms;
    memcpy(rand, s_id_rand, sizeof rand);
    pthread_mutex_unlock(&s_id_lock);
    s_id_format(ms, rand, out);
}

/* ------------------------------------------------------------------ */
/* Builder                                                             */
/* ------------------------------------------------------------------ */

pb_builder_t *
pb_builder_new(const char *source, const char *type)
{
    pb_builder_t *b;

    if (!source)
        source = "";
    if (!type || !s_type_valid(type, strlen(type)) ||
        strlen(source) > S_TEXT_MAX || !s_utf8_valid(source, strlen(source)))
        return NULL;
    b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->source = strdup(source);
    b->data = json_object();
    if (!b->source || !b->data) {
        pb_builder_destroy(&b);
        return NULL;
    }
    memcpy(b->type, type, strlen(type) + 1);
    return b;
}

void
pb_builder_destroy(pb_builder_t **b)
{
    if (!b || !*b)
        return;
    for (int f = 0; f < F_COUNT; f++)
        free((*b)->text[f]);
    free((*b)->source);
    json_decref((*b)->data);
    free(*b);
    *b = NULL;
}

/* Set (or with NULL or "", clear) one optional envelope string. */
static int
s_builder_text(pb_builder_t *b, enum s_field f, const char *value)
{
    char *copy = NULL;

    if (!b)
        return PB_EINVAL;
    if (value && *value) {
        size_t n = strlen(value);
        if (n > S_TEXT_MAX || !s_utf8_valid(value, n))
            return PB_EINVAL;
        copy = strdup(value);
        if (!copy)
            return PB_ENOMEM;
    }
    free(b->text[f]);
    b->text[f] = copy;
    return 0;
}

int
pb_builder_set_key(pb_builder_t *b, const char *key)
{
    return s_builder_text(b, F_KEY, key);
}

int
pb_builder_set_dedupe_id(pb_builder_t *b, const char *id)
{
    return s_builder_text(b, F_DEDUPE, id);
}

int
pb_builder_set_correlation(pb_builder_t *b, const char *id)
{
    return s_builder_text(b, F_CORRELATION, id);
}

int
pb_builder_set_causation(pb_builder_t *b, const char *id)
{
    return s_builder_text(b, F_CAUSATION, id);
}

int
pb_builder_inherit(pb_builder_t *b, const pb_envelope_t *cause)
{
    int rc = 0;
    if (!b || !cause)
        return PB_EINVAL;
    const char *corr = pb_envelope_correlation(cause);
    if (!b->text[F_CAUSATION])
        rc = s_builder_text(b, F_CAUSATION, pb_envelope_id(cause));
    if (rc == 0 && !b->text[F_CORRELATION])
        rc = s_builder_text(b, F_CORRELATION,
                            *corr ? corr : pb_envelope_id(cause));
    return rc;
}

int
pb_builder_set_time_ms(pb_builder_t *b, int64_t time_ms)
{
    if (!b || time_ms < 0)
        return PB_EINVAL;
    b->time_ms = time_ms;
    b->has_time = true;
    return 0;
}

/* Containers nested in v: 0 for a scalar, 1 for [] or {}. */
static int
s_json_depth(const json_t *v)
{
    int deepest = 0;

    if (json_is_object(v)) {
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            int d = s_json_depth(json_object_iter_value(it));
            deepest = d > deepest ? d : deepest;
        }
        return deepest + 1;
    }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = s_json_depth(json_array_get(v, i));
            deepest = d > deepest ? d : deepest;
        }
        return deepest + 1;
    }
    return 0;
}

/*
 * A path is non-empty UTF-8 of non-empty dot-separated segments, and what
 * it leads to must decode under the default depth limit: the envelope is
 * level 1, data level 2, so a value under n segments reaches level
 * 1 + n + its own depth.
 */
static int
s_path_check(const char *path, const json_t *value)
{
    size_t len, segments = 1;

    if (!path || !*path)
        return PB_EINVAL;
    len = strlen(path);
    if (path[0] == '.' || path[len - 1] == '.' || strstr(path, "..") ||
        !s_utf8_valid(path, len))
        return PB_EINVAL;
    for (const char *p = path; (p = strchr(p, '.')); p++)
        segments++;
    if (1 + segments + (size_t)s_json_depth(value) >
        PB_ENVELOPE_DEFAULT_MAX_DEPTH)
        return PB_EINVAL;
    return 0;
}

/* Put value (taken, whatever happens) at path in the data object,
 * creating intermediate objects.  A path crossing a non-object fails
 * before anything is created: creation starts only where the path leaves
 * what exists, and nothing new can be crossed. */
static int
s_builder_put(pb_builder_t *b, const char *path, json_t *value)
{
    json_t *cur;
    int rc;

    if (!value)
        return PB_ENOMEM;
    rc = b ? s_path_check(path, value) : PB_EINVAL;
    if (rc)
        goto out_value;
    cur = b->data;
    for (const char *seg = path;;) {
        const char *dot = strchr(seg, '.');
        size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
        json_t *next;

        if (!dot)
            return json_object_setn_new_nocheck(cur, seg, n, value) == 0
                       ? 0
                       : PB_ENOMEM;
        next = json_object_getn(cur, seg, n);
        if (!next) {
            next = json_object();
            if (json_object_setn_new_nocheck(cur, seg, n, next) != 0) {
                rc = PB_ENOMEM;
                goto out_value;
            }
        } else if (!json_is_object(next)) {
            rc = PB_EINVAL;
            goto out_value;
        }
        cur = next;
        seg = dot + 1;
    }

out_value:
    json_decref(value);
    return rc;
}

int
pb_builder_set_string(pb_builder_t *b, const char *path, const char *value,
                      size_t len)
{
    if (!value && len > 0)
        return PB_EINVAL;
    if (len > PB_ENVELOPE_DEFAULT_MAX_FRAME)
        return PB_ETOOBIG;
    if (!s_utf8_valid(value, len))
        return PB_EINVAL;
    return s_builder_put(b, path,
                         json_stringn_nocheck(value ? value : "", len));
}

int
pb_builder_set_int(pb_builder_t *b, const char *path, int64_t value)
{
    return s_builder_put(b, path, json_integer((json_int_t)value));
}

int
pb_builder_set_bool(pb_builder_t *b, const char *path, bool value)
{
    return s_builder_put(b, path, json_boolean(value));
}

int
pb_builder_set_null(pb_builder_t *b, const char *path)
{
    return s_builder_put(b, path, json_null());
}

int
pb_builder_set_json(pb_builder_t *b, const char *path, const char *json,
                    size_t len)
{
    json_error_t jerr;
    json_t *value;

    if (!json && len > 0)
        return PB_EINVAL;
    if (len > PB_ENVELOPE_DEFAULT_MAX_FRAME)
        return PB_ETOOBIG;
    value = json_loadb(json ? json : "", len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                       &jerr);
    if (!value)
        return PB_EINVAL;
    return s_builder_put(b, path, value);
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */
/* ------------------------------------------------------------------ */

static int
s_pack_text(msgpack_packer *pk, const char *s, size_t n)
{
    if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, s, n) != 0)
        return PB_ENOMEM;
    return 0;
}

static int
s_pack_key_text(msgpack_packer *pk, const char *key, const char *value)
{
    int rc = s_pack_text(pk, key, strlen(key));
    return rc ? rc : s_pack_text(pk, value, strlen(value));
}

/* Stop early once the frame cannot fit, rather than build all of it. */
static int
s_pack_room(const msgpack_packer *pk)
{
    const msgpack_sbuffer *sb = pk->data;
    return sb->size > PB_ENVELOPE_DEFAULT_MAX_FRAME ? PB_ETOOBIG : 0;
}

static int s_pack_json(msgpack_packer *pk, const json_t *v);

static int
s_pack_object(msgpack_packer *pk, const json_t *v)
{
    int rc = 0;

    if (msgpack_pack_map(pk, json_object_size(v)) != 0)
        return PB_ENOMEM;
    for (void *it = json_object_iter((json_t *)v); it && !rc;
         it = json_object_iter_next((json_t *)v, it)) {
        rc = s_pack_text(pk, json_object_iter_key(it),
                         json_object_iter_key_len(it));
        if (!rc)
            rc = s_pack_json(pk, json_object_iter_value(it));
    }
    return rc;
}

static int
s_pack_array(msgpack_packer *pk, const json_t *v)
{
    int rc = 0;

    if (msgpack_pack_array(pk, json_array_size(v)) != 0)
        return PB_ENOMEM;
    for (size_t i = 0; i < json_array_size(v) && !rc; i++)
        rc = s_pack_json(pk, json_array_get(v, i));
    return rc;
}

static int
s_pack_json(msgpack_packer *pk, const json_t *v)
{
    int rc;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        rc = s_pack_object(pk, v);
        break;
    case JSON_ARRAY:
        rc = s_pack_array(pk, v);
        break;
    case JSON_STRING:
        rc = s_pack_text(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        rc = msgpack_pack_int64(pk, json_integer_value(v)) ? PB_ENOMEM : 0;
        break;
    case JSON_REAL:
        rc = msgpack_pack_double(pk, json_real_value(v)) ? PB_ENOMEM : 0;
        break;
    case JSON_TRUE:
        rc = msgpack_pack_true(pk) ? PB_ENOMEM : 0;
        break;
    case JSON_FALSE:
        rc = msgpack_pack_false(pk) ? PB_ENOMEM : 0;
        break;
    default:
        rc = msgpack_pack_nil(pk) ? PB_ENOMEM : 0;
        break;
    }
    return rc ? rc : s_pack_room(pk);
}

static int
s_pack_envelope(msgpack_packer *pk, const pb_builder_t *b, const char *id)
{
    const char *corr = b->text[F_CORRELATION] ? b->text[F_CORRELATION] : id;
    int64_t time_ms = b->has_time ? b->time_ms : s_now_ms();
    size_t fields =
        8 + (b->text[F_CAUSATION] ? 1 : 0) + (b->text[F_DEDUPE] ? 1 : 0);
    int rc;

    if (msgpack_pack_map(pk, fields) != 0)
        return PB_ENOMEM;
    rc = s_pack_key_text(pk, "id", id);
    rc = rc ? rc : s_pack_key_text(pk, "type", b->type);
    rc = rc ? rc : s_pack_key_text(pk, "source", b->source);
    rc = rc ? rc
            : s_pack_key_text(pk, "key", b->text[F_KEY] ? b->text[F_KEY] : "");
    rc = rc ? rc : s_pack_text(pk, "time", 4);
    if (!rc && msgpack_pack_int64(pk, time_ms) != 0)
        rc = PB_ENOMEM;
    rc = rc ? rc : s_pack_key_text(pk, "correlation", corr);
    if (!rc && b->text[F_CAUSATION])
        rc = s_pack_key_text(pk, "causation", b->text[F_CAUSATION]);
    rc = rc ? rc : s_pack_text(pk, "attempt", 7);
    if (!rc && msgpack_pack_uint32(pk, 1) != 0)
        rc = PB_ENOMEM;
    if (!rc && b->text[F_DEDUPE])
        rc = s_pack_key_text(pk, "dedupe", b->text[F_DEDUPE]);
    rc = rc ? rc : s_pack_text(pk, "data", 4);
    return rc ? rc : s_pack_json(pk, b->data);
}

int
pb_builder_encode(const pb_builder_t *b, uint8_t **out, size_t *len)
{
    char id[PB_ID_LEN + 1];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int rc;

    if (!b || !out || !len)
        return PB_EINVAL;
    pb_id_new(id);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rc = s_pack_envelope(&pk, b, id);
    if (!rc)
        rc = s_pack_room(&pk);
    if (rc) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    *len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    return 0;
}
