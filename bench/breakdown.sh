#!/usr/bin/env bash
# Where `run true` spends its time, stage by stage, from the runtime's own timing spans
# (NEMOSANDBOX_TIMING): medians over RUNS runs (after 5 warm-up runs) for the built-in default
# policy and the full policy, on the bundle of bench/lifecycle.sh. Stages of the container's
# init (confine, landlock, seccomp-load) run inside `wait`; resolver-start runs in the helper,
# beside the rest. "other" is the total less the runtime's top-level stages: process start,
# argument parsing, exit.
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
trap 'rm -rf "$work"' EXIT
true_bundle "$work/bundle" "$NEMO"

for mode in default full; do
    args=()
    if [ "$mode" = full ]; then read -ra args <<< "$FULL"; fi
    for i in $(seq 1 $((RUNS + 5))); do
        f="$work/$mode-$i.jsonl"
        start=$(date +%s%N)
        # The runtime's warnings (the full policy's symlink guards say what they hardened)
        # would flood the table; a failing run still stops the script.
        NEMOSANDBOX_TIMING=$f "$NEMO" --root "$work/root" "${args[@]}" \
            run --bundle "$work/bundle" "bd-$mode-$i" 2>/dev/null
        end=$(date +%s%N)
        echo "{\"pid\":0,\"stage\":\"total\",\"us\":$(((end - start) / 1000))}" >> "$f"
    done
done

python3 - "$work" "$RUNS" <<'PY'
import glob, json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
# (stage, depth): the order and nesting the table shows.
ORDER = [("total", 0), ("bundle-load", 1), ("create", 1), ("policy", 2), ("rewrite", 2),
         ("prepare", 2), ("layout", 3), ("filters", 3), ("netguard-prepare", 3),
         ("l7-setup", 2), ("state-write", 2), ("guard-channel", 2), ("cgroups-prepare", 2),
         ("libcontainer-create", 2), ("after-create", 2), ("cgroup-fixups", 3), ("fence", 3),
         ("loopback-shells-pins", 3), ("helper-start", 3), ("symlink-guards", 3),
         ("meta-save", 3), ("create-other", 2), ("start", 1),
         ("wait", 1), ("confine", 2), ("landlock", 3), ("seccomp-load", 3), ("delete", 1),
         ("delete-helper", 2), ("delete-libcontainer", 2), ("delete-purge", 2),
         ("other", 1), ("resolver-start", 1)]
TOP = ["bundle-load", "create", "start", "wait", "delete"]
CREATE = ["policy", "rewrite", "prepare", "l7-setup", "state-write", "guard-channel",
          "cgroups-prepare", "libcontainer-create", "after-create"]
med = {}
for mode in ("default", "full"):
    per = {}
    for i in range(6, runs + 6):
        stages = {}
        for line in open(f"{work}/{mode}-{i}.jsonl"):
            e = json.loads(line)
            stages[e["stage"]] = stages.get(e["stage"], 0) + e["us"]
        stages["other"] = stages["total"] - sum(stages.get(s, 0) for s in TOP)
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
