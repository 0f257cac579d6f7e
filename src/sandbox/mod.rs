//! The built-in in-memory SCIM 2.0 service provider ("sandbox").
//!
//! Used by `scim-sync sandbox --listen ADDR`, by the offline `demo`, by end-to-end tests
//! and as a benchmark target. It is an implementation of RFC 7643/7644 that is independent
//! of the crate's SCIM client, so that each checks the other.
//!
//! This module owns the public API ([`SandboxState`], [`router`], [`serve`],
//! [`SandboxHandle`]), the HTTP layer (routes, bearer authentication, request counting,
//! logging, JSON bodies) and the discovery endpoints. Submodules own the rest:
//! `store` (resources and indexes), `filter` (filter and path parsing), `patch` (PATCH
//! semantics), `schema` (attribute knowledge and discovery documents), `quirks` (what an
//! imitated non-generic app refuses or drops), `error` (SCIM error bodies).
//!
//! Behaviour a caller should know:
//! - Routes live under `/scim/v2`; every route, including unknown ones, needs
//!   `Authorization: Bearer <token>`.
//! - Ids are random version-4 UUID strings.
//! - `meta.location` and `$ref` are built from the request's `Host` header
//!   (`http://HOST/scim/v2/...`).
//! - Users show a read-only `groups` attribute when they belong to a group.
//! - Lists return at most 1000 resources per page (default 100); `count=0` returns only
//!   `totalResults`.
//! - `PATCH` answers 200 with the resource for Users and 204 No Content for Groups.
//! - With [`SandboxState::with_latency`] (`sandbox --latency 50ms [--jitter 10ms]`) every
//!   request is answered after that delay plus a random part of the jitter (tokio time), so
//!   benchmarks pay what a real app's round trip costs.
//! - With [`SandboxState::without_enterprise`] (`sandbox --no-enterprise`) the app does not
//!   support the enterprise User extension: the User resource type's `schemaExtensions` is
//!   empty, `/Schemas` does not list it (`/Schemas/<its URN>` is 404), and a `POST`/`PUT` of
//!   a User carrying it (a top-level key, any case, or its URN in `schemas`) or a `PATCH`
//!   whose operation's path names it or whose value carries it is refused with 400
//!   `invalidValue` ("Extra inputs are not permitted: urn:…"), storing nothing.
//! - With [`SandboxState::dropping`] (`sandbox --drop-attribute displayName`, repeatable)
//!   the app declares those core User attributes in `/Schemas` but silently does not store
//!   them: `POST`, `PUT` and `PATCH` of a User discard them (any case) without error, and
//!   every answer (201, 200, GET, lists) shows the user as stored, without them. `userName`,
//!   `id`, `active` and `schemas` cannot be dropped ([`droppable_attribute`] says why).
//! - `PUT` on a Group replaces its members too (no `members` means none).
//! - `/ResourceTypes/{id}` and `/Schemas/{id}` serve one document of those lists (where
//!   its `meta.location` points).

mod error;
mod filter;
mod patch;
mod quirks;
mod schema;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use error::ScimError;
pub use quirks::droppable_attribute;
use schema::Kind;
use store::{DEFAULT_COUNT, MAX_RESULTS, Store, View};

/// Path prefix of every SCIM route.
const BASE_PATH: &str = "/scim/v2";
/// Largest accepted request body (a big group PUT can be several MiB).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long [`serve`] waits for open connections after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The SCIM media type.
const SCIM_JSON: &str = "application/scim+json";

struct Inner {
    /// `None`: any non-empty bearer token is accepted.
    token: Option<String>,
    requests: AtomicU64,
    store: Mutex<Store>,
    /// Base URL used when a request carries no `Host` header, and by [`SandboxState::users`].
    base_url: RwLock<String>,
    /// Every answer waits this long, plus a uniform random part of `jitter` (nanoseconds).
    latency_ns: AtomicU64,
    jitter_ns: AtomicU64,
}

/// Shared state of one sandbox: cheap to clone (an `Arc` inside).
///
/// All clones see the same users, groups and request counter.
#[derive(Clone)]
pub struct SandboxState {
    inner: Arc<Inner>,
}

impl fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxState")
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .field("requests", &self.requests())
            .field("users", &self.user_count())
            .field("groups", &self.group_count())
            .finish()
    }
}

impl Default for SandboxState {
    fn default() -> Self {
        Self::new()
    }
}

impl SandboxState {
    fn build(token: Option<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                token,
                requests: AtomicU64::new(0),
                store: Mutex::new(Store::default()),
                base_url: RwLock::new(BASE_PATH.to_owned()),
                latency_ns: AtomicU64::new(0),
                jitter_ns: AtomicU64::new(0),
            }),
        }
    }

    /// This sandbox, answering each request after `latency` plus a uniform random part of
    /// `jitter`, like an app across a network.
    pub fn with_latency(self, latency: Duration, jitter: Duration) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.latency_ns.store(ns(latency), Ordering::Relaxed);
        self.inner.jitter_ns.store(ns(jitter), Ordering::Relaxed);
        self
    }

    /// This sandbox, imitating an app that does not support the enterprise User extension
    /// (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`), like a third-party
    /// Django SCIM server: discovery does not declare it, and a User write carrying it is
    /// refused with 400 `invalidValue` (see the module documentation).
    pub fn without_enterprise(self) -> Self {
        self.store().quirks.without_enterprise = true;
        self
    }

    /// This sandbox, imitating an app that declares these core User attributes in
    /// `/Schemas` but silently does not store them (like a server that drops
    /// `displayName`): on `POST`, `PUT` and `PATCH` of a User they are discarded without
    /// error (names match case-insensitively), so every answer shows the user without them.
    /// Calls add up.
    ///
    /// Names [`droppable_attribute`] refuses (`userName`, `id`, `active`, `schemas`, the
    /// read-only `meta` and `groups`, and anything that is not a core User attribute) are
    /// ignored, with a warning in the log: a sandbox that could not find, match or
    /// (de)activate its users would test nothing.
    pub fn dropping<I>(self, attrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        {
            let mut store = self.store();
            for name in attrs {
                let name = name.as_ref();
                if let Err(why) = store.quirks.drop_attribute(name) {
                    tracing::warn!(attribute = name, "sandbox: not dropped: {why}");
                }
            }
        }
        self
    }

    /// An empty sandbox that accepts any non-empty bearer token.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// An empty sandbox that accepts only this bearer token (an empty token accepts
    /// nothing).
    pub fn with_token(token: impl Into<String>) -> Self {
        Self::build(Some(token.into()))
    }

    /// HTTP requests served so far, on all routes (including rejected ones).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Current User resources in creation order, as `GET /Users/{id}` returns them.
    ///
    /// `meta.location` uses the address passed to [`serve`] (loopback for an unspecified
    /// IP); before the sandbox is served it is the relative path `/scim/v2/Users/{id}`.
    pub fn users(&self) -> Vec<Value> {
        let view = View::new(self.base_url());
        self.store().render_all(Kind::User, &view)
    }

    /// Current Group resources (with members) in creation order.
    pub fn groups(&self) -> Vec<Value> {
        let view = View::new(self.base_url());
        self.store().render_all(Kind::Group, &view)
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.store().count(Kind::User)
    }

    /// Number of groups.
    pub fn group_count(&self) -> usize {
        self.store().count(Kind::Group)
    }

    /// Locks the store. A panic while holding the lock cannot leave the store half
    /// updated (writes validate before mutating), so a poisoned lock is recovered.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether discovery declares the enterprise User extension.
    fn enterprise(&self) -> bool {
        self.store().quirks.enterprise()
    }

    fn base_url(&self) -> String {
        self.inner
            .base_url
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn set_base_url(&self, url: String) {
        match self.inner.base_url.write() {
            Ok(mut b) => *b = url,
            Err(poisoned) => *poisoned.into_inner() = url,
        }
    }

    /// Whether `Authorization` carries an acceptable bearer token.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty());
        match (presented, self.inner.token.as_deref()) {
            (Some(got), Some(want)) => constant_time_eq(got.as_bytes(), want.as_bytes()),
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds a response with a JSON body and `Content-Type: application/scim+json`.
pub(crate) fn scim_response(status: StatusCode, body: &Value) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (status, bytes).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "sandbox: could not serialise a response");
            (StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed").into_response()
        }
    }
}

/// The Axum router of a sandbox: all SCIM routes under `/scim/v2`, bearer
/// authentication, request counting and debug logging.
pub fn router(state: SandboxState) -> Router {
    let api = Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups).post(create_group))
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(put_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema_by_id));
    Router::new()
        .nest(BASE_PATH, api)
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Outermost layer: counts and logs every request, and turns framework error responses
/// (405, 413, …) into SCIM error bodies.
async fn observe(State(st): State<SandboxState>, req: Request, next: Next) -> Response {
    st.inner.requests.fetch_add(1, Ordering::Relaxed);
    let latency = Duration::from_nanos(st.inner.latency_ns.load(Ordering::Relaxed));
    let jitter = Duration::from_nanos(st.inner.jitter_ns.load(Ordering::Relaxed));
    if !latency.is_zero() || !jitter.is_zero() {
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(rand::random::<f64>())
        };
        tokio::time::sleep(latency + extra).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_scim = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == SCIM_JSON.as_bytes());
    let resp = if (status.is_client_error() || status.is_server_error()) && !is_scim {
        let allow = resp.headers().get(header::ALLOW).cloned();
        let detail = status.canonical_reason().unwrap_or("error");
        let mut fixed = ScimError::status(status, detail).into_response();
        if let Some(allow) = allow {
            fixed.headers_mut().insert(header::ALLOW, allow);
        }
        fixed
    } else {
        resp
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "sandbox request");
    resp
}

/// Rejects requests without an acceptable bearer token with 401.
async fn authenticate(State(st): State<SandboxState>, req: Request, next: Next) -> Response {
    if st.authorized(req.headers()) {
        return next.run(req).await;
    }
    let mut resp = ScimError::status(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"scim\""),
    );
    resp
}

async fn unknown_route() -> ScimError {
    ScimError::not_found("no such endpoint")
}

/// The request's base URL, from its `Host` header (else the state's default).
fn base_url(st: &SandboxState, headers: &HeaderMap) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if !host.is_empty() => format!("http://{host}{BASE_PATH}"),
        _ => st.base_url(),
    }
}

/// Checks the content type and parses a JSON request body.
fn read_json(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let mime = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !(mime == "application/json" || mime == SCIM_JSON || mime.ends_with("+json")) {
            return Err(ScimError::status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type '{ct}'; send {SCIM_JSON}"),
            ));
        }
    }
    let bytes = body.map_err(|rej| ScimError::status(rej.status(), rej.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("request body is not valid JSON: {e}")))
}

/// The query parameters the sandbox understands (names are case-insensitive).
#[derive(Debug, Default)]
struct ListParams {
    filter: Option<String>,
    start_index: usize,
    count: usize,
    attributes: Option<String>,
    excluded: Option<String>,
}

fn list_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<ListParams, ScimError> {
    let Query(pairs) = query.map_err(|rej| ScimError::invalid_syntax(rej.body_text()))?;
    let mut p = ListParams {
        start_index: 1,
        count: DEFAULT_COUNT,
        ..ListParams::default()
    };
    let number = |name: &str, v: &str| -> Result<i64, ScimError> {
        v.trim()
            .parse::<i64>()
            .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer, not '{v}'")))
    };
    for (k, v) in pairs {
        match k.to_ascii_lowercase().as_str() {
            "filter" => p.filter = Some(v),
            // Values below 1 are treated as 1; negative counts as 0 (RFC 7644 §3.4.2.4).
            "startindex" => p.start_index = usize::try_from(number(&k, &v)?.max(1)).unwrap_or(1),
            "count" => {
                p.count = usize::try_from(number(&k, &v)?.max(0))
                    .unwrap_or(MAX_RESULTS)
                    .min(MAX_RESULTS);
            }
            "attributes" => p.attributes = Some(v),
            "excludedattributes" => p.excluded = Some(v),
            _ => {}
        }
    }
    Ok(p)
}

fn list(
    kind: Kind,
    st: &SandboxState,
    headers: &HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ScimError> {
    let p = list_params(query)?;
    let view = View::new(base_url(st, headers)).select(
        kind,
        p.attributes.as_deref(),
        p.excluded.as_deref(),
    );
    let body = st
        .store()
        .list(kind, p.filter.as_deref(), p.start_index, p.count, &view)?;
    Ok(scim_response(StatusCode::OK, &body))
}

fn get_one(
    kind: Kind,
    st: &SandboxState,
    id: &str,
    headers: &HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ScimError> {
    let p = list_params(query)?;
    let view = View::new(base_url(st, headers)).select(
        kind,
        p.attributes.as_deref(),
        p.excluded.as_deref(),
    );
    let body = st
        .store()
        .render(kind, id, &view)
        .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))?;
    Ok(scim_response(StatusCode::OK, &body))
}

fn create(
    kind: Kind,
    st: &SandboxState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = read_json(headers, body)?;
    let view = View::new(base_url(st, headers));
    let resource = {
        let mut store = st.store();
        let id = store.create(kind, body)?;
        store.render(kind, &id, &view)
    }
    .ok_or_else(|| {
        ScimError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "created resource vanished",
        )
    })?;
    let mut resp = scim_response(StatusCode::CREATED, &resource);
    if let Some(loc) = resource
        .pointer("/meta/location")
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

fn replace(
    kind: Kind,
    st: &SandboxState,
    id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = read_json(headers, body)?;
    let view = View::new(base_url(st, headers));
    let resource = {
        let mut store = st.store();
        store.replace(kind, id, body)?;
        store.render(kind, id, &view)
    }
    .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))?;
    Ok(scim_response(StatusCode::OK, &resource))
}

fn patch_one(
    kind: Kind,
    st: &SandboxState,
    id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = read_json(headers, body)?;
    let ops = patch::parse_request(&body)?;
    let view = View::new(base_url(st, headers));
    let resource = {
        let mut store = st.store();
        store.patch(kind, id, ops)?;
        match kind {
            Kind::User => store.render(kind, id, &view),
            Kind::Group => None,
        }
    };
    Ok(match resource {
        Some(r) => scim_response(StatusCode::OK, &r),
        // Groups answer 204 like many real services; clients must cope with both.
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

fn delete_one(kind: Kind, st: &SandboxState, id: &str) -> Result<Response, ScimError> {
    st.store().delete(kind, id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Turns a handler result into a response.
fn respond(r: Result<Response, ScimError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

type Q = Result<Query<Vec<(String, String)>>, QueryRejection>;
type B = Result<Bytes, BytesRejection>;

async fn list_users(State(st): State<SandboxState>, headers: HeaderMap, q: Q) -> Response {
    respond(list(Kind::User, &st, &headers, q))
}
async fn list_groups(State(st): State<SandboxState>, headers: HeaderMap, q: Q) -> Response {
    respond(list(Kind::Group, &st, &headers, q))
}
async fn create_user(State(st): State<SandboxState>, headers: HeaderMap, body: B) -> Response {
    respond(create(Kind::User, &st, &headers, body))
}
async fn create_group(State(st): State<SandboxState>, headers: HeaderMap, body: B) -> Response {
    respond(create(Kind::Group, &st, &headers, body))
}
async fn get_user(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Q,
) -> Response {
    respond(get_one(Kind::User, &st, &id, &headers, q))
}
async fn get_group(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Q,
) -> Response {
    respond(get_one(Kind::Group, &st, &id, &headers, q))
}
async fn put_user(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: B,
) -> Response {
    respond(replace(Kind::User, &st, &id, &headers, body))
}
async fn put_group(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: B,
) -> Response {
    respond(replace(Kind::Group, &st, &id, &headers, body))
}
async fn patch_user(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: B,
) -> Response {
    respond(patch_one(Kind::User, &st, &id, &headers, body))
}
async fn patch_group(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: B,
) -> Response {
    respond(patch_one(Kind::Group, &st, &id, &headers, body))
}
async fn delete_user(State(st): State<SandboxState>, Path(id): Path<String>) -> Response {
    respond(delete_one(Kind::User, &st, &id))
}
async fn delete_group(State(st): State<SandboxState>, Path(id): Path<String>) -> Response {
    respond(delete_one(Kind::Group, &st, &id))
}
async fn service_provider_config(State(st): State<SandboxState>, headers: HeaderMap) -> Response {
    let body = schema::service_provider_config(&base_url(&st, &headers), MAX_RESULTS);
    scim_response(StatusCode::OK, &body)
}
async fn resource_types(State(st): State<SandboxState>, headers: HeaderMap) -> Response {
    let body = schema::resource_types(&base_url(&st, &headers), st.enterprise());
    scim_response(StatusCode::OK, &body)
}
async fn resource_type(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let list = schema::resource_types(&base_url(&st, &headers), st.enterprise());
    respond(discovery_item(list, &id, "resource type"))
}
async fn schemas(State(st): State<SandboxState>, headers: HeaderMap) -> Response {
    let body = schema::schemas(&base_url(&st, &headers), st.enterprise());
    scim_response(StatusCode::OK, &body)
}
async fn schema_by_id(
    State(st): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let list = schema::schemas(&base_url(&st, &headers), st.enterprise());
    respond(discovery_item(list, &id, "schema"))
}

/// One resource of a discovery list by id (what its `meta.location` points at), else 404.
fn discovery_item(list: Value, id: &str, what: &str) -> Result<Response, ScimError> {
    let item = schema::list_item(list, id)
        .ok_or_else(|| ScimError::not_found(format!("{what} {id} not found")))?;
    Ok(scim_response(StatusCode::OK, &item))
}

/// Serves the sandbox on `listener` until `shutdown` completes.
///
/// After the signal, in-flight requests get up to five seconds to finish; then the
/// function returns even if idle keep-alive connections are still open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: SandboxState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    state.set_base_url(base_url_for(addr));
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    };
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .into_future();
    let grace = async move {
        match signalled_rx.await {
            Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        result = server => result,
        () = grace => {
            tracing::debug!(%addr, "sandbox: connections still open after the grace period; stopping anyway");
            Ok(())
        }
    }
}

/// `http://ADDR/scim/v2`, with an unspecified IP (`0.0.0.0`, `::`) shown as loopback.
fn base_url_for(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}{BASE_PATH}")
}

/// A sandbox running in a background task.
///
/// Dropping the handle without [`SandboxHandle::shutdown`] also signals the server to
/// stop, but does not wait for it.
pub struct SandboxHandle {
    addr: SocketAddr,
    base_url: String,
    state: SandboxState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl SandboxHandle {
    /// Binds `addr` (port 0 picks a free port) and serves `state` in a spawned task.
    pub async fn start(addr: SocketAddr, state: SandboxState) -> std::io::Result<SandboxHandle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender also means stop.
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, state.clone(), shutdown));
        Ok(SandboxHandle {
            addr,
            base_url: base_url_for(addr),
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The SCIM base URL, e.g. `http://127.0.0.1:41234/scim/v2`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The served state (users, groups, request counter).
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "sandbox server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "sandbox server task failed"),
            }
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
