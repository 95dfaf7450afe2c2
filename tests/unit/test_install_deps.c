/*
 * test_install_deps.c - scripts/install-deps, the set-up `make demo`,
 * `make run` and `make test` run first.
 *
 * The script runs under bash with PATH holding only stand-ins for
 * dpkg-query, id, apt-get and sudo, written into a temporary directory:
 * each records how it was called in a log, so the tests assert what the
 * script would have run on a fresh machine (nothing when nothing is
 * missing; apt-get update, then install of exactly the missing packages;
 * sudo only when not root).  The last test checks the --test list against
 * this machine: the Debian package that owns every pkg-config module the
 * CMake files require, and every tool the tests and the demo run, must be
 * on it (or be what a listed package depends on).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SCRIPT PB_SOURCE_DIR "/scripts/install-deps"
#define OUT_MAX 65536

static char s_dir[] = "/tmp/pb-install-deps-XXXXXX";
static char s_bin[sizeof s_dir + 8];
static char s_log[sizeof s_dir + 8];

static void
s_write_tool(const char *name, const char *body)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", s_bin, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fprintf(f, "#!/bin/sh\n%s", body);
    fclose(f);
    cr_assert_eq(chmod(path, 0755), 0);
}

/* dpkg-query -W -f='${Status}' PKG: installed unless PKG is in $MISSING */
static const char s_dpkg_query[] =
    "for a; do pkg=$a; done\n"
    "case \" $MISSING \" in *\" $pkg \"*) exit 1 ;; esac\n"
    "printf 'install ok installed'\n";
static const char s_id[] = "echo \"$FAKE_UID\"\n";
static const char s_apt_get[] =
    "echo \"apt-get $*\" >>\"$LOG\"\n"
    "[ \"$1\" = update ] && exit \"${UPDATE_RC:-0}\"\n"
    "exit 0\n";
static const char s_sudo[] = "echo \"sudo $*\" >>\"$LOG\"\nexec \"$@\"\n";

static void
s_setup(void)
{
    cr_assert_not_null(mkdtemp(s_dir));
    snprintf(s_bin, sizeof s_bin, "%s/bin", s_dir);
    snprintf(s_log, sizeof s_log, "%s/log", s_dir);
    cr_assert_eq(mkdir(s_bin, 0700), 0);
    s_write_tool("dpkg-query", s_dpkg_query);
    s_write_tool("id", s_id);
    s_write_tool("apt-get", s_apt_get);
}

static int
s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void
s_teardown(void)
{
    nftw(s_dir, s_rm, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(install_deps, .init = s_setup, .fini = s_teardown);

typedef struct run {
    int rc;
    char out[OUT_MAX]; /* stdout */
    char err[OUT_MAX]; /* stderr */
} run_t;

static void
s_slurp(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    buf[fread(buf, 1, len - 1, f)] = '\0';
    fclose(f);
}

/* Run argv with envp (NULL: this process's environment), capturing its
 * stdout and stderr. */
static void
s_run(const char *const *argv, char *const *envp, run_t *r)
{
    char out[sizeof s_dir + 8], err[sizeof s_dir + 8];
    snprintf(out, sizeof out, "%s/out", s_dir);
    snprintf(err, sizeof err, "%s/err", s_dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int in = open("/dev/null", O_RDONLY);
        if (o < 0 || e < 0 || in < 0)
            _exit(126);
        dup2(in, STDIN_FILENO);
        dup2(o, STDOUT_FILENO);
        dup2(e, STDERR_FILENO);
        if (envp)
            execve(argv[0], (char *const *)argv, envp);
        else
            execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    r->rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    s_slurp(out, r->out, sizeof r->out);
    s_slurp(err, r->err, sizeof r->err);
}

/* install-deps MODE with only the stand-ins on PATH; extra is one more
 * NAME=VALUE for the stand-ins, or NULL. */
static void
s_install(const char *mode, const char *missing, const char *uid,
          const char *extra, run_t *r)
{
    char path[sizeof s_bin + 8], log[sizeof s_log + 8], miss[512], fake_uid[32];
    snprintf(path, sizeof path, "PATH=%s", s_bin);
    snprintf(log, sizeof log, "LOG=%s", s_log);
    snprintf(miss, sizeof miss, "MISSING=%s", missing);
    snprintf(fake_uid, sizeof fake_uid, "FAKE_UID=%s", uid);
    char *const envp[] = {path,     log,           miss, fake_uid,
                          "LANG=C", (char *)extra, NULL};
    const char *argv[] = {"/bin/bash", SCRIPT, mode, NULL};
    s_run(argv, envp, r);
}

static const char *
s_calls(void)
{
    static char buf[OUT_MAX];
    s_slurp(s_log, buf, sizeof buf);
    return buf;
}

Test(install_deps, nothing_missing_runs_no_apt_get_and_says_nothing)
{
    run_t r;
    s_install("--test", "", "1000", NULL, &r);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_eq(s_calls(), "");
    cr_assert_str_eq(r.out, "");
    cr_assert_str_eq(r.err, "");
}

Test(install_deps, as_root_updates_then_installs_only_what_is_missing)
{
    run_t r;
    s_install("--test", "graphviz python3-aiosmtpd", "0", NULL, &r);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_eq(s_calls(),
                     "apt-get update -qq\n"
                     "apt-get install -y -qq --no-install-recommends "
                     "python3-aiosmtpd graphviz\n");
    cr_assert_str_eq(r.out,
                     "install-deps: installing python3-aiosmtpd graphviz\n");
}

Test(install_deps, not_root_runs_apt_get_through_sudo)
{
    s_write_tool("sudo", s_sudo);
    run_t r;
    s_install("--build", "libmicrohttpd-dev", "1000", NULL, &r);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_eq(s_calls(),
                     "sudo apt-get update -qq\n"
                     "apt-get update -qq\n"
                     "sudo apt-get install -y -qq --no-install-recommends "
                     "libmicrohttpd-dev\n"
                     "apt-get install -y -qq --no-install-recommends "
                     "libmicrohttpd-dev\n");
}

Test(install_deps, root_with_sudo_present_does_not_use_it)
{
    s_write_tool("sudo", s_sudo);
    run_t r;
    s_install("--build", "cmake", "0", NULL, &r);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_eq(s_calls(),
                     "apt-get update -qq\n"
                     "apt-get install -y -qq --no-install-recommends "
                     "cmake\n");
}

Test(install_deps, not_root_without_sudo_names_what_is_missing)
{
    run_t r;
    s_install("--test", "prometheus", "1000", NULL, &r);
    cr_assert_eq(r.rc, 1);
    cr_assert_str_eq(s_calls(), "");
    cr_assert(strstr(r.err, "missing packages: prometheus"), "%s", r.err);
    cr_assert(strstr(r.err, "not root and no sudo"), "%s", r.err);
}

Test(install_deps, failed_update_installs_nothing_and_fails)
{
    run_t r;
    s_install("--build", "gcc", "0", "UPDATE_RC=100", &r);
    cr_assert_neq(r.rc, 0);
    cr_assert_str_eq(s_calls(), "apt-get update -qq\n");
}

Test(install_deps, build_mode_leaves_test_only_packages_alone)
{
    run_t r;
    s_install("--build", "python3-aiosmtpd prometheus", "0", NULL, &r);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_eq(s_calls(), "");
}

Test(install_deps, unknown_option_is_a_usage_error)
{
    run_t r;
    s_install("--everything", "", "0", NULL, &r);
    cr_assert_eq(r.rc, 2);
    cr_assert(strstr(r.err, "usage: scripts/install-deps"), "%s", r.err);
    cr_assert_str_eq(s_calls(), "");
}

/* ------------------------------------------------------------------ */
/* The --test list against what the build and the tests really use      */
/* ------------------------------------------------------------------ */

static char s_list[OUT_MAX];    /* " pkg pkg ... " */
static char s_depends[OUT_MAX]; /* what the listed packages depend on */

static bool
s_word_in(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        bool start = p == text || strchr(" ,|\n", p[-1]);
        bool end = strchr(" ,|:(\n", p[n]) != NULL; /* p[n] may be NUL */
        if (start && end)
            return true;
    }
    return false;
}

/* The package that owns path, by dpkg-query -S; "" when none. */
static void
s_owner(const char *path, char *pkg, size_t len)
{
    const char *argv[] = {"dpkg-query", "-S", path, NULL};
    static run_t r;
    s_run(argv, NULL, &r);
    pkg[0] = '\0';
    if (r.rc != 0)
        return;
    size_t n = strcspn(r.out, ":");
    snprintf(pkg, len, "%.*s", (int)n, r.out);
}

static void
s_assert_listed(const char *what, const char *path)
{
    char pkg[128];
    s_owner(path, pkg, sizeof pkg);
    cr_assert_neq(pkg[0], '\0', "no Debian package owns %s (%s)", path, what);
    cr_assert(s_word_in(s_list, pkg) || s_word_in(s_depends, pkg),
              "%s (%s) comes from the Debian package '%s', which "
              "install-deps --test does not install:%s",
              what, path, pkg, s_list);
}

static void
s_load_list(void)
{
    const char *argv[] = {"/bin/bash", SCRIPT, "--test", "--list", NULL};
    static run_t r;
    s_run(argv, NULL, &r);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    char *p = s_list;
    *p++ = ' ';
    for (char *tok = strtok(r.out, "\n"); tok; tok = strtok(NULL, "\n"))
        p += snprintf(p, sizeof s_list - (size_t)(p - s_list) - 1, "%s ", tok);

    /* one dpkg-query for what every listed package depends on */
    const char *q[64] = {"dpkg-query", "-W", "-f=${Pre-Depends}, ${Depends}\n"};
    size_t n = 3;
    char copy[OUT_MAX];
    snprintf(copy, sizeof copy, "%s", s_list);
    for (char *tok = strtok(copy, " "); tok && n < 63; tok = strtok(NULL, " "))
        q[n++] = tok;
    q[n] = NULL;
    s_run(q, NULL, &r);
    snprintf(s_depends, sizeof s_depends, "%s", r.out);
}

/* The modules of every pkg_check_modules(... IMPORTED_TARGET m ...) in
 * file, appended to mods (space separated). */
static void
s_cmake_modules(const char *file, char *mods, size_t len)
{
    FILE *f = fopen(file, "r");
    cr_assert_not_null(f, "cannot read %s", file);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "pkg_check_modules(");
        if (p == NULL || (p = strstr(p, "IMPORTED_TARGET")) == NULL)
            continue;
        p += strlen("IMPORTED_TARGET");
        char mod[64];
        while (sscanf(p, " %63[A-Za-z0-9_.+-]", mod) == 1) {
            size_t used = strlen(mods);
            snprintf(mods + used, len - used, "%s ", mod);
            p = strstr(p, mod) + strlen(mod);
        }
    }
    fclose(f);
}

Test(install_deps, test_list_covers_every_library_and_tool_in_use)
{
    s_load_list();

    char mods[1024] = "";
    s_cmake_modules(PB_SOURCE_DIR "/CMakeLists.txt", mods, sizeof mods);
    s_cmake_modules(PB_SOURCE_DIR "/tests/CMakeLists.txt", mods, sizeof mods);
    s_cmake_modules(PB_SOURCE_DIR "/sdk/CMakeLists.txt", mods, sizeof mods);
    cr_assert(s_word_in(mods, "criterion") && s_word_in(mods, "libzmq"),
              "the CMake files were not read: %s", mods);
    for (char *m = strtok(mods, " "); m; m = strtok(NULL, " ")) {
        const char *argv[] = {"pkg-config", "--variable=pcfiledir", m, NULL};
        static run_t r;
        s_run(argv, NULL, &r);
        cr_assert_eq(r.rc, 0, "pkg-config does not know '%s'", m);
        r.out[strcspn(r.out, "\n")] = '\0';
        char pc[1024];
        snprintf(pc, sizeof pc, "%.900s/%s.pc", r.out, m);
        s_assert_listed(m, pc);
    }

    /* the tools the build, the tests and `make demo` run */
    static const char *const tools[][2] = {
        {"the compiler", "/usr/bin/gcc"},
        {"the C library headers", "/usr/include/stdio.h"},
        {"make", "/usr/bin/make"},
        {"cmake and ctest", "/usr/bin/cmake"},
        {"pkg-config", "/usr/bin/pkg-config"},
        {"the demo and the stand-ins", "/usr/bin/python3"},
        {"the SMTP stand-in", "/usr/lib/python3/dist-packages/aiosmtpd"},
        {"promtool check metrics", "/usr/bin/promtool"},
        {"plugboard map --format svg", "/usr/bin/dot"},
    };
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++)
        s_assert_listed(tools[i][0], tools[i][1]);
    /* /usr/bin/python3 is python3-minimal's, which lacks most of the
     * standard library the demo imports (email, urllib): python3 has it */
    cr_assert(s_word_in(s_list, "python3"), "python3 is not listed:%s", s_list);
}
