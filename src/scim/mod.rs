//! The SCIM 2.0 client: the only part of the crate that speaks SCIM HTTP/JSON.
//!
//! - [`client`]: [`ScimClient`], one per app: users, groups, members, with lookups before
//!   creates, bounded retries (429 `Retry-After`, 5xx and transport errors with jittered
//!   backoff), paging, a listing fallback for apps without filtering, and a concurrency
//!   limit.
//! - [`proto`]: the wire shapes, pure functions from attribute paths ([`crate::model::Attrs`])
//!   to SCIM resources and PATCH operations and back.
//! - [`error`]: [`Error`], which names the app, method, path, status, `scimType` and
//!   `detail`, never the token.

pub mod client;
pub mod discovery;
pub mod error;
pub mod proto;

/// The client's retry timing, defined in [`crate::http`] (shared with the Graph source).
pub use crate::http::RetryPolicy;
pub use client::{ClientOptions, Ensured, EnsuredGroup, RemovalForm, ScimClient, UserIndex};
pub use error::Error;
