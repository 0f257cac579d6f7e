//! The single integration-test binary of scim-sync.

// Test code: failing loudly on an unexpected result is the point, so the crate's
// production lints against panics do not apply here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

// Shared helpers: SCIM mock servers and clients pointed at them.
mod support;
// Wiremock contract tests of the SCIM client against RFC 7644 and real-server quirks.
mod scim_contract;
