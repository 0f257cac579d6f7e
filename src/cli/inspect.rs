//! The read-only commands: `status` (the state store, whether or not a service runs) and
//! `check-config` (the config and the source, each problem named).

use super::{Fatal, exit, render, source_and_poll};
use crate::config::{Config, SourceConfig};
use crate::store::Store;

/// `scim-sync status [--json]`.
pub(super) async fn status(config: &std::path::Path, json: bool) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let store = Store::open(cfg.service.state_url()?.expose()).await?;
    let all = crate::status::collect(&cfg.apps, &store, chrono::Utc::now()).await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        render::status(&cfg.service.state.to_string(), &all);
    }
    Ok(exit::OK)
}

/// `scim-sync check-config [--probe]`.
pub(super) async fn check_config(config: &std::path::Path, probe: bool) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let mut problems = Vec::new();
    let (source, pim) = match source_and_poll(&cfg, None) {
        Ok(w) => (Ok(w.source), w.pim),
        Err(e) => (Err(e), None),
    };
    let dir = match source {
        Ok(source) => match source.snapshot().await {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        },
        Err(Fatal(e)) => {
            problems.push(e);
            None
        }
    };
    out!("config: {}", cfg.path.display());
    match (&cfg.source, &dir) {
        (SourceConfig::File { path }, Some(d)) => out!(
            "source: file {} ({} users, {} groups)",
            path.display(),
            d.users.len(),
            d.groups.len()
        ),
        (SourceConfig::File { path }, None) => {
            out!("source: file {} (unreadable)", path.display())
        }
        (SourceConfig::Graph(g), d) => out!(
            "source: graph tenant {} at {} (client {}, secret from {}; {})",
            g.tenant_id,
            g.graph_url,
            g.client_id,
            match &g.client_secret {
                crate::config::SecretFrom::Env(var) => format!("${var}"),
                crate::config::SecretFrom::File(path) => path.display().to_string(),
            },
            match d {
                Some(d) => format!("{} users, {} groups read", d.users.len(), d.groups.len()),
                None => "unreadable".to_owned(),
            }
        ),
    }
    out!("state: {}", cfg.service.state);
    out!(
        "service: listen {}, full sync every {}, webhook token from ${}",
        cfg.service.listen,
        humantime::format_duration(cfg.service.full_sync_interval),
        cfg.service.webhook_token_env
    );
    out!("apps:");
    for app in &cfg.apps {
        let token = match app.token() {
            Ok(_) => "set".to_owned(),
            Err(e) => {
                problems.push(e.to_string());
                "NOT SET".to_owned()
            }
        };
        out!("  {} {} (profile {})", app.name, app.base_url, app.profile);
        out!("    token from ${} ({token})", app.token_env);
        out!(
            "    deprovision={} matching={} max_deprovisions={} flatten_nested={} concurrency={} timeout={} push_limit={}/{}",
            match app.deprovision {
                crate::model::Deprovision::Disable => "disable",
                crate::model::Deprovision::Delete => "delete",
            },
            app.matching,
            app.max_deprovisions,
            app.flatten_nested,
            app.concurrency,
            humantime::format_duration(app.timeout),
            app.push_limit.burst,
            humantime::format_duration(app.push_limit.per)
        );
        for g in &app.groups {
            match dir.as_ref().map(|d| d.groups.get(g)) {
                Some(Some(group)) => {
                    out!(
                        "    group {g} {:?}: {} members, {} eligible",
                        group.display_name,
                        group.members.len(),
                        group.eligible.len()
                    );
                    // The Graph source: what PIM requires of the group's member activations.
                    if let Some(pim) = &pim {
                        match pim.feed.policy(g).await {
                            Ok(Some(policy)) => out!("      PIM policy: {policy}"),
                            Ok(None) => {
                                out!("      PIM policy: none (PIM does not govern the group)")
                            }
                            Err(e) => {
                                out!("      PIM policy: unreadable");
                                eprintln!(
                                    "scim-sync: warning: group {g}: {e}; activations are capped by service.max_activation only"
                                );
                            }
                        }
                    }
                }
                Some(None) => {
                    problems.push(format!(
                        "{}: apps[{}].groups: group {g} is not in the source",
                        cfg.path.display(),
                        app.name
                    ));
                    out!("    group {g}: NOT IN THE SOURCE");
                }
                None => out!("    group {g}"),
            }
        }
        for (scim, src) in crate::model::attr_path::user_mapping(&app.attributes) {
            if app.attributes.contains_key(&*scim) {
                out!("    attribute {scim} <- {src} (override)");
            }
        }
        if probe {
            probe_app(app, &mut problems).await;
        }
    }
    if problems.is_empty() {
        out!("ok");
        Ok(exit::OK)
    } else {
        for p in &problems {
            eprintln!("scim-sync: {p}");
        }
        Ok(exit::FATAL)
    }
}

/// `check-config --probe` for one app: what it declares, read with GETs only, and the mapped
/// attributes it does not declare.
async fn probe_app(app: &crate::config::AppConfig, problems: &mut Vec<String>) {
    let Ok(token) = app.token() else {
        out!("    probe: skipped (no token)");
        return;
    };
    let client = match crate::engine::App::new(app.clone(), &token) {
        Ok(a) => a.client,
        Err(e) => {
            problems.push(format!("apps[{}]: {e}", app.name));
            return;
        }
    };
    let d = match client.discover().await {
        Ok(d) => d,
        Err(e) => {
            out!("    probe: FAILED");
            problems.push(format!("apps[{}]: probe: {e}", app.name));
            return;
        }
    };
    let caps = d.capabilities().summary();
    if !caps.is_empty() {
        out!("    probe: {caps}");
    }
    if let Some(types) = &d.resource_types {
        let ext = d
            .user_extensions
            .as_ref()
            .map(|e| e.iter().cloned().collect::<Vec<_>>().join(", "))
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "none".into());
        out!(
            "    probe: resource types {}; User extensions: {ext}",
            types.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(schemas) = &d.schemas {
        out!("    probe: {} schema(s) served", schemas.len());
    }
    for note in &d.notes {
        out!("    probe: {note} (taken as RFC core + enterprise)");
    }
    let mapping = crate::model::attr_path::user_mapping(&app.attributes);
    let undeclared = d.undeclared(mapping.iter().map(|(scim, _)| &**scim));
    if undeclared.is_empty() {
        out!("    probe: every mapped attribute is declared");
    }
    for u in undeclared {
        out!("    probe: not declared by the app, so not sent: {u}");
    }
}
