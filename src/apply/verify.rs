//! Read-back for drift (`sync-now --verify`, `verify_interval`): what the app really holds of
//! every object scim-sync manages, as an [`Observed`] the same pure plan repairs.
//!
//! Users are read one `GET /Users/{id}` each, or from one listing of every user when that
//! costs fewer requests (`totalResults`; a listing paged by cursor, which cannot be sized,
//! gets a quarter of the reads in pages, and the users it did not reach are read one by
//! one); their mapped attributes (the paths the store
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
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::model::{Attrs, Observed, ScimId, SourceId};
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
/// The `rewritten` paths (the app keeps them in its own form, [`crate::model::Learnt`]) are
/// not compared: the form scim-sync sent stays the observed one.
///
/// # Errors
/// The first read that finally failed (the cycle then changes nothing).
pub async fn read_back(
    client: &ScimClient,
    stored: Observed,
    rewritten: &[&str],
    concurrency: usize,
) -> Result<Drift, Error> {
    let mut held = read_users(client, &stored, concurrency).await?;
    let mut drift = Drift::default();
    let mut observed = Observed::default();
    let mut managed: HashMap<ScimId, SourceId> = HashMap::new();
    for (id, mut user) in stored.users {
        managed.insert(user.scim_id.clone(), id.clone());
        match held.remove(&user.scim_id) {
            None => {
                tracing::warn!(app = %client.app(), user = %id, scim_id = %user.scim_id, "drift: the app no longer has the user; creating it again");
                drift.found += 1;
            }
            Some(mut attrs) => {
                for path in rewritten {
                    if let Some((k, sent)) = user.attrs.get_key_value(*path)
                        && attrs.contains_key(*path)
                    {
                        attrs.insert(k.clone(), sent.clone());
                    }
                }
                if attrs != *user.attrs {
                    let edited: Vec<&str> = user
                        .attrs
                        .iter()
                        .filter(|(k, v)| attrs.get(*k) != Some(*v))
                        .map(|(k, _)| &**k)
                        .collect();
                    tracing::warn!(app = %client.app(), user = %id, attributes = ?edited, "drift: the user was edited in the app; restoring it");
                    drift.found += 1;
                }
                user.attrs = Arc::new(attrs);
                observed.users.insert(id, user);
            }
        }
    }
    let todo: Vec<(SourceId, ScimId)> = stored
        .groups
        .iter()
        .map(|(id, g)| (id.clone(), g.scim_id.clone()))
        .collect();
    let mut reads = futures::stream::iter(todo)
        .map(|(id, scim_id)| async move { client.group_members(&scim_id).await.map(|m| (id, m)) })
        .buffer_unordered(concurrency.max(1));
    let mut groups = stored.groups;
    while let Some(read) = reads.next().await {
        let (id, members) = read?;
        let Some(mut group) = groups.remove(&id) else {
            continue;
        };
        let Some(members) = members else {
            tracing::warn!(app = %client.app(), group = %id, scim_id = %group.scim_id, "drift: the app no longer has the group; creating it again");
            drift.found += 1;
            continue;
        };
        let before = std::mem::take(&mut group.members);
        let mut foreign = BTreeSet::new();
        for m in members {
            match managed.get(&m) {
                // A managed user the app still has is a member; one it no longer has is
                // created again and added back.
                Some(user) if observed.users.contains_key(user) => {
                    group.members.insert(user.clone());
                }
                Some(_) => {}
                None => {
                    foreign.insert(m);
                }
            }
        }
        let changed = group.members.symmetric_difference(&before).count() as u64;
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

/// The mapped attributes (the paths the store recorded) of each managed user the app still
/// has, by SCIM id: one listing, page by page, when that costs fewer requests than a read
/// each, else a read each. Only the attributes are kept, never the app's whole JSON.
async fn read_users(
    client: &ScimClient,
    stored: &Observed,
    concurrency: usize,
) -> Result<HashMap<ScimId, Attrs>, Error> {
    let by_id: HashMap<&str, &Attrs> = stored
        .users
        .values()
        .map(|u| (u.scim_id.as_str(), &*u.attrs))
        .collect();
    // Keyed by the store's own (shared) paths, not a new copy per user.
    let flatten =
        |resource: &Value, kept: &Attrs| proto::flatten_user(resource, kept.keys().cloned());
    let n = stored.users.len() as u64;
    let pages = if n < 2 {
        None
    } else if client.lists_by_cursor() {
        Some(super::listing_budget(n))
    } else {
        match client.user_listing_cost().await? {
            Some(cost) if cost < n => Some(u32::MAX),
            _ => None,
        }
    };
    let mut out = HashMap::new();
    if let Some(pages) = pages {
        let complete = client
            .each_user_within(pages, |u| {
                if let Some(id) = u.get("id").and_then(Value::as_str)
                    && let Some(kept) = by_id.get(id)
                {
                    out.insert(ScimId::new(id), flatten(&u, kept));
                }
            })
            .await?;
        if complete {
            return Ok(out);
        }
    }
    // A listing cut short (an app holding many more users than scim-sync manages) answered
    // the users it reached; the others are read one by one.
    let todo: Vec<ScimId> = stored
        .users
        .values()
        .filter(|u| !out.contains_key(&u.scim_id))
        .map(|u| u.scim_id.clone())
        .collect();
    let read: Vec<Option<(ScimId, Value)>> = futures::stream::iter(todo)
        .map(|id| async move { client.get_user(&id).await.map(|r| r.map(|r| (id, r))) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    out.extend(read.into_iter().flatten().filter_map(|(id, r)| {
        let kept = by_id.get(id.as_str())?;
        Some((id.clone(), flatten(&r, kept)))
    }));
    Ok(out)
}
