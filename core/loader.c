/*
 * loader.c - dlopen of a private copy of a connector plugin, ABI and size
 * checks, and the host's own copy of the descriptor.
 */
#include "loader.h"

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <signal.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

struct pb_plugin {
    void *handle;
    char *path;                   /* the file asked for */
    char *copy;                   /* the private copy loaded, kept on disk
                                     while loaded (a worker process loads
                                     the same bytes); NULL without one */
    plugboard_connector_t desc;   /* fields this host knows, copied */
};

static atomic_uint s_copy_seq;

static int
s_copy_file(const char *from, const char *to, char *err, size_t err_len)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, err_len, "cannot open '%s': %s", from, strerror(errno));
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (out < 0) {
        snprintf(err, err_len, "cannot create private copy '%s': %s", to,
                 strerror(errno));
        close(in);
        return -1;
    }
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        char *p = buf;
        while (n > 0) {
            ssize_t w = write(out, p, (size_t)n);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                snprintf(err, err_len, "cannot write '%s': %s", to,
                         strerror(errno));
                rc = -1;
                goto out_close;
            }
            p += w;
            n -= w;
        }
    }
    if (n < 0) {
        snprintf(err, err_len, "cannot read '%s': %s", from, strerror(errno));
        rc = -1;
    }
out_close:
    close(out);
    close(in);
    if (rc != 0)
        unlink(to);
    return rc;
}

/* Remove private copies left by hosts that no longer run (killed before
 * they could unlink them): files named "<pid>-..." of a gone pid. */
static void
s_sweep(const char *copy_dir)
{
    DIR *d = opendir(copy_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '-' || pid <= 0 ||
            pid == (long)getpid() || kill((pid_t)pid, 0) == 0 ||
            errno != ESRCH)
            continue;
        char stale[4400];
        snprintf(stale, sizeof stale, "%s/%s", copy_dir, e->d_name);
        unlink(stale);
    }
    if (d)
        closedir(d);
}

static bool
s_find(const char *name_or_path, const char *const *search_path,
       size_t search_count, char *out, size_t out_len, char *err,
       size_t err_len)
{
    if (strchr(name_or_path, '/')) {
        snprintf(out, out_len, "%s", name_or_path);
        if (access(out, R_OK) == 0)
            return true;
        snprintf(err, err_len, "cannot read '%s': %s", out, strerror(errno));
        return false;
    }
    for (size_t i = 0; i < search_count; i++) {
        snprintf(out, out_len, "%s/%s.so", search_path[i], name_or_path);
        if (access(out, R_OK) == 0)
            return true;
    }
    int n = snprintf(err, err_len, "no '%s.so' in the plugin path (",
                     name_or_path);
    for (size_t i = 0; i < search_count && n > 0 && (size_t)n < err_len; i++)
        n += snprintf(err + n, err_len - (size_t)n, "%s%s", i ? ", " : "",
                      search_path[i]);
    if (n > 0 && (size_t)n < err_len)
        snprintf(err + n, err_len - (size_t)n, "%s)",
                 search_count ? "" : "empty: set plugboard.plugin_path");
    return false;
}

/*
 * Refuse a shared object cut short (a copy still being written, a full
 * disk) before dlopen maps it: dlopen maps each loadable segment from the
 * file and touches its pages, so one that reaches past the end of the
 * file kills the process with SIGBUS instead of failing.  Files that are
 * not ELF objects of this machine's class are left to dlopen, which says
 * what they are.
 */
static int
s_check_complete(const char *file, const char *path, char *err, size_t err_len)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    ElfW(Ehdr) eh;
    if (fd < 0 || fstat(fd, &st) != 0 ||
        pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] !=
            (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32)) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    uint64_t size = (uint64_t)st.st_size;
    const char *short_of = NULL;
    uint64_t need =
        (uint64_t)eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(ElfW(Phdr));
    if (eh.e_phentsize != sizeof(ElfW(Phdr)) || need > size)
        short_of = "its program headers";
    for (ElfW(Half) i = 0; !short_of && i < eh.e_phnum; i++) {
        ElfW(Phdr) ph;
        if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + i * sizeof ph)) !=
            (ssize_t)sizeof ph)
            short_of = "its program headers";
        else if (ph.p_type == PT_LOAD &&
                 (uint64_t)ph.p_offset + ph.p_filesz > size) {
            short_of = "a loadable segment";
            need = (uint64_t)ph.p_offset + ph.p_filesz;
        }
    }
    close(fd);
    if (!short_of)
        return 0;
    snprintf(err, err_len,
             "cannot load plugin '%s': the file is truncated (%llu bytes, "
             "%s needs %llu); was it still being written?",
             path, (unsigned long long)size, short_of,
             (unsigned long long)need);
    return -1;
}

static bool
s_valid_name(const char *name)
{
    if (!name || !*name || strlen(name) > 63)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    return true;
}

static int
s_check_settings(const plugboard_setting_spec_t *spec, char *err,
                 size_t err_len)
{
    if (!spec)
        return 0;
    for (size_t i = 0; spec[i].name; i++) {
        if (i >= 256) {
            snprintf(err, err_len, "settings table has no end marker");
            return -1;
        }
        const plugboard_setting_spec_t *s = &spec[i];
        if (s->type < PLUGBOARD_SETTING_STRING ||
            s->type > PLUGBOARD_SETTING_DURATION) {
            snprintf(err, err_len, "setting '%s' has unknown type %d",
                     s->name, (int)s->type);
            return -1;
        }
        if (!s->help || !*s->help) {
            snprintf(err, err_len, "setting '%s' has no help text", s->name);
            return -1;
        }
    }
    return 0;
}

static int
s_check_descriptor(const plugboard_connector_t *d, const char *path,
                   char *err, size_t err_len)
{
    char why[200];
    if (d->abi_version != PLUGBOARD_ABI_VERSION) {
        snprintf(err, err_len,
                 "cannot load plugin '%s': built for ABI %u, host speaks %d",
                 path, d->abi_version, PLUGBOARD_ABI_VERSION);
        return -1;
    }
    /* ABI 1 descriptors end at webhook; anything smaller is truncated */
    size_t need = offsetof(plugboard_connector_t, webhook) +
                  sizeof(d->webhook);
    if (d->size < need) {
        snprintf(err, err_len,
                 "cannot load plugin '%s': descriptor size %u is smaller "
                 "than ABI %d's %zu bytes",
                 path, d->size, PLUGBOARD_ABI_VERSION, need);
        return -1;
    }
    if (!s_valid_name(d->name)) {
        snprintf(err, err_len,
                 "cannot load plugin '%s': descriptor name '%s' is not "
                 "[a-z0-9_-]{1,63}",
                 path, d->name ? d->name : "(null)");
        return -1;
    }
    if (!d->open || !d->close) {
        snprintf(err, err_len,
                 "cannot load plugin '%s': descriptor has no %s callback",
                 path, d->open ? "close" : "open");
        return -1;
    }
    if (s_check_settings(d->settings, why, sizeof why) != 0) {
        snprintf(err, err_len, "cannot load plugin '%s': %s", path, why);
        return -1;
    }
    return 0;
}

pb_plugin_t *
pb_plugin_load(const char *name_or_path, const char *const *search_path,
               size_t search_count, const char *copy_dir, char *err,
               size_t err_len)
{
    return pb_plugin_load_kept(name_or_path, search_path, search_count,
                               copy_dir, false, err, err_len);
}

pb_plugin_t *
pb_plugin_load_kept(const char *name_or_path, const char *const *search_path,
                    size_t search_count, const char *copy_dir, bool keep,
                    char *err, size_t err_len)
{
    char path[4096], copy[4200];
    if (!s_find(name_or_path, search_path, search_count, path, sizeof path,
                err, err_len))
        return NULL;

    const char *open_path = path;
    if (copy_dir) {
        if (mkdir(copy_dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, err_len, "cannot create '%s': %s", copy_dir,
                     strerror(errno));
            return NULL;
        }
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        unsigned seq = atomic_fetch_add(&s_copy_seq, 1);
        if (seq == 0)
            s_sweep(copy_dir);
        snprintf(copy, sizeof copy, "%s/%d-%u-%s", copy_dir, (int)getpid(),
                 seq, base);
        if (s_copy_file(path, copy, err, err_len) != 0)
            return NULL;
        open_path = copy;
    }

    if (s_check_complete(open_path, path, err, err_len) != 0) {
        if (copy_dir)
            unlink(copy);
        return NULL;
    }
    void *handle = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    if (copy_dir && (!handle || !keep))
        unlink(copy); /* the mapping keeps the copy alive */
    if (!handle) {
        snprintf(err, err_len, "cannot load plugin '%s': %s", path,
                 dlerror());
        return NULL;
    }
    plugboard_entry_fn entry;
    *(void **)&entry = dlsym(handle, PLUGBOARD_ENTRY_SYMBOL);
    if (!entry) {
        snprintf(err, err_len,
                 "cannot load plugin '%s': no '%s' symbol; is it a plugboard "
                 "connector?",
                 path, PLUGBOARD_ENTRY_SYMBOL);
        goto out_close;
    }
    const plugboard_connector_t *d = entry();
    if (!d) {
        snprintf(err, err_len, "cannot load plugin '%s': %s() returned NULL",
                 path, PLUGBOARD_ENTRY_SYMBOL);
        goto out_close;
    }
    if (s_check_descriptor(d, path, err, err_len) != 0)
        goto out_close;

    pb_plugin_t *p = calloc(1, sizeof *p);
    if (!p || !(p->path = strdup(path)) ||
        (copy_dir && keep && !(p->copy = strdup(copy)))) {
        if (p)
            free(p->path);
        free(p);
        snprintf(err, err_len, "out of memory");
        goto out_close;
    }
    p->handle = handle;
    /* copy only the fields this host knows; a newer plugin's tail is
     * ignored, an older plugin is refused above */
    size_t n = d->size < sizeof p->desc ? d->size : sizeof p->desc;
    memcpy(&p->desc, d, n);
    p->desc.size = (uint32_t)sizeof p->desc;
    return p;

out_close:
    dlclose(handle);
    if (copy_dir && keep)
        unlink(copy);
    return NULL;
}

void
pb_plugin_destroy(pb_plugin_t **plugin)
{
    if (!plugin || !*plugin)
        return;
    pb_plugin_t *p = *plugin;
    *plugin = NULL;
    if (p->handle)
        dlclose(p->handle);
    if (p->copy)
        unlink(p->copy);
    free(p->copy);
    free(p->path);
    free(p);
}

void
pb_plugin_abandon(pb_plugin_t **plugin)
{
    if (!plugin || !*plugin)
        return;
    pb_plugin_t *p = *plugin;
    *plugin = NULL;
    if (p->copy)
        unlink(p->copy);
    free(p->copy);
    free(p->path);
    free(p);
}

const plugboard_connector_t *
pb_plugin_descriptor(const pb_plugin_t *plugin)
{
    return &plugin->desc;
}

const char *
pb_plugin_path(const pb_plugin_t *plugin)
{
    return plugin->path;
}

const char *
pb_plugin_file(const pb_plugin_t *plugin)
{
    return plugin->copy ? plugin->copy : plugin->path;
}
