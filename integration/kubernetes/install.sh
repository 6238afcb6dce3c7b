#!/bin/sh
# Node installer: copy the runtime and the shipped policies onto the host (mounted at $HOST),
# register the `nemosandbox` handler with containerd, and optionally restart containerd.
# Idempotent: a second run replaces the files and leaves the configuration as it is.
#   HOST=/host  RESTART_CONTAINERD=1  CONTAINERD_CONFIG=/etc/containerd/config.toml
set -eu
HOST=${HOST:-/host}
CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
SRC=/opt/nemosandbox

[ -d "$HOST" ] || { echo "install: host root $HOST is not mounted" >&2; exit 1; }
mkdir -p "$HOST/usr/local/bin" "$HOST/etc/nemosandbox/policies"
# Copy then rename: a container starting meanwhile never runs a half-written binary.
cp "$SRC/bin/nemosandbox" "$HOST/usr/local/bin/.nemosandbox.new"
chmod 0755 "$HOST/usr/local/bin/.nemosandbox.new"
mv -f "$HOST/usr/local/bin/.nemosandbox.new" "$HOST/usr/local/bin/nemosandbox"
cp "$SRC"/policies/*.yaml "$HOST/etc/nemosandbox/policies/"
# The node configuration is the administrator's: written once, never overwritten.
[ -e "$HOST/etc/nemosandbox/config.yaml" ] || cp "$SRC/config.yaml" "$HOST/etc/nemosandbox/config.yaml"

mkdir -p "$(dirname "$HOST$CONFIG")"
touch "$HOST$CONFIG"
if ! grep -q 'runtimes.nemosandbox\]' "$HOST$CONFIG"; then
    grep -q '^version' "$HOST$CONFIG" || echo 'version = 2' >> "$HOST$CONFIG"
    { echo; echo "# added by the nemosandbox installer"; cat "$SRC/containerd-config.toml"; } >> "$HOST$CONFIG"
    echo "install: registered the nemosandbox handler in $CONFIG"
fi
if [ "${RESTART_CONTAINERD:-0}" = 1 ]; then
    # The host's init system, from the host's namespaces (the DaemonSet runs with hostPID).
    nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd
fi
# (The binary is linked against the host's libc: it is not run from this image.)
echo "install: done ($(wc -c < "$HOST/usr/local/bin/nemosandbox") bytes at /usr/local/bin/nemosandbox)"
