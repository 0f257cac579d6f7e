#!/usr/bin/env bash
# The whole process at tenant scale (docs/PERFORMANCE.md, "The whole process at 20k and 100k
# users"): the release binary under /usr/bin/time, `scim-sync sandbox` as the app on loopback,
# state in SQLite, every group assigned to one app.
#
#   benches/scale/run.sh                 # 100,000 users, 1,000 groups
#   benches/scale/run.sh 20000 200       # 20,000 users, 200 groups
#
# Prints one markdown table: wall time, peak RSS and requests of an initial sync-now, a
# no-change sync-now, sync-now --verify with nothing to repair, and the RSS of `run` after its
# start-up cycle and 20 s later.
set -euo pipefail
users=${1:-100000}
groups=${2:-1000}
port=${SCALE_PORT:-18480}
source "$(dirname "$0")/common.sh"
start_sandbox

rows=()
measure() { # label, then sync-now's arguments
  local label=$1; shift
  /usr/bin/time -v -o "$work/time" "$bin" --config "$work/scale.toml" sync-now "$@" >"$work/out" 2>"$work/err" ||
    { cat "$work/out" "$work/err" >&2; exit 1; }
  local wall rss req
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f MB", $2 / 1024}' "$work/time")
  req=$(grep -o '[0-9,]* requests\|0 requests\|[0-9]* reads' "$work/out" | head -1)
  rows+=("| $label | $wall | $rss | ${req:-?} |")
  echo "$label: $(tail -1 "$work/out")" >&2
}
measure "initial \`sync-now\` into the empty sandbox"
measure "no-change \`sync-now\`"
measure "\`sync-now --verify\` (nothing to repair)" --verify

"$bin" --config "$work/scale.toml" run >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "cycle finished" "$work/run.log" && break; sleep 0.1; done
rss1=$(awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$pid/status")
sleep 20
rss2=$(awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" || true
read -r members floor < <(python3 -c "
import json, math, sys
d = json.load(open(sys.argv[1]))
m = [len(g['members']) for g in d['groups']]
# The floor: one POST per user and per group, one PATCH per 100 members.
print(sum(m), len(d['users']) + len(m) + sum(math.ceil(n / 100) for n in m))" "$work/dir.json")

echo "$users users, $groups groups, $members memberships (request floor of an initial sync: $floor); $(nproc) cores; $(git -C "$here" log -1 --format=%h) ($(date -u +%F))"
echo
echo "| command | wall | peak RSS | requests |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "| \`run\`, after its start-up cycle (no change) / 20 s later (\`VmRSS\`) | – | $rss1 / $rss2 | 0 |"
