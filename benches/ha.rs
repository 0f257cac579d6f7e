//! The replicas benchmark: failover time and the webhook's latency at a replica without the
//! lease, with real `scim-sync run` processes (the release binary) on a scratch PostgreSQL
//! database, the sandbox as the app behind one recording proxy per replica
//! (`scim_sync_testkit::replicas`).
//!
//! 1. **failover, same host** (`lease_ttl = "5s"`): SIGKILL of the holder → the other replica
//!    holds the app's lease (polled every 10 ms through `/v1/status`), and → its first write
//!    to the app (an activation sent to it right after the kill, seen at its proxy). The
//!    killed replica is started again and becomes the standby of the next run.
//! 2. **failover by lease lapse** (the path of a holder on another host, or frozen): SIGSTOP
//!    of the holder → the other replica holds the lease; then SIGCONT.
//! 3. **webhook latency**: activations for distinct eligible users sent one after the other
//!    to the replica without the lease (forwarded through the store, decided and pushed by
//!    the holder), then to the holder, the limiter raised out of the way. The client's round
//!    trip, p50 / p99 / max; each push creates the user in the app and PATCHes the group.
//!
//! 4. **refusals**: one replica over a 100k-user directory file; 403s for users not eligible
//!    (answered from the last snapshot and a stat of the unchanged file, never a re-read)
//!    against 202s for eligible ones, 50 of each.
//!
//! Options (after `--`): `--quick` (3 failovers of each kind, 40 activations each way, a
//! 20k-user directory),
//! `--runs N` (failovers of each kind, default 10), `--out FILE` (the markdown results;
//! stdout otherwise). See docs/HA.md.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use chrono::Utc;
use serde_json::json;

use scim_sync::activation::Outcome;
use scim_sync_testkit::replicas::{Backend, Cluster, Spec};

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
        "| failover, `lease_ttl = \"5s\"`, {runs} runs | lease held p50 | max | first write p50 | max |\n|---|---|---|---|---|"
    )?;
    for (what, runs) in [
        (
            "SIGKILL of the holder (same host: dead pid seen at the next renewal, ≤ ttl/3)",
            &kill,
        ),
        (
            "SIGSTOP of the holder (lease lapse: the path of another host)",
            &stop,
        ),
    ] {
        let lease: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let write: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        writeln!(
            out,
            "| {what} | {} | {} | {} | {} |",
            ms(pct(&lease, 50.0)),
            ms(max(&lease)),
            ms(pct(&write, 50.0)),
            ms(max(&write))
        )?;
    }
    writeln!(out)?;

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
    let (refused, accepted) = refusals(if quick { 20_000 } else { 100_000 }, 50).await?;
    writeln!(
        out,
        "\n| webhook at a {} -user directory file, 50 requests | p50 | p99 | max |\n|---|---|---|---|",
        if quick { "20k" } else { "100k" }
    )?;
    writeln!(
        out,
        "| 403, user not eligible (no source re-read) | {} | {} | {} |",
        ms(pct(&refused, 50.0)),
        ms(pct(&refused, 99.0)),
        ms(max(&refused))
    )?;
    writeln!(
        out,
        "| 202 `pushed`, an eligible user | {} | {} | {} |",
        ms(pct(&accepted, 50.0)),
        ms(pct(&accepted, 99.0)),
        ms(max(&accepted))
    )?;
    match arg("--out") {
        Some(path) => std::fs::write(&path, &out).with_context(|| path.clone())?,
        None => print!("{out}"),
    }
    Ok(())
}

fn bin() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_scim-sync").into()
}

/// `runs` failovers by `signal` (`KILL` or `STOP`) on one pair of replicas: for each, how
/// long until the other replica holds the lease, and until its first write to the app (an
/// activation sent to it right after the signal: deferred while nobody holds the app and
/// applied by the take-over cycle, or pushed if the lease was already taken).
async fn failovers(runs: usize, signal: &str) -> anyhow::Result<Vec<(Duration, Duration)>> {
    let dir = tempfile::tempdir()?;
    let mut cluster = pim_cluster(2, generated_directory(dir.path(), runs, runs)?, "5s").await?;
    let expires = Utc::now() + chrono::Duration::hours(1);
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
        let struck = std::time::Instant::now();
        let survivor = &cluster.replicas[other];
        let user = format!("u-{run:05}");
        let (lease, answer) = tokio::join!(
            cluster.await_holder(other, Duration::from_secs(30)),
            survivor.activate("g-pim", &user, expires)
        );
        let lease = lease.map_err(|e| anyhow!(e))?;
        let answer = answer.map_err(|e| anyhow!(e))?;
        ensure!(answer.status == 202, "run {run}: {}", answer.body);
        let write = loop {
            if let Some(w) = survivor.proxy.writes_since(struck).first() {
                break w.at - struck;
            }
            ensure!(
                struck.elapsed() < Duration::from_secs(30),
                "run {run}: no write by the new holder"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        eprintln!("failover {signal} run {run}: lease {lease:?}, first write {write:?}");
        took.push((lease, write));
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
    let path = generated_directory(dir.path(), 2 * sends, 2 * sends)?;
    let cluster = pim_cluster(2, path, "15s").await?;
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

/// Round trips of `n` refused (403) and `n` accepted activations at one replica over a
/// directory file of `users` users.
async fn refusals(users: usize, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let dir = tempfile::tempdir()?;
    let cluster = pim_cluster(1, generated_directory(dir.path(), users, n)?, "15s").await?;
    let node = &cluster.replicas[0];
    // Steady state: after the start-up cycle's read (a refusal during it waits for it).
    let started = std::time::Instant::now();
    while node
        .status()
        .await
        .map_or(true, |s| s.apps[0].last_cycle.is_none())
    {
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "no start-up cycle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expires = Utc::now() + chrono::Duration::hours(1);
    let (mut refused, mut accepted) = (Vec::new(), Vec::new());
    for i in 0..n {
        let a = node
            .activate("g-pim", &format!("u-{:05}", users - 1 - i), expires)
            .await
            .map_err(|e| anyhow!(e))?;
        ensure!(
            a.status == 403,
            "not eligible, yet: {} {}",
            a.status,
            a.body
        );
        refused.push(a.took);
        let a = node
            .activate("g-pim", &format!("u-{i:05}"), expires)
            .await
            .map_err(|e| anyhow!(e))?;
        ensure!(a.status == 202, "eligible, yet: {} {}", a.status, a.body);
        accepted.push(a.took);
    }
    Ok((refused, accepted))
}

/// `replicas` replicas on PostgreSQL with `g-pim` of `directory` assigned, the push limit
/// raised out of the way (the latency and failover figures measure scim-sync, not the quota).
async fn pim_cluster(
    replicas: usize,
    directory: std::path::PathBuf,
    lease_ttl: &str,
) -> anyhow::Result<Cluster> {
    Cluster::start(Spec {
        bin: bin(),
        replicas,
        backend: Backend::Postgres,
        directory,
        groups: vec!["g-pim".into()],
        lease_ttl: lease_ttl.into(),
        app_extra: "push_limit = { burst = 1000, per = \"1s\" }".into(),
    })
    .await
    .map_err(|e| anyhow!(e))
}

/// A directory file of `users` users, the first `eligible` of them eligible for `g-pim` (no
/// standing members).
fn generated_directory(
    dir: &std::path::Path,
    users: usize,
    eligible: usize,
) -> anyhow::Result<std::path::PathBuf> {
    let users: Vec<_> = (0..users)
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
    let eligible: Vec<_> = users
        .iter()
        .take(eligible)
        .map(|u| u["id"].clone())
        .collect();
    let directory = json!({
        "users": users,
        "groups": [{"id": "g-pim", "displayName": "PIM", "members": [], "eligible": eligible}]
    });
    let path = dir.join("directory.json");
    std::fs::write(&path, serde_json::to_vec(&directory)?)?;
    Ok(path)
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
