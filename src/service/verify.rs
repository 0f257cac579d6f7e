//! Verifying cycles in service mode (`[[apps]] verify_interval`, default 24 h, `"0s"` off): a
//! cycle of an app whose last verification is older than its interval reads the app back
//! and repairs drift ([`crate::apply::verify`]). When an app was last verified is kept in
//! the store (`last_verified_at`), so a restart neither verifies at once nor forgets; an
//! app never verified starts its interval when the service first sees it.

use chrono::{DateTime, Utc};

use crate::config::AppConfig;
use crate::engine::CycleRun;
use crate::model::AppName;
use crate::report::Outcome;
use crate::store::Store;

/// The store flag holding when an app was last verified (RFC 3339).
const LAST_VERIFIED: &str = "last_verified_at";

/// Whether `app`'s next cycle at `now` verifies.
pub(super) async fn due(store: &Store, app: &AppConfig, now: DateTime<Utc>) -> bool {
    let Some(every) = app.verify_interval else {
        return false;
    };
    match store.flag(&app.name, LAST_VERIFIED).await {
        Ok(Some(at)) => match DateTime::parse_from_rfc3339(&at) {
            Ok(at) => (now - at.with_timezone(&Utc)).to_std().unwrap_or_default() >= every,
            Err(_) => true,
        },
        Ok(None) => {
            // First sight of the app: its interval starts now (a restart or an upgrade does
            // not read every app back at once; `sync-now --verify` does it on demand).
            if let Err(e) = store
                .set_flag(&app.name, LAST_VERIFIED, &crate::clock::stamp(now))
                .await
            {
                tracing::warn!(app = %app.name, error = %e, "cannot record when the app's verify interval starts");
            }
            false
        }
        Err(e) => {
            tracing::warn!(app = %app.name, error = %e, "cannot read when the app was last verified; not verifying this cycle");
            false
        }
    }
}

/// Records `now` as the last verification of each app of `run` whose verifying cycle did
/// not fail.
pub(super) async fn done(store: &Store, run: &CycleRun, now: DateTime<Utc>) {
    for c in &run.apps {
        if c.report.outcome == Outcome::Failed {
            continue;
        }
        let app = AppName::new(c.report.app.clone());
        if c.report.drift_repaired > 0 {
            tracing::warn!(app = %app, repaired = c.report.drift_repaired, "drift found in the app and repaired");
        }
        if let Err(e) = store
            .set_flag(&app, LAST_VERIFIED, &crate::clock::stamp(now))
            .await
        {
            tracing::warn!(app = %app, error = %e, "cannot record the app's verification; the next cycle verifies again");
        }
    }
}
