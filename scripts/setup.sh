#!/usr/bin/env bash
# One-time machine set-up for building and testing nemosandbox on Debian 12, as root.
# Idempotent: safe to run before every test run.
set -euo pipefail

PACKAGES=(runc crun podman docker.io containerd busybox-static libseccomp-dev pkg-config
          hyperfine iproute2 procps tar coreutils
          gcc libc6-dev libssl-dev curl nodejs python3 \
          protobuf-compiler containernetworking-plugins catatonit \
          qemu-system-x86 cpio kmod xz-utils python3-jsonschema tmux \
          bubblewrap uidmap)
# gcc + libc6-dev: the static test probe; libssl-dev: the static TLS test client;
# curl: a client of the layer-7 tests; nodejs, python3: script-entry, identity and sandbox tests;
# protobuf-compiler: the CRI test client (k8s-cri); containernetworking-plugins + catatonit:
# the CRI pod network and pause image; qemu-system-x86, cpio, kmod, xz-utils: the kernel-matrix
# guest (scripts/vm-test.sh); python3-jsonschema: audit events checked against their schema;
# tmux: the interactive sandbox test types into a real terminal; bubblewrap: the rootless
# sandbox benchmark's peer; uidmap: the subordinate id ranges of the test user.

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# cgroup v1 hybrid hosts without systemd lack the hugetlb hierarchy that crun (and the
# benchmarks comparing against it) expect.
if [ -d /sys/fs/cgroup ] && ! [ -f /sys/fs/cgroup/cgroup.controllers ] \
   && ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb 2>/dev/null || true
fi

command -v cargo >/dev/null || { echo "setup: cargo (the Rust toolchain) is required" >&2; exit 1; }
