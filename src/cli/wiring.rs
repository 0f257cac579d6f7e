//! From a loaded config to the parts a command runs: the source (and, for Graph, the PIM
//! poller's feed) and the apps with their clients. Secrets are read here, when a command
//! needs them.

use std::sync::Arc;

use super::Fatal;
use crate::config::{Config, SourceConfig};
use crate::drive::poller::PimPoll;
use crate::drive::watch::PushWatch;
use crate::engine::App;
use crate::source::{FileSource, GraphSource, Source};
use crate::store::Store;

/// The source a config names. The Graph source reads its client secret here, at start, and
/// reads the groups assigned to every configured app.
///
/// # Errors
/// [`Fatal`] naming the secret's key when it cannot be read.
pub fn source_of(cfg: &Config) -> Result<Arc<dyn Source>, Fatal> {
    Ok(source_and_poll(cfg, None)?.source)
}

/// A source with the drivers of service mode that read the same source.
pub struct Wired {
    /// The source.
    pub source: Arc<dyn Source>,
    /// The PIM poller's feed (Graph source).
    pub pim: Option<PimPoll>,
    /// The push groups' polled watch (Graph source with push groups).
    pub watch: Option<PushWatch>,
}

/// The source a config names and, for the Graph source, the PIM poller reading the same
/// tenant every `pim_poll_interval` and, with push groups, their watch every
/// `watch_interval` (service mode). With a `store`, the Graph source reads changes only
/// (delta queries), keeping what it needs to resume in the store; without one every
/// snapshot is a full read.
///
/// # Errors
/// As [`source_of`].
pub fn source_and_poll(cfg: &Config, store: Option<&Store>) -> Result<Wired, Fatal> {
    Ok(match &cfg.source {
        SourceConfig::File { path } => Wired {
            source: Arc::new(FileSource::new(path.clone())),
            pim: None,
            watch: None,
        },
        SourceConfig::Graph(g) => {
            let graph = GraphSource::new(g, g.client_secret()?, &cfg.apps)
                .map_err(|e| Fatal(e.to_string()))?;
            let graph = Arc::new(match store {
                Some(store) => graph.with_delta(Some(store.clone())),
                None => graph,
            });
            let pim = Some(PimPoll {
                feed: graph.clone(),
                every: g.pim_poll_interval,
            });
            let watch = cfg
                .apps
                .iter()
                .any(|a| !a.push_groups.is_empty())
                .then(|| PushWatch {
                    feed: graph.clone(),
                    every: g.watch_interval,
                });
            Wired {
                source: graph,
                pim,
                watch,
            }
        }
    })
}

/// Builds the apps named in `names` (all when empty), reading their tokens.
///
/// # Errors
/// [`Fatal`] naming an unknown app or a missing token variable.
pub fn build_apps(cfg: &Config, names: &[String]) -> Result<Vec<App>, Fatal> {
    cfg.select_apps(names)?
        .into_iter()
        .map(|a| {
            let token = a.token()?;
            App::new(a.clone(), &token).map_err(Fatal::from)
        })
        .collect()
}
