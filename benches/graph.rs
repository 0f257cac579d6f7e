//! The Graph read benchmark: a full snapshot of a large tenant through [`GraphSource`],
//! against the in-process Graph double on loopback.
//!
//! `cargo bench --bench graph` (release build) builds a tenant of 100k users in 1k groups
//! (99 % of users a direct member of 1 to 3 groups, 1 % in none; 5 PIM-eligible non-members
//! per group, 2 of them from the users in no group, who are then read one by one),
//! serves it from [`scim_sync_testkit::graph_double`] with Graph's maximum page size (999),
//! and reads it the way a cycle does: a cold read (token included) then warm reads (cached
//! token). It reports wall time, requests by kind, users, groups and memberships read, and
//! checks the snapshot against the tenant (every membership, every eligible user).
//!
//! Then the same with delta queries ([`GraphSource::with_delta`], state kept in an in-memory
//! store as the service keeps it in its own): the first round from scratch (cold, token
//! included), then no-change delta cycles (the steady state of a quiet tenant; median), each
//! snapshot checked equal to the full read's.
//!
//! Options (after `--`): `--quick` (10k users in 100 groups, one warm run), `--users N`,
//! `--groups N`, `--page-size N` (the double's page size: 100 is Graph's default when no
//! `$top` is honoured), `--repeat N` (warm reads; median reported; default 3), `--seed N`.
//! Cargo's own `--bench` flag is ignored.
//!
//! The double runs in the same process on the same two cores, so its JSON encoding is in the
//! figures: they bound the engine's own cost from above, without Graph's real latency and
//! throttling (see docs/GRAPH.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use scim_sync::config::Config;
use scim_sync::model::{Directory, SourceGroup, SourceId, SourceUser};
use scim_sync::source::{GraphSource, Source};
use scim_sync::store::Store;
use scim_sync_testkit::graph_double::{DoubleState, GraphDouble};

struct Args {
    users: usize,
    groups: usize,
    page_size: usize,
    repeat: usize,
    seed: u64,
    quick: bool,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut a = Args {
            users: 100_000,
            groups: 1_000,
            page_size: 999,
            repeat: 3,
            seed: 2026,
            quick: false,
        };
        let (mut users, mut groups, mut repeat) = (None, None, None);
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--bench" => {}
                "--quick" => a.quick = true,
                "--users" => users = Some(value("--users")?.parse().context("--users")?),
                "--groups" => groups = Some(value("--groups")?.parse().context("--groups")?),
                "--page-size" => {
                    a.page_size = value("--page-size")?.parse().context("--page-size")?
                }
                "--repeat" => repeat = Some(value("--repeat")?.parse().context("--repeat")?),
                "--seed" => a.seed = value("--seed")?.parse().context("--seed")?,
                "--help" | "-h" => {
                    println!(
                        "cargo bench --bench graph [-- --quick] [--users N] [--groups N] [--page-size N] [--repeat N] [--seed N]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        if a.quick {
            a.users = 10_000;
            a.groups = 100;
            a.repeat = 1;
        }
        a.users = users.unwrap_or(a.users);
        a.groups = groups.unwrap_or(a.groups);
        a.repeat = repeat.unwrap_or(a.repeat).max(1);
        if a.groups == 0 || a.users == 0 || a.page_size == 0 {
            bail!("--users, --groups and --page-size must be at least 1");
        }
        Ok(a)
    }
}

/// A small deterministic generator (xorshift), so that a seed gives one tenant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `users` users, each a direct member of 1 to 3 of `groups` groups; 5 eligible
/// non-members per group.
fn tenant(users: usize, groups: usize, seed: u64) -> Directory {
    let mut rng = Rng(seed.max(1) ^ 0x9E37_79B9_7F4A_7C15);
    let mut dir = Directory::default();
    let gid = |g: usize| SourceId::new(format!("00000000-0000-4000-8000-{g:012}"));
    let mut members: Vec<Vec<SourceId>> = vec![Vec::new(); groups];
    for i in 0..users {
        let id = SourceId::new(format!("10000000-0000-4000-8000-{i:012}"));
        let upn = format!("user{i}@contoso.example");
        let attrs = json!({
            "userPrincipalName": upn, "displayName": format!("User {i}"), "givenName": "User",
            "surname": format!("N{i}"), "mail": upn, "accountEnabled": i % 33 != 0,
            "jobTitle": "Engineer", "department": format!("Dept {}", i % 12), "employeeId": format!("{i}"),
        });
        let attrs = scim_sync::model::attrs_from_json(attrs);
        // 1 % of users are in no group (candidates for eligibility only).
        let n = if i % 100 == 0 { 0 } else { 1 + rng.below(3) };
        let mut mine: Vec<usize> = Vec::with_capacity(n);
        while mine.len() < n.min(groups) {
            let g = rng.below(groups);
            if !mine.contains(&g) {
                mine.push(g);
            }
        }
        for g in mine {
            members[g].push(id.clone());
        }
        dir.users.insert(id.clone(), SourceUser { id, attrs });
    }
    let ids: Vec<SourceId> = dir.users.keys().cloned().collect();
    let loners: Vec<SourceId> = (0..users)
        .step_by(100)
        .map(|i| SourceId::new(format!("10000000-0000-4000-8000-{i:012}")))
        .collect();
    for (g, m) in members.into_iter().enumerate() {
        // 3 eligible users from anywhere, 2 from those in no group (read with /users/{id}).
        let mut eligible: Vec<SourceId> = Vec::new();
        for (pool, want) in [(&ids, 3), (&loners, 5)] {
            let mut tries = 0;
            while eligible.len() < want && tries < 100 {
                tries += 1;
                let u = &pool[rng.below(pool.len())];
                if !m.contains(u) && !eligible.contains(u) {
                    eligible.push(u.clone());
                }
            }
        }
        dir.groups.insert(
            gid(g),
            SourceGroup {
                id: gid(g),
                display_name: format!("Group {g}"),
                members: m,
                eligible,
            },
        );
    }
    dir
}

struct Run {
    secs: f64,
    users: usize,
    /// Reads by kind (those carried in a `$batch` count by their own kind).
    requests: BTreeMap<&'static str, u64>,
    /// HTTP requests (a `$batch` is one).
    http: u64,
}

const KINDS: [&str; 8] = [
    "token",
    "batch",
    "group",
    "members",
    "eligibility",
    "user",
    "groupsDelta",
    "usersDelta",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let t = Instant::now();
    let dir = tenant(args.users, args.groups, args.seed);
    let memberships: usize = dir.groups.values().map(|g| g.members.len()).sum();
    let eligible: usize = dir.groups.values().map(|g| g.eligible.len()).sum();
    eprintln!(
        "tenant: {} users, {} groups, {memberships} memberships, {eligible} eligibilities (built in {:.1} s)",
        args.users,
        args.groups,
        t.elapsed().as_secs_f64()
    );
    let state = DoubleState::new(dir.clone());
    state.set_page_size(args.page_size);
    let double = GraphDouble::start(state).await?;
    let groups: Vec<String> = dir.groups.keys().map(|g| g.to_string()).collect();
    let cfg = Config::parse(
        Path::new("bench.toml"),
        &format!(
            "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"bench\"\nbase_url = \"http://127.0.0.1:9/scim/v2\"\ntoken_env = \"UNUSED\"\ngroups = {groups:?}\n"
        ),
    )?;
    let source = GraphSource::new(&double.config("UNUSED"), GraphDouble::secret(), &cfg.apps)?;
    let (runs, full) = measure("full", &source, &double, args.repeat, |snap| {
        check(&dir, snap)
    })
    .await?;
    let store = Store::open("sqlite::memory:").await?;
    let delta_source =
        GraphSource::new(&double.config("UNUSED"), GraphDouble::secret(), &cfg.apps)?
            .with_delta(Some(store));
    let (delta_runs, _) = measure("delta", &delta_source, &double, args.repeat, |snap| {
        if *snap == full {
            Ok(())
        } else {
            bail!("the delta snapshot differs from the full read")
        }
    })
    .await?;
    let cold = &runs[0];
    let (warm, median) = warm_times(&runs);
    let total = |r: &Run| r.http;
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = if given.is_empty() {
        "cargo bench --bench graph".to_owned()
    } else {
        format!("cargo bench --bench graph -- {}", given.join(" "))
    };
    println!(
        "### Graph read: {} users in {} groups\n",
        args.users, args.groups
    );
    println!(
        "Command: `{command}` (release), seed {}, page size {}.\n",
        args.seed, args.page_size
    );
    println!("| | value |\n|---|---|");
    println!("| users in the tenant | {} |", args.users);
    println!("| users read (members and eligible) | {} |", cold.users);
    println!("| groups read | {} |", args.groups);
    println!("| memberships read | {memberships} |");
    println!("| eligibilities read | {eligible} |");
    println!("| cold read (token included) | {:.2} s |", cold.secs);
    println!(
        "| warm read, median of {} | {median:.2} s (runs: {}) |",
        warm.len(),
        warm.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| requests, cold read | {} |", total(cold));
    for k in KINDS {
        let n = cold.requests.get(k).copied().unwrap_or(0);
        if n > 0 {
            println!("| &nbsp; {k} | {n} |");
        }
    }
    println!(
        "| users/s (warm median) | {:.0} |",
        cold.users as f64 / median.max(f64::EPSILON)
    );
    println!(
        "| memberships/s (warm median) | {:.0} |",
        memberships as f64 / median.max(f64::EPSILON)
    );
    let (dwarm, dmedian) = warm_times(&delta_runs);
    let dcold = &delta_runs[0];
    println!(
        "| delta round from scratch (token included) | {:.2} s, {} requests |",
        dcold.secs,
        total(dcold)
    );
    for k in KINDS {
        let n = dcold.requests.get(k).copied().unwrap_or(0);
        if n > 0 {
            println!("| &nbsp; {k} | {n} |");
        }
    }
    println!(
        "| no-change delta cycle, median of {} | {dmedian:.2} s (runs: {}) |",
        dwarm.len(),
        dwarm
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let steady = &delta_runs[delta_runs.len() - 1];
    println!("| requests, no-change delta cycle | {} |", total(steady));
    for k in KINDS {
        let n = steady.requests.get(k).copied().unwrap_or(0);
        if n > 0 {
            println!("| &nbsp; {k} | {n} |");
        }
    }
    // A PIM poller round over every group with eligibility (here every group).
    let pim: Vec<SourceId> = delta_source.groups().cloned().collect();
    double.state().reset_counts();
    let t = Instant::now();
    let read = delta_source.assignment_instances_of(&pim).await;
    let secs = t.elapsed().as_secs_f64();
    if let Some(e) = read.into_iter().find_map(Result::err) {
        bail!("the poller round failed: {e}");
    }
    println!(
        "| PIM poller round, {} groups | {secs:.2} s, {} requests ({} reads in {} batches) |",
        pim.len(),
        double.state().total_requests(),
        double.state().requests("assignments"),
        double.state().requests("batch")
    );
    Ok(())
}

/// Reads `repeat + 1` snapshots with `source` (the first cold), checking each; returns the
/// runs and the last snapshot.
async fn measure(
    label: &str,
    source: &GraphSource,
    double: &GraphDouble,
    repeat: usize,
    check: impl Fn(&Directory) -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<Run>, Directory)> {
    let mut runs = Vec::new();
    let mut last = Directory::default();
    for i in 0..=repeat {
        double.state().reset_counts();
        let t = Instant::now();
        let snap = source.snapshot().await?;
        let secs = t.elapsed().as_secs_f64();
        check(&snap).with_context(|| format!("{label} run {i}"))?;
        let requests = KINDS
            .iter()
            .map(|k| (*k, double.state().requests(k)))
            .collect();
        eprintln!(
            "{label} {} read: {secs:.2} s, {} requests",
            if i == 0 { "cold" } else { "warm" },
            double.state().total_requests()
        );
        runs.push(Run {
            secs,
            users: snap.users.len(),
            requests,
            http: double.state().total_requests(),
        });
        last = snap;
    }
    Ok((runs, last))
}

/// The warm runs' times, sorted, and their median.
fn warm_times(runs: &[Run]) -> (Vec<f64>, f64) {
    let mut warm: Vec<f64> = runs[1..].iter().map(|r| r.secs).collect();
    warm.sort_by(f64::total_cmp);
    let median = warm[warm.len() / 2];
    (warm, median)
}

/// The snapshot holds every group, membership and eligible user of the tenant.
fn check(tenant: &Directory, snap: &Directory) -> anyhow::Result<()> {
    for (id, g) in &tenant.groups {
        let Some(s) = snap.groups.get(id) else {
            bail!("group {id} missing from the snapshot");
        };
        let mut want = g.members.clone();
        let mut got = s.members.clone();
        want.sort();
        got.sort();
        if want != got {
            bail!(
                "group {id}: {} members read, {} expected",
                got.len(),
                want.len()
            );
        }
        if s.eligible.len() != g.eligible.len() {
            bail!("group {id}: eligibility differs");
        }
    }
    let referenced = tenant
        .groups
        .values()
        .flat_map(|g| g.members.iter().chain(g.eligible.iter()))
        .collect::<std::collections::BTreeSet<_>>();
    if snap.users.len() != referenced.len() {
        bail!(
            "{} users read, {} expected",
            snap.users.len(),
            referenced.len()
        );
    }
    Ok(())
}
