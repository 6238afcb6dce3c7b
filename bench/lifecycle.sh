#!/usr/bin/env bash
# Container lifecycle benchmark: nemosandbox vs runc and crun (and youki when installed) on the
# same busybox `true` bundle, in the same run. Prints hyperfine medians and the ratios: `run`
# back to back, `run` after 50 ms of quiet each time, create + start + delete.
# Two nemosandbox rows: the built-in default policy (what every container gets when nothing is
# selected) and a full policy (openclaw-sandbox baseline + npm, pypi, github presets: restrictive
# layout, masks, run_as_user, Landlock ports).
#   bash bench/lifecycle.sh [RUNS]
#   NEMO_BASE=/path/to/other/nemosandbox bash bench/lifecycle.sh [RUNS]
#       adds that binary's two rows (base, base-full): before/after a change, in the same run.
# Needs root, hyperfine, runc, crun, busybox-static, bubblewrap, and a release build. The
# `sandbox` rows create the ordinary user `nemo-rootless` when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-200}
NEMO=${NEMO:-$PWD/target/x86_64-unknown-linux-gnu/release/nemosandbox}
bash scripts/setup.sh
[ -x "$NEMO" ] || bash scripts/build-static.sh
source bench/lib.sh
work=$(mktemp -d /tmp/nemo-bench.XXXXXX)
# State roots on a tmpfs, as each runtime's default root is (/run/runc, /run/crun,
# /run/nemosandbox: /run is a tmpfs on every systemd host). On a journalled disk every state
# file costs metadata writes, which is the disk's cost, not the runtime's.
roots=$(state_roots)
trap 'rm -rf "$work" "$roots"' EXIT

true_bundle "$work/bundle" "$NEMO"
runtimes=(nemosandbox:"$NEMO" nemosandbox-full:"$NEMO $FULL" runc:runc crun:crun)
command -v youki >/dev/null && runtimes+=(youki:youki)
if [ -n "${NEMO_BASE:-}" ]; then runtimes+=(base:"$NEMO_BASE" base-full:"$NEMO_BASE $FULL"); fi

cmds_run=(); cmds_cycle=(); names=()
for rt in "${runtimes[@]}"; do
    name=${rt%%:*}; bin=${rt#*:}; root="$roots/root-$name"
    names+=("$name")
    cmds_run+=("$bin --root $root run --bundle $work/bundle bench-$name")
    cmds_cycle+=("$bin --root $root create --bundle $work/bundle cyc-$name && $bin --root $root start cyc-$name && $bin --root $root delete --force cyc-$name")
done

# The runs of each command are spread over ROUNDS rounds of all commands, so a drift of the
# machine's speed during the benchmark (about ±30% over minutes on a shared virtual machine)
# falls on every runtime alike instead of on whichever hyperfine measured last.
ROUNDS=${ROUNDS:-6}
# Extra hyperfine arguments for the next hf call (the quiet spell before each run).
prep=()
hf() { # json-out-prefix shell-flag commands...
    local out=$1 shell=$2; shift 2
    local args=() per=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
    for i in "${!names[@]}"; do args+=(-n "${names[$i]}" "$1"); shift; done
    for r in $(seq 1 "$ROUNDS"); do
        hyperfine $shell "${prep[@]}" --warmup 3 --runs "$per" --export-json "$out.$r" "${args[@]}" >/dev/null
    done
}

echo "run (foreground, exit 0), $RUNS runs each, in $ROUNDS rounds"
hf "$work/run.json" -N "${cmds_run[@]}"
# The same after 50 ms without any runtime at work: the first container after a pause, as an
# agent started per task meets it. On cgroup v1 a process moved into a cgroup then waits for
# an RCU grace period (milliseconds); back to back, the previous run's moves spare the next.
echo "run after 50 ms of quiet, $RUNS runs each, in $ROUNDS rounds"
prep=(--prepare "sleep 0.05")
hf "$work/quiet.json" -N "${cmds_run[@]}"
prep=()
echo "create + start + delete --force, $RUNS runs each in $ROUNDS rounds (through a shell, same cost for all)"
hf "$work/cycle.json" "" "${cmds_cycle[@]}"

# `sandbox -- true` (no image): as root, as an ordinary user (rootless), and bubblewrap doing
# the same as that user (host root read-only, fresh /dev, /proc, /tmp, /var/tmp, empty /run,
# the working directory writable, every namespace unshared).
user=nemo-rootless
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
chmod 755 "$work"
proj=/home/$user/bench-proj; xdg=$work/xdg
mkdir -p "$proj" "$xdg"; chown "$user:" "$proj" "$xdg"; chmod 700 "$xdg"
cp "$NEMO" "$work/nemosandbox-user"; chmod 755 "$work/nemosandbox-user"
as_user="setpriv --reuid=$(id -u "$user") --regid=$(id -g "$user") --clear-groups env -i HOME=/home/$user PATH=/usr/bin:/bin XDG_RUNTIME_DIR=$xdg"
bwrap_args="--unshare-all --die-with-parent --new-session --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /var/tmp --tmpfs /run --bind $proj $proj --chdir $proj"
echo "sandbox -- true, $RUNS runs each"
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/sandbox.json" \
    -n sandbox-root "$NEMO --root $roots/root-sandbox sandbox --cwd $proj -- true" \
    -n sandbox-rootless "$as_user $work/nemosandbox-user sandbox --cwd $proj -- true" \
    -n bwrap-rootless "$as_user bwrap $bwrap_args true" >/dev/null

python3 - "$work/sandbox.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: r["median"] * 1000 for r in res}
print("\nsandbox -- true: median ms")
for n, m in med.items():
    print(f"  {n:16s} {m:8.2f}")
print(f"  sandbox-rootless/bwrap-rootless: {med['sandbox-rootless'] / med['bwrap-rootless']:.2f}x")
print(f"  sandbox-rootless/sandbox-root: {med['sandbox-rootless'] / med['sandbox-root']:.2f}x")
PY

python3 - "$work/run.json" "$work/quiet.json" "$work/cycle.json" "${names[@]}" <<'PY'
import glob, json, statistics, sys
files, names = sys.argv[1:4], sys.argv[4:]
for label, f in zip(["run", "run after 50 ms of quiet", "create+start+delete"], files):
    times = {n: [] for n in names}
    for part in sorted(glob.glob(f + ".*")):
        for i, r in enumerate(json.load(open(part))["results"]):
            times[names[i]] += r["times"]
    med = {n: statistics.median(t) * 1000 for n, t in times.items()}
    print(f"\n{label}: median ms")
    for n in names:
        print(f"  {n:12s} {med[n]:8.2f}")
    for other in [n for n in names[2:] if not n.startswith("base")]:
        print(f"  nemosandbox/{other}: {med['nemosandbox'] / med[other]:.2f}x")
        print(f"  nemosandbox-full/{other}: {med['nemosandbox-full'] / med[other]:.2f}x")
    if "base" in med:
        print(f"  nemosandbox/base: {med['nemosandbox'] / med['base']:.2f}x")
        print(f"  nemosandbox-full/base-full: {med['nemosandbox-full'] / med['base-full']:.2f}x")
    print(f"  nemosandbox-full/nemosandbox (default policy): {med['nemosandbox-full'] / med['nemosandbox']:.2f}x")
PY
