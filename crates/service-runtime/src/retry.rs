//! One retry policy for every caller: exponential backoff with full jitter, bounded by a
//! number of attempts and a total time, honouring a delay the server asked for.
//!
//! Full jitter (a random wait between zero and the exponential bound) keeps replicas that
//! failed together from retrying together.

use std::time::{Duration, Instant};

/// How to retry: `initial` doubles up to `max_delay` per attempt; at most `max_attempts`
/// attempts (0: no limit) within `max_elapsed` (from the first attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    /// For calls inside a request: 4 attempts within 20 s.
    pub const CALL: Self = Self {
        initial: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
        max_attempts: 4,
        max_elapsed: Duration::from_secs(20),
    };

    /// For background work that waits a dependency out: unlimited attempts within `max_elapsed`,
    /// up to 30 s apart.
    pub const fn patient(max_elapsed: Duration) -> Self {
        Self {
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_attempts: 0,
            max_elapsed,
        }
    }

    /// The full-jitter delay before retry `retry` (1 for the first): uniform in
    /// `[0, min(max_delay, initial × 2^(retry−1))]`. For callers that count attempts
    /// themselves (the Graph client); [`Backoff`] uses it too.
    pub fn jittered_delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let bound = self
            .initial
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        bound.mul_f64(fastrand::f64())
    }

    /// Starts counting attempts and time now.
    pub fn start(&self) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
            started: Instant::now(),
        }
    }

    /// Calls `call` until it succeeds or fails with an error `retryable` refuses, or the
    /// policy is spent; between attempts waits the backoff, or the error's own delay
    /// (`delay_of`) when that is longer. Only for idempotent work.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut call: F,
        retryable: impl Fn(&E) -> bool,
        delay_of: impl Fn(&E) -> Option<Duration>,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut backoff = self.start();
        loop {
            match call().await {
                Err(error) if retryable(&error) => match backoff.next_delay(delay_of(&error)) {
                    Some(delay) => {
                        tracing::warn!(%error, attempt = backoff.attempt, delay_ms = delay.as_millis() as u64, "failed, retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(error),
                },
                result => return result,
            }
        }
    }
}

/// The state of one retried operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
    started: Instant,
}

impl Backoff {
    /// Attempts that failed so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Time since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts a failed attempt and returns how long to wait before the next one, or `None`
    /// when the policy is spent. `server_delay` (a `Retry-After` or `RetryInfo`) is a floor.
    pub fn next_delay(&mut self, server_delay: Option<Duration>) -> Option<Duration> {
        self.attempt += 1;
        let limit = self.policy.max_attempts;
        if limit != 0 && self.attempt >= limit {
            return None;
        }
        let jittered = self.policy.jittered_delay(self.attempt);
        let delay = server_delay.map_or(jittered, |floor| floor.max(jittered));
        if self.started.elapsed() + delay > self.policy.max_elapsed {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_doubling_bound_and_the_attempts_limit_holds() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_attempts: 5,
            max_elapsed: Duration::from_secs(60),
        };
        let mut backoff = policy.start();
        let bounds = [100, 200, 400, 400];
        for bound in bounds {
            let delay = backoff.next_delay(None).expect("within the policy");
            assert!(
                delay <= Duration::from_millis(bound),
                "{delay:?} > {bound} ms"
            );
        }
        assert_eq!(backoff.next_delay(None), None);
    }

    #[test]
    fn a_server_delay_is_a_floor_and_the_elapsed_limit_ends_retrying() {
        let mut backoff = RetryPolicy::patient(Duration::from_secs(10)).start();
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(backoff.next_delay(Some(Duration::from_secs(11))), None);
    }
}
