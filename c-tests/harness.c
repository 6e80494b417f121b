/*
 * The xenblock C harness: drives libxenblock.so the way libxl would around
 * a guest disk, through include/xenblock.h only.
 *
 *   harness --list            one "CASE STORE" line per test
 *   harness CASE STORE        run one test; exit 0 when every check passed
 *
 * STORE is "builtin" (config.store = NULL: xenblock's own client, reaching
 * the xenstored named by $XENSTORED_PATH), "libxs" (a xenblock_store_ops over
 * a libxenstore handle, as libxl would wire its ctx->xsh) or "none" (cases
 * that need no xenstore). $XENBLOCK_CTEST_DIR is a scratch directory for
 * images and the hotplug lock. c-tests/run drives all of this.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fuse.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Custom hotplug scripts (a `script` whose basename is not `block`) are not
 * run in-process yet: prepare and release answer XENBLOCK_UNSUPPORTED. When
 * they are, set these to XENBLOCK_OK and CUSTOM_SCRIPT_CONNECTS to 1: the
 * test script below then writes hotplug-status connected itself.
 */
#define CUSTOM_SCRIPT_PREPARE_STATUS XENBLOCK_OK
#define CUSTOM_SCRIPT_RELEASE_STATUS XENBLOCK_OK
#define CUSTOM_SCRIPT_CONNECTS 1

#define XVDA 51712

/* The error nodes after a failed prepare: status, and hotplug-error equal
 * to the context's last error. */
static void check_failure_nodes(struct ct_env *e, xenblock_ctx *ctx, const struct ct_disk *d,
                                const char *want_status)
{
    const char *last = xenblock_ctx_last_error(ctx);
    REQUIRE(last != NULL, "xenblock_ctx_last_error returned NULL");
    CHECK(last[0] != 0, "no message after a failed prepare of %s", d->be);
    CHECK_NODE(e->xs, d->be, "hotplug-status", want_status);
    CHECK_NODE(e->xs, d->be, "hotplug-error", last);
    CHECK_NODE(e->xs, d->be, "physical-device", NULL);
    CHECK_NODE(e->xs, d->be, "node", NULL);
}

/* The nodes after a successful prepare of a file: a loop device on `file`. */
static void check_file_connected(struct ct_env *e, const struct ct_disk *d, const char *file,
                                 bool read_only, char *node_out, size_t n)
{
    char dev[32], sys[PATH_MAX];
    node_out[0] = 0;
    CHECK_NODE(e->xs, d->be, "hotplug-status", "connected");
    char *node = ct_read(e->xs, "%s/node", d->be);
    REQUIRE(node, "%s/node is absent after prepare", d->be);
    snprintf(node_out, n, "%s", node);
    struct stat st;
    CHECK(strncmp(node, "/dev/loop", 9) == 0, "node is %s", node);
    CHECK(stat(node, &st) == 0 && S_ISBLK(st.st_mode), "%s is not a block device", node);
    CHECK(ct_loop_backed_by(node, file), "%s is not backed by %s", node, file);
    ct_devnum_hex(node, dev, sizeof dev);
    CHECK_NODE(e->xs, d->be, "physical-device", dev);
    CHECK_NODE(e->xs, d->be, "physical-device-path", node);
    CHECK_NODE(e->xs, d->be, "hotplug-error", NULL);
    snprintf(sys, sizeof sys, "/sys/block/%s/ro", node + 5);
    FILE *f = fopen(sys, "re");
    int ro = -1;
    if (f) {
        if (fscanf(f, "%d", &ro) != 1)
            ro = -1;
        fclose(f);
    }
    CHECK(ro == (read_only ? 1 : 0), "%s: ro is %d, expected %d", node, ro, read_only);
    free(node);
}

/* libxl's removal: close the device, call release, destroy the dirs. */
static void remove_disk(struct ct_env *e, xenblock_ctx *ctx, const struct ct_disk *d)
{
    ct_disk_close(e->xs, d);
    CHECK_STATUS(xenblock_release(ctx, d->arg), XENBLOCK_OK, ctx);
    ct_disk_destroy(e->xs, d);
}

/* ---- cases ------------------------------------------------------------ */

/* A file read/write: loop device attached, nodes written, detached after. */
static void case_file_rw(struct ct_env *e)
{
    char img[PATH_MAX], node[PATH_MAX];
    ct_image(e, "rw.img", 16 << 20, img);
    ct_domain_purge(e->xs, 11);
    xenblock_ctx *ctx = ct_ctx(e);
    struct ct_disk d = {.domid = 11, .devid = XVDA, .params = img, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000011"};
    ct_disk_add(e->xs, &d);
    CHECK_STATUS(xenblock_prepare(ctx, d.arg), XENBLOCK_OK, ctx);
    CHECK_STR(xenblock_ctx_last_error(ctx), "");
    check_file_connected(e, &d, img, false, node, sizeof node);
    CHECK(ct_loops_of(img) == 1, "%d loop devices on %s", ct_loops_of(img), img);

    /* Called twice (physical-device present): success, nothing changes. */
    CHECK_STATUS(xenblock_prepare(ctx, d.arg), XENBLOCK_OK, ctx);
    CHECK_NODE(e->xs, d.be, "node", node);
    CHECK(ct_loops_of(img) == 1, "a second prepare attached another loop device");

    ct_disk_close(e->xs, &d);
    CHECK_STATUS(xenblock_release(ctx, d.arg), XENBLOCK_OK, ctx);
    CHECK(ct_loop_wait_detached(node, img), "%s still backed by %s after release", node, img);
    CHECK(ct_loops_of(img) == 0, "loop devices left on %s", img);
    /* Release is idempotent, before and after the directory is gone. */
    CHECK_STATUS(xenblock_release(ctx, d.arg), XENBLOCK_OK, ctx);
    ct_disk_destroy(e->xs, &d);
    CHECK_STATUS(xenblock_release(ctx, d.arg), XENBLOCK_OK, ctx);
    CHECK(!ct_exists(e->xs, d.be), "release recreated %s", d.be);
    ct_domain_purge(e->xs, 11);
    xenblock_ctx_free(ctx);
}

/* One file read-only in two guests of different VMs: both get it. */
static void case_file_ro_shared(struct ct_env *e)
{
    char img[PATH_MAX], n1[PATH_MAX], n2[PATH_MAX];
    ct_image(e, "ro.img", 16 << 20, img);
    ct_domain_purge(e->xs, 21);
    ct_domain_purge(e->xs, 22);
    xenblock_ctx *ctx = ct_ctx(e);
    struct ct_disk a = {.domid = 21, .devid = XVDA, .params = img, .mode = "r",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000021", .absolute = true};
    struct ct_disk b = {.domid = 22, .devid = XVDA + 16, .params = img, .mode = "r",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000022", .absolute = true};
    ct_disk_add(e->xs, &a);
    ct_disk_add(e->xs, &b);
    CHECK_STATUS(xenblock_prepare(ctx, a.arg), XENBLOCK_OK, ctx);
    CHECK_STATUS(xenblock_prepare(ctx, b.arg), XENBLOCK_OK, ctx);
    check_file_connected(e, &a, img, true, n1, sizeof n1);
    check_file_connected(e, &b, img, true, n2, sizeof n2);
    CHECK(strcmp(n1, n2) != 0, "both guests got %s", n1);
    CHECK(ct_loops_of(img) == 2, "%d loop devices on %s, expected 2", ct_loops_of(img), img);
    remove_disk(e, ctx, &a);
    CHECK(ct_loop_wait_detached(n1, img), "%s still attached", n1);
    CHECK(ct_loops_of(img) == 1, "releasing one guest detached the other's device too");
    remove_disk(e, ctx, &b);
    CHECK(ct_loop_wait_detached(n2, img), "%s still attached", n2);
    CHECK(ct_loops_of(img) == 0, "loop devices left on %s", img);
    ct_domain_purge(e->xs, 21);
    ct_domain_purge(e->xs, 22);
    xenblock_ctx_free(ctx);
}

/* The sharing rule refuses with a message: busy, hotplug-error = last error. */
static void case_busy(struct ct_env *e)
{
    char img[PATH_MAX], ro_img[PATH_MAX], n1[PATH_MAX], n4[PATH_MAX];
    ct_image(e, "busy.img", 16 << 20, img);
    ct_image(e, "readonly.img", 1 << 20, ro_img);
    REQUIRE(chmod(ro_img, 0444) == 0, "chmod: %s", strerror(errno));
    for (int dom = 31; dom <= 35; dom++)
        ct_domain_purge(e->xs, dom);
    xenblock_ctx *ctx = ct_ctx(e);
    struct ct_disk a = {.domid = 31, .devid = XVDA, .params = img, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000031"};
    struct ct_disk b = {.domid = 32, .devid = XVDA, .params = img, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000032"};
    struct ct_disk c = {.domid = 33, .devid = XVDA, .params = img, .mode = "r",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000033"};
    /* Another domain of the same VM as a (e.g. during migration): allowed. */
    struct ct_disk same = {.domid = 34, .devid = XVDA, .params = img, .mode = "w",
                           .vm = "/vm/c0ffee00-0000-0000-0000-000000000031"};
    struct ct_disk ro = {.domid = 35, .devid = XVDA, .params = ro_img, .mode = "w",
                         .vm = "/vm/c0ffee00-0000-0000-0000-000000000035"};
    ct_disk_add(e->xs, &a);
    CHECK_STATUS(xenblock_prepare(ctx, a.arg), XENBLOCK_OK, ctx);
    check_file_connected(e, &a, img, false, n1, sizeof n1);

    ct_disk_add(e->xs, &b);
    CHECK_STATUS(xenblock_prepare(ctx, b.arg), XENBLOCK_BUSY, ctx);
    check_failure_nodes(e, ctx, &b, "busy");
    CHECK(strstr(xenblock_ctx_last_error(ctx), img) != NULL,
          "the refusal does not name the file: %s", xenblock_ctx_last_error(ctx));

    ct_disk_add(e->xs, &c);
    CHECK_STATUS(xenblock_prepare(ctx, c.arg), XENBLOCK_BUSY, ctx);
    check_failure_nodes(e, ctx, &c, "busy");
    CHECK(ct_loops_of(img) == 1, "a refused prepare left a loop device on %s", img);

    ct_disk_add(e->xs, &same);
    CHECK_STATUS(xenblock_prepare(ctx, same.arg), XENBLOCK_OK, ctx);
    check_file_connected(e, &same, img, false, n4, sizeof n4);

    ct_disk_add(e->xs, &ro);
    CHECK_STATUS(xenblock_prepare(ctx, ro.arg), XENBLOCK_BUSY, ctx);
    check_failure_nodes(e, ctx, &ro, "busy");
    CHECK(ct_loops_of(ro_img) == 0, "the read-only file was attached");

    /* Refused backends have nothing to release; release still succeeds. */
    remove_disk(e, ctx, &b);
    remove_disk(e, ctx, &c);
    remove_disk(e, ctx, &ro);
    remove_disk(e, ctx, &same);
    remove_disk(e, ctx, &a);
    CHECK(ct_loop_wait_detached(n1, img) && ct_loop_wait_detached(n4, img),
          "loop devices left on %s", img);
    CHECK(ct_loops_of(img) == 0, "loop devices left on %s", img);
    for (int dom = 31; dom <= 35; dom++)
        ct_domain_purge(e->xs, dom);
    xenblock_ctx_free(ctx);
}

/* Failures other than refusals: a missing target, a backend not in InitWait. */
static void case_errors(struct ct_env *e)
{
    char img[PATH_MAX], missing[PATH_MAX + 16];
    ct_image(e, "state.img", 1 << 20, img);
    snprintf(missing, sizeof missing, "%s/no-such.img", e->dir);
    ct_domain_purge(e->xs, 41);
    ct_domain_purge(e->xs, 42);
    xenblock_ctx *ctx = ct_ctx(e);
    struct ct_disk nf = {.domid = 41, .devid = XVDA, .params = missing, .mode = "w",
                         .vm = "/vm/c0ffee00-0000-0000-0000-000000000041"};
    ct_disk_add(e->xs, &nf);
    CHECK_STATUS(xenblock_prepare(ctx, nf.arg), XENBLOCK_NOT_FOUND, ctx);
    check_failure_nodes(e, ctx, &nf, "error");
    CHECK(strstr(xenblock_ctx_last_error(ctx), missing) != NULL,
          "the message does not name the missing target: %s", xenblock_ctx_last_error(ctx));

    /* The backend went away before InitWait (state still 1). */
    struct ct_disk st = {.domid = 42, .devid = XVDA, .params = img, .mode = "w",
                         .vm = "/vm/c0ffee00-0000-0000-0000-000000000042"};
    ct_disk_add(e->xs, &st);
    char path[256];
    snprintf(path, sizeof path, "%s/state", st.be);
    ct_write(e->xs, path, "1");
    CHECK_STATUS(xenblock_prepare(ctx, st.arg), XENBLOCK_BAD_STATE, ctx);
    check_failure_nodes(e, ctx, &st, "error");
    CHECK(ct_loops_of(img) == 0, "a failed prepare left a loop device");

    remove_disk(e, ctx, &nf);
    remove_disk(e, ctx, &st);
    ct_domain_purge(e->xs, 41);
    ct_domain_purge(e->xs, 42);
    xenblock_ctx_free(ctx);
}

/* phy: a block device (a loop device the harness attaches itself). */
static void case_phy(struct ct_env *e)
{
    char img[PATH_MAX], dev[64], num[32], rel[64], link[PATH_MAX + 8];
    ct_image(e, "phy-backing.img", 16 << 20, img);
    ct_loop_attach(img, dev, sizeof dev);
    ct_devnum_hex(dev, num, sizeof num);
    snprintf(rel, sizeof rel, "%s", dev + 5); /* "loopN": relative names are under /dev */
    snprintf(link, sizeof link, "%s/phy-link", e->dir);
    unlink(link);
    REQUIRE(symlink(dev, link) == 0, "symlink: %s", strerror(errno));
    for (int dom = 51; dom <= 53; dom++)
        ct_domain_purge(e->xs, dom);
    xenblock_ctx *ctx = ct_ctx(e);

    struct ct_disk a = {.domid = 51, .devid = XVDA, .params = dev, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000051"};
    ct_disk_add(e->xs, &a);
    CHECK_STATUS(xenblock_prepare(ctx, a.arg), XENBLOCK_OK, ctx);
    CHECK_NODE(e->xs, a.be, "hotplug-status", "connected");
    CHECK_NODE(e->xs, a.be, "physical-device", num);
    CHECK_NODE(e->xs, a.be, "physical-device-path", dev);
    CHECK_NODE(e->xs, a.be, "node", NULL);

    /* The same device, by relative name, to another VM: refused. */
    struct ct_disk b = {.domid = 52, .devid = XVDA, .params = rel, .mode = "r",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000052"};
    ct_disk_add(e->xs, &b);
    CHECK_STATUS(xenblock_prepare(ctx, b.arg), XENBLOCK_BUSY, ctx);
    check_failure_nodes(e, ctx, &b, "busy");
    remove_disk(e, ctx, &b);

    /* Release of a phy backend undoes nothing: the device stays bound. */
    remove_disk(e, ctx, &a);
    CHECK(ct_loop_backed_by(dev, img), "release of a phy disk touched %s", dev);

    /* Through a symlink, by relative name: the resolved device. */
    struct ct_disk c = {.domid = 53, .devid = XVDA, .params = link, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000053"};
    ct_disk_add(e->xs, &c);
    CHECK_STATUS(xenblock_prepare(ctx, c.arg), XENBLOCK_OK, ctx);
    CHECK_NODE(e->xs, c.be, "hotplug-status", "connected");
    CHECK_NODE(e->xs, c.be, "physical-device", num);
    CHECK_NODE(e->xs, c.be, "physical-device-path", dev);
    remove_disk(e, ctx, &c);
    CHECK(ct_loop_backed_by(dev, img), "release of a phy disk touched %s", dev);

    ct_loop_detach(dev);
    CHECK(ct_loop_wait_detached(dev, img), "%s still bound after LOOP_CLR_FD", dev);
    unlink(link);
    for (int dom = 51; dom <= 53; dom++)
        ct_domain_purge(e->xs, dom);
    xenblock_ctx_free(ctx);
}

/* A custom hotplug script (basename not `block`). */
static void case_custom_script(struct ct_env *e)
{
    char img[PATH_MAX], script[PATH_MAX + 16], marker[PATH_MAX + 16];
    ct_image(e, "custom.img", 1 << 20, img);
    snprintf(script, sizeof script, "%s/my-hotplug", e->dir);
    snprintf(marker, sizeof marker, "%s/my-hotplug.ran", e->dir);
    unlink(marker);
    FILE *f = fopen(script, "we");
    REQUIRE(f, "create %s: %s", script, strerror(errno));
    fprintf(f, "#!/bin/sh\necho \"$@\" >> '%s'\n"
               "[ \"$1\" = add ] && xenstore-write \"$XENBUS_PATH/hotplug-status\" connected\n"
               "exit 0\n", marker);
    fclose(f);
    REQUIRE(chmod(script, 0755) == 0, "chmod: %s", strerror(errno));
    ct_domain_purge(e->xs, 61);
    xenblock_ctx *ctx = ct_ctx(e);
    struct ct_disk d = {.domid = 61, .devid = XVDA, .params = img, .mode = "w",
                        .script = script,
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000061"};
    ct_disk_add(e->xs, &d);
    xenblock_status st = xenblock_prepare(ctx, d.arg);
    CHECK_STATUS(st, CUSTOM_SCRIPT_PREPARE_STATUS, ctx);
    char *hs = ct_read(e->xs, "%s/hotplug-status", d.be);
    if (CUSTOM_SCRIPT_CONNECTS) {
        CHECK_STR(hs, "connected");
    } else {
        CHECK(st != XENBLOCK_OK, "prepare with a custom script succeeded");
        CHECK(!hs || strcmp(hs, "connected") != 0, "hotplug-status is connected");
        CHECK(xenblock_ctx_last_error(ctx)[0] != 0, "no message");
        CHECK(strstr(xenblock_ctx_last_error(ctx), "my-hotplug") != NULL,
              "the message does not name the script: %s", xenblock_ctx_last_error(ctx));
        CHECK_NODE(e->xs, d.be, "hotplug-error", xenblock_ctx_last_error(ctx));
    }
    free(hs);
    CHECK(ct_loops_of(img) == 0, "a custom-script disk got a loop device in-process");
    ct_disk_close(e->xs, &d);
    CHECK_STATUS(xenblock_release(ctx, d.arg), CUSTOM_SCRIPT_RELEASE_STATUS, ctx);
    if (CUSTOM_SCRIPT_CONNECTS) {
        /* The Linux contract: argv [script, add|remove]. */
        FILE *m = fopen(marker, "re");
        char ran[64] = "";
        CHECK(m != NULL, "the script did not run");
        if (m) {
            size_t n = fread(ran, 1, sizeof ran - 1, m);
            ran[n] = 0;
            fclose(m);
        }
        CHECK(strcmp(ran, "add\nremove\n") == 0, "script saw argv %s", ran);
    }
    ct_disk_destroy(e->xs, &d);
    unlink(marker);
    ct_domain_purge(e->xs, 61);
    xenblock_ctx_free(ctx);
}

/* Every status has a distinct, non-empty name; others are "unknown status". */
static void case_status_strings(struct ct_env *e)
{
    (void)e;
    const char *names[14];
    for (unsigned i = 0; i <= 13; i++) {
        names[i] = xenblock_status_str(i);
        REQUIRE(names[i] != NULL, "xenblock_status_str(%u) is NULL", i);
        CHECK(names[i][0] != 0, "xenblock_status_str(%u) is empty", i);
        CHECK(strcmp(names[i], "unknown status") != 0, "status %u is unknown", i);
        for (unsigned j = 0; j < i; j++)
            CHECK(strcmp(names[i], names[j]) != 0, "statuses %u and %u are both \"%s\"", j,
                  i, names[i]);
    }
    CHECK_STR(xenblock_status_str(XENBLOCK_OK), "ok");
    const uint32_t unknown[] = {14, 15, 255, 0x80000000u, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        CHECK_STR(xenblock_status_str(unknown[i]), "unknown status");
    CHECK(xenblock_abi_version() == ((uint32_t)XENBLOCK_ABI_MAJOR << 16 | XENBLOCK_ABI_MINOR),
          "xenblock_abi_version() is %#x, the header says %d.%d", xenblock_abi_version(),
          XENBLOCK_ABI_MAJOR, XENBLOCK_ABI_MINOR);
    const char *v = xenblock_version();
    CHECK(v && v[0] >= '0' && v[0] <= '9', "xenblock_version() is \"%s\"", v ? v : "(null)");
    CHECK(xenblock_last_error() != NULL, "xenblock_last_error() is NULL");
}

/* NULL and invalid arguments: an error status and a message, never a crash. */
static void case_invalid_args(struct ct_env *e)
{
    xenblock_config cfg;
    xenblock_ctx *ctx = (xenblock_ctx *)&cfg; /* garbage, must be set to NULL */
    const char *be = "backend/vbd/71/51712";

    CHECK_STATUS(xenblock_prepare(NULL, be), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(strstr(xenblock_last_error(), "ctx") != NULL, "last error: %s", xenblock_last_error());
    CHECK_STATUS(xenblock_release(NULL, be), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(strstr(xenblock_last_error(), "ctx") != NULL, "last error: %s", xenblock_last_error());
    CHECK_STR(xenblock_ctx_last_error(NULL), "");
    xenblock_ctx_free(NULL);
    /* A pointer that is not a context (its magic is checked, as an op's):
     * refused, not used; ctx_free leaves it alone. */
    _Alignas(16) unsigned char foreign[128];
    memset(foreign, 0, sizeof foreign);
    CHECK_STATUS(xenblock_prepare((xenblock_ctx *)foreign, be), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(strstr(xenblock_last_error(), "not a live context") != NULL, "last error: %s",
          xenblock_last_error());
    CHECK_STR(xenblock_ctx_last_error((xenblock_ctx *)foreign), "");
    xenblock_ctx_free((xenblock_ctx *)foreign);
    CHECK(strstr(xenblock_last_error(), "not a live context") != NULL, "last error: %s",
          xenblock_last_error());

    ct_config(e, &cfg);
    CHECK_STATUS(xenblock_ctx_new(&cfg, NULL), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(xenblock_last_error()[0] != 0, "no message for out == NULL");

    cfg.flavour = 99;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(ctx == NULL, "*out not NULL after a failure");
    CHECK(strstr(xenblock_last_error(), "flavour") != NULL, "last error: %s",
          xenblock_last_error());
    ct_config(e, &cfg);
    cfg.lock_dir = "relative/lock";
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(ctx == NULL && xenblock_last_error()[0], "no message for a relative lock_dir");

    if (e->store == CT_STORE_BUILTIN) {
        /* No xenstored at $XENSTORED_PATH: a clear failure, no context. */
        char *saved = strdup(getenv("XENSTORED_PATH"));
        char nowhere[PATH_MAX + 16];
        snprintf(nowhere, sizeof nowhere, "%s/no-such-socket", e->dir);
        setenv("XENSTORED_PATH", nowhere, 1);
        ct_config(e, &cfg);
        cfg.store_timeout_ms = 500;
        ctx = (xenblock_ctx *)&cfg;
        xenblock_status st = xenblock_ctx_new(&cfg, &ctx);
        CHECK(st != XENBLOCK_OK, "a context without xenstored");
        CHECK(ctx == NULL, "*out not NULL after a failure");
        CHECK(strstr(xenblock_last_error(), "no-such-socket") != NULL, "last error: %s",
              xenblock_last_error());
        setenv("XENSTORED_PATH", saved, 1);
        free(saved);
        /* cfg == NULL: every default (built-in client at $XENSTORED_PATH). */
        xenblock_ctx *def = NULL;
        CHECK_STATUS(xenblock_ctx_new(NULL, &def), XENBLOCK_OK, NULL);
        xenblock_ctx_free(def);
    }

    ctx = ct_ctx(e);
    CHECK_STATUS(xenblock_prepare(ctx, NULL), XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK(strstr(xenblock_ctx_last_error(ctx), "backend_path") != NULL, "last error: %s",
          xenblock_ctx_last_error(ctx));
    CHECK_STATUS(xenblock_release(ctx, NULL), XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK(xenblock_ctx_last_error(ctx)[0] != 0, "no message");

    char longpath[5000];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    const char *bad[] = {
        "",                            /* empty */
        "/",                           /* the root */
        "backend//vbd/71/51712",       /* empty component */
        "backend/vbd/../../../etc",    /* '..' */
        "backend/vbd/./71/51712",      /* '.' */
        "backend/vbd/71/51712 x",      /* not a xenstore path character */
        "backend/vbd/71/\xff\xfe",     /* not UTF-8 */
        longpath,                      /* too long */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *shown = i == sizeof bad / sizeof bad[0] - 1 ? "(5000 bytes)" : bad[i];
        xenblock_status st = xenblock_prepare(ctx, bad[i]);
        CHECK(st == XENBLOCK_INVALID_ARGUMENT, "prepare(\"%s\") gave %s", shown,
              xenblock_status_str(st));
        CHECK(xenblock_ctx_last_error(ctx)[0] != 0, "prepare(\"%s\"): no message", shown);
        st = xenblock_release(ctx, bad[i]);
        CHECK(st == XENBLOCK_INVALID_ARGUMENT, "release(\"%s\") gave %s", shown,
              xenblock_status_str(st));
    }

    /* A backend directory that does not exist: an error, and not created. */
    ct_domain_purge(e->xs, 71);
    xenblock_status st = xenblock_prepare(ctx, be);
    CHECK(st != XENBLOCK_OK, "prepare of a missing backend succeeded");
    CHECK(xenblock_ctx_last_error(ctx)[0] != 0, "no message");
    CHECK(!ct_exists(e->xs, "/local/domain/0/backend/vbd/71"),
          "a failed prepare created the backend directory");
    CHECK_STATUS(xenblock_release(ctx, be), XENBLOCK_OK, ctx);
    CHECK(!ct_exists(e->xs, "/local/domain/0/backend/vbd/71"),
          "release created the backend directory");

    /* A message stays per thread and per context: a success leaves it. */
    CHECK_STR(xenblock_ctx_last_error(NULL), "");
    xenblock_ctx_free(ctx);
}

/* abi_size: older smaller structs work; absurd sizes are refused. */
static void case_abi_size(struct ct_env *e)
{
    xenblock_config cfg;
    xenblock_ctx *ctx;
    const uint32_t bad[] = {0, 1, 3, (uint32_t)offsetof(xenblock_config, script_timeout_ms) - 1,
                            1u << 20, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ct_config(e, &cfg);
        cfg.abi_size = bad[i];
        ctx = (xenblock_ctx *)&cfg;
        CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
        CHECK(ctx == NULL, "abi_size %u: *out not NULL after a failure", bad[i]);
        CHECK(strstr(xenblock_last_error(), "abi_size") != NULL,
              "abi_size %u: last error: \"%s\"", bad[i], xenblock_last_error());
    }

    /* A newer caller's bigger struct: unknown bytes that are zero are
     * accepted; a set one is a field this library would ignore: refused. */
    struct {
        xenblock_config cfg;
        char future[64];
    } big;
    memset(&big, 0, sizeof big);
    ct_config(e, &big.cfg);
    big.cfg.abi_size = sizeof big;
    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&big.cfg, &ctx), XENBLOCK_OK, NULL);
    CHECK(ctx != NULL, "no context");
    xenblock_ctx_free(ctx);
    big.future[17] = 1;
    ctx = (xenblock_ctx *)&cfg;
    CHECK_STATUS(xenblock_ctx_new(&big.cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(ctx == NULL, "*out not NULL after a failure");
    CHECK(strstr(xenblock_last_error(), "does not have") != NULL, "last error: \"%s\"",
          xenblock_last_error());

    /* ABI 1.2 grew the struct: `workers` lies beyond the whole ABI 1.1
     * struct, whose last 4 bytes (after lock_timeout_ms, up to pointer
     * alignment) were tail padding. */
    size_t v11 = offsetof(xenblock_config, lock_timeout_ms) + sizeof(uint32_t);
    v11 = (v11 + _Alignof(void *) - 1) / _Alignof(void *) * _Alignof(void *);
    CHECK(offsetof(xenblock_config, workers) >= v11,
          "workers at offset %zu, inside the %zu bytes of an ABI 1.1 config",
          offsetof(xenblock_config, workers), v11);
    CHECK(sizeof(xenblock_config) > v11, "sizeof(xenblock_config) is %zu: did not grow past %zu",
          sizeof(xenblock_config), v11);
    /* A 1.1 caller: abi_size = its sizeof, junk in its tail padding (now
     * reserved0): accepted, the junk is not read as a field. */
    ct_config(e, &cfg);
    cfg.abi_size = (uint32_t)v11;
    memset((char *)&cfg + offsetof(xenblock_config, lock_timeout_ms) + sizeof(uint32_t), 0xa5,
           v11 - offsetof(xenblock_config, lock_timeout_ms) - sizeof(uint32_t));
    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_OK, NULL);
    CHECK(ctx != NULL, "an ABI 1.1 config with junk tail padding was refused: %s",
          xenblock_last_error());
    xenblock_ctx_free(ctx);
    /* reserved0 is ignored in a 1.2 struct too; workers beyond a smaller
     * abi_size is not read. */
    ct_config(e, &cfg);
    cfg.reserved0 = 0xa5a5a5a5u;
    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_OK, NULL);
    CHECK(ctx != NULL, "reserved0 set: refused: %s", xenblock_last_error());
    xenblock_ctx_free(ctx);

    /* The ABI 1.0 minimum: up to script_dir. The fields after it are
     * garbage in the caller's memory and must not be read. */
    memset(&cfg, 0xa5, sizeof cfg);
    xenblock_config base;
    ct_config(e, &base);
    memcpy(&cfg, &base, offsetof(xenblock_config, script_timeout_ms));
    cfg.abi_size = offsetof(xenblock_config, script_timeout_ms);
    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_OK, NULL);
    REQUIRE(ctx != NULL, "an ABI 1.0-sized config was refused: %s", xenblock_last_error());

    /* That context works: prepare and release a file. */
    char img[PATH_MAX], node[PATH_MAX];
    ct_image(e, "abi.img", 1 << 20, img);
    ct_domain_purge(e->xs, 81);
    struct ct_disk d = {.domid = 81, .devid = XVDA, .params = img, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000081"};
    ct_disk_add(e->xs, &d);
    CHECK_STATUS(xenblock_prepare(ctx, d.arg), XENBLOCK_OK, ctx);
    check_file_connected(e, &d, img, false, node, sizeof node);
    remove_disk(e, ctx, &d);
    CHECK(ct_loop_wait_detached(node, img), "%s still attached", node);
    ct_domain_purge(e->xs, 81);
    xenblock_ctx_free(ctx);
}

/* How many OFD locks /proc/locks lists on the file at `path`. */
static int ofd_locks_on(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    char want[64];
    snprintf(want, sizeof want, " %02x:%02x:%lu ", major(st.st_dev), minor(st.st_dev),
             (unsigned long)st.st_ino);
    FILE *f = fopen("/proc/locks", "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "OFDLCK") && !strstr(line, "->") && strstr(line, want))
            n++;
    fclose(f);
    return n;
}

/* ABI 1.3: `image_locks` from C. 0 (the default) takes QEMU's image locks
 * on a file disk, held by its loop device; XENBLOCK_IMAGE_LOCKS_OFF takes
 * none; an unknown value and a set `reserved2` are refused; junk in
 * `reserved1` (the 1.2 struct's tail padding) is ignored; an ABI 1.2-sized
 * struct gets the default whatever lies beyond it. */
static void case_image_locks(struct ct_env *e)
{
    char img[PATH_MAX], node[PATH_MAX];
    ct_image(e, "locks.img", 1 << 20, img);
    ct_domain_purge(e->xs, 82);
    struct ct_disk d = {.domid = 82, .devid = XVDA, .params = img, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000082"};
    static const struct {
        uint32_t value;
        size_t abi_size; /* 0: sizeof */
        bool locks;
    } runs[] = {
        {XENBLOCK_IMAGE_LOCKS_DEFAULT, 0, true},
        {XENBLOCK_IMAGE_LOCKS_BEST_EFFORT, 0, true},
        {XENBLOCK_IMAGE_LOCKS_REQUIRED, 0, true},
        {XENBLOCK_IMAGE_LOCKS_OFF, 0, false},
        /* An ABI 1.2 caller: image_locks lies beyond its struct. */
        {XENBLOCK_IMAGE_LOCKS_OFF, offsetof(xenblock_config, image_locks), true},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        xenblock_config cfg;
        ct_config(e, &cfg);
        cfg.image_locks = runs[i].value;
        cfg.reserved1 = 0xa5a5a5a5u;
        if (runs[i].abi_size)
            cfg.abi_size = (uint32_t)runs[i].abi_size;
        xenblock_ctx *ctx = NULL;
        CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_OK, NULL);
        REQUIRE(ctx != NULL, "image_locks %u: refused: %s", runs[i].value, xenblock_last_error());
        ct_disk_add(e->xs, &d);
        CHECK_STATUS(xenblock_prepare(ctx, d.arg), XENBLOCK_OK, ctx);
        check_file_connected(e, &d, img, false, node, sizeof node);
        int n = ofd_locks_on(img);
        CHECK(runs[i].locks ? n > 0 : n == 0, "image_locks %u (abi_size %zu): %d OFD locks on %s",
              runs[i].value, runs[i].abi_size, n, img);
        remove_disk(e, ctx, &d);
        CHECK(ct_loop_wait_detached(node, img), "%s still attached", node);
        xenblock_ctx_free(ctx);
    }
    CHECK(ofd_locks_on(img) == 0, "locks left on %s after release", img);

    xenblock_config cfg;
    ct_config(e, &cfg);
    cfg.image_locks = 4;
    xenblock_ctx *ctx = (xenblock_ctx *)&cfg;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(ctx == NULL, "*out not NULL after a failure");
    CHECK(strstr(xenblock_last_error(), "image_locks is 4") != NULL, "last error: \"%s\"",
          xenblock_last_error());
    ct_config(e, &cfg);
    cfg.reserved2 = 1;
    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(strstr(xenblock_last_error(), "reserved2 is 1") != NULL, "last error: \"%s\"",
          xenblock_last_error());
    ct_domain_purge(e->xs, 82);
}

/* What an embedding host relies on: plans only for backends that exist, a
 * bounded lock wait, and XENBLOCK_NOWAIT answering XENBLOCK_WOULD_BLOCK at
 * once (writing nothing) while the hotplug lock is taken. */
static void case_embedding(struct ct_env *e)
{
    char img[PATH_MAX], node[PATH_MAX], lock[PATH_MAX];
    xenblock_plan *plan = (xenblock_plan *)&plan;
    ct_domain_purge(e->xs, 91);
    xenblock_config cfg;
    ct_config(e, &cfg);
    /* Long enough that "returned at once" and "waited for the lock" stay
     * apart under valgrind on a loaded machine. */
    cfg.lock_timeout_ms = 2000;
    xenblock_ctx *ctx = NULL;
    REQUIRE(xenblock_ctx_new(&cfg, &ctx) == XENBLOCK_OK, "ctx: %s", xenblock_last_error());

    CHECK_STATUS(xenblock_plan_new(ctx, "backend/vbd/91/51712", XENBLOCK_ACTION_ADD, &plan),
                 XENBLOCK_NOT_FOUND, ctx);
    CHECK(plan == NULL, "*out not NULL after a failure");
    CHECK_STATUS(xenblock_plan_new(ctx, "backend/vbd/91", XENBLOCK_ACTION_ADD, &plan),
                 XENBLOCK_INVALID_ARGUMENT, ctx);

    ct_image(e, "embed.img", 1 << 20, img);
    struct ct_disk d = {.domid = 91, .devid = XVDA, .params = img, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000091"};
    ct_disk_add(e->xs, &d);
    CHECK_STATUS(xenblock_prepare_ex(ctx, d.arg, 0x80), XENBLOCK_INVALID_ARGUMENT, ctx);

    /* Another open file holds the lock, as a hotplug script would. */
    mkdir(e->lock_dir, 0755);
    snprintf(lock, sizeof lock, "%s/block", e->lock_dir);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0 && flock(fd, LOCK_EX) == 0, "taking %s: %s", lock, strerror(errno));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_STATUS(xenblock_prepare_ex(ctx, d.arg, XENBLOCK_NOWAIT), XENBLOCK_WOULD_BLOCK, ctx);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms < 1000, "XENBLOCK_NOWAIT took %.0f ms: it waited for the lock", ms);
    char hs[PATH_MAX];
    snprintf(hs, sizeof hs, "%s/hotplug-status", d.be);
    CHECK(!ct_exists(e->xs, hs), "WOULD_BLOCK wrote hotplug-status");
    CHECK(strstr(xenblock_ctx_last_error(ctx), "try again") != NULL, "message: \"%s\"",
          xenblock_ctx_last_error(ctx));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_STATUS(xenblock_prepare(ctx, d.arg), XENBLOCK_TIMEOUT, ctx);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms >= 1900, "a waiting prepare gave up after %.0f ms, before its 2000 ms", ms);
    unlink(lock);
    close(fd);
    /* The timeout was a failure, recorded as such; clear it for the retry. */
    CHECK_NODE(e->xs, d.be, "hotplug-status", "error");
    snprintf(hs, sizeof hs, "%s/hotplug-error", d.be);
    ct_rm(e->xs, hs);
    snprintf(hs, sizeof hs, "%s/hotplug-status", d.be);
    ct_rm(e->xs, hs);

    CHECK_STATUS(xenblock_prepare_ex(ctx, d.arg, XENBLOCK_NOWAIT), XENBLOCK_OK, ctx);
    check_file_connected(e, &d, img, false, node, sizeof node);
    ct_disk_close(e->xs, &d);
    CHECK_STATUS(xenblock_release_ex(ctx, d.arg, XENBLOCK_NOWAIT), XENBLOCK_OK, ctx);
    ct_disk_destroy(e->xs, &d);
    CHECK(ct_loop_wait_detached(node, img), "%s still attached", node);
    ct_domain_purge(e->xs, 91);
    xenblock_ctx_free(ctx);
}

/* xenblock_store_ops: its own abi_size and required callbacks. */
static int stub_read(void *o, uint32_t t, const char *p, char **v, size_t *l)
{
    (void)o, (void)t, (void)p, (void)v, (void)l;
    return ENOENT;
}
static int stub_write(void *o, uint32_t t, const char *p, const char *v, size_t l)
{
    (void)o, (void)t, (void)p, (void)v, (void)l;
    return EACCES;
}
static int stub_remove(void *o, uint32_t t, const char *p)
{
    (void)o, (void)t, (void)p;
    return EACCES;
}
static int stub_directory(void *o, uint32_t t, const char *p, char ***e, size_t *n)
{
    (void)o, (void)t, (void)p, (void)e, (void)n;
    return ENOENT;
}
static int stub_tx_start(void *o, uint32_t *t)
{
    (void)o;
    *t = 1;
    return 0;
}
static int stub_tx_end(void *o, uint32_t t, bool c)
{
    (void)o, (void)t, (void)c;
    return 0;
}

static void case_store_ops_args(struct ct_env *e)
{
    xenblock_store_ops ops;
    xenblock_config cfg;
    xenblock_ctx *ctx;
    memset(&ops, 0, sizeof ops);
    ops.abi_size = sizeof ops;
    ops.read = stub_read;
    ops.write = stub_write;
    ops.remove = stub_remove;
    ops.directory = stub_directory;
    ops.transaction_start = stub_tx_start;
    ops.transaction_end = stub_tx_end;
    ct_config(e, &cfg);
    cfg.store = &ops;

    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_OK, NULL);
    if (ctx) {
        /* A store where nothing exists: prepare fails cleanly. */
        xenblock_status st = xenblock_prepare(ctx, "backend/vbd/1/51712");
        CHECK(st != XENBLOCK_OK, "prepare over an empty store succeeded");
        CHECK(xenblock_ctx_last_error(ctx)[0] != 0, "no message");
    }
    xenblock_ctx_free(ctx);

    /* ABI 1.0 minimum for store ops: up to transaction_end. */
    ops.abi_size = offsetof(xenblock_store_ops, free_fn);
    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_OK, NULL);
    xenblock_ctx_free(ctx);

    /* A newer caller's bigger store ops: zero unknown bytes accepted, a set
     * one (a callback this library would never call) refused. */
    struct {
        xenblock_store_ops ops;
        void (*future_callback)(void);
    } big;
    memset(&big, 0, sizeof big);
    big.ops = ops;
    big.ops.abi_size = sizeof big;
    cfg.store = &big.ops;
    ctx = NULL;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_OK, NULL);
    xenblock_ctx_free(ctx);
    big.future_callback = (void (*)(void))stub_tx_start;
    ctx = (xenblock_ctx *)&ops;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(ctx == NULL, "*out not NULL after a failure");
    CHECK(strstr(xenblock_last_error(), "xenblock_store_ops") != NULL, "message: \"%s\"",
          xenblock_last_error());
    cfg.store = &ops;

    const uint32_t bad[] = {0, 3, (uint32_t)offsetof(xenblock_store_ops, free_fn) - 1, 1u << 20};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ops.abi_size = bad[i];
        ctx = (xenblock_ctx *)&ops;
        CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
        CHECK(ctx == NULL, "*out not NULL after a failure");
        CHECK(strstr(xenblock_last_error(), "abi_size") != NULL, "store abi_size %u: \"%s\"",
              bad[i], xenblock_last_error());
    }
    ops.abi_size = sizeof ops;
    ops.read = NULL;
    ops.directory = NULL;
    ctx = (xenblock_ctx *)&ops;
    CHECK_STATUS(xenblock_ctx_new(&cfg, &ctx), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(ctx == NULL, "*out not NULL after a failure");
    CHECK(strstr(xenblock_last_error(), "read") && strstr(xenblock_last_error(), "directory"),
          "the message does not name the missing callbacks: \"%s\"", xenblock_last_error());
}

/* ---- threads ---------------------------------------------------------- */

#define NTHREADS 8
#define ROUNDS 3

struct worker {
    struct ct_env *e;
    xenblock_ctx *ctx;          /* shared context, or NULL: make one */
    struct xs_handle *own_xs;   /* per-context libxenstore handle */
    pthread_barrier_t *start;
    int index;
    int ok;
    char img[PATH_MAX];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct ct_env *e = w->e;
    xenblock_ctx *ctx = w->ctx;
    xenblock_store_ops ops;
    if (!ctx) {
        /* Its own context (and, for the callback store, its own handle). */
        xenblock_config cfg;
        ct_config(e, &cfg);
        if (e->store == CT_STORE_LIBXS) {
            w->own_xs = xs_open(0);
            REQUIRE(w->own_xs, "xs_open: %s", strerror(errno));
            ct_libxs_ops(&ops, w->own_xs);
            cfg.store = &ops;
        }
        xenblock_status st = xenblock_ctx_new(&cfg, &ctx);
        CHECK(st == XENBLOCK_OK, "thread %d: xenblock_ctx_new: %s", w->index,
              xenblock_last_error());
        if (st != XENBLOCK_OK)
            return NULL;
    }
    pthread_barrier_wait(w->start);
    char vm[64], node[PATH_MAX] = "";
    snprintf(vm, sizeof vm, "/vm/c0ffee00-0000-0000-0000-0000000009%02d", w->index);
    for (int r = 0; r < ROUNDS; r++) {
        struct ct_disk d = {.domid = 100 + w->index, .devid = XVDA + 16 * r, .params = w->img,
                            .mode = r % 2 ? "r" : "w", .vm = vm};
        ct_disk_add(e->xs, &d);
        xenblock_status st = xenblock_prepare(ctx, d.arg);
        CHECK(st == XENBLOCK_OK, "thread %d round %d: prepare: %s: %s", w->index, r,
              xenblock_status_str(st), xenblock_ctx_last_error(ctx));
        if (st == XENBLOCK_OK) {
            CHECK_STR(xenblock_ctx_last_error(ctx), "");
            check_file_connected(e, &d, w->img, r % 2, node, sizeof node);
            w->ok++;
        }
        ct_disk_close(e->xs, &d);
        st = xenblock_release(ctx, d.arg);
        CHECK(st == XENBLOCK_OK, "thread %d round %d: release: %s: %s", w->index, r,
              xenblock_status_str(st), xenblock_ctx_last_error(ctx));
        CHECK(ct_loop_wait_detached(node, w->img), "thread %d: %s still attached", w->index,
              node);
        ct_disk_destroy(e->xs, &d);
    }
    if (!w->ctx)
        xenblock_ctx_free(ctx);
    if (w->own_xs)
        xs_close(w->own_xs);
    return NULL;
}

static void run_workers(struct ct_env *e, xenblock_ctx *shared, int n)
{
    struct worker w[NTHREADS];
    pthread_t t[NTHREADS];
    pthread_barrier_t start;
    REQUIRE(n <= NTHREADS, "too many threads");
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        char name[32];
        memset(&w[i], 0, sizeof w[i]);
        w[i].e = e;
        w[i].ctx = shared;
        w[i].start = &start;
        w[i].index = i;
        snprintf(name, sizeof name, "thread-%d.img", i);
        ct_image(e, name, 4 << 20, w[i].img);
        ct_domain_purge(e->xs, 100 + i);
    }
    for (int i = 0; i < n; i++)
        REQUIRE(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0, "pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < n; i++) {
        CHECK(w[i].ok == ROUNDS, "thread %d: %d of %d prepares succeeded", i, w[i].ok, ROUNDS);
        CHECK(ct_loops_of(w[i].img) == 0, "thread %d left a loop device", i);
        ct_domain_purge(e->xs, 100 + i);
    }
}

/* One context, eight threads at once. */
static void case_threads_one_ctx(struct ct_env *e)
{
    unsigned long calls = ct_libxs_calls();
    xenblock_ctx *ctx = ct_ctx(e);
    run_workers(e, ctx, NTHREADS);
    xenblock_ctx_free(ctx);
    if (e->store == CT_STORE_LIBXS)
        CHECK(ct_libxs_calls() > calls, "the callback store was not used");
}

/* Several contexts at once, each in its own thread (and own connection). */
static void case_threads_many_ctx(struct ct_env *e)
{
    run_workers(e, NULL, 4);
}

/* ---- the op API: an event-loop host -------------------------------------- */

#define NOPS 16

/* Hold the hotplug lock as another holder would (its own open file
 * description, so the library's flock conflicts with it); -1 on failure. */
static int hold_lock(const struct ct_env *e)
{
    char p[PATH_MAX];
    mkdir(e->lock_dir, 0755);
    snprintf(p, sizeof p, "%s/block", e->lock_dir);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0, "open %s: %s", p, strerror(errno));
    REQUIRE(flock(fd, LOCK_EX) == 0, "flock: %s", strerror(errno));
    return fd;
}

/* Let it go as Xen's release_lock does: unlink, then close. */
static void drop_lock(const struct ct_env *e, int fd)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/block", e->lock_dir);
    unlink(p);
    close(fd);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool fd_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Drive `n` ops to their end from one poll() loop, doing other work (a
 * xenstore read, a counter) between wake-ups; each op's status must be
 * `want`. Returns the loop's iterations. */
static long drive(struct ct_env *e, xenblock_op **ops, int n, xenblock_status want)
{
    long iterations = 0;
    int left = n;
    bool done[NOPS] = {false};
    double deadline = now_ms() + 60000;
    while (left > 0) {
        struct pollfd p[NOPS];
        int map[NOPS], k = 0;
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            p[k].fd = xenblock_op_fd(ops[i]);
            p[k].events = POLLIN;
            p[k].revents = 0;
            map[k++] = i;
        }
        int r = poll(p, (nfds_t)k, 5);
        REQUIRE(r >= 0, "poll: %s", strerror(errno));
        iterations++;
        /* Other work of the host's loop, interleaved. */
        free(ct_read(e->xs, "/local/domain/0/name"));
        for (int j = 0; j < k; j++) {
            if (!(p[j].revents & POLLIN))
                continue;
            int i = map[j];
            xenblock_status st = xenblock_op_finish(ops[i]);
            CHECK(st == want, "op %d: %s (%s), expected %s", i, xenblock_status_str(st),
                  xenblock_op_error(ops[i]), xenblock_status_str(want));
            /* Level-triggered: still readable after finish. */
            CHECK(fd_readable(xenblock_op_fd(ops[i])), "op %d's fd is no longer readable", i);
            done[i] = true;
            left--;
        }
        REQUIRE(now_ms() < deadline, "%d ops still running after 60 s", left);
    }
    return iterations;
}

static void case_ops_event_loop(struct ct_env *e)
{
    char img[NOPS][PATH_MAX], node[PATH_MAX];
    struct ct_disk d[NOPS];
    xenblock_op *ops[NOPS];
    xenblock_config cfg;
    xenblock_ctx *ctx = NULL;
    ct_config(e, &cfg);
    cfg.workers = 4;
    REQUIRE(xenblock_ctx_new(&cfg, &ctx) == XENBLOCK_OK, "%s", xenblock_last_error());
    ct_domain_purge(e->xs, 40);
    for (int i = 0; i < NOPS; i++) {
        char name[32];
        snprintf(name, sizeof name, "op-%d.img", i);
        ct_image(e, name, 4 << 20, img[i]);
        d[i] = (struct ct_disk){.domid = 40, .devid = XVDA + 16 * i, .params = img[i],
                                .mode = "w", .vm = "/vm/c0ffee00-0000-0000-0000-000000000040"};
        ct_disk_add(e->xs, &d[i]);
    }
    /* With the hotplug lock taken, op_start returns at once and the op
     * waits; finish says it is running. */
    int lock = hold_lock(e);
    for (int i = 0; i < NOPS; i++) {
        double t = now_ms();
        CHECK_STATUS(xenblock_op_start(ctx, d[i].arg, XENBLOCK_ACTION_ADD, 0, &ops[i]),
                     XENBLOCK_OK, ctx);
        REQUIRE(ops[i], "no op");
        CHECK(now_ms() - t < 1000, "op_start took %.1f ms", now_ms() - t);
    }
    usleep(100000);
    for (int i = 0; i < NOPS; i++) {
        CHECK(!fd_readable(xenblock_op_fd(ops[i])), "op %d done while the lock is held", i);
        CHECK_STATUS(xenblock_op_finish(ops[i]), XENBLOCK_WOULD_BLOCK, ctx);
        CHECK_STR(xenblock_op_error(ops[i]), "");
    }
    drop_lock(e, lock);
    long it = drive(e, ops, NOPS, XENBLOCK_OK);
    CHECK(it >= 1, "the loop ran");
    for (int i = 0; i < NOPS; i++) {
        check_file_connected(e, &d[i], img[i], false, node, sizeof node);
        /* Finished twice: a clear refusal, the op's message unchanged. */
        CHECK_STATUS(xenblock_op_finish(ops[i]), XENBLOCK_INVALID_ARGUMENT, NULL);
        CHECK(strstr(xenblock_last_error(), "already finished") != NULL, "%s",
              xenblock_last_error());
        xenblock_op_free(ops[i]);
    }
    /* Releases, freed half of them before they are done. */
    for (int i = 0; i < NOPS; i++) {
        ct_disk_close(e->xs, &d[i]);
        CHECK_STATUS(xenblock_op_start(ctx, d[i].arg, XENBLOCK_ACTION_REMOVE, 0, &ops[i]),
                     XENBLOCK_OK, ctx);
    }
    for (int i = NOPS / 2; i < NOPS; i++)
        xenblock_op_free(ops[i]);
    drive(e, ops, NOPS / 2, XENBLOCK_OK);
    for (int i = 0; i < NOPS / 2; i++)
        xenblock_op_free(ops[i]);
    /* A synchronous release takes its turn after the freed op on its
     * backend: when it returns, that op is done. */
    for (int i = NOPS / 2; i < NOPS; i++)
        CHECK_STATUS(xenblock_release(ctx, d[i].arg), XENBLOCK_OK, ctx);
    for (int i = 0; i < NOPS; i++) {
        CHECK(ct_loops_of(img[i]) == 0, "a loop device is left on %s", img[i]);
        ct_disk_destroy(e->xs, &d[i]);
    }
    ct_domain_purge(e->xs, 40);
    xenblock_ctx_free(ctx);
}

/* The log of a warm-up: whether the index said it was built. Called on
 * the library's worker threads. */
struct warm_log {
    pthread_mutex_t lock;
    int built;
};

static void warm_log_cb(void *data, xenblock_log_level level, const char *msg)
{
    struct warm_log *w = data;
    (void)level;
    if (getenv("XENBLOCK_CTEST_VERBOSE"))
        fprintf(stderr, "  xenblock: %s\n", msg);
    pthread_mutex_lock(&w->lock);
    if (strstr(msg, "claims index: built ahead of the first decision"))
        w->built++;
    pthread_mutex_unlock(&w->lock);
}

static int warm_built(struct warm_log *w)
{
    pthread_mutex_lock(&w->lock);
    int n = w->built;
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* ABI 1.4: xenblock_ctx_warm returns at once and builds the claims index
 * on a worker thread (with the built-in client: its sentinel node
 * appears; a callback store cannot watch, so nothing happens); a prepare
 * after it attaches as usual; xenblock_ctx_free ends it, and a context
 * freed during a warm-up neither hangs nor leaks. */
static void case_ops_warm(struct ct_env *e)
{
    char img[PATH_MAX], node[PATH_MAX];
    struct warm_log wl = {.lock = PTHREAD_MUTEX_INITIALIZER};
    xenblock_config cfg;
    xenblock_ctx *ctx = NULL;
    ct_config(e, &cfg);
    cfg.log_fn = warm_log_cb;
    cfg.log_data = &wl;
    REQUIRE(xenblock_ctx_new(&cfg, &ctx) == XENBLOCK_OK, "%s", xenblock_last_error());
    ct_domain_purge(e->xs, 42);
    ct_image(e, "warm.img", 4 << 20, img);
    struct ct_disk d = {.domid = 42, .devid = XVDA, .params = img, .mode = "w",
                        .vm = "/vm/c0ffee00-0000-0000-0000-000000000042"};
    ct_disk_add(e->xs, &d);
    CHECK_STATUS(xenblock_ctx_warm(NULL, d.arg), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK_STATUS(xenblock_ctx_warm(ctx, NULL), XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK_STATUS(xenblock_ctx_warm(ctx, "backend/vbd/x/y"), XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK(strstr(xenblock_ctx_last_error(ctx), "not a device backend path") != NULL, "%s",
          xenblock_ctx_last_error(ctx));
    double t = now_ms();
    CHECK_STATUS(xenblock_ctx_warm(ctx, d.arg), XENBLOCK_OK, ctx);
    CHECK(now_ms() - t < 1000, "xenblock_ctx_warm took %.1f ms", now_ms() - t);
    bool built = false;
    /* A callback store: nothing to wait for, 200 ms to see nothing happen. */
    int tries = e->store == CT_STORE_BUILTIN ? 1000 : 20;
    for (int i = 0; i < tries && !built; i++) {
        built = warm_built(&wl) == 1;
        if (!built)
            usleep(10000);
    }
    if (e->store == CT_STORE_BUILTIN)
        CHECK(built, "10 s after xenblock_ctx_warm, the index has not said it was built");
    else
        CHECK(!built, "a callback store cannot watch, yet an index was built");
    CHECK_STATUS(xenblock_prepare(ctx, d.arg), XENBLOCK_OK, ctx);
    check_file_connected(e, &d, img, false, node, sizeof node);
    remove_disk(e, ctx, &d);
    /* Once built, warming again does nothing. */
    CHECK_STATUS(xenblock_ctx_warm(ctx, d.arg), XENBLOCK_OK, ctx);
    usleep(200000);
    xenblock_ctx_free(ctx);
    CHECK(warm_built(&wl) == (e->store == CT_STORE_BUILTIN), "the index was built %d times",
          warm_built(&wl));
    /* Freed while the warm-up may still run: no hang, no leak (valgrind,
     * ASan and TSan ways). */
    for (int i = 0; i < 5; i++) {
        ctx = ct_ctx(e);
        CHECK_STATUS(xenblock_ctx_warm(ctx, d.arg), XENBLOCK_OK, ctx);
        if (i & 1)
            usleep(1000 * i);
        xenblock_ctx_free(ctx);
    }
    ct_disk_destroy(e->xs, &d);
    ct_domain_purge(e->xs, 42);
}

static void case_ops_bad_input(struct ct_env *e)
{
    xenblock_ctx *ctx = ct_ctx(e);
    xenblock_op *op = (xenblock_op *)1;
    CHECK_STATUS(xenblock_op_start(NULL, "backend/vbd/1/51712", 0, 0, &op),
                 XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(op == NULL, "*out not cleared");
    CHECK_STATUS(xenblock_op_start(ctx, "backend/vbd/1/51712", 0, 0, NULL),
                 XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK_STATUS(xenblock_op_start(ctx, NULL, 0, 0, &op), XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK_STATUS(xenblock_op_start(ctx, "backend/vbd/x/y", 0, 0, &op),
                 XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK(strstr(xenblock_ctx_last_error(ctx), "not a device backend path") != NULL, "%s",
          xenblock_ctx_last_error(ctx));
    CHECK_STATUS(xenblock_op_start(ctx, "backend/vbd/1/51712", 7, 0, &op),
                 XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK_STATUS(xenblock_op_start(ctx, "backend/vbd/1/51712", 0, 0x80000000u, &op),
                 XENBLOCK_INVALID_ARGUMENT, ctx);
    CHECK(strstr(xenblock_ctx_last_error(ctx), "does not know") != NULL, "%s",
          xenblock_ctx_last_error(ctx));
    CHECK(op == NULL, "*out not NULL after a refusal");
    CHECK_STATUS(xenblock_op_finish(NULL), XENBLOCK_INVALID_ARGUMENT, NULL);
    CHECK(xenblock_op_fd(NULL) == -1, "op_fd(NULL)");
    CHECK_STR(xenblock_op_error(NULL), "");
    xenblock_op_free(NULL);
    /* A backend that does not exist: the op says so, nothing written. */
    ct_domain_purge(e->xs, 41);
    REQUIRE(xenblock_op_start(ctx, "backend/vbd/41/51712", XENBLOCK_ACTION_ADD, 0, &op) ==
                XENBLOCK_OK, "%s", xenblock_ctx_last_error(ctx));
    struct pollfd p = {.fd = xenblock_op_fd(op), .events = POLLIN};
    REQUIRE(poll(&p, 1, 10000) == 1, "the op did not complete");
    CHECK_STATUS(xenblock_op_finish(op), XENBLOCK_NOT_FOUND, NULL);
    CHECK(strstr(xenblock_op_error(op), "no backend") != NULL, "%s", xenblock_op_error(op));
    CHECK(!ct_exists(e->xs, "/local/domain/0/backend/vbd/41/51712"), "the op wrote a backend");
    xenblock_op_free(op);
    /* Releasing a backend never prepared is fine, as xenblock_release. */
    REQUIRE(xenblock_op_start(ctx, "backend/vbd/41/51712", XENBLOCK_ACTION_REMOVE, 0, &op) ==
                XENBLOCK_OK, "%s", xenblock_ctx_last_error(ctx));
    p.fd = xenblock_op_fd(op);
    REQUIRE(poll(&p, 1, 10000) == 1, "the op did not complete");
    CHECK_STATUS(xenblock_op_finish(op), XENBLOCK_OK, NULL);
    xenblock_op_free(op);
    xenblock_ctx_free(ctx);
}

/* How many of this process's threads are named `comm` (the library names
 * its workers "xenblock-op"); sanitizer runtimes add threads of their own. */
static int count_threads(const char *comm)
{
    DIR *d = opendir("/proc/self/task");
    REQUIRE(d, "opendir /proc/self/task: %s", strerror(errno));
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[PATH_MAX], name[64] = "";
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(p, "re");
        if (!f)
            continue;
        if (fgets(name, sizeof name, f))
            name[strcspn(name, "\n")] = 0;
        fclose(f);
        if (strcmp(name, comm) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    REQUIRE(d, "opendir %s: %s", path, strerror(errno));
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

struct later {
    const struct ct_env *e;
    int fd;
};

static void *release_later(void *arg)
{
    struct later *l = arg;
    usleep(300000);
    drop_lock(l->e, l->fd);
    return NULL;
}

/* ctx_free with ops in flight: the queued and those waiting for the
 * hotplug lock are cancelled at once, without waiting for the lock's holder;
 * no thread and no descriptor of the context is left. (An op past the lock
 * is waited for: tests/ops.rs::shutdown_cancels_queued_and_lock_waiting_ops_and_waits_for_the_running_one.) */
static void case_ops_ctx_free(struct ct_env *e)
{
    char img[4][PATH_MAX];
    struct ct_disk d[4];
    xenblock_op *ops[4];
    ct_domain_purge(e->xs, 42);
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "free-%d.img", i);
        ct_image(e, name, 4 << 20, img[i]);
        d[i] = (struct ct_disk){.domid = 42, .devid = XVDA + 16 * i, .params = img[i],
                                .mode = "w", .vm = "/vm/c0ffee00-0000-0000-0000-000000000042"};
        ct_disk_add(e->xs, &d[i]);
    }
    int tasks = count_dir("/proc/self/task"), fds = count_dir("/proc/self/fd");
    CHECK(count_threads("xenblock-op") == 0, "worker threads before any context");
    int lock = hold_lock(e);
    fds++; /* the lock's descriptor, closed by release_later */
    xenblock_config cfg;
    xenblock_ctx *ctx = NULL;
    ct_config(e, &cfg);
    cfg.workers = 2;
    REQUIRE(xenblock_ctx_new(&cfg, &ctx) == XENBLOCK_OK, "%s", xenblock_last_error());
    for (int i = 0; i < 4; i++)
        CHECK_STATUS(xenblock_op_start(ctx, d[i].arg, XENBLOCK_ACTION_ADD, 0, &ops[i]),
                     XENBLOCK_OK, ctx);
    usleep(200000); /* two workers now wait for the lock, two ops are queued */
    CHECK(count_threads("xenblock-op") == 2, "%d worker threads, expected 2",
          count_threads("xenblock-op"));
    struct later l = {e, lock};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, release_later, &l) == 0, "pthread_create");
    double t0 = now_ms();
    xenblock_ctx_free(ctx);
    CHECK(now_ms() - t0 < 250, "ctx_free took %.0f ms: it waited for the lock's holder",
          now_ms() - t0);
    pthread_join(t, NULL);
    fds--;
    int ok = 0, cancelled = 0;
    for (int i = 0; i < 4; i++) {
        CHECK(fd_readable(xenblock_op_fd(ops[i])), "op %d not done after ctx_free", i);
        xenblock_status st = xenblock_op_finish(ops[i]);
        if (st == XENBLOCK_OK)
            ok++;
        else if (st == XENBLOCK_CANCELLED) {
            cancelled++;
            CHECK(strstr(xenblock_op_error(ops[i]), "nothing was done") != NULL, "%s",
                  xenblock_op_error(ops[i]));
            CHECK_NODE(e->xs, d[i].be, "hotplug-status", NULL);
            CHECK(ct_loops_of(img[i]) == 0, "a cancelled op attached %s", img[i]);
        } else
            CHECK(0, "op %d: %s: %s", i, xenblock_status_str(st), xenblock_op_error(ops[i]));
        xenblock_op_free(ops[i]);
    }
    CHECK(ok == 0 && cancelled == 4, "%d ok, %d cancelled; expected 0 and 4", ok, cancelled);
    CHECK(count_threads("xenblock-op") == 0, "%d worker threads after ctx_free",
          count_threads("xenblock-op"));
    /* Sanitizer runtimes may have started a thread of their own meanwhile. */
    CHECK(count_dir("/proc/self/task") <= tasks + 1, "%d threads after ctx_free, %d before",
          count_dir("/proc/self/task"), tasks);
    CHECK(count_dir("/proc/self/fd") == fds, "%d descriptors after ctx_free, %d before",
          count_dir("/proc/self/fd"), fds);
    xenblock_ctx *c2 = ct_ctx(e);
    for (int i = 0; i < 4; i++) {
        ct_disk_close(e->xs, &d[i]);
        CHECK_STATUS(xenblock_release(c2, d[i].arg), XENBLOCK_OK, c2);
        CHECK(ct_loops_of(img[i]) == 0, "a loop device is left on %s", img[i]);
        ct_disk_destroy(e->xs, &d[i]);
    }
    xenblock_ctx_free(c2);
    ct_domain_purge(e->xs, 42);
}

#define FD_BITS 1024

/* The descriptors below FD_BITS this process has open now (the listing's
 * own excluded); -1 if /proc/self/fd cannot be read. */
static int fd_snapshot(unsigned char open_fds[FD_BITS])
{
    memset(open_fds, 0, FD_BITS);
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        int fd = atoi(de->d_name);
        if (fd == dirfd(d) || fd < 0 || fd >= FD_BITS)
            continue;
        open_fds[fd] = 1;
        n++;
    }
    closedir(d);
    return n;
}

/* A child forked while ops run makes a context of its own and uses it;
 * freeing the inherited context and op closes every descriptor of
 * xenblock the child inherited (the connection, the eventfds, the lock
 * directory's inotify watch, the waiting op's lock file). */
static void case_ops_fork(struct ct_env *e)
{
    char img[2][PATH_MAX], node[PATH_MAX];
    struct ct_disk d[2];
    ct_domain_purge(e->xs, 43);
    for (int i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof name, "fork-%d.img", i);
        ct_image(e, name, 4 << 20, img[i]);
        d[i] = (struct ct_disk){.domid = 43, .devid = XVDA + 16 * i, .params = img[i],
                                .mode = "w", .vm = "/vm/c0ffee00-0000-0000-0000-000000000043"};
        ct_disk_add(e->xs, &d[i]);
    }
    /* The descriptors before any of xenblock's (and the harness's own
     * below): what the child must be back to. */
    static unsigned char before[FD_BITS], after[FD_BITS];
    REQUIRE(fd_snapshot(before) > 0, "cannot list /proc/self/fd");
    xenblock_ctx *ctx = ct_ctx(e);
    int lock = hold_lock(e);
    xenblock_op *op;
    CHECK_STATUS(xenblock_op_start(ctx, d[0].arg, XENBLOCK_ACTION_ADD, 0, &op), XENBLOCK_OK,
                 ctx);
    /* Other ops queued behind it, on other backends and on its own. */
    xenblock_op *more[2];
    CHECK_STATUS(xenblock_op_start(ctx, "backend/vbd/43/1", XENBLOCK_ACTION_REMOVE, 0, &more[0]),
                 XENBLOCK_OK, ctx);
    CHECK_STATUS(xenblock_op_start(ctx, d[0].arg, XENBLOCK_ACTION_ADD, 0, &more[1]),
                 XENBLOCK_OK, ctx);
    /* The release of a backend that does not exist ends at once; the
     * first op's worker then waits for the lock, inside the library, and
     * the second add of d[0] is queued behind it. */
    struct pollfd p0 = {.fd = xenblock_op_fd(more[0]), .events = POLLIN};
    CHECK(poll(&p0, 1, 20000) == 1, "the release of backend/vbd/43/1 did not complete");
    usleep(100000);
    int result[2];
    REQUIRE(pipe(result) == 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* The child: the parent's op and context are not its own. It says
         * "ok" through the pipe (under valgrind its exit status is
         * valgrind's, which counts the parent's threads' memory). */
        close(lock);
        close(result[0]);
        struct xs_handle *xs = NULL;
        xenblock_store_ops ops;
        xenblock_config cfg;
        ct_config(e, &cfg);
        if (e->store == CT_STORE_LIBXS) {
            xs = xs_open(0);
            if (!xs)
                _exit(3);
            ct_libxs_ops(&ops, xs);
            cfg.store = &ops;
        }
        xenblock_ctx *c = NULL;
        if (xenblock_ctx_new(&cfg, &c) != XENBLOCK_OK)
            _exit(4);
        xenblock_op *o = NULL;
        if (xenblock_op_start(c, d[1].arg, XENBLOCK_ACTION_ADD, 0, &o) != XENBLOCK_OK)
            _exit(5);
        struct pollfd p = {.fd = xenblock_op_fd(o), .events = POLLIN};
        if (poll(&p, 1, 20000) != 1)
            _exit(6);
        if (xenblock_op_finish(o) != XENBLOCK_OK) {
            fprintf(stderr, "child: %s\n", xenblock_op_error(o));
            _exit(7);
        }
        xenblock_op_free(o);
        if (xenblock_release(c, d[1].arg) != XENBLOCK_OK)
            _exit(8);
        xenblock_ctx_free(c);
        /* The parent's ops cannot be finished here, only freed. */
        if (xenblock_op_finish(op) != XENBLOCK_BAD_STATE)
            _exit(10);
        /* The parent's context and ops, inherited: freeing them touches
         * none of the parent's threads or locks; it closes the
         * descriptors they had (the context first, then the ops, or the
         * other way round). */
        xenblock_op_free(more[0]);
        xenblock_ctx_free(ctx);
        xenblock_op_free(op);
        xenblock_op_free(more[1]);
        if (xs)
            xs_close(xs);
        if (fd_snapshot(after) < 0)
            _exit(11);
        after[result[1]] = 0;
        for (int fd = 0; fd < FD_BITS; fd++) {
            if (after[fd] && !before[fd]) {
                char p[64], target[PATH_MAX] = "";
                snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
                ssize_t n = readlink(p, target, sizeof target - 1);
                if (n > 0)
                    target[n] = 0;
                fprintf(stderr, "child: descriptor %d (%s) is left open\n", fd, target);
                if (write(result[1], "fd", 2) != 2)
                    _exit(9);
                _exit(12);
            }
        }
        if (write(result[1], "ok", 2) != 2)
            _exit(9);
        _exit(0);
    }
    close(result[1]);
    /* The child needs the lock too: it is ours until we let it go, so
     * let it go now; the child and our op then take turns. */
    drop_lock(e, lock);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    char said[8] = "";
    ssize_t got = read(result[0], said, sizeof said - 1);
    close(result[0]);
    CHECK(got == 2 && strcmp(said, "ok") == 0 && WIFEXITED(status),
          "the child failed (status %#x; it said \"%s\")", status, got > 0 ? said : "");
    struct pollfd p = {.fd = xenblock_op_fd(op), .events = POLLIN};
    CHECK(poll(&p, 1, 20000) == 1, "the parent's op did not complete");
    CHECK_STATUS(xenblock_op_finish(op), XENBLOCK_OK, NULL);
    xenblock_op_free(op);
    check_file_connected(e, &d[0], img[0], false, node, sizeof node);
    /* The ops queued behind it ran in the parent (a second add of d[0]
     * finds it prepared). */
    for (int i = 0; i < 2; i++) {
        p.fd = xenblock_op_fd(more[i]);
        CHECK(poll(&p, 1, 20000) == 1, "the parent's queued op %d did not complete", i);
        CHECK_STATUS(xenblock_op_finish(more[i]), XENBLOCK_OK, NULL);
        xenblock_op_free(more[i]);
    }
    CHECK(ct_loops_of(img[1]) == 0, "the child's disk is still attached");
    for (int i = 0; i < 2; i++) {
        ct_disk_close(e->xs, &d[i]);
        CHECK_STATUS(xenblock_release(ctx, d[i].arg), XENBLOCK_OK, ctx);
        ct_disk_destroy(e->xs, &d[i]);
    }
    xenblock_ctx_free(ctx);
    ct_domain_purge(e->xs, 43);
}

/* ---- a process that exits while its op runs ------------------------------ */

/* The store of the exiting child (libxs variant): libxenstore's, except
 * that the outcome's write of `node` inside a transaction, once done, tells
 * the main thread (through exit_pipe) and waits there for the exit: the
 * process then ends with the loop device attached and the transaction
 * half written. */
static xenblock_store_ops exit_inner;
static int exit_pipe[2] = {-1, -1};

static int exit_write(void *o, uint32_t tx, const char *p, const char *v, size_t l)
{
    int r = exit_inner.write(o, tx, p, v, l);
    size_t n = strlen(p);
    if (tx != 0 && n > 5 && strcmp(p + n - 5, "/node") == 0) {
        if (write(exit_pipe[1], "w", 1) != 1)
            _exit(31);
        for (;;)
            pause();
    }
    return r;
}

/* The child: a context, one op, then exit() from main's thread while the
 * op runs (`delay_us` after the start; with `at_write`, once the op is in
 * the middle of its outcome's transaction). Never returns. */
static void exit_mid_op(struct ct_env *e, const struct ct_disk *d, int delay_us, bool at_write)
{
    struct xs_handle *xs = NULL;
    xenblock_store_ops ops;
    xenblock_config cfg;
    ct_config(e, &cfg);
    if (e->store == CT_STORE_LIBXS) {
        xs = xs_open(0);
        if (!xs)
            _exit(21);
        ct_libxs_ops(&ops, xs);
        if (at_write) {
            exit_inner = ops;
            ops.write = exit_write;
        }
        cfg.store = &ops;
    }
    xenblock_ctx *c = NULL;
    if (xenblock_ctx_new(&cfg, &c) != XENBLOCK_OK)
        _exit(22);
    xenblock_op *o = NULL;
    if (xenblock_op_start(c, d->arg, XENBLOCK_ACTION_ADD, 0, &o) != XENBLOCK_OK)
        _exit(23);
    if (at_write) {
        char b;
        if (read(exit_pipe[0], &b, 1) != 1)
            _exit(24);
    } else if (delay_us > 0) {
        usleep((useconds_t)delay_us);
    }
    exit(0); /* as a return from main: atexit handlers run, threads die */
}

/* A process that exits while its op runs leaves no half-written xenstore
 * state: the backend shows either the complete outcome (hotplug-status
 * connected with physical-device, node and physical-device-path, and
 * that loop device attached) or none of it; a loop device attached
 * before the outcome was committed carries xenblock's tag, and
 * xenblock_reconcile detaches it (the recovery of docs/contract.md). */
static void case_ops_exit(struct ct_env *e)
{
    char img[PATH_MAX];
    struct ct_disk d;
    ct_domain_purge(e->xs, 44);
    ct_image(e, "exit.img", 4 << 20, img);
    xenblock_ctx *ctx = ct_ctx(e);
    /* Exits at a spread of moments from before the worker starts to
     * after the op is done; with the callback store also one at the
     * worst moment, inside the outcome's transaction (deterministic). */
    static const int delays_us[] = {0, 50, 100, 200, 300, 400, 600, 800, 1000, 1500, 2500, 5000, 50000};
    int ntrials = (int)(sizeof delays_us / sizeof delays_us[0]);
    if (e->store == CT_STORE_LIBXS)
        ntrials++;
    int complete = 0, nothing = 0, orphans = 0;
    for (int t = 0; t < ntrials; t++) {
        bool at_write = t == (int)(sizeof delays_us / sizeof delays_us[0]);
        d = (struct ct_disk){.domid = 44, .devid = XVDA, .params = img, .mode = "w",
                             .vm = "/vm/c0ffee00-0000-0000-0000-000000000044"};
        ct_disk_add(e->xs, &d);
        if (at_write)
            REQUIRE(pipe(exit_pipe) == 0, "pipe: %s", strerror(errno));
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
            exit_mid_op(e, &d, at_write ? 0 : delays_us[t], at_write);
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
        if (at_write) {
            close(exit_pipe[0]);
            close(exit_pipe[1]);
        }
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "trial %d: the child failed (%#x)",
              t, status);
        char *hs = ct_read(e->xs, "%s/hotplug-status", d.be);
        char *pd = ct_read(e->xs, "%s/physical-device", d.be);
        char *nd = ct_read(e->xs, "%s/node", d.be);
        char *pp = ct_read(e->xs, "%s/physical-device-path", d.be);
        int loops = ct_loops_of(img);
        if (hs && strcmp(hs, "connected") == 0) {
            complete++;
            CHECK(pd && nd && pp, "trial %d: connected without physical-device/node/path", t);
            CHECK(loops == 1, "trial %d: connected, %d loop devices on the image", t, loops);
        } else {
            CHECK(!hs && !pd && !nd && !pp,
                  "trial %d: half-written: hotplug-status %s, physical-device %s, node %s, "
                  "physical-device-path %s",
                  t, hs ? hs : "-", pd ? pd : "-", nd ? nd : "-", pp ? pp : "-");
            if (loops > 0)
                orphans++;
            else
                nothing++;
            CHECK(!at_write || loops == 1, "trial %d: exit inside the transaction: %d loops", t,
                  loops);
        }
        /* The recovery: reconcile detaches what no backend names, and
         * nothing that one does. */
        uint32_t detached = 99;
        CHECK_STATUS(xenblock_reconcile(ctx, "/local/domain/0/backend/vbd/44/", &detached),
                     XENBLOCK_OK, ctx);
        bool connected = hs && strcmp(hs, "connected") == 0;
        CHECK(detached == (uint32_t)(connected ? 0 : loops), "trial %d: reconcile detached %u",
              t, detached);
        CHECK(ct_loops_of(img) == (connected ? 1 : 0), "trial %d: %d loops after reconcile", t,
              ct_loops_of(img));
        free(hs);
        free(pd);
        free(nd);
        free(pp);
        ct_disk_close(e->xs, &d);
        CHECK_STATUS(xenblock_release(ctx, d.arg), XENBLOCK_OK, ctx);
        CHECK(ct_loops_of(img) == 0, "trial %d: release left a loop device", t);
        ct_disk_destroy(e->xs, &d);
    }
    fprintf(stderr, "ops_exit: %d complete, %d nothing written, %d orphan loop devices reconciled\n",
            complete, nothing, orphans);
    CHECK(e->store != CT_STORE_LIBXS || orphans >= 1, "the exit inside the transaction was not seen");
    xenblock_ctx_free(ctx);
    ct_domain_purge(e->xs, 44);
}

/* ---- another guest's disk on a FUSE mount whose daemon is stopped ------- */

/* A minimal FUSE file system spoken on /dev/fuse directly (no library): a
 * root directory holding one regular file, `disk.img`, nothing cached by
 * the kernel (every stat() of the file asks the daemon). */
#define FUSE_FILE_INO 2
#define FUSE_FILE_SIZE (1 << 20)

static void fuse_attr_of(uint64_t ino, struct fuse_attr *a)
{
    memset(a, 0, sizeof *a);
    a->ino = ino;
    a->nlink = 1;
    a->blksize = 4096;
    if (ino == FUSE_ROOT_ID) {
        a->mode = S_IFDIR | 0755;
        a->nlink = 2;
    } else {
        a->mode = S_IFREG | 0644;
        a->size = FUSE_FILE_SIZE;
        a->blocks = FUSE_FILE_SIZE / 512;
    }
}

static void fuse_reply(int fd, uint64_t unique, int error, const void *body, size_t len)
{
    char buf[sizeof(struct fuse_out_header) + 256];
    struct fuse_out_header h = {.len = (uint32_t)(sizeof h + len), .error = error,
                                .unique = unique};
    memcpy(buf, &h, sizeof h);
    if (len)
        memcpy(buf + sizeof h, body, len);
    if (write(fd, buf, sizeof h + len) < 0 && errno != ENOENT)
        _exit(errno == ENODEV ? 0 : 41);
}

/* Serve `fd` until the connection goes away (unmounted or aborted). */
static void fuse_serve(int fd)
{
    static char buf[1 << 17];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            _exit(errno == ENODEV ? 0 : 42);
        }
        if ((size_t)n < sizeof(struct fuse_in_header))
            _exit(43);
        struct fuse_in_header *in = (struct fuse_in_header *)buf;
        const char *arg = buf + sizeof *in;
        switch (in->opcode) {
        case FUSE_INIT: {
            const struct fuse_init_in *ii = (const void *)arg;
            struct fuse_init_out o = {.major = FUSE_KERNEL_VERSION,
                                      .minor = ii->minor < FUSE_KERNEL_MINOR_VERSION
                                                   ? ii->minor
                                                   : FUSE_KERNEL_MINOR_VERSION,
                                      .max_write = 4096};
            fuse_reply(fd, in->unique, 0, &o, sizeof o);
            break;
        }
        case FUSE_LOOKUP:
            if (in->nodeid == FUSE_ROOT_ID && strcmp(arg, "disk.img") == 0) {
                struct fuse_entry_out o = {.nodeid = FUSE_FILE_INO, .generation = 1};
                fuse_attr_of(FUSE_FILE_INO, &o.attr);
                fuse_reply(fd, in->unique, 0, &o, sizeof o);
            } else {
                fuse_reply(fd, in->unique, -ENOENT, NULL, 0);
            }
            break;
        case FUSE_GETATTR: {
            struct fuse_attr_out o = {0};
            fuse_attr_of(in->nodeid == FUSE_ROOT_ID ? FUSE_ROOT_ID : FUSE_FILE_INO, &o.attr);
            fuse_reply(fd, in->unique, 0, &o, sizeof o);
            break;
        }
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET:
        case FUSE_INTERRUPT:
            break;
        case FUSE_DESTROY:
            fuse_reply(fd, in->unique, 0, NULL, 0);
            _exit(0);
        default:
            fuse_reply(fd, in->unique, -ENOSYS, NULL, 0);
        }
    }
}

static struct {
    char mnt[PATH_MAX];
    unsigned conn; /* the connection's number in /sys/fs/fuse/connections */
    pid_t daemon;
    bool mounted;
} fuse_m;

/* Abort the connection (every request waiting, and every later one, fails
 * with ENOTCONN), detach the mount, end the daemon. Idempotent; also run
 * at exit, so a failed case leaves no hung mount. */
static void fuse_teardown(void)
{
    if (fuse_m.mounted) {
        char p[128];
        snprintf(p, sizeof p, "/sys/fs/fuse/connections/%u/abort", fuse_m.conn);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "1", 1) != 1)
                fprintf(stderr, "cannot abort FUSE connection %u: %s\n", fuse_m.conn,
                        strerror(errno));
            close(fd);
        }
        if (umount2(fuse_m.mnt, MNT_DETACH) != 0)
            fprintf(stderr, "umount -l %s: %s\n", fuse_m.mnt, strerror(errno));
        fuse_m.mounted = false;
    }
    if (fuse_m.daemon > 0) {
        kill(fuse_m.daemon, SIGKILL);
        kill(fuse_m.daemon, SIGCONT);
        waitpid(fuse_m.daemon, NULL, 0);
        fuse_m.daemon = 0;
    }
}

/* Mount the file system at `mnt` with its daemon in a child process;
 * returns the file's path. */
static void fuse_mount(const char *mnt, char *file, size_t len)
{
    snprintf(fuse_m.mnt, sizeof fuse_m.mnt, "%s", mnt);
    REQUIRE(mkdir(mnt, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", mnt, strerror(errno));
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0, "open /dev/fuse: %s (is the fuse module loaded?)", strerror(errno));
    char opts[128];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
    REQUIRE(mount("xenblock-test", mnt, "fuse.xenblock-test", MS_NOSUID | MS_NODEV, opts) == 0,
            "mount FUSE at %s: %s", mnt, strerror(errno));
    fuse_m.mounted = true;
    atexit(fuse_teardown);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        fuse_serve(fd);
    fuse_m.daemon = pid;
    close(fd);
    struct stat st;
    int n = snprintf(file, len, "%s/disk.img", mnt);
    REQUIRE(n > 0 && (size_t)n < len, "the mount path is too long");
    /* Served while the daemon runs; its connection number is the minor
     * of the file system's device. */
    REQUIRE(stat(file, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == FUSE_FILE_SIZE,
            "stat %s through the FUSE daemon: %s", file, strerror(errno));
    fuse_m.conn = minor(st.st_dev);
}

/* Another guest's qdisk backend names a file on a FUSE mount whose daemon
 * is stopped, so stat() of it never returns. op_start and the caller's
 * loop are not delayed; the op whose decision stats it waits (holding the
 * hotplug lock) until the file system answers or is aborted; other ops
 * needing the lock end with XENBLOCK_TIMEOUT after lock_timeout_ms; ops
 * that need no lock complete. */
static void case_ops_stuck_stat(struct ct_env *e)
{
    char mnt[PATH_MAX], file[PATH_MAX + 16], img[2][PATH_MAX], be[PATH_MAX];
    snprintf(mnt, sizeof mnt, "%s/fuse", e->dir);
    /* Before any context: the daemon is a child of a process with no
     * thread yet. */
    fuse_mount(mnt, file, sizeof file);
    ct_domain_purge(e->xs, 45);
    ct_domain_purge(e->xs, 46);
    snprintf(be, sizeof be, "/local/domain/0/backend/qdisk/45/51712");
    char params[PATH_MAX + 32];
    snprintf(params, sizeof params, "raw:%s", file);
    ct_write(e->xs, "/local/domain/45/vm", "/vm/c0ffee00-0000-0000-0000-000000000045");
    const char *nodes[][2] = {{"params", params}, {"mode", "w"}, {"type", "qdisk"},
                              {"frontend-id", "45"}, {"state", "4"}};
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s", be, nodes[i][0]);
        ct_write(e->xs, p, nodes[i][1]);
    }
    struct ct_disk d[2];
    for (int i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof name, "stuck-%d.img", i);
        ct_image(e, name, 4 << 20, img[i]);
        d[i] = (struct ct_disk){.domid = 46, .devid = XVDA + 16 * i, .params = img[i],
                                .mode = "w", .vm = "/vm/c0ffee00-0000-0000-0000-000000000046"};
        ct_disk_add(e->xs, &d[i]);
    }
    xenblock_config cfg;
    xenblock_ctx *ctx = NULL;
    ct_config(e, &cfg);
    cfg.workers = 4;
    cfg.lock_timeout_ms = 1000;
    REQUIRE(xenblock_ctx_new(&cfg, &ctx) == XENBLOCK_OK, "%s", xenblock_last_error());
    /* The daemon answers: a prepare and a release go through. */
    CHECK_STATUS(xenblock_prepare(ctx, d[1].arg), XENBLOCK_OK, ctx);
    ct_disk_close(e->xs, &d[1]);
    CHECK_STATUS(xenblock_release(ctx, d[1].arg), XENBLOCK_OK, ctx);
    ct_disk_destroy(e->xs, &d[1]);
    ct_disk_add(e->xs, &d[1]);

    REQUIRE(kill(fuse_m.daemon, SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
    xenblock_op *a = NULL, *b = NULL, *c = NULL;
    CHECK_STATUS(xenblock_op_start(ctx, d[0].arg, XENBLOCK_ACTION_ADD, 0, &a), XENBLOCK_OK, ctx);
    REQUIRE(a, "no op");
    /* The caller's loop runs on: 100 turns of 5 ms while the op's worker
     * is stuck in stat(), holding the hotplug lock. */
    long turns = 0;
    for (; turns < 100; turns++) {
        struct pollfd p = {.fd = xenblock_op_fd(a), .events = POLLIN};
        int r = poll(&p, 1, 5);
        REQUIRE(r >= 0, "poll: %s", strerror(errno));
        CHECK(r == 0, "the op completed while the daemon is stopped: %s (%s)",
              xenblock_status_str(xenblock_op_finish(a)), xenblock_op_error(a));
        free(ct_read(e->xs, "/local/domain/0/name"));
    }
    CHECK_STATUS(xenblock_op_finish(a), XENBLOCK_WOULD_BLOCK, NULL);
    /* Another add needs the hotplug lock, which the stuck op holds: it
     * ends after lock_timeout_ms, naming this process's other thread. */
    CHECK_STATUS(xenblock_op_start(ctx, d[1].arg, XENBLOCK_ACTION_ADD, 0, &b), XENBLOCK_OK, ctx);
    /* A release of a backend never prepared needs no lock: it completes. */
    CHECK_STATUS(xenblock_op_start(ctx, "backend/vbd/46/1", XENBLOCK_ACTION_REMOVE, 0, &c),
                 XENBLOCK_OK, ctx);
    struct pollfd pc = {.fd = xenblock_op_fd(c), .events = POLLIN};
    CHECK(poll(&pc, 1, 20000) == 1, "the lock-free release did not complete");
    CHECK_STATUS(xenblock_op_finish(c), XENBLOCK_OK, NULL);
    struct pollfd pb = {.fd = xenblock_op_fd(b), .events = POLLIN};
    CHECK(poll(&pb, 1, 20000) == 1, "the second add did not end at its lock timeout");
    CHECK_STATUS(xenblock_op_finish(b), XENBLOCK_TIMEOUT, NULL);
    CHECK(strstr(xenblock_op_error(b), "hotplug lock") != NULL, "%s", xenblock_op_error(b));
    CHECK(!fd_readable(xenblock_op_fd(a)), "the stuck op completed");
    /* Aborting the connection makes the stat fail (ENOTCONN): the stuck
     * op goes on, the unreadable path naming nothing it could conflict
     * with. */
    fuse_teardown();
    struct pollfd pa = {.fd = xenblock_op_fd(a), .events = POLLIN};
    CHECK(poll(&pa, 1, 20000) == 1, "the op did not complete after the FUSE abort");
    CHECK_STATUS(xenblock_op_finish(a), XENBLOCK_OK, NULL);
    xenblock_op_free(a);
    xenblock_op_free(b);
    xenblock_op_free(c);
    for (int i = 0; i < 2; i++) {
        ct_disk_close(e->xs, &d[i]);
        CHECK_STATUS(xenblock_release(ctx, d[i].arg), XENBLOCK_OK, ctx);
        CHECK(ct_loops_of(img[i]) == 0, "a loop device is left on %s", img[i]);
        ct_disk_destroy(e->xs, &d[i]);
    }
    xenblock_ctx_free(ctx);
    ct_rm(e->xs, "/local/domain/0/backend/qdisk/45");
    ct_domain_purge(e->xs, 45);
    ct_domain_purge(e->xs, 46);
}

/* ---- main ------------------------------------------------------------- */

struct test_case {
    const char *name;
    bool needs_store;
    void (*fn)(struct ct_env *);
};

static const struct test_case cases[] = {
    {"file_rw", true, case_file_rw},
    {"file_ro_shared", true, case_file_ro_shared},
    {"busy", true, case_busy},
    {"errors", true, case_errors},
    {"phy", true, case_phy},
    {"custom_script", true, case_custom_script},
    {"invalid_args", true, case_invalid_args},
    {"abi_size", true, case_abi_size},
    {"image_locks", true, case_image_locks},
    {"embedding", true, case_embedding},
    {"threads_one_ctx", true, case_threads_one_ctx},
    {"threads_many_ctx", true, case_threads_many_ctx},
    {"ops_event_loop", true, case_ops_event_loop},
    {"ops_bad_input", true, case_ops_bad_input},
    {"ops_warm", true, case_ops_warm},
    {"ops_ctx_free", true, case_ops_ctx_free},
    {"ops_fork", true, case_ops_fork},
    {"ops_exit", true, case_ops_exit},
    {"ops_stuck_stat", true, case_ops_stuck_stat},
    {"status_strings", false, case_status_strings},
    {"store_ops_args", false, case_store_ops_args},
};

int main(int argc, char **argv)
{
    setvbuf(stderr, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            if (cases[i].needs_store) {
                printf("%s builtin\n%s libxs\n", cases[i].name, cases[i].name);
            } else {
                printf("%s none\n", cases[i].name);
            }
        }
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s --list | %s CASE builtin|libxs|none\n", argv[0], argv[0]);
        return 2;
    }
    enum ct_store store;
    if (strcmp(argv[2], "builtin") == 0)
        store = CT_STORE_BUILTIN;
    else if (strcmp(argv[2], "libxs") == 0)
        store = CT_STORE_LIBXS;
    else if (strcmp(argv[2], "none") == 0)
        store = CT_STORE_NONE;
    else {
        fprintf(stderr, "unknown store %s\n", argv[2]);
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
    if (tc->needs_store != (store != CT_STORE_NONE)) {
        fprintf(stderr, "case %s %s a store\n", tc->name,
                tc->needs_store ? "needs" : "takes no");
        return 2;
    }
    REQUIRE(geteuid() == 0, "the harness needs root (loop devices); it does not skip");

    struct ct_env e;
    ct_env_init(&e, store);
    unsigned long calls = ct_libxs_calls();
    tc->fn(&e);
    if (store == CT_STORE_BUILTIN)
        CHECK(ct_libxs_calls() == calls, "the built-in client case called the callbacks");
    if (store == CT_STORE_LIBXS)
        CHECK(ct_libxs_calls() > calls, "the callback store was never called");
    int left = ct_loops_under(e.dir);
    CHECK(left == 0, "%d loop device(s) on the case's images are still attached", left);
    ct_env_fini(&e);
    if (ct_failures) {
        ct_detach_under(e.dir);
        fprintf(stderr, "%s %s: %d check(s) failed\n", tc->name, argv[2], ct_failures);
        return 1;
    }
    return 0;
}
