//! Synthetic directories for benchmarks and load tests.
//!
//! [`directory`] builds a [`Directory`] shaped like a Microsoft Graph tenant: users with the
//! attributes the default mapping reads (`userPrincipalName`, `displayName`, `givenName`,
//! `surname`, `mail`, `accountEnabled`, `jobTitle`, `department`, `employeeId`), a few percent
//! of them disabled and some missing optional attributes, and groups with overlapping
//! membership:
//!
//! - one [`ALL_USERS`] group holding everyone;
//! - one department group per department ([`DEPARTMENT_PREFIX`]), every user in exactly one;
//! - many team and project groups ([`TEAM_PREFIX`]) whose sizes follow a Zipf-like law (a few
//!   large, many small), drawn mostly from one home department; every user is in at least
//!   one of them;
//! - nested organisation groups ([`ORG_PREFIX`]) whose members are team groups (and a few
//!   users, and sometimes another organisation group);
//! - PIM groups ([`PIM_PREFIX`]) with a few permanent members and more `eligible` users.
//!
//! [`mutate`] applies a realistic day of churn to a directory (attribute edits, department
//! moves, disables, leavers, hires, team joins and leaves, PIM eligibility changes), for
//! measuring incremental cycles.
//!
//! Everything is deterministic for a seed: the same arguments always give the same directory,
//! on every platform (a seeded [`StdRng`], ordered maps, no clock).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, index};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use scim_sync::model::{Directory, SourceAttrs, SourceGroup, SourceId, SourceUser};

/// The mail domain of every synthetic user.
pub const DOMAIN: &str = "contoso.example";
/// Display name of the group holding every user.
pub const ALL_USERS: &str = "All Users";
/// Display-name prefix of department groups (`Department - Engineering`).
pub const DEPARTMENT_PREFIX: &str = "Department - ";
/// Display-name prefix of team and project groups (`Team - Falcon 17`).
pub const TEAM_PREFIX: &str = "Team - ";
/// Display-name prefix of nested organisation groups (members are groups).
pub const ORG_PREFIX: &str = "Org - ";
/// Display-name prefix of PIM for Groups groups (members plus `eligible` users).
pub const PIM_PREFIX: &str = "PIM - ";

/// Share of users created with `accountEnabled = false`.
const DISABLED_SHARE: f64 = 0.03;
/// Zipf exponent of team sizes.
const ZIPF_EXPONENT: f64 = 0.9;
/// Size of the largest team as a share of all users.
const LARGEST_TEAM_SHARE: f64 = 0.25;
/// Share of a team's members drawn from its home department.
const HOME_SHARE: f64 = 0.8;

/// Departments: name, relative headcount, job titles.
const DEPARTMENTS: &[(&str, u32, &[&str])] = &[
    (
        "Engineering",
        24,
        &[
            "Software Engineer",
            "Senior Software Engineer",
            "Staff Engineer",
            "Engineering Manager",
            "QA Engineer",
        ],
    ),
    (
        "Sales",
        16,
        &[
            "Account Executive",
            "Sales Development Representative",
            "Sales Manager",
        ],
    ),
    (
        "Customer Support",
        12,
        &["Support Agent", "Support Engineer", "Support Team Lead"],
    ),
    (
        "Operations",
        10,
        &[
            "Operations Analyst",
            "Operations Manager",
            "Logistics Coordinator",
        ],
    ),
    (
        "Marketing",
        7,
        &[
            "Marketing Specialist",
            "Content Writer",
            "Product Marketing Manager",
        ],
    ),
    (
        "Finance",
        6,
        &["Accountant", "Financial Analyst", "Controller"],
    ),
    (
        "IT",
        5,
        &[
            "Systems Administrator",
            "Service Desk Analyst",
            "Security Engineer",
        ],
    ),
    (
        "Human Resources",
        4,
        &[
            "HR Business Partner",
            "Recruiter",
            "People Operations Specialist",
        ],
    ),
    (
        "Product",
        4,
        &["Product Manager", "Product Designer", "UX Researcher"],
    ),
    (
        "Research & Development",
        5,
        &["Research Scientist", "Data Scientist", "Lab Technician"],
    ),
    ("Legal", 2, &["Counsel", "Paralegal", "Compliance Officer"]),
    (
        "Executive Office",
        1,
        &["Chief of Staff", "Executive Assistant", "Vice President"],
    ),
];

/// Given names, comma-separated.
const GIVEN_NAMES: &str = concat!(
    "Aaliyah,Adam,Aisha,Alejandro,Alice,Amara,Amelia,Andrei,Anna,Arjun,Ben,Camila,",
    "Carlos,Chen,Chloe,Daniel,David,Diego,Elena,Elif,Emma,Ethan,Fatima,Felix,Freya,",
    "Gabriel,Grace,Hana,Hannah,Hiroshi,Ibrahim,Ines,Isabella,Ivan,Jack,James,Jana,",
    "Javier,Ji-woo,Julia,Kai,Karin,Kenji,Laila,Lars,Leila,Liam,Lucas,Lucia,Mai,Marco,",
    "Maria,Mateo,Mei,Mia,Mohammed,Nadia,Noah,Nora,Olivia,Omar,Oscar,Pablo,Priya,",
    "Rahul,Rosa,Sam,Sara,Sofia,Sven,Tariq,Thomas,Tomas,Valentina,Wei,Yara,Yusuf,Zara,",
    "Zoe,Zofia",
);

/// Surnames, comma-separated.
const SURNAMES: &str = concat!(
    "Abbasi,Andersen,Bauer,Becker,Bianchi,Brown,Castro,Chen,Costa,Da Silva,Dubois,",
    "Eriksson,Fernandez,Fischer,Garcia,Gonzalez,Hansen,Hernandez,Hoffmann,Ivanova,",
    "Jansen,Johnson,Kaur,Khan,Kim,Kowalski,Kumar,Larsen,Lee,Lopez,Martin,Martinez,",
    "Meyer,Moreau,Muller,Murphy,Nakamura,Nguyen,Nielsen,Novak,O'Brien,Okafor,Olsen,",
    "Patel,Perez,Petrov,Rossi,Sato,Schmidt,Schneider,Silva,Singh,Smith,Suzuki,Tanaka,",
    "Taylor,Van Dijk,Wagner,Walker,Wang,Weber,Williams,Wilson,Wojcik,Yamamoto,Yilmaz,",
    "Zhang,Zimmermann",
);

/// Words for team names, comma-separated.
const TEAM_WORDS: &str = concat!(
    "Atlas,Aurora,Beacon,Cobalt,Comet,Delta,Ember,Falcon,Galaxy,Harbor,Helix,Horizon,",
    "Indigo,Jade,Kestrel,Lynx,Meridian,Nebula,Nova,Onyx,Orion,Phoenix,Pulsar,Quartz,",
    "Raven,Sierra,Summit,Tango,Titan,Vector,Vertex,Zephyr",
);

const PIM_ROLES: &[&str] = &[
    "Production Admins",
    "Billing Approvers",
    "Security Responders",
    "Database Operators",
    "Tenant Admins",
    "Payroll Approvers",
];

/// A minimal Graph-shaped user `{id}@contoso.example` ("User {id}", enabled, with mail): the
/// user of service tests and benchmarks that only need someone to provision.
pub fn user(id: &SourceId) -> SourceUser {
    let mut attrs = SourceAttrs::new();
    attrs.insert(
        "userPrincipalName".into(),
        json!(format!("{id}@contoso.example")),
    );
    attrs.insert("displayName".into(), json!(format!("User {id}")));
    attrs.insert("givenName".into(), json!("User"));
    attrs.insert("surname".into(), json!(id.as_str()));
    attrs.insert("mail".into(), json!(format!("{id}@contoso.example")));
    attrs.insert("accountEnabled".into(), json!(true));
    SourceUser {
        id: id.clone(),
        attrs,
    }
}

/// Builds a directory of `users` users and `groups` groups, the same for the same `seed`.
///
/// The group budget is spent in this order: the all-users group, one group per department
/// (up to twelve), about 1 % PIM groups, about 5 % nested organisation groups, and team
/// groups for the rest. With fewer than three groups there are only the all-users and
/// department groups.
pub fn directory(users: usize, groups: usize, seed: u64) -> Directory {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Gen {
        by_dept: vec![Vec::new(); DEPARTMENTS.len()],
        ..Gen::default()
    };
    for i in 0..users {
        b.add_user(&mut rng, i);
    }

    let mut budget = groups;
    let mut take = |n: usize| {
        let n = n.min(budget);
        budget -= n;
        n
    };
    let all_users = take(1);
    let departments = take(DEPARTMENTS.len());
    let pims = if groups >= 3 {
        take((groups / 100).max(1))
    } else {
        0
    };
    let orgs = if groups >= 3 { take(groups / 20) } else { 0 };
    let teams = take(usize::MAX);

    let mut dir = Directory::default();
    if all_users > 0 {
        let members = b.ids.clone();
        b.push_group(&mut rng, &mut dir, ALL_USERS.to_owned(), members, vec![]);
    }
    for (d, (name, _, _)) in DEPARTMENTS.iter().enumerate().take(departments) {
        let members = b.by_dept[d].iter().map(|&u| b.ids[u].clone()).collect();
        b.push_group(
            &mut rng,
            &mut dir,
            format!("{DEPARTMENT_PREFIX}{name}"),
            members,
            vec![],
        );
    }
    let team_ids = b.teams(&mut rng, &mut dir, teams);
    b.orgs(&mut rng, &mut dir, orgs, &team_ids);
    b.pims(&mut rng, &mut dir, pims);

    dir.users = std::mem::take(&mut b.users);
    dir
}

/// The comma-separated name lists, split.
struct Names {
    given: Vec<&'static str>,
    surnames: Vec<&'static str>,
    words: Vec<&'static str>,
}

impl Default for Names {
    fn default() -> Self {
        let split = |s: &'static str| s.split(',').collect();
        Names {
            given: split(GIVEN_NAMES),
            surnames: split(SURNAMES),
            words: split(TEAM_WORDS),
        }
    }
}

/// Accumulates users while a directory is generated.
#[derive(Default)]
struct Gen {
    names: Names,
    users: BTreeMap<SourceId, SourceUser>,
    /// User ids in creation order.
    ids: Vec<SourceId>,
    /// Department index of each user.
    dept: Vec<usize>,
    /// Users (indexes into `ids`) by department.
    by_dept: Vec<Vec<usize>>,
    /// How many `given.surname` user principal names exist.
    upn_counts: HashMap<String, u32>,
}

impl Gen {
    fn add_user(&mut self, rng: &mut StdRng, i: usize) {
        let d = pick_department(rng);
        let given = pick(rng, &self.names.given);
        let surname = pick(rng, &self.names.surnames);
        let base = format!("{}.{}", local_part(given), local_part(surname));
        let n = self.upn_counts.entry(base.clone()).or_insert(0);
        *n += 1;
        let upn = if *n == 1 {
            format!("{base}@{DOMAIN}")
        } else {
            format!("{base}{n}@{DOMAIN}")
        };
        let id = SourceId::new(uuid(rng));
        let attrs = user_attrs(rng, &id, &upn, given, surname, d, 100_000 + i);
        self.users.insert(
            id.clone(),
            SourceUser {
                id: id.clone(),
                attrs,
            },
        );
        self.by_dept[d].push(self.ids.len());
        self.ids.push(id);
        self.dept.push(d);
    }

    fn push_group(
        &self,
        rng: &mut StdRng,
        dir: &mut Directory,
        display_name: String,
        mut members: Vec<SourceId>,
        mut eligible: Vec<SourceId>,
    ) -> SourceId {
        members.sort();
        members.dedup();
        eligible.sort();
        eligible.dedup();
        let id = SourceId::new(uuid(rng));
        dir.groups.insert(
            id.clone(),
            SourceGroup {
                id: id.clone(),
                display_name,
                members,
                eligible,
            },
        );
        id
    }

    /// Team groups with Zipf-like sizes; afterwards every user is in at least one.
    fn teams(&self, rng: &mut StdRng, dir: &mut Directory, count: usize) -> Vec<SourceId> {
        let n = self.ids.len();
        let mut members: Vec<BTreeSet<usize>> = Vec::with_capacity(count);
        let mut in_teams = vec![0u32; n];
        for rank in 1..=count {
            let size = (LARGEST_TEAM_SHARE * n as f64 / (rank as f64).powf(ZIPF_EXPONENT))
                .round()
                .clamp(3.0_f64.min(n as f64), n as f64) as usize;
            let home = &self.by_dept[pick_department(rng)];
            let from_home = ((size as f64 * HOME_SHARE).round() as usize).min(home.len());
            let mut set: BTreeSet<usize> = index::sample(rng, home.len(), from_home)
                .into_iter()
                .map(|k| home[k])
                .collect();
            let rest = size - from_home;
            set.extend(index::sample(rng, n, rest.min(n)));
            for &u in &set {
                in_teams[u] += 1;
            }
            members.push(set);
        }
        // Everyone is in some team: put the others in one of the smaller half.
        if count > 0 {
            let small_from = count / 2;
            for (u, &c) in in_teams.iter().enumerate() {
                if c == 0 {
                    let t = rng.random_range(small_from..count);
                    members[t].insert(u);
                }
            }
        }
        members
            .into_iter()
            .enumerate()
            .map(|(i, set)| {
                let rank = i + 1;
                let word = self.names.words[i % self.names.words.len()];
                let kind = if i % 3 == 0 { "Project" } else { "Team" };
                let ids = set.into_iter().map(|u| self.ids[u].clone()).collect();
                self.push_group(
                    rng,
                    dir,
                    format!("{TEAM_PREFIX}{kind} {word} {rank}"),
                    ids,
                    vec![],
                )
            })
            .collect()
    }

    /// Organisation groups whose members are team groups, a few users and sometimes the
    /// previous organisation group (two levels of nesting).
    fn orgs(&self, rng: &mut StdRng, dir: &mut Directory, count: usize, teams: &[SourceId]) {
        let mut previous: Option<SourceId> = None;
        for i in 0..count {
            let nested = rng.random_range(2..=4);
            let mut members: Vec<SourceId> = teams.choose_multiple(rng, nested).cloned().collect();
            let direct = rng.random_range(0..=5).min(self.ids.len());
            members.extend(self.ids.choose_multiple(rng, direct).cloned());
            if let Some(p) = previous.take()
                && rng.random_bool(0.3)
            {
                members.push(p);
            }
            let word = self.names.words[(i * 7) % self.names.words.len()];
            let id = self.push_group(
                rng,
                dir,
                format!("{ORG_PREFIX}{word} Division {}", i + 1),
                members,
                vec![],
            );
            previous = Some(id);
        }
    }

    /// PIM groups: a few permanent members, more eligible ones, mostly from Engineering and IT.
    fn pims(&self, rng: &mut StdRng, dir: &mut Directory, count: usize) {
        let mut pool: Vec<usize> = self.by_dept.first().cloned().unwrap_or_default();
        if let Some(it) = DEPARTMENTS.iter().position(|(n, _, _)| *n == "IT") {
            pool.extend(self.by_dept.get(it).into_iter().flatten());
        }
        if pool.is_empty() {
            pool = (0..self.ids.len()).collect();
        }
        for i in 0..count {
            let (permanent, candidates) = (rng.random_range(1..=5), rng.random_range(5..=40));
            let members = pool
                .choose_multiple(rng, permanent)
                .map(|&u| self.ids[u].clone())
                .collect::<Vec<_>>();
            let eligible = pool
                .choose_multiple(rng, candidates)
                .map(|&u| self.ids[u].clone())
                .filter(|u| !members.contains(u))
                .collect();
            let role = PIM_ROLES[i % PIM_ROLES.len()];
            let name = if i < PIM_ROLES.len() {
                format!("{PIM_PREFIX}{role}")
            } else {
                format!("{PIM_PREFIX}{role} {}", i / PIM_ROLES.len() + 1)
            };
            self.push_group(rng, dir, name, members, eligible);
        }
    }
}

/// The Graph-shaped attributes of one user.
fn user_attrs(
    rng: &mut StdRng,
    id: &SourceId,
    upn: &str,
    given: &str,
    surname: &str,
    dept: usize,
    employee_id: usize,
) -> SourceAttrs {
    let (department, _, titles) = DEPARTMENTS[dept];
    let mut a = SourceAttrs::new();
    a.insert("id".into(), json!(id.as_str()));
    a.insert("userPrincipalName".into(), json!(upn));
    a.insert("displayName".into(), json!(format!("{given} {surname}")));
    a.insert("givenName".into(), json!(given));
    a.insert("surname".into(), json!(surname));
    // A few accounts have no mailbox, a few have no title yet.
    if !rng.random_bool(0.02) {
        a.insert("mail".into(), json!(upn));
    }
    a.insert(
        "accountEnabled".into(),
        json!(!rng.random_bool(DISABLED_SHARE)),
    );
    if !rng.random_bool(0.03) {
        a.insert("jobTitle".into(), json!(pick(rng, titles)));
    }
    a.insert("department".into(), json!(department));
    a.insert("employeeId".into(), json!(employee_id.to_string()));
    a
}

/// What [`mutate`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Churn {
    /// Job title, surname (with display name) or mail edits.
    pub attribute_edits: usize,
    /// Users moved to another department (attribute and department group).
    pub department_moves: usize,
    /// Accounts disabled.
    pub disables: usize,
    /// Accounts re-enabled.
    pub enables: usize,
    /// Users removed from the directory and from every group.
    pub leavers: usize,
    /// New users (in the all-users group, a department group and a team).
    pub hires: usize,
    /// Team memberships added.
    pub team_joins: usize,
    /// Team memberships removed.
    pub team_leaves: usize,
    /// Users made PIM-eligible for a group.
    pub eligibility_changes: usize,
}

impl Churn {
    /// Every change counted.
    pub fn total(&self) -> usize {
        self.attribute_edits
            + self.department_moves
            + self.disables
            + self.enables
            + self.leavers
            + self.hires
            + self.team_joins
            + self.team_leaves
            + self.eligibility_changes
    }
}

/// Applies a day of churn touching about `fraction` of the users (0.01 is a busy day in a
/// large tenant), deterministically for `seed`.
///
/// Each touched user gets one change: an attribute edit (45 %), a department move (8 %), a
/// team join (15 %) or leave (10 %), a disable or re-enable (10 %), leaving the company (5 %)
/// or becoming PIM-eligible (7 %). On top, new hires amounting to a tenth of the touched
/// users join. Group membership lists stay consistent: no member id without a user.
pub fn mutate(dir: &mut Directory, fraction: f64, seed: u64) -> Churn {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c4a2_9e37_79b9);
    let mut churn = Churn::default();
    let names = Names::default();
    let ids: Vec<SourceId> = dir.users.keys().cloned().collect();
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let touched = ((ids.len() as f64 * fraction).round() as usize).min(ids.len());

    let by_name = |prefix: &str| -> BTreeMap<String, SourceId> {
        dir.groups
            .values()
            .filter_map(|g| {
                g.display_name
                    .strip_prefix(prefix)
                    .map(|rest| (rest.to_owned(), g.id.clone()))
            })
            .collect()
    };
    let departments = by_name(DEPARTMENT_PREFIX);
    let teams: Vec<SourceId> = by_name(TEAM_PREFIX).into_values().collect();
    let pims: Vec<SourceId> = by_name(PIM_PREFIX).into_values().collect();
    let all_users = dir
        .groups
        .values()
        .find(|g| g.display_name == ALL_USERS)
        .map(|g| g.id.clone());
    // Which teams each user is in (a user's teams, in name order).
    let mut teams_of: HashMap<SourceId, Vec<SourceId>> = HashMap::new();
    for t in &teams {
        if let Some(g) = dir.groups.get(t) {
            for m in &g.members {
                teams_of.entry(m.clone()).or_default().push(t.clone());
            }
        }
    }

    let mut leavers: BTreeSet<SourceId> = BTreeSet::new();
    for k in index::sample(&mut rng, ids.len(), touched) {
        let uid = &ids[k];
        let roll = rng.random_range(0..100u32);
        let Some(user) = dir.users.get_mut(uid) else {
            continue;
        };
        let dept = user
            .attrs
            .get("department")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match roll {
            0..45 => {
                match rng.random_range(0..3u32) {
                    0 => {
                        let titles = DEPARTMENTS
                            .iter()
                            .find(|(n, _, _)| *n == dept)
                            .map_or(DEPARTMENTS[0].2, |(_, _, t)| *t);
                        user.attrs
                            .insert("jobTitle".into(), json!(pick(&mut rng, titles)));
                    }
                    1 => {
                        let surname = pick(&mut rng, &names.surnames);
                        let given = user
                            .attrs
                            .get("givenName")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        user.attrs.insert("surname".into(), json!(surname));
                        user.attrs
                            .insert("displayName".into(), json!(format!("{given} {surname}")));
                    }
                    _ => {
                        let upn = user
                            .attrs
                            .get("userPrincipalName")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let alias = upn.replacen('@', ".alias@", 1);
                        user.attrs.insert("mail".into(), json!(alias));
                    }
                }
                churn.attribute_edits += 1;
            }
            45..53 => {
                let (to, _, titles) = DEPARTMENTS[pick_department(&mut rng)];
                if to == dept {
                    continue;
                }
                user.attrs.insert("department".into(), json!(to));
                user.attrs
                    .insert("jobTitle".into(), json!(pick(&mut rng, titles)));
                if let Some(g) = departments.get(&dept).and_then(|g| dir.groups.get_mut(g)) {
                    g.members.retain(|m| m != uid);
                }
                if let Some(g) = departments.get(to).and_then(|g| dir.groups.get_mut(g)) {
                    insert_sorted(&mut g.members, uid.clone());
                }
                churn.department_moves += 1;
            }
            53..68 => {
                let Some(t) = teams.choose(&mut rng) else {
                    continue;
                };
                if let Some(g) = dir.groups.get_mut(t)
                    && insert_sorted(&mut g.members, uid.clone())
                {
                    churn.team_joins += 1;
                }
            }
            68..78 => {
                // Leave one team, but stay in at least one.
                let mine = teams_of.get(uid).map(Vec::as_slice).unwrap_or_default();
                if mine.len() < 2 {
                    continue;
                }
                if let Some(t) = mine.choose(&mut rng)
                    && let Some(g) = dir.groups.get_mut(t)
                {
                    g.members.retain(|m| m != uid);
                    churn.team_leaves += 1;
                }
            }
            78..88 => {
                let enabled = user
                    .attrs
                    .get("accountEnabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                user.attrs.insert("accountEnabled".into(), json!(!enabled));
                if enabled {
                    churn.disables += 1;
                } else {
                    churn.enables += 1;
                }
            }
            88..93 => {
                leavers.insert(uid.clone());
            }
            _ => {
                let Some(p) = pims.choose(&mut rng) else {
                    continue;
                };
                if let Some(g) = dir.groups.get_mut(p)
                    && !g.members.contains(uid)
                    && insert_sorted(&mut g.eligible, uid.clone())
                {
                    churn.eligibility_changes += 1;
                }
            }
        }
    }

    if !leavers.is_empty() {
        for g in dir.groups.values_mut() {
            g.members.retain(|m| !leavers.contains(m));
            g.eligible.retain(|m| !leavers.contains(m));
        }
        for l in &leavers {
            dir.users.remove(l);
        }
        churn.leavers = leavers.len();
    }

    let hires = touched / 10;
    let mut upns: HashSet<String> = dir
        .users
        .values()
        .filter_map(|u| u.attrs.get("userPrincipalName").and_then(Value::as_str))
        .map(str::to_lowercase)
        .collect();
    let first_employee = dir
        .users
        .values()
        .filter_map(|u| u.attrs.get("employeeId").and_then(Value::as_str))
        .filter_map(|e| e.parse::<usize>().ok())
        .max()
        .unwrap_or(100_000)
        + 1;
    for employee_id in first_employee..first_employee + hires {
        let d = pick_department(&mut rng);
        let given = pick(&mut rng, &names.given);
        let surname = pick(&mut rng, &names.surnames);
        let base = format!("{}.{}", local_part(given), local_part(surname));
        let mut upn = format!("{base}@{DOMAIN}");
        let mut n = 1;
        while upns.contains(&upn) {
            n += 1;
            upn = format!("{base}{n}@{DOMAIN}");
        }
        upns.insert(upn.clone());
        let id = SourceId::new(uuid(&mut rng));
        let mut attrs = user_attrs(&mut rng, &id, &upn, given, surname, d, employee_id);
        attrs.insert("accountEnabled".into(), json!(true));
        dir.users.insert(
            id.clone(),
            SourceUser {
                id: id.clone(),
                attrs,
            },
        );
        let mut join = |g: Option<&SourceId>| {
            if let Some(g) = g.and_then(|g| dir.groups.get_mut(g)) {
                insert_sorted(&mut g.members, id.clone());
            }
        };
        join(all_users.as_ref());
        join(departments.get(DEPARTMENTS[d].0));
        join(teams.choose(&mut rng));
        churn.hires += 1;
    }
    churn
}

/// The id of the group with this display name, if any.
pub fn find_group(dir: &Directory, display_name: &str) -> Option<SourceId> {
    dir.groups
        .values()
        .find(|g| g.display_name == display_name)
        .map(|g| g.id.clone())
}

/// Ids of the groups whose display name starts with `prefix`, largest first (ties by name).
pub fn groups_with_prefix(dir: &Directory, prefix: &str) -> Vec<SourceId> {
    let mut found: Vec<&SourceGroup> = dir
        .groups
        .values()
        .filter(|g| g.display_name.starts_with(prefix))
        .collect();
    found.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then_with(|| a.display_name.cmp(&b.display_name))
    });
    found.into_iter().map(|g| g.id.clone()).collect()
}

/// Inserts `id` keeping `list` sorted; false when it was already there.
fn insert_sorted(list: &mut Vec<SourceId>, id: SourceId) -> bool {
    match list.binary_search(&id) {
        Ok(_) => false,
        Err(at) => {
            list.insert(at, id);
            true
        }
    }
}

/// A department index drawn by headcount weight.
fn pick_department(rng: &mut StdRng) -> usize {
    let total: u32 = DEPARTMENTS.iter().map(|(_, w, _)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (i, (_, w, _)) in DEPARTMENTS.iter().enumerate() {
        if roll < *w {
            return i;
        }
        roll -= w;
    }
    0
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or_default()
}

/// A name as it appears in a user principal name: lower case, letters and digits only.
fn local_part(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A random version-4 UUID in its usual text form, like an Entra object id.
fn uuid(rng: &mut StdRng) -> String {
    const VERSION_MASK: u128 = 0xf << 76;
    const VERSION_4: u128 = 0x4 << 76;
    const VARIANT_MASK: u128 = 0x3 << 62;
    const VARIANT_RFC: u128 = 0x2 << 62;
    let n: u128 = rng.random();
    let n = (n & !VERSION_MASK & !VARIANT_MASK) | VERSION_4 | VARIANT_RFC;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (n >> 96) as u32,
        (n >> 80) as u16,
        (n >> 64) as u16,
        (n >> 48) as u16,
        n & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups_of(dir: &Directory) -> HashMap<&SourceId, usize> {
        let mut count = HashMap::new();
        for g in dir.groups.values() {
            for m in &g.members {
                *count.entry(m).or_insert(0) += 1;
            }
        }
        count
    }

    #[test]
    fn shape_is_graph_like() {
        let dir = directory(2_000, 60, 7);
        assert_eq!(dir.users.len(), 2_000);
        assert_eq!(dir.groups.len(), 60);
        let keys = [
            "id",
            "userPrincipalName",
            "displayName",
            "givenName",
            "surname",
            "accountEnabled",
            "department",
            "employeeId",
        ];
        for u in dir.users.values() {
            for k in keys {
                assert!(u.attrs.contains_key(k), "{} lacks {k}", u.id);
            }
            assert_eq!(u.attrs["id"], json!(u.id.as_str()));
            assert_eq!(u.id.as_str().len(), 36);
        }
        let upns: HashSet<String> = dir
            .users
            .values()
            .map(|u| {
                u.attrs["userPrincipalName"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
            })
            .collect();
        assert_eq!(upns.len(), 2_000, "userPrincipalNames are unique");
        let disabled = dir
            .users
            .values()
            .filter(|u| u.attrs["accountEnabled"] == json!(false))
            .count();
        assert!((20..=120).contains(&disabled), "{disabled} disabled");
        let names: HashSet<&str> = dir
            .groups
            .values()
            .map(|g| g.display_name.as_str())
            .collect();
        assert_eq!(names.len(), 60, "group names are unique");
    }

    #[test]
    fn membership_overlaps_like_a_tenant() {
        let dir = directory(2_000, 60, 7);
        let all = find_group(&dir, ALL_USERS).unwrap();
        assert_eq!(dir.groups[&all].members.len(), 2_000);
        assert_eq!(
            groups_with_prefix(&dir, DEPARTMENT_PREFIX).len(),
            DEPARTMENTS.len()
        );
        // Every user: all-users, one department, at least one team.
        let count = groups_of(&dir);
        assert!(dir.users.keys().all(|u| count.get(u).copied() >= Some(3)));
        // Zipf-like teams: the largest is far larger than the median.
        let teams = groups_with_prefix(&dir, TEAM_PREFIX);
        let sizes: Vec<usize> = teams.iter().map(|t| dir.groups[t].members.len()).collect();
        assert!(sizes[0] > 5 * sizes[sizes.len() / 2], "{sizes:?}");
        assert!(sizes.iter().all(|&s| s >= 3), "{sizes:?}");
        // Nested groups hold groups; PIM groups have eligible users.
        let orgs = groups_with_prefix(&dir, ORG_PREFIX);
        assert!(!orgs.is_empty());
        assert!(orgs.iter().all(|o| {
            dir.groups[o]
                .members
                .iter()
                .any(|m| dir.groups.contains_key(m))
        }));
        let pims = groups_with_prefix(&dir, PIM_PREFIX);
        assert!(!pims.is_empty());
        assert!(pims.iter().all(|p| !dir.groups[p].eligible.is_empty()));
        // Every member is a user or a group.
        for g in dir.groups.values() {
            for m in g.members.iter().chain(&g.eligible) {
                assert!(dir.users.contains_key(m) || dir.groups.contains_key(m));
            }
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        assert_eq!(directory(500, 30, 42), directory(500, 30, 42));
        assert_ne!(directory(500, 30, 42), directory(500, 30, 43));
        let mut a = directory(500, 30, 42);
        let mut b = a.clone();
        assert_eq!(mutate(&mut a, 0.1, 9), mutate(&mut b, 0.1, 9));
        assert_eq!(a, b);
    }

    #[test]
    fn tiny_budgets_do_not_fail() {
        assert!(directory(0, 0, 1).users.is_empty());
        assert_eq!(directory(10, 1, 1).groups.len(), 1);
        assert_eq!(directory(10, 2, 1).groups.len(), 2);
        assert_eq!(directory(5, 40, 1).groups.len(), 40);
        let mut d = directory(0, 5, 1);
        assert_eq!(mutate(&mut d, 0.5, 1), Churn::default());
    }

    #[test]
    fn mutate_is_a_day_of_churn() {
        let before = directory(5_000, 100, 3);
        let mut after = before.clone();
        let churn = mutate(&mut after, 0.02, 11);
        // ~100 users touched, plus ~10 hires; some rolls are no-ops.
        assert!((70..=115).contains(&churn.total()), "{churn:?}");
        assert!(churn.attribute_edits > 20, "{churn:?}");
        assert!(churn.hires == 10 && churn.leavers > 0, "{churn:?}");
        assert_eq!(
            after.users.len(),
            before.users.len() + churn.hires - churn.leavers
        );
        let changed = after
            .users
            .iter()
            .filter(|(id, u)| before.users.get(*id).is_none_or(|b| b != *u))
            .count();
        assert!(changed < 200, "{changed} users changed");
        for g in after.groups.values() {
            for m in g.members.iter().chain(&g.eligible) {
                assert!(after.users.contains_key(m) || after.groups.contains_key(m));
            }
        }
        let all = find_group(&after, ALL_USERS).unwrap();
        assert_eq!(after.groups[&all].members.len(), after.users.len());
    }
}
