//! The command line: clap arguments, and each command's run and output.
//!
//! Exit codes for every command: 0 success; 1 the command ran but some operations failed (each
//! reported); 2 usage, config or fatal error, with one message on stderr naming the file, key or
//! value at fault. Human output goes to stdout; `--json` puts machine output on stdout instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::{Config, SourceConfig};
use crate::drive::activation::{Accepted, ActivationRequest};
use crate::drive::lease::{HolderInfo, Leases};
use crate::drive::poller::PimPoll;
use crate::engine::{App, AppCycle, CycleOptions, Engine};
use crate::model::AppName;
use crate::plan::Plan;
use crate::report::{CycleReport, Outcome, Reason};
use crate::service::{Options as ServiceOptions, Service};
use crate::source::{FileSource, GraphSource, Source};
use crate::store::Store;

/// scim-sync: keeps SCIM 2.0 apps in line with Entra ID or a JSON directory.
#[derive(Debug, Parser)]
#[command(name = "scim-sync", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $SCIM_SYNC_CONFIG, else config/scim-sync.toml].
    #[arg(long, global = true, env = "SCIM_SYNC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of SPEC §2.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offline tour: a built-in SCIM app on loopback, synced from config/directory.json.
    Demo,
    /// One full cycle now, for all apps or the named ones, then exit.
    SyncNow {
        /// Only this app (repeatable).
        #[arg(long = "app", value_name = "NAME")]
        apps: Vec<String>,
        /// Print every operation that would be sent; send no write.
        #[arg(long)]
        dry_run: bool,
        /// Print the cycle reports as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The background service: start-up cycle, a full cycle every full_sync_interval,
    /// activation intake and admin HTTP on service.listen. SIGINT/SIGTERM stop it cleanly.
    Run,
    /// Report a PIM activation to the running service; prints the per-app outcome.
    Activate {
        /// Source id of the group.
        #[arg(long, value_name = "ID")]
        group: String,
        /// Source id of the user.
        #[arg(long, value_name = "ID")]
        user: String,
        /// When the activation ends (RFC 3339) [default: now + service.max_activation].
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339, conflicts_with = "for_")]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// How long the activation lasts, e.g. 1h or 30m.
        #[arg(long = "for", id = "for_", value_name = "DURATION", value_parser = crate::config::parse_duration)]
        for_: Option<std::time::Duration>,
    },
    /// Per app: the last cycle report, activations, failing objects and managed objects.
    Status {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Load and validate the config and the source file; print the resolved apps.
    CheckConfig,
    /// Serve the built-in in-memory SCIM 2.0 app for trying configs.
    Sandbox {
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: SocketAddr,
    },
}

/// Exit statuses.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Ran, but some operations failed.
    pub const FAILED: u8 = 1;
    /// Usage, config or fatal error.
    pub const FATAL: u8 = 2;
}

/// A fatal error: printed once on stderr, exit 2.
#[derive(Debug)]
pub struct Fatal(pub String);

impl<E: std::error::Error> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    let result = match cli.command {
        Command::Demo => crate::demo::run().await,
        Command::SyncNow {
            apps,
            dry_run,
            json,
        } => sync_now(&config_path, &apps, dry_run, json).await,
        Command::Run => run_service(&config_path).await,
        Command::Activate {
            group,
            user,
            expires_at,
            for_,
        } => {
            let expires_at = expires_at.or_else(|| {
                for_.and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| chrono::Utc::now() + d)
            });
            activate(&config_path, group, user, expires_at).await
        }
        Command::Status { json } => status(&config_path, json).await,
        Command::CheckConfig => check_config(&config_path).await,
        Command::Sandbox { listen } => sandbox(listen).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Fatal(msg)) => {
            eprintln!("scim-sync: {msg}");
            ExitCode::from(exit::FATAL)
        }
    }
}

/// The source a config names. The Graph source reads its client secret here, at start, and
/// reads the groups assigned to every configured app.
///
/// # Errors
/// [`Fatal`] naming the secret's key when it cannot be read.
pub fn source_of(cfg: &Config) -> Result<Arc<dyn Source>, Fatal> {
    Ok(source_and_poll(cfg, None)?.0)
}

/// The source a config names and, for the Graph source, the PIM poller reading the same
/// tenant every `pim_poll_interval` (service mode). With a `store`, the Graph source reads
/// changes only (delta queries), keeping what it needs to resume in the store; without one
/// every snapshot is a full read.
///
/// # Errors
/// As [`source_of`].
pub fn source_and_poll(
    cfg: &Config,
    store: Option<&Store>,
) -> Result<(Arc<dyn Source>, Option<PimPoll>), Fatal> {
    Ok(match &cfg.source {
        SourceConfig::File { path } => (Arc::new(FileSource::new(path.clone())), None),
        SourceConfig::Graph(g) => {
            let graph = GraphSource::new(g, g.client_secret()?, &cfg.apps)
                .map_err(|e| Fatal(e.to_string()))?;
            let graph = Arc::new(match store {
                Some(store) => graph.with_delta(Some(store.clone())),
                None => graph,
            });
            let poll = PimPoll {
                feed: graph.clone(),
                every: g.pim_poll_interval,
            };
            (graph, Some(poll))
        }
    })
}

/// Builds the apps named in `names` (all when empty), reading their tokens.
///
/// # Errors
/// [`Fatal`] naming an unknown app or a missing token variable.
pub fn build_apps(cfg: &Config, names: &[String]) -> Result<Vec<App>, Fatal> {
    cfg.select_apps(names)?
        .into_iter()
        .map(|a| {
            let token = a.token()?;
            App::new(a.clone(), &token).map_err(Fatal::from)
        })
        .collect()
}

fn parse_rfc3339(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-11-23T18:00:00Z: {e}"))
}

/// The URL a client uses to reach the service's admin HTTP (an unspecified listen address
/// is reached on loopback).
fn service_url(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        _ => format!("http://{listen}"),
    }
}

/// How long a stopping service gives operations and HTTP requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

async fn run_service(config: &std::path::Path) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let token = cfg.service.webhook_token()?;
    let apps = build_apps(&cfg, &[])?;
    let store = Store::open(&cfg.service.state).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.service.listen)
        .await
        .map_err(|e| {
            Fatal(format!(
                "{}: service.listen {}: {e}",
                cfg.path.display(),
                cfg.service.listen
            ))
        })?;
    let addr = listener.local_addr().map_err(Fatal::from)?;
    crate::metrics::install();
    let (source, pim) = source_and_poll(&cfg, Some(&store))?;
    let engine = Engine::new(source, store);
    let interval = cfg.service.full_sync_interval;
    let n = cfg.apps.len();
    let polling = pim.as_ref().map_or(String::new(), |p| {
        format!(
            "; PIM activations polled every {}",
            humantime::format_duration(p.every)
        )
    });
    let options = ServiceOptions {
        pim,
        ..ServiceOptions::default()
    };
    let svc = Service::start(cfg, apps, engine, token, options)
        .await
        .map_err(Fatal::from)?;
    println!(
        "scim-sync run: {n} app(s); admin and webhook on http://{addr}; a full cycle every {}{polling}; SIGINT or SIGTERM stops it",
        humantime::format_duration(interval)
    );
    let left = svc
        .serve(listener, shutdown_signal(), SHUTDOWN_GRACE)
        .await
        .map_err(|e| Fatal(format!("admin HTTP on {addr}: {e}")))?;
    if left > 0 {
        println!(
            "stopped; {left} operation(s) were still running after {} and were abandoned (the next start redoes them)",
            humantime::format_duration(SHUTDOWN_GRACE)
        );
    } else {
        println!("stopped cleanly");
    }
    Ok(exit::OK)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stop signal received; shutting down");
}

async fn activate(
    config: &std::path::Path,
    group: String,
    user: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let token = cfg.service.webhook_token()?;
    let url = format!("{}/v1/activations", service_url(&cfg.service.listen));
    let body = ActivationRequest {
        group_id: group.as_str().into(),
        user_id: user.as_str().into(),
        expires_at,
    };
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.expose())
        .json(&body)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            Fatal(format!(
                "cannot reach the service at {url} (service.listen in {}): is `scim-sync run` running? ({e})",
                cfg.path.display()
            ))
        })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::ACCEPTED {
        let why = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(Fatal(format!(
            "the service refused the activation ({}): {why}",
            status.as_u16()
        )));
    }
    let accepted: Accepted = serde_json::from_str(&text)
        .map_err(|e| Fatal(format!("unexpected answer from {url}: {e}")))?;
    println!(
        "activation {}: user {user} in group {group} until {}",
        accepted.activation_id,
        accepted
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for a in &accepted.apps {
        match (a.outcome.as_str(), a.latency_ms) {
            ("pushed", Some(ms)) => println!("  {}: pushed, the app confirmed in {ms} ms", a.app),
            ("pushed", None) => println!("  {}: pushed, not yet confirmed", a.app),
            (other, _) => println!(
                "  {}: {other}{}",
                a.app,
                a.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        }
    }
    Ok(exit::OK)
}

async fn sync_now(
    config: &std::path::Path,
    names: &[String],
    dry_run: bool,
    json: bool,
) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let apps = build_apps(&cfg, names)?;
    let store = Store::open(&cfg.service.state).await?;
    // A dry run writes nothing, not even the source's delta state.
    let source = source_and_poll(&cfg, (!dry_run).then_some(&store))?.0;
    let engine = Engine::new(source, store.clone());
    let opts = CycleOptions {
        reason: Reason::SyncNow,
        dry_run,
        progress: !json,
    };
    let run = if dry_run {
        // A dry run writes nothing, so it needs no lease.
        engine.cycle(&apps, opts).await
    } else {
        let leases = Leases::new(
            store,
            &HolderInfo::this_process("sync-now", None),
            crate::drive::lease::TTL,
        );
        let (mine, handed) = take_leases(&cfg, &leases, &apps).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let keeper = tokio::spawn(leases.clone().keep(
            mine.iter().map(|a| a.cfg.name.clone()).collect(),
            stop.clone().cancelled_owned(),
        ));
        let mut run = engine.cycle(&mine, opts).await;
        stop.cancel();
        let _ = keeper.await;
        run.apps.extend(handed.into_iter().map(|report| AppCycle {
            report,
            plan: Plan::default(),
        }));
        // Keep the order the apps were asked in.
        run.apps.sort_by_key(|c| {
            apps.iter()
                .position(|a| a.cfg.name.as_str() == c.report.app)
                .unwrap_or(usize::MAX)
        });
        run
    };

    if json {
        let reports: Vec<Value> = run
            .apps
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(&c.report).unwrap_or(Value::Null);
                if dry_run && let Value::Object(m) = &mut v {
                    m.insert(
                        "operations".into(),
                        json!(
                            c.plan
                                .ops
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                        ),
                    );
                    m.insert(
                        "held_operations".into(),
                        json!(
                            c.plan
                                .held
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                        ),
                    );
                }
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "apps": reports })).unwrap_or_default()
        );
    } else {
        for c in &run.apps {
            if dry_run {
                println!(
                    "{}: dry run, {} operation(s) would be sent, nothing was:",
                    c.report.app,
                    c.plan.ops.len()
                );
                for op in &c.plan.ops {
                    println!("  {op}");
                }
                for op in &c.plan.held {
                    println!("  HELD (max_deprovisions): {op}");
                }
            }
            println!("{}", c.report);
            for e in &c.report.errors {
                println!("  failed: {} {}: {}", e.op, e.object, e.error);
            }
            if c.report.held > 0 {
                println!(
                    "  {} disables/deletes were held by max_deprovisions; review them with --dry-run, then raise max_deprovisions for one run if they are intended",
                    c.report.held
                );
            }
        }
    }
    if let Some(e) = run.source_error {
        return Err(Fatal(format!(
            "source read failed, no app was changed: {e}"
        )));
    }
    let any_failed = run
        .apps
        .iter()
        .any(|c| c.report.failed > 0 || c.report.outcome == Outcome::Failed);
    Ok(if any_failed { exit::FAILED } else { exit::OK })
}

/// Takes the lease of every app for this `sync-now`. An app whose lease a running service
/// holds has its cycle handed to that service (`POST /v1/sync?wait=true`); an app another
/// `sync-now` holds is waited for. Returns the apps to run here and the reports of the cycles
/// the service ran. Says on stderr what it did.
async fn take_leases(
    cfg: &Config,
    leases: &Leases,
    apps: &[App],
) -> Result<(Vec<App>, Vec<CycleReport>), Fatal> {
    let names: Vec<AppName> = apps.iter().map(|a| a.cfg.name.clone()).collect();
    let mut waiting = leases.renew(&names).await?;
    let mut handed = Vec::new();
    let services: Vec<(AppName, HolderInfo)> = waiting
        .iter()
        .filter(|(_, who)| who.kind == "run" && who.listen.is_some())
        .cloned()
        .collect();
    if !services.is_empty() {
        let asked: Vec<String> = services.iter().map(|(a, _)| a.to_string()).collect();
        let who = &services[0].1;
        let listen = who.listen.clone().unwrap_or_default();
        match hand_over(cfg, &listen, &asked).await {
            Ok(reports) => {
                for app in &asked {
                    eprintln!(
                        "{app}: the running service holds its lease ({who}); the cycle ran there"
                    );
                }
                waiting.retain(|(a, _)| !asked.contains(&a.to_string()));
                handed = reports;
            }
            Err(e) => {
                eprintln!(
                    "{}: the running service holds the lease ({who}) and the cycle could not be handed to it: {e}; waiting for the lease",
                    asked.join(", ")
                );
            }
        }
    }
    let started = std::time::Instant::now();
    let mut told = std::collections::BTreeSet::new();
    while !waiting.is_empty() {
        for (app, who) in &waiting {
            if told.insert(app.clone()) {
                eprintln!("{app}: waiting for its lease, held by {who}");
            }
            // A live service renews forever: after two lease lifetimes, stop waiting for it.
            if who.kind == "run" && started.elapsed() > leases.ttl() * 2 {
                return Err(Fatal(format!(
                    "app {app}: its lease is held by {who}; hand the cycle to it (set ${} so sync-now can call it) or stop it",
                    cfg.service.webhook_token_env
                )));
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let still: Vec<AppName> = waiting.iter().map(|(a, _)| a.clone()).collect();
        waiting = leases.renew(&still).await?;
        for app in &still {
            if !waiting.iter().any(|(a, _)| a == app) {
                eprintln!("{app}: lease taken after {}s", started.elapsed().as_secs());
            }
        }
    }
    let mine = apps
        .iter()
        .filter(|a| leases.holds(&a.cfg.name))
        .cloned()
        .collect();
    Ok((mine, handed))
}

/// Asks the running service at `listen` to run the cycles of `apps` and waits for them.
async fn hand_over(
    cfg: &Config,
    listen: &str,
    apps: &[String],
) -> Result<Vec<CycleReport>, String> {
    let token = cfg.service.webhook_token().map_err(|e| e.to_string())?;
    let url = format!("{}/v1/sync?wait=true", service_url(listen));
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.expose())
        .json(&json!({ "apps": apps }))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url} answered {}: {}",
            status.as_u16(),
            body["error"].as_str().unwrap_or_default()
        ));
    }
    let reports: Vec<CycleReport> =
        serde_json::from_value(body["apps"].clone()).map_err(|e| format!("{url}: {e}"))?;
    let skipped: Vec<String> = ["busy", "leased_elsewhere"]
        .iter()
        .flat_map(|k| body[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if !skipped.is_empty() {
        return Err(format!("the service could not run {}", skipped.join(", ")));
    }
    Ok(reports)
}

async fn status(config: &std::path::Path, json: bool) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let store = Store::open(&cfg.service.state).await?;
    let all = crate::status::collect(&cfg.apps, &store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return Ok(exit::OK);
    }
    let apps = all["apps"].as_array().cloned().unwrap_or_default();
    println!("state: {}", cfg.service.state);
    for a in &apps {
        println!(
            "{}: {} users and {} groups managed{}",
            a["name"].as_str().unwrap_or_default(),
            a["managed_users"],
            a["managed_groups"],
            if a["quarantined"] == true {
                " (QUARANTINED: last cycle changed nothing)"
            } else {
                ""
            }
        );
        match a["last_cycle"].as_object() {
            None => println!("  no cycle yet"),
            Some(r) => {
                if let Ok(r) =
                    serde_json::from_value::<crate::report::CycleReport>(Value::Object(r.clone()))
                {
                    println!(
                        "  last cycle ({}) {} → {}",
                        r.reason, r.started_at, r.finished_at
                    );
                    println!("  {r}");
                }
            }
        }
        if let Some(fs) = a["failing_objects"].as_array() {
            for f in fs {
                println!(
                    "  failing since {}: {} {} ({} attempts): {}",
                    f["since"].as_str().unwrap_or_default(),
                    f["op"].as_str().unwrap_or_default(),
                    f["object"].as_str().unwrap_or_default(),
                    f["attempts"],
                    f["error"].as_str().unwrap_or_default()
                );
            }
        }
        for (key, label) in [
            ("active_activations", "active"),
            ("deferred_activations", "DEFERRED"),
        ] {
            for act in a[key].as_array().into_iter().flatten() {
                println!(
                    "  {label} activation {}: user {} in group {} until {} ({}{})",
                    act["id"].as_str().unwrap_or_default(),
                    act["user"].as_str().unwrap_or_default(),
                    act["group"].as_str().unwrap_or_default(),
                    to_the_second(act["expires_at"].as_str().unwrap_or_default()),
                    act["state"].as_str().unwrap_or_default(),
                    act["detail"]
                        .as_str()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(exit::OK)
}

async fn check_config(config: &std::path::Path) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let mut problems = Vec::new();
    let dir = match source_of(&cfg) {
        Ok(source) => match source.snapshot().await {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        },
        Err(Fatal(e)) => {
            problems.push(e);
            None
        }
    };
    println!("config: {}", cfg.path.display());
    match (&cfg.source, &dir) {
        (SourceConfig::File { path }, Some(d)) => println!(
            "source: file {} ({} users, {} groups)",
            path.display(),
            d.users.len(),
            d.groups.len()
        ),
        (SourceConfig::File { path }, None) => {
            println!("source: file {} (unreadable)", path.display())
        }
        (SourceConfig::Graph(g), d) => println!(
            "source: graph tenant {} at {} (client {}, secret from {}; {})",
            g.tenant_id,
            g.graph_url,
            g.client_id,
            match &g.client_secret {
                crate::config::SecretFrom::Env(var) => format!("${var}"),
                crate::config::SecretFrom::File(path) => path.display().to_string(),
            },
            match d {
                Some(d) => format!("{} users, {} groups read", d.users.len(), d.groups.len()),
                None => "unreadable".to_owned(),
            }
        ),
    }
    println!("state: {}", cfg.service.state);
    println!(
        "service: listen {}, full sync every {}, webhook token from ${}",
        cfg.service.listen,
        humantime::format_duration(cfg.service.full_sync_interval),
        cfg.service.webhook_token_env
    );
    println!("apps:");
    for app in &cfg.apps {
        let token = match app.token() {
            Ok(_) => "set".to_owned(),
            Err(e) => {
                problems.push(e.to_string());
                "NOT SET".to_owned()
            }
        };
        println!("  {} {}", app.name, app.base_url);
        println!("    token from ${} ({token})", app.token_env);
        println!(
            "    deprovision={} matching={} max_deprovisions={} flatten_nested={} concurrency={} timeout={} push_limit={}/{}",
            match app.deprovision {
                crate::model::Deprovision::Disable => "disable",
                crate::model::Deprovision::Delete => "delete",
            },
            app.matching,
            app.max_deprovisions,
            app.flatten_nested,
            app.concurrency,
            humantime::format_duration(app.timeout),
            app.push_limit.burst,
            humantime::format_duration(app.push_limit.per)
        );
        for g in &app.groups {
            match dir.as_ref().map(|d| d.groups.get(g)) {
                Some(Some(group)) => println!(
                    "    group {g} {:?}: {} members, {} eligible",
                    group.display_name,
                    group.members.len(),
                    group.eligible.len()
                ),
                Some(None) => {
                    problems.push(format!(
                        "{}: apps[{}].groups: group {g} is not in the source",
                        cfg.path.display(),
                        app.name
                    ));
                    println!("    group {g}: NOT IN THE SOURCE");
                }
                None => println!("    group {g}"),
            }
        }
        for (scim, src) in crate::mapping::user_mapping(&app.attributes) {
            if app.attributes.contains_key(&*scim) {
                println!("    attribute {scim} <- {src} (override)");
            }
        }
    }
    if problems.is_empty() {
        println!("ok");
        Ok(exit::OK)
    } else {
        for p in &problems {
            eprintln!("scim-sync: {p}");
        }
        Ok(exit::FATAL)
    }
}

async fn sandbox(listen: SocketAddr) -> Result<u8, Fatal> {
    let state = match std::env::var("SCIM_SYNC_SANDBOX_TOKEN") {
        Ok(t) if !t.is_empty() => crate::sandbox::SandboxState::with_token(t),
        _ => crate::sandbox::SandboxState::new(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Fatal(format!("sandbox --listen {listen}: {e}")))?;
    println!(
        "sandbox SCIM 2.0 app on http://{}/scim/v2 (in memory; {}). Ctrl-C stops it.",
        listener.local_addr().map_err(Fatal::from)?,
        if std::env::var("SCIM_SYNC_SANDBOX_TOKEN").is_ok_and(|t| !t.is_empty()) {
            "bearer token from $SCIM_SYNC_SANDBOX_TOKEN required"
        } else {
            "any bearer token accepted"
        }
    );
    crate::sandbox::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(Fatal::from)?;
    Ok(exit::OK)
}

/// An RFC 3339 time shown to the second (the store keeps nanoseconds); other text unchanged.
fn to_the_second(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at).map_or_else(
        |_| at.to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}
