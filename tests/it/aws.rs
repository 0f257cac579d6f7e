//! `profile = "aws-identity-center"` against the AWS IAM Identity Center double
//! (`scim_sync_testkit::aws_double`, written from AWS's developer guide): groups that never
//! list their members, cursor paging, 100 membership changes a PATCH, required name parts,
//! 429 without `Retry-After`. Every check reads the double's own state, not scim-sync's store.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use scim_sync::config::{Config, Secret};
use scim_sync::engine::{App, AppCycle, CycleOptions, Engine};
use scim_sync::model::{Directory, SourceGroup, SourceId, SourceUser};
use scim_sync::report::{Outcome, Reason};
use scim_sync::source::MemorySource;
use scim_sync::store::Store;
use scim_sync_testkit::aws_double::{AWS_TOKEN, AwsDouble};

/// `users` users `u000…`; `Everyone` holds all of them (over 100: several PATCHes), `Admins`
/// the first five. Users listed in `nameless` have no given name.
fn directory(users: usize, nameless: &[usize]) -> Directory {
    let mut d = Directory::default();
    for i in 0..users {
        let id = format!("u{i:03}");
        let mut attrs = json!({
            "userPrincipalName": format!("user{i:03}@contoso.example"),
            "displayName": format!("User {i:03}"), "givenName": format!("Given{i:03}"),
            "surname": "Family", "mail": format!("user{i:03}@contoso.example"),
            "accountEnabled": true, "jobTitle": "Engineer", "department": "R&D",
        });
        if nameless.contains(&i) {
            attrs["givenName"] = Value::Null;
        }
        d.users.insert(
            SourceId::new(id.clone()),
            SourceUser {
                id: SourceId::new(id),
                attrs: scim_sync::model::attrs_from_json(attrs),
            },
        );
    }
    let group = |id: &str, name: &str, members: Vec<SourceId>| SourceGroup {
        id: id.into(),
        display_name: name.into(),
        members: members.into_iter().collect(),
        eligible: Vec::new(),
    };
    let all: Vec<SourceId> = d.users.keys().cloned().collect();
    let admins: Vec<SourceId> = all.iter().take(5).cloned().collect();
    d.groups
        .insert("g-all".into(), group("g-all", "Everyone", all));
    d.groups
        .insert("g-admins".into(), group("g-admins", "Admins", admins));
    d
}

/// The double, a store in a temporary folder, and an app with the AWS profile on the double.
struct World {
    aws: AwsDouble,
    tmp: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        World {
            aws: AwsDouble::start().await.unwrap(),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn app(&self) -> App {
        let text = format!(
            "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"aws\"\nbase_url = \"{}\"\ntoken_env = \"AWS_SCIM_TOKEN\"\ngroups = [\"g-all\", \"g-admins\"]\nprofile = \"aws-identity-center\"\n",
            self.aws.base_url()
        );
        let cfg = Config::parse(Path::new("aws.toml"), &text)
            .unwrap()
            .apps
            .remove(0);
        App::new(cfg, &Secret::new(AWS_TOKEN)).unwrap()
    }

    /// A store file of this world (`name` picks a fresh one, as after a lost store).
    async fn engine(&self, dir: Directory, store: &str) -> Engine {
        let store = Store::open(&format!(
            "sqlite://{}",
            self.tmp.path().join(store).display()
        ))
        .await
        .unwrap();
        Engine::new(Arc::new(MemorySource::new(dir)), store)
    }

    /// The double's users' userNames.
    fn user_names(&self) -> BTreeSet<String> {
        self.aws
            .users()
            .iter()
            .filter_map(|u| u["userName"].as_str().map(str::to_owned))
            .collect()
    }
}

async fn cycle(engine: &Engine, app: &App, verify: bool) -> AppCycle {
    let mut run = engine
        .cycle(
            std::slice::from_ref(app),
            CycleOptions {
                reason: Reason::SyncNow,
                dry_run: false,
                progress: false,
                verify,
            },
        )
        .await;
    run.apps.remove(0)
}

fn names(range: impl Iterator<Item = usize>, skip: &[usize]) -> BTreeSet<String> {
    range
        .filter(|i| !skip.contains(i))
        .map(|i| format!("user{i:03}@contoso.example"))
        .collect()
}

/// 250 users (paging matters), a group of 247 (three PATCHes of at most 100), three users
/// without a given name (reported, never sent): the double holds exactly the directory, the
/// report counts exactly the requests the double received, and a second cycle sends nothing.
#[tokio::test]
async fn an_initial_sync_into_aws_identity_center_is_exact_and_a_rerun_writes_nothing() {
    let w = World::new().await;
    let nameless = [7, 100, 201];
    let engine = w.engine(directory(250, &nameless), "state.db").await;
    let app = w.app();

    let c = cycle(&engine, &app, false).await;
    assert_eq!(c.report.users_created, 247, "{}", c.report);
    assert_eq!(c.report.failed, 3, "{}", c.report);
    assert!(
        c.report
            .errors
            .iter()
            .all(|e| e.error.contains("name.givenName")),
        "{:#?}",
        c.report.errors
    );
    assert_eq!(c.report.requests, w.aws.requests(), "{}", c.report);
    assert_eq!(w.user_names(), names(0..250, &nameless));
    assert_eq!(w.aws.member_names("Everyone"), names(0..250, &nameless));
    assert_eq!(w.aws.member_names("Admins"), names(0..5, &[]));
    let user = w.aws.user_by_name("user001@contoso.example").unwrap();
    assert_eq!(user["name"]["givenName"], "Given001");
    assert_eq!(user["emails"][0]["primary"], true, "{user}");
    assert_eq!(user["emails"].as_array().map(Vec::len), Some(1));

    // At the floor (a POST per user and group, a PATCH per 100 members) and six reads: the
    // three of schema discovery, one listing page that finds the app empty (so no user
    // create looks itself up), a lookup per group.
    let floor = 247 + 2 + 3 + 1;
    let lookups = w
        .aws
        .log()
        .iter()
        .filter(|(_, p)| p.contains("filter=userName"))
        .count();
    assert_eq!(lookups, 0, "{:?}", w.aws.log());
    assert_eq!(c.report.requests, floor + 6, "{:?}", w.aws.log());

    w.aws.reset_counts();
    let c = cycle(&engine, &app, false).await;
    assert_eq!((c.report.requests, w.aws.writes()), (0, 0), "{}", c.report);
}

/// An Identity Center listing cannot be sized, so the creates' listing gets a quarter of the
/// creates in pages (10 for 40). An app holding 1,500 other users is listed only that far:
/// the three directory users created last in the console are beyond it, so each create
/// looks itself up, adopts those three without a POST, and duplicates nothing; a
/// verification reads the users its listing did not reach one by one.
#[tokio::test]
async fn a_listing_cut_short_still_adopts_what_it_did_not_reach_and_duplicates_nothing() {
    let w = World::new().await;
    for i in 0..1500 {
        w.aws.create_user_directly(json!({
            "userName": format!("other{i}@contoso.example"), "displayName": "Other",
            "name": {"givenName": "Other", "familyName": "User"},
        }));
    }
    for i in [3, 17, 39] {
        w.aws.create_user_directly(json!({
            "userName": format!("user{i:03}@contoso.example"), "displayName": format!("User {i:03}"),
            "name": {"givenName": format!("Given{i:03}"), "familyName": "Family"},
        }));
    }
    let engine = w.engine(directory(40, &[]), "state.db").await;
    let c = cycle(&engine, &w.app(), false).await;
    assert_eq!(
        (
            c.report.outcome,
            c.report.users_created,
            c.report.users_adopted
        ),
        (Outcome::Ok, 37, 3),
        "{}",
        c.report
    );
    let pages = w
        .aws
        .log()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/Users?") && !p.contains("filter="))
        .count();
    assert_eq!(pages, 10, "the listing's budget");
    assert_eq!(
        w.aws.requests_by("POST"),
        37 + 2,
        "a user the listing did not reach is looked up, not posted into a conflict"
    );
    assert_eq!(w.aws.users().len(), 1500 + 40, "no duplicate");
    assert_eq!(w.aws.member_names("Everyone"), names(0..40, &[]));
    assert_eq!(c.report.requests, w.aws.requests());

    // A verification's listing has the same budget: the managed users, all beyond it, are
    // read one by one, and none is taken for gone.
    w.aws.reset_counts();
    let c = cycle(&engine, &w.app(), true).await;
    assert_eq!(
        (c.report.outcome, c.report.drift_repaired, w.aws.writes()),
        (Outcome::Ok, 0, 0),
        "{}",
        c.report
    );
    let reads = w
        .aws
        .log()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/Users/"))
        .count();
    assert_eq!(reads, 40, "{:?}", w.aws.log());
}

/// A lost store: a fresh one finds every user by lookup and every group's members through the
/// users listed by `groups.value` (cursor paging over 250), so nothing is created, duplicated
/// or re-added. A verification then reads the app back the same way and repairs what an
/// administrator changed in the AWS console: an intruder added to Admins is removed from it
/// (and otherwise left alone), a removed member is added back, an edited title restored.
#[tokio::test]
async fn a_lost_store_is_adopted_and_out_of_band_changes_are_repaired_on_aws() {
    let w = World::new().await;
    let app = w.app();
    let first = w.engine(directory(250, &[]), "first.db").await;
    assert_eq!(cycle(&first, &app, false).await.report.failed, 0);
    let users_before = w.aws.users().len();

    w.aws.reset_counts();
    let engine = w.engine(directory(250, &[]), "lost.db").await;
    let c = cycle(&engine, &app, false).await;
    assert_eq!(c.report.outcome, Outcome::Ok, "{}", c.report);
    assert_eq!(
        (c.report.users_adopted, c.report.groups_adopted),
        (250, 2),
        "{}",
        c.report
    );
    assert_eq!(
        (w.aws.requests_by("POST"), w.aws.writes()),
        (0, 0),
        "{:?}",
        w.aws.log()
    );
    assert_eq!(w.aws.users().len(), users_before);
    assert_eq!(c.report.requests, w.aws.requests());

    let admins = w.aws.group_id("Admins").unwrap();
    let everyone = w.aws.group_id("Everyone").unwrap();
    let id = |n: &str| {
        w.aws.user_by_name(n).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let intruder = w.aws.create_user_directly(json!({
        "userName": "mallory@contoso.example", "displayName": "Mallory", "name": {"givenName": "Mallory", "familyName": "X"},
    }));
    assert!(w.aws.add_member_directly(&admins, &intruder));
    assert!(
        w.aws
            .remove_member_directly(&everyone, &id("user042@contoso.example"))
    );
    assert!(
        w.aws
            .set_user_attr_directly(&id("user003@contoso.example"), "title", json!("CEO"))
    );

    w.aws.reset_counts();
    let c = cycle(&engine, &app, false).await;
    assert_eq!(
        (c.report.requests, c.report.drift_repaired),
        (0, 0),
        "a plain cycle reads nothing"
    );
    let c = cycle(&engine, &app, true).await;
    assert_eq!(c.report.drift_repaired, 3, "{}", c.report);
    assert_eq!(c.report.requests, w.aws.requests(), "{}", c.report);
    assert_eq!(w.aws.member_names("Admins"), names(0..5, &[]));
    assert_eq!(w.aws.member_names("Everyone"), names(0..250, &[]));
    assert_eq!(
        w.aws.user_by_name("user003@contoso.example").unwrap()["title"],
        "Engineer"
    );
    assert!(
        w.aws.user_by_name("mallory@contoso.example").is_some(),
        "the intruder is left alone"
    );

    w.aws.reset_counts();
    let c = cycle(&engine, &app, true).await;
    assert_eq!(
        (c.report.drift_repaired, w.aws.writes()),
        (0, 0),
        "{}",
        c.report
    );
}

/// Identity Center throttles with `429` and no `Retry-After`: the client backs off and the
/// sync converges to the exact state, every request counted.
#[tokio::test]
async fn throttling_without_retry_after_converges_on_aws() {
    let w = World::new().await;
    let engine = w.engine(directory(40, &[]), "state.db").await;
    let app = w.app();
    w.aws.throttle_every(6);
    let c = cycle(&engine, &app, false).await;
    w.aws.throttle_every(0);
    assert_eq!(
        (c.report.outcome, c.report.failed),
        (Outcome::Ok, 0),
        "{}",
        c.report
    );
    assert_eq!(c.report.requests, w.aws.requests());
    assert!(w.aws.log().len() as u64 >= 40 + 2);
    assert_eq!(w.aws.member_names("Everyone"), names(0..40, &[]));
    assert_eq!(w.aws.member_names("Admins"), names(0..5, &[]));
}
