//! HTTP-level tests of the sandbox: requests go through [`router`] with
//! `tower::ServiceExt::oneshot`, or over TCP to a [`SandboxHandle`] with reqwest.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::schema::{ENTERPRISE_USER_SCHEMA, PATCH_OP_SCHEMA};
use super::*;

const TOKEN: &str = "s3cret";

struct Sandbox {
    app: Router,
    state: SandboxState,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Sandbox {
    fn new() -> Self {
        let state = SandboxState::with_token(TOKEN);
        Self {
            app: router(state.clone()),
            state,
        }
    }

    /// A sandbox serving `state` (one made with [`SandboxState::with_token`]`(TOKEN)`).
    fn of(state: SandboxState) -> Self {
        Self {
            app: router(state.clone()),
            state,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "sandbox.test");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/scim+json")
                .body(Body::from(serde_json::to_vec(&b).unwrap())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            assert_eq!(
                headers.get(header::CONTENT_TYPE).unwrap(),
                "application/scim+json",
                "every body is SCIM JSON"
            );
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, None, Some(TOKEN)).await
    }

    async fn post(&self, uri: &str, body: Value) -> Reply {
        self.send(Method::POST, uri, Some(body), Some(TOKEN)).await
    }

    async fn put(&self, uri: &str, body: Value) -> Reply {
        self.send(Method::PUT, uri, Some(body), Some(TOKEN)).await
    }

    async fn patch(&self, uri: &str, ops: Value) -> Reply {
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
        self.send(Method::PATCH, uri, Some(body), Some(TOKEN)).await
    }

    async fn delete(&self, uri: &str) -> Reply {
        self.send(Method::DELETE, uri, None, Some(TOKEN)).await
    }

    /// Creates a user and returns its id.
    async fn user(&self, user_name: &str) -> String {
        let r = self
            .post(
                "/scim/v2/Users",
                json!({"schemas": [schema::USER_SCHEMA], "userName": user_name}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a group and returns its id.
    async fn group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let r = self
            .post(
                "/scim/v2/Groups",
                json!({"schemas": [schema::GROUP_SCHEMA], "displayName": name, "members": members}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Ids of the users a filter finds, checking the ListResponse shape on the way.
    async fn find_users(&self, filter: &str) -> Vec<String> {
        let r = self
            .get(&format!("/scim/v2/Users?filter={}", encode(filter)))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{filter}: {}", r.body);
        assert_eq!(
            r.body["schemas"],
            json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
        );
        let resources = r.body["Resources"].as_array().unwrap();
        assert_eq!(r.body["totalResults"], json!(resources.len()));
        sorted(
            resources
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_owned())
                .collect(),
        )
    }

    async fn member_ids(&self, gid: &str) -> Vec<String> {
        let r = self.get(&format!("/scim/v2/Groups/{gid}")).await;
        assert_eq!(r.status, StatusCode::OK);
        let mut ids: Vec<String> = r.body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

fn assert_error(r: &Reply, status: StatusCode, scim_type: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    assert_eq!(r.body["status"], json!(status.as_u16().to_string()));
    assert_eq!(r.body["scimType"].as_str(), scim_type, "{}", r.body);
}

fn encode(filter: &str) -> String {
    percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn rejects_missing_or_wrong_token_with_401() {
    let sb = Sandbox::new();
    for token in [None, Some("wrong"), Some("")] {
        let r = sb.send(Method::GET, "/scim/v2/Users", None, token).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, None);
    }
    let r = sb.send(Method::GET, "/scim/v2/Nope", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sb.get("/scim/v2/Users").await.status, StatusCode::OK);

    // `new()` accepts any non-empty token.
    let open = Sandbox {
        app: router(SandboxState::new()),
        state: SandboxState::new(),
    };
    assert_eq!(
        open.send(Method::GET, "/scim/v2/Users", None, Some("anything"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        open.send(Method::GET, "/scim/v2/Users", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn counts_every_request() {
    let sb = Sandbox::new();
    sb.send(Method::GET, "/scim/v2/Users", None, None).await;
    sb.get("/scim/v2/Users").await;
    sb.get("/scim/v2/Nope").await;
    assert_eq!(sb.state.requests(), 3);
}

#[tokio::test]
async fn creates_and_gets_a_user_with_all_attributes() {
    let sb = Sandbox::new();
    let body = json!({
        "schemas": [schema::USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
        "userName": "bjensen@example.com",
        "externalId": "ext-1",
        "active": true,
        "displayName": "Babs Jensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Barbara Jensen"},
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
        "title": "Tour Guide",
        ENTERPRISE_USER_SCHEMA: {"employeeNumber": "701984", "department": "Tour Operations"},
        "id": "client-chosen",
    });
    let r = sb.post("/scim/v2/Users", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "client-chosen", "id is server-assigned");
    assert_eq!(id.len(), 36);
    let location = format!("http://sandbox.test/scim/v2/Users/{id}");
    assert_eq!(r.headers.get(header::LOCATION).unwrap(), location.as_str());
    assert_eq!(r.body["meta"]["location"], json!(location));
    assert_eq!(r.body["meta"]["resourceType"], json!("User"));
    assert!(r.body["meta"]["created"].is_string());
    assert!(r.body["meta"]["lastModified"].is_string());
    assert!(r.body["meta"]["version"].is_string());

    let got = sb.get(&format!("/scim/v2/Users/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, r.body);
    assert_eq!(got.body["name"]["givenName"], json!("Barbara"));
    assert_eq!(got.body["emails"][0]["type"], json!("work"));
    assert_eq!(
        got.body[ENTERPRISE_USER_SCHEMA]["employeeNumber"],
        json!("701984")
    );
    assert_eq!(
        got.body["schemas"],
        json!([schema::USER_SCHEMA, ENTERPRISE_USER_SCHEMA])
    );
    assert_eq!(sb.state.user_count(), 1);
    assert_eq!(
        sb.state.users()[0]["userName"],
        json!("bjensen@example.com")
    );
}

#[tokio::test]
async fn user_name_is_required_and_unique_case_insensitively() {
    let sb = Sandbox::new();
    let r = sb.post("/scim/v2/Users", json!({"displayName": "x"})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("invalidValue"));
    sb.user("Alice@Example.com").await;
    let r = sb
        .post("/scim/v2/Users", json!({"userName": "alice@example.COM"}))
        .await;
    assert_error(&r, StatusCode::CONFLICT, Some("uniqueness"));
    assert_eq!(sb.state.user_count(), 1);
}

#[tokio::test]
async fn unknown_ids_give_404() {
    let sb = Sandbox::new();
    for uri in ["/scim/v2/Users/nope", "/scim/v2/Groups/nope"] {
        assert_error(&sb.get(uri).await, StatusCode::NOT_FOUND, None);
        assert_error(&sb.delete(uri).await, StatusCode::NOT_FOUND, None);
        let r = sb
            .patch(
                uri,
                json!([{"op": "replace", "path": "displayName", "value": "x"}]),
            )
            .await;
        assert_error(&r, StatusCode::NOT_FOUND, None);
        let r = sb
            .put(uri, json!({"userName": "x", "displayName": "x"}))
            .await;
        assert_error(&r, StatusCode::NOT_FOUND, None);
    }
}

#[tokio::test]
async fn rejects_bad_bodies() {
    let sb = Sandbox::new();
    let req = Request::post("/scim/v2/Users")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"userName":"a"}"#))
        .unwrap();
    let resp = sb.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let req = Request::post("/scim/v2/Users")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = sb.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["scimType"], json!("invalidSyntax"));

    // Bodies over the 16 MiB limit get a SCIM 413.
    let big = format!(r#"{{"userName":"{}"}}"#, "x".repeat(MAX_BODY_BYTES + 1));
    let req = Request::post("/scim/v2/Users")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/scim+json")
        .body(Body::from(big))
        .unwrap();
    let resp = sb.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/scim+json"
    );

    // application/json is accepted like application/scim+json.
    let req = Request::post("/scim/v2/Users")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(r#"{"userName":"a"}"#))
        .unwrap();
    let resp = sb.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn filters_with_escaped_values_and_indexes() {
    let sb = Sandbox::new();
    let quote = sb.user(r#"o"brien"#).await;
    let backslash = sb.user(r"dom\user").await;
    let plain = sb.user("plain").await;
    let r = sb
        .patch(
            &format!("/scim/v2/Users/{plain}"),
            json!([{"op": "add", "value": {
                "externalId": "E-1",
                "displayName": "Plain Person",
                "emails": [{"type": "work", "value": "Plain@Example.com"}]
            }}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    assert_eq!(
        sb.find_users(r#"userName eq "o\"brien""#).await,
        vec![quote.clone()]
    );
    assert_eq!(
        sb.find_users(r#"userName eq "O\"BRIEN""#).await,
        vec![quote.clone()]
    );
    assert_eq!(
        sb.find_users(r#"UserName EQ "dom\\user""#).await,
        vec![backslash]
    );
    assert_eq!(
        sb.find_users(r#"userName eq "nobody""#).await,
        Vec::<String>::new()
    );
    assert_eq!(
        sb.find_users(r#"externalId eq "E-1""#).await,
        vec![plain.clone()]
    );
    assert_eq!(
        sb.find_users(r#"externalId eq "e-1""#).await,
        Vec::<String>::new()
    );
    assert_eq!(
        sb.find_users(r#"displayName eq "plain person""#).await,
        vec![plain.clone()]
    );
    assert_eq!(
        sb.find_users(&format!("id eq \"{quote}\"")).await,
        vec![quote]
    );
    assert_eq!(
        sb.find_users(r#"emails.value eq "plain@example.com""#)
            .await,
        vec![plain.clone()]
    );
    assert_eq!(
        sb.find_users(r#"emails[type eq "work"].value eq "plain@example.com""#)
            .await,
        vec![plain.clone()]
    );
    assert_eq!(
        sb.find_users(r#"emails[type eq "home"].value eq "plain@example.com""#)
            .await,
        Vec::<String>::new()
    );
    assert_eq!(
        sb.find_users(r#"userName eq "plain" and externalId eq "E-1""#)
            .await,
        vec![plain.clone()]
    );
    assert_eq!(
        sb.find_users(r#"userName eq "plain" and externalId eq "E-2""#)
            .await,
        Vec::<String>::new()
    );

    for bad in [
        r#"userName sw "o""#,
        r#"userName eq "a" or userName eq "b""#,
        r#"title eq "x""#,
        "userName eq",
    ] {
        let r = sb
            .get(&format!("/scim/v2/Users?filter={}", encode(bad)))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, Some("invalidFilter"));
    }
}

#[tokio::test]
async fn pages_with_start_index_and_count() {
    let sb = Sandbox::new();
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(sb.user(&format!("user{i:02}")).await);
    }
    sb.delete(&format!("/scim/v2/Users/{}", ids.remove(3)))
        .await;

    let r = sb.get("/scim/v2/Users?startIndex=21&count=10").await;
    assert_eq!(r.body["totalResults"], json!(24));
    assert_eq!(r.body["startIndex"], json!(21));
    assert_eq!(r.body["itemsPerPage"], json!(4));
    let page: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        page,
        ids[20..].iter().map(String::as_str).collect::<Vec<_>>()
    );

    // A full walk sees every user exactly once, in creation order.
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let r = sb
            .get(&format!("/scim/v2/Users?startIndex={start}&count=7"))
            .await;
        let items = r.body["Resources"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        start += items.len();
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, ids);

    let r = sb.get("/scim/v2/Users?count=0").await;
    assert_eq!(r.body["totalResults"], json!(24));
    assert_eq!(r.body["Resources"], json!([]));
    let r = sb.get("/scim/v2/Users?startIndex=0&count=-5").await;
    assert_eq!(r.body["startIndex"], json!(1));
    assert_eq!(r.body["itemsPerPage"], json!(0));
    let r = sb.get("/scim/v2/Users?startIndex=100").await;
    assert_eq!(r.body["Resources"], json!([]));
    let r = sb.get("/scim/v2/Users?count=abc").await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("invalidValue"));
}

#[tokio::test]
async fn caps_page_size_at_max_results() {
    let state = SandboxState::new();
    {
        let mut store = state.store();
        for i in 0..MAX_RESULTS + 5 {
            store
                .create(Kind::User, json!({"userName": format!("u{i}")}))
                .unwrap();
        }
    }
    let sb = Sandbox {
        app: router(state.clone()),
        state,
    };
    let r = sb.get("/scim/v2/Users?count=5000").await;
    assert_eq!(r.body["totalResults"], json!(MAX_RESULTS + 5));
    assert_eq!(r.body["itemsPerPage"], json!(MAX_RESULTS));
    let r = sb.get("/scim/v2/Users").await;
    assert_eq!(r.body["itemsPerPage"], json!(DEFAULT_COUNT));
}

#[tokio::test]
async fn patches_users_in_every_supported_form() {
    let sb = Sandbox::new();
    let id = sb.user("pat").await;
    let uri = format!("/scim/v2/Users/{id}");
    let r = sb
        .patch(
            &uri,
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "pat@work.example"},
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Finance"},
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "add", "path": "name.givenName", "value": "Pat"},
                {"op": "replace", "path": "title", "value": "Boss"},
                {"op": "replace", "value": {"displayName": "Pat P", "name": {"familyName": "P"}}},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let u = &r.body;
    assert_eq!(
        u["emails"],
        json!([{"type": "work", "value": "pat@work.example", "primary": true}])
    );
    assert_eq!(u[ENTERPRISE_USER_SCHEMA]["department"], json!("Finance"));
    assert!(
        u["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(ENTERPRISE_USER_SCHEMA))
    );
    assert_eq!(u["active"], json!(false));
    assert_eq!(u["name"], json!({"givenName": "Pat", "familyName": "P"}));
    assert_eq!(u["title"], json!("Boss"));
    assert_eq!(u["displayName"], json!("Pat P"));
    assert_eq!(u["meta"]["version"], json!("W/\"2\""));
    assert_eq!(
        sb.get(&uri).await.body,
        r.body,
        "PATCH answer is the stored resource"
    );

    // The email index follows the PATCH.
    let f = encode(r#"emails[type eq "work"].value eq "pat@work.example""#);
    let r = sb.get(&format!("/scim/v2/Users?filter={f}")).await;
    assert_eq!(r.body["totalResults"], json!(1));

    let r = sb
        .patch(
            &uri,
            json!([
                {"op": "replace", "path": "active", "value": "True"},
                {"op": "remove", "path": "title"},
                {"op": "remove", "path": "emails[type eq \"work\"]"},
            ]),
        )
        .await;
    assert_eq!(r.body["active"], json!(true));
    assert!(r.body.get("title").is_none());
    assert!(r.body.get("emails").is_none());

    // Errors leave the user unchanged.
    let before = sb.get(&uri).await.body;
    let cases = [
        (
            json!([{"op": "replace", "path": "shoeSize", "value": 1}]),
            "invalidPath",
        ),
        (json!([{"op": "remove"}]), "noTarget"),
        (
            json!([{"op": "replace", "path": "active", "value": "maybe"}]),
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            "mutability",
        ),
        (
            json!([{"op": "remove", "path": "userName"}]),
            "invalidValue",
        ),
        (
            json!([
                {"op": "replace", "path": "title", "value": "changed"},
                {"op": "replace", "path": "urn:example:unknown:2.0:User:x", "value": 1},
            ]),
            "invalidPath",
        ),
    ];
    for (ops, scim_type) in cases {
        let r = sb.patch(&uri, ops.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, Some(scim_type));
    }
    assert_eq!(sb.get(&uri).await.body, before);

    let r = sb
        .send(
            Method::PATCH,
            &uri,
            Some(json!({"Operations": [{"op": "remove", "path": "title"}]})),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("invalidSyntax"));
}

#[tokio::test]
async fn put_and_patch_keep_user_names_unique() {
    let sb = Sandbox::new();
    let a = sb.user("alpha").await;
    let b = sb.user("beta").await;
    let r = sb
        .patch(
            &format!("/scim/v2/Users/{b}"),
            json!([{"op": "replace", "path": "userName", "value": "ALPHA"}]),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, Some("uniqueness"));
    let r = sb
        .put(&format!("/scim/v2/Users/{b}"), json!({"userName": "Alpha"}))
        .await;
    assert_error(&r, StatusCode::CONFLICT, Some("uniqueness"));

    // Renaming to a new name frees the old one; a PUT replaces everything but id/meta.
    let created = sb.get(&format!("/scim/v2/Users/{a}")).await.body;
    let r = sb
        .put(
            &format!("/scim/v2/Users/{a}"),
            json!({"userName": "Alpha2", "title": "T", "id": "other"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], json!(a));
    assert_eq!(r.body["title"], json!("T"));
    assert_eq!(r.body["meta"]["created"], created["meta"]["created"]);
    let r = sb
        .patch(
            &format!("/scim/v2/Users/{b}"),
            json!([{"op": "replace", "path": "userName", "value": "alpha"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let f = encode(r#"userName eq "alpha""#);
    let r = sb.get(&format!("/scim/v2/Users?filter={f}")).await;
    assert_eq!(r.body["Resources"][0]["id"], json!(b));
}

#[tokio::test]
async fn groups_store_members_and_patch_answers_204() {
    let sb = Sandbox::new();
    let u1 = sb.user("u1").await;
    let u2 = sb.user("u2").await;
    let u3 = sb.user("u3").await;
    let gid = sb.group("Admins", &[&u1]).await;
    let uri = format!("/scim/v2/Groups/{gid}");

    let g = sb.get(&uri).await.body;
    assert_eq!(g["displayName"], json!("Admins"));
    assert_eq!(
        g["members"],
        json!([{
            "value": u1,
            "display": "u1",
            "type": "User",
            "$ref": format!("http://sandbox.test/scim/v2/Users/{u1}")
        }])
    );
    let r = sb.get(&format!("{uri}?excludedAttributes=members")).await;
    assert!(r.body.get("members").is_none());
    assert_eq!(r.body["displayName"], json!("Admins"));
    // The user shows its groups.
    let u = sb.get(&format!("/scim/v2/Users/{u1}")).await.body;
    assert_eq!(u["groups"][0]["value"], json!(gid));

    // add (an existing member is a no-op)
    let r = sb
        .patch(
            &uri,
            json!([{"op": "Add", "path": "members", "value": [{"value": u1}, {"value": u2}, {"value": u3}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    assert_eq!(
        sb.member_ids(&gid).await,
        sorted(vec![u1.clone(), u2.clone(), u3.clone()])
    );

    // RFC form: members[value eq "id"]; an absent member is a success too.
    let r = sb
        .patch(
            &uri,
            json!([
                {"op": "remove", "path": format!("members[value eq {}]", json!(u1))},
                {"op": "remove", "path": "members[value eq \"not-a-member\"]"},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        sb.member_ids(&gid).await,
        sorted(vec![u2.clone(), u3.clone()])
    );

    // Entra/AWS form: path members with a value list.
    let r = sb
        .patch(
            &uri,
            json!([{"op": "Remove", "path": "members", "value": [{"value": u2}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(sb.member_ids(&gid).await, vec![u3.clone()]);

    // replace, then remove all.
    let r = sb
        .patch(
            &uri,
            json!([{"op": "replace", "path": "members", "value": [{"value": u1}, {"value": u2}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        sb.member_ids(&gid).await,
        sorted(vec![u1.clone(), u2.clone()])
    );
    let r = sb
        .patch(&uri, json!([{"op": "remove", "path": "members"}]))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(sb.member_ids(&gid).await.is_empty());
    let u = sb.get(&format!("/scim/v2/Users/{u1}")).await.body;
    assert!(u.get("groups").is_none());

    // Unknown members are refused and change nothing.
    let r = sb
        .patch(
            &uri,
            json!([
                {"op": "add", "path": "members", "value": [{"value": u1}]},
                {"op": "add", "path": "members", "value": [{"value": "ghost"}]},
            ]),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("invalidValue"));
    assert!(sb.member_ids(&gid).await.is_empty());

    // displayName rename through PATCH, and a path-less replace with members.
    let r = sb
        .patch(
            &uri,
            json!([{"op": "replace", "value": {"displayName": "Admins 2", "members": [{"value": u3}]}}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let g = sb.get(&uri).await.body;
    assert_eq!(g["displayName"], json!("Admins 2"));
    assert_eq!(sb.member_ids(&gid).await, vec![u3.clone()]);
    assert_eq!(sb.state.groups()[0]["members"][0]["value"], json!(u3));

    // Filter groups by displayName and by member.
    let f = encode(r#"displayName eq "admins 2""#);
    let r = sb.get(&format!("/scim/v2/Groups?filter={f}")).await;
    assert_eq!(r.body["Resources"][0]["id"], json!(gid));
    let f = encode(&format!("members.value eq {}", json!(u3)));
    let r = sb
        .get(&format!(
            "/scim/v2/Groups?filter={f}&excludedAttributes=members"
        ))
        .await;
    assert_eq!(r.body["totalResults"], json!(1));
    assert!(r.body["Resources"][0].get("members").is_none());
}

#[tokio::test]
async fn group_names_are_unique_and_members_must_exist() {
    let sb = Sandbox::new();
    let g1 = sb.group("Sales", &[]).await;
    let r = sb
        .post("/scim/v2/Groups", json!({"displayName": "SALES"}))
        .await;
    assert_error(&r, StatusCode::CONFLICT, Some("uniqueness"));
    let r = sb.post("/scim/v2/Groups", json!({"members": []})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("invalidValue"));
    let r = sb
        .post(
            "/scim/v2/Groups",
            json!({"displayName": "Other", "members": [{"value": "ghost"}]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("invalidValue"));
    let g2 = sb.group("Other", &[]).await;
    let r = sb
        .patch(
            &format!("/scim/v2/Groups/{g2}"),
            json!([{"op": "replace", "path": "displayName", "value": "sales"}]),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, Some("uniqueness"));
    let r = sb
        .put(
            &format!("/scim/v2/Groups/{g2}"),
            json!({"displayName": "Sales"}),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, Some("uniqueness"));

    // PUT replaces members.
    let u = sb.user("m").await;
    let r = sb
        .put(
            &format!("/scim/v2/Groups/{g1}"),
            json!({"displayName": "Sales", "members": [{"value": u}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["members"][0]["value"], json!(u));
    assert_eq!(sb.state.group_count(), 2);
}

#[tokio::test]
async fn deleting_a_user_removes_it_from_every_group() {
    let sb = Sandbox::new();
    let u1 = sb.user("u1").await;
    let u2 = sb.user("u2").await;
    let g1 = sb.group("G1", &[&u1, &u2]).await;
    let g2 = sb.group("G2", &[&u1]).await;
    let r = sb.delete(&format!("/scim/v2/Users/{u1}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    assert_error(
        &sb.get(&format!("/scim/v2/Users/{u1}")).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_eq!(sb.member_ids(&g1).await, vec![u2.clone()]);
    assert!(sb.member_ids(&g2).await.is_empty());
    let f = encode(&format!("members.value eq {}", json!(u1)));
    let r = sb.get(&format!("/scim/v2/Groups?filter={f}")).await;
    assert_eq!(r.body["totalResults"], json!(0));

    // Deleting a group clears the users' group lists.
    assert_eq!(
        sb.delete(&format!("/scim/v2/Groups/{g1}")).await.status,
        StatusCode::NO_CONTENT
    );
    let u = sb.get(&format!("/scim/v2/Users/{u2}")).await.body;
    assert!(u.get("groups").is_none());
    assert_eq!(sb.state.user_count(), 1);
    assert_eq!(sb.state.group_count(), 1);
    assert_eq!(
        sb.get("/scim/v2/Groups").await.body["totalResults"],
        json!(1)
    );
}

#[tokio::test]
async fn serves_discovery_documents() {
    let sb = Sandbox::new();
    let r = sb.get("/scim/v2/ServiceProviderConfig").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["patch"]["supported"], json!(true));
    assert_eq!(r.body["filter"]["supported"], json!(true));
    assert_eq!(r.body["filter"]["maxResults"], json!(MAX_RESULTS));
    assert_eq!(r.body["bulk"]["supported"], json!(false));
    assert_eq!(r.body["etag"]["supported"], json!(false));
    assert_eq!(r.body["sort"]["supported"], json!(false));
    assert_eq!(
        r.body["authenticationSchemes"][0]["type"],
        json!("oauthbearertoken")
    );
    for (uri, n) in [("/scim/v2/ResourceTypes", 2), ("/scim/v2/Schemas", 3)] {
        let r = sb.get(uri).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["totalResults"], json!(n));
        assert_eq!(r.body["Resources"].as_array().unwrap().len(), n);
    }
    let r = sb
        .send(Method::DELETE, "/scim/v2/Schemas", None, Some(TOKEN))
        .await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, None);
    assert_error(&sb.get("/scim/v2/Nope").await, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn serves_each_discovery_document_at_its_meta_location() {
    let sb = Sandbox::new();
    for list in ["/scim/v2/ResourceTypes", "/scim/v2/Schemas"] {
        let r = sb.get(list).await;
        for item in r.body["Resources"].as_array().unwrap() {
            let location = item["meta"]["location"].as_str().unwrap();
            let path = location.strip_prefix("http://sandbox.test").unwrap();
            let got = sb.get(path).await;
            assert_eq!(got.status, StatusCode::OK, "{path}: {}", got.body);
            assert_eq!(&got.body, item, "{path}");
        }
    }
    // The generic app declares the enterprise extension, so a sandbox without it differs.
    let r = sb.get("/scim/v2/ResourceTypes/User").await;
    assert_eq!(
        r.body["schemaExtensions"],
        json!([{"schema": ENTERPRISE_USER_SCHEMA, "required": false}])
    );
    let r = sb
        .get(&format!("/scim/v2/Schemas/{ENTERPRISE_USER_SCHEMA}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], json!(ENTERPRISE_USER_SCHEMA));
    for unknown in [
        "/scim/v2/ResourceTypes/Device",
        "/scim/v2/Schemas/urn:example:nope",
    ] {
        assert_error(&sb.get(unknown).await, StatusCode::NOT_FOUND, None);
    }
}

#[tokio::test]
async fn handle_serves_over_tcp_and_shuts_down() {
    let handle = SandboxHandle::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxState::with_token(TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(
        handle.base_url(),
        format!("http://{}/scim/v2", handle.addr())
    );
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/Users", handle.base_url()))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "application/scim+json")
        .body(json!({"userName": "tcp"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with(handle.base_url())
    );
    assert_eq!(handle.state().user_count(), 1);
    assert_eq!(handle.state().requests(), 1);
    assert!(
        handle.state().users()[0]["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with(handle.base_url())
    );
    let addr = handle.addr();
    tokio::time::timeout(std::time::Duration::from_secs(10), handle.shutdown())
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
#[ignore = "timing probe; run with --ignored"]
async fn paged_walk_over_many_users_is_linear() {
    let state = SandboxState::new();
    {
        let mut store = state.store();
        for i in 0..100_000 {
            store
                .create(Kind::User, json!({"userName": format!("u{i}")}))
                .unwrap();
        }
    }
    let sb = Sandbox {
        app: router(state.clone()),
        state,
    };
    let t = std::time::Instant::now();
    let mut start = 1;
    let mut seen = 0;
    loop {
        let r = sb
            .get(&format!("/scim/v2/Users?startIndex={start}&count=1000"))
            .await;
        let n = r.body["Resources"].as_array().unwrap().len();
        if n == 0 {
            break;
        }
        seen += n;
        start += n;
    }
    assert_eq!(seen, 100_000);
    eprintln!("walked 100k users in {:?}", t.elapsed());
}

#[tokio::test(start_paused = true)]
async fn with_latency_every_answer_waits_the_latency_plus_part_of_the_jitter() {
    let ms = Duration::from_millis;
    let state = SandboxState::with_token(TOKEN).with_latency(ms(50), ms(10));
    let sb = Sandbox {
        app: router(state.clone()),
        state,
    };
    for _ in 0..20 {
        let started = tokio::time::Instant::now();
        let r = sb.get("/scim/v2/Users").await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::OK);
        assert!(took >= ms(50) && took <= ms(60), "{took:?}");
    }
    // A refused request pays the same round trip.
    let started = tokio::time::Instant::now();
    let r = sb.send(Method::GET, "/scim/v2/Users", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(started.elapsed() >= ms(50));
    // Without latency, no wait at all.
    let plain = Sandbox::new();
    let started = tokio::time::Instant::now();
    plain.get("/scim/v2/Users").await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn without_enterprise_declares_no_extension() {
    let sb = Sandbox::of(SandboxState::with_token(TOKEN).without_enterprise());
    let r = sb.get("/scim/v2/ResourceTypes").await;
    let user = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == json!("User"))
        .unwrap();
    assert_eq!(user["schemaExtensions"], json!([]));
    let r = sb.get("/scim/v2/ResourceTypes/User").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["schemaExtensions"], json!([]));

    let r = sb.get("/scim/v2/Schemas").await;
    let ids: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [schema::USER_SCHEMA, schema::GROUP_SCHEMA]);
    assert_eq!(r.body["totalResults"], json!(2));
    let r = sb
        .get(&format!("/scim/v2/Schemas/{ENTERPRISE_USER_SCHEMA}"))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    let r = sb
        .get(&format!("/scim/v2/Schemas/{}", schema::USER_SCHEMA))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The refusal of an app without the enterprise extension.
fn assert_enterprise_refused(r: &Reply) {
    assert_error(r, StatusCode::BAD_REQUEST, Some("invalidValue"));
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "Extra inputs are not permitted: {ENTERPRISE_USER_SCHEMA}"
        )),
        "{detail}"
    );
}

#[tokio::test]
async fn without_enterprise_refuses_writes_carrying_it_and_stores_nothing() {
    let sb = Sandbox::of(SandboxState::with_token(TOKEN).without_enterprise());
    let plain = json!({"schemas": [schema::USER_SCHEMA], "userName": "ann", "title": "T"});
    let with = |key: &str, value: Value| {
        let mut body = plain.clone();
        body[key] = value;
        body
    };
    let refused = [
        with(ENTERPRISE_USER_SCHEMA, json!({"department": "R&D"})),
        with(
            &ENTERPRISE_USER_SCHEMA.to_lowercase(),
            json!({"department": "R&D"}),
        ),
        with(
            &format!("{ENTERPRISE_USER_SCHEMA}:department"),
            json!("R&D"),
        ),
        with(
            "schemas",
            json!([schema::USER_SCHEMA, ENTERPRISE_USER_SCHEMA]),
        ),
    ];
    for body in &refused {
        let r = sb.post("/scim/v2/Users", body.clone()).await;
        assert_enterprise_refused(&r);
        assert_eq!(sb.state.user_count(), 0, "{body}");
    }
    let r = sb.post("/scim/v2/Users", plain.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let uri = format!("/scim/v2/Users/{}", r.body["id"].as_str().unwrap());
    let stored = sb.get(&uri).await.body;

    for body in &refused {
        let r = sb.put(&uri, body.clone()).await;
        assert_enterprise_refused(&r);
    }
    let patches = [
        json!([{"op": "add", "path": format!("{ENTERPRISE_USER_SCHEMA}:department"), "value": "R&D"}]),
        json!([{"op": "replace", "path": ENTERPRISE_USER_SCHEMA, "value": {"department": "R&D"}}]),
        json!([{"op": "remove", "path": format!("{ENTERPRISE_USER_SCHEMA}:manager")}]),
        json!([
            {"op": "replace", "path": "title", "value": "changed"},
            {"op": "replace", "value": {ENTERPRISE_USER_SCHEMA: {"employeeNumber": "7"}}},
        ]),
        json!([{"op": "replace", "value": {schema::USER_SCHEMA: {
            ENTERPRISE_USER_SCHEMA.to_uppercase(): {"employeeNumber": "7"}
        }}}]),
    ];
    for ops in patches {
        let r = sb.patch(&uri, ops).await;
        assert_enterprise_refused(&r);
    }
    assert_eq!(sb.get(&uri).await.body, stored, "refusals change nothing");
    assert_eq!(stored["title"], json!("T"));

    // Writes without the extension still work.
    let r = sb
        .patch(
            &uri,
            json!([{"op": "replace", "path": "title", "value": "T2"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["title"], json!("T2"));
    let r = sb.put(&uri, plain).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn dropping_discards_the_attribute_on_every_write_and_still_declares_it() {
    let sb = Sandbox::of(SandboxState::with_token(TOKEN).dropping(["displayName"]));
    let r = sb
        .post(
            "/scim/v2/Users",
            json!({
                "userName": "dee",
                "displayName": "Dee D",
                "title": "Boss",
                "name": {"givenName": "Dee"},
                "emails": [{"value": "dee@example.com", "type": "work"}],
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body.get("displayName").is_none(), "{}", r.body);
    assert_eq!(r.body["title"], json!("Boss"));
    assert_eq!(r.body["name"]["givenName"], json!("Dee"));
    assert_eq!(r.body["emails"][0]["value"], json!("dee@example.com"));
    let uri = format!("/scim/v2/Users/{}", r.body["id"].as_str().unwrap());
    assert_eq!(sb.get(&uri).await.body, r.body, "GET shows it as stored");
    let list = sb.get("/scim/v2/Users").await.body;
    assert!(list["Resources"][0].get("displayName").is_none());
    assert!(sb.find_users(r#"displayName eq "Dee D""#).await.is_empty());
    assert!(sb.state.users()[0].get("displayName").is_none());

    let r = sb
        .patch(
            &uri,
            json!([{"op": "replace", "path": "displayName", "value": "Dee 2"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.get("displayName").is_none(), "{}", r.body);
    let r = sb
        .patch(
            &uri,
            json!([{"op": "add", "value": {"DisplayName": "Dee 3", "nickName": "D"}}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.get("displayName").is_none(), "{}", r.body);
    assert!(r.body.get("DisplayName").is_none(), "{}", r.body);
    assert_eq!(r.body["nickName"], json!("D"));
    assert_eq!(r.body["title"], json!("Boss"));

    let r = sb
        .put(
            &uri,
            json!({"userName": "dee", "DISPLAYNAME": "Dee 4", "title": "Chief"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.get("displayName").is_none(), "{}", r.body);
    assert!(r.body.get("DISPLAYNAME").is_none(), "{}", r.body);
    assert_eq!(r.body["title"], json!("Chief"));
    assert_eq!(sb.get(&uri).await.body, r.body);

    // Declared as usual; groups keep their displayName.
    let r = sb
        .get(&format!("/scim/v2/Schemas/{}", schema::USER_SCHEMA))
        .await;
    assert!(
        r.body["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == json!("displayName"))
    );
    let gid = sb.group("Keeps its name", &[]).await;
    let g = sb.get(&format!("/scim/v2/Groups/{gid}")).await.body;
    assert_eq!(g["displayName"], json!("Keeps its name"));
}

#[tokio::test]
async fn default_sandbox_stores_display_name() {
    let sb = Sandbox::new();
    let r = sb
        .post(
            "/scim/v2/Users",
            json!({"userName": "eve", "displayName": "Eve E"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["displayName"], json!("Eve E"));
}

#[test]
fn only_writable_core_user_attributes_can_be_dropped() {
    assert_eq!(droppable_attribute("DISPLAYNAME"), Ok("displayName"));
    assert_eq!(droppable_attribute("nickname"), Ok("nickName"));
    for kept in [
        "userName", "id", "Active", "schemas", "meta", "groups", "shoeSize", "",
    ] {
        let why = droppable_attribute(kept).unwrap_err();
        assert!(why.to_lowercase().contains(&kept.to_lowercase()), "{why}");
    }
}

#[tokio::test]
async fn dropping_ignores_attributes_that_are_always_stored() {
    let sb = Sandbox::of(SandboxState::with_token(TOKEN).dropping(["userName", "active", "title"]));
    let r = sb
        .post(
            "/scim/v2/Users",
            json!({"userName": "fay", "active": false, "title": "T"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["userName"], json!("fay"));
    assert_eq!(r.body["active"], json!(false));
    assert!(r.body.get("title").is_none(), "{}", r.body);
}

#[tokio::test(start_paused = true)]
async fn quirks_combine_with_each_other_and_with_token_and_latency() {
    let ms = Duration::from_millis;
    let state = SandboxState::with_token(TOKEN)
        .with_latency(ms(50), Duration::ZERO)
        .without_enterprise()
        .dropping(["title"])
        .dropping(["nickName"]);
    let sb = Sandbox::of(state);
    let r = sb
        .send(Method::GET, "/scim/v2/Users", None, Some("wrong"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let started = tokio::time::Instant::now();
    let r = sb
        .post(
            "/scim/v2/Users",
            json!({"userName": "gil", "title": "T", ENTERPRISE_USER_SCHEMA: {"department": "D"}}),
        )
        .await;
    assert!(started.elapsed() >= ms(50));
    assert_enterprise_refused(&r);
    let r = sb
        .post(
            "/scim/v2/Users",
            json!({"userName": "gil", "title": "T", "nickName": "G", "displayName": "Gil"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body.get("title").is_none(), "{}", r.body);
    assert!(r.body.get("nickName").is_none(), "{}", r.body);
    assert_eq!(r.body["displayName"], json!("Gil"));
}
