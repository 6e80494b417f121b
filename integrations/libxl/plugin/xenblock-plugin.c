/*
 * xenblock's libxl hotplug plugin: libxl's hotplug plugin interface
 * (libxl_hotplug_plugin.h, a copy of the header of the libxl series in
 * integrations/libxl/upstream) over libxenblock's asynchronous C API.
 *
 * One xenblock context per libxl ctx; each libxl op is one xenblock op
 * (xenblock_op_start / _fd / _finish / _error / _free), and libxl's
 * announcement of an add (add_coming) warms the context for it
 * (xenblock_ctx_warm). The context uses
 * xenblock's own xenstore connection, never libxl's, so the worker
 * threads never touch libxl's state.
 *
 * Logging: libxenblock calls its log callback on its worker threads, but
 * libxl's logger may only be called from within libxl's calls to the
 * plugin, on libxl's thread (libxl_hotplug_plugin.h). So the callback
 * only queues the message (at most LOG_QUEUE_MAX; beyond that it counts
 * them), and every entry point but op_fd hands the queue to libxl's
 * logger before it returns: an op's messages come at the latest with its
 * op_finish (libxenblock logs an op's lines before its descriptor becomes
 * readable), those of ops freed unfinished at the next call, and what is
 * left at ctx_free in ctx_free, after libxenblock's threads have ended.
 * Overflow gives one line, "N messages dropped", after the queued ones.
 *
 * Installed as <libxl's plugin directory>/xenblock.so.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xenblock.h>

#include "libxl_hotplug_plugin.h"

/* The op API (xenblock_op_*) came with ABI 1.2. */
#define NEED_ABI ((1u << 16) | 2u)
/* xenblock_ctx_warm came with 1.4: optional, so the plugin still loads
 * (RTLD_NOW) and works with a 1.2 or 1.3 library, without the warm-up. */
#define WARM_ABI ((1u << 16) | 4u)
#pragma weak xenblock_ctx_warm

/*
 * How long an op waits for Xen's hotplug lock: below libxl's own bound
 * (LIBXL_HOTPLUG_TIMEOUT, 40 s), so that a lock held too long fails with
 * xenblock's message rather than libxl's timeout.
 */
#define LOCK_TIMEOUT_MS 30000

/*
 * The hotplug lock directory: NULL is libxenblock's default, Xen's own
 * (/var/run/xen-hotplug). The C harness (c-tests/run) builds the plugin
 * with a private one.
 */
#ifndef XENBLOCK_PLUGIN_LOCK_DIR
#define XENBLOCK_PLUGIN_LOCK_DIR NULL
#endif

/*
 * How many messages wait at most for libxl's next call. An op logs a
 * few lines; a custom script's output is the only long source.
 */
#define LOG_QUEUE_MAX 256
/* A longer message is cut here. */
#define LOG_MSG_MAX 1024

struct queued_msg {
    struct queued_msg *next;
    int level;
    char text[];
};

struct plugin_state {
    xenblock_ctx *xb;
    int can_warm; /* the library has xenblock_ctx_warm */
    libxl_hotplug_plugin_logger *lg;
    /* The messages of libxenblock's threads, oldest first. */
    pthread_mutex_t lock;
    struct queued_msg *head, **tail;
    unsigned int queued;
    unsigned long dropped;
    int dropped_level; /* the highest level dropped */
};

struct plugin_op {
    struct plugin_state *st;
    struct xenblock_op *xb;
};

/* libxenblock's log callback: any thread, never libxl's logger. */
static void plugin_log(void *data, xenblock_log_level level, const char *msg)
{
    struct plugin_state *st = data;
    struct queued_msg *m;
    size_t len = strnlen(msg, LOG_MSG_MAX);
    int l;

    switch (level) {
    case XENBLOCK_LOG_DEBUG: l = LIBXL_HOTPLUG_PLUGIN_LOG_DEBUG; break;
    case XENBLOCK_LOG_INFO: l = LIBXL_HOTPLUG_PLUGIN_LOG_INFO; break;
    case XENBLOCK_LOG_WARN: l = LIBXL_HOTPLUG_PLUGIN_LOG_WARN; break;
    default: l = LIBXL_HOTPLUG_PLUGIN_LOG_ERROR; break;
    }
    /* Made before the lock, so that the queue's lock is never held
     * across malloc; freed unused when the queue is full. */
    m = malloc(sizeof(*m) + len + 1);
    if (m) {
        m->next = NULL;
        m->level = l;
        memcpy(m->text, msg, len);
        m->text[len] = 0;
    }
    pthread_mutex_lock(&st->lock);
    if (m && st->queued < LOG_QUEUE_MAX) {
        *st->tail = m;
        st->tail = &m->next;
        st->queued++;
        m = NULL; /* the queue's now */
    } else {
        if (!st->dropped || l > st->dropped_level)
            st->dropped_level = l;
        st->dropped++;
    }
    pthread_mutex_unlock(&st->lock);
    free(m);
}

/*
 * Hands the queued messages to libxl's logger. Only from an entry point,
 * on the thread libxl called it on; without the queue's lock held, so
 * that libxenblock's threads go on queueing meanwhile.
 */
static void plugin_deliver(struct plugin_state *st)
{
    struct queued_msg *m;
    unsigned long dropped;
    int dropped_level;
    char line[128];

    pthread_mutex_lock(&st->lock);
    m = st->head;
    dropped = st->dropped;
    dropped_level = st->dropped_level;
    st->head = NULL;
    st->tail = &st->head;
    st->queued = 0;
    st->dropped = 0;
    pthread_mutex_unlock(&st->lock);

    while (m) {
        struct queued_msg *next = m->next;

        st->lg->log(st->lg, m->level, m->text);
        free(m);
        m = next;
    }
    if (dropped) {
        snprintf(line, sizeof(line),
                 "xenblock: %lu messages dropped (more than %d waited for"
                 " libxl's next call)", dropped, LOG_QUEUE_MAX);
        st->lg->log(st->lg, dropped_level, line);
    }
}

static void plugin_state_free(struct plugin_state *st)
{
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static int plugin_ctx_new(libxl_hotplug_plugin_logger *lg, void **state_r,
                          char *err, size_t errlen)
{
    struct xenblock_config cfg;
    struct plugin_state *st;
    uint32_t abi = xenblock_abi_version();
    xenblock_status s;

    if ((abi >> 16) != (NEED_ABI >> 16) ||
        (abi & 0xffff) < (NEED_ABI & 0xffff)) {
        snprintf(err, errlen,
                 "libxenblock has ABI %u.%u, this plugin needs 1.2 or a"
                 " later 1.x: install a matching libxenblock1",
                 abi >> 16, abi & 0xffff);
        return -1;
    }
    st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->lg = lg;
    st->tail = &st->head;
    if (pthread_mutex_init(&st->lock, NULL)) {
        snprintf(err, errlen, "cannot make a mutex");
        free(st);
        return -1;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_size = sizeof(cfg);
    cfg.log_fn = plugin_log;
    cfg.log_data = st;
    cfg.lock_dir = XENBLOCK_PLUGIN_LOCK_DIR;
    cfg.lock_timeout_ms = LOCK_TIMEOUT_MS;
    s = xenblock_ctx_new(&cfg, &st->xb);
    if (s != XENBLOCK_OK) {
        snprintf(err, errlen, "xenblock_ctx_new: %s", xenblock_last_error());
        plugin_deliver(st);
        plugin_state_free(st);
        return -1;
    }
    plugin_deliver(st);
    st->can_warm = xenblock_ctx_warm && (abi & 0xffff) >= (WARM_ABI & 0xffff);
    *state_r = st;
    return 0;
}

static void plugin_ctx_free(void *state)
{
    struct plugin_state *st = state;

    /*
     * Cancels this context's queued ops and waits for the running ones:
     * their threads have ended when it returns, so the queue is final.
     */
    xenblock_ctx_free(st->xb);
    plugin_deliver(st);
    plugin_state_free(st);
}

static int plugin_op_start(void *state, const char *backend_path, int action,
                           void **op_r, char *err, size_t errlen)
{
    struct plugin_state *st = state;
    struct plugin_op *op;
    uint32_t a;

    switch (action) {
    case LIBXL_HOTPLUG_PLUGIN_ADD: a = XENBLOCK_ACTION_ADD; break;
    case LIBXL_HOTPLUG_PLUGIN_REMOVE: a = XENBLOCK_ACTION_REMOVE; break;
    default:
        snprintf(err, errlen, "xenblock: unknown hotplug action %d for %s",
                 action, backend_path);
        plugin_deliver(st);
        return -1;
    }
    op = calloc(1, sizeof(*op));
    if (!op) {
        snprintf(err, errlen, "xenblock: out of memory starting the op"
                 " on %s", backend_path);
        plugin_deliver(st);
        return -1;
    }
    op->st = st;
    if (xenblock_op_start(st->xb, backend_path, a, 0, &op->xb)
        != XENBLOCK_OK) {
        snprintf(err, errlen, "%s", xenblock_ctx_last_error(st->xb));
        free(op);
        plugin_deliver(st);
        return -1;
    }
    plugin_deliver(st);
    *op_r = op;
    return 0;
}

/*
 * libxl has written a backend whose add comes once blkback is ready for
 * it: libxenblock builds its claims index now, on its own thread, so that
 * the add's decision does not read every other backend (under xl, whose
 * every command is a new process with a new context).
 */
static void plugin_add_coming(void *state, const char *backend_path)
{
    struct plugin_state *st = state;

    if (!st->can_warm)
        return;
    if (xenblock_ctx_warm(st->xb, backend_path) != XENBLOCK_OK)
        st->lg->log(st->lg, LIBXL_HOTPLUG_PLUGIN_LOG_DEBUG,
                    xenblock_ctx_last_error(st->xb));
    plugin_deliver(st);
}

/* Not a place to log: the one entry point that only answers. */
static int plugin_op_fd(void *opv)
{
    struct plugin_op *op = opv;

    return xenblock_op_fd(op->xb);
}

static int plugin_op_finish(void *opv, const char **msg_r)
{
    struct plugin_op *op = opv;
    int r;

    switch (xenblock_op_finish(op->xb)) {
    case XENBLOCK_OK:
        r = LIBXL_HOTPLUG_PLUGIN_DONE;
        break;
    case XENBLOCK_WOULD_BLOCK:
        r = LIBXL_HOTPLUG_PLUGIN_PENDING;
        break;
    default:
        *msg_r = xenblock_op_error(op->xb);
        r = LIBXL_HOTPLUG_PLUGIN_FAILED;
        break;
    }
    /* The op's lines were queued before its descriptor became readable. */
    plugin_deliver(op->st);
    return r;
}

static void plugin_op_free(void *opv)
{
    struct plugin_op *op = opv;
    struct plugin_state *st = op->st;

    xenblock_op_free(op->xb);
    free(op);
    plugin_deliver(st);
}

__attribute__((visibility("default")))
const libxl_hotplug_plugin_ops libxl_hotplug_plugin = {
    .abi_version = LIBXL_HOTPLUG_PLUGIN_ABI,
    .size = sizeof(libxl_hotplug_plugin_ops),
    .name = "xenblock",
    .ctx_new = plugin_ctx_new,
    .ctx_free = plugin_ctx_free,
    .op_start = plugin_op_start,
    .op_fd = plugin_op_fd,
    .op_finish = plugin_op_finish,
    .op_free = plugin_op_free,
    .add_coming = plugin_add_coming,
};
