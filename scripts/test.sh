#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests that run real containers and real
# engines through the release binary, then the kernel-matrix suites in a qemu guest on Debian
# 12's kernel (6.1, cgroup v2). Needs root. One build for everything: the static release binary
# (scripts/build-static.sh), which is what the .deb ships, and the tests built with its flags.
#
#   scripts/test.sh            host suite, then the 6.1 guest
#   scripts/test.sh --matrix   host suite, then the 6.1 and 6.12 guests
#   scripts/test.sh --host     host suite only
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
t0=$(date +%s)
bash scripts/setup.sh
# The library's modules depend on each other without loops (docs/architecture.md).
python3 scripts/module-deps.py --check
bash scripts/build-static.sh
eval "$(bash scripts/build-static.sh --env)"
cargo test --release --locked -- --test-threads=2
t1=$(date +%s)
echo "test.sh: host suite passed in $((t1 - t0))s"
if [ "$mode" != --host ]; then
    bash scripts/vm-test.sh linux-image-amd64
    echo "test.sh: 6.1 guest suite passed in $(($(date +%s) - t1))s"
fi
if [ "$mode" = --matrix ]; then
    t2=$(date +%s)
    bash scripts/vm-test.sh linux-image-amd64/trixie
    echo "test.sh: 6.12 guest suite passed in $(($(date +%s) - t2))s"
fi
echo "test.sh: all passed in $(($(date +%s) - t0))s"
