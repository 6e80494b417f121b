TITLE="libvirt (virsh -c xen:///system): file+phy disks, attach/detach, a second rw user, destroy, 8 concurrent starts, a held hotplug lock"
# Every step goes through libvirtd's libxl driver (lib.sh: libvirt_start, a
# libvirtd of its own per mode, so it runs that mode's libxenlight).
# Debian's libvirt keeps libxl's messages out of its errors: libxl logs
# through libvirt's xentoollog logger (src/libxl/libxl_logger.c) into
# /var/log/libvirt/libxl/<domain>.log (a message naming "Domain N:") or
# libxl-driver.log, and a failed libxl_device_disk_add() becomes only
# "internal error: libxenlight failed to attach disk '<vdev>'"
# (src/libxl/libxl_driver.c). Step 3 looks for the refusal's reason there,
# then installs the libxl driver of integrations/libvirt (built on the host
# by host_prep: scripts/build-libvirt.sh), restarts libvirtd and asks again:
# virsh's error must then carry xenblock's reason, naming the holder.
EXPECT_dropin="start file+phy ok; attach/detach ok; second rw attach refused: virsh says libxenlight failed to attach disk, xenblock's reason naming domain <lv1> in libvirt's libxl-driver.log; patched libvirt: virsh's error adds only libxl's 'Unable to add vbd' (the script's reason names no domain); held lock: dominfo of a neighbour answers at once, list waits for the attach, the attach waits for the release; destroy leaves no loop; 8 concurrent starts: 8 started, each disk connected"
EXPECT_plugin="start file+phy ok; attach/detach ok; second rw attach refused: virsh says libxenlight failed to attach disk, xenblock's reason naming domain <lv1> in libvirt's lv2.log; patched libvirt: virsh's error names domain <lv1>; held lock: dominfo of a neighbour answers at once, list waits for the attach, the attach waits for the release, its wait ends within 0.1 s of it and it is connected within 0.5 s of it; destroy leaves no loop; 8 concurrent starts: 8 started, each disk connected"
# Not with Xen's own script: libvirt adds nothing to what 02-second-rw shows
# of it under xl, and under load its adds overrun libxl's 40 s hotplug
# timeout (two of the eight concurrent starts failed so at load 7).
MODES="dropin plugin"
# libvirt, nine guests and a 15 s lock hold: 320 s in one mode at load 6 on
# the 2-core host, more than the suite's 420 s default leaves to spare.
TIMEOUT=600

# On the host: the libxl driver with integrations/libvirt's series
# (scripts/build-libvirt.sh, cached); prints its directory as dom0 sees it.
host_prep() {
    local cache=${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock} out
    export XENBLOCK_LIBVIRT_CACHE=$cache/libvirt
    mkdir -p "$cache/realxen"
    out=$(nice -n 19 scripts/build-libvirt.sh build 2>"$cache/realxen/build-libvirt.log") ||
        { tail -n 20 "$cache/realxen/build-libvirt.log" >&2; echo "30-libvirt: scripts/build-libvirt.sh build failed" >&2; return 1; }
    echo "/xenblock/cache/${out#"$cache"/}"
}

# rel_to T_US REF_US: "1.23 s after" / "0.50 s before"
rel_to() { if [ "$1" -ge "$2" ]; then echo "$(secs $((($1 - $2) / 1000))) after"; else echo "$(secs $((($2 - $1) / 1000))) before"; fi; }

# secs MS: "1.23 s"
secs() { printf '%d.%02d s' $(($1 / 1000)) $(($1 % 1000 / 10)); }

# timed VAR CMD...: runs CMD (output to the log), its wall time in ms in VAR.
timed() {
    local -n _ms=$1; shift
    local t0; t0=$(now_ms)
    "$@"; local rc=$?
    _ms=$(($(now_ms) - t0))
    return $rc
}

# backend_ok DOMID VDEV-NUMBER: hotplug-status connected and a physical-device.
backend_ok() {
    [ "$(xenstore-read "$(be "$1" "$2")/hotplug-status" 2>/dev/null)" = connected ] &&
        [ -n "$(xenstore-read "$(be "$1" "$2")/physical-device" 2>/dev/null)" ]
}

# mark WHAT: the scenario's elapsed time at a step (since T0, set by
# scenario), to the log.
mark() { echo "[+$(secs $(($(now_ms) - T0)))] $*"; }

scenario() {
    local res=() ms
    T0=$(now_ms)
    timed ms libvirt_start || { outcome "libvirtd did not start"; return; }
    echo "libvirtd answering after $(secs "$ms")"

    # 1. A guest with a file disk and a phy disk (a loop device made here).
    local f1 phyimg dev
    f1=$(image s30-f1.img); phyimg=$(image s30-phy.img)
    dev=$(losetup -f --show "$phyimg") || { outcome "cannot make a loop device"; libvirt_stop; return; }
    lv_xml lv1 'while :; do sleep 1; done' "file:$f1:xvda" "block:$dev:xvdb"
    "${VIRSH[@]}" define /tmp/lv1.xml >/dev/null
    if timed ms "${VIRSH[@]}" start lv1; then
        local d1; d1=$(domid lv1)
        echo "virsh start lv1 (file + phy disk): $(secs "$ms"), domain $d1"
        if backend_ok "$d1" 51712 && backend_ok "$d1" 51728 && [ "$(nloops_of "$f1")" = 1 ] &&
            wait_console lv1 'xenvm-guest: start' 120; then
            res+=("start file+phy ok")
        else
            res+=("start file+phy: backends not connected or guest not running")
        fi
    else
        res+=("start file+phy FAILED: $(tail -n 1 /var/log/libvirt/libxl/lv1.log 2>/dev/null)")
        outcome "$(IFS=';'; echo "${res[*]}" | sed 's/;/; /g')"; libvirt_stop; losetup -d "$dev"; return
    fi

    mark "step 2"
    # 2. attach-disk and detach-disk of a file on the running guest.
    local f2 a="attach/detach ok"
    f2=$(image s30-f2.img)
    if timed ms "${VIRSH[@]}" attach-disk lv1 "$f2" xvdc --driver phy --subdriver raw --targetbus xen --live; then
        echo "virsh attach-disk: $(secs "$ms")"
        backend_ok "$d1" 51744 && [ "$(nloops_of "$f2")" = 1 ] || a="attach-disk: backend not connected or no loop device"
        if timed ms "${VIRSH[@]}" detach-disk lv1 xvdc --live; then
            echo "virsh detach-disk: $(secs "$ms")"
            local i=0
            while [ "$(nloops_of "$f2")" != 0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
            [ "$(nloops_of "$f2")" = 0 ] || a="$a; detach-disk left a loop device on the file"
        else
            a="detach-disk FAILED"
        fi
    else
        a="attach-disk FAILED"
    fi
    res+=("$a")

    mark "step 3"
    # 3. lv1's file, read-write, to a second guest (paused: the refusal comes
    # before its frontend matters).
    lv_xml lv2 'while :; do sleep 1; done'
    "${VIRSH[@]}" define /tmp/lv2.xml >/dev/null
    "${VIRSH[@]}" start --paused lv2 >/dev/null || res+=("second guest did not start")
    "${VIRSH[@]}" attach-disk lv2 "$f1" xvdb --driver phy --subdriver raw --targetbus xen --live >/tmp/lv2.err 2>&1
    local rc=$?
    sed 's/^/virsh: /' /tmp/lv2.err
    # libxl logs the hotplug step's failure without a "Domain N:" prefix, so
    # libvirt's logger puts it in libxl-driver.log, not in lv2.log.
    echo "libxl's log (libvirt: $LIBVIRT_LOG/libxl-driver.log and lv2.log), error lines:"
    grep -hE 'script:|hotplug plugin|Unable to add' "$LIBVIRT_LOG/libxl-driver.log" "$LIBVIRT_LOG/lv2.log" 2>/dev/null | grep -v '^ *"' | sed 's/^/  /'
    echo "loop devices on the file: $(loops_of "$f1" | tr '\n' ' ')"
    if [ $rc = 0 ]; then
        res+=("second rw attach SUCCEEDED: the file is rw in two guests")
        "${VIRSH[@]}" detach-disk lv2 xvdb --live >/dev/null 2>&1
    else
        local s="second rw attach refused: "
        if grep -q "libxenlight failed to attach disk" /tmp/lv2.err; then s+="virsh says libxenlight failed to attach disk"
        else s+="virsh says: $(head -n 1 /tmp/lv2.err)"; fi
        if grep -q "domain $d1\b" /tmp/lv2.err; then s+=", naming domain <lv1> itself"
        elif grep -E 'script:' "$LIBVIRT_LOG/libxl-driver.log" 2>/dev/null | grep -q "domain $d1\b"; then
            s+=", xenblock's reason naming domain <lv1> in libvirt's libxl-driver.log"
        elif grep -q "domain $d1\b" "$LIBVIRT_LOG/lv2.log" 2>/dev/null; then s+=", xenblock's reason naming domain <lv1> in libvirt's lv2.log"
        else s+=", the holder named nowhere"; fi
        res+=("$s")
        # The same attach through the patched driver (integrations/libvirt):
        # libvirtd restarted over its domains, lv1 still holding the file.
        # As xvdd: after the refusal libxl's own entry for xvdb
        # (/libxl/DOMID/device/vbd/51728) stays in xenstore, so a second add
        # of xvdb fails on it ("device already exists in xenstore") before
        # any hotplug step (seen in a drop-in run).
        s="patched libvirt: "
        if ! libvirt_driver patched "${XENVM_PREP:-}" || ! libvirt_restart; then
            s+="could not install it and restart libvirtd"
        elif "${VIRSH[@]}" attach-disk lv2 "$f1" xvdd --driver phy --subdriver raw --targetbus xen --live >/tmp/lv2p.err 2>&1; then
            s+="the attach SUCCEEDED"
        elif grep -q "domain $d1\b" /tmp/lv2p.err; then s+="virsh's error names domain <lv1>"
        # The series reports only messages libxl logged naming the domain;
        # libxl 4.17 logs a script's failure naming none (the plugin's
        # names it).
        elif grep -q "Unable to add vbd with id" /tmp/lv2p.err; then
            s+="virsh's error adds only libxl's 'Unable to add vbd' (the script's reason names no domain)"
        else s+="virsh's error does not name the holder"; fi
        sed 's/^/virsh (patched libvirt): /' /tmp/lv2p.err
        res+=("$s")
    fi

    mark "step 4"
    # 4. A neighbour holds Xen's hotplug lock (locking.sh's protocol: flock
    # on /var/run/xen-hotplug/block, removed before the release) for 15 s
    # while lv1 attaches a disk; lv2 is the neighbour dominfo asks about.
    res+=("$(held_lock lv1 "$d1" lv2)")

    mark "step 5"
    # 5. virsh destroy: no loop device left on any of the files.
    timed ms "${VIRSH[@]}" destroy lv1 >/dev/null; echo "virsh destroy lv1: $(secs "$ms")"
    "${VIRSH[@]}" destroy lv2 >/dev/null
    local left; left=$(($(nloops_of "$f1") + $(nloops_of "$f2") + $(nloops_of "$S/s30-f3.img")))
    if [ "$left" = 0 ] && ! exists lv1 && ! exists lv2; then res+=("destroy leaves no loop")
    else res+=("destroy left $left loop device(s): $(losetup -a | tr '\n' ' ')"); fi
    losetup -d "$dev"

    mark "step 6"
    # 6. 8 guests, each with a file disk, started at once, paused: their
    # disks are prepared during the start (libxl adds a domain's devices
    # before it unpauses it), and eight kernels booting under TCG would
    # only starve dom0. Their starts queue on libxl's one ctx in libvirtd
    # (a domain build runs under its lock): virsh without keepalive (-k 0),
    # so that a slow TCG build does not cut the connection.
    local n=8 i pids=() started=0 ready=0
    # (One virsh process runs a list of commands: under TCG each virsh start-up
    # costs seconds.)
    local cmds=""
    for i in $(seq $n); do
        lv_xml "lvc$i" 'while :; do sleep 1; done' "file:$(image "s30-c$i.img" 16M):xvda"
        cmds+="define /tmp/lvc$i.xml; "
    done
    "${VIRSH[@]}" "$cmds" >/dev/null
    local t0; t0=$(now_ms)
    for i in $(seq $n); do
        virsh -q -k 0 -c xen:///system start --paused "lvc$i" >"/tmp/lvc$i.err" 2>&1 & pids+=($!)
    done
    for i in $(seq $n); do wait "${pids[$((i - 1))]}" && started=$((started + 1)); done
    echo "$n concurrent virsh start: $started succeeded, all returned after $(secs $(($(now_ms) - t0)))"
    local up ids; up=$("${VIRSH[@]}" list --state-paused --name)
    # (One xl list for the eight domids: under TCG each xl start-up costs seconds.)
    ids=$(xl list | awk 'NR > 1 { print $1, $2 }')
    cmds=""
    for i in $(seq $n); do
        grep -qx "lvc$i" <<<"$up" && backend_ok "$(awk -v n="lvc$i" '$1 == n { print $2 }' <<<"$ids")" 51712 &&
            [ "$(nloops_of "$S/s30-c$i.img")" = 1 ] && ready=$((ready + 1))
        [ -s "/tmp/lvc$i.err" ] && sed "s/^/lvc$i: /" "/tmp/lvc$i.err"
        cmds+="destroy lvc$i; "
    done
    res+=("$n concurrent starts: $ready started, each disk connected")
    mark "step 6: destroying the $n guests"
    "${VIRSH[@]}" "$cmds" >/dev/null
    local left=0; for i in $(seq $n); do left=$((left + $(nloops_of "$S/s30-c$i.img"))); done
    [ "$left" = 0 ] || res+=("the $n guests' destroy left $left loop device(s)")
    mark "stopping libvirtd"
    libvirt_stop
    libvirt_driver stock
    mark "done"
    outcome "$(IFS=';'; echo "${res[*]}" | sed 's/;/; /g')"
}

# held_lock GUEST DOMID NEIGHBOUR: prints the step's outcome; the figures go
# to stderr (the log). libvirt holds GUEST's object lock through the whole
# libxl_device_disk_add() (src/libxl/libxl_driver.c), and `virsh list` locks
# every domain object to filter it, so list waits for the attach whatever
# does the hotplug; dominfo of a NEIGHBOUR takes only libxl's ctx lock,
# which the hotplug wait must not hold.
held_lock() {
    local guest=$1 gid=$2 other=$3 LF=/var/run/xen-hotplug/block hold=15 f3 base_list base_info list_ms info_ms
    f3=$(image s30-f3.img)
    # What the two commands cost here when nothing waits (virsh's own start
    # is a good part of a second under TCG).
    timed base_list "${VIRSH[@]}" list >/dev/null
    timed base_info "${VIRSH[@]}" dominfo "$other" >/dev/null
    mkdir -p /var/run/xen-hotplug
    rm -f /tmp/s30-held /tmp/s30-released /tmp/s30-retaken /tmp/s30-watch
    (
        while :; do
            exec 9<>"$LF"
            flock -x 9
            # locking.sh's check: the file locked is still the one at the path
            [ "$(stat -L -c '%D.%i' /dev/stdin 0<&9)" = "$(stat -L -c '%D.%i' "$LF" 2>/dev/null)" ] && break
        done
        : >/tmp/s30-held
        sleep "$hold"
        rm -f "$LF"
        echo "${EPOCHREALTIME/[.,]/}" >/tmp/s30-released
        exec 9>&-
        # The waiter's lock: the next holder makes the file again (locking.sh's
        # protocol), so its appearing is the moment the wait ended.
        local k=0
        while [ ! -e "$LF" ] && [ $k -lt 200000 ]; do k=$((k + 1)); done
        [ -e "$LF" ] && echo "${EPOCHREALTIME/[.,]/}" >/tmp/s30-retaken
    ) &
    local holder=$! i=0
    while [ ! -e /tmp/s30-held ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /tmp/s30-held ] || { kill $holder; echo "held lock: the neighbour could not take the lock"; return; }
    # When the hotplug step is done: the backend's hotplug-status appears
    # (xenstore-watch fires once when set up, once per change after).
    local hs; hs=$(be "$gid" 51744)/hotplug-status
    ( xenstore-watch "$hs" | while read -r _; do echo "${EPOCHREALTIME/[.,]/}"; done >/tmp/s30-watch ) &
    local watcher=$!
    (
        "${VIRSH[@]}" attach-disk "$guest" "$f3" xvdc --driver phy --subdriver raw --targetbus xen --live >/tmp/s30-att.err 2>&1
        echo $? >/tmp/s30-att.rc
        echo "${EPOCHREALTIME/[.,]/}" >/tmp/s30-att.done
    ) &
    local att=$!
    sleep 1
    # Both asked while the attach waits, side by side; each notes when it ends.
    local q0=${EPOCHREALTIME/[.,]/}
    ( "${VIRSH[@]}" list >/dev/null 2>&1; echo "${EPOCHREALTIME/[.,]/}" >/tmp/s30-list.end ) &
    local ql=$!
    ( "${VIRSH[@]}" dominfo "$other" >/dev/null 2>&1; echo "${EPOCHREALTIME/[.,]/}" >/tmp/s30-info.end ) &
    local qi=$!
    wait $ql $qi $holder $att
    { pkill -P $watcher; kill $watcher; wait $watcher; } 2>/dev/null
    local rel done_us conn_us list_end info_end
    rel=$(cat /tmp/s30-released); done_us=$(cat /tmp/s30-att.done)
    list_end=$(cat /tmp/s30-list.end); info_end=$(cat /tmp/s30-info.end)
    list_ms=$(((list_end - q0) / 1000)); info_ms=$(((info_end - q0) / 1000))
    conn_us=$(awk -v r="$rel" '$1 >= r { print $1; exit }' /tmp/s30-watch 2>/dev/null)
    echo >&2 "held lock ${hold} s, an attach waiting: virsh list took $(secs "$list_ms") (idle: $(secs "$base_list")), ended $(rel_to "$list_end" "$rel") the release; dominfo of a neighbour took $(secs "$info_ms") (idle: $(secs "$base_info")), ended $(rel_to "$info_end" "$rel") the release"
    local conn_ms=""; [ -n "$conn_us" ] && conn_ms=$(((conn_us - rel) / 1000))
    local retaken; retaken=$(cat /tmp/s30-retaken 2>/dev/null)
    echo >&2 "held lock: release -> the waiting attach holds the lock: $([ -n "$retaken" ] && echo "$(((retaken - rel) / 1000)) ms" || echo 'not seen'); release -> hotplug-status: $([ -n "$conn_ms" ] && secs "$conn_ms" || echo 'none seen'); release -> virsh attach-disk returned: $(secs $(((done_us - rel) / 1000))) (exit $(cat /tmp/s30-att.rc), $MODE)"
    sed 's/^/attach: /' /tmp/s30-att.err >&2
    local s="held lock: "
    # "At once": it does not wait for the hold. The hold (15 s) leaves it 14 s,
    # twice what one virsh took on a loaded 2-core host under TCG (idle: 7 s).
    if [ "$info_end" -lt "$rel" ]; then s+="dominfo of a neighbour answers at once"
    else s+="dominfo of a neighbour waits for the release"; fi
    if [ "$list_end" -lt "$rel" ]; then s+=", list answers before the release"
    else s+=", list waits for the attach"; fi
    if [ "$(cat /tmp/s30-att.rc)" != 0 ]; then s+=", the attach FAILED"
    elif [ "$done_us" -lt "$rel" ]; then s+=", the attach did NOT wait for the release"
    else s+=", the attach waits for the release"; fi
    # The plugin's lock wait is fd-driven (no retry timer): the wait ends at
    # the release (measured 2 ms, bound 0.1 s) and the disk is connected
    # right after (measured 0.03-0.33 s under TCG at load 6, bound 0.5 s:
    # what is left is the attach's own work). The drop-in's figures are
    # only reported.
    if [ "$MODE" = plugin ]; then
        if [ -n "$retaken" ] && [ $(((retaken - rel) / 1000)) -lt 100 ]; then s+=", its wait ends within 0.1 s of it"
        else s+=", its wait does NOT end within 0.1 s of it"; fi
        if [ -n "$conn_ms" ] && [ "$conn_ms" -lt 500 ]; then s+=" and it is connected within 0.5 s of it"
        else s+=" but it is NOT connected within 0.5 s of it"; fi
    fi
    echo "$s"
}
