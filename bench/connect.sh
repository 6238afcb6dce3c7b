#!/usr/bin/env bash
# Egress benchmark (issue 5): loopback TCP from inside a container, in the same run:
#   runc          no runtime confinement (the baseline: runc's default spec)
#   crun          the same under crun
#   nemosandbox   an allowing policy: every connect goes through the network guard
#   proxy         runc, every connection through tinyproxy's HTTP CONNECT (what most agent
#                 sandboxes do today)
# Modes (bench/connect.c): conn = connect+close, rr = connect + 64-byte request/reply + close,
# keep = 64-byte request/reply on one connection. Each row: median of ROUNDS runs of N ops.
# Also the guard's resident memory after the load (VmHWM of the helper process).
#   bash bench/connect.sh [N] [ROUNDS]
#   NEMO_BASE=/path/to/other/nemosandbox bash bench/connect.sh [N] [ROUNDS]
#       adds that binary as the `base` row: before/after a change, in the same run.
#   bash bench/connect.sh https [N] [ROUNDS]   HTTPS request/response through the layer-7
#                                              path (bench/https.sh)
# Needs root, runc, crun, tinyproxy, gcc, busybox-static, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
if [ "${1:-}" = https ]; then
    shift
    exec bash bench/https.sh "$@"
fi
N=${1:-2000}
ROUNDS=${2:-5}
NEMO=${NEMO:-$PWD/target/x86_64-unknown-linux-gnu/release/nemosandbox}
SERVER_PORT=18601
PROXY_PORT=18602
bash scripts/setup.sh
command -v tinyproxy >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy >/dev/null
[ -x "$NEMO" ] || bash scripts/build-static.sh
work=$(mktemp -d /tmp/nemo-connect.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$NEMO" --root "$work/nemo" delete -f rss >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

gcc -static -O2 -pthread -o "$work/connbench" bench/connect.c

# Bundle: busybox + the client, host network (loopback server and proxy are on the host).
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/"{proc,dev,sys,tmp,etc}
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
cp "$work/connbench" "$work/bundle/rootfs/bin/connbench"
for a in sh sleep true; do ln -s busybox "$work/bundle/rootfs/bin/$a"; done
"$NEMO" spec --bundle "$work/bundle"
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(p, "w"))
PY
cat > "$work/allow.yaml" <<YAML
version: 1
filesystem_policy:
  permissions:
    "/**": "r-x"
network_policies:
  bench:
    endpoints:
      - { host: 127.0.0.1, port: $SERVER_PORT }
    binaries:
      - { path: /bin/connbench }
YAML

"$work/connbench" server $SERVER_PORT & pids+=($!)
start_tinyproxy "$work" $PROXY_PORT $SERVER_PORT

# run_in RUNTIME ARGS…: run the client once in a fresh container, print its result line.
run_in() {
    local rt=$1; shift
    set_args "$work/bundle/config.json" "$@"
    local id="cb$RANDOM$RANDOM"
    case $rt in
        runc|proxy) runc --root "$work/runc" run --bundle "$work/bundle" "$id" ;;
        crun) crun --root "$work/crun" run --bundle "$work/bundle" "$id" ;;
        nemosandbox) "$NEMO" --root "$work/nemo" --policy "$work/allow.yaml" run --bundle "$work/bundle" "$id" ;;
        base) "$NEMO_BASE" --root "$work/nemo" --policy "$work/allow.yaml" run --bundle "$work/bundle" "$id" ;;
    esac
}

results="$work/results.txt"
: > "$results"
rts="runc crun nemosandbox proxy"
[ -n "${NEMO_BASE:-}" ] && rts="$rts base"
for mode in conn rr keep; do
    for rt in $rts; do
        for _ in $(seq "$ROUNDS"); do
            if [ "$rt" = proxy ]; then
                line=$(run_in "$rt" connbench "$mode" "$N" $SERVER_PORT $PROXY_PORT)
            else
                line=$(run_in "$rt" connbench "$mode" "$N" $SERVER_PORT)
            fi
            echo "$rt $line" >> "$results"
        done
    done
done

# The guard's memory: a container that runs the load, then waits.
python3 - "$work/bundle/config.json" "$N" "$SERVER_PORT" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["sh", "-c", f"connbench rr {sys.argv[2]} {sys.argv[3]} >/dev/null; touch /tmp/done; sleep 1000"]
json.dump(c, open(p, "w"))
PY
"$NEMO" --root "$work/nemo" --policy "$work/allow.yaml" run -d --bundle "$work/bundle" rss
init=$("$NEMO" --root "$work/nemo" state rss | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
for _ in $(seq 600); do [ -e "/proc/$init/root/tmp/done" ] && break; sleep 0.1; done
helper=$(for p in /proc/[0-9]*; do
    if [ "$(cat "$p/comm" 2>/dev/null)" = nemosandbox-hlp ] && tr '\0' ' ' < "$p/cmdline" | grep -q rss; then
        basename "$p"
    fi
done | head -1)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$helper/status")

python3 - "$results" "$rss_kib" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rt, mode, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    rows.setdefault((mode, rt), []).append((float(d["median_us"]), float(d["rate"])))
def med(mode, rt, i):
    return statistics.median(v[i] for v in rows[(mode, rt)])
print(f"{'mode':5s} {'runtime':12s} {'median µs':>10s} {'ops/s':>9s}")
for mode in ("conn", "rr", "keep"):
    for rt in ("runc", "crun", "nemosandbox", "proxy", "base"):
        if (mode, rt) in rows:
            print(f"{mode:5s} {rt:12s} {med(mode, rt, 0):10.1f} {med(mode, rt, 1):9.0f}")
if ("conn", "base") in rows:
    for mode in ("conn", "rr", "keep"):
        print(f"{mode}: nemosandbox / base rate: {med(mode, 'nemosandbox', 1) / med(mode, 'base', 1):.2f}x")
added = med("conn", "nemosandbox", 0) - med("conn", "runc", 0)
ratio = med("conn", "nemosandbox", 1) / med("conn", "proxy", 1)
rr_ratio = med("rr", "nemosandbox", 1) / med("rr", "proxy", 1)
rss = int(sys.argv[2]) / 1024
print(f"added latency per allowed connect (nemosandbox - runc, median): {added:.1f} µs (target < 50)")
print(f"connect rate nemosandbox / proxy: {ratio:.2f}x, request/response: {rr_ratio:.2f}x (target >= 2)")
print(f"guard resident memory (VmHWM of the helper): {rss:.1f} MiB (target < 8)")
PY
