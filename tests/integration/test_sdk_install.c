/*
 * test_sdk_install.c - the SDK from a connector author's side of the
 * fence: install this build into a temporary DESTDIR (cmake --install, as
 * `make install` does), then, using only what was installed:
 *   - scaffold a connector outside the tree with the installed
 *     `plugboard new-connector`, build it through the CMake package and
 *     through pkg-config, run its own tests (its Criterion test on the
 *     installed harness, and plugin-check), and have the installed host
 *     load it and route an event through it;
 *   - build and test the example connector the same way.
 * The tests run tools (cmake, ctest, the installed binary) as a user
 * would; everything lives in a temporary directory and every process
 * started is stopped.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "hostproc.h"

#define CONNECTOR "acme-notes"

static char *s_dir;         /* everything of one test */
static char s_stage[4200];  /* DESTDIR */
static char s_prefix[4400]; /* DESTDIR + install prefix */
static char s_bin[4600];    /* the installed plugboard */

/* Run argv (NULL-terminated) in cwd with extra environment entries,
 * output in *out (caller frees), killed after timeout_s.  Returns the exit
 * status, or -1 when killed or it died of a signal. */
static int
run(const char *cwd, const char *const *env, int timeout_s, char **out,
    const char *const *argv)
{
    char log[4300];
    snprintf(log, sizeof log, "%s/run.log", s_dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        /* Criterion's sandbox marks this process a test worker: a
         * Criterion test run from here (the scaffold's) must not be one */
        unsetenv("BXFI_MAP");
        unsetenv("GMON_OUT_PREFIX");
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        if (chdir(cwd) != 0)
            _exit(126);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    cr_assert_gt(pid, 0);
    int status = 0;
    time_t end = time(NULL) + timeout_s;
    pid_t got;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && time(NULL) < end)
        usleep(20 * 1000);
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        status = -1;
    }
    char *text = pb_test_read_file(log, NULL);
    if (out)
        *out = text ? text : strdup("");
    else
        free(text);
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* run() that must succeed; the output is returned (caller frees). */
static char *
run_ok(const char *cwd, const char *const *env, const char *const *argv)
{
    char *out = NULL;
    int rc = run(cwd, env, 240, &out, argv);
    cr_assert_eq(rc, 0, "'%s %s' failed (exit %d):\n%s", argv[0],
                 argv[1] ? argv[1] : "", rc, out);
    return out;
}

static void
install(void)
{
    s_dir = pb_test_tempdir("pb-sdk");
    cr_assert_not_null(s_dir);
    snprintf(s_stage, sizeof s_stage, "%s/stage", s_dir);
    snprintf(s_prefix, sizeof s_prefix, "%s%s", s_stage, PB_INSTALL_PREFIX);
    snprintf(s_bin, sizeof s_bin, "%s/%s/plugboard", s_prefix,
             PB_INSTALL_BINDIR);
    char destdir[4300];
    snprintf(destdir, sizeof destdir, "DESTDIR=%s", s_stage);
    const char *env[] = {destdir, NULL};
    const char *argv[] = {PB_CMAKE_COMMAND, "--install", PB_BINARY_DIR, NULL};
    free(run_ok(s_dir, env, argv));
}

static void
cleanup(void)
{
    pb_test_rmtree(s_dir);
    free(s_dir);
}

static void
expect_installed(const char *rel)
{
    char path[4700];
    snprintf(path, sizeof path, "%s/%s", s_prefix, rel);
    cr_expect_eq(access(path, R_OK), 0, "not installed: %s", rel);
}

TestSuite(sdk_install, .init = install, .fini = cleanup, .timeout = 600);

Test(sdk_install, installs_binary_sdk_connectors_and_docs)
{
    static const char *const files[] = {
        PB_INSTALL_BINDIR "/plugboard",
        PB_INSTALL_INCLUDEDIR "/plugboard/plugboard.h",
        PB_INSTALL_INCLUDEDIR "/plugboard/helpers.h",
        PB_INSTALL_INCLUDEDIR "/plugboard/harness.h",
        PB_INSTALL_LIBDIR "/libplugboard-sdk.a",
        PB_INSTALL_LIBDIR "/libplugboard-harness.a",
        PB_INSTALL_LIBDIR "/pkgconfig/plugboard-sdk.pc",
        PB_INSTALL_LIBDIR "/pkgconfig/plugboard-harness.pc",
        PB_INSTALL_LIBDIR "/cmake/plugboard/plugboardConfig.cmake",
        PB_INSTALL_LIBDIR "/cmake/plugboard/plugboardConfigVersion.cmake",
        PB_INSTALL_LIBDIR "/plugboard/plugins/file.so",
        PB_INSTALL_LIBDIR "/plugboard/plugins/stripe.so",
        PB_INSTALL_LIBDIR "/plugboard/plugins/maildir.so",
        PB_INSTALL_DOCDIR "/sdk.md",
        PB_INSTALL_DOCDIR "/events.md",
        PB_INSTALL_DOCDIR "/examples/summary/summary.c",
        NULL};
    for (size_t i = 0; files[i]; i++)
        expect_installed(files[i]);

    /* pkg-config answers from the staged tree (the .pc is relocatable) */
    char pcpath[4700];
    snprintf(pcpath, sizeof pcpath, "PKG_CONFIG_PATH=%s/%s/pkgconfig", s_prefix,
             PB_INSTALL_LIBDIR);
    const char *env[] = {pcpath, NULL};
    const char *version[] = {"pkg-config", "--modversion", "plugboard-sdk",
                             NULL};
    char *out = run_ok(s_dir, env, version);
    cr_expect(strncmp(out, PB_VERSION, strlen(PB_VERSION)) == 0, "%s", out);
    free(out);
    const char *libs[] = {"pkg-config", "--cflags", "--libs",
                          "plugboard-harness", NULL};
    out = run_ok(s_dir, env, libs);
    cr_expect(strstr(out, "-lplugboard-harness"), "%s", out);
    cr_expect(strstr(out, s_stage), "paths point into DESTDIR:\n%s", out);
    free(out);

    /* the installed binary: help for its SDK commands, and it describes
     * an installed connector */
    const char *help[] = {s_bin, "new-connector", "--help", NULL};
    out = run_ok(s_dir, NULL, help);
    cr_expect(strstr(out, "usage: plugboard new-connector"), "%s", out);
    free(out);
    char plugins[4700];
    snprintf(plugins, sizeof plugins, "%s/%s/plugboard/plugins", s_prefix,
             PB_INSTALL_LIBDIR);
    const char *describe[] = {s_bin, "describe", "file", "-p", plugins, NULL};
    out = run_ok(s_dir, NULL, describe);
    cr_expect(strstr(out, "file 1.0.0"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------------ */
/* Scaffold -> build (CMake, pkg-config) -> test -> check -> host      */
/* ------------------------------------------------------------------ */

static void
scaffold(char *proj, size_t len)
{
    snprintf(proj, len, "%s/work/" CONNECTOR, s_dir);
    const char *argv[] = {s_bin, "new-connector", CONNECTOR, proj, NULL};
    char *out = run_ok(s_dir, NULL, argv);
    cr_expect(strstr(out, "created "), "%s", out);
    free(out);
    /* a second run refuses to overwrite the author's files */
    cr_expect_eq(run(s_dir, NULL, 30, &out, argv), 1, "%s", out);
    cr_expect(strstr(out, "refusing to overwrite"), "%s", out);
    free(out);
}

/* Configure, build and ctest proj in build dir b; returns the configure
 * output (caller frees). */
static char *
build_and_test(const char *proj, const char *b, const char *const *env,
               const char *extra)
{
    const char *configure[] = {PB_CMAKE_COMMAND,           "-S",  proj, "-B", b,
                               "-DCMAKE_BUILD_TYPE=Debug", extra, NULL};
    char *conf = run_ok(s_dir, env, configure);
    const char *build[] = {PB_CMAKE_COMMAND, "--build", b, NULL};
    free(run_ok(s_dir, env, build));
    const char *test[] = {PB_CTEST_COMMAND, "--output-on-failure", NULL};
    char *out = run_ok(b, env, test);
    cr_expect(strstr(out, "100% tests passed"), "%s", out);
    cr_expect(strstr(out, "plugin_check_"), "ran plugin-check:\n%s", out);
    free(out);
    return conf;
}

static const char s_host_config[] =
    "plugboard = {\n"
    "  data_dir = \"%s/var\";\n"
    "  plugin_path = [ \"%s\", \"" PB_TEST_PLUGIN_DIR "\" ];\n"
    "  http = { listen = \"127.0.0.1:%d\"; };\n"
    "  drain_timeout = \"5s\";\n"
    "};\n"
    "connectors = (\n"
    "  { name = \"shop\"; plugin = \"good\"; },\n"
    "  { name = \"notes\"; plugin = \"" CONNECTOR "\"; },\n"
    "  { name = \"audit\"; plugin = \"good\";\n"
    "    settings = { record = \"%s/audit.jsonl\"; }; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"contacts-to-notes\"; from = \"shop\";\n"
    "    when = \"contact.upserted\"; to = [ \"notes\" ];\n"
    "    why = \"sales re-typed every new contact into their notes\";\n"
    "    owner = \"sales@example.com\"; notify = \"audit\"; }\n"
    ");\n";

static bool
healthy(int port)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
    CURL *c = curl_easy_init();
    FILE *devnull = fopen("/dev/null", "w");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 500L);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, devnull);
    long code = 0;
    bool ok = curl_easy_perform(c) == CURLE_OK &&
              curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
              code == 200;
    curl_easy_cleanup(c);
    fclose(devnull);
    return ok;
}

/* The dead-letter notice for the event sent to notes, or NULL. */
static json_t *
dead_notice(const char *path)
{
    char *text = pb_test_read_file(path, NULL);
    json_t *found = NULL;
    for (char *line = text ? strtok(text, "\n") : NULL; line && !found;
         line = strtok(NULL, "\n")) {
        json_t *ev = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (type && strcmp(type, "plugboard.delivery.dead") == 0)
            found = json_incref(json_object_get(ev, "data"));
        json_decref(ev);
    }
    free(text);
    return found;
}

/* The installed host loads the scaffolded connector and routes an event
 * to it: the stub's answer (REJECT, "not supported yet") comes back as a
 * dead letter naming it, delivered to the route's notify connector. */
static void
route_through(const char *plugin_dir)
{
    char cfg[4300], log[4300], audit[4300];
    snprintf(cfg, sizeof cfg, "%s/host.cfg", s_dir);
    snprintf(log, sizeof log, "%s/host.log", s_dir);
    snprintf(audit, sizeof audit, "%s/audit.jsonl", s_dir);
    int port = pb_test_free_port();
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, s_host_config, s_dir, plugin_dir, port, s_dir);
    fclose(f);

    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (chdir(s_dir) != 0)
            _exit(126);
        execl(s_bin, s_bin, "run", "-c", cfg, (char *)NULL);
        _exit(127);
    }
    cr_assert_gt(pid, 0);
    bool up = false;
    for (int i = 0; i < 200 && !up; i++) {
        up = healthy(port);
        if (!up)
            usleep(50 * 1000);
    }
    json_t *notice = NULL;
    int status = 0;
    if (up) {
        const char body[] =
            "{\"type\":\"contact.upserted\",\"key\":\"ada@example.com\","
            "\"data\":{\"contact\":{\"email\":\"ada@example.com\","
            "\"source\":\"shop\"}}}";
        const char *headers[] = {"Content-Type: application/json", NULL};
        status = pb_http_post(port, "/hooks/shop", headers, body,
                              sizeof body - 1, NULL);
        for (int i = 0; i < 200 && !notice; i++) {
            notice = dead_notice(audit);
            if (!notice)
                usleep(50 * 1000);
        }
    }
    kill(pid, SIGTERM);
    int wstatus = 0;
    for (int i = 0; i < 600 && waitpid(pid, &wstatus, WNOHANG) == 0; i++)
        usleep(50 * 1000);
    if (waitpid(pid, &wstatus, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &wstatus, 0);
    }
    char *host_log = pb_test_read_file(log, NULL);
    cr_expect(up, "the installed host did not start:\n%s", host_log);
    cr_expect_eq(status, 200, "webhook answered %d:\n%s", status, host_log);
    cr_expect(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0,
              "host did not stop cleanly:\n%s", host_log);
    cr_assert_not_null(notice, "no dead letter reached 'audit':\n%s", host_log);
    free(host_log);
    cr_expect_str_eq(json_string_value(json_object_get(notice, "destination")),
                     "notes");
    cr_expect_str_eq(json_string_value(json_object_get(notice, "reason")),
                     "rejected");
    const char *err = json_string_value(json_object_get(notice, "last_error"));
    cr_expect(err && strstr(err, CONNECTOR ": delivering 'contact.upserted' "
                                           "is not supported yet"),
              "last_error: %s", err ? err : "(none)");
    json_decref(notice);
}

/* The build docs/sdk.md gives for authors without CMake: one cc line with
 * `pkg-config --cflags --libs plugboard-sdk`; plugin-check passes the
 * result. */
static void
build_with_cc(const char *proj, const char *const *env)
{
    const char *flags[] = {"pkg-config", "--cflags", "--libs", "plugboard-sdk",
                           NULL};
    char *pc = run_ok(s_dir, env, flags);
    char so[4600], src[4600], cfg[4600];
    snprintf(so, sizeof so, "%s/cc-" CONNECTOR ".so", proj);
    snprintf(src, sizeof src, "%s/" CONNECTOR ".c", proj);
    snprintf(cfg, sizeof cfg, "%s/plugin-check.cfg", proj);
    const char *argv[64] = {"cc", "-shared", "-fPIC", "-fvisibility=hidden",
                            "-o", so,        src};
    size_t n = 7;
    for (char *w = strtok(pc, " \n"); w && n + 1 < 64; w = strtok(NULL, " \n"))
        argv[n++] = w;
    argv[n] = NULL;
    free(run_ok(proj, NULL, argv));
    free(pc);
    cr_assert_eq(access(so, R_OK), 0, "cc wrote no %s", so);
    const char *check[] = {s_bin, "plugin-check", so, "--settings", cfg, NULL};
    char *out = run_ok(proj, NULL, check);
    cr_expect(strstr(out, "\nPASS: "), "%s", out);
    free(out);
}

Test(sdk_install, scaffold_builds_tests_checks_and_runs_on_installed_sdk)
{
    char proj[4400], b1[4500], b2[4500];
    scaffold(proj, sizeof proj);

    /* the CMake package: find_package(plugboard) */
    snprintf(b1, sizeof b1, "%s/build-cmake", proj);
    char prefix_path[4500];
    snprintf(prefix_path, sizeof prefix_path, "-DCMAKE_PREFIX_PATH=%s",
             s_prefix);
    char *conf = build_and_test(proj, b1, NULL, prefix_path);
    cr_expect(strstr(conf, "CMake package in"), "%s", conf);
    cr_expect(strstr(conf, s_stage), "found the staged SDK:\n%s", conf);
    free(conf);

    /* pkg-config: the package turned off, plugboard-sdk.pc instead */
    snprintf(b2, sizeof b2, "%s/build-pkgconfig", proj);
    char pcpath[4700];
    snprintf(pcpath, sizeof pcpath, "PKG_CONFIG_PATH=%s/%s/pkgconfig", s_prefix,
             PB_INSTALL_LIBDIR);
    const char *env[] = {pcpath, NULL};
    conf = build_and_test(proj, b2, env,
                          "-DCMAKE_DISABLE_FIND_PACKAGE_plugboard=ON");
    cr_expect(strstr(conf, "pkg-config in"), "%s", conf);
    cr_expect(strstr(conf, s_stage), "found the staged SDK:\n%s", conf);
    free(conf);
    /* pkg-config alone, no CMake */
    build_with_cc(proj, env);

    route_through(b1);
}

Test(sdk_install, example_connector_builds_and_passes_on_installed_sdk)
{
    char proj[4500], b[4600], prefix_path[4500];
    snprintf(proj, sizeof proj, "%s/%s/examples/summary", s_prefix,
             PB_INSTALL_DOCDIR);
    snprintf(b, sizeof b, "%s/build-summary", s_dir);
    snprintf(prefix_path, sizeof prefix_path, "-DCMAKE_PREFIX_PATH=%s",
             s_prefix);
    free(build_and_test(proj, b, NULL, prefix_path));
}
