#!/bin/bash
# The guest half of scripts/vm-test.sh, run as PID 1 on the overlay of the host root: fresh
# /proc, /sys and /dev, cgroup v2 unified at /sys/fs/cgroup, loopback up, then the test
# binaries listed in $run/tests. The last console line is the exit status the host passes on.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
# Emulation is several times slower: the tests' patience (never a runtime bound) stretches.
export NEMOSANDBOX_TEST_TIME_SCALE=${NEMOSANDBOX_TEST_TIME_SCALE:-4}
set -u

finish() {
    echo "NEMOSANDBOX-VM-EXIT=$1"
    sync
    echo o >/proc/sysrq-trigger
    sleep 60
}

mount -t proc proc /proc
mount -t sysfs sys /sys
run=
repo=
for a in $(cat /proc/cmdline); do
    case "$a" in
    nemo.run=*) run=${a#*=} ;;
    nemo.repo=*) repo=${a#*=} ;;
    esac
done
# The checkout may live under a directory that gets a fresh tmpfs below (/tmp in CI): hold
# it aside and put it back afterwards.
mkdir -p /mnt/nemo-repo
mount --bind "$repo" /mnt/nemo-repo || finish 125
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || finish 125
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
for d in /tmp /run /var/tmp /var/lib/containers /var/lib/docker /var/lib/containerd /var/run; do
    # Fresh tmpfs where engines keep storage: overlayfs cannot stack on the overlay root.
    [ -L "$d" ] && continue
    mkdir -p "$d" && mount -t tmpfs -o mode=0755 tmpfs "$d"
done
chmod 1777 /tmp /var/tmp
if [ ! -d "$repo/scripts" ]; then
    mkdir -p "$repo" && mount --bind /mnt/nemo-repo "$repo" || finish 125
fi
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
hostname nemo-vm
ip link set lo up
echo /sbin/modprobe >/proc/sys/kernel/modprobe

# Controllers for the containers' cgroups; PID 1 moves to a leaf so the root may delegate.
mkdir -p /sys/fs/cgroup/init
echo $$ >/sys/fs/cgroup/init/cgroup.procs
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done

cd "$repo" || finish 125
# shellcheck disable=SC1091
. "$run/env"

echo "vm-guest: kernel $(uname -r), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
"$repo/target/x86_64-unknown-linux-gnu/release/nemosandbox" doctor
status=0
while IFS= read -r spec; do
    exe=${spec%%:*}
    filter=
    [ "$exe" != "$spec" ] && filter=${spec#*:}
    echo "vm-guest: running $(basename "$exe") ${filter}"
    t0=$(date +%s)
    # shellcheck disable=SC2086 # the filter is a word list on purpose
    "$exe" --test-threads="${VM_TEST_THREADS:-2}" $filter </dev/null 2>&1
    rc=$?
    echo "vm-guest: $(basename "$exe") exited $rc after $(($(date +%s) - t0))s"
    [ $rc -ne 0 ] && status=1
done <"$run/tests"
finish $status
