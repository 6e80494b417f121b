#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

int ct_failures;
static _Atomic unsigned long libxs_calls;
static char scratch_dir[256];

/* ---- checks ---------------------------------------------------------- */

void ct_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    char msg[2048];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One write per message so lines from threads do not interleave. */
    fprintf(stderr, "FAIL %s:%d: %s\n", file, line, msg);
    __atomic_add_fetch(&ct_failures, 1, __ATOMIC_SEQ_CST);
}

void ct_abort(void)
{
    if (scratch_dir[0]) {
        int n = ct_detach_under(scratch_dir);
        if (n > 0)
            fprintf(stderr, "cleanup: detached %d loop device(s) left by the failed case\n", n);
    }
    exit(1);
}

void ct_check_str(const char *file, int line, const char *what,
                  const char *got, const char *want)
{
    if (!want && !got)
        return;
    if (want && got && strcmp(want, got) == 0)
        return;
    ct_fail(file, line, "%s is %s%s%s, expected %s%s%s", what,
            got ? "\"" : "", got ? got : "absent", got ? "\"" : "",
            want ? "\"" : "", want ? want : "absent", want ? "\"" : "");
}

/* ---- environment ----------------------------------------------------- */

static void log_cb(void *data, xenblock_log_level level, const char *msg)
{
    (void)data;
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (getenv("XENBLOCK_CTEST_VERBOSE"))
        fprintf(stderr, "  xenblock %s: %s\n", level < 4 ? names[level] : "?", msg);
}

void ct_env_init(struct ct_env *e, enum ct_store store)
{
    memset(e, 0, sizeof *e);
    e->store = store;
    const char *dir = getenv("XENBLOCK_CTEST_DIR");
    REQUIRE(dir && *dir == '/', "set XENBLOCK_CTEST_DIR to an absolute scratch directory");
    REQUIRE(strlen(dir) < sizeof e->dir - 1, "XENBLOCK_CTEST_DIR too long");
    snprintf(e->dir, sizeof e->dir, "%s", dir);
    snprintf(scratch_dir, sizeof scratch_dir, "%s", dir);
    snprintf(e->lock_dir, sizeof e->lock_dir, "%s/lock", dir);
    if (store == CT_STORE_NONE)
        return;
    REQUIRE(getenv("XENSTORED_PATH"), "set XENSTORED_PATH to the xenstored socket");
    e->xs = xs_open(0);
    REQUIRE(e->xs, "xs_open(0) failed: %s (XENSTORED_PATH=%s)", strerror(errno),
            getenv("XENSTORED_PATH"));
    if (store == CT_STORE_LIBXS)
        ct_libxs_ops(&e->ops, e->xs);
}

void ct_env_fini(struct ct_env *e)
{
    if (e->xs)
        xs_close(e->xs);
    e->xs = NULL;
}

void ct_config(const struct ct_env *e, xenblock_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->abi_size = sizeof *cfg;
    cfg->store = e->store == CT_STORE_LIBXS ? &e->ops : NULL;
    cfg->lock_dir = e->lock_dir;
    cfg->store_timeout_ms = 10000;
    cfg->log_fn = log_cb;
}

xenblock_ctx *ct_ctx(const struct ct_env *e)
{
    xenblock_config cfg;
    xenblock_ctx *ctx = NULL;
    ct_config(e, &cfg);
    xenblock_status st = xenblock_ctx_new(&cfg, &ctx);
    REQUIRE(st == XENBLOCK_OK && ctx, "xenblock_ctx_new: %s: %s", xenblock_status_str(st),
            xenblock_last_error());
    return ctx;
}

/* ---- the callback store over libxenstore ------------------------------ */

/* libxenstore reports failures in errno; never hand back 0 for a failure. */
static int xs_errno(void)
{
    int e = errno;
    return e > 0 ? e : EIO;
}

static int ops_read(void *opaque, uint32_t tx, const char *path, char **value, size_t *len)
{
    unsigned int l = 0;
    atomic_fetch_add(&libxs_calls, 1);
    errno = 0;
    void *v = xs_read(opaque, tx, path, &l);
    if (!v)
        return xs_errno();
    *value = v;
    *len = l;
    return 0;
}

static int ops_write(void *opaque, uint32_t tx, const char *path, const char *value, size_t len)
{
    atomic_fetch_add(&libxs_calls, 1);
    if (len > UINT_MAX)
        return E2BIG;
    errno = 0;
    return xs_write(opaque, tx, path, value, (unsigned int)len) ? 0 : xs_errno();
}

static int ops_remove(void *opaque, uint32_t tx, const char *path)
{
    atomic_fetch_add(&libxs_calls, 1);
    errno = 0;
    return xs_rm(opaque, tx, path) ? 0 : xs_errno();
}

static int ops_directory(void *opaque, uint32_t tx, const char *path, char ***entries,
                         size_t *count)
{
    unsigned int n = 0;
    atomic_fetch_add(&libxs_calls, 1);
    errno = 0;
    /* One malloc'd block holding the array and the strings. */
    char **d = xs_directory(opaque, tx, path, &n);
    if (!d)
        return xs_errno();
    *entries = d;
    *count = n;
    return 0;
}

static int ops_tx_start(void *opaque, uint32_t *tx)
{
    atomic_fetch_add(&libxs_calls, 1);
    errno = 0;
    xs_transaction_t t = xs_transaction_start(opaque);
    if (t == XBT_NULL)
        return xs_errno();
    *tx = t;
    return 0;
}

static int ops_tx_end(void *opaque, uint32_t tx, bool commit)
{
    atomic_fetch_add(&libxs_calls, 1);
    errno = 0;
    /* EAGAIN (conflict) passes through: xenblock retries the transaction. */
    return xs_transaction_end(opaque, tx, !commit) ? 0 : xs_errno();
}

static void ops_free(void *opaque, void *p)
{
    (void)opaque;
    free(p);
}

void ct_libxs_ops(xenblock_store_ops *ops, struct xs_handle *h)
{
    memset(ops, 0, sizeof *ops);
    ops->abi_size = sizeof *ops;
    ops->opaque = h;
    ops->read = ops_read;
    ops->write = ops_write;
    ops->remove = ops_remove;
    ops->directory = ops_directory;
    ops->transaction_start = ops_tx_start;
    ops->transaction_end = ops_tx_end;
    ops->free_fn = ops_free;
    ops->directory_frees_each = false;
}

unsigned long ct_libxs_calls(void)
{
    return atomic_load(&libxs_calls);
}

/* ---- xenstore, caller side ------------------------------------------- */

char *ct_read(struct xs_handle *h, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    unsigned int len = 0;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    char *v = xs_read(h, XBT_NULL, path, &len);
    if (!v && errno != ENOENT)
        ct_fail(__FILE__, __LINE__, "xs_read %s: %s", path, strerror(errno));
    return v; /* libxenstore NUL-terminates what it returns */
}

void ct_write(struct xs_handle *h, const char *path, const char *value)
{
    REQUIRE(xs_write(h, XBT_NULL, path, value, strlen(value)), "xs_write %s: %s", path,
            strerror(errno));
}

bool ct_exists(struct xs_handle *h, const char *path)
{
    unsigned int len;
    char *v = xs_read(h, XBT_NULL, path, &len);
    free(v);
    return v != NULL;
}

void ct_rm(struct xs_handle *h, const char *path)
{
    if (!xs_rm(h, XBT_NULL, path) && errno != ENOENT)
        ct_fail(__FILE__, __LINE__, "xs_rm %s: %s", path, strerror(errno));
}

void ct_check_node(const char *file, int line, struct xs_handle *h, const char *be,
                   const char *name, const char *want)
{
    char what[512];
    char *got = ct_read(h, "%s/%s", be, name);
    snprintf(what, sizeof what, "%s/%s", be, name);
    ct_check_str(file, line, what, got, want);
    free(got);
}

/* ---- a disk, as libxl writes it -------------------------------------- */

void ct_disk_add(struct xs_handle *h, struct ct_disk *d)
{
    char num[32], fe_id[32], devid[32], vdev[16];
    snprintf(d->be_rel, sizeof d->be_rel, "backend/vbd/%d/%d", d->domid, d->devid);
    snprintf(d->be, sizeof d->be, "/local/domain/0/backend/vbd/%d/%d", d->domid, d->devid);
    snprintf(d->fe, sizeof d->fe, "/local/domain/%d/device/vbd/%d", d->domid, d->devid);
    d->arg = d->absolute ? d->be : d->be_rel;
    snprintf(fe_id, sizeof fe_id, "%d", d->domid);
    snprintf(devid, sizeof devid, "%d", d->devid);
    /* xvda = 51712 = (202 << 8); each further disk is 16 minors on. */
    snprintf(vdev, sizeof vdev, "xvd%c", 'a' + ((d->devid - 51712) / 16) % 26);

    const char *back[][2] = {
        {"frontend", d->fe},
        {"params", d->params},
        {"script", d->script ? d->script : "/etc/xen/scripts/block"},
        {"frontend-id", fe_id},
        {"online", "1"},
        {"removable", "0"},
        {"bootable", "1"},
        {"state", "1"},
        {"dev", vdev},
        {"type", "phy"},
        {"mode", d->mode},
        {"device-type", "disk"},
        {"discard-enable", "1"},
    };
    const char *front[][2] = {
        {"backend", d->be},
        {"backend-id", "0"},
        {"state", "1"},
        {"virtual-device", devid},
        {"device-type", "disk"},
        {"trusted", "1"},
    };
    char path[512];
    for (int attempt = 0;; attempt++) {
        REQUIRE(attempt < 100, "%s: transaction kept conflicting", d->be);
        xs_transaction_t t = xs_transaction_start(h);
        REQUIRE(t != XBT_NULL, "xs_transaction_start: %s", strerror(errno));
        bool ok = true;
        snprintf(path, sizeof path, "/local/domain/%d/vm", d->domid);
        ok = ok && xs_write(h, t, path, d->vm, strlen(d->vm));
        snprintf(path, sizeof path, "/local/domain/%d/name", d->domid);
        snprintf(num, sizeof num, "guest%d", d->domid);
        ok = ok && xs_write(h, t, path, num, strlen(num));
        for (size_t i = 0; ok && i < sizeof back / sizeof back[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", d->be, back[i][0]);
            ok = xs_write(h, t, path, back[i][1], strlen(back[i][1]));
        }
        for (size_t i = 0; ok && i < sizeof front / sizeof front[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", d->fe, front[i][0]);
            ok = xs_write(h, t, path, front[i][1], strlen(front[i][1]));
        }
        REQUIRE(ok, "%s: writing the device: %s", d->be, strerror(errno));
        if (xs_transaction_end(h, t, false))
            break;
        REQUIRE(errno == EAGAIN, "xs_transaction_end: %s", strerror(errno));
    }
    /* blkback's answer: XenbusStateInitWait, which the hotplug add waits for. */
    snprintf(path, sizeof path, "%s/state", d->be);
    ct_write(h, path, "2");
}

void ct_disk_close(struct xs_handle *h, const struct ct_disk *d)
{
    char path[512];
    snprintf(path, sizeof path, "%s/online", d->be);
    ct_write(h, path, "0");
    snprintf(path, sizeof path, "%s/state", d->be);
    ct_write(h, path, "5");
    ct_write(h, path, "6");
}

void ct_disk_destroy(struct xs_handle *h, const struct ct_disk *d)
{
    ct_rm(h, d->fe);
    ct_rm(h, d->be);
    CHECK(!ct_exists(h, d->be), "%s still exists", d->be);
}

void ct_domain_purge(struct xs_handle *h, int domid)
{
    char path[128];
    snprintf(path, sizeof path, "/local/domain/0/backend/vbd/%d", domid);
    ct_rm(h, path);
    snprintf(path, sizeof path, "/local/domain/%d", domid);
    ct_rm(h, path);
}

/* ---- files and loop devices ------------------------------------------ */

void ct_image(const struct ct_env *e, const char *name, long size, char *out)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", e->dir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0, "create %s: %s", p, strerror(errno));
    REQUIRE(ftruncate(fd, size) == 0, "truncate %s: %s", p, strerror(errno));
    close(fd);
    REQUIRE(realpath(p, out), "realpath %s: %s", p, strerror(errno));
}

static const char *loop_name(const char *node)
{
    const char *b = strrchr(node, '/');
    return b ? b + 1 : node;
}

void ct_loop_backing(const char *node, char *out, size_t n)
{
    char p[PATH_MAX];
    out[0] = 0;
    snprintf(p, sizeof p, "/sys/block/%s/loop/backing_file", loop_name(node));
    FILE *f = fopen(p, "re");
    if (!f)
        return;
    if (!fgets(out, (int)n, f))
        out[0] = 0;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
}

bool ct_loop_backed_by(const char *node, const char *file)
{
    char b[PATH_MAX];
    ct_loop_backing(node, b, sizeof b);
    return strcmp(b, file) == 0;
}

bool ct_loop_wait_detached(const char *node, const char *file)
{
    for (int i = 0; i < 300; i++) {
        if (!ct_loop_backed_by(node, file))
            return true;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    return false;
}

/* Call fn on each bound loop device with its backing file; count matches. */
static int each_loop(bool (*match)(const char *backing, const char *arg), const char *arg,
                     bool detach)
{
    DIR *d = opendir("/sys/block");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (strncmp(ent->d_name, "loop", 4) != 0)
            continue;
        char b[PATH_MAX], node[300];
        ct_loop_backing(ent->d_name, b, sizeof b);
        if (!b[0] || !match(b, arg))
            continue;
        n++;
        if (detach) {
            snprintf(node, sizeof node, "/dev/%s", ent->d_name);
            ct_loop_detach(node);
        }
    }
    closedir(d);
    return n;
}

static bool match_file(const char *backing, const char *file)
{
    return strcmp(backing, file) == 0;
}

static bool match_under(const char *backing, const char *dir)
{
    size_t l = strlen(dir);
    return strncmp(backing, dir, l) == 0 && backing[l] == '/';
}

int ct_loops_of(const char *file)
{
    return each_loop(match_file, file, false);
}

int ct_loops_under(const char *dir)
{
    return each_loop(match_under, dir, false);
}

int ct_detach_under(const char *dir)
{
    return each_loop(match_under, dir, true);
}

void ct_loop_attach(const char *file, char *out, size_t n)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    REQUIRE(ctl >= 0, "open /dev/loop-control: %s", strerror(errno));
    int ffd = open(file, O_RDWR | O_CLOEXEC);
    REQUIRE(ffd >= 0, "open %s: %s", file, strerror(errno));
    for (int tries = 0;; tries++) {
        REQUIRE(tries < 50, "no free loop device for %s", file);
        int num = ioctl(ctl, LOOP_CTL_GET_FREE);
        REQUIRE(num >= 0, "LOOP_CTL_GET_FREE: %s", strerror(errno));
        snprintf(out, n, "/dev/loop%d", num);
        int dev = -1;
        for (int w = 0; w < 500 && dev < 0; w++) { /* devtmpfs may lag */
            dev = open(out, O_RDWR | O_CLOEXEC);
            if (dev < 0 && errno == ENOENT)
                nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
            else if (dev < 0)
                break;
        }
        REQUIRE(dev >= 0, "open %s: %s", out, strerror(errno));
        if (ioctl(dev, LOOP_SET_FD, ffd) == 0) {
            struct loop_info64 info;
            memset(&info, 0, sizeof info);
            snprintf((char *)info.lo_file_name, sizeof info.lo_file_name,
                     "xenblock-ctest-blockdev");
            if (ioctl(dev, LOOP_SET_STATUS64, &info) != 0)
                ct_fail(__FILE__, __LINE__, "LOOP_SET_STATUS64 %s: %s", out, strerror(errno));
            close(dev);
            break;
        }
        int err = errno;
        close(dev);
        REQUIRE(err == EBUSY, "LOOP_SET_FD %s: %s", out, strerror(err));
    }
    close(ffd);
    close(ctl);
}

void ct_loop_detach(const char *node)
{
    int dev = open(node, O_RDONLY | O_CLOEXEC);
    if (dev < 0) {
        ct_fail(__FILE__, __LINE__, "open %s: %s", node, strerror(errno));
        return;
    }
    for (int tries = 0; ioctl(dev, LOOP_CLR_FD) != 0; tries++) {
        if (errno == ENXIO)
            break; /* already unbound */
        if (errno != EBUSY || tries > 100) {
            ct_fail(__FILE__, __LINE__, "LOOP_CLR_FD %s: %s", node, strerror(errno));
            break;
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    close(dev);
}

void ct_devnum_hex(const char *node, char *out, size_t n)
{
    struct stat st;
    out[0] = 0;
    if (stat(node, &st) != 0 || !S_ISBLK(st.st_mode)) {
        ct_fail(__FILE__, __LINE__, "%s is not a block device", node);
        return;
    }
    snprintf(out, n, "%x:%x", major(st.st_rdev), minor(st.st_rdev));
}
