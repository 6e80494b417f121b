/*
 * A libxl hotplug plugin that misbehaves on purpose, for the fault checks
 * of tests/realxen/plugin.sh (built by tests/realxen/plugin-prep.sh, one
 * .so per -DFAKE_... variant, installed in libxl's plugin directory):
 *   -DFAKE_ABI=N      exports interface version N
 *   -DFAKE_CTXFAIL    ctx_new fails with a message
 *   -DFAKE_OPFAIL     every add finishes FAILED with a message (a remove
 *                     finishes DONE, having done nothing)
 * It never touches xenstore or a disk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "libxl_hotplug_plugin.h"

#ifndef FAKE_ABI
#define FAKE_ABI LIBXL_HOTPLUG_PLUGIN_ABI
#endif

struct fake_op {
    int fd;
    int action;
    char msg[256];
};

static int fake_ctx_new(libxl_hotplug_plugin_logger *lg, void **state_r, char *err,
                        size_t errlen)
{
#ifdef FAKE_CTXFAIL
    snprintf(err, errlen, "fake plugin: cannot start (as asked)");
    return -1;
#else
    *state_r = lg;
    return 0;
#endif
}

static void fake_ctx_free(void *state) {}

static int fake_op_start(void *state, const char *be, int action, void **op_r, char *err,
                         size_t errlen)
{
    struct fake_op *op = calloc(1, sizeof(*op));

    if (!op) {
        snprintf(err, errlen, "fake plugin: out of memory");
        return -1;
    }
    op->fd = eventfd(1, EFD_CLOEXEC); /* readable at once: done */
    op->action = action;
    snprintf(op->msg, sizeof(op->msg), "fake plugin refuses the add of %s (as asked)", be);
    *op_r = op;
    return 0;
}

static int fake_op_fd(void *op) { return ((struct fake_op *)op)->fd; }

static int fake_op_finish(void *vop, const char **msg_r)
{
    struct fake_op *op = vop;
#ifdef FAKE_OPFAIL
    if (op->action == LIBXL_HOTPLUG_PLUGIN_ADD) {
        *msg_r = op->msg;
        return LIBXL_HOTPLUG_PLUGIN_FAILED;
    }
#endif
    (void)op;
    return LIBXL_HOTPLUG_PLUGIN_DONE;
}

static void fake_op_free(void *vop)
{
    struct fake_op *op = vop;
    close(op->fd);
    free(op);
}

__attribute__((visibility("default"))) const libxl_hotplug_plugin_ops libxl_hotplug_plugin = {
    .abi_version = FAKE_ABI,
    .size = sizeof(libxl_hotplug_plugin_ops),
    .name = "fake",
    .ctx_new = fake_ctx_new,
    .ctx_free = fake_ctx_free,
    .op_start = fake_op_start,
    .op_fd = fake_op_fd,
    .op_finish = fake_op_finish,
    .op_free = fake_op_free,
};
