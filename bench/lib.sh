# Shared by the benchmarks; sourced, not run.

# start_tinyproxy WORK PROXY_PORT CONNECT_PORT: an HTTP CONNECT proxy on loopback that may
# reach CONNECT_PORT only (what most agent sandboxes put in front of egress). Its pid goes on
# the caller's `pids` array.
start_tinyproxy() {
    local work=$1 port=$2 connect=$3
    cat > "$work/tinyproxy.conf" <<CONF
Port $port
Listen 127.0.0.1
Timeout 60
MaxClients 200
Allow 127.0.0.1
ConnectPort $connect
LogLevel Critical
PidFile "$work/tinyproxy.pid"
CONF
    tinyproxy -d -c "$work/tinyproxy.conf" >/dev/null 2>&1 & pids+=($!)
    sleep 0.5
}

# set_args CONFIG ARGS…: make ARGS the process arguments of the bundle's CONFIG.
set_args() {
    local config=$1; shift
    local args
    args=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")
    python3 - "$config" "$args" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = json.loads(sys.argv[2])
json.dump(c, open(p, "w"))
PY
}

# The policy arguments of the "full" rows: the openclaw-sandbox baseline and three presets
# (restrictive layout, masks, run_as_user, Landlock ports, network policies).
FULL="--policy openclaw-sandbox --preset npm --preset pypi --preset github"

# true_bundle DIR NEMO: a busybox-static bundle running `true` (runc's default spec, no
# terminal), with what openclaw-sandbox expects of its image (the sandbox user and its home).
true_bundle() {
    local dir=$1 nemo=$2
    mkdir -p "$dir/rootfs/bin" "$dir/rootfs/"{proc,dev,sys,tmp,etc}
    cp /bin/busybox "$dir/rootfs/bin/busybox"
    ln -s busybox "$dir/rootfs/bin/true"
    ln -s busybox "$dir/rootfs/bin/sh"
    mkdir -p "$dir/rootfs/sandbox/"{.openclaw,.openclaw-data/credentials,.ssh} "$dir/rootfs/var/tmp"
    echo 'sandbox:x:1000:1000::/sandbox:/bin/sh' > "$dir/rootfs/etc/passwd"
    echo 'sandbox:x:1000:' > "$dir/rootfs/etc/group"
    "$nemo" spec --bundle "$dir"
    python3 - "$dir/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["true"]
json.dump(c, open(p, "w"))
PY
}

# state_roots: a fresh directory on a tmpfs for the runtimes' state roots (/dev/shm: every
# Debian system mounts it), printed.
state_roots() {
    mktemp -d /dev/shm/nemo-bench-roots.XXXXXX
}
