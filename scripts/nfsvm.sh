#!/usr/bin/env bash
# nfsvm.sh — image locks across hosts on NFSv4 (docs/image-locks.md, "Across
# hosts"), with two plain Linux VMs under QEMU (TCG, no Xen):
#
#   S  the NFSv4 server (exports a tmpfs at /export), which also mounts its
#      own export as a client: "host B"
#   A  a second client: "host A"
#
# Both mount S:/ at /mnt/nfs and run xenblock (this checkout's target/release,
# or NFSVM_BIN=DIR: e.g. another build, to compare) against an
# embedded xenblock-xenstored of their own (no Xen is needed for loop devices
# and image locks), and QEMU's own qemu-io from Debian 12's qemu-utils.
#
#   scripts/nfsvm.sh test     build the image (cached), boot S and A, run the
#                             checks, print a summary, stop both VMs; exits
#                             non-zero if any check failed or could not run
#   scripts/nfsvm.sh build    only build the image
#   scripts/nfsvm.sh down     stop this instance's VMs, remove its run state
#
# The checks (each printed PASS/FAIL by name; docs/image-locks.md names them):
#   a-prepare-rw         A: `xenblock prepare` of a `w` disk on /mnt/nfs/disk.img
#                        attaches a loop device, holding the image locks
#   server-sees-locks    S: /proc/locks shows the locks nfsd holds for A on the
#                        exported file (bytes 100-101, 201)
#   b-xenblock-refused   B: `xenblock prepare` of a second `w` disk on the image
#                        is refused (exit 3), saying the holder is another host,
#                        and leaves no loop device
#   b-qemu-refused       B: `qemu-io -c 'write 0 512'` fails with QEMU's own
#                        `Failed to get "write" lock`
#   a-release            A: `xenblock release`: the loop device is gone
#   a-reads-b-write-refused  on a fresh image: a `qemu-io -r` reader on B and a
#                        `xenblock` `r` disk on A coexist (both may hold read
#                        delegations); B's qemu-io write and `xenblock` `w` are refused
#   b-takes-after-release  B: the prepare now succeeds; A's is refused meanwhile;
#                        B releases
#   a-dies-b-refused     A prepares again, A's VM is killed (SIGKILL to QEMU):
#                        right after, B is still refused (the server keeps A's locks)
#   b-takes-after-a-died B polls `xenblock prepare` once a second: it succeeds
#                        within lease + grace + NFSVM_SLACK seconds of the kill;
#                        the time is printed
#
# The knob: the server's NFSv4 lease. A client that stops renewing loses its
# state (opens, locks) one lease after its last renewal. Linux knfsd takes it
# from /proc/fs/nfsd/nfsv4leasetime (default 90 s; 10..3600), written before
# nfsd starts (as `lease-time` in /etc/nfs.conf's [nfsd] section does);
# nfsv4gracetime is the grace period after a server (re)start (default 90 s).
# Here both are NFSVM_LEASE=10 and NFSVM_GRACE=10 (the minimum), so the test is quick.
#
# Design:
# - Each VM's root file system is its initramfs: a Debian 12 minbase
#   debootstrap with nfs-kernel-server, nfs-common, qemu-utils,
#   xenstore-utils, util-linux, iproute2 (cached under $NFSVM_DIR, rebuilt when
#   RECIPE changes), booted with Debian 12's own kernel (-kernel/-initrd).
# - The private network: `-netdev dgram` over two Unix sockets in the run
#   directory (no host networking, no port to collide on), S 192.168.77.1,
#   A 192.168.77.2.
# - Command channel: a 9p share per VM; the host drops a script into
#   chan/req, an agent in the VM runs it and writes stdout, stderr, rc back.
# - Run state in $NFSVM_DIR/run-$NFSVM_INSTANCE (default instance "test"),
#   under a lock: never the real-Xen VM's ($XENBLOCK_CACHE/vm) nor another
#   instance's. `test` and `down` kill only the QEMU processes whose pid
#   files are in that directory.
#
# Bounded timeouts (seconds): NFSVM_BOOT_TIMEOUT=240 per VM to ready (network
# up, export mounted, lock grace over); NFSVM_EXEC_TIMEOUT=120 per command;
# the take-over poll stops at lease + grace + NFSVM_SLACK (default 20); the
# image build: 10 min for the kernel's download, 20 min for debootstrap.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd -P)
# shellcheck source=scripts/vm-host.sh
source "$SRC/scripts/vm-host.sh"
CACHE=${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock}
DIR=${NFSVM_DIR:-$CACHE/nfsvm}
INSTANCE=${NFSVM_INSTANCE:-test}
# Where the xenblock and xenblock-xenstored the VMs run come from.
BIN=${NFSVM_BIN:-$SRC/target/release}
RUN=$DIR/run-$INSTANCE
SUITE=bookworm
LEASE=${NFSVM_LEASE:-10}
GRACE=${NFSVM_GRACE:-10}
SLACK=${NFSVM_SLACK:-20}
BOOT_TIMEOUT=${NFSVM_BOOT_TIMEOUT:-240}
EXEC_TIMEOUT=${NFSVM_EXEC_TIMEOUT:-120}
# Bump when the image recipe below changes: the image is rebuilt on mismatch.
RECIPE=3
PKGS=nfs-kernel-server,nfs-common,qemu-utils,xenstore-utils,util-linux,iproute2,kmod,procps

log() { printf 'nfsvm: %s\n' "$*" >&2; }
die() { printf 'nfsvm: error: %s\n' "$*" >&2; exit 1; }



# ---------------------------------------------------------------- the image
# $DIR/vmlinuz, $DIR/root.cpio: one image for both VMs (the role is on the
# kernel command line).
build_image() {
    need_host_tools
    mkdir -p "$DIR"
    exec 7>"$DIR/.image.lock"
    flock -w 1200 7 || die "waited 20 minutes for $DIR/.image.lock (another nfsvm.sh is building the image)"
    if [ "$(cat "$DIR/.recipe" 2>/dev/null)" = "$RECIPE" ] && [ -s "$DIR/root.cpio" ] && [ -s "$DIR/vmlinuz" ]; then
        exec 7>&-
        return 0
    fi
    local t0=$SECONDS
    log "building the VM image under $DIR (once; later runs reuse it)"
    local kpkg
    kpkg=$(kernel_pkg) || exit 1
    mkdir -p "$DIR/debs"
    (cd "$DIR/debs" && rm -f ./*.deb && timeout 600 apt-get download "$kpkg" >&2) || die "apt-get download $kpkg failed"
    local x=$DIR/unpack
    rm -rf "$x"; mkdir -p "$x"
    dpkg -x "$DIR"/debs/linux-image-*.deb "$x"
    local kver
    kver=$(basename "$x"/lib/modules/*)

    local base=$DIR/rootfs-base
    if [ "$(cat "$base/.done" 2>/dev/null)" != "$PKGS" ]; then
        rm -rf "$base" "$base.tmp"
        log "debootstrap $SUITE (minbase + $PKGS) from $(mirror)"
        timeout 1200 debootstrap --variant=minbase --arch=amd64 --include="$PKGS" \
            "$SUITE" "$base.tmp" "$(mirror)" >"$DIR/debootstrap.log" 2>&1 ||
            { tail -n 20 "$DIR/debootstrap.log" >&2; die "debootstrap failed (log: $DIR/debootstrap.log)"; }
        echo "$PKGS" >"$base.tmp/.done"
        mv "$base.tmp" "$base"
    fi
    local r=$DIR/rootfs
    rm -rf "$r"; cp -a "$base" "$r"; rm -f "$r/.done"
    rm -rf "$r"/usr/share/{doc,man,info,locale} "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/*
    # Only the modules used (the whole tree is ~400 MB).
    local m=lib/modules/$kver d
    mkdir -p "$r/$m/kernel"
    cp "$x/$m"/modules.{order,builtin,builtin.modinfo} "$r/$m/" 2>/dev/null || true
    for d in fs/nfs fs/nfsd fs/lockd fs/nfs_common fs/9p fs/netfs fs/fscache net/sunrpc net/9p net/dns_resolver \
             net/core drivers/net/virtio_net.ko drivers/net/net_failover.ko drivers/block/loop.ko \
             drivers/virtio lib crypto; do
        [ -e "$x/$m/kernel/$d" ] || continue
        mkdir -p "$r/$m/kernel/$(dirname "$d")"
        cp -a "$x/$m/kernel/$d" "$r/$m/kernel/$d"
    done
    chroot "$r" depmod -a "$kver"
    write_vm_files "$r"
    (cd "$r" && find . | cpio -o -H newc --quiet) >"$DIR/root.cpio.tmp"
    cp "$x"/boot/vmlinuz-* "$DIR/vmlinuz.tmp"
    rm -rf "$r" "$x"
    mv "$DIR/vmlinuz.tmp" "$DIR/vmlinuz"; mv "$DIR/root.cpio.tmp" "$DIR/root.cpio"
    echo "$RECIPE" >"$DIR/.recipe"
    log "image built in $((SECONDS - t0)) s (root $(du -h "$DIR/root.cpio" | cut -f1))"
    exec 7>&-
}

write_vm_files() {
    local r=$1
    mkdir -p "$r/nfsvm/chan" "$r/nfsvm/bin" "$r/mnt/nfs" "$r/export"
    cat >"$r/init" <<'EOF'
#!/bin/bash
# The VMs' init (written by scripts/nfsvm.sh): no systemd, no udev.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp; mkdir -p /run/lock
ln -sf /proc/self/fd /dev/fd
arg() { sed -n "s/.*nfsvm\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
role=$(arg role) ip=$(arg ip) lease=$(arg lease) grace=$(arg grace) dom=$(arg dom)
say() { echo "nfsvm-$role: $*"; echo "nfsvm-$role: $*" >>/nfsvm/chan/boot.log 2>/dev/null; }
hostname "nfsvm-$role"; echo "nfsvm-$role" >/etc/hostname
for mod in virtio_pci virtio_net 9pnet_virtio 9p loop; do modprobe "$mod" || echo "modprobe $mod failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L nfsvmchan /nfsvm/chan || echo "no command channel"
mount -t 9p -o trans=virtio,version=9p2000.L,ro nfsvmbin /nfsvm/bin || say "no xenblock share"
: >/nfsvm/chan/boot.log
# What goes wrong from here on is in the boot log the host prints.
exec 2>>/nfsvm/chan/boot.log
say "init (role $role, ip $ip)"
install -m 0755 /nfsvm/bin/xenblock /nfsvm/bin/xenblock-xenstored /usr/local/bin/ || say "xenblock NOT installed"
ip link set lo up
dev=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
ip addr add "$ip/24" dev "$dev" && ip link set "$dev" up || say "network setup failed"
# Each client needs its own NFSv4 client identity (it defaults to the hostname).
modprobe nfs nfs4_unique_id="nfsvm-$role"; modprobe nfsv4
if [ "$role" = s ]; then
    modprobe nfsd
    mount -t tmpfs -o size=512m tmpfs /export
    mkdir -p /var/lib/nfs/v4recovery /run/rpc_pipefs
    mount -t rpc_pipefs rpc_pipefs /run/rpc_pipefs 2>/dev/null || true
    mount -t nfsd nfsd /proc/fs/nfsd
    # The knob: the NFSv4 lease and grace time, set before nfsd starts.
    echo "$lease" >/proc/fs/nfsd/nfsv4leasetime || say "cannot set the lease time"
    echo "$grace" >/proc/fs/nfsd/nfsv4gracetime || say "cannot set the grace time"
    echo "/export 192.168.77.0/24(rw,sync,no_subtree_check,no_root_squash,insecure,fsid=0)" >/etc/exports
    rpcbind -w 2>/dev/null || rpcbind || say "rpcbind failed"
    exportfs -ra || say "exportfs failed"
    rpc.mountd -N 3 || say "rpc.mountd failed"
    rpc.nfsd -N 3 4 || say "rpc.nfsd failed"
    say "nfsd up: lease $(cat /proc/fs/nfsd/nfsv4leasetime) s, grace $(cat /proc/fs/nfsd/nfsv4gracetime) s"
fi
i=0
until mount -t nfs4 -o vers=4.2,timeo=50 192.168.77.1:/ /mnt/nfs 2>/tmp/mount.err; do
    i=$((i + 1)); [ $i -lt 60 ] || { say "cannot mount 192.168.77.1:/ : $(cat /tmp/mount.err)"; break; }
    sleep 1
done
mountpoint -q /mnt/nfs && say "mounted 192.168.77.1:/ at /mnt/nfs"
# The first lock waits for the server's grace period to end.
t0=$(date +%s)
mountpoint -q /mnt/nfs && timeout 60 flock "/mnt/nfs/.grace-$role" true && say "locks work (waited $(( $(date +%s) - t0 )) s for the grace period)"
rm -f "/mnt/nfs/.grace-$role"
# xenstore for xenblock: the embedded daemon, and this host's guest domain.
export XENSTORED_PATH=/run/xenstored.sock XENBLOCK_LOCK_DIR=/run/xenblock-lock
echo "export XENSTORED_PATH=/run/xenstored.sock XENBLOCK_LOCK_DIR=/run/xenblock-lock NFSVM_DOM=$dom" >/etc/nfsvm.env
setsid xenblock-xenstored --socket /run/xenstored.sock --pidfile /run/xenstored.pid </dev/null >/dev/null 2>&1 &
i=0; while [ ! -S /run/xenstored.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
xenstore-write "/local/domain/$dom/vm" "/vm/$role" "/local/domain/$dom/name" "guest-$role" || say "xenstore-write failed"
say "ready"
date +%s >/nfsvm/chan/ready
exec /usr/local/sbin/nfsvm-agent
EOF
    chmod +x "$r/init"

    cat >"$r/usr/local/sbin/nfsvm-agent" <<'EOF'
#!/bin/bash
# Runs the scripts scripts/nfsvm.sh drops in /nfsvm/chan/req/ID/cmd.
C=/nfsvm/chan
mkdir -p $C/run
run_one() {
    local d=$C/run/$1 t
    t=$(cat "$d/timeout" 2>/dev/null || echo 120)
    (cd /root && source /etc/nfsvm.env && timeout -k 5 "$t" setsid bash "$d/cmd" </dev/null >"$d/stdout" 2>"$d/stderr")
    echo $? >"$d/rc.tmp"; mv "$d/rc.tmp" "$d/rc"
}
exec 3<> <(:)
while :; do
    for req in $C/req/*; do
        [ -d "$req" ] || continue
        id=${req##*/}
        mv "$req" "$C/run/$id" 2>/dev/null || continue
        run_one "$id" &
    done
    read -r -t 0.2 -u 3 _
done
EOF
    chmod +x "$r/usr/local/sbin/nfsvm-agent"

    cat >"$r/usr/local/bin/nfsvm-be" <<'EOF'
#!/bin/bash
# nfsvm-be DEVID MODE FILE: a backend of this host's guest, as libxl writes it; prints its path.
set -e
d=$1 mode=$2 file=$3 dom=$NFSVM_DOM
be=backend/vbd/$dom/$d
xenstore-write "$be/frontend" "/local/domain/$dom/device/vbd/$d" "$be/params" "$file" \
    "$be/script" /etc/xen/scripts/block "$be/frontend-id" "$dom" "$be/online" 1 \
    "$be/removable" 0 "$be/bootable" 1 "$be/state" 1 "$be/dev" xvda "$be/type" phy \
    "$be/mode" "$mode" "$be/device-type" disk "$be/discard-enable" 0
xenstore-write "$be/state" 2
echo "$be"
EOF
    chmod +x "$r/usr/local/bin/nfsvm-be"
}

# ---------------------------------------------------------------- VM life
qemu_bin() { command -v qemu-system-x86_64 | xargs readlink -f; }

vm_pid() {   # vm_pid s|a: the pid of this instance's QEMU of that VM, if it runs
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(qemu_bin)" ] || return 1
    echo "$pid"
}

stop_vms() {
    local v pid
    for v in a s; do
        if pid=$(vm_pid "$v"); then
            kill -9 "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    rm -rf "$RUN"
}

console_tail() {
    local v=$1 n=${2:-30}
    if [ -s "$RUN/$v.console" ]; then
        echo "---- last $n lines of VM $v's console ----" >&2
        tail -n "$n" "$RUN/$v.console" | tr -d '\r' >&2
        echo "---- end ----" >&2
    fi
}

boot_vm() {   # boot_vm s|a: start QEMU (daemonized)
    local v=$1 ip mem dom peer
    case $v in
        s) ip=192.168.77.1 mem=1536 dom=2 peer=a ;;
        a) ip=192.168.77.2 mem=1024 dom=1 peer=s ;;
    esac
    mkdir -p "$RUN/$v/req" "$RUN/$v/tmp"
    rm -f "$RUN/$v.net"
    qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -m "$mem" -smp 1 \
        -display none -monitor none -no-reboot -serial "file:$RUN/$v.console" \
        -kernel "$DIR/vmlinuz" -initrd "$DIR/root.cpio" \
        -append "console=ttyS0 panic=-1 nfsvm.role=$v nfsvm.ip=$ip nfsvm.dom=$dom nfsvm.lease=$LEASE nfsvm.grace=$GRACE" \
        -netdev "dgram,id=n0,local.type=unix,local.path=$RUN/$v.net,remote.type=unix,remote.path=$RUN/$peer.net" \
        -device "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:0$dom" \
        -virtfs "local,path=$RUN/$v,mount_tag=nfsvmchan,security_model=none" \
        -virtfs "local,path=$RUN/bin,mount_tag=nfsvmbin,security_model=none,readonly=on" \
        -pidfile "$RUN/$v.pid" -daemonize 7>&- 8>&- ||
        { console_tail "$v"; return 1; }
}

wait_ready() {   # wait_ready s|a
    local v=$1 t0=$SECONDS
    while [ ! -e "$RUN/$v/ready" ]; do
        vm_pid "$v" >/dev/null || { console_tail "$v" 40; log "VM $v exited before it was ready"; return 1; }
        if [ $((SECONDS - t0)) -ge "$BOOT_TIMEOUT" ]; then
            console_tail "$v" 40; log "VM $v not ready after ${BOOT_TIMEOUT}s (NFSVM_BOOT_TIMEOUT)"; return 1
        fi
        sleep 0.5
    done
    sed 's/^/  /' "$RUN/$v/boot.log" >&2
}

# vm_run s|a SCRIPT: run SCRIPT (bash) in the VM; OUT gets stdout+stderr, RC the exit code.
OUT= RC=
vm_run() {
    local v=$1 script=$2 id d t0=$SECONDS
    id=$(date +%s%N)-$RANDOM
    d=$RUN/$v/run/$id
    mkdir -p "$RUN/$v/tmp/$id"
    printf '%s\n' "$script" >"$RUN/$v/tmp/$id/cmd"
    echo "$EXEC_TIMEOUT" >"$RUN/$v/tmp/$id/timeout"
    mv "$RUN/$v/tmp/$id" "$RUN/$v/req/$id"
    while [ ! -e "$d/rc" ]; do
        if ! vm_pid "$v" >/dev/null; then
            OUT="(VM $v is not running)" RC=255; rm -rf "$RUN/$v/req/$id"; return 0
        fi
        if [ $((SECONDS - t0)) -ge $((EXEC_TIMEOUT + 30)) ]; then
            OUT="(VM $v did not answer in $((EXEC_TIMEOUT + 30)) s)" RC=254; return 0
        fi
        sleep 0.1
    done
    RC=$(cat "$d/rc")
    OUT=$(cat "$d/stdout" "$d/stderr")
    rm -rf "$d"
}

# ---------------------------------------------------------------- checks
declare -a RESULTS=()
FAILED=0
check() {   # check NAME PASS|FAIL DETAIL
    RESULTS+=("$(printf '%-23s %s  %s' "$1" "$2" "$3")")
    if [ "$2" = PASS ]; then log "PASS $1: $3"; else FAILED=$((FAILED + 1)); log "FAIL $1: $3"; fi
}
indent() { sed 's/^/    /' <<<"$1" >&2; }

IMG=/mnt/nfs/disk.img
PREP='be=$(nfsvm-be "$1" "$2" '"$IMG"') && xenblock prepare "$be"; rc=$?; echo "rc=$rc"; exit $rc'

# The locks of the exported file in the server's /proc/locks (dev as major:minor in hex).
SERVER_LOCKS='d=$(stat -c %d /export/disk.img); i=$(stat -c %i /export/disk.img)
grep " $(printf %02x:%02x $((d >> 8)) $((d & 255))):$i " /proc/locks'

prepare_on() {   # prepare_on VM DEVID MODE: OUT, RC of `xenblock prepare`
    vm_run "$1" "set -- $2 $3; $PREP"
}
release_on() {   # release_on VM DEVID
    vm_run "$1" "xenblock release backend/vbd/\$NFSVM_DOM/$2 && ! losetup -j $IMG | grep -q ."
}
loops_on() {   # loops_on VM: OUT = the loop devices over the image
    vm_run "$1" "losetup -j $IMG"
}

run_checks() {
    # A: an image on the export, prepared read-write.
    vm_run a "truncate -s 64M $IMG && ls -l $IMG"
    [ "$RC" = 0 ] || { check a-prepare-rw FAIL "cannot create $IMG on A: $OUT"; return; }
    prepare_on a 51712 w
    local prep_out=$OUT prep_rc=$RC
    loops_on a
    if [ "$prep_rc" = 0 ] && [ -n "$OUT" ]; then
        check a-prepare-rw PASS "loop device $(cut -d: -f1 <<<"$OUT") over $IMG"
    else
        check a-prepare-rw FAIL "xenblock prepare exit $prep_rc, loop devices: '${OUT}'"; indent "$prep_out"; return
    fi

    # S, the server: nfsd holds A's locks on the exported file.
    vm_run s "$SERVER_LOCKS"
    if grep -q ' 100 101$' <<<"$OUT" && grep -q ' 201 201$' <<<"$OUT"; then
        check server-sees-locks PASS "nfsd holds bytes 100-101 and 201 for A"
    else
        check server-sees-locks FAIL "the server's /proc/locks for the file:"
    fi
    indent "$OUT"

    # B (on S): xenblock and QEMU refuse.
    prepare_on s 51712 w
    local b_out=$OUT b_rc=$RC
    loops_on s
    if [ "$b_rc" = 3 ] && grep -q 'another host' <<<"$b_out" && [ -z "$OUT" ]; then
        check b-xenblock-refused PASS "exit 3, no loop device; message:"
    else
        check b-xenblock-refused FAIL "exit $b_rc (want 3, naming another host), loop devices: '$OUT'; message:"
    fi
    indent "$b_out"
    vm_run s "qemu-io -f raw -c 'write 0 512' $IMG"
    if [ "$RC" != 0 ] && grep -q 'Failed to get "write" lock' <<<"$OUT"; then
        check b-qemu-refused PASS "qemu-io exit $RC:"
    else
        check b-qemu-refused FAIL "qemu-io exit $RC (want a failure with 'Failed to get \"write\" lock'):"
    fi
    indent "$OUT"

    # A releases; B takes it (and A is refused meanwhile); B releases.
    release_on a 51712
    if [ "$RC" = 0 ]; then check a-release PASS "no loop device left on A"
    else check a-release FAIL "exit $RC: $OUT"; fi

    # Readers on both hosts (each may hold a read delegation, under which
    # the NFS client keeps its locks to itself); then B may not write.
    local R=/mnt/nfs/ro.img
    vm_run s "truncate -s 16M $R && { sleep 100 | qemu-io -r -f raw $R >/dev/null 2>&1 & echo \$! >/run/reader.pid; } &&
        sleep 2 && kill -0 \$(cat /run/reader.pid)"
    local br_rc=$RC
    vm_run a "be=\$(nfsvm-be 51720 r $R) && xenblock prepare \$be"
    local ar_rc=$RC ar_out=$OUT
    vm_run s "${SERVER_LOCKS//disk.img/ro.img}"
    local deleg
    deleg=$(grep -c DELEG <<<"$OUT" || true)
    vm_run s "qemu-io -f raw -c 'write 0 512' $R"
    local bq_rc=$RC bq_out=$OUT
    vm_run s "be=\$(nfsvm-be 51720 w $R) && xenblock prepare \$be"
    local bw_rc=$RC bw_out=$OUT
    vm_run s "kill \$(cat /run/reader.pid) && ! losetup -j $R | grep -q ."
    local bl_rc=$RC
    vm_run a "xenblock release backend/vbd/\$NFSVM_DOM/51720 && ! losetup -j $R | grep -q ."
    if [ "$br_rc" = 0 ] && [ "$ar_rc" = 0 ] && [ "$bq_rc" != 0 ] && grep -q 'Failed to get "write" lock' <<<"$bq_out" &&
       [ "$bw_rc" = 3 ] && grep -q 'another host' <<<"$bw_out" && [ "$bl_rc" = 0 ] && [ "$RC" = 0 ]; then
        check a-reads-b-write-refused PASS "a qemu-io -r on B and xenblock r on A coexist ($deleg read delegation(s) at the server); B's qemu-io write and xenblock w (exit 3) refused"
    else
        check a-reads-b-write-refused FAIL "B reader: exit $br_rc; A xenblock r: exit $ar_rc (want 0); B qemu-io write: exit $bq_rc (want a lock failure); B xenblock w: exit $bw_rc (want 3, another host); cleanup B $bl_rc, A $RC"
        indent "$ar_out"; indent "$bq_out"; indent "$bw_out"
    fi

    prepare_on s 51728 w
    local b2_out=$OUT b2_rc=$RC
    prepare_on a 51728 w
    local a2_out=$OUT a2_rc=$RC
    release_on s 51728
    local rel_rc=$RC
    if [ "$b2_rc" = 0 ] && [ "$a2_rc" = 3 ] && [ "$rel_rc" = 0 ]; then
        check b-takes-after-release PASS "B prepared; A refused meanwhile (exit 3); B released"
    else
        check b-takes-after-release FAIL "B prepare exit $b2_rc (want 0), A prepare exit $a2_rc (want 3), B release exit $rel_rc"
        indent "$b2_out"; indent "$a2_out"
    fi

    # A takes it again, and A's VM dies.
    prepare_on a 51744 w
    if [ "$RC" != 0 ]; then check a-dies-b-refused FAIL "A's second prepare: exit $RC"; indent "$OUT"; return; fi
    local pid t_kill
    pid=$(vm_pid a) || { check a-dies-b-refused FAIL "A's VM is not running"; return; }
    kill -9 "$pid"
    t_kill=$(date +%s%N)
    prepare_on s 51744 w
    if [ "$RC" = 3 ]; then
        check a-dies-b-refused PASS "B still refused $(( ($(date +%s%N) - t_kill) / 1000000 )) ms after the kill"
    else
        check a-dies-b-refused FAIL "B's prepare right after A died: exit $RC (want 3; the server should keep A's locks until the lease ends)"
        indent "$OUT"; return
    fi
    local limit=$((LEASE + GRACE + SLACK))
    # Poll once a second, in B, up to the limit (counted from the kill).
    local left=$(( limit - ($(date +%s%N) - t_kill) / 1000000000 ))
    vm_run s "end=\$((\$(date +%s) + $left)); n=0
        while :; do n=\$((n + 1)); be=\$(nfsvm-be 51760 w $IMG)
            if out=\$(xenblock prepare \"\$be\" 2>&1); then echo \"taken at attempt \$n\"; exit 0; fi
            [ \$(date +%s) -lt \$end ] || { echo \"still refused after \$n attempts: \$out\"; exit 1; }
            sleep 1; done"
    local t_ms=$(( ($(date +%s%N) - t_kill) / 1000000 ))
    TAKEOVER="$(printf '%d.%01d' $((t_ms / 1000)) $((t_ms % 1000 / 100)))"
    if [ "$RC" = 0 ] && [ "$t_ms" -le $((limit * 1000)) ]; then
        check b-takes-after-a-died PASS "B took the image ${TAKEOVER} s after A's VM was killed (lease $LEASE s, limit $limit s; $OUT)"
    else
        check b-takes-after-a-died FAIL "after ${TAKEOVER} s (limit $limit s = lease $LEASE + grace $GRACE + slack $SLACK): $OUT"
    fi
    release_on s 51760
    [ "$RC" = 0 ] || check b-final-release FAIL "exit $RC: $OUT"
}

cmd_test() {
    local t0=$SECONDS
    [ -x "$BIN/xenblock" ] && [ -x "$BIN/xenblock-xenstored" ] ||
        die "build xenblock first: cargo build --release --bins ($BIN/xenblock, xenblock-xenstored)"
    build_image
    mkdir -p "$DIR"
    exec 8>"$RUN.lock"
    flock -w 600 8 || die "waited 10 minutes for $RUN.lock (another nfsvm.sh test of instance $INSTANCE runs)"
    stop_vms
    trap 'stop_vms' EXIT
    trap 'log "interrupted: stopping the VMs"; exit 130' INT TERM HUP
    mkdir -p "$RUN/bin"
    cp "$BIN/xenblock" "$BIN/xenblock-xenstored" "$RUN/bin/"
    log "booting S (NFSv4 server + client B) and A (client) under TCG (lease $LEASE s, grace $GRACE s; consoles: $RUN/{s,a}.console)"
    boot_vm s || die "QEMU failed to start VM s"
    boot_vm a || die "QEMU failed to start VM a"
    local ok=1
    wait_ready s || ok=0
    [ "$ok" = 1 ] && { wait_ready a || ok=0; }
    if [ "$ok" = 1 ] && ! grep -q 'mounted' "$RUN/s/boot.log" "$RUN/a/boot.log" 2>/dev/null; then ok=0; fi
    local boot=$((SECONDS - t0))
    TAKEOVER=
    if [ "$ok" = 1 ]; then
        log "both VMs ready in $boot s"
        run_checks
    else
        check boot FAIL "the VMs did not come up with the export mounted (see above)"
    fi
    echo
    echo "== image locks across hosts (NFSv4, scripts/nfsvm.sh): lease $LEASE s, grace $GRACE s"
    printf '%s\n' "${RESULTS[@]}"
    echo "boot to ready: $boot s; take-over after A died: ${TAKEOVER:-not measured} s; total $((SECONDS - t0)) s"
    if [ "$FAILED" -gt 0 ] || [ "${#RESULTS[@]}" -lt 9 ]; then
        echo "nfsvm: $FAILED check(s) failed, ${#RESULTS[@]} ran (of 9)"
        return 1
    fi
    echo "nfsvm: all ${#RESULTS[@]} checks passed"
}

cmd_down() {
    mkdir -p "$DIR"
    exec 8>"$RUN.lock"
    flock -w 600 8 || die "waited 10 minutes for $RUN.lock"
    stop_vms
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, QEMU's 9p shares)"
case "${1:-}" in
    test) cmd_test ;;
    build) build_image ;;
    down) cmd_down ;;
    *) die "usage: $0 test | build | down" ;;
esac
