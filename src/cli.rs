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
use crate::engine::{App, CycleOptions, Engine};
use crate::report::{Outcome, Reason};
use crate::source::{FileSource, Source};
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
    /// Per app: the last cycle report, failing objects and managed objects, from the store.
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

/// The source a config names.
pub fn source_of(cfg: &Config) -> Arc<dyn Source> {
    match &cfg.source {
        SourceConfig::File { path } => Arc::new(FileSource::new(path.clone())),
    }
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

async fn sync_now(
    config: &std::path::Path,
    names: &[String],
    dry_run: bool,
    json: bool,
) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let apps = build_apps(&cfg, names)?;
    let store = Store::open(&cfg.service.state).await?;
    let engine = Engine::new(source_of(&cfg), store);
    let run = engine
        .cycle(
            &apps,
            CycleOptions {
                reason: Reason::SyncNow,
                dry_run,
                progress: !json,
            },
        )
        .await;

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

async fn status(config: &std::path::Path, json: bool) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let store = Store::open(&cfg.service.state).await?;
    let mut apps = Vec::new();
    for app in &cfg.apps {
        let last = store.last_report(&app.name).await?;
        let failing = store.failures(&app.name).await?;
        let (users, groups) = store.counts(&app.name).await?;
        // Quarantined: the app's last cycle could change nothing at all (token rejected, app
        // down); it is retried at the next cycle.
        let quarantined = last
            .as_ref()
            .is_some_and(|r| r.outcome == Outcome::Failed && r.error.is_some());
        apps.push(json!({
            "name": app.name.as_str(),
            "last_cycle": last,
            "deferred_activations": [],
            "active_activations": [],
            "failing_objects": failing,
            "quarantined": quarantined,
            "managed_users": users,
            "managed_groups": groups,
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "apps": apps })).unwrap_or_default()
        );
        return Ok(exit::OK);
    }
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
    }
    Ok(exit::OK)
}

async fn check_config(config: &std::path::Path) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let mut problems = Vec::new();
    let dir = match source_of(&cfg).snapshot().await {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(e.to_string());
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
