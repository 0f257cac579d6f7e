//! The push groups' watchers (`[[apps]] push_groups`). Both tell the service, through
//! [`Changes`], that the push groups may have changed; the service reads the source and
//! decides what changed. These drivers only watch:
//!
//! - [`spawn`], for the file source: a debounced watch of the directory file's folder
//!   (editors and atomic renames replace the file rather than write it);
//! - [`poll`], for a source that reads the changes itself ([`MemberWatch`], the Graph
//!   source's scoped `groups/delta`): a round every `watch_interval` on the replica that
//!   watches, committed once the service's snapshot shows its changes (or after
//!   [`UNCONFIRMED_ROUNDS`] rounds that did not, so one change Graph's directory never shows
//!   does not hold the watch back; the next cycle applies it).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use tokio_util::sync::CancellationToken;

use crate::source::{MemberChange, MemberWatch};

/// How long the watcher lets a burst of events settle before it reports them.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Who is told that the push groups may have changed.
pub trait Changes: Send + Sync + 'static {
    /// Reads the source and acts on what changed in the push groups; one call at a time.
    /// `expected`: the changes a [`MemberWatch`] read (none from the file watcher). Whether
    /// the read succeeded and its snapshot shows each expected change.
    fn changed<'a>(&'a self, expected: &'a [MemberChange]) -> BoxFuture<'a, bool>;

    /// Whether this process runs the polled watch now (one replica at a time).
    fn watching(&self) -> bool;
}

/// Rounds in a row whose changes the service's snapshot did not show before the round is
/// committed anyway.
pub const UNCONFIRMED_ROUNDS: u32 = 3;

/// A polled watch: where the changes are read and how often.
#[derive(Clone)]
pub struct PushWatch {
    /// The push groups' changes (the Graph source).
    pub feed: Arc<dyn MemberWatch>,
    /// Time between the starts of two rounds (`watch_interval`).
    pub every: Duration,
}

impl std::fmt::Debug for PushWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushWatch")
            .field("feed", &self.feed.describe())
            .field("every", &self.every)
            .finish()
    }
}

/// Runs `watch` until `stop` is cancelled: a round every `watch.every` while
/// `changes.watching()`, never two at once. A failed round changes nothing and is read again.
pub async fn poll(watch: PushWatch, changes: Arc<dyn Changes>, stop: CancellationToken) {
    let mut every = tokio::time::interval(watch.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unconfirmed = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        if !changes.watching() {
            continue;
        }
        let round = match watch.feed.round().await {
            Ok(round) => round,
            Err(e) => {
                tracing::warn!(error = %e, "push groups: the watch round failed; nothing pushed or removed, read again next round");
                continue;
            }
        };
        if !round.changes.is_empty() || round.baseline {
            if !round.changes.is_empty() {
                tracing::info!(
                    changes = round.changes.len(),
                    "push groups: membership changes read"
                );
            }
            if !changes.changed(&round.changes).await {
                unconfirmed += 1;
                if unconfirmed < UNCONFIRMED_ROUNDS {
                    tracing::warn!(
                        "push groups: the source's snapshot does not show the changes yet; reading them again next round"
                    );
                    continue;
                }
                tracing::warn!(
                    rounds = unconfirmed,
                    "push groups: the source's snapshot still does not show the changes; the next cycle applies them"
                );
            }
        }
        unconfirmed = 0;
        watch.feed.commit(round).await;
    }
}

/// Watches `file` until `stop` is cancelled, telling `changes` once after each burst of
/// events that touched it (or after the watcher lost track of events).
///
/// # Errors
/// The file's folder cannot be watched; the message names it.
pub fn spawn(
    file: &Path,
    changes: Arc<dyn Changes>,
    stop: CancellationToken,
) -> Result<(), String> {
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = file
        .file_name()
        .map(ToOwned::to_owned)
        .ok_or_else(|| format!("{} names no file to watch", file.display()))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |res: DebounceEventResult| {
        let ours = match res {
            Ok(events) => events
                .iter()
                .any(|e| e.path.file_name() == Some(name.as_os_str())),
            // The watcher lost track (an overflow, say): look anyway.
            Err(_) => true,
        };
        if ours {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", folder.display()))?;
    debouncer
        .watcher()
        .watch(&folder, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", folder.display()))?;
    tokio::spawn(async move {
        // Dropping the debouncer stops the watch: it lives as long as this task.
        let _debouncer = debouncer;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                got = rx.recv() => if got.is_none() { break },
            }
            // Events that arrived meanwhile are covered by the read that follows.
            while rx.try_recv().is_ok() {}
            changes.changed(&[]).await;
        }
    });
    Ok(())
}
