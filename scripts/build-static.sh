#!/usr/bin/env bash
# Builds the release binary fully static for x86_64: glibc's static libc (crt-static) and
# Debian's libseccomp.a (libseccomp-dev), so it runs on any x86_64 Linux userland, including one
# with no libseccomp and an older libc. The test suite builds and tests this same binary.
#
#   scripts/build-static.sh            builds target/x86_64-unknown-linux-gnu/release/nemosandbox
#   scripts/build-static.sh --env      prints the build environment (for `cargo test` to share it)
#
# Reproducible: no timestamps are embedded, and the paths of the checkout and the cargo registry
# are remapped, so the same sources, Cargo.lock, Rust version and Debian packages give the same
# bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
static_env() {
    local registry=${CARGO_HOME:-$HOME/.cargo}
    echo "export CARGO_BUILD_TARGET=$TARGET"
    echo "export RUSTFLAGS='-C target-feature=+crt-static --remap-path-prefix=$PWD=/build/nemosandbox --remap-path-prefix=$registry=/cargo'"
    echo "export LIBSECCOMP_LINK_TYPE=static"
    echo "export LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu"
    echo "export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
}
if [ "${1:-}" = --env ]; then
    static_env
    exit 0
fi
[ -f /usr/lib/x86_64-linux-gnu/libseccomp.a ] || { echo "build-static: libseccomp-dev is required (apt-get install libseccomp-dev)" >&2; exit 1; }
eval "$(static_env)"
cargo build --release --locked
bin=target/$TARGET/release/nemosandbox
# A static-pie binary (the default: the kernel still randomises where it loads) reads as
# "statically linked" to ldd, a non-PIE one as "not a dynamic executable"; both have no
# interpreter and no shared library to find.
linkage=$(ldd "$bin" 2>&1 | tr -d '\t' || true)
case "$linkage" in
    *"statically linked"* | *"not a dynamic executable"*) ;;
    *) echo "build-static: $bin is dynamically linked: $linkage" >&2; exit 1 ;;
esac
echo "build-static: $bin ($(stat -c %s "$bin") bytes; ldd: $linkage)"
