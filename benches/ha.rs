//! The replicas benchmark: failover time and the webhook's latency at a replica without the
//! lease, with real `scim-sync run` processes (the release binary) on a scratch PostgreSQL
//! database, the sandbox as the app behind one recording proxy per replica
//! (`scim_sync_testkit::replicas`).
//!
//! 1. **failover, same host** (`lease_ttl = "5s"`): SIGKILL of the holder → the other replica
//!    holds the app's lease (polled every 10 ms through `/v1/status`). The killed replica is
//!    started again and becomes the standby of the next run.
//! 2. **failover by lease lapse** (the path of a holder on another host, or frozen): SIGSTOP
//!    of the holder → the other replica holds the lease; then SIGCONT.
//! 3. **webhook latency**: activations for distinct eligible users sent one after the other
//!    to the replica without the lease (forwarded through the store, decided and pushed by
//!    the holder), then to the holder, the limiter raised out of the way. The client's round
//!    trip, p50 / p99 / max; each push creates the user in the app and PATCHes the group.
//!
//! Options (after `--`): `--quick` (3 failovers of each kind, 40 activations each way),
//! `--runs N` (failovers of each kind, default 10), `--out FILE` (the markdown results;
//! stdout otherwise). See docs/HA.md.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use chrono::Utc;
use serde_json::json;

use scim_sync::activation::Outcome;
use scim_sync_testkit::replicas::{Backend, Cluster, Spec, sample_directory};

// Shared with the other benchmarks, which use the rest of it.
#[allow(dead_code)]
mod common;
use common::Machine;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = match arg("--runs") {
        Some(n) => n.parse().context("--runs")?,
        None if quick => 3,
        None => 10,
    };
    let sends = if quick { 40 } else { 300 };
    let mut out = String::new();
    writeln!(
        out,
        "# Replicas benchmark\n\n{}\n",
        Machine::detect().line()
    )?;

    let kill = failovers(runs, "KILL").await?;
    let stop = failovers(runs, "STOP").await?;
    writeln!(
        out,
        "| failover, `lease_ttl = \"5s\"`, {runs} runs | p50 | max |\n|---|---|---|"
    )?;
    writeln!(
        out,
        "| SIGKILL of the holder (same host: dead pid seen at the next renewal, ≤ ttl/3) | {} | {} |",
        ms(pct(&kill, 50.0)),
        ms(max(&kill))
    )?;
    writeln!(
        out,
        "| SIGSTOP of the holder (lease lapse: the path of another host) | {} | {} |\n",
        ms(pct(&stop, 50.0)),
        ms(max(&stop))
    )?;

    let (forwarded, direct) = latency(sends).await?;
    writeln!(
        out,
        "| webhook → 202 `pushed`, {sends} activations each | p50 | p99 | max |\n|---|---|---|---|"
    )?;
    for (what, d) in [
        ("at the replica without the lease (forwarded)", &forwarded),
        ("at the holder", &direct),
    ] {
        writeln!(
            out,
            "| {what} | {} | {} | {} |",
            ms(pct(d, 50.0)),
            ms(pct(d, 99.0)),
            ms(max(d))
        )?;
    }
    match arg("--out") {
        Some(path) => std::fs::write(&path, &out).with_context(|| path.clone())?,
        None => print!("{out}"),
    }
    Ok(())
}

fn bin() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_scim-sync").into()
}

/// `runs` failovers by `signal` (`KILL` or `STOP`) on one pair of replicas.
async fn failovers(runs: usize, signal: &str) -> anyhow::Result<Vec<Duration>> {
    let mut cluster = Cluster::start(Spec {
        bin: bin(),
        replicas: 2,
        backend: Backend::Postgres,
        directory: sample_directory(),
        groups: vec!["g-it-admins".into(), "g-prod-admins".into()],
        lease_ttl: "5s".into(),
        app_extra: String::new(),
    })
    .await
    .map_err(|e| anyhow!(e))?;
    let mut took = Vec::new();
    for run in 0..runs {
        let holder = cluster
            .holder(Duration::from_secs(20))
            .await
            .map_err(|e| anyhow!(e))?;
        let other = 1 - holder;
        // Let the standby settle, then strike at a random point of its renewal period
        // (ttl/3), as a crash would: a fixed delay would always hit the same phase.
        let phase = Duration::from_millis(rand::random_range(0..1667));
        tokio::time::sleep(Duration::from_millis(1500) + phase).await;
        cluster.replicas[holder]
            .signal(signal)
            .map_err(|e| anyhow!(e))?;
        let t = cluster
            .await_holder(other, Duration::from_secs(30))
            .await
            .map_err(|e| anyhow!(e))?;
        eprintln!("failover {signal} run {run}: {t:?}");
        took.push(t);
        let old = &mut cluster.replicas[holder];
        if signal == "KILL" {
            old.wait_exit(Duration::from_secs(5))
                .await
                .map_err(|e| anyhow!(e))?;
            old.start().map_err(|e| anyhow!(e))?;
            old.await_ready(Duration::from_secs(30))
                .await
                .map_err(|e| anyhow!(e))?;
        } else {
            old.signal("CONT").map_err(|e| anyhow!(e))?;
        }
    }
    Ok(took)
}

/// Round trips of `sends` activations at the non-holder, then `sends` at the holder.
async fn latency(sends: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let dir = tempfile::tempdir()?;
    let users: Vec<_> = (0..2 * sends)
        .map(|i| {
            json!({
                "id": format!("u-{i:05}"),
                "userPrincipalName": format!("user{i:05}@contoso.example"),
                "displayName": format!("User {i:05}"),
                "givenName": "User",
                "surname": format!("{i:05}"),
                "mail": format!("user{i:05}@contoso.example"),
                "accountEnabled": true
            })
        })
        .collect();
    let eligible: Vec<_> = users.iter().map(|u| u["id"].clone()).collect();
    let directory = json!({
        "users": users,
        "groups": [{"id": "g-pim", "displayName": "PIM", "members": [], "eligible": eligible}]
    });
    let path = dir.path().join("directory.json");
    std::fs::write(&path, serde_json::to_vec(&directory)?)?;
    let cluster = Cluster::start(Spec {
        bin: bin(),
        replicas: 2,
        backend: Backend::Postgres,
        directory: path,
        groups: vec!["g-pim".into()],
        lease_ttl: "15s".into(),
        app_extra: "push_limit = { burst = 1000, per = \"1s\" }".into(),
    })
    .await
    .map_err(|e| anyhow!(e))?;
    let holder = cluster
        .holder(Duration::from_secs(20))
        .await
        .map_err(|e| anyhow!(e))?;
    let other = 1 - holder;
    let expires = Utc::now() + chrono::Duration::hours(1);
    let mut runs = (Vec::new(), Vec::new());
    for i in 0..2 * sends {
        let (to, into) = if i < sends {
            (other, &mut runs.0)
        } else {
            (holder, &mut runs.1)
        };
        let a = cluster.replicas[to]
            .activate("g-pim", &format!("u-{i:05}"), expires)
            .await
            .map_err(|e| anyhow!(e))?;
        let outcome = a.accepted.as_ref().map(|x| x.apps[0].outcome);
        ensure!(
            outcome == Some(Outcome::Pushed),
            "activation {i}: {}",
            a.body
        );
        into.push(a.took);
    }
    Ok(runs)
}

fn pct(d: &[Duration], p: f64) -> Duration {
    let mut v = d.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

fn max(d: &[Duration]) -> Duration {
    d.iter().max().copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
