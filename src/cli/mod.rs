//! The command line: clap arguments, and the dispatch to each command.
//!
//! Exit codes for every command: 0 success; 1 the command ran but some operations failed (each
//! reported); 2 usage, config or fatal error, with one message on stderr naming the file, key or
//! value at fault. Human output goes to stdout; `--json` puts machine output on stdout instead.
//!
//! The commands live beside this file: `wiring` (config → source, apps), `serve` (`run`,
//! `sandbox`), `sync_now`, `client` (the HTTP client of a running service: `activate`, the
//! hand-over), `inspect` (`status`, `check-config`) and `render` (what is printed).

mod client;
mod inspect;
mod render;
mod serve;
mod sync_now;
mod wiring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use wiring::{build_apps, source_and_poll, source_of};

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
        /// Read every managed object back from the app first and repair what differs
        /// (drift: edited users, changed memberships, members added in the app).
        #[arg(long)]
        verify: bool,
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
        /// Why the privilege is needed (at most 1,000 characters); stored and shown by status.
        #[arg(long, value_name = "TEXT")]
        justification: Option<String>,
        /// The ticket the activation serves (at most 100 characters).
        #[arg(long, value_name = "TICKET")]
        ticket_number: Option<String>,
        /// The system that ticket lives in, e.g. ServiceNow (at most 100 characters).
        #[arg(long, value_name = "SYSTEM")]
        ticket_system: Option<String>,
    },
    /// Per app: the last cycle report, activations, failing objects and managed objects.
    Status {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Load and validate the config and the source file; print the resolved apps.
    CheckConfig {
        /// Also contact each app with read-only requests (`/ServiceProviderConfig`,
        /// `/ResourceTypes`, `/Schemas`) and print what it declares.
        #[arg(long)]
        probe: bool,
    },
    /// Serve the built-in in-memory SCIM 2.0 app for trying configs.
    Sandbox {
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: SocketAddr,
        /// Answer each request after this long, like an app across a network (e.g. 50ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        latency: Option<std::time::Duration>,
        /// Add a uniform random part of this to each request's latency (e.g. 10ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        jitter: Option<std::time::Duration>,
        /// Behave like an app without the enterprise User extension: not declared, and a
        /// User write carrying it gets 400.
        #[arg(long)]
        no_enterprise: bool,
        /// Declare this core User attribute but silently not store it, e.g. displayName
        /// (repeatable; not userName, id, active or schemas).
        #[arg(long = "drop-attribute", value_name = "NAME", value_parser = parse_drop_attribute)]
        drop_attributes: Vec<String>,
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
        Command::Demo => crate::demo::run()
            .await
            .map(|ok| if ok { exit::OK } else { exit::FAILED })
            .map_err(|e| Fatal(e.0)),
        Command::SyncNow {
            apps,
            dry_run,
            verify,
            json,
        } => sync_now::run(&config_path, &apps, dry_run, verify, json).await,
        Command::Run => serve::run_service(&config_path).await,
        Command::Activate {
            group,
            user,
            expires_at,
            for_,
            justification,
            ticket_number,
            ticket_system,
        } => {
            let expires_at = expires_at.or_else(|| {
                for_.and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| chrono::Utc::now() + d)
            });
            let audit = client::Audit {
                justification,
                ticket_number,
                ticket_system,
            };
            client::activate(&config_path, group, user, expires_at, audit).await
        }
        Command::Status { json } => inspect::status(&config_path, json).await,
        Command::CheckConfig { probe } => inspect::check_config(&config_path, probe).await,
        Command::Sandbox {
            listen,
            latency,
            jitter,
            no_enterprise,
            drop_attributes,
        } => {
            serve::sandbox(
                listen,
                latency.unwrap_or_default(),
                jitter.unwrap_or_default(),
                no_enterprise,
                &drop_attributes,
            )
            .await
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Fatal(msg)) => {
            eprintln!("scim-sync: {msg}");
            ExitCode::from(exit::FATAL)
        }
    }
}

/// `--drop-attribute`: a core User attribute the sandbox can drop, in its canonical spelling.
fn parse_drop_attribute(s: &str) -> Result<String, String> {
    crate::sandbox::droppable_attribute(s).map(str::to_owned)
}

fn parse_rfc3339(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-11-23T18:00:00Z: {e}"))
}
