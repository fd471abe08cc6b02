#!/bin/sh
# PID 1 of the dom0 of compose's Xen sandbox (busybox sh). Starts the Xen toolstack
# (xenstored, xenconsoled, the backend drivers, bridges xenbr0 at 10.0.0.1/24 and xenbr1
# at 10.0.1.1/24, for a guest's second vif), runs
# /job/run.sh (the guests, appended to the initramfs by compose) and powers the machine
# off, which ends QEMU. Lines starting with "SANDBOX:" are read by compose from the
# serial console that Xen and dom0 share.
export PATH=/usr/bin:/bin:/sbin:/usr/sbin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
# The hotplug scripts' locking stats /dev/stdin, which devtmpfs does not have.
ln -sf /proc/self/fd /dev/fd
ln -sf fd/0 /dev/stdin; ln -sf fd/1 /dev/stdout; ln -sf fd/2 /dev/stderr
mount -t tmpfs tmpfs /run
mkdir -p /run/xen /run/xenstored /run/lock /var/log/xen/console
dmesg -n 1
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-blkback xen-netback loop bridge; do
    modprobe "$m" || echo "SANDBOX: modprobe $m failed"
done
mkdir -p /proc/xen && mount -t xenfs xenfs /proc/xen
xenstored --pid-file=/run/xenstored.pid
xen-init-dom0 >/dev/null
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console --timestamp=none
ip link set lo up
for b in 0 1; do
    brctl addbr xenbr$b && ip addr add 10.0.$b.1/24 dev xenbr$b && ip link set xenbr$b up
done
echo "SANDBOX: ready uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -x /job/run.sh ]; then /job/run.sh; fi
echo "SANDBOX: finished"
sync
poweroff -f
