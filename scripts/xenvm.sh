#!/usr/bin/env bash
# xenvm.sh — a real Xen 4.17 host in QEMU, for testing xenblock through `xl`.
#
#   scripts/xenvm.sh up                  boot the VM, or reuse the running one
#   scripts/xenvm.sh exec FILE [ARGS..]  copy FILE into dom0, run it as root;
#                                        stdout, stderr, exit code are its own
#   scripts/xenvm.sh down                stop the VM, remove its run state
#   scripts/xenvm.sh test                up, the real-Xen suite (tests/realxen/run-suite.sh:
#                                        scenarios x XENVM_MODES, default stock dropin
#                                        plugin (libxl's hotplug plugin); then the 9N steps), down
#   scripts/xenvm.sh bench               up, the real-Xen benchmarks (stock, drop-in,
#                                        libxl's hotplug plugin), down
#   scripts/xenvm.sh console [N]         last N lines of the VM's serial console
#   scripts/xenvm.sh build               only fetch and build the images
#
# Design, and why:
# - TCG only (`-accel tcg,thread=multi -cpu qemu64`): the machines this runs on
#   have no usable hardware virtualisation for a nested Xen, and `-cpu max`
#   crashes Debian's dom0 kernel early (SMEP/SMAP).
# - libvirt's Xen driver is in dom0 (libvirtd with only the libxl driver,
#   virsh), not started at boot: tests/realxen/30-libvirt.sh starts its own.
# - QEMU's multiboot loader starts the uncompressed Xen with dom0's kernel and
#   initramfs as modules: no disk image, no bootloader, no partitioning.
# - dom0's root file system IS its initramfs (a Debian 12 minbase debootstrap
#   with the Xen 4.17 tools, pinned to $XEN_VERSION so that the hypervisor and
#   the tools match and a patched libxenlight of that version fits). Every
#   boot starts from the same pristine state; nothing persists between boots,
#   so a failed test cannot poison the next run. The price is dom0_mem=1024M
#   (the unpacked root lives in dom0's RAM; 768M panics while unpacking).
# - No systemd and no udev in dom0: its /init (written below) mounts what Xen
#   needs, makes the /dev links udev would (/dev/fd, /dev/stdin: Xen's
#   locking.sh needs `stat -L /dev/stdin`), starts the real C xenstored,
#   xen-init-dom0 and xenconsoled, loads xen-blkback, loop, dm-mod. Booting to
#   a ready dom0 takes ~25 s under TCG instead of minutes.
# - Test images live on ext4 on a scratch virtio disk (/scratch in dom0), not
#   on tmpfs: on tmpfs device numbers are 0:N, where hex and decimal coincide
#   and the very bugs the suite looks for would hide.
# - Command channel: a 9p share (virtio) of $RUN/chan. `exec` drops a request
#   directory there (atomic rename); an agent in dom0 runs it and writes
#   stdout, stderr and the exit code back. No network, no ssh keys, no serial
#   console parsing; the console stays a plain log for diagnosis.
# - The checkout `up` ran from is shared read-only at /xenblock/src and
#   ~/.cache/xenblock read-only at /xenblock/cache, so a scenario can install
#   build artifacts (a patched libxenlight, .deb files) from an exec'd script.
#   A VM serves exactly one checkout: `up` from another checkout while it runs
#   refuses and names the checkout and the command to run (`down` first).
# - Guests: a tiny PV guest (Debian's kernel + a busybox initramfs, see
#   XENVM_GUEST_*) whose init runs the shell command given base64-encoded as
#   `xenvm_cmd64=` on its kernel command line, then powers off; xenconsoled
#   logs each guest's console to /var/log/xen/console/guest-NAME.log.
# - xenblock in dom0: installed at boot from /xenblock/src/target/release
#   (this script builds it first). `xenblock-mode stock|dropin` switches
#   /etc/xen/scripts/block between Xen's script and the xenblock drop-in; each
#   mode is a script /usr/local/lib/xenblock-mode/NAME, so a mode (e.g.
#   `plugin`) is added by dropping one file there from an exec'd script.
#
# Bounded timeouts (seconds, all overridable from the environment):
#   XENVM_BOOT_TIMEOUT=300  from QEMU start to a ready dom0 agent
#   XENVM_EXEC_TIMEOUT=900  one exec'd command (killed in dom0 at that, and the
#                           host gives up 60 s later if dom0 does not answer)
#   guests: the suite's helpers wait at most XENVM_GUEST_TIMEOUT=180 per guest
# On a timeout the last console lines are printed. `down` (and a failed `up`)
# kill QEMU and remove the run state; the loop devices and images of a test
# live inside the VM, so nothing is left on the host.
#
# Everything fetched goes under ~/.cache/xenblock/vm: Debian 12 packages only
# (debootstrap from the Debian mirror in /etc/apt/sources.list*, apt-get
# download + dpkg -x for Xen itself, the kernel and busybox). Cold: ~3 min of
# downloads and image building; warm: the images are reused.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd -P)
# shellcheck source=scripts/vm-host.sh
source "$SRC/scripts/vm-host.sh"
CACHE=${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock}
# A libxl build cache of its own (scripts/build-libxl.sh) must be inside
# $CACHE, which dom0 sees as /xenblock/cache; tests/realxen/plugin.sh then
# installs that build (XENVM_* variables reach dom0's commands).
if [ -n "${XENBLOCK_LIBXL_CACHE:-}" ] && [ -z "${XENVM_LIBXL_OUT:-}" ]; then
    case $XENBLOCK_LIBXL_CACHE in
    "$CACHE"/*) export XENVM_LIBXL_OUT=/xenblock/cache/${XENBLOCK_LIBXL_CACHE#"$CACHE"/}/current ;;
    *) echo "xenvm: XENBLOCK_LIBXL_CACHE=$XENBLOCK_LIBXL_CACHE is outside $CACHE, which dom0 sees as /xenblock/cache" >&2; exit 1 ;;
    esac
fi
# XENVM_DIR: where the images and run state live (default $CACHE/vm); a
# checkout that changes the image recipe can use its own, not rebuild others'.
VM=${XENVM_DIR:-$CACHE/vm}
# XENVM_INSTANCE=NAME: a VM of its own (run state in $VM/run-NAME), so two
# checkouts (e.g. worktrees) can each run one; the images are shared.
RUN=$VM/run${XENVM_INSTANCE:+-$XENVM_INSTANCE}
XEN_VERSION=4.17.5+72-g01140da4e8-1
SUITE=bookworm
BOOT_TIMEOUT=${XENVM_BOOT_TIMEOUT:-300}
EXEC_TIMEOUT=${XENVM_EXEC_TIMEOUT:-900}
# Bump when the image recipe below changes: images are rebuilt on mismatch.
RECIPE=10

log() { printf 'xenvm: %s\n' "$*" >&2; }
die() { printf 'xenvm: error: %s\n' "$*" >&2; exit 1; }

console_tail() {
    local n=${1:-40}
    if [ -s "$RUN/console.log" ]; then
        echo "---- last $n lines of the VM console ($RUN/console.log) ----" >&2
        tail -n "$n" "$RUN/console.log" | tr -d '\r' >&2
        echo "---- end of console ----" >&2
    else
        echo "(the VM console log is empty or missing)" >&2
    fi
}



# ---------------------------------------------------------------- images
# $VM/xen            the hypervisor (gunzipped)
# $VM/vmlinuz        dom0's and the guests' kernel
# $VM/dom0.cpio      dom0's root file system
# $VM/guest.cpio.gz  the guest's initramfs (busybox + xen-blkfront)
build_images() {
    need_host_tools
    mkdir -p "$VM"
    # Instances share the images: one builds, the others wait for it.
    exec 7>"$VM/.images.lock"
    flock -w 1200 7 || die "waited 20 minutes for $VM/.images.lock (another xenvm.sh is building the images)"
    build_images_locked
    local rc=$?
    exec 7>&-
    return $rc
}

build_images_locked() {
    if [ "$(cat "$VM/.recipe" 2>/dev/null)" = "$RECIPE" ] && [ -s "$VM/dom0.cpio" ] &&
       [ -s "$VM/guest.cpio.gz" ] && [ -s "$VM/xen" ] && [ -s "$VM/vmlinuz" ]; then
        return 0
    fi
    local t0=$SECONDS
    log "building the VM images under $VM (once; later runs reuse them)"
    local debs=$VM/debs
    mkdir -p "$debs"
    local kpkg
    kpkg=$(kernel_pkg) || exit 1
    (cd "$debs" && rm -f ./*.deb &&
        apt-get download "xen-hypervisor-4.17-amd64=$XEN_VERSION" "$kpkg" busybox-static >&2) ||
        die "apt-get download of xen-hypervisor-4.17-amd64=$XEN_VERSION $kpkg busybox-static failed"

    local x=$VM/unpack
    rm -rf "$x"; mkdir -p "$x/xen" "$x/kernel" "$x/busybox"
    dpkg -x "$debs"/xen-hypervisor-4.17-amd64_*.deb "$x/xen"
    dpkg -x "$debs"/linux-image-*.deb "$x/kernel"
    dpkg -x "$debs"/busybox-static_*.deb "$x/busybox"
    gunzip -c "$x"/xen/boot/xen-4.17-amd64.gz >"$VM/xen.tmp"
    cp "$x"/kernel/boot/vmlinuz-* "$VM/vmlinuz.tmp"
    local kver
    kver=$(basename "$x"/kernel/lib/modules/*)

    # dom0's root: debootstrap once (the slow part, ~1 min), then a copy per recipe.
    local base=$VM/rootfs-base
    if [ ! -e "$base/.done" ]; then
        rm -rf "$base.tmp"
        log "debootstrap $SUITE (minbase + Xen tools) from $(mirror)"
        debootstrap --variant=minbase --arch=amd64 \
            --include=xen-utils-4.17,xen-utils-common,xenstore-utils,e2fsprogs,dmsetup,fdisk,kmod,procps,psmisc,mdadm \
            "$SUITE" "$base.tmp" "$(mirror)" >"$VM/debootstrap.log" 2>&1 ||
            { tail -n 20 "$VM/debootstrap.log" >&2; die "debootstrap failed (log: $VM/debootstrap.log)"; }
        touch "$base.tmp/.done"
        mv "$base.tmp" "$base"
    fi
    # QEMU for qdisk disks (`backendtype=qdisk`): libxl 4.17 spawns
    # /usr/libexec/xen-qemu-system-i386 (Debian's qemu-system-xen) per PV
    # guest that has one. Added to a base debootstrapped before it was in
    # the recipe, too (apt in the chroot, ~10 s; its caches are dropped).
    if [ ! -x "$base/usr/libexec/xen-qemu-system-i386" ]; then
        log "installing qemu-system-xen into dom0's root"
        cp /etc/resolv.conf "$base/etc/resolv.conf"
        chroot "$base" sh -c 'apt-get -o DPkg::Lock::Timeout=900 update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
                --no-install-recommends qemu-system-xen && apt-get clean' >"$VM/qemu-install.log" 2>&1 ||
            { tail -n 20 "$VM/qemu-install.log" >&2; die "installing qemu-system-xen in dom0's root failed (log: $VM/qemu-install.log)"; }
        rm -rf "$base"/var/lib/apt/lists/*
    fi
    local p v
    for p in xen-utils-4.17 xen-utils-common xenstore-utils libxenmisc4.17 libxenstore4; do
        v=$(chroot "$base" dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
        [ "$v" = "$XEN_VERSION" ] ||
            die "dom0 has $p version '${v:-none}', the hypervisor is $XEN_VERSION: the mirror's $SUITE no longer carries it; update XEN_VERSION in $0"
    done

    local r=$VM/rootfs
    rm -rf "$r"; cp -a "$base" "$r"; rm -f "$r/.done"
    install_libvirt "$r"
    rm -rf "$r"/usr/share/{doc,man,info,locale} "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/*
    # What a xenpv QEMU (qdisk backend) never reads: the option ROMs and
    # BIOS (it boots nothing), ISO code tables. (Without /usr/share/qemu or
    # GStreamer's plugin directories its start failed.) qemu-system-xen adds
    # ~35 MB to dom0's root.
    rm -rf "$r"/usr/lib/ipxe "$r"/usr/share/seabios "$r"/usr/share/iso-codes
    # Only the modules dom0 uses (the whole tree is ~400 MB).
    local m=lib/modules/$kver
    mkdir -p "$r/$m/kernel"
    cp "$x/kernel/$m"/modules.{order,builtin,builtin.modinfo} "$r/$m/" 2>/dev/null || true
    for d in drivers/xen drivers/block drivers/md drivers/virtio drivers/char fs/9p fs/ext4 fs/jbd2 \
             fs/mbcache.ko fs/netfs fs/fscache net/9p lib crypto arch; do
        [ -e "$x/kernel/$m/kernel/$d" ] || continue
        mkdir -p "$r/$m/kernel/$(dirname "$d")"
        cp -a "$x/kernel/$m/kernel/$d" "$r/$m/kernel/$d"
    done
    chroot "$r" depmod -a "$kver"
    mkdir -p "$r/xenblock/src" "$r/xenblock/cache" "$r/xenblock/chan" "$r/xenblock/guest" \
             "$r/scratch" "$r/usr/local/lib/xenblock-mode"
    cp "$VM/vmlinuz.tmp" "$r/xenblock/guest/vmlinuz"
    write_dom0_files "$r"

    # The guest: busybox, xen-blkfront, an init that runs the command line's command.
    local g=$x/guest
    mkdir -p "$g"/{bin,dev,proc,sys,tmp,lib}
    cp "$x/busybox/bin/busybox" "$g/bin/busybox"
    cp "$x/kernel/$m/kernel/drivers/block/xen-blkfront.ko" "$g/lib/"
    write_guest_init "$g/init"
    (cd "$g" && find . | cpio -o -H newc --quiet | gzip -9) >"$VM/guest.cpio.gz.tmp"
    cp "$VM/guest.cpio.gz.tmp" "$r/xenblock/guest/initrd.gz"

    # Uncompressed: TCG unpacks a plain cpio several seconds faster than a gzip one.
    (cd "$r" && find . | cpio -o -H newc --quiet) >"$VM/dom0.cpio.tmp"
    rm -rf "$r" "$x"
    mv "$VM/xen.tmp" "$VM/xen"; mv "$VM/vmlinuz.tmp" "$VM/vmlinuz"
    mv "$VM/guest.cpio.gz.tmp" "$VM/guest.cpio.gz"; mv "$VM/dom0.cpio.tmp" "$VM/dom0.cpio"
    echo "$RECIPE" >"$VM/.recipe"
    log "images built in $((SECONDS - t0)) s (dom0 root $(du -h "$VM/dom0.cpio" | cut -f1))"
}

# libvirt's Xen driver in dom0: libvirtd with only its libxl connection
# driver, and virsh (Debian's libvirt-daemon-driver-xen, libvirt-clients;
# no recommends). Nothing starts it at boot (dom0 has no service manager
# and most scenarios do not need it): a scenario starts and stops its own
# libvirtd (tests/realxen/lib.sh: libvirt_start/libvirt_stop), so that in
# each mode it runs the libxenlight that mode installed.
install_libvirt() {
    local r=$1 opts=(-o DPkg::Lock::Timeout=900 -o Acquire::Check-Valid-Until=false) proxy
    proxy=$(apt-config dump 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n1)
    [ -n "$proxy" ] && opts+=(-o "Acquire::http::Proxy=$proxy")
    cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true   # the mirror's name
    # No package may start a service in the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"; chmod +x "$r/usr/sbin/policy-rc.d"
    log "installing libvirt's Xen driver into dom0's root"
    { chroot "$r" apt-get "${opts[@]}" update -qq &&
      DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get "${opts[@]}" install -y -qq --no-install-recommends \
          libvirt-daemon-driver-xen libvirt-clients; } >"$VM/libvirt-install.log" 2>&1 ||
        { tail -n 20 "$VM/libvirt-install.log" >&2; die "installing libvirt in dom0's root failed (log: $VM/libvirt-install.log)"; }
    rm -f "$r/usr/sbin/policy-rc.d"
    # Only the libxl driver: libvirtd skips a driver whose module is absent,
    # and the others (qemu, network, storage...) would only add start-up work.
    local d
    for d in "$r"/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/*.so; do
        [ "$(basename "$d")" = libvirt_driver_libxl.so ] || rm -f "$d"
    done
    [ -e "$r/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_libxl.so" ] ||
        die "libvirt's libxl driver is missing after the install (log: $VM/libvirt-install.log)"
    # TCG has no VME (QEMU: "TCG doesn't support requested feature:
    # CPUID.01H:EDX.vme"), and every x86 CPU model in libvirt's CPU map lists
    # it, so libvirt's libxl driver finds no model for the host CPU Xen
    # reports and refuses to start ("Cannot find suitable CPU model for given
    # data"). In this test VM only, the 486 model does without it.
    local m486=$r/usr/share/libvirt/cpu_map/x86_486.xml
    grep -q "<feature name='vme'/>" "$m486" || die "$m486 has no vme feature to drop: check libvirt's CPU map"
    sed -i "/<feature name='vme'\/>/d" "$m486"
}

write_guest_init() {
    cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
insmod /lib/xen-blkfront.ko
# Give xenbus a moment to bring the configured disks up (bounded).
i=0; while [ $i -lt 100 ] && [ -z "$(ls /sys/block | grep xvd)" ]; do sleep 0.1; i=$((i+1)); done
cmd=$(sed -n 's/.*xenvm_cmd64=\([A-Za-z0-9+/=]*\).*/\1/p' /proc/cmdline | base64 -d)
echo "xenvm-guest: start"
sh -c "$cmd"
echo "xenvm-guest: exit $?"
sync
poweroff -f
EOF
    chmod +x "$1"
}

write_dom0_files() {
    local r=$1
    cat >"$r/init" <<'EOF'
#!/bin/bash
# dom0's init (written by scripts/xenvm.sh): no systemd, no udev.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mapper
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/lock /run/xen /run/xenstored /var/log/xen/console /var/lib/xen
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
echo "xenvm-dom0: init"
for mod in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback loop dm-mod \
           9pnet_virtio 9p virtio_pci virtio_blk ext4; do
    modprobe "$mod" || echo "xenvm-dom0: modprobe $mod failed"
done
mount -t xenfs xenfs /proc/xen
mount -t 9p -o trans=virtio,version=9p2000.L,ro xbsrc /xenblock/src
mount -t 9p -o trans=virtio,version=9p2000.L,ro xbcache /xenblock/cache
mount -t 9p -o trans=virtio,version=9p2000.L xbchan /xenblock/chan
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1 /dev/vda && mount /dev/vda /scratch || echo "xenvm-dom0: no scratch disk"
export XENSTORED_ROOTDIR=/run/xenstored
/usr/lib/xen-4.17/bin/xenstored --pid-file /run/xenstore.pid
i=0; while ! xenstore-read -s / >/dev/null 2>&1 && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
/usr/lib/xen-4.17/bin/xen-init-dom0
/usr/lib/xen-4.17/bin/xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
xenblock-install || echo "xenvm-dom0: xenblock NOT installed"
xenblock-mode stock
echo "xenvm-dom0: ready"
exec /usr/local/sbin/xenvm-agent
EOF
    chmod +x "$r/init"

    cat >"$r/usr/local/sbin/xenvm-agent" <<'EOF'
#!/bin/bash
# Runs the requests scripts/xenvm.sh exec drops in /xenblock/chan/req.
C=/xenblock/chan
mkdir -p $C/run
run_one() {
    local id=$1 d=$C/run/$1 t args=()
    t=$(cat "$d/timeout" 2>/dev/null || echo 900)
    [ -s "$d/args" ] && mapfile -d '' -t args <"$d/args"
    cp "$d/cmd" "/tmp/xenvm-cmd-$id"; chmod +x "/tmp/xenvm-cmd-$id"
    (cd /root && [ -f "$d/env" ] && source "$d/env"; XENVM_GUEST_KERNEL=/xenblock/guest/vmlinuz XENVM_GUEST_RAMDISK=/xenblock/guest/initrd.gz \
        XENVM_SCRATCH=/scratch timeout -k 10 "$t" setsid "/tmp/xenvm-cmd-$id" "${args[@]}" \
        </dev/null >"$d/stdout" 2>"$d/stderr")
    echo $? >"$d/rc.tmp"
    mv "$d/rc.tmp" "$d/rc"
    rm -f "/tmp/xenvm-cmd-$id"
}
# A builtin sleep: under TCG a fork costs a lot, and this loop runs all the time.
exec 3<> <(:)
date +%s >$C/ready
while :; do
    for req in $C/req/*; do
        [ -d "$req" ] || continue
        id=${req##*/}
        mv "$req" "$C/run/$id" 2>/dev/null || continue
        run_one "$id" &
    done
    read -r -t 0.25 -u 3 _
done
EOF
    chmod +x "$r/usr/local/sbin/xenvm-agent"

    cat >"$r/usr/local/sbin/xenblock-install" <<'EOF'
#!/bin/bash
# Installs the xenblock of the shared checkout (/xenblock/src/target/release).
set -e
T=${1:-/xenblock/src/target/release}
for f in libxenblock.so xenblock; do
    [ -e "$T/$f" ] || { echo "xenblock-install: $T/$f missing (build the checkout first)" >&2; exit 1; }
done
install -m 0755 "$T/xenblock" /usr/local/bin/xenblock
install -m 0755 "$T/libxenblock.so" /usr/local/lib/libxenblock.so.1
ln -sf libxenblock.so.1 /usr/local/lib/libxenblock.so
ldconfig
EOF
    chmod +x "$r/usr/local/sbin/xenblock-install"

    cat >"$r/usr/local/sbin/xenblock-mode" <<'EOF'
#!/bin/bash
# xenblock-mode            print the current mode
# xenblock-mode NAME       switch the disk hotplug path to mode NAME
# A mode is a script /usr/local/lib/xenblock-mode/NAME (run as `NAME`); add a
# mode by installing one more file there. The current mode is in /run/xenblock-mode.
D=/usr/local/lib/xenblock-mode
if [ $# -eq 0 ]; then cat /run/xenblock-mode 2>/dev/null || echo none; exit 0; fi
[ -x "$D/$1" ] || { echo "xenblock-mode: no mode '$1' (have: $(ls $D | tr '\n' ' '))" >&2; exit 2; }
"$D/$1" || { echo "xenblock-mode: switching to '$1' failed" >&2; exit 1; }
echo "$1" >/run/xenblock-mode
EOF
    chmod +x "$r/usr/local/sbin/xenblock-mode"
    cp "$r/etc/xen/scripts/block" "$r/etc/xen/scripts/block.xen-stock"
    cat >"$r/usr/local/lib/xenblock-mode/stock" <<'EOF'
#!/bin/sh
# Xen's own /etc/xen/scripts/block (from xen-utils-common).
cp /etc/xen/scripts/block.xen-stock /etc/xen/scripts/block.new && chmod 0755 /etc/xen/scripts/block.new &&
    mv -f /etc/xen/scripts/block.new /etc/xen/scripts/block
EOF
    cat >"$r/usr/local/lib/xenblock-mode/dropin" <<'EOF'
#!/bin/sh
# xenblock invoked under the name `block` (README "Drop-in").
[ -x /usr/local/bin/xenblock ] || { echo "xenblock is not installed" >&2; exit 1; }
ln -sfn /usr/local/bin/xenblock /etc/xen/scripts/block.new && mv -Tf /etc/xen/scripts/block.new /etc/xen/scripts/block
EOF
    chmod +x "$r"/usr/local/lib/xenblock-mode/*
}

# ---------------------------------------------------------------- VM life
qemu_pid() {
    local pid
    pid=$(cat "$RUN/qemu.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(command -v qemu-system-x86_64 | xargs readlink -f)" ] || return 1
    echo "$pid"
}

running() { qemu_pid >/dev/null && [ -e "$RUN/chan/ready" ]; }

build_xenblock() {
    if ! command -v cargo >/dev/null; then
        [ -e "$SRC/target/release/xenblock" ] || die "cargo is not installed and $SRC/target/release/xenblock is missing"
        return 0
    fi
    log "cargo build --release --bins --lib ($SRC)"
    (cd "$SRC" && nice -n 10 cargo build --quiet --release --bins --lib) || die "building xenblock failed"
}

stop_vm() {
    local pid
    if pid=$(qemu_pid); then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$RUN"
}

lock_vm() {
    mkdir -p "$VM"
    exec 8>"$RUN.lock"
    flock -w 900 8 || die "waited 15 minutes for $RUN.lock (another xenvm.sh up/down holds it)"
}

cmd_up() {
    lock_vm
    if running; then
        local other
        other=$(cat "$RUN/src" 2>/dev/null || true)
        if [ "$other" != "$SRC" ]; then
            die "the running VM serves another checkout ($other): run \`$other/scripts/xenvm.sh down\` first (or wait for its user)"
        fi
        build_xenblock
        log "reusing the running VM (pid $(qemu_pid)); reinstalling xenblock"
        run_exec_file <(printf '#!/bin/sh\nexec xenblock-install\n') >&2 || die "reinstalling xenblock in dom0 failed"
        return 0
    fi
    stop_vm   # a dead VM's leftovers
    build_images
    build_xenblock
    mkdir -p "$RUN/chan/req" "$RUN/chan/tmp"
    echo "$SRC" >"$RUN/src"
    truncate -s 4G "$RUN/scratch.img"
    local t0=$SECONDS
    # Interrupted while booting: no QEMU is left behind.
    trap 'log "interrupted: stopping the VM"; stop_vm; exit 130' INT TERM HUP
    log "booting Xen $XEN_VERSION + dom0 under TCG (timeout ${BOOT_TIMEOUT}s; console: $RUN/console.log)"
    qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -m 4096 -smp 2 \
        -display none -monitor none -no-reboot -serial "file:$RUN/console.log" \
        -kernel "$VM/xen" \
        -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 noreboot loglvl=all guest_loglvl=all" \
        -initrd "$VM/vmlinuz console=hvc0 earlyprintk=xen,$VM/dom0.cpio" \
        -virtfs "local,path=$SRC,mount_tag=xbsrc,security_model=none,readonly=on" \
        -virtfs "local,path=$CACHE,mount_tag=xbcache,security_model=none,readonly=on" \
        -virtfs "local,path=$RUN/chan,mount_tag=xbchan,security_model=none" \
        -drive "file=$RUN/scratch.img,if=virtio,format=raw,cache=unsafe" \
        -pidfile "$RUN/qemu.pid" -daemonize 8>&- ||
        { console_tail; stop_vm; die "QEMU failed to start"; }
    while [ ! -e "$RUN/chan/ready" ]; do
        if ! qemu_pid >/dev/null; then
            console_tail 60; stop_vm
            die "QEMU exited before dom0 was ready (Xen or dom0 crashed: see the console above)"
        fi
        if [ $((SECONDS - t0)) -ge "$BOOT_TIMEOUT" ]; then
            console_tail 60; stop_vm
            die "dom0 not ready after ${BOOT_TIMEOUT}s (XENVM_BOOT_TIMEOUT)"
        fi
        sleep 0.5
    done
    trap - INT TERM HUP
    echo $((SECONDS - t0)) >"$RUN/boot-seconds"
    log "dom0 ready in $((SECONDS - t0)) s"
}

# Run FILE with ARGS in dom0; the caller holds no lock.
run_exec_file() {
    local file=$1; shift
    local id tmp d rc t=$EXEC_TIMEOUT
    id=$(date +%s%N)-$$-$RANDOM
    tmp=$RUN/chan/tmp/$id
    d=$RUN/chan/run/$id
    mkdir -p "$tmp"
    cat "$file" >"$tmp/cmd"
    : >"$tmp/args"
    local a
    for a in "$@"; do printf '%s\0' "$a" >>"$tmp/args"; done
    echo "$t" >"$tmp/timeout"
    # XENVM_* variables of the caller reach the command (e.g. XENVM_ATTACH_CYCLES).
    local v
    for v in $(compgen -v XENVM_); do printf 'export %s=%q\n' "$v" "${!v}"; done >"$tmp/env"
    mv "$tmp" "$RUN/chan/req/$id"
    # Interrupted: drop the request (a command already started runs on in
    # dom0 until it ends or its timeout kills it).
    trap 'rm -rf "$RUN/chan/req/$id" "$d"; exit 130' INT TERM HUP
    local t0=$SECONDS
    while [ ! -e "$d/rc" ]; do
        if ! qemu_pid >/dev/null; then
            console_tail 60; rm -rf "$d" "$RUN/chan/req/$id"
            die "the VM died while running $file"
        fi
        if [ $((SECONDS - t0)) -ge $((t + 60)) ]; then
            console_tail 60; rm -rf "$d" "$RUN/chan/req/$id"
            die "dom0 did not answer for $((t + 60))s running $file (XENVM_EXEC_TIMEOUT=$t)"
        fi
        sleep 0.2
    done
    trap - INT TERM HUP
    rc=$(cat "$d/rc")
    cat "$d/stdout"
    cat "$d/stderr" >&2
    rm -rf "$d"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        log "$file: exit $rc (killed at the ${t}s exec timeout?)"
        console_tail 20
    fi
    return "$rc"
}

cmd_exec() {
    [ $# -ge 1 ] || die "usage: $0 exec FILE [ARGS...]"
    [ -r "$1" ] || die "exec: cannot read '$1'"
    running || die "no VM is running: run \`$0 up\` first"
    local other
    other=$(cat "$RUN/src" 2>/dev/null || true)
    [ "$other" = "$SRC" ] || log "note: the VM serves checkout $other (/xenblock/src), not $SRC"
    run_exec_file "$@"
}

cmd_down() {
    lock_vm
    if running || [ -e "$RUN" ]; then
        log "stopping the VM"
        stop_vm
    fi
}

cmd_test() {
    local started=0 rc=0 t0=$SECONDS
    # What the scenarios need built on the host (e.g. 90-debs' packages),
    # before QEMU takes the CPUs; cached, so the suite's own call is quick.
    "$SRC/tests/realxen/run-suite.sh" --prep >&2 || true
    if ! running; then started=1; fi
    cmd_up
    exec 8>&-
    # Interrupted: the VM this run started goes too.
    [ "$started" = 1 ] && trap 'log "interrupted: stopping the VM"; cmd_down; exit 130' INT TERM HUP
    "$SRC/tests/realxen/run-suite.sh" || rc=$?
    log "suite finished in $((SECONDS - t0)) s (including boot), exit $rc"
    if [ "$started" = 1 ]; then cmd_down; fi
    return "$rc"
}

cmd_bench() {
    local started=0 rc=0
    if ! running; then started=1; fi
    cmd_up
    exec 8>&-
    [ "$started" = 1 ] && trap 'log "interrupted: stopping the VM"; cmd_down; exit 130' INT TERM HUP
    # Four columns x 5 samples x N=0/100/400 with the stock script's 40 s
    # timeouts: 30-60 min under TCG, more than one exec's default bound.
    [ -n "${XENVM_EXEC_TIMEOUT:-}" ] || EXEC_TIMEOUT=5400
    # The plugin column needs the patched libxenlight and the plugin in dom0's `plugin` mode.
    "$SRC/tests/realxen/plugin-prep.sh" >&2 || rc=$?
    if [ "$rc" = 0 ]; then
        log "host load before the bench: $(uptime)"
        run_exec_file "$SRC/tests/realxen/bench.sh" "$(cat "$RUN/boot-seconds" 2>/dev/null || echo '?')" || rc=$?
        log "host load after the bench: $(uptime)"
    fi
    if [ "$started" = 1 ]; then cmd_down; fi
    return "$rc"
}

[ "$(id -u)" = 0 ] || die "run as root (QEMU's 9p export of dom0 files, debootstrap)"
case "${1:-}" in
    up) cmd_up ;;
    exec) shift; cmd_exec "$@" ;;
    down) cmd_down ;;
    test) cmd_test ;;
    bench) cmd_bench ;;
    build) build_images ;;
    console) console_tail "${2:-40}" ;;
    *) die "usage: $0 up | exec FILE [ARGS...] | down | test | bench | build | console [N]" ;;
esac
