//! Service mode (`scim-sync run`): the engine kept running, with its drivers around it.
//!
//! [`Service::start`] wires the pieces: leases for every app (one writer per app across
//! processes, [`lease`]), expiry timers rebuilt from the store, the start-up cycle, and the
//! full-cycle ticks. Cycles of one app never overlap: each app has a busy lock, and a tick
//! that finds it taken is skipped and counted.
//!
//! The service owns its parts, each in its own file: activation intake (`activation`: the
//! [`limiter`] decides, the push goes through the engine), expiry (`expiry`: a timer per
//! activation, removal at once), the service's side of the PIM poller (`pim`: the
//! [`crate::drive::poller::Intake`] it hands the poller), [`lease`], the holder's side of
//! replicas (`forward`), `overflow = "drain"` (`drain`) and [`push_groups`]. Drivers get narrow
//! handles, never the `Service`; the HTTP face is [`crate::admin`], above this module.
//!
//! Shutdown ([`Service::shutdown`]) stops intake and ticks, lets running operations finish
//! within a grace period, turns pushes that did not finish into deferred activations (the next
//! cycle applies them), and releases the leases.

mod activation;
mod drain;
mod expiry;
mod forward;
pub mod lease;
pub mod limiter;
mod pim;
pub mod push_groups;
mod verify;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Secret};
use crate::drive::poller::{PimPoll, Poller};
use crate::drive::schedule::Ticks;
use crate::engine::{App, CycleOptions, Engine};
use crate::locks;
use crate::model::AppName;
use crate::report::{CycleReport, Outcome, Reason};
use crate::store;

use expiry::ExpiryQueue;
use lease::{HolderInfo, HolderKind, Leases};
use limiter::{PushLimiter, TokioTime};

/// How the service gets its full-cycle ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickSource {
    /// tokio-cron-scheduler (production).
    Cron,
    /// `tokio::time` (tests with paused time).
    Tokio,
}

/// Knobs that are not in the config file.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where ticks come from.
    pub ticks: TickSource,
    /// Lease lifetime without renewal; `None`: `service.lease_ttl` (tests that move paused
    /// time by hours set a longer one).
    pub lease_ttl: Option<Duration>,
    /// How long the webhook waits for pushes to be confirmed before answering.
    pub push_wait: Duration,
    /// Run the start-up cycle.
    pub startup_cycle: bool,
    /// The PIM poller's feed and interval (the Graph source); `None`: no poller, activations
    /// come through the webhook only.
    pub pim: Option<PimPoll>,
    /// The push groups' polled watch (the Graph source with push groups); `None`: the
    /// directory file is watched (file source) or there are no push groups.
    pub watch: Option<crate::drive::watch::PushWatch>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ticks: TickSource::Cron,
            lease_ttl: None,
            push_wait: Duration::from_secs(5),
            startup_cycle: true,
            pim: None,
            watch: None,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The scheduler failed.
    #[error("scheduler: {0}")]
    Scheduler(String),
}

/// One app as the service keeps it.
struct Slot {
    app: App,
    /// Held for the length of a cycle.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// The lease generation under which the limiter last counted the pushes earlier holders
    /// made (see `Service::limit`).
    quota_synced: tokio::sync::Mutex<Option<i64>>,
    /// Woken when the limiter defers an activation of an app with `overflow = "drain"`.
    deferred: tokio::sync::Notify,
}

/// The service's state; its fields are private to this module and its children.
struct Inner {
    cfg: Config,
    engine: Engine,
    apps: BTreeMap<AppName, Slot>,
    limiter: PushLimiter<TokioTime>,
    leases: Arc<Leases>,
    expiry: ExpiryQueue,
    token: Secret,
    options: Options,
    /// Cancelled at shutdown: intake, ticks, expiry timers and retries stop.
    cancel: CancellationToken,
    /// Every spawned cycle, push and expiry removal, so shutdown can wait for them.
    tasks: TaskTracker,
    /// When the last cycle started (or the service, before the first).
    last_cycle: Mutex<Instant>,
    /// Each push group's members in the last snapshot the push-group watch saw.
    push_seen: Mutex<Option<push_groups::Seen>>,
    /// The PIM policy of each assigned group that has one (Graph source), as last read.
    policies: std::sync::RwLock<pim::Policies>,
    cycles_started: AtomicU64,
    cycles_skipped: AtomicU64,
    /// Cancelled last at shutdown: the lease keeper releases the leases and ends.
    release: CancellationToken,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The running service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// What a request to start cycles did (the JSON of `POST /v1/sync`, read back by
/// `sync-now`'s hand-over).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// Apps whose cycle started (or ran, when waited for).
    pub started: Vec<String>,
    /// Apps skipped because a cycle was already running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
    /// Apps skipped because another process holds their lease, with the holder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leased_elsewhere: Vec<String>,
    /// The reports, when the caller waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<CycleReport>>,
}

impl Service {
    /// Starts the service's background work: leases, expiry timers, the start-up cycle, the
    /// ticks and, when [`Options::pim`] is set, the PIM poller. The HTTP face is served
    /// separately ([`crate::admin::router`]).
    ///
    /// # Errors
    /// [`StartError`] when the store or the scheduler cannot be used.
    pub async fn start(
        cfg: Config,
        apps: Vec<App>,
        engine: Engine,
        token: Secret,
        options: Options,
    ) -> Result<Service, StartError> {
        let store = engine.store().clone();
        let info = HolderInfo::this_process(HolderKind::Run, Some(&cfg.service.listen));
        let ttl = options.lease_ttl.unwrap_or(cfg.service.lease_ttl);
        let leases = Leases::new(store.clone(), &info, ttl);
        // Every write goes through the engine, and the engine writes only under the lease.
        let engine = engine.with_fence(leases.clone());
        let mut gains = leases.gains();
        let mut names: Vec<AppName> = apps.iter().map(|a| a.cfg.name.clone()).collect();
        if options.pim.is_some() || options.watch.is_some() {
            // The PIM poller and the push groups' polled watch run on one replica at a time:
            // the holder of the poller's lease.
            names.push(AppName::from(pim::POLLER_LEASE));
        }
        for (app, who) in leases.renew(&names).await? {
            tracing::warn!(app = %app, holder = %who, "another process holds the app's lease; its cycles and pushes wait until it is free");
        }
        // What is held from the start is the start's to set up (below): only later gains
        // are take-overs.
        while gains.try_recv().is_ok() {}
        for app in names.iter().filter(|a| leases.holds(a)) {
            recover_pending(&store, app).await?;
        }
        // Pushes and expiries between cycles use what earlier runs learnt about each app.
        for app in &apps {
            if let Err(e) =
                crate::apply::restore_app_facts(&store, &app.cfg.name, &app.client).await
            {
                tracing::warn!(app = %app.cfg.name, error = %e, "could not read what earlier runs learnt about the app");
            }
        }
        // Ended activations are kept a week for `status` and audits, then dropped.
        match store
            .prune_activations(chrono::Utc::now() - chrono::Duration::days(7))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "activations ended over a week ago pruned from the store"),
            Err(e) => tracing::warn!(error = %e, "could not prune ended activations"),
        }
        let limiter = PushLimiter::on_tokio_time(&cfg.apps);
        let (expiry, expiry_rx) = ExpiryQueue::new();
        let slots = apps
            .into_iter()
            .map(|app| {
                (
                    app.cfg.name.clone(),
                    Slot {
                        app,
                        busy: Arc::default(),
                        quota_synced: tokio::sync::Mutex::new(None),
                        deferred: tokio::sync::Notify::new(),
                    },
                )
            })
            .collect();
        let ticks = match options.ticks {
            TickSource::Cron => Ticks::cron(cfg.service.full_sync_interval)
                .await
                .map_err(|e| StartError::Scheduler(e.to_string()))?,
            TickSource::Tokio => Ticks::interval(cfg.service.full_sync_interval),
        };
        let svc = Service {
            inner: Arc::new(Inner {
                cfg,
                engine,
                apps: slots,
                limiter,
                leases: leases.clone(),
                expiry,
                token,
                options,
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
                last_cycle: Mutex::new(Instant::now()),
                push_seen: Mutex::new(None),
                policies: std::sync::RwLock::default(),
                cycles_started: AtomicU64::new(0),
                cycles_skipped: AtomicU64::new(0),
                release: CancellationToken::new(),
                keeper: Mutex::new(None),
            }),
        };
        let release = svc.inner.release.clone();
        let keeper = tokio::spawn(leases.keep(names, async move { release.cancelled().await }));
        *locks::lock(&svc.inner.keeper, "lease keeper") = Some(keeper);
        svc.spawn_expiry(expiry_rx).await?;
        svc.spawn_policies().await;
        if svc.inner.options.startup_cycle {
            svc.cycles(None, Reason::Startup, false).await;
        }
        svc.spawn_takeovers(gains);
        svc.spawn_forwarded();
        svc.spawn_drains();
        svc.spawn_push_watch();
        svc.spawn_ticks(ticks);
        if let Some(poll) = svc.inner.options.pim.clone() {
            let poller = Poller::new(poll.feed, Arc::new(svc.clone()));
            svc.inner
                .tasks
                .spawn(poller.run(poll.every, svc.inner.cancel.clone()));
        }
        Ok(svc)
    }

    /// Takes over each app whose lease this process gains after starting (its holder died,
    /// froze or stopped): what that holder left unconfirmed is deferred, the app's expiries
    /// are armed from the store (an activation that ended meanwhile is removed at once), and
    /// a cycle runs at once, applying what was deferred.
    fn spawn_takeovers(&self, mut gains: tokio::sync::broadcast::Receiver<AppName>) {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                let app = tokio::select! {
                    () = svc.inner.cancel.cancelled() => break,
                    got = gains.recv() => match got {
                        Ok(app) => app,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    },
                };
                if !svc.inner.apps.contains_key(&app) {
                    continue;
                }
                tracing::info!(app = %app, "lease taken: arming the app's expiries and running its cycle now");
                let store = svc.inner.engine.store();
                if let Err(e) = recover_pending(store, &app).await {
                    tracing::error!(app = %app, error = %e, "could not defer the pushes the previous holder left");
                }
                match store.unrevoked_activations().await {
                    Ok(rows) => {
                        for row in rows.into_iter().filter(|r| r.app == app) {
                            svc.inner.expiry.schedule(row.activation);
                        }
                    }
                    Err(e) => {
                        tracing::error!(app = %app, error = %e, "could not read the app's activations; their expiry waits for the next start");
                    }
                }
                svc.cycles(Some(std::slice::from_ref(&app)), Reason::Startup, false)
                    .await;
            }
        });
    }

    fn spawn_ticks(&self, mut ticks: Ticks) {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = svc.inner.cancel.cancelled() => break,
                    tick = ticks.next() => {
                        if tick.is_none() {
                            break;
                        }
                        svc.cycles(None, Reason::Schedule, false).await;
                    }
                }
            }
            ticks.stop().await;
        });
    }

    /// The loaded config.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The webhook bearer token.
    pub fn token(&self) -> &Secret {
        &self.inner.token
    }

    /// Cycles started since the service started.
    pub fn cycles_started(&self) -> u64 {
        self.inner.cycles_started.load(Ordering::Relaxed)
    }

    /// App cycles skipped since the service started (busy, or leased elsewhere).
    pub fn cycles_skipped(&self) -> u64 {
        self.inner.cycles_skipped.load(Ordering::Relaxed)
    }

    /// Starts a full cycle for the named apps (all when `None`). An app whose cycle is still
    /// running is skipped and counted, unless `wait`, which waits for it and then runs; an app
    /// whose lease another process holds is skipped. With `wait` the reports come back.
    pub async fn cycles(&self, names: Option<&[AppName]>, reason: Reason, wait: bool) -> Started {
        self.cycles_with(names, reason, wait, false).await
    }

    /// [`Service::cycles`], every app read back and repaired (`verify`) or, otherwise, those
    /// whose last verification is older than their `verify_interval`.
    pub async fn cycles_with(
        &self,
        names: Option<&[AppName]>,
        reason: Reason,
        wait: bool,
        verify: bool,
    ) -> Started {
        let mut out = Started::default();
        let mut guards: Vec<OwnedMutexGuard<()>> = Vec::new();
        let mut apps = Vec::new();
        for (name, slot) in &self.inner.apps {
            if names.is_some_and(|n| !n.contains(name)) {
                continue;
            }
            if !self.inner.leases.holds(name) {
                crate::metrics::cycle_skipped(name, "lease");
                self.inner.cycles_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(app = %name, reason = %reason, "cycle skipped: another process holds the app's lease");
                out.leased_elsewhere.push(name.to_string());
                continue;
            }
            let guard = if wait {
                Some(slot.busy.clone().lock_owned().await)
            } else {
                slot.busy.clone().try_lock_owned().ok()
            };
            match guard {
                Some(g) => {
                    guards.push(g);
                    apps.push(slot.app.clone());
                    out.started.push(name.to_string());
                }
                None => {
                    crate::metrics::cycle_skipped(name, "busy");
                    self.inner.cycles_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(app = %name, reason = %reason, "cycle skipped: the app's previous cycle is still running");
                    out.busy.push(name.to_string());
                }
            }
        }
        if apps.is_empty() {
            if wait {
                out.apps = Some(Vec::new());
            }
            return out;
        }
        *locks::lock(&self.inner.last_cycle, "last cycle") = Instant::now();
        self.inner.cycles_started.fetch_add(1, Ordering::Relaxed);
        let engine = self.inner.engine.clone();
        let store = engine.store().clone();
        let started = out.started.clone();
        let mut verifying = Vec::new();
        let mut plain = Vec::new();
        for app in apps {
            if verify || verify::due(&store, &app.cfg, engine.clock().now()).await {
                verifying.push(app);
            } else {
                plain.push(app);
            }
        }
        let task = self.inner.tasks.spawn(async move {
            let mut reports = Vec::new();
            for (apps, verify) in [(plain, false), (verifying, true)] {
                if apps.is_empty() {
                    continue;
                }
                let opts = CycleOptions {
                    reason,
                    dry_run: false,
                    progress: false,
                    verify,
                };
                let run = engine.cycle(&apps, opts).await;
                if verify {
                    verify::done(engine.store(), &run, engine.clock().now()).await;
                }
                reports.extend(run.apps.into_iter().map(|c| c.report));
            }
            drop(guards);
            reports
        });
        let watch = async move {
            match task.await {
                Ok(reports) => reports,
                Err(e) => {
                    // A panic in a cycle is a failed cycle, not "no reports".
                    tracing::error!(error = %e, apps = ?started, "the cycle task failed");
                    let why = format!("the cycle stopped unexpectedly: {e}");
                    let now = crate::clock::stamp(chrono::Utc::now());
                    let reports = started
                        .iter()
                        .map(|app| {
                            let mut r = CycleReport::new(app, reason, now.clone(), false);
                            r.outcome = Outcome::Failed;
                            r.error = Some(why.clone());
                            r.finished_at = now.clone();
                            r
                        })
                        .collect::<Vec<_>>();
                    for r in &reports {
                        if let Err(e) = store.save_report(r).await {
                            tracing::error!(app = %r.app, error = %e, "could not save the cycle report");
                        }
                    }
                    reports
                }
            }
        };
        if wait {
            out.apps = Some(watch.await);
        } else {
            self.inner.tasks.spawn(async move {
                watch.await;
            });
        }
        out
    }

    /// The Prometheus text of `/metrics`, with the activation gauges refreshed from the
    /// store. `None` when no recorder is installed in this process.
    pub async fn metrics_text(&self) -> Option<String> {
        let handle = crate::metrics::install()?;
        let now = chrono::Utc::now();
        for name in self.inner.apps.keys() {
            if let Ok(live) = self.inner.engine.store().live_activations(name, now).await {
                let deferred = live
                    .iter()
                    .filter(|a| a.state == crate::store::PushState::Deferred)
                    .count();
                crate::metrics::activation_gauges(name, deferred, live.len() - deferred);
            }
        }
        handle.run_upkeep();
        Some(handle.render())
    }

    /// Ready: the store answers and a cycle started within twice the interval (a stalled
    /// scheduler fails this).
    ///
    /// # Errors
    /// Why the service is not ready.
    pub async fn ready(&self) -> Result<(), String> {
        self.inner
            .engine
            .store()
            .ping()
            .await
            .map_err(|e| format!("state store unreachable: {e}"))?;
        let since = locks::lock(&self.inner.last_cycle, "last cycle").elapsed();
        let limit = self.inner.cfg.service.full_sync_interval * 2;
        if since > limit {
            return Err(format!(
                "no cycle started for {} (more than twice full_sync_interval): the scheduler is not ticking",
                humantime::format_duration(Duration::from_secs(since.as_secs()))
            ));
        }
        Ok(())
    }

    /// Stops the service: no new intake, ticks or timers; operations in flight get `grace` to
    /// finish; pushes that did not finish become deferred; leases are released. Returns how
    /// many tasks were still running when the grace period ended.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let inner = &self.inner;
        inner.cancel.cancel();
        inner.engine.shut_down();
        inner.tasks.close();
        let left = if tokio::time::timeout(grace, inner.tasks.wait())
            .await
            .is_err()
        {
            inner.tasks.len()
        } else {
            0
        };
        if left > 0 {
            tracing::warn!(
                left,
                grace = %humantime::format_duration(grace),
                "operations still running at the end of the shutdown grace period were abandoned; the next start redoes them"
            );
        }
        for app in inner.apps.keys().filter(|a| inner.leases.holds(a)) {
            match inner
                .engine
                .store()
                .pending_to_deferred_in(
                    app,
                    "the service stopped before the app confirmed the push; the next cycle applies it",
                )
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::warn!(app = %app, n, "unconfirmed pushes recorded as deferred"),
                Err(e) => tracing::error!(app = %app, error = %e, "could not record unconfirmed pushes"),
            }
        }
        inner.release.cancel();
        // The lease keeper releases the leases on its way out.
        let keeper = locks::lock(&inner.keeper, "lease keeper").take();
        if let Some(keeper) = keeper {
            let _ = keeper.await;
        }
        left
    }
}

/// Defers the pushes an earlier holder of `app`'s lease left unconfirmed (it stopped or died
/// before the app answered): the next cycle applies them.
async fn recover_pending(store: &store::Store, app: &AppName) -> Result<(), store::Error> {
    let n = store
        .pending_to_deferred_in(
            app,
            "the process that held the app stopped before the app confirmed the push; the next cycle applies it",
        )
        .await?;
    if n > 0 {
        tracing::warn!(app = %app, n, "pushes left unconfirmed by an earlier holder are deferred to the next cycle");
    }
    Ok(())
}
