//! Drivers: what makes the engine run in service mode, besides a person typing `sync-now`.
//!
//! - [`schedule`]: the fixed-interval tick (tokio-cron-scheduler) that starts full cycles.
//! - [`poller`]: the PIM poller, activations and their end read from a
//!   [`crate::source::PimFeed`] and handed to an [`poller::Intake`].
//! - [`watch`]: the directory file's watcher for push groups, which tells a
//!   [`watch::Changes`] that the file may have changed.
//!
//! A driver never holds the service: it gets a narrow handle (a tick channel, an intake) and
//! is tested with a fake one. Drivers never talk SCIM: every write goes through the service
//! and its engine.

pub mod poller;
pub mod schedule;
pub mod watch;
