/*
 * test_loader.c - loading connector plugins: the search path, the private
 * copy, the ABI and size checks, the descriptor copy, and every refusal's
 * message.
 *
 * The plugins are real .so files built from tests/plugins/<name>.c.  Refusals
 * are exercised through a private copy directory (the way the host loads),
 * so each one also shows that no copy is left behind.  The last tests
 * drive the "good" test plugin (directly and through the harness),
 * because router and integration tests rely on it behaving as its header
 * says.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "envelope.h"
#include "harness.h"
#include "hostapi.h"
#include "loader.h"

#define PLUGIN(name) PB_TEST_PLUGIN_DIR "/" name ".so"

static char *s_tmp; /* a fresh directory per test, removed after it */

static void
setup(void)
{
    s_tmp = pb_test_tempdir("pb-loader");
    cr_assert_not_null(s_tmp);
}

static void
teardown(void)
{
    pb_test_rmtree(s_tmp);
    free(s_tmp);
    s_tmp = NULL;
}

TestSuite(loader, .init = setup, .fini = teardown, .timeout = 30);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* s_tmp/name written to buf; returns buf. */
static const char *
tmp_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", s_tmp, name);
    return buf;
}

static void
write_file(const char *path, const void *data, size_t len)
{
    /* O_TRUNC on the existing inode: an in-place overwrite */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    cr_assert_geq(fd, 0, "open '%s': %s", path, strerror(errno));
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    cr_assert_eq(close(fd), 0);
}

static void
copy_file(const char *from, const char *to)
{
    size_t len = 0;
    char *data = pb_test_read_file(from, &len);
    cr_assert_not_null(data, "read '%s'", from);
    write_file(to, data, len);
    free(data);
}

/* Entries in dir other than . and .. */
static size_t
dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir '%s': %s", dir, strerror(errno));
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void
assert_contains(const char *text, const char *part)
{
    cr_assert_not_null(strstr(text, part), "expected '%s' in: %s", part, text);
}

/*
 * Load a plugin that must be refused, through a private copy in s_tmp/
 * copies; check the copy directory is left empty and return the message.
 */
static void
refuse(const char *path, char *err, size_t err_len)
{
    char copies[4096];
    tmp_path(copies, sizeof copies, "copies");
    err[0] = '\0';
    pb_plugin_t *p = pb_plugin_load(path, NULL, 0, copies, err, err_len);
    cr_assert_null(p, "'%s' was loaded", path);
    cr_assert_neq(err[0], '\0', "no message");
    cr_assert_eq(dir_entries(copies), 0, "private copy left behind");
}

/* A decoded event of type, as the router would hand it to deliver. */
static pb_envelope_t *
make_event(const char *type)
{
    pb_builder_t *b = pb_builder_new("test", type);
    cr_assert_not_null(b);
    cr_assert_eq(pb_builder_set_key(b, "ada@example.com"), 0);
    cr_assert_eq(pb_builder_set_int(b, "amount", 1200), 0);
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    pb_builder_destroy(&b);
    char why[256];
    int err = 0;
    pb_envelope_t *env =
        pb_envelope_decode(frame, len, NULL, &err, why, sizeof why);
    free(frame);
    cr_assert_not_null(env, "%s", why);
    return env;
}

/*
 * One connector instance driven the way the connector actor drives it,
 * without the harness: settings bound by the host, open through the real
 * host API table, events handed to deliver with the attempt set.
 */
typedef struct inst {
    const plugboard_connector_t *d;
    plugboard_settings_t *settings;
    plugboard_host_t host;
    void *state;
} inst_t;

static void
inst_open(inst_t *in, const plugboard_connector_t *d,
          const pb_raw_setting_t *raw, size_t raw_count)
{
    memset(in, 0, sizeof *in);
    in->d = d;
    pb_diag_t diag;
    pb_diag_init(&diag);
    in->settings = pb_settings_bind(d->settings, raw, raw_count, "test", &diag);
    cr_assert_not_null(in->settings, "%s",
                       diag.count ? diag.messages[0] : "bind failed");
    pb_diag_release(&diag);
    pb_host_init(&in->host, d->name, NULL, NULL, NULL);
    char errbuf[PLUGBOARD_ERRBUF_MAX] = "";
    cr_assert_eq(
        d->open(pb_host_api(), &in->host, in->settings, &in->state, errbuf), 0,
        "open: %s", errbuf);
}

static plugboard_outcome_t
inst_deliver(inst_t *in, pb_envelope_t *ev, uint32_t attempt,
             plugboard_result_t *result)
{
    pb_envelope_set_attempt(ev, attempt);
    memset(result, 0, sizeof *result);
    in->d->deliver(in->state, ev, result);
    return result->outcome;
}

static void
inst_close(inst_t *in)
{
    in->d->close(in->state);
    pb_settings_destroy(&in->settings);
}

/* Open a loaded descriptor with its defaults, deliver one event, close. */
static void
exercise(const plugboard_connector_t *d)
{
    inst_t in;
    inst_open(&in, d, NULL, 0);
    pb_envelope_t *ev = make_event(PLUGBOARD_EV_PAYMENT_FAILED);
    plugboard_result_t result;
    cr_assert_eq(inst_deliver(&in, ev, 1, &result), PLUGBOARD_OK, "%s",
                 result.reason);
    pb_envelope_destroy(&ev);
    inst_close(&in);
}

static const plugboard_setting_spec_t *
find_setting(const plugboard_connector_t *d, const char *name)
{
    for (size_t i = 0; d->settings && d->settings[i].name; i++)
        if (strcmp(d->settings[i].name, name) == 0)
            return &d->settings[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */
/* ------------------------------------------------------------------ */

Test(loader, good_plugin_loads_and_its_descriptor_is_copied)
{
    char err[512] = "";
    pb_plugin_t *p =
        pb_plugin_load(PLUGIN("good"), NULL, 0, NULL, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    cr_assert_str_eq(pb_plugin_path(p), PLUGIN("good"));

    const plugboard_connector_t *d = pb_plugin_descriptor(p);
    cr_assert_eq(d->abi_version, PLUGBOARD_ABI_VERSION);
    cr_assert_eq(d->size, sizeof(plugboard_connector_t));
    cr_assert_str_eq(d->name, "good");
    cr_assert_str_eq(d->version, "1.0.0");
    cr_assert_not_null(d->summary);
    cr_assert(d->flags & PLUGBOARD_DELIVER_THREAD_SAFE);
    cr_assert_str_eq(d->consumes[0], PLUGBOARD_EV_ANY);
    cr_assert_null(d->consumes[1]);
    cr_assert_str_eq(d->emits[0], PLUGBOARD_EV_PAYMENT_FAILED);
    cr_assert_str_eq(d->emits[1], PLUGBOARD_EV_CONTACT_UPSERTED);
    cr_assert_null(d->emits[2]);
    cr_assert_not_null(d->open);
    cr_assert_not_null(d->close);
    cr_assert_not_null(d->deliver);
    cr_assert_not_null(d->webhook);

    /* the settings table points into the plugin and is readable */
    const plugboard_setting_spec_t *s = find_setting(d, "fail_first");
    cr_assert_not_null(s);
    cr_assert_eq(s->type, PLUGBOARD_SETTING_INT);
    cr_assert_str_eq(s->default_value, "0");
    s = find_setting(d, "delay");
    cr_assert_not_null(s);
    cr_assert_eq(s->type, PLUGBOARD_SETTING_DURATION);
    cr_assert_str_eq(s->default_value, "0ms");
    cr_assert_null(find_setting(d, "nonsense"));

    /* a copy: same contents as the plugin's own static, another address */
    void *h = dlopen(PLUGIN("good"), RTLD_NOW | RTLD_NOLOAD);
    cr_assert_not_null(h, "%s", dlerror());
    plugboard_entry_fn entry;
    *(void **)&entry = dlsym(h, PLUGBOARD_ENTRY_SYMBOL);
    cr_assert_not_null(entry);
    const plugboard_connector_t *own = entry();
    cr_assert_neq(own, d);
    cr_assert_eq(own->open, d->open);
    cr_assert_eq(own->settings, d->settings);
    dlclose(h);

    exercise(d);
    pb_plugin_destroy(&p);
    cr_assert_null(p);
}

Test(loader, destroy_is_idempotent)
{
    char err[512] = "";
    pb_plugin_t *p =
        pb_plugin_load(PLUGIN("good"), NULL, 0, NULL, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    pb_plugin_destroy(&p);
    cr_assert_null(p);
    pb_plugin_destroy(&p);
    pb_plugin_destroy(NULL);
}

Test(loader, private_copy_is_unlinked_once_loaded)
{
    char run[4096], copies[4096], err[512] = "";
    cr_assert_eq(mkdir(tmp_path(run, sizeof run, "run"), 0700), 0);
    tmp_path(copies, sizeof copies, "run/plugins");

    pb_plugin_t *p =
        pb_plugin_load(PLUGIN("good"), NULL, 0, copies, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    /* the copy directory was created private, and the copy is gone */
    struct stat st;
    cr_assert_eq(stat(copies, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700);
    cr_assert_eq(dir_entries(copies), 0);
    /* the plugin reports the file asked for, not the copy */
    cr_assert_str_eq(pb_plugin_path(p), PLUGIN("good"));

    exercise(pb_plugin_descriptor(p));
    pb_plugin_destroy(&p);
}

Test(loader, each_private_copy_is_a_separate_instance)
{
    /* what an upgrade relies on: old and new side by side, each its own
     * mapping, even when both come from the same file name */
    char copies[4096], err[512] = "";
    tmp_path(copies, sizeof copies, "copies");
    pb_plugin_t *a =
        pb_plugin_load(PLUGIN("good"), NULL, 0, copies, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    pb_plugin_t *b =
        pb_plugin_load(PLUGIN("good"), NULL, 0, copies, err, sizeof err);
    cr_assert_not_null(b, "%s", err);
    const plugboard_connector_t *da = pb_plugin_descriptor(a);
    const plugboard_connector_t *db = pb_plugin_descriptor(b);
    cr_assert_neq(da->open, db->open);
    cr_assert_neq(da->settings, db->settings);
    cr_assert_eq(dir_entries(copies), 0);

    pb_plugin_destroy(&a);
    exercise(db); /* unloading one leaves the other whole */
    pb_plugin_destroy(&b);
}

Test(loader, plugin_keeps_working_when_its_file_is_overwritten)
{
    char src[4096], copies[4096], err[512] = "";
    tmp_path(src, sizeof src, "good.so");
    tmp_path(copies, sizeof copies, "copies");
    copy_file(PLUGIN("good"), src);

    pb_plugin_t *p = pb_plugin_load(src, NULL, 0, copies, err, sizeof err);
    cr_assert_not_null(p, "%s", err);

    /* overwrite in place (same inode, new bytes), as `cp` or a build
     * does; a directly mapped file would now be garbage under the host */
    copy_file(PLUGIN("wrong_abi"), src);

    const plugboard_connector_t *d = pb_plugin_descriptor(p);
    cr_assert_str_eq(d->name, "good");
    cr_assert_str_eq(d->version, "1.0.0");
    cr_assert_not_null(find_setting(d, "record"));
    exercise(d);

    /* the file really changed: loading it again reads the new bytes */
    pb_plugin_t *again = pb_plugin_load(src, NULL, 0, copies, err, sizeof err);
    cr_assert_null(again);
    assert_contains(err, "ABI");

    exercise(d);
    pb_plugin_destroy(&p);
}

/* ------------------------------------------------------------------ */
/* Finding the file                                                    */
/* ------------------------------------------------------------------ */

Test(loader, name_is_searched_along_the_path_in_order)
{
    char empty[4096], missing[4096], err[512] = "";
    tmp_path(empty, sizeof empty, "empty");
    tmp_path(missing, sizeof missing, "missing");
    cr_assert_eq(mkdir(empty, 0700), 0);
    const char *const path[] = {empty, missing, PB_TEST_PLUGIN_DIR};

    pb_plugin_t *p = pb_plugin_load("good", path, 3, NULL, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    cr_assert_str_eq(pb_plugin_path(p), PLUGIN("good"));
    cr_assert_str_eq(pb_plugin_descriptor(p)->name, "good");
    pb_plugin_destroy(&p);
}

Test(loader, first_directory_holding_the_name_wins)
{
    /* dir1/good.so is really wrong_abi.so: the refusal proves it was
     * dir1's file that was chosen, not the good one later on the path */
    char dir1[4096], file[4200], err[512] = "";
    tmp_path(dir1, sizeof dir1, "first");
    cr_assert_eq(mkdir(dir1, 0700), 0);
    snprintf(file, sizeof file, "%s/good.so", dir1);
    copy_file(PLUGIN("wrong_abi"), file);
    const char *const path[] = {dir1, PB_TEST_PLUGIN_DIR};

    pb_plugin_t *p = pb_plugin_load("good", path, 2, NULL, err, sizeof err);
    cr_assert_null(p);
    assert_contains(err, file);
    assert_contains(err, "ABI");
}

Test(loader, missing_plugin_lists_the_search_path)
{
    char missing[4096], err[1024] = "";
    tmp_path(missing, sizeof missing, "missing");
    const char *const path[] = {missing, PB_TEST_PLUGIN_DIR};

    pb_plugin_t *p = pb_plugin_load("nosuch", path, 2, NULL, err, sizeof err);
    cr_assert_null(p);
    assert_contains(err, "'nosuch.so'");
    assert_contains(err, missing);
    assert_contains(err, PB_TEST_PLUGIN_DIR);
}

Test(loader, empty_search_path_says_how_to_set_it)
{
    char err[512] = "";
    pb_plugin_t *p = pb_plugin_load("good", NULL, 0, NULL, err, sizeof err);
    cr_assert_null(p);
    assert_contains(err, "'good.so'");
    assert_contains(err, "plugin_path");
}

Test(loader, long_messages_are_truncated_not_overflowed)
{
    char err[24];
    const char *const path[] = {PB_TEST_PLUGIN_DIR, PB_TEST_PLUGIN_DIR,
                                PB_TEST_PLUGIN_DIR};
    memset(err, 'z', sizeof err);
    pb_plugin_t *p = pb_plugin_load("nosuch", path, 3, NULL, err, sizeof err);
    cr_assert_null(p);
    cr_assert_lt(strlen(err), sizeof err);
}

Test(loader, missing_file_names_the_path_and_the_cause)
{
    char file[4096], err[512] = "";
    tmp_path(file, sizeof file, "nowhere/good.so");
    pb_plugin_t *p = pb_plugin_load(file, NULL, 0, NULL, err, sizeof err);
    cr_assert_null(p);
    assert_contains(err, file);
    assert_contains(err, strerror(ENOENT));
}

/* ------------------------------------------------------------------ */
/* Refusals                                                            */
/* ------------------------------------------------------------------ */

Test(loader, wrong_abi_is_refused_naming_both_versions)
{
    char err[512], theirs[32], ours[32];
    refuse(PLUGIN("wrong_abi"), err, sizeof err);
    snprintf(theirs, sizeof theirs, "ABI %d", PLUGBOARD_ABI_VERSION + 1);
    snprintf(ours, sizeof ours, "host speaks %d", PLUGBOARD_ABI_VERSION);
    assert_contains(err, theirs);
    assert_contains(err, ours);
    assert_contains(err, PLUGIN("wrong_abi"));
}

Test(loader, short_descriptor_is_refused_naming_both_sizes)
{
    char err[512], need[64];
    refuse(PLUGIN("small_size"), err, sizeof err);
    /* ABI 1's descriptor ends with webhook; later revisions grow it */
    snprintf(need, sizeof need, "%zu bytes",
             offsetof(plugboard_connector_t, webhook) +
                 sizeof(((plugboard_connector_t *)0)->webhook));
    assert_contains(err, "size 16");
    assert_contains(err, need);
}

Test(loader, an_abi1_descriptor_loads_and_its_later_fields_read_as_absent)
{
    char err[512] = "";
    pb_plugin_t *p =
        pb_plugin_load(PLUGIN("abi1_size"), NULL, 0, NULL, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    const plugboard_connector_t *d = pb_plugin_descriptor(p);
    cr_expect_not_null(d->deliver);
    cr_expect_null(d->run, "a field past the plugin's size was read");
    cr_expect_eq(d->size, sizeof(plugboard_connector_t));
    pb_plugin_destroy(&p);
}

Test(loader, library_without_entry_symbol_is_refused_naming_it)
{
    char err[512];
    refuse(PLUGIN("no_entry"), err, sizeof err);
    assert_contains(err, "'" PLUGBOARD_ENTRY_SYMBOL "'");
    assert_contains(err, PLUGIN("no_entry"));
}

Test(loader, descriptor_without_open_is_refused)
{
    char err[512];
    refuse(PLUGIN("no_open"), err, sizeof err);
    assert_contains(err, "no open callback");
}

Test(loader, invalid_name_is_refused_quoting_it)
{
    char err[512];
    refuse(PLUGIN("bad_name"), err, sizeof err);
    assert_contains(err, "'Bad Name!'");
    assert_contains(err, "[a-z0-9_-]");
}

/* A build cut short (a copy still being written, a full disk): its
 * segments reach past the end of the file, and dlopen would map them and
 * die of SIGBUS when it touches the missing pages. */
Test(loader, truncated_shared_object_is_refused_not_mapped)
{
    size_t len = 0;
    char *whole = pb_test_read_file(PLUGIN("good"), &len);
    cr_assert_not_null(whole);
    const size_t cuts[] = {64, 4096, 5000, len / 2, len * 3 / 4};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char file[4096], err[1024];
        tmp_path(file, sizeof file, "good.so");
        write_file(file, whole, cuts[i]);
        pb_plugin_t *p = pb_plugin_load(file, NULL, 0, NULL, err, sizeof err);
        cr_assert_null(p, "a build cut at %zu of %zu bytes was loaded", cuts[i],
                       len);
        assert_contains(err, file);
        assert_contains(err, "is truncated");
        refuse(file, err, sizeof err);
        assert_contains(err, "is truncated");
    }
    free(whole);
}

Test(loader, file_that_is_not_a_shared_object_is_refused_with_dlerror)
{
    char file[4096], err[1024];
    tmp_path(file, sizeof file, "notes.so");
    const char text[] =
        "these are release notes, not a shared object; dlopen must say\n"
        "so and the loader must pass that on together with the path.\n";
    write_file(file, text, sizeof text - 1);

    /* directly: dlerror() names the file and the cause */
    pb_plugin_t *p = pb_plugin_load(file, NULL, 0, NULL, err, sizeof err);
    cr_assert_null(p);
    assert_contains(err, file);
    assert_contains(err, "invalid ELF header");

    /* through a private copy: the message still names the real file */
    refuse(file, err, sizeof err);
    assert_contains(err, "cannot load plugin '");
    assert_contains(err, file);
    assert_contains(err, "invalid ELF header");
}

Test(loader, open_failure_reports_the_plugin_message)
{
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(PLUGIN("fail_open"), NULL, NULL, err, sizeof err);
    cr_assert_null(h);
    assert_contains(err, "cannot reach the vendor: connection refused");
}

/* ------------------------------------------------------------------ */
/* The "good" test plugin, as router and integration tests use it      */
/* ------------------------------------------------------------------ */

static pb_harness_t *
open_good(const char *const *settings)
{
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(PLUGIN("good"), NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    return h;
}

static pb_plugin_t *
load_good(void)
{
    char err[512] = "";
    pb_plugin_t *p =
        pb_plugin_load(PLUGIN("good"), NULL, 0, NULL, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    return p;
}

Test(loader, good_plugin_fails_the_first_deliveries_of_each_event)
{
    pb_plugin_t *p = load_good();
    const pb_raw_setting_t raw[] = {
        {.name = "fail_first", .kind = PB_RAW_INT, .i = 2}};
    inst_t in;
    inst_open(&in, pb_plugin_descriptor(p), raw, 1);
    pb_envelope_t *a = make_event(PLUGBOARD_EV_PAYMENT_FAILED);
    pb_envelope_t *b = make_event(PLUGBOARD_EV_PAYMENT_FAILED);
    plugboard_result_t r;

    /* counted per event id, whatever the attempt number says */
    cr_assert_eq(inst_deliver(&in, a, 1, &r), PLUGBOARD_RETRY);
    assert_contains(r.reason, "fail_first");
    cr_assert_eq(r.retry_after_ms, 0);
    cr_assert_eq(inst_deliver(&in, a, 1, &r), PLUGBOARD_RETRY);
    cr_assert_eq(inst_deliver(&in, b, 1, &r), PLUGBOARD_RETRY);
    cr_assert_eq(inst_deliver(&in, a, 3, &r), PLUGBOARD_OK);
    cr_assert_eq(inst_deliver(&in, a, 4, &r), PLUGBOARD_OK);
    cr_assert_eq(inst_deliver(&in, b, 2, &r), PLUGBOARD_RETRY);
    cr_assert_eq(inst_deliver(&in, b, 3, &r), PLUGBOARD_OK);

    /* many ids: the per-id table grows and keeps every count */
    for (int i = 0; i < 300; i++) {
        pb_envelope_t *e = make_event(PLUGBOARD_EV_CONTACT_UPSERTED);
        cr_assert_eq(inst_deliver(&in, e, 1, &r), PLUGBOARD_RETRY);
        cr_assert_eq(inst_deliver(&in, e, 2, &r), PLUGBOARD_RETRY);
        cr_assert_eq(inst_deliver(&in, e, 3, &r), PLUGBOARD_OK);
        pb_envelope_destroy(&e);
    }
    pb_envelope_destroy(&a);
    pb_envelope_destroy(&b);
    inst_close(&in);
    pb_plugin_destroy(&p);
}

Test(loader, good_plugin_rejects_the_listed_types)
{
    const char *const settings[] = {
        "reject_types= ticket.created ,payment.failed", NULL};
    pb_harness_t *h = open_good(settings);
    plugboard_result_t r;

    cr_assert_eq(pb_harness_deliver(h, "payment.failed", "k", "{}", 1, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_REJECT);
    assert_contains(r.reason, "'payment.failed'");
    cr_assert_eq(pb_harness_deliver(h, "ticket.created", "k", "{}", 1, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_REJECT);
    cr_assert_eq(pb_harness_deliver(h, "payment.succeeded", "k", "{}", 1, &r),
                 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK);
    pb_harness_close(&h);
}

Test(loader, good_plugin_sleeps_for_its_delay)
{
    const char *const settings[] = {"delay=120ms", NULL};
    pb_harness_t *h = open_good(settings);
    plugboard_result_t r;
    int64_t t0 = pb_monotonic_ms();
    cr_assert_eq(pb_harness_deliver(h, "payment.failed", "k", "{}", 1, &r), 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK);
    cr_assert_geq(pb_monotonic_ms() - t0, 120);
    pb_harness_close(&h);
}

Test(loader, good_plugin_records_delivered_events_as_json_lines)
{
    char record[4096];
    tmp_path(record, sizeof record, "record.jsonl");
    pb_plugin_t *p = load_good();
    const pb_raw_setting_t raw[] = {
        {.name = "record", .kind = PB_RAW_STRING, .str = record},
        {.name = "fail_first", .kind = PB_RAW_INT, .i = 1}};
    inst_t in;
    inst_open(&in, pb_plugin_descriptor(p), raw, 2);
    plugboard_result_t r;

    /* attempt 1 is failed on purpose and not recorded; attempt 2 is */
    pb_envelope_t *ev = make_event(PLUGBOARD_EV_CONTACT_UPSERTED);
    cr_assert_eq(inst_deliver(&in, ev, 1, &r), PLUGBOARD_RETRY);
    cr_assert_eq(inst_deliver(&in, ev, 2, &r), PLUGBOARD_OK);
    inst_close(&in);
    pb_plugin_destroy(&p);

    size_t len = 0;
    char *text = pb_test_read_file(record, &len);
    cr_assert_not_null(text);
    char *nl = strchr(text, '\n');
    cr_assert_not_null(nl);
    cr_assert_eq((size_t)(nl - text) + 1, len, "one line: %s", text);
    json_error_t jerr;
    json_t *line = json_loadb(text, len, 0, &jerr);
    free(text);
    cr_assert_not_null(line, "%s", jerr.text);
    cr_assert_str_eq(json_string_value(json_object_get(line, "id")),
                     pb_envelope_id(ev));
    cr_assert_str_eq(json_string_value(json_object_get(line, "type")),
                     PLUGBOARD_EV_CONTACT_UPSERTED);
    cr_assert_str_eq(json_string_value(json_object_get(line, "key")),
                     "ada@example.com");
    cr_assert_eq(json_integer_value(json_object_get(line, "attempt")), 2);
    json_t *data = json_object_get(line, "data");
    cr_assert_eq(json_integer_value(json_object_get(data, "amount")), 1200);
    json_decref(line);
    pb_envelope_destroy(&ev);
}

/* One worker of the concurrency test: 50 events, each failed once. */
typedef struct worker {
    inst_t *in;
    int ok;
} worker_t;

static void *
worker_run(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 50; i++) {
        pb_envelope_t *ev = make_event(PLUGBOARD_EV_PAYMENT_FAILED);
        plugboard_result_t r;
        if (inst_deliver(w->in, ev, 1, &r) == PLUGBOARD_RETRY &&
            inst_deliver(w->in, ev, 2, &r) == PLUGBOARD_OK)
            w->ok++;
        pb_envelope_destroy(&ev);
    }
    return NULL;
}

Test(loader, good_plugin_deliver_is_thread_safe)
{
    /* the descriptor says PLUGBOARD_DELIVER_THREAD_SAFE: one state,
     * several threads, counts and record lines intact */
    char record[4096];
    tmp_path(record, sizeof record, "record.jsonl");
    pb_plugin_t *p = load_good();
    const pb_raw_setting_t raw[] = {
        {.name = "record", .kind = PB_RAW_STRING, .str = record},
        {.name = "fail_first", .kind = PB_RAW_INT, .i = 1},
        {.name = "delay", .kind = PB_RAW_STRING, .str = "1ms"}};
    inst_t in;
    inst_open(&in, pb_plugin_descriptor(p), raw, 3);
    pthread_t th[4];
    worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){.in = &in};
        cr_assert_eq(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].ok, 50);
    }
    inst_close(&in);
    pb_plugin_destroy(&p);

    char *text = pb_test_read_file(record, NULL);
    cr_assert_not_null(text);
    int lines = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        json_error_t jerr;
        json_t *v = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        cr_assert_not_null(v, "line %d: %s", lines + 1, jerr.text);
        cr_assert_eq(json_integer_value(json_object_get(v, "attempt")), 2);
        json_decref(v);
        lines++;
    }
    free(text);
    cr_assert_eq(lines, 200);
}

Test(loader, good_plugin_refuses_an_unwritable_record_file)
{
    char setting[4200];
    snprintf(setting, sizeof setting, "record=%s/no/such/dir/r.jsonl", s_tmp);
    const char *const settings[] = {setting, NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(PLUGIN("good"), NULL, settings, err, sizeof err);
    cr_assert_null(h);
    assert_contains(err, "cannot open record");
    assert_contains(err, "no/such/dir/r.jsonl");
}

Test(loader, good_plugin_webhook_emits_the_described_event)
{
    pb_harness_t *h = open_good(NULL);
    const char body[] =
        "{\"type\": \"payment.failed\", \"key\": \"ada@ex.com\","
        " \"dedupe\": \"evt_1\", \"data\": {\"amount\": 1200,"
        " \"currency\": \"EUR\", \"customer\": "
        "{\"email\": \"ada@ex.com\"}}}";
    int status = 0;
    char *answer = NULL;
    cr_assert_eq(pb_harness_webhook(h, "POST", NULL, body, sizeof body - 1,
                                    &status, &answer),
                 0);
    cr_assert_eq(status, 200, "%s", answer);
    cr_assert_str_eq(answer, "{\"accepted\":1,\"label\":\"x\"}");
    free(answer);

    cr_assert_eq(pb_harness_emitted_count(h), 1);
    const pb_envelope_t *ev = pb_harness_emitted(h, 0);
    cr_assert_str_eq(pb_envelope_type(ev), "payment.failed");
    cr_assert_str_eq(pb_envelope_key(ev), "ada@ex.com");
    cr_assert_str_eq(pb_envelope_dedupe_id(ev), "evt_1");
    cr_assert_str_eq(pb_envelope_source(ev), "good");
    int64_t amount = 0;
    cr_assert(pb_event_int(ev, "amount", &amount));
    cr_assert_eq(amount, 1200);
    const char *email;
    size_t len;
    cr_assert(pb_event_string(ev, "customer.email", &email, &len));
    cr_assert_eq(len, strlen("ada@ex.com"));
    cr_assert_eq(memcmp(email, "ada@ex.com", len), 0);
    pb_harness_close(&h);
}

Test(loader, good_plugin_webhook_takes_an_array_and_all_or_nothing)
{
    const char *const settings[] = {"label=new \"build\"", NULL};
    pb_harness_t *h = open_good(settings);
    const char two[] = "[{\"type\": \"payment.failed\", \"key\": \"a\"},"
                       " {\"type\": \"contact.upserted\", \"key\": \"b\"}]";
    int status = 0;
    char *answer = NULL;
    cr_assert_eq(pb_harness_webhook(h, "POST", NULL, two, sizeof two - 1,
                                    &status, &answer),
                 0);
    cr_assert_eq(status, 200);
    cr_assert_str_eq(answer,
                     "{\"accepted\":2,\"label\":\"new \\\"build\\\"\"}");
    free(answer);
    cr_assert_eq(pb_harness_emitted_count(h), 2);
    cr_assert_str_eq(pb_envelope_key(pb_harness_emitted(h, 1)), "b");
    pb_harness_clear(h);

    /* the second item is bad: nothing at all is emitted */
    const char bad[] = "[{\"type\": \"payment.failed\"},"
                       " {\"type\": \"ticket.created\"}]";
    cr_assert_eq(pb_harness_webhook(h, "POST", NULL, bad, sizeof bad - 1,
                                    &status, &answer),
                 0);
    cr_assert_eq(status, 400);
    assert_contains(answer, "'ticket.created'");
    free(answer);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    pb_harness_close(&h);
}

Test(loader, good_plugin_webhook_answers_400_to_bad_bodies)
{
    pb_harness_t *h = open_good(NULL);
    const char *const bodies[] = {
        "not json",
        "",
        "[]",
        "42",
        "{\"key\": \"no type\"}",
        "{\"type\": 7}",
        "{\"type\": \"payment.failed\", \"data\": [1, 2]}",
        "{\"type\": \"payment.failed\", \"key\": 5}",
        "{\"type\": \"payment.failed\", \"data\": {\"a.b\": 1}}",
        "{\"type\": \"payment.failed\"} trailing",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        int status = 0;
        char *answer = NULL;
        cr_assert_eq(pb_harness_webhook(h, "POST", NULL, bodies[i],
                                        strlen(bodies[i]), &status, &answer),
                     0);
        cr_assert_eq(status, 400, "body %zu '%s' got %d %s", i, bodies[i],
                     status, answer);
        free(answer);
    }
    int status = 0;
    cr_assert_eq(pb_harness_webhook(h, "GET", NULL, "", 0, &status, NULL), 0);
    cr_assert_eq(status, 405);
    cr_assert_eq(pb_harness_emitted_count(h), 0);
    pb_harness_close(&h);
}
