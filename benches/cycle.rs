//! The performance benchmark: what an operator feels, on a synthetic tenant.
//!
//! `cargo bench --bench cycle` (release build) measures
//!
//! 1. **planning** at 10k and 100k users (1 % as many groups, every group assigned): the time
//!    of `mapping::desired_for_app` + `plan::plan` for an initial plan (nothing observed), a
//!    steady-state plan (observed equal to desired: the every-40-minutes case) and a plan
//!    after a 1 % day of churn, with the peak heap during each (counted by a
//!    `#[global_allocator]` wrapper around the system allocator, see the `count-alloc`
//!    crate), next to the size of the snapshot and of the observed state;
//! 2. **an initial sync** of 20k users into the built-in sandbox at concurrency 4, through
//!    `Engine::cycle`, with a store in a temporary folder: wall time, requests, requests/s,
//!    users/s; and the sandbox's own **raw rate** for the same mix of requests sent by a plain
//!    `reqwest::Client` at the same concurrency, so that the client's share of the time shows;
//! 3. **a no-change cycle** right after, and **an incremental cycle** after a 1 % churn.
//!
//! It prints a compact table, then the results as markdown (to stdout, or to `--out FILE`).
//!
//! Options (after `--`): `--quick` (2k-user sync, 10k-user plan: a CI-sized run),
//! `--users N` (users in the sync scenario), `--plan-users N[,M…]`, `--concurrency N`,
//! `--seed N`, `--out FILE`. Cargo's own `--bench` flag is accepted and ignored.
//!
//! The figures are loopback figures against an in-memory app: the app's own latency is not
//! in them. See docs/PERFORMANCE.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use scim_sync::config::{AppConfig, Config, Secret};
use scim_sync::engine::{App, AppCycle, CycleOptions, Engine};
use scim_sync::mapping;
use scim_sync::model::{
    Desired, Directory, Observed, ObservedGroup, ObservedUser, Origin, ScimId, SourceId,
};
use scim_sync::plan::{self, MEMBER_BATCH, Policy};
use scim_sync::report::{CycleReport, Outcome, Reason};
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::scim::proto;
use scim_sync::source::MemorySource;
use scim_sync::store::Store;
use scim_sync::synthetic::{self, Churn};

#[global_allocator]
static ALLOC: count_alloc::Counting = count_alloc::Counting::new();

/// Bearer token of the benchmark's sandboxes.
const TOKEN: &str = "bench-token";
/// The SCIM media type.
const SCIM_JSON: &str = "application/scim+json";
/// Share of users touched by the churn of the incremental measurements.
const CHURN: f64 = 0.01;

/// Command-line options.
struct Args {
    quick: bool,
    plan_users: Vec<usize>,
    sync_users: usize,
    concurrency: usize,
    seed: u64,
    out: Option<PathBuf>,
    /// The options given, except `--bench` and `--out`, to print the reproducing command.
    given: Vec<String>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            quick: false,
            plan_users: vec![10_000, 100_000],
            sync_users: 20_000,
            concurrency: 4,
            seed: 2026,
            out: None,
            given: Vec::new(),
        };
        let mut plan_set = false;
        let mut sync_set = false;
        let raw: Vec<String> = std::env::args().skip(1).collect();
        let mut skip_next = false;
        for a in &raw {
            if std::mem::take(&mut skip_next) {
                continue;
            }
            match a.as_str() {
                "--bench" => {}
                "--out" => skip_next = true,
                _ => args.given.push(a.clone()),
            }
        }
        let mut it = raw.into_iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--bench" => {}
                "--quick" => args.quick = true,
                "--users" => {
                    args.sync_users = value("--users")?.parse().context("--users")?;
                    sync_set = true;
                }
                "--plan-users" => {
                    args.plan_users = value("--plan-users")?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<Result<_, _>>()
                        .context("--plan-users: a comma-separated list of numbers")?;
                    plan_set = true;
                }
                "--concurrency" => {
                    args.concurrency = value("--concurrency")?.parse().context("--concurrency")?;
                }
                "--seed" => args.seed = value("--seed")?.parse().context("--seed")?,
                "--out" => args.out = Some(PathBuf::from(value("--out")?)),
                "-h" | "--help" => {
                    println!(
                        "cargo bench --bench cycle [-- --quick] [--users N] [--plan-users N,M] \
                         [--concurrency N] [--seed N] [--out FILE]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        if args.quick {
            if !plan_set {
                args.plan_users = vec![10_000];
            }
            if !sync_set {
                args.sync_users = 2_000;
            }
        }
        if args.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        Ok(args)
    }

    /// The command that reproduces these figures.
    fn command(&self) -> String {
        let mut c = "cargo bench --bench cycle".to_owned();
        if !self.given.is_empty() {
            c.push_str(" -- ");
            c.push_str(&self.given.join(" "));
        }
        c
    }
}

/// Groups generated for `users` users: 1 % of them, at least 50.
fn groups_for(users: usize) -> usize {
    (users / 100).max(50)
}

/// One measured figure.
struct Row {
    section: &'static str,
    metric: String,
    value: String,
    target: Option<(String, bool)>,
}

/// Everything measured, in order.
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    notes: Vec<(&'static str, String)>,
}

impl Results {
    fn add(&mut self, section: &'static str, metric: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            section,
            metric: metric.into(),
            value: value.into(),
            target: None,
        });
    }

    fn check(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        self.rows.push(Row {
            section,
            metric: metric.into(),
            value: value.into(),
            target: Some((target.into(), met)),
        });
    }

    fn note(&mut self, section: &'static str, text: impl Into<String>) {
        self.notes.push((section, text.into()));
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let mut results = Results::default();
    let machine = Machine::detect();
    eprintln!("{}", machine.line());

    for &users in &args.plan_users {
        plan_bench(users, groups_for(users), args.seed, &mut results)?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(sync_bench(&args, &mut results))?;

    let table = table(&results);
    let markdown = markdown(&args, &machine, &results);
    println!("{table}");
    match &args.out {
        Some(path) => {
            std::fs::write(path, &markdown)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("markdown written to {}", path.display());
        }
        None => println!("{markdown}"),
    }
    Ok(())
}

// ------------------------------------------------------------------------------- planning

/// What one planning measurement saw.
struct Measured {
    map: Duration,
    plan: Duration,
    /// Peak heap above what was held before the measurement.
    peak: usize,
    ops: usize,
    held: usize,
}

/// Maps and plans once, timing both steps and tracking the peak heap.
fn measure_plan(dir: &Directory, cfg: &AppConfig, observed: &Observed) -> anyhow::Result<Measured> {
    let policy = Policy {
        deprovision: cfg.deprovision,
        max_deprovisions: cfg.max_deprovisions,
    };
    let base = ALLOC.current();
    ALLOC.reset_peak();
    let t = Instant::now();
    let desired = mapping::desired_for_app(dir, cfg, &[])?;
    let map = t.elapsed();
    let t = Instant::now();
    let plan = plan::plan(&desired.desired, observed, &desired.unmapped, policy);
    let plan_time = t.elapsed();
    let peak = ALLOC.peak().saturating_sub(base);
    let out = Measured {
        map,
        plan: plan_time,
        peak,
        ops: plan.ops.len(),
        held: plan.held.len(),
    };
    drop(plan);
    drop(desired);
    Ok(out)
}

/// The observed state of an app that holds exactly `desired` (as the store would load it
/// after a successful cycle).
fn observed_from(desired: &Desired) -> Observed {
    let mut observed = Observed::default();
    for (n, (id, u)) in desired.users.iter().enumerate() {
        observed.users.insert(
            id.clone(),
            ObservedUser {
                scim_id: ScimId::new(format!("00000000-0000-4000-8000-{n:012x}")),
                origin: Origin::Created,
                attrs: u.attrs.clone(),
            },
        );
    }
    for (n, (id, g)) in desired.groups.iter().enumerate() {
        observed.groups.insert(
            id.clone(),
            ObservedGroup {
                scim_id: ScimId::new(format!("00000000-0000-4000-9000-{n:012x}")),
                origin: Origin::Created,
                display_name: g.display_name.clone(),
                members: g.members.clone(),
            },
        );
    }
    observed
}

fn plan_bench(users: usize, groups: usize, seed: u64, results: &mut Results) -> anyhow::Result<()> {
    const SECTION: &str = "plan";
    let label = format!("{}k users, {groups} groups", users / 1000);
    eprintln!("plan: generating {label}…");
    let before = ALLOC.current();
    let t = Instant::now();
    let dir = synthetic::directory(users, groups, seed);
    let generated = t.elapsed();
    let snapshot = ALLOC.current().saturating_sub(before);
    let memberships: usize = dir.groups.values().map(|g| g.members.len()).sum();
    let assigned: Vec<&str> = dir.groups.keys().map(SourceId::as_str).collect();
    let cfg = app_config("http://127.0.0.1:9/scim/v2", &assigned, 4, "plan")?;
    results.add(
        SECTION,
        format!("{label}: snapshot"),
        format!(
            "{} ({memberships} memberships; generated in {})",
            mb(snapshot),
            secs(generated)
        ),
    );

    // (a) Initial: nothing observed.
    let m = measure_plan(&dir, &cfg, &Observed::default())?;
    let time = m.map + m.plan;
    results.check(
        SECTION,
        format!("{label}: initial plan"),
        format!(
            "{} (map {}, plan {}), {} ops",
            secs(time),
            secs(m.map),
            secs(m.plan),
            m.ops
        ),
        "≤ 2 s",
        time <= Duration::from_secs(2),
    );
    results.check(
        SECTION,
        format!("{label}: initial plan, peak heap"),
        format!("{} above the snapshot", mb(m.peak)),
        "≤ 300 MB",
        m.peak <= 300 << 20,
    );

    // (b) Steady state: observed equal to desired.
    let desired = mapping::desired_for_app(&dir, &cfg, &[])?;
    let before = ALLOC.current();
    let observed = observed_from(&desired.desired);
    let observed_size = ALLOC.current().saturating_sub(before);
    drop(desired);
    let m = measure_plan(&dir, &cfg, &observed)?;
    let time = m.map + m.plan;
    results.check(
        SECTION,
        format!("{label}: steady-state plan"),
        format!(
            "{} (map {}, plan {}), {} ops",
            secs(time),
            secs(m.map),
            secs(m.plan),
            m.ops
        ),
        "≤ 2 s, 0 ops",
        time <= Duration::from_secs(2) && m.ops == 0,
    );
    let total = observed_size + m.peak;
    results.check(
        SECTION,
        format!("{label}: steady-state plan, peak heap"),
        format!(
            "{} = observed state {} + mapping and plan {} (snapshot {} not included)",
            mb(total),
            mb(observed_size),
            mb(m.peak),
            mb(snapshot)
        ),
        "≤ 300 MB",
        total <= 300 << 20,
    );

    // (c) After a day of churn.
    let mut churned = dir.clone();
    let churn = synthetic::mutate(&mut churned, CHURN, seed.wrapping_add(1));
    drop(dir);
    let m = measure_plan(&churned, &cfg, &observed)?;
    let time = m.map + m.plan;
    results.check(
        SECTION,
        format!("{label}: plan after 1 % churn"),
        format!(
            "{} (map {}, plan {}), {} ops + {} held ({} changes)",
            secs(time),
            secs(m.map),
            secs(m.plan),
            m.ops,
            m.held,
            churn.total()
        ),
        "≤ 2 s",
        time <= Duration::from_secs(2),
    );
    let total = observed_size + m.peak;
    results.check(
        SECTION,
        format!("{label}: plan after churn, peak heap"),
        format!(
            "{} = observed state {} + mapping and plan {}",
            mb(total),
            mb(observed_size),
            mb(m.peak)
        ),
        "≤ 300 MB",
        total <= 300 << 20,
    );
    Ok(())
}

// ---------------------------------------------------------------------------- sync cycles

/// Groups assigned in the sync scenario: all users, every department, the five largest
/// teams and one PIM group; together they put every user in scope.
fn sync_assignment(dir: &Directory) -> Vec<SourceId> {
    let mut out: Vec<SourceId> = synthetic::find_group(dir, synthetic::ALL_USERS)
        .into_iter()
        .collect();
    out.extend(synthetic::groups_with_prefix(
        dir,
        synthetic::DEPARTMENT_PREFIX,
    ));
    out.extend(
        synthetic::groups_with_prefix(dir, synthetic::TEAM_PREFIX)
            .into_iter()
            .take(5),
    );
    out.extend(
        synthetic::groups_with_prefix(dir, synthetic::PIM_PREFIX)
            .into_iter()
            .take(1),
    );
    out
}

async fn sync_bench(args: &Args, results: &mut Results) -> anyhow::Result<()> {
    const SECTION: &str = "sync";
    let users = args.sync_users;
    let groups = groups_for(users);
    let label = format!("{}k users", users as f64 / 1000.0);
    eprintln!("sync: generating {users} users, {groups} groups…");
    let dir = synthetic::directory(users, groups, args.seed);
    let assigned = sync_assignment(&dir);
    let assigned_str: Vec<&str> = assigned.iter().map(SourceId::as_str).collect();

    let sandbox =
        SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN)).await?;
    let tmp = tempfile::tempdir()?;
    let store = Store::open(&format!(
        "sqlite://{}",
        tmp.path().join("state.db").display()
    ))
    .await?;
    let source = MemorySource::new(dir.clone());
    let engine = Engine::new(Arc::new(source.clone()), store);
    let cfg = app_config(sandbox.base_url(), &assigned_str, args.concurrency, "bench")?;
    let desired = mapping::desired_for_app(&dir, &cfg, &[])?;
    let in_scope = desired.desired.users.len();
    let memberships: usize = desired
        .desired
        .groups
        .values()
        .map(|g| g.members.len())
        .sum();
    let app = App::new(cfg, &Secret::new(TOKEN))?;
    results.add(
        SECTION,
        "scenario",
        format!(
            "{in_scope} users in scope, {} groups assigned, {memberships} memberships; concurrency {}",
            assigned.len(),
            args.concurrency
        ),
    );
    results.note(
        "entra",
        format!("{in_scope} {} {memberships}", assigned.len()),
    );

    // Initial cycle.
    eprintln!("sync: initial cycle…");
    let (report, wall) = timed_cycle(&engine, &app).await?;
    let sandbox_seen = sandbox.state().requests();
    let rate = report.requests as f64 / wall.as_secs_f64();
    results.add(
        SECTION,
        format!("initial sync, {label}: wall time"),
        format!(
            "{} ({} users created, {} groups created, {} members added)",
            secs(wall),
            report.users_created,
            report.groups_created,
            report.members_added
        ),
    );
    results.add(
        SECTION,
        "initial sync: requests",
        format!(
            "{} (sandbox counted {sandbox_seen}); {:.0} requests/s, {:.0} users/s",
            report.requests,
            rate,
            report.users_created as f64 / wall.as_secs_f64()
        ),
    );
    if report.outcome != Outcome::Ok || report.users_created as usize != in_scope {
        bail!(
            "the initial cycle did not provision everything: outcome {}, {} of {in_scope} users, error {:?}, first errors {:?}",
            report.outcome,
            report.users_created,
            report.error,
            report.errors.iter().take(3).collect::<Vec<_>>()
        );
    }

    // No-change cycle.
    eprintln!("sync: no-change cycle…");
    let (report, wall) = timed_cycle(&engine, &app).await?;
    results.check(
        SECTION,
        format!("no-change cycle, {label}"),
        format!("{} requests, {}", report.requests, secs(wall)),
        "0 requests, ≤ 1 s",
        report.requests == 0 && wall <= Duration::from_secs(1),
    );

    // Incremental cycle after a day of churn.
    let mut churn = Churn::default();
    source.update(|d| churn = synthetic::mutate(d, CHURN, args.seed.wrapping_add(1)));
    eprintln!("sync: incremental cycle after {} changes…", churn.total());
    let (report, wall) = timed_cycle(&engine, &app).await?;
    results.add(
        SECTION,
        format!("incremental cycle after 1 % churn, {label}"),
        format!(
            "{} requests, {} ({} changes in the directory: {} created, {} updated, {} disabled, +{} / -{} members, {} held, outcome {})",
            report.requests,
            secs(wall),
            churn.total(),
            report.users_created,
            report.users_updated,
            report.users_disabled,
            report.members_added,
            report.members_removed,
            report.held,
            report.outcome
        ),
    );
    sandbox.shutdown().await;

    // The sandbox's raw rate for the same mix.
    eprintln!("sync: raw sandbox rate…");
    let raw_sandbox =
        SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN)).await?;
    let (sent, raw_wall) =
        raw_rate(&desired.desired, raw_sandbox.base_url(), args.concurrency).await?;
    let counted = raw_sandbox.state().requests();
    raw_sandbox.shutdown().await;
    let raw = sent as f64 / raw_wall.as_secs_f64();
    results.add(
        SECTION,
        "sandbox raw rate (plain reqwest, same mix)",
        format!(
            "{raw:.0} requests/s ({sent} requests in {}; sandbox counted {counted})",
            secs(raw_wall)
        ),
    );
    results.check(
        SECTION,
        "client rate / raw rate",
        format!("{:.0} %", 100.0 * rate / raw),
        "≥ 50 %",
        rate >= 0.5 * raw,
    );
    Ok(())
}

/// Runs one cycle of `app` and times it.
async fn timed_cycle(engine: &Engine, app: &App) -> anyhow::Result<(CycleReport, Duration)> {
    let t = Instant::now();
    let mut run = engine
        .cycle(
            std::slice::from_ref(app),
            CycleOptions {
                reason: Reason::SyncNow,
                dry_run: false,
                progress: false,
            },
        )
        .await;
    let wall = t.elapsed();
    if let Some(e) = run.source_error {
        bail!("source error: {e}");
    }
    let AppCycle { report, .. } = run.apps.pop().context("the cycle returned no report")?;
    Ok((report, wall))
}

/// The mix an initial cycle sends (a lookup then a POST per user and per group, then the
/// member PATCHes in batches of [`MEMBER_BATCH`]), sent by a plain `reqwest::Client` with
/// every body built beforehand. Returns the requests sent and the wall time.
async fn raw_rate(
    desired: &Desired,
    base: &str,
    concurrency: usize,
) -> anyhow::Result<(u64, Duration)> {
    let http = reqwest::Client::new();
    let auth = format!("Bearer {TOKEN}");
    let lookup = |path: &str, attr: &str, value: &str| {
        let filter = proto::eq_filter(attr, value);
        format!(
            "{base}{path}?filter={}&startIndex=1&count=100",
            utf8_percent_encode(&filter, NON_ALPHANUMERIC)
        )
    };
    let users: Vec<(SourceId, String, Vec<u8>)> = desired
        .users
        .values()
        .map(|u| {
            Ok((
                u.source_id.clone(),
                lookup("/Users", "userName", u.user_name()),
                serde_json::to_vec(&proto::user_resource(&u.attrs))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let groups: Vec<(SourceId, String, Vec<u8>)> = desired
        .groups
        .values()
        .map(|g| {
            Ok((
                g.source_id.clone(),
                lookup("/Groups", "displayName", &g.display_name),
                serde_json::to_vec(&proto::group_resource(
                    &g.display_name,
                    g.source_id.as_str(),
                ))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;

    // Lookup + POST, `concurrency` at a time; returns the new resource's id.
    let create = |(sid, lookup_url, body): (SourceId, String, Vec<u8>), post_url: String| {
        let http = http.clone();
        let auth = auth.clone();
        async move {
            http.get(&lookup_url)
                .header(AUTHORIZATION, &auth)
                .header(ACCEPT, SCIM_JSON)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let created = http
                .post(&post_url)
                .header(AUTHORIZATION, &auth)
                .header(ACCEPT, SCIM_JSON)
                .header(CONTENT_TYPE, SCIM_JSON)
                .body(body)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let v: Value = serde_json::from_slice(&created)?;
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .context("created resource without id")?;
            anyhow::Ok((sid, ScimId::new(id)))
        }
    };

    let started = Instant::now();
    let user_ids: std::collections::HashMap<SourceId, ScimId> = futures::stream::iter(users)
        .map(|u| create(u, format!("{base}/Users")))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let group_ids: std::collections::HashMap<SourceId, ScimId> = futures::stream::iter(groups)
        .map(|g| create(g, format!("{base}/Groups")))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let mut patches: Vec<(String, Vec<u8>)> = Vec::new();
    for g in desired.groups.values() {
        let gid = group_ids.get(&g.source_id).context("group not created")?;
        let members: Vec<ScimId> = g
            .members
            .iter()
            .filter_map(|m| user_ids.get(m).cloned())
            .collect();
        for chunk in members.chunks(MEMBER_BATCH) {
            let op = serde_json::json!({"op": "add", "path": "members", "value": proto::member_values(chunk)});
            patches.push((
                format!("{base}/Groups/{gid}"),
                serde_json::to_vec(&proto::patch_body(vec![op]))?,
            ));
        }
    }
    let sent = 2 * (user_ids.len() + group_ids.len()) + patches.len();
    let patched: Vec<anyhow::Result<()>> = futures::stream::iter(patches)
        .map(|(url, body)| {
            let http = http.clone();
            let auth = auth.clone();
            async move {
                http.patch(&url)
                    .header(AUTHORIZATION, &auth)
                    .header(ACCEPT, SCIM_JSON)
                    .header(CONTENT_TYPE, SCIM_JSON)
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    patched.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok((sent as u64, wall))
}

// -------------------------------------------------------------------------------- helpers

/// An app configured from TOML, as a user would write it.
fn app_config(
    base_url: &str,
    groups: &[&str],
    concurrency: usize,
    name: &str,
) -> anyhow::Result<AppConfig> {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"{name}\"\n\
         base_url = \"{base_url}\"\ntoken_env = \"BENCH_TOKEN\"\ngroups = {groups:?}\n\
         concurrency = {concurrency}\nmax_deprovisions = 1000\n"
    );
    let mut cfg = Config::parse(Path::new("bench.toml"), &text)?;
    if cfg.apps.is_empty() {
        bail!("the benchmark config has no app");
    }
    Ok(cfg.apps.remove(0))
}

/// The machine the figures come from.
struct Machine {
    cores: usize,
    cpu: String,
    memory: String,
    profile: &'static str,
}

impl Machine {
    fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = read("/proc/meminfo");
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            memory,
            profile: if cfg!(debug_assertions) {
                "debug (unoptimised: figures are not representative)"
            } else {
                "release (optimised)"
            },
        }
    }

    fn line(&self) -> String {
        format!(
            "machine: {} cores ({}), {} RAM; build: {}",
            self.cores, self.cpu, self.memory, self.profile
        )
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn verdict(target: &Option<(String, bool)>) -> (&str, &str) {
    match target {
        Some((t, true)) => (t.as_str(), "yes"),
        Some((t, false)) => (t.as_str(), "NO"),
        None => ("", ""),
    }
}

/// The compact table printed first.
fn table(results: &Results) -> String {
    let width = results
        .rows
        .iter()
        .map(|r| r.metric.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for r in &results.rows {
        let (target, met) = verdict(&r.target);
        let check = if target.is_empty() {
            String::new()
        } else {
            format!("  [{target}: {met}]")
        };
        let _ = writeln!(
            s,
            "{:<5} {:<width$}  {}{check}",
            r.section, r.metric, r.value
        );
    }
    s
}

/// The results as markdown, with the machine and the reproducing command.
fn markdown(args: &Args, machine: &Machine, results: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(s, "- Command: `{}`", args.command());
    let _ = writeln!(
        s,
        "- Machine: {}",
        machine.line().trim_start_matches("machine: ")
    );
    let _ = writeln!(s, "- Seed: {}\n", args.seed);
    for (section, title) in [
        ("plan", "Planning (mapping + plan, no IO)"),
        ("sync", "Cycles against the sandbox on loopback"),
    ] {
        let _ = writeln!(s, "### {title}\n");
        let _ = writeln!(s, "| measurement | result | target | met |");
        let _ = writeln!(s, "|---|---|---|---|");
        for r in results.rows.iter().filter(|r| r.section == section) {
            let (target, met) = verdict(&r.target);
            let _ = writeln!(
                s,
                "| {} | {} | {target} | {met} |",
                r.metric,
                r.value.replace('|', "\\|")
            );
        }
        s.push('\n');
    }
    for (section, note) in &results.notes {
        if *section == "entra" {
            let mut parts = note.split(' ').filter_map(|p| p.parse::<f64>().ok());
            if let (Some(u), Some(g), Some(m)) = (parts.next(), parts.next(), parts.next()) {
                let objects = u + g + m;
                let _ = writeln!(
                    s,
                    "Entra's documented initial-cycle estimate for the sync scenario: {u} users + {g} groups + {m} memberships = {objects} objects × 0.01–0.08 min = {:.0}–{:.0} min.\n",
                    objects * 0.01,
                    objects * 0.08
                );
            }
        }
    }
    s
}
