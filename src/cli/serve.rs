//! The long-running commands: `run` (the service, its admin HTTP, stopped by SIGINT or
//! SIGTERM) and `sandbox` (the built-in SCIM app).

use std::net::SocketAddr;

use super::{Fatal, build_apps, exit, source_and_poll};
use crate::config::Config;
use crate::engine::Engine;
use crate::service::{Options as ServiceOptions, Service};
use crate::store::Store;

/// How long a stopping service gives operations and HTTP requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

pub(super) async fn run_service(config: &std::path::Path) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let token = cfg.service.webhook_token()?;
    let apps = build_apps(&cfg, &[])?;
    let store = Store::open(cfg.service.state_url()?.expose()).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.service.listen)
        .await
        .map_err(|e| {
            Fatal(format!(
                "{}: service.listen {}: {e}",
                cfg.path.display(),
                cfg.service.listen
            ))
        })?;
    let addr = listener.local_addr().map_err(Fatal::from)?;
    crate::metrics::install();
    let super::wiring::Wired { source, pim, watch } = source_and_poll(&cfg, Some(&store))?;
    let engine = Engine::new(source, store);
    let interval = cfg.service.full_sync_interval;
    let n = cfg.apps.len();
    let mut polling = pim.as_ref().map_or(String::new(), |p| {
        format!(
            "; PIM activations polled every {}",
            humantime::format_duration(p.every)
        )
    });
    if let Some(w) = &watch {
        polling.push_str(&format!(
            "; push groups watched every {}",
            humantime::format_duration(w.every)
        ));
    }
    let options = ServiceOptions {
        pim,
        watch,
        ..ServiceOptions::default()
    };
    let svc = Service::start(cfg, apps, engine, token, options)
        .await
        .map_err(Fatal::from)?;
    out!(
        "scim-sync run: {n} app(s); admin and webhook on http://{addr}; a full cycle every {}{polling}; SIGINT or SIGTERM stops it",
        humantime::format_duration(interval)
    );
    let left = crate::admin::serve(svc, listener, shutdown_signal(), SHUTDOWN_GRACE)
        .await
        .map_err(|e| Fatal(format!("admin HTTP on {addr}: {e}")))?;
    if left > 0 {
        out!(
            "stopped; {left} operation(s) were still running after {} and were abandoned (the next start redoes them)",
            humantime::format_duration(SHUTDOWN_GRACE)
        );
    } else {
        out!("stopped cleanly");
    }
    Ok(exit::OK)
}

/// SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stop signal received; shutting down");
}

pub(super) async fn sandbox(
    listen: SocketAddr,
    latency: std::time::Duration,
    jitter: std::time::Duration,
    no_enterprise: bool,
    drop_attributes: &[String],
) -> Result<u8, Fatal> {
    let mut state = match std::env::var("SCIM_SYNC_SANDBOX_TOKEN") {
        Ok(t) if !t.is_empty() => crate::sandbox::SandboxState::with_token(t),
        _ => crate::sandbox::SandboxState::new(),
    }
    .with_latency(latency, jitter)
    .dropping(drop_attributes);
    if no_enterprise {
        state = state.without_enterprise();
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Fatal(format!("sandbox --listen {listen}: {e}")))?;
    out!(
        "sandbox SCIM 2.0 app on http://{}/scim/v2 (in memory; {}{}). Ctrl-C stops it.",
        listener.local_addr().map_err(Fatal::from)?,
        match (latency.is_zero(), jitter.is_zero()) {
            (true, true) => String::new(),
            (_, true) => format!(
                "each answer delayed {}; ",
                crate::clock::show_duration(latency)
            ),
            _ => format!(
                "each answer delayed {} plus up to {}; ",
                crate::clock::show_duration(latency),
                crate::clock::show_duration(jitter)
            ),
        },
        if std::env::var("SCIM_SYNC_SANDBOX_TOKEN").is_ok_and(|t| !t.is_empty()) {
            "bearer token from $SCIM_SYNC_SANDBOX_TOKEN required"
        } else {
            "any bearer token accepted"
        }
    );
    let mut quirks = Vec::new();
    if no_enterprise {
        quirks.push("no enterprise User extension (a User write carrying it gets 400)".to_owned());
    }
    if !drop_attributes.is_empty() {
        quirks.push(format!(
            "declared but not stored: {}",
            drop_attributes.join(", ")
        ));
    }
    if !quirks.is_empty() {
        out!("like a non-generic app: {}.", quirks.join("; "));
    }
    crate::sandbox::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(Fatal::from)?;
    Ok(exit::OK)
}
