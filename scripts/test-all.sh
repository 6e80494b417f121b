#!/usr/bin/env bash
# Runs every check of xenblock, from a fresh machine of the project's kind:
# installs what the tests need, then formatting, lints, the generated header,
# the Rust tests (unit, integration, conformance against Xen's own scripts)
# and the C harness. Must run as root (loop devices): root-only tests fail,
# they do not skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies"
need_apt=()
# debhelper, dpkg-dev, scdoc, lintian: the real-Xen suite's 90-debs builds the
# packages (scripts/build-debs.sh) to install them in dom0.
# qemu-utils (qemu-img, qemu-io) and qemu-system-x86: tests/image_locks.rs
# proves the image locks against QEMU's own.
# btrfs-progs, xfsprogs: tests/kernel_holders.rs (btrfs members, XFS log device).
# debootstrap, cpio: the VM images of scripts/xenvm.sh and scripts/nfsvm.sh.
for pkg in pkg-config valgrind e2fsprogs util-linux debhelper dpkg-dev scdoc lintian btrfs-progs xfsprogs qemu-utils qemu-system-x86 debootstrap cpio; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  extra=()
  if [[ " ${need_apt[*]} " == *" qemu-system-x86 "* ]]; then
    # A newer qemu-utils (e.g. from bookworm-backports) breaks the
    # qemu-system-common of Debian 12: take both from the same build.
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] && extra=("qemu-utils=$v" --allow-downgrades)
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
    "${need_apt[@]}" "${extra[@]}"
fi
# The real-Xen suite's plugin mode builds Debian's libxenlight with the libxl
# hotplug-plugin series (scripts/build-libxl.sh, cached): its build dependencies.
scripts/build-libxl.sh deps
# Its 30-libvirt scenario builds libvirt's libxl driver with
# integrations/libvirt (scripts/build-libvirt.sh, cached): its build dependencies.
scripts/build-libvirt.sh deps
XENBLOCK_DEBS_ROOT=$(scripts/xen-debs.sh)
export XENBLOCK_DEBS_ROOT
echo "Xen 4.17 tools unpacked under $XENBLOCK_DEBS_ROOT"

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "the library links only its base crates (the programs are crates of their own)"
# README "Building": a distro packager of libxenblock sees libc, nix,
# parking_lot and thiserror, nothing the CLI or the test bed needs.
deps=$(cargo tree -p xenblock -e normal --depth 1 --prefix none | sed 1d | awk '{print $1}' | sort | tr '\n' ' ')
if [ "$deps" != "libc nix parking_lot thiserror " ]; then
  echo "the library's dependencies are: $deps; expected: libc nix parking_lot thiserror" >&2
  echo "(a crate only the CLI or the embedded xenstored needs belongs in crates/)" >&2
  exit 1
fi

step "build (release) and check the generated header is committed"
cargo build --release --bins --lib
if ! git diff --exit-code -- include/xenblock.h; then
  echo "include/xenblock.h is stale: the build changed it; commit the regenerated header" >&2
  exit 1
fi
# Every name the header defines is ours: a crate-internal constant that
# cbindgen picked up (add it to cbindgen.toml's exclude list) fails here.
stray=$(grep -E '^#define ' include/xenblock.h | awk '{print $2}' | grep -v '^XENBLOCK_' || true)
if [ -n "$stray" ]; then
  echo "include/xenblock.h defines names without the XENBLOCK_ prefix:" >&2
  echo "$stray" >&2
  exit 1
fi
bad=$(nm -D --defined-only target/release/libxenblock.so | awk '{print $3}' | grep -v '^xenblock_' || true)
if [ -n "$bad" ]; then
  echo "libxenblock.so exports symbols other than xenblock_*:" >&2
  echo "$bad" >&2
  exit 1
fi

step "xenblock(3) and debian/libxenblock1.symbols match the header and the exports"
scripts/check-man3.sh
exported=$(nm -D --defined-only target/release/libxenblock.so | awk '{print $3}' | sort)
listed=$(sed -n 's/^ \(xenblock_[a-z_]*\)@Base .*/\1/p' debian/libxenblock1.symbols | sort)
if [ "$exported" != "$listed" ]; then
  echo "debian/libxenblock1.symbols does not list exactly the exports of libxenblock.so:" >&2
  diff <(echo "$listed") <(echo "$exported") >&2 || true
  exit 1
fi

step "the fuzz targets build (fuzz/ is its own workspace; cargo check there)"
# They include the embedded xenstored's and the client's sources, so a change
# there can break them without breaking anything above.
(cd fuzz && cargo check --quiet --bins)

step "cargo clippy --target x86_64-unknown-freebsd -D warnings (Linux-only code is behind cfg)"
if rustup target list --installed | grep -q x86_64-unknown-freebsd ||
   rustup target add x86_64-unknown-freebsd; then
  cargo clippy --quiet --target x86_64-unknown-freebsd --lib --bins -- -D warnings
else
  # Only the download of the target's std can fail here, not the check.
  echo "WARNING: could not install the x86_64-unknown-freebsd target; FreeBSD check NOT run" >&2
fi

step "cargo test --release"
cargo test --release -- --test-threads="${XENBLOCK_TEST_THREADS:-2}"

if [ -x c-tests/run ]; then
  step "C harness"
  c-tests/run
fi

step "the real-Xen suite's summary against a stub VM (tests/realxen/selftest-summary.sh)"
tests/realxen/selftest-summary.sh

step "libxl series: the 4.17 backport is generated from upstream/, the plugin's header is the series' (integrations/libxl/make-backport.sh --check)"
integrations/libxl/make-backport.sh --check

step "real Xen: a Xen 4.17 host in QEMU (TCG), the suite through xl (scripts/xenvm.sh test)"
# Installs QEMU and debootstrap if missing, fetches Debian 12's Xen, kernel and
# dom0 root into ~/.cache/xenblock/vm, boots, runs tests/realxen, stops the VM.
# It fails (never skips) when QEMU cannot boot Xen, and says why.
if [ "${XENBLOCK_SKIP_REALXEN:-}" = 1 ] && [ "${CI:-}" != true ]; then
  echo "WARNING: XENBLOCK_SKIP_REALXEN=1: the real-Xen suite was NOT run" >&2
else
  scripts/xenvm.sh test
fi

step "image locks across hosts: an NFSv4 server and a client in QEMU (TCG), plain Linux (scripts/nfsvm.sh test)"
# Builds (once, cached in ~/.cache/xenblock/nfsvm) a Debian 12 root with
# nfs-kernel-server and qemu-utils, boots two VMs with this build's xenblock,
# runs the cross-host checks of docs/image-locks.md, stops both VMs. It fails
# (never skips) when it cannot run, and says why.
scripts/nfsvm.sh test

losetup_left=$(losetup -a | grep -c xenblock-test || true)
if [ "$losetup_left" != "0" ]; then
  echo "tests left loop devices behind:" >&2
  losetup -a >&2
  exit 1
fi
echo
echo "all checks passed"
