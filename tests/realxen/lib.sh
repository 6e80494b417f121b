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
