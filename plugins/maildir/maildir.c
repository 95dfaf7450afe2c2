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
 * never add a header or a recipient.  The message itself (templates,
 * encoding, headers) is built by the SDK's mail helpers (sdk/src/mime.c),
 * which the smtp connector shares.
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

/* ------------------------------------------------------------------ */
/* State and settings                                                  */
/* ------------------------------------------------------------------ */

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

typedef struct s_maildir {
    const plugboard_host_api_t *api;
    plugboard_host_t *host;
    char *root;                   /* the Maildir */
    plugboard_mailbox_t from;     /* formatted header value and address */
    plugboard_mailbox_t to;       /* fixed recipient, header NULL if unset */
    plugboard_mailbox_t reply_to; /* header NULL if unset */
    char *to_field;               /* event field holding the recipient */
    plugboard_mail_templates_t *templates;
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
    PLUGBOARD_EV_PAYMENT_SUCCEEDED,
    PLUGBOARD_EV_PAYMENT_FAILED,
    PLUGBOARD_EV_PAYMENT_REFUNDED,
    PLUGBOARD_EV_SUBSCRIPTION_CANCELED,
    PLUGBOARD_EV_DISPUTE_OPENED,
    PLUGBOARD_EV_CONTACT_UPSERTED,
    PLUGBOARD_EV_TICKET_CREATED,
    PLUGBOARD_EV_TICKET_UPDATED,
    PLUGBOARD_EV_TICKET_SOLVED,
    PLUGBOARD_EV_EMAIL_BOUNCED,
    PLUGBOARD_EV_DELIVERY_DEAD,
    PLUGBOARD_EV_CONNECTOR_UNHEALTHY,
    NULL,
};

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
    plugboard_mail_templates_destroy(&m->templates);
    api->free(m->root);
    plugboard_mailbox_release(api, &m->from);
    plugboard_mailbox_release(api, &m->to);
    plugboard_mailbox_release(api, &m->reply_to);
    api->free(m->to_field);
    api->free(m);
}

/* One address setting into *mb; col is where its header value starts. */
static int
s_open_mailbox(const plugboard_host_api_t *api, const char *setting,
               const char *text, size_t col, plugboard_mailbox_t *mb,
               char *errbuf)
{
    int rc = plugboard_mailbox_parse(api, text, col, mb);
    if (rc == PLUGBOARD_E_NOMEM)
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX, "out of memory");
    else if (rc != 0)
        snprintf(errbuf, PLUGBOARD_ERRBUF_MAX,
                 "setting '%s' is not an address like \"Name "
                 "<user@example.com>\"",
                 setting);
    return rc;
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
    if (s_open_mailbox(api, "from", from ? from : "", 6, &m->from, errbuf))
        return -1;
    if (to && *to && s_open_mailbox(api, "to", to, 4, &m->to, errbuf))
        return -1;
    if (reply_to && *reply_to &&
        s_open_mailbox(api, "reply_to", reply_to, 10, &m->reply_to, errbuf))
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
        !(m->templates = plugboard_mail_templates_load(api, templates, errbuf)))
        goto out_close;
    s_hostname_init(m);
    api->log(host, PLUGBOARD_LOG_INFO,
             "opened maildir='%s' templates=%zu template_dir='%s'", root,
             plugboard_mail_templates_count(m->templates), templates);
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
 * The message for ev to rcpt (a checked bare address): the SDK's rendering
 * and RFC 5322 text, with the event's id and type in X-Plugboard-* fields.
 * Returns the text (api->free) or NULL when out of memory.
 */
static char *
s_build(const s_maildir_t *m, const plugboard_event_t *ev, const char *rcpt,
        const char *safe_id, size_t *len)
{
    const plugboard_host_api_t *api = m->api;
    plugboard_mail_content_t content;
    if (plugboard_mail_render(api, m->templates, ev, &content) != 0)
        return NULL;
    const char *type = api->event_type(ev);
    char message_id[PLUGBOARD_MAIL_ID_TOKEN_MAX + 160];
    snprintf(message_id, sizeof message_id, "%s.%" PRIu32 "@%s", safe_id,
             api->event_attempt(ev), m->domain);
    const plugboard_header_t extra[] = {
        {.name = "X-Plugboard-Event-Id", .value = safe_id},
        {.name = "X-Plugboard-Event-Type", .value = type},
    };
    plugboard_mail_t mail = {
        .date_ms = api->now_ms(),
        .from = m->from.header,
        .to = m->to.header ? m->to.header : rcpt,
        .reply_to = m->reply_to.header,
        .message_id = message_id,
        .subject = content.subject[0] ? content.subject : type,
        .text = content.text,
        .html = content.html,
        .extra = extra,
        .extra_count = sizeof extra / sizeof extra[0],
    };
    char *msg = plugboard_mail_build(api, &mail, len);
    plugboard_mail_content_release(api, &content);
    return msg;
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
s_store(s_maildir_t *m, const char *name, const char *msg, size_t msg_len,
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
    int err = s_write_all(fd, msg, msg_len);
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
    const char *src = m->to.address;
    size_t len = src ? strlen(src) : 0;
    const char *field =
        strcmp(type, PLUGBOARD_EV_DELIVERY_DEAD) == 0 ||
                strcmp(type, PLUGBOARD_EV_CONNECTOR_UNHEALTHY) == 0
            ? "owner"
            : m->to_field;
    if (!src && (!api->event_string(ev, field, &src, &len) ||
                 !plugboard_mail_address_ok(src, len))) {
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
    char safe_id[PLUGBOARD_MAIL_ID_TOKEN_MAX];
    plugboard_mail_id_token(api->event_id(ev), safe_id);

    char *rcpt = s_recipient(m, ev, api->event_type(ev), r);
    if (!rcpt)
        return;

    /* the name every delivery of this event uses in new/ and cur/ */
    int64_t secs = api->event_time_ms(ev) / 1000;
    char name[128];
    snprintf(name, sizeof name, "%" PRId64 ".%s.plugboard", secs > 0 ? secs : 0,
             safe_id);
    if (s_seen_in_cur(m, name)) {
        api->free(rcpt);
        return; /* delivered before and already read */
    }

    size_t len = 0;
    char *msg = s_build(m, ev, rcpt, safe_id, &len);
    if (!msg) {
        r->outcome = PLUGBOARD_RETRY;
        snprintf(r->reason, sizeof r->reason, "out of memory");
    } else {
        s_store(m, name, msg, len, r);
    }
    api->free(msg);
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
