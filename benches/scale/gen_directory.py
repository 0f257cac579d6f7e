#!/usr/bin/env python3
"""Writes a tenant-shaped directory file (SPEC §3's JSON format) for the whole-process
measurements in docs/PERFORMANCE.md ("The whole process at 20k and 100k users").

    python3 benches/scale/gen_directory.py --users 100000 --groups 1000 --out /tmp/dir100k.json

Deterministic for a seed. Users carry every attribute the default mapping sends, with
Entra-shaped object ids (GUIDs: long, random, no shared prefix). Groups are sized like a real
tenant's: a few very large (all-staff, regions), a few dozen large (departments), the rest
small and heavy-tailed (teams, projects); every user is in at least one group. At 100k users
and 1,000 groups that is about 790k memberships.
"""

import argparse
import json
import random
import uuid

FIRST = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Hiro", "Ivy", "Jamal",
         "Kate", "Liam", "Maya", "Noah", "Olivia", "Pablo", "Quinn", "Rosa", "Sam", "Tara"]
LAST = ["Smith", "Jones", "Nguyen", "O'Brien", "Muller", "Kowalski", "Hopper", "Tanaka",
        "Chen", "Wright", "Lindqvist", "Murphy", "Patel", "Fischer", "Rossi", "Garcia"]
TITLES = ["Engineer", "Senior Engineer", "Manager", "Analyst", "Designer", "Consultant"]
DEPTS = ["R&D", "Sales", "Support", "Finance", "Legal", "Operations", "Marketing", "HR"]


def guid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = random.Random(a.seed)

    users = []
    for i in range(a.users):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        upn = f"{first.lower()}.{last.lower().replace(chr(39), '')}.{i}@contoso.example"
        u = {
            "id": guid(rng),
            "userPrincipalName": upn,
            "displayName": f"{first} {last}",
            "givenName": first,
            "surname": last,
            "mail": upn,
            "accountEnabled": rng.random() > 0.03,
            "jobTitle": rng.choice(TITLES),
            "department": rng.choice(DEPTS),
            "employeeId": str(100000 + i),
        }
        if rng.random() < 0.02:
            del u["mail"]
        users.append(u)
    ids = [u["id"] for u in users]

    # Sizes: 0.5 % at half the tenant, 4.5 % at a twentieth, the rest heavy-tailed (Pareto,
    # alpha 1.2, from 7 members per 10k users, capped at a twentieth).
    n = a.groups
    huge, large = max(1, n // 200), max(1, n * 9 // 200)
    sizes = [a.users // 2] * huge + [a.users // 20] * large
    while len(sizes) < n:
        sizes.append(min(a.users // 20, int(7 * rng.paretovariate(1.2) * a.users / 10_000) + 1))
    groups = []
    for gi, size in enumerate(sizes):
        groups.append({
            "id": guid(rng),
            "displayName": f"Group {gi:04} ({size} members)",
            "members": rng.sample(ids, min(size, len(ids))),
        })
    covered = set()
    for g in groups:
        covered.update(g["members"])
    small = groups[huge + large:] or groups
    for uid in ids:
        if uid not in covered:
            rng.choice(small)["members"].append(uid)
    with open(a.out, "w") as f:
        json.dump({"users": users, "groups": groups}, f)
    members = sum(len(g["members"]) for g in groups)
    print(f"{a.out}: {len(users)} users, {len(groups)} groups, {members} memberships, seed {a.seed}")


if __name__ == "__main__":
    main()
