//! Prometheus metrics: every metric name in one place, and the process-wide recorder.
//!
//! Names start with `scim_sync_`; labels are bounded (`app`, `method`, `status`, `outcome`,
//! `reason`), never a user or group id (SPEC §5). Code records through the functions below, so
//! a name is written once. Without an installed recorder (commands other than `run`, most
//! tests) recording is a no-op.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::model::AppName;
use crate::report::CycleReport;

/// Histogram buckets (seconds): activation latency lives in milliseconds, cycles in seconds
/// to minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 2400.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle). `None` when
/// another recorder was installed first, in which case `/metrics` says so.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(BUCKETS).ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "scim_sync_cycles_total",
        "Full cycles finished, by app, reason and outcome."
    );
    describe_histogram!(
        "scim_sync_cycle_seconds",
        "Duration of full cycles, by app."
    );
    describe_counter!(
        "scim_sync_cycles_skipped_total",
        "Scheduled cycles skipped because the app was still busy or its lease is held elsewhere."
    );
    describe_gauge!(
        "scim_sync_last_cycle_start_seconds",
        "Unix time at which the app's last cycle started."
    );
    describe_counter!(
        "scim_sync_scim_requests_total",
        "SCIM HTTP requests sent, by app, method and status (0 = no answer)."
    );
    describe_counter!(
        "scim_sync_activations_total",
        "Activations decided per app: pushed at once or deferred to the next cycle."
    );
    describe_histogram!(
        "scim_sync_activation_latency_seconds",
        "Activation received → the app confirmed the membership, by app."
    );
    describe_histogram!(
        "scim_sync_detection_latency_seconds",
        "The change in the source → scim-sync took it in, by origin: webhook (from the request's arrival), pim-poll (from the PIM instance's startDateTime), push-group (from the directory file's modification time)."
    );
    describe_counter!(
        "scim_sync_deferred_applied_total",
        "Deferred activations applied by a cycle, by app."
    );
    describe_counter!(
        "scim_sync_revocations_total",
        "Expired activations: membership removed (or already absent), or retry needed."
    );
    describe_gauge!(
        "scim_sync_deferred_activations",
        "Live activations waiting for the app's next cycle."
    );
    describe_gauge!(
        "scim_sync_active_activations",
        "Live activations the app holds (or is being sent)."
    );
    describe_counter!(
        "scim_sync_pim_poll_activations_total",
        "What the PIM poller did with activated instances: activated, adopted (already recorded), refused, unavailable (retried next round), or ended."
    );
    describe_counter!(
        "scim_sync_pim_poll_failures_total",
        "Group reads of the PIM poller that failed (nothing changes for the group that round)."
    );
    describe_histogram!(
        "scim_sync_pim_poll_seconds",
        "Duration of PIM poll rounds (every assigned group read once)."
    );
    describe_gauge!(
        "scim_sync_lease_held",
        "1 while this process holds the app's lease (writes to it), else 0."
    );
    describe_counter!(
        "scim_sync_failovers_total",
        "Times this process took over an app's lease from another holder."
    );
    describe_counter!(
        "scim_sync_webhook_refusals_total",
        "Activation or sync requests refused, by HTTP status."
    );
}

/// A finished full cycle.
pub fn cycle_finished(r: &CycleReport, seconds: f64) {
    counter!("scim_sync_cycles_total", "app" => r.app.clone(), "reason" => r.reason.to_string(), "outcome" => r.outcome.to_string()).increment(1);
    histogram!("scim_sync_cycle_seconds", "app" => r.app.clone()).record(seconds);
    if r.deferred_applied > 0 {
        counter!("scim_sync_deferred_applied_total", "app" => r.app.clone())
            .increment(r.deferred_applied);
    }
}

/// A cycle started now.
pub fn cycle_started(app: &AppName) {
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    gauge!("scim_sync_last_cycle_start_seconds", "app" => app.to_string()).set(now);
}

/// A scheduled cycle was skipped; `reason` is `busy` or `lease`.
pub fn cycle_skipped(app: &AppName, reason: &'static str) {
    counter!("scim_sync_cycles_skipped_total", "app" => app.to_string(), "reason" => reason)
        .increment(1);
}

/// A SCIM request got `status` (0 when no answer came).
pub fn scim_request(app: &AppName, method: &str, status: u16) {
    counter!("scim_sync_scim_requests_total", "app" => app.to_string(), "method" => method.to_owned(), "status" => status.to_string()).increment(1);
}

/// The limiter's decision for one activation: `pushed` or `deferred`; `active` for a repeat
/// of a live activation (no limiter slot used).
pub fn activation(app: &AppName, outcome: &'static str) {
    counter!("scim_sync_activations_total", "app" => app.to_string(), "outcome" => outcome)
        .increment(1);
}

/// An activation reached the app `seconds` after it was received.
pub fn activation_latency(app: &AppName, seconds: f64) {
    histogram!("scim_sync_activation_latency_seconds", "app" => app.to_string()).record(seconds);
}

/// How long a change took to be taken in, by origin (`webhook`, `pim-poll`, `push-group`).
pub fn detection_latency(origin: &str, seconds: f64) {
    histogram!("scim_sync_detection_latency_seconds", "origin" => origin.to_owned())
        .record(seconds.max(0.0));
}

/// An expiry removal attempt: `removed` or `retry`.
pub fn revocation(app: &AppName, outcome: &'static str) {
    counter!("scim_sync_revocations_total", "app" => app.to_string(), "outcome" => outcome)
        .increment(1);
}

/// The webhook refused a request with `status`.
pub fn webhook_refused(status: u16) {
    counter!("scim_sync_webhook_refusals_total", "status" => status.to_string()).increment(1);
}

/// Live activations of an app right now, by state group.
pub fn activation_gauges(app: &AppName, deferred: usize, active: usize) {
    gauge!("scim_sync_deferred_activations", "app" => app.to_string()).set(deferred as f64);
    gauge!("scim_sync_active_activations", "app" => app.to_string()).set(active as f64);
}

/// The PIM poller did `outcome` (`activated`, `adopted`, `refused`, `unavailable`, `ended`)
/// with an instance.
pub fn pim_poll_activation(outcome: &'static str) {
    counter!("scim_sync_pim_poll_activations_total", "outcome" => outcome).increment(1);
}

/// A PIM poll read of one group failed.
pub fn pim_poll_failed() {
    counter!("scim_sync_pim_poll_failures_total").increment(1);
}

/// A PIM poll round took `seconds`.
pub fn pim_poll_seconds(seconds: f64) {
    histogram!("scim_sync_pim_poll_seconds").record(seconds);
}

/// Whether this process holds `app`'s lease now.
pub fn lease_held(app: &AppName, held: bool) {
    gauge!("scim_sync_lease_held", "app" => app.to_string()).set(if held { 1.0 } else { 0.0 });
}

/// This process took over `app`'s lease from another holder.
pub fn failover(app: &AppName) {
    counter!("scim_sync_failovers_total", "app" => app.to_string()).increment(1);
}
