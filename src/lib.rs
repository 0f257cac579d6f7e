//! scim-sync keeps SCIM 2.0 apps in line with an identity directory (Microsoft Entra ID or a
//! JSON directory file).
//!
//! # Layout
//!
//! The modules follow the data flow of one reconcile cycle:
//!
//! - [`config`]: the TOML config, validated; secrets come from named environment variables.
//! - [`source`]: where users and groups come from ([`source::FileSource`], [`source::GraphSource`]); a complete
//!   [`model::Directory`] snapshot or an error, never a partial one.
//! - [`mapping`]: snapshot + app settings → the [`model::Desired`] state of one app (pure).
//! - [`store`]: what each app holds as last confirmed ([`model::Observed`]), reports, failures.
//! - [`plan`]: desired × observed → ordered operations (pure; `Display` is the dry-run output).
//! - [`apply`]: runs a plan against one app in phases and commits what the app confirmed.
//! - [`scim`]: the only module that speaks SCIM (RFC 7643/7644): wire types and the client.
//! - [`http`]: HTTP plumbing shared by `scim` and `source::graph` (retry timing,
//!   `Retry-After`, path escaping); neither SCIM nor Graph.
//! - [`engine`]: one cycle per app: source → mapping → plan → apply → report; and the same
//!   reconcile scoped to one membership for activation pushes and expiries.
//! - [`report`]: cycle reports (SPEC §5); [`status`]: what `status` and `/v1/status` show.
//! - [`service`]: `run`: the engine kept running; it owns activation intake, expiry, the
//!   limiter and leases. Its [`drive`]rs (schedule, PIM poller) get narrow handles;
//!   [`activation`] is the intake's contract; [`admin`]: its HTTP face; [`metrics`]:
//!   Prometheus names.
//! - [`clock`]: wall time as a parameter; [`locks`]: locks that survive a panic elsewhere;
//!   [`stdout`]: command output that ends quietly when the reader goes away (`out!`).
//! - [`cli`], [`demo`]: the commands; [`sandbox`]: the built-in in-memory SCIM app.
//!
//! Test doubles (synthetic directories, the in-process Microsoft Graph) live in the dev-only crate
//! `scim-sync-testkit` (`crates/testkit`), not in the product.
//!
//! See ARCHITECTURE.md for the invariants.

/// `println!` for a command's output: ends the command with exit 0 when stdout's reader
/// went away, instead of panicking (see [`stdout`]).
macro_rules! out {
    () => {
        $crate::stdout::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout::line(format_args!($($arg)*))
    };
}

pub mod activation;
pub mod admin;
pub mod apply;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod drive;
pub mod engine;
pub mod http;
pub mod locks;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod report;
pub mod sandbox;
pub mod scim;
pub mod service;
pub mod source;
pub mod status;
pub mod stdout;
pub mod store;
