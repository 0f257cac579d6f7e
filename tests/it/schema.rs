//! What scim-sync learns about an app (issue 13): the capabilities it declares shaping the
//! client's requests, and an app that keeps an attribute in its own form, through whole
//! cycles, against wiremock (the sandbox's own quirks are in `e2e`).

use std::sync::Arc;

use serde_json::{Value, json};
use wiremock::matchers::query_param;
use wiremock::{MockServer, Request, ResponseTemplate};

use scim_sync::engine::{App, AppCycle, CycleOptions, Engine};
use scim_sync::model::Capabilities;
use scim_sync::report::{Outcome, Reason};
use scim_sync::source::MemorySource;
use scim_sync::store::Store;

use crate::support::{
    RawQuery, client, crm_directory, empty_list, given, list_page, scim, wiremock_app,
};

#[tokio::test]
async fn declared_capabilities_shape_page_size_and_lookups() {
    let server = MockServer::start().await;
    let alice = json!({"id": "a1", "userName": "Alice@Contoso.Example", "active": true});
    // No filter (the app said filter.supported: false), pages of its maxResults.
    given("GET", "/Users")
        .and(RawQuery("startIndex=1&count=50".into()))
        .respond_with(list_page(1, 1, vec![alice]))
        .named("listing in pages of 50")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    c.follow(&Capabilities {
        filter: Some(false),
        max_results: Some(50),
        ..Capabilities::default()
    });
    assert_eq!(c.page_size(), 50);
    let found = c
        .find_users("userName", "alice@contoso.example")
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "matched locally, case-insensitively");

    // A maxResults above the client's own page size does not raise it.
    c.follow(&Capabilities {
        max_results: Some(1000),
        ..Capabilities::default()
    });
    assert_eq!(c.page_size(), 100);
}

/// The app's answer: what was sent, its e-mail lower-cased, with an id.
fn lower_cased(req: &Request) -> Value {
    let mut body: Value = serde_json::from_slice(&req.body).unwrap();
    body["id"] = json!("a1");
    let email = body["emails"][0]["value"].as_str().unwrap().to_lowercase();
    body["emails"][0]["value"] = json!(email);
    body
}

async fn cycle(engine: &Engine, app: &App, verify: bool) -> AppCycle {
    let opts = CycleOptions {
        reason: Reason::SyncNow,
        dry_run: false,
        progress: false,
        verify,
    };
    engine
        .cycle(std::slice::from_ref(app), opts)
        .await
        .apps
        .remove(0)
}

#[tokio::test]
async fn an_attribute_the_app_rewrites_is_neither_re_sent_nor_taken_for_drift() {
    let server = MockServer::start().await;
    let stored = Arc::new(std::sync::Mutex::new(Value::Null));
    given("GET", "/Users")
        .and(query_param(
            "filter",
            r#"userName eq "alice@contoso.example""#,
        ))
        .respond_with(empty_list())
        .expect(1)
        .mount(&server)
        .await;
    let keep = stored.clone();
    given("POST", "/Users")
        .respond_with(move |req: &Request| {
            let user = lower_cased(req);
            *keep.lock().unwrap() = user.clone();
            scim(201, user)
        })
        .named("create: the e-mail lower-cased")
        .expect(1)
        .mount(&server)
        .await;
    let read = stored.clone();
    given("GET", "/Users/a1")
        .respond_with(move |_: &Request| scim(200, read.lock().unwrap().clone()))
        .named("the verification's read")
        .expect(1)
        .mount(&server)
        .await;
    given("GET", "/Groups")
        .respond_with(empty_list())
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Groups")
        .respond_with(scim(201, json!({"id": "g1", "displayName": "CRM"})))
        .expect(1)
        .mount(&server)
        .await;
    given("PATCH", "/Groups/g1")
        .respond_with(ResponseTemplate::new(204))
        .named("alice added")
        .expect(1)
        .mount(&server)
        .await;
    given("GET", "/Groups/g1")
        .respond_with(scim(
            200,
            json!({"id": "g1", "displayName": "CRM", "members": [{"value": "a1"}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // Anything else (a PATCH of alice) would be unmatched: wiremock answers 404 and the
    // cycle reports a failure.

    let app = wiremock_app(&server, "");
    let dir = crm_directory(&[(
        "u-alice",
        json!({"userPrincipalName": "alice@contoso.example", "displayName": "Alice",
            "mail": "Alice.Smith@Contoso.Example", "accountEnabled": true}),
    )]);
    let store = Store::open("sqlite::memory:").await.unwrap();
    let engine = Engine::new(Arc::new(MemorySource::new(dir)), store.clone());

    let c = cycle(&engine, &app, false).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(
        c.report.requests,
        3 + 5,
        "discovery (not served: 404s), then lookups, creates and the member add: {}",
        c.report
    );
    let learnt = store.learnt(&"crm".into()).await.unwrap().unwrap();
    assert_eq!(learnt.notes.len(), 3, "{learnt:?}");
    assert!(
        learnt.undeclared.is_empty(),
        "no /Schemas: RFC core + enterprise"
    );
    let why = &learnt.rewritten[r#"emails[type eq "work"].value"#];
    assert!(
        why.contains("\"alice.smith@contoso.example\" for \"Alice.Smith@Contoso.Example\""),
        "{why}"
    );
    assert!(learnt.dropped.is_empty(), "{learnt:?}");

    // A plain cycle sends nothing; a verification reads alice and the group and repairs
    // nothing: the lower-cased e-mail is the app's form, not drift.
    assert_eq!(cycle(&engine, &app, false).await.report.requests, 0);
    let c = cycle(&engine, &app, true).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(
        (c.report.drift_repaired, c.report.requests, c.plan.ops.len()),
        (0, 2, 0),
        "{}",
        c.report
    );
}
