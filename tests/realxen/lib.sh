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
