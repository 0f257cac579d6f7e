//! What scim-sync has learnt about one app's schema (issue 13): what it declares (RFC 7643
//! discovery) and what it did with what it was sent (read-back), kept in the store so that a
//! new process neither asks again nor re-sends what the app does not keep.
//!
//! A mapped attribute is *withheld* (never sent, never compared) when the app does not declare
//! it or silently dropped it; it is *rewritten* when the app keeps it in its own form (the
//! store keeps the form scim-sync sent, so a cycle does not re-send it, and a read-back does
//! not take the app's form for drift). Everything learnt belongs to one configuration of the
//! app ([`Learnt::config`]): when the app's URL, profile or mapping changes, it is learnt
//! again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Attrs;
use super::attr_path::REQUIRED_USER_PATHS;

/// What the app declared in `/ServiceProviderConfig` (`None`: not said).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `filter.supported`.
    pub filter: Option<bool>,
    /// `filter.maxResults`.
    pub max_results: Option<u64>,
    /// `patch.supported`.
    pub patch: Option<bool>,
    /// `bulk.supported`.
    pub bulk: Option<bool>,
    /// `bulk.maxOperations`.
    pub bulk_max_operations: Option<u64>,
}

impl Capabilities {
    /// One line: `filter yes (maxResults 200), patch yes, bulk no`; empty when nothing was
    /// said.
    pub fn summary(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut parts = Vec::new();
        if let Some(on) = self.filter {
            parts.push(match self.max_results {
                Some(m) => format!("filter {} (maxResults {m})", yes(on)),
                None => format!("filter {}", yes(on)),
            });
        }
        if let Some(on) = self.patch {
            parts.push(format!("patch {}", yes(on)));
        }
        if let Some(on) = self.bulk {
            parts.push(match self.bulk_max_operations {
                Some(m) if on => format!("bulk yes (maxOperations {m})"),
                _ => format!("bulk {}", yes(on)),
            });
        }
        parts.join(", ")
    }
}

/// Everything learnt about one app, for one configuration of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learnt {
    /// The configuration it was learnt under (URL, profile, mapped paths): see
    /// [`Learnt::config_key`].
    pub config: String,
    /// When discovery ran (RFC 3339).
    pub discovered_at: String,
    /// What `/ServiceProviderConfig` said.
    pub capabilities: Capabilities,
    /// The discovery endpoints the app does not serve, one line each.
    pub notes: Vec<String>,
    /// Mapped paths the app does not declare → why.
    pub undeclared: BTreeMap<String, String>,
    /// Mapped paths the app accepted but did not keep → what showed it.
    pub dropped: BTreeMap<String, String>,
    /// Mapped paths the app keeps in its own form → what showed it.
    pub rewritten: BTreeMap<String, String>,
}

impl Learnt {
    /// The key of one configuration of an app: what it was learnt under.
    pub fn config_key<'a>(
        base_url: &str,
        profile: impl std::fmt::Debug,
        mapped: impl IntoIterator<Item = &'a str>,
    ) -> String {
        let mut paths: Vec<&str> = mapped.into_iter().collect();
        paths.sort_unstable();
        format!("{base_url} {profile:?} {}", paths.join(","))
    }

    /// Whether this was learnt under `config`.
    pub fn is_for(&self, config: &str) -> bool {
        self.config == config
    }

    /// The paths never sent to the app nor compared: undeclared or dropped, except the paths
    /// every user must carry and those in `keep` (the matching attribute, the profile's
    /// required ones), which are sent whatever the app says.
    pub fn withheld(&self, keep: &[&str]) -> Vec<&str> {
        self.undeclared
            .keys()
            .chain(self.dropped.keys())
            .map(String::as_str)
            .filter(|p| !REQUIRED_USER_PATHS.contains(p) && !keep.contains(p))
            .collect()
    }

    /// What this record says that `prior` did not (all of it when `prior` is for another
    /// configuration, or none), one line each: the paths now not sent or taken in the app's
    /// form, with why.
    pub fn news_since(&self, prior: Option<&Learnt>) -> Vec<String> {
        let prior = prior.filter(|p| p.config == self.config);
        let fresh = |of: fn(&Learnt) -> &BTreeMap<String, String>, label: &str| {
            of(self)
                .iter()
                .filter(|(k, _)| prior.is_none_or(|p| !of(p).contains_key(*k)))
                .map(|(k, why)| format!("{label}: {k}: {why}"))
                .collect::<Vec<_>>()
        };
        let mut out = fresh(|l| &l.undeclared, "not sent (the app does not declare it)");
        out.extend(fresh(|l| &l.dropped, "not sent (the app does not keep it)"));
        out.extend(fresh(|l| &l.rewritten, "kept by the app in its own form"));
        out
    }

    /// Takes the [`Learnt::withheld`] paths out of each of `users`' attributes (desired and
    /// observed alike), so the plan neither sends them nor plans to clear them, and a
    /// read-back does not read them.
    pub fn withhold<'a>(&self, keep: &[&str], users: impl IntoIterator<Item = &'a mut Arc<Attrs>>) {
        let withheld = self.withheld(keep);
        if withheld.is_empty() {
            return;
        }
        for attrs in users {
            // Copied only when it holds a withheld path: shared attributes that do not are
            // left shared.
            if attrs.keys().any(|k| withheld.contains(&&**k)) {
                Arc::make_mut(attrs).retain(|k, _| !withheld.contains(&&**k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_paths_never_include_what_every_user_needs() {
        let l = Learnt {
            undeclared: [("title".into(), "not in core".into())].into(),
            dropped: [
                ("displayName".into(), "dropped".into()),
                ("active".into(), "dropped".into()),
                ("emails[type eq \"work\"].value".into(), "dropped".into()),
            ]
            .into(),
            ..Learnt::default()
        };
        assert_eq!(
            l.withheld(&["emails[type eq \"work\"].value"]),
            ["title", "displayName"]
        );
    }

    #[test]
    fn news_are_what_the_prior_record_of_the_same_configuration_did_not_say() {
        let prior = Learnt {
            config: "a".into(),
            undeclared: [("title".into(), "not in core".into())].into(),
            ..Learnt::default()
        };
        let mut now = prior.clone();
        now.dropped
            .insert("displayName".into(), "answered without it".into());
        assert_eq!(
            now.news_since(Some(&prior)),
            ["not sent (the app does not keep it): displayName: answered without it"]
        );
        assert_eq!(now.news_since(None).len(), 2);
        let other = Learnt {
            config: "b".into(),
            ..prior.clone()
        };
        assert_eq!(
            now.news_since(Some(&other)).len(),
            2,
            "another configuration"
        );
        assert!(prior.news_since(Some(&prior)).is_empty());
    }

    #[test]
    fn the_config_key_ignores_the_order_of_the_mapping() {
        let a = Learnt::config_key("https://a", "Generic", ["title", "userName"]);
        let b = Learnt::config_key("https://a", "Generic", ["userName", "title"]);
        assert_eq!(a, b);
        assert_ne!(a, Learnt::config_key("https://b", "Generic", ["title"]));
    }
}
