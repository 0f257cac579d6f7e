//! The single integration-test binary of scim-sync.

// Test code: failing loudly on an unexpected result is the point, so the crate's
// production lints against panics do not apply here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

// Shared helpers: SCIM mock servers and clients pointed at them.
mod support;
// Wiremock contract tests of the SCIM client against RFC 7644 and real-server quirks.
mod scim_contract;
// The engine against the built-in sandbox app: whole cycles, checked on the app's own state.
mod e2e;
// The binary as a user runs it: exit codes, messages, dry run, JSON, status, demo.
mod cli;
// Service mode: webhook, limiter, deferral, the interval, expiry and restarts.
mod service;
// The PIM poller: activations and their end read from a scripted PIM feed.
mod poller;
// The Microsoft Graph source against wiremock and the Graph double.
mod graph;
// Push groups: the directory file watched, an edit pushed at once.
mod push_groups;
// What scim-sync learns of an app: declared capabilities, attributes it rewrites.
mod schema;
// profile = "aws-identity-center" against the AWS IAM Identity Center double.
mod aws;
// Real replicas on one store: SIGKILL, SIGSTOP, SIGTERM, one limiter, fencing.
mod replicas;
// House rules checked mechanically (module docs, one-way module dependencies).
mod tidy;
