//! Helpers shared by the integration tests: SCIM clients pointed at wiremock servers,
//! SCIM-shaped responses, and matchers for what every SCIM request must carry.

#![allow(dead_code)]

pub mod service;

use std::sync::Mutex;
use std::time::Duration;

use scim_sync::model::AppName;
use scim_sync::scim::{ClientOptions, RetryPolicy, ScimClient};
use serde_json::{Value, json};
use wiremock::matchers::{bearer_token, method, path};
use wiremock::{Match, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

/// The SCIM media type.
pub const SCIM: &str = "application/scim+json";
/// The bearer token the test clients send; it must never show up in errors or logs.
pub const TOKEN: &str = "tok-S3CR3T-do-not-leak";
/// Where the mock SCIM app lives on the mock server.
pub const BASE: &str = "/scim/v2";

/// A retry policy that keeps tests fast: 4 attempts, 1 ms backoff.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        max_retry_after: Duration::from_secs(5),
    }
}

/// Options for app `crm` on `server` (base URL with a trailing slash, which must not matter).
pub fn options(server: &MockServer) -> ClientOptions {
    ClientOptions {
        app: AppName::new("crm"),
        base_url: format!("{}{BASE}/", server.uri()),
        token: TOKEN.to_owned(),
        timeout: Duration::from_secs(5),
        concurrency: 4,
        retry: fast_retry(),
        max_response: scim_sync::http::DEFAULT_MAX_RESPONSE,
        profile: scim_sync::model::Profile::Generic,
    }
}

/// A client for `server` with [`options`].
pub fn client(server: &MockServer) -> ScimClient {
    client_with(server, |_| {})
}

/// A client for `server` with [`options`] adjusted by `adjust`.
pub fn client_with(server: &MockServer, adjust: impl FnOnce(&mut ClientOptions)) -> ScimClient {
    let mut opts = options(server);
    adjust(&mut opts);
    match ScimClient::new(opts) {
        Ok(c) => c,
        Err(e) => panic!("client: {e}"),
    }
}

/// `{BASE}{rest}`: the full request path of a SCIM endpoint.
pub fn p(rest: &str) -> String {
    format!("{BASE}{rest}")
}

/// A mock for `verb` on `{BASE}{rest}` that also checks the SCIM headers and the token.
pub fn given(verb: &str, rest: &str) -> MockBuilder {
    wiremock::Mock::given(method(verb))
        .and(path(p(rest)))
        .and(bearer_token(TOKEN))
        .and(ScimHeaders)
}

/// A response with a SCIM JSON body.
pub fn scim(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), SCIM)
}

/// A SCIM error response; `status_field` is what the body says (`"400"` or `400`).
pub fn scim_error(
    status: u16,
    status_field: Value,
    scim_type: Option<&str>,
    detail: &str,
) -> ResponseTemplate {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status_field,
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    scim(status, body)
}

/// A ListResponse page.
pub fn list_page(total: u64, start: u64, resources: Vec<Value>) -> ResponseTemplate {
    scim(
        200,
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

/// An empty ListResponse, the way many apps send it: no `Resources` at all.
pub fn empty_list() -> ResponseTemplate {
    scim(
        200,
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 0,
        }),
    )
}

/// Matches what every SCIM request must carry: `Accept` naming `application/scim+json`, a
/// `scim-sync/` User-Agent, and on a request with a body exactly one `Content-Type`,
/// `application/scim+json`.
pub struct ScimHeaders;

impl Match for ScimHeaders {
    fn matches(&self, r: &Request) -> bool {
        let accept_ok = r
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(SCIM));
        let ua_ok = r
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("scim-sync/"));
        let types: Vec<_> = r.headers.get_all("content-type").iter().collect();
        let ct_ok = if r.body.is_empty() {
            types.is_empty()
        } else {
            types.len() == 1 && types[0] == SCIM
        };
        accept_ok && ua_ok && ct_ok
    }
}

/// Matches the raw (still encoded) query string exactly.
pub struct RawQuery(pub String);

impl Match for RawQuery {
    fn matches(&self, r: &Request) -> bool {
        r.url.query() == Some(self.0.as_str())
    }
}

/// Answers with each template in turn, repeating the last one.
pub struct Sequence(Mutex<Vec<ResponseTemplate>>);

impl Sequence {
    /// The responder.
    pub fn new(templates: Vec<ResponseTemplate>) -> Self {
        let mut t = templates;
        t.reverse();
        Sequence(Mutex::new(t))
    }
}

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut stack = match self.0.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if stack.len() > 1 {
            stack.pop().unwrap_or_else(|| ResponseTemplate::new(500))
        } else {
            stack
                .last()
                .cloned()
                .unwrap_or_else(|| ResponseTemplate::new(500))
        }
    }
}

/// The app `crm` on `server`, configured from TOML as a user would (`extra`: more keys of
/// its `[[apps]]` table), its token [`TOKEN`], assigned the group `g-crm`.
pub fn wiremock_app(server: &MockServer, extra: &str) -> scim_sync::engine::App {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"crm\"\nbase_url = \"{}{BASE}\"\ntoken_env = \"UNUSED\"\ngroups = [\"g-crm\"]\n{extra}\n",
        server.uri(),
    );
    let cfg = scim_sync::config::Config::parse(std::path::Path::new("crm.toml"), &text).unwrap();
    let token = scim_sync::config::Secret::new(TOKEN);
    scim_sync::engine::App::new(cfg.apps[0].clone(), &token).unwrap()
}

/// A directory whose group `g-crm` ("CRM") holds every one of `users` (id, source
/// attributes).
pub fn crm_directory(users: &[(&str, Value)]) -> scim_sync::model::Directory {
    use scim_sync::model::{Directory, SourceGroup, SourceUser};
    let mut dir = Directory::default();
    for (id, attrs) in users {
        dir.users.insert(
            (*id).into(),
            SourceUser {
                id: (*id).into(),
                attrs: scim_sync::model::attrs_from_json(attrs.clone()),
            },
        );
    }
    dir.groups.insert(
        "g-crm".into(),
        SourceGroup {
            id: "g-crm".into(),
            display_name: "CRM".into(),
            members: users.iter().map(|(id, _)| (*id).into()).collect(),
            eligible: vec![],
        },
    );
    dir
}
