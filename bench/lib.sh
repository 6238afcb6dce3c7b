# Shared by the network benchmarks (connect.sh, https.sh); sourced, not run.

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
