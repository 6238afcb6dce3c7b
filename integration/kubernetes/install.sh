#!/bin/sh
# Node installer, run by the DaemonSet's init container with the host's root at $HOST.
#
# Install (the default):
#   1. `nemosandbox doctor`: a missing hard requirement (seccomp user notification, pidfd_getfd,
#      cgroup BPF) fails the init container before anything is written to the node;
#   2. copies the runtime to /usr/local/bin/nemosandbox (the shipped policies are built into
#      it; /etc/nemosandbox/policies/ is left to the administrator) and writes
#      /etc/nemosandbox/config.yaml if there is none;
#   3. registers the containerd runtime handler (`nemosandbox install containerd`), restarts
#      containerd when that changed its configuration or an earlier restart is still owed (a
#      stamp on the host, written before the change, removed after a restart that worked),
#      then labels the node nemosandbox.dev/installed=true, which the RuntimeClass's node
#      selector waits for; a node that still owes the restart is not labelled.
# Uninstall (UNINSTALL=1): removes the label, the handler and the binary; config.yaml only when
# it is still the one shipped.
# Both are idempotent: a second run changes nothing and restarts nothing.
#
# Environment:
#   HOST=/host                              where the host's root is mounted
#   CONTAINERD_CONFIG=/etc/containerd/config.toml   containerd's configuration, on the host
#   CONFIG_VERSION=2|3     the config version to write when that file is missing or empty
#                          (2: containerd 1.x, 3: containerd 2.x); ignored for a file with
#                          content, whose version is kept
#   RESTART_CONTAINERD=0|1 restart containerd through the host's systemd after a change
#   LABEL_NODE=0|1         set (remove) the node label through the API server, with the pod's
#                          service account; the node is NODE_NAME
#   UNINSTALL=0|1
set -eu
HOST=${HOST:-/host}
CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
CONFIG_VERSION=${CONFIG_VERSION:-}
RESTART_CONTAINERD=${RESTART_CONTAINERD:-0}
LABEL_NODE=${LABEL_NODE:-0}
UNINSTALL=${UNINSTALL:-0}
SRC=/opt/nemosandbox
NS=$SRC/bin/nemosandbox
# Where containerd's shim finds the runtime on the host (the handler's BinaryName).
BIN=/usr/local/bin/nemosandbox
ETC=/etc/nemosandbox
# On the host: containerd must still be restarted to read its configuration.
PENDING=/var/lib/nemosandbox/containerd-restart-pending

die() {
    echo "$*" >&2
    exit 1
}

# Runs `nemosandbox install|uninstall containerd ARGS`, shows what it printed and sets CHANGED
# to 1 when it wrote the configuration (its "changed FILE" line), 0 otherwise.
containerd_handler() {
    verb=$1
    shift
    CHANGED=0
    out=$("$NS" "$verb" containerd "$@" 2>&1) || {
        [ -z "$out" ] || printf '%s\n' "$out" >&2
        die "$verb: nemosandbox $verb containerd failed for $CONFIG"
    }
    printf '%s\n' "$out"
    case "$out" in
    *"nemosandbox $verb: changed "*) CHANGED=1 ;;
    esac
}

# containerd reads its configuration only at start, so a change owes a restart. The stamp is
# written before the change, so a run that dies between the two (or whose restart fails) leaves
# it, and the next run restarts. Replacing the binary needs no restart: the shim runs the file
# anew for every call.
owe_restart() {
    mkdir -p "$HOST${PENDING%/*}"
    : >"$HOST$PENDING"
}

restart_containerd() {
    step=$1
    [ -e "$HOST$PENDING" ] || return 0
    if [ "$RESTART_CONTAINERD" = 1 ]; then
        echo "$step: restarting containerd"
        # The host's init system, from the host's namespaces (the DaemonSet runs with hostPID).
        nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd \
            || die "$step: restarting containerd failed; the next run tries again"
        rm -f "$HOST$PENDING"
        rmdir "$HOST${PENDING%/*}" 2>/dev/null || true
    else
        echo "$step: RESTART_CONTAINERD=$RESTART_CONTAINERD: containerd was not restarted; restart it to apply"
    fi
}

do_install() {
    echo "install: checking the node (nemosandbox doctor)"
    if ! "$NS" doctor; then
        die "install: nemosandbox doctor: a required kernel feature is missing (table above);" \
            "nothing was installed on this node"
    fi

    mkdir -p "$HOST${BIN%/*}" "$HOST$ETC"
    # Copy then rename: a container starting meanwhile never runs a half-written binary.
    cp "$NS" "$HOST${BIN%/*}/.nemosandbox.new"
    chmod 0755 "$HOST${BIN%/*}/.nemosandbox.new"
    mv -f "$HOST${BIN%/*}/.nemosandbox.new" "$HOST$BIN"
    # The node configuration is the administrator's: written once, never overwritten.
    [ -e "$HOST$ETC/config.yaml" ] || cp "$SRC/config.yaml" "$HOST$ETC/config.yaml"

    mkdir -p "$HOST${CONFIG%/*}"
    set -- --engine-config "$HOST$CONFIG" --path "$BIN" --no-restart
    # Only for a new or empty file: an existing file keeps its version, whatever the node's.
    if [ -n "$CONFIG_VERSION" ] && [ ! -s "$HOST$CONFIG" ]; then
        set -- "$@" --config-version "$CONFIG_VERSION"
    fi
    owed=0
    [ -e "$HOST$PENDING" ] && owed=1
    owe_restart
    containerd_handler install "$@"
    if [ "$CHANGED" = 0 ] && [ "$owed" = 0 ]; then
        rm -f "$HOST$PENDING"
        rmdir "$HOST${PENDING%/*}" 2>/dev/null || true
    fi
    restart_containerd install

    if [ "$LABEL_NODE" = 1 ]; then
        if [ -e "$HOST$PENDING" ]; then
            echo "install: containerd has not read the handler yet: the node is not labelled"
        else
            "$NS" node-label || die "install: could not label the node"
        fi
    fi
    echo "install: done ($(wc -c <"$HOST$BIN") bytes at $BIN)"
}

do_uninstall() {
    # The label first: the RuntimeClass schedules no new pod here from now on.
    if [ "$LABEL_NODE" = 1 ]; then
        "$NS" node-label --remove || die "uninstall: could not remove the node's label"
    fi
    if [ -e "$HOST$CONFIG" ]; then
        owed=0
        [ -e "$HOST$PENDING" ] && owed=1
        owe_restart
        containerd_handler uninstall --engine-config "$HOST$CONFIG" --no-restart
        if [ "$CHANGED" = 0 ] && [ "$owed" = 0 ]; then
            rm -f "$HOST$PENDING"
        fi
        restart_containerd uninstall
        # Without a restart now, nothing is left to owe it to: the handler is gone.
        rm -f "$HOST$PENDING"
        rmdir "$HOST${PENDING%/*}" 2>/dev/null || true
    else
        echo "uninstall: $CONFIG does not exist"
    fi

    rm -f "$HOST$BIN" "$HOST${BIN%/*}/.nemosandbox.new"
    # config.yaml only when it is still the one shipped.
    if [ -f "$HOST$ETC/config.yaml" ]; then
        if cmp -s "$SRC/config.yaml" "$HOST$ETC/config.yaml"; then
            rm -f "$HOST$ETC/config.yaml"
        else
            echo "uninstall: $ETC/config.yaml was edited on this node; left in place"
        fi
    fi
    rmdir "$HOST$ETC" 2>/dev/null || true
    echo "uninstall: done"
}

[ -d "$HOST" ] || die "installer: host root $HOST is not mounted"
[ -x "$NS" ] || die "installer: $NS is missing from the image"
case "$UNINSTALL" in
0) do_install ;;
1) do_uninstall ;;
*) die "installer: UNINSTALL must be 0 or 1, not $UNINSTALL" ;;
esac
