//! Drivers: what makes the engine run in service mode, besides a person typing `sync-now`.
//!
//! - [`schedule`]: the fixed-interval tick (tokio-cron-scheduler) that starts full cycles.
//! - [`limiter`]: the per-app `governor` quota that decides push-now or defer.
//! - [`activation`]: activation intake (decide, record, push) and expiry (remove at once).
//! - [`lease`]: one writer per app across processes, through leases in the store.
//! - [`poller`]: the PIM poller, activations and their end read from a [`poller::PimFeed`].
//!
//! Drivers never talk SCIM: every write goes through [`crate::engine::Engine`].

pub mod activation;
pub mod lease;
pub mod limiter;
pub mod poller;
pub mod schedule;
