# scripts/debsrc.sh — what scripts/build-libxl.sh and scripts/build-libvirt.sh
# share: installing build dependencies, and downloading a Debian source
# package without touching the system's apt configuration. Sourced, not run;
# the sourcing script defines say and die.

# install_build_deps PKG...: installs those of the packages not installed
# (as root; with apt's lock timeout, and an apt-get update if the first
# try fails on stale package lists).
install_build_deps() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing build dependencies (${missing[*]}); install them as root"
    say "installing build dependencies: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends \
        "${missing[@]}" >&2; then
        apt-get -o DPkg::Lock::Timeout=900 update >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends \
            "${missing[@]}" >&2
    fi
}

# fetch_debian_source CACHE SOURCE VERSION: SOURCE_VERSION.dsc and its files
# in CACHE/src, once, through a private apt state in CACHE/apt whose deb-src
# list carries the URIs, suites and components of the system's
# deb.debian.org sources (or Debian 12's defaults).
fetch_debian_source() {
    local cache=$1 src=$2 version=$3
    local dsc="$cache/src/${src}_${version#*:}.dsc"
    [ -e "$cache/src/.done" ] && return 0
    local apt="$cache/apt"
    mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$cache/src"
    : >"$apt/parts/xenblock-src.sources"
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        # Keep the deb.debian.org stanzas only, turned into deb-src.
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /URIs:[ \t]*https?:\/\/deb\.debian\.org\// {
                 sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f" \
            >>"$apt/parts/xenblock-src.sources"
    done
    if ! grep -q . "$apt/parts/xenblock-src.sources"; then
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            >"$apt/parts/xenblock-src.sources"
    fi
    local aptopts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/parts"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
    say "downloading $src $version source"
    apt-get "${aptopts[@]}" update >&2
    (cd "$cache/src" && apt-get "${aptopts[@]}" source --download-only "$src=$version" >&2)
    [ -e "$dsc" ] || die "apt-get source did not give $dsc"
    touch "$cache/src/.done"
}
