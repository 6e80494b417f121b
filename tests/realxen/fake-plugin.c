/*
 * A libxl hotplug plugin that misbehaves on purpose, for the fault checks
 * of tests/realxen/plugin.sh (built by tests/realxen/plugin-prep.sh, one
 * .so per -DFAKE_... variant, installed in libxl's plugin directory):
 *   -DFAKE_ABI=N      exports interface version N
 *   -DFAKE_CTXFAIL    ctx_new fails with a message
 *   -DFAKE_OPFAIL     every add finishes FAILED with a message
 *   -DFAKE_RMFAIL     op_start of every remove fails with a message
 *   -DFAKE_FAULT      an add misbehaves as its disk's device id says
 *                     (link with -pthread):
 *                       51712 (xvda)  op_start aborts the process (SIGABRT)
 *                       51728 (xvdb)  op_start returns; 300 ms later the
 *                                     op's thread dies of SIGSEGV (the
 *                                     process dies while libxl waits for
 *                                     the op's descriptor)
 *                       51744 (xvdc)  it never finishes: its descriptor
 *                                     never becomes readable
 *                     and any other disk's add is done at once
 *   -DFAKE_NO_COMING  add_coming is NULL (it is optional)
 * Without a -D switch every op is done at once, doing nothing.
 * A remove (but with FAKE_RMFAIL) finishes DONE at once, having done
 * nothing. It never touches xenstore or a disk; it appends a line for each op_start and
 * op_free to FAKE_LOG, e.g. "op_free add /local/.../51712 pending", and one for each
 * add_coming and op_start, with the calling process's pid, to FAKE_SEQ, e.g.
 * "1234 add_coming /local/.../51712" then "1234 op_start add /local/.../51712".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#ifdef FAKE_FAULT
#include <pthread.h>
#endif

#include "libxl_hotplug_plugin.h"

#ifndef FAKE_ABI
#define FAKE_ABI LIBXL_HOTPLUG_PLUGIN_ABI
#endif

#ifndef FAKE_LOG
#define FAKE_LOG "/run/xenblock-fake-plugin.log"
#endif

#ifndef FAKE_SEQ
#define FAKE_SEQ "/run/xenblock-fake-plugin.seq"
#endif

struct fake_op {
    int fd;
    int action;
    int done;
    char be[160];
    char msg[256];
};

static void fake_note(const char *what, const struct fake_op *op)
{
    FILE *f = fopen(FAKE_LOG, "a");

    if (!f)
        return;
    fprintf(f, "%s %s %s%s\n", what, op->action == LIBXL_HOTPLUG_PLUGIN_ADD ? "add" : "remove",
            op->be, op->done ? "" : " pending");
    fclose(f);
}

/* One line, one write(2) (O_APPEND): lines of concurrent xl processes never mix. */
static void fake_seq(const char *what, const char *be)
{
    char line[256];
    FILE *f = fopen(FAKE_SEQ, "a");

    if (!f)
        return;
    setvbuf(f, line, _IOFBF, sizeof(line));
    fprintf(f, "%ld %s %s\n", (long)getpid(), what, be);
    fclose(f);
}

#ifndef FAKE_NO_COMING
static void fake_add_coming(void *state, const char *be) { fake_seq("add_coming", be); }
#endif

#ifdef FAKE_FAULT
static void *fake_crash(void *arg)
{
    (void)arg;
    usleep(300 * 1000);
    *(volatile int *)0 = 1; /* SIGSEGV, on the plugin's thread */
    return NULL;
}
#endif

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
#ifdef FAKE_RMFAIL
    if (action == LIBXL_HOTPLUG_PLUGIN_REMOVE) {
        snprintf(err, errlen, "fake plugin cannot start the remove of %s (as asked)", be);
        free(op);
        return -1;
    }
#endif
    op->action = action;
    op->done = 1;
#ifdef FAKE_FAULT
    const char *dev = strrchr(be, '/');
    int fault = 0;

    if (action == LIBXL_HOTPLUG_PLUGIN_ADD && dev)
        fault = atoi(dev + 1);
    if (fault == 51712 || fault == 51728 || fault == 51744)
        op->done = 0;
#endif
    op->fd = eventfd(op->done, EFD_CLOEXEC); /* readable when done */
    if (op->fd < 0) {
        snprintf(err, errlen, "fake plugin: eventfd failed");
        free(op);
        return -1;
    }
    snprintf(op->be, sizeof(op->be), "%s", be);
    snprintf(op->msg, sizeof(op->msg), "fake plugin refuses the add of %s (as asked)", be);
    fake_note("op_start", op);
    fake_seq(action == LIBXL_HOTPLUG_PLUGIN_ADD ? "op_start add" : "op_start remove", be);
#ifdef FAKE_FAULT
    if (fault == 51712)
        abort();
    if (fault == 51728) {
        pthread_t t;

        if (pthread_create(&t, NULL, fake_crash, NULL)) {
            snprintf(err, errlen, "fake plugin: pthread_create failed");
            close(op->fd);
            free(op);
            return -1;
        }
        pthread_detach(t);
    }
#endif
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
    if (!op->done)
        return LIBXL_HOTPLUG_PLUGIN_PENDING;
    return LIBXL_HOTPLUG_PLUGIN_DONE;
}

static void fake_op_free(void *vop)
{
    struct fake_op *op = vop;
    fake_note("op_free", op);
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
#ifndef FAKE_NO_COMING
    .add_coming = fake_add_coming,
#endif
};
