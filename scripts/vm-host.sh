# scripts/vm-host.sh — what scripts/xenvm.sh and scripts/nfsvm.sh share on the
# host side: the host tools they need, Debian's mirror, the Debian 12 kernel
# package. Sourced, not run; the sourcing script defines log and die.

# need_host_tools: QEMU, debootstrap, cpio and flock, installed if missing.
need_host_tools() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v flock >/dev/null || missing+=(util-linux)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get -o DPkg::Lock::Timeout=900 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
            --no-install-recommends "${missing[@]}" >&2
    fi
}

# mirror: the host's Debian mirror (from its apt sources), for debootstrap.
mirror() {
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# kernel_pkg: the name of Debian 12's kernel package (linux-image-6.1.0-N-amd64),
# after an apt-get update if the package lists do not know it yet.
kernel_pkg() {
    local k
    k=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6/ {print $2; exit}')
    if [ -z "$k" ]; then
        apt-get -o DPkg::Lock::Timeout=900 update -qq >&2
        k=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6/ {print $2; exit}')
    fi
    [ -n "$k" ] || die "cannot find Debian 12's linux-image-6.1 package (apt-cache depends linux-image-amd64)"
    echo "$k"
}
