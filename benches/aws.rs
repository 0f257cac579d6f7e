//! The AWS IAM Identity Center benchmark (docs/AWS.md): what scim-sync sends to an Identity
//! Center tenant, and how long it takes, for the jobs of a JIT set-up through Entra ID: the
//! engine in process, an app with `profile = "aws-identity-center"` on the AWS double
//! (`scim_sync_testkit::aws_double`, written from AWS's developer guide) on loopback.
//!
//! The directory is generated here, deterministic: `--users` users with every attribute the
//! profile requires, all in `AWS Access` (the standing group, over 100 members), each in one
//! of `--teams` team groups, and `AWS Admins`, the privileged (PIM) group: 2 standing members
//! and `--pushes` eligible users. Memberships: 2 × users + 2.
//!
//! 1. the initial sync into the empty double;
//! 2. a re-run with no change (0 requests expected);
//! 3. a verifying cycle (`sync-now --verify`) with no drift, also per 1,000 memberships;
//! 4. drift made directly in the double (an intruder added to `AWS Admins`, a member removed
//!    from a team, a title edited), then a verifying cycle repairing it (3 repairs expected);
//! 5. JIT elevations: `Engine::push` of each eligible user into `AWS Admins` (a user the app
//!    already holds), then their removal through `Engine::revoke` (the expiry's path);
//! 6. a plain cycle after: 0 requests.
//!
//! Every step's requests are counted twice, by the double and by the cycle report (the app's
//! client for a revoke); the bench fails when they disagree, or when the double's state is not
//! what the step should leave. Each figure also gets an estimate at a real round trip:
//! requests × `--rtt-ms` ÷ `--concurrency` for cycles, requests × `--rtt-ms` for a push or a
//! removal (one request in flight): an estimate, not a measurement.
//!
//! Options (after `--`): `--users N` (default 2000), `--teams N` (default 4), `--pushes N`
//! (default 20), `--concurrency N` (default 4), `--rtt-ms N` (default 60), `--out FILE`.
//! Figures and the command: docs/AWS.md.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;

use scim_sync::engine::{AppCycle, Revoked};
use scim_sync::model::{Directory, SourceGroup, SourceId, SourceUser};
use scim_sync::store::Activation;
use scim_sync_testkit::aws_double::{AWS_TOKEN, AwsDouble};

#[allow(dead_code)]
mod common;
use common::{AppWorld, Machine, mb, peak_rss, secs};

/// Source id and display name of the standing access group.
const ACCESS: (&str, &str) = ("g-aws-access", "AWS Access");
/// Source id and display name of the privileged (PIM for Groups) group.
const ADMINS: (&str, &str) = ("g-aws-admins", "AWS Admins");
/// Standing members of the privileged group (break-glass accounts).
const STANDING_ADMINS: usize = 2;

struct Opts {
    users: usize,
    teams: usize,
    pushes: usize,
    concurrency: usize,
    rtt: Duration,
}

fn main() -> anyhow::Result<()> {
    common::log_from_env();
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| -> anyhow::Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).context(name.to_owned())?.parse()?),
            None => Ok(default),
        }
    };
    let o = Opts {
        users: opt("--users", 2_000)?,
        teams: opt("--teams", 4)?.max(1),
        pushes: opt("--pushes", 20)?,
        concurrency: opt("--concurrency", 4)?.max(1),
        rtt: Duration::from_millis(opt("--rtt-ms", 60)? as u64),
    };
    ensure!(
        o.users > STANDING_ADMINS + o.pushes,
        "--users must exceed the standing admins, the pushes and the one user the drift edits"
    );
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1).cloned());
    // The options as given, for the command line printed with the figures.
    let given: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let md = rt.block_on(run(&o, &given))?;
    match out {
        Some(path) => std::fs::write(&path, &md).with_context(|| path.clone())?,
        None => print!("{md}"),
    }
    Ok(())
}

fn uid(i: usize) -> SourceId {
    SourceId::new(format!("u{i:05}"))
}

fn user_name(i: usize) -> String {
    format!("user{i:05}@contoso.example")
}

/// The directory of the module header: every user with the attributes the AWS profile needs.
fn directory(o: &Opts) -> Directory {
    let mut d = Directory::default();
    for i in 0..o.users {
        let attrs = json!({
            "userPrincipalName": user_name(i), "mail": user_name(i),
            "displayName": format!("Given{i:05} Family{}", i % 97),
            "givenName": format!("Given{i:05}"), "surname": format!("Family{}", i % 97),
            "accountEnabled": true, "jobTitle": "Engineer", "department": format!("Team {}", i % o.teams),
        });
        d.users.insert(
            uid(i),
            SourceUser {
                id: uid(i),
                attrs: scim_sync::model::attrs_from_json(attrs),
            },
        );
    }
    let mut group = |(id, name): (&str, &str), members: Vec<SourceId>, eligible: Vec<SourceId>| {
        d.groups.insert(
            id.into(),
            SourceGroup {
                id: id.into(),
                display_name: name.into(),
                members: members.into_iter().collect(),
                eligible,
            },
        );
    };
    group(ACCESS, (0..o.users).map(uid).collect(), Vec::new());
    for t in 0..o.teams {
        let (id, name) = (format!("g-aws-team-{t}"), format!("AWS Team {t}"));
        let members = (0..o.users).filter(|i| i % o.teams == t).map(uid).collect();
        group((id.as_str(), name.as_str()), members, Vec::new());
    }
    group(
        ADMINS,
        (0..STANDING_ADMINS).map(uid).collect(),
        (STANDING_ADMINS..STANDING_ADMINS + o.pushes)
            .map(uid)
            .collect(),
    );
    d
}

/// The double's id of the user with this `userName`.
fn aws_id(aws: &AwsDouble, name: &str) -> anyhow::Result<String> {
    let user = aws.user_by_name(name).context(name.to_owned())?;
    Ok(user["id"].as_str().context("user id")?.to_owned())
}

/// Runs `step` from zeroed counts and checks that the double received exactly the requests
/// the report counts.
async fn counted(
    aws: &AwsDouble,
    what: &str,
    step: impl Future<Output = anyhow::Result<(AppCycle, Duration)>>,
) -> anyhow::Result<(AppCycle, Duration)> {
    aws.reset_counts();
    let (c, took) = step.await?;
    ensure!(
        c.report.requests == aws.requests(),
        "{what}: the report counts {} requests, the double received {}",
        c.report.requests,
        aws.requests()
    );
    Ok((c, took))
}

/// `q` (0..=1) of sorted durations, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run(o: &Opts, given: &[&str]) -> anyhow::Result<String> {
    let dir = directory(o);
    let memberships: usize = dir.groups.values().map(|g| g.members.len()).sum();
    let aws = AwsDouble::start().await?;
    let w = AppWorld::new(
        &dir,
        &aws.base_url(),
        AWS_TOKEN,
        o.concurrency,
        "profile = \"aws-identity-center\"\n",
    )
    .await?;
    // At a real round trip: requests in flight `concurrency` at a time, or one at a time.
    let at_rtt = |requests: u64, parallel: usize| {
        secs(o.rtt.mul_f64(requests as f64 / parallel.max(1) as f64))
    };
    let per_k = |x: f64| x * 1000.0 / memberships as f64;

    let mut md = String::new();
    writeln!(md, "{}\n", Machine::detect().line())?;
    writeln!(
        md,
        "Command: `cargo bench --bench aws{}{}` (release).\n",
        if given.is_empty() { "" } else { " -- " },
        given.join(" ")
    )?;
    writeln!(
        md,
        "{} users; {} groups ({} with every user, {} teams, {} with {STANDING_ADMINS} standing members and {} eligible); {memberships} memberships; `profile = \"aws-identity-center\"`, `concurrency = {}`; the AWS double on loopback, the engine in process. Requests are counted by the double and by the cycle report, and agree. \"At {} RTT\" is an estimate, not a measurement: requests × {} ÷ {} for a cycle, requests × {} for a push or a removal (one request in flight).\n",
        o.users,
        dir.groups.len(),
        ACCESS.1,
        o.teams,
        ADMINS.1,
        o.pushes,
        o.concurrency,
        secs(o.rtt),
        secs(o.rtt),
        o.concurrency,
        secs(o.rtt),
    )?;
    writeln!(
        md,
        "| step | requests | time (loopback) | at {} RTT (estimate) | result |\n|---|---|---|---|---|",
        secs(o.rtt)
    )?;

    // 1. Initial sync.
    let (c, took) = counted(&aws, "initial sync", w.cycle(false)).await?;
    ensure!(
        aws.users().len() == o.users,
        "the double holds {} users",
        aws.users().len()
    );
    ensure!(
        aws.member_names(ACCESS.1).len() == o.users
            && aws.member_names(ADMINS.1).len() == STANDING_ADMINS,
        "the double's memberships differ from the directory"
    );
    writeln!(
        md,
        "| initial sync into the empty double | {} ({} GET, {} POST, {} PATCH) | {} | {} | {} users and {} groups created, {} members added |",
        c.report.requests,
        aws.requests_by("GET"),
        aws.requests_by("POST"),
        aws.requests_by("PATCH"),
        secs(took),
        at_rtt(c.report.requests, o.concurrency),
        c.report.users_created,
        c.report.groups_created,
        c.report.members_added
    )?;

    // 2. No change.
    let (c, took) = counted(&aws, "re-run", w.cycle(false)).await?;
    ensure!(
        c.report.requests == 0,
        "a re-run sent {} requests",
        c.report.requests
    );
    writeln!(
        md,
        "| re-run, no change | {} | {} | {} | nothing sent |",
        c.report.requests,
        secs(took),
        at_rtt(c.report.requests, o.concurrency)
    )?;

    // 3. Verify, no drift.
    let (c, took) = counted(&aws, "verify", w.cycle(true)).await?;
    ensure!(
        c.report.drift_repaired == 0 && aws.writes() == 0,
        "a verification of an untouched app repaired {}",
        c.report.drift_repaired
    );
    let verify = (c.report.requests, took);
    writeln!(
        md,
        "| verify (`--verify`), no drift | {} ({} user-listing pages, {} user reads, {} group reads, {} member-listing pages) | {} | {} | drift_repaired 0, no write |",
        c.report.requests,
        aws.log()
            .iter()
            .filter(|(m, p)| m == "GET" && p.contains("/Users?") && !p.contains("filter="))
            .count(),
        aws.log()
            .iter()
            .filter(|(m, p)| m == "GET" && p.contains("/Users/"))
            .count(),
        aws.log()
            .iter()
            .filter(|(m, p)| m == "GET" && p.contains("/Groups/"))
            .count(),
        aws.log()
            .iter()
            .filter(|(m, p)| m == "GET" && p.contains("/Users?") && p.contains("filter="))
            .count(),
        secs(took),
        at_rtt(c.report.requests, o.concurrency)
    )?;

    // 4. Drift made in the double, as in the AWS console, then verify.
    let admins = aws.group_id(ADMINS.1).context("admins group")?;
    let team0 = aws.group_id("AWS Team 0").context("team group")?;
    let intruder = aws.create_user_directly(json!({
        "userName": "mallory@contoso.example", "displayName": "Mallory",
        "name": {"givenName": "Mallory", "familyName": "Intruder"},
    }));
    ensure!(
        aws.add_member_directly(&admins, &intruder),
        "intruder not added"
    );
    let removed = user_name(o.teams * 3);
    ensure!(
        aws.remove_member_directly(&team0, &aws_id(&aws, &removed)?),
        "member not removed"
    );
    let edited = user_name(o.users - 1);
    ensure!(
        aws.set_user_attr_directly(&aws_id(&aws, &edited)?, "title", json!("CEO")),
        "title not edited"
    );
    let (c, took) = counted(&aws, "verify after drift", w.cycle(true)).await?;
    ensure!(
        c.report.drift_repaired == 3,
        "repaired {} differences, not 3: {}",
        c.report.drift_repaired,
        c.report
    );
    ensure!(
        aws.member_names(ADMINS.1).len() == STANDING_ADMINS
            && aws.member_names("AWS Team 0").contains(&removed)
            && aws
                .user_by_name(&edited)
                .is_some_and(|u| u["title"] == "Engineer")
            && aws.user_by_name("mallory@contoso.example").is_some(),
        "the double is not repaired as expected"
    );
    writeln!(
        md,
        "| verify after drift (intruder in {}, member removed from a team, title edited) | {} ({} writes) | {} | {} | drift_repaired {} |",
        ADMINS.1,
        c.report.requests,
        aws.writes(),
        secs(took),
        at_rtt(c.report.requests, o.concurrency),
        c.report.drift_repaired
    )?;

    // 5. JIT elevations: push each eligible user into the privileged group, then remove it.
    let group = SourceId::new(ADMINS.0);
    let client = &w.app.client;
    let mut pushes = Vec::new();
    let mut push_requests = 0;
    let eligible: Vec<usize> = (STANDING_ADMINS..STANDING_ADMINS + o.pushes).collect();
    for &i in &eligible {
        aws.reset_counts();
        let sent = client.requests_sent();
        let t = Instant::now();
        let (report, held) = w.engine.push(&w.app, &group, &uid(i)).await;
        pushes.push(t.elapsed());
        ensure!(held, "push of {} not confirmed: {report}", uid(i));
        ensure!(
            report.requests == aws.requests() && client.requests_sent() - sent == aws.requests(),
            "push: the report counts {}, the client {}, the double {}",
            report.requests,
            client.requests_sent() - sent,
            aws.requests()
        );
        push_requests += report.requests;
    }
    ensure!(
        aws.member_names(ADMINS.1).len() == STANDING_ADMINS + o.pushes,
        "the double does not hold the pushed members"
    );
    let mut revokes = Vec::new();
    let mut revoke_requests = 0;
    let now = chrono::Utc::now();
    for &i in &eligible {
        let activation = Activation {
            id: format!("bench-{i}"),
            group: group.clone(),
            user: uid(i),
            expires_at: now,
            received_at: now,
            origin: "bench".into(),
            justification: None,
            ticket_number: None,
            ticket_system: None,
        };
        aws.reset_counts();
        let sent = client.requests_sent();
        let t = Instant::now();
        let revoked = w.engine.revoke(&w.app, &activation).await;
        revokes.push(t.elapsed());
        ensure!(
            revoked == Revoked::Removed,
            "revoke of {}: {revoked:?}",
            uid(i)
        );
        ensure!(
            client.requests_sent() - sent == aws.requests(),
            "revoke: the client counts {}, the double {}",
            client.requests_sent() - sent,
            aws.requests()
        );
        revoke_requests += aws.requests();
    }
    ensure!(
        aws.member_names(ADMINS.1).len() == STANDING_ADMINS,
        "the double still holds removed members"
    );
    pushes.sort();
    revokes.sort();
    let n = o.pushes.max(1) as u64;
    writeln!(
        md,
        "| JIT elevation: `Engine::push` into {} of a user the app holds, × {} | {:.1} each ({} in all) | p50 {}, max {} | {} each | confirmed by the app |",
        ADMINS.1,
        o.pushes,
        push_requests as f64 / n as f64,
        push_requests,
        ms(quantile(&pushes, 0.5)),
        ms(quantile(&pushes, 1.0)),
        at_rtt(push_requests.div_ceil(n), 1)
    )?;
    writeln!(
        md,
        "| its removal: `Engine::revoke` (the expiry's path), × {} | {:.1} each ({} in all) | p50 {}, max {} | {} each | removed |",
        o.pushes,
        revoke_requests as f64 / n as f64,
        revoke_requests,
        ms(quantile(&revokes, 0.5)),
        ms(quantile(&revokes, 1.0)),
        at_rtt(revoke_requests.div_ceil(n), 1)
    )?;

    // 6. The store agrees with the app after the pushes and removals.
    let (c, took) = counted(&aws, "plain cycle after", w.cycle(false)).await?;
    ensure!(
        c.report.requests == 0,
        "the cycle after sent {}",
        c.report.requests
    );
    writeln!(
        md,
        "| plain cycle after | {} | {} | {} | nothing sent |",
        c.report.requests,
        secs(took),
        at_rtt(c.report.requests, o.concurrency)
    )?;

    let (requests, took) = verify;
    writeln!(
        md,
        "\nA verification costs {:.0} requests and {:.3} s per 1,000 memberships on loopback ({} at {} RTT, estimated).",
        per_k(requests as f64),
        per_k(took.as_secs_f64()),
        secs(o.rtt.mul_f64(per_k(requests as f64) / o.concurrency as f64)),
        secs(o.rtt)
    )?;
    if let Some(peak) = peak_rss() {
        writeln!(
            md,
            "Peak RSS of the bench process (engine, store, double): {}.",
            mb(peak)
        )?;
    }
    Ok(md)
}
