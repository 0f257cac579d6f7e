//! The engine: reconcile apps with the source: full cycles, and one-membership pushes.
//!
//! A cycle reads the source once, then per app: loads the observed state from the store, then
//! the live activations, maps the snapshot plus those activations to desired state, plans
//! (pure), and either returns the plan (`dry_run`) or applies it and saves the report. Every
//! driver (`sync-now`, the demo, the scheduler, activation pushes and expiries) goes through
//! this module; none talks SCIM directly.
//!
//! A push ([`Engine::push`]) and an expiry ([`Engine::revoke`]) are the same reconcile scoped
//! to one (app, group, user): desired and observed state are cut down to that user and that
//! group, so the plan can only create or re-enable the user, create the group, and add or
//! remove that one member.
//!
//! A failed source read fails every app's cycle before planning: nothing is deprovisioned on a
//! read we cannot trust.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{self, Fence, Target};
use crate::clock::{self, SharedClock};
use crate::config::{AppConfig, Secret};
use crate::locks;
use crate::mapping;
use crate::model::{
    Desired, DesiredGroup, DesiredUser, Directory, Interner, Learnt, Observed, SourceId,
};
use crate::plan::{self, Op, Plan, Policy, UserEffect};
use crate::report::{CycleReport, ObjectError, Outcome, Reason};
use crate::scim::{self, ClientOptions, RetryPolicy, ScimClient};
use crate::source::{Eligibility, Source};
use crate::store::{Activation, AppActivation, PushState, Store};

/// One configured app with its SCIM client, kept across cycles.
#[derive(Clone, Debug)]
pub struct App {
    /// Its settings.
    pub cfg: AppConfig,
    /// Its client (counts requests, remembers the removal form).
    pub client: ScimClient,
}

impl App {
    /// Builds the app's client with the given token.
    ///
    /// # Errors
    /// [`scim::Error`] when the client cannot be built (bad base URL, TLS setup).
    pub fn new(cfg: AppConfig, token: &Secret) -> Result<App, scim::Error> {
        let client = ScimClient::new(ClientOptions {
            app: cfg.name.clone(),
            base_url: cfg.base_url.clone(),
            token: token.expose().to_owned(),
            timeout: cfg.timeout,
            concurrency: cfg.concurrency,
            retry: RetryPolicy::default(),
            max_response: cfg.max_response,
            profile: cfg.profile,
        })?;
        Ok(App { cfg, client })
    }
}

/// What one cycle of one app produced.
#[derive(Clone, Debug)]
pub struct AppCycle {
    /// The report (saved in the store unless dry run).
    pub report: CycleReport,
    /// The plan computed (applied, or only printed for a dry run).
    pub plan: Plan,
    /// What this cycle learnt about the app that changes what is sent to it, one line each
    /// (see [`Learnt::news_since`]).
    pub learnt: Vec<String>,
}

/// The result of one cycle over several apps.
#[derive(Debug)]
pub struct CycleRun {
    /// One entry per app, in the order given.
    pub apps: Vec<AppCycle>,
    /// The source error that aborted every app's cycle, if any.
    pub source_error: Option<crate::source::Error>,
}

/// Options of one cycle.
#[derive(Clone, Copy, Debug)]
pub struct CycleOptions {
    /// Why the cycle runs.
    pub reason: Reason,
    /// Plan only; send no write.
    pub dry_run: bool,
    /// Draw a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Read back every managed object from the app first and repair what differs (drift;
    /// [`crate::apply::verify`]).
    pub verify: bool,
}

/// What an expiry did for one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// The app confirmed the removal, or never held the membership.
    Removed,
    /// The membership stays, and why.
    Kept(KeptBecause),
    /// The app (or the store) did not confirm: retry. The text is the app's or the store's
    /// own error detail.
    Failed(String),
}

/// Why an ended activation's membership stays in the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptBecause {
    /// The source lists the user as a standing member of the group.
    StandingMember,
    /// Another live activation of the same (group, user) backs it.
    OtherActivation,
}

impl std::fmt::Display for KeptBecause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeptBecause::StandingMember => "the source lists the user as a member",
            KeptBecause::OtherActivation => "another live activation backs the membership",
        })
    }
}

/// Source reads begun, and the number of the last one that succeeded.
#[derive(Default)]
struct ReadCounts {
    started: AtomicU64,
    succeeded: AtomicU64,
}

/// Drops `state` on a thread of its own: freeing a tenant's desired and observed state object
/// by object takes a tenth of a second per 100k users, which is not the cycle's to wait for.
/// (Should no thread start, it is dropped here.)
fn free_elsewhere<T: Send + 'static>(state: T) {
    let _ = std::thread::Builder::new()
        .name("free".into())
        .spawn(move || drop(state));
}

/// The (group, user) memberships that `live` activations back.
fn backed(live: &[AppActivation]) -> Vec<(SourceId, SourceId)> {
    live.iter()
        .map(|a| (a.activation.group.clone(), a.activation.user.clone()))
        .collect()
}

/// The reconcile engine: a source, a store, and the last snapshot read.
#[derive(Clone)]
pub struct Engine {
    source: Arc<dyn Source>,
    store: Store,
    /// The last complete snapshot, for pushes and expiries between cycles.
    snapshot: Arc<RwLock<Option<Arc<Directory>>>>,
    /// One source read at a time.
    reading: Arc<tokio::sync::Mutex<()>>,
    /// Source reads begun, and the number of the last one that succeeded: a caller that
    /// needs a fresh snapshot takes one begun after it asked instead of reading again.
    reads: Arc<ReadCounts>,
    /// Cancelled at shutdown: running applies send nothing more.
    cancel: CancellationToken,
    /// Wall time, for activations' expiry.
    clock: SharedClock,
    /// The leases writes need (service mode, `sync-now`); `None`: no lease is needed (a
    /// dry run, the demo's first steps, tests).
    fence: Option<Arc<dyn Fence>>,
}

impl Engine {
    /// An engine reading `source` and remembering in `store`, on the system clock.
    pub fn new(source: Arc<dyn Source>, store: Store) -> Self {
        Engine {
            source,
            store,
            snapshot: Arc::default(),
            reading: Arc::default(),
            reads: Arc::default(),
            cancel: CancellationToken::new(),
            clock: clock::system(),
            fence: None,
        }
    }

    /// The same engine writing only while `fence` says this process holds the app's lease:
    /// checked before each phase and push (the store's generation) and before each operation
    /// (the lease's time, no IO).
    pub fn with_fence(mut self, fence: Arc<dyn Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The same engine on another clock (tests run the service under paused time with
    /// [`crate::clock::TokioClock`]).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The clock activations are judged by.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Stops every running apply after its operations in flight; nothing new is sent. The
    /// engine's cycles and pushes stay stopped.
    pub fn shut_down(&self) {
        self.cancel.cancel();
    }

    /// Whether [`Engine::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The last snapshot read by a cycle or a refresh, reading the source when there is none.
    /// A caller that finds a read under way (the start-up cycle's, say) waits for it and
    /// takes its snapshot rather than reading the source a second time.
    ///
    /// # Errors
    /// The source's error when it has to be read and cannot be.
    pub async fn directory(&self) -> Result<Arc<Directory>, crate::source::Error> {
        if let Some(d) = self.cached_directory() {
            return Ok(d);
        }
        let _one = self.reading.lock().await;
        if let Some(d) = self.cached_directory() {
            return Ok(d);
        }
        self.read_source().await
    }

    /// A snapshot read after this call (one read at a time: a read that began after this
    /// caller asked answers it too, so callers that arrive together share one read) and keeps
    /// it for pushes and expiries.
    ///
    /// # Errors
    /// The source's error; the previous snapshot is kept then.
    pub async fn refresh_directory(&self) -> Result<Arc<Directory>, crate::source::Error> {
        let asked = self.reads.started.load(Ordering::SeqCst);
        let _one = self.reading.lock().await;
        if self.reads.succeeded.load(Ordering::SeqCst) > asked
            && let Some(d) = self.cached_directory()
        {
            return Ok(d);
        }
        self.read_source().await
    }

    /// Reads the source and keeps the snapshot; the caller holds `reading`.
    async fn read_source(&self) -> Result<Arc<Directory>, crate::source::Error> {
        let n = self.reads.started.fetch_add(1, Ordering::SeqCst) + 1;
        let d = Arc::new(self.source.snapshot().await?);
        self.keep(&d);
        self.reads.succeeded.fetch_max(n, Ordering::SeqCst);
        Ok(d)
    }

    /// What the source can say cheaply about one user's eligibility (see
    /// [`Source::eligibility`]).
    pub async fn eligibility(&self, group: &SourceId, user: &SourceId) -> Eligibility {
        self.source.eligibility(group, user).await
    }

    /// The last snapshot read, if any, without reading the source.
    pub fn cached_directory(&self) -> Option<Arc<Directory>> {
        locks::read(&self.snapshot, "snapshot").clone()
    }

    fn keep(&self, d: &Arc<Directory>) {
        *locks::write(&self.snapshot, "snapshot") = Some(d.clone());
    }

    /// Now, as the timestamps of reports are written.
    fn stamp(&self) -> String {
        clock::stamp(self.clock.now())
    }

    /// Runs one cycle for each of `apps`, concurrently, reading the source once.
    pub async fn cycle(&self, apps: &[App], opts: CycleOptions) -> CycleRun {
        let started = self.stamp();
        let read = {
            let _one = self.reading.lock().await;
            self.read_source().await
        };
        let snapshot = match read {
            Ok(d) => d,
            Err(e) => {
                let why = format!("source read failed, nothing was changed: {e}");
                tracing::warn!(source = %self.source.describe(), error = %e, "source read failed; every app's cycle is aborted");
                let mut out = Vec::new();
                for app in apps {
                    let mut report = CycleReport::new(
                        app.cfg.name.as_str(),
                        opts.reason,
                        started.clone(),
                        opts.dry_run,
                    );
                    report.outcome = Outcome::Failed;
                    report.error = Some(why.clone());
                    report.finished_at = self.stamp();
                    if !opts.dry_run {
                        self.save(&report).await;
                    }
                    out.push(AppCycle {
                        report,
                        plan: Plan::default(),
                        learnt: Vec::new(),
                    });
                }
                return CycleRun {
                    apps: out,
                    source_error: Some(e),
                };
            }
        };
        let bars = indicatif::MultiProgress::with_draw_target(if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let apps = futures::future::join_all(apps.iter().map(|app| {
            let bar = bars.add(ProgressBar::no_length());
            self.app_cycle(app, &snapshot, opts, bar)
        }))
        .await;
        CycleRun {
            apps,
            source_error: None,
        }
    }

    async fn app_cycle(
        &self,
        app: &App,
        dir: &Directory,
        opts: CycleOptions,
        bar: ProgressBar,
    ) -> AppCycle {
        let name = &app.cfg.name;
        let span = tracing::info_span!("cycle", app = %name, reason = ?opts.reason, dry_run = opts.dry_run);
        async move {
            let mut report = CycleReport::new(name.as_str(), opts.reason, self.stamp(), opts.dry_run);
            let fail = |mut report: CycleReport, why: String| {
                tracing::warn!(app = %name, error = %why, "cycle failed before any change");
                report.outcome = Outcome::Failed;
                report.error = Some(why);
                report.finished_at = self.stamp();
                report
            };

            crate::metrics::cycle_started(name);
            let clock = std::time::Instant::now();
            // Discovery (first contact, or a changed configuration) and a verification's
            // read-back count in `requests`.
            let reads_from = app.client.requests_sent();
            let prior = self.store.learnt(name).await.ok().flatten();
            let learnt = match self.learn(app, opts.dry_run).await {
                Ok(l) => l,
                Err(e) => {
                    report.requests = app.client.requests_sent() - reads_from;
                    let report = fail(report, e.to_string());
                    return self.finish(report, Plan::default(), opts, clock).await;
                }
            };
            let keep = keep(&app.cfg);
            let withheld = learnt.withheld(&keep);
            let desired_with = |live: &[AppActivation]| {
                let mut d = mapping::desired_for_app(dir, &app.cfg, &backed(live))?;
                learnt.withhold(&keep, d.desired.users.values_mut().map(|u| &mut u.attrs));
                Ok::<_, mapping::Error>(d)
            };
            // Desired state before observed, so that a user the app holds as wanted shares
            // the wanted attributes (held once, known unchanged without comparing).
            let first = match self.store.live_activations(name, self.clock.now()).await {
                Ok(l) => l,
                Err(e) => {
                    let report = fail(report, e.to_string());
                    return self.finish(report, Plan::default(), opts, clock).await;
                }
            };
            let mut desired = match desired_with(&first) {
                Ok(d) => d,
                Err(e) => {
                    let report = fail(report, e.to_string());
                    return self.finish(report, Plan::default(), opts, clock).await;
                }
            };
            // Ids shared with the snapshot's.
            let held = &mut Interner::holding(dir.users.keys());
            let observed = match self
                .store
                .load_observed_against(name, &desired.desired.users, &withheld, held)
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    let report = fail(report, e.to_string());
                    return self.finish(report, Plan::default(), opts, clock).await;
                }
            };
            // Verifying: what the app really holds replaces what the store remembers, and
            // the same plan repairs the difference.
            let observed = if opts.verify {
                let rewritten: Vec<&str> = learnt.rewritten.keys().map(String::as_str).collect();
                match apply::verify::read_back(&app.client, observed, &rewritten, app.cfg.concurrency).await {
                    Ok(drift) => {
                        report.drift_repaired = drift.found;
                        drift.observed
                    }
                    Err(e) => {
                        report.requests = app.client.requests_sent() - reads_from;
                        let report = fail(report, format!("cannot read the app back: {e}"));
                        return self.finish(report, Plan::default(), opts, clock).await;
                    }
                }
            } else {
                observed
            };
            let verify_reads = app.client.requests_sent() - reads_from;
            report.requests = verify_reads;
            // Activations again, after observed: a push confirmed before observed was read is
            // then backed by an activation this cycle knows, so the cycle cannot plan to
            // remove it. Desired state is mapped again only if they changed meanwhile.
            let live = match self.store.live_activations(name, self.clock.now()).await {
                Ok(l) => l,
                Err(e) => {
                    let report = fail(report, e.to_string());
                    return self.finish(report, Plan::default(), opts, clock).await;
                }
            };
            if backed(&live) != backed(&first) {
                desired = match desired_with(&live) {
                    Ok(d) => d,
                    Err(e) => {
                        let report = fail(report, e.to_string());
                        return self.finish(report, Plan::default(), opts, clock).await;
                    }
                };
            }
            if let Err(e) = apply::restore_app_facts(&self.store, name, &app.client).await {
                tracing::warn!(app = %name, error = %e, "could not read what earlier runs learnt about the app");
            }
            let plan = plan::plan(
                &desired.desired,
                &observed,
                &desired.unmapped,
                Policy {
                    deprovision: app.cfg.deprovision,
                    max_deprovisions: app.cfg.max_deprovisions,
                },
            );
            let mut unmapped = Vec::new();
            for u in &desired.unmapped {
                let e = ObjectError {
                    object: apply::user_object(&u.source_id),
                    op: "map".into(),
                    error: format!("{}; the user is left as the app holds it", u.reason),
                };
                apply::record_failure(&mut report, &mut unmapped, e);
            }
            if !opts.dry_run
                && let Err(e) = self.store.commit(name, &unmapped, self.clock.now()).await
            {
                tracing::error!(app = %name, error = %e, "could not record failing objects");
            }
            report.held = plan.held.len() as u64;
            if report.held > 0 {
                tracing::warn!(app = %name, held = report.held, max = app.cfg.max_deprovisions,
                    "more disables and deletes than max_deprovisions: all of them are held, not sent");
            }

            let deferred: Vec<&Activation> = live
                .iter()
                // A forwarded one the holder has not decided yet is applied here just the
                // same (it is then no longer the intake's to push).
                .filter(|a| matches!(a.state, PushState::Deferred | PushState::Forwarded))
                .map(|a| &a.activation)
                .collect();
            if opts.dry_run {
                count_planned(&mut report, &plan);
                report.deferred_applied = deferred
                    .iter()
                    .filter(|a| plan.ops.iter().any(|op| adds(op, &a.group, &a.user)))
                    .count() as u64;
            } else if !plan.ops.is_empty() {
                bar.set_length(plan.ops.len() as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>12} [{elapsed_precise}] {bar:40} {pos}/{len} operations",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(name.to_string());
                let before = app.client.requests_sent();
                let target = Target {
                    app: name,
                    client: &app.client,
                    matching: &app.cfg.matching,
                    concurrency: app.cfg.concurrency,
                    cancel: &self.cancel,
                    fence: self.fence.clone(),
                    learnt: Some(&learnt),
                };
                if let Err(e) =
                    apply::apply(&target, &plan, &observed, &self.store, &mut report, &bar).await
                {
                    report.error = Some(e.to_string());
                }
                report.requests = verify_reads + app.client.requests_sent() - before;
                bar.finish_and_clear();
            }
            if !opts.dry_run {
                report.deferred_applied = self.mark_applied(name, &deferred, opts.reason).await;
            }
            report.finished_at = self.stamp();
            report.outcome = outcome(&report);
            // A dry run keeps nothing: what it learnt is the discovery alone.
            let now = match opts.dry_run {
                true => None,
                false => self.store.learnt(name).await.ok().flatten(),
            };
            let news = now.as_ref().unwrap_or(&learnt).news_since(prior.as_ref());
            free_elsewhere((desired, observed));
            let mut done = self.finish(report, plan, opts, clock).await;
            done.learnt = news;
            done
        }
        .instrument(span)
        .await
    }

    /// Marks the deferred activations the app now holds as applied; returns how many.
    async fn mark_applied(
        &self,
        app: &crate::model::AppName,
        deferred: &[&Activation],
        reason: Reason,
    ) -> u64 {
        let mut applied = 0;
        for a in deferred {
            match self.store.has_member(app, &a.group, &a.user).await {
                Ok(true) => {
                    let why = format!("applied by the {reason} cycle");
                    match self
                        .store
                        .set_push_state(&a.id, app, PushState::Applied, Some(&why), None)
                        .await
                    {
                        Ok(()) => applied += 1,
                        Err(e) => {
                            tracing::error!(app = %app, activation = %a.id, error = %e, "could not record a deferred activation as applied");
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(app = %app, activation = %a.id, error = %e, "could not check a deferred activation");
                }
            }
        }
        applied
    }

    async fn finish(
        &self,
        report: CycleReport,
        plan: Plan,
        opts: CycleOptions,
        clock: std::time::Instant,
    ) -> AppCycle {
        if !opts.dry_run {
            self.save(&report).await;
            crate::metrics::cycle_finished(&report, clock.elapsed().as_secs_f64());
        }
        tracing::info!(app = %report.app, outcome = %report.outcome, requests = report.requests,
            failed = report.failed, held = report.held, deferred_applied = report.deferred_applied,
            "cycle finished");
        AppCycle {
            report,
            plan,
            learnt: Vec::new(),
        }
    }

    /// Pushes one membership to one app at once: creates or re-enables the user and creates
    /// the group when needed, then adds the member. Returns the push's report (reason
    /// `activation`, not saved as a cycle report) and whether the app now holds the member.
    pub async fn push(&self, app: &App, group: &SourceId, user: &SourceId) -> (CycleReport, bool) {
        let name = &app.cfg.name;
        let span = tracing::info_span!("push", app = %name, group = %group, user = %user);
        async move {
            let mut report = CycleReport::new(name.as_str(), Reason::Activation, self.stamp(), false);
            let prepared = async {
                let dir = self.directory().await.map_err(|e| e.to_string())?;
                let desired = mapping::desired_for_membership(&dir, &app.cfg, group, user)
                    .map_err(|e| e.to_string())?;
                let observed = self
                    .membership_scope(name, group, user)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((desired, observed))
            }
            .await;
            match prepared {
                Ok((desired, observed)) => {
                    self.apply_scoped(app, desired, observed, &mut report).await
                }
                Err(e) => report.error = Some(e),
            }
            let held = self.holds(app, group, user).await;
            report.finished_at = self.stamp();
            report.outcome = if held { Outcome::Ok } else { outcome(&report) };
            tracing::info!(app = %name, held, requests = report.requests, "activation push finished");
            (report, held)
        }
        .instrument(span)
        .await
    }

    /// Ends one activation in one app: removes the membership unless the source lists the
    /// user as a member or another live activation backs it.
    pub async fn revoke(&self, app: &App, activation: &Activation) -> Revoked {
        let name = &app.cfg.name;
        let (group, user) = (&activation.group, &activation.user);
        let span = tracing::info_span!("revoke", app = %name, group = %group, user = %user);
        async move {
            match self
                .store
                .other_live_activation(group, user, &activation.id, self.clock.now())
                .await
            {
                Ok(true) => {
                    return Revoked::Kept(KeptBecause::OtherActivation);
                }
                Ok(false) => {}
                Err(e) => return Revoked::Failed(e.to_string()),
            }
            // A snapshot we cannot read does not keep a privilege alive: remove, and let the next
            // cycle add the member back if the source does list it.
            if let Ok(dir) = self.directory().await
                && mapping::standing_member(&dir, &app.cfg, group, user)
            {
                return Revoked::Kept(KeptBecause::StandingMember);
            }
            let observed = match self.membership_scope(name, group, user).await {
                Ok(o) => o,
                Err(e) => return Revoked::Failed(e.to_string()),
            };
            let Some(g) = observed.groups.get(group) else {
                return Revoked::Removed;
            };
            if !g.members.contains(user) {
                return Revoked::Removed;
            }
            // Desired: the group without the member, the user exactly as the app holds it.
            let mut desired = Desired::default();
            desired.groups.insert(
                group.clone(),
                DesiredGroup {
                    source_id: group.clone(),
                    display_name: g.display_name.clone(),
                    members: Default::default(),
                },
            );
            for (id, u) in &observed.users {
                desired.users.insert(
                    id.clone(),
                    DesiredUser {
                        source_id: id.clone(),
                        attrs: u.attrs.clone(),
                    },
                );
            }
            let mut report =
                CycleReport::new(name.as_str(), Reason::Activation, self.stamp(), false);
            self.apply_scoped(app, desired, observed, &mut report).await;
            if self.holds(app, group, user).await {
                Revoked::Failed(
                    report
                        .errors
                        .first()
                        .map(|e| e.error.clone())
                        .or(report.error)
                        .unwrap_or_else(|| "the app did not confirm the removal".into()),
                )
            } else {
                Revoked::Removed
            }
        }
        .instrument(span)
        .await
    }

    /// What the store says the app holds of one user and one group.
    async fn membership_scope(
        &self,
        app: &crate::model::AppName,
        group: &SourceId,
        user: &SourceId,
    ) -> Result<Observed, crate::store::Error> {
        self.store
            .load_observed_scope(app, std::slice::from_ref(user), std::slice::from_ref(group))
            .await
    }

    /// Plans and applies a desired state cut down to a few objects against the same cut of
    /// the observed state. The app's learnt facts are restored once when the service starts,
    /// not on every push.
    async fn apply_scoped(
        &self,
        app: &App,
        mut desired: Desired,
        mut observed: Observed,
        report: &mut CycleReport,
    ) {
        let name = &app.cfg.name;
        // What the app does not keep is withheld here as in a cycle; what its answers show is
        // recorded once a cycle has learnt the app.
        let learnt = match self.store.learnt(name).await {
            Ok(l) => l,
            Err(e) => {
                report.error = Some(e.to_string());
                return;
            }
        };
        if let Some(learnt) = &learnt {
            let keep = keep(&app.cfg);
            learnt.withhold(&keep, desired.users.values_mut().map(|u| &mut u.attrs));
            learnt.withhold(&keep, observed.users.values_mut().map(|u| &mut u.attrs));
        }
        let plan = plan::plan(
            &desired,
            &observed,
            &[],
            Policy {
                deprovision: app.cfg.deprovision,
                max_deprovisions: app.cfg.max_deprovisions,
            },
        );
        if plan.ops.is_empty() {
            return;
        }
        let before = app.client.requests_sent();
        let target = Target {
            app: name,
            client: &app.client,
            matching: &app.cfg.matching,
            concurrency: 1,
            cancel: &self.cancel,
            fence: self.fence.clone(),
            learnt: learnt.as_ref(),
        };
        if let Err(e) = apply::apply(
            &target,
            &plan,
            &observed,
            &self.store,
            report,
            &ProgressBar::hidden(),
        )
        .await
        {
            report.error = Some(e.to_string());
        }
        report.requests = app.client.requests_sent() - before;
    }

    /// What is known of the app's schema, learnt now when it was never learnt or the app's
    /// configuration changed since ([`apply::learnt::learn`]).
    async fn learn(&self, app: &App, dry_run: bool) -> Result<Learnt, apply::learnt::LearnError> {
        let mapped = crate::model::attr_path::mapped_paths(&app.cfg.attributes);
        let config = Learnt::config_key(
            &app.cfg.base_url,
            app.cfg.profile,
            mapped.iter().map(String::as_str),
        );
        apply::learnt::learn(
            &self.store,
            &app.client,
            config,
            mapped.iter().map(String::as_str),
            self.stamp(),
            dry_run,
        )
        .await
    }

    async fn holds(&self, app: &App, group: &SourceId, user: &SourceId) -> bool {
        self.store
            .has_member(&app.cfg.name, group, user)
            .await
            .unwrap_or(false)
    }

    async fn save(&self, report: &CycleReport) {
        if let Err(e) = self.store.save_report(report).await {
            tracing::error!(app = %report.app, error = %e, "could not save the cycle report");
        }
    }
}

/// The outcome a finished report deserves.
/// The mapped paths sent whatever the app declares or keeps: the matching attribute and the
/// ones the app's profile requires.
fn keep(cfg: &AppConfig) -> Vec<&str> {
    let mut keep = vec![cfg.matching.as_str()];
    keep.extend_from_slice(cfg.profile.required_user_paths());
    keep
}

fn outcome(r: &CycleReport) -> Outcome {
    if r.error.is_some() && r.changes() == 0 {
        Outcome::Failed
    } else if r.failed > 0 || r.error.is_some() {
        if r.changes() > 0 {
            Outcome::Partial
        } else {
            Outcome::Failed
        }
    } else if r.held > 0 {
        Outcome::Held
    } else {
        Outcome::Ok
    }
}

/// Whether `op` adds `user` to `group`.
fn adds(op: &Op, group: &SourceId, user: &SourceId) -> bool {
    matches!(op, Op::AddMembers { group: g, members } if g == group && members.contains(user))
}

/// Fills a dry run's counts from the plan: what would be done.
fn count_planned(r: &mut CycleReport, plan: &Plan) {
    for op in &plan.ops {
        match op {
            Op::CreateUser { .. } => r.users_created += 1,
            Op::UpdateUser {
                effect: UserEffect::Disable,
                ..
            } => r.users_disabled += 1,
            Op::UpdateUser { .. } => r.users_updated += 1,
            Op::DeprovisionUser {
                how: crate::model::Deprovision::Disable,
                ..
            } => r.users_disabled += 1,
            Op::DeprovisionUser { .. } => r.users_deleted += 1,
            Op::CreateGroup { .. } => r.groups_created += 1,
            Op::RenameGroup { .. } => r.groups_updated += 1,
            Op::AddMembers { members, .. } => r.members_added += members.len() as u64,
            Op::RemoveMembers { members, .. } => r.members_removed += members.len() as u64,
            Op::RemoveForeignMembers { members, .. } => r.members_removed += members.len() as u64,
            Op::DeleteGroup { .. } => r.groups_deleted += 1,
            Op::ForgetGroup { .. } => {}
        }
    }
    r.outcome = if r.held > 0 {
        Outcome::Held
    } else {
        Outcome::Ok
    };
}
