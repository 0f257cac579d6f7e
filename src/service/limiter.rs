//! The per-app push limiter: `governor` GCRA quotas, one independent limiter per app.
//!
//! A push is decided with [`PushLimiter::check`], which never waits: an activation the quota
//! refuses is deferred to the app's next cycle (SPEC §6.3), never queued behind a sleep. With
//! `push_limit = { burst = 5, per = "10s" }` five pushes pass at once after a quiet spell, then
//! one more every 2 s. The clock is a parameter: the service runs on [`TokioTime`] (tokio's
//! clock, so paused-time tests move the quota with the timers that wait on it), unit tests
//! on `FakeRelativeClock`.

use std::collections::HashMap;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::{AppConfig, PushLimit};
use crate::model::AppName;

/// What the limiter decided for one push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Push now.
    Allowed,
    /// Over the quota: defer. `wait` is how long until the next push would pass.
    Refused {
        /// Time until the quota allows the next push.
        wait: Duration,
    },
}

/// Tokio's clock for governor: the monotonic clock, and under paused time (tests) the paused
/// one, so that a task sleeping until the quota allows a push and the quota agree.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioTime;

impl Clock for TokioTime {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type AppLimiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One limiter per app; apps never share a quota.
pub struct PushLimiter<C: Clock = DefaultClock> {
    clock: C,
    apps: HashMap<AppName, AppLimiter<C>>,
}

/// The governor quota of a `push_limit`: one cell every `per / burst`, bursts of `burst`.
pub fn quota(limit: &PushLimit) -> Quota {
    let period = (limit.per / limit.burst.get()).max(Duration::from_nanos(1));
    // `with_period` is `None` only for a zero period, which the `max` above rules out.
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(limit.burst))
        .allow_burst(limit.burst)
}

impl PushLimiter<DefaultClock> {
    /// A limiter for each app, on the monotonic clock.
    pub fn new(apps: &[AppConfig]) -> Self {
        Self::with_clock(apps, DefaultClock::default())
    }
}

impl PushLimiter<TokioTime> {
    /// A limiter for each app, on tokio's clock.
    pub fn on_tokio_time(apps: &[AppConfig]) -> Self {
        Self::with_clock(apps, TokioTime)
    }
}

impl<C: Clock + Clone> PushLimiter<C> {
    /// A limiter for each app, on `clock`.
    pub fn with_clock(apps: &[AppConfig], clock: C) -> Self {
        let apps = apps
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    RateLimiter::direct_with_clock(quota(&a.push_limit), clock.clone()),
                )
            })
            .collect();
        PushLimiter { clock, apps }
    }

    /// Decides one push for `app` now. An allowed push uses its cell at once; a refused one
    /// uses nothing. An app without a limiter (not configured) is refused.
    pub fn check(&self, app: &AppName) -> Decision {
        match self.apps.get(app).map(RateLimiter::check) {
            Some(Ok(())) => Decision::Allowed,
            Some(Err(not_until)) => Decision::Refused {
                wait: not_until.wait_time_from(self.clock.now()),
            },
            None => Decision::Refused {
                wait: Duration::MAX,
            },
        }
    }

    /// Spends up to `n` of `app`'s free cells: pushes another process made (an earlier
    /// holder of the app's lease), so that the quota holds across a restart or a failover.
    pub fn spend(&self, app: &AppName, n: u64) {
        let Some(limiter) = self.apps.get(app) else {
            return;
        };
        for _ in 0..n {
            // A refused check spends nothing: the cells are all spent.
            if limiter.check().is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn app(name: &str, burst: u32, per: u64) -> AppConfig {
        let text = format!(
            "[source]\nkind = \"file\"\npath = \"d.json\"\n\n[[apps]]\nname = \"{name}\"\nbase_url = \"http://127.0.0.1:1/scim/v2\"\ntoken_env = \"T\"\ngroups = [\"g\"]\npush_limit = {{ burst = {burst}, per = \"{per}s\" }}\n"
        );
        let cfg = crate::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        cfg.apps.into_iter().next().unwrap()
    }

    fn name(s: &str) -> AppName {
        AppName::new(s)
    }

    #[test]
    fn quota_is_five_per_ten_seconds_as_one_every_two_with_a_burst_of_five() {
        let q = quota(&PushLimit {
            burst: NonZeroU32::new(5).unwrap(),
            per: Duration::from_secs(10),
        });
        assert_eq!(q.replenish_interval(), Duration::from_secs(2));
        assert_eq!(q.burst_size().get(), 5);
    }

    #[test]
    fn six_at_once_pass_five_then_one_more_after_two_seconds_and_other_apps_are_unaffected() {
        let clock = FakeRelativeClock::default();
        let lim = PushLimiter::with_clock(&[app("crm", 5, 10), app("wiki", 5, 10)], clock.clone());
        let decisions: Vec<Decision> = (0..6).map(|_| lim.check(&name("crm"))).collect();
        assert_eq!(&decisions[..5], &[Decision::Allowed; 5]);
        assert_eq!(
            decisions[5],
            Decision::Refused {
                wait: Duration::from_secs(2)
            }
        );
        // The other app has its own quota.
        for _ in 0..5 {
            assert_eq!(lim.check(&name("wiki")), Decision::Allowed);
        }
        clock.advance(Duration::from_millis(1999));
        assert!(matches!(lim.check(&name("crm")), Decision::Refused { .. }));
        clock.advance(Duration::from_millis(1));
        assert_eq!(lim.check(&name("crm")), Decision::Allowed);
        assert!(matches!(lim.check(&name("crm")), Decision::Refused { .. }));
    }

    #[test]
    fn a_refused_check_costs_nothing_and_the_sustained_rate_is_one_every_two_seconds() {
        let clock = FakeRelativeClock::default();
        let lim = PushLimiter::with_clock(&[app("crm", 5, 10)], clock.clone());
        let mut passed = 0;
        // 60 s of greedy pushes, one attempt every 100 ms.
        for _ in 0..600 {
            if lim.check(&name("crm")) == Decision::Allowed {
                passed += 1;
            }
            clock.advance(Duration::from_millis(100));
        }
        // 5 at once, then one every 2 s: 5 + 29 (t = 2 s … 58 s, plus 0 s counted in the burst).
        assert_eq!(passed, 34);
    }

    #[test]
    fn an_unknown_app_is_refused() {
        let lim = PushLimiter::with_clock(&[app("crm", 5, 10)], FakeRelativeClock::default());
        assert!(matches!(lim.check(&name("nope")), Decision::Refused { .. }));
    }
}
