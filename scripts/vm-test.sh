#!/usr/bin/env bash
# Run the already-built release test binaries inside a qemu guest booted on a Debian kernel
# package, with cgroup v2 unified, so the suites see the kernels real nodes run (6.1, 6.12).
#
#   scripts/vm-test.sh KERNEL_PACKAGE [TEST[:FILTER]]...
#
# KERNEL_PACKAGE is an apt package name, optionally with a suite after a slash:
#   linux-image-amd64          Debian 12's kernel (6.1), from the machine's own sources
#   linux-image-amd64/trixie   Debian 13's kernel (6.12), from a private source list
# A meta package is followed to the versioned image it depends on. TEST is a test target of
# Cargo.toml (lifecycle, network, ...); FILTER is passed to it. Without tests, the kernel matrix
# set runs. The guest shares the host root read-only over virtio-9p with a tmpfs overlay on top,
# boots under TCG (guests hang under KVM here) and prints the guest's exit status last; the
# script exits with it. VM_TIMEOUT (seconds, default 2400), VM_MEM (default 6G), VM_CPUS;
# NEMOSANDBOX_TEST_BIN and NEMOSANDBOX_TEST_TIME_SCALE are passed to the guest's tests.
# The body is one compound command, read whole before it runs: editing the file meanwhile is safe.
{
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ $# -lt 1 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
package=$1
shift
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    tests=(lifecycle confinement network l7 escape symlinks execgate oci engines:podman)
fi
timeout_s=${VM_TIMEOUT:-2400}
cache=${VM_CACHE:-/var/cache/nemosandbox-vm}
mkdir -p "$cache"

need() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}
need qemu-system-x86 busybox-static cpio kmod xz-utils

# --- the kernel package -------------------------------------------------------------------
name=${package%%/*}
suite=
[ "$name" != "$package" ] && suite=${package#*/}
apt_opts=()
if [ -n "$suite" ]; then
    # A private source list and lists directory: the machine's own sources stay untouched.
    src="$cache/apt-$suite"
    mkdir -p "$src/lists/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
        >"$src/sources.list"
    apt_opts=(-o "Dir::Etc::sourcelist=$src/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$src/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
    if [ -z "$(find "$src/lists" -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
        echo "vm-test: apt-get update ($suite)"
        apt-get "${apt_opts[@]}" update -qq
    fi
fi
# Follow a meta package (linux-image-amd64) to the versioned image.
real=$(apt-cache "${apt_opts[@]}" depends "$name" 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$real" ] && name=$real
kdir="$cache/$name"
if [ ! -d "$kdir/ok" ]; then
    echo "vm-test: downloading $name${suite:+ ($suite)}"
    rm -rf "$kdir" && mkdir -p "$kdir"
    (cd "$kdir" && apt-get "${apt_opts[@]}" download -qq "$name" 2>/dev/null)
    dpkg-deb -x "$kdir"/*.deb "$kdir/root"
    rm -f "$kdir"/*.deb
    # Trixie ships modules under usr/lib (merged /usr); modprobe -d wants DIR/lib/modules.
    [ -d "$kdir/root/lib" ] || ln -s usr/lib "$kdir/root/lib"
    mkdir "$kdir/ok"
fi
version=$(ls "$kdir/root/lib/modules")
vmlinuz="$kdir/root/boot/vmlinuz-$version"
depmod -b "$kdir/root" "$version"

# --- the initramfs: busybox and the modules that reach the host root -----------------------
initrd="$kdir/initrd.cpio.gz"
if [ ! -f "$initrd" ] || [ scripts/vm-init.sh -nt "$initrd" ]; then
    work=$(mktemp -d)
    mkdir -p "$work"/{bin,proc,sys,dev,lower,upper,newroot,mod}
    cp /bin/busybox "$work/bin/busybox"
    : >"$work/mod/order"
    for m in virtio_pci 9pnet_virtio 9p overlay; do
        modprobe -d "$kdir/root" -S "$version" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        base=$(basename "$ko")
        case "$ko" in
        *.xz) xz -dc "$ko" >"$work/mod/${base%.xz}" && base=${base%.xz} ;;
        *.zst) zstd -qdc "$ko" >"$work/mod/${base%.zst}" && base=${base%.zst} ;;
        *) cp "$ko" "$work/mod/$base" ;;
        esac
        echo "$base" >>"$work/mod/order"
    done
    cp scripts/vm-init.sh "$work/init"
    chmod +x "$work/init"
    (cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$work"
fi

# --- the test binaries, as built by scripts/test.sh (the static build's environment) -------
eval "$(bash scripts/build-static.sh --env)"
targets=()
for t in "${tests[@]}"; do targets+=(--test "${t%%:*}"); done
echo "vm-test: building the test binaries (cargo test --release --no-run)"
built=$(cargo test --release --locked --no-run --message-format=json "${targets[@]}" |
    grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
specs=()
for t in "${tests[@]}"; do
    target=${t%%:*}
    filter=
    [ "$target" != "$t" ] && filter=${t#*:}
    exe=$(grep "/deps/$target-[0-9a-f]*\$" <<<"$built" | tail -1)
    if [ -z "$exe" ] || [ ! -x "$exe" ]; then
        echo "vm-test: no test binary for '$target'" >&2
        exit 2
    fi
    specs+=("$exe${filter:+:$filter}")
done

# --- boot -----------------------------------------------------------------------------------
# Console logs of the last few runs stay for inspection.
# (No earlier run on a fresh machine: ls fails, which pipefail must not turn into a failure.)
{ ls -dt "$cache"/run.* 2>/dev/null || true; } | tail -n +5 | xargs -r rm -rf
run=$(mktemp -d "$cache/run.XXXXXX")
printf '%s\n' "${specs[@]}" >"$run/tests"
# The runtime under test can be swapped, as on the host (an older binary, for comparison).
: >"$run/env"
for v in NEMOSANDBOX_TEST_BIN NEMOSANDBOX_TEST_TIME_SCALE; do
    [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}" >>"$run/env"
done
log="$run/console.log"
: >"$log"
echo "vm-test: booting $version under TCG (timeout ${timeout_s}s, console $log)"
start=$(date +%s)
qemu-system-x86_64 -accel tcg,thread=multi -machine q35 -cpu max -smp "${VM_CPUS:-2}" \
    -m "${VM_MEM:-6G}" -nographic -no-reboot -monitor none -serial "file:$log" \
    -kernel "$vmlinuz" -initrd "$initrd" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 nemo.run=$run nemo.kver=$version nemo.kdir=$kdir/root nemo.repo=$repo" \
    >"$run/qemu.out" 2>&1 &
qemu=$!
trap 'kill $qemu 2>/dev/null || true' EXIT

shown=0
deadline=$((start + timeout_s))
while kill -0 $qemu 2>/dev/null; do
    sleep 5
    lines=$(wc -l <"$log")
    if [ "$lines" -gt "$shown" ]; then
        sed -n "$((shown + 1)),${lines}p" "$log" | sed -e 's/\r$//' -e 's/^/  guest| /'
        shown=$lines
    else
        echo "vm-test: $(($(date +%s) - start))s elapsed, waiting for the guest"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "vm-test: timed out after ${timeout_s}s" >&2
        kill $qemu
        exit 124
    fi
done
sed -n "$((shown + 1)),\$p" "$log" | sed -e 's/\r$//' -e 's/^/  guest| /'
wall=$(($(date +%s) - start))
status=$(grep -a -o 'NEMOSANDBOX-VM-EXIT=[0-9]*' "$log" | tail -1 | cut -d= -f2)
if [ -z "$status" ]; then
    echo "vm-test: the guest ended without an exit status ($(cat "$run/qemu.out"))" >&2
    exit 1
fi
echo "vm-test: $version: exit status $status, wall time ${wall}s"
exit "$status"
}
