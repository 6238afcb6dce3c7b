#!/usr/bin/env bash
# HTTPS through the layer-7 path, in the same run (issue 16):
#   direct        runc, TLS straight to the server (the baseline)
#   nemosandbox   an endpoint with HTTP rules: the guard splices each connect into the
#                 container's proxy, which terminates TLS, decides each request and opens its
#                 own verified TLS session upstream
#   proxy         runc, every connection through tinyproxy's HTTP CONNECT (no inspection)
# Modes (python3 client, bench/https_client.py): conn = a new TLS connection and one GET per
# request; keep = N GETs on one keep-alive connection. Each row: median of ROUNDS runs.
# The client is the same python in every row, so ratios understate the proxy's share.
#   bash bench/https.sh [N] [ROUNDS]
# Needs root, runc, tinyproxy, openssl, python3, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-300}
ROUNDS=${2:-5}
NEMO=${NEMO:-$PWD/target/x86_64-unknown-linux-gnu/release/nemosandbox}
PORT=18611
PROXY_PORT=18612
bash scripts/setup.sh
command -v tinyproxy >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy >/dev/null
[ -x "$NEMO" ] || bash scripts/build-static.sh
work=$(mktemp -d /tmp/nemo-https.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A test root and a server certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-root -keyout "$work/root.key" -out "$work/root.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$work/ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/root.pem" -CAkey "$work/root.key" \
    -CAcreateserial -days 2 -extfile "$work/ext" -out "$work/server.pem" 2>/dev/null

# Bundle: busybox, python3 from the host (bound read-only), the test root as the image's
# system bundle, host network.
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/"{proc,dev,sys,tmp,app} "$root/etc/ssl/certs" "$root/usr/bin"
cp /bin/busybox "$root/bin/busybox"
for a in sh sleep true; do ln -s busybox "$root/bin/$a"; done
ln -s python3.11 "$root/usr/bin/python3"
cp "$work/root.pem" "$root/etc/ssl/certs/ca-certificates.crt"
cp bench/https_client.py "$root/app/client.py"
"$NEMO" spec --bundle "$work/bundle"
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
# The image's bundle, for every row (python's compiled-in path is not in this image).
c["process"]["env"].append("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
for d in ["/usr/bin/python3.11", "/usr/lib/python3.11", "/lib/x86_64-linux-gnu", "/lib64"]:
    c["mounts"].append({"destination": d, "type": "bind", "source": d, "options": ["rbind", "ro"]})
json.dump(c, open(p, "w"))
PY
cat > "$work/allow.yaml" <<YAML
version: 1
filesystem_policy:
  permissions:
    "/**": "r-x"
    "/tmp/**": "rwx"
network_policies:
  bench:
    endpoints:
      - host: 127.0.0.1
        port: $PORT
        protocol: rest
        rules:
          - allow: { method: GET, path: "/**" }
    binaries:
      - { path: /usr/bin/python3.11 }
YAML
printf 'l7_upstream_roots:\n  - %s\n' "$work/root.pem" > "$work/node.yaml"

python3 bench/https_client.py serve $PORT "$work/server.pem" "$work/server.key" & pids+=($!)
start_tinyproxy "$work" $PROXY_PORT $PORT

run_in() {
    local rt=$1; shift
    set_args "$work/bundle/config.json" "$@"
    local id="hb$RANDOM$RANDOM"
    case $rt in
        direct|proxy) runc --root "$work/runc" run --bundle "$work/bundle" "$id" ;;
        nemosandbox) "$NEMO" --root "$work/nemo" --config "$work/node.yaml" \
            --policy "$work/allow.yaml" run --bundle "$work/bundle" "$id" ;;
    esac
}

results="$work/results.txt"
: > "$results"
for mode in conn keep; do
    for rt in direct nemosandbox proxy; do
        for _ in $(seq "$ROUNDS"); do
            if [ "$rt" = proxy ]; then
                line=$(run_in "$rt" python3 /app/client.py "$mode" "$N" $PORT $PROXY_PORT)
            else
                line=$(run_in "$rt" python3 /app/client.py "$mode" "$N" $PORT)
            fi
            echo "$rt $line" >> "$results"
        done
    done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rt, mode, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    rows.setdefault((mode, rt), []).append((float(d["median_us"]), float(d["rate"])))
def med(mode, rt, i):
    return statistics.median(v[i] for v in rows[(mode, rt)])
print(f"{'mode':5s} {'runtime':12s} {'median µs':>10s} {'req/s':>9s}")
for mode in ("conn", "keep"):
    for rt in ("direct", "nemosandbox", "proxy"):
        print(f"{mode:5s} {rt:12s} {med(mode, rt, 0):10.1f} {med(mode, rt, 1):9.0f}")
for mode in ("conn", "keep"):
    lat = med(mode, "nemosandbox", 0) / med(mode, "direct", 0)
    thr = med(mode, "nemosandbox", 1) / med(mode, "proxy", 1)
    print(f"{mode}: latency nemosandbox / direct TLS {lat:.2f}x (target <= 1.5), "
          f"rate nemosandbox / CONNECT proxy {thr:.2f}x (target >= 1)")
PY
