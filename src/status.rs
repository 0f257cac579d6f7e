//! What `status` and `GET /v1/status` show (SPEC §5): per app, the last cycle report, deferred
//! and active activations, failing objects and quarantine, read from the store. One function,
//! so the command and the endpoint cannot drift apart; it works whether or not a service runs.

use chrono::Utc;
use serde_json::{Value, json};

use crate::config::AppConfig;
use crate::report::Outcome;
use crate::store::{self, PushState, Store};

/// `{"apps": [{"name", "last_cycle", "deferred_activations", "active_activations",
/// "failing_objects", "quarantined", "managed_users", "managed_groups"}]}`.
///
/// # Errors
/// [`store::Error`] when the store cannot be read.
pub async fn collect(apps: &[AppConfig], store: &Store) -> Result<Value, store::Error> {
    let now = Utc::now();
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
        // Quarantined: the app's last cycle could change nothing at all (token rejected, app
        // down); it is retried at the next cycle.
        let quarantined = last
            .as_ref()
            .is_some_and(|r| r.outcome == Outcome::Failed && r.error.is_some());
        out.push(json!({
            "name": app.name.as_str(),
            "last_cycle": last,
            "deferred_activations": deferred,
            "active_activations": active,
            "failing_objects": failing,
            "quarantined": quarantined,
            "managed_users": users,
            "managed_groups": groups,
        }));
    }
    Ok(json!({ "apps": out }))
}
