//! The `scim-sync` binary: parses the command line, sets up logging, and hands over to the
//! library. Everything testable lives in the library; this file only maps results to exit codes.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = scim_sync::cli::Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info,scim_sync=info",
        _ => "debug,hyper=info,reqwest=info,sqlx=warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    scim_sync::cli::run(cli).await
}
