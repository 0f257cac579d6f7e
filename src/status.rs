//! What `status` and `GET /v1/status` show (SPEC §5): per app, the last cycle report, deferred
//! and active activations, failing objects and quarantine, read from the store. One function
//! builds one typed [`Status`], which the command renders and the endpoint serialises, so the
//! two cannot drift apart; it works whether or not a service runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::AppConfig;
use crate::model::Learnt;
use crate::report::{CycleReport, Outcome};
use crate::store::{self, AppActivation, FailingObject, PushState, Store};

/// The JSON of `status --json` and `/v1/status`: `{"apps": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// One entry per configured app, in config order.
    pub apps: Vec<AppStatus>,
}

/// One app's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The app's name.
    pub name: String,
    /// The report of its last cycle, if any ran.
    pub last_cycle: Option<CycleReport>,
    /// Live activations the app does not have yet: its next cycle applies them.
    pub deferred_activations: Vec<AppActivation>,
    /// Live activations pushed (or in flight, or applied).
    pub active_activations: Vec<AppActivation>,
    /// Objects whose last operation failed.
    pub failing_objects: Vec<FailingObject>,
    /// The last cycle could change nothing at all (token rejected, app down); it is retried
    /// at the next cycle.
    pub quarantined: bool,
    /// Users this service created or adopted in the app.
    pub managed_users: i64,
    /// Groups this service created or adopted in the app.
    pub managed_groups: i64,
    /// Who writes to the app now (its lease), or `null` when nobody holds it.
    pub lease: Option<LeaseStatus>,
    /// What was learnt of the app's schema (its capabilities, the mapped attributes it does
    /// not declare or keep, which are not sent), or `null` before its first cycle.
    #[serde(default)]
    pub schema: Option<Learnt>,
}

/// The holder of an app's lease, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The holding process.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// When it took the lease.
    pub since: DateTime<Utc>,
    /// When the lease ends unless renewed.
    pub until: DateTime<Utc>,
}

/// Reads the status of `apps` from the store, judging activations live at `now`.
///
/// # Errors
/// [`store::Error`] when the store cannot be read.
pub async fn collect(
    apps: &[AppConfig],
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Status, store::Error> {
    let mut out = Vec::new();
    for app in apps {
        let last = store.last_report(&app.name).await?;
        let failing = store.failures(&app.name).await?;
        let (users, groups) = store.counts(&app.name).await?;
        let (deferred, active): (Vec<_>, Vec<_>) = store
            .live_activations(&app.name, now)
            .await?
            .into_iter()
            .partition(|a| a.state == PushState::Deferred);
        let lease = store.lease(&app.name, now).await?.map(|l| LeaseStatus {
            pid: l.pid,
            host: l.host,
            since: l.since,
            until: l.until,
        });
        let quarantined = last
            .as_ref()
            .is_some_and(|r| r.outcome == Outcome::Failed && r.error.is_some());
        out.push(AppStatus {
            name: app.name.to_string(),
            last_cycle: last,
            deferred_activations: deferred,
            active_activations: active,
            failing_objects: failing,
            quarantined,
            managed_users: users,
            managed_groups: groups,
            lease,
            schema: store.learnt(&app.name).await?,
        });
    }
    Ok(Status { apps: out })
}
