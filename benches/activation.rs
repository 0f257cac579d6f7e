//! The activation benchmark: how fast a PIM activation reaches the app, how many the service
//! sustains, and what an idle service costs.
//!
//! `cargo bench --bench activation` (release build) runs a real service (`Service::start` and
//! its admin HTTP on loopback, the same code as `scim-sync run`) over the built-in sandbox as
//! the app, and a `reqwest` client posting to `POST /v1/activations` as PIM would:
//!
//! 1. **latency**: one app, activations sent one after the other for distinct eligible users
//!    (each push creates the user in the app and PATCHes it into the group, as for a user
//!    the app has never seen), the limiter raised out of the way. Reported: the service's
//!    own figure (webhook received → app confirmed the PATCH, the `latency_ms` of the answer
//!    and of the `scim_sync_activation_latency_seconds` histogram) and the client's round
//!    trip, p50 / p99 / max;
//! 2. **throughput**: 50 apps, each with its own PIM group, activations spread over the apps
//!    by 32 concurrent webhook clients, limiters raised out of the way: activations and
//!    confirmed pushes per second;
//! 3. **limiters**: the same 50 apps at the default `push_limit` (5 per 10 s), a burst of 8
//!    activations per app at once: how many were pushed and deferred, how long the answers
//!    took, and the next cycle applying the deferred ones;
//! 4. **idle memory** of the service with those 50 apps after its start-up cycles: heap in
//!    use (a counting global allocator) and the process's resident set;
//! 5. **PIM detection**: the service with the Graph source over the in-process Graph double
//!    and the PIM poller every 2 s; activated instances appear at spread moments of the
//!    interval, measured from their appearance to the app holding the member (target: the
//!    interval + 1 s).
//!
//! Options (after `--`): `--quick` (fewer activations: a CI-sized run), `--out FILE` (the
//! markdown results; stdout otherwise). See docs/PERFORMANCE.md.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;

use scim_sync::activation::{Accepted, Outcome};
use scim_sync::config::{Config, Secret};
use scim_sync::drive::poller::PimPoll;
use scim_sync::engine::{App, Engine};
use scim_sync::model::{Directory, SourceGroup, SourceId};
use scim_sync::report::Reason;
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::service::{Options, Service, TickSource};
use scim_sync::source::{GraphSource, MemorySource, Source};
use scim_sync::store::Store;
use scim_sync_testkit::graph_double::{DoubleState, GraphDouble};
use scim_sync_testkit::synthetic;

// Shared with the other benchmarks, which use the rest of it.
#[allow(dead_code)]
mod common;
use common::{Machine, log_from_env, mb};

#[global_allocator]
static ALLOC: count_alloc::Counting = count_alloc::Counting::new();

/// Bearer token of the sandbox.
const TOKEN: &str = "bench-token";
/// Bearer token of the webhook.
const WEBHOOK_TOKEN: &str = "bench-webhook-token";
/// Apps in the throughput, limiter and memory scenarios.
const APPS: usize = 50;
/// Concurrent webhook clients in the throughput scenario.
const CLIENTS: usize = 32;
/// A `push_limit` that never binds, for the scenarios that measure the service itself.
const UNLIMITED: &str = "push_limit = { burst = 100000, per = \"1s\" }";

struct Args {
    quick: bool,
    out: Option<String>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            quick: false,
            out: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => args.quick = true,
                "--out" => args.out = Some(it.next().context("--out needs a file")?),
                "--bench" => {}
                other => bail!("unknown option {other}"),
            }
        }
        Ok(args)
    }
}

/// A directory with `groups` PIM groups `g-pim-{i}`, each with `per_group` eligible users of
/// its own (`u-{i}-{j}`) and no standing member.
fn directory(groups: usize, per_group: usize) -> Directory {
    let mut d = Directory::default();
    for i in 0..groups {
        let gid = SourceId::new(format!("g-pim-{i}"));
        let mut eligible = Vec::new();
        for j in 0..per_group {
            let id = SourceId::new(format!("u-{i}-{j}"));
            d.users.insert(id.clone(), synthetic::user(&id));
            eligible.push(id);
        }
        d.groups.insert(
            gid.clone(),
            SourceGroup {
                id: gid,
                display_name: format!("PIM group {i}"),
                members: Vec::new(),
                eligible,
            },
        );
    }
    d
}

/// A running service over the sandbox: app `app-{i}` has group `g-pim-{i}`.
struct Running {
    svc: Service,
    url: String,
    http: reqwest::Client,
    sandbox: SandboxHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<usize>>,
    _state: tempfile::TempDir,
}

async fn start(apps: usize, per_group: usize, push_limit: &str) -> anyhow::Result<Running> {
    let source = Arc::new(MemorySource::new(directory(apps, per_group)));
    start_over(apps, source, None, push_limit).await
}

/// [`start`] over any source, with an optional PIM poller.
async fn start_over(
    apps: usize,
    source: Arc<dyn Source>,
    pim: Option<PimPoll>,
    push_limit: &str,
) -> anyhow::Result<Running> {
    let sandbox = SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
        .await
        .context("sandbox")?;
    let state = tempfile::tempdir()?;
    let mut text = format!(
        "[service]\nstate = \"sqlite://{}\"\n\n[source]\nkind = \"file\"\npath = \"unused.json\"\n",
        state.path().join("state.db").display()
    );
    for i in 0..apps {
        write!(
            text,
            "\n[[apps]]\nname = \"app-{i}\"\nbase_url = \"{}\"\ntoken_env = \"UNUSED\"\ngroups = [\"g-pim-{i}\"]\n{push_limit}\n",
            sandbox.base_url()
        )?;
    }
    let cfg = Config::parse(Path::new("activation-bench.toml"), &text)?;
    let store = Store::open(cfg.service.state_url()?.expose()).await?;
    let engine = Engine::new(source, store);
    let app_list = cfg
        .apps
        .iter()
        .map(|a| Ok(App::new(a.clone(), &Secret::new(TOKEN))?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let svc = Service::start(
        cfg,
        app_list,
        engine,
        Secret::new(WEBHOOK_TOKEN),
        Options {
            ticks: TickSource::Tokio,
            startup_cycle: false,
            pim,
            ..Options::default()
        },
    )
    .await?;
    // The start-up cycles create the (empty) groups; run them to the end, as `run` would be
    // settled before the first activation arrives.
    let settled = svc.cycles(None, Reason::Startup, true).await;
    let reports = settled.apps.unwrap_or_default();
    ensure!(
        reports.len() == apps && sandbox.state().group_count() == apps,
        "start-up cycles: {} reports, the app holds {} groups",
        reports.len(),
        sandbox.state().group_count()
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}/v1/activations", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(scim_sync::admin::serve(
        svc.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(10),
    ));
    Ok(Running {
        svc,
        url,
        http: reqwest::Client::new(),
        sandbox,
        stop,
        server,
        _state: state,
    })
}

impl Running {
    /// Posts one activation; the answer and the client's round trip.
    async fn activate(&self, group: &str, user: &str) -> anyhow::Result<(Accepted, Duration)> {
        let t = Instant::now();
        let answer = self
            .http
            .post(&self.url)
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&json!({"group_id": group, "user_id": user}))
            .send()
            .await?;
        let status = answer.status();
        let body = answer.text().await?;
        ensure!(status.as_u16() == 202, "webhook answered {status}: {body}");
        Ok((serde_json::from_str(&body)?, t.elapsed()))
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let abandoned = self.server.await??;
        ensure!(
            abandoned == 0,
            "{abandoned} operations abandoned at shutdown"
        );
        self.sandbox.shutdown().await;
        Ok(())
    }
}

/// Quantiles of a sample, in milliseconds: p50, p99, max.
fn quantiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

#[derive(Default)]
struct Results {
    latency_n: usize,
    service_ms: (f64, f64, f64),
    round_trip_ms: (f64, f64, f64),
    throughput_n: usize,
    throughput_secs: f64,
    limiter_pushed: usize,
    limiter_deferred: usize,
    limiter_answer_ms: (f64, f64, f64),
    limiter_applied: u64,
    limiter_cycle_secs: f64,
    idle_heap: usize,
    idle_rss_kb: u64,
    poll_every: Duration,
    poll_n: usize,
    poll_ms: (f64, f64, f64),
}

async fn latency(n: usize, r: &mut Results) -> anyhow::Result<()> {
    let run = start(1, n, UNLIMITED).await?;
    let (mut service, mut round_trip) = (Vec::new(), Vec::new());
    for j in 0..n {
        let (answer, took) = run.activate("g-pim-0", &format!("u-0-{j}")).await?;
        let app = answer.apps.first().context("an answer without apps")?;
        ensure!(app.outcome == Outcome::Pushed, "activation {j}: {app:?}");
        service.push(app.latency_ms.context("a push without latency")?);
        round_trip.push(took.as_secs_f64() * 1e3);
    }
    ensure!(
        run.sandbox.state().user_count() == n,
        "the app holds {} users, not {n}",
        run.sandbox.state().user_count()
    );
    r.latency_n = n;
    r.service_ms = quantiles(service);
    r.round_trip_ms = quantiles(round_trip);
    run.stop().await
}

async fn throughput(per_app: usize, r: &mut Results) -> anyhow::Result<()> {
    let run = Arc::new(start(APPS, per_app, UNLIMITED).await?);
    let jobs: Vec<(String, String)> = (0..per_app)
        .flat_map(|j| (0..APPS).map(move |i| (format!("g-pim-{i}"), format!("u-{i}-{j}"))))
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(jobs.into_iter()));
    let t = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (run, queue) = (run.clone(), queue.clone());
        clients.spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .next();
                let Some((g, u)) = next else {
                    return anyhow::Ok(());
                };
                let (answer, _) = run.activate(&g, &u).await?;
                ensure!(
                    answer.apps.iter().all(|a| a.outcome == Outcome::Pushed),
                    "{g}/{u}: {:?}",
                    answer.apps
                );
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    r.throughput_secs = t.elapsed().as_secs_f64();
    r.throughput_n = per_app * APPS;
    let run = Arc::into_inner(run).context("clients still hold the service")?;
    run.stop().await
}

async fn limiters(r: &mut Results) -> anyhow::Result<()> {
    let before = ALLOC.current();
    let run = Arc::new(start(APPS, 8, "").await?);
    r.idle_heap = ALLOC.current().saturating_sub(before);
    r.idle_rss_kb = rss_kb();

    let mut answers = tokio::task::JoinSet::new();
    for i in 0..APPS {
        for j in 0..8 {
            let run = run.clone();
            answers.spawn(async move {
                run.activate(&format!("g-pim-{i}"), &format!("u-{i}-{j}"))
                    .await
            });
        }
    }
    let mut took = Vec::new();
    while let Some(done) = answers.join_next().await {
        let (answer, t) = done??;
        for a in &answer.apps {
            match a.outcome.as_str() {
                "pushed" => r.limiter_pushed += 1,
                _ => r.limiter_deferred += 1,
            }
        }
        took.push(t.as_secs_f64() * 1e3);
    }
    r.limiter_answer_ms = quantiles(took);
    let t = Instant::now();
    let started = run.svc.cycles(None, Reason::SyncNow, true).await;
    r.limiter_cycle_secs = t.elapsed().as_secs_f64();
    r.limiter_applied = started
        .apps
        .unwrap_or_default()
        .iter()
        .map(|c| c.deferred_applied)
        .sum();
    let run = Arc::into_inner(run).context("answers still hold the service")?;
    run.stop().await
}

/// PIM activations detected by the poller over the Graph source (the Graph double): each
/// activated instance appears at a random moment of the poll interval; measured from its
/// appearance to the app holding the member.
async fn poller(samples: usize, every: Duration, r: &mut Results) -> anyhow::Result<()> {
    let double = GraphDouble::start(DoubleState::new(directory(1, samples))).await?;
    let cfg_apps = Config::parse(
        Path::new("activation-bench.toml"),
        "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"app-0\"\nbase_url = \"http://127.0.0.1:9/scim/v2\"\ntoken_env = \"UNUSED\"\ngroups = [\"g-pim-0\"]\n",
    )?
    .apps;
    let graph = Arc::new(GraphSource::new(
        &double.config("UNUSED"),
        GraphDouble::secret(),
        &cfg_apps,
    )?);
    let pim = PimPoll {
        feed: graph.clone(),
        every,
    };
    let run = start_over(1, graph, Some(pim), UNLIMITED).await?;
    let held = |run: &Running| {
        run.sandbox
            .state()
            .groups()
            .first()
            .and_then(|g| g["members"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let mut instances = Vec::new();
    let mut took = Vec::new();
    let end = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for j in 0..samples {
        // A random moment within the interval (deterministic spread: golden-ratio steps).
        let offset = every.mul_f64((j as f64 * 0.618_034).fract());
        tokio::time::sleep(offset).await;
        instances.push(json!({
            "id": format!("g-pim-0_member_u-0-{j}"), "groupId": "g-pim-0",
            "principalId": format!("u-0-{j}"), "accessId": "member",
            "assignmentType": "Activated", "memberType": "Direct",
            "startDateTime": "2026-12-02T09:00:00Z", "endDateTime": end,
        }));
        double.state().set_assignments(instances.clone());
        let t = Instant::now();
        while held(&run) < j + 1 {
            ensure!(
                t.elapsed() < every * 3 + Duration::from_secs(5),
                "activation {j} was not detected within {:?}",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    r.poll_every = every;
    r.poll_n = samples;
    r.poll_ms = quantiles(took);
    run.stop().await
}

/// The process's resident set (VmRSS), in KiB.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn markdown(args: &Args, machine: &Machine, r: &Results) -> String {
    let ms = |(p50, p99, max): (f64, f64, f64)| format!("{p50:.1} / {p99:.1} / {max:.1} ms");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- Command: `cargo bench --bench activation{}`",
        if args.quick { " -- --quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "- Machine: {}",
        machine.line().trim_start_matches("machine: ")
    );
    let _ = writeln!(s, "\n| Measure | Result |\n|---|---|");
    let _ = writeln!(
        s,
        "| Activation → app confirmed, service side (p50 / p99 / max), {} sequential activations, each creating the user and PATCHing the member | {} |",
        r.latency_n,
        ms(r.service_ms)
    );
    let _ = writeln!(
        s,
        "| Webhook round trip seen by the caller (p50 / p99 / max) | {} |",
        ms(r.round_trip_ms)
    );
    let _ = writeln!(
        s,
        "| Sustained, {APPS} apps, {CLIENTS} concurrent callers, limiters out of the way | {} activations in {:.2} s = {:.0} activations/s (each one push confirmed) |",
        r.throughput_n,
        r.throughput_secs,
        r.throughput_n as f64 / r.throughput_secs
    );
    let _ = writeln!(
        s,
        "| Burst of 8 per app, {APPS} apps, default `push_limit` 5 per 10 s | {} pushed, {} deferred; answers p50 / p99 / max {} |",
        r.limiter_pushed,
        r.limiter_deferred,
        ms(r.limiter_answer_ms)
    );
    let _ = writeln!(
        s,
        "| The next cycle of those {APPS} apps | {} deferred activations applied in {:.2} s |",
        r.limiter_applied, r.limiter_cycle_secs
    );
    let _ = writeln!(
        s,
        "| PIM activation detected by the poller over the Graph source (double), `pim_poll_interval` = {}, {} activations appearing at spread moments of the interval: appearance → app holds the member (p50 / p99 / max) | {} (target: ≤ interval + 1 s = {:.0} ms) |",
        humantime::format_duration(r.poll_every),
        r.poll_n,
        ms(r.poll_ms),
        (r.poll_every + Duration::from_secs(1)).as_secs_f64() * 1e3
    );
    let _ = writeln!(
        s,
        "| Idle service with {APPS} apps after its start-up cycles | {} heap in use; process resident set {} (includes the in-process sandbox and the benchmark) |",
        mb(r.idle_heap),
        mb(r.idle_rss_kb as usize * 1024)
    );
    s
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    log_from_env();
    let machine = Machine::detect();
    eprintln!("{}", machine.line());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut r = Results::default();
    let (n, per_app) = if args.quick { (200, 10) } else { (2000, 40) };
    runtime.block_on(async {
        // Memory first, before the other scenarios have grown the heap's high-water mark.
        eprintln!("limiters and idle memory: {APPS} apps");
        limiters(&mut r).await?;
        eprintln!("latency: {n} activations");
        latency(n, &mut r).await?;
        eprintln!(
            "throughput: {} activations over {APPS} apps",
            per_app * APPS
        );
        throughput(per_app, &mut r).await?;
        let samples = if args.quick { 5 } else { 20 };
        eprintln!("poller: {samples} activations, polled every 2 s");
        poller(samples, Duration::from_secs(2), &mut r).await
    })?;
    ensure!(
        r.poll_ms.2 <= (r.poll_every + Duration::from_secs(1)).as_secs_f64() * 1e3,
        "a PIM activation took {:.0} ms to reach the app (target: interval + 1 s)",
        r.poll_ms.2
    );
    ensure!(
        r.limiter_pushed == 5 * APPS && r.limiter_deferred == 3 * APPS,
        "the limiters pushed {} and deferred {} (expected {} and {})",
        r.limiter_pushed,
        r.limiter_deferred,
        5 * APPS,
        3 * APPS
    );
    ensure!(
        r.limiter_applied == 3 * APPS as u64,
        "the next cycle applied {} deferred activations, not {}",
        r.limiter_applied,
        3 * APPS
    );
    let text = markdown(&args, &machine, &r);
    match &args.out {
        Some(path) => std::fs::write(path, &text).with_context(|| format!("writing {path}"))?,
        None => println!("{text}"),
    }
    Ok(())
}
