//! Retry pacing of the bulk sink: exponential backoff with jitter, and logging of long outages
//! at a sane rate (first failure, then one line a minute, then the recovery).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;

/// Exponential backoff: `initial`, doubled per attempt, capped at `max`, each delay jittered
/// to between half and all of its nominal value so that concurrent retries spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        // A zero initial delay would never grow: retry storms against a struggling cluster.
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The nominal (unjittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before the next attempt, jittered; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let spread = (nominal - half).as_millis() as u64;
        half + Duration::from_millis(if spread == 0 {
            0
        } else {
            rand::rng().random_range(0..=spread)
        })
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// What [`OutageLog::failure`] says the caller should log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureLog {
    /// First failure after a healthy period: warn with the error.
    First,
    /// A reminder: warn with the number of failures since the outage began.
    Reminder { failures: u64, since: Duration },
    /// Stay quiet (debug at most).
    Quiet,
}

/// Tracks one kind of repeated failure shared by concurrent tasks, so that an outage of hours
/// produces one warning a minute, not one per retry, and its end is logged once.
#[derive(Debug)]
pub struct OutageLog {
    every: Duration,
    state: Mutex<OutageState>,
}

#[derive(Debug, Default)]
struct OutageState {
    /// Set while failing: when the outage began and when the last line was logged.
    since: Option<Instant>,
    last_logged: Option<Instant>,
    failures: u64,
}

impl OutageLog {
    /// Logs at most one reminder per `every`.
    pub fn new(every: Duration) -> Self {
        OutageLog {
            every,
            state: Mutex::new(OutageState::default()),
        }
    }

    /// Records a failure at `now`; says what to log.
    pub fn failure(&self, now: Instant) -> FailureLog {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failures += 1;
        match (s.since, s.last_logged) {
            (None, _) | (_, None) => {
                s.since = Some(now);
                s.last_logged = Some(now);
                FailureLog::First
            }
            (Some(since), Some(last)) if now.saturating_duration_since(last) >= self.every => {
                s.last_logged = Some(now);
                FailureLog::Reminder {
                    failures: s.failures,
                    since: now.saturating_duration_since(since),
                }
            }
            _ => FailureLog::Quiet,
        }
    }

    /// Records a success at `now`; returns `(failures, duration)` of the outage it ends, if any.
    pub fn success(&self, now: Instant) -> Option<(u64, Duration)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let since = s.since.take()?;
        let failures = std::mem::take(&mut s.failures);
        s.last_logged = None;
        Some((failures, now.saturating_duration_since(since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_within_half_to_full() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let nominal: Vec<u64> = (0..6)
            .map(|_| {
                let n = b.nominal();
                let d = b.next_delay();
                assert!(d >= n / 2 && d <= n, "{d:?} outside [{:?}, {n:?}]", n / 2);
                n.as_millis() as u64
            })
            .collect();
        assert_eq!(nominal, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.nominal(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_never_overflows_and_zero_initial_still_grows() {
        let mut b = Backoff::new(Duration::ZERO, Duration::from_secs(60));
        for _ in 0..200 {
            b.next_delay();
        }
        assert_eq!(b.nominal(), Duration::from_secs(60));
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(
            b.nominal(),
            Duration::from_secs(5),
            "a cap below the initial delay is raised to it"
        );
    }

    #[test]
    fn outage_log_warns_first_then_once_per_period_then_reports_recovery() {
        let log = OutageLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(log.failure(t0), FailureLog::First);
        assert_eq!(log.failure(t0 + Duration::from_secs(1)), FailureLog::Quiet);
        assert_eq!(log.failure(t0 + Duration::from_secs(59)), FailureLog::Quiet);
        assert_eq!(
            log.failure(t0 + Duration::from_secs(61)),
            FailureLog::Reminder {
                failures: 4,
                since: Duration::from_secs(61)
            }
        );
        assert_eq!(log.failure(t0 + Duration::from_secs(62)), FailureLog::Quiet);
        assert_eq!(
            log.success(t0 + Duration::from_secs(70)),
            Some((5, Duration::from_secs(70)))
        );
        assert_eq!(
            log.success(t0 + Duration::from_secs(71)),
            None,
            "recovery is reported once"
        );
        assert_eq!(
            log.failure(t0 + Duration::from_secs(72)),
            FailureLog::First,
            "a new outage warns again"
        );
    }
}
