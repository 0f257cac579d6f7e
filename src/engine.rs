//! The engine: reconcile every selected app with the source, one cycle each.
//!
//! A cycle reads the source once, then per app: maps the snapshot to desired state, loads the
//! observed state from the store, plans (pure), and either returns the plan (`dry_run`) or
//! applies it and saves the report. Every driver (`sync-now`, the demo, and later the scheduler
//! and activation pushes) goes through [`Engine::cycle`]; none talks SCIM directly.
//!
//! A failed source read fails every app's cycle before planning: nothing is deprovisioned on a
//! read we cannot trust.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::apply::{self, Target};
use crate::config::{AppConfig, Secret};
use crate::mapping;
use crate::model::Directory;
use crate::plan::{self, Op, Plan, Policy, UserEffect};
use crate::report::{CycleReport, ObjectError, Outcome, Reason};
use crate::scim::{self, ClientOptions, RetryPolicy, ScimClient};
use crate::source::Source;
use crate::store::Store;

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
}

/// The reconcile engine: a source and a store.
#[derive(Clone)]
pub struct Engine {
    source: Arc<dyn Source>,
    store: Store,
}

impl Engine {
    /// An engine reading `source` and remembering in `store`.
    pub fn new(source: Arc<dyn Source>, store: Store) -> Self {
        Engine { source, store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs one cycle for each of `apps`, concurrently, reading the source once.
    pub async fn cycle(&self, apps: &[App], opts: CycleOptions) -> CycleRun {
        let started = now();
        let snapshot = match self.source.snapshot().await {
            Ok(d) => Arc::new(d),
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
                    report.finished_at = now();
                    if !opts.dry_run {
                        self.save(&report).await;
                    }
                    out.push(AppCycle {
                        report,
                        plan: Plan::default(),
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
        let _enter = span.enter();
        let mut report = CycleReport::new(name.as_str(), opts.reason, now(), opts.dry_run);
        let fail = |mut report: CycleReport, why: String| {
            tracing::warn!(app = %name, error = %why, "cycle failed before any change");
            report.outcome = Outcome::Failed;
            report.error = Some(why);
            report.finished_at = now();
            report
        };

        let desired = match mapping::desired_for_app(dir, &app.cfg, &[]) {
            Ok(d) => d,
            Err(e) => {
                let report = fail(report, e.to_string());
                return self.finish(report, Plan::default(), opts).await;
            }
        };
        let observed = match self.store.load_observed(name).await {
            Ok(o) => o,
            Err(e) => {
                let report = fail(report, e.to_string());
                return self.finish(report, Plan::default(), opts).await;
            }
        };
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
            && let Err(e) = self.store.commit(name, &unmapped, Utc::now()).await
        {
            tracing::error!(app = %name, error = %e, "could not record failing objects");
        }
        report.held = plan.held.len() as u64;
        if report.held > 0 {
            tracing::warn!(app = %name, held = report.held, max = app.cfg.max_deprovisions,
                "more disables and deletes than max_deprovisions: all of them are held, not sent");
        }

        if opts.dry_run {
            count_planned(&mut report, &plan);
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
            };
            if let Err(e) =
                apply::apply(&target, &plan, &observed, &self.store, &mut report, &bar).await
            {
                report.error = Some(e.to_string());
            }
            report.requests = app.client.requests_sent() - before;
            bar.finish_and_clear();
        }
        report.finished_at = now();
        report.outcome = outcome(&report);
        self.finish(report, plan, opts).await
    }

    async fn finish(&self, report: CycleReport, plan: Plan, opts: CycleOptions) -> AppCycle {
        if !opts.dry_run {
            self.save(&report).await;
        }
        tracing::info!(app = %report.app, outcome = %report.outcome, requests = report.requests,
            failed = report.failed, held = report.held, "cycle finished");
        AppCycle { report, plan }
    }

    async fn save(&self, report: &CycleReport) {
        if let Err(e) = self.store.save_report(report).await {
            tracing::error!(app = %report.app, error = %e, "could not save the cycle report");
        }
    }
}

/// The outcome a finished report deserves.
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

/// Now, as RFC 3339 with milliseconds.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}
