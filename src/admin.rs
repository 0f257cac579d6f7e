//! The admin and webhook HTTP server of `run` (SPEC §4, §5), on `service.listen`.
//!
//! `GET /healthz`, `GET /readyz`, `GET /metrics` (open: they name no user), and, behind the
//! webhook bearer token (compared in constant time), `GET /v1/status` (it names who holds
//! which privileged activation), `POST /v1/sync` and `POST /v1/activations`.
//! Bodies over 64 KiB get `413` before any handler runs. Every refusal is logged with its
//! reason and counted, and changes nothing. This module only translates HTTP; decisions are
//! the service's.

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

use crate::activation::{ActivationRequest, ErrorBody};
use crate::model::AppName;
use crate::report::Reason;
use crate::service::Service;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Serves the admin HTTP of `svc` on `listener` until `stop` resolves, then shuts the
/// service down: intake stops at once, requests in flight get `grace`, then
/// [`Service::shutdown`]. Returns how many operations were abandoned.
///
/// # Errors
/// The IO error of the server.
pub async fn serve(
    svc: Service,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> std::io::Result<usize> {
    let stopping = CancellationToken::new();
    let signal = stopping.clone();
    let server = axum::serve(listener, router(svc.clone())).with_graceful_shutdown(async move {
        stop.await;
        signal.cancel();
    });
    // axum waits for every open connection without a bound: give it `grace`.
    tokio::select! {
        r = server => r?,
        () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("HTTP requests still open at the end of the grace period were dropped");
        }
    }
    Ok(svc.shutdown(grace).await)
}

/// The router of the admin server.
pub fn router(svc: Service) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/sync", post(sync))
        .route("/v1/activations", post(activations))
        .layer(middleware::from_fn(log_limit_refusals))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .with_state(svc)
}

/// A refused request: logged with its reason, counted, answered as JSON `{"error": …}`.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let Refused(status, why) = self;
        tracing::warn!(status = status.as_u16(), reason = %why, "request refused; nothing was changed");
        crate::metrics::webhook_refused(status.as_u16());
        (status, Json(ErrorBody { error: why })).into_response()
    }
}

/// The body-limit layer answers 413 before any handler: log and count it here.
async fn log_limit_refusals(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        tracing::warn!(status = 413, path = %path, limit = BODY_LIMIT, "request refused: body over 64 KiB; nothing was changed");
        crate::metrics::webhook_refused(413);
    }
    resp
}

fn authorize(svc: &Service, headers: &HeaderMap) -> Result<(), Refused> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(given) = given else {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer …)".into(),
        ));
    };
    let expected = svc.token().expose().as_bytes();
    if bool::from(given.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(Refused(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token".into(),
        ))
    }
}

async fn readyz(State(svc): State<Service>) -> Response {
    match svc.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(svc): State<Service>) -> Response {
    match svc.metrics_text().await {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed in this process\n",
        )
            .into_response(),
    }
}

/// `GET /v1/status`: it names who holds which privileged activation, so it needs the token.
async fn status(State(svc): State<Service>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&svc, &headers) {
        return refused.into_response();
    }
    let now = svc.engine().clock().now();
    match crate::status::collect(&svc.config().apps, svc.engine().store(), now).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody {
                error: e.to_string(),
            }),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct SyncQuery {
    #[serde(default)]
    wait: bool,
    /// Read the apps back and repair drift (`sync-now --verify` handing over).
    #[serde(default)]
    verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    #[serde(default)]
    apps: Vec<String>,
}

async fn sync(
    State(svc): State<Service>,
    Query(q): Query<SyncQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    authorize(&svc, &headers)?;
    let body: SyncBody = if body.iter().all(u8::is_ascii_whitespace) {
        SyncBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Refused(StatusCode::BAD_REQUEST, format!("body: {e}")))?
    };
    let names: Vec<AppName> = body.apps.iter().map(AppName::new).collect();
    for n in &names {
        if !svc.config().apps.iter().any(|a| &a.name == n) {
            return Err(Refused(
                StatusCode::NOT_FOUND,
                format!("no app named {n} in the config"),
            ));
        }
    }
    let only = (!names.is_empty()).then_some(names.as_slice());
    let started = svc
        .cycles_with(only, Reason::SyncNow, q.wait, q.verify)
        .await;
    let status = if q.wait {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(started)).into_response())
}

async fn activations(
    State(svc): State<Service>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    authorize(&svc, &headers)?;
    let req: ActivationRequest = serde_json::from_slice(&body).map_err(|e| {
        Refused(
            StatusCode::BAD_REQUEST,
            format!(
                "body must be {{\"group_id\": \"…\", \"user_id\": \"…\"}} with, optionally, \"expires_at\" (RFC 3339), \"justification\", \"ticket_number\", \"ticket_system\": {e}"
            ),
        )
    })?;
    match svc.activate(req, crate::activation::WEBHOOK_ORIGIN).await {
        Ok(accepted) => Ok((StatusCode::ACCEPTED, Json(accepted)).into_response()),
        Err(r) => Err(Refused(
            StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST),
            r.to_string(),
        )),
    }
}
