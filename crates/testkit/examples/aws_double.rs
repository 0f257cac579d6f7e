//! Serves the AWS IAM Identity Center SCIM double (`scim_sync_testkit::aws_double`, written
//! from AWS's developer guide) until Ctrl-C, to try an app with
//! `profile = "aws-identity-center"` by hand (docs/AWS.md):
//!
//! ```sh
//! cargo run -p scim-sync-testkit --example aws_double -- 127.0.0.1:8950
//! ```
//!
//! It prints the SCIM endpoint and the bearer token it accepts. It is a double: it follows the
//! guide's documented behaviour, not everything the real service does.

use std::net::SocketAddr;

use scim_sync_testkit::aws_double::{AWS_TOKEN, AwsDouble};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|e| format!("{a}: not an address such as 127.0.0.1:8950 ({e})"))?,
        None => SocketAddr::from(([127, 0, 0, 1], 8950)),
    };
    let aws = AwsDouble::start_on(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("AWS IAM Identity Center SCIM double");
    println!("  SCIM endpoint: {}", aws.base_url());
    println!("  access token:  {AWS_TOKEN}");
    println!("Ctrl-C stops it; nothing is kept.");
    tokio::signal::ctrl_c().await?;
    drop(aws);
    Ok(())
}
