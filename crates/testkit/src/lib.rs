//! Test doubles for scim-sync's tests and benchmarks, kept out of the product: only
//! scim-sync's `[dev-dependencies]` name this crate, so the release binary holds none of it.
//!
//! - [`synthetic`]: generated tenant-sized directories and churn, for benchmarks.
//!
//! It uses scim-sync only through its public API.

pub mod synthetic;
