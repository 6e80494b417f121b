/*
 * The smallest real client of an installed xenblock, built only with
 * `pkg-config --cflags --libs xenblock` (plus libxenstore, which a toolstack
 * has anyway, to write the backend directory as libxl does):
 *
 *   smoke IMAGE DOMID     with $XENSTORED_PATH naming xenstored
 *
 * Context with the built-in client, prepare a file backend, check it is
 * connected to a loop device, release it, check the loop device is gone.
 */
#define _GNU_SOURCE
#include <xenblock.h>
#include <xenstore.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define EXPECT(cond, ...)                                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FAIL smoke.c:%d: " #cond ": ", __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static void put(struct xs_handle *h, const char *dir, const char *k, const char *v)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, k);
    if (!xs_write(h, XBT_NULL, p, v, strlen(v))) {
        fprintf(stderr, "xs_write %s: %s\n", p, strerror(errno));
        exit(1);
    }
}

static char *get(struct xs_handle *h, const char *dir, const char *k)
{
    char p[256];
    unsigned int len;
    snprintf(p, sizeof p, "%s/%s", dir, k);
    return xs_read(h, XBT_NULL, p, &len);
}

static int backed_by(const char *node, const char *file)
{
    char p[256], b[4096] = "";
    snprintf(p, sizeof p, "/sys/block/%s/loop/backing_file", node + 5);
    FILE *f = fopen(p, "re");
    if (!f)
        return 0;
    if (!fgets(b, sizeof b, f))
        b[0] = 0;
    fclose(f);
    b[strcspn(b, "\n")] = 0;
    return strcmp(b, file) == 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s IMAGE DOMID\n", argv[0]);
        return 2;
    }
    const char *img = argv[1];
    int domid = atoi(argv[2]);
    char be[192], rel[128], dom[64], vm[64], fe[128];
    snprintf(rel, sizeof rel, "backend/vbd/%d/51712", domid);
    snprintf(be, sizeof be, "/local/domain/0/%s", rel);
    snprintf(fe, sizeof fe, "/local/domain/%d/device/vbd/51712", domid);
    snprintf(dom, sizeof dom, "/local/domain/%d", domid);
    snprintf(vm, sizeof vm, "/vm/00000000-0000-0000-0000-%012d", domid);

    printf("xenblock %s, ABI %u.%u (header %d.%d)\n", xenblock_version(),
           xenblock_abi_version() >> 16, xenblock_abi_version() & 0xffff, XENBLOCK_ABI_MAJOR,
           XENBLOCK_ABI_MINOR);
    EXPECT(xenblock_abi_version() >> 16 == XENBLOCK_ABI_MAJOR, "ABI major mismatch");

    struct xs_handle *h = xs_open(0);
    if (!h) {
        fprintf(stderr, "xs_open: %s\n", strerror(errno));
        return 1;
    }
    put(h, dom, "vm", vm);
    char id[16];
    snprintf(id, sizeof id, "%d", domid);
    const char *nodes[][2] = {
        {"frontend", fe}, {"params", img}, {"script", "/etc/xen/scripts/block"},
        {"frontend-id", id}, {"online", "1"}, {"removable", "0"}, {"bootable", "1"},
        {"state", "1"}, {"dev", "xvda"}, {"type", "phy"}, {"mode", "w"},
        {"device-type", "disk"}, {"discard-enable", "1"},
    };
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
        put(h, be, nodes[i][0], nodes[i][1]);
    put(h, be, "state", "2");

    xenblock_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.abi_size = sizeof cfg;
    cfg.store = NULL; /* the built-in client: $XENSTORED_PATH */
    /* A private lock directory, never the host's /var/run/xen-hotplug. */
    cfg.lock_dir = getenv("XENBLOCK_LOCK_DIR");
    EXPECT(cfg.lock_dir && cfg.lock_dir[0] == '/',
           "set XENBLOCK_LOCK_DIR to a private absolute directory (this test must not take "
           "the host's hotplug lock)");
    if (!cfg.lock_dir || cfg.lock_dir[0] != '/')
        return 1;
    xenblock_ctx *ctx = NULL;
    xenblock_status st = xenblock_ctx_new(&cfg, &ctx);
    if (st != XENBLOCK_OK) {
        fprintf(stderr, "xenblock_ctx_new: %s: %s\n", xenblock_status_str(st),
                xenblock_last_error());
        xs_close(h);
        return 1;
    }
    st = xenblock_prepare(ctx, rel);
    EXPECT(st == XENBLOCK_OK, "prepare: %s: %s", xenblock_status_str(st),
           xenblock_ctx_last_error(ctx));
    char *hs = get(h, be, "hotplug-status");
    char *node = get(h, be, "node");
    EXPECT(hs && strcmp(hs, "connected") == 0, "hotplug-status is %s", hs ? hs : "absent");
    struct stat sb;
    EXPECT(node && stat(node, &sb) == 0 && S_ISBLK(sb.st_mode), "node %s", node ? node : "absent");
    EXPECT(node && backed_by(node, img), "%s is not backed by %s", node ? node : "-", img);
    printf("prepared %s: %s on %s\n", rel, hs ? hs : "-", node ? node : "-");

    put(h, be, "online", "0");
    put(h, be, "state", "6");
    st = xenblock_release(ctx, rel);
    EXPECT(st == XENBLOCK_OK, "release: %s: %s", xenblock_status_str(st),
           xenblock_ctx_last_error(ctx));
    for (int i = 0; node && i < 300 && backed_by(node, img); i++)
        usleep(10000);
    EXPECT(!node || !backed_by(node, img), "%s still attached after release", node);
    printf("released %s\n", rel);

    xs_rm(h, XBT_NULL, be);
    xs_rm(h, XBT_NULL, dom);
    free(hs);
    free(node);
    xenblock_ctx_free(ctx);
    xs_close(h);
    return failures ? 1 : 0;
}
