//! Test doubles for scim-sync's tests and benchmarks, kept out of the product: only
//! scim-sync's `[dev-dependencies]` name this crate, so the release binary holds none of it.
//!
//! - [`synthetic`]: generated tenant-sized directories and churn, for benchmarks.
//! - [`graph_double`]: an in-process Microsoft Graph (token endpoint, groups, members, PIM,
//!   delta queries) serving a directory on loopback, for the Graph source's tests and benchmarks.
//! - [`aws_double`]: an in-process AWS IAM Identity Center SCIM endpoint (its quirks included).
//! - [`postgres`]: scratch PostgreSQL databases, created per test and dropped after it.
//! - [`replicas`]: real `scim-sync run` processes on one store, each writing to the sandbox
//!   through a recording proxy, for failover and fencing tests and the HA benchmark.
//!
//! It uses scim-sync only through its public API.

pub mod aws_double;
pub mod graph_double;
pub mod postgres;
pub mod replicas;
pub mod synthetic;
