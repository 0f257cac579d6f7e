//! Leases: one writer per app across processes (SPEC §6.2).
//!
//! A process writes to an app only while it holds the app's lease in the store. A lease lasts
//! [`Leases::ttl`] and the holder renews it every third of that, so a crashed holder's lease
//! lapses within one `ttl` and another process can take over. `run` holds its apps' leases for
//! its whole life; `sync-now` holds them for one cycle and, when `run` holds them, hands the
//! cycle to the service instead ([`negotiate`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::locks;
use crate::model::AppName;
use crate::report::CycleReport;
use crate::store::{self, LeaseHolder, Store};

/// How long a lease lasts without renewal when nothing says otherwise (`service.lease_ttl`'s
/// default).
pub const TTL: Duration = Duration::from_secs(15);

/// What kind of process holds a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolderKind {
    /// `scim-sync run`: holds its leases for its whole life, and takes hand-overs.
    Run,
    /// `scim-sync sync-now`: holds them for one cycle.
    SyncNow,
    /// A holder whose stored description could not be read.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for HolderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HolderKind::Run => "run",
            HolderKind::SyncNow => "sync-now",
            HolderKind::Unknown => "unknown",
        })
    }
}

/// Who holds a lease, as other processes see it (stored as JSON next to the lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// `run` or `sync-now`.
    pub kind: HolderKind,
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
    pub fn this_process(kind: HolderKind, listen: Option<&str>) -> Self {
        HolderInfo {
            kind,
            pid: std::process::id(),
            host: host_name(),
            listen: listen.map(str::to_owned),
            since: crate::clock::stamp(Utc::now()),
        }
    }

    /// Reads a stored holder; an unreadable one is described as unknown.
    pub fn parse(raw: &LeaseHolder) -> Self {
        serde_json::from_str(&raw.info).unwrap_or_else(|_| HolderInfo {
            kind: HolderKind::Unknown,
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
        locks::lock(&self.held, "leases")
            .get(app)
            .is_some_and(|until| Instant::now() < *until)
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
                    locks::lock(&self.held, "leases").insert(app.clone(), until);
                }
                Some(other) => {
                    locks::lock(&self.held, "leases").remove(app);
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
            locks::lock(&self.held, "leases").remove(app);
            if let Err(e) = self.store.release_lease(app, &self.holder).await {
                tracing::warn!(app = %app, error = %e, "could not release the app's lease; it lapses on its own");
            }
        }
    }
}

/// How `sync-now` hands a cycle to the running service that holds an app's lease.
pub trait HandOver: Send + Sync {
    /// Asks the service whose admin HTTP is `listen` to run the cycles of `apps` and waits
    /// for their reports. An error says why it could not.
    fn hand_over<'a>(
        &'a self,
        listen: &'a str,
        apps: &'a [AppName],
    ) -> BoxFuture<'a, Result<Vec<CycleReport>, String>>;
}

/// What [`negotiate`] settled.
#[derive(Debug, Default)]
pub struct Negotiated {
    /// The apps whose lease this process now holds: run their cycles here.
    pub mine: Vec<AppName>,
    /// The reports of the cycles a running service ran for us.
    pub handed: Vec<CycleReport>,
}

/// Why [`negotiate`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A running service holds the lease and the cycle could not be handed to it.
    #[error(
        "app {app}: its lease is held by {holder}; hand the cycle to it (set ${token_env} so sync-now can call it) or stop it"
    )]
    HeldByService {
        /// The app.
        app: AppName,
        /// Who holds it.
        holder: HolderInfo,
        /// The variable that holds the webhook token.
        token_env: String,
    },
}

/// Takes the lease of every app in `apps` for one `sync-now`. An app whose lease a running
/// service holds has its cycle handed to that service (`hand`); an app another `sync-now`
/// holds is waited for, checking every second. A live service renews for ever, so one that
/// could not take the hand-over is waited for two lease lifetimes, then given up on
/// (`token_env` names the webhook token's variable in that message). `say` is told what
/// happens, one line at a time.
///
/// # Errors
/// [`NegotiationError`].
pub async fn negotiate(
    leases: &Leases,
    apps: &[AppName],
    hand: &dyn HandOver,
    token_env: &str,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<Negotiated, NegotiationError> {
    let mut waiting = leases.renew(apps).await?;
    let mut out = Negotiated::default();
    let services: Vec<(AppName, HolderInfo)> = waiting
        .iter()
        .filter(|(_, who)| who.kind == HolderKind::Run && who.listen.is_some())
        .cloned()
        .collect();
    if let Some((_, who)) = services.first() {
        let asked: Vec<AppName> = services.iter().map(|(a, _)| a.clone()).collect();
        let listen = who.listen.clone().unwrap_or_default();
        match hand.hand_over(&listen, &asked).await {
            Ok(reports) => {
                for app in &asked {
                    say(format!(
                        "{app}: the running service holds its lease ({who}); the cycle ran there"
                    ));
                }
                waiting.retain(|(a, _)| !asked.contains(a));
                out.handed = reports;
            }
            Err(e) => {
                let names: Vec<&str> = asked.iter().map(AppName::as_str).collect();
                say(format!(
                    "{}: the running service holds the lease ({who}) and the cycle could not be handed to it: {e}; waiting for the lease",
                    names.join(", ")
                ));
            }
        }
    }
    let started = Instant::now();
    let mut told = std::collections::BTreeSet::new();
    while !waiting.is_empty() {
        for (app, who) in &waiting {
            if told.insert(app.clone()) {
                say(format!("{app}: waiting for its lease, held by {who}"));
            }
            if who.kind == HolderKind::Run && started.elapsed() > leases.ttl() * 2 {
                return Err(NegotiationError::HeldByService {
                    app: app.clone(),
                    holder: who.clone(),
                    token_env: token_env.to_owned(),
                });
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let still: Vec<AppName> = waiting.iter().map(|(a, _)| a.clone()).collect();
        waiting = leases.renew(&still).await?;
        for app in &still {
            if !waiting.iter().any(|(a, _)| a == app) {
                say(format!(
                    "{app}: lease taken after {}s",
                    started.elapsed().as_secs()
                ));
            }
        }
    }
    out.mine = apps.iter().filter(|a| leases.holds(a)).cloned().collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that takes every hand-over and counts them.
    struct Takes(std::sync::atomic::AtomicUsize);

    impl HandOver for Takes {
        fn hand_over<'a>(
            &'a self,
            _listen: &'a str,
            apps: &'a [AppName],
        ) -> BoxFuture<'a, Result<Vec<CycleReport>, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let reports = apps
                .iter()
                .map(|a| {
                    CycleReport::new(
                        a.as_str(),
                        crate::report::Reason::SyncNow,
                        String::new(),
                        false,
                    )
                })
                .collect();
            Box::pin(async move { Ok(reports) })
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("state.db").display());
        let store = Store::open(&url).await.unwrap();
        (tmp, store)
    }

    fn holder(kind: HolderKind, listen: Option<&str>) -> HolderInfo {
        HolderInfo::this_process(kind, listen)
    }

    /// Runs `work` under paused time, a second at a time. Paused time would jump ahead
    /// whenever the runtime waits on SQLite's worker thread (and time out the pool), so a
    /// spinning task holds the clock still and this moves it, letting real time pass for the
    /// store after each step.
    async fn stepped<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
        let hold = tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        });
        let work = tokio::spawn(work);
        while !work.is_finished() {
            let settle = std::time::Instant::now() + Duration::from_millis(10);
            while std::time::Instant::now() < settle {
                tokio::task::yield_now().await;
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        hold.abort();
        work.await.unwrap()
    }

    #[tokio::test]
    async fn an_app_a_service_holds_is_handed_over_and_the_rest_taken() {
        let (_tmp, store) = store().await;
        let (crm, hr) = (AppName::from("crm"), AppName::from("hr"));
        let service = Leases::new(
            store.clone(),
            &holder(HolderKind::Run, Some("127.0.0.1:1")),
            TTL,
        );
        assert!(
            service
                .renew(std::slice::from_ref(&crm))
                .await
                .unwrap()
                .is_empty()
        );
        let me = Leases::new(store, &holder(HolderKind::SyncNow, None), TTL);
        let takes = Takes(0.into());
        let mut said = Vec::new();
        let got = negotiate(&me, &[crm.clone(), hr.clone()], &takes, "TOKEN", &mut |l| {
            said.push(l)
        })
        .await
        .unwrap();
        assert_eq!(got.mine, [hr]);
        assert_eq!(got.handed.len(), 1);
        assert_eq!(got.handed[0].app, "crm");
        assert_eq!(takes.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(
            said[0].starts_with("crm: the running service holds its lease"),
            "{said:?}"
        );
    }

    #[tokio::test]
    async fn another_sync_now_is_waited_for_until_it_lets_go() {
        let (_tmp, store) = store().await;
        let crm = AppName::from("crm");
        let other = Leases::new(store.clone(), &holder(HolderKind::SyncNow, None), TTL);
        assert!(
            other
                .renew(std::slice::from_ref(&crm))
                .await
                .unwrap()
                .is_empty()
        );
        let me = Leases::new(store, &holder(HolderKind::SyncNow, None), TTL);
        tokio::time::pause();
        let release = {
            let (other, crm) = (other.clone(), crm.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                other.release(&[crm]).await;
            })
        };
        let (got, said) = stepped({
            let (me, crm) = (me.clone(), crm.clone());
            async move {
                let mut said = Vec::new();
                let got = negotiate(&me, &[crm], &Takes(0.into()), "TOKEN", &mut |l| {
                    said.push(l)
                })
                .await
                .unwrap();
                (got, said)
            }
        })
        .await;
        release.await.unwrap();
        assert_eq!(got.mine, std::slice::from_ref(&crm));
        assert!(got.handed.is_empty());
        assert_eq!(
            said.len(),
            2,
            "told once that it waits, once that it has it: {said:?}"
        );
        assert!(
            said[0].starts_with("crm: waiting for its lease"),
            "{said:?}"
        );
        let secs: u64 = said[1]
            .strip_prefix("crm: lease taken after ")
            .and_then(|t| t.strip_suffix('s'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{said:?}"));
        assert!(secs >= 5, "not taken before it was released: {said:?}");
        assert!(me.holds(&crm));
    }

    #[tokio::test]
    async fn a_service_that_cannot_take_the_hand_over_is_given_up_on_after_two_lifetimes() {
        let (_tmp, store) = store().await;
        let crm = AppName::from("crm");
        // A service without an admin address cannot be handed a cycle.
        let service = Leases::new(store.clone(), &holder(HolderKind::Run, None), TTL);
        assert!(
            service
                .renew(std::slice::from_ref(&crm))
                .await
                .unwrap()
                .is_empty()
        );
        let me = Leases::new(store, &holder(HolderKind::SyncNow, None), TTL);
        tokio::time::pause();
        // The service renews its lease for as long as it runs.
        let keeper = tokio::spawn(service.keep(vec![crm.clone()], std::future::pending()));
        let started = Instant::now();
        let err = stepped({
            let (me, crm) = (me.clone(), crm.clone());
            async move {
                negotiate(&me, &[crm], &Takes(0.into()), "HOOK_TOKEN", &mut |_| {})
                    .await
                    .unwrap_err()
            }
        })
        .await;
        keeper.abort();
        assert!(
            started.elapsed() > TTL * 2,
            "gave up after {:?}",
            started.elapsed()
        );
        let msg = err.to_string();
        assert!(msg.contains("set $HOOK_TOKEN"), "{msg}");
        assert!(!me.holds(&crm));
    }
}
