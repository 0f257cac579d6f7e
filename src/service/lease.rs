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

use crate::apply::Fence;
use crate::locks;
use crate::model::AppName;
use crate::report::CycleReport;
use crate::store::{self, LeaseClaim, LeaseGrant, Store};

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
            host: crate::store::this_host(),
            listen: listen.map(str::to_owned),
            since: crate::clock::stamp(Utc::now()),
        }
    }

    /// Reads a stored holder's description; an unreadable one is described as unknown.
    pub fn from_info(info: &str) -> Self {
        serde_json::from_str(info).unwrap_or_else(|_| HolderInfo {
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

/// Whether process `pid` runs on this host (a zombie, killed but not yet reaped, does not).
/// Only Linux can tell; elsewhere every process counts as alive, and its lease lapses.
fn alive(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A lease this process holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// Until when this process may write (a margin before the stored expiry).
    until: Instant,
    /// The fencing token the store gave when this process took the lease.
    generation: i64,
    /// When this process took the lease at this generation (wall clock).
    taken_at: chrono::DateTime<chrono::Utc>,
}

/// The leases this process holds or wants.
pub struct Leases {
    store: Store,
    holder: String,
    info: String,
    pid: u32,
    host: String,
    ttl: Duration,
    held: Mutex<HashMap<AppName, Held>>,
    /// Apps whose lease this process took from another holder (or found free after one),
    /// sent once each time: the service takes over the app (expiries, a cycle, waiting work).
    gained: tokio::sync::broadcast::Sender<AppName>,
}

impl Leases {
    /// Leases for this process, described by `info`.
    pub fn new(store: Store, info: &HolderInfo, ttl: Duration) -> Arc<Self> {
        Arc::new(Leases {
            store,
            holder: uuid::Uuid::new_v4().to_string(),
            info: serde_json::to_string(info).unwrap_or_default(),
            pid: info.pid,
            host: info.host.clone(),
            ttl,
            held: Mutex::new(HashMap::new()),
            gained: tokio::sync::broadcast::channel(64).0,
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
            .is_some_and(|h| Instant::now() < h.until)
    }

    /// The fencing generation of `app`'s lease while this process may write to it, and when
    /// this process took the lease at that generation.
    pub fn generation(&self, app: &AppName) -> Option<(i64, chrono::DateTime<chrono::Utc>)> {
        locks::lock(&self.held, "leases")
            .get(app)
            .filter(|h| Instant::now() < h.until)
            .map(|h| (h.generation, h.taken_at))
    }

    /// The apps this process gains from now on, one message per gain.
    pub fn gains(&self) -> tokio::sync::broadcast::Receiver<AppName> {
        self.gained.subscribe()
    }

    /// Takes or renews the lease of each app. A lease held by a process on this host that no
    /// longer runs is taken at once. Returns the apps someone else holds.
    ///
    /// # Errors
    /// [`store::Error`] when the store cannot be reached; leases already held stay valid
    /// until their time runs out.
    pub async fn renew(
        &self,
        apps: &[AppName],
    ) -> Result<Vec<(AppName, HolderInfo)>, store::Error> {
        Ok(self
            .renew_until(apps)
            .await?
            .into_iter()
            .map(|(app, who, _)| (app, who))
            .collect())
    }

    /// [`Leases::renew`], also returning when each other holder's lease ends.
    async fn renew_until(
        &self,
        apps: &[AppName],
    ) -> Result<Vec<(AppName, HolderInfo, Instant)>, store::Error> {
        let claim = LeaseClaim {
            holder: &self.holder,
            info: &self.info,
            pid: self.pid,
            host: &self.host,
        };
        let mut others = Vec::new();
        for app in apps {
            let asked = Instant::now();
            let now = Utc::now();
            let mut got = match self.store.take_lease(app, &claim, self.ttl, now).await? {
                LeaseGrant::Held(lease) => Ok(lease),
                LeaseGrant::HeldByOther(lease) => Err(lease),
            };
            if let Err(other) = &got
                && other.host == self.host
                && other.pid != 0
                && other.pid != self.pid
                && !alive(other.pid)
            {
                tracing::warn!(app = %app, pid = other.pid, host = %other.host,
                    "the app's lease is held by a process on this host that no longer runs; taking it now");
                if let Some(lease) = self
                    .store
                    .take_over_lease(app, &claim, other, self.ttl, now)
                    .await?
                {
                    got = Ok(lease);
                }
            }
            match got {
                Ok(lease) => {
                    // Stop writing a little before the stored expiry: clocks and a slow
                    // store must not let two writers overlap.
                    let mut held = Held {
                        until: asked + self.ttl.mul_f64(0.8),
                        generation: lease.generation,
                        taken_at: chrono::Utc::now(),
                    };
                    let mut leases = locks::lock(&self.held, "leases");
                    let before = leases.get(app).copied();
                    let gained = before.is_none_or(|b| b.generation != lease.generation);
                    if let Some(b) = before.filter(|_| !gained) {
                        held.taken_at = b.taken_at;
                    }
                    leases.insert(app.clone(), held);
                    drop(leases);
                    if gained {
                        crate::metrics::lease_held(app, true);
                        if lease.generation > 1 {
                            crate::metrics::failover(app);
                        }
                        let _ = self.gained.send(app.clone());
                    }
                }
                Err(other) => {
                    let info = HolderInfo::from_info(&other.info);
                    let lost = locks::lock(&self.held, "leases").remove(app);
                    if let Some(lost) = lost {
                        crate::metrics::lease_held(app, false);
                        tracing::warn!(app = %app, generation = lost.generation, taken_by = %info,
                            "lease lost (this process stalled or could not renew it in time, and another took the app): it stops writing to the app; work in flight is fenced");
                    }
                    let left = (other.until - now).to_std().unwrap_or(Duration::ZERO);
                    others.push((app.clone(), info, asked + left));
                }
            }
        }
        Ok(others)
    }

    /// Renews `apps` every third of the ttl until `stop` resolves, then releases them. An app
    /// another process holds is asked for again as soon as that lease runs out, so a dead
    /// holder is replaced within its lease's end plus a moment, not a third of a ttl later.
    pub async fn keep(
        self: Arc<Self>,
        apps: Vec<AppName>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut reported: HashMap<AppName, String> = HashMap::new();
        let mut next = Instant::now() + self.ttl / 3;
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep_until(next) => {}
            }
            next = Instant::now() + self.ttl / 3;
            match self.renew_until(&apps).await {
                Ok(others) => {
                    let now: HashMap<AppName, String> = others
                        .iter()
                        .map(|(a, h, _)| (a.clone(), h.to_string()))
                        .collect();
                    for (_, _, ends) in &others {
                        next = next.min(*ends + Duration::from_millis(100));
                    }
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
                    next = Instant::now() + Duration::from_secs(1).min(self.ttl / 3);
                }
            }
        }
        self.release(&apps).await;
    }

    /// Gives up the leases of `apps`.
    pub async fn release(&self, apps: &[AppName]) {
        for app in apps {
            if locks::lock(&self.held, "leases").remove(app).is_some() {
                crate::metrics::lease_held(app, false);
            }
            if let Err(e) = self.store.release_lease(app, &self.holder).await {
                tracing::warn!(app = %app, error = %e, "could not release the app's lease; it lapses on its own");
            }
        }
    }
}

impl Fence for Leases {
    fn may_write(&self, app: &AppName) -> bool {
        self.holds(app)
    }

    fn check<'a>(&'a self, app: &'a AppName) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let held = locks::lock(&self.held, "leases").get(app).copied();
            let Some(held) = held.filter(|h| Instant::now() < h.until) else {
                return Err(format!(
                    "app {app}: this process no longer holds the app's lease; it sends nothing more"
                ));
            };
            match self
                .store
                .holds_lease(app, &self.holder, held.generation, Utc::now())
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => {
                    locks::lock(&self.held, "leases").remove(app);
                    crate::metrics::lease_held(app, false);
                    Err(format!(
                        "app {app}: another process took the app's lease (generation {} is stale); this process sends nothing more",
                        held.generation
                    ))
                }
                Err(e) => Err(format!(
                    "app {app}: the lease cannot be checked in the store ({e}); nothing is sent until it can"
                )),
            }
        })
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
