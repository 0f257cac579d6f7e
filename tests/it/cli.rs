//! The binary as a user runs it: exit codes, messages that name the file and key at fault,
//! `sync-now --dry-run` and `--json` output, `status`, `check-config`, and the demo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use scim_sync::sandbox::{SandboxHandle, SandboxState};

const TOKEN: &str = "cli-secret-token-value";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scim-sync"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env_remove("SCIM_SYNC_CONFIG").env_remove("RUST_LOG");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A config in a temp folder pointing at `base_url`, with the repo's sample directory.
fn write_config(dir: &Path, base_url: &str, extra: &str) -> PathBuf {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/directory.json");
    let cfg = format!(
        r#"[service]
state = "sqlite://{state}"

[source]
kind = "file"
path = "{directory}"

[[apps]]
name = "crm"
base_url = "{base_url}"
token_env = "CLI_TEST_TOKEN"
groups = ["g-team-eng", "g-it-admins"]
{extra}
"#,
        state = dir.join("state/cli.db").display(),
        directory = directory.display(),
    );
    let path = dir.join("scim-sync.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn demo_exits_zero_and_shows_each_step() {
    let o = bin().arg("demo").output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("1. Initial sync"), "{out}");
    assert!(out.contains("zero SCIM requests sent"), "{out}");
    assert!(!out.contains('✗'), "{out}");
}

#[test]
fn bad_config_exits_2_naming_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "http://127.0.0.1:9/scim/v2", "concurency = 4");
    let o = bin()
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("scim-sync.toml:13:"), "{err}");
    assert!(err.contains("concurency"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear message: {err}");

    let o = bin()
        .arg("--config")
        .arg(tmp.path().join("nope.toml"))
        .arg("sync-now")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("nope.toml"), "{err}");
}

/// `scim-sync demo | head -1`: the reader goes away after the first line; the command ends
/// quietly with exit 0 instead of panicking on the broken pipe.
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::BufRead;
    let mut child = bin()
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("scim-sync demo"), "{first}");
    // The reader is dropped here: the demo's next lines meet a closed pipe.
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

#[test]
fn missing_token_is_named_and_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "http://127.0.0.1:9/scim/v2", "");
    let o = bin()
        .arg("--config")
        .arg(&path)
        .arg("sync-now")
        .env_remove("CLI_TEST_TOKEN")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("apps[crm].token_env") && err.contains("CLI_TEST_TOKEN"),
        "{err}"
    );
}

#[test]
fn unknown_app_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "http://127.0.0.1:9/scim/v2", "");
    let o = bin()
        .args(["sync-now", "--app", "erp", "--config"])
        .arg(&path)
        .env("CLI_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("no app named \"erp\"") && err.contains("crm"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_now_dry_run_then_real_then_nothing() {
    let sandbox = SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), sandbox.base_url(), "");
    // The sandbox serves on this test's runtime, so the binary runs on a blocking thread.
    let run = |args: &[&str]| {
        let mut c = bin();
        c.arg("--config")
            .arg(&path)
            .args(args)
            .env("CLI_TEST_TOKEN", TOKEN);
        async move {
            tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap()
        }
    };

    let o = run(&["check-config"]).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("group g-team-eng \"Engineering\""), "{out}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));

    let o = run(&["sync-now", "--dry-run"]).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("create user alice.smith@contoso.example (u-alice)"),
        "{out}"
    );
    assert!(out.contains("create group \"Engineering\""), "{out}");
    assert!(
        out.contains("(dry run: would be)") && out.contains("3 reads, no write"),
        "{out}"
    );
    assert_eq!(
        sandbox.state().requests(),
        3,
        "a dry run reads the app's three discovery documents, and sends nothing else"
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));

    let o = run(&["sync-now", "--json"]).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v["apps"][0];
    assert_eq!(r["app"], "crm");
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["users_created"], 14);
    assert_eq!(
        r["requests"].as_u64(),
        Some(sandbox.state().requests() - 3),
        "every request but the dry run's is counted (a dry run keeps nothing learnt, so the \
         real run reads the discovery documents again)"
    );

    let o = run(&["sync-now", "--json"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["apps"][0]["requests"], 0);

    let o = run(&["status", "--json"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = &v["apps"][0];
    assert_eq!(a["name"], "crm");
    assert_eq!(a["last_cycle"]["requests"], 0);
    assert_eq!(a["quarantined"], false);
    assert_eq!(a["schema"]["capabilities"]["patch"], true, "{a}");
    assert_eq!(a["schema"]["undeclared"], json!({}), "{a}");
    assert!(a["failing_objects"].as_array().unwrap().is_empty());
    sandbox.shutdown().await;
}

#[test]
fn unreachable_app_exits_1_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let path = write_config(tmp.path(), "http://127.0.0.1:9/scim/v2", "timeout = \"2s\"");
    let o = bin()
        .arg("--config")
        .arg(&path)
        .arg("sync-now")
        .env("CLI_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("crm: failed"), "{out}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
}

/// `run` as an administrator runs it: ready on `service.listen`, `activate` pushes at once,
/// `sync-now` beside it hands its cycle to the service, SIGTERM stops it with exit 0, and
/// neither token is ever printed.
#[tokio::test(flavor = "multi_thread")]
async fn run_takes_activations_hands_over_sync_now_and_stops_cleanly_on_sigterm() {
    const WEBHOOK: &str = "cli-webhook-token-value";
    let sandbox = SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/directory.json");
    let path = tmp.path().join("scim-sync.toml");
    std::fs::write(
        &path,
        format!(
            "[service]\nlisten = \"127.0.0.1:{port}\"\nstate = \"sqlite://{}\"\n\n[source]\nkind = \"file\"\npath = \"{}\"\n\n[[apps]]\nname = \"crm\"\nbase_url = \"{}\"\ntoken_env = \"CLI_TEST_TOKEN\"\ngroups = [\"g-it-admins\", \"g-prod-admins\"]\n",
            tmp.path().join("state/cli.db").display(),
            directory.display(),
            sandbox.base_url()
        ),
    )
    .unwrap();
    let command = |args: &[&str]| {
        let mut c = bin();
        c.arg("--config")
            .arg(&path)
            .args(args)
            .env("CLI_TEST_TOKEN", TOKEN)
            .env("SCIM_SYNC_WEBHOOK_TOKEN", WEBHOOK);
        tokio::process::Command::from(c)
    };

    let service = command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let started = std::time::Instant::now();
    loop {
        if let Ok(r) = http.get(&ready).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "run did not become ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let o = command(&[
        "activate",
        "--group",
        "g-prod-admins",
        "--user",
        "u-alice",
        "--for",
        "1h",
    ])
    .output()
    .await
    .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("crm: pushed, the app confirmed in"), "{out}");
    let alice = sandbox
        .state()
        .users()
        .into_iter()
        .find(|u| u["userName"] == "alice.smith@contoso.example")
        .expect("alice was created by the push");
    let pim = sandbox
        .state()
        .groups()
        .into_iter()
        .find(|g| g["displayName"] == "Production Admins (PIM)")
        .expect("the PIM group exists");
    assert!(
        pim["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["value"] == alice["id"]),
        "alice is not in the PIM group: {pim}"
    );

    let o = command(&["sync-now"]).output().await.unwrap();
    let (out2, err2) = text(&o);
    assert!(o.status.success(), "{out2}{err2}");
    assert!(err2.contains("the cycle ran there"), "{err2}");
    assert!(out2.contains("crm: ok"), "{out2}");

    let pid = service.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let o = service.wait_with_output().await.unwrap();
    let (out3, err3) = text(&o);
    assert!(
        o.status.success(),
        "run exited {:?}: {out3}{err3}",
        o.status
    );
    assert!(out3.contains("stopped cleanly"), "{out3}");
    for printed in [&out, &err, &out2, &err2, &out3, &err3] {
        assert!(!printed.contains(TOKEN) && !printed.contains(WEBHOOK));
    }
}

/// An app that answers slowly: user lookups find nothing, creates get fresh ids.
struct SlowApp(std::sync::atomic::AtomicUsize);

impl wiremock::Respond for SlowApp {
    fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
        let delay = std::time::Duration::from_millis(150);
        let body = if req.method.as_str() == "POST" {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut v: Value = serde_json::from_slice(&req.body).unwrap();
            v["id"] = format!("id-{n}").into();
            return wiremock::ResponseTemplate::new(201)
                .set_body_json(v)
                .set_delay(delay);
        } else {
            serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": 0, "Resources": []
            })
        };
        wiremock::ResponseTemplate::new(200)
            .set_body_json(body)
            .set_delay(delay)
    }
}

#[tokio::test]
async fn sync_now_interrupted_stops_sending_keeps_what_the_app_confirmed_and_exits_1() {
    let app = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(SlowApp(0.into()))
        .mount(&app)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(
        tmp.path(),
        &format!("{}/scim/v2", app.uri()),
        "concurrency = 1",
    );
    let mut c = bin();
    c.arg("--config")
        .arg(&path)
        .arg("sync-now")
        .env("CLI_TEST_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = tokio::process::Command::from(c)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // 14 users, a lookup and a create each at 150 ms: a whole cycle takes over 4 s.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let o = child.wait_with_output().await.unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("sync-now: interrupted"), "{err}");
    assert!(
        out.contains("crm: "),
        "the partial report is printed: {out}"
    );
    let created = app
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert!(
        created > 0 && created < 14,
        "{created} users created before the stop"
    );

    // What the app confirmed is recorded: the next run creates only the rest.
    let o = bin()
        .arg("--config")
        .arg(&path)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        status["apps"][0]["managed_users"].as_u64(),
        Some(created as u64),
        "{status}"
    );
}

/// `check-config --probe` reads what each app declares, with three GETs and nothing else,
/// and says which mapped attributes the app does not declare (none for the sandbox).
#[tokio::test(flavor = "multi_thread")]
async fn check_config_probe_reads_what_the_app_declares_with_gets_only() {
    let sandbox = SandboxHandle::start(([127, 0, 0, 1], 0).into(), SandboxState::with_token(TOKEN))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), sandbox.base_url(), "");
    let mut c = bin();
    c.arg("--config")
        .arg(&path)
        .args(["check-config", "--probe"])
        .env("CLI_TEST_TOKEN", TOKEN);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("probe: filter yes (maxResults 1000), patch yes, bulk no"),
        "{out}"
    );
    assert!(
        out.contains("User extensions: urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"),
        "{out}"
    );
    assert!(
        out.contains("probe: every mapped attribute is declared"),
        "{out}"
    );
    assert_eq!(sandbox.state().requests(), 3, "three GETs");
    assert_eq!(sandbox.state().user_count(), 0);
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
}
