# What benches/scale/run.sh and loopback.sh share (sourced, not run): the release build, a
# generated tenant, a config that assigns every group to one app on `scim-sync sandbox`, and
# starting that sandbox. Set before sourcing: users, groups, port; optional app_extra (more
# lines for the [[apps]] table).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin="$here/target/release/scim-sync"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

(cd "$here" && cargo build --release --quiet)
python3 "$here/benches/scale/gen_directory.py" --users "$users" --groups "$groups" --out "$work/dir.json" >&2
python3 - "$work" "$port" "${app_extra:-}" <<'PY'
import json, sys
work, port, extra = sys.argv[1], sys.argv[2], sys.argv[3]
ids = [g["id"] for g in json.load(open(f"{work}/dir.json"))["groups"]]
open(f"{work}/scale.toml", "w").write(f"""[service]
listen = "127.0.0.1:{int(port) + 1}"
state = "sqlite://{work}/state.db"
webhook_token_env = "SCALE_WEBHOOK_TOKEN"

[source]
kind = "file"
path = "{work}/dir.json"

[[apps]]
name = "scale"
base_url = "http://127.0.0.1:{port}/scim/v2"
token_env = "SCALE_SCIM_TOKEN"
groups = {json.dumps(ids)}
verify_interval = "0s"
{extra}
""")
PY
export SCALE_SCIM_TOKEN=scale SCALE_WEBHOOK_TOKEN=scale

# Starts an empty sandbox on $port (its pid in $sandbox_pid) and waits until it answers.
start_sandbox() {
  "$bin" sandbox --listen "127.0.0.1:$port" >>"$work/sandbox.log" 2>&1 &
  sandbox_pid=$!
  for _ in $(seq 50); do
    curl -sf -o /dev/null -H "Authorization: Bearer scale" "http://127.0.0.1:$port/scim/v2/ServiceProviderConfig" && return
    sleep 0.1
  done
  cat "$work/sandbox.log" >&2; echo "the sandbox did not start" >&2; exit 1
}
