#!/usr/bin/env bash
# The client against the app's capacity on loopback (docs/PERFORMANCE.md, "The client against
# the app's capacity"): in one run, an external load generator (wrk, Debian's package,
# installed here when missing) drives `scim-sync sandbox` with POST /Users at 4 connections;
# then a fresh sandbox receives an initial `sync-now` of a generated tenant at
# `concurrency = 4`. Prints both rates and their ratio.
#
#   benches/scale/loopback.sh              # 20,000 users, 200 groups, wrk for 10 s
#   benches/scale/loopback.sh 2000 20 3    # users, groups, seconds of wrk
set -euo pipefail
users=${1:-20000}
groups=${2:-200}
seconds=${3:-10}
port=${SCALE_PORT:-18470}
if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  # A clean machine may have no package lists yet.
  $sudo apt-get install -y -q wrk >&2 || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q wrk >&2; }
fi
app_extra="concurrency = 4"
source "$(dirname "$0")/common.sh"

start_sandbox
wrk -t 2 -c 4 -d "${seconds}s" -s "$here/benches/scale/post_users.lua" "http://127.0.0.1:$port/scim/v2/Users" >"$work/wrk.txt"
kill -INT "$sandbox_pid"; wait "$sandbox_pid" 2>/dev/null || true
raw=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")

start_sandbox
/usr/bin/time -f "%e %U %S" -o "$work/time" "$bin" --config "$work/scale.toml" sync-now >"$work/out" 2>"$work/err" ||
  { cat "$work/out" "$work/err" >&2; exit 1; }
read -r wall user sys <"$work/time"
req=$(grep -o '[0-9]* requests' "$work/out" | grep -o '[0-9]*')
python3 - "$raw" "$req" "$wall" "$user" "$sys" "${non2xx:-0}" "$users" "$groups" <<'PY'
import sys
raw, req, wall, user, sys_, non2xx, users, groups = sys.argv[1:]
raw, req, wall, cpu = float(raw), int(req), float(wall), float(user) + float(sys_)
rate = req / wall
print(f"{users} users, {groups} groups; wrk POST /Users, 4 connections: {raw:,.0f} requests/s ({non2xx} not 2xx)")
print(f"initial sync-now, concurrency 4: {req:,} requests in {wall:.2f} s wall = {rate:,.0f} requests/s "
      f"({cpu:.2f} s of CPU, {cpu / req * 1e6:.0f} µs per request, everything included)")
print(f"client / wrk: {rate / raw:.2f}")
PY
