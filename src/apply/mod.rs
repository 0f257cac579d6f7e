//! Apply: runs one app's [`Plan`] against the app in phases and records what the app confirmed.
//!
//! Phases run in [`Phase`] order (users, groups, member adds, member removes, deprovisions);
//! operations within a phase run concurrently up to the app's `concurrency` (worker tasks on
//! the runtime's threads), except that the member batches of one group run one after another.
//! What the app confirmed is committed to the store while the phase runs, in transactions of a
//! few hundred rows or more, and all of it before the next phase starts: the store never
//! claims more than the app holds, and a process that dies mid-phase keeps most of what it did.
//!
//! One failing object never stops the cycle: its error goes to the report, the log and the
//! store's failing objects, and the next cycle retries it (it is still a difference). An error
//! that says the whole app is unusable (401, 403, unreachable after retries) stops the cycle
//! after the running operations, since every further request would fail the same way.
//!
//! [`verify`] reads back what the app holds of the managed objects, for drift; [`learnt`] is
//! what is learnt about the app and kept in the store (protocol facts, its schema, what it
//! keeps of what it is sent).

pub mod learnt;
pub mod verify;

pub use learnt::restore_app_facts;
use learnt::{AppFacts, save_app_facts};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::future::BoxFuture;
use indicatif::ProgressBar;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::model::{
    AppName, Attrs, Deprovision, Learnt, Observed, ObservedUser, Origin, ScimId, SourceId,
};
use crate::plan::{Op, Phase, Plan, UserEffect, changed_paths};
use crate::report::{CycleReport, ObjectError};
use crate::scim::{self, ScimClient, UserIndex};
use crate::store::{self, Change, Store};

/// What apply needs to know about the app besides the plan.
pub struct Target<'a> {
    /// The app.
    pub app: &'a AppName,
    /// Its SCIM client.
    pub client: &'a ScimClient,
    /// Its `matching` attribute.
    pub matching: &'a str,
    /// Its `concurrency`.
    pub concurrency: usize,
    /// Cancelled when the process is shutting down (or `sync-now` is interrupted): no
    /// further operation starts; the ones in flight finish and are recorded.
    pub cancel: &'a CancellationToken,
    /// The app's lease, when this process must hold it to write (SPEC §7.1 fencing).
    pub fence: Option<Arc<dyn Fence>>,
    /// What is known of the app's schema; what the app's answers show it does not keep is
    /// added to it (`None`: nothing is recorded).
    pub learnt: Option<&'a Learnt>,
}

/// The lease a writer holds on an app. A writer that lost it (another replica took the app
/// while this one was stalled, frozen or cut off from the store) must not send anything more.
pub trait Fence: Send + Sync {
    /// Whether this process may still write to `app`, by its own clock (no IO): checked
    /// before every operation, so a process frozen past its lease stops at once on waking.
    fn may_write(&self, app: &AppName) -> bool;

    /// Whether the store still records this process's lease of `app` at the generation it
    /// took (one key lookup): checked before each phase and each push. `Err` says why not.
    fn check<'a>(&'a self, app: &'a AppName) -> BoxFuture<'a, Result<(), String>>;
}

/// Why apply stopped before the end of the plan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not record a confirmed change; the cycle stops so that the store and
    /// the app do not drift further apart.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The result of one operation.
#[derive(Default)]
struct Done {
    changes: Vec<Change>,
    user_id: Option<(SourceId, ScimId)>,
    group_id: Option<(SourceId, ScimId)>,
    /// Members an adopted group already has (our users only).
    group_members: Option<(SourceId, Vec<SourceId>)>,
    counts: Counts,
    error: Option<ObjectError>,
    app_down: Option<String>,
    /// What the app's answer showed it did not keep as sent (read-back).
    kept: Vec<(String, learnt::Kept)>,
}

#[derive(Default)]
struct Counts {
    users_created: u64,
    users_adopted: u64,
    users_updated: u64,
    users_disabled: u64,
    users_deleted: u64,
    groups_created: u64,
    groups_adopted: u64,
    groups_updated: u64,
    groups_deleted: u64,
    members_added: u64,
    members_removed: u64,
}

/// The fewest rows a store transaction waits for while the phase runs (a transaction has a
/// cost of its own), and the most changes it takes at once beyond them.
const COMMIT_MIN_ROWS: usize = 500;
const COMMIT_MAX: usize = 2_000;

/// What a phase's workers share: owned, so that each worker is a task of its own and the
/// phase's requests are built, sent and read on every thread of the runtime.
struct Crew {
    app: AppName,
    client: ScimClient,
    matching: String,
    fence: Option<Arc<dyn Fence>>,
    /// Cancelled when the app is down (so the rest of the cycle does not hammer it), when
    /// the store cannot record what the app confirmed, or with the process.
    stop: CancellationToken,
    /// Many creates: one listing of the app's users answers their lookups.
    index: Option<UserIndex>,
    progress: ProgressBar,
}

/// Runs `plan` against the app, filling `report`'s counts and errors.
///
/// Each phase's operations are taken by `concurrency` workers, in plan order except that a
/// group's member batches are one task for one worker, in order, and the longest such tasks
/// start first; what the app confirms is recorded in the store while the phase runs, and all
/// of it before the next phase starts.
///
/// # Errors
/// [`Error::Store`] when a confirmed change cannot be recorded.
pub async fn apply(
    target: &Target<'_>,
    plan: &Plan,
    observed: &Observed,
    store: &Store,
    report: &mut CycleReport,
    progress: &ProgressBar,
) -> Result<(), Error> {
    let failing: HashSet<String> = store
        .failures(target.app)
        .await?
        .into_iter()
        .map(|f| f.object)
        .collect();
    let mut ids = Arc::new(Ids::new(observed));
    let facts_before = AppFacts::of(target.client);
    let crew = Arc::new(Crew {
        app: target.app.clone(),
        client: target.client.clone(),
        matching: target.matching.to_owned(),
        fence: target.fence.clone(),
        stop: target.cancel.child_token(),
        index: user_index(target, plan).await,
        progress: progress.clone(),
    });
    // What the app's answers showed it does not keep as sent, first evidence per path.
    let mut found: BTreeMap<String, learnt::Kept> = BTreeMap::new();

    for phase in [
        Phase::Users,
        Phase::Groups,
        Phase::AddMembers,
        Phase::RemoveMembers,
        Phase::Deprovision,
    ] {
        let tasks = tasks_of(plan, phase);
        if tasks.is_empty() {
            continue;
        }
        if let Some(fence) = &target.fence
            && let Err(why) = fence.check(target.app).await
        {
            tracing::error!(app = %target.app, error = %why, "lease lost: this process stops writing to the app");
            report.error.get_or_insert(why);
            break;
        }
        let workers = target.concurrency.max(1).min(tasks.len());
        let queue = Arc::new(Mutex::new(tasks.into_iter()));
        let (results, mut confirmed) = mpsc::unbounded_channel();
        let mut running = JoinSet::new();
        for _ in 0..workers {
            running.spawn(work(
                crew.clone(),
                queue.clone(),
                ids.clone(),
                results.clone(),
            ));
        }
        drop(results);
        let (to_store, recorded) = mpsc::unbounded_channel();
        let committer = tokio::spawn(record(
            store.clone(),
            target.app.clone(),
            recorded,
            crew.stop.clone(),
        ));

        // Ids learnt in this phase, applied when it ends (the workers read the phase's
        // starting ids); the users claimed so far, for the duplicate check.
        let mut learnt_ids = Vec::new();
        let mut claimed: HashMap<ScimId, SourceId> = HashMap::new();
        let mut failures = Vec::new();
        while let Some(mut done) = confirmed.recv().await {
            if let Some((s, id)) = done.user_id.take() {
                match ids.owner_of(&id).or_else(|| claimed.get(&id)) {
                    // Two creates of this phase found the same app user (two source users
                    // share the matching value): the second must not take it over.
                    Some(owner) if *owner != s => {
                        done = already_linked(&s, &id, owner, target.matching);
                    }
                    _ => {
                        claimed.insert(id.clone(), s.clone());
                        learnt_ids.push(IdChange::User(s, id));
                    }
                }
            }
            if let Some((s, id)) = done.group_id.take() {
                learnt_ids.push(IdChange::Group(s, id));
            }
            if let Some((g, members)) = done.group_members.take() {
                learnt_ids.push(IdChange::Present(g, members));
            }
            add_counts(report, &done.counts);
            for (path, k) in done.kept.drain(..) {
                found.entry(path).or_insert(k);
            }
            if let Some(e) = done.error {
                tracing::warn!(app = %target.app, object = %e.object, op = %e.op, error = %e.error, "operation failed");
                record_failure(report, &mut failures, e);
            }
            if let Some(why) = done.app_down {
                report.error.get_or_insert(why);
            }
            for c in done.changes.into_iter().chain(failures.drain(..)) {
                // A user the app no longer has must not be named in this cycle's member PATCHes.
                if let Change::DropUser(gone) = &c {
                    learnt_ids.push(IdChange::Gone(gone.clone()));
                }
                // Clear a failure only for objects that had one; most had none.
                if let Change::Succeeded { object } = &c
                    && !failing.contains(object)
                {
                    continue;
                }
                // A closed channel: the store failed, and the committer says so below.
                let _ = to_store.send(c);
            }
        }
        while let Some(joined) = running.join_next().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        drop(to_store);
        match committer.await {
            Ok(recorded) => recorded?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
        let ids = Arc::make_mut(&mut ids);
        for change in learnt_ids {
            ids.learn(change);
        }
        if target.cancel.is_cancelled() {
            report.error.get_or_insert_with(|| {
                "stopped by shutdown before every operation was sent; the next cycle sends the rest"
                    .to_owned()
            });
            break;
        }
        if crew.stop.is_cancelled() {
            break;
        }
    }

    save_app_facts(store, target.app, facts_before, AppFacts::of(target.client)).await?;
    if let Some(learnt) = target.learnt
        && !found.is_empty()
    {
        learnt::record(store, target.app, learnt, found).await?;
    }
    Ok(())
}

/// The phase's operations as tasks: a group's member batches are one task, run in order;
/// every other operation is a task of its own.
fn tasks_of(plan: &Plan, phase: Phase) -> Vec<Vec<Op>> {
    let mut tasks: Vec<Vec<Op>> = Vec::new();
    let mut by_group: HashMap<&SourceId, usize> = HashMap::new();
    for op in plan.ops.iter().filter(|o| o.phase() == phase) {
        match op {
            Op::AddMembers { group, .. }
            | Op::RemoveMembers { group, .. }
            | Op::RemoveForeignMembers { group, .. } => {
                let i = *by_group.entry(group).or_insert_with(|| {
                    tasks.push(Vec::new());
                    tasks.len() - 1
                });
                tasks[i].push(op.clone());
            }
            _ => tasks.push(vec![op.clone()]),
        }
    }
    // The longest chains first, so that the largest group's batches do not run alone at
    // the end of the phase (the sort is stable: plan order otherwise).
    tasks.sort_by_key(|t| std::cmp::Reverse(t.len()));
    tasks
}

/// Records in the store what the app confirmed, as it arrives: each transaction takes what
/// was confirmed while the previous one ran, once that is [`COMMIT_MIN_ROWS`] rows or the
/// phase is over. A store that fails stops the crew: nothing more is sent that could not be
/// recorded.
async fn record(
    store: Store,
    app: AppName,
    mut confirmed: mpsc::UnboundedReceiver<Change>,
    stop: CancellationToken,
) -> Result<(), store::Error> {
    let mut batch = Vec::new();
    let mut open = true;
    while open {
        let mut rows = 0;
        while rows < COMMIT_MIN_ROWS {
            let from = batch.len();
            if confirmed.recv_many(&mut batch, COMMIT_MAX).await == 0 {
                open = false;
                break;
            }
            rows += batch[from..].iter().map(Change::rows).sum::<usize>();
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = store.commit(&app, &batch, Utc::now()).await {
            stop.cancel();
            return Err(e);
        }
        batch.clear();
    }
    Ok(())
}

/// One worker: takes the phase's next task until none is left, runs its operations in
/// order and sends each result, stopping when the app is down or the process shuts down.
async fn work(
    crew: Arc<Crew>,
    queue: Arc<Mutex<std::vec::IntoIter<Vec<Op>>>>,
    ids: Arc<Ids>,
    results: mpsc::UnboundedSender<Done>,
) {
    loop {
        let task = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next();
        let Some(task) = task else { return };
        for op in &task {
            if crew.stop.is_cancelled() {
                return;
            }
            if crew.fence.as_ref().is_some_and(|f| !f.may_write(&crew.app)) {
                crew.stop.cancel();
                let _ = results.send(Done {
                    app_down: Some(
                        "the app's lease ran out in this process before every operation was sent; another replica may hold it now, and the next cycle sends the rest"
                            .into(),
                    ),
                    ..Done::default()
                });
                return;
            }
            let done = run_op(&crew, op, &ids).await;
            if done.app_down.is_some() {
                crew.stop.cancel();
            }
            crew.progress.inc(1);
            if results.send(done).is_err() {
                return;
            }
        }
    }
}

/// The app's users listed once for the plan's creates, when that costs fewer requests than
/// a lookup per create: the listing's size is asked first, or, for a listing paged by cursor
/// that cannot be sized, it is given a quarter of the creates in pages (a listing cut short
/// still answers the creates it holds; the others look themselves up). `None` when the
/// listing would cost more, or the app cannot say or list (each create then looks itself
/// up, as always).
async fn user_index(target: &Target<'_>, plan: &Plan) -> Option<UserIndex> {
    let creates = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::CreateUser { .. }))
        .count() as u64;
    if creates < 2 {
        return None;
    }
    let pages = match target.client.user_listing_cost().await {
        Ok(Some(cost)) if cost < creates => u32::MAX,
        Ok(None) if target.client.lists_by_cursor() => listing_budget(creates),
        Ok(_) => return None,
        Err(e) => {
            tracing::info!(app = %target.app, error = %e, "cannot size the app's user listing; each create looks itself up");
            return None;
        }
    };
    match target.client.index_users(target.matching, pages).await {
        Ok(index) => {
            tracing::info!(app = %target.app, creates, listed = index.len(), complete = index.is_complete(),
                "one listing of the app's users answers the creates' lookups");
            Some(index)
        }
        Err(e) => {
            tracing::warn!(app = %target.app, error = %e, "cannot list the app's users; each create looks itself up");
            None
        }
    }
}

/// The pages a listing that cannot be sized beforehand may spend in place of `reads`
/// requests of one object each: a quarter of them (at least one), so that a listing cut
/// short adds at most a quarter to what the reads would have cost.
fn listing_budget(reads: u64) -> u32 {
    u32::try_from((reads / 4).max(1)).unwrap_or(u32::MAX)
}

/// Source id ↔ SCIM id, as known so far in the cycle.
#[derive(Clone)]
struct Ids {
    users: HashMap<SourceId, ScimId>,
    owners: HashMap<ScimId, SourceId>,
    groups: HashMap<SourceId, ScimId>,
    /// Members adopted groups turned out to have already: not added again.
    present: HashMap<SourceId, HashSet<SourceId>>,
}

impl Ids {
    fn new(observed: &Observed) -> Self {
        let users: HashMap<SourceId, ScimId> = observed
            .users
            .iter()
            .map(|(s, u)| (s.clone(), u.scim_id.clone()))
            .collect();
        Ids {
            owners: users.iter().map(|(s, i)| (i.clone(), s.clone())).collect(),
            users,
            groups: observed
                .groups
                .iter()
                .map(|(s, g)| (s.clone(), g.scim_id.clone()))
                .collect(),
            present: HashMap::new(),
        }
    }

    fn learn(&mut self, change: IdChange) {
        match change {
            IdChange::User(source, id) => {
                self.owners.insert(id.clone(), source.clone());
                self.users.insert(source, id);
            }
            IdChange::Group(source, id) => {
                self.groups.insert(source, id);
            }
            IdChange::Present(group, members) => {
                self.present.insert(group, members.into_iter().collect());
            }
            IdChange::Gone(source) => {
                if let Some(id) = self.users.remove(&source) {
                    self.owners.remove(&id);
                }
            }
        }
    }

    /// The source user linked to an app user id.
    fn owner_of(&self, id: &ScimId) -> Option<&SourceId> {
        self.owners.get(id)
    }
}

/// What a phase learnt of the ids, in the order it learnt it.
enum IdChange {
    /// A user created or adopted.
    User(SourceId, ScimId),
    /// A group created or adopted.
    Group(SourceId, ScimId),
    /// Our users an adopted group already has.
    Present(SourceId, Vec<SourceId>),
    /// A user the app no longer has.
    Gone(SourceId),
}

fn add_counts(r: &mut CycleReport, c: &Counts) {
    r.users_created += c.users_created;
    r.users_adopted += c.users_adopted;
    r.users_updated += c.users_updated;
    r.users_disabled += c.users_disabled;
    r.users_deleted += c.users_deleted;
    r.groups_created += c.groups_created;
    r.groups_adopted += c.groups_adopted;
    r.groups_updated += c.groups_updated;
    r.groups_deleted += c.groups_deleted;
    r.members_added += c.members_added;
    r.members_removed += c.members_removed;
}

/// Counts a failed object in the report and queues it for the store's failing objects.
pub(crate) fn record_failure(report: &mut CycleReport, changes: &mut Vec<Change>, e: ObjectError) {
    changes.push(Change::Failed {
        object: e.object.clone(),
        op: e.op.clone(),
        error: e.error.clone(),
    });
    report.failed += 1;
    report.errors.push(e);
}

/// The stable name of a user in reports and the store's failing objects.
pub(crate) fn user_object(id: &SourceId) -> String {
    format!("user {id}")
}

/// A failed user operation; the error starts with the userName, which the id does not show.
fn failed_user(id: &SourceId, attrs: &Attrs, op: &str, e: &scim::Error) -> Done {
    let mut d = failed(user_object(id), op, e);
    if let (Some(err), Some(name)) = (
        d.error.as_mut(),
        attrs.get("userName").and_then(Value::as_str),
    ) {
        err.error = format!("{name}: {}", err.error);
    }
    d
}

/// A create that found an app user already linked to another source user: the two source
/// users share the `matching` value, and the second must not take the first one's account.
fn already_linked(source_id: &SourceId, id: &ScimId, owner: &SourceId, matching: &str) -> Done {
    Done {
        error: Some(ObjectError {
            object: user_object(source_id),
            op: "create".into(),
            error: format!(
                "the app's user {id} (found by {matching}) is already linked to source user {owner}; two source users share a {matching} value"
            ),
        }),
        ..Done::default()
    }
}

/// Whether an error means every request to this app will fail the same way.
fn app_down(e: &scim::Error) -> bool {
    match e.status() {
        Some(401) | Some(403) => e.scim_type().is_none(),
        Some(_) => false,
        None => e.is_transient(),
    }
}

fn failed(object: String, op: &str, e: &scim::Error) -> Done {
    Done {
        app_down: app_down(e).then(|| e.to_string()),
        error: Some(ObjectError {
            object,
            op: op.to_owned(),
            error: e.to_string(),
        }),
        ..Done::default()
    }
}

/// A managed object the app answers 404 for was deleted in the app behind our back: drop the
/// link, so the next cycle looks it up again and re-creates it, instead of failing forever.
fn gone(mut done: Done, e: &scim::Error, drop: Change) -> Done {
    if e.status() == Some(404) {
        if let Some(err) = done.error.as_mut() {
            err.error.push_str(
                "; the app no longer has it, so the link is dropped and the next cycle looks it up and re-creates it",
            );
        }
        done.changes.push(drop);
    }
    done
}

/// The `userName` of a user's attributes, for messages.
fn user_name(attrs: &Attrs) -> &str {
    attrs
        .get("userName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What an update's answer (`echoed`, over the `changed` paths) shows the app did not keep.
fn kept(attrs: &Attrs, changed: &[String], echoed: Option<&Attrs>) -> Vec<(String, learnt::Kept)> {
    let Some(echoed) = echoed else {
        return Vec::new();
    };
    let sent: Attrs = attrs
        .iter()
        .filter(|(k, _)| changed.iter().any(|c| c == &***k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    learnt::read_back(user_name(attrs), &sent, echoed)
}

async fn run_op(t: &Crew, op: &Op, ids: &Ids) -> Done {
    match op {
        Op::CreateUser { source_id, attrs } => {
            let object = user_object(source_id);
            let ensured = match &t.index {
                Some(index) => t.client.ensure_user_listed(&t.matching, attrs, index).await,
                None => t.client.ensure_user(&t.matching, attrs).await,
            };
            let ensured = match ensured {
                Ok(e) => e,
                Err(e) => return failed_user(source_id, attrs, "create", &e),
            };
            if let Some(owner) = ids.owner_of(&ensured.id).filter(|o| *o != source_id) {
                return already_linked(source_id, &ensured.id, owner, &t.matching);
            }
            let mut done = Done {
                user_id: Some((source_id.clone(), ensured.id.clone())),
                ..Done::default()
            };
            let mut confirmed = attrs.clone();
            if ensured.adopted {
                done.counts.users_adopted += 1;
                let changed = changed_paths(attrs, &ensured.current);
                if !changed.is_empty() {
                    match t.client.patch_user(&ensured.id, attrs, &changed).await {
                        Ok(echoed) => done.kept = kept(attrs, &changed, echoed.as_ref()),
                        Err(e) => {
                            // Adopted but not aligned: record what it holds, so next cycle
                            // patches it.
                            confirmed = Arc::new(ensured.current.clone());
                            let mut d = failed_user(source_id, attrs, "update adopted user", &e);
                            d.user_id = done.user_id.take();
                            d.changes.push(put_user(
                                source_id,
                                &ensured.id,
                                Origin::Adopted,
                                confirmed,
                            ));
                            return d;
                        }
                    }
                }
                done.changes
                    .push(put_user(source_id, &ensured.id, Origin::Adopted, confirmed));
            } else {
                done.counts.users_created += 1;
                if let Some(echoed) = &ensured.echoed {
                    done.kept = learnt::read_back(user_name(attrs), attrs, echoed);
                }
                done.changes
                    .push(put_user(source_id, &ensured.id, Origin::Created, confirmed));
            }
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::UpdateUser {
            source_id,
            scim_id,
            attrs,
            changed,
            effect,
        } => {
            let object = user_object(source_id);
            let verb = effect.verb();
            let echoed = match t.client.patch_user(scim_id, attrs, changed).await {
                Ok(echoed) => echoed,
                Err(e) => {
                    let done = failed_user(source_id, attrs, verb, &e);
                    return gone(done, &e, Change::DropUser(source_id.clone()));
                }
            };
            let mut done = Done {
                kept: kept(attrs, changed, echoed.as_ref()),
                ..Done::default()
            };
            match effect {
                UserEffect::Disable => done.counts.users_disabled += 1,
                UserEffect::Update | UserEffect::Enable => done.counts.users_updated += 1,
            }
            done.changes
                .push(Change::SetUserAttrs(source_id.clone(), attrs.clone()));
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::DeprovisionUser {
            source_id,
            scim_id,
            how,
            attrs,
        } => {
            let object = user_object(source_id);
            let mut done = Done::default();
            match how {
                Deprovision::Disable => {
                    let mut off = Attrs::clone(attrs);
                    off.insert("active".into(), Value::Bool(false));
                    if let Err(e) = t
                        .client
                        .patch_user(scim_id, &off, &["active".to_owned()])
                        .await
                    {
                        let done = failed_user(source_id, attrs, "disable", &e);
                        return gone(done, &e, Change::DropUser(source_id.clone()));
                    }
                    done.counts.users_disabled += 1;
                    done.changes
                        .push(Change::SetUserAttrs(source_id.clone(), Arc::new(off)));
                }
                Deprovision::Delete => {
                    if let Err(e) = t.client.delete_user(scim_id).await {
                        return failed_user(source_id, attrs, "delete", &e);
                    }
                    done.counts.users_deleted += 1;
                    done.changes.push(Change::DropUser(source_id.clone()));
                }
            }
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::CreateGroup {
            source_id,
            display_name,
        } => {
            let object = format!("group {source_id}");
            let ensured = match t
                .client
                .ensure_group(display_name, source_id.as_str())
                .await
            {
                Ok(e) => e,
                Err(e) => return failed(object, "create", &e),
            };
            let mut done = Done {
                group_id: Some((source_id.clone(), ensured.id.clone())),
                ..Done::default()
            };
            let origin = if ensured.adopted {
                done.counts.groups_adopted += 1;
                Origin::Adopted
            } else {
                done.counts.groups_created += 1;
                Origin::Created
            };
            done.changes.push(Change::PutGroup(
                source_id.clone(),
                ensured.id.clone(),
                origin,
                display_name.clone(),
            ));
            // Members an adopted group already has that are our users: remember them, so a
            // later cycle can remove them if they leave; members that are not ours are never touched.
            let ours: Vec<SourceId> = ensured
                .members
                .iter()
                .filter_map(|m| ids.owner_of(m).cloned())
                .collect();
            if !ours.is_empty() {
                done.changes
                    .push(Change::AddMembers(source_id.clone(), ours.clone()));
                done.group_members = Some((source_id.clone(), ours));
            }
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::RenameGroup {
            source_id,
            scim_id,
            display_name,
        } => {
            let object = format!("group {source_id}");
            if let Err(e) = t.client.rename_group(scim_id, display_name).await {
                let done = failed(object, "rename", &e);
                return gone(done, &e, Change::DropGroup(source_id.clone()));
            }
            let mut done = Done::default();
            done.counts.groups_updated += 1;
            done.changes
                .push(Change::RenameGroup(source_id.clone(), display_name.clone()));
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::AddMembers { group, members } | Op::RemoveMembers { group, members } => {
            let adding = matches!(op, Op::AddMembers { .. });
            let object = format!("group {group} members");
            // A group or user whose create failed earlier has no id: its error is already
            // reported, and the membership stays a difference for the next cycle.
            let Some(gid) = ids.groups.get(group) else {
                return Done::default();
            };
            let present = ids.present.get(group);
            let (known, scim_ids): (Vec<SourceId>, Vec<ScimId>) = members
                .iter()
                .filter(|m| !(adding && present.is_some_and(|p| p.contains(*m))))
                .filter_map(|m| ids.users.get(m).map(|id| (m.clone(), id.clone())))
                .unzip();
            if scim_ids.is_empty() {
                return Done::default();
            }
            let result = if adding {
                t.client.add_members(gid, &scim_ids).await
            } else {
                t.client.remove_members(gid, &scim_ids).await
            };
            if let Err(e) = result {
                let op = if adding {
                    "add members"
                } else {
                    "remove members"
                };
                return gone(failed(object, op, &e), &e, Change::DropGroup(group.clone()));
            }
            let mut done = Done::default();
            let n = known.len() as u64;
            if adding {
                done.counts.members_added += n;
                done.changes.push(Change::AddMembers(group.clone(), known));
            } else {
                done.counts.members_removed += n;
                done.changes
                    .push(Change::RemoveMembers(group.clone(), known));
            }
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::RemoveForeignMembers { group, members } => {
            let object = format!("group {group} members");
            let Some(gid) = ids.groups.get(group) else {
                return Done::default();
            };
            if let Err(e) = t.client.remove_members(gid, members).await {
                return gone(
                    failed(object, "remove members", &e),
                    &e,
                    Change::DropGroup(group.clone()),
                );
            }
            let mut done = Done::default();
            done.counts.members_removed += members.len() as u64;
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::DeleteGroup { source_id, scim_id } => {
            let object = format!("group {source_id}");
            if let Err(e) = t.client.delete_group(scim_id).await {
                return failed(object, "delete", &e);
            }
            let mut done = Done::default();
            done.counts.groups_deleted += 1;
            done.changes.push(Change::DropGroup(source_id.clone()));
            done.changes.push(Change::Succeeded { object });
            done
        }
        Op::ForgetGroup { source_id } => Done {
            changes: vec![Change::DropGroup(source_id.clone())],
            ..Done::default()
        },
    }
}

fn put_user(source_id: &SourceId, scim_id: &ScimId, origin: Origin, attrs: Arc<Attrs>) -> Change {
    Change::PutUser(
        source_id.clone(),
        ObservedUser {
            scim_id: scim_id.clone(),
            origin,
            attrs,
        },
    )
}
