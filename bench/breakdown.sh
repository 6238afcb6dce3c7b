#!/usr/bin/env bash
# Where `run true` spends its time, stage by stage, from the runtime's own timing spans
# (NEMOSANDBOX_TIMING): medians over RUNS runs (after 5 warm-up runs) for the built-in default
# policy and the full policy, on the bundle of bench/lifecycle.sh (state roots on a tmpfs, as
# there). Stages of the container's init (confine, landlock, seccomp-load and its parts) run
# inside `wait`; the helper's (helper-boot, guard-setup, adopt) beside the runtime's, from the
# fork in helper-start on. "other" is the total less `main`: exec, the C library's start-up,
# exit; "main-other" what `main` does between its stages.
#   bash bench/breakdown.sh [RUNS]
# Needs root, busybox-static and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-50}
NEMO=${NEMO:-$PWD/target/x86_64-unknown-linux-gnu/release/nemosandbox}
source bench/lib.sh
bash scripts/setup.sh
[ -x "$NEMO" ] || bash scripts/build-static.sh
work=$(mktemp -d /tmp/nemo-breakdown.XXXXXX)
roots=$(state_roots) # as in bench/lifecycle.sh
trap 'rm -rf "$work" "$roots"' EXIT
true_bundle "$work/bundle" "$NEMO"

for mode in default full; do
    args=()
    if [ "$mode" = full ]; then read -ra args <<< "$FULL"; fi
    for i in $(seq 1 $((RUNS + 5))); do
        f="$work/$mode-$i.jsonl"
        start=$(date +%s%N)
        # The runtime's warnings (the full policy's symlink guards say what they hardened)
        # would flood the table; a failing run still stops the script.
        NEMOSANDBOX_TIMING=$f "$NEMO" --root "$roots/root" "${args[@]}" \
            run --bundle "$work/bundle" "bd-$mode-$i" 2>/dev/null
        end=$(date +%s%N)
        echo "{\"pid\":0,\"stage\":\"total\",\"us\":$(((end - start) / 1000))}" >> "$f"
    done
done

python3 - "$work" "$RUNS" <<'PY'
import glob, json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
# (stage, depth): the order and nesting the table shows.
ORDER = [("total", 0), ("main", 1), ("cli-parse", 2), ("bundle-load", 2), ("create", 2),
         ("policy", 3), ("rewrite", 3), ("prepare", 3), ("layout", 4), ("layout-plan", 5),
         ("filters", 4), ("netguard-prepare", 4), ("l7-setup", 3), ("state-write", 3),
         ("guard-channel", 3), ("cgroups-prepare", 3), ("birthplace", 3),
         ("libcontainer-create", 3),
         ("after-create", 3), ("cgroup-fixups", 4), ("fence", 4), ("loopback-up", 4),
         ("helper-start", 4), ("fence-arm", 4), ("shells-pins", 4), ("symlink-guards", 4),
         ("meta-save", 4),
         ("create-other", 3), ("start", 2), ("wait", 2), ("confine", 3), ("landlock", 4),
         ("seccomp-load", 4), ("load-netguard", 5), ("listener-load", 6),
         ("handover-reply", 6), ("load-bpf", 5), ("load-sockets", 5), ("delete", 2),
         ("delete-helper", 3), ("delete-libcontainer", 3), ("delete-purge", 3),
         ("main-other", 2), ("other", 1),
         ("helper-boot", 1), ("guard-setup", 1), ("guard-reload", 2), ("resolver-start", 2),
         ("adopt", 1), ("exec-capture", 1)]
TOP = ["cli-parse", "bundle-load", "create", "start", "wait", "delete"]
CREATE = ["policy", "rewrite", "prepare", "l7-setup", "state-write", "guard-channel",
          "cgroups-prepare", "birthplace", "libcontainer-create", "after-create"]
med = {}
for mode in ("default", "full"):
    per = {}
    for i in range(6, runs + 6):
        stages = {}
        for line in open(f"{work}/{mode}-{i}.jsonl"):
            e = json.loads(line)
            stages[e["stage"]] = stages.get(e["stage"], 0) + e["us"]
        # Outside main: exec, the C library's start-up, exit, and the shell's timing itself.
        # (A build without the `main` span, NEMO=older binary: all of it is "other".)
        inside = stages.get("main", sum(stages.get(s, 0) for s in TOP))
        stages["other"] = stages["total"] - inside
        if "main" in stages:
            stages["main-other"] = stages["main"] - sum(stages.get(s, 0) for s in TOP)
        stages["create-other"] = stages["create"] - sum(stages.get(s, 0) for s in CREATE)
        for s, us in stages.items():
            per.setdefault(s, []).append(us)
    med[mode] = {s: statistics.median(v) for s, v in per.items()}
print(f"\nrun true: median µs per stage over {runs} runs")
print(f"  {'stage':28s} {'default':>9s} {'full':>9s} {'full-default':>13s}")
for s, depth in ORDER:
    d, f = med["default"].get(s), med["full"].get(s)
    if d is None and f is None:
        continue
    show = lambda v: f"{v:9.0f}" if v is not None else f"{'-':>9s}"
    diff = f"{(f or 0) - (d or 0):+13.0f}"
    print(f"  {'  ' * depth + s:28s} {show(d)} {show(f)} {diff}")
PY
