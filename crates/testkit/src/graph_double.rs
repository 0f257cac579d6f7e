//! A Microsoft Graph double for tests and benchmarks: a small axum server on loopback that
//! serves the token endpoint, groups, user members (direct and transitive, paged through
//! `@odata.nextLink` with a configurable page size), PIM eligibility and assignment (activation)
//! instances, and users,
//! from a [`Directory`].
//!
//! It serves `groups/delta` and `users/delta` by diffing the directory against the snapshot
//! each `$deltatoken` was issued for (first rounds list everything; groups with many members
//! come back several times, their members split across entries; pages follow
//! `@odata.nextLink` to a final `@odata.deltaLink`), and can make every issued token expire
//! (`400` with `syncStateNotFound`, as Graph answers a token past its 7 days, or `410 Gone`
//! with `resyncRequired`).
//!
//! It counts requests (per kind and per path) and can inject faults at a given page of a
//! given path: a `429` with `Retry-After` a set number of times, or a status forever. It
//! checks what a real tenant checks on the token request (tenant, client id, secret,
//! `.default` scope) and answers with the same AADSTS errors, and refuses unknown bearer
//! tokens with `401`. It is not a Graph emulator: only what the Graph source reads is served.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use scim_sync::config::{GraphConfig, Secret, SecretFrom};
use scim_sync::model::{Directory, SourceId};

/// The tenant id the double answers for.
pub const TENANT: &str = "double-tenant";
/// The client id the double accepts.
pub const CLIENT_ID: &str = "double-client";
/// The client secret the double accepts.
pub const CLIENT_SECRET: &str = "double-secret-value";

/// What a fault answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `429 Too Many Requests` with `Retry-After: secs`.
    Throttle {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// This status with a Graph error body.
    Status(u16),
}

#[derive(Clone, Debug)]
struct Fault {
    path: String,
    page: usize,
    kind: FaultKind,
    /// Answers left; `None` is forever.
    remaining: Option<u32>,
}

struct Inner {
    dir: RwLock<Directory>,
    page_size: AtomicUsize,
    token_lifetime: AtomicU64,
    faults: Mutex<Vec<Fault>>,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
    by_path: Mutex<BTreeMap<String, u64>>,
    tokens: Mutex<BTreeSet<String>>,
    issued: AtomicU64,
    base_url: RwLock<String>,
    /// PIM assignment schedule instances, as Graph's JSON (all groups).
    assignments: Mutex<Vec<Value>>,
    /// PIM assignment schedule requests, as Graph's JSON (all groups).
    requests: Mutex<Vec<Value>>,
    /// Group id → the rules of its member role's PIM policy, as Graph's JSON.
    policies: Mutex<BTreeMap<String, Vec<Value>>>,
    /// Delta tokens and rounds in progress.
    delta: Mutex<DeltaBook>,
    /// Delta rounds started without a `$deltatoken` (not a kind of request of its own).
    from_scratch: AtomicU64,
    /// Requests served inside a `$batch`: counted by kind, not as HTTP requests.
    batched: AtomicU64,
}

/// Marks a request the double serves inside a `$batch`.
const BATCHED: &str = "x-graph-double-batched";

/// What a delta token stands for: the directory (one kind of it) when it was issued.
#[derive(Clone)]
enum DeltaSnap {
    /// Groups: name and members (id → `@odata.type`).
    Groups(BTreeMap<String, (String, BTreeMap<String, &'static str>)>),
    /// Users as served.
    Users(BTreeMap<String, Value>),
}

/// Delta tokens (and rounds) kept, both kinds together.
const DELTA_KEPT: u64 = 8;

#[derive(Default)]
struct DeltaBook {
    /// Token number → its kind and scope, for keeping the last few of each.
    classes: BTreeMap<u64, (&'static str, Option<BTreeSet<String>>)>,
    issued: u64,
    /// `$deltatoken` → the snapshot it was issued for and the groups its round was scoped
    /// to (`$filter=id eq '…' or …`; `None`: every group).
    tokens: HashMap<String, (DeltaSnap, Option<BTreeSet<String>>)>,
    /// Round id → (all its entries, the `$deltatoken` of its deltaLink).
    rounds: HashMap<String, (Vec<Value>, String)>,
    /// The error code answered with `410` to a token no longer known.
    expired_code: Option<String>,
}

/// The double's state: the directory served, faults, counters. Cheap to clone (shared).
#[derive(Clone)]
pub struct DoubleState {
    inner: Arc<Inner>,
}

impl DoubleState {
    /// A double serving `dir`, pages of 100 (Graph's default), tokens valid an hour.
    pub fn new(dir: Directory) -> Self {
        DoubleState {
            inner: Arc::new(Inner {
                dir: RwLock::new(dir),
                page_size: AtomicUsize::new(100),
                token_lifetime: AtomicU64::new(3599),
                faults: Mutex::default(),
                by_kind: Mutex::default(),
                by_path: Mutex::default(),
                tokens: Mutex::default(),
                issued: AtomicU64::new(0),
                base_url: RwLock::default(),
                assignments: Mutex::default(),
                requests: Mutex::default(),
                policies: Mutex::default(),
                delta: Mutex::default(),
                from_scratch: AtomicU64::new(0),
                batched: AtomicU64::new(0),
            }),
        }
    }

    /// Sets the page size of member and eligibility lists (the `$top` asked is ignored, as
    /// Graph may).
    pub fn set_page_size(&self, n: usize) {
        self.inner.page_size.store(n.max(1), Ordering::Relaxed);
    }

    /// Sets `expires_in` of the tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.inner.token_lifetime.store(secs, Ordering::Relaxed);
    }

    /// Forgets every issued token: the next Graph request with one gets `401`.
    pub fn revoke_tokens(&self) {
        lock(&self.inner.tokens).clear();
    }

    /// Sets the PIM assignment schedule instances served (Graph's JSON: `id`, `groupId`,
    /// `principalId`, `accessId`, `assignmentType`, `startDateTime`, `endDateTime`); each
    /// group's read gets those with its `groupId`.
    pub fn set_assignments(&self, instances: Vec<Value>) {
        *lock(&self.inner.assignments) = instances;
    }

    /// Replaces the PIM assignment schedule requests served (Graph's
    /// `privilegedAccessGroupAssignmentScheduleRequest` JSON, any groups).
    pub fn set_requests(&self, requests: Vec<Value>) {
        *lock(&self.inner.requests) = requests;
    }

    /// Sets the rules of `group`'s member-role PIM policy (Graph's
    /// `unifiedRoleManagementPolicyRule` JSON); a group without rules set has no policy
    /// assignment (PIM does not govern it).
    pub fn set_policy(&self, group: &str, rules: Vec<Value>) {
        lock(&self.inner.policies).insert(group.to_owned(), rules);
    }

    /// Changes the directory served.
    pub fn update(&self, f: impl FnOnce(&mut Directory)) {
        let mut dir = self.inner.dir.write().unwrap_or_else(|p| p.into_inner());
        f(&mut dir);
    }

    /// Answers `429` with `Retry-After: retry_after_secs` to the next `times` requests for
    /// page `page` (1-based) of `path` (e.g. `/v1.0/groups/g1/members/microsoft.graph.user`).
    pub fn throttle(&self, path: &str, page: usize, retry_after_secs: u64, times: u32) {
        lock(&self.inner.faults).push(Fault {
            path: path.to_owned(),
            page,
            kind: FaultKind::Throttle { retry_after_secs },
            remaining: Some(times),
        });
    }

    /// Answers `status` to every request for page `page` of `path`, until
    /// [`DoubleState::clear_faults`].
    pub fn fail_always(&self, path: &str, page: usize, status: u16) {
        lock(&self.inner.faults).push(Fault {
            path: path.to_owned(),
            page,
            kind: FaultKind::Status(status),
            remaining: None,
        });
    }

    /// Forgets every delta token issued so far: a round from one of them gets Graph error
    /// `code`, with `410 Gone` for `resyncRequired` and `400` otherwise (`syncStateNotFound`).
    pub fn expire_delta_tokens(&self, code: &str) {
        let mut book = lock(&self.inner.delta);
        book.tokens.clear();
        book.expired_code = Some(code.to_owned());
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// Requests of one kind: `token`, `group`, `members`, `transitiveMembers`,
    /// `eligibility`, `assignments`, `user`, `groupsDelta`, `usersDelta` (every page of a
    /// delta round), `deltaFromScratch` (first pages of rounds without a `$deltatoken`).
    pub fn requests(&self, kind: &str) -> u64 {
        if kind == "deltaFromScratch" {
            return self.inner.from_scratch.load(Ordering::Relaxed);
        }
        lock(&self.inner.by_kind).get(kind).copied().unwrap_or(0)
    }

    /// HTTP requests received, the token endpoint included: a `$batch` is one, the reads it
    /// carries count by their kind in [`DoubleState::requests`] only (`deltaFromScratch` is
    /// not a kind: those requests count as `groupsDelta` or `usersDelta`).
    pub fn total_requests(&self) -> u64 {
        lock(&self.inner.by_kind).values().sum::<u64>() - self.inner.batched.load(Ordering::Relaxed)
    }

    /// Requests for one URL path.
    pub fn path_requests(&self, path: &str) -> u64 {
        lock(&self.inner.by_path).get(path).copied().unwrap_or(0)
    }

    /// Resets the counters.
    pub fn reset_counts(&self) {
        self.inner.from_scratch.store(0, Ordering::Relaxed);
        self.inner.batched.store(0, Ordering::Relaxed);
        lock(&self.inner.by_kind).clear();
        lock(&self.inner.by_path).clear();
    }

    fn count(&self, kind: &'static str, path: &str, headers: &HeaderMap) {
        if headers.contains_key(BATCHED) {
            self.inner.batched.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.inner.by_kind).entry(kind).or_default() += 1;
        *lock(&self.inner.by_path)
            .entry(path.to_owned())
            .or_default() += 1;
    }

    fn fault(&self, path: &str, page: usize) -> Option<Response> {
        let mut faults = lock(&self.inner.faults);
        let i = faults
            .iter()
            .position(|f| f.path == path && f.page == page && f.remaining != Some(0))?;
        let f = &mut faults[i];
        if let Some(n) = f.remaining.as_mut() {
            *n -= 1;
        }
        Some(match f.kind {
            FaultKind::Throttle { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_secs.to_string())],
                axum::Json(graph_error("TooManyRequests", "Please retry again later.")),
            )
                .into_response(),
            FaultKind::Status(s) => (
                StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(graph_error("UnknownError", "injected fault")),
            )
                .into_response(),
        })
    }

    /// Counts a Graph request of `kind` for `path`; `None` when its bearer token is one the
    /// double issued, else the `401` to answer.
    fn admit(&self, kind: &'static str, path: &str, headers: &HeaderMap) -> Option<Response> {
        self.count(kind, path, headers);
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(t) if lock(&self.inner.tokens).contains(t) => None,
            _ => Some(
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(graph_error(
                        "InvalidAuthenticationToken",
                        "Access token has expired or is not yet valid.",
                    )),
                )
                    .into_response(),
            ),
        }
    }

    fn dir(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.inner.dir.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn graph_error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "innerError": {"request-id": "double"}}})
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(graph_error(
            "Request_ResourceNotFound",
            &format!("Resource '{what}' does not exist or one of its queried reference-property objects are not present."),
        )),
    )
        .into_response()
}

fn user_json(dir: &Directory, id: &SourceId) -> Option<Value> {
    let u = dir.users.get(id)?;
    let mut m = serde_json::Map::new();
    m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
    m.insert("id".into(), json!(id.as_str()));
    m.extend(u.attrs.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Some(Value::Object(m))
}

/// One page of `items` at `$skiptoken` (an offset), with a nextLink when more follow.
fn page(
    state: &DoubleState,
    uri: &Uri,
    q: &HashMap<String, String>,
    items: Vec<Value>,
) -> Response {
    let size = state.inner.page_size.load(Ordering::Relaxed);
    let offset: usize = q
        .get("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if let Some(r) = state.fault(uri.path(), offset / size + 1) {
        return r;
    }
    let end = (offset + size).min(items.len());
    let value: Vec<Value> = items
        .get(offset.min(end)..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut body = json!({ "value": value });
    if end < items.len() {
        let kept: Vec<&str> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| {
                !p.is_empty() && !p.starts_with("$skiptoken=") && !p.starts_with("%24skiptoken=")
            })
            .collect();
        let base = state
            .inner
            .base_url
            .read()
            .map(|b| b.clone())
            .unwrap_or_default();
        let mut link = format!("{base}{}?", uri.path());
        for p in kept {
            link.push_str(p);
            link.push('&');
        }
        link.push_str(&format!("$skiptoken={end}"));
        body["@odata.nextLink"] = json!(link);
    }
    axum::Json(body).into_response()
}

async fn token(
    State(state): State<DoubleState>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.count(
        "token",
        &format!("/{tenant}/oauth2/v2.0/token"),
        &HeaderMap::new(),
    );
    let refuse = |status: StatusCode, error: &str, description: String| {
        (
            status,
            axum::Json(json!({
                "error": error,
                "error_description": format!("{description}\r\nTrace ID: 0000 Correlation ID: 0000 Timestamp: 2026-01-01 00:00:00Z"),
                "error_codes": [description.trim_start_matches("AADSTS").split(':').next().unwrap_or_default().parse::<u64>().unwrap_or(0)],
            })),
        )
            .into_response()
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if tenant != TENANT {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            format!(
                "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if field("grant_type") != "client_credentials" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.".into(),
        );
    }
    if field("client_id") != CLIENT_ID {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!(
                "AADSTS700016: Application with identifier '{}' was not found in the directory '{TENANT}'.",
                field("client_id")
            ),
        );
    }
    if field("client_secret") != CLIENT_SECRET {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            format!(
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'."
            ),
        );
    }
    if !field("scope").ends_with("/.default") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided request must include a 'scope' input parameter.".into(),
        );
    }
    let n = state.inner.issued.fetch_add(1, Ordering::Relaxed) + 1;
    let t = format!("double-access-token-{n}");
    lock(&state.inner.tokens).insert(t.clone());
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": state.inner.token_lifetime.load(Ordering::Relaxed),
        "ext_expires_in": state.inner.token_lifetime.load(Ordering::Relaxed),
        "access_token": t,
    }))
    .into_response()
}

async fn group(
    State(state): State<DoubleState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = state.admit("group", uri.path(), &headers) {
        return r;
    }
    if let Some(r) = state.fault(uri.path(), 1) {
        return r;
    }
    let dir = state.dir();
    match dir.groups.get(&SourceId::new(id.clone())) {
        Some(g) => axum::Json(json!({"id": id, "displayName": g.display_name})).into_response(),
        None => not_found(&id),
    }
}

async fn members(
    State(state): State<DoubleState>,
    Path((id, rel, cast)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let kind = match rel.as_str() {
        "members" => "members",
        "transitiveMembers" => "transitiveMembers",
        _ => return not_found(&rel),
    };
    if let Some(r) = state.admit(kind, uri.path(), &headers) {
        return r;
    }
    if cast != "microsoft.graph.user" {
        return not_found(&cast);
    }
    let items: Vec<Value> = {
        let dir = state.dir();
        let gid = SourceId::new(id.clone());
        if !dir.groups.contains_key(&gid) {
            return not_found(&id);
        }
        let ids = if kind == "members" {
            dir.groups[&gid]
                .members
                .iter()
                .filter(|m| dir.users.contains_key(*m))
                .cloned()
                .collect()
        } else {
            transitive_users(&dir, &gid)
        };
        ids.iter().filter_map(|u| user_json(&dir, u)).collect()
    };
    page(&state, &uri, &q, items)
}

async fn eligibility(
    State(state): State<DoubleState>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = state.admit("eligibility", uri.path(), &headers) {
        return r;
    }
    let Some((gid, principal)) = group_and_principal(&q) else {
        return bad_filter();
    };
    let items: Vec<Value> = {
        let dir = state.dir();
        dir.groups
            .get(&SourceId::new(gid.clone()))
            .map(|g| {
                g.eligible
                    .iter()
                    .filter(|u| principal.as_ref().is_none_or(|p| u.as_str() == p))
                    .map(|u| {
                        json!({
                            "id": format!("{gid}_member_{u}"),
                            "principalId": u.as_str(),
                            "groupId": gid,
                            "accessId": "member",
                            "memberType": "Direct",
                            "startDateTime": "2026-01-01T00:00:00Z",
                            "endDateTime": null,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    page(&state, &uri, &q, items)
}

/// The group of a schedule-instances `$filter=groupId eq '…'`.
fn group_filter(q: &HashMap<String, String>) -> Option<String> {
    group_and_principal(q).map(|(g, _)| g)
}

/// `$filter=groupId eq '…'`, optionally `and principalId eq '…'` (Graph's documented
/// combination): the group, and the principal when given.
fn group_and_principal(q: &HashMap<String, String>) -> Option<(String, Option<String>)> {
    let rest = q.get("$filter")?.strip_prefix("groupId eq '")?;
    let (group, rest) = quoted(rest)?;
    if rest.is_empty() {
        return Some((group, None));
    }
    let (principal, rest) = quoted(rest.strip_prefix(" and principalId eq '")?)?;
    rest.is_empty().then_some((group, Some(principal)))
}

/// An OData string literal's text up to its closing quote (`''` is a quote), and what
/// follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
                out.push('\'');
            } else {
                return Some((out, &s[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Graph's `400` for a schedule-instances read without a usable filter.
fn bad_filter() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(graph_error(
            "BadRequest",
            "The request must have a $filter on groupId or principalId.",
        )),
    )
        .into_response()
}

async fn assignments(
    State(state): State<DoubleState>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = state.admit("assignments", uri.path(), &headers) {
        return r;
    }
    let Some(gid) = group_filter(&q) else {
        return bad_filter();
    };
    let items: Vec<Value> = lock(&state.inner.assignments)
        .iter()
        .filter(|i| i["groupId"].as_str() == Some(gid.as_str()))
        .cloned()
        .collect();
    page(&state, &uri, &q, items)
}

async fn user(
    State(state): State<DoubleState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = state.admit("user", uri.path(), &headers) {
        return r;
    }
    if let Some(r) = state.fault(uri.path(), 1) {
        return r;
    }
    let dir = state.dir();
    match user_json(&dir, &SourceId::new(id.clone())) {
        Some(u) => axum::Json(u).into_response(),
        None => not_found(&id),
    }
}

fn transitive_users(dir: &Directory, root: &SourceId) -> Vec<SourceId> {
    let mut users = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(gid) = stack.pop() {
        if !seen.insert(gid.clone()) {
            continue;
        }
        if let Some(g) = dir.groups.get(&gid) {
            for m in &g.members {
                if dir.users.contains_key(m) {
                    users.insert(m.clone());
                } else if dir.groups.contains_key(m) {
                    stack.push(m.clone());
                }
            }
        }
    }
    users.into_iter().collect()
}

/// The ids of a scoped `groups/delta` filter, `id eq '{a}' or id eq '{b}' …`; `None` for
/// any other filter.
fn scoped_ids(filter: &str) -> Option<BTreeSet<String>> {
    filter
        .split(" or ")
        .map(|part| {
            let (id, rest) = quoted(part.trim().strip_prefix("id eq '")?)?;
            rest.is_empty().then_some(id)
        })
        .collect()
}

/// The groups as `groups/delta` sees them (only those of `scope` when it is set): members
/// that are users or groups, typed.
fn groups_snap(dir: &Directory, scope: Option<&BTreeSet<String>>) -> DeltaSnap {
    let groups = dir
        .groups
        .values()
        .filter(|g| scope.is_none_or(|s| s.contains(g.id.as_str())))
        .map(|g| {
            let members = g
                .members
                .iter()
                .filter_map(|m| {
                    let kind = if dir.users.contains_key(m) {
                        "#microsoft.graph.user"
                    } else if dir.groups.contains_key(m) {
                        "#microsoft.graph.group"
                    } else {
                        return None;
                    };
                    Some((m.as_str().to_owned(), kind))
                })
                .collect();
            (g.id.as_str().to_owned(), (g.display_name.clone(), members))
        })
        .collect();
    DeltaSnap::Groups(groups)
}

/// The users as `users/delta` sees them.
fn users_snap(dir: &Directory) -> DeltaSnap {
    DeltaSnap::Users(
        dir.users
            .keys()
            .filter_map(|id| Some((id.as_str().to_owned(), user_json(dir, id)?)))
            .collect(),
    )
}

/// The entries of a round from `old` to `new` (same kind). Group members are split into
/// entries of at most `chunk` members, as Graph repeats a group across pages.
fn delta_entries(old: &DeltaSnap, new: &DeltaSnap, chunk: usize) -> Vec<Value> {
    let removed = |id: &str| json!({"id": id, "@removed": {"reason": "deleted"}});
    let mut out = Vec::new();
    match (old, new) {
        (DeltaSnap::Groups(old), DeltaSnap::Groups(new)) => {
            for (id, (name, members)) in new {
                let before = old.get(id);
                let mut changes: Vec<Value> = members
                    .iter()
                    .filter(|(m, _)| !before.is_some_and(|(_, b)| b.contains_key(*m)))
                    .map(|(m, kind)| json!({"@odata.type": kind, "id": m}))
                    .collect();
                if let Some((_, b)) = before {
                    changes.extend(b.iter().filter(|(m, _)| !members.contains_key(*m)).map(
                        |(m, kind)| json!({"@odata.type": kind, "id": m, "@removed": {"reason": "deleted"}}),
                    ));
                }
                let renamed = before.is_none_or(|(n, _)| n != name);
                if changes.is_empty() && !renamed {
                    continue;
                }
                if changes.is_empty() {
                    out.push(json!({"id": id, "displayName": name}));
                }
                for part in changes.chunks(chunk) {
                    out.push(json!({"id": id, "displayName": name, "members@delta": part}));
                }
            }
            out.extend(
                old.keys()
                    .filter(|id| !new.contains_key(*id))
                    .map(|id| removed(id)),
            );
        }
        (DeltaSnap::Users(old), DeltaSnap::Users(new)) => {
            for (id, user) in new {
                match old.get(id) {
                    Some(before) if before == user => {}
                    Some(Value::Object(before)) => {
                        // Graph sends the selected attributes; a cleared one comes as null.
                        let mut user = user.clone();
                        for k in before.keys() {
                            if user.get(k).is_none() {
                                user[k.as_str()] = Value::Null;
                            }
                        }
                        out.push(user);
                    }
                    _ => out.push(user.clone()),
                }
            }
            out.extend(
                old.keys()
                    .filter(|id| !new.contains_key(*id))
                    .map(|id| removed(id)),
            );
        }
        _ => {}
    }
    out
}

impl DeltaBook {
    /// Makes room for token `n` of `kind` and `scope`: each token holds a copy of the
    /// directory, so only the last [`DELTA_KEPT`] of each kind and scope are kept (a failed
    /// round is retried from the token before it), and a scoped watch's frequent rounds do not
    /// push out the tenant's tokens.
    fn keep(&mut self, n: u64, kind: &'static str, scope: &Option<BTreeSet<String>>) {
        let class = (kind, scope.clone());
        let same: Vec<u64> = self
            .classes
            .iter()
            .filter(|(_, c)| **c == class)
            .map(|(t, _)| *t)
            .collect();
        let gone = same.len().saturating_sub(DELTA_KEPT as usize - 1);
        for t in &same[..gone] {
            self.classes.remove(t);
            self.tokens.remove(&format!("dt{t}"));
            self.rounds.remove(&format!("r{t}"));
        }
        self.classes.insert(n, class);
    }
}

/// `policies/roleManagementPolicyAssignments`: the member (or owner) policy of the group a
/// `$filter=scopeId eq '…' and scopeType eq 'Group' …` names (both are required), with its
/// rules as `$expand=policy($expand=rules)` asks.
async fn policy_assignments(
    State(state): State<DoubleState>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = state.admit("policies", uri.path(), &headers) {
        return r;
    }
    let filter = q.get("$filter").cloned().unwrap_or_default();
    let mut scope = None;
    let mut role = None;
    let mut group_scope = false;
    for part in filter.split(" and ") {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("scopeId eq '") {
            scope = quoted(v).map(|(v, _)| v);
        } else if let Some(v) = part.strip_prefix("roleDefinitionId eq '") {
            role = quoted(v).map(|(v, _)| v);
        } else if part == "scopeType eq 'Group'" {
            group_scope = true;
        }
    }
    let (Some(scope), true) = (scope, group_scope) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(graph_error(
                "BadRequest",
                "The filter must have scopeId and scopeType.",
            )),
        )
            .into_response();
    };
    let rules = lock(&state.inner.policies).get(&scope).cloned();
    let items: Vec<Value> = match rules {
        Some(rules) if role.as_deref().is_none_or(|r| r == "member") => {
            let policy = format!("Group_{scope}_member");
            let expand = q.get("$expand").is_some_and(|e| e.contains("rules"));
            let mut p = json!({"id": policy, "scopeId": scope, "scopeType": "Group", "isOrganizationDefault": false});
            if expand {
                p["rules"] = Value::Array(rules);
            }
            vec![json!({
                "id": format!("{policy}_member"), "policyId": policy, "scopeId": scope,
                "scopeType": "Group", "roleDefinitionId": "member", "policy": p,
            })]
        }
        _ => vec![],
    };
    page(&state, &uri, &q, items)
}

/// `assignmentScheduleRequests`, filtered on `groupId` (and optionally `principalId`), as
/// Graph requires.
async fn schedule_requests(
    State(state): State<DoubleState>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = state.admit("requests", uri.path(), &headers) {
        return r;
    }
    let Some((gid, principal)) = group_and_principal(&q) else {
        return bad_filter();
    };
    let items: Vec<Value> = lock(&state.inner.requests)
        .iter()
        .filter(|r| r["groupId"].as_str() == Some(gid.as_str()))
        .filter(|r| {
            principal
                .as_deref()
                .is_none_or(|p| r["principalId"].as_str() == Some(p))
        })
        .cloned()
        .collect();
    page(&state, &uri, &q, items)
}

/// `POST /v1.0/$batch`: each request (at most 20, ids unique) is served by the double's own
/// routes with the batch's bearer token, and its status, `Retry-After` and body come back in
/// `responses`, in reverse order (Graph does not promise the order; clients match by `id`).
async fn batch(State(state): State<DoubleState>, headers: HeaderMap, body: String) -> Response {
    use tower::ServiceExt;
    if let Some(r) = state.admit("batch", "/v1.0/$batch", &headers) {
        return r;
    }
    let bad = |m: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(graph_error("BadRequest", m)),
        )
            .into_response()
    };
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return bad("The batch body is not JSON.");
    };
    let Some(requests) = body["requests"].as_array() else {
        return bad("The batch has no requests.");
    };
    if requests.len() > 20 {
        return bad("The batch has more than 20 requests.");
    }
    let ids: BTreeSet<String> = requests
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_lowercase))
        .collect();
    if ids.len() != requests.len() {
        return bad("Every request of a batch needs a unique id.");
    }
    let auth = headers.get("authorization").cloned();
    let mut responses = Vec::new();
    for r in requests {
        let url = format!("/v1.0{}", r["url"].as_str().unwrap_or_default());
        let mut req = axum::http::Request::builder()
            .method(r["method"].as_str().unwrap_or("GET"))
            .uri(url);
        if let Some(a) = &auth {
            req = req.header("authorization", a.clone());
        }
        req = req.header(BATCHED, "1");
        let Ok(req) = req.body(axum::body::Body::empty()) else {
            return bad("A batched request is malformed.");
        };
        let Ok(resp) = router(state.clone()).oneshot(req).await;
        let status = resp.status().as_u16();
        let mut out_headers = serde_json::Map::new();
        if let Some(v) = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
        {
            out_headers.insert("Retry-After".into(), json!(v));
        }
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        responses
            .push(json!({"id": r["id"], "status": status, "headers": out_headers, "body": body}));
    }
    responses.reverse();
    axum::Json(json!({ "responses": responses })).into_response()
}

/// `groups/delta` and `users/delta`: a round starts from a `$deltatoken` (or from nothing),
/// its pages are served through `$skiptoken`, its last page carries the next deltaLink.
async fn delta(
    State(state): State<DoubleState>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let groups = uri.path().starts_with("/v1.0/groups/");
    let unsupported = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(graph_error("Request_UnsupportedQuery", message)),
        )
            .into_response()
    };
    // A scoped round's links carry its scope, as Graph encodes the first call's query.
    let scope = match (groups, q.get("$deltatoken"), q.get("$filter")) {
        (false, _, _) => None,
        (true, Some(t), _) => lock(&state.inner.delta)
            .tokens
            .get(t)
            .and_then(|(_, scope)| scope.clone()),
        (true, None, Some(f)) => match scoped_ids(f) {
            Some(ids) if ids.len() <= 50 => Some(ids),
            Some(_) => return unsupported("There is a limit of 50 filtered objects."),
            None => {
                return unsupported(
                    "The only supported $filter is id eq '{value}', several joined with or.",
                );
            }
        },
        (true, None, None) => None,
    };
    let kind = match (groups, scope.is_some()) {
        (true, true) => "groupsDeltaScoped",
        (true, false) => "groupsDelta",
        (false, _) => "usersDelta",
    };
    if let Some(r) = state.admit(kind, uri.path(), &headers) {
        return r;
    }
    let size = state.inner.page_size.load(Ordering::Relaxed);
    let (round, offset) = match q.get("$skiptoken").and_then(|s| s.split_once('.')) {
        Some((round, offset)) => (round.to_owned(), offset.parse().unwrap_or(0)),
        None => {
            let now = {
                let dir = state.dir();
                if groups {
                    groups_snap(&dir, scope.as_ref())
                } else {
                    users_snap(&dir)
                }
            };
            if !q.contains_key("$deltatoken") {
                state.inner.from_scratch.fetch_add(1, Ordering::Relaxed);
            }
            let mut book = lock(&state.inner.delta);
            let old = match q.get("$deltatoken") {
                None => {
                    if groups {
                        DeltaSnap::Groups(BTreeMap::new())
                    } else {
                        DeltaSnap::Users(BTreeMap::new())
                    }
                }
                Some(t) => match book.tokens.get(t) {
                    Some((s, _)) => s.clone(),
                    None => {
                        let code = book
                            .expired_code
                            .clone()
                            .unwrap_or_else(|| "syncStateNotFound".into());
                        // An expired token is a 400 for Graph's directory objects; a reset
                        // of the sync state is a 410.
                        let status = if code == "resyncRequired" {
                            StatusCode::GONE
                        } else {
                            StatusCode::BAD_REQUEST
                        };
                        return (
                            status,
                            axum::Json(graph_error(
                                &code,
                                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
                            )),
                        )
                            .into_response();
                    }
                },
            };
            let entries = delta_entries(&old, &now, size);
            book.issued += 1;
            let n = book.issued;
            let token = format!("dt{n}");
            let round = format!("r{n}");
            book.keep(n, kind, &scope);
            book.tokens.insert(token.clone(), (now, scope));
            book.rounds.insert(round.clone(), (entries, token));
            (round, 0)
        }
    };
    if let Some(r) = state.fault(uri.path(), offset / size + 1) {
        return r;
    }
    let book = lock(&state.inner.delta);
    let Some((entries, token)) = book.rounds.get(&round) else {
        return not_found(&round);
    };
    let end = (offset + size).min(entries.len());
    let value = entries
        .get(offset.min(end)..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let base = state
        .inner
        .base_url
        .read()
        .map(|b| b.clone())
        .unwrap_or_default();
    let mut body = json!({ "value": value });
    if end < entries.len() {
        body["@odata.nextLink"] = json!(format!("{base}{}?$skiptoken={round}.{end}", uri.path()));
    } else {
        body["@odata.deltaLink"] = json!(format!("{base}{}?$deltatoken={token}", uri.path()));
    }
    axum::Json(body).into_response()
}

/// The double's routes over `state`.
pub fn router(state: DoubleState) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/$batch", post(batch))
        .route("/v1.0/groups/delta", get(delta))
        .route("/v1.0/users/delta", get(delta))
        .route("/v1.0/groups/{id}", get(group))
        .route("/v1.0/groups/{id}/{rel}/{cast}", get(members))
        .route(
            "/v1.0/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances",
            get(eligibility),
        )
        .route(
            "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleInstances",
            get(assignments),
        )
        .route(
            "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests",
            get(schedule_requests),
        )
        .route(
            "/v1.0/policies/roleManagementPolicyAssignments",
            get(policy_assignments),
        )
        .route("/v1.0/users/{id}", get(user))
        .with_state(state)
}

/// A double serving in a background task; dropping it stops the server.
pub struct GraphDouble {
    url: String,
    state: DoubleState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GraphDouble {
    /// Serves `state` on a free loopback port.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(state: DoubleState) -> std::io::Result<GraphDouble> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        if let Ok(mut b) = state.inner.base_url.write() {
            *b = url.clone();
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(GraphDouble {
            url,
            state,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:PORT`: both `graph_url` and `login_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The served state.
    pub fn state(&self) -> &DoubleState {
        &self.state
    }

    /// A `[source] kind = "graph"` config pointing at the double (the secret from the
    /// environment variable `secret_env`, which the caller sets or ignores).
    pub fn config(&self, secret_env: &str) -> GraphConfig {
        GraphConfig {
            tenant_id: TENANT.into(),
            client_id: CLIENT_ID.into(),
            client_secret: SecretFrom::Env(secret_env.into()),
            graph_url: self.url.clone(),
            login_url: self.url.clone(),
            pim_poll_interval: std::time::Duration::from_secs(30),
            watch_interval: std::time::Duration::from_secs(10),
        }
    }

    /// The client secret the double accepts.
    pub fn secret() -> Secret {
        Secret::new(CLIENT_SECRET)
    }
}

impl Drop for GraphDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
