//! End-to-end: the engine against the built-in sandbox SCIM app on loopback, through the same
//! `Engine::cycle` every command uses. Each test checks the app's own state, not just reports.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use scim_sync::config::{AppConfig, Config, Secret};
use scim_sync::engine::{App, AppCycle, CycleOptions, Engine};
use scim_sync::model::{Directory, SourceGroup, SourceId, SourceUser};
use scim_sync::report::{Outcome, Reason};
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::source::{FileSource, MemorySource, Source};
use scim_sync::store::Store;

const TOKEN: &str = "e2e-token";

/// A sandbox, a store in a temporary folder, and an engine over a source.
struct World {
    sandbox: SandboxHandle,
    store: Store,
    _tmp: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        World::on(SandboxState::with_token(TOKEN)).await
    }

    /// A world whose app is this sandbox (built with [`TOKEN`]).
    async fn on(state: SandboxState) -> World {
        let sandbox = SandboxHandle::start(([127, 0, 0, 1], 0).into(), state)
            .await
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&format!(
            "sqlite://{}",
            tmp.path().join("state.db").display()
        ))
        .await
        .unwrap();
        World {
            sandbox,
            store,
            _tmp: tmp,
        }
    }

    /// An app on the sandbox, configured from TOML like a user would (`extra` adds keys).
    fn app(&self, groups: &[&str], extra: &str) -> App {
        App::new(
            app_cfg(self.sandbox.base_url(), groups, extra),
            &Secret::new(TOKEN),
        )
        .unwrap()
    }

    fn engine(&self, source: impl Source + 'static) -> Engine {
        Engine::new(Arc::new(source), self.store.clone())
    }

    fn state(&self) -> &SandboxState {
        self.sandbox.state()
    }

    fn user(&self, user_name: &str) -> Option<Value> {
        self.state().users().into_iter().find(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        })
    }

    fn group(&self, name: &str) -> Option<Value> {
        self.state()
            .groups()
            .into_iter()
            .find(|g| g["displayName"] == name)
    }

    /// userNames of a group's members, sorted.
    fn members(&self, group: &str) -> Vec<String> {
        let Some(g) = self.group(group) else {
            return vec![];
        };
        let users = self.state().users();
        let mut out: Vec<String> = g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| users.iter().find(|u| u["id"] == m["value"]))
            .map(|u| u["userName"].as_str().unwrap().to_lowercase())
            .collect();
        out.sort();
        out
    }
}

fn app_cfg(base_url: &str, groups: &[&str], extra: &str) -> AppConfig {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"e2e\"\nbase_url = \"{base_url}\"\ntoken_env = \"E2E_TOKEN\"\ngroups = {groups:?}\n{extra}\n"
    );
    Config::parse(Path::new("e2e.toml"), &text)
        .unwrap()
        .apps
        .remove(0)
}

async fn cycle(engine: &Engine, app: &App) -> AppCycle {
    cycle_with(engine, app, false).await
}

async fn cycle_with(engine: &Engine, app: &App, dry_run: bool) -> AppCycle {
    run_cycle(engine, app, dry_run, false).await
}

async fn run_cycle(engine: &Engine, app: &App, dry_run: bool, verify: bool) -> AppCycle {
    let mut run = engine
        .cycle(
            std::slice::from_ref(app),
            CycleOptions {
                reason: Reason::SyncNow,
                dry_run,
                progress: false,
                verify,
            },
        )
        .await;
    run.apps.remove(0)
}

fn user(id: &str, upn: &str, enabled: bool) -> SourceUser {
    let (given, family) = upn
        .split_once('@')
        .map_or((upn, "X"), |(l, _)| (l, "Family"));
    let attrs = json!({
        "userPrincipalName": upn, "displayName": format!("{given} {family}"), "givenName": given,
        "surname": family, "mail": upn, "accountEnabled": enabled, "jobTitle": "Engineer",
        "department": "R&D", "employeeId": format!("E-{id}")
    });
    SourceUser {
        id: id.into(),
        attrs: scim_sync::model::attrs_from_json(attrs),
    }
}

fn group(id: &str, name: &str, members: &[&str]) -> SourceGroup {
    SourceGroup {
        id: id.into(),
        display_name: name.into(),
        members: members.iter().map(|m| SourceId::from(*m)).collect(),
        eligible: vec![],
    }
}

/// Five users; g-team has three of them, g-all has all five.
fn directory() -> Directory {
    let mut d = Directory::default();
    for (i, n) in ["alice", "bob", "carol", "dan", "erin"].iter().enumerate() {
        let u = user(&format!("u{i}"), &format!("{n}@contoso.example"), true);
        d.users.insert(u.id.clone(), u);
    }
    d.groups.insert(
        "g-team".into(),
        group("g-team", "Team", &["u0", "u1", "u2"]),
    );
    d.groups.insert(
        "g-all".into(),
        group("g-all", "All", &["u0", "u1", "u2", "u3", "u4"]),
    );
    d.groups
        .insert("g-other".into(), group("g-other", "Other", &["u4"]));
    d
}

fn set(d: &mut Directory, id: &str, attr: &str, v: Value) {
    d.users
        .get_mut(&SourceId::from(id))
        .unwrap()
        .attrs
        .insert(attr.into(), v);
}

#[tokio::test]
async fn initial_sync_matches_the_directory_and_a_second_run_sends_nothing() {
    let w = World::new().await;
    let engine = w.engine(MemorySource::new(directory()));
    let app = w.app(&["g-team"], "");
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(
        (
            c.report.users_created,
            c.report.groups_created,
            c.report.members_added
        ),
        (3, 1, 3)
    );
    assert_eq!(w.state().user_count(), 3);
    assert_eq!(
        w.members("Team"),
        [
            "alice@contoso.example",
            "bob@contoso.example",
            "carol@contoso.example"
        ]
    );
    let alice = w.user("alice@contoso.example").unwrap();
    assert_eq!(alice["externalId"], "u0");
    assert_eq!(alice["active"], true);
    assert_eq!(alice["name"]["givenName"], "alice");
    assert_eq!(alice["emails"][0]["value"], "alice@contoso.example");
    assert_eq!(
        alice["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"],
        "E-u0"
    );
    // The report's request count is exact: it equals what the app served.
    assert_eq!(c.report.requests, w.state().requests());

    let served = w.state().requests();
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.requests, 0, "{}", c.report);
    assert_eq!(
        w.state().requests(),
        served,
        "a no-change cycle must not send a single request"
    );
    assert!(c.plan.ops.is_empty());
}

#[tokio::test]
async fn each_kind_of_change_reaches_the_app() {
    let w = World::new().await;
    let source = MemorySource::new(directory());
    let engine = w.engine(source.clone());
    let app = w.app(&["g-team", "g-other"], "");
    cycle(&engine, &app).await;

    source.update(|d| {
        set(d, "u0", "jobTitle", json!("Staff Engineer")); // attribute change
        set(
            d,
            "u4",
            "userPrincipalName",
            json!("erin.new@contoso.example"),
        ); // rename
        set(d, "u2", "accountEnabled", json!(false)); // disabled in the source
        set(d, "u0", "department", Value::Null); // attribute cleared
        let g = d.groups.get_mut(&SourceId::from("g-team")).unwrap();
        g.members.retain(|m| m.as_str() != "u1"); // member removed (bob leaves scope: only in g-team)
        g.members.push("u3".into()); // member added (dan enters scope)
        g.display_name = "Team Blue".into(); // group renamed
    });
    let c = cycle(&engine, &app).await;
    let r = &c.report;
    assert_eq!(r.outcome, Outcome::Ok, "{r}");
    assert_eq!(r.users_created, 1, "dan: {r}");
    assert_eq!(
        r.users_updated, 2,
        "alice's title/department and erin's rename: {r}"
    );
    assert_eq!(
        r.users_disabled, 2,
        "carol (source) and bob (out of scope): {r}"
    );
    assert_eq!(r.groups_updated, 1, "{r}");
    assert_eq!((r.members_added, r.members_removed), (1, 1), "{r}");

    let alice = w.user("alice@contoso.example").unwrap();
    assert_eq!(alice["title"], "Staff Engineer");
    assert!(
        alice["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"].is_null()
    );
    let erin = w
        .user("erin.new@contoso.example")
        .expect("renamed in place");
    assert_eq!(erin["externalId"], "u4");
    assert!(w.user("erin@contoso.example").is_none());
    assert_eq!(
        w.user("bob@contoso.example").unwrap()["active"],
        false,
        "bob left scope: disabled, not deleted"
    );
    assert_eq!(w.user("carol@contoso.example").unwrap()["active"], false);
    assert_eq!(
        w.members("Team Blue"),
        [
            "alice@contoso.example",
            "carol@contoso.example",
            "dan@contoso.example"
        ]
    );
    assert_eq!(w.state().user_count(), 5);

    // Bob comes back: re-enabled, not duplicated.
    source.update(|d| {
        d.groups
            .get_mut(&SourceId::from("g-team"))
            .unwrap()
            .members
            .push("u1".into())
    });
    let c = cycle(&engine, &app).await;
    assert_eq!(
        (c.report.users_updated, c.report.users_created),
        (1, 0),
        "{}",
        c.report
    );
    assert_eq!(w.user("bob@contoso.example").unwrap()["active"], true);

    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.requests, 0, "{}", c.report);
}

#[tokio::test]
async fn deprovision_by_delete_and_group_unassigned() {
    let w = World::new().await;
    let source = MemorySource::new(directory());
    let engine = w.engine(source.clone());
    let app = w.app(&["g-team", "g-other"], "deprovision = \"delete\"");
    cycle(&engine, &app).await;
    assert_eq!(w.state().user_count(), 4);

    // g-other unassigned: erin leaves scope and is deleted; the group we created is deleted.
    let app = w.app(&["g-team"], "deprovision = \"delete\"");
    let c = cycle(&engine, &app).await;
    assert_eq!(
        (c.report.users_deleted, c.report.groups_deleted),
        (1, 1),
        "{}",
        c.report
    );
    assert!(w.user("erin@contoso.example").is_none());
    assert!(w.group("Other").is_none());
    assert_eq!(w.state().user_count(), 3);
    assert_eq!(cycle(&engine, &app).await.report.requests, 0);
}

#[tokio::test]
async fn max_deprovisions_holds_them_all_and_sends_none() {
    let w = World::new().await;
    let source = MemorySource::new(directory());
    let engine = w.engine(source.clone());
    let app = w.app(&["g-all"], "max_deprovisions = 2");
    cycle(&engine, &app).await;
    source.update(|d| {
        d.groups
            .get_mut(&SourceId::from("g-all"))
            .unwrap()
            .members
            .truncate(2);
    });
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Held, "{}", c.report);
    assert_eq!((c.report.held, c.report.users_disabled), (3, 0));
    assert_eq!(
        c.report.members_removed, 3,
        "memberships follow the source; accounts are held"
    );
    assert!(
        w.state().users().iter().all(|u| u["active"] == true),
        "nobody disabled"
    );
    // Still held next cycle, until an administrator raises the limit.
    assert_eq!(cycle(&engine, &app).await.report.held, 3);
    let app = w.app(&["g-all"], "max_deprovisions = 3");
    let c = cycle(&engine, &app).await;
    assert_eq!(
        (c.report.held, c.report.users_disabled),
        (0, 3),
        "{}",
        c.report
    );
}

#[tokio::test]
async fn a_broken_directory_file_disables_nobody() {
    let w = World::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("directory.json");
    std::fs::write(
        &path,
        scim_sync::source::file::to_json(&directory()).to_string(),
    )
    .unwrap();
    let engine = w.engine(FileSource::new(&path));
    let app = w.app(&["g-all"], "deprovision = \"delete\"");
    assert_eq!(cycle(&engine, &app).await.report.users_created, 5);
    let served = w.state().requests();

    for broken in [
        "{\"users\": [".to_owned(),                   // bad JSON
        "{\"users\": [], \"groups\": []}".to_owned(), // assigned group gone
        r#"{"users":[],"groups":[{"id":"g-all","displayName":"All","members":["u-ghost"]}]}"#
            .to_owned(), // unknown member
    ] {
        std::fs::write(&path, &broken).unwrap();
        let c = cycle(&engine, &app).await;
        assert_eq!(c.report.outcome, Outcome::Failed, "{broken}");
        assert!(c.report.error.is_some());
        assert_eq!(c.report.requests, 0);
    }
    assert_eq!(
        w.state().requests(),
        served,
        "nothing sent on a failed read"
    );
    assert_eq!(w.state().user_count(), 5);
}

#[tokio::test]
async fn pre_existing_objects_are_adopted_not_duplicated_and_never_deleted() {
    let w = World::new().await;
    // The app already holds alice (different case, stale title) and a "Team" group, made by someone else.
    let client = reqwest::Client::new();
    let base = w.sandbox.base_url().to_owned();
    let alice: Value = client
        .post(format!("{base}/Users"))
        .bearer_auth(TOKEN)
        .json(&json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ALICE@contoso.example","title":"Intern","active":true}))
        .send().await.unwrap().json().await.unwrap();
    let stranger: Value = client
        .post(format!("{base}/Users"))
        .bearer_auth(TOKEN)
        .json(&json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"stranger@elsewhere.example"}))
        .send().await.unwrap().json().await.unwrap();
    client
        .post(format!("{base}/Groups"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Team",
                      "members":[{"value": stranger["id"]}]}),
        )
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let engine = w.engine(MemorySource::new(directory()));
    let app = w.app(&["g-team"], "deprovision = \"delete\"");
    let c = cycle(&engine, &app).await;
    let r = &c.report;
    assert_eq!(
        (
            r.users_adopted,
            r.users_created,
            r.groups_adopted,
            r.groups_created
        ),
        (1, 2, 1, 0),
        "{r}"
    );
    assert_eq!(w.state().user_count(), 4, "no duplicate alice");
    let a = w.user("alice@contoso.example").unwrap();
    assert_eq!(a["id"], alice["id"]);
    assert_eq!(
        a["title"], "Engineer",
        "adopted user aligned with the source"
    );
    let mut expect = vec![
        "alice@contoso.example",
        "bob@contoso.example",
        "carol@contoso.example",
        "stranger@elsewhere.example",
    ];
    expect.sort();
    assert_eq!(
        w.members("Team"),
        expect,
        "the stranger's membership is not ours to remove"
    );
    assert_eq!(cycle(&engine, &app).await.report.requests, 0);

    // Unassigning the adopted group forgets it: it is not ours to delete.
    let app = w.app(&["g-other"], "deprovision = \"delete\"");
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.groups_deleted, 0, "{}", c.report);
    assert!(w.group("Team").is_some());
    assert!(
        w.user("stranger@elsewhere.example").is_some(),
        "never touch what we did not create or adopt"
    );
}

#[tokio::test]
async fn dry_run_sends_no_write_and_prints_every_operation() {
    let w = World::new().await;
    let engine = w.engine(MemorySource::new(directory()));
    let app = w.app(&["g-team"], "");
    let c = cycle_with(&engine, &app, true).await;
    assert!(c.report.dry_run);
    assert_eq!(
        (
            c.report.users_created,
            c.report.groups_created,
            c.report.members_added
        ),
        (3, 1, 3)
    );
    assert_eq!(c.plan.ops.len(), 5);
    assert_eq!(
        w.state().requests(),
        3,
        "a dry run reads the app's three discovery documents, and sends nothing else"
    );
    assert_eq!(c.report.requests, 3, "{}", c.report);
    assert!(
        w.store.last_report(&"e2e".into()).await.unwrap().is_none(),
        "a dry run is not a cycle"
    );
}

/// `n` users, all in g-all.
fn many(n: usize) -> Directory {
    let mut d = Directory::default();
    for i in 0..n {
        let u = user(&format!("u{i}"), &format!("user{i}@contoso.example"), true);
        d.users.insert(u.id.clone(), u);
    }
    let ids: Vec<String> = d.users.keys().map(|k| k.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    d.groups.insert("g-all".into(), group("g-all", "All", &ids));
    d
}

/// An initial sync of 2,000 users into a sandbox that answers each request after 5 ms
/// (2.5 s or more at concurrency 4), running, once the store records 500 of them.
async fn large_sync_under_way() -> (World, tokio::task::JoinHandle<AppCycle>) {
    let latency = std::time::Duration::from_millis(5);
    let w =
        World::on(SandboxState::with_token(TOKEN).with_latency(latency, std::time::Duration::ZERO))
            .await;
    let engine = w.engine(MemorySource::new(many(2_000)));
    let app = w.app(&["g-all"], "concurrency = 4");
    let running = tokio::spawn(async move { cycle(&engine, &app).await });
    loop {
        let (users, _) = w.store.counts(&"e2e".into()).await.unwrap();
        if users >= 500 {
            return (w, running);
        }
        assert!(
            !running.is_finished(),
            "the cycle ended with {users} users recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// What the app confirmed is recorded while the phase still runs, not only when it ends: a
/// process that dies in the middle of a large initial sync keeps what it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_creates_are_recorded_while_the_phase_runs() {
    let (w, running) = large_sync_under_way().await;
    let created = w.state().user_count();
    assert!(
        created < 2_000,
        "the store recorded its first users only after the app had all {created}"
    );
    let c = running.await.unwrap();
    assert_eq!(c.report.outcome, Outcome::Ok, "{:?}", c.report.error);
    assert_eq!(w.store.counts(&"e2e".into()).await.unwrap(), (2_000, 1));
}

/// A store that stops recording stops the sending: what the app would confirm next could
/// not be recorded, so it is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_in_the_middle_of_a_phase_stops_what_follows() {
    let (w, running) = large_sync_under_way().await;
    // Another connection takes the users' table away: the next commit fails.
    let db = w._tmp.path().join("state.db");
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        db.display()
    ))
    .await
    .unwrap();
    sqlx::query("ALTER TABLE scim_users RENAME TO scim_users_gone")
        .execute(&mut other)
        .await
        .unwrap();
    let c = running.await.unwrap();
    assert_eq!(c.report.outcome, Outcome::Partial);
    let error = c.report.error.unwrap_or_default();
    assert!(error.contains("scim_users"), "{error}");
    let created = w.state().user_count();
    assert!(
        created < 1_900,
        "{created} users were created after the store failed"
    );
    assert_eq!(
        w.state().group_count(),
        0,
        "a later phase ran after the store failed"
    );
}

#[tokio::test]
async fn one_failing_object_does_not_stop_the_cycle_and_is_retried() {
    let w = World::new().await;
    let source = MemorySource::new(directory());
    // Two source users share a userName: the second can only collide.
    source.update(|d| set(d, "u1", "userPrincipalName", json!("alice@contoso.example")));
    let engine = w.engine(source.clone());
    let app = w.app(&["g-team"], "");
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Partial, "{}", c.report);
    assert_eq!(c.report.failed, 1);
    assert!(
        c.report.errors[0].object.contains("u1"),
        "{:?}",
        c.report.errors
    );
    assert!(
        c.report.errors[0].error.contains("u0"),
        "{:?}",
        c.report.errors
    );
    assert_eq!(w.members("Team").len(), 2, "the rest of the cycle went on");
    let failing = w.store.failures(&"e2e".into()).await.unwrap();
    assert_eq!(failing.len(), 1);

    // Fixed in the source: the next cycle retries and clears the failure.
    source.update(|d| set(d, "u1", "userPrincipalName", json!("bob@contoso.example")));
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(w.members("Team").len(), 3);
    assert!(w.store.failures(&"e2e".into()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_token_fails_the_app_fast() {
    let w = World::new().await;
    let engine = w.engine(MemorySource::new(directory()));
    let app = App::new(
        app_cfg(w.sandbox.base_url(), &["g-all"], ""),
        &Secret::new("wrong"),
    )
    .unwrap();
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Failed, "{}", c.report);
    assert!(
        c.report
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("401"),
        "{}",
        c.report
    );
    assert!(
        c.report.requests <= 5,
        "stops instead of failing every object: {}",
        c.report
    );
    assert!(!format!("{:?}", c.report).contains(TOKEN));
}

#[tokio::test]
async fn objects_deleted_in_the_app_are_recreated_not_failed_forever() {
    let w = World::new().await;
    let source = MemorySource::new(directory());
    let engine = w.engine(source.clone());
    let app = w.app(&["g-team"], "");
    cycle(&engine, &app).await;

    // Someone deletes alice and the group in the app; then the source changes both.
    let client = reqwest::Client::new();
    let base = w.sandbox.base_url().to_owned();
    let alice = w.user("alice@contoso.example").unwrap();
    let team = w.group("Team").unwrap();
    for path in [
        format!("Users/{}", alice["id"].as_str().unwrap()),
        format!("Groups/{}", team["id"].as_str().unwrap()),
    ] {
        client
            .delete(format!("{base}/{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    source.update(|d| {
        set(d, "u0", "jobTitle", json!("Lead"));
        d.groups
            .get_mut(&SourceId::from("g-team"))
            .unwrap()
            .display_name = "Team 2".into();
    });
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.failed, 2, "{}", c.report);
    assert!(
        c.report
            .errors
            .iter()
            .all(|e| e.error.contains("re-creates")),
        "{:?}",
        c.report.errors
    );

    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(
        (c.report.users_created, c.report.groups_created),
        (1, 1),
        "{}",
        c.report
    );
    assert_eq!(w.user("alice@contoso.example").unwrap()["title"], "Lead");
    assert_eq!(
        w.members("Team 2"),
        [
            "alice@contoso.example",
            "bob@contoso.example",
            "carol@contoso.example"
        ]
    );
    assert_eq!(cycle(&engine, &app).await.report.requests, 0);
}

#[tokio::test]
async fn a_lost_state_store_adopts_everything_with_lookups_only() {
    let w = World::new().await;
    let dir = directory();
    let app = w.app(&["g-team", "g-other"], "");
    cycle(&w.engine(MemorySource::new(dir.clone())), &app).await;
    let users = w.state().users();

    // A new, empty store against the same app: everything is found and adopted.
    let tmp = tempfile::tempdir().unwrap();
    let fresh = Store::open(&format!("sqlite://{}", tmp.path().join("new.db").display()))
        .await
        .unwrap();
    let engine = Engine::new(Arc::new(MemorySource::new(dir)), fresh);
    let c = cycle(&engine, &app).await;
    let r = &c.report;
    assert_eq!((r.users_adopted, r.groups_adopted), (4, 2), "{r}");
    assert_eq!(
        (r.users_created, r.groups_created, r.members_added),
        (0, 0, 0),
        "{r}"
    );
    assert_eq!(
        r.requests,
        3 + 4,
        "the new store knows nothing of the app: its three discovery documents, then the \
         users' lookups answered by one sizing request and one listing (cheaper than 4 \
         lookups), one lookup per group, no write: {r}"
    );
    assert_eq!(w.state().users(), users, "nothing changed in the app");
    assert_eq!(cycle(&engine, &app).await.report.requests, 0);
}

/// An initial sync into an empty app costs about the floor (one POST per user, one per
/// group, one PATCH per 100 members): the creates' lookups are answered by one listing of
/// the app's users, not one request each. A lookup per create would cost about twice.
#[tokio::test]
async fn an_initial_sync_sends_about_the_request_floor() {
    let w = World::new().await;
    let mut d = Directory::default();
    let ids: Vec<String> = (0..1000).map(|i| format!("u{i:04}")).collect();
    for id in &ids {
        let u = user(id, &format!("{id}@contoso.example"), true);
        d.users.insert(u.id.clone(), u);
    }
    let sizes = [("g-all", 1000), ("g-a", 300), ("g-b", 250), ("g-c", 50)];
    for (g, n) in sizes {
        let members: Vec<&str> = ids[..n].iter().map(String::as_str).collect();
        d.groups.insert(g.into(), group(g, g, &members));
    }
    let engine = w.engine(MemorySource::new(d));
    let app = w.app(&["g-all", "g-a", "g-b", "g-c"], "");
    let c = cycle(&engine, &app).await;
    let r = &c.report;
    assert_eq!((r.users_created, r.groups_created), (1000, 4), "{r}");
    let floor: u64 = 1000
        + 4
        + sizes
            .iter()
            .map(|(_, n)| n.div_ceil(100) as u64)
            .sum::<u64>();
    println!(
        "REQUESTS: initial sync of 1000 users in 4 groups: {} (floor {floor})",
        r.requests
    );
    assert!(
        (r.requests as f64) <= 1.05 * floor as f64 + 50.0,
        "{} requests against a floor of {floor}: {r}",
        r.requests
    );
    assert_eq!(w.members("g-c").len(), 50);
}

/// Sends one request to the sandbox as an administrator editing the app directly would.
async fn out_of_band(w: &World, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/{path}", w.sandbox.base_url()))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap().error_for_status().unwrap();
    resp.json().await.unwrap_or(Value::Null)
}

/// Drift (SPEC §7.3): changes made in the app behind scim-sync's back are invisible to a
/// plain cycle (it reads nothing), and a verifying cycle finds and repairs each kind: an
/// edited attribute restored, a removed member re-added, a deleted managed user created
/// again and re-added, and a user scim-sync does not manage removed from the managed group
/// but otherwise left alone. A second verification repairs nothing and sends only reads.
#[tokio::test]
async fn a_verifying_cycle_repairs_each_kind_of_drift_and_counts_it() {
    use reqwest::Method;
    let w = World::new().await;
    let engine = w.engine(MemorySource::new(directory()));
    let app = w.app(&["g-team"], "");
    cycle(&engine, &app).await;
    let team = w.group("Team").unwrap()["id"].as_str().unwrap().to_owned();
    let id = |upn: &str| w.user(upn).unwrap()["id"].as_str().unwrap().to_owned();
    let (alice, bob, carol) = (
        id("alice@contoso.example"),
        id("bob@contoso.example"),
        id("carol@contoso.example"),
    );

    // In the app: bob's title edited, carol taken out of Team, alice deleted, and mallory
    // (whom the directory does not know) created and put into Team.
    let patch = |ops: Value| {
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}),
        )
    };
    out_of_band(
        &w,
        Method::PATCH,
        &format!("Users/{bob}"),
        patch(json!([{"op": "replace", "path": "title", "value": "CEO"}])),
    )
    .await;
    out_of_band(
        &w,
        Method::PATCH,
        &format!("Groups/{team}"),
        patch(json!([{"op": "remove", "path": format!("members[value eq \"{carol}\"]")}])),
    )
    .await;
    out_of_band(&w, Method::DELETE, &format!("Users/{alice}"), None).await;
    let mallory = out_of_band(
        &w,
        Method::POST,
        "Users",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "mallory@contoso.example", "title": "Intruder",
        })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    out_of_band(
        &w,
        Method::PATCH,
        &format!("Groups/{team}"),
        patch(json!([{"op": "add", "path": "members", "value": [{"value": mallory}]}])),
    )
    .await;
    assert_eq!(
        w.members("Team"),
        ["bob@contoso.example", "mallory@contoso.example"]
    );

    // A plain cycle trusts the store: nothing read, nothing repaired.
    let c = cycle(&engine, &app).await;
    assert_eq!(
        (c.report.requests, c.report.drift_repaired),
        (0, 0),
        "{}",
        c.report
    );

    // A dry run of the verification shows the repairs and changes nothing.
    let served = w.state().requests();
    let c = run_cycle(&engine, &app, true, true).await;
    assert_eq!(c.report.drift_repaired, 5, "{}", c.report);
    let planned: Vec<String> = c.plan.ops.iter().map(ToString::to_string).collect();
    assert!(
        planned
            .iter()
            .any(|op| op.contains("does not manage") && op.contains(&mallory)),
        "{planned:#?}"
    );
    assert_eq!(
        w.members("Team"),
        ["bob@contoso.example", "mallory@contoso.example"]
    );
    assert!(w.user("alice@contoso.example").is_none());
    assert_eq!(
        c.report.requests,
        w.state().requests() - served,
        "reads only, counted"
    );

    let served = w.state().requests();
    let c = run_cycle(&engine, &app, false, true).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    // bob edited, carol's membership, alice gone and her membership, mallory: 5 repairs.
    assert_eq!(c.report.drift_repaired, 5, "{}", c.report);
    assert_eq!(
        c.report.requests,
        w.state().requests() - served,
        "{}",
        c.report
    );
    assert_eq!(
        w.members("Team"),
        [
            "alice@contoso.example",
            "bob@contoso.example",
            "carol@contoso.example"
        ]
    );
    assert_eq!(w.user("bob@contoso.example").unwrap()["title"], "Engineer");
    // mallory is out of the group but otherwise untouched: not disabled, not deleted.
    let m = w
        .user("mallory@contoso.example")
        .expect("the unmanaged user is left alone");
    assert_eq!(
        (m["title"].as_str(), m["active"].as_bool()),
        (Some("Intruder"), None)
    );

    // Nothing left to repair: a second verification only reads.
    let served = w.state().requests();
    let c = run_cycle(&engine, &app, false, true).await;
    assert_eq!(c.report.drift_repaired, 0, "{}", c.report);
    assert!(c.plan.ops.is_empty(), "{:?}", c.plan.ops);
    assert_eq!(c.report.requests, w.state().requests() - served);
    assert!(c.report.requests > 0);
    assert_eq!(cycle(&engine, &app).await.report.requests, 0);
}

/// The enterprise User extension's URN.
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

#[tokio::test]
async fn an_app_that_declares_no_enterprise_extension_gets_none_and_every_user_is_created() {
    // Like a server that refuses every user body carrying the extension (400), which the
    // default mapping (department, employeeNumber) would send to every user.
    let w = World::on(SandboxState::with_token(TOKEN).without_enterprise()).await;
    let engine = w.engine(MemorySource::new(directory()));
    let app = w.app(&["g-all"], "");

    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(
        (c.report.users_created, c.report.failed),
        (5, 0),
        "{}",
        c.report
    );
    assert_eq!(
        c.report.requests,
        w.state().requests(),
        "discovery is counted with the rest"
    );
    for u in w.state().users() {
        assert!(u.get(ENTERPRISE).is_none(), "{u}");
        assert_eq!(u["title"], "Engineer", "the rest is sent: {u}");
    }
    let learnt = w.store.learnt(&"e2e".into()).await.unwrap().unwrap();
    assert_eq!(
        learnt.undeclared.keys().collect::<Vec<_>>(),
        [
            &format!("{ENTERPRISE}:department"),
            &format!("{ENTERPRISE}:employeeNumber")
        ]
    );

    // Known now: the next cycles neither ask again nor plan to send or clear the extension.
    let c = cycle(&engine, &app).await;
    assert_eq!(
        (c.report.requests, c.plan.ops.len()),
        (0, 0),
        "{}",
        c.report
    );
    let mut d = directory();
    set(&mut d, "u0", "department", json!("Finance"));
    let c = cycle(&w.engine(MemorySource::new(d)), &app).await;
    assert_eq!(
        (c.report.requests, c.plan.ops.len()),
        (0, 0),
        "{}",
        c.report
    );
    let c = run_cycle(&engine, &app, false, true).await;
    assert_eq!(
        (c.report.drift_repaired, c.report.failed),
        (0, 0),
        "{}",
        c.report
    );

    // A changed mapping is a changed configuration: the app is read again.
    let app = w.app(&["g-all"], "[apps.attributes]\nnickName = \"givenName\"\n");
    let before = w.state().requests();
    let c = cycle(&engine, &app).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(c.report.users_updated, 5, "{}", c.report);
    assert_eq!(
        w.state().requests() - before,
        3 + 5,
        "discovery again, then 5 PATCHes"
    );
}

#[tokio::test]
async fn a_dropped_attribute_is_not_re_sent() {
    // Like a server that accepts displayName and silently does not keep it.
    let w = World::on(SandboxState::with_token(TOKEN).dropping(&["displayName"])).await;
    let engine = w.engine(MemorySource::new(directory()));
    let app = w.app(&["g-all"], "");
    let c = cycle(&engine, &app).await;
    assert_eq!(
        (c.report.users_created, c.report.failed),
        (5, 0),
        "{}",
        c.report
    );
    assert!(
        w.state()
            .users()
            .iter()
            .all(|u| u.get("displayName").is_none())
    );
    assert_eq!(
        c.learnt.len(),
        1,
        "said once, by the cycle that found it: {:?}",
        c.learnt
    );
    assert!(c.learnt[0].starts_with("not sent (the app does not keep it): displayName: "));
    let learnt = w.store.learnt(&"e2e".into()).await.unwrap().unwrap();
    assert_eq!(learnt.dropped.keys().collect::<Vec<_>>(), ["displayName"]);
    assert!(learnt.rewritten.is_empty(), "{learnt:?}");
    assert!(
        learnt.undeclared.is_empty(),
        "the app declares it: {learnt:?}"
    );

    // A new displayName in the source is not sent; a new title is, alone.
    let mut d = directory();
    set(&mut d, "u0", "displayName", json!("Alice Renamed"));
    let c = cycle(&w.engine(MemorySource::new(d.clone())), &app).await;
    assert_eq!(
        (c.report.requests, c.plan.ops.len()),
        (0, 0),
        "{}",
        c.report
    );
    assert!(c.learnt.is_empty(), "{:?}", c.learnt);
    set(&mut d, "u1", "jobTitle", json!("Manager"));
    let c = cycle(&w.engine(MemorySource::new(d.clone())), &app).await;
    assert_eq!(
        (c.report.requests, c.report.users_updated),
        (1, 1),
        "{}",
        c.report
    );
    assert_eq!(w.user("bob@contoso.example").unwrap()["title"], "Manager");

    // Reading the app back does not take the missing displayName for drift.
    let c = run_cycle(&w.engine(MemorySource::new(d)), &app, false, true).await;
    assert_eq!(
        (c.report.drift_repaired, c.plan.ops.len()),
        (0, 0),
        "{}",
        c.report
    );

    // The same directory into an app that keeps displayName sends it, and records nothing.
    let k = World::new().await;
    let c = cycle(
        &k.engine(MemorySource::new(directory())),
        &k.app(&["g-all"], ""),
    )
    .await;
    assert_eq!(c.report.users_created, 5, "{}", c.report);
    let learnt = k.store.learnt(&"e2e".into()).await.unwrap().unwrap();
    assert!(
        learnt.dropped.is_empty() && learnt.rewritten.is_empty(),
        "{learnt:?}"
    );
    assert!(
        k.state()
            .users()
            .iter()
            .all(|u| u.get("displayName").is_some())
    );
}
