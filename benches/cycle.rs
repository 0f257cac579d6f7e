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
//! `BENCH_LOG=scim_sync=debug` (an `EnvFilter`) logs to stderr with timestamps, to see
//! where the time of a cycle goes.
//!
//! It prints a compact table, then the results as markdown (to stdout, or to `--out FILE`).
//!
//! Options (after `--`): `--quick` (2k-user sync, 10k-user plan, one run each: a CI-sized
//! run), `--users N` (users in the sync scenario), `--plan-users N[,M…]`, `--repeat N`
//! (planning runs per measurement, median reported; default 3), `--only plan|sync`,
//! `--concurrency N`, `--seed N`, `--out FILE`. Cargo's own `--bench` flag is ignored.
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
    AppName, Desired, Directory, Observed, ObservedGroup, ObservedUser, Origin, ScimId, SourceId,
};
use scim_sync::plan::{self, MEMBER_BATCH, Policy};
use scim_sync::report::{CycleReport, Outcome, Reason};
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::scim::proto;
use scim_sync::source::{MemorySource, Source};
use scim_sync::store::{Change, Store};
use scim_sync_testkit::synthetic::{self, Churn};

// Shared with the other benchmarks, which use the rest of it.
#[allow(dead_code)]
mod common;
use common::{Machine, log_from_env, mb, peak_rss};

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
    repeat: usize,
    only: Option<String>,
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
            repeat: 3,
            only: None,
            out: None,
            given: Vec::new(),
        };
        let mut plan_set = false;
        let mut sync_set = false;
        let mut repeat_set = false;
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
                "--repeat" => {
                    args.repeat = value("--repeat")?.parse().context("--repeat")?;
                    repeat_set = true;
                }
                "--only" => match value("--only")?.as_str() {
                    o @ ("plan" | "sync") => args.only = Some(o.to_owned()),
                    o => bail!("--only {o:?}: expected plan or sync"),
                },
                "--out" => args.out = Some(PathBuf::from(value("--out")?)),
                "-h" | "--help" => {
                    println!(
                        "cargo bench --bench cycle [-- --quick] [--users N] [--plan-users N,M] \
                         [--repeat N] [--only plan|sync] [--concurrency N] [--seed N] [--out FILE]"
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
            if !repeat_set {
                args.repeat = 1;
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
    log_from_env();
    let mut results = Results::default();
    let machine = Machine::detect();
    eprintln!("{}", machine.line());

    let run = |part: &str| args.only.as_deref().is_none_or(|o| o == part);
    for &users in args.plan_users.iter().filter(|_| run("plan")) {
        plan_bench(
            users,
            groups_for(users),
            args.seed,
            args.repeat,
            &mut results,
        )?;
    }

    // The whole process, not only the counted heap: allocator overhead, the runtime, the
    // binary (the bench's own generator and sandbox included).
    let rss = |results: &mut Results, when: &str| {
        if let Some(peak) = peak_rss() {
            results.add(
                "process",
                format!("peak RSS of the bench process, {when}"),
                mb(peak),
            );
        }
    };
    if run("plan") {
        rss(&mut results, "after planning");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    if run("sync") {
        runtime.block_on(sync_bench(&args, &mut results))?;
        rss(&mut results, "after the cycles against the sandbox");
    }

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

/// [`measure_plan`] `repeat` times: the run with the median total time, the largest peak,
/// and the first run's time (a long-running service plans with a warm heap; the first run
/// also pays for growing it).
fn measure_plan_n(
    dir: &Directory,
    cfg: &AppConfig,
    observed: &Observed,
    repeat: usize,
) -> anyhow::Result<(Measured, Duration)> {
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(measure_plan(dir, cfg, observed)?);
    }
    let first = runs.first().map_or(Duration::ZERO, |m| m.map + m.plan);
    let peak = runs.iter().map(|m| m.peak).max().unwrap_or(0);
    runs.sort_by_key(|m| m.map + m.plan);
    let mut median = runs.swap_remove(runs.len() / 2);
    median.peak = peak;
    Ok((median, first))
}

/// How a planning time is shown: the median, and the first run when it differs.
fn plan_time(m: &Measured, first: Duration, repeat: usize) -> String {
    let time = m.map + m.plan;
    if repeat > 1 {
        format!(
            "{} (map {}, plan {}; median of {repeat}, first run {})",
            secs(time),
            secs(m.map),
            secs(m.plan),
            secs(first)
        )
    } else {
        format!(
            "{} (map {}, plan {})",
            secs(time),
            secs(m.map),
            secs(m.plan)
        )
    }
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

fn plan_bench(
    users: usize,
    groups: usize,
    seed: u64,
    repeat: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
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
    let (m, first) = measure_plan_n(&dir, &cfg, &Observed::default(), repeat)?;
    let time = m.map + m.plan;
    results.check(
        SECTION,
        format!("{label}: initial plan"),
        format!("{}, {} ops", plan_time(&m, first, repeat), m.ops),
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
    let (m, first) = measure_plan_n(&dir, &cfg, &observed, repeat)?;
    let time = m.map + m.plan;
    results.check(
        SECTION,
        format!("{label}: steady-state plan"),
        format!("{}, {} ops", plan_time(&m, first, repeat), m.ops),
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
    let (m, first) = measure_plan_n(&churned, &cfg, &observed, repeat)?;
    let time = m.map + m.plan;
    results.check(
        SECTION,
        format!("{label}: plan after 1 % churn"),
        format!(
            "{}, {} ops + {} held ({} changes)",
            plan_time(&m, first, repeat),
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

/// A sandbox, a store in a temporary folder, a memory source and an engine over them.
struct World {
    sandbox: SandboxHandle,
    source: MemorySource,
    engine: Engine,
    app: App,
    _tmp: tempfile::TempDir,
}

impl World {
    async fn new(dir: &Directory, assigned: &[&str], concurrency: usize) -> anyhow::Result<World> {
        let sandbox =
            SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
                .await?;
        let tmp = tempfile::tempdir()?;
        let store = Store::open(&format!(
            "sqlite://{}",
            tmp.path().join("state.db").display()
        ))
        .await?;
        let source = MemorySource::new(dir.clone());
        let engine = Engine::new(Arc::new(source.clone()), store);
        let cfg = app_config(sandbox.base_url(), assigned, concurrency, "bench")?;
        let app = App::new(cfg, &Secret::new(TOKEN))?;
        Ok(World {
            sandbox,
            source,
            engine,
            app,
            _tmp: tmp,
        })
    }
}

/// Watches a sandbox's request counter and records the stretches of at least
/// [`IdleProbe::MIN`] during which no request arrived: the client was busy elsewhere
/// (mapping, the store, its own bookkeeping).
struct IdleProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl IdleProbe {
    const MIN: Duration = Duration::from_millis(50);

    fn start(state: SandboxState) -> IdleProbe {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut stretches = Vec::new();
            let mut count = state.requests();
            let mut since = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let now = state.requests();
                let done = stopped.load(std::sync::atomic::Ordering::Relaxed);
                if now != count || done {
                    let gap = since.elapsed();
                    if gap >= Self::MIN {
                        stretches.push(gap);
                    }
                    count = now;
                    since = Instant::now();
                }
                if done {
                    return stretches;
                }
            }
        });
        IdleProbe { stop, task }
    }

    async fn finish(self) -> anyhow::Result<Vec<Duration>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// The run with the median `key`.
fn median_by<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> anyhow::Result<T> {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid).context("no run")
}

fn list_secs(d: &[Duration]) -> String {
    d.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", ")
}

/// One initial cycle in a fresh world, and the raw run paired with it.
struct InitialRun {
    world: World,
    report: CycleReport,
    wall: Duration,
    idle: Vec<Duration>,
    raw_sent: u64,
    raw_counted: u64,
    raw_wall: Duration,
    /// Client rate / raw rate.
    ratio: f64,
}

async fn sync_bench(args: &Args, results: &mut Results) -> anyhow::Result<()> {
    const SECTION: &str = "sync";
    let users = args.sync_users;
    let groups = groups_for(users);
    let label = format!("{}k users", users as f64 / 1000.0);
    eprintln!("sync: generating {users} users, {groups} groups…");
    let dir = synthetic::directory(users, groups, args.seed);
    let assigned = sync_assignment(&dir);
    let assigned: Vec<&str> = assigned.iter().map(SourceId::as_str).collect();
    let cfg = app_config("http://127.0.0.1:9/scim/v2", &assigned, 4, "bench")?;
    let desired = mapping::desired_for_app(&dir, &cfg, &[])?;
    let in_scope = desired.desired.users.len();
    let memberships: usize = desired
        .desired
        .groups
        .values()
        .map(|g| g.members.len())
        .sum();
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

    // Pairs of runs, each on a fresh sandbox (and store): the raw mix, then an initial cycle.
    // Pairing them exposes both to the same background load on a shared machine; the ratio
    // is taken per pair and the median pair is reported.
    let mut runs = Vec::new();
    let repeat = args.repeat.max(1);
    for i in 0..repeat {
        eprintln!("sync: raw sandbox rate {}/{repeat}…", i + 1);
        let sandbox =
            SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
                .await?;
        let (raw_sent, raw_wall) =
            raw_rate(&desired.desired, sandbox.base_url(), args.concurrency).await?;
        let raw_counted = sandbox.state().requests();
        sandbox.shutdown().await;

        eprintln!("sync: initial cycle {}/{repeat}…", i + 1);
        let world = World::new(&dir, &assigned, args.concurrency).await?;
        let probe = IdleProbe::start(world.sandbox.state().clone());
        let (report, wall) = timed_cycle(&world.engine, &world.app).await?;
        let idle = probe.finish().await?;
        if report.outcome != Outcome::Ok || report.users_created as usize != in_scope {
            bail!(
                "the initial cycle did not provision everything: outcome {}, {} of {in_scope} users, error {:?}, first errors {:?}",
                report.outcome,
                report.users_created,
                report.error,
                report.errors.iter().take(3).collect::<Vec<_>>()
            );
        }
        let ratio = (report.requests as f64 / wall.as_secs_f64())
            / (raw_sent as f64 / raw_wall.as_secs_f64());
        runs.push(InitialRun {
            world,
            report,
            wall,
            idle,
            raw_sent,
            raw_counted,
            raw_wall,
            ratio,
        });
    }
    let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    let raw_walls: Vec<Duration> = runs.iter().map(|r| r.raw_wall).collect();
    let ratios: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.0} %", 100.0 * r.ratio))
        .collect();
    let InitialRun {
        world,
        report,
        wall,
        idle,
        raw_sent,
        raw_counted,
        raw_wall,
        ratio,
    } = median_by(runs, |r| r.ratio)?;
    let sandbox_seen = world.sandbox.state().requests();
    let rate = report.requests as f64 / wall.as_secs_f64();
    let raw = raw_sent as f64 / raw_wall.as_secs_f64();
    let idle_total: Duration = idle.iter().sum();
    let busy = wall.saturating_sub(idle_total);
    let rate_sending = report.requests as f64 / busy.as_secs_f64();
    results.add(
        SECTION,
        format!("initial sync, {label}: wall time"),
        format!(
            "{} (runs: {}); {} users created, {} groups created, {} members added",
            secs(wall),
            list_secs(&walls),
            report.users_created,
            report.groups_created,
            report.members_added
        ),
    );
    results.add(
        SECTION,
        "initial sync: requests",
        format!(
            "{} (sandbox counted {sandbox_seen}); {rate:.0} requests/s, {:.0} users/s",
            report.requests,
            report.users_created as f64 / wall.as_secs_f64()
        ),
    );
    results.add(
        SECTION,
        "initial sync: sandbox idle (no request for ≥ 50 ms)",
        format!(
            "{} in {} stretches ({}); while sending: {rate_sending:.0} requests/s",
            secs(idle_total),
            idle.len(),
            list_secs(&idle)
        ),
    );
    results.add(
        SECTION,
        "sandbox raw rate (plain reqwest, same mix)",
        format!(
            "{raw:.0} requests/s ({raw_sent} requests in {}; runs: {}; sandbox counted {raw_counted})",
            secs(raw_wall),
            list_secs(&raw_walls)
        ),
    );
    results.check(
        SECTION,
        "client rate / raw rate",
        format!(
            "{:.0} % over the whole cycle (runs: {}); {:.0} % while sending",
            100.0 * ratio,
            ratios.join(", "),
            100.0 * rate_sending / raw
        ),
        "≥ 50 %",
        ratio >= 0.5,
    );

    // No-change cycle.
    eprintln!("sync: no-change cycle…");
    let (report, wall) = timed_cycle(&world.engine, &world.app).await?;
    results.check(
        SECTION,
        format!("no-change cycle, {label}"),
        format!("{} requests, {}", report.requests, secs(wall)),
        "0 requests, ≤ 1 s",
        report.requests == 0 && wall <= Duration::from_secs(1),
    );
    results.add(
        SECTION,
        "no-change cycle: where the time goes",
        cycle_breakdown(&world.source, &world.engine, &world.app, wall).await?,
    );

    // Incremental cycle after a day of churn.
    let mut churn = Churn::default();
    world
        .source
        .update(|d| churn = synthetic::mutate(d, CHURN, args.seed.wrapping_add(1)));
    eprintln!("sync: incremental cycle after {} changes…", churn.total());
    let (report, wall) = timed_cycle(&world.engine, &world.app).await?;
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
    world.sandbox.shutdown().await;

    // The store's share: the commits an initial cycle makes, on their own.
    eprintln!("sync: store commits…");
    results.add(
        SECTION,
        "store alone: commits of an initial cycle",
        store_commits(&desired.desired).await?,
    );

    Ok(())
}

/// Times the steps of a cycle that plans nothing, one by one, through the same public
/// functions the engine calls; what remains of `wall` is the engine's store writes (failing
/// objects, the report) and bookkeeping.
async fn cycle_breakdown(
    source: &MemorySource,
    engine: &Engine,
    app: &App,
    wall: Duration,
) -> anyhow::Result<String> {
    let t = Instant::now();
    let dir = source.snapshot().await?;
    let snapshot = t.elapsed();
    let t = Instant::now();
    let desired = mapping::desired_for_app(&dir, &app.cfg, &[])?;
    let map = t.elapsed();
    let t = Instant::now();
    let observed = engine.store().load_observed(&app.cfg.name).await?;
    let load = t.elapsed();
    let t = Instant::now();
    let policy = Policy {
        deprovision: app.cfg.deprovision,
        max_deprovisions: app.cfg.max_deprovisions,
    };
    let plan = plan::plan(&desired.desired, &observed, &desired.unmapped, policy);
    let planned = t.elapsed();
    let t = Instant::now();
    drop((dir, desired, observed, plan));
    let freed = t.elapsed();
    let measured = snapshot + map + load + planned + freed;
    Ok(format!(
        "source snapshot {}, mapping {}, store load {}, plan {}, freeing {}; the rest of the cycle {}",
        secs(snapshot),
        secs(map),
        secs(load),
        secs(planned),
        secs(freed),
        secs(wall.saturating_sub(measured))
    ))
}

/// Times, in a fresh store, the commits an initial cycle of `desired` makes (all users
/// confirmed, then all groups, then all memberships, one transaction each, as apply commits
/// its phases) and loading the result back.
async fn store_commits(desired: &Desired) -> anyhow::Result<String> {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(&format!(
        "sqlite://{}",
        tmp.path().join("state.db").display()
    ))
    .await?;
    let app = AppName::new("store-bench");
    let observed = observed_from(desired);
    let users: Vec<Change> = observed
        .users
        .iter()
        .map(|(id, u)| Change::PutUser(id.clone(), u.clone()))
        .collect();
    let groups: Vec<Change> = observed
        .groups
        .iter()
        .map(|(id, g)| {
            Change::PutGroup(
                id.clone(),
                g.scim_id.clone(),
                g.origin,
                g.display_name.clone(),
            )
        })
        .collect();
    let members: Vec<Change> = desired
        .groups
        .values()
        .flat_map(|g| {
            let ids: Vec<SourceId> = g.members.iter().cloned().collect();
            ids.chunks(MEMBER_BATCH)
                .map(|c| Change::AddMembers(g.source_id.clone(), c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let rows = |c: &[Change]| -> usize {
        c.iter()
            .map(|c| match c {
                Change::AddMembers(_, m) => m.len(),
                _ => 1,
            })
            .sum()
    };
    let (n_users, n_members) = (rows(&users), rows(&members));
    let now = chrono::Utc::now();
    let t = Instant::now();
    store.commit(&app, &users, now).await?;
    let users_time = t.elapsed();
    store.commit(&app, &groups, now).await?;
    let t = Instant::now();
    store.commit(&app, &members, now).await?;
    let members_time = t.elapsed();
    let t = Instant::now();
    let loaded = store.load_observed(&app).await?;
    let load_time = t.elapsed();
    if loaded.users.len() != observed.users.len() {
        bail!("the store gave back {} users", loaded.users.len());
    }
    let per_row = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    Ok(format!(
        "{n_users} users {} ({:.0} µs/row), {n_members} memberships {} ({:.0} µs/row); load_observed {}",
        secs(users_time),
        per_row(users_time, n_users),
        secs(members_time),
        per_row(members_time, n_members),
        secs(load_time)
    ))
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
                verify: false,
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
