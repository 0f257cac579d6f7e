//! The binary as a user runs it: exit codes, messages that name the file and key at fault,
//! `sync-now --dry-run` and `--json` output, `status`, `check-config`, and the demo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

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
        out.contains("(dry run: would be)") && out.contains("nothing sent"),
        "{out}"
    );
    assert_eq!(sandbox.state().requests(), 0, "dry run sent nothing");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));

    let o = run(&["sync-now", "--json"]).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v["apps"][0];
    assert_eq!(r["app"], "crm");
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["users_created"], 14);
    assert_eq!(r["requests"].as_u64(), Some(sandbox.state().requests()));

    let o = run(&["sync-now", "--json"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["apps"][0]["requests"], 0);

    let o = run(&["status", "--json"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = &v["apps"][0];
    assert_eq!(a["name"], "crm");
    assert_eq!(a["last_cycle"]["requests"], 0);
    assert_eq!(a["quarantined"], false);
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
