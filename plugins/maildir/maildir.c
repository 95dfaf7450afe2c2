/*
 * maildir.c - the "maildir" connector: render one email per event from a
 * template and deliver it into a Maildir (https://cr.yp.to/proto/maildir.html).
 *
 * A sink for customer notices (failed payment, refund, cancellation) and for
 * the host's own dead-letter notices to route owners.  Any mail server or
 * client that reads a Maildir (Dovecot, mutt, a relay that drains it) picks
 * the messages up, so nothing is lost while that reader is down.
 *
 * It owns, for one instance: the validated addresses, the templates read
 * from the templates directory at open (kept in memory; a reload reopens
 * the connector to pick up edits) and nothing else.  Per delivery it writes
 * tmp/<unique>, fsyncs it and hard-links it to new/<name>, where <name> is
 * derived from the event id: a redelivered event finds its message already
 * in new/ (or in cur/, once a reader has seen it) and is reported delivered
 * without a second copy.
 *
 * Safety: recipients come only from one configured event field (or a fixed
 * setting), must look like a single bare address, and every value put into
 * a header is rendered with PLUGBOARD_ESCAPE_HEADER, so event data can
 * never add a header or a recipient.
 */
#define _GNU_SOURCE /* memrchr, memmem */

#include <plugboard/helpers.h>
#include <plugboard/plugboard.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/sha.h>

#define S_TEMPLATE_MAX (256 * 1024) /* bytes in one template file */
#define S_ADDRESS_MAX 254           /* RFC 5321 path limit */
#define S_MAILBOX_MAX 900           /* a formatted From/To/Reply-To */
#define S_WORD_BYTES 45             /* 45 bytes -> 60 base64 -> 72-char word */
#define S_ID_MAX 64                 /* event id bytes used as is */

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
    while (cap < b->len + extra + 1)
        cap *= 2;
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
/* State and settings                                                  */
/* ------------------------------------------------------------------ */

typedef struct s_template {
    char *type;    /* event type: the file name without ".txt" */
    char *subject; /* template text of the Subject line */
    char *body;    /* template text of the body */
} s_template_t;

typedef struct s_maildir {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    char *root;     /* the Maildir */
    char *from;     /* formatted header value */
    char *to;       /* formatted fixed recipient, or NULL */
    char *reply_to; /* formatted header value, or NULL */
    char *to_field; /* event field holding the recipient */
    s_template_t *templates;
    size_t template_count;
    char host_name[128]; /* for tmp/ names, '/' and ':' escaped */
    char domain[128];    /* right side of Message-ID */
    uint64_t sequence;   /* per-instance counter for tmp/ names */
} s_maildir_t;

static const plugboard_setting_spec_t s_settings[] = {
    {
        .name = "path",
        .type = PLUGBOARD_SETTING_STRING,
        .required = true,
        .help = "the Maildir; it and its tmp/ new/ cur/ are created (0700) "
                "if missing, its parent must exist",
    },
    {
        .name = "from",
        .type = PLUGBOARD_SETTING_STRING,
        .required = true,
        .help = "sender, e.g. \"Billing <billing@example.com>\"",
    },
    {
        .name = "to_field",
        .type = PLUGBOARD_SETTING_STRING,
        .default_value = "customer.email",
        .help = "event field holding the recipient's address (the only "
                "place recipients come from)",
    },
    {
        .name = "to",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "fixed recipient for every message, overriding to_field "
                "(and the owner of dead-letter notices)",
    },
    {
        .name = "templates",
        .type = PLUGBOARD_SETTING_STRING,
        .required = true,
        .help = "directory of <event.type>.txt templates, read at open",
    },
    {
        .name = "reply_to",
        .type = PLUGBOARD_SETTING_STRING,
        .help = "Reply-To address, e.g. \"Support <support@example.com>\"",
    },
    {.name = NULL},
};

static const char *const s_consumes[] = {
    PLUGBOARD_EV_PAYMENT_SUCCEEDED, PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_PAYMENT_REFUNDED,  PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    PLUGBOARD_EV_DISPUTE_OPENED,    PLUGBOARD_EV_CONTACT_UPSERTED,
    PLUGBOARD_EV_TICKET_CREATED,    PLUGBOARD_EV_TICKET_UPDATED,
    PLUGBOARD_EV_TICKET_SOLVED,     PLUGBOARD_EV_EMAIL_BOUNCED,
    PLUGBOARD_EV_DELIVERY_DEAD,     NULL,
};

static const char s_generic_subject[] = "{{$type}} for {{$key}}";
static const char s_generic_body[] =
    "Event {{$type}} ({{$id}}) from {{$source}}, key {{$key}}, "
    "at {{$time}}.\n"
    "\n"
    "There is no template for this event type, so its full content "
    "follows.\n"
    "\n";

/* ------------------------------------------------------------------ */
/* Addresses                                                           */
/* ------------------------------------------------------------------ */

static bool
s_is_atext(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL || c >= 0x80;
}

/*
 * A single bare address: local@domain, one '@', no spaces, controls,
 * angle brackets, commas or quotes; dots not leading, trailing or doubled.
 * UTF-8 is allowed (RFC 6531 addresses).
 */
static bool
s_address_ok(const char *s, size_t n)
{
    if (n < 3 || n > S_ADDRESS_MAX)
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

/*
 * Parse "addr" or "Display Name <addr>" from a setting into a header-ready
 * value: a non-ASCII name becomes encoded words (the first starting at
 * column col, after the header's name), a name with specials is quoted.
 * Returns the value (caller owns, api->free), or NULL and fills errbuf
 * when the text is not such an address.
 */
static char *
s_mailbox_format(const plugboard_host_api_t *api, const char *setting,
                 const char *text, size_t col, char *errbuf)
{
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    while (n > 0 && isspace((unsigned char)*text)) {
        text++;
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            goto out_bad;
    }
    const char *name = text, *addr = text;
    size_t name_len = 0, addr_len = n;
    if (n > 0 && text[n - 1] == '>') {
        const char *lt = memrchr(text, '<', n);
        if (!lt)
            goto out_bad;
        addr = lt + 1;
        addr_len = n - (size_t)(addr - text) - 1;
        name_len = (size_t)(lt - text);
        while (name_len > 0 && isspace((unsigned char)name[name_len - 1]))
            name_len--;
    }
    if (!s_address_ok(addr, addr_len) || n > S_MAILBOX_MAX)
        goto out_bad;

    s_buf_t b = {.api = api};
    if (name_len == 0) {
        s_buf_add(&b, addr, addr_len);
    } else {
        if (name_len >= 2 && name[0] == '"' && name[name_len - 1] == '"') {
            name++; /* quoted by the admin: quoted again below if needed */
            name_len -= 2;
        }
        if (!s_is_ascii(name, name_len)) {
            s_encode_words(&b, name, name_len, col);
        } else if (s_phrase_needs_quotes(name, name_len)) {
            s_buf_adds(&b, "\"");
            for (size_t i = 0; i < name_len; i++) {
                if (name[i] == '"' || name[i] == '\\')
                    s_buf_adds(&b, "\\");
                s_buf_add(&b, name + i, 1);
            }
            s_buf_adds(&b, "\"");
        } else {
            s_buf_add(&b, name, name_len);
        }
        s_buf_adds(&b, " <");
        s_buf_add(&b, addr, addr_len);
        s_buf_adds(&b, ">");
    }
    if (b.failed) {
        s_buf_release(&b);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return NULL;
    }
    return b.data;

out_bad:
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
             "setting '%s' is not an address like \"Name "
             "<user@example.com>\"",
             setting);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Templates                                                           */
/* ------------------------------------------------------------------ */

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
    t->body = s_strndup(api, body, (size_t)(end - body));
    if (!t->subject || !t->body)
        return "out of memory";
    return NULL;
}

static void
s_template_release(const plugboard_host_api_t *api, s_template_t *t)
{
    api->free(t->type);
    api->free(t->subject);
    api->free(t->body);
}

static bool
s_is_template_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && name[0] != '.' && strcmp(name + n - 4, ".txt") == 0;
}

/* Load one template file into m->templates (which has room). */
static int
s_template_load(s_maildir_t *m, const char *dir, const char *name, char *errbuf)
{
    const plugboard_host_api_t *api = m->api;
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >=
        sizeof path) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "template path too long in '%s'",
                 dir);
        return -1;
    }
    char *text = NULL;
    size_t len = 0;
    int err = s_read_file(api, path, &text, &len);
    if (err) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "cannot read template '%s/%s': %s", dir, name,
                 err == EFBIG ? "larger than 256 KiB" : strerror(err));
        return -1;
    }
    s_template_t *t = &m->templates[m->template_count];
    memset(t, 0, sizeof *t);
    const char *why = s_template_parse(api, text, len, t);
    api->free(text);
    t->type = s_strndup(api, name, strlen(name) - 4);
    if (!why && !t->type)
        why = "out of memory";
    if (why) {
        s_template_release(api, t);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "cannot parse template '%s/%s': %s", dir, name, why);
        return -1;
    }
    m->template_count++;
    return 0;
}

/* Read every *.txt in dir.  Returns 0, or -1 with errbuf naming the file. */
static int
s_templates_load(s_maildir_t *m, const char *dir, char *errbuf)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "cannot open templates directory '%s': %s", dir,
                 strerror(errno));
        return -1;
    }
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        count += s_is_template_name(e->d_name);
    m->templates = m->api->alloc((count ? count : 1) * sizeof *m->templates);
    if (!m->templates) {
        closedir(d);
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    rewinddir(d);
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!s_is_template_name(e->d_name))
            continue;
        if (m->template_count == count)
            break; /* the directory grew while we read it */
        rc = s_template_load(m, dir, e->d_name, errbuf);
    }
    closedir(d);
    return rc;
}

static const s_template_t *
s_template_find(const s_maildir_t *m, const char *type)
{
    for (size_t i = 0; i < m->template_count; i++)
        if (strcmp(m->templates[i].type, type) == 0)
            return &m->templates[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* open / close                                                        */
/* ------------------------------------------------------------------ */

static int
s_mkdir(const char *path, char *errbuf)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        errno = ENOTDIR;
    }
    snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "cannot create directory '%s': %s",
             path, strerror(errno));
    return -1;
}

static int
s_maildir_prepare(const char *root, char *errbuf)
{
    if (strlen(root) > PATH_MAX - 256) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "setting 'path' is too long");
        return -1;
    }
    if (s_mkdir(root, errbuf) != 0)
        return -1;
    static const char *const subdirs[] = {"tmp", "new", "cur"};
    for (size_t i = 0; i < 3; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", root, subdirs[i]);
        if (s_mkdir(path, errbuf) != 0)
            return -1;
    }
    return 0;
}

/* Host name for tmp/ names (Maildir escapes '/' and ':') and, when it is
 * a plausible domain, for Message-ID; "plugboard" otherwise. */
static void
s_hostname_init(s_maildir_t *m)
{
    char name[64] = "";
    if (gethostname(name, sizeof name - 1) != 0)
        name[0] = '\0';
    name[sizeof name - 1] = '\0';
    bool domain_ok = name[0] != '\0' && name[0] != '.' && name[0] != '-';
    size_t o = 0;
    for (size_t i = 0; name[i] && o + 5 < sizeof m->host_name; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '-' && c != '.')
            domain_ok = false;
        if (c == '/' || c == ':') {
            o += (size_t)snprintf(m->host_name + o, sizeof m->host_name - o,
                                  "\\%03o", c);
        } else {
            m->host_name[o++] = (char)c;
        }
    }
    m->host_name[o] = '\0';
    if (o == 0)
        snprintf(m->host_name, sizeof m->host_name, "plugboard");
    snprintf(m->domain, sizeof m->domain, "%s", domain_ok ? name : "plugboard");
}

static void
s_close(void *state)
{
    s_maildir_t *m = state;
    if (!m)
        return;
    const plugboard_host_api_t *api = m->api;
    for (size_t i = 0; i < m->template_count; i++)
        s_template_release(api, &m->templates[i]);
    api->free(m->templates);
    api->free(m->root);
    api->free(m->from);
    api->free(m->to);
    api->free(m->reply_to);
    api->free(m->to_field);
    api->free(m);
}

/* The address settings: from (required), to and reply_to (optional). */
static int
s_open_addresses(s_maildir_t *m, const plugboard_settings_t *settings,
                 char *errbuf)
{
    const plugboard_host_api_t *api = m->api;
    const char *from = api->setting_string(settings, "from");
    const char *to = api->setting_string(settings, "to");
    const char *reply_to = api->setting_string(settings, "reply_to");
    /* col: where the value starts, after "From: ", "To: ", "Reply-To: " */
    m->from = s_mailbox_format(api, "from", from ? from : "", 6, errbuf);
    if (!m->from)
        return -1;
    if (to && *to && !(m->to = s_mailbox_format(api, "to", to, 4, errbuf)))
        return -1;
    if (reply_to && *reply_to &&
        !(m->reply_to =
              s_mailbox_format(api, "reply_to", reply_to, 10, errbuf)))
        return -1;
    return 0;
}

static int
s_open(const plugboard_host_api_t *api, plugboard_host_t *host,
       const plugboard_settings_t *settings, void **state, char *errbuf)
{
    const char *root = api->setting_string(settings, "path");
    const char *field = api->setting_string(settings, "to_field");
    const char *templates = api->setting_string(settings, "templates");
    if (!root || !*root || !templates || !*templates) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "settings 'path' and 'templates' must not be empty");
        return -1;
    }
    if (!field || !*field)
        field = "customer.email";

    s_maildir_t *m = api->alloc(sizeof *m);
    if (!m) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        return -1;
    }
    memset(m, 0, sizeof *m);
    m->api = api;
    m->host = host;
    m->root = s_strndup(api, root, strlen(root));
    m->to_field = s_strndup(api, field, strlen(field));
    if (!m->root || !m->to_field) {
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
        goto out_close;
    }
    if (s_open_addresses(m, settings, errbuf) != 0 ||
        s_maildir_prepare(root, errbuf) != 0 ||
        s_templates_load(m, templates, errbuf) != 0)
        goto out_close;
    s_hostname_init(m);
    api->log(host, PLUGBOARD_LOG_INFO,
             "opened maildir='%s' templates=%zu template_dir='%s'", root,
             m->template_count, templates);
    *state = m;
    return 0;

out_close:
    s_close(m);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Building the message                                                */
/* ------------------------------------------------------------------ */

/*
 * The event id as it appears in file names and Message-ID: as is when it
 * is short and made of [A-Za-z0-9_-] (host ids always are), otherwise the
 * SHA-256 of it in hex, so any id maps to one safe name.
 */
static void
s_safe_id(const char *id, char out[2 * SHA256_DIGEST_LENGTH + 2])
{
    size_t n = strlen(id);
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
    SHA256((const unsigned char *)id, n, md);
    out[0] = 'h';
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 1 + 2 * i, 3, "%02x", md[i]);
}

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

/* "Name: value" CRLF.  value is header-ready (validated or encoded at
 * open); controls are still blanked so nothing can start a new line. */
static void
s_add_header(s_buf_t *out, const char *name, const char *value)
{
    s_buf_adds(out, name);
    s_buf_adds(out, ": ");
    for (const char *p = value; *p; p++) {
        bool fold = p[0] == '\r' && p[1] == '\n' && p[2] == ' ';
        if (fold) {
            s_buf_add(out, p, 3); /* our own folding between words */
            p += 2;
        } else {
            unsigned char c = (unsigned char)*p;
            char ch = c < 0x20 || c == 0x7f ? ' ' : (char)c;
            s_buf_add(out, &ch, 1);
        }
    }
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
 * text that could be mistaken for encoded words, or cannot be folded). */
static void
s_add_subject(s_buf_t *out, const char *subject)
{
    size_t n = strlen(subject);
    while (n > 0 && subject[n - 1] == ' ')
        n--;
    while (n > 0 && *subject == ' ') {
        subject++;
        n--;
    }
    s_buf_adds(out, "Subject: ");
    bool plain = s_is_ascii(subject, n) && !memmem(subject, n, "=?", 2) &&
                 s_longest_word(subject, n) <= 78 - 9;
    if (plain)
        s_add_folded(out, subject, n, 9);
    else
        s_encode_words(out, subject, n, 9);
    s_buf_adds(out, "\r\n");
}

/*
 * Quoted-printable (RFC 2045 6.7): output lines at most 76 characters,
 * soft breaks "=" CRLF, '=' and non-ASCII and controls as =XX, space and
 * tab encoded at the end of a line.  Input line breaks (LF or CRLF) become
 * CRLF; a line starting "From " gets its F encoded for mbox readers.
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

typedef struct s_mail {
    const char *rcpt; /* formatted To value */
    const char *type;
    const char *safe_id;
    char *subject; /* rendered, api->alloc */
    s_buf_t body;  /* rendered text, before QP */
} s_mail_t;

/* Render subject and body for ev.  Returns false when out of memory. */
static bool
s_render(const s_maildir_t *m, const plugboard_event_t *ev, s_mail_t *mail)
{
    const plugboard_host_api_t *api = m->api;
    const s_template_t *t = s_template_find(m, mail->type);
    const char *subj_t = t ? t->subject : s_generic_subject;
    const char *body_t = t ? t->body : s_generic_body;
    mail->subject =
        plugboard_template_render(api, ev, subj_t, PLUGBOARD_ESCAPE_HEADER);
    char *body =
        plugboard_template_render(api, ev, body_t, PLUGBOARD_ESCAPE_NONE);
    mail->body.api = api;
    if (body) {
        s_buf_adds(&mail->body, body);
        api->free(body);
    } else {
        mail->body.failed = true;
    }
    if (!t)
        s_add_event_json(&mail->body, api, ev);
    return mail->subject && !mail->body.failed;
}

static void
s_build(const s_maildir_t *m, const plugboard_event_t *ev, const s_mail_t *mail,
        s_buf_t *msg)
{
    const plugboard_host_api_t *api = m->api;
    char date[64];
    s_rfc5322_date(api->now_ms(), date, sizeof date);
    s_buf_printf(msg, "Date: %s\r\n", date);
    s_add_header(msg, "From", m->from);
    s_add_header(msg, "To", mail->rcpt);
    if (m->reply_to)
        s_add_header(msg, "Reply-To", m->reply_to);
    s_add_subject(msg, mail->subject[0] ? mail->subject : mail->type);
    s_buf_printf(msg, "Message-ID: <%s.%" PRIu32 "@%s>\r\n", mail->safe_id,
                 api->event_attempt(ev), m->domain);
    s_buf_adds(msg, "MIME-Version: 1.0\r\n"
                    "Content-Type: text/plain; charset=UTF-8\r\n"
                    "Content-Transfer-Encoding: quoted-printable\r\n"
                    "Auto-Submitted: auto-generated\r\n");
    s_buf_printf(msg, "X-Plugboard-Event-Id: %s\r\n", mail->safe_id);
    s_add_header(msg, "X-Plugboard-Event-Type", mail->type);
    s_buf_adds(msg, "\r\n");
    s_add_qp_body(msg, mail->body.data ? mail->body.data : "");
}

/* ------------------------------------------------------------------ */
/* Delivering into the Maildir                                         */
/* ------------------------------------------------------------------ */

/* A transient failure in one of the Maildir's directories. */
static void
s_retry(plugboard_result_t *r, const char *what, const s_maildir_t *m,
        const char *subdir, int err)
{
    r->outcome = PLUGBOARD_RETRY;
    snprintf(r->reason, sizeof r->reason, "cannot %s '%s/%s': %s", what,
             m->root, subdir, strerror(err));
}

/* Whether cur/ holds name, with or without ":2,<flags>" (a reader moved
 * it there).  Errors reading cur/ count as "no": the link into new/ still
 * refuses a duplicate that has not been moved. */
static bool
s_seen_in_cur(const s_maildir_t *m, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cur", m->root);
    DIR *d = opendir(path);
    if (!d)
        return false;
    size_t n = strlen(name);
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL)
        found = strncmp(e->d_name, name, n) == 0 &&
                (e->d_name[n] == '\0' || e->d_name[n] == ':' ||
                 e->d_name[n] == '!');
    closedir(d);
    return found;
}

/* A tmp/ name no other delivery uses: time, pid, counter, random, host. */
static void
s_unique_name(s_maildir_t *m, char *out, size_t out_len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint64_t)tv.tv_usec * 2654435761u;
    snprintf(out, out_len, "%lld.M%06ldP%ldQ%" PRIu64 "R%016" PRIx64 ".%s",
             (long long)tv.tv_sec, (long)tv.tv_usec, (long)getpid(),
             ++m->sequence, rnd, m->host_name);
}

static int
s_write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Make new/ itself durable, so the link survives a power loss. */
static int
s_sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = fsync(fd) == 0 || errno == EINVAL ? 0 : errno;
    close(fd);
    return err;
}

/*
 * Move tmp into new/name without ever replacing an existing message:
 * link(2) fails with EEXIST when the event was delivered before.  Where
 * the file system has no hard links, fall back to a checked rename.
 * Returns 0, EEXIST, or an errno value.
 */
static int
s_publish(const char *tmp, const char *dst)
{
    if (link(tmp, dst) == 0)
        return 0;
    int err = errno;
    if (err != EPERM && err != ENOSYS && err != EOPNOTSUPP && err != EXDEV &&
        err != EMLINK)
        return err;
    struct stat st;
    if (lstat(dst, &st) == 0)
        return EEXIST;
    return rename(tmp, dst) == 0 ? 0 : errno;
}

/* Write msg as new/<name>: tmp/, fsync, link, fsync new/.  Fills r. */
static void
s_store(s_maildir_t *m, const char *name, const s_buf_t *msg,
        plugboard_result_t *r)
{
    char unique[256], tmp[PATH_MAX], dst[PATH_MAX], newdir[PATH_MAX];
    s_unique_name(m, unique, sizeof unique);
    snprintf(tmp, sizeof tmp, "%s/tmp/%s", m->root, unique);
    snprintf(dst, sizeof dst, "%s/new/%s", m->root, name);
    snprintf(newdir, sizeof newdir, "%s/new", m->root);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        s_retry(r, "create a file in", m, "tmp", errno);
        return;
    }
    int err = s_write_all(fd, msg->data, msg->len);
    if (!err && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (err) {
        unlink(tmp);
        s_retry(r, "write a file in", m, "tmp", err);
        return;
    }
    err = s_publish(tmp, dst);
    unlink(tmp); /* after link: new/ holds the message; after rename: gone */
    if (err == EEXIST) {
        m->api->log(m->host, PLUGBOARD_LOG_DEBUG,
                    "message new/%s already delivered", name);
        return;
    }
    if (err) {
        s_retry(r, "link a message into", m, "new", err);
        return;
    }
    err = s_sync_dir(newdir);
    if (err)
        s_retry(r, "sync", m, "new", err);
}

/*
 * The recipient: the fixed 'to' setting, else the event field ('owner' for
 * dead-letter notices, to_field for everything else).  Returns NULL and
 * rejects when the field is missing or not a single bare address.
 */
static char *
s_recipient(const s_maildir_t *m, const plugboard_event_t *ev, const char *type,
            plugboard_result_t *r)
{
    const plugboard_host_api_t *api = m->api;
    const char *src = m->to;
    size_t len = src ? strlen(src) : 0;
    const char *field =
        strcmp(type, PLUGBOARD_EV_DELIVERY_DEAD) == 0 ? "owner" : m->to_field;
    if (!src && (!api->event_string(ev, field, &src, &len) ||
                 !s_address_ok(src, len))) {
        r->outcome = PLUGBOARD_REJECT;
        snprintf(r->reason, sizeof r->reason,
                 "recipient field '%s' is missing or not an address", field);
        return NULL;
    }
    char *rcpt = s_strndup(api, src, len);
    if (!rcpt) {
        r->outcome = PLUGBOARD_RETRY;
        snprintf(r->reason, sizeof r->reason, "out of memory");
    }
    return rcpt;
}

static void
s_deliver(void *state, const plugboard_event_t *ev, plugboard_result_t *r)
{
    s_maildir_t *m = state;
    const plugboard_host_api_t *api = m->api;
    char safe_id[2 * SHA256_DIGEST_LENGTH + 2];
    s_safe_id(api->event_id(ev), safe_id);
    s_mail_t mail = {.type = api->event_type(ev), .safe_id = safe_id};

    char *rcpt = s_recipient(m, ev, mail.type, r);
    if (!rcpt)
        return;
    mail.rcpt = rcpt;

    /* the name every delivery of this event uses in new/ and cur/ */
    int64_t secs = api->event_time_ms(ev) / 1000;
    char name[128];
    snprintf(name, sizeof name, "%" PRId64 ".%s.plugboard", secs > 0 ? secs : 0,
             safe_id);
    if (s_seen_in_cur(m, name)) {
        api->free(rcpt);
        return; /* delivered before and already read */
    }

    s_buf_t msg = {.api = api};
    if (s_render(m, ev, &mail))
        s_build(m, ev, &mail, &msg);
    if (!mail.subject || mail.body.failed || msg.failed) {
        r->outcome = PLUGBOARD_RETRY;
        snprintf(r->reason, sizeof r->reason, "out of memory");
    } else {
        s_store(m, name, &msg, r);
    }
    s_buf_release(&msg);
    s_buf_release(&mail.body);
    api->free(mail.subject);
    api->free(rcpt);
}

static const plugboard_connector_t s_connector = {
    .abi_version = PLUGBOARD_ABI_VERSION,
    .size = sizeof(plugboard_connector_t),
    .name = "maildir",
    .version = "1.0.0",
    .summary = "render an email per event from templates into a Maildir",
    .settings = s_settings,
    .consumes = s_consumes,
    .emits = NULL,
    .flags = 0,
    .open = s_open,
    .close = s_close,
    .deliver = s_deliver,
};

PLUGBOARD_CONNECTOR_EXPORT
plugboard_connector_entry(void)
{
    return &s_connector;
}
