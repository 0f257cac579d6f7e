//! `scim-sync demo`: the self-contained offline tour.
//!
//! Starts the sandbox SCIM app on a free loopback port, syncs `config/directory.json` into it
//! (the copy embedded in the binary when the file is not there), changes the directory in
//! memory (a user disabled, a member removed, a user renamed), syncs again and shows just those
//! changes, then syncs a third time and shows that nothing is sent. Then it starts the service
//! (webhook on loopback, limiter, expiry timers): a burst of 8 PIM activations (5 pushed at
//! once, 3 deferred), the next cycle applying the 3, and an activation that ends after 3
//! seconds and leaves the app at once. Every step checks what it claims against the sandbox's
//! own state; the exit status is 0 only when all of them held.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::activation::{Accepted, ActivationRequest, Outcome};
use crate::config::{AppConfig, Config, PushLimit, Secret, ServiceConfig, SourceConfig, StateFrom};
use crate::engine::{App, AppCycle, CycleOptions, Engine};
use crate::model::{AppName, Deprovision, Directory, SourceId};
use crate::report::Reason;
use crate::sandbox::{SandboxHandle, SandboxState};
use crate::service::{Options as ServiceOptions, Service, TickSource};
use crate::source::{MemorySource, file};
use crate::store::Store;

/// Why the demo could not run at all (as opposed to a step that did not behave, which the
/// demo reports and counts).
#[derive(Debug)]
pub struct Error(pub String);

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error(e.to_string())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sample directory shipped in the binary.
const EMBEDDED_DIRECTORY: &str = include_str!("../config/directory.json");
const DIRECTORY_PATH: &str = "config/directory.json";
const TOKEN: &str = "demo-token-not-a-secret";

/// Groups the demo app is assigned (the rest of the sample stays out of scope).
const GROUPS: &[&str] = &[
    "g-all-staff",
    "g-team-eng",
    "g-team-support",
    "g-prod-admins",
];

/// Tracks whether every step behaved as described.
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        if ok {
            out!("  ✓ {what}");
        } else {
            out!("  ✗ {what}");
            self.failed.push(what);
        }
    }
}

/// Runs the demo.
///
/// # Errors
/// [`Error`] when the demo cannot start (no loopback port, unreadable sample).
pub async fn run() -> Result<bool, Error> {
    let (dir, from) = load_directory()?;
    let sandbox = SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
        .await
        .map_err(|e| Error(format!("demo: cannot start the sandbox on loopback: {e}")))?;
    let state_dir = tempfile::tempdir()
        .map_err(|e| Error(format!("demo: cannot create a temporary state folder: {e}")))?;
    let store = Store::open(&format!(
        "sqlite://{}",
        state_dir.path().join("demo.db").display()
    ))
    .await?;
    let source = MemorySource::new(dir.clone());
    let engine = Engine::new(Arc::new(source.clone()), store);
    let app = App::new(demo_app(sandbox.base_url()), &Secret::new(TOKEN))?;
    let apps = [app];
    let mut checks = Checks { failed: Vec::new() };

    out!("scim-sync demo (offline)");
    out!(
        "  directory: {from} ({} users, {} groups)",
        dir.users.len(),
        dir.groups.len()
    );
    out!(
        "  app \"demo\": built-in sandbox SCIM app at {}",
        sandbox.base_url()
    );
    out!("  assigned groups: {}", GROUPS.join(", "));
    out!();

    // Step 1: initial sync.
    out!("1. Initial sync");
    let expected = crate::mapping::desired_for_app(&dir, &apps[0].cfg, &[])
        .map_err(|e| Error(format!("demo: {e}")))?
        .desired;
    let (c, took) = cycle(&engine, &apps).await;
    out!("  {}", c.report);
    out!("  took {took:.0?}");
    let state = sandbox.state();
    for g in state.groups() {
        let members = g["members"].as_array().map_or(0, Vec::len);
        out!(
            "  group {:<28} {members:>3} members",
            format!("{:?}", g["displayName"].as_str().unwrap_or("?"))
        );
    }
    let in_scope = expected.users.len();
    let memberships: usize = expected.groups.values().map(|g| g.members.len()).sum();
    checks.check(
        c.report.users_created as usize == in_scope && state.user_count() == in_scope,
        format!("{in_scope} in-scope users created (members of the assigned groups; PIM-eligible users wait for activation)"),
    );
    checks.check(
        c.report.groups_created as usize == GROUPS.len() && state.group_count() == GROUPS.len(),
        format!("{} groups created, members added by PATCH", GROUPS.len()),
    );
    checks.check(
        c.report.members_added as usize == memberships && member_total(state) == memberships,
        format!("{memberships} memberships in the app"),
    );
    let disabled_in_source = expected
        .users
        .values()
        .filter(|u| u.attrs.get("active") == Some(&Value::Bool(false)))
        .count();
    checks.check(
        state
            .users()
            .iter()
            .filter(|u| u["active"] == Value::Bool(false))
            .count()
            == disabled_in_source,
        format!("{disabled_in_source} user(s) disabled in the source provisioned as active=false"),
    );
    checks.check(c.report.failed == 0, "no failures");
    out!();

    // Step 2: the directory changes.
    out!(
        "2. The directory changes: Kate is disabled, Ivy leaves Engineering, Erin changes her name"
    );
    source.update(|d| {
        set(d, "u-kate", "accountEnabled", Value::Bool(false));
        if let Some(g) = d.groups.get_mut(&SourceId::from("g-team-eng")) {
            g.members.retain(|m| m.as_str() != "u-ivy");
        }
        set(d, "u-erin", "surname", "Schmidt".into());
        set(d, "u-erin", "displayName", "Erin Schmidt".into());
        set(
            d,
            "u-erin",
            "userPrincipalName",
            "erin.schmidt@contoso.example".into(),
        );
        set(d, "u-erin", "mail", "erin.schmidt@contoso.example".into());
    });
    let (c, took) = cycle(&engine, &apps).await;
    for op in &c.plan.ops {
        out!("  sent: {op}");
    }
    out!("  {}", c.report);
    out!("  took {took:.0?}");
    let r = &c.report;
    checks.check(
        r.users_disabled == 1
            && user(state, "kate.lindqvist@contoso.example")
                .is_some_and(|u| u["active"] == Value::Bool(false)),
        "Kate disabled in the app (PATCH active=false)",
    );
    checks.check(
        r.members_removed == 1 && !group_has(state, "Engineering", "ivy.chen@contoso.example"),
        "Ivy removed from Engineering, still in All Staff",
    );
    checks.check(
        r.users_updated == 1
            && user(state, "erin.schmidt@contoso.example")
                .is_some_and(|u| u["name"]["familyName"] == "Schmidt")
            && state.user_count() == in_scope,
        "Erin renamed in place (PATCH of the changed attributes only, no new user)",
    );
    checks.check(
        r.users_created + r.groups_created + r.members_added + r.users_deleted + r.groups_deleted
            == 0
            && r.failed == 0,
        "nothing else changed",
    );
    out!();

    // Step 3: nothing changed.
    out!("3. Sync again with no change");
    let (c, took) = cycle(&engine, &apps).await;
    out!("  {}", c.report);
    out!("  took {took:.0?}");
    checks.check(
        c.report.requests == 0 && c.plan.ops.is_empty(),
        "zero SCIM requests sent",
    );
    out!();

    // Steps 4 to 6: the service, with its webhook, limiter and expiry timers.
    activations(
        &dir,
        &engine,
        &apps,
        &sandbox,
        state_dir.path(),
        &mut checks,
    )
    .await?;

    sandbox.shutdown().await;
    if checks.failed.is_empty() {
        out!("demo: every step behaved as described.");
        out!("next: `cargo run --release -- sandbox` in one terminal, then");
        out!("      `SANDBOX_SCIM_TOKEN=x cargo run --release -- sync-now --dry-run` in another.");
        Ok(true)
    } else {
        out!(
            "demo: {} step(s) did not behave as described:",
            checks.failed.len()
        );
        for f in &checks.failed {
            out!("  - {f}");
        }
        Ok(false)
    }
}

/// The PIM group of the sample directory.
const PIM_GROUP: &str = "g-prod-admins";

/// Steps 4 to 6: a burst of 8 activations through the webhook (5 pushed, 3 deferred), the next
/// cycle applying the 3, and an activation that expires after 3 seconds.
async fn activations(
    dir: &Directory,
    engine: &Engine,
    apps: &[App],
    sandbox: &SandboxHandle,
    state_dir: &Path,
    checks: &mut Checks,
) -> Result<(), Error> {
    let group = SourceId::from(PIM_GROUP);
    let Some(pim) = dir.groups.get(&group) else {
        return Err(Error(format!(
            "demo: the sample directory has no group {PIM_GROUP}"
        )));
    };
    let eligible: Vec<SourceId> = pim.eligible.to_vec();
    if eligible.len() < 9 {
        return Err(Error(format!(
            "demo: group {PIM_GROUP} needs 9 eligible users, it has {}",
            eligible.len()
        )));
    }
    let cfg = Config {
        path: PathBuf::from("demo (built in)"),
        service: ServiceConfig {
            listen: "127.0.0.1:0".into(),
            full_sync_interval: Duration::from_secs(40 * 60),
            state: StateFrom::Url(format!("sqlite://{}", state_dir.join("demo.db").display())),
            lease_ttl: Duration::from_secs(15),
            webhook_token_env: "DEMO (built in)".into(),
            max_activation: Duration::from_secs(8 * 3600),
        },
        source: SourceConfig::File {
            path: PathBuf::from(DIRECTORY_PATH),
        },
        apps: apps.iter().map(|a| a.cfg.clone()).collect(),
    };
    let svc = Service::start(
        cfg,
        apps.to_vec(),
        engine.clone(),
        Secret::new(TOKEN),
        ServiceOptions {
            ticks: TickSource::Tokio,
            startup_cycle: false,
            ..ServiceOptions::default()
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| Error(format!("demo: cannot listen on loopback: {e}")))?;
    let webhook = format!(
        "http://{}/v1/activations",
        listener.local_addr().map_err(Error::from)?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::admin::serve(
        svc.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let http = reqwest::Client::new();
    let pim_name = pim.display_name.clone();
    let members = |state: &SandboxState| -> usize {
        state
            .groups()
            .iter()
            .find(|g| g["displayName"] == pim_name.as_str())
            .and_then(|g| g["members"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let before = members(sandbox.state());

    out!(
        "4. A burst of 8 PIM activations for {:?} through the webhook (push_limit: 5 per 10s)",
        pim.display_name
    );
    let burst = Instant::now();
    let answers = futures::future::join_all(
        eligible[..8]
            .iter()
            .map(|u| post_activation(&http, &webhook, &group, u, None)),
    )
    .await;
    let mut pushed = 0;
    let mut deferred = 0;
    for (user, answer) in eligible[..8].iter().zip(&answers) {
        match answer {
            Ok(a) => {
                for o in &a.apps {
                    match (o.outcome, o.latency_ms) {
                        (Outcome::Pushed, Some(ms)) => {
                            pushed += 1;
                            out!("  {user}: pushed, the app confirmed in {ms} ms");
                        }
                        (Outcome::Pushed, None) => {
                            pushed += 1;
                            out!("  {user}: pushed, not yet confirmed");
                        }
                        (Outcome::Active, _) => {
                            out!("  {user}: already active, nothing sent");
                        }
                        (Outcome::Deferred, _) => {
                            deferred += 1;
                            out!("  {user}: deferred: {}", o.detail.as_deref().unwrap_or(""));
                        }
                    }
                }
            }
            Err(e) => out!("  {user}: refused: {e}"),
        }
    }
    checks.check(
        pushed == 5 && members(sandbox.state()) == before + 5,
        "5 pushed at once and in the app",
    );
    let status =
        crate::status::collect(&svc.config().apps, engine.store(), chrono::Utc::now()).await?;
    let waiting = status
        .apps
        .first()
        .map_or(0, |a| a.deferred_activations.len());
    checks.check(
        deferred == 3 && waiting == 3,
        "3 deferred, recorded and shown by `status`, not queued behind a sleep",
    );
    out!();

    out!("5. The next cycle (started now instead of in 40 minutes)");
    let started = svc
        .cycles(None, Reason::Schedule, true)
        .await
        .apps
        .unwrap_or_default();
    for r in &started {
        out!("  {r}");
    }
    checks.check(
        started.first().is_some_and(|r| r.deferred_applied == 3)
            && members(sandbox.state()) == before + 8,
        "the 3 deferred activations applied (deferred_applied = 3)",
    );
    out!();

    out!("6. One more activation, ending 3 seconds after it starts");
    // The burst used the quota: one more push passes 2 s after it.
    let ready = burst + Duration::from_millis(2100);
    if Instant::now() < ready {
        out!("  (waiting for the limiter: after a burst of 5, one push every 2 s)");
        tokio::time::sleep_until(ready.into()).await;
    }
    let ninth = &eligible[8];
    let ends = chrono::Utc::now() + chrono::Duration::seconds(3);
    let answer = post_activation(&http, &webhook, &group, ninth, Some(ends)).await;
    let confirmed = match &answer {
        Ok(a) => a.apps.iter().any(|o| o.outcome == Outcome::Pushed),
        Err(_) => false,
    };
    match &answer {
        Ok(a) => {
            for o in &a.apps {
                out!(
                    "  {ninth}: {}{}",
                    o.outcome,
                    o.latency_ms
                        .map(|ms| format!(", the app confirmed in {ms} ms"))
                        .unwrap_or_default()
                );
            }
        }
        Err(e) => out!("  {ninth}: refused: {e}"),
    }
    checks.check(
        confirmed && members(sandbox.state()) == before + 9,
        "pushed at once (the user created in the app first)",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut removed_after = None;
    while Instant::now() < deadline {
        if members(sandbox.state()) == before + 8 {
            removed_after = Some(chrono::Utc::now() - ends);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match removed_after {
        Some(after) => out!(
            "  {ninth}: removed from {:?} {} ms after the activation ended",
            pim.display_name,
            after.num_milliseconds().max(0)
        ),
        None => out!("  {ninth}: still a member 10 s later"),
    }
    checks.check(
        removed_after.is_some(),
        "removed at expiry, not at the next cycle",
    );
    out!();

    let _ = stop.send(());
    match server.await {
        Ok(Ok(0)) => {}
        Ok(Ok(left)) => out!("  ({left} operations were still running at shutdown)"),
        Ok(Err(e)) => out!("  (admin server: {e})"),
        Err(e) => out!("  (admin server: {e})"),
    }
    Ok(())
}

/// POSTs one activation to the demo's webhook.
async fn post_activation(
    http: &reqwest::Client,
    url: &str,
    group: &SourceId,
    user: &SourceId,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Accepted, String> {
    let resp = http
        .post(url)
        .bearer_auth(TOKEN)
        .json(&ActivationRequest {
            group_id: group.clone(),
            user_id: user.clone(),
            expires_at,
            justification: None,
            ticket_number: None,
            ticket_system: None,
        })
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(format!("{}: {text}", status.as_u16()));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn load_directory() -> Result<(Directory, String), Error> {
    let path = Path::new(DIRECTORY_PATH);
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file::parse(path, &text)?, DIRECTORY_PATH.to_owned())),
        Err(_) => Ok((
            file::parse(
                Path::new("embedded config/directory.json"),
                EMBEDDED_DIRECTORY,
            )?,
            "embedded copy of config/directory.json".to_owned(),
        )),
    }
}

fn demo_app(base_url: &str) -> AppConfig {
    AppConfig {
        name: AppName::from("demo"),
        base_url: base_url.to_owned(),
        token_env: "DEMO (built in)".into(),
        groups: GROUPS.iter().map(|g| SourceId::from(*g)).collect(),
        push_groups: Vec::new(),
        push_limit: PushLimit {
            burst: NonZeroU32::MIN.saturating_add(4),
            per: Duration::from_secs(10),
        },
        overflow: crate::config::Overflow::NextCycle,
        deprovision: Deprovision::Disable,
        matching: "userName".into(),
        max_deprovisions: 50,
        flatten_nested: false,
        concurrency: 4,
        timeout: Duration::from_secs(10),
        max_response: crate::config::DEFAULT_MAX_RESPONSE,
        attributes: BTreeMap::new(),
        verify_interval: None,
        profile: crate::model::Profile::Generic,
    }
}

async fn cycle(engine: &Engine, apps: &[App]) -> (AppCycle, Duration) {
    let t = Instant::now();
    let mut run = engine
        .cycle(
            apps,
            CycleOptions {
                reason: Reason::SyncNow,
                dry_run: false,
                progress: false,
                verify: false,
            },
        )
        .await;
    let took = t.elapsed();
    let c = run.apps.remove(0);
    (c, took)
}

fn set(d: &mut Directory, user: &str, attr: &str, v: Value) {
    if let Some(u) = d.users.get_mut(&SourceId::from(user)) {
        u.attrs.insert(attr.into(), v);
    }
}

fn user(state: &SandboxState, user_name: &str) -> Option<Value> {
    state
        .users()
        .into_iter()
        .find(|u| u["userName"] == user_name)
}

fn member_total(state: &SandboxState) -> usize {
    state
        .groups()
        .iter()
        .map(|g| g["members"].as_array().map_or(0, Vec::len))
        .sum()
}

fn group_has(state: &SandboxState, group: &str, user_name: &str) -> bool {
    let Some(u) = user(state, user_name) else {
        return false;
    };
    state.groups().iter().any(|g| {
        g["displayName"] == group
            && g["members"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["value"] == u["id"]))
    })
}
