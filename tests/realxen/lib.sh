# Helpers for the real-Xen scenarios; sourced in dom0 by run-one.sh.
# Every wait is bounded: XENVM_GUEST_TIMEOUT (default 180 s) per guest.
GUEST_TIMEOUT=${XENVM_GUEST_TIMEOUT:-180}
S=${XENVM_SCRATCH:-/scratch}

# guest_cfg NAME 'SHELL COMMAND' [DISKSPEC...]: writes /tmp/NAME.cfg, a busybox
# PV guest that runs the command (its output goes to NAME's console log) and
# powers off.
guest_cfg() {
    local name=$1 cmd=$2; shift 2
    local disks="" d
    for d in "$@"; do disks="$disks'$d',"; done
    cat >"/tmp/$name.cfg" <<EOC
name="$name"
kernel="$XENVM_GUEST_KERNEL"
ramdisk="$XENVM_GUEST_RAMDISK"
memory=128
vcpus=1
extra="console=hvc0 quiet xenvm_cmd64=$(printf '%s' "$cmd" | base64 -w0)"
disk=[${disks%,}]
on_poweroff="destroy"
on_crash="destroy"
EOC
}

domid() { xl domid "$1" 2>/dev/null; }
exists() { xl list "$1" >/dev/null 2>&1; }

# wait_gone NAME [SECONDS]: until the domain has powered off and gone.
wait_gone() {
    local t=${2:-$GUEST_TIMEOUT} i=0
    while exists "$1"; do
        [ "$i" -ge $((t * 5)) ] && { echo "guest $1 still there after ${t}s" >&2; tail -n 5 "$(console_log "$1")" >&2; return 1; }
        sleep 0.2; i=$((i + 1))
    done
}

console_log() { echo "/var/log/xen/console/guest-$1.log"; }

# wait_console NAME REGEX [SECONDS]: until NAME's console log matches.
wait_console() {
    local t=${3:-$GUEST_TIMEOUT} i=0
    until grep -qE "$2" "$(console_log "$1")" 2>/dev/null; do
        [ "$i" -ge $((t * 5)) ] && { echo "guest $1: no '$2' on its console after ${t}s" >&2; return 1; }
        sleep 0.2; i=$((i + 1))
    done
}

# loops_of FILE: the loop devices backed by FILE, one per line.
loops_of() { losetup -n -O NAME -j "$1" 2>/dev/null | sed 's/ //g'; }
nloops_of() { loops_of "$1" | grep -c . || true; }

# be DOMID [DEVID]: the disk's backend path in dom0's xenstore.
be() { echo "/local/domain/0/backend/vbd/$1/${2:-51712}"; }

# image NAME [SIZE]: a fresh sparse image on the ext4 scratch disk.
image() { rm -f "$S/$1"; truncate -s "${2:-64M}" "$S/$1"; echo "$S/$1"; }

# first line of xl's error that is not noise
xl_err() { grep -vE '^(Parsing config|libxl: info)' "$1" | head -n 3 | tr '\n' ' '; }

outcome() { echo "=> $*"; }

# ---- overlap scenarios (20-29): a guest asks for a block device that overlaps
# one in use, and the answer is read from xl's own error output.

# overlap_try NAME TARGET ACCESS REGEX LABEL: `xl create -p` a guest with
# TARGET as xvdb; prints "CREATED", "refused (LABEL)" when xl's error
# matches REGEX, else "refused (other: <xl's first error lines>)". xl's
# output goes to stderr (the scenario's log). Destroys the guest.
overlap_try() {
    local name=$1 target=$2 access=$3 want=$4 label=$5
    guest_cfg "$name" 'true' "format=raw,vdev=xvdb,access=$access,target=$target"
    xl create -p "/tmp/$name.cfg" >"/tmp/$name.err" 2>&1
    local rc=$?
    sed "s/^/  $name: /" "/tmp/$name.err" >&2
    if [ $rc -eq 0 ] && exists "$name"; then
        xl destroy "$name" >/dev/null 2>&1
        echo "CREATED"
        return
    fi
    exists "$name" && xl destroy "$name" >/dev/null 2>&1
    # libxl logs the failed backend's hotplug-error (or the library's refusal).
    if grep -qE -- "$want" "/tmp/$name.err"; then
        echo "refused ($label)"
    else
        echo "refused (other: $(xl_err "/tmp/$name.err"))"
    fi
}

# overlap_hold NAME TARGET: a first guest (paused) that has TARGET read-write.
overlap_hold() {
    guest_cfg "$1" 'true' "format=raw,vdev=xvda,access=rw,target=$2"
    xl create -p "/tmp/$1.cfg" >"/tmp/$1.err" 2>&1 ||
        { echo "holder $1 on $2 failed: $(xl_err "/tmp/$1.err")" >&2; return 1; }
}

# partitioned_loop IMAGE: a loop device with partition nodes (losetup -P)
# over IMAGE, which holds a DOS table of two 24 MiB partitions. Prints the
# device; fails (with a reason on stderr) when the partitions do not appear.
partitioned_loop() {
    local dev i
    printf 'label: dos\n,24M\n,24M\n' | sfdisk -q "$1" || { echo "sfdisk on $1 failed" >&2; return 1; }
    dev=$(losetup -P -f --show "$1") || { echo "losetup -P $1 failed" >&2; return 1; }
    for i in $(seq 20); do [ -b "${dev}p2" ] && break; sleep 0.2; done
    [ -b "${dev}p1" ] && [ -b "${dev}p2" ] || { losetup -d "$dev"; echo "no partition nodes on $dev" >&2; return 1; }
    echo "$dev"
}

# need_tools TOOL...: prints the first missing one.
need_tools() {
    local t
    for t in "$@"; do command -v "$t" >/dev/null || { echo "$t"; return; }; done
}

# ---- libvirt (30-libvirt): virsh through libvirt's libxl driver.
# dom0 has libvirtd with only its libxl driver (scripts/xenvm.sh); nothing
# starts it at boot. A scenario starts its own (libvirt_start), so that it
# runs the libxenlight its mode installed, and stops it (libvirt_stop).
VIRSH=(virsh -q -c xen:///system)
LIBVIRT_LOG=/var/log/libvirt/libxl   # libxl's own messages: NAME.log per domain, libxl-driver.log

# libvirt_start: a fresh libvirtd (no domains defined, Debian's libxl
# driver), answering virsh.
libvirt_start() {
    libvirt_stop
    libvirt_driver stock || return 1
    mkdir -p /etc/libvirt /var/log/libvirt /run/libvirt
    rm -rf /etc/libvirt/libxl /var/lib/libvirt/libxl /run/libvirt/libxl "$LIBVIRT_LOG"
    cat >/etc/libvirt/libvirtd.conf <<'EOC'
# written by tests/realxen/lib.sh (libvirt_start)
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOC
    : >/var/log/libvirt/libvirtd.log
    libvirtd_launch
}

# libvirtd_launch: starts libvirtd and waits (60 s at most) until it answers virsh.
libvirtd_launch() {
    libvirtd -d -p /run/libvirtd.pid || { echo "libvirtd did not start" >&2; return 1; }
    local i=0
    until "${VIRSH[@]}" uri >/dev/null 2>&1; do
        if [ $i -ge 300 ] || ! libvirtd_pid >/dev/null; then
            echo "libvirtd not answering after $((i / 5)) s:" >&2; tail -n 5 /var/log/libvirt/libvirtd.log >&2
            return 1
        fi
        sleep 0.2; i=$((i + 1))
    done
}

# libvirtd_kill PID: stops libvirtd (SIGTERM, 10 s, then SIGKILL); its
# domains keep running.
libvirtd_kill() {
    local i=0
    kill "$1" 2>/dev/null
    while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$1" 2>/dev/null
    rm -f /run/libvirtd.pid
}

# libvirt_driver stock|patched [DIR]: Debian's libxl driver module, or the
# one of integrations/libvirt (scripts/build-libvirt.sh, its output DIR as
# dom0 sees it), for the next libvirtd to load.
libvirt_driver() {
    local sh=/run/xenblock-libvirt/build-libvirt.sh
    case $1 in
    patched)
        [ -e "${2:-}/libvirt_driver_libxl.so" ] || { echo "no patched libvirt driver in '${2:-}'" >&2; return 1; }
        "$2/build-libvirt.sh" install "$2" >&2 || return 1
        mkdir -p "${sh%/*}" && cp "$2/build-libvirt.sh" "$2/debsrc.sh" "${sh%/*}/"
        ;;
    stock) [ ! -e "$sh" ] || { "$sh" uninstall >&2 && rm -f "$sh"; } ;;
    esac
}

# libvirt_restart: a new libvirtd over the running one's state (it
# reconnects to the domains it had), answering virsh.
libvirt_restart() {
    local p
    if p=$(libvirtd_pid); then libvirtd_kill "$p"; else rm -f /run/libvirtd.pid; fi
    libvirtd_launch
}

libvirtd_pid() {
    local p; p=$(cat /run/libvirtd.pid 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

# libvirt_stop: destroys and undefines its domains, stops libvirtd.
libvirt_stop() {
    local p d
    p=$(libvirtd_pid) || return 0
    local cmds=""
    for d in $("${VIRSH[@]}" list --all --name 2>/dev/null); do
        exists "$d" && cmds+="destroy $d; "
        cmds+="undefine $d; "
    done
    # one virsh for all (under TCG each virsh start-up costs seconds)
    [ -n "$cmds" ] && "${VIRSH[@]}" "$cmds" >/dev/null 2>&1
    libvirtd_kill "$p"
}

# lv_xml NAME 'SHELL COMMAND' [DISK...]: writes /tmp/NAME.xml, the libvirt
# twin of guest_cfg's busybox PV guest. DISK is file:PATH:VDEV[:ro] or
# block:PATH:VDEV[:ro]; both go to libxl's phy backend (the block script).
lv_xml() {
    local name=$1 cmd=$2 d kind path vdev ro disks=""; shift 2
    for d in "$@"; do
        IFS=: read -r kind path vdev ro <<<"$d"
        local src=file; [ "$kind" = block ] && src=dev
        disks="$disks    <disk type='$kind' device='disk'>
      <driver name='phy' type='raw'/>
      <source $src='$path'/>
      <target dev='$vdev' bus='xen'/>$([ "$ro" = ro ] && printf '\n      <readonly/>')
    </disk>
"
    done
    cat >"/tmp/$name.xml" <<EOX
<domain type='xen'>
  <name>$name</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type>linux</type>
    <kernel>$XENVM_GUEST_KERNEL</kernel>
    <initrd>$XENVM_GUEST_RAMDISK</initrd>
    <cmdline>console=hvc0 quiet xenvm_cmd64=$(printf '%s' "$cmd" | base64 -w0)</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
$disks  </devices>
</domain>
EOX
}

# now_ms: wall clock in ms, without a fork (bash 5's EPOCHREALTIME).
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
