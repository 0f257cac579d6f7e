//! The drift benchmark (issue 13): requests and time of a verifying cycle (`sync-now
//! --verify`) over a tenant-shaped directory (`scim_sync_testkit::synthetic`), the sandbox
//! as the app on loopback, the engine in process.
//!
//! 1. an initial sync of the directory into the empty sandbox (for the baseline);
//! 2. a verifying cycle with no drift: every managed object read back, nothing repaired;
//! 3. drift made directly in the app (titles edited, members removed, unmanaged members
//!    added), then a verifying cycle repairing it.
//!
//! Options (after `--`): `--users N` (default 20000), `--groups N` (default 51),
//! `--concurrency N` (default 4), `--out FILE`. Figures and the command: docs/DRIFT.md.

use std::fmt::Write as _;

use anyhow::Context;
use serde_json::{Value, json};

use scim_sync::engine::AppCycle;
use scim_sync::sandbox::SandboxState;
use scim_sync_testkit::synthetic;

#[allow(dead_code)]
mod common;
use common::{Machine, SANDBOX_TOKEN, SandboxWorld, secs};

fn main() -> anyhow::Result<()> {
    common::log_from_env();
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| -> anyhow::Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).context(name.to_owned())?.parse()?),
            None => Ok(default),
        }
    };
    let (users, groups, concurrency) = (
        opt("--users", 20_000)?,
        opt("--groups", 51)?,
        opt("--concurrency", 4)?,
    );
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1).cloned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let md = rt.block_on(run(users, groups, concurrency))?;
    match out {
        Some(path) => std::fs::write(&path, &md).with_context(|| path.clone())?,
        None => print!("{md}"),
    }
    Ok(())
}

async fn run(users: usize, groups: usize, concurrency: usize) -> anyhow::Result<String> {
    let dir = synthetic::directory(users, groups, 7);
    let w = SandboxWorld::new(&dir, SandboxState::with_token(SANDBOX_TOKEN), concurrency).await?;
    let mut md = String::new();
    writeln!(md, "{}\n", Machine::detect().line())?;
    writeln!(
        md,
        "{users} users, {} groups, all assigned; the sandbox on loopback; concurrency {concurrency}.\n",
        dir.groups.len()
    )?;
    writeln!(
        md,
        "| cycle | time | requests | drift_repaired | changes made |\n|---|---|---|---|---|"
    )?;
    let (c, took) = w.cycle(false).await?;
    let writes = |c: &AppCycle| {
        c.report.users_created
            + c.report.users_updated
            + c.report.members_added
            + c.report.members_removed
            + c.report.groups_created
    };
    writeln!(
        md,
        "| initial sync | {} | {} | – | {} |",
        secs(took),
        c.report.requests,
        writes(&c)
    )?;
    let (c, took) = w.cycle(true).await?;
    writeln!(
        md,
        "| verify, no drift | {} | {} | {} | {} |",
        secs(took),
        c.report.requests,
        c.report.drift_repaired,
        writes(&c)
    )?;

    // Drift in the app: 100 titles edited, 50 members removed, 50 unmanaged members added.
    let http = reqwest::Client::new();
    let base = w.sandbox.base_url().to_owned();
    let state = w.sandbox.state();
    let app_users = state.users();
    let app_groups = state.groups();
    let patch = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let send = |path: String, body: Value| {
        let req = http
            .patch(format!("{base}/{path}"))
            .bearer_auth(SANDBOX_TOKEN)
            .json(&body);
        async move { req.send().await?.error_for_status().map(|_| ()) }
    };
    for u in app_users.iter().take(100) {
        let id = u["id"].as_str().context("user id")?;
        send(
            format!("Users/{id}"),
            patch(json!([{"op": "replace", "path": "title", "value": "Edited in the app"}])),
        )
        .await?;
    }
    let mut removed = 0;
    for g in &app_groups {
        let gid = g["id"].as_str().context("group id")?;
        for m in g["members"].as_array().into_iter().flatten().take(5) {
            if removed == 50 {
                break;
            }
            let mid = m["value"].as_str().context("member id")?;
            send(
                format!("Groups/{gid}"),
                patch(json!([{"op": "remove", "path": format!("members[value eq \"{mid}\"]")}])),
            )
            .await?;
            removed += 1;
        }
    }
    for i in 0..50 {
        let created: Value = http
            .post(format!("{base}/Users"))
            .bearer_auth(SANDBOX_TOKEN)
            .json(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": format!("intruder-{i}@example.org")}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let uid = created["id"].as_str().context("created id")?;
        let gid = app_groups[i % app_groups.len()]["id"]
            .as_str()
            .context("group id")?;
        send(
            format!("Groups/{gid}"),
            patch(json!([{"op": "add", "path": "members", "value": [{"value": uid}]}])),
        )
        .await?;
    }
    let (c, took) = w.cycle(true).await?;
    writeln!(
        md,
        "| verify, 100 edits + {removed} removed + 50 unmanaged members | {} | {} | {} | {} |",
        secs(took),
        c.report.requests,
        c.report.drift_repaired,
        writes(&c)
    )?;
    let (c, took) = w.cycle(false).await?;
    writeln!(
        md,
        "| plain cycle after | {} | {} | – | {} |",
        secs(took),
        c.report.requests,
        writes(&c)
    )?;
    Ok(md)
}
