//! Helpers shared by the service-mode tests (webhook, poller): the test directory, configs,
//! a started service, seeding the store with what an app holds, and the sandbox as the app.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wiremock::MockServer;

use scim_sync::clock::{self, SharedClock};
use scim_sync::config::{Config, Secret};
use scim_sync::engine::{App, Engine};
use scim_sync::mapping;
use scim_sync::model::{AppName, Directory, ObservedUser, Origin, ScimId, SourceGroup, SourceId};
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::service::{Options, Service, TickSource};
use scim_sync::source::{MemorySource, Source};
use scim_sync::store::{Change, Store};
use scim_sync_testkit::synthetic;

use super::{BASE, TOKEN};

/// The webhook bearer token of test services.
pub const WEBHOOK_TOKEN: &str = "webhook-secret-for-tests";

/// A directory with users `u0`..`u9`, each eligible for the PIM groups `g-pim` and
/// `g-pim-2`; `u0` is also a standing member of `g-staff`.
pub fn directory() -> Directory {
    let mut d = Directory::default();
    let ids: Vec<SourceId> = (0..10).map(|i| SourceId::new(format!("u{i}"))).collect();
    for id in &ids {
        d.users.insert(id.clone(), synthetic::user(id));
    }
    for (gid, name) in [("g-pim", "PIM Admins"), ("g-pim-2", "PIM Operators")] {
        d.groups.insert(
            SourceId::from(gid),
            SourceGroup {
                id: SourceId::from(gid),
                display_name: name.into(),
                members: vec![],
                eligible: ids.clone(),
            },
        );
    }
    d.groups.insert(
        SourceId::from("g-staff"),
        SourceGroup {
            id: SourceId::from("g-staff"),
            display_name: "Staff".into(),
            members: vec![SourceId::from("u0")],
            eligible: vec![],
        },
    );
    d
}

/// One `[[apps]]` entry as TOML.
pub fn app_toml(name: &str, base_url: &str, groups: &[&str], extra: &str) -> String {
    format!(
        "[[apps]]\nname = \"{name}\"\nbase_url = \"{base_url}\"\ntoken_env = \"T_{name}\"\ngroups = {groups:?}\n{extra}\n"
    )
}

/// A config with a state file in `dir` and the given `[[apps]]` entries.
pub fn config(dir: &Path, apps: &[String], interval: &str) -> Config {
    let text = format!(
        "[service]\nfull_sync_interval = \"{interval}\"\nstate = \"sqlite://{}\"\n\n[source]\nkind = \"file\"\npath = \"unused.json\"\n\n{}",
        dir.join("state.db").display(),
        apps.join("\n")
    );
    Config::parse(Path::new("service-test.toml"), &text).unwrap()
}

/// Everything a test service needs, started from `cfg` over `source`.
pub async fn start(
    cfg: &Config,
    source: Arc<dyn Source>,
    token: &str,
    options: Options,
) -> Service {
    start_on(cfg, source, token, options, clock::system()).await
}

/// [`start`], on `clock` (a [`clock::TokioClock`] runs the service under paused time).
pub async fn start_on(
    cfg: &Config,
    source: Arc<dyn Source>,
    token: &str,
    options: Options,
    clock: SharedClock,
) -> Service {
    let store = Store::open(cfg.service.state_url().unwrap().expose())
        .await
        .unwrap();
    let engine = Engine::new(source, store).with_clock(clock);
    let apps = cfg
        .apps
        .iter()
        .map(|a| App::new(a.clone(), &Secret::new(token)).unwrap())
        .collect();
    Service::start(
        cfg.clone(),
        apps,
        engine,
        Secret::new(WEBHOOK_TOKEN),
        options,
    )
    .await
    .unwrap()
}

/// Records, in the store of `svc`, that `app` already holds every user of the directory (as
/// `scim-{id}`, with exactly the mapped attributes) and each of `groups` (as `grp-{id}`, no
/// members): a push is then one `PATCH /Groups/grp-{id}`, and a cycle sends only members.
pub async fn seed(svc: &Service, dir: &Directory, app: &str, groups: &[&str]) {
    let cfg = svc
        .config()
        .apps
        .iter()
        .find(|a| a.name.as_str() == app)
        .unwrap()
        .clone();
    let mut changes = Vec::new();
    for g in groups {
        let group = SourceId::from(*g);
        let desired =
            mapping::desired_for_membership(dir, &cfg, &group, &SourceId::from("u1")).unwrap();
        changes.push(Change::PutGroup(
            group.clone(),
            ScimId::new(format!("grp-{g}")),
            Origin::Created,
            desired.groups[&group].display_name.clone(),
        ));
        for user in dir.users.keys() {
            let d = mapping::desired_for_membership(dir, &cfg, &group, user).unwrap();
            changes.push(Change::PutUser(
                user.clone(),
                ObservedUser {
                    scim_id: ScimId::new(format!("scim-{user}")),
                    origin: Origin::Created,
                    attrs: d.users[user].attrs.clone(),
                },
            ));
        }
    }
    svc.engine()
        .store()
        .commit(&AppName::from(app), &changes, chrono::Utc::now())
        .await
        .unwrap();
}

/// The member values of every PATCH the server received on `/Groups/{id}`.
pub async fn patched_members(server: &MockServer, group_scim_id: &str) -> Vec<Vec<String>> {
    let path = format!("{BASE}/Groups/{group_scim_id}");
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path() == path)
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let mut values: Vec<String> = body["Operations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|op| op["op"].as_str().unwrap().eq_ignore_ascii_case("add"))
                .flat_map(|op| op["value"].as_array().cloned().unwrap_or_default())
                .map(|v| v["value"].as_str().unwrap().to_owned())
                .collect();
            values.sort();
            values
        })
        .collect()
}

/// The sandbox, a directory, and a state folder shared by successive services.
pub struct Sandboxed {
    pub sandbox: SandboxHandle,
    pub source: MemorySource,
    pub tmp: tempfile::TempDir,
}

impl Sandboxed {
    pub async fn new() -> Sandboxed {
        let sandbox =
            SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
                .await
                .unwrap();
        Sandboxed {
            sandbox,
            source: MemorySource::new(directory()),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn config(&self, extra: &str) -> Config {
        config(
            self.tmp.path(),
            &[app_toml(
                "crm",
                self.sandbox.base_url(),
                &["g-pim", "g-staff"],
                extra,
            )],
            "40m",
        )
    }

    /// A service over the shared state; the first one runs the start-up cycle.
    pub async fn service(&self, extra: &str, startup_cycle: bool) -> Service {
        self.service_with(
            extra,
            Options {
                ticks: TickSource::Tokio,
                startup_cycle,
                ..Options::default()
            },
        )
        .await
    }

    /// A service over the shared state, with `options`.
    pub async fn service_with(&self, extra: &str, options: Options) -> Service {
        start(
            &self.config(extra),
            Arc::new(self.source.clone()),
            TOKEN,
            options,
        )
        .await
    }

    /// [`Sandboxed::service`] on `clock`.
    pub async fn service_on(&self, clock: &SharedClock, startup_cycle: bool) -> Service {
        self.service_on_with(clock, "", startup_cycle).await
    }

    /// [`Sandboxed::service_on`] with `extra` lines in the app's `[[apps]]` entry.
    pub async fn service_on_with(
        &self,
        clock: &SharedClock,
        extra: &str,
        startup_cycle: bool,
    ) -> Service {
        let options = Options {
            ticks: TickSource::Tokio,
            startup_cycle,
            ..Options::default()
        };
        let (cfg, source) = (self.config(extra), Arc::new(self.source.clone()));
        start_on(&cfg, source, TOKEN, options, clock.clone()).await
    }

    /// userNames of the members the sandbox holds in the group named `name`.
    pub fn members(&self, name: &str) -> Vec<String> {
        group_members(self.sandbox.state(), name, "userName")
    }

    /// Under a [`HeldClock`]: moves paused time `step` at a time until the group's members
    /// are `want`; returns how much paused time that took. Fails after `within`.
    pub async fn step_until_members(
        &self,
        held: &HeldClock,
        name: &str,
        want: &[&str],
        step: Duration,
        within: Duration,
    ) -> Duration {
        let mut passed = Duration::ZERO;
        loop {
            let got = self.members(name);
            if got == want {
                return passed;
            }
            assert!(
                passed < within,
                "{name}: members {got:?}, want {want:?} after {passed:?}"
            );
            held.step(step).await;
            passed += step;
        }
    }

    /// Under a [`HeldClock`], without moving it: waits (real time, up to `within`) until the
    /// group's members are `want`. Proves that what was due by now happened without more
    /// paused time.
    pub async fn await_members_held(&self, name: &str, want: &[&str], within: Duration) {
        let until = std::time::Instant::now() + within;
        loop {
            let got = self.members(name);
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "{name}: members {got:?}, want {want:?}"
            );
            settle().await;
        }
    }

    /// Waits until the group's members are `want`, up to `within`.
    pub async fn await_members(&self, name: &str, want: &[&str], within: Duration) {
        let until = tokio::time::Instant::now() + within;
        loop {
            let got = self.members(name);
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{name}: members {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The members the sandbox holds in the group named `name`, each by its attribute `by`
/// (`userName`, or `externalId`: the source id), sorted.
pub fn group_members(state: &SandboxState, name: &str, by: &str) -> Vec<String> {
    let users = state.users();
    let Some(g) = state
        .groups()
        .into_iter()
        .find(|g| g["displayName"] == name)
    else {
        return vec![];
    };
    let mut out: Vec<String> = g["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| users.iter().find(|u| u["id"] == m["value"]))
        .filter_map(|u| u[by].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// Paused tokio time that stands still until moved. Paused time would jump ahead whenever
/// the runtime waits on SQLite's worker thread or a loopback socket; a task that keeps
/// yielding holds it still, and [`HeldClock::step`] moves it, giving real time to the
/// store and the sandbox after each step.
pub struct HeldClock(tokio::task::JoinHandle<()>);

impl HeldClock {
    /// Holds paused tokio time still (the test has paused it: `start_paused`, or
    /// `tokio::time::pause()` once the sandbox and the store are up).
    pub fn hold() -> HeldClock {
        HeldClock(tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        }))
    }

    /// Moves paused time by `by`, then lets the tasks it woke do their IO (real time).
    pub async fn step(&self, by: Duration) {
        tokio::time::advance(by).await;
        settle().await;
    }
}

impl Drop for HeldClock {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lets tasks woken by the last step run their store and HTTP work (real time; the clock
/// holds).
pub async fn settle() {
    let until = std::time::Instant::now() + Duration::from_millis(25);
    while std::time::Instant::now() < until {
        tokio::task::yield_now().await;
    }
}
