/*
 * Shared support for the xenblock C harness: checks, the caller-side
 * xenstore (libxenstore, as libxl uses it), backends written the way libxl
 * writes them, a xenblock_store_ops backed by libxenstore, and loop-device
 * helpers that only ever touch what the harness itself made.
 */
#ifndef XENBLOCK_CTEST_COMMON_H
#define XENBLOCK_CTEST_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xenblock.h>
#include <xenstore.h>

/* ---- checks ---------------------------------------------------------- */

/* Failed checks so far (all threads). */
extern int ct_failures;

void ct_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Clean up what the harness made (loop devices on its images) and exit 1. */
void ct_abort(void) __attribute__((noreturn));

/* A failed CHECK is counted and the case goes on; REQUIRE stops the case. */
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond))                                                         \
            ct_fail(__FILE__, __LINE__, "CHECK(" #cond ") failed: "          \
                    __VA_ARGS__);                                            \
    } while (0)
#define REQUIRE(cond, ...)                                                   \
    do {                                                                     \
        if (!(cond)) {                                                       \
            ct_fail(__FILE__, __LINE__, "REQUIRE(" #cond ") failed: "        \
                    __VA_ARGS__);                                            \
            ct_abort();                                                      \
        }                                                                    \
    } while (0)

/* Compare a status with its expected value, naming both on failure. */
#define CHECK_STATUS(got, want, ctx)                                         \
    do {                                                                     \
        xenblock_status got_ = (got), want_ = (want);                        \
        if (got_ != want_)                                                   \
            ct_fail(__FILE__, __LINE__,                                      \
                    "%s gave %u (%s), expected %u (%s); last error: %s",     \
                    #got, (unsigned)got_, xenblock_status_str(got_),         \
                    (unsigned)want_, xenblock_status_str(want_),             \
                    (ctx) ? xenblock_ctx_last_error(ctx)                     \
                          : xenblock_last_error());                          \
    } while (0)

/* Compare a malloc'd (or NULL) string with an expected one (NULL = absent). */
void ct_check_str(const char *file, int line, const char *what,
                  const char *got, const char *want);
#define CHECK_STR(got, want) ct_check_str(__FILE__, __LINE__, #got, got, want)

/* ---- environment ----------------------------------------------------- */

enum ct_store { CT_STORE_NONE, CT_STORE_BUILTIN, CT_STORE_LIBXS };

struct ct_env {
    enum ct_store store;     /* which store the contexts under test use */
    char dir[256];           /* scratch directory of this run */
    char lock_dir[300];      /* hotplug lock directory given to contexts */
    struct xs_handle *xs;    /* the caller's own handle, as libxl's ctx->xsh */
    xenblock_store_ops ops;  /* callback store over `xs` (CT_STORE_LIBXS) */
};

/* Set up from $XENBLOCK_CTEST_DIR and $XENSTORED_PATH; opens `xs` unless
 * store is CT_STORE_NONE. */
void ct_env_init(struct ct_env *e, enum ct_store store);
void ct_env_fini(struct ct_env *e);

/* Fill `ops` with callbacks over libxenstore handle `h`. */
void ct_libxs_ops(xenblock_store_ops *ops, struct xs_handle *h);
/* How many times the libxenstore callbacks were called (all handles). */
unsigned long ct_libxs_calls(void);

/* A config for the context under test: built-in client or the callback
 * store, the run's lock directory, a log callback. */
void ct_config(const struct ct_env *e, xenblock_config *cfg);
/* ct_config + xenblock_ctx_new, REQUIREd to succeed. */
xenblock_ctx *ct_ctx(const struct ct_env *e);

/* ---- xenstore, caller side ------------------------------------------- */

/* Read a node (printf-style path); malloc'd NUL-terminated string or NULL. */
char *ct_read(struct xs_handle *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ct_write(struct xs_handle *h, const char *path, const char *value);
bool ct_exists(struct xs_handle *h, const char *path);
void ct_rm(struct xs_handle *h, const char *path);

/* CHECK that node `be`/`name` equals `want` (NULL: is absent). */
void ct_check_node(const char *file, int line, struct xs_handle *h,
                   const char *be, const char *name, const char *want);
#define CHECK_NODE(h, be, name, want)                                        \
    ct_check_node(__FILE__, __LINE__, h, be, name, want)

/* ---- a disk, as libxl's device_disk_add writes it -------------------- */

struct ct_disk {
    int domid;               /* frontend domain */
    int devid;               /* virtual device number (51712 = xvda) */
    const char *params;      /* the disk's target */
    const char *mode;        /* "w" / "r" (libxl writes only these) */
    const char *script;      /* NULL: /etc/xen/scripts/block */
    const char *vm;          /* /local/domain/<domid>/vm */
    bool absolute;           /* pass the absolute backend path to xenblock */
    /* filled by ct_disk_add */
    char be[128];            /* /local/domain/0/backend/vbd/<domid>/<devid> */
    char be_rel[128];        /* backend/vbd/<domid>/<devid> */
    char fe[128];            /* /local/domain/<domid>/device/vbd/<devid> */
    const char *arg;         /* what to pass to xenblock_prepare/release */
};

/* Write the domain's vm node, the backend (state 1) and frontend dirs in one
 * transaction as libxl does, then move the backend to state 2 (InitWait) as
 * blkback would. */
void ct_disk_add(struct xs_handle *h, struct ct_disk *d);
/* libxl's removal up to the hotplug call: online 0, state 5 then 6. */
void ct_disk_close(struct xs_handle *h, const struct ct_disk *d);
/* libxl__device_destroy: remove the backend and frontend dirs. */
void ct_disk_destroy(struct xs_handle *h, const struct ct_disk *d);
/* Remove everything a domain may have left (backend/vbd/<domid>, its home). */
void ct_domain_purge(struct xs_handle *h, int domid);

/* ---- files and loop devices ------------------------------------------ */

/* Create a sparse image `name` in the scratch dir; returns its path (static
 * storage per call site is not shared: `out` must hold PATH_MAX). */
void ct_image(const struct ct_env *e, const char *name, long size, char *out);
/* The backing file of /dev/loopN per sysfs, or "" if unbound. */
void ct_loop_backing(const char *node, char *out, size_t n);
/* Is `node` bound to `file` (canonical path)? */
bool ct_loop_backed_by(const char *node, const char *file);
/* Wait up to 3 s for `node` to be unbound from `file`. */
bool ct_loop_wait_detached(const char *node, const char *file);
/* How many loop devices are bound to `file`. */
int ct_loops_of(const char *file);
/* How many loop devices are bound to files under the scratch dir. */
int ct_loops_under(const char *dir);
/* Detach every loop device bound to a file under `dir` (cleanup net). */
int ct_detach_under(const char *dir);
/* Attach `file` to a free loop device with ioctls (the harness's stand-in
 * block device); `out` gets /dev/loopN. */
void ct_loop_attach(const char *file, char *out, size_t n);
/* LOOP_CLR_FD on a device the harness attached. */
void ct_loop_detach(const char *node);
/* "major:minor" in lower-case hex, as physical-device is written. */
void ct_devnum_hex(const char *node, char *out, size_t n);

#endif
