//! The `scim-sync` binary: parses the command line, sets up logging, and hands over to the
//! library. Everything testable lives in the library; this file only maps results to exit codes.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc, not the system allocator: on two cores an initial sync of 20k users spent a
/// seventh of its CPU in glibc's malloc, and its no-change cycle at 100k users ran in less
/// time and memory with jemalloc (the decay setting is in `.cargo/config.toml`; figures in
/// docs/PERFORMANCE.md, "The allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = scim_sync::cli::Cli::parse();
    // The reports already say what failed; logs add detail on request (-v) or RUST_LOG.
    // The service has no report to print: its log is the record of cycles, activations and
    // refusals, so it logs at info by default.
    let service = matches!(cli.command, scim_sync::cli::Command::Run);
    let default = match cli.verbose {
        0 if service => "warn,scim_sync=info",
        0 => "error",
        1 => "info,scim_sync=info",
        _ => "debug,hyper=info,reqwest=info,sqlx=warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    scim_sync::cli::run(cli).await
}
