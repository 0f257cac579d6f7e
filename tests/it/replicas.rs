//! Replicas as an operator runs them: real `scim-sync run` processes on one store, killed with
//! SIGKILL, frozen with SIGSTOP and stopped with SIGTERM, each writing to the sandbox through
//! its own recording proxy, so that every assertion names which process sent what.
//!
//! Lines prefixed `HA-FIGURE:` are the figures of one run (`cargo test --test it replicas --
//! --nocapture`); docs/HA.md has the benchmark's repeated ones.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use scim_sync::activation::Outcome;
use scim_sync_testkit::replicas::{Answer, Backend, Cluster, Spec, sample_directory};

/// The sample directory's PIM group (its display name in the app) and users eligible for it.
const PIM: &str = "g-prod-admins";
const PIM_NAME: &str = "Production Admins (PIM)";
const ELIGIBLE: [&str; 8] = [
    "u-alice", "u-bob", "u-dan", "u-frank", "u-grace", "u-hiro", "u-hana", "u-igor",
];
/// The group's standing member, created by every start-up cycle.
const STANDING: &str = "u-carol";

fn spec(replicas: usize, backend: Backend, lease_ttl: &str) -> Spec {
    Spec {
        bin: env!("CARGO_BIN_EXE_scim-sync").into(),
        replicas,
        backend,
        directory: sample_directory(),
        groups: vec!["g-it-admins".into(), PIM.into()],
        lease_ttl: lease_ttl.into(),
        app_extra: String::new(),
    }
}

async fn start(spec: Spec) -> Cluster {
    Cluster::start(spec).await.unwrap_or_else(|e| panic!("{e}"))
}

fn outcome(a: &Answer) -> Outcome {
    assert_eq!(a.status, 202, "{}", a.body);
    let accepted = a.accepted.as_ref().expect("a 202 carries its outcomes");
    assert_eq!(accepted.apps.len(), 1, "{}", a.body);
    accepted.apps[0].outcome
}

fn tally(answers: &[Answer]) -> BTreeMap<&'static str, usize> {
    let mut t = BTreeMap::new();
    for a in answers {
        *t.entry(outcome(a).as_str()).or_default() += 1;
    }
    t
}

/// PATCHes of groups (membership changes) among `writes`.
fn group_patches(writes: &[scim_sync_testkit::replicas::Seen]) -> usize {
    writes
        .iter()
        .filter(|w| w.method == "PATCH" && w.uri.contains("/Groups/"))
        .count()
}

/// Polls `done` every 20 ms for up to `within`; the time it first held.
async fn until(within: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let started = Instant::now();
    loop {
        if done() {
            return Some(Instant::now());
        }
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(cluster: &Cluster, user: &str) -> bool {
    cluster.members_of(PIM_NAME).iter().any(|m| m == user)
}

/// Waits for `user` to leave the PIM group and asserts it left on time: not before
/// `expires_at`, and less than 3 s after it.
async fn removed_on_time(
    cluster: &Cluster,
    user: &str,
    expires_at: chrono::DateTime<Utc>,
    after: &str,
) {
    let gone = until(Duration::from_secs(20), || !has(cluster, user))
        .await
        .expect("the expired activation was never removed");
    let removed_at = Utc::now() - chrono::Duration::from_std(gone.elapsed()).unwrap();
    let late = (removed_at - expires_at).num_milliseconds();
    println!("HA-FIGURE: expiry after the {after} removed {late} ms after expires_at");
    assert!(late >= -50, "removed {late} ms before its expiry");
    assert!(late < 3000, "removed {late} ms after its expiry");
}

/// Three replicas, one limiter: a burst of eight activations sent only to the two replicas
/// without the lease ends 5 pushed and 3 deferred in all, every write comes from the
/// holder, and SIGTERM stops every replica with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_limiter_and_only_the_holder_writes() {
    let mut cluster = start(spec(3, Backend::Postgres, "3s")).await;
    let holder = cluster.holder(Duration::from_secs(10)).await.unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    assert!(
        until(Duration::from_secs(10), || has(&cluster, STANDING))
            .await
            .is_some(),
        "the start-up cycle did not create the standing member"
    );
    let before = Instant::now();
    let expires = Utc::now() + chrono::Duration::hours(1);
    let sends = ELIGIBLE.iter().enumerate().map(|(i, user)| {
        let r = &cluster.replicas[others[i % 2]];
        r.activate(PIM, user, expires)
    });
    let answers: Vec<Answer> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|a| a.unwrap())
        .collect();
    let took: Vec<_> = answers.iter().map(|a| a.took.as_millis()).collect();
    println!("HA-FIGURE: burst of 8 through 2 non-holders answered in {took:?} ms");
    let t = tally(&answers);
    assert_eq!(t.get("pushed"), Some(&5), "{t:?}");
    assert_eq!(t.get("deferred"), Some(&3), "{t:?}");

    for i in &others {
        assert!(
            cluster.replicas[*i].proxy.writes().is_empty(),
            "replica {i} holds no lease but wrote {:?}",
            cluster.replicas[*i].proxy.writes()
        );
    }
    let holder_writes = cluster.replicas[holder].proxy.writes_since(before);
    assert_eq!(group_patches(&holder_writes), 5, "{holder_writes:?}");
    let members = cluster.members_of(PIM_NAME);
    assert_eq!(members.len(), 6, "carol and the 5 pushed: {members:?}");
    let status = cluster.replicas[others[0]].status().await.unwrap();
    assert_eq!(status.apps[0].deferred_activations.len(), 3, "{status:?}");

    for r in &mut cluster.replicas {
        r.signal("TERM").unwrap();
    }
    for r in &mut cluster.replicas {
        let index = r.index;
        let exit = r.wait_exit(Duration::from_secs(30)).await.unwrap();
        let log = r.log();
        assert!(exit.success(), "replica {index} exited {exit:?}:\n{log}");
        assert!(log.contains("stopped cleanly"), "replica {index}:\n{log}");
        assert!(!log.contains(scim_sync_testkit::replicas::APP_TOKEN));
        assert!(!log.contains(scim_sync_testkit::replicas::WEBHOOK_TOKEN));
    }
}

/// SIGKILL of the holder in the middle of a burst sent to the other replica: every
/// activation answered 202 reaches the app (pushed, or deferred and applied by the new
/// holder's take-over cycle), the push limit holds across the failover (the new holder
/// counts the dead one's pushes), and the one that expires after the kill leaves the app on
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_holder_mid_burst_loses_nothing_and_revokes_on_time() {
    let mut cluster = start(spec(2, Backend::Postgres, "3s")).await;
    let holder = cluster.holder(Duration::from_secs(10)).await.unwrap();
    let other = 1 - holder;
    let expiring = ELIGIBLE[0];
    let expires_at = Utc::now() + chrono::Duration::seconds(6);
    let first = cluster.replicas[other]
        .activate(PIM, expiring, expires_at)
        .await
        .unwrap();
    assert_eq!(outcome(&first), Outcome::Pushed, "{}", first.body);

    let later = Utc::now() + chrono::Duration::hours(1);
    let burst = async {
        let mut answers = Vec::new();
        for user in &ELIGIBLE[1..] {
            answers.push(
                cluster.replicas[other]
                    .activate(PIM, user, later)
                    .await
                    .unwrap(),
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        answers
    };
    let kill = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let pid = cluster.replicas[holder].pid().unwrap();
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        Instant::now()
    };
    let (answers, killed_at) = tokio::join!(burst, kill);
    cluster.replicas[holder]
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();
    for a in &answers {
        outcome(a);
    }
    let t = tally(&answers);
    println!("HA-FIGURE: burst across the kill: {t:?}");
    // The new holder counts the pushes the dead one made: the limit holds across the failover.
    let pushed = 1 + t.get("pushed").copied().unwrap_or(0);
    assert!(
        pushed <= 5,
        "{pushed} pushes within 10 s across the failover: {t:?}"
    );

    cluster
        .await_holder(other, Duration::from_secs(10))
        .await
        .unwrap();
    println!(
        "HA-FIGURE: SIGKILL -> other replica holds the lease within {:?} (ttl 3s; the burst ran meanwhile)",
        killed_at.elapsed()
    );

    // Nothing is lost: every activation answered 202 is in the app or recorded as deferred
    // (those the holder's limiter refused wait for the next cycle, by design); the ones
    // deferred while nobody held the app are applied by the take-over cycle.
    let survivor = &cluster.replicas[other];
    let accounted = async {
        loop {
            let status = survivor.status().await.unwrap();
            let deferred: Vec<String> = status.apps[0]
                .deferred_activations
                .iter()
                .map(|a| a.activation.user.to_string())
                .collect();
            if ELIGIBLE[1..]
                .iter()
                .all(|u| has(&cluster, u) || deferred.iter().any(|d| d == u))
            {
                return deferred;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let deferred = tokio::time::timeout(Duration::from_secs(15), accounted)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "activations answered 202 are neither in the app nor deferred: members {:?}\n{}",
                cluster.members_of(PIM_NAME),
                survivor.log()
            )
        });
    println!(
        "HA-FIGURE: {:?} after the kill every activation is in the app or deferred ({} deferred)",
        killed_at.elapsed(),
        deferred.len()
    );
    survivor.sync().await.unwrap();
    let members = cluster.members_of(PIM_NAME);
    for u in &ELIGIBLE[1..] {
        assert!(
            members.iter().any(|m| m == u),
            "{u} after a cycle: {members:?}"
        );
    }

    removed_on_time(&cluster, expiring, expires_at, "failover").await;
    let status = cluster.replicas[other].status().await.unwrap();
    assert!(status.apps[0].deferred_activations.is_empty(), "{status:?}");
}

/// A holder frozen with SIGSTOP past its lease sends nothing when SIGCONT wakes it, though
/// its expiry timer fell due meanwhile: the other replica took over, removed the expired
/// membership itself, and the woken one forwards what it receives to the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_lease_writes_nothing_when_it_wakes() {
    let mut cluster = start(spec(2, Backend::Postgres, "3s")).await;
    let holder = cluster.holder(Duration::from_secs(10)).await.unwrap();
    let other = 1 - holder;
    let expiring = ELIGIBLE[0];
    let expires_at = Utc::now() + chrono::Duration::seconds(5);
    let a = cluster.replicas[holder]
        .activate(PIM, expiring, expires_at)
        .await
        .unwrap();
    assert_eq!(outcome(&a), Outcome::Pushed, "{}", a.body);
    assert!(has(&cluster, expiring));

    cluster.replicas[holder].signal("STOP").unwrap();
    let frozen_at = Instant::now();
    let took = cluster
        .await_holder(other, Duration::from_secs(10))
        .await
        .unwrap();
    println!(
        "HA-FIGURE: SIGSTOP -> other replica holds the lease {took:?} later (lease lapse, ttl 3s)"
    );
    // The expiry (5 s) falls due during the freeze: the new holder removes it.
    assert!(
        until(Duration::from_secs(10), || !has(&cluster, expiring))
            .await
            .is_some(),
        "the new holder did not remove the expired activation: {:?}",
        cluster.members_of(PIM_NAME)
    );
    assert!(group_patches(&cluster.replicas[other].proxy.writes()) >= 1);

    cluster.replicas[holder].signal("CONT").unwrap();
    let woken_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = cluster.replicas[holder]
        .activate(PIM, ELIGIBLE[1], Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(outcome(&b), Outcome::Pushed, "{}", b.body);
    assert!(has(&cluster, ELIGIBLE[1]));
    let stale = cluster.replicas[holder].proxy.writes_since(frozen_at);
    assert!(
        stale.is_empty(),
        "the replica frozen past its lease wrote after waking: {stale:?}\n{}",
        cluster.replicas[holder].log()
    );
    let woken = cluster.replicas[holder].log();
    assert!(
        woken.contains("lease lost"),
        "the stale holder says why it stopped:\n{woken}"
    );
    let forwarded = cluster.replicas[other].proxy.writes_since(woken_at);
    assert!(group_patches(&forwarded) >= 1, "{forwarded:?}");
    assert_eq!(
        cluster.current_holder().await,
        Some(other),
        "the woken replica took the lease back"
    );
}

/// One node on the embedded SQLite store, killed with SIGKILL and started again at once: the
/// new process does not wait out the dead one's lease, its start-up cycle applies the
/// deferred activations, and an activation that ends after the restart leaves on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_killed_and_restarted_applies_deferred_and_revokes_on_time() {
    let mut cluster = start(spec(1, Backend::Sqlite, "15s")).await;
    cluster.holder(Duration::from_secs(10)).await.unwrap();
    let expiring = ELIGIBLE[0];
    let expires_at = Utc::now() + chrono::Duration::seconds(6);
    let node = &cluster.replicas[0];
    let mut answers = vec![node.activate(PIM, expiring, expires_at).await.unwrap()];
    let later = Utc::now() + chrono::Duration::hours(1);
    for user in &ELIGIBLE[1..7] {
        answers.push(node.activate(PIM, user, later).await.unwrap());
    }
    let t = tally(&answers);
    assert_eq!(
        (t.get("pushed"), t.get("deferred")),
        (Some(&5), Some(&2)),
        "{t:?}"
    );

    cluster.replicas[0].kill().await.unwrap();
    let restarted = Instant::now();
    cluster.replicas[0].start().unwrap();
    cluster.replicas[0]
        .await_ready(Duration::from_secs(30))
        .await
        .unwrap();
    let applied = until(Duration::from_secs(10), || {
        ELIGIBLE[1..7].iter().all(|u| has(&cluster, u))
    })
    .await;
    assert!(
        applied.is_some(),
        "the deferred activations were not applied after the restart: {:?}\n{}",
        cluster.members_of(PIM_NAME),
        cluster.replicas[0].log()
    );
    println!(
        "HA-FIGURE: restart after SIGKILL -> deferred applied {:?} after the new process started",
        applied.unwrap() - restarted
    );
    removed_on_time(&cluster, expiring, expires_at, "restart").await;
}
