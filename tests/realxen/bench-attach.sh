#!/usr/bin/env bash
# The attach benchmark (benches/attach.rs) against dom0's real C xenstored,
# in the real-Xen VM (run there as root, on a dom0 with no guest):
#   cargo bench --bench attach --no-run        # on the host, as root
#   XENVM_EXEC_TIMEOUT=3600 scripts/xenvm.sh exec tests/realxen/bench-attach.sh [NS]
# NS: the numbers of other disks, comma-separated (default 0,400,1000,10000;
# the whole run takes about 25 minutes under TCG).
# The bench binary and the CLI come from the shared checkout's build tree
# (/xenblock/src/target/release). Images go to /scratch (ext4 on a virtio
# disk), the hotplug lock directory to tmpfs. Prints the bench's table
# (prepare/release medians of the in-process library with the claims index
# and with the full scan, and of the CLI, at 0..10 000 other disks) and
# leaves attach-realxen.{csv,json,md} in /scratch/bench-attach.
# Everything runs under QEMU TCG: absolute figures are many times those of
# hardware; compare the rows with each other.
set -euo pipefail

SRC=${XENBLOCK_SRC:-/xenblock/src}
OUT=${XENBLOCK_BENCH_OUT:-/scratch/bench-attach}
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root in dom0"
command -v xl >/dev/null || fail "no xl: this runs in a Xen dom0"
[ -z "$(xl list | awk 'NR > 2')" ] || fail "guests are running; the bench needs a dom0 alone"
bench=$(ls -t "$SRC"/target/release/deps/attach-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[ -n "$bench" ] || fail "no bench binary in $SRC/target/release/deps (run 'cargo bench --bench attach --no-run' on the host)"
[ -x "$SRC/target/release/xenblock" ] || fail "no CLI at $SRC/target/release/xenblock (cargo build --release)"
sock=
for s in /run/xenstored/socket /var/run/xenstored/socket; do
    [ -S "$s" ] && { sock=$s; break; }
done
[ -n "$sock" ] || fail "no xenstored socket in /run/xenstored"
mkdir -p "$OUT" /scratch
echo "bench: $bench"
echo "xenstored: $sock ($(tr '\0' ' ' </proc/"$(pidof xenstored | cut -d' ' -f1)"/cmdline 2>/dev/null || echo '?'))"
echo "dom0: $(nproc) vCPUs, $(awk '/MemTotal/ {print int($2/1024)" MiB"}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
XENBLOCK_BENCH_NS=${1:-0,400,1000,10000} \
XENBLOCK_BENCH_XENSTORED=$sock \
XENBLOCK_BENCH_CLI=$SRC/target/release/xenblock \
XENBLOCK_BENCH_SCRATCH=/scratch \
XENBLOCK_BENCH_OUT=$OUT \
    "$bench" --bench
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
