//! Incremental snapshots with Graph delta queries: each snapshot reads only what changed in
//! the tenant since the previous one and applies it to the state kept from then.
//!
//! A round reads `groups/delta?$select=id,displayName,members` and
//! `users/delta?$select=…` (the same user attributes as the full read), both followed through
//! `@odata.nextLink` to the `@odata.deltaLink` the next round starts from. The first round (no
//! kept state, or after Graph refused the kept links) starts from scratch and lists everything.
//!
//! What is kept (the *base*):
//!
//! - **every group of the tenant** (group delta lists them all): its name, its direct user
//!   members and its direct nested groups. Keeping all of them is what lets transitive
//!   membership (`flatten_nested`) be computed from direct memberships, whatever groups the
//!   nesting goes through;
//! - **only the users a snapshot needs**: members (direct or transitive, as the apps read
//!   them) and PIM-eligible users of the assigned groups. Changes to other users are skipped.
//!   A user who becomes needed later is read on its own with `/v1.0/users/{id}`, as the full
//!   read does for eligible users: after the first round, `users/delta` may send only the
//!   changed attributes, so a user not kept is never built from it.
//!
//! PIM eligibility has no delta query: `eligibilityScheduleInstances` is read per assigned
//! group at every snapshot, as in the full read. The directory is then assembled by the same
//! code as the full read, so an incremental snapshot equals a full read of the same tenant
//! state (a test proves it).
//!
//! Graph answering `410 Gone`, `syncStateNotFound` or `resyncRequired` to a kept link starts
//! one round from scratch. Any other failure fails the snapshot and keeps the previous links,
//! so the next snapshot reads the same changes again. The kept base may already hold part of
//! them: that is harmless, as applying a change twice gives the same state (Graph itself may
//! replay changes), and the whole base is written to the store at the next success.
//!
//! With a [`Store`], the links (the *cursor*) and the base are kept under `graph:{tenant}` so
//! that a restarted service resumes with a delta round; the base is rewritten only when a
//! round changed it. Without a store, or when the kept state was written for other attributes
//! or another Graph URL, the first snapshot after a start is a round from scratch.

use std::collections::{BTreeMap, BTreeSet};

use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, GraphSource, GroupRead, QUERY, Reads, eligible_of, to_user};
use crate::model::{Directory, SourceAttrs, SourceGroup, SourceId};
use crate::store::{SourceState, Store};

/// Delta reading of one source: the state kept between snapshots, and where it is persisted.
#[derive(Debug)]
pub(super) struct Delta {
    store: Option<Store>,
    key: String,
    kept: tokio::sync::Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Whether the store was read already (once per process).
    loaded: bool,
    state: Option<DeltaState>,
    /// Whether `state`'s base may differ from the stored one beyond the last round's changes
    /// (a failed round changed it, or the store could not be written).
    dirty: bool,
}

/// A round's end: where the next round starts and the base it applies to.
#[derive(Clone, Debug, Default, PartialEq)]
struct DeltaState {
    cursor: Cursor,
    base: Base,
}

/// Where the next round starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// The Graph URL and user attributes the links were made for: kept state made for
    /// others is not used.
    fingerprint: String,
    /// `groups/delta` `@odata.deltaLink`.
    groups: String,
    /// `users/delta` `@odata.deltaLink`.
    users: String,
}

/// The tenant as of the cursor: every group, and the users snapshots need.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Base {
    groups: BTreeMap<SourceId, Tracked>,
    users: BTreeMap<SourceId, SourceAttrs>,
}

/// One group as of the cursor: name and direct members.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tracked {
    name: String,
    users: BTreeSet<SourceId>,
    groups: BTreeSet<SourceId>,
}

const GROUPS_DELTA_PATH: &str = "/v1.0/groups/delta";
const USERS_DELTA_PATH: &str = "/v1.0/users/delta";

impl Delta {
    pub(super) fn new(tenant: &str, store: Option<Store>) -> Self {
        Delta {
            store,
            key: format!("graph:{tenant}"),
            kept: tokio::sync::Mutex::default(),
        }
    }

    /// The state kept in the store, if any and made for `fingerprint`. A store that cannot
    /// be read or holds something unreadable means a round from scratch, not a failure.
    async fn load(&self, fingerprint: &str) -> Option<DeltaState> {
        let store = self.store.as_ref()?;
        let kept = match store.source_state(&self.key).await {
            Ok(kept) => kept?,
            Err(e) => {
                tracing::warn!(source = %self.key, error = %e, "cannot read the kept Graph delta state; reading every change from scratch");
                return None;
            }
        };
        let parsed = serde_json::from_str::<Cursor>(&kept.cursor).and_then(|cursor| {
            serde_json::from_str::<Base>(&kept.base).map(|base| DeltaState { cursor, base })
        });
        match parsed {
            Ok(state) if state.cursor.fingerprint == fingerprint => Some(state),
            Ok(_) => {
                tracing::info!(source = %self.key, "kept Graph delta state was made for other attributes or another Graph URL; reading every change from scratch");
                None
            }
            Err(e) => {
                tracing::warn!(source = %self.key, error = %e, "kept Graph delta state is unreadable; reading every change from scratch");
                None
            }
        }
    }

    /// Persists `next` (its cursor alone unless `base_changed`). A failure is logged and
    /// `false`, not an error: the snapshot is good, and what the store holds is still a
    /// consistent pair (an older cursor with its base), so a restart replays a few more changes.
    async fn save(&self, next: &DeltaState, base_changed: bool) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let result = async {
            let cursor = serde_json::to_string(&next.cursor).map_err(|e| e.to_string())?;
            if !base_changed
                && store
                    .put_source_cursor(&self.key, &cursor)
                    .await
                    .map_err(|e| e.to_string())?
            {
                return Ok(());
            }
            let base = serde_json::to_string(&next.base).map_err(|e| e.to_string())?;
            store
                .put_source_state(&self.key, &SourceState { cursor, base })
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = &result {
            tracing::warn!(source = %self.key, error = %e, "cannot keep the Graph delta state; a restart reads older changes again");
        }
        result.is_ok()
    }
}

impl Base {
    /// Applies one `groups/delta` entry: a removed group, a renamed one, member changes
    /// (`members@delta`, `@removed` for a member gone). A group may come several times in a
    /// round (its members split across pages): each entry adds to the previous ones.
    fn apply_group(&mut self, item: &Value) -> Result<(), String> {
        let id = object_id(item).ok_or("a group has no \"id\"")?;
        if item.get("@removed").is_some() {
            self.groups.remove(&id);
            return Ok(());
        }
        let group = self.groups.entry(id).or_default();
        match item.get("displayName") {
            Some(Value::String(name)) => group.name.clone_from(name),
            Some(Value::Null) => group.name.clear(),
            _ => {}
        }
        let changes = item
            .get("members@delta")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for m in changes {
            let member = object_id(m).ok_or("a member change has no \"id\"")?;
            if m.get("@removed").is_some() {
                group.users.remove(&member);
                group.groups.remove(&member);
                continue;
            }
            // Devices, service principals and contacts are neither users nor nested groups.
            match m.get("@odata.type").and_then(Value::as_str) {
                None => group.users.insert(member),
                Some(t) if t.eq_ignore_ascii_case("#microsoft.graph.user") => {
                    group.users.insert(member)
                }
                Some(t) if t.eq_ignore_ascii_case("#microsoft.graph.group") => {
                    group.groups.insert(member)
                }
                Some(_) => false,
            };
        }
        Ok(())
    }

    /// Applies one `users/delta` entry: a removed user is forgotten, a kept user gets the
    /// attributes sent (a `null` clears one), and a user not kept is taken only if `admit`
    /// lists it (rounds from scratch, which send whole users). `true` when the kept users
    /// changed.
    fn apply_user(
        &mut self,
        item: Value,
        admit: Option<&BTreeSet<SourceId>>,
    ) -> Result<bool, String> {
        let id = object_id(&item).ok_or("a user has no \"id\"")?;
        if item.get("@removed").is_some() {
            return Ok(self.users.remove(&id).is_some());
        } else if let Some(kept) = self.users.get_mut(&id) {
            let Value::Object(obj) = item else {
                return Ok(false);
            };
            for (k, v) in obj {
                if k == "id" || k.starts_with('@') {
                    continue;
                }
                if v.is_null() {
                    kept.remove(k.as_str());
                } else {
                    kept.insert(k.into(), v);
                }
            }
            return Ok(true);
        } else if admit.is_some_and(|a| a.contains(&id))
            && let Some(user) = to_user(item)
        {
            self.users.insert(user.id, user.attrs);
            return Ok(true);
        }
        Ok(false)
    }

    /// The users in `root` and in the groups nested in it, at any depth (cycles allowed).
    fn transitive_users(&self, root: &SourceId) -> BTreeSet<SourceId> {
        let mut users = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(g) = self.groups.get(id) {
                users.extend(g.users.iter().cloned());
                stack.extend(g.groups.iter());
            }
        }
        users
    }
}

/// The `id` of a Graph object, if a non-empty string.
fn object_id(item: &Value) -> Option<SourceId> {
    item.get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(SourceId::new)
}

/// One assigned group's members as the apps read them.
struct Wanted {
    id: SourceId,
    direct: Option<BTreeSet<SourceId>>,
    transitive: Option<BTreeSet<SourceId>>,
    eligible: Vec<SourceId>,
}

impl GraphSource {
    /// Reads snapshots with delta queries (see [`delta`](crate::source::graph::delta)): the
    /// first snapshot lists every group and user of the tenant, later ones only the changes.
    /// With `store`, what the next round needs is kept there (under `graph:{tenant}`), so
    /// that a restart resumes with changes only.
    /// The push groups' watch keeps its links in the same store (under `graph-watch:{tenant}`).
    pub fn with_delta(mut self, store: Option<Store>) -> Self {
        self.watch = super::watch::Watch::new(&self.tenant_id, store.clone());
        self.delta = Some(Delta::new(&self.tenant_id, store));
        self
    }

    /// Whether snapshots are read with delta queries.
    pub fn uses_delta(&self) -> bool {
        self.delta.is_some()
    }

    /// What kept state must have been made for to be used.
    fn fingerprint(&self) -> String {
        format!("{} $select={}", self.graph_url, self.select)
    }

    /// A snapshot from the kept state and the changes since, or from scratch.
    pub(super) async fn read_delta(&self, delta: &Delta) -> Result<Directory, Error> {
        let mut guard = delta.kept.lock().await;
        let kept = &mut *guard;
        if !kept.loaded {
            kept.loaded = true;
            kept.state = delta.load(&self.fingerprint()).await;
        }
        let resumed = match kept.state.as_mut() {
            Some(state) => match self.delta_round(state, false).await {
                Err(e) if e.needs_resync() => {
                    tracing::warn!(source = %delta.key, error = %e, "Graph no longer knows the kept delta links; reading every change from scratch");
                    None
                }
                Err(e) => {
                    // The base may hold part of the round: still a state the kept links
                    // replay onto, but no longer the stored one.
                    kept.dirty = true;
                    return Err(e);
                }
                Ok(done) => Some(done),
            },
            None => None,
        };
        let (dir, changed) = match resumed {
            Some(done) => done,
            None => {
                kept.state = None;
                let mut fresh = DeltaState::default();
                let (dir, _) = self.delta_round(&mut fresh, true).await?;
                kept.state = Some(fresh);
                (dir, true)
            }
        };
        if let Some(state) = &kept.state {
            kept.dirty = !delta.save(state, changed || kept.dirty).await;
        }
        Ok(dir)
    }

    /// One delta round applied to `state` in place (from scratch when `fresh`), and the
    /// directory it yields with whether the base changed. The cursor moves only when the
    /// round succeeded; a failed round may leave part of its changes in the base, which the
    /// same round read again applies on top of harmlessly.
    async fn delta_round(
        &self,
        state: &mut DeltaState,
        fresh: bool,
    ) -> Result<(Directory, bool), Error> {
        let (groups_url, users_url) = if !fresh {
            (state.cursor.groups.clone(), state.cursor.users.clone())
        } else {
            (
                format!(
                    "{}{GROUPS_DELTA_PATH}?$select=id,displayName,members",
                    self.graph_url
                ),
                format!(
                    "{}{USERS_DELTA_PATH}?$select={}",
                    self.graph_url,
                    utf8_percent_encode(&self.select, QUERY)
                ),
            )
        };
        let ((group_changes, groups), (user_changes, users)) = futures::try_join!(
            self.http.get_delta(groups_url, "group changes"),
            self.http.get_delta(users_url, "user changes"),
        )?;
        let base = &mut state.base;
        let mut changed = !group_changes.is_empty();
        let answer = |what: &str, path: &str, message: String| Error::Answer {
            what: what.to_owned(),
            path: path.to_owned(),
            message,
        };
        for item in &group_changes {
            base.apply_group(item)
                .map_err(|m| answer("group changes", GROUPS_DELTA_PATH, m))?;
        }
        drop(group_changes);

        let present: Vec<(&SourceId, Reads)> = self
            .groups
            .iter()
            .filter(|(id, _)| {
                let found = base.groups.contains_key(*id);
                if !found {
                    tracing::warn!(group = %id, "assigned group not found in Microsoft Graph");
                }
                found
            })
            .map(|(id, r)| (id, *r))
            .collect();
        let ids: Vec<SourceId> = present.iter().map(|(id, _)| (*id).clone()).collect();
        // One `$batch` per 20 groups instead of a request each.
        let eligible: Vec<Vec<SourceId>> = self
            .eligibility_of(&ids)
            .await?
            .iter()
            .map(|v| eligible_of(v))
            .collect();
        let wanted: Vec<Wanted> = present
            .iter()
            .zip(eligible)
            .map(|((id, reads), eligible)| Wanted {
                id: (*id).clone(),
                direct: reads.direct.then(|| {
                    base.groups
                        .get(*id)
                        .map(|g| g.users.clone())
                        .unwrap_or_default()
                }),
                transitive: reads.transitive.then(|| base.transitive_users(id)),
                eligible,
            })
            .collect();
        let members: BTreeSet<SourceId> = wanted
            .iter()
            .flat_map(|w| w.direct.iter().chain(w.transitive.iter()).flatten())
            .cloned()
            .collect();

        let admit: Option<BTreeSet<SourceId>> = fresh.then(|| {
            let mut needed = members.clone();
            needed.extend(wanted.iter().flat_map(|w| w.eligible.iter().cloned()));
            needed
        });
        for item in user_changes {
            changed |= base
                .apply_user(item, admit.as_ref())
                .map_err(|m| answer("user changes", USERS_DELTA_PATH, m))?;
        }
        // Members not kept yet: those who joined without changing themselves.
        let missing: Vec<SourceId> = members
            .into_iter()
            .filter(|id| !base.users.contains_key(id))
            .collect();
        for u in self.read_users(missing, "member").await? {
            base.users.insert(u.id, u.attrs);
            changed = true;
        }

        // Members by id only: `assemble` takes their attributes from the kept users once.
        let known = |ids: BTreeSet<SourceId>| -> Vec<SourceId> {
            ids.into_iter()
                .filter(|id| base.users.contains_key(id))
                .collect()
        };
        let reads = wanted
            .into_iter()
            .map(|w| GroupRead {
                group: SourceGroup {
                    display_name: base
                        .groups
                        .get(&w.id)
                        .map(|g| g.name.clone())
                        .unwrap_or_default(),
                    id: w.id,
                    members: w.direct.map(known).unwrap_or_default(),
                    eligible: w.eligible,
                },
                users: Vec::new(),
                transitive: w.transitive.map(known),
            })
            .collect();
        let dir = self.assemble(reads, &base.users).await?;
        // Keep exactly the users this snapshot holds.
        let before = base.users.len();
        base.users.retain(|id, _| dir.users.contains_key(id));
        changed |= base.users.len() != before;
        for (id, u) in &dir.users {
            if !base.users.contains_key(id) {
                base.users.insert(id.clone(), u.attrs.clone());
                changed = true;
            }
        }
        let cursor = Cursor {
            fingerprint: self.fingerprint(),
            groups,
            users,
        };
        state.cursor = cursor;
        Ok((dir, changed))
    }
}
