//! The directory file's watcher, for push groups (`[[apps]] push_groups` with the file
//! source): a debounced watch of the file's folder (editors and atomic renames replace the
//! file rather than write it) that tells the service, through [`Changes`], that the file may
//! have changed. The service reads it and decides what changed; this driver only watches.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use tokio_util::sync::CancellationToken;

/// How long the watcher lets a burst of events settle before it reports them.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Who is told that the file may have changed.
pub trait Changes: Send + Sync + 'static {
    /// Reads the file and acts on what changed; one call at a time.
    fn file_changed(&self) -> BoxFuture<'_, ()>;
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
            changes.file_changed().await;
        }
    });
    Ok(())
}
