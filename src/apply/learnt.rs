//! What scim-sync learns about an app and keeps in the store, so that a new process neither
//! asks again nor relearns it with failing requests:
//! - protocol facts learnt from failures: the member-removal form it accepts, whether it
//!   evaluates filters ([`restore_app_facts`]);
//! - its schema ([`Learnt`]): what it declares, read by discovery on first contact and
//!   whenever its configuration changes ([`learn`]), and what it did with what it was sent,
//!   read back from its answers to creates and updates ([`read_back`], [`record`]). A mapped
//!   attribute it does not declare or silently drops is withheld from then on (never sent,
//!   never compared); one it rewrites is not re-sent, and not taken for drift.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{AppName, Attrs, Learnt};
use crate::scim::{self, RemovalForm, ScimClient};
use crate::store::{self, Store};

/// Store flag holding the member-removal form an app accepts.
const REMOVAL_FORM_FLAG: &str = "removal_form";
/// Store flag recording that an app does not evaluate filters.
const FILTERS_FLAG: &str = "filters";

/// What scim-sync has learnt about an app's protocol support, kept in the store so that the
/// next process does not have to learn it again with failing requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AppFacts {
    removal_form: RemovalForm,
    filters_supported: bool,
}

impl AppFacts {
    pub(super) fn of(client: &ScimClient) -> Self {
        AppFacts {
            removal_form: client.removal_form(),
            filters_supported: client.filters_supported(),
        }
    }
}

/// Hands the facts learnt by earlier runs to the app's client.
///
/// # Errors
/// [`store::Error`] when the store cannot be read.
pub async fn restore_app_facts(
    store: &Store,
    app: &AppName,
    client: &ScimClient,
) -> Result<(), store::Error> {
    if store.flag(app, REMOVAL_FORM_FLAG).await?.as_deref() == Some("value-list") {
        client.set_removal_form(RemovalForm::ValueList);
    }
    if store.flag(app, FILTERS_FLAG).await?.as_deref() == Some("unsupported") {
        client.set_filters_supported(false);
    }
    Ok(())
}

pub(super) async fn save_app_facts(
    store: &Store,
    app: &AppName,
    before: AppFacts,
    after: AppFacts,
) -> Result<(), store::Error> {
    if after.removal_form != before.removal_form {
        let value = match after.removal_form {
            RemovalForm::Filter => "filter",
            RemovalForm::ValueList => "value-list",
        };
        tracing::info!(app = %app, form = value, "app rejects the RFC member-removal filter; using the value-list form from now on");
        store.set_flag(app, REMOVAL_FORM_FLAG, value).await?;
    }
    if after.filters_supported != before.filters_supported {
        let value = if after.filters_supported {
            "supported"
        } else {
            "unsupported"
        };
        tracing::info!(app = %app, "app does not evaluate filters; lookups list and match locally from now on");
        store.set_flag(app, FILTERS_FLAG, value).await?;
    }
    Ok(())
}

/// What an app is known to hold under `config` (see [`Learnt::config_key`]): the store's
/// record when it was learnt under the same configuration, else what discovery reads now
/// (three GETs), saved unless `dry_run`. The client follows the capabilities either way.
///
/// # Errors
/// [`LearnError`] when the app cannot be read (the cycle then changes nothing) or the store
/// cannot be read or written.
pub async fn learn<'a>(
    store: &Store,
    client: &ScimClient,
    config: String,
    mapped: impl IntoIterator<Item = &'a str>,
    now: String,
    dry_run: bool,
) -> Result<Learnt, LearnError> {
    let app = client.app();
    let learnt = match store.learnt(app).await? {
        Some(l) if l.is_for(&config) => l,
        _ => {
            let found = client.discover().await?.learnt(config, mapped, now);
            for (path, why) in &found.undeclared {
                tracing::warn!(app = %app, attribute = %path, reason = %why,
                    "the app does not declare a mapped attribute; it is not sent");
            }
            if found.capabilities.patch == Some(false) {
                tracing::warn!(app = %app, "the app declares no PATCH support; updates, disables and membership changes are sent as PATCH and may fail");
            }
            for note in &found.notes {
                tracing::info!(app = %app, "{note}; taken as RFC core + enterprise");
            }
            if !dry_run {
                store.save_learnt(app, &found).await?;
            }
            found
        }
    };
    client.follow(&learnt.capabilities);
    Ok(learnt)
}

/// Why [`learn`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// The app's discovery endpoints could not be read.
    #[error("cannot read the app's schema: {0}")]
    App(#[from] scim::Error),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What one answer showed about one mapped path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Accepted but not kept: the answer has no value for it.
    Dropped(String),
    /// Kept in another form: the answer holds another value.
    Rewritten(String),
}

/// Compares what was `sent` for a user (`user_name`) with the app's `echoed` answer over the
/// same paths: each path it did not keep as sent. `userName` is not judged (the app may
/// fold its case, RFC 7643 `caseExact: false`).
pub fn read_back(user_name: &str, sent: &Attrs, echoed: &Attrs) -> Vec<(String, Kept)> {
    let mut out = Vec::new();
    for (path, value) in sent {
        if &**path == "userName" {
            continue;
        }
        match echoed.get(path) {
            None => out.push((
                path.to_string(),
                Kept::Dropped(format!(
                    "the app answered for user {user_name} without the {} sent",
                    short(value)
                )),
            )),
            Some(got) if got != value => out.push((
                path.to_string(),
                Kept::Rewritten(format!(
                    "the app answered for user {user_name} with {} for {}",
                    short(got),
                    short(value)
                )),
            )),
            Some(_) => {}
        }
    }
    out
}

/// A value for a log line or `status`: its JSON, cut at 60 characters.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Adds what a cycle's answers showed to what `learnt` records, warning once for each path
/// newly found, and saves it when something is new. Returns the paths newly found.
///
/// # Errors
/// [`store::Error`] when the store cannot be written.
pub async fn record(
    store: &Store,
    app: &AppName,
    learnt: &Learnt,
    found: BTreeMap<String, Kept>,
) -> Result<Vec<String>, store::Error> {
    let mut next = learnt.clone();
    let mut new = Vec::new();
    for (path, kept) in found {
        if next.dropped.contains_key(&path) || next.rewritten.contains_key(&path) {
            continue;
        }
        match kept {
            Kept::Dropped(why) => {
                tracing::warn!(app = %app, attribute = %path, evidence = %why,
                    "the app does not keep a mapped attribute; it is not sent again");
                next.dropped.insert(path.clone(), why);
            }
            Kept::Rewritten(why) => {
                tracing::warn!(app = %app, attribute = %path, evidence = %why,
                    "the app keeps a mapped attribute in its own form; it is not re-sent for that, nor taken for drift");
                next.rewritten.insert(path.clone(), why);
            }
        }
        new.push(path);
    }
    if !new.is_empty() {
        store.save_learnt(app, &next).await?;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attrs(v: Value) -> Attrs {
        crate::model::attrs_from_json(v)
    }

    #[test]
    fn read_back_names_what_was_dropped_or_rewritten_and_nothing_else() {
        let sent = attrs(json!({
            "userName": "Alice@Example.com", "displayName": "Alice", "title": "Eng",
            "emails[type eq \"work\"].value": "Alice@Example.com", "active": true,
        }));
        let echoed = attrs(json!({
            "userName": "alice@example.com", "title": "Eng",
            "emails[type eq \"work\"].value": "alice@example.com", "active": true,
        }));
        let got = read_back("Alice@Example.com", &sent, &echoed);
        assert_eq!(
            got,
            [
                (
                    "displayName".to_owned(),
                    Kept::Dropped(
                        "the app answered for user Alice@Example.com without the \"Alice\" sent"
                            .into()
                    )
                ),
                (
                    "emails[type eq \"work\"].value".to_owned(),
                    Kept::Rewritten(
                        "the app answered for user Alice@Example.com with \"alice@example.com\" for \"Alice@Example.com\"".into()
                    )
                ),
            ]
        );
        assert!(read_back("a", &sent, &sent).is_empty());
    }
}
