//! Client-side throttling: the shared `Retry-After` hold, the resource-unit budget, backoff.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use url::Url;

use crate::config::{ResourceBudget, RetryPolicy};

/// Metric names (the `metrics` facade; the process installs the exporter).
pub(crate) mod names {
    /// Counter of HTTP answers from Graph, by `status` (`transport` / `timeout` without one).
    pub(crate) const REQUESTS: &str = "graph_requests_total";
    /// Counter of 429 and 503 answers (inner `$batch` answers included), by `status`.
    pub(crate) const THROTTLED: &str = "graph_throttled_total";
    /// Counter of retries, by `reason`.
    pub(crate) const RETRIES: &str = "graph_retries_total";
    /// Counter of resource units spent.
    pub(crate) const RESOURCE_UNITS: &str = "graph_resource_units_total";
    /// Counter of requests that waited for the resource budget.
    pub(crate) const BUDGET_WAITS: &str = "graph_budget_waits_total";
    /// Counter of token-endpoint requests, by `outcome`.
    pub(crate) const TOKEN_REQUESTS: &str = "graph_token_requests_total";
    /// Counter of page entries rejected as malformed, by `kind` (users, delta, members).
    pub(crate) const REJECTED: &str = "graph_entries_rejected_total";
    /// Counter of group members that are not users, by `type`.
    pub(crate) const SKIPPED_MEMBERS: &str = "graph_group_members_skipped_total";
}

/// Longest `Retry-After` honoured; longer values are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The instant before which no request may be sent (set by `Retry-After`), shared by all
/// callers of one client.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    until: Mutex<Option<Instant>>,
}

impl Hold {
    /// Moves the hold to `until` unless it already reaches further.
    pub(crate) fn extend(&self, until: Instant) {
        let mut current = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }

    /// The end of the hold if it is still in the future.
    pub(crate) fn until(&self, now: Instant) -> Option<Instant> {
        let current = *self.until.lock().unwrap_or_else(PoisonError::into_inner);
        current.filter(|until| *until > now)
    }

    /// Waits until no hold is active.
    pub(crate) async fn wait(&self) {
        while let Some(until) = self.until(Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

/// A sliding-window limit on resource units: no window of `window` holds more than `units`.
///
/// This is stricter than Graph's token bucket of the same size and rate, so staying within it
/// never empties Graph's bucket.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: ResourceBudget,
    spent: Mutex<Spent>,
}

#[derive(Debug, Default)]
struct Spent {
    entries: VecDeque<(Instant, u32)>,
    total: u64,
}

impl Budget {
    pub(crate) fn new(limit: ResourceBudget) -> Self {
        Self {
            limit,
            spent: Mutex::new(Spent::default()),
        }
    }

    /// Spends `cost` at `now` if the window allows it; otherwise returns how long to wait.
    pub(crate) fn try_spend(&self, cost: u32, now: Instant) -> Result<(), Duration> {
        if self.limit.units == 0 {
            return Ok(());
        }
        let units = u64::from(self.limit.units);
        let cost = cost.min(self.limit.units);
        let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((at, c)) = spent.entries.front().copied() {
            if at + self.limit.window > now {
                break;
            }
            spent.entries.pop_front();
            spent.total -= u64::from(c);
        }
        if spent.total + u64::from(cost) <= units {
            spent.entries.push_back((now, cost));
            spent.total += u64::from(cost);
            return Ok(());
        }
        let mut remaining = spent.total;
        for (at, c) in &spent.entries {
            remaining -= u64::from(*c);
            if remaining + u64::from(cost) <= units {
                return Err((*at + self.limit.window).saturating_duration_since(now));
            }
        }
        Err(self.limit.window)
    }

    /// Gives back a spend made at `at` that was not sent after all.
    pub(crate) fn refund(&self, cost: u32, at: Instant) {
        if self.limit.units == 0 {
            return;
        }
        let cost = cost.min(self.limit.units);
        let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(position) = spent
            .entries
            .iter()
            .rposition(|(t, c)| *t == at && *c == cost)
        {
            spent.entries.remove(position);
            spent.total -= u64::from(cost);
        }
    }
}

/// A full-jitter backoff for retry `retry` (1 for the first retry): the shared
/// [`service_runtime::retry::RetryPolicy`]'s, from `base_delay` doubling up to `max_delay`
/// (the attempt limit and the `Retry-After` hold stay this client's).
pub(crate) fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    service_runtime::retry::RetryPolicy {
        initial: policy.base_delay,
        max_delay: policy.max_delay,
        max_attempts: policy.max_attempts,
        max_elapsed: Duration::MAX,
    }
    .jittered_delay(retry)
}

/// Parses `Retry-After` as (possibly fractional) seconds; HTTP dates are not used by Graph.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        seconds.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// Resource units Graph charges for a GET of `url` (identity and access costs).
pub(crate) fn resource_units(url: &Url) -> u32 {
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let last = segments.last().copied().unwrap_or_default();
    let mut cost: i32 = if last.eq_ignore_ascii_case("transitiveMembers") {
        5
    } else if last.eq_ignore_ascii_case("members") {
        3
    } else if segments
        .get(1)
        .is_some_and(|s| s.eq_ignore_ascii_case("users"))
    {
        2
    } else {
        1
    };
    for (key, value) in url.query_pairs() {
        if key.eq_ignore_ascii_case("$select") {
            cost -= 1;
        } else if key.eq_ignore_ascii_case("$expand") {
            cost += 1;
        } else if key.eq_ignore_ascii_case("$top") && value.parse::<u32>().is_ok_and(|t| t < 20) {
            cost -= 1;
        }
    }
    cost.max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn resource_units_follow_graphs_cost_table() {
        let g = "https://graph.microsoft.com/v1.0";
        assert_eq!(resource_units(&url(&format!("{g}/users"))), 2);
        assert_eq!(resource_units(&url(&format!("{g}/users?$select=id"))), 1);
        assert_eq!(resource_units(&url(&format!("{g}/users/x?$select=id"))), 1);
        assert_eq!(
            resource_units(&url(&format!("{g}/groups/x/transitiveMembers?$select=id"))),
            4
        );
        assert_eq!(resource_units(&url(&format!("{g}/groups/x/members"))), 3);
        assert_eq!(resource_units(&url(&format!("{g}/groups/x"))), 1);
        assert_eq!(
            resource_units(&url(&format!("{g}/groups/x/members?$expand=m&$top=5"))),
            3
        );
    }

    #[test]
    fn retry_after_accepts_fractional_seconds_and_refuses_junk() {
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_secs_f64(2.128))
        );
        assert_eq!(parse_retry_after(" 10 "), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("1e9"), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn backoff_stays_within_the_doubling_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for _ in 0..200 {
            assert!(backoff(&policy, 1) <= Duration::from_millis(100));
            assert!(backoff(&policy, 2) <= Duration::from_millis(200));
            assert!(backoff(&policy, 9) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn the_budget_refuses_spend_beyond_the_window_and_says_how_long_to_wait() {
        let budget = Budget::new(ResourceBudget {
            units: 5,
            window: Duration::from_secs(10),
        });
        let start = Instant::now();
        assert!(budget.try_spend(2, start).is_ok());
        assert!(budget.try_spend(2, start + Duration::from_secs(1)).is_ok());
        let wait = budget
            .try_spend(2, start + Duration::from_secs(2))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(8));
        assert!(budget.try_spend(1, start + Duration::from_secs(2)).is_ok());
        assert!(budget.try_spend(2, start + Duration::from_secs(10)).is_ok());
        budget.refund(2, start + Duration::from_secs(10));
        assert!(budget.try_spend(2, start + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn the_hold_only_moves_later() {
        let hold = Hold::default();
        let now = Instant::now();
        hold.extend(now + Duration::from_secs(5));
        hold.extend(now + Duration::from_secs(1));
        assert_eq!(hold.until(now), Some(now + Duration::from_secs(5)));
        assert_eq!(hold.until(now + Duration::from_secs(6)), None);
    }
}
