/*
 * xenblock's libxl hotplug plugin (integrations/libxl/plugin, xenblock.so)
 * driven the way libxl drives it: dlopen, the ops table, and one thread
 * that makes every call and polls the ops' descriptors.
 *
 *   plugin --list            one "CASE STORE" line per test
 *   plugin CASE builtin      run one test; exit 0 when every check passed
 *
 * $XENBLOCK_CTEST_PLUGIN is the plugin to load; c-tests/run builds it with
 * a private hotplug lock directory (never the host's). The plugin uses
 * xenblock's built-in client, so the store is always "builtin".
 *
 * plugin_log_thread checks the logger contract of libxl_hotplug_plugin.h:
 * the plugin calls log only from within libxl's calls to it (ctx_new,
 * ctx_free, add_coming, op_start, op_finish, op_free), on the calling
 * thread, although
 * libxenblock logs on its own threads; an op's messages arrive by its
 * op_finish, what is left at ctx_free in ctx_free, and an overflow of the
 * queue gives one "N messages dropped" line.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../integrations/libxl/plugin/libxl_hotplug_plugin.h"

#define XVDA 51712
#define FLOOD_LINES 1000

/* ---- the recording logger -------------------------------------------- */

struct rec {
    const char *inside; /* the entry point the logging thread was in */
    bool on_main;       /* logged on the thread that made the call */
    int level;
    char *msg;
};

static pthread_t main_thread;
/* The entry point this thread is in now; NULL on every other thread. */
static _Thread_local const char *inside;
static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rec *recs;
static size_t nrec, caprec;
static int violations;

static void rec_log(libxl_hotplug_plugin_logger *lg, int level, const char *msg)
{
    (void)lg;
    bool on_main = pthread_equal(pthread_self(), main_thread);
    bool ok = on_main && inside && strcmp(inside, "op_fd") != 0;
    pthread_mutex_lock(&rec_lock);
    if (nrec == caprec) {
        caprec = caprec ? 2 * caprec : 256;
        recs = realloc(recs, caprec * sizeof *recs);
        REQUIRE(recs, "out of memory");
    }
    recs[nrec++] = (struct rec){inside, on_main, level, strdup(msg)};
    if (!ok && violations++ < 5)
        ct_fail(__FILE__, __LINE__,
                "the plugin logged %s, %s: \"%s\"",
                on_main ? "on libxl's thread" : "on a thread of its own",
                inside ? inside : "outside any call of libxl's", msg);
    if (strchr(msg, '\n'))
        ct_fail(__FILE__, __LINE__, "a message with a newline: \"%s\"", msg);
    pthread_mutex_unlock(&rec_lock);
}

static libxl_hotplug_plugin_logger logger = {.log = rec_log};

/* The first record at or after `from` whose message contains `s`; -1. */
static long find_rec(size_t from, const char *s)
{
    long r = -1;
    pthread_mutex_lock(&rec_lock);
    for (size_t i = from; i < nrec && r < 0; i++)
        if (recs[i].msg && strstr(recs[i].msg, s))
            r = (long)i;
    pthread_mutex_unlock(&rec_lock);
    return r;
}

static size_t rec_count(void)
{
    pthread_mutex_lock(&rec_lock);
    size_t n = nrec;
    pthread_mutex_unlock(&rec_lock);
    return n;
}

/* ---- libxl's side: every call into the plugin goes through these ------ */

static const libxl_hotplug_plugin_ops *P;

static int call_ctx_new(void **state, char *err, size_t errlen)
{
    inside = "ctx_new";
    int r = P->ctx_new(&logger, state, err, errlen);
    inside = NULL;
    return r;
}

static void call_ctx_free(void *state)
{
    inside = "ctx_free";
    P->ctx_free(state);
    inside = NULL;
}

/* As libxl, once it has written a backend the plugin will add. */
static void call_add_coming(void *state, const char *be)
{
    REQUIRE(P->add_coming, "xenblock's plugin has no add_coming");
    inside = "add_coming";
    P->add_coming(state, be);
    inside = NULL;
}

static void *call_op_start(void *state, const char *be, int action)
{
    char err[256] = "";
    void *op = NULL;
    inside = "op_start";
    int r = P->op_start(state, be, action, &op, err, sizeof err);
    inside = NULL;
    REQUIRE(r == 0 && op, "op_start %s: %s", be, err);
    return op;
}

static int call_op_fd(void *op)
{
    inside = "op_fd";
    int fd = P->op_fd(op);
    inside = NULL;
    return fd;
}

static int call_op_finish(void *op, const char **msg)
{
    inside = "op_finish";
    int r = P->op_finish(op, msg);
    inside = NULL;
    return r;
}

static void call_op_free(void *op)
{
    inside = "op_free";
    P->op_free(op);
    inside = NULL;
}

static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/*
 * libxl__ev_fd in miniature: poll the ops' descriptors (making no call into
 * the plugin meanwhile) and finish each op once readable. Every op must end
 * with `want`; with `named`, a message naming its backend must have
 * arrived when its op_finish returns (libxenblock logs an add's outcome).
 */
static void drive(void **ops, struct ct_disk *d, int n, int want, bool named)
{
    struct pollfd p[16];
    bool done[16] = {false};
    int left = n;
    REQUIRE(n <= 16, "too many ops");
    for (int i = 0; i < n; i++)
        p[i] = (struct pollfd){.fd = call_op_fd(ops[i]), .events = POLLIN};
    while (left > 0) {
        for (int i = 0; i < n; i++)
            p[i].fd = done[i] ? -1 : p[i].fd;
        int r = poll(p, n, 30000);
        REQUIRE(r > 0, "no op done within 30 s (%d left)", left);
        for (int i = 0; i < n; i++) {
            if (done[i] || !(p[i].revents & POLLIN))
                continue;
            const char *msg = NULL;
            int st = call_op_finish(ops[i], &msg);
            CHECK(st == want, "%s: op_finish gave %d (%s), expected %d", d[i].be, st,
                  msg ? msg : "", want);
            CHECK(!named || find_rec(0, d[i].be_rel) >= 0,
                  "no message naming %s had arrived when its op_finish returned", d[i].be_rel);
            done[i] = true;
            left--;
        }
    }
}

static void write_script(const char *path, const char *body)
{
    FILE *f = fopen(path, "we");
    REQUIRE(f, "create %s: %s", path, strerror(errno));
    fprintf(f, "#!/bin/sh\n%s", body);
    fclose(f);
    REQUIRE(chmod(path, 0755) == 0, "chmod %s: %s", path, strerror(errno));
}

static void case_plugin_log_thread(struct ct_env *e)
{
    const char *so = getenv("XENBLOCK_CTEST_PLUGIN");
    REQUIRE(so && *so == '/', "set XENBLOCK_CTEST_PLUGIN to the plugin's absolute path");
    main_thread = pthread_self();
    void *dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(dl, "dlopen: %s", dlerror());
    P = dlsym(dl, LIBXL_HOTPLUG_PLUGIN_SYMBOL);
    REQUIRE(P, "no %s in %s", LIBXL_HOTPLUG_PLUGIN_SYMBOL, so);
    REQUIRE(P->abi_version == LIBXL_HOTPLUG_PLUGIN_ABI && P->size >= sizeof *P,
            "interface version %u size %u", P->abi_version, P->size);

    void *state = NULL;
    char err[256] = "";
    REQUIRE(call_ctx_new(&state, err, sizeof err) == 0, "ctx_new: %s", err);

    /* 1. Adds of file disks, one that fails, then the removes: each op's
     * lines (libxenblock logs "prepared" on its worker) by its op_finish. */
    char img[3][PATH_MAX];
    struct ct_disk d[4];
    void *ops[4];
    ct_domain_purge(e->xs, 45);
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "plugin-%d.img", i);
        if (i < 3)
            ct_image(e, name, 4 << 20, img[i]);
        d[i] = (struct ct_disk){.domid = 45, .devid = XVDA + 16 * i,
                                .params = i < 3 ? img[i] : "/nonexistent/plugin-test.img",
                                .mode = "w", .absolute = true,
                                .vm = "/vm/c0ffee00-0000-0000-0000-000000000045"};
        ct_disk_add(e->xs, &d[i]);
    }
    /* libxl announces each add when it writes the backend: the plugin
     * warms libxenblock's context (xenblock_ctx_warm), whose worker logs
     * that it built the claims index; that line too reaches libxl only in
     * a call, on libxl's thread. */
    for (int i = 0; i < 4; i++)
        call_add_coming(state, d[i].be);
    /* Until its line arrives (announcing again is harmless: the index is
     * built once), so that the adds below find it built. */
    for (int t = 0; t < 1000 && find_rec(0, "claims index: built ahead") < 0; t++) {
        usleep(10000);
        call_add_coming(state, d[0].be);
    }
    CHECK(find_rec(0, "claims index: built ahead of the first decision") >= 0,
          "10 s after the adds were announced, libxenblock has not built its claims index");
    for (int i = 0; i < 4; i++)
        ops[i] = call_op_start(state, d[i].be, LIBXL_HOTPLUG_PLUGIN_ADD);
    drive(ops, d, 3, LIBXL_HOTPLUG_PLUGIN_DONE, true);
    drive(ops + 3, d + 3, 1, LIBXL_HOTPLUG_PLUGIN_FAILED, true);
    for (int i = 0; i < 4; i++)
        call_op_free(ops[i]);
    for (int i = 0; i < 3; i++) {
        CHECK_NODE(e->xs, d[i].be, "hotplug-status", "connected");
        CHECK(ct_loops_of(img[i]) == 1, "%s has %d loop devices", img[i], ct_loops_of(img[i]));
        ct_disk_close(e->xs, &d[i]);
        ops[i] = call_op_start(state, d[i].be, LIBXL_HOTPLUG_PLUGIN_REMOVE);
    }
    drive(ops, d, 3, LIBXL_HOTPLUG_PLUGIN_DONE, false);
    for (int i = 0; i < 3; i++) {
        call_op_free(ops[i]);
        CHECK(ct_loops_of(img[i]) == 0, "a loop device is left on %s", img[i]);
    }
    for (int i = 0; i < 4; i++)
        ct_disk_destroy(e->xs, &d[i]);
    ct_domain_purge(e->xs, 45);

    /* 2. An op that logs more than the queue holds before libxl calls again
     * (a custom script's output, logged line by line on the worker): the
     * queue's lines, then one "N messages dropped" line, all in op_finish. */
    char script[PATH_MAX + 32], go[PATH_MAX + 32], started[PATH_MAX + 32];
    char body[2 * PATH_MAX + 512];
    snprintf(script, sizeof script, "%s/flood-hotplug", e->dir);
    snprintf(body, sizeof body,
             "[ \"$1\" = add ] || exit 0\n"
             "i=0\n"
             "while [ $i -lt %d ]; do echo \"plugin-test-flood $i\"; i=$((i + 1)); done\n",
             FLOOD_LINES);
    write_script(script, body);
    ct_domain_purge(e->xs, 46);
    struct ct_disk f = {.domid = 46, .devid = XVDA, .params = img[0], .mode = "w",
                        .script = script, .absolute = true,
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000046"};
    ct_disk_add(e->xs, &f);
    void *op = call_op_start(state, f.be, LIBXL_HOTPLUG_PLUGIN_ADD);
    REQUIRE(readable(call_op_fd(op), 30000), "the flooding op not done within 30 s");
    size_t mark = rec_count();
    const char *msg = NULL;
    int st = call_op_finish(op, &msg);
    CHECK(st == LIBXL_HOTPLUG_PLUGIN_DONE, "flooding op: %d (%s)", st, msg ? msg : "");
    size_t end = rec_count();
    long lines = 0, drops = 0;
    unsigned long dropped = 0;
    pthread_mutex_lock(&rec_lock);
    for (size_t i = mark; i < end; i++) {
        if (strstr(recs[i].msg, "plugin-test-flood"))
            lines++;
        if (strstr(recs[i].msg, "messages dropped")) {
            drops++;
            int got = sscanf(recs[i].msg, "xenblock: %lu messages dropped", &dropped);
            CHECK(got == 1, "the drop line: \"%s\"", recs[i].msg);
            CHECK(i == end - 1, "the drop line is not the last one of op_finish");
            CHECK(recs[i].level == LIBXL_HOTPLUG_PLUGIN_LOG_INFO,
                  "the drop line has level %d, the level of the lines dropped is info",
                  recs[i].level);
        }
    }
    pthread_mutex_unlock(&rec_lock);
    CHECK(drops == 1, "%ld \"messages dropped\" lines in op_finish, expected 1", drops);
    CHECK(lines > 0 && lines < FLOOD_LINES, "%ld of the script's %d lines arrived", lines,
          FLOOD_LINES);
    CHECK(dropped > 0 && lines + (long)dropped >= FLOOD_LINES,
          "%ld lines arrived and %lu were dropped, of %d", lines, dropped, FLOOD_LINES);
    call_op_free(op);
    ct_disk_close(e->xs, &f);
    op = call_op_start(state, f.be, LIBXL_HOTPLUG_PLUGIN_REMOVE);
    REQUIRE(readable(call_op_fd(op), 30000), "the remove not done within 30 s");
    CHECK(call_op_finish(op, &msg) == LIBXL_HOTPLUG_PLUGIN_DONE, "remove: %s", msg);
    call_op_free(op);
    ct_disk_destroy(e->xs, &f);
    ct_domain_purge(e->xs, 46);

    /* 3. An op freed unfinished that logs after its op_free, while libxl
     * makes no other call: its line arrives in ctx_free (which waits for
     * the running op). */
    snprintf(script, sizeof script, "%s/late-hotplug", e->dir);
    snprintf(started, sizeof started, "%s/late-started", e->dir);
    snprintf(go, sizeof go, "%s/late-go", e->dir);
    unlink(started);
    unlink(go);
    snprintf(body, sizeof body,
             "[ \"$1\" = add ] || exit 0\n"
             ": > '%s'\n"
             "i=0\n"
             "while [ ! -e '%s' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done\n"
             "echo plugin-test-late\n",
             started, go);
    write_script(script, body);
    ct_domain_purge(e->xs, 47);
    struct ct_disk l = {.domid = 47, .devid = XVDA, .params = img[0], .mode = "w",
                        .script = script, .absolute = true,
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000047"};
    ct_disk_add(e->xs, &l);
    op = call_op_start(state, l.be, LIBXL_HOTPLUG_PLUGIN_ADD);
    for (int i = 0; i < 3000 && access(started, F_OK) != 0; i++)
        usleep(10000);
    REQUIRE(access(started, F_OK) == 0, "the script did not start within 30 s");
    call_op_free(op);
    mark = rec_count();
    FILE *g = fopen(go, "we");
    REQUIRE(g, "create %s: %s", go, strerror(errno));
    fclose(g);
    call_ctx_free(state);
    long late = find_rec(mark, "plugin-test-late");
    CHECK(late >= 0, "the line logged after op_free did not arrive by the end of ctx_free");
    if (late >= 0)
        CHECK(recs[late].inside && strcmp(recs[late].inside, "ctx_free") == 0,
              "the line logged after op_free arrived in %s, expected ctx_free",
              recs[late].inside ? recs[late].inside : "no call");
    ct_disk_destroy(e->xs, &l);
    ct_domain_purge(e->xs, 47);
    unlink(started);
    unlink(go);

    CHECK(violations == 0, "%d of %zu log calls were outside libxl's calls or its thread",
          violations, nrec);
    static const char *const names[] = {"ctx_new", "add_coming", "op_start", "op_finish",
                                        "op_free", "ctx_free"};
    fprintf(stderr, "%zu log calls:", nrec);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n = 0;
        for (size_t i = 0; i < nrec; i++)
            n += recs[i].on_main && recs[i].inside && strcmp(recs[i].inside, names[k]) == 0;
        fprintf(stderr, " %zu in %s,", n, names[k]);
    }
    fprintf(stderr, " %d elsewhere\n", violations);
    CHECK(nrec > FLOOD_LINES / 4, "only %zu messages arrived", nrec);
    for (size_t i = 0; i < nrec; i++)
        free(recs[i].msg);
    free(recs);
    /* As libxl: the plugin is never dlclose()d. */
}

struct test_case {
    const char *name;
    void (*fn)(struct ct_env *);
};

static const struct test_case cases[] = {
    {"plugin_log_thread", case_plugin_log_thread},
};

int main(int argc, char **argv)
{
    setvbuf(stderr, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            printf("%s builtin\n", cases[i].name);
        return 0;
    }
    if (argc != 3 || strcmp(argv[2], "builtin") != 0) {
        fprintf(stderr, "usage: %s --list | %s CASE builtin\n", argv[0], argv[0]);
        return 2;
    }
    const struct test_case *tc = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (strcmp(cases[i].name, argv[1]) == 0)
            tc = &cases[i];
    if (!tc) {
        fprintf(stderr, "unknown case %s\n", argv[1]);
        return 2;
    }
    REQUIRE(geteuid() == 0, "the plugin test needs root (loop devices); it does not skip");
    struct ct_env e;
    ct_env_init(&e, CT_STORE_BUILTIN);
    tc->fn(&e);
    int left = ct_loops_under(e.dir);
    CHECK(left == 0, "%d loop device(s) on the case's images are still attached", left);
    ct_env_fini(&e);
    if (ct_failures) {
        ct_detach_under(e.dir);
        fprintf(stderr, "%s: %d check(s) failed\n", tc->name, ct_failures);
        return 1;
    }
    return 0;
}
