#!/usr/bin/env python3
"""Write a changed copy of a directory file for one step of the interop scenario.

Usage: edit_directory.py STEP IN OUT

Step "change" is what an identity administrator does between two cycles:
- disable a user (u-bob: accountEnabled false; stays in his groups);
- remove a member (u-alice leaves g-team-eng, stays in g-all-staff);
- rename a user (u-erin: new userPrincipalName, surname, displayName and mail);
- remove a user from every assigned group (u-frank: leaves the scope, so deprovisioned);
- change and drop attributes (u-grace: department; u-hiro: jobTitle removed);
- re-enable a user (u-noah: accountEnabled true);
- rename a group (g-team-support, to a name with quotes and a backslash);
- add a new user to a group (u-kim joins g-team-sales).

Step "rejoin" starts from the "change" output: u-frank joins g-team-eng again (re-enabled,
or re-created after a delete) and u-kim leaves g-team-sales.

Prints the source ids that left the scope, comma-separated, for check.py --left-scope.
"""

import json
import sys


def user(d, uid):
    return next(u for u in d["users"] if u["id"] == uid)


def group(d, gid):
    return next(g for g in d["groups"] if g["id"] == gid)


def change(d):
    user(d, "u-bob")["accountEnabled"] = False
    group(d, "g-team-eng")["members"].remove("u-alice")
    erin = user(d, "u-erin")
    erin.update(
        userPrincipalName="erin.schmidt@contoso.example",
        surname="Schmidt",
        displayName="Erin Schmidt",
        mail="erin.schmidt@contoso.example",
    )
    for g in d["groups"]:
        if "u-frank" in g["members"]:
            g["members"].remove("u-frank")
    user(d, "u-grace")["department"] = "Platform"
    del user(d, "u-hiro")["jobTitle"]
    user(d, "u-noah")["accountEnabled"] = True
    # Quotes and a backslash: the adoption step later finds this group with a displayName
    # filter, so they must be escaped as in a JSON string (RFC 7644 §3.4.2.2).
    group(d, "g-team-support")["displayName"] = 'Support "Tier 1" \\ EMEA'
    d["users"].append(
        {
            "id": "u-kim",
            "userPrincipalName": "kim.lee@contoso.example",
            "displayName": "Kim \"KJ\" Lee",
            "givenName": "Kim",
            "surname": "Lee",
            "mail": "kim.lee@contoso.example",
            "accountEnabled": True,
            "jobTitle": "Account Executive",
            "department": "Sales",
            "employeeId": "1037",
        }
    )
    group(d, "g-team-sales")["members"].append("u-kim")
    return ["u-frank"]


def rejoin(d):
    group(d, "g-team-eng")["members"].append("u-frank")
    group(d, "g-team-sales")["members"].remove("u-kim")
    return ["u-kim"]


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("change", "rejoin"):
        print(__doc__, file=sys.stderr)
        return 2
    step, src, dst = sys.argv[1:]
    with open(src, encoding="utf-8") as f:
        d = json.load(f)
    left = {"change": change, "rejoin": rejoin}[step](d)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(",".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main())
