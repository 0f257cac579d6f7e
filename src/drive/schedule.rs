//! The full-sync schedule: a tick every `full_sync_interval`, measured from the start.
//!
//! Production ticks come from tokio-cron-scheduler with a fixed-interval repeated job
//! (`Job::new_repeated_async`), never a cron pattern: `*/40` in cron fires at :00 and :40.
//! That crate spawns every run without waiting for the last one, and a repeated job can stall
//! under load (crate-facts §2), so the job body does nothing but drop a tick into a channel;
//! the service decides what a tick starts (and skips an app that is still busy). A stalled
//! scheduler shows as `/readyz` failing when no cycle started within twice the interval.
//!
//! [`Ticks::interval`] gives the same ticks from `tokio::time`, so that tests drive the
//! service with paused time (the cron crate reads the wall clock).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

/// A stream of "start the full cycles now" ticks.
pub struct Ticks {
    rx: mpsc::Receiver<()>,
    scheduler: Option<JobScheduler>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ticks {
    /// Ticks from tokio-cron-scheduler: the first at start + `every`, then every `every`
    /// (whole seconds; the crate truncates fractions).
    ///
    /// # Errors
    /// [`JobSchedulerError`] when the scheduler cannot be created or started.
    pub async fn cron(every: Duration) -> Result<Ticks, JobSchedulerError> {
        let (tx, rx) = mpsc::channel(4);
        let scheduler = JobScheduler::new().await?;
        let job = Job::new_repeated_async(every, move |_id, _scheduler| {
            let tx = tx.clone();
            Box::pin(async move {
                // Never block the scheduler: a full channel means ticks are already waiting.
                let _ = tx.try_send(());
            })
        })?;
        scheduler.add(job).await?;
        scheduler.start().await?;
        Ok(Ticks {
            rx,
            scheduler: Some(scheduler),
            task: None,
        })
    }

    /// The same ticks from `tokio::time` (first at start + `every`; a late tick delays the
    /// next ones instead of bunching them).
    pub fn interval(every: Duration) -> Ticks {
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now() + every;
            let mut interval = tokio::time::interval_at(start, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        Ticks {
            rx,
            scheduler: None,
            task: Some(task),
        }
    }

    /// The next tick; `None` once stopped.
    pub async fn next(&mut self) -> Option<()> {
        self.rx.recv().await
    }

    /// Stops ticking. A cycle already started is not cancelled here.
    pub async fn stop(mut self) {
        if let Some(mut s) = self.scheduler.take()
            && let Err(e) = s.shutdown().await
        {
            tracing::warn!(error = %e, "scheduler did not shut down cleanly");
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn interval_ticks_are_measured_from_the_start_not_the_wall_clock() {
        let start = tokio::time::Instant::now();
        let mut ticks = Ticks::interval(Duration::from_secs(40 * 60));
        let mut at = Vec::new();
        for _ in 0..3 {
            ticks.next().await.unwrap();
            at.push((tokio::time::Instant::now() - start).as_secs() / 60);
        }
        assert_eq!(at, [40, 80, 120]);
        ticks.stop().await;
    }

    /// The production scheduler, on the real clock (the crate reads the wall clock, so paused
    /// time cannot drive it): the first tick one period after the start, not at once.
    #[tokio::test]
    async fn cron_ticks_come_every_period_from_the_start() {
        let start = std::time::Instant::now();
        let mut ticks = Ticks::cron(Duration::from_secs(1)).await.unwrap();
        ticks.next().await.unwrap();
        let first = start.elapsed();
        ticks.next().await.unwrap();
        let second = start.elapsed();
        ticks.stop().await;
        // The crate keeps tick times in whole seconds and polls every 500 ms, so a tick lands
        // up to a second off the exact period (immaterial at 40 minutes); what matters is
        // that ticks follow the period from the start, one at a time.
        assert!(
            first < Duration::from_millis(2600),
            "first tick at {first:?}"
        );
        let gap = second - first;
        assert!(
            gap >= Duration::from_millis(400) && gap < Duration::from_millis(1700),
            "gap {gap:?}"
        );
    }
}
