//! Leases: one writer per app across processes (SPEC §6.2).
//!
//! A process writes to an app only while it holds the app's lease in the store. A lease lasts
//! [`Leases::ttl`] and the holder renews it every third of that, so a crashed holder's lease
//! lapses within one `ttl` and another process can take over. `run` holds its apps' leases for
//! its whole life; `sync-now` holds them for one cycle and, when `run` holds them, hands the
//! cycle to the service instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::model::AppName;
use crate::store::{self, LeaseHolder, Store};

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);

/// Who holds a lease, as other processes see it (stored as JSON next to the lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// `run` or `sync-now`.
    pub kind: String,
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The admin HTTP address of a `run` process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// When it started (RFC 3339).
    pub since: String,
}

impl HolderInfo {
    /// This process.
    pub fn this_process(kind: &str, listen: Option<&str>) -> Self {
        HolderInfo {
            kind: kind.to_owned(),
            pid: std::process::id(),
            host: host_name(),
            listen: listen.map(str::to_owned),
            since: crate::engine::now(),
        }
    }

    /// Reads a stored holder; an unreadable one is described as unknown.
    pub fn parse(raw: &LeaseHolder) -> Self {
        serde_json::from_str(&raw.info).unwrap_or_else(|_| HolderInfo {
            kind: "unknown".into(),
            pid: 0,
            host: "unknown".into(),
            listen: None,
            since: String::new(),
        })
    }
}

impl std::fmt::Display for HolderInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scim-sync {} (pid {} on {}",
            self.kind, self.pid, self.host
        )?;
        if let Some(l) = &self.listen {
            write!(f, ", admin http://{l}")?;
        }
        if !self.since.is_empty() {
            write!(f, ", since {}", self.since)?;
        }
        write!(f, ")")
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The leases this process holds or wants.
pub struct Leases {
    store: Store,
    holder: String,
    info: String,
    ttl: Duration,
    /// App → until when we may write (a margin before the stored expiry).
    held: Mutex<HashMap<AppName, Instant>>,
}

impl Leases {
    /// Leases for this process, described by `info`.
    pub fn new(store: Store, info: &HolderInfo, ttl: Duration) -> Arc<Self> {
        Arc::new(Leases {
            store,
            holder: uuid::Uuid::new_v4().to_string(),
            info: serde_json::to_string(info).unwrap_or_default(),
            ttl,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether this process may write to `app` now.
    pub fn holds(&self, app: &AppName) -> bool {
        self.held
            .lock()
            .ok()
            .and_then(|h| h.get(app).copied())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Takes or renews the lease of each app. Returns the apps someone else holds.
    ///
    /// # Errors
    /// [`store::Error`] when the store cannot be reached; leases already held stay valid
    /// until their time runs out.
    pub async fn renew(
        &self,
        apps: &[AppName],
    ) -> Result<Vec<(AppName, HolderInfo)>, store::Error> {
        let mut others = Vec::new();
        for app in apps {
            let asked = Instant::now();
            match self
                .store
                .try_lease(app, &self.holder, &self.info, self.ttl, Utc::now())
                .await?
            {
                None => {
                    // Stop writing a little before the stored expiry: clocks and a slow
                    // store must not let two writers overlap.
                    let until = asked + self.ttl.mul_f64(0.8);
                    if let Ok(mut h) = self.held.lock() {
                        h.insert(app.clone(), until);
                    }
                }
                Some(other) => {
                    if let Ok(mut h) = self.held.lock() {
                        h.remove(app);
                    }
                    others.push((app.clone(), HolderInfo::parse(&other)));
                }
            }
        }
        Ok(others)
    }

    /// Renews `apps` every third of the ttl until `stop` resolves, then releases them.
    pub async fn keep(
        self: Arc<Self>,
        apps: Vec<AppName>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let mut reported: HashMap<AppName, String> = HashMap::new();
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => {}
            }
            match self.renew(&apps).await {
                Ok(others) => {
                    let now: HashMap<AppName, String> = others
                        .into_iter()
                        .map(|(a, h)| (a, h.to_string()))
                        .collect();
                    for (app, who) in &now {
                        if reported.get(app) != Some(who) {
                            tracing::warn!(app = %app, holder = %who, "another process holds the app's lease; this process does not write to the app until it is free");
                        }
                    }
                    for app in reported.keys() {
                        if !now.contains_key(app) {
                            tracing::info!(app = %app, "lease taken; this process writes to the app again");
                        }
                    }
                    reported = now;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot renew app leases; writes stop when they run out");
                }
            }
        }
        self.release(&apps).await;
    }

    /// Gives up the leases of `apps`.
    pub async fn release(&self, apps: &[AppName]) {
        for app in apps {
            if let Ok(mut h) = self.held.lock() {
                h.remove(app);
            }
            if let Err(e) = self.store.release_lease(app, &self.holder).await {
                tracing::warn!(app = %app, error = %e, "could not release the app's lease; it lapses on its own");
            }
        }
    }
}
