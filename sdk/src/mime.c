/*
 * mime.c - the "e-mail messages" helpers of helpers.h: addresses, mail
 * templates, and RFC 5322 / MIME message text.
 *
 * Shared by the connectors that write e-mail (maildir, smtp) so that both
 * produce the same well-formed message from the same templates: CRLF line
 * ends, header lines within 78 characters where a space allows and never
 * beyond 998, RFC 2047 encoded words for non-ASCII header text, quoted-
 * printable bodies, and an optional HTML part as multipart/alternative.
 * Header injection is impossible by construction: every value that reaches
 * a header has its control characters replaced, and addresses must be one
 * bare address.
 *
 * Everything is allocated through the host API table; nothing here keeps
 * state between calls except the loaded template set, which its owner
 * destroys.  All functions are thread-safe; a template set may be read
 * from several threads at once.
 */
#define _GNU_SOURCE /* memrchr, memmem */

#include <plugboard/helpers.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/sha.h>

#define S_TEMPLATE_MAX (256 * 1024) /* bytes in one template file */
#define S_MAILBOX_MAX 900           /* a formatted From/To/Reply-To */
#define S_WORD_BYTES 45             /* 45 bytes -> 60 base64 -> 72-char word */
#define S_ID_MAX 64                 /* event id bytes used as is */
#define S_BOUNDARY_BYTES 12         /* hash bytes in a MIME boundary */
#define S_BOUNDARY_MAX (12 + 2 * S_BOUNDARY_BYTES + 1) /* with its NUL */

/* ------------------------------------------------------------------ */
/* Growable buffer (api->alloc)                                        */
/* ------------------------------------------------------------------ */

typedef struct s_buf {
    const plugboard_host_api_t *api;
    char *data;
    size_t len;
    size_t cap;
    bool failed;
} s_buf_t;

static bool
s_buf_reserve(s_buf_t *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1024;
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
    if (!s_buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void
s_buf_adds(s_buf_t *b, const char *s)
{
    s_buf_add(b, s, strlen(s));
}

static void s_buf_printf(s_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
s_buf_printf(s_buf_t *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->failed = true; /* callers format bounded values only */
        return;
    }
    s_buf_add(b, tmp, (size_t)n);
}

static void
s_buf_release(s_buf_t *b)
{
    b->api->free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static char *
s_strndup(const plugboard_host_api_t *api, const char *s, size_t n)
{
    char *d = api->alloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* ------------------------------------------------------------------ */
/* Addresses                                                           */
/* ------------------------------------------------------------------ */

static bool
s_is_atext(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL || c >= 0x80;
}

bool
plugboard_mail_address_ok(const char *s, size_t n)
{
    if (!s || n < 3 || n > PLUGBOARD_MAIL_ADDRESS_MAX)
        return false;
    const char *at = memchr(s, '@', n);
    if (!at || memchr(at + 1, '@', n - (size_t)(at - s) - 1))
        return false;
    size_t local = (size_t)(at - s);
    size_t domain = n - local - 1;
    if (local == 0 || domain == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool first = i == 0 || i == local + 1;
        bool last = i == local - 1 || i == n - 1;
        if (c == '@')
            continue;
        if (c == '.') {
            if (first || last || s[i + 1] == '.')
                return false;
            continue;
        }
        if (i < local ? !s_is_atext(c) : !(isalnum(c) || c == '-' || c >= 0x80))
            return false;
    }
    return true;
}

/*
 * Append RFC 2047 encoded words for s, folded with CRLF SP between words
 * so each line stays within 78 characters; col is where the first word
 * starts on its line.  Words end on UTF-8 character boundaries (RFC 2047
 * section 5) and are at most 75 characters.
 */
static void
s_encode_words(s_buf_t *out, const char *s, size_t n, size_t col)
{
    size_t i = 0;
    while (i < n) {
        /* "=?UTF-8?B?" + base64 + "?=": 12 characters of overhead */
        size_t room = col + 75 <= 78 ? 75 : 78 - col;
        size_t max = room > 12 + 4 ? (room - 12) / 4 * 3 : 3;
        if (max > S_WORD_BYTES)
            max = S_WORD_BYTES;
        size_t end = i + max < n ? i + max : n;
        /* step back over at most 3 continuation bytes to a character
         * start; invalid UTF-8 is cut where it falls */
        size_t cut = end;
        for (int k = 0; k < 3 && cut < n && cut > i + 1 &&
                        ((unsigned char)s[cut] & 0xC0) == 0x80;
             k++)
            cut--;
        if (cut < n && ((unsigned char)s[cut] & 0xC0) != 0x80)
            end = cut;
        char b64[4 * ((S_WORD_BYTES + 2) / 3) + 1];
        plugboard_base64_encode((const uint8_t *)s + i, end - i, b64);
        if (i > 0)
            s_buf_adds(out, "\r\n ");
        s_buf_adds(out, "=?UTF-8?B?");
        s_buf_adds(out, b64);
        s_buf_adds(out, "?=");
        i = end;
        col = 1;
    }
}

static bool
s_is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

/* Whether an ASCII display name must be a quoted-string: anything but
 * atext and spaces (a '.', ',' or '"', say) is special in a phrase. */
static bool
s_phrase_needs_quotes(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && !s_is_atext((unsigned char)s[i]))
            return true;
    return false;
}

/* Append the display name: encoded words when not ASCII, a quoted-string
 * when it has specials, else as is. */
static void
s_add_display_name(s_buf_t *b, const char *name, size_t name_len, size_t col)
{
    if (name_len >= 2 && name[0] == '"' && name[name_len - 1] == '"') {
        name++; /* quoted by the admin: quoted again below if needed */
        name_len -= 2;
    }
    if (!s_is_ascii(name, name_len)) {
        s_encode_words(b, name, name_len, col);
    } else if (s_phrase_needs_quotes(name, name_len)) {
        s_buf_adds(b, "\"");
        for (size_t i = 0; i < name_len; i++) {
            if (name[i] == '"' || name[i] == '\\')
                s_buf_adds(b, "\\");
            s_buf_add(b, name + i, 1);
        }
        s_buf_adds(b, "\"");
    } else {
        s_buf_add(b, name, name_len);
    }
}

/* The longest line of a folded header value. */
static size_t
s_longest_line(const char *s)
{
    size_t best = 0;
    while (s && *s) {
        const char *nl = strstr(s, "\r\n");
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        best = n > best ? n : best;
        s = nl ? nl + 2 : s + n;
    }
    return best;
}

int
plugboard_mailbox_parse(const plugboard_host_api_t *api, const char *text,
                        size_t col, plugboard_mailbox_t *out)
{
    memset(out, 0, sizeof *out);
    if (!text)
        return PLUGBOARD_E_INVALID;
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    while (n > 0 && isspace((unsigned char)*text)) {
        text++;
        n--;
    }
    if (n > S_MAILBOX_MAX)
        return PLUGBOARD_E_INVALID;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            return PLUGBOARD_E_INVALID;
    }
    const char *name = text, *addr = text;
    size_t name_len = 0, addr_len = n;
    if (n > 0 && text[n - 1] == '>') {
        const char *lt = memrchr(text, '<', n);
        if (!lt)
            return PLUGBOARD_E_INVALID;
        addr = lt + 1;
        addr_len = n - (size_t)(addr - text) - 1;
        name_len = (size_t)(lt - text);
        while (name_len > 0 && isspace((unsigned char)name[name_len - 1]))
            name_len--;
    }
    if (!plugboard_mail_address_ok(addr, addr_len))
        return PLUGBOARD_E_INVALID;

    s_buf_t b = {.api = api};
    if (name_len > 0) {
        s_add_display_name(&b, name, name_len, col);
        s_buf_adds(&b, " <");
    }
    s_buf_add(&b, addr, addr_len);
    if (name_len > 0)
        s_buf_adds(&b, ">");
    if (!b.failed && s_longest_line(b.data) > S_MAILBOX_MAX) {
        s_buf_release(&b); /* a quoted name that long cannot be folded */
        return PLUGBOARD_E_INVALID;
    }
    out->address = s_strndup(api, addr, addr_len);
    if (b.failed || !out->address) {
        s_buf_release(&b);
        plugboard_mailbox_release(api, out);
        return PLUGBOARD_E_NOMEM;
    }
    out->header = b.data;
    return 0;
}

void
plugboard_mailbox_release(const plugboard_host_api_t *api,
                          plugboard_mailbox_t *mb)
{
    if (!mb)
        return;
    api->free(mb->header);
    api->free(mb->address);
    mb->header = NULL;
    mb->address = NULL;
}

void
plugboard_mail_id_token(const char *id, char out[PLUGBOARD_MAIL_ID_TOKEN_MAX])
{
    size_t n = id ? strlen(id) : 0;
    bool safe = n > 0 && n <= S_ID_MAX;
    for (size_t i = 0; safe && i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        safe = isalnum(c) || c == '_' || c == '-';
    }
    if (safe) {
        memcpy(out, id, n + 1);
        return;
    }
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)(id ? id : ""), n, md);
    out[0] = 'h';
    plugboard_hex_encode(md, sizeof md, out + 1);
}

/* ------------------------------------------------------------------ */
/* Templates                                                           */
/* ------------------------------------------------------------------ */

typedef struct s_template {
    char *type;    /* event type: the file name without ".txt" */
    char *subject; /* template text of the Subject line */
    char *text;    /* template text of the plain-text body */
    char *html;    /* template text of <type>.html, or NULL */
} s_template_t;

struct plugboard_mail_templates {
    const plugboard_host_api_t *api;
    s_template_t *items;
    size_t count;
};

static const char s_generic_subject[] = "{{$type}} for {{$key}}";
static const char s_generic_body[] =
    "Event {{$type}} ({{$id}}) from {{$source}}, key {{$key}}, "
    "at {{$time}}.\n"
    "\n"
    "There is no template for this event type, so its full content "
    "follows.\n"
    "\n";

/* Read a whole regular file (NUL-terminated, api->alloc).  Returns 0 or
 * an errno value; EFBIG when larger than S_TEMPLATE_MAX. */
static int
s_read_file(const plugboard_host_api_t *api, const char *path, char **out,
            size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct stat st;
    int err = 0;
    if (fstat(fd, &st) != 0)
        err = errno;
    else if (!S_ISREG(st.st_mode))
        err = EINVAL;
    else if (st.st_size > S_TEMPLATE_MAX)
        err = EFBIG;
    char *data = err ? NULL : api->alloc((size_t)st.st_size + 1);
    if (!err && !data)
        err = ENOMEM;
    size_t got = 0;
    while (!err && got < (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : EIO;
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    if (err) {
        api->free(data);
        return err;
    }
    data[got] = '\0';
    *out = data;
    *len = got;
    return 0;
}

/* Split template text into subject and body.  Returns NULL on success or
 * what is wrong with it. */
static const char *
s_template_parse(const plugboard_host_api_t *api, const char *text, size_t len,
                 s_template_t *t)
{
    if (memchr(text, '\0', len))
        return "contains a NUL byte";
    const char *nl = memchr(text, '\n', len);
    size_t line_len = nl ? (size_t)(nl - text) : len;
    if (line_len > 0 && text[line_len - 1] == '\r')
        line_len--;
    if (line_len < 8 || strncasecmp(text, "Subject:", 8) != 0)
        return "the first line must be 'Subject: <template>'";
    const char *subj = text + 8;
    size_t subj_len = line_len - 8;
    while (subj_len > 0 && (*subj == ' ' || *subj == '\t')) {
        subj++;
        subj_len--;
    }
    if (subj_len > S_MAILBOX_MAX)
        return "the Subject line is too long";
    const char *body = nl ? nl + 1 : text + len;
    const char *end = text + len;
    if (body < end) {
        /* the second line must be blank */
        if (*body == '\r' && body + 1 < end && body[1] == '\n')
            body += 2;
        else if (*body == '\n')
            body += 1;
        else
            return "the Subject line must be followed by a blank line";
    }
    t->subject = s_strndup(api, subj, subj_len);
    t->text = s_strndup(api, body, (size_t)(end - body));
    if (!t->subject || !t->text)
        return "out of memory";
    return NULL;
}

static void
s_template_release(const plugboard_host_api_t *api, s_template_t *t)
{
    api->free(t->type);
    api->free(t->subject);
    api->free(t->text);
    api->free(t->html);
}

/* Whether name is "<something>.<ext>" and not hidden. */
static bool
s_has_ext(const char *name, const char *ext)
{
    size_t n = strlen(name), e = strlen(ext);
    return n > e && name[0] != '.' && strcmp(name + n - e, ext) == 0;
}

/* "cannot <what> template '<dir>/<name>': <why>" into errbuf. */
static int
s_template_error(char *errbuf, const char *what, const char *dir,
                 const char *name, const char *why)
{
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot %s template '%s/%s': %s",
             what, dir, name, why);
    return -1;
}

/* Read dir/name into *text; a missing file is fine when optional. */
static int
s_template_read(const plugboard_host_api_t *api, const char *dir,
                const char *name, bool optional, char **text, size_t *len,
                char *errbuf)
{
    char path[PATH_MAX];
    *text = NULL;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return s_template_error(errbuf, "read", dir, name, "path too long");
    int err = s_read_file(api, path, text, len);
    if (err == ENOENT && optional)
        return 0;
    if (err)
        return s_template_error(errbuf, "read", dir, name,
                                err == EFBIG ? "larger than 256 KiB"
                                             : strerror(err));
    if (memchr(*text, '\0', *len)) {
        api->free(*text);
        *text = NULL;
        return s_template_error(errbuf, "parse", dir, name,
                                "contains a NUL byte");
    }
    return 0;
}

/* Load <type>.txt and its optional <type>.html into t->items (which has
 * room). */
static int
s_template_load(plugboard_mail_templates_t *set, const char *dir,
                const char *name, char *errbuf)
{
    const plugboard_host_api_t *api = set->api;
    char *text = NULL;
    size_t len = 0;
    if (s_template_read(api, dir, name, false, &text, &len, errbuf) != 0)
        return -1;
    s_template_t *t = &set->items[set->count];
    memset(t, 0, sizeof *t);
    const char *why = s_template_parse(api, text, len, t);
    api->free(text);
    size_t type_len = strlen(name) - 4;
    t->type = s_strndup(api, name, type_len);
    if (!why && !t->type)
        why = "out of memory";
    if (why) {
        s_template_release(api, t);
        return s_template_error(errbuf, "parse", dir, name, why);
    }
    char html_name[NAME_MAX + 2];
    snprintf(html_name, sizeof html_name, "%.*s.html", (int)type_len, name);
    if (s_template_read(api, dir, html_name, true, &t->html, &len, errbuf) !=
        0) {
        s_template_release(api, t);
        return -1;
    }
    set->count++;
    return 0;
}

/* An <type>.html without its <type>.txt (which holds the subject and the
 * plain-text part every message has) is a mistake worth refusing. */
static int
s_check_orphan_html(const char *dir, const char *name, char *errbuf)
{
    char txt[PATH_MAX];
    size_t n = strlen(name) - 5;
    snprintf(txt, sizeof txt, "%s/%.*s.txt", dir, (int)n, name);
    if (access(txt, F_OK) == 0)
        return 0;
    return s_template_error(errbuf, "use", dir, name,
                            "there is no .txt beside it with the Subject "
                            "line and the plain-text part");
}

plugboard_mail_templates_t *
plugboard_mail_templates_load(const plugboard_host_api_t *api, const char *dir,
                              char *errbuf)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "cannot open templates directory '%s': %s", dir,
                 strerror(errno));
        return NULL;
    }
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        count += s_has_ext(e->d_name, ".txt");
    plugboard_mail_templates_t *set = api->alloc(sizeof *set);
    s_template_t *items = api->alloc((count ? count : 1) * sizeof *items);
    if (!set || !items) {
        api->free(set);
        api->free(items);
        closedir(d);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return NULL;
    }
    *set = (plugboard_mail_templates_t){.api = api, .items = items};
    rewinddir(d);
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (s_has_ext(e->d_name, ".html")) {
            rc = s_check_orphan_html(dir, e->d_name, errbuf);
            continue;
        }
        if (!s_has_ext(e->d_name, ".txt"))
            continue;
        if (set->count == count)
            break; /* the directory grew while we read it */
        rc = s_template_load(set, dir, e->d_name, errbuf);
    }
    closedir(d);
    if (rc != 0)
        plugboard_mail_templates_destroy(&set);
    return set;
}

size_t
plugboard_mail_templates_count(const plugboard_mail_templates_t *set)
{
    return set ? set->count : 0;
}

void
plugboard_mail_templates_destroy(plugboard_mail_templates_t **setp)
{
    if (!setp || !*setp)
        return;
    plugboard_mail_templates_t *set = *setp;
    *setp = NULL;
    for (size_t i = 0; i < set->count; i++)
        s_template_release(set->api, &set->items[i]);
    set->api->free(set->items);
    set->api->free(set);
}

static const s_template_t *
s_template_find(const plugboard_mail_templates_t *set, const char *type)
{
    for (size_t i = 0; set && type && i < set->count; i++)
        if (strcmp(set->items[i].type, type) == 0)
            return &set->items[i];
    return NULL;
}

/* The generic body's tail: the event as indented JSON. */
static void
s_add_event_json(s_buf_t *body, const plugboard_host_api_t *api,
                 const plugboard_event_t *ev)
{
    char *line = api->event_to_json(ev);
    if (!line) {
        body->failed = true;
        return;
    }
    json_t *doc = json_loads(line, 0, NULL);
    char *pretty =
        doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    s_buf_adds(body, pretty ? pretty : line);
    s_buf_adds(body, "\n");
    free(pretty); /* jansson's allocator */
    json_decref(doc);
    api->free(line);
}

int
plugboard_mail_render(const plugboard_host_api_t *api,
                      const plugboard_mail_templates_t *set,
                      const plugboard_event_t *ev,
                      plugboard_mail_content_t *out)
{
    memset(out, 0, sizeof *out);
    const s_template_t *t = s_template_find(set, api->event_type(ev));
    out->subject = plugboard_template_render(
        api, ev, t ? t->subject : s_generic_subject, PLUGBOARD_ESCAPE_HEADER);
    s_buf_t text = {.api = api};
    char *body = plugboard_template_render(
        api, ev, t ? t->text : s_generic_body, PLUGBOARD_ESCAPE_NONE);
    if (body) {
        s_buf_adds(&text, body);
        api->free(body);
    } else {
        text.failed = true;
    }
    if (!t)
        s_add_event_json(&text, api, ev);
    if (!text.failed && !text.data)
        s_buf_adds(&text, ""); /* an empty body is still a string */
    out->text = text.failed ? NULL : text.data;
    if (text.failed)
        s_buf_release(&text);
    if (t && t->html)
        out->html =
            plugboard_template_render(api, ev, t->html, PLUGBOARD_ESCAPE_HTML);
    if (!out->subject || !out->text || (t && t->html && !out->html)) {
        plugboard_mail_content_release(api, out);
        return PLUGBOARD_E_NOMEM;
    }
    return 0;
}

void
plugboard_mail_content_release(const plugboard_host_api_t *api,
                               plugboard_mail_content_t *c)
{
    if (!c)
        return;
    api->free(c->subject);
    api->free(c->text);
    api->free(c->html);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ */
/* Building the message                                                */
/* ------------------------------------------------------------------ */

/* RFC 5322 date-time in UTC, independent of locale. */
static void
s_rfc5322_date(int64_t ms, char *out, size_t out_len)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                       "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                         "May", "Jun", "Jul", "Aug",
                                         "Sep", "Oct", "Nov", "Dec"};
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        secs = 0;
        gmtime_r(&secs, &tm);
    }
    snprintf(out, out_len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
             days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Append a header-ready value (validated or encoded), with controls still
 * blanked so nothing can start a new line, except our own folding between
 * encoded words (CRLF SP). */
static void
s_add_sanitized(s_buf_t *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        bool fold = p[0] == '\r' && p[1] == '\n' && p[2] == ' ';
        if (fold) {
            s_buf_add(out, p, 3);
            p += 2;
        } else {
            unsigned char c = (unsigned char)*p;
            char ch = c < 0x20 || c == 0x7f ? ' ' : (char)c;
            s_buf_add(out, &ch, 1);
        }
    }
}

/* "Name: value" CRLF. */
static void
s_add_header(s_buf_t *out, const char *name, const char *value)
{
    s_buf_adds(out, name);
    s_buf_adds(out, ": ");
    s_add_sanitized(out, value);
    s_buf_adds(out, "\r\n");
}

/*
 * Plain ASCII text folded at spaces (RFC 5322 section 2.2.3) so lines stay
 * within 78 characters where a space allows it.  Folding inserts CRLF
 * before a space that precedes a word, so unfolding gives the text back
 * and no line is only whitespace.
 */
static void
s_add_folded(s_buf_t *out, const char *s, size_t n, size_t col)
{
    size_t i = 0;
    while (i < n) {
        /* the next segment: this character up to the next foldable space */
        size_t j = i + 1;
        while (j < n && !(s[j] == ' ' && j + 1 < n && s[j + 1] != ' '))
            j++;
        if (col + (j - i) > 78 && s[i] == ' ' && col > 1) {
            s_buf_adds(out, "\r\n");
            col = 0;
        }
        s_buf_add(out, s + i, j - i);
        col += j - i;
        i = j;
    }
}

/* The longest run of characters without a space. */
static size_t
s_longest_word(const char *s, size_t n)
{
    size_t best = 0, run = 0;
    for (size_t i = 0; i < n; i++) {
        run = s[i] == ' ' ? 0 : run + 1;
        best = run > best ? run : best;
    }
    return best;
}

/* Subject: plain ASCII folded at spaces, or else encoded words (also for
 * text that could be mistaken for encoded words, or cannot be folded).
 * Controls are blanked first, so a subject is always one header. */
static void
s_add_subject(s_buf_t *out, const char *subject)
{
    s_buf_t clean = {.api = out->api};
    for (const char *p = subject; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char ch = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        s_buf_add(&clean, &ch, 1);
    }
    const char *s = clean.data ? clean.data : "";
    size_t n = clean.len;
    while (n > 0 && s[n - 1] == ' ')
        n--;
    while (n > 0 && *s == ' ') {
        s++;
        n--;
    }
    s_buf_adds(out, "Subject: ");
    bool plain = s_is_ascii(s, n) && !memmem(s, n, "=?", 2) &&
                 s_longest_word(s, n) <= 78 - 9;
    if (plain)
        s_add_folded(out, s, n, 9);
    else
        s_encode_words(out, s, n, 9);
    s_buf_adds(out, "\r\n");
    if (clean.failed)
        out->failed = true;
    s_buf_release(&clean);
}

/*
 * Quoted-printable (RFC 2045 6.7): output lines at most 76 characters,
 * soft breaks "=" CRLF, '=' and non-ASCII and controls as =XX, space and
 * tab encoded at the end of a line.  Input line breaks (LF or CRLF) become
 * CRLF; a line starting "From " gets its F encoded for mbox readers.
 * Leading dots are left alone: SMTP clients stuff them, Maildir needs
 * nothing.  Each input line, the last included, ends with CRLF.
 */
static void
s_add_qp_body(s_buf_t *out, const char *body)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *p = body;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (nl && n > 0 && p[n - 1] == '\r')
            n--;
        size_t col = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            bool last = i + 1 == n;
            bool literal = (c >= 33 && c <= 126 && c != '=') ||
                           ((c == ' ' || c == '\t') && !last);
            if (col == 0 && c == 'F' && n - i >= 5 &&
                strncmp(p + i, "From ", 5) == 0)
                literal = false;
            size_t width = literal ? 1 : 3;
            if (col + width > (last ? 76u : 75u)) {
                s_buf_adds(out, "=\r\n");
                col = 0;
            }
            if (literal) {
                s_buf_add(out, (const char *)&p[i], 1);
            } else {
                char enc[3] = {'=', hex[c >> 4], hex[c & 15]};
                s_buf_add(out, enc, 3);
            }
            col += width;
        }
        s_buf_adds(out, "\r\n");
        if (!nl)
            break;
        p = nl + 1;
    }
}

/* Whether a header field name is printable ASCII without ':' or space. */
static bool
s_field_name_ok(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++)
        if (*p <= 32 || *p >= 127 || *p == ':')
            return false;
    return true;
}

/* One MIME body part's headers and quoted-printable content. */
static void
s_add_part(s_buf_t *msg, const char *boundary, const char *type,
           const char *content)
{
    s_buf_printf(msg, "--%s\r\n", boundary);
    s_buf_printf(msg, "Content-Type: %s; charset=UTF-8\r\n", type);
    s_buf_adds(msg, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    s_add_qp_body(msg, content);
}

/* A boundary that cannot occur in quoted-printable text (which never holds
 * "=_"), derived from the Message-ID so a re-send is byte-identical. */
static void
s_boundary(const char *message_id, char *out, size_t out_len)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[2 * S_BOUNDARY_BYTES + 1];
    const char *id = message_id ? message_id : "";
    SHA256((const unsigned char *)id, strlen(id), md);
    plugboard_hex_encode(md, S_BOUNDARY_BYTES, hex);
    snprintf(out, out_len, "=_plugboard_%s", hex);
}

char *
plugboard_mail_build(const plugboard_host_api_t *api,
                     const plugboard_mail_t *mail, size_t *len)
{
    if (!api || !mail || !mail->from || !mail->to || !mail->message_id)
        return NULL;
    for (size_t i = 0; i < mail->extra_count; i++)
        if (!s_field_name_ok(mail->extra[i].name) || !mail->extra[i].value)
            return NULL;
    s_buf_t msg = {.api = api};
    char date[64];
    s_rfc5322_date(mail->date_ms, date, sizeof date);
    s_buf_printf(&msg, "Date: %s\r\n", date);
    s_add_header(&msg, "From", mail->from);
    s_add_header(&msg, "To", mail->to);
    if (mail->reply_to)
        s_add_header(&msg, "Reply-To", mail->reply_to);
    s_add_subject(&msg, mail->subject ? mail->subject : "");
    s_buf_adds(&msg, "Message-ID: <");
    s_add_sanitized(&msg, mail->message_id);
    s_buf_adds(&msg, ">\r\nMIME-Version: 1.0\r\n");
    char boundary[S_BOUNDARY_MAX];
    s_boundary(mail->message_id, boundary, sizeof boundary);
    if (mail->html)
        s_buf_printf(&msg,
                     "Content-Type: multipart/alternative; "
                     "boundary=\"%s\"\r\n",
                     boundary);
    else
        s_buf_adds(&msg, "Content-Type: text/plain; charset=UTF-8\r\n"
                         "Content-Transfer-Encoding: quoted-printable\r\n");
    s_buf_adds(&msg, "Auto-Submitted: auto-generated\r\n");
    for (size_t i = 0; i < mail->extra_count; i++)
        s_add_header(&msg, mail->extra[i].name, mail->extra[i].value);
    s_buf_adds(&msg, "\r\n");
    const char *text = mail->text ? mail->text : "";
    if (mail->html) {
        s_buf_adds(&msg, "This is a message in MIME format: a plain-text "
                         "part and an HTML part.\r\n\r\n");
        s_add_part(&msg, boundary, "text/plain", text);
        s_add_part(&msg, boundary, "text/html", mail->html);
        s_buf_printf(&msg, "--%s--\r\n", boundary);
    } else {
        s_add_qp_body(&msg, text);
    }
    if (msg.failed) {
        s_buf_release(&msg);
        return NULL;
    }
    if (len)
        *len = msg.len;
    return msg.data;
}
