//! [`ScimClient`]: one SCIM 2.0 service provider, spoken to over HTTP.
//!
//! All HTTP goes through one place, `send`, which holds a concurrency permit for each
//! attempt (never while sleeping), counts every request, and retries with an explicit
//! bounded loop: `429` waits `Retry-After` (seconds or HTTP-date, capped), `5xx`, timeouts
//! and connection errors back off exponentially with full jitter, other `4xx` fail at once.
//! Every answer's body is read up to `max_response` ([`crate::http::read_body`]); a larger
//! one is refused at once as [`Error::TooLarge`], never buffered whole and never retried.
//!
//! Creates (POST) are never retried blindly, because a POST that timed out may have been
//! processed: `ensure_user`/`ensure_group` look the resource up first, then adopt it or
//! POST again. A `409` on create leads to a lookup and adoption, never a second POST.
//!
//! Lookups filter (`userName eq "…"`) and always match the answer locally. An app that does
//! not implement filtering (`501`, remembered) or cannot evaluate one filter
//! (`400 invalidFilter`) is listed whole instead, so lookups stay correct, at the price of
//! reading the collection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::utf8_percent_encode;
use reqwest::Method;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::error::{Error, retryable_status};
use super::proto;
use crate::http::{BodyError, RetryPolicy, STRICT, parse_retry_after, read_body};
use crate::model::{AppName, AttrKey, Attrs, Profile, ScimId};

const SCIM_JSON: &str = "application/scim+json";
const ACCEPT_VALUE: &str = "application/scim+json, application/json";
const USER_AGENT: &str = concat!("scim-sync/", env!("CARGO_PKG_VERSION"));
/// `count` asked for on every list page.
const PAGE_SIZE: u64 = 100;
/// Upper bound on pages of one listing (a million resources), against servers that page forever.
const MAX_PAGES: u32 = 10_000;
/// Upper bound on the connect phase, within the per-request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How one app is reached.
#[derive(Clone)]
pub struct ClientOptions {
    /// The app's name, used in errors and logs.
    pub app: AppName,
    /// SCIM base URL, e.g. `https://crm.example.com/scim/v2` (a trailing `/` is ignored).
    pub base_url: String,
    /// Bearer token. Never logged, never shown in errors or `Debug`.
    pub token: String,
    /// Per-request timeout (whole request, body included).
    pub timeout: Duration,
    /// HTTP requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// Largest response body read, in bytes (`[[apps]] max_response`, default
    /// [`crate::http::DEFAULT_MAX_RESPONSE`]); a larger answer is [`Error::TooLarge`].
    pub max_response: u64,
    /// What kind of app it is: how it pages listings and how group members are read.
    pub profile: Profile,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("app", &self.app)
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("max_response", &self.max_response)
            .field("profile", &self.profile)
            .finish()
    }
}

/// How group members are removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RemovalForm {
    /// `{"op":"remove","path":"members[value eq \"id\"]"}`, one operation per member (RFC 7644).
    #[default]
    Filter,
    /// `{"op":"remove","path":"members","value":[{"value":id},…]}`, for apps that reject filters.
    ValueList,
}

impl RemovalForm {
    fn to_u8(self) -> u8 {
        match self {
            RemovalForm::Filter => 0,
            RemovalForm::ValueList => 1,
        }
    }

    fn from_u8(v: u8) -> Self {
        if v == 1 {
            RemovalForm::ValueList
        } else {
            RemovalForm::Filter
        }
    }
}

/// A user that exists in the app after [`ScimClient::ensure_user`].
#[derive(Clone, Debug, PartialEq)]
pub struct Ensured {
    /// The app's id for the user.
    pub id: ScimId,
    /// `true`: it existed and was taken over; `false`: we created it.
    pub adopted: bool,
    /// Adopted: the found resource flattened over the desired paths (so the caller can PATCH
    /// the differences); created: the desired attributes.
    pub current: Attrs,
    /// Created: the app's answer flattened over the paths sent, to see what it kept (read-back);
    /// `None` when adopted, or when the answer is not a representation of the user.
    pub echoed: Option<Attrs>,
}

/// A group that exists in the app after [`ScimClient::ensure_group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsuredGroup {
    /// The app's id for the group.
    pub id: ScimId,
    /// `true`: it existed and was taken over; `false`: we created it.
    pub adopted: bool,
    /// Members the found group already has (empty when created, or when the app does not
    /// return `members`).
    pub members: Vec<ScimId>,
}

/// A SCIM client for one app. Cheap to clone: clones share the connection pool, the
/// concurrency limit, the request counter and the removal form.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

struct Inner {
    app: AppName,
    base: String,
    token: String,
    timeout: Duration,
    retry: RetryPolicy,
    max_response: u64,
    profile: Profile,
    http: reqwest::Client,
    permits: Semaphore,
    sent: AtomicU64,
    removal: AtomicU8,
    /// Learnt from a `501` to a filtered listing: the app does not implement `filter`, so
    /// lookups list the collection and match locally.
    no_filter: AtomicBool,
    /// Resources asked for per page: [`PAGE_SIZE`], or less when the app's
    /// `filter.maxResults` says so.
    page_size: AtomicU64,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("app", &self.inner.app)
            .field("base_url", &self.inner.base)
            .field("token", &"[redacted]")
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .field("max_response", &self.inner.max_response)
            .field("requests_sent", &self.requests_sent())
            .field("removal_form", &self.removal_form())
            .field("filters_supported", &self.filters_supported())
            .finish()
    }
}

/// Whether `send` retries server errors and transport failures, or only 429s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Idempotent requests: 429, 5xx, timeouts and connection errors are retried.
    All,
    /// Creates: only 429 ("not processed") is retried; anything else goes back to the caller.
    RateLimitOnly,
}

/// One request to send.
struct Req {
    method: Method,
    /// Path relative to the base URL, ids escaped: `/Users/abc`.
    path: String,
    /// Encoded query string without `?`.
    query: Option<String>,
    body: Option<Value>,
}

impl Req {
    fn new(method: Method, path: String) -> Self {
        Req {
            method,
            path,
            query: None,
            body: None,
        }
    }

    fn query(mut self, query: String) -> Self {
        self.query = Some(query);
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// A response, its body read whole (up to `max_response`).
struct Resp {
    status: u16,
    body: Vec<u8>,
    location: Option<String>,
    retry_after: Option<String>,
}

/// Why one attempt got no usable response.
enum Failed {
    /// The request or the reading of its body failed in transport.
    Transport(reqwest::Error),
    /// The answer (of this status) had a body over `max_response`.
    TooLarge(u16, crate::http::TooLarge),
}

/// How to find the resource a create might duplicate.
enum Lookup<'a> {
    /// Users whose `matching` attribute equals `value`; `externalId` breaks ties.
    User {
        matching: &'a str,
        value: &'a str,
        external_id: Option<&'a str>,
    },
    /// Groups with this `displayName`; `externalId` breaks ties.
    Group {
        display_name: &'a str,
        external_id: &'a str,
    },
}

/// Outcome of the create protocol.
enum Created {
    /// Created: its id, and the app's answer when it was a JSON object.
    New(ScimId, Option<Value>),
    Found(Value),
}

impl ScimClient {
    /// Builds the client (one `reqwest::Client` with a connect timeout and the per-request
    /// timeout). Fails on an unusable base URL, an empty or non-header-safe token, or a zero
    /// timeout.
    pub fn new(opts: ClientOptions) -> Result<Self, Error> {
        let config = |reason: String| Error::Config {
            app: opts.app.clone(),
            reason,
        };
        let base = opts.base_url.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| config(format!("base_url {base:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config(format!(
                "base_url {base:?} must start with https:// or http://"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(config(format!(
                "base_url {base:?} must not have a query or fragment"
            )));
        }
        if opts.token.trim().is_empty() {
            return Err(config("the bearer token is empty".to_owned()));
        }
        if opts.timeout.is_zero() {
            return Err(config("the request timeout is zero".to_owned()));
        }
        if opts.max_response == 0 {
            return Err(config("max_response is zero".to_owned()));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", opts.token)).map_err(|_| {
            config("the bearer token contains characters not allowed in an HTTP header".to_owned())
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_VALUE));
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(USER_AGENT)
            .connect_timeout(opts.timeout.min(MAX_CONNECT_TIMEOUT))
            .timeout(opts.timeout)
            .build()
            .map_err(|e| config(format!("cannot build the HTTP client: {e}")))?;
        let mut retry = opts.retry;
        retry.max_attempts = retry.max_attempts.max(1);
        Ok(ScimClient {
            inner: Arc::new(Inner {
                app: opts.app,
                base,
                token: opts.token,
                timeout: opts.timeout,
                retry,
                max_response: opts.max_response,
                profile: opts.profile,
                http,
                permits: Semaphore::new(opts.concurrency.max(1)),
                sent: AtomicU64::new(0),
                removal: AtomicU8::new(RemovalForm::Filter.to_u8()),
                no_filter: AtomicBool::new(false),
                page_size: AtomicU64::new(PAGE_SIZE),
            }),
        })
    }

    /// The app this client talks to.
    pub fn app(&self) -> &AppName {
        &self.inner.app
    }

    /// Exact number of HTTP requests sent so far: every attempt, retries and lookups included.
    pub fn requests_sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    /// How members are currently removed.
    pub fn removal_form(&self) -> RemovalForm {
        RemovalForm::from_u8(self.inner.removal.load(Ordering::Relaxed))
    }

    /// `false` once the app answered `501 Not Implemented` to a filtered listing: lookups then
    /// read the whole collection and match locally.
    pub fn filters_supported(&self) -> bool {
        !self.inner.no_filter.load(Ordering::Relaxed)
    }

    /// Tells the client whether the app evaluates filters (a fact learnt by an earlier run);
    /// `false` makes lookups list and match locally from the first request.
    pub fn set_filters_supported(&self, supported: bool) {
        self.inner.no_filter.store(!supported, Ordering::Relaxed);
    }

    /// Sets how members are removed (the engine restores the persisted form per app).
    pub fn set_removal_form(&self, form: RemovalForm) {
        self.inner.removal.store(form.to_u8(), Ordering::Relaxed);
    }

    /// Resources asked for per page of a listing.
    pub fn page_size(&self) -> u64 {
        self.inner.page_size.load(Ordering::Relaxed)
    }

    /// Asks for at most `max` resources per page (the app's `filter.maxResults`), never more
    /// than the client's own page size.
    pub fn set_max_results(&self, max: u64) {
        self.inner
            .page_size
            .store(max.clamp(1, PAGE_SIZE), Ordering::Relaxed);
    }

    // ---------------------------------------------------------------- users

    /// `GET /Users/{id}`; `None` on 404.
    pub async fn get_user(&self, id: &ScimId) -> Result<Option<Value>, Error> {
        self.get_resource(resource_path("Users", id)).await
    }

    /// Users whose `attr` (a mapping path) equals `value`.
    ///
    /// Sends `filter={attr} eq "{value}"` and reads every page, then keeps only resources
    /// whose attribute really equals `value` (ignoring case for `userName` and emails),
    /// because some apps ignore filters and return everything. An app that does not
    /// implement filtering (`501`) or cannot evaluate this filter (`400 invalidFilter`) is
    /// read whole instead (see `list_filtered`).
    pub async fn find_users(&self, attr: &str, value: &str) -> Result<Vec<Value>, Error> {
        let found = self
            .list_filtered("/Users", &proto::eq_filter(attr, value))
            .await?;
        Ok(keep_matching(found, attr, value))
    }

    /// Every user in the app (all pages).
    pub async fn list_users(&self) -> Result<Vec<Value>, Error> {
        self.list("/Users", None).await
    }

    /// Makes sure the user exists: looks it up by `matching` (value `attrs[matching]`) and
    /// adopts it, or creates it with the full resource built from `attrs`.
    ///
    /// A `409` on create leads to a lookup and adoption (or the `409` error when the lookup
    /// finds nothing). A create failing with a 5xx, a timeout or a connection error is never
    /// retried blindly: the user is looked up first and adopted if the POST went through.
    /// Several resources matching is an [`Error::Ambiguous`] unless `externalId` singles one out.
    pub async fn ensure_user(&self, matching: &str, attrs: &Attrs) -> Result<Ensured, Error> {
        let value = self.matching_value(matching, attrs)?;
        let lookup = Lookup::User {
            matching,
            value: &value,
            external_id: attrs.get("externalId").and_then(Value::as_str),
        };
        if let Some(found) = self.lookup(&lookup).await? {
            return self.adopt_user(&found, attrs);
        }
        self.create_user(attrs, &lookup).await
    }

    /// [`ScimClient::ensure_user`] with the lookup answered by `index` (one listing of the
    /// app's users for many creates) instead of a request: adopts what the listing found,
    /// or POSTs at once. The create protocol is the same: a `409` (someone created the user
    /// after the listing) still leads to a lookup and adoption, never a duplicate.
    pub async fn ensure_user_listed(
        &self,
        matching: &str,
        attrs: &Attrs,
        index: &UserIndex,
    ) -> Result<Ensured, Error> {
        if index.matching != matching {
            return self.ensure_user(matching, attrs).await;
        }
        let value = self.matching_value(matching, attrs)?;
        let external_id = attrs.get("externalId").and_then(Value::as_str);
        let lookup = Lookup::User {
            matching,
            value: &value,
            external_id,
        };
        let found = index.find(&value);
        let filter = proto::eq_filter(matching, &value);
        if let Some(found) = self.pick_one(found, external_id, "users", filter)? {
            return self.adopt_user(&found, attrs);
        }
        if !index.complete {
            return self.ensure_user(matching, attrs).await;
        }
        self.create_user(attrs, &lookup).await
    }

    /// How many requests one listing of every user costs (`totalResults` of a one-item
    /// page, in pages of the listing's size), counting that first request; `None` when the
    /// app does not say how many it holds.
    pub async fn user_listing_cost(&self) -> Result<Option<u64>, Error> {
        if self.inner.profile == Profile::AwsIdentityCenter {
            // Without a cursor, its totalResults counts the page, not the collection.
            return Ok(None);
        }
        let req = Req::new(Method::GET, "/Users".to_owned()).query("startIndex=1&count=1".into());
        let resp = self.send(&req, Retry::All).await?;
        let page = proto::ListPage::from_value(&self.json_body(&req, &resp)?);
        Ok(page
            .total_results
            .map(|total| 1 + total.div_ceil(self.page_size()).max(1)))
    }

    /// Lists the app's users, in at most `max_pages` requests, and indexes them by
    /// `matching`, for [`ScimClient::ensure_user_listed`]. A listing cut short is still
    /// used: a user it holds is adopted, one it does not is looked up.
    pub async fn index_users(&self, matching: &str, max_pages: u32) -> Result<UserIndex, Error> {
        let mut by_value: HashMap<String, Vec<Value>> = HashMap::new();
        let fold = proto::case_insensitive(matching);
        let complete = self
            .each_user_within(max_pages, |user| {
                if let Some(v) = proto::text_at(&user, matching) {
                    let key = if fold { v.to_lowercase() } else { v };
                    by_value.entry(key).or_default().push(user);
                }
            })
            .await?;
        Ok(UserIndex {
            matching: matching.to_owned(),
            by_value,
            complete,
        })
    }

    /// Whether a listing of the app's users is paged by cursor, so that its size is known
    /// only by listing it (AWS IAM Identity Center).
    pub fn lists_by_cursor(&self) -> bool {
        self.inner.profile == Profile::AwsIdentityCenter
    }

    /// The text value of the matching attribute, which a lookup needs.
    fn matching_value(&self, matching: &str, attrs: &Attrs) -> Result<String, Error> {
        match attrs.get(matching) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            _ => Err(Error::InvalidInput {
                app: self.inner.app.clone(),
                reason: format!(
                    "cannot look up the user before creating it: the matching attribute {matching} has no text value"
                ),
            }),
        }
    }

    /// POSTs the user (the create protocol of [`ScimClient::ensure_user`]).
    async fn create_user(&self, attrs: &Attrs, lookup: &Lookup<'_>) -> Result<Ensured, Error> {
        let req = Req::new(Method::POST, "/Users".to_owned()).body(proto::user_resource(attrs));
        match self.create(&req, lookup).await? {
            Created::New(id, answer) => Ok(Ensured {
                id,
                adopted: false,
                current: attrs.clone(),
                echoed: answer.as_ref().and_then(|a| echo(a, attrs.keys())),
            }),
            Created::Found(found) => self.adopt_user(&found, attrs),
        }
    }

    /// Sends one PATCH bringing the user's `changed` paths to `desired` (see
    /// [`proto::user_patch_ops`]). Nothing is sent when no operation results. Returns the
    /// app's answer flattened over the changed paths it was sent values for, when it answered
    /// with the user (read-back), else `None`.
    pub async fn patch_user(
        &self,
        id: &ScimId,
        desired: &Attrs,
        changed: &[String],
    ) -> Result<Option<Attrs>, Error> {
        let ops = proto::user_patch_ops(desired, changed);
        if ops.is_empty() {
            return Ok(None);
        }
        let req = Req::new(Method::PATCH, resource_path("Users", id)).body(proto::patch_body(ops));
        let resp = self.send(&req, Retry::All).await?;
        // 200 with the resource, or 204 with nothing to compare.
        let answer: Option<Value> = serde_json::from_slice(&resp.body).ok();
        let sent = desired
            .keys()
            .filter(|k| changed.iter().any(|c| c == &***k));
        Ok(answer.as_ref().and_then(|a| echo(a, sent)))
    }

    /// `DELETE /Users/{id}`; a 404 means already gone and succeeds.
    pub async fn delete_user(&self, id: &ScimId) -> Result<(), Error> {
        self.delete(resource_path("Users", id)).await
    }

    // ---------------------------------------------------------------- groups

    /// `GET /Groups/{id}`; `None` on 404.
    pub async fn get_group(&self, id: &ScimId) -> Result<Option<Value>, Error> {
        self.get_resource(resource_path("Groups", id)).await
    }

    /// The members the app holds in group `id`; `None` when the app no longer has the group.
    ///
    /// `GET /Groups/{id}` and its `members`, or, for AWS IAM Identity Center (whose groups
    /// always answer `"members": []`), the group's `GET` then the users listed with
    /// `filter=groups.value eq "{id}"`.
    pub async fn group_members(&self, id: &ScimId) -> Result<Option<BTreeSet<ScimId>>, Error> {
        let Some(group) = self.get_group(id).await? else {
            return Ok(None);
        };
        match self.inner.profile {
            Profile::Generic => Ok(Some(proto::member_ids(&group).into_iter().collect())),
            Profile::AwsIdentityCenter => self.members_listed(id).await.map(Some),
        }
    }

    /// The users whose `groups` hold group `id` (`GET /Users?filter=groups.value eq "{id}"`,
    /// every page): how an app that never returns `members` tells a group's members.
    async fn members_listed(&self, id: &ScimId) -> Result<BTreeSet<ScimId>, Error> {
        let mut members = BTreeSet::new();
        let filter = proto::eq_filter("groups.value", id.as_str());
        self.list_each("/Users", Some(&filter), |user| {
            if let Some(id) = proto::text_at(&user, "id") {
                members.insert(ScimId::new(id));
            }
        })
        .await?;
        Ok(members)
    }

    /// Groups whose `displayName` equals `display_name` (ignoring case), all pages.
    /// `excludedAttributes` is not used: adoption needs `members`.
    pub async fn find_groups(&self, display_name: &str) -> Result<Vec<Value>, Error> {
        let found = self
            .list_filtered("/Groups", &proto::eq_filter("displayName", display_name))
            .await?;
        Ok(keep_matching(found, "displayName", display_name))
    }

    /// Every group in the app (all pages).
    pub async fn list_groups(&self) -> Result<Vec<Value>, Error> {
        self.list("/Groups", None).await
    }

    /// Makes sure the group exists: looks it up by `displayName` and adopts it, or creates it
    /// with `displayName` and `externalId` and no members (add them with
    /// [`ScimClient::add_members`]). Same create protocol as [`ScimClient::ensure_user`].
    pub async fn ensure_group(
        &self,
        display_name: &str,
        external_id: &str,
    ) -> Result<EnsuredGroup, Error> {
        let lookup = Lookup::Group {
            display_name,
            external_id,
        };
        if let Some(found) = self.lookup(&lookup).await? {
            return self.adopt_group(&found).await;
        }
        let req = Req::new(Method::POST, "/Groups".to_owned())
            .body(proto::group_resource(display_name, external_id));
        match self.create(&req, &lookup).await? {
            Created::New(id, _) => Ok(EnsuredGroup {
                id,
                adopted: false,
                members: Vec::new(),
            }),
            Created::Found(found) => self.adopt_group(&found).await,
        }
    }

    /// PATCH `replace displayName`.
    pub async fn rename_group(&self, id: &ScimId, display_name: &str) -> Result<(), Error> {
        let op = json!({"op": "replace", "path": "displayName", "value": display_name});
        self.patch(resource_path("Groups", id), vec![op]).await
    }

    /// One PATCH `add members [{value}…]`. The caller batches (≤ 100 per call). Nothing is
    /// sent for an empty list.
    pub async fn add_members(&self, id: &ScimId, members: &[ScimId]) -> Result<(), Error> {
        if members.is_empty() {
            return Ok(());
        }
        let op = json!({"op": "add", "path": "members", "value": proto::member_values(members)});
        self.patch(resource_path("Groups", id), vec![op]).await
    }

    /// Removes `members` from the group in the current [`RemovalForm`].
    ///
    /// If the app rejects the filter form (400 `invalidPath`, `invalidFilter`,
    /// `invalidSyntax`, `invalidValue`, or a 400/501 without `scimType`), the same removal
    /// is sent in the value-list form; when that succeeds the client switches to
    /// [`RemovalForm::ValueList`] (read it back with [`ScimClient::removal_form`] to persist
    /// it). A 400 `noTarget` means the member is already gone: success (a batch is then
    /// retried one member at a time).
    pub async fn remove_members(&self, id: &ScimId, members: &[ScimId]) -> Result<(), Error> {
        if members.is_empty() {
            return Ok(());
        }
        let form = self.removal_form();
        match self.remove_in_form(id, members, form).await {
            Err(e) if form == RemovalForm::Filter && rejects_filter_form(&e) => {
                warn!(
                    app = %self.inner.app,
                    error = %e,
                    "app rejected member removal by value filter; trying the value-list form"
                );
                self.remove_in_form(id, members, RemovalForm::ValueList)
                    .await?;
                self.set_removal_form(RemovalForm::ValueList);
                Ok(())
            }
            other => other,
        }
    }

    /// `DELETE /Groups/{id}`; a 404 means already gone and succeeds.
    pub async fn delete_group(&self, id: &ScimId) -> Result<(), Error> {
        self.delete(resource_path("Groups", id)).await
    }

    /// `GET /ServiceProviderConfig`.
    pub async fn service_provider_config(&self) -> Result<Value, Error> {
        let req = Req::new(Method::GET, "/ServiceProviderConfig".to_owned());
        let resp = self.send(&req, Retry::All).await?;
        self.json_body(&req, &resp)
    }

    // ---------------------------------------------------------------- protocol helpers

    pub(super) async fn get_resource(&self, path: String) -> Result<Option<Value>, Error> {
        let req = Req::new(Method::GET, path);
        match self.send(&req, Retry::All).await {
            Ok(resp) => self.json_body(&req, &resp).map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn patch(&self, path: String, ops: Vec<Value>) -> Result<(), Error> {
        let req = Req::new(Method::PATCH, path).body(proto::patch_body(ops));
        self.send(&req, Retry::All).await.map(|_| ())
    }

    async fn delete(&self, path: String) -> Result<(), Error> {
        let req = Req::new(Method::DELETE, path);
        match self.send(&req, Retry::All).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The resources of a filtered listing, or of the whole collection when the app cannot
    /// filter; callers match the result locally either way.
    ///
    /// `filter` is optional in SCIM (RFC 7643 §5 `filter.supported`; RFC 7644 §3.12: an
    /// operation the provider does not implement answers `501`). A `501` is remembered for
    /// the client's lifetime, so later lookups list directly. A `400 invalidFilter` ("the
    /// attribute and filter comparison combination is not supported", RFC 7644 §3.12) only
    /// concerns this filter: this call lists the collection, the next one tries filters again.
    async fn list_filtered(&self, path: &str, filter: &str) -> Result<Vec<Value>, Error> {
        if self.filters_supported() {
            match self.list(path, Some(filter)).await {
                Err(e) if e.status() == Some(501) => {
                    self.inner.no_filter.store(true, Ordering::Relaxed);
                    warn!(app = %self.inner.app, path, error = %e,
                        "app does not implement filtering; looking resources up by listing them");
                }
                Err(e)
                    if e.status() == Some(400)
                        && e.scim_type()
                            .is_some_and(|t| t.eq_ignore_ascii_case("invalidFilter")) =>
                {
                    warn!(app = %self.inner.app, path, filter, error = %e,
                        "app cannot evaluate this filter; looking the resource up by listing");
                }
                other => return other,
            }
        }
        self.list(path, None).await
    }

    /// Every resource of a listing, following `startIndex`/`count` paging.
    ///
    /// Advances by the number of resources received; stops when `totalResults` is reached,
    /// on an empty page (or one without `Resources`), on a short page when `totalResults` is
    /// missing, and on a page that brings no new id (an app ignoring `startIndex`).
    async fn list(&self, path: &str, filter: Option<&str>) -> Result<Vec<Value>, Error> {
        let mut out = Vec::new();
        self.list_each(path, filter, |r| out.push(r)).await?;
        Ok(out)
    }

    /// Every user in the app, handed to `each` page by page (no page is kept after it):
    /// for reading many users without holding them all as JSON.
    pub async fn each_user(&self, each: impl FnMut(Value)) -> Result<(), Error> {
        self.list_each("/Users", None, each).await
    }

    /// [`ScimClient::each_user`] that stops once it has sent `max_pages` requests, for an
    /// app whose listing cannot be sized beforehand ([`ScimClient::user_listing_cost`] is
    /// `None` for a listing paged by cursor); whether every user was listed.
    pub async fn each_user_within(
        &self,
        max_pages: u32,
        each: impl FnMut(Value),
    ) -> Result<bool, Error> {
        self.list_within("/Users", None, max_pages, each).await
    }

    /// [`ScimClient::list`], each resource handed to `each` as its page arrives.
    async fn list_each(
        &self,
        path: &str,
        filter: Option<&str>,
        each: impl FnMut(Value),
    ) -> Result<(), Error> {
        if !self.list_within(path, filter, MAX_PAGES, each).await? {
            warn!(app = %self.inner.app, path, "listing stopped after {MAX_PAGES} pages");
        }
        Ok(())
    }

    /// [`ScimClient::list_each`] that stops once it has sent `max_pages` requests; whether
    /// the listing was complete.
    async fn list_within(
        &self,
        path: &str,
        filter: Option<&str>,
        max_pages: u32,
        mut each: impl FnMut(Value),
    ) -> Result<bool, Error> {
        let filter = filter.map(|f| format!("filter={}&", utf8_percent_encode(f, STRICT)));
        if self.inner.profile == Profile::AwsIdentityCenter {
            let filter = filter.as_deref().unwrap_or_default();
            return self
                .list_each_by_cursor(path, filter, max_pages, each)
                .await;
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut start: u64 = 1;
        let page_size = self.page_size();
        for _ in 0..max_pages {
            let query = format!(
                "{}startIndex={start}&count={page_size}",
                filter.as_deref().unwrap_or_default()
            );
            let req = Req::new(Method::GET, path.to_owned()).query(query);
            let resp = self.send(&req, Retry::All).await?;
            let page = proto::ListPage::from_value(&self.json_body(&req, &resp)?);
            let received = page.resources.len() as u64;
            if received == 0 {
                return Ok(true);
            }
            let mut new = 0usize;
            for resource in page.resources {
                let fresh = match resource.get("id") {
                    Some(Value::String(id)) => seen.insert(id.clone()),
                    Some(id @ Value::Number(_)) => seen.insert(id.to_string()),
                    _ => true,
                };
                if fresh {
                    each(resource);
                    new += 1;
                }
            }
            if new == 0 {
                warn!(app = %self.inner.app, path, start, "app repeated a page (it ignores startIndex); stopping the listing");
                return Ok(true);
            }
            let done = match page.total_results {
                Some(total) => start - 1 + received >= total,
                None => received < page_size,
            };
            if done {
                return Ok(true);
            }
            start += received;
        }
        Ok(false)
    }

    /// A listing paged with `cursor` / `nextCursor` (AWS IAM Identity Center, which ignores
    /// `startIndex` and, without a cursor, answers one page whose `totalResults` is the number
    /// returned). The first request sends an empty `cursor`, which asks for the paginated
    /// format; the listing ends on a page without `nextCursor`, or with the one it was sent.
    async fn list_each_by_cursor(
        &self,
        path: &str,
        filter: &str,
        max_pages: u32,
        mut each: impl FnMut(Value),
    ) -> Result<bool, Error> {
        let mut cursor = String::new();
        let page_size = self.page_size();
        for _ in 0..max_pages {
            let query = format!(
                "{filter}count={page_size}&cursor={}",
                utf8_percent_encode(&cursor, STRICT)
            );
            let req = Req::new(Method::GET, path.to_owned()).query(query);
            let resp = self.send(&req, Retry::All).await?;
            let page = proto::ListPage::from_value(&self.json_body(&req, &resp)?);
            page.resources.into_iter().for_each(&mut each);
            match page.next_cursor {
                Some(next) if !next.is_empty() && next != cursor => cursor = next,
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    /// The one resource a create would duplicate, if it exists.
    async fn lookup(&self, lookup: &Lookup<'_>) -> Result<Option<Value>, Error> {
        match *lookup {
            Lookup::User {
                matching,
                value,
                external_id,
            } => {
                let found = self.find_users(matching, value).await?;
                let filter = proto::eq_filter(matching, value);
                self.pick_one(found, external_id, "users", filter)
            }
            Lookup::Group {
                display_name,
                external_id,
            } => {
                let found = self.find_groups(display_name).await?;
                let filter = proto::eq_filter("displayName", display_name);
                self.pick_one(found, Some(external_id), "groups", filter)
            }
        }
    }

    /// The single match, or the single one carrying our `externalId` among several.
    fn pick_one(
        &self,
        mut found: Vec<Value>,
        external_id: Option<&str>,
        kind: &'static str,
        filter: String,
    ) -> Result<Option<Value>, Error> {
        if found.len() <= 1 {
            return Ok(found.pop());
        }
        let count = found.len();
        if let Some(ext) = external_id {
            let mut ours: Vec<Value> = found
                .into_iter()
                .filter(|r| proto::text_at(r, "externalId").as_deref() == Some(ext))
                .collect();
            if ours.len() == 1 {
                return Ok(ours.pop());
            }
        }
        Err(Error::Ambiguous {
            app: self.inner.app.clone(),
            kind,
            filter,
            count,
        })
    }

    fn found_id(&self, found: &Value, path: &str) -> Result<ScimId, Error> {
        match found.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(ScimId::new(id.clone())),
            Some(Value::Number(n)) => Ok(ScimId::new(n.to_string())),
            _ => Err(Error::InvalidResponse {
                app: self.inner.app.clone(),
                method: "GET".to_owned(),
                path: path.to_owned(),
                status: 200,
                reason: "a matching resource has no id".to_owned(),
            }),
        }
    }

    fn adopt_user(&self, found: &Value, attrs: &Attrs) -> Result<Ensured, Error> {
        Ok(Ensured {
            id: self.found_id(found, "/Users")?,
            adopted: true,
            current: proto::flatten_user(found, attrs.keys().cloned()),
            echoed: None,
        })
    }

    /// The found group, with the members it holds (read through the users for an app whose
    /// groups never list `members`), so that adoption after a lost store sends only what differs.
    async fn adopt_group(&self, found: &Value) -> Result<EnsuredGroup, Error> {
        let id = self.found_id(found, "/Groups")?;
        let members = match self.inner.profile {
            Profile::Generic => proto::member_ids(found),
            Profile::AwsIdentityCenter => self.members_listed(&id).await?.into_iter().collect(),
        };
        Ok(EnsuredGroup {
            id,
            adopted: true,
            members,
        })
    }

    /// The create protocol: POST; 409 → lookup → adopt (or the 409); 5xx, timeout or
    /// connection error → lookup → adopt, or back off and POST again, bounded by
    /// `max_attempts`. 429 is retried inside `send` (the app did not process it).
    async fn create(&self, req: &Req, lookup: &Lookup<'_>) -> Result<Created, Error> {
        let attempts = self.inner.retry.max_attempts;
        let mut attempt = 0;
        loop {
            let err = match self.send(req, Retry::RateLimitOnly).await {
                Ok(resp) => {
                    let answer: Option<Value> = serde_json::from_slice(&resp.body).ok();
                    let id = self.created_id(req, &resp, answer.as_ref())?;
                    return Ok(Created::New(id, answer));
                }
                Err(e) => e,
            };
            if err.status() == Some(409) {
                debug!(app = %self.inner.app, path = %req.path, error = %err, "create conflicted; looking up to adopt");
                return match self.lookup(lookup).await? {
                    Some(found) => Ok(Created::Found(found)),
                    None => Err(err),
                };
            }
            let unknown_outcome = err.is_transient() && err.status() != Some(429);
            if !unknown_outcome {
                return Err(err);
            }
            warn!(app = %self.inner.app, method = "POST", path = %req.path, attempt, error = %err,
                "create may or may not have been processed; looking up before trying again");
            if let Some(found) = self.lookup(lookup).await? {
                return Ok(Created::Found(found));
            }
            attempt += 1;
            if attempt >= attempts {
                return Err(err);
            }
            tokio::time::sleep(self.backoff(attempt - 1)).await;
        }
    }

    fn created_id(&self, req: &Req, resp: &Resp, body: Option<&Value>) -> Result<ScimId, Error> {
        let from_body = body.and_then(|b| match b.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        let from_location = || {
            resp.location.as_deref().and_then(|l| {
                l.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
        };
        match from_body.or_else(from_location) {
            Some(id) => Ok(ScimId::new(id)),
            None => Err(self.invalid(req, resp.status, "the created resource has no id")),
        }
    }

    async fn remove_in_form(
        &self,
        id: &ScimId,
        members: &[ScimId],
        form: RemovalForm,
    ) -> Result<(), Error> {
        match self.remove_batch(id, members, form).await {
            Err(e) if is_no_target(&e) => {
                if members.len() > 1 {
                    for member in members {
                        match self
                            .remove_batch(id, std::slice::from_ref(member), form)
                            .await
                        {
                            Err(e) if !is_no_target(&e) => return Err(e),
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
            other => other,
        }
    }

    async fn remove_batch(
        &self,
        id: &ScimId,
        members: &[ScimId],
        form: RemovalForm,
    ) -> Result<(), Error> {
        let ops = match form {
            RemovalForm::Filter => members
                .iter()
                .map(|m| json!({"op": "remove", "path": proto::member_filter_path(m)}))
                .collect(),
            RemovalForm::ValueList => vec![json!({
                "op": "remove",
                "path": "members",
                "value": proto::member_values(members),
            })],
        };
        self.patch(resource_path("Groups", id), ops).await
    }

    // ---------------------------------------------------------------- HTTP

    /// Sends `req` with bounded retries; returns the 2xx response or the last error.
    async fn send(&self, req: &Req, retry: Retry) -> Result<Resp, Error> {
        // Serialized once; each attempt sends the same bytes without copying them.
        let body = match &req.body {
            Some(b) => Some(Bytes::from(serde_json::to_vec(b).map_err(|e| {
                Error::InvalidInput {
                    app: self.inner.app.clone(),
                    reason: format!("cannot serialize the request body: {e}"),
                }
            })?)),
            None => None,
        };
        let policy = &self.inner.retry;
        let mut last = None;
        for attempt in 0..policy.max_attempts {
            let (err, wait) = match self.attempt(req, body.as_ref(), attempt).await {
                Ok(resp) if (200..300).contains(&resp.status) => return Ok(resp),
                Ok(resp) if resp.status == 429 => {
                    let err = self.status_error(req, &resp);
                    match resp.retry_after.as_deref().and_then(parse_retry_after) {
                        Some(wait) if wait > policy.max_retry_after => {
                            return Err(Error::RetryAfterTooLong {
                                app: self.inner.app.clone(),
                                method: req.method.to_string(),
                                path: req.path.clone(),
                                retry_after: wait,
                                limit: policy.max_retry_after,
                            });
                        }
                        Some(wait) => (err, wait),
                        None => (err, self.backoff(attempt)),
                    }
                }
                Ok(resp) => {
                    let err = self.status_error(req, &resp);
                    if retry == Retry::All && retryable_status(resp.status) {
                        (err, self.backoff(attempt))
                    } else {
                        return Err(err);
                    }
                }
                Err(err) if retry == Retry::All && err.is_transient() => {
                    (err, self.backoff(attempt))
                }
                Err(err) => return Err(err),
            };
            if attempt + 1 < policy.max_attempts {
                warn!(
                    app = %self.inner.app,
                    method = %req.method,
                    path = %req.path,
                    status = err.status(),
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    error = %err,
                    "retrying SCIM request"
                );
                tokio::time::sleep(wait).await;
            }
            last = Some(err);
        }
        Err(last.unwrap_or_else(|| Error::InvalidInput {
            app: self.inner.app.clone(),
            reason: "no attempt was made (max_attempts is zero)".to_owned(),
        }))
    }

    /// One HTTP attempt, holding a concurrency permit. Any status is `Ok`; transport
    /// failures are classified errors.
    async fn attempt(&self, req: &Req, body: Option<&Bytes>, attempt: u32) -> Result<Resp, Error> {
        let mut url = format!("{}{}", self.inner.base, req.path);
        if let Some(q) = &req.query {
            url.push('?');
            url.push_str(q);
        }
        let mut builder = self.inner.http.request(req.method.clone(), url);
        if let Some(body) = body {
            builder = builder.header(CONTENT_TYPE, SCIM_JSON).body(body.clone());
        }
        // A closed semaphore (never closed here) would just mean no limit.
        let _permit = self.inner.permits.acquire().await.ok();
        self.inner.sent.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let resp = builder.send().await.map_err(Failed::Transport)?;
            let status = resp.status().as_u16();
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            let location = header(LOCATION);
            let retry_after = header(RETRY_AFTER);
            let body = read_body(resp, self.inner.max_response)
                .await
                .map_err(|e| match e {
                    BodyError::Read(e) => Failed::Transport(e),
                    BodyError::TooLarge(body) => Failed::TooLarge(status, body),
                })?;
            Ok::<_, Failed>(Resp {
                status,
                body,
                location,
                retry_after,
            })
        }
        .await;
        crate::metrics::scim_request(
            &self.inner.app,
            req.method.as_str(),
            match &result {
                Ok(r) => r.status,
                Err(Failed::TooLarge(status, _)) => *status,
                Err(Failed::Transport(_)) => 0,
            },
        );
        match result {
            Ok(resp) => {
                debug!(
                    app = %self.inner.app,
                    method = %req.method,
                    path = %req.path,
                    status = resp.status,
                    attempt,
                    "SCIM request"
                );
                Ok(resp)
            }
            Err(failed) => {
                let err = match failed {
                    Failed::Transport(e) => self.transport_error(req, e),
                    Failed::TooLarge(status, body) => Error::TooLarge {
                        app: self.inner.app.clone(),
                        method: req.method.to_string(),
                        path: req.path.clone(),
                        status,
                        body,
                    },
                };
                debug!(
                    app = %self.inner.app,
                    method = %req.method,
                    path = %req.path,
                    attempt,
                    error = %err,
                    "SCIM request failed"
                );
                Err(err)
            }
        }
    }

    /// Full-jitter exponential backoff: uniform in `[0, min(max, base · 2^attempt)]`.
    fn backoff(&self, attempt: u32) -> Duration {
        self.inner.retry.backoff(attempt)
    }

    fn status_error(&self, req: &Req, resp: &Resp) -> Error {
        let (scim_type, detail) = proto::parse_error_body(&resp.body);
        Error::Status {
            app: self.inner.app.clone(),
            method: req.method.to_string(),
            path: req.path.clone(),
            status: resp.status,
            scim_type: scim_type.map(|s| self.redact(s)),
            detail: detail.map(|d| self.redact(d)),
        }
    }

    /// Removes the token from text the app sent back (some apps echo request headers).
    fn redact(&self, text: String) -> String {
        if text.contains(&self.inner.token) {
            text.replace(&self.inner.token, "[redacted]")
        } else {
            text
        }
    }

    fn transport_error(&self, req: &Req, e: reqwest::Error) -> Error {
        let source = e.without_url();
        let app = self.inner.app.clone();
        let method = req.method.to_string();
        let path = req.path.clone();
        if source.is_timeout() {
            return Error::Timeout {
                app,
                method,
                path,
                after: self.inner.timeout,
                source,
            };
        }
        let cause = self.redact(innermost_cause(&source));
        if source.is_connect() {
            Error::Connect {
                app,
                method,
                path,
                cause,
                source,
            }
        } else {
            Error::Transport {
                app,
                method,
                path,
                cause,
                source,
            }
        }
    }

    fn json_body(&self, req: &Req, resp: &Resp) -> Result<Value, Error> {
        if resp.body.iter().all(u8::is_ascii_whitespace) {
            return Err(self.invalid(req, resp.status, "the body is empty"));
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| self.invalid(req, resp.status, &format!("the body is not JSON: {e}")))
    }

    fn invalid(&self, req: &Req, status: u16, reason: &str) -> Error {
        Error::InvalidResponse {
            app: self.inner.app.clone(),
            method: req.method.to_string(),
            path: req.path.clone(),
            status,
            reason: reason.to_owned(),
        }
    }
}

/// `/{collection}/{id}` with the id escaped as one path segment.
/// What the app kept of the `paths` it was sent: its answer flattened over them, when the
/// answer is a representation of the user (it carries `userName`; a minimal answer says
/// nothing about the rest).
fn echo<'a>(answer: &Value, paths: impl Iterator<Item = &'a AttrKey>) -> Option<Attrs> {
    proto::text_at(answer, "userName")?;
    Some(proto::flatten_user(answer, paths.cloned()))
}

fn resource_path(collection: &str, id: &ScimId) -> String {
    format!("/{collection}/{}", utf8_percent_encode(id.as_str(), STRICT))
}

/// Keeps the resources whose `attr` really equals `value`.
/// The app's users, listed once and indexed by the matching attribute (folded to lower case
/// where SCIM compares it so), so that many creates need no lookup each.
pub struct UserIndex {
    matching: String,
    by_value: HashMap<String, Vec<Value>>,
    /// Whether every user was listed: only then is a user missing from it known not to
    /// exist.
    complete: bool,
}

impl UserIndex {
    /// The listed users whose matching attribute is `value`.
    fn find(&self, value: &str) -> Vec<Value> {
        let key = if proto::case_insensitive(&self.matching) {
            value.to_lowercase()
        } else {
            value.to_owned()
        };
        self.by_value.get(&key).cloned().unwrap_or_default()
    }

    /// Whether every user of the app was listed.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// How many users were listed.
    pub fn len(&self) -> usize {
        self.by_value.values().map(Vec::len).sum()
    }

    /// Whether the app had no user with the matching attribute.
    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }
}

fn keep_matching(found: Vec<Value>, attr: &str, value: &str) -> Vec<Value> {
    let fold = proto::case_insensitive(attr);
    let wanted = if fold {
        value.to_lowercase()
    } else {
        value.to_owned()
    };
    found
        .into_iter()
        .filter(|r| {
            proto::text_at(r, attr).is_some_and(|v| {
                if fold {
                    v.to_lowercase() == wanted
                } else {
                    v == wanted
                }
            })
        })
        .collect()
}

fn is_no_target(e: &Error) -> bool {
    e.status() == Some(400)
        && e.scim_type()
            .is_some_and(|t| t.eq_ignore_ascii_case("noTarget"))
}

/// Whether an error to a filter-form removal means "this app does not take value filters".
fn rejects_filter_form(e: &Error) -> bool {
    match (e.status(), e.scim_type()) {
        (Some(400), Some(t)) => [
            "invalidPath",
            "invalidFilter",
            "invalidSyntax",
            "invalidValue",
        ]
        .iter()
        .any(|k| t.eq_ignore_ascii_case(k)),
        (Some(400 | 501), None) => true,
        _ => false,
    }
}

/// The deepest source's message, e.g. `Connection refused (os error 111)`.
fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine spawns these calls: their futures must be `Send` (checked at compile time).
    #[test]
    fn futures_are_send_and_client_is_shareable() {
        fn send<T: Send>(_: T) {}
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<ScimClient>();
        fn error_is_std<T: std::error::Error + Send + Sync + 'static>() {}
        error_is_std::<Error>();
        let made = ScimClient::new(ClientOptions {
            app: AppName::new("a"),
            base_url: "http://127.0.0.1:9/scim".into(),
            token: "t".into(),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            retry: RetryPolicy::default(),
            max_response: crate::http::DEFAULT_MAX_RESPONSE,
            profile: Profile::Generic,
        });
        let Ok(c) = made else {
            return assert!(made.is_ok());
        };
        let (a, id) = (Attrs::new(), ScimId::new("x"));
        send(c.ensure_user("userName", &a));
        send(c.ensure_group("g", "e"));
        send(c.patch_user(&id, &a, &[]));
        send(c.remove_members(&id, &[]));
        send(c.add_members(&id, &[]));
        send(c.find_users("userName", "x"));
        send(c.list_groups());
        send(c.delete_user(&id));
        send(c.service_provider_config());
    }

    #[test]
    fn options_are_validated() {
        let opts = |base: &str, token: &str| ClientOptions {
            app: AppName::new("crm"),
            base_url: base.into(),
            token: token.into(),
            timeout: Duration::from_secs(1),
            concurrency: 0,
            retry: RetryPolicy::default(),
            max_response: crate::http::DEFAULT_MAX_RESPONSE,
            profile: Profile::Generic,
        };
        let msg = |o| ScimClient::new(o).err().map(|e| e.to_string());
        assert_eq!(
            msg(opts("crm.example.com/scim", "t")),
            Some(
                "app crm: invalid SCIM client settings: base_url \"crm.example.com/scim\" is not a URL: relative URL without a base"
                    .into()
            )
        );
        assert!(msg(opts("ftp://x/scim", "t")).is_some());
        assert!(msg(opts("https://x/scim", " ")).is_some());
        let bad_token = msg(opts("https://x/scim", "a\nb")).unwrap_or_default();
        assert!(bad_token.contains("not allowed in an HTTP header") && !bad_token.contains("a\nb"));
        assert!(msg(opts("https://x/scim/", "t")).is_none());
    }

    #[test]
    fn resource_path_escapes_the_id() {
        assert_eq!(
            resource_path("Users", &ScimId::new("a/b c")),
            "/Users/a%2Fb%20c"
        );
    }

    #[test]
    fn filter_form_rejections() {
        let err = |status, t: Option<&str>| Error::Status {
            app: AppName::new("a"),
            method: "PATCH".into(),
            path: "/Groups/g".into(),
            status,
            scim_type: t.map(str::to_owned),
            detail: None,
        };
        assert!(rejects_filter_form(&err(400, Some("invalidPath"))));
        assert!(rejects_filter_form(&err(400, Some("invalidfilter"))));
        assert!(rejects_filter_form(&err(400, None)));
        assert!(rejects_filter_form(&err(501, None)));
        assert!(!rejects_filter_form(&err(400, Some("noTarget"))));
        assert!(!rejects_filter_form(&err(403, None)));
        assert!(is_no_target(&err(400, Some("noTarget"))));
    }
}
