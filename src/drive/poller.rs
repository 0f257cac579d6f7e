//! The PIM poller: activations and their end read from PIM for Groups, for sources that do
//! not call the webhook (SPEC §4: "the PIM poller produces the same activations from
//! `assignmentScheduleInstances`").
//!
//! Every `every`, one loop reads, for each group assigned to any app, the group's assignment
//! schedule instances through a [`PimFeed`] (Graph in production; how Graph is read is the
//! feed's business, not this module's). Only `accessId` `member` with `assignmentType`
//! `activated` (any case) counts. A pure function, `diff`, decides what changed since the last
//! round:
//!
//! - an instance not seen before (or seen, with its end moved later), unended → an activation
//!   through exactly the webhook's path ([`Intake::activate`], origin `pim-poll`), so the
//!   limiter, deferral, recording and expiry timers are shared; unless the store already has
//!   a live activation of the same (group, user) lasting at least as long, which is adopted
//!   without a new push (after a restart the app already has it);
//! - a seen instance that vanished, or whose `endDateTime` passed → the membership ends at
//!   once ([`Intake::end_activation`], the expiry path: a standing source member stays).
//!
//! After a restart, the first successful read of a group also ends the activations an earlier
//! process recorded from PIM that PIM no longer lists (deactivated while no poller watched).
//!
//! A group whose read fails is logged and counted and changes nothing this round: a failed
//! read never ends an activation. Rounds never overlap (one loop; a late tick is skipped, not
//! queued). This module never talks SCIM or Graph, and knows the service only through the
//! narrow [`Intake`] it is given (the service implements it; a test can fake it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::time::{Instant, MissedTickBehavior};

use crate::activation::{Accepted, ActivationRequest, Refusal};
use crate::model::SourceId;
use crate::source::pim::{PimFeed, PimInstance, PimRequest};
use crate::store::{self, Activation};

/// The origin recorded on activations the poller produces.
pub const ORIGIN: &str = "pim-poll";

/// The poll interval when the config gives none (`pim_poll_interval`).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(30);

/// What the poller needs of the service: the webhook's intake, the expiry path, and what is
/// recorded. The service implements it; tests can drive the poller with a fake.
pub trait Intake: Send + Sync {
    /// The groups assigned to any app.
    fn groups(&self) -> BTreeSet<SourceId>;

    /// The assigned groups a round reads: those with PIM eligibility, as far as the source
    /// said (a group nobody is eligible for has no activation to find). All assigned
    /// groups unless the implementation knows better.
    fn pim_groups(&self) -> BTreeSet<SourceId> {
        self.groups()
    }

    /// Whether this replica polls now (with several replicas, one at a time does). A
    /// replica that starts polling later reads every group afresh.
    fn polls(&self) -> bool {
        true
    }

    /// The wall clock the service runs on.
    fn now(&self) -> DateTime<Utc>;

    /// Decides, records and pushes one activation, exactly as the webhook does.
    fn activate(
        &self,
        req: ActivationRequest,
        origin: &'static str,
    ) -> BoxFuture<'_, Result<Accepted, Refusal>>;

    /// Ends every live activation of (`group`, `user`) now, through the expiry path; returns
    /// how many were ended.
    fn end_activation<'a>(
        &'a self,
        group: &'a SourceId,
        user: &'a SourceId,
    ) -> BoxFuture<'a, Result<usize, store::Error>>;

    /// The live recorded activations of `group`, in every app that has it assigned (one
    /// activation may appear once per app). `None` when the store cannot be read (the
    /// implementation logs why): the poller changes nothing and the next round retries.
    fn recorded<'a>(&'a self, group: &'a SourceId) -> BoxFuture<'a, Option<Vec<Activation>>>;

    /// The longest PIM lets a member activation of `group` last (its policy), if known.
    fn policy_max(&self, group: &SourceId) -> Option<std::time::Duration> {
        let _ = group;
        None
    }
}

/// The poller as [`crate::service::Options`] carries it: a feed and its interval.
#[derive(Clone)]
pub struct PimPoll {
    /// Where the instances come from.
    pub feed: Arc<dyn PimFeed>,
    /// Time between the starts of two rounds (`pim_poll_interval`).
    pub every: Duration,
}

impl fmt::Debug for PimPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PimPoll")
            .field("feed", &self.feed.describe())
            .field("every", &self.every)
            .finish()
    }
}

/// An instance the poller has turned into an activation (or adopted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tracked {
    pub(crate) group: SourceId,
    pub(crate) user: SourceId,
    /// The instance's end when it was last activated or adopted.
    pub(crate) end: Option<DateTime<Utc>>,
}

/// What one group's read changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decisions {
    /// Live instances not seen before, or seen with an earlier end (PIM extended them), by
    /// id: to activate or adopt.
    pub(crate) new: Vec<PimInstance>,
    /// Seen instances that vanished or ended: to forget.
    pub(crate) gone: Vec<String>,
    /// (group, user) pairs to end now: a gone instance backed them and no live one does.
    pub(crate) ended: Vec<(SourceId, SourceId)>,
}

/// Whether a request `status` means PIM granted the membership (graph-pim-facts §2.5: the
/// pending states are `PendingApproval`, `PendingProvisioning`, `PendingScheduleCreation`,
/// `PendingAdminDecision`; an instance exists only once provisioned, so a pending request
/// with an instance is a race to wait out, one round).
fn provisioned(status: &str) -> bool {
    !status.to_ascii_lowercase().starts_with("pending")
}

/// The instance's end, capped at its start plus the group's policy maximum (PIM should
/// never send a later one; a warning says so if it does).
fn capped_end(i: &PimInstance, max: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
    let (Some(start), Some(max)) = (i.start, max) else {
        return i.end;
    };
    let limit = start + chrono::Duration::from_std(max).unwrap_or(chrono::Duration::hours(24));
    match i.end {
        Some(end) if end <= limit => Some(end),
        end => {
            tracing::warn!(group = %i.group, user = %i.user, instance = %i.id,
                end = ?end.map(|e| e.to_rfc3339()), limit = %limit.to_rfc3339(),
                "PIM poll: the instance ends later than the group's policy allows; capped to the policy's maximum");
            Some(limit)
        }
    }
}

/// Whether an instance's end moved later than the one its activation was recorded with.
fn extended(was: Option<DateTime<Utc>>, now: Option<DateTime<Utc>>) -> bool {
    match (was, now) {
        (Some(was), Some(now)) => now > was,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Compares what the poller has seen of `group` with a successful read of it at `now`.
/// Instances of other groups in `fetched` are ignored.
pub(crate) fn diff(
    seen: &BTreeMap<String, Tracked>,
    group: &SourceId,
    fetched: &[PimInstance],
    now: DateTime<Utc>,
) -> Decisions {
    let live: BTreeMap<&str, &PimInstance> = fetched
        .iter()
        .filter(|i| i.group == *group && i.live(now))
        .map(|i| (i.id.as_str(), i))
        .collect();
    let covered: BTreeSet<&SourceId> = live.values().map(|i| &i.user).collect();
    let new = live
        .values()
        .filter(|i| seen.get(&i.id).is_none_or(|t| extended(t.end, i.end)))
        .map(|i| (*i).clone())
        .collect();
    let mut gone = Vec::new();
    let mut ended = BTreeSet::new();
    for (id, t) in seen.iter().filter(|(_, t)| t.group == *group) {
        if !live.contains_key(id.as_str()) {
            gone.push(id.clone());
            if !covered.contains(&t.user) {
                ended.insert((t.group.clone(), t.user.clone()));
            }
        }
    }
    Decisions {
        new,
        gone,
        ended: ended.into_iter().collect(),
    }
}

/// Whether a new instance ending at `end` is already covered by a recorded live activation
/// of the same (group, user) that expires at `recorded` (after a restart, or one the webhook
/// reported): adopted without a new push. A recorded activation ending sooner is not enough:
/// it would remove the membership while PIM still grants it, so a new one is recorded (its
/// push finds the app already holding the member and sends nothing).
pub(crate) fn adopts(recorded: Option<&DateTime<Utc>>, end: Option<DateTime<Utc>>) -> bool {
    recorded.is_some_and(|at| end.is_none_or(|end| *at >= end))
}

/// Users of `group` whose activation an earlier process recorded from PIM (`recorded`:
/// user and origin of each live recorded activation) and that no live instance in a
/// successful read of the group backs any more: PIM ended them while no poller was watching.
/// Activations of other origins (the webhook) are not PIM's to end.
pub(crate) fn orphaned(
    recorded: &[(SourceId, String)],
    group: &SourceId,
    fetched: &[PimInstance],
    now: DateTime<Utc>,
) -> BTreeSet<SourceId> {
    let live: BTreeSet<&SourceId> = fetched
        .iter()
        .filter(|i| i.group == *group && i.live(now))
        .map(|i| &i.user)
        .collect();
    recorded
        .iter()
        .filter(|(user, origin)| origin == ORIGIN && !live.contains(user))
        .map(|(user, _)| user.clone())
        .collect()
}

/// The loop's state: what it has seen, by instance id.
pub struct Poller {
    intake: Arc<dyn Intake>,
    feed: Arc<dyn PimFeed>,
    seen: BTreeMap<String, Tracked>,
    /// Groups read successfully at least once by this process: their recorded activations
    /// were compared with PIM (see [`orphaned`]).
    reconciled: BTreeSet<SourceId>,
}

impl Poller {
    /// A poller reading `feed` and reporting to `intake`, having seen nothing yet.
    pub fn new(feed: Arc<dyn PimFeed>, intake: Arc<dyn Intake>) -> Self {
        Poller {
            intake,
            feed,
            seen: BTreeMap::new(),
            reconciled: BTreeSet::new(),
        }
    }

    /// Polls every `every` until `cancel` fires: one round at a time, a late tick skipped.
    pub async fn run(mut self, every: Duration, cancel: tokio_util::sync::CancellationToken) {
        tracing::info!(feed = %self.feed.describe(), every = %humantime::format_duration(every),
            "PIM poller started");
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.round() => {}
            }
        }
    }

    /// One round: every group with PIM eligibility, and every group of an instance already
    /// seen (so that its end is seen even if the eligibility went), read in one call to the
    /// feed (the Graph source batches them, 20 a request), decided one group after the other
    /// in order.
    async fn round(&mut self) {
        if !self.intake.polls() {
            // Another replica polls; what this one saw may be stale when it polls again.
            self.seen.clear();
            self.reconciled.clear();
            return;
        }
        let started = Instant::now();
        let mut groups = self.intake.pim_groups();
        groups.extend(self.seen.values().map(|t| t.group.clone()));
        let groups: Vec<SourceId> = groups.into_iter().collect();
        let feed = self.feed.clone();
        let reads = feed.active_instances_of(&groups).await;
        for (group, read) in groups.iter().zip(reads) {
            match read {
                Ok(fetched) => {
                    if !self.reconciled.contains(group) {
                        self.reconcile(group, &fetched).await;
                    }
                    let d = diff(&self.seen, group, &fetched, self.intake.now());
                    self.apply(group, d).await;
                }
                Err(e) => {
                    crate::metrics::pim_poll_failed();
                    tracing::warn!(group = %group, feed = %self.feed.describe(), error = %e,
                        "PIM poll: cannot read the group's assignment schedule instances; nothing changes for it this round");
                }
            }
        }
        crate::metrics::pim_poll_seconds(started.elapsed().as_secs_f64());
    }

    async fn apply(&mut self, group: &SourceId, d: Decisions) {
        // Ends first: a pair that could not be ended stays seen, so the next round retries.
        let mut failed: BTreeSet<SourceId> = BTreeSet::new();
        for (group, user) in &d.ended {
            match self.intake.end_activation(group, user).await {
                Ok(n) => {
                    crate::metrics::pim_poll_activation("ended");
                    tracing::info!(group = %group, user = %user, activations = n,
                        "PIM poll: activation ended in PIM; removing the membership");
                }
                Err(e) => {
                    failed.insert(user.clone());
                    tracing::error!(group = %group, user = %user, error = %e,
                        "PIM poll: cannot end the activation; retrying next round");
                }
            }
        }
        for id in &d.gone {
            if self.seen.get(id).is_some_and(|t| !failed.contains(&t.user)) {
                self.seen.remove(id);
            }
        }
        if d.new.is_empty() {
            return;
        }
        let Some(recorded) = self.intake.recorded(group).await else {
            return;
        };
        // The latest recorded expiry of each user.
        let mut until: BTreeMap<SourceId, DateTime<Utc>> = BTreeMap::new();
        for a in recorded {
            let at = until.entry(a.user).or_insert(a.expires_at);
            *at = (*at).max(a.expires_at);
        }
        for i in d.new {
            if adopts(until.get(&i.user), i.end) {
                crate::metrics::pim_poll_activation("adopted");
                tracing::info!(group = %group, user = %i.user, instance = %i.id,
                    "PIM poll: activation already recorded; adopted without a new push");
                self.track(i);
                continue;
            }
            // The request the instance came from: its justification and ticket, and
            // whether PIM has provisioned it (an approval may still be pending).
            let request = match self.feed.request_of(&i).await {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(group = %group, user = %i.user, instance = %i.id, error = %e,
                        "PIM poll: cannot read the activation's request; pushed without its justification and ticket");
                    PimRequest::default()
                }
            };
            if !request.status.is_empty() && !provisioned(&request.status) {
                crate::metrics::pim_poll_activation("pending");
                tracing::info!(group = %group, user = %i.user, instance = %i.id, status = %request.status,
                    "PIM poll: the activation's request is not provisioned yet; not pushed until it is");
                continue;
            }
            let expires_at = capped_end(&i, self.intake.policy_max(group));
            let req = ActivationRequest {
                group_id: i.group.clone(),
                user_id: i.user.clone(),
                expires_at,
                justification: request.justification,
                ticket_number: request.ticket_number,
                ticket_system: request.ticket_system,
            };
            match self.intake.activate(req, ORIGIN).await {
                Ok(accepted) => {
                    crate::metrics::pim_poll_activation("activated");
                    if let Some(start) = i.start {
                        let age = (self.intake.now() - start).to_std().unwrap_or_default();
                        crate::metrics::detection_latency(ORIGIN, age.as_secs_f64());
                    }
                    tracing::info!(group = %group, user = %i.user, instance = %i.id,
                        activation = %accepted.activation_id, "PIM poll: activation detected");
                    self.track(i);
                }
                Err(Refusal::Unavailable(why)) => {
                    crate::metrics::pim_poll_activation("unavailable");
                    tracing::warn!(group = %group, user = %i.user, instance = %i.id, error = %why,
                        "PIM poll: activation cannot be decided now; retrying next round");
                }
                Err(refusal) => {
                    // Refused for good (not eligible, not assigned): do not retry every round.
                    crate::metrics::pim_poll_activation("refused");
                    tracing::warn!(group = %group, user = %i.user, instance = %i.id, error = %refusal,
                        "PIM poll: activation refused");
                    self.track(i);
                }
            }
        }
    }

    /// The first successful read of `group` in this process: ends the activations an earlier
    /// process recorded from PIM that PIM no longer lists (deactivated during the downtime).
    /// Done once the store could be read and every end was recorded.
    async fn reconcile(&mut self, group: &SourceId, fetched: &[PimInstance]) {
        let Some(recorded) = self.intake.recorded(group).await else {
            return;
        };
        let recorded: Vec<(SourceId, String)> =
            recorded.into_iter().map(|a| (a.user, a.origin)).collect();
        let mut done = true;
        for user in orphaned(&recorded, group, fetched, self.intake.now()) {
            match self.intake.end_activation(group, &user).await {
                Ok(n) => {
                    crate::metrics::pim_poll_activation("ended");
                    tracing::info!(group = %group, user = %user, activations = n,
                        "PIM poll: activation recorded earlier is no longer in PIM; removing the membership");
                }
                Err(e) => {
                    done = false;
                    tracing::error!(group = %group, user = %user, error = %e,
                        "PIM poll: cannot end the activation; retrying next round");
                }
            }
        }
        if done {
            self.reconciled.insert(group.clone());
        }
    }

    fn track(&mut self, i: PimInstance) {
        self.seen.insert(
            i.id,
            Tracked {
                group: i.group,
                user: i.user,
                end: i.end,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn inst(id: &str, user: &str, kind: &str, end_in: Option<i64>) -> PimInstance {
        PimInstance {
            id: id.into(),
            group: "g".into(),
            user: user.into(),
            access_id: "member".into(),
            assignment_type: kind.into(),
            start: Some(t0() - chrono::Duration::minutes(5)),
            end: end_in.map(|s| t0() + chrono::Duration::seconds(s)),
            schedule: None,
        }
    }

    fn seen(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, Tracked> {
        pairs
            .iter()
            .map(|(id, g, u)| {
                (
                    (*id).to_owned(),
                    Tracked {
                        group: (*g).into(),
                        user: (*u).into(),
                        end: Some(t0() + chrono::Duration::seconds(60)),
                    },
                )
            })
            .collect()
    }

    fn ids(d: &Decisions) -> Vec<&str> {
        d.new.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn only_activated_member_instances_count() {
        let mut owner = inst("o", "u3", "Activated", Some(60));
        owner.access_id = "owner".into();
        let fetched = vec![
            inst("a", "u1", "Activated", Some(60)),
            inst("b", "u2", "activated", None),
            inst("c", "u4", "Assigned", Some(60)),
            owner,
        ];
        let d = diff(&BTreeMap::new(), &"g".into(), &fetched, t0());
        assert_eq!(ids(&d), ["a", "b"]);
        assert!(d.gone.is_empty() && d.ended.is_empty());
    }

    #[test]
    fn seen_instances_are_not_new_again() {
        let fetched = vec![inst("a", "u1", "activated", Some(60))];
        let d = diff(&seen(&[("a", "g", "u1")]), &"g".into(), &fetched, t0());
        assert_eq!(d, Decisions::default());
    }

    #[test]
    fn an_extended_instance_is_new_again_and_a_shortened_one_is_not() {
        let fetched = vec![
            inst("a", "u1", "activated", Some(600)),
            inst("b", "u2", "activated", Some(30)),
            inst("c", "u3", "activated", None),
        ];
        let d = diff(
            &seen(&[("a", "g", "u1"), ("b", "g", "u2"), ("c", "g", "u3")]),
            &"g".into(),
            &fetched,
            t0(),
        );
        assert_eq!(ids(&d), ["a", "c"]);
        assert!(d.gone.is_empty() && d.ended.is_empty());
    }

    #[test]
    fn an_instance_ended_or_in_the_past_is_not_new() {
        let fetched = vec![
            inst("a", "u1", "activated", Some(0)),
            inst("b", "u2", "activated", Some(-60)),
        ];
        let d = diff(&BTreeMap::new(), &"g".into(), &fetched, t0());
        assert_eq!(d, Decisions::default());
    }

    #[test]
    fn vanished_and_ended_instances_end_their_pair() {
        let fetched = vec![inst("b", "u2", "activated", Some(-1))];
        let d = diff(
            &seen(&[("a", "g", "u1"), ("b", "g", "u2"), ("x", "other", "u9")]),
            &"g".into(),
            &fetched,
            t0(),
        );
        assert!(d.new.is_empty());
        assert_eq!(d.gone, ["a", "b"]);
        assert_eq!(
            d.ended,
            [("g".into(), "u1".into()), ("g".into(), "u2".into())],
            "another group's instance is not judged by this group's read"
        );
    }

    #[test]
    fn a_pair_still_backed_by_another_instance_is_not_ended() {
        // PIM renewed: instance a vanished, b (same user) is new.
        let fetched = vec![inst("b", "u1", "activated", Some(600))];
        let d = diff(&seen(&[("a", "g", "u1")]), &"g".into(), &fetched, t0());
        assert_eq!(ids(&d), ["b"]);
        assert_eq!(d.gone, ["a"]);
        assert!(d.ended.is_empty());
    }

    #[test]
    fn adoption_needs_a_recorded_activation_lasting_as_long() {
        let (t, later) = (t0(), t0() + chrono::Duration::seconds(1));
        assert!(adopts(Some(&t), Some(t)));
        assert!(adopts(Some(&later), Some(t)));
        assert!(
            adopts(Some(&t), None),
            "no end: any live activation covers it"
        );
        assert!(!adopts(Some(&t), Some(later)), "PIM extended it");
        assert!(!adopts(None, Some(t)));
        assert!(!adopts(None, None));
    }

    #[test]
    fn orphans_are_recorded_pim_activations_no_live_instance_backs() {
        let rec = |u: &str, origin: &str| (SourceId::from(u), origin.to_owned());
        let recorded = vec![
            rec("u1", ORIGIN),
            rec("u2", ORIGIN),
            rec("u3", ORIGIN),
            rec("u4", "webhook"),
        ];
        let fetched = vec![
            inst("a", "u1", "activated", Some(60)),
            inst("b", "u2", "activated", Some(-1)),
            inst("d", "u4", "Assigned", Some(60)),
        ];
        let got = orphaned(&recorded, &"g".into(), &fetched, t0());
        let want: BTreeSet<SourceId> = ["u2".into(), "u3".into()].into();
        assert_eq!(got, want, "u1 is live; u4 came from the webhook");
    }

    #[test]
    fn instances_of_other_groups_in_the_answer_are_ignored() {
        let mut stray = inst("s", "u1", "activated", Some(60));
        stray.group = "other".into();
        let d = diff(&BTreeMap::new(), &"g".into(), &[stray], t0());
        assert_eq!(d, Decisions::default());
    }

    /// A feed whose answer the test sets.
    #[derive(Default)]
    struct Feed(std::sync::Mutex<Vec<PimInstance>>);

    impl PimFeed for Feed {
        fn describe(&self) -> String {
            "test feed".into()
        }

        fn active_instances(
            &self,
            _group: &SourceId,
        ) -> BoxFuture<'_, Result<Vec<PimInstance>, crate::source::Error>> {
            let now = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(now) })
        }
    }

    /// An intake that records what the poller asks of it, and refuses user `u-refused`.
    #[derive(Default)]
    struct Fake {
        activated: std::sync::Mutex<Vec<(String, Option<DateTime<Utc>>)>>,
        ended: std::sync::Mutex<Vec<String>>,
    }

    impl Intake for Fake {
        fn groups(&self) -> BTreeSet<SourceId> {
            ["g".into()].into()
        }

        fn now(&self) -> DateTime<Utc> {
            t0()
        }

        fn activate(
            &self,
            req: ActivationRequest,
            origin: &'static str,
        ) -> BoxFuture<'_, Result<Accepted, Refusal>> {
            assert_eq!(origin, ORIGIN);
            Box::pin(async move {
                if req.user_id.as_str() == "u-refused" {
                    return Err(Refusal::NotEligible("not eligible".into()));
                }
                self.activated
                    .lock()
                    .unwrap()
                    .push((req.user_id.to_string(), req.expires_at));
                Ok(Accepted {
                    activation_id: "a".into(),
                    expires_at: req.expires_at.unwrap_or(t0()),
                    apps: vec![],
                })
            })
        }

        fn end_activation<'a>(
            &'a self,
            _group: &'a SourceId,
            user: &'a SourceId,
        ) -> BoxFuture<'a, Result<usize, store::Error>> {
            self.ended.lock().unwrap().push(user.to_string());
            Box::pin(async { Ok(1) })
        }

        fn recorded<'a>(&'a self, _group: &'a SourceId) -> BoxFuture<'a, Option<Vec<Activation>>> {
            Box::pin(async { Some(vec![]) })
        }
    }

    #[tokio::test]
    async fn rounds_against_a_fake_intake_activate_once_and_end_when_pim_drops_it() {
        let feed = Arc::new(Feed::default());
        let intake = Arc::new(Fake::default());
        let mut poller = Poller::new(feed.clone(), intake.clone());
        *feed.0.lock().unwrap() = vec![
            inst("a", "u1", "activated", Some(600)),
            inst("r", "u-refused", "activated", Some(600)),
        ];
        poller.round().await;
        poller.round().await;
        let end = Some(t0() + chrono::Duration::seconds(600));
        assert_eq!(
            *intake.activated.lock().unwrap(),
            [("u1".to_owned(), end)],
            "activated once, with PIM's end; the refused one is not retried"
        );
        assert!(intake.ended.lock().unwrap().is_empty());
        feed.0.lock().unwrap().clear();
        poller.round().await;
        assert_eq!(*intake.ended.lock().unwrap(), ["u-refused", "u1"]);
        poller.round().await;
        assert_eq!(intake.ended.lock().unwrap().len(), 2, "ended once");
    }
}
