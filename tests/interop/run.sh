#!/usr/bin/env bash
# Interop check: the release binary of scim-sync against an independent SCIM 2.0 server
# (scim2-server from PyPI, pinned in requirements.txt) on a free loopback port, with the
# server's own state checked after every change. See tests/interop/README.md.
#
# Usage: tests/interop/run.sh        (from anywhere; needs cargo, python3 with venv + pip, curl)
# Env:   SCIM_SYNC_BIN   use this binary instead of building one with `cargo build --release`
#
# Each scenario runs sync-now through initial sync, changes, idle re-runs and a lost state
# store, then `scim-sync run` with a PIM activation (`activate`), its expiry, `sync-now`
# handed to the service, and SIGTERM.
#
# Two server set-ups are exercised, each on its own port with two tenants (one app each):
#   default    every feature scim2-server has (filter, PATCH, …)
#   no-filter  a provider that does not implement filtering (filter.supported = false:
#              filtered queries answer 501)
#
# Exit 0 when every step matched; 1 on any mismatch; 2 when the set-up failed; 3 when the
# pinned server could not be installed from PyPI (nothing was tested).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$ROOT/target/interop"
VENV="$WORK/venv-scim2-server"
GROUPS_CSV="g-all-staff,g-team-eng,g-team-sales,g-team-support,g-it-admins,g-prod-admins"
APPS=(interop-disable interop-delete)   # tenant /<deprovision mode>/v2 of each app

FAILED=0
say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL [%s]: %s\n' "${VARIANT:-setup}" "$*" >&2; FAILED=1; }
die() { printf 'interop: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- server install (pinned)
command -v python3 >/dev/null || die "python3 is needed"
command -v curl >/dev/null || die "curl is needed"
mkdir -p "$WORK"
pinned() { grep -v '^#' "$HERE/requirements.txt" | sed '/^$/d' | sort; }
if ! "$VENV/bin/python" -m pip freeze 2>/dev/null | sort | cmp -s - <(pinned); then
    say "installing the pinned scim2-server into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        -r "$HERE/requirements.txt"; then
        printf 'interop: pip install -r tests/interop/requirements.txt failed; nothing was tested\n' >&2
        exit 3
    fi
    "$VENV/bin/python" -m pip check >/dev/null || die "the pinned server dependencies are inconsistent"
fi
SERVER_VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("scim2-server"))')"

# ---------------------------------------------------------------- the binary
if [[ -n "${SCIM_SYNC_BIN:-}" ]]; then
    BIN="$SCIM_SYNC_BIN"
else
    say "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/scim-sync"
    [[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"
fi
[[ -x "$BIN" ]] || die "no binary at $BIN"
echo "binary: $BIN ($("$BIN" --version 2>/dev/null || echo 'version unknown'))"

# ---------------------------------------------------------------- server lifecycle
SERVER_PID=""
SERVICE_PID=""
stop_server() {
    if [[ -n "$SERVICE_PID" ]]; then
        kill "$SERVICE_PID" 2>/dev/null || true
        wait "$SERVICE_PID" 2>/dev/null || true
        SERVICE_PID=""
    fi
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap stop_server EXIT

# start_server ARGS…: scim2-server on a free loopback port with tenants disable and delete.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
    PORT="$(free_port)"
    "$VENV/bin/scim2-server" --hostname 127.0.0.1 --port "$PORT" --bearer-token "$TOKEN" \
        --tenant disable --tenant delete "$@" >"$RUN/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" \
            "http://127.0.0.1:$PORT/disable/v2/ServiceProviderConfig" 2>/dev/null; then
            echo "scim2-server $SERVER_VERSION on 127.0.0.1:$PORT (pid $SERVER_PID) $*"
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$RUN/server.log" >&2; die "scim2-server exited"; }
        sleep 0.1
    done
    die "scim2-server did not answer on 127.0.0.1:$PORT"
}

# ---------------------------------------------------------------- step helpers
# sync NAME [args…]: `sync-now --json` into NAME.json (stderr in NAME.err), one line per app
# with its outcome, request count and non-zero counters; the exit code is left in $RC.
sync() {
    local name="$1"; shift
    set +e
    "$BIN" --config scim-sync.toml sync-now --json "$@" >"$name.json" 2>"$name.err"
    RC=$?
    set -e
    python3 - "$name" "$RC" <<'PY'
import json, sys
name, rc = sys.argv[1], sys.argv[2]
try:
    apps = json.load(open(f"{name}.json"))["apps"]
except Exception as e:
    print(f"  {name}: exit {rc}, no JSON report ({e})")
    sys.exit(0)
for a in apps:
    counts = ", ".join(f"{k} {v}" for k, v in a.items()
                       if isinstance(v, int) and not isinstance(v, bool) and v and k != "requests")
    print(f"  {name}: {a['app']} {a['outcome']} requests={a['requests']} ({counts or 'no changes'}) exit={rc}")
PY
}

# field NAME APP KEY: one field of one app's report in NAME.json.
field() {
    python3 -c 'import json,sys; r=[a for a in json.load(open(sys.argv[1]+".json"))["apps"] if a["app"]==sys.argv[2]]; print(r[0][sys.argv[3]] if r else "")' "$1" "$2" "$3" 2>/dev/null || true
}

# expect NAME KEY VALUE: every app's KEY in NAME.json equals VALUE.
expect() {
    local app got
    for app in "${APPS[@]}"; do
        got="$(field "$1" "$app" "$2")"
        [[ "$got" == "$3" ]] || fail "$1: $app $2 is '$got', expected '$3'"
    done
}

# check LEFT_SCOPE: the server's own state matches directory.json, in both tenants.
check() {
    local mode
    for mode in disable delete; do
        python3 "$HERE/check.py" --base-url "http://127.0.0.1:$PORT/$mode/v2" \
            --token-env INTEROP_SCIM_TOKEN --directory directory.json --groups "$GROUPS_CSV" \
            --deprovision "$mode" --left-scope "$1" --label "  $mode" \
            || fail "server state ($mode tenant) does not match directory.json"
    done
}

# tamper TITLE: sets u-alice's title in the disable tenant directly on the server.
tamper() {
    python3 - "http://127.0.0.1:$PORT/disable/v2" "$1" <<'PY' || fail "could not tamper with the server"
import json, os, sys, urllib.request
base, title = sys.argv[1], sys.argv[2]
h = {"Authorization": "Bearer " + os.environ["INTEROP_SCIM_TOKEN"], "Content-Type": "application/scim+json"}
q = urllib.request.Request(base + "/Users?startIndex=1&count=1000", headers=h)
uid = next(u["id"] for u in json.load(urllib.request.urlopen(q))["Resources"] if u["externalId"] == "u-alice")
body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": title}]}
urllib.request.urlopen(urllib.request.Request(base + "/Users/" + uid, json.dumps(body).encode(), h, method="PATCH"))
PY
}

# drift ACTION: out-of-band changes in the disable tenant, directly on the server.
#   make   u-alice's title edited, the first member of g-all-staff removed, and a user the
#          directory does not know (userName intruder@example.org) added to g-it-admins
#   check  prints "<intruder exists> <intruder in g-it-admins>" ("yes no" after a repair)
#   clean  deletes the intruder
drift() {
    python3 - "http://127.0.0.1:$PORT/disable/v2" "$1" <<'PY' || fail "drift $1 failed on the server"
import json, os, sys, urllib.request
base, action = sys.argv[1], sys.argv[2]
h = {"Authorization": "Bearer " + os.environ["INTEROP_SCIM_TOKEN"], "Content-Type": "application/scim+json"}
def call(path, body=None, method="GET"):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(base + path, data, h, method=method)) as r:
        text = r.read()
    return json.loads(text) if text else None
def patch(path, ops):
    call(path, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}, "PATCH")
users = call("/Users?startIndex=1&count=1000")["Resources"]
groups = {g.get("externalId"): g for g in call("/Groups?startIndex=1&count=1000")["Resources"]}
intruder = next((u for u in users if u.get("userName") == "intruder@example.org"), None)
admins = groups["g-it-admins"]
if action == "make":
    alice = next(u for u in users if u.get("externalId") == "u-alice")
    patch("/Users/" + alice["id"], [{"op": "replace", "path": "title", "value": "Edited on the server"}])
    staff = groups["g-all-staff"]
    first = staff["members"][0]["value"]
    patch("/Groups/" + staff["id"], [{"op": "remove", "path": f'members[value eq "{first}"]'}])
    new = call("/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "intruder@example.org"}, "POST")
    patch("/Groups/" + admins["id"], [{"op": "add", "path": "members", "value": [{"value": new["id"]}]}])
elif action == "check":
    held = intruder is not None and any(m["value"] == intruder["id"] for m in admins.get("members") or [])
    print(("yes" if intruder else "no") + " " + ("yes" if held else "no"))
elif action == "clean" and intruder is not None:
    call("/Users/" + intruder["id"], method="DELETE")
PY
}

# no_token FILE…: the bearer token appears in none of the files.
no_token() {
    if grep -l -F "$TOKEN" "$@" >/dev/null 2>&1; then fail "the bearer token appears in one of: $*"; fi
}

# members GROUP_ID USER_ID: "yes" when USER_ID (externalId) is a member of the group whose
# externalId is GROUP_ID, in each tenant, as the server itself holds it ("yes yes").
members() {
    python3 - "http://127.0.0.1:$PORT" "$1" "$2" <<'PY' || echo "error"
import json, os, sys, urllib.request
base, gid, uid = sys.argv[1:]
h = {"Authorization": "Bearer " + os.environ["INTEROP_SCIM_TOKEN"]}
def get(url):
    return json.load(urllib.request.urlopen(urllib.request.Request(url, headers=h)))["Resources"]
out = []
for mode in ("disable", "delete"):
    users = {u["id"]: u.get("externalId") for u in get(f"{base}/{mode}/v2/Users?startIndex=1&count=1000")}
    group = [g for g in get(f"{base}/{mode}/v2/Groups?startIndex=1&count=1000") if g.get("externalId") == gid]
    held = group and any(users.get(m["value"]) == uid for m in group[0].get("members", []))
    out.append("yes" if held else "no")
print(" ".join(out))
PY
}

# await_members GROUP_ID USER_ID WANT SECONDS: waits until `members` prints WANT.
await_members() {
    local got=""
    for _ in $(seq 1 $(( $4 * 10 ))); do
        got="$(members "$1" "$2")"
        [[ "$got" == "$3" ]] && return 0
        sleep 0.1
    done
    fail "membership of $2 in $1 is '$got', expected '$3' within $4 s"
}

# ---------------------------------------------------------------- the scenario
# scenario VARIANT [server args…]
scenario() {
    VARIANT="$1"; shift
    RUN="$WORK/run/$VARIANT"
    rm -rf "$RUN" && mkdir -p "$RUN"
    TOKEN="interop-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    export INTEROP_SCIM_TOKEN="$TOKEN"
    say "[$VARIANT] server"
    start_server "$@"
    cd "$RUN"
    LISTEN="$(free_port)"
    sed -e "s/@PORT@/$PORT/g" -e "s/@LISTEN@/$LISTEN/g" -e "s#@DIRECTORY@#directory.json#" \
        "$HERE/scim-sync.toml" >scim-sync.toml
    cp "$ROOT/config/directory.json" directory.json

    say "[$VARIANT] check-config"
    "$BIN" --config scim-sync.toml check-config >check-config.out 2>&1 \
        || { cat check-config.out; fail "check-config exited non-zero"; }
    no_token check-config.out

    say "[$VARIANT] sync-now with a wrong token: exit 1, outcome failed, 401 named, no token printed"
    INTEROP_SCIM_TOKEN="wrong-$TOKEN" sync wrong-token --app interop-disable
    [[ "$RC" == 1 ]] || fail "wrong token: exit $RC, expected 1"
    [[ "$(field wrong-token interop-disable outcome)" == failed ]] || fail "wrong token: outcome is not failed"
    grep -q 401 wrong-token.err wrong-token.json || fail "wrong token: no 401 in the output"
    no_token wrong-token.json wrong-token.err
    rm -rf state   # forget the failed attempt (and its backoff): the real runs start clean

    say "[$VARIANT] sync-now --dry-run: prints the plan, reads the discovery documents, writes nothing"
    local logged
    logged="$(wc -l <server.log)"
    set +e; "$BIN" --config scim-sync.toml sync-now --dry-run >dry-run.out 2>&1; RC=$?; set -e
    [[ "$RC" == 0 ]] || { cat dry-run.out; fail "dry run exited $RC"; }
    grep -q "POST /Users" dry-run.out || fail "the dry run does not show the user creates"
    local sent
    sent="$(tail -n +"$((logged + 1))" server.log | grep -E '"[A-Z]+ /' || true)"
    if grep -qE '"(POST|PUT|PATCH|DELETE) ' <<<"$sent"; then
        fail "the dry run sent a write (see $RUN/server.log)"
    fi
    if grep -vE '"GET [^ ]*/(ServiceProviderConfig|ResourceTypes|Schemas) ' <<<"$sent" | grep -q .; then
        fail "the dry run read more than the discovery documents (see $RUN/server.log)"
    fi
    echo "  dry run: $(grep -c . <<<"$sent") discovery reads, no write"
    no_token dry-run.out

    say "[$VARIANT] sync-now: initial cycle"
    sync initial
    expect initial outcome ok
    expect initial users_created 36
    expect initial groups_created 6
    expect initial members_added 61
    check ""

    say "[$VARIANT] sync-now again: nothing changed, so no request"
    sync idle1
    expect idle1 outcome ok
    expect idle1 requests 0

    say "[$VARIANT] the checker sees a change made behind scim-sync's back (then undone)"
    tamper "Tampered title"
    local out
    out="$(python3 "$HERE/check.py" --base-url "http://127.0.0.1:$PORT/disable/v2" \
        --token-env INTEROP_SCIM_TOKEN --directory directory.json --groups "$GROUPS_CSV" \
        --deprovision disable || true)"
    if grep -q 'MISMATCH user u-alice title: expected "Engineer", server has "Tampered title"' <<<"$out"; then
        echo "  the checker reported the tampered title"
    else
        fail "check.py did not notice a tampered title"
    fi
    tamper "Engineer"
    check ""

    say "[$VARIANT] drift made on the server, found and repaired by sync-now --verify"
    drift make
    sync drift-plain
    expect drift-plain requests 0
    sync drift-verify --verify
    expect drift-verify outcome ok
    expect drift-verify failed 0
    [[ "$(field drift-verify interop-disable drift_repaired)" == 3 ]] \
        || fail "drift: interop-disable drift_repaired is '$(field drift-verify interop-disable drift_repaired)', expected 3 (a title, a removed member, an unmanaged member)"
    [[ "$(field drift-verify interop-delete drift_repaired)" == 0 ]] \
        || fail "drift: interop-delete (untouched) drift_repaired is '$(field drift-verify interop-delete drift_repaired)', expected 0"
    [[ "$(drift check)" == "yes no" ]] \
        || fail "drift: the unmanaged user should still exist and be out of g-it-admins, got '$(drift check)'"
    drift clean
    check ""
    sync drift-again --verify
    expect drift-again drift_repaired 0

    say "[$VARIANT] change: disable, remove a member, rename a user, remove a user from every group, …"
    cp directory.json directory.before-change.json
    LEFT="$(python3 "$HERE/edit_directory.py" change directory.before-change.json directory.json)"
    sync change
    expect change outcome ok
    expect change failed 0
    check "$LEFT"
    sync idle2
    expect idle2 requests 0

    say "[$VARIANT] change: the removed user rejoins, the new user leaves again"
    cp directory.json directory.before-rejoin.json
    LEFT="$(python3 "$HERE/edit_directory.py" rejoin directory.before-rejoin.json directory.json)"
    sync rejoin
    expect rejoin outcome ok
    expect rejoin failed 0
    check "$LEFT"
    sync idle3
    expect idle3 requests 0

    say "[$VARIANT] state store lost: every user and group is found and adopted, none created twice"
    mv state state.before-adopt 2>/dev/null || fail "no state store after the cycles"
    sync adopt
    expect adopt outcome ok
    expect adopt failed 0
    expect adopt users_created 0
    expect adopt groups_created 0
    check "$LEFT"
    sync idle4
    expect idle4 requests 0

    say "[$VARIANT] run: the service; a PIM activation pushed at once, removed at its expiry"
    export SCIM_SYNC_WEBHOOK_TOKEN="webhook-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    "$BIN" --config scim-sync.toml run >run.out 2>run.err &
    SERVICE_PID=$!
    local ready=""
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$LISTEN/readyz" 2>/dev/null; then ready=yes; break; fi
        kill -0 "$SERVICE_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$ready" ]] || { cat run.out run.err; fail "run did not become ready"; }
    local pim
    pim="$(python3 -c 'import json; g=[g for g in json.load(open("directory.json"))["groups"] if g["id"]=="g-prod-admins"][0]; print([u for u in g.get("eligible", []) if u not in g["members"]][0])')"
    [[ "$(members g-prod-admins "$pim")" == "no no" ]] || fail "$pim is already in g-prod-admins"
    set +e; "$BIN" --config scim-sync.toml activate --group g-prod-admins --user "$pim" --for 4s >activate.out 2>&1; RC=$?; set -e
    cat activate.out
    [[ "$RC" == 0 ]] || fail "activate exited $RC"
    [[ "$(grep -c ': pushed' activate.out)" == 2 ]] || fail "activate did not print two pushes"
    [[ "$(members g-prod-admins "$pim")" == "yes yes" ]] || fail "$pim is not in g-prod-admins right after the push"
    await_members g-prod-admins "$pim" "no no" 10 && echo "  $pim left g-prod-admins at its expiry, in both tenants"
    local code
    code="$(curl -s -o webhook-refused.out -w '%{http_code}' -X POST "http://127.0.0.1:$LISTEN/v1/activations" \
        -H 'Authorization: Bearer wrong' -d '{}')"
    [[ "$code" == 401 ]] || fail "a wrong webhook token got $code, expected 401"

    say "[$VARIANT] sync-now beside run: the cycle is handed to the service"
    sync handed
    [[ "$RC" == 0 ]] || fail "sync-now beside run exited $RC"
    grep -q "the cycle ran there" handed.err || { cat handed.err; fail "sync-now did not say it handed the cycle over"; }
    expect handed requests 0

    say "[$VARIANT] SIGTERM: run stops cleanly, exit 0"
    kill -TERM "$SERVICE_PID"
    set +e; wait "$SERVICE_PID"; RC=$?; set -e
    SERVICE_PID=""
    [[ "$RC" == 0 ]] || fail "run exited $RC after SIGTERM"
    grep -q "stopped cleanly" run.out || { cat run.out; fail "run did not say it stopped cleanly"; }
    check "$LEFT"
    no_token run.out run.err activate.out
    if grep -F -q "$SCIM_SYNC_WEBHOOK_TOKEN" run.out run.err activate.out handed.json handed.err; then
        fail "the webhook token appears in the output"
    fi

    no_token ./*.json ./*.err
    if grep -E '" 5[0-9][0-9] ' server.log | grep -v '" 501 ' >server-5xx.log; then
        fail "the server answered 5xx (see $RUN/server-5xx.log)"
    fi
    stop_server
    cd "$ROOT"
}

scenario default
scenario no-filter --service-provider-config "$HERE/spc-no-filter.json"
VARIANT=""

say "result"
if [[ "$FAILED" == 0 ]]; then
    echo "interop OK: scim-sync against scim2-server $SERVER_VERSION, default and no-filter (outputs in $WORK/run)"
else
    echo "interop FAILED: see the FAIL lines above and the outputs in $WORK/run" >&2
fi
exit "$FAILED"
