//! Read-back for drift (`sync-now --verify`, `verify_interval`): what the app really holds of
//! every object scim-sync manages, as an [`Observed`] the same pure plan repairs.
//!
//! Users are read one `GET /Users/{id}` each, or from one listing of every user when that
//! costs fewer requests (`totalResults`); their mapped attributes (the paths the store
//! recorded) are read back as the app holds them. Each managed group is read with
//! `GET /Groups/{id}`: its members that are managed users become the observed members, the
//! others are kept apart (`Observed::foreign`): members someone added in the app behind
//! scim-sync's back, which the plan removes from the group (the users themselves are never
//! touched). A user or group the app no longer has leaves the observed state, so the plan
//! creates it again (the create protocol looks it up first).
//!
//! Each difference from what the store remembered is one repair, counted in the cycle
//! report's `drift_repaired`.

use std::collections::{BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::model::{Observed, ScimId, SourceId};
use crate::scim::{Error, ScimClient, proto};

/// What the read-back found.
#[derive(Debug, Default)]
pub struct Drift {
    /// The observed state as the app holds it.
    pub observed: Observed,
    /// How many differences from the stored state: a user gone or edited, a group gone, a
    /// membership added or removed, a member scim-sync does not manage.
    pub found: u64,
}

/// Reads back every object of `stored` from the app, `concurrency` requests at a time.
///
/// # Errors
/// The first read that finally failed (the cycle then changes nothing).
pub async fn read_back(
    client: &ScimClient,
    stored: &Observed,
    concurrency: usize,
) -> Result<Drift, Error> {
    let users = read_users(client, stored, concurrency).await?;
    let mut drift = Drift::default();
    let mut observed = Observed::default();
    for (id, have) in &stored.users {
        match users.get(have.scim_id.as_str()) {
            None => {
                tracing::warn!(app = %client.app(), user = %id, scim_id = %have.scim_id, "drift: the app no longer has the user; creating it again");
                drift.found += 1;
            }
            Some(resource) => {
                let attrs = proto::flatten_user(resource, have.attrs.keys().map(|k| &**k));
                if attrs != have.attrs {
                    let edited: Vec<&str> = have
                        .attrs
                        .iter()
                        .filter(|(k, v)| attrs.get(*k) != Some(*v))
                        .map(|(k, _)| &**k)
                        .collect();
                    tracing::warn!(app = %client.app(), user = %id, attributes = ?edited, "drift: the user was edited in the app; restoring it");
                    drift.found += 1;
                }
                let mut user = have.clone();
                user.attrs = attrs;
                observed.users.insert(id.clone(), user);
            }
        }
    }
    let by_scim: HashMap<&str, &SourceId> = observed
        .users
        .iter()
        .map(|(id, u)| (u.scim_id.as_str(), id))
        .collect();
    let todo: Vec<(SourceId, ScimId)> = stored
        .groups
        .iter()
        .map(|(id, g)| (id.clone(), g.scim_id.clone()))
        .collect();
    let groups: Vec<(SourceId, Option<BTreeSet<ScimId>>)> = futures::stream::iter(todo)
        .map(|(id, scim_id)| async move { client.group_members(&scim_id).await.map(|m| (id, m)) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for (id, members) in groups {
        let have = &stored.groups[&id];
        let Some(members) = members else {
            tracing::warn!(app = %client.app(), group = %id, scim_id = %have.scim_id, "drift: the app no longer has the group; creating it again");
            drift.found += 1;
            continue;
        };
        let mut group = have.clone();
        group.members.clear();
        let mut foreign = BTreeSet::new();
        for m in members {
            match by_scim.get(m.as_str()) {
                Some(user) => {
                    group.members.insert((*user).clone());
                }
                None if stored.users.values().any(|u| u.scim_id == m) => {
                    // A managed user the app no longer has: it is created again and added.
                }
                None => {
                    foreign.insert(m);
                }
            }
        }
        let changed = group.members.symmetric_difference(&have.members).count() as u64;
        if changed > 0 {
            tracing::warn!(app = %client.app(), group = %id, changed, "drift: the group's members were changed in the app; repairing them");
        }
        if !foreign.is_empty() {
            tracing::warn!(app = %client.app(), group = %id, members = ?foreign, "drift: members scim-sync does not manage were added to the group in the app; removing them from the group");
        }
        drift.found += changed + foreign.len() as u64;
        if !foreign.is_empty() {
            observed.foreign.insert(id.clone(), foreign);
        }
        observed.groups.insert(id, group);
    }
    drift.observed = observed;
    Ok(drift)
}

/// The app's managed users by SCIM id (those it still has): one listing when that costs
/// fewer requests than a read each, else a read each.
async fn read_users(
    client: &ScimClient,
    stored: &Observed,
    concurrency: usize,
) -> Result<HashMap<String, Value>, Error> {
    let n = stored.users.len() as u64;
    if n > 1
        && let Some(cost) = client.user_listing_cost().await?
        && cost < n
    {
        let wanted: BTreeSet<&str> = stored.users.values().map(|u| u.scim_id.as_str()).collect();
        return Ok(client
            .list_users()
            .await?
            .into_iter()
            .filter_map(|u| {
                let id = u.get("id").and_then(Value::as_str)?.to_owned();
                wanted.contains(id.as_str()).then_some((id, u))
            })
            .collect());
    }
    let todo: Vec<ScimId> = stored.users.values().map(|u| u.scim_id.clone()).collect();
    let read: Vec<Option<(String, Value)>> = futures::stream::iter(todo)
        .map(|id| async move {
            client
                .get_user(&id)
                .await
                .map(|r| r.map(|r| (id.as_str().to_owned(), r)))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(read.into_iter().flatten().collect())
}
