//! Exponential backoff with jitter for reconnects and publish retries.

use std::time::Duration;

/// Delays that double from `initial` up to `max`; each is drawn from the upper half of the
/// current step, so many clients that lost the broker together do not return in step.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            step: initial,
        }
    }

    /// The delay before the next attempt.
    pub(super) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }

    /// Starts over after a success.
    pub(super) fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut steps = Vec::new();
        for _ in 0..10 {
            steps.push(backoff.next_delay());
        }
        assert!(steps[0] >= Duration::from_millis(50) && steps[0] <= Duration::from_millis(100));
        assert!(steps[1] >= Duration::from_millis(100) && steps[1] <= Duration::from_millis(200));
        assert!(steps[9] >= Duration::from_millis(2_500) && steps[9] <= Duration::from_secs(5));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
