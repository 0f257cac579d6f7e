//! Push groups' membership changes as a source reads them between snapshots: the seam
//! between the push-group watch (`crate::drive::watch`) and where the changes are read.
//!
//! [`MemberWatch`] yields the changes of the push groups since the last committed round
//! ([`WatchRound`]); the Graph source is the production watch (a `groups/delta` query scoped
//! to the push groups, its links kept in the store) and only it knows Graph's JSON. A round
//! is committed only after its changes were acted on, so a round that could not be acted on
//! is read again.

use futures::future::BoxFuture;

use crate::model::SourceId;

/// One member added to or removed from a push group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberChange {
    /// The push group.
    pub group: SourceId,
    /// The user.
    pub user: SourceId,
    /// Added (`true`) or removed.
    pub added: bool,
}

/// What one round read: the changes, and where the next round starts once committed.
#[derive(Debug, Default)]
pub struct WatchRound {
    /// The push groups' member changes since the last committed round, in order (a member
    /// added and removed within the round appears twice).
    pub changes: Vec<MemberChange>,
    /// Where the next round starts (opaque to all but the source).
    pub next: Vec<String>,
    /// Some push groups were read afresh (the first round, or the source no longer knew
    /// where the last one ended): what changed in them since is unknown, not nothing.
    pub baseline: bool,
}

/// Where the push groups' membership changes are read.
pub trait MemberWatch: Send + Sync {
    /// A short description for logs.
    fn describe(&self) -> String;

    /// The changes since the last committed round. A first round (nothing kept) reads the
    /// current members as its baseline: it reports no change and says
    /// [`WatchRound::baseline`]. An error means "unknown this
    /// round": nothing is committed and the same changes are read again.
    fn round(&self) -> BoxFuture<'_, Result<WatchRound, super::Error>>;

    /// Makes `round` the start of the next one (kept across restarts where the source can).
    fn commit(&self, round: WatchRound) -> BoxFuture<'_, ()>;
}
