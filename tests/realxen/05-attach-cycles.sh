TITLE="xl block-attach / block-detach on a running guest, N cycles (XENVM_ATTACH_CYCLES: the suite runs 5, the bench more; default 20)"
EXPECT_stock="${XENVM_ATTACH_CYCLES:-20} cycles: the guest saw the disk each time; no leak"
EXPECT_dropin="${XENVM_ATTACH_CYCLES:-20} cycles: the guest saw the disk each time; no leak"
scenario() {
    local n=${XENVM_ATTACH_CYCLES:-20} img i ok=0 t0 ms
    img=$(image s05.img)
    echo XENBLOCK-ATT-05 | dd of="$img" conv=notrunc 2>/dev/null
    # The guest reports each change of its disk set, with what it reads there.
    guest_cfg g1 'last=none; i=0; while :; do now=$(ls /sys/block | grep xvd | tr "\n" " "); if [ "$now" != "$last" ]; then i=$((i+1)); r=; [ -b /dev/xvdb ] && r=$(head -c 15 /dev/xvdb); echo "disks#$i: [$now] $r"; last=$now; fi; sleep 0.1; done'
    xl create /tmp/g1.cfg || { outcome "xl create failed"; return; }
    wait_console g1 'disks#1: ' 120 || { xl destroy g1; outcome "guest did not start"; return; }
    local c=1 tot_a=0 tot_d=0
    for i in $(seq "$n"); do
        t0=$(date +%s%N)
        xl block-attach g1 "format=raw,vdev=xvdb,access=rw,target=$img" || { echo "attach $i failed"; break; }
        tot_a=$((tot_a + ($(date +%s%N) - t0) / 1000000))
        c=$((c + 1)); wait_console g1 "disks#$c: \[xvdb \] XENBLOCK-ATT-05" 60 || break
        t0=$(date +%s%N)
        xl block-detach g1 xvdb || { echo "detach $i failed"; break; }
        tot_d=$((tot_d + ($(date +%s%N) - t0) / 1000000))
        c=$((c + 1)); wait_console g1 "disks#$c: \[\]" 60 || break
        [ "$(nloops_of "$img")" = 0 ] || { echo "cycle $i: loop device left after detach"; break; }
        ok=$((ok + 1))
    done
    echo "mean xl block-attach $((tot_a / (ok > 0 ? ok : 1))) ms, block-detach $((tot_d / (ok > 0 ? ok : 1))) ms"
    xl destroy g1
    [ "$ok" = "$n" ] || { tail -n 4 "$(console_log g1)"; outcome "$ok of $n cycles completed"; return; }
    outcome "$n cycles: the guest saw the disk each time; no leak"
}
