/*
 * xenblock's libxl hotplug plugin: libxl's hotplug plugin interface
 * (libxl_hotplug_plugin.h, a copy of the header of the libxl series in
 * integrations/libxl/upstream) over libxenblock's asynchronous C API.
 *
 * One xenblock context per libxl ctx; each libxl op is one xenblock op
 * (xenblock_op_start / _fd / _finish / _error / _free). The context uses
 * xenblock's own xenstore connection, never libxl's, so the worker
 * threads never touch libxl's state; its log goes to libxl's logger.
 *
 * Installed as <libxl's plugin directory>/xenblock.so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xenblock.h>

#include "libxl_hotplug_plugin.h"

/* The op API (xenblock_op_*) came with ABI 1.2. */
#define NEED_ABI ((1u << 16) | 2u)

/*
 * How long an op waits for Xen's hotplug lock: below libxl's own bound
 * (LIBXL_HOTPLUG_TIMEOUT, 40 s), so that a lock held too long fails with
 * xenblock's message rather than libxl's timeout.
 */
#define LOCK_TIMEOUT_MS 30000

struct plugin_state {
    xenblock_ctx *xb;
    libxl_hotplug_plugin_logger *lg;
};

static void plugin_log(void *data, xenblock_log_level level, const char *msg)
{
    struct plugin_state *st = data;
    int l;

    switch (level) {
    case XENBLOCK_LOG_DEBUG: l = LIBXL_HOTPLUG_PLUGIN_LOG_DEBUG; break;
    case XENBLOCK_LOG_INFO: l = LIBXL_HOTPLUG_PLUGIN_LOG_INFO; break;
    case XENBLOCK_LOG_WARN: l = LIBXL_HOTPLUG_PLUGIN_LOG_WARN; break;
    default: l = LIBXL_HOTPLUG_PLUGIN_LOG_ERROR; break;
    }
    st->lg->log(st->lg, l, msg);
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
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_size = sizeof(cfg);
    cfg.log_fn = plugin_log;
    cfg.log_data = st;
    cfg.lock_timeout_ms = LOCK_TIMEOUT_MS;
    s = xenblock_ctx_new(&cfg, &st->xb);
    if (s != XENBLOCK_OK) {
        snprintf(err, errlen, "xenblock_ctx_new: %s", xenblock_last_error());
        free(st);
        return -1;
    }
    *state_r = st;
    return 0;
}

static void plugin_ctx_free(void *state)
{
    struct plugin_state *st = state;

    /* Cancels this context's queued ops; running ones finish. */
    xenblock_ctx_free(st->xb);
    free(st);
}

static int plugin_op_start(void *state, const char *backend_path, int action,
                           void **op_r, char *err, size_t errlen)
{
    struct plugin_state *st = state;
    struct xenblock_op *op = NULL;
    uint32_t a;

    switch (action) {
    case LIBXL_HOTPLUG_PLUGIN_ADD: a = XENBLOCK_ACTION_ADD; break;
    case LIBXL_HOTPLUG_PLUGIN_REMOVE: a = XENBLOCK_ACTION_REMOVE; break;
    default:
        snprintf(err, errlen, "xenblock: unknown hotplug action %d for %s",
                 action, backend_path);
        return -1;
    }
    if (xenblock_op_start(st->xb, backend_path, a, 0, &op) != XENBLOCK_OK) {
        snprintf(err, errlen, "%s", xenblock_ctx_last_error(st->xb));
        return -1;
    }
    *op_r = op;
    return 0;
}

static int plugin_op_fd(void *op)
{
    return xenblock_op_fd(op);
}

static int plugin_op_finish(void *op, const char **msg_r)
{
    switch (xenblock_op_finish(op)) {
    case XENBLOCK_OK:
        return LIBXL_HOTPLUG_PLUGIN_DONE;
    case XENBLOCK_WOULD_BLOCK:
        return LIBXL_HOTPLUG_PLUGIN_PENDING;
    default:
        *msg_r = xenblock_op_error(op);
        return LIBXL_HOTPLUG_PLUGIN_FAILED;
    }
}

static void plugin_op_free(void *op)
{
    xenblock_op_free(op);
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
};
