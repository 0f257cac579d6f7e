//! The latency-bearing benchmark (issue 14 point 3): an initial sync into an app that
//! answers each request after a round trip (`SandboxState::with_latency`, what
//! `scim-sync sandbox --latency 50ms` serves), at several `concurrency` settings, against the
//! floor: one POST per user, one per group and one PATCH per 100 members, times the latency,
//! divided by the concurrency.
//!
//! Options (after `--`): `--users N` (default 20000), `--groups N` (default 51),
//! `--latency-ms N` (default 50), `--concurrency A,B` (default 4,16), `--out FILE`.
//! Figures and the command: docs/PERFORMANCE.md.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;

use scim_sync::sandbox::SandboxState;
use scim_sync_testkit::synthetic;

#[allow(dead_code)]
mod common;
use common::{Machine, SANDBOX_TOKEN, SandboxWorld, secs};

fn main() -> anyhow::Result<()> {
    common::log_from_env();
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let users: usize = opt("--users").map_or(Ok(20_000), |v| v.parse())?;
    let groups: usize = opt("--groups").map_or(Ok(51), |v| v.parse())?;
    let latency = Duration::from_millis(opt("--latency-ms").map_or(Ok(50), |v| v.parse())?);
    let levels: Vec<usize> = opt("--concurrency")
        .unwrap_or_else(|| "4,16".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = synthetic::directory(users, groups, 7);
    let memberships: usize = dir.groups.values().map(|g| g.members.len()).sum();
    let floor = users
        + dir.groups.len()
        + dir
            .groups
            .values()
            .map(|g| g.members.len().div_ceil(100))
            .sum::<usize>();
    let mut md = String::new();
    writeln!(md, "{}\n", Machine::detect().line())?;
    writeln!(
        md,
        "Initial sync of {users} users, {} groups, {memberships} memberships into an empty sandbox answering every request after {} (loopback). Floor: {floor} requests.\n",
        dir.groups.len(),
        secs(latency)
    )?;
    writeln!(
        md,
        "| concurrency | time | requests | floor × latency / concurrency | time / that |\n|---|---|---|---|---|"
    )?;
    for c in levels {
        let (took, requests) = rt.block_on(async {
            let state =
                SandboxState::with_token(SANDBOX_TOKEN).with_latency(latency, Duration::ZERO);
            let w = SandboxWorld::new(&dir, state, c).await?;
            let (cycle, took) = w.cycle(false).await?;
            anyhow::Ok((took, cycle.report.requests))
        })?;
        let ideal = latency.mul_f64(floor as f64 / c as f64);
        writeln!(
            md,
            "| {c} | {} | {requests} | {} | {:.2} |",
            secs(took),
            secs(ideal),
            took.as_secs_f64() / ideal.as_secs_f64()
        )?;
    }
    match opt("--out") {
        Some(path) => std::fs::write(&path, &md).with_context(|| path.clone())?,
        None => print!("{md}"),
    }
    Ok(())
}
