#!/bin/sh
# run-guest N TIMEOUT (dom0, busybox sh): creates guest N from /job/gN/guest.cfg, runs
# /job/gN/hook.sh (if any) with DOMID while it runs, waits at most TIMEOUT seconds for
# it to shut down (or for the hook to end it with `xl destroy`), runs /job/gN/post.sh
# (if any) once it is gone, and reports on the console:
#   SANDBOX: guest N running domid=D
#   SANDBOX: guest N console-begin / CONSOLE| ... / SANDBOX: guest N console-end
#   HOOK| ... (the output of pre.sh, hook.sh and post.sh), SANDBOX: guest N hook rc=R
#   SANDBOX: guest N result reason=R create=T first=T end=T
# R is Xen's shutdown code (0 poweroff, 1 reboot, 2 suspend, 3 crash), "destroyed",
# "timeout" or "create-failed"; the times are dom0 uptimes (first: the guest's first console output).
n=$1; to=$2; d=/job/g$n
up() { cut -d' ' -f1 /proc/uptime; }
if [ -x "$d/pre.sh" ]; then "$d/pre.sh" 2>&1 | sed 's/^/HOOK| /'; fi
name=$(sed -n 's/^name *= *"\(.*\)"$/\1/p' "$d/guest.cfg" | tail -n1)
log=/var/log/xen/console/guest-$name.log
t0=$(up)
xl create -F "$d/guest.cfg" > "$d/xl.out" 2>&1 &
xl=$!
domid= first= i=0
while [ $i -lt $((to * 20)) ]; do
    if [ -z "$domid" ]; then
        domid=$(sed -n 's/^Waiting for domain .* (domid \([0-9]*\)).*/\1/p' "$d/xl.out" | head -n1)
        if [ -n "$domid" ]; then
            echo "SANDBOX: guest $n running domid=$domid uptime=$(up)"
            if [ -x "$d/hook.sh" ]; then
                ( "$d/hook.sh" "$domid" > "$d/hook.out" 2>&1; echo $? > "$d/hook.rc" ) &
            fi
        fi
    fi
    [ -z "$first" ] && [ -s "$log" ] && first=$(up)
    kill -0 $xl 2>/dev/null || break
    sleep 0.05; i=$((i + 1))
done
reason=
if kill -0 $xl 2>/dev/null; then
    reason=timeout
    if [ -n "$domid" ]; then xl destroy "$domid"; else kill $xl; fi
fi
wait $xl
t1=$(up)
[ -z "$first" ] && [ -s "$log" ] && first=$t1
# xenconsoled may still be draining the ring: wait until the log stops growing.
last=-1 same=0 k=0
while [ $same -lt 3 ] && [ $k -lt 40 ]; do
    sleep 0.2; k=$((k + 1))
    cur=$(stat -c %s "$log" 2>/dev/null || echo 0)
    if [ "$cur" = "$last" ]; then same=$((same + 1)); else same=0; last=$cur; fi
done
# The hook may still be talking to the guest; give it until the timeout.
if [ -x "$d/hook.sh" ]; then
    k=0
    while [ ! -e "$d/hook.rc" ] && [ $k -lt $((to * 5)) ]; do sleep 0.2; k=$((k + 1)); done
fi
echo "SANDBOX: guest $n console-begin"
[ -e "$log" ] && sed 's/^/CONSOLE| /' "$log"
echo
echo "SANDBOX: guest $n console-end"
if [ -x "$d/hook.sh" ]; then
    [ -e "$d/hook.out" ] && sed 's/^/HOOK| /' "$d/hook.out"
    echo "SANDBOX: guest $n hook rc=$(cat "$d/hook.rc" 2>/dev/null || echo timeout)"
fi
[ -n "$domid" ] && xl destroy "$domid" 2>/dev/null
if [ -x "$d/post.sh" ]; then "$d/post.sh" 2>&1 | sed 's/^/HOOK| /'; fi
if [ -z "$reason" ]; then
    reason=$(sed -n 's/^Domain [0-9]* has shut down, reason code \([0-9]*\).*/\1/p' "$d/xl.out" | head -n1)
fi
if [ -z "$reason" ] && grep -q 'has been destroyed' "$d/xl.out"; then
    reason=destroyed
fi
if [ -z "$domid" ]; then
    reason=create-failed
fi
if [ -z "$domid" ] || [ "$reason" != 0 ]; then
    sed 's/^/XL| /' "$d/xl.out"
fi
echo "SANDBOX: guest $n result reason=${reason:-unknown} create=$t0 first=${first:-none} end=$t1"
