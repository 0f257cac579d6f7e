//! `scim-sync sync-now`: one full cycle now, for all apps or the named ones, then exit.
//!
//! Without `--dry-run` it first takes each app's lease ([`crate::service::lease::negotiate`]):
//! an app a running service holds has its cycle handed to that service. Ctrl-C (or SIGTERM)
//! stops sending: what the app confirmed is committed, the partial report is printed, and the
//! command exits 1.

use tokio_util::sync::CancellationToken;

use super::client::ServiceClient;
use super::{Fatal, build_apps, exit, render, source_and_poll};
use crate::config::Config;
use crate::engine::{App, AppCycle, CycleOptions, CycleRun, Engine};
use crate::plan::Plan;
use crate::report::{Outcome, Reason};
use crate::service::lease::{self, HolderInfo, HolderKind, Leases};
use crate::store::Store;

/// Runs the command.
pub(super) async fn run(
    config: &std::path::Path,
    names: &[String],
    dry_run: bool,
    verify: bool,
    json: bool,
) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let apps = build_apps(&cfg, names)?;
    let store = Store::open(cfg.service.state_url()?.expose()).await?;
    // A dry run writes nothing, not even the source's delta state.
    let source = source_and_poll(&cfg, (!dry_run).then_some(&store))?.source;
    let engine = Engine::new(source, store.clone());
    let interrupted = CancellationToken::new();
    let on_signal = {
        let (engine, interrupted) = (engine.clone(), interrupted.clone());
        tokio::spawn(async move {
            super::serve::shutdown_signal().await;
            interrupted.cancel();
            engine.shut_down();
        })
    };
    let opts = CycleOptions {
        reason: Reason::SyncNow,
        dry_run,
        progress: !json,
        verify,
    };
    let run = if dry_run {
        // A dry run writes nothing, so it needs no lease.
        on_runtime(&engine, apps, opts).await
    } else {
        let leases = Leases::new(
            store,
            &HolderInfo::this_process(HolderKind::SyncNow, None),
            cfg.service.lease_ttl,
        );
        let names: Vec<_> = apps.iter().map(|a| a.cfg.name.clone()).collect();
        let client = ServiceClient::new(&cfg).map(|c| c.verifying(verify));
        let negotiated = tokio::select! {
            n = negotiate(&cfg, &leases, &names, client.as_ref()) => n?,
            () = interrupted.cancelled() => {
                leases.release(&names).await;
                eprintln!("sync-now: interrupted while waiting for leases; nothing was sent");
                return Ok(exit::FAILED);
            }
        };
        let engine = engine.clone().with_fence(leases.clone());
        let mine: Vec<_> = apps
            .iter()
            .filter(|a| negotiated.mine.contains(&a.cfg.name))
            .cloned()
            .collect();
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(
            leases
                .clone()
                .keep(negotiated.mine.clone(), stop.clone().cancelled_owned()),
        );
        let mut run = on_runtime(&engine, mine, opts).await;
        stop.cancel();
        let _ = keeper.await;
        run.apps
            .extend(negotiated.handed.into_iter().map(|report| AppCycle {
                report,
                plan: Plan::default(),
                learnt: Vec::new(),
            }));
        // Keep the order the apps were asked in.
        run.apps.sort_by_key(|c| {
            apps.iter()
                .position(|a| a.cfg.name.as_str() == c.report.app)
                .unwrap_or(usize::MAX)
        });
        run
    };
    on_signal.abort();
    // The process ends with this command: the snapshot the engine holds is left to the exit
    // rather than freed object by object (a third of a second at 100k users).
    std::mem::forget(engine);
    finish(run, dry_run, json, interrupted.is_cancelled())
}

/// Runs the cycle as a task of the runtime rather than on the main thread, which only waits
/// for it: the cycle's requests, answers and commits then stay on the runtime's threads
/// instead of waking a third one for every answer (at 20k creates on loopback the command
/// took a fifth longer that way). A panic in the cycle is the command's panic.
async fn on_runtime(engine: &Engine, apps: Vec<App>, opts: CycleOptions) -> CycleRun {
    let engine = engine.clone();
    match tokio::spawn(async move { engine.cycle(&apps, opts).await }).await {
        Ok(run) => run,
        // Nothing aborts the task: only a runtime shutting down could cancel it, and the
        // process is ending then.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Takes the leases, saying on stderr what it did. Without a client (the webhook token is
/// not set) no hand-over is possible: an app a running service holds is then waited for,
/// and given up on.
async fn negotiate(
    cfg: &Config,
    leases: &Leases,
    names: &[crate::model::AppName],
    client: Result<&ServiceClient, &Fatal>,
) -> Result<lease::Negotiated, Fatal> {
    /// Refuses every hand-over, saying why.
    struct NoHandOver(String);
    impl lease::HandOver for NoHandOver {
        fn hand_over<'a>(
            &'a self,
            _listen: &'a str,
            _apps: &'a [crate::model::AppName],
        ) -> futures::future::BoxFuture<'a, Result<Vec<crate::report::CycleReport>, String>>
        {
            Box::pin(async { Err(self.0.clone()) })
        }
    }
    let none;
    let hand: &dyn lease::HandOver = match client {
        Ok(c) => c,
        Err(Fatal(why)) => {
            none = NoHandOver(why.clone());
            &none
        }
    };
    lease::negotiate(
        leases,
        names,
        hand,
        &cfg.service.webhook_token_env,
        &mut |line| eprintln!("{line}"),
    )
    .await
    .map_err(Fatal::from)
}

/// Prints the run and decides the exit code.
fn finish(run: CycleRun, dry_run: bool, json: bool, interrupted: bool) -> Result<u8, Fatal> {
    if json {
        out!("{}", render::reports_json(&run, dry_run));
    } else {
        render::reports(&run, dry_run);
    }
    if let Some(e) = run.source_error {
        return Err(Fatal(format!(
            "source read failed, no app was changed: {e}"
        )));
    }
    if interrupted {
        eprintln!(
            "sync-now: interrupted; what the apps confirmed is recorded, the next cycle sends the rest"
        );
        return Ok(exit::FAILED);
    }
    let any_failed = run
        .apps
        .iter()
        .any(|c| c.report.failed > 0 || c.report.outcome == Outcome::Failed);
    Ok(if any_failed { exit::FAILED } else { exit::OK })
}
