//! Service mode in-process: the webhook against wiremock apps (limiter, deferral, the next
//! cycle), every webhook refusal, the fixed interval under paused tokio time, and expiry and
//! restarts against the sandbox. The HTTP face is driven through `admin::router` exactly as
//! a client would reach it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tower::ServiceExt;
use wiremock::MockServer;

use scim_sync::admin;
use scim_sync::clock::TokioClock;
use scim_sync::config::Secret;
use scim_sync::engine::{App, Engine};
use scim_sync::model::{AppName, Directory, Origin, ScimId, SourceId};
use scim_sync::report::Reason;
use scim_sync::service::{Options, Service, TickSource};
use scim_sync::source::{MemorySource, Source};
use scim_sync::store::{Change, Store};

use crate::support::service::{
    HeldClock, Sandboxed, WEBHOOK_TOKEN, app_toml, config, directory, patched_members, seed,
    settle, start,
};
use crate::support::{BASE, TOKEN, given};

const MINUTE: Duration = Duration::from_secs(60);

/// Sends one request to the service's HTTP face.
async fn call(svc: &Service, req: Request<Body>) -> (StatusCode, Value) {
    let resp = admin::router(svc.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

fn post(uri: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(uri).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(body.into()).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// A GET with the webhook bearer token (`/v1/status` needs it).
fn get_authorized(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("authorization", format!("Bearer {WEBHOOK_TOKEN}"))
        .body(Body::empty())
        .unwrap()
}

async fn activate(svc: &Service, group: &str, user: &str) -> (StatusCode, Value) {
    let body = json!({ "group_id": group, "user_id": user }).to_string();
    call(svc, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await
}

/// The outcome an accepted activation reports for `app`.
fn outcome<'a>(answer: &'a Value, app: &str) -> &'a str {
    answer["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app)
        .unwrap()["outcome"]
        .as_str()
        .unwrap()
}

fn wiremock_options() -> Options {
    Options {
        ticks: TickSource::Tokio,
        startup_cycle: false,
        ..Options::default()
    }
}

#[tokio::test]
async fn burst_of_eight_pushes_five_defers_three_and_the_next_cycle_sends_them() {
    // The process-wide recorder, installed before anything is counted.
    scim_sync::metrics::install();
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = directory();
    let base = format!("{}{BASE}", server.uri());
    let cfg = config(tmp.path(), &[app_toml("crm", &base, &["g-pim"], "")], "40m");
    let svc = start(
        &cfg,
        Arc::new(MemorySource::new(dir.clone())),
        TOKEN,
        wiremock_options(),
    )
    .await;
    seed(&svc, &dir, "crm", &["g-pim"]).await;

    given("PATCH", "/Groups/grp-g-pim")
        .respond_with(wiremock::ResponseTemplate::new(204))
        .expect(5)
        .named("member PATCHes of the burst")
        .mount(&server)
        .await;
    let mut outcomes = Vec::new();
    for i in 1..=8 {
        let (status, answer) = activate(&svc, "g-pim", &format!("u{i}")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        outcomes.push(outcome(&answer, "crm").to_owned());
    }
    assert_eq!(
        outcomes,
        [
            "pushed", "pushed", "pushed", "pushed", "pushed", "deferred", "deferred", "deferred"
        ]
    );
    server.verify().await;
    let pushed: Vec<String> = patched_members(&server, "grp-g-pim")
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(pushed.len(), 5);

    // Status shows the three deferred ones, for the app.
    let (status, body) = call(&svc, get_authorized("/v1/status")).await;
    assert_eq!(status, StatusCode::OK);
    let crm = &body["apps"][0];
    assert_eq!(
        crm["deferred_activations"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    assert_eq!(
        crm["active_activations"].as_array().unwrap().len(),
        5,
        "{body}"
    );

    // The next cycle sends the three, in one PATCH, and counts them.
    server.reset().await;
    given("PATCH", "/Groups/grp-g-pim")
        .respond_with(wiremock::ResponseTemplate::new(204))
        .expect(1)
        .named("the next cycle's member PATCH")
        .mount(&server)
        .await;
    let run = svc.cycles(None, Reason::Schedule, true).await;
    let report = &run.apps.unwrap()[0];
    assert_eq!(report.deferred_applied, 3, "{report:?}");
    server.verify().await;
    assert_eq!(
        patched_members(&server, "grp-g-pim").await,
        vec![vec!["scim-u6", "scim-u7", "scim-u8"]]
    );

    // Every webhook activation was taken in as it arrived.
    let text = svc.metrics_text().await.unwrap();
    assert!(
        text.contains("scim_sync_detection_latency_seconds_count{origin=\"webhook\"}"),
        "{text}"
    );

    // And the cycle after that has nothing to send.
    server.reset().await;
    let run = svc.cycles(None, Reason::Schedule, true).await;
    assert_eq!(run.apps.unwrap()[0].deferred_applied, 0);
    assert!(server.received_requests().await.unwrap().is_empty());
    let (_, body) = call(&svc, get_authorized("/v1/status")).await;
    assert!(
        body["apps"][0]["deferred_activations"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn two_apps_each_get_their_own_five() {
    let (crm, erp) = (MockServer::start().await, MockServer::start().await);
    let tmp = tempfile::tempdir().unwrap();
    let dir = directory();
    let cfg = config(
        tmp.path(),
        &[
            app_toml("crm", &format!("{}{BASE}", crm.uri()), &["g-pim"], ""),
            app_toml("erp", &format!("{}{BASE}", erp.uri()), &["g-pim-2"], ""),
        ],
        "40m",
    );
    let svc = start(
        &cfg,
        Arc::new(MemorySource::new(dir.clone())),
        TOKEN,
        wiremock_options(),
    )
    .await;
    seed(&svc, &dir, "crm", &["g-pim"]).await;
    seed(&svc, &dir, "erp", &["g-pim-2"]).await;
    for (server, group) in [(&crm, "grp-g-pim"), (&erp, "grp-g-pim-2")] {
        given("PATCH", &format!("/Groups/{group}"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": group,
                "displayName": "x"
            })))
            .expect(5)
            .mount(server)
            .await;
    }
    // crm's burst first, then erp's: the first burst must not use erp's quota.
    for (group, app) in [("g-pim", "crm"), ("g-pim-2", "erp")] {
        let mut pushed = 0;
        for i in 1..=8 {
            let (status, answer) = activate(&svc, group, &format!("u{i}")).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            assert_eq!(answer["apps"].as_array().unwrap().len(), 1, "{answer}");
            pushed += usize::from(outcome(&answer, app) == "pushed");
        }
        assert_eq!(pushed, 5, "{app}");
    }
    crm.verify().await;
    erp.verify().await;
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn every_refusal_changes_nothing_and_the_service_stays_healthy() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = directory();
    let mut not_eligible = dir.clone();
    not_eligible
        .groups
        .get_mut(&SourceId::from("g-pim"))
        .unwrap()
        .eligible
        .retain(|u| u.as_str() != "u9");
    let cfg = config(
        tmp.path(),
        &[app_toml(
            "crm",
            &format!("{}{BASE}", server.uri()),
            &["g-pim"],
            "",
        )],
        "40m",
    );
    let svc = start(
        &cfg,
        Arc::new(MemorySource::new(not_eligible)),
        TOKEN,
        wiremock_options(),
    )
    .await;

    let good = json!({"group_id": "g-pim", "user_id": "u1"}).to_string();
    let past = json!({"group_id": "g-pim", "user_id": "u1", "expires_at": "2020-01-01T00:00:00Z"});
    let huge = json!({"group_id": "g-pim", "user_id": "u1", "pad": "x".repeat(65 * 1024)});
    let forever =
        json!({"group_id": "g-pim", "user_id": "u1", "expires_at": "2099-01-01T00:00:00Z"});
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "bad JSON",
            post("/v1/activations", Some(WEBHOOK_TOKEN), "{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            post(
                "/v1/activations",
                Some(WEBHOOK_TOKEN),
                json!({"group_id": "g-pim", "user_id": "u1", "role": "owner"}).to_string(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing field",
            post(
                "/v1/activations",
                Some(WEBHOOK_TOKEN),
                json!({"group_id": "g-pim"}).to_string(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "expires_at in the past",
            post("/v1/activations", Some(WEBHOOK_TOKEN), past.to_string()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "expires_at past max_activation (a permanent privilege)",
            post("/v1/activations", Some(WEBHOOK_TOKEN), forever.to_string()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "status without the token",
            get("/v1/status"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no token",
            post("/v1/activations", None, good.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong token",
            post(
                "/v1/activations",
                Some("webhook-secret-for-tesTS"),
                good.clone(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not eligible",
            post(
                "/v1/activations",
                Some(WEBHOOK_TOKEN),
                json!({"group_id": "g-pim", "user_id": "u9"}).to_string(),
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "unknown user",
            post(
                "/v1/activations",
                Some(WEBHOOK_TOKEN),
                json!({"group_id": "g-pim", "user_id": "nobody"}).to_string(),
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "group not assigned",
            post(
                "/v1/activations",
                Some(WEBHOOK_TOKEN),
                json!({"group_id": "g-staff", "user_id": "u0"}).to_string(),
            ),
            StatusCode::NOT_FOUND,
        ),
        (
            "body over 64 KiB",
            post("/v1/activations", Some(WEBHOOK_TOKEN), huge.to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, req, want) in cases {
        let (status, body) = call(&svc, req).await;
        assert_eq!(status, want, "{what}: {body}");
        if want != StatusCode::PAYLOAD_TOO_LARGE {
            let why = body["error"].as_str().unwrap_or_default();
            assert!(!why.is_empty(), "{what}: the refusal says why: {body}");
            assert!(!why.contains(WEBHOOK_TOKEN), "{what}: token echoed: {why}");
        }
        let live = svc
            .engine()
            .store()
            .live_activations(&AppName::from("crm"), chrono::Utc::now())
            .await
            .unwrap();
        assert!(live.is_empty(), "{what}: recorded {live:?}");
        let (health, _) = call(&svc, get("/healthz")).await;
        assert_eq!(health, StatusCode::OK, "{what}");
    }
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "a refused activation reached the app"
    );
    let (ready, body) = call(&svc, get("/readyz")).await;
    assert_eq!(ready, StatusCode::OK, "{body}");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A source that notes when each snapshot starts (tokio time), and can be made slow.
#[derive(Clone)]
struct Clocked {
    inner: MemorySource,
    start: tokio::time::Instant,
    takes: Duration,
    seen: Arc<Mutex<Vec<Duration>>>,
    in_flight: Arc<Mutex<(u32, u32)>>,
}

impl Source for Clocked {
    fn describe(&self) -> String {
        "clocked test source".into()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, scim_sync::source::Error>> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(self.start.elapsed());
            {
                let mut f = self.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            tokio::time::sleep(self.takes).await;
            self.in_flight.lock().unwrap().0 -= 1;
            self.inner.snapshot().await
        })
    }
}

/// The interval tests move a [`HeldClock`] a minute at a time: paused time normally jumps to
/// the next timer whenever the runtime is idle, and a runtime waiting on SQLite's worker
/// thread looks idle, so the store's pool would time out and ticks would fire mid-query.
trait PassMinutes {
    /// Moves the held clock `total` on, a minute at a time.
    async fn pass(&self, total: Duration);
}

impl PassMinutes for HeldClock {
    async fn pass(&self, total: Duration) {
        let mut passed = Duration::ZERO;
        while passed < total {
            self.step(MINUTE).await;
            passed += MINUTE;
        }
    }
}

/// Starts a service over a [`Clocked`] source whose snapshots take `takes`, under a held
/// clock, and lets `run_for` pass. Returns the snapshot start times in whole minutes, the
/// most snapshots ever in flight at once, and the skipped ticks.
async fn clocked_service(takes: Duration, run_for: Duration) -> (Vec<u64>, u32, u64) {
    let clock = HeldClock::hold();
    let tmp = tempfile::tempdir().unwrap();
    let dir = directory();
    // The app's group has no members, and the store already holds it: a cycle plans
    // nothing, so no SCIM request is made (the address is never reached).
    let cfg = config(
        tmp.path(),
        &[app_toml(
            "crm",
            "http://127.0.0.1:9/scim/v2",
            &["g-pim"],
            "",
        )],
        "40m",
    );
    let source = Clocked {
        inner: MemorySource::new(dir.clone()),
        start: tokio::time::Instant::now(),
        takes,
        seen: Arc::default(),
        in_flight: Arc::default(),
    };
    let store = Store::open(cfg.service.state_url().unwrap().expose())
        .await
        .unwrap();
    let group = SourceId::from("g-pim");
    store
        .commit(
            &AppName::from("crm"),
            &[Change::PutGroup(
                group.clone(),
                ScimId::new("grp-g-pim"),
                Origin::Created,
                "PIM Admins".into(),
            )],
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let engine = Engine::new(Arc::new(source.clone()), store);
    let app = App::new(cfg.apps[0].clone(), &Secret::new(TOKEN)).unwrap();
    let svc = Service::start(
        cfg,
        vec![app],
        engine,
        Secret::new(WEBHOOK_TOKEN),
        Options {
            ticks: TickSource::Tokio,
            // A lease that never needs renewing keeps the keeper out of the timeline.
            lease_ttl: Some(Duration::from_secs(365 * 24 * 3600)),
            startup_cycle: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    settle().await;
    clock.pass(run_for).await;
    let seen: Vec<u64> = source
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_secs() / 60)
        .collect();
    let max_in_flight = source.in_flight.lock().unwrap().1;
    let skipped = svc.cycles_skipped();
    // Let the clock run again, so that shutdown's grace can pass over a cycle still asleep.
    drop(clock);
    svc.shutdown(Duration::from_secs(1)).await;
    (seen, max_in_flight, skipped)
}

#[tokio::test(start_paused = true)]
async fn cycles_run_every_forty_minutes_from_the_start() {
    let (seen, max_in_flight, skipped) = clocked_service(Duration::ZERO, 130 * MINUTE).await;
    // The start-up cycle, then 40, 80 and 120 minutes after the start: nothing at a :00
    // boundary (60, 120 would be one, but so is 120 = 3 × 40) and nothing in between.
    assert_eq!(seen, vec![0, 40, 80, 120]);
    assert_eq!(max_in_flight, 1);
    assert_eq!(skipped, 0);
}

#[tokio::test(start_paused = true)]
async fn a_cycle_slower_than_the_interval_is_not_overlapped() {
    // Each cycle takes 50 minutes: the ticks at 40 and 120 find the app busy and are skipped.
    let (seen, max_in_flight, skipped) = clocked_service(50 * MINUTE, 170 * MINUTE).await;
    assert_eq!(max_in_flight, 1, "two cycles of one app ran at once");
    assert_eq!(seen, vec![0, 80, 160]);
    assert!(skipped >= 2, "skipped ticks are counted: {skipped}");
}

/// A webhook body for an activation ending `in_ms` after `now`.
fn expiring(now: chrono::DateTime<chrono::Utc>, group: &str, user: &str, in_ms: i64) -> String {
    let at = now + chrono::Duration::milliseconds(in_ms);
    json!({"group_id": group, "user_id": user, "expires_at": at.to_rfc3339()}).to_string()
}

/// Expiry under paused time: the clock the service is given (a [`TokioClock`]) moves only
/// when the test moves it, so "removed at once" is measured, not slept for.
const STEP: Duration = Duration::from_millis(100);

#[tokio::test]
async fn an_expired_activation_leaves_the_app_at_once() {
    let w = Sandboxed::new().await;
    tokio::time::pause();
    let held = HeldClock::hold();
    let clock = TokioClock::shared();
    let svc = w.service_on(&clock, true).await;
    w.step_until_members(&held, "Staff", &["u0@contoso.example"], STEP, MINUTE)
        .await;
    let body = expiring(clock.now(), "g-pim", "u3", 1500);
    let (status, answer) = call(&svc, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(outcome(&answer, "crm"), "pushed", "{answer}");
    assert!(answer["apps"][0]["latency_ms"].is_number(), "{answer}");
    assert_eq!(w.members("PIM Admins"), ["u3@contoso.example"]);
    // Still there just before the end; once the clock passes the end, removed with no
    // more time passing (real time is given for the HTTP, the clock stays).
    held.step(Duration::from_millis(1400)).await;
    assert_eq!(w.members("PIM Admins"), ["u3@contoso.example"]);
    held.step(STEP * 2).await;
    w.await_members_held("PIM Admins", &[], Duration::from_secs(10))
        .await;
    // The standing member of another group is untouched, and the store says removed.
    assert_eq!(w.members("Staff"), ["u0@contoso.example"]);
    let live = svc
        .engine()
        .store()
        .live_activations(&AppName::from("crm"), clock.now())
        .await
        .unwrap();
    assert!(live.is_empty(), "{live:?}");
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_standing_member_is_not_removed_when_the_activation_ends() {
    let w = Sandboxed::new().await;
    // u4 is both a standing member of g-pim and (like everyone) eligible for it.
    w.source.update(|d| {
        d.groups
            .get_mut(&SourceId::from("g-pim"))
            .unwrap()
            .members
            .push(SourceId::from("u4"));
    });
    tokio::time::pause();
    let held = HeldClock::hold();
    let clock = TokioClock::shared();
    let svc = w.service_on(&clock, true).await;
    w.step_until_members(&held, "PIM Admins", &["u4@contoso.example"], STEP, MINUTE)
        .await;
    let body = expiring(clock.now(), "g-pim", "u4", 800);
    let (status, answer) = call(&svc, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    for _ in 0..25 {
        held.step(STEP).await;
    }
    assert_eq!(w.members("PIM Admins"), ["u4@contoso.example"]);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_restart_still_removes_a_pending_expiry() {
    let w = Sandboxed::new().await;
    tokio::time::pause();
    let held = HeldClock::hold();
    let clock = TokioClock::shared();
    let first = w.service_on(&clock, true).await;
    w.step_until_members(&held, "Staff", &["u0@contoso.example"], STEP, MINUTE)
        .await;
    let body = expiring(clock.now(), "g-pim", "u5", 2500);
    let (status, answer) = call(&first, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(w.members("PIM Admins"), ["u5@contoso.example"]);
    first.shutdown(Duration::from_secs(5)).await;
    drop(first);

    // A new process on the same state, without a start-up cycle: only the rebuilt expiry
    // timer can remove the membership.
    let second = w.service_on(&clock, false).await;
    assert_eq!(w.members("PIM Admins"), ["u5@contoso.example"]);
    held.step(Duration::from_millis(2000)).await;
    assert_eq!(
        w.members("PIM Admins"),
        ["u5@contoso.example"],
        "not before its end"
    );
    held.step(Duration::from_millis(600)).await;
    w.await_members_held("PIM Admins", &[], Duration::from_secs(10))
        .await;
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_restart_keeps_deferred_activations_and_the_next_cycle_applies_them() {
    let w = Sandboxed::new().await;
    let limit = "push_limit = { burst = 1, per = \"1h\" }";
    let first = w.service(limit, true).await;
    w.await_members("Staff", &["u0@contoso.example"], Duration::from_secs(10))
        .await;
    let (_, a) = activate(&first, "g-pim", "u1").await;
    let (_, b) = activate(&first, "g-pim", "u2").await;
    assert_eq!(outcome(&a, "crm"), "pushed", "{a}");
    assert_eq!(outcome(&b, "crm"), "deferred", "{b}");
    assert_eq!(w.members("PIM Admins"), ["u1@contoso.example"]);
    first.shutdown(Duration::from_secs(5)).await;
    drop(first);

    let second = w.service(limit, false).await;
    let (_, status) = call(&second, get_authorized("/v1/status")).await;
    let deferred = status["apps"][0]["deferred_activations"]
        .as_array()
        .unwrap();
    assert_eq!(deferred.len(), 1, "{status}");
    assert_eq!(deferred[0]["user"], "u2", "{status}");
    let run = second.cycles(None, Reason::Schedule, true).await;
    let report = &run.apps.unwrap()[0];
    assert_eq!(report.deferred_applied, 1, "{report:?}");
    assert_eq!(
        w.members("PIM Admins"),
        ["u1@contoso.example", "u2@contoso.example"]
    );
    second.shutdown(Duration::from_secs(5)).await;
}

/// A source whose read panics (a bug, not an error it could return).
struct Panics;

impl Source for Panics {
    fn describe(&self) -> String {
        "a source that panics".into()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, scim_sync::source::Error>> {
        Box::pin(async { panic!("bug in the source") })
    }
}

#[tokio::test]
async fn a_panicked_cycle_is_reported_failed_not_as_no_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        &[app_toml(
            "crm",
            "http://127.0.0.1:9/scim/v2",
            &["g-pim"],
            "",
        )],
        "40m",
    );
    let options = Options {
        ticks: TickSource::Tokio,
        startup_cycle: false,
        ..Options::default()
    };
    let svc = start(&cfg, Arc::new(Panics), TOKEN, options).await;
    let run = svc.cycles(None, Reason::Schedule, true).await;
    let reports = run.apps.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].outcome, scim_sync::report::Outcome::Failed);
    let error = reports[0].error.clone().unwrap_or_default();
    assert!(error.contains("the cycle stopped unexpectedly"), "{error}");
    // Saved as the app's last cycle, so `status` shows it too.
    let last = svc
        .engine()
        .store()
        .last_report(&AppName::from("crm"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.outcome, scim_sync::report::Outcome::Failed);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A source that counts its full reads, and asks the wrapped one for cheap answers.
struct CountingReads<S> {
    inner: S,
    reads: Arc<Mutex<u32>>,
}

impl<S: Source> Source for CountingReads<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, scim_sync::source::Error>> {
        *self.reads.lock().unwrap() += 1;
        self.inner.snapshot()
    }

    fn eligibility<'a>(
        &'a self,
        group: &'a SourceId,
        user: &'a SourceId,
    ) -> BoxFuture<'a, scim_sync::source::Eligibility> {
        self.inner.eligibility(group, user)
    }
}

#[tokio::test]
async fn a_refusal_does_not_reread_an_unchanged_directory_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("directory.json");
    let write = |eligible: &[&str]| {
        let users: Vec<Value> = ["u1", "u9"]
            .iter()
            .map(|u| json!({"id": u, "userPrincipalName": format!("{u}@contoso.example"), "displayName": u}))
            .collect();
        let dir = json!({"users": users, "groups": [
            {"id": "g-pim", "displayName": "PIM", "members": [], "eligible": eligible}
        ]});
        std::fs::write(&file, dir.to_string()).unwrap();
    };
    write(&["u1"]);
    let cfg = config(
        tmp.path(),
        &[app_toml(
            "crm",
            "http://127.0.0.1:9/scim/v2",
            &["g-pim"],
            "",
        )],
        "40m",
    );
    let reads = Arc::new(Mutex::new(0));
    let source = CountingReads {
        inner: scim_sync::source::FileSource::new(&file),
        reads: reads.clone(),
    };
    let options = Options {
        ticks: TickSource::Tokio,
        startup_cycle: false,
        push_wait: Duration::from_millis(200),
        ..Options::default()
    };
    let svc = start(&cfg, Arc::new(source), TOKEN, options).await;
    for _ in 0..5 {
        let (status, answer) = activate(&svc, "g-pim", "u9").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    }
    assert_eq!(
        *reads.lock().unwrap(),
        1,
        "one read for the first snapshot, none per refusal"
    );

    // The file changes: the next request reads it again and sees the new eligibility.
    tokio::time::sleep(Duration::from_millis(20)).await;
    write(&["u1", "u9"]);
    let (status, answer) = activate(&svc, "g-pim", "u9").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(*reads.lock().unwrap(), 2);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Two replicas on one store: the webhook reaches the one that does not hold the app's
/// lease; the holder decides with its limiter (5 pushed, 3 deferred, as on one node) and
/// pushes; only the holder sends requests, and the answers carry the holder's decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_the_replica_without_the_lease_is_decided_by_the_holder() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = directory();
    let base = format!("{}{BASE}", server.uri());
    let cfg = config(tmp.path(), &[app_toml("crm", &base, &["g-pim"], "")], "40m");
    let source = Arc::new(MemorySource::new(dir.clone()));
    let holder = start(&cfg, source.clone(), TOKEN, wiremock_options()).await;
    seed(&holder, &dir, "crm", &["g-pim"]).await;
    // The second replica uses another app token: requests tell who sent them.
    let other = start(
        &cfg,
        source,
        "token-of-the-other-replica",
        wiremock_options(),
    )
    .await;
    given("PATCH", "/Groups/grp-g-pim")
        .respond_with(wiremock::ResponseTemplate::new(204))
        .expect(5)
        .named("member PATCHes of the burst, by the holder")
        .mount(&server)
        .await;
    let mut outcomes = Vec::new();
    for i in 1..=8 {
        let (status, answer) = activate(&other, "g-pim", &format!("u{i}")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        outcomes.push(outcome(&answer, "crm").to_owned());
    }
    assert_eq!(
        outcomes,
        [
            "pushed", "pushed", "pushed", "pushed", "pushed", "deferred", "deferred", "deferred"
        ]
    );
    server.verify().await;
    let from_other = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v.to_str().unwrap().contains("token-of-the-other-replica"))
        })
        .count();
    assert_eq!(from_other, 0, "the replica without the lease sent nothing");
    other.shutdown(Duration::from_secs(5)).await;
    holder.shutdown(Duration::from_secs(5)).await;
}

/// A wiremock app `crm` with g-pim seeded, under `extra` settings.
async fn wiremock_crm(server: &MockServer, tmp: &std::path::Path, extra: &str) -> Service {
    let dir = directory();
    let base = format!("{}{BASE}", server.uri());
    let cfg = config(tmp, &[app_toml("crm", &base, &["g-pim"], extra)], "40m");
    let svc = start(
        &cfg,
        Arc::new(MemorySource::new(dir.clone())),
        TOKEN,
        wiremock_options(),
    )
    .await;
    seed(&svc, &dir, "crm", &["g-pim"]).await;
    svc
}

/// The active activations status shows for `user` in the first app.
fn active_of<'a>(status: &'a Value, user: &str) -> Vec<&'a Value> {
    status["apps"][0]["active_activations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["user"] == user)
        .collect()
}

#[tokio::test]
async fn audit_fields_are_stored_and_shown_by_status_and_over_long_ones_refused() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let svc = wiremock_crm(&server, tmp.path(), "").await;
    given("PATCH", "/Groups/grp-g-pim")
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let body = json!({"group_id": "g-pim", "user_id": "u1",
        "justification": "INC-4711: restore the billing database",
        "ticket_number": "INC-4711", "ticket_system": "ServiceNow"});
    let (status, answer) = call(
        &svc,
        post("/v1/activations", Some(WEBHOOK_TOKEN), body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // 1,000 characters, 2,000 bytes: the limit counts characters.
    let long_ok = json!({"group_id": "g-pim", "user_id": "u2", "justification": "é".repeat(1000)});
    let (status, answer) = call(
        &svc,
        post("/v1/activations", Some(WEBHOOK_TOKEN), long_ok.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");

    let (_, st) = call(&svc, get_authorized("/v1/status")).await;
    let u1 = active_of(&st, "u1");
    assert_eq!(u1.len(), 1, "{st}");
    assert_eq!(
        u1[0]["justification"],
        "INC-4711: restore the billing database"
    );
    assert_eq!(u1[0]["ticket_number"], "INC-4711");
    assert_eq!(u1[0]["ticket_system"], "ServiceNow");
    let u2 = active_of(&st, "u2");
    assert_eq!(
        u2[0]["justification"].as_str().unwrap().chars().count(),
        1000
    );
    assert!(
        u2[0].get("ticket_number").is_none(),
        "absent, not null: {st}"
    );

    for (field, max) in [
        ("justification", 1000),
        ("ticket_number", 100),
        ("ticket_system", 100),
    ] {
        let mut body = json!({"group_id": "g-pim", "user_id": "u3"});
        body[field] = json!("x".repeat(max + 1));
        let (status, answer) = call(
            &svc,
            post("/v1/activations", Some(WEBHOOK_TOKEN), body.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        let why = answer["error"].as_str().unwrap();
        assert!(
            why.contains(field) && why.contains(&max.to_string()),
            "names the field and the limit: {why}"
        );
    }
    let (_, st) = call(&svc, get_authorized("/v1/status")).await;
    assert!(
        active_of(&st, "u3").is_empty(),
        "refusals record nothing: {st}"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_repeat_activation_sends_nothing_uses_no_slot_and_keeps_the_later_expiry() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let svc = wiremock_crm(
        &server,
        tmp.path(),
        "push_limit = { burst = 2, per = \"1h\" }",
    )
    .await;
    given("PATCH", "/Groups/grp-g-pim")
        .respond_with(wiremock::ResponseTemplate::new(204))
        .expect(2)
        .named("the pushes of u1 and u2 only")
        .mount(&server)
        .await;
    let now = chrono::Utc::now();
    let at = |mins: i64| now + chrono::Duration::minutes(mins);
    let ask = |user: &str, mins: i64| {
        let body =
            json!({"group_id": "g-pim", "user_id": user, "expires_at": at(mins).to_rfc3339()});
        post("/v1/activations", Some(WEBHOOK_TOKEN), body.to_string())
    };
    let expiry = |answer: &Value| {
        chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap()).unwrap()
    };

    let (status, first) = call(&svc, ask("u1", 60)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(outcome(&first, "crm"), "pushed", "{first}");
    // A repeat with a later end: active, the same activation, the later end.
    let (status, again) = call(&svc, ask("u1", 120)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(outcome(&again, "crm"), "active", "{again}");
    assert_eq!(again["activation_id"], first["activation_id"]);
    assert_eq!(expiry(&again), at(120));
    // A repeat with an earlier end does not shorten it.
    let (_, earlier) = call(&svc, ask("u1", 30)).await;
    assert_eq!(outcome(&earlier, "crm"), "active", "{earlier}");
    assert_eq!(expiry(&earlier), at(120));
    // The repeats used no slot: u2 takes the second, u3 finds none.
    let (_, u2) = call(&svc, ask("u2", 60)).await;
    assert_eq!(outcome(&u2, "crm"), "pushed", "{u2}");
    let (_, u3) = call(&svc, ask("u3", 60)).await;
    assert_eq!(outcome(&u3, "crm"), "deferred", "{u3}");
    // A repeat of a deferred one stays deferred, with why, and sends nothing either.
    let (_, u3_again) = call(&svc, ask("u3", 90)).await;
    assert_eq!(outcome(&u3_again, "crm"), "deferred", "{u3_again}");
    assert_eq!(u3_again["activation_id"], u3["activation_id"]);
    assert!(
        u3_again["apps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("push_limit"),
        "{u3_again}"
    );
    server.verify().await;

    let (_, st) = call(&svc, get_authorized("/v1/status")).await;
    let u1 = active_of(&st, "u1");
    assert_eq!(u1.len(), 1, "one live activation: {st}");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(u1[0]["expires_at"].as_str().unwrap()).unwrap(),
        at(120)
    );
    let deferred = st["apps"][0]["deferred_activations"].as_array().unwrap();
    assert_eq!(deferred.len(), 1, "{st}");
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_repeat_keeps_the_membership_past_the_first_expiry() {
    let w = Sandboxed::new().await;
    tokio::time::pause();
    let held = HeldClock::hold();
    let clock = TokioClock::shared();
    let svc = w.service_on(&clock, true).await;
    w.step_until_members(&held, "Staff", &["u0@contoso.example"], STEP, MINUTE)
        .await;
    let start = clock.now();
    let body = expiring(start, "g-pim", "u3", 1500);
    let (status, answer) = call(&svc, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(outcome(&answer, "crm"), "pushed", "{answer}");
    held.step(Duration::from_millis(500)).await;
    let body = expiring(start, "g-pim", "u3", 3000);
    let (status, again) = call(&svc, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(outcome(&again, "crm"), "active", "{again}");
    // Past the first end (1.5 s) and up to just before the second (3 s): still a member.
    for _ in 0..24 {
        held.step(STEP / 2).await;
    }
    held.step(Duration::from_millis(1100)).await;
    assert_eq!(
        w.members("PIM Admins"),
        ["u3@contoso.example"],
        "not removed at the first activation's end"
    );
    held.step(STEP * 3).await;
    w.await_members_held("PIM Admins", &[], Duration::from_secs(10))
        .await;
    let live = svc
        .engine()
        .store()
        .live_activations(&AppName::from("crm"), clock.now())
        .await
        .unwrap();
    assert!(live.is_empty(), "{live:?}");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Sends activations for `users` of `g-pim`, one after the other; their outcomes for `crm`.
async fn activate_all(svc: &Service, users: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for user in users {
        let body = json!({"group_id": "g-pim", "user_id": user}).to_string();
        let (status, answer) = call(svc, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        out.push(outcome(&answer, "crm").to_owned());
    }
    out
}

fn pim_members(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("u{i}@contoso.example")).collect()
}

/// `overflow = "drain"` under paused time: 8 activations at once give 5 pushed at t = 0 and 3
/// deferred, then one more pushed at 2 s, 4 s and 6 s (the limit's pace, never faster), each
/// shown as deferred until it is pushed.
#[tokio::test]
async fn overflow_drain_pushes_the_deferred_one_every_two_seconds_never_faster() {
    let w = Sandboxed::new().await;
    tokio::time::pause();
    let held = HeldClock::hold();
    let clock = TokioClock::shared();
    let svc = w
        .service_on_with(&clock, "overflow = \"drain\"", true)
        .await;
    w.step_until_members(&held, "Staff", &["u0@contoso.example"], STEP, MINUTE)
        .await;
    let users = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"];
    let outcomes = activate_all(&svc, &users).await;
    assert_eq!(
        outcomes,
        [
            "pushed", "pushed", "pushed", "pushed", "pushed", "deferred", "deferred", "deferred"
        ]
    );
    let deferred = |svc: &Service| {
        let svc = svc.clone();
        async move {
            let (_, status) = call(&svc, get_authorized("/v1/status")).await;
            status["apps"][0]["deferred_activations"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    assert_eq!(w.members("PIM Admins"), pim_members(5));
    assert_eq!(deferred(&svc).await, 3);
    for (n, left) in [(6, 2), (7, 1), (8, 0)] {
        // Not a moment before the limit allows the next push (1.9 s after the last)...
        for _ in 0..19 {
            held.step(STEP).await;
        }
        assert_eq!(w.members("PIM Admins"), pim_members(n - 1), "before 2 s");
        assert_eq!(deferred(&svc).await, left + 1);
        // ...and at once when it does (tokio's timers round up to the millisecond), oldest
        // first.
        held.step(STEP).await;
        held.step(Duration::from_millis(2)).await;
        let want = pim_members(n);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        w.await_members_held("PIM Admins", &want, Duration::from_secs(10))
            .await;
        assert_eq!(deferred(&svc).await, left);
    }
    svc.shutdown(Duration::from_secs(5)).await;
}

/// The default, `overflow = "next-cycle"`: the 3 deferred wait for the next cycle, however
/// long the limit has allowed pushes again.
#[tokio::test]
async fn by_default_the_deferred_wait_for_the_next_cycle() {
    let w = Sandboxed::new().await;
    tokio::time::pause();
    let held = HeldClock::hold();
    let clock = TokioClock::shared();
    let svc = w.service_on(&clock, true).await;
    w.step_until_members(&held, "Staff", &["u0@contoso.example"], STEP, MINUTE)
        .await;
    let users = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"];
    let outcomes = activate_all(&svc, &users).await;
    assert_eq!(outcomes.iter().filter(|o| *o == "deferred").count(), 3);
    for _ in 0..100 {
        held.step(STEP).await;
    }
    assert_eq!(w.members("PIM Admins"), pim_members(5));
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A source whose reads take 300 ms, counted.
struct SlowCounted {
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Source for SlowCounted {
    fn describe(&self) -> String {
        "a slow source".into()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, scim_sync::source::Error>> {
        Box::pin(async {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(directory())
        })
    }
}

/// One source read at a time, shared: callers that need any snapshot and arrive during a
/// read (a refusal at start-up, during the first cycle's read) take that read's snapshot; a
/// caller that needs a fresh one reads again unless a read began after it asked.
#[tokio::test]
async fn callers_arriving_during_a_read_share_it_and_a_refresh_never_takes_an_older_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", tmp.path().join("s.db").display()))
        .await
        .unwrap();
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let engine = Engine::new(
        Arc::new(SlowCounted {
            reads: reads.clone(),
        }),
        store,
    );
    let count = || reads.load(std::sync::atomic::Ordering::SeqCst);
    let first = tokio::spawn({
        let e = engine.clone();
        async move { e.refresh_directory().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (a, b, fresh) = tokio::join!(
        engine.directory(),
        engine.directory(),
        engine.refresh_directory()
    );
    first.await.unwrap().unwrap();
    assert!(a.is_ok() && b.is_ok() && fresh.is_ok());
    assert_eq!(
        count(),
        2,
        "the first read, and the refresh asked after it began"
    );

    let third = tokio::spawn({
        let e = engine.clone();
        async move { e.refresh_directory().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (x, y) = tokio::join!(engine.refresh_directory(), engine.refresh_directory());
    third.await.unwrap().unwrap();
    assert!(x.is_ok() && y.is_ok());
    assert_eq!(
        count(),
        4,
        "two refreshes asked together share the read after the third"
    );
}

/// An id the source lists as eligible but has no user for is refused 403: there is nobody to
/// push, so nothing is recorded as pushed.
#[tokio::test]
async fn an_eligible_id_the_source_has_no_user_for_is_refused() {
    let w = Sandboxed::new().await;
    w.source.update(|d| {
        d.groups
            .get_mut(&SourceId::from("g-pim"))
            .unwrap()
            .eligible
            .push(SourceId::from("u-ghost"));
    });
    let svc = w.service("", true).await;
    let body = json!({"group_id": "g-pim", "user_id": "u-ghost"}).to_string();
    let (status, answer) = call(&svc, post("/v1/activations", Some(WEBHOOK_TOKEN), body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("user u-ghost is not in the source"),
        "{answer}"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// `verify_interval` in service mode, under paused time: the interval starts when the service
/// first sees the app, the cycle at 40 minutes does not verify (a member removed in the app
/// stays removed), the cycle at 80 minutes, past the hour, reads the app back and re-adds it.
#[tokio::test]
async fn a_verifying_cycle_runs_once_the_verify_interval_has_passed_and_not_before() {
    let w = Sandboxed::new().await;
    tokio::time::pause();
    let held = HeldClock::hold();
    let clock = TokioClock::shared();
    let options = Options {
        ticks: TickSource::Tokio,
        // A lease that never needs renewing keeps the keeper out of the timeline.
        lease_ttl: Some(Duration::from_secs(365 * 24 * 3600)),
        startup_cycle: true,
        ..Options::default()
    };
    let cfg = w.config("verify_interval = \"1h\"");
    let svc = crate::support::service::start_on(
        &cfg,
        Arc::new(w.source.clone()),
        TOKEN,
        options,
        clock.clone(),
    )
    .await;
    w.step_until_members(&held, "Staff", &["u0@contoso.example"], STEP, MINUTE)
        .await;

    // Someone takes u0 out of Staff in the app.
    let state = w.sandbox.state();
    let staff = state
        .groups()
        .into_iter()
        .find(|g| g["displayName"] == "Staff")
        .unwrap();
    let u0 = state
        .users()
        .into_iter()
        .find(|u| u["externalId"] == "u0")
        .unwrap();
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", u0["id"].as_str().unwrap())}]});
    reqwest::Client::new()
        .patch(format!(
            "{}/Groups/{}",
            w.sandbox.base_url(),
            staff["id"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    assert!(w.members("Staff").is_empty());
    let report = |svc: &Service| {
        let store = svc.engine().store().clone();
        async move {
            store
                .last_report(&AppName::from("crm"))
                .await
                .unwrap()
                .unwrap()
        }
    };

    // 40 minutes: a plain cycle, which trusts the store.
    held.step(Duration::from_secs(40 * 60 + 1)).await;
    let started = std::time::Instant::now();
    while report(&svc).await.reason != Reason::Schedule {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no cycle at 40 minutes"
        );
        held.step(Duration::from_millis(10)).await;
    }
    let r = report(&svc).await;
    assert_eq!((r.drift_repaired, r.requests), (0, 0), "{r}");
    assert!(w.members("Staff").is_empty());

    // 80 minutes: more than an hour since the interval began, so this cycle verifies.
    held.step(Duration::from_secs(40 * 60)).await;
    let started = std::time::Instant::now();
    while report(&svc).await.started_at == r.started_at {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no cycle at 80 minutes"
        );
        held.step(Duration::from_millis(10)).await;
    }
    let r = report(&svc).await;
    w.await_members_held("Staff", &["u0@contoso.example"], Duration::from_secs(10))
        .await;
    assert_eq!(r.drift_repaired, 1, "{r}");
    svc.shutdown(Duration::from_secs(5)).await;
}
