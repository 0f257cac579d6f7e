//! The Microsoft Graph source: exact request shapes against wiremock (token form, group,
//! members, eligibility, users, nextLink paging), and behaviour against the in-process
//! Graph double (throttling, a page failing for good, shared users read once, 401 renewal,
//! AADSTS errors), end to end through the engine and through the `sync-now` binary; a page
//! larger than the response bound fails the snapshot at once.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{bearer_token, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use scim_sync::config::{AppConfig, Config, GraphConfig, Secret, SecretFrom};
use scim_sync::engine::{App, CycleOptions, Engine};
use scim_sync::model::{Directory, SourceGroup, SourceId, SourceUser};
use scim_sync::report::Reason;
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::scim::RetryPolicy;
use scim_sync::source::graph::auth::TokenSource;
use scim_sync::source::{GraphSource, Source};
use scim_sync::store::Store;
use scim_sync_testkit::graph_double::{self, DoubleState, GraphDouble};

const APP_TOKEN: &str = "graph-it-scim-token";
const MEMBERS: &str = "/members/microsoft.graph.user";

/// Short backoffs so that fault tests run in milliseconds (Retry-After is still honoured).
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(60),
    }
}

fn apps_cfg(groups: &[&str], flatten: bool, base_url: &str) -> Vec<AppConfig> {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"crm\"\nbase_url = \"{base_url}\"\ntoken_env = \"GRAPH_IT_TOKEN\"\ngroups = {groups:?}\nflatten_nested = {flatten}\n"
    );
    Config::parse(Path::new("graph-it.toml"), &text)
        .unwrap()
        .apps
}

fn user(id: &str) -> SourceUser {
    let attrs = json!({
        "userPrincipalName": format!("{id}@contoso.example"), "displayName": format!("User {id}"),
        "givenName": "User", "surname": id, "mail": format!("{id}@contoso.example"),
        "accountEnabled": true, "jobTitle": "Engineer", "department": "R&D", "employeeId": id,
    });
    SourceUser {
        id: id.into(),
        attrs: scim_sync::model::attrs_from_json(attrs),
    }
}

fn group(id: &str, members: &[&str], eligible: &[&str]) -> SourceGroup {
    SourceGroup {
        id: id.into(),
        display_name: format!("Group {id}"),
        members: members.iter().map(|m| SourceId::from(*m)).collect(),
        eligible: eligible.iter().map(|m| SourceId::from(*m)).collect(),
    }
}

/// Users u0..u9; g1 has u0..u6 (7 members), g2 u5..u9 and nested g3, g3 u0 and u1;
/// u9 is eligible for g1 and u8 for g2.
fn directory() -> Directory {
    let mut d = Directory::default();
    for i in 0..10 {
        let u = user(&format!("u{i}"));
        d.users.insert(u.id.clone(), u);
    }
    for g in [
        group("g1", &["u0", "u1", "u2", "u3", "u4", "u5", "u6"], &["u9"]),
        group("g2", &["u5", "u6", "u7", "u8", "u9", "g3"], &["u8"]),
        group("g3", &["u0", "u1"], &[]),
    ] {
        d.groups.insert(g.id.clone(), g);
    }
    d
}

async fn double_with(dir: Directory, page_size: usize) -> GraphDouble {
    let state = DoubleState::new(dir);
    state.set_page_size(page_size);
    GraphDouble::start(state).await.unwrap()
}

fn source(d: &GraphDouble, apps: &[AppConfig]) -> GraphSource {
    GraphSource::with_retry(
        &d.config("UNUSED_GRAPH_SECRET"),
        GraphDouble::secret(),
        apps,
        fast_retry(),
    )
    .unwrap()
}

fn ids(v: &[SourceId]) -> Vec<&str> {
    v.iter().map(SourceId::as_str).collect()
}

#[tokio::test(start_paused = true)]
async fn token_request_has_the_client_credentials_form_and_is_renewed_five_minutes_early() {
    let login = MockServer::start().await;
    let graph_url = "https://graph.example.test";
    Mock::given(method("POST"))
        .and(path("/tenant-x/oauth2/v2.0/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=client-x"))
        .and(body_string_contains("client_secret=s%26cr%3Dt%2Bvalue"))
        .and(body_string_contains(
            "scope=https%3A%2F%2Fgraph.example.test%2F.default",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "tok"}),
        ))
        .expect(2)
        .named("token request")
        .mount(&login)
        .await;
    let auth = TokenSource::new(
        reqwest::Client::new(),
        &login.uri(),
        graph_url,
        "tenant-x",
        "client-x",
        Secret::new("s&cr=t+value"),
    );
    assert_eq!(
        auth.token_url(),
        format!("{}/tenant-x/oauth2/v2.0/token", login.uri())
    );
    assert_eq!(auth.token().await.unwrap().expose(), "tok");
    tokio::time::advance(Duration::from_secs(3200)).await;
    auth.token().await.unwrap();
    assert_eq!(login.received_requests().await.unwrap().len(), 1, "cached");
    // 3299 s in: within five minutes of expiry, so renewed.
    tokio::time::advance(Duration::from_secs(100)).await;
    auth.token().await.unwrap();
    assert_eq!(login.received_requests().await.unwrap().len(), 2, "renewed");
    assert!(!format!("{auth:?}").contains("s&cr=t"), "{auth:?}");
}

#[tokio::test]
async fn a_throttled_token_request_is_retried_and_a_refusal_is_not() {
    let login = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/t/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .named("throttled token")
        .mount(&login)
        .await;
    Mock::given(method("POST"))
        .and(path("/t/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"token_type": "Bearer", "expires_in": "3599", "access_token": "tok"}),
        ))
        .expect(1)
        .named("token")
        .mount(&login)
        .await;
    let auth = TokenSource::new(
        reqwest::Client::new(),
        &login.uri(),
        "https://graph.microsoft.com",
        "t",
        "c",
        Secret::new("s"),
    );
    assert_eq!(auth.token().await.unwrap().expose(), "tok");

    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_request",
            "error_description": "AADSTS900023: Specified tenant identifier 'nope' is neither a valid DNS name, nor a valid external domain.\r\nTrace ID: x",
            "error_codes": [900023]
        })))
        .expect(1)
        .named("refused token")
        .mount(&refusing)
        .await;
    let auth = TokenSource::new(
        reqwest::Client::new(),
        &refusing.uri(),
        "https://graph.microsoft.com",
        "nope",
        "c",
        Secret::new("s"),
    );
    let e = auth.token().await.unwrap_err().to_string();
    assert!(
        e.contains("AADSTS900023") && e.contains("check source.tenant_id"),
        "{e}"
    );
    assert!(!e.contains("Trace ID"), "first line only: {e}");
}

#[tokio::test]
async fn exact_reads_follow_next_link_across_three_pages_and_fetch_eligible_users() {
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(method("POST"))
        .and(path("/t1/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "graph-tok"}),
        ))
        .expect(1)
        .named("token")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/g-1"))
        .and(query_param("$select", "id,displayName"))
        .and(bearer_token("graph-tok"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "g-1", "displayName": "CRM Users"})),
        )
        .expect(1)
        .named("group")
        .mount(&server)
        .await;
    let members_path = "/v1.0/groups/g-1/members/microsoft.graph.user";
    let page = |ids: &[&str], next: Option<&str>| {
        let value: Vec<Value> = ids
            .iter()
            .map(|i| json!({"@odata.type": "#microsoft.graph.user", "id": i, "userPrincipalName": format!("{i}@x.example"), "mail": null, "accountEnabled": true}))
            .collect();
        let mut body = json!({ "value": value });
        if let Some(n) = next {
            body["@odata.nextLink"] = json!(format!("{uri}{members_path}?$skiptoken={n}"));
        }
        ResponseTemplate::new(200).set_body_json(body)
    };
    Mock::given(method("GET"))
        .and(path(members_path))
        .and(query_param("$top", "999"))
        .and(query_param(
            "$select",
            "accountEnabled,department,displayName,employeeId,givenName,id,jobTitle,mail,surname,userPrincipalName",
        ))
        .and(bearer_token("graph-tok"))
        .respond_with(page(&["a", "b"], Some("X'2")))
        .expect(1)
        .named("members page 1")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(members_path))
        .and(query_param("$skiptoken", "X'2"))
        .respond_with(page(&["c", "d"], Some("X'3")))
        .expect(1)
        .with_priority(1)
        .named("members page 2")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(members_path))
        .and(query_param("$skiptoken", "X'3"))
        .respond_with(page(&["e", "a"], None))
        .expect(1)
        .with_priority(1)
        .named("members page 3")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/v1.0/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances",
        ))
        .and(query_param("$filter", "groupId eq 'g-1'"))
        .and(bearer_token("graph-tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"principalId": "f", "groupId": "g-1", "accessId": "member", "memberType": "Direct"},
            {"principalId": "a", "groupId": "g-1", "accessId": "owner", "memberType": "Direct"}
        ]})))
        .expect(1)
        .named("eligibility")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/f"))
        .and(query_param("$select", "accountEnabled,department,displayName,employeeId,givenName,id,jobTitle,mail,surname,userPrincipalName"))
        .and(bearer_token("graph-tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "f", "userPrincipalName": "f@x.example", "accountEnabled": false}),
        ))
        .expect(1)
        .named("eligible user")
        .mount(&server)
        .await;

    let cfg = GraphConfig {
        tenant_id: "t1".into(),
        client_id: "c1".into(),
        client_secret: SecretFrom::Env("UNUSED".into()),
        graph_url: uri.clone(),
        login_url: uri.clone(),
        pim_poll_interval: Duration::from_secs(30),
        watch_interval: Duration::from_secs(10),
    };
    let src = GraphSource::with_retry(
        &cfg,
        Secret::new("sec"),
        &apps_cfg(&["g-1"], false, "http://127.0.0.1:9/scim/v2"),
        fast_retry(),
    )
    .unwrap();
    assert_eq!(
        src.describe(),
        format!("Microsoft Graph tenant t1 at {uri}")
    );
    let dir = src.snapshot().await.unwrap();
    let g = &dir.groups[&SourceId::from("g-1")];
    assert_eq!(g.display_name, "CRM Users");
    assert_eq!(
        ids(&g.members),
        ["a", "b", "c", "d", "e"],
        "pages in order, repeats once"
    );
    assert_eq!(
        ids(&g.eligible),
        ["f"],
        "owner eligibility is not membership"
    );
    assert_eq!(dir.users.len(), 6);
    let a = &dir.users[&SourceId::from("a")];
    assert!(!a.attrs.contains_key("id") && !a.attrs.contains_key("@odata.type"));
    assert!(!a.attrs.contains_key("mail"), "nulls dropped");
    assert_eq!(
        dir.users[&SourceId::from("f")].attrs["accountEnabled"],
        false
    );
    assert_eq!(src.requests(), 6);
}

#[tokio::test]
async fn a_429_mid_read_is_waited_for_retry_after_and_retried() {
    let d = double_with(directory(), 2).await;
    let p = format!("/v1.0/groups/g1{MEMBERS}");
    d.state().throttle(&p, 3, 1, 1);
    let src = source(&d, &apps_cfg(&["g1"], false, "http://127.0.0.1:9/scim/v2"));
    let t = Instant::now();
    let dir = src.snapshot().await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "Retry-After waited");
    assert_eq!(
        ids(&dir.groups[&SourceId::from("g1")].members),
        ["u0", "u1", "u2", "u3", "u4", "u5", "u6"]
    );
    assert_eq!(d.state().path_requests(&p), 5, "4 pages + 1 retry");
}

#[tokio::test]
async fn a_page_failing_for_good_fails_the_snapshot_naming_path_status_and_code() {
    let d = double_with(directory(), 2).await;
    let p = format!("/v1.0/groups/g1{MEMBERS}");
    d.state().fail_always(&p, 2, 503);
    let src = source(&d, &apps_cfg(&["g1"], false, "http://127.0.0.1:9/scim/v2"));
    let e = src.snapshot().await.unwrap_err().to_string();
    assert!(e.contains(&p), "{e}");
    assert!(e.contains("members of group g1 (page 2)"), "{e}");
    assert!(e.contains("HTTP 503 UnknownError: injected fault"), "{e}");
    assert!(!e.contains("double-access-token"), "{e}");
    assert_eq!(
        d.state().path_requests(&p),
        4,
        "page 1 once, page 2 three attempts"
    );
}

/// A page over the response bound (32 MiB in production, 64 KiB here) is refused once, not
/// retried and not buffered whole, and fails the whole snapshot (never a partial one), naming
/// what was read, the path and the limit.
#[tokio::test]
async fn a_page_larger_than_the_bound_fails_the_snapshot_at_once() {
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(method("POST"))
        .and(path("/t1/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "graph-tok"}),
        ))
        .expect(1)
        .named("token")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/g-1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "g-1", "displayName": "CRM"})),
        )
        .expect(1)
        .named("group")
        .mount(&server)
        .await;
    let members_path = "/v1.0/groups/g-1/members/microsoft.graph.user";
    Mock::given(method("GET"))
        .and(path(members_path))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"id": "a", "userPrincipalName": "a@x.example"}],
            "@odata.nextLink": format!("{uri}{members_path}?$skiptoken=2"),
        })))
        .expect(1)
        .named("members page 1")
        .mount(&server)
        .await;
    let big: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("u{i}"), "userPrincipalName": format!("u{i}@x.example"), "displayName": "x".repeat(1000)}))
        .collect();
    Mock::given(method("GET"))
        .and(path(members_path))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "value": big })))
        .expect(1)
        .with_priority(1)
        .named("members page 2: about 230 KB, once")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/v1.0/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(0..=1)
        .named("eligibility (read alongside, or not at all)")
        .mount(&server)
        .await;

    let cfg = GraphConfig {
        tenant_id: "t1".into(),
        client_id: "c1".into(),
        client_secret: SecretFrom::Env("UNUSED".into()),
        graph_url: uri.clone(),
        login_url: uri.clone(),
        pim_poll_interval: Duration::from_secs(30),
        watch_interval: Duration::from_secs(10),
    };
    let apps = apps_cfg(&["g-1"], false, "http://127.0.0.1:9/scim/v2");
    let src = GraphSource::with_retry(&cfg, Secret::new("sec"), &apps, fast_retry())
        .unwrap()
        .with_max_response(64 * 1024);
    let e = src.snapshot().await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "Microsoft Graph: reading members of group g-1 (page 2): GET {members_path}: HTTP 200: response larger than 64 KiB (Content-Length: "
        )) && e.ends_with(" bytes); refused"),
        "{e}"
    );
    assert!(!e.contains("graph-tok") && !e.contains("skiptoken"), "{e}");
    let members_requests = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == members_path)
        .count();
    assert_eq!(members_requests, 2, "page 1, then page 2 once: no retry");
}

#[tokio::test]
async fn users_in_several_groups_are_read_once_and_nesting_follows_flatten_nested() {
    let d = double_with(directory(), 3).await;
    let mut apps = apps_cfg(&["g1", "g2"], false, "http://127.0.0.1:9/scim/v2");
    apps.extend(apps_cfg(&["g2"], true, "http://127.0.0.1:9/scim/v2"));
    // u8 and u9 are eligible in one group each but u9 is a member of g2: only one user is
    // read on its own, whatever the overlaps.
    d.state().update(|dir| {
        dir.groups.get_mut(&SourceId::from("g1")).unwrap().eligible =
            vec!["u9".into(), "u-x".into()];
        dir.groups.get_mut(&SourceId::from("g2")).unwrap().eligible =
            vec!["u8".into(), "u-x".into()];
        let u = user("u-x");
        dir.users.insert(u.id.clone(), u);
    });
    let src = source(&d, &apps);
    let dir = src.snapshot().await.unwrap();
    assert_eq!(
        d.state().requests("user"),
        1,
        "u-x read once for two groups"
    );
    assert_eq!(d.state().requests("group"), 2);
    assert_eq!(
        d.state().requests("transitiveMembers"),
        3,
        "g2 only, 3 pages"
    );
    assert_eq!(d.state().requests("token"), 1);
    assert_eq!(dir.users.len(), 11);
    // g2 is read both ways: direct users for the non-flattening app, transitive for the other.
    let mut flat = apps[0].clone();
    flat.flatten_nested = true;
    flat.groups = vec!["g2".into()];
    let mut direct = apps[0].clone();
    direct.groups = vec!["g2".into()];
    let members = |app: &AppConfig| {
        let d = scim_sync::mapping::desired_for_app(&dir, app, &[]).unwrap();
        d.desired.groups[&SourceId::from("g2")]
            .members
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(members(&direct), ["u5", "u6", "u7", "u8", "u9"]);
    assert_eq!(members(&flat), ["u0", "u1", "u5", "u6", "u7", "u8", "u9"]);
    assert_eq!(
        ids(&dir.groups[&SourceId::from("g1")].eligible),
        ["u9", "u-x"]
    );
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_retries() {
    let d = double_with(directory(), 100).await;
    let src = source(&d, &apps_cfg(&["g3"], false, "http://127.0.0.1:9/scim/v2"));
    src.snapshot().await.unwrap();
    d.state().revoke_tokens();
    let dir = src.snapshot().await.unwrap();
    assert_eq!(
        ids(&dir.groups[&SourceId::from("g3")].members),
        ["u0", "u1"]
    );
    assert_eq!(d.state().requests("token"), 2);
}

#[tokio::test]
async fn aadsts_errors_say_what_to_check_and_never_show_the_secret() {
    let d = double_with(directory(), 100).await;
    let apps = apps_cfg(&["g1"], false, "http://127.0.0.1:9/scim/v2");
    let wrong = "wrong-secret-Zq8";
    let src = GraphSource::new(&d.config("X"), Secret::new(wrong), &apps).unwrap();
    let e = src.snapshot().await.unwrap_err();
    let text = format!("{e} {e:?} {src:?}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(
        text.contains("client_secret_env or source.client_secret_file"),
        "{text}"
    );
    assert!(
        text.contains(&format!("tenant {}", graph_double::TENANT)),
        "{text}"
    );
    assert!(!text.contains(wrong), "{text}");

    let mut cfg = d.config("X");
    cfg.tenant_id = "other-tenant".into();
    let e = GraphSource::new(&cfg, GraphDouble::secret(), &apps)
        .unwrap()
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AADSTS90002") && e.contains("check source.tenant_id"),
        "{e}"
    );
    assert!(!e.contains(graph_double::CLIENT_SECRET), "{e}");

    let mut cfg = d.config("X");
    cfg.client_id = "other-client".into();
    let e = GraphSource::new(&cfg, GraphDouble::secret(), &apps)
        .unwrap()
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AADSTS700016") && e.contains("source.client_id"),
        "{e}"
    );
}

#[tokio::test]
async fn a_failed_graph_read_changes_nothing_in_the_app() {
    let d = double_with(directory(), 2).await;
    let sandbox = SandboxHandle::start(
        ([127, 0, 0, 1], 0).into(),
        SandboxState::with_token(APP_TOKEN),
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", tmp.path().join("s.db").display()))
        .await
        .unwrap();
    let cfgs = apps_cfg(&["g1"], false, sandbox.base_url());
    let app = App::new(cfgs[0].clone(), &Secret::new(APP_TOKEN)).unwrap();
    let engine = Engine::new(Arc::new(source(&d, &cfgs)), store);
    let opts = CycleOptions {
        reason: Reason::SyncNow,
        dry_run: false,
        progress: false,
        verify: false,
    };
    let run = engine.cycle(std::slice::from_ref(&app), opts).await;
    assert!(run.source_error.is_none());
    assert_eq!(sandbox.state().user_count(), 7);
    let before = sandbox.state().requests();

    // Page 2 of 4 now fails for good: a partial read would hold 5 fewer members.
    d.state()
        .fail_always(&format!("/v1.0/groups/g1{MEMBERS}"), 2, 500);
    let run = engine.cycle(std::slice::from_ref(&app), opts).await;
    let e = run
        .source_error
        .expect("the source error aborts the cycle")
        .to_string();
    assert!(e.contains("HTTP 500"), "{e}");
    assert_eq!(
        sandbox.state().requests(),
        before,
        "zero requests to the app"
    );
    assert!(
        sandbox.state().users().iter().all(|u| u["active"] != false),
        "nobody disabled"
    );
    assert_eq!(run.apps[0].report.requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_and_sync_now_read_graph() {
    let d = double_with(directory(), 2).await;
    d.state().set_policy(
        "g1",
        vec![
            json!({"id": "Expiration_EndUser_Assignment", "isExpirationRequired": true, "maximumDuration": "PT8H"}),
            json!({"id": "Enablement_EndUser_Assignment", "enabledRules": ["Justification", "MultiFactorAuthentication"]}),
        ],
    );
    let sandbox = SandboxHandle::start(
        ([127, 0, 0, 1], 0).into(),
        SandboxState::with_token(APP_TOKEN),
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"[service]
state = "sqlite://{state}"

[source]
kind = "graph"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_env = "GRAPH_IT_SECRET"
graph_url = "{url}"
login_url = "{url}/"

[[apps]]
name = "crm"
base_url = "{base}"
token_env = "GRAPH_IT_TOKEN"
groups = ["g1", "g2"]
"#,
        state = tmp.path().join("state.db").display(),
        tenant = graph_double::TENANT,
        client = graph_double::CLIENT_ID,
        url = d.url(),
        base = sandbox.base_url(),
    );
    let path = tmp.path().join("graph.toml");
    std::fs::write(&path, cfg).unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scim-sync"));
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("SCIM_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("GRAPH_IT_SECRET", graph_double::CLIENT_SECRET)
            .env("GRAPH_IT_TOKEN", APP_TOKEN);
        async move {
            tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap()
        }
    };
    let o = run(&["check-config"]).await;
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!(
            "source: graph tenant {} at {}",
            graph_double::TENANT,
            d.url()
        )),
        "{out}"
    );
    assert!(
        out.contains("group g1 \"Group g1\": 7 members, 1 eligible\n      PIM policy: activations last at most 8h; required: justification, MFA\n"),
        "{out}"
    );
    assert!(
        out.contains("      PIM policy: none (PIM does not govern the group)"),
        "{out}"
    );
    assert!(
        !out.contains(graph_double::CLIENT_SECRET) && !err.contains(graph_double::CLIENT_SECRET)
    );

    let o = run(&["sync-now", "--json"]).await;
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["apps"][0]["outcome"], "ok", "{out}");
    assert_eq!(v["apps"][0]["users_created"], 10, "{out}");
    assert_eq!(sandbox.state().user_count(), 10);
    assert_eq!(sandbox.state().group_count(), 2);

    // A secret that the tenant refuses: exit 2, the AADSTS code named, the secret not shown.
    let o = {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scim-sync"));
        c.arg("--config")
            .arg(&path)
            .arg("sync-now")
            .env("GRAPH_IT_SECRET", "not-the-secret-4711")
            .env("GRAPH_IT_TOKEN", APP_TOKEN);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(!err.contains("not-the-secret-4711"), "{err}");
}

/// Service mode over the Graph source: the PIM poller reads `assignmentScheduleInstances`
/// from the double, pushes a new activated instance to the app and removes it when the
/// instance disappears; the eligible user reaches the app only while activated.
#[tokio::test(flavor = "multi_thread")]
async fn the_pim_poller_reads_activations_from_graph_into_the_app_and_out_again() {
    use crate::support::service::{Sandboxed, app_toml, config, start};
    use scim_sync::drive::poller::PimPoll;
    use scim_sync::service::{Options, TickSource};

    let sb = Sandboxed::new().await;
    let cfg = config(
        sb.tmp.path(),
        &[app_toml("crm", sb.sandbox.base_url(), &["g1"], "")],
        "40m",
    );
    let d = double_with(directory(), 999).await;
    let graph = Arc::new(source(&d, &cfg.apps));
    let options = Options {
        ticks: TickSource::Tokio,
        startup_cycle: true,
        pim: Some(PimPoll {
            feed: graph.clone(),
            every: Duration::from_millis(100),
        }),
        ..Options::default()
    };
    let svc = start(&cfg, graph, crate::support::TOKEN, options).await;
    let upn = |i: u32| format!("u{i}@contoso.example");
    let standing: Vec<String> = (0..7).map(upn).collect();
    let standing: Vec<&str> = standing.iter().map(String::as_str).collect();
    sb.await_members("Group g1", &standing, Duration::from_secs(10))
        .await;

    let end = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    d.state().set_assignments(vec![json!({
        "id": "g1_member_u9", "groupId": "g1", "principalId": "u9", "accessId": "member",
        "assignmentType": "Activated", "memberType": "Direct",
        "startDateTime": "2026-12-02T09:00:00Z", "endDateTime": end,
    })]);
    let mut with_u9 = standing.clone();
    with_u9.push("u9@contoso.example");
    sb.await_members("Group g1", &with_u9, Duration::from_secs(10))
        .await;
    assert!(d.state().requests("assignments") >= 1);

    // PIM ends the activation early: the instance is gone at the next poll.
    d.state().set_assignments(vec![]);
    sb.await_members("Group g1", &standing, Duration::from_secs(10))
        .await;
    svc.shutdown(Duration::from_secs(5)).await;
}

/// g1..g3 of [`directory`] plus g4 (u7, u8; not assigned) and g5 (nested in g3, holds u4):
/// nesting two levels deep through groups no app has assigned.
fn delta_directory() -> Directory {
    let mut d = directory();
    for g in [group("g4", &["u7", "u8"], &[]), group("g5", &["u4"], &[])] {
        d.groups.insert(g.id.clone(), g);
    }
    d.groups
        .get_mut(&SourceId::from("g3"))
        .unwrap()
        .members
        .push("g5".into());
    d
}

/// crm reads g1 and g2 directly, flat reads g2 transitively: g2 is read both ways.
fn delta_apps() -> Vec<AppConfig> {
    let mut apps = apps_cfg(&["g1", "g2"], false, "http://127.0.0.1:9/scim/v2");
    let mut flat = apps_cfg(&["g2"], true, "http://127.0.0.1:9/scim/v2");
    flat[0].name = "flat".into();
    apps.extend(flat);
    apps
}

/// Members added and removed (directly and two levels down), a group renamed, an attribute
/// changed and one cleared, a user deleted, a new user added to an assigned group, a new
/// eligible user who is no member.
fn mutate(dir: &mut Directory) {
    fn g<'a>(dir: &'a mut Directory, id: &str) -> &'a mut SourceGroup {
        dir.groups.get_mut(&SourceId::from(id)).unwrap()
    }
    g(dir, "g1").members.retain(|m| m.as_str() != "u0");
    g(dir, "g1").members.push("u7".into());
    g(dir, "g1").members.push("u-new".into());
    g(dir, "g1").eligible.push("u-elig".into());
    g(dir, "g2").display_name = "Group g2 renamed".into();
    g(dir, "g5").members.push("u2".into());
    g(dir, "g4").members.push("u3".into());
    let u5 = dir.users.get_mut(&SourceId::from("u5")).unwrap();
    u5.attrs.insert("jobTitle".into(), json!("Manager"));
    u5.attrs.remove("department");
    dir.users.remove(&SourceId::from("u6"));
    for id in ["u-new", "u-elig"] {
        let u = user(id);
        dir.users.insert(u.id.clone(), u);
    }
}

#[tokio::test]
async fn a_delta_snapshot_after_changes_equals_a_full_read_of_the_same_state() {
    let d = double_with(delta_directory(), 3).await;
    let apps = delta_apps();
    let delta = source(&d, &apps).with_delta(None);
    let full = source(&d, &apps);
    assert!(delta.uses_delta() && !full.uses_delta());

    let first = delta.snapshot().await.unwrap();
    assert_eq!(d.state().requests("deltaFromScratch"), 2);
    assert_eq!(d.state().requests("members"), 0);
    assert_eq!(first, full.read().await.unwrap());
    assert!(
        first.users.contains_key(&SourceId::from("u4")),
        "via g3 → g5"
    );

    d.state().update(mutate);
    d.state().reset_counts();
    let second = delta.snapshot().await.unwrap();
    let s = d.state();
    assert_eq!(s.requests("deltaFromScratch"), 0, "changes only");
    assert_eq!(
        (
            s.requests("group"),
            s.requests("members"),
            s.requests("transitiveMembers")
        ),
        (0, 0, 0)
    );
    assert_eq!(s.requests("eligibility"), 2, "per assigned group");
    // Only users kept take their changes from users/delta: the new member u-new and the new
    // eligible user u-elig are read on their own.
    assert_eq!(s.requests("user"), 2);
    let expected = full.read().await.unwrap();
    assert_eq!(second, expected);
    assert_eq!(
        expected.groups[&SourceId::from("g2")].display_name,
        "Group g2 renamed"
    );
    assert!(!expected.users.contains_key(&SourceId::from("u6")));
    assert!(
        !expected.users[&SourceId::from("u5")]
            .attrs
            .contains_key("department")
    );
    assert_eq!(
        ids(&expected.groups[&SourceId::from("g1")].members),
        ["u-new", "u1", "u2", "u3", "u4", "u5", "u7"]
    );

    // Nothing changed: two one-page delta requests plus eligibility, nothing else.
    d.state().reset_counts();
    let third = delta.snapshot().await.unwrap();
    assert_eq!(third, expected);
    let s = d.state();
    assert_eq!(
        (s.requests("groupsDelta"), s.requests("usersDelta")),
        (1, 1)
    );
    assert_eq!(s.requests("eligibility"), 2);
    assert_eq!(
        s.total_requests(),
        3,
        "2 delta + 1 $batch carrying both eligibility reads"
    );
}

#[tokio::test]
async fn an_expired_delta_token_starts_a_round_from_scratch() {
    let d = double_with(delta_directory(), 3).await;
    let apps = delta_apps();
    let delta = source(&d, &apps).with_delta(None);
    let full = source(&d, &apps);
    delta.snapshot().await.unwrap();
    for code in ["syncStateNotFound", "resyncRequired"] {
        d.state().update(mutate);
        d.state().expire_delta_tokens(code);
        d.state().reset_counts();
        let snap = delta.snapshot().await.unwrap();
        assert_eq!(d.state().requests("deltaFromScratch"), 2, "{code}");
        assert_eq!(snap, full.read().await.unwrap(), "{code}");
    }
}

#[tokio::test]
async fn a_delta_page_failing_for_good_fails_the_snapshot_and_the_next_reads_the_changes() {
    let d = double_with(delta_directory(), 3).await;
    let apps = delta_apps();
    let delta = source(&d, &apps).with_delta(None);
    let full = source(&d, &apps);
    delta.snapshot().await.unwrap();
    d.state().update(mutate);
    d.state().fail_always("/v1.0/users/delta", 2, 500);
    let err = delta.snapshot().await.unwrap_err().to_string();
    assert!(
        err.contains("user changes (page 2)")
            && err.contains("GET /v1.0/users/delta")
            && err.contains("HTTP 500"),
        "{err}"
    );
    assert!(
        !err.contains("deltatoken") && !err.contains("skiptoken"),
        "{err}"
    );
    d.state().clear_faults();
    d.state().reset_counts();
    let snap = delta.snapshot().await.unwrap();
    assert_eq!(d.state().requests("deltaFromScratch"), 0);
    assert_eq!(snap, full.read().await.unwrap());
}

#[tokio::test]
async fn delta_links_and_base_survive_a_restart_through_the_store() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let d = double_with(delta_directory(), 3).await;
    let apps = delta_apps();
    let full = source(&d, &apps);
    {
        let before = source(&d, &apps).with_delta(Some(store.clone()));
        before.snapshot().await.unwrap();
        // A no-change round advances the cursor alone.
        before.snapshot().await.unwrap();
    }
    d.state().update(mutate);
    d.state().reset_counts();
    let after = source(&d, &apps).with_delta(Some(store.clone()));
    let snap = after.snapshot().await.unwrap();
    assert_eq!(d.state().requests("deltaFromScratch"), 0, "resumed");
    assert_eq!(snap, full.read().await.unwrap());

    // Other attributes mapped: the kept links were made for another $select.
    let mut other = apps.clone();
    other[0]
        .attributes
        .insert("title".into(), "officeLocation".into());
    d.state().reset_counts();
    let changed = source(&d, &other).with_delta(Some(store.clone()));
    changed.snapshot().await.unwrap();
    assert_eq!(d.state().requests("deltaFromScratch"), 2);
}

#[tokio::test]
async fn exact_delta_rounds_follow_next_link_verbatim_and_resume_from_the_delta_link() {
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(method("POST"))
        .and(path("/t1/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "graph-tok"}),
        ))
        .expect(1)
        .named("token")
        .mount(&server)
        .await;
    let user = |id: &str| json!({"@odata.type": "#microsoft.graph.user", "id": id});
    let group = |id: &str| json!({"@odata.type": "#microsoft.graph.group", "id": id});
    let ok = |body: Value| ResponseTemplate::new(200).set_body_json(body);
    let mocks = [
        (
            "groups/delta from scratch",
            "/v1.0/groups/delta",
            ("$select", "id,displayName,members"),
            ok(json!({
                "value": [{"id": "g-1", "displayName": "CRM", "members@delta": [user("a"), group("g-n")]}],
                "@odata.nextLink": format!("{uri}/v1.0/groups/delta?$skiptoken=G'2")
            })),
        ),
        (
            "groups/delta page 2",
            "/v1.0/groups/delta",
            ("$skiptoken", "G'2"),
            ok(json!({
                "value": [
                    {"id": "g-1", "displayName": "CRM", "members@delta": [user("b")]},
                    {"id": "g-n", "displayName": "Nested", "members@delta": [user("c")]}
                ],
                "@odata.deltaLink": format!("{uri}/v1.0/groups/delta?$deltatoken=GD1")
            })),
        ),
        (
            "groups/delta round 2",
            "/v1.0/groups/delta",
            ("$deltatoken", "GD1"),
            ok(json!({
                "value": [{"id": "g-1", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "a", "@removed": {"reason": "deleted"}}]}],
                "@odata.deltaLink": format!("{uri}/v1.0/groups/delta?$deltatoken=GD2")
            })),
        ),
        (
            "users/delta from scratch",
            "/v1.0/users/delta",
            (
                "$select",
                "accountEnabled,department,displayName,employeeId,givenName,id,jobTitle,mail,surname,userPrincipalName",
            ),
            ok(json!({
                "value": (["a", "b", "c", "x"].map(|i| json!({"id": i, "displayName": format!("User {i}"), "accountEnabled": true}))),
                "@odata.deltaLink": format!("{uri}/v1.0/users/delta?$deltatoken=UD1")
            })),
        ),
        (
            "users/delta round 2",
            "/v1.0/users/delta",
            ("$deltatoken", "UD1"),
            ok(json!({
                "value": [{"id": "b", "displayName": "B renamed"}, {"id": "x", "displayName": "ignored"}],
                "@odata.deltaLink": format!("{uri}/v1.0/users/delta?$deltatoken=UD2")
            })),
        ),
    ];
    for (name, p, (k, v), answer) in mocks {
        Mock::given(method("GET"))
            .and(path(p))
            .and(query_param(k, v))
            .and(bearer_token("graph-tok"))
            .respond_with(answer)
            .expect(1)
            .named(name)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .and(body_string_contains(
            "/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances?$filter=groupId%20eq%20%27g-1%27",
        ))
        .respond_with(ok(json!({"responses": [
            {"id": "0", "status": 200, "headers": {}, "body": {"value": []}}
        ]})))
        .expect(2)
        .named("eligibility, every snapshot, batched")
        .mount(&server)
        .await;

    let cfg = GraphConfig {
        tenant_id: "t1".into(),
        client_id: "c1".into(),
        client_secret: SecretFrom::Env("UNUSED".into()),
        graph_url: uri.clone(),
        login_url: uri.clone(),
        pim_poll_interval: Duration::from_secs(30),
        watch_interval: Duration::from_secs(10),
    };
    let apps = apps_cfg(&["g-1"], false, "http://127.0.0.1:9/scim/v2");
    let src = GraphSource::with_retry(&cfg, Secret::new("sec"), &apps, fast_retry())
        .unwrap()
        .with_delta(None);
    let dir = src.snapshot().await.unwrap();
    let g = &dir.groups[&SourceId::from("g-1")];
    assert_eq!(g.display_name, "CRM");
    assert_eq!(
        ids(&g.members),
        ["a", "b"],
        "merged across pages; g-n is no user"
    );
    assert_eq!(
        dir.users.len(),
        2,
        "c (nested, not flattened) and x are not needed"
    );

    let dir = src.snapshot().await.unwrap();
    let g = &dir.groups[&SourceId::from("g-1")];
    assert_eq!(
        (g.display_name.as_str(), ids(&g.members)),
        ("CRM", vec!["b"])
    );
    let b = &dir.users[&SourceId::from("b")].attrs;
    assert_eq!(
        (b["displayName"].as_str(), &b["accountEnabled"]),
        (Some("B renamed"), &json!(true))
    );
    assert_eq!(dir.users.len(), 1);
    assert_eq!(src.requests(), 7);
}

#[tokio::test]
async fn after_a_failed_delta_round_the_kept_state_resumes_correctly_after_a_restart() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let d = double_with(delta_directory(), 3).await;
    let apps = delta_apps();
    let full = source(&d, &apps);
    {
        let before = source(&d, &apps).with_delta(Some(store.clone()));
        before.snapshot().await.unwrap();
        d.state().update(mutate);
        // Both delta rounds are read and applied, then reading the new member u-new fails:
        // the base holds the round's changes, the links stay where they were.
        d.state().fail_always("/v1.0/users/u-new", 1, 500);
        let err = before.snapshot().await.unwrap_err().to_string();
        assert!(
            err.contains("member u-new") && err.contains("HTTP 500"),
            "{err}"
        );
        d.state().clear_faults();
        assert_eq!(before.snapshot().await.unwrap(), full.read().await.unwrap());
    }
    d.state().update(|dir| {
        dir.groups
            .get_mut(&SourceId::from("g1"))
            .unwrap()
            .members
            .push("u8".into());
    });
    d.state().reset_counts();
    let after = source(&d, &apps).with_delta(Some(store.clone()));
    assert_eq!(after.snapshot().await.unwrap(), full.read().await.unwrap());
    assert_eq!(d.state().requests("deltaFromScratch"), 0, "resumed");
}

/// A refused activation (the user is not eligible) costs one targeted eligibility request,
/// not a read of the tenant, and a burst of them one request in all (the answer is kept
/// briefly). A user eligible in PIM but not yet in the snapshot is found by that request and
/// accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_costs_one_targeted_request_not_a_tenant_read() {
    use crate::support::service::{app_toml, config, start};
    use scim_sync::activation::{ActivationRequest, Refusal};
    use scim_sync::service::{Options, TickSource};

    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        &[app_toml("crm", "http://127.0.0.1:9/scim/v2", &["g1"], "")],
        "40m",
    );
    let d = double_with(directory(), 999).await;
    let graph = Arc::new(source(&d, &cfg.apps));
    let options = Options {
        ticks: TickSource::Tokio,
        startup_cycle: false,
        push_wait: Duration::from_millis(200),
        ..Options::default()
    };
    let svc = start(&cfg, graph, crate::support::TOKEN, options).await;
    // A cycle reads the tenant once; what follows must not read it again.
    svc.cycles(None, scim_sync::report::Reason::SyncNow, true)
        .await;
    d.state().reset_counts();
    let req = |user: &str| ActivationRequest {
        group_id: "g1".into(),
        user_id: user.into(),
        expires_at: None,
        justification: None,
        ticket_number: None,
        ticket_system: None,
    };
    for _ in 0..3 {
        let refused = svc.activate(req("u3"), "webhook").await.unwrap_err();
        assert!(matches!(refused, Refusal::NotEligible(_)), "{refused:?}");
    }
    assert_eq!(
        d.state().total_requests(),
        1,
        "one targeted read for three refusals"
    );
    assert_eq!(d.state().requests("eligibility"), 1);

    // Made eligible in PIM after the snapshot: the targeted read finds it, then the tenant
    // is read for the user's attributes.
    d.state().update(|dir| {
        dir.groups
            .get_mut(&SourceId::from("g1"))
            .unwrap()
            .eligible
            .push("u4".into());
    });
    let accepted = svc.activate(req("u4"), "webhook").await.unwrap();
    assert_eq!(accepted.apps.len(), 1);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A service over the Graph double whose app has g1 as a push group and g2 as a plain
/// group; the push groups are watched every 100 ms, the PIM poller idles (every hour).
async fn push_group_service(
    sb: &crate::support::service::Sandboxed,
    d: &GraphDouble,
) -> (scim_sync::service::Service, Arc<GraphSource>) {
    use crate::support::service::{app_toml, config, start};
    use scim_sync::drive::poller::PimPoll;
    use scim_sync::drive::watch::PushWatch;
    use scim_sync::service::{Options, TickSource};

    let cfg = config(
        sb.tmp.path(),
        &[app_toml(
            "crm",
            sb.sandbox.base_url(),
            &["g1", "g2"],
            "push_groups = [\"g1\"]",
        )],
        "40m",
    );
    let store = Store::open(cfg.service.state_url().unwrap().expose())
        .await
        .unwrap();
    let graph = Arc::new(source(d, &cfg.apps).with_delta(Some(store)));
    let options = Options {
        ticks: TickSource::Tokio,
        startup_cycle: true,
        pim: Some(PimPoll {
            feed: graph.clone(),
            every: Duration::from_secs(3600),
        }),
        watch: Some(PushWatch {
            feed: graph.clone(),
            every: Duration::from_millis(100),
        }),
        ..Options::default()
    };
    let svc = start(&cfg, graph.clone(), crate::support::TOKEN, options).await;
    (svc, graph)
}

fn upns(ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|i| format!("u{i}@contoso.example"))
        .collect()
}

/// Waits (up to 10 s) until the app's "Group g1" holds exactly the users `u{ids}`.
async fn await_g1(sb: &crate::support::service::Sandboxed, ids: &[u32]) {
    let want = upns(ids);
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    sb.await_members("Group g1", &want, Duration::from_secs(10))
        .await;
}

/// Waits (up to 10 s) until the double has served `n` requests of `kind`.
async fn await_requests(d: &GraphDouble, kind: &str, n: u64) {
    let started = Instant::now();
    while d.state().requests(kind) < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fewer than {n} {kind}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Adds `user` to (or removes it from) `group` in the double's tenant.
fn edit_group(d: &GraphDouble, group: &str, user: &str, add: bool) {
    d.state().update(|dir| {
        let g = dir.groups.get_mut(&SourceId::from(group)).unwrap();
        if add {
            g.members.push(user.into());
        } else {
            g.members.retain(|m| m.as_str() != user);
        }
    });
}

/// Push groups over Graph: a member added to g1 in Entra reaches the app through the scoped
/// `groups/delta` watch, one removed (`@removed`) leaves it, a change in g2 (not a push
/// group) waits for the cycle, and a failing watch read pushes nothing until Graph answers.
#[tokio::test(flavor = "multi_thread")]
async fn push_group_changes_in_graph_reach_the_app_through_the_scoped_delta_watch() {
    let sb = crate::support::service::Sandboxed::new().await;
    let d = double_with(directory(), 999).await;
    let (svc, _graph) = push_group_service(&sb, &d).await;
    await_g1(&sb, &[0, 1, 2, 3, 4, 5, 6]).await;
    // The baseline round ran: the watch reads g1 only, scoped.
    await_requests(&d, "groupsDeltaScoped", 2).await;

    edit_group(&d, "g1", "u7", true);
    edit_group(&d, "g1", "u0", false);
    await_g1(&sb, &[1, 2, 3, 4, 5, 6, 7]).await;

    // g2 is not a push group: its change waits for the next cycle (40 minutes away).
    let g2_before = sb.members("Group g2");
    edit_group(&d, "g2", "u1", true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sb.members("Group g2"), g2_before);

    // Graph fails every scoped read: nothing is pushed, the link stays; once it answers,
    // the change made meanwhile arrives.
    d.state().fail_always("/v1.0/groups/delta", 1, 503);
    edit_group(&d, "g1", "u8", true);
    let failing_from = d.state().requests("groupsDeltaScoped");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(d.state().requests("groupsDeltaScoped") > failing_from + 2);
    assert_eq!(
        sb.members("Group g1"),
        upns(&[1, 2, 3, 4, 5, 6, 7]),
        "a failed watch read pushes nothing"
    );
    d.state().clear_faults();
    await_g1(&sb, &[1, 2, 3, 4, 5, 6, 7, 8]).await;
    svc.shutdown(Duration::from_secs(5)).await;
}

/// The watch's delta link is kept in the store: a restarted service resumes from it (no
/// round from scratch), and a change made while it was down arrives.
#[tokio::test(flavor = "multi_thread")]
async fn the_push_group_watch_resumes_from_its_kept_link_after_a_restart() {
    let sb = crate::support::service::Sandboxed::new().await;
    let d = double_with(directory(), 999).await;
    let (svc, _) = push_group_service(&sb, &d).await;
    await_requests(&d, "groupsDeltaScoped", 3).await;
    svc.shutdown(Duration::from_secs(5)).await;
    let from_scratch = d.state().requests("deltaFromScratch");
    let scoped = d.state().requests("groupsDeltaScoped");

    let (svc, _) = push_group_service(&sb, &d).await;
    await_requests(&d, "groupsDeltaScoped", scoped + 3).await;
    assert_eq!(
        d.state().requests("deltaFromScratch"),
        from_scratch,
        "the tenant's and the push groups' rounds resume from their kept links"
    );
    edit_group(&d, "g1", "u9", true);
    await_g1(&sb, &[0, 1, 2, 3, 4, 5, 6, 9]).await;
    svc.shutdown(Duration::from_secs(5)).await;
}

/// PIM policy from Graph (SPEC §7.5): g1's member policy allows 2 hours and requires a
/// justification and a ticket. A webhook activation for g1 lasts 2 hours, not
/// `max_activation`'s 8; a poller activation whose instance ends after 5 hours is capped at
/// its start + 2 hours, carries the justification and ticket of its request, and is not
/// pushed while its request waits for approval.
#[tokio::test(flavor = "multi_thread")]
async fn the_pim_policy_caps_activations_and_the_poller_records_the_request() {
    use crate::support::service::{Sandboxed, app_toml, config, start};
    use scim_sync::activation::ActivationRequest;
    use scim_sync::drive::poller::PimPoll;
    use scim_sync::service::{Options, TickSource};

    let sb = Sandboxed::new().await;
    let cfg = config(
        sb.tmp.path(),
        &[app_toml("crm", sb.sandbox.base_url(), &["g1"], "")],
        "40m",
    );
    let mut dir = directory();
    dir.groups
        .get_mut(&SourceId::from("g1"))
        .unwrap()
        .eligible
        .push("u8".into());
    let d = double_with(dir, 999).await;
    d.state().set_policy(
        "g1",
        vec![
            json!({"@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyExpirationRule",
                "id": "Expiration_EndUser_Assignment", "isExpirationRequired": true, "maximumDuration": "PT2H",
                "target": {"caller": "EndUser", "operations": ["All"], "level": "Assignment"}}),
            json!({"@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyEnablementRule",
                "id": "Enablement_EndUser_Assignment", "enabledRules": ["Justification", "Ticketing"]}),
            json!({"@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyApprovalRule",
                "id": "Approval_EndUser_Assignment", "setting": {"isApprovalRequired": true}}),
        ],
    );
    let graph = Arc::new(source(&d, &cfg.apps));
    let options = Options {
        ticks: TickSource::Tokio,
        startup_cycle: true,
        pim: Some(PimPoll {
            feed: graph.clone(),
            every: Duration::from_millis(100),
        }),
        ..Options::default()
    };
    let svc = start(&cfg, graph, crate::support::TOKEN, options).await;
    let within = Duration::from_secs(10);
    // The start-up cycle has provisioned g1's standing members before anything is compared
    // with them: a cycle still running would add them after `members_before` is taken.
    let standing: Vec<String> = (0..7).map(|i| format!("u{i}@contoso.example")).collect();
    let standing: Vec<&str> = standing.iter().map(String::as_str).collect();
    sb.await_members("Group g1", &standing, within).await;
    let store = svc.engine().store().clone();
    let started = Instant::now();
    while store.source_state("pim-policy").await.unwrap().is_none() {
        assert!(started.elapsed() < within, "the policy was not read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The webhook: 2 hours, the policy's maximum, not max_activation's 8.
    let now = chrono::Utc::now();
    let accepted = svc
        .activate(
            ActivationRequest {
                group_id: "g1".into(),
                user_id: "u9".into(),
                expires_at: None,
                justification: Some("INC-7".into()),
                ticket_number: None,
                ticket_system: None,
            },
            "webhook",
        )
        .await
        .unwrap();
    let two_hours = (accepted.expires_at - now).num_seconds();
    assert!((7190..=7210).contains(&two_hours), "{two_hours} s");

    // PIM: the request waits for approval (no instance yet, then an instance racing ahead
    // of the request's status): nothing is pushed.
    let start_at = chrono::Utc::now() - chrono::Duration::minutes(1);
    let request = |status: &str| {
        json!({"id": "req-8", "status": status, "action": "selfActivate", "accessId": "member",
            "groupId": "g1", "principalId": "u8", "justification": "INC-42 database outage",
            "ticketInfo": {"ticketNumber": "INC-42", "ticketSystem": "ServiceNow"},
            "targetScheduleId": "g1_member_req-8"})
    };
    d.state().set_requests(vec![request("PendingApproval")]);
    let members_before = sb.members("Group g1");
    assert!(!members_before.contains(&"u8@contoso.example".to_owned()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    d.state().set_assignments(vec![json!({
        "id": "g1_member_u8", "groupId": "g1", "principalId": "u8", "accessId": "member",
        "assignmentType": "Activated", "memberType": "Direct",
        "assignmentScheduleId": "g1_member_req-8",
        "startDateTime": start_at.to_rfc3339(),
        "endDateTime": (start_at + chrono::Duration::hours(5)).to_rfc3339(),
    })]);
    let requests_read = d.state().requests("requests");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        d.state().requests("requests") > requests_read,
        "the request was read"
    );
    assert_eq!(
        sb.members("Group g1"),
        members_before,
        "pending approval: not pushed"
    );

    // Approved and provisioned: pushed, with the request's justification and ticket, ending
    // at its start + 2 hours.
    d.state().set_requests(vec![request("Provisioned")]);
    let started = Instant::now();
    let a = loop {
        let status = scim_sync::status::collect(&cfg.apps, &store, chrono::Utc::now())
            .await
            .unwrap();
        if let Some(a) = status.apps[0]
            .active_activations
            .iter()
            .find(|a| a.activation.user.as_str() == "u8")
        {
            break a.activation.clone();
        }
        assert!(
            started.elapsed() < within,
            "the provisioned activation was not pushed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(a.origin, "pim-poll");
    assert_eq!(a.justification.as_deref(), Some("INC-42 database outage"));
    assert_eq!(a.ticket_number.as_deref(), Some("INC-42"));
    assert_eq!(a.ticket_system.as_deref(), Some("ServiceNow"));
    let capped = (a.expires_at - start_at).num_seconds();
    assert!(
        (7195..=7205).contains(&capped),
        "{capped} s after the start"
    );
    let mut want = members_before.clone();
    want.push("u8@contoso.example".into());
    want.sort();
    sb.await_members(
        "Group g1",
        &want.iter().map(String::as_str).collect::<Vec<_>>(),
        within,
    )
    .await;
    svc.shutdown(Duration::from_secs(5)).await;
}

/// PIM reads are batched (`POST /v1.0/$batch`, 20 a request): 45 groups' assignment
/// instances in 3 requests; a throttled read (`429` with `Retry-After` inside the batch) is
/// asked again in a new batch and the others are kept, so every group still gets its answer.
#[tokio::test]
async fn pim_reads_go_in_batches_of_twenty_and_a_throttled_one_is_retried_alone() {
    let mut dir = directory();
    let names: Vec<String> = (0..45).map(|i| format!("p{i}")).collect();
    for n in &names {
        let g = group(n, &["u1"], &["u2"]);
        dir.groups.insert(g.id.clone(), g);
    }
    let d = double_with(dir, 999).await;
    d.state().set_assignments(vec![json!({
        "id": "p7_member_u2", "groupId": "p7", "principalId": "u2", "accessId": "member",
        "assignmentType": "Activated", "memberType": "Direct",
        "startDateTime": "2026-12-03T09:00:00Z", "endDateTime": "2099-12-03T10:00:00Z",
    })]);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let src = source(&d, &apps_cfg(&refs, false, "http://127.0.0.1:9/scim/v2"));
    let groups: Vec<SourceId> = names.iter().map(|n| SourceId::new(n.clone())).collect();

    let before = src.requests();
    let read = src.assignment_instances_of(&groups).await;
    assert_eq!(src.requests() - before, 3, "45 reads in 3 batches");
    assert_eq!(d.state().requests("assignments"), 45);
    assert!(read.iter().all(Result::is_ok));
    assert_eq!(read[7].as_ref().unwrap().len(), 1, "p7's activation");
    assert!(read[8].as_ref().unwrap().is_empty());

    // One read inside a batch is throttled once: one more batch, for it alone.
    d.state().reset_counts();
    d.state().throttle(
        "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleInstances",
        1,
        0,
        1,
    );
    let before = src.requests();
    let read = src.assignment_instances_of(&groups).await;
    assert_eq!(src.requests() - before, 4, "3 batches and one retry");
    assert_eq!(d.state().requests("assignments"), 46);
    assert!(read.iter().all(Result::is_ok), "{read:?}");
    assert_eq!(read[7].as_ref().unwrap().len(), 1);
}

/// The poller reads only the groups the source lists with PIM eligibility: with g1 (u9
/// eligible) and g3 (nobody eligible) assigned, each round reads g1 alone, in one batch.
#[tokio::test(flavor = "multi_thread")]
async fn the_poller_reads_only_groups_with_pim_eligibility() {
    use crate::support::service::{Sandboxed, app_toml, config, start};
    use scim_sync::drive::poller::PimPoll;
    use scim_sync::service::{Options, TickSource};

    let sb = Sandboxed::new().await;
    let cfg = config(
        sb.tmp.path(),
        &[app_toml("crm", sb.sandbox.base_url(), &["g1", "g3"], "")],
        "40m",
    );
    let d = double_with(directory(), 999).await;
    let graph = Arc::new(source(&d, &cfg.apps));
    let options = Options {
        ticks: TickSource::Tokio,
        startup_cycle: true,
        pim: Some(PimPoll {
            feed: graph.clone(),
            every: Duration::from_millis(100),
        }),
        ..Options::default()
    };
    let svc = start(&cfg, graph, crate::support::TOKEN, options).await;
    sb.await_members(
        "Group g3",
        &["u0@contoso.example", "u1@contoso.example"],
        Duration::from_secs(10),
    )
    .await;
    d.state().reset_counts();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (rounds, reads) = (
        d.state().requests("batch"),
        d.state().requests("assignments"),
    );
    assert!(rounds >= 3, "{rounds} rounds");
    // One read per round, g1 only (give or take the round the reset fell into; reading g3
    // too would double it).
    assert!(
        reads <= rounds + 1 && reads + 1 >= rounds,
        "{reads} reads in {rounds} rounds"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}
