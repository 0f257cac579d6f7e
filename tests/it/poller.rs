//! The PIM poller in a running service, fed by a scripted in-memory [`PimFeed`] the tests
//! edit between rounds, under real time with a 50 ms interval: exactly one push per new
//! activated instance (wiremock counts the PATCHes), which instances count, removal when an
//! instance vanishes or ends, nothing removed on a failed read, restarts that neither re-push
//! nor miss, and a standing member that stays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use wiremock::{MockServer, ResponseTemplate};

use scim_sync::activation::ActivationRequest;
use scim_sync::drive::poller::PimPoll;
use scim_sync::model::{AppName, SourceId};
use scim_sync::service::{Options, Service, TickSource};
use scim_sync::source::{PimFeed, PimInstance};
use scim_sync::store::Change;

use crate::support::service::{
    Sandboxed, app_toml, config, directory, patched_members, seed, start,
};
use crate::support::{BASE, TOKEN, given};

const EVERY: Duration = Duration::from_millis(50);

/// A PIM feed the test scripts: the instances it answers, and whether reads fail.
#[derive(Clone, Default)]
struct Script {
    instances: Arc<Mutex<Vec<PimInstance>>>,
    failing: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    /// How long each read takes.
    takes: Duration,
    /// Reads in flight now, and the most ever at once.
    in_flight: Arc<Mutex<(u32, u32)>>,
}

impl PimFeed for Script {
    fn describe(&self) -> String {
        "scripted test feed".into()
    }

    fn active_instances(
        &self,
        group: &SourceId,
    ) -> BoxFuture<'_, Result<Vec<PimInstance>, scim_sync::source::Error>> {
        let group = group.clone();
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::SeqCst);
            {
                let mut f = self.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            tokio::time::sleep(self.takes).await;
            self.in_flight.lock().unwrap().0 -= 1;
            if self.failing.load(Ordering::SeqCst) {
                return Err(scim_sync::source::Error::Read {
                    path: "graph:assignmentScheduleInstances".into(),
                    source: std::io::Error::other("feed down"),
                });
            }
            let all = self.instances.lock().unwrap().clone();
            Ok(all.into_iter().filter(|i| i.group == group).collect())
        })
    }
}

impl Script {
    fn with(instances: Vec<PimInstance>) -> Script {
        let s = Script::default();
        s.set(instances);
        s
    }

    fn set(&self, instances: Vec<PimInstance>) {
        *self.instances.lock().unwrap() = instances;
    }

    fn edit(&self, f: impl FnOnce(&mut Vec<PimInstance>)) {
        f(&mut self.instances.lock().unwrap());
    }

    /// Waits until `rounds` whole rounds ran after this call, for a service whose apps have
    /// `groups` groups assigned (one read per group per round; rounds run one at a time, so a
    /// read of a later round means the earlier ones are done).
    async fn pass(&self, rounds: u64, groups: u64) {
        let want = self.reads.load(Ordering::SeqCst) + groups * (rounds + 1) + 1;
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.reads.load(Ordering::SeqCst) < want {
            assert!(tokio::time::Instant::now() < until, "the poller stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An activated membership of `user` in `group` (as Graph spells it: `kind`), ending in
/// `ends_in_s` seconds.
fn instance(id: &str, group: &str, user: &str, kind: &str, ends_in_s: i64) -> PimInstance {
    PimInstance {
        id: id.into(),
        group: group.into(),
        user: user.into(),
        access_id: "member".into(),
        assignment_type: kind.into(),
        start: Some(Utc::now() - chrono::Duration::minutes(1)),
        end: Some(Utc::now() + chrono::Duration::seconds(ends_in_s)),
        schedule: None,
    }
}

fn polled(feed: &Script, startup_cycle: bool) -> Options {
    Options {
        ticks: TickSource::Tokio,
        startup_cycle,
        pim: Some(PimPoll {
            feed: Arc::new(feed.clone()),
            every: EVERY,
        }),
        ..Options::default()
    }
}

/// A service whose app `crm` (group `g-pim`) is the wiremock `server`, with state in `tmp`
/// and the store seeded with the app's users and group.
async fn wiremocked(server: &MockServer, tmp: &tempfile::TempDir, feed: &Script) -> Service {
    let base = format!("{}{BASE}", server.uri());
    let cfg = config(tmp.path(), &[app_toml("crm", &base, &["g-pim"], "")], "40m");
    let dir = directory();
    let source = Arc::new(scim_sync::source::MemorySource::new(dir.clone()));
    let svc = start(&cfg, source, TOKEN, polled(feed, false)).await;
    seed(&svc, &dir, "crm", &["g-pim"]).await;
    svc
}

fn member_patch(n: u64, name: &str) -> wiremock::Mock {
    given("PATCH", "/Groups/grp-g-pim")
        .respond_with(ResponseTemplate::new(204))
        .expect(n)
        .named(name)
}

async fn live(svc: &Service) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = svc
        .engine()
        .store()
        .live_activations(&AppName::from("crm"), Utc::now())
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                a.activation.group.to_string(),
                a.activation.user.to_string(),
                a.activation.origin,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_new_activated_instance_is_pushed_once() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let feed = Script::default();
    let svc = wiremocked(&server, &tmp, &feed).await;
    member_patch(1, "the one push of u1").mount(&server).await;
    feed.set(vec![instance("i1", "g-pim", "u1", "Activated", 3600)]);
    feed.pass(4, 1).await;
    server.verify().await;
    assert_eq!(patched_members(&server, "grp-g-pim").await, [["scim-u1"]]);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "later rounds with the same instance send nothing"
    );
    assert_eq!(
        live(&svc).await,
        [("g-pim".into(), "u1".into(), "pim-poll".into())]
    );
    svc.shutdown(Duration::from_secs(5)).await;
    // Shutdown stopped the loop.
    let reads = feed.reads.load(Ordering::SeqCst);
    tokio::time::sleep(EVERY * 4).await;
    assert_eq!(feed.reads.load(Ordering::SeqCst), reads);
}

#[tokio::test]
async fn rounds_slower_than_the_interval_never_overlap() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // Each read takes four intervals.
    let feed = Script {
        takes: EVERY * 4,
        ..Script::default()
    };
    let svc = wiremocked(&server, &tmp, &feed).await;
    feed.pass(3, 1).await;
    assert_eq!(
        feed.in_flight.lock().unwrap().1,
        1,
        "two rounds ran at once"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn only_activated_member_instances_count_in_any_case() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut owner = instance("i4", "g-pim", "u4", "activated", 3600);
    owner.access_id = "owner".into();
    let feed = Script::default();
    let svc = wiremocked(&server, &tmp, &feed).await;
    member_patch(2, "pushes of u1 and u2 only")
        .mount(&server)
        .await;
    feed.set(vec![
        instance("i1", "g-pim", "u1", "Activated", 3600),
        instance("i2", "g-pim", "u2", "activated", 3600),
        instance("i3", "g-pim", "u3", "Assigned", 3600),
        owner,
    ]);
    feed.pass(3, 1).await;
    server.verify().await;
    let mut pushed: Vec<String> = patched_members(&server, "grp-g-pim")
        .await
        .into_iter()
        .flatten()
        .collect();
    pushed.sort();
    assert_eq!(pushed, ["scim-u1", "scim-u2"]);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_restart_adopts_what_the_store_knows_and_pushes_what_it_does_not() {
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let feed = Script::default();
    let first = wiremocked(&server, &tmp, &feed).await;
    member_patch(1, "first process: u1").mount(&server).await;
    let i1 = instance("i1", "g-pim", "u1", "activated", 3600);
    feed.set(vec![i1.clone()]);
    feed.pass(2, 1).await;
    server.verify().await;
    first.shutdown(Duration::from_secs(5)).await;
    drop(first);

    // A new process over the same state; the feed still lists i1, and i2 is new.
    server.reset().await;
    member_patch(1, "second process: u2 only")
        .mount(&server)
        .await;
    let feed = Script::with(vec![i1, instance("i2", "g-pim", "u2", "activated", 3600)]);
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
    let source = Arc::new(scim_sync::source::MemorySource::new(directory()));
    let second = start(&cfg, source, TOKEN, polled(&feed, false)).await;
    feed.pass(3, 1).await;
    server.verify().await;
    assert_eq!(patched_members(&server, "grp-g-pim").await, [["scim-u2"]]);
    assert_eq!(
        live(&second).await,
        [
            ("g-pim".into(), "u1".into(), "pim-poll".into()),
            ("g-pim".into(), "u2".into(), "pim-poll".into())
        ],
        "u1 adopted, not recorded twice"
    );
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_activation_the_app_already_holds_is_recorded_without_a_request() {
    // The store records u3 as a member (say, a cycle added it) but knows no activation: the
    // poller activates, and the push finds nothing to send.
    let server = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let feed = Script::default();
    let svc = wiremocked(&server, &tmp, &feed).await;
    svc.engine()
        .store()
        .commit(
            &AppName::from("crm"),
            &[Change::AddMembers("g-pim".into(), vec!["u3".into()])],
            Utc::now(),
        )
        .await
        .unwrap();
    feed.set(vec![instance("i3", "g-pim", "u3", "activated", 3600)]);
    feed.pass(3, 1).await;
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(
        live(&svc).await,
        [("g-pim".into(), "u3".into(), "pim-poll".into())]
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// The sandbox as the app, its start-up cycle done (Staff holds u0), polled from `feed`.
async fn sandboxed(w: &Sandboxed, feed: &Script) -> Service {
    let svc = w.service_with("", polled(feed, true)).await;
    w.await_members("Staff", &["u0@contoso.example"], Duration::from_secs(10))
        .await;
    svc
}

#[tokio::test]
async fn a_vanished_or_ended_instance_leaves_the_app_at_once() {
    let w = Sandboxed::new().await;
    let feed = Script::default();
    let svc = sandboxed(&w, &feed).await;
    let within = Duration::from_secs(10);

    feed.set(vec![instance("i3", "g-pim", "u3", "activated", 3600)]);
    w.await_members("PIM Admins", &["u3@contoso.example"], within)
        .await;
    feed.set(vec![]);
    w.await_members("PIM Admins", &[], within).await;

    // Still listed, but its endDateTime has passed (the expiry timer is an hour away).
    feed.set(vec![instance("i5", "g-pim", "u5", "activated", 3600)]);
    w.await_members("PIM Admins", &["u5@contoso.example"], within)
        .await;
    feed.edit(|v| v[0].end = Some(Utc::now() - chrono::Duration::seconds(1)));
    w.await_members("PIM Admins", &[], within).await;
    assert_eq!(w.members("Staff"), ["u0@contoso.example"]);
    assert!(live(&svc).await.is_empty());
    svc.shutdown(Duration::from_secs(5)).await;
}

/// The value of the unlabelled counter `name` in the Prometheus text of `svc`.
async fn counter(svc: &Service, name: &str) -> f64 {
    let text = svc.metrics_text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_failed_read_removes_nothing() {
    // The process-wide recorder, installed before anything is counted.
    scim_sync::metrics::install().unwrap();
    let w = Sandboxed::new().await;
    let feed = Script::default();
    let svc = sandboxed(&w, &feed).await;
    feed.set(vec![instance("i3", "g-pim", "u3", "activated", 3600)]);
    w.await_members(
        "PIM Admins",
        &["u3@contoso.example"],
        Duration::from_secs(10),
    )
    .await;

    // The feed fails, and would say "gone" if it answered.
    let failures = counter(&svc, "scim_sync_pim_poll_failures_total").await;
    feed.failing.store(true, Ordering::SeqCst);
    feed.set(vec![]);
    feed.pass(4, 2).await;
    assert_eq!(w.members("PIM Admins"), ["u3@contoso.example"]);
    assert_eq!(live(&svc).await.len(), 1);
    // Other tests in this process count too: at least 2 groups × 4 rounds here.
    let failed = counter(&svc, "scim_sync_pim_poll_failures_total").await - failures;
    assert!(failed >= 8.0, "failures counted: {failed}");
    let text = svc.metrics_text().await.unwrap();
    assert!(
        text.contains("scim_sync_pim_poll_activations_total{outcome=\"activated\"}"),
        "{text}"
    );
    assert!(text.contains("scim_sync_pim_poll_seconds"), "{text}");
    // How long PIM's activation took to be seen, from the instance's startDateTime.
    assert!(
        text.contains("scim_sync_detection_latency_seconds_count{origin=\"pim-poll\"}"),
        "{text}"
    );

    // Once it answers again, the end is seen.
    feed.failing.store(false, Ordering::SeqCst);
    w.await_members("PIM Admins", &[], Duration::from_secs(10))
        .await;
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_standing_member_stays_when_the_pim_activation_vanishes() {
    let w = Sandboxed::new().await;
    w.source.update(|d| {
        d.groups
            .get_mut(&SourceId::from("g-pim"))
            .unwrap()
            .members
            .push(SourceId::from("u4"));
    });
    let feed = Script::default();
    let svc = sandboxed(&w, &feed).await;
    w.await_members(
        "PIM Admins",
        &["u4@contoso.example"],
        Duration::from_secs(10),
    )
    .await;
    feed.set(vec![instance("i4", "g-pim", "u4", "activated", 3600)]);
    feed.pass(2, 2).await;
    assert_eq!(live(&svc).await.len(), 1, "the activation was recorded");
    feed.set(vec![]);
    // The end is decided (nothing live), then the revoke keeps the standing member.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !svc
        .engine()
        .store()
        .unrevoked_activations()
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < until,
            "the end was never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(live(&svc).await.is_empty());
    assert_eq!(w.members("PIM Admins"), ["u4@contoso.example"]);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_extended_instance_outlives_its_first_end() {
    let w = Sandboxed::new().await;
    let feed = Script::default();
    let svc = sandboxed(&w, &feed).await;
    feed.set(vec![instance("i3", "g-pim", "u3", "activated", 2)]);
    w.await_members(
        "PIM Admins",
        &["u3@contoso.example"],
        Duration::from_secs(10),
    )
    .await;
    let requests = w.sandbox.state().requests();
    // PIM moves the same instance's end an hour out; the first end passes.
    feed.edit(|v| v[0].end = Some(Utc::now() + chrono::Duration::hours(1)));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(w.members("PIM Admins"), ["u3@contoso.example"]);
    assert_eq!(
        w.sandbox.state().requests(),
        requests,
        "the extension sent nothing to the app"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_restart_ends_what_pim_ended_during_the_downtime_and_leaves_webhook_activations() {
    let w = Sandboxed::new().await;
    let feed = Script::default();
    let first = sandboxed(&w, &feed).await;
    feed.set(vec![instance("i3", "g-pim", "u3", "activated", 3600)]);
    let by_webhook = ActivationRequest {
        group_id: "g-pim".into(),
        user_id: "u6".into(),
        expires_at: None,
        justification: None,
        ticket_number: None,
        ticket_system: None,
    };
    first.activate(by_webhook, "webhook").await.unwrap();
    let both = ["u3@contoso.example", "u6@contoso.example"];
    w.await_members("PIM Admins", &both, Duration::from_secs(10))
        .await;
    first.shutdown(Duration::from_secs(5)).await;
    drop(first);

    // PIM deactivated i3 while no process ran; the expiry timer is an hour away.
    let feed = Script::default();
    let second = w.service_with("", polled(&feed, false)).await;
    w.await_members(
        "PIM Admins",
        &["u6@contoso.example"],
        Duration::from_secs(10),
    )
    .await;
    feed.pass(3, 2).await;
    assert_eq!(w.members("PIM Admins"), ["u6@contoso.example"]);
    second.shutdown(Duration::from_secs(5)).await;
}
