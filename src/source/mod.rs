//! Sources: where the directory comes from. Each source yields a complete, validated
//! [`Directory`] snapshot per cycle, or an error; never a partial snapshot.
//!
//! The engine treats any error here as "the source is unknown this cycle": it aborts the app's
//! cycle before planning, so a failed or partial read can never lead to a disable or a delete.

pub mod file;
pub mod graph;
pub mod pim;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::model::{Directory, SourceId};

pub use file::FileSource;
pub use graph::GraphSource;
pub use pim::{PimFeed, PimInstance, PimPolicy, PimRequest};
pub use watch::{MemberChange, MemberWatch, WatchRound};

/// Why a snapshot could not be read. Every variant names the place at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: cannot read the directory file: {source}")]
    Read {
        /// The directory file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON or has a field of the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The directory file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The JSON is well formed but inconsistent (duplicate id, unknown member, …).
    #[error("{path}: {at}: {message}")]
    Invalid {
        /// The directory file.
        path: PathBuf,
        /// Where in the file, e.g. `groups[1] "g-crm-users" members[2]`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// Microsoft Graph could not be read completely.
    #[error(transparent)]
    Graph(#[from] graph::Error),
}

/// A source of directory snapshots.
pub trait Source: Send + Sync {
    /// A short description for logs and messages (a path, a tenant).
    fn describe(&self) -> String;

    /// Reads a complete snapshot.
    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, Error>>;

    /// What the source can say about `user`'s eligibility for `group` without a full read
    /// (the webhook's 403 must not cost a read of the whole tenant). The default knows
    /// nothing.
    fn eligibility<'a>(
        &'a self,
        _group: &'a SourceId,
        _user: &'a SourceId,
    ) -> BoxFuture<'a, Eligibility> {
        Box::pin(async { Eligibility::Unknown })
    }
}

/// A cheap answer about one user's eligibility for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eligibility {
    /// The source has not changed since its last snapshot: that snapshot answers.
    Current,
    /// The source itself says the user is eligible (a full read then brings the user's
    /// attributes, for the push).
    Eligible,
    /// The source itself says the user is not eligible.
    NotEligible,
    /// Unknown without a full read.
    Unknown,
}

/// A directory held in memory, changed by its owner between cycles (the demo, tests and
/// benchmarks use it to script changes without writing files).
#[derive(Clone, Default)]
pub struct MemorySource {
    dir: Arc<Mutex<Directory>>,
}

impl MemorySource {
    /// A source holding `dir`.
    pub fn new(dir: Directory) -> Self {
        Self {
            dir: Arc::new(Mutex::new(dir)),
        }
    }

    /// Changes the held directory; the next snapshot sees the change.
    pub fn update(&self, f: impl FnOnce(&mut Directory)) {
        let mut guard = crate::locks::lock(&self.dir, "memory source");
        f(&mut guard);
    }
}

impl Source for MemorySource {
    fn describe(&self) -> String {
        "in-memory directory".into()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, Error>> {
        let dir = crate::locks::lock(&self.dir, "memory source").clone();
        Box::pin(async move { Ok(dir) })
    }
}
