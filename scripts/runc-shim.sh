#!/usr/bin/env bash
# runc in the place of nemosandbox, for the attack tests: `NEMOSANDBOX_TEST_BIN=$PWD/scripts/runc-shim.sh
# cargo test --release --test escape` runs integration/escape.rs against runc, where the
# attacks must succeed and the tests fail. nemosandbox's own global flags are dropped.
set -euo pipefail
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --policy|--preset|--config) shift 2 ;;
        --policy=*|--preset=*|--config=*) shift ;;
        *) args+=("$1"); shift ;;
    esac
done
exec runc "${args[@]}"
