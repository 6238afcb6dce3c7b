#!/usr/bin/env bash
# exec benchmark: `exec ID true` into a running busybox container, nemosandbox (default policy,
# and with an exec_policy so the gate runs) vs runc, same bundle, same run. Hyperfine medians.
#   bash bench/exec.sh [RUNS]
# Needs root, hyperfine, runc, busybox-static, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-100}
NEMO=${NEMO:-$PWD/target/x86_64-unknown-linux-gnu/release/nemosandbox}
[ -x "$NEMO" ] || bash scripts/build-static.sh
work=$(mktemp -d /tmp/nemo-exec-bench.XXXXXX)
cleanup() {
    "$NEMO" --root "$work/nemo" delete -f bn >/dev/null 2>&1 || true
    "$NEMO" --root "$work/gate" delete -f bg >/dev/null 2>&1 || true
    runc --root "$work/runc" delete -f br >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/"{proc,dev,sys,tmp,etc}
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for a in true sleep sh; do ln -s busybox "$work/bundle/rootfs/bin/$a"; done
"$NEMO" spec --bundle "$work/bundle"
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["sleep", "1000"]
json.dump(c, open(p, "w"))
PY
cat > "$work/gate.yaml" <<'YAML'
version: 1
filesystem_policy:
  permissions:
    "/**": "r-x"
exec_policy:
  allowlist:
    - { pattern: /bin/busybox }
  safe_builtins: true
YAML

"$NEMO" --root "$work/nemo" run -d --bundle "$work/bundle" bn
"$NEMO" --root "$work/gate" --policy "$work/gate.yaml" run -d --bundle "$work/bundle" bg
runc --root "$work/runc" run -d --bundle "$work/bundle" br >/dev/null

hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/exec.json" \
    -n nemosandbox "$NEMO --root $work/nemo exec bn true" \
    -n nemosandbox-gate "$NEMO --root $work/gate exec bg sh -c 'cd /tmp && true'" \
    -n runc "runc --root $work/runc exec br true" >/dev/null

python3 - "$work/exec.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: r["median"] * 1000 for r in res}
print("exec median ms")
for k, v in med.items():
    print(f"  {k:18s} {v:8.2f}")
print(f"  nemosandbox/runc: {med['nemosandbox'] / med['runc']:.2f}x")
print(f"  nemosandbox-gate/runc: {med['nemosandbox-gate'] / med['runc']:.2f}x")
PY
