//! The push-group benchmark (issue 12): how long a plain membership change in a push group
//! takes from the source to the app, with `scim-sync`'s service in process and the sandbox
//! as the app on loopback.
//!
//! 1. **file source**: the directory file is rewritten the way deployment tools do (a new
//!    file renamed over it), alternately adding and removing a member of the push group;
//!    from the rename to the sandbox holding (or no longer holding) the member.
//! 2. **Graph double, `watch_interval = "2s"`**: a member added to (or removed from) the push
//!    group in the double at a random moment of the interval; from the change to the app.
//! 3. **requests per watch round** at 20 push groups (Graph double, quiet tenant): scoped
//!    `groups/delta` requests per round, and any other Graph request made meanwhile.
//!
//! Options (after `--`): `--runs N` (changes per scenario, default 20), `--out FILE`
//! (markdown; stdout otherwise). Figures and the command: docs/JIT.md.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use scim_sync::config::{Config, Secret};
use scim_sync::drive::poller::PimPoll;
use scim_sync::drive::watch::PushWatch;
use scim_sync::engine::{App, Engine};
use scim_sync::model::{Directory, SourceGroup, SourceId, SourceUser};
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::service::{Options, Service, TickSource};
use scim_sync::source::{FileSource, GraphSource, Source};
use scim_sync::store::Store;
use scim_sync_testkit::graph_double::{DoubleState, GraphDouble};

#[allow(dead_code)]
mod common;
use common::Machine;

const TOKEN: &str = "bench-app-token";

fn main() -> anyhow::Result<()> {
    common::log_from_env();
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let runs: usize = opt("--runs").map_or(Ok(20), |v| v.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut md = String::new();
    writeln!(md, "{}\n", Machine::detect().line())?;
    writeln!(
        md,
        "| scenario | changes | p50 | p99 | max |\n|---|---|---|---|---|"
    )?;
    let file = rt.block_on(file_source(runs))?;
    writeln!(md, "{}", row("file source, rename → app", &file))?;
    let graph = rt.block_on(graph_source(runs))?;
    writeln!(
        md,
        "{}",
        row("Graph double, watch_interval 2s, change → app", &graph)
    )?;
    let (rounds, scoped, other) = rt.block_on(requests_per_round())?;
    writeln!(
        md,
        "\nQuiet tenant, 20 push groups, watch every 1s: {scoped} scoped `groups/delta` requests in {rounds} rounds ({:.2} per round), {other} other Graph requests meanwhile.",
        scoped as f64 / rounds as f64
    )?;
    match opt("--out") {
        Some(path) => std::fs::write(&path, &md).with_context(|| path.clone())?,
        None => print!("{md}"),
    }
    Ok(())
}

fn row(name: &str, took: &[Duration]) -> String {
    let mut v = took.to_vec();
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "| {name} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        v.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(v[v.len() - 1])
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A service over `source` for `cfg`, the sandbox as its app.
async fn service(
    cfg: &Config,
    source: Arc<dyn Source>,
    options: Options,
) -> anyhow::Result<Service> {
    let store = Store::open(cfg.service.state_url()?.expose()).await?;
    let engine = Engine::new(source, store);
    let apps = cfg
        .apps
        .iter()
        .map(|a| App::new(a.clone(), &Secret::new(TOKEN)).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Service::start(
        cfg.clone(),
        apps,
        engine,
        Secret::new("bench-webhook"),
        options,
    )
    .await?)
}

fn config(dir: &Path, source: &str, app_url: &str, groups: &[String]) -> anyhow::Result<Config> {
    let text = format!(
        "[service]\nstate = \"sqlite://{}\"\n\n{source}\n\n[[apps]]\nname = \"app\"\nbase_url = \"{app_url}\"\ntoken_env = \"T\"\ngroups = {groups:?}\npush_groups = {groups:?}\n",
        dir.join("state.db").display(),
    );
    Ok(Config::parse(Path::new("push-groups-bench.toml"), &text)?)
}

/// Whether the sandbox's group `name` has a member whose `externalId` is `user`.
fn holds(state: &SandboxState, name: &str, user: &str) -> bool {
    let users = state.users();
    state
        .groups()
        .into_iter()
        .find(|g| g["displayName"] == name)
        .and_then(|g| g["members"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| users.iter().find(|u| u["id"] == m["value"]))
        .any(|u| u["externalId"] == user)
}

/// Waits until the app does (or does not) hold `user` in `name`; the time it took.
async fn until(
    state: &SandboxState,
    name: &str,
    user: &str,
    held: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while holds(state, name, user) != held {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{user} not {} {name} after 30 s",
            if held { "in" } else { "out of" }
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(started.elapsed())
}

async fn file_source(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let sandbox =
        SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN)).await?;
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("directory.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/directory.json"),
        &file,
    )?;
    let source = format!("[source]\nkind = \"file\"\npath = \"{}\"", file.display());
    let cfg = config(
        tmp.path(),
        &source,
        sandbox.base_url(),
        &["g-it-admins".into()],
    )?;
    let options = Options {
        ticks: TickSource::Tokio,
        ..Options::default()
    };
    let svc = service(&cfg, Arc::new(FileSource::new(&file)), options).await?;
    until(sandbox.state(), "IT Admins", "u-eli", true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut took = Vec::new();
    for i in 0..runs {
        let add = i % 2 == 0;
        let mut v: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
        let members = v["groups"]
            .as_array_mut()
            .and_then(|g| g.iter_mut().find(|g| g["id"] == "g-it-admins"))
            .and_then(|g| g["members"].as_array_mut())
            .context("g-it-admins")?;
        if add {
            members.push("u-alice".into());
        } else {
            members.retain(|m| m != "u-alice");
        }
        let next = file.with_extension("json.new");
        std::fs::write(&next, serde_json::to_vec_pretty(&v)?)?;
        std::fs::rename(&next, &file)?;
        took.push(until(sandbox.state(), "IT Admins", "u-alice", add).await?);
        // Adds come through the limiter (5 per 10 s): stay under it.
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    svc.shutdown(Duration::from_secs(5)).await;
    Ok(took)
}

fn user(id: &str) -> SourceUser {
    let attrs = serde_json::json!({
        "userPrincipalName": format!("{id}@contoso.example"), "displayName": format!("User {id}"),
        "givenName": "User", "surname": id, "mail": format!("{id}@contoso.example"),
        "accountEnabled": true,
    });
    SourceUser {
        id: id.into(),
        attrs: scim_sync::model::attrs_from_json(attrs),
    }
}

/// 50 users; `groups` groups `g0…`, each with users u0..u4.
fn directory(groups: usize) -> Directory {
    let mut d = Directory::default();
    for i in 0..50 {
        let u = user(&format!("u{i}"));
        d.users.insert(u.id.clone(), u);
    }
    for g in 0..groups {
        let id = SourceId::new(format!("g{g}"));
        d.groups.insert(
            id.clone(),
            SourceGroup {
                id,
                display_name: format!("Group g{g}"),
                members: (0..5).map(|i| SourceId::new(format!("u{i}"))).collect(),
                eligible: vec![],
            },
        );
    }
    d
}

/// A service over the Graph double with `groups` push groups watched every `every`.
async fn graph_world(
    groups: usize,
    every: Duration,
) -> anyhow::Result<(SandboxHandle, GraphDouble, Service, tempfile::TempDir)> {
    let sandbox =
        SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN)).await?;
    let double = GraphDouble::start(DoubleState::new(directory(groups))).await?;
    let tmp = tempfile::tempdir()?;
    let names: Vec<String> = (0..groups).map(|g| format!("g{g}")).collect();
    let cfg = config(
        tmp.path(),
        "[source]\nkind = \"file\"\npath = \"unused.json\"",
        sandbox.base_url(),
        &names,
    )?;
    let store = Store::open(cfg.service.state_url()?.expose()).await?;
    let graph = Arc::new(
        GraphSource::new(&double.config("UNUSED"), GraphDouble::secret(), &cfg.apps)?
            .with_delta(Some(store)),
    );
    let options = Options {
        ticks: TickSource::Tokio,
        pim: Some(PimPoll {
            feed: graph.clone(),
            every: Duration::from_secs(3600),
        }),
        watch: Some(PushWatch {
            feed: graph.clone(),
            every,
        }),
        ..Options::default()
    };
    let svc = service(&cfg, graph, options).await?;
    until(sandbox.state(), "Group g0", "u0", true).await?;
    Ok((sandbox, double, svc, tmp))
}

async fn graph_source(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let every = Duration::from_secs(2);
    let (sandbox, double, svc, _tmp) = graph_world(1, every).await?;
    tokio::time::sleep(every * 2).await;
    let mut took = Vec::new();
    for i in 0..runs {
        let add = i % 2 == 0;
        // A moment of the interval chosen by the run number (no RNG: repeatable).
        tokio::time::sleep(Duration::from_millis((i as u64 * 737) % 2000)).await;
        double.state().update(|d| {
            if let Some(g) = d.groups.get_mut(&SourceId::from("g0")) {
                if add {
                    g.members.push("u9".into());
                } else {
                    g.members.retain(|m| m.as_str() != "u9");
                }
            }
        });
        took.push(until(sandbox.state(), "Group g0", "u9", add).await?);
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    svc.shutdown(Duration::from_secs(5)).await;
    Ok(took)
}

async fn requests_per_round() -> anyhow::Result<(u64, u64, u64)> {
    let every = Duration::from_secs(1);
    let (_sandbox, double, svc, _tmp) = graph_world(20, every).await?;
    tokio::time::sleep(every * 2).await;
    let state = double.state();
    let (scoped, total) = (state.requests("groupsDeltaScoped"), state.total_requests());
    let rounds = 10u64;
    tokio::time::sleep(every * rounds as u32).await;
    let scoped = state.requests("groupsDeltaScoped") - scoped;
    let other = state.total_requests() - total - scoped;
    svc.shutdown(Duration::from_secs(5)).await;
    Ok((rounds, scoped, other))
}
