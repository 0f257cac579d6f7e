//! Contract tests of the SCIM client against wiremock: the exact requests it sends (method,
//! path, query, headers, body) and how it copes with what real SCIM apps answer (200 or 204,
//! string or number error status, short pages, missing `Resources`, 429, 5xx, timeouts,
//! filters ignored or refused, answers larger than `max_response`, the last also through a
//! whole cycle, where it fails one object only).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use scim_sync::model::{Attrs, ScimId};
use scim_sync::scim::{Error, RemovalForm};
use serde_json::{Value, json};
use wiremock::matchers::{any, body_json, body_partial_json, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    RawQuery, SCIM, Sequence, TOKEN, client, client_with, empty_list, given, list_page, scim,
    scim_error,
};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const DEPT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";
const EMPNO: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
const WORK: &str = r#"emails[type eq "work"].value"#;
const ALICE_QUERY: &str =
    "filter=userName%20eq%20%22alice%40contoso.example%22&startIndex=1&count=100";

fn alice_attrs() -> Attrs {
    [
        ("externalId", json!("u-alice")),
        ("userName", json!("alice@contoso.example")),
        ("active", json!(true)),
        ("displayName", json!("Alice Smith")),
        ("name.givenName", json!("Alice")),
        ("name.familyName", json!("Smith")),
        (WORK, json!("alice@contoso.example")),
        ("title", json!("Engineer")),
        (EMPNO, json!("1001")),
        (DEPT, json!("R&D")),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v))
    .collect()
}

fn alice_resource(id: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "id": id,
        "externalId": "u-alice",
        "userName": "alice@contoso.example",
        "active": true,
        "displayName": "Alice Smith",
        "name": {"givenName": "Alice", "familyName": "Smith"},
        "emails": [{"type": "work", "value": "alice@contoso.example", "primary": true}],
        "title": "Engineer",
        ENTERPRISE: {"employeeNumber": "1001", "department": "R&D"},
        "meta": {"resourceType": "User"},
    })
}

fn id(s: &str) -> ScimId {
    ScimId::new(s)
}

fn ok<T>(r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err<T: std::fmt::Debug>(r: Result<T, Error>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn patch_op(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

// ------------------------------------------------------------------ users

#[tokio::test]
async fn get_user_returns_the_resource() {
    let server = MockServer::start().await;
    given("GET", "/Users/u1")
        .respond_with(scim(200, alice_resource("u1")))
        .named("get u1")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let user = ok(c.get_user(&id("u1")).await);
    assert_eq!(user, Some(alice_resource("u1")));
    assert_eq!(c.requests_sent(), 1);
}

#[tokio::test]
async fn get_user_404_is_none() {
    let server = MockServer::start().await;
    given("GET", "/Users/gone")
        .respond_with(scim_error(
            404,
            json!("404"),
            None,
            "Resource gone not found",
        ))
        .named("get gone")
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(ok(client(&server).get_user(&id("gone")).await), None);
}

#[tokio::test]
async fn find_users_sends_the_exact_filter_query() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(query_param(
            "filter",
            r#"userName eq "alice@contoso.example""#,
        ))
        .and(query_param("startIndex", "1"))
        .and(query_param("count", "100"))
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(list_page(
            1,
            1,
            vec![json!({"id": "u1", "userName": "Alice@Contoso.EXAMPLE"})],
        ))
        .named("filtered lookup")
        .expect(1)
        .mount(&server)
        .await;
    let found = ok(client(&server)
        .find_users("userName", "alice@contoso.example")
        .await);
    // userName is caseExact false: a match in another case is still the user.
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], "u1");
}

#[tokio::test]
async fn find_users_escapes_quote_and_backslash() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(query_param("filter", r#"userName eq "o\"b\\r""#))
        .and(RawQuery(
            "filter=userName%20eq%20%22o%5C%22b%5C%5Cr%22&startIndex=1&count=100".to_owned(),
        ))
        .respond_with(list_page(
            1,
            1,
            vec![json!({"id": "u9", "userName": r#"o"b\r"#})],
        ))
        .named("escaped lookup")
        .expect(1)
        .mount(&server)
        .await;
    let found = ok(client(&server).find_users("userName", r#"o"b\r"#).await);
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn find_users_keeps_only_real_matches_when_the_server_ignores_the_filter() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(query_param("filter", r#"externalId eq "u-bob""#))
        .respond_with(list_page(
            3,
            1,
            vec![
                json!({"id": "1", "userName": "alice", "externalId": "u-alice"}),
                json!({"id": "2", "userName": "bob", "externalId": "u-bob"}),
                json!({"id": "3", "userName": "bob2", "externalId": "U-BOB"}),
            ],
        ))
        .named("filter ignored")
        .expect(1)
        .mount(&server)
        .await;
    let found = ok(client(&server).find_users("externalId", "u-bob").await);
    // externalId is caseExact: only id 2.
    assert_eq!(found.iter().map(|r| &r["id"]).collect::<Vec<_>>(), ["2"]);
}

#[tokio::test]
async fn list_users_follows_short_pages_until_total_results() {
    let server = MockServer::start().await;
    let user = |n: u32| json!({"id": format!("u{n}"), "userName": format!("user{n}")});
    // The server pages by 2 although we ask for 100.
    for (start, ids) in [(1, vec![1, 2]), (3, vec![3, 4]), (5, vec![5])] {
        given("GET", "/Users")
            .and(RawQuery(format!("startIndex={start}&count=100")))
            .respond_with(list_page(5, start, ids.into_iter().map(user).collect()))
            .named(format!("page at {start}"))
            .expect(1)
            .mount(&server)
            .await;
    }
    let c = client(&server);
    let all = ok(c.list_users().await);
    assert_eq!(
        all.iter().map(|r| r["id"].as_str()).collect::<Vec<_>>(),
        [Some("u1"), Some("u2"), Some("u3"), Some("u4"), Some("u5")]
    );
    assert_eq!(c.requests_sent(), 3);
}

#[tokio::test]
async fn list_users_stops_on_a_page_without_resources() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery("startIndex=1&count=100".to_owned()))
        .respond_with(list_page(
            10,
            1,
            vec![json!({"id": "a"}), json!({"id": "b"})],
        ))
        .named("first page")
        .expect(1)
        .mount(&server)
        .await;
    // totalResults promised 10, but the next page has no Resources at all.
    given("GET", "/Users")
        .and(RawQuery("startIndex=3&count=100".to_owned()))
        .respond_with(scim(200, json!({"totalResults": 10, "startIndex": 3})))
        .named("page without Resources")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(ok(c.list_users().await).len(), 2);
    assert_eq!(c.requests_sent(), 2);
}

#[tokio::test]
async fn list_groups_stops_when_the_server_ignores_start_index() {
    let server = MockServer::start().await;
    let page: Vec<Value> = (0..100).map(|n| json!({"id": format!("g{n}")})).collect();
    given("GET", "/Groups")
        .respond_with(list_page(250, 1, page))
        .named("same page every time")
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(ok(c.list_groups().await).len(), 100);
    assert_eq!(c.requests_sent(), 2);
}

/// A provider may not implement filtering (RFC 7643 §5 `filter.supported: false`) and answer
/// a filtered query `501 Not Implemented` (RFC 7644 §3.12), as scim2-server does when so
/// configured. Lookups then list the collection and match locally; the client remembers, so
/// the next lookup sends no filter at all.
#[tokio::test]
async fn lookups_list_and_match_locally_when_the_app_does_not_implement_filtering() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(scim_error(
            501,
            json!("501"),
            None,
            "Filtering is not supported",
        ))
        .named("filtered lookup answered 501")
        .expect(1)
        .mount(&server)
        .await;
    given("GET", "/Users")
        .and(query_param(
            "filter",
            r#"userName eq "bob@contoso.example""#,
        ))
        .respond_with(empty_list())
        .named("no filter once the app said 501")
        .expect(0)
        .mount(&server)
        .await;
    given("GET", "/Users")
        .and(RawQuery("startIndex=1&count=100".to_owned()))
        .respond_with(list_page(
            2,
            1,
            vec![
                json!({"id": "u9", "userName": "carol@contoso.example"}),
                alice_resource("u1"),
            ],
        ))
        .named("unfiltered listing")
        .expect(2)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .and(body_partial_json(
            json!({"userName": "bob@contoso.example"}),
        ))
        .respond_with(scim(
            201,
            json!({"id": "u2", "userName": "bob@contoso.example"}),
        ))
        .named("create bob")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    assert!(c.filters_supported());
    let alice = ok(c.ensure_user("userName", &alice_attrs()).await);
    assert_eq!((alice.id, alice.adopted), (id("u1"), true));
    assert!(!c.filters_supported());
    let mut bob = alice_attrs();
    bob.insert("userName".into(), json!("bob@contoso.example"));
    bob.insert("externalId".into(), json!("u-bob"));
    let bob = ok(c.ensure_user("userName", &bob).await);
    assert_eq!((bob.id, bob.adopted), (id("u2"), false));
    assert_eq!(c.requests_sent(), 4);
}

/// `400 invalidFilter` covers "the attribute and filter comparison combination is not
/// supported" (RFC 7644 §3.12): that one lookup lists and matches locally, and filters stay
/// in use (another filter may be fine).
#[tokio::test]
async fn a_filter_the_app_cannot_evaluate_falls_back_to_listing_for_that_lookup_only() {
    let server = MockServer::start().await;
    given("GET", "/Groups")
        .and(RawQuery(
            "filter=displayName%20eq%20%22CRM%20Users%22&startIndex=1&count=100".to_owned(),
        ))
        .respond_with(scim_error(
            400,
            json!(400),
            Some("invalidFilter"),
            "displayName cannot be filtered",
        ))
        .named("filtered group lookup refused")
        .expect(2)
        .mount(&server)
        .await;
    given("GET", "/Groups")
        .and(RawQuery("startIndex=1&count=100".to_owned()))
        .respond_with(list_page(
            2,
            1,
            vec![
                json!({"id": "g1", "displayName": "Other"}),
                json!({"id": "g7", "displayName": "CRM Users", "members": [{"value": "u1"}]}),
            ],
        ))
        .named("unfiltered group listing")
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    for _ in 0..2 {
        let g = ok(c.ensure_group("CRM Users", "g-crm-users").await);
        assert_eq!(
            (g.id, g.adopted, g.members),
            (id("g7"), true, vec![id("u1")])
        );
    }
    assert!(c.filters_supported());
    assert_eq!(c.requests_sent(), 4);
}

/// Other refusals of a filtered lookup are still errors (no silent full listing).
#[tokio::test]
async fn a_lookup_refused_for_another_reason_is_an_error() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(scim_error(403, json!("403"), None, "no read access"))
        .named("lookup forbidden")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = err(c.ensure_user("userName", &alice_attrs()).await);
    assert_eq!(e.status(), Some(403));
    assert!(c.filters_supported());
    assert_eq!(c.requests_sent(), 1);
}

#[tokio::test]
async fn ensure_user_creates_with_the_full_resource() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(empty_list())
        .named("lookup finds nothing")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .and(body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "externalId": "u-alice",
            "userName": "alice@contoso.example",
            "active": true,
            "displayName": "Alice Smith",
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [{"type": "work", "value": "alice@contoso.example", "primary": true}],
            "title": "Engineer",
            ENTERPRISE: {"employeeNumber": "1001", "department": "R&D"},
        })))
        .respond_with(scim(201, alice_resource("new-1")))
        .named("create alice")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let ensured = ok(c.ensure_user("userName", &alice_attrs()).await);
    assert_eq!(ensured.id, id("new-1"));
    assert!(!ensured.adopted);
    assert_eq!(ensured.current, alice_attrs());
    assert_eq!(c.requests_sent(), 2);
}

#[tokio::test]
async fn ensure_user_adopts_an_existing_user_without_posting() {
    let server = MockServer::start().await;
    let mut existing = alice_resource("old-7");
    existing["title"] = json!("Intern");
    existing["active"] = json!("False");
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(list_page(1, 1, vec![existing]))
        .named("lookup finds alice")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(scim(201, alice_resource("dup")))
        .named("no create")
        .expect(0)
        .mount(&server)
        .await;
    let ensured = ok(client(&server)
        .ensure_user("userName", &alice_attrs())
        .await);
    assert_eq!(ensured.id, id("old-7"));
    assert!(ensured.adopted);
    let mut expected = alice_attrs();
    expected.insert("title".into(), json!("Intern"));
    expected.insert("active".into(), json!(false));
    assert_eq!(ensured.current, expected);
}

#[tokio::test]
async fn ensure_user_409_looks_up_and_adopts_without_a_second_post() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(Sequence::new(vec![
            empty_list(),
            list_page(1, 1, vec![alice_resource("raced-3")]),
        ]))
        .named("lookup: nothing, then alice")
        .expect(2)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .and(body_partial_json(
            json!({"userName": "alice@contoso.example"}),
        ))
        .respond_with(scim_error(
            409,
            json!("409"),
            Some("uniqueness"),
            "User already exists",
        ))
        .named("create conflicts")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let ensured = ok(c.ensure_user("userName", &alice_attrs()).await);
    assert_eq!(ensured.id, id("raced-3"));
    assert!(ensured.adopted);
    assert_eq!(c.requests_sent(), 3);
}

#[tokio::test]
async fn ensure_user_409_with_nothing_to_adopt_returns_the_conflict() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .respond_with(empty_list())
        .named("lookup finds nothing")
        .expect(2)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(scim_error(
            409,
            json!(409),
            Some("uniqueness"),
            "User already exists",
        ))
        .named("create conflicts")
        .expect(1)
        .mount(&server)
        .await;
    let e = err(client(&server)
        .ensure_user("userName", &alice_attrs())
        .await);
    assert_eq!(
        e.to_string(),
        "app crm: POST /Users answered 409 uniqueness: User already exists"
    );
    assert_eq!(e.status(), Some(409));
    assert_eq!(e.scim_type(), Some("uniqueness"));
}

#[tokio::test]
async fn ensure_user_post_timeout_looks_up_instead_of_posting_again() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(Sequence::new(vec![
            empty_list(),
            // The timed-out POST was processed after all.
            list_page(1, 1, vec![alice_resource("slow-5")]),
        ]))
        .named("lookup: nothing, then alice")
        .expect(2)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(scim(201, alice_resource("slow-5")).set_delay(Duration::from_millis(1500)))
        .named("slow create")
        .expect(1)
        .mount(&server)
        .await;
    let c = client_with(&server, |o| o.timeout = Duration::from_millis(300));
    let ensured = ok(c.ensure_user("userName", &alice_attrs()).await);
    assert_eq!(ensured.id, id("slow-5"));
    assert!(ensured.adopted);
    assert_eq!(c.requests_sent(), 3);
}

#[tokio::test]
async fn ensure_user_post_500_not_found_posts_again() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .respond_with(empty_list())
        .named("lookups find nothing")
        .expect(2)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(Sequence::new(vec![
            scim_error(500, json!("500"), None, "database busy"),
            scim(201, alice_resource("second-try")),
        ]))
        .named("create: 500 then 201")
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    let ensured = ok(c.ensure_user("userName", &alice_attrs()).await);
    assert_eq!(ensured.id, id("second-try"));
    assert!(!ensured.adopted);
    // lookup, POST (500), lookup, POST (201)
    assert_eq!(c.requests_sent(), 4);
}

#[tokio::test]
async fn ensure_user_post_429_waits_and_posts_again_without_lookup() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .respond_with(empty_list())
        .named("one lookup")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(429).insert_header("Retry-After", "0"),
            scim(201, alice_resource("after-429")),
        ]))
        .named("create: 429 then 201")
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(
        ok(c.ensure_user("userName", &alice_attrs()).await).id,
        id("after-429")
    );
    assert_eq!(c.requests_sent(), 3);
}

#[tokio::test]
async fn patch_user_replaces_rebuilds_emails_and_removes() {
    let server = MockServer::start().await;
    let mut desired = alice_attrs();
    desired.remove("title");
    desired.insert(WORK.into(), json!("alice.smith@contoso.example"));
    desired.insert("active".into(), json!(false));
    given("PATCH", "/Users/u1")
        .and(body_json(patch_op(json!([
            {"op": "replace", "path": "active", "value": false},
            {"op": "replace", "path": "emails", "value": [
                {"type": "work", "value": "alice.smith@contoso.example", "primary": true}
            ]},
            {"op": "remove", "path": "title"},
            {"op": "replace", "path": DEPT, "value": "R&D"},
        ]))))
        .respond_with(ResponseTemplate::new(204))
        .named("patch alice, 204")
        .expect(1)
        .mount(&server)
        .await;
    let changed: Vec<String> = ["active", WORK, "title", DEPT]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let c = client(&server);
    ok(c.patch_user(&id("u1"), &desired, &changed).await);
    assert_eq!(c.requests_sent(), 1);
}

#[tokio::test]
async fn patch_user_answered_200_with_a_body_succeeds() {
    let server = MockServer::start().await;
    given("PATCH", "/Users/u1")
        .and(body_json(patch_op(
            json!([{"op": "replace", "path": "title", "value": "Engineer"}]),
        )))
        .respond_with(scim(200, alice_resource("u1")))
        .named("patch alice, 200")
        .expect(1)
        .mount(&server)
        .await;
    ok(client(&server)
        .patch_user(&id("u1"), &alice_attrs(), &["title".to_owned()])
        .await);
}

#[tokio::test]
async fn patch_user_with_nothing_changed_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .named("nothing at all")
        .expect(0)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.patch_user(&id("u1"), &alice_attrs(), &[]).await);
    ok(c.add_members(&id("g1"), &[]).await);
    ok(c.remove_members(&id("g1"), &[]).await);
    assert_eq!(c.requests_sent(), 0);
}

#[tokio::test]
async fn delete_user_204_and_404_both_succeed() {
    let server = MockServer::start().await;
    given("DELETE", "/Users/u1")
        .respond_with(ResponseTemplate::new(204))
        .named("delete u1")
        .expect(1)
        .mount(&server)
        .await;
    given("DELETE", "/Users/u2")
        .respond_with(scim_error(404, json!(404), None, "not found"))
        .named("delete u2, already gone")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.delete_user(&id("u1")).await);
    ok(c.delete_user(&id("u2")).await);
}

// ------------------------------------------------------------------ groups

#[tokio::test]
async fn ensure_group_creates_without_members() {
    let server = MockServer::start().await;
    given("GET", "/Groups")
        .and(query_param("filter", r#"displayName eq "CRM Users""#))
        .and(RawQuery(
            "filter=displayName%20eq%20%22CRM%20Users%22&startIndex=1&count=100".to_owned(),
        ))
        .respond_with(empty_list())
        .named("group lookup")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Groups")
        .and(body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "CRM Users",
            "externalId": "g-crm-users",
        })))
        .respond_with(scim(
            201,
            json!({"id": "g1", "displayName": "CRM Users", "members": []}),
        ))
        .named("create group")
        .expect(1)
        .mount(&server)
        .await;
    let g = ok(client(&server)
        .ensure_group("CRM Users", "g-crm-users")
        .await);
    assert_eq!(g.id, id("g1"));
    assert!(!g.adopted);
    assert!(g.members.is_empty());
}

#[tokio::test]
async fn ensure_group_adopts_with_its_members() {
    let server = MockServer::start().await;
    given("GET", "/Groups")
        .and(query_param("filter", r#"displayName eq "CRM Users""#))
        .respond_with(list_page(
            1,
            1,
            vec![json!({
                "id": "g7", "displayName": "crm users",
                "members": [{"value": "u1", "display": "Alice"}, {"value": "u2"}],
            })],
        ))
        .named("group lookup finds it")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Groups")
        .respond_with(scim(201, json!({"id": "dup"})))
        .named("no group create")
        .expect(0)
        .mount(&server)
        .await;
    let g = ok(client(&server)
        .ensure_group("CRM Users", "g-crm-users")
        .await);
    assert_eq!(g.id, id("g7"));
    assert!(g.adopted);
    assert_eq!(g.members, [id("u1"), id("u2")]);
}

#[tokio::test]
async fn rename_group_replaces_display_name() {
    let server = MockServer::start().await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(
            json!([{"op": "replace", "path": "displayName", "value": "CRM Admins"}]),
        )))
        .respond_with(ResponseTemplate::new(204))
        .named("rename")
        .expect(1)
        .mount(&server)
        .await;
    ok(client(&server).rename_group(&id("g1"), "CRM Admins").await);
}

#[tokio::test]
async fn add_members_sends_one_add_operation() {
    let server = MockServer::start().await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(json!([
            {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}
        ]))))
        .respond_with(scim(200, json!({"id": "g1", "displayName": "CRM Users"})))
        .named("add members")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.add_members(&id("g1"), &[id("u1"), id("u2")]).await);
    assert_eq!(c.requests_sent(), 1);
}

#[tokio::test]
async fn remove_members_uses_the_value_filter_form() {
    let server = MockServer::start().await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(json!([
            {"op": "remove", "path": "members[value eq \"u1\"]"},
            {"op": "remove", "path": "members[value eq \"u\\\"2\"]"},
        ]))))
        .respond_with(ResponseTemplate::new(204))
        .named("remove by filter")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.remove_members(&id("g1"), &[id("u1"), id(r#"u"2"#)]).await);
    assert_eq!(c.removal_form(), RemovalForm::Filter);
}

#[tokio::test]
async fn remove_members_falls_back_to_the_value_list_and_remembers() {
    let server = MockServer::start().await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]),
        )))
        .respond_with(scim_error(
            400,
            json!("400"),
            Some("invalidPath"),
            "Filters are not supported in paths",
        ))
        .named("filter form refused")
        .expect(1)
        .mount(&server)
        .await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(json!([
            {"op": "remove", "path": "members", "value": [{"value": "u1"}]}
        ]))))
        .respond_with(ResponseTemplate::new(204))
        .named("value list for u1")
        .expect(1)
        .mount(&server)
        .await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(json!([
            {"op": "remove", "path": "members", "value": [{"value": "u2"}, {"value": "u3"}]}
        ]))))
        .respond_with(ResponseTemplate::new(204))
        .named("value list straight away for u2, u3")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.remove_members(&id("g1"), &[id("u1")]).await);
    assert_eq!(c.removal_form(), RemovalForm::ValueList);
    ok(c.remove_members(&id("g1"), &[id("u2"), id("u3")]).await);
    assert_eq!(c.requests_sent(), 3);
}

#[tokio::test]
async fn remove_members_no_target_counts_as_removed() {
    let server = MockServer::start().await;
    let no_target = || scim_error(400, json!(400), Some("noTarget"), "no member matched");
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(json!([
            {"op": "remove", "path": "members[value eq \"u1\"]"},
            {"op": "remove", "path": "members[value eq \"u2\"]"},
        ]))))
        .respond_with(no_target())
        .named("batch: one is gone")
        .expect(1)
        .mount(&server)
        .await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]),
        )))
        .respond_with(no_target())
        .named("u1 already gone")
        .expect(1)
        .mount(&server)
        .await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(
            json!([{"op": "remove", "path": "members[value eq \"u2\"]"}]),
        )))
        .respond_with(ResponseTemplate::new(204))
        .named("u2 removed")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.remove_members(&id("g1"), &[id("u1"), id("u2")]).await);
    assert_eq!(c.removal_form(), RemovalForm::Filter);
    assert_eq!(c.requests_sent(), 3);
}

#[tokio::test]
async fn delete_group_204_and_404_both_succeed() {
    let server = MockServer::start().await;
    given("DELETE", "/Groups/g1")
        .respond_with(ResponseTemplate::new(204))
        .named("delete g1")
        .expect(1)
        .mount(&server)
        .await;
    given("DELETE", "/Groups/g2")
        .respond_with(ResponseTemplate::new(404))
        .named("delete g2, already gone")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.delete_group(&id("g1")).await);
    ok(c.delete_group(&id("g2")).await);
}

#[tokio::test]
async fn service_provider_config_is_read() {
    let server = MockServer::start().await;
    let spc =
        json!({"patch": {"supported": true}, "filter": {"supported": true, "maxResults": 200}});
    given("GET", "/ServiceProviderConfig")
        .respond_with(ResponseTemplate::new(200).set_body_raw(spc.to_string(), "application/json"))
        .named("spc as application/json")
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(ok(client(&server).service_provider_config().await), spc);
}

// ------------------------------------------------------------------ errors

#[tokio::test]
async fn error_with_string_status_surfaces_scim_type_and_detail() {
    let server = MockServer::start().await;
    given("PATCH", "/Users/u1")
        .respond_with(scim_error(
            400,
            json!("400"),
            Some("mutability"),
            "Attribute 'id' is readOnly",
        ))
        .named("mutability")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = err(c
        .patch_user(&id("u1"), &alice_attrs(), &["title".to_owned()])
        .await);
    assert_eq!(
        e.to_string(),
        "app crm: PATCH /Users/u1 answered 400 mutability: Attribute 'id' is readOnly"
    );
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.scim_type(), Some("mutability"));
    assert!(!e.is_transient());
    // Other 4xx fail at once.
    assert_eq!(c.requests_sent(), 1);
}

#[tokio::test]
async fn error_with_numeric_status_surfaces_detail() {
    let server = MockServer::start().await;
    given("GET", "/Users/u1")
        .respond_with(scim_error(403, json!(403), None, "Token lacks users:read"))
        .named("forbidden")
        .expect(1)
        .mount(&server)
        .await;
    let e = err(client(&server).get_user(&id("u1")).await);
    assert_eq!(
        e.to_string(),
        "app crm: GET /Users/u1 answered 403: Token lacks users:read"
    );
    assert_eq!(e.scim_type(), None);
}

#[tokio::test]
async fn token_never_appears_in_errors_or_debug() {
    let server = MockServer::start().await;
    given("GET", "/Users/u1")
        .respond_with(scim_error(
            401,
            json!("401"),
            None,
            &format!("invalid token Bearer {TOKEN}"),
        ))
        .named("echoes the token")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = err(c.get_user(&id("u1")).await);
    for text in [e.to_string(), format!("{e:?}"), format!("{c:?}")] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
    assert!(e.to_string().contains("[redacted]"));
    let opts = crate::support::options(&server);
    assert!(!format!("{opts:?}").contains(TOKEN));

    // A transport error: nothing listens on this port.
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("bind: {e}"),
    };
    let dead = client_with(&server, |o| {
        o.base_url = format!("http://127.0.0.1:{port}/scim/v2");
        o.retry.max_attempts = 2;
    });
    let e = err(dead.get_user(&id("u1")).await);
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(
        e.to_string()
            .starts_with("app crm: GET /Users/u1: cannot connect: ")
    );
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
    // The Display names the path, not the host (the Debug of the source may show the address).
    assert!(!e.to_string().contains("127.0.0.1"), "host in error: {e}");
    assert_eq!(dead.requests_sent(), 2);
}

// ------------------------------------------------------------------ retries

#[tokio::test]
async fn retry_429_waits_retry_after_seconds() {
    let server = MockServer::start().await;
    given("PATCH", "/Groups/g1")
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(429).insert_header("Retry-After", "1"),
            ResponseTemplate::new(204),
        ]))
        .named("429 then 204")
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    let started = Instant::now();
    ok(c.add_members(&id("g1"), &[id("u1")]).await);
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(c.requests_sent(), 2);
}

#[tokio::test]
async fn retry_429_waits_retry_after_http_date() {
    let server = MockServer::start().await;
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    given("GET", "/Users/u1")
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(429).insert_header("Retry-After", when.as_str()),
            scim(200, alice_resource("u1")),
        ]))
        .named("429 until a date, then 200")
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    let started = Instant::now();
    assert!(ok(c.get_user(&id("u1")).await).is_some());
    // The date has one-second precision: the wait is between 1 and 2 seconds.
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(c.requests_sent(), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_limit_fails_at_once() {
    let server = MockServer::start().await;
    given("GET", "/Users/u1")
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .named("come back in an hour")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = err(c.get_user(&id("u1")).await);
    assert!(matches!(e, Error::RetryAfterTooLong { .. }), "{e:?}");
    assert_eq!(e.status(), Some(429));
    assert_eq!(
        e.to_string(),
        "app crm: GET /Users/u1 answered 429 and asked to retry after 1h, more than the 5s limit; giving up for now"
    );
    assert_eq!(c.requests_sent(), 1);
}

#[tokio::test]
async fn retry_500_then_success() {
    let server = MockServer::start().await;
    given("GET", "/Users/u1")
        .respond_with(Sequence::new(vec![
            scim_error(500, json!("500"), None, "try again"),
            scim(200, alice_resource("u1")),
        ]))
        .named("500 then 200")
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    assert!(ok(c.get_user(&id("u1")).await).is_some());
    assert_eq!(c.requests_sent(), 2);
}

#[tokio::test]
async fn retry_500_forever_is_bounded_and_returns_the_last_error() {
    let server = MockServer::start().await;
    given("DELETE", "/Users/u1")
        .respond_with(Sequence::new(
            (1..=4)
                .map(|n| scim_error(503, json!(503), None, &format!("outage {n}")))
                .collect(),
        ))
        .named("503 four times")
        .expect(4)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = err(c.delete_user(&id("u1")).await);
    assert_eq!(
        e.to_string(),
        "app crm: DELETE /Users/u1 answered 503: outage 4"
    );
    assert!(e.is_transient());
    assert_eq!(c.requests_sent(), 4);
}

#[tokio::test]
async fn timeout_is_retried_then_named_in_the_error() {
    let server = MockServer::start().await;
    given("GET", "/Users/u1")
        .respond_with(scim(200, alice_resource("u1")).set_delay(Duration::from_millis(1500)))
        .named("too slow")
        .expect(2)
        .mount(&server)
        .await;
    let c = client_with(&server, |o| {
        o.timeout = Duration::from_millis(200);
        o.retry.max_attempts = 2;
    });
    let e = err(c.get_user(&id("u1")).await);
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "app crm: GET /Users/u1: timed out after 200ms"
    );
    assert!(e.is_transient());
    assert_eq!(c.requests_sent(), 2);
}

#[tokio::test]
async fn content_type_is_scim_json_exactly_once() {
    let server = MockServer::start().await;
    given("PATCH", "/Groups/g1")
        .respond_with(ResponseTemplate::new(204))
        .named("headers checked by ScimHeaders")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    ok(c.rename_group(&id("g1"), "x").await);
    let requests = server.received_requests().await.unwrap_or_default();
    let types: Vec<_> = requests[0].headers.get_all("content-type").iter().collect();
    assert_eq!(types, [SCIM]);
}

// ------------------------------------------------------------------ response bounds

/// A ListResponse of a bit more than `pad` bytes: one resource padded out.
fn padded_list(pad: usize) -> ResponseTemplate {
    list_page(
        1,
        1,
        vec![
            json!({"id": "u1", "userName": "alice@contoso.example", "displayName": "x".repeat(pad)}),
        ],
    )
}

/// The config's default `max_response` (config may not import `http`) is the clients' bound.
#[test]
fn the_config_default_bound_is_the_http_default() {
    assert_eq!(
        scim_sync::config::DEFAULT_MAX_RESPONSE,
        scim_sync::http::DEFAULT_MAX_RESPONSE
    );
    assert_eq!(scim_sync::http::DEFAULT_MAX_RESPONSE, 32 * 1024 * 1024);
}

/// Regression: a 50 MB lookup answer was read into memory in full. An answer whose
/// `Content-Length` is over `max_response` is refused unread, once (no retry: it would be
/// read again), naming app, path and limit, and the create it guarded is not sent.
#[tokio::test]
async fn a_lookup_answer_over_max_response_is_refused_once_and_nothing_is_created() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(padded_list(200 * 1024))
        .named("a 200 KiB lookup answer")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(scim(201, alice_resource("u9")))
        .named("no create after a refused lookup")
        .expect(0)
        .mount(&server)
        .await;
    let c = client_with(&server, |o| o.max_response = 64 * 1024);
    let e = err(c.ensure_user("userName", &alice_attrs()).await);
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "app crm: GET /Users answered 200: response larger than 64 KiB (Content-Length: "
        ) && msg.ends_with(" bytes); refused (the limit is apps[crm].max_response)"),
        "{msg}"
    );
    assert!(!msg.contains(TOKEN) && !msg.contains("alice"), "{msg}");
    assert!(!e.is_transient());
    assert_eq!(e.status(), None, "a refused answer is not acted on");
    assert_eq!(c.requests_sent(), 1);
}

/// A SCIM app on loopback answering every request `200` with a chunked body (no
/// `Content-Length`) of `chunks` × 16 KiB. Returns its base URL, the requests it read and
/// the body bytes it managed to write (the client hangs up early when it refuses).
async fn chunked_app(chunks: usize) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/scim/v2", listener.local_addr().unwrap());
    let (requests, written) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, w) = (requests.clone(), written.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (r, w) = (r.clone(), w.clone());
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                if conn.read(&mut head).await.unwrap_or(0) == 0 {
                    return;
                }
                r.fetch_add(1, Ordering::SeqCst);
                let start = "HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\ntransfer-encoding: chunked\r\n\r\n";
                if conn.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
                chunk.extend(std::iter::repeat_n(b' ', 16 * 1024));
                chunk.extend_from_slice(b"\r\n");
                for _ in 0..chunks {
                    if conn.write_all(&chunk).await.is_err() {
                        return;
                    }
                    w.fetch_add(16 * 1024, Ordering::SeqCst);
                }
                let _ = conn.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (base, requests, written)
}

/// A chunked answer says no length up front: it is read until it passes `max_response`,
/// then refused, without reading the rest and without a retry.
#[tokio::test]
async fn a_chunked_answer_is_refused_once_it_passes_max_response() {
    let (base, requests, written) = chunked_app(512).await; // 8 MiB
    let c = scim_sync::scim::ScimClient::new(scim_sync::scim::ClientOptions {
        app: scim_sync::model::AppName::new("crm"),
        base_url: base,
        token: TOKEN.to_owned(),
        timeout: Duration::from_secs(5),
        concurrency: 1,
        retry: crate::support::fast_retry(),
        max_response: 64 * 1024,
        profile: scim_sync::model::Profile::Generic,
    })
    .unwrap();
    let e = err(c.find_users("userName", "alice@contoso.example").await);
    assert_eq!(
        e.to_string(),
        "app crm: GET /Users answered 200: response larger than 64 KiB (more than 65536 bytes arrived); refused (the limit is apps[crm].max_response)"
    );
    assert_eq!(c.requests_sent(), 1);
    assert_eq!(requests.load(Ordering::SeqCst), 1, "not retried");
    let written = written.load(Ordering::SeqCst);
    assert!(
        written < 8 * 1024 * 1024,
        "the rest was never read: {written}"
    );
}

/// Through a whole cycle, with `max_response` from the config: the too-large lookup fails
/// alice's create only; bob, the group and bob's membership are applied, and the refused
/// lookup is not sent again.
#[tokio::test]
async fn in_a_cycle_a_too_large_answer_fails_that_object_only() {
    use scim_sync::engine::{CycleOptions, Engine};
    use scim_sync::report::{Outcome, Reason};
    use scim_sync::source::MemorySource;
    use scim_sync::store::Store;

    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(query_param(
            "filter",
            r#"userName eq "alice@contoso.example""#,
        ))
        .respond_with(padded_list(2 * 1024 * 1024))
        .named("alice's lookup: 2 MiB")
        .expect(1)
        .mount(&server)
        .await;
    given("GET", "/Users")
        .and(query_param(
            "filter",
            r#"userName eq "bob@contoso.example""#,
        ))
        .respond_with(empty_list())
        .named("bob's lookup")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .and(body_partial_json(
            json!({"userName": "bob@contoso.example"}),
        ))
        .respond_with(scim(
            201,
            json!({"id": "b1", "userName": "bob@contoso.example"}),
        ))
        .named("bob created, alice never")
        .expect(1)
        .mount(&server)
        .await;
    given("GET", "/Groups")
        .respond_with(empty_list())
        .named("group lookup")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Groups")
        .respond_with(scim(201, json!({"id": "g1", "displayName": "CRM"})))
        .named("group created")
        .expect(1)
        .mount(&server)
        .await;
    given("PATCH", "/Groups/g1")
        .and(body_json(patch_op(json!([
            {"op": "add", "path": "members", "value": [{"value": "b1"}]}
        ]))))
        .respond_with(ResponseTemplate::new(204))
        .named("bob added")
        .expect(1)
        .mount(&server)
        .await;

    let app = crate::support::wiremock_app(&server, "max_response = \"1MiB\"");
    assert_eq!(app.cfg.max_response, 1024 * 1024);
    let user = |upn: &str, id: &str| json!({"userPrincipalName": upn, "displayName": id, "accountEnabled": true});
    let dir = crate::support::crm_directory(&[
        ("u-alice", user("alice@contoso.example", "u-alice")),
        ("u-bob", user("bob@contoso.example", "u-bob")),
    ]);
    let store = Store::open("sqlite::memory:").await.unwrap();
    let engine = Engine::new(Arc::new(MemorySource::new(dir)), store);
    let run = engine
        .cycle(
            std::slice::from_ref(&app),
            CycleOptions {
                reason: Reason::SyncNow,
                dry_run: false,
                progress: false,
                verify: false,
            },
        )
        .await;
    let report = &run.apps[0].report;
    assert_eq!(report.outcome, Outcome::Partial, "{report:?}");
    assert_eq!(
        (
            report.users_created,
            report.groups_created,
            report.members_added
        ),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(report.failed, 1, "{:?}", report.errors);
    let failure = &report.errors[0];
    assert!(failure.object.contains("u-alice"), "{failure:?}");
    assert!(
        failure
            .error
            .contains("GET /Users answered 200: response larger than 1 MiB")
            && failure.error.contains("apps[crm].max_response"),
        "{failure:?}"
    );
}

/// One listing answers many creates' lookups: a user the listing holds is adopted with no
/// request of its own, matching `userName` case-insensitively (RFC 7643 §4.1.1).
#[tokio::test]
async fn a_listed_user_is_adopted_without_a_request_of_its_own() {
    let server = MockServer::start().await;
    let mut existing = alice_resource("old-7");
    existing["userName"] = json!("Alice@Contoso.Example");
    given("GET", "/Users")
        .and(RawQuery("startIndex=1&count=100".to_owned()))
        .respond_with(list_page(1, 1, vec![existing]))
        .named("the listing")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(scim(201, alice_resource("dup")))
        .named("no create")
        .expect(0)
        .mount(&server)
        .await;
    let c = client(&server);
    let index = ok(c.index_users("userName", u32::MAX).await);
    assert_eq!(index.len(), 1);
    let ensured = ok(c
        .ensure_user_listed("userName", &alice_attrs(), &index)
        .await);
    assert_eq!(ensured.id, id("old-7"));
    assert!(ensured.adopted);
    assert_eq!(c.requests_sent(), 1, "the listing only");
}

/// A user created in the app after the listing (the listing missed it): the POST's `409`
/// still leads to a lookup and adoption, never a duplicate.
#[tokio::test]
async fn a_create_the_listing_missed_answers_409_and_is_adopted() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery("startIndex=1&count=100".to_owned()))
        .respond_with(empty_list())
        .named("the listing, before someone else created alice")
        .expect(1)
        .mount(&server)
        .await;
    given("POST", "/Users")
        .respond_with(scim_error(
            409,
            json!("409"),
            Some("uniqueness"),
            "User already exists",
        ))
        .named("create: already there")
        .expect(1)
        .mount(&server)
        .await;
    given("GET", "/Users")
        .and(RawQuery(ALICE_QUERY.to_owned()))
        .respond_with(list_page(1, 1, vec![alice_resource("theirs-1")]))
        .named("lookup after the 409")
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let index = ok(c.index_users("userName", u32::MAX).await);
    assert!(index.is_empty());
    let ensured = ok(c
        .ensure_user_listed("userName", &alice_attrs(), &index)
        .await);
    assert_eq!(ensured.id, id("theirs-1"));
    assert!(ensured.adopted);
    assert_eq!(c.requests_sent(), 3);
}

/// The cost of a listing is asked with a one-item page: `totalResults` in pages of 100, plus
/// that first request; an app that does not say answers `None`.
#[tokio::test]
async fn the_listing_cost_comes_from_total_results() {
    let server = MockServer::start().await;
    given("GET", "/Users")
        .and(RawQuery("startIndex=1&count=1".to_owned()))
        .respond_with(list_page(250, 1, vec![alice_resource("a")]))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(ok(c.user_listing_cost().await), Some(4));
}
