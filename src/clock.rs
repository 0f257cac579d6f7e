//! Wall-clock time as a parameter.
//!
//! Activations end at a wall-clock time (`expires_at`), while timers run on `tokio::time`.
//! Code that compares or schedules against wall time takes a [`Clock`] instead of calling
//! `Utc::now()`, so a test can run the service under paused tokio time: [`TokioClock`] is
//! wall time that moves exactly as far as `tokio::time` does. Production uses
//! [`SystemClock`]. This module knows nothing of the product; it only tells the time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::time::Instant;

/// Where "now" comes from.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The wall-clock time now.
    fn now(&self) -> DateTime<Utc>;

    /// The `tokio::time` instant at which this clock reads `at` (now, when `at` has passed).
    fn deadline(&self, at: DateTime<Utc>) -> Instant {
        Instant::now() + (at - self.now()).to_std().unwrap_or(Duration::ZERO)
    }
}

/// A clock shared by the engine, the service and its drivers.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Wall time that follows `tokio::time`: it reads the wall clock once, when made, and then
/// moves only as tokio's clock moves (paused, advanced or running).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    at: Instant,
}

impl TokioClock {
    /// A clock reading the wall time now, moving with `tokio::time` from here.
    pub fn new() -> Self {
        TokioClock {
            wall: Utc::now(),
            at: Instant::now(),
        }
    }

    /// The same, shared.
    pub fn shared() -> SharedClock {
        Arc::new(TokioClock::new())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let passed =
            chrono::Duration::from_std(Instant::now() - self.at).unwrap_or(chrono::Duration::MAX);
        self.wall + passed
    }
}

/// `at` as RFC 3339 with milliseconds, the form of every timestamp in reports and leases.
pub fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `d` written the way the config writes durations (`48h`, `1h30m`, `90s` as `1m30s`,
/// `500ms`), for messages and logs: humantime would say `2days`.
pub fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s, ms) = (secs / 3600, secs / 60 % 60, secs % 60, d.subsec_millis());
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (u64::from(ms), "ms")] {
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
        }
    }
    if out.is_empty() {
        out.push_str(if d.is_zero() { "0s" } else { "<1ms" });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_as_the_config_writes_them_and_read_back() {
        for (d, shown) in [
            (Duration::from_secs(48 * 3600), "48h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(show_duration(d), shown);
            assert_eq!(
                humantime::parse_duration(shown).unwrap(),
                d,
                "{shown} reads back"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time_and_deadlines_follow_it() {
        let clock = TokioClock::new();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - t0, chrono::Duration::seconds(90));
        let at = clock.now() + chrono::Duration::seconds(30);
        assert_eq!(clock.deadline(at) - Instant::now(), Duration::from_secs(30));
        assert_eq!(clock.deadline(t0), Instant::now(), "a past time is due now");
    }
}
