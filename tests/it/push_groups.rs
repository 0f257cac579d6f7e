//! Push groups with the file source: the directory file is really watched (no paused time:
//! the operating system reports the change), and an edit reaches the sandbox app at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use scim_sync::config::Config;
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::service::{Options, Service, TickSource};
use scim_sync::source::FileSource;

use crate::support::TOKEN;
use crate::support::service::{group_members, start};

/// The sandbox, a copy of the sample directory in a temp folder, and a service whose app
/// has `g-it-admins` as a push group and `g-team-sales` as a plain assigned group.
struct World {
    sandbox: SandboxHandle,
    file: PathBuf,
    svc: Service,
    _tmp: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        // The process-wide recorder, installed before anything is counted.
        scim_sync::metrics::install();
        let sandbox =
            SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
                .await
                .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("directory.json");
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/directory.json");
        std::fs::copy(sample, &file).unwrap();
        let text = format!(
            "[service]\nstate = \"sqlite://{}\"\n\n[source]\nkind = \"file\"\npath = \"{}\"\n\n\
             [[apps]]\nname = \"crm\"\nbase_url = \"{}\"\ntoken_env = \"T\"\n\
             groups = [\"g-it-admins\", \"g-team-sales\"]\npush_groups = [\"g-it-admins\"]\n",
            tmp.path().join("state.db").display(),
            file.display(),
            sandbox.base_url()
        );
        let cfg = Config::parse(Path::new("push-groups-test.toml"), &text).unwrap();
        let options = Options {
            ticks: TickSource::Tokio,
            startup_cycle: true,
            ..Options::default()
        };
        let svc = start(&cfg, Arc::new(FileSource::new(&file)), TOKEN, options).await;
        let w = World {
            sandbox,
            file,
            svc,
            _tmp: tmp,
        };
        w.await_members("IT Admins", |m| m.len() == 2, Duration::from_secs(10))
            .await
            .expect("the start-up cycle");
        // Let the watch start before the first edit.
        tokio::time::sleep(Duration::from_millis(300)).await;
        w
    }

    /// Edits the directory file the way a deployment tool does: a new file renamed over it.
    fn edit(&self, change: impl FnOnce(&mut Value)) {
        let mut v: Value = serde_json::from_slice(&std::fs::read(&self.file).unwrap()).unwrap();
        change(&mut v);
        let tmp = self.file.with_extension("json.new");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    /// externalIds (source ids) of the members of the app group named `name`.
    fn members(&self, name: &str) -> Vec<String> {
        group_members(self.sandbox.state(), name, "externalId")
    }

    /// How long until `done` holds for the group's members (`None`: not within `within`).
    async fn await_members(
        &self,
        name: &str,
        done: impl Fn(&[String]) -> bool,
        within: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if done(&self.members(name)) {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    async fn deferred(&self) -> usize {
        scim_sync::status::collect(
            &self.svc.config().apps,
            self.svc.engine().store(),
            chrono::Utc::now(),
        )
        .await
        .unwrap()
        .apps[0]
            .deferred_activations
            .len()
    }
}

fn group<'a>(v: &'a mut Value, id: &str) -> &'a mut Vec<Value> {
    v["groups"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|g| g["id"] == id)
        .unwrap()["members"]
        .as_array_mut()
        .unwrap()
}

/// An edit adding a user to the push group reaches the app within a second; one in a group
/// that is not a push group waits for the cycle; a removal leaves the app at once; a broken
/// file pushes and removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_group_edit_reaches_the_app_at_once_and_other_groups_wait() {
    let w = World::start().await;
    w.edit(|v| {
        group(v, "g-it-admins").push("u-alice".into());
        group(v, "g-team-sales").push("u-bob".into());
    });
    let took = w
        .await_members(
            "IT Admins",
            |m| m.iter().any(|u| u == "u-alice"),
            Duration::from_secs(5),
        )
        .await
        .expect("the push group's new member was not pushed");
    println!("PUSH-GROUP: file renamed -> member in the app in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The change's age when it was taken in: from the file's modification time.
    let text = w.svc.metrics_text().await.unwrap();
    assert!(
        text.contains("scim_sync_detection_latency_seconds_count{origin=\"push-group\"}"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !w.members("Sales").iter().any(|u| u == "u-bob"),
        "a plain assigned group waits for the cycle"
    );

    w.edit(|v| group(v, "g-it-admins").retain(|m| m != "u-eli"));
    let took = w
        .await_members(
            "IT Admins",
            |m| !m.iter().any(|u| u == "u-eli"),
            Duration::from_secs(5),
        )
        .await
        .expect("the removed member is still in the app");
    println!("PUSH-GROUP: file renamed -> removed from the app in {took:?}");
    assert_eq!(w.members("IT Admins"), ["u-alice", "u-fatima"]);

    // A member the file's users do not list is not an identity: nothing to push.
    w.edit(|v| group(v, "g-it-admins").push("u-nobody".into()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = scim_sync::status::collect(
        &w.svc.config().apps,
        w.svc.engine().store(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let app = &status.apps[0];
    assert!(
        app.active_activations
            .iter()
            .chain(&app.deferred_activations)
            .all(|a| a.activation.user.as_str() != "u-nobody"),
        "{app:?}"
    );

    std::fs::write(&w.file, b"{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        w.members("IT Admins"),
        ["u-alice", "u-fatima"],
        "a broken file removes nothing"
    );
    w.svc.shutdown(Duration::from_secs(5)).await;
}

/// Eight users added to the push group in one edit: 5 pushed and 3 deferred, as for
/// activations, shown in status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_additions_at_once_give_five_pushed_and_three_deferred() {
    let w = World::start().await;
    let eight = [
        "u-alice", "u-bob", "u-carol", "u-dan", "u-erin", "u-frank", "u-grace", "u-hiro",
    ];
    w.edit(|v| {
        let m = group(v, "g-it-admins");
        m.extend(eight.iter().map(|u| Value::from(*u)));
    });
    w.await_members("IT Admins", |m| m.len() == 7, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("5 pushed: {:?}", w.members("IT Admins")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.members("IT Admins").len(), 7, "2 standing + 5 pushed");
    assert_eq!(w.deferred().await, 3);
    w.svc.shutdown(Duration::from_secs(5)).await;
}
