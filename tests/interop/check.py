#!/usr/bin/env python3
"""Compare what an independent SCIM 2.0 server holds with what a directory file says it should.

Reads the server's own state over its HTTP API (GET /Users and /Groups, paged with
startIndex/count) and checks it against the directory, the app's assigned groups and the
default attribute mapping of SPEC §3, exactly:

- every user in scope (a direct member of an assigned group) exists once, with exactly the
  mapped attributes (externalId, userName, active, displayName, name, the one work email,
  title, enterprise employeeNumber and department) and no stale ones;
- every user that left the scope is disabled (deprovision = "disable": present with
  active = false) or gone (deprovision = "delete");
- no other user exists;
- every assigned group exists once, with its displayName and externalId, and its members
  are exactly the SCIM ids of its in-scope members; no other group exists.

Exit 0 when everything matches; 1 with one line per mismatch otherwise; 2 on usage or
transport errors. Standard library only.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PAGE = 25  # small on purpose: the checker pages like any SCIM client


def fetch_all(base, token, collection):
    """Every resource of a collection, following startIndex/count until totalResults."""
    out = []
    start = 1
    while True:
        query = urllib.parse.urlencode({"startIndex": start, "count": PAGE})
        req = urllib.request.Request(
            f"{base}/{collection}?{query}",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/scim+json",
            },
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.load(resp)
        resources = body.get("Resources", [])
        out.extend(resources)
        total = int(body.get("totalResults", 0))
        if not resources or len(out) >= total:
            return out
        start += len(resources)


def expected_user(uid, src):
    """The SCIM attributes the default mapping gives a source user (absent ones omitted)."""
    exp = {"externalId": uid, "userName": src["userPrincipalName"]}
    exp["active"] = bool(src.get("accountEnabled", True))
    for scim, attr in [("displayName", "displayName"), ("title", "jobTitle")]:
        if src.get(attr):
            exp[scim] = src[attr]
    name = {}
    if src.get("givenName"):
        name["givenName"] = src["givenName"]
    if src.get("surname"):
        name["familyName"] = src["surname"]
    if name:
        exp["name"] = name
    if src.get("mail"):
        exp["emails"] = [{"type": "work", "value": src["mail"], "primary": True}]
    ent = {}
    if src.get("employeeId"):
        ent["employeeNumber"] = src["employeeId"]
    if src.get("department"):
        ent["department"] = src["department"]
    if ent:
        exp[ENTERPRISE] = ent
    return exp


def observed_user(res):
    """The same attributes as the server holds them (only the mapped ones)."""
    obs = {}
    for key in ["externalId", "userName", "active", "displayName", "title"]:
        if res.get(key) is not None:
            obs[key] = res[key]
    name = {k: v for k, v in (res.get("name") or {}).items() if k in ("givenName", "familyName")}
    if name:
        obs["name"] = name
    if res.get("emails"):
        obs["emails"] = [
            {k: e[k] for k in ("type", "value", "primary") if k in e} for e in res["emails"]
        ]
    ent = {
        k: v
        for k, v in (res.get(ENTERPRISE) or {}).items()
        if k in ("employeeNumber", "department")
    }
    if ent:
        obs[ENTERPRISE] = ent
    return obs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", required=True, help="SCIM base URL, e.g. http://127.0.0.1:8080/v2")
    ap.add_argument("--token-env", required=True, help="environment variable holding the bearer token")
    ap.add_argument("--directory", required=True, help="directory JSON file (SPEC §4)")
    ap.add_argument("--groups", required=True, help="assigned group ids, comma-separated")
    ap.add_argument("--deprovision", choices=["disable", "delete"], required=True)
    ap.add_argument(
        "--left-scope",
        default="",
        help="source user ids provisioned earlier that are now out of scope, comma-separated",
    )
    ap.add_argument("--label", default="", help="prefix of every output line")
    args = ap.parse_args()

    token = os.environ.get(args.token_env)
    if not token:
        print(f"check.py: ${args.token_env} is not set", file=sys.stderr)
        return 2
    with open(args.directory, encoding="utf-8") as f:
        directory = json.load(f)
    users = {u["id"]: u for u in directory["users"]}
    groups = {g["id"]: g for g in directory["groups"]}
    assigned = [g for g in args.groups.split(",") if g]
    left = {u for u in args.left_scope.split(",") if u}
    base = args.base_url.rstrip("/")
    label = f"{args.label}: " if args.label else ""

    try:
        server_users = fetch_all(base, token, "Users")
        server_groups = fetch_all(base, token, "Groups")
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"{label}cannot read {base}: {e}", file=sys.stderr)
        return 2

    problems = []
    in_scope = set()
    for gid in assigned:
        in_scope.update(m for m in groups[gid]["members"] if m in users)
    overlap = in_scope & left
    if overlap:
        print(f"{label}--left-scope lists users still in scope: {sorted(overlap)}", file=sys.stderr)
        return 2

    by_ext = {}
    for res in server_users:
        ext = res.get("externalId")
        if ext in by_ext:
            problems.append(f"user externalId {ext!r} exists twice")
        by_ext[ext] = res
    scim_id = {}
    for uid in sorted(in_scope):
        res = by_ext.get(uid)
        if res is None:
            problems.append(f"user {uid} is in scope but missing")
            continue
        scim_id[uid] = res["id"]
        exp, obs = expected_user(uid, users[uid]), observed_user(res)
        for key in sorted(set(exp) | set(obs)):
            if exp.get(key) != obs.get(key):
                problems.append(
                    f"user {uid} {key}: expected {json.dumps(exp.get(key), ensure_ascii=False)}, "
                    f"server has {json.dumps(obs.get(key), ensure_ascii=False)}"
                )
    for uid in sorted(left):
        res = by_ext.get(uid)
        if args.deprovision == "delete" and res is not None:
            problems.append(f"user {uid} left the scope but was not deleted")
        if args.deprovision == "disable":
            if res is None:
                problems.append(f"user {uid} left the scope and should be disabled, but is gone")
            elif res.get("active") is not False:
                problems.append(f"user {uid} left the scope but is active={res.get('active')!r}")
    for ext in sorted(set(by_ext) - in_scope - left, key=str):
        problems.append(f"unexpected user externalId={ext!r} userName={by_ext[ext].get('userName')!r}")

    groups_by_ext = {}
    for res in server_groups:
        ext = res.get("externalId")
        if ext in groups_by_ext:
            problems.append(f"group externalId {ext!r} exists twice")
        groups_by_ext[ext] = res
    members_total = 0
    for gid in assigned:
        res = groups_by_ext.get(gid)
        if res is None:
            problems.append(f"group {gid} is assigned but missing")
            continue
        if res.get("displayName") != groups[gid]["displayName"]:
            problems.append(
                f"group {gid} displayName: expected {groups[gid]['displayName']!r}, "
                f"server has {res.get('displayName')!r}"
            )
        want = {scim_id[m] for m in groups[gid]["members"] if m in scim_id}
        have = [m.get("value") for m in res.get("members") or []]
        members_total += len(have)
        if len(have) != len(set(have)):
            problems.append(f"group {gid} lists a member twice")
        names = {v: k for k, v in scim_id.items()}
        for m in sorted(want - set(have)):
            problems.append(f"group {gid} lacks member {names.get(m, m)}")
        for m in sorted(set(have) - want):
            problems.append(f"group {gid} has extra member {names.get(m, m)}")
    for ext in sorted(set(groups_by_ext) - set(assigned), key=str):
        problems.append(f"unexpected group externalId={ext!r}")

    for p in problems:
        print(f"{label}MISMATCH {p}")
    summary = (
        f"{label}{len(server_users)} users ({len(in_scope)} in scope, {len(left)} out of scope "
        f"[{args.deprovision}]), {len(server_groups)} groups, {members_total} memberships"
    )
    print(f"{summary}: {'OK' if not problems else f'{len(problems)} mismatch(es)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
