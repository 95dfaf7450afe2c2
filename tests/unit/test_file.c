/*
 * test_file.c - the "file" connector: events appended as JSON lines, open
 * failures naming the path, reopening after log rotation.
 *
 * Drives the real plugins/file.so through the test harness.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

#define S_PLUGIN PB_PLUGIN_DIR "/file.so"

static char *s_dir;
static char s_path[4096];

static void
s_setup(void)
{
    s_dir = pb_test_tempdir("pb-file");
    cr_assert_not_null(s_dir);
    snprintf(s_path, sizeof s_path, "%s/events.jsonl", s_dir);
}

static void
s_teardown(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
    s_dir = NULL;
}

static pb_harness_t *
s_open(const char *path, const char *fsync)
{
    char setting[4200];
    snprintf(setting, sizeof setting, "path=%s", path);
    const char *settings[] = {setting, fsync, NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(S_PLUGIN, "audit", settings, err, sizeof err);
    cr_assert_not_null(h, "open: %s", err);
    return h;
}

static void
s_deliver_ok(pb_harness_t *h, const char *type, const char *json)
{
    plugboard_result_t r;
    cr_assert_eq(pb_harness_deliver(h, type, "ada@example.com", json, 1, &r),
                 0);
    cr_assert_eq(r.outcome, PLUGBOARD_OK, "reason: %s", r.reason);
}

/* The lines of a file, each parsed; caller json_decref's the array. */
static json_t *
s_read_lines(const char *path)
{
    size_t len = 0;
    char *text = pb_test_read_file(path, &len);
    cr_assert_not_null(text, "cannot read %s", path);
    cr_assert(len > 0 && text[len - 1] == '\n', "last line not terminated");
    json_t *lines = json_array();
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *doc = json_loads(line, 0, &jerr);
        cr_assert_not_null(doc, "line is not JSON (%s): %s", jerr.text, line);
        json_array_append_new(lines, doc);
    }
    free(text);
    return lines;
}

TestSuite(file, .init = s_setup, .fini = s_teardown,
          .description = "file connector");

Test(file, appends_each_event_as_one_json_line)
{
    pb_harness_t *h = s_open(s_path, NULL);
    s_deliver_ok(h, "payment.failed",
                 "{\"customer\": {\"email\": \"ada@example.com\"},"
                 " \"amount\": 1250, \"currency\": \"USD\"}");
    s_deliver_ok(h, "contact.upserted",
                 "{\"contact\": {\"email\": \"bob@example.com\","
                 " \"name\": \"Bob \\n Newline\"}}");
    pb_harness_close(&h);

    json_t *lines = s_read_lines(s_path);
    cr_assert_eq(json_array_size(lines), 2);
    json_t *first = json_array_get(lines, 0);
    json_t *second = json_array_get(lines, 1);
    cr_expect_str_eq(json_string_value(json_object_get(first, "type")),
                     "payment.failed");
    cr_expect_str_eq(json_string_value(json_object_get(first, "key")),
                     "ada@example.com");
    cr_expect_not_null(json_string_value(json_object_get(first, "id")));
    json_t *data = json_object_get(first, "data");
    cr_expect_eq(json_integer_value(json_object_get(data, "amount")), 1250);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_object_get(data, "customer"), "email")),
                     "ada@example.com");
    cr_expect_str_eq(json_string_value(json_object_get(second, "type")),
                     "contact.upserted");
    data = json_object_get(json_object_get(second, "data"), "contact");
    cr_expect_str_eq(json_string_value(json_object_get(data, "name")),
                     "Bob \n Newline", "a newline in data stays escaped");
    json_decref(lines);
}

Test(file, appends_to_an_existing_file)
{
    FILE *f = fopen(s_path, "w");
    cr_assert_not_null(f);
    fputs("{\"earlier\": true}\n", f);
    fclose(f);
    pb_harness_t *h = s_open(s_path, "fsync=false");
    s_deliver_ok(h, "ticket.created", "{\"ticket\": {\"id\": \"42\"}}");
    pb_harness_close(&h);
    json_t *lines = s_read_lines(s_path);
    cr_assert_eq(json_array_size(lines), 2);
    cr_expect(
        json_is_true(json_object_get(json_array_get(lines, 0), "earlier")));
    json_decref(lines);
}

Test(file, creates_the_file_with_mode_0640)
{
    mode_t old = umask(022);
    pb_harness_t *h = s_open(s_path, NULL);
    umask(old);
    struct stat st;
    cr_assert_eq(stat(s_path, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0640);
    pb_harness_close(&h);
}

Test(file, open_fails_naming_an_unwritable_path)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/no-such-dir/events.jsonl", s_dir);
    char setting[4300];
    snprintf(setting, sizeof setting, "path=%s", path);
    const char *settings[] = {setting, "mkdir=false", NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(S_PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_null(h);
    cr_expect(strstr(err, path) != NULL, "error names the path: %s", err);
    cr_expect(strstr(err, "No such file") != NULL, "error: %s", err);

    /* a directory is not a file to append to */
    snprintf(setting, sizeof setting, "path=%s", s_dir);
    h = pb_harness_open(S_PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_null(h);
    cr_expect(strstr(err, s_dir) != NULL, "error names the path: %s", err);
}

Test(file, missing_directories_are_created_by_default)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/a/b/events.jsonl", s_dir);
    char setting[4300];
    snprintf(setting, sizeof setting, "path=%s", path);
    const char *settings[] = {setting, NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(S_PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_not_null(h, "open: %s", err);
    plugboard_result_t res;
    cr_assert_eq(pb_harness_deliver(h, "payment.failed", "k", "{\"amount\":1}",
                                    1, &res), 0);
    cr_expect_eq(res.outcome, PLUGBOARD_OK);
    pb_harness_close(&h);
    struct stat st;
    cr_expect_eq(stat(path, &st), 0, "the file exists under new directories");
}

Test(file, path_is_required)
{
    const char *settings[] = {NULL};
    char err[512] = "";
    pb_harness_t *h =
        pb_harness_open(S_PLUGIN, NULL, settings, err, sizeof err);
    cr_assert_null(h);
    cr_expect(strstr(err, "path") != NULL, "error: %s", err);
}

Test(file, reopens_the_path_after_rotation)
{
    pb_harness_t *h = s_open(s_path, NULL);
    s_deliver_ok(h, "payment.succeeded", "{\"amount\": 1}");
    char rotated[4200];
    snprintf(rotated, sizeof rotated, "%s.1", s_path);
    cr_assert_eq(rename(s_path, rotated), 0);
    s_deliver_ok(h, "payment.succeeded", "{\"amount\": 2}");
    pb_harness_close(&h);

    json_t *old = s_read_lines(rotated);
    json_t *cur = s_read_lines(s_path);
    cr_expect_eq(json_array_size(old), 1);
    cr_assert_eq(json_array_size(cur), 1);
    json_t *data = json_object_get(json_array_get(cur, 0), "data");
    cr_expect_eq(json_integer_value(json_object_get(data, "amount")), 2);
    json_decref(old);
    json_decref(cur);
}

Test(file, consumes_every_event_type)
{
    pb_harness_t *h = s_open(s_path, NULL);
    const plugboard_connector_t *d = pb_harness_descriptor(h);
    cr_expect_str_eq(d->name, "file");
    cr_assert_not_null(d->consumes);
    cr_expect_str_eq(d->consumes[0], PLUGBOARD_EV_ANY);
    cr_expect_null(d->consumes[1]);
    cr_expect_eq(d->flags, 0u);
    pb_harness_close(&h);
}
