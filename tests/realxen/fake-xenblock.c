/*
 * A fake libxenblock.so.1 for the fault checks of the real-Xen suite
 * (tests/realxen/inprocess.sh, step `faults`): it lets patched libxl meet
 * a library it must decline, and so prove that it then logs one warning
 * and runs the hotplug script exactly as before.  Built on the host by
 * tests/realxen/run-suite.sh into ~/.cache/xenblock/realxen/fake-xenblock/
 * and found by libxl's dlopen() through LD_LIBRARY_PATH.
 *
 * Behaviour, chosen per process by XENBLOCK_FAKE in the environment:
 *   abi2      xenblock_abi_version() says 2.0 (another ABI major)
 *   ctxfail   xenblock_ctx_new() fails (as when no xenstore can be used)
 *   unknown   plans say "in-process", and every prepare/release returns
 *             status 99, which no ABI 1.x defines
 * Built with -DFAKE_NO_PLAN it does not export xenblock_plan_new (a
 * library too old or incomplete for libxl).
 *
 * It never touches xenstore or a device: anything it is asked to do that
 * libxl should not ask fails loudly (status XENBLOCK_INTERNAL).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xenblock.h"

static const char *fake(void)
{
    const char *f = getenv("XENBLOCK_FAKE");

    return f ? f : "";
}

static int is(const char *mode)
{
    return !strcmp(fake(), mode);
}

uint32_t xenblock_abi_version(void)
{
    return is("abi2") ? (2u << 16) : ((1u << 16) | 1u);
}

const char *xenblock_version(void)
{
    return "0.0.0-fake";
}

const char *xenblock_status_str(uint32_t status)
{
    switch (status) {
    case XENBLOCK_OK: return "ok";
    case XENBLOCK_STORE_ERROR: return "store error";
    case XENBLOCK_INTERNAL: return "internal error";
    default: return "unknown status";
    }
}

const char *xenblock_last_error(void)
{
    return "fake libxenblock: cannot reach xenstore (XENBLOCK_FAKE=ctxfail)";
}

struct xenblock_ctx {
    int unused;
};

static struct xenblock_ctx the_ctx;

xenblock_status xenblock_ctx_new(const struct xenblock_config *cfg,
                                 struct xenblock_ctx **out)
{
    (void)cfg;
    if (is("ctxfail"))
        return XENBLOCK_STORE_ERROR;
    *out = &the_ctx;
    return XENBLOCK_OK;
}

void xenblock_ctx_free(struct xenblock_ctx *ctx)
{
    (void)ctx;
}

const char *xenblock_ctx_last_error(const struct xenblock_ctx *ctx)
{
    (void)ctx;
    return is("unknown") ? "fake libxenblock: status 99 (XENBLOCK_FAKE=unknown)"
                         : "fake libxenblock: not expected to be called";
}

static xenblock_status work(void)
{
    return is("unknown") ? 99 : XENBLOCK_INTERNAL;
}

xenblock_status xenblock_prepare(struct xenblock_ctx *ctx, const char *path)
{
    (void)ctx; (void)path;
    return work();
}

xenblock_status xenblock_release(struct xenblock_ctx *ctx, const char *path)
{
    (void)ctx; (void)path;
    return work();
}

xenblock_status xenblock_prepare_ex(struct xenblock_ctx *ctx, const char *path,
                                    uint32_t flags)
{
    (void)ctx; (void)path; (void)flags;
    return work();
}

xenblock_status xenblock_release_ex(struct xenblock_ctx *ctx, const char *path,
                                    uint32_t flags)
{
    (void)ctx; (void)path; (void)flags;
    return work();
}

#ifndef FAKE_NO_PLAN
static struct xenblock_plan the_plan = { .in_process = true };

xenblock_status xenblock_plan_new(struct xenblock_ctx *ctx,
                                  const char *path,
                                  xenblock_action action,
                                  struct xenblock_plan **out)
{
    (void)ctx; (void)path; (void)action;
    *out = &the_plan;
    return XENBLOCK_OK;
}
#endif

void xenblock_plan_free(struct xenblock_plan *plan)
{
    (void)plan;
}
