#!/bin/busybox sh
# PID 1 of the vm-test initramfs: load the modules that reach the host root, mount it
# read-only over virtio-9p with a tmpfs overlay on top, and switch to it to run
# scripts/vm-guest.sh. Any failure here powers the guest off with a status the host reads.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

fail() {
    echo "vm-init: $*"
    echo "NEMOSANDBOX-VM-EXIT=125"
    echo o >/proc/sysrq-trigger
    sleep 60
}

arg() {
    for a in $(cat /proc/cmdline); do
        case "$a" in "$1="*) echo "${a#*=}" ;; esac
    done
}

kver=$(arg nemo.kver)
kdir=$(arg nemo.kdir)
repo=$(arg nemo.repo)

while read -r m; do
    insmod "/mod/$m" || fail "insmod $m"
done </mod/order

mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower ||
    fail "mounting the host root over 9p"
mount -t tmpfs -o size=80% tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot ||
    fail "mounting the overlay"

# The guest kernel's modules where modprobe (the host's kmod) looks for them.
mkdir -p "/newroot/lib/modules/$kver"
mount --bind "/newroot$kdir/lib/modules/$kver" "/newroot/lib/modules/$kver"

umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash "$repo/scripts/vm-guest.sh"
