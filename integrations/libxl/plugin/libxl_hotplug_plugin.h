/*
 * libxl_hotplug_plugin.h - the interface of libxl's hotplug plugins
 *
 * This program is free software; you can redistribute it and/or modify
 * it under the terms of the GNU Lesser General Public License as published
 * by the Free Software Foundation; version 2.1 only. with the special
 * exception on linking described in file LICENSE.
 *
 * This program is distributed in the hope that it will be useful,
 * but WITHOUT ANY WARRANTY; without even the implied warranty of
 * MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
 * GNU Lesser General Public License for more details.
 */

/*
 * A hotplug plugin does, inside the toolstack's process, the work that
 * the "block" hotplug script does for a vbd backend: it prepares the
 * backend on add (writing the nodes the script writes, including
 * hotplug-status) and releases it on remove.
 *
 * A plugin is a shared object NAME.so in libxl's hotplug plugin
 * directory (fixed when Xen is configured: $(LIBEXEC_LIB)/hotplug-plugins)
 * which defines the symbol LIBXL_HOTPLUG_PLUGIN_SYMBOL, a
 * libxl_hotplug_plugin_ops.  Plugins are only loaded on Linux.
 *
 * libxl calls every function of a plugin but ctx_free with its ctx lock
 * held, from its event loop: none of them may block (no I/O that can
 * wait, no lock that a hotplug script or another process may hold).  The
 * work of an op is done elsewhere (e.g. on the plugin's own threads) and
 * signalled by the op's file descriptor becoming readable.  The plugin's
 * own threads never call into libxl, not even its logger (see below).
 *
 * The plugin shares the process with libxl and the application, which
 * fork and exec scripts, qemu and bootloaders, also from other threads.
 * So a plugin:
 *  - opens every file descriptor close-on-exec (O_CLOEXEC and the like),
 *    so that none leaks into those programs;
 *  - makes no child process that libxl or the application could reap
 *    (xl reaps with waitpid(-1)), except one it watches through a pidfd
 *    and whose exit it learns even when someone else reaped it;
 *  - blocks the asynchronous signals in its own threads, so that the
 *    application's handlers (SIGCHLD, SIGINT...) run on its threads;
 *  - copes with a fork: a child that goes on using libxl (e.g. xl's
 *    monitoring child, after libxl_postfork_child_noexec) makes a new
 *    libxl ctx, for which libxl calls ctx_new again; neither libxl nor
 *    the plugin may use or free there the parent's state or ops, whose
 *    threads do not run in the child.
 *
 * The plugin runs inside the toolstack process: a crash in it takes the
 * process (xl, libvirtd, ...) with it.
 */

#ifndef LIBXL_HOTPLUG_PLUGIN_H
#define LIBXL_HOTPLUG_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

/* The version of this interface; see abi_version below. */
#define LIBXL_HOTPLUG_PLUGIN_ABI 1

/* The name of the symbol of type libxl_hotplug_plugin_ops. */
#define LIBXL_HOTPLUG_PLUGIN_SYMBOL "libxl_hotplug_plugin"

/* Actions, for op_start. */
#define LIBXL_HOTPLUG_PLUGIN_ADD    1
#define LIBXL_HOTPLUG_PLUGIN_REMOVE 2

/* Outcomes, from op_finish. */
#define LIBXL_HOTPLUG_PLUGIN_DONE    0
#define LIBXL_HOTPLUG_PLUGIN_PENDING 1
#define LIBXL_HOTPLUG_PLUGIN_FAILED  2

/* Levels, for the logger. */
#define LIBXL_HOTPLUG_PLUGIN_LOG_DEBUG 0
#define LIBXL_HOTPLUG_PLUGIN_LOG_INFO  1
#define LIBXL_HOTPLUG_PLUGIN_LOG_WARN  2
#define LIBXL_HOTPLUG_PLUGIN_LOG_ERROR 3

/*
 * Given to ctx_new; valid until ctx_free returns.  msg is one line
 * without a newline, and the level one of the levels above.
 *
 * It is the plugin's obligation to call log only from within a call
 * libxl makes to it (ctx_new, ctx_free, add_coming, op_start, op_finish
 * or op_free), on the thread that made that call, never from a thread of
 * its own: libxl's logger is the application's
 * xentoollog_logger, which is not made for messages from other
 * threads.  Messages that the plugin's own threads produce are queued
 * by the plugin and passed to log in its next such call: those of an
 * op at the latest in the op_finish that gives the op's outcome, and
 * those still queued at ctx_free (including those of the ops it waits
 * for) in ctx_free.  A plugin that bounds its queue says in one message
 * how many it dropped.
 */
typedef struct libxl_hotplug_plugin_logger libxl_hotplug_plugin_logger;
struct libxl_hotplug_plugin_logger {
    void (*log)(libxl_hotplug_plugin_logger *lg, int level,
                const char *msg);
};

typedef struct libxl_hotplug_plugin_ops {
    /*
     * LIBXL_HOTPLUG_PLUGIN_ABI as the plugin was built, and
     * sizeof(libxl_hotplug_plugin_ops) as it was built.  libxl uses a
     * plugin only when abi_version is the version libxl knows and size
     * covers at least the members up to op_free; otherwise it logs one
     * warning and runs the hotplug scripts.  The members after op_free
     * are optional: libxl reads one only when size covers it, so that
     * a plugin built before it was added still works.
     */
    uint32_t abi_version;
    uint32_t size;

    /* A short name for messages: the plugin and its version. */
    const char *name;

    /*
     * Makes the plugin's state for one libxl ctx.  Returns 0 and sets
     * *state_r, or returns non-zero having written a one-line reason
     * (NUL-terminated, at most errlen bytes) to err.
     */
    int (*ctx_new)(libxl_hotplug_plugin_logger *lg, void **state_r,
                   char *err, size_t errlen);

    /*
     * Frees the state of ctx_new, from libxl_ctx_free, without the ctx
     * lock held.  It may wait for the ops still running on the plugin's
     * threads, and may cancel those that have not started acting yet
     * (e.g. still queued or waiting for a lock), which then do nothing.
     * Ops of the state not yet freed are not used by libxl any more.
     */
    void (*ctx_free)(void *state);

    /*
     * Starts preparing (LIBXL_HOTPLUG_PLUGIN_ADD) or releasing
     * (LIBXL_HOTPLUG_PLUGIN_REMOVE) the backend whose xenstore directory
     * is backend_path, and returns at once.  Returns 0 and sets *op_r,
     * or returns non-zero having done nothing and written a one-line
     * reason to err.  Ops on one backend must take effect in the order
     * they were started, also after an earlier op was freed unfinished.
     * A remove may come for a backend the plugin never prepared (e.g.
     * its add failed early, or another process wrote the backend): the
     * plugin must then treat it as nothing to undo.  op_start must not
     * wait for the plugin's threads.
     */
    int (*op_start)(void *state, const char *backend_path, int action,
                    void **op_r, char *err, size_t errlen);

    /*
     * The op's file descriptor (>= 0): it polls readable once the op is
     * done and stays readable until op_free.  libxl never reads, writes
     * or closes it, and stops polling it before op_free.  A negative
     * value, or the descriptor polling POLLERR or POLLNVAL, is a plugin
     * bug: libxl fails the op's step.
     */
    int (*op_fd)(void *op);

    /*
     * The op's outcome: LIBXL_HOTPLUG_PLUGIN_PENDING while it runs,
     * LIBXL_HOTPLUG_PLUGIN_DONE, or LIBXL_HOTPLUG_PLUGIN_FAILED with a
     * one-line reason in *msg_r (for people: what failed and what to do),
     * valid until op_free.  PENDING while the descriptor is readable is a
     * plugin bug: libxl fails the op's step.  On a failed add the plugin
     * has written hotplug-status (and hotplug-error) as the script would.
     * An empty or NULL reason gets a generic one from libxl.
     */
    int (*op_finish)(void *op, const char **msg_r);

    /*
     * Frees an op, finished or not.  An op freed before it is done still
     * runs to its end (a later remove of the backend undoes an add).
     * After op_free of an unfinished op (on timeout or abort, or after a
     * remove that failed) libxl may at once delete the backend's
     * xenstore directory: the op must not need those nodes any more
     * once op_free has been called.
     */
    void (*op_free)(void *op);

    /*
     * Optional (may be NULL).  libxl will ask this plugin to prepare
     * the backend at backend_path (op_start with
     * LIBXL_HOTPLUG_PLUGIN_ADD) once the backend's driver is ready for
     * it: libxl calls add_coming when it has written the backend, and
     * also, on domain creation, before it builds the domain (the
     * backend is not written yet).  Called with the ctx lock held, as
     * the others are, so it must not block.  The plugin may get ready for that add meanwhile
     * (e.g. start reading, on its own threads, what the add will need)
     * but must not act on the backend.  The add may never come (e.g.
     * the domain's creation fails before it), and add_coming may be
     * called more than once for one backend.
     */
    void (*add_coming)(void *state, const char *backend_path);
} libxl_hotplug_plugin_ops;

#endif /* LIBXL_HOTPLUG_PLUGIN_H */

/*
 * Local variables:
 * mode: C
 * c-basic-offset: 4
 * indent-tabs-mode: nil
 * End:
 */
