//! Tests of config parsing and validation: defaults, each section's errors with their key
//! and line, and secrets that never print.

use std::time::Duration;

use super::*;
use crate::model::{Deprovision, SourceId};

const GOOD: &str = r#"
[service]
full_sync_interval = "40m"

[source]
kind = "file"
path = "config/directory.json"

[[apps]]
name = "crm"
base_url = "https://crm.example.com/scim/v2/"
token_env = "CRM_SCIM_TOKEN"
groups = ["g-crm-users"]
push_limit = { burst = 5, per = "10s" }
"#;

fn parse(text: &str) -> Result<Config, Error> {
    Config::parse(Path::new("test.toml"), text)
}

#[test]
fn defaults_and_values() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.service.full_sync_interval, Duration::from_secs(2400));
    assert_eq!(c.service.listen, "127.0.0.1:8787");
    let app = &c.apps[0];
    assert_eq!(app.base_url, "https://crm.example.com/scim/v2");
    assert_eq!(app.push_limit.burst.get(), 5);
    assert_eq!(app.push_limit.per, Duration::from_secs(10));
    assert_eq!(app.deprovision, Deprovision::Disable);
    assert_eq!(app.matching, "userName");
    assert_eq!(app.max_deprovisions, 50);
    assert_eq!(app.concurrency, 4);
    assert_eq!(app.timeout, Duration::from_secs(30));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert!(parse_duration("forty").unwrap_err().contains("40m"));
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = GOOD.replace("token_env =", "tokn_env = \"x\"\ntoken_env =");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.starts_with("test.toml:12:"), "{e}");
    assert!(e.contains("tokn_env"), "{e}");
}

#[test]
fn bad_duration_names_line() {
    let text = GOOD.replace("\"40m\"", "\"40 minutes please\"");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.starts_with("test.toml:3:"), "{e}");
    assert!(e.contains("invalid duration"), "{e}");
}

#[test]
fn bad_app_values() {
    let e = parse(&GOOD.replace("\"crm\"", "\"CRM App\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.toml:10: apps.name"), "{e}");
    let e = parse(&GOOD.replace("[\"g-crm-users\"]", "[]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("apps[crm].groups"), "{e}");
    let e = parse(&GOOD.replace("https://crm.example.com/scim/v2/", "crm"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("apps[crm].base_url"), "{e}");
    let dup = format!(
        "{GOOD}\n[[apps]]\nname = \"crm\"\nbase_url = \"http://x\"\ntoken_env = \"T\"\ngroups = [\"g\"]\n"
    );
    let e = parse(&dup).unwrap_err().to_string();
    assert!(e.contains("unique"), "{e}");
    let e = parse(&GOOD.replace(
        "push_limit",
        "matching = \"emails[type eq \\\"work\\\"].value\"\npush_limit",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("apps[crm].matching"), "{e}");
}

#[test]
fn missing_secret_names_key_not_value() {
    let mut c = parse(GOOD).unwrap();
    c.apps[0].token_env = "SCIM_SYNC_TEST_SURELY_UNSET_VAR".into();
    let e = c.apps[0].token().unwrap_err().to_string();
    assert!(e.contains("apps[crm].token_env"), "{e}");
    assert!(e.contains("SCIM_SYNC_TEST_SURELY_UNSET_VAR"), "{e}");
}

const GRAPH: &str = r#"
[source]
kind = "graph"
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
client_secret_env = "GRAPH_CLIENT_SECRET"

[[apps]]
name = "crm"
base_url = "https://crm.example.com/scim/v2/"
token_env = "CRM_SCIM_TOKEN"
groups = ["g-crm-users"]
"#;

fn graph(c: &Config) -> &GraphConfig {
    match &c.source {
        SourceConfig::Graph(g) => g,
        other => panic!("not a graph source: {other:?}"),
    }
}

#[test]
fn graph_source_defaults() {
    let c = parse(GRAPH).unwrap();
    let g = graph(&c);
    assert_eq!(g.tenant_id, "11111111-2222-3333-4444-555555555555");
    assert_eq!(
        g.client_secret,
        SecretFrom::Env("GRAPH_CLIENT_SECRET".into())
    );
    assert_eq!(g.graph_url, "https://graph.microsoft.com");
    assert_eq!(g.login_url, "https://login.microsoftonline.com");
    assert_eq!(g.pim_poll_interval, Duration::from_secs(30));
    assert_eq!(g.watch_interval, Duration::from_secs(10));
    let c = parse(&GRAPH.replace(
        "client_secret_env = \"GRAPH_CLIENT_SECRET\"",
        "client_secret_file = \"/run/secrets/graph\"\ngraph_url = \"http://127.0.0.1:9/\"\nlogin_url = \"https://login.microsoftonline.us\"\npim_poll_interval = \"1m\"",
    ))
    .unwrap();
    let g = graph(&c);
    assert_eq!(
        g.client_secret,
        SecretFrom::File("/run/secrets/graph".into())
    );
    assert_eq!(g.graph_url, "http://127.0.0.1:9");
    assert_eq!(g.login_url, "https://login.microsoftonline.us");
    assert_eq!(g.pim_poll_interval, Duration::from_secs(60));
}

#[test]
fn graph_example_config_parses() {
    let c = Config::parse(
        Path::new("config/graph.example.toml"),
        include_str!("../../config/graph.example.toml"),
    )
    .unwrap();
    assert_eq!(
        graph(&c).client_secret,
        SecretFrom::Env("GRAPH_CLIENT_SECRET".into())
    );
    assert_eq!(c.apps.len(), 2);
    assert!(c.apps[1].flatten_nested);
}

#[test]
fn graph_secret_key_missing_or_doubled_is_named() {
    let e = parse(&GRAPH.replace("client_secret_env = \"GRAPH_CLIENT_SECRET\"\n", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("source.client_secret_env"), "{e}");
    assert!(e.contains("client_secret_file"), "{e}");
    let e = parse(&GRAPH.replace(
        "client_secret_env =",
        "client_secret_file = \"/run/secrets/graph\"\nclient_secret_env =",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("not both"), "{e}");
    assert!(e.starts_with("test.toml:6:"), "{e}");
}

#[test]
fn graph_bad_values_are_named() {
    let e = parse(&GRAPH.replace(
        "kind = \"graph\"",
        "kind = \"graph\"\ngraph_url = \"graph.microsoft.com\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("test.toml:4: source.graph_url"), "{e}");
    let e = parse(&GRAPH.replace(
        "kind = \"graph\"",
        "kind = \"graph\"\nlogin_url = \"ftp://x\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("source.login_url"), "{e}");
    let e = parse(&GRAPH.replace(
        "kind = \"graph\"",
        "kind = \"graph\"\npim_poll_interval = \"0s\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("source.pim_poll_interval"), "{e}");
    let e = parse(&GRAPH.replace(
        "kind = \"graph\"",
        "kind = \"graph\"\nwatch_interval = \"500ms\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("source.watch_interval: must be at least 1s"),
        "{e}"
    );
    let e = parse(&GRAPH.replace(
        "tenant_id = \"11111111-2222-3333-4444-555555555555\"",
        "tenant_id = \"\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("source.tenant_id"), "{e}");
    let e = parse(&GRAPH.replace("kind = \"graph\"", "kind = \"graph\"\ntenant = \"x\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tenant"), "{e}");
}

#[test]
fn graph_secret_is_read_from_env_or_file_and_never_shown() {
    let c =
        parse(&GRAPH.replace("GRAPH_CLIENT_SECRET", "SCIM_SYNC_TEST_SURELY_UNSET_GRAPH")).unwrap();
    let e = graph(&c).client_secret().unwrap_err().to_string();
    assert!(e.contains("source.client_secret_env"), "{e}");
    assert!(e.contains("SCIM_SYNC_TEST_SURELY_UNSET_GRAPH"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("secret");
    std::fs::write(&file, "s3cr3t-value\n").unwrap();
    let mut g = graph(&c).clone();
    g.client_secret = SecretFrom::File(file.clone());
    let s = g.client_secret().unwrap();
    assert_eq!(s.expose(), "s3cr3t-value");
    assert!(!format!("{g:?} {s:?}").contains("s3cr3t"));
    std::fs::write(&file, " \n").unwrap();
    let e = g.client_secret().unwrap_err().to_string();
    assert!(
        e.contains("source.client_secret_file") && e.contains("empty"),
        "{e}"
    );
}

#[test]
fn secret_never_prints() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
}

#[test]
fn max_activation_and_lease_ttl_have_ranges_and_name_their_key() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.service.max_activation, Duration::from_secs(8 * 3600));
    assert_eq!(c.service.lease_ttl, Duration::from_secs(15));
    for (line, key) in [
        ("max_activation = \"1m\"", "service.max_activation"),
        ("max_activation = \"25h\"", "service.max_activation"),
        ("lease_ttl = \"1s\"", "service.lease_ttl"),
        ("lease_ttl = \"10m\"", "service.lease_ttl"),
    ] {
        let text = GOOD.replace("[service]\n", &format!("[service]\n{line}\n"));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains(key) && e.contains("out of range"), "{e}");
    }
    let text = GOOD.replace(
        "[service]\n",
        "[service]\nmax_activation = \"24h\"\nlease_ttl = \"5s\"\n",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.service.max_activation, Duration::from_secs(24 * 3600));
    assert_eq!(c.service.lease_ttl, Duration::from_secs(5));
}

#[test]
fn the_state_url_comes_from_the_file_or_a_named_variable_never_both() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.service.state, StateFrom::Url(DEFAULT_STATE.into()));
    let text = GOOD.replace(
        "[service]\n",
        "[service]\nstate_env = \"SCIM_SYNC_SURELY_UNSET_STATE_URL\"\n",
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.service.state.to_string(),
        "$SCIM_SYNC_SURELY_UNSET_STATE_URL"
    );
    let e = c.service.state_url().unwrap_err().to_string();
    assert!(
        e.contains("SCIM_SYNC_SURELY_UNSET_STATE_URL") && e.contains("service.state_env"),
        "{e}"
    );
    // A variable that is set (the test cannot set one: the crate forbids `unsafe`).
    let c = parse(&GOOD.replace("[service]\n", "[service]\nstate_env = \"PATH\"\n")).unwrap();
    let path = std::env::var("PATH").unwrap();
    assert_eq!(c.service.state_url().unwrap().expose(), path);
    assert!(
        !format!("{c:?}").contains(&path),
        "the URL itself is not in the config"
    );
    let both = GOOD.replace(
        "[service]\n",
        "[service]\nstate = \"sqlite://a.db\"\nstate_env = \"X\"\n",
    );
    let e = parse(&both).unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn max_response_defaults_to_32_mib_and_takes_sizes_or_bytes() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.apps[0].max_response, 32 * 1024 * 1024);
    assert_eq!(DEFAULT_MAX_RESPONSE, 32 * 1024 * 1024);
    for (value, bytes) in [
        ("\"64MiB\"", 64 * 1024 * 1024),
        ("\"100 MB\"", 100_000_000),
        ("\"1GiB\"", 1024 * 1024 * 1024),
        ("1048576", 1024 * 1024),
    ] {
        let c = parse(&format!("{GOOD}max_response = {value}\n")).unwrap();
        assert_eq!(c.apps[0].max_response, bytes, "{value}");
    }
}

#[test]
fn a_bad_max_response_names_the_key_and_line() {
    let line = GOOD.lines().count() + 1;
    for (value, says) in [
        ("\"32 potatoes\"", "\"32 potatoes\" is not a size"),
        ("\"1.5GiB\"", "is not a size"),
        ("\"512KiB\"", "524288 bytes is out of range 1MiB..=1GiB"),
        ("\"2GiB\"", "out of range 1MiB..=1GiB"),
        ("0", "0 bytes is out of range"),
        ("-5", "-5 is not a size"),
        ("true", "true is not a size: write it like \"32MiB\""),
    ] {
        let e = parse(&format!("{GOOD}max_response = {value}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("test.toml:{line}: apps[crm].max_response: ")),
            "{value}: {e}"
        );
        assert!(e.contains(says), "{value}: {e}");
    }
}

#[test]
fn overflow_defaults_to_next_cycle_takes_drain_and_names_a_bad_rule() {
    assert_eq!(parse(GOOD).unwrap().apps[0].overflow, Overflow::NextCycle);
    let drain = parse(&format!("{GOOD}overflow = \"drain\"\n")).unwrap();
    assert_eq!(drain.apps[0].overflow, Overflow::Drain);
    let line = GOOD.lines().count() + 1;
    let e = parse(&format!("{GOOD}overflow = \"asap\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "test.toml:{line}: apps[crm].overflow: \"asap\" is not an overflow rule"
        )),
        "{e}"
    );
}

#[test]
fn push_groups_must_be_assigned() {
    assert!(parse(GOOD).unwrap().apps[0].push_groups.is_empty());
    let ok = parse(&format!("{GOOD}push_groups = [\"g-crm-users\"]\n")).unwrap();
    assert_eq!(ok.apps[0].push_groups, [SourceId::from("g-crm-users")]);
    let line = GOOD.lines().count() + 1;
    let e = parse(&format!("{GOOD}push_groups = [\"g-crm-admins\"]\n"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "test.toml:{line}: apps[crm].push_groups: group g-crm-admins is not assigned to the app: add it to groups first"
        )
    );
    let e = parse(&format!(
        "{GOOD}push_groups = [\"g-crm-users\", \"g-crm-users\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("group g-crm-users is listed twice"), "{e}");
    // With the Graph source they are watched by scoped delta reads every watch_interval.
    let g = parse(&format!("{GRAPH}push_groups = [\"g-crm-users\"]\n")).unwrap();
    assert_eq!(g.apps[0].push_groups, [SourceId::from("g-crm-users")]);
}

#[test]
fn verify_interval_is_a_day_unless_set_and_0s_turns_it_off() {
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(parse(GOOD).unwrap().apps[0].verify_interval, Some(day));
    let off = parse(&format!("{GOOD}verify_interval = \"0s\"\n")).unwrap();
    assert_eq!(off.apps[0].verify_interval, None);
    let hourly = parse(&format!("{GOOD}verify_interval = \"1h\"\n")).unwrap();
    assert_eq!(
        hourly.apps[0].verify_interval,
        Some(Duration::from_secs(3600))
    );
    let line = GOOD.lines().count() + 1;
    let e = parse(&format!("{GOOD}verify_interval = \"30s\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "test.toml:{line}: apps[crm].verify_interval: must be at least 1m"
        )),
        "{e}"
    );
}

#[test]
fn the_aws_profile_refuses_a_mapping_identity_center_cannot_store() {
    use crate::model::Profile;
    assert_eq!(parse(GOOD).unwrap().apps[0].profile, Profile::Generic);
    let aws = |extra: &str| parse(&format!("{GOOD}profile = \"aws-identity-center\"\n{extra}"));
    assert_eq!(aws("").unwrap().apps[0].profile, Profile::AwsIdentityCenter);
    let err = |extra: &str| aws(extra).unwrap_err().to_string();
    let e = parse(&format!("{GOOD}profile = \"aws\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("apps[crm].profile: \"aws\" is not a profile"),
        "{e}"
    );
    let e = err("matching = \"emails[type eq \\\"work\\\"].value\"\n");
    assert!(e.contains("apps[crm].matching"), "{e}");
    let e = err("[apps.attributes]\n\"ims[type eq \\\"x\\\"].value\" = \"im\"\n");
    assert!(
        e.contains("does not store the user attribute \"ims\""),
        "{e}"
    );
    let e = err("[apps.attributes]\n\"emails[type eq \\\"home\\\"].value\" = \"otherMail\"\n");
    assert!(e.contains("takes one value of emails"), "{e}");
    let e = err("[apps.attributes]\n\"name.givenName\" = \"\"\n");
    assert!(e.contains("requires this attribute"), "{e}");
}
