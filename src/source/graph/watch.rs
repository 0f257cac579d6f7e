//! The push groups' watch ([`MemberWatch`]): `groups/delta` scoped to the apps' push groups,
//! read every `watch_interval` in service mode, independent of the snapshots and of the PIM
//! poller.
//!
//! A round sends, per chunk of at most [`IDS_PER_QUERY`] push groups (Graph's limit of
//! filtered objects), `GET /v1.0/groups/delta?$select=members&$filter=id eq '{g1}' or id eq
//! '{g2}' …` the first time and the chunk's kept `@odata.deltaLink` after, following
//! `@odata.nextLink` pages. `members@delta` entries that are users are the changes
//! (`@removed`: removed). A chunk with no kept link (the first round, or after Graph refused
//! the link) reads the current members as its baseline and says so: the service then
//! compares a fresh snapshot with the last one it saw, so nothing changed meanwhile is lost.
//!
//! Any page that fails fails the round: nothing is reported, no link moves. The links are kept
//! in memory and, with a store, under `graph-watch:{tenant}` when the service commits a round
//! it acted on, so a restarted service resumes from them (made for the same push groups and
//! Graph URL only).

use futures::future::BoxFuture;
use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, GraphSource, QUERY};
use crate::model::SourceId;
use crate::source::watch::{MemberChange, MemberWatch, WatchRound};
use crate::store::{SourceState, Store};

/// Graph's limit of objects in one `groups/delta` `$filter`.
pub const IDS_PER_QUERY: usize = 50;

const PATH: &str = "/v1.0/groups/delta";

/// The watch's kept links and where they are persisted.
#[derive(Debug, Default)]
pub(super) struct Watch {
    store: Option<Store>,
    key: String,
    kept: tokio::sync::Mutex<Option<Links>>,
}

/// Where each chunk's next round starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Links {
    /// The Graph URL and push groups the links were made for.
    fingerprint: String,
    /// One `@odata.deltaLink` per chunk, in chunk order.
    links: Vec<String>,
}

impl Watch {
    pub(super) fn new(tenant: &str, store: Option<Store>) -> Self {
        Watch {
            store,
            key: format!("graph-watch:{tenant}"),
            kept: tokio::sync::Mutex::default(),
        }
    }

    /// The links kept for `fingerprint`: in memory, else in the store; none when they were
    /// made for other push groups or cannot be read (a baseline round, not a failure).
    async fn links(&self, fingerprint: &str) -> Vec<String> {
        let mut kept = self.kept.lock().await;
        if kept.is_none()
            && let Some(store) = &self.store
        {
            match store.source_state(&self.key).await {
                Ok(Some(s)) => match serde_json::from_str::<Links>(&s.cursor) {
                    Ok(l) => *kept = Some(l),
                    Err(e) => {
                        tracing::warn!(source = %self.key, error = %e, "kept push-group links are unreadable; the next watch round reads a baseline");
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(source = %self.key, error = %e, "cannot read the kept push-group links; the next watch round reads a baseline");
                }
            }
        }
        match &*kept {
            Some(l) if l.fingerprint == fingerprint => l.links.clone(),
            _ => Vec::new(),
        }
    }

    async fn keep(&self, links: Links) {
        if let Some(store) = &self.store {
            let state = SourceState {
                cursor: serde_json::to_string(&links).unwrap_or_default(),
                base: String::new(),
            };
            if let Err(e) = store.put_source_state(&self.key, &state).await {
                tracing::warn!(source = %self.key, error = %e, "cannot keep the push-group links; a restart reads a baseline");
            }
        }
        *self.kept.lock().await = Some(links);
    }
}

impl GraphSource {
    /// The push groups in chunks of at most [`IDS_PER_QUERY`].
    fn watch_chunks(&self) -> Vec<&[SourceId]> {
        self.push_groups.chunks(IDS_PER_QUERY).collect()
    }

    fn watch_fingerprint(&self) -> String {
        let ids: Vec<&str> = self.push_groups.iter().map(SourceId::as_str).collect();
        format!("{} {}", self.graph_url, ids.join(","))
    }

    /// The first query of a chunk: its current members, and a link for what follows.
    fn watch_query(&self, chunk: &[SourceId]) -> String {
        let filter = chunk
            .iter()
            .map(|g| format!("id eq '{}'", g.as_str().replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(" or ");
        format!(
            "{}{PATH}?$select=members&$filter={}",
            self.graph_url,
            utf8_percent_encode(&filter, QUERY)
        )
    }

    /// One watch round over every chunk (see the module).
    ///
    /// # Errors
    /// The first page that failed; nothing is reported then.
    pub async fn watch_round(&self) -> Result<WatchRound, Error> {
        let kept = self.watch.links(&self.watch_fingerprint()).await;
        let mut round = WatchRound::default();
        for (i, chunk) in self.watch_chunks().into_iter().enumerate() {
            let what = "push group changes";
            let (items, link, baseline) = match kept.get(i) {
                Some(link) => match self.http.get_delta(link.clone(), what).await {
                    Ok((items, next)) => (items, next, false),
                    Err(e) if e.needs_resync() => {
                        tracing::warn!(error = %e, "Graph no longer knows a push-group link; reading those push groups' baseline");
                        let (items, next) =
                            self.http.get_delta(self.watch_query(chunk), what).await?;
                        (items, next, true)
                    }
                    Err(e) => return Err(e),
                },
                None => {
                    let (items, next) = self.http.get_delta(self.watch_query(chunk), what).await?;
                    (items, next, true)
                }
            };
            if baseline {
                round.baseline = true;
            } else {
                round.changes.extend(member_changes(&items, chunk));
            }
            round.next.push(link);
        }
        Ok(round)
    }
}

/// The user member changes of `items` (`groups/delta` entries) for the groups of `chunk`.
fn member_changes(items: &[Value], chunk: &[SourceId]) -> Vec<MemberChange> {
    let mut out = Vec::new();
    for item in items {
        let Some(group) = item
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| chunk.iter().find(|g| g.as_str() == id))
        else {
            continue;
        };
        let Some(members) = item.get("members@delta").and_then(Value::as_array) else {
            continue;
        };
        for m in members {
            // Nested groups are not users: a push group pushes its user members.
            let user_type = m
                .get("@odata.type")
                .and_then(Value::as_str)
                .is_none_or(|t| t.eq_ignore_ascii_case("#microsoft.graph.user"));
            let Some(user) = m
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            if user_type {
                out.push(MemberChange {
                    group: group.clone(),
                    user: SourceId::new(user),
                    added: m.get("@removed").is_none(),
                });
            }
        }
    }
    out
}

/// Scoped `groups/delta` rounds over the apps' push groups.
impl MemberWatch for GraphSource {
    fn describe(&self) -> String {
        crate::source::Source::describe(self)
    }

    fn round(&self) -> BoxFuture<'_, Result<WatchRound, crate::source::Error>> {
        Box::pin(async move { self.watch_round().await.map_err(crate::source::Error::from) })
    }

    fn commit(&self, round: WatchRound) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let links = Links {
                fingerprint: self.watch_fingerprint(),
                links: round.next,
            };
            self.watch.keep(links).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_members_of_the_chunk_are_changes_and_removed_ones_say_so() {
        let chunk = [SourceId::from("g1")];
        let items = vec![
            json!({"id": "g1", "members@delta": [
                {"@odata.type": "#microsoft.graph.user", "id": "u1"},
                {"@odata.type": "#microsoft.graph.user", "id": "u2", "@removed": {"reason": "deleted"}},
                {"@odata.type": "#microsoft.graph.group", "id": "g9"},
            ]}),
            json!({"id": "g-other", "members@delta": [{"id": "u3"}]}),
            json!({"id": "g1"}),
        ];
        let c = member_changes(&items, &chunk);
        assert_eq!(
            c,
            [
                MemberChange {
                    group: "g1".into(),
                    user: "u1".into(),
                    added: true
                },
                MemberChange {
                    group: "g1".into(),
                    user: "u2".into(),
                    added: false
                },
            ]
        );
    }
}
